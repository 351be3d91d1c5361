//! `statelite mkinitrd <image>`: the initramfs a statelite node boots with.
//!
//! Contents (a newc cpio archive, gzip-compressed, written here in Rust):
//! * `/init`: a busybox `sh` script ([`INIT`]): mounts /proc, /sys, /dev and /run, loads
//!   the modules, brings the boot interface up (DHCP with `udhcpc`, or the kernel-style
//!   `ip=<client>:<server>:<gw>:<netmask>:<host>:<dev>` on the kernel line), runs
//!   `statelite-mountd boot --sysroot /sysroot --initrd`, copies `litectl` to
//!   `/.statelite/bin/` on the new root, and `exec switch_root /sysroot /sbin/init`.
//!   `shell` on the kernel line pauses in a shell before each of the three stages (the
//!   design document's debugging aid); `statelite.debug` traces the script (`set -x`) and
//!   makes mountd trace every action. `statelite.onfail=poweroff|reboot|shell` (default
//!   shell) says what to do when the root cannot be built.
//! * `/bin/busybox` (static) and its applet links, `/sbin/statelite-mountd` and
//!   `/bin/litectl` (static: SPEC §5, the root's daemon may load nothing from the root it
//!   serves), `/etc/initrd-release` (marks the initrd: mountd takes `@` as argv[0] so
//!   systemd spares it), `/dev/console` (the kernel opens it for init before devtmpfs).
//! * The kernel's modules for NFS, FUSE and virtio networking, in dependency order as
//!   `modprobe --show-depends` lists them (`/etc/statelite/modules`); built-in ones are
//!   skipped.
//!
//! The kernel itself is copied next to the initramfs as `<rootimgdir>/kernel`, where
//! `statelite nodeset` picks both up (as xCAT's genimage leaves them).

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;
use flate2::Compression;
use flate2::write::GzEncoder;
use statelite_fs::tabfile::write_file_atomic;

use crate::db::Db;

/// The modules a statelite node needs from its kernel (their dependencies come along).
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "e1000",
    "nfsv4",
    "nfsv3",
    "fuse",
];

/// The init script. Busybox sh; everything it runs is in the initramfs.
pub const INIT: &str = r#"#!/bin/sh
# statelite initramfs /init (written by `statelite mkinitrd`).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /run /sysroot /tmp
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run

SHELL_STAGES=0
DEBUG=0
ONFAIL=shell
IPCONF=
BOOTIF=
for w in $(cat /proc/cmdline); do
    case "$w" in
        shell) SHELL_STAGES=1 ;;
        statelite.debug|statelite.debug=1|statelite.debug=yes) DEBUG=1 ;;
        statelite.onfail=*) ONFAIL=${w#statelite.onfail=} ;;
        ip=*) IPCONF=${w#ip=} ;;
        BOOTIF=*) BOOTIF=${w#BOOTIF=} ;;
    esac
done
[ "$DEBUG" = 1 ] && set -x

say() { echo "statelite-init: $*"; }

# The design document's aid: "shell" pauses before each stage.
stage() {
    say "stage: $1"
    if [ "$SHELL_STAGES" = 1 ]; then
        say "shell before '$1' (exit the shell to go on)"
        setsid cttyhack sh
    fi
}

fail() {
    say "BOOT FAILED: $*"
    case "$ONFAIL" in
        poweroff) say "powering off"; sleep 2; poweroff -f ;;
        reboot) say "rebooting"; sleep 2; reboot -f ;;
        *) say "dropping to a shell"; setsid cttyhack sh; poweroff -f ;;
    esac
}

stage modules
while read -r mod args; do
    [ -n "$mod" ] || continue
    name=$(basename "$mod" .ko)
    grep -q "^$(echo "$name" | tr - _) " /proc/modules 2>/dev/null && continue
    insmod "$mod" $args || say "insmod $mod failed"
done < /etc/statelite/modules

stage network
ip link set lo up
# The boot interface: BOOTIF= (pxelinux IPAPPEND 2) names its MAC; else the first one.
IFACE=
if [ -n "$BOOTIF" ]; then
    mac=$(echo "${BOOTIF#01-}" | tr - : | tr A-F a-f)
    for n in /sys/class/net/*; do
        [ "$(cat "$n/address" 2>/dev/null)" = "$mac" ] && IFACE=${n##*/}
    done
fi
if [ -z "$IFACE" ]; then
    for n in /sys/class/net/*; do
        case "${n##*/}" in lo|sit*|tunl*|ip6tnl*) ;; *) IFACE=${n##*/}; break ;; esac
    done
fi
[ -n "$IFACE" ] || fail "no network interface (missing driver module?)"
ip link set "$IFACE" up
case "$IPCONF" in
    ""|dhcp|on|any)
        udhcpc -i "$IFACE" -n -q -t 10 -T 2 -s /etc/statelite/udhcpc.script \
            || fail "no DHCP answer on $IFACE"
        ;;
    *)
        # ip=<client>:<server>:<gw>:<netmask>:<host>:<dev> (the kernel's form)
        IFS=: read -r c s g m h d rest <<EOF
$IPCONF
EOF
        [ -n "$d" ] && IFACE=$d && ip link set "$IFACE" up
        ip addr add "$c/${m:-24}" dev "$IFACE" || fail "ip=$IPCONF"
        [ -n "$g" ] && ip route add default via "$g"
        [ -n "$h" ] && hostname "$h"
        ;;
esac
say "network: $IFACE $(ip -4 -o addr show dev "$IFACE" | awk '{print $4}')"

stage mount
statelite-mountd boot --sysroot /sysroot --initrd || fail "statelite-mountd boot failed"
# Node-side tools travel with the initramfs: the image need not carry them.
if [ -d /sysroot/.statelite ]; then
    mkdir -p /sysroot/.statelite/bin && cp /bin/litectl /sysroot/.statelite/bin/litectl
fi

stage switch_root
# /sbin/init is usually an absolute symlink: test it from inside the new root.
if ! chroot /sysroot /bin/sh -c 'test -x /sbin/init'; then
    ls -la /sysroot/ /sysroot/sbin/init /sysroot/usr/lib/systemd/systemd /sysroot/lib64/ 2>&1 | head -40
    fail "/sbin/init is not executable on the new root"
fi
# The root's daemon keeps running in this (old) root: its /proc must stay mounted here
# (it reopens files through /proc/self/fd), so the new root gets fresh proc and sysfs
# instances and bind mounts of /dev and /run instead of moved ones. /run keeps
# /run/statelite (the image, state and litetree mounts) visible on the node.
mount -t proc -o nosuid,nodev,noexec proc /sysroot/proc || say "cannot mount /proc on the new root"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sysroot/sys || say "cannot mount /sys on the new root"
mount -o bind /dev /sysroot/dev || say "cannot bind /dev on the new root"
mount -o rbind /run /sysroot/run || say "cannot bind /run on the new root"
exec switch_root /sysroot /sbin/init
"#;

/// The udhcpc hook: configure the address and default route it was given.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# Called by busybox udhcpc with $interface, $ip, $mask (prefix length), $router.
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        ;;
esac
exit 0
"#;

/// Build the initramfs (and copy the kernel) for a statelite image.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite mkinitrd debian12-x86_64-statelite-compute\n  \
    statelite mkinitrd IMG --kernel-version 6.1.0-56-amd64 --out /tmp/initrd.gz\n\n\
    statelite-mountd and litectl must be static (build them with mountd/build-static.sh, \
    or give --mountd/--litectl). Kernel modules and the kernel come from --modules-root \
    (default: the image root when it has /lib/modules/<version>, else /).")]
pub struct MkinitrdArgs {
    /// The image name (osimage.imagename).
    pub image: String,
    /// Kernel version (default: the newest under <modules-root>/lib/modules).
    #[arg(long)]
    pub kernel_version: Option<String>,
    /// Where to write the initramfs (default: <rootimgdir>/initrd-statelite.gz).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The image directory (default: osimage.rootimgdir, else
    /// /install/netboot/<osvers>/<osarch>/<profile>).
    #[arg(long)]
    pub rootimgdir: Option<PathBuf>,
    /// The root holding lib/modules/<version> and boot/vmlinuz-<version>.
    #[arg(long)]
    pub modules_root: Option<PathBuf>,
    /// A static statelite-mountd (default: next to this program).
    #[arg(long)]
    pub mountd: Option<PathBuf>,
    /// A static litectl (default: next to statelite-mountd).
    #[arg(long)]
    pub litectl: Option<PathBuf>,
    /// A static busybox.
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
}

/// What can stop mkinitrd.
#[derive(Debug, thiserror::Error)]
pub enum MkinitrdError {
    #[error("{0}")]
    Usage(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is not a static executable ({problem}); {hint}", path.display())]
    NotStatic {
        path: PathBuf,
        problem: String,
        hint: &'static str,
    },
    #[error("modprobe --show-depends {module}: {problem}")]
    Modprobe { module: String, problem: String },
    #[error("{0}")]
    Db(#[from] crate::db::DbError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MkinitrdError {
    let path = path.to_path_buf();
    move |source| MkinitrdError::Io { what, path, source }
}

/// True when the file is an ELF executable without a program interpreter (static).
pub fn check_static(path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if data[4] != 2 || data[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("truncated ELF header".into());
    };
    for i in 0..usize::from(phnum) {
        let off = usize::try_from(phoff)
            .ok()
            .and_then(|p| p.checked_add(i * usize::from(phentsize)))
            .ok_or("bad program header offset")?;
        let p_type = data
            .get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or("truncated program headers")?;
        if p_type == 3 {
            return Err("it has a program interpreter (dynamically linked)".into());
        }
    }
    Ok(())
}

/// One archive member.
enum Member {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// A newc cpio archive built in memory, members in the order added (parents first).
pub struct Archive {
    members: Vec<(String, Member)>,
    seen: HashSet<String>,
}

impl Default for Archive {
    fn default() -> Self {
        Self::new()
    }
}

impl Archive {
    pub fn new() -> Archive {
        Archive {
            members: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn add(&mut self, path: &str, m: Member) {
        let path = path.trim_start_matches('/').to_string();
        // Parents first: the kernel's unpacker creates nothing implicitly.
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if self.seen.insert(parent.clone()) {
                self.members.push((parent.clone(), Member::Dir));
            }
        }
        if self.seen.insert(path.clone()) {
            self.members.push((path, m));
        } else if let Some(slot) = self.members.iter_mut().find(|(p, _)| *p == path) {
            slot.1 = m; // the last word wins (a file replacing a placeholder)
        }
    }

    pub fn dir(&mut self, path: &str) {
        self.add(path, Member::Dir);
    }
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Member::File { data, mode });
    }
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, Member::Symlink(target.to_string()));
    }
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) {
        self.add(path, Member::CharDev { major, minor, mode });
    }

    /// Writes the archive (gzip-compressed) to `w`.
    pub fn write_gz<W: Write>(&self, w: W) -> io::Result<W> {
        let mut gz = GzEncoder::new(w, Compression::new(6));
        for (i, (name, m)) in self.members.iter().enumerate() {
            let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let b = cpio::newc::Builder::new(name)
                .ino(ino)
                .uid(0)
                .gid(0)
                .mtime(0);
            let too_big = || {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name}: larger than 4 GiB"),
                )
            };
            match m {
                Member::Dir => {
                    b.mode(0o040755).nlink(2).write(&mut gz, 0).finish()?;
                }
                Member::File { data, mode } => {
                    let size = u32::try_from(data.len()).map_err(|_| too_big())?;
                    let mut w = b
                        .mode(0o100000 | (mode & 0o7777))
                        .nlink(1)
                        .write(&mut gz, size);
                    w.write_all(data)?;
                    w.finish()?;
                }
                Member::Symlink(target) => {
                    let size = u32::try_from(target.len()).map_err(|_| too_big())?;
                    let mut w = b.mode(0o120777).nlink(1).write(&mut gz, size);
                    w.write_all(target.as_bytes())?;
                    w.finish()?;
                }
                Member::CharDev { major, minor, mode } => {
                    b.mode(0o020000 | (mode & 0o7777))
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor)
                        .write(&mut gz, 0)
                        .finish()?;
                }
            }
        }
        cpio::newc::trailer(&mut gz)?;
        gz.finish()
    }
}

/// The modules to load, in order: `(path on the build host, path in the initramfs, args)`.
pub fn module_list(
    modules_root: &Path,
    version: &str,
) -> Result<Vec<(PathBuf, String, String)>, MkinitrdError> {
    let modprobe = ["/sbin/modprobe", "/usr/sbin/modprobe"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("modprobe");
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for module in MODULES {
        let o = Command::new(modprobe)
            .arg("-d")
            .arg(modules_root)
            .args(["-S", version, "--show-depends", module])
            .output()
            .map_err(|e| MkinitrdError::Modprobe {
                module: module.to_string(),
                problem: format!("cannot run {modprobe}: {e} (install kmod)"),
            })?;
        if !o.status.success() {
            // e1000 (real PXE NICs) is optional; the others are required.
            if *module == "e1000" {
                continue;
            }
            return Err(MkinitrdError::Modprobe {
                module: module.to_string(),
                problem: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("insmod") {
                continue; // "builtin fuse": nothing to load
            }
            let Some(path) = words.next() else { continue };
            let args: Vec<&str> = words.collect();
            if !seen.insert(path.to_string()) {
                continue;
            }
            let host = PathBuf::from(path);
            let rel = host
                .strip_prefix(modules_root)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| host.clone());
            let inside = format!("/{}", rel.display().to_string().trim_start_matches('/'));
            if !inside.ends_with(".ko") {
                return Err(MkinitrdError::Usage(format!(
                    "{path}: compressed modules are not supported (busybox insmod loads plain .ko)"
                )));
            }
            out.push((host, inside, args.join(" ")));
        }
    }
    Ok(out)
}

/// The newest kernel version under `<root>/lib/modules` that has a `boot/vmlinuz-<v>`.
pub fn newest_kernel(root: &Path) -> Option<String> {
    let mut versions: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|v| root.join(format!("boot/vmlinuz-{v}")).is_file())
        .collect();
    versions.sort_by(|a, b| crate::noderange::natural_cmp(a, b));
    versions.pop()
}

fn image_dir(db: &Db, image: &str) -> Result<PathBuf, MkinitrdError> {
    if let Some(d) = db.image_attr("osimage", image, "rootimgdir")? {
        return Ok(PathBuf::from(d));
    }
    let a = |c: &str| db.image_attr("osimage", image, c);
    match (a("osvers")?, a("osarch")?, a("profile")?) {
        (Some(o), Some(ar), Some(p)) => Ok(PathBuf::from(format!("/install/netboot/{o}/{ar}/{p}"))),
        _ => Err(MkinitrdError::Usage(format!(
            "image {image}: no osimage row with rootimgdir (or osvers, osarch, profile); \
             give --rootimgdir"
        ))),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, MkinitrdError> {
    std::fs::read(path).map_err(io_err("reading", path))
}

fn static_binary(path: &Path, hint: &'static str) -> Result<Vec<u8>, MkinitrdError> {
    check_static(path).map_err(|problem| MkinitrdError::NotStatic {
        path: path.to_path_buf(),
        problem,
        hint,
    })?;
    read(path)
}

/// What mkinitrd built.
#[derive(Debug)]
pub struct Built {
    pub initrd: PathBuf,
    pub kernel: PathBuf,
    pub version: String,
    pub modules: usize,
    pub bytes: u64,
}

impl MkinitrdArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, String> {
        let b = self.build(tables).map_err(|e| e.to_string())?;
        println!(
            "{}: initramfs {} ({} KiB, kernel {}, {} modules), kernel {}",
            self.image,
            b.initrd.display(),
            b.bytes / 1024,
            b.version,
            b.modules,
            b.kernel.display()
        );
        Ok(ExitCode::SUCCESS)
    }

    pub fn build(&self, tables: &Path) -> Result<Built, MkinitrdError> {
        let db = Db::open(tables);
        let dir = match &self.rootimgdir {
            Some(d) => d.clone(),
            None => image_dir(&db, &self.image)?,
        };
        let rootimg = dir.join("rootimg");
        let modules_root = match &self.modules_root {
            Some(r) => r.clone(),
            None if rootimg.join("lib/modules").is_dir() && newest_kernel(&rootimg).is_some() => {
                rootimg.clone()
            }
            None => PathBuf::from("/"),
        };
        let version = match &self.kernel_version {
            Some(v) => v.clone(),
            None => newest_kernel(&modules_root).ok_or_else(|| {
                MkinitrdError::Usage(format!(
                    "no kernel under {} (lib/modules/<v> with boot/vmlinuz-<v>); install \
                     linux-image-amd64 or give --modules-root/--kernel-version",
                    modules_root.display()
                ))
            })?,
        };
        if version.contains('/') || version.starts_with('.') {
            return Err(MkinitrdError::Usage(format!("kernel version {version:?}")));
        }
        let mountd = match &self.mountd {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(io_err("finding", Path::new("/proc/self/exe")))?
                .with_file_name("statelite-mountd"),
        };
        let litectl = match &self.litectl {
            Some(p) => p.clone(),
            None => mountd.with_file_name("litectl"),
        };
        const HINT: &str = "build it with mountd/build-static.sh and pass --mountd/--litectl";

        let mut a = Archive::new();
        for d in [
            "bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "sysroot", "root",
        ] {
            a.dir(d);
        }
        a.char_dev("dev/console", 5, 1, 0o600);
        a.char_dev("dev/null", 1, 3, 0o666);
        a.file("init", INIT.as_bytes().to_vec(), 0o755);
        a.file(
            "bin/busybox",
            static_binary(&self.busybox, "install busybox-static")?,
            0o755,
        );
        a.symlink("bin/sh", "busybox");
        a.file(
            "sbin/statelite-mountd",
            static_binary(&mountd, HINT)?,
            0o755,
        );
        a.file("bin/litectl", static_binary(&litectl, HINT)?, 0o755);
        a.file(
            "etc/initrd-release",
            b"NAME=\"statelite initramfs\"\nID=statelite-initrd\n".to_vec(),
            0o644,
        );
        a.file(
            "etc/statelite/udhcpc.script",
            UDHCPC_SCRIPT.as_bytes().to_vec(),
            0o755,
        );
        let modules = module_list(&modules_root, &version)?;
        let mut list = String::new();
        for (host, inside, args) in &modules {
            a.file(inside.trim_start_matches('/'), read(host)?, 0o644);
            list.push_str(inside);
            if !args.is_empty() {
                list.push(' ');
                list.push_str(args);
            }
            list.push('\n');
        }
        a.file("etc/statelite/modules", list.into_bytes(), 0o644);

        let out = self
            .out
            .clone()
            .unwrap_or_else(|| dir.join("initrd-statelite.gz"));
        let bytes = a
            .write_gz(Vec::new())
            .map_err(io_err("building the archive for", &out))?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        write_file_atomic(&out, &bytes).map_err(io_err("writing", &out))?;
        let vmlinuz = modules_root.join(format!("boot/vmlinuz-{version}"));
        let kernel = dir.join("kernel");
        write_file_atomic(&kernel, &read(&vmlinuz)?).map_err(io_err("writing", &kernel))?;
        Ok(Built {
            initrd: out,
            kernel,
            version,
            modules: modules.len(),
            bytes: bytes.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_round_trips_through_a_reader() {
        let mut a = Archive::new();
        a.file("etc/statelite/modules", b"/lib/x.ko\n".to_vec(), 0o644);
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 5, 1, 0o600);
        let gz = a.write_gz(Vec::new()).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut r = &raw[..];
        let mut names = Vec::new();
        loop {
            let e = cpio::newc::Reader::new(r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            names.push((
                e.entry().name().to_string(),
                e.entry().mode(),
                e.entry().rdev_major(),
            ));
            r = e.finish().unwrap();
        }
        assert_eq!(
            names,
            [
                ("etc".to_string(), 0o040755, 0),
                ("etc/statelite".to_string(), 0o040755, 0),
                ("etc/statelite/modules".to_string(), 0o100644, 0),
                ("bin".to_string(), 0o040755, 0),
                ("bin/sh".to_string(), 0o120777, 0),
                ("dev".to_string(), 0o040755, 0),
                ("dev/console".to_string(), 0o020600, 5),
            ]
        );
    }

    #[test]
    fn static_check_reads_program_headers() {
        assert!(
            check_static(Path::new("/bin/sh")).is_err(),
            "/bin/sh is dynamic"
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        assert!(check_static(&f).unwrap_err().contains("not an ELF"));
        std::fs::write(&f, b"\x7fELF\x02\x01").unwrap();
        assert!(check_static(&f).is_err());
    }
}

//! `statelite nodeset <noderange> statelite[=<image>]`: the network boot files that make
//! nodes boot their statelite image, as xCAT's nodeset writes them.
//!
//! For each node, in the TFTP directory (default `/tftpboot`):
//! * pxelinux: `pxelinux.cfg/01-<mac-with-dashes>` and `pxelinux.cfg/<HEXIP>` (what PXE
//!   firmware asks for, in that order), with `IPAPPEND 2` so the kernel learns `BOOTIF=`;
//! * grub2: `boot/grub2/grub.cfg-01-<mac-with-dashes>` and `boot/grub2/grub.cfg-<HEXIP>`
//!   (xCAT's grub2 layout; GRUB's net boot looks both up);
//! * yaboot: `etc/yaboot.conf-<mac-with-dashes>`;
//! * the kernel and initramfs, copied to `xcat/netboot/<os>/<arch>/<profile>/{kernel,
//!   initrd.gz}` from the image directory (`<rootimgdir>/kernel` and
//!   `<rootimgdir>/initrd-statelite.gz`, which `statelite mkinitrd` writes), and
//!   `pxelinux.0`/`ldlinux.c32` from the syslinux packages when the directory lacks them.
//!
//! The kernel line (SPEC §5), from the tables:
//! `NFSROOT=<nfsserver>:<rootimgdir>/rootimg STATEMNT=<statemnt> [MNTOPTS=<statelite.mntopts>]
//! XCAT=<xcatmaster>:<site.xcatdport|3001> NODE=<node> console=tty0 console=ttyS0,115200n8
//! [linuximage.addkcmdline] [--append]`.
//! * `nfsserver`: `noderes.nfsserver`, else `noderes.xcatmaster`, else `site.master`.
//! * `rootimgdir`: `osimage.rootimgdir`, else `<noderes.nfsdir | site.installdir |
//!   /install>/netboot/<os>/<arch>/<profile>`; os/arch/profile from the osimage row
//!   (`osvers`, `osarch`, `profile`), else `nodetype`.
//! * NFSROOT names the image root itself (`.../rootimg`): it is what the node mounts,
//!   the same directory xCAT's dracut line (`root=nfs:<srv>:<dir>/rootimg:ro`) names.
//! * `STATEMNT=` is the node's `statelite` row, variables expanded (empty: no persistent
//!   storage); the node uses its own `<statemnt>/<node>/`.
//!
//! `statelite=<image>` also records the image as the nodes' `nodetype.provmethod` (as
//! xCAT's `nodeset osimage=` does), so the query service answers about the image they boot.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use statelite_fs::tabfile::write_file_atomic;

use crate::cmd_tables::{CmdError, apply_chtab, parse_chtab, print_json};
use crate::db::{self, Db, DbError};
use crate::vars;

/// Where Debian's pxelinux and syslinux-common put the PXE loader and its library.
const PXELINUX: &[(&str, &str)] = &[
    ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux.0"),
    ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "ldlinux.c32"),
];

/// Write network boot files so nodes boot their statelite image.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite nodeset compute statelite\n  \
    statelite nodeset n01 statelite=debian12-x86_64-statelite-compute --tftpdir /srv/tftp\n\n\
    Writes pxelinux.cfg/01-<mac> and pxelinux.cfg/<HEXIP>, boot/grub2/grub.cfg-01-<mac> \
    and grub.cfg-<HEXIP>, etc/yaboot.conf-<mac>, and copies the image's kernel and \
    initrd-statelite.gz (from statelite mkinitrd) to xcat/netboot/<os>/<arch>/<profile>/. \
    Needs mac.mac (or hosts.ip for the by-IP files), and noderes.nfsserver/xcatmaster (or \
    site.master).")]
pub struct NodesetArgs {
    /// Nodes: n01-n10, n[01-10], group names, comma lists, -exclusions.
    pub noderange: String,
    /// `statelite` (each node's image) or `statelite=<image>`.
    pub state: String,
    /// The TFTP root.
    #[arg(long, default_value = "/tftpboot")]
    pub tftpdir: PathBuf,
    /// Extra kernel parameters for these nodes (after linuximage.addkcmdline), e.g.
    /// "shell statelite.debug STATELITE_MODE=symlink".
    #[arg(long, value_name = "PARAMS")]
    pub append: Option<String>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Everything a node's boot files say.
#[derive(Debug, Clone, Serialize)]
pub struct BootSpec {
    pub node: String,
    pub image: String,
    pub os: String,
    pub arch: String,
    pub profile: String,
    /// The image directory on the management node (`<rootimgdir>/rootimg` is the root).
    pub rootimgdir: String,
    /// Kernel and initramfs, relative to the TFTP root.
    pub kernel: String,
    pub initrd: String,
    /// The kernel parameters after `initrd=`.
    pub append: String,
    pub macs: Vec<String>,
    pub ip: Option<IpAddr>,
}

/// What nodeset wrote for one node.
#[derive(Debug, Serialize)]
struct Written {
    node: String,
    image: String,
    files: Vec<PathBuf>,
}

fn usage(m: String) -> CmdError {
    CmdError::Usage(m)
}

/// A table value that becomes a path component: no separators or dot-dot tricks.
fn component(what: &str, value: &str) -> Result<String, CmdError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(usage(format!(
            "{what} {value:?} cannot be used in a file name (letters, digits, '-', '_', '.', '+')"
        )))
    }
}

/// A kernel parameter value: no blanks or quotes, which would split or end it.
fn param_value(what: &str, value: &str) -> Result<String, CmdError> {
    if value
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'"' || b.is_ascii_control())
    {
        return Err(usage(format!(
            "{what} {value:?} holds a blank, quote or control character and cannot go on a \
             kernel line"
        )));
    }
    Ok(value.to_string())
}

/// Parses `aa:bb:cc:dd:ee:ff` (xCAT's `mac.mac` may list several, `|`-separated, each
/// optionally `!<name>`-suffixed).
pub fn parse_macs(value: &str) -> Result<Vec<[u8; 6]>, String> {
    let mut out = Vec::new();
    for item in value.split('|') {
        let mac = item.split('!').next().unwrap_or("").trim();
        if mac.is_empty() {
            continue;
        }
        let parts: Vec<&str> = mac.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("{mac:?} is not a MAC address (six hex bytes)"));
        }
        let mut m = [0u8; 6];
        for (slot, p) in m.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(format!("{mac:?} is not a MAC address (six hex bytes)"));
            }
            *slot = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{mac:?} is not a MAC address (six hex bytes)"))?;
        }
        out.push(m);
    }
    Ok(out)
}

/// `01-aa-bb-cc-dd-ee-ff`: ARP type 1 (Ethernet) and the MAC, as PXE firmware names it.
pub fn mac_file_name(mac: &[u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("01-{}", hex.join("-"))
}

/// `0A000F0F` for 10.0.15.15, as pxelinux and GRUB look it up.
pub fn hex_ip(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{a:02X}{b:02X}{c:02X}{d:02X}")
}

/// Works out a node's boot files from the tables.
pub fn boot_spec(
    db: &Db,
    node: &str,
    image: &str,
    extra: Option<&str>,
) -> Result<BootSpec, CmdError> {
    let attr = |t: &str, c: &str| db.node_attr(node, t, c);
    let img_attr =
        |t: &str, c: &str| -> Result<Option<String>, DbError> { db.image_attr(t, image, c) };
    let need =
        |v: Option<String>, what: &str| v.ok_or_else(|| usage(format!("node {node}: {what}")));
    let os = need(
        img_attr("osimage", "osvers")?.or(attr("nodetype", "os")?),
        "no os (set osimage.osvers or nodetype.os)",
    )?;
    let arch = need(
        img_attr("osimage", "osarch")?.or(attr("nodetype", "arch")?),
        "no arch (set osimage.osarch or nodetype.arch)",
    )?;
    let profile = need(
        img_attr("osimage", "profile")?.or(attr("nodetype", "profile")?),
        "no profile (set osimage.profile or nodetype.profile)",
    )?;
    let (os, arch, profile) = (
        component("os", &os)?,
        component("arch", &arch)?,
        component("profile", &profile)?,
    );
    let rootimgdir = match img_attr("osimage", "rootimgdir")? {
        Some(d) => d.trim_end_matches('/').to_string(),
        None => {
            let base = match attr("noderes", "nfsdir")? {
                Some(d) => d,
                None => db.site("installdir")?.unwrap_or_else(|| "/install".into()),
            };
            format!(
                "{}/netboot/{os}/{arch}/{profile}",
                base.trim_end_matches('/')
            )
        }
    };
    if !rootimgdir.starts_with('/') || rootimgdir.split('/').any(|c| c == "..") {
        return Err(usage(format!(
            "node {node}: image directory {rootimgdir:?} must be absolute, without '..'"
        )));
    }
    let master = attr("noderes", "xcatmaster")?.or(db.site("master")?);
    let nfsserver = need(
        attr("noderes", "nfsserver")?.or(master.clone()),
        "no NFS server (set noderes.nfsserver or noderes.xcatmaster, or site.master)",
    )?;
    let master = need(
        master,
        "no management node for XCAT= (set noderes.xcatmaster or site.master)",
    )?;
    let port = match db.site("xcatdport")? {
        Some(p) => p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| usage(format!("site.xcatdport {p:?} is not a port")))?,
        None => crate::serve::DEFAULT_PORT,
    };
    let (statemnt, mntopts) = match vars::statelite_for(db, node, image)? {
        None => (String::new(), None),
        Some(s) => (s.location?.to_string(), s.mntopts),
    };
    let mut append = vec![
        format!(
            "NFSROOT={}:{}/rootimg",
            param_value("nfsserver", &nfsserver)?,
            param_value("rootimgdir", &rootimgdir)?
        ),
        format!("STATEMNT={}", param_value("statemnt", &statemnt)?),
    ];
    if let Some(o) = mntopts.filter(|o| !o.trim().is_empty()) {
        append.push(format!(
            "MNTOPTS={}",
            param_value("statelite.mntopts", o.trim())?
        ));
    }
    append.push(format!(
        "XCAT={}:{port}",
        param_value("xcatmaster", &master)?
    ));
    append.push(format!("NODE={}", param_value("node", node)?));
    // The last console= is /dev/console: the serial line, where a cluster's consoles are.
    append.push("console=tty0 console=ttyS0,115200n8".into());
    if let Some(k) = img_attr("linuximage", "addkcmdline")? {
        append.push(k.trim().to_string());
    }
    if let Some(e) = extra.map(str::trim).filter(|e| !e.is_empty()) {
        if e.contains(['\n', '\r']) {
            return Err(usage("--append must be one line".into()));
        }
        append.push(e.to_string());
    }
    let macs = match attr("mac", "mac")? {
        Some(v) => parse_macs(&v)
            .map_err(|e| usage(format!("node {node}: mac.mac: {e}")))?
            .iter()
            .map(|m| mac_file_name(m)[3..].replace('-', ":"))
            .collect(),
        None => Vec::new(),
    };
    let ip = match attr("hosts", "ip")? {
        Some(v) => Some(
            v.trim()
                .parse::<IpAddr>()
                .map_err(|_| usage(format!("node {node}: hosts.ip {v:?} is not an IP address")))?,
        ),
        None => None,
    };
    let dir = format!("xcat/netboot/{os}/{arch}/{profile}");
    Ok(BootSpec {
        node: node.to_string(),
        image: image.to_string(),
        os,
        arch,
        profile,
        rootimgdir,
        kernel: format!("{dir}/kernel"),
        initrd: format!("{dir}/initrd.gz"),
        append: append.join(" "),
        macs,
        ip,
    })
}

/// The pxelinux configuration (the layout of the design document's example).
pub fn pxelinux_cfg(s: &BootSpec) -> String {
    format!(
        "#statelite {image}\nDEFAULT xCAT\nLABEL xCAT\n KERNEL {kernel}\n APPEND initrd={initrd} {append}\n IPAPPEND 2\n",
        image = s.image,
        kernel = s.kernel,
        initrd = s.initrd,
        append = s.append
    )
}

/// The GRUB 2 configuration (paths from the TFTP root).
pub fn grub2_cfg(s: &BootSpec, mac: Option<&str>) -> String {
    // pxelinux adds BOOTIF= itself (IPAPPEND 2); for GRUB the file is per MAC, so say it.
    let bootif = mac
        .map(|m| format!(" BOOTIF=01-{}", m.replace(':', "-")))
        .unwrap_or_default();
    format!(
        "#statelite {image}\nset timeout=5\nmenuentry \"xCAT statelite {image}\" {{\n    linux /{kernel} {append}{bootif}\n    initrd /{initrd}\n}}\n",
        image = s.image,
        kernel = s.kernel,
        initrd = s.initrd,
        append = s.append
    )
}

/// The yaboot configuration (the design document's POWER example).
pub fn yaboot_conf(s: &BootSpec) -> String {
    format!(
        "#statelite {image}\ntimeout=5\nimage={kernel}\n        label=xcat\n        initrd={initrd}\n        append=\"{append}\"\n",
        image = s.image,
        kernel = s.kernel,
        initrd = s.initrd,
        append = s.append
    )
}

fn write_file(path: &Path, text: &[u8], written: &mut Vec<PathBuf>) -> Result<(), CmdError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DbError::Write {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    write_file_atomic(path, text).map_err(|e| DbError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    written.push(path.to_path_buf());
    Ok(())
}

/// Copies `from` to `to` unless `to` already has the same size and modification time
/// (a rack of nodes shares one kernel: copy it once, atomically).
fn copy_if_changed(from: &Path, to: &Path, written: &mut Vec<PathBuf>) -> Result<(), CmdError> {
    let src = std::fs::metadata(from).map_err(|e| {
        usage(format!(
            "{}: {e} (build it with `statelite mkinitrd <image>`)",
            from.display()
        ))
    })?;
    if let Ok(dst) = std::fs::metadata(to)
        && dst.len() == src.len()
        && dst.modified().ok() == src.modified().ok()
    {
        return Ok(());
    }
    let data = std::fs::read(from).map_err(|e| usage(format!("{}: {e}", from.display())))?;
    write_file(to, &data, written)?;
    if let Ok(m) = src.modified() {
        let f = std::fs::File::options().write(true).open(to);
        if let Ok(f) = f {
            let _ = f.set_modified(m);
        }
    }
    Ok(())
}

/// Writes one node's files.
pub fn write_boot_files(spec: &BootSpec, tftpdir: &Path) -> Result<Vec<PathBuf>, CmdError> {
    let mut written = Vec::new();
    if spec.macs.is_empty() && !matches!(spec.ip, Some(IpAddr::V4(_))) {
        return Err(usage(format!(
            "node {}: no mac.mac and no IPv4 hosts.ip: PXE firmware could not find its file",
            spec.node
        )));
    }
    let image_dir = Path::new(&spec.rootimgdir);
    copy_if_changed(
        &image_dir.join("kernel"),
        &tftpdir.join(&spec.kernel),
        &mut written,
    )?;
    let initrd = ["initrd-statelite.gz", "initrd.gz"]
        .iter()
        .map(|n| image_dir.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| image_dir.join("initrd-statelite.gz"));
    copy_if_changed(&initrd, &tftpdir.join(&spec.initrd), &mut written)?;
    for (from, name) in PXELINUX {
        let to = tftpdir.join(name);
        if !to.exists() && Path::new(from).is_file() {
            copy_if_changed(Path::new(from), &to, &mut written)?;
        }
    }
    let pxe = pxelinux_cfg(spec);
    let yaboot = yaboot_conf(spec);
    for mac in &spec.macs {
        let bytes = parse_macs(mac).map_err(usage)?;
        let Some(m) = bytes.first() else { continue };
        let name = mac_file_name(m);
        write_file(
            &tftpdir.join("pxelinux.cfg").join(&name),
            pxe.as_bytes(),
            &mut written,
        )?;
        write_file(
            &tftpdir.join("boot/grub2").join(format!("grub.cfg-{name}")),
            grub2_cfg(spec, Some(mac)).as_bytes(),
            &mut written,
        )?;
        write_file(
            &tftpdir
                .join("etc")
                .join(format!("yaboot.conf-{}", &name[3..])),
            yaboot.as_bytes(),
            &mut written,
        )?;
    }
    if let Some(IpAddr::V4(ip)) = spec.ip {
        let hex = hex_ip(ip);
        write_file(
            &tftpdir.join("pxelinux.cfg").join(&hex),
            pxe.as_bytes(),
            &mut written,
        )?;
        write_file(
            &tftpdir.join("boot/grub2").join(format!("grub.cfg-{hex}")),
            grub2_cfg(spec, spec.macs.first().map(String::as_str)).as_bytes(),
            &mut written,
        )?;
    }
    Ok(written)
}

/// Records `image` as each node's `nodetype.provmethod` (only where it differs).
fn record_image(tables: &Path, db: &Db, nodes: &[String], image: &str) -> Result<(), CmdError> {
    let mut changed = false;
    for node in nodes {
        if db.node_attr(node, "nodetype", "provmethod")?.as_deref() == Some(image) {
            continue;
        }
        let fresh = Db::open(tables);
        let req = parse_chtab(
            &[
                format!("node={node}"),
                format!("nodetype.provmethod={image}"),
            ],
            false,
        )?;
        for (table, schema, change) in apply_chtab(&fresh, &req)? {
            db::validate_table(schema, &table, &change.file)?;
            table
                .write_atomic(&change.file)
                .map_err(|e| DbError::Write {
                    path: change.file.clone(),
                    message: e.to_string(),
                })?;
        }
        changed = true;
    }
    if changed {
        eprintln!("nodeset: nodetype.provmethod set to {image}");
    }
    Ok(())
}

impl NodesetArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let image_arg = match self.state.split_once('=') {
            None if self.state == "statelite" => None,
            Some(("statelite", img)) if !img.trim().is_empty() => Some(img.trim().to_string()),
            _ => {
                return Err(usage(format!(
                    "nodeset: {:?}: expected statelite or statelite=<image> (statelite does \
                     not write other boot states)",
                    self.state
                )));
            }
        };
        let db = Db::open(tables);
        let nodes = db.node_index()?.expand(&self.noderange)?;
        if let Some(image) = &image_arg {
            component("image", image)?;
            record_image(tables, &db, &nodes, image)?;
        }
        let db = Db::open(tables); // re-read: provmethod may have changed
        let mut results = Vec::new();
        let mut failed = false;
        for node in &nodes {
            let r = vars::image_of(&db, node)
                .map_err(CmdError::from)
                .and_then(|image| boot_spec(&db, node, &image, self.append.as_deref()))
                .and_then(|spec| {
                    write_boot_files(&spec, &self.tftpdir).map(|files| Written {
                        node: node.clone(),
                        image: spec.image.clone(),
                        files,
                    })
                });
            match r {
                Ok(w) => results.push(w),
                Err(e) => {
                    failed = true;
                    eprintln!("statelite: nodeset: {node}: {e}");
                }
            }
        }
        if self.json {
            print_json(&results)?;
        } else {
            let mut out = std::io::stdout().lock();
            for w in &results {
                writeln!(
                    out,
                    "{}: statelite {} ({} files)",
                    w.node,
                    w.image,
                    w.files.len()
                )?;
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(dir: &Path) {
        let w = |n: &str, t: &str| std::fs::write(dir.join(format!("{n}.csv")), t).unwrap();
        w(
            "nodelist",
            "#node,groups\n\"n01\",\"compute\"\n\"n02\",\"compute\"\n",
        );
        w(
            "nodetype",
            "#node,os,arch,profile\n\"compute\",\"centos5.3\",\"x86_64\",\"all\"\n",
        );
        w(
            "noderes",
            "#node,nfsserver,xcatmaster\n\"compute\",\"172.10.0.1\",\"172.10.0.1\"\n",
        );
        w(
            "mac",
            "#node,interface,mac\n\"n01\",,\"52:54:00:12:34:01|52:54:00:12:34:09!n01-ib\"\n",
        );
        w(
            "hosts",
            "#node,ip\n\"n01\",\"10.0.15.15\"\n\"n02\",\"10.0.15.16\"\n",
        );
        w(
            "statelite",
            "#node,image,statemnt,mntopts\n\"compute\",,\"cnfs:/gpfs/state\",\"vers=3\"\n",
        );
    }

    #[test]
    fn kernel_line_is_the_design_documents() {
        let d = tempfile::tempdir().unwrap();
        cluster(d.path());
        let db = Db::open(d.path());
        let image = vars::image_of(&db, "n01").unwrap();
        let s = boot_spec(&db, "n01", &image, Some("shell")).unwrap();
        assert_eq!(s.kernel, "xcat/netboot/centos5.3/x86_64/all/kernel");
        assert_eq!(
            s.append,
            "NFSROOT=172.10.0.1:/install/netboot/centos5.3/x86_64/all/rootimg \
             STATEMNT=cnfs:/gpfs/state MNTOPTS=vers=3 XCAT=172.10.0.1:3001 NODE=n01 \
             console=tty0 console=ttyS0,115200n8 shell"
        );
        assert_eq!(s.macs, ["52:54:00:12:34:01", "52:54:00:12:34:09"]);
        let pxe = pxelinux_cfg(&s);
        assert!(
            pxe.contains(" KERNEL xcat/netboot/centos5.3/x86_64/all/kernel\n"),
            "{pxe}"
        );
        assert!(
            pxe.contains(" APPEND initrd=xcat/netboot/centos5.3/x86_64/all/initrd.gz NFSROOT="),
            "{pxe}"
        );
        assert!(yaboot_conf(&s).contains("append=\"NFSROOT="));
        assert!(grub2_cfg(&s, Some("52:54:00:12:34:01")).contains("BOOTIF=01-52-54-00-12-34-01"));
    }

    #[test]
    fn files_by_mac_and_hex_ip() {
        let d = tempfile::tempdir().unwrap();
        cluster(d.path());
        let img = d.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(img.join("kernel"), b"K").unwrap();
        std::fs::write(img.join("initrd-statelite.gz"), b"I").unwrap();
        std::fs::write(
            d.path().join("osimage.csv"),
            format!(
                "#imagename,osvers,osarch,profile,rootimgdir\n\"centos5.3-x86_64-statelite-all\",,,,\"{}\"\n",
                img.display()
            ),
        )
        .unwrap();
        let tftp = d.path().join("tftp");
        let db = Db::open(d.path());
        let s = boot_spec(&db, "n01", "centos5.3-x86_64-statelite-all", None).unwrap();
        write_boot_files(&s, &tftp).unwrap();
        for f in [
            "pxelinux.cfg/01-52-54-00-12-34-01",
            "pxelinux.cfg/01-52-54-00-12-34-09",
            "pxelinux.cfg/0A000F0F",
            "boot/grub2/grub.cfg-01-52-54-00-12-34-01",
            "boot/grub2/grub.cfg-0A000F0F",
            "etc/yaboot.conf-52-54-00-12-34-01",
        ] {
            assert!(tftp.join(f).is_file(), "{f}");
        }
        assert_eq!(
            std::fs::read(tftp.join("xcat/netboot/centos5.3/x86_64/all/initrd.gz")).unwrap(),
            b"I"
        );
        // n02 has no MAC but an IPv4 address: by-IP files only.
        let s = boot_spec(&db, "n02", "centos5.3-x86_64-statelite-all", None).unwrap();
        let files = write_boot_files(&s, &tftp).unwrap();
        assert!(files.iter().any(|f| f.ends_with("0A000F10")), "{files:?}");
    }

    #[test]
    fn hostile_values_are_refused() {
        assert!(component("os", "../etc").is_err());
        assert!(component("os", "a/b").is_err());
        assert!(param_value("statemnt", "a b").is_err());
        assert!(parse_macs("52:54:00:12:34").is_err());
        assert!(parse_macs("zz:54:00:12:34:01").is_err());
        assert_eq!(hex_ip(Ipv4Addr::new(10, 0, 15, 15)), "0A000F0F");
    }
}

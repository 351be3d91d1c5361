//! `statelite demo`: a guided tour of a real statelite root, in a few seconds.
//!
//! Builds a small sample image, a litetree source, a per-node state directory and a litefile
//! (the design document's RedHat sample plus one row of each other kind) in a temporary
//! directory, mounts them in FUSE mode with the real `statelite-mountd` (found next to the
//! running `statelite`), and walks through what a node sees: tmpfs writes, `sed -i`, a
//! persistent file across a remount, `con` and `ro` files, a write refused on the locked-down
//! image and the `litectl`-style reports. Everything is unmounted and removed at the end, also
//! on error or Ctrl-C (a guard's `Drop` does it).
//!
//! Needs root (FUSE `allow_other`, `dev`, `suid` mount options) and /dev/fuse; nothing else.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

/// `statelite demo` arguments.
#[derive(Debug, Args)]
#[command(
    long_about = "Build a small sample statelite image in a temporary directory, mount it \
                  with statelite-mountd (FUSE mode) and walk through what a diskless node \
                  sees: tmpfs files, sed -i, a persistent file that survives a remount, con \
                  and ro files from a litetree, a write refused on the read-only image, and \
                  the litectl reports. Unmounts and removes everything at the end.\n\n\
                  Needs root and /dev/fuse, and statelite-mountd next to this statelite \
                  binary (cargo build --release builds both)."
)]
pub struct DemoArgs {
    /// Keep the temporary directory (image, litetree, stores, litefile, daemon log)
    /// afterwards, to look around. The root is unmounted in any case.
    #[arg(long)]
    pub keep: bool,
    /// Boot a real node instead: qemu PXE-boots a Debian 12 image from the files nodeset
    /// wrote, with its console on stdout (see tests/e2e/setup.sh for what it needs).
    #[arg(long)]
    pub boot: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo mounts a FUSE filesystem with allow_other and dev: run it as root")]
    NotRoot,
    #[error("/dev/fuse is not usable ({0}); load the fuse module or give the container /dev/fuse")]
    NoFuse(std::io::Error),
    #[error(
        "statelite-mountd not found next to statelite (looked for {}); build both with `cargo build --release` and run target/release/statelite",
        .0.display()
    )]
    NoMountd(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("control socket: {0}")]
    Control(String),
    /// A step did not behave as statelite promises: a bug worth reporting.
    #[error("unexpected result in step {step}: {detail}")]
    Unexpected { step: usize, detail: String },
    #[error("interrupted; the demo root was unmounted and its files removed")]
    Interrupted,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// The tour's run time as a person reads it: the whole tour takes tens of milliseconds,
/// which "0.0 s" would hide.
fn elapsed_text(d: std::time::Duration) -> String {
    if d.as_secs_f64() < 1.0 {
        format!("{} ms", d.as_millis().max(1))
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl DemoArgs {
    pub fn run(&self) -> Result<ExitCode, DemoError> {
        if self.boot {
            crate::bootlab::demo_boot(self.keep).map_err(|detail| DemoError::Command {
                cmd: "statelite demo --boot".into(),
                detail,
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        preflight()?;
        let mountd = find_mountd()?;
        install_interrupt_handler();
        let started = Instant::now();
        let mut demo = Demo::create(mountd, self.keep)?;
        demo.tour()?;
        demo.finish()?;
        say!(
            "\nDone in {}. Try it on your own image: statelite-mountd mount --help",
            elapsed_text(started.elapsed())
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Prints one line; a closed stdout (`statelite demo | head`) must not abort the demo
/// before it has unmounted and cleaned up.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
use say;

fn preflight() -> Result<(), DemoError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(DemoError::NoFuse)
}

/// The daemon of the same build: running whatever `statelite-mountd` is on `$PATH` could
/// demo another version.
fn find_mountd() -> Result<PathBuf, DemoError> {
    let exe = std::env::current_exe().map_err(io_err("locating the running statelite"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mountd = dir.join("statelite-mountd");
    if mountd.is_file() {
        Ok(mountd)
    } else {
        Err(DemoError::NoMountd(mountd))
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C would otherwise kill us without running `Drop`, leaving a mount behind. The
/// handler only sets a flag, checked between steps; exec resets it for child processes.
fn install_interrupt_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        // A failure leaves the default disposition, which is no worse than not trying.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

const NODE: &str = "n01";
const IMAGE_NAME: &str = "rhels8-x86_64-statelite-compute";

/// The design document's "Sample Data for RedHat" litefile (all tmpfs), verbatim.
const REDHAT_SAMPLE: &str = r#""ALL","/etc/adjtime",,,
"ALL","/etc/fstab",,,
"ALL","/etc/inittab",,,
"ALL","/etc/lvm/.cache",,,
"ALL","/etc/mtab",,,
"ALL","/etc/ntp.conf",,,
"ALL","/etc/ntp.conf.predhclient",,,
"ALL","/etc/resolv.conf",,,
"ALL","/etc/resolv.conf.predhclient",,,
"ALL","/etc/ssh/",,,
"ALL","/tmp/",,,
"ALL","/var/account/",,,
"ALL","/var/arpwatch",,,
"ALL","/var/cache/alchemist",,,
"ALL","/var/cache/foomatic/",,,
"ALL","/var/cache/logwatch/",,,
"ALL","/var/cache/man/",,,
"ALL","/var/cache/mod_ssl/",,,
"ALL","/var/cache/mod_proxy/",,,
"ALL","/var/cache/php-pear/",,,
"ALL","/var/cache/systemtap/",,,
"ALL","/var/empty/",,,
"ALL","/var/db/nscd/",,,
"ALL","/var/gdm/",,,
"ALL","/var/lib/dav/",,,
"ALL","/var/lib/dhcp/",,,
"ALL","/var/lib/dhclient/",,,
"ALL","/var/lib/php/",,,
"ALL","/var/lib/scsi/",,,
"ALL","/var/lib/ups/",,,
"ALL","/var/lib/random-seed",,,
"ALL","/var/lib/iscsi",,,
"ALL","/var/lib/logrotate.status",,,
"ALL","/var/lib/ntp/",,,
"ALL","/var/lib/xen/ntp",,,
"ALL","/var/lock/",,,
"ALL","/var/log/",,,
"ALL","/var/run/",,,
"ALL","/var/tmp/",,,
"ALL","/var/tux/",,,
"ALL","/opt/xcat/",,,
"ALL","/xcatpost/",,,
"#;

/// One row of each kind the RedHat sample lacks.
const DEMO_ROWS: &str = r#""ALL","/etc/license","persistent","per-node licence key; survives reboots",
"ALL","/etc/motd","ro","per-site text from the litetree, never writable on the node",
"ALL","/etc/hosts","con","image file plus every litetree addition",
"#;

/// Files of the sample image: (path, content, mode).
const IMAGE_FILES: &[(&str, &str, u32)] = &[
    (
        "etc/ntp.conf",
        "# /etc/ntp.conf (from the image)\ndriftfile /var/lib/ntp/drift\nserver 0.rhel.pool.ntp.org iburst\n",
        0o644,
    ),
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin\nnobody:x:65534:65534:Nobody:/:/sbin/nologin\n",
        0o644,
    ),
    (
        "etc/motd",
        "Welcome to the statelite compute image.\n",
        0o644,
    ),
    (
        "etc/hosts",
        "127.0.0.1   localhost localhost.localdomain\n::1         localhost6\n",
        0o644,
    ),
    ("etc/license", "LICENSE_KEY=none (image default)\n", 0o644),
    (
        "etc/fstab",
        "# the root is statelite; nothing to mount\n",
        0o644,
    ),
    ("etc/resolv.conf", "nameserver 10.0.0.1\n", 0o644),
    ("etc/inittab", "id:3:initdefault:\n", 0o644),
    ("etc/adjtime", "0.0 0 0.0\n0\nUTC\n", 0o644),
    (
        "etc/ssh/sshd_config",
        "PermitRootLogin without-password\n",
        0o600,
    ),
    (
        "etc/ssh/ssh_host_ed25519_key.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoDemoDemoDemoDemoDemoDemoDemoDemoDemo root@image\n",
        0o644,
    ),
    (
        "var/log/messages",
        "Nov 24 08:00:00 image genimage: image created\n",
        0o600,
    ),
    ("var/lib/ntp/drift", "0.000\n", 0o644),
];

/// Per-site files the litetree source supplies (a litetree row like
/// `1,,10.0.0.1:/syncdirs/$nodepos.room/...` in the design document).
const LITETREE_FILES: &[(&str, &str)] = &[
    (
        "etc/motd",
        "Welcome to n01, site newyork-590Madison (this text comes from the litetree).\n",
    ),
    (
        "etc/hosts",
        "10.0.0.1    mgmt.cluster mgmt     # site addition from the litetree\n",
    ),
];

/// Real programs copied from the host into the image's /usr/bin, so the tour runs a binary
/// straight off the statelite root.
const HOST_BINARIES: &[&str] = &["ls", "cat", "sed"];

const STEPS: usize = 9;

/// The demo's temporary directory and mount. Dropping it unmounts (if mounted) and removes
/// the directory, unless `--keep` or the unmount failed (removing files under a live mount
/// would delete through it).
struct Demo {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    root: PathBuf,
    sock: PathBuf,
    mountd: PathBuf,
    mounted: bool,
    keep: bool,
    step: usize,
    bold: bool,
}

impl Demo {
    fn create(mountd: PathBuf, keep: bool) -> Result<Demo, DemoError> {
        let tmp = tempfile::Builder::new()
            .prefix("statelite-demo.")
            .tempdir()
            .map_err(io_err("creating the demo's temporary directory"))?;
        let dir = tmp.path().to_path_buf();
        let demo = Demo {
            root: dir.join("root"),
            sock: dir.join("control.sock"),
            dir,
            tmp: Some(tmp),
            mountd,
            mounted: false,
            keep,
            step: 0,
            bold: std::io::stdout().is_terminal(),
        };
        demo.build_tree()?;
        Ok(demo)
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A path as the node sees it, on this host (inside the mount).
    fn node(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn build_tree(&self) -> Result<(), DemoError> {
        for d in [
            "image/tmp",
            "image/var/tmp",
            "image/root",
            "image/usr/bin",
            "litetree",
            "volatile",
            "state",
            "root",
        ] {
            mkdir(&self.p(d))?;
        }
        mkdir(&self.p(&format!("state/{NODE}")))?;
        for (rel, content, mode) in IMAGE_FILES {
            write_file(&self.p(&format!("image/{rel}")), content, *mode)?;
        }
        for (dir, mode) in [("image/tmp", 0o1777), ("image/var/tmp", 0o1777)] {
            chmod(&self.p(dir), mode)?;
        }
        chmod(&self.p("image/root"), 0o700)?;
        for name in HOST_BINARIES {
            // A missing host binary only shortens the tour; the image is still valid.
            if let Some(src) = which_host(name) {
                let dst = self.p(&format!("image/usr/bin/{name}"));
                fs::copy(&src, &dst)
                    .map_err(io_err(format!("copying {} into the image", src.display())))?;
            }
        }
        for (rel, content) in LITETREE_FILES {
            write_file(&self.p(&format!("litetree/{rel}")), content, 0o644)?;
        }
        let litefile = format!("#image,file,options,comments,disable\n{REDHAT_SAMPLE}{DEMO_ROWS}");
        write_file(&self.p("litefile.csv"), &litefile, 0o644)
    }

    // ---- presentation ------------------------------------------------------------------

    fn heading(&mut self, title: &str) -> Result<(), DemoError> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(DemoError::Interrupted);
        }
        self.step += 1;
        let text = format!("[{}/{STEPS}] {title}", self.step);
        if self.bold {
            say!("\n\x1b[1m{text}\x1b[0m");
        } else {
            say!("\n{text}");
        }
        Ok(())
    }

    fn why(&self, text: &str) {
        for line in wrap(text, 88) {
            say!("    {line}");
        }
    }

    /// The command a user would type on the node.
    fn shell(&self, cmd: &str) {
        say!("    $ {cmd}");
    }

    fn output(&self, text: &str) {
        for line in text.lines() {
            say!("      {line}");
        }
    }

    fn unexpected(&self, detail: impl Into<String>) -> DemoError {
        DemoError::Unexpected {
            step: self.step,
            detail: detail.into(),
        }
    }

    // ---- actions -----------------------------------------------------------------------

    fn mount_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["mount".into()];
        let mut opt = |k: &str, v: PathBuf| {
            a.push(k.into());
            a.push(v.into_os_string());
        };
        opt("--image", self.p("image"));
        opt("--litefile", self.p("litefile.csv"));
        opt("--tree", self.p("litetree"));
        opt("--volatile", self.p("volatile"));
        opt("--state", self.p(&format!("state/{NODE}")));
        opt("--control", self.sock.clone());
        opt("--log", self.p("daemon.log"));
        a.push("--image-name".into());
        a.push(IMAGE_NAME.into());
        a.push(self.root.clone().into_os_string());
        a
    }

    fn mount(&mut self) -> Result<(), DemoError> {
        let out = Command::new(&self.mountd)
            .args(self.mount_args())
            .env("STATELITE_LOG", "warn")
            .output()
            .map_err(io_err(format!("running {}", self.mountd.display())))?;
        if !out.status.success() {
            return Err(DemoError::Command {
                cmd: "statelite-mountd mount".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        self.mounted = true;
        Ok(())
    }

    fn umount(&mut self) -> Result<(), DemoError> {
        let out = Command::new(&self.mountd)
            .arg("umount")
            .arg(&self.root)
            .output()
            .map_err(io_err(format!("running {}", self.mountd.display())))?;
        if !out.status.success() {
            return Err(DemoError::Command {
                cmd: "statelite-mountd umount".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        self.mounted = false;
        wait_unmounted(&self.root);
        Ok(())
    }

    /// One control-socket request (what `litectl` sends).
    fn control(&self, request: &Value) -> Result<Value, DemoError> {
        let err = |e: std::io::Error| DemoError::Control(format!("{}: {e}", self.sock.display()));
        let mut s = UnixStream::connect(&self.sock).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        writeln!(s, "{request}").map_err(err)?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).map_err(err)?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| DemoError::Control(format!("unreadable answer {line:?}: {e}")))?;
        if let Some(e) = v.get("error") {
            return Err(DemoError::Control(format!("{request}: {e}")));
        }
        Ok(v)
    }

    /// Asks the daemon which layer serves `path` and prints it, `litectl which` style.
    fn served(&self, path: &str) -> Result<Value, DemoError> {
        let w = self.control(&json!({"cmd": "which", "path": path}))?;
        // Whether a store file was copied up or created there, the store is what serves it
        // now, which is what this line is about.
        let layer = describe_layer(w.get("served_from").unwrap_or(&Value::Null));
        say!(
            "      -> {path} served by: {layer}; rule: {}",
            describe_rule(w.get("rule").unwrap_or(&Value::Null))
        );
        Ok(w)
    }

    fn read(&self, path: &str) -> Result<String, DemoError> {
        fs::read_to_string(self.node(path)).map_err(io_err(format!("reading {path}")))
    }

    fn append(&self, path: &str, text: &str) -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().append(true).open(self.node(path))?;
        f.write_all(text.as_bytes())
    }

    fn expect_layer(&self, w: &Value, want: &str) -> Result<(), DemoError> {
        let got = w
            .get("served_from")
            .and_then(|l| l.get("layer"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        if got == want {
            Ok(())
        } else {
            Err(self.unexpected(format!(
                "{} is served by {got}, expected {want}",
                w.get("path").and_then(Value::as_str).unwrap_or("?")
            )))
        }
    }

    // ---- the tour ----------------------------------------------------------------------

    fn tour(&mut self) -> Result<(), DemoError> {
        self.intro();
        self.step_mount()?;
        self.step_tmpfs()?;
        self.step_sed()?;
        self.step_persistent()?;
        self.step_con()?;
        self.step_ro()?;
        self.step_erofs()?;
        self.step_diff()
    }

    fn intro(&self) {
        say!("statelite demo: one diskless node ({NODE}) booting image {IMAGE_NAME}");
        say!("workspace: {}", self.dir.display());
        say!("    image/        the read-only image (normally NFS from the management node)");
        say!("    litetree/     a per-site litetree source: /etc/motd, an /etc/hosts addition");
        say!("    volatile/     the node's tmpfs (volatile store)");
        say!("    state/{NODE}/    the node's persistent state (statelite table: statemnt/{NODE})");
        say!(
            "    litefile.csv  the design document's RedHat sample plus one row of each other kind:"
        );
        for row in DEMO_ROWS.lines() {
            say!("                      {row}");
        }
        say!("    root/         the node's / (paths below are shown as the node sees them)");
    }

    fn step_mount(&mut self) -> Result<(), DemoError> {
        self.heading("Mount the node's root (FUSE mode)")?;
        self.why(
            "statelite-mountd merges the layers into one tree. Paths with no litefile row \
             come from the image and are read-only; each row makes its path writable in its \
             own way.",
        );
        self.shell(&format!(
            "statelite-mountd mount --image image --litefile litefile.csv --image-name {IMAGE_NAME} \
             --tree litetree --volatile volatile --state state/{NODE} --control control.sock root"
        ));
        self.mount()?;
        let st = self.control(&json!({"cmd": "status"}))?;
        self.output(&format!(
            "mounted; {} litefile rules, FUSE passthrough: {}",
            st.get("rules").map_or_else(|| "?".into(), Value::to_string),
            if st.get("passthrough") == Some(&Value::Bool(true)) {
                "on (reads go straight to the backing files)"
            } else {
                "off (this kernel has none)"
            }
        ));
        let ls = self.node("usr/bin/ls");
        if ls.is_file() {
            self.shell(
                "/usr/bin/ls /etc    # a program from the image, run off the statelite root",
            );
            let out = Command::new(&ls)
                .arg(self.node("etc"))
                .output()
                .map_err(io_err("running /usr/bin/ls from the image"))?;
            let names = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("  ");
            self.output(&names);
        }
        Ok(())
    }

    fn step_tmpfs(&mut self) -> Result<(), DemoError> {
        self.heading("Write to tmpfs files")?;
        self.why(
            "/var/log/ and /tmp/ are blank-option rows of the RedHat sample: writable, kept in \
             the node's tmpfs. An image file is copied up at its first write; until then it is \
             read straight from the image.",
        );
        self.served("/var/log/messages")?;
        let line = "Nov 24 08:01:02 n01 demo: node booted\n";
        self.shell("echo 'Nov 24 08:01:02 n01 demo: node booted' >> /var/log/messages");
        self.append("/var/log/messages", line)
            .map_err(io_err("appending to /var/log/messages"))?;
        self.shell("cat /var/log/messages");
        let text = self.read("/var/log/messages")?;
        self.output(&text);
        let w = self.served("/var/log/messages")?;
        self.expect_layer(&w, "volatile")?;
        self.shell("echo hello > /tmp/hello.txt");
        fs::write(self.node("/tmp/hello.txt"), "hello\n")
            .map_err(io_err("writing /tmp/hello.txt"))?;
        let w = self.served("/tmp/hello.txt")?;
        self.expect_layer(&w, "volatile")
    }

    fn step_sed(&mut self) -> Result<(), DemoError> {
        self.heading("sed -i on /etc/ntp.conf")?;
        self.why(
            "sed -i writes a temporary file next to ntp.conf and renames it over the original. \
             /etc itself is read-only, but statelite lets the temporary name live in the tmpfs \
             so the rename onto the writable /etc/ntp.conf works, as on a normal disk.",
        );
        let expr = "s/^server .*/server 10.0.0.1 iburst/";
        self.shell(&format!("sed -i '{expr}' /etc/ntp.conf"));
        let out = Command::new("sed")
            .arg("-i")
            .arg(expr)
            .arg(self.node("/etc/ntp.conf"))
            .output()
            .map_err(io_err("running sed"))?;
        if !out.status.success() {
            return Err(self.unexpected(format!(
                "sed -i failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.shell("cat /etc/ntp.conf");
        let text = self.read("/etc/ntp.conf")?;
        self.output(&text);
        if !text.contains("server 10.0.0.1 iburst") {
            return Err(self.unexpected("sed's change is not visible"));
        }
        let w = self.served("/etc/ntp.conf")?;
        self.expect_layer(&w, "volatile")?;
        say!("    The image is untouched (on the management node):");
        self.shell("grep ^server image/etc/ntp.conf");
        let image = fs::read_to_string(self.p("image/etc/ntp.conf"))
            .map_err(io_err("reading the image's ntp.conf"))?;
        let server: String = image
            .lines()
            .filter(|l| l.starts_with("server"))
            .collect::<Vec<_>>()
            .join("\n");
        self.output(&server);
        Ok(())
    }

    fn step_persistent(&mut self) -> Result<(), DemoError> {
        self.heading("A persistent file survives a reboot; tmpfs files do not")?;
        self.why(
            "/etc/license is \"persistent\": its first copy comes from the image, and every \
             change goes to the node's state directory on the server, which outlives the node. \
             We simulate a reboot: unmount, empty the tmpfs, mount again.",
        );
        self.shell("cat /etc/license");
        self.output(&self.read("/etc/license")?);
        self.shell("echo LICENSE_KEY=n01-7f3a-22c9 > /etc/license");
        fs::write(self.node("/etc/license"), "LICENSE_KEY=n01-7f3a-22c9\n")
            .map_err(io_err("writing /etc/license"))?;
        let w = self.served("/etc/license")?;
        self.expect_layer(&w, "persistent")?;

        self.shell("statelite-mountd umount root        # shutdown");
        self.umount()?;
        self.shell("rm -rf volatile/* && statelite-mountd mount ... root   # boot: fresh tmpfs");
        empty_dir(&self.p("volatile"))?;
        self.mount()?;

        self.shell("cat /etc/license");
        let lic = self.read("/etc/license")?;
        self.output(&lic);
        if lic != "LICENSE_KEY=n01-7f3a-22c9\n" {
            return Err(self.unexpected("the persistent file lost its content across the remount"));
        }
        let w = self.served("/etc/license")?;
        self.expect_layer(&w, "persistent")?;
        self.shell("cat /tmp/hello.txt");
        match fs::metadata(self.node("/tmp/hello.txt")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.output("cat: /tmp/hello.txt: No such file or directory   (tmpfs: gone)")
            }
            Ok(_) => return Err(self.unexpected("/tmp/hello.txt survived the reboot")),
            Err(e) => return Err(io_err("checking /tmp/hello.txt")(e)),
        }
        self.shell("tail -n 1 /var/log/messages; grep ^server /etc/ntp.conf");
        let log = self.read("/var/log/messages")?;
        let ntp = self.read("/etc/ntp.conf")?;
        let tail = log.lines().last().unwrap_or("").to_string();
        let server = ntp
            .lines()
            .find(|l| l.starts_with("server"))
            .unwrap_or("")
            .to_string();
        self.output(&format!(
            "{tail}\n{server}\n(both back to the image's version)"
        ));
        if log.contains("demo: node booted") || ntp.contains("10.0.0.1") {
            return Err(self.unexpected("tmpfs changes survived the reboot"));
        }
        Ok(())
    }

    fn step_con(&mut self) -> Result<(), DemoError> {
        self.heading("A con file: the image's /etc/hosts plus the litetree's addition")?;
        self.why(
            "\"con\" concatenates the image file and every litetree hit, in priority order, \
             into the node's tmpfs at first access: the site adds its hosts without editing the \
             image.",
        );
        self.shell("cat /etc/hosts");
        let text = self.read("/etc/hosts")?;
        self.output(&text);
        if !text.contains("localhost") || !text.contains("mgmt.cluster") {
            return Err(self.unexpected("/etc/hosts is not image + litetree"));
        }
        self.served("/etc/hosts")?;
        Ok(())
    }

    fn step_ro(&mut self) -> Result<(), DemoError> {
        self.heading("A ro file from the litetree")?;
        self.why(
            "\"ro\" serves the first litetree hit (the image's copy only if no source has one), \
             live from the server and never writable on the node.",
        );
        self.shell("cat /etc/motd");
        let text = self.read("/etc/motd")?;
        self.output(&text);
        if !text.contains("from the litetree") {
            return Err(self.unexpected("/etc/motd does not come from the litetree"));
        }
        let w = self.served("/etc/motd")?;
        self.expect_layer(&w, "tree")
    }

    fn step_erofs(&mut self) -> Result<(), DemoError> {
        self.heading("Lock-down: the rest of the image is read-only")?;
        self.why(
            "/etc/passwd has no litefile row, so it is the image's, read-only (EROFS). The \
             daemon records the attempt; `litectl denied` turns it into a litefile row to add if \
             the write was legitimate.",
        );
        let cmd = "echo 'demo:x:1000:1000::/home/demo:/bin/bash' >> /etc/passwd";
        self.shell(cmd);
        match self.append("/etc/passwd", "demo:x:1000:1000::/home/demo:/bin/bash\n") {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                self.output("sh: /etc/passwd: Read-only file system (EROFS)")
            }
            Err(e) => return Err(self.unexpected(format!("expected EROFS, got: {e}"))),
            Ok(()) => return Err(self.unexpected("the write to /etc/passwd succeeded")),
        }
        let w = self.served("/etc/passwd")?;
        self.expect_layer(&w, "image")?;
        self.shell(&format!("litectl --socket {} denied", self.sock.display()));
        let d = self.control(&json!({"cmd": "denied"}))?;
        let list = d.get("denied").and_then(Value::as_array).cloned();
        let list = list.unwrap_or_default();
        let mut rows = String::new();
        let mut suggestions = String::new();
        for e in &list {
            let path = e.get("path").and_then(Value::as_str).unwrap_or("?");
            let op = e.get("op").and_then(Value::as_str).unwrap_or("?");
            let count = e.get("count").and_then(Value::as_u64).unwrap_or(0);
            let _ = writeln!(rows, "{count:>5}  {op:<8}  {path}");
            if let Some(s) = e.get("suggested_litefile_row").and_then(Value::as_str) {
                let _ = writeln!(suggestions, "{s}");
            }
        }
        self.output(&format!("COUNT  OP        PATH\n{rows}"));
        self.output("suggested litefile rows:");
        self.output(&suggestions);
        if !list
            .iter()
            .any(|e| e.get("path").and_then(Value::as_str) == Some("/etc/passwd"))
        {
            return Err(self.unexpected("the denied write to /etc/passwd was not recorded"));
        }
        Ok(())
    }

    fn step_diff(&mut self) -> Result<(), DemoError> {
        self.heading("What this node changed: litectl diff")?;
        self.why(
            "Like `git status` against the image: M modified, A added, D deleted (a whiteout \
             in the store hides the image's file), with the store that holds the change. A few \
             more changes first:",
        );
        self.shell("rm /var/log/messages; echo scratch > /tmp/new");
        fs::remove_file(self.node("/var/log/messages"))
            .map_err(io_err("removing /var/log/messages"))?;
        fs::write(self.node("/tmp/new"), "scratch\n").map_err(io_err("writing /tmp/new"))?;
        self.shell(&format!("litectl --socket {} diff", self.sock.display()));
        let d = self.control(&json!({"cmd": "diff"}))?;
        let changes = d
            .get("changes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let width = changes
            .iter()
            .filter_map(|c| c.get("path").and_then(Value::as_str))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for c in &changes {
            let letter = match c.get("change").and_then(Value::as_str) {
                Some("modified") => 'M',
                Some("added") => 'A',
                Some("deleted") => 'D',
                _ => '?',
            };
            let path = c.get("path").and_then(Value::as_str).unwrap_or("?");
            let store = c.get("store").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(text, "{letter} {path:<width$}  ({store})");
        }
        self.output(&text);
        say!("    (/etc/hosts shows as modified because a con file is assembled in the tmpfs.)");
        for want in ["M /etc/license", "A /tmp/new", "D /var/log/messages"] {
            if !text.contains(want) {
                return Err(self.unexpected(format!("diff lacks {want:?}")));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DemoError> {
        self.heading("Unmount and clean up")?;
        self.shell("statelite-mountd umount root");
        self.umount()?;
        let removed = self.cleanup();
        self.output(&removed);
        Ok(())
    }

    /// Removes (or keeps) the temporary directory; returns what was done, for the user.
    fn cleanup(&mut self) -> String {
        let Some(tmp) = self.tmp.take() else {
            return String::new();
        };
        if is_mounted(&self.root) {
            // Never delete under a live mount: it would delete through it.
            let path = tmp.keep();
            return format!(
                "{} is still mounted; left {} in place (umount it, then remove the directory)",
                self.root.display(),
                path.display()
            );
        }
        if self.keep {
            let path = tmp.keep();
            return format!("kept {} (--keep)", path.display());
        }
        let path = tmp.path().display().to_string();
        match tmp.close() {
            Ok(()) => format!("removed {path}"),
            Err(e) => format!("could not remove {path}: {e}"),
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = self.umount() {
                eprintln!("statelite demo: {e}; detaching the mount");
                // Lazy unmount: a wedged daemon must not leave the mount point busy.
                let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
                wait_unmounted(&self.root);
            }
            self.mounted = false;
        }
        if self.tmp.is_some() {
            let what = self.cleanup();
            eprintln!("statelite demo: {what}");
        }
    }
}

// ---- helpers -----------------------------------------------------------------------------

fn mkdir(p: &Path) -> Result<(), DemoError> {
    fs::create_dir_all(p).map_err(io_err(format!("creating {}", p.display())))
}

fn chmod(p: &Path, mode: u32) -> Result<(), DemoError> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", p.display())))
}

fn write_file(p: &Path, content: &str, mode: u32) -> Result<(), DemoError> {
    if let Some(parent) = p.parent() {
        mkdir(parent)?;
    }
    fs::write(p, content).map_err(io_err(format!("writing {}", p.display())))?;
    chmod(p, mode)
}

fn empty_dir(p: &Path) -> Result<(), DemoError> {
    fs::remove_dir_all(p).map_err(io_err(format!("emptying {}", p.display())))?;
    mkdir(p)
}

fn which_host(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        // Unknown: say "mounted" so that nothing is deleted through a live mount.
        return true;
    };
    let want = mountpoint.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*want))
}

/// The kernel drops the mount synchronously, but give a detached one a moment to go.
fn wait_unmounted(mountpoint: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_mounted(mountpoint) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn describe_layer(v: &Value) -> String {
    match v.get("layer").and_then(Value::as_str) {
        Some("image") => "the image (read-only)".into(),
        Some("tree") => {
            let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            format!("litetree[{}] (litetree/)", i + 1)
        }
        Some("volatile") => "volatile store (tmpfs)".into(),
        Some("persistent") => format!("persistent store (state/{NODE}/)"),
        Some("localdisk") => "local-disk store".into(),
        Some(other) => other.into(),
        None => "-".into(),
    }
}

fn describe_rule(rule: &Value) -> String {
    if rule.is_null() {
        return "none (not in the litefile: read-only image)".into();
    }
    let path = rule.get("path").and_then(Value::as_str).unwrap_or("?");
    let slash = if rule.get("is_dir") == Some(&Value::Bool(true)) {
        "/"
    } else {
        ""
    };
    let opts = match rule.get("options_text").and_then(Value::as_str) {
        Some("") | None => "blank = tmpfs",
        Some(t) => t,
    };
    let line = rule.get("line").and_then(Value::as_u64).unwrap_or(0);
    format!("\"{path}{slash}\" ({opts}), litefile line {line}")
}

/// Greedy word wrap for the explanations.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_litefile_parses_without_violations() {
        let text = format!("#image,file,options,comments,disable\n{REDHAT_SAMPLE}{DEMO_ROWS}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("litefile.csv");
        fs::write(&path, text).expect("write");
        let rows = statelite_fs::rules::read_litefile(&path).expect("litefile parses");
        let rules = statelite_fs::rules::RuleSet::for_image(&rows, IMAGE_NAME);
        assert!(rules.violations().is_empty(), "{:?}", rules.violations());
    }

    #[test]
    fn elapsed_text_reads_in_ms_under_a_second() {
        use std::time::Duration;
        assert_eq!(elapsed_text(Duration::from_micros(42_600)), "42 ms");
        assert_eq!(elapsed_text(Duration::from_micros(300)), "1 ms");
        assert_eq!(elapsed_text(Duration::from_millis(999)), "999 ms");
        assert_eq!(elapsed_text(Duration::from_millis(2_340)), "2.3 s");
    }

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
    }
}

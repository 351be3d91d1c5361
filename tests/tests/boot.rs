//! `statelite-mountd boot` end to end with real mounts, local directories standing in for
//! the NFS exports (`--fake-nfs-root`): FUSE and symlink mode, first and second boot,
//! persistent storage unavailable, a missing litetree source, a slow server, malformed
//! command lines, and teardown leaving nothing mounted. Needs root; skipped otherwise.

mod fuse_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fuse_common::{bin, write};

const ENTRIES: &[(&str, &str, &str)] = &[
    ("ALL", "/etc/motd", "tmpfs"),
    ("ALL", "/etc/hosts", "ro"),
    ("ALL", "/etc/ntp.conf", "tmpfs"),
    ("ALL", "/var/lib/state/", "persistent"),
];

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: boot needs root for mount(2)");
    false
}

/// Mount points at or below `dir`.
fn mounted_below(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

struct Node {
    dir: tempfile::TempDir,
    /// Extra `--fake-nfs-root` mappings and flags.
    args: Vec<String>,
    /// Retry flags (fast by default).
    retry: Vec<String>,
    booted: bool,
}

impl Node {
    /// Image, state and two litetree exports under a temp dir; the config names the trees
    /// `srv:/trees/t1` and `srv:/trees/t2` (one fake mapping of `srv:/trees` serves both).
    fn new() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("statelite-boot")
            .tempdir_in("/tmp")
            .unwrap();
        let p = dir.path();
        for d in ["img", "state", "trees/t1", "trees/t2", "sysroot", "run"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        write(&p.join("img/etc/motd"), "image motd\n");
        write(&p.join("img/etc/hosts"), "image hosts\n");
        write(&p.join("img/etc/ntp.conf"), "server image\n");
        write(&p.join("img/etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
        write(&p.join("img/var/lib/state/db"), "initial db\n");
        write(&p.join("trees/t1/etc/hosts"), "tree1 hosts\n");
        write(&p.join("trees/t2/etc/hosts"), "tree2 hosts\n");
        write(&p.join("trees/t2/etc/ntp.conf"), "server tree2\n");
        let rows: Vec<serde_json::Value> = ENTRIES
            .iter()
            .map(|(i, f, o)| serde_json::json!({"image": i, "file": f, "options": o}))
            .collect();
        let cfg = serde_json::json!({
            "image": "compute",
            "litefile_rows": rows,
            "litetree": ["srv:/trees/t1", {"dir": "srv:/trees/t2", "mntopts": "vers=4.2"}],
        });
        fs::write(p.join("boot.json"), cfg.to_string()).unwrap();
        Node {
            dir,
            args: Vec::new(),
            retry: [
                "--retries",
                "3",
                "--retry-initial-ms",
                "20",
                "--retry-max-ms",
                "100",
            ]
            .map(String::from)
            .to_vec(),
            booted: false,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn root(&self, rel: &str) -> PathBuf {
        self.p("sysroot").join(rel)
    }
    fn fake(&mut self, src: &str, local: &str) {
        self.args.push("--fake-nfs-root".into());
        self.args.push(format!("{src}={}", self.p(local).display()));
    }
    /// The usual mappings: image, state and the trees.
    fn standard(&mut self) {
        self.fake("srv:/img", "img");
        self.fake("srv:/state", "state");
        self.fake("srv:/trees", "trees");
    }

    fn boot(&mut self, cmdline: &str) -> Output {
        let out = Command::new(bin("statelite-mountd"))
            .arg("boot")
            .arg("--sysroot")
            .arg(self.p("sysroot"))
            .arg("--run-dir")
            .arg(self.p("run"))
            .arg("--config")
            .arg(self.p("boot.json"))
            .arg("--kmsg")
            .arg(self.p("kmsg"))
            .arg("--cmdline")
            .arg(cmdline)
            .args(&self.retry)
            .arg("--generation-interval")
            .arg("0.2")
            .args(&self.args)
            .env_remove("STATELITE_LOG")
            .output()
            .unwrap();
        // Even a failed boot may have left something: teardown on drop either way.
        self.booted = true;
        out
    }

    fn boot_ok(&mut self, cmdline: &str) -> String {
        let out = self.boot(cmdline);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "boot failed: {err}");
        err
    }

    fn teardown(&mut self) {
        if !self.booted {
            return;
        }
        self.booted = false;
        let out = Command::new(bin("statelite-mountd"))
            .arg("boot-teardown")
            .arg("--sysroot")
            .arg(self.p("sysroot"))
            .arg("--run-dir")
            .arg(self.p("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "teardown: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let left = mounted_below(self.dir.path());
        assert!(left.is_empty(), "teardown left mounts: {left:?}");
    }

    fn log(&self) -> String {
        fs::read_to_string(self.root(".statelite/statelite.log")).unwrap_or_default()
    }
    fn kmsg(&self) -> String {
        fs::read_to_string(self.p("kmsg")).unwrap_or_default()
    }
    fn daemon_pid(&self) -> i32 {
        fs::read_to_string(self.p("run/mountd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
    fn control(&self, cmd: &str) -> serde_json::Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s =
            std::os::unix::net::UnixStream::connect(self.root(".statelite/control.sock")).unwrap();
        writeln!(s, "{}", serde_json::json!({ "cmd": cmd })).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.booted {
            self.booted = false;
            let _ = Command::new(bin("statelite-mountd"))
                .arg("boot-teardown")
                .arg("--sysroot")
                .arg(self.p("sysroot"))
                .arg("--run-dir")
                .arg(self.p("run"))
                .status();
        }
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn erofs(p: &Path) {
    let e = fs::write(p, "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: {e}", p.display());
}

const LINE: &str = "console=ttyS0 quiet NFSROOT=srv:/img STATEMNT=srv:/state NODE=n01 \
                    MNTOPTS=port=20490 BOOTIF=01-52-54-00-12-34-01";

#[test]
fn fuse_boot_first_and_second() {
    if !is_root() {
        return;
    }
    let mut n = Node::new();
    n.standard();
    n.args.push("--initrd".into());
    n.boot_ok(&format!("{LINE} STATELITE_MODE=fuse"));

    // The merged root is ready on the sysroot when boot returns.
    assert_eq!(read(&n.root("etc/motd")), "image motd\n");
    assert_eq!(read(&n.root("etc/hosts")), "tree1 hosts\n");
    assert_eq!(read(&n.root("etc/ntp.conf")), "server tree2\n");
    fs::write(n.root("etc/motd"), "node motd\n").unwrap();
    assert_eq!(read(&n.root("etc/motd")), "node motd\n");
    erofs(&n.root("etc/hosts"));
    erofs(&n.root("etc/passwd"));
    // Persistent: the node's own state directory, created on first boot.
    assert!(n.p("state/n01").is_dir());
    fs::write(n.root("var/lib/state/db"), "node db\n").unwrap();
    fs::write(n.root("var/lib/state/new"), "kept\n").unwrap();
    assert_eq!(read(&n.p("state/n01/var/lib/state/new")), "kept\n");
    // /.statelite: tmpfs with the state bound on persistent/, the socket and the log.
    assert_eq!(
        read(&n.root(".statelite/persistent/var/lib/state/new")),
        "kept\n"
    );
    assert!(n.root(".statelite/control.sock").exists());
    let log = n.log();
    assert!(log.contains("created (first boot)"), "{log}");
    assert!(log.contains("statelite root ready"), "{log}");
    let status = n.control("status");
    assert_eq!(status["degraded"], false, "{status}");
    // Kernel log records: `<prio>statelite-mountd: message`.
    let kmsg = n.kmsg();
    assert!(
        kmsg.lines()
            .any(|l| l.starts_with("<6>statelite-mountd: ") && l.contains("root ready")),
        "{kmsg}"
    );
    assert!(kmsg.lines().all(|l| l.starts_with('<')), "{kmsg}");
    // Root storage daemon discipline.
    let pid = n.daemon_pid();
    let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(
        argv.first(),
        Some(&b'@'),
        "{:?}",
        String::from_utf8_lossy(&argv)
    );
    let oom = read(Path::new(&format!("/proc/{pid}/oom_score_adj")));
    // Lowering it needs CAP_SYS_RESOURCE, which some containers withhold: then a warning.
    assert!(
        oom.trim() == "-1000" || log.contains("oom_score_adj"),
        "oom_score_adj {oom}"
    );
    n.teardown();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            || fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty()),
        "the daemon outlived its root"
    );

    // Second boot: the state directory is reused, tmpfs content is reset.
    n.boot_ok(&format!("{LINE} STATELITE_MODE=fuse"));
    assert_eq!(read(&n.root("etc/motd")), "image motd\n");
    assert_eq!(read(&n.root("var/lib/state/new")), "kept\n");
    assert_eq!(read(&n.root("var/lib/state/db")), "node db\n");
    assert!(n.log().contains("n01 found"), "{}", n.log());
    n.teardown();
    // The exports were never written by the daemon.
    assert_eq!(read(&n.p("img/var/lib/state/db")), "initial db\n");
    assert_eq!(read(&n.p("img/etc/motd")), "image motd\n");
}

#[test]
fn symlink_boot() {
    if !is_root() {
        return;
    }
    let mut n = Node::new();
    let rules = statelite_fs::rules::RuleSet::for_image(
        &statelite_fs::rules::rows_from(ENTRIES).unwrap(),
        "compute",
    );
    statelite_tools::liteimg::liteimg(&n.p("img"), &rules, false).unwrap();
    n.standard();
    let err = n.boot_ok(&format!("{LINE} STATELITE_MODE=symlink"));
    assert!(err.is_empty() || !err.contains("ERROR"), "{err}");
    assert_eq!(read(&n.root("etc/motd")), "image motd\n");
    assert_eq!(read(&n.root("etc/hosts")), "tree1 hosts\n");
    fs::write(n.root("etc/motd"), "node motd\n").unwrap();
    erofs(&n.root("etc/hosts"));
    erofs(&n.root("etc/passwd"));
    fs::write(n.root("var/lib/state/db"), "node db\n").unwrap();
    assert_eq!(read(&n.p("state/n01/var/lib/state/db")), "node db\n");
    // rc.statelite's log and ours share the file.
    let log = n.log();
    assert!(log.contains("mount --bind"), "{log}");
    assert!(log.contains("symlink-mode root ready"), "{log}");
    // Nothing keeps running in symlink mode.
    assert!(!n.p("run/mountd.pid").exists());
    n.teardown();
    n.boot_ok(&format!("{LINE} STATELITE_MODE=symlink"));
    assert_eq!(read(&n.root("etc/motd")), "image motd\n");
    assert_eq!(read(&n.root("var/lib/state/db")), "node db\n");
    n.teardown();
}

#[test]
fn state_unavailable_is_degraded_and_read_only() {
    if !is_root() {
        return;
    }
    let mut n = Node::new();
    n.fake("srv:/img", "img");
    n.fake("srv:/trees", "trees");
    // srv:/state is mapped to a directory that does not exist: every try fails.
    n.fake("srv:/state", "nowhere");
    let err = n.boot_ok(LINE);
    assert!(err.contains("DEGRADED"), "{err}");
    assert!(err.contains("try 1/3"), "{err}");
    let status = n.control("status");
    assert_eq!(status["degraded"], true, "{status}");
    assert!(n.root(".statelite/degraded").exists());
    // Persistent paths: readable from the image, never silently volatile.
    assert_eq!(read(&n.root("var/lib/state/db")), "initial db\n");
    erofs(&n.root("var/lib/state/db"));
    // Volatile paths still work.
    fs::write(n.root("etc/motd"), "node motd\n").unwrap();
    assert!(n.log().contains("DEGRADED"));
    assert!(n.kmsg().contains("<3>statelite-mountd: "), "{}", n.kmsg());
    n.teardown();
}

#[test]
fn missing_litetree_source_falls_back() {
    if !is_root() {
        return;
    }
    let mut n = Node::new();
    fs::rename(n.p("trees/t1"), n.p("t1-away")).unwrap();
    n.standard();
    let err = n.boot_ok(LINE);
    assert!(err.contains("srv:/trees/t1"), "{err}");
    // tree1 is gone: tree2 serves its hosts.
    assert_eq!(read(&n.root("etc/hosts")), "tree2 hosts\n");
    assert!(n.log().contains("lower priorities serve"), "{}", n.log());
    n.teardown();
}

#[test]
fn slow_server_is_retried() {
    if !is_root() {
        return;
    }
    let mut n = Node::new();
    fs::rename(n.p("img"), n.p("img-later")).unwrap();
    n.standard();
    n.retry = [
        "--retries",
        "10",
        "--retry-initial-ms",
        "100",
        "--retry-max-ms",
        "400",
    ]
    .map(String::from)
    .to_vec();
    // The "server" exports the image only once the node has been turned away (its first
    // retry is in the kernel log), so the test does not depend on timing.
    let (from, to, kmsg) = (n.p("img-later"), n.p("img"), n.p("kmsg"));
    let t = std::thread::spawn(move || {
        for _ in 0..600 {
            if fs::read_to_string(&kmsg).is_ok_and(|k| k.contains("retrying in")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::rename(from, to).unwrap();
    });
    let err = n.boot_ok(LINE);
    t.join().unwrap();
    assert!(err.contains("the image srv:/img"), "{err}");
    assert!(err.contains("retrying in"), "{err}");
    assert_eq!(read(&n.root("etc/motd")), "image motd\n");
    n.teardown();
}

#[test]
fn unreachable_image_gives_up_clearly() {
    if !is_root() {
        return;
    }
    let mut n = Node::new();
    n.fake("srv:/img", "nowhere");
    let out = n.boot(LINE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("gave up on the image srv:/img after 3 tries"),
        "{err}"
    );
    assert!(mounted_below(n.dir.path()).is_empty());
    n.teardown();
}

#[test]
fn real_nfs_mount_without_kernel_client_fails_fast() {
    if !is_root() {
        return;
    }
    let fs_list = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs_list.contains("nfs4") {
        eprintln!("skipped: this kernel has an NFS client (the test wants ENODEV)");
        return;
    }
    let mut n = Node::new();
    let out = n.boot("NFSROOT=127.0.0.1:/img NODE=n01 MNTOPTS=port=20490");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Not retried: waiting does not give the kernel an NFS client.
    assert!(
        err.contains("after 1 tries") && err.contains("no NFS client"),
        "{err}"
    );
    n.teardown();
}

#[test]
fn malformed_command_lines_are_clear_errors() {
    if !is_root() {
        return;
    }
    for (line, want) in [
        ("NFSROOT=srv/img", "NFSROOT"),
        ("NFSROOT=srv:/img STATELITE_MODE=overlay", "STATELITE_MODE"),
        ("NFSROOT=srv:/img NODE=a/b", "NODE"),
        ("root=nfs:[fd00::1:/img", "root"),
        ("quiet", "no image"),
        ("NFSROOT=srv:/img STATEMNT=srv:/state", "needs NODE"),
    ] {
        let mut n = Node::new();
        n.standard();
        let out = n.boot(line);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}");
        assert!(err.contains(want), "{line}: {err}");
        assert!(mounted_below(n.dir.path()).is_empty(), "{line}");
        n.teardown();
    }
    // The query service answers a node about itself: without NODE= there is nothing to ask.
    let mut n = Node::new();
    let out = Command::new(bin("statelite-mountd"))
        .args(["boot", "--sysroot"])
        .arg(n.p("sysroot"))
        .arg("--run-dir")
        .arg(n.p("run"))
        .args([
            "--kmsg",
            "none",
            "--cmdline",
            "NFSROOT=srv:/img XCAT=10.0.0.1:3001",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs NODE="), "{err}");
    n.booted = true;
    n.teardown();
}

#[test]
fn cmdline_subcommand_prints_typed_params() {
    let out = Command::new(bin("statelite-mountd"))
        .args([
            "cmdline",
            "--cmdline",
            "root=nfs:[fd00::1]:/img:ro,vers=4.1 STATEMNT= NODE=n01 shell statelite.debug",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"]["server"], "[fd00::1]");
    assert_eq!(v["image"]["options"], "ro,vers=4.1");
    assert_eq!(v["statemnt"], "");
    assert_eq!(v["node"], "n01");
    assert_eq!(v["shell"], true);
    assert_eq!(v["debug"], true);
    let out = Command::new(bin("statelite-mountd"))
        .args(["cmdline", "--cmdline", "XCAT=host"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("XCAT"));
}

/// `mountd/build-static.sh` gives a static binary (no ld.so after switch_root). A release
/// build of its own (minutes): run with `cargo test --test boot -- --ignored`.
#[test]
#[ignore]
fn static_build_is_static() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../mountd/build-static.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().next().unwrap().trim();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let text =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(!text.contains("=>"), "dynamically linked: {text}");
    let run = Command::new(&bin)
        .args(["cmdline", "--cmdline", "NODE=n01 NFSROOT=10.0.0.1:/img"])
        .output()
        .unwrap();
    assert!(run.status.success());
}

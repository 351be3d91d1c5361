//! `litectl` against a live mount: every command, as tables and as `--json`, and its error
//! exits. Runs the real `litectl` binary. Needs root and /dev/fuse.

mod fuse_common;

use std::fs;
use std::process::{Command, Output};

use fuse_common::{Fixture, bin, write};
use serde_json::Value;

const RULES: &str = r#""ALL","/etc/ntp.conf",,,
"ALL","/var/log/",,,
"ALL","/tmp/","tmpfs",,
"ALL","/etc/motd","ro",,
"ALL","/etc/hosts","con",,
"ALL","/etc/license","persistent",,
"#;

fn mounted() -> Fixture {
    let mut fx = Fixture::new(RULES);
    let i = |p: &str, c: &str| write(&fx.p(&format!("img/{p}")), c);
    i("etc/ntp.conf", "server pool.ntp.org\n");
    i("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    i("etc/motd", "image motd\n");
    i("etc/hosts", "127.0.0.1 localhost\n");
    i("etc/license", "image license\n");
    i("var/log/messages", "boot\n");
    i("tmp/.keep", "");
    write(&fx.p("tree1/etc/motd"), "tree1 motd\n");
    fx.mount();
    fx
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn litectl(fx: &Fixture, args: &[&str]) -> Run {
    litectl_at(&fx.sock().to_string_lossy(), args)
}

fn litectl_at(socket: &str, args: &[&str]) -> Run {
    let out: Output = Command::new(bin("litectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running litectl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; returns stdout.
fn ok(fx: &Fixture, args: &[&str]) -> String {
    let r = litectl(fx, args);
    assert_eq!(
        r.code,
        Some(0),
        "litectl {args:?}: {}{}",
        r.stdout,
        r.stderr
    );
    r.stdout
}

fn json(fx: &Fixture, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ok(fx, &a);
    assert_eq!(out.lines().count(), 1, "--json prints one line: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The value after `label:` in key/value output.
fn kv<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .trim()
}

#[test]
fn status_which_layers_stats() {
    let fx = mounted();

    let out = ok(&fx, &["status"]);
    assert_eq!(kv(&out, "mode"), "fuse");
    assert_eq!(kv(&out, "litefile rules"), "6");
    assert_eq!(kv(&out, "degraded"), "no");
    assert_eq!(
        kv(&out, "persistent store"),
        fx.p("state").to_string_lossy()
    );
    let v = json(&fx, &["status"]);
    assert_eq!(v["mode"], "fuse");
    assert_eq!(v["degraded"], false);

    let out = ok(&fx, &["which", "/etc/motd"]);
    assert_eq!(kv(&out, "served from"), "litetree[1]");
    assert_eq!(kv(&out, "rule"), "\"/etc/motd\" ro, litefile line 5");
    assert_eq!(kv(&out, "copied up"), "no");
    let out = ok(&fx, &["which", "/etc/passwd"]);
    assert_eq!(kv(&out, "served from"), "image");
    assert!(kv(&out, "rule").starts_with("none"), "{out}");
    fs::write(fx.m("/etc/ntp.conf"), "server 10.0.0.1\n").unwrap();
    let out = ok(&fx, &["which", "/etc/ntp.conf"]);
    assert_eq!(kv(&out, "served from"), "volatile");
    assert_eq!(kv(&out, "copied up"), "yes");
    assert!(kv(&out, "rule").contains("tmpfs (blank options)"), "{out}");
    let v = json(&fx, &["which", "/etc/motd"]);
    assert_eq!(v["served_from"]["layer"], "tree");
    assert_eq!(v["rule"]["options_text"], "ro");

    let out = ok(&fx, &["layers"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "LAYER        ACCESS  PATH", "{out}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("image")[1], "ro");
    assert_eq!(
        row("litetree[1]"),
        ["litetree[1]", "ro", &*fx.p("tree1").to_string_lossy()]
    );
    assert_eq!(row("litetree[2]")[1], "ro");
    assert_eq!(row("volatile")[1], "rw");
    assert_eq!(row("persistent")[1], "rw");
    assert_eq!(row("localdisk")[1], "rw");
    let v = json(&fx, &["layers"]);
    assert_eq!(v["layers"][0]["layer"], "image");

    let out = ok(&fx, &["stats"]);
    let header = out.lines().next().unwrap_or("");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["OP", "COUNT", "ERRORS", "MEAN", "µs"],
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("lookup ")), "{out}");
    assert!(kv(&out, "copy-ups").parse::<u64>().unwrap() >= 1, "{out}");
    kv(&out, "passthrough opens");
    kv(&out, "passthrough opens on a kept backing");
    kv(&out, "negative entries cached");
    let v = json(&fx, &["stats"]);
    assert!(v["ops"].as_array().is_some_and(|a| !a.is_empty()), "{v}");
    assert!(v["copy_ups"].as_u64().unwrap() >= 1);
}

#[test]
fn diff_and_denied() {
    let fx = mounted();
    assert_eq!(
        ok(&fx, &["diff"]),
        "no changes: this node's root matches the image\n"
    );
    assert!(ok(&fx, &["denied"]).starts_with("no writes denied"));

    fs::write(fx.m("/etc/license"), "node license\n").unwrap();
    fs::write(fx.m("/tmp/new"), "x\n").unwrap();
    fs::remove_file(fx.m("/var/log/messages")).unwrap();
    // EROFS at open(2), or at the first write in no-open mode.
    let e = fs::OpenOptions::new()
        .append(true)
        .open(fx.m("/etc/passwd"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert_eq!(
        fs::create_dir(fx.m("/opt")).unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );

    // git-status style, one column of paths, the store in parentheses.
    assert_eq!(
        ok(&fx, &["diff"]),
        "M /etc/license       (persistent)\n\
         A /tmp/new           (volatile)\n\
         D /var/log/messages  (volatile)\n"
    );
    let v = json(&fx, &["diff"]);
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{v}");
    assert!(
        changes
            .iter()
            .any(|c| c["path"] == "/tmp/new" && c["change"] == "added")
    );

    let out = ok(&fx, &["denied"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["COUNT", "OP", "PATH"], "{out}");
    assert!(lines.contains(&vec!["1", "mkdir", "/opt"]), "{out}");
    assert!(
        lines.iter().any(|l| l.last() == Some(&"/etc/passwd")),
        "{out}"
    );
    // Rows to paste into the litefile: a directory gets its trailing slash.
    assert!(
        out.contains("\n#image,file,options,comments,disable\n"),
        "{out}"
    );
    assert!(
        out.contains("\n\"ALL\",\"/etc/passwd\",\"tmpfs\",,\n"),
        "{out}"
    );
    assert!(out.contains("\n\"ALL\",\"/opt/\",\"tmpfs\",,\n"), "{out}");
    let v = json(&fx, &["denied"]);
    assert!(
        v["denied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["suggested_litefile_row"] == "\"ALL\",\"/opt/\",\"tmpfs\",,"),
        "{v}"
    );
}

#[test]
fn reload_applies_an_edited_litefile_and_refuses_a_broken_one() {
    let fx = mounted();
    assert_eq!(
        fs::write(fx.m("/etc/passwd"), "x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    let edited = format!(
        "#image,file,options,comments,disable\n{RULES}\"ALL\",\"/etc/passwd\",\"tmpfs\",,\n"
    );
    fs::write(fx.p("litefile.csv"), edited).unwrap();
    let out = ok(&fx, &["reload"]);
    assert!(
        out.starts_with("rules reloaded: 7 litefile rules in force"),
        "{out}"
    );
    fs::write(fx.m("/etc/passwd"), "root:x:0:0::/root:/bin/bash\n").unwrap();
    assert_eq!(
        kv(&ok(&fx, &["which", "/etc/passwd"]), "served from"),
        "volatile"
    );

    // A litefile with an unknown option: refused, old rules kept, exit 1 with the reason.
    let broken =
        format!("#image,file,options,comments,disable\n{RULES}\"ALL\",\"/x\",\"bogus\",,\n");
    fs::write(fx.p("litefile.csv"), broken).unwrap();
    let r = litectl(&fx, &["reload"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr
            .starts_with("litectl: statelite-mountd: reload refused"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("bogus"), "{}", r.stderr);
    assert_eq!(kv(&ok(&fx, &["status"]), "litefile rules"), "7");
    // --json: the server's answer on stdout for scripts, still exit 1.
    let r = litectl(&fx, &["--json", "reload"]);
    assert_eq!(r.code, Some(1));
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("reload refused")),
        "{v}"
    );
}

#[test]
fn log_shows_the_daemon_log() {
    let mut fx = Fixture::new(RULES);
    // The fixture's daemon logs at warn level; give the log something to hold.
    fs::write(fx.p("daemon.log"), "").unwrap();
    fx.mount();
    let log = fs::read_to_string(fx.p("daemon.log")).unwrap();
    let out = ok(&fx, &["log", "-n", "3"]);
    let want: Vec<&str> = log.lines().collect();
    let want = &want[want.len().saturating_sub(3)..];
    if want.is_empty() {
        assert!(out.starts_with("no lines in "), "{out}");
    } else {
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
    }
    let v = json(&fx, &["log", "--lines", "3"]);
    assert!(v["lines"].is_array(), "{v}");
}

#[test]
fn errors_exit_nonzero_with_a_clear_message() {
    // No daemon at all.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("control.sock");
    let r = litectl_at(&missing.to_string_lossy(), &["status"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        format!(
            "litectl: is statelite-mountd running? no control socket at {}\n",
            missing.display()
        )
    );
    // A socket file left by a daemon that exited.
    drop(std::os::unix::net::UnixListener::bind(&missing).unwrap());
    let r = litectl_at(&missing.to_string_lossy(), &["status"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("refuses connections"), "{}", r.stderr);

    let fx = mounted();
    // The server's error, on stderr, exit 1.
    let r = litectl(&fx, &["which", "/no/such/file"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("litectl: statelite-mountd: /no/such/file: No such file"),
        "{}",
        r.stderr
    );
    // A relative path is a usage error (2), like clap's own.
    let r = litectl(&fx, &["which", "etc/motd"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("not absolute"), "{}", r.stderr);
    let r = litectl(&fx, &["frobnicate"]);
    assert_eq!(r.code, Some(2));
}

/// A node remounted at once: the new daemon binds the control socket while the old one is
/// still exiting. The old one must not remove the new one's socket on its way out.
#[test]
fn an_exiting_daemon_leaves_a_newer_daemons_control_socket_alone() {
    let mut old = mounted();
    let old_pid = old.control(r#"{"cmd":"status"}"#)["pid"].as_u64().unwrap();
    // A second root served on the same control socket path (what a quick remount does).
    let second = tempfile::tempdir().unwrap();
    fs::create_dir_all(second.path().join("mnt")).unwrap();
    fs::create_dir_all(second.path().join("vol")).unwrap();
    let out = mount_root(
        &old,
        &second.path().join("vol"),
        &old.sock(),
        &second.path().join("mnt"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_pid = old.control(r#"{"cmd":"status"}"#)["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid);
    // The first daemon goes away and runs its exit path.
    old.umount();
    wait_exit(old_pid);
    assert!(
        old.sock().exists(),
        "the old daemon removed the new daemon's control socket"
    );
    assert_eq!(
        old.control(r#"{"cmd":"status"}"#)["pid"].as_u64(),
        Some(new_pid)
    );
    fuse_common::umount(&second.path().join("mnt"));
}

/// The same race on the mount point: the old daemon, stopped while its root is unmounted
/// and a new daemon mounts the same path, must not unmount the new root when it ends.
#[test]
fn an_exiting_daemon_leaves_a_new_mount_on_its_path_alone() {
    use nix::unistd::Pid;
    let old = mounted();
    let old_pid = old.control(r#"{"cmd":"status"}"#)["pid"].as_u64().unwrap();
    let stopped = fuse_common::Stopped::new(Pid::from_raw(old_pid as i32));
    // The kernel unmounts without the (stopped) daemon (umount(8) would stat the path
    // first and wait for it).
    nix::mount::umount2(&old.p("mnt"), nix::mount::MntFlags::empty()).unwrap();
    // A new daemon on the same mount point.
    let ctl2 = old.p("control2.sock");
    let out = mount_root(&old, &old.p("vol"), &ctl2, &old.p("mnt"));
    drop(stopped);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_exit(old_pid);
    assert_eq!(
        fs::read_to_string(old.m("etc/passwd")).ok().as_deref(),
        Some("root:x:0:0::/root:/bin/sh\n"),
        "the new root is still mounted and served"
    );
    fuse_common::umount(&old.p("mnt"));
}

/// Serves the fixture's image and litefile with another volatile store, control socket and
/// mount point.
fn mount_root(
    fx: &Fixture,
    volatile: &std::path::Path,
    control: &std::path::Path,
    mountpoint: &std::path::Path,
) -> Output {
    Command::new(bin("statelite-mountd"))
        .arg("mount")
        .arg("--image")
        .arg(fx.p("img"))
        .arg("--litefile")
        .arg(fx.p("litefile.csv"))
        .arg("--volatile")
        .arg(volatile)
        .arg("--control")
        .arg(control)
        .arg(mountpoint)
        .env("STATELITE_LOG", "warn")
        .output()
        .unwrap()
}

fn wait_exit(pid: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon {pid} did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

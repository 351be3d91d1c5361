//! Hostile paths and values, and store faults, against a real mount: correct errors, never
//! an escape from a layer, never a daemon crash, nothing already stored corrupted.

mod fuse_common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use fuse_common::{Fixture, snapshot, write};

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn alive(fx: &Fixture) {
    let st = fx.control(r#"{"cmd":"status"}"#);
    assert_eq!(st["mode"], "fuse", "daemon no longer answering: {st}");
}

const RULES: &str = "\"ALL\",\"/tmp/\",\"tmpfs\",,\n\"ALL\",\"/var/lib/\",\"persistent\",,\n\"ALL\",\"/etc/ssh/\",\"tmpfs\",,\n";

#[test]
fn odd_names_long_names_and_deep_paths() {
    let mut fx = Fixture::new(RULES);
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    fx.mount();
    let tmp = fx.m("tmp");
    let odd: &[&[u8]] = &[
        b"new\nline",
        b"tab\there",
        b"\xff\xfe not utf-8",
        b" leading space",
        b"-dash",
        b"\"quote'",
    ];
    for name in odd {
        let p = tmp.join(OsStr::from_bytes(name));
        fs::write(&p, name).unwrap();
        assert_eq!(fs::read(&p).unwrap(), *name);
    }
    let listed: Vec<Vec<u8>> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    for name in odd {
        assert!(listed.iter().any(|l| l == name), "{name:?} not listed");
    }
    let long = "n".repeat(255);
    fs::write(tmp.join(&long), "x").unwrap();
    assert_eq!(fs::read_to_string(tmp.join(&long)).unwrap(), "x");
    assert_eq!(
        errno_of(fs::write(tmp.join("n".repeat(256)), "x")),
        libc::ENAMETOOLONG
    );
    // A path as long as PATH_MAX allows, built with relative steps (as tools like rm -r do).
    let (ok, out) = fx.sh(
        "cd tmp && n=$(printf 'd%.0s' $(seq 1 200)) && i=0 && while [ $i -lt 19 ]; do mkdir $n && cd $n || exit 1; i=$((i+1)); done \
         && echo deep > f && cat f && pwd | wc -c",
    );
    assert!(ok && out.starts_with("deep\n"), "{out}");
    let (ok, out) = fx.sh("rm -rf tmp/d* && ls tmp | wc -l");
    assert!(ok, "{out}");
    let diff = fx.control(r#"{"cmd":"diff"}"#);
    assert!(
        diff["changes"].as_array().unwrap().len() >= odd.len(),
        "{diff}"
    );
    alive(&fx);
}

#[test]
fn symlinks_in_layers_never_lead_outside() {
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/etc/ssh/sshd_config"), "image sshd\n");
    write(&fx.p("img/var/lib/db"), "image db\n");
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    std::os::unix::fs::symlink("loop-b", fx.p("img/tmp/loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", fx.p("img/tmp/loop-b")).unwrap();
    // A litetree source whose /etc is a link to the host's /etc: not followed.
    std::os::unix::fs::symlink("/etc", fx.p("tree1/etc")).unwrap();
    // A tampered state directory: /var in the store is a link to the host's root.
    std::os::unix::fs::symlink("/", fx.p("state/var")).unwrap();
    let host_before = fs::read_dir("/").unwrap().count();
    fx.mount();
    assert_eq!(
        fs::read_to_string(fx.m("etc/ssh/sshd_config")).unwrap(),
        "image sshd\n"
    );
    assert_eq!(errno_of(fs::read(fx.m("tmp/loop-a"))), libc::ELOOP);
    assert_eq!(
        fs::read_link(fx.m("tmp/loop-a")).unwrap().as_os_str(),
        "loop-b"
    );
    // Reads of the persistent area do not go through the planted link...
    assert_eq!(
        fs::read_to_string(fx.m("var/lib/db")).unwrap(),
        "image db\n"
    );
    // ...and neither do writes: they fail instead of landing in the host's /lib.
    let r = fs::write(fx.m("var/lib/db"), "x");
    assert!(
        r.is_err(),
        "a write through a planted store symlink must fail"
    );
    assert!(!std::path::Path::new("/lib/db").exists());
    assert_eq!(fs::read_dir("/").unwrap().count(), host_before);
    alive(&fx);
}

#[test]
fn objects_changing_type_under_us() {
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/usr/share/thing"), "a file\n");
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    fx.mount();
    assert_eq!(
        fs::read_to_string(fx.m("usr/share/thing")).unwrap(),
        "a file\n"
    );
    // The admin replaces the file with a directory in the image, without telling anyone.
    fs::remove_file(fx.p("img/usr/share/thing")).unwrap();
    fs::create_dir(fx.p("img/usr/share/thing")).unwrap();
    write(&fx.p("img/usr/share/thing/inside"), "inside\n");
    // Whatever the kernel still caches, the answers are errors or consistent data, and the
    // daemon keeps serving.
    for _ in 0..3 {
        let _ = fs::read(fx.m("usr/share/thing"));
        let _ = fs::read_dir(fx.m("usr/share/thing"));
        let _ = fs::metadata(fx.m("usr/share/thing/inside"));
    }
    alive(&fx);
    // After the generation bump the new shape is served.
    write(&fx.p("img/.statelite/generation"), "7\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if fs::read_to_string(fx.m("usr/share/thing/inside"))
            .ok()
            .as_deref()
            == Some("inside\n")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new directory never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    alive(&fx);
}

/// Mounts a small tmpfs (or a read-only one) as the persistent store.
struct SmallStore(std::path::PathBuf);
impl Drop for SmallStore {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_persistent_store_gives_enospc_and_keeps_what_was_stored() {
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/var/lib/keep"), "image\n");
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "statelite-test-small"])
        .arg(fx.p("state"))
        .status()
        .unwrap();
    assert!(st.success());
    let _guard = SmallStore(fx.p("state"));
    fx.mount();
    fs::write(fx.m("var/lib/keep"), "stored before the disk filled\n").unwrap();
    let big = vec![b'x'; 2 << 20];
    let e = errno_of(fs::write(fx.m("var/lib/big"), &big));
    assert_eq!(e, libc::ENOSPC, "the writer gets ENOSPC");
    // A copy-up that cannot fit fails cleanly too, and leaves no temporary behind.
    let e = errno_of(
        fs::OpenOptions::new()
            .append(true)
            .open(fx.m("var/lib/keep"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &big)),
    );
    assert_eq!(e, libc::ENOSPC);
    let _ = fs::remove_file(fx.m("var/lib/big"));
    assert!(
        fs::read_to_string(fx.m("var/lib/keep"))
            .unwrap()
            .starts_with("stored before the disk filled\n")
    );
    let leftovers: Vec<_> = fs::read_dir(fx.p("state/var/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".statelite-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    alive(&fx);
    fx.umount();
}

#[test]
fn read_only_persistent_store_gives_erofs_and_keeps_what_was_stored() {
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/var/lib/keep"), "image\n");
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "statelite-test-ro"])
        .arg(fx.p("state"))
        .status()
        .unwrap();
    assert!(st.success());
    let _guard = SmallStore(fx.p("state"));
    fx.mount();
    fs::write(fx.m("var/lib/keep"), "node data\n").unwrap();
    let before = snapshot(&fx.p("state"));
    // FUSE sends RELEASE after close(2) returns, asynchronously: until it reaches the daemon,
    // the daemon still holds the file open for writing and the kernel refuses a read-only
    // remount ("busy"). So the remount is retried until the release has landed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(fx.p("state"))
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store stayed busy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(errno_of(fs::write(fx.m("var/lib/keep"), "x")), libc::EROFS);
    assert_eq!(errno_of(fs::write(fx.m("var/lib/new"), "x")), libc::EROFS);
    assert_eq!(
        fs::read_to_string(fx.m("var/lib/keep")).unwrap(),
        "node data\n"
    );
    assert_eq!(snapshot(&fx.p("state")), before);
    fs::write(fx.m("tmp/still-fine"), "x").unwrap();
    alive(&fx);
    fx.umount();
}

#[test]
fn a_users_zero_device_is_not_a_whiteout_and_internal_marks_stay_internal() {
    let mut fx = Fixture::new(RULES);
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    write(&fx.p("img/tmp/in-image"), "x");
    fx.mount();
    let (ok, out) = fx.sh("umask 0 && mknod tmp/c00 c 0 0 && mkdir tmp/d && touch tmp/f && ls tmp && stat -c '%a %n' tmp/d tmp/f");
    assert!(ok, "{out}");
    assert!(
        out.contains("c00\n") && out.contains("777 tmp/d") && out.contains("666 tmp/f"),
        "{out}"
    );
    let (ok, out) = fx.sh("getfattr -d -m - tmp/c00; setfattr -x trusted.statelite.device tmp/c00");
    assert!(
        !ok && !out.contains("trusted.statelite") && out.contains("not permitted"),
        "{out}"
    );
    let (ok, out) = fx.sh("rm tmp/c00 tmp/in-image && ls -A tmp");
    assert!(
        ok && !out.contains("c00") && !out.contains("in-image"),
        "{out}"
    );
    alive(&fx);
}

#[test]
fn a_refused_truncating_open_of_a_running_program_changes_nothing() {
    let mut fx = Fixture::new(RULES);
    fs::create_dir_all(fx.p("img/tmp")).unwrap();
    fs::create_dir_all(fx.p("img/var/lib")).unwrap();
    fx.mount();
    for area in ["tmp", "var/lib"] {
        let exe = fx.m(&format!("{area}/sleep-copy"));
        fs::copy("/bin/sleep", &exe).unwrap();
        let size = fs::metadata(&exe).unwrap().len();
        let mut child = Command::new(&exe).arg("10").spawn().unwrap();
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            let r = std::fs::OpenOptions::new()
                .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
                .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
                .custom_flags(flags & libc::O_TRUNC)
                .open(&exe);
            assert_eq!(errno_of(r), libc::ETXTBSY, "{area}: flags {flags:#o}");
            assert_eq!(
                fs::metadata(&exe).unwrap().len(),
                size,
                "{area}: a refused open truncated the file"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

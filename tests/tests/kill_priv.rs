//! Set-user-ID, set-group-ID and file capabilities under writes, and what the daemon does
//! so that writes need no round trip (FUSE_HANDLE_KILLPRIV_V2, the remembered absence of
//! `security.capability`), plus the mount's readahead window. Real mounts, real syscalls;
//! the unprivileged caller is `setpriv` to nobody.

mod fuse_common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use fuse_common::{Fixture, append, write};

const RULES: &str = r#""ALL","/tmp/","tmpfs,rw",,
"ALL","/var/lib/db/","persistent",,
"ALL","/usr/bin/","tmpfs",,
"#;

fn mounted(no_open: bool) -> Fixture {
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/tmp/.keep"), "");
    write(&fx.p("img/var/lib/db/.keep"), "");
    write(&fx.p("img/usr/bin/tool"), "#!/bin/sh\n");
    if no_open {
        fx.extra_args.push("--no-open".into());
    }
    fx.mount();
    fs::set_permissions(fx.m("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(fx.m("var/lib/db"), fs::Permissions::from_mode(0o1777)).unwrap();
    fx
}

/// Runs `script` with `sh` as uid/gid 65534 (no supplementary groups).
fn as_nobody(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Each case: a file made by root with `mode`, then `how` as nobody; the mode expected
/// afterwards, as the kernel reports it (its cached attributes) and in the store.
fn check_kills(no_open: bool, dir: &str, store_dir: &str) {
    let fx = mounted(no_open);
    let cases: &[(&str, u32, &str, u32)] = &[
        ("append", 0o6777, "echo more >> {}", 0o0777),
        (
            "overwrite",
            0o4777,
            "printf x | dd of={} conv=notrunc 2>/dev/null",
            0o0777,
        ),
        ("truncate", 0o6777, "truncate -s 1 {}", 0o0777),
        // Without group execute, set-group-ID means mandatory locking: a write keeps it.
        ("lockbit", 0o2666, "echo more >> {}", 0o2666),
        ("plain", 0o0666, "echo more >> {}", 0o0666),
    ];
    for (name, before, how, after) in cases {
        let p = fx.m(&format!("{dir}/{name}"));
        fs::write(&p, "data\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*before)).unwrap();
        // The kernel has the mode cached now (a stat after the chmod).
        assert_eq!(mode(&p), *before, "{name}");
        as_nobody(&how.replace("{}", &p.display().to_string()));
        assert_eq!(
            mode(&p),
            *after,
            "{name} ({}): the mode the kernel reports",
            if no_open { "no-open" } else { "default" }
        );
        let stored = fx.p(&format!("{store_dir}/{dir}/{name}"));
        assert_eq!(mode(&stored), *after, "{name}: the mode in the store");
    }
    // Root (CAP_FSETID) keeps the bits, as on any Linux filesystem.
    let p = fx.m(&format!("{dir}/rootwrite"));
    fs::write(&p, "data\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o6755)).unwrap();
    append(&p, "root\n");
    assert_eq!(mode(&p), 0o6755, "a write by root keeps set-user-ID");
    // The bits are gone for good: a fresh mount reads them from the store.
    let mut fx = fx;
    fx.umount();
    fx.mount();
    assert_eq!(
        mode(&fx.m(&format!("{dir}/append"))),
        0o0777,
        "after a remount"
    );
}

#[test]
fn an_unprivileged_write_or_truncate_clears_setuid_and_setgid_tmpfs() {
    check_kills(false, "tmp", "vol");
}

#[test]
fn an_unprivileged_write_or_truncate_clears_setuid_and_setgid_persistent() {
    check_kills(false, "var/lib/db", "state");
}

#[test]
fn an_unprivileged_write_or_truncate_clears_setuid_and_setgid_no_open() {
    check_kills(true, "tmp", "vol");
    check_kills(true, "var/lib/db", "state");
}

fn getcap(p: &std::path::Path) -> String {
    let out = Command::new("getcap").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn file_capabilities_are_seen_set_and_cleared_by_an_unprivileged_write() {
    for no_open in [false, true] {
        let fx = mounted(no_open);
        let p = fx.m("tmp/capped");
        fs::write(&p, "data\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        // Ask first, so the daemon has seen (and remembered) that there is none.
        assert_eq!(getcap(&p), "", "none yet");
        let st = Command::new("setcap")
            .args(["cap_net_raw+ep"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            getcap(&p).contains("cap_net_raw"),
            "a capability set through the mount is seen at once: {}",
            getcap(&p)
        );
        as_nobody(&format!("echo more >> {}", p.display()));
        assert_eq!(getcap(&p), "", "an unprivileged write removes it");
        assert_eq!(getcap(&fx.p("vol/tmp/capped")), "", "in the store too");
    }
}

#[test]
fn small_writes_make_no_request_each() {
    let fx = mounted(false);
    let before = fx.op_count("getxattr") + fx.op_count("setattr");
    let mut f = fs::File::create(fx.m("tmp/log")).unwrap();
    for _ in 0..2000 {
        f.write_all(&[b'x'; 512]).unwrap();
    }
    drop(f);
    let after = fx.op_count("getxattr") + fx.op_count("setattr");
    assert!(
        after - before < 10,
        "2,000 writes cost {} GETXATTR/SETATTR requests (the kernel's kill-priv check \
         must be remembered, not repeated per write)",
        after - before
    );
    assert_eq!(fs::metadata(fx.m("tmp/log")).unwrap().len(), 2000 * 512);
}

#[test]
fn the_mount_gets_a_wide_readahead_window() {
    let fx = mounted(false);
    let st = fs::metadata(fx.m("")).unwrap();
    let dev = st.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    // Set right after the session starts; give it a moment on a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let kb = fs::read_to_string(&knob).unwrap();
        if kb.trim() == "4096" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{knob}: {} (want 4096)",
            kb.trim()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `getfattr -n NAME` of `p`: the value, or `None` when the attribute is absent.
fn getfattr(p: &std::path::Path, name: &str) -> Option<String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-h", "-n", name])
        .arg(p)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn remembered_absent_xattrs_show_once_set_or_after_an_image_update() {
    let fx = mounted(false);
    let p = fx.m("tmp/labelled");
    fs::write(&p, "data\n").unwrap();
    let label = "system_u:object_r:etc_t:s0";
    for _ in 0..2 {
        assert_eq!(getfattr(&p, "security.selinux"), None, "absent");
    }
    let st = Command::new("setfattr")
        .args(["-n", "security.selinux", "-v", label])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        getfattr(&p, "security.selinux").as_deref(),
        Some(label),
        "set through the mount: seen at once"
    );
    let st = Command::new("setfattr")
        .args(["-x", "security.selinux"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(getfattr(&p, "security.selinux"), None, "removed");

    // An image file: its absence is remembered, then the image changes on the server and
    // `imgupdate` announces it.
    let img = fx.m("usr/bin/tool");
    assert_eq!(getfattr(&img, "security.selinux"), None);
    let st = Command::new("setfattr")
        .args(["-n", "security.selinux", "-v", label])
        .arg(fx.p("img/usr/bin/tool"))
        .status()
        .unwrap();
    assert!(st.success());
    fx.imgupdate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while getfattr(&img, "security.selinux").as_deref() != Some(label) {
        assert!(
            std::time::Instant::now() < deadline,
            "the image's new label never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

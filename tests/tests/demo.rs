//! `statelite demo`, run for real: exit 0, every step shown, nothing left behind.
//! Needs root and /dev/fuse.

mod fuse_common;

use std::path::PathBuf;
use std::process::{Command, Output};

use fuse_common::bin;

fn run_demo(args: &[&str]) -> (Output, String) {
    let out = Command::new(bin("statelite"))
        .arg("demo")
        .args(args)
        .output()
        .expect("running statelite demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// The demo prints its temporary directory as `workspace: DIR`.
fn workspace(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("workspace: "))
        .unwrap_or_else(|| panic!("no workspace line in:\n{stdout}"));
    PathBuf::from(line.trim())
}

fn mounted_under(dir: &std::path::Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let prefix = dir.to_string_lossy().into_owned();
    mounts
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|mp| mp.starts_with(&prefix))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_walks_through_every_step_and_cleans_up() {
    let (out, stdout) = run_demo(&[]);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "[1/9] Mount the node's root (FUSE mode)",
        // (a) tmpfs write: first from the image, then copied up into the volatile store
        "-> /var/log/messages served by: the image (read-only)",
        "-> /var/log/messages served by: volatile store",
        // (b) sed -i through the real sed, image untouched
        "$ sed -i 's/^server .*/server 10.0.0.1 iburst/' /etc/ntp.conf",
        "server 10.0.0.1 iburst",
        "server 0.rhel.pool.ntp.org iburst",
        // (c) persistent across a remount, tmpfs reset
        "-> /etc/license served by: persistent store",
        "LICENSE_KEY=n01-7f3a-22c9",
        "cat: /tmp/hello.txt: No such file or directory",
        // (d) con
        "10.0.0.1    mgmt.cluster mgmt",
        "-> /etc/hosts served by: volatile store (tmpfs); rule: \"/etc/hosts\" (con)",
        // (e) ro from the litetree
        "-> /etc/motd served by: litetree[1]",
        // (f) EROFS and the suggested row
        "Read-only file system (EROFS)",
        "\"ALL\",\"/etc/passwd\",\"tmpfs\",,",
        // (g) diff
        "M /etc/license",
        "A /tmp/new",
        "D /var/log/messages",
        "[9/9] Unmount and clean up",
        "removed /tmp/",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    let dir = workspace(&stdout);
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(
        mounted_under(&dir).is_empty(),
        "left mounted: {:?}",
        mounted_under(&dir)
    );
}

#[test]
fn demo_keep_keeps_the_files_but_not_the_mount() {
    let (out, stdout) = run_demo(&["--keep"]);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = workspace(&stdout);
    let kept = dir.join("state/n01/etc/license");
    let license = std::fs::read_to_string(&kept);
    let mounts = mounted_under(&dir);
    // Clean up before asserting, so a failure does not leave the directory behind.
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stdout.contains("(--keep)"), "{stdout}");
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    assert_eq!(
        license.expect("the persistent store was kept"),
        "LICENSE_KEY=n01-7f3a-22c9\n"
    );
}

#[test]
fn demo_without_mountd_says_how_to_build_it() {
    // A statelite binary alone in a directory: the daemon is looked for next to it.
    let dir = tempfile::tempdir().expect("tempdir");
    let lone = dir.path().join("statelite");
    std::fs::copy(bin("statelite"), &lone).expect("copy statelite");
    let out = Command::new(&lone)
        .arg("demo")
        .output()
        .expect("running the copied statelite");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("statelite-mountd not found"), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");
}

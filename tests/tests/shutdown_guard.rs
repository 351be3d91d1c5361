//! systemd-shutdown stops every process, the root's daemon included, for a moment in each
//! killing round, and looks things up on the root meanwhile. These tests stop the real
//! daemon with SIGSTOP and make those lookups: answered from the kernel's caches they
//! return; anything that reaches the stopped daemon would hang (as the node's poweroff did
//! after an image update, before the guard).

mod fuse_common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fuse_common::{Fixture, write};
use nix::unistd::Pid;
use statelite_mountd::shutdown_guard;

fn mounted() -> Fixture {
    let mut fx = Fixture::new("ALL,/etc/motd,tmpfs,,\nALL,/var/log/,persistent,,\n");
    write(&fx.p("img/etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    write(&fx.p("img/etc/motd"), "image motd\n");
    std::fs::create_dir_all(fx.p("img/var/log")).unwrap();
    fx.mount();
    fx
}

fn daemon_pid(fx: &Fixture) -> Pid {
    let st = fx.control(r#"{"cmd":"status"}"#);
    Pid::from_raw(st["pid"].as_i64().expect("status has the daemon's pid") as i32)
}

/// With the daemon stopped, does what systemd-shutdown does on the root (`access` of
/// `etc/initrd-release`, `stat` of the root) return within `wait`? The daemon is continued
/// either way, which also frees a lookup that was stuck on it.
fn answers_while_stopped(root: &Path, pid: Pid, wait: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    let root: PathBuf = root.to_path_buf();
    let stopped = fuse_common::Stopped::new(pid);
    // Let the stop take effect on every thread before looking anything up.
    std::thread::sleep(Duration::from_millis(100));
    let t = std::thread::spawn(move || {
        let exists = nix::unistd::access(
            &root.join("etc/initrd-release"),
            nix::unistd::AccessFlags::F_OK,
        )
        .is_ok();
        let _ = std::fs::metadata(&root);
        let _ = tx.send(exists);
    });
    let answered = rx.recv_timeout(wait);
    drop(stopped);
    t.join().unwrap();
    matches!(answered, Ok(false))
}

fn bump_generation(fx: &Fixture) {
    let before = fx.control(r#"{"cmd":"stats"}"#)["generation_bumps"]
        .as_u64()
        .unwrap();
    fx.imgupdate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.control(r#"{"cmd":"stats"}"#)["generation_bumps"]
        .as_u64()
        .unwrap()
        == before
    {
        assert!(Instant::now() < deadline, "the daemon never saw the update");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn what_systemd_shutdown_looks_up_is_answered_while_the_daemon_is_stopped() {
    let fx = mounted();
    let pid = daemon_pid(&fx);
    let root = fx.m("");

    assert_eq!(
        shutdown_guard::touch(&root),
        0,
        "no initrd-release in the image"
    );
    assert!(
        answers_while_stopped(&root, pid, Duration::from_secs(3)),
        "cached lookups must not need the daemon"
    );

    // An image update invalidates cached entries (the negative one and the root's
    // attributes among them): now the same lookups reach the daemon. This is the hazard.
    bump_generation(&fx);
    assert!(
        !answers_while_stopped(&root, pid, Duration::from_secs(2)),
        "after an image update the lookups should have needed the daemon (if the kernel \
         kept them cached, this test no longer shows the hazard the guard exists for)"
    );

    // The guard's touch caches them again.
    bump_generation(&fx);
    shutdown_guard::touch(&root);
    assert!(answers_while_stopped(&root, pid, Duration::from_secs(3)));
    // The daemon is still healthy after being stopped and continued.
    assert_eq!(
        std::fs::read_to_string(fx.m("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\n"
    );
}

#[test]
fn the_guard_thread_recaches_after_an_image_update() {
    let fx = mounted();
    let pid = daemon_pid(&fx);
    let root = fx.m("");
    shutdown_guard::spawn(root.clone(), Duration::from_millis(20)).unwrap();
    for _ in 0..3 {
        bump_generation(&fx);
        // One guard period (and some slack for a loaded machine) after the invalidation.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            answers_while_stopped(&root, pid, Duration::from_secs(3)),
            "the guard did not re-cache the shutdown lookups"
        );
    }
}

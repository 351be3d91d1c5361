//! End to end: a real Debian 12 node PXE-boots under qemu (TCG) from the files
//! `statelite nodeset` wrote, gets its rules from `statelite serve`, mounts its image, state
//! and litetree from nfs-ganesha on 127.0.0.1, and runs systemd on the FUSE root up to
//! multi-user.target; a test unit on the node checks every kind of entry and powers off.
//!
//! Boots: FUSE (first: writes persistent data, sees a live image update, powers off
//! cleanly), FUSE again (persistent data there, tmpfs reset; then the NFS server is stopped
//! by its pid and started again under the running node, and the power is cut right after
//! an fsync), symlink mode (the same image after liteimg: same checks, and the fsync'd data
//! is there).
//!
//! Needs root and the packages and cached image of `tests/e2e/setup.sh`, which this test
//! runs first (it is idempotent and quick when everything is there; `.ci/run` runs it
//! too). Boot times to multi-user.target are printed (run with --nocapture to see them).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use statelite_tools::bootlab::{BootPlan, BootReport, Lab, LabInputs};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// STATELITE_E2E_ECHO=1 copies the node's console to stdout (with --nocapture).
fn echo() -> bool {
    std::env::var_os("STATELITE_E2E_ECHO").is_some_and(|v| v == "1")
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn setup() -> LabInputs {
    let st = Command::new("bash")
        .arg(repo().join("tests/e2e/setup.sh"))
        .status()
        .expect("running tests/e2e/setup.sh");
    assert!(
        st.success(),
        "tests/e2e/setup.sh failed (it needs root and the Debian mirror)"
    );
    LabInputs::from_setup(repo())
}

fn show(name: &str, r: &BootReport) {
    println!(
        "e2e {name}: multi-user.target {} after power-on (node uptime {}), whole boot to \
         poweroff {:.1} s, {} checks passed",
        r.to_multi_user
            .map_or("never reached".into(), |t| format!("{t:.1} s")),
        r.uptime_at_multi_user
            .map_or("?".into(), |t| format!("{t:.1} s")),
        r.total_secs,
        r.ok.len()
    );
}

fn assert_boot(name: &str, r: &BootReport, must: &[&str]) {
    show(name, r);
    let tail: Vec<&String> = r.console.iter().rev().take(60).rev().collect();
    let console = tail
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        r.failed.is_empty(),
        "{name}: failed checks: {:#?}\n--- console (last lines) ---\n{console}",
        r.failed
    );
    for m in must {
        assert!(
            r.ok.iter().any(|o| o.contains(m)),
            "{name}: check {m:?} did not pass; passed: {:#?}\n--- console ---\n{console}",
            r.ok
        );
    }
    assert!(r.ended, "{name}: the test unit did not finish\n{console}");
}

#[test]
#[ignore = "boots a real node under qemu three times (minutes); `.ci/run` runs it with --ignored"]
fn node_boots_twice_in_fuse_mode_survives_faults_and_boots_in_symlink_mode() {
    let inputs = setup();
    let work = tempfile::Builder::new()
        .prefix("statelite-e2e-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    let lab = Lab::start(work.path(), &inputs).expect("starting the lab");
    let common = [
        "ro entry served from the litetree",
        "con entry concatenated",
    ];

    // 1. FUSE: every kind of entry, a live image update, a clean poweroff.
    let first = lab
        .boot(&BootPlan {
            update_image: true,
            ..BootPlan::new(
                "e2e.phase=first statelite.onfail=poweroff",
                BOOT_TIMEOUT,
                echo(),
            )
        })
        .expect("first boot");
    let mut must = common.to_vec();
    must.extend([
        "root is FUSE",
        "daemon runs as @statelite-mountd",
        "litectl status healthy",
        "sed -i on a tmpfs file",
        "persistent write",
        "image update seen live",
        "write to ro /etc/motd (EROFS)",
        "create in /usr (EROFS)",
    ]);
    assert_boot("FUSE boot 1", &first, &must);
    assert!(first.imgupdate_done);
    assert!(
        first.powered_off,
        "FUSE boot 1: no clean poweroff (\"reboot: Power down\" and qemu exit 0)"
    );
    // The persistent write reached the state export, in the node's own directory.
    let data = std::fs::read_to_string(lab.state.join("n01/srv/persist/data"))
        .expect("persistent file in the state directory");
    assert_eq!(data, "written in boot 1 (fuse)\n");

    // 2. FUSE again: persistent data there, tmpfs reset; then the NFS server restarts under
    //    the running node, and the power is cut right after an fsync.
    let second = lab
        .boot(&BootPlan {
            bounce_server: true,
            power_cut: true,
            ..BootPlan::new(
                "e2e.phase=second statelite.onfail=poweroff",
                BOOT_TIMEOUT,
                echo(),
            )
        })
        .expect("second boot");
    let mut must = common.to_vec();
    must.extend([
        "root is FUSE",
        "tmpfs reset after reboot",
        "persistent file survived the reboot",
        "image read across an NFS server restart",
        "persistent write after the server restart",
        "daemon healthy after the server restart",
        "persistent fsync before a power cut",
    ]);
    assert_boot("FUSE boot 2", &second, &must);
    let down = second.server_bounced.expect("the server was bounced");
    // The node's read of a never-read image file really waited for the server.
    let waited: f64 = second
        .ok
        .iter()
        .find_map(|o| o.split("(waited ").nth(1))
        .and_then(|w| w.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .expect("the node reports how long its read waited");
    println!(
        "e2e FUSE boot 2: NFS server down {down:.1} s; the node's read waited {waited:.1} s \
         and succeeded"
    );
    assert!(
        waited >= 1.0,
        "the read did not wait for the server ({waited} s): was it down?"
    );
    assert!(second.power_cut, "FUSE boot 2: the power was not cut");
    // What was fsync'd is on the server, whatever the node's kernel still had in flight.
    assert_eq!(
        std::fs::read_to_string(lab.state.join("n01/srv/persist/powercut"))
            .expect("fsync'd file in the state directory"),
        "fsynced before the power cut\n"
    );

    // 3. Symlink mode on the same image, rewritten by liteimg (FUSE mode sees through it).
    lab.liteimg().expect("liteimg on the lab image");
    let symlink = lab
        .boot(&BootPlan::new(
            "e2e.phase=symlink STATELITE_MODE=symlink statelite.onfail=poweroff",
            BOOT_TIMEOUT,
            echo(),
        ))
        .expect("symlink-mode boot");
    let mut must = common.to_vec();
    must.extend([
        "root is the NFS image",
        "persistent file survived the reboot",
        "fsync'd data survived the power cut",
        "create in /usr (EROFS)",
    ]);
    assert_boot("symlink boot", &symlink, &must);
    assert!(
        symlink.powered_off,
        "symlink boot: no clean poweroff (\"reboot: Power down\" and qemu exit 0)"
    );
    drop(lab);
}

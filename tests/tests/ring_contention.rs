//! The ring threads' contention guard (`fs/src/ring/mod.rs`, `Rings::adapt`): they run as
//! `SCHED_IDLE` so that a reply wakes the caller on its own CPU, which starves them while
//! CPU-bound work (a compute job on every core) keeps the CPUs busy. The daemon watches
//! their run-queue waits and gives them normal scheduling while that lasts, then takes it
//! back. A test binary of its own: the CPU hogs would disturb any test running beside it.

mod fuse_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fuse_common::{Fixture, kernel_has_ring, write};

fn all_have_policy(tids: &[libc::pid_t], policy: libc::c_int) -> bool {
    // SAFETY: sched_getscheduler only reads the policy of the given thread.
    tids.iter()
        .all(|&t| unsafe { libc::sched_getscheduler(t) } == policy)
}

fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Busy threads pinned to each CPU until `stop` is set. Two per CPU: with one, the
/// scheduler (EEVDF) mostly runs a woken `SCHED_IDLE` ring thread as soon as the caller
/// blocks, because the hog, having had the CPU, is not eligible then; the threads waited about
/// 1 µs per time slice and the guard rightly stayed off, so the test passed or failed by
/// chance. With two, one of them is always eligible ahead of the ring thread, which waits
/// for whole time slices: the starvation the guard is for.
const HOGS_PER_CPU: usize = 2;

fn cpu_hogs(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cpus * HOGS_PER_CPU)
        .map(|i| i % cpus)
        .map(|cpu| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one CPU set, applied to this thread (0).
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect()
}

#[test]
fn ring_threads_get_normal_scheduling_while_cpu_bound_work_starves_them_and_give_it_back() {
    if !kernel_has_ring() {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return;
    }
    let mut fx = Fixture::new("\"ALL\",\"/tmp/\",\"tmpfs,rw\",,\n");
    write(&fx.p("img/tmp/.keep"), "");
    write(&fx.p("img/etc/hosts"), "127.0.0.1 localhost\n");
    fx.mount();
    assert!(fx.ring_up(), "the ring serves on this kernel");
    let tids: Vec<libc::pid_t> = fx.ring_threads().into_iter().map(|t| t.0).collect();
    assert!(!tids.is_empty(), "ring threads are named ring-*");
    assert!(
        wait_for(Duration::from_secs(10), || all_have_policy(
            &tids,
            libc::SCHED_IDLE
        )),
        "ring threads start as SCHED_IDLE"
    );
    assert_eq!(fx.control(r#"{"cmd":"status"}"#)["ring_threads"], "idle");

    let stop = Arc::new(AtomicBool::new(false));
    let hogs = cpu_hogs(&stop);
    // Requests while every CPU is busy: each new name is a LOOKUP for a ring thread.
    let t0 = Instant::now();
    let mut n = 0;
    let switched = loop {
        let _ = std::fs::metadata(fx.m(&format!("etc/missing-{n}")));
        n += 1;
        if all_have_policy(&tids, libc::SCHED_OTHER) {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            break false;
        }
    };
    // The daemon says so (`litectl status`: FUSE ring threads), within one watch tick.
    let reported = wait_for(Duration::from_secs(5), || {
        fx.control(r#"{"cmd":"status"}"#)["ring_threads"] == "normal"
    });
    // Served, and served correctly, while the hogs run.
    let served = (0..200).all(|i| {
        std::fs::write(fx.m(&format!("tmp/busy-{i}")), format!("{i}\n")).is_ok()
            && std::fs::read_to_string(fx.m(&format!("tmp/busy-{i}"))).ok()
                == Some(format!("{i}\n"))
    });
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().expect("hog thread");
    }
    assert!(
        switched,
        "ring threads still SCHED_IDLE after {n} lookups in {:?} of contention",
        t0.elapsed()
    );
    assert!(
        served,
        "files written and read back while the CPUs were busy"
    );
    assert!(
        reported,
        "status reports the ring threads' normal scheduling"
    );
    assert_eq!(
        std::fs::read_to_string(fx.m("etc/hosts")).expect("image file"),
        "127.0.0.1 localhost\n"
    );
    // Without contention the hold runs out and SCHED_IDLE returns: 2 s the first time,
    // doubled each time contention came back soon after (it may have while the hogs ran),
    // at most a minute.
    assert!(
        wait_for(Duration::from_secs(75), || all_have_policy(
            &tids,
            libc::SCHED_IDLE
        )),
        "ring threads back to SCHED_IDLE once the CPUs are free"
    );
    assert!(wait_for(Duration::from_secs(5), || {
        fx.control(r#"{"cmd":"status"}"#)["ring_threads"] == "idle"
    }));
    let shown = std::process::Command::new(fuse_common::bin("litectl"))
        .arg("--socket")
        .arg(fx.sock())
        .arg("status")
        .output()
        .expect("litectl");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("FUSE ring threads") && l.contains("SCHED_IDLE")),
        "{shown}"
    );
}

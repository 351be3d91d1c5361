//! The two ways requests reach the daemon: FUSE over io_uring (the default where the
//! kernel has it, Linux 6.14+) and `/dev/fuse` (`--no-uring`, and every older kernel).
//! The whole suite runs over whichever the machine offers; these tests prove which one
//! served, and that both give the same results for the same real workload.

mod fuse_common;

use std::path::Path;

use fuse_common::{Fixture, kernel_has_ring, snapshot, write};

const RULES: &str = r#""ALL","/tmp/","tmpfs,rw",,
"ALL","/var/lib/db/","persistent",,
"#;

fn mounted(extra: &[&str]) -> Fixture {
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/tmp/.keep"), "");
    write(&fx.p("img/var/lib/db/.keep"), "");
    write(&fx.p("img/etc/hosts"), "127.0.0.1 localhost\n");
    write(&fx.p("img/etc/app.conf"), "mode=slow\nlevel=1\n");
    for i in 0..40 {
        write(&fx.p(&format!("img/usr/share/doc/pkg{i}/README")), "docs\n");
    }
    fx.extra_args.extend(extra.iter().map(|s| s.to_string()));
    fx.mount();
    fx
}

/// A fixture (not yet mounted) with RULES' writable areas, `files` in the image and one
/// variable in the daemon's environment; None, the test skipped, on a kernel without the
/// ring.
fn ring_fixture(files: &[(&str, &str)], env: (&str, &str)) -> Option<Fixture> {
    if !kernel_has_ring() {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return None;
    }
    let mut fx = Fixture::new(RULES);
    for (path, text) in [("img/tmp/.keep", ""), ("img/var/lib/db/.keep", "")]
        .iter()
        .chain(files)
    {
        write(&fx.p(path), text);
    }
    fx.envs.push((env.0.into(), env.1.into()));
    Some(fx)
}

/// Ring threads of the daemon behind `fx` and their context switches so far.
fn ring_thread_switches(fx: &Fixture) -> Vec<(String, u64)> {
    fx.ring_threads()
        .into_iter()
        .map(|(_, comm, dir)| {
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let n = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            (comm, n)
        })
        .collect()
}

#[test]
fn requests_are_served_by_the_ring_threads_when_the_kernel_has_them() {
    if !kernel_has_ring() {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return;
    }
    let fx = mounted(&[]);
    // The ring comes up right after the root is reported ready (/dev/fuse serves until then).
    assert!(fx.ring_up());
    let before: u64 = ring_thread_switches(&fx).iter().map(|t| t.1).sum();
    // New names each time: every stat is a LOOKUP the kernel cannot answer itself.
    for i in 0..500 {
        let _ = std::fs::metadata(fx.m(&format!("etc/missing-{i}")));
    }
    let threads = ring_thread_switches(&fx);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        threads.len() >= cpus,
        "one queue per CPU at least: {threads:?}"
    );
    let after: u64 = threads.iter().map(|t| t.1).sum();
    assert!(
        after >= before + 500,
        "500 lookups woke the ring threads only {} times",
        after - before
    );
    assert!(fx.op_count("lookup") >= 500);
}

/// The kernel switches to the ring as soon as every queue has an entry, so a request made
/// while the ring threads are still registering can reach an entry whose thread has not yet
/// looked for its first completion. Such a request must be served: it used to be taken for
/// a registration result and dropped, and its caller (a `chdir` right after mounting, in a
/// test) waited forever. The daemon's test hook widens that window to 300 ms.
#[test]
fn requests_made_while_the_ring_registers_are_served() {
    let Some(mut fx) = ring_fixture(
        &[("img/etc/hosts", "127.0.0.1 localhost\n")],
        ("STATELITE_TEST_RING_REGISTER_DELAY_MS", "300"),
    ) else {
        return;
    };
    // Returns once the root is ready, before the ring threads register.
    fx.mount();
    // Requests from every CPU through the registration window and after it; each must be
    // answered (a lost one makes its reader wait for good: killed after 20 s).
    let hosts = fx.m("etc/hosts");
    let script = format!(
        "for cpu in $(seq 0 $(($(nproc) - 1))); do \
           taskset -c $cpu sh -c 'for i in $(seq 300); do cat {h} >/dev/null || exit 1; \
             stat {h}.$i >/dev/null 2>&1; done' & \
         done; wait",
        h = hosts.display()
    );
    let daemon = fx.control(r#"{"cmd":"status"}"#)["pid"]
        .as_i64()
        .expect("pid") as i32;
    let t0 = std::time::Instant::now();
    let mut readers = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("sh");
    let st = loop {
        if let Some(st) = readers.try_wait().expect("wait") {
            break st;
        }
        if t0.elapsed() > std::time::Duration::from_secs(20) {
            // A request delivered to the daemon is waited for even by a killed caller;
            // only the connection's end frees the readers.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = readers.wait();
            panic!("a request made while the ring registered was never answered (20 s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(st.success(), "readers failed: {st}");
    assert_eq!(fx.control(r#"{"cmd":"status"}"#)["transport"], "io_uring");
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("hosts"),
        "127.0.0.1 localhost\n"
    );
}

/// Each CPU's queue starts with one ring thread (one entry: a `close`'s RELEASE and the
/// next `open` are served in one wake-up). A request that holds it (an NFS stall; here a
/// LOOKUP the test hook makes take 4 s) gets the queue a spare thread within ~200 ms, and
/// the CPU's next requests are answered by the spare while the stalled one goes on.
#[test]
fn a_stalled_queue_gets_a_spare_thread_and_the_cpus_next_requests_are_answered() {
    let Some(mut fx) = ring_fixture(
        &[
            ("img/etc/stalled", "slow\n"),
            ("img/etc/app.conf", "mode=slow\n"),
        ],
        ("STATELITE_TEST_SLOW_LOOKUP", "stalled=4000"),
    ) else {
        return;
    };
    fx.mount();
    assert!(fx.ring_up());
    let status = fx.control(r#"{"cmd":"status"}"#);
    let queues = status["ring_thread_count"].as_u64().expect("thread count");
    assert_eq!(status["ring_spares"], 0, "{status}");
    assert_eq!(
        fx.ring_threads().len() as u64,
        queues,
        "one thread per queue to start with"
    );

    // Both callers on CPU 0, so both requests go to CPU 0's queue.
    let t0 = std::time::Instant::now();
    let mut stalled = std::process::Command::new("taskset")
        .args(["-c", "0", "cat"])
        .arg(fx.m("etc/stalled"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("taskset");
    // The spare comes 100-200 ms into the stall; by 600 ms it is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while fx.control(r#"{"cmd":"status"}"#)["ring_spares"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare thread 3 s into a stall: {}",
            fx.control(r#"{"cmd":"status"}"#)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let other = std::process::Command::new("taskset")
        .args(["-c", "0", "cat"])
        .arg(fx.m("etc/app.conf"))
        .output()
        .expect("taskset");
    let answered_at = t0.elapsed();
    assert!(other.status.success(), "{other:?}");
    assert_eq!(String::from_utf8_lossy(&other.stdout), "mode=slow\n");
    // Answered while the stalled LOOKUP was still in the daemon (it takes 4 s).
    assert!(
        stalled.try_wait().expect("wait").is_none(),
        "the stalled read ended first ({answered_at:?}): was the LOOKUP slowed at all?"
    );
    assert!(
        answered_at < std::time::Duration::from_millis(3500),
        "CPU 0's next request waited behind the stalled one: {answered_at:?}"
    );
    let out = stalled.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slow\n");
    assert!(t0.elapsed() >= std::time::Duration::from_secs(4));
    let status = fx.control(r#"{"cmd":"status"}"#);
    assert_eq!(status["ring_spares"], 1, "{status}");
    assert_eq!(status["ring_thread_count"].as_u64(), Some(queues + 1));
    assert_eq!(fx.ring_threads().len() as u64, queues + 1);
}

#[test]
fn no_uring_keeps_requests_on_dev_fuse() {
    let fx = mounted(&["--no-uring"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(fx.control(r#"{"cmd":"status"}"#)["transport"], "/dev/fuse");
    assert!(ring_thread_switches(&fx).is_empty());
    assert_eq!(
        std::fs::read_to_string(fx.m("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
}

/// Real programs over every kind of request: copies, in-place edits (rename over), tar,
/// links, modes, times, xattrs, a fifo, truncation, large files (several 1 MiB requests)
/// and a directory listed in several chunks.
const WORKLOAD: &str = r#"
set -e
cp -a usr/share/doc tmp/doc
sed -i 's/slow/fast/' tmp/doc/pkg3/README
cp etc/app.conf var/lib/db/app.conf
sed -i 's/level=1/level=2/' var/lib/db/app.conf
mkdir -p tmp/many
i=0; while [ $i -lt 600 ]; do echo $i > tmp/many/entry-with-a-long-name-$i; i=$((i+1)); done
ls tmp/many | wc -l > tmp/count
tar -C tmp -cf tmp/doc.tar doc
mkdir tmp/untar && tar -C tmp/untar -xf tmp/doc.tar
rm tmp/doc.tar
ln -s ../etc/hosts tmp/link
ln tmp/count tmp/hard
chmod 600 tmp/count
touch -d '2001-02-03 04:05:06' tmp/count
mkfifo tmp/fifo
setfattr -n user.color -v blue tmp/count
getfattr -n user.color --only-values tmp/count > tmp/color
yes 0123456789abcdef | head -c 3500000 > tmp/big
cp tmp/big var/lib/db/big
cmp tmp/big var/lib/db/big
truncate -s 1000 tmp/big
mv tmp/doc/pkg1 tmp/doc/moved
rm -r tmp/doc/pkg2
rmdir tmp/untar/doc/pkg5 2>/dev/null || rm -r tmp/untar/doc/pkg5
find tmp var ! -path tmp/listing -printf '%p %y %m %s %n %l\n' | sort > tmp/listing
stat -c '%n %Y' tmp/count >> tmp/listing
"#;

fn run_workload(extra: &[&str]) -> (Fixture, Vec<(String, u32, Vec<u8>)>) {
    let fx = mounted(extra);
    let (ok, out) = fx.sh(WORKLOAD);
    assert!(ok, "workload failed over {extra:?}: {out}");
    let mut tree = snapshot(&fx.m("tmp"));
    tree.extend(snapshot(&fx.m("var/lib/db")));
    (fx, tree)
}

#[test]
fn both_transports_give_the_same_results_for_a_real_workload() {
    let (_a, over_dev) = run_workload(&["--no-uring"]);
    let (b, default) = run_workload(&[]);
    // The no-open mode sends every read and write through the daemon (no passthrough).
    let (_c, no_open) = run_workload(&["--no-open"]);
    for (name, other) in [("io_uring", &default), ("no-open", &no_open)] {
        let paths =
            |t: &[(String, u32, Vec<u8>)]| t.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            paths(&over_dev),
            paths(other),
            "{name}: other paths than /dev/fuse"
        );
        for (a, b) in over_dev.iter().zip(other.iter()) {
            assert_eq!(a.1, b.1, "{name}: mode of {}", a.0);
            if a.2 != b.2 {
                let (x, y) = (String::from_utf8_lossy(&a.2), String::from_utf8_lossy(&b.2));
                let differing: Vec<_> = x
                    .lines()
                    .zip(y.lines())
                    .filter(|(l, r)| l != r)
                    .take(5)
                    .collect();
                panic!(
                    "{name}: content of {} differs from /dev/fuse's: {differing:?}",
                    a.0
                );
            }
        }
    }
    let count = std::fs::read_to_string(b.m("tmp/count")).unwrap();
    assert_eq!(count.trim(), "600");
    assert_eq!(std::fs::read_to_string(b.m("tmp/color")).unwrap(), "blue");
}

fn name_only_entries(fx: &Fixture) -> u64 {
    fx.control(r#"{"cmd":"stats"}"#)["name_only_entries"]
        .as_u64()
        .expect("name_only_entries in stats")
}

/// (name, d_ino, d_type is a directory) of every entry of `dir`, read by this thread.
fn list(dir: &Path) -> Vec<(String, u64, bool)> {
    use std::os::unix::fs::DirEntryExt;
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let is_dir = e.file_type().expect("d_type").is_dir();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.ino(),
                is_dir,
            )
        })
        .collect();
    v.sort();
    v
}

/// Over the ring, a reader that lists without stat'ing gets files by name only (no
/// resolution, no inode read) after its first listing; the names, types and inode numbers
/// it sees are those a stat then reports; once it stats what it lists, its next listings
/// carry attributes (no LOOKUP per entry), and a reader that never stats keeps getting
/// names only.
#[test]
fn readers_that_stat_what_they_list_get_attributes_and_the_others_names_only() {
    use std::os::unix::fs::MetadataExt;
    if !kernel_has_ring() {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return;
    }
    let mut fx = Fixture::new(RULES);
    write(&fx.p("img/tmp/.keep"), "");
    write(&fx.p("img/var/lib/db/.keep"), "");
    for f in ["hosts", "app.conf", "fstab", "motd"] {
        write(&fx.p(&format!("img/etc/{f}")), "x\n");
    }
    std::os::unix::fs::symlink("hosts", fx.p("img/etc/hosts.link")).expect("symlink");
    std::fs::create_dir(fx.p("img/etc/sub")).expect("mkdir");
    for i in 0..40 {
        write(&fx.p(&format!("img/usr/share/doc/pkg{i}/README")), "docs\n");
    }
    fx.mount();
    assert!(fx.ring_up());
    let fx = std::sync::Arc::new(fx);

    // One thread lists var/lib/db (its first listing: with attributes), then etc/, and
    // then stats every entry of etc/.
    let f = fx.clone();
    std::thread::spawn(move || {
        let before = name_only_entries(&f);
        assert_eq!(list(&f.m("var/lib/db")).len(), 1);
        assert_eq!(
            name_only_entries(&f),
            before,
            "a reader's first listing is full"
        );
        let listed = list(&f.m("etc"));
        assert_eq!(
            name_only_entries(&f) - before,
            5,
            "the four files and the symlink by name, the directory resolved: {listed:?}"
        );
        for (name, ino, is_dir) in &listed {
            let md = std::fs::symlink_metadata(f.m(&format!("etc/{name}"))).expect("stat");
            assert_eq!(
                md.ino(),
                *ino,
                "{name}: d_ino is the inode number stat reports"
            );
            assert_eq!(md.is_dir(), *is_dir, "{name}: d_type");
        }
        // Seen to stat: the next listing comes with attributes, so stat'ing its entry
        // needs no LOOKUP.
        std::fs::metadata(f.m("usr/share/doc/pkg0")).expect("stat");
        let before = (name_only_entries(&f), f.op_count("lookup"));
        assert_eq!(list(&f.m("usr/share/doc/pkg0")).len(), 1);
        std::fs::metadata(f.m("usr/share/doc/pkg0/README")).expect("stat");
        assert_eq!((name_only_entries(&f), f.op_count("lookup")), before);
    })
    .join()
    .expect("stat'ing reader");

    // Another thread walks by d_type only (find -name style).
    let f = fx.clone();
    std::thread::spawn(move || {
        let before = name_only_entries(&f);
        let mut readmes = 0;
        // Its first listing (with attributes) holds directories only.
        for (pkg, _, is_dir) in list(&f.m("usr/share/doc")) {
            assert!(is_dir, "{pkg}");
            for (name, _, is_dir) in list(&f.m(&format!("usr/share/doc/{pkg}"))) {
                assert_eq!((name.as_str(), is_dir), ("README", false));
                readmes += 1;
            }
        }
        assert_eq!(readmes, 40);
        // pkg0's listing is in the kernel's cache (the first thread read it).
        assert_eq!(name_only_entries(&f) - before, 39);
    })
    .join()
    .expect("name-only reader");
}

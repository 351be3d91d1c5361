//! `statelite serve` against the node's client (`statelite_mountd::query`): the protocol
//! end to end on loopback, identity and policy refusals, live table edits, and a load
//! generator (a boot storm and sustained load) that prints requests/s and p99 latency.
//!
//! Scale the load with STATELITE_SERVE_STORM (clients connecting at once, default 2000),
//! STATELITE_SERVE_CLIENTS (sustained clients, default 64) and STATELITE_SERVE_SECS
//! (sustained seconds, default 2). Timings are printed, never asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use statelite_mountd::query::{QueryError, QueryOptions, fetch_rules_with};
use statelite_tools::serve::{ServeConfig, Server};

fn write(dir: &Path, name: &str, text: &str) {
    // Atomic, as the table commands write: a reader never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.csv"))).unwrap();
}

/// A cluster of `nodes` nodes; n001 (and only it) lives at 127.0.0.1.
fn tables(dir: &Path, nodes: usize) {
    let mut nodelist = String::from("#node,groups\n");
    let mut hosts = String::from("#node,ip\n");
    for i in 1..=nodes {
        nodelist.push_str(&format!("\"n{i:03}\",\"compute,all\"\n"));
        let ip = if i == 1 {
            "127.0.0.1".to_string()
        } else {
            format!("10.0.{}.{}", i / 250, i % 250 + 1)
        };
        hosts.push_str(&format!("\"n{i:03}\",\"{ip}\"\n"));
    }
    write(dir, "nodelist", &nodelist);
    write(dir, "hosts", &hosts);
    write(
        dir,
        "nodetype",
        "#node,os,arch,profile,provmethod\n\"compute\",\"debian12\",\"x86_64\",\"compute\",\"statelite\"\n",
    );
    write(
        dir,
        "noderes",
        "#node,nfsserver,xcatmaster\n\"compute\",\"10.0.2.100\",\"10.0.2.100\"\n",
    );
    write(
        dir,
        "policy",
        "#priority,name,host,commands,noderange,parameters,time,rule,comments,disable\n\
         \"4.8\",,,\"litefile,litetree,statelite\",\"compute\",,,\"allow\",,\n",
    );
    write(
        dir,
        "litefile",
        "#image,file,options,comments,disable\n\
         \"ALL\",\"/etc/motd\",\"tmpfs\",,\n\
         \"ALL\",\"/var/log/\",\"tmpfs\",,\n\
         \"debian12-x86_64-statelite-compute\",\"/etc/motd\",\"persistent\",,\n\
         \"other-image\",\"/opt/\",\"ro\",,\n",
    );
    write(
        dir,
        "litetree",
        "#priority,image,directory,mntopts,comments,disable\n\
         \"2\",,\"$noderes.nfsserver:/trees/$node\",,,\n\
         \"1\",\"debian12-x86_64-statelite-compute\",\"$noderes.nfsserver:/trees/common\",\"vers=3\",,\n",
    );
    write(
        dir,
        "statelite",
        "#node,image,statemnt,mntopts,comments,disable\n\"compute\",,\"$noderes.nfsserver:/state\",,,\n",
    );
}

fn start(dir: &Path) -> Server {
    Server::start(
        dir,
        &ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 16,
            queue: 4096,
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap()
}

fn quick() -> QueryOptions {
    QueryOptions {
        timeout: Duration::from_secs(5),
        tries: 3,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

#[test]
fn a_node_gets_its_own_rules() {
    let d = tempfile::tempdir().unwrap();
    tables(d.path(), 3);
    let server = start(d.path());
    let addr = server.local_addr().to_string();
    let r = fetch_rules_with(&addr, "n001", &quick()).unwrap();
    assert_eq!(r.image, "debian12-x86_64-statelite-compute");
    let mut files: Vec<(String, String, String)> = r
        .litefile
        .iter()
        .map(|f| (f.image.clone(), f.file.clone(), f.options.clone()))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            (
                "ALL".to_string(),
                "/var/log/".to_string(),
                "tmpfs".to_string()
            ),
            (
                "debian12-x86_64-statelite-compute".to_string(),
                "/etc/motd".to_string(),
                "persistent".to_string()
            ),
        ],
        "image rows beat ALL rows; other images' rows are not sent"
    );
    assert!(
        r.litefile_text.contains("\"/etc/motd\",\"persistent\""),
        "{}",
        r.litefile_text
    );
    let dirs: Vec<&str> = r.litetree.iter().map(|t| t.dir.as_str()).collect();
    assert_eq!(dirs, ["10.0.2.100:/trees/common", "10.0.2.100:/trees/n001"]);
    assert_eq!(r.litetree[0].mntopts.as_deref(), Some("vers=3"));
    assert_eq!(r.statemnt.as_deref(), Some("10.0.2.100:/state"));
    assert_eq!(r.state_dir.as_deref(), Some("10.0.2.100:/state/n001"));
    assert_eq!(r.lite_rows().unwrap().len(), 2);
    server.shutdown();
}

#[test]
fn other_nodes_and_policy_refusals_are_final_and_counted() {
    let d = tempfile::tempdir().unwrap();
    tables(d.path(), 3);
    let server = start(d.path());
    let addr = server.local_addr().to_string();
    // n002 is 10.0.0.3: 127.0.0.1 may not ask about it.
    let e = fetch_rules_with(&addr, "n002", &quick()).unwrap_err();
    assert!(matches!(e, QueryError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("not n002's address"), "{e}");
    let e = fetch_rules_with(&addr, "nobody", &quick()).unwrap_err();
    assert!(e.to_string().contains("not a node"), "{e}");

    // A deny row with a better priority takes litetree away: the whole answer is refused.
    write(
        d.path(),
        "policy",
        "#priority,commands,noderange,rule\n\"4.8\",\"litefile,litetree,statelite\",\"compute\",\"allow\"\n\
         \"2\",\"litetree\",\"n001\",\"deny\"\n",
    );
    let e = fetch_rules_with(&addr, "n001", &quick()).unwrap_err();
    assert!(e.to_string().contains("policy denies litetree"), "{e}");
    // No policy at all: default deny.
    std::fs::remove_file(d.path().join("policy.csv")).unwrap();
    let e = fetch_rules_with(&addr, "n001", &quick()).unwrap_err();
    assert!(e.to_string().contains("no row"), "{e}");
    let refused = server
        .stats
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 4);
    server.shutdown();
}

#[test]
fn table_edits_apply_to_the_next_request() {
    let d = tempfile::tempdir().unwrap();
    tables(d.path(), 2);
    let server = start(d.path());
    let addr = server.local_addr().to_string();
    let before = fetch_rules_with(&addr, "n001", &quick()).unwrap();
    assert_eq!(before.litefile.len(), 2);
    write(
        d.path(),
        "litefile",
        "#image,file,options\n\"ALL\",\"/etc/motd\",\"ro\"\n\"ALL\",\"/etc/hosts\",\"con\"\n\"ALL\",\"/srv/\",\"persistent\"\n",
    );
    // Every worker sees it (each keeps its own cache): ask more times than there are workers.
    for _ in 0..40 {
        let after = fetch_rules_with(&addr, "n001", &quick()).unwrap();
        assert_eq!(after.litefile.len(), 3);
    }
    // A node with a variable that has no value gets an error naming it.
    write(
        d.path(),
        "litetree",
        "#priority,image,directory\n\"1\",,\"$nodepos.room:/t\"\n",
    );
    let e = fetch_rules_with(&addr, "n001", &quick()).unwrap_err();
    assert!(e.to_string().contains("$nodepos.room"), "{e}");
    server.shutdown();
}

#[test]
fn garbage_slow_and_oversized_clients_do_not_hurt() {
    let d = tempfile::tempdir().unwrap();
    tables(d.path(), 1);
    let server = Server::start(
        d.path(),
        &ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 2,
            queue: 64,
            timeout: Duration::from_millis(500),
        },
    )
    .unwrap();
    let addr = server.local_addr();
    let answer_with = |bytes: &[u8], close: bool| -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        if close {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let answer = |bytes: &[u8]| answer_with(bytes, false);
    assert!(answer(b"GET / HTTP/1.0\r\n\r\n").contains("bad request"));
    assert!(answer(&[0xff; 100]).contains("timed out"));
    assert!(answer(b"\xff\xfe\n").contains("not UTF-8"));
    assert!(answer(&vec![b'a'; 10_000]).contains("longer than"));
    assert!(answer_with(b"STATELITE-RULES 1 n001", true).contains("no complete request"));
    assert!(answer(b"STATELITE-RULES 1 n001").contains("timed out"));
    // Silent clients occupying both workers time out; a real request still gets through.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let r = fetch_rules_with(&addr.to_string(), "n001", &quick()).unwrap();
    assert_eq!(r.node, "n001");
    drop(idle);
    server.shutdown();
}

/// Raises the open-file limit for the storm (each connection costs two descriptors here).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One raw request (no client retries: the load generator wants to see every answer).
fn one_request(addr: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    (&s).write_all(b"STATELITE-RULES 1 n001\n")
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.contains("\"ok\":true") {
        Ok(t.elapsed())
    } else {
        Err(line)
    }
}

#[test]
fn load_boot_storm_and_sustained() {
    raise_nofile();
    let d = tempfile::tempdir().unwrap();
    // A realistic cluster size for the node index and hosts lookups.
    tables(d.path(), 2000);
    let server = start(d.path());
    let addr = server.local_addr().to_string();

    // Boot storm: every client connects at the same instant, one request each.
    let storm = env_num("STATELITE_SERVE_STORM", 2000);
    let barrier = Arc::new(Barrier::new(storm));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..storm)
        .map(|_| {
            let (addr, barrier) = (addr.clone(), Arc::clone(&barrier));
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    barrier.wait();
                    one_request(&addr)
                })
                .unwrap()
        })
        .collect();
    let mut lat = Vec::new();
    let mut failed = Vec::new();
    for h in handles {
        match h.join().unwrap() {
            Ok(l) => lat.push(l),
            Err(e) => failed.push(e),
        }
    }
    let storm_secs = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "serve storm: {storm} clients at once: {} answered, {} not ({}), all done in {:.2} s, \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        failed.len(),
        failed.first().map(String::as_str).unwrap_or("-").trim(),
        storm_secs,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    // "busy" answers are allowed under a storm (clients retry); anything else is a bug.
    for f in &failed {
        assert!(f.contains("busy"), "unexpected failure: {f}");
    }

    // Sustained: N clients in a loop for a fixed time.
    let clients = env_num("STATELITE_SERVE_CLIENTS", 64);
    let secs = env_num("STATELITE_SERVE_SECS", 2) as u64;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    match one_request(&addr) {
                        Ok(l) => lat.push(l),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    println!(
        "serve sustained: {clients} clients for {secs} s: {:.0} requests/s, p50 {:.2} ms, \
         p99 {:.2} ms, {errors} errors",
        lat.len() as f64 / secs as f64,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
    assert!(!lat.is_empty());
    server.shutdown();
}

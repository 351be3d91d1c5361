//! `rule-lookup`: how fast the litefile rule trie answers "which rule governs this path?".
//!
//! Builds a 10,000-row litefile shaped like a real one (paths 2 to 6 components deep under
//! the usual top-level directories, about 40% directory entries, every option), then looks
//! up 1,000,000 paths: hits below directory entries, exact file hits, misses, and deep paths
//! (15 to 25 components). Prints ns per lookup, overall and per kind.
//!
//! Run: `cargo run --release -p statelite-benches --bin rule-lookup [ROWS] [LOOKUPS]`.
//! With `--load LITEFILE` it times what a mount does with that litefile instead: read and
//! parse its rows, then build the rule set (median of 200 rounds, µs per phase).
//! Deterministic: the same inputs every run (a fixed-seed xorshift generator).

use std::hint::black_box;
use std::time::Instant;

use statelite_fs::rules::{RuleSet, rows_from};

/// xorshift64*: deterministic, dependency-free, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const TOP: &[&str] = &[
    "etc", "var", "opt", "usr", "srv", "home", "root", "tmp", "data",
];
const WORDS: &[&str] = &[
    "lib",
    "log",
    "cache",
    "spool",
    "run",
    "ssh",
    "sysconfig",
    "network",
    "app",
    "conf",
    "db",
    "state",
    "share",
    "local",
    "x86_64",
    "compute",
    "gpfs",
    "slurm",
    "munge",
    "ntp",
    "yum",
    "apt",
    "systemd",
    "udev",
    "profile.d",
    "cron.d",
    "pam.d",
    "security",
    "default",
    "init.d",
];
const OPTIONS: &[&str] = &statelite_fs::rules::OPTION_SPELLINGS;

fn component(rng: &mut Rng) -> String {
    let w = rng.pick(WORDS);
    match rng.below(3) {
        0 => w.to_string(),
        _ => format!("{w}{}", rng.below(400)),
    }
}

/// One way of loading the rules, given the litefile's bytes.
type LoadWay<'a> = Box<dyn Fn(&[u8]) -> RuleSet + 'a>;

/// `--load LITEFILE`: the daemon's start-up work on that litefile (read, then parse
/// straight into the rule set, as a mount does), phase by phase; and, when a compiled rule
/// table for the empty image name sits beside it (`statelite ilitefile "" --compile`), the
/// same with the table loaded instead of the CSV parsed.
fn time_load(file: &std::path::Path) {
    use statelite_fs::rule_table;
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("{e}");
        std::process::exit(1);
    };
    let table = rule_table::table_path(file, "").filter(|t| t.exists());
    let mut ways: Vec<(&str, LoadWay)> = vec![(
        "parse into the rule set",
        Box::new(|bytes: &[u8]| {
            statelite_fs::rules::rules_from_litefile_bytes(bytes, file, "")
                .unwrap_or_else(|e| fail(&e))
        }),
    )];
    if let Some(table) = table {
        ways.push((
            "read and load the compiled table",
            Box::new(move |bytes: &[u8]| {
                let t = std::fs::read(&table).unwrap_or_else(|e| fail(&e));
                rule_table::load(&t, bytes, "").unwrap_or_else(|e| fail(&e))
            }),
        ));
    }
    for (what, way) in &ways {
        let mut read = Vec::new();
        let mut build = Vec::new();
        let mut n = 0;
        for _ in 0..200 {
            let t0 = Instant::now();
            let bytes = std::fs::read(file).unwrap_or_else(|e| fail(&e));
            let t1 = Instant::now();
            let set = black_box(way(&bytes));
            let t2 = Instant::now();
            n = set.rules().len();
            read.push((t1 - t0).as_secs_f64() * 1e6);
            build.push((t2 - t1).as_secs_f64() * 1e6);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (r0, b0) = (read[0], build[0]);
        let (r, b) = (med(&mut read), med(&mut build));
        println!(
            "{}: {n} rules; read {r:.0} µs, {what} {b:.0} µs, total {:.0} µs \
             (first round, as in a fresh daemon: {r0:.0} + {b0:.0} = {:.0} µs)",
            file.display(),
            r + b,
            r0 + b0
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--load") {
        // The daemon's allocator settings, so the rounds cost what the daemon's load does.
        statelite_fs::sys::tune_malloc_for_daemon();
        let file = args.nth(1).unwrap_or_default();
        time_load(std::path::Path::new(&file));
        return;
    }
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let lookups: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = Rng(0x5EED_0F57_A7E1_1E00);

    // The litefile: unique paths, ~40% directories.
    let mut seen = std::collections::HashSet::new();
    let mut entries: Vec<(String, String)> = Vec::with_capacity(rows);
    let mut dirs: Vec<String> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    while entries.len() < rows {
        let depth = 2 + rng.below(5);
        let mut path = format!("/{}", rng.pick(TOP));
        for _ in 1..depth {
            path.push('/');
            path.push_str(&component(&mut rng));
        }
        if !seen.insert(path.clone()) {
            continue;
        }
        let is_dir = rng.below(10) < 4;
        let option = if is_dir {
            // `con` is not allowed on directories.
            let o = rng.pick(OPTIONS);
            if o == "con" { "tmpfs" } else { o }
        } else {
            rng.pick(OPTIONS)
        };
        if is_dir {
            dirs.push(path.clone());
            entries.push((format!("{path}/"), option.to_string()));
        } else {
            files.push(path.clone());
            entries.push((path, option.to_string()));
        }
    }
    let triples: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|(p, o)| ("ALL", p.as_str(), o.as_str()))
        .collect();
    let parsed = match rows_from(&triples) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rule-lookup: generated litefile does not parse: {e}");
            std::process::exit(1);
        }
    };
    let t = Instant::now();
    let set = RuleSet::for_image(&parsed, "bench-image");
    let build = t.elapsed();

    // The lookups, by kind.
    let kinds = [
        "below a directory entry",
        "exact file entry",
        "miss",
        "deep path (15-25)",
    ];
    let mut paths: Vec<(usize, String)> = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let kind = match rng.below(100) {
            0..40 => 0,
            40..60 => 1,
            60..90 => 2,
            _ => 3,
        };
        let path = match kind {
            0 => {
                let mut p = dirs[rng.below(dirs.len())].clone();
                for _ in 0..1 + rng.below(3) {
                    p.push('/');
                    p.push_str(&component(&mut rng));
                }
                p
            }
            1 => files[rng.below(files.len())].clone(),
            2 => {
                let mut p = format!("/{}", rng.pick(&["usr", "bin", "sbin", "lib64", "etc"]));
                for _ in 0..1 + rng.below(5) {
                    p.push_str("/x");
                    p.push_str(&component(&mut rng));
                }
                p
            }
            _ => {
                let mut p = if rng.below(2) == 0 {
                    dirs[rng.below(dirs.len())].clone()
                } else {
                    format!("/{}", rng.pick(TOP))
                };
                let depth = 15 + rng.below(11);
                while p.matches('/').count() < depth {
                    p.push('/');
                    p.push_str(&component(&mut rng));
                }
                p
            }
        };
        paths.push((kind, path));
    }

    // Warm up, then time everything in one pass and each kind separately.
    let mut hits = 0usize;
    for (_, p) in paths.iter().take(10_000) {
        hits += usize::from(set.lookup(black_box(p)).is_some());
    }
    let t = Instant::now();
    for (_, p) in &paths {
        hits += usize::from(black_box(set.lookup(black_box(p))).is_some());
    }
    let total = t.elapsed();
    let mut per_kind = Vec::new();
    for (k, name) in kinds.iter().enumerate() {
        let subset: Vec<&str> = paths
            .iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, p)| p.as_str())
            .collect();
        let mut found = 0usize;
        let t = Instant::now();
        for p in &subset {
            found += usize::from(black_box(set.lookup(black_box(p))).is_some());
        }
        let elapsed = t.elapsed();
        per_kind.push((*name, subset.len(), found, elapsed));
    }

    println!(
        "litefile: {} rows ({} directories, {} files), {} rules for the image, built in {:.1} ms",
        entries.len(),
        dirs.len(),
        files.len(),
        set.rules().len(),
        build.as_secs_f64() * 1e3
    );
    println!(
        "lookups: {lookups} in {:.1} ms: {:.1} ns/lookup ({hits} governed by a rule incl. warm-up)",
        total.as_secs_f64() * 1e3,
        total.as_nanos() as f64 / lookups as f64
    );
    for (name, n, found, elapsed) in per_kind {
        println!(
            "  {name:<24} {n:>8} lookups {:>7.1} ns/lookup  ({found} governed)",
            elapsed.as_nanos() as f64 / n.max(1) as f64
        );
    }
}

//! The workloads. Each returns one sample: a rate (ops/s or MiB/s, higher is better) or,
//! for the image-update workload, a latency in ms (lower is better).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::image::{self, ImageInfo};
use crate::modes::View;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    #[serde(rename = "ops/s")]
    OpsPerSec,
    #[serde(rename = "MiB/s")]
    MibPerSec,
    #[serde(rename = "ms")]
    Ms,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::OpsPerSec => "ops/s",
            Unit::MibPerSec => "MiB/s",
            Unit::Ms => "ms",
        }
    }
    pub fn higher_is_better(self) -> bool {
        self != Unit::Ms
    }
}

/// Sizes of the workloads.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub exec_count: usize,
    pub create_count: usize,
    pub rename_count: usize,
    pub fio_runtime_s: f64,
    pub warm_min: usize,
    pub warm_max: usize,
    /// Stop warm repetitions once the median moves less than this (relative).
    pub warm_tolerance: f64,
    pub update_timeout_s: f64,
}

pub struct Ctx<'a> {
    pub info: &'a ImageInfo,
    pub params: &'a Params,
}

type RunFn = fn(&View, &Ctx, usize) -> Result<f64, String>;

pub struct Workload {
    pub id: &'static str,
    pub title: &'static str,
    pub unit: Unit,
    pub run: RunFn,
    /// Warm samples taken with every mode mounted at once, in rotating rounds
    /// (`rounds.rs`). Not for the image update, which changes the image under every mode.
    pub interleave: bool,
}

pub const ALL: &[Workload] = &[
    Workload {
        id: "stat",
        title: "stat walk",
        unit: Unit::OpsPerSec,
        run: stat_walk,
        interleave: true,
    },
    Workload {
        id: "readdir",
        title: "readdir walk",
        unit: Unit::OpsPerSec,
        run: readdir_walk,
        interleave: true,
    },
    Workload {
        id: "small-read",
        title: "small-file open+read",
        unit: Unit::OpsPerSec,
        run: small_read,
        interleave: true,
    },
    Workload {
        id: "seq-read",
        title: "big file sequential read",
        unit: Unit::MibPerSec,
        run: seq_read,
        interleave: true,
    },
    Workload {
        id: "rand-read",
        title: "4 KiB random read (fio)",
        unit: Unit::OpsPerSec,
        run: rand_read,
        interleave: true,
    },
    Workload {
        id: "exec",
        title: "exec from the image",
        unit: Unit::OpsPerSec,
        run: exec,
        interleave: true,
    },
    Workload {
        id: "create",
        title: "create+write+fsync",
        unit: Unit::OpsPerSec,
        run: create_fsync,
        interleave: true,
    },
    Workload {
        id: "rename",
        title: "rename-replace (sed -i)",
        unit: Unit::OpsPerSec,
        run: rename_replace,
        interleave: true,
    },
    Workload {
        id: "update",
        title: "read after image update",
        unit: Unit::Ms,
        run: image_update,
        interleave: false,
    },
];

fn e2s<E: std::fmt::Display>(what: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64().max(1e-9)
}

/// lstat of every entry below usr/ (by full path, as `find -ls` / `ls -lR` would).
fn stat_walk(v: &View, c: &Ctx, _rep: usize) -> Result<f64, String> {
    let paths: Vec<_> = c.info.usr_entries.iter().map(|r| v.p(r)).collect();
    let t0 = Instant::now();
    for p in &paths {
        fs::symlink_metadata(p).map_err(e2s(p))?;
    }
    Ok(rate(paths.len(), t0.elapsed()))
}

/// Recursive readdir of usr/ using d_type only (no stat): entries per second.
fn readdir_walk(v: &View, c: &Ctx, _rep: usize) -> Result<f64, String> {
    fn walk(dir: &Path, n: &mut usize) -> Result<(), String> {
        for e in fs::read_dir(dir).map_err(e2s(dir))? {
            let e = e.map_err(e2s(dir))?;
            *n += 1;
            if e.file_type().map_err(e2s(dir))?.is_dir() {
                walk(&e.path(), n)?;
            }
        }
        Ok(())
    }
    let mut n = 0;
    let t0 = Instant::now();
    walk(&v.p("usr"), &mut n)?;
    let t = t0.elapsed();
    let want = c.info.usr_entries.len();
    if n != want {
        return Err(format!(
            "readdir walk saw {n} entries, the image has {want}"
        ));
    }
    Ok(rate(n, t))
}

/// open + read whole + close of every file up to 16 KiB.
fn small_read(v: &View, c: &Ctx, _rep: usize) -> Result<f64, String> {
    let paths: Vec<_> = c.info.small_files.iter().map(|r| v.p(r)).collect();
    let mut buf = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    for p in &paths {
        let mut f = fs::File::open(p).map_err(e2s(p))?;
        while f.read(&mut buf).map_err(e2s(p))? > 0 {}
    }
    Ok(rate(paths.len(), t0.elapsed()))
}

fn seq_read(v: &View, c: &Ctx, _rep: usize) -> Result<f64, String> {
    let p = v.p(&c.info.big);
    let mut buf = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    let mut f = fs::File::open(&p).map_err(e2s(&p))?;
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(e2s(&p))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let t = t0.elapsed();
    if total != c.info.big_size {
        return Err(format!("read {total} bytes of {}", c.info.big_size));
    }
    Ok(total as f64 / (1 << 20) as f64 / t.as_secs_f64())
}

/// fio: 4 KiB random reads over the big file, psync, one job, time-based, the page cache
/// kept (`--invalidate=0`), `--readonly`. Warm repetitions first read the whole file
/// through the mount, so warm means every read is a cache hit in every mode. (Without that,
/// warm measured how much of the file earlier repetitions happened to bring in: fio's
/// fixed seed replays the same offsets, and a mode that reads around misses, or reads
/// faster, got ahead; run 5's 4x and 12x "wins" were that.)
fn rand_read(v: &View, c: &Ctx, rep: usize) -> Result<f64, String> {
    let p = v.p(&c.info.big);
    if rep > 0 {
        let mut f = fs::File::open(&p).map_err(e2s(&p))?;
        std::io::copy(&mut f, &mut std::io::sink()).map_err(e2s(&p))?;
    }
    let out = Command::new("fio")
        .args([
            "--name=randread",
            "--rw=randread",
            "--bs=4k",
            "--ioengine=psync",
            "--numjobs=1",
            "--invalidate=0",
            "--readonly",
            "--time_based",
            "--norandommap",
            "--randrepeat=1",
            "--output-format=json",
        ])
        .arg(format!(
            "--runtime={}ms",
            (c.params.fio_runtime_s * 1000.0) as u64
        ))
        .arg(format!("--size={}", c.info.big_size))
        .arg(format!("--filename={}", p.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("fio: {e} (apt-get install -y fio)"))?;
    if !out.status.success() {
        return Err(format!(
            "fio: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON.
    let json = text.find('{').map(|i| &text[i..]).unwrap_or(&text);
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("fio json: {e}"))?;
    v["jobs"][0]["read"]["iops"]
        .as_f64()
        .ok_or_else(|| "fio: no read.iops".to_string())
}

/// fork+exec+wait of a small ELF binary that lives in the image.
fn exec(v: &View, c: &Ctx, _rep: usize) -> Result<f64, String> {
    let p = v.p(&c.info.exec_bin);
    let n = c.params.exec_count;
    let t0 = Instant::now();
    for _ in 0..n {
        let st = Command::new(&p)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(e2s(&p))?;
        if !st.success() {
            return Err(format!("{}: {st}", p.display()));
        }
    }
    Ok(rate(n, t0.elapsed()))
}

/// Create + write 4 KiB + fsync + close of new files in a writable directory. The files are
/// removed afterwards (not timed).
fn create_fsync(v: &View, c: &Ctx, rep: usize) -> Result<f64, String> {
    let dir = v.p(image::CREATE_DIR);
    let n = c.params.create_count;
    let data = vec![0x5au8; 4096];
    let names: Vec<_> = (0..n)
        .map(|i| dir.join(format!("bench-{rep}-{i}")))
        .collect();
    let t0 = Instant::now();
    for p in &names {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .map_err(e2s(p))?;
        f.write_all(&data).map_err(e2s(p))?;
        f.sync_all().map_err(e2s(p))?;
    }
    let t = t0.elapsed();
    for p in &names {
        fs::remove_file(p).map_err(e2s(p))?;
    }
    Ok(rate(n, t))
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// What `sed -i s/value/VALUE/ FILE` does: read FILE, write a temporary in the same
/// directory (O_EXCL), copy the mode, close, rename it over FILE. Cycles over files that
/// came from the image.
fn rename_replace(v: &View, c: &Ctx, rep: usize) -> Result<f64, String> {
    let dir = v.p(image::RENAME_DIR);
    let n = c.params.rename_count;
    let t0 = Instant::now();
    for i in 0..n {
        let target = dir.join(format!("conf-{:03}", i % image::RENAME_FILES));
        let text = fs::read_to_string(&target).map_err(e2s(&target))?;
        let mode = fs::metadata(&target).map_err(e2s(&target))?.mode();
        let new = text.replacen("value", &format!("v{rep}"), 1);
        let tmp = dir.join(format!("sed{:06}", SEQ.fetch_add(1, Ordering::Relaxed)));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(e2s(&tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(e2s(&tmp))?;
        f.write_all(new.as_bytes()).map_err(e2s(&tmp))?;
        drop(f);
        fs::rename(&tmp, &target).map_err(e2s(&target))?;
    }
    Ok(rate(n, t0.elapsed()))
}

fn replace_file(path: &Path, content: &str) -> Result<(), String> {
    let tmp = path.with_extension("bench-tmp");
    fs::write(&tmp, content).map_err(e2s(&tmp))?;
    fs::rename(&tmp, path).map_err(e2s(path))
}

static GEN: AtomicU64 = AtomicU64::new(1);

/// The admin updates a read-only file in the image (write + rename, as rsync and package
/// managers do) and bumps the generation (what `statelite imgupdate` does); measured: time
/// until a reader of the served file sees the new content (re-reading every 1 ms).
fn image_update(v: &View, c: &Ctx, _rep: usize) -> Result<f64, String> {
    let served = v.p(image::UPDATE_FILE);
    // The reader has the old version cached.
    for _ in 0..3 {
        fs::read_to_string(&served).map_err(e2s(&served))?;
    }
    let g = GEN.fetch_add(1, Ordering::Relaxed) + 1;
    let content = format!("generation {g}\n");
    replace_file(&v.backing.join(image::UPDATE_FILE), &content)?;
    replace_file(&v.backing.join(image::GENERATION), &format!("{g}\n"))?;
    let t0 = Instant::now();
    let timeout = Duration::from_secs_f64(c.params.update_timeout_s);
    loop {
        if fs::read_to_string(&served).map_err(e2s(&served))? == content {
            return Ok(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if t0.elapsed() > timeout {
            return Err(format!("still stale after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

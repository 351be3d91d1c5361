//! `statelite-bench`: FUSE mode against symlink mode (the baseline), kernel overlayfs (the
//! limit), fuse-overlayfs and mergerfs (peers), on one synthetic `/usr`-shaped image.
//!
//! Run (as root; see benches/README.md):
//!   cargo run --release -p statelite-benches --bin statelite-bench -- --quick
//!   cargo run --release -p statelite-benches --bin statelite-bench            # full
//!
//! Results are printed (a table of rates and of ratios to symlink mode and to the native
//! tree), written as JSON and drawn as an SVG chart. Nothing is asserted.

mod guard;
mod image;
mod modes;
mod report;
mod rounds;
mod workloads;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use modes::{Env, Mode};
use rounds::WarmSeries;
use workloads::{Ctx, Params, Unit, Workload};

const REDHAT_LITEFILE: &str = include_str!("../../../tests/fixtures/litefile-redhat.csv");

#[derive(Parser, Debug)]
#[command(
    name = "statelite-bench",
    about = "statelite benchmark harness (needs root)"
)]
struct Args {
    /// Small image (10,000 files, 256 MiB big file), fewer repetitions: under 5 minutes.
    #[arg(long)]
    quick: bool,
    /// Work directory (image, liteimg'd copy, mount points). Removed afterwards unless --keep.
    #[arg(long, default_value = "/var/tmp/statelite-bench")]
    workdir: PathBuf,
    /// Keep the work directory (and reuse a matching image next time).
    #[arg(long)]
    keep: bool,
    /// Where the JSON and SVG go.
    #[arg(long, default_value = "target/statelite-bench")]
    out: PathBuf,
    /// Synthetic files in the image (default 10,000 quick, 52,000 full).
    #[arg(long)]
    files: Option<usize>,
    /// Size of the big file in MiB (default 256 quick, 1024 full).
    #[arg(long)]
    big_mib: Option<u64>,
    /// Modes, comma-separated: native,symlink,fuse,overlayfs,fuse-overlayfs,mergerfs
    /// (also: fuse-nopt = FUSE mode with --no-passthrough, fuse-noopen = FUSE mode with STATELITE_NO_OPEN=1, fuse-dev = FUSE mode with --no-uring, fuse-base = FUSE mode by the --base-mountd binary).
    #[arg(
        long,
        default_value = "native,symlink,fuse,overlayfs,fuse-overlayfs,mergerfs"
    )]
    modes: String,
    /// Workloads, comma-separated: stat,readdir,small-read,seq-read,rand-read,exec,create,
    /// rename,update,mount (default: all).
    #[arg(long)]
    workloads: Option<String>,
    /// FUSE mode image-generation check interval (s).
    #[arg(long, default_value_t = 0.1)]
    generation_interval: f64,
    /// Use the statelite-mountd and statelite binaries already in target/release instead of
    /// building them first.
    #[arg(long)]
    no_build: bool,
    /// FUSE mode request threads (default: statelite-mountd's own default).
    #[arg(long)]
    fuse_threads: Option<usize>,
    /// Set a FUSE module parameter for the run, NAME=VALUE (repeatable), e.g. `wake_here=Y`
    /// on a kernel that has it; written back afterwards. It applies to every FUSE mode and
    /// peer alike. The values in force are recorded in the JSON and the header.
    #[arg(long, value_name = "NAME=VALUE")]
    fuse_param: Vec<String>,
    /// The statelite-mountd binary of mode `fuse-base`: another build (say, of the commit
    /// before a change), measured beside `fuse` in the same run.
    #[arg(long, value_name = "PATH")]
    base_mountd: Option<PathBuf>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Measurement {
    pub workload: String,
    pub title: String,
    /// "cold" or "warm" (mount-to-ready: "redhat" / "2000").
    pub variant: String,
    pub mode: Mode,
    pub unit: Unit,
    /// Cold: the one sample; warm: the median of the samples.
    pub value: Option<f64>,
    pub samples: Vec<f64>,
    pub error: Option<String>,
}

#[derive(Serialize)]
struct Meta {
    quick: bool,
    kernel: String,
    /// The FUSE module's parameters (`/sys/module/fuse/parameters`): they change what a
    /// round trip costs (`enable_uring` decides whether FUSE mode can use its io_uring
    /// transport; this kernel's non-upstream `wake_here` halves the `/dev/fuse` wake-up
    /// cost for fuse-dev and the FUSE peers), so a run records them.
    fuse_module_params: std::collections::BTreeMap<String, String>,
    cpus: usize,
    mem_gib: f64,
    files: usize,
    dirs: usize,
    image_bytes: u64,
    small_files: usize,
    big_file_bytes: u64,
    elf_binaries: Vec<String>,
    versions: std::collections::BTreeMap<String, String>,
    mergerfs_options: &'static str,
    fuse_overlayfs_options: &'static str,
    overlayfs_options: &'static str,
    fuse_generation_interval_s: f64,
    fuse_threads: Option<usize>,
    statelite_commit: String,
    params: Params,
    litefile_entries: usize,
    many_litefile_entries: usize,
    elapsed_s: f64,
    /// 1-minute load average at the start and the end (other work on the machine skews
    /// results; the harness itself keeps about one core busy).
    loadavg_start: String,
    loadavg_end: String,
    image_unchanged: Option<bool>,
    image_changed_paths: Vec<String>,
}

#[derive(Serialize)]
struct Output {
    meta: Meta,
    results: Vec<Measurement>,
    /// FUSE mode's control-socket stats per workload, cumulative over each mount: `cold`
    /// (the cold pass's mount) and `warm` (the interleaved rounds' mount), or `cold+warm`
    /// where one mount served both (the image update).
    fuse_stats: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One workload's rows (a cold and a warm one per mode, in the order of the modes) and FUSE
/// mode's request statistics per mount.
struct WorkloadResult {
    rows: Vec<Measurement>,
    fuse_stats: serde_json::Map<String, serde_json::Value>,
}

fn empty_rows(w: &Workload, mode: Mode) -> (Measurement, Measurement) {
    let cold = Measurement {
        workload: w.id.into(),
        title: w.title.into(),
        variant: "cold".into(),
        mode,
        unit: w.unit,
        value: None,
        samples: vec![],
        error: None,
    };
    let warm = Measurement {
        variant: "warm".into(),
        ..cold.clone()
    };
    (cold, warm)
}

fn mount_or_note(env: &Env, mode: Mode, row: &mut Measurement) -> Option<modes::View> {
    match modes::mount(env, mode, None, None) {
        Ok(v) => Some(v),
        Err(e) => {
            // Tear down whatever half-mounted.
            let _ = guard::unmount(&env.mnt_base.join(mode.name()), None);
            row.error = Some(format!("mount: {e}"));
            None
        }
    }
}

/// The cold sample: a fresh mount, page/dentry/inode caches dropped, one run.
fn run_cold(w: &Workload, view: &modes::View, ctx: &Ctx, cold: &mut Measurement) {
    modes::drop_caches();
    match (w.run)(view, ctx, 0) {
        Ok(x) => {
            cold.value = Some(x);
            cold.samples.push(x);
        }
        Err(e) => cold.error = Some(e),
    }
}

/// The warm row of a mode from its series: the median, every sample, and the error if the
/// series ended in one.
fn fill_warm_row(warm: &mut Measurement, s: WarmSeries) {
    warm.value = s.value();
    warm.samples = s.samples;
    warm.error = s.error;
}

fn show(m: &Measurement) -> String {
    match (&m.value, &m.error) {
        (Some(v), _) => format!("{} {}", report::fmt_val(*v), m.unit.label()),
        (None, Some(e)) => format!("error: {e}"),
        _ => "-".into(),
    }
}

fn collect_fuse_stats(
    view: &modes::View,
    key: &str,
    into: &mut serde_json::Map<String, serde_json::Value>,
) {
    if view.mode == Mode::Fuse
        && let Some(s) = modes::fuse_stats(view)
    {
        into.insert(key.into(), s);
    }
}

/// Cold, one mode after the other; then warm with every mode mounted at once, sampled in
/// rotating rounds (`rounds.rs`: why).
fn measure_interleaved(
    env: &Env,
    ctx: &Ctx,
    w: &Workload,
    modes_list: &[Mode],
) -> Result<WorkloadResult, String> {
    let mut rows: Vec<(Measurement, Measurement)> =
        modes_list.iter().map(|&m| empty_rows(w, m)).collect();
    let mut stats = serde_json::Map::new();
    for (cold, _) in rows.iter_mut() {
        progress(&format!(
            "{}, cold, on {} (load {})",
            w.title,
            cold.mode.name(),
            loadavg()
        ));
        let Some(view) = mount_or_note(env, cold.mode, cold) else {
            continue;
        };
        run_cold(w, &view, ctx, cold);
        collect_fuse_stats(&view, "cold", &mut stats);
        modes::unmount(view).map_err(|e| format!("unmount {}: {e}", cold.mode.name()))?;
    }

    progress(&format!(
        "{}, warm, every mode mounted, in rotating rounds (load {})",
        w.title,
        loadavg()
    ));
    let mut views: Vec<(usize, modes::View)> = Vec::new();
    for (i, (cold, warm)) in rows.iter_mut().enumerate() {
        if cold.error.is_some() {
            warm.error = Some("cold run failed".into());
        } else if let Some(v) = mount_or_note(env, cold.mode, warm) {
            views.push((i, v));
        }
    }
    let mut series: Vec<WarmSeries> = views.iter().map(|_| WarmSeries::default()).collect();
    // One unrecorded pass per mode first. It brings the new mount's kernel caches and a
    // daemon's inode table to where the cold pass left the first mount, so that the first
    // sample is as warm as the rest.
    for ((_, view), s) in views.iter().zip(series.iter_mut()) {
        if let Err(e) = (w.run)(view, ctx, 1) {
            s.fail(e);
        }
    }
    let mut round = 0;
    while !rounds::rounds_done(&series, ctx.params) {
        for k in rounds::round_order(views.len(), round) {
            if series[k].error.is_some() {
                continue;
            }
            match (w.run)(&views[k].1, ctx, round + 2) {
                Ok(x) => series[k].push(x, ctx.params),
                Err(e) => series[k].fail(e),
            }
        }
        round += 1;
    }
    let mut unmounted = Ok(());
    for ((i, view), s) in views.into_iter().zip(series) {
        fill_warm_row(&mut rows[i].1, s);
        collect_fuse_stats(&view, "warm", &mut stats);
        let name = view.mode.name();
        if let Err(e) = modes::unmount(view)
            && unmounted.is_ok()
        {
            unmounted = Err(format!("unmount {name}: {e}"));
        }
    }
    unmounted?;
    for (cold, warm) in &rows {
        progress(&format!(
            "  {}: cold {}   warm {} ({} samples)",
            cold.mode.name(),
            show(cold),
            show(warm),
            warm.samples.len()
        ));
    }
    Ok(WorkloadResult {
        rows: rows.into_iter().flat_map(|(c, w)| [c, w]).collect(),
        fuse_stats: stats,
    })
}

/// Cold and then warm on one mount, one mode after the other (the image update: it changes
/// the image under every mounted mode, so the modes cannot share a stretch of time).
fn measure_in_turn(
    env: &Env,
    ctx: &Ctx,
    w: &Workload,
    modes_list: &[Mode],
) -> Result<WorkloadResult, String> {
    let mut out = Vec::new();
    let mut stats = serde_json::Map::new();
    for &mode in modes_list {
        progress(&format!(
            "{} on {} (load {})",
            w.title,
            mode.name(),
            loadavg()
        ));
        let (mut cold, mut warm) = empty_rows(w, mode);
        if let Some(view) = mount_or_note(env, mode, &mut cold) {
            run_cold(w, &view, ctx, &mut cold);
            if cold.error.is_none() {
                let mut s = WarmSeries::default();
                let mut rep = 1;
                while !rounds::rounds_done(std::slice::from_ref(&s), ctx.params) {
                    match (w.run)(&view, ctx, rep) {
                        Ok(x) => s.push(x, ctx.params),
                        Err(e) => s.fail(e),
                    }
                    rep += 1;
                }
                fill_warm_row(&mut warm, s);
            } else {
                warm.error = Some("cold run failed".into());
            }
            collect_fuse_stats(&view, "cold+warm", &mut stats);
            modes::unmount(view).map_err(|e| format!("unmount {}: {e}", mode.name()))?;
        } else {
            warm.error = cold.error.clone();
        }
        progress(&format!(
            "  cold {}   warm {} ({} samples)",
            show(&cold),
            show(&warm),
            warm.samples.len()
        ));
        out.push(cold);
        out.push(warm);
    }
    Ok(WorkloadResult {
        rows: out,
        fuse_stats: stats,
    })
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let args = Args::parse();
    if !nix_is_root() {
        eprintln!("statelite-bench: needs root (mount, drop_caches)");
        std::process::exit(2);
    }
    guard::install_signal_handler();
    let _cleanup = guard::Cleanup;
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("statelite-bench: {e}");
            drop(_cleanup);
            std::process::exit(1);
        }
    }
}

const FUSE_PARAMS: &str = "/sys/module/fuse/parameters";

/// `NAME=VALUE`: the FUSE module parameter NAME set to VALUE until the harness exits.
fn set_fuse_param(spec: &str) -> Result<(), String> {
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| format!("--fuse-param {spec:?}: expected NAME=VALUE"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "--fuse-param {spec:?}: {name:?} is not a parameter name"
        ));
    }
    let path = Path::new(FUSE_PARAMS).join(name);
    if !path.exists() {
        return Err(format!(
            "--fuse-param {spec:?}: this kernel's FUSE module has no parameter {name} ({})",
            path.display()
        ));
    }
    guard::set_param(&path, value).map(|_| ())
}

fn fuse_module_params() -> std::collections::BTreeMap<String, String> {
    let dir = Path::new(FUSE_PARAMS);
    let Ok(entries) = fs::read_dir(dir) else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let value = fs::read_to_string(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                value.trim().to_string(),
            ))
        })
        .collect()
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn nix_is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn progress(msg: &str) {
    eprintln!("[{}] {msg}", chrono_now());
}

fn chrono_now() -> String {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let s = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    format!("{s:7.1}s")
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    for p in &args.fuse_param {
        set_fuse_param(p)?;
    }
    chrono_now();
    let load_start = loadavg();
    let quick = args.quick;
    let files = args.files.unwrap_or(if quick { 10_000 } else { 52_000 });
    let big_mib = args.big_mib.unwrap_or(if quick { 256 } else { 1024 });
    let params = Params {
        exec_count: if quick { 500 } else { 2000 },
        create_count: if quick { 500 } else { 2000 },
        rename_count: if quick { 500 } else { 2000 },
        fio_runtime_s: if quick { 0.75 } else { 3.0 },
        warm_min: 3,
        warm_max: if quick { 4 } else { 12 },
        warm_tolerance: 0.03,
        update_timeout_s: if quick { 2.0 } else { 5.0 },
    };
    let mut modes_list = Vec::new();
    for m in args.modes.split(',').filter(|s| !s.is_empty()) {
        let mode = Mode::parse(m.trim()).ok_or_else(|| format!("unknown mode {m}"))?;
        if mode == Mode::FuseBase && !args.base_mountd.as_ref().is_some_and(|p| p.is_file()) {
            return Err(format!(
                "mode fuse-base needs --base-mountd PATH, an executable statelite-mountd (given: {:?})",
                args.base_mountd
            ));
        }
        if let Err(e) = modes::available(mode) {
            eprintln!("statelite-bench: skipping {m}: {e}");
            continue;
        }
        modes_list.push(mode);
    }
    let wanted = |id: &str| {
        args.workloads
            .as_deref()
            .is_none_or(|w| w.split(',').any(|x| x.trim() == id))
    };

    // The binaries under test, current.
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !args.no_build {
        progress("building statelite-mountd and statelite (release)");
        run_cmd(Command::new(env!("CARGO")).current_dir(&ws).args([
            "build",
            "--release",
            "-q",
            "-p",
            "statelite-mountd",
            "-p",
            "statelite-tools",
            "--bins",
        ]))?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
        .join("release");
    let mountd = target.join("statelite-mountd");
    let statelite = target.join("statelite");

    // Work directory.
    let work = args.workdir.clone();
    if work.exists() && !guard::mounts_below(&work).is_empty() {
        return Err(format!(
            "{} has mounts below it; unmount them first",
            work.display()
        ));
    }
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let work = fs::canonicalize(&work).map_err(|e| e.to_string())?;
    if !args.keep {
        guard::register_dir(&work);
    }
    let image = work.join("image");
    let stamp = work.join("image.stamp");
    let want_stamp = format!("v3 files={files} big={big_mib}\n");
    let reuse = image.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(&want_stamp);
    for d in [
        "lite",
        "lite-many",
        "tables",
        "tables-many",
        "mnt",
        "tmpfs",
        "image-ro",
    ] {
        let p = work.join(d);
        if p.exists() {
            fs::remove_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    if !reuse {
        let _ = fs::remove_dir_all(&image);
        let _ = fs::remove_file(&stamp);
        progress(&format!(
            "building the image: {files} files + {big_mib} MiB big file"
        ));
        image::build(&image, files, big_mib << 20, REDHAT_LITEFILE)
            .map_err(|e| format!("build image: {e}"))?;
        fs::write(&stamp, &want_stamp).map_err(|e| e.to_string())?;
    } else {
        progress("reusing the image from a previous --keep run");
        // Put the update file back to its first version.
        fs::write(image.join(image::UPDATE_FILE), "generation 1\n").map_err(|e| e.to_string())?;
        fs::write(image.join(image::GENERATION), "1\n").map_err(|e| e.to_string())?;
    }
    let info = image::scan(&image).map_err(|e| format!("scan image: {e}"))?;
    // Read everything once: "cold" below means the guest's caches are dropped; the VM host
    // may still cache the disk, and this makes that the same for every mode (otherwise the
    // first mode measured pays for the host's cold cache alone).
    progress("priming the host-side disk cache (one read of the whole image)");
    image::prime(&image).map_err(|e| format!("prime: {e}"))?;
    let before = image::manifest(&image).map_err(|e| format!("manifest: {e}"))?;
    progress(&format!(
        "image: {} files, {} dirs, {:.0} MiB, {} small files",
        info.files,
        info.dirs,
        info.bytes as f64 / 1048576.0,
        info.small_files.len()
    ));

    // Litefiles and liteimg'd copies (hard links: liteimg only renames and creates).
    let many = image::many_litefile(REDHAT_LITEFILE, 2000);
    let tables = work.join("tables");
    let tables_many = work.join("tables-many");
    for (dir, text) in [(&tables, REDHAT_LITEFILE), (&tables_many, many.as_str())] {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        fs::write(dir.join("litefile.csv"), text).map_err(|e| e.to_string())?;
    }
    // FUSE mode's start-up work on the management node, as liteimg is symlink mode's:
    // each litefile's rules compiled into the table a mount loads instead of parsing.
    for dir in [&tables, &tables_many] {
        run_cmd(Command::new(&statelite).arg("--tables").arg(dir).args([
            "ilitefile",
            "",
            "--compile",
        ]))?;
    }
    let lite = work.join("lite");
    let lite_many = work.join("lite-many");
    let need_many = wanted("mount") && modes_list.contains(&Mode::Symlink);
    for (dst, tab, need) in [
        (&lite, &tables, true),
        (&lite_many, &tables_many, need_many),
    ] {
        if !need {
            continue;
        }
        progress(&format!("liteimg {}", dst.display()));
        run_cmd(Command::new("cp").arg("-al").arg(&image).arg(dst))?;
        run_cmd(
            Command::new(&statelite)
                .arg("--tables")
                .arg(tab)
                .args(["liteimg", "bench", "--rootimg"])
                .arg(dst),
        )?;
    }

    // A tmpfs for every writable store; a read-only bind of the image for the peers.
    let tmpfs = work.join("tmpfs");
    fs::create_dir_all(&tmpfs).map_err(|e| e.to_string())?;
    guard::register_mount(&tmpfs, None);
    run_cmd(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g,mode=0755", "bench-tmpfs"])
            .arg(&tmpfs),
    )?;
    let image_ro = work.join("image-ro");
    fs::create_dir_all(&image_ro).map_err(|e| e.to_string())?;
    guard::register_mount(&image_ro, None);
    run_cmd(
        Command::new("mount")
            .arg("--bind")
            .arg(&image)
            .arg(&image_ro),
    )?;
    run_cmd(
        Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&image_ro),
    )?;
    let env = Env {
        work: work.clone(),
        image: image.clone(),
        image_ro,
        lite: lite.clone(),
        tmpfs: tmpfs.clone(),
        mnt_base: work.join("mnt"),
        mountd: mountd.clone(),
        base_mountd: args.base_mountd.clone(),
        litefile: tables.join("litefile.csv"),
        gen_interval: args.generation_interval,
        fuse_threads: args.fuse_threads,
    };
    let _ = &env.work;

    let ctx = Ctx {
        info: &info,
        params: &params,
    };
    let mut results: Vec<Measurement> = Vec::new();
    let mut fuse_stats = std::collections::BTreeMap::new();

    for w in workloads::ALL {
        if !wanted(w.id) {
            continue;
        }
        let measured = if w.interleave {
            measure_interleaved(&env, &ctx, w, &modes_list)?
        } else {
            measure_in_turn(&env, &ctx, w, &modes_list)?
        };
        results.extend(measured.rows);
        if !measured.fuse_stats.is_empty() {
            fuse_stats.insert(
                w.id.to_string(),
                serde_json::Value::Object(measured.fuse_stats),
            );
        }
    }

    if wanted("mount") {
        // The two litefiles alternate, mount after mount, so that both see the same machine
        // (on this VM kind a mount's time drifts by a millisecond over a minute, more than
        // the difference measured); the first mount of each is cold. 61 each in the full
        // run: with 31, three runs in a row on one build gave FUSE mode 1.00x, 1.17x and
        // 1.02x (the samples of one litefile spread over 2x).
        let reps = if quick { 11 } else { 61 };
        let variants = [
            ("redhat", tables.join("litefile.csv"), lite.clone()),
            ("2000", tables_many.join("litefile.csv"), lite_many.clone()),
        ];
        let mut by_variant: [Vec<Measurement>; 2] = [Vec::new(), Vec::new()];
        for &mode in &modes_list {
            if mode == Mode::Native {
                continue;
            }
            progress(&format!(
                "mount-to-ready (RedHat and 2,000-entry litefiles in turn) on {}",
                mode.name()
            ));
            let mut ms: Vec<Measurement> = variants
                .iter()
                .map(|(variant, _, _)| Measurement {
                    workload: "mount".into(),
                    title: "mount-to-ready".into(),
                    variant: (*variant).into(),
                    mode,
                    unit: Unit::Ms,
                    value: None,
                    samples: vec![],
                    error: None,
                })
                .collect();
            'rounds: for i in 0..reps {
                for ((_, lf, lt), m) in variants.iter().zip(ms.iter_mut()) {
                    if m.error.is_some() {
                        continue;
                    }
                    if i == 0 {
                        modes::drop_caches();
                    }
                    match modes::mount(&env, mode, Some(lf), Some(lt)) {
                        Ok(v) => {
                            m.samples.push(v.ready.as_secs_f64() * 1000.0);
                            modes::unmount(v)?;
                        }
                        Err(e) => {
                            let _ = guard::unmount(&env.mnt_base.join(mode.name()), Some(&mountd));
                            m.error = Some(e);
                        }
                    }
                }
                if ms.iter().all(|m| m.error.is_some()) {
                    break 'rounds;
                }
            }
            for (mut m, list) in ms.into_iter().zip(by_variant.iter_mut()) {
                if !m.samples.is_empty() {
                    m.value = Some(median(&m.samples));
                }
                progress(&format!(
                    "  {}: {:?} ms",
                    m.variant,
                    m.samples
                        .iter()
                        .map(|x| (x * 10.0).round() / 10.0)
                        .collect::<Vec<_>>()
                ));
                list.push(m);
            }
        }
        for list in by_variant {
            results.extend(list);
        }
    }

    // The image must be as it was (apart from what the update workload changed on purpose).
    let after = image::manifest(&image).map_err(|e| format!("manifest: {e}"))?;
    let unchanged = before == after;
    let mut changed_paths = Vec::new();
    if !unchanged {
        let diff: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(after.keys().filter(|k| !before.contains_key(*k)).cloned())
            .take(20)
            .collect();
        changed_paths = diff.clone();
        eprintln!("statelite-bench: WARNING: the image changed during the run: {diff:?}");
    }

    let mut versions = std::collections::BTreeMap::new();
    for p in ["fuse-overlayfs", "mergerfs", "fio", "fuse3", "linux-perf"] {
        versions.insert(p.to_string(), modes::version_of(p));
    }
    let commit = sh(
        "git",
        &["-C", &ws.to_string_lossy(), "rev-parse", "--short", "HEAD"],
    );
    let mem_kb: f64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|x| x.parse().ok())
        })
        .unwrap_or(0.0);
    let meta = Meta {
        quick,
        kernel: sh("uname", &["-r"]),
        fuse_module_params: fuse_module_params(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem_gib: mem_kb / 1048576.0,
        files: info.files,
        dirs: info.dirs,
        image_bytes: info.bytes,
        small_files: info.small_files.len(),
        big_file_bytes: info.big_size,
        elf_binaries: info.elf_copied.clone(),
        versions,
        mergerfs_options: modes::MERGERFS_OPTS,
        fuse_overlayfs_options: "lowerdir=RO-bind-of-image,upperdir=tmpfs,workdir=tmpfs",
        overlayfs_options: "lowerdir=RO-bind-of-image,upperdir=tmpfs,workdir=tmpfs",
        fuse_generation_interval_s: args.generation_interval,
        fuse_threads: args.fuse_threads,
        statelite_commit: commit,
        params: params.clone(),
        litefile_entries: REDHAT_LITEFILE
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count(),
        many_litefile_entries: many
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count(),
        elapsed_s: started.elapsed().as_secs_f64(),
        loadavg_start: load_start.clone(),
        loadavg_end: loadavg(),
        image_unchanged: Some(unchanged),
        image_changed_paths: changed_paths,
    };
    let output = Output {
        meta,
        results,
        fuse_stats,
    };

    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let tag = if quick { "quick" } else { "full" };
    let json_path = args.out.join(format!("statelite-bench-{tag}.json"));
    let svg_path = args.out.join(format!("statelite-bench-{tag}.svg"));
    let md_path = args.out.join(format!("statelite-bench-{tag}.md"));
    fs::write(
        &json_path,
        serde_json::to_string_pretty(&output).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    let text = report::tables(&output.results, &modes_list);
    let header = report::header(&output.meta_summary());
    fs::write(&md_path, format!("{header}\n{text}")).map_err(|e| e.to_string())?;
    println!("{header}\n{text}");
    if let Err(e) = report::chart(&output.results, &modes_list, &svg_path, tag) {
        eprintln!("statelite-bench: chart: {e}");
    }
    println!(
        "JSON: {}\nchart: {}\nmarkdown: {}",
        json_path.display(),
        svg_path.display(),
        md_path.display()
    );
    if !unchanged {
        return Err("the image changed during the run (see above)".into());
    }
    Ok(())
}

impl Output {
    fn meta_summary(&self) -> String {
        let m = &self.meta;
        format!(
            "statelite-bench {} run: kernel {} (fuse {}), {} CPUs, {:.0} GiB; image {} files / {} dirs / {:.0} MiB + {} MiB big file; \
             fuse-overlayfs {}, mergerfs {}, fio {}; statelite {}; {:.0} s; load {} -> {}; image unchanged: {}",
            if m.quick { "--quick" } else { "full" },
            m.kernel,
            m.fuse_module_params
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "enable_uring" | "wake_here"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            m.cpus,
            m.mem_gib,
            m.files,
            m.dirs,
            (m.image_bytes - m.big_file_bytes) as f64 / 1048576.0,
            m.big_file_bytes >> 20,
            m.versions
                .get("fuse-overlayfs")
                .map(String::as_str)
                .unwrap_or("?"),
            m.versions
                .get("mergerfs")
                .map(String::as_str)
                .unwrap_or("?"),
            m.versions.get("fio").map(String::as_str).unwrap_or("?"),
            m.statelite_commit,
            m.elapsed_s,
            m.loadavg_start,
            m.loadavg_end,
            m.image_unchanged
                .map(|b| if b { "yes" } else { "NO" })
                .unwrap_or("?"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_params_are_checked_before_anything_is_written() {
        let e = set_fuse_param("wake_here").unwrap_err();
        assert!(e.contains("NAME=VALUE"), "{e}");
        let e = set_fuse_param("../../kernel/x=1").unwrap_err();
        assert!(e.contains("not a parameter name"), "{e}");
        let e = set_fuse_param("no_such_parameter_here=1").unwrap_err();
        assert!(e.contains("has no parameter"), "{e}");
    }
}

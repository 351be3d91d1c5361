//! The ways the image is served: the native tree (no mount; reference), symlink mode (the
//! baseline), FUSE mode, and the peers: kernel overlayfs, fuse-overlayfs, mergerfs.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::guard::{self, Token};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Native,
    Symlink,
    Fuse,
    /// FUSE mode with `--no-passthrough` (diagnostic; only with `--modes`).
    FuseNopt,
    /// FUSE mode in no-open mode (`STATELITE_NO_OPEN=1`: no OPEN/RELEASE/FLUSH round
    /// trips, page cache only, no passthrough; only with `--modes`).
    FuseNoopen,
    /// FUSE mode over `/dev/fuse` (`--no-uring`), where the kernel has FUSE over io_uring
    /// (only with `--modes`).
    FuseDev,
    /// FUSE mode served by another `statelite-mountd` build (`--base-mountd`), e.g. of the
    /// commit before a change: the change's effect measured in the same run, interleaved
    /// (only with `--modes`).
    FuseBase,
    Overlayfs,
    FuseOverlayfs,
    Mergerfs,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Symlink => "symlink",
            Mode::Fuse => "fuse",
            Mode::FuseNopt => "fuse-nopt",
            Mode::FuseNoopen => "fuse-noopen",
            Mode::FuseDev => "fuse-dev",
            Mode::FuseBase => "fuse-base",
            Mode::Overlayfs => "overlayfs",
            Mode::FuseOverlayfs => "fuse-overlayfs",
            Mode::Mergerfs => "mergerfs",
        }
    }
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "native" => Mode::Native,
            "symlink" => Mode::Symlink,
            "fuse" => Mode::Fuse,
            "fuse-nopt" => Mode::FuseNopt,
            "fuse-noopen" => Mode::FuseNoopen,
            "fuse-dev" => Mode::FuseDev,
            "fuse-base" => Mode::FuseBase,
            "overlayfs" => Mode::Overlayfs,
            "fuse-overlayfs" => Mode::FuseOverlayfs,
            "mergerfs" => Mode::Mergerfs,
            _ => return None,
        })
    }
    pub fn is_statelite_fuse(self) -> bool {
        matches!(
            self,
            Mode::Fuse | Mode::FuseNopt | Mode::FuseNoopen | Mode::FuseDev | Mode::FuseBase
        )
    }
}

/// Fixed paths of one run.
#[derive(Debug, Clone)]
pub struct Env {
    pub work: PathBuf,
    /// The pristine image (FUSE mode serves it; never written except by the update workload,
    /// as an admin would).
    pub image: PathBuf,
    /// Read-only bind mount of the image: the peers' lower layer / read-only branch (so no
    /// peer can write the image whatever it does).
    pub image_ro: PathBuf,
    /// `liteimg`'d copy of the image (symlink mode), hard-linked from the pristine one.
    pub lite: PathBuf,
    /// A tmpfs for every writable store (FUSE volatile, overlay uppers, mergerfs branch,
    /// the native tree's writable dirs).
    pub tmpfs: PathBuf,
    pub mnt_base: PathBuf,
    pub mountd: PathBuf,
    /// The `statelite-mountd` of mode `fuse-base` (`--base-mountd`).
    pub base_mountd: Option<PathBuf>,
    pub litefile: PathBuf,
    pub gen_interval: f64,
    pub fuse_threads: Option<usize>,
}

/// One mounted (or native) view of the image.
#[allow(dead_code)]
pub struct View {
    pub mode: Mode,
    /// Where the root of the served tree is.
    pub root: PathBuf,
    /// For the native tree: where the writable directories live instead.
    pub native_rw: Option<PathBuf>,
    /// The directory the image-update workload modifies for this mode.
    pub backing: PathBuf,
    pub control: Option<PathBuf>,
    pub mount_token: Option<Token>,
    pub proc_token: Option<Token>,
    pub scratch: Option<PathBuf>,
    /// Time from starting the mount to the tree being ready.
    pub ready: Duration,
}

impl View {
    /// A path in this view (native: writable dirs redirected to their tmpfs copy).
    pub fn p(&self, rel: &str) -> PathBuf {
        if let Some(rw) = &self.native_rw {
            for d in [crate::image::CREATE_DIR, crate::image::RENAME_DIR] {
                if rel == d || rel.starts_with(&format!("{d}/")) {
                    return rw.join(rel);
                }
            }
        }
        self.root.join(rel)
    }
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fresh_dir(base: &Path, what: &str) -> std::io::Result<PathBuf> {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = base.join(format!("{what}-{n}"));
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn wait_mounted(mp: &Path, proc_tok: Option<Token>, timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        if guard::is_mounted(mp) && fs::metadata(mp).is_ok() {
            return Ok(());
        }
        if let Some(t) = proc_tok
            && let Some(st) = guard::proc_exited(t)
        {
            return Err(format!("daemon exited before mounting: {st}"));
        }
        if t0.elapsed() > timeout {
            return Err(format!("{} not mounted after {timeout:?}", mp.display()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Starts a daemon in a session of its own, as on a node (statelite-mountd daemonises with
/// `setsid`; so do the peers without `-f`). The scheduler groups tasks by session
/// (autogroup), so a daemon left in the harness's session shared one CPU share with the
/// processes being measured: exec over the ring ran at 727 µs in the caller's session
/// against 665 µs in its own (native 634 µs). Terminal signals (Ctrl-C) still reach only the
/// harness, which stops the daemons by pid.
fn own_session(cmd: &mut Command) {
    // SAFETY: between fork and exec only setsid runs, which is async-signal-safe and
    // touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Mounts `mode` over the image. `litefile`/`lite` override the defaults (mount-to-ready
/// with the 2,000-entry litefile).
pub fn mount(
    env: &Env,
    mode: Mode,
    litefile: Option<&Path>,
    lite: Option<&Path>,
) -> Result<View, String> {
    let io = |e: std::io::Error| e.to_string();
    let litefile = litefile.unwrap_or(&env.litefile);
    let mut view = View {
        mode,
        root: PathBuf::new(),
        native_rw: None,
        backing: env.image.clone(),
        control: None,
        mount_token: None,
        proc_token: None,
        scratch: None,
        ready: Duration::ZERO,
    };
    if mode == Mode::Native {
        let rw = fresh_dir(&env.tmpfs, "native").map_err(io)?;
        for d in [crate::image::CREATE_DIR, crate::image::RENAME_DIR] {
            fs::create_dir_all(rw.join(d).parent().unwrap_or(&rw)).map_err(io)?;
            run(Command::new("cp")
                .arg("-a")
                .arg(env.image.join(d))
                .arg(rw.join(d)))?;
        }
        view.root = env.image.clone();
        view.native_rw = Some(rw.clone());
        view.scratch = Some(rw);
        return Ok(view);
    }
    let mp = env.mnt_base.join(mode.name());
    fs::create_dir_all(&mp).map_err(io)?;
    if guard::is_mounted(&mp) {
        return Err(format!("{} is already mounted", mp.display()));
    }
    let scratch = fresh_dir(&env.tmpfs, mode.name()).map_err(io)?;
    view.root = mp.clone();
    view.scratch = Some(scratch.clone());
    let t0 = Instant::now();
    match mode {
        Mode::Native => unreachable!(),
        Mode::Symlink => {
            let lite = lite.unwrap_or(&env.lite);
            view.backing = lite.to_path_buf();
            fs::create_dir_all(scratch.join("state")).map_err(io)?;
            fs::create_dir_all(scratch.join("vol")).map_err(io)?;
            // Registered before the command: a half-done setup is still torn down.
            view.mount_token = Some(guard::register_mount(&mp, Some(&env.mountd)));
            run(Command::new(&env.mountd)
                .args(["mount", "--mode", "symlink", "--image"])
                .arg(lite)
                .arg("--litefile")
                .arg(litefile)
                .arg("--volatile")
                .arg(scratch.join("vol"))
                .arg("--state")
                .arg(scratch.join("state"))
                .arg(&mp)
                .env("STATELITE_LOG", "warn"))?;
            view.ready = t0.elapsed();
        }
        Mode::Fuse | Mode::FuseNopt | Mode::FuseNoopen | Mode::FuseDev | Mode::FuseBase => {
            fs::create_dir_all(scratch.join("state")).map_err(io)?;
            fs::create_dir_all(scratch.join("vol")).map_err(io)?;
            let sock = scratch.join("control.sock");
            let mountd = match (mode, &env.base_mountd) {
                (Mode::FuseBase, Some(b)) => b,
                (Mode::FuseBase, None) => {
                    return Err("mode fuse-base needs --base-mountd PATH".into());
                }
                _ => &env.mountd,
            };
            let mut cmd = Command::new(mountd);
            cmd.args(["mount", "--foreground", "--image"])
                .arg(&env.image)
                .arg("--litefile")
                .arg(litefile)
                .arg("--volatile")
                .arg(scratch.join("vol"))
                .arg("--state")
                .arg(scratch.join("state"))
                .arg("--control")
                .arg(&sock)
                .arg("--generation-interval")
                .arg(env.gen_interval.to_string());
            if let Some(t) = env.fuse_threads {
                cmd.arg("--threads").arg(t.to_string());
            }
            if mode == Mode::FuseNopt {
                cmd.arg("--no-passthrough");
            }
            if mode == Mode::FuseDev {
                cmd.arg("--no-uring");
            }
            if mode == Mode::FuseNoopen {
                cmd.env("STATELITE_NO_OPEN", "1");
            }
            cmd.arg(&mp)
                .env("STATELITE_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            own_session(&mut cmd);
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("{}: {e}", mountd.display()))?;
            let stderr = child.stderr.take();
            view.mount_token = Some(guard::register_mount(&mp, Some(mountd)));
            let tok = guard::register_proc(child, "statelite-mountd");
            view.proc_token = Some(tok);
            // Ready = the daemon logs "statelite root mounted" (what the daemonising form
            // waits for before returning); its log goes on to a file.
            let (tx, rx) = mpsc::channel();
            let log = scratch.join("daemon.log");
            if let Some(stderr) = stderr {
                std::thread::spawn(move || {
                    let mut out = fs::File::create(&log).ok();
                    let mut sent = false;
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if !sent && line.contains("statelite root mounted") {
                            let _ = tx.send(());
                            sent = true;
                        }
                        if let Some(f) = out.as_mut() {
                            let _ = writeln!(f, "{line}");
                        }
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                        if let Some(st) = guard::proc_exited(tok) {
                            return Err(format!(
                                "statelite-mountd exited ({st}); log: {}",
                                fs::read_to_string(scratch.join("daemon.log")).unwrap_or_default()
                            ));
                        }
                    }
                    Err(_) => return Err("statelite-mountd: no ready line".into()),
                }
            }
            view.ready = t0.elapsed();
            wait_mounted(&mp, Some(tok), Duration::from_secs(10))?;
            view.control = Some(sock);
        }
        Mode::Overlayfs => {
            fs::create_dir_all(scratch.join("upper")).map_err(io)?;
            fs::create_dir_all(scratch.join("work")).map_err(io)?;
            view.mount_token = Some(guard::register_mount(&mp, None));
            run(Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    env.image_ro.display(),
                    scratch.join("upper").display(),
                    scratch.join("work").display()
                ))
                .arg(&mp))?;
            view.ready = t0.elapsed();
        }
        Mode::FuseOverlayfs | Mode::Mergerfs => {
            let mut cmd;
            if mode == Mode::FuseOverlayfs {
                fs::create_dir_all(scratch.join("upper")).map_err(io)?;
                fs::create_dir_all(scratch.join("work")).map_err(io)?;
                cmd = Command::new("fuse-overlayfs");
                cmd.arg("-f").arg("-o").arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    env.image_ro.display(),
                    scratch.join("upper").display(),
                    scratch.join("work").display()
                ));
            } else {
                fs::create_dir_all(scratch.join("branch")).map_err(io)?;
                cmd = Command::new("mergerfs");
                cmd.arg("-f").arg("-o").arg(MERGERFS_OPTS).arg(format!(
                    "{}=RW:{}=RO",
                    scratch.join("branch").display(),
                    env.image_ro.display()
                ));
            }
            cmd.arg(&mp)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    fs::File::create(scratch.join("daemon.log")).map_err(io)?,
                ));
            own_session(&mut cmd);
            let child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
            view.mount_token = Some(guard::register_mount(&mp, None));
            let tok = guard::register_proc(child, mode.name());
            view.proc_token = Some(tok);
            wait_mounted(&mp, Some(tok), Duration::from_secs(30))?;
            view.ready = t0.elapsed();
        }
    }
    Ok(view)
}

/// mergerfs options: writes go to the first (tmpfs) branch; page cache used like the
/// mergerfs docs recommend for read-mostly use.
pub const MERGERFS_OPTS: &str =
    "category.create=ff,cache.files=partial,dropcacheonclose=false,fsname=mergerfs-bench";

pub fn unmount(view: View) -> Result<(), String> {
    let mut res = Ok(());
    if let Some(t) = view.mount_token {
        res = guard::release(t);
    }
    if let Some(t) = view.proc_token {
        let _ = guard::release(t);
    }
    if let Some(s) = &view.scratch {
        let _ = fs::remove_dir_all(s);
    }
    res
}

pub fn drop_caches() {
    unsafe { libc::sync() };
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("statelite-bench: drop_caches: {e}");
    }
}

/// The FUSE daemon's per-op statistics from its control socket.
pub fn fuse_stats(view: &View) -> Option<serde_json::Value> {
    use std::os::unix::net::UnixStream;
    let sock = view.control.as_ref()?;
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"{\"cmd\":\"stats\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

pub fn version_of(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "not installed".into())
}

pub fn available(mode: Mode) -> Result<(), String> {
    let bin = match mode {
        Mode::FuseOverlayfs => "fuse-overlayfs",
        Mode::Mergerfs => "mergerfs",
        _ => return Ok(()),
    };
    if Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        Ok(())
    } else {
        Err(format!(
            "{bin} not installed (apt-get install -y fuse-overlayfs mergerfs fio)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_name_parses_back_and_fuse_base_is_a_statelite_mode() {
        let all = [
            Mode::Native,
            Mode::Symlink,
            Mode::Fuse,
            Mode::FuseNopt,
            Mode::FuseNoopen,
            Mode::FuseDev,
            Mode::FuseBase,
            Mode::Overlayfs,
            Mode::FuseOverlayfs,
            Mode::Mergerfs,
        ];
        for m in all {
            assert_eq!(Mode::parse(m.name()), Some(m), "{}", m.name());
        }
        assert!(Mode::FuseBase.is_statelite_fuse(), "its stats are read too");
        assert_eq!(Mode::parse("fuse-basis"), None);
    }
}

//! `statelite-mountd`: the node daemon. `boot` builds a node's root from the kernel command
//! line in the initramfs and stays as the root storage daemon; `mount` serves a merged
//! statelite root outside boot (for admins, tests and benchmarks).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use statelite_fs::layers::LayerPaths;
use statelite_fs::mount::{self, MountConfig};
use statelite_fs::overlay::OverlayOptions;
use statelite_fs::rule_table::RulesSource;
use statelite_fs::rules::RuleSet;

mod boot;
use statelite_mountd::control;

use statelite_mountd::symlink_mode::{self, SymlinkConfig};

#[derive(Parser)]
#[command(
    name = "statelite-mountd",
    version,
    about = "statelite node daemon: serves a node's merged root"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The FUSE overlay filesystem (the product).
    Fuse,
    /// xCAT-style symlink mode (the compatibility baseline).
    Symlink,
}

#[derive(Subcommand)]
enum Command {
    /// Mount a statelite root at MOUNTPOINT from local directories.
    #[command(
        after_help = "Example:\n  statelite-mountd mount --image /install/netboot/rh/x86_64/compute/rootimg \\\n    --litefile litefile.csv --image-name rhels-x86_64-statelite-compute \\\n    --tree /srv/litetree/n01 --volatile /run/sl/tmpfs --state /srv/state/n01 /mnt/n01\n\nUnmount with: umount MOUNTPOINT"
    )]
    Mount(Box<MountArgs>),
    /// Unmount a statelite root (either mode), with everything mounted below it.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Build the node's root from the kernel command line (run by the initramfs).
    #[command(
        after_help = "Example (initramfs):\n  statelite-mountd boot --sysroot /sysroot --config /etc/statelite/boot.json && \\\n    exec switch_root /sysroot /sbin/init\n\nUndo (tests): statelite-mountd boot-teardown --sysroot DIR --run-dir DIR"
    )]
    Boot(Box<boot::BootArgs>),
    /// Undo `boot`: unmount the root (either mode) and the sources under the run directory.
    BootTeardown(boot::TeardownArgs),
    /// Print the parsed kernel command line (JSON), for init scripts and debugging.
    Cmdline {
        /// The command line to parse instead of /proc/cmdline.
        #[arg(long)]
        cmdline: Option<String>,
    },
}

#[derive(clap::Args)]
struct MountArgs {
    /// The image root directory (read-only; never written).
    #[arg(long)]
    image: PathBuf,
    /// The litefile table (xCAT tabdump CSV).
    #[arg(long)]
    litefile: PathBuf,
    /// Image name selecting image-specific litefile rows (rows for ALL always apply).
    #[arg(long, default_value = "")]
    image_name: String,
    /// A litetree source directory; repeat in priority order (first = highest).
    #[arg(long = "tree")]
    trees: Vec<PathBuf>,
    /// Directory for volatile (tmpfs, con) data; normally on a tmpfs.
    #[arg(long)]
    volatile: PathBuf,
    /// This node's persistent state directory. Without it (or if it cannot be opened) the
    /// node is degraded: persistent paths are read-only.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Directory on a local disk for `localdisk` entries.
    #[arg(long)]
    localdisk: Option<PathBuf>,
    /// Control socket for litectl.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Stay in the foreground (default: return once the mount is ready, serve in the
    /// background).
    #[arg(long)]
    foreground: bool,
    #[arg(long, value_enum, default_value = "fuse")]
    mode: Mode,
    /// FUSE request threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds between image generation checks.
    #[arg(long, default_value_t = 2.0)]
    generation_interval: f64,
    /// Log file for the daemon once it is in the background (default: discard; the
    /// foreground logs to stderr).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Do not use FUSE passthrough even if the kernel offers it.
    #[arg(long)]
    no_passthrough: bool,
    /// Serve requests over /dev/fuse even if the kernel has FUSE over io_uring (which
    /// serves each request on the caller's CPU; Linux 6.14+, `fuse.enable_uring`, switched
    /// on by the daemon).
    #[arg(long)]
    no_uring: bool,
    /// The kernel's no-open mode: no OPEN/RELEASE/FLUSH round trips, file I/O by inode
    /// through the page cache, EROFS at the first write (README "FUSE semantics"). Also
    /// `STATELITE_NO_OPEN=1`.
    #[arg(long)]
    no_open: bool,
    /// Inodes kept in memory before the coldest are released (bounds the daemon's memory:
    /// ~400 bytes each; the default keeps a 1,000,000-file walk under 64 MiB).
    #[arg(long, default_value_t = statelite_fs::overlay::DEFAULT_MAX_INODES)]
    max_inodes: usize,
    /// Where to mount.
    mountpoint: PathBuf,
}

fn main() -> ExitCode {
    statelite_fs::sys::tune_malloc_for_daemon();
    reexec_for_initrd();
    let early = EarlyRules::start();
    let cli = Cli::parse();
    if let Command::Boot(args) = cli.command {
        // boot sets up its own logging (kmsg, log file, console).
        return boot::main(*args);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATELITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Mount(args) => run_mount(*args, early),
        Command::Umount { mountpoint } => run_umount(&mountpoint),
        Command::Boot(_) => Ok(()),
        Command::BootTeardown(args) => boot::teardown(&args),
        Command::Cmdline { cmdline } => print_cmdline(cmdline),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("statelite-mountd: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// SPEC §5: a root storage daemon started from an initrd has `argv[0][0] == '@'`, which
/// systemd's shutdown (and switch-root) reads as "do not kill". Rewriting argv in place is
/// fragile (the length is fixed and /proc/self/cmdline may be cached), so `boot` re-executes
/// itself with the new argv[0] before doing anything else.
fn reexec_for_initrd() {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "boot") {
        return;
    }
    let initrd = args.iter().any(|a| a == "--initrd")
        || std::path::Path::new("/etc/initrd-release").exists();
    let already = args
        .first()
        .is_some_and(|a| a.as_encoded_bytes().first() == Some(&b'@'));
    if !initrd || already {
        return;
    }
    let err = std::process::Command::new("/proc/self/exe")
        .arg0("@statelite-mountd")
        .args(args.iter().skip(1))
        .exec();
    // Carry on without the marker rather than fail the boot.
    eprintln!("statelite-mountd: warning: re-exec as @statelite-mountd failed: {err}");
}

fn print_cmdline(line: Option<String>) -> Result<(), String> {
    use statelite_mountd::cmdline::{self, RootSpec, StateMnt};
    let line = match line {
        Some(l) => l,
        None => std::fs::read("/proc/cmdline")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("/proc/cmdline: {e}"))?,
    };
    let p = cmdline::parse(&line).map_err(|e| e.to_string())?;
    let s = |x: Option<String>| x.map_or(serde_json::Value::Null, serde_json::Value::String);
    let image = p.image().map(|(src, opts)| {
        serde_json::json!({
            "server": src.server.to_string(),
            "path": src.path,
            "options": opts.map(|o| o.to_string()),
        })
    });
    let v = serde_json::json!({
        "image": image,
        "root_other": match &p.root { Some(RootSpec::Other(r)) => Some(r.clone()), _ => None },
        "statemnt": match &p.statemnt {
            None => serde_json::Value::Null,
            Some(StateMnt::None) => serde_json::Value::String(String::new()),
            Some(StateMnt::Nfs(src)) => serde_json::Value::String(src.to_string()),
        },
        "mntopts": p.mntopts.to_string(),
        "node": s(p.node.as_ref().map(|n| n.to_string())),
        "xcat": s(p.xcat.as_ref().map(|x| x.to_string())),
        "mode": s(p.mode.map(|m| m.as_str().to_string())),
        "shell": p.shell,
        "debug": p.debug,
        "bootif": s(p.bootif.map(|m| m.to_string())),
    });
    println!("{v}");
    Ok(())
}

fn load_rules(litefile: &std::path::Path, image_name: &str) -> Result<RuleSet, String> {
    let rules = statelite_fs::rules::load_rules(litefile, image_name).map_err(|e| e.to_string())?;
    checked(rules, litefile)
}

/// `rules`, unless they break a constraint.
fn checked(rules: RuleSet, litefile: &std::path::Path) -> Result<RuleSet, String> {
    if !rules.violations().is_empty() {
        let list: Vec<String> = rules
            .violations()
            .iter()
            .map(|v| format!("  {}: {v}", litefile.display()))
            .collect();
        return Err(format!(
            "the litefile breaks statelite's rules; fix these rows first:\n{}",
            list.join("\n")
        ));
    }
    Ok(rules)
}

/// The mount's rules, being read on their own thread (from the start of the process, see
/// [`EarlyRules`], or from just before the mount): from the compiled rule table beside the
/// litefile when it matches, else parsed from the litefile. Where they came from is logged
/// at [`RulesJob::join`] (a foreground mount starts reading before its logging is set up).
struct RulesJob(std::sync::mpsc::Receiver<(Result<RuleSet, String>, RulesSource)>);

/// How long [`RulesJob::join`] keeps its CPU busy waiting before it sleeps.
const RULES_SPIN: Duration = Duration::from_millis(3);

impl RulesJob {
    fn spawn(litefile: PathBuf, image_name: String) -> std::io::Result<RulesJob> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("rules".into())
            .spawn(move || {
                let (rules, source) = statelite_fs::rules::read_rules(&litefile, &image_name);
                let rules = rules
                    .map_err(|e| e.to_string())
                    .and_then(|r| checked(r, &litefile));
                // The receiver may be gone (a mount that failed first); nothing to do then.
                let _ = tx.send((rules, source));
            })
            .map(|_| RulesJob(rx))
    }

    /// The rules, as soon as they are sent: not at the thread's exit, and without sleeping
    /// while they are close. A sleeping thread's CPU may go idle, and waking an idle vCPU
    /// took 0.1-0.3 ms on the bench VM (a fifth of a mount), so the wait spins for a
    /// few milliseconds (yielding, in case the reader shares this CPU) before it blocks.
    fn join(self) -> Result<RuleSet, String> {
        use std::sync::mpsc::TryRecvError;
        let start = std::time::Instant::now();
        let got = loop {
            match self.0.try_recv() {
                Ok(got) => break Some(got),
                Err(TryRecvError::Disconnected) => break None,
                Err(TryRecvError::Empty) if start.elapsed() < RULES_SPIN => {
                    std::thread::yield_now()
                }
                Err(TryRecvError::Empty) => break self.0.recv().ok(),
            }
        };
        let Some((rules, source)) = got else {
            return Err("reading the litefile failed".into());
        };
        source.log();
        rules
    }
}

/// Symlink mode: the xCAT-style root is a set of kernel mounts; nothing stays running.
fn run_symlink(args: &MountArgs, early: Option<RulesJob>) -> Result<(), String> {
    let rules = match early {
        Some(job) => job.join()?,
        None => load_rules(&args.litefile, &args.image_name)?,
    };
    let cfg = SymlinkConfig {
        image: args.image.clone(),
        rules,
        trees: args.trees.clone(),
        state: state_dir(args),
        localdisk: args.localdisk.clone(),
        mountpoint: args.mountpoint.clone(),
    };
    let m = symlink_mode::setup(&cfg).map_err(|e| e.to_string())?;
    for p in &m.problems {
        eprintln!("statelite-mountd: warning: {p}");
    }
    if m.degraded {
        eprintln!("statelite-mountd: degraded: persistent entries are read-only");
    }
    Ok(())
}

fn run_umount(mountpoint: &std::path::Path) -> Result<(), String> {
    let is_fuse = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .is_some_and(|m| {
            let want =
                std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
            m.lines().any(|l| {
                let mut f = l.split_whitespace();
                let (src, mp, ty) = (f.next(), f.next(), f.next());
                mp == Some(&*want.to_string_lossy())
                    && src == Some("statelite")
                    && ty.is_some_and(|t| t.starts_with("fuse"))
            })
        });
    if is_fuse {
        mount::unmount(mountpoint).map_err(|e| format!("umount {}: {e}", mountpoint.display()))
    } else {
        symlink_mode::teardown(mountpoint).map_err(|e| e.to_string())
    }
}

fn state_dir(args: &MountArgs) -> Option<PathBuf> {
    match &args.state {
        Some(p) if p.is_dir() => Some(p.clone()),
        Some(p) => {
            tracing::error!(
                "state directory {} is not available: persistent paths are read-only (degraded)",
                p.display()
            );
            None
        }
        None => {
            tracing::warn!("no state directory: persistent paths are read-only (degraded)");
            None
        }
    }
}

/// A foreground mount's rules, read from the first instant of the process: on their own
/// thread while clap parses the command line and logging is set up (~0.4 ms of a ~3 ms
/// start here, enough that a 2,000-row litefile is in before the kernel mount is), and
/// then while the mount is made. The command line is scanned for `--litefile` and
/// `--image-name` ahead of clap; what clap then reads is checked against that, and
/// anything else (another command, an unusual spelling) is read again as usual.
///
/// Only for `mount --foreground`: a daemonising mount forks before mounting, and a fork
/// with a second thread running is unsafe, so it starts its rules thread after the fork.
struct EarlyRules {
    litefile: PathBuf,
    image_name: String,
    job: RulesJob,
}

impl EarlyRules {
    fn start() -> Option<EarlyRules> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let (litefile, image_name) = foreground_mount_rule_args(&args)?;
        let job = RulesJob::spawn(litefile.clone(), image_name.clone()).ok()?;
        Some(EarlyRules {
            litefile,
            image_name,
            job,
        })
    }

    /// The early read, still going or done, when it reads what `args` names; else `None`
    /// (the stray read is left to finish on its own: no fork follows a foreground mount).
    fn take(this: Option<EarlyRules>, args: &MountArgs) -> Option<RulesJob> {
        let early = this?;
        let same = early.litefile == args.litefile && early.image_name == args.image_name;
        same.then_some(early.job)
    }
}

/// `--litefile` and `--image-name` (default empty) of `mount ... --foreground`, as clap
/// would read them in the usual spellings (`--opt value`, `--opt=value`); `None` for
/// anything else.
fn foreground_mount_rule_args(args: &[std::ffi::OsString]) -> Option<(PathBuf, String)> {
    let (cmd, rest) = args.split_first()?;
    if cmd != "mount" {
        return None;
    }
    let (mut litefile, mut image_name, mut foreground) = (None, String::new(), false);
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        } else if a == "--foreground" {
            foreground = true;
        } else if a == "--litefile" {
            litefile = Some(PathBuf::from(it.next()?));
        } else if a == "--image-name" {
            image_name = it.next()?.to_str()?.to_string();
        } else if let Some(v) = a.to_str().and_then(|a| a.strip_prefix("--litefile=")) {
            litefile = Some(PathBuf::from(v));
        } else if let Some(v) = a.to_str().and_then(|a| a.strip_prefix("--image-name=")) {
            image_name = v.to_string();
        }
    }
    Some((litefile?, image_name)).filter(|_| foreground)
}

fn run_mount(args: MountArgs, early: Option<EarlyRules>) -> Result<(), String> {
    let early = EarlyRules::take(early, &args);
    if args.mode == Mode::Symlink {
        return run_symlink(&args, early);
    }
    let cfg = MountConfig {
        layers: LayerPaths {
            image: args.image.clone(),
            trees: args.trees.clone(),
            volatile: args.volatile.clone(),
            state: state_dir(&args),
            localdisk: args.localdisk.clone(),
        },
        mountpoint: args.mountpoint.clone(),
        threads: args.threads,
        generation_interval: Duration::from_secs_f64(args.generation_interval.max(0.1)),
        options: OverlayOptions {
            passthrough: !args.no_passthrough,
            uring: !args.no_uring,
            max_inodes: args.max_inodes.max(1024),
            no_open: args.no_open || OverlayOptions::default().no_open,
            ..OverlayOptions::default()
        },
    };
    // Daemonise before mounting (fork is only safe while single-threaded); the parent
    // returns once the child reports the mount ready, or its error.
    let ready = if args.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    // The litefile is read while the kernel mount and FUSE handshake happen, so the time
    // to a ready root does not grow with the number of entries. No request is served
    // before the rules are installed below (the session loop starts in `run`).
    let rules_job = match early {
        Some(job) => job,
        None => RulesJob::spawn(args.litefile.clone(), args.image_name.clone())
            .map_err(|e| format!("cannot start: {e}"))?,
    };
    // Errors go to the waiting parent, which prints them; the child then exits quietly.
    let fail = |msg: String, ready: Option<OwnedFd>| -> Result<(), String> {
        match ready {
            Some(fd) => {
                let _ = nix::unistd::write(&fd, msg.as_bytes());
                Err(String::new())
            }
            None => Err(msg),
        }
    };
    let mounted = match mount::mount(RuleSet::for_image(&[], &args.image_name), &cfg) {
        Ok(m) => m,
        Err(e) => return fail(e.to_string(), ready),
    };
    let rules = match rules_job.join() {
        Ok(rules) => rules,
        Err(msg) => return fail(msg, ready), // dropping `mounted` unmounts
    };
    if let Err(msg) = mounted.overlay.reload(rules) {
        return fail(msg, ready);
    }
    let mut control_file = None;
    if let Some(sock) = &args.control {
        let reload_args = (args.litefile.clone(), args.image_name.clone());
        let reload: control::Reloader = std::sync::Arc::new(move || {
            statelite_fs::rules::load_rules(&reload_args.0, &reload_args.1)
                .map_err(|e| e.to_string())
        });
        let ctl = control::Control {
            overlay: mounted.overlay.clone(),
            reload: Some(reload),
            log: args
                .log
                .as_deref()
                .and_then(|p| {
                    // Created now: the daemon only switches its stderr to it once ready.
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .read(true)
                        .open(p)
                        .ok()
                })
                .map(std::sync::Arc::new),
        };
        control_file = Some(
            control::serve(sock.clone(), ctl)
                .map_err(|e| format!("control socket {}: {e}", sock.display()))?,
        );
    }
    tracing::info!(mountpoint = %args.mountpoint.display(), passthrough_wanted = !args.no_passthrough, "statelite root mounted");
    if let Some(fd) = ready {
        // Let go of the caller's stderr (a caller capturing our output would otherwise
        // wait for the daemon to exit) before reporting ready.
        detach_stderr(args.log.as_deref());
        let _ = nix::unistd::write(&fd, b"ok");
        drop(fd);
    }
    let served = mounted
        .run(cfg.generation_interval)
        .map_err(|e| e.to_string());
    // Unmounted: nothing answers on the control socket any more (unless a new daemon
    // already serves the same path).
    if let (Some(sock), Some(file)) = (&args.control, control_file) {
        file.remove_if_still_ours(sock);
    }
    served
}

/// Forks: the parent waits for "ok" (or an error message) on a pipe and exits with it;
/// the child carries on, detached, and gets the pipe's write end.
fn daemonize() -> Result<OwnedFd, String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match nix::unistd::read(&r, &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            if buf == b"ok" {
                std::process::exit(0);
            }
            let msg = String::from_utf8_lossy(&buf);
            eprintln!(
                "statelite-mountd: {}",
                if msg.is_empty() {
                    "daemon exited before the mount was ready".into()
                } else {
                    msg
                }
            );
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            // Detach stdin/stdout so callers waiting on our output are not held open;
            // stderr stays for logs.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                unsafe {
                    libc::dup2(null.as_raw_fd(), 0);
                    libc::dup2(null.as_raw_fd(), 1);
                }
            }
            Ok(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(w)) })
        }
    }
}

fn detach_stderr(log: Option<&std::path::Path>) {
    let target = match log {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p),
        None => std::fs::OpenOptions::new().write(true).open("/dev/null"),
    };
    if let Ok(f) = target {
        unsafe {
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(args: &[&str]) -> Option<(PathBuf, String)> {
        let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        foreground_mount_rule_args(&args)
    }

    #[test]
    fn the_early_scan_reads_a_foreground_mounts_rule_arguments_as_clap_does() {
        let want = |l: &str, i: &str| Some((PathBuf::from(l), i.to_string()));
        let base = ["mount", "--image", "/img", "--foreground", "/mnt"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.splice(3..3, extra.iter().copied());
            scan(&v)
        };
        assert_eq!(with(&["--litefile", "/t/l.csv"]), want("/t/l.csv", ""));
        assert_eq!(with(&["--litefile=/t/l.csv"]), want("/t/l.csv", ""));
        assert_eq!(
            with(&["--litefile", "/t/l.csv", "--image-name", "compute"]),
            want("/t/l.csv", "compute")
        );
        assert_eq!(
            with(&["--image-name=compute", "--litefile=/t/l.csv"]),
            want("/t/l.csv", "compute")
        );
        // Each of these parses its rules after the fork or as clap says, not early.
        assert_eq!(with(&[]), None, "no litefile");
        let no_value = ["mount", "--foreground", "--litefile"];
        assert_eq!(scan(&no_value), None, "no value (clap will say so)");
        let no_fg = ["mount", "--litefile", "/t/l.csv", "/mnt"];
        assert_eq!(scan(&no_fg), None, "a daemonising mount forks first");
        let after_dashes = ["mount", "--", "--litefile", "/t/l.csv", "--foreground"];
        assert_eq!(scan(&after_dashes), None, "after -- nothing is an option");
        assert_eq!(
            scan(&["boot", "--litefile", "/t/l.csv", "--foreground"]),
            None
        );
        assert_eq!(scan(&[]), None);
    }

    #[test]
    fn clap_and_the_early_scan_agree_on_a_foreground_mount() {
        let argv = [
            "statelite-mountd",
            "mount",
            "--foreground",
            "--image",
            "/img",
            "--litefile=/t/l.csv",
            "--volatile",
            "/vol",
            "--image-name",
            "compute",
            "/mnt",
        ];
        let cli = Cli::try_parse_from(argv).expect("a valid mount command line");
        let Command::Mount(args) = cli.command else {
            panic!("not a mount");
        };
        let os: Vec<std::ffi::OsString> = argv[1..].iter().map(Into::into).collect();
        let (litefile, image_name) = foreground_mount_rule_args(&os).expect("scanned");
        assert_eq!((litefile, image_name), (args.litefile, args.image_name));
    }
}

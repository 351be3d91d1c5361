//! `statelite-mountd`: the node daemon. `mount` serves a merged statelite root outside boot
//! (for admins, tests and benchmarks); the boot flow builds on the same pieces.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use statelite_fs::layers::LayerPaths;
use statelite_fs::mount::{self, MountConfig};
use statelite_fs::overlay::OverlayOptions;
use statelite_fs::rules::{RuleSet, read_litefile};

mod control;

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
    /// Where to mount.
    mountpoint: PathBuf,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STATELITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => run_mount(*args),
        Command::Umount { mountpoint } => run_umount(&mountpoint),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statelite-mountd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_rules(args: &MountArgs) -> Result<RuleSet, String> {
    let rows = read_litefile(&args.litefile).map_err(|e| e.to_string())?;
    let rules = RuleSet::for_image(&rows, &args.image_name);
    if !rules.violations().is_empty() {
        let list: Vec<String> = rules
            .violations()
            .iter()
            .map(|v| format!("  {}: {v}", args.litefile.display()))
            .collect();
        return Err(format!(
            "the litefile breaks statelite's rules; fix these rows first:\n{}",
            list.join("\n")
        ));
    }
    Ok(rules)
}

/// Symlink mode: the xCAT-style root is a set of kernel mounts; nothing stays running.
fn run_symlink(args: &MountArgs) -> Result<(), String> {
    let rules = load_rules(args)?;
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

fn run_mount(args: MountArgs) -> Result<(), String> {
    if args.mode == Mode::Symlink {
        return run_symlink(&args);
    }
    let rules = load_rules(&args)?;
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
    let mounted = match mount::mount(rules, &cfg) {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string();
            if let Some(fd) = ready {
                let _ = nix::unistd::write(&fd, msg.as_bytes());
            }
            return Err(msg);
        }
    };
    if let Some(sock) = &args.control {
        let reload_args = (args.litefile.clone(), args.image_name.clone());
        let reload: control::Reloader = std::sync::Arc::new(move || {
            let rows = read_litefile(&reload_args.0).map_err(|e| e.to_string())?;
            Ok(RuleSet::for_image(&rows, &reload_args.1))
        });
        let ctl = control::Control {
            overlay: mounted.overlay.clone(),
            reload: Some(reload),
            log: args.log.clone(),
        };
        control::serve(sock.clone(), ctl)
            .map_err(|e| format!("control socket {}: {e}", sock.display()))?;
    }
    tracing::info!(mountpoint = %args.mountpoint.display(), passthrough_wanted = !args.no_passthrough, "statelite root mounted");
    if let Some(fd) = ready {
        // Let go of the caller's stderr (a caller capturing our output would otherwise
        // wait for the daemon to exit) before reporting ready.
        detach_stderr(args.log.as_deref());
        let _ = nix::unistd::write(&fd, b"ok");
        drop(fd);
    }
    mounted
        .run(cfg.generation_interval)
        .map_err(|e| e.to_string())
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

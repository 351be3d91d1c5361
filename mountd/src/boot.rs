//! `statelite-mountd boot`: what the initramfs runs before `switch_root`.
//!
//! 1. Parse the kernel command line ([`statelite_mountd::cmdline`]) and fetch the node's
//!    rules ([`RulesSource`]: a local JSON file, or the `XCAT=` query service through
//!    [`statelite_mountd::query`]).
//! 2. Mount the sources under the run directory (default `/run/statelite`): the image on
//!    `image/`, the state export on `state/` (then the node's own `state/<NODE>/`, created on
//!    first boot), each litetree source on `tree/<n>/`. NFS mounts are `mount(2)` with text
//!    options (no `mount.nfs` in an initramfs), retried with jittered exponential back-off.
//! 3. Build the root on the sysroot: FUSE mode serves the merged root (volatile store on a
//!    tmpfs at `volatile/`), then puts a tmpfs on `<sysroot>/.statelite` with the node's
//!    state bound on `persistent/`, the control socket and the log; symlink mode does what
//!    xCAT's `rc.statelite` does and leaves nothing running.
//! 4. FUSE mode: the process forks; the parent returns to the init script once the root is
//!    ready and the child stays as the root storage daemon (SPEC §5): it holds every layer
//!    as an fd, logs to fds opened before `switch_root`, has `oom_score_adj` -1000, and (when
//!    started from an initrd) `argv[0]` starting with `@`, so systemd's shutdown spares it.
//!
//! The `--config` file (JSON; every key but `image` optional; values here override the
//! kernel line, for local use):
//!
//! ```json
//! {
//!   "image": "rhels8-x86_64-statelite-compute",
//!   "litefile": "litefile.csv",
//!   "litefile_rows": [{"image": "ALL", "file": "/etc/motd", "options": "tmpfs"}],
//!   "litetree": ["10.0.0.1:/litetree/n01", {"dir": "10.0.0.1:/litetree/all", "mntopts": "vers=3"},
//!                "/local/dir"],
//!   "statemnt": "10.0.0.1:/nodedata",
//!   "nfsroot": "10.0.0.1:/install/netboot/rh8/x86_64/compute/rootimg",
//!   "node": "n01",
//!   "mode": "fuse"
//! }
//! ```
//!
//! `image` selects the litefile rows (rows for `ALL` always apply); `litefile` is an xCAT
//! `tabdump litefile` CSV (relative to the config file), `litefile_rows` are appended to it
//! (`image` defaults to ALL, `options` to empty); `litetree` lists sources highest priority
//! first as `[server:]/path` (a path without server is a directory already on the node),
//! each optionally with its own mount options; `statemnt` `""` means no persistent storage;
//! `nfsroot` is used only when the kernel line names no image.
//!
//! Mount options: every NFS mount gets `vers=4.1`, then the kernel line's `MNTOPTS=`, then
//! the source's own options (`root=nfs:...:<opts>` for the image, `mntopts` for a litetree
//! source) on top; `addr=` is added from the resolved server; the image and litetree
//! sources are always read-only.
//!
//! Failure policy: the image is required (boot fails with a console message after the
//! last try); persistent storage that cannot be mounted leaves the node degraded with
//! persistent paths read-only (never silently volatile); a litetree source that cannot be
//! mounted is skipped (lower priorities serve).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use serde::Deserialize;
use statelite_fs::layers::LayerPaths;
use statelite_fs::mount::{self as fsmount, MountConfig};
use statelite_fs::overlay::OverlayOptions;
use statelite_fs::rules::{LiteRow, RuleSet, read_litefile, rows_from};
use statelite_mountd::cmdline::{
    self, BootParams, CmdlineError, Host, MountOpts, NfsSource, NodeName, RootMode, ServiceAddr,
    StateMnt,
};
use statelite_mountd::symlink_mode::{self, SymlinkConfig};
use tracing::{debug, error, info, warn};

use statelite_mountd::control;

#[derive(clap::Args, Debug)]
pub struct BootArgs {
    /// Where the node's root is built (the initramfs then switch_roots into it).
    #[arg(long)]
    pub sysroot: PathBuf,
    /// The kernel command line to use instead of /proc/cmdline.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Rules file (JSON: image, litefile, litefile_rows, litetree, statemnt, nfsroot, node,
    /// mode; see `statelite-mountd boot --help` or mountd/src/boot.rs). Without it the rules
    /// come from the XCAT= query service.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Tests only: serve the NFS export SERVER:/PATH (and anything below it) from LOCALDIR
    /// with a bind mount instead of NFS. Repeatable.
    #[arg(long = "fake-nfs-root", value_name = "SERVER:/PATH=LOCALDIR")]
    pub fake_nfs: Vec<String>,
    /// Where the sources are mounted (image/, state/, tree/N/, volatile/).
    #[arg(long, default_value = "/run/statelite")]
    pub run_dir: PathBuf,
    /// Kernel log device ("none" to log only to the log file and console).
    #[arg(long, default_value = "/dev/kmsg")]
    pub kmsg: String,
    /// Started from an initrd: argv[0] becomes "@statelite-mountd" (systemd spares such
    /// processes at shutdown). Implied when /etc/initrd-release exists.
    #[arg(long)]
    pub initrd: bool,
    /// Mount attempts per source before giving up.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// First retry delay in milliseconds (doubles each try, jittered).
    #[arg(long, default_value_t = 500)]
    pub retry_initial_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub retry_max_ms: u64,
    /// FUSE request threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Seconds between image generation checks.
    #[arg(long, default_value_t = 2.0)]
    pub generation_interval: f64,
    /// Do not use FUSE passthrough even if the kernel offers it.
    #[arg(long)]
    pub no_passthrough: bool,
    /// The kernel's no-open mode (see `statelite-mountd mount --no-open`).
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("boot config {path}: {problem}")]
    Config { path: PathBuf, problem: String },
    #[error("rules from the query service: {0}")]
    Query(#[from] statelite_mountd::query::QueryError),
    #[error(
        "XCAT={0} needs NODE=<name> on the kernel line (the service answers a node about itself)"
    )]
    ServiceNoNode(ServiceAddr),
    #[error("XCAT={addr}: cannot resolve {host}: {source}")]
    ServiceResolve {
        addr: ServiceAddr,
        host: String,
        source: io::Error,
    },
    #[error("no rules source: pass --config FILE (or XCAT=<host>:<port> on the kernel line)")]
    NoRulesSource,
    #[error(
        "no image: the kernel line has neither root=nfs:<server>:<dir> nor NFSROOT=<server>:<dir>{0}"
    )]
    NoImage(String),
    #[error(
        "STATEMNT={0} needs NODE=<name> on the kernel line (the state directory is <statemnt>/<node>)"
    )]
    NoNode(String),
    #[error("--fake-nfs-root {value:?}: expected SERVER:/PATH=LOCALDIR ({problem})")]
    FakeNfs { value: String, problem: String },
    #[error(
        "gave up on {what} {source_name} after {tries} tries over {secs:.1} s: {last}. \
         Check the server, the export and the kernel line (root=/NFSROOT=/MNTOPTS=)"
    )]
    GaveUp {
        what: &'static str,
        source_name: String,
        tries: u32,
        secs: f64,
        last: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the litefile rules are broken; fix these rows first:\n{0}")]
    Rules(String),
    #[error("{} already has mounts below it (a previous boot?); run `statelite-mountd boot-teardown` first", .0.display())]
    RunDirBusy(PathBuf),
    #[error("FUSE root on {path}: {problem}")]
    Fuse { path: PathBuf, problem: String },
    #[error("symlink mode: {0}")]
    Symlink(#[from] symlink_mode::SymlinkError),
    #[error("daemon: {0}")]
    Daemon(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BootError {
    let path = path.to_path_buf();
    move |source| BootError::Io { what, path, source }
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

// ---------------------------------------------------------------------------------------
// Rules: where they come from and what they hold.

/// Where a litetree source or the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Nfs(NfsSource),
    /// A directory already present on the node (initramfs or local disk): used as is.
    Local(PathBuf),
}

impl Location {
    /// `[server:]/path`.
    fn parse(s: &str) -> Result<Location, String> {
        if s.starts_with('/') {
            if s.split('/').any(|c| c == "..") {
                return Err(format!("{s:?} holds a '..' component"));
            }
            return Ok(Location::Local(PathBuf::from(s)));
        }
        NfsSource::parse(s).map(Location::Nfs)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Nfs(s) => write!(f, "{s}"),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TreeSource {
    pub location: Location,
    /// Options for this source, on top of the kernel line's MNTOPTS=.
    pub mntopts: MountOpts,
}

/// What a node needs to know to build its root, from whichever rules source.
#[derive(Debug, Clone)]
pub struct NodeRules {
    pub image_name: String,
    pub rows: Vec<LiteRow>,
    /// Highest priority first.
    pub trees: Vec<TreeSource>,
    /// Overrides the kernel line's STATEMNT= when set.
    pub statemnt: Option<StateMnt>,
    pub nfsroot: Option<NfsSource>,
    pub node: Option<NodeName>,
    pub mode: Option<RootMode>,
    /// Where the rules came from, for messages.
    pub origin: String,
}

/// Where the node's rules come from.
#[derive(Debug, Clone)]
pub enum RulesSource {
    File(PathBuf),
    /// `statelite serve` (`XCAT=`), asked about this node.
    Service {
        addr: ServiceAddr,
        node: NodeName,
        opts: statelite_mountd::query::QueryOptions,
    },
}

impl RulesSource {
    pub fn fetch(&self) -> Result<NodeRules, BootError> {
        match self {
            RulesSource::File(p) => load_config(p),
            RulesSource::Service { addr, node, opts } => fetch_service(addr, node, opts),
        }
    }
}

/// Asks the query service (resolved here, like the NFS servers: a static binary may
/// have no working resolver) and turns its answer into the node's rules.
fn fetch_service(
    addr: &ServiceAddr,
    node: &NodeName,
    opts: &statelite_mountd::query::QueryOptions,
) -> Result<NodeRules, BootError> {
    let ip = resolve(&addr.host).map_err(|source| BootError::ServiceResolve {
        addr: addr.clone(),
        host: addr.host.to_string(),
        source,
    })?;
    let target = std::net::SocketAddr::new(ip, addr.port).to_string();
    let origin = format!("XCAT={addr}");
    let r = statelite_mountd::query::fetch_rules_with(&target, node.as_str(), opts)?;
    let bad = |problem: String| BootError::Config {
        path: PathBuf::from(&origin),
        problem,
    };
    let rows = r.lite_rows()?;
    let mut trees = Vec::new();
    for t in &r.litetree {
        let location =
            Location::parse(&t.dir).map_err(|e| bad(format!("litetree {:?}: {e}", t.dir)))?;
        let mntopts = match t.mntopts.as_deref() {
            None | Some("") => MountOpts::default(),
            Some(o) => MountOpts::parse(o)
                .map_err(|e| bad(format!("litetree {:?} mntopts {o:?}: {e}", t.dir)))?,
        };
        trees.push(TreeSource { location, mntopts });
    }
    // The service's statemnt is the table's: it overrides the kernel line's, which
    // nodeset wrote from the same row (possibly before an edit). No row: keep STATEMNT=.
    let statemnt = match r.statemnt.as_deref() {
        None => None,
        Some(s) => Some(StateMnt::Nfs(
            NfsSource::parse(s).map_err(|e| bad(format!("statemnt {s:?}: {e}")))?,
        )),
    };
    Ok(NodeRules {
        image_name: r.image,
        rows,
        trees,
        statemnt,
        nfsroot: None,
        node: None,
        mode: None,
        origin,
    })
}

/// The `--config` file (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Image name: selects the litefile rows for this image (rows for ALL always apply).
    image: String,
    /// An xCAT `tabdump litefile` CSV; relative paths are relative to the config file.
    #[serde(default)]
    litefile: Option<PathBuf>,
    /// Litefile rows inline (after those of `litefile`).
    #[serde(default)]
    litefile_rows: Vec<ConfigRow>,
    /// Litetree sources, highest priority first.
    #[serde(default)]
    litetree: Vec<ConfigTree>,
    /// `server:/path`, or "" for no persistent storage; overrides STATEMNT=.
    #[serde(default)]
    statemnt: Option<String>,
    /// `server:/path` of the image; used when the kernel line names none.
    #[serde(default)]
    nfsroot: Option<String>,
    /// Override NODE=.
    #[serde(default)]
    node: Option<String>,
    /// Override STATELITE_MODE=: "fuse" or "symlink".
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigRow {
    #[serde(default)]
    image: Option<String>,
    file: String,
    #[serde(default)]
    options: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ConfigTree {
    Dir(String),
    WithOpts {
        dir: String,
        #[serde(default)]
        mntopts: Option<String>,
    },
}

fn load_config(path: &Path) -> Result<NodeRules, BootError> {
    let bad = |problem: String| BootError::Config {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read(path).map_err(|source| BootError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let cfg: ConfigFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    if let Some(lf) = &cfg.litefile {
        let lf = match path.parent() {
            Some(dir) if lf.is_relative() => dir.join(lf),
            _ => lf.clone(),
        };
        rows = read_litefile(&lf).map_err(|e| bad(e.to_string()))?;
    }
    if !cfg.litefile_rows.is_empty() {
        let triples: Vec<(&str, &str, &str)> = cfg
            .litefile_rows
            .iter()
            .map(|r| {
                (
                    r.image.as_deref().unwrap_or("ALL"),
                    r.file.as_str(),
                    r.options.as_deref().unwrap_or(""),
                )
            })
            .collect();
        rows.extend(rows_from(&triples).map_err(|e| bad(format!("litefile_rows: {e}")))?);
    }
    let mut trees = Vec::new();
    for (i, t) in cfg.litetree.iter().enumerate() {
        let (dir, opts) = match t {
            ConfigTree::Dir(d) => (d.as_str(), None),
            ConfigTree::WithOpts { dir, mntopts } => (dir.as_str(), mntopts.as_deref()),
        };
        let location =
            Location::parse(dir).map_err(|e| bad(format!("litetree[{i}] {dir:?}: {e}")))?;
        let mntopts = match opts {
            None | Some("") => MountOpts::default(),
            Some(o) => {
                MountOpts::parse(o).map_err(|e| bad(format!("litetree[{i}] mntopts {o:?}: {e}")))?
            }
        };
        trees.push(TreeSource { location, mntopts });
    }
    let statemnt = match cfg.statemnt.as_deref() {
        None => None,
        Some("") => Some(StateMnt::None),
        Some(s) => Some(StateMnt::Nfs(
            NfsSource::parse(s).map_err(|e| bad(format!("statemnt {s:?}: {e}")))?,
        )),
    };
    let nfsroot = match cfg.nfsroot.as_deref() {
        None => None,
        Some(s) => Some(NfsSource::parse(s).map_err(|e| bad(format!("nfsroot {s:?}: {e}")))?),
    };
    let node = match cfg.node.as_deref() {
        None => None,
        Some(s) => Some(NodeName::parse(s).map_err(|e| bad(format!("node {s:?}: {e}")))?),
    };
    let mode = match cfg.mode.as_deref() {
        None => None,
        Some("fuse") => Some(RootMode::Fuse),
        Some("symlink") => Some(RootMode::Symlink),
        Some(m) => return Err(bad(format!("mode {m:?}: expected \"fuse\" or \"symlink\""))),
    };
    Ok(NodeRules {
        image_name: cfg.image,
        rows,
        trees,
        statemnt,
        nfsroot,
        node,
        mode,
        origin: path.display().to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// Mounting sources: NFS (or a fake bind for tests), with retries.

/// `--fake-nfs-root SERVER:/PATH=LOCALDIR`.
#[derive(Debug, Clone)]
struct FakeNfs {
    source: NfsSource,
    local: PathBuf,
}

fn parse_fake(value: &str) -> Result<FakeNfs, BootError> {
    let bad = |problem: String| BootError::FakeNfs {
        value: value.to_string(),
        problem,
    };
    let (src, local) = value.split_once('=').ok_or_else(|| bad("no '='".into()))?;
    let source = NfsSource::parse(src).map_err(bad)?;
    if !local.starts_with('/') {
        return Err(bad("LOCALDIR must be absolute".into()));
    }
    Ok(FakeNfs {
        source,
        local: PathBuf::from(local),
    })
}

/// Bounded, jittered exponential back-off.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub tries: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The pause after failed try `n` (0-based): half the doubled delay plus a random part
    /// of the other half, so a rack of nodes booting at once spreads out.
    fn delay(&self, n: u32, rng: &mut u64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = base / 2;
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let frac = (*rng % 1000) as u32;
        half + half * frac / 1000
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// Failures worth retrying (a slow or restarting server); the others are configuration
/// errors that waiting will not fix.
fn retryable(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(
            libc::EINVAL
                | libc::ENODEV
                | libc::EPERM
                | libc::ENOTDIR
                | libc::ENAMETOOLONG
                | libc::ENOTBLK
        )
    )
}

/// Looks a server name up: an address literal, then /etc/hosts (the initramfs's), then
/// the resolver (getaddrinfo; may be unavailable in a static binary without NSS).
fn resolve(host: &Host) -> io::Result<IpAddr> {
    let name = match host {
        Host::Ip(a) => return Ok(*a),
        Host::Name(n) => n,
    };
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut f = line.split_whitespace();
            let Some(addr) = f.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            if f.any(|n| n.eq_ignore_ascii_case(name)) {
                return Ok(addr);
            }
        }
    }
    use std::net::ToSocketAddrs;
    (name.as_str(), 2049)
        .to_socket_addrs()?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name}: no address")))
}

/// The `mount(2)` arguments for an NFS export: file system type, flags and data.
#[derive(Debug, PartialEq, Eq)]
pub struct NfsMount {
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: String,
}

/// Builds the mount: `vers=4.1` by default, then MNTOPTS= and the source's own options on
/// top; `ro`/`rw` become flags (the image and litetree sources are always read-only);
/// `addr=` is the resolved server (the kernel does not resolve names).
pub fn nfs_mount_args(opts: &MountOpts, read_only: bool, addr: IpAddr) -> NfsMount {
    let mut o = MountOpts::parse("vers=4.1")
        .unwrap_or_default()
        .overlaid(opts);
    let ro = read_only || o.has("ro");
    o.remove("ro");
    o.remove("rw");
    let v3 = o
        .get("vers")
        .or(o.get("nfsvers"))
        .is_some_and(|v| v.starts_with('3'));
    if v3 && !o.has("lock") && !o.has("nolock") {
        // No rpc.statd in an initramfs.
        o.set("nolock", None);
    }
    if o.get("addr").is_none() {
        o.set("addr", Some(&addr.to_string()));
    }
    let mut flags = MsFlags::empty();
    if ro {
        flags |= MsFlags::MS_RDONLY;
    }
    NfsMount {
        fstype: if v3 { "nfs" } else { "nfs4" },
        flags,
        data: o.to_string(),
    }
}

/// The mounts made so far (under the run directory), undone in reverse on failure.
#[derive(Default)]
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn undo(&mut self) {
        while let Some(p) = self.0.pop() {
            if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::empty()) {
                warn!("undo: umount {}: {e}; detaching", p.display());
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

struct Mounter<'a> {
    fakes: &'a [FakeNfs],
    mntopts: &'a MountOpts,
    backoff: Backoff,
    rng: u64,
}

impl Mounter<'_> {
    /// One try: a fake bind for a mapped export, else an NFS mount.
    fn try_once(
        &self,
        src: &NfsSource,
        extra: &MountOpts,
        read_only: bool,
        target: &Path,
    ) -> io::Result<String> {
        let fake = self.fakes.iter().find_map(|f| {
            if f.source.server != src.server {
                return None;
            }
            let rest = src.path.strip_prefix(&f.source.path)?;
            if !(rest.is_empty() || rest.starts_with('/') || f.source.path.ends_with('/')) {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            Some(if rest.is_empty() {
                f.local.clone()
            } else {
                f.local.join(rest)
            })
        });
        if let Some(local) = fake {
            // ENOENT until the directory appears: a "slow server" for the tests.
            mount(
                Some(&local),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(errno_io)?;
            if read_only {
                let r = mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                );
                if let Err(e) = r {
                    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
                    return Err(errno_io(e));
                }
            }
            return Ok(format!("bind {} (fake NFS)", local.display()));
        }
        let addr = resolve(&src.server)?;
        let opts = self.mntopts.overlaid(extra);
        let m = nfs_mount_args(&opts, read_only, addr);
        debug!(
            "mount -t {} -o {} {src} {}",
            m.fstype,
            m.data,
            target.display()
        );
        mount(
            Some(src.to_string().as_str()),
            target,
            Some(m.fstype),
            m.flags,
            Some(m.data.as_str()),
        )
        .map_err(errno_io)?;
        Ok(format!("{} -o {}", m.fstype, m.data))
    }

    /// Mounts `src` on `target`, retrying; the error says what was tried and for how long.
    fn mount(
        &mut self,
        what: &'static str,
        src: &NfsSource,
        extra: &MountOpts,
        read_only: bool,
        target: &Path,
        mounts: &mut Mounts,
    ) -> Result<(), BootError> {
        let start = Instant::now();
        let tries = self.backoff.tries.max(1);
        let mut last = String::new();
        for n in 0..tries {
            match self.try_once(src, extra, read_only, target) {
                Ok(how) => {
                    info!("mounted {what} {src} on {} ({how})", target.display());
                    mounts.0.push(target.to_path_buf());
                    return Ok(());
                }
                Err(e) => {
                    last = if e.raw_os_error() == Some(libc::ENODEV) {
                        format!("{e} (this kernel has no NFS client)")
                    } else {
                        e.to_string()
                    };
                    if !retryable(&e) {
                        return Err(BootError::GaveUp {
                            what,
                            source_name: src.to_string(),
                            tries: n + 1,
                            secs: start.elapsed().as_secs_f64(),
                            last,
                        });
                    }
                    if n + 1 < tries {
                        let d = self.backoff.delay(n, &mut self.rng);
                        warn!(
                            "{what} {src}: {e}; try {}/{tries}, retrying in {:.2} s",
                            n + 1,
                            d.as_secs_f64()
                        );
                        std::thread::sleep(d);
                    }
                }
            }
        }
        Err(BootError::GaveUp {
            what,
            source_name: src.to_string(),
            tries,
            secs: start.elapsed().as_secs_f64(),
            last,
        })
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), BootError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err("create", path))
}

fn mount_tmpfs(target: &Path, name: &str) -> Result<(), BootError> {
    mount(
        Some(name),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| io_err("mount tmpfs on", target)(errno_io(e)))
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(f.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Logging: /dev/kmsg, the log file (an fd opened before switch_root) and the console.

#[derive(Default)]
struct Sinks {
    kmsg: Option<File>,
    file: Option<File>,
    /// Lines logged before the log file exists (it lives on the root's tmpfs).
    pending: Vec<u8>,
    console: bool,
}

const PENDING_MAX: usize = 1 << 20;

#[derive(Clone, Copy)]
enum SinkKind {
    Kmsg,
    File,
    Console,
}

#[derive(Clone)]
struct Sink {
    kind: SinkKind,
    shared: Arc<Mutex<Sinks>>,
}

struct Line {
    buf: Vec<u8>,
    level: tracing::Level,
    sink: Sink,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // Logging must never take the daemon down: errors are dropped, a poisoned lock
        // is used anyway.
        let mut s = self.sink.shared.lock().unwrap_or_else(|e| e.into_inner());
        match self.sink.kind {
            SinkKind::Kmsg => {
                let prio = match self.level {
                    tracing::Level::ERROR => 3,
                    tracing::Level::WARN => 4,
                    tracing::Level::INFO => 6,
                    _ => 7,
                };
                if let Some(k) = s.kmsg.as_mut() {
                    for line in self.buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        // One write per record; the kernel refuses records over 1 KiB.
                        for chunk in line.chunks(900) {
                            let mut rec = format!("<{prio}>statelite-mountd: ").into_bytes();
                            rec.extend_from_slice(chunk);
                            rec.push(b'\n');
                            let _ = k.write(&rec);
                        }
                    }
                }
            }
            SinkKind::File => match s.file.as_mut() {
                Some(f) => {
                    let _ = f.write_all(&self.buf);
                }
                None => {
                    if s.pending.len() + self.buf.len() <= PENDING_MAX {
                        s.pending.extend_from_slice(&self.buf);
                    }
                }
            },
            SinkKind::Console => {
                if s.console {
                    let mut err = io::stderr().lock();
                    let _ = err.write_all(b"statelite-mountd: ");
                    let _ = err.write_all(&self.buf);
                }
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::new(),
            level: tracing::Level::INFO,
            sink: self.clone(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            buf: Vec::new(),
            level: *meta.level(),
            sink: self.clone(),
        }
    }
}

/// The boot's logging: returns the handle used to attach the log file and detach the
/// console later.
fn init_logging(kmsg: &str, debug: bool) -> Arc<Mutex<Sinks>> {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let kmsg_file = if kmsg == "none" {
        None
    } else {
        // The kernel log device, or (for tests) a file to append to.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(kmsg)
            .ok()
    };
    let shared = Arc::new(Mutex::new(Sinks {
        kmsg: kmsg_file,
        console: true,
        ..Sinks::default()
    }));
    let sink = |kind| Sink {
        kind,
        shared: shared.clone(),
    };
    let base = tracing_subscriber::EnvFilter::try_from_env("STATELITE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if debug { "trace" } else { "info" })
    });
    let (kmsg_level, console_level) = if debug {
        (LevelFilter::DEBUG, LevelFilter::TRACE)
    } else {
        (LevelFilter::INFO, LevelFilter::WARN)
    };
    let _ = tracing_subscriber::registry()
        .with(base)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_level(false)
                .with_writer(sink(SinkKind::Kmsg))
                .with_filter(kmsg_level),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(sink(SinkKind::File)),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(sink(SinkKind::Console))
                .with_filter(console_level),
        )
        .try_init();
    shared
}

fn attach_log_file(shared: &Mutex<Sinks>, mut f: File) {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let pending = std::mem::take(&mut s.pending);
    let _ = f.write_all(&pending);
    s.file = Some(f);
}

fn open_log(path: &Path) -> Result<File, BootError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("open log", path))
}

// ---------------------------------------------------------------------------------------
// The boot.

/// Runs `boot`; prints its own errors (console, kmsg, log).
pub fn main(args: BootArgs) -> ExitCode {
    let line = match &args.cmdline {
        Some(s) => Ok(s.clone()),
        None => std::fs::read("/proc/cmdline")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|source| BootError::Read {
                path: "/proc/cmdline".into(),
                source,
            }),
    };
    let params = line.and_then(|l| cmdline::parse(&l).map_err(BootError::from));
    let debug = params.as_ref().is_ok_and(|p| p.debug);
    // After the re-exec through /proc/self/exe the thread name would be "exe" in ps.
    let _ = nix::sys::prctl::set_name(c"statelite-mountd");
    let sinks = init_logging(&args.kmsg, debug);
    let result = params.and_then(|p| boot(&args, &p, &sinks));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("boot failed: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Plan {
    /// Validated litefile rows and the image they are selected for.
    rows: Vec<LiteRow>,
    image_name: String,
    source: RulesSource,
    mode: RootMode,
    node: Option<NodeName>,
    image: (NfsSource, MountOpts),
    statemnt: Option<NfsSource>,
    trees: Vec<TreeSource>,
}

impl Plan {
    fn rules(&self) -> RuleSet {
        RuleSet::for_image(&self.rows, &self.image_name)
    }
}

fn plan(args: &BootArgs, p: &BootParams) -> Result<Plan, BootError> {
    let source = match (&args.config, &p.xcat) {
        (Some(f), _) => RulesSource::File(f.clone()),
        (None, Some(x)) => RulesSource::Service {
            addr: x.clone(),
            node: p
                .node
                .clone()
                .ok_or_else(|| BootError::ServiceNoNode(x.clone()))?,
            opts: statelite_mountd::query::QueryOptions {
                timeout: Duration::from_secs(10),
                tries: args.retries.max(1),
                initial_delay: Duration::from_millis(args.retry_initial_ms),
                max_delay: Duration::from_millis(args.retry_max_ms.max(args.retry_initial_ms)),
            },
        },
        (None, None) => return Err(BootError::NoRulesSource),
    };
    let nr = source.fetch()?;
    info!(
        "rules from {}: image {:?}, {} litefile rows, {} litetree sources",
        nr.origin,
        nr.image_name,
        nr.rows.len(),
        nr.trees.len()
    );
    let rules = RuleSet::for_image(&nr.rows, &nr.image_name);
    if !rules.violations().is_empty() {
        let list: Vec<String> = rules
            .violations()
            .iter()
            .map(|v| format!("  {}: {v}", nr.origin))
            .collect();
        return Err(BootError::Rules(list.join("\n")));
    }
    let image = match (p.image(), &nr.nfsroot) {
        (Some((s, o)), _) => (s.clone(), o.cloned().unwrap_or_default()),
        (None, Some(s)) => (s.clone(), MountOpts::default()),
        (None, None) => {
            let other = match &p.root {
                Some(cmdline::RootSpec::Other(r)) => format!(" (root={r} is not an NFS root)"),
                _ => String::new(),
            };
            return Err(BootError::NoImage(other));
        }
    };
    let node = nr.node.clone().or_else(|| p.node.clone());
    let statemnt = match nr.statemnt.as_ref().or(p.statemnt.as_ref()) {
        None | Some(StateMnt::None) => None,
        Some(StateMnt::Nfs(s)) => {
            if node.is_none() {
                return Err(BootError::NoNode(s.to_string()));
            }
            Some(s.clone())
        }
    };
    Ok(Plan {
        rows: nr.rows,
        image_name: nr.image_name,
        source,
        mode: nr.mode.or(p.mode).unwrap_or(RootMode::Fuse),
        node,
        image,
        statemnt,
        trees: nr.trees,
    })
}

fn boot(args: &BootArgs, p: &BootParams, sinks: &Arc<Mutex<Sinks>>) -> Result<(), BootError> {
    if p.debug {
        debug!("kernel command line: {p:?}");
    }
    let fakes = args
        .fake_nfs
        .iter()
        .map(|f| parse_fake(f))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan(args, p)?;
    let sysroot = std::fs::canonicalize(&args.sysroot).map_err(io_err("sysroot", &args.sysroot))?;
    mkdir(&args.run_dir, 0o755)?;
    let run = std::fs::canonicalize(&args.run_dir).map_err(io_err("run dir", &args.run_dir))?;
    if !mounts_below(&run).is_empty() {
        return Err(BootError::RunDirBusy(run));
    }
    info!(
        "booting node {} in {} mode on {}",
        plan.node.as_ref().map_or("(unnamed)", |n| n.as_str()),
        plan.mode.as_str(),
        sysroot.display()
    );
    let mut mounts = Mounts::default();
    let mut mounter = Mounter {
        fakes: &fakes,
        mntopts: &p.mntopts,
        backoff: Backoff {
            tries: args.retries,
            initial: Duration::from_millis(args.retry_initial_ms),
            max: Duration::from_millis(args.retry_max_ms.max(args.retry_initial_ms)),
        },
        rng: seed(),
    };
    let result =
        mount_sources(&plan, &run, &mut mounter, &mut mounts).and_then(|layers| match plan.mode {
            RootMode::Symlink => symlink_root(&plan, layers, &sysroot, sinks),
            RootMode::Fuse => fuse_root(args, &plan, layers, &sysroot, &run, sinks, &mut mounts),
        });
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            mounts.undo();
            Err(e)
        }
    }
}

fn mount_sources(
    plan: &Plan,
    run: &Path,
    m: &mut Mounter<'_>,
    mounts: &mut Mounts,
) -> Result<LayerPaths, BootError> {
    let image = run.join("image");
    mkdir(&image, 0o755)?;
    let (src, opts) = &plan.image;
    // The one source a node cannot do without: its error ends the boot (main reports it
    // on the console and in the kernel log).
    m.mount("the image", src, opts, true, &image, mounts)?;
    let mut state = None;
    if let (Some(src), Some(node)) = (&plan.statemnt, &plan.node) {
        let dir = run.join("state");
        mkdir(&dir, 0o755)?;
        let degraded = |why: String| {
            error!(
                "persistent storage {src} is unavailable ({why}): persistent paths are \
                 READ-ONLY and this node is DEGRADED"
            );
        };
        match m.mount("the state", src, &MountOpts::default(), false, &dir, mounts) {
            Ok(()) => {
                let own = dir.join(node.as_str());
                let existed = own.is_dir();
                match mkdir(&own, 0o755) {
                    Ok(()) => {
                        info!(
                            "state directory {src}/{node} {}",
                            if existed {
                                "found"
                            } else {
                                "created (first boot)"
                            }
                        );
                        state = Some(own);
                    }
                    Err(e) => degraded(e.to_string()),
                }
            }
            Err(e) => degraded(e.to_string()),
        }
    } else {
        warn!("no persistent storage (no STATEMNT): persistent paths are read-only");
    }
    let mut trees = Vec::new();
    for (i, t) in plan.trees.iter().enumerate() {
        match &t.location {
            Location::Local(p) => {
                if p.is_dir() {
                    trees.push(p.clone());
                } else {
                    error!(
                        "litetree source {} (priority {i}) is not a directory: skipped, lower priorities serve",
                        p.display()
                    );
                }
            }
            Location::Nfs(src) => {
                let dir = run.join("tree").join(i.to_string());
                mkdir(&dir, 0o755)?;
                match m.mount("litetree source", src, &t.mntopts, true, &dir, mounts) {
                    Ok(()) => trees.push(dir),
                    Err(e) => error!(
                        "litetree source {src} (priority {i}) is unavailable: {e}; skipped, lower priorities serve"
                    ),
                }
            }
        }
    }
    Ok(LayerPaths {
        image,
        trees,
        volatile: run.join("volatile"),
        state,
        localdisk: None,
    })
}

fn symlink_root(
    plan: &Plan,
    layers: LayerPaths,
    sysroot: &Path,
    sinks: &Arc<Mutex<Sinks>>,
) -> Result<(), BootError> {
    let cfg = SymlinkConfig {
        image: layers.image,
        rules: plan.rules(),
        trees: layers.trees,
        state: layers.state,
        localdisk: None,
        mountpoint: sysroot.to_path_buf(),
    };
    let m = symlink_mode::setup(&cfg)?;
    // Our lines join rc.statelite's in the root's log (same file, appended).
    if let Ok(f) = open_log(&sysroot.join(".statelite/statelite.log")) {
        attach_log_file(sinks, f);
    }
    for p in &m.problems {
        warn!("{p}");
    }
    if m.degraded {
        error!("DEGRADED: persistent entries are read-only");
    }
    info!(
        "symlink-mode root ready on {} ({} mounts)",
        sysroot.display(),
        m.mounts.len()
    );
    Ok(())
}

fn fuse_root(
    args: &BootArgs,
    plan: &Plan,
    layers: LayerPaths,
    sysroot: &Path,
    run: &Path,
    sinks: &Arc<Mutex<Sinks>>,
    mounts: &mut Mounts,
) -> Result<(), BootError> {
    mkdir(&layers.volatile, 0o755)?;
    mount_tmpfs(&layers.volatile, "statelite-volatile")?;
    mounts.0.push(layers.volatile.clone());
    let state = layers.state.clone();
    let cfg = MountConfig {
        layers,
        mountpoint: sysroot.to_path_buf(),
        threads: args.threads,
        generation_interval: Duration::from_secs_f64(args.generation_interval.max(0.1)),
        options: OverlayOptions {
            passthrough: !args.no_passthrough,
            no_open: args.no_open || OverlayOptions::default().no_open,
            ..OverlayOptions::default()
        },
    };
    // Fork while single-threaded (the FUSE session starts threads). The parent returns to
    // the init script once the child reports the root ready.
    let ready = match daemonize()? {
        Fork::Parent(Ok(())) => {
            // The child owns the mounts now.
            mounts.0.clear();
            return Ok(());
        }
        Fork::Parent(Err(msg)) => {
            // The child reports after its cleanup; but if it died without a word, the
            // mounts are still there.
            if msg == DIED {
                let _ = symlink_mode::teardown(sysroot);
                mounts.undo();
            }
            mounts.0.clear();
            return Err(BootError::Daemon(msg));
        }
        Fork::Child(fd) => fd,
    };
    let mut ready = Some(ready);
    let r = serve_root(
        plan,
        &cfg,
        state.as_deref(),
        sysroot,
        run,
        sinks,
        &mut ready,
    );
    match r {
        Ok(Served::Unmounted) => {
            // The sources under the run directory stay for boot-teardown (or the node's
            // shutdown).
            mounts.0.clear();
            std::process::exit(0);
        }
        Ok(Served::SessionFailed(e)) => {
            error!("{e}");
            mounts.0.clear();
            std::process::exit(1);
        }
        Err(e) => {
            // Setup failed before the root was ready: undo, then tell the parent.
            let _ = symlink_mode::teardown(sysroot);
            mounts.undo();
            if let Some(fd) = ready.take() {
                let _ = nix::unistd::write(&fd, e.to_string().as_bytes());
            }
            std::process::exit(1);
        }
    }
}

/// The daemon: mount the root, finish `/.statelite`, report ready, serve until unmounted.
fn serve_root(
    plan: &Plan,
    cfg: &MountConfig,
    state: Option<&Path>,
    sysroot: &Path,
    run: &Path,
    sinks: &Arc<Mutex<Sinks>>,
    ready: &mut Option<OwnedFd>,
) -> Result<Served, BootError> {
    let fuse_err = |problem: String| BootError::Fuse {
        path: sysroot.to_path_buf(),
        problem,
    };
    let mounted = fsmount::mount(plan.rules(), cfg).map_err(|e| fuse_err(e.to_string()))?;
    let overlay = mounted.overlay.clone();
    let interval = cfg.generation_interval;
    // The session serves from its own thread: the mounts below go through it.
    let session = std::thread::Builder::new()
        .name("fuse".into())
        .spawn(move || mounted.run(interval))
        .map_err(|e| fuse_err(format!("starting the session: {e}")))?;
    let finish = || -> Result<(), BootError> {
        let sl = sysroot.join(".statelite");
        mount_tmpfs(&sl, "statelite")?;
        let persistent = sl.join("persistent");
        mkdir(&persistent, 0o755)?;
        match state {
            Some(dir) => mount(
                Some(dir),
                &persistent,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| io_err("bind the state directory on", &persistent)(errno_io(e)))?,
            None => {
                // Visible to anyone looking, and to scripts.
                let _ = std::fs::write(
                    sl.join("degraded"),
                    "persistent storage unavailable: persistent paths are read-only\n",
                );
            }
        }
        attach_log_file(sinks, open_log(&sl.join("statelite.log"))?);
        // `litectl reload` asks the same rules source again.
        let source = plan.source.clone();
        let reload: control::Reloader = Arc::new(move || {
            let nr = source.fetch().map_err(|e| e.to_string())?;
            let rules = RuleSet::for_image(&nr.rows, &nr.image_name);
            match rules.violations().first() {
                Some(v) => Err(format!("{}: {v}", nr.origin)),
                None => Ok(rules),
            }
        });
        let ctl = control::Control {
            overlay: overlay.clone(),
            reload: Some(reload),
            log: std::fs::File::open(sl.join("statelite.log"))
                .ok()
                .map(std::sync::Arc::new),
        };
        control::serve(sl.join("control.sock"), ctl)
            .map_err(io_err("control socket", &sl.join("control.sock")))?;
        let pidfile = run.join("mountd.pid");
        std::fs::write(&pidfile, format!("{}\n", std::process::id()))
            .map_err(io_err("write", &pidfile))?;
        Ok(())
    };
    if let Err(e) = finish() {
        // Unmounting the root ends the session thread.
        let _ = symlink_mode::teardown(sysroot);
        let _ = session.join();
        return Err(e);
    }
    // systemd-shutdown stops every process, us included, for a moment in each killing
    // round; keep what it looks up on the root meanwhile in the kernel's caches.
    if let Err(e) = statelite_mountd::shutdown_guard::spawn(
        PathBuf::from("/proc/1/root"),
        Duration::from_millis(50),
    ) {
        warn!("shutdown guard: {e}");
    }
    // SPEC §5: the kernel's OOM killer must never pick the root's daemon.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        warn!("oom_score_adj: {e}");
    }
    info!(
        "statelite root ready on {} (pid {})",
        sysroot.display(),
        std::process::id()
    );
    // Let go of the caller's terminal/pipes, then report ready.
    detach_stdio(sinks);
    if let Some(fd) = ready.take() {
        // Closing the pipe (drop) ends the parent's wait.
        let _ = nix::unistd::write(&fd, b"ok");
    }
    let r = session.join();
    info!("root on {} unmounted; daemon exits", sysroot.display());
    Ok(match r {
        Ok(Ok(())) => Served::Unmounted,
        Ok(Err(e)) => Served::SessionFailed(fuse_err(format!("session ended: {e}"))),
        Err(_) => Served::SessionFailed(fuse_err("session thread failed".into())),
    })
}

/// How a daemon that got its root ready ended.
enum Served {
    Unmounted,
    SessionFailed(BootError),
}

const DIED: &str = "the daemon exited before the root was ready";

fn detach_stdio(sinks: &Mutex<Sinks>) {
    sinks.lock().unwrap_or_else(|e| e.into_inner()).console = false;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays open for the call.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

enum Fork {
    Parent(Result<(), String>),
    Child(OwnedFd),
}

/// Forks; the parent waits for "ok" (or an error message) on a pipe.
fn daemonize() -> Result<Fork, BootError> {
    let (r, w) = nix::unistd::pipe().map_err(|e| BootError::Daemon(format!("pipe: {e}")))?;
    // SAFETY: called while the process is single-threaded (before the FUSE session).
    match unsafe { nix::unistd::fork() }.map_err(|e| BootError::Daemon(format!("fork: {e}")))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match nix::unistd::read(&r, &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            Ok(Fork::Parent(if buf == b"ok" {
                Ok(())
            } else if buf.is_empty() {
                Err(DIED.into())
            } else {
                Err(String::from_utf8_lossy(&buf).into_owned())
            }))
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            // SAFETY: a fresh descriptor from pipe(), owned only here.
            Ok(Fork::Child(unsafe {
                OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(w))
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Teardown (tests, admins): everything boot mounted.

#[derive(clap::Args, Debug)]
pub struct TeardownArgs {
    /// The sysroot given to `boot`.
    #[arg(long)]
    pub sysroot: PathBuf,
    /// The run directory given to `boot`.
    #[arg(long, default_value = "/run/statelite")]
    pub run_dir: PathBuf,
}

/// Unmounts the root (either mode, with everything below it), waits for the daemon to
/// exit, then unmounts the sources under the run directory.
pub fn teardown(args: &TeardownArgs) -> Result<(), String> {
    let pidfile = args.run_dir.join("mountd.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&p| p > 1);
    symlink_mode::teardown(&args.sysroot).map_err(|e| e.to_string())?;
    if let Some(pid) = pid {
        let pid = nix::unistd::Pid::from_raw(pid);
        let alive = || nix::sys::signal::kill(pid, None).is_ok() && is_mountd(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    if args.run_dir.exists() {
        symlink_mode::teardown(&args.run_dir).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The pid still names our daemon (not a recycled pid).
fn is_mountd(pid: nix::unistd::Pid) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let argv0 = c.split(|&b| b == 0).next().unwrap_or_default();
        let name = OsString::from(String::from_utf8_lossy(argv0).into_owned());
        Path::new(&name)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("statelite-mountd"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfs_mount_arguments() {
        let addr: IpAddr = "10.0.2.100".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let opts = MountOpts::parse("ro,port=20490").unwrap_or_default();
        let m = nfs_mount_args(&opts, true, addr);
        assert_eq!(m.fstype, "nfs4");
        assert_eq!(m.flags, MsFlags::MS_RDONLY);
        assert_eq!(m.data, "vers=4.1,port=20490,addr=10.0.2.100");
        let opts = MountOpts::parse("vers=3,rw,addr=10.0.0.9").unwrap_or_default();
        let m = nfs_mount_args(&opts, false, addr);
        assert_eq!(m.fstype, "nfs");
        assert_eq!(m.flags, MsFlags::empty());
        assert_eq!(m.data, "vers=3,addr=10.0.0.9,nolock");
        let v6: IpAddr = "fd00::1".parse().unwrap_or(addr);
        assert_eq!(
            nfs_mount_args(&MountOpts::default(), false, v6).data,
            "vers=4.1,addr=fd00::1"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff {
            tries: 8,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        };
        let mut rng = 12345;
        for n in 0..40 {
            let full = Duration::from_millis(500)
                .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
                .min(Duration::from_secs(30));
            let d = b.delay(n, &mut rng);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn locations_and_fakes() {
        assert_eq!(
            Location::parse("/srv/tree").ok(),
            Some(Location::Local("/srv/tree".into()))
        );
        assert!(matches!(Location::parse("s:/t"), Ok(Location::Nfs(_))));
        assert!(Location::parse("/a/../b").is_err());
        assert!(Location::parse("tree").is_err());
        assert!(parse_fake("s:/img=/tmp/x").is_ok());
        assert!(parse_fake("s:/img").is_err());
        assert!(parse_fake("s:/img=rel").is_err());
    }
}

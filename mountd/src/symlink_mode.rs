//! Symlink mode on the node: what xCAT's `rc.statelite` (with dracut's `xcatroot`) does before
//! `switch_root`, without a shell, on an image rewritten by `statelite liteimg`.
//!
//! The new root at MOUNTPOINT is built from:
//! 1. the image, bind-mounted read-only (it is shared by every node and never written);
//! 2. a tmpfs on `MOUNTPOINT/.statelite` (hiding the image's own `.statelite`, so the image's
//!    `P -> .statelite/tmpfs/P` links now land in per-node memory), with `tmpfs/`, the
//!    node's state directory bind-mounted on `persistent/`, and each litetree source
//!    bind-mounted read-only on `mnt/<n>`;
//! 3. then every litefile entry, parents before children (xCAT's `ResolveLinks`/`ProcessType`):
//!    - tmpfs-like entries are filled in `.statelite/tmpfs/P` from the first litetree hit,
//!      else `/.default/P`; `link` entries need nothing more (the image's link chain points
//!      there), other top-level entries get `.statelite/tmpfs/P` bind-mounted on `P`;
//!    - persistent entries live in `.statelite/persistent/P`, created from the litetree hit
//!      or `.default` on first use and left alone afterwards; `link,persistent` points the
//!      tmpfs link there (top level) or bind-mounts it (below a link directory); others are
//!      bind-mounted on `P`;
//!    - `ro` bind-mounts the hit read-only on `P`; `link,ro` points `.statelite/tmpfs/P` at it;
//!    - `con` concatenates the image's `.default/P` and every litetree hit into tmpfs.
//!
//!    Every action is appended to `MOUNTPOINT/.statelite/statelite.log`, in xCAT's wording.
//!
//! Differences from xCAT, on purpose: links we create are relative (they work both at
//! MOUNTPOINT and after `switch_root`; xCAT's are absolute); every path below MOUNTPOINT is
//! resolved with `openat2` inside the new root, so a hostile image or litetree cannot point
//! a mount or a copy outside it; `ro` binds really are read-only (xCAT's `mount --bind -o ro`
//! was silently read-write on older kernels); with no state directory, persistent entries
//! are served read-only and the mount is degraded, never silently volatile (SPEC §5).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use statelite_fs::rules::{LiteRule, Method, RuleSet, Storage};

#[path = "../../tools/src/liteimg/safe_fs.rs"]
mod safe_fs;

use safe_fs::{Existing, HardLinks, Kind};

/// Everything symlink mode needs; the caller has mounted the image, state and litetree
/// sources (NFS) already, or passes local directories.
#[derive(Debug)]
pub struct SymlinkConfig {
    /// The image root (liteimg'd), never written.
    pub image: PathBuf,
    /// The litefile rules for this image.
    pub rules: RuleSet,
    /// Litetree sources, highest priority first.
    pub trees: Vec<PathBuf>,
    /// The node's own state directory (`<statemnt>/<node>`); `None` when persistent storage
    /// is unavailable: persistent entries are then served read-only (degraded).
    pub state: Option<PathBuf>,
    /// Local-disk directory for `localdisk` entries (xCAT's `/.sllocal/localmnt`).
    pub localdisk: Option<PathBuf>,
    /// Where the new root is assembled.
    pub mountpoint: PathBuf,
}

/// A set-up symlink-mode root. Dropping it leaves everything mounted (the node runs on it);
/// call [`teardown`] to undo.
#[derive(Debug)]
pub struct SymlinkMount {
    pub mountpoint: PathBuf,
    /// Mount points created, in order (host paths).
    pub mounts: Vec<PathBuf>,
    /// Entries that could not be realised as asked (also in the log). Boot goes on, as
    /// with xCAT, but the node should report them.
    pub problems: Vec<String>,
    /// True when persistent or local-disk entries are served read-only for lack of storage.
    pub degraded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SymlinkError {
    #[error(
        "{}: not a statelite image prepared by liteimg (no .statelite/litefile.save): run \
         `statelite liteimg` for it on the management node, or boot it in FUSE mode",
        .0.display()
    )]
    NotLiteimged(PathBuf),
    #[error("mount {what} on {}: {source}", .target.display())]
    Mount {
        what: String,
        target: PathBuf,
        source: io::Error,
    },
    #[error("{}: {action}: {source}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("unmount {}: {source}", .target.display())]
    Unmount { target: PathBuf, source: io::Error },
}

fn io_at(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(io::Error) -> SymlinkError {
    let path = path.into();
    move |source| SymlinkError::Io {
        path,
        action,
        source,
    }
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

struct Node {
    mountpoint: PathBuf,
    root: OwnedFd,
    tmpfs: Rc<OwnedFd>,
    persistent: Option<Rc<OwnedFd>>,
    localdisk: Option<Rc<OwnedFd>>,
    trees: Vec<OwnedFd>,
    default: Option<OwnedFd>,
    log: File,
    out: SymlinkMount,
    links: HardLinks,
}

/// Where an entry's content comes from.
struct Source {
    dir: OwnedFd,
    name: OsString,
    /// The path as the node sees it after switch_root (for the log and for links).
    shown: String,
}

/// Builds the symlink-mode root at `cfg.mountpoint`. On error, everything mounted so far is
/// unmounted again.
pub fn setup(cfg: &SymlinkConfig) -> Result<SymlinkMount, SymlinkError> {
    let mut mounts = Vec::new();
    match build(cfg, &mut mounts) {
        Ok(m) => Ok(m),
        Err(e) => {
            // Best effort: the original error is what matters.
            let _ = teardown(&cfg.mountpoint);
            Err(e)
        }
    }
}

fn bind(
    source: &Path,
    target: &Path,
    read_only: bool,
    what: &str,
    mounts: &mut Vec<PathBuf>,
    shown_target: &Path,
) -> Result<(), SymlinkError> {
    let err = |source: io::Error| SymlinkError::Mount {
        what: what.to_string(),
        target: shown_target.to_path_buf(),
        source,
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err(errno(e)))?;
    mounts.push(shown_target.to_path_buf());
    if read_only {
        // The new mount covers `target` now; a fresh lookup of the same path reaches it.
        mount(
            None::<&str>,
            shown_target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| err(errno(e)))?;
    }
    Ok(())
}

fn build(cfg: &SymlinkConfig, mounts: &mut Vec<PathBuf>) -> Result<SymlinkMount, SymlinkError> {
    let mp = std::fs::canonicalize(&cfg.mountpoint).map_err(io_at(&cfg.mountpoint, "resolve"))?;
    // 1. The image, read-only, private (our mounts below must not propagate to the host).
    bind(
        &cfg.image,
        &mp,
        true,
        "the image (read-only bind)",
        mounts,
        &mp,
    )?;
    mount(
        None::<&str>,
        &mp,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SymlinkError::Mount {
        what: "private propagation".into(),
        target: mp.clone(),
        source: errno(e),
    })?;
    let root = safe_fs::open_root(&mp).map_err(io_at(&mp, "open"))?;
    let sl_path = mp.join(".statelite");
    let image_sl = safe_fs::open_dir_beneath(root.as_fd(), ".statelite")
        .map_err(|_| SymlinkError::NotLiteimged(cfg.image.clone()))?;
    // `.statelite/` alone is no proof (`statelite imgupdate` creates it for its generation
    // file); without liteimg's links and `.default` copies the node would come up with
    // empty writable directories, so refuse.
    if !matches!(
        safe_fs::lstat_beneath(image_sl.as_fd(), "litefile.save"),
        Ok(Some(_))
    ) {
        return Err(SymlinkError::NotLiteimged(cfg.image.clone()));
    }
    // 2. tmpfs on /.statelite (through the verified fd: never a symlink out of the image).
    mount(
        Some("statelite"),
        &safe_fs::fd_path(image_sl.as_fd()),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| SymlinkError::Mount {
        what: "tmpfs".into(),
        target: sl_path.clone(),
        source: errno(e),
    })?;
    mounts.push(sl_path.clone());
    drop(image_sl);
    let sl =
        safe_fs::open_dir_beneath(root.as_fd(), ".statelite").map_err(io_at(&sl_path, "open"))?;
    let log = nix::fcntl::openat(
        sl.as_fd(),
        "statelite.log",
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_APPEND
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| io_at(sl_path.join("statelite.log"), "create")(errno(e)))?;
    let mut log = File::from(log);
    for d in ["tmpfs", "persistent", "mnt"] {
        safe_fs::create_dir(sl.as_fd(), OsStr::new(d), Mode::from_bits_truncate(0o755))
            .map_err(io_at(sl_path.join(d), "create"))?;
    }
    let logline = |log: &mut File, line: String| {
        // The log is diagnostics; a full tmpfs must not stop the boot.
        let _ = writeln!(log, "{line}");
    };
    // 3. Persistent state.
    let mut degraded = false;
    let persistent = match &cfg.state {
        Some(state) => {
            let target = sl_path.join("persistent");
            bind(
                state,
                &target,
                false,
                "the state directory",
                mounts,
                &target,
            )?;
            logline(
                &mut log,
                format!("mount --bind {} /.statelite/persistent", state.display()),
            );
            Some(Rc::new(
                safe_fs::open_dir_beneath(root.as_fd(), ".statelite/persistent")
                    .map_err(io_at(&target, "open"))?,
            ))
        }
        None => {
            degraded = true;
            logline(
                &mut log,
                "no persistent storage: persistent entries are read-only".into(),
            );
            None
        }
    };
    // 4. Litetree sources, read-only, in priority order.
    let mut trees = Vec::new();
    for (n, tree) in cfg.trees.iter().enumerate() {
        let name = n.to_string();
        let mnt = safe_fs::open_dir_beneath(root.as_fd(), ".statelite/mnt")
            .map_err(io_at(sl_path.join("mnt"), "open"))?;
        safe_fs::create_dir(
            mnt.as_fd(),
            OsStr::new(&name),
            Mode::from_bits_truncate(0o755),
        )
        .map_err(io_at(sl_path.join("mnt").join(&name), "create"))?;
        let target = sl_path.join("mnt").join(&name);
        bind(
            tree,
            &target,
            true,
            "a litetree source (read-only)",
            mounts,
            &target,
        )?;
        logline(
            &mut log,
            format!(
                "mount --bind -o ro {} /.statelite/mnt/{name}",
                tree.display()
            ),
        );
        trees.push(
            safe_fs::open_dir_beneath(root.as_fd(), &format!(".statelite/mnt/{name}"))
                .map_err(io_at(&target, "open"))?,
        );
    }
    let localdisk = match &cfg.localdisk {
        Some(dir) => Some(Rc::new(
            safe_fs::open_root(dir).map_err(io_at(dir, "open"))?,
        )),
        None => None,
    };
    let default = safe_fs::open_dir_beneath(root.as_fd(), ".default").ok();
    let tmpfs = Rc::new(
        safe_fs::open_dir_beneath(root.as_fd(), ".statelite/tmpfs")
            .map_err(io_at(sl_path.join("tmpfs"), "open"))?,
    );
    let mut node = Node {
        mountpoint: mp.clone(),
        root,
        tmpfs,
        persistent,
        localdisk,
        trees,
        default,
        log,
        out: SymlinkMount {
            mountpoint: mp,
            mounts: std::mem::take(mounts),
            problems: Vec::new(),
            degraded,
        },
        links: HardLinks::default(),
    };
    let rules = cfg.rules.rules();
    for (i, rule) in rules.iter().enumerate() {
        let parent = rules[..i]
            .iter()
            .rev()
            .find(|p| p.is_dir && p.path.is_ancestor_of(&rule.path));
        if let Err(problem) = node.entry(rule, parent) {
            let line = format!("{}: {problem}", rule.path);
            node.log(format!("ERROR {line}"));
            node.out.problems.push(line);
        }
    }
    // rc.statelite: "make sure mtab points to the right place".
    if rules
        .iter()
        .any(|r| r.path.as_str() == "/etc/mtab" && r.options.method() == Method::Link)
        && let Ok(etc) = safe_fs::open_dir_beneath(node.tmpfs.as_fd(), "etc")
    {
        let _ = safe_fs::remove_tree(etc.as_fd(), OsStr::new("mtab"));
        if safe_fs::symlink_at(OsStr::new("/proc/mounts"), etc.as_fd(), OsStr::new("mtab")).is_ok()
        {
            node.log("ln -sf /proc/mounts /.statelite/tmpfs/etc/mtab".into());
        }
    }
    Ok(node.out)
}

impl Node {
    fn log(&mut self, line: String) {
        let _ = writeln!(self.log, "{line}");
    }

    /// First litetree hit (a file, or a non-empty directory), else `/.default/P`; `all`
    /// returns every litetree hit (for `con`) and no default.
    fn sources(&self, rel: &str, all: bool) -> Vec<Source> {
        let (parent, name) = safe_fs::split_rel(rel);
        let mut found = Vec::new();
        for (n, tree) in self.trees.iter().enumerate() {
            let Ok(dir) = safe_fs::open_dir_beneath(tree.as_fd(), parent) else {
                continue;
            };
            let Ok(Some(st)) = safe_fs::lstat_at(dir.as_fd(), OsStr::new(name)) else {
                continue;
            };
            // xCAT skips an empty directory in a litetree and keeps looking.
            if safe_fs::kind_of(&st) == Kind::Dir
                && safe_fs::is_empty_entry(dir.as_fd(), OsStr::new(name)).unwrap_or(true)
            {
                continue;
            }
            found.push(Source {
                dir,
                name: name.into(),
                shown: format!("/.statelite/mnt/{n}/{rel}"),
            });
            if !all {
                return found;
            }
        }
        if !all && let Some(default) = self.default_source(rel) {
            found.push(default);
        }
        found
    }

    fn default_source(&self, rel: &str) -> Option<Source> {
        let (parent, name) = safe_fs::split_rel(rel);
        let dir = safe_fs::open_dir_beneath(self.default.as_ref()?.as_fd(), parent).ok()?;
        safe_fs::lstat_at(dir.as_fd(), OsStr::new(name)).ok()??;
        Some(Source {
            dir,
            name: name.into(),
            shown: format!("/.default/{rel}"),
        })
    }

    /// Copies `src` to `rel` in `store` (`cp -r -a`, merging into an existing directory),
    /// or creates an empty entry when there is no source.
    fn fill(
        &mut self,
        store: &Rc<OwnedFd>,
        store_shown: &str,
        rel: &str,
        is_dir: bool,
        src: Option<&Source>,
    ) -> Result<(), String> {
        let (parent, name) = safe_fs::split_rel(rel);
        let mut created = Vec::new();
        let dir = safe_fs::mkdirs_beneath(
            store.as_fd(),
            parent,
            Mode::from_bits_truncate(0o755),
            &mut created,
        )
        .map_err(|e| format!("mkdir -p {store_shown}/{parent}: {e}"))?;
        if !created.is_empty() {
            self.log(format!("mkdir -p {store_shown}/{parent}"));
        }
        let dir = Rc::new(dir);
        match src {
            Some(src) => {
                safe_fs::copy_tree(
                    src.dir.as_fd(),
                    &src.name,
                    &dir,
                    OsStr::new(name),
                    Existing::Merge,
                    &mut self.links,
                )
                .map_err(|e| format!("cp -r -a {} {store_shown}/{rel}: {e}", src.shown))?;
                self.log(format!("cp -r -a {} {store_shown}/{rel}", src.shown));
            }
            None => {
                if safe_fs::lstat_at(dir.as_fd(), OsStr::new(name))
                    .map_err(|e| e.to_string())?
                    .is_none()
                {
                    let r = if is_dir {
                        safe_fs::create_dir(
                            dir.as_fd(),
                            OsStr::new(name),
                            Mode::from_bits_truncate(0o755),
                        )
                    } else {
                        safe_fs::create_empty_file(
                            dir.as_fd(),
                            OsStr::new(name),
                            Mode::from_bits_truncate(0o644),
                        )
                    };
                    r.map_err(|e| format!("create {store_shown}/{rel}: {e}"))?;
                    self.log(format!(
                        "Could not find /{rel} in defaults or any other place; created it empty in {store_shown}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Bind-mounts `source_rel` (inside the new root) on `target_rel`, both resolved inside
    /// the new root.
    fn bind_in_root(
        &mut self,
        source: BorrowedFd<'_>,
        source_shown: &str,
        target_rel: &str,
        read_only: bool,
    ) -> Result<(), String> {
        let target = safe_fs::open_path_in_root(self.root.as_fd(), target_rel)
            .map_err(|e| format!("mount point /{target_rel}: {e}"))?;
        let host_target = self.mountpoint.join(target_rel);
        let mut mounts = Vec::new();
        let r = bind(
            &safe_fs::fd_path(source),
            &safe_fs::fd_path(target.as_fd()),
            false,
            "entry",
            &mut mounts,
            &host_target,
        );
        self.out.mounts.extend(mounts);
        r.map_err(|e| e.to_string())?;
        if read_only {
            // Remount through a fresh in-root lookup, which now reaches the new mount.
            let again = safe_fs::open_path_in_root(self.root.as_fd(), target_rel)
                .map_err(|e| format!("mount point /{target_rel}: {e}"))?;
            mount(
                None::<&str>,
                &safe_fs::fd_path(again.as_fd()),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("remount /{target_rel} read-only: {e}"))?;
        }
        let ro = if read_only { " -o ro" } else { "" };
        self.log(format!("mount --bind{ro} {source_shown} /{target_rel}"));
        Ok(())
    }

    fn open_source_path(&self, src: &Source) -> Result<OwnedFd, String> {
        let how = nix::fcntl::OpenHow::new()
            .flags(
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
            )
            .resolve(nix::fcntl::ResolveFlag::RESOLVE_BENEATH);
        nix::fcntl::openat2(src.dir.as_fd(), src.name.as_os_str(), how)
            .map_err(|e| format!("open {}: {e}", src.shown))
    }

    /// Replaces `.statelite/tmpfs/P` with a symlink.
    fn tmpfs_link(&mut self, rel: &str, target: &str) -> Result<(), String> {
        let (parent, name) = safe_fs::split_rel(rel);
        let mut created = Vec::new();
        let dir = safe_fs::mkdirs_beneath(
            self.tmpfs.as_fd(),
            parent,
            Mode::from_bits_truncate(0o755),
            &mut created,
        )
        .map_err(|e| format!("mkdir -p /.statelite/tmpfs/{parent}: {e}"))?;
        safe_fs::remove_tree(dir.as_fd(), OsStr::new(name)).map_err(|e| e.to_string())?;
        safe_fs::symlink_at(OsStr::new(target), dir.as_fd(), OsStr::new(name))
            .map_err(|e| format!("ln -sf {target} /.statelite/tmpfs/{rel}: {e}"))?;
        self.log(format!("ln -sf {target} /.statelite/tmpfs/{rel}"));
        Ok(())
    }

    fn entry(&mut self, rule: &LiteRule, parent: Option<&LiteRule>) -> Result<(), String> {
        let rel = rule.path.relative();
        let depth = rule.path.depth();
        let child = parent.is_some();
        let method = rule.options.method();
        let tmpfs = Rc::clone(&self.tmpfs);
        // From .statelite/tmpfs/P up to the new root: one `..` per component of P, plus one
        // for .statelite/tmpfs's two levels, minus the entry itself.
        let to_root = "../".repeat(depth + 1);
        match rule.storage() {
            Storage::Tmpfs => {
                let src = self.sources(rel, false).into_iter().next();
                self.fill(&tmpfs, "/.statelite/tmpfs", rel, rule.is_dir, src.as_ref())?;
                if method != Method::Link && !child {
                    let fd = safe_fs::open_path_in_root(tmpfs.as_fd(), rel)
                        .map_err(|e| e.to_string())?;
                    self.bind_in_root(fd.as_fd(), &format!("/.statelite/tmpfs/{rel}"), rel, false)?;
                }
            }
            Storage::Persistent | Storage::LocalDisk => {
                let (store, shown) = if rule.storage() == Storage::Persistent {
                    (self.persistent.clone(), "/.statelite/persistent")
                } else {
                    (self.localdisk.clone(), "/.sllocal/localmnt")
                };
                let src = self.sources(rel, false).into_iter().next();
                let Some(store) = store else {
                    // Degraded: serve the initial content read-only, never volatile.
                    self.out.degraded = true;
                    let Some(src) = src else {
                        return Err("no storage and no initial content".into());
                    };
                    if method == Method::Link {
                        let target = format!("{to_root}{}", src.shown.trim_start_matches('/'));
                        return self.tmpfs_link(rel, &target);
                    }
                    let fd = self.open_source_path(&src)?;
                    return self.bind_in_root(fd.as_fd(), &src.shown, rel, true);
                };
                let exists = safe_fs::lstat_beneath(store.as_fd(), rel)
                    .map_err(|e| e.to_string())?
                    .is_some();
                if !exists {
                    self.fill(&store, shown, rel, rule.is_dir, src.as_ref())?;
                }
                let parent_same_store = parent.is_some_and(|p| p.storage() == rule.storage());
                if method == Method::Link && !child {
                    let target = format!(
                        "../{}{}/{rel}",
                        "../".repeat(depth - 1),
                        shown.trim_start_matches("/.statelite/")
                    );
                    self.tmpfs_link(rel, &target)?;
                } else if method == Method::Link {
                    // Below a link directory: bind over the copy in tmpfs.
                    let exists = safe_fs::lstat_beneath(tmpfs.as_fd(), rel)
                        .map_err(|e| e.to_string())?
                        .is_some();
                    if !exists {
                        self.fill(&tmpfs, "/.statelite/tmpfs", rel, rule.is_dir, None)?;
                    }
                    let fd = safe_fs::open_path_in_root(store.as_fd(), rel)
                        .map_err(|e| e.to_string())?;
                    self.bind_in_root(
                        fd.as_fd(),
                        &format!("{shown}/{rel}"),
                        &format!(".statelite/tmpfs/{rel}"),
                        false,
                    )?;
                } else if !parent_same_store {
                    let fd = safe_fs::open_path_in_root(store.as_fd(), rel)
                        .map_err(|e| e.to_string())?;
                    self.bind_in_root(fd.as_fd(), &format!("{shown}/{rel}"), rel, false)?;
                }
            }
            Storage::Ro => {
                let Some(src) = self.sources(rel, false).into_iter().next() else {
                    return Err(
                        "read-only entry found in no litetree source and not in /.default".into(),
                    );
                };
                if method == Method::Link {
                    let target = format!("{to_root}{}", src.shown.trim_start_matches('/'));
                    self.tmpfs_link(rel, &target)?;
                } else {
                    let fd = self.open_source_path(&src)?;
                    self.bind_in_root(fd.as_fd(), &src.shown, rel, true)?;
                }
            }
            Storage::Con => {
                let (parent_rel, name) = safe_fs::split_rel(rel);
                let mut created = Vec::new();
                let dir = safe_fs::mkdirs_beneath(
                    tmpfs.as_fd(),
                    parent_rel,
                    Mode::from_bits_truncate(0o755),
                    &mut created,
                )
                .map_err(|e| e.to_string())?;
                safe_fs::remove_tree(dir.as_fd(), OsStr::new(name)).map_err(|e| e.to_string())?;
                let fd = nix::fcntl::openat(
                    dir.as_fd(),
                    name,
                    nix::fcntl::OFlag::O_WRONLY
                        | nix::fcntl::OFlag::O_CREAT
                        | nix::fcntl::OFlag::O_EXCL
                        | nix::fcntl::OFlag::O_NOFOLLOW
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .map_err(|e| format!("create /.statelite/tmpfs/{rel}: {e}"))?;
                let mut out = File::from(fd);
                let mut parts: Vec<Source> = self.default_source(rel).into_iter().collect();
                parts.extend(self.sources(rel, true));
                for part in &parts {
                    safe_fs::append_file(part.dir.as_fd(), &part.name, &mut out).map_err(|e| {
                        format!("cat {} >>/.statelite/tmpfs/{rel}: {e}", part.shown)
                    })?;
                    self.log(format!("cat {} >>/.statelite/tmpfs/{rel}", part.shown));
                }
                if method != Method::Link && !child {
                    let fd = safe_fs::open_path_in_root(tmpfs.as_fd(), rel)
                        .map_err(|e| e.to_string())?;
                    self.bind_in_root(fd.as_fd(), &format!("/.statelite/tmpfs/{rel}"), rel, false)?;
                }
            }
        }
        Ok(())
    }
}

/// Mount points at or below `mountpoint` from `/proc/self/mountinfo`, in mount order.
fn mounts_below(mountpoint: &Path) -> Result<Vec<PathBuf>, SymlinkError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_at("/proc/self/mountinfo", "read"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let path = PathBuf::from(unescape_mountinfo(field));
        if path.starts_with(mountpoint) {
            out.push(path);
        }
    }
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

/// Unmounts everything at or below `mountpoint`, last mounted first, from any process
/// (the mount table is the record). Busy mounts are lazily detached as a last resort.
pub fn teardown(mountpoint: &Path) -> Result<(), SymlinkError> {
    let mp = std::fs::canonicalize(mountpoint).map_err(io_at(mountpoint, "resolve"))?;
    // A mount may hide others; loop until nothing is left below the mountpoint.
    for _ in 0..8 {
        let mounts = mounts_below(&mp)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for target in mounts.iter().rev() {
            match umount2(target, MntFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(nix::errno::Errno::EBUSY) => {
                    umount2(target, MntFlags::MNT_DETACH).map_err(|e| SymlinkError::Unmount {
                        target: target.clone(),
                        source: errno(e),
                    })?
                }
                Err(e) => {
                    return Err(SymlinkError::Unmount {
                        target: target.clone(),
                        source: errno(e),
                    });
                }
            }
        }
    }
    match mounts_below(&mp)?.first() {
        None => Ok(()),
        Some(left) => Err(SymlinkError::Unmount {
            target: left.clone(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b\134c"),
            OsString::from("/a b\\c")
        );
        assert_eq!(unescape_mountinfo(r"/plain"), OsString::from("/plain"));
        assert_eq!(unescape_mountinfo(r"/x\04"), OsString::from(r"/x\04"));
    }
}

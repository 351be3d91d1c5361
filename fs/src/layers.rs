//! The layers a node's root is merged from, each held as a directory descriptor:
//! the image (read-only), the litetree sources (read-only, in priority order), and the
//! writable stores (volatile, persistent, local disk).
//!
//! Also here: where a rule's content comes from (its *origin*), and how an image already
//! rewritten by `liteimg` is seen through (its `.default` copies are served in place of the
//! symlink chains).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backref::{BackRef, MountRoot};
use crate::sys;

/// Names at the image root that belong to liteimg, not to the node's tree.
pub const LITEIMG_DEFAULT: &str = ".default";
pub const STATELITE_DIR: &str = ".statelite";
/// Where `statelite imgupdate` records the image generation, relative to the image root.
pub const GENERATION_FILE: &str = ".statelite/generation";

/// Which layer an object was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase", tag = "layer", content = "index")]
pub enum LayerId {
    Image,
    /// A litetree source, by position in priority order (0 = highest).
    Tree(u16),
    Volatile,
    Persistent,
    LocalDisk,
}

impl LayerId {
    /// Small number folded into reported inode numbers so layers never collide.
    fn tag(self) -> u64 {
        match self {
            LayerId::Image => 0,
            LayerId::Volatile => 1,
            LayerId::Persistent => 2,
            LayerId::LocalDisk => 3,
            LayerId::Tree(n) => 4 + n as u64,
        }
    }
    pub fn is_store(self) -> bool {
        matches!(
            self,
            LayerId::Volatile | LayerId::Persistent | LayerId::LocalDisk
        )
    }
}

/// A writable store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Volatile,
    Persistent,
    LocalDisk,
}

impl StoreKind {
    pub fn layer(self) -> LayerId {
        match self {
            StoreKind::Volatile => LayerId::Volatile,
            StoreKind::Persistent => LayerId::Persistent,
            StoreKind::LocalDisk => LayerId::LocalDisk,
        }
    }
    pub fn is_durable(self) -> bool {
        !matches!(self, StoreKind::Volatile)
    }
}

/// Where the layers are, as given on the command line or by the boot code.
#[derive(Debug, Clone, Serialize)]
pub struct LayerPaths {
    pub image: PathBuf,
    pub trees: Vec<PathBuf>,
    pub volatile: PathBuf,
    /// The node's own persistent state directory; `None` when it could not be mounted
    /// (persistent paths are then read-only and the node is degraded).
    pub state: Option<PathBuf>,
    pub localdisk: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The open layer roots.
#[derive(Debug)]
pub struct LayerStack {
    pub paths: LayerPaths,
    image: Arc<MountRoot>,
    trees: Vec<Arc<MountRoot>>,
    volatile: Arc<MountRoot>,
    persistent: Option<Arc<MountRoot>>,
    localdisk: Option<Arc<MountRoot>>,
    /// The image has been through liteimg (it has a `.default` directory).
    liteimg: bool,
    /// `st_dev` of each layer root, to recognise when a layer's tree crosses a mount.
    image_dev: u64,
}

fn open_root(what: &'static str, path: &Path) -> Result<Arc<MountRoot>, LayerError> {
    open_root_fd(what, path).map(|fd| Arc::new(MountRoot::new(fd)))
}

fn open_root_fd(what: &'static str, path: &Path) -> Result<OwnedFd, LayerError> {
    sys::open_dir_path(path).map_err(|source| LayerError::Open {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A read-only layer's root: on a private read-only, `noatime` copy of its mount tree
/// (`sys::open_readonly_tree`), or where that is refused (no `CAP_SYS_ADMIN`, a kernel
/// before 5.12) on the mount itself, which the daemon never writes either.
fn open_readonly_root(what: &'static str, path: &Path) -> Result<Arc<MountRoot>, LayerError> {
    // The path is opened (and a bad one reported) as for any layer; the copy is made of
    // that directory.
    let plain = open_root_fd(what, path)?;
    let fd = match sys::open_readonly_tree(plain.as_fd()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(
                "{what} {}: no read-only copy of its mount ({e})",
                path.display()
            );
            plain
        }
    };
    Ok(Arc::new(MountRoot::new(fd)))
}

impl LayerStack {
    pub fn open(paths: LayerPaths) -> Result<LayerStack, LayerError> {
        let image = open_readonly_root("image", &paths.image)?;
        let mut trees = Vec::new();
        for t in &paths.trees {
            trees.push(open_readonly_root("litetree source", t)?);
        }
        let volatile = open_root("volatile store", &paths.volatile)?;
        let persistent = match &paths.state {
            Some(p) => Some(open_root("state directory", p)?),
            None => None,
        };
        let localdisk = match &paths.localdisk {
            Some(p) => Some(open_root("local-disk directory", p)?),
            None => None,
        };
        let liteimg = sys::open_beneath(
            image.fd.as_fd(),
            LITEIMG_DEFAULT,
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .is_ok();
        let image_dev = sys::fstat(image.fd.as_fd()).map(|s| s.st_dev).unwrap_or(0);
        Ok(LayerStack {
            paths,
            image,
            trees,
            volatile,
            persistent,
            localdisk,
            liteimg,
            image_dev,
        })
    }

    pub fn image(&self) -> BorrowedFd<'_> {
        self.image.fd.as_fd()
    }

    /// The root a layer's objects are reopened under.
    pub fn mount_root(&self, id: LayerId) -> Option<&Arc<MountRoot>> {
        match id {
            LayerId::Image => Some(&self.image),
            LayerId::Tree(n) => self.trees.get(n as usize),
            LayerId::Volatile => Some(&self.volatile),
            LayerId::Persistent => self.persistent.as_ref(),
            LayerId::LocalDisk => self.localdisk.as_ref(),
        }
    }

    /// Wraps a descriptor found in layer `id` as a [`BackRef`].
    pub fn backref(&self, id: LayerId, fd: OwnedFd) -> BackRef {
        match self.mount_root(id) {
            Some(root) => BackRef::new(fd, root),
            None => BackRef::new(fd, &self.volatile),
        }
    }
    pub fn image_dev(&self) -> u64 {
        self.image_dev
    }
    pub fn is_liteimg(&self) -> bool {
        self.liteimg
    }
    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// The root descriptor of a store, `None` when it is not available.
    pub fn store(&self, kind: StoreKind) -> Option<BorrowedFd<'_>> {
        match kind {
            StoreKind::Volatile => Some(self.volatile.fd.as_fd()),
            StoreKind::Persistent => self.persistent.as_ref().map(|f| f.fd.as_fd()),
            StoreKind::LocalDisk => self.localdisk.as_ref().map(|f| f.fd.as_fd()),
        }
    }

    pub fn layer_root(&self, id: LayerId) -> Option<BorrowedFd<'_>> {
        match id {
            LayerId::Image => Some(self.image.fd.as_fd()),
            LayerId::Tree(n) => self.trees.get(n as usize).map(|f| f.fd.as_fd()),
            LayerId::Volatile => self.store(StoreKind::Volatile),
            LayerId::Persistent => self.store(StoreKind::Persistent),
            LayerId::LocalDisk => self.store(StoreKind::LocalDisk),
        }
    }

    pub fn layer_path(&self, id: LayerId) -> Option<&Path> {
        match id {
            LayerId::Image => Some(&self.paths.image),
            LayerId::Tree(n) => self.paths.trees.get(n as usize).map(|p| p.as_path()),
            LayerId::Volatile => Some(&self.paths.volatile),
            LayerId::Persistent => self.paths.state.as_deref(),
            LayerId::LocalDisk => self.paths.localdisk.as_deref(),
        }
    }

    /// Opens `rel` (a rule path without its leading `/`) in the image as the node should
    /// see it: an image rewritten by liteimg keeps the real content in `.default/rel`.
    pub fn open_image(&self, rel: &str) -> io::Result<OwnedFd> {
        if self.liteimg {
            let dflt = format!("{LITEIMG_DEFAULT}/{rel}");
            match sys::open_beneath(self.image.fd.as_fd(), &dflt, libc::O_PATH) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        sys::open_beneath(self.image.fd.as_fd(), rel, libc::O_PATH)
    }

    /// The origin of a rule path: the first litetree source that has it, else the image.
    pub fn origin(&self, rel: &str) -> Option<(LayerId, OwnedFd)> {
        for (i, t) in self.trees.iter().enumerate() {
            if let Ok(fd) = sys::open_beneath(t.fd.as_fd(), rel, libc::O_PATH) {
                return Some((LayerId::Tree(i as u16), fd));
            }
        }
        self.open_image(rel).ok().map(|fd| (LayerId::Image, fd))
    }

    /// Every source of a `con` file in order: the image's file, then each litetree hit in
    /// priority order. Directories and other non-files are skipped.
    pub fn con_sources(&self, rel: &str) -> Vec<(LayerId, OwnedFd)> {
        let mut out = Vec::new();
        let mut push = |id: LayerId, fd: io::Result<OwnedFd>| {
            if let Ok(fd) = fd
                && let Ok(st) = sys::fstat(fd.as_fd())
                && sys::file_type(st.st_mode) == libc::S_IFREG
            {
                out.push((id, fd));
            }
        };
        push(LayerId::Image, self.open_image(rel));
        for (i, t) in self.trees.iter().enumerate() {
            push(
                LayerId::Tree(i as u16),
                sys::open_beneath(t.fd.as_fd(), rel, libc::O_PATH),
            );
        }
        out
    }

    /// True when `target`, the target of a symlink at image path `rel`, is the chain
    /// liteimg writes (`../../.statelite/tmpfs/<rel>` at the right depth): such a link
    /// is served as the `.default` copy it leads to.
    pub fn is_liteimg_link(&self, rel: &str, target: &[u8]) -> bool {
        if !self.liteimg {
            return false;
        }
        let depth = rel.bytes().filter(|&b| b == b'/').count();
        let mut want = "../".repeat(depth);
        want.push_str(".statelite/tmpfs/");
        want.push_str(rel);
        target == want.as_bytes()
    }

    /// Opens (creating as needed) the directory `rel_dir` inside a store, one component at a
    /// time without following symlinks. New directories copy the mode and owner of the
    /// image's directory at the same path, so the store looks like the tree it mirrors.
    pub fn store_dir(&self, kind: StoreKind, rel_dir: &str) -> io::Result<OwnedFd> {
        let root = self
            .store(kind)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EROFS))?;
        let mut cur = sys::open_at(root, c".", libc::O_PATH | libc::O_DIRECTORY)?;
        let mut so_far = String::new();
        for comp in rel_dir.split('/').filter(|c| !c.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(comp);
            let c = CString::new(comp).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            match sys::open_at(cur.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(fd) => cur = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let like = self
                        .open_image(&so_far)
                        .ok()
                        .and_then(|fd| sys::fstat(fd.as_fd()).ok());
                    let mode = like.map(|s| s.st_mode & 0o7777).unwrap_or(0o755);
                    match sys::mkdir_at(cur.as_fd(), &c, mode) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    let fd = sys::open_at(cur.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY)?;
                    if let Some(s) = like {
                        let _ = sys::chown_fd(fd.as_fd(), s.st_uid, s.st_gid);
                        let _ = sys::chmod_fd(fd.as_fd(), mode);
                    }
                    cur = fd;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// The inode number reported for an object: the layer's number tagged with the layer,
    /// so that objects of different layers never share one.
    pub fn report_ino(&self, layer: LayerId, st: &sys::Stat) -> u64 {
        let ino = st.st_ino;
        if ino < (1 << 56) {
            (layer.tag() << 56) | ino
        } else {
            // Very large inode numbers (some NFS servers): fold, keeping the tag.
            let folded = ino ^ (ino >> 56) ^ st.st_dev.rotate_left(17);
            (layer.tag() << 56) | (folded & ((1 << 56) - 1))
        }
    }
}

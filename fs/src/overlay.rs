//! The merged statelite root: name resolution across layers, the writable-area rules,
//! directory merging, and the FUSE operations built on them.
//!
//! Resolution is one component at a time from the parent inode (its descriptors and its
//! position in the rule trie), never by re-walking a path.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};

use crate::copy_up::{self, is_internal_name};
use crate::dir_ahead::DirAhead;
use crate::inode::{Area, Backing, Inode, InodeTable, NewInode, RetainedBacking, identity_of};
use crate::layers::{LITEIMG_DEFAULT, LayerId, LayerStack, STATELITE_DIR, StoreKind};
use crate::origin_names::OriginNames;
use crate::plus::{Entries, PlusPolicy};
use crate::reply::{
    AttrReply, Caller, CreateReply, DataReply, DirPlusReply, DirReply, EmptyReply, EntryReply,
    LseekReply, OpenReply, PassthroughId, StatfsReply, WriteReply, XattrReply,
};
use crate::rules::{RuleId, RuleSet, Storage, TrieNode};
use crate::stats::{DeniedLog, Op, Stats};
use crate::sys::{self, Stat};

/// `O_LARGEFILE` as the kernel sends it in open flags (asm-generic value, x86_64 and
/// aarch64). The libc crate defines it as 0 for 64-bit programs, as glibc does.
const KERNEL_O_LARGEFILE: i32 = 0o100000;

/// The largest write (and so ring payload) we negotiate.
pub const MAX_WRITE: usize = 1 << 20;

/// Inodes the daemon keeps before the coldest are handed back to the kernel. Sized by the
/// memory target (walking 1,000,000 files stays under 64 MiB of RSS): ~400 bytes per inode
/// live, ~530 with the heap's fragmentation, and the table overshoots the bound by up to
/// ~7 % between trimming passes (98,304 peaked at 105,157 inodes and 66.7 MiB). A tree of
/// up to this many entries stays entirely cached, so repeated walks of it stay warm.
pub const DEFAULT_MAX_INODES: usize = 81920;

/// The readahead window (KiB) the INIT reply asks for: below the kernel's 128 KiB default,
/// so that the window reading this value shows the reply has been applied.
pub const INIT_READ_AHEAD_KB: u32 = 124;

/// Tunables.
#[derive(Debug, Clone)]
pub struct OverlayOptions {
    /// How long the kernel may cache attributes and entries. Long: every change either goes
    /// through us (writable areas) or is announced by an image generation bump, after which
    /// we invalidate explicitly.
    pub ttl: Duration,
    /// Use FUSE passthrough for regular files when the kernel offers it.
    pub passthrough: bool,
    /// Let the kernel open directories without asking us (see `opendir`).
    pub no_opendir: bool,
    /// Let the kernel open regular files without asking us (no OPEN, RELEASE or FLUSH
    /// round trips; reads and writes arrive by inode and go through the page cache). Rules
    /// out passthrough. See `open` and README "FUSE semantics".
    pub no_open: bool,
    /// Inodes kept before the coldest are handed back to the kernel for forgetting: this
    /// bounds the daemon's memory however large the tree the node walks.
    pub max_inodes: usize,
    /// Serve requests over io_uring when the kernel can (see `ring`).
    pub uring: bool,
    /// The mount's readahead window in KiB (0: leave the kernel's 128 KiB). See
    /// `mount::widen_readahead`.
    pub read_ahead_kb: u32,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            ttl: Duration::from_secs(24 * 3600),
            passthrough: true,
            max_inodes: DEFAULT_MAX_INODES,
            read_ahead_kb: 4096,
            uring: true,
            no_opendir: true,
            // Opt-in (`STATELITE_NO_OPEN=1` in the daemon's environment) until large-file
            // reads match passthrough: see benches/RESULTS.md, run 4.
            no_open: std::env::var_os("STATELITE_NO_OPEN").is_some_and(|v| v == "1"),
        }
    }
}

/// Regular files at least this large are served by passthrough; smaller read-only opens go
/// through the kernel's page cache (read through us once, then served from memory, with no
/// descriptor opened until a read actually reaches us).
const PASSTHROUGH_MIN_SIZE: i64 = 1 << 20;

/// Read-around for random reads of large read-only files in no-open mode: the chunk size
/// pushed into the kernel's page cache (`prefetch`), and the read sizes that count as random
/// (the kernel's own readahead asks for more).
const PREFETCH_CHUNK: u64 = 1 << 20;
const PREFETCH_MAX_READ: u32 = 32 * 1024;
/// Chunks remembered as pushed (a bound; the record is cleared when full).
const PREFETCH_RECORD_MAX: usize = 1 << 20;

/// Descriptors kept open for handle-less I/O (no-open mode); the oldest is closed beyond.
pub const IO_FDS_MAX: usize = 1024;

/// Where a read or write goes: an open file's descriptor (classic mode) or the inode's
/// own (no-open mode).
enum IoSrc {
    File(Arc<OpenFile>),
    Inode(Arc<OwnedFd>),
}

impl IoSrc {
    fn fd(&self) -> Result<BorrowedFd<'_>, Errno> {
        match self {
            IoSrc::File(f) => f.fd(),
            IoSrc::Inode(fd) => Ok(fd.as_fd()),
        }
    }
}

/// An open file.
struct OpenFile {
    /// Opened at open(2) for writers; on the first read that reaches us for page-cache
    /// readers (a warm cache never does).
    fd: std::sync::OnceLock<OwnedFd>,
    lazy_flags: i32,
    inode: Arc<Inode>,
    /// Held while open: the kernel needs the backing id alive for passthrough opens.
    _backing: Option<Arc<PassthroughId>>,
    /// Counted in the inode's `cached_opens` (until dropped).
    cached: bool,
    /// Opened for writing in a persistent store: flush (close) syncs it.
    durable_write: bool,
}

/// The last reference to an open file gone (released, or never handed to the kernel): its
/// passthrough backing goes first, so that the inode's I/O state can be freed once idle.
impl Drop for OpenFile {
    fn drop(&mut self) {
        drop(self._backing.take());
        self.inode.release_io(self.cached);
    }
}

impl OpenFile {
    fn fd(&self) -> Result<BorrowedFd<'_>, Errno> {
        if self.fd.get().is_none() {
            let fd = self.inode.reopen_primary(self.lazy_flags).map_err(err)?;
            let _ = self.fd.set(fd); // a concurrent first read may have won: same file
        }
        self.fd.get().map(|f| f.as_fd()).ok_or(Errno::EIO)
    }
}

/// An open directory: its merged listing, taken at the first readdir (offsets index into
/// it). Built lazily because the kernel usually serves listings from its own cache and
/// never asks.
struct OpenDir {
    entries: std::sync::OnceLock<Vec<DirEntry>>,
}

impl OpenDir {
    fn entries(&self, ov: &Overlay, dir: &Arc<Inode>) -> Result<&[DirEntry], Errno> {
        if self.entries.get().is_none() {
            let list = ov.list_dir(dir)?;
            let _ = self.entries.set(list);
        }
        self.entries.get().map(|v| v.as_slice()).ok_or(Errno::EIO)
    }
}

#[derive(Clone)]
struct DirEntry {
    name: CString,
    kind: FileType,
    ino: u64,
    /// A plain lower-layer entry of known type, not a directory: READDIRPLUS may send it
    /// by name (see `plus`), since a LOOKUP would find it with this type and inode number.
    name_only: bool,
}

/// What one name in one directory resolves to, before it becomes an inode.
struct Resolved {
    area: Area,
    epoch: u64,
    trie: Option<TrieNode>,
    entry_rel: Option<Arc<str>>,
    upper: Option<OwnedFd>,
    lower: Option<(LayerId, OwnedFd)>,
    /// The attributes of `upper`, when the resolution took them already.
    upper_st: Option<Stat>,
    /// The origin was not looked for: `upper` is a store file an inode already stands for
    /// (see `instantiate_with`, which looks if that inode has gone meanwhile).
    lower_deferred: bool,
}

/// The shared state of a mounted statelite root.
/// The rules in force, with what is derived from them. Replaced whole by `reload`.
pub struct RuleState {
    pub rules: RuleSet,
    /// Trie nodes of read-only image directories that hold writable *file* entries: new
    /// names may be created there as volatile scratch files (sed -i's temporary).
    scratch_dirs: HashSet<TrieNode>,
    pub epoch: u64,
}

impl RuleState {
    fn new(rules: RuleSet, epoch: u64) -> RuleState {
        let mut scratch_dirs = HashSet::new();
        collect_scratch_dirs(&rules, rules.root(), &mut scratch_dirs);
        RuleState {
            rules,
            scratch_dirs,
            epoch,
        }
    }
}

pub struct Overlay {
    rules: RwLock<Arc<RuleState>>,
    pub layers: LayerStack,
    inodes: InodeTable,
    /// The table's size at its highest since the heap's free pages were last released.
    inodes_high: AtomicUsize,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_handle: AtomicU64,
    pub stats: Stats,
    pub denied: DeniedLog,
    pub(crate) opts: OverlayOptions,
    passthrough_active: AtomicBool,
    /// The io_uring rings requests come over, once they are registered (unset: every
    /// request comes over `/dev/fuse`).
    pub rings: std::sync::OnceLock<Arc<crate::ring::Rings>>,
    /// Epoch for what inodes remember of their xattrs; a new one begins whenever objects may have changed
    /// behind our back (image update, rules reload).
    xattr_epoch: AtomicU64,
    copy_up_lock: Mutex<()>,
    /// Negative entries the kernel caches in read-only areas, so an image update can
    /// invalidate them. Bounded; the oldest is dropped (and invalidated) when full.
    negatives: Mutex<lru::LruCache<(u64, CString), ()>>,
    /// Names a LOOKUP just found absent in a writable area, with the `xattr_epoch` of the
    /// finding: the CREATE (mkdir, mknod, ...) that follows need not search the lower
    /// layers again (a failed open of the name in the image was an eighth of CREATE).
    recent_misses: Mutex<lru::LruCache<(u64, CString), u64>>,
    /// The names of image directories below writable areas, once one lacked a name.
    origin_names: OriginNames,
    /// Chunks of large read-only files queued for `prefetch`, and those already pushed.
    prefetch_tx: crossbeam::channel::Sender<(u64, u64)>,
    prefetched: Mutex<HashSet<(u64, u64)>>,
    /// Inodes holding a handle-less I/O descriptor, oldest first (bounds the descriptors).
    io_fds: Mutex<lru::LruCache<u64, std::sync::Weak<Inode>>>,
    /// Directory listings for readdir without a handle (the kernel opens directories
    /// without asking us, see `opendir`), by node id; rebuilt whenever a read starts at 0.
    listings: Mutex<lru::LruCache<u64, Arc<Vec<DirEntry>>>>,
    /// Which READDIRPLUS replies carry attributes, per reader.
    plus: PlusPolicy,
    /// Reads ahead of directory walks.
    dir_ahead: DirAhead,
    pub notifier: RwLock<Option<fuser::Notifier>>,
    /// The connection's `/dev/fuse` descriptor, for passthrough backing ids (set at mount).
    pub dev_fuse: std::sync::OnceLock<Arc<OwnedFd>>,
    /// Invalidations queued for the background thread (never sent from a request thread,
    /// where the kernel may hold the very directory lock the notification needs).
    inval_tx: crossbeam::channel::Sender<(u64, CString)>,
    pub inval_rx: crossbeam::channel::Receiver<(u64, CString)>,
}

fn err(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

fn to_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(mode: libc::mode_t) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dtype_to_kind(d: u8) -> FileType {
    match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn attr_of(nodeid: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(nodeid),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: to_time(st.st_atime, st.st_atime_nsec),
        mtime: to_time(st.st_mtime, st.st_mtime_nsec),
        ctime: to_time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// Extended attributes the daemon keeps for itself (device marks): never shown to clients,
/// never changed by them.
fn is_internal_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.statelite.")
}

fn name_cstr(name: &OsStr) -> Result<CString, Errno> {
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    // "." and ".." are the kernel's business; resolved against a layer directory they
    // would step outside it (a layer root's ".." is not in the layer).
    if name.is_empty() || name == "." || name == ".." {
        return Err(Errno::EINVAL);
    }
    if name.as_bytes().contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

fn enoent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

fn is_dot_name(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"" | b"." | b"..")
}

/// A store entry as found, or `None` when it is a whiteout (the origin's entry deleted).
fn not_whiteout(fd: OwnedFd) -> Result<Option<OwnedFd>, Errno> {
    Ok(not_whiteout_st(fd)?.map(|(fd, _)| fd))
}

/// [`not_whiteout`], with the entry's attributes.
fn not_whiteout_st(fd: OwnedFd) -> Result<Option<(OwnedFd, Stat)>, Errno> {
    let st = sys::fstat(fd.as_fd()).map_err(err)?;
    Ok((!sys::is_whiteout_fd(fd.as_fd(), &st)).then_some((fd, st)))
}

/// Invalidates the kernel's entry `parent/name`.
fn inval_name(n: &fuser::Notifier, parent: u64, name: &CStr) {
    let _ = n.inval_entry(INodeNo(parent), OsStr::from_bytes(name.to_bytes()));
}

/// A change time in nanoseconds.
fn ctime_ns(st: &Stat) -> i64 {
    st.st_ctime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_ctime_nsec)
}

/// Invalidates the kernel's entry for `inode` at its current place; false for the root.
fn inval_entry_of(n: &fuser::Notifier, inode: &Inode) -> bool {
    match inode.parent() {
        Some(parent) => {
            inval_name(n, parent.nodeid, &inode.name());
            true
        }
        None => false,
    }
}

/// Opens `name` in `dir` as `O_PATH` without following it; `Ok(None)` when absent.
/// Never `.` or `..`: one component, always inside `dir`.
fn open_child(dir: BorrowedFd<'_>, name: &CStr) -> Result<Option<OwnedFd>, Errno> {
    if is_dot_name(name) {
        return Err(Errno::EINVAL);
    }
    match sys::open_at(dir, name, libc::O_PATH) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if enoent(&e) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

impl Overlay {
    pub fn new(
        rules: RuleSet,
        layers: LayerStack,
        opts: OverlayOptions,
    ) -> io::Result<Arc<Overlay>> {
        // The place the node daemon mounts its own tmpfs (/.statelite): an empty directory.
        let stl = CString::new(STATELITE_DIR).unwrap_or_default();
        let vol = layers
            .store(StoreKind::Volatile)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        match sys::mkdir_at(vol, &stl, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let (tx, rx) = crossbeam::channel::unbounded();
        let (ptx, prx) = crossbeam::channel::bounded::<(u64, u64)>(256);
        let stats = Stats::default();
        let dir_ahead = DirAhead::start(stats.read_ahead.clone())?;
        let ov = Arc::new(Overlay {
            prefetch_tx: ptx,
            prefetched: Mutex::new(HashSet::new()),
            rules: RwLock::new(Arc::new(RuleState::new(rules, 0))),
            layers,
            inodes: InodeTable::new(),
            inodes_high: AtomicUsize::new(0),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            stats,
            denied: DeniedLog::default(),
            opts,
            passthrough_active: AtomicBool::new(false),
            rings: std::sync::OnceLock::new(),
            xattr_epoch: AtomicU64::new(1),
            copy_up_lock: Mutex::new(()),
            negatives: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(65536).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            recent_misses: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(64).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            origin_names: OriginNames::default(),
            io_fds: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(IO_FDS_MAX).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            listings: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(1024).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            plus: PlusPolicy::default(),
            dir_ahead,
            notifier: RwLock::new(None),
            dev_fuse: std::sync::OnceLock::new(),
            inval_tx: tx,
            inval_rx: rx,
        });
        // The read-around thread: ends when the overlay (the sender) is dropped.
        let weak = Arc::downgrade(&ov);
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || {
                while let Ok((nodeid, chunk)) = prx.recv() {
                    match weak.upgrade() {
                        Some(ov) => ov.prefetch(nodeid, chunk),
                        None => break,
                    }
                }
            })?;
        let root_fd = sys::open_at(ov.layers.image(), c".", libc::O_PATH | libc::O_DIRECTORY)?;
        let st = sys::fstat(root_fd.as_fd())?;
        ov.inodes.insert_root(NewInode {
            st_ino: 1,
            kind: st.st_mode & libc::S_IFMT,
            area: Area::Image,
            trie: Some(ov.rs().rules.root()),
            epoch: 0,
            origin: Some(LayerId::Image),
            entry_rel: None,
            parent: None,
            name: CString::default(),
            backing: Backing {
                upper: None,
                lower: Some((LayerId::Image, ov.layers.backref(LayerId::Image, root_fd))),
            },
            identity: None,
        });
        Ok(ov)
    }

    /// The rules in force now.
    pub fn rs(&self) -> Arc<RuleState> {
        self.rules.read().clone()
    }

    /// Replaces the rules while mounted (`litectl reload`). New lookups follow the new
    /// rules at once: every entry the kernel caches is invalidated. Open files keep the
    /// area they were opened in.
    pub fn reload(&self, rules: RuleSet) -> Result<u64, String> {
        if let Some(v) = rules.violations().first() {
            return Err(format!("the new rules break statelite's constraints: {v}"));
        }
        let epoch = {
            let mut cur = self.rules.write();
            let epoch = cur.epoch + 1;
            *cur = Arc::new(RuleState::new(rules, epoch));
            epoch
        };
        self.xattr_epoch.fetch_add(1, Ordering::Relaxed);
        self.invalidate_all();
        Ok(epoch)
    }

    fn invalidate_all(&self) {
        let notifier = self.notifier.read();
        let Some(n) = notifier.as_ref() else { return };
        let mut count = 0u64;
        for inode in self.inodes.all() {
            if inval_entry_of(n, &inode) {
                count += 1;
            }
            if inode.is_dir() {
                let _ = n.inval_inode(INodeNo(inode.nodeid), 0, 0);
            }
        }
        count += self.invalidate_negatives(n);
        self.stats.invalidations.fetch_add(count, Ordering::Relaxed);
    }

    /// An inode's area and trie position under the rules in force: its own when it was
    /// decided under them, else derived again from its path (a directory the kernel kept
    /// across a reload, such as a process's working directory).
    fn view(&self, rs: &RuleState, inode: &Inode) -> (Area, Option<TrieNode>) {
        if inode.epoch == rs.epoch || inode.nodeid == 1 {
            return (inode.area, inode.trie);
        }
        let path = inode.path();
        let mut node = Some(rs.rules.root());
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            node = node.and_then(|n| rs.rules.child(n, comp));
        }
        let area = match rs.rules.lookup_id(&path) {
            Some(id) => self.area_for_rule(rs, id),
            None => Area::Image,
        };
        (area, if inode.is_dir() { node } else { None })
    }

    pub fn passthrough_active(&self) -> bool {
        self.passthrough_active.load(Ordering::Relaxed)
    }

    pub fn inodes(&self) -> &InodeTable {
        &self.inodes
    }

    /// The inode a request names (and a use of it, for trimming).
    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        let inode = self.inodes.get(ino.0).ok_or(Errno::ESTALE)?;
        self.inodes.touch(&inode);
        Ok(inode)
    }

    fn area_for_rule(&self, rs: &RuleState, id: RuleId) -> Area {
        let store = match rs.rules.storage(id) {
            Storage::Ro => return Area::ReadOnly(id),
            Storage::Tmpfs | Storage::Con => StoreKind::Volatile,
            Storage::Persistent => StoreKind::Persistent,
            Storage::LocalDisk => StoreKind::LocalDisk,
        };
        if self.layers.store(store).is_some() {
            Area::Store {
                store,
                rule: Some(id),
            }
        } else {
            // Never silently volatile: without its storage a durable path is read-only.
            Area::ReadOnly(id)
        }
    }

    /// The area a (new or existing) name in `parent` belongs to.
    fn child_area(&self, rs: &RuleState, parent: &Inode, name: &CStr) -> (Area, Option<TrieNode>) {
        let (parent_area, parent_trie) = self.view(rs, parent);
        let ctrie = parent_trie.and_then(|t| name.to_str().ok().and_then(|n| rs.rules.child(t, n)));
        if let Some(id) = ctrie.and_then(|t| rs.rules.rule_at(t)) {
            return (self.area_for_rule(rs, id), ctrie);
        }
        let area = match parent_area {
            Area::Image => match parent_trie {
                Some(t) if rs.scratch_dirs.contains(&t) => Area::Store {
                    store: StoreKind::Volatile,
                    rule: None,
                },
                _ => Area::Image,
            },
            other => other,
        };
        (area, ctrie)
    }

    /// Path of `parent/name` relative to the root (no leading slash), for store scaffolding
    /// at area boundaries and for liteimg link checks; never used on the hot path.
    fn rel_path(parent: &Inode, name: &CStr) -> String {
        let p = parent.path();
        let n = name.to_string_lossy();
        if p == "/" {
            n.into_owned()
        } else {
            format!("{}/{}", &p[1..], n)
        }
    }

    /// Resolves `name` in `parent` across the layers. `Ok(None)` means absent.
    fn resolve(&self, parent: &Arc<Inode>, name: &CStr) -> Result<Option<Resolved>, Errno> {
        self.resolve_as(parent, name, false)
    }

    /// `resolve`; with `for_inode`, for a lookup that wants the inode only (not whether
    /// the origin holds the name, which unlink's whiteout and listings' inode numbers
    /// need): a store file an inode already stands for skips the origin.
    fn resolve_as(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
        for_inode: bool,
    ) -> Result<Option<Resolved>, Errno> {
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if is_dot_name(name) {
            return Err(Errno::EINVAL);
        }
        let rs = self.rs();
        let epoch = rs.epoch;
        let is_root = parent.nodeid == 1;
        if is_root && name.to_bytes() == LITEIMG_DEFAULT.as_bytes() {
            return Ok(None);
        }
        if is_root && name.to_bytes() == STATELITE_DIR.as_bytes() {
            let vol = self.layers.store(StoreKind::Volatile).ok_or(Errno::EIO)?;
            let fd = sys::open_at(vol, name, libc::O_PATH | libc::O_DIRECTORY).map_err(err)?;
            return Ok(Some(Resolved {
                epoch,
                area: Area::Image,
                trie: None,
                entry_rel: None,
                upper: None,
                lower: Some((LayerId::Volatile, fd)),
                upper_st: None,
                lower_deferred: false,
            }));
        }
        let (area, trie) = self.child_area(&rs, parent, name);
        let entering = trie.and_then(|t| rs.rules.rule_at(t));
        if let Some(id) = entering {
            return self.resolve_rule_entry(&rs, id, area, trie);
        }
        // A name on the way to litefile entries (not an entry itself) inside a read-only
        // image directory is an image directory, even where that directory is a scratch one.
        let area = match area {
            Area::Store { rule: None, .. } if trie.is_some() => Area::Image,
            other => other,
        };
        // Set by the store case, which takes them along the way.
        let mut upper_st = None;
        let mut lower_deferred = false;
        let (upper, lower) = match area {
            Area::Image => match self.lower_child(parent, name)? {
                Some(l) => (None, Some(l)),
                // A directory on the way to litefile entries that the image lacks (liteimg
                // would have created it): an empty read-only directory, mirrored in the
                // volatile store so the entries below have somewhere to live.
                None if trie.is_some() => {
                    let rel = Self::rel_path(parent, name);
                    let fd = self
                        .layers
                        .store_dir(StoreKind::Volatile, &rel)
                        .map_err(err)?;
                    (None, Some((LayerId::Volatile, fd)))
                }
                None => (None, None),
            },
            Area::ReadOnly(_) => (None, self.lower_child(parent, name)?),
            Area::Store { store, rule: None } => {
                // A scratch name in a read-only image directory: an image entry wins (it
                // stays read-only); otherwise the volatile store may hold it.
                let image_entry = match parent.lower().map_err(err)? {
                    Some((layer, pl)) => {
                        self.origin_probe(parent, layer, pl.as_fd(), name, || {
                            self.lower_child(parent, name)
                        })?
                    }
                    None => None,
                };
                if let Some(l) = image_entry {
                    return Ok(Some(Resolved {
                        epoch,
                        area: Area::Image,
                        trie,
                        entry_rel: None,
                        upper: None,
                        lower: Some(l),
                        upper_st: None,
                        lower_deferred: false,
                    }));
                }
                let rel = Self::rel_path(parent, name);
                let root = self.layers.store(store).ok_or(Errno::EROFS)?;
                match sys::open_beneath(root, &rel, libc::O_PATH) {
                    Ok(fd) => {
                        let Some(fd) = not_whiteout(fd)? else {
                            return Ok(None);
                        };
                        return Ok(Some(Resolved {
                            epoch,
                            area,
                            trie: None,
                            entry_rel: Some(rel.into()),
                            upper: Some(fd),
                            lower: None,
                            upper_st: None,
                            lower_deferred: false,
                        }));
                    }
                    Err(e) if enoent(&e) => return Ok(None),
                    Err(e) => return Err(err(e)),
                }
            }
            Area::Store { .. } => {
                // The store is looked at with one lstat: a name it lacks (every new file's
                // LOOKUP) costs no failed open, which allocates and frees a file (on tmpfs
                // 2.2 µs against 1.7), and a store file an inode already stands for (the
                // kernel revalidating it, the two ends of a rename) needs no descriptor at
                // all (see `instantiate_with`): one lstat, 1.0 µs, where open, fstat and
                // close took 2.2.
                let found = match parent.upper().map_err(err)? {
                    Some(pu) => match sys::stat_at(pu.as_fd(), name) {
                        Ok(st) if sys::is_whiteout_at(pu.as_fd(), name, &st) => {
                            return Ok(None);
                        }
                        Ok(st) => Some((pu, st)),
                        Err(e) if enoent(&e) => None,
                        Err(e) => return Err(err(e)),
                    },
                    None => None,
                };
                // A store file an inode already stands for needs no look at its origin
                // either: the inode keeps what the origin gave it (its inode number), and
                // a file's origin no longer serves it once it has a store copy.
                let known = for_inode
                    && found.as_ref().is_some_and(|(_, st)| {
                        let kind = st.st_mode & libc::S_IFMT;
                        kind != libc::S_IFDIR
                            && self
                                .inodes
                                .has_reusable((st.st_dev, st.st_ino), area, epoch, kind)
                    });
                if known {
                    // Neither a descriptor nor the origin: `instantiate_with` finds the
                    // inode by the lstat's identity.
                    upper_st = found.map(|(_, st)| st);
                    lower_deferred = true;
                    (None, None)
                } else {
                    let upper = match found {
                        // Opened, and its attributes taken from the descriptor: the name
                        // may have been renamed over since the lstat.
                        Some((pu, _)) => match open_child(pu.as_fd(), name)? {
                            Some(fd) => match not_whiteout_st(fd)? {
                                Some((fd, st)) => {
                                    upper_st = Some(st);
                                    Some(fd)
                                }
                                None => return Ok(None),
                            },
                            None => None,
                        },
                        None => None,
                    };
                    (upper, self.origin_of(parent, name)?)
                }
            }
        };
        if upper.is_none() && lower.is_none() && !lower_deferred {
            return Ok(None);
        }
        Ok(Some(Resolved {
            epoch,
            area,
            trie,
            entry_rel: None,
            upper,
            lower,
            upper_st,
            lower_deferred,
        }))
    }

    /// Whether the layers below the store hold `name` in `parent`: what removing the name
    /// from the store must then hide with a whiteout. Below a litefile entry that is one
    /// probe of the parent's origin, where `resolve` would look in the store too.
    fn origin_has(&self, parent: &Arc<Inode>, name: &CStr) -> Result<bool, Errno> {
        let rs = self.rs();
        let (area, trie) = self.child_area(&rs, parent, name);
        let entering = trie.and_then(|t| rs.rules.rule_at(t)).is_some();
        if !entering && parent.is_dir() && matches!(area, Area::Store { rule: Some(_), .. }) {
            return Ok(self.origin_of(parent, name)?.is_some());
        }
        Ok(self
            .resolve(parent, name)?
            .is_some_and(|r| r.lower.is_some()))
    }

    /// `name` in the origin directory of the writable directory `parent`, with its layer.
    fn origin_of(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
    ) -> Result<Option<(LayerId, OwnedFd)>, Errno> {
        let Some((layer, pl)) = parent.lower().map_err(err)? else {
            return Ok(None);
        };
        let found = self.origin_probe(parent, layer, pl.as_fd(), name, || {
            open_child(pl.as_fd(), name)
        })?;
        Ok(found.map(|fd| (layer, fd)))
    }

    /// Runs `probe` (a look for `name` in `parent`'s origin directory `pl`, of `layer`)
    /// unless the image directory is known to lack the name: on a node that is an NFS
    /// LOOKUP saved for every new file in `/tmp` (see `origin_names`).
    fn origin_probe<T>(
        &self,
        parent: &Arc<Inode>,
        layer: LayerId,
        pl: BorrowedFd<'_>,
        name: &CStr,
        probe: impl FnOnce() -> Result<Option<T>, Errno>,
    ) -> Result<Option<T>, Errno> {
        if layer != LayerId::Image || is_dot_name(name) {
            return probe();
        }
        // Taken before the probe and the listing: an image update meanwhile leaves what
        // they found under the old epoch, never used.
        let epoch = self.xattr_epoch.load(Ordering::Relaxed);
        match self.origin_names.lacks(parent, epoch, pl, name) {
            Some(true) => {
                self.stats
                    .origin_probes_saved
                    .fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Some(false) => probe(),
            None => {
                let found = probe()?;
                if found.is_none() {
                    self.origin_names.learn(parent, epoch, pl);
                }
                Ok(found)
            }
        }
    }

    /// A child in a read-only directory (image or `ro` area), seeing through liteimg links.
    fn lower_child(
        &self,
        parent: &Inode,
        name: &CStr,
    ) -> Result<Option<(LayerId, OwnedFd)>, Errno> {
        let Some((layer, pl)) = parent.lower().map_err(err)? else {
            return Ok(None);
        };
        let Some(fd) = open_child(pl.as_fd(), name)? else {
            return Ok(None);
        };
        if layer == LayerId::Image && self.layers.is_liteimg() {
            let st = sys::fstat(fd.as_fd()).map_err(err)?;
            if sys::file_type(st.st_mode) == libc::S_IFLNK
                && let Ok(target) = sys::readlink_fd(fd.as_fd())
            {
                let rel = Self::rel_path(parent, name);
                if self.layers.is_liteimg_link(&rel, &target)
                    && let Ok(dflt) = self.layers.open_image(&rel)
                {
                    return Ok(Some((layer, dflt)));
                }
            }
        }
        Ok(Some((layer, fd)))
    }

    /// The path of a litefile entry itself: its origin, and its store copy if any.
    fn resolve_rule_entry(
        &self,
        rs: &RuleState,
        id: RuleId,
        area: Area,
        trie: Option<TrieNode>,
    ) -> Result<Option<Resolved>, Errno> {
        let rel: Arc<str> = rs.rules.relative(id).into();
        let mut upper = None;
        if let Area::Store { store, .. } = area {
            let root = self.layers.store(store).ok_or(Errno::EROFS)?;
            match sys::open_beneath(root, &rel, libc::O_PATH) {
                Ok(fd) => match not_whiteout(fd)? {
                    Some(fd) => upper = Some(fd),
                    None => return Ok(None),
                },
                Err(e) if enoent(&e) => {}
                Err(e) => return Err(err(e)),
            }
        }
        let lower = self.layers.origin(&rel);
        if upper.is_none()
            && let Area::Store { store, .. } = area
        {
            if rs.rules.storage(id) == Storage::Con {
                // con: the image's file, then every litetree hit, concatenated once per
                // boot into the volatile store.
                let sources: Vec<OwnedFd> = self
                    .layers
                    .con_sources(&rel)
                    .into_iter()
                    .map(|(_, f)| f)
                    .collect();
                if sources.is_empty() {
                    return Ok(None);
                }
                let (dir_rel, base) = split_rel(&rel);
                let dir = self.layers.store_dir(store, dir_rel).map_err(err)?;
                let base = CString::new(base).map_err(|_| Errno::EINVAL)?;
                upper = Some(copy_up::concat_into(&sources, dir.as_fd(), &base).map_err(err)?);
                self.stats.copy_ups.fetch_add(1, Ordering::Relaxed);
            } else if lower.is_none() && rs.rules.is_dir(id) {
                // A writable directory entry that exists nowhere: the node gets it empty
                // (as liteimg would have created it).
                upper = Some(self.layers.store_dir(store, &rel).map_err(err)?);
            }
        }
        if upper.is_none() && lower.is_none() {
            return Ok(None);
        }
        Ok(Some(Resolved {
            epoch: rs.epoch,
            area,
            trie,
            entry_rel: Some(rel),
            upper,
            lower,
            upper_st: None,
            lower_deferred: false,
        }))
    }

    /// Turns a resolution into an inode (new or shared) and its attributes.
    fn instantiate(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
        r: Resolved,
    ) -> Result<(Arc<Inode>, Stat), Errno> {
        self.instantiate_with(parent, name, r, None)
    }

    /// `instantiate`, given the store copy's stat when the caller has just made one.
    fn instantiate_with(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
        mut r: Resolved,
        upper_st: Option<Stat>,
    ) -> Result<(Arc<Inode>, Stat), Errno> {
        let mut ust = match (&r.upper, upper_st.or(r.upper_st)) {
            (Some(_), Some(st)) => Some(st),
            (Some(u), None) => Some(sys::fstat(u.as_fd()).map_err(err)?),
            // A store file an inode stood for, not opened (see `resolve_as`).
            (None, Some(st)) if r.lower_deferred => Some(st),
            (None, _) => None,
        };
        let stat_lower = |lower: &Option<(LayerId, OwnedFd)>| match lower {
            Some((_, l)) => sys::fstat(l.as_fd()).map(Some).map_err(err),
            None => Ok(None),
        };
        let mut lst = stat_lower(&r.lower)?;
        let (st, kind) = match (&ust, &lst) {
            (Some(u), _) => (*u, u.st_mode & libc::S_IFMT),
            (None, Some(l)) => (*l, l.st_mode & libc::S_IFMT),
            (None, None) => return Err(Errno::ENOENT),
        };
        let identity = (st.st_dev, st.st_ino);
        if let Some(inode) = self
            .inodes
            .lookup_existing(identity, r.area, r.epoch, kind, parent, name)
        {
            return Ok((inode, st));
        }
        if r.lower_deferred {
            // The inode the resolution counted on is gone (trimmed meanwhile): the new one
            // needs its store copy opened and its origin after all, for its inode number.
            if r.upper.is_none() {
                let pu = parent.upper().map_err(err)?.ok_or(Errno::ENOENT)?;
                let (fd, st) = open_child(pu.as_fd(), name)?
                    .map(not_whiteout_st)
                    .transpose()?
                    .flatten()
                    .ok_or(Errno::ENOENT)?;
                if (st.st_dev, st.st_ino) != identity || st.st_mode & libc::S_IFMT != kind {
                    // Renamed over since the lstat: resolve the name afresh.
                    let fresh = self.resolve_as(parent, name, false)?.ok_or(Errno::ENOENT)?;
                    return self.instantiate_with(parent, name, fresh, None);
                }
                r.upper = Some(fd);
                ust = Some(st);
            }
            r.lower = self.origin_of(parent, name)?;
            lst = stat_lower(&r.lower)?;
        }
        // The origin counts only while it is the same kind of object: it gives the stable
        // inode number and, for directories, the entries merged under the store's.
        let lower_same =
            matches!((&lst, &r.lower), (Some(l), Some(_)) if l.st_mode & libc::S_IFMT == kind);
        let st_ino = match (&r.lower, &lst, &ust) {
            (Some((layer, _)), Some(l), _) if lower_same => self.layers.report_ino(*layer, l),
            (_, _, Some(u)) => self.layers.report_ino(
                r.area
                    .store()
                    .map(|s| s.layer())
                    .unwrap_or(LayerId::Volatile),
                u,
            ),
            _ => self.layers.report_ino(LayerId::Image, &st),
        };
        let identity = Some(identity);
        let keep_lower = lower_same && (r.upper.is_none() || kind == libc::S_IFDIR);
        let origin = if lower_same {
            r.lower.as_ref().map(|(l, _)| *l)
        } else {
            None
        };
        let store_layer = r
            .area
            .store()
            .map(|s| s.layer())
            .unwrap_or(LayerId::Volatile);
        let backing = Backing {
            upper: r.upper.map(|f| self.layers.backref(store_layer, f)),
            lower: if keep_lower {
                r.lower.map(|(l, f)| (l, self.layers.backref(l, f)))
            } else {
                None
            },
        };
        let inode = self.inodes.lookup_or_insert(NewInode {
            st_ino,
            kind,
            area: r.area,
            trie: if kind == libc::S_IFDIR { r.trie } else { None },
            epoch: r.epoch,
            origin,
            entry_rel: r.entry_rel,
            parent: Some(parent.clone()),
            name: name.to_owned(),
            backing,
            identity,
        });
        Ok((inode, st))
    }

    fn do_lookup(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
    ) -> Result<Option<(Arc<Inode>, Stat)>, Errno> {
        match self.resolve_as(parent, name, true)? {
            Some(r) => self.instantiate(parent, name, r).map(Some),
            None => Ok(None),
        }
    }

    fn stat_inode(&self, inode: &Inode) -> Result<Stat, Errno> {
        let fd = inode.primary_fd().map_err(err)?;
        sys::fstat(fd.as_fd()).map_err(err)
    }

    fn attr(&self, inode: &Inode, st: &Stat) -> FileAttr {
        inode.size_hint.store(st.st_size, Ordering::Relaxed);
        inode.ctime_hint.store(ctime_ns(st), Ordering::Relaxed);
        attr_of(inode.nodeid, st)
    }

    fn deny(&self, inode: &Inode, name: Option<&CStr>, op: Op) -> Errno {
        let path = match name {
            Some(n) => {
                let p = inode.path();
                if p == "/" {
                    format!("/{}", n.to_string_lossy())
                } else {
                    format!("{p}/{}", n.to_string_lossy())
                }
            }
            None => inode.path(),
        };
        let is_dir = name.is_none() && inode.is_dir() || matches!(op, Op::mkdir);
        self.denied.record(path, op.name(), is_dir);
        Errno::EROFS
    }

    /// The store directory where `parent`'s entries in `store` live, created on demand.
    fn upper_dir(&self, parent: &Arc<Inode>, store: StoreKind) -> Result<Arc<OwnedFd>, Errno> {
        if parent.area.store() == Some(store) {
            return self.copy_up_locked(parent);
        }
        // Crossing into a store from outside it (a litefile entry in an image directory,
        // or a scratch name): mirror the parent's path in the store.
        let p = parent.path();
        let fd = self
            .layers
            .store_dir(store, p.trim_start_matches('/'))
            .map_err(err)?;
        Ok(Arc::new(fd))
    }

    /// Makes sure `inode` has its copy in its store; returns the store copy.
    pub fn copy_up(&self, inode: &Arc<Inode>) -> Result<Arc<OwnedFd>, Errno> {
        if let Some(u) = inode.upper().map_err(err)? {
            return Ok(u);
        }
        let _g = self.copy_up_lock.lock();
        self.copy_up_locked(inode)
    }

    fn copy_up_locked(&self, inode: &Arc<Inode>) -> Result<Arc<OwnedFd>, Errno> {
        if let Some(u) = inode.upper().map_err(err)? {
            return Ok(u);
        }
        let store = inode.area.store().ok_or(Errno::EROFS)?;
        let (_, lower) = inode.lower().map_err(err)?.ok_or(Errno::ENOENT)?;
        let st = sys::fstat(lower.as_fd()).map_err(err)?;
        let dir: Arc<OwnedFd> = match (&inode.entry_rel, inode.parent()) {
            (Some(rel), _) => {
                let (dir_rel, _) = split_rel(rel);
                Arc::new(self.layers.store_dir(store, dir_rel).map_err(err)?)
            }
            (None, Some(parent)) => self.upper_dir(&parent, store)?,
            (None, None) => return Err(Errno::EROFS),
        };
        let name = match &inode.entry_rel {
            Some(rel) => CString::new(split_rel(rel).1).map_err(|_| Errno::EINVAL)?,
            None => inode.name(),
        };
        let fd = copy_up::copy_object(lower.as_fd(), &st, dir.as_fd(), &name).map_err(err)?;
        if let Some(key) = identity_of(fd.as_fd()) {
            self.inodes.add_identity(inode, key);
        }
        let upper = self.layers.backref(store.layer(), fd);
        let fd = upper.open().map_err(err)?;
        {
            let mut b = inode.backing.write();
            b.upper = Some(upper);
            if !inode.is_dir() {
                b.lower = None;
            }
        }
        // A descriptor of the origin must not serve I/O any more.
        inode.clear_io_fd();
        self.stats.copy_ups.fetch_add(1, Ordering::Relaxed);
        Ok(fd)
    }

    /// The store copy of a writable inode (after copy-up), or EROFS.
    fn writable(&self, inode: &Arc<Inode>, op: Op) -> Result<Arc<OwnedFd>, Errno> {
        match inode.area {
            Area::Store { .. } => self.copy_up(inode),
            _ => Err(self.deny(inode, None, op)),
        }
    }

    /// For operations creating or removing `name` in `parent`: the store and directory.
    fn writable_child(
        &self,
        parent: &Arc<Inode>,
        name: &CStr,
        op: Op,
    ) -> Result<(StoreKind, Area, Arc<OwnedFd>), Errno> {
        let (store, area, _, dir) = self.writable_child_in(&self.rs(), parent, name, op)?;
        Ok((store, area, dir))
    }

    /// `writable_child` under the rule state `rs`, with the name's rule-trie node.
    fn writable_child_in(
        &self,
        rs: &RuleState,
        parent: &Arc<Inode>,
        name: &CStr,
        op: Op,
    ) -> Result<(StoreKind, Area, Option<TrieNode>, Arc<OwnedFd>), Errno> {
        let (area, trie) = self.child_area(rs, parent, name);
        // A scratch name is writable only while the image has nothing by that name: the
        // image's own entries in that directory stay locked.
        if let Area::Store { rule: None, .. } = area
            && parent.area.store().is_none()
            && self.lower_child(parent, name)?.is_some()
        {
            return Err(self.deny(parent, Some(name), op));
        }
        match area {
            Area::Store { store, .. } => {
                let dir = self.upper_dir(parent, store)?;
                Ok((store, area, trie, dir))
            }
            _ => Err(self.deny(parent, Some(name), op)),
        }
    }

    /// The merged listing of a directory.
    fn list_dir(&self, dir: &Arc<Inode>) -> Result<Vec<DirEntry>, Errno> {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut hidden: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        let store_layer = dir
            .area
            .store()
            .map(|s| s.layer())
            .unwrap_or(LayerId::Volatile);
        let upper = dir.upper().map_err(err)?;
        let lower = dir.lower().map_err(err)?;
        if let Some(u) = &upper {
            for (name, dtype, ino) in sys::read_dir(u.as_fd()).map_err(err)? {
                if is_internal_name(&name) {
                    continue;
                }
                if dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                    let c = CString::new(name.clone()).map_err(|_| Errno::EIO)?;
                    if let Ok(st) = sys::stat_at(u.as_fd(), &c)
                        && sys::is_whiteout_at(u.as_fd(), &c, &st)
                    {
                        hidden.insert(name);
                        continue;
                    }
                }
                seen.insert(name.clone());
                out.push((name, dtype, store_layer, ino));
            }
        }
        if let Some((layer, l)) = &lower {
            let is_root = dir.nodeid == 1;
            for (name, dtype, ino) in sys::read_dir(l.as_fd()).map_err(err)? {
                if is_root
                    && (name == LITEIMG_DEFAULT.as_bytes() || name == STATELITE_DIR.as_bytes())
                {
                    continue;
                }
                if seen.contains(&name) || hidden.contains(&name) {
                    continue;
                }
                seen.insert(name.clone());
                out.push((name, dtype, *layer, ino));
            }
        }

        let mut entries: Vec<DirEntry> = Vec::with_capacity(out.len() + 2);
        for (name, dtype, layer, ino) in out {
            let c = CString::new(name).map_err(|_| Errno::EIO)?;
            entries.push(DirEntry {
                name: c,
                kind: dtype_to_kind(dtype),
                ino: self.layers.report_ino(layer, &stat_with_ino(ino)),
                name_only: !layer.is_store()
                    && dtype != libc::DT_UNKNOWN
                    && dtype != libc::DT_DIR
                    && ino < 1 << 56,
            });
        }
        // Where the rules reach into this directory (litefile entries, scratch names), the
        // listing must agree with lookup: re-resolve those names.
        let rs = self.rs();
        let (dir_area, dir_trie) = self.view(&rs, dir);
        if dir_area.store().is_none() || dir.entry_rel.is_some() {
            let mut names: Vec<CString> = Vec::new();
            if let Some(t) = dir_trie {
                for (n, _) in rs.rules.child_names(t) {
                    if let Ok(c) = CString::new(n) {
                        names.push(c);
                    }
                }
                if rs.scratch_dirs.contains(&t) {
                    let rel = dir.path();
                    if let Ok(fd) = sys::open_beneath(
                        self.layers.store(StoreKind::Volatile).ok_or(Errno::EIO)?,
                        rel.trim_start_matches('/'),
                        libc::O_PATH | libc::O_DIRECTORY,
                    ) && let Ok(list) = sys::read_dir(fd.as_fd())
                    {
                        for (n, _, _) in list {
                            if !is_internal_name(&n)
                                && let Ok(c) = CString::new(n)
                            {
                                names.push(c);
                            }
                        }
                    }
                }
            }
            if dir.nodeid == 1 {
                names.push(CString::new(STATELITE_DIR).unwrap_or_default());
            }
            names.sort();
            names.dedup();
            for name in names {
                let pos = entries.iter().position(|e| e.name == name);
                match self.resolve(dir, &name)? {
                    Some(r) => {
                        let (fd, layer) = match (&r.upper, &r.lower) {
                            (Some(u), _) => (
                                u.as_fd(),
                                r.area
                                    .store()
                                    .map(|s| s.layer())
                                    .unwrap_or(LayerId::Volatile),
                            ),
                            (None, Some((l, f))) => (f.as_fd(), *l),
                            (None, None) => continue,
                        };
                        let st = sys::fstat(fd).map_err(err)?;
                        let lst = r
                            .lower
                            .as_ref()
                            .and_then(|(_, f)| sys::fstat(f.as_fd()).ok());
                        let ino = match (&r.lower, lst) {
                            (Some((l, _)), Some(ls))
                                if ls.st_mode & libc::S_IFMT == st.st_mode & libc::S_IFMT =>
                            {
                                self.layers.report_ino(*l, &ls)
                            }
                            _ => self.layers.report_ino(layer, &st),
                        };
                        let e = DirEntry {
                            name,
                            kind: file_type(st.st_mode),
                            ino,
                            name_only: false,
                        };
                        match pos {
                            Some(i) => entries[i] = e,
                            None => entries.push(e),
                        }
                    }
                    None => {
                        if let Some(i) = pos {
                            entries.remove(i);
                        }
                    }
                }
            }
        }
        Ok(entries)
    }

    /// The listing a readdir at `offset` reads: a fresh one when a read starts at 0 (the
    /// kernel only asks when its own cached copy is gone), else the one being read.
    fn listing(
        &self,
        dir: &Arc<Inode>,
        fh: FileHandle,
        offset: u64,
    ) -> Result<Arc<Vec<DirEntry>>, Errno> {
        if fh.0 != 0
            && let Some(d) = self.dirs.lock().get(&fh.0).cloned()
        {
            return d.entries(self, dir).map(|e| Arc::new(e.to_vec()));
        }
        if offset > 0
            && let Some(l) = self.listings.lock().get(&dir.nodeid)
        {
            return Ok(l.clone());
        }
        let l = Arc::new(self.list_dir(dir)?);
        self.listings.lock().put(dir.nodeid, l.clone());
        Ok(l)
    }

    fn is_empty_dir(&self, dir: &Arc<Inode>) -> Result<bool, Errno> {
        Ok(self.list_dir(dir)?.is_empty())
    }

    /// Removes an upper directory that holds only whiteouts (after the merged view was
    /// found empty).
    fn remove_upper_dir(
        &self,
        parent_upper: BorrowedFd<'_>,
        name: &CStr,
        dir: BorrowedFd<'_>,
    ) -> Result<(), Errno> {
        for (n, _, _) in sys::read_dir(dir).map_err(err)? {
            let c = CString::new(n).map_err(|_| Errno::EIO)?;
            sys::unlink_at(dir, &c, 0).map_err(err)?;
        }
        sys::unlink_at(parent_upper, name, libc::AT_REMOVEDIR).map_err(err)
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn open_flags(flags: i32) -> i32 {
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW)
    }

    /// Whether a LOOKUP found `name` absent under `parent` since the last image update or
    /// reload (consumed: one creation per finding). A name that appeared in a store since
    /// then is refused by the exclusive create itself; the lower layers only change with
    /// an image update, which bumps the epoch.
    fn just_found_absent(&self, parent: &Inode, name: &CStr) -> bool {
        let key = (parent.nodeid, name.to_owned());
        let found = self.recent_misses.lock().pop(&key);
        found == Some(self.xattr_epoch.load(Ordering::Relaxed))
    }

    /// Registers `file` for passthrough on this connection.
    fn open_backing(&self, file: BorrowedFd<'_>) -> io::Result<PassthroughId> {
        match self.dev_fuse.get() {
            Some(dev) => PassthroughId::open(dev, file),
            None => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
        }
    }

    /// Opens a file: decides its I/O mode (passthrough, page cache, or direct through us)
    /// under the kernel's rules, and the descriptor behind it.
    fn open_inode(
        &self,
        inode: &Arc<Inode>,
        flags: i32,
        created: Option<(OwnedFd, (u64, u64))>,
        make_backing: impl FnOnce(&OwnedFd) -> io::Result<PassthroughId>,
    ) -> Result<(OpenFile, FopenFlags), Errno> {
        let acc = flags & libc::O_ACCMODE;
        let wants_write = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let lazy_flags = Self::open_flags(flags);
        // CREATE made the file read-write: that descriptor serves, unless the caller asked
        // for status flags it lacks (O_APPEND, O_SYNC, ...), which a reopen applies.
        // O_LARGEFILE, which the kernel adds to every open on 64-bit, changes nothing here
        // (counting it made every create reopen its file through /proc: a fifth of CREATE).
        let ignored = libc::O_ACCMODE | libc::O_CLOEXEC | libc::O_TRUNC | KERNEL_O_LARGEFILE;
        let plain = lazy_flags & !ignored == 0;
        // Backings are kept (see `RetainedBacking`) from a file's first reopen on: one made
        // by CREATE would cost every new file a read-only reopen, most never opened again.
        let reopened = created.is_none();
        // The identity of the descriptor that serves, when already known (CREATE has just
        // stat'ed the file it made): one fstat fewer per created file.
        let (eager, known_identity): (Option<OwnedFd>, _) =
            if let Some((fd, id)) = created.filter(|_| wants_write && plain) {
                (Some(fd), Some(id))
            } else if wants_write {
                let upper = self.writable(inode, Op::open)?;
                (
                    Some(sys::reopen(upper.as_fd(), lazy_flags).map_err(err)?),
                    None,
                )
            } else {
                (None, None)
            };
        let durable = wants_write && inode.area.store().is_some_and(|s| s.is_durable());
        // close(2) needs no round trip unless the data must reach persistent storage.
        let mut fopen = if durable {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_NOFLUSH
        };
        let mut io = inode.io_state();
        // A kept backing (see `RetainedBacking`) is live even with no passthrough open: it
        // serves only while no page-cache open is (the kernel allows one mode at a time).
        let live = io
            .backing
            .as_ref()
            .filter(|_| io.cached_opens == 0)
            .and_then(|(w, key)| w.upgrade().map(|b| (b, *key)));
        let retained =
            |b: &Arc<PassthroughId>| io.retained.as_ref().is_some_and(|r| Arc::ptr_eq(&r.0, b));
        let open_now = |eager: Option<OwnedFd>| -> Result<OwnedFd, Errno> {
            match eager {
                Some(fd) => Ok(fd),
                None => inode.reopen_primary(lazy_flags).map_err(err),
            }
        };
        let identity = |f: &OwnedFd| known_identity.or_else(|| identity_of(f.as_fd()));
        let mut backing = None;
        let mut cached = false;
        let fd: Option<OwnedFd>;
        if let Some((b, _)) = live.as_ref().filter(|(b, _)| retained(b)) {
            // The store copy's own backing: nothing to open or check (a store copy stays
            // the inode's). The daemon's descriptor is opened if a request needs one.
            backing = Some(b.clone());
            fd = eager;
            self.stats
                .kept_backing_opens
                .fetch_add(1, Ordering::Relaxed);
        } else if let Some((b, key)) = live {
            let f = open_now(eager)?;
            if identity(&f) == Some(key) {
                backing = Some(b);
            } else {
                // Another backing file is in passthrough use for this inode. Backings are
                // made only from an object that stays the inode's (a store copy, or a
                // read-only origin: see below), so this is a guard: the open goes through
                // us, which the kernel refuses (EIO) while that backing is in use.
                fopen |= FopenFlags::FOPEN_DIRECT_IO;
                self.stats.direct_opens.fetch_add(1, Ordering::Relaxed);
            }
            fd = Some(f);
        } else {
            // A file written by passthrough since its last page-cache open has none of its
            // new data in the mount's page cache: read by passthrough too, it is served
            // from the store's own page cache, with no READ through us (nor the size
            // GETATTR a cached read past the end makes) and no second copy in memory (a
            // volatile store is memory already). `sed -i` reads every file it renamed in.
            //
            // A writable file still served by its origin is read through the page cache:
            // an open for writing copies it up, and while an open by passthrough lasts the
            // kernel fails every other open of the inode that does not share its backing
            // (EIO), so a writer would fail while a reader (`tail -f` of an image's log
            // file) had it open.
            let from_store_copy = eager.is_some() || inode.is_copied_up();
            let passthrough = self.passthrough_active()
                && inode.kind == libc::S_IFREG
                && io.cached_opens == 0
                && (from_store_copy || inode.area.store().is_none())
                && (wants_write
                    || io.written_behind_cache
                    || inode.size_hint.load(Ordering::Relaxed) >= PASSTHROUGH_MIN_SIZE);
            if passthrough {
                // `from_store_copy` is asked before opening: a store copy, once there, is
                // what `open_now` opens (a copy-up made meanwhile must not pass the origin's
                // backing as the store copy's).
                let f = open_now(eager)?;
                // A backing to keep (see `RetainedBacking`) is registered from a read-only
                // descriptor; this open's own flags are the kernel's per-open backing file's.
                let mut keep = reopened && from_store_copy && RetainedBacking::room();
                let template = if keep && acc != libc::O_RDONLY {
                    let ro = inode.reopen_primary(libc::O_RDONLY).ok();
                    keep = ro.is_some();
                    ro
                } else {
                    None
                };
                match make_backing(template.as_ref().unwrap_or(&f)) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        if let Some(key) = identity(&f) {
                            io.backing = Some((Arc::downgrade(&b), key));
                            if keep {
                                io.retained = RetainedBacking::new(&b);
                            }
                        }
                        backing = Some(b);
                    }
                    Err(e) => {
                        tracing::debug!("passthrough backing refused: {e}");
                        cached = true;
                    }
                }
                fd = Some(f);
            } else {
                cached = true;
                fd = eager;
            }
        }
        if backing.is_some() {
            if wants_write {
                io.written_behind_cache = true;
            }
            self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
        }
        if cached {
            io.cached_opens += 1;
            if !std::mem::take(&mut io.written_behind_cache) {
                fopen |= FopenFlags::FOPEN_KEEP_CACHE;
            }
        }
        drop(io);
        let lock = std::sync::OnceLock::new();
        if let Some(f) = fd {
            let _ = lock.set(f);
        }
        Ok((
            OpenFile {
                fd: lock,
                lazy_flags,
                inode: inode.clone(),
                _backing: backing,
                cached,
                durable_write: durable,
            },
            fopen,
        ))
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, Errno> {
        self.files.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    pub fn no_open(&self) -> bool {
        self.opts.no_open
    }

    /// The descriptor for I/O on `inode` without a file handle (no-open mode): a read-only
    /// one of the current object, or for `write` one of the store copy (copy-up on the first
    /// write; EROFS, recorded under `op`, outside the writable areas).
    fn io_fd(&self, inode: &Arc<Inode>, write: bool, op: Op) -> Result<Arc<OwnedFd>, Errno> {
        if let Some(fd) = inode.cached_io_fd(write) {
            return Ok(fd);
        }
        if write {
            let upper = match self.writable(inode, op) {
                Ok(u) => u,
                Err(e) => {
                    if e == Errno::EROFS {
                        // A shared writable mapping may have changed the kernel's cached
                        // pages of a read-only file before the write-back was refused:
                        // drop them so readers see the real content again.
                        let _ = self.inval_tx.send((inode.nodeid, CString::default()));
                    }
                    return Err(e);
                }
            };
            let fd = sys::reopen(upper.as_fd(), libc::O_RDWR).map_err(err)?;
            if inode.area.store().is_some_and(|s| s.is_durable()) {
                // Not kept: a writable descriptor held open would pin the persistent store
                // (NFS open state, no read-only remount); these writes sync anyway.
                return Ok(Arc::new(fd));
            }
            Ok(self.set_io_fd(inode, fd, true))
        } else {
            let fd = inode.reopen_primary(libc::O_RDONLY).map_err(err)?;
            Ok(self.set_io_fd(inode, fd, false))
        }
    }

    /// Installs `fd` as the inode's I/O descriptor (unless a concurrent request installed a
    /// better one) and closes the oldest beyond `IO_FDS_MAX`.
    fn set_io_fd(&self, inode: &Arc<Inode>, fd: OwnedFd, writable: bool) -> Arc<OwnedFd> {
        let fd = Arc::new(fd);
        {
            let mut g = inode.io_state();
            if let Some(io) = g.iofd.as_ref()
                && io.serves(writable)
            {
                return io.fd.clone();
            }
            g.iofd = Some(crate::inode::IoFd {
                fd: fd.clone(),
                writable,
            });
        }
        let evicted = self.io_fds.lock().push(inode.nodeid, Arc::downgrade(inode));
        if let Some((id, old)) = evicted
            && id != inode.nodeid
            && let Some(old) = old.upgrade()
        {
            old.clear_io_fd();
        }
        fd
    }

    /// A small read of a large read-only file in no-open mode (a random read: the kernel
    /// reads ahead in larger requests): queues the 1 MiB chunk around it for `prefetch`,
    /// once. Without OPEN there is no passthrough, so random reads would otherwise reach
    /// the daemon page by page until the kernel's page cache holds the whole file.
    fn maybe_prefetch(&self, ino: INodeNo, offset: u64, size: u32) {
        if size > PREFETCH_MAX_READ {
            return;
        }
        let Some(inode) = self.inodes.get(ino.0) else {
            return;
        };
        // Only where nothing can write through the mount: a pushed page must never
        // overwrite newer data a writer put in the page cache.
        if inode.area.store().is_some()
            || inode.size_hint.load(Ordering::Relaxed) < PASSTHROUGH_MIN_SIZE
        {
            return;
        }
        let chunk = offset / PREFETCH_CHUNK;
        {
            let mut done = self.prefetched.lock();
            if done.len() >= PREFETCH_RECORD_MAX {
                done.clear();
            }
            if !done.insert((ino.0, chunk)) {
                return;
            }
        }
        if self.prefetch_tx.try_send((ino.0, chunk)).is_err() {
            self.prefetched.lock().remove(&(ino.0, chunk));
        }
    }

    /// Pushes one chunk of a file into the kernel's page cache (FUSE_NOTIFY_STORE; runs on
    /// the prefetch thread, never on a request thread: a store waits for the page locks
    /// of reads in flight).
    fn prefetch(&self, nodeid: u64, chunk: u64) {
        let Some(inode) = self.inodes.get(nodeid) else {
            return;
        };
        let Ok(fd) = self.io_fd(&inode, false, Op::read) else {
            return;
        };
        let mut buf = vec![0u8; PREFETCH_CHUNK as usize];
        let start = chunk * PREFETCH_CHUNK;
        let mut done = 0;
        while done < buf.len() {
            match sys::pread(fd.as_fd(), &mut buf[done..], start + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => return,
            }
        }
        if done == 0 {
            return;
        }
        let notifier = self.notifier.read();
        if let Some(n) = notifier.as_ref()
            && n.store(INodeNo(nodeid), start, &buf[..done]).is_ok()
        {
            self.stats.prefetches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Where a read or write on `ino` with handle `fh` goes.
    fn io_src(&self, ino: INodeNo, fh: FileHandle, write: bool, op: Op) -> Result<IoSrc, Errno> {
        if fh.0 != 0 {
            return self.file(fh).map(IoSrc::File);
        }
        let inode = self.inode(ino)?;
        if inode.kind != libc::S_IFREG {
            return Err(Errno::EBADF);
        }
        self.io_fd(&inode, write, op).map(IoSrc::Inode)
    }

    /// The inode the kernel may hold for an object about to be deleted from a store: its
    /// store copy is pinned so open files keep working after the deletion.
    fn pin_victim(&self, upper: Option<&OwnedFd>) -> Option<Arc<Inode>> {
        let key = identity_of(upper?.as_fd())?;
        let victim = self.inodes.by_identity(key)?;
        if let Some(u) = victim.backing.write().upper.as_mut() {
            let _ = u.pin();
        }
        Some(victim)
    }

    /// After a deletion: an object with no name left must not be shared with a new object
    /// that reuses its inode number.
    fn forget_if_gone(&self, victim: Option<Arc<Inode>>) {
        if let Some(v) = victim
            && let Ok(Some(u)) = v.upper()
            && sys::fstat(u.as_fd()).is_ok_and(|st| st.st_nlink == 0)
        {
            self.inodes.unregister(&v);
        }
    }

    /// Kernel cache invalidation after an image update: every inode served from a
    /// read-only layer, and every negative entry cached there.
    pub fn invalidate_image(&self) {
        self.xattr_epoch.fetch_add(1, Ordering::Relaxed);
        let notifier = self.notifier.read();
        let Some(n) = notifier.as_ref() else { return };
        let mut count = 0u64;
        let inodes = self.inodes.all();
        // First fresh attributes from the server for every origin object we know. An NFS
        // client goes on serving a name it cached (a replaced file's old handle, a new
        // file's negative entry) while the cached attributes say nothing changed, so the
        // kernel's re-lookups below would get the old object back: ESTALE on a node after
        // an rpm-style rename-over in the image. A forced getattr of a replaced file fails
        // with ESTALE, which makes the client drop it; of a directory, it makes the client
        // revalidate the names below. One GETATTR per cached object, only on an update.
        for inode in &inodes {
            if let Ok(Some((_, fd))) = inode.lower() {
                crate::mount::refresh_attrs(fd.as_fd(), "");
            }
        }
        for inode in inodes {
            let from_origin =
                !inode.is_copied_up() && inode.area.store().is_none() || inode.is_dir();
            if !from_origin {
                continue;
            }
            // Unchanged files keep their kernel caches: dropping every page of every binary
            // and library the node runs made each process fault its code back in over
            // NFS after an update (tens of seconds on a node; a storm on a cluster).
            if !inode.is_dir() && self.unchanged_in_image(&inode) {
                continue;
            }
            let _ = n.inval_inode(INodeNo(inode.nodeid), 0, 0);
            if !inode.is_dir() {
                inval_entry_of(n, &inode);
            }
            count += 1;
        }
        count += self.invalidate_appeared_negatives(n);
        self.stats.invalidations.fetch_add(count, Ordering::Relaxed);
        self.prefetched.lock().clear();
    }

    /// Gives the heap's free pages back to the kernel once the table has shrunk by a
    /// sixteenth of its bound since the last time (the kernel forgot a wave of trimmed
    /// inodes). The allocator keeps freed memory resident, and inodes freed in the middle of
    /// the heap are never at its top, where it trims by itself: without this, the holes
    /// left by a walk that trimmed stayed in the daemon's resident size.
    fn release_freed_heap(&self, len: usize) {
        let high = self.inodes_high.fetch_max(len, Ordering::Relaxed).max(len);
        if high - len >= (self.opts.max_inodes / 16).max(1) {
            self.inodes_high.store(len, Ordering::Relaxed);
            sys::release_free_heap();
        }
    }

    /// Keeps the inode table under its bound: past `max_inodes`, the coldest eighth of the
    /// table is invalidated in the kernel, which then forgets those inodes (runs on the
    /// background thread; entries in use by the kernel simply stay).
    pub fn trim_inodes(&self) {
        let len = self.inodes.len();
        self.release_freed_heap(len);
        if len <= self.opts.max_inodes {
            return;
        }
        let notifier = self.notifier.read();
        let Some(n) = notifier.as_ref() else { return };
        let excess = len - self.opts.max_inodes + self.opts.max_inodes / 8;
        for inode in self.inodes.coldest(excess) {
            inval_entry_of(n, &inode);
        }
        self.stats
            .invalidations
            .fetch_add(excess as u64, Ordering::Relaxed);
    }

    /// After an image update (attributes just refreshed): is `inode` still the object at
    /// its name in its origin, with the change time the kernel was given? Anything unknown
    /// counts as changed.
    fn unchanged_in_image(&self, inode: &Inode) -> bool {
        let Ok(Some((_, fd))) = inode.lower() else {
            return false;
        };
        let Ok(st) = sys::fstat(fd.as_fd()) else {
            return false;
        };
        if ctime_ns(&st) != inode.ctime_hint.load(Ordering::Relaxed) {
            return false;
        }
        let Some(parent) = inode.parent() else {
            return false;
        };
        let Ok(Some((_, dir))) = parent.lower() else {
            return false;
        };
        matches!(sys::stat_at(dir.as_fd(), &inode.name()),
            Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev)
    }

    /// After an image update: invalidates the negative entries whose name now exists in
    /// the image (or whose directory we cannot check); the others stay cached. Keeping
    /// them matters beyond speed: systemd-shutdown looks up `/etc/initrd-release` while
    /// the daemon is stopped (see mountd's `shutdown_guard`).
    fn invalidate_appeared_negatives(&self, n: &fuser::Notifier) -> u64 {
        let negs: Vec<(u64, CString)> = {
            let g = self.negatives.lock();
            g.iter().map(|(k, _)| k.clone()).collect()
        };
        let mut count = 0;
        for (parent, name) in negs {
            let still_absent = self
                .inodes
                .get(parent)
                .and_then(|p| p.lower().ok().flatten())
                .is_some_and(|(_, dir)| {
                    matches!(
                        sys::stat_at(dir.as_fd(), &name),
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT)
                    )
                });
            if still_absent {
                continue;
            }
            self.negatives.lock().pop(&(parent, name.clone()));
            inval_name(n, parent, &name);
            count += 1;
        }
        count
    }

    /// Invalidates every negative entry the kernel may cache in read-only areas; returns
    /// how many.
    fn invalidate_negatives(&self, n: &fuser::Notifier) -> u64 {
        let negs: Vec<(u64, CString)> = {
            let mut g = self.negatives.lock();
            let v = g.iter().map(|(k, _)| k.clone()).collect();
            g.clear();
            v
        };
        for (parent, name) in &negs {
            inval_name(n, *parent, name);
        }
        negs.len() as u64
    }

    /// Sends queued invalidations (runs on the background thread). An empty name stands
    /// for the cached data of inode `parent`.
    pub fn drain_invalidations(&self) {
        let notifier = self.notifier.read();
        while let Ok((parent, name)) = self.inval_rx.try_recv() {
            if let Some(n) = notifier.as_ref() {
                if name.is_empty() {
                    let _ = n.inval_inode(INodeNo(parent), 0, 0);
                } else {
                    inval_name(n, parent, &name);
                }
            }
        }
    }

    /// What serves `path` (for `litectl which`): resolves from the root without keeping
    /// inodes beyond those the kernel already has.
    pub fn which(&self, path: &str) -> Result<WhichInfo, Errno> {
        let mut cur = self.inodes.get(1).ok_or(Errno::EIO)?;
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut held = Vec::new();
        for comp in &comps {
            let c = name_cstr(OsStr::new(comp))?;
            let (inode, _) = self.do_lookup(&cur, &c)?.ok_or(Errno::ENOENT)?;
            held.push(inode.nodeid);
            cur = inode;
        }
        let rs = self.rs();
        let rule = match cur.epoch == rs.epoch {
            true => cur.area.rule().map(|id| rs.rules.rule(id).clone()),
            false => None,
        };
        let b = cur.backing.read();
        let info = WhichInfo {
            path: format!("/{}", comps.join("/")),
            area: match cur.area {
                Area::Image => "image (read-only)".into(),
                Area::ReadOnly(_) => "read-only".into(),
                Area::Store { store, rule: None } => format!("{} (scratch)", store_name(store)),
                Area::Store { store, .. } => store_name(store).into(),
            },
            rule,
            copied_up: b.upper.is_some(),
            served_from: match (&b.upper, &b.lower) {
                (Some(_), _) => cur.area.store().map(|s| s.layer()),
                (None, Some((l, _))) => Some(*l),
                _ => None,
            },
            origin: cur.origin,
        };
        drop(b);
        drop(cur);
        for id in held {
            self.inodes.forget(id, 1);
        }
        Ok(info)
    }
}

fn store_name(s: StoreKind) -> &'static str {
    match s {
        StoreKind::Volatile => "volatile",
        StoreKind::Persistent => "persistent",
        StoreKind::LocalDisk => "localdisk",
    }
}

/// Answer to `litectl which`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WhichInfo {
    pub path: String,
    pub area: String,
    pub rule: Option<crate::rules::LiteRule>,
    pub copied_up: bool,
    pub served_from: Option<LayerId>,
    pub origin: Option<LayerId>,
}

fn stat_with_ino(ino: u64) -> Stat {
    // SAFETY-free: a zeroed stat is a valid plain-data value.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    st.st_ino = ino;
    st
}

fn split_rel(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

fn collect_scratch_dirs(rules: &RuleSet, node: TrieNode, out: &mut HashSet<TrieNode>) {
    // Inserted once per directory, not once per entry: a directory of 2,000 file entries
    // hashed its node 2,000 times, on the mount's path to ready.
    let mut scratch = false;
    for (_, child) in rules.child_names(node) {
        match rules.rule_at(child) {
            Some(id) => {
                scratch |= !rules.is_dir(id) && rules.storage(id).is_writable();
            }
            None => collect_scratch_dirs(rules, child, out),
        }
    }
    if scratch {
        out.insert(node);
    }
}

fn time_spec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -(d.subsec_nanos() as i64);
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: sec as libc::time_t,
                    tv_nsec: nsec as libc::c_long,
                }
            }
        },
    }
}

/// The `fuser::Filesystem` face of an [`Overlay`].
pub struct StateliteFs(pub Arc<Overlay>);

impl StateliteFs {
    fn entry(&self, reply: impl EntryReply, inode: &Inode, st: &Stat) {
        let ttl = self.0.opts.ttl;
        reply.entry(&ttl, &self.0.attr(inode, st), Generation(0));
    }

    /// Creates an object via `make(dir, name)` (atomically replacing a whiteout), then
    /// looks it up. `make` may return a descriptor of what it created (an open file): it is
    /// handed back, and spares a second open.
    fn create_object(
        &self,
        req: &Caller,
        parent: &Arc<Inode>,
        name: &CStr,
        op: Op,
        make: impl Fn(BorrowedFd<'_>, &CStr) -> io::Result<Option<OwnedFd>>,
    ) -> Result<(Arc<Inode>, Stat, Option<OwnedFd>), Errno> {
        let ov = &self.0;
        let rs = ov.rs();
        let (_, area, trie, dir) = ov.writable_child_in(&rs, parent, name, op)?;
        // Only a name the origin might hold needs resolving first; in a directory that
        // exists only in the store, the exclusive create below reports EEXIST itself.
        let store_only =
            parent.area.store().is_some() && !parent.has_lower() && parent.epoch == rs.epoch;
        let entering_rule =
            matches!(area, Area::Store { rule: Some(_), .. }) && parent.area.rule() != area.rule();
        if (!store_only || entering_rule)
            && !ov.just_found_absent(parent, name)
            && ov.resolve(parent, name)?.is_some()
        {
            return Err(Errno::EEXIST);
        }
        // A whiteout at the name (the origin's entry was deleted) makes the exclusive
        // `make` fail with EEXIST, and is then replaced in place: looking for one only
        // then spares every other creation a stat of the name.
        let mut whiteout = false;
        let made = match sys::as_caller(req.uid(), req.gid(), || make(dir.as_fd(), name)) {
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST)
                    && sys::whiteout_at(dir.as_fd(), name) =>
            {
                whiteout = true;
                sys::as_caller(req.uid(), req.gid(), || {
                    sys::unlink_at(dir.as_fd(), name, 0)?;
                    make(dir.as_fd(), name)
                })
            }
            other => other,
        }
        .map_err(err)?;
        let fd = match &made {
            Some(f) => sys::dup(f.as_fd()).map_err(err)?,
            None => sys::open_at(dir.as_fd(), name, libc::O_PATH).map_err(err)?,
        };
        let st = sys::fstat(fd.as_fd()).map_err(err)?;
        // A new directory over a deleted one must not show the origin's old entries.
        if whiteout
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
            && let Ok(Some((_, pl))) = parent.lower()
            && let Ok(Some(old)) = open_child(pl.as_fd(), name)
            && let Ok(list) = sys::read_dir(old.as_fd())
        {
            for (n, _, _) in list {
                if let Ok(c) = CString::new(n) {
                    let _ = copy_up::make_whiteout(fd.as_fd(), &c);
                }
            }
        }
        // A new litefile entry itself (its trie node carries the rule) is reached by its
        // path in the store; a name below one is reached through its parent.
        let entry_rel = match area {
            Area::Store { rule: Some(id), .. }
                if trie.and_then(|t| rs.rules.rule_at(t)) == Some(id) =>
            {
                Some(Arc::<str>::from(rs.rules.relative(id)))
            }
            Area::Store { rule: None, .. } => {
                Some(Arc::<str>::from(Overlay::rel_path(parent, name)))
            }
            _ => None,
        };
        let (inode, st) = ov.instantiate_with(
            parent,
            name,
            Resolved {
                epoch: rs.epoch,
                area,
                trie,
                entry_rel,
                upper: Some(fd),
                lower: None,
                upper_st: None,
                lower_deferred: false,
            },
            Some(st),
        )?;
        Ok((inode, st, made))
    }
}

macro_rules! tri {
    ($timer:ident, $reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $timer.failed = true;
                $reply.error(e);
                return;
            }
        }
    };
}

/// The operations, written once for either transport (see `reply`). Their arguments are
/// the protocol's, as in fuser's `Filesystem`.
#[allow(clippy::too_many_arguments)]
impl StateliteFs {
    pub(crate) fn lookup(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        reply: impl EntryReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::lookup);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(name));
        match tri!(t, reply, ov.do_lookup(&parent, &name)) {
            Some((inode, st)) => {
                if !inode.is_dir() {
                    ov.plus.looked_up(req.pid(), parent.nodeid);
                } else {
                    let walk = ov.plus.entered(req.pid(), parent.nodeid);
                    if walk.walking
                        && let Ok(Some((_, fd))) = inode.lower()
                    {
                        ov.dir_ahead.listed(fd, true, walk.reads_files);
                    }
                }
                self.entry(reply, &inode, &st)
            }
            None => {
                t.failed = true;
                // Cache the miss. In writable areas every creation goes through us; in
                // read-only areas the name is remembered for invalidation on image update.
                if parent.area.store().is_none() {
                    let key = (parent.nodeid, name.clone());
                    let mut negs = ov.negatives.lock();
                    if let Some((old, ())) = negs.push(key.clone(), ())
                        && old != key
                    {
                        let _ = ov.inval_tx.send(old);
                    }
                } else {
                    let epoch = ov.xattr_epoch.load(Ordering::Relaxed);
                    ov.recent_misses
                        .lock()
                        .push((parent.nodeid, name.clone()), epoch);
                }
                ov.stats.negative_entries.fetch_add(1, Ordering::Relaxed);
                let attr = FileAttr {
                    ino: INodeNo(0),
                    ..attr_of(0, &stat_with_ino(0))
                };
                reply.entry(&ov.opts.ttl, &attr, Generation(0));
            }
        }
    }

    pub(crate) fn forget(&self, _req: &Caller, ino: INodeNo, nlookup: u64) {
        let _t = self.0.stats.time(Op::forget);
        self.0.inodes.forget(ino.0, nlookup);
    }

    pub(crate) fn getattr(
        &self,
        _req: &Caller,
        ino: INodeNo,
        fh: Option<FileHandle>,
        reply: impl AttrReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::getattr);
        let inode = tri!(t, reply, ov.inode(ino));
        let st = match fh.and_then(|fh| ov.file(fh).ok()) {
            Some(f) => tri!(t, reply, f.fd().and_then(|fd| sys::fstat(fd).map_err(err))),
            None => tri!(t, reply, ov.stat_inode(&inode)),
        };
        reply.attr(&ov.opts.ttl, &ov.attr(&inode, &st));
    }

    pub(crate) fn setattr(
        &self,
        req: &Caller,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: impl AttrReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::setattr);
        let inode = tri!(t, reply, ov.inode(ino));
        let upper = tri!(t, reply, ov.writable(&inode, Op::setattr));
        if let Some(size) = size {
            let r = match fh.and_then(|fh| ov.file(fh).ok()) {
                Some(f) => f.fd().and_then(|fd| {
                    nix::unistd::ftruncate(fd, size as i64).map_err(|e| errno(e as i32))
                }),
                None if ov.opts.no_open && inode.kind == libc::S_IFREG => {
                    ov.io_fd(&inode, true, Op::setattr).and_then(|fd| {
                        nix::unistd::ftruncate(fd.as_fd(), size as i64)
                            .map_err(|e| errno(e as i32))?;
                        if inode.area.store().is_some_and(|s| s.is_durable()) {
                            sys::fsync(fd.as_fd(), true).map_err(err)?;
                        }
                        Ok(())
                    })
                }
                None => sys::reopen(upper.as_fd(), libc::O_WRONLY)
                    .map_err(err)
                    .and_then(|fd| {
                        nix::unistd::ftruncate(fd.as_fd(), size as i64).map_err(|e| errno(e as i32))
                    }),
            };
            tri!(t, reply, r);
            // FUSE_HANDLE_KILLPRIV_V2 leaves this to us; the kernel's FATTR_KILL_SUIDGID
            // (caller without CAP_FSETID) does not reach us through fuser, the caller's
            // uid stands in for it.
            if req.uid() != 0 {
                tri!(t, reply, sys::kill_suidgid(upper.as_fd()).map_err(err));
            }
        }
        let nothing = size.is_none()
            && uid.is_none()
            && gid.is_none()
            && mode.is_none()
            && atime.is_none()
            && mtime.is_none();
        if nothing {
            // The kernel's kill-priv request under FUSE_HANDLE_KILLPRIV_V2: before a write
            // (passthrough ones included) by a caller without CAP_FSETID to a file with
            // set-user-ID or set-group-ID bits, it strips its own mode change and sends
            // this empty SETATTR; the attributes we answer with are what it caches.
            tri!(t, reply, sys::kill_suidgid(upper.as_fd()).map_err(err));
        }
        if uid.is_some() || gid.is_some() {
            tri!(
                t,
                reply,
                sys::chown_fd(
                    upper.as_fd(),
                    uid.unwrap_or(u32::MAX),
                    gid.unwrap_or(u32::MAX)
                )
                .map_err(err)
            );
        }
        if let Some(mode) = mode {
            tri!(
                t,
                reply,
                sys::chmod_fd(upper.as_fd(), mode & 0o7777).map_err(err)
            );
        }
        if atime.is_some() || mtime.is_some() {
            let times = [time_spec(atime), time_spec(mtime)];
            tri!(
                t,
                reply,
                sys::utimens_fd(upper.as_fd(), &times).map_err(err)
            );
        }
        let st = tri!(t, reply, sys::fstat(upper.as_fd()).map_err(err));
        reply.attr(&ov.opts.ttl, &ov.attr(&inode, &st));
    }

    pub(crate) fn readlink(&self, _req: &Caller, ino: INodeNo, reply: impl DataReply) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::readlink);
        let inode = tri!(t, reply, ov.inode(ino));
        let fd = tri!(t, reply, inode.primary_fd().map_err(err));
        let target = tri!(t, reply, sys::readlink_fd(fd.as_fd()).map_err(err));
        reply.data(&target);
    }

    pub(crate) fn mknod(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: impl EntryReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::mknod);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(name));
        let mode = mode & !(umask & 0o777);
        let (inode, st, _) = tri!(
            t,
            reply,
            self.create_object(req, &parent, &name, Op::mknod, |d, n| {
                sys::mknod_at(d, n, mode, rdev as libc::dev_t)?;
                // A 0:0 character device is also our whiteout: mark it as a real device
                // (a store without trusted xattrs cannot hold one: EPERM, as overlayfs).
                if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
                    let fd = sys::open_at(d, n, libc::O_PATH)?;
                    if sys::set_xattr(fd.as_fd(), sys::DEVICE_MARK, b"", 0).is_err() {
                        let _ = sys::unlink_at(d, n, 0);
                        return Err(io::Error::from_raw_os_error(libc::EPERM));
                    }
                }
                Ok(None)
            })
        );
        self.entry(reply, &inode, &st);
    }

    pub(crate) fn mkdir(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: impl EntryReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::mkdir);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(name));
        let mode = mode & !umask & 0o7777;
        let (inode, st, _) = tri!(
            t,
            reply,
            self.create_object(req, &parent, &name, Op::mkdir, |d, n| sys::mkdir_at(
                d, n, mode
            )
            .map(|()| None))
        );
        self.entry(reply, &inode, &st);
    }

    pub(crate) fn symlink(
        &self,
        req: &Caller,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: impl EntryReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::symlink);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(link_name));
        let target = tri!(
            t,
            reply,
            CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
        );
        let (inode, st, _) = tri!(
            t,
            reply,
            self.create_object(req, &parent, &name, Op::symlink, |d, n| sys::symlink_at(
                &target, d, n
            )
            .map(|()| None))
        );
        self.entry(reply, &inode, &st);
    }

    pub(crate) fn unlink(
        &self,
        _req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::unlink);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(name));
        let (_, _, dir) = tri!(t, reply, ov.writable_child(&parent, &name, Op::unlink));
        let r = tri!(t, reply, ov.resolve(&parent, &name)).ok_or(Errno::ENOENT);
        let r = tri!(t, reply, r);
        if r.upper.is_some() {
            let victim = ov.pin_victim(r.upper.as_ref());
            tri!(t, reply, sys::unlink_at(dir.as_fd(), &name, 0).map_err(err));
            ov.forget_if_gone(victim);
        }
        if r.lower.is_some() {
            tri!(
                t,
                reply,
                copy_up::make_whiteout(dir.as_fd(), &name).map_err(err)
            );
        }
        reply.ok();
    }

    pub(crate) fn rmdir(
        &self,
        _req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::rmdir);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(name));
        let (_, _, dir) = tri!(t, reply, ov.writable_child(&parent, &name, Op::rmdir));
        let (inode, _) = tri!(
            t,
            reply,
            tri!(t, reply, ov.do_lookup(&parent, &name)).ok_or(Errno::ENOENT)
        );
        let result = (|| {
            if !inode.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if !ov.is_empty_dir(&inode)? {
                return Err(Errno::ENOTEMPTY);
            }
            if let Some(u) = inode.upper().map_err(err)? {
                ov.remove_upper_dir(dir.as_fd(), &name, u.as_fd())?;
            }
            if inode.has_lower() {
                copy_up::make_whiteout(dir.as_fd(), &name).map_err(err)?;
            }
            Ok(())
        })();
        ov.inodes.forget(inode.nodeid, 1);
        tri!(t, reply, result);
        reply.ok();
    }

    pub(crate) fn rename(
        &self,
        _req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::rename);
        let parent = tri!(t, reply, ov.inode(parent));
        let newparent = tri!(t, reply, ov.inode(newparent));
        let name = tri!(t, reply, name_cstr(name));
        let newname = tri!(t, reply, name_cstr(newname));
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            t.failed = true;
            reply.error(Errno::EINVAL);
            return;
        }
        let (src_store, _, src_dir) = tri!(t, reply, ov.writable_child(&parent, &name, Op::rename));
        let (dst_store, _, dst_dir) = tri!(
            t,
            reply,
            ov.writable_child(&newparent, &newname, Op::rename)
        );
        let (src, _) = tri!(
            t,
            reply,
            tri!(t, reply, ov.do_lookup(&parent, &name)).ok_or(Errno::ENOENT)
        );
        let result = (|| -> Result<(), Errno> {
            let scratch_file =
                src.kind == libc::S_IFREG && matches!(src.area, Area::Store { rule: None, .. });
            if src_store != dst_store && !scratch_file {
                return Err(Errno::EXDEV);
            }
            let dst = ov.do_lookup(&newparent, &newname)?;
            let mut dst_inode = None;
            if let Some((d, _)) = dst {
                dst_inode = Some(d.clone());
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if Arc::ptr_eq(&d, &src) {
                    return Ok(()); // same object: rename(2) does nothing
                }
                if d.is_dir() {
                    if !src.is_dir() {
                        return Err(Errno::EISDIR);
                    }
                    if !ov.is_empty_dir(&d)? {
                        return Err(Errno::ENOTEMPTY);
                    }
                    if d.has_lower() {
                        return Err(Errno::EXDEV); // would need an opaque directory
                    }
                    if let Some(u) = d.upper().map_err(err)? {
                        // Drop its whiteouts so rename(2) sees an empty directory.
                        for (n, _, _) in sys::read_dir(u.as_fd()).map_err(err)? {
                            let c = CString::new(n).map_err(|_| Errno::EIO)?;
                            let _ = sys::unlink_at(u.as_fd(), &c, 0);
                        }
                    }
                } else if src.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
            }
            if src.is_dir() && src.has_lower() {
                // Like overlayfs without redirect_dir: mv falls back to copy + delete.
                return Err(Errno::EXDEV);
            }
            let had_lower =
                src.has_lower() || src.is_copied_up() && ov.origin_has(&parent, &name)?;
            let upper = ov.copy_up(&src)?;
            // The replaced object may still be open: keep it reachable.
            let victim = dst_inode.as_ref().and_then(|d| {
                let u = d.upper().ok().flatten()?;
                ov.pin_victim(Some(&u))
            });
            if src_store == dst_store {
                sys::rename_at(src_dir.as_fd(), &name, dst_dir.as_fd(), &newname, 0)
                    .map_err(err)?;
            } else if scratch_file {
                // A scratch file (sed -i's temporary next to a file entry) onto an entry
                // in another store: copy, sync, then rename into place, so the target is
                // replaced atomically. Any other rename across stores is EXDEV (SPEC §3).
                let st = sys::fstat(upper.as_fd()).map_err(err)?;
                let fd = copy_up::copy_object(upper.as_fd(), &st, dst_dir.as_fd(), &newname)
                    .map_err(err)?;
                drop(fd);
                sys::unlink_at(src_dir.as_fd(), &name, 0).map_err(err)?;
            } else {
                return Err(Errno::EXDEV);
            }
            if had_lower {
                copy_up::make_whiteout(src_dir.as_fd(), &name).map_err(err)?;
            }
            // The moved inode now lives at its new place.
            if src_store == dst_store {
                let mut loc = src.loc.lock();
                loc.parent = Some(newparent.clone());
                loc.name = newname.clone();
            }
            ov.forget_if_gone(victim);
            if let Some(d) = dst_inode {
                ov.inodes.forget(d.nodeid, 1);
            }
            Ok(())
        })();
        ov.inodes.forget(src.nodeid, 1);
        tri!(t, reply, result);
        reply.ok();
    }

    pub(crate) fn link(
        &self,
        _req: &Caller,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: impl EntryReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::link);
        let inode = tri!(t, reply, ov.inode(ino));
        let newparent = tri!(t, reply, ov.inode(newparent));
        let newname = tri!(t, reply, name_cstr(newname));
        let (store, _, dir) = tri!(t, reply, ov.writable_child(&newparent, &newname, Op::link));
        if inode.area.store() != Some(store) {
            t.failed = true;
            // A hard link cannot join objects of different areas (or the read-only image).
            reply.error(Errno::EXDEV);
            return;
        }
        if tri!(t, reply, ov.resolve(&newparent, &newname)).is_some() {
            t.failed = true;
            reply.error(Errno::EEXIST);
            return;
        }
        let upper = tri!(t, reply, ov.copy_up(&inode));
        let whiteout = sys::whiteout_at(dir.as_fd(), &newname);
        if whiteout {
            tri!(
                t,
                reply,
                sys::unlink_at(dir.as_fd(), &newname, 0).map_err(err)
            );
        }
        tri!(
            t,
            reply,
            sys::link_fd(upper.as_fd(), dir.as_fd(), &newname).map_err(err)
        );
        let (inode, st) = tri!(
            t,
            reply,
            tri!(t, reply, ov.do_lookup(&newparent, &newname)).ok_or(Errno::EIO)
        );
        self.entry(reply, &inode, &st);
    }

    pub(crate) fn open(&self, req: &Caller, ino: INodeNo, flags: OpenFlags, reply: impl OpenReply) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::open);
        let inode = tri!(t, reply, ov.inode(ino));
        if ov.opts.no_open {
            // Answered once: the kernel then opens files itself (no OPEN, RELEASE or, with
            // the ENOSYS to FLUSH, FLUSH round trips), keeps their page cache across opens,
            // and sends reads and writes with handle 0, served by inode (`io_fd`).
            reply.error(Errno::ENOSYS);
            return;
        }
        let (file, fopen) = tri!(
            t,
            reply,
            ov.open_inode(&inode, flags.0, None, |f| ov.open_backing(f.as_fd()))
        );
        if file.cached && flags.0 & libc::O_ACCMODE == libc::O_RDONLY && !inode.is_copied_up() {
            // A small file of the image read through the page cache: a walker reading the
            // files it walks has their data read ahead (see `dir_ahead`).
            if let Some(dir) = inode.parent() {
                ov.plus.opened(req.pid(), dir.nodeid);
            }
        }
        let fh = ov.new_handle();
        let backing = file._backing.clone();
        ov.files.lock().insert(fh, Arc::new(file));
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), fopen, &b),
            None => reply.opened(FileHandle(fh), fopen),
        }
    }

    pub(crate) fn read(
        &self,
        _req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: impl DataReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::read);
        let src = tri!(t, reply, ov.io_src(ino, fh, false, Op::read));
        let fd = tri!(t, reply, src.fd());
        if let IoSrc::Inode(_) = src {
            ov.maybe_prefetch(ino, offset, size);
        }
        // One buffer per request thread, reused: no allocation or zeroing per read.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let buf = &mut buf[..size];
            let mut done = 0;
            while done < buf.len() {
                match sys::pread(fd, &mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => {
                        t.failed = true;
                        reply.error(err(e));
                        return;
                    }
                }
            }
            reply.data(&buf[..done]);
        });
    }

    pub(crate) fn write(
        &self,
        _req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: impl WriteReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::write);
        let src = tri!(t, reply, ov.io_src(ino, fh, true, Op::write));
        let fd = tri!(t, reply, src.fd());
        if wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            tri!(t, reply, sys::kill_suidgid(fd).map_err(err));
        }
        let n = tri!(t, reply, sys::pwrite(fd, data, offset).map_err(err));
        if let IoSrc::Inode(_) = src
            && ov
                .inode(ino)
                .is_ok_and(|i| i.area.store().is_some_and(|s| s.is_durable()))
        {
            // Without FLUSH there is no close to sync at: persistent data is written
            // through to the store before the write returns.
            tri!(t, reply, sys::fsync(fd, true).map_err(err));
        }
        reply.written(n as u32);
    }

    pub(crate) fn flush(
        &self,
        _req: &Caller,
        _ino: INodeNo,
        fh: FileHandle,
        _lock: LockOwner,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::flush);
        if ov.opts.no_open {
            // Answered once: the kernel stops sending FLUSH on every close(2). Durable
            // stores are synced at each write instead (see `write`).
            reply.error(Errno::ENOSYS);
            return;
        }
        let f = tri!(t, reply, ov.file(fh));
        if f.durable_write {
            // Persistent data reaches the store before close(2) returns.
            tri!(
                t,
                reply,
                f.fd().and_then(|fd| sys::fsync(fd, true).map_err(err))
            );
        }
        reply.ok();
    }

    pub(crate) fn release(
        &self,
        _req: &Caller,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: impl EmptyReply,
    ) {
        let _t = self.0.stats.time(Op::release);
        if fh.0 == 0 {
            reply.ok(); // a file opened or created in no-open mode: nothing to close
            return;
        }
        // The inode's I/O state is updated when the last reference goes (`OpenFile::drop`).
        drop(self.0.files.lock().remove(&fh.0));
        reply.ok();
    }

    pub(crate) fn fsync(
        &self,
        _req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::fsync);
        let src = tri!(t, reply, ov.io_src(ino, fh, false, Op::fsync));
        tri!(
            t,
            reply,
            src.fd()
                .and_then(|fd| sys::fsync(fd, datasync).map_err(err))
        );
        reply.ok();
    }

    pub(crate) fn opendir(
        &self,
        _req: &Caller,
        ino: INodeNo,
        _flags: OpenFlags,
        reply: impl OpenReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::opendir);
        let inode = tri!(t, reply, ov.inode(ino));
        if !inode.is_dir() {
            t.failed = true;
            reply.error(Errno::ENOTDIR);
            return;
        }
        // Directories need no open state here: answered ENOSYS once, the kernel stops
        // sending OPENDIR/RELEASEDIR (two round trips per directory read) and keeps
        // listings in its cache by default; readdir then comes without a handle and is
        // served from `listing`.
        if ov.opts.no_opendir {
            reply.error(Errno::ENOSYS);
            return;
        }
        let fh = ov.new_handle();
        ov.dirs.lock().insert(
            fh,
            Arc::new(OpenDir {
                entries: std::sync::OnceLock::new(),
            }),
        );
        // The kernel may keep the listing cached across opens: every change to a directory
        // goes through us (the kernel then drops its copy) or comes with an image update
        // (we invalidate).
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    pub(crate) fn readdir(
        &self,
        _req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: impl DirReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::readdir);
        let dir = tri!(t, reply, ov.inode(ino));
        let entries = tri!(t, reply, ov.listing(&dir, fh, offset));
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.ino),
                (i + 1) as u64,
                e.kind,
                OsStr::from_bytes(e.name.to_bytes()),
            ) {
                break;
            }
        }
        reply.ok();
    }

    pub(crate) fn readdirplus(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: impl DirPlusReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::readdirplus);
        let dir = tri!(t, reply, ov.inode(ino));
        let entries = tri!(t, reply, ov.listing(&dir, fh, offset));
        // Entries by name where this reader does not stat what it lists (see `plus`), and
        // reading ahead where it walks (see `dir_ahead`); measured in benches/RESULTS.md,
        // run 11.
        let parent = dir.loc.lock().parent.as_ref().map_or(0, |p| p.nodeid);
        let listing = ov.plus.listing(req.pid(), dir.nodeid, parent, offset == 0);
        let mut names_only = listing.entries == Entries::NamesOnly;
        if listing.walk.walking
            && offset == 0
            && let Ok(Some((_, fd))) = dir.lower()
        {
            ov.dir_ahead.listed(fd, false, listing.walk.reads_files);
        }
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let name = OsStr::from_bytes(e.name.to_bytes());
            if names_only && e.name_only {
                match reply.add_name(INodeNo(e.ino), (i + 1) as u64, e.kind, name) {
                    Some(true) => break,
                    Some(false) => {
                        ov.stats.name_only_entries.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => names_only = false, // not over this transport
                }
            }
            let Ok(Some((inode, st))) = ov.do_lookup(&dir, &e.name) else {
                continue; // vanished since opendir
            };
            let attr = ov.attr(&inode, &st);
            if reply.add(
                INodeNo(inode.nodeid),
                (i + 1) as u64,
                name,
                &ov.opts.ttl,
                &attr,
                Generation(0),
            ) {
                ov.inodes.forget(inode.nodeid, 1); // not sent: the kernel holds no reference
                break;
            }
        }
        reply.ok();
    }

    pub(crate) fn releasedir(
        &self,
        _req: &Caller,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: impl EmptyReply,
    ) {
        let _t = self.0.stats.time(Op::releasedir);
        self.0.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    pub(crate) fn fsyncdir(
        &self,
        _req: &Caller,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::fsync);
        let inode = tri!(t, reply, ov.inode(ino));
        if let Some(u) = tri!(t, reply, inode.upper().map_err(err)) {
            let fd = tri!(
                t,
                reply,
                sys::reopen(u.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(err)
            );
            tri!(t, reply, sys::fsync(fd.as_fd(), datasync).map_err(err));
        }
        reply.ok();
    }

    pub(crate) fn statfs(&self, _req: &Caller, ino: INodeNo, reply: impl StatfsReply) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::statfs);
        let inode = tri!(t, reply, ov.inode(ino));
        let root = match inode.area.store() {
            Some(s) => ov.layers.store(s).unwrap_or(ov.layers.image()),
            None => ov.layers.image(),
        };
        let fd = tri!(
            t,
            reply,
            sys::reopen(root, libc::O_RDONLY | libc::O_DIRECTORY).map_err(err)
        );
        let s = tri!(
            t,
            reply,
            nix::sys::statvfs::fstatvfs(fd.as_fd()).map_err(|e| errno(e as i32))
        );
        reply.statfs(
            s.blocks(),
            s.blocks_free(),
            s.blocks_available(),
            s.files(),
            s.files_free(),
            s.block_size() as u32,
            s.name_max() as u32,
            s.fragment_size() as u32,
        );
    }

    pub(crate) fn setxattr(
        &self,
        _req: &Caller,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::setxattr);
        let inode = tri!(t, reply, ov.inode(ino));
        if is_internal_xattr(name.as_bytes()) {
            t.failed = true;
            reply.error(Errno::EPERM);
            return;
        }
        let upper = tri!(t, reply, ov.writable(&inode, Op::setxattr));
        inode.forget_xattrs();
        let name = tri!(t, reply, sys::cstr(name).map_err(err));
        tri!(
            t,
            reply,
            sys::set_xattr(upper.as_fd(), &name, value, flags).map_err(err)
        );
        reply.ok();
    }

    pub(crate) fn getxattr(
        &self,
        _req: &Caller,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: impl XattrReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::getxattr);
        let inode = tri!(t, reply, ov.inode(ino));
        if is_internal_xattr(name.as_bytes()) {
            t.failed = true;
            reply.error(Errno::NO_XATTR);
            return;
        }
        // Absence of the xattrs the kernel keeps asking for (`REMEMBERED_XATTRS`) is
        // remembered until something could have added one: a set through us, an image
        // update, a rules reload.
        let epoch = ov.xattr_epoch.load(Ordering::Relaxed);
        if inode.xattr_known_absent(name.as_bytes(), epoch) {
            t.failed = true;
            reply.error(Errno::NO_XATTR);
            return;
        }
        let fd = tri!(t, reply, inode.primary_fd().map_err(err));
        let name = tri!(t, reply, sys::cstr(name).map_err(err));
        let value = match sys::get_xattr(fd.as_fd(), &name) {
            Ok(v) => v,
            Err(e) => {
                if e.raw_os_error() == Some(libc::ENODATA) {
                    inode.remember_xattr_absent(name.as_bytes(), epoch);
                }
                t.failed = true;
                reply.error(err(e));
                return;
            }
        };
        if size == 0 {
            reply.size(value.len() as u32);
        } else if value.len() > size as usize {
            t.failed = true;
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&value);
        }
    }

    pub(crate) fn listxattr(&self, _req: &Caller, ino: INodeNo, size: u32, reply: impl XattrReply) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::listxattr);
        let inode = tri!(t, reply, ov.inode(ino));
        let fd = tri!(t, reply, inode.primary_fd().map_err(err));
        let list = tri!(t, reply, sys::list_xattrs(fd.as_fd()).map_err(err));
        let list: Vec<u8> = list
            .split_inclusive(|&b| b == 0)
            .filter(|n| !is_internal_xattr(n))
            .flatten()
            .copied()
            .collect();
        if size == 0 {
            reply.size(list.len() as u32);
        } else if list.len() > size as usize {
            t.failed = true;
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&list);
        }
    }

    pub(crate) fn removexattr(
        &self,
        _req: &Caller,
        ino: INodeNo,
        name: &OsStr,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::removexattr);
        let inode = tri!(t, reply, ov.inode(ino));
        if is_internal_xattr(name.as_bytes()) {
            t.failed = true;
            reply.error(Errno::EPERM);
            return;
        }
        let upper = tri!(t, reply, ov.writable(&inode, Op::removexattr));
        inode.forget_xattrs();
        let name = tri!(t, reply, sys::cstr(name).map_err(err));
        tri!(
            t,
            reply,
            sys::remove_xattr(upper.as_fd(), &name).map_err(err)
        );
        reply.ok();
    }

    pub(crate) fn access(
        &self,
        _req: &Caller,
        ino: INodeNo,
        _mask: AccessFlags,
        reply: impl EmptyReply,
    ) {
        // With default_permissions the kernel checks modes itself; this only confirms the
        // inode exists.
        match self.0.inode(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    pub(crate) fn create(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: impl CreateReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::create);
        let parent = tri!(t, reply, ov.inode(parent));
        let name = tri!(t, reply, name_cstr(name));
        let mode = mode & !umask & 0o7777;
        let (inode, st, made) = tri!(
            t,
            reply,
            self.create_object(req, &parent, &name, Op::create, |d, n| {
                sys::create_at(d, n, libc::O_RDWR | libc::O_EXCL, mode).map(Some)
            })
        );
        if made.is_some() {
            // A file just made has no file capabilities (the first write asks).
            inode.remember_no_fcaps(ov.xattr_epoch.load(Ordering::Relaxed));
        }
        if ov.opts.no_open {
            // No open state: the descriptor just created serves the inode's I/O, and the
            // kernel sends no RELEASE (handle 0, page cache, no passthrough).
            if let Some(fd) = made
                && !inode.area.store().is_some_and(|s| s.is_durable())
            {
                ov.set_io_fd(&inode, fd, true);
            }
            let attr = ov.attr(&inode, &st);
            reply.created(
                &ov.opts.ttl,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            );
            return;
        }
        // O_CREAT and O_EXCL were honoured creating it; it is new, so O_TRUNC is moot.
        let (file, fopen) = tri!(
            t,
            reply,
            ov.open_inode(
                &inode,
                flags & !libc::O_TRUNC,
                made.map(|fd| (fd, (st.st_dev, st.st_ino))),
                |f| ov.open_backing(f.as_fd())
            )
        );
        let fh = ov.new_handle();
        let backing = file._backing.clone();
        ov.files.lock().insert(fh, Arc::new(file));
        let attr = ov.attr(&inode, &st);
        match backing {
            Some(b) => reply.created_passthrough(
                &ov.opts.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                fopen,
                &b,
            ),
            None => reply.created(&ov.opts.ttl, &attr, Generation(0), FileHandle(fh), fopen),
        }
    }

    pub(crate) fn fallocate(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: impl EmptyReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::fallocate);
        let src = tri!(t, reply, ov.io_src(ino, fh, true, Op::fallocate));
        let fd = tri!(t, reply, src.fd());
        if req.uid() != 0 {
            tri!(t, reply, sys::kill_suidgid(fd).map_err(err)); // see `setattr`
        }
        let r = unsafe {
            libc::fallocate(
                fd.as_raw_fd(),
                mode,
                offset as libc::off_t,
                length as libc::off_t,
            )
        };
        if r < 0 {
            t.failed = true;
            reply.error(err(io::Error::last_os_error()));
            return;
        }
        reply.ok();
    }

    pub(crate) fn lseek(
        &self,
        _req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: impl LseekReply,
    ) {
        let ov = &self.0;
        let mut t = ov.stats.time(Op::lseek);
        let src = tri!(t, reply, ov.io_src(ino, fh, false, Op::lseek));
        let fd = tri!(t, reply, src.fd());
        let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
        if r < 0 {
            t.failed = true;
            reply.error(err(io::Error::last_os_error()));
            return;
        }
        reply.offset(r as i64);
    }
}

impl Filesystem for StateliteFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // FUSE_HANDLE_KILLPRIV_V2: we clear set-user-ID/set-group-ID bits ourselves (see
        // `kill_suidgid`), and in return the kernel may remember that a file has nothing to
        // kill (SB_NOSEC). Without it every write(2), passthrough ones included, first cost
        // a GETXATTR round trip for `security.capability`: 4 KiB writes ran at 90 MB/s.
        let want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        // Not FUSE_ATOMIC_O_TRUNC: with it the kernel hands O_TRUNC to our open before its
        // own write-access (ETXTBSY) check, so a refused open(O_TRUNC) of a running
        // executable would still truncate it. Without it the kernel truncates by SETATTR
        // after that check.
        for flag in want.iter() {
            let _ = config.add_capabilities(flag);
        }
        // No passthrough without OPEN: its backing id only comes in an open reply, and on
        // recent kernels a page-cache open of an inode that is open in passthrough fails.
        if self.0.opts.passthrough
            && !self.0.opts.no_open
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && (config.set_max_stack_depth(2).is_ok() || config.set_max_stack_depth(1).is_ok())
        {
            self.0.passthrough_active.store(true, Ordering::Relaxed);
        }
        // INIT can only lower the mount's readahead window (to this value), and a wider one
        // is set through sysfs afterwards (`mount::widen_readahead`). A value just below the
        // kernel's 128 KiB default tells from sysfs alone that this reply has been applied.
        let _ = config.set_max_readahead(INIT_READ_AHEAD_KB * 1024);
        // The kernel splits writes at `max_pages` (1 MiB) anyway; a ring entry's payload
        // buffer must hold the largest request, which the kernel sizes by `max_write`.
        let _ = config.set_max_write(MAX_WRITE as u32);
        let _ = config.set_max_background(64);
        tracing::info!(
            passthrough = self.0.passthrough_active(),
            "FUSE session initialised"
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        StateliteFs::lookup(self, &Caller::from(req), parent, name, reply)
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        StateliteFs::forget(self, &Caller::from(req), ino, nlookup)
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        StateliteFs::getattr(self, &Caller::from(req), ino, fh, reply)
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        StateliteFs::setattr(
            self,
            &Caller::from(req),
            ino,
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            ctime,
            fh,
            crtime,
            chgtime,
            bkuptime,
            flags,
            reply,
        )
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        StateliteFs::readlink(self, &Caller::from(req), ino, reply)
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        StateliteFs::mknod(
            self,
            &Caller::from(req),
            parent,
            name,
            mode,
            umask,
            rdev,
            reply,
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        StateliteFs::mkdir(self, &Caller::from(req), parent, name, mode, umask, reply)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        StateliteFs::symlink(self, &Caller::from(req), parent, link_name, target, reply)
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        StateliteFs::unlink(self, &Caller::from(req), parent, name, reply)
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        StateliteFs::rmdir(self, &Caller::from(req), parent, name, reply)
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        StateliteFs::rename(
            self,
            &Caller::from(req),
            parent,
            name,
            newparent,
            newname,
            flags,
            reply,
        )
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        StateliteFs::link(self, &Caller::from(req), ino, newparent, newname, reply)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        StateliteFs::open(self, &Caller::from(req), ino, flags, reply)
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        StateliteFs::read(
            self,
            &Caller::from(req),
            ino,
            fh,
            offset,
            size,
            flags,
            lock,
            reply,
        )
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        flags: OpenFlags,
        lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        StateliteFs::write(
            self,
            &Caller::from(req),
            ino,
            fh,
            offset,
            data,
            wf,
            flags,
            lock,
            reply,
        )
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        StateliteFs::flush(self, &Caller::from(req), ino, fh, lock, reply)
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        StateliteFs::release(self, &Caller::from(req), ino, fh, flags, lock, flush, reply)
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        StateliteFs::fsync(self, &Caller::from(req), ino, fh, datasync, reply)
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        StateliteFs::opendir(self, &Caller::from(req), ino, flags, reply)
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        StateliteFs::readdir(self, &Caller::from(req), ino, fh, offset, reply)
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        StateliteFs::readdirplus(self, &Caller::from(req), ino, fh, offset, reply)
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        StateliteFs::releasedir(self, &Caller::from(req), ino, fh, flags, reply)
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        StateliteFs::fsyncdir(self, &Caller::from(req), ino, fh, datasync, reply)
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        StateliteFs::statfs(self, &Caller::from(req), ino, reply)
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        StateliteFs::setxattr(
            self,
            &Caller::from(req),
            ino,
            name,
            value,
            flags,
            position,
            reply,
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        StateliteFs::getxattr(self, &Caller::from(req), ino, name, size, reply)
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        StateliteFs::listxattr(self, &Caller::from(req), ino, size, reply)
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        StateliteFs::removexattr(self, &Caller::from(req), ino, name, reply)
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        StateliteFs::access(self, &Caller::from(req), ino, mask, reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        StateliteFs::create(
            self,
            &Caller::from(req),
            parent,
            name,
            mode,
            umask,
            flags,
            reply,
        )
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        StateliteFs::fallocate(
            self,
            &Caller::from(req),
            ino,
            fh,
            offset,
            length,
            mode,
            reply,
        )
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        StateliteFs::lseek(self, &Caller::from(req), ino, fh, offset, whence, reply)
    }
}

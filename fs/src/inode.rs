//! The inode table: one entry per object the kernel knows, keyed by FUSE node id, holding
//! the object's backing descriptors (the store copy, the origin) and what area it is in.
//!
//! An inode's reported `st_ino` is fixed when the inode is created (from its origin if it
//! has one), so it does not change when the object is copied up into a store.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::backref::BackRef;
use crate::layers::{LayerId, StoreKind};
use crate::rules::{RuleId, TrieNode};
use crate::sys;

/// A passthrough backing id in use for an inode, and the (dev, ino) of its backing file.
pub type SharedBacking = (std::sync::Weak<crate::reply::PassthroughId>, (u64, u64));

/// How an inode's open files do I/O. The kernel allows one mode at a time per inode:
/// page-cache opens and passthrough opens must not coexist, and all passthrough opens share
/// one backing file.
///
/// Only inodes with open files (or whose state must outlive them) carry one: it lives in a
/// box allocated at the first open and freed when nothing is left in it, so the inodes of a
/// walk (most of the table) do not pay for it.
#[derive(Debug, Default)]
pub struct IoState {
    pub backing: Option<SharedBacking>,
    /// Open files served through the page cache.
    pub cached_opens: u32,
    /// A passthrough open wrote to the backing file: the kernel's page cache for this inode
    /// may be stale, so the next page-cache open must not keep it.
    pub written_behind_cache: bool,
    /// The descriptor for handle-less I/O (no-open mode), if one is open.
    pub iofd: Option<IoFd>,
    /// The passthrough backing of the store copy, kept after its opens have closed (see
    /// [`RetainedBacking`]).
    pub retained: Option<RetainedBacking>,
}

/// Backing ids kept at most, node-wide: each holds a kernel file of a store copy open.
pub const MAX_RETAINED_BACKINGS: usize = 1024;

static RETAINED_BACKINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A store copy's passthrough backing id, kept from the file's first reopen on while the
/// kernel holds the inode, for its next passthrough opens: those then need no descriptor,
/// no registration, and their closes no deregistration (system calls of the daemon's, one
/// of them a reopen by handle: open+read+close of a node-written file 24-29 -> 18-22 µs).
/// A store copy is an inode's for good (it is never replaced by another object), so the
/// backing stays the right one; the kernel opens a backing file of its own for each open,
/// with that open's flags, so one id serves reads and writes alike. Files the node writes
/// and reads back (a log appended by script after script, a config re-read) are opened
/// again and again; a file's creation keeps none (most new files are never reopened).
///
/// A kept backing is registered from a read-only descriptor: a file kept open for writing
/// would keep its store from being remounted read-only.
#[derive(Debug)]
pub struct RetainedBacking(pub Arc<crate::reply::PassthroughId>);

impl RetainedBacking {
    /// Whether another backing may be kept now.
    pub fn room() -> bool {
        RETAINED_BACKINGS.load(Ordering::Relaxed) < MAX_RETAINED_BACKINGS
    }

    /// Keeps `b`, unless [`MAX_RETAINED_BACKINGS`] are kept already.
    pub fn new(b: &Arc<crate::reply::PassthroughId>) -> Option<RetainedBacking> {
        RETAINED_BACKINGS
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_RETAINED_BACKINGS).then_some(n + 1)
            })
            .ok()
            .map(|_| RetainedBacking(b.clone()))
    }
}

impl Drop for RetainedBacking {
    fn drop(&mut self) {
        RETAINED_BACKINGS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IoState {
    /// Nothing in use and nothing to remember: the box can go.
    fn is_idle(&self) -> bool {
        self.cached_opens == 0
            && !self.written_behind_cache
            && self.iofd.is_none()
            && self.retained.is_none()
            && self
                .backing
                .as_ref()
                .is_none_or(|(b, _)| b.strong_count() == 0)
    }
}

/// The descriptor I/O without a file handle goes through (the kernel's no-open mode: reads
/// and writes arrive by inode). Opened on the first request that needs it; writable (on the
/// store copy) once the inode has been written.
#[derive(Debug, Clone)]
pub struct IoFd {
    pub fd: Arc<OwnedFd>,
    pub writable: bool,
}

impl IoFd {
    /// True when this descriptor can serve I/O that writes (`write`) or only reads.
    pub fn serves(&self, write: bool) -> bool {
        self.writable || !write
    }
}

/// What governs an object, decided once when it is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The read-only image, not covered by any litefile entry.
    Image,
    /// Read-only: a `ro` entry, or a persistent entry while the state storage is missing.
    ReadOnly(RuleId),
    /// Writable, kept in a store. `rule` is `None` for scratch names: new files in a
    /// read-only image directory that holds writable file entries (so `sed -i` on such an
    /// entry can create its temporary file next to it).
    Store {
        store: StoreKind,
        rule: Option<RuleId>,
    },
}

impl Area {
    pub fn store(self) -> Option<StoreKind> {
        match self {
            Area::Store { store, .. } => Some(store),
            _ => None,
        }
    }
    pub fn rule(self) -> Option<RuleId> {
        match self {
            Area::Image => None,
            Area::ReadOnly(r) => Some(r),
            Area::Store { rule, .. } => rule,
        }
    }
}

/// Where an inode sits in the tree: its parent and name (updated by rename).
#[derive(Debug, Clone)]
pub struct Loc {
    pub parent: Option<Arc<Inode>>,
    pub name: CString,
}

/// The objects behind an inode.
#[derive(Debug, Default)]
pub struct Backing {
    /// The copy in the inode's store, once there is one.
    pub upper: Option<BackRef>,
    /// The origin (image or litetree), while it is visible.
    pub lower: Option<(LayerId, BackRef)>,
}

#[derive(Debug)]
pub struct Inode {
    pub nodeid: u64,
    pub st_ino: u64,
    /// `S_IFMT` bits: an inode never changes type.
    pub kind: libc::mode_t,
    pub area: Area,
    /// Position in the rule trie while the path still leads towards litefile entries.
    pub trie: Option<TrieNode>,
    /// The rules generation `area` and `trie` were decided under (`litectl reload` starts
    /// a new one; older inodes stay valid for open files).
    pub epoch: u64,
    /// The layer the object originally came from (kept after copy-up, for `litectl which`);
    /// `None` for objects created on the node.
    pub origin: Option<LayerId>,
    /// The rule path this inode enters its area at (a rule's own path), for store
    /// scaffolding; `None` below it.
    pub entry_rel: Option<Arc<str>>,
    pub loc: Mutex<Loc>,
    pub backing: RwLock<Backing>,
    lookups: AtomicU64,
    /// Tick of the last lookup, for trimming the table (see `InodeTable::coldest`).
    last_used: AtomicU64,
    /// Tick at which a lookup below this directory last refreshed its ancestors.
    ancestors_warmed: AtomicU64,
    /// Size at the last lookup or getattr: picks the I/O mode at open without a syscall.
    pub size_hint: std::sync::atomic::AtomicI64,
    /// Change time (ns) in the attributes last given to the kernel: an image update leaves
    /// the caches of an object whose change time is the same alone.
    pub ctime_hint: std::sync::atomic::AtomicI64,
    /// Which of [`REMEMBERED_XATTRS`] this object is known to lack: `epoch << 8 | bits`,
    /// valid while the overlay's xattr epoch is still `epoch` (0: nothing known).
    xattrs_absent: AtomicU64,
    /// Keys this inode is registered under in the table's identity map.
    keys: Mutex<IdentityKeys>,
    /// The I/O mode of this inode's open files (kernel rules, see [`IoState`]), while it has
    /// any.
    io: Mutex<Option<Box<IoState>>>,
}

/// Extended attributes whose absence an inode remembers. The kernel asks for each on every
/// occasion and caches none of them: `security.capability` before every write (its
/// kill-priv check) and at every exec, `security.selinux` and the POSIX ACLs for every file
/// `ls -l` shows. Most files have none of them.
pub const REMEMBERED_XATTRS: [&[u8]; 4] = [
    b"security.capability",
    b"security.selinux",
    b"system.posix_acl_access",
    b"system.posix_acl_default",
];

fn remembered_bit(name: &[u8]) -> Option<u64> {
    REMEMBERED_XATTRS
        .iter()
        .position(|n| *n == name)
        .map(|i| 1 << i)
}

impl Inode {
    /// True when the object is known to lack xattr `name` (as of xattr epoch `epoch`).
    pub fn xattr_known_absent(&self, name: &[u8], epoch: u64) -> bool {
        let v = self.xattrs_absent.load(Ordering::Relaxed);
        remembered_bit(name).is_some_and(|bit| v >> 8 == epoch && v & bit != 0)
    }

    /// Remembers that the object lacks xattr `name` (seen in xattr epoch `epoch`).
    pub fn remember_xattr_absent(&self, name: &[u8], epoch: u64) {
        let Some(bit) = remembered_bit(name) else {
            return;
        };
        let _ = self
            .xattrs_absent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(if v >> 8 == epoch {
                    v | bit
                } else {
                    epoch << 8 | bit
                })
            });
    }

    /// Remembers that the object has no file capabilities (a file just made).
    pub fn remember_no_fcaps(&self, epoch: u64) {
        self.remember_xattr_absent(REMEMBERED_XATTRS[0], epoch);
    }

    /// Forgets what was remembered (an xattr is being set or removed).
    pub fn forget_xattrs(&self) {
        self.xattrs_absent.store(0, Ordering::Relaxed);
    }

    /// The I/O state, made now if the inode had none.
    pub fn io_state(&self) -> parking_lot::MappedMutexGuard<'_, IoState> {
        parking_lot::MutexGuard::map(self.io.lock(), |io| &mut **io.get_or_insert_default())
    }

    /// The handle-less I/O descriptor, if one is open and (for `write`) writable.
    pub fn cached_io_fd(&self, write: bool) -> Option<Arc<OwnedFd>> {
        let io = self.io.lock();
        let iofd = io.as_ref()?.iofd.as_ref()?;
        iofd.serves(write).then(|| iofd.fd.clone())
    }

    /// Closes the handle-less I/O descriptor (its object is no longer the inode's, or it is
    /// evicted) and frees the I/O state if nothing else is in it.
    pub fn clear_io_fd(&self) {
        let mut io = self.io.lock();
        if let Some(state) = io.as_mut() {
            state.iofd = None;
        }
        Self::free_if_idle(&mut io);
    }

    /// An open file of this inode was closed.
    pub fn release_io(&self, cached: bool) {
        let mut io = self.io.lock();
        if cached && let Some(state) = io.as_mut() {
            state.cached_opens = state.cached_opens.saturating_sub(1);
        }
        Self::free_if_idle(&mut io);
    }

    fn free_if_idle(io: &mut Option<Box<IoState>>) {
        if io.as_ref().is_some_and(|s| s.is_idle()) {
            *io = None;
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
    /// A descriptor of the store copy, if there is one.
    pub fn upper(&self) -> io::Result<Option<Arc<OwnedFd>>> {
        self.backing
            .read()
            .upper
            .as_ref()
            .map(|b| b.open())
            .transpose()
    }
    /// A descriptor of the origin, if it is visible.
    pub fn lower(&self) -> io::Result<Option<(LayerId, Arc<OwnedFd>)>> {
        let b = self.backing.read();
        match &b.lower {
            Some((l, r)) => Ok(Some((*l, r.open()?))),
            None => Ok(None),
        }
    }
    pub fn has_lower(&self) -> bool {
        self.backing.read().lower.is_some()
    }
    /// The descriptor holding content and attributes now (store copy, else origin).
    pub fn primary_fd(&self) -> io::Result<Arc<OwnedFd>> {
        let b = self.backing.read();
        match (&b.upper, &b.lower) {
            (Some(u), _) => u.open(),
            (None, Some((_, l))) => l.open(),
            (None, None) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
    /// A new descriptor for I/O (`flags`) of the object holding content now (see
    /// [`Self::primary_fd`]).
    pub fn reopen_primary(&self, flags: libc::c_int) -> io::Result<OwnedFd> {
        let b = self.backing.read();
        match (&b.upper, &b.lower) {
            (Some(u), _) => u.reopen(flags),
            (None, Some((_, l))) => l.reopen(flags),
            (None, None) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
    pub fn is_copied_up(&self) -> bool {
        self.backing.read().upper.is_some()
    }
    pub fn parent(&self) -> Option<Arc<Inode>> {
        self.loc.lock().parent.clone()
    }
    pub fn name(&self) -> CString {
        self.loc.lock().name.clone()
    }

    /// The inode's path in the merged tree, for messages and `litectl` (never for access).
    pub fn path(&self) -> String {
        let mut parts = Vec::new();
        let mut cur: Option<Arc<Inode>> = None;
        {
            let loc = self.loc.lock();
            if loc.parent.is_some() {
                parts.push(loc.name.to_string_lossy().into_owned());
            }
            cur = loc.parent.clone().or(cur);
        }
        let mut guard = 0;
        while let Some(node) = cur {
            let loc = node.loc.lock();
            if loc.parent.is_none() || guard > 4096 {
                break;
            }
            parts.push(loc.name.to_string_lossy().into_owned());
            cur = loc.parent.clone();
            guard += 1;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

/// The backing identities `(st_dev, st_ino)` an inode is registered under: its origin's,
/// and its store copy's once copied up. Held inline (a vector was one more allocation per
/// inode); inode number 0, which no object has, marks an empty slot.
#[derive(Debug)]
struct IdentityKeys([(u64, u64); 2]);

impl IdentityKeys {
    const EMPTY: (u64, u64) = (0, 0);

    fn new(first: Option<(u64, u64)>) -> IdentityKeys {
        IdentityKeys([first.unwrap_or(Self::EMPTY), Self::EMPTY])
    }

    /// Adds `key`; returns the key it displaced when both slots were taken (the older
    /// store copy's).
    fn add(&mut self, key: (u64, u64)) -> Option<(u64, u64)> {
        if self.0.contains(&key) {
            return None;
        }
        match self.0.iter_mut().find(|k| k.1 == 0) {
            Some(slot) => {
                *slot = key;
                None
            }
            None => Some(std::mem::replace(&mut self.0[1], key)),
        }
    }

    fn holds(&self, key: (u64, u64)) -> bool {
        key.1 != 0 && self.0.contains(&key)
    }

    /// Empties the slots, returning the keys they held.
    fn take(&mut self) -> impl Iterator<Item = (u64, u64)> + use<> {
        std::mem::replace(&mut self.0, [Self::EMPTY; 2])
            .into_iter()
            .filter(|k| k.1 != 0)
    }
}

/// All inodes the kernel holds references to.
#[derive(Debug)]
pub struct InodeTable {
    by_id: RwLock<HashMap<u64, Arc<Inode>>>,
    /// (st_dev, st_ino) of a backing object -> node id: hard links and repeated lookups of
    /// one object share one inode. Only for keys whose inode number is not the node id
    /// (see `find_identity`).
    by_identity: Mutex<HashMap<(u64, u64), u64>>,
    next: AtomicU64,
    tick: AtomicU64,
}

/// What is needed to create an inode.
pub struct NewInode {
    pub st_ino: u64,
    pub kind: libc::mode_t,
    pub area: Area,
    pub trie: Option<TrieNode>,
    pub epoch: u64,
    pub origin: Option<LayerId>,
    pub entry_rel: Option<Arc<str>>,
    pub parent: Option<Arc<Inode>>,
    pub name: CString,
    pub backing: Backing,
    pub identity: Option<(u64, u64)>,
}

impl InodeTable {
    pub fn new() -> InodeTable {
        InodeTable {
            by_id: RwLock::new(HashMap::new()),
            by_identity: Mutex::new(HashMap::new()),
            next: AtomicU64::new(2),
            tick: AtomicU64::new(0),
        }
    }

    pub fn get(&self, nodeid: u64) -> Option<Arc<Inode>> {
        self.by_id.read().get(&nodeid).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_id.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every inode (for invalidation after an image update).
    pub fn all(&self) -> Vec<Arc<Inode>> {
        self.by_id.read().values().cloned().collect()
    }

    /// Inserts the root inode (node id 1) with one permanent reference.
    pub fn insert_root(&self, new: NewInode) -> Arc<Inode> {
        let inode = Arc::new(Self::build(1, new));
        inode.lookups.store(1, Ordering::Relaxed);
        self.by_id.write().insert(1, inode.clone());
        inode
    }

    fn build(nodeid: u64, new: NewInode) -> Inode {
        Inode {
            nodeid,
            st_ino: new.st_ino,
            kind: new.kind,
            area: new.area,
            trie: new.trie,
            epoch: new.epoch,
            origin: new.origin,
            entry_rel: new.entry_rel,
            loc: Mutex::new(Loc {
                parent: new.parent,
                name: new.name,
            }),
            backing: RwLock::new(new.backing),
            lookups: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            ancestors_warmed: AtomicU64::new(0),
            size_hint: std::sync::atomic::AtomicI64::new(0),
            ctime_hint: std::sync::atomic::AtomicI64::new(0),
            xattrs_absent: AtomicU64::new(0),
            keys: Mutex::new(IdentityKeys::new(new.identity)),
            io: Mutex::new(None),
        }
    }

    /// Returns the inode for a looked-up object, reusing the existing one when the same
    /// backing object is already known (and of the same area), and counts one lookup.
    pub fn lookup_or_insert(&self, new: NewInode) -> Arc<Inode> {
        let parent = new.parent.clone();
        let inode = self.lookup_or_insert_inner(new);
        self.keep_ancestors_warm(parent, inode.last_used.load(Ordering::Relaxed));
        inode
    }

    /// Marks `inode` as in use by a request. Trimming evicts the least recently used, and
    /// lookups alone do not tell: the kernel sends none for the dentries it keeps, so the
    /// busiest inodes (a shell's binaries, exec'd again and again) looked the coldest, and
    /// one `find /` beyond the bound evicted the node's whole working set. Every request on
    /// an inode (GETATTR, OPEN, GETXATTR at exec, READ, ...) counts; the work is one atomic
    /// load unless a lookup happened since the last touch.
    pub fn touch(&self, inode: &Inode) {
        let now = self.tick.load(Ordering::Relaxed);
        if inode.last_used.load(Ordering::Relaxed) < now {
            inode.last_used.store(now, Ordering::Relaxed);
            self.keep_ancestors_warm(inode.parent(), now);
        }
    }

    /// A lookup below a directory counts as a use of the directory and of its ancestors:
    /// trimming by last lookup alone picked `/usr` first during a walk of `/usr` (it was
    /// looked up once, at the start), and invalidating a directory makes the kernel drop
    /// everything below it, so the walk kept losing its whole subtree (1M-file walk: the
    /// table fell to ~200 inodes mid-walk and the kernel redid 100k lookups). The direct
    /// parent is refreshed on every lookup; the chain above it once per 64 lookups below
    /// that parent (ancestors stay within 64 lookups of fresh, at a fraction of the locking).
    fn keep_ancestors_warm(&self, cur: Option<Arc<Inode>>, tick: u64) {
        let Some(parent) = cur else { return };
        parent.last_used.fetch_max(tick, Ordering::Relaxed);
        let warmed = parent.ancestors_warmed.load(Ordering::Relaxed);
        if tick.saturating_sub(warmed) < 64
            || parent
                .ancestors_warmed
                .compare_exchange(warmed, tick, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut cur = parent.loc.lock().parent.clone();
        let mut depth = 0;
        while let Some(dir) = cur {
            dir.last_used.fetch_max(tick, Ordering::Relaxed);
            depth += 1;
            if depth >= 256 {
                break;
            }
            cur = dir.loc.lock().parent.clone();
        }
    }

    /// The inode already registered for a looked-up object (same backing identity, area,
    /// image epoch and kind), counted as looked up once more, as `lookup_or_insert` would
    /// return it. Asking first spares a re-lookup (a revalidation, the two ends of a
    /// rename) the back-references a new inode needs: a file handle and a descriptor cache
    /// slot per layer, made only to be dropped.
    pub fn lookup_existing(
        &self,
        key: (u64, u64),
        area: Area,
        epoch: u64,
        kind: libc::mode_t,
        parent: &Arc<Inode>,
        name: &CStr,
    ) -> Option<Arc<Inode>> {
        let existing = {
            let ids = self.by_identity.lock();
            let existing = self.reusable(&ids, key, area, epoch, kind)?;
            self.count_lookup(&existing, || (Some(parent.clone()), name.to_owned()));
            existing
        };
        self.keep_ancestors_warm(
            Some(parent.clone()),
            existing.last_used.load(Ordering::Relaxed),
        );
        Some(existing)
    }

    /// Whether a lookup of the object `key` would share a registered inode (see
    /// `lookup_existing`), without counting one.
    pub fn has_reusable(
        &self,
        key: (u64, u64),
        area: Area,
        epoch: u64,
        kind: libc::mode_t,
    ) -> bool {
        let ids = self.by_identity.lock();
        self.reusable(&ids, key, area, epoch, kind).is_some()
    }

    /// The inode registered under `key` if a new lookup may share it: the same area, image
    /// epoch and kind of object.
    fn reusable(
        &self,
        ids: &HashMap<(u64, u64), u64>,
        key: (u64, u64),
        area: Area,
        epoch: u64,
        kind: libc::mode_t,
    ) -> Option<Arc<Inode>> {
        self.find_identity(ids, key)
            .filter(|e| e.area == area && e.epoch == epoch && e.kind == kind)
    }

    /// One more lookup of `existing`, found at `at()` (called under the identity lock).
    fn count_lookup(&self, existing: &Inode, at: impl FnOnce() -> (Option<Arc<Inode>>, CString)) {
        existing.lookups.fetch_add(1, Ordering::Relaxed);
        existing
            .last_used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        // The same object under another name (hard link, or after a rename the kernel
        // has not seen): keep the newest location for path reporting.
        if !existing.is_dir() {
            let (parent, name) = at();
            let mut loc = existing.loc.lock();
            loc.parent = parent;
            loc.name = name;
        }
    }

    fn lookup_or_insert_inner(&self, new: NewInode) -> Arc<Inode> {
        let mut ids = self.by_identity.lock();
        if let Some(key) = new.identity
            && let Some(existing) = self.reusable(&ids, key, new.area, new.epoch, new.kind)
        {
            self.count_lookup(&existing, || (new.parent, new.name));
            return existing;
        }
        // The node id is the reported inode number (fuser reports one as the other), so it
        // derives from the origin and survives copy-up and re-lookup. On a clash (layers
        // spanning several filesystems) a fresh id from the high range is used.
        let nodeid = {
            let by_id = self.by_id.read();
            if new.st_ino > 1 && !by_id.contains_key(&new.st_ino) {
                new.st_ino
            } else {
                (1 << 63) | self.next.fetch_add(1, Ordering::Relaxed)
            }
        };
        let identity = new.identity;
        let inode = Arc::new(Self::build(nodeid, new));
        inode.lookups.store(1, Ordering::Relaxed);
        inode
            .last_used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        if let Some(key) = identity {
            Self::register(&mut ids, key, nodeid);
        }
        self.by_id.write().insert(nodeid, inode.clone());
        inode
    }

    /// The inode registered under backing identity `key`. Most inodes' node id is their
    /// origin's inode number, so they are found by node id (and checked to hold `key`)
    /// without an entry in the identity map: that map only holds the other keys (node ids
    /// from the clash range, store copies), which saved ~40 bytes per inode.
    fn find_identity(&self, ids: &HashMap<(u64, u64), u64>, key: (u64, u64)) -> Option<Arc<Inode>> {
        let by_id = self.by_id.read();
        if let Some(inode) = by_id.get(&key.1)
            && inode.keys.lock().holds(key)
        {
            return Some(inode.clone());
        }
        by_id.get(ids.get(&key)?).cloned()
    }

    /// Removes `key` from the map if it still leads to `nodeid` (another inode may have
    /// taken it since).
    fn unmap(ids: &mut HashMap<(u64, u64), u64>, key: (u64, u64), nodeid: u64) {
        if ids.get(&key) == Some(&nodeid) {
            ids.remove(&key);
        }
    }

    /// Empties `inode`'s identity keys and removes those that still lead to it.
    fn drop_keys(ids: &mut HashMap<(u64, u64), u64>, inode: &Inode) {
        for key in inode.keys.lock().take() {
            Self::unmap(ids, key, inode.nodeid);
        }
    }

    /// Records that `key` leads to `nodeid` (see `find_identity`).
    fn register(ids: &mut HashMap<(u64, u64), u64>, key: (u64, u64), nodeid: u64) {
        if key.1 != 0 && key.1 != nodeid {
            ids.insert(key, nodeid);
        }
    }

    /// The `n` least recently looked-up inodes (never the root), oldest first: the ones to
    /// ask the kernel to forget when the table grows past its bound.
    pub fn coldest(&self, n: usize) -> Vec<Arc<Inode>> {
        let mut all: Vec<(u64, Arc<Inode>)> = self
            .by_id
            .read()
            .values()
            .filter(|i| i.nodeid != 1)
            .map(|i| (i.last_used.load(Ordering::Relaxed), i.clone()))
            .collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        all.truncate(n);
        all.sort_by_key(|(t, _)| *t);
        all.into_iter().map(|(_, i)| i).collect()
    }

    /// Registers another backing identity for an inode (its store copy after copy-up).
    pub fn add_identity(&self, inode: &Inode, key: (u64, u64)) {
        let mut ids = self.by_identity.lock();
        Self::register(&mut ids, key, inode.nodeid);
        if let Some(old) = inode.keys.lock().add(key) {
            Self::unmap(&mut ids, old, inode.nodeid);
        }
    }

    /// The inode registered for a backing object, if any.
    pub fn by_identity(&self, key: (u64, u64)) -> Option<Arc<Inode>> {
        self.find_identity(&self.by_identity.lock(), key)
    }

    /// Stops sharing `inode` with later lookups (its object was deleted: a new object
    /// that reuses the inode number must get a fresh inode). The kernel's references
    /// stay valid until it forgets them.
    pub fn unregister(&self, inode: &Inode) {
        Self::drop_keys(&mut self.by_identity.lock(), inode);
    }

    /// Drops `n` kernel references; the inode goes when none are left.
    pub fn forget(&self, nodeid: u64, n: u64) {
        if nodeid == 1 {
            return;
        }
        let Some(inode) = self.get(nodeid) else {
            return;
        };
        let mut ids = self.by_identity.lock();
        let prev = inode
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev <= n {
            Self::drop_keys(&mut ids, &inode);
            self.by_id.write().remove(&nodeid);
        }
    }
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

/// `(st_dev, st_ino)` of a descriptor.
pub fn identity_of(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    sys::fstat(fd).ok().map(|s| (s.st_dev, s.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(st_ino: u64, kind: libc::mode_t, parent: Option<Arc<Inode>>) -> NewInode {
        NewInode {
            st_ino,
            kind,
            area: Area::Image,
            trie: None,
            epoch: 0,
            origin: None,
            entry_rel: None,
            parent,
            name: CString::new(format!("n{st_ino}")).unwrap_or_default(),
            backing: Backing::default(),
            identity: Some((1, st_ino)),
        }
    }

    #[test]
    fn an_inode_fits_its_memory_budget() {
        // The daemon's inode bound (`--max-inodes`) is sized from this: the kernel may hold
        // that many inodes, and a 1,000,000-file walk must stay under 64 MiB of RSS.
        eprintln!("Inode: {} bytes", std::mem::size_of::<Inode>());
        assert!(std::mem::size_of::<Inode>() <= 296);
    }

    #[test]
    fn one_object_looked_up_again_shares_its_inode_and_a_deleted_one_does_not() {
        let t = InodeTable::new();
        let root = t.insert_root(new(1, libc::S_IFDIR, None));
        let a = t.lookup_or_insert(new(10, libc::S_IFREG, Some(root.clone())));
        assert_eq!(a.nodeid, 10, "node id = origin inode number");
        assert!(
            t.by_identity.lock().is_empty(),
            "found by node id, no map entry"
        );
        // A hard link (same object, other name) gets the same inode.
        let b = t.lookup_or_insert(new(10, libc::S_IFREG, Some(root.clone())));
        assert!(Arc::ptr_eq(&a, &b));
        // Same inode number on another filesystem: another object, a clash-range node id
        // that is found through the map.
        let mut other = new(10, libc::S_IFREG, Some(root.clone()));
        other.identity = Some((2, 10));
        let c = t.lookup_or_insert(other);
        assert_ne!(c.nodeid, 10);
        assert_eq!(t.by_identity((2, 10)).map(|i| i.nodeid), Some(c.nodeid));
        assert_eq!(t.by_identity((1, 10)).map(|i| i.nodeid), Some(10));
        // A store copy's identity leads to the inode too.
        t.add_identity(&a, (3, 77));
        assert_eq!(t.by_identity((3, 77)).map(|i| i.nodeid), Some(10));
        // Deleted: a new object reusing the number gets a fresh inode.
        t.unregister(&a);
        assert!(t.by_identity((1, 10)).is_none());
        assert!(t.by_identity((3, 77)).is_none());
        let d = t.lookup_or_insert(new(10, libc::S_IFREG, Some(root.clone())));
        assert!(!Arc::ptr_eq(&a, &d));
        // Forgetting every reference removes the inode and its map entries.
        t.forget(c.nodeid, 1);
        assert!(t.get(c.nodeid).is_none());
        // Left in the map: the new object, whose number is still the old inode's node id.
        assert_eq!(t.by_identity((1, 10)).map(|i| i.nodeid), Some(d.nodeid));
        assert_eq!(t.by_identity.lock().len(), 1);
    }

    #[test]
    fn an_existing_inode_is_found_without_new_backing_and_counted_as_inserting_would() {
        let t = InodeTable::new();
        let root = t.insert_root(new(1, libc::S_IFDIR, None));
        let dir = t.lookup_or_insert(new(5, libc::S_IFDIR, Some(root.clone())));
        let a = t.lookup_or_insert(new(10, libc::S_IFREG, Some(root.clone())));
        // Found again under another name and parent: one more lookup, newest location.
        let b = t
            .lookup_existing((1, 10), Area::Image, 0, libc::S_IFREG, &dir, c"moved")
            .expect("known object");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.name().as_bytes(), b"moved");
        assert_eq!(a.parent().map(|p| p.nodeid), Some(5));
        t.forget(10, 1);
        assert!(t.get(10).is_some(), "two lookups, one forgotten");
        t.forget(10, 1);
        assert!(t.get(10).is_none());
        // What `lookup_or_insert` would not reuse is not found either: another area,
        // epoch or kind, or an unknown object.
        let c = t.lookup_or_insert(new(11, libc::S_IFREG, Some(root.clone())));
        let store = Area::Store {
            store: StoreKind::Volatile,
            rule: None,
        };
        for (key, area, epoch, kind) in [
            ((1, 11), store, 0, libc::S_IFREG),
            ((1, 11), Area::Image, 1, libc::S_IFREG),
            ((1, 11), Area::Image, 0, libc::S_IFDIR),
            ((1, 12), Area::Image, 0, libc::S_IFREG),
        ] {
            assert!(
                t.lookup_existing(key, area, epoch, kind, &root, c"n11")
                    .is_none(),
                "{key:?} {area:?} {epoch} {kind:o}"
            );
        }
        t.forget(c.nodeid, 1);
        assert!(t.get(c.nodeid).is_none(), "misses counted no lookup");
    }

    #[test]
    fn identity_keys_hold_the_origin_and_the_store_copy() {
        let mut k = IdentityKeys::new(Some((1, 10)));
        assert_eq!(k.add((2, 20)), None);
        assert_eq!(k.add((2, 20)), None, "already there");
        // A second store copy displaces the first.
        assert_eq!(k.add((2, 30)), Some((2, 20)));
        assert_eq!(k.take().collect::<Vec<_>>(), vec![(1, 10), (2, 30)]);
        assert_eq!(k.take().count(), 0);
        assert_eq!(IdentityKeys::new(None).take().count(), 0);
    }

    #[test]
    fn a_directory_whose_subtree_is_in_use_is_not_among_the_coldest() {
        let t = InodeTable::new();
        let root = t.insert_root(new(1, libc::S_IFDIR, None));
        // /usr, looked up once; then a long walk below /usr/share, plus unrelated files.
        let usr = t.lookup_or_insert(new(10, libc::S_IFDIR, Some(root.clone())));
        let share = t.lookup_or_insert(new(11, libc::S_IFDIR, Some(usr.clone())));
        let mut ino = 100;
        for _ in 0..1000 {
            t.lookup_or_insert(new(ino, libc::S_IFREG, Some(root.clone())));
            ino += 1;
            t.lookup_or_insert(new(ino, libc::S_IFREG, Some(share.clone())));
            ino += 1;
        }
        let coldest: Vec<u64> = t.coldest(500).iter().map(|i| i.nodeid).collect();
        assert!(!coldest.contains(&usr.nodeid), "/usr is in use below");
        assert!(!coldest.contains(&share.nodeid));
        // Files looked up once long ago are the coldest.
        assert_eq!(coldest[0], 100);
    }
}

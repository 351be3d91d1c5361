//! Reading ahead of a directory walk: a few threads walk the image a little ahead of a
//! reader that walks it through us, so the reader's listings find their reads cached.
//!
//! A cold READDIRPLUS waits on the image server for the directory's blocks (getdents) and
//! for its subdirectories' inodes (their entries are resolved). A native walk waits for the
//! same reads, but through us each directory also costs two round trips, and the reads
//! and the round trips come one after the other. The threads walk the same directories
//! in the same order (depth first, in listing order) straight on the image, with no round
//! trips, so it soon runs ahead of the reader and the reader's waits for the server
//! overlap with its round trips. It only reads (getdents, fstatat): nothing the daemon
//! serves depends on it having run.
//!
//! A walk by path (`lstat` of every entry by full path, as `find -ls` over a list or an
//! rsync of a file list does) costs a LOOKUP per entry, each waiting on the image for the
//! directory's blocks and the entry's inode: for such a walker (see
//! `plus::PlusPolicy::entered`) the threads read every entry's inode, not only the
//! subdirectories', and since it goes in name order rather than in listing order, a
//! directory it reaches is put first without dropping what was queued.
//!
//! A walker that also reads the files it walks (`grep -r`, `tar c`, `cp -r`, a backup, a
//! by-path read of every file in a list) waits on the image server once more per file,
//! for its data: a small file's READ costs a round trip to the server even when its inode
//! was read ahead. For such a walker (see `plus::PlusPolicy::opened`) the threads also
//! ask for the data of the small regular files in each directory they read
//! (`POSIX_FADV_WILLNEED`: the read is started, not waited for), so the server answers
//! several at once and ahead of the reader, and its READs find the data cached.
//!
//! Bounded: it goes at most [`AHEAD`] directories beyond the reader's latest listing or
//! directory lookup, at most [`ENTRIES`] inodes per directory, data only of files up to
//! [`DATA_FILE_MAX`] and [`DATA_DIR_MAX`] bytes per directory, and only for readers seen
//! walking (see `plus::PlusPolicy::listing`), so an `ls` of one directory, resolving a
//! path, or a walk that stops, costs the image server little more. Threads that are ahead
//! and waiting are not woken for each listing: not at all below what they have read, and
//! once every [`WAKE_AFTER`] listings while they wait for budget.

use std::collections::VecDeque;
use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::{Condvar, Mutex};

use crate::sys;

/// Threads reading: the image server answers several reads at once, and one thread
/// waiting on each read in turn does not outrun the walker.
const THREADS: usize = 3;
/// Directories read beyond the walker's latest listing at most.
pub const AHEAD: u32 = 64;
/// Directories waiting to be read at most (a very wide level drops its last ones).
const STACK: usize = 4096;
/// Entries other than subdirectories whose inodes are read per directory, at most.
const ENTRIES: usize = 1024;
/// Files whose data is read ahead: at most this size (a larger file's first READ makes the
/// kernel read ahead of it anyway, and passthrough files never reach the daemon).
pub const DATA_FILE_MAX: i64 = 64 << 10;
/// Data read ahead per directory, at most.
pub const DATA_DIR_MAX: i64 = 4 << 20;
/// Directories remembered as read (to tell a walker the thread is ahead of from one that
/// went elsewhere).
const SEEN: usize = 8192;
/// Listings of directories already read that it takes to wake threads waiting for budget:
/// they then read this many and more at once, instead of one directory per wake-up. Each
/// wake-up costs the request thread a futex call and the CPU it lands on an interrupt:
/// with the image in the page cache, a fresh walk spent ~15 % of its time on them.
const WAKE_AFTER: u32 = AHEAD / 4;

/// A directory still to read.
enum Pending {
    /// The directory the walker listed last.
    Dir(Arc<OwnedFd>),
    /// A subdirectory `name` of an already read directory.
    Child(Arc<OwnedFd>, CString),
}

#[derive(Default)]
struct Walk {
    /// The walker's latest listed directory, not yet taken by the thread.
    listed: Option<Arc<OwnedFd>>,
    /// Depth first: the back is read next.
    stack: VecDeque<Pending>,
    /// Directories the threads may still read before the walker lists another.
    budget: u32,
    /// The walker stats what it finds (a walk by path): every entry's inode is read, not
    /// only the subdirectories'.
    every_entry: bool,
    /// The walker reads the files it finds: their data is read ahead too.
    data: bool,
    /// Directories read lately, by (st_dev, st_ino).
    seen: Option<LruCache<(u64, u64), ()>>,
    /// Threads waiting for work.
    waiting: usize,
    /// Listings of already read directories since the waiting threads were last woken.
    owed: u32,
    closed: bool,
}

impl Walk {
    fn seen(&mut self) -> &mut LruCache<(u64, u64), ()> {
        self.seen.get_or_insert_with(|| {
            LruCache::new(NonZeroUsize::new(SEEN).unwrap_or(NonZeroUsize::MIN))
        })
    }
}

#[derive(Default)]
struct Shared {
    walk: Mutex<Walk>,
    wake: Condvar,
}

pub struct DirAhead {
    shared: Arc<Shared>,
}

/// What the threads have read (for `litectl stats`).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Directories read.
    pub dirs: Arc<AtomicU64>,
    /// Files whose data was asked for.
    pub files: Arc<AtomicU64>,
}

impl DirAhead {
    /// Starts the threads, which count what they read in `done`.
    pub fn start(done: Counts) -> std::io::Result<DirAhead> {
        let shared = Arc::new(Shared::default());
        for i in 0..THREADS {
            let s = shared.clone();
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("dir-ahead-{i}"))
                .spawn(move || {
                    // Below every request thread: they only fill time spent waiting on reads.
                    let p = libc::sched_param { sched_priority: 0 };
                    // SAFETY: a plain syscall on this thread (0) with a valid parameter.
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
                    s.run(&done);
                })?;
        }
        Ok(DirAhead { shared })
    }

    /// A walker just listed `dir` (a descriptor of its image directory); `every_entry`:
    /// it looks up names one by one (a stat walk by path) rather than listing; `data`: it
    /// reads the files it walks.
    pub fn listed(&self, dir: Arc<OwnedFd>, every_entry: bool, data: bool) {
        let mut w = self.shared.walk.lock();
        w.every_entry = every_entry;
        w.data = data;
        // A thread waits when the walker is in a directory the threads read already, or
        // when they used up their budget ahead of it. A directory read already with nothing
        // queued below it needs nobody; one with directories queued wakes them once every
        // few listings, each wake-up then reading that many more. A thread that is
        // reading takes the listing next without a wake-up.
        if w.waiting > 0 && identity(dir.as_fd()).is_some_and(|id| w.seen().contains(&id)) {
            if w.stack.is_empty() {
                return;
            }
            w.owed += 1;
            if w.owed < WAKE_AFTER {
                w.listed = Some(dir);
                return;
            }
        }
        w.listed = Some(dir);
        if w.waiting > 0 {
            w.owed = 0;
            drop(w);
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for DirAhead {
    fn drop(&mut self) {
        self.shared.walk.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// (st_dev, st_ino) of a directory.
fn identity(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    sys::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

impl Shared {
    fn run(&self, done: &Counts) {
        loop {
            let next = {
                let mut w = self.walk.lock();
                loop {
                    if w.closed {
                        return;
                    }
                    if w.listed.is_some() || (w.budget > 0 && !w.stack.is_empty()) {
                        break;
                    }
                    w.waiting += 1;
                    self.wake.wait(&mut w);
                    w.waiting -= 1;
                }
                match w.listed.take() {
                    Some(d) => Err(d),
                    None => {
                        w.budget -= 1;
                        let how = Read {
                            every_entry: w.every_entry,
                            data: w.data,
                        };
                        Ok((w.stack.pop_back(), how))
                    }
                }
            };
            match next {
                // Where the walker is: if the thread read that directory, it is ahead and
                // goes on; else it starts over from there.
                Err(listed) => {
                    let id = identity(listed.as_fd());
                    let mut w = self.walk.lock();
                    let ahead = id.is_some_and(|id| w.seen().contains(&id));
                    if !ahead {
                        // A walk by path goes in name order, not in listing order: what
                        // is queued is still ahead of it, the new place just comes first.
                        if !w.every_entry {
                            w.stack.clear();
                        }
                        w.stack.push_back(Pending::Dir(listed));
                    }
                    w.budget = AHEAD;
                }
                Ok((Some(p), how)) => {
                    let dir = match p {
                        Pending::Dir(d) => Some(d),
                        Pending::Child(parent, name) => {
                            sys::open_at(parent.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY)
                                .ok()
                                .map(Arc::new)
                        }
                    };
                    let Some(dir) = dir else { continue };
                    // Read once: a directory the walker reached first was put on top and
                    // read then, and is still queued below as its parent's child.
                    if let Some(id) = identity(dir.as_fd()) {
                        let mut w = self.walk.lock();
                        if w.seen().put(id, ()).is_some() {
                            w.budget += 1; // nothing read
                            continue;
                        }
                    }
                    let children = read(&dir, how, &done.files);
                    done.dirs.fetch_add(1, Ordering::Relaxed);
                    let mut w = self.walk.lock();
                    for name in children.into_iter().rev() {
                        if w.stack.len() == STACK {
                            w.stack.pop_front();
                        }
                        w.stack.push_back(Pending::Child(dir.clone(), name));
                    }
                }
                Ok((None, _)) => {}
            }
        }
    }
}

/// What reading one directory takes in.
#[derive(Clone, Copy)]
struct Read {
    /// Every entry's inode, not only the subdirectories'.
    every_entry: bool,
    /// The data of its small regular files.
    data: bool,
}

/// Reads `dir`'s entries and its subdirectories' inodes into the image's caches, as its
/// READDIRPLUS will (every entry's inode, and small files' data, as `how` says); returns
/// the subdirectories' names in the order the walker is expected to take: listing order
/// for a walk that lists, name order for a walk by path (its list was sorted).
fn read(dir: &OwnedFd, how: Read, files: &AtomicU64) -> Vec<CString> {
    let Ok(entries) = sys::read_dir(dir.as_fd()) else {
        return Vec::new();
    };
    let mut subdirs = Vec::new();
    let mut data_left = DATA_DIR_MAX;
    for (i, (name, dtype, _)) in entries.into_iter().enumerate() {
        let is_dir = dtype == libc::DT_DIR || dtype == libc::DT_UNKNOWN;
        if !is_dir && i >= ENTRIES {
            continue; // a huge flat directory: its first entries only
        }
        if !how.every_entry && !how.data && !is_dir {
            continue;
        }
        let Ok(name) = CString::new(name) else {
            continue;
        };
        let Ok(st) = sys::stat_at(dir.as_fd(), &name) else {
            continue;
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => subdirs.push(name),
            libc::S_IFREG
                if how.data && st.st_size > 0 && st.st_size <= DATA_FILE_MAX.min(data_left) =>
            {
                data_left -= st.st_size;
                if ask_for_data(dir, &name, st.st_size) {
                    files.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
    if how.every_entry {
        subdirs.sort();
    }
    subdirs
}

/// Starts reading a file's data into the image's page cache without waiting for it.
fn ask_for_data(dir: &OwnedFd, name: &CString, size: i64) -> bool {
    // O_NONBLOCK: the name was a regular file a moment ago, but a FIFO put in its place
    // must not block the thread.
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let Ok(fd) = sys::open_at(dir.as_fd(), name, flags) else {
        return false;
    };
    sys::will_need(fd.as_fd(), size).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &std::path::Path) -> Arc<OwnedFd> {
        Arc::new(OwnedFd::from(std::fs::File::open(p).expect("open")))
    }

    fn wait_for(done: &AtomicU64, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while done.load(Ordering::Relaxed) < n {
            assert!(std::time::Instant::now() < deadline, "read ahead stalled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A tree of `AHEAD * 3` directories, one level below the top.
    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for i in 0..AHEAD * 3 {
            std::fs::create_dir_all(d.path().join(format!("top/d{i:03}/sub"))).expect("mkdir");
        }
        d
    }

    #[test]
    fn it_reads_at_most_a_budget_ahead_of_the_walker_and_goes_on_when_it_lists_again() {
        let d = tree();
        let counts = Counts::default();
        let done = counts.dirs.clone();
        let ahead = DirAhead::start(counts).expect("start");
        ahead.listed(open(&d.path().join("top")), false, false);
        wait_for(&done, AHEAD as u64);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            done.load(Ordering::Relaxed),
            AHEAD as u64,
            "stops at the budget"
        );
        // The walker reaches directories the thread already read (the first in listing
        // order): once it has listed a few, the thread goes on from where it is, for
        // another budget.
        let first = sys::read_dir(open(&d.path().join("top")).as_fd()).expect("read_dir")[0]
            .0
            .clone();
        let first = d
            .path()
            .join("top")
            .join(String::from_utf8_lossy(&first).as_ref());
        for _ in 1..WAKE_AFTER {
            ahead.listed(open(&first), false, false);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            done.load(Ordering::Relaxed),
            AHEAD as u64,
            "not woken for each listing"
        );
        ahead.listed(open(&first), false, false);
        wait_for(&done, 2 * AHEAD as u64);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(done.load(Ordering::Relaxed), 2 * AHEAD as u64);
        drop(ahead);
    }

    #[test]
    fn it_walks_depth_first_in_listing_order_and_starts_over_where_the_walker_went() {
        let d = tree();
        let counts = Counts::default();
        let done = counts.dirs.clone();
        let s = Arc::new(Shared::default());
        // No thread: step the walk by hand through `run` with a budget of 3.
        let top = open(&d.path().join("top"));
        {
            let mut w = s.walk.lock();
            w.stack.push_back(Pending::Dir(top.clone()));
            w.budget = 3;
        }
        let t = {
            let s = s.clone();
            let counts = counts.clone();
            std::thread::spawn(move || s.run(&counts))
        };
        wait_for(&done, 3);
        let names: Vec<String> = {
            let w = s.walk.lock();
            w.stack
                .iter()
                .rev()
                .take(2)
                .map(|p| match p {
                    Pending::Child(_, n) => n.to_string_lossy().into_owned(),
                    Pending::Dir(_) => "dir".into(),
                })
                .collect()
        };
        // top, then its first subdirectory, then that one's only subdirectory were read:
        // next come the first subdirectory's next sibling and the one after.
        let mut listing: Vec<String> = sys::read_dir(top.as_fd())
            .expect("read_dir")
            .into_iter()
            .map(|(n, _, _)| String::from_utf8_lossy(&n).into_owned())
            .collect();
        listing.truncate(3);
        assert_eq!(names, listing[1..3].to_vec());
        // The walker turns up somewhere the thread has not been: it starts over there.
        s.walk.lock().listed = Some(open(&d.path().join("top/d100")));
        s.wake.notify_one();
        wait_for(&done, 5);
        {
            let w = s.walk.lock();
            assert!(
                w.stack.is_empty(),
                "d100 and its sub read, nothing else queued"
            );
        }
        s.walk.lock().closed = true;
        s.wake.notify_all();
        t.join().expect("thread");
    }

    #[test]
    fn a_listing_below_what_was_read_wakes_nobody_and_one_elsewhere_wakes_at_once() {
        let d = tempfile::tempdir().expect("tempdir");
        for i in 0..4 {
            std::fs::create_dir_all(d.path().join(format!("top/d{i}"))).expect("mkdir");
        }
        std::fs::create_dir_all(d.path().join("other/x")).expect("mkdir");
        let counts = Counts::default();
        let done = counts.dirs.clone();
        let ahead = DirAhead::start(counts).expect("start");
        ahead.listed(open(&d.path().join("top")), false, false);
        wait_for(&done, 5);
        let all_waiting = |a: &DirAhead| {
            let w = a.shared.walk.lock();
            w.waiting == THREADS && w.stack.is_empty()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !all_waiting(&ahead) {
            assert!(
                std::time::Instant::now() < deadline,
                "threads never went idle"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Everything below top is read: listing its subdirectories leaves no work.
        for i in 0..4 {
            ahead.listed(open(&d.path().join(format!("top/d{i}"))), false, false);
            assert!(
                ahead.shared.walk.lock().listed.is_none(),
                "d{i}: nothing to do"
            );
        }
        // A directory it has not read wakes a thread straight away.
        ahead.listed(open(&d.path().join("other")), false, false);
        wait_for(&done, 7);
        drop(ahead);
    }

    #[test]
    fn a_directory_queued_twice_is_read_once() {
        let d = tree();
        let counts = Counts::default();
        let s = Arc::new(Shared::default());
        let top = open(&d.path().join("top"));
        {
            // d000 is queued as top's child, and the walker reached it first (on top).
            let mut w = s.walk.lock();
            w.stack
                .push_back(Pending::Child(top.clone(), c"d000".into()));
            w.stack
                .push_back(Pending::Dir(open(&d.path().join("top/d000"))));
            w.budget = 10;
        }
        let t = {
            let (s, counts) = (s.clone(), counts.clone());
            std::thread::spawn(move || s.run(&counts))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !s.walk.lock().stack.is_empty() {
            assert!(std::time::Instant::now() < deadline, "stalled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            counts.dirs.load(Ordering::Relaxed),
            2,
            "d000 and d000/sub, once each"
        );
        assert_eq!(
            s.walk.lock().budget,
            8,
            "a skipped directory costs no budget"
        );
        s.walk.lock().closed = true;
        s.wake.notify_all();
        t.join().expect("thread");
    }

    /// Whether every page of `path` is in the page cache.
    fn resident(path: &std::path::Path) -> bool {
        let f = std::fs::File::open(path).expect("open");
        let len = f.metadata().expect("stat").len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of a file we hold open, unmapped before
        // return; mincore writes one byte per page into a vector of that many bytes.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            let r = libc::mincore(p, len, vec.as_mut_ptr());
            libc::munmap(p, len);
            assert_eq!(r, 0, "mincore");
        }
        vec.iter().all(|&b| b & 1 == 1)
    }

    /// Drops `path`'s pages from the page cache (clean pages: after an fsync).
    fn evict(path: &std::path::Path) {
        let f = std::fs::File::open(path).expect("open");
        f.sync_all().expect("fsync");
        // SAFETY: a plain syscall on a descriptor we hold.
        let r = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(r, 0, "fadvise");
    }

    #[test]
    fn for_a_walker_that_reads_files_the_data_of_small_files_is_read_ahead_and_no_more() {
        let d = tempfile::tempdir().expect("tempdir");
        let top = d.path().join("top");
        std::fs::create_dir_all(top.join("zeta")).expect("mkdir");
        std::fs::create_dir_all(top.join("alpha")).expect("mkdir");
        let small: Vec<_> = (0..3).map(|i| top.join(format!("small-{i}"))).collect();
        for p in &small {
            std::fs::write(p, vec![b'x'; 12 << 10]).expect("write");
        }
        let big = top.join("big");
        std::fs::write(&big, vec![b'y'; (DATA_FILE_MAX + 4096) as usize]).expect("write");
        std::fs::write(top.join("empty"), b"").expect("write");
        let fifo =
            CString::new(top.join("fifo").into_os_string().into_encoded_bytes()).expect("path");
        // SAFETY: a plain syscall with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        for p in small.iter().chain([&big]) {
            evict(p);
        }
        let cached = small.iter().filter(|p| resident(p)).count();
        if cached > 0 {
            // A filesystem that keeps pages regardless (tmpfs): nothing to observe.
            eprintln!("page cache eviction has no effect here; skipping the residency check");
        }

        let files = AtomicU64::new(0);
        let dir: OwnedFd = std::fs::File::open(&top).expect("open").into();
        // A walker that only stats: no data.
        let subdirs = read(
            &dir,
            Read {
                every_entry: true,
                data: false,
            },
            &files,
        );
        assert_eq!(files.load(Ordering::Relaxed), 0);
        let names: Vec<_> = subdirs
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["alpha", "zeta"],
            "a walk by path goes in name order"
        );
        if cached == 0 {
            assert!(!small.iter().any(|p| resident(p)), "stat reads no data");
        }
        // A walker that reads files: the small regular ones only (not the empty one, the
        // one over the size limit, or the FIFO, which must not block the thread).
        read(
            &dir,
            Read {
                every_entry: false,
                data: true,
            },
            &files,
        );
        assert_eq!(files.load(Ordering::Relaxed), small.len() as u64);
        if cached == 0 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !small.iter().all(|p| resident(p)) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "small files not read ahead"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(
                !resident(&big),
                "the large file is left to the kernel's read-ahead"
            );
        }
    }
}

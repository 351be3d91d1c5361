//! Which READDIRPLUS replies carry the attributes of every entry.
//!
//! An entry's attributes cost a resolution (open, fstat, file handle): on a cold cache one
//! inode read from the image server per entry, which a program that only reads names
//! (`find -name`, a build's directory scan, `ls` without `-l`) never uses and a native
//! `getdents` never pays. A program that stats what it lists (`ls -l`, `find -ls`, `du`,
//! rsync) saves a LOOKUP round trip per entry when they come with the listing. The
//! kernel's own heuristic (FUSE_READDIRPLUS_AUTO) decides per directory, before it can know
//! which kind of reader it serves. This decides per reader (the calling thread):
//!
//! - a reader's first listing is full (an `ls -l` of one directory is a new reader each
//!   time), its next ones are name-only for everything but directories (their entries are
//!   always full: a walk descends into them, and its open needs the inode anyway);
//! - when it looks up a name from one of its name-only listings, it gets full listings
//!   from then on;
//! - after a run of [`FULL_RUN`] full listings it is given one name-only listing again, so
//!   a reader that stopped stat'ing what it lists is noticed.
//!
//! The same per-reader state tells whether a reader is walking (it lists a directory it
//! was given in the listing before): those are read ahead of (see `dir_ahead`), and
//! whether it reads the files it walks (it opens files in one directory after another):
//! for those the files' data is read ahead too.
//!
//! A name-only entry is a READDIRPLUS entry with node id 0, which the kernel passes on to
//! the reader without creating a dentry (fs/fuse/readdir.c, `fuse_direntplus_link`).

use lru::LruCache;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Full listings a reader gets after it was seen to stat, before it is probed again.
pub const FULL_RUN: u32 = 64;
/// Listings a reader counts as walking after it last listed a directory it had just been
/// given.
pub const WALK_RUN: u32 = 256;
/// Listings and directory lookups a reader counts as reading the files it walks after it
/// last opened a file in a directory other than its previous file's.
pub const READ_RUN: u32 = 16;
/// Name-only listings per reader that a lookup is matched against.
const PROBES: usize = 4;
/// Readers remembered (threads listing directories at the same time).
const READERS: usize = 256;
/// Slots of the lock-free filter LOOKUP checks before taking the lock.
const SLOTS: usize = 64;

/// How to answer one READDIRPLUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listing {
    pub entries: Entries,
    /// What the listing shows of its reader.
    pub walk: Walk,
}

/// What a listing or a directory lookup shows of its reader (see [`PlusPolicy::listing`],
/// [`PlusPolicy::entered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// It walks the tree: it lists a directory found in one of its last listings, or looks
    /// up sibling directories.
    pub walking: bool,
    /// It also reads the files it walks (see [`PlusPolicy::opened`]).
    pub reads_files: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entries {
    /// Every entry resolved, with attributes.
    Full,
    /// Directories resolved, other entries by name, type and inode number only.
    NamesOnly,
}

/// The last few directories of some kind (0: none), oldest replaced first.
#[derive(Clone, Copy, Default)]
struct Recent {
    dirs: [u64; PROBES],
    next: usize,
}

impl Recent {
    fn contains(&self, dir: u64) -> bool {
        self.dirs.contains(&dir)
    }
    fn remember(&mut self, dir: u64) {
        if !self.contains(dir) {
            self.dirs[self.next] = dir;
            self.next = (self.next + 1) % PROBES;
        }
    }
}

struct Reader {
    /// Full listings left before the next probe.
    full_left: u32,
    /// Directories most recently listed name-only for this reader.
    probes: Recent,
    /// Directories this reader listed last, for `Listing::walking`.
    listed: Recent,
    /// Listings left for which the reader counts as walking: a depth-first walk lists a
    /// directory whose parent it listed long before whenever it comes back up.
    walk_left: u32,
    /// Parents of the directories this reader looked up last, with how many it looked up
    /// under each, for `entered`.
    parents: [(u64, u8); PROBES],
    next_parent: usize,
    /// The directory of the last file this reader opened (0: none yet), for `reads_files`.
    read_dir: u64,
    /// Listings and directory lookups left for which it counts as reading what it walks.
    read_left: u32,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            full_left: 1,
            probes: Recent::default(),
            listed: Recent::default(),
            walk_left: 0,
            parents: [(0, 0); PROBES],
            next_parent: 0,
            read_dir: 0,
            read_left: 0,
        }
    }

    /// Counts one more listing or directory lookup of a walk; `confirmed`: this one shows
    /// the reader walking. Whether it counts as walking now.
    fn walks(&mut self, confirmed: bool) -> bool {
        self.walk_left = if confirmed {
            WALK_RUN
        } else {
            self.walk_left.saturating_sub(1)
        };
        self.read_left = self.read_left.saturating_sub(1);
        self.walk_left > 0
    }

    fn reads_files(&self) -> bool {
        self.read_left > 0
    }
}

pub struct PlusPolicy {
    readers: Mutex<LruCache<u32, Reader>>,
    /// Directories some reader was given name-only, by `slot(dir)`: a LOOKUP under any
    /// other directory (nearly all of them) needs no lock.
    recent: [AtomicU64; SLOTS],
}

fn slot(dir: u64) -> usize {
    (dir.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SLOTS
}

impl Default for PlusPolicy {
    fn default() -> Self {
        PlusPolicy {
            readers: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(READERS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            recent: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PlusPolicy {
    /// How to answer a READDIRPLUS of `dir` (a subdirectory of `parent`) from thread
    /// `pid`. `first`: the read starts at offset 0; the rest of a large directory is
    /// answered as its start was, without counting as another listing.
    pub fn listing(&self, pid: u32, dir: u64, parent: u64, first: bool) -> Listing {
        let mut readers = self.readers.lock();
        let r = readers.get_or_insert_mut(pid, Reader::new);
        let descends = parent != 0 && r.listed.contains(parent);
        if !first {
            let entries = if r.probes.contains(dir) {
                Entries::NamesOnly
            } else {
                Entries::Full
            };
            let walk = Walk {
                walking: descends || r.walk_left > 0,
                reads_files: r.reads_files(),
            };
            return Listing { entries, walk };
        }
        let walk = Walk {
            walking: r.walks(descends),
            reads_files: r.reads_files(),
        };
        r.listed.remember(dir);
        if r.full_left > 0 {
            r.full_left -= 1;
            return Listing {
                entries: Entries::Full,
                walk,
            };
        }
        r.probes.remember(dir);
        self.recent[slot(dir)].store(dir, Ordering::Relaxed);
        Listing {
            entries: Entries::NamesOnly,
            walk,
        }
    }

    /// Thread `pid` looked up a directory under `parent`: whether it walks the tree by
    /// name, as a stat walk by path does. Resolving one path looks up one directory per
    /// level; a walk comes back for the siblings: a reader counts as walking once it looked
    /// up two directories under one parent, and for [`WALK_RUN`] directory lookups after.
    pub fn entered(&self, pid: u32, parent: u64) -> Walk {
        let mut readers = self.readers.lock();
        let r = readers.get_or_insert_mut(pid, Reader::new);
        let siblings = match r.parents.iter_mut().find(|(p, _)| *p == parent) {
            Some((_, n)) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                r.parents[r.next_parent] = (parent, 1);
                r.next_parent = (r.next_parent + 1) % PROBES;
                1
            }
        };
        Walk {
            walking: r.walks(siblings >= 2),
            reads_files: r.reads_files(),
        }
    }

    /// Thread `pid` opened a file of the image in `dir` to read it. One that has opened
    /// files in two directories reads the tree it walks (`grep -r`, `tar c`, a copy), for
    /// the next [`READ_RUN`] listings or directory lookups after each further directory it
    /// reads in; a program reading a file or two in one place does not.
    pub fn opened(&self, pid: u32, dir: u64) {
        let mut readers = self.readers.lock();
        let r = readers.get_or_insert_mut(pid, Reader::new);
        if r.read_dir == dir {
            return;
        }
        // A directory other than the last file's, which there was (node ids start at 1).
        if r.read_dir != 0 {
            r.read_left = READ_RUN;
        }
        r.read_dir = dir;
    }

    /// Thread `pid` looked up a name that is not a directory under `parent`.
    pub fn looked_up(&self, pid: u32, parent: u64) {
        if self.recent[slot(parent)].load(Ordering::Relaxed) != parent {
            return;
        }
        let mut readers = self.readers.lock();
        if let Some(r) = readers.get_mut(&pid)
            && r.probes.contains(parent)
        {
            r.full_left = FULL_RUN;
            r.probes = Recent::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(p: &PlusPolicy, pid: u32, dir: u64) -> Entries {
        p.listing(pid, dir, 1, true).entries
    }

    /// A policy whose readers 7 and 8 are past their first listing.
    fn policy() -> PlusPolicy {
        let p = PlusPolicy::default();
        for pid in [7, 8] {
            assert_eq!(
                entries(&p, pid, 50),
                Entries::Full,
                "a reader's first listing"
            );
        }
        p
    }

    #[test]
    fn a_reader_that_stats_what_it_lists_gets_full_listings_until_the_next_probe() {
        let p = policy();
        assert_eq!(entries(&p, 7, 100), Entries::NamesOnly);
        assert_eq!(entries(&p, 7, 101), Entries::NamesOnly, "no lookup seen");
        p.looked_up(7, 100);
        for d in 0..FULL_RUN as u64 {
            assert_eq!(entries(&p, 7, 200 + d), Entries::Full);
        }
        assert_eq!(entries(&p, 7, 999), Entries::NamesOnly, "probed again");
        assert_eq!(
            entries(&p, 7, 1000),
            Entries::NamesOnly,
            "and it did not stat"
        );
    }

    #[test]
    fn lookups_count_only_for_the_reader_and_directories_they_were_listed_for() {
        let p = policy();
        assert_eq!(entries(&p, 7, 100), Entries::NamesOnly);
        p.looked_up(8, 100); // another thread
        p.looked_up(7, 555); // a directory 7 was not given name-only
        assert_eq!(entries(&p, 7, 101), Entries::NamesOnly);
        assert_eq!(entries(&p, 8, 100), Entries::NamesOnly);
        // A walker that lists a few directories before it stats their entries.
        for d in 102..102 + PROBES as u64 - 1 {
            assert_eq!(entries(&p, 7, d), Entries::NamesOnly);
        }
        p.looked_up(7, 101);
        assert_eq!(entries(&p, 7, 300), Entries::Full);
    }

    #[test]
    fn the_rest_of_a_large_directory_is_answered_as_its_start_and_is_not_a_new_listing() {
        let p = policy();
        assert_eq!(entries(&p, 7, 100), Entries::NamesOnly);
        p.looked_up(7, 100);
        assert_eq!(entries(&p, 7, 101), Entries::Full);
        for _ in 0..3 * FULL_RUN {
            assert_eq!(p.listing(7, 101, 1, false).entries, Entries::Full);
        }
        // Only one of the run was used up.
        for d in 0..FULL_RUN as u64 - 1 {
            assert_eq!(entries(&p, 7, 200 + d), Entries::Full);
        }
        assert_eq!(entries(&p, 7, 999), Entries::NamesOnly);
        assert_eq!(p.listing(7, 999, 1, false).entries, Entries::NamesOnly);
    }

    #[test]
    fn a_reader_that_lists_a_directory_from_its_last_listings_is_walking_for_a_while() {
        let p = PlusPolicy::default();
        assert!(!p.listing(7, 100, 1, true).walk.walking, "first listing");
        assert!(
            p.listing(7, 101, 100, true).walk.walking,
            "a subdirectory of 100"
        );
        assert!(p.listing(7, 102, 101, false).walk.walking);
        assert!(!p.listing(8, 103, 101, true).walk.walking, "another reader");
        // Back up to a directory whose parent was listed long ago: still the same walk.
        for d in 0..WALK_RUN as u64 - 1 {
            assert!(p.listing(7, 1000 + d, 555, true).walk.walking);
        }
        assert!(
            !p.listing(7, 104, 555, true).walk.walking,
            "no descent for a whole run"
        );
    }

    #[test]
    fn resolving_paths_is_not_a_walk_but_looking_up_sibling_directories_is() {
        let p = PlusPolicy::default();
        // usr, usr/lib, usr/lib/x: one directory per level.
        let walks = |pid, parent| p.entered(pid, parent).walking;
        assert!(!walks(7, 1));
        assert!(!walks(7, 10));
        assert!(!walks(7, 11));
        // Another process resolving the same kind of path.
        assert!(!walks(8, 1));
        // A walk: a second directory under usr/lib, then deeper and back up for a while.
        assert!(walks(7, 11));
        for d in 0..WALK_RUN as u64 - 1 {
            assert!(walks(7, 1000 + d), "still walking");
        }
        assert!(!walks(7, 5000), "no sibling for a whole run");
    }

    #[test]
    fn a_reader_that_opens_files_in_one_directory_after_another_reads_what_it_walks() {
        let p = PlusPolicy::default();
        let reads = |pid, parent| p.entered(pid, parent).reads_files;
        // Files opened in one directory only (a program reading its configuration).
        p.opened(7, 10);
        p.opened(7, 10);
        assert!(!reads(7, 1));
        // Then in a second one: it reads the tree it walks.
        p.opened(7, 11);
        assert!(reads(7, 1), "entered");
        assert!(p.listing(7, 12, 1, true).walk.reads_files, "listed");
        assert!(!reads(8, 1), "another reader");
        // Until it walks READ_RUN directories without opening a file in a new one; files
        // opened again in the same directory do not count.
        for d in 0..READ_RUN as u64 - 3 {
            p.opened(7, 11);
            assert!(reads(7, 100 + d));
        }
        assert!(!reads(7, 999), "no file for a whole run");
        // One more file elsewhere: reading again.
        p.opened(7, 12);
        assert!(reads(7, 1));
    }
}

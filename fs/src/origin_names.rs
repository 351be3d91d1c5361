//! What the origin (image) directories below writable areas hold, so a name they lack is
//! not asked for again.
//!
//! Every name looked up, created, unlinked or renamed in a writable directory that has an
//! origin is probed in the store and then in the image. On a node the image is NFS: each
//! probe of a name the image lacks (every new file in `/tmp`, `/var/tmp`, `/var/log`) is a
//! LOOKUP RPC to the management node, and on local disk still a failed `openat` (2.5 µs,
//! a dentry allocated and thrown away). After the first miss in such a directory its
//! origin's names are read once (one `getdents`), and later misses are answered from them.
//!
//! The names are kept as sorted 64-bit hashes: absence of a hash proves absence of the
//! name, and a collision only costs the probe it would have cost anyway. A set answers
//! only while the origin directory's modification and change times are those it was read
//! under (one `fstat`, 0.4 µs, where the failed `openat` was 2.5), so a name the image
//! gains is found at once on local disk, before any generation bump. On NFS the `fstat` is
//! served from the client's attribute cache: a name added on the server shows once that
//! expires (`acdirmin`-`acdirmax`, 30-60 s by default) or at the next generation bump
//! (`statelite imgupdate`), whichever is first; xCAT itself copies a writable directory's
//! image content once, at boot. A listing read while the directory
//! was modified within the last [`RACY`] is not kept: a second change within the same
//! clock tick would leave the times as they were. Sets are also tied to one image epoch
//! ([`crate::overlay`]'s xattr epoch: image update, rules reload) and one directory object
//! (an inode, not a node id, which could be reused).

use std::collections::hash_map::DefaultHasher;
use std::ffi::CStr;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::inode::Inode;
use crate::sys;

/// Directories remembered at once.
const DIRS: usize = 64;
/// Origin directories with more names than this are always probed: their set would cost
/// more memory (8 bytes a name) than the probes it saves.
const MAX_NAMES: usize = 16384;
/// A directory modified this recently may change again without its times changing
/// (timestamps move in clock ticks): its listing is not kept.
pub const RACY: Duration = Duration::from_secs(2);

/// What a directory's listing is valid for: its modification and change times (s, ns).
type Stamp = [i64; 4];

fn stamp_of(dir: BorrowedFd<'_>) -> Option<Stamp> {
    let st = sys::fstat(dir).ok()?;
    Some([st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec])
}

/// Whether a directory with `stamp` was modified within [`RACY`] of now (or in the
/// future: another host's clock). The modification time alone decides: every change to
/// the names sets it, and one set back (`touch -d`) is left behind by the next change.
fn racy(stamp: &Stamp) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    stamp[0] < 0 || (stamp[0] as u64).saturating_add(RACY.as_secs()) >= now.as_secs()
}

struct Known {
    dir: Weak<Inode>,
    epoch: u64,
    stamp: Stamp,
    /// Sorted name hashes; `None`: too many names, probe every time.
    hashes: Option<Arc<[u64]>>,
}

pub struct OriginNames {
    dirs: Mutex<lru::LruCache<u64, Known>>,
    max_names: usize,
}

impl Default for OriginNames {
    fn default() -> Self {
        OriginNames::with_limits(DIRS, MAX_NAMES)
    }
}

impl std::fmt::Debug for OriginNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginNames")
            .field("dirs", &self.dirs.lock().len())
            .finish()
    }
}

fn hash_name(name: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

impl OriginNames {
    /// At most `dirs` directories of at most `max_names` names each.
    pub fn with_limits(dirs: usize, max_names: usize) -> OriginNames {
        OriginNames {
            dirs: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(dirs).unwrap_or(NonZeroUsize::MIN),
            )),
            max_names,
        }
    }

    /// `Some(true)`: `dir`'s origin directory `origin` is known to lack `name`;
    /// `Some(false)`: it may hold it (probe); `None`: nothing known for `dir` in `epoch`,
    /// or the directory changed since its names were read.
    pub fn lacks(
        &self,
        dir: &Arc<Inode>,
        epoch: u64,
        origin: BorrowedFd<'_>,
        name: &CStr,
    ) -> Option<bool> {
        let (stamp, hashes) = {
            let mut dirs = self.dirs.lock();
            let k = dirs.get(&dir.nodeid)?;
            if k.epoch != epoch || !std::ptr::eq(k.dir.as_ptr(), Arc::as_ptr(dir)) {
                return None;
            }
            (k.stamp, k.hashes.clone())
        };
        let Some(hashes) = hashes else {
            return Some(false);
        };
        if hashes.binary_search(&hash_name(name.to_bytes())).is_ok() {
            return Some(false);
        }
        (stamp_of(origin)? == stamp).then_some(true)
    }

    /// Reads the names of `dir`'s origin directory `origin`, as they are in `epoch` (read
    /// before the listing: an image update while it is read leaves a set of the old epoch,
    /// which is never used).
    pub fn learn(&self, dir: &Arc<Inode>, epoch: u64, origin: BorrowedFd<'_>) {
        // The times first: a change during the listing then shows as a different stamp.
        let Some(stamp) = stamp_of(origin) else {
            return;
        };
        if racy(&stamp) {
            return;
        }
        let hashes = match sys::read_dir(origin) {
            Ok(list) if list.len() <= self.max_names => {
                let mut h: Vec<u64> = list.iter().map(|(n, _, _)| hash_name(n)).collect();
                h.sort_unstable();
                h.dedup();
                Some(Arc::from(h))
            }
            Ok(_) => None,
            // Unreadable now: learn nothing, the next miss tries again.
            Err(_) => return,
        };
        self.dirs.lock().put(
            dir.nodeid,
            Known {
                dir: Arc::downgrade(dir),
                epoch,
                stamp,
                hashes,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::{Area, Backing, InodeTable, NewInode};
    use std::ffi::CString;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn dir_inode(t: &InodeTable, st_ino: u64) -> Arc<Inode> {
        t.insert_root(NewInode {
            st_ino,
            kind: libc::S_IFDIR,
            area: Area::Image,
            trie: None,
            epoch: 0,
            origin: None,
            entry_rel: None,
            parent: None,
            name: CString::default(),
            backing: Backing::default(),
            identity: None,
        })
    }

    /// Sets `dir`'s modification time an hour back (as an image's directories are).
    fn age(dir: &Path) {
        let p = CString::new(dir.as_os_str().as_bytes()).expect("path");
        let old = libc::timespec {
            tv_sec: (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                - 3600) as libc::time_t,
            tv_nsec: 0,
        };
        let times = [old, old];
        // SAFETY: a NUL-terminated path and two timespecs.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0, "utimensat");
    }

    fn origin_dir(names: &[&str], aged: bool) -> (tempfile::TempDir, OwnedFd) {
        let d = tempfile::tempdir().expect("tempdir");
        for n in names {
            std::fs::write(d.path().join(n), "").expect("write");
        }
        if aged {
            age(d.path());
        }
        let fd = std::fs::File::open(d.path()).expect("open").into();
        (d, fd)
    }

    fn c(s: &str) -> CString {
        CString::new(s).expect("name")
    }

    #[test]
    fn hashes_are_stable_and_distinguish_names() {
        assert_eq!(hash_name(b"resolv.conf"), hash_name(b"resolv.conf"));
        assert_ne!(hash_name(b"resolv.conf"), hash_name(b"resolv.conf~"));
    }

    #[test]
    fn a_learned_directory_answers_for_its_epoch_and_its_own_inode_only() {
        let t = InodeTable::new();
        let dir = dir_inode(&t, 1);
        let (_d, fd) = origin_dir(&["hosts", "passwd"], true);
        let o = fd.as_fd();
        let names = OriginNames::default();
        assert_eq!(
            names.lacks(&dir, 5, o, &c("new")),
            None,
            "nothing known yet"
        );
        names.learn(&dir, 5, o);
        assert_eq!(names.lacks(&dir, 5, o, &c("new")), Some(true));
        assert_eq!(names.lacks(&dir, 5, o, &c("hosts")), Some(false));
        assert_eq!(names.lacks(&dir, 5, o, &c("passwd")), Some(false));
        assert_eq!(
            names.lacks(&dir, 6, o, &c("new")),
            None,
            "another image epoch"
        );
        // Another directory object under the same node id (the old one dropped and the
        // number reused) learns afresh.
        let other = dir_inode(&InodeTable::new(), 1);
        assert_eq!(other.nodeid, dir.nodeid);
        assert_eq!(names.lacks(&other, 5, o, &c("new")), None);
    }

    #[test]
    fn a_name_the_directory_gains_is_never_reported_absent() {
        let t = InodeTable::new();
        let dir = dir_inode(&t, 1);
        let (d, fd) = origin_dir(&["hosts"], true);
        let o = fd.as_fd();
        let names = OriginNames::default();
        names.learn(&dir, 1, o);
        assert_eq!(names.lacks(&dir, 1, o, &c("gained")), Some(true));
        std::fs::write(d.path().join("gained"), "").expect("write");
        assert_eq!(names.lacks(&dir, 1, o, &c("gained")), None, "changed: ask");
        // Relearned now, the directory was modified a moment ago: not kept, since a
        // second change in the same clock tick would leave its times as they are.
        names.learn(&dir, 1, o);
        assert_eq!(names.lacks(&dir, 1, o, &c("other")), None);
        age(d.path());
        names.learn(&dir, 1, o);
        assert_eq!(names.lacks(&dir, 1, o, &c("gained")), Some(false));
        assert_eq!(names.lacks(&dir, 1, o, &c("other")), Some(true));
    }

    #[test]
    fn a_directory_over_the_limit_or_unreadable_is_always_probed() {
        let t = InodeTable::new();
        let dir = dir_inode(&t, 1);
        let (_d, fd) = origin_dir(&["a", "b", "c", "d"], true);
        let names = OriginNames::with_limits(4, 3);
        names.learn(&dir, 1, fd.as_fd());
        assert_eq!(
            names.lacks(&dir, 1, fd.as_fd(), &c("zzz")),
            Some(false),
            "too many names"
        );
        // A descriptor that cannot be listed teaches nothing: the next miss tries again.
        let (d2, _fd2) = origin_dir(&["x"], true);
        let not_a_dir: OwnedFd = std::fs::File::open(d2.path().join("x"))
            .expect("open")
            .into();
        let other = dir_inode(&InodeTable::new(), 2);
        names.learn(&other, 1, not_a_dir.as_fd());
        assert_eq!(names.lacks(&other, 1, not_a_dir.as_fd(), &c("y")), None);
    }
}

//! Copy-up: putting an object from its origin (image or litetree) into a writable store,
//! with its mode, owner, times and xattrs, atomically (a temporary name, then rename), so
//! a crash mid-copy never leaves a half file under the real name in a persistent store.
//!
//! Also here: building a `con` file (the image's file followed by every litetree hit) and
//! whiteouts (a 0:0 character device in the store hides the origin's entry).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, Stat};

/// Temporary names in stores start with this; listings never show them.
pub const TMP_PREFIX: &[u8] = b".statelite-tmp.";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_name() -> CString {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    CString::new(format!(".statelite-tmp.{}.{n}", std::process::id())).unwrap_or_default()
}

/// True for a store entry that is ours, not the node's.
pub fn is_internal_name(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX)
}

/// Creates a whiteout for `name` in `dir`, replacing whatever the store had there.
pub fn make_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match sys::mknod_at(dir, name, libc::S_IFCHR, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let tmp = tmp_name();
            sys::mknod_at(dir, &tmp, libc::S_IFCHR, 0)?;
            sys::rename_at(dir, &tmp, dir, name, 0).inspect_err(|_| {
                let _ = sys::unlink_at(dir, &tmp, 0);
            })
        }
        other => other,
    }
}

fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) {
    // Best effort: a store without xattr support (some NFS) still gets the data.
    let Ok(list) = sys::list_xattrs(src) else {
        return;
    };
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        if let Ok(value) = sys::get_xattr(src, &cname) {
            let _ = sys::set_xattr(dst, &cname, &value, 0);
        }
    }
}

fn times_of(st: &Stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// Applies owner, mode, xattrs and times of `st`/`src` to `dst` (an `O_PATH` descriptor).
fn copy_attrs(src: BorrowedFd<'_>, st: &Stat, dst: BorrowedFd<'_>) -> io::Result<()> {
    sys::chown_fd(dst, st.st_uid, st.st_gid)?;
    if sys::file_type(st.st_mode) != libc::S_IFLNK {
        // chmod after chown: chown clears setuid/setgid bits.
        sys::chmod_fd(dst, st.st_mode & 0o7777)?;
        copy_xattrs(src, dst);
    }
    sys::utimens_fd(dst, &times_of(st))
}

/// Copies the object `src` (an `O_PATH` descriptor, lstat'ed as `st`) to `dir/name` in a
/// store and returns an `O_PATH` descriptor of the copy. Directories are created empty
/// (their entries stay in the origin and are merged at lookup).
pub fn copy_object(
    src: BorrowedFd<'_>,
    st: &Stat,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<OwnedFd> {
    let tmp = tmp_name();
    let result = (|| {
        match sys::file_type(st.st_mode) {
            libc::S_IFREG => {
                let input = sys::reopen(src, libc::O_RDONLY)?;
                let out = sys::create_at(dir, &tmp, libc::O_WRONLY | libc::O_EXCL, 0o600)?;
                copy_data(input.as_fd(), out.as_fd())?;
                out_sync_if(out.as_fd())?;
            }
            libc::S_IFDIR => sys::mkdir_at(dir, &tmp, 0o700)?,
            libc::S_IFLNK => {
                let target = sys::readlink_fd(src)?;
                let target =
                    CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                sys::symlink_at(&target, dir, &tmp)?;
            }
            _ => sys::mknod_at(dir, &tmp, st.st_mode & libc::S_IFMT | 0o600, st.st_rdev)?,
        }
        let fd = sys::open_at(dir, &tmp, libc::O_PATH)?;
        if sys::is_whiteout(st) {
            // A real 0:0 device from the origin must not turn into a whiteout.
            sys::set_xattr(fd.as_fd(), sys::DEVICE_MARK, b"", 0)?;
        }
        copy_attrs(src, st, fd.as_fd())?;
        sys::rename_at(dir, &tmp, dir, name, 0)?;
        Ok(fd)
    })();
    if result.is_err() {
        let flags = if sys::file_type(st.st_mode) == libc::S_IFDIR {
            libc::AT_REMOVEDIR
        } else {
            0
        };
        let _ = sys::unlink_at(dir, &tmp, flags);
    }
    result
}

/// Data reaches the store's disk before the copy is renamed into place: for a persistent
/// store this is what makes copy-up crash safe; on tmpfs fsync costs nothing.
fn out_sync_if(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::fsync(fd, true)
}

/// Copies all data from `input` to `out` (copy_file_range where possible).
pub fn copy_data(input: BorrowedFd<'_>, out: BorrowedFd<'_>) -> io::Result<u64> {
    let mut from = std::fs::File::from(sys::dup(input)?);
    let mut to = std::fs::File::from(sys::dup(out)?);
    io::copy(&mut from, &mut to)
}

/// Builds a `con` file in `dir/name`: every source's content in order. The first source
/// gives mode, owner and times. Returns an `O_PATH` descriptor of the result.
pub fn concat_into(sources: &[OwnedFd], dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let tmp = tmp_name();
    let result = (|| {
        let out = sys::create_at(dir, &tmp, libc::O_WRONLY | libc::O_EXCL, 0o644)?;
        for src in sources {
            let input = sys::reopen(src.as_fd(), libc::O_RDONLY)?;
            copy_data(input.as_fd(), out.as_fd())?;
        }
        let fd = sys::open_at(dir, &tmp, libc::O_PATH)?;
        if let Some(first) = sources.first() {
            let st = sys::fstat(first.as_fd())?;
            sys::chown_fd(fd.as_fd(), st.st_uid, st.st_gid)?;
            sys::chmod_fd(fd.as_fd(), st.st_mode & 0o7777)?;
        }
        sys::rename_at(dir, &tmp, dir, name, 0)?;
        Ok(fd)
    })();
    if result.is_err() {
        let _ = sys::unlink_at(dir, &tmp, 0);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn copies_file_with_attributes_and_whiteouts_replace() {
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("src");
        std::fs::write(&src_path, b"hello").unwrap();
        std::fs::set_permissions(&src_path, std::fs::Permissions::from_mode(0o4751)).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let src = sys::open_dir_path(d.path()).unwrap();
        let srcf = sys::open_at(src.as_fd(), c"src", libc::O_PATH).unwrap();
        let st = sys::fstat(srcf.as_fd()).unwrap();
        let outd = sys::open_dir_path(&out).unwrap();
        copy_object(srcf.as_fd(), &st, outd.as_fd(), c"copy").unwrap();
        let m = std::fs::metadata(out.join("copy")).unwrap();
        assert_eq!(std::fs::read(out.join("copy")).unwrap(), b"hello");
        assert_eq!(m.mode() & 0o7777, 0o4751);
        assert_eq!(m.mtime(), st.st_mtime);
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            1,
            "no temporary left"
        );
        make_whiteout(outd.as_fd(), c"copy").unwrap();
        let st = sys::stat_at(outd.as_fd(), c"copy").unwrap();
        assert!(sys::is_whiteout(&st));
        make_whiteout(outd.as_fd(), c"copy").unwrap();
    }

    #[test]
    fn concatenates_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"one\n").unwrap();
        std::fs::write(d.path().join("b"), b"two\n").unwrap();
        let dir = sys::open_dir_path(d.path()).unwrap();
        let a = sys::open_at(dir.as_fd(), c"a", libc::O_PATH).unwrap();
        let b = sys::open_at(dir.as_fd(), c"b", libc::O_PATH).unwrap();
        concat_into(&[a, b], dir.as_fd(), c"c").unwrap();
        assert_eq!(std::fs::read(d.path().join("c")).unwrap(), b"one\ntwo\n");
    }
}

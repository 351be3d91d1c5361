//! Thin, safe wrappers over the Linux calls the filesystem is built on: `openat2` with
//! `RESOLVE_BENEATH`, `fstatat` on `O_PATH` descriptors, per-thread fsuid/fsgid, xattrs.
//!
//! Every layer access goes through a directory descriptor and a single name (or a path
//! resolved strictly beneath a layer root), never through an absolute path string, so a
//! symlink in an image or litetree can never make the daemon touch anything outside it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

pub type Stat = libc::stat;

pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)` for one path component.
pub fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a file with `openat(O_CREAT)`.
pub fn create_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Opens a relative multi-component path strictly beneath `root`, following no symlink at
/// all (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`).
/// An empty `rel` reopens `root` itself.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = if rel.is_empty() { "." } else { rel };
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // A symlink on the way is simply "not here" for layer resolution.
        if e.raw_os_error() == Some(libc::ELOOP) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        return Err(e);
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a directory given by an absolute or relative path as an `O_PATH` descriptor
/// (layer roots, given by the admin on the command line).
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A private, read-only, `noatime` copy of the mount tree at `dir` (a descriptor, so that
/// the object copied is the one already opened and checked, with no second path walk),
/// detached from every namespace (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`, then
/// `mount_setattr` on the whole copy), as an `O_PATH` descriptor of its root. For the
/// read-only layers: nothing done through it can change them, not even an access time,
/// and reads skip the access-time bookkeeping the original mount may do (about 80 ns of a
/// 4 KiB cached read on this VM kind, passthrough reads included: their backing files are
/// opened on this copy). The copy sees the same files as the original: an admin's image
/// update shows through.
pub fn open_readonly_tree(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as u32
        | libc::AT_EMPTY_PATH as u32;
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOATIME,
        // The access-time mode is one field: clear it before setting `noatime`.
        attr_clr: libc::MOUNT_ATTR__ATIME,
        propagation: 0,
        userns_fd: 0,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `statx(AT_STATX_FORCE_SYNC)` of `path` relative to `dirfd` (`libc::AT_FDCWD` or a
/// descriptor) with `flags` added: attributes fetched fresh, from the server on network
/// filesystems; on a FUSE mount a request, so it returns only once the daemon answers.
pub fn statx_sync(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<libc::statx> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the caller's descriptor (or AT_FDCWD), a NUL-terminated path, and a buffer of
    // the right type, initialised by the kernel on success.
    check(unsafe {
        libc::statx(
            dirfd,
            path.as_ptr(),
            flags | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS,
            stx.as_mut_ptr(),
        )
    })?;
    Ok(unsafe { stx.assume_init() })
}

/// `statx(AT_STATX_DONT_SYNC)` of `path`: what the kernel has cached, asking no server. On
/// a FUSE mount no request is sent (the device and mount-root flag come from the kernel's
/// own superblock and mount), so a daemon may ask it of its own mount before it serves.
pub fn statx_cached(path: &CStr) -> io::Result<libc::statx> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: AT_FDCWD, a NUL-terminated path, and a buffer of the right type, initialised
    // by the kernel on success.
    check(unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_STATX_DONT_SYNC | libc::AT_SYMLINK_NOFOLLOW,
            0,
            stx.as_mut_ptr(),
        )
    })?;
    Ok(unsafe { stx.assume_init() })
}

/// `fstatat(fd, "", AT_EMPTY_PATH)`: works on `O_PATH` descriptors, symlinks included.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::zeroed();
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { st.assume_init() })
}

/// `posix_fadvise(fd, 0, len, POSIX_FADV_WILLNEED)`: starts reading the first `len` bytes
/// into the page cache and returns without waiting for them.
pub fn will_need(fd: BorrowedFd<'_>, len: i64) -> io::Result<()> {
    // SAFETY: a plain syscall on a descriptor we hold; posix_fadvise returns the error
    // number instead of setting errno.
    match unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, len, libc::POSIX_FADV_WILLNEED) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::zeroed();
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { st.assume_init() })
}

pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `readlink` of an `O_PATH|O_NOFOLLOW` descriptor of a symlink.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    readlink_at(fd, c"")
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    rdev: libc::dev_t,
) -> io::Result<()> {
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn rename_at(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Hard link of an `O_PATH` descriptor (`linkat(fd, "", ..., AT_EMPTY_PATH)`).
pub fn link_fd(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    check(unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// The `/proc/self/fd/N` path of a descriptor: how `O_PATH` descriptors are reopened and
/// chmod/utimens/xattr'd (the descriptor is ours; no path from a layer is involved).
pub fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // A formatted integer never holds a NUL byte.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reopens an `O_PATH` descriptor with real access flags.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = proc_path(fd);
    let fd = check(unsafe {
        libc::open(
            p.as_ptr(),
            (flags | libc::O_CLOEXEC) & !libc::O_NOFOLLOW & !libc::O_CREAT,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set once the kernel turns out to lack `fchmodat2` (before Linux 6.6).
static NO_FCHMODAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Changes the mode of the object an `O_PATH` descriptor names. `fchmodat2(fd, "",
/// AT_EMPTY_PATH)` does it without the path walk through `/proc/self/fd` (most of a
/// chmod's cost: `sed -i` changes the mode of every file it writes); kernels without it,
/// and any refusal (whose error the proc path then reports as before), take that walk.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    if !NO_FCHMODAT2.load(Relaxed) {
        // SAFETY: plain syscall on a descriptor we hold and a static empty string.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fchmodat2,
                fd.as_raw_fd(),
                c"".as_ptr(),
                mode,
                libc::AT_EMPTY_PATH,
            )
        };
        if r == 0 {
            return Ok(());
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            NO_FCHMODAT2.store(true, Relaxed);
        }
    }
    let p = proc_path(fd);
    check(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// Clears set-user-ID, and set-group-ID where group execute is set (without group execute
/// the bit means mandatory locking, which a write keeps), as the kernel does when an
/// unprivileged caller modifies or truncates a file.
pub fn kill_suidgid(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mode = fstat(fd)?.st_mode & 0o7777;
    let mut killed = mode & !libc::S_ISUID;
    if killed & libc::S_IXGRP != 0 {
        killed &= !libc::S_ISGID;
    }
    if killed != mode {
        chmod_fd(fd, killed)?;
    }
    Ok(())
}

pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Set once the kernel turns out to refuse `utimensat(fd, "", AT_EMPTY_PATH)`.
static NO_UTIMENS_EMPTY_PATH: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sets times on an `O_PATH` descriptor, symlinks included (the object the descriptor
/// names is changed, never a link's target). `utimensat(fd, "", AT_EMPTY_PATH)` does it
/// without the walk through `/proc/self/fd/N` (~3 µs of a ~4 µs SETATTR of times here:
/// `touch`, `tar x` and every copy-up set times). A kernel refusing that form (EINVAL) is
/// remembered once the proc path has done the same change; the proc path does not follow
/// the link either.
pub fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let by_proc_path = || {
        let p = proc_path(fd);
        check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) }).map(drop)
    };
    if NO_UTIMENS_EMPTY_PATH.load(Relaxed) {
        return by_proc_path();
    }
    // SAFETY: a descriptor we hold, a static empty string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    // EINVAL is also the answer to bad times: only a success the other way says the
    // kernel lacks the form.
    by_proc_path()?;
    NO_UTIMENS_EMPTY_PATH.store(true, Relaxed);
    Ok(())
}

pub fn list_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let p = proc_path(fd);
    loop {
        let n = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        if n == 0 {
            return Ok(buf);
        }
        let m = unsafe {
            libc::listxattr(p.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len())
        };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

pub fn get_xattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let p = proc_path(fd);
    loop {
        let n = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        if n == 0 {
            return Ok(buf);
        }
        let m = unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

pub fn set_xattr(
    fd: BorrowedFd<'_>,
    name: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let p = proc_path(fd);
    check(unsafe {
        libc::setxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn remove_xattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd);
    check(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
}

/// The entries of directory `dir` (any descriptor of it, `O_PATH` too) as (name, d_type,
/// d_ino), without `.` and `..`.
///
/// By `getdents64` on a descriptor of its own: `fdopendir`/`readdir` cost four more system
/// calls per listing (two `fcntl`s, an `fstat`, and an `lseek` when the stream is rewound;
/// ~5 µs of the ~60 µs a cold directory costs: benches/RESULTS.md, run 11).
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, u8, u64)>> {
    let fd = open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        match n {
            0 => return Ok(out),
            n if n < 0 => return Err(io::Error::last_os_error()),
            n => parse_dirents(&buf[..n as usize], &mut out)?,
        }
    }
}

/// Appends the `struct linux_dirent64` records in `buf` to `out`.
fn parse_dirents(buf: &[u8], out: &mut Vec<(Vec<u8>, u8, u64)>) -> io::Result<()> {
    // d_ino u64, d_off i64, d_reclen u16, d_type u8, then the NUL-terminated name.
    const NAME: usize = 19;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed getdents64 record");
    let mut at = 0;
    while at < buf.len() {
        let rec = buf.get(at..at + NAME).ok_or_else(bad)?;
        let ino = u64::from_ne_bytes(rec[0..8].try_into().map_err(|_| bad())?);
        let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
        let dtype = rec[18];
        if reclen <= NAME {
            return Err(bad()); // also: a zero length would never advance
        }
        let name = buf.get(at + NAME..at + reclen).ok_or_else(bad)?;
        let name = &name[..name.iter().position(|&c| c == 0).ok_or_else(bad)?];
        at += reclen;
        if name != b"." && name != b".." {
            out.push((name.to_vec(), dtype, ino));
        }
    }
    Ok(())
}

/// Runs `f` with this thread's filesystem uid/gid set to the caller's, so that files the
/// daemon creates get the right owner and setgid-directory inheritance from the kernel.
/// (fsuid is per thread on Linux; the request threads never share one mid-request.)
pub fn as_caller<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    if uid == 0 && gid == 0 {
        return f(); // already the daemon's own identity: no switch needed
    }
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            unsafe {
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_setfsuid, 0);
            }
        }
    }
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    let _restore = Restore;
    f()
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
    let n = unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Duplicates a descriptor (for handing one to a consumer that takes ownership).
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// The file-type bits of a mode.
pub fn file_type(mode: libc::mode_t) -> libc::mode_t {
    mode & libc::S_IFMT
}

/// True for an overlay whiteout: a character device with device number 0:0.
pub fn is_whiteout(st: &Stat) -> bool {
    file_type(st.st_mode) == libc::S_IFCHR && st.st_rdev == 0
}

/// Marks a client-made (or image) 0:0 character device in a store: it is a real device,
/// not a whiteout.
pub const DEVICE_MARK: &CStr = c"trusted.statelite.device";

/// A whiteout, given an `O_PATH` descriptor of the entry: a 0:0 chardev without the mark.
pub fn is_whiteout_fd(fd: BorrowedFd<'_>, st: &Stat) -> bool {
    is_whiteout(st) && get_xattr(fd, DEVICE_MARK).is_err()
}

/// True when `dir/name` exists and is a whiteout.
pub fn whiteout_at(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    matches!(stat_at(dir, name), Ok(st) if is_whiteout_at(dir, name, &st))
}

/// A whiteout at `dir/name` (lstat'ed as `st`).
pub fn is_whiteout_at(dir: BorrowedFd<'_>, name: &CStr, st: &Stat) -> bool {
    if !is_whiteout(st) {
        return false;
    }
    match open_at(dir, name, libc::O_PATH) {
        Ok(fd) => is_whiteout_fd(fd.as_fd(), st),
        Err(_) => true,
    }
}

/// Returns the heap's free pages to the kernel (glibc's `malloc_trim`, which also releases
/// whole free pages inside the heap, not only at its top). A no-op with other C libraries.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only changes how the allocator's free memory is mapped.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The allocator settings of a long-lived daemon that starts fast: call first thing in
/// `main`, before any thread exists. A no-op with other C libraries.
///
/// One malloc arena for the whole daemon. glibc gives each thread that allocates its own
/// arena and never hands an arena's freed memory back, so with several request threads the
/// resident size ratchets up to the sum of every arena's high point: walking 1,000,000 files
/// peaked at 81 MiB with 4 threads and 64 MiB with one arena, with the same live data
/// (`tests/load/million.sh`). Small allocations still come from per-thread caches, so the
/// shared arena's lock is rarely taken.
pub fn tune_malloc_for_daemon() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; the caller has no other thread yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // Start-up (reading a 2,000-row litefile while the mount is made) spent ~40% of
        // its time in the kernel growing, trimming and re-protecting the heap, each change
        // a TLB shoot-down across the threads: grow the heap in 1 MiB steps, keep up to
        // 4 MiB of free heap, and give large buffers (fuser's 16 MiB request buffers) their
        // own mappings, which stay untouched, so not resident, until used.
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_dir_lists_what_std_lists_across_several_getdents_buffers() {
        use std::os::unix::fs::DirEntryExt;
        let d = tempfile::tempdir().expect("tempdir");
        // ~2,000 long names: well over one 32 KiB buffer.
        for i in 0..2000 {
            let name = format!("entry-with-a-rather-long-name-{i:05}");
            std::fs::write(d.path().join(name), b"").expect("write");
        }
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("sub", d.path().join("link")).expect("symlink");
        let dir = std::fs::File::open(d.path()).expect("open");
        let mut got = read_dir(dir.as_fd()).expect("read_dir");
        got.sort();
        let mut want: Vec<(Vec<u8>, u8, u64)> = std::fs::read_dir(d.path())
            .expect("std read_dir")
            .map(|e| {
                let e = e.expect("entry");
                let t = e.file_type().expect("type");
                let dtype = if t.is_dir() {
                    libc::DT_DIR
                } else if t.is_symlink() {
                    libc::DT_LNK
                } else {
                    libc::DT_REG
                };
                (e.file_name().as_bytes().to_vec(), dtype, e.ino())
            })
            .collect();
        want.sort();
        assert_eq!(got.len(), 2002);
        assert_eq!(got, want);
    }

    #[test]
    fn chmod_fd_changes_what_an_o_path_descriptor_names_by_either_way() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        let dir = std::fs::File::open(d.path()).expect("open dir");
        let fd = open_at(dir.as_fd(), c"f", libc::O_PATH).expect("O_PATH open");
        let mode = || std::fs::metadata(&f).expect("stat").permissions().mode() & 0o7777;
        chmod_fd(fd.as_fd(), 0o4751).expect("chmod");
        assert_eq!(mode(), 0o4751);
        // The proc-path way, as on kernels without fchmodat2.
        NO_FCHMODAT2.store(true, std::sync::atomic::Ordering::Relaxed);
        let r = chmod_fd(fd.as_fd(), 0o640);
        NO_FCHMODAT2.store(false, std::sync::atomic::Ordering::Relaxed);
        r.expect("chmod by proc path");
        assert_eq!(mode(), 0o640);
    }

    #[test]
    fn utimens_fd_sets_the_times_of_what_an_o_path_descriptor_names_by_either_way() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::Ordering::Relaxed;
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("f", d.path().join("l")).expect("symlink");
        let dir = std::fs::File::open(d.path()).expect("open dir");
        let times = |a: i64, m: i64| {
            [
                libc::timespec {
                    tv_sec: a,
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: m,
                    tv_nsec: 5,
                },
            ]
        };
        let lstat = |n: &str| std::fs::symlink_metadata(d.path().join(n)).expect("lstat");
        for (round, proc_path) in [false, true].into_iter().enumerate() {
            let base = 1_000_000 + round as i64 * 1000;
            NO_UTIMENS_EMPTY_PATH.store(proc_path, Relaxed);
            let f = open_at(dir.as_fd(), c"f", libc::O_PATH).expect("O_PATH f");
            let l = open_at(dir.as_fd(), c"l", libc::O_PATH).expect("O_PATH l");
            let r = utimens_fd(f.as_fd(), &times(base, base + 1))
                .and_then(|()| utimens_fd(l.as_fd(), &times(base + 2, base + 3)));
            NO_UTIMENS_EMPTY_PATH.store(false, Relaxed);
            r.expect("utimens");
            let (f, l) = (lstat("f"), lstat("l"));
            assert_eq!((f.atime(), f.mtime(), f.mtime_nsec()), (base, base + 1, 5));
            // The link itself, not its target.
            assert_eq!(
                (l.atime(), l.mtime()),
                (base + 2, base + 3),
                "proc path: {proc_path}"
            );
        }
        let bad = [libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000_000,
        }; 2];
        let f = open_at(dir.as_fd(), c"f", libc::O_PATH).expect("O_PATH f");
        let e = utimens_fd(f.as_fd(), &bad).expect_err("bad times");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // Bad times are not taken for a kernel without the descriptor form.
        assert!(!NO_UTIMENS_EMPTY_PATH.load(Relaxed));
    }

    #[test]
    fn malformed_dirent_records_are_an_error_not_a_loop() {
        let mut out = Vec::new();
        let mut rec = [0u8; 24];
        rec[19] = b'a';
        // d_reclen 0 would never advance.
        assert!(parse_dirents(&rec, &mut out).is_err());
        // A record longer than the buffer.
        rec[16] = 200;
        assert!(parse_dirents(&rec, &mut out).is_err());
        // A well-formed one.
        rec[16] = 24;
        rec[18] = libc::DT_REG;
        parse_dirents(&rec, &mut out).expect("valid record");
        assert_eq!(out, vec![(b"a".to_vec(), libc::DT_REG, 0)]);
    }
}

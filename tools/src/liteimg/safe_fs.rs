//! Symlink-proof file operations on a directory tree held by fd: every lookup below a root
//! goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or `RESOLVE_IN_ROOT` where
//! symlinks must be resolved the way the node would see them), and every final component is
//! handled with `*at` calls that do not follow it. A hostile image (`/etc -> /`,
//! `/var/log -> /root`) therefore can never make us read or write outside the tree.
//!
//! `cp -a` semantics (mode, owner, times, xattrs, hard links, symlinks, device nodes, fifos)
//! live here too, because both `statelite liteimg` and symlink mode on the node copy trees.
//!
//! This file is shared by `statelite-tools` (as `liteimg::safe_fs`) and `statelite-mountd`
//! (included by path from `symlink_mode.rs`) until it moves into `statelite-fs`; it
//! therefore depends only on `std`, `nix` and `libc`, and reports plain `io::Error`s.

#![allow(dead_code)] // each of the two crates that include this file uses a different subset

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat, renameat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The kind of a directory entry, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// fifo, socket, character or block device
    Special,
}

pub fn kind_of(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Special,
    }
}

/// Opens a tree's root directory. The root path itself may be a symlink (an admin's
/// `/install -> /data/install`); nothing below it is ever followed.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)
}

/// Opens the directory `rel` (relative, `/`-separated, may be empty) below `root`,
/// refusing symlinks in any component and any escape from `root`.
pub fn open_dir_beneath<P: AsRef<OsStr> + ?Sized>(
    root: BorrowedFd<'_>,
    rel: &P,
) -> io::Result<OwnedFd> {
    let rel = rel.as_ref();
    let rel = if rel.is_empty() { OsStr::new(".") } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(root, rel, how).map_err(io_err)
}

/// Opens `rel` below `root` as an `O_PATH` fd, resolving symlinks as if `root` were `/`
/// (an absolute link `/etc/x` inside the tree means `root/etc/x`). Used for mount
/// sources and targets, which the kernel would otherwise resolve against the host's `/`.
pub fn open_path_in_root(root: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel, how).map_err(io_err)
}

/// `/proc/self/fd/<fd>`: a path naming exactly the object behind `fd` (for mount(2) and the
/// xattr calls, which have no `*at` form).
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Splits `a/b/c` into (`a/b`, `c`) and `c` into (``, `c`).
pub fn split_rel(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// `lstat` of `rel` below `root` (parents must be real directories). `None` when the entry
/// or one of its parents does not exist.
pub fn lstat_beneath(root: BorrowedFd<'_>, rel: &str) -> io::Result<Option<FileStat>> {
    let (parent, name) = split_rel(rel);
    match open_dir_beneath(root, parent) {
        Ok(dir) => lstat_at(dir.as_fd(), OsStr::new(name)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    readlinkat(dir, name).map_err(io_err)
}

/// Creates every missing directory of `rel` below `root` with `mode`, refusing symlinks.
/// Pushes each directory it created (relative to `root`) to `created`, parents first.
pub fn mkdirs_beneath(
    root: BorrowedFd<'_>,
    rel: &str,
    mode: Mode,
    created: &mut Vec<String>,
) -> io::Result<OwnedFd> {
    let mut dir = open_dir_beneath(root, "")?;
    let mut so_far = String::new();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(comp);
        match mkdirat(dir.as_fd(), comp, mode) {
            Ok(()) => {
                // mkdir honours the umask; the caller asked for exactly `mode`.
                let fresh = open_dir_beneath(dir.as_fd(), comp)?;
                fchmod(fresh.as_fd(), mode).map_err(io_err)?;
                created.push(so_far.clone());
                dir = fresh;
            }
            Err(Errno::EEXIST) => dir = open_dir_beneath(dir.as_fd(), comp)?,
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(dir)
}

/// Creates an empty regular file (`O_EXCL`, never through a symlink).
pub fn create_empty_file(dir: BorrowedFd<'_>, name: &OsStr, mode: Mode) -> io::Result<()> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
    .map_err(io_err)?;
    fchmod(fd.as_fd(), mode).map_err(io_err)
}

pub fn create_dir(dir: BorrowedFd<'_>, name: &OsStr, mode: Mode) -> io::Result<()> {
    mkdirat(dir, name, mode).map_err(io_err)?;
    let fresh = open_dir_beneath(dir, name)?;
    fchmod(fresh.as_fd(), mode).map_err(io_err)
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    symlinkat(target, dir, name).map_err(io_err)
}

pub fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    renameat(from_dir, from, to_dir, to).map_err(io_err)
}

/// `rename` that fails with `EEXIST` instead of replacing an existing destination.
pub fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    nix::fcntl::renameat2(
        from_dir,
        from,
        to_dir,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(io_err)
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io_err)
}

/// `rmdir` that succeeds only on an empty directory; `Ok(false)` when it is not empty or
/// already gone.
pub fn rmdir_if_empty(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOENT) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// Names in a directory, sorted (deterministic order for copies, logs and comparisons).
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(io_err)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` in `dir` and everything below it, never following a symlink.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if kind_of(&st) == Kind::Dir {
        let sub = open_dir_beneath(dir, name)?;
        for child in list_dir(sub.as_fd())? {
            remove_tree(sub.as_fd(), &child)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(io_err)
    } else {
        unlink_at(dir, name)
    }
}

/// True for an empty regular file or an empty directory: what liteimg creates for an
/// absent entry, so it may be removed again without losing anybody's data.
pub fn is_empty_entry(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(false);
    };
    Ok(match kind_of(&st) {
        Kind::File => st.st_size == 0,
        Kind::Dir => {
            let sub = open_dir_beneath(dir, name)?;
            list_dir(sub.as_fd())?.is_empty()
        }
        _ => false,
    })
}

/// The xattrs of `name` in `dir` (not following it), sorted by name.
pub fn xattrs_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let path = cpath(&fd_path(dir).join(name))?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: buffer and length describe a live allocation.
        let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for raw in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let key = CString::new(raw).map_err(io::Error::other)?;
        let mut value = vec![0u8; 256];
        let vlen = loop {
            // SAFETY: as above.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    key.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                break Some(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                Some(libc::ENODATA) => break None, // removed while we looked
                _ => return Err(err),
            }
        };
        if let Some(vlen) = vlen {
            value.truncate(vlen);
            out.push((key, value));
        }
    }
    out.sort();
    Ok(out)
}

fn set_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attrs: &[(CString, Vec<u8>)],
) -> io::Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    let path = cpath(&fd_path(dir).join(name))?;
    for (key, value) in attrs {
        // SAFETY: pointers and lengths describe live buffers.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // Like `cp -a`: a destination that cannot hold an attribute (no xattr support,
            // or a trusted.* name as non-root) does not fail the copy.
            if !matches!(err.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                return Err(err);
            }
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Files with more than one link already copied in this run, so later names become hard
/// links again (`cp -a` keeps hard links).
#[derive(Default)]
pub struct HardLinks {
    seen: HashMap<(u64, u64), (Rc<OwnedFd>, OsString)>,
}

/// How [`copy_tree`] treats an existing destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// The destination must not exist (`EEXIST` otherwise).
    Refuse,
    /// `cp -a src/. dst`: directories merge, other entries are replaced.
    Merge,
}

/// Copies `src_name` in `src_dir` to `dst_name` in `dst_dir` with `cp -a` semantics.
pub fn copy_tree(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dst_dir: &Rc<OwnedFd>,
    dst_name: &OsStr,
    existing: Existing,
    links: &mut HardLinks,
) -> io::Result<()> {
    let st =
        lstat_at(src_dir, src_name)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    let kind = kind_of(&st);
    let dst = dst_dir.as_fd();
    if let Some(old) = lstat_at(dst, dst_name)? {
        match existing {
            Existing::Refuse => return Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Existing::Merge if kind == Kind::Dir && kind_of(&old) == Kind::Dir => {}
            Existing::Merge => remove_tree(dst, dst_name)?,
        }
    }
    let key = (st.st_dev, st.st_ino);
    if kind != Kind::Dir
        && st.st_nlink > 1
        && let Some((link_dir, link_name)) = links.seen.get(&key)
    {
        return linkat(
            link_dir.as_fd(),
            link_name.as_os_str(),
            dst,
            dst_name,
            AtFlags::empty(),
        )
        .map_err(io_err);
    }
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    match kind {
        Kind::File => {
            let src = openat(
                src_dir,
                src_name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err)?;
            let out = openat(
                dst,
                dst_name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(io_err)?;
            let mut src = File::from(src);
            let mut out = File::from(out);
            io::copy(&mut src, &mut out)?;
        }
        Kind::Dir => {
            match mkdirat(dst, dst_name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_err(e)),
            }
            let sub_src = open_dir_beneath(src_dir, src_name)?;
            let sub_dst = Rc::new(open_dir_beneath(dst, dst_name)?);
            for child in list_dir(sub_src.as_fd())? {
                copy_tree(sub_src.as_fd(), &child, &sub_dst, &child, existing, links)?;
            }
        }
        Kind::Symlink => {
            let target = readlink_at(src_dir, src_name)?;
            symlink_at(&target, dst, dst_name)?;
        }
        Kind::Special => {
            let sflag = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
            mknodat(dst, dst_name, sflag, mode, st.st_rdev).map_err(io_err)?;
        }
    }
    copy_attributes(&st, src_dir, src_name, dst, dst_name)?;
    if kind != Kind::Dir && st.st_nlink > 1 {
        links
            .seen
            .insert(key, (Rc::clone(dst_dir), dst_name.to_os_string()));
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `src` onto `dst` (times last: the other changes bump
/// ctime only, but a directory's mtime must be set after its children were created).
fn copy_attributes(
    st: &FileStat,
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dst: BorrowedFd<'_>,
    dst_name: &OsStr,
) -> io::Result<()> {
    let kind = kind_of(st);
    match fchownat(
        dst,
        dst_name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => {}
        // Not root: keep our own ownership, as `cp -a` does.
        Err(Errno::EPERM) if !nix::unistd::geteuid().is_root() => {}
        Err(e) => return Err(io_err(e)),
    }
    if kind != Kind::Symlink {
        // After chown, which clears set-id bits.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = openat2(dst, dst_name, how).map_err(io_err)?;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        // fchmod does not work on O_PATH fds; chmod through /proc does, on the same object.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &fd_path(fd.as_fd()),
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io_err)?;
    }
    let attrs = xattrs_at(src_dir, src_name)?;
    set_xattrs_at(dst, dst_name, &attrs)?;
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    utimensat(
        dst,
        dst_name,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io_err)
}

/// True when two trees have the same shape, types, modes, owners, mtimes, sizes, symlink
/// targets, device numbers and xattrs (rsync's quick check: contents of equal-size,
/// equal-mtime regular files are not read).
pub fn same_tree(
    a_dir: BorrowedFd<'_>,
    a_name: &OsStr,
    b_dir: BorrowedFd<'_>,
    b_name: &OsStr,
) -> io::Result<bool> {
    let (Some(a), Some(b)) = (lstat_at(a_dir, a_name)?, lstat_at(b_dir, b_name)?) else {
        return Ok(false);
    };
    let kind = kind_of(&a);
    if kind != kind_of(&b)
        || a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || a.st_mtime != b.st_mtime
        || a.st_mtime_nsec != b.st_mtime_nsec
    {
        return Ok(false);
    }
    if xattrs_at(a_dir, a_name)? != xattrs_at(b_dir, b_name)? {
        return Ok(false);
    }
    match kind {
        Kind::File => Ok(a.st_size == b.st_size),
        Kind::Symlink => Ok(readlink_at(a_dir, a_name)? == readlink_at(b_dir, b_name)?),
        Kind::Special => Ok(a.st_rdev == b.st_rdev),
        Kind::Dir => {
            let sa = open_dir_beneath(a_dir, a_name)?;
            let sb = open_dir_beneath(b_dir, b_name)?;
            let names = list_dir(sa.as_fd())?;
            if names != list_dir(sb.as_fd())? {
                return Ok(false);
            }
            for n in &names {
                if !same_tree(sa.as_fd(), n, sb.as_fd(), n)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

/// Appends the contents of regular file `name` in `dir` to `out`.
pub fn append_file(dir: BorrowedFd<'_>, name: &OsStr, out: &mut File) -> io::Result<()> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    let mut src = File::from(fd);
    let mut buf = Vec::new();
    src.read_to_end(&mut buf)?;
    io::Write::write_all(out, &buf)
}

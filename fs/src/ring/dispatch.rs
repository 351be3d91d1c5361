//! One request from a ring entry: its arguments decoded, the operation called, and the
//! answer left in the entry for the commit.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, TimeOrNow, WriteFlags,
};

use super::abi::{self, InHeader, u32_at, u64_at};
use crate::overlay::StateliteFs;
use crate::reply::{
    AttrReply, Caller, CreateReply, DataReply, DirPlusReply, DirReply, EmptyReply, EntryReply,
    ErrorReply, LseekReply, OpenReply, PassthroughId, StatfsReply, WriteReply, XattrReply,
};

/// Small replies are built here; data and directory listings go straight into the
/// entry's payload buffer.
pub(super) struct Out {
    /// 0 or a negative errno.
    pub error: i32,
    pub small: [u8; 256],
    pub small_len: usize,
    /// Bytes of reply at the start of the payload buffer (instead of `small`).
    pub big_len: Option<usize>,
    /// No answer at all (NOTIFY_REPLY): commit only to get the entry back.
    pub silent: bool,
}

impl Out {
    pub fn new() -> Out {
        Out {
            error: 0,
            small: [0; 256],
            small_len: 0,
            big_len: None,
            silent: false,
        }
    }
    /// An operation that never answers leaves EIO (as fuser does when a reply is dropped).
    fn reset(&mut self) {
        self.error = -libc::EIO;
        self.small_len = 0;
        self.big_len = None;
        self.silent = false;
    }
}

/// The reply object handed to an operation.
struct RingReply<'a> {
    out: &'a mut Out,
    /// The payload buffer, when the request's own arguments do not live in it.
    big: Option<&'a mut [u8]>,
    /// What the kernel asked for at most (reads, listings, xattr values).
    limit: usize,
    dir_used: usize,
}

impl RingReply<'_> {
    fn small(self, bytes: impl FnOnce(&mut [u8]) -> usize) {
        let n = bytes(&mut self.out.small);
        self.out.small_len = n;
        self.out.error = 0;
    }
    fn big(mut self, data: &[u8]) {
        match self.big.take() {
            Some(b) if data.len() <= b.len() && data.len() <= self.limit => {
                b[..data.len()].copy_from_slice(data);
                self.out.big_len = Some(data.len());
                self.out.error = 0;
            }
            _ => self.out.error = -libc::ERANGE,
        }
    }
}

impl ErrorReply for RingReply<'_> {
    fn error(self, err: Errno) {
        self.out.error = -err.code();
    }
}
impl EmptyReply for RingReply<'_> {
    fn ok(self) {
        self.small(|_| 0);
    }
}
impl EntryReply for RingReply<'_> {
    fn entry(self, ttl: &Duration, attr: &FileAttr, generation: Generation) {
        self.small(|b| {
            abi::put_entry_out(b, ttl, attr, generation.0);
            abi::ENTRY_OUT
        });
    }
}
impl AttrReply for RingReply<'_> {
    fn attr(self, ttl: &Duration, attr: &FileAttr) {
        self.small(|b| {
            abi::put_attr_out(b, ttl, attr);
            abi::ATTR_OUT
        });
    }
}
impl DataReply for RingReply<'_> {
    fn data(self, data: &[u8]) {
        self.big(data);
    }
}
impl RingReply<'_> {
    /// `fuse_open_out`, after `fuse_entry_out` for CREATE; backing id 0 = no passthrough.
    fn open_out(
        self,
        entry: Option<(&Duration, &FileAttr, Generation)>,
        fh: FileHandle,
        flags: FopenFlags,
        backing: u32,
    ) {
        let flags = if backing != 0 {
            flags | FopenFlags::FOPEN_PASSTHROUGH
        } else {
            flags
        };
        self.small(|b| {
            let at = match entry {
                Some((ttl, attr, generation)) => {
                    abi::put_entry_out(b, ttl, attr, generation.0);
                    abi::ENTRY_OUT
                }
                None => 0,
            };
            abi::put_open_out(&mut b[at..], fh.0, flags.bits(), backing);
            at + abi::OPEN_OUT
        });
    }
}
impl OpenReply for RingReply<'_> {
    fn opened(self, fh: FileHandle, flags: FopenFlags) {
        self.open_out(None, fh, flags, 0);
    }
    fn opened_passthrough(self, fh: FileHandle, flags: FopenFlags, id: &PassthroughId) {
        self.open_out(None, fh, flags, id.raw());
    }
}
impl CreateReply for RingReply<'_> {
    fn created(
        self,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
    ) {
        self.open_out(Some((ttl, attr, generation)), fh, flags, 0);
    }
    fn created_passthrough(
        self,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
        id: &PassthroughId,
    ) {
        self.open_out(Some((ttl, attr, generation)), fh, flags, id.raw());
    }
}
impl WriteReply for RingReply<'_> {
    fn written(self, size: u32) {
        self.small(|b| {
            abi::put_u32(b, 0, size);
            abi::put_u32(b, 4, 0);
            8
        });
    }
}
impl StatfsReply for RingReply<'_> {
    fn statfs(
        self,
        blocks: u64,
        bfree: u64,
        bavail: u64,
        files: u64,
        ffree: u64,
        bsize: u32,
        namelen: u32,
        frsize: u32,
    ) {
        self.small(|b| {
            b[..80].fill(0);
            abi::put_u64(b, 0, blocks);
            abi::put_u64(b, 8, bfree);
            abi::put_u64(b, 16, bavail);
            abi::put_u64(b, 24, files);
            abi::put_u64(b, 32, ffree);
            abi::put_u32(b, 40, bsize);
            abi::put_u32(b, 44, namelen);
            abi::put_u32(b, 48, frsize);
            80
        });
    }
}
impl XattrReply for RingReply<'_> {
    fn size(self, size: u32) {
        self.small(|b| {
            abi::put_u32(b, 0, size);
            abi::put_u32(b, 4, 0);
            8
        });
    }
    fn data(self, data: &[u8]) {
        self.big(data);
    }
}
impl LseekReply for RingReply<'_> {
    fn offset(self, offset: i64) {
        self.small(|b| {
            abi::put_u64(b, 0, offset as u64);
            8
        });
    }
}
impl RingReply<'_> {
    /// The next `size` bytes of a directory reply, taken; None when they do not fit.
    fn dir_room(&mut self, size: usize) -> Option<&mut [u8]> {
        let b = self.big.as_deref_mut()?;
        let (at, end) = (self.dir_used, self.dir_used + size);
        if end > self.limit.min(b.len()) {
            return None;
        }
        self.dir_used = end;
        Some(&mut b[at..end])
    }
}
impl DirReply for RingReply<'_> {
    fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool {
        let name = name.as_bytes();
        let Some(b) = self.dir_room(abi::dirent_size(name.len())) else {
            return true;
        };
        abi::put_dirent(b, ino.0, offset, kind, name);
        false
    }
    fn ok(self) {
        self.out.big_len = Some(self.dir_used);
        self.out.error = 0;
    }
}
impl DirPlusReply for RingReply<'_> {
    fn add(
        &mut self,
        ino: INodeNo,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
    ) -> bool {
        let name = name.as_bytes();
        let Some(b) = self.dir_room(abi::ENTRY_OUT + abi::dirent_size(name.len())) else {
            return true;
        };
        abi::put_entry_out(b, ttl, attr, generation.0);
        abi::put_dirent(&mut b[abi::ENTRY_OUT..], ino.0, offset, attr.kind, name);
        false
    }
    fn add_name(
        &mut self,
        ino: INodeNo,
        offset: u64,
        kind: FileType,
        name: &OsStr,
    ) -> Option<bool> {
        let name = name.as_bytes();
        let Some(b) = self.dir_room(abi::ENTRY_OUT + abi::dirent_size(name.len())) else {
            return Some(true);
        };
        b[..abi::ENTRY_OUT].fill(0); // node id 0: no entry, no attributes
        abi::put_dirent(&mut b[abi::ENTRY_OUT..], ino.0, offset, kind, name);
        Some(false)
    }
    fn ok(self) {
        self.out.big_len = Some(self.dir_used);
        self.out.error = 0;
    }
}

/// The NUL-terminated strings at the start of a request's arguments.
fn names<const N: usize>(args: &[u8]) -> Option<[&OsStr; N]> {
    let mut out = [OsStr::new(""); N];
    let mut rest = args;
    for slot in out.iter_mut() {
        let end = rest.iter().position(|&c| c == 0)?;
        *slot = OsStr::from_bytes(&rest[..end]);
        rest = &rest[end + 1..];
    }
    Some(out)
}

fn time_or_now(secs: u64, nsecs: u32, now: bool) -> TimeOrNow {
    if now {
        return TimeOrNow::Now;
    }
    let secs = secs as i64;
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs.into())
    };
    TimeOrNow::SpecificTime(t)
}

fn system_time(secs: u64, nsecs: u32) -> SystemTime {
    match time_or_now(secs, nsecs, false) {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Serves one request. `args` are the request's arguments after the per-opcode header
/// (names, write data); `big` is the payload buffer when `args` do not live in it.
pub(super) fn dispatch(
    fs: &StateliteFs,
    h: &InHeader,
    op: &[u8],
    args: &[u8],
    big: Option<&mut [u8]>,
    out: &mut Out,
) {
    out.reset();
    if h.opcode == abi::NOTIFY_REPLY {
        out.silent = true;
        out.error = 0;
        return;
    }
    let req = Caller::new(h.uid, h.gid, h.pid);
    let ino = INodeNo(h.nodeid);
    let mut reply = RingReply {
        out,
        big,
        limit: usize::MAX,
        dir_used: 0,
    };
    macro_rules! named {
        ($n:literal, $reply:ident) => {
            match names::<$n>(args) {
                Some(n) => n,
                None => return $reply.error(Errno::EINVAL),
            }
        };
    }
    match h.opcode {
        abi::LOOKUP => {
            let [name] = named!(1, reply);
            fs.lookup(&req, ino, name, reply)
        }
        abi::GETATTR => {
            let fh = (u32_at(op, 0) & abi::GETATTR_FH != 0).then(|| FileHandle(u64_at(op, 8)));
            fs.getattr(&req, ino, fh, reply)
        }
        abi::SETATTR => {
            let valid = u32_at(op, 0);
            let has = |bit| valid & bit != 0;
            fs.setattr(
                &req,
                ino,
                has(abi::FATTR_MODE).then(|| u32_at(op, 68)),
                has(abi::FATTR_UID).then(|| u32_at(op, 76)),
                has(abi::FATTR_GID).then(|| u32_at(op, 80)),
                has(abi::FATTR_SIZE).then(|| u64_at(op, 16)),
                has(abi::FATTR_ATIME).then(|| {
                    time_or_now(u64_at(op, 32), u32_at(op, 56), has(abi::FATTR_ATIME_NOW))
                }),
                has(abi::FATTR_MTIME).then(|| {
                    time_or_now(u64_at(op, 40), u32_at(op, 60), has(abi::FATTR_MTIME_NOW))
                }),
                has(abi::FATTR_CTIME).then(|| system_time(u64_at(op, 48), u32_at(op, 64))),
                has(abi::FATTR_FH).then(|| FileHandle(u64_at(op, 8))),
                None,
                None,
                None,
                None,
                reply,
            )
        }
        abi::READLINK => {
            reply.limit = 4096;
            fs.readlink(&req, ino, reply)
        }
        abi::SYMLINK => {
            let [name, target] = named!(2, reply);
            fs.symlink(&req, ino, name, Path::new(target), reply)
        }
        abi::MKNOD => {
            let [name] = named!(1, reply);
            let (mode, rdev, umask) = (u32_at(op, 0), u32_at(op, 4), u32_at(op, 8));
            fs.mknod(&req, ino, name, mode, umask, rdev, reply)
        }
        abi::MKDIR => {
            let [name] = named!(1, reply);
            fs.mkdir(&req, ino, name, u32_at(op, 0), u32_at(op, 4), reply)
        }
        abi::UNLINK => {
            let [name] = named!(1, reply);
            fs.unlink(&req, ino, name, reply)
        }
        abi::RMDIR => {
            let [name] = named!(1, reply);
            fs.rmdir(&req, ino, name, reply)
        }
        abi::RENAME | abi::RENAME2 => {
            let [name, newname] = named!(2, reply);
            let newdir = INodeNo(u64_at(op, 0));
            let flags = if h.opcode == abi::RENAME2 {
                RenameFlags::from_bits_retain(u32_at(op, 8))
            } else {
                RenameFlags::empty()
            };
            fs.rename(&req, ino, name, newdir, newname, flags, reply)
        }
        abi::LINK => {
            let [newname] = named!(1, reply);
            fs.link(&req, INodeNo(u64_at(op, 0)), ino, newname, reply)
        }
        abi::OPEN => fs.open(&req, ino, OpenFlags(u32_at(op, 0) as i32), reply),
        abi::READ => {
            let (fh, offset, size) = (u64_at(op, 0), u64_at(op, 8), u32_at(op, 16));
            let lock =
                (u32_at(op, 20) & abi::READ_LOCKOWNER != 0).then(|| LockOwner(u64_at(op, 24)));
            reply.limit = size as usize;
            let flags = OpenFlags(u32_at(op, 32) as i32);
            fs.read(&req, ino, FileHandle(fh), offset, size, flags, lock, reply)
        }
        abi::WRITE => {
            let (fh, offset, size) = (u64_at(op, 0), u64_at(op, 8), u32_at(op, 16) as usize);
            let wflags = u32_at(op, 20);
            let lock = (wflags & abi::WRITE_LOCKOWNER != 0).then(|| LockOwner(u64_at(op, 24)));
            let flags = OpenFlags(u32_at(op, 32) as i32);
            let Some(data) = args.get(..size) else {
                return reply.error(Errno::EINVAL);
            };
            let wf = WriteFlags::from_bits_retain(wflags);
            fs.write(
                &req,
                ino,
                FileHandle(fh),
                offset,
                data,
                wf,
                flags,
                lock,
                reply,
            )
        }
        abi::STATFS => fs.statfs(&req, ino, reply),
        abi::RELEASE => {
            let (fh, flags, rflags) = (u64_at(op, 0), u32_at(op, 8), u32_at(op, 12));
            let lock = Some(LockOwner(u64_at(op, 16)));
            let flush = rflags & abi::RELEASE_FLUSH != 0;
            let flags = OpenFlags(flags as i32);
            fs.release(&req, ino, FileHandle(fh), flags, lock, flush, reply)
        }
        abi::FSYNC => {
            let datasync = u32_at(op, 8) & abi::FSYNC_FDATASYNC != 0;
            fs.fsync(&req, ino, FileHandle(u64_at(op, 0)), datasync, reply)
        }
        abi::SETXATTR => {
            let (size, flags) = (u32_at(op, 0) as usize, u32_at(op, 4) as i32);
            let Some(end) = args.iter().position(|&c| c == 0) else {
                return reply.error(Errno::EINVAL);
            };
            let name = OsStr::from_bytes(&args[..end]);
            let Some(value) = args.get(end + 1..end + 1 + size) else {
                return reply.error(Errno::EINVAL);
            };
            fs.setxattr(&req, ino, name, value, flags, 0, reply)
        }
        abi::GETXATTR => {
            let [name] = named!(1, reply);
            let size = u32_at(op, 0);
            reply.limit = size as usize;
            fs.getxattr(&req, ino, name, size, reply)
        }
        abi::LISTXATTR => {
            let size = u32_at(op, 0);
            reply.limit = size as usize;
            fs.listxattr(&req, ino, size, reply)
        }
        abi::REMOVEXATTR => {
            let [name] = named!(1, reply);
            fs.removexattr(&req, ino, name, reply)
        }
        abi::FLUSH => {
            let lock = LockOwner(u64_at(op, 16));
            fs.flush(&req, ino, FileHandle(u64_at(op, 0)), lock, reply)
        }
        abi::OPENDIR => fs.opendir(&req, ino, OpenFlags(u32_at(op, 0) as i32), reply),
        abi::READDIR => {
            reply.limit = u32_at(op, 16) as usize;
            fs.readdir(&req, ino, FileHandle(u64_at(op, 0)), u64_at(op, 8), reply)
        }
        abi::READDIRPLUS => {
            reply.limit = u32_at(op, 16) as usize;
            fs.readdirplus(&req, ino, FileHandle(u64_at(op, 0)), u64_at(op, 8), reply)
        }
        abi::RELEASEDIR => {
            let flags = OpenFlags(u32_at(op, 8) as i32);
            fs.releasedir(&req, ino, FileHandle(u64_at(op, 0)), flags, reply)
        }
        abi::FSYNCDIR => {
            let datasync = u32_at(op, 8) & abi::FSYNC_FDATASYNC != 0;
            fs.fsyncdir(&req, ino, FileHandle(u64_at(op, 0)), datasync, reply)
        }
        abi::ACCESS => {
            let mask = AccessFlags::from_bits_retain(u32_at(op, 0) as i32);
            fs.access(&req, ino, mask, reply)
        }
        abi::CREATE => {
            let [name] = named!(1, reply);
            let (flags, mode, umask) = (u32_at(op, 0) as i32, u32_at(op, 4), u32_at(op, 8));
            fs.create(&req, ino, name, mode, umask, flags, reply)
        }
        abi::FALLOCATE => {
            let (fh, offset, length) = (u64_at(op, 0), u64_at(op, 8), u64_at(op, 16));
            let mode = u32_at(op, 24) as i32;
            fs.fallocate(&req, ino, FileHandle(fh), offset, length, mode, reply)
        }
        abi::LSEEK => {
            let (fh, offset, whence) = (u64_at(op, 0), u64_at(op, 8), u32_at(op, 16));
            fs.lseek(
                &req,
                ino,
                FileHandle(fh),
                offset as i64,
                whence as i32,
                reply,
            )
        }
        abi::DESTROY => EmptyReply::ok(reply),
        abi::IOCTL => reply.error(Errno::ENOTTY),
        // Locks, poll, bmap, copy_file_range, syncfs, tmpfile, statx: not implemented,
        // as over /dev/fuse (the kernel then handles locks locally or reports ENOSYS).
        _ => reply.error(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_nul_and_reject_unterminated() {
        let [a, b] = names::<2>(b"old\0new\0").expect("two names");
        assert_eq!((a, b), (OsStr::new("old"), OsStr::new("new")));
        assert!(names::<2>(b"old\0new").is_none());
        assert!(names::<1>(b"").is_none());
    }

    #[test]
    fn explicit_times_decode_before_and_after_the_epoch() {
        assert!(matches!(time_or_now(5, 0, true), TimeOrNow::Now));
        let TimeOrNow::SpecificTime(t) = time_or_now(10, 5, false) else {
            panic!("a specific time")
        };
        assert_eq!(t, UNIX_EPOCH + Duration::new(10, 5));
        let TimeOrNow::SpecificTime(t) = time_or_now((-3i64) as u64, 250, false) else {
            panic!("a specific time")
        };
        assert_eq!(
            t,
            UNIX_EPOCH - Duration::from_secs(3) + Duration::from_nanos(250)
        );
    }
}

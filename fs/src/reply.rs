//! What an operation answers, independent of the transport that carries the answer.
//!
//! The operations in `overlay` are written once against these traits. Two transports
//! implement them: fuser's reply objects (requests read from `/dev/fuse`) and the
//! io_uring ring entries of `ring` (requests served on the CPU that made them). The
//! method names and arguments are fuser's, so an operation reads the same either way.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo};

/// Who made a request: what the operations need of fuser's `Request`.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    uid: u32,
    gid: u32,
    pid: u32,
}

impl Caller {
    pub fn new(uid: u32, gid: u32, pid: u32) -> Caller {
        Caller { uid, gid, pid }
    }
    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl From<&fuser::Request> for Caller {
    fn from(r: &fuser::Request) -> Caller {
        Caller::new(r.uid(), r.gid(), r.pid())
    }
}

/// A passthrough backing id registered with the kernel (`FUSE_DEV_IOC_BACKING_OPEN`),
/// closed when the last holder drops it. Owned by us rather than by fuser so that either
/// transport can hand it to the kernel in an open reply.
#[derive(Debug)]
pub struct PassthroughId {
    dev: Arc<OwnedFd>,
    id: u32,
}

#[repr(C)]
struct BackingMap {
    fd: u32,
    flags: u32,
    padding: u64,
}

nix::ioctl_write_ptr!(ioc_backing_open, 229, 1, BackingMap);
nix::ioctl_write_ptr!(ioc_backing_close, 229, 2, u32);

impl PassthroughId {
    /// Registers `file` as a backing file on the connection of `dev` (a `/dev/fuse` fd).
    pub fn open(dev: &Arc<OwnedFd>, file: impl AsFd) -> std::io::Result<PassthroughId> {
        let map = BackingMap {
            fd: file.as_fd().as_raw_fd() as u32,
            flags: 0,
            padding: 0,
        };
        // SAFETY: a valid pointer to a correctly laid out `fuse_backing_map`.
        let id = unsafe { ioc_backing_open(dev.as_raw_fd(), &map) }?;
        Ok(PassthroughId {
            dev: dev.clone(),
            id: id as u32,
        })
    }

    pub fn raw(&self) -> u32 {
        self.id
    }
}

impl Drop for PassthroughId {
    fn drop(&mut self) {
        // SAFETY: a valid pointer to a u32. Fails harmlessly once the connection is gone.
        if let Err(e) = unsafe { ioc_backing_close(self.dev.as_raw_fd(), &self.id) } {
            tracing::debug!("closing passthrough backing id {}: {e}", self.id);
        }
    }
}

pub trait ErrorReply {
    fn error(self, err: Errno);
}
pub trait EmptyReply: ErrorReply {
    fn ok(self);
}
pub trait EntryReply: ErrorReply {
    fn entry(self, ttl: &Duration, attr: &FileAttr, generation: Generation);
}
pub trait AttrReply: ErrorReply {
    fn attr(self, ttl: &Duration, attr: &FileAttr);
}
pub trait DataReply: ErrorReply {
    fn data(self, data: &[u8]);
}
pub trait OpenReply: ErrorReply {
    fn opened(self, fh: FileHandle, flags: FopenFlags);
    fn opened_passthrough(self, fh: FileHandle, flags: FopenFlags, id: &PassthroughId);
}
pub trait CreateReply: ErrorReply {
    fn created(
        self,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
    );
    #[allow(clippy::too_many_arguments)]
    fn created_passthrough(
        self,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
        id: &PassthroughId,
    );
}
pub trait WriteReply: ErrorReply {
    fn written(self, size: u32);
}
pub trait StatfsReply: ErrorReply {
    #[allow(clippy::too_many_arguments)]
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
    );
}
pub trait XattrReply: ErrorReply {
    fn size(self, size: u32);
    fn data(self, data: &[u8]);
}
pub trait LseekReply: ErrorReply {
    fn offset(self, offset: i64);
}
pub trait DirReply: ErrorReply {
    /// Adds an entry; true when the buffer is full (the entry was not added).
    fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool;
    fn ok(self);
}
pub trait DirPlusReply: ErrorReply {
    /// Adds an entry; true when the buffer is full (the entry was not added).
    fn add(
        &mut self,
        ino: INodeNo,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
    ) -> bool;
    /// Adds an entry by name, type and inode number only (node id 0: the kernel passes it
    /// on without making a dentry). `None` when the transport cannot send one, else true
    /// when the buffer is full (the entry was not added).
    fn add_name(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr)
    -> Option<bool>;
    fn ok(self);
}

// fuser's reply objects: plain forwarding.

macro_rules! fuser_error {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn error(self, err: Errno) {
                <$t>::error(self, err)
            }
        }
    )*};
}
fuser_error!(
    fuser::ReplyEmpty,
    fuser::ReplyEntry,
    fuser::ReplyAttr,
    fuser::ReplyData,
    fuser::ReplyOpen,
    fuser::ReplyCreate,
    fuser::ReplyWrite,
    fuser::ReplyStatfs,
    fuser::ReplyXattr,
    fuser::ReplyLseek,
    fuser::ReplyDirectory,
    fuser::ReplyDirectoryPlus,
    fuser::ReplyIoctl
);

impl EmptyReply for fuser::ReplyEmpty {
    fn ok(self) {
        fuser::ReplyEmpty::ok(self)
    }
}
impl EntryReply for fuser::ReplyEntry {
    fn entry(self, ttl: &Duration, attr: &FileAttr, generation: Generation) {
        fuser::ReplyEntry::entry(self, ttl, attr, generation)
    }
}
impl AttrReply for fuser::ReplyAttr {
    fn attr(self, ttl: &Duration, attr: &FileAttr) {
        fuser::ReplyAttr::attr(self, ttl, attr)
    }
}
impl DataReply for fuser::ReplyData {
    fn data(self, data: &[u8]) {
        fuser::ReplyData::data(self, data)
    }
}
impl OpenReply for fuser::ReplyOpen {
    fn opened(self, fh: FileHandle, flags: FopenFlags) {
        fuser::ReplyOpen::opened(self, fh, flags)
    }
    fn opened_passthrough(self, fh: FileHandle, flags: FopenFlags, id: &PassthroughId) {
        // fuser's id wrapper would close the id when dropped; it stays ours.
        // SAFETY: the id is registered on this connection and outlives the reply.
        let b = unsafe { self.wrap_backing(id.raw()) };
        fuser::ReplyOpen::opened_passthrough(self, fh, flags, &b);
        let _ = b.into_raw();
    }
}
impl CreateReply for fuser::ReplyCreate {
    fn created(
        self,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
    ) {
        fuser::ReplyCreate::created(self, ttl, attr, generation, fh, flags)
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
        // SAFETY: as for `opened_passthrough`.
        let b = unsafe { self.wrap_backing(id.raw()) };
        fuser::ReplyCreate::created_passthrough(self, ttl, attr, generation, fh, flags, &b);
        let _ = b.into_raw();
    }
}
impl WriteReply for fuser::ReplyWrite {
    fn written(self, size: u32) {
        fuser::ReplyWrite::written(self, size)
    }
}
impl StatfsReply for fuser::ReplyStatfs {
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
        fuser::ReplyStatfs::statfs(
            self, blocks, bfree, bavail, files, ffree, bsize, namelen, frsize,
        )
    }
}
impl XattrReply for fuser::ReplyXattr {
    fn size(self, size: u32) {
        fuser::ReplyXattr::size(self, size)
    }
    fn data(self, data: &[u8]) {
        fuser::ReplyXattr::data(self, data)
    }
}
impl LseekReply for fuser::ReplyLseek {
    fn offset(self, offset: i64) {
        fuser::ReplyLseek::offset(self, offset)
    }
}
impl DirReply for fuser::ReplyDirectory {
    fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool {
        fuser::ReplyDirectory::add(self, ino, offset, kind, name)
    }
    fn ok(self) {
        fuser::ReplyDirectory::ok(self)
    }
}
impl DirPlusReply for fuser::ReplyDirectoryPlus {
    fn add(
        &mut self,
        ino: INodeNo,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
    ) -> bool {
        fuser::ReplyDirectoryPlus::add(self, ino, offset, name, ttl, attr, generation)
    }
    /// fuser writes the node id as the entry's d_ino too, and glibc's readdir drops
    /// entries whose d_ino is 0.
    fn add_name(&mut self, _: INodeNo, _: u64, _: FileType, _: &OsStr) -> Option<bool> {
        None
    }
    fn ok(self) {
        fuser::ReplyDirectoryPlus::ok(self)
    }
}

//! The kernel's FUSE wire format as the ring carries it (`include/uapi/linux/fuse.h`,
//! protocol 7.45): the ring entry header, request headers and the reply structures.
//! Fields are read and written at their byte offsets, native-endian.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType};

/// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, `ring_ent_in_out`.
pub const HEADER_SIZE: usize = 288;
pub const OP_IN: usize = 128;
/// `ring_ent_in_out`: flags @256, commit_id @264, payload_sz @272.
pub const ENT_COMMIT_ID: usize = 264;
pub const ENT_PAYLOAD_SZ: usize = 272;

pub const IN_HEADER_SIZE: usize = 40;

/// `enum fuse_uring_cmd`.
pub const CMD_REGISTER: u32 = 1;
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

// Opcodes that reach the ring (FORGET, BATCH_FORGET, INTERRUPT and INIT never do).
pub const LOOKUP: u32 = 1;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const READLINK: u32 = 5;
pub const SYMLINK: u32 = 6;
pub const MKNOD: u32 = 8;
pub const MKDIR: u32 = 9;
pub const UNLINK: u32 = 10;
pub const RMDIR: u32 = 11;
pub const RENAME: u32 = 12;
pub const LINK: u32 = 13;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const SETXATTR: u32 = 21;
pub const GETXATTR: u32 = 22;
pub const LISTXATTR: u32 = 23;
pub const REMOVEXATTR: u32 = 24;
pub const FLUSH: u32 = 25;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const FSYNCDIR: u32 = 30;
pub const ACCESS: u32 = 34;
pub const CREATE: u32 = 35;
pub const DESTROY: u32 = 38;
pub const IOCTL: u32 = 39;
pub const NOTIFY_REPLY: u32 = 41;
pub const FALLOCATE: u32 = 43;
pub const READDIRPLUS: u32 = 44;
pub const RENAME2: u32 = 45;
pub const LSEEK: u32 = 46;

// setattr `valid` bits.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
pub const FATTR_CTIME: u32 = 1 << 10;

pub const GETATTR_FH: u32 = 1 << 0;
pub const READ_LOCKOWNER: u32 = 1 << 1;
pub const WRITE_LOCKOWNER: u32 = 1 << 1;
pub const RELEASE_FLUSH: u32 = 1 << 0;
pub const FSYNC_FDATASYNC: u32 = 1 << 0;

/// `struct fuse_entry_out` and `struct fuse_attr_out` sizes; `fuse_attr` is 88 bytes.
pub const ENTRY_OUT: usize = 128;
pub const ATTR_OUT: usize = 104;
pub const OPEN_OUT: usize = 16;
const ATTR: usize = 88;

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy)]
pub struct InHeader {
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    pub fn parse(b: &[u8]) -> InHeader {
        InHeader {
            opcode: u32_at(b, 4),
            unique: u64_at(b, 8),
            nodeid: u64_at(b, 16),
            uid: u32_at(b, 24),
            gid: u32_at(b, 28),
            pid: u32_at(b, 32),
        }
    }
}

/// Writes `struct fuse_out_header` (the kernel ignores `len` on the ring).
pub fn put_out_header(b: &mut [u8], error: i32, unique: u64) {
    put_u32(b, 0, 16);
    put_u32(b, 4, error as u32);
    put_u64(b, 8, unique);
}

fn mode_bits(kind: FileType) -> u32 {
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// `d_type` of a directory entry.
pub fn dirent_type(kind: FileType) -> u32 {
    mode_bits(kind) >> 12
}

/// Seconds and nanoseconds since the epoch, negative for times before it.
fn time_parts(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (mut s, mut n) = (-(d.as_secs() as i64), d.subsec_nanos());
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s as u64, n)
        }
    }
}

/// Writes `struct fuse_attr` at `b[0..88]`.
fn put_attr(b: &mut [u8], a: &FileAttr) {
    let (as_, an) = time_parts(a.atime);
    let (ms, mn) = time_parts(a.mtime);
    let (cs, cn) = time_parts(a.ctime);
    put_u64(b, 0, a.ino.0);
    put_u64(b, 8, a.size);
    put_u64(b, 16, a.blocks);
    put_u64(b, 24, as_);
    put_u64(b, 32, ms);
    put_u64(b, 40, cs);
    put_u32(b, 48, an);
    put_u32(b, 52, mn);
    put_u32(b, 56, cn);
    put_u32(b, 60, mode_bits(a.kind) | u32::from(a.perm));
    put_u32(b, 64, a.nlink);
    put_u32(b, 68, a.uid);
    put_u32(b, 72, a.gid);
    put_u32(b, 76, a.rdev);
    put_u32(b, 80, a.blksize);
    put_u32(b, 84, a.flags);
}

fn valid_parts(ttl: &Duration) -> (u64, u32) {
    (ttl.as_secs(), ttl.subsec_nanos())
}

/// Writes `struct fuse_entry_out` at `b[0..128]`.
pub fn put_entry_out(b: &mut [u8], ttl: &Duration, attr: &FileAttr, generation: u64) {
    let (s, n) = valid_parts(ttl);
    put_u64(b, 0, attr.ino.0);
    put_u64(b, 8, generation);
    put_u64(b, 16, s);
    put_u64(b, 24, s);
    put_u32(b, 32, n);
    put_u32(b, 36, n);
    put_attr(&mut b[40..40 + ATTR], attr);
}

/// Writes `struct fuse_attr_out` at `b[0..104]`.
pub fn put_attr_out(b: &mut [u8], ttl: &Duration, attr: &FileAttr) {
    let (s, n) = valid_parts(ttl);
    put_u64(b, 0, s);
    put_u32(b, 8, n);
    put_u32(b, 12, 0);
    put_attr(&mut b[16..16 + ATTR], attr);
}

/// Writes `struct fuse_open_out` at `b[0..16]`.
pub fn put_open_out(b: &mut [u8], fh: u64, flags: u32, backing_id: u32) {
    put_u64(b, 0, fh);
    put_u32(b, 8, flags);
    put_u32(b, 12, backing_id);
}

/// Size of a `struct fuse_dirent` with a name of `namelen` bytes, padded to 8.
pub fn dirent_size(namelen: usize) -> usize {
    (24 + namelen + 7) & !7
}

/// Writes `struct fuse_dirent` + name + padding at the start of `b`.
pub fn put_dirent(b: &mut [u8], ino: u64, off: u64, kind: FileType, name: &[u8]) -> usize {
    let size = dirent_size(name.len());
    put_u64(b, 0, ino);
    put_u64(b, 8, off);
    put_u32(b, 16, name.len() as u32);
    put_u32(b, 20, dirent_type(kind));
    b[24..24 + name.len()].copy_from_slice(name);
    b[24 + name.len()..size].fill(0);
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_keep_nanoseconds_positive() {
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        let (s, n) = time_parts(t);
        assert_eq!(s as i64, -2);
        assert_eq!(n, 500_000_000);
        let (s, n) = time_parts(UNIX_EPOCH + Duration::new(7, 9));
        assert_eq!((s, n), (7, 9));
    }

    #[test]
    fn dirents_are_padded_to_eight_bytes() {
        assert_eq!(dirent_size(1), 32);
        assert_eq!(dirent_size(8), 32);
        assert_eq!(dirent_size(9), 40);
        let mut b = [0xffu8; 64];
        let n = put_dirent(&mut b, 5, 2, FileType::Directory, b"abc");
        assert_eq!(n, 32);
        assert_eq!(u32_at(&b, 20), libc::DT_DIR as u32);
        assert_eq!(&b[24..27], b"abc");
        assert!(b[27..32].iter().all(|&x| x == 0));
    }
}

//! References to backing objects that do not pin a descriptor each.
//!
//! The kernel may hold hundreds of thousands of inodes; a descriptor per inode would hit
//! the open-file limit (and grow the daemon). An inode instead keeps the object's kernel
//! file handle (`name_to_handle_at`), and descriptors are reopened on demand with
//! `open_by_handle_at` through a bounded LRU cache, as virtiofsd does. A file handle names
//! the object itself, not a path: renames cannot redirect it, and a deleted object gives
//! `ESTALE`. Objects whose filesystem cannot make handles, or that sit on another mount than
//! their layer root, keep their descriptor.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Descriptors kept open by the cache (well under any open-file limit, with room for the
/// descriptors of open files).
pub const FD_CACHE_SIZE: usize = 4096;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn cache() -> &'static Mutex<lru::LruCache<u64, Arc<OwnedFd>>> {
    static CACHE: std::sync::OnceLock<Mutex<lru::LruCache<u64, Arc<OwnedFd>>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(FD_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
        ))
    })
}

/// A layer root with its mount id: handles are opened relative to it.
#[derive(Debug)]
pub struct MountRoot {
    pub fd: OwnedFd,
    /// `open_by_handle_at` refuses `O_PATH` descriptors: a real one of the same directory.
    handle_fd: Option<OwnedFd>,
    mount_id: Option<i32>,
}

impl MountRoot {
    pub fn new(fd: OwnedFd) -> MountRoot {
        let handle_fd = crate::sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).ok();
        let mount_id = handle_fd
            .as_ref()
            .and_then(|f| handle_of(f.as_fd()).map(|(_, m)| m));
        MountRoot {
            fd,
            handle_fd,
            mount_id,
        }
    }
}

#[derive(Debug)]
enum Kind {
    Handle {
        root: Arc<MountRoot>,
        handle: Box<[u8]>,
    },
    Fd(Arc<OwnedFd>),
}

/// A backing object.
#[derive(Debug)]
pub struct BackRef {
    id: u64,
    kind: Kind,
}

#[repr(C)]
struct FileHandleHeader {
    handle_bytes: u32,
    handle_type: i32,
}

const MAX_HANDLE_SZ: usize = 128;

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: the encoded handle (header + bytes) and the
/// mount id.
fn handle_of(fd: BorrowedFd<'_>) -> Option<(Box<[u8]>, i32)> {
    let hdr = std::mem::size_of::<FileHandleHeader>();
    let mut buf = vec![0u8; hdr + MAX_HANDLE_SZ];
    // SAFETY: the buffer is large enough for the header and MAX_HANDLE_SZ bytes, and is
    // suitably aligned for u32/i32 fields through the Vec<u8> allocation (align 1 is not
    // guaranteed, so copy the header in and out instead of referencing it).
    let header = FileHandleHeader {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
    };
    unsafe {
        std::ptr::copy_nonoverlapping(&header as *const _ as *const u8, buf.as_mut_ptr(), hdr)
    };
    let mut mount_id: libc::c_int = 0;
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return None;
    }
    let mut out = FileHandleHeader {
        handle_bytes: 0,
        handle_type: 0,
    };
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), &mut out as *mut _ as *mut u8, hdr) };
    let len = hdr + (out.handle_bytes as usize).min(MAX_HANDLE_SZ);
    // A copy of the exact size: shrinking the buffer in place left a ~100-byte hole beside
    // every long-lived handle (the daemon keeps one per inode).
    Some((Box::from(&buf[..len]), mount_id))
}

/// Times an ENOMEM from `open_by_handle_at` is asked again (see `open_by_handle`).
const ENOMEM_TRIES: u32 = 5;

fn open_by_handle(root: &MountRoot, handle: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let mount_fd = root
        .handle_fd
        .as_ref()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESTALE))?;
    // Copy into an aligned buffer: the kernel reads the header fields.
    let mut aligned: Vec<u64> = vec![0; handle.len().div_ceil(8)];
    unsafe {
        std::ptr::copy_nonoverlapping(
            handle.as_ptr(),
            aligned.as_mut_ptr() as *mut u8,
            handle.len(),
        )
    };
    // ENOMEM is asked again: besides a real shortage it is what ext4 answers for a handle of
    // a deleted object whose inode number a new file is taking at that moment (`iget_locked`
    // finds the new inode still being created and returns NULL, which ext4 reports as
    // ENOMEM). Asked again, the new inode is there and the handle's generation does not
    // match it: ESTALE, as for any deleted object. A real shortage stays ENOMEM.
    let mut tries = 0;
    loop {
        // SAFETY: the handle buffer is aligned and holds a header the kernel wrote.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd.as_raw_fd(),
                aligned.as_mut_ptr(),
                flags | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOMEM) || tries == ENOMEM_TRIES {
            return Err(e);
        }
        // The new inode's creation is a few system calls long: wait 20, 40, ... 320 µs.
        std::thread::sleep(std::time::Duration::from_micros(20 << tries));
        tries += 1;
    }
}

impl BackRef {
    /// Takes ownership of an `O_PATH` descriptor of an object found under `root`.
    pub fn new(fd: OwnedFd, root: &Arc<MountRoot>) -> BackRef {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let fd = Arc::new(fd);
        if let (Some((handle, mount_id)), Some(root_mount)) = (handle_of(fd.as_fd()), root.mount_id)
            && mount_id == root_mount
        {
            cache().lock().put(id, fd);
            return BackRef {
                id,
                kind: Kind::Handle {
                    root: root.clone(),
                    handle,
                },
            };
        }
        BackRef {
            id,
            kind: Kind::Fd(fd),
        }
    }

    /// An `O_PATH` descriptor of the object.
    pub fn open(&self) -> std::io::Result<Arc<OwnedFd>> {
        match &self.kind {
            Kind::Fd(fd) => Ok(fd.clone()),
            Kind::Handle { root, handle } => {
                if let Some(fd) = cache().lock().get(&self.id) {
                    return Ok(fd.clone());
                }
                let flags = libc::O_PATH | libc::O_NOFOLLOW;
                let fd = Arc::new(open_by_handle(root, handle, flags)?);
                cache().lock().put(self.id, fd.clone());
                Ok(fd)
            }
        }
    }

    /// A new descriptor of the object for I/O, opened with `flags` (`O_CREAT` is dropped):
    /// straight from the handle where there is one, which finds the object by inode where
    /// reopening the `O_PATH` descriptor walks `/proc/self/fd/N` and makes a procfs inode
    /// (two thirds of the daemon's time for a small file's first READ).
    pub fn reopen(&self, flags: libc::c_int) -> std::io::Result<OwnedFd> {
        let flags = flags & !libc::O_CREAT & !libc::O_NOFOLLOW;
        if let Kind::Handle { root, handle } = &self.kind
            && let Ok(fd) = open_by_handle(root, handle, flags)
        {
            return Ok(fd);
        }
        crate::sys::reopen(self.open()?.as_fd(), flags)
    }

    /// Keeps a descriptor of the object open from now on (before it is deleted while the
    /// kernel may still use it: a deleted object can no longer be reopened by handle).
    pub fn pin(&mut self) -> std::io::Result<()> {
        if let Kind::Handle { .. } = self.kind {
            let fd = self.open()?;
            cache().lock().pop(&self.id);
            self.kind = Kind::Fd(fd);
        }
        Ok(())
    }

    /// True when this reference keeps a descriptor open itself.
    pub fn pins_fd(&self) -> bool {
        matches!(self.kind, Kind::Fd(_))
    }
}

impl Drop for BackRef {
    fn drop(&mut self) {
        if matches!(self.kind, Kind::Handle { .. }) {
            cache().lock().pop(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    /// A temp dir holding the file `a` with `content`, and a reference to `a`.
    fn file_a(content: &[u8]) -> (tempfile::TempDir, BackRef) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), content).unwrap();
        let root = Arc::new(MountRoot::new(sys::open_dir_path(d.path()).unwrap()));
        let fd = sys::open_at(root.fd.as_fd(), c"a", libc::O_PATH).unwrap();
        (d, BackRef::new(fd, &root))
    }

    #[test]
    fn reopens_through_the_handle_after_eviction_and_follows_renames() {
        let (d, r) = file_a(b"x");
        let st = sys::fstat(r.open().unwrap().as_fd()).unwrap();
        cache().lock().pop(&r.id);
        std::fs::rename(d.path().join("a"), d.path().join("b")).unwrap();
        let again = r.open().unwrap();
        assert_eq!(sys::fstat(again.as_fd()).unwrap().st_ino, st.st_ino);
        drop(again);
        std::fs::remove_file(d.path().join("b")).unwrap();
        cache().lock().pop(&r.id);
        let e = r.open().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
    }

    #[test]
    fn a_deleted_object_is_stale_even_while_new_files_take_its_inode_number() {
        // ext4 answers ENOMEM for the handle of a deleted object while a new file is
        // being created with the same inode number (seen in CI, where tests create files
        // in parallel): new files are made beside it all along, and every open must say
        // ESTALE.
        let (d, r) = file_a(b"x");
        std::fs::remove_file(d.path().join("a")).unwrap();
        cache().lock().pop(&r.id);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let maker = {
            let (dir, stop) = (d.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let p = dir.join(format!("n{}", i % 4));
                    let _ = std::fs::remove_file(&p);
                    let _ = std::fs::write(&p, b"y");
                    i += 1;
                }
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let mut other = Vec::new();
        while std::time::Instant::now() < deadline {
            match r.open() {
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
                Err(e) => other.push(e.to_string()),
                Ok(_) => other.push("opened a deleted object".into()),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        maker.join().unwrap();
        assert!(
            other.is_empty(),
            "{} opens not ESTALE: {:?}",
            other.len(),
            &other[..other.len().min(3)]
        );
    }

    #[test]
    fn reopen_for_io_gives_the_object_itself_with_the_flags_asked_also_once_pinned() {
        let (d, mut r) = file_a(b"first");
        assert!(!r.pins_fd(), "the temp dir's filesystem makes handles");
        // Another object now has the name: the reference still opens its own.
        std::fs::rename(d.path().join("a"), d.path().join("b")).unwrap();
        std::fs::write(d.path().join("a"), b"second").unwrap();
        let io = r.reopen(libc::O_RDONLY | libc::O_CREAT).unwrap();
        let mut buf = [0u8; 16];
        let n = sys::pread(io.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"first");
        // SAFETY: fcntl on a descriptor we hold.
        let fl = unsafe { libc::fcntl(io.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_ACCMODE, libc::O_RDONLY);
        assert_eq!(fl & libc::O_PATH, 0, "a descriptor for I/O");
        drop(io);
        // Pinned, then deleted: no handle opens it any more, the kept descriptor does.
        r.pin().unwrap();
        std::fs::remove_file(d.path().join("b")).unwrap();
        let io = r.reopen(libc::O_RDONLY).unwrap();
        let n = sys::pread(io.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"first");
    }
}

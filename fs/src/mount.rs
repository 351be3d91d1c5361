//! Mounting the merged root: the FUSE session (several request threads with cloned
//! device fds), the mount options a root filesystem needs, and the image-generation
//! watcher that invalidates the kernel's caches after `statelite imgupdate`.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::layers::{GENERATION_FILE, LayerPaths, LayerStack};
use crate::overlay::{INIT_READ_AHEAD_KB, MAX_WRITE, Overlay, OverlayOptions, StateliteFs};
use crate::ring;
use crate::rules::RuleSet;
use crate::sys;

/// Everything needed to serve one node's root.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub layers: LayerPaths,
    pub mountpoint: PathBuf,
    pub threads: usize,
    /// How often the image generation is checked.
    pub generation_interval: Duration,
    pub options: OverlayOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Layer(#[from] crate::layers::LayerError),
    #[error("cannot mount on {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(std::io::Error),
}

/// A mounted root. `run` serves until the filesystem is unmounted.
pub struct Mounted {
    pub overlay: Arc<Overlay>,
    session: Session<StateliteFs>,
    /// The mount's device number (`major`, `minor`), found right after mounting.
    device: Result<(u32, u32), String>,
    /// The image generation the mount started from: read before the mount is reported
    /// ready, so that an update made right after ready is seen as one (read when the
    /// watcher started, a bump made before that became its starting point, unseen).
    generation: Option<String>,
    stop: Arc<AtomicBool>,
}

/// Reads the image generation: the file's content, or `None` when it does not exist.
pub fn read_generation(layers: &LayerStack) -> Option<String> {
    // An NFS client keeps a negative entry for `.statelite` (or `generation`) while its
    // directory's cached attributes say nothing changed, for up to `acdirmax` (60 s): the
    // first `imgupdate` of an image that had neither went unseen that long on a node.
    // Refreshing the directories' attributes from the server makes the client drop the
    // stale negative entries (on a local filesystem this costs two cheap statx calls).
    refresh_attrs(layers.image(), "");
    refresh_attrs(layers.image(), ".statelite");
    let fd = sys::open_beneath(layers.image(), GENERATION_FILE, libc::O_RDONLY).ok()?;
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(fd).read_to_string(&mut s).ok()?;
    Some(s.trim().to_string())
}

/// `statx(AT_STATX_FORCE_SYNC)` of `rel` below `dir` (no symlink followed): network
/// filesystems fetch fresh attributes from the server. Errors (an absent entry) are fine.
pub(crate) fn refresh_attrs(dir: std::os::fd::BorrowedFd<'_>, rel: &str) {
    use std::os::fd::AsRawFd;
    let Ok(c) = CString::new(rel) else { return };
    let _ = sys::statx_sync(
        dir.as_raw_fd(),
        &c,
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
    );
}

/// Every inode the kernel holds keeps a descriptor of its backing object open, so the
/// descriptor limit bounds how many inodes the daemon can serve: raise it to the hard limit.
/// (As root the hard limit itself may be raised, up to the kernel's `fs.nr_open`.)
fn raise_fd_limit() {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(1 << 20);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = libc::rlimit {
            rlim_cur: nr_open.max(lim.rlim_cur),
            rlim_max: nr_open.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            // Not privileged: settle for the hard limit we have.
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

pub fn mount(rules: RuleSet, cfg: &MountConfig) -> Result<Mounted, MountError> {
    raise_fd_limit();
    // The kernel already applied the client's umask to every mode we receive; the daemon's
    // own must not mask it again (mkdir 0777 under umask 0 must give 0777).
    unsafe { libc::umask(0) };
    let layers = LayerStack::open(cfg.layers.clone())?;
    let generation = read_generation(&layers);
    let overlay = Overlay::new(rules, layers, cfg.options.clone()).map_err(MountError::Setup)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("statelite".into()),
        MountOption::Subtype("statelite".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::Exec,
        MountOption::RW,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;
    // The kernel names the mount point canonically in mountinfo (where the readahead
    // set-up finds the mount); resolved now, as afterwards it would be a request to us.
    let mountpoint = std::fs::canonicalize(&cfg.mountpoint).unwrap_or(cfg.mountpoint.clone());
    let session =
        Session::new(StateliteFs(overlay.clone()), &cfg.mountpoint, &config).map_err(|source| {
            MountError::Mount {
                path: cfg.mountpoint.clone(),
                source,
            }
        })?;
    // Our mount is the newest on its path only now: later (after a quick remount) the path
    // may hold another daemon's root.
    let device = fuse_device_of(&mountpoint).map_err(|e| e.to_string());
    *overlay.notifier.write() = Some(session.notifier());
    let dev = session
        .as_fd()
        .try_clone_to_owned()
        .map_err(MountError::Setup)?;
    let _ = overlay.dev_fuse.set(Arc::new(dev));
    Ok(Mounted {
        overlay,
        session,
        device,
        generation,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

impl Mounted {
    /// FUSE over io_uring, when wanted and the kernel has it (`Overlay::rings`); left unset,
    /// every request stays on `/dev/fuse`.
    fn start_ring(&self) {
        let ov = &self.overlay;
        if !ov.opts.uring {
            return;
        }
        let Some(dev) = ov.dev_fuse.get().cloned() else {
            return;
        };
        let fs = Arc::new(StateliteFs(ov.clone()));
        let t0 = std::time::Instant::now();
        match ring::enable_in_kernel().and_then(|()| ring::start(fs, dev, MAX_WRITE)) {
            Ok(r) => {
                tracing::info!(
                    queues = r.queues,
                    setup_us = t0.elapsed().as_micros() as u64,
                    "serving requests over io_uring"
                );
                let _ = ov.rings.set(Arc::new(r));
            }
            Err(e) => tracing::info!("serving requests over /dev/fuse: {e}"),
        }
    }

    /// Serves requests until unmounted; the generation watcher runs alongside.
    pub fn run(self, generation_interval: Duration) -> std::io::Result<()> {
        // The ring serves requests as soon as it is registered, so it starts here, once the
        // caller has installed the rules (as fuser's session loop below does).
        self.start_ring();
        let ov = self.overlay.clone();
        let stop = self.stop.clone();
        let since = self.generation.clone();
        let watcher = std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || watch_generation(&ov, since, generation_interval, &stop))?;
        // fuser unmounts the mount point *path* when its mount handle is dropped at the end
        // of the session. By then the kernel has already dropped our mount (that is why the
        // session ended), and the path may hold a new mount of the same root (a quick
        // remount: the old daemon unmounted the new one, and the demo read a bare
        // directory). So the handle is never dropped: the background session is forgotten
        // once its thread is taken out. (Before `run`, a failed setup still unmounts by
        // dropping the session: the path is surely ours then.)
        let mut bg = self.session.spawn()?;
        let session = std::mem::replace(&mut bg.guard, std::thread::spawn(|| Ok(())));
        std::mem::forget(bg);
        // On its own thread: it waits for the INIT reply, and must never hold up the exit.
        let (device, kb) = (self.device.clone(), self.overlay.opts.read_ahead_kb);
        let _ = std::thread::Builder::new()
            .name("readahead".into())
            .spawn(move || widen_readahead(&device, kb));
        let r = session
            .join()
            .map_err(|_| std::io::Error::other("the FUSE session thread panicked"))
            .and_then(|r| r);
        self.stop.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        r
    }
}

/// The kernel starts a FUSE mount with the default 128 KiB readahead window, and INIT can
/// only lower it. Every read through the page cache (files below the passthrough size; all
/// files in no-open mode) then reaches us as one 128 KiB READ per window: a cold 1 GiB
/// sequential read ran at half the disk's speed in no-open mode (benches/RESULTS.md, run
/// 6). A wider window keeps several READs of up to 1 MiB (`max_pages`) in flight. The
/// window belongs to the mount's BDI, set through sysfs once the INIT reply has been
/// applied (it would lower an earlier write again).
///
/// Nothing here touches the mount itself: the device number was found at mount time
/// ([`fuse_device_of`], with no request to us), and the INIT reply is seen applied when
/// the window reads [`INIT_READ_AHEAD_KB`]. (A statx of the mount point that waited for
/// our own answer, as before, held a reference to the mount meanwhile: a daemon stopped
/// then, e.g. by SIGSTOP, made `umount` of its root fail with EBUSY.) Best effort:
/// without sysfs (an initramfs that did not mount it) the node only reads large files
/// slower.
fn widen_readahead(device: &Result<(u32, u32), String>, kb: u32) {
    if kb == 0 {
        return;
    }
    let (major, minor) = match device {
        Ok(dev) => *dev,
        Err(e) => {
            tracing::warn!("readahead left at the default: {e}");
            return;
        }
    };
    let knob = PathBuf::from(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"));
    let read =
        |knob: &Path| -> Option<u32> { std::fs::read_to_string(knob).ok()?.trim().parse().ok() };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match read(&knob) {
            Some(now) if now <= INIT_READ_AHEAD_KB => break,
            Some(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => {
                tracing::warn!(
                    knob = %knob.display(),
                    "readahead left at the default: {}",
                    if other.is_some() { "the INIT reply was not seen applied" } else { "cannot read the window" }
                );
                return;
            }
        }
    }
    match std::fs::write(&knob, kb.to_string()) {
        Ok(()) => tracing::debug!(knob = %knob.display(), kb, "readahead window set"),
        Err(e) => tracing::warn!("readahead left at the default: {}: {e}", knob.display()),
    }
}

/// The device number of the newest FUSE mount on `mountpoint` (an absolute path without
/// symlinks): from a statx that asks the kernel only, else from `/proc/self/mountinfo`.
fn fuse_device_of(mountpoint: &Path) -> std::io::Result<(u32, u32)> {
    // The mount root on the path is the mount just made (nothing can be mounted over it
    // in between but by root itself): its device, from the kernel without a request to
    // us. Reading mountinfo instead took 0.13 ms here, a twentieth of a mount.
    let cached = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .ok()
        .and_then(|path| sys::statx_cached(&path).ok());
    if let Some(st) = cached {
        let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
        let root = st.stx_attributes_mask & mount_root != 0 && st.stx_attributes & mount_root != 0;
        // FUSE superblocks have an anonymous device (major 0), as mountinfo shows.
        if root && st.stx_dev_major == 0 {
            return Ok((st.stx_dev_major, st.stx_dev_minor));
        }
    }
    let info = std::fs::read("/proc/self/mountinfo")?;
    mountinfo_device(&info, mountpoint.as_os_str().as_encoded_bytes()).ok_or_else(|| {
        std::io::Error::other(format!(
            "no FUSE mount on {} in /proc/self/mountinfo",
            mountpoint.display()
        ))
    })
}

/// Finds the last line of `info` (mountinfo format) for a `fuse*` filesystem mounted on
/// `target`, and returns its `major:minor`.
fn mountinfo_device(info: &[u8], target: &[u8]) -> Option<(u32, u32)> {
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let (mount, fs) = line.split_once(" - ")?;
            let fields: Vec<&str> = mount.split(' ').collect();
            let (dev, point) = (fields.get(2)?, fields.get(4)?);
            if !fs.split(' ').next()?.starts_with("fuse") || unescape_octal(point) != target {
                return None;
            }
            let (major, minor) = dev.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .next_back()
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline and backslash in paths).
fn unescape_octal(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match code {
            Some(c) if b[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// Counts and acts on every change of the image generation from `last`, the generation the
/// mount started from.
fn watch_generation(ov: &Overlay, mut last: Option<String>, interval: Duration, stop: &AtomicBool) {
    let tick = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        ov.drain_invalidations();
        ov.trim_inodes();
        if let Some(r) = ov.rings.get() {
            r.adapt();
        }
        waited += tick;
        if waited < interval {
            continue;
        }
        waited = Duration::ZERO;
        let now = read_generation(&ov.layers);
        if now != last {
            tracing::info!(old = ?last, new = ?now, "image generation changed: invalidating caches");
            ov.stats.generation_bumps.fetch_add(1, Ordering::Relaxed);
            ov.invalidate_image();
            last = now;
        }
    }
}

/// Unmounts a FUSE mount point (what `umount` does), lazily if it is busy.
pub fn unmount(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY)
        && unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0
    {
        return Ok(());
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_fuse_mount_on_the_path_gives_the_device() {
        let info = b"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            90 22 0:61 / /srv/node\\040a rw,nosuid - fuse.statelite statelite rw,user_id=0\n\
            91 22 0:70 / /srv/node rw - tmpfs tmpfs rw\n\
            95 90 0:75 / /srv/node\\040a rw - fuse.statelite statelite rw\n";
        assert_eq!(mountinfo_device(info, b"/srv/node a"), Some((0, 75)));
        // Not a FUSE mount, or no mount at all.
        assert_eq!(mountinfo_device(info, b"/srv/node"), None);
        assert_eq!(mountinfo_device(info, b"/srv"), None);
        assert_eq!(mountinfo_device(b"garbage\n\n- -\n", b"/"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_octal(r"/a\040b\011c\134d"), b"/a b\tc\\d");
        // A backslash not followed by three octal digits stays as it is.
        assert_eq!(unescape_octal(r"/x\9\04"), br"/x\9\04");
    }
}

//! Keeps what systemd-shutdown touches on the root in the kernel's caches.
//!
//! systemd-shutdown spares the root's daemon (`argv[0]` starts with `@`), but its killing
//! spree brackets every round with `kill(-1, SIGSTOP)` ... `kill(-1, SIGCONT)`, and a
//! stopped process cannot be spared: for that moment the FUSE daemon answers nothing. If
//! PID 1 itself then needs an answer from the root, the node hangs for good. In the SIGKILL
//! round it does: `in_initrd()` calls `access("/etc/initrd-release")` (the first time in
//! the freshly exec'd systemd-shutdown), and for each spared process it compares
//! `/proc/<pid>/root` with `/proc/1/root`, a `stat` of the root. Both are answered by the
//! kernel alone while the negative entry for `/etc/initrd-release` and the root's attributes
//! are cached (the filesystem gives them long timeouts), but an image update invalidates
//! cached entries and memory pressure can evict them: that is the hang the end-to-end boot
//! test met after `statelite imgupdate`.
//!
//! So a thread of the daemon repeats those lookups through `/proc/1/root` (PID 1's root,
//! our mount once systemd runs on it) every few tens of milliseconds: a cached lookup costs
//! the kernel a microsecond and sends us nothing; an evicted one is re-cached by the daemon's
//! own workers at once, long before a shutdown could need it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Paths below the root that PID 1 looks up while the daemon may be stopped.
pub const SHUTDOWN_PATHS: &[&str] = &["etc/initrd-release"];

/// Looks up the root and every path of [`SHUTDOWN_PATHS`] below `root` once, so the kernel
/// caches the answers. Returns how many paths exist (normally none).
pub fn touch(root: &Path) -> usize {
    // The root's attributes (what `stat("/proc/1/root")` needs).
    let _ = std::fs::metadata(root);
    SHUTDOWN_PATHS
        .iter()
        // `access(F_OK)`, as systemd does: a lookup, positive or negative.
        .filter(|p| nix::unistd::access(&root.join(p), nix::unistd::AccessFlags::F_OK).is_ok())
        .count()
}

/// Starts the guard thread: [`touch`] on `root` every `interval`, for the life of the
/// process (the root's daemon never ends before the node does).
pub fn spawn(root: PathBuf, interval: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("shutdown-guard".into())
        .spawn(move || {
            loop {
                touch(&root);
                std::thread::sleep(interval);
            }
        })
        .map(|_| ())
}

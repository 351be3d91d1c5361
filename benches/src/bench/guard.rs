//! Everything the harness mounts or starts is registered here, and undone on every exit
//! path: normal return (drop of [`Cleanup`]), panic (the same drop, unwinding), and
//! Ctrl-C / SIGTERM (the signal handler runs [`cleanup_all`] and exits).
//!
//! Unmounts run newest first; started processes are signalled by their pid only.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

enum Item {
    /// A mount point; `mountd` set: unmount with `statelite-mountd umount` first.
    Mount {
        path: PathBuf,
        mountd: Option<PathBuf>,
    },
    /// A process we spawned (a foreground FUSE daemon).
    Proc { child: Child, what: String },
    /// A work directory to remove at the very end.
    Dir(PathBuf),
    /// A kernel parameter file (`/sys/module/...`) and the value to write back.
    Param { path: PathBuf, old: String },
}

static ITEMS: Mutex<Vec<(u64, Item)>> = Mutex::new(Vec::new());
static NEXT: Mutex<u64> = Mutex::new(1);

/// A handle to one registered item; `release` undoes it now (the usual path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

fn push(item: Item) -> Token {
    let mut n = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let id = *n;
    *n += 1;
    ITEMS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, item));
    Token(id)
}

pub fn register_mount(path: &Path, mountd: Option<&Path>) -> Token {
    push(Item::Mount {
        path: path.to_path_buf(),
        mountd: mountd.map(Path::to_path_buf),
    })
}

pub fn register_proc(child: Child, what: &str) -> Token {
    push(Item::Proc {
        child,
        what: what.to_string(),
    })
}

/// Writes `value` to the parameter file `path` for the run; the old value is written back
/// on every exit path.
pub fn set_param(path: &Path, value: &str) -> Result<Token, String> {
    let old = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .to_string();
    std::fs::write(path, value).map_err(|e| format!("{} = {value}: {e}", path.display()))?;
    Ok(push(Item::Param {
        path: path.to_path_buf(),
        old,
    }))
}

pub fn register_dir(path: &Path) -> Token {
    push(Item::Dir(path.to_path_buf()))
}

/// Whether a registered process has exited (and reaps it).
pub fn proc_exited(t: Token) -> Option<std::process::ExitStatus> {
    let mut items = ITEMS.lock().unwrap_or_else(|e| e.into_inner());
    items.iter_mut().find_map(|(id, it)| match it {
        Item::Proc { child, .. } if *id == t.0 => child.try_wait().ok().flatten(),
        _ => None,
    })
}

/// Undoes one item now.
pub fn release(t: Token) -> Result<(), String> {
    let item = {
        let mut items = ITEMS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = items.iter().position(|(id, _)| *id == t.0) else {
            return Ok(());
        };
        items.remove(pos).1
    };
    undo(item)
}

/// Undoes a registered item without holding the lock (so a signal-time cleanup in another
/// thread cannot deadlock on us).
fn undo(item: Item) -> Result<(), String> {
    match item {
        Item::Mount { path, mountd } => unmount(&path, mountd.as_deref()),
        Item::Proc { mut child, what } => {
            stop_child(&mut child, &what);
            Ok(())
        }
        Item::Param { path, old } => std::fs::write(&path, &old)
            .map_err(|e| format!("restoring {} = {old}: {e}", path.display())),
        Item::Dir(p) => {
            let left = mounts_below(&p);
            if !left.is_empty() {
                return Err(format!(
                    "not removing {}: still mounted below it: {left:?}",
                    p.display()
                ));
            }
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| format!("rm -r {}: {e}", p.display()))
            } else {
                Ok(())
            }
        }
    }
}

/// Waits up to 5 s for a daemon to exit on its own (it does once unmounted), then SIGTERM,
/// then SIGKILL, always by its pid.
fn stop_child(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id() as libc::pid_t;
    eprintln!("statelite-bench: {what} (pid {pid}) still running: SIGTERM");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// Mount points at or below `path`, deepest last.
pub fn mounts_below(path: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(path))
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn umount2(path: &Path, flags: i32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::ErrorKind::InvalidInput)?;
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Unmounts `path` (and anything below it). statelite mounts go through
/// `statelite-mountd umount` (symlink mode stacks many mounts); then anything left is
/// unmounted deepest first, lazily as a last resort.
pub fn unmount(path: &Path, mountd: Option<&Path>) -> Result<(), String> {
    if let Some(m) = mountd
        && is_mounted(path)
    {
        let out = std::process::Command::new(m)
            .arg("umount")
            .arg(path)
            .output()
            .map_err(|e| format!("{}: {e}", m.display()))?;
        if !out.status.success() {
            eprintln!(
                "statelite-bench: statelite-mountd umount {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    for _ in 0..50 {
        let mut left = mounts_below(path);
        if left.is_empty() {
            return Ok(());
        }
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in &left {
            if let Err(e) = umount2(p, 0)
                && e.raw_os_error() == Some(libc::EBUSY)
            {
                std::thread::sleep(Duration::from_millis(20));
                if umount2(p, 0).is_err() {
                    let _ = umount2(p, libc::MNT_DETACH);
                }
            }
        }
    }
    if mounts_below(path).is_empty() {
        Ok(())
    } else {
        Err(format!("could not unmount {}", path.display()))
    }
}

/// Undoes everything still registered, newest first.
pub fn cleanup_all() {
    loop {
        let item = {
            let mut items = ITEMS.lock().unwrap_or_else(|e| e.into_inner());
            match items.pop() {
                Some((_, it)) => it,
                None => break,
            }
        };
        if let Err(e) = undo(item) {
            eprintln!("statelite-bench: cleanup: {e}");
        }
    }
}

/// Runs [`cleanup_all`] when dropped (normal return and panics).
pub struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup_all();
    }
}

/// Ctrl-C and SIGTERM: clean up, then exit 130.
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        eprintln!("\nstatelite-bench: interrupted: unmounting and cleaning up");
        cleanup_all();
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_parameter_gets_its_old_value_back_when_released() {
        let dir = std::env::temp_dir().join(format!("bench-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wake_here");
        std::fs::write(&file, "N\n").unwrap();
        let t = set_param(&file, "Y").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "Y");
        release(t).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "N");
        assert!(set_param(&dir.join("absent"), "Y").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

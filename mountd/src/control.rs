//! The control socket `litectl` talks to: one JSON request per line, one JSON answer per
//! line. Requests: `{"cmd":"status"}`, `{"cmd":"which","path":"/etc/motd"}`, `layers`,
//! `diff`, `denied`, `stats`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use statelite_fs::copy_up::is_internal_name;
use statelite_fs::layers::{STATELITE_DIR, StoreKind};
use statelite_fs::overlay::Overlay;
use statelite_fs::rules::RuleSet;
use statelite_fs::sys;

#[derive(Debug, Deserialize)]
struct Request {
    cmd: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    lines: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Change {
    path: String,
    store: &'static str,
    /// "added" (not in the image), "modified" (copied up), "deleted" (whiteout).
    change: &'static str,
}

/// Re-reads the rules for `reload` (from wherever this mount got them).
pub type Reloader = Arc<dyn Fn() -> Result<RuleSet, String> + Send + Sync>;

/// What the control socket serves.
#[derive(Clone)]
pub struct Control {
    pub overlay: Arc<Overlay>,
    pub reload: Option<Reloader>,
    /// The daemon's log file, for `litectl log`: a descriptor opened at start, because
    /// after switch_root the daemon's paths no longer lead anywhere.
    pub log: Option<Arc<std::fs::File>>,
}

/// The socket file a daemon bound, by identity: at exit the daemon removes the path only
/// if it is still this file. A node remounted at once starts a new daemon on the same path
/// while the old one is still exiting; removing by name deleted the new daemon's socket
/// (seen as `litectl`'s "No such file" after the demo's simulated reboot, under load).
#[derive(Debug, Clone, Copy)]
pub struct SocketFile {
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn remove_if_still_ours(&self, path: &std::path::Path) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::symlink_metadata(path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts serving on `path` in a background thread. A socket left at `path` (by a daemon
/// that died, or one exiting now) is replaced; anything else there is an error, and is left
/// alone.
pub fn serve(path: PathBuf, ctl: Control) -> std::io::Result<SocketFile> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => match std::fs::remove_file(&path) {
            // Gone already: the daemon that had it removed it on its way out (checking
            // and then removing raced with that, and the mount failed with ENOENT).
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket (not removed)",
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(&path)?;
    let meta = std::fs::symlink_metadata(&path)?;
    let file = SocketFile {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let ctl = ctl.clone();
                // One short-lived thread per client: litectl sends one request and leaves.
                let _ = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || handle(stream, &ctl));
            }
        })?;
    Ok(file)
}

fn handle(stream: UnixStream, ctl: &Control) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half.take(64 * 1024));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let answer = answer_line(ctl, &line);
    let mut w = stream;
    let _ = writeln!(w, "{answer}");
}

/// Answers one request line (the whole protocol; also what the fuzz target drives).
pub fn answer_line(ctl: &Control, line: &str) -> Value {
    match serde_json::from_str::<Request>(line) {
        Ok(req) => answer(ctl, &req),
        Err(e) => json!({"error": format!("bad request: {e}")}),
    }
}

use std::io::Read;

fn answer(ctl: &Control, req: &Request) -> Value {
    let ov = &*ctl.overlay;
    match req.cmd.as_str() {
        "reload" => match &ctl.reload {
            None => json!({"error": "this mount has no rules source to reload from"}),
            Some(load) => match load().and_then(|rules| ov.reload(rules)) {
                Ok(epoch) => {
                    json!({"reloaded": true, "rules_epoch": epoch, "rules": ov.rs().rules.len()})
                }
                Err(e) => {
                    json!({"error": format!("reload refused, the old rules stay in force: {e}")})
                }
            },
        },
        "log" => match &ctl.log {
            None => json!({"error": "this daemon logs to stderr only (started without --log)"}),
            Some(f) => match read_all_at(f) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let lines: Vec<&str> = text.lines().collect();
                    let n = req.lines.unwrap_or(50).min(10_000);
                    let tail = &lines[lines.len().saturating_sub(n)..];
                    json!({"lines": tail})
                }
                Err(e) => json!({"error": format!("cannot read the log: {e}")}),
            },
        },
        "status" => status(ov),
        "which" => match &req.path {
            Some(p) => match ov.which(p) {
                Ok(info) => serde_json::to_value(info).unwrap_or(Value::Null),
                Err(e) => {
                    json!({"error": format!("{p}: {}", std::io::Error::from_raw_os_error(e.code()))})
                }
            },
            None => json!({"error": "which needs a path"}),
        },
        "layers" => layers(ov),
        "diff" => json!({"changes": diff(ov)}),
        "denied" => {
            let list: Vec<Value> = ov
                .denied
                .snapshot()
                .into_iter()
                .map(|d| {
                    // A path under a read-only row needs that row changed, not a new one.
                    let rs = ov.rs();
                    match rs.rules.lookup(&d.path) {
                        Some(rule) => {
                            let dir = if rule.is_dir { "/" } else { "" };
                            let row = format!("\"ALL\",\"{}{dir}\",\"tmpfs\",,", rule.path);
                            json!({"path": d.path, "op": d.op, "count": d.count, "suggested_litefile_row": row,
                                   "replaces_line": rule.line, "current_options": rule.options_text})
                        }
                        None => {
                            let row = format!("\"ALL\",\"{}{}\",\"tmpfs\",,", d.path, if d.is_dir { "/" } else { "" });
                            json!({"path": d.path, "op": d.op, "count": d.count, "suggested_litefile_row": row})
                        }
                    }
                })
                .collect();
            json!({"denied": list})
        }
        "stats" => serde_json::to_value(ov.stats.snapshot()).unwrap_or(Value::Null),
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// The last 4 MiB of a file, read by offset (the file may be appended to meanwhile).
fn read_all_at(f: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(4 << 20);
    let mut buf = vec![0u8; (len - start) as usize];
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], start + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

fn status(ov: &Overlay) -> Value {
    let l = &ov.layers;
    json!({
        "mode": "fuse",
        "pid": std::process::id(),
        "image": l.paths.image,
        "image_name": ov.rs().rules.image(),
        "liteimg_image": l.is_liteimg(),
        "rules": ov.rs().rules.len(),
        "rules_epoch": ov.rs().epoch,
        "passthrough": ov.passthrough_active(),
        "transport": if ov.rings.get().is_some() { "io_uring" } else { "/dev/fuse" },
        // "idle": SCHED_IDLE, replies stay on the caller's CPU; "normal": CPUs contended
        // (see `ring::Rings`); null without the ring.
        "ring_threads": match ov.rings.get() {
            None => Value::Null,
            Some(r) if r.idle_policy() => json!("idle"),
            Some(_) => json!("normal"),
        },
        // One per CPU, plus the spares stalled queues were given (see `ring::Rings`).
        "ring_thread_count": ov.rings.get().map(|r| r.threads()),
        "ring_spares": ov.rings.get().map(|r| r.spares()),
        "inodes": ov.inodes().len(),
        "generation": statelite_fs::mount::read_generation(l),
        "degraded": l.store(StoreKind::Persistent).is_none(),
        "persistent": l.paths.state,
    })
}

fn layers(ov: &Overlay) -> Value {
    let l = &ov.layers;
    let mut v = vec![json!({"layer": "image", "path": l.paths.image, "writable": false})];
    for (i, t) in l.paths.trees.iter().enumerate() {
        v.push(json!({"layer": format!("litetree[{}]", i + 1), "path": t, "writable": false}));
    }
    v.push(json!({"layer": "volatile", "path": l.paths.volatile, "writable": true}));
    v.push(
        json!({"layer": "persistent", "path": l.paths.state, "writable": l.paths.state.is_some()}),
    );
    if let Some(p) = &l.paths.localdisk {
        v.push(json!({"layer": "localdisk", "path": p, "writable": true}));
    }
    json!({"layers": v})
}

/// Every path in the stores, classified against the image and litetree origins.
fn diff(ov: &Overlay) -> Vec<Change> {
    let mut out = Vec::new();
    for (kind, name) in [
        (StoreKind::Volatile, "volatile"),
        (StoreKind::Persistent, "persistent"),
        (StoreKind::LocalDisk, "localdisk"),
    ] {
        if let Some(root) = ov.layers.store(kind) {
            walk(ov, root, Path::new(""), name, &mut out, 0);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn walk(
    ov: &Overlay,
    dir: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    store: &'static str,
    out: &mut Vec<Change>,
    depth: usize,
) {
    if depth > 256 {
        return;
    }
    let Ok(entries) = sys::read_dir(dir) else {
        return;
    };
    for (name, dtype, _) in entries {
        if is_internal_name(&name) || (depth == 0 && name == STATELITE_DIR.as_bytes()) {
            continue;
        }
        let Ok(c) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        let child_rel =
            rel.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name));
        let path = format!("/{}", child_rel.display());
        let Ok(st) = sys::stat_at(dir, &c) else {
            continue;
        };
        if sys::is_whiteout_at(dir, &c, &st) {
            out.push(Change {
                path,
                store,
                change: "deleted",
            });
            continue;
        }
        let in_origin = ov.layers.origin(&child_rel.to_string_lossy()).is_some();
        let is_dir = dtype == libc::DT_DIR || sys::file_type(st.st_mode) == libc::S_IFDIR;
        if is_dir {
            // A directory mirrored only to hold changed entries is not itself a change.
            if !in_origin {
                out.push(Change {
                    path,
                    store,
                    change: "added",
                });
            }
            if let Ok(fd) = sys::open_at(dir, &c, libc::O_PATH | libc::O_DIRECTORY) {
                walk(ov, fd.as_fd(), &child_rel, store, out, depth + 1);
            }
        } else {
            out.push(Change {
                path,
                store,
                change: if in_origin { "modified" } else { "added" },
            });
        }
    }
}

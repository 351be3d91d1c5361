//! `litectl`: inspect a running statelite root through the daemon's control socket.
//!
//! The protocol is one JSON request line, one JSON answer line (see
//! `statelite_mountd::control`). This client only formats: every answer is rendered from the
//! JSON the server sent, so fields the server adds later still show (as `key: value` lines)
//! instead of being dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Where `statelite-mountd` puts the socket on a booted node.
const DEFAULT_SOCKET: &str = "/.statelite/control.sock";

/// Long enough for `diff` on a big persistent store, short enough that a wedged daemon does
/// not hang an admin's shell (or a monitoring script) forever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "litectl",
    version,
    about = "Inspect a running statelite root (layers, rules, changes, denied writes, stats)",
    long_about = "Inspect a running statelite root through statelite-mountd's control socket.\n\n\
                  On a statelite node the socket is /.statelite/control.sock. For a root \
                  mounted by hand with `statelite-mountd mount --control SOCK`, pass \
                  --socket SOCK.\n\n\
                  Output is a human-readable table; --json prints the daemon's JSON answer \
                  unchanged (one line), for scripts.",
    after_help = "Examples:\n  \
                  litectl status\n  \
                  litectl which /etc/ntp.conf      # which rule and layer serve a path\n  \
                  litectl diff                     # what this node changed (like git status)\n  \
                  litectl denied                   # writes refused as read-only, with litefile rows\n  \
                  litectl --json stats | jq .ops\n\n\
                  Exit status: 0 on success, 1 when the daemon cannot be reached or answers \
                  with an error, 2 on a usage error."
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "LITECTL_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    socket: PathBuf,

    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mode, image, rule count, image generation, persistent store, degraded or not.
    Status,
    /// Which litefile rule governs PATH, which layer serves it, whether it was copied up.
    Which {
        /// A path as the node sees it (absolute, inside the statelite root), e.g. /etc/motd.
        path: String,
    },
    /// The layers of the root (image, litetree sources, stores) and where they live.
    Layers,
    /// Every path this node changed against the image: M modified, A added, D deleted.
    Diff,
    /// Writes refused with EROFS (outside writable areas), with suggested litefile rows.
    Denied,
    /// Per-operation counts, errors and mean latency; copy-up, cache and passthrough counters.
    Stats,
    /// Re-read the litefile and apply it live, without remounting.
    ///
    /// A litefile that breaks the rules is refused and the old rules stay in force; open
    /// files are not disturbed.
    Reload,
    /// Show the last lines of the daemon's log file (mounts made with --log).
    Log {
        /// How many lines, newest last.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
    },
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("is statelite-mountd running? no control socket at {}", .0.display())]
    NoSocket(PathBuf),
    #[error(
        "is statelite-mountd running? {} exists but refuses connections (a stale socket from a daemon that exited)",
        .0.display()
    )]
    Refused(PathBuf),
    #[error("permission denied on {} (litectl usually needs root)", .0.display())]
    Permission(PathBuf),
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {}: the daemon closed the connection without answering", .0.display())]
    NoAnswer(PathBuf),
    #[error("control socket {}: unreadable answer ({source}): {line}", path.display())]
    BadAnswer {
        path: PathBuf,
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// The daemon understood the connection but refused or failed the request.
    #[error("statelite-mountd: {0}")]
    Server(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("litectl: {e}");
            // Same convention as clap's own usage errors, so scripts can tell a typo from a
            // daemon that said no.
            if matches!(e, Error::Usage(_)) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: &Cli) -> Result<(), Error> {
    let request = match &cli.command {
        Cmd::Status => json!({"cmd": "status"}),
        Cmd::Which { path } => {
            // The daemon resolves from the root it serves; a relative path would silently
            // mean something else than the admin's current directory.
            if !path.starts_with('/') {
                return Err(Error::Usage(format!(
                    "which: {path:?} is not absolute; give the path as the node sees it, e.g. /etc/motd"
                )));
            }
            json!({"cmd": "which", "path": path})
        }
        Cmd::Layers => json!({"cmd": "layers"}),
        Cmd::Diff => json!({"cmd": "diff"}),
        Cmd::Denied => json!({"cmd": "denied"}),
        Cmd::Stats => json!({"cmd": "stats"}),
        Cmd::Reload => json!({"cmd": "reload"}),
        Cmd::Log { lines } => json!({"cmd": "log", "lines": lines}),
    };
    let (line, answer) = ask(&cli.socket, &request)?;
    let server_error = answer.get("error").map(|e| match e {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if cli.json {
        // Scripts get the answer as sent, errors included, and the exit status says which.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line.trim_end());
        return server_error.map_or(Ok(()), |e| Err(Error::Server(e)));
    }
    if let Some(e) = server_error {
        return Err(Error::Server(e));
    }
    let text = match &cli.command {
        Cmd::Status => render_status(&answer),
        Cmd::Which { .. } => render_which(&answer),
        Cmd::Layers => render_layers(&answer),
        Cmd::Diff => render_diff(&answer),
        Cmd::Denied => render_denied(&answer),
        Cmd::Stats => render_stats(&answer),
        Cmd::Reload => render_reload(&answer),
        Cmd::Log { .. } => render_log(&answer),
    };
    // A closed pipe (`litectl diff | head`) is not an error worth a message.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// Sends one request and reads the one-line answer; returns the raw line and its parse.
fn ask(socket: &Path, request: &Value) -> Result<(String, Value), Error> {
    let io = |source| Error::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NoSocket(socket.to_path_buf()),
        std::io::ErrorKind::ConnectionRefused => Error::Refused(socket.to_path_buf()),
        std::io::ErrorKind::PermissionDenied => Error::Permission(socket.to_path_buf()),
        _ => io(e),
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    writeln!(stream, "{request}").map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    if line.trim().is_empty() {
        return Err(Error::NoAnswer(socket.to_path_buf()));
    }
    let value = serde_json::from_str(&line).map_err(|source| Error::BadAnswer {
        path: socket.to_path_buf(),
        line: line.trim_end().to_string(),
        source,
    })?;
    Ok((line, value))
}

// ---------------------------------------------------------------------------------------
// Rendering. Each function takes the server's JSON and returns the text to print.

/// A value as an admin wants to read it: strings bare, null as "-", booleans as yes/no.
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// `label: value` lines with the values aligned.
fn key_values(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
    }
    s
}

/// Keys of `obj` not in `known`, as extra rows: new server fields show up instead of
/// vanishing.
fn extra_rows(obj: &Value, known: &[&str]) -> Vec<(String, String)> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.replace('_', " "), plain(v)))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// An aligned table with a header row; the last column is never padded (no trailing blanks).
fn table(headers: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let right = matches!(align.get(i), Some(Align::Right));
            let cell = match (right, i == last) {
                (true, _) => format!("{c:>w$}"),
                (false, true) => c.clone(),
                (false, false) => format!("{c:<w$}"),
            };
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&cell);
        }
        s.push('\n');
        s
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// A `LayerId` as serialised by the daemon (`{"layer":"tree","index":0}`), named the way
/// `litectl layers` lists it (`litetree[1]`, counting from 1 like the litetree priorities).
fn layer_name(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Object(m) => match m.get("layer").and_then(Value::as_str) {
            Some("tree") => match m.get("index").and_then(Value::as_u64) {
                Some(i) => format!("litetree[{}]", i + 1),
                None => "litetree".into(),
            },
            Some(name) => name.to_string(),
            None => v.to_string(),
        },
        other => plain(other),
    }
}

fn render_status(v: &Value) -> String {
    let mut image = plain(field(v, "image"));
    if let Some(name) = v
        .get("image_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        image.push_str(&format!(" (image name {name})"));
    }
    let persistent = match field(v, "persistent") {
        Value::Null => "none (persistent paths are read-only)".into(),
        p => plain(p),
    };
    let degraded = match field(v, "degraded") {
        Value::Bool(true) => {
            "YES: persistent storage unavailable, persistent paths read-only".into()
        }
        other => plain(other),
    };
    let mut rows = vec![
        ("mode".into(), plain(field(v, "mode"))),
        ("image".into(), image),
        (
            "liteimg-rewritten image".into(),
            plain(field(v, "liteimg_image")),
        ),
        ("litefile rules".into(), plain(field(v, "rules"))),
        (
            "rules epoch (reloads)".into(),
            plain(field(v, "rules_epoch")),
        ),
        (
            "image generation".into(),
            match field(v, "generation") {
                Value::Null => "- (never bumped)".into(),
                g => plain(g),
            },
        ),
        ("persistent store".into(), persistent),
        ("degraded".into(), degraded),
        ("FUSE passthrough".into(), plain(field(v, "passthrough"))),
        ("FUSE transport".into(), plain(field(v, "transport"))),
        (
            "FUSE ring threads".into(),
            match field(v, "ring_threads").as_str() {
                Some("idle") => "SCHED_IDLE (replies stay on the caller's CPU)".into(),
                Some("normal") => "normal scheduling (they waited for busy CPUs)".into(),
                Some(other) => other.to_string(),
                None => "- (no ring)".into(),
            },
        ),
        (
            "FUSE ring threads, count".into(),
            match (field(v, "ring_thread_count"), field(v, "ring_spares")) {
                (Value::Null, _) => "- (no ring)".into(),
                (n, Value::Number(s)) if s.as_u64() == Some(0) => {
                    format!("{} (one per CPU)", plain(n))
                }
                (n, s) => format!(
                    "{} (one per CPU, plus {} spares for queues a slow request held)",
                    plain(n),
                    plain(s)
                ),
            },
        ),
        ("inodes in use".into(), plain(field(v, "inodes"))),
    ];
    rows.extend(extra_rows(
        v,
        &[
            "mode",
            "image",
            "image_name",
            "liteimg_image",
            "rules",
            "rules_epoch",
            "generation",
            "persistent",
            "degraded",
            "passthrough",
            "transport",
            "ring_threads",
            "ring_thread_count",
            "ring_spares",
            "inodes",
        ],
    ));
    key_values(&rows)
}

/// A rule as `"/etc/ntp.conf" tmpfs (blank), litefile line 3`.
fn rule_text(rule: &Value) -> String {
    if rule.is_null() {
        return "none: not in the litefile, so the read-only image (locked down)".into();
    }
    let path = plain(field(rule, "path"));
    let storage = rule
        .get("options")
        .and_then(|o| o.get("storage"))
        .map(plain)
        .unwrap_or_else(|| "?".into());
    let text = rule
        .get("options_text")
        .and_then(Value::as_str)
        .unwrap_or("");
    let options = if text.is_empty() {
        format!("{storage} (blank options)")
    } else if text == storage {
        storage
    } else {
        format!("{storage} ({text})")
    };
    let dir = if field(rule, "is_dir") == &Value::Bool(true) && !path.ends_with('/') {
        "/"
    } else {
        ""
    };
    let mut s = format!("\"{path}{dir}\" {options}");
    if let Some(line) = rule.get("line").and_then(Value::as_u64) {
        s.push_str(&format!(", litefile line {line}"));
    }
    if field(rule, "image_specific") == &Value::Bool(true) {
        s.push_str(", image-specific row");
    }
    s
}

fn render_which(v: &Value) -> String {
    let mut rows = vec![
        ("path".into(), plain(field(v, "path"))),
        ("rule".into(), rule_text(field(v, "rule"))),
        ("area".into(), plain(field(v, "area"))),
        ("served from".into(), layer_name(field(v, "served_from"))),
        ("copied up".into(), plain(field(v, "copied_up"))),
        ("origin".into(), layer_name(field(v, "origin"))),
    ];
    rows.extend(extra_rows(
        v,
        &["path", "rule", "area", "served_from", "copied_up", "origin"],
    ));
    key_values(&rows)
}

fn render_layers(v: &Value) -> String {
    let rows: Vec<Vec<String>> = array(v, "layers")
        .iter()
        .map(|l| {
            let path = match field(l, "path") {
                Value::Null => "(none: degraded)".into(),
                p => plain(p),
            };
            let access = if field(l, "writable") == &Value::Bool(true) {
                "rw"
            } else {
                "ro"
            };
            vec![plain(field(l, "layer")), access.into(), path]
        })
        .collect();
    table(
        &["LAYER", "ACCESS", "PATH"],
        &[Align::Left, Align::Left, Align::Left],
        &rows,
    )
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn render_diff(v: &Value) -> String {
    let changes = array(v, "changes");
    if changes.is_empty() {
        return "no changes: this node's root matches the image\n".into();
    }
    let width = changes
        .iter()
        .map(|c| plain(field(c, "path")).chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for c in changes {
        let letter = match field(c, "change").as_str() {
            Some("modified") => "M",
            Some("added") => "A",
            Some("deleted") => "D",
            _ => "?",
        };
        let path = plain(field(c, "path"));
        let store = plain(field(c, "store"));
        s.push_str(&format!("{letter} {path:<width$}  ({store})\n"));
    }
    s
}

fn render_denied(v: &Value) -> String {
    let denied = array(v, "denied");
    if denied.is_empty() {
        return "no writes denied: nothing tried to change the read-only image\n".into();
    }
    let rows: Vec<Vec<String>> = denied
        .iter()
        .map(|d| {
            vec![
                plain(field(d, "count")),
                plain(field(d, "op")),
                plain(field(d, "path")),
            ]
        })
        .collect();
    let mut s = table(
        &["COUNT", "OP", "PATH"],
        &[Align::Right, Align::Left, Align::Left],
        &rows,
    );
    s.push_str(
        "\nTo make these writable, add rows like these to the litefile table \
         (tabedit litefile; choose persistent if the data must survive a reboot):\n\
         #image,file,options,comments,disable\n",
    );
    for d in denied {
        if let Some(row) = d.get("suggested_litefile_row").and_then(Value::as_str) {
            s.push_str(row);
            s.push('\n');
        }
    }
    s
}

fn render_stats(v: &Value) -> String {
    let mut ops: Vec<&Value> = array(v, "ops").iter().collect();
    // Busiest first: that is what an admin looking for a hot spot reads.
    ops.sort_by_key(|o| std::cmp::Reverse(field(o, "count").as_u64().unwrap_or(0)));
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            let mean = field(o, "mean_us")
                .as_f64()
                .map_or_else(|| "-".into(), |m| format!("{m:.1}"));
            vec![
                plain(field(o, "op")),
                plain(field(o, "count")),
                plain(field(o, "errors")),
                mean,
            ]
        })
        .collect();
    let mut s = if rows.is_empty() {
        "no operations yet\n".to_string()
    } else {
        table(
            &["OP", "COUNT", "ERRORS", "MEAN µs"],
            &[Align::Left, Align::Right, Align::Right, Align::Right],
            &rows,
        )
    };
    s.push('\n');
    let mut counters = vec![
        ("copy-ups".to_string(), plain(field(v, "copy_ups"))),
        (
            "passthrough opens".into(),
            plain(field(v, "passthrough_opens")),
        ),
        (
            "passthrough opens on a kept backing".into(),
            plain(field(v, "kept_backing_opens")),
        ),
        (
            "direct opens (through the daemon)".into(),
            plain(field(v, "direct_opens")),
        ),
        (
            "negative entries cached".into(),
            plain(field(v, "negative_entries")),
        ),
        (
            "image probes saved (name known absent)".into(),
            plain(field(v, "origin_probes_saved")),
        ),
        (
            "listed entries sent by name only".into(),
            plain(field(v, "name_only_entries")),
        ),
        (
            "directories read ahead of a walk".into(),
            plain(field(v, "dirs_read_ahead")),
        ),
        (
            "small files' data read ahead of a walk".into(),
            plain(field(v, "files_read_ahead")),
        ),
        (
            "kernel cache invalidations".into(),
            plain(field(v, "invalidations")),
        ),
        (
            "image generation bumps".into(),
            plain(field(v, "generation_bumps")),
        ),
    ];
    counters.extend(extra_rows(
        v,
        &[
            "ops",
            "copy_ups",
            "passthrough_opens",
            "kept_backing_opens",
            "direct_opens",
            "negative_entries",
            "origin_probes_saved",
            "name_only_entries",
            "dirs_read_ahead",
            "files_read_ahead",
            "invalidations",
            "generation_bumps",
        ],
    ));
    s.push_str(&key_values(&counters));
    s
}

fn render_reload(v: &Value) -> String {
    // The daemon answers {"reloaded":true,"rules":N,"rules_epoch":E}; anything else it adds
    // is shown too.
    let mut s = match (v.get("rules"), v.get("rules_epoch")) {
        (Some(n), Some(e)) => format!(
            "rules reloaded: {} litefile rules in force (rules epoch {})\n",
            plain(n),
            plain(e)
        ),
        _ => "rules reloaded\n".to_string(),
    };
    s.push_str(&key_values(&extra_rows(
        v,
        &["reloaded", "rules", "rules_epoch"],
    )));
    s
}

fn render_log(v: &Value) -> String {
    // The daemon answers {"log": FILE, "lines": [...]}, oldest first.
    if let Some(lines) = v.get("lines").and_then(Value::as_array) {
        if lines.is_empty() {
            return format!("no lines in {}\n", plain(field(v, "log")));
        }
        let mut s = String::new();
        for l in lines {
            s.push_str(&plain(l));
            s.push('\n');
        }
        return s;
    }
    key_values(&extra_rows(v, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_is_git_status_like_and_aligned() {
        let v = json!({"changes": [
            {"change": "modified", "path": "/etc/license", "store": "persistent"},
            {"change": "added", "path": "/tmp/new", "store": "volatile"},
            {"change": "deleted", "path": "/var/log/messages", "store": "volatile"},
        ]});
        let s = render_diff(&v);
        assert_eq!(
            s,
            "M /etc/license       (persistent)\n\
             A /tmp/new           (volatile)\n\
             D /var/log/messages  (volatile)\n"
        );
    }

    #[test]
    fn tree_layers_count_from_one() {
        assert_eq!(
            layer_name(&json!({"layer": "tree", "index": 0})),
            "litetree[1]"
        );
        assert_eq!(layer_name(&json!({"layer": "volatile"})), "volatile");
        assert_eq!(layer_name(&Value::Null), "-");
    }

    #[test]
    fn table_aligns_and_has_no_trailing_blanks() {
        let s = table(
            &["A", "BB"],
            &[Align::Right, Align::Left],
            &[vec!["100".into(), "x".into()]],
        );
        assert_eq!(s, "  A  BB\n100  x\n");
    }

    #[test]
    fn unknown_fields_are_shown() {
        let s = render_status(&json!({"mode": "fuse", "new_thing": 3}));
        assert!(s.contains("new thing:"), "{s}");
    }

    #[test]
    fn blank_options_are_explained() {
        let r = json!({"path": "/etc/ntp.conf", "is_dir": false, "line": 3,
            "options": {"storage": "tmpfs", "method": "link"}, "options_text": ""});
        assert_eq!(
            rule_text(&r),
            "\"/etc/ntp.conf\" tmpfs (blank options), litefile line 3"
        );
    }
}

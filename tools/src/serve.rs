//! `statelite serve`: the query service diskless nodes ask for their rules at boot
//! (`XCAT=<host>:<port>` on the kernel line) and again on `litectl reload`.
//!
//! # Protocol (version 1)
//!
//! Plain TCP, one request per connection, so a node needs nothing but a socket:
//!
//! * The node sends one line of at most [`MAX_REQUEST`] bytes:
//!   `STATELITE-RULES 1 <node>\n`.
//! * The service answers with one line of JSON and closes the connection:
//!   `{"version":1,"ok":true,"node":..,"image":..,"litefile":[{"image","file","options"}],
//!   "litefile_text":"<tabdump>","litetree":[{"priority","dir","mntopts"}],
//!   "statemnt":"srv:/path"|null,"statemnt_mntopts":..|null,"state_dir":"srv:/path/<node>"|null}`
//!   or `{"version":1,"ok":false,"error":"...","retry":false}`. `retry: true` means "busy,
//!   come back later" (the client backs off with jitter); `false` is a refusal or an error
//!   in the tables that waiting will not fix.
//!
//! `litefile` holds the rows in force for the node's image after precedence (a row naming
//! the image beats an `ALL` row for the same path), `litefile_text` the same rows as a
//! `tabdump litefile`. `litetree` is in search order with every variable expanded for the
//! node. `statemnt` is the state export (the node mounts it and uses its own
//! subdirectory, `state_dir`); null when no `statelite` row applies.
//!
//! # Who gets an answer
//!
//! * The node is known by the source address of the connection: the request must name a
//!   node whose `hosts.ip` is that address. A request naming another node (a node asking
//!   about its neighbour, or anyone guessing names) is refused and logged.
//! * `policy` must allow the node each of the commands `litefile`, `litetree` and
//!   `statelite`, the way xCAT reads that table: rows in ascending numeric priority, the
//!   first row whose `name`, `host`, `commands` and `noderange` all match decides
//!   (`allow`/`accept`/`trusted` allow, anything else denies); no matching row denies.
//!   Empty or `*` matches anything. statelite does not evaluate `parameters` or `time`:
//!   an allow row that sets them never matches and a deny row that sets them always
//!   matches, so an unsupported qualifier can only make the service stricter.
//!
//! # Tables
//!
//! Each worker keeps the tables it loaded while none of the files changed (size, mtime,
//! ctime, inode of every `<table>.csv`); any edit — `chtab`, `tabrestore`, an editor — is
//! seen by the next request with nothing to restart.
//!
//! # Bounds
//!
//! A fixed pool of worker threads takes connections from a bounded queue; when the queue
//! is full the connection is answered "busy" at once instead of piling up. Every socket
//! has read and write timeouts, requests are size-limited, and nothing on the input path
//! can panic: a bad request gets an error line.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use statelite_fs::rules::{RuleSet, parse_litefile};
use statelite_fs::tabfile::{Row, Table};
use tracing::{debug, info, warn};

use crate::db::{Db, SCHEMAS};
use crate::vars;

/// The request keyword.
pub const REQUEST_WORD: &str = "STATELITE-RULES";
/// The protocol version this service speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted, newline included.
pub const MAX_REQUEST: usize = 512;
/// The port xCAT's nodes use for `XCAT=`.
pub const DEFAULT_PORT: u16 = 3001;

/// Run the query service nodes use at boot (XCAT=<host>:<port>).
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    statelite serve                          # 127.0.0.1:3001\n  \
    statelite serve --listen 10.0.0.1:3001\n\n\
    A node sends 'STATELITE-RULES 1 <node>' on one line and gets one line of JSON: its \
    image, the litefile rows for that image, its litetree (variables expanded) and its \
    state export. It is answered only about itself (its hosts.ip must be the address it \
    connects from) and only as the policy table allows the commands litefile, litetree \
    and statelite; every refusal is logged. Table edits apply to the next request.")]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    pub listen: SocketAddr,
    /// Worker threads answering requests.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Connections that may wait for a worker; more are answered "busy" at once.
    #[arg(long, default_value_t = 4096)]
    pub queue: usize,
    /// Seconds a client may take to send its request (and to read the answer).
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

/// Service settings (the CLI's, or a test's).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub queue: usize,
    pub timeout: Duration,
}

impl ServeArgs {
    pub fn config(&self) -> Result<ServeConfig, String> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(format!(
                "--timeout {}: expected a positive number of seconds",
                self.timeout
            ));
        }
        Ok(ServeConfig {
            listen: self.listen,
            workers: self.workers.clamp(1, 1024),
            queue: self.queue.clamp(1, 1 << 20),
            timeout: Duration::from_secs_f64(self.timeout.min(3600.0)),
        })
    }

    /// `statelite serve`: serves until killed.
    pub fn run(&self, tables: &Path) -> Result<ExitCode, String> {
        let filter = tracing_subscriber::EnvFilter::try_from_env("STATELITE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // A second init (tests) is not an error worth failing over.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .try_init();
        let cfg = self.config()?;
        let server = Server::start(tables, &cfg)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        info!(
            "statelite serve: listening on {} ({} workers), tables in {}",
            server.local_addr(),
            cfg.workers,
            tables.display()
        );
        server.wait();
        Ok(ExitCode::SUCCESS)
    }
}

/// A running service: the accept thread and the workers.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    pub stats: Arc<ServeStats>,
}

/// Counters, for tests and the log.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub answered: AtomicU64,
    pub refused: AtomicU64,
    pub busy: AtomicU64,
    pub bad_requests: AtomicU64,
}

impl Server {
    /// Binds and starts serving the tables in `tables`.
    pub fn start(tables: &Path, cfg: &ServeConfig) -> io::Result<Server> {
        let listener = bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServeStats::default());
        let (tx, rx) = sync_channel::<TcpStream>(cfg.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let rx = Arc::clone(&rx);
            let tables = tables.to_path_buf();
            let stats = Arc::clone(&stats);
            let timeout = cfg.timeout;
            workers.push(
                std::thread::Builder::new()
                    .name(format!("serve-{i}"))
                    .spawn(move || worker(&rx, &tables, timeout, &stats))?,
            );
        }
        let acceptor = {
            let stop = Arc::clone(&stop);
            let stats = Arc::clone(&stats);
            let timeout = cfg.timeout;
            std::thread::Builder::new()
                .name("serve-accept".into())
                .spawn(move || accept_loop(&listener, &tx, &stop, &stats, timeout))?
        };
        Ok(Server {
            addr,
            stop,
            acceptor: Some(acceptor),
            workers,
            stats,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the service stops (it stops only on [`Server::shutdown`]).
    pub fn wait(mut self) {
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Stops accepting, lets the workers finish what is queued, and joins every thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let wake = match self.addr.ip() {
            ip if ip.is_unspecified() => SocketAddr::new(
                if self.addr.is_ipv4() {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
                },
                self.addr.port(),
            ),
            _ => self.addr,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // The acceptor dropped the sender: workers drain the queue and end.
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A listening socket with a deep backlog: a rack powering on at once opens thousands of
/// connections within a second, and the kernel should queue them rather than drop them.
/// (std listens with a backlog of 128; on Linux a second `listen(2)` raises it in place.)
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use nix::sys::socket::{Backlog, listen};
    let listener = TcpListener::bind(addr)?;
    let backlog = Backlog::new(4096).unwrap_or(Backlog::MAXCONN);
    listen(&listener, backlog).map_err(io::Error::from)?;
    Ok(listener)
}

fn accept_loop(
    listener: &TcpListener,
    tx: &SyncSender<TcpStream>,
    stop: &AtomicBool,
    stats: &ServeStats,
    timeout: Duration,
) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                // EMFILE and friends: pause instead of spinning, then carry on.
                warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match tx.try_send(stream) {
            Ok(()) => {}
            Err(TrySendError::Full(mut stream)) => {
                stats.busy.fetch_add(1, Ordering::Relaxed);
                debug!("{peer}: queue full, answered busy");
                let _ = stream.set_write_timeout(Some(timeout.min(Duration::from_secs(1))));
                let _ = stream.write_all(&error_line("busy: too many nodes asking at once", true));
                let _ = stream.shutdown(Shutdown::Both);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn worker(rx: &Mutex<Receiver<TcpStream>>, tables: &Path, timeout: Duration, stats: &ServeStats) {
    let mut cache = TableCache::new(tables);
    loop {
        // The lock is held only while waiting for the next connection.
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(stream) = next else {
            return;
        };
        handle(stream, &mut cache, timeout, stats);
    }
}

/// Why a request was not answered.
#[derive(Debug)]
enum Failure {
    /// Malformed request (client bug or garbage).
    Bad(String),
    /// Identity or policy: refused and logged.
    Refused(String),
    /// The tables are broken for this node.
    Tables(String),
}

fn handle(stream: TcpStream, cache: &mut TableCache, timeout: Duration, stats: &ServeStats) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return, // already gone
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let peer_ip = peer.ip().to_canonical();
    let outcome = read_request(&stream).and_then(|node| {
        let (db, ranges) = cache.get();
        let answer = answer(db, ranges, &node, peer_ip);
        answer.map(|a| (node, a))
    });
    let line = match &outcome {
        Ok((node, a)) => {
            stats.answered.fetch_add(1, Ordering::Relaxed);
            info!(
                "{peer}: {node}: image {}, {} litefile rows, {} litetree dirs, state {} ({:.1} ms)",
                a.image,
                a.litefile.len(),
                a.litetree.len(),
                a.statemnt.as_deref().unwrap_or("none"),
                started.elapsed().as_secs_f64() * 1e3
            );
            let mut v = serde_json::to_vec(a).unwrap_or_else(|e| {
                // Serialising plain strings cannot fail; answer an error rather than panic.
                error_line(&format!("internal error: {e}"), false)
            });
            if v.last() != Some(&b'\n') {
                v.push(b'\n');
            }
            v
        }
        Err(Failure::Bad(why)) => {
            stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            warn!("{peer}: bad request: {why}");
            error_line(&format!("bad request: {why}"), false)
        }
        Err(Failure::Refused(why)) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!("{peer}: REFUSED: {why}");
            error_line(&format!("refused: {why}"), false)
        }
        Err(Failure::Tables(why)) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!("{peer}: cannot answer: {why}");
            error_line(why, false)
        }
    };
    let mut s = &stream;
    if let Err(e) = s.write_all(&line) {
        debug!("{peer}: writing the answer: {e}");
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn error_line(message: &str, retry: bool) -> Vec<u8> {
    let v = serde_json::json!({
        "version": PROTOCOL_VERSION,
        "ok": false,
        "error": message,
        "retry": retry,
    });
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Reads and parses the request line: the node name asked about.
fn read_request(stream: &TcpStream) -> Result<String, Failure> {
    let mut line = Vec::with_capacity(64);
    let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64));
    reader.read_until(b'\n', &mut line).map_err(|e| {
        Failure::Bad(match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "timed out waiting for the request line".to_string()
            }
            _ => format!("reading the request: {e}"),
        })
    })?;
    if line.last() != Some(&b'\n') {
        return Err(Failure::Bad(if line.len() >= MAX_REQUEST {
            format!("longer than {MAX_REQUEST} bytes")
        } else {
            "no complete request line".into()
        }));
    }
    parse_request(&line)
}

/// `STATELITE-RULES 1 <node>`.
fn parse_request(line: &[u8]) -> Result<String, Failure> {
    let text = std::str::from_utf8(line).map_err(|_| Failure::Bad("not UTF-8".into()))?;
    let mut words = text.split_ascii_whitespace();
    let (Some(word), Some(version), Some(node), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(Failure::Bad(format!(
            "expected '{REQUEST_WORD} {PROTOCOL_VERSION} <node>'"
        )));
    };
    if word != REQUEST_WORD {
        return Err(Failure::Bad(format!("unknown request {:?}", clip(word))));
    }
    if version != PROTOCOL_VERSION.to_string() {
        return Err(Failure::Bad(format!(
            "protocol version {:?} (this service speaks {PROTOCOL_VERSION})",
            clip(version)
        )));
    }
    if node.len() > 255
        || node.starts_with('-')
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Failure::Bad(format!("{:?} is not a node name", clip(node))));
    }
    Ok(node.to_string())
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

// ---------------------------------------------------------------------------------------
// The answer.

/// One litefile row in force for the node's image.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    /// The image name when the row names it, else `ALL`.
    pub image: String,
    /// The path; a trailing `/` marks a directory.
    pub file: String,
    pub options: String,
}

/// One litetree directory, expanded for the node.
#[derive(Debug, Clone, Serialize)]
pub struct TreeDir {
    pub priority: String,
    /// `[server:]/path`.
    pub dir: String,
    pub mntopts: Option<String>,
}

/// What a node is told (protocol version 1, `ok: true`).
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub version: u32,
    pub ok: bool,
    pub node: String,
    pub image: String,
    pub litefile: Vec<FileRow>,
    pub litefile_text: String,
    pub litetree: Vec<TreeDir>,
    pub statemnt: Option<String>,
    pub statemnt_mntopts: Option<String>,
    pub state_dir: Option<String>,
}

/// The whole decision for one request: identity, policy, then the rules.
fn answer(db: &Db, ranges: &mut RangeMemo, node: &str, peer: IpAddr) -> Result<Answer, Failure> {
    let tables = |e: &dyn std::fmt::Display| Failure::Tables(format!("node {node}: {e}"));
    let index = db.node_index().map_err(|e| tables(&e))?;
    if !index.is_node(node) {
        return Err(Failure::Refused(format!(
            "{node} is not a node in nodelist (asked from {peer})"
        )));
    }
    let ip = db
        .node_attr(node, "hosts", "ip")
        .map_err(|e| tables(&e))?
        .ok_or_else(|| {
            Failure::Refused(format!(
                "{node} has no hosts.ip, so no address may ask about it (asked from {peer})"
            ))
        })?;
    let node_ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| Failure::Refused(format!("{node}: hosts.ip {ip:?} is not an IP address")))?;
    if node_ip.to_canonical() != peer {
        return Err(Failure::Refused(format!(
            "request about {node} from {peer}, which is not {node}'s address ({node_ip})"
        )));
    }
    for command in ["litefile", "litetree", "statelite"] {
        match policy_allows(db, ranges, node, peer, command).map_err(|e| tables(&e))? {
            Decision::Allow => {}
            Decision::Deny(why) => {
                return Err(Failure::Refused(format!(
                    "policy denies {command} to {node}: {why}"
                )));
            }
        }
    }
    let image = vars::image_of(db, node).map_err(|e| tables(&e))?;

    let loaded = db.table("litefile").map_err(|e| tables(&e))?;
    let rows = parse_litefile(&loaded.table, &loaded.path).map_err(|e| tables(&e))?;
    let rules = RuleSet::for_image(&rows, &image);
    if let Some(v) = rules.violations().first() {
        // The node would refuse these rules anyway; say why here too, where the admin looks.
        warn!("image {image}: litefile breaks the rules ({v}); node {node} will refuse to boot");
    }
    let mut litefile = Vec::new();
    let mut text = Table::new(&["image", "file", "options", "comments", "disable"]);
    for r in rules.rules() {
        let file = if r.is_dir {
            format!("{}/", r.path)
        } else {
            r.path.to_string()
        };
        let img = if r.image_specific {
            image.clone()
        } else {
            "ALL".to_string()
        };
        text.rows.push(Row {
            line: r.line,
            fields: vec![
                Some(img.clone()),
                Some(file.clone()),
                (!r.options_text.is_empty()).then(|| r.options_text.to_string()),
                None,
                None,
            ],
        });
        litefile.push(FileRow {
            image: img,
            file,
            options: r.options_text.to_string(),
        });
    }

    let mut litetree = Vec::new();
    for e in vars::litetree_for(db, node, &image).map_err(|e| tables(&e))? {
        match e.location {
            Ok(loc) => litetree.push(TreeDir {
                priority: e.priority,
                dir: loc.to_string(),
                mntopts: e.mntopts,
            }),
            Err(err) => {
                return Err(Failure::Tables(format!(
                    "node {node}: litetree line {} ({}): {err}",
                    e.line, e.directory
                )));
            }
        }
    }

    let (statemnt, statemnt_mntopts, state_dir) =
        match vars::statelite_for(db, node, &image).map_err(|e| tables(&e))? {
            None => (None, None, None),
            Some(s) => {
                let loc = s.location.map_err(|err| {
                    Failure::Tables(format!(
                        "node {node}: statelite line {} ({}): {err}",
                        s.line, s.statemnt
                    ))
                })?;
                let base = loc.to_string();
                let dir = format!("{}/{node}", base.trim_end_matches('/'));
                (Some(base), s.mntopts, Some(dir))
            }
        };

    Ok(Answer {
        version: PROTOCOL_VERSION,
        ok: true,
        node: node.to_string(),
        image,
        litefile,
        litefile_text: text.to_text(),
        litetree,
        statemnt,
        statemnt_mntopts,
        state_dir,
    })
}

// ---------------------------------------------------------------------------------------
// policy

/// What `policy` says about one command for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// xCAT's policy evaluation for a request from `node` (at `peer`) to run `command` on
/// itself: rows by ascending priority, first full match decides, default deny.
pub fn policy_allows(
    db: &Db,
    ranges: &mut RangeMemo,
    node: &str,
    peer: IpAddr,
    command: &str,
) -> Result<Decision, crate::db::DbError> {
    let table = db.table("policy")?;
    let mut rows: Vec<(f64, &Row)> = Vec::new();
    for row in table.enabled_rows() {
        let p = table.value(row, "priority").unwrap_or("");
        let priority = vars::parse_priority(p).map_err(|problem| {
            crate::db::DbError::Table(vars::field_error(table, row, "priority", problem))
        })?;
        rows.push((priority, row));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let any = |v: Option<&str>| v.is_none_or(|v| v.trim().is_empty() || v.trim() == "*");
    let peer_text = peer.to_string();
    for (_, row) in rows {
        let get = |c: &str| table.table.get(row, c);
        let rule = get("rule").unwrap_or("").trim().to_ascii_lowercase();
        let allow = matches!(rule.as_str(), "allow" | "accept" | "trusted");
        let name_ok = any(get("name")) || get("name").map(str::trim) == Some(node);
        let host_ok = any(get("host"))
            || get("host").map(str::trim) == Some(node)
            || get("host").map(str::trim) == Some(peer_text.as_str());
        let commands_ok = any(get("commands"))
            || get("commands")
                .unwrap_or("")
                .split(',')
                .any(|c| c.trim() == command);
        if !(name_ok && host_ok && commands_ok) {
            continue;
        }
        let noderange_ok = if any(get("noderange")) {
            true
        } else {
            let range = get("noderange").unwrap_or("");
            match ranges.members(db, range)? {
                Ok(nodes) => nodes.contains(node),
                Err(e) => {
                    // A broken noderange can widen a deny but never an allow.
                    warn!("policy line {}: noderange {range:?}: {e}", row.line);
                    !allow
                }
            }
        };
        if !noderange_ok {
            continue;
        }
        let qualified = !any(get("parameters")) || !any(get("time"));
        if qualified && allow {
            continue; // parameters/time are not evaluated: such an allow never matches
        }
        return Ok(if allow {
            Decision::Allow
        } else {
            Decision::Deny(format!(
                "policy line {} (priority {}, rule {:?})",
                row.line,
                get("priority").unwrap_or("").trim(),
                get("rule").unwrap_or("")
            ))
        });
    }
    Ok(Decision::Deny(format!(
        "no row of {} allows it (add e.g. '\"4.8\",,,\"litefile,litetree,statelite\",,,,\"allow\",,')",
        table.path.display()
    )))
}

/// Expanded policy noderanges, kept as long as the tables they came from: a group of
/// thousands of nodes is expanded once per table change, not three times per request.
#[derive(Debug, Default)]
pub struct RangeMemo {
    ranges: HashMap<String, Result<HashSet<String>, String>>,
}

impl RangeMemo {
    fn members(
        &mut self,
        db: &Db,
        range: &str,
    ) -> Result<&Result<HashSet<String>, String>, crate::db::DbError> {
        if !self.ranges.contains_key(range) {
            let expanded = db
                .node_index()?
                .expand(range)
                .map(|v| v.into_iter().collect())
                .map_err(|e| e.to_string());
            // Bounded: the policy table has few rows; a memo per distinct noderange.
            self.ranges.insert(range.to_string(), expanded);
        }
        Ok(self.ranges.get(range).unwrap_or(&EMPTY_RANGE))
    }
}

static EMPTY_RANGE: Result<HashSet<String>, String> = Err(String::new());

// ---------------------------------------------------------------------------------------
// Table reloading

/// Size, mtime (s, ns), ctime (s, ns) and inode of a table file: an atomic rewrite changes
/// the inode, an in-place edit the times.
type FileStamp = (u64, i64, i64, i64, i64, u64);

/// A worker's tables, reloaded when any table file changes.
struct TableCache {
    dir: PathBuf,
    signature: Vec<Option<FileStamp>>,
    db: Db,
    ranges: RangeMemo,
}

impl TableCache {
    fn new(dir: &Path) -> TableCache {
        TableCache {
            dir: dir.to_path_buf(),
            signature: signature(dir),
            db: Db::open(dir),
            ranges: RangeMemo::default(),
        }
    }

    /// The tables as they are now on disk.
    ///
    /// Every request pays one `stat` per table: an edit an admin has finished (or a table
    /// removed) applies to the very next request, never to one a timer lets through later.
    fn get(&mut self) -> (&Db, &mut RangeMemo) {
        let now = signature(&self.dir);
        if now != self.signature {
            debug!("tables in {} changed: reloading", self.dir.display());
            self.signature = now;
            self.db = Db::open(&self.dir);
            self.ranges = RangeMemo::default();
        }
        (&self.db, &mut self.ranges)
    }
}

fn signature(dir: &Path) -> Vec<Option<FileStamp>> {
    SCHEMAS
        .iter()
        .map(|s| {
            std::fs::metadata(dir.join(format!("{}.csv", s.name)))
                .ok()
                .map(|m| {
                    (
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ctime(),
                        m.ctime_nsec(),
                        m.ino(),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(files: &[(&str, &str)]) -> (tempfile::TempDir, Db) {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(format!("{name}.csv")), text).unwrap();
        }
        let db = Db::open(d.path());
        (d, db)
    }

    const NODES: &str = "#node,groups\n\"n01\",\"compute\"\n\"n02\",\"compute\"\n";
    const HOSTS: &str = "#node,ip\n\"n01\",\"127.0.0.1\"\n\"n02\",\"10.0.0.2\"\n";
    const NODETYPE: &str = "#node,os,arch,profile\n\"compute\",\"deb12\",\"x86_64\",\"c\"\n";
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(parse_request(b"STATELITE-RULES 1 n01\n").unwrap(), "n01");
        for bad in [
            &b"STATELITE-RULES 2 n01\n"[..],
            b"GET / HTTP/1.0\r\n",
            b"STATELITE-RULES 1 ../etc\n",
            b"STATELITE-RULES 1 n01 extra\n",
            b"\xff\xfe\n",
            b"\n",
        ] {
            assert!(
                matches!(parse_request(bad), Err(Failure::Bad(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn policy_order_default_deny_and_qualifiers() {
        let p = |policy: &str| {
            let (_d, db) = db(&[("nodelist", NODES), ("policy", policy)]);
            policy_allows(&db, &mut RangeMemo::default(), "n01", LOCAL, "litefile").unwrap()
        };
        assert!(matches!(p("#priority,rule\n"), Decision::Deny(_)));
        assert_eq!(
            p("#priority,commands,rule\n\"4.8\",\"litefile\",\"allow\"\n"),
            Decision::Allow
        );
        // Lower priority number wins, whatever the file order.
        assert!(matches!(
            p("#priority,commands,rule\n\"5\",,\"allow\"\n\"4.8\",\"litefile\",\"deny\"\n"),
            Decision::Deny(_)
        ));
        // Another command's row does not match; a noderange excluding the node does not.
        assert!(matches!(
            p("#priority,commands,rule\n\"1\",\"litetree\",\"allow\"\n"),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p("#priority,noderange,rule\n\"1\",\"n02\",\"allow\"\n"),
            Decision::Deny(_)
        ));
        assert_eq!(
            p("#priority,noderange,rule\n\"1\",\"compute\",\"allow\"\n"),
            Decision::Allow
        );
        assert_eq!(
            p("#priority,host,rule\n\"1\",\"127.0.0.1\",\"accept\"\n"),
            Decision::Allow
        );
        assert!(matches!(
            p("#priority,host,rule\n\"1\",\"10.9.9.9\",\"allow\"\n"),
            Decision::Deny(_)
        ));
        // Unsupported qualifiers: an allow never matches, a deny always does.
        assert!(matches!(
            p("#priority,parameters,rule\n\"1\",\"-x\",\"allow\"\n"),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p("#priority,time,rule\n\"1\",\"9-17\",\"deny\"\n\"2\",,\"allow\"\n"),
            Decision::Deny(_)
        ));
        // A broken noderange in a deny row denies.
        assert!(matches!(
            p("#priority,noderange,rule\n\"1\",\"nope[\",\"deny\"\n\"2\",,\"allow\"\n"),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn a_table_edit_or_removal_applies_to_the_very_next_request() {
        let (d, _) = db(&[
            ("nodelist", NODES),
            ("policy", "#priority,rule\n\"1\",\"allow\"\n"),
        ]);
        let mut cache = TableCache::new(d.path());
        let allows = |cache: &mut TableCache| {
            let (db, ranges) = cache.get();
            policy_allows(db, ranges, "n01", LOCAL, "litefile").unwrap()
        };
        // Back to back, with no pause: a check skipped for being "too soon" would fail here.
        assert_eq!(allows(&mut cache), Decision::Allow);
        std::fs::write(
            d.path().join("policy.csv"),
            "#priority,rule\n\"1\",\"deny\"\n",
        )
        .unwrap();
        assert!(matches!(allows(&mut cache), Decision::Deny(_)));
        std::fs::write(
            d.path().join("policy.csv"),
            "#priority,rule\n\"1\",\"allow\"\n",
        )
        .unwrap();
        assert_eq!(allows(&mut cache), Decision::Allow);
        std::fs::remove_file(d.path().join("policy.csv")).unwrap();
        assert!(matches!(allows(&mut cache), Decision::Deny(_)));
    }

    #[test]
    fn answers_only_the_node_itself() {
        let (_d, db) = db(&[
            ("nodelist", NODES),
            ("hosts", HOSTS),
            ("nodetype", NODETYPE),
            ("policy", "#priority,rule\n\"1\",\"allow\"\n"),
            (
                "litefile",
                "#image,file,options\n\"ALL\",\"/etc/motd\",\"tmpfs\"\n\
                 \"deb12-x86_64-statelite-c\",\"/etc/motd\",\"persistent\"\n\"ALL\",\"/var/\",\n",
            ),
            (
                "litetree",
                "#priority,image,directory\n\"2\",,\"srv:/tree/$node\"\n\"1\",,\"/local\"\n",
            ),
            (
                "statelite",
                "#node,image,statemnt\n\"compute\",,\"srv:/state\"\n",
            ),
        ]);
        let a = answer(&db, &mut RangeMemo::default(), "n01", LOCAL).unwrap();
        assert_eq!(a.image, "deb12-x86_64-statelite-c");
        let files: Vec<_> = a
            .litefile
            .iter()
            .map(|f| (f.image.as_str(), f.file.as_str(), f.options.as_str()))
            .collect();
        assert!(
            files.contains(&("deb12-x86_64-statelite-c", "/etc/motd", "persistent")),
            "{files:?}"
        );
        assert!(files.contains(&("ALL", "/var/", "")), "{files:?}");
        assert_eq!(files.len(), 2);
        assert!(
            a.litefile_text
                .starts_with("#image,file,options,comments,disable\n")
        );
        let dirs: Vec<_> = a.litetree.iter().map(|t| t.dir.as_str()).collect();
        assert_eq!(dirs, ["/local", "srv:/tree/n01"]);
        assert_eq!(a.statemnt.as_deref(), Some("srv:/state"));
        assert_eq!(a.state_dir.as_deref(), Some("srv:/state/n01"));
        // n02 lives at 10.0.0.2: asking about it from 127.0.0.1 is refused.
        assert!(matches!(
            answer(&db, &mut RangeMemo::default(), "n02", LOCAL),
            Err(Failure::Refused(_))
        ));
        assert!(matches!(
            answer(&db, &mut RangeMemo::default(), "n99", LOCAL),
            Err(Failure::Refused(_))
        ));
        assert!(
            answer(
                &db,
                &mut RangeMemo::default(),
                "n02",
                "10.0.0.2".parse().unwrap()
            )
            .is_ok()
        );
    }
}

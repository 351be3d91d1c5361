//! The client of `statelite serve` (the `XCAT=<host>:<port>` query service): what a node
//! asks at boot and on `litectl reload`.
//!
//! Protocol version 1 (the service's side is `statelite_tools::serve`, which documents it
//! in full): connect, send `STATELITE-RULES 1 <node>\n`, read one line of JSON, done.
//! A `"retry": true` answer (the service is busy) and connection failures are retried
//! with jittered exponential back-off, so a rack booting at once spreads out; a refusal
//! (wrong address, policy) or broken tables are final and come back as
//! [`QueryError::Refused`] with the service's reason, for the node's console.
//!
//! ```no_run
//! # fn main() -> Result<(), statelite_mountd::query::QueryError> {
//! let rules = statelite_mountd::query::fetch_rules("10.0.0.1:3001", "n01")?;
//! let rows = rules.lite_rows()?; // statelite_fs::rules::LiteRow, for RuleSet::for_image
//! # Ok(()) }
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::Deserialize;
use statelite_fs::rules::{LiteRow, rows_from};

/// The request keyword and protocol version (see `statelite serve`).
pub const REQUEST_WORD: &str = "STATELITE-RULES";
pub const PROTOCOL_VERSION: u32 = 1;
/// An answer longer than this is not one (a node's rules are a few KiB).
pub const MAX_ANSWER: u64 = 8 << 20;

/// Why the rules could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query service {addr:?}: {problem}")]
    Address { addr: String, problem: String },
    #[error("node name {0:?} is not valid (letters, digits, '-', '_', '.')")]
    Node(String),
    /// The service answered and said no (identity, policy or broken tables): final.
    #[error("query service {addr} refused node {node}: {reason}")]
    Refused {
        addr: String,
        node: String,
        reason: String,
    },
    /// The service could not be reached or kept failing; `last` is the last problem.
    #[error(
        "query service {addr}: no answer for node {node} after {tries} tries over {secs:.1} s: {last}"
    )]
    Unreachable {
        addr: String,
        node: String,
        tries: u32,
        secs: f64,
        last: String,
    },
    /// The answer was not protocol version 1 JSON.
    #[error("query service {addr}: malformed answer: {problem}")]
    Protocol { addr: String, problem: String },
    /// The answer's litefile rows do not parse (a service/node version mismatch).
    #[error("query service {addr}: litefile rows for node {node}: {problem}")]
    Rows {
        addr: String,
        node: String,
        problem: String,
    },
}

/// One litefile row in force for the node's image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileRow {
    /// The image name when the row names it, else `ALL`.
    pub image: String,
    /// The path; a trailing `/` marks a directory.
    pub file: String,
    #[serde(default)]
    pub options: String,
}

/// One litetree directory, variables expanded, in search order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TreeDir {
    #[serde(default)]
    pub priority: String,
    /// `[server:]/path`.
    pub dir: String,
    #[serde(default)]
    pub mntopts: Option<String>,
}

/// A node's rules as the service gives them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeRules {
    pub node: String,
    /// The image name (selects image-specific litefile rows).
    pub image: String,
    /// The litefile rows in force for `image` (precedence already applied).
    pub litefile: Vec<FileRow>,
    /// The same rows as `tabdump litefile` text (for logs and humans).
    #[serde(default)]
    pub litefile_text: String,
    /// Highest priority first.
    pub litetree: Vec<TreeDir>,
    /// The state export `server:/path` (the node's own directory is `<statemnt>/<node>`);
    /// `None` when no `statelite` row applies to the node.
    pub statemnt: Option<String>,
    #[serde(default)]
    pub statemnt_mntopts: Option<String>,
    /// `<statemnt>/<node>`, for messages.
    #[serde(default)]
    pub state_dir: Option<String>,
}

impl NodeRules {
    /// The litefile rows as the rules engine takes them.
    pub fn lite_rows(&self) -> Result<Vec<LiteRow>, QueryError> {
        let triples: Vec<(&str, &str, &str)> = self
            .litefile
            .iter()
            .map(|r| (r.image.as_str(), r.file.as_str(), r.options.as_str()))
            .collect();
        rows_from(&triples).map_err(|e| QueryError::Rows {
            addr: String::new(),
            node: self.node.clone(),
            problem: e.to_string(),
        })
    }
}

/// Timeouts and retries.
#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    /// Connect, send and receive limit for one try.
    pub timeout: Duration,
    /// Tries in all (at least 1).
    pub tries: u32,
    /// First pause after a failed try; doubles each time (jittered), up to `max_delay`.
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            timeout: Duration::from_secs(10),
            tries: 8,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
        }
    }
}

/// Fetches `node`'s rules from the service at `host_port` (`10.0.0.1:3001`,
/// `[fe80::1]:3001`, `mgmt:3001`) with the default timeouts and retries.
pub fn fetch_rules(host_port: &str, node: &str) -> Result<NodeRules, QueryError> {
    fetch_rules_with(host_port, node, &QueryOptions::default())
}

/// [`fetch_rules`] with explicit timeouts and retries.
pub fn fetch_rules_with(
    host_port: &str,
    node: &str,
    opts: &QueryOptions,
) -> Result<NodeRules, QueryError> {
    if node.is_empty()
        || node.len() > 255
        || node.starts_with('-')
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(QueryError::Node(node.chars().take(64).collect()));
    }
    let started = Instant::now();
    let mut rng = seed();
    let tries = opts.tries.max(1);
    let mut last = String::new();
    for n in 0..tries {
        if n > 0 {
            std::thread::sleep(delay(opts, n - 1, &mut rng));
        }
        match try_once(host_port, node, opts.timeout) {
            Ok(Outcome::Rules(r)) => return Ok(r),
            Ok(Outcome::Final(reason)) => {
                return Err(QueryError::Refused {
                    addr: host_port.to_string(),
                    node: node.to_string(),
                    reason,
                });
            }
            Ok(Outcome::Busy(reason)) => last = reason,
            Err(Try::Retry(e)) => last = e,
            Err(Try::Fatal(e)) => return Err(e),
        }
    }
    Err(QueryError::Unreachable {
        addr: host_port.to_string(),
        node: node.to_string(),
        tries,
        secs: started.elapsed().as_secs_f64(),
        last,
    })
}

enum Outcome {
    Rules(NodeRules),
    Final(String),
    Busy(String),
}

enum Try {
    Retry(String),
    Fatal(QueryError),
}

#[derive(Deserialize)]
struct Envelope {
    version: u32,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry: bool,
}

fn resolve(host_port: &str) -> Result<Vec<SocketAddr>, Try> {
    // Literal addresses first: a static initramfs binary may have no working resolver.
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    match host_port.to_socket_addrs() {
        Ok(addrs) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err(Try::Retry(format!("{host_port}: no address")))
            } else {
                Ok(v)
            }
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(Try::Fatal(QueryError::Address {
            addr: host_port.to_string(),
            problem: format!("expected <host>:<port> ({e})"),
        })),
        Err(e) => Err(Try::Retry(format!("resolving {host_port}: {e}"))),
    }
}

fn try_once(host_port: &str, node: &str, timeout: Duration) -> Result<Outcome, Try> {
    let addrs = resolve(host_port)?;
    let mut stream = None;
    let mut why = String::new();
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => why = format!("connecting to {a}: {e}"),
        }
    }
    let Some(stream) = stream else {
        return Err(Try::Retry(why));
    };
    let io = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| Try::Retry(format!("{what}: {e}"))
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("socket"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(io("socket"))?;
    let _ = stream.set_nodelay(true);
    let mut s = &stream;
    s.write_all(format!("{REQUEST_WORD} {PROTOCOL_VERSION} {node}\n").as_bytes())
        .map_err(io("sending the request"))?;
    let mut line = Vec::with_capacity(4096);
    BufReader::new(s.take(MAX_ANSWER))
        .read_until(b'\n', &mut line)
        .map_err(io("reading the answer"))?;
    if line.last() != Some(&b'\n') {
        return Err(Try::Retry(if line.len() as u64 >= MAX_ANSWER {
            format!("the answer is longer than {MAX_ANSWER} bytes")
        } else {
            "the connection closed before a complete answer".into()
        }));
    }
    let proto = |problem: String| {
        Try::Fatal(QueryError::Protocol {
            addr: host_port.to_string(),
            problem,
        })
    };
    let env: Envelope = serde_json::from_slice(&line).map_err(|e| proto(e.to_string()))?;
    if env.version != PROTOCOL_VERSION {
        return Err(proto(format!(
            "protocol version {} (this node speaks {PROTOCOL_VERSION})",
            env.version
        )));
    }
    if !env.ok {
        let reason = env.error.unwrap_or_else(|| "no reason given".into());
        return Ok(if env.retry {
            Outcome::Busy(reason)
        } else {
            Outcome::Final(reason)
        });
    }
    let rules: NodeRules = serde_json::from_slice(&line).map_err(|e| proto(e.to_string()))?;
    if rules.node != node {
        return Err(proto(format!(
            "asked about {node}, answered about {:?}",
            rules.node
        )));
    }
    Ok(Outcome::Rules(rules))
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// Half the doubled delay plus a random part of the other half (xorshift: no dependency,
/// and nothing here needs a good generator, only nodes that do not all retry in step).
fn delay(opts: &QueryOptions, n: u32, rng: &mut u64) -> Duration {
    let base = opts
        .initial_delay
        .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
        .min(opts.max_delay);
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let half = base / 2;
    half + half.mul_f64((*rng % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot fake service answering each connection with the given lines in turn.
    fn fake(answers: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for a in answers {
                let (s, _) = l.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                seen.push(line);
                (&s).write_all(a.as_bytes()).unwrap();
            }
            seen
        });
        (addr, h)
    }

    fn quick() -> QueryOptions {
        QueryOptions {
            timeout: Duration::from_secs(2),
            tries: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        }
    }

    #[test]
    fn busy_is_retried_refusal_is_final() {
        let ok = r#"{"version":1,"ok":true,"node":"n01","image":"img","litefile":[{"image":"ALL","file":"/etc/motd","options":"tmpfs"}],"litetree":[{"priority":"1","dir":"srv:/t","mntopts":null}],"statemnt":"srv:/s"}
"#;
        let (addr, h) = fake(vec![
            "{\"version\":1,\"ok\":false,\"error\":\"busy\",\"retry\":true}\n",
            ok,
        ]);
        let r = fetch_rules_with(&addr, "n01", &quick()).unwrap();
        assert_eq!(h.join().unwrap(), ["STATELITE-RULES 1 n01\n"; 2]);
        assert_eq!(r.image, "img");
        assert_eq!(r.litetree[0].dir, "srv:/t");
        assert_eq!(r.lite_rows().unwrap().len(), 1);

        let (addr, h) = fake(vec![
            "{\"version\":1,\"ok\":false,\"error\":\"refused: policy\",\"retry\":false}\n",
        ]);
        let e = fetch_rules_with(&addr, "n01", &quick()).unwrap_err();
        h.join().unwrap();
        assert!(matches!(e, QueryError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("policy"), "{e}");
    }

    #[test]
    fn garbage_and_wrong_node_are_protocol_errors() {
        let (addr, h) = fake(vec!["HTTP/1.0 200 OK\n"]);
        let e = fetch_rules_with(&addr, "n01", &quick()).unwrap_err();
        h.join().unwrap();
        assert!(matches!(e, QueryError::Protocol { .. }), "{e}");
        let (addr, h) = fake(vec![
            "{\"version\":1,\"ok\":true,\"node\":\"n02\",\"image\":\"i\",\"litefile\":[],\"litetree\":[],\"statemnt\":null}\n",
        ]);
        let e = fetch_rules_with(&addr, "n01", &quick()).unwrap_err();
        h.join().unwrap();
        assert!(e.to_string().contains("answered about"), "{e}");
        assert!(matches!(
            fetch_rules_with(&addr, "../x", &quick()),
            Err(QueryError::Node(_))
        ));
    }

    #[test]
    fn nobody_listening_gives_up_with_the_reason() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = fetch_rules_with(&addr, "n01", &quick()).unwrap_err();
        assert!(matches!(e, QueryError::Unreachable { tries: 3, .. }), "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
    }
}

//! The kernel command line, parsed once into typed boot parameters.
//!
//! Words are split the way the kernel splits them (`lib/cmdline.c: next_arg`): on blanks
//! outside double quotes; a quote at the start of a word or of a value is dropped with its
//! closing partner, so `NODE="n01"` and `"NODE=n01"` both give `n01`. A bare `--` ends the
//! kernel's parameters (what follows belongs to init) and ends ours too. Later occurrences of
//! a parameter override earlier ones, as with dracut's `getarg`. Unknown words are ignored:
//! the same line carries parameters for the kernel, dracut and the distribution.
//!
//! Everything downstream takes the typed [`BootParams`]; nothing re-parses strings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longer input is refused outright: the kernel's own limit is a few KiB, so anything this
/// big is not a command line (and parsing cost stays bounded for the fuzzer).
pub const MAX_CMDLINE: usize = 64 * 1024;
/// Mount data is one page in the kernel.
const MAX_MOUNT_OPTS: usize = 4000;
const MAX_PATH: usize = 1024;
/// Error messages quote at most this much of an offending value.
const QUOTE_MAX: usize = 120;

/// A malformed parameter: which one, what it held, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line: {param}= is empty; expected {expected}")]
    Empty {
        param: &'static str,
        expected: &'static str,
    },
    #[error("kernel command line: {param}={value:?}: {problem}; expected {expected}")]
    Invalid {
        param: &'static str,
        value: String,
        problem: String,
        expected: &'static str,
    },
    #[error("kernel command line is {len} bytes, more than the {MAX_CMDLINE} accepted")]
    TooLong { len: usize },
}

/// A server: an IP address or a host name (resolved at mount time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// Parses an IPv4 address, a bracketed IPv6 address, or a host name.
    pub fn parse(s: &str) -> Result<Host, String> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?} opens a bracket it does not close"))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Host::Ip(IpAddr::V6(a)))
                .map_err(|_| format!("{inner:?} in brackets is not an IPv6 address"));
        }
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(a)));
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Err(format!("IPv6 address {s:?} must be written in brackets"));
        }
        if is_host_name(s) {
            Ok(Host::Name(s.to_string()))
        } else {
            Err(format!("{s:?} is neither an IP address nor a host name"))
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(a) => Some(*a),
            Host::Name(_) => None,
        }
    }
}

/// As written in a mount source or an address: IPv6 in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An export on an NFS server: `server:/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NfsSource {
    pub server: Host,
    /// Absolute, without `..` components, NUL or blanks.
    pub path: String,
}

impl NfsSource {
    /// Parses `server:/path` (the server may be `[ipv6]`); the whole rest is the path.
    pub fn parse(s: &str) -> Result<NfsSource, String> {
        let (server, rest) = split_server(s)?;
        Ok(NfsSource {
            server,
            path: check_path(rest)?,
        })
    }
}

/// The `mount(2)` source: `server:/path`, IPv6 in brackets (the kernel's NFS syntax).
impl fmt::Display for NfsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.server, self.path)
    }
}

/// Splits `server:rest` at the colon after the server (after `]` for IPv6).
fn split_server(s: &str) -> Result<(Host, &str), String> {
    let colon = if s.starts_with('[') {
        let close = s
            .find(']')
            .ok_or("an IPv6 server opens a bracket it does not close")?;
        if s.as_bytes().get(close + 1) != Some(&b':') {
            return Err("no ':' after the bracketed server".into());
        }
        close + 1
    } else {
        s.find(':').ok_or("no ':' between server and path")?
    };
    let (server, rest) = (&s[..colon], &s[colon + 1..]);
    if server.is_empty() {
        return Err("the server is empty".into());
    }
    let host = Host::parse(server)?;
    if !rest.starts_with('/') && s.matches(':').count() > 1 && !s.starts_with('[') {
        return Err("the path does not start with '/' (IPv6 servers go in brackets)".into());
    }
    Ok((host, rest))
}

fn check_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("the path {:?} does not start with '/'", quote(p)));
    }
    if p.len() > MAX_PATH {
        return Err(format!("the path is longer than {MAX_PATH} bytes"));
    }
    if p.bytes()
        .any(|b| b == 0 || b.is_ascii_whitespace() || b == b'"')
    {
        return Err("the path holds a NUL, blank or quote".into());
    }
    if p.split('/').any(|c| c == "..") {
        return Err("the path holds a '..' component".into());
    }
    Ok(p.to_string())
}

/// One mount option, `key` or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MountOpt {
    pub key: String,
    pub value: Option<String>,
}

/// Comma-separated mount options (`ro,vers=4.1,port=20490`), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MountOpts(Vec<MountOpt>);

impl MountOpts {
    pub fn parse(s: &str) -> Result<MountOpts, String> {
        if s.len() > MAX_MOUNT_OPTS {
            return Err(format!("longer than {MAX_MOUNT_OPTS} bytes"));
        }
        let mut out = Vec::new();
        for item in s.split(',') {
            if item.is_empty() {
                return Err("an empty option (two commas, or a comma at an end)".into());
            }
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let key_ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !key_ok {
                return Err(format!("{:?} is not an option name", quote(key)));
            }
            if let Some(v) = value
                && (v.is_empty() || v.bytes().any(|b| b <= b' ' || b == b'"' || b == 0x7f))
            {
                return Err(format!("option {key} has an empty or unprintable value"));
            }
            out.push(MountOpt {
                key: key.to_string(),
                value: value.map(str::to_string),
            });
        }
        Ok(MountOpts(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = &MountOpt> {
        self.0.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|o| o.key == key)
    }
    /// The value of the last `key=value`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|o| o.key == key)
            .and_then(|o| o.value.as_deref())
    }

    /// Sets `key` (replacing any earlier occurrence).
    pub fn set(&mut self, key: &str, value: Option<&str>) {
        self.0.retain(|o| o.key != key);
        self.0.push(MountOpt {
            key: key.to_string(),
            value: value.map(str::to_string),
        });
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|o| o.key != key);
    }

    /// `self` with every option of `over` applied on top (later wins; `ro`/`rw` replace
    /// each other).
    pub fn overlaid(&self, over: &MountOpts) -> MountOpts {
        let mut out = self.clone();
        for o in &over.0 {
            if o.key == "ro" || o.key == "rw" {
                out.remove("ro");
                out.remove("rw");
            }
            out.set(&o.key, o.value.as_deref());
        }
        out
    }
}

/// The mount data string.
impl fmt::Display for MountOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&o.key)?;
            if let Some(v) = &o.value {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// `root=nfs:<server>:<dir>[:<options>]` (dracut's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsRoot {
    pub source: NfsSource,
    pub options: MountOpts,
}

/// What `root=` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    Nfs(NfsRoot),
    /// Not an NFS root (`root=/dev/sda1`, `root=live:...`): not ours; kept for messages.
    Other(String),
}

/// Persistent storage as the kernel line gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateMnt {
    /// `STATEMNT=` (empty): this node has no persistent storage.
    None,
    Nfs(NfsSource),
}

/// A node name: one path component (it names the node's state directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(s: &str) -> Result<NodeName, String> {
        if s.len() > 255 {
            return Err("longer than 255 bytes".into());
        }
        if s == "." || s == ".." || s.starts_with('-') {
            return Err(format!("{:?} cannot name a directory", quote(s)));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "{:?} holds characters other than letters, digits, '-', '_', '.'",
                quote(s)
            ));
        }
        Ok(NodeName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `XCAT=<host>:<port>`: the query service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddr {
    pub host: Host,
    pub port: u16,
}

impl ServiceAddr {
    pub fn parse(s: &str) -> Result<ServiceAddr, String> {
        let (host, port) = if s.starts_with('[') {
            let close = s
                .find(']')
                .ok_or("an IPv6 host opens a bracket it does not close")?;
            let port = s[close + 1..]
                .strip_prefix(':')
                .ok_or("no ':<port>' after the bracketed host")?;
            (&s[..=close], port)
        } else {
            s.rsplit_once(':').ok_or("no ':<port>'")?
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{:?} is not a port (1-65535)", quote(port)))?;
        Ok(ServiceAddr {
            host: Host::parse(host)?,
            port,
        })
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How the root is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMode {
    Fuse,
    Symlink,
}

impl RootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RootMode::Fuse => "fuse",
            RootMode::Symlink => "symlink",
        }
    }
}

/// A MAC address from `BOOTIF=01-aa-bb-cc-dd-ee-ff` (pxelinux's `IPAPPEND 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Accepts `01-aa-bb-cc-dd-ee-ff` (ARP type 1 = Ethernet, as pxelinux writes it) and the
    /// bare `aa-bb-cc-dd-ee-ff` / `aa:bb:cc:dd:ee:ff`.
    pub fn parse_bootif(s: &str) -> Result<MacAddr, String> {
        let parts: Vec<&str> = s.split(['-', ':']).collect();
        let bytes = match parts.len() {
            7 if parts.first() == Some(&"01") => &parts[1..],
            7 => return Err("the hardware type is not 01 (Ethernet)".into()),
            6 => &parts[..],
            _ => return Err("not six hex bytes".into()),
        };
        let mut mac = [0u8; 6];
        for (slot, part) in mac.iter_mut().zip(bytes) {
            if part.len() != 2 {
                return Err(format!("{:?} is not a two-digit hex byte", quote(part)));
            }
            *slot = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{:?} is not a hex byte", quote(part)))?;
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Everything statelite takes from the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    pub root: Option<RootSpec>,
    /// xCAT's `NFSROOT=<server>:<dir>`.
    pub nfsroot: Option<NfsSource>,
    /// `None` when `STATEMNT=` is absent (the rules source may still name one).
    pub statemnt: Option<StateMnt>,
    /// `MNTOPTS=`: applied to every NFS mount statelite makes.
    pub mntopts: MountOpts,
    pub node: Option<NodeName>,
    pub xcat: Option<ServiceAddr>,
    pub mode: Option<RootMode>,
    /// `shell`: the initramfs pauses in a shell at each stage.
    pub shell: bool,
    /// `statelite.debug`: trace every action.
    pub debug: bool,
    pub bootif: Option<MacAddr>,
}

impl BootParams {
    /// The image: `root=nfs:...` when given (with its options), else `NFSROOT=`.
    pub fn image(&self) -> Option<(&NfsSource, Option<&MountOpts>)> {
        match &self.root {
            Some(RootSpec::Nfs(r)) => Some((&r.source, Some(&r.options))),
            _ => self.nfsroot.as_ref().map(|s| (s, None)),
        }
    }
}

fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return s.to_string();
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// One kernel parameter: `name` or `name=value`, quotes removed as the kernel does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
}

/// Splits a command line into words like the kernel's `next_arg`.
pub fn words(line: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        let quoted = bytes.first() == Some(&b'"');
        let mut in_quote = quoted;
        let start = usize::from(quoted);
        let mut i = start;
        let mut equals = None;
        while let Some(&b) = bytes.get(i) {
            if b.is_ascii_whitespace() && !in_quote {
                break;
            }
            if equals.is_none() && b == b'=' {
                equals = Some(i);
            }
            if b == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        // Every index used below is at an ASCII byte or the end: valid char boundaries.
        let word = &rest[start..i];
        let word_ref = if quoted {
            word.strip_suffix('"').unwrap_or(word)
        } else {
            word
        };
        let w = match equals.map(|e| e - start) {
            Some(eq) if eq < word_ref.len() => {
                let name = word_ref.get(..eq).unwrap_or_default();
                let mut value = word_ref.get(eq + 1..).unwrap_or_default();
                if let Some(v) = value.strip_prefix('"') {
                    value = v.strip_suffix('"').unwrap_or(v);
                }
                Word {
                    name,
                    value: Some(value),
                }
            }
            _ => Word {
                name: word_ref,
                value: None,
            },
        };
        out.push(w);
        rest = rest[i..].trim_start();
    }
    out
}

fn invalid(
    param: &'static str,
    value: &str,
    expected: &'static str,
) -> impl FnOnce(String) -> CmdlineError {
    let value = quote(value);
    move |problem| CmdlineError::Invalid {
        param,
        value,
        problem,
        expected,
    }
}

fn flag(param: &'static str, value: Option<&str>) -> Result<bool, CmdlineError> {
    match value {
        None | Some("1" | "yes" | "y" | "true" | "on") => Ok(true),
        Some("0" | "no" | "n" | "false" | "off") => Ok(false),
        Some(v) => Err(invalid(param, v, "no value, or 0/1")(
            "not a yes/no value".into(),
        )),
    }
}

const E_ROOT: &str = "nfs:<server>:<dir>[:<options>] (e.g. nfs:10.0.0.1:/install/img:ro,vers=4.1)";
const E_SRC: &str = "<server>:<dir> (e.g. 10.0.0.1:/install/img or [fd00::1]:/install/img)";
const E_STATE: &str = "<server>:<dir>, or nothing for no persistent storage";
const E_OPTS: &str = "comma-separated mount options (e.g. vers=4.1,port=20490)";
const E_NODE: &str = "the node's name (letters, digits, '-', '_', '.')";
const E_XCAT: &str = "<host>:<port> (e.g. 10.0.0.1:3001)";
const E_MODE: &str = "fuse or symlink";
const E_MAC: &str = "01-aa-bb-cc-dd-ee-ff";

fn parse_root(v: &str) -> Result<RootSpec, CmdlineError> {
    let body = match v.strip_prefix("nfs:").or_else(|| v.strip_prefix("nfs4:")) {
        Some(b) => b,
        None if v == "nfs" || v == "nfs4" => {
            return Err(invalid("root", v, E_ROOT)(
                "the DHCP root-path form is not supported".into(),
            ));
        }
        None => return Ok(RootSpec::Other(quote(v))),
    };
    let err = invalid("root", v, E_ROOT);
    let (server, rest) = match split_server(body) {
        Ok(x) => x,
        Err(e) => return Err(err(e)),
    };
    let (path, opts) = match rest.split_once(':') {
        Some((p, o)) => (p, Some(o)),
        None => (rest, None),
    };
    let path = match check_path(path) {
        Ok(p) => p,
        Err(e) => return Err(err(e)),
    };
    let options = match opts {
        None | Some("") => MountOpts::default(),
        Some(o) => match MountOpts::parse(o) {
            Ok(o) => o,
            Err(e) => return Err(err(format!("options: {e}"))),
        },
    };
    Ok(RootSpec::Nfs(NfsRoot {
        source: NfsSource { server, path },
        options,
    }))
}

/// Parses a whole command line. The first malformed statelite parameter is the error.
pub fn parse(line: &str) -> Result<BootParams, CmdlineError> {
    if line.len() > MAX_CMDLINE {
        return Err(CmdlineError::TooLong { len: line.len() });
    }
    let mut p = BootParams::default();
    for w in words(line) {
        let v = w.value;
        // A parameter of ours with a value: the value, or the "empty" error for those that
        // need one.
        let need = |param: &'static str, expected: &'static str| match v {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(CmdlineError::Empty { param, expected }),
        };
        match w.name {
            "--" if v.is_none() => break,
            "root" => p.root = Some(parse_root(need("root", E_ROOT)?)?),
            "NFSROOT" => {
                let s = need("NFSROOT", E_SRC)?;
                p.nfsroot = Some(NfsSource::parse(s).map_err(invalid("NFSROOT", s, E_SRC))?);
            }
            "STATEMNT" => {
                p.statemnt = Some(match v {
                    None | Some("") => StateMnt::None,
                    Some(s) => {
                        StateMnt::Nfs(NfsSource::parse(s).map_err(invalid("STATEMNT", s, E_STATE))?)
                    }
                })
            }
            "MNTOPTS" => {
                // An empty MNTOPTS= is what xCAT writes for a statelite row without mntopts.
                p.mntopts = match v {
                    None | Some("") => MountOpts::default(),
                    Some(s) => MountOpts::parse(s).map_err(invalid("MNTOPTS", s, E_OPTS))?,
                }
            }
            "NODE" => {
                let s = need("NODE", E_NODE)?;
                p.node = Some(NodeName::parse(s).map_err(invalid("NODE", s, E_NODE))?);
            }
            "XCAT" => {
                let s = need("XCAT", E_XCAT)?;
                p.xcat = Some(ServiceAddr::parse(s).map_err(invalid("XCAT", s, E_XCAT))?);
            }
            "STATELITE_MODE" => {
                p.mode = Some(match need("STATELITE_MODE", E_MODE)? {
                    "fuse" => RootMode::Fuse,
                    "symlink" => RootMode::Symlink,
                    s => {
                        return Err(invalid("STATELITE_MODE", s, E_MODE)("unknown mode".into()));
                    }
                })
            }
            "shell" => p.shell = flag("shell", v)?,
            "statelite.debug" => p.debug = flag("statelite.debug", v)?,
            "BOOTIF" => {
                let s = need("BOOTIF", E_MAC)?;
                p.bootif = Some(MacAddr::parse_bootif(s).map_err(invalid("BOOTIF", s, E_MAC))?);
            }
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> BootParams {
        parse(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
    fn err(line: &str) -> String {
        match parse(line) {
            Ok(p) => panic!("{line:?} parsed: {p:?}"),
            Err(e) => e.to_string(),
        }
    }
    fn src(server: &str, path: &str) -> NfsSource {
        NfsSource {
            server: Host::parse(server).unwrap(),
            path: path.into(),
        }
    }

    #[test]
    fn xcat_statelite_line() {
        let p = ok(
            "initrd=xcat/rh/initrd.gz NFSROOT=10.0.0.1:/install/netboot/rh/x86_64/compute \
             STATEMNT=10.0.0.1:/nodedata XCAT=10.0.0.1:3001 NODE=n01 MNTOPTS=vers=4.1,port=20490 \
             console=ttyS0,115200n8 quiet BOOTIF=01-52-54-00-12-34-01",
        );
        assert_eq!(
            p.nfsroot,
            Some(src("10.0.0.1", "/install/netboot/rh/x86_64/compute"))
        );
        assert_eq!(
            p.statemnt,
            Some(StateMnt::Nfs(src("10.0.0.1", "/nodedata")))
        );
        assert_eq!(
            p.xcat,
            Some(ServiceAddr {
                host: Host::Ip("10.0.0.1".parse().unwrap()),
                port: 3001
            })
        );
        assert_eq!(p.node.as_ref().map(NodeName::as_str), Some("n01"));
        assert_eq!(p.mntopts.to_string(), "vers=4.1,port=20490");
        assert_eq!(
            p.bootif.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:12:34:01")
        );
        assert_eq!(
            p.image().map(|(s, o)| (s.to_string(), o.is_none())),
            Some(("10.0.0.1:/install/netboot/rh/x86_64/compute".into(), true))
        );
        assert!(!p.shell && !p.debug && p.mode.is_none() && p.root.is_none());
    }

    #[test]
    fn dracut_root_forms() {
        let p = ok("root=nfs:srv1:/img");
        let Some(RootSpec::Nfs(r)) = &p.root else {
            panic!("{p:?}")
        };
        assert_eq!(r.source, src("srv1", "/img"));
        assert!(r.options.is_empty());
        let p = ok("root=nfs:10.0.2.100:/img:ro,vers=4.1,port=20490 NFSROOT=x:/other");
        let (s, o) = p.image().unwrap();
        assert_eq!(s.to_string(), "10.0.2.100:/img");
        assert_eq!(o.unwrap().to_string(), "ro,vers=4.1,port=20490");
        assert_eq!(o.unwrap().get("port"), Some("20490"));
        let p = ok("root=nfs4:[fd00::1]:/install:vers=4.2");
        let (s, o) = p.image().unwrap();
        assert_eq!(s.server, Host::Ip("fd00::1".parse().unwrap()));
        assert_eq!(s.to_string(), "[fd00::1]:/install");
        assert_eq!(o.unwrap().get("vers"), Some("4.2"));
        // Trailing colon: no options.
        assert!(
            matches!(ok("root=nfs:s:/i:").root, Some(RootSpec::Nfs(r)) if r.options.is_empty())
        );
        // Not ours.
        assert_eq!(
            ok("root=/dev/sda1").root,
            Some(RootSpec::Other("/dev/sda1".into()))
        );
        assert!(ok("root=/dev/sda1").image().is_none());
    }

    #[test]
    fn ipv6_sources() {
        let p = ok("NFSROOT=[fd00::1]:/install STATEMNT=[::1]:/state XCAT=[fd00::2]:3001");
        assert_eq!(p.nfsroot.unwrap().to_string(), "[fd00::1]:/install");
        assert_eq!(p.statemnt, Some(StateMnt::Nfs(src("[::1]", "/state"))));
        assert_eq!(p.xcat.unwrap().to_string(), "[fd00::2]:3001");
        let e = err("NFSROOT=fd00::1:/install");
        assert!(e.contains("NFSROOT") && e.contains("bracket"), "{e}");
        let e = err("NFSROOT=[fd00::1:/install");
        assert!(e.contains("bracket"), "{e}");
        let e = err("NFSROOT=[fd00::zz]:/install");
        assert!(e.contains("IPv6"), "{e}");
    }

    #[test]
    fn quoting_like_the_kernel() {
        let p = ok(r#"NODE="n01" "MNTOPTS=vers=4.1" console=ttyS0"#);
        assert_eq!(p.node.unwrap().as_str(), "n01");
        assert_eq!(p.mntopts.to_string(), "vers=4.1");
        // A quoted value may hold blanks (ours reject them, others are skipped whole).
        let p = ok(r#"acpi_osi="Windows 2009" NODE=n02"#);
        assert_eq!(p.node.unwrap().as_str(), "n02");
        let w = words(r#"a="b c" "d e" f= g"#);
        assert_eq!(
            w,
            vec![
                Word {
                    name: "a",
                    value: Some("b c")
                },
                Word {
                    name: "d e",
                    value: None
                },
                Word {
                    name: "f",
                    value: Some("")
                },
                Word {
                    name: "g",
                    value: None
                },
            ]
        );
        // An unterminated quote runs to the end, as in the kernel.
        let w = words(r#"x="a b c"#);
        assert_eq!(
            w,
            vec![Word {
                name: "x",
                value: Some("a b c")
            }]
        );
        let e = err(r#"NODE="n 01""#);
        assert!(e.contains("NODE"), "{e}");
    }

    #[test]
    fn flags_modes_and_overrides() {
        let p = ok("shell statelite.debug STATELITE_MODE=symlink");
        assert!(p.shell && p.debug);
        assert_eq!(p.mode, Some(RootMode::Symlink));
        let p = ok("shell=0 statelite.debug=1 STATELITE_MODE=symlink STATELITE_MODE=fuse");
        assert!(!p.shell && p.debug);
        assert_eq!(p.mode, Some(RootMode::Fuse));
        // Later occurrences win.
        assert_eq!(ok("NODE=a NODE=b").node.unwrap().as_str(), "b");
        // Init's arguments after `--` are not ours.
        let p = ok("NODE=a -- NODE=b shell");
        assert_eq!(p.node.unwrap().as_str(), "a");
        assert!(!p.shell);
        // Unknown words and look-alikes are ignored.
        let p = ok("node=x Node=y NODEX=z statelite debug rd.shell");
        assert_eq!(p, BootParams::default());
        assert_eq!(ok(""), BootParams::default());
        assert_eq!(ok("   \t\n "), BootParams::default());
    }

    #[test]
    fn statemnt_may_be_empty() {
        assert_eq!(ok("STATEMNT=").statemnt, Some(StateMnt::None));
        assert_eq!(ok("STATEMNT").statemnt, Some(StateMnt::None));
        assert_eq!(ok(r#"STATEMNT="""#).statemnt, Some(StateMnt::None));
        assert_eq!(ok("NODE=n1").statemnt, None);
        assert!(ok("MNTOPTS=").mntopts.is_empty());
    }

    #[test]
    fn bootif_forms() {
        for s in [
            "01-aa-bb-cc-dd-ee-ff",
            "aa-bb-cc-dd-ee-ff",
            "AA:BB:CC:DD:EE:FF",
        ] {
            assert_eq!(
                ok(&format!("BOOTIF={s}")).bootif,
                Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])),
                "{s}"
            );
        }
        for s in [
            "02-aa-bb-cc-dd-ee-ff",
            "aa-bb-cc",
            "01-aa-bb-cc-dd-ee-fg",
            "01-a-bb-cc-dd-ee-ff0",
            "01-aa-bb-cc-dd-ee-ff-00",
        ] {
            let e = err(&format!("BOOTIF={s}"));
            assert!(
                e.contains("BOOTIF") && e.contains("01-aa-bb-cc-dd-ee-ff"),
                "{e}"
            );
        }
    }

    #[test]
    fn malformed_lines_name_the_parameter() {
        for (line, param, hint) in [
            ("root=nfs", "root", "DHCP"),
            ("root=nfs:", "root", "server"),
            ("root=nfs:srv", "root", "':'"),
            ("root=nfs:srv:img", "root", "'/'"),
            ("root=nfs:srv:/img:ro,,vers=4", "root", "empty option"),
            ("root=nfs:srv:/a/../b", "root", ".."),
            ("root=", "root", "empty"),
            ("NFSROOT=", "NFSROOT", "empty"),
            ("NFSROOT=/install", "NFSROOT", "':'"),
            ("NFSROOT=:/install", "NFSROOT", "server"),
            ("NFSROOT=bad_host!:/install", "NFSROOT", "host name"),
            ("STATEMNT=srv", "STATEMNT", "':'"),
            ("STATEMNT=srv:state", "STATEMNT", "'/'"),
            ("MNTOPTS=vers=4.1,", "MNTOPTS", "empty option"),
            ("MNTOPTS=a=,b", "MNTOPTS", "empty or unprintable"),
            ("MNTOPTS=v%rs=1", "MNTOPTS", "option name"),
            ("NODE=", "NODE", "empty"),
            ("NODE=..", "NODE", "directory"),
            ("NODE=a/b", "NODE", "characters"),
            ("XCAT=10.0.0.1", "XCAT", "port"),
            ("XCAT=10.0.0.1:0", "XCAT", "port"),
            ("XCAT=10.0.0.1:70000", "XCAT", "port"),
            ("XCAT=[::1]3001", "XCAT", "':<port>'"),
            (
                "STATELITE_MODE=overlay",
                "STATELITE_MODE",
                "fuse or symlink",
            ),
            ("STATELITE_MODE=", "STATELITE_MODE", "empty"),
            ("shell=maybe", "shell", "yes/no"),
            ("statelite.debug=2", "statelite.debug", "yes/no"),
            ("BOOTIF=", "BOOTIF", "empty"),
        ] {
            let e = err(line);
            assert!(e.contains(param), "{line}: {e}");
            assert!(e.contains(hint), "{line}: {e}");
            assert!(e.contains("expected"), "{line}: {e}");
        }
        let long = "x".repeat(MAX_CMDLINE + 1);
        assert!(matches!(parse(&long), Err(CmdlineError::TooLong { .. })));
        // A long bad value is quoted shortened.
        let e = err(&format!("NODE={}", "é".repeat(300)));
        assert!(e.len() < 600, "{e}");
    }

    #[test]
    fn mount_options_overlay() {
        let base = MountOpts::parse("vers=4.1,ro,port=2049").unwrap();
        let over = MountOpts::parse("rw,port=20490,timeo=50").unwrap();
        assert_eq!(
            base.overlaid(&over).to_string(),
            "vers=4.1,rw,port=20490,timeo=50"
        );
        assert!(base.has("ro") && !base.has("rw"));
    }

    /// Deterministic random inputs built from the characters that matter: never a panic,
    /// and whatever parses holds only well-formed values.
    #[test]
    fn random_input_never_panics() {
        let alphabet: Vec<char> = "=:[]\"/ ,.-_01aeNODEROTSMXCAfs\u{e9}\t\n".chars().collect();
        let keys = [
            "root=nfs:",
            "NFSROOT=",
            "STATEMNT=",
            "MNTOPTS=",
            "NODE=",
            "XCAT=",
            "STATELITE_MODE=",
            "BOOTIF=01-",
            "shell",
            "statelite.debug",
            "\"",
            "[fd00::1]:",
            "--",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut s = String::new();
            let n = next() % 40;
            for _ in 0..n {
                let r = next();
                if r % 5 == 0 {
                    s.push_str(keys[(r / 5 % keys.len() as u64) as usize]);
                } else {
                    s.push(alphabet[(r / 5 % alphabet.len() as u64) as usize]);
                }
            }
            check_invariants(&s);
        }
    }

    /// What the fuzz target checks, too.
    pub(crate) fn check_invariants(s: &str) {
        if let Ok(p) = parse(s) {
            if let Some((src, _)) = p.image() {
                assert!(src.path.starts_with('/'), "{s:?}");
                assert!(!src.path.split('/').any(|c| c == ".."), "{s:?}");
            }
            if let Some(n) = &p.node {
                assert!(!n.as_str().contains('/') && n.as_str() != ".." && !n.as_str().is_empty());
            }
            let data = p.mntopts.to_string();
            assert!(!data.contains([' ', '\n', '\0', '"']), "{s:?}");
        }
    }
}

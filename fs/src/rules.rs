//! The litefile rules engine: litefile rows parsed once into typed rules, the precedence
//! between image-specific and `ALL` rows, xCAT's parent/child constraints, and a trie that
//! maps any path to the rule governing it in O(path depth).
//!
//! Nothing downstream (liteimg, symlink mode, the FUSE filesystem) looks at option strings:
//! they match on [`Storage`] and [`Method`].

use std::borrow::Cow;
use std::fmt;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::tabfile::{Row, RowScanner, TabError, Table, is_disabled, read_table_file};

/// Where a writable path's data lives, and whether it is writable at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Writable, volatile: reset at every boot (options empty, `tmpfs`, `rw`, `link`, `bind`).
    Tmpfs,
    /// Writable, kept per node across reboots in the state directory.
    Persistent,
    /// Writable, kept on a local disk of the node.
    LocalDisk,
    /// Read-only, served live from the first litetree hit (else the image).
    Ro,
    /// Writable and volatile; initial content is the image file followed by every litetree
    /// hit in priority order.
    Con,
}

impl Storage {
    pub fn is_writable(self) -> bool {
        !matches!(self, Storage::Ro)
    }
    /// True when the data survives a reboot.
    pub fn is_durable(self) -> bool {
        matches!(self, Storage::Persistent | Storage::LocalDisk)
    }
    pub fn name(self) -> &'static str {
        match self {
            Storage::Tmpfs => "tmpfs",
            Storage::Persistent => "persistent",
            Storage::LocalDisk => "localdisk",
            Storage::Ro => "ro",
            Storage::Con => "con",
        }
    }
}

/// How symlink mode realises an entry (FUSE mode serves all of them the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Copied into place by the node (`tmpfs`, `rw`, `persistent`, `ro`, `con`, `localdisk`).
    Copy,
    /// liteimg's two-level symlink chain (`link*`, and blank options as xCAT treats them).
    Link,
    /// `mount --bind` onto the image path, keeping the original's permissions (`bind*`).
    Bind,
}

/// A valid litefile `options` value. Only the combinations xCAT accepts can be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LiteOptions {
    storage: Storage,
    method: Method,
}

impl LiteOptions {
    pub fn storage(self) -> Storage {
        self.storage
    }
    pub fn method(self) -> Method {
        self.method
    }

    /// Parses an `options` field. `None` or blank means tmpfs (realised as `link`).
    pub fn parse(text: Option<&str>) -> Result<LiteOptions, String> {
        let text = text.unwrap_or("").trim();
        // One word (the usual case) needs no list; several are sorted and deduplicated.
        let (one, mut many): ([&str; 1], Vec<&str>) = ([text], Vec::new());
        let words: &[&str] = if text.contains(',') {
            many.extend(text.split(',').map(str::trim).filter(|w| !w.is_empty()));
            many.sort_unstable();
            many.dedup();
            &many
        } else if text.is_empty() {
            &[]
        } else {
            &one
        };
        let (storage, method) = match words {
            [] => (Storage::Tmpfs, Method::Link),
            ["tmpfs"] | ["rw"] | ["rw", "tmpfs"] => (Storage::Tmpfs, Method::Copy),
            ["persistent"] => (Storage::Persistent, Method::Copy),
            ["ro"] => (Storage::Ro, Method::Copy),
            ["con"] => (Storage::Con, Method::Copy),
            ["localdisk"] => (Storage::LocalDisk, Method::Copy),
            ["bind"] => (Storage::Tmpfs, Method::Bind),
            ["bind", "persistent"] => (Storage::Persistent, Method::Bind),
            ["link"] => (Storage::Tmpfs, Method::Link),
            ["link", "ro"] => (Storage::Ro, Method::Link),
            ["link", "persistent"] => (Storage::Persistent, Method::Link),
            ["con", "link"] => (Storage::Con, Method::Link),
            _ => {
                return Err(format!(
                    "unknown options {text:?}: expected one of empty, tmpfs, rw, tmpfs,rw, \
                     persistent, ro, con, bind, bind,persistent, link, link,ro, \
                     link,persistent, link,con, localdisk"
                ));
            }
        };
        Ok(LiteOptions { storage, method })
    }

    /// The canonical spelling, as xCAT documents it.
    pub fn canonical(self) -> &'static str {
        match (self.storage, self.method) {
            (Storage::Tmpfs, Method::Link) => "link",
            (Storage::Tmpfs, Method::Copy) => "tmpfs",
            (Storage::Tmpfs, Method::Bind) => "bind",
            (Storage::Persistent, Method::Copy) => "persistent",
            (Storage::Persistent, Method::Link) => "link,persistent",
            (Storage::Persistent, Method::Bind) => "bind,persistent",
            (Storage::Ro, Method::Link) => "link,ro",
            (Storage::Ro, _) => "ro",
            (Storage::Con, Method::Link) => "link,con",
            (Storage::Con, _) => "con",
            (Storage::LocalDisk, _) => "localdisk",
        }
    }
}

/// `text` (an options field as written) without a copy of its own when it is one of the
/// usual spellings, as nearly every row's is: a 2,000-row litefile's rules then allocate
/// nothing for their options (in a fresh daemon each new page of memory is a fault).
pub fn options_spelling(text: &str) -> Cow<'static, str> {
    match OPTION_SPELLINGS.iter().find(|&&u| u == text) {
        Some(&u) => Cow::Borrowed(u),
        None => Cow::Owned(text.to_string()),
    }
}

/// Every `options` value xCAT documents, as it documents it.
pub const OPTION_SPELLINGS: [&str; 14] = [
    "",
    "tmpfs",
    "rw",
    "tmpfs,rw",
    "persistent",
    "ro",
    "con",
    "bind",
    "bind,persistent",
    "link",
    "link,ro",
    "link,persistent",
    "link,con",
    "localdisk",
];

/// A normalised absolute path from the litefile: `/`-separated components, none empty,
/// none `.` or `..`. Never the root itself.
///
/// The text may be a range of a buffer shared by many paths: a compiled rule table's
/// rules all point into one copy of its paths ([`crate::rule_table`]), so loading 2,000
/// rules is one allocation, not 2,000 (each a turn of the allocator's lock, which the
/// mount's own thread wants at that moment too).
#[derive(Clone, Serialize)]
#[serde(into = "String")]
pub struct LitePath {
    text: Arc<str>,
    start: u32,
    end: u32,
}

impl From<LitePath> for String {
    fn from(p: LitePath) -> String {
        p.as_str().to_string()
    }
}

impl PartialEq for LitePath {
    fn eq(&self, other: &LitePath) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for LitePath {}
impl std::hash::Hash for LitePath {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}
impl PartialOrd for LitePath {
    fn partial_cmp(&self, other: &LitePath) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for LitePath {
    fn cmp(&self, other: &LitePath) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl fmt::Debug for LitePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LitePath({:?})", self.as_str())
    }
}

/// Longest litefile path, in bytes (as `PATH_MAX` less its NUL).
const MAX_PATH: usize = 4095;

impl LitePath {
    /// Parses an absolute path; returns the path and whether it named a directory
    /// (a trailing `/`, the only way xCAT knows an entry is a directory).
    pub fn parse(text: &str) -> Result<(LitePath, bool), String> {
        let (norm, is_dir) = Self::normal_form(text)?;
        let end = norm.len() as u32;
        let path = LitePath {
            text: Arc::from(norm.as_ref()),
            start: 0,
            end,
        };
        Ok((path, is_dir))
    }

    /// Ok when `text` is a path already in normal form (no trailing `/`): what a compiled
    /// rule table stores.
    pub(crate) fn check_normal(text: &str) -> Result<(), String> {
        match Self::normal_form(text)? {
            (Cow::Borrowed(n), false) if n.len() == text.len() => Ok(()),
            _ => Err(format!("{text:?} is not a normalised path")),
        }
    }

    /// `shared[start..end]` as a path, the range already found to be one by
    /// [`Self::check_normal`] (a rule set's records are checked when the set is made).
    fn of_checked(shared: &Arc<str>, start: u32, end: u32) -> LitePath {
        debug_assert!(shared.get(start as usize..end as usize).is_some());
        LitePath {
            text: shared.clone(),
            start,
            end,
        }
    }

    /// The normal form of `text` (borrowed when it is normal already, less any trailing
    /// `/`) and whether it had a trailing `/`.
    fn normal_form(text: &str) -> Result<(Cow<'_, str>, bool), String> {
        if !text.starts_with('/') {
            return Err(format!(
                "{text:?} is not an absolute path (it must start with '/')"
            ));
        }
        let is_dir = text.ends_with('/');
        // Most entries are already normal (`/etc/fstab`, `/var/log/`): they are kept as
        // they are, less a trailing `/`; only a `//` makes a new string. One pass checks
        // every byte and component.
        let body = text.trim_end_matches('/');
        let bytes = body.as_bytes();
        let mut normal = true;
        let mut start = 1; // of the current component, after its `/`
        for i in 1..=bytes.len() {
            let b = bytes.get(i).copied();
            match b {
                Some(b'/') | None => {
                    // Both ends are at a `/` or the end: a whole component.
                    let comp = &body[start..i];
                    match comp {
                        "" => normal = false,
                        "." | ".." => {
                            return Err(format!("{text:?} contains a '{comp}' component"));
                        }
                        _ if comp.len() > 255 => {
                            return Err(format!("{text:?} has a component longer than 255 bytes"));
                        }
                        _ => {}
                    }
                    start = i + 1;
                }
                Some(b'\0' | b'\n' | b'\r') => {
                    return Err(format!("{text:?} contains a NUL or line break"));
                }
                Some(_) => {}
            }
        }
        let norm = if normal {
            Cow::Borrowed(body)
        } else {
            let mut norm = String::with_capacity(body.len());
            for comp in components(body) {
                norm.push('/');
                norm.push_str(comp);
            }
            Cow::Owned(norm)
        };
        if norm.is_empty() {
            return Err("the root directory itself cannot be a litefile entry".into());
        }
        if norm.len() > MAX_PATH {
            return Err("path longer than 4095 bytes".into());
        }
        Ok((norm, is_dir))
    }

    pub fn as_str(&self) -> &str {
        // The range was checked against the text when the path was made.
        &self.text[self.start as usize..self.end as usize]
    }
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_str())
    }
    /// Components after the leading `/`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        components(self.as_str())
    }
    /// The path relative to `/` (no leading slash), for joining under an image root.
    pub fn relative(&self) -> &str {
        &self.as_str()[1..]
    }
    /// Number of components.
    pub fn depth(&self) -> usize {
        self.as_str().bytes().filter(|&b| b == b'/').count()
    }
    /// True when `self` is a strict ancestor of `other`.
    pub fn is_ancestor_of(&self, other: &LitePath) -> bool {
        let (me, them) = (self.as_str(), other.as_str());
        them.len() > me.len() && them.starts_with(me) && them.as_bytes()[me.len()] == b'/'
    }
}

impl fmt::Display for LitePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The non-empty `/`-separated components of `path`. What `str::split('/')` does, without
/// its per-piece `memchr` set-up, which dominated building the trie for short components.
pub fn components(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
            let comp = &rest[..end];
            rest = &rest[(end + 1).min(rest.len())..];
            if !comp.is_empty() {
                return Some(comp);
            }
        }
    })
}

/// The length of the longest run of whole leading components two normal paths share:
/// `/etc/bench` for `/etc/bench/0001.conf` and `/etc/bench/0002.conf`, `/etc/a` for `/etc/a`
/// and `/etc/a/b`, nothing for `/etc` and `/etcx`.
fn shared_prefix(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // Eight bytes at a time, then byte by byte (paths share long prefixes when sorted).
    let word = |c: &[u8]| u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default());
    let mut common = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let diff = word(x) ^ word(y);
        if diff != 0 {
            common += (diff.trailing_zeros() / 8) as usize;
            break;
        }
        common += 8;
    }
    if common % 8 == 0 {
        common += a[common..]
            .iter()
            .zip(&b[common..])
            .take_while(|(x, y)| x == y)
            .count();
    }
    let ends_component = |p: &[u8]| p.get(common).is_none_or(|&c| c == b'/');
    if ends_component(a) && ends_component(b) {
        common
    } else {
        b[..common].iter().rposition(|&c| c == b'/').unwrap_or(0)
    }
}

/// Which images a litefile row applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum ImageScope {
    /// `ALL` or empty.
    All,
    Named(String),
}

impl ImageScope {
    pub fn applies_to(&self, image: &str) -> bool {
        match self {
            ImageScope::All => true,
            ImageScope::Named(n) => n == image,
        }
    }
}

/// One enabled litefile row, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiteRow {
    pub image: ImageScope,
    pub path: LitePath,
    pub is_dir: bool,
    pub options: LiteOptions,
    /// The options as written in the table (xCAT's commands print them as written).
    pub options_text: Cow<'static, str>,
    /// Line in the litefile, for messages.
    pub line: usize,
}

/// The litefile columns a row is read from, located once from the header.
struct LiteColumns {
    image: usize,
    file: usize,
    options: usize,
    disable: Option<usize>,
}

impl LiteColumns {
    fn find(columns: &[String], file: &Path) -> Result<LiteColumns, TabError> {
        let col = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| TabError {
                    file: file.to_path_buf(),
                    line: 1,
                    field: None,
                    problem: format!("litefile header lacks the {name:?} column"),
                })
        };
        Ok(LiteColumns {
            image: col("image")?,
            file: col("file")?,
            options: col("options")?,
            disable: columns.iter().position(|c| c == "disable"),
        })
    }

    /// The typed row, `None` when the row is disabled.
    fn row<'f>(
        &self,
        columns: &[String],
        file: &Path,
        line: usize,
        field: impl Fn(usize) -> Option<&'f str>,
    ) -> Result<Option<LiteRow>, TabError> {
        if is_disabled(self.disable.and_then(&field)) {
            return Ok(None);
        }
        let err = |c: usize, problem: String| TabError {
            file: file.to_path_buf(),
            line,
            field: Some((c + 1, Some(columns[c].clone()))),
            problem,
        };
        let image = match field(self.image).map(str::trim) {
            None | Some("") | Some("ALL") => ImageScope::All,
            Some(name) => ImageScope::Named(name.to_string()),
        };
        let text =
            field(self.file).ok_or_else(|| err(self.file, "a file path is required".into()))?;
        let (path, is_dir) = LitePath::parse(text.trim()).map_err(|e| err(self.file, e))?;
        let options_text = field(self.options).unwrap_or("").trim();
        let options = LiteOptions::parse(Some(options_text)).map_err(|e| err(self.options, e))?;
        Ok(Some(LiteRow {
            image,
            path,
            is_dir,
            options,
            options_text: options_spelling(options_text),
            line,
        }))
    }
}

/// Parses every enabled row of a litefile table. Errors name the file, line and field.
pub fn parse_litefile(table: &Table, file: &Path) -> Result<Vec<LiteRow>, TabError> {
    let cols = LiteColumns::find(&table.columns, file)?;
    let mut out = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let field = |c: usize| row.fields.get(c).and_then(|f| f.as_deref());
        out.extend(cols.row(&table.columns, file, row.line, field)?);
    }
    Ok(out)
}

/// Parses a litefile's bytes straight into typed rows, copying only what the rows keep
/// (what a mount does: no intermediate [`Table`]).
pub fn parse_litefile_bytes(bytes: &[u8], file: &Path) -> Result<Vec<LiteRow>, TabError> {
    let mut out = Vec::with_capacity(row_estimate(bytes));
    scan_litefile(bytes, file, |row| out.push(row))?;
    Ok(out)
}

/// Every enabled row of a litefile's bytes, typed, in file order, handed to `take`.
fn scan_litefile(bytes: &[u8], file: &Path, mut take: impl FnMut(LiteRow)) -> Result<(), TabError> {
    let mut scan = RowScanner::new(bytes, file)?;
    let cols = LiteColumns::find(scan.columns(), file)?;
    while let Some(row) = scan.next_row()? {
        let field = |c: usize| row.fields.get(c).and_then(|f| f.as_deref());
        if let Some(row) = cols.row(row.columns, file, row.line, field)? {
            take(row);
        }
    }
    Ok(())
}

/// At least the number of rows in `bytes` (its line count), so a vector of rows is
/// allocated once. A guess from the bytes per row undershot a litefile of short rows and
/// the vector grew to twice its size, each new page costing a fault in a fresh daemon.
fn row_estimate(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Parses a litefile's bytes straight into the rule set for `image` (what a mount does):
/// rows that do not apply are dropped as they are read, and no list of rows is kept
/// beside the rules. In a fresh daemon each page first touched costs a fault (~3 µs on
/// the machine kind); a 2,000-row litefile's row list alone was ~45 of them.
pub fn rules_from_litefile_bytes(
    bytes: &[u8],
    file: &Path,
    image: &str,
) -> Result<RuleSet, TabError> {
    let mut rules = Vec::with_capacity(row_estimate(bytes));
    scan_litefile(bytes, file, |row| {
        if row.image.applies_to(image) {
            rules.push(LiteRule::from(row));
        }
    })?;
    Ok(RuleSet::build(rules, image))
}

/// Reads and parses a litefile file.
pub fn read_litefile(file: &Path) -> Result<Vec<LiteRow>, TabError> {
    parse_litefile_bytes(&read_table_file(file)?, file)
}

/// Index of a rule in a [`RuleSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RuleId(pub u32);

/// The rule in force for one path of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiteRule {
    pub path: LitePath,
    pub is_dir: bool,
    pub options: LiteOptions,
    pub options_text: Cow<'static, str>,
    /// Line of the row this rule came from.
    pub line: usize,
    /// True when the row named the image (it beat any `ALL` row for the path).
    pub image_specific: bool,
}

impl From<LiteRow> for LiteRule {
    fn from(row: LiteRow) -> LiteRule {
        LiteRule {
            image_specific: matches!(row.image, ImageScope::Named(_)),
            path: row.path,
            is_dir: row.is_dir,
            options: row.options,
            options_text: row.options_text,
            line: row.line,
        }
    }
}

impl LiteRule {
    pub fn storage(&self) -> Storage {
        self.options.storage()
    }
}

/// A constraint the rules break, with the rows involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub message: String,
    /// Litefile lines of the rows involved.
    pub lines: Vec<usize>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.lines.iter().map(|l| l.to_string()).collect();
        write!(f, "{} (litefile line {})", self.message, lines.join(", "))
    }
}

/// A position in the rule trie: one path component deep per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrieNode(u32);

/// One trie node. Its name and children are ranges of the trie's shared arrays, so building
/// the trie allocates a handful of arrays, not a map and a string per node.
#[derive(Debug, Clone, Copy)]
struct TrieEntry {
    parent: u32,
    /// Byte range of this node's path component in [`Trie::names`].
    name: (u32, u32),
    /// The rule at this node, or [`NO_RULE`] (a plain `u32`: 24 bytes a node, not 28, and
    /// in a fresh daemon every page of nodes is a fault).
    rule: u32,
    /// Range of this node's children in [`Trie::children`].
    kids: (u32, u32),
}

/// [`TrieEntry::rule`] of a node no rule names (rule ids are indexes of a `Vec`, far below).
const NO_RULE: u32 = u32::MAX;

impl TrieEntry {
    fn rule(&self) -> Option<RuleId> {
        (self.rule != NO_RULE).then_some(RuleId(self.rule))
    }
}

/// The rule paths as a tree of components, for lookups one component at a time. Nodes are
/// found by (parent, name) in one hash table; node 0 is the root.
#[derive(Debug)]
struct Trie {
    nodes: Vec<TrieEntry>,
    names: String,
    index: hashbrown::HashTable<u32>,
    children: Vec<u32>,
    /// Keys are path components from the admin's own litefile, so a fast hasher without
    /// DoS resistance is the right trade (foldhash, what hashbrown itself uses).
    hasher: foldhash::fast::FixedState,
}

impl Trie {
    /// A trie with room for `nodes` nodes whose names total `name_bytes`.
    fn with_capacity(nodes: usize, name_bytes: usize) -> Trie {
        let mut t = Trie {
            nodes: Vec::with_capacity(nodes + 1),
            names: String::with_capacity(name_bytes),
            index: hashbrown::HashTable::with_capacity(nodes),
            children: Vec::new(),
            hasher: foldhash::fast::FixedState::default(),
        };
        t.nodes.push(TrieEntry {
            parent: 0,
            name: (0, 0),
            rule: NO_RULE,
            kids: (0, 0),
        });
        t
    }

    fn name_of<'n>(names: &'n str, e: &TrieEntry) -> &'n str {
        &names[e.name.0 as usize..e.name.1 as usize]
    }

    fn child(&self, parent: u32, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one((parent, name));
        self.index
            .find(hash, |&n| {
                let e = &self.nodes[n as usize];
                e.parent == parent && Self::name_of(&self.names, e) == name
            })
            .copied()
    }

    /// The child `name` of `parent`, added when missing.
    fn child_or_insert(&mut self, parent: u32, name: &str) -> u32 {
        let Trie {
            nodes,
            names,
            index,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one((parent, name));
        let entry = index.entry(
            hash,
            |&n| {
                let e = &nodes[n as usize];
                e.parent == parent && Self::name_of(names, e) == name
            },
            |&n| {
                let e = &nodes[n as usize];
                hasher.hash_one((e.parent, Self::name_of(names, e)))
            },
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(o) => *o.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let n = nodes.len() as u32;
                let start = names.len() as u32;
                names.push_str(name);
                nodes.push(TrieEntry {
                    parent,
                    name: (start, names.len() as u32),
                    rule: NO_RULE,
                    kids: (0, 0),
                });
                v.insert(n);
                n
            }
        }
    }

    /// The trie of `rules`, which are sorted by path with no path twice, and for each rule
    /// the nearest rule strictly above it (for the parent/child constraints).
    fn build<'p>(paths: impl Iterator<Item = &'p str> + Clone) -> (Trie, Vec<Option<RuleId>>) {
        // Sized first, from the components each path does not share with the one before:
        // never less than what the build adds (a name that comes back after a sibling
        // sorting between, as `b` in `/a/b`, `/a/b.c`, `/a/b/d`, is counted twice), and
        // no more. Arrays sized to fit can take the memory the caller just freed (a rule
        // table's bytes) instead of touching new pages, each a fault in a fresh daemon.
        let (mut rules, mut nodes, mut name_bytes, mut prev) = (0, 0, 0, "");
        for path in paths.clone() {
            rules += 1;
            for comp in components(&path[shared_prefix(prev, path)..]) {
                nodes += 1;
                name_bytes += comp.len();
            }
            prev = path;
        }
        let mut trie = Trie::with_capacity(nodes, name_bytes);
        let mut above = Vec::with_capacity(rules);
        // The previous rule's path, one (node, nearest rule at or above it, end of the
        // component in that path) per component: sorted paths share their leading
        // components with the one before (2,000 rows under `/etc/bench/` walk `etc` and
        // `bench` once), so only the rest is looked up.
        let mut stack: Vec<(u32, Option<RuleId>, usize)> = Vec::new();
        let mut prev = "";
        for (i, path) in paths.enumerate() {
            let shared = shared_prefix(prev, path);
            // `path[..shared]` is whole components: keep the ones ending within it.
            while stack.last().is_some_and(|&(_, _, end)| end > shared) {
                stack.pop();
            }
            let (mut node, mut best, _) = stack.last().copied().unwrap_or((0, None, 0));
            let mut at = shared;
            for comp in components(&path[shared..]) {
                node = trie.child_or_insert(node, comp);
                best = trie.nodes[node as usize].rule().or(best);
                // `components` skips the `/` before each name: the name ends here.
                at = comp.as_ptr() as usize - path.as_ptr() as usize + comp.len();
                stack.push((node, best, at));
            }
            debug_assert_eq!(at, path.len());
            let id = RuleId(i as u32);
            above.push(stack.len().checked_sub(2).and_then(|d| stack[d].1));
            trie.nodes[node as usize].rule = id.0;
            if let Some(last) = stack.last_mut() {
                last.1 = Some(id);
            }
            prev = path;
        }
        debug_assert!(trie.nodes.len() <= nodes + 1 && trie.names.len() <= name_bytes);
        trie.link_children();
        (trie, above)
    }

    /// Lays out every node's children contiguously (in insertion order), once all paths
    /// are in.
    fn link_children(&mut self) {
        // Each node's child count is kept in its own `kids.1` (no array of counts beside).
        for n in 1..self.nodes.len() {
            let p = self.nodes[n].parent as usize;
            self.nodes[p].kids.1 += 1;
        }
        let mut next = 0u32;
        for e in self.nodes.iter_mut() {
            let count = e.kids.1;
            e.kids = (next, next);
            next += count;
        }
        self.children = vec![0; next as usize];
        for n in 1..self.nodes.len() {
            let p = self.nodes[n].parent as usize;
            let slot = self.nodes[p].kids.1;
            self.children[slot as usize] = n as u32;
            self.nodes[p].kids.1 += 1;
        }
    }

    fn kids(&self, node: u32) -> impl Iterator<Item = (&str, u32)> {
        let (a, b) = self.nodes[node as usize].kids;
        self.children[a as usize..b as usize]
            .iter()
            .map(|&n| (Self::name_of(&self.names, &self.nodes[n as usize]), n))
    }
}

/// One rule as a [`RuleSet`] keeps it: 20 bytes, its path a range of the set's one text
/// of paths and its options spelling an index into the set's list of spellings. What the
/// filesystem reads per request (storage, directory or not, path) comes from here; the
/// full [`LiteRule`]s are made only when asked for ([`RuleSet::rules`]).
///
/// Why: a mount loads its rules while the kernel mount is made, in a fresh process where
/// every new page of memory is a fault (4-9 µs on the bench VM). 2,000 `LiteRule`s are
/// 128 KiB, the same rules as records 40 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleRecord {
    /// Byte range of the path in [`RuleSet::paths`].
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) line: u32,
    /// Index into [`RuleSet::spellings`].
    pub(crate) spelling: u32,
    pub(crate) options: LiteOptions,
    pub(crate) is_dir: bool,
    pub(crate) image_specific: bool,
}

/// The rules for one image, ready for lookups.
#[derive(Debug)]
pub struct RuleSet {
    image: String,
    /// Every rule's path, one after another, in rule order.
    paths: Arc<str>,
    records: Vec<RuleRecord>,
    /// Each options value as written, once.
    spellings: Vec<Cow<'static, str>>,
    /// The rules as [`LiteRule`]s, made from the records on first use.
    full: std::sync::OnceLock<Vec<LiteRule>>,
    trie: Trie,
    violations: Vec<Violation>,
}

impl RuleSet {
    /// Selects the rows that apply to `image`: a row naming the image beats an `ALL` row for
    /// the same path. Constraint violations are collected, not fatal: see [`Self::violations`].
    pub fn for_image(rows: &[LiteRow], image: &str) -> RuleSet {
        let applying = rows.iter().filter(|r| r.image.applies_to(image));
        RuleSet::build(applying.cloned().map(LiteRule::from).collect(), image)
    }

    /// [`RuleSet::for_image`] taking the rows (no copies of their strings).
    pub fn from_rows(rows: Vec<LiteRow>, image: &str) -> RuleSet {
        let applying = rows.into_iter().filter(|r| r.image.applies_to(image));
        RuleSet::build(applying.map(LiteRule::from).collect(), image)
    }

    /// The rule set of rules already selected, de-duplicated and sorted by path (a compiled
    /// rule table's), as records of `paths` and `spellings`. Only checked: every range is a
    /// path in normal form, the order (strictly increasing paths) and, like any rule set,
    /// the constraints; any broken is an error (a table is compiled only from rules that
    /// keep them).
    pub(crate) fn from_checked(
        paths: Arc<str>,
        records: Vec<RuleRecord>,
        spellings: Vec<Cow<'static, str>>,
        image: &str,
    ) -> Result<RuleSet, String> {
        for r in &records {
            let text = paths
                .get(r.start as usize..r.end as usize)
                .ok_or_else(|| format!("path bytes {}..{} are not text", r.start, r.end))?;
            LitePath::check_normal(text)?;
            if r.spelling as usize >= spellings.len() {
                return Err(format!("options spelling {} is not listed", r.spelling));
            }
        }
        let text = |r: &RuleRecord| &paths[r.start as usize..r.end as usize];
        if let Some(w) = records.windows(2).find(|w| text(&w[0]) >= text(&w[1])) {
            return Err(format!(
                "rules out of order: {} before {}",
                text(&w[0]),
                text(&w[1])
            ));
        }
        let (trie, above) = Trie::build(records.iter().map(text));
        let mut set = RuleSet {
            image: image.to_string(),
            paths,
            records,
            spellings,
            full: std::sync::OnceLock::new(),
            trie,
            violations: Vec::new(),
        };
        set.validate(&above);
        match set.violations.first() {
            Some(v) => Err(v.to_string()),
            None => Ok(set),
        }
    }

    /// Builds the rule set from the rules of the rows that apply to `image`, in file order.
    fn build(mut rules: Vec<LiteRule>, image: &str) -> RuleSet {
        let mut violations = Vec::new();
        // Rows naming one path end up side by side, still in file order (a stable sort):
        // the first row stands, an image-specific row beats an `ALL` row. Duplicates are
        // dropped in place (`dedup_by` hands the later row first, the one kept second).
        rules.sort_by(|a, b| a.path.cmp(&b.path));
        rules.dedup_by(|later, kept| {
            if later.path != kept.path {
                return false;
            }
            if later.image_specific == kept.image_specific {
                if later.options != kept.options || later.is_dir != kept.is_dir {
                    violations.push(Violation {
                        message: format!(
                            "{} is listed twice for the same images with different \
                             options ({:?} and {:?})",
                            later.path, kept.options_text, later.options_text
                        ),
                        lines: vec![kept.line, later.line],
                    });
                }
            } else if later.image_specific {
                std::mem::swap(later, kept); // the image's own row beats an ALL row
            }
            true
        });
        let (trie, above) = Trie::build(rules.iter().map(|r| r.path.as_str()));
        // The same rules as records of one text of paths, as a compiled table loads them.
        let mut paths = String::with_capacity(rules.iter().map(|r| r.path.as_str().len()).sum());
        let mut spellings: Vec<Cow<'static, str>> = Vec::new();
        let mut spelling_of: std::collections::HashMap<&str, u32> = Default::default();
        let mut records = Vec::with_capacity(rules.len());
        for r in &rules {
            let start = paths.len() as u32;
            paths.push_str(r.path.as_str());
            let spelling = *spelling_of.entry(&r.options_text).or_insert_with(|| {
                spellings.push(r.options_text.clone());
                (spellings.len() - 1) as u32
            });
            records.push(RuleRecord {
                start,
                end: paths.len() as u32,
                line: u32::try_from(r.line).unwrap_or(u32::MAX),
                spelling,
                options: r.options,
                is_dir: r.is_dir,
                image_specific: r.image_specific,
            });
        }
        drop(spelling_of);
        let mut set = RuleSet {
            image: image.to_string(),
            paths: Arc::from(paths),
            records,
            spellings,
            full: std::sync::OnceLock::from(rules),
            trie,
            violations,
        };
        set.validate(&above);
        set
    }

    /// Checks xCAT's constraints; `above[i]` is the nearest rule strictly above rule `i`.
    fn validate(&mut self, above: &[Option<RuleId>]) {
        let mut found = Vec::new();
        let path = |r: &RuleRecord| &self.paths[r.start as usize..r.end as usize];
        for (rule, parent) in self.records.iter().zip(above) {
            if rule.options.storage() == Storage::Con && rule.is_dir {
                found.push(Violation {
                    message: format!("{}: con cannot be used on a directory", path(rule)),
                    lines: vec![rule.line as usize],
                });
            }
            if let Some(parent) = parent {
                let p = &self.records[parent.0 as usize];
                let msg = if !p.is_dir {
                    Some(format!(
                        "{} is under {}, which is a file entry (a directory entry ends in '/')",
                        path(rule),
                        path(p)
                    ))
                } else {
                    match (p.options.storage(), rule.options.storage()) {
                        (Storage::Ro | Storage::Con, _) => Some(format!(
                            "{} is under {}, whose option {} allows no entries below it",
                            path(rule),
                            path(p),
                            p.options.storage().name()
                        )),
                        (Storage::Persistent, s) if s != Storage::Persistent => Some(format!(
                            "{} ({}) is under the persistent directory {}: entries below a \
                             persistent directory must be persistent too",
                            path(rule),
                            s.name(),
                            path(p)
                        )),
                        _ => None,
                    }
                };
                if let Some(message) = msg {
                    found.push(Violation {
                        message,
                        lines: vec![p.line as usize, rule.line as usize],
                    });
                }
            }
        }
        self.violations.extend(found);
        self.violations.sort_by(|a, b| a.lines.cmp(&b.lines));
    }

    pub fn image(&self) -> &str {
        &self.image
    }
    /// The rules in full (made from the records on the first call).
    pub fn rules(&self) -> &[LiteRule] {
        self.full.get_or_init(|| {
            self.records
                .iter()
                .map(|r| LiteRule {
                    path: LitePath::of_checked(&self.paths, r.start, r.end),
                    is_dir: r.is_dir,
                    options: r.options,
                    options_text: self.spellings[r.spelling as usize].clone(),
                    line: r.line as usize,
                    image_specific: r.image_specific,
                })
                .collect()
        })
    }
    pub fn rule(&self, id: RuleId) -> &LiteRule {
        &self.rules()[id.0 as usize]
    }
    /// Whether the full rules have been made (for tests of what a mount's path costs).
    #[cfg(test)]
    pub(crate) fn has_full_rules(&self) -> bool {
        self.full.get().is_some()
    }
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
    /// The rule's path (normal form, no trailing `/`), without making [`LiteRule`]s.
    pub fn path(&self, id: RuleId) -> &str {
        let r = &self.records[id.0 as usize];
        &self.paths[r.start as usize..r.end as usize]
    }
    /// The rule's path relative to `/`, for joining under a layer's root.
    pub fn relative(&self, id: RuleId) -> &str {
        &self.path(id)[1..]
    }
    pub fn is_dir(&self, id: RuleId) -> bool {
        self.records[id.0 as usize].is_dir
    }
    pub fn storage(&self, id: RuleId) -> Storage {
        self.records[id.0 as usize].options.storage()
    }
    /// The text of all paths, the records pointing into it, and each options spelling once
    /// in order of first use: what a compiled rule table stores.
    pub(crate) fn parts(&self) -> (&str, &[RuleRecord], &[Cow<'static, str>]) {
        (&self.paths, &self.records, &self.spellings)
    }
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The rule governing `path`: the deepest entry that is the path itself or a directory
    /// entry above it. `None` means the path is plain read-only image.
    pub fn lookup(&self, path: &str) -> Option<&LiteRule> {
        self.lookup_id(path).map(|id| self.rule(id))
    }

    /// Like [`Self::lookup`], returning the rule's id.
    pub fn lookup_id(&self, path: &str) -> Option<RuleId> {
        let mut node = self.root();
        let mut best: Option<RuleId> = None;
        for comp in components(path) {
            if let Some(id) = self.rule_at(node) {
                if !self.is_dir(id) {
                    return None; // a file entry governs nothing below itself
                }
                best = Some(id);
            }
            match self.child(node, comp) {
                Some(n) => node = n,
                None => return best,
            }
        }
        self.rule_at(node).or(best)
    }

    /// The trie's root (the path `/`).
    pub fn root(&self) -> TrieNode {
        TrieNode(0)
    }
    /// One step down the trie, `None` when no entry lies at or below `node/name`.
    pub fn child(&self, node: TrieNode, name: &str) -> Option<TrieNode> {
        self.trie.child(node.0, name).map(TrieNode)
    }
    /// The rule whose path is exactly this node.
    pub fn rule_at(&self, node: TrieNode) -> Option<RuleId> {
        self.trie.nodes[node.0 as usize].rule()
    }
    /// Names of entries one level below `node` (rule paths, or directories leading to one).
    pub fn child_names(&self, node: TrieNode) -> impl Iterator<Item = (&str, TrieNode)> {
        self.trie.kids(node.0).map(|(k, v)| (k, TrieNode(v)))
    }
}

/// Every image name a litefile mentions (for checking all of them).
pub fn image_names(rows: &[LiteRow]) -> Vec<String> {
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(|r| match &r.image {
            ImageScope::Named(n) => Some(n.clone()),
            ImageScope::All => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Convenience for callers holding a file path: read, parse and select for an image. A
/// compiled rule table beside the litefile is used instead of parsing when it was compiled
/// from exactly these bytes for this image ([`crate::rule_table`]). Where the rules came
/// from is logged ([`read_rules`] leaves that to its caller).
pub fn load_rules(file: &Path, image: &str) -> Result<RuleSet, TabError> {
    let (rules, source) = read_rules(file, image);
    source.log();
    rules
}

/// [`load_rules`] without the log line: the rules, and where they came from.
pub fn read_rules(
    file: &Path,
    image: &str,
) -> (Result<RuleSet, TabError>, crate::rule_table::RulesSource) {
    use crate::rule_table::{Beside, RulesSource, load_beside};
    let unused = match load_beside(file, image) {
        Beside::Loaded(rules, table) => return (Ok(*rules), RulesSource::Table(table)),
        Beside::Unused(unused) => Some(unused),
        Beside::Absent => None,
    };
    let parsed =
        read_table_file(file).and_then(|bytes| rules_from_litefile_bytes(&bytes, file, image));
    (parsed, RulesSource::Litefile(unused))
}

/// Builds rows from `(image, file, options)` triples; for tests and generated tables.
pub fn rows_from(entries: &[(&str, &str, &str)]) -> Result<Vec<LiteRow>, TabError> {
    let mut t = Table::new(&["image", "file", "options", "comments", "disable"]);
    for (i, (img, file, opt)) in entries.iter().enumerate() {
        let f = |s: &str| (!s.is_empty()).then(|| s.to_string());
        t.rows.push(Row {
            line: i + 2,
            fields: vec![f(img), f(file), f(opt), None, None],
        });
    }
    parse_litefile(&t, &PathBuf::from("<generated>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str, &str)], image: &str) -> RuleSet {
        RuleSet::for_image(&rows_from(entries).unwrap(), image)
    }

    #[test]
    fn a_rules_record_says_what_its_full_rule_says() {
        let s = set(
            &[
                ("", "/etc/ssh/", "persistent"),
                ("", "/etc/motd", "con"),
                ("", "/var/log/", "tmpfs, rw"),
                ("", "/opt/app/conf", "link,ro"),
                ("", "/etc/ssh/", "tmpfs"),
            ],
            "",
        );
        assert_eq!(s.len(), 4);
        for (i, rule) in s.rules().iter().enumerate() {
            let id = RuleId(i as u32);
            assert_eq!(s.path(id), rule.path.as_str());
            assert_eq!(s.relative(id), rule.path.relative());
            assert_eq!(s.is_dir(id), rule.is_dir);
            assert_eq!(s.storage(id), rule.storage());
        }
        // The spelling as written survives the records, and rows spelled alike share one.
        let log = s.lookup("/var/log/messages").expect("rule");
        assert_eq!(log.options_text, "tmpfs, rw");
        assert_eq!(s.spellings.len(), 4);
        // Duplicate rows were reported, not lost.
        assert_eq!(s.violations().len(), 1);
    }

    #[test]
    fn every_documented_spelling_parses_and_is_kept_without_a_copy() {
        for text in OPTION_SPELLINGS {
            assert!(LiteOptions::parse(Some(text)).is_ok(), "{text:?}");
            assert!(
                matches!(options_spelling(text), Cow::Borrowed(_)),
                "{text:?}"
            );
        }
        assert!(matches!(options_spelling("rw,tmpfs"), Cow::Owned(ref s) if s == "rw,tmpfs"));
    }

    #[test]
    fn every_option_parses_to_its_meaning() {
        use Method::*;
        use Storage::*;
        let cases = [
            ("", Tmpfs, Link),
            ("tmpfs", Tmpfs, Copy),
            ("rw", Tmpfs, Copy),
            ("tmpfs,rw", Tmpfs, Copy),
            ("persistent", Persistent, Copy),
            ("ro", Ro, Copy),
            ("con", Con, Copy),
            ("bind", Tmpfs, Bind),
            ("bind,persistent", Persistent, Bind),
            ("link", Tmpfs, Link),
            ("link,ro", Ro, Link),
            ("link,persistent", Persistent, Link),
            ("link,con", Con, Link),
            ("localdisk", LocalDisk, Copy),
            (" persistent , bind ", Persistent, Bind),
        ];
        for (text, storage, method) in cases {
            let o = LiteOptions::parse(Some(text)).unwrap();
            assert_eq!((o.storage(), o.method()), (storage, method), "{text:?}");
            let again = LiteOptions::parse(Some(o.canonical())).unwrap();
            assert_eq!(again, o, "canonical spelling of {text:?} must parse back");
        }
        assert_eq!(LiteOptions::parse(None).unwrap().storage(), Tmpfs);
        for bad in [
            "rox",
            "ro,persistent",
            "bind,ro",
            "link,bind",
            "tmpfs,persistent",
            "localdisk,link",
        ] {
            let e = LiteOptions::parse(Some(bad)).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn bad_rows_name_file_line_and_field() {
        let text = "#image,file,options,comments,disable\n\"ALL\",\"/etc/a\",,,\n\"ALL\",\"/etc/b\",\"bogus\",,\n";
        let t = Table::parse(text.as_bytes(), Path::new("lf.csv")).unwrap();
        let e = parse_litefile(&t, Path::new("lf.csv")).unwrap_err();
        assert_eq!((e.line, e.field.clone().unwrap().0), (3, 3));
        assert!(
            e.to_string()
                .starts_with("lf.csv:3: field 3 (options): unknown options"),
            "{e}"
        );
        for bad in ["etc/x", "/etc/../x", "/", "/a/./b", ""] {
            let text = format!("#image,file,options\n,\"{bad}\",\n");
            let t = Table::parse(text.as_bytes(), Path::new("lf.csv")).unwrap();
            let e = parse_litefile(&t, Path::new("lf.csv")).unwrap_err();
            assert_eq!(e.field.unwrap().0, 2, "{bad:?}");
        }
        let t = Table::parse(b"#image,options\n", Path::new("lf.csv")).unwrap();
        assert!(
            parse_litefile(&t, Path::new("lf.csv"))
                .unwrap_err()
                .problem
                .contains("file")
        );
    }

    #[test]
    fn disabled_rows_are_ignored() {
        let text = "#image,file,options,comments,disable\n,\"/a\",,,\"1\"\n,\"/b\",,,\"no\"\n";
        let t = Table::parse(text.as_bytes(), Path::new("x")).unwrap();
        let rows = parse_litefile(&t, Path::new("x")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path.as_str(), "/b");
    }

    #[test]
    fn image_row_beats_all_row() {
        let s = set(
            &[
                ("ALL", "/etc/motd", "tmpfs"),
                ("compute", "/etc/motd", "persistent"),
                ("other", "/x", "ro"),
            ],
            "compute",
        );
        assert_eq!(s.rules().len(), 1);
        assert_eq!(
            s.lookup("/etc/motd").unwrap().storage(),
            Storage::Persistent
        );
        let s = set(
            &[
                ("compute", "/etc/motd", "persistent"),
                ("", "/etc/motd", "tmpfs"),
            ],
            "compute",
        );
        assert_eq!(
            s.lookup("/etc/motd").unwrap().storage(),
            Storage::Persistent
        );
        let s = set(
            &[
                ("compute", "/etc/motd", "persistent"),
                ("", "/etc/motd", "tmpfs"),
            ],
            "login",
        );
        assert_eq!(s.lookup("/etc/motd").unwrap().storage(), Storage::Tmpfs);
        assert!(s.violations().is_empty());
    }

    #[test]
    fn a_litefile_parsed_straight_into_rules_gives_the_rules_of_its_rows() {
        // Every case the row list handles: ALL and named rows either way round, a third
        // image's row, conflicting and agreeing duplicates, a disabled row, quoting, a
        // directory, a row that is not normal, CRLF endings.
        let text = "#image,file,options,comments,disable\r\n\
            \"ALL\",\"/etc/motd\",\"tmpfs\",,\r\n\
            \"compute\",\"/etc/motd\",\"persistent\",,\r\n\
            \"compute\",\"/etc/hosts\",\"persistent\",,\r\n\
            \"ALL\",\"/etc/hosts\",\"ro\",,\r\n\
            \"other\",\"/x\",\"ro\",,\r\n\
            \"ALL\",\"/var/log/\",,\"a \"\"quoted\"\" comment\",\r\n\
            \"ALL\",\"//var//tmp//\",\"tmpfs\",,\r\n\
            \"ALL\",\"/etc/a\",\"tmpfs\",,\r\n\
            \"ALL\",\"/etc/a\",\"ro\",,\r\n\
            \"ALL\",\"/etc/b\",\"tmpfs\",,\r\n\
            \"ALL\",\"/etc/b\",\"rw\",,\r\n\
            \"ALL\",\"/etc/off\",\"tmpfs\",,\"1\"\r\n";
        let file = Path::new("litefile.csv");
        let rows = parse_litefile_bytes(text.as_bytes(), file).unwrap();
        for image in ["compute", "login", "other", ""] {
            let direct = rules_from_litefile_bytes(text.as_bytes(), file, image).unwrap();
            let listed = RuleSet::for_image(&rows, image);
            assert_eq!(direct.rules(), listed.rules(), "{image}");
            assert_eq!(direct.violations(), listed.violations(), "{image}");
            for p in [
                "/etc/motd",
                "/etc/hosts",
                "/x",
                "/var/log/y",
                "/var/tmp",
                "/etc/a",
            ] {
                assert_eq!(direct.lookup_id(p), listed.lookup_id(p), "{image} {p}");
            }
        }
        let compute = rules_from_litefile_bytes(text.as_bytes(), file, "compute").unwrap();
        let storage = |p| compute.lookup(p).map(|r| r.storage());
        assert_eq!(storage("/etc/motd"), Some(Storage::Persistent));
        assert_eq!(storage("/etc/hosts"), Some(Storage::Persistent));
        assert_eq!(storage("/x"), None);
        assert_eq!(storage("/etc/off"), None, "disabled");
        assert_eq!(compute.violations().len(), 1, "{:?}", compute.violations());
        assert_eq!(compute.violations()[0].lines, vec![9, 10]);
        // Errors still name the file, line and field.
        let bad = "#image,file,options,comments,disable\n\"ALL\",\"etc/x\",,,\n";
        let e = rules_from_litefile_bytes(bad.as_bytes(), file, "x").unwrap_err();
        assert_eq!((e.line, e.field.as_ref().map(|f| f.0)), (2, Some(2)), "{e}");
    }

    #[test]
    fn conflicting_duplicates_are_violations() {
        let s = set(
            &[("ALL", "/etc/motd", "tmpfs"), ("ALL", "/etc/motd", "ro")],
            "x",
        );
        assert_eq!(s.violations().len(), 1);
        assert_eq!(s.violations()[0].lines, vec![2, 3]);
        let s = set(
            &[("ALL", "/etc/motd", "tmpfs"), ("ALL", "/etc/motd", "rw")],
            "x",
        );
        assert!(
            s.violations().is_empty(),
            "same meaning, different spelling"
        );
    }

    #[test]
    fn longest_prefix_lookup() {
        let s = set(
            &[
                ("", "/var/", "tmpfs"),
                ("", "/var/lib/", "persistent"),
                ("", "/etc/fstab", ""),
                ("", "/etc/ssh/", "ro"),
            ],
            "img",
        );
        let st = |p: &str| s.lookup(p).map(|r| r.storage());
        assert_eq!(st("/var"), Some(Storage::Tmpfs));
        assert_eq!(st("/var/log/messages"), Some(Storage::Tmpfs));
        assert_eq!(st("/var/lib"), Some(Storage::Persistent));
        assert_eq!(st("/var/lib/rpm/Packages"), Some(Storage::Persistent));
        assert_eq!(st("/var/library"), Some(Storage::Tmpfs));
        assert_eq!(st("/etc/fstab"), Some(Storage::Tmpfs));
        assert_eq!(
            st("/etc/fstab/x"),
            None,
            "a file entry governs nothing below it"
        );
        assert_eq!(st("/etc/fstab2"), None);
        assert_eq!(st("/etc"), None);
        assert_eq!(st("/etc/ssh/ssh_config"), Some(Storage::Ro));
        assert_eq!(st("/"), None);
        assert_eq!(st("//etc//ssh/"), Some(Storage::Ro));
    }

    #[test]
    fn trie_steps_match_lookup() {
        let s = set(&[("", "/etc/ssh/", "tmpfs"), ("", "/etc/fstab", "")], "i");
        let etc = s.child(s.root(), "etc").unwrap();
        assert!(s.rule_at(etc).is_none());
        let mut names: Vec<&str> = s.child_names(etc).map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["fstab", "ssh"]);
        let ssh = s.child(etc, "ssh").unwrap();
        assert_eq!(s.rule(s.rule_at(ssh).unwrap()).path.as_str(), "/etc/ssh");
        assert!(s.child(etc, "passwd").is_none());
    }

    #[test]
    fn parent_child_constraints() {
        let v = |e: &[(&str, &str, &str)]| set(e, "i").violations().to_vec();
        // ro and con parents may have no children
        assert_eq!(v(&[("", "/opt/", "ro"), ("", "/opt/a", "tmpfs")]).len(), 1);
        assert_eq!(
            v(&[("", "/opt/", "link,ro"), ("", "/opt/a", "ro")]).len(),
            1
        );
        // con on a directory (and as a parent)
        let found = v(&[("", "/opt/", "con"), ("", "/opt/a", "con")]);
        assert_eq!(found.len(), 2, "{found:?}");
        // persistent parent needs persistent children
        let found = v(&[("", "/var/lib/", "persistent"), ("", "/var/lib/x", "tmpfs")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].lines, vec![2, 3]);
        assert!(found[0].to_string().contains("persistent"));
        assert!(
            v(&[
                ("", "/var/lib/", "persistent"),
                ("", "/var/lib/x", "bind,persistent")
            ])
            .is_empty()
        );
        // tmpfs parent with any child is fine, nearest ancestor counts
        assert!(
            v(&[
                ("", "/var/", "tmpfs"),
                ("", "/var/lib/", "persistent"),
                ("", "/var/lib/a", "persistent")
            ])
            .is_empty()
        );
        assert!(
            v(&[
                ("", "/var/", "tmpfs"),
                ("", "/var/x", "ro"),
                ("", "/var/y", "con")
            ])
            .is_empty()
        );
        // a file entry with entries under it
        assert_eq!(
            v(&[("", "/etc/fstab", "tmpfs"), ("", "/etc/fstab/x", "tmpfs")]).len(),
            1
        );
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(
            LitePath::parse("//etc//ssh/").unwrap(),
            (LitePath::parse("/etc/ssh").unwrap().0, true)
        );
        let (p, d) = LitePath::parse("/etc/fstab").unwrap();
        assert!(!d);
        assert_eq!(p.relative(), "etc/fstab");
        assert_eq!(p.depth(), 2);
        assert!(LitePath::parse("/etc").unwrap().0.is_ancestor_of(&p));
        assert!(!LitePath::parse("/et").unwrap().0.is_ancestor_of(&p));
    }

    #[test]
    fn components_and_shared_prefixes() {
        fn c(p: &str) -> Vec<&str> {
            components(p).collect()
        }
        assert!(c("").is_empty() && c("/").is_empty() && c("///").is_empty());
        assert_eq!(c("//etc//ssh/"), ["etc", "ssh"]);
        assert_eq!(c("etc/ssh"), ["etc", "ssh"]);
        assert_eq!(shared_prefix("", "/etc"), 0);
        assert_eq!(shared_prefix("/etc", "/etcx"), 0);
        assert_eq!(shared_prefix("/etc/a", "/etc/a/b"), "/etc/a".len());
        assert_eq!(shared_prefix("/etc/a-b", "/etc/a/b"), "/etc".len());
        assert_eq!(
            shared_prefix("/etc/bench/0001", "/etc/bench/0002"),
            "/etc/bench".len()
        );
        assert_eq!(shared_prefix("/etc/a/b/c", "/etc/a/d"), "/etc/a".len());
        // Word-at-a-time against byte-at-a-time, differences on both sides of every
        // 8-byte boundary.
        let slow = |a: &str, b: &str| {
            let (x, y) = (a.as_bytes(), b.as_bytes());
            let common = x.iter().zip(y).take_while(|(p, q)| p == q).count();
            let ends = |p: &[u8]| p.get(common).is_none_or(|&c| c == b'/');
            if ends(x) && ends(y) {
                common
            } else {
                y[..common].iter().rposition(|&c| c == b'/').unwrap_or(0)
            }
        };
        let base = "/usr/share/locale/de_DE/LC_MESSAGES/messages.mo";
        for cut in 0..=base.len() {
            let a = &base[..cut];
            for tail in ["", "/", "x", "/y", "/LC_MESSAGES", "_AT/z"] {
                let b = format!("{a}{tail}");
                assert_eq!(shared_prefix(a, &b), slow(a, &b), "{a:?} {b:?}");
                assert_eq!(shared_prefix(&b, base), slow(&b, base), "{b:?} {base:?}");
            }
        }
    }

    /// The trie (built from sorted paths, reusing the previous path's nodes) answers what a
    /// scan of every rule answers, for names that sort between a directory and its children
    /// (`a-b`, `a.b` sort before `a/`) and for paths at every depth.
    #[test]
    fn trie_agrees_with_a_scan_of_every_rule() {
        let names = ["a", "a-b", "a.b", "ab", "b", "a0"];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut random_path = |depth: usize| -> String {
            (0..depth)
                .map(|_| format!("/{}", names[next(names.len())]))
                .collect()
        };
        let mut entries: Vec<(String, String)> = Vec::new();
        for _ in 0..300 {
            let d = 1 + entries.len() % 4;
            let p = random_path(d);
            let dir = !entries.len().is_multiple_of(3);
            let opt = ["tmpfs", "persistent", "ro", ""][entries.len() % 4];
            entries.push((
                format!("{p}{}", if dir { "/" } else { "" }),
                opt.to_string(),
            ));
        }
        let rows: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|(p, o)| ("", p.as_str(), o.as_str()))
            .collect();
        let set = set(&rows, "i");
        let rules = set.rules();
        // Every rule's nearest rule strictly above it, by scanning.
        let (_, above) = Trie::build(rules.iter().map(|r| r.path.as_str()));
        for (i, r) in rules.iter().enumerate() {
            let scan = rules
                .iter()
                .enumerate()
                .filter(|(_, a)| a.path.is_ancestor_of(&r.path))
                .max_by_key(|(_, a)| a.path.depth())
                .map(|(j, _)| RuleId(j as u32));
            assert_eq!(above[i], scan, "nearest rule above {}", r.path);
        }
        // Lookups: a strict ancestor that is a file entry governs nothing; else the path's
        // own rule, else the deepest directory entry above it.
        for depth in 1..6 {
            for _ in 0..400 {
                let probe = random_path(depth);
                let p = LitePath::parse(&probe).unwrap().0;
                let above: Vec<(usize, &LiteRule)> = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.path.is_ancestor_of(&p))
                    .collect();
                let scan = if above.iter().any(|(_, r)| !r.is_dir) {
                    None
                } else {
                    rules
                        .iter()
                        .position(|r| r.path == p)
                        .or_else(|| {
                            above
                                .iter()
                                .max_by_key(|(_, r)| r.path.depth())
                                .map(|(i, _)| *i)
                        })
                        .map(|i| RuleId(i as u32))
                };
                assert_eq!(set.lookup_id(&probe), scan, "lookup {probe}");
            }
        }
        // Every node's children are listed once, under their parent.
        let mut listed = 0;
        let mut stack = vec![(set.root(), String::new())];
        while let Some((node, path)) = stack.pop() {
            for (name, child) in set.child_names(node) {
                assert_eq!(set.child(node, name), Some(child));
                listed += 1;
                stack.push((child, format!("{path}/{name}")));
            }
            if let Some(id) = set.rule_at(node) {
                assert_eq!(set.rule(id).path.as_str(), path);
            }
        }
        assert_eq!(listed + 1, set.trie.nodes.len());
    }
}

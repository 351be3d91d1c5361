//! Compiled rule tables: one image's litefile rules, parsed, selected, de-duplicated, sorted
//! and checked on the management node (`statelite ilitefile IMAGE --compile`), so that a
//! node's mount does no per-row work beyond checking each rule's path and writing its
//! 20-byte record ([`crate::rules::RuleRecord`]): no CSV scanning, no option words (each
//! spelling is stored and read once), no precedence sorting, no constraint messages.
//!
//! Why: a mount reads its litefile while the kernel mount is made, and with 2,000 rows that
//! parse (~0.9 ms in a fresh daemon on the bench VM) outlasted the mount and set the time
//! to a ready root. A table loads in well under that (benches/RESULTS.md, runs 16 and 17).
//!
//! A table never changes what a mount does: it records the length and hash of the litefile
//! bytes it was compiled from and the image it was compiled for, and is used only when both
//! match the litefile being mounted. A stale, foreign or damaged table is ignored (logged)
//! and the litefile is parsed as without one. The table sits beside the litefile:
//! [`table_path`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::{LiteOptions, RuleRecord, RuleSet, options_spelling, rules_from_litefile_bytes};
use crate::tabfile::TabError;

/// The first bytes of every table; the digit is the format version (a new layout gets a new
/// one, and an old daemon then ignores the table instead of misreading it).
const MAGIC: &[u8; 8] = b"SLRULES2";

/// Largest table a mount reads (a 2,000-row litefile compiles to ~60 KiB).
const MAX_TABLE_BYTES: u64 = 64 << 20;

/// The litefile is hashed in chunks of this size (the same at compile time and at load,
/// where it is read through a buffer of this size instead of into memory of its own).
const HASH_CHUNK: usize = 16 << 10;

/// What follows [`MAGIC`] (postcard), then `rules` [`StoredRule`]s of [`RULE_BYTES`] each.
/// Strings borrow from the table's bytes.
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    image: &'a str,
    /// The litefile the rules were compiled from: its length and [`source_hash`].
    source_len: u64,
    source_hash: u64,
    rules: u32,
    /// Every rule's path, one after another (each rule gives its length): loaded as one
    /// buffer the rules share.
    paths: &'a str,
    /// Each options value the rules use, as written, once: a rule names its own by index,
    /// so a load reads (and checks) a few spellings, not one per rule.
    options: Vec<&'a str>,
}

/// Bytes of one [`StoredRule`].
const RULE_BYTES: usize = 8;

/// One rule; the rules are sorted by path, one per path, none breaking a constraint.
/// Stored as fixed-size records (little-endian `path_len: u16`, flags, `options: u8`,
/// `line: u32`), which a load walks without decoding a format per rule: that decoding was
/// half of loading a 2,000-rule table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredRule {
    /// Bytes of [`Header::paths`] that are this rule's path: normalised, without the
    /// trailing `/` of a directory entry (at most 4,095 bytes).
    path_len: u16,
    is_dir: bool,
    image_specific: bool,
    /// Index into [`Header::options`].
    options: u8,
    line: u32,
}

const FLAG_DIR: u8 = 1;
const FLAG_IMAGE_SPECIFIC: u8 = 2;

impl StoredRule {
    fn encode(self) -> [u8; RULE_BYTES] {
        let [a, b] = self.path_len.to_le_bytes();
        let mut flags = 0;
        if self.is_dir {
            flags |= FLAG_DIR;
        }
        if self.image_specific {
            flags |= FLAG_IMAGE_SPECIFIC;
        }
        let [l0, l1, l2, l3] = self.line.to_le_bytes();
        [a, b, flags, self.options, l0, l1, l2, l3]
    }

    fn decode(rec: [u8; RULE_BYTES]) -> Result<StoredRule, String> {
        let [a, b, flags, options, l0, l1, l2, l3] = rec;
        if flags & !(FLAG_DIR | FLAG_IMAGE_SPECIFIC) != 0 {
            return Err(format!("unknown rule flags {flags:#04x}"));
        }
        Ok(StoredRule {
            path_len: u16::from_le_bytes([a, b]),
            is_dir: flags & FLAG_DIR != 0,
            image_specific: flags & FLAG_IMAGE_SPECIFIC != 0,
            options,
            line: u32::from_le_bytes([l0, l1, l2, l3]),
        })
    }
}

/// Why a table was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("not a statelite rule table of this version")]
    NotATable,
    #[error("damaged: {0}")]
    Damaged(String),
    #[error("compiled for image {compiled:?}, not {wanted:?}")]
    OtherImage { compiled: String, wanted: String },
    #[error("compiled from another version of the litefile")]
    Stale,
    #[error("cannot read the litefile: {0}")]
    Litefile(String),
}

/// Why a litefile could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Parse(#[from] TabError),
    #[error("{file}: the rules for image {image:?} break statelite's constraints:\n{list}")]
    Violations {
        file: PathBuf,
        image: String,
        list: String,
    },
    #[error("{file}: line {line} is beyond what a rule table can hold")]
    TooLong { file: PathBuf, line: usize },
    #[error(
        "{file}: the rules spell their options {count} different ways, more than a rule \
         table can hold (256); the litefile itself still works"
    )]
    TooManySpellings { file: PathBuf, count: usize },
    #[error("{file}: cannot encode the rule table: {problem}")]
    Encode { file: PathBuf, problem: String },
}

/// Where the table for `litefile` and `image` lives: `<litefile>.rules` for the empty
/// image name (only `ALL` rows), else `<litefile>.<image>.rules`. `None` when the image
/// name cannot be part of a file name.
pub fn table_path(litefile: &Path, image: &str) -> Option<PathBuf> {
    let unsafe_name = image.contains(['/', '\0'])
        || image.starts_with('.')
        || image.len() > 200
        || image.chars().any(char::is_control);
    if unsafe_name {
        return None;
    }
    let mut name = litefile.file_name()?.to_os_string();
    if !image.is_empty() {
        name.push(".");
        name.push(image);
    }
    name.push(".rules");
    Some(litefile.with_file_name(name))
}

/// The litefile's fingerprint: a 64-bit hash of its bytes in [`HASH_CHUNK`] pieces. Not
/// for adversaries (whoever can write the litefile can write the table too); a change the
/// hash misses is a 2^-64 accident. The hasher's output may change with its version: a
/// table is then stale, and the litefile is parsed.
struct SourceHash(foldhash::fast::FoldHasher<'static>);

impl SourceHash {
    fn new() -> SourceHash {
        use std::hash::BuildHasher;
        SourceHash(foldhash::fast::FixedState::with_seed(0x5354_4c52_554c_4553).build_hasher())
    }
    fn chunk(&mut self, bytes: &[u8]) {
        use std::hash::Hasher;
        self.0.write(bytes);
    }
    fn finish(self, len: u64) -> u64 {
        use std::hash::Hasher;
        let mut h = self.0;
        h.write_u64(len);
        h.finish()
    }
}

fn source_hash(source: &[u8]) -> u64 {
    let mut h = SourceHash::new();
    for c in source.chunks(HASH_CHUNK) {
        h.chunk(c);
    }
    h.finish(source.len() as u64)
}

/// Length and hash of the litefile at `path`, read through one buffer on the stack.
fn file_hash(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = SourceHash::new();
    let mut buf = [0u8; HASH_CHUNK];
    let mut len = 0u64;
    loop {
        // Each chunk is filled completely (short reads are topped up) so the pieces hashed
        // are those `source_hash` hashes.
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        h.chunk(&buf[..filled]);
        len += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok((len, h.finish(len)))
}

/// Compiles the rules of `source` (the bytes of the litefile `file`) for `image`. A
/// litefile whose rules break a constraint is refused (a mount would refuse it too).
pub fn compile(source: &[u8], file: &Path, image: &str) -> Result<Vec<u8>, CompileError> {
    let rules = rules_from_litefile_bytes(source, file, image)?;
    if !rules.violations().is_empty() {
        let list: Vec<String> = rules
            .violations()
            .iter()
            .map(|v| format!("  {v}"))
            .collect();
        return Err(CompileError::Violations {
            file: file.to_path_buf(),
            image: image.to_string(),
            list: list.join("\n"),
        });
    }
    let encode = |e: postcard::Error| CompileError::Encode {
        file: file.to_path_buf(),
        problem: e.to_string(),
    };
    let too_long = |line: usize| CompileError::TooLong {
        file: file.to_path_buf(),
        line,
    };
    // The set already holds what the table stores: its one text of paths, each spelling
    // once (in order of first use) and the records pointing into both.
    let (paths, set_records, spellings) = rules.parts();
    if spellings.len() > usize::from(u8::MAX) + 1 {
        return Err(CompileError::TooManySpellings {
            file: file.to_path_buf(),
            count: spellings.len(),
        });
    }
    let count = u32::try_from(set_records.len()).map_err(|_| too_long(set_records.len()))?;
    let mut records = Vec::with_capacity(set_records.len() * RULE_BYTES);
    // The full rules for their lines as parsed (a record's line saturates at u32::MAX).
    for (r, full) in set_records.iter().zip(rules.rules()) {
        let rule = StoredRule {
            // A path is at most 4,095 bytes (LitePath).
            path_len: u16::try_from(r.end - r.start).map_err(|_| too_long(full.line))?,
            is_dir: r.is_dir,
            image_specific: r.image_specific,
            // Fewer than 257 spellings (checked above).
            options: u8::try_from(r.spelling).unwrap_or(u8::MAX),
            line: u32::try_from(full.line).map_err(|_| too_long(full.line))?,
        };
        records.extend_from_slice(&rule.encode());
    }
    let spellings: Vec<&str> = spellings.iter().map(|s| s.as_ref()).collect();
    let header = Header {
        image,
        source_len: source.len() as u64,
        source_hash: source_hash(source),
        rules: count,
        paths,
        options: spellings,
    };
    let mut out = MAGIC.to_vec();
    out = postcard::to_extend(&header, out).map_err(encode)?;
    out.extend_from_slice(&records);
    Ok(out)
}

/// The table's header and the bytes of its rules.
fn header(table: &[u8]) -> Result<(Header<'_>, &[u8]), TableError> {
    let body = table.strip_prefix(MAGIC).ok_or(TableError::NotATable)?;
    postcard::take_from_bytes(body).map_err(|e| TableError::Damaged(format!("header: {e}")))
}

/// The rule set in `table`, when it was compiled for `image` from a litefile of length
/// and hash `source` (see [`load`] and [`load_beside`]). Everything is checked again
/// (paths normal, options valid, order, constraints): a damaged table is an error, never
/// a wrong rule set or a panic.
///
/// The table's bytes are let go of (when owned) once its rules are decoded, before the trie
/// is built, so that the trie can reuse their memory rather than touch new pages.
fn load_checked(
    table: impl AsRef<[u8]>,
    image: &str,
    source: impl FnOnce() -> Result<(u64, u64), TableError>,
) -> Result<RuleSet, TableError> {
    let (head, rest) = header(table.as_ref())?;
    if head.image != image {
        return Err(TableError::OtherImage {
            compiled: head.image.to_string(),
            wanted: image.to_string(),
        });
    }
    if source()? != (head.source_len, head.source_hash) {
        return Err(TableError::Stale);
    }
    let damaged = TableError::Damaged;
    if rest.len() as u64 != u64::from(head.rules) * RULE_BYTES as u64 {
        return Err(damaged(format!(
            "{} bytes of rules where {} rules take {}",
            rest.len(),
            head.rules,
            u64::from(head.rules) * RULE_BYTES as u64
        )));
    }
    // Each spelling is read once; every rule then takes its options from this list.
    let options = head
        .options
        .iter()
        .map(|&text| LiteOptions::parse(Some(text)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(damaged)?;
    let spellings: Vec<_> = head.options.iter().map(|&t| options_spelling(t)).collect();
    // Each rule becomes its record straight away (no list of decoded rules beside): the
    // rule set keeps these and the one copy of all paths they point into.
    let shared: std::sync::Arc<str> = std::sync::Arc::from(head.paths);
    let mut at = 0u32;
    let mut records = Vec::with_capacity(head.rules as usize);
    for (i, rec) in rest.chunks_exact(RULE_BYTES).enumerate() {
        let mut bytes = [0u8; RULE_BYTES];
        bytes.copy_from_slice(rec);
        let r = StoredRule::decode(bytes).map_err(|e| damaged(format!("rule {}: {e}", i + 1)))?;
        let end = at.saturating_add(u32::from(r.path_len));
        let options = *options.get(usize::from(r.options)).ok_or_else(|| {
            damaged(format!(
                "rule {} names options {} of {}",
                i + 1,
                r.options,
                spellings.len()
            ))
        })?;
        records.push(RuleRecord {
            start: at,
            end,
            line: r.line,
            spelling: u32::from(r.options),
            options,
            is_dir: r.is_dir,
            image_specific: r.image_specific,
        });
        at = end;
    }
    match (at as usize).cmp(&shared.len()) {
        std::cmp::Ordering::Less => {
            return Err(damaged(format!(
                "{} bytes of paths that no rule has",
                shared.len() - at as usize
            )));
        }
        std::cmp::Ordering::Greater => {
            return Err(damaged(format!(
                "the rules name {} bytes of paths where the table has {}",
                at,
                shared.len()
            )));
        }
        std::cmp::Ordering::Equal => {}
    }
    drop(options);
    drop(table);
    RuleSet::from_checked(shared, records, spellings, image).map_err(damaged)
}

/// The rule set in `table`, when it was compiled from exactly `source` for `image`.
pub fn load(table: &[u8], source: &[u8], image: &str) -> Result<RuleSet, TableError> {
    load_checked(table, image, || {
        Ok((source.len() as u64, source_hash(source)))
    })
}

/// What [`load_beside`] found.
#[derive(Debug)]
pub enum Beside {
    /// The table's rules, and where the table is.
    Loaded(Box<RuleSet>, PathBuf),
    /// No table there (or an image name that cannot name one).
    Absent,
    /// A table that cannot be used: the litefile is to be parsed.
    Unused(Unused),
}

/// A table beside the litefile that was not used, and why.
#[derive(Debug)]
pub struct Unused {
    pub table: PathBuf,
    pub why: Result<TableError, String>,
}

impl Unused {
    /// Logs why (a stale table is ordinary after an edit; anything else is a warning).
    pub fn log(&self) {
        match &self.why {
            Ok(e @ TableError::Stale) => tracing::info!(
                "rule table {}: {e}; parsing the litefile (recompile: statelite ilitefile \
                 IMAGE --compile)",
                self.table.display()
            ),
            Ok(e) => tracing::warn!(
                "rule table {}: {e}; parsing the litefile",
                self.table.display()
            ),
            Err(e) => tracing::warn!(
                "rule table {}: cannot read: {e}; parsing the litefile",
                self.table.display()
            ),
        }
    }
}

/// Where a litefile's rules came from ([`crate::rules::read_rules`]), for the log.
#[derive(Debug)]
pub enum RulesSource {
    /// The compiled table at this path.
    Table(PathBuf),
    /// The litefile itself, and the table beside it that could not be used, if any.
    Litefile(Option<Unused>),
}

impl RulesSource {
    /// Logs where the rules came from. Left to the caller: a mount reads its rules before
    /// its logging is set up.
    pub fn log(&self) {
        match self {
            RulesSource::Table(table) => {
                tracing::info!(table = %table.display(), "rules from the compiled rule table")
            }
            RulesSource::Litefile(Some(unused)) => unused.log(),
            RulesSource::Litefile(None) => {}
        }
    }
}

/// The rules for `image` from the table beside `litefile`, when there is one compiled
/// from the litefile as it is now. The litefile is only hashed, through a buffer on the
/// stack. A litefile that cannot be read makes the table [`Beside::Absent`]: the parse that
/// follows reports it, naming it.
pub fn load_beside(litefile: &Path, image: &str) -> Beside {
    let Some(table) = table_path(litefile, image) else {
        return Beside::Absent;
    };
    let bytes = match read_bounded(&table) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Beside::Absent,
        Err(e) => {
            return Beside::Unused(Unused {
                table,
                why: Err(e.to_string()),
            });
        }
    };
    let source = || file_hash(litefile).map_err(|e| TableError::Litefile(e.to_string()));
    match load_checked(bytes, image, source) {
        Ok(rules) => Beside::Loaded(Box::new(rules), table),
        Err(TableError::Litefile(_)) => Beside::Absent,
        Err(e) => Beside::Unused(Unused { table, why: Ok(e) }),
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_TABLE_BYTES {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than a rule table can be"
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(MAX_TABLE_BYTES).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Storage;

    const LITEFILE: &str = "#image,file,options,comments,disable\n\
        \"ALL\",\"/etc/adjtime\",,,\n\
        \"ALL\",\"/etc/ssh/\",\"persistent\",,\n\
        \"compute\",\"/etc/ssh/\",\"tmpfs\",\"node's own\",\n\
        \"ALL\",\"/var/log/\",\"tmpfs,rw\",,\n\
        \"ALL\",\"/var//lib/dhcp/\",\"link,persistent\",,\n\
        \"ALL\",\"/etc/motd\",\"con\",,\n\
        \"ALL\",\"/opt/disabled\",\"tmpfs\",,\"yes\"\n\
        \"other\",\"/etc/other\",\"ro\",,\n";

    fn compiled(image: &str) -> Vec<u8> {
        compile(LITEFILE.as_bytes(), Path::new("litefile.csv"), image).expect("compiles")
    }

    fn parsed(image: &str) -> RuleSet {
        rules_from_litefile_bytes(LITEFILE.as_bytes(), Path::new("litefile.csv"), image)
            .expect("parses")
    }

    #[test]
    fn a_loaded_table_is_the_parsed_rule_set() {
        for image in ["", "compute", "other"] {
            let table = compiled(image);
            let loaded = load(&table, LITEFILE.as_bytes(), image).expect("loads");
            let want = parsed(image);
            // What the filesystem reads per request comes from the records: no full rules
            // are made for it (they would cost a mount its memory).
            for path in [
                "/etc/ssh/known_hosts",
                "/var/log/x",
                "/etc/motd",
                "/usr/bin/ls",
            ] {
                if let Some(id) = loaded.lookup_id(path) {
                    assert!(
                        loaded.path(id).len() > 1 && loaded.relative(id) == &loaded.path(id)[1..]
                    );
                    let _ = (loaded.is_dir(id), loaded.storage(id));
                }
            }
            assert!(!loaded.has_full_rules(), "lookups made the full rules");
            assert_eq!(loaded.len(), want.len());
            assert_eq!(loaded.rules(), want.rules(), "image {image:?}");
            assert!(loaded.has_full_rules());
            assert_eq!(loaded.image(), image);
            for path in [
                "/etc/adjtime",
                "/etc/ssh/sshd_config",
                "/var/log/messages",
                "/var/lib/dhcp/leases",
                "/etc/motd",
                "/etc/other",
                "/opt/disabled",
                "/usr/bin/ls",
                "/etc",
            ] {
                assert_eq!(
                    loaded.lookup(path),
                    want.lookup(path),
                    "{path} for {image:?}"
                );
            }
        }
        // The image's own row beat the ALL row, as when parsing.
        let table = compiled("compute");
        let rules = load(&table, LITEFILE.as_bytes(), "compute").expect("loads");
        let ssh = rules.lookup("/etc/ssh/x").expect("rule");
        assert_eq!(ssh.storage(), Storage::Tmpfs);
        assert!(ssh.image_specific);
        assert_eq!(ssh.options_text, "tmpfs");
    }

    #[test]
    fn a_table_for_another_image_or_litefile_is_not_used() {
        let table = compiled("compute");
        assert_eq!(
            load(&table, LITEFILE.as_bytes(), "other").err(),
            Some(TableError::OtherImage {
                compiled: "compute".into(),
                wanted: "other".into()
            })
        );
        let edited = LITEFILE.replace("tmpfs,rw", "persistent");
        assert_eq!(
            load(&table, edited.as_bytes(), "compute").err(),
            Some(TableError::Stale)
        );
        // One byte more (a trailing newline) is another litefile too.
        let longer = format!("{LITEFILE}\n");
        assert_eq!(
            load(&table, longer.as_bytes(), "compute").err(),
            Some(TableError::Stale)
        );
    }

    #[test]
    fn damaged_tables_are_errors_never_panics() {
        let table = compiled("compute");
        assert_eq!(
            load(b"", LITEFILE.as_bytes(), "compute").err(),
            Some(TableError::NotATable)
        );
        // Another version's table, the previous one included.
        let mut other_version = table.clone();
        other_version[7] = b'1';
        assert_eq!(
            load(&other_version, LITEFILE.as_bytes(), "compute").err(),
            Some(TableError::NotATable)
        );
        // Every truncation and every single-byte change either fails cleanly or (a change
        // inside a string that keeps everything valid) still yields a checked rule set.
        for cut in 0..table.len() {
            let _ = load(&table[..cut], LITEFILE.as_bytes(), "compute");
        }
        for i in MAGIC.len()..table.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut t = table.clone();
                t[i] ^= flip;
                if let Ok(rules) = load(&t, LITEFILE.as_bytes(), "compute") {
                    assert!(rules.violations().is_empty());
                }
            }
        }
    }

    /// A table's rules as (path, record) and its options spellings, for editing.
    struct Records {
        rules: Vec<(String, StoredRule)>,
        options: Vec<String>,
    }

    /// Re-encodes the empty image's table with its rules edited.
    fn tampered(edit: &dyn Fn(&mut Records)) -> Result<RuleSet, TableError> {
        let table = compiled("");
        let (head, rest) = header(&table).expect("header");
        let mut records = Records {
            rules: Vec::new(),
            options: head.options.iter().map(|o| o.to_string()).collect(),
        };
        let mut at = 0;
        for rec in rest.chunks_exact(RULE_BYTES) {
            let r = StoredRule::decode(rec.try_into().expect("record")).expect("rule");
            let end = at + r.path_len as usize;
            records.rules.push((head.paths[at..end].to_string(), r));
            at = end;
        }
        edit(&mut records);
        let paths: String = records.rules.iter().map(|(p, _)| p.as_str()).collect();
        let head = Header {
            rules: records.rules.len() as u32,
            paths: &paths,
            options: records.options.iter().map(String::as_str).collect(),
            ..head
        };
        let mut out = postcard::to_extend(&head, MAGIC.to_vec()).expect("encodes");
        for (p, r) in &mut records.rules {
            r.path_len = p.len() as u16;
            out.extend_from_slice(&r.encode());
        }
        load(&out, LITEFILE.as_bytes(), "")
    }

    #[test]
    fn a_table_naming_an_unsafe_path_or_a_broken_order_is_damaged() {
        assert!(
            tampered(&|_| {}).is_ok(),
            "re-encoding alone keeps the table valid"
        );
        let set = |paths: &[&str]| {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            move |r: &mut Records| {
                for (i, p) in paths.iter().enumerate() {
                    r.rules[i].0 = p.clone();
                }
            }
        };
        let bad_path = tampered(&set(&["/etc/../root"]));
        assert!(
            matches!(bad_path, Err(TableError::Damaged(_))),
            "{bad_path:?}"
        );
        let not_normal = tampered(&set(&["/etc//adjtime"]));
        assert!(matches!(not_normal, Err(TableError::Damaged(_))));
        let trailing = tampered(&set(&["/etc/adjtime/"]));
        assert!(matches!(trailing, Err(TableError::Damaged(_))));
        let bad_options = tampered(&|r| r.options[0] = "sometimes".into());
        assert!(matches!(bad_options, Err(TableError::Damaged(_))));
        let missing_options = tampered(&|r| r.rules[0].1.options = r.options.len() as u8);
        assert!(
            matches!(missing_options, Err(TableError::Damaged(_))),
            "{missing_options:?}"
        );
        let unsorted = tampered(&|r| r.rules.swap(0, 1));
        assert!(matches!(unsorted, Err(TableError::Damaged(_))));
        let twice = tampered(&|r| r.rules[1].0 = r.rules[0].0.clone());
        assert!(matches!(twice, Err(TableError::Damaged(_))));
        // `con` on a directory is a constraint a table cannot smuggle past the checks.
        let con_dir = tampered(&|r| {
            let i = r
                .rules
                .iter()
                .position(|x| x.0 == "/etc/motd")
                .expect("motd");
            r.rules[i].1.is_dir = true;
        });
        assert!(
            matches!(con_dir, Err(TableError::Damaged(_))),
            "{con_dir:?}"
        );
        // A rule count larger than the rules present.
        let table = compiled("");
        let (head, rest) = header(&table).expect("header");
        let more = Header {
            rules: head.rules + 1,
            ..head
        };
        let mut out = postcard::to_extend(&more, MAGIC.to_vec()).expect("encodes");
        out.extend_from_slice(rest);
        assert!(matches!(
            load(&out, LITEFILE.as_bytes(), ""),
            Err(TableError::Damaged(_))
        ));
        // Bytes after the last rule.
        let mut longer = table.clone();
        longer.push(0);
        assert!(matches!(
            load(&longer, LITEFILE.as_bytes(), ""),
            Err(TableError::Damaged(_))
        ));
        // A flag this version does not know.
        let mut flagged = table.clone();
        let first_rule = table.len() - RULE_BYTES * head.rules as usize;
        flagged[first_rule + 2] |= 0x80;
        let err = load(&flagged, LITEFILE.as_bytes(), "").unwrap_err();
        assert!(
            err.to_string().contains("rule 1: unknown rule flags"),
            "{err}"
        );
    }

    #[test]
    fn records_keep_every_field() {
        for rule in [
            StoredRule {
                path_len: 4095,
                is_dir: true,
                image_specific: false,
                options: 255,
                line: u32::MAX,
            },
            StoredRule {
                path_len: 1,
                is_dir: false,
                image_specific: true,
                options: 0,
                line: 2,
            },
        ] {
            assert_eq!(StoredRule::decode(rule.encode()), Ok(rule));
        }
    }

    #[test]
    fn up_to_256_spellings_of_the_options_compile() {
        // Words are trimmed, so each row below spells `rw,tmpfs` its own way.
        let litefile = |rows: usize| {
            let mut text = String::from("#image,file,options,comments,disable\n");
            for i in 0..rows {
                let pad = " ".repeat(i);
                text.push_str(&format!("\"ALL\",\"/etc/f{i}\",\"rw,{pad}tmpfs\",,\n"));
            }
            text
        };
        let file = Path::new("/t/litefile.csv");
        let fits = litefile(256);
        let table = compile(fits.as_bytes(), file, "").expect("256 spellings compile");
        let rules = load(&table, fits.as_bytes(), "").expect("loads");
        assert_eq!(rules.rules().len(), 256);
        let f255 = rules.lookup("/etc/f255").expect("rule");
        assert_eq!(f255.options_text, format!("rw,{}tmpfs", " ".repeat(255)));
        let over = litefile(257);
        let err = compile(over.as_bytes(), file, "").unwrap_err();
        assert!(
            matches!(err, CompileError::TooManySpellings { count: 257, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/t/litefile.csv"), "{err}");
    }

    #[test]
    fn a_litefile_breaking_a_constraint_is_not_compiled() {
        let bad = "#image,file,options,comments,disable\n\
            \"ALL\",\"/etc/motd/\",\"con\",,\n";
        let err = compile(bad.as_bytes(), Path::new("/t/litefile.csv"), "").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/t/litefile.csv"), "{msg}");
        assert!(msg.contains("con cannot be used on a directory"), "{msg}");
        let unparsable = "#image,file,options,comments,disable\n\"ALL\",\"etc\",,,\n";
        let err = compile(unparsable.as_bytes(), Path::new("/t/litefile.csv"), "").unwrap_err();
        assert!(err.to_string().contains("litefile.csv:2: field 2"), "{err}");
    }

    #[test]
    fn the_table_sits_beside_the_litefile_named_by_image() {
        let lf = Path::new("/srv/tables/litefile.csv");
        assert_eq!(
            table_path(lf, ""),
            Some(PathBuf::from("/srv/tables/litefile.csv.rules"))
        );
        assert_eq!(
            table_path(lf, "rhels8-x86_64-compute"),
            Some(PathBuf::from(
                "/srv/tables/litefile.csv.rhels8-x86_64-compute.rules"
            ))
        );
        for hostile in ["../x", "a/b", ".hidden", "a\nb", "a\0b"] {
            assert_eq!(table_path(lf, hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn load_beside_uses_a_matching_table_and_ignores_any_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lf = dir.path().join("litefile.csv");
        std::fs::write(&lf, LITEFILE).expect("write");
        assert!(
            matches!(load_beside(&lf, "compute"), Beside::Absent),
            "no table yet"
        );
        let path = table_path(&lf, "compute").expect("path");
        std::fs::write(&path, compiled("compute")).expect("write table");
        let Beside::Loaded(rules, at) = load_beside(&lf, "compute") else {
            panic!("table not used");
        };
        assert_eq!(at, path);
        assert_eq!(rules.rules(), parsed("compute").rules());
        assert!(
            matches!(load_beside(&lf, "other"), Beside::Absent),
            "another image's"
        );
        // The litefile changed after compiling: the table is stale.
        let edited = LITEFILE.replace("/etc/adjtime", "/etc/adjtime2");
        std::fs::write(&lf, &edited).expect("write");
        let stale = load_beside(&lf, "compute");
        assert!(
            matches!(
                &stale,
                Beside::Unused(Unused {
                    why: Ok(TableError::Stale),
                    ..
                })
            ),
            "{stale:?}"
        );
        // ...and load_rules parses the litefile as it is now.
        let now = crate::rules::load_rules(&lf, "compute").expect("parses");
        assert!(now.lookup("/etc/adjtime2").is_some());
        assert!(now.lookup("/etc/adjtime").is_none());
        std::fs::write(&lf, LITEFILE).expect("write");
        assert!(
            matches!(load_beside(&lf, "compute"), Beside::Loaded(..)),
            "same bytes"
        );
        // Garbage in the table's place is not used either.
        std::fs::write(&path, b"garbage").expect("write");
        assert!(matches!(
            load_beside(&lf, "compute"),
            Beside::Unused(Unused {
                why: Ok(TableError::NotATable),
                ..
            })
        ));
        // A litefile that is gone: no table is used (the parse reports the litefile).
        std::fs::write(&path, compiled("compute")).expect("write table");
        std::fs::remove_file(&lf).expect("rm");
        assert!(matches!(load_beside(&lf, "compute"), Beside::Absent));
        let err = crate::rules::load_rules(&lf, "compute").unwrap_err();
        assert!(err.to_string().contains("litefile.csv"), "{err}");
    }

    #[test]
    fn a_litefile_read_in_chunks_hashes_as_its_bytes_do() {
        // Sizes around the chunk size: the file is read in pieces, the bytes hashed whole.
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("lf");
        for len in [
            0,
            1,
            HASH_CHUNK - 1,
            HASH_CHUNK,
            HASH_CHUNK + 1,
            3 * HASH_CHUNK + 17,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            std::fs::write(&f, &bytes).expect("write");
            assert_eq!(
                file_hash(&f).expect("hash"),
                (len as u64, source_hash(&bytes)),
                "length {len}"
            );
        }
        assert_ne!(source_hash(b"a"), source_hash(b"b"));
        assert_ne!(source_hash(b""), source_hash(b"\0"));
    }
}

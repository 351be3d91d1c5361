//! `statelite litefile`, `litetree`, `ilitefile` and `lslite`: what the tables mean for a
//! node or an image, in the format of xCAT's commands of the same names.
//!
//! Output formats (as xCAT's litetree plugin prints them):
//! * `litefile`: `node: OPTIONS FILE`, options padded to 13 columns, files sorted; blank
//!   options show as `tmpfs,rw`, as xCAT shows them.
//! * `ilitefile`: the same with the image name in place of the node.
//! * `litetree`: `node: PRIORITY [server:]/path`, plus ` (mntopts: ...)` when set, in search
//!   order. A node whose variables cannot all be resolved gets an error line on stderr
//!   per bad entry, and the exit status is 1.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use statelite_fs::rules::{LiteRow, RuleSet, Violation, parse_litefile};
use statelite_fs::tabfile::{read_table_file, write_file_atomic};

use crate::cmd_tables::{CmdError, print_json};
use crate::db::Db;
use crate::vars::{self, Location, StateEntry, TreeEntry};

/// One litefile entry as shown for a node or image.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// The path, with a trailing `/` for a directory (as written in the table).
    pub file: String,
    /// The options as xCAT's commands show them (blank shows as `tmpfs,rw`).
    pub options: String,
    /// What the options mean: storage (tmpfs, persistent, localdisk, ro, con) ...
    pub storage: &'static str,
    /// ... and how symlink mode realises them (copy, link, bind).
    pub method: String,
    /// Line in litefile.csv.
    pub line: usize,
    /// True when the row names the image (and so beat any ALL row for the path).
    pub image_specific: bool,
}

fn load_litefile(db: &Db) -> Result<Vec<LiteRow>, CmdError> {
    let loaded = db.table("litefile")?;
    Ok(parse_litefile(&loaded.table, &loaded.path)?)
}

fn file_entries(rules: &RuleSet) -> Vec<FileEntry> {
    let mut entries: Vec<FileEntry> = rules
        .rules()
        .iter()
        .map(|r| FileEntry {
            file: if r.is_dir {
                format!("{}/", r.path)
            } else {
                r.path.to_string()
            },
            options: if r.options_text.is_empty() {
                "tmpfs,rw".to_string()
            } else {
                r.options_text.to_string()
            },
            storage: r.storage().name(),
            method: format!("{:?}", r.options.method()).to_lowercase(),
            line: r.line,
            image_specific: r.image_specific,
        })
        .collect();
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    entries
}

fn print_file_entries(who: &str, entries: &[FileEntry]) -> Result<(), CmdError> {
    let mut out = std::io::stdout().lock();
    for e in entries {
        writeln!(out, "{who}: {:<13} {}", e.options, e.file)?;
    }
    Ok(())
}

/// Expands a noderange against `nodelist`.
fn nodes_of(db: &Db, noderange: &str) -> Result<Vec<String>, CmdError> {
    Ok(db.node_index()?.expand(noderange)?)
}

fn report_node_error(node: &str, error: &dyn std::fmt::Display) {
    eprintln!("statelite: {node}: {error}");
}

// ---------------------------------------------------------------------------------------
// litefile

/// Show the litefile entries that apply to each node.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite litefile n01\n  \
    statelite litefile 'n[01-10],-n05'\n  \
    statelite litefile compute --json\n\n\
    A node's image is nodetype.provmethod when that names an image, else \
    <os>-<arch>-statelite-<profile> from nodetype (own row, then its groups). Rows for \
    that image beat ALL rows for the same path. Output: 'node: options file'.")]
pub struct LitefileArgs {
    /// Nodes: n01-n10, n[01-10], node[1-3]-ib, group names, comma lists, -exclusions.
    pub noderange: String,
    /// Print JSON: [{"node", "image", "entries": [{"file", "options", "storage",
    /// "method", "line", "image_specific"}]} | {"node", "error"}].
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct NodeFiles {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<Vec<FileEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl LitefileArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let db = Db::open(tables);
        let nodes = nodes_of(&db, &self.noderange)?;
        let rows = load_litefile(&db)?;
        let mut results = Vec::new();
        let mut failed = false;
        for node in nodes {
            match vars::image_of(&db, &node) {
                Ok(image) => {
                    let entries = file_entries(&RuleSet::for_image(&rows, &image));
                    if !self.json {
                        print_file_entries(&node, &entries)?;
                    }
                    results.push(NodeFiles {
                        node,
                        image: Some(image),
                        entries: Some(entries),
                        error: None,
                    });
                }
                Err(e) => {
                    failed = true;
                    if !self.json {
                        report_node_error(&node, &e);
                    }
                    results.push(NodeFiles {
                        node,
                        image: None,
                        entries: None,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        if self.json {
            print_json(&results)?;
        }
        Ok(exit(failed))
    }
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------
// ilitefile

/// Show the litefile entries for an image (with --check, its rule violations).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite ilitefile rhels5.4-x86_64-statelite-compute\n  \
    statelite ilitefile compute-img --check\n\n\
    --check reports every broken rule with the litefile lines involved: a ro or con \
    directory with entries below it, a non-persistent entry below a persistent \
    directory, con on a directory, entries below a file entry, the same path listed \
    twice with different options. Exit status 1 when there is any.\n\n\
    --compile writes the image's rules, checked, into a rule table beside the litefile \
    (litefile.csv.IMAGE.rules; litefile.csv.rules for the empty image name). A mount \
    whose litefile is byte for byte the one compiled (copy both files together) loads \
    the table instead of parsing the CSV, so its start-up does not grow with the number \
    of rows; after any change to the litefile the table is ignored until compiled again. \
    Refused (exit 1) when a rule breaks a constraint.")]
pub struct IlitefileArgs {
    /// The image name (an osimage name, as litefile's image column uses it).
    pub image: String,
    /// Report every rule violation with its litefile lines; exit 1 if there is any.
    #[arg(long)]
    pub check: bool,
    /// Print JSON: {"image", "entries": [...], "violations": [{"message", "lines"}]}.
    #[arg(long)]
    pub json: bool,
    /// Compile the image's rules into a table beside the litefile, for mounts to load.
    #[arg(long, conflicts_with_all = ["check", "json"])]
    pub compile: bool,
}

impl IlitefileArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let db = Db::open(tables);
        if self.compile {
            return self.compile(&db);
        }
        let rows = load_litefile(&db)?;
        let rules = RuleSet::for_image(&rows, &self.image);
        let entries = file_entries(&rules);
        let violations: &[Violation] = rules.violations();
        let file = db.path_of("litefile");
        if self.json {
            print_json(&serde_json::json!({
                "image": self.image,
                "entries": entries,
                "violations": violations,
            }))?;
        } else if self.check {
            let mut out = std::io::stdout().lock();
            for v in violations {
                let lines: Vec<String> = v.lines.iter().map(|l| l.to_string()).collect();
                writeln!(
                    out,
                    "{}: line {}: {}",
                    file.display(),
                    lines.join(", "),
                    v.message
                )?;
            }
            if violations.is_empty() {
                writeln!(out, "{}: no violations", self.image)?;
            } else {
                writeln!(out, "{}: {} violation(s)", self.image, violations.len())?;
            }
        } else {
            print_file_entries(&self.image, &entries)?;
        }
        Ok(exit(self.check && !violations.is_empty()))
    }

    /// `--compile`: the table is written atomically, so a mount reads the old one or the
    /// new one, never half of one.
    fn compile(&self, db: &Db) -> Result<ExitCode, CmdError> {
        use statelite_fs::rule_table;
        let file = db.path_of("litefile");
        let target = rule_table::table_path(&file, &self.image).ok_or_else(|| {
            CmdError::Usage(format!(
                "image name {:?} cannot be part of a file name (it has a '/', a control \
                 character or a leading '.')",
                self.image
            ))
        })?;
        let source = read_table_file(&file)?;
        let table = match rule_table::compile(&source, &file, &self.image) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("statelite: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        write_file_atomic(&target, &table)
            .map_err(|e| CmdError::Usage(format!("{}: cannot write: {e}", target.display())))?;
        println!("{}: {} bytes", target.display(), table.len());
        Ok(ExitCode::SUCCESS)
    }
}

// ---------------------------------------------------------------------------------------
// litetree

/// Show each node's litetree directories, variables expanded, in search order.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite litetree n01\n  \
    statelite litetree compute,-n05 --json\n\n\
    Rows apply to the node's image (image empty, ALL, or equal), ascending numeric \
    priority, ties in file order. Variables: $node, $table.column (e.g. \
    $noderes.nfsserver, $nodepos.room, $nodetype.os), ${table.column}, $site.KEY, \
    $osimage.COLUMN. A variable with no value for a node is an error for that node \
    (exit status 1); the other nodes are still shown. Output: 'node: priority \
    [server:]/path'.")]
pub struct LitetreeArgs {
    /// Nodes: n01-n10, n[01-10], node[1-3]-ib, group names, comma lists, -exclusions.
    pub noderange: String,
    /// Print JSON: [{"node", "image", "entries": [{"priority", "line", "directory",
    /// "mntopts", "location": {"ok": {"server", "path"}} | {"error"}}]} | {"node", "error"}].
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct NodeTree {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<Vec<TreeEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn tree_line(node: &str, e: &TreeEntry, loc: &Location) -> String {
    match &e.mntopts {
        Some(o) => format!("{node}: {} {loc} (mntopts: {o})", e.priority),
        None => format!("{node}: {} {loc}", e.priority),
    }
}

impl LitetreeArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let db = Db::open(tables);
        let nodes = nodes_of(&db, &self.noderange)?;
        let mut results = Vec::new();
        let mut failed = false;
        let mut out = std::io::stdout().lock();
        for node in nodes {
            let tree = vars::image_of(&db, &node)
                .and_then(|image| vars::litetree_for(&db, &node, &image).map(|t| (image, t)));
            match tree {
                Ok((image, entries)) => {
                    for e in &entries {
                        match &e.location {
                            Ok(loc) if !self.json => writeln!(out, "{}", tree_line(&node, e, loc))?,
                            Ok(_) => {}
                            Err(err) => {
                                failed = true;
                                if !self.json {
                                    report_node_error(
                                        &node,
                                        &format!(
                                            "priority {} ({}, litetree line {}): {err}",
                                            e.priority, e.directory, e.line
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    results.push(NodeTree {
                        node,
                        image: Some(image),
                        entries: Some(entries),
                        error: None,
                    });
                }
                // A malformed litetree table is everyone's problem: stop.
                Err(vars::VarError::Db(e)) => return Err(e.into()),
                Err(e) => {
                    failed = true;
                    if !self.json {
                        report_node_error(&node, &e);
                    }
                    results.push(NodeTree {
                        node,
                        image: None,
                        entries: None,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        drop(out);
        if self.json {
            print_json(&results)?;
        }
        Ok(exit(failed))
    }
}

// ---------------------------------------------------------------------------------------
// lslite

/// Summarise statelite for nodes: image, state directory, litefile and litetree.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite lslite n01\n  \
    statelite lslite japan --json\n\n\
    The state directory comes from the statelite table: the row naming the node beats \
    rows naming its groups (in nodelist.groups order), and a row naming the image beats \
    an all-images row. The node's persistent files live in <statemnt>/<node>/.")]
pub struct LsliteArgs {
    /// Nodes: n01-n10, n[01-10], node[1-3]-ib, group names, comma lists, -exclusions.
    pub noderange: String,
    /// Print JSON: [{"node", "image", "statelite", "litefile", "litetree"} | {"node", "error"}].
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct NodeSummary {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statelite: Option<Option<StateEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    litefile: Option<Vec<FileEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    litetree: Option<Vec<TreeEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl LsliteArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let db = Db::open(tables);
        let nodes = nodes_of(&db, &self.noderange)?;
        let rows = load_litefile(&db)?;
        let mut results = Vec::new();
        let mut failed = false;
        for node in nodes {
            let image = match vars::image_of(&db, &node) {
                Ok(i) => i,
                Err(vars::VarError::Db(e)) => return Err(e.into()),
                Err(e) => {
                    failed = true;
                    if !self.json {
                        report_node_error(&node, &e);
                    }
                    results.push(NodeSummary {
                        node,
                        image: None,
                        statelite: None,
                        litefile: None,
                        litetree: None,
                        error: Some(e.to_string()),
                    });
                    continue;
                }
            };
            let state = vars::statelite_for(&db, &node, &image)?;
            let files = file_entries(&RuleSet::for_image(&rows, &image));
            let tree = vars::litetree_for(&db, &node, &image)?;
            failed |= tree.iter().any(|e| e.location.is_err());
            failed |= state.as_ref().is_some_and(|s| s.location.is_err());
            if !self.json {
                let mut out = std::io::stdout().lock();
                writeln!(out, ">>>Node: {node}")?;
                writeln!(out, "Osimage: {image}")?;
                writeln!(out, "Persistent directory (statelite table):")?;
                match &state {
                    None => writeln!(out, "        (none: no persistent storage)")?,
                    Some(s) => match &s.location {
                        Ok(l) => writeln!(out, "        {l}/{node}/  (row for {})", s.matched)?,
                        Err(e) => writeln!(out, "        error: {e}")?,
                    },
                }
                writeln!(out, "Litefiles (litefile table):")?;
                for e in &files {
                    writeln!(out, "        {:<13} {}", e.options, e.file)?;
                }
                writeln!(out, "Litetree path (litetree table):")?;
                for e in &tree {
                    match &e.location {
                        Ok(l) => writeln!(out, "        {}, {l}", e.priority)?,
                        Err(err) => writeln!(out, "        {}, error: {err}", e.priority)?,
                    }
                }
                writeln!(out)?;
            }
            results.push(NodeSummary {
                node,
                image: Some(image),
                statelite: Some(state),
                litefile: Some(files),
                litetree: Some(tree),
                error: None,
            });
        }
        if self.json {
            print_json(&results)?;
        }
        Ok(exit(failed))
    }
}

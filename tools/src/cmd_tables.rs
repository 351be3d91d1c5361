//! `statelite tabdump`, `tabrestore` and `chtab`: reading and changing the tables, with
//! xCAT's command semantics. Every change is validated as a whole before anything is
//! written, and each table file is replaced atomically: a bad row changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use statelite_fs::tabfile::{Row, TabError, Table};

use crate::db::{self, Db, DbError, Schema};
use crate::noderange::NodeRangeError;
use crate::vars::VarError;

/// An error that stops a subcommand; printed as `statelite: <error>`, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Table(#[from] TabError),
    #[error("{0}")]
    Var(#[from] VarError),
    #[error("noderange: {0}")]
    NodeRange(#[from] NodeRangeError),
    #[error("{0}")]
    Usage(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CmdError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table's rows as JSON objects (NULL is `null`), with the columns in file order.
fn rows_json(table: &Table) -> Vec<serde_json::Value> {
    table
        .rows
        .iter()
        .map(|row| {
            let mut m = serde_json::Map::new();
            m.insert("line".into(), row.line.into());
            for (c, f) in table.columns.iter().zip(&row.fields) {
                m.insert(
                    c.clone(),
                    f.clone()
                        .map_or(serde_json::Value::Null, serde_json::Value::String),
                );
            }
            serde_json::Value::Object(m)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// tabdump

/// Print a table in tabdump format (or list the tables).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite tabdump litefile\n  \
    statelite tabdump litetree --json\n  \
    statelite tabdump                 # list the tables and their files\n\n\
    A table whose file does not exist is empty and prints just its header.")]
pub struct TabdumpArgs {
    /// Table to print (litefile, litetree, statelite, policy, nodelist, noderes, nodetype,
    /// nodepos, hosts, mac, osimage, linuximage, site). Omit to list the tables.
    pub table: Option<String>,
    /// Print JSON: {"table", "file", "columns", "rows": [{"line", <column>: value|null}]}.
    #[arg(long)]
    pub json: bool,
}

impl TabdumpArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let db = Db::open(tables);
        let Some(name) = &self.table else {
            return list_tables(&db, self.json);
        };
        let loaded = db.table(name)?;
        if self.json {
            print_json(&serde_json::json!({
                "table": name,
                "file": loaded.path,
                "columns": loaded.table.columns,
                "rows": rows_json(&loaded.table),
            }))?;
        } else {
            std::io::stdout()
                .lock()
                .write_all(loaded.table.to_text().as_bytes())?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn list_tables(db: &Db, json: bool) -> Result<ExitCode, CmdError> {
    #[derive(Serialize)]
    struct Entry {
        table: &'static str,
        file: PathBuf,
        exists: bool,
        rows: Option<usize>,
        error: Option<String>,
    }
    let entries: Vec<Entry> = db::SCHEMAS
        .iter()
        .map(|s| {
            let file = db.path_of(s.name);
            let (rows, error) = match db.table(s.name) {
                Ok(t) => (Some(t.table.rows.len()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            Entry {
                table: s.name,
                exists: file.exists(),
                file,
                rows,
                error,
            }
        })
        .collect();
    if json {
        print_json(&entries)?;
    } else {
        let mut out = std::io::stdout().lock();
        for e in &entries {
            match (&e.error, e.exists) {
                (Some(err), _) => writeln!(out, "{:<11} error: {err}", e.table)?,
                (None, false) => writeln!(out, "{:<11} (no file: empty)", e.table)?,
                (None, true) => writeln!(
                    out,
                    "{:<11} {} rows  {}",
                    e.table,
                    e.rows.unwrap_or(0),
                    e.file.display()
                )?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// tabrestore

/// Replace (or with -a, extend) a table from a tabdump file.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite tabrestore litefile.csv        # replace the litefile table\n  \
    statelite tabrestore -a /tmp/litetree    # append rows to the litetree table\n\n\
    The table is named by the file name (litefile.csv or litefile). The whole file is \
    checked first (format, columns, options, paths, priorities, variables, duplicate \
    keys); if anything is wrong, nothing changes and the error names the file, line and \
    field. The table file is then replaced atomically.")]
pub struct TabrestoreArgs {
    /// The tabdump file to restore; its name (without .csv) names the table.
    pub file: PathBuf,
    /// Append the rows to the table instead of replacing it.
    #[arg(short = 'a', long = "append")]
    pub append: bool,
    /// Print a JSON summary: {"table", "file", "rows", "appended"}.
    #[arg(long)]
    pub json: bool,
}

/// The table named by a restore file's name: `litefile.csv` or `litefile`.
pub fn table_name_of(file: &Path) -> Result<&'static Schema, CmdError> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CmdError::Usage(format!("{}: not a file name", file.display())))?;
    let stem = name.strip_suffix(".csv").unwrap_or(name);
    db::schema(stem).ok_or_else(|| {
        CmdError::Usage(format!(
            "{}: the file name must name a table (e.g. litefile.csv); known tables: {}",
            file.display(),
            db::table_names()
        ))
    })
}

impl TabrestoreArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let schema = table_name_of(&self.file)?;
        let incoming = Table::read(&self.file)?;
        db::validate_table(schema, &incoming, &self.file)?;
        let db = Db::open(tables);
        let target = db.path_of(schema.name);
        let result = if self.append {
            let existing = db.table(schema.name)?;
            check_no_duplicates(schema, &existing.table, &target, &incoming, &self.file)?;
            let mut merged = if incoming
                .columns
                .iter()
                .all(|c| existing.table.column(c).is_some())
            {
                existing.table.clone()
            } else {
                relayout(&existing.table, schema)
            };
            for row in &incoming.rows {
                let fields = merged
                    .columns
                    .iter()
                    .map(|c| {
                        incoming
                            .column(c)
                            .and_then(|i| row.fields.get(i).cloned().flatten())
                    })
                    .collect();
                merged.rows.push(Row {
                    line: row.line,
                    fields,
                });
            }
            db::validate_table(schema, &merged, &target)?;
            merged
        } else {
            incoming
        };
        std::fs::create_dir_all(tables).map_err(|e| DbError::Write {
            path: tables.to_path_buf(),
            message: e.to_string(),
        })?;
        result.write_atomic(&target).map_err(|e| DbError::Write {
            path: target.clone(),
            message: e.to_string(),
        })?;
        if self.json {
            print_json(&serde_json::json!({
                "table": schema.name,
                "file": target,
                "rows": result.rows.len(),
                "appended": self.append,
            }))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Appending must not repeat a key the table already has.
fn check_no_duplicates(
    schema: &Schema,
    existing: &Table,
    existing_file: &Path,
    incoming: &Table,
    incoming_file: &Path,
) -> Result<(), CmdError> {
    let key = |t: &Table, r: &Row| -> Vec<String> {
        schema
            .keys
            .iter()
            .map(|k| t.get(r, k).unwrap_or("").trim().to_string())
            .collect()
    };
    let mut have: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for r in &existing.rows {
        have.entry(key(existing, r)).or_insert(r.line);
    }
    for r in &incoming.rows {
        if let Some(line) = have.get(&key(incoming, r)) {
            let col = incoming.column(schema.keys[0]).unwrap_or(0);
            return Err(TabError {
                file: incoming_file.to_path_buf(),
                line: r.line,
                field: Some((col + 1, Some(schema.keys[0].to_string()))),
                problem: format!(
                    "duplicate key: {}:{line} already has a row with the same {}",
                    existing_file.display(),
                    schema.keys.join("+")
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// The table re-laid with every column of its schema, in schema order.
fn relayout(table: &Table, schema: &Schema) -> Table {
    let mut out = schema.empty_table();
    for row in &table.rows {
        let fields = schema
            .columns
            .iter()
            .map(|c| table.column(c).and_then(|i| row.fields[i].clone()))
            .collect();
        out.rows.push(Row {
            line: row.line,
            fields,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// chtab

/// Add, change or delete table rows (xCAT's chtab).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    statelite chtab node=n01 nodelist.groups=compute,all\n  \
    statelite chtab node=compute noderes.nfsserver=10.0.0.1 nodetype.os=rhels5.4\n  \
    statelite chtab priority=4.7 policy.commands=litefile policy.rule=allow\n  \
    statelite chtab image=ALL,file=/etc/motd litefile.options=persistent\n  \
    statelite chtab node=n01 nodelist.groups+=gpu        # add to a comma list\n  \
    statelite chtab node=n01 noderes.nfsserver=          # clear a value (NULL)\n  \
    statelite chtab -d node=n01 nodetype noderes         # delete n01's rows\n\n\
    KEYS (col=value, comma separated or as separate words) select the rows of each table \
    named in the assignments; all matching rows are updated, and a row is created with \
    the keys and values when none matches. Every changed table is validated as a whole \
    before any file is written.")]
pub struct ChtabArgs {
    /// Delete the rows matching the keys from the named tables.
    #[arg(short = 'd', long = "delete")]
    pub delete: bool,
    /// Print a JSON summary: [{"table", "file", "created", "updated", "deleted"}].
    #[arg(long)]
    pub json: bool,
    /// KEY=VALUE[,KEY=VALUE...] then TABLE.COLUMN=VALUE or TABLE.COLUMN+=VALUE ... (with
    /// -d: KEY=VALUE... then TABLE ...).
    #[arg(required = true, num_args = 1.., value_name = "KEYS ASSIGNMENTS")]
    pub words: Vec<String>,
}

/// One `table.column=value` (or `+=`) of a chtab command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub table: String,
    pub column: String,
    /// `None` clears the value (NULL).
    pub value: Option<String>,
    /// `+=`: add to a comma list if not already there.
    pub append: bool,
}

/// A parsed chtab command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChtabRequest {
    pub keys: Vec<(String, String)>,
    pub assignments: Vec<Assignment>,
    pub delete_from: Vec<String>,
}

/// Parses chtab's words: leading `col=value` keys (comma lists allowed, as xCAT writes
/// them), then assignments, or with `delete` table names.
pub fn parse_chtab(words: &[String], delete: bool) -> Result<ChtabRequest, CmdError> {
    let usage = |m: String| CmdError::Usage(format!("chtab: {m}"));
    let mut keys = Vec::new();
    let mut rest = words;
    // A key word's name (before '=') has no dot; an assignment's has one.
    while let Some((word, tail)) = rest.split_first() {
        let Some((name, _)) = word.split_once('=') else {
            break;
        };
        if name.contains('.') || name.ends_with('+') {
            break;
        }
        for pair in word.split(',') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| usage(format!("{pair:?} is not KEY=VALUE")))?;
            if k.is_empty() {
                return Err(usage(format!("{pair:?} has no key column name")));
            }
            keys.push((k.trim().to_string(), v.to_string()));
        }
        rest = tail;
    }
    if keys.is_empty() {
        return Err(usage(
            "no KEY=VALUE given to select rows (e.g. node=n01, or image=ALL,file=/etc/motd)".into(),
        ));
    }
    let mut req = ChtabRequest {
        keys,
        assignments: Vec::new(),
        delete_from: Vec::new(),
    };
    for word in rest {
        if delete {
            if word.contains('=') {
                return Err(usage(format!(
                    "with -d, give table names after the keys, not {word:?}"
                )));
            }
            req.delete_from.push(word.clone());
            continue;
        }
        let (target, value, append) = match (word.find("+="), word.find('=')) {
            (Some(p), Some(e)) if p + 1 == e => (&word[..p], &word[p + 2..], true),
            (_, Some(e)) => (&word[..e], &word[e + 1..], false),
            _ => return Err(usage(format!("{word:?} is not TABLE.COLUMN=VALUE"))),
        };
        let (table, column) = target
            .split_once('.')
            .ok_or_else(|| usage(format!("{word:?} is not TABLE.COLUMN=VALUE")))?;
        req.assignments.push(Assignment {
            table: table.to_string(),
            column: column.to_string(),
            value: (!value.is_empty()).then(|| value.to_string()),
            append,
        });
    }
    if delete && req.delete_from.is_empty() {
        return Err(usage(
            "-d needs at least one table name after the keys".into(),
        ));
    }
    if !delete && req.assignments.is_empty() {
        return Err(usage("no TABLE.COLUMN=VALUE given".into()));
    }
    Ok(req)
}

/// What chtab did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChtabChange {
    pub table: String,
    pub file: PathBuf,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
}

fn row_matches(table: &Table, row: &Row, keys: &[(String, String)]) -> bool {
    keys.iter()
        .all(|(k, v)| table.get(row, k).unwrap_or("").trim() == v.trim())
}

/// Applies a chtab request to the tables in memory; returns each changed table and what
/// changed. Nothing is written here.
pub fn apply_chtab(
    db: &Db,
    req: &ChtabRequest,
) -> Result<Vec<(Table, &'static Schema, ChtabChange)>, CmdError> {
    let mut names: Vec<&str> = req.assignments.iter().map(|a| a.table.as_str()).collect();
    names.extend(req.delete_from.iter().map(String::as_str));
    let mut seen = Vec::new();
    names.retain(|n| {
        let new = !seen.contains(n);
        seen.push(*n);
        new
    });
    let mut out = Vec::new();
    for name in names {
        let loaded = db.table(name)?;
        let schema = loaded.schema;
        for (k, _) in &req.keys {
            if !schema.has_column(k) {
                return Err(DbError::UnknownColumn {
                    table: name.into(),
                    column: k.clone(),
                }
                .into());
            }
        }
        let assignments: Vec<&Assignment> =
            req.assignments.iter().filter(|a| a.table == name).collect();
        for a in &assignments {
            if !schema.has_column(&a.column) {
                return Err(DbError::UnknownColumn {
                    table: name.into(),
                    column: a.column.clone(),
                }
                .into());
            }
        }
        let mut table = loaded.table.clone();
        let needed = req
            .keys
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(assignments.iter().map(|a| a.column.as_str()));
        if needed.into_iter().any(|c| table.column(c).is_none()) {
            table = relayout(&table, schema);
        }
        let mut change = ChtabChange {
            table: name.to_string(),
            file: loaded.path.clone(),
            created: 0,
            updated: 0,
            deleted: 0,
        };
        if req.delete_from.iter().any(|t| t == name) {
            let before = table.rows.len();
            let keys = &req.keys;
            let cols = table.clone();
            table.rows.retain(|r| !row_matches(&cols, r, keys));
            change.deleted = before - table.rows.len();
        } else {
            let matching: Vec<usize> = (0..table.rows.len())
                .filter(|&i| row_matches(&table, &table.rows[i], &req.keys))
                .collect();
            let targets = if matching.is_empty() {
                let mut fields = vec![None; table.columns.len()];
                for (k, v) in &req.keys {
                    if let Some(i) = table.column(k) {
                        fields[i] = (!v.is_empty()).then(|| v.clone());
                    }
                }
                table.rows.push(Row { line: 0, fields });
                change.created = 1;
                vec![table.rows.len() - 1]
            } else {
                change.updated = matching.len();
                matching
            };
            for i in targets {
                for a in &assignments {
                    let Some(c) = table.column(&a.column) else {
                        continue; // relayout above guarantees the column exists
                    };
                    let field = &mut table.rows[i].fields[c];
                    *field = if a.append {
                        add_to_list(field.as_deref(), a.value.as_deref())
                    } else {
                        a.value.clone()
                    };
                }
            }
        }
        // New rows get line numbers after the file's end so messages can point at them.
        let last = table.rows.iter().map(|r| r.line).max().unwrap_or(1);
        let new_rows = table.rows.iter_mut().filter(|r| r.line == 0);
        for (line, row) in (last + 1..).zip(new_rows) {
            row.line = line;
        }
        out.push((table, schema, change));
    }
    Ok(out)
}

/// xCAT's `+=`: append values to a comma list, skipping ones already there.
fn add_to_list(current: Option<&str>, add: Option<&str>) -> Option<String> {
    let mut items: Vec<String> = db::split_groups(current);
    for v in db::split_groups(add) {
        if !items.contains(&v) {
            items.push(v);
        }
    }
    (!items.is_empty()).then(|| items.join(","))
}

impl ChtabArgs {
    pub fn run(&self, tables: &Path) -> Result<ExitCode, CmdError> {
        let req = parse_chtab(&self.words, self.delete)?;
        let db = Db::open(tables);
        let changes = apply_chtab(&db, &req)?;
        // Validate every table before writing any.
        for (table, schema, change) in &changes {
            db::validate_table(schema, table, &change.file)?;
        }
        if !changes.is_empty() {
            std::fs::create_dir_all(tables).map_err(|e| DbError::Write {
                path: tables.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        for (table, _, change) in &changes {
            table
                .write_atomic(&change.file)
                .map_err(|e| DbError::Write {
                    path: change.file.clone(),
                    message: e.to_string(),
                })?;
        }
        let summary: Vec<&ChtabChange> = changes.iter().map(|(_, _, c)| c).collect();
        if self.json {
            print_json(&summary)?;
        } else {
            let mut out = std::io::stdout().lock();
            for c in summary {
                let what = if c.deleted > 0 || self.delete {
                    format!("deleted {} row(s)", c.deleted)
                } else if c.created > 0 {
                    "created 1 row".to_string()
                } else {
                    format!("updated {} row(s)", c.updated)
                };
                writeln!(out, "{}: {what}", c.table)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn chtab_words() {
        let r = parse_chtab(
            &words("priority=4.7 policy.commands=litefile policy.rule=allow"),
            false,
        )
        .unwrap();
        assert_eq!(r.keys, [("priority".into(), "4.7".into())]);
        assert_eq!(r.assignments.len(), 2);
        assert_eq!(r.assignments[0].table, "policy");
        let r = parse_chtab(
            &words("image=ALL,file=/etc/motd litefile.options=ro"),
            false,
        )
        .unwrap();
        assert_eq!(r.keys.len(), 2);
        let r = parse_chtab(&words("image=ALL file=/etc/motd litefile.options="), false).unwrap();
        assert_eq!(r.keys.len(), 2);
        assert_eq!(r.assignments[0].value, None);
        let r = parse_chtab(&words("node=n1 nodelist.groups+=a,b"), false).unwrap();
        assert!(r.assignments[0].append);
        assert_eq!(r.assignments[0].value.as_deref(), Some("a,b"));
        let r = parse_chtab(&words("node=n1 noderes.nfsdir=/a=b"), false).unwrap();
        assert_eq!(r.assignments[0].value.as_deref(), Some("/a=b"));
        let r = parse_chtab(&words("node=n1 nodetype noderes"), true).unwrap();
        assert_eq!(r.delete_from, ["nodetype", "noderes"]);
        for (bad, del) in [
            ("nodetype.os=x", false),
            ("node=n1", false),
            ("node=n1 nodetype", false),
            ("node=n1 nodetypeos=x", false),
            ("node=n1", true),
            ("node=n1 nodetype.os=x", true),
            ("=x nodetype.os=y", false),
        ] {
            assert!(parse_chtab(&words(bad), del).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_to_list_is_unique() {
        assert_eq!(
            add_to_list(Some("a,b"), Some("b,c")).as_deref(),
            Some("a,b,c")
        );
        assert_eq!(add_to_list(None, Some("x")).as_deref(), Some("x"));
        assert_eq!(add_to_list(None, None), None);
    }

    #[test]
    fn apply_creates_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nodelist.csv"),
            "#node,groups\n\"n1\",\"compute\"\n\"n2\",\"compute\"\n",
        )
        .unwrap();
        let db = Db::open(dir.path());
        let req = parse_chtab(
            &words("node=n1 nodelist.groups+=all nodelist.status=booted"),
            false,
        )
        .unwrap();
        let out = apply_chtab(&db, &req).unwrap();
        let (t, _, c) = &out[0];
        assert_eq!((c.created, c.updated), (0, 1));
        assert_eq!(
            t.columns.len(),
            13,
            "re-laid to the schema for the status column"
        );
        assert_eq!(t.get(&t.rows[0], "groups"), Some("compute,all"));
        assert_eq!(t.get(&t.rows[0], "status"), Some("booted"));
        let req = parse_chtab(&words("node=n3 nodelist.groups=x"), false).unwrap();
        let out = apply_chtab(&db, &req).unwrap();
        let (t, _, c) = &out[0];
        assert_eq!(c.created, 1);
        assert_eq!(t.rows[2].line, 4);
        assert_eq!(t.columns, ["node", "groups"], "no relayout needed");
        let req = parse_chtab(&words("node=n2 nodelist"), true).unwrap();
        let out = apply_chtab(&db, &req).unwrap();
        assert_eq!(out[0].2.deleted, 1);
        assert_eq!(out[0].0.rows.len(), 1);
        let req = parse_chtab(&words("node=n2 nodelist.colour=x"), false).unwrap();
        assert!(
            apply_chtab(&db, &req)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
        let req = parse_chtab(&words("nod=n2 nodelist.groups=x"), false).unwrap();
        assert!(
            apply_chtab(&db, &req)
                .unwrap_err()
                .to_string()
                .contains("nod")
        );
        let req = parse_chtab(&words("node=n2 nodelst.groups=x"), false).unwrap();
        assert!(
            apply_chtab(&db, &req)
                .unwrap_err()
                .to_string()
                .contains("unknown table")
        );
    }

    #[test]
    fn restore_file_names() {
        assert_eq!(
            table_name_of(Path::new("/x/litefile.csv")).unwrap().name,
            "litefile"
        );
        assert_eq!(
            table_name_of(Path::new("litetree")).unwrap().name,
            "litetree"
        );
        assert!(table_name_of(Path::new("litefiles.csv")).is_err());
    }
}

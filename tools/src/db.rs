//! The tables directory: xCAT's tables as `<dir>/<table>.csv` files in `tabdump` format.
//!
//! * Every table has a known schema (column names, key columns) taken from xCAT's
//!   `Schema.pm`, so a file from a real `tabdump` loads unchanged. A file may carry a subset
//!   of the columns in any order (a hand-written `#node,groups` is fine), but a column the
//!   schema does not know is an error naming the file, line 1 and the field.
//! * A missing file is an empty table: a fresh cluster has no `statelite.csv` yet.
//! * Node attributes resolve like xCAT's `getNodeAttribs`: the node's own row, else the
//!   first of its groups (`nodelist.groups`, in order) whose row has a value. Disabled rows
//!   are invisible to lookups (but are kept, and written back, by the table commands).
//!
//! Tables are loaded lazily and cached, so a broken `policy.csv` does not stop
//! `statelite litetree` from working.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use statelite_fs::tabfile::{Row, TabError, Table, is_disabled};

use crate::noderange::NodeIndex;

/// A table's columns and key columns, as xCAT defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    /// The columns that identify a row (`chtab` and duplicate checks use them).
    pub keys: &'static [&'static str],
}

impl Schema {
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.contains(&column)
    }

    /// True when rows are keyed by node or group name (so `$table.column` resolves per node).
    pub fn is_node_keyed(&self) -> bool {
        self.keys == ["node"]
    }

    /// An empty table with every column of the schema.
    pub fn empty_table(&self) -> Table {
        Table::new(self.columns)
    }
}

/// Every table statelite knows, with xCAT's column lists (xCAT-core `Schema.pm`).
///
/// One deliberate difference: `osimage` also has `rootimgdir` (which real xCAT keeps in
/// `linuximage`), because statelite has no `linuximage` table of its own; `linuximage` is
/// still accepted so a real xCAT dump can be restored.
pub const SCHEMAS: &[Schema] = &[
    Schema {
        name: "litefile",
        columns: &["image", "file", "options", "comments", "disable"],
        keys: &["image", "file"],
    },
    Schema {
        name: "litetree",
        columns: &[
            "priority",
            "image",
            "directory",
            "mntopts",
            "comments",
            "disable",
        ],
        keys: &["priority"],
    },
    Schema {
        name: "statelite",
        columns: &[
            "node", "image", "statemnt", "mntopts", "comments", "disable",
        ],
        keys: &["node"],
    },
    Schema {
        name: "policy",
        columns: &[
            "priority",
            "name",
            "host",
            "commands",
            "noderange",
            "parameters",
            "time",
            "rule",
            "comments",
            "disable",
        ],
        keys: &["priority"],
    },
    Schema {
        name: "nodelist",
        columns: &[
            "node",
            "groups",
            "status",
            "statustime",
            "appstatus",
            "appstatustime",
            "primarysn",
            "hidden",
            "updatestatus",
            "updatestatustime",
            "zonename",
            "comments",
            "disable",
        ],
        keys: &["node"],
    },
    Schema {
        name: "noderes",
        columns: &[
            "node",
            "servicenode",
            "netboot",
            "tftpserver",
            "tftpdir",
            "nfsserver",
            "monserver",
            "nfsdir",
            "installnic",
            "primarynic",
            "discoverynics",
            "cmdinterface",
            "xcatmaster",
            "current_osimage",
            "next_osimage",
            "nimserver",
            "routenames",
            "nameservers",
            "proxydhcp",
            "syslog",
            "comments",
            "disable",
        ],
        keys: &["node"],
    },
    Schema {
        name: "nodetype",
        columns: &[
            "node",
            "os",
            "arch",
            "profile",
            "provmethod",
            "supportedarchs",
            "nodetype",
            "comments",
            "disable",
        ],
        keys: &["node"],
    },
    Schema {
        name: "nodepos",
        columns: &[
            "node", "rack", "u", "chassis", "slot", "room", "height", "comments", "disable",
        ],
        keys: &["node"],
    },
    Schema {
        name: "hosts",
        columns: &[
            "node",
            "ip",
            "hostnames",
            "otherinterfaces",
            "comments",
            "disable",
        ],
        keys: &["node"],
    },
    Schema {
        name: "mac",
        columns: &["node", "interface", "mac", "comments", "disable"],
        keys: &["node"],
    },
    Schema {
        name: "osimage",
        columns: &[
            "imagename",
            "groups",
            "profile",
            "imagetype",
            "description",
            "provmethod",
            "rootfstype",
            "nfsrootopts",
            "osdistroname",
            "osupdatename",
            "cfmdir",
            "osname",
            "osvers",
            "osarch",
            "synclists",
            "postscripts",
            "postbootscripts",
            "serverrole",
            "isdeletable",
            "kitcomponents",
            "environvar",
            "rootimgdir",
            "comments",
            "disable",
        ],
        keys: &["imagename"],
    },
    Schema {
        name: "linuximage",
        columns: &[
            "imagename",
            "template",
            "boottarget",
            "addkcmdline",
            "pkglist",
            "pkgdir",
            "otherpkglist",
            "otherpkgdir",
            "exlist",
            "postinstall",
            "rootimgdir",
            "kerneldir",
            "nodebootif",
            "otherifce",
            "netdrivers",
            "kernelver",
            "krpmver",
            "permission",
            "dump",
            "crashkernelsize",
            "partitionfile",
            "driverupdatesrc",
            "comments",
            "disable",
        ],
        keys: &["imagename"],
    },
    Schema {
        name: "site",
        columns: &["key", "value", "comments", "disable"],
        keys: &["key"],
    },
];

/// The schema of a table, by name.
pub fn schema(name: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.name == name)
}

/// Names of all known tables, for messages.
pub fn table_names() -> String {
    SCHEMAS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What can go wrong with the tables directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// A table file is malformed or breaks its schema (file, line and field are named).
    #[error("{0}")]
    Table(#[from] TabError),
    #[error("unknown table {0:?} (known tables: {known})", known = table_names())]
    UnknownTable(String),
    #[error("table {table} has no column {column:?} (columns: {})", schema(table).map(|s| s.columns.join(", ")).unwrap_or_default())]
    UnknownColumn { table: String, column: String },
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

/// Checks a table's header against its schema: every column known, the key columns there.
pub fn check_header(schema: &Schema, table: &Table, file: &Path) -> Result<(), TabError> {
    for (i, column) in table.columns.iter().enumerate() {
        if !schema.has_column(column) {
            return Err(TabError {
                file: file.to_path_buf(),
                line: 1,
                field: Some((i + 1, Some(column.clone()))),
                problem: format!(
                    "table {} has no column {column:?} (its columns: {})",
                    schema.name,
                    schema.columns.join(",")
                ),
            });
        }
    }
    for key in schema.keys {
        if table.column(key).is_none() {
            return Err(TabError {
                file: file.to_path_buf(),
                line: 1,
                field: None,
                problem: format!(
                    "the header lacks the key column {key:?} of table {}",
                    schema.name
                ),
            });
        }
    }
    Ok(())
}

/// A loaded table plus an index of its enabled rows by the first key column.
#[derive(Debug)]
pub struct LoadedTable {
    pub schema: &'static Schema,
    pub path: PathBuf,
    pub table: Table,
    /// First enabled row for each value of the first key column.
    by_key: HashMap<String, usize>,
}

impl LoadedTable {
    fn new(schema: &'static Schema, path: PathBuf, table: Table) -> LoadedTable {
        let mut by_key = HashMap::new();
        if let Some(key_col) = table.column(schema.keys[0]) {
            for (i, row) in table.rows.iter().enumerate() {
                if row_is_disabled(&table, row) {
                    continue;
                }
                if let Some(Some(k)) = row.fields.get(key_col) {
                    by_key.entry(k.trim().to_string()).or_insert(i);
                }
            }
        }
        LoadedTable {
            schema,
            path,
            table,
            by_key,
        }
    }

    /// The first enabled row whose first key column is `key`.
    pub fn row_by_key(&self, key: &str) -> Option<&Row> {
        self.by_key.get(key).map(|&i| &self.table.rows[i])
    }

    /// The non-NULL, non-empty value of `column` in `row`.
    pub fn value<'a>(&self, row: &'a Row, column: &str) -> Option<&'a str> {
        self.table.get(row, column).filter(|v| !v.is_empty())
    }

    /// Enabled rows, in file order.
    pub fn enabled_rows(&self) -> impl Iterator<Item = &Row> {
        self.table
            .rows
            .iter()
            .filter(|r| !row_is_disabled(&self.table, r))
    }
}

/// True when the row's `disable` column turns it off.
pub fn row_is_disabled(table: &Table, row: &Row) -> bool {
    is_disabled(table.get(row, "disable"))
}

/// The tables of one directory, loaded on first use.
#[derive(Debug)]
pub struct Db {
    dir: PathBuf,
    /// One cell per entry of [`SCHEMAS`].
    cache: Vec<OnceCell<Result<LoadedTable, DbError>>>,
    nodes: OnceCell<Result<NodeIndex, DbError>>,
}

impl Db {
    pub fn open(dir: &Path) -> Db {
        Db {
            dir: dir.to_path_buf(),
            cache: SCHEMAS.iter().map(|_| OnceCell::new()).collect(),
            nodes: OnceCell::new(),
        }
    }

    /// A database held in memory (tests, fuzzing): tables not given are empty.
    pub fn from_tables(tables: Vec<(&str, Table)>) -> Result<Db, DbError> {
        let db = Db::open(Path::new("<memory>"));
        for (name, table) in tables {
            let index = schema_index(name)?;
            let schema = &SCHEMAS[index];
            let path = PathBuf::from(format!("<memory>/{name}.csv"));
            check_header(schema, &table, &path)?;
            // The cell is fresh, so this set cannot fail; a repeated name keeps the first.
            let _ = db.cache[index].set(Ok(LoadedTable::new(schema, path, table)));
        }
        Ok(db)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding a table.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.csv"))
    }

    /// A table, read and checked against its schema on first use.
    pub fn table(&self, name: &str) -> Result<&LoadedTable, DbError> {
        let index = schema_index(name)?;
        let schema = &SCHEMAS[index];
        self.cache[index]
            .get_or_init(|| {
                let path = self.path_of(name);
                let table = read_table_file(schema, &path)?;
                Ok(LoadedTable::new(schema, path, table))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The node and group names of `nodelist`, for noderanges.
    pub fn node_index(&self) -> Result<&NodeIndex, DbError> {
        self.nodes
            .get_or_init(|| {
                let nodelist = self.table("nodelist")?;
                let mut pairs = Vec::new();
                for row in nodelist.enabled_rows() {
                    if let Some(node) = nodelist.value(row, "node") {
                        pairs.push((
                            node.trim().to_string(),
                            split_groups(nodelist.value(row, "groups")),
                        ));
                    }
                }
                Ok(NodeIndex::new(pairs))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The groups of a node, in `nodelist.groups` order (empty when it has no row).
    pub fn groups_of(&self, node: &str) -> Result<Vec<String>, DbError> {
        let nodelist = self.table("nodelist")?;
        Ok(nodelist
            .row_by_key(node)
            .map(|row| split_groups(nodelist.value(row, "groups")))
            .unwrap_or_default())
    }

    /// `table.column` for a node: its own row's value, else the first of its groups with a
    /// value. `None` when nobody supplies one. The table must be keyed by node.
    pub fn node_attr(
        &self,
        node: &str,
        table: &str,
        column: &str,
    ) -> Result<Option<String>, DbError> {
        let loaded = self.table(table)?;
        if !loaded.schema.has_column(column) {
            return Err(DbError::UnknownColumn {
                table: table.into(),
                column: column.into(),
            });
        }
        let own = loaded
            .row_by_key(node)
            .and_then(|row| loaded.value(row, column));
        if let Some(v) = own {
            return Ok(Some(v.to_string()));
        }
        for group in self.groups_of(node)? {
            if let Some(v) = loaded
                .row_by_key(&group)
                .and_then(|row| loaded.value(row, column))
            {
                return Ok(Some(v.to_string()));
            }
        }
        Ok(None)
    }

    /// A `site` value by key.
    pub fn site(&self, key: &str) -> Result<Option<String>, DbError> {
        let site = self.table("site")?;
        Ok(site
            .row_by_key(key)
            .and_then(|row| site.value(row, "value"))
            .map(str::to_string))
    }

    /// A column of an `osimage` (or `linuximage`) row.
    pub fn image_attr(
        &self,
        table: &str,
        image: &str,
        column: &str,
    ) -> Result<Option<String>, DbError> {
        let loaded = self.table(table)?;
        if !loaded.schema.has_column(column) {
            return Err(DbError::UnknownColumn {
                table: table.into(),
                column: column.into(),
            });
        }
        Ok(loaded
            .row_by_key(image)
            .and_then(|row| loaded.value(row, column))
            .map(str::to_string))
    }
}

fn schema_index(name: &str) -> Result<usize, DbError> {
    SCHEMAS
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| DbError::UnknownTable(name.to_string()))
}

/// Reads a table file; a missing file is an empty table with the schema's columns.
pub fn read_table_file(schema: &Schema, path: &Path) -> Result<Table, DbError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(schema.empty_table()),
        Err(e) => {
            return Err(DbError::Table(TabError {
                file: path.to_path_buf(),
                line: 0,
                field: None,
                problem: format!("cannot read: {e}"),
            }));
        }
    };
    let table = Table::parse(&bytes, path)?;
    check_header(schema, &table, path)?;
    Ok(table)
}

/// Splits a comma list (`nodelist.groups`), dropping blanks.
pub fn split_groups(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks a whole table before it is written (`tabrestore`, `chtab`): the header against the
/// schema, key columns present and unique, and each table's own rules (litefile options and
/// paths, litetree priorities and directory templates, statelite state mounts, policy
/// priorities). The first problem is returned, naming file, line and field.
pub fn validate_table(schema: &Schema, table: &Table, file: &Path) -> Result<(), TabError> {
    check_header(schema, table, file)?;
    let err = |row: &Row, column: &str, problem: String| TabError {
        file: file.to_path_buf(),
        line: row.line,
        field: table
            .column(column)
            .map(|i| (i + 1, Some(column.to_string()))),
        problem,
    };
    // litefile's image may be NULL (every image); every other key must be set.
    let required: Vec<&str> = schema
        .keys
        .iter()
        .copied()
        .filter(|k| !(schema.name == "litefile" && *k == "image"))
        .collect();
    let mut seen: HashMap<Vec<String>, usize> = HashMap::new();
    for row in &table.rows {
        for key in &required {
            if table.get(row, key).is_none_or(|v| v.trim().is_empty()) {
                return Err(err(
                    row,
                    key,
                    format!("the key column {key} must have a value"),
                ));
            }
        }
        let key: Vec<String> = schema
            .keys
            .iter()
            .map(|k| table.get(row, k).unwrap_or("").trim().to_string())
            .collect();
        if let Some(first) = seen.insert(key.clone(), row.line) {
            let shown: Vec<String> = schema
                .keys
                .iter()
                .zip(&key)
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            return Err(err(
                row,
                schema.keys[0],
                format!(
                    "duplicate key ({}), already on line {first}",
                    shown.join(", ")
                ),
            ));
        }
        if row_is_disabled(table, row) {
            continue; // a disabled row is kept as written; only its key must be sound
        }
        let template = |column: &str| -> Result<(), TabError> {
            match table.get(row, column) {
                Some(text) if !text.trim().is_empty() => crate::vars::LocationTemplate::parse(text)
                    .map(|_| ())
                    .map_err(|e| err(row, column, e.to_string())),
                _ => Err(err(row, column, format!("{column} must have a value"))),
            }
        };
        match schema.name {
            "litetree" => {
                let p = table.get(row, "priority").unwrap_or("");
                crate::vars::parse_priority(p).map_err(|e| err(row, "priority", e))?;
                template("directory")?;
            }
            "policy" => {
                let p = table.get(row, "priority").unwrap_or("");
                crate::vars::parse_priority(p).map_err(|e| err(row, "priority", e))?;
            }
            "statelite" => template("statemnt")?,
            _ => {}
        }
    }
    if schema.name == "litefile" {
        statelite_fs::rules::parse_litefile(table, file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::parse(text.as_bytes(), Path::new("t.csv")).unwrap()
    }

    fn cluster() -> Db {
        Db::from_tables(vec![
            (
                "nodelist",
                table(
                    "#node,groups,status,comments,disable\n\
                     \"n01\",\"compute,tokyo,all\",,,\n\
                     \"n02\",\"compute,all\",,,\n\
                     \"n03\",\"london,compute\",,,\n\
                     \"n04\",\"compute\",,,\"1\"\n",
                ),
            ),
            (
                "noderes",
                table(
                    "#node,nfsserver,xcatmaster,comments,disable\n\
                     \"n01\",\"10.0.0.9\",,,\n\
                     \"compute\",\"10.0.0.1\",\"10.0.0.254\",,\n\
                     \"tokyo\",\"10.1.0.1\",\"10.1.0.254\",,\n\
                     \"n02\",,\"10.2.0.254\",,\n\
                     \"london\",\"10.3.0.1\",,,\"yes\"\n",
                ),
            ),
            (
                "site",
                table("#key,value,comments,disable\n\"domain\",\"cluster.example\",,\n"),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn schemas_are_consistent() {
        for s in SCHEMAS {
            for k in s.keys {
                assert!(s.has_column(k), "{}: key {k}", s.name);
            }
            assert_eq!(s.columns.last(), Some(&"disable"), "{}", s.name);
            let mut cols = s.columns.to_vec();
            cols.sort();
            cols.dedup();
            assert_eq!(cols.len(), s.columns.len(), "{}", s.name);
        }
        assert!(schema("osimage").unwrap().has_column("rootimgdir"));
        assert!(schema("nodelist").unwrap().is_node_keyed());
        assert!(!schema("osimage").unwrap().is_node_keyed());
    }

    #[test]
    fn own_row_beats_groups_and_groups_go_in_order() {
        let db = cluster();
        let nfs = |n: &str| db.node_attr(n, "noderes", "nfsserver").unwrap();
        assert_eq!(nfs("n01").as_deref(), Some("10.0.0.9"), "own row");
        // n02 has its own row but a NULL nfsserver: falls through to its first group.
        assert_eq!(nfs("n02").as_deref(), Some("10.0.0.1"));
        // n03's first group (london) is disabled, so compute supplies it.
        assert_eq!(nfs("n03").as_deref(), Some("10.0.0.1"));
        let master = |n: &str| db.node_attr(n, "noderes", "xcatmaster").unwrap();
        assert_eq!(
            master("n01").as_deref(),
            Some("10.0.0.254"),
            "compute before tokyo"
        );
        assert_eq!(master("n02").as_deref(), Some("10.2.0.254"));
        // n04's nodelist row is disabled: no groups, no value.
        assert_eq!(nfs("n04"), None);
        assert_eq!(nfs("nobody"), None);
        assert_eq!(db.groups_of("n01").unwrap(), ["compute", "tokyo", "all"]);
        assert_eq!(
            db.site("domain").unwrap().as_deref(),
            Some("cluster.example")
        );
        assert_eq!(db.site("nope").unwrap(), None);
    }

    #[test]
    fn unknown_tables_and_columns_are_errors() {
        let db = cluster();
        assert!(matches!(
            db.node_attr("n01", "noderess", "x"),
            Err(DbError::UnknownTable(_))
        ));
        let e = db.node_attr("n01", "noderes", "nfsserverr").unwrap_err();
        assert!(e.to_string().contains("nfsserverr"), "{e}");
    }

    #[test]
    fn missing_file_is_empty_and_bad_header_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path());
        let t = db.table("litetree").unwrap();
        assert!(t.table.rows.is_empty());
        assert_eq!(t.table.columns.len(), 6);
        std::fs::write(
            dir.path().join("nodelist.csv"),
            "#node,groups,colour\n\"n1\",,\n",
        )
        .unwrap();
        let db = Db::open(dir.path());
        let e = db.table("nodelist").unwrap_err();
        let DbError::Table(te) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(te.line, 1);
        assert_eq!(te.field, Some((3, Some("colour".into()))));
        assert!(
            e.to_string().contains("nodelist.csv:1: field 3 (colour)"),
            "{e}"
        );
        std::fs::write(dir.path().join("hosts.csv"), "#ip\n\"1.2.3.4\"\n").unwrap();
        let e = db.table("hosts").unwrap_err();
        assert!(e.to_string().contains("key column \"node\""), "{e}");
    }

    #[test]
    fn validation_names_file_line_and_field() {
        let check = |name: &str, text: &str| {
            let t = Table::parse(text.as_bytes(), Path::new("x.csv")).unwrap();
            validate_table(schema(name).unwrap(), &t, Path::new("x.csv"))
        };
        let cases = [
            (
                "litefile",
                "#image,file,options\n,\"/a\",\"bogus\"\n",
                2,
                Some(3),
                "unknown options",
            ),
            (
                "litefile",
                "#image,file,options\n,\"rel\",\n",
                2,
                Some(2),
                "absolute",
            ),
            (
                "litefile",
                "#image,file,options\n\"ALL\",\"/a\",\n\"ALL\",\"/a\",\n",
                3,
                Some(1),
                "duplicate key",
            ),
            ("litefile", "#image,file\n", 1, None, "options"),
            ("litefile", "#image,file,colour\n", 1, Some(3), "no column"),
            (
                "litetree",
                "#priority,image,directory\nx,,\"/a\"\n",
                2,
                Some(1),
                "not a number",
            ),
            (
                "litetree",
                "#priority,image,directory\n1,,\n",
                2,
                Some(3),
                "must have a value",
            ),
            (
                "litetree",
                "#priority,image,directory\n1,,\"/$nodepos.rom\"\n",
                2,
                Some(3),
                "no column",
            ),
            (
                "litetree",
                "#priority,image,directory\n1,,\"/#CMD=id#\"\n",
                2,
                Some(3),
                "command",
            ),
            (
                "litetree",
                "#priority,image,directory\n,,\"/a\"\n",
                2,
                Some(1),
                "key column",
            ),
            (
                "statelite",
                "#node,image,statemnt\n\"japan\",,\"cnfs:\"\n",
                2,
                Some(3),
                "no path",
            ),
            (
                "nodelist",
                "#node,groups\n\"n1\",\"a\"\n\"n1\",\"b\"\n",
                3,
                Some(1),
                "duplicate key",
            ),
            (
                "policy",
                "#priority,commands\n\"4.x\",\"litefile\"\n",
                2,
                Some(1),
                "not a number",
            ),
        ];
        for (name, text, line, field, needle) in cases {
            let e = check(name, text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert_eq!(e.field.as_ref().map(|f| f.0), field, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
        // Disabled rows only need a sound key.
        check("litetree", "#priority,directory,disable\n1,,\"1\"\n").unwrap();
        check(
            "litefile",
            "#image,file,options\n,\"/a\",\n\"img\",\"/a\",\"ro\"\n",
        )
        .unwrap();
    }

    #[test]
    fn node_index_lists_nodes_and_groups() {
        let db = cluster();
        let idx = db.node_index().unwrap();
        assert!(idx.is_node("n01"));
        assert!(!idx.is_node("n04"), "disabled row");
        assert_eq!(idx.group_members("compute").unwrap(), ["n01", "n02", "n03"]);
    }
}

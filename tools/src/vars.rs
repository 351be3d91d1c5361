//! Variables in `litetree.directory` and `statelite.statemnt`, and the per-node resolution
//! of those two tables.
//!
//! A template is text with variables: `$node` (the node's name) and `$table.column` (that
//! attribute for the node, from its own row or its groups', see [`Db::node_attr`]); both may
//! be written in braces, `${node}`, `${noderes.nfsserver}`. `$site.KEY` is the `site` value
//! of KEY; `$osimage.COLUMN` (and `$linuximage.COLUMN`) is the column of the node's image.
//!
//! Where xCAT substitutes the word `UNDEFINED` for a missing value and runs `#CMD=...#`
//! commands, statelite refuses both: a missing value is an error naming the variable and the
//! node, and any `#...#` is rejected. Expanded values are checked before anyone mounts them:
//! no `..` component, no NUL or line break, a server name that is a host name or address.

use std::fmt;

use serde::Serialize;

use crate::db::{self, Db, DbError, LoadedTable};

/// Problems with a template or with expanding it for a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    #[error("{template:?}: {problem}")]
    Syntax { template: String, problem: String },
    #[error(
        "{template:?}: command substitution (#CMD=...# or any #...#) is not supported: \
         statelite never runs commands from a table"
    )]
    Command { template: String },
    #[error("{var}: {problem}")]
    BadVariable { var: String, problem: String },
    #[error("{var} has no value for node {node} (set it for the node or one of its groups)")]
    Missing { var: String, node: String },
    #[error("node {node}: {template:?} expands to {value:?}, which {problem}")]
    Unsafe {
        node: String,
        template: String,
        value: String,
        problem: String,
    },
    #[error("node {node}: cannot tell its image: {problem}")]
    NoImage { node: String, problem: String },
    #[error("{0}")]
    Db(#[from] DbError),
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Piece {
    Text(String),
    /// `$node`.
    Node,
    /// `$table.column`.
    Attr {
        table: String,
        column: String,
    },
}

/// A parsed template; only variables that can ever resolve are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    pub source: String,
    pub pieces: Vec<Piece>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Template {
    /// Parses a template, checking every variable against the schemas.
    pub fn parse(text: &str) -> Result<Template, VarError> {
        let syntax = |problem: String| VarError::Syntax {
            template: text.to_string(),
            problem,
        };
        if text.to_ascii_uppercase().contains("#CMD") || text.matches('#').count() >= 2 {
            return Err(VarError::Command {
                template: text.to_string(),
            });
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '\0' | '\n' | '\r')) {
            return Err(syntax(format!("contains the control character {c:?}")));
        }
        let bytes = text.as_bytes();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                // Copy up to the next '$' (which is ASCII, so this stays on char boundaries).
                let next = text[i..].find('$').map_or(bytes.len(), |n| i + n);
                literal.push_str(&text[i..next]);
                i = next;
                continue;
            }
            let braced = bytes.get(i + 1) == Some(&b'{');
            let start = if braced { i + 2 } else { i + 1 };
            let mut end = start;
            while end < bytes.len() && is_ident(bytes[end]) {
                end += 1;
            }
            if end == start || !is_ident_start(bytes[start]) {
                return Err(syntax(format!(
                    "'$' at byte {} must start a variable ($node, $table.column or \
                     ${{table.column}})",
                    i + 1
                )));
            }
            let first = &text[start..end];
            let mut column = None;
            if bytes.get(end) == Some(&b'.') && first != "node" {
                let col_start = end + 1;
                let mut col_end = col_start;
                while col_end < bytes.len() && is_ident(bytes[col_end]) {
                    col_end += 1;
                }
                if col_end == col_start {
                    return Err(syntax(format!(
                        "${first}. needs a column name after the dot"
                    )));
                }
                column = Some(&text[col_start..col_end]);
                end = col_end;
            }
            if braced {
                if bytes.get(end) != Some(&b'}') {
                    return Err(syntax(format!(
                        "'${{' at byte {} is not closed by '}}'",
                        i + 1
                    )));
                }
                end += 1;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(match column {
                None if first == "node" => Piece::Node,
                None => {
                    return Err(VarError::BadVariable {
                        var: format!("${first}"),
                        problem: "expected $node or $table.column".into(),
                    });
                }
                Some(column) => {
                    check_variable(first, column)?;
                    Piece::Attr {
                        table: first.to_string(),
                        column: column.to_string(),
                    }
                }
            });
            i = end;
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template {
            source: text.to_string(),
            pieces,
        })
    }

    /// Expands the template for `node`. Every variable must have a value.
    pub fn expand(&self, db: &Db, node: &str) -> Result<String, VarError> {
        let mut out = String::new();
        let mut image: Option<String> = None;
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Node => out.push_str(node),
                Piece::Attr { table, column } => {
                    let value = match table.as_str() {
                        "site" => db.site(column)?,
                        "osimage" | "linuximage" => {
                            if image.is_none() {
                                image = Some(image_of(db, node)?);
                            }
                            let image = image.as_deref().unwrap_or_default();
                            db.image_attr(table, image, column)?
                        }
                        _ => db.node_attr(node, table, column)?,
                    };
                    match value {
                        Some(v) => out.push_str(&v),
                        None => {
                            return Err(VarError::Missing {
                                var: format!("${table}.{column}"),
                                node: node.to_string(),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The variables used, as written (`$noderes.nfsserver`), for messages.
    pub fn variables(&self) -> Vec<String> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(_) => None,
                Piece::Node => Some("$node".to_string()),
                Piece::Attr { table, column } => Some(format!("${table}.{column}")),
            })
            .collect()
    }
}

/// Checks that `$table.column` can ever resolve for a node.
fn check_variable(table: &str, column: &str) -> Result<(), VarError> {
    let var = format!("${table}.{column}");
    let schema = db::schema(table).ok_or_else(|| VarError::BadVariable {
        var: var.clone(),
        problem: format!("unknown table {table:?}"),
    })?;
    let usable = schema.is_node_keyed() || matches!(table, "site" | "osimage" | "linuximage");
    if !usable {
        return Err(VarError::BadVariable {
            var,
            problem: format!(
                "table {table} has no per-node values (use a node table such as noderes, \
                 nodetype, nodepos, hosts, mac, nodelist; or site, osimage)"
            ),
        });
    }
    if table != "site" && !schema.has_column(column) {
        return Err(VarError::BadVariable {
            var,
            problem: format!(
                "table {table} has no column {column:?} (columns: {})",
                schema.columns.join(", ")
            ),
        });
    }
    Ok(())
}

/// Where something is mounted from: `server:/path`, or a local `/path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub server: Option<String>,
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server {
            Some(s) => write!(f, "{s}:{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// A `[server:]/path` template: the server part is split off at the first literal `:`
/// *before* expansion, so a value can never smuggle a path into the server part or a second
/// server into the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocationTemplate {
    pub source: String,
    pub server: Option<Template>,
    pub path: Template,
}

impl LocationTemplate {
    pub fn parse(text: &str) -> Result<LocationTemplate, VarError> {
        // Spaces around a value are a typo; line breaks are an error (see Template::parse).
        let text = text.trim_matches([' ', '\t']);
        let whole = Template::parse(text)?;
        if whole.pieces.is_empty() {
            return Err(VarError::Syntax {
                template: text.to_string(),
                problem: "empty location (expected [server:]/path)".into(),
            });
        }
        // Find the first ':' that is literal text.
        let mut server = Vec::new();
        let mut path = Vec::new();
        // A template that starts with '/' is a local path, whatever colons follow.
        let local = matches!(whole.pieces.first(), Some(Piece::Text(t)) if t.starts_with('/'));
        let mut split = local;
        for piece in whole.pieces {
            // `[fe80::1]:/x`: an IPv6 server's colons are inside its brackets.
            let colon = match &piece {
                Piece::Text(t) if !split && server.is_empty() && t.starts_with('[') => {
                    t.find("]:").map(|i| i + 1)
                }
                Piece::Text(t) if !split => t.find(':'),
                _ => None,
            };
            match piece {
                Piece::Text(t) if colon.is_some() => {
                    let at = colon.unwrap_or_default();
                    let (before, after) = (&t[..at], &t[at + 1..]);
                    if !before.is_empty() {
                        server.push(Piece::Text(before.to_string()));
                    }
                    if !after.is_empty() {
                        path.push(Piece::Text(after.to_string()));
                    }
                    split = true;
                }
                p if split => path.push(p),
                p => server.push(p),
            }
        }
        let (server, path) = if split && !local {
            if server.is_empty() {
                return Err(VarError::Syntax {
                    template: text.to_string(),
                    problem: "empty server name before ':'".into(),
                });
            }
            (Some(server), path)
        } else if local {
            (None, path)
        } else {
            (None, server)
        };
        if path.is_empty() {
            return Err(VarError::Syntax {
                template: text.to_string(),
                problem: "no path after the server (expected server:/path)".into(),
            });
        }
        let source = |pieces: &[Piece]| {
            pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => t.clone(),
                    Piece::Node => "$node".into(),
                    Piece::Attr { table, column } => format!("${table}.{column}"),
                })
                .collect::<String>()
        };
        Ok(LocationTemplate {
            source: text.to_string(),
            server: server.map(|pieces| Template {
                source: source(&pieces),
                pieces,
            }),
            path: Template {
                source: source(&path),
                pieces: path,
            },
        })
    }

    /// Expands for `node` and checks the result is safe to mount.
    pub fn expand(&self, db: &Db, node: &str) -> Result<Location, VarError> {
        let unsafe_value = |value: &str, problem: &str| VarError::Unsafe {
            node: node.to_string(),
            template: self.source.clone(),
            value: value.to_string(),
            problem: problem.to_string(),
        };
        let server = match &self.server {
            None => None,
            Some(t) => {
                let s = t.expand(db, node)?;
                check_clean(&s).map_err(|p| unsafe_value(&s, p))?;
                if !is_host(&s) {
                    return Err(unsafe_value(
                        &s,
                        "is not a server name (letters, digits, '.', '-', '_', or [IPv6])",
                    ));
                }
                Some(s)
            }
        };
        let raw = self.path.expand(db, node)?;
        check_clean(&raw).map_err(|p| unsafe_value(&raw, p))?;
        if !raw.starts_with('/') {
            return Err(unsafe_value(
                &raw,
                "is not an absolute path (expected [server:]/path)",
            ));
        }
        if raw.split('/').any(|c| c == "..") {
            return Err(unsafe_value(&raw, "contains a '..' component"));
        }
        // Collapse '//' as xCAT does: `$noderes.nfsdir/x` with nfsdir `/vol/` is /vol/x.
        let mut path = String::with_capacity(raw.len());
        for c in raw.chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        Ok(Location { server, path })
    }
}

fn check_clean(value: &str) -> Result<(), &'static str> {
    if value.contains('\0') {
        return Err("contains a NUL byte");
    }
    if value.contains('\n') || value.contains('\r') {
        return Err("contains a line break");
    }
    if value.matches('#').count() >= 2 || value.to_ascii_uppercase().contains("#CMD") {
        return Err("looks like a #...# command, which statelite never runs");
    }
    Ok(())
}

fn is_host(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The image a node boots, as xCAT's `litefile`/`litetree` commands find it:
/// `nodetype.provmethod` when it names an image, else `<os>-<arch>-statelite-<profile>`.
pub fn image_of(db: &Db, node: &str) -> Result<String, VarError> {
    let attr = |c: &str| db.node_attr(node, "nodetype", c);
    if let Some(p) = attr("provmethod")?
        && !matches!(p.as_str(), "statelite" | "netboot" | "install")
    {
        return Ok(p);
    }
    match (attr("os")?, attr("arch")?, attr("profile")?) {
        (Some(os), Some(arch), Some(profile)) => Ok(format!("{os}-{arch}-statelite-{profile}")),
        _ => Err(VarError::NoImage {
            node: node.to_string(),
            problem: "set nodetype.provmethod to an osimage name, or nodetype.os, \
                      nodetype.arch and nodetype.profile"
                .into(),
        }),
    }
}

/// True when a table's `image` value selects `image` (empty and `ALL` select every image).
pub fn image_matches(value: Option<&str>, image: &str) -> bool {
    is_all_images(value) || value.map(str::trim) == Some(image)
}

/// True when a table's `image` value means every image.
pub fn is_all_images(value: Option<&str>) -> bool {
    matches!(value.map(str::trim), None | Some("") | Some("ALL"))
}

/// A litetree priority as a number (xCAT compares them numerically: 1 < 2 < 10, 4.7 < 4.8).
pub fn parse_priority(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if p.is_finite() => Ok(p),
        _ => Err(format!("priority {text:?} is not a number")),
    }
}

/// One litetree row for a node, expanded (or the reason it cannot be).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeEntry {
    pub priority: String,
    /// Line in `litetree.csv`.
    pub line: usize,
    pub directory: String,
    pub mntopts: Option<String>,
    #[serde(serialize_with = "ser_result")]
    pub location: Result<Location, VarError>,
}

fn ser_result<S: serde::Serializer>(
    r: &Result<Location, VarError>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(1))?;
    match r {
        Ok(loc) => m.serialize_entry("ok", loc)?,
        Err(e) => m.serialize_entry("error", &e.to_string())?,
    }
    m.end()
}

/// The litetree directories for a node booting `image`, in search order: ascending numeric
/// priority, ties in file order. Row-level problems (bad priority, bad template) are errors
/// for the whole table, naming file, line and field; a missing value is an error of that
/// entry only.
pub fn litetree_for(db: &Db, node: &str, image: &str) -> Result<Vec<TreeEntry>, VarError> {
    let table = db.table("litetree")?;
    let mut entries = Vec::new();
    for row in table.enabled_rows() {
        if !image_matches(table.table.get(row, "image"), image) {
            continue;
        }
        let Some(directory) = table.value(row, "directory") else {
            continue; // xCAT skips rows without a directory
        };
        let priority_text = table.value(row, "priority").unwrap_or("");
        let priority = parse_priority(priority_text)
            .map_err(|p| DbError::Table(field_error(table, row, "priority", p)))?;
        let template = LocationTemplate::parse(directory)
            .map_err(|e| DbError::Table(field_error(table, row, "directory", e.to_string())))?;
        entries.push((
            priority,
            TreeEntry {
                priority: priority_text.trim().to_string(),
                line: row.line,
                directory: directory.to_string(),
                mntopts: table.value(row, "mntopts").map(str::to_string),
                location: template.expand(db, node),
            },
        ));
    }
    entries.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: ties stay in file order
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// The statelite row that gives a node its state directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateEntry {
    /// The node or group named by the row.
    pub matched: String,
    pub line: usize,
    pub statemnt: String,
    pub mntopts: Option<String>,
    #[serde(serialize_with = "ser_result")]
    pub location: Result<Location, VarError>,
}

/// The statelite row for a node booting `image`: a row naming the node beats one naming a
/// group, groups count in `nodelist.groups` order, and among rows for the same name one
/// naming the image beats an all-images row. `None` when no row applies (no persistent
/// storage for that node).
pub fn statelite_for(db: &Db, node: &str, image: &str) -> Result<Option<StateEntry>, VarError> {
    let table = db.table("statelite")?;
    let mut names = vec![node.to_string()];
    names.extend(db.groups_of(node)?);
    let mut best: Option<((usize, u8), &statelite_fs::tabfile::Row)> = None;
    for row in table.enabled_rows() {
        let Some(name) = table.value(row, "node") else {
            continue;
        };
        let Some(rank) = names.iter().position(|n| n == name.trim()) else {
            continue;
        };
        let image_value = table.table.get(row, "image");
        if !image_matches(image_value, image) {
            continue;
        }
        let generic = u8::from(is_all_images(image_value));
        let key = (rank, generic);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, row));
        }
    }
    let Some((_, row)) = best else {
        return Ok(None);
    };
    let statemnt = table.value(row, "statemnt").ok_or_else(|| {
        DbError::Table(field_error(
            table,
            row,
            "statemnt",
            "the row has no statemnt".into(),
        ))
    })?;
    let template = LocationTemplate::parse(statemnt)
        .map_err(|e| DbError::Table(field_error(table, row, "statemnt", e.to_string())))?;
    Ok(Some(StateEntry {
        matched: table
            .value(row, "node")
            .unwrap_or_default()
            .trim()
            .to_string(),
        line: row.line,
        statemnt: statemnt.to_string(),
        mntopts: table.value(row, "mntopts").map(str::to_string),
        location: template.expand(db, node),
    }))
}

/// A [`statelite_fs::tabfile::TabError`] for one field of a loaded table's row.
pub fn field_error(
    table: &LoadedTable,
    row: &statelite_fs::tabfile::Row,
    column: &str,
    problem: String,
) -> statelite_fs::tabfile::TabError {
    let index = table.table.column(column);
    statelite_fs::tabfile::TabError {
        file: table.path.clone(),
        line: row.line,
        field: index.map(|i| (i + 1, Some(column.to_string()))),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statelite_fs::tabfile::Table;
    use std::path::Path;

    fn table(text: &str) -> Table {
        Table::parse(text.as_bytes(), Path::new("t.csv")).unwrap()
    }

    /// The design document's cluster: n01 in New York, n02 in Shanghai, n03 in Japan.
    fn cluster(litetree: &str, statelite: &str) -> Db {
        Db::from_tables(vec![
            (
                "nodelist",
                table(
                    "#node,groups,comments,disable\n\
                     \"n01\",\"compute,all\",,\n\
                     \"n02\",\"compute,shanghai,all\",,\n\
                     \"n03\",\"japan,compute,all\",,\n\
                     \"n04\",\"all\",,\n",
                ),
            ),
            (
                "noderes",
                table(
                    "#node,nfsserver,nfsdir,comments,disable\n\
                     \"compute\",\"10.0.0.1\",\"/vol/xCAT//install/\",,\n\
                     \"n03\",\"10.0.3.1\",,,\n",
                ),
            ),
            (
                "nodetype",
                table(
                    "#node,os,arch,profile,provmethod,comments,disable\n\
                     \"compute\",\"rhels5.4\",\"x86_64\",\"compute\",,,\n\
                     \"n03\",,,,\"sles11-ppc64-compute\",,\n",
                ),
            ),
            (
                "nodepos",
                table(
                    "#node,room,comments,disable\n\
                     \"n01\",\"newyork-590Madison\",,\n\
                     \"shanghai\",\"shanghai-11foo\",,\n",
                ),
            ),
            (
                "osimage",
                table(
                    "#imagename,osvers,rootimgdir,comments,disable\n\
                     \"rhels5.4-x86_64-statelite-compute\",\"rhels5.4\",\"/install/netboot/rhels5.4/x86_64/compute\",,\n",
                ),
            ),
            (
                "site",
                table("#key,value,comments,disable\n\"master\",\"10.0.0.254\",,\n"),
            ),
            ("litetree", table(litetree)),
            ("statelite", table(statelite)),
        ])
        .unwrap()
    }

    fn db() -> Db {
        cluster("#priority,image,directory\n", "#node,image,statemnt\n")
    }

    fn loc(db: &Db, template: &str, node: &str) -> Result<String, VarError> {
        LocationTemplate::parse(template)?
            .expand(db, node)
            .map(|l| l.to_string())
    }

    #[test]
    fn every_variable_form() {
        let db = db();
        let x = |t: &str, n: &str| loc(&db, t, n).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(x("/statelite/$node", "n01"), "/statelite/n01");
        assert_eq!(x("/statelite/${node}x", "n01"), "/statelite/n01x");
        assert_eq!(
            x("$noderes.nfsserver:/statelite/$node", "n01"),
            "10.0.0.1:/statelite/n01"
        );
        assert_eq!(x("${noderes.nfsserver}:/s", "n03"), "10.0.3.1:/s");
        assert_eq!(
            x(
                "10.0.0.1:/syncdirs/$nodepos.room/$nodetype.os/$nodetype.arch/$nodetype.profile",
                "n01"
            ),
            "10.0.0.1:/syncdirs/newyork-590Madison/rhels5.4/x86_64/compute"
        );
        assert_eq!(
            x("/syncdirs/$nodepos.room/", "n02"),
            "/syncdirs/shanghai-11foo/",
            "from the group row"
        );
        assert_eq!(x("$site.master:/x", "n04"), "10.0.0.254:/x");
        assert_eq!(
            x("/m$osimage.rootimgdir/$osimage.osvers", "n01"),
            "/m/install/netboot/rhels5.4/x86_64/compute/rhels5.4"
        );
        assert_eq!(x("/a/pre-$node-post.d/", "n02"), "/a/pre-n02-post.d/");
        assert_eq!(x("$node.example.com:/x", "n02"), "n02.example.com:/x");
        assert_eq!(x("$noderes.nfsdir/state", "n01"), "/vol/xCAT/install/state");
        assert_eq!(x("cnfs:/gpfs/dallas/", "n01"), "cnfs:/gpfs/dallas/");
        assert_eq!(x("[fe80::1]:/x", "n01"), "[fe80::1]:/x");
        assert_eq!(
            x("/a:b/c", "n01"),
            "/a:b/c",
            "a colon after the path start is path"
        );
        let t = Template::parse("$node/$nodepos.room${site.master}").unwrap();
        assert_eq!(t.variables(), ["$node", "$nodepos.room", "$site.master"]);
    }

    #[test]
    fn missing_values_name_variable_and_node() {
        let db = db();
        let e = loc(&db, "/x/$nodepos.room", "n03").unwrap_err();
        assert_eq!(
            e,
            VarError::Missing {
                var: "$nodepos.room".into(),
                node: "n03".into()
            }
        );
        assert!(
            e.to_string()
                .contains("$nodepos.room has no value for node n03")
        );
        let e = loc(&db, "$site.nope:/x", "n01").unwrap_err();
        assert!(matches!(e, VarError::Missing { .. }), "{e}");
        let e = loc(&db, "/$osimage.rootimgdir", "n04").unwrap_err();
        assert!(matches!(e, VarError::NoImage { .. }), "{e}");
        let e = loc(&db, "/$osimage.rootimgdir", "n03").unwrap_err();
        assert!(matches!(e, VarError::Missing { .. }), "{e}");
    }

    #[test]
    fn bad_syntax_and_unknown_variables() {
        for (t, needle) in [
            ("/x/$", "must start a variable"),
            ("/x/$1abc", "must start a variable"),
            ("/x/${node", "not closed"),
            ("/x/${noderes.nfsserver", "not closed"),
            ("/x/$noderes.", "column name"),
            ("/x/$noderes", "expected $node or $table.column"),
            ("/x/$nodes.room", "unknown table"),
            ("/x/$nodepos.rom", "no column"),
            ("/x/$litefile.file", "no per-node values"),
            ("/x/\n", "control character"),
            ("", "empty location"),
            (":/x", "empty server"),
            ("cnfs:", "no path"),
        ] {
            let e = LocationTemplate::parse(t).expect_err(t);
            assert!(e.to_string().contains(needle), "{t:?}: {e}");
        }
    }

    #[test]
    fn commands_are_refused() {
        for t in [
            "/x/#CMD=hostname#",
            "/x/#cmd=id",
            "/x/#a#/y",
            "$noderes.nfsserver:/#CMD=rm -rf /#",
        ] {
            let e = Template::parse(t).expect_err(t);
            assert!(matches!(e, VarError::Command { .. }), "{t}: {e}");
            assert!(e.to_string().contains("never runs commands"), "{e}");
        }
        assert!(
            Template::parse("/x/a#b").is_ok(),
            "one '#' is just a character"
        );
    }

    #[test]
    fn unsafe_values_are_refused() {
        let bad_room = |room: &str| {
            let text = format!(
                "#node,room,comments,disable\n\"n01\",\"{}\",,\n",
                room.replace('"', "\"\"")
            );
            let db = Db::from_tables(vec![("nodepos", table(&text))]).unwrap();
            loc(&db, "srv:/syncdirs/$nodepos.room/x", "n01")
        };
        for (room, needle) in [
            ("..", "'..' component"),
            ("a/../../etc", "'..' component"),
            ("a\nb", "line break"),
            ("a\rb", "line break"),
            ("a\0b", "NUL"),
            ("#CMD=id#", "command"),
        ] {
            let e = bad_room(room).expect_err(room);
            assert!(matches!(e, VarError::Unsafe { .. }), "{room:?}: {e}");
            assert!(e.to_string().contains(needle), "{room:?}: {e}");
            assert!(e.to_string().contains("node n01"), "{e}");
        }
        assert_eq!(bad_room("a..b").unwrap(), "srv:/syncdirs/a..b/x");
        // A value cannot turn itself into a server or a second server.
        let db = Db::from_tables(vec![(
            "noderes",
            table("#node,nfsserver,nfsdir\n\"n01\",\"evil:/x\",\"other:/y\"\n"),
        )])
        .unwrap();
        let e = loc(&db, "$noderes.nfsserver:/s", "n01").unwrap_err();
        assert!(e.to_string().contains("not a server name"), "{e}");
        let e = loc(&db, "$noderes.nfsdir/s", "n01").unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let e = loc(&db, "relative/$node", "n01").unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
    }

    #[test]
    fn image_of_follows_xcat() {
        let db = db();
        assert_eq!(
            image_of(&db, "n01").unwrap(),
            "rhels5.4-x86_64-statelite-compute"
        );
        assert_eq!(image_of(&db, "n03").unwrap(), "sles11-ppc64-compute");
        assert!(matches!(
            image_of(&db, "n04"),
            Err(VarError::NoImage { .. })
        ));
    }

    #[test]
    fn litetree_orders_by_number_and_expands_per_node() {
        let db = cluster(
            "#priority,image,directory,mntopts,comments,disable\n\
             10,,\"/ten\",,,\n\
             2,,\"cnfs:/gpfs/dallas/\",\"ro,nolock\",,\n\
             1,,\"$noderes.nfsserver:/statelite/$node\",,,\n\
             1.5,\"other\",\"/other\",,,\n\
             1.5,\"ALL\",\"/syncdirs/$nodepos.room\",,,\n\
             3,,\"/disabled\",,,\"1\"\n\
             2,\"rhels5.4-x86_64-statelite-compute\",\"/tie\",,,\n",
            "#node,image,statemnt\n",
        );
        let image = image_of(&db, "n01").unwrap();
        let tree = litetree_for(&db, "n01", &image).unwrap();
        let shown: Vec<(String, String)> = tree
            .iter()
            .map(|e| (e.priority.clone(), e.location.as_ref().unwrap().to_string()))
            .collect();
        assert_eq!(
            shown,
            [
                ("1".into(), "10.0.0.1:/statelite/n01".into()),
                ("1.5".into(), "/syncdirs/newyork-590Madison".into()),
                ("2".into(), "cnfs:/gpfs/dallas/".into()),
                ("2".into(), "/tie".into()),
                ("10".into(), "/ten".into()),
            ]
        );
        assert_eq!(tree[2].mntopts.as_deref(), Some("ro,nolock"));
        // n03 has no room: that entry (only) is an error.
        let tree = litetree_for(&db, "n03", "sles11-ppc64-compute").unwrap();
        assert_eq!(tree.len(), 4);
        assert!(matches!(tree[1].location, Err(VarError::Missing { .. })));
        assert_eq!(
            tree[0].location.as_ref().unwrap().to_string(),
            "10.0.3.1:/statelite/n03"
        );
    }

    #[test]
    fn litetree_row_errors_name_file_line_field() {
        let db = cluster(
            "#priority,image,directory\n\"one\",,\"/x\"\n",
            "#node,image,statemnt\n",
        );
        let e = litetree_for(&db, "n01", "i").unwrap_err();
        assert!(
            e.to_string().contains("litetree.csv:2: field 1 (priority)"),
            "{e}"
        );
        let db = cluster(
            "#priority,image,directory\n1,,\"/x/#CMD=id#\"\n",
            "#node,image,statemnt\n",
        );
        let e = litetree_for(&db, "n01", "i").unwrap_err();
        assert!(
            e.to_string()
                .contains("litetree.csv:2: field 3 (directory)"),
            "{e}"
        );
    }

    #[test]
    fn statelite_precedence_and_the_japan_example() {
        let db = cluster(
            "#priority,image,directory\n",
            "#node,image,statemnt,mntopts,comments,disable\n\
             \u{201c}x\u{201d},,\"/never\",,,\n\
             \"japan\",,\"cnfs:/gpfs/state\",,,\n\
             \"compute\",,\"$noderes.nfsserver:/lite/state\",,,\n\
             \"compute\",\"rhels5.4-x86_64-statelite-compute\",\"/img/state\",,,\n\
             \"n02\",\"other-image\",\"/n02/other\",,,\n\
             \"shanghai\",,\"/sh/state\",\"vers=3\",,\"1\"\n",
        );
        let state = |n: &str| {
            let image = image_of(&db, n).unwrap();
            statelite_for(&db, n, &image)
                .unwrap()
                .map(|e| (e.matched, e.location.unwrap().to_string()))
        };
        assert_eq!(
            state("n03"),
            Some(("japan".into(), "cnfs:/gpfs/state".into())),
            "japan is n03's first group"
        );
        assert_eq!(
            state("n01"),
            Some(("compute".into(), "/img/state".into())),
            "image-specific row beats the all-images row of the same group"
        );
        // n02's own row is for another image; shanghai's row is disabled.
        assert_eq!(state("n02"), Some(("compute".into(), "/img/state".into())));
        let e = statelite_for(&db, "n03", "other-image").unwrap().unwrap();
        assert_eq!(e.location.unwrap().to_string(), "cnfs:/gpfs/state");
        let none = statelite_for(&db, "n04", "x").unwrap();
        assert_eq!(none, None);
        let e = statelite_for(&db, "n01", "some-other-image")
            .unwrap()
            .unwrap();
        assert_eq!(e.location.unwrap().to_string(), "10.0.0.1:/lite/state");
    }
}

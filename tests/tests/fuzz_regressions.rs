//! Inputs the fuzzers (`fuzz/`, `cargo +nightly fuzz run <target>`) once crashed on, kept
//! under `fuzz/regressions/<target>/` and replayed here on stable with the same checks the
//! fuzz targets make, plus a bounded deterministic random-input run of each check so stable
//! CI exercises them too.

use std::path::{Path, PathBuf};

use statelite_fs::tabfile::{Row, Table};
use statelite_tools::db::{self, Db};
use statelite_tools::noderange::{MAX_RANGE, NodeIndex, expand_element, natural_cmp};
use statelite_tools::vars::LocationTemplate;

fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let bytes = std::fs::read(&path).expect("read regression input");
        out.push((path, bytes));
    }
    out.sort();
    out
}

/// The `tabfile` target's check: parse, validate, and the canonical text round-trips.
fn check_tabfile(data: &[u8]) -> bool {
    let path = Path::new("fuzz.csv");
    let Ok(table) = Table::parse(data, path) else {
        return true;
    };
    for name in ["litefile", "litetree", "statelite", "nodelist"] {
        if let Some(schema) = db::schema(name) {
            let _ = db::validate_table(schema, &table, path);
        }
    }
    let text = table.to_text();
    let Ok(again) = Table::parse(text.as_bytes(), path) else {
        return false;
    };
    let fields = |t: &Table| t.rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>();
    again.columns == table.columns && fields(&again) == fields(&table) && again.to_text() == text
}

fn check_vars(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let template = parts.next().unwrap_or_default();
    let mut value = || parts.next().map(str::to_string);
    let (room, server, groups) = (value(), value(), value());
    let table = |columns: &[&str], fields: Vec<Option<String>>| {
        let mut t = Table::new(columns);
        t.rows.push(Row { line: 2, fields });
        t
    };
    let db = Db::from_tables(vec![
        (
            "nodelist",
            table(&["node", "groups"], vec![Some("n01".into()), groups]),
        ),
        (
            "nodepos",
            table(&["node", "room"], vec![Some("g".into()), room]),
        ),
        (
            "noderes",
            table(&["node", "nfsserver"], vec![Some("n01".into()), server]),
        ),
    ])
    .expect("in-memory db");
    let Ok(location) = LocationTemplate::parse(template) else {
        return;
    };
    if let Ok(loc) = location.expand(&db, "n01") {
        assert!(loc.path.starts_with('/'), "{loc:?}");
        assert!(!loc.path.split('/').any(|c| c == ".."), "{loc:?}");
        assert!(!loc.path.contains(['\0', '\n', '\r']), "{loc:?}");
        if let Some(s) = &loc.server {
            assert!(
                !s.is_empty() && !s.contains(['/', '\0', '\n', '\r']),
                "{loc:?}"
            );
        }
    }
}

fn node_index() -> NodeIndex {
    let mut pairs = Vec::new();
    for i in 1..=20 {
        pairs.push((format!("n{i:02}"), vec!["compute".to_string()]));
        pairs.push((
            format!("node{i}-ib"),
            vec!["ib".to_string(), "all".to_string()],
        ));
    }
    pairs.push(("login-1".into(), vec!["all".into()]));
    NodeIndex::new(pairs)
}

fn check_noderange(index: &NodeIndex, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(nodes) = index.expand(text) {
        assert!(!nodes.is_empty());
        for w in nodes.windows(2) {
            assert_eq!(natural_cmp(&w[0], &w[1]), std::cmp::Ordering::Less);
        }
        assert!(nodes.iter().all(|n| index.is_node(n)));
    }
    if let Ok(names) = expand_element(text) {
        assert!(names.len() as u64 <= MAX_RANGE + 1);
    }
}

#[test]
fn tabfile_regressions() {
    for (path, data) in regressions("tabfile") {
        assert!(check_tabfile(&data), "{}", path.display());
    }
}

#[test]
fn vars_regressions() {
    for (_, data) in regressions("vars") {
        check_vars(&data);
    }
}

#[test]
fn noderange_regressions() {
    let index = node_index();
    for (_, data) in regressions("noderange") {
        check_noderange(&index, &data);
    }
}

/// xorshift64*: deterministic inputs, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Random text built from pieces that matter to the parsers.
    fn input(&mut self, alphabet: &[&str]) -> Vec<u8> {
        let len = (self.next() % 24) as usize;
        let mut out = Vec::new();
        for _ in 0..len {
            out.extend_from_slice(
                alphabet[(self.next() % alphabet.len() as u64) as usize].as_bytes(),
            );
        }
        out
    }
}

#[test]
fn bounded_random_inputs() {
    let mut rng = Rng(0x0DDB_A115_EED0_0001);
    let tab = [
        "#",
        "a",
        "b,",
        ",",
        "\"",
        "\"\"",
        "\n",
        "\r\n",
        "\r",
        "x",
        "#image,file,options\n",
        "\"ALL\"",
        "/etc/",
        "..",
        "\u{feff}",
        "\u{1}",
    ];
    let vars = [
        "$",
        "$node",
        "${",
        "}",
        "$noderes.nfsserver",
        "$nodepos.room",
        ".",
        ":",
        "/",
        "..",
        "#",
        "#CMD=",
        "\u{1}",
        "\n",
        "[",
        "]",
        "a",
        "1",
        "$site.x",
        "$nodelist.groups",
    ];
    let ranges = [
        "n", "node", "0", "1", "9", "-", ",", "[", "]", ":", "+", "ib", "compute", "-ib", "99999",
        "@", "/", "^",
    ];
    let index = node_index();
    for _ in 0..20_000 {
        let data = rng.input(&tab);
        let _ = check_tabfile(&data);
        check_vars(&rng.input(&vars));
        check_noderange(&index, &rng.input(&ranges));
    }
}

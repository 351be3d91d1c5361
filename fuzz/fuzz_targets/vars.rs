//! Template parsing and expansion with hostile table values: never panics, and whatever
//! expands is safe to mount (absolute path, no `..` component, no NUL or line break, a
//! plain server name).
#![no_main]

use libfuzzer_sys::fuzz_target;
use statelite_fs::tabfile::{Row, Table};
use statelite_tools::db::Db;
use statelite_tools::vars::LocationTemplate;

fn table(columns: &[&str], rows: Vec<Vec<Option<String>>>) -> Table {
    let mut t = Table::new(columns);
    for (i, fields) in rows.into_iter().enumerate() {
        t.rows.push(Row {
            line: i + 2,
            fields,
        });
    }
    t
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // template \x01 room \x01 nfsserver \x01 groups
    let mut parts = text.split('\u{1}');
    let template = parts.next().unwrap_or_default();
    let mut value = || parts.next().map(str::to_string);
    let (room, server, groups) = (value(), value(), value());
    let Ok(db) = Db::from_tables(vec![
        (
            "nodelist",
            table(&["node", "groups"], vec![vec![Some("n01".into()), groups]]),
        ),
        (
            "nodepos",
            table(&["node", "room"], vec![vec![Some("g".into()), room]]),
        ),
        (
            "noderes",
            table(
                &["node", "nfsserver"],
                vec![vec![Some("n01".into()), server]],
            ),
        ),
        (
            "nodetype",
            table(
                &["node", "os", "arch", "profile"],
                vec![vec![
                    Some("n01".into()),
                    Some("os".into()),
                    Some("x86_64".into()),
                    Some("compute".into()),
                ]],
            ),
        ),
    ]) else {
        return;
    };
    let Ok(location) = LocationTemplate::parse(template) else {
        return;
    };
    if let Ok(loc) = location.expand(&db, "n01") {
        assert!(loc.path.starts_with('/'), "{loc:?}");
        assert!(!loc.path.split('/').any(|c| c == ".."), "{loc:?}");
        let clean = |s: &str| !s.contains(['\0', '\n', '\r']);
        assert!(clean(&loc.path), "{loc:?}");
        if let Some(server) = &loc.server {
            assert!(
                clean(server) && !server.is_empty() && !server.contains('/'),
                "{loc:?}"
            );
        }
    }
});

//! Table::parse on arbitrary bytes: never panics, and whatever parses writes back
//! canonically to text that parses to the same table (and is a fixed point). Every parsed
//! table is also run through the statelite table validation for the three statelite tables,
//! and read as a litefile both ways (from the parsed table and straight from the bytes, as a
//! mount does): the two must agree, and the rule set built from the rows must not panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use statelite_fs::rules::{RuleSet, parse_litefile, parse_litefile_bytes};
use statelite_fs::tabfile::Table;
use statelite_tools::db;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.csv");
    let Ok(table) = Table::parse(data, path) else {
        return;
    };
    let rows = parse_litefile(&table, path);
    assert_eq!(rows, parse_litefile_bytes(data, path), "litefile read two ways");
    if let Ok(rows) = rows {
        let set = RuleSet::from_rows(rows, "fuzz");
        // With no rule under a file entry (a violation), every rule governs its own path.
        if set.violations().is_empty() {
            for r in set.rules() {
                assert!(set.lookup(r.path.as_str()).is_some(), "{} has a rule", r.path);
            }
        }
    }
    // Known fs/src/tabfile.rs bug (reported, not ours to fix): in a one-column table a
    // NULL row is written as an empty line, which reads back as a blank line (no row).
    // Skip that shape so the fuzzer keeps looking for other problems; the regression test
    // tests/tests/fuzz_regressions.rs keeps the input.
    if table.columns.len() == 1 && table.rows.iter().any(|r| r.fields[0].is_none()) {
        return;
    }
    let text = table.to_text();
    let again = Table::parse(text.as_bytes(), path).expect("canonical text must parse");
    assert_eq!(again.columns, table.columns);
    let fields = |t: &Table| t.rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>();
    assert_eq!(
        fields(&again),
        fields(&table),
        "round trip changed the rows"
    );
    assert_eq!(again.to_text(), text, "canonical text is a fixed point");
    for name in ["litefile", "litetree", "statelite", "nodelist"] {
        if let Some(schema) = db::schema(name) {
            let _ = db::validate_table(schema, &table, path);
        }
    }
});

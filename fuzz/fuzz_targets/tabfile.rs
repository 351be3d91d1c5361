//! Table::parse on arbitrary bytes: never panics, and whatever parses writes back
//! canonically to text that parses to the same table (and is a fixed point). Every parsed
//! table is also run through the statelite table validation for the three statelite tables.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use statelite_fs::tabfile::Table;
use statelite_tools::db;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.csv");
    let Ok(table) = Table::parse(data, path) else {
        return;
    };
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

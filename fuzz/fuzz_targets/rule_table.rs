//! Compiled rule tables (`statelite_fs::rule_table`) on arbitrary bytes. Read as a table,
//! any bytes either load into a rule set without violations or fail cleanly, never panic.
//! Read as a litefile, whatever compiles loads back to exactly the rule set a mount would
//! parse from it, and to nothing for any other litefile or image.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use statelite_fs::rule_table::{TableError, compile, load};
use statelite_fs::rules::rules_from_litefile_bytes;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.csv");
    if let Ok(rules) = load(data, b"", "") {
        assert!(rules.violations().is_empty());
    }
    for image in ["", "fuzz"] {
        let Ok(table) = compile(data, path, image) else {
            continue;
        };
        let loaded = load(&table, data, image).expect("a compiled table loads");
        let parsed = rules_from_litefile_bytes(data, path, image).expect("it parsed");
        // What the filesystem reads per request, from the records, before any full rule
        // is made.
        for r in parsed.rules() {
            let id = loaded.lookup_id(r.path.as_str()).expect("a rule governs its own path");
            assert_eq!(loaded.path(id), r.path.as_str());
            assert_eq!(loaded.is_dir(id), r.is_dir);
            assert_eq!(loaded.storage(id), r.storage());
        }
        assert_eq!(loaded.rules(), parsed.rules());
        for r in parsed.rules() {
            assert_eq!(
                loaded.lookup(r.path.as_str()).map(|l| &l.path),
                parsed.lookup(r.path.as_str()).map(|p| &p.path)
            );
        }
        let mut other = data.to_vec();
        other.push(b'\n');
        assert_eq!(load(&table, &other, image).err(), Some(TableError::Stale));
        let wrong = if image.is_empty() { "fuzz" } else { "" };
        assert!(matches!(
            load(&table, data, wrong),
            Err(TableError::OtherImage { .. })
        ));
    }
});

//! Noderange expansion on arbitrary text: never panics, never exceeds the range limit, and
//! returns sorted, unique, known node names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statelite_tools::noderange::{MAX_RANGE, NodeIndex, expand_element, natural_cmp};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut pairs = Vec::new();
    for i in 1..=20 {
        pairs.push((format!("n{i:02}"), vec!["compute".to_string()]));
        pairs.push((
            format!("node{i}-ib"),
            vec!["ib".to_string(), "all".to_string()],
        ));
    }
    pairs.push(("login-1".into(), vec!["all".into()]));
    let index = NodeIndex::new(pairs);
    if let Ok(nodes) = index.expand(text) {
        assert!(!nodes.is_empty());
        for w in nodes.windows(2) {
            assert_eq!(
                natural_cmp(&w[0], &w[1]),
                std::cmp::Ordering::Less,
                "{nodes:?}"
            );
        }
        assert!(nodes.iter().all(|n| index.is_node(n)));
    }
    if let Ok(names) = expand_element(text) {
        assert!(names.len() as u64 <= MAX_RANGE + 1);
    }
});

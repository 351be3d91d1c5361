//! The kernel command line parser with hostile input: never panics, and whatever parses is
//! safe to use (absolute image path without `..`, a node name that is one path component,
//! mount data without blanks, quotes or NULs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use statelite_mountd::cmdline::{self, StateMnt};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = cmdline::words(&line);
    let Ok(p) = cmdline::parse(&line) else {
        return;
    };
    if let Some((src, opts)) = p.image() {
        assert!(src.path.starts_with('/'), "{p:?}");
        assert!(!src.path.split('/').any(|c| c == ".."), "{p:?}");
        assert!(!src.path.contains(['\0', ' ', '\n']), "{p:?}");
        if let Some(o) = opts {
            assert!(!o.to_string().contains([' ', '\n', '\0', '"']), "{p:?}");
        }
    }
    if let Some(StateMnt::Nfs(s)) = &p.statemnt {
        assert!(s.path.starts_with('/'), "{p:?}");
    }
    if let Some(n) = &p.node {
        let n = n.as_str();
        assert!(!n.is_empty() && !n.contains('/') && n != "." && n != "..", "{p:?}");
    }
    assert!(!p.mntopts.to_string().contains([' ', '\n', '\0', '"']), "{p:?}");
});

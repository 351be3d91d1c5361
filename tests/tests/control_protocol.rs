//! The control-socket protocol, driven in-process against a real (unmounted) overlay:
//! hostile and random request lines get a JSON answer, never a panic, and path requests
//! never leave the layers.

use std::sync::Arc;

use serde_json::Value;
use statelite_fs::layers::{LayerPaths, LayerStack};
use statelite_fs::overlay::{Overlay, OverlayOptions};
use statelite_fs::rules::{RuleSet, rows_from};
use statelite_mountd::control::{Control, answer_line};

fn control() -> (tempfile::TempDir, Control) {
    let d = tempfile::tempdir().unwrap();
    for sub in ["img/etc", "img/tmp", "vol", "state"] {
        std::fs::create_dir_all(d.path().join(sub)).unwrap();
    }
    std::fs::write(d.path().join("img/etc/passwd"), "root\n").unwrap();
    std::fs::write(d.path().join("outside-secret"), "secret\n").unwrap();
    let rows = rows_from(&[("ALL", "/tmp/", "tmpfs"), ("ALL", "/etc/motd", "ro")]).unwrap();
    let layers = LayerStack::open(LayerPaths {
        image: d.path().join("img"),
        trees: vec![],
        volatile: d.path().join("vol"),
        state: Some(d.path().join("state")),
        localdisk: None,
    })
    .unwrap();
    let ov = Overlay::new(
        RuleSet::for_image(&rows, "x"),
        layers,
        OverlayOptions::default(),
    )
    .unwrap();
    let ctl = Control {
        overlay: ov,
        reload: None,
        log: None,
    };
    (d, ctl)
}

fn is_answer(v: &Value) -> bool {
    v.is_object()
}

#[test]
fn hostile_requests_get_answers_and_never_escape() {
    let (_d, ctl) = control();
    let ok = answer_line(&ctl, r#"{"cmd":"which","path":"/etc/passwd"}"#);
    assert_eq!(ok["area"], "image (read-only)", "{ok}");
    for line in [
        "",
        "{",
        "null",
        "[]",
        r#"{"cmd":5}"#,
        r#"{"cmd":"which"}"#,
        r#"{"cmd":"which","path":"/../outside-secret"}"#,
        r#"{"cmd":"which","path":"/etc/../../outside-secret"}"#,
        r#"{"cmd":"which","path":"/./etc/passwd"}"#,
        r#"{"cmd":"which","path":"/etc/passwd/x"}"#,
        r#"{"cmd":"which","path":"/nul\u0000byte"}"#,
        r#"{"cmd":"log","lines":18446744073709551615}"#,
        r#"{"cmd":"reload"}"#,
        r#"{"cmd":"nope"}"#,
    ] {
        let v = answer_line(&ctl, line);
        assert!(is_answer(&v), "{line:?} -> {v}");
        assert!(
            !v.to_string().contains("outside-secret\",\"area"),
            "{line:?} escaped: {v}"
        );
        if line.contains("outside-secret") || line.contains("/./") {
            assert!(v.get("error").is_some(), "{line:?} must be refused: {v}");
        }
    }
    let long = format!(r#"{{"cmd":"which","path":"/{}"}}"#, "a/".repeat(5000));
    assert!(answer_line(&ctl, &long).get("error").is_some());
    for cmd in ["status", "layers", "diff", "denied", "stats"] {
        let v = answer_line(&ctl, &format!(r#"{{"cmd":"{cmd}"}}"#));
        assert!(is_answer(&v) && v.get("error").is_none(), "{cmd}: {v}");
    }
}

#[test]
fn random_request_lines_never_panic() {
    let (_d, ctl) = control();
    // A small deterministic generator: JSON-ish fragments, path pieces and raw bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces = [
        "{",
        "}",
        "\"cmd\"",
        ":",
        "\"which\"",
        ",",
        "\"path\"",
        "\"/",
        "..",
        "/",
        "etc",
        "\"",
        "\\u0000",
        "\"lines\"",
        "-1",
        "1e99",
        "[",
        "]",
        "\"status\"",
        "\"diff\"",
        "\\\"",
        "tmp",
    ];
    for _ in 0..20_000 {
        let n = (next() % 12) as usize;
        let mut line = String::new();
        for _ in 0..n {
            let r = next();
            if r % 5 == 0 {
                line.push(char::from_u32((r >> 8) as u32 % 0x250).unwrap_or('?'));
            } else {
                line.push_str(pieces[(r >> 3) as usize % pieces.len()]);
            }
        }
        let v = answer_line(&ctl, &line);
        assert!(is_answer(&v), "{line:?} -> {v}");
    }
    let _ = Arc::strong_count(&ctl.overlay);
}

#[test]
fn the_socket_replaces_a_stale_socket_and_never_a_file() {
    use std::io::{BufRead, BufReader, Write};
    let (d, ctl) = control();
    // Something that is not a socket is refused and kept.
    let file = d.path().join("precious");
    std::fs::write(&file, "keep me\n").unwrap();
    let e = statelite_mountd::control::serve(file.clone(), ctl.clone())
        .expect_err("a regular file is not replaced");
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
    // A socket left by a daemon that died is replaced, and the new one answers.
    let sock = d.path().join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let _served = statelite_mountd::control::serve(sock.clone(), ctl).expect("stale socket");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    writeln!(s, r#"{{"cmd":"status"}}"#).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(is_answer(&v) && v.get("error").is_none(), "{v}");
}

//! Black-box tests of the table subcommands: the real `statelite` binary on real files.
//!
//! Finding the binary: an integration test of one crate cannot use another crate's
//! `CARGO_BIN_EXE_*`, so [`statelite`] runs `cargo build -p statelite-tools --bin statelite`
//! once per test process (a no-op when it is fresh; same profile and target directory as
//! this test, found from the test executable's own path `<target>/<profile>/deps/...`)
//! and runs `<target>/<profile>/statelite`. The binary is thus never stale.
//!
//! Fixtures: `tests/fixtures/design-doc/` holds the design document's tables (RedHat and
//! SLES11 litefiles, its litetree and statelite examples); `tests/fixtures/cluster/` a
//! small cluster's node tables (n01 New York, n02 Shanghai, n03 in the japan group, n04 with
//! no room, n05 disabled, hv32lpar05 with an osimage name as provmethod).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn statelite() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/cli_tables-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target directory");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile directory name");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "statelite-tools",
                "--bin",
                "statelite",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile != "debug" {
            build.args([
                "--profile",
                if profile == "release" {
                    "release"
                } else {
                    profile
                },
            ]);
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the statelite binary failed"
        );
        let bin = profile_dir.join("statelite");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Runs `statelite --tables DIR ARGS...`.
fn run(tables: &Path, args: &[&str]) -> Output {
    Command::new(statelite())
        .arg("--tables")
        .arg(tables)
        .args(args)
        .env_remove("STATELITE_TABLES")
        .output()
        .expect("run statelite")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[track_caller]
fn fails(o: Output) -> (String, String) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    (stdout(&o), stderr(&o))
}

/// A tables directory with the cluster's node tables and the design document's litetree
/// and statelite tables (restored through the CLI), plus the given litefile fixture.
fn cluster(litefile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixtures().join("cluster")).expect("cluster fixtures") {
        let entry = entry.expect("fixture entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let doc = fixtures().join("design-doc");
    for (table, file) in [
        ("litetree", "litetree.csv"),
        ("statelite", "statelite.csv"),
        ("litefile", litefile),
    ] {
        let staged = tempfile::tempdir().expect("tempdir");
        let named = staged.path().join(format!("{table}.csv"));
        std::fs::copy(doc.join(file), &named).expect("copy");
        ok(run(
            dir.path(),
            &["tabrestore", named.to_str().expect("utf-8 path")],
        ));
    }
    dir
}

const IMAGE: &str = "rhels5.4-x86_64-statelite-compute";

#[test]
fn design_doc_litefiles_load_validate_and_print() {
    for (fixture, count, sample) in [
        ("litefile-redhat.csv", 42, "/var/lib/logrotate.status"),
        ("litefile-sles11.csv", 24, "/var/lib/"),
    ] {
        let t = cluster(fixture);
        let out = ok(run(t.path(), &["ilitefile", IMAGE, "--check"]));
        assert_eq!(out, format!("{IMAGE}: no violations\n"), "{fixture}");
        let out = ok(run(t.path(), &["litefile", "n01"]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), count, "{fixture}:\n{out}");
        // xCAT's format: "node: %-13s file", blank options shown as tmpfs,rw, sorted.
        assert!(
            lines.contains(&format!("n01: tmpfs,rw      {sample}").as_str()),
            "{out}"
        );
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        let out = ok(run(t.path(), &["ilitefile", IMAGE]));
        assert!(
            out.starts_with(&format!("{IMAGE}: tmpfs,rw      /etc/")),
            "{out}"
        );
        // A group expands to its enabled members, each with its own image.
        let out = ok(run(t.path(), &["litefile", "compute"]));
        for n in ["n01", "n02", "n03", "n04"] {
            assert_eq!(
                out.lines()
                    .filter(|l| l.starts_with(&format!("{n}: ")))
                    .count(),
                count
            );
        }
        assert!(!out.contains("n05"), "n05's nodelist row is disabled");
        let json: serde_json::Value =
            serde_json::from_str(&ok(run(t.path(), &["litefile", "n01,n03", "--json"])))
                .expect("json");
        assert_eq!(json[0]["image"], IMAGE);
        assert_eq!(json[1]["image"], "sles11-ppc64-statelite-compute");
        assert_eq!(json[0]["entries"].as_array().map(Vec::len), Some(count));
        assert_eq!(json[0]["entries"][0]["storage"], "tmpfs");
        assert_eq!(json[0]["entries"][0]["method"], "link");
    }
}

#[test]
fn ilitefile_compile_writes_a_rule_table_beside_the_litefile_and_refuses_bad_rules() {
    let t = cluster("litefile-redhat.csv");
    let out = ok(run(t.path(), &["ilitefile", IMAGE, "--compile"]));
    let table = t.path().join(format!("litefile.csv.{IMAGE}.rules"));
    assert!(out.starts_with(&format!("{}: ", table.display())), "{out}");
    let bytes = std::fs::read(&table).expect("table written");
    assert!(bytes.starts_with(b"SLRULES"), "a rule table");
    // What a mount would load is what the litefile says (the library's own check).
    let litefile = t.path().join("litefile.csv");
    let loaded =
        statelite_fs::rule_table::load(&bytes, &std::fs::read(&litefile).expect("litefile"), IMAGE)
            .expect("the table loads");
    let parsed = statelite_fs::rules::load_rules(&litefile, "no-such-image")
        .expect("parses")
        .rules()
        .len();
    assert!(loaded.rules().len() >= parsed, "the image's rows and ALL's");
    // The empty image name (ALL rows only) has a table of its own name.
    ok(run(t.path(), &["ilitefile", "", "--compile"]));
    assert!(t.path().join("litefile.csv.rules").exists());

    // A name that cannot be part of a file name: refused, nothing written.
    let o = run(t.path(), &["ilitefile", "../escape", "--compile"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot be part of a file name"),
        "{}",
        stderr(&o)
    );
    assert!(!t.path().join("litefile.csv.../escape.rules").exists());
    assert!(
        !t.path()
            .parent()
            .expect("parent")
            .join("escape.rules")
            .exists()
    );

    // Rules breaking a constraint: exit 1 naming the file and the rows; the table of the
    // last good compile is left as it was.
    ok(run(
        t.path(),
        &["chtab", "image=ALL,file=/data/", "litefile.options=ro"],
    ));
    ok(run(
        t.path(),
        &["chtab", "image=ALL,file=/data/x", "litefile.options=tmpfs"],
    ));
    let (_, err) = fails(run(t.path(), &["ilitefile", IMAGE, "--compile"]));
    assert!(err.contains(&litefile.display().to_string()), "{err}");
    assert!(err.contains("/data/x is under /data"), "{err}");
    assert_eq!(std::fs::read(&table).expect("still there"), bytes);
    // --compile with --check or --json is a usage error (clap's exit 2).
    let o = run(t.path(), &["ilitefile", IMAGE, "--compile", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn ilitefile_check_reports_every_violation() {
    let t = cluster("litefile-redhat.csv");
    ok(run(
        t.path(),
        &["chtab", "image=ALL,file=/data/", "litefile.options=ro"],
    ));
    ok(run(
        t.path(),
        &[
            "chtab",
            "image=ALL",
            "file=/data/x",
            "litefile.options=tmpfs",
        ],
    ));
    ok(run(
        t.path(),
        &[
            "chtab",
            "image=ALL,file=/srv/",
            "litefile.options=persistent",
        ],
    ));
    ok(run(
        t.path(),
        &["chtab", "image=ALL,file=/srv/a", "litefile.options=rw"],
    ));
    let (out, _) = fails(run(t.path(), &["ilitefile", IMAGE, "--check"]));
    let file = t.path().join("litefile.csv");
    assert!(
        out.contains(&format!(
            "{}: line 44, 45: /data/x is under /data",
            file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("line 46, 47: /srv/a (tmpfs) is under the persistent"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("{IMAGE}: 2 violation(s)\n")),
        "{out}"
    );
    let o = run(t.path(), &["ilitefile", IMAGE, "--check", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(json["violations"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["violations"][0]["lines"], serde_json::json!([44, 45]));
    // Without --check the listing still works and exits 0.
    ok(run(t.path(), &["ilitefile", IMAGE]));
}

#[test]
fn litetree_expands_per_node_and_per_group() {
    let t = cluster("litefile-redhat.csv");
    let out = ok(run(t.path(), &["litetree", "n01"]));
    assert_eq!(
        out,
        "n01: 1 10.0.0.1:/statelite/n01\n\
         n01: 2 cnfs:/gpfs/dallas/\n\
         n01: 3 10.0.0.1:/syncdirs/newyork-590Madison/rhels5.4/x86_64/compute\n"
    );
    // n02: room from its shanghai group row.
    let out = ok(run(t.path(), &["litetree", "n02"]));
    assert!(
        out.contains("n02: 3 10.0.0.1:/syncdirs/shanghai-11foo/rhels5.4/x86_64/compute\n"),
        "{out}"
    );
    // n03: japan is its first group, so japan's nfsserver and nodetype win over compute's;
    // its room is its own.
    let out = ok(run(t.path(), &["litetree", "n03"]));
    assert_eq!(
        out,
        "n03: 1 10.3.0.1:/statelite/n03\n\
         n03: 2 cnfs:/gpfs/dallas/\n\
         n03: 3 10.0.0.1:/syncdirs/tokyo-1/sles11/ppc64/compute\n"
    );
    // n04 has no room anywhere: an error naming the variable and node, exit 1, and the
    // other entries (and nodes) are still shown.
    let (out, err) = fails(run(t.path(), &["litetree", "n03,n04"]));
    assert!(out.contains("n04: 1 10.0.0.1:/statelite/n04\n"), "{out}");
    assert!(out.contains("n03: 3 "), "{out}");
    assert!(!out.contains("n04: 3"), "{out}");
    assert!(
        err.contains("n04: priority 3") && err.contains("$nodepos.room has no value for node n04"),
        "{err}"
    );
    // hv32lpar05 boots the image named by its provmethod; nodetype has no os for it, so
    // $nodetype.os is missing there.
    let (_, err) = fails(run(t.path(), &["litetree", "hv32lpar05"]));
    assert!(
        err.contains("$nodetype.os has no value for node hv32lpar05"),
        "{err}"
    );
    // JSON: every node, errors included.
    let o = run(t.path(), &["litetree", "compute", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let nodes: Vec<&str> = json
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(nodes, ["n01", "n02", "n03", "n04"]);
    assert_eq!(
        json[0]["entries"][0]["location"]["ok"],
        serde_json::json!({"server": "10.0.0.1", "path": "/statelite/n01"})
    );
    assert!(
        json[3]["entries"][2]["location"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("$nodepos.room"))
    );
}

#[test]
fn japan_group_statelite_example_resolves() {
    let t = cluster("litefile-redhat.csv");
    let out = ok(run(t.path(), &["lslite", "n03"]));
    assert!(
        out.contains(">>>Node: n03\nOsimage: sles11-ppc64-statelite-compute\n"),
        "{out}"
    );
    assert!(
        out.contains("Persistent directory (statelite table):\n        cnfs:/gpfs/state/n03/  (row for japan)\n"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(run(t.path(), &["lslite", "n03,n01", "--json"]))).expect("json");
    assert_eq!(json[0]["node"], "n01");
    assert_eq!(
        json[0]["statelite"],
        serde_json::Value::Null,
        "n01 has no state row"
    );
    assert_eq!(json[1]["statelite"]["matched"], "japan");
    assert_eq!(
        json[1]["statelite"]["location"]["ok"],
        serde_json::json!({"server": "cnfs", "path": "/gpfs/state"})
    );
    // The design document's second example: $noderes.nfsserver:/lite/state for one node.
    // (Its litetree needs $nodetype.os, which it lacks: exit 1, but the state row shows.)
    let o = run(t.path(), &["lslite", "hv32lpar05", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        json[0]["statelite"]["location"]["ok"],
        serde_json::json!({"server": "192.168.11.108", "path": "/lite/state"})
    );
}

#[test]
fn tabrestore_then_tabdump_round_trips() {
    let t = tempfile::tempdir().expect("tempdir");
    let doc = fixtures().join("design-doc");
    // Canonical input comes back byte for byte.
    let red = doc.join("litefile-redhat.csv");
    let staged = tempfile::tempdir().expect("tempdir");
    let named = staged.path().join("litefile");
    std::fs::copy(&red, &named).expect("copy");
    ok(run(
        t.path(),
        &["tabrestore", named.to_str().expect("utf-8")],
    ));
    let dumped = ok(run(t.path(), &["tabdump", "litefile"]));
    assert_eq!(
        dumped.as_bytes(),
        std::fs::read(&red).expect("read").as_slice()
    );
    // Non-canonical input (bare words, blank lines) dumps canonically, and that is stable.
    for (table, file) in [
        ("litetree", "litetree.csv"),
        ("litefile", "litefile-sles11.csv"),
    ] {
        let named = staged.path().join(format!("{table}.csv"));
        std::fs::copy(doc.join(file), &named).expect("copy");
        ok(run(
            t.path(),
            &["tabrestore", named.to_str().expect("utf-8")],
        ));
        let first = ok(run(t.path(), &["tabdump", table]));
        std::fs::write(&named, &first).expect("write");
        ok(run(
            t.path(),
            &["tabrestore", named.to_str().expect("utf-8")],
        ));
        let second = ok(run(t.path(), &["tabdump", table]));
        assert_eq!(first, second, "{table}");
        assert_eq!(
            std::fs::read_to_string(t.path().join(format!("{table}.csv"))).expect("read"),
            first
        );
    }
    let tree = ok(run(t.path(), &["tabdump", "litetree"]));
    assert!(
        tree.contains("\"1\",,\"$noderes.nfsserver:/statelite/$node\",,,\n"),
        "{tree}"
    );
    // A table with no file dumps as its header; the listing names every table.
    assert_eq!(
        ok(run(t.path(), &["tabdump", "site"])),
        "#key,value,comments,disable\n"
    );
    let list = ok(run(t.path(), &["tabdump"]));
    assert!(list.contains("litefile    24 rows"), "{list}");
    assert!(list.contains("site        (no file: empty)"), "{list}");
    // --json
    let json: serde_json::Value =
        serde_json::from_str(&ok(run(t.path(), &["tabdump", "litetree", "--json"]))).expect("json");
    assert_eq!(json["rows"][0]["priority"], "1");
    assert_eq!(json["rows"][0]["image"], serde_json::Value::Null);
    assert_eq!(json["rows"][0]["line"], 2);
    // Append: rows are added, duplicates refused naming the restore file.
    let extra = staged.path().join("litetree.csv");
    std::fs::write(&extra, "#priority,directory\n\"9\",\"/extra/$node\"\n").expect("write");
    ok(run(
        t.path(),
        &["tabrestore", "-a", extra.to_str().expect("utf-8")],
    ));
    let tree = ok(run(t.path(), &["tabdump", "litetree"]));
    assert!(tree.ends_with("\"9\",,\"/extra/$node\",,,\n"), "{tree}");
    let before = std::fs::read(t.path().join("litetree.csv")).expect("read");
    let (_, err) = fails(run(
        t.path(),
        &["tabrestore", "-a", extra.to_str().expect("utf-8")],
    ));
    assert!(
        err.contains(&format!(
            "{}:2: field 1 (priority): duplicate key",
            extra.display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(t.path().join("litetree.csv")).expect("read"),
        before
    );
}

/// Every class of malformed input: the error names file, line and field, and the table
/// already there is left byte-identical.
#[test]
fn bad_restores_change_nothing_and_name_file_line_field() {
    let t = cluster("litefile-redhat.csv");
    let staged = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "litefile",
            b"#image,file,options,comments,disable\n\"ALL\",\"/etc/motd,,,\n",
            ":2: field 2 (file): unterminated quoted value",
        ),
        (
            "litefile",
            b"#image,file,options,comments,disable\nALL,/etc/mo\"td,,,\n",
            ":2: field 2 (file): a '\"' inside an unquoted value",
        ),
        (
            "litefile",
            b"#image,file,options,comments,disable\n\"ALL\"x,\"/etc/motd\",,,\n",
            ":2: field 1 (image): expected ',' or end of line",
        ),
        (
            "litefile",
            b"#image,file,options,comments,disable\n\"ALL\",\"/a\",,,,,\n",
            ":2: field 6: expected at most 5 fields",
        ),
        (
            "litefile",
            b"#image,file,options,colour,disable\n",
            ":1: field 4 (colour): table litefile has no column",
        ),
        (
            "litefile",
            b"#image,file,options\n\"ALL\",\"/a\",\n\"ALL\",\"/b\",\"persistant\"\n",
            ":3: field 3 (options): unknown options \"persistant\"",
        ),
        (
            "litefile",
            b"#image,file,options\n\"ALL\",\"etc/motd\",\n",
            ":2: field 2 (file): \"etc/motd\" is not an absolute path",
        ),
        (
            "litefile",
            b"#image,file,options\n\"ALL\",\"/etc/../shadow\",\n",
            ":2: field 2 (file): \"/etc/../shadow\" contains a '..' component",
        ),
        (
            "litefile",
            b"#image,file,options\n\"ALL\",\"/a\",\n\"ALL\",\"/a\",\"ro\"\n",
            ":3: field 1 (image): duplicate key (image=\"ALL\", file=\"/a\"), already on line 2",
        ),
        (
            "litefile",
            b"#image,file,options\n\"ALL\",\"/\xff\",\n",
            ":2: field 2 (file): value is not valid UTF-8",
        ),
        (
            "litetree",
            b"#priority,image,directory\n\"first\",,\"/a\"\n",
            ":2: field 1 (priority): priority \"first\" is not a number",
        ),
        (
            "litetree",
            b"#priority,image,directory\n1,,\"/sync/#CMD=hostname#\"\n",
            ":2: field 3 (directory): \"/sync/#CMD=hostname#\": command substitution",
        ),
        (
            "litetree",
            b"#priority,image,directory\n1,,\"/sync/$nodepos.rooom\"\n",
            ":2: field 3 (directory): $nodepos.rooom: table nodepos has no column \"rooom\"",
        ),
        (
            "litetree",
            b"#priority,image,directory\n1,,\"/sync/$\"\n",
            ":2: field 3 (directory): \"/sync/$\": '$' at byte 7 must start a variable",
        ),
        (
            "statelite",
            b"#node,image,statemnt\n\"japan\",,\n",
            ":2: field 3 (statemnt): statemnt must have a value",
        ),
        (
            "statelite",
            b"#node,image,statemnt\n,,\"cnfs:/gpfs/state\"\n",
            ":2: field 1 (node): the key column node must have a value",
        ),
        (
            "nodelist",
            b"#node,groups\n\"n01\",\"a\"\n\"n01\",\"b\"\n",
            ":3: field 1 (node): duplicate key",
        ),
    ];
    for (table, text, needle) in cases {
        let target = t.path().join(format!("{table}.csv"));
        let before = std::fs::read(&target).expect("table exists");
        let file = staged.path().join(format!("{table}.csv"));
        std::fs::write(&file, text).expect("write");
        for append in [false, true] {
            let mut args = vec!["tabrestore", file.to_str().expect("utf-8")];
            if append {
                args.push("-a");
            }
            let (_, err) = fails(run(t.path(), &args));
            let expected = format!("statelite: {}{needle}", file.display());
            assert!(
                err.starts_with(&expected),
                "{table} {text:?}:\n{err}\nwanted {expected}"
            );
            assert_eq!(
                std::fs::read(&target).expect("read"),
                before,
                "{table} changed"
            );
        }
    }
    // A tables directory whose own file is malformed: every command names it.
    std::fs::write(t.path().join("nodepos.csv"), "#node,room,floor\n").expect("write");
    let (_, err) = fails(run(t.path(), &["litetree", "n01"]));
    assert!(err.contains("nodepos.csv:1: field 3 (floor)"), "{err}");
    // Unknown table names.
    let bogus = staged.path().join("litefiles.csv");
    std::fs::write(&bogus, "#a\n").expect("write");
    let (_, err) = fails(run(
        t.path(),
        &["tabrestore", bogus.to_str().expect("utf-8")],
    ));
    assert!(err.contains("must name a table"), "{err}");
    let (_, err) = fails(run(t.path(), &["tabdump", "nodes"]));
    assert!(err.contains("unknown table \"nodes\""), "{err}");
}

#[test]
fn chtab_updates_creates_and_deletes() {
    let t = cluster("litefile-redhat.csv");
    let out = ok(run(
        t.path(),
        &["chtab", "node=n01", "noderes.nfsserver=10.9.9.9"],
    ));
    assert_eq!(out, "noderes: created 1 row\n");
    let out = ok(run(t.path(), &["litetree", "n01"]));
    assert!(out.starts_with("n01: 1 10.9.9.9:/statelite/n01\n"), "{out}");
    let out = ok(run(
        t.path(),
        &["chtab", "node=n01", "noderes.nfsserver=10.8.8.8"],
    ));
    assert_eq!(out, "noderes: updated 1 row(s)\n");
    // The design document's policy commands.
    ok(run(
        t.path(),
        &[
            "chtab",
            "priority=4.7",
            "policy.commands=litefile",
            "policy.rule=allow",
        ],
    ));
    ok(run(
        t.path(),
        &[
            "chtab",
            "priority=4.9",
            "policy.commands=statelite",
            "policy.rule=allow",
        ],
    ));
    let policy = ok(run(t.path(), &["tabdump", "policy"]));
    assert_eq!(
        policy.lines().filter(|l| l.contains("\"allow\"")).count(),
        3,
        "{policy}"
    );
    // += adds to a comma list once.
    ok(run(
        t.path(),
        &["chtab", "node=n04", "nodelist.groups+=newyork,compute"],
    ));
    let out = ok(run(t.path(), &["litetree", "n04"]));
    assert!(
        out.contains("n04: 3 10.0.0.1:/syncdirs/newyork-590Madison/"),
        "{out}"
    );
    let nodelist = ok(run(t.path(), &["tabdump", "nodelist"]));
    assert!(
        nodelist.contains("\"n04\",\"compute,all,newyork\""),
        "{nodelist}"
    );
    // Multi-key litefile rows; a bad value changes nothing and names the row.
    ok(run(
        t.path(),
        &[
            "chtab",
            "image=ALL,file=/etc/motd",
            "litefile.options=persistent",
        ],
    ));
    let before = std::fs::read(t.path().join("litefile.csv")).expect("read");
    let (_, err) = fails(run(
        t.path(),
        &[
            "chtab",
            "image=ALL,file=/etc/motd",
            "litefile.options=bogus",
        ],
    ));
    assert!(
        err.contains("litefile.csv:44: field 3 (options): unknown options \"bogus\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read(t.path().join("litefile.csv")).expect("read"),
        before
    );
    let (_, err) = fails(run(
        t.path(),
        &["chtab", "node=n01", "noderes.nfsserverr=x"],
    ));
    assert!(err.contains("no column \"nfsserverr\""), "{err}");
    // Delete.
    let out = ok(run(
        t.path(),
        &["chtab", "-d", "node=n01", "noderes", "nodepos"],
    ));
    assert_eq!(
        out,
        "noderes: deleted 1 row(s)\nnodepos: deleted 0 row(s)\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(run(
        t.path(),
        &["chtab", "--json", "node=n09", "nodelist.groups=compute"],
    )))
    .expect("json");
    assert_eq!(json[0]["created"], 1);
}

#[test]
fn noderange_errors_and_global_option_placement() {
    let t = cluster("litefile-redhat.csv");
    for (range, needle) in [
        ("n04-n01", "runs backwards"),
        ("n01-m04", "mismatched prefix"),
        ("n[1-200000]", "larger than the limit"),
        ("n01,n99", "unknown node or group name(s) in noderange: n99"),
        ("n[01-03", "unbalanced"),
        ("compute,-compute", "selects no nodes"),
    ] {
        let (_, err) = fails(run(t.path(), &["litefile", range]));
        assert!(err.contains(needle), "{range}: {err}");
    }
    let out = ok(run(t.path(), &["litefile", "n[01-04],-n02,-japan"]));
    let nodes: std::collections::BTreeSet<&str> =
        out.lines().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["n01", "n04"]);
    // --tables after the subcommand, and from the environment.
    let o = Command::new(statelite())
        .args(["litetree", "n01", "--tables"])
        .arg(t.path())
        .output()
        .expect("run");
    assert!(ok(o).starts_with("n01: 1 "));
    let o = Command::new(statelite())
        .args(["litetree", "n01"])
        .env("STATELITE_TABLES", t.path())
        .output()
        .expect("run");
    assert!(ok(o).starts_with("n01: 1 "));
}

#[test]
fn help_texts_have_examples() {
    let t = tempfile::tempdir().expect("tempdir");
    for cmd in [
        "tabdump",
        "tabrestore",
        "chtab",
        "litefile",
        "litetree",
        "ilitefile",
        "lslite",
    ] {
        let out = ok(run(t.path(), &[cmd, "--help"]));
        assert!(out.contains("Examples:"), "{cmd}: {out}");
        assert!(out.contains("--json"), "{cmd}: {out}");
    }
}

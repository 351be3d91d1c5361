//! Compiled rule tables on a live mount (`statelite ilitefile IMAGE --compile`, then
//! `statelite-mountd mount`): the mount loads the table compiled from its litefile, and
//! parses the litefile instead whenever the table is stale or damaged, so the rules in
//! force are always the litefile's. Runs the real binaries. Needs root and /dev/fuse.

mod fuse_common;

use std::fs;
use std::process::Command;

use fuse_common::{Fixture, bin, write};

const RULES: &str = r#""ALL","/etc/ntp.conf",,,
"ALL","/var/log/",,,
"compute","/etc/hosts","tmpfs",,
"#;

fn compile(fx: &Fixture, image: &str) -> String {
    let out = Command::new(bin("statelite"))
        .arg("--tables")
        .arg(fx.dir.path())
        .args(["ilitefile", image, "--compile"])
        .output()
        .expect("run statelite");
    assert!(
        out.status.success(),
        "compile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn writable(fx: &Fixture, path: &str) -> bool {
    match fs::write(fx.m(path), "changed\n") {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => false,
        Err(e) => panic!("writing {path}: {e}"),
    }
}

fn fixture() -> Fixture {
    let mut fx = Fixture::new(RULES);
    for p in [
        "etc/ntp.conf",
        "etc/passwd",
        "etc/hosts",
        "var/log/messages",
    ] {
        write(&fx.p(&format!("img/{p}")), "image\n");
    }
    fx.extra_args = vec!["--image-name".into(), "compute".into()];
    fx.envs = vec![("STATELITE_LOG".into(), "info".into())];
    fx
}

#[test]
fn a_mount_loads_its_compiled_table_and_parses_a_litefile_edited_since() {
    let mut fx = fixture();
    let out = compile(&fx, "compute");
    let table = fx.p("litefile.csv.compute.rules");
    assert!(out.contains(&table.display().to_string()), "{out}");

    let log = fx.mount_output();
    assert!(log.contains("rules from the compiled rule table"), "{log}");
    assert!(log.contains(&table.display().to_string()), "{log}");
    // The table's rules are the litefile's, the image's own row included.
    assert!(writable(&fx, "/etc/ntp.conf"));
    assert!(writable(&fx, "/etc/hosts"));
    assert!(writable(&fx, "/var/log/messages"));
    assert!(!writable(&fx, "/etc/passwd"));
    fx.umount();

    // An edit after compiling: the table is stale, the litefile as edited is in force.
    let edited = format!(
        "#image,file,options,comments,disable\n{RULES}\"ALL\",\"/etc/passwd\",\"tmpfs\",,\n"
    );
    fs::write(fx.p("litefile.csv"), edited).expect("edit");
    let log = fx.mount_output();
    assert!(!log.contains("rules from the compiled rule table"), "{log}");
    assert!(
        log.contains("compiled from another version of the litefile"),
        "{log}"
    );
    assert!(writable(&fx, "/etc/passwd"));
    fx.umount();

    // Compiled again: used again.
    compile(&fx, "compute");
    let log = fx.mount_output();
    assert!(log.contains("rules from the compiled rule table"), "{log}");
    assert!(writable(&fx, "/etc/passwd"));
}

#[test]
fn a_damaged_or_foreign_table_is_never_used_and_never_stops_a_mount() {
    let mut fx = fixture();
    compile(&fx, "compute");
    let table = fx.p("litefile.csv.compute.rules");
    let good = fs::read(&table).expect("table");
    // Cut short: a warning, the litefile parsed, the mount up with its rules.
    fs::write(&table, &good[..good.len() / 2]).expect("truncate");
    let log = fx.mount_output();
    assert!(log.contains("parsing the litefile"), "{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(writable(&fx, "/etc/hosts"));
    fx.umount();

    // A table compiled for another image under this image's name (copied by hand).
    compile(&fx, "other");
    fs::copy(fx.p("litefile.csv.other.rules"), &table).expect("copy");
    let log = fx.mount_output();
    assert!(log.contains("compiled for image \"other\""), "{log}");
    // compute's own row applies: the other image's table was not used.
    assert!(writable(&fx, "/etc/hosts"));
    fx.umount();

    // A directory where the table would be: not readable as a table, still a mount.
    fs::remove_file(&table).expect("rm");
    fs::create_dir(&table).expect("mkdir");
    let log = fx.mount_output();
    assert!(log.contains("cannot read"), "{log}");
    assert!(writable(&fx, "/etc/ntp.conf"));
}

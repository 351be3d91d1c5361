//! Golden tests of `statelite liteimg` on small images built in a tempdir: the exact link
//! chains and `.default` contents of SPEC §4 for xCAT's RedHat sample litefile, undo/redo
//! with a changed litefile, idempotence (full snapshot including mtimes), errors that leave
//! the image untouched, and content liteimg did not create being preserved.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use statelite_fs::rules::{RuleSet, read_litefile, rows_from};
use statelite_tools::liteimg::{LiteimgError, Summary, liteimg};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Every entry below `root` (never following symlinks): type, mode, owner, size, mtime (ns),
/// inode, symlink target and file content.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = md.file_type();
            let what = if ft.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_file() {
                format!("file {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
            } else {
                "special".to_string()
            };
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} uid={} gid={} size={} mtime={}.{} ino={}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.size(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.ino()
                ),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

/// A small RedHat-like image: some sample entries present, many absent.
fn build_image(root: &Path) {
    write(root, "etc/fstab", "proc /proc proc defaults 0 0\n", 0o644);
    write(root, "etc/ntp.conf", "server 10.0.0.1\n", 0o644);
    write(root, "etc/resolv.conf", "nameserver 10.0.0.1\n", 0o644);
    write(root, "etc/inittab", "id:3:initdefault:\n", 0o644);
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n",
        0o644,
    );
    write(root, "etc/ssh/sshd_config", "PermitRootLogin yes\n", 0o600);
    write(root, "etc/ssh/ssh_host_rsa_key", "KEY\n", 0o600);
    write(root, "etc/ssh/moduli", "moduli\n", 0o644);
    symlink("/proc/self/mounts", root.join("etc/mtab")).unwrap();
    mkdir(root, "tmp/.X11-unix");
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write(root, "var/log/messages", "boot\n", 0o600);
    write(root, "var/log/audit/audit.log", "audit\n", 0o600);
    write(root, "var/lib/random-seed", "seed\n", 0o600);
    write(root, "var/lib/rpm/Packages", "rpmdb\n", 0o644);
    mkdir(root, "var/run/sshd");
    mkdir(root, "var/empty/sshd");
    mkdir(root, "var/cache/man/cat1");
    mkdir(root, "var/lock/subsys");
    mkdir(root, "var/tmp");
    write(root, "usr/bin/true", "#!/bin/sh\n", 0o755);
}

fn rules_from(entries: &[(&str, &str)]) -> RuleSet {
    let triples: Vec<(&str, &str, &str)> = entries.iter().map(|(f, o)| ("ALL", *f, *o)).collect();
    RuleSet::for_image(
        &rows_from(&triples).unwrap(),
        "rhels-x86_64-statelite-compute",
    )
}

fn run(root: &Path, rules: &RuleSet) -> Summary {
    liteimg(root, rules, false).unwrap_or_else(|e| panic!("liteimg failed: {e}"))
}

fn link_of(root: &Path, rel: &str) -> Option<String> {
    fs::read_link(root.join(rel))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// (entry, is_dir, image link target, tmpfs link target), written out by hand from xCAT's
/// getRelDir: one `..` per directory above the entry, `.` for a top-level entry.
const REDHAT_EXPECTED: &[(&str, bool, &str, &str)] = &[
    (
        "etc/adjtime",
        false,
        "../.statelite/tmpfs/etc/adjtime",
        "../../../.default/etc/adjtime",
    ),
    (
        "etc/fstab",
        false,
        "../.statelite/tmpfs/etc/fstab",
        "../../../.default/etc/fstab",
    ),
    (
        "etc/inittab",
        false,
        "../.statelite/tmpfs/etc/inittab",
        "../../../.default/etc/inittab",
    ),
    (
        "etc/lvm/.cache",
        false,
        "../../.statelite/tmpfs/etc/lvm/.cache",
        "../../../../.default/etc/lvm/.cache",
    ),
    (
        "etc/ntp.conf",
        false,
        "../.statelite/tmpfs/etc/ntp.conf",
        "../../../.default/etc/ntp.conf",
    ),
    (
        "etc/ntp.conf.predhclient",
        false,
        "../.statelite/tmpfs/etc/ntp.conf.predhclient",
        "../../../.default/etc/ntp.conf.predhclient",
    ),
    (
        "etc/resolv.conf",
        false,
        "../.statelite/tmpfs/etc/resolv.conf",
        "../../../.default/etc/resolv.conf",
    ),
    (
        "etc/resolv.conf.predhclient",
        false,
        "../.statelite/tmpfs/etc/resolv.conf.predhclient",
        "../../../.default/etc/resolv.conf.predhclient",
    ),
    (
        "etc/ssh",
        true,
        "../.statelite/tmpfs/etc/ssh",
        "../../../.default/etc/ssh",
    ),
    (
        "tmp",
        true,
        "./.statelite/tmpfs/tmp",
        "../.././.default/tmp",
    ),
    (
        "var/account",
        true,
        "../.statelite/tmpfs/var/account",
        "../../../.default/var/account",
    ),
    (
        "var/arpwatch",
        false,
        "../.statelite/tmpfs/var/arpwatch",
        "../../../.default/var/arpwatch",
    ),
    (
        "var/cache/alchemist",
        false,
        "../../.statelite/tmpfs/var/cache/alchemist",
        "../../../../.default/var/cache/alchemist",
    ),
    (
        "var/cache/foomatic",
        true,
        "../../.statelite/tmpfs/var/cache/foomatic",
        "../../../../.default/var/cache/foomatic",
    ),
    (
        "var/cache/logwatch",
        true,
        "../../.statelite/tmpfs/var/cache/logwatch",
        "../../../../.default/var/cache/logwatch",
    ),
    (
        "var/cache/man",
        true,
        "../../.statelite/tmpfs/var/cache/man",
        "../../../../.default/var/cache/man",
    ),
    (
        "var/cache/mod_ssl",
        true,
        "../../.statelite/tmpfs/var/cache/mod_ssl",
        "../../../../.default/var/cache/mod_ssl",
    ),
    (
        "var/cache/mod_proxy",
        true,
        "../../.statelite/tmpfs/var/cache/mod_proxy",
        "../../../../.default/var/cache/mod_proxy",
    ),
    (
        "var/cache/php-pear",
        true,
        "../../.statelite/tmpfs/var/cache/php-pear",
        "../../../../.default/var/cache/php-pear",
    ),
    (
        "var/cache/systemtap",
        true,
        "../../.statelite/tmpfs/var/cache/systemtap",
        "../../../../.default/var/cache/systemtap",
    ),
    (
        "var/empty",
        true,
        "../.statelite/tmpfs/var/empty",
        "../../../.default/var/empty",
    ),
    (
        "var/db/nscd",
        true,
        "../../.statelite/tmpfs/var/db/nscd",
        "../../../../.default/var/db/nscd",
    ),
    (
        "var/gdm",
        true,
        "../.statelite/tmpfs/var/gdm",
        "../../../.default/var/gdm",
    ),
    (
        "var/lib/dav",
        true,
        "../../.statelite/tmpfs/var/lib/dav",
        "../../../../.default/var/lib/dav",
    ),
    (
        "var/lib/dhcp",
        true,
        "../../.statelite/tmpfs/var/lib/dhcp",
        "../../../../.default/var/lib/dhcp",
    ),
    (
        "var/lib/dhclient",
        true,
        "../../.statelite/tmpfs/var/lib/dhclient",
        "../../../../.default/var/lib/dhclient",
    ),
    (
        "var/lib/php",
        true,
        "../../.statelite/tmpfs/var/lib/php",
        "../../../../.default/var/lib/php",
    ),
    (
        "var/lib/scsi",
        true,
        "../../.statelite/tmpfs/var/lib/scsi",
        "../../../../.default/var/lib/scsi",
    ),
    (
        "var/lib/ups",
        true,
        "../../.statelite/tmpfs/var/lib/ups",
        "../../../../.default/var/lib/ups",
    ),
    (
        "var/lib/random-seed",
        false,
        "../../.statelite/tmpfs/var/lib/random-seed",
        "../../../../.default/var/lib/random-seed",
    ),
    (
        "var/lib/iscsi",
        false,
        "../../.statelite/tmpfs/var/lib/iscsi",
        "../../../../.default/var/lib/iscsi",
    ),
    (
        "var/lib/logrotate.status",
        false,
        "../../.statelite/tmpfs/var/lib/logrotate.status",
        "../../../../.default/var/lib/logrotate.status",
    ),
    (
        "var/lib/ntp",
        true,
        "../../.statelite/tmpfs/var/lib/ntp",
        "../../../../.default/var/lib/ntp",
    ),
    (
        "var/lib/xen/ntp",
        false,
        "../../../.statelite/tmpfs/var/lib/xen/ntp",
        "../../../../../.default/var/lib/xen/ntp",
    ),
    (
        "var/lock",
        true,
        "../.statelite/tmpfs/var/lock",
        "../../../.default/var/lock",
    ),
    (
        "var/log",
        true,
        "../.statelite/tmpfs/var/log",
        "../../../.default/var/log",
    ),
    (
        "var/run",
        true,
        "../.statelite/tmpfs/var/run",
        "../../../.default/var/run",
    ),
    (
        "var/tmp",
        true,
        "../.statelite/tmpfs/var/tmp",
        "../../../.default/var/tmp",
    ),
    (
        "var/tux",
        true,
        "../.statelite/tmpfs/var/tux",
        "../../../.default/var/tux",
    ),
    (
        "opt/xcat",
        true,
        "../.statelite/tmpfs/opt/xcat",
        "../../../.default/opt/xcat",
    ),
    (
        "xcatpost",
        true,
        "./.statelite/tmpfs/xcatpost",
        "../.././.default/xcatpost",
    ),
];

fn redhat_rules() -> RuleSet {
    let rows = read_litefile(&fixture("litefile-redhat.csv")).unwrap();
    assert_eq!(rows.len(), 42);
    RuleSet::for_image(&rows, "rhels5.3-x86_64-statelite-test1")
}

#[test]
fn redhat_sample_gives_xcat_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_image(root);
    let before = snapshot(root);
    let summary = run(root, &redhat_rules());
    assert_eq!(summary.linked, 41, "{summary:?}");
    assert_eq!(
        summary.warnings.len(),
        1,
        "only /etc/mtab is left alone: {summary:?}"
    );

    for (rel, is_dir, image_target, tmpfs_target) in REDHAT_EXPECTED {
        assert_eq!(link_of(root, rel).as_deref(), Some(*image_target), "/{rel}");
        let t = format!(".statelite/tmpfs/{rel}");
        assert_eq!(link_of(root, &t).as_deref(), Some(*tmpfs_target), "/{t}");
        let default = root.join(".default").join(rel);
        let md = fs::symlink_metadata(&default).unwrap_or_else(|_| panic!("/.default/{rel}"));
        assert_eq!(md.is_dir(), *is_dir, "/.default/{rel}");
        // The chain resolves to the default copy, from the image path.
        assert_eq!(
            fs::canonicalize(root.join(rel)).unwrap(),
            fs::canonicalize(&default).unwrap(),
            "/{rel}"
        );
        // Present entries were moved (same inode, content, mode, mtime); absent ones created.
        let orig = before.get(*rel);
        match orig {
            Some(orig) => assert_eq!(
                &snapshot_one(root, &format!(".default/{rel}")),
                orig,
                "{rel}"
            ),
            None if *is_dir => assert_eq!(fs::read_dir(&default).unwrap().count(), 0, "{rel}"),
            None => assert_eq!(md.len(), 0, "{rel}"),
        }
    }
    // /etc/mtab -> /proc/self/mounts is left alone, as xCAT does.
    assert_eq!(
        link_of(root, "etc/mtab").as_deref(),
        Some("/proc/self/mounts")
    );
    assert!(!root.join(".default/etc/mtab").exists());
    assert!(fs::symlink_metadata(root.join(".statelite/tmpfs/etc/mtab")).is_err());
    // Moved directories keep their content and modes.
    assert_eq!(
        fs::read_to_string(root.join(".default/var/log/audit/audit.log")).unwrap(),
        "audit\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/ssh/sshd_config")).unwrap(),
        "PermitRootLogin yes\n"
    );
    assert_eq!(
        fs::symlink_metadata(root.join(".default/tmp"))
            .unwrap()
            .mode()
            & 0o7777,
        0o1777
    );
    // Parents of absent entries are created in the image (where the link must live).
    for d in ["etc/lvm", "var/lib/xen", "var/db", "opt"] {
        assert!(fs::symlink_metadata(root.join(d)).unwrap().is_dir(), "{d}");
    }
    // Content outside the litefile is untouched (same inode, mtime, content).
    let after = snapshot(root);
    for rel in [
        "etc/passwd",
        "var/lib/rpm/Packages",
        "usr/bin/true",
        "var/lib/rpm",
    ] {
        assert_eq!(after.get(rel), before.get(rel), "{rel}");
    }
    // The save file lists the rows applied, in xCAT's format.
    let save = fs::read_to_string(root.join(".statelite/litefile.save")).unwrap();
    assert_eq!(save.lines().count(), 42);
    assert!(
        save.contains("rhels5.3-x86_64-statelite-test1\tlink\t/etc/ssh/\n"),
        "{save}"
    );
    assert!(
        save.contains("rhels5.3-x86_64-statelite-test1\tlink\t/etc/ntp.conf\n"),
        "{save}"
    );
}

fn snapshot_one(root: &Path, rel: &str) -> String {
    let p = root.join(rel);
    let snap = snapshot(p.parent().unwrap());
    snap[p.file_name().unwrap().to_str().unwrap()].clone()
}

#[test]
fn second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_image(root);
    let rules = rules_from(&[
        ("/etc/ntp.conf", ""),
        ("/etc/ssh/", "tmpfs"),
        ("/var/", "persistent"),
        ("/var/lib/", "persistent"),
        ("/var/newdir/", "persistent"),
        ("/tmp/", "link"),
        ("/tmp/.X11-unix/", "link"),
        ("/tmp/new/", "link,persistent"),
        ("/opt/absent", "ro"),
    ]);
    let first = run(root, &rules);
    assert!(first.changed());
    let snap = snapshot(root);
    let second = run(root, &rules);
    assert!(!second.changed(), "{second:?}");
    assert_eq!(snapshot(root), snap, "a second run must not touch anything");
    // Copy entries: the image keeps its files, .default has an identical copy.
    assert_eq!(
        fs::read_to_string(root.join(".default/etc/ssh/moduli")).unwrap(),
        "moduli\n"
    );
    assert!(fs::symlink_metadata(root.join("etc/ssh")).unwrap().is_dir());
    assert!(root.join(".default/var/newdir").is_dir() && root.join("var/newdir").is_dir());
    // Link children only need to exist in .default.
    assert!(root.join(".default/tmp/new").is_dir());
    assert!(!root.join("opt/absent").is_symlink() && root.join(".default/opt/absent").is_file());
}

#[test]
fn copies_keep_mode_owner_times_xattrs_and_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "etc/ssh/key", "secret\n", 0o600);
    write(root, "etc/ssh/setuid", "x\n", 0o4755);
    fs::hard_link(root.join("etc/ssh/key"), root.join("etc/ssh/key.hardlink")).unwrap();
    symlink("key", root.join("etc/ssh/key.symlink")).unwrap();
    nix::unistd::mkfifo(
        &root.join("etc/ssh/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::unistd::chown(
        &root.join("etc/ssh/key"),
        Some(nix::unistd::Uid::from_raw(123)),
        Some(nix::unistd::Gid::from_raw(456)),
    )
    .unwrap();
    nix::unistd::chown(
        &root.join("etc/ssh/setuid"),
        Some(nix::unistd::Uid::from_raw(7)),
        None,
    )
    .unwrap();
    fs::set_permissions(
        root.join("etc/ssh/setuid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let has_xattr = xattr_set(&root.join("etc/ssh/key"), "user.statelite", b"yes");
    let rules = rules_from(&[("/etc/ssh/", "persistent")]);
    run(root, &rules);
    let strip = |s: &str| s.split(" ino=").next().unwrap().to_string();
    let src = snapshot(&root.join("etc/ssh"));
    let dst = snapshot(&root.join(".default/etc/ssh"));
    assert_eq!(
        src.iter()
            .map(|(k, v)| (k.clone(), strip(v)))
            .collect::<Vec<_>>(),
        dst.iter()
            .map(|(k, v)| (k.clone(), strip(v)))
            .collect::<Vec<_>>()
    );
    let a = fs::metadata(root.join(".default/etc/ssh/key")).unwrap();
    let b = fs::metadata(root.join(".default/etc/ssh/key.hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links stay hard links");
    assert_eq!((a.uid(), a.gid()), (123, 456));
    assert_eq!(
        fs::metadata(root.join(".default/etc/ssh/setuid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    if has_xattr {
        assert_eq!(
            xattr_get(&root.join(".default/etc/ssh/key"), "user.statelite"),
            Some(b"yes".to_vec())
        );
    }
    // The directory itself keeps its mtime.
    assert_eq!(
        fs::metadata(root.join("etc/ssh")).unwrap().mtime_nsec(),
        fs::metadata(root.join(".default/etc/ssh"))
            .unwrap()
            .mtime_nsec()
    );
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) -> bool {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// Directory mtimes change when entries move in and out; everything else must be restored.
fn without_dir_mtimes(s: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    s.iter()
        .filter(|(k, _)| !k.starts_with(".default") && !k.starts_with(".statelite"))
        .map(|(k, v)| {
            let v = if v.starts_with("dir ") {
                v.split(" mtime=").next().unwrap().to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn changed_litefile_undoes_exactly_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_image(root);
    let pristine = snapshot(root);
    let a = rules_from(&[
        ("/etc/fstab", ""),           // removed in B
        ("/etc/ntp.conf", ""),        // link -> tmpfs in B
        ("/var/arpwatch", ""),        // file -> dir in B (absent in the image)
        ("/var/log/", "link"),        // unchanged
        ("/var/lib/xen/ntp", ""),     // removed in B: created parents go away
        ("/var/empty/", "tmpfs"),     // removed in B
        ("/var/spool/new/", "tmpfs"), // removed in B: created in the image, then removed
    ]);
    run(root, &a);
    assert!(root.join("var/spool/new").is_dir());
    let b = rules_from(&[
        ("/etc/ntp.conf", "tmpfs"),
        ("/var/arpwatch/", ""),
        ("/var/log/", "link"),
        ("/etc/motd", ""), // added (absent)
    ]);
    let s = run(root, &b);
    assert_eq!(s.undone, 6, "{s:?}");

    // Removed link entry: back in place, same inode/mtime/content, no leftovers.
    assert_eq!(snapshot_one(root, "etc/fstab"), pristine["etc/fstab"]);
    assert!(fs::symlink_metadata(root.join(".default/etc/fstab")).is_err());
    assert!(fs::symlink_metadata(root.join(".statelite/tmpfs/etc/fstab")).is_err());
    // link -> tmpfs: the file is back (same inode) and copied to .default.
    assert_eq!(snapshot_one(root, "etc/ntp.conf"), pristine["etc/ntp.conf"]);
    assert_eq!(
        fs::read_to_string(root.join(".default/etc/ntp.conf")).unwrap(),
        "server 10.0.0.1\n"
    );
    assert!(fs::symlink_metadata(root.join(".statelite/tmpfs/etc/ntp.conf")).is_err());
    // file -> dir.
    assert!(
        fs::symlink_metadata(root.join(".default/var/arpwatch"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        link_of(root, "var/arpwatch").as_deref(),
        Some("../.statelite/tmpfs/var/arpwatch")
    );
    // Removed entries liteimg had created are gone, with the parents it created.
    for gone in [
        "var/lib/xen",
        ".default/var/lib/xen",
        ".statelite/tmpfs/var/lib/xen",
        "var/spool",
        ".default/var/empty",
    ] {
        assert!(fs::symlink_metadata(root.join(gone)).is_err(), "{gone}");
    }
    // The copied entry that was in the image is still there, untouched.
    assert_eq!(snapshot_one(root, "var/empty"), pristine["var/empty"]);
    // Added.
    assert_eq!(
        link_of(root, "etc/motd").as_deref(),
        Some("../.statelite/tmpfs/etc/motd")
    );
    // Unchanged link entry still in place.
    assert_eq!(
        link_of(root, "var/log").as_deref(),
        Some("../.statelite/tmpfs/var/log")
    );

    // Idempotent after a change too.
    let snap = snapshot(root);
    assert!(!run(root, &b).changed());
    assert_eq!(snapshot(root), snap);

    // And back to a single unrelated entry: the image is as it was, except that entry.
    run(root, &rules_from(&[("/xcatpost/", "")]));
    let mut now = without_dir_mtimes(&snapshot(root));
    now.remove("xcatpost");
    assert_eq!(now, without_dir_mtimes(&pristine));
}

#[test]
fn content_liteimg_did_not_create_is_kept_on_undo() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_image(root);
    run(
        root,
        &rules_from(&[("/var/cache/foomatic/", ""), ("/srv/data/", "tmpfs")]),
    );
    // The admin fills the defaults and the created directory afterwards.
    write(root, ".default/var/cache/foomatic/ppd", "admin's\n", 0o644);
    write(root, "srv/data/file", "admin's too\n", 0o644);
    run(root, &rules_from(&[("/etc/ntp.conf", "")]));
    assert_eq!(
        fs::read_to_string(root.join("var/cache/foomatic/ppd")).unwrap(),
        "admin's\n"
    );
    assert!(!root.join("var/cache/foomatic").is_symlink());
    assert_eq!(
        fs::read_to_string(root.join("srv/data/file")).unwrap(),
        "admin's too\n"
    );
    assert!(
        fs::symlink_metadata(root.join(".default/srv/data")).is_err(),
        "our copy is removed"
    );
}

fn expect_untouched(root: &Path, rules: &RuleSet, want: impl Fn(&LiteimgError) -> bool) {
    let before = snapshot(root);
    match liteimg(root, rules, false) {
        Ok(s) => panic!("liteimg should fail, did {s:?}"),
        Err(e) => assert!(want(&e), "unexpected error: {e}"),
    }
    assert_eq!(
        snapshot(root),
        before,
        "a failed run must leave the image as it was"
    );
}

#[test]
fn errors_leave_the_image_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_image(root);
    // Rule violations, each printed.
    expect_untouched(
        root,
        &rules_from(&[
            ("/etc/ntp.conf", ""),
            ("/opt/", "ro"),
            ("/opt/a", "tmpfs"),
            ("/var/", "link"),
            ("/var/log/", "tmpfs"),
        ]),
        |e| matches!(e, LiteimgError::Violations { violations, .. } if violations.len() == 2),
    );
    // A foreign .default entry in the way (checked before the first change, even though
    // /etc/fstab sorts after /etc/adjtime).
    write(root, ".default/etc/fstab", "stale\n", 0o644);
    expect_untouched(
        root,
        &rules_from(&[("/etc/adjtime", ""), ("/etc/fstab", "")]),
        |e| matches!(e, LiteimgError::Conflict { path, .. } if path == "/etc/fstab"),
    );
    fs::remove_dir_all(root.join(".default")).unwrap();
    // A file where the litefile says directory.
    expect_untouched(root, &rules_from(&[("/etc/ntp.conf/", "")]), |e| {
        matches!(e, LiteimgError::Conflict { .. })
    });
    // After a successful run, an admin replaced a linked file; removing the entry refuses
    // to clobber either version.
    run(root, &rules_from(&[("/etc/inittab", "")]));
    fs::remove_file(root.join("etc/inittab")).unwrap();
    write(root, "etc/inittab", "new\n", 0o644);
    expect_untouched(
        root,
        &rules_from(&[("/etc/ntp.conf", "")]),
        |e| matches!(e, LiteimgError::Conflict { path, .. } if path == "/etc/inittab"),
    );
}

#[test]
fn hostile_symlinks_are_never_followed() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "ntp.conf", "host's\n", 0o644);
    write(outside.path(), "ssh/sshd_config", "host's\n", 0o644);
    let outside_before = snapshot(outside.path());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // /etc is a symlink out of the image.
    symlink(outside.path(), root.join("etc")).unwrap();
    mkdir(root, "var");
    expect_untouched(root, &rules_from(&[("/etc/ntp.conf", "")]), |e| {
        e.to_string().contains("symlink")
    });
    expect_untouched(root, &rules_from(&[("/etc/ssh/", "tmpfs")]), |e| {
        e.to_string().contains("symlink")
    });
    // A hostile .default or .statelite is refused too.
    fs::remove_file(root.join("etc")).unwrap();
    write(root, "etc/ntp.conf", "image\n", 0o644);
    symlink(outside.path(), root.join(".default")).unwrap();
    expect_untouched(root, &rules_from(&[("/etc/ntp.conf", "")]), |e| {
        e.to_string().contains("symlink")
    });
    fs::remove_file(root.join(".default")).unwrap();
    symlink(outside.path(), root.join(".statelite")).unwrap();
    expect_untouched(root, &rules_from(&[("/etc/ntp.conf", "")]), |e| {
        e.to_string().contains("symlink")
    });
    assert_eq!(snapshot(outside.path()), outside_before);
}

#[test]
fn xcat_liteimgd_image_is_adopted() {
    // An image as xCAT's liteimg leaves it: links, .default, litefile.save, no record.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_image(root);
    write(root, ".default/etc/ntp.conf", "server 10.0.0.1\n", 0o644);
    fs::remove_file(root.join("etc/ntp.conf")).unwrap();
    symlink(
        "../.statelite/tmpfs/etc/ntp.conf",
        root.join("etc/ntp.conf"),
    )
    .unwrap();
    mkdir(root, ".statelite/tmpfs/etc");
    symlink(
        "../../../.default/etc/ntp.conf",
        root.join(".statelite/tmpfs/etc/ntp.conf"),
    )
    .unwrap();
    write(
        root,
        ".statelite/litefile.save",
        "img link /etc/ntp.conf\nimg tmpfs /etc/fstab\n",
        0o644,
    );
    write(
        root,
        ".default/etc/fstab",
        "proc /proc proc defaults 0 0\n",
        0o644,
    );
    // Same entry: nothing to do. fstab removed: its copy goes, the image file stays.
    let s = run(root, &rules_from(&[("/etc/ntp.conf", "")]));
    assert_eq!((s.linked, s.undone), (0, 1), "{s:?}");
    assert!(root.join("etc/fstab").is_file() && !root.join(".default/etc/fstab").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/ntp.conf")).unwrap(),
        "server 10.0.0.1\n"
    );
}

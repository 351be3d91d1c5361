//! The merged statelite root, mounted for real and driven with real syscalls and programs.
//! Needs root and /dev/fuse.

mod fuse_common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use fuse_common::{Fixture, append, snapshot, write};

const RULES: &str = r#""ALL","/etc/ntp.conf",,,
"ALL","/etc/ssh/","tmpfs",,
"ALL","/var/log/","rw",,
"ALL","/tmp/","tmpfs,rw",,
"ALL","/etc/motd","ro",,
"ALL","/opt/site/","link,ro",,
"ALL","/etc/hosts","con",,
"ALL","/etc/profile.local","link,con",,
"ALL","/etc/license","persistent",,
"ALL","/var/lib/db/","persistent",,
"ALL","/var/lib/rpm/","bind,persistent",,
"ALL","/etc/machine.conf","link,persistent",,
"ALL","/scratch/","localdisk",,
"ALL","/var/cache/man/","bind",,
"ALL","/etc/resolv.conf","link",,
"ALL","/var/spool/","tmpfs",,
"ALL","/var/spool/keep/","persistent",,
"other-image","/usr/","tmpfs",,
"#;

fn image(fx: &Fixture) {
    let i = |p: &str, c: &str| write(&fx.p(&format!("img/{p}")), c);
    i("etc/ntp.conf", "server pool.ntp.org\n");
    i("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    i("etc/ssh/sshd_config", "PermitRootLogin no\n");
    i("etc/ssh/ssh_host_key", "KEY\n");
    i("var/log/messages", "boot\n");
    i("tmp/.keep", "");
    i("etc/motd", "image motd\n");
    i("opt/site/README", "image site\n");
    i("etc/hosts", "127.0.0.1 localhost\n");
    i("etc/profile.local", "# image\n");
    i("etc/license", "image license\n");
    i("var/lib/db/data", "image db\n");
    i("var/lib/rpm/Packages", "rpmdb\n");
    i("etc/machine.conf", "machine=image\n");
    i("var/cache/man/index", "man\n");
    i("etc/resolv.conf", "nameserver 10.0.0.1\n");
    i("var/spool/cron/root", "* * * * * true\n");
    i("usr/bin/tool", "#!/bin/sh\necho tool\n");
    fs::set_permissions(fx.p("img/usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(fx.p("img/tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", fx.p("img/etc/abs-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/shadow", fx.p("img/etc/rel-link")).unwrap();
    // litetree sources: tree1 has priority over tree2
    write(&fx.p("tree1/etc/motd"), "tree1 motd\n");
    write(&fx.p("tree2/etc/motd"), "tree2 motd\n");
    write(&fx.p("tree2/etc/hosts"), "10.0.0.2 tree2\n");
    write(&fx.p("tree1/etc/hosts"), "10.0.0.1 tree1\n");
    write(&fx.p("tree2/etc/profile.local"), "# tree2\n");
    write(&fx.p("tree2/etc/ntp.conf"), "server tree2\n");
}

fn mounted() -> Fixture {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    fx.mount();
    fx
}

fn read(fx: &Fixture, p: &str) -> String {
    fs::read_to_string(fx.m(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The paths in a `denied` answer.
fn denied_paths(denied: &serde_json::Value) -> Vec<&str> {
    denied["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect()
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn every_option_behaves_as_specified() {
    let fx = mounted();
    let before_img = snapshot(&fx.p("img"));
    let before_tree = snapshot(&fx.p("tree1"));

    // tmpfs family (blank, tmpfs, rw, tmpfs,rw, link, bind): writable, from the first
    // litetree hit else the image.
    assert_eq!(
        read(&fx, "etc/ntp.conf"),
        "server tree2\n",
        "litetree hit wins over the image"
    );
    assert_eq!(read(&fx, "etc/resolv.conf"), "nameserver 10.0.0.1\n");
    for p in [
        "etc/ntp.conf",
        "etc/resolv.conf",
        "etc/ssh/sshd_config",
        "var/log/messages",
        "var/cache/man/index",
    ] {
        append(&fx.m(p), "appended\n");
        assert!(read(&fx, p).ends_with("appended\n"), "{p}");
    }
    fs::write(fx.m("tmp/new"), "x").unwrap();
    fs::create_dir(fx.m("var/log/sub")).unwrap();
    fs::write(fx.m("var/log/sub/f"), "y").unwrap();
    assert!(
        fx.p("vol/var/log/sub/f").exists(),
        "tmpfs data lives in the volatile store"
    );

    // ro and link,ro: read-only, from the first litetree hit (live), else the image.
    assert_eq!(read(&fx, "etc/motd"), "tree1 motd\n");
    // (EROFS at open(2) with OPEN requests; at the first write in no-open mode.)
    assert_eq!(
        errno_of(
            fs::OpenOptions::new()
                .write(true)
                .open(fx.m("etc/motd"))
                .and_then(|mut f| f.write_all(b"x"))
        ),
        libc::EROFS
    );
    assert_eq!(read(&fx, "opt/site/README"), "image site\n");
    assert_eq!(errno_of(fs::write(fx.m("opt/site/new"), "x")), libc::EROFS);
    write(&fx.p("tree1/etc/motd"), "tree1 motd v2\n");
    assert_eq!(
        read(&fx, "etc/motd"),
        "tree1 motd v2\n",
        "ro entries follow the server live"
    );
    write(&fx.p("tree1/etc/motd"), "tree1 motd\n");

    // con, link,con: the image's file then every litetree hit in priority order.
    assert_eq!(
        read(&fx, "etc/hosts"),
        "127.0.0.1 localhost\n10.0.0.1 tree1\n10.0.0.2 tree2\n"
    );
    assert_eq!(read(&fx, "etc/profile.local"), "# image\n# tree2\n");
    append(&fx.m("etc/hosts"), "1.2.3.4 added\n");
    assert!(
        read(&fx, "etc/hosts").ends_with("1.2.3.4 added\n"),
        "con files are writable"
    );

    // persistent family: writable, kept in the node's state directory.
    fs::write(fx.m("etc/license"), "node license\n").unwrap();
    fs::write(fx.m("var/lib/db/data"), "node db\n").unwrap();
    fs::write(fx.m("var/lib/rpm/Packages"), "node rpmdb\n").unwrap();
    fs::write(fx.m("etc/machine.conf"), "machine=n01\n").unwrap();
    assert_eq!(
        fs::read_to_string(fx.p("state/etc/license")).unwrap(),
        "node license\n"
    );
    assert_eq!(
        fs::read_to_string(fx.p("state/var/lib/db/data")).unwrap(),
        "node db\n"
    );
    assert_eq!(
        fs::read_to_string(fx.p("state/etc/machine.conf")).unwrap(),
        "machine=n01\n"
    );

    // localdisk: writable, in the local-disk directory; missing directory entries appear.
    assert!(
        fx.m("scratch").is_dir(),
        "a writable directory entry missing everywhere is created"
    );
    fs::write(fx.m("scratch/job"), "data").unwrap();
    assert!(fx.p("local/scratch/job").exists());

    // Nested entries: /var/spool/ tmpfs with /var/spool/keep/ persistent.
    fs::write(fx.m("var/spool/keep/q"), "queued").unwrap();
    assert!(fx.p("state/var/spool/keep/q").exists());
    fs::write(fx.m("var/spool/cron/other"), "x").unwrap();
    assert!(fx.p("vol/var/spool/cron/other").exists());

    // Rows for another image do not apply.
    assert_eq!(errno_of(fs::write(fx.m("usr/bin/new"), "x")), libc::EROFS);

    // Image and litetree sources are never written.
    assert_eq!(snapshot(&fx.p("img")), before_img);
    assert_eq!(snapshot(&fx.p("tree1")), before_tree);
}

#[test]
fn erofs_outside_writable_areas_is_recorded() {
    let fx = mounted();
    assert_eq!(errno_of(fs::write(fx.m("etc/passwd"), "x")), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(fx.m("usr/local"))), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(fx.m("etc/passwd"))), libc::EROFS);
    assert_eq!(
        errno_of(fs::set_permissions(
            fx.m("etc/passwd"),
            fs::Permissions::from_mode(0o600)
        )),
        libc::EROFS
    );
    assert_eq!(
        errno_of(fs::rename(fx.m("usr/bin/tool"), fx.m("usr/bin/tool2"))),
        libc::EROFS
    );
    let (ok, out) = fx.sh("setfattr -n user.x -v 1 etc/passwd");
    assert!(!ok && out.contains("Read-only"), "{out}");
    let denied = fx.control(r#"{"cmd":"denied"}"#);
    let paths = denied_paths(&denied);
    assert!(paths.contains(&"/etc/passwd"), "{denied}");
    assert!(paths.contains(&"/usr/local"), "{denied}");
    let row = denied["denied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "/usr/local")
        .unwrap();
    assert_eq!(
        row["suggested_litefile_row"],
        "\"ALL\",\"/usr/local/\",\"tmpfs\",,"
    );
}

/// The read-only layers are served from a private read-only, noatime copy of their mounts:
/// reading through the root, from the page cache and by passthrough alike, leaves the image's
/// and the litetree sources' own access times alone (on the fixture's filesystem, with
/// relatime, an access time older than the modification time is otherwise updated by the
/// first read), and an admin's change to the image still shows.
#[test]
fn reads_leave_the_read_only_layers_untouched_even_access_times() {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    let big = vec![7u8; 3 << 20]; // above the passthrough threshold
    fs::create_dir_all(fx.p("img/usr/share")).unwrap();
    fs::write(fx.p("img/usr/share/big.dat"), &big).unwrap();
    let files = ["img/usr/share/big.dat", "img/etc/passwd", "tree1/etc/motd"];
    for f in files {
        let (ok, out) = fx.sh(&format!("touch -a -d 2001-01-01 {}", fx.p(f).display()));
        assert!(ok, "{out}");
    }
    let atime = |fx: &Fixture, f: &str| fs::metadata(fx.p(f)).unwrap().atime();
    let before: Vec<i64> = files.iter().map(|f| atime(&fx, f)).collect();
    fx.mount();
    assert_eq!(fs::read(fx.m("usr/share/big.dat")).unwrap(), big);
    assert_eq!(read(&fx, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    assert_eq!(read(&fx, "etc/motd"), "tree1 motd\n");
    let after: Vec<i64> = files.iter().map(|f| atime(&fx, f)).collect();
    assert_eq!(before, after, "access times of {files:?} changed");
    // The copy is of the mount, not of its files: a change made to the image shows.
    write(&fx.p("img/etc/passwd.new"), "new\n");
    assert_eq!(read(&fx, "etc/passwd.new"), "new\n");
    // Natively the same read does update it, so the check above can fail.
    fs::read(fx.p("img/usr/share/big.dat")).unwrap();
    assert_ne!(atime(&fx, "img/usr/share/big.dat"), before[0]);
}

#[test]
fn persistence_across_remount_and_tmpfs_reset() {
    let mut fx = mounted();
    fs::write(fx.m("etc/license"), "kept\n").unwrap();
    fs::write(fx.m("var/lib/db/new"), "kept too\n").unwrap();
    fs::remove_file(fx.m("var/lib/db/data")).unwrap();
    fs::write(fx.m("etc/ntp.conf"), "volatile\n").unwrap();
    fs::write(fx.m("var/log/boot.log"), "volatile\n").unwrap();
    fs::remove_file(fx.m("var/log/messages")).unwrap();
    fx.reboot();
    assert_eq!(read(&fx, "etc/license"), "kept\n");
    assert_eq!(read(&fx, "var/lib/db/new"), "kept too\n");
    assert!(
        !fx.m("var/lib/db/data").exists(),
        "persistent whiteouts persist"
    );
    assert_eq!(
        read(&fx, "etc/ntp.conf"),
        "server tree2\n",
        "tmpfs content is reset"
    );
    assert!(!fx.m("var/log/boot.log").exists());
    assert_eq!(
        read(&fx, "var/log/messages"),
        "boot\n",
        "a tmpfs deletion is undone by reboot"
    );
}

#[test]
fn whiteouts_hide_and_recreate() {
    let fx = mounted();
    fs::remove_file(fx.m("etc/ssh/ssh_host_key")).unwrap();
    assert!(!fx.m("etc/ssh/ssh_host_key").exists());
    let names: Vec<String> = fs::read_dir(fx.m("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["sshd_config".to_string()]);
    assert!(
        fx.p("img/etc/ssh/ssh_host_key").exists(),
        "the image keeps it"
    );
    fs::write(fx.m("etc/ssh/ssh_host_key"), "NEW KEY\n").unwrap();
    assert_eq!(read(&fx, "etc/ssh/ssh_host_key"), "NEW KEY\n");
    // A whole directory: delete its entries, remove it, recreate it empty.
    fs::remove_dir_all(fx.m("var/spool/cron")).unwrap();
    assert!(!fx.m("var/spool/cron").exists());
    fs::create_dir(fx.m("var/spool/cron")).unwrap();
    assert_eq!(
        fs::read_dir(fx.m("var/spool/cron")).unwrap().count(),
        0,
        "old entries stay hidden"
    );
    // A file entry in a read-only directory can be deleted and recreated.
    fs::remove_file(fx.m("etc/ntp.conf")).unwrap();
    assert!(!fx.m("etc/ntp.conf").exists());
    assert!(
        !fs::read_dir(fx.m("etc"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "ntp.conf")
    );
    fs::write(fx.m("etc/ntp.conf"), "server new\n").unwrap();
    assert_eq!(read(&fx, "etc/ntp.conf"), "server new\n");
    // Moved away, a file made over a deleted image file leaves its name deleted, and so
    // does a copied-up image file: the image's files must not come back.
    fs::rename(fx.m("etc/ssh/ssh_host_key"), fx.m("etc/ssh/key.moved")).unwrap();
    append(&fx.m("etc/ssh/sshd_config"), "# node\n");
    fs::rename(fx.m("etc/ssh/sshd_config"), fx.m("etc/ssh/sshd_config.old")).unwrap();
    let mut names: Vec<String> = fs::read_dir(fx.m("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["key.moved", "sshd_config.old"]);
    assert!(!fx.m("etc/ssh/ssh_host_key").exists());
    assert!(!fx.m("etc/ssh/sshd_config").exists());
    assert_eq!(read(&fx, "etc/ssh/key.moved"), "NEW KEY\n");
    assert!(read(&fx, "etc/ssh/sshd_config.old").ends_with("# node\n"));
    // And a new file at a deleted name, by the exclusive create.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(fx.m("etc/ssh/sshd_config"))
        .unwrap();
    f.write_all(b"fresh\n").unwrap();
    drop(f);
    assert_eq!(read(&fx, "etc/ssh/sshd_config"), "fresh\n");
}

#[test]
fn rename_over_sed_and_package_manager_patterns() {
    let fx = mounted();
    let (ok, out) = fx.sh("sed -i 's/pool/local/' etc/ntp.conf && cat etc/ntp.conf");
    assert!(ok, "{out}");
    assert_eq!(
        out, "server tree2\n",
        "no match leaves the content as it was"
    );
    let (ok, out) = fx.sh("sed -i 's/tree2/node/' etc/ntp.conf && cat etc/ntp.conf");
    assert!(ok && out == "server node\n", "{out}");
    // sed -i on a persistent file entry in a read-only directory (temp file crosses stores)
    let (ok, out) = fx.sh("sed -i 's/image/node/' etc/license && cat etc/license");
    assert!(ok && out == "node license\n", "{out}");
    assert_eq!(
        fs::read_to_string(fx.p("state/etc/license")).unwrap(),
        "node license\n"
    );
    // rpm-style: write a temporary, rename over the target, in a writable directory
    fs::write(fx.m("var/lib/rpm/Packages;5f3a"), "new rpmdb").unwrap();
    fs::rename(
        fx.m("var/lib/rpm/Packages;5f3a"),
        fx.m("var/lib/rpm/Packages"),
    )
    .unwrap();
    assert_eq!(read(&fx, "var/lib/rpm/Packages"), "new rpmdb");
    // mv within and between directories of one store
    let (ok, out) = fx.sh(
        "mv var/log/messages var/log/messages.1 && mv tmp/.keep var/log/keep && ls -A var/log tmp",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("messages.1") && out.contains("keep") && !out.contains("messages\n"),
        "{out}"
    );
    // cp, ln, mkfifo, ln -s, tar, find
    let (ok, out) = fx.sh(
        "cp -a etc/ssh tmp/ssh-copy && ln tmp/ssh-copy/sshd_config tmp/hard && ln -s ../etc/motd tmp/soft \
         && mkfifo tmp/fifo && test -p tmp/fifo && tar -C tmp -cf /tmp/statelite-tar-$$.tar . && mkdir tmp/x \
         && tar -C tmp/x -xf /tmp/statelite-tar-$$.tar && rm /tmp/statelite-tar-$$.tar && find tmp -type f | sort && cat tmp/soft",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("tmp/x/ssh-copy/sshd_config") && out.contains("tree1 motd"),
        "{out}"
    );
    assert_eq!(fs::metadata(fx.m("tmp/hard")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(fx.m("tmp/hard")).unwrap().ino(),
        fs::metadata(fx.m("tmp/ssh-copy/sshd_config"))
            .unwrap()
            .ino()
    );
    // xattrs on writable files
    let (ok, out) = fx.sh(
        "setfattr -n user.test -v hello tmp/hard && getfattr -n user.test --only-values tmp/hard",
    );
    assert!(ok && out == "hello", "{out}");
}

#[test]
fn exdev_between_areas_of_different_kinds() {
    let fx = mounted();
    fs::write(fx.m("var/log/x"), "x").unwrap();
    assert_eq!(
        errno_of(fs::rename(fx.m("var/log/x"), fx.m("var/lib/db/x"))),
        libc::EXDEV
    );
    assert_eq!(
        errno_of(fs::rename(fx.m("var/lib/db/data"), fx.m("tmp/data"))),
        libc::EXDEV
    );
    assert_eq!(
        errno_of(fs::hard_link(fx.m("var/log/x"), fx.m("var/lib/db/x"))),
        libc::EXDEV
    );
    // mv falls back to copy + delete
    let (ok, out) = fx.sh("mv var/log/x var/lib/db/x && cat var/lib/db/x");
    assert!(ok && out == "x", "{out}");
    // A directory with entries in the image cannot be renamed in place (like overlayfs).
    assert_eq!(
        errno_of(fs::rename(fx.m("etc/ssh"), fx.m("tmp/ssh"))),
        libc::EXDEV
    );
}

#[test]
fn inode_numbers_are_stable_across_copy_up() {
    let fx = mounted();
    let before = fs::metadata(fx.m("etc/ssh/sshd_config")).unwrap().ino();
    let dir_before = fs::metadata(fx.m("etc/ssh")).unwrap().ino();
    append(&fx.m("etc/ssh/sshd_config"), "x\n");
    assert!(fx.p("vol/etc/ssh/sshd_config").exists(), "copied up");
    assert_eq!(
        fs::metadata(fx.m("etc/ssh/sshd_config")).unwrap().ino(),
        before
    );
    assert_eq!(fs::metadata(fx.m("etc/ssh")).unwrap().ino(), dir_before);
    // and after the kernel forgets it
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(
        fs::metadata(fx.m("etc/ssh/sshd_config")).unwrap().ino(),
        before
    );
    assert_eq!(
        listed_ino(&fx, "etc/ssh", "sshd_config"),
        before,
        "readdir agrees with stat"
    );
}

/// The inode number readdir of `dir` gives for `name`.
fn listed_ino(fx: &Fixture, dir: &str, name: &str) -> u64 {
    use std::os::unix::fs::DirEntryExt;
    fs::read_dir(fx.m(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == name)
        .unwrap()
        .ino()
}

#[test]
fn symlinks_are_returned_verbatim_and_never_followed_by_the_daemon() {
    let fx = Fixture::new(
        "\"ALL\",\"/etc/secret\",\"ro\",,\n\"ALL\",\"/etc/other\",\"tmpfs\",,\n\"ALL\",\"/data/\",\"tmpfs\",,\n",
    );
    write(&fx.p("img/etc/secret"), "image secret\n");
    write(&fx.p("img/etc/other"), "image other\n");
    write(&fx.p("img/data/f"), "f\n");
    std::os::unix::fs::symlink("/etc", fx.p("tree1/etc")).unwrap(); // a litetree dir that is a link to the host
    std::os::unix::fs::symlink("../../../../../../../../etc/hostname", fx.p("img/data/up"))
        .unwrap();
    std::os::unix::fs::symlink("/proc/self/root/etc/hostname", fx.p("img/data/magic")).unwrap();
    let mut fx = fx;
    fx.mount();
    assert_eq!(
        read(&fx, "etc/secret"),
        "image secret\n",
        "a symlinked litetree path is not followed"
    );
    assert_eq!(
        fs::read_link(fx.m("data/up")).unwrap().to_str().unwrap(),
        "../../../../../../../../etc/hostname"
    );
    assert_eq!(
        fs::read_link(fx.m("data/magic")).unwrap().to_str().unwrap(),
        "/proc/self/root/etc/hostname"
    );
    // copy-up of a symlink copies the link, not its target
    let (ok, out) = fx.sh("touch -h data/up && readlink data/up");
    assert!(
        ok && out.trim() == "../../../../../../../../etc/hostname",
        "{out}"
    );
    assert!(
        fs::symlink_metadata(fx.p("vol/data/up"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let which = fx.control(r#"{"cmd":"which","path":"/etc/secret"}"#);
    assert_eq!(which["origin"]["layer"], "image", "{which}");
}

#[test]
fn concurrent_readers_and_writers_see_consistent_data() {
    let fx = mounted();
    let root = fx.m("");
    let mut handles = Vec::new();
    for t in 0..6 {
        let root = root.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..150 {
                let p = root.join(format!("tmp/t{t}-{i}"));
                let data = format!("{t}:{i}:").repeat(50 + i);
                fs::write(&p, &data).unwrap();
                assert_eq!(fs::read_to_string(&p).unwrap(), data);
                let q = root.join(format!("tmp/t{t}-{i}.renamed"));
                fs::rename(&p, &q).unwrap();
                assert_eq!(fs::read_to_string(&q).unwrap(), data);
                if i % 3 == 0 {
                    fs::remove_file(&q).unwrap();
                }
                // readers of shared image content
                let mut s = String::new();
                fs::File::open(root.join("etc/passwd"))
                    .unwrap()
                    .read_to_string(&mut s)
                    .unwrap();
                assert_eq!(s, "root:x:0:0::/root:/bin/sh\n");
            }
        }));
    }
    // one appender and concurrent readers of one file: every read is a prefix of lines
    let appender = {
        let p = root.join("var/log/shared");
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .unwrap();
            for i in 0..500 {
                writeln!(f, "line {i:05}").unwrap();
            }
        })
    };
    for _ in 0..200 {
        if let Ok(s) = fs::read_to_string(root.join("var/log/shared")) {
            for (n, line) in s.lines().enumerate() {
                if line.len() == 10 {
                    assert_eq!(line, format!("line {n:05}"));
                }
            }
        }
    }
    appender.join().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        fs::read_to_string(root.join("var/log/shared"))
            .unwrap()
            .lines()
            .count(),
        500
    );
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 6 * 100 + 1);
}

#[test]
fn a_generation_bump_right_after_the_mount_is_ready_is_seen() {
    // The generation the watcher compares against is the one the mount started from: a
    // bump made the moment the mount command returns (before the daemon's watcher thread
    // has run) is a change, not the starting point.
    for _ in 0..5 {
        let mut fx = Fixture::new(RULES);
        write(&fx.p("img/etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
        write(&fx.p("img/.statelite/generation"), "1\n");
        fx.mount();
        write(&fx.p("img/.statelite/generation"), "2\n");
        wait_for_a_generation_bump(&fx);
    }
}

#[test]
fn image_update_with_generation_bump_shows_live() {
    let fx = mounted();
    assert_eq!(read(&fx, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    let _ = fs::metadata(fx.m("etc/group")); // cache a negative entry
    fs::write(fx.m("etc/ntp.conf"), "node copy\n").unwrap();
    // The admin updates the image (rename-over, like rpm) and bumps the generation.
    write(&fx.p("img/etc/passwd.new"), "root:x:0:0::/root:/bin/bash\n");
    fs::rename(fx.p("img/etc/passwd.new"), fx.p("img/etc/passwd")).unwrap();
    write(&fx.p("img/etc/group"), "root:x:0:\n");
    write(&fx.p("img/etc/ntp.conf"), "server updated\n");
    fx.imgupdate();
    wait_for(&fx, "etc/passwd", "root:x:0:0::/root:/bin/bash\n");
    assert_eq!(
        read(&fx, "etc/group"),
        "root:x:0:\n",
        "negative entries were invalidated"
    );
    assert_eq!(
        read(&fx, "etc/ntp.conf"),
        "node copy\n",
        "copied-up files keep the node's version"
    );
    assert!(
        !fx.m(".statelite/generation").exists(),
        "liteimg/statelite internals are hidden"
    );
    // The new passwd can show before the watcher's next poll (a fresh open finds the
    // renamed-over file itself); the bump is seen within a few polls.
    wait_for_a_generation_bump(&fx);
}

/// Waits up to 5 s for the daemon to count a generation bump; fails with its stats.
fn wait_for_a_generation_bump(fx: &Fixture) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stats = fx.control(r#"{"cmd":"stats"}"#);
        if stats["generation_bumps"].as_u64().unwrap() >= 1 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "bump unseen: {stats}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn litectl_views_on_a_live_mount() {
    let fx = mounted();
    fs::write(fx.m("etc/license"), "n\n").unwrap();
    fs::write(fx.m("tmp/new"), "n\n").unwrap();
    fs::remove_file(fx.m("var/log/messages")).unwrap();
    let which = fx.control(r#"{"cmd":"which","path":"/etc/license"}"#);
    assert_eq!(which["area"], "persistent");
    assert_eq!(which["copied_up"], true);
    assert_eq!(which["rule"]["options_text"], "persistent");
    assert_eq!(
        which["origin"]["layer"], "image",
        "the origin is kept after copy-up: {which}"
    );
    assert_eq!(errno_of(fs::write(fx.m("etc/motd"), "x")), libc::EROFS);
    let denied = fx.control(r#"{"cmd":"denied"}"#);
    let motd = denied["denied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "/etc/motd")
        .unwrap();
    assert_eq!(
        motd["replaces_line"], 6,
        "an ro row is to be changed, not duplicated: {motd}"
    );
    let which = fx.control(r#"{"cmd":"which","path":"/etc/motd"}"#);
    assert_eq!(
        which["origin"],
        serde_json::json!({"layer":"tree","index":0})
    );
    let which = fx.control(r#"{"cmd":"which","path":"/etc/passwd"}"#);
    assert_eq!(which["area"], "image (read-only)");
    let diff = fx.control(r#"{"cmd":"diff"}"#);
    let changes: Vec<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        changes.contains(&("/etc/license".into(), "modified".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("/tmp/new".into(), "added".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("/var/log/messages".into(), "deleted".into())),
        "{changes:?}"
    );
    let status = fx.control(r#"{"cmd":"status"}"#);
    assert_eq!(status["degraded"], false);
}

#[test]
fn degraded_without_state_makes_persistent_paths_read_only() {
    let mut fx =
        Fixture::new("\"ALL\",\"/etc/license\",\"persistent\",,\n\"ALL\",\"/tmp/\",\"tmpfs\",,\n");
    write(&fx.p("img/etc/license"), "image\n");
    std::fs::create_dir_all(fx.p("img/tmp")).unwrap();
    std::fs::remove_dir(fx.p("state")).unwrap();
    fx.mount();
    assert_eq!(read(&fx, "etc/license"), "image\n");
    assert_eq!(
        errno_of(fs::write(fx.m("etc/license"), "x")),
        libc::EROFS,
        "never silently volatile"
    );
    fs::write(fx.m("tmp/ok"), "x").unwrap();
    assert_eq!(fx.control(r#"{"cmd":"status"}"#)["degraded"], true);
}

#[test]
fn reload_applies_an_edited_litefile_live() {
    let mut fx = Fixture::new("\"ALL\",\"/tmp/\",\"tmpfs\",,\n\"ALL\",\"/etc/motd\",\"ro\",,\n");
    write(&fx.p("img/tmp/.keep"), "");
    write(&fx.p("img/opt/app/conf"), "image conf\n");
    write(&fx.p("img/etc/motd"), "image motd\n");
    fx.mount();
    assert_eq!(errno_of(fs::write(fx.m("opt/app/conf"), "x")), libc::EROFS);
    let mut open_in_tmp = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(fx.m("tmp/held"))
        .unwrap();
    let opt_dir = fs::File::open(fx.m("opt/app")).unwrap(); // a directory the kernel keeps
    // The admin makes /opt/app/ writable and /tmp/ read-only, then reloads.
    fs::write(
        fx.p("litefile.csv"),
        "#image,file,options,comments,disable\n\"ALL\",\"/opt/app/\",\"tmpfs\",,\n\"ALL\",\"/etc/motd\",\"tmpfs\",,\n",
    )
    .unwrap();
    let answer = fx.control(r#"{"cmd":"reload"}"#);
    assert_eq!(answer["reloaded"], true, "{answer}");
    fs::write(fx.m("opt/app/conf"), "node conf\n").unwrap();
    assert_eq!(read(&fx, "opt/app/conf"), "node conf\n");
    fs::write(fx.m("opt/app/new"), "new\n").unwrap();
    fs::write(fx.m("etc/motd"), "node motd\n").unwrap();
    assert_eq!(
        errno_of(fs::write(fx.m("tmp/after"), "x")),
        libc::EROFS,
        "/tmp is read-only now"
    );
    // Open files are not disturbed: the file opened before the reload still takes writes.
    open_in_tmp.write_all(b"still writable\n").unwrap();
    drop(open_in_tmp);
    drop(opt_dir);
    // A litefile that breaks the rules is refused and the old rules stay.
    fs::write(
        fx.p("litefile.csv"),
        "#image,file,options,comments,disable\n\"ALL\",\"/opt/\",\"ro\",,\n\"ALL\",\"/opt/app/\",\"tmpfs\",,\n",
    )
    .unwrap();
    let answer = fx.control(r#"{"cmd":"reload"}"#);
    assert!(
        answer["error"].as_str().unwrap().contains("old rules stay"),
        "{answer}"
    );
    fs::write(fx.m("opt/app/conf"), "still writable\n").unwrap();
    fx.umount();
}

#[test]
fn descriptors_stay_bounded_on_trees_larger_than_the_fd_cache() {
    let mut fx = Fixture::new("\"ALL\",\"/tmp/\",\"tmpfs\",,\n");
    for d in 0..60 {
        for f in 0..100 {
            write(&fx.p(&format!("img/usr/d{d}/f{f}")), &format!("{d}/{f}"));
        }
    }
    fx.mount();
    let (ok, out) = fx.sh("find usr -type f | wc -l && cat usr/d59/f99 usr/d0/f0");
    assert!(ok && out == "6000\n59/990/0", "{out}");
    // every file once more: descriptors are reopened through file handles after eviction
    let mut total = 0;
    for d in 0..60 {
        for f in 0..100 {
            total += read(&fx, &format!("usr/d{d}/f{f}")).len();
        }
    }
    assert!(total > 6000 * 3);
    let pid = fx.control(r#"{"cmd":"status"}"#)["pid"].as_u64().unwrap();
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(
        fds < statelite_fs::backref::FD_CACHE_SIZE + statelite_fs::overlay::IO_FDS_MAX + 128,
        "{fds} descriptors open"
    );
}

#[test]
fn the_inode_table_stays_bounded_on_large_walks() {
    let mut fx = Fixture::new("\"ALL\",\"/tmp/\",\"tmpfs\",,\n");
    for d in 0..40 {
        for f in 0..100 {
            write(&fx.p(&format!("img/usr/d{d}/f{f}")), &format!("{d}/{f}"));
        }
    }
    fx.extra_args = vec!["--max-inodes".into(), "1024".into()];
    fx.mount();
    for _ in 0..2 {
        let (ok, out) = fx.sh("find usr -type f -exec cat {} + | wc -c && find usr | wc -l");
        assert!(ok && out == "18600\n4041\n", "{out}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let inodes = fx.control(r#"{"cmd":"status"}"#)["inodes"]
            .as_u64()
            .unwrap();
        if inodes <= 1024 + 128 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{inodes} inodes kept, bound 1024"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        read(&fx, "usr/d39/f99"),
        "39/99",
        "forgotten inodes come back on lookup"
    );
}

/// The kernel's no-open mode (`--no-open`, or `STATELITE_NO_OPEN=1`): no OPEN/RELEASE/FLUSH,
/// I/O by inode through the page cache.
fn mounted_no_open() -> Fixture {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    fx.extra_args.push("--no-open".into());
    fx.mount();
    fx
}

#[test]
fn no_open_mode_copies_up_at_the_first_write_and_refuses_locked_paths_at_write() {
    let fx = mounted_no_open();
    let stats = fx.control(r#"{"cmd":"stats"}"#);
    // Opening for writing copies nothing up: the first write does.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.m("etc/ssh/sshd_config"))
        .unwrap();
    assert!(
        !fx.p("vol/etc/ssh/sshd_config").exists(),
        "no copy-up at open"
    );
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "PermitRootLogin no\n");
    f.write_all(b"Port 22\n").unwrap();
    assert!(fx.p("vol/etc/ssh/sshd_config").exists(), "copy-up at write");
    drop(f);
    assert_eq!(
        read(&fx, "etc/ssh/sshd_config"),
        "PermitRootLogin no\nPort 22\n",
        "read after write"
    );
    assert_eq!(
        fs::read_to_string(fx.p("img/etc/ssh/sshd_config")).unwrap(),
        "PermitRootLogin no\n"
    );
    // O_TRUNC, then append.
    fs::write(fx.m("etc/ssh/ssh_host_key"), "NEW\n").unwrap();
    append(&fx.m("etc/ssh/ssh_host_key"), "MORE\n");
    assert_eq!(read(&fx, "etc/ssh/ssh_host_key"), "NEW\nMORE\n");
    assert_eq!(
        fs::read_to_string(fx.p("vol/etc/ssh/ssh_host_key")).unwrap(),
        "NEW\nMORE\n"
    );
    // A locked path opens for writing, but the write fails with EROFS and is recorded;
    // O_TRUNC fails at open (the truncation is a write).
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(fx.m("etc/passwd"))
        .unwrap();
    assert_eq!(errno_of(w.write_all(b"x")), libc::EROFS);
    drop(w);
    assert_eq!(errno_of(fs::write(fx.m("etc/motd"), "x")), libc::EROFS);
    assert_eq!(read(&fx, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    let denied = fx.control(r#"{"cmd":"denied"}"#);
    let paths = denied_paths(&denied);
    assert!(paths.contains(&"/etc/passwd"), "{denied}");
    // Persistent writes reach the store at once (no close to sync at).
    let mut p = fs::OpenOptions::new()
        .append(true)
        .open(fx.m("etc/license"))
        .unwrap();
    p.write_all(b"node\n").unwrap();
    assert_eq!(
        fs::read_to_string(fx.p("state/etc/license")).unwrap(),
        "image license\nnode\n"
    );
    drop(p);
    // No OPEN/RELEASE/FLUSH round trips beyond the first answers.
    let after = fx.control(r#"{"cmd":"stats"}"#);
    let count = |v: &serde_json::Value, op: &str| {
        v["ops"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|o| o["op"] == op)
                    .map(|o| o["count"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    let _ = stats;
    assert!(count(&after, "open") <= 1, "{after}");
    assert!(count(&after, "flush") <= 1, "{after}");
    // Image never written.
    assert_eq!(
        fs::read_to_string(fx.p("img/etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\n"
    );
}

#[test]
fn no_open_mode_mmap_unlinked_files_and_image_updates() {
    let fx = mounted_no_open();
    // Shared writable mapping of a writable file: the data reaches the store.
    let (ok, out) = fx.sh("printf 'aaaaaaaa' > tmp/map && python3 -c \"
import mmap,os
f=os.open('tmp/map',os.O_RDWR)
m=mmap.mmap(f,8)
m[0:4]=b'BBBB'
m.flush()
m.close()
os.close(f)
\" && cat tmp/map");
    assert!(ok, "{out}");
    assert_eq!(out, "BBBBaaaa");
    assert_eq!(fs::read_to_string(fx.p("vol/tmp/map")).unwrap(), "BBBBaaaa");
    // An open file keeps working after it is unlinked, and a new file that may reuse its
    // inode number is a different file.
    fs::write(fx.m("tmp/gone"), "old data").unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.m("tmp/gone"))
        .unwrap();
    fs::remove_file(fx.m("tmp/gone")).unwrap();
    fs::write(fx.m("tmp/fresh"), "fresh").unwrap();
    f.write_all(b"NEW").unwrap();
    let mut s = String::new();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "NEW data");
    drop(f);
    assert_eq!(read(&fx, "tmp/fresh"), "fresh");
    // A file replaced in the image while mounted: shown after the generation bump.
    assert_eq!(read(&fx, "usr/bin/tool"), "#!/bin/sh\necho tool\n");
    write(&fx.p("img/usr/bin/tool.new"), "#!/bin/sh\necho new\n");
    fs::rename(fx.p("img/usr/bin/tool.new"), fx.p("img/usr/bin/tool")).unwrap();
    fx.imgupdate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if read(&fx, "usr/bin/tool") == "#!/bin/sh\necho new\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still the old content"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A large read-only file read at random offsets (the prefetch path) reads right.
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(fx.p("img/usr/big"), &big).unwrap();
    let mut f = fs::File::open(fx.m("usr/big")).unwrap();
    use std::os::unix::fs::FileExt;
    for off in [2_500_000u64, 10, 1_048_570, 3 * 1_048_576 - 4096] {
        let mut b = [0u8; 4096];
        let n = f.read_at(&mut b, off).unwrap();
        assert_eq!(&b[..n], &big[off as usize..off as usize + n], "at {off}");
    }
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert!(all == big, "whole file");
}

/// Requests of kind `op` served, once the count has settled: a request thread counts its
/// request after replying, so one that already returned to the test may not be counted yet.
fn settled(fx: &Fixture, op: &str) -> u64 {
    let mut last = fx.op_count(op);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = fx.op_count(op);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn settled_reads(fx: &Fixture) -> u64 {
    settled(fx, "read")
}

fn wait_for(fx: &Fixture, p: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read(fx, p) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{p}: the update never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn an_image_update_keeps_the_caches_of_unchanged_files_only() {
    let fx = mounted();
    read(&fx, "etc/passwd");
    let r0 = settled_reads(&fx);
    assert_eq!(read(&fx, "usr/bin/tool"), "#!/bin/sh\necho tool\n");
    let r1 = settled_reads(&fx);
    assert!(r1 > r0, "small files are read through the daemon once");
    // Keeps the kernel's inode (and so its page cache) from being reclaimed by dentry
    // pressure from other work on the machine while the test runs.
    let _pin = fs::File::open(fx.m("usr/bin/tool")).unwrap();
    read(&fx, "usr/bin/tool");
    assert_eq!(settled_reads(&fx), r1, "then served from the page cache");

    // A file replaced by rename (rpm, rsync) shows; the unchanged one stays cached.
    write(&fx.p("img/etc/passwd.new"), "root:x:0:0::/root:/bin/bash\n");
    fs::rename(fx.p("img/etc/passwd.new"), fx.p("img/etc/passwd")).unwrap();
    fx.imgupdate();
    wait_for(&fx, "etc/passwd", "root:x:0:0::/root:/bin/bash\n");
    let r2 = settled_reads(&fx);
    assert_eq!(read(&fx, "usr/bin/tool"), "#!/bin/sh\necho tool\n");
    assert_eq!(
        settled_reads(&fx),
        r2,
        "an unchanged file keeps its page cache"
    );

    // A file changed in place (same inode) shows too.
    fs::write(fx.p("img/usr/bin/tool"), "#!/bin/sh\necho new\n").unwrap();
    fx.imgupdate();
    wait_for(&fx, "usr/bin/tool", "#!/bin/sh\necho new\n");
}

#[test]
fn files_written_through_the_mount_are_read_back_without_the_daemon() {
    let fx = mounted();
    // Written (by passthrough), then read again: the data comes from the store's page
    // cache directly, each time, also after a rename over another file (sed -i).
    write(&fx.m("var/log/app.log"), "line 1\n");
    let r0 = settled_reads(&fx);
    assert_eq!(read(&fx, "var/log/app.log"), "line 1\n");
    append(&fx.m("var/log/app.log"), "line 2\n");
    assert_eq!(read(&fx, "var/log/app.log"), "line 1\nline 2\n");
    write(&fx.m("var/log/app.log.tmp"), "replaced\n");
    fs::rename(fx.m("var/log/app.log.tmp"), fx.m("var/log/app.log")).unwrap();
    assert_eq!(read(&fx, "var/log/app.log"), "replaced\n");
    assert_eq!(settled_reads(&fx), r0, "no READ reached the daemon");
    // An image file read before it is written keeps the page cache until then, and shows
    // every write after.
    assert_eq!(read(&fx, "var/log/messages"), "boot\n");
    append(&fx.m("var/log/messages"), "later\n");
    assert_eq!(read(&fx, "var/log/messages"), "boot\nlater\n");
}

#[test]
fn a_store_copys_backing_is_kept_for_its_next_opens_and_never_stands_for_the_origin() {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    // An image file above the passthrough threshold, in a writable directory.
    let big = vec![b'o'; 3 << 20];
    fs::write(fx.p("img/var/log/big"), &big).unwrap();
    fx.mount();
    let kept = |fx: &Fixture| control_u64(fx, "stats", "kept_backing_opens");

    // A file made through the mount: its first reopen registers the backing that is
    // kept, and the opens after it, to append and to read, use that one.
    write(&fx.m("var/log/app.log"), "one\n");
    let k0 = kept(&fx);
    assert_eq!(read(&fx, "var/log/app.log"), "one\n");
    assert_eq!(kept(&fx), k0, "not kept from its creation");
    append(&fx.m("var/log/app.log"), "two\n");
    assert_eq!(read(&fx, "var/log/app.log"), "one\ntwo\n");
    assert_eq!(
        kept(&fx) - k0,
        2,
        "two opens, neither registering a backing"
    );
    // Open for reading and for appending at once, then replaced by `sed -i`.
    let mut r = fs::File::open(fx.m("var/log/app.log")).unwrap();
    let mut w = fs::OpenOptions::new()
        .append(true)
        .open(fx.m("var/log/app.log"))
        .unwrap();
    w.write_all(b"three\n").unwrap();
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    assert_eq!(text, "one\ntwo\nthree\n");
    drop((r, w));
    let sed = Command::new("sed")
        .arg("-i")
        .arg("s/two/TWO/")
        .arg(fx.m("var/log/app.log"))
        .status()
        .unwrap();
    assert!(sed.success());
    assert_eq!(read(&fx, "var/log/app.log"), "one\nTWO\nthree\n");
    append(&fx.m("var/log/app.log"), "four\n");
    assert_eq!(read(&fx, "var/log/app.log"), "one\nTWO\nthree\nfour\n");

    // A large image file in a writable directory, open for reading (`tail -f`) while a
    // writer opens it (which copies it up): both work, and every later open, on the store
    // copy's kept backing, shows what was written.
    let mut held = fs::File::open(fx.m("var/log/big")).unwrap();
    let mut head = [0u8; 4];
    held.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"oooo");
    fs::OpenOptions::new()
        .write(true)
        .open(fx.m("var/log/big"))
        .expect("a writer while a reader has the file open")
        .write_all(b"NEW!")
        .unwrap();
    let mut tail = vec![0u8; 16];
    held.read_exact(&mut tail).unwrap();
    assert_eq!(tail, vec![b'o'; 16], "the reader reads on");
    drop(held);
    let k1 = kept(&fx);
    for _ in 0..3 {
        let mut f = fs::File::open(fx.m("var/log/big")).unwrap();
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"NEW!");
    }
    assert_eq!(
        kept(&fx) - k1,
        2,
        "the store copy's backing, once registered"
    );
    assert_eq!(
        fs::read(fx.p("img/var/log/big")).unwrap(),
        big,
        "image untouched"
    );

    // More files than backings are kept: each still reads back what was written to it.
    fs::create_dir(fx.m("tmp/many")).unwrap();
    let n = statelite_fs::inode::MAX_RETAINED_BACKINGS + 100;
    for i in 0..n {
        write(&fx.m(&format!("tmp/many/f{i}")), &format!("{i}\n"));
    }
    for i in 0..n {
        assert_eq!(read(&fx, &format!("tmp/many/f{i}")), format!("{i}\n"));
    }
}

/// A number in the daemon's answer to control command `cmd`.
fn control_u64(fx: &Fixture, cmd: &str, key: &str) -> u64 {
    let v = fx.control(&format!(r#"{{"cmd":"{cmd}"}}"#));
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Inodes the daemon holds (`litectl status`).
fn inodes(fx: &Fixture) -> u64 {
    control_u64(fx, "status", "inodes")
}

#[test]
fn inodes_in_use_survive_trimming_during_a_big_walk() {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    for i in 0..3000 {
        write(&fx.p(&format!("img/usr/share/walk/f{i:04}")), "x\n");
    }
    write(&fx.p("img/usr/bin/busy"), "#!/bin/sh\n");
    fx.extra_args.extend(["--max-inodes".into(), "1024".into()]);
    fx.mount();
    let busy = fx.m("usr/bin/busy");
    // A request on the inode that reaches the daemon without a lookup (the kernel keeps the
    // dentry): an xattr the daemon does not remember the absence of.
    // Lookups its use needed: none while the daemon keeps it (the kernel keeps the dentry).
    let use_busy = || -> u64 {
        let before = settled(&fx, "lookup");
        let out = Command::new("getfattr")
            .args(["-h", "-n", "user.statelite-test"])
            .arg(&busy)
            .output()
            .unwrap();
        assert!(!out.status.success(), "no such xattr");
        settled(&fx, "lookup") - before
    };
    fs::metadata(&busy).unwrap();
    // Open, so the kernel cannot drop the entry on its own (another test here writes
    // `drop_caches`); only the daemon's trimming can make it look the file up again.
    let _pin = fs::File::open(&busy).unwrap();
    let mut relookups = 0;
    for i in 0..3000 {
        fs::metadata(fx.m(&format!("usr/share/walk/f{i:04}"))).unwrap();
        if i % 100 == 0 {
            relookups += use_busy();
            // Let the trimmer run (it works every 100 ms) while the walk goes on.
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    relookups += use_busy();
    assert!(
        inodes(&fx) < 2000,
        "the bound was enforced during the walk ({} inodes)",
        inodes(&fx)
    );
    assert_eq!(
        relookups, 0,
        "the inode in use was trimmed (the kernel had to look it up again)"
    );
}

#[test]
fn a_walk_that_stats_what_it_lists_gets_attributes_with_the_listing() {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    for d in 0..10 {
        for f in 0..50 {
            write(&fx.p(&format!("img/usr/share/stat/d{d}/f{f:02}")), "x\n");
        }
    }
    fx.mount();
    // Name-only entries need the io_uring transport (fuser cannot send them), which comes
    // up right after the mount where the kernel has it.
    let names_only = fx.ring_up();
    // What `ls -lR`, `du` or `find -printf %s` do: list a directory, then stat its entries.
    // Lookups per directory (its own and its files'; the path above is looked up first).
    fs::metadata(fx.m("usr/share/stat")).unwrap();
    let mut per_dir = Vec::new();
    for d in 0..10 {
        let before = settled(&fx, "lookup");
        let dir = fx.m(&format!("usr/share/stat/d{d}"));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 50);
        for n in &names {
            assert_eq!(fs::symlink_metadata(dir.join(n)).unwrap().len(), 2);
        }
        per_dir.push(settled(&fx, "lookup") - before);
    }
    // A reader's first listing has attributes; its second comes by name (it could be a
    // walk that never stats: see fs/src/plus.rs), so its 50 stats are lookups; seen to
    // stat, it gets attributes again and its stats need no lookup (a lookup per file made
    // such walks up to 2.6x slower: benches/RESULTS.md, run 6).
    assert_eq!(
        per_dir[0], 1,
        "d0 itself, then its files with the listing: {per_dir:?}"
    );
    let probe = if names_only { 51 } else { 1 };
    assert_eq!(
        per_dir[1], probe,
        "the probe: d1 and its files: {per_dir:?}"
    );
    assert!(
        per_dir[2..].iter().all(|&n| n <= 1),
        "attributes with every later listing: {per_dir:?}"
    );
}

#[test]
fn a_name_found_absent_before_an_image_update_is_not_created_over_the_image() {
    let fx = mounted();
    // A LOOKUP finds the name absent; the CREATE right after need not look again...
    assert!(fs::metadata(fx.m("tmp/fresh")).is_err());
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(fx.m("tmp/fresh"))
        .unwrap();
    // ...unless the image changed in between: the image's new file must not be shadowed
    // by an exclusive create that believes the name is free.
    assert!(fs::metadata(fx.m("tmp/late")).is_err());
    let before = fx.control(r#"{"cmd":"status"}"#)["generation"].clone();
    write(&fx.p("img/tmp/late"), "from the image\n");
    fx.imgupdate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fx.control(r#"{"cmd":"status"}"#)["generation"] == before {
        assert!(
            std::time::Instant::now() < deadline,
            "generation never bumped"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_image_file_not_shadowed(&fx, "tmp/late", "from the image\n");
}

/// An exclusive create at `rel` fails with EEXIST, and `rel` reads as the image's file.
fn assert_image_file_not_shadowed(fx: &Fixture, rel: &str, content: &str) {
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(fx.m(rel));
    assert_eq!(errno_of(r), libc::EEXIST, "{rel}");
    assert_eq!(read(fx, rel), content);
}

/// Sets the image directory `rel`'s modification time an hour back, as a real image's
/// directories are (names are not remembered for a directory modified moments ago).
fn age_image_dir(fx: &Fixture, rel: &str) {
    let (ok, out) = fx.sh(&format!("touch -m -d '1 hour ago' {}", fx.p(rel).display()));
    assert!(ok, "{out}");
}

fn probes_saved(fx: &Fixture) -> u64 {
    control_u64(fx, "stats", "origin_probes_saved")
}

#[test]
fn names_the_image_directory_lacks_are_known_after_the_first_and_gained_ones_are_found() {
    let fx = mounted();
    age_image_dir(&fx, "img/tmp");
    // tmp/ is a tmpfs litefile directory over the image's tmp/ (which holds .keep). The
    // first new name there sends the daemon to the image; after it, the image's names
    // are known and new names cost no probe of the image (on a node: no NFS LOOKUP).
    let s0 = probes_saved(&fx);
    for i in 0..20 {
        write(&fx.m(&format!("tmp/new-{i}")), "x\n");
    }
    let s1 = probes_saved(&fx);
    assert!(s1 >= s0 + 19, "probes saved {s0} -> {s1}");
    // What the image holds is still found, and hidden by a whiteout when removed; names
    // made on the node go without leaving one.
    assert_eq!(read(&fx, "tmp/.keep"), "");
    fs::remove_file(fx.m("tmp/.keep")).unwrap();
    assert!(!fx.m("tmp/.keep").exists());
    for i in 0..20 {
        fs::remove_file(fx.m(&format!("tmp/new-{i}"))).unwrap();
    }
    assert_eq!(fs::read_dir(fx.m("tmp")).unwrap().count(), 0);
    let mut store: Vec<String> = fs::read_dir(fx.p("vol/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    store.sort();
    assert_eq!(store, vec![".keep"], "one whiteout, for the image's name");
    // A name the image gains is found at once, before any generation bump (the image
    // directory's times changed), and an exclusive create does not shadow it.
    write(&fx.p("img/tmp/gained"), "new in the image\n");
    assert_image_file_not_shadowed(&fx, "tmp/gained", "new in the image\n");
}

#[test]
fn a_copied_up_image_file_the_kernel_holds_is_removed_for_good_and_listed_with_its_number() {
    let fx = mounted();
    // Copied up, and held (open, and its attributes cached): the inode the daemon keeps
    // for it is found by its store copy, yet unlink must still whiteout the image's name.
    let p = fx.m("etc/ssh/sshd_config");
    let ino = fs::metadata(&p).unwrap().ino();
    append(&p, "# node\n");
    let _held = fs::File::open(&p).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
    assert_eq!(
        listed_ino(&fx, "etc/ssh", "sshd_config"),
        ino,
        "readdir gives the image's inode number too"
    );
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert!(!p.exists(), "the image's file stays hidden");
    assert!(
        !fs::read_dir(fx.m("etc/ssh"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "sshd_config")
    );
}

#[test]
fn scratch_names_in_an_image_directory_are_known_absent_and_image_files_stay_locked() {
    let fx = mounted();
    age_image_dir(&fx, "img/etc");
    // etc/ is a read-only image directory with file entries (ntp.conf): new names there
    // are volatile scratch files (sed -i's temporaries). Known absent after the first.
    write(&fx.m("etc/scratch-0"), "0\n");
    let s0 = probes_saved(&fx);
    for i in 1..10 {
        write(&fx.m(&format!("etc/scratch-{i}")), "x\n");
    }
    let s1 = probes_saved(&fx);
    assert!(s1 >= s0 + 9, "probes saved {s0} -> {s1}");
    for i in 0..10 {
        fs::remove_file(fx.m(&format!("etc/scratch-{i}"))).unwrap();
    }
    // The image's own files are found, and stay read-only; so is one it gains.
    assert_eq!(read(&fx, "etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    let r = fs::OpenOptions::new().append(true).open(fx.m("etc/passwd"));
    assert_eq!(errno_of(r), libc::EROFS);
    write(&fx.p("img/etc/gained"), "image\n");
    assert_eq!(read(&fx, "etc/gained"), "image\n");
    let r = fs::OpenOptions::new().append(true).open(fx.m("etc/gained"));
    assert_eq!(errno_of(r), libc::EROFS);
}

/// lstat of `tree`/dNN/sub/fN (20 directories of 5 files) by full path, in name order,
/// as `find -ls` over a sorted list does; returns the files seen.
fn stat_walk_by_path(fx: &Fixture, tree: &str) -> usize {
    let mut seen = 0;
    for d in 0..20 {
        let dir = format!("{tree}/d{d:02}");
        fs::symlink_metadata(fx.m(&dir)).unwrap();
        fs::symlink_metadata(fx.m(&format!("{dir}/sub"))).unwrap();
        for f in 0..5 {
            let st = fs::symlink_metadata(fx.m(&format!("{dir}/sub/f{f}"))).unwrap();
            seen += usize::from(st.is_file());
        }
    }
    seen
}

/// A walk that reads the files it finds (by path, in name order, one directory after
/// another, as `grep -r` or a copy does) has the data of the files ahead of it read in by
/// the daemon's threads; a walk that only stats, or a program reading a few files of one
/// directory, has no data read ahead.
#[test]
fn a_walk_that_reads_files_has_their_data_read_ahead_and_a_stat_walk_does_not() {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    for tree in ["stat", "read"] {
        for d in 0..20 {
            for f in 0..5 {
                write(
                    &fx.p(&format!("img/usr/share/{tree}/d{d:02}/sub/f{f}")),
                    &format!("{tree} {d} {f}\n"),
                );
            }
        }
    }
    fx.mount();
    let stat = |fx: &Fixture, key: &str| {
        fx.control(r#"{"cmd":"stats"}"#)[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in stats"))
    };
    let read_tree = |fx: &Fixture, dirs: std::ops::Range<usize>| {
        for d in dirs {
            for f in 0..5 {
                let p = fx.m(&format!("usr/share/read/d{d:02}/sub/f{f}"));
                assert_eq!(fs::read_to_string(&p).unwrap(), format!("read {d} {f}\n"));
            }
        }
    };
    // A few files of one directory: not a tree being read.
    read_tree(&fx, 0..1);
    // A stat walk by path: read ahead of, without data.
    assert_eq!(stat_walk_by_path(&fx, "usr/share/stat"), 100);
    let becomes_nonzero = |fx: &Fixture, key: &str, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while stat(fx, key) == 0 {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    becomes_nonzero(
        &fx,
        "dirs_read_ahead",
        "the stat walk was not read ahead of",
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(stat(&fx, "files_read_ahead"), 0, "no data for a stat walk");
    // Reading every file, directory after directory: the data ahead is read in.
    read_tree(&fx, 1..20);
    becomes_nonzero(
        &fx,
        "files_read_ahead",
        "no data read ahead of a reading walk",
    );
    // Bounded by the walk: at most the files of this tree (100), none of the stat tree's
    // beyond what the threads had queued.
    let files = stat(&fx, "files_read_ahead");
    assert!(files <= 200, "{files} files read ahead");
}

/// A walk by path (lstat of every entry by full path, in name order) is read ahead of:
/// the daemon's threads read the directories and inodes it will look up next. Resolving
/// paths, one process each (`cat` of deep files), is not a walk and reads nothing ahead.
#[test]
fn a_walk_by_path_is_read_ahead_of_and_resolving_paths_is_not() {
    let mut fx = Fixture::new(RULES);
    image(&fx);
    for d in 0..20 {
        for f in 0..5 {
            write(
                &fx.p(&format!("img/usr/share/walk/d{d:02}/sub/f{f}")),
                "x\n",
            );
        }
    }
    fx.mount();
    let ahead = |fx: &Fixture| {
        fx.control(r#"{"cmd":"stats"}"#)["dirs_read_ahead"]
            .as_u64()
            .expect("dirs_read_ahead in stats")
    };
    for d in [3, 7, 11, 15, 19] {
        let st = Command::new("cat")
            .arg(fx.m(&format!("usr/share/walk/d{d:02}/sub/f0")))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(ahead(&fx), 0, "five path resolutions are not a walk");
    // find-style, by path, in name order.
    assert_eq!(stat_walk_by_path(&fx, "usr/share/walk"), 100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ahead(&fx) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the walk by path was not read ahead of"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

//! End-to-end test of symlink mode (xCAT's rc.statelite, in `statelite_mountd::symlink_mode`)
//! with real mounts in a tempdir: a liteimg'd image, one litetree source and a state
//! directory, every option kind, a "reboot", and what `sed -i` does to a linked file.
//! Needs root (mount); skipped otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use statelite_fs::rules::{RuleSet, rows_from};
use statelite_mountd::symlink_mode::{SymlinkConfig, SymlinkMount, setup, teardown};

/// Unmounts everything below the mountpoint when dropped, even when the test panics.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if let Err(e) = teardown(&self.0) {
            eprintln!("teardown of {}: {e}", self.0.display());
        }
    }
}

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
            let what = if md.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                "dir".into()
            } else {
                format!("file {:?}", fs::read(&p).unwrap())
            };
            out.insert(
                rel,
                format!(
                    "{what} {:o} {}.{} {}",
                    md.mode(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.ino()
                ),
            );
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
}

const ENTRIES: &[(&str, &str, &str)] = &[
    ("ALL", "/etc/ntp.conf", ""),
    ("ALL", "/etc/motd", "tmpfs"),
    ("ALL", "/etc/ssh/", "link"),
    ("ALL", "/etc/hosts", "ro"),
    ("ALL", "/etc/issue", "con"),
    ("ALL", "/etc/machine-id", "link,persistent"),
    ("ALL", "/var/log/", "link"),
    ("ALL", "/var/lib/state/", "persistent"),
    ("ALL", "/var/spool/", "bind"),
];

fn rules() -> RuleSet {
    RuleSet::for_image(&rows_from(ENTRIES).unwrap(), "compute")
}

fn mounted_below(mp: &Path) -> usize {
    let mp = fs::canonicalize(mp).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(&mp))
        })
        .count()
}

fn sed(args: &[&str]) -> (bool, String) {
    let out = Command::new("sed").args(args).output().expect("run sed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn symlink_mode_end_to_end() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: symlink mode needs root for mount(2)");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let image = top.path().join("rootimg");
    let tree = top.path().join("tree");
    let state = top.path().join("state/n01");
    let mp = top.path().join("newroot");
    for d in [&image, &tree, &state, &mp] {
        fs::create_dir_all(d).unwrap();
    }
    write(&image, "etc/ntp.conf", "server image\n");
    write(&image, "etc/motd", "image motd\n");
    write(&image, "etc/hosts", "image hosts\n");
    write(&image, "etc/issue", "image issue\n");
    write(&image, "etc/machine-id", "image-id\n");
    write(&image, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    write(&image, "etc/ssh/sshd_config", "PermitRootLogin no\n");
    write(&image, "var/log/messages", "old log\n");
    write(&image, "var/lib/state/db", "initial db\n");
    fs::create_dir_all(image.join("var/spool/mail")).unwrap();
    write(&tree, "etc/ntp.conf", "server tree\n");
    write(&tree, "etc/hosts", "tree hosts\n");
    write(&tree, "etc/issue", "tree issue\n");
    fs::create_dir_all(tree.join("var/log")).unwrap(); // empty: skipped, as xCAT does

    let rules = rules();
    statelite_tools::liteimg::liteimg(&image, &rules, false).unwrap();
    let image_before = snapshot(&image);
    let tree_before = snapshot(&tree);
    let cfg = SymlinkConfig {
        image: image.clone(),
        rules,
        trees: vec![tree.clone()],
        state: Some(state.clone()),
        localdisk: None,
        mountpoint: mp.clone(),
    };

    {
        let _guard = Unmount(mp.clone());
        let m: SymlinkMount = setup(&cfg).unwrap_or_else(|e| panic!("setup: {e}"));
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert!(!m.degraded);
        let r =
            |rel: &str| fs::read_to_string(mp.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));

        // link: the image's chain lands in the node's tmpfs, filled from the litetree.
        assert_eq!(
            fs::read_link(mp.join("etc/ntp.conf")).unwrap(),
            Path::new("../.statelite/tmpfs/etc/ntp.conf")
        );
        assert_eq!(r("etc/ntp.conf"), "server tree\n");
        fs::OpenOptions::new()
            .append(true)
            .open(mp.join("etc/ntp.conf"))
            .unwrap()
            .write_all(b"server local\n")
            .unwrap();
        assert_eq!(r("etc/ntp.conf"), "server tree\nserver local\n");
        // link dir: .default content, writable.
        assert_eq!(r("var/log/messages"), "old log\n");
        write(&mp, "var/log/new.log", "node log\n");
        assert_eq!(r("etc/ssh/sshd_config"), "PermitRootLogin no\n");
        // tmpfs (bind-mounted copy) and bind.
        assert_eq!(r("etc/motd"), "image motd\n");
        fs::write(mp.join("etc/motd"), "node motd\n").unwrap();
        write(&mp, "var/spool/mail/root", "mail\n");
        // ro: the litetree's version, read-only.
        assert_eq!(r("etc/hosts"), "tree hosts\n");
        let e = fs::write(mp.join("etc/hosts"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        // con: image then litetree.
        assert_eq!(r("etc/issue"), "image issue\ntree issue\n");
        // persistent: created from .default on first use, writes reach the state dir.
        assert_eq!(r("var/lib/state/db"), "initial db\n");
        fs::write(mp.join("var/lib/state/db"), "node db\n").unwrap();
        assert_eq!(
            fs::read_to_string(state.join("var/lib/state/db")).unwrap(),
            "node db\n"
        );
        // link,persistent: the tmpfs link points into persistent.
        assert_eq!(
            fs::read_link(mp.join(".statelite/tmpfs/etc/machine-id")).unwrap(),
            Path::new("../../persistent/etc/machine-id")
        );
        fs::write(mp.join("etc/machine-id"), "n01-id\n").unwrap();
        assert_eq!(
            fs::read_to_string(state.join("etc/machine-id")).unwrap(),
            "n01-id\n"
        );
        // Everything else is the read-only image (lock-down).
        let e = fs::write(mp.join("etc/passwd"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let e = fs::write(mp.join("etc/new-file"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));

        // sed -i on a linked *file*: GNU sed writes its temporary file in the directory of
        // the path it was given (/etc, the read-only image), so it fails with EROFS and the
        // file is unchanged. With a writable image it would replace the symlink by a regular
        // file (breaking the chain) instead.
        let path = mp.join("etc/ntp.conf");
        let p = path.to_str().unwrap();
        let (ok, err) = sed(&["-i", "s/local/edited/", p]);
        assert!(
            !ok && err.contains("Read-only file system"),
            "sed -i: {err}"
        );
        assert_eq!(r("etc/ntp.conf"), "server tree\nserver local\n");
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // --follow-symlinks edits the target in tmpfs, and the link stays.
        let (ok, err) = sed(&["-i", "--follow-symlinks", "s/local/edited/", p]);
        assert!(ok, "sed -i --follow-symlinks: {err}");
        assert_eq!(r("etc/ntp.conf"), "server tree\nserver edited\n");
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // Same EROFS for a bind-mounted tmpfs file (the temporary file goes to /etc).
        let (ok, err) = sed(&["-i", "s/node/sed/", mp.join("etc/motd").to_str().unwrap()]);
        assert!(
            !ok && err.contains("Read-only file system"),
            "sed -i motd: {err}"
        );
        // Inside a linked *directory* the temporary file lands in tmpfs: sed -i works.
        let (ok, err) = sed(&[
            "-i",
            "s/no/yes/",
            mp.join("etc/ssh/sshd_config").to_str().unwrap(),
        ]);
        assert!(ok, "sed -i in a linked directory: {err}");
        assert_eq!(r("etc/ssh/sshd_config"), "PermitRootLogin yes\n");

        let log = r(".statelite/statelite.log");
        for want in [
            "cp -r -a /.statelite/mnt/0/etc/ntp.conf /.statelite/tmpfs/etc/ntp.conf",
            "mount --bind /.statelite/tmpfs/etc/motd /etc/motd",
            "mount --bind -o ro /.statelite/mnt/0/etc/hosts /etc/hosts",
            "cat /.statelite/mnt/0/etc/issue >>/.statelite/tmpfs/etc/issue",
            "mount --bind /.statelite/persistent/var/lib/state /var/lib/state",
        ] {
            assert!(log.contains(want), "log lacks {want:?}:\n{log}");
        }
    }
    assert_eq!(mounted_below(&mp), 0, "teardown left mounts");
    assert_eq!(
        snapshot(&image),
        image_before,
        "the image must not be written"
    );
    assert_eq!(
        snapshot(&tree),
        tree_before,
        "the litetree must not be written"
    );

    // "Reboot": tmpfs content is reset, persistent content is kept.
    {
        let _guard = Unmount(mp.clone());
        let m = setup(&cfg).unwrap();
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(
            fs::read_to_string(mp.join("etc/ntp.conf")).unwrap(),
            "server tree\n"
        );
        assert_eq!(
            fs::read_to_string(mp.join("etc/motd")).unwrap(),
            "image motd\n"
        );
        assert!(!mp.join("var/log/new.log").exists());
        assert_eq!(
            fs::read_to_string(mp.join("var/lib/state/db")).unwrap(),
            "node db\n"
        );
        assert_eq!(
            fs::read_to_string(mp.join("etc/machine-id")).unwrap(),
            "n01-id\n"
        );
    }
    assert_eq!(mounted_below(&mp), 0);

    // No state directory: persistent entries are read-only, never silently volatile.
    let degraded = SymlinkConfig { state: None, ..cfg };
    {
        let _guard = Unmount(mp.clone());
        let m = setup(&degraded).unwrap();
        assert!(m.degraded);
        let e = fs::write(mp.join("var/lib/state/db"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
    assert_eq!(mounted_below(&mp), 0);
    assert_eq!(snapshot(&image), image_before);
    let _ = fs::set_permissions(&mp, fs::Permissions::from_mode(0o755));
}

#[test]
fn setup_refuses_an_image_without_liteimg_and_leaves_nothing_mounted() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let image = top.path().join("rootimg");
    let mp = top.path().join("newroot");
    fs::create_dir_all(image.join("etc")).unwrap();
    fs::create_dir_all(&mp).unwrap();
    let cfg = SymlinkConfig {
        image,
        rules: rules(),
        trees: vec![],
        state: None,
        localdisk: None,
        mountpoint: mp.clone(),
    };
    let _guard = Unmount(mp.clone());
    let e = setup(&cfg).unwrap_err();
    assert!(e.to_string().contains("liteimg"), "{e}");
    assert_eq!(mounted_below(&mp), 0);

    // `statelite imgupdate` on a pristine image creates `.statelite/generation`: still not
    // liteimg'd (the end-to-end boot met this: symlink mode came up with an empty /var).
    fs::create_dir_all(cfg.image.join(".statelite")).unwrap();
    fs::write(cfg.image.join(".statelite/generation"), "1\n").unwrap();
    let e = setup(&cfg).unwrap_err();
    assert!(e.to_string().contains("litefile.save"), "{e}");
    assert_eq!(mounted_below(&mp), 0);
}

//! Both modes show the same tree: one liteimg'd image in symlink mode, the same image in
//! FUSE mode, and its pristine twin in FUSE mode. Content must agree everywhere; FUSE mode
//! must agree with itself on types and permissions too. Symlink mode shows links where FUSE
//! mode shows the real file: those differences are listed and must be exactly the `link`
//! entries (they are the reason FUSE mode exists).

mod fuse_common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fuse_common::{bin, write};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// relative path -> (file type char, mode bits, content or link target)
fn walk(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let top = r
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            if matches!(top.as_deref(), Some(".statelite") | Some(".default")) {
                continue;
            }
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (t, content) = if ft.is_symlink() {
                (
                    'l',
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                stack.push(r.clone());
                ('d', Vec::new())
            } else {
                ('f', fs::read(&p).unwrap())
            };
            out.insert(
                r.to_string_lossy().into_owned(),
                (t, md.mode() & 0o7777, content),
            );
        }
    }
    out
}

struct Mounts(Vec<PathBuf>);
impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new(bin("statelite-mountd"))
                .arg("umount")
                .arg(m)
                .status();
        }
    }
}

#[test]
fn symlink_and_fuse_modes_show_the_same_tree() {
    let d = tempfile::Builder::new()
        .prefix("statelite-modes")
        .tempdir_in("/tmp")
        .unwrap();
    let p = |s: &str| d.path().join(s);
    // A small image covering entries of the design document's RedHat litefile.
    let img = p("pristine");
    for (f, c) in [
        ("etc/fstab", "/dev/root / nfs ro 0 0\n"),
        ("etc/ntp.conf", "server pool.ntp.org\n"),
        ("etc/resolv.conf", "nameserver 10.0.0.1\n"),
        ("etc/inittab", "id:3:initdefault:\n"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        ("etc/ssh/sshd_config", "PermitRootLogin no\n"),
        ("etc/ssh/ssh_config", "Host *\n"),
        ("var/log/messages", "boot\n"),
        ("var/log/cron/log", "cron\n"),
        ("var/lib/logrotate.status", "logrotate state\n"),
        ("var/lib/rpm/Packages", "rpmdb\n"),
        ("var/run/utmp", ""),
        ("tmp/.keep", ""),
        ("usr/bin/hello", "#!/bin/sh\necho hello\n"),
        ("opt/xcat/readme", "xcat\n"),
    ] {
        write(&img.join(f), c);
    }
    fs::set_permissions(
        img.join("usr/bin/hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/bin/hello", img.join("etc/hello-link")).unwrap();
    let twin = p("liteimg");
    run(Command::new("cp").arg("-a").arg(&img).arg(&twin));
    let tables = p("tables");
    fs::create_dir(&tables).unwrap();
    let litefile = tables.join("litefile.csv");
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/litefile-redhat.csv"),
        &litefile,
    )
    .unwrap();
    run(Command::new(bin("statelite"))
        .arg("--tables")
        .arg(&tables)
        .args(["liteimg", "compute", "--rootimg"])
        .arg(&twin));
    let before_twin = walk(&twin);

    let mut mounts = Mounts(Vec::new());
    let mount = |image: &Path, name: &str, mode: &str, mounts: &mut Mounts| -> PathBuf {
        let mp = p(&format!("mnt-{name}"));
        for dir in [
            format!("mnt-{name}"),
            format!("vol-{name}"),
            format!("state-{name}"),
        ] {
            fs::create_dir(p(&dir)).unwrap();
        }
        run(Command::new(bin("statelite-mountd"))
            .arg("mount")
            .args(["--mode", mode])
            .arg("--image")
            .arg(image)
            .arg("--litefile")
            .arg(&litefile)
            .arg("--volatile")
            .arg(p(&format!("vol-{name}")))
            .arg("--state")
            .arg(p(&format!("state-{name}")))
            .arg(&mp));
        mounts.0.push(mp.clone());
        mp
    };
    let sym = mount(&twin, "symlink", "symlink", &mut mounts);
    let fuse_lite = mount(&twin, "fuse-liteimg", "fuse", &mut mounts);
    let fuse_pristine = mount(&img, "fuse-pristine", "fuse", &mut mounts);

    let a = walk(&fuse_pristine);
    let b = walk(&fuse_lite);
    let s = walk(&sym);
    assert!(
        a.contains_key("etc/ntp.conf") && a.contains_key("var/log/cron/log"),
        "{a:?}"
    );
    // FUSE mode serves a liteimg'd image exactly like the pristine one: same paths,
    // types, permissions and content...
    for (path, v) in &a {
        assert_eq!(
            b.get(path),
            Some(v),
            "{path}: FUSE mode on the liteimg'd image differs from the pristine image"
        );
    }
    // ...except for what liteimg itself added: xCAT's liteimg creates every entry the image
    // lacked (empty), so the liteimg'd image has them and shows them.
    let rows = statelite_fs::rules::read_litefile(&litefile).unwrap();
    for (path, (t, _, content)) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
        let is_entry = rows.iter().any(|r| {
            r.path.relative() == path || r.path.relative().starts_with(&format!("{path}/"))
        });
        assert!(
            is_entry && content.is_empty() && !img.join(path).exists(),
            "{path} ({t}) appeared from nowhere"
        );
    }

    // Symlink mode: the same set of paths with the same content when read through the
    // mount; where FUSE shows a file or directory, symlink mode may show a link.
    let paths_s: Vec<&String> = s.keys().collect();
    let mut links_instead = Vec::new();
    for (path, (t, _, content)) in &a {
        let Some((ts, _, _)) = s.get(path) else {
            // Below a linked directory, the walk does not descend (links are not followed);
            // read through the mount instead.
            let via = fs::symlink_metadata(sym.join(path));
            assert!(via.is_ok(), "{path} missing in symlink mode ({paths_s:?})");
            if *t == 'f' {
                assert_eq!(&fs::read(sym.join(path)).unwrap(), content, "{path}");
            }
            continue;
        };
        if *t == 'f' {
            assert_eq!(
                &fs::read(sym.join(path)).unwrap(),
                content,
                "content of {path} differs in symlink mode"
            );
        }
        if *ts != *t {
            assert_eq!(*ts, 'l', "{path}: {ts} in symlink mode, {t} in FUSE mode");
            links_instead.push(path.clone());
        }
    }
    links_instead.sort();
    // Exactly the `link` entries (blank options count as link, as in xCAT) that the node
    // has: derived from the rules, not from either mount.
    let mut expected: Vec<String> = rows
        .iter()
        .filter(|r| r.options.method() == statelite_fs::rules::Method::Link)
        .map(|r| r.path.relative().to_string())
        .filter(|p| a.contains_key(p))
        .collect();
    expected.sort();
    assert!(expected.len() >= 10, "{expected:?}");
    assert_eq!(links_instead, expected, "the differences between the modes");
    drop(mounts);
    assert_eq!(walk(&twin), before_twin, "no mode wrote to the image");
}

//! The benchmark image: a synthetic tree shaped like a real `/usr` (wide directories such as
//! `bin` and `lib/x86_64-linux-gnu`, deep ones such as `include` and python packages, many
//! small documentation and man files, a few large libraries), real ELF binaries copied from
//! the host, one big file, and the `/etc` and `/var` entries the litefile names.
//!
//! Deterministic: a fixed-seed generator, so every run builds the same tree.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Paths (relative to the image root) used by the workloads.
#[derive(Debug, Default, Clone)]
pub struct ImageInfo {
    /// Every entry below `usr/` (directories, files, symlinks), walk order.
    pub usr_entries: Vec<String>,
    /// Regular files up to 16 KiB below `usr/`.
    pub small_files: Vec<String>,
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
    pub big: String,
    pub big_size: u64,
    /// A small ELF binary (exec workload).
    pub exec_bin: String,
    pub elf_copied: Vec<String>,
}

/// Writable directories the workloads use (litefile entries in every mode).
pub const CREATE_DIR: &str = "var/tmp";
pub const RENAME_DIR: &str = "etc/ssh";
pub const RENAME_FILES: usize = 100;
/// The read-only file the image-update workload changes.
pub const UPDATE_FILE: &str = "usr/share/bench/update.txt";
pub const GENERATION: &str = ".statelite/generation";
/// Files named by the generated 2,000-entry litefile.
pub const MANY_DIR: &str = "etc/bench";
pub const MANY_ENTRIES: usize = 2000;

fn write_file(path: &Path, size: usize, rng: &mut Rng, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.resize(size, 0);
    rng.fill(buf);
    fs::write(path, &buf[..size])
}

/// Size distribution of a /usr: mostly small, a tail of large.
fn pick_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => 64 + rng.below(8 * 1024) as usize,
        70..=94 => 8 * 1024 + rng.below(56 * 1024) as usize,
        _ => 64 * 1024 + rng.below(448 * 1024) as usize,
    }
}

/// Builds the image at `root` (must not exist). `files` synthetic files below usr/,
/// `big_size` bytes in the big file.
pub fn build(
    root: &Path,
    files: usize,
    big_size: u64,
    redhat_litefile: &str,
) -> std::io::Result<()> {
    fs::create_dir_all(root)?;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut buf = Vec::new();
    let usr = root.join("usr");

    // Real ELF binaries from the host (for exec, and so bin/ looks real).
    let bin = usr.join("bin");
    fs::create_dir_all(&bin)?;
    let mut copied = 0;
    for name in [
        "true", "false", "ls", "cat", "cp", "mv", "env", "sleep", "echo", "date", "id", "uname",
        "head", "tail", "wc", "sort", "grep", "sed", "stat", "touch", "mkdir", "rm", "ln", "chmod",
        "tr", "cut", "dirname", "basename", "readlink", "md5sum",
    ] {
        for dir in ["/usr/bin", "/bin"] {
            let src = Path::new(dir).join(name);
            if let Ok(data) = fs::read(&src)
                && data.starts_with(b"\x7fELF")
            {
                let dst = bin.join(name);
                fs::write(&dst, &data)?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
                copied += 1;
                break;
            }
        }
    }
    if !bin.join("true").exists() {
        return Err(std::io::Error::other(
            "no ELF /usr/bin/true on the host to copy",
        ));
    }
    let _ = copied;

    // Shares of the synthetic files.
    let n = |pct: usize| (files * pct / 100).max(1);
    let mut made = 0usize;
    fn mk(
        dir: &Path,
        name: String,
        rng: &mut Rng,
        buf: &mut Vec<u8>,
        size: Option<usize>,
        made: &mut usize,
    ) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let size = size.unwrap_or_else(|| pick_size(rng));
        write_file(&dir.join(name), size, rng, buf)?;
        *made += 1;
        Ok(())
    }
    // bin: wide (scripts and binaries).
    for i in 0..n(3) {
        mk(
            &bin,
            format!("tool-{i:05}"),
            &mut rng,
            &mut buf,
            Some(200 + (i % 40) * 100),
            &mut made,
        )?;
    }
    // lib/x86_64-linux-gnu: wide, larger files.
    let lib = usr.join("lib/x86_64-linux-gnu");
    for i in 0..n(7) {
        mk(
            &lib,
            format!("libbench{i:05}.so.{}", i % 7),
            &mut rng,
            &mut buf,
            None,
            &mut made,
        )?;
    }
    // share/doc/<pkg>/: many directories of a few small files.
    let docs = n(27);
    let pkgs = (docs / 4).max(1);
    for i in 0..docs {
        let pkg = i % pkgs;
        let d = usr.join(format!("share/doc/pkg-{pkg:05}"));
        let name = [
            "copyright",
            "changelog.Debian.gz",
            "README",
            "NEWS.gz",
            "TODO",
        ][i / pkgs % 5];
        let name = if i / pkgs >= 5 {
            format!("extra-{i}")
        } else {
            name.to_string()
        };
        {
            let sz = 100 + rng.below(6000) as usize;
            mk(&d, name, &mut rng, &mut buf, Some(sz), &mut made)?;
        }
    }
    // share/man/manN: wide directories of small files.
    for i in 0..n(15) {
        let sect = 1 + i % 8;
        let d = usr.join(format!("share/man/man{sect}"));
        {
            let sz = 300 + rng.below(4000) as usize;
            mk(
                &d,
                format!("page-{i:05}.{sect}.gz"),
                &mut rng,
                &mut buf,
                Some(sz),
                &mut made,
            )?;
        }
    }
    // share/locale/<lang>/LC_MESSAGES.
    for i in 0..n(10) {
        let lang = i % 120;
        let d = usr.join(format!("share/locale/l{lang:03}/LC_MESSAGES"));
        mk(
            &d,
            format!("dom-{i:05}.mo"),
            &mut rng,
            &mut buf,
            None,
            &mut made,
        )?;
    }
    // include/: deep trees.
    for i in 0..n(20) {
        let depth = 1 + (i % 9);
        let mut d = usr.join("include");
        let mut x = i;
        for level in 0..depth {
            d.push(format!("d{level}-{}", x % 6));
            x /= 6;
        }
        {
            let sz = 200 + rng.below(12000) as usize;
            mk(
                &d,
                format!("h{i:05}.h"),
                &mut rng,
                &mut buf,
                Some(sz),
                &mut made,
            )?;
        }
    }
    // lib/python3/dist-packages: deep-ish package trees with many small modules.
    let rest = files.saturating_sub(made);
    for i in 0..rest {
        let pkg = i % 150;
        let sub = (i / 150) % 5;
        let d = usr.join(format!("lib/python3/dist-packages/p{pkg:03}/m{sub}/sub"));
        mk(
            &d,
            format!("mod{i:05}.py"),
            &mut rng,
            &mut buf,
            None,
            &mut made,
        )?;
    }
    // Symlinks, as a real /usr has.
    for (link, target) in [
        ("usr/bin/python3", "tool-00001"),
        ("usr/lib/x86_64-linux-gnu/libbench.so", "libbench00000.so.0"),
    ] {
        let _ = std::os::unix::fs::symlink(target, root.join(link));
    }

    // The big file, written in 1 MiB chunks (real data: a cold read must come from disk).
    let big = usr.join("lib/bench/big.img");
    fs::create_dir_all(big.parent().unwrap_or(&usr))?;
    let mut f = fs::File::create(&big)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = big_size;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        rng.fill(&mut chunk[..k]);
        f.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    f.sync_all()?;
    drop(f);

    // The file the image-update workload changes.
    let up = root.join(UPDATE_FILE);
    fs::create_dir_all(up.parent().unwrap_or(root))?;
    fs::write(&up, "generation 1\n")?;

    // /etc and /var: every entry of the RedHat litefile exists (files with content,
    // directories with a few files), plus the rename-replace files and the 2,000 files the
    // generated litefile names.
    for line in redhat_litefile.lines().skip(1) {
        let Some(p) = line.split(',').nth(1) else {
            continue;
        };
        let p = p.trim_matches('"').trim_start_matches('/');
        if p.is_empty() {
            continue;
        }
        if let Some(dir) = p.strip_suffix('/') {
            let d = root.join(dir);
            fs::create_dir_all(&d)?;
            for k in 0..3 {
                fs::write(d.join(format!("file{k}")), format!("{dir} file {k}\n"))?;
            }
        } else {
            let f = root.join(p);
            fs::create_dir_all(f.parent().unwrap_or(root))?;
            fs::write(&f, format!("# {p}\n"))?;
        }
    }
    let rd = root.join(RENAME_DIR);
    fs::create_dir_all(&rd)?;
    for i in 0..RENAME_FILES {
        let mut text = String::new();
        for l in 0..40 {
            text.push_str(&format!("Option{l} value-{i}-{l}\n"));
        }
        fs::write(rd.join(format!("conf-{i:03}")), text)?;
    }
    fs::create_dir_all(root.join(CREATE_DIR))?;
    let many = root.join(MANY_DIR);
    fs::create_dir_all(&many)?;
    for i in 0..MANY_ENTRIES {
        fs::write(many.join(format!("{i:04}.conf")), format!("entry {i}\n"))?;
    }
    for (p, c) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
    ] {
        fs::write(root.join(p), c)?;
    }
    fs::create_dir_all(root.join(".statelite"))?;
    fs::write(root.join(GENERATION), "1\n")?;
    Ok(())
}

/// Walks the image's usr/ for the workload lists.
pub fn scan(root: &Path) -> std::io::Result<ImageInfo> {
    let mut info = ImageInfo::default();
    fn walk(root: &Path, rel: &str, info: &mut ImageInfo) -> std::io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let r = format!("{rel}/{}", name.to_string_lossy());
            let md = fs::symlink_metadata(root.join(&r))?;
            info.usr_entries.push(r.clone());
            if md.is_dir() {
                info.dirs += 1;
                walk(root, &r, info)?;
            } else if md.is_file() {
                info.files += 1;
                info.bytes += md.len();
                if md.len() <= 16 * 1024 {
                    info.small_files.push(r);
                }
            }
        }
        Ok(())
    }
    walk(root, "usr", &mut info)?;
    info.big = "usr/lib/bench/big.img".into();
    info.big_size = fs::metadata(root.join(&info.big))?.len();
    info.exec_bin = "usr/bin/true".into();
    info.elf_copied = fs::read_dir(root.join("usr/bin"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("tool-") && n != "python3")
        .collect();
    info.elf_copied.sort();
    Ok(info)
}

/// (mode, size, mtime, ino) of every entry: the image must be byte-for-byte and
/// metadata-identical after the run (apart from the update workload's file and the
/// generation file, which the harness itself changes as an admin would).
pub type Manifest = BTreeMap<String, (u32, u64, i64, i64, u64)>;

pub fn manifest(root: &Path) -> std::io::Result<Manifest> {
    let mut out = Manifest::new();
    fn walk(root: &Path, rel: PathBuf, out: &mut Manifest) -> std::io::Result<()> {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let md = fs::symlink_metadata(root.join(&r))?;
            let key = r.to_string_lossy().into_owned();
            // The update workload replaces these two files (as the admin would), which also
            // changes their directories' times.
            if key == UPDATE_FILE
                || key == GENERATION
                || key == ".statelite"
                || key == "usr/share/bench"
            {
                if md.is_dir() {
                    walk(root, r, out)?;
                }
                continue;
            }
            out.insert(
                key,
                (md.mode(), md.size(), md.mtime(), md.mtime_nsec(), md.ino()),
            );
            if md.is_dir() {
                walk(root, r, out)?;
            }
        }
        Ok(())
    }
    walk(root, PathBuf::new(), &mut out)?;
    Ok(out)
}

/// The generated litefile: the RedHat rows, plus rows for `etc/bench/NNNN.conf` up to
/// `total` entries, options cycling through link (blank), tmpfs and persistent.
pub fn many_litefile(redhat: &str, total: usize) -> String {
    let mut s = redhat.trim_end().to_string();
    s.push('\n');
    let have = redhat
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    for i in 0..total.saturating_sub(have).min(MANY_ENTRIES) {
        let opt = ["", "tmpfs", "persistent"][i % 3];
        s.push_str(&format!(
            "\"ALL\",\"/{MANY_DIR}/{i:04}.conf\",\"{opt}\",,\n"
        ));
    }
    s.replace(",\"\",,", ",,,")
}

/// Reads every file of the image once.
pub fn prime(root: &Path) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    fn walk(dir: &Path, buf: &mut [u8]) -> std::io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(&e.path(), buf)?;
            } else if ft.is_file() {
                let mut f = fs::File::open(e.path())?;
                while std::io::Read::read(&mut f, buf)? > 0 {}
            }
        }
        Ok(())
    }
    walk(root, &mut buf)
}

//! A real statelite mount for tests: a temporary image, litetree source, stores and mount
//! point, served by the real `statelite-mountd` binary; unmounted on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's target directory for the profile these tests were built with.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    BUILT.get_or_init(|| {
        // Make sure the binaries under test are current (cheap when they are).
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "-q",
            "-p",
            "statelite-mountd",
            "-p",
            "statelite-tools",
            "--bins",
        ]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let st = cmd.status().expect("cargo build");
        assert!(st.success(), "building the binaries under test failed");
    });
    dir.join(name)
}

/// Whether this kernel has FUSE over io_uring (Linux 6.14+), the daemon's default transport.
#[allow(dead_code)]
pub fn kernel_has_ring() -> bool {
    Path::new("/sys/module/fuse/parameters/enable_uring").exists()
}

pub fn write(path: &Path, data: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// Appends `data` to the existing file at `path` (one open, one write, one close).
pub fn append(path: &Path, data: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
}

/// A mounted statelite root over temporary layers.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub extra_args: Vec<String>,
    /// Extra environment for the daemon (e.g. `STATELITE_NO_OPEN=1`).
    pub envs: Vec<(String, String)>,
    mounted: bool,
}

impl Fixture {
    /// Builds layers under a temp dir: `img/`, `tree1/`, `tree2/`, `vol/`, `state/`,
    /// `local/`, `mnt/`, and writes `litefile` as `litefile.csv`.
    pub fn new(litefile_rows: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("statelite-test")
            .tempdir_in("/tmp")
            .unwrap();
        for d in ["img", "tree1", "tree2", "vol", "state", "local", "mnt"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let text = format!("#image,file,options,comments,disable\n{litefile_rows}");
        std::fs::write(dir.path().join("litefile.csv"), text).unwrap();
        Fixture {
            dir,
            extra_args: Vec::new(),
            envs: Vec::new(),
            mounted: false,
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// A path inside the mounted root.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.dir
            .path()
            .join("mnt")
            .join(rel.trim_start_matches('/'))
    }
    pub fn sock(&self) -> PathBuf {
        self.p("control.sock")
    }

    pub fn mount(&mut self) {
        self.mount_output();
    }

    /// Mounts; returns what the mount command wrote on stderr (the daemon's log up to the
    /// mount being ready, at the level `envs` sets with `STATELITE_LOG`).
    pub fn mount_output(&mut self) -> String {
        let out = Command::new(bin("statelite-mountd"))
            .arg("mount")
            .arg("--image")
            .arg(self.p("img"))
            .arg("--litefile")
            .arg(self.p("litefile.csv"))
            .arg("--tree")
            .arg(self.p("tree1"))
            .arg("--tree")
            .arg(self.p("tree2"))
            .arg("--volatile")
            .arg(self.p("vol"))
            .arg("--state")
            .arg(self.p("state"))
            .arg("--localdisk")
            .arg(self.p("local"))
            .arg("--control")
            .arg(self.sock())
            .arg("--log")
            .arg(self.p("daemon.log"))
            .arg("--generation-interval")
            .arg("0.2")
            .args(&self.extra_args)
            .arg(self.p("mnt"))
            .env("STATELITE_LOG", "warn")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn umount(&mut self) {
        if self.mounted {
            umount(&self.p("mnt"));
            self.mounted = false;
            // The daemon exits once the kernel drops the connection.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Simulates a reboot: unmount, wipe the volatile store (a fresh tmpfs), mount.
    pub fn reboot(&mut self) {
        self.umount();
        std::fs::remove_dir_all(self.p("vol")).unwrap();
        std::fs::create_dir(self.p("vol")).unwrap();
        self.mount();
    }

    /// One request to the control socket.
    pub fn control(&self, req: &str) -> serde_json::Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.sock()).unwrap();
        writeln!(s, "{req}").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Waits for the io_uring transport, which comes up right after the mount where the
    /// kernel has it; false (at once) where it does not.
    pub fn ring_up(&self) -> bool {
        if !kernel_has_ring() {
            return false;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.control(r#"{"cmd":"status"}"#)["transport"] != "io_uring" {
            assert!(
                std::time::Instant::now() < deadline,
                "the ring never came up: {}",
                self.control(r#"{"cmd":"status"}"#)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    /// The daemon's ring threads (named `ring-<queue>.<n>`): thread id, name and
    /// `/proc/<pid>/task/<tid>` directory.
    #[allow(dead_code)]
    pub fn ring_threads(&self) -> Vec<(libc::pid_t, String, PathBuf)> {
        let pid = self.control(r#"{"cmd":"status"}"#)["pid"]
            .as_u64()
            .expect("pid");
        let mut out = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task dir")
            .flatten()
        {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let comm = comm.trim().to_string();
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok())
                && comm.starts_with("ring-")
            {
                out.push((tid, comm, t.path()));
            }
        }
        out.sort();
        out
    }

    /// Requests of kind `op` ("read", "getxattr", ...) the daemon has served so far.
    pub fn op_count(&self, op: &str) -> u64 {
        self.control(r#"{"cmd":"stats"}"#)["ops"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|o| o["op"] == op)
                    .map(|o| o["count"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// `statelite imgupdate` on the image: bumps its generation (the daemon then
    /// invalidates what it served from the image).
    pub fn imgupdate(&self) {
        let out = Command::new(bin("statelite"))
            .args(["imgupdate", "compute", "--rootimg"])
            .arg(self.p("img"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imgupdate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a shell command inside the mount directory; returns (status ok, stdout+stderr).
    pub fn sh(&self, script: &str) -> (bool, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.p("mnt"))
            .output()
            .unwrap();
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), s)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(self.p("mnt")).status();
        }
    }
}

/// A snapshot of a directory tree (paths, types, modes, content / link targets) to prove
/// a layer was not modified.
pub fn snapshot(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let content = if md.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if md.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.push((rel, md.mode(), content));
        }
    }
    out.sort();
    out
}

/// A daemon stopped with SIGSTOP, continued when this is dropped: a test that fails while
/// it holds a daemon stopped does not leave it so (its mount would make `sync` and
/// `drop_caches` in every later test wait for good).
pub struct Stopped(nix::unistd::Pid);

impl Stopped {
    pub fn new(pid: nix::unistd::Pid) -> Stopped {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// `umount PATH`, which must succeed. Tests run on parallel threads, and a child process
/// another test is spawning holds copies of this process's descriptors until it execs
/// (even those about to be closed with O_CLOEXEC): a file just closed here can still be
/// open in it for a moment, and the umount then fails with EBUSY. It is tried again for up
/// to 2 s.
pub fn umount(path: &std::path::Path) {
    let mut last = None;
    for _ in 0..100 {
        let out = Command::new("umount").arg(path).output().unwrap();
        if out.status.success() {
            return;
        }
        last = Some(String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("umount {} failed: {last:?}", path.display());
}

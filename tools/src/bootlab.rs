//! A boot lab: a real statelite node booting under qemu, everything on loopback.
//!
//! Used by the end-to-end test (`tests/tests/e2e_boot.rs`) and by `statelite demo --boot`.
//! The management node's side is real: tables, `statelite serve`, `statelite mkinitrd`,
//! `statelite nodeset`, and nfs-ganesha exporting the image read-only, the state
//! directory read-write and a litetree directory read-only, all on 127.0.0.1. The node is
//! qemu (TCG) PXE-booting through qemu's built-in DHCP/TFTP with pxelinux, reading exactly
//! the files nodeset wrote. Its network is `restrict=on` user networking: the guest reaches
//! nothing but two forwarded ports (10.0.2.100:2049 -> ganesha, 10.0.2.100:3001 -> serve).
//!
//! The node image is a Debian 12 `debootstrap --variant=minbase` root (cached by
//! `tests/e2e/setup.sh`), copied per lab, with a test unit (`tests/e2e/node-check.sh`)
//! that prints `E2E-OK`/`E2E-FAIL` lines on the console and powers the node off.
//!
//! Every process is stopped by its pid (qemu on a hard deadline, ganesha from its pid
//! file), and the lab checks that nothing it started listens beyond 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use statelite_fs::tabfile::write_file_atomic;

use crate::mkinitrd::MkinitrdArgs;
use crate::nodeset::NodesetArgs;
use crate::serve::{ServeConfig, Server};

/// The lab's one node.
pub const NODE: &str = "n01";
pub const MAC: &str = "52:54:00:12:34:01";
pub const IMAGE: &str = "debian12-x86_64-statelite-compute";
/// The management node as the guest sees it (qemu forwards it to 127.0.0.1).
pub const SERVER: &str = "10.0.2.100";

const NODE_CHECK: &str = include_str!("../../tests/e2e/node-check.sh");
const UNIT: &str = "[Unit]\nDescription=statelite end-to-end checks\n\n[Service]\n\
Type=simple\nExecStart=/usr/local/sbin/statelite-e2e-check\nStandardOutput=tty\n\
StandardError=tty\nTTYPath=/dev/console\n\n[Install]\nWantedBy=multi-user.target\n";

/// Where the lab's inputs are.
#[derive(Debug, Clone)]
pub struct LabInputs {
    /// The cached debootstrap root (`tests/e2e/setup.sh` builds it).
    pub image_cache: PathBuf,
    /// Static `statelite-mountd` and `litectl`.
    pub mountd: PathBuf,
    pub litectl: PathBuf,
}

impl LabInputs {
    /// The defaults `tests/e2e/setup.sh` produces, from the repository root `repo`.
    pub fn from_setup(repo: &Path) -> LabInputs {
        let cache = std::env::var_os("STATELITE_E2E_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/statelite-e2e"));
        let bins = repo.join("target/e2e-static/x86_64-unknown-linux-gnu/release");
        LabInputs {
            image_cache: cache.join("debian12-minbase"),
            mountd: bins.join("statelite-mountd"),
            litectl: bins.join("litectl"),
        }
    }
}

/// One boot: the kernel line's extra words and what the lab does when the node asks.
#[derive(Debug, Clone)]
pub struct BootPlan<'a> {
    pub append: &'a str,
    /// qemu is killed after this long.
    pub timeout: Duration,
    /// Copy the node's console to stdout.
    pub echo: bool,
    /// On `E2E-WAIT-IMGUPDATE`: change an image file and run `statelite imgupdate`.
    pub update_image: bool,
    /// On `E2E-WAIT-BOUNCE`: stop nfs-ganesha by its pid, wait, start it again.
    pub bounce_server: bool,
    /// On `E2E-POWERCUT-NOW`: kill qemu at once (a power cut).
    pub power_cut: bool,
}

impl<'a> BootPlan<'a> {
    pub fn new(append: &'a str, timeout: Duration, echo: bool) -> BootPlan<'a> {
        BootPlan {
            append,
            timeout,
            echo,
            update_image: false,
            bounce_server: false,
            power_cut: false,
        }
    }
}

/// How long the NFS server stays down in a bounce.
const SERVER_DOWN: Duration = Duration::from_secs(8);

/// A running lab (stopped on drop).
pub struct Lab {
    pub dir: PathBuf,
    pub tables: PathBuf,
    pub tftp: PathBuf,
    pub rootimgdir: PathBuf,
    pub rootimg: PathBuf,
    pub state: PathBuf,
    pub tree: PathBuf,
    pub nfs_port: u16,
    pub serve_port: u16,
    ganesha_pidfile: PathBuf,
    server: Option<Server>,
}

/// What one boot showed.
#[derive(Debug, Default)]
pub struct BootReport {
    pub ok: Vec<String>,
    pub failed: Vec<String>,
    /// Seconds from qemu's start to the node reporting multi-user.target.
    pub to_multi_user: Option<f64>,
    /// The node's own uptime then (from kernel start).
    pub uptime_at_multi_user: Option<f64>,
    pub ended: bool,
    pub powered_off: bool,
    pub imgupdate_done: bool,
    /// Seconds the NFS server was down when the node asked for a restart under it.
    pub server_bounced: Option<f64>,
    /// The lab cut the power (killed qemu) when the node asked for it.
    pub power_cut: bool,
    pub total_secs: f64,
    pub console: Vec<String>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    write_file_atomic(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// A free loopback port (bound and released: a small race, fine for a lab).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Lab {
    /// Builds the lab in `dir` (which must exist and be empty) and starts its services.
    pub fn start(dir: &Path, inputs: &LabInputs) -> Result<Lab, String> {
        for (what, p) in [
            ("node image (run tests/e2e/setup.sh)", &inputs.image_cache),
            (
                "static statelite-mountd (run tests/e2e/setup.sh)",
                &inputs.mountd,
            ),
            ("static litectl (run tests/e2e/setup.sh)", &inputs.litectl),
        ] {
            if !p.exists() {
                return Err(format!("{what}: {} is missing", p.display()));
            }
        }
        let rootimgdir = dir.join("install/netboot/debian12/x86_64/compute");
        let rootimg = rootimgdir.join("rootimg");
        let mut lab = Lab {
            dir: dir.to_path_buf(),
            tables: dir.join("tables"),
            tftp: dir.join("tftpboot"),
            rootimgdir: rootimgdir.clone(),
            rootimg: rootimg.clone(),
            state: dir.join("state"),
            tree: dir.join("tree"),
            nfs_port: free_port()?,
            serve_port: 0,
            ganesha_pidfile: dir.join("ganesha.pid"),
            server: None,
        };
        for d in [&lab.tables, &lab.tftp, &rootimgdir, &lab.state, &lab.tree] {
            std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        // A private copy: the test changes the image (imgupdate) and must not touch the cache.
        let mut src = inputs.image_cache.as_os_str().to_os_string();
        src.push("/.");
        run(Command::new("cp").arg("-a").arg(&src).arg(&rootimg))?;
        lab.prepare_image()?;
        lab.write_tables()?;
        lab.start_ganesha()?;
        let server = Server::start(
            &lab.tables,
            &ServeConfig {
                listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
                workers: 4,
                queue: 256,
                timeout: Duration::from_secs(10),
            },
        )
        .map_err(|e| format!("statelite serve: {e}"))?;
        lab.serve_port = server.local_addr().port();
        lab.server = Some(server);
        MkinitrdArgs {
            image: IMAGE.into(),
            kernel_version: None,
            out: None,
            rootimgdir: None,
            modules_root: None,
            mountd: Some(inputs.mountd.clone()),
            litectl: Some(inputs.litectl.clone()),
            busybox: PathBuf::from("/bin/busybox"),
        }
        .build(&lab.tables)
        .map_err(|e| format!("mkinitrd: {e}"))?;
        Ok(lab)
    }

    fn prepare_image(&self) -> Result<(), String> {
        let r = &self.rootimg;
        write(
            &r.join("usr/local/sbin/statelite-e2e-check"),
            NODE_CHECK,
            0o755,
        )?;
        write(
            &r.join("etc/systemd/system/statelite-e2e.service"),
            UNIT,
            0o644,
        )?;
        let wants = r.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(|e| e.to_string())?;
        let link = wants.join("statelite-e2e.service");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/etc/systemd/system/statelite-e2e.service", &link)
                .map_err(|e| format!("{}: {e}", link.display()))?;
        }
        // A fixed machine id: an empty one makes systemd treat every boot as the first
        // (and systemd-firstboot may prompt on the console).
        write(
            &r.join("etc/machine-id"),
            "5a7e1173e2e04b0d8c5e2e0b00000001\n",
            0o444,
        )?;
        write(&r.join("etc/hostname"), "n01\n", 0o644)?;
        write(&r.join("etc/e2e-con.conf"), "con from the image\n", 0o644)?;
        write(&r.join("etc/e2e-rw.conf"), "value old\n", 0o644)?;
        write(&r.join("var/e2e/conf"), "value old\n", 0o644)?;
        write(&r.join("etc/e2e-update.txt"), "v1\n", 0o644)?;
        // Read for the first time while the NFS server is down (E2E-WAIT-BOUNCE).
        write(
            &r.join("etc/e2e-bounce.txt"),
            "served across a restart\n",
            0o644,
        )?;
        std::fs::create_dir_all(r.join("srv/persist")).map_err(|e| e.to_string())?;
        write(
            &self.tree.join("etc/motd"),
            "motd from the litetree\n",
            0o644,
        )?;
        write(
            &self.tree.join("etc/e2e-con.conf"),
            "con from the litetree\n",
            0o644,
        )?;
        Ok(())
    }

    fn write_tables(&self) -> Result<(), String> {
        let t =
            |name: &str, text: &str| write(&self.tables.join(format!("{name}.csv")), text, 0o644);
        t(
            "nodelist",
            &format!("#node,groups\n\"{NODE}\",\"compute,all\"\n"),
        )?;
        t(
            "nodetype",
            "#node,os,arch,profile\n\"compute\",\"debian12\",\"x86_64\",\"compute\"\n",
        )?;
        t(
            "noderes",
            &format!(
                "#node,nfsserver,xcatmaster,tftpserver\n\"compute\",\"{SERVER}\",\"{SERVER}\",\"10.0.2.2\"\n"
            ),
        )?;
        // The node's connections arrive through qemu's forwarding, from 127.0.0.1.
        t("hosts", &format!("#node,ip\n\"{NODE}\",\"127.0.0.1\"\n"))?;
        t(
            "mac",
            &format!("#node,interface,mac\n\"{NODE}\",,\"{MAC}\"\n"),
        )?;
        t(
            "osimage",
            &format!(
                "#imagename,profile,provmethod,osvers,osarch,rootimgdir\n\"{IMAGE}\",\"compute\",\"statelite\",\"debian12\",\"x86_64\",\"{}\"\n",
                self.rootimgdir.display()
            ),
        )?;
        t(
            "policy",
            "#priority,name,host,commands,noderange,parameters,time,rule,comments,disable\n\
             \"4.8\",,,\"litefile,litetree,statelite\",\"compute\",,,\"allow\",,\n",
        )?;
        t(
            "litefile",
            "#image,file,options,comments,disable\n\
             \"ALL\",\"/var/\",\"tmpfs\",,\n\
             \"ALL\",\"/tmp/\",\"tmpfs\",,\n\
             \"ALL\",\"/root/\",\"tmpfs\",,\n\
             \"ALL\",\"/etc/e2e-rw.conf\",\"tmpfs\",,\n\
             \"ALL\",\"/etc/motd\",\"ro\",,\n\
             \"ALL\",\"/etc/e2e-con.conf\",\"con\",,\n\
             \"ALL\",\"/srv/persist/\",\"persistent\",,\n",
        )?;
        t(
            "litetree",
            &format!(
                "#priority,image,directory,mntopts,comments,disable\n\"1\",,\"$noderes.nfsserver:{}\",,,\n",
                self.tree.display()
            ),
        )?;
        t(
            "statelite",
            &format!(
                "#node,image,statemnt,mntopts,comments,disable\n\"compute\",,\"$noderes.nfsserver:{}\",,,\n",
                self.state.display()
            ),
        )
    }

    fn start_ganesha(&self) -> Result<(), String> {
        // Pseudo paths equal the host paths, so one rootimgdir names the image for both
        // sides (as /install does on an xCAT management node).
        // Attr_Expiration_Time = 0: the image is changed on the server's own filesystem
        // (as an admin does on the management node), behind ganesha's back; with its
        // default attribute and directory-entry caching ganesha went on handing out the
        // handle of a file replaced by rename (ESTALE on the node). knfsd has no such cache.
        // Numeric owners, as Linux nfsd sends them for AUTH_SYS: owner *names* make the
        // node's NFS client map them through a request-key upcall, which execs
        // /sbin/request-key from the FUSE root that is waiting on that very NFS call (a
        // deadlock seen here at the first image update).
        let export = |id: u32, path: &Path, access: &str| {
            format!(
                "EXPORT {{ Export_Id = {id}; Path = {p}; Pseudo = {p}; Access_Type = {access}; \
                 Squash = No_Root_Squash; Protocols = 4; Transports = TCP; SecType = sys; \
                 Attr_Expiration_Time = 0; FSAL {{ Name = VFS; }} }}\n",
                p = path.display()
            )
        };
        let conf = format!(
            "NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = {port}; Bind_addr = 127.0.0.1; \
             Enable_NLM = false; Enable_RQUOTA = false; }}\n\
             NFSV4 {{ Graceless = true; Allow_Numeric_Owners = true; Only_Numeric_Owners = true; }}\n\
             NFS_KRB5 {{ Active_krb5 = false; }}\n\
             LOG {{ Default_Log_Level = EVENT; }}\n{}{}{}",
            export(1, &self.rootimg, "RO"),
            export(2, &self.state, "RW"),
            export(3, &self.tree, "RO"),
            port = self.nfs_port
        );
        let conf_path = self.dir.join("ganesha.conf");
        write(&conf_path, &conf, 0o644)?;
        run(Command::new("ganesha.nfsd")
            .arg("-f")
            .arg(&conf_path)
            .arg("-L")
            .arg(self.dir.join("ganesha.log"))
            .arg("-p")
            .arg(&self.ganesha_pidfile)
            .args(["-N", "NIV_EVENT"]))?;
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.nfs_port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "ganesha did not listen on 127.0.0.1:{} within 20 s; see {}",
            self.nfs_port,
            self.dir.join("ganesha.log").display()
        ))
    }

    fn ganesha_pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.ganesha_pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Replaces an image file and bumps the image generation (`statelite imgupdate`).
    pub fn image_update(&self, rel: &str, text: &str) -> Result<u64, String> {
        write(&self.rootimg.join(rel), text, 0o644)?;
        crate::imgupdate::bump_generation(&self.rootimg)
    }

    /// Every listening TCP socket of the lab's processes (ganesha, qemu, this process):
    /// `(pid, local address)`, for the "loopback only" check.
    pub fn listeners(&self, qemu: Option<u32>) -> Vec<(i32, String)> {
        let mut pids = vec![std::process::id() as i32];
        pids.extend(self.ganesha_pid());
        pids.extend(qemu.map(|p| p as i32));
        let mut listening = std::collections::HashMap::new();
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
            {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.len() > 9 && w[3] == "0A" {
                    listening.insert(w[9].to_string(), w[1].to_string());
                }
            }
        }
        let mut out = Vec::new();
        for pid in pids {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
                    && let Some(addr) = listening.get(inode)
                {
                    out.push((pid, addr.clone()));
                }
            }
        }
        out
    }

    /// Boots the node once: nodeset with `append`, then qemu PXE-boots it until it powers
    /// off or `timeout` passes (then qemu is killed and the report says so).
    pub fn boot(&self, plan: &BootPlan<'_>) -> Result<BootReport, String> {
        let BootPlan {
            append,
            timeout,
            echo,
            ..
        } = *plan;
        let code = NodesetArgs {
            noderange: NODE.into(),
            state: format!("statelite={IMAGE}"),
            tftpdir: self.tftp.clone(),
            // sysrq: on a hang the lab asks the kernel for its blocked tasks (below).
            append: Some(format!("sysrq_always_enabled=1 {append}")),
            json: false,
        }
        .run(&self.tables)
        .map_err(|e| format!("nodeset: {e}"))?;
        if code != std::process::ExitCode::SUCCESS {
            return Err("nodeset failed".into());
        }
        // A `tcp:` guestfwd is one connection opened when qemu starts: right for the
        // node's single long-lived NFS connection, wrong for the query service (one
        // connection per request, long after qemu started). `cmd:` runs a relay per
        // connection: one request line to the service, its answer back.
        let relay = format!(
            "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{}; head -n 1 >&3; cat <&3'",
            self.serve_port
        );
        // NFS also gets a relay per connection: the node's client reconnects after the
        // server restarts (a bounce), which a `tcp:` forward (one connection) cannot take.
        let nfs_relay = format!("socat - TCP:127.0.0.1:{}", self.nfs_port);
        let netdev = format!(
            "user,id=n0,restrict=on,tftp={},bootfile=pxelinux.0,\
             guestfwd=tcp:{SERVER}:2049-cmd:{nfs_relay},guestfwd=tcp:{SERVER}:3001-cmd:{relay}",
            self.tftp.display(),
        );
        let monitor = self.dir.join("monitor.sock");
        let _ = std::fs::remove_file(&monitor);
        let started = Instant::now();
        let mut child: Child = Command::new("qemu-system-x86_64")
            .args([
                "-m", "1024", "-display", "none", "-serial", "stdio", "-monitor",
            ])
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .args(["-no-reboot", "-boot", "n", "-netdev", &netdev])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
        let qemu_pid = child.id();
        let stdout = child.stdout.take().ok_or("qemu stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .replace('\r', "");
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let deadline = started + timeout;
        let mut report = BootReport::default();
        let mut listeners_checked = false;
        let mut last_line = Instant::now();
        // Set once the kernel was asked for its blocked tasks: the hang's report.
        let mut dumped: Option<(Instant, String)> = None;
        let result = loop {
            let now = Instant::now();
            if let Some((at, why)) = &dumped {
                if now.duration_since(*at) > SYSRQ_COLLECT {
                    break Err(why.clone());
                }
            } else {
                let why = if now >= deadline {
                    Some(format!(
                        "the boot took longer than {timeout:?}: qemu killed"
                    ))
                } else if report.ended && now.duration_since(last_line) > POWEROFF_STALL {
                    Some(format!(
                        "the node printed nothing for {POWEROFF_STALL:?} after its checks \
                         ended and did not power off: qemu killed"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    // Blocked tasks (w) and every task (t) to the console, then stop.
                    send_sysrq(&monitor, &['w', 't']);
                    dumped = Some((now, why));
                }
            }
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(line) => {
                    last_line = Instant::now();
                    if echo {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{line}");
                    }
                    if let Some(rest) = line.split("E2E-OK ").nth(1) {
                        report.ok.push(rest.to_string());
                    }
                    if let Some(rest) = line.split("E2E-FAIL ").nth(1) {
                        report.failed.push(rest.to_string());
                    }
                    if line.contains("E2E-MULTI-USER") {
                        report.to_multi_user = Some(started.elapsed().as_secs_f64());
                        report.uptime_at_multi_user = line
                            .split("uptime=")
                            .nth(1)
                            .and_then(|s| s.split_whitespace().next())
                            .and_then(|s| s.parse().ok());
                        if !listeners_checked {
                            listeners_checked = true;
                            for (pid, addr) in self.listeners(Some(qemu_pid)) {
                                if !is_loopback_hex(&addr) {
                                    report.failed.push(format!(
                                        "pid {pid} listens on {addr}, not 127.0.0.1"
                                    ));
                                }
                            }
                        }
                    }
                    if line.contains("E2E-WAIT-BOUNCE") && plan.bounce_server {
                        let at = started.elapsed().as_secs_f64();
                        match self.bounce_ganesha(SERVER_DOWN) {
                            Ok(down) => report.server_bounced = Some(down),
                            Err(e) => report.failed.push(format!("server bounce: {e}")),
                        }
                        let msg = format!(
                            "LAB-INFO ganesha killed {at:.1} s after power-on, back at {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                        if echo {
                            println!("{msg}");
                        }
                        report.console.push(msg);
                    }
                    if line.contains("E2E-POWERCUT-NOW") && plan.power_cut && !report.power_cut {
                        // The node has fsync'd; cut the power now, mid-flight.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(qemu_pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        report.power_cut = true;
                    }
                    if line.contains("E2E-WAIT-IMGUPDATE") && plan.update_image {
                        let ino = |p: &Path| {
                            std::fs::symlink_metadata(p).map_or(0, |m| {
                                use std::os::unix::fs::MetadataExt;
                                m.ino()
                            })
                        };
                        let f = self.rootimg.join("etc/e2e-update.txt");
                        let before = ino(&f);
                        let r = self.image_update("etc/e2e-update.txt", "v2\n");
                        report.console.push(format!(
                            "LAB-INFO image update: etc/e2e-update.txt inode {before} -> {}",
                            ino(&f)
                        ));
                        match r {
                            Ok(_) => report.imgupdate_done = true,
                            Err(e) => report.failed.push(format!("imgupdate: {e}")),
                        }
                    }
                    if line.contains("E2E-END") {
                        report.ended = true;
                    }
                    if line.contains("reboot: Power down") {
                        report.powered_off = true;
                    }
                    report.console.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            }
        };
        // qemu exits by itself after the node's poweroff; on a timeout it is killed.
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None)
                    if result.is_err()
                        || Instant::now() > deadline + SYSRQ_COLLECT + Duration::from_secs(10) =>
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(qemu_pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => break None,
            }
        };
        let _ = reader.join();
        report.total_secs = started.elapsed().as_secs_f64();
        if let Err(e) = result {
            let tail: Vec<&str> = report
                .console
                .iter()
                .rev()
                .take(300)
                .rev()
                .map(String::as_str)
                .collect();
            return Err(format!(
                "{e}\n--- console (last lines) ---\n{}",
                tail.join("\n")
            ));
        }
        if status.is_none_or(|s| !s.success()) {
            report.powered_off = false;
        }
        Ok(report)
    }

    /// Stops nfs-ganesha by its pid (`signal`, then SIGKILL after 10 s) and waits until it
    /// is gone.
    fn stop_ganesha(&self, signal: nix::sys::signal::Signal) {
        let Some(pid) = self.ganesha_pid() else {
            return;
        };
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, signal);
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive() {
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            while alive() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_file(&self.ganesha_pidfile);
    }

    /// The image server disappears and returns: ganesha killed by its pid (at once, as a
    /// crash or a pulled cable would; a SIGTERM'd ganesha goes on serving while it shuts
    /// down), `down` later started again. Returns how long it was unreachable, in seconds.
    pub fn bounce_ganesha(&self, down: Duration) -> Result<f64, String> {
        let t = Instant::now();
        let pid = self.ganesha_pid();
        self.stop_ganesha(nix::sys::signal::Signal::SIGKILL);
        if std::net::TcpStream::connect(("127.0.0.1", self.nfs_port)).is_ok() {
            return Err(format!(
                "ganesha (pid {pid:?}) still accepts connections after being killed"
            ));
        }
        std::thread::sleep(down);
        self.start_ganesha()?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Runs `statelite liteimg` on the lab's image (symlink mode needs it; FUSE mode sees
    /// through it).
    pub fn liteimg(&self) -> Result<(), String> {
        let args = crate::liteimg::LiteimgArgs {
            image: Some(IMAGE.into()),
            os: None,
            arch: None,
            profile: None,
            rootimg: None,
        };
        crate::liteimg::run_cli(&args, &self.tables)
    }

    /// Stops the services (also done on drop).
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        self.stop_ganesha(nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a node may stay silent after its checks ended without powering off.
const POWEROFF_STALL: Duration = Duration::from_secs(60);
/// How long the console is read after asking for a sysrq dump.
const SYSRQ_COLLECT: Duration = Duration::from_secs(8);

/// Presses Alt-SysRq-`key` on the node's keyboard through qemu's monitor (the node boots
/// with `sysrq_always_enabled=1`); the kernel prints the answer on the serial console.
fn send_sysrq(monitor: &Path, keys: &[char]) {
    use std::os::unix::net::UnixStream;
    let Ok(mut s) = UnixStream::connect(monitor) else {
        return;
    };
    for k in keys {
        let _ = writeln!(s, "sendkey alt-sysrq-{k}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A `/proc/net/tcp{,6}` local address (`ADDR:PORT` in hex) on loopback: 127.0.0.1
/// (`0100007F`, host byte order), `::1`, or 127.0.0.1 mapped into IPv6 (ganesha binds its
/// IPv6 socket to `::ffff:127.0.0.1`).
pub fn is_loopback_hex(addr: &str) -> bool {
    let host = addr.split(':').next().unwrap_or("");
    matches!(
        host,
        "0100007F" | "00000000000000000000000001000000" | "0000000000000000FFFF00000100007F"
    )
}

/// `statelite demo --boot`: one FUSE-mode boot with the node's console on stdout.
/// Run from the repository (it runs `tests/e2e/setup.sh` for packages, image and static
/// binaries when it finds it).
pub fn demo_boot(keep: bool) -> Result<(), String> {
    let repo = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let setup = repo.join("tests/e2e/setup.sh");
    if setup.is_file() {
        println!("== preparing: {}", setup.display());
        run(Command::new("bash").arg(&setup))?;
    }
    let inputs = LabInputs::from_setup(&repo);
    let dir = tempfile::Builder::new()
        .prefix("statelite-demo-boot-")
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("work directory: {e}"))?;
    println!(
        "== management node on 127.0.0.1: tables, statelite serve, nfs-ganesha, mkinitrd, \
         nodeset (in {})",
        dir.path().display()
    );
    let lab = Lab::start(dir.path(), &inputs)?;
    println!(
        "== node {NODE} PXE-boots under qemu (TCG); its console follows. NFS on 127.0.0.1:{}, \
         query service on 127.0.0.1:{}\n",
        lab.nfs_port, lab.serve_port
    );
    let r = lab.boot(&BootPlan {
        update_image: true,
        ..BootPlan::new(
            "e2e.phase=first statelite.onfail=poweroff",
            Duration::from_secs(300),
            true,
        )
    })?;
    println!(
        "\n== {} checks passed, {} failed; multi-user.target {} after power-on; powered off: {}",
        r.ok.len(),
        r.failed.len(),
        r.to_multi_user
            .map_or("never reached".into(), |t| format!("{t:.1} s")),
        r.powered_off
    );
    drop(lab);
    if keep {
        let kept = dir.keep();
        println!("== kept {}", kept.display());
    }
    if r.failed.is_empty() && r.ended {
        Ok(())
    } else {
        Err(format!("the node reported problems: {:?}", r.failed))
    }
}

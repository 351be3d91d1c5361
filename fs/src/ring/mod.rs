//! FUSE over io_uring: requests served on the CPU that made them.
//!
//! Over `/dev/fuse` every request wakes a daemon thread wherever it last ran and every
//! reply wakes the caller back across CPUs. On this machine kind an idle CPU halts without
//! polling, so each of those wake-ups is an inter-processor interrupt into a halted CPU:
//! a create+write+fsync+close took ~200 µs across CPUs and ~64 µs with caller and daemon
//! on one CPU (benches/RESULTS.md). With the ring (kernel 6.14+, `fuse.enable_uring`) the
//! kernel queues a request on the ring of the caller's CPU, and the thread pinned to that
//! CPU serves it: both wake-ups stay local.
//!
//! Each possible CPU gets a queue, served by one thread pinned to its CPU that owns an
//! io_uring with one registered ring entry (a 288-byte header and a payload buffer). One
//! entry, because the kernel hands a request to any free entry of the caller's queue: with
//! two, a `close` (its RELEASE sent without waiting) woke one thread and the caller's next
//! `open` the other, three context switches per open+close where one thread serving the
//! RELEASE and then fetching the OPEN takes two (open+read+close of image files 22.7-25.2
//! → 18.5-19.9 µs; benches/RESULTS.md). A request that holds its queue's every thread for
//! [`STALL_TICKS`] watcher ticks (an NFS stall) gets the queue a spare thread and entry,
//! up to [`MAX_THREADS_PER_QUEUE`] ([`Rings::adapt`]), so the CPU's other requests go on:
//! each new one goes to the spare's free entry, and the spare's every reply fetches the
//! next request already waiting in the queue. (A new entry does not itself take a waiting
//! request, so requests made on that CPU in the 100-200 ms before the spare wait until the
//! spare's first request from there, or the stall's end.)
//! Requests arrive as completions; the reply goes back with `COMMIT_AND_FETCH`, which also
//! re-arms the entry. FORGET and INTERRUPT still come over `/dev/fuse` (fuser's threads go
//! on reading it), and so do invalidation notifications.
//!
//! The kernel switches to the ring once every queue has an entry. Registration does not
//! need `FUSE_OVER_IO_URING` in the INIT reply (which would block every request until the
//! ring is complete): without it a failed registration simply leaves the connection on
//! `/dev/fuse`.

mod abi;
mod dispatch;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use io_uring::{IoUring, cqueue, opcode, squeue::Entry128, types};

use crate::overlay::StateliteFs;

/// Threads (each with one ring entry) a CPU queue starts with.
pub const THREADS_PER_QUEUE: usize = 1;

/// Most threads a queue gets, spares included.
pub const MAX_THREADS_PER_QUEUE: usize = 4;

/// A queue whose every thread is on the request it was on at the last watcher tick (100 ms
/// ago, so for at least 100 ms) for this many ticks in a row is stalled and gets a spare
/// thread: 100-200 ms after a stall begins.
pub const STALL_TICKS: u32 = 1;

/// The module switch; off by default in 6.14+ kernels, absent before.
const ENABLE_KNOB: &str = "/sys/module/fuse/parameters/enable_uring";

/// Why the ring is not in use.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the kernel has no FUSE over io_uring (no {ENABLE_KNOB}; needs Linux 6.14+)")]
    NoKernelSupport,
    #[error("cannot enable FUSE over io_uring ({ENABLE_KNOB}): {0}")]
    Enable(std::io::Error),
    #[error("io_uring set-up for queue {qid}: {source}")]
    Setup { qid: usize, source: std::io::Error },
    #[error("ring registration for queue {qid} refused: {source}")]
    Register { qid: usize, source: std::io::Error },
}

/// Turns the fuse module's io_uring switch on (as root), or says why it cannot be.
pub fn enable_in_kernel() -> Result<(), RingError> {
    match std::fs::read_to_string(ENABLE_KNOB) {
        Err(_) => Err(RingError::NoKernelSupport),
        Ok(v) if v.trim() == "Y" || v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(ENABLE_KNOB, "Y").map_err(RingError::Enable),
    }
}

/// Test hook: `STATELITE_TEST_SLOW_LOOKUP=NAME=MS` makes a ring thread take MS milliseconds
/// over each LOOKUP of NAME, a stand-in for an NFS stall (`tests/tests/transports.rs`).
fn test_slow_lookup() -> Option<&'static (Vec<u8>, Duration)> {
    static SLOW: std::sync::OnceLock<Option<(Vec<u8>, Duration)>> = std::sync::OnceLock::new();
    SLOW.get_or_init(|| {
        let v = std::env::var("STATELITE_TEST_SLOW_LOOKUP").ok()?;
        let (name, ms) = v.rsplit_once('=')?;
        Some((
            name.as_bytes().to_vec(),
            Duration::from_millis(ms.parse().ok()?),
        ))
    })
    .as_ref()
}

/// Test hook: `STATELITE_TEST_RING_REGISTER_DELAY_MS` makes each ring thread wait that long
/// between registering its entry and looking for its first completion, which widens the
/// window in which a request reaches a just-registered entry (`tests/tests/transports.rs`).
fn test_register_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("STATELITE_TEST_RING_REGISTER_DELAY_MS")
            .ok()?
            .parse()
            .ok()
            .map(Duration::from_millis)
    })
}

/// How many queues the kernel makes: one per possible CPU.
fn possible_cpus() -> usize {
    let parse = |s: &str| -> Option<usize> {
        let mut n = 0;
        for part in s.trim().split(',') {
            match part.split_once('-') {
                Some((a, b)) => n += b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
                None => {
                    part.parse::<usize>().ok()?;
                    n += 1;
                }
            }
        }
        Some(n)
    };
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse(&s))
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET bounds-checks the index.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            // An offline CPU: the queue is still served, from wherever we run.
            tracing::debug!(
                cpu,
                "cannot pin ring thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// A `URING_CMD` for the fuse device: `fuse_uring_cmd_req` in the command area, and for
/// registration the two-iovec array (`sqe->addr`, `sqe->len` = 2).
fn fuse_cmd(dev: i32, cmd_op: u32, qid: u16, commit_id: u64, iov: Option<u64>) -> Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let entry = opcode::UringCmd80::new(types::Fd(dev), cmd_op)
        .cmd(cmd)
        .addr(iov)
        .build();
    if iov.is_none() {
        return entry;
    }
    // The io-uring crate has no setter for `sqe->len` on this opcode; the field is the u32
    // at byte 24 of the (repr(C), 128-byte) entry.
    // SAFETY: Entry128 is a repr(C) wrapper of the 128-byte SQE; any bytes are a valid SQE
    // as far as memory is concerned, and the kernel validates the contents.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    unsafe { std::mem::transmute::<[u8; 128], Entry128>(raw) }
}

/// The running ring threads (detached: each ends when the connection goes away) and
/// their scheduling policy.
///
/// Why `SCHED_IDLE`: when a ring thread replies, the kernel wakes the caller while the ring
/// thread still runs, and the scheduler puts a woken task on an idle CPU rather than on a
/// busy one: the caller moved to the other CPU (an inter-processor interrupt) at every
/// reply, and its next request went to that CPU's queue. A CPU that runs only `SCHED_IDLE`
/// tasks counts as idle for that choice, so the caller is woken where it was and preempts
/// the ring thread: request and reply stay on one CPU (a create+write+fsync+close cycle
/// 150 → 72 µs, an open+read+close 40 → 19 µs).
///
/// The price: a `SCHED_IDLE` thread gets almost no CPU while a normal task keeps its CPU
/// busy, so a request from a process sharing a CPU with a CPU-bound job would wait. The
/// threads' run-queue waits are watched ([`Rings::adapt`], every 100 ms): a thread that
/// waits more than [`STARVED_WAIT`] per time slice switches every ring thread to normal
/// scheduling, kept until waits are short again for the hold time (doubled each time
/// contention returns soon after, up to a minute).
pub struct Rings {
    pub queues: usize,
    sched: Mutex<Scheduling>,
    spawner: Spawner,
}

/// What it takes to start another ring thread.
struct Spawner {
    fs: Arc<StateliteFs>,
    dev: Arc<OwnedFd>,
    payload: usize,
}

/// A ring thread's progress, for the stall check: odd while it serves a request, bumped
/// at each request's start and end (two relaxed stores per request, read every 100 ms).
/// [`FAILED`] or [`ENDED`] once the thread has ended.
type Progress = Arc<AtomicU64>;

/// The progress of a ring thread that failed: odd and never changing, like a stuck one.
const FAILED: u64 = u64::MAX;

/// The progress of a ring thread that ended with the connection.
const ENDED: u64 = u64::MAX - 1;

struct RingThread {
    tid: i32,
    qid: usize,
    progress: Progress,
    /// `progress` at the last tick, and for how many ticks in a row it stood odd there.
    last_progress: u64,
    stuck_ticks: u32,
    /// `/proc/self/task/<tid>/schedstat`, kept open: the watcher re-reads it with one
    /// `pread` every 100 ms rather than opening it anew (five system calls), so an idle
    /// node's daemon costs next to nothing between requests.
    schedstat: Option<std::fs::File>,
    wait_ns: u64,
    slices: u64,
}

struct Scheduling {
    /// The threads `start` made, then the spares added since (never removed).
    threads: Vec<RingThread>,
    idle: bool,
    /// Normal scheduling is kept until then (set while contended).
    normal_until: Option<Instant>,
    backoff: Duration,
}

/// A mean run-queue wait per time slice above this means the ring threads are starved.
pub const STARVED_WAIT: Duration = Duration::from_millis(1);
const CONTENDED_HOLD: Duration = Duration::from_secs(2);
const MAX_HOLD: Duration = Duration::from_secs(60);

fn set_policy(tid: i32, policy: libc::c_int) {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param; a thread that has ended makes it fail harmlessly.
    if unsafe { libc::sched_setscheduler(tid, policy, &p) } != 0 {
        tracing::debug!(
            tid,
            "sched_setscheduler: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// (run-queue wait in ns, time slices) of a thread of ours, from its open schedstat file.
fn schedstat(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 96];
    let n = file.read_at(&mut buf, 0).ok()?;
    let s = std::str::from_utf8(&buf[..n]).ok()?;
    let mut f = s.split_whitespace().skip(1).map(|x| x.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

impl Rings {
    /// Whether the ring threads run as `SCHED_IDLE` now.
    pub fn idle_policy(&self) -> bool {
        self.sched.lock().idle
    }

    /// Spare threads added to stalled queues since the ring started: the threads beyond
    /// those [`start`] made, as none is ever removed.
    pub fn spares(&self) -> usize {
        self.threads() - self.queues * THREADS_PER_QUEUE
    }

    /// Ring threads now, spares included.
    pub fn threads(&self) -> usize {
        self.sched.lock().threads.len()
    }

    /// Every 100 ms: gives a stalled queue a spare thread (see the module's comment), and
    /// watches the ring threads' run-queue waits to pick their policy (see [`Rings`]).
    pub fn adapt(&self) {
        let mut s = self.sched.lock();
        self.add_spares(&mut s);
        let mut starved = false;
        for t in s.threads.iter_mut() {
            let Some((wait, slices)) = t.schedstat.as_ref().and_then(schedstat) else {
                continue;
            };
            let (dw, ds) = (
                wait.saturating_sub(t.wait_ns),
                slices.saturating_sub(t.slices),
            );
            (t.wait_ns, t.slices) = (wait, slices);
            let long = STARVED_WAIT.as_nanos() as u64;
            if (ds > 0 && dw / ds > long) || (ds == 0 && dw > 50 * long) {
                starved = true;
            }
        }
        let now = Instant::now();
        if starved {
            if s.idle {
                // Contention soon after the last episode ended: hold longer this time.
                let recent = s.normal_until.is_some_and(|u| now < u + MAX_HOLD);
                s.backoff = if recent {
                    (s.backoff * 2).min(MAX_HOLD)
                } else {
                    CONTENDED_HOLD
                };
                tracing::info!(
                    hold_s = s.backoff.as_secs(),
                    "ring threads waited for the CPU: normal scheduling"
                );
                for t in &s.threads {
                    set_policy(t.tid, libc::SCHED_OTHER);
                }
                s.idle = false;
            }
            s.normal_until = Some(now + s.backoff);
        } else if !s.idle && s.normal_until.is_none_or(|u| now >= u) {
            tracing::info!("ring threads back to SCHED_IDLE");
            for t in &s.threads {
                set_policy(t.tid, libc::SCHED_IDLE);
            }
            s.idle = true;
        }
    }

    /// A queue whose every thread has served one request for [`STALL_TICKS`] ticks (or has
    /// failed) gets another thread and ring entry, while it has fewer than
    /// [`MAX_THREADS_PER_QUEUE`]. Threads are never taken away: the kernel has no way to
    /// retire a ring entry. (With one thread a queue, one that failed would otherwise leave
    /// its CPU's requests unanswered for good.)
    fn add_spares(&self, s: &mut Scheduling) {
        for (qid, count) in stalled_queues(&mut s.threads, self.queues) {
            let (tx, rx) = mpsc::channel();
            let progress = match self.spawner.spawn(qid, count, tx) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(qid, "cannot add a spare ring thread: {e}");
                    continue;
                }
            };
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(Ok(tid)) => {
                    if !s.idle {
                        set_policy(tid, libc::SCHED_OTHER);
                    }
                    s.threads.push(RingThread::new(tid, qid, progress));
                    tracing::info!(
                        qid,
                        threads = count + 1,
                        "a request has held every ring thread of this CPU's queue for over \
                         100 ms: spare ring thread added"
                    );
                }
                Ok(Err(e)) => tracing::warn!(qid, "spare ring thread not registered: {e}"),
                Err(_) => tracing::warn!(qid, "spare ring thread did not register within 2 s"),
            }
        }
    }
}

/// One watcher tick: updates each thread's count of ticks stuck on one request, and returns
/// the queues to give a spare now, with their thread counts: those whose every thread is
/// stuck (or failed) for [`STALL_TICKS`] and which have room for one more.
fn stalled_queues(threads: &mut [RingThread], queues: usize) -> Vec<(usize, usize)> {
    // Per queue: its threads, and whether every one of them is stuck. One pass over the
    // threads (every tick, on a node with hundreds of CPUs too).
    let mut per_queue = vec![(0, true); queues];
    for t in threads.iter_mut() {
        let p = t.progress.load(Ordering::Relaxed);
        t.stuck_ticks = if p % 2 == 1 && p == t.last_progress {
            t.stuck_ticks.saturating_add(1)
        } else {
            0
        };
        t.last_progress = p;
        if let Some((count, all_stuck)) = per_queue.get_mut(t.qid) {
            *count += 1;
            *all_stuck &= t.stuck_ticks >= STALL_TICKS;
        }
    }
    per_queue
        .into_iter()
        .enumerate()
        .filter(|&(_, (count, all_stuck))| count > 0 && all_stuck && count < MAX_THREADS_PER_QUEUE)
        .map(|(qid, (count, _))| (qid, count))
        .collect()
}

impl RingThread {
    fn new(tid: i32, qid: usize, progress: Progress) -> RingThread {
        RingThread {
            tid,
            qid,
            progress,
            last_progress: 0,
            stuck_ticks: 0,
            schedstat: std::fs::File::open(format!("/proc/self/task/{tid}/schedstat")).ok(),
            wait_ns: 0,
            slices: 0,
        }
    }
}

impl Spawner {
    /// Starts ring thread number `t` of queue `qid`; it reports its registration on `tx`.
    fn spawn(
        &self,
        qid: usize,
        t: usize,
        tx: mpsc::Sender<Result<i32, RingError>>,
    ) -> Result<Progress, RingError> {
        let (fs, dev, payload) = (self.fs.clone(), self.dev.clone(), self.payload);
        let progress = Progress::default();
        let mine = progress.clone();
        std::thread::Builder::new()
            .name(format!("ring-{qid}.{t}"))
            .spawn(move || serve(&fs, &dev, qid, payload, &mine, tx))
            .map_err(|source| RingError::Setup { qid, source })?;
        Ok(progress)
    }
}

/// Starts the ring: registers every queue's entries and returns once all are registered,
/// after which the kernel sends requests to the ring. `payload` must be at least the
/// connection's largest request or reply (`max_write`, `max_pages`).
pub fn start(fs: Arc<StateliteFs>, dev: Arc<OwnedFd>, payload: usize) -> Result<Rings, RingError> {
    let queues = possible_cpus();
    let spawner = Spawner { fs, dev, payload };
    let mut started = Vec::new();
    for qid in 0..queues {
        for t in 0..THREADS_PER_QUEUE {
            // One channel per thread, so each registration is known to be whose.
            let (tx, rx) = mpsc::channel();
            started.push((qid, spawner.spawn(qid, t, tx)?, rx));
        }
    }
    let mut threads = Vec::new();
    for (qid, progress, rx) in started {
        match rx.recv() {
            Ok(Ok(tid)) => threads.push(RingThread::new(tid, qid, progress)),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(RingError::Setup {
                    qid: 0,
                    source: std::io::Error::other("a ring thread ended during set-up"),
                });
            }
        }
    }
    Ok(Rings {
        queues,
        sched: Mutex::new(Scheduling {
            threads,
            idle: true,
            normal_until: None,
            backoff: CONTENDED_HOLD,
        }),
        spawner,
    })
}

/// One ring thread: register the entry, then serve requests until the connection ends.
fn serve(
    fs: &StateliteFs,
    dev: &OwnedFd,
    qid: usize,
    payload_size: usize,
    progress: &AtomicU64,
    ready: mpsc::Sender<Result<i32, RingError>>,
) {
    pin_to_cpu(qid);
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    set_policy(tid, libc::SCHED_IDLE);
    let mut header = vec![0u8; abi::HEADER_SIZE].into_boxed_slice();
    let mut payload = vec![0u8; payload_size].into_boxed_slice();
    // The kernel keeps these two addresses for the life of the entry: neither buffer moves
    // (boxed) nor is freed before the ring is (declared after them, dropped first).
    let iov = Box::new([
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        },
    ]);
    let fd = dev.as_raw_fd();
    let q = qid as u16;
    let register = fuse_cmd(fd, abi::CMD_REGISTER, q, 0, Some(iov.as_ptr() as u64));
    let mut ring: IoUring<Entry128, cqueue::Entry> = match IoUring::builder().build(4) {
        Ok(r) => r,
        Err(source) => {
            let _ = ready.send(Err(RingError::Setup { qid, source }));
            return;
        }
    };
    // SAFETY: the iovecs and buffers outlive the ring (see above).
    if unsafe { ring.submission().push(&register) }.is_err() {
        let _ = ready.send(Err(RingError::Setup {
            qid,
            source: std::io::Error::other("submission queue full"),
        }));
        return;
    }
    if let Err(source) = ring.submit() {
        let _ = ready.send(Err(RingError::Register { qid, source }));
        return;
    }
    if let Some(delay) = test_register_delay() {
        std::thread::sleep(delay);
    }
    // A refused registration completes at once. An accepted one completes with a request,
    // which may already be here: the kernel switches to the ring as soon as every queue has
    // an entry, and a request made in that instant goes to the entry just registered. It is
    // served below (dropping it left the entry taken for good and the caller waiting
    // forever: a request made right after mounting hung).
    let mut early = match ring.completion().next() {
        Some(cqe) if cqe.result() < 0 => {
            let source = std::io::Error::from_raw_os_error(-cqe.result());
            let _ = ready.send(Err(RingError::Register { qid, source }));
            return;
        }
        other => other,
    };
    let _ = ready.send(Ok(tid));
    drop(ready);

    let mut args = Vec::with_capacity(4096);
    let mut out = dispatch::Out::new();
    // Whether the thread failed (rather than ended with the connection).
    let failed = loop {
        let cqe = match early.take() {
            Some(cqe) => cqe,
            None => {
                match ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => {
                        tracing::error!(qid, "io_uring wait failed, ring thread ends: {e}");
                        break true;
                    }
                }
                let Some(cqe) = ring.completion().next() else {
                    continue;
                };
                cqe
            }
        };
        let res = cqe.result();
        if res < 0 {
            match -res {
                // Unmounted or aborted: the connection is gone.
                libc::ENOTCONN | libc::ECANCELED | libc::ECONNABORTED => break false,
                e => {
                    tracing::error!(
                        qid,
                        "ring entry failed, ring thread ends: {}",
                        std::io::Error::from_raw_os_error(e)
                    );
                    break true;
                }
            }
        }
        // Odd from here until the reply is ready (see `Rings::add_spares`); only this thread
        // writes it.
        progress.store(progress.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let h = abi::InHeader::parse(&header[..abi::IN_HEADER_SIZE]);
        let commit_id = abi::u64_at(&header, abi::ENT_COMMIT_ID);
        let psz = (abi::u32_at(&header, abi::ENT_PAYLOAD_SZ) as usize).min(payload.len());
        let mut op = [0u8; 128];
        op.copy_from_slice(&header[abi::OP_IN..abi::OP_IN + 128]);
        if h.opcode == abi::WRITE {
            // Write data is used in place; the reply is small.
            dispatch::dispatch(fs, &h, &op, &payload[..psz], None, &mut out);
        } else {
            // Names and values are copied out so that the reply may fill the payload.
            args.clear();
            args.extend_from_slice(&payload[..psz]);
            if h.opcode == abi::LOOKUP
                && let Some((name, pause)) = test_slow_lookup()
                && args.split(|&b| b == 0).next() == Some(name.as_slice())
            {
                std::thread::sleep(*pause);
            }
            dispatch::dispatch(fs, &h, &op, &args, Some(&mut payload), &mut out);
        }
        progress.store(progress.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let len = if out.error != 0 || out.silent {
            0
        } else if let Some(n) = out.big_len {
            n
        } else {
            payload[..out.small_len].copy_from_slice(&out.small[..out.small_len]);
            out.small_len
        };
        abi::put_out_header(&mut header, out.error, h.unique);
        abi::put_u32(&mut header, abi::ENT_PAYLOAD_SZ, len as u32);
        let commit = fuse_cmd(fd, abi::CMD_COMMIT_AND_FETCH, q, commit_id, None);
        // SAFETY: the command carries no pointers beyond the registered entry's.
        if unsafe { ring.submission().push(&commit) }.is_err() {
            tracing::error!(qid, "ring submission queue full, ring thread ends");
            break true;
        }
    };
    // A failed thread looks stuck for good, so its queue gets a spare in its place at the
    // next tick; one gone with the connection looks idle.
    progress.store(if failed { FAILED } else { ENDED }, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_gets_a_spare_when_every_thread_is_stuck_or_failed_never_when_busy_or_ended() {
        // Queues 0-4, one thread each, then spares for queue 5 up to the cap.
        let progress: Vec<Progress> = (0..5).map(|_| Progress::default()).collect();
        let mut threads: Vec<RingThread> = progress
            .iter()
            .enumerate()
            .map(|(q, p)| RingThread::new(0, q, p.clone()))
            .collect();
        let full = Progress::new(AtomicU64::new(1));
        for _ in 0..MAX_THREADS_PER_QUEUE {
            threads.push(RingThread::new(0, 5, full.clone()));
        }
        // 0 idle (even), 1 busy with a new request at every tick, 2 on one request,
        // 3 failed, 4 ended with the connection; 5 stuck but at the cap.
        progress[2].store(7, Ordering::Relaxed);
        progress[3].store(FAILED, Ordering::Relaxed);
        progress[4].store(ENDED, Ordering::Relaxed);
        let mut ticks = Vec::new();
        for tick in 0..4u64 {
            progress[1].store(2 * tick + 1, Ordering::Relaxed);
            ticks.push(stalled_queues(&mut threads, 6));
        }
        // The first tick only sees where each thread is; from the second on, the stuck and
        // the failed queue are stalled (each with its one thread).
        assert_eq!(ticks[0], vec![]);
        for t in &ticks[1..] {
            assert_eq!(t, &vec![(2, 1), (3, 1)]);
        }
        // Once the stuck request is answered, its queue is no longer stalled.
        progress[2].store(8, Ordering::Relaxed);
        progress[1].store(9, Ordering::Relaxed);
        assert_eq!(stalled_queues(&mut threads, 6), vec![(3, 1)]);
        // A queue with a stuck thread and a serving spare is not stalled.
        let spare = Progress::new(AtomicU64::new(0));
        threads.push(RingThread::new(0, 3, spare.clone()));
        progress[1].store(11, Ordering::Relaxed);
        assert_eq!(stalled_queues(&mut threads, 6), vec![]);
    }

    #[test]
    fn registration_commands_carry_queue_commit_and_iovec_count() {
        let e = fuse_cmd(7, abi::CMD_REGISTER, 3, 0, Some(0x1000));
        let raw: [u8; 128] = unsafe { std::mem::transmute(e) };
        assert_eq!(raw[0], 46, "IORING_OP_URING_CMD");
        assert_eq!(i32::from_ne_bytes(raw[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_ne_bytes(raw[8..12].try_into().unwrap()),
            abi::CMD_REGISTER
        );
        assert_eq!(u64::from_ne_bytes(raw[16..24].try_into().unwrap()), 0x1000);
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 2);
        assert_eq!(
            u16::from_ne_bytes(raw[48 + 16..48 + 18].try_into().unwrap()),
            3
        );
        let c = fuse_cmd(7, abi::CMD_COMMIT_AND_FETCH, 1, 99, None);
        let raw: [u8; 128] = unsafe { std::mem::transmute(c) };
        assert_eq!(
            u64::from_ne_bytes(raw[48 + 8..48 + 16].try_into().unwrap()),
            99
        );
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 0);
    }
}

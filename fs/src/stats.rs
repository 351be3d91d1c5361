//! Per-operation counters and latencies, cache counters, and the record of writes refused
//! with EROFS (for `litectl stats` and `litectl denied`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

macro_rules! ops {
    ($($name:ident),* $(,)?) => {
        /// The FUSE operations we count.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum Op { $($name),* }
        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$name),*];
            pub fn name(self) -> &'static str {
                match self { $(Op::$name => stringify!($name)),* }
            }
        }
    };
}

ops!(
    lookup,
    getattr,
    setattr,
    readlink,
    mknod,
    mkdir,
    unlink,
    rmdir,
    symlink,
    rename,
    link,
    open,
    read,
    write,
    flush,
    release,
    fsync,
    opendir,
    readdir,
    readdirplus,
    releasedir,
    statfs,
    setxattr,
    getxattr,
    listxattr,
    removexattr,
    create,
    fallocate,
    lseek,
    forget,
);

#[derive(Debug, Default)]
struct Counter {
    count: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

/// Counters shared by all request threads (relaxed atomics: a snapshot may be a few
/// operations behind, never wrong by more).
#[derive(Debug)]
pub struct Stats {
    ops: Vec<Counter>,
    pub copy_ups: AtomicU64,
    pub passthrough_opens: AtomicU64,
    /// Passthrough opens served by a store copy's kept backing (`inode::RetainedBacking`).
    pub kept_backing_opens: AtomicU64,
    pub direct_opens: AtomicU64,
    pub negative_entries: AtomicU64,
    /// Names proved absent from an origin directory without asking it (see
    /// `origin_names`).
    pub origin_probes_saved: AtomicU64,
    /// READDIRPLUS entries sent by name only (see `plus`).
    pub name_only_entries: AtomicU64,
    /// Directories read, and small files' data asked for, ahead of a walk (see
    /// `dir_ahead`); shared with its threads.
    pub read_ahead: crate::dir_ahead::Counts,
    pub invalidations: AtomicU64,
    pub generation_bumps: AtomicU64,
    /// Chunks of large read-only files pushed into the kernel's page cache (no-open mode).
    pub prefetches: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ops: Op::ALL.iter().map(|_| Counter::default()).collect(),
            copy_ups: AtomicU64::new(0),
            passthrough_opens: AtomicU64::new(0),
            kept_backing_opens: AtomicU64::new(0),
            direct_opens: AtomicU64::new(0),
            negative_entries: AtomicU64::new(0),
            origin_probes_saved: AtomicU64::new(0),
            name_only_entries: AtomicU64::new(0),
            read_ahead: Default::default(),
            invalidations: AtomicU64::new(0),
            generation_bumps: AtomicU64::new(0),
            prefetches: AtomicU64::new(0),
        }
    }
}

/// Times one operation; records it when dropped.
pub struct OpTimer<'a> {
    stats: &'a Stats,
    op: Op,
    start: Instant,
    pub failed: bool,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        let c = &self.stats.ops[self.op as usize];
        c.count.fetch_add(1, Ordering::Relaxed);
        c.nanos
            .fetch_add(self.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if self.failed {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    pub op: &'static str,
    pub count: u64,
    pub errors: u64,
    pub mean_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub ops: Vec<OpStats>,
    pub copy_ups: u64,
    pub passthrough_opens: u64,
    pub kept_backing_opens: u64,
    pub direct_opens: u64,
    pub negative_entries: u64,
    pub origin_probes_saved: u64,
    pub name_only_entries: u64,
    pub dirs_read_ahead: u64,
    pub files_read_ahead: u64,
    pub invalidations: u64,
    pub generation_bumps: u64,
    pub prefetches: u64,
}

impl Stats {
    pub fn time(&self, op: Op) -> OpTimer<'_> {
        OpTimer {
            stats: self,
            op,
            start: Instant::now(),
            failed: false,
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let ops = Op::ALL
            .iter()
            .map(|&op| {
                let c = &self.ops[op as usize];
                let count = c.count.load(Ordering::Relaxed);
                let nanos = c.nanos.load(Ordering::Relaxed);
                OpStats {
                    op: op.name(),
                    count,
                    errors: c.errors.load(Ordering::Relaxed),
                    mean_us: if count == 0 {
                        0.0
                    } else {
                        nanos as f64 / count as f64 / 1000.0
                    },
                }
            })
            .filter(|s| s.count > 0)
            .collect();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            ops,
            copy_ups: l(&self.copy_ups),
            passthrough_opens: l(&self.passthrough_opens),
            kept_backing_opens: l(&self.kept_backing_opens),
            direct_opens: l(&self.direct_opens),
            negative_entries: l(&self.negative_entries),
            origin_probes_saved: l(&self.origin_probes_saved),
            name_only_entries: l(&self.name_only_entries),
            dirs_read_ahead: l(&self.read_ahead.dirs),
            files_read_ahead: l(&self.read_ahead.files),
            invalidations: l(&self.invalidations),
            generation_bumps: l(&self.generation_bumps),
            prefetches: l(&self.prefetches),
        }
    }
}

/// One path a client tried to change outside the writable areas.
#[derive(Debug, Clone, Serialize)]
pub struct Denied {
    pub path: String,
    pub op: &'static str,
    pub count: u64,
    pub is_dir: bool,
}

/// The EROFS record, bounded so a looping writer cannot grow the daemon.
#[derive(Debug, Default)]
pub struct DeniedLog {
    entries: Mutex<HashMap<String, Denied>>,
}

const DENIED_MAX: usize = 4096;

impl DeniedLog {
    pub fn record(&self, path: String, op: &'static str, is_dir: bool) {
        let mut e = self.entries.lock();
        if let Some(d) = e.get_mut(&path) {
            d.count += 1;
            return;
        }
        if e.len() >= DENIED_MAX {
            return;
        }
        e.insert(
            path.clone(),
            Denied {
                path,
                op,
                count: 1,
                is_dir,
            },
        );
    }

    pub fn snapshot(&self) -> Vec<Denied> {
        let mut v: Vec<Denied> = self.entries.lock().values().cloned().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }
}

//! How warm samples are scheduled: every mode of a workload is mounted at once and sampled in
//! rounds, one sample of each mode per round, the order rotating from round to round.
//!
//! Why: on this VM kind the machine itself drifts (memory bandwidth, the host's other
//! guests) by more than the differences measured. Measured one mode after the other, the
//! cached 1 GiB read gave FUSE mode 0.69 of symlink mode in a full run and 1.03 in a run of
//! that row alone, with both modes reading the same backing page cache. Interleaved, a drift
//! lands on every mode's samples alike, and the ratios of one run compare like with like
//! (the mount-to-ready workload alternates its two litefiles for the same reason).

use crate::median;
use crate::workloads::Params;

/// The warm samples of one mode, and whether the median has settled: it moved less than the
/// tolerance with the latest sample, once at least the minimum number were taken.
#[derive(Debug, Default)]
pub struct WarmSeries {
    pub samples: Vec<f64>,
    last_median: Option<f64>,
    settled: bool,
    pub error: Option<String>,
}

impl WarmSeries {
    pub fn push(&mut self, x: f64, p: &Params) {
        self.samples.push(x);
        let med = median(&self.samples);
        self.settled = self.samples.len() >= p.warm_min
            && self
                .last_median
                .is_some_and(|last| (med - last).abs() / med.abs().max(1e-12) < p.warm_tolerance);
        self.last_median = Some(med);
    }

    pub fn fail(&mut self, e: String) {
        self.error = Some(e);
    }

    /// The reported value: the median, if any sample was taken.
    pub fn value(&self) -> Option<f64> {
        (!self.samples.is_empty()).then(|| median(&self.samples))
    }

    /// Nothing more to take from this mode: it failed or reached the maximum.
    fn exhausted(&self, p: &Params) -> bool {
        self.error.is_some() || self.samples.len() >= p.warm_max
    }
}

/// The order in which round `round` samples `n` modes: rotated by one each round, so that no
/// mode always runs right after the same other one (whose leftovers, a daemon's background
/// work or evicted CPU caches, it would otherwise always inherit).
pub fn round_order(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n.max(1))
}

/// Whether the rounds are over: every mode that still samples has settled in the same
/// round, or every one is exhausted. All modes take the same number of rounds, so their
/// samples span the same stretch of time.
pub fn rounds_done(series: &[WarmSeries], p: &Params) -> bool {
    // `all` of no live mode is true: nothing left to sample.
    series
        .iter()
        .filter(|s| s.error.is_none())
        .all(|s| s.settled)
        || series.iter().all(|s| s.exhausted(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            exec_count: 1,
            create_count: 1,
            rename_count: 1,
            fio_runtime_s: 0.1,
            warm_min: 3,
            warm_max: 6,
            warm_tolerance: 0.03,
            update_timeout_s: 1.0,
        }
    }

    #[test]
    fn order_rotates_and_visits_every_mode_once_per_round() {
        let rounds: Vec<Vec<usize>> = (0..4).map(|r| round_order(3, r).collect()).collect();
        assert_eq!(rounds[0], [0, 1, 2]);
        assert_eq!(rounds[1], [1, 2, 0]);
        assert_eq!(rounds[2], [2, 0, 1]);
        assert_eq!(rounds[3], [0, 1, 2]);
        for r in &rounds {
            let mut sorted = r.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2]);
        }
        assert_eq!(round_order(0, 5).count(), 0);
    }

    #[test]
    fn a_series_settles_only_after_the_minimum_and_a_steady_median() {
        let p = params();
        let mut s = WarmSeries::default();
        s.push(100.0, &p);
        s.push(100.0, &p);
        assert!(!s.settled, "two samples are below the minimum of three");
        s.push(100.5, &p);
        assert!(s.settled);
        // A shift that moves the median unsettles it again.
        for _ in 0..3 {
            s.push(200.0, &p);
        }
        assert!(!s.settled);
        assert_eq!(s.value(), Some(150.25));
    }

    #[test]
    fn rounds_go_on_until_every_live_mode_has_settled() {
        let p = params();
        let mut steady = WarmSeries::default();
        let mut noisy = WarmSeries::default();
        for i in 0..3 {
            steady.push(50.0, &p);
            noisy.push(if i % 2 == 0 { 10.0 } else { 40.0 }, &p);
        }
        let mut series = vec![steady, noisy];
        assert!(!rounds_done(&series, &p), "the noisy mode has not settled");
        // A failed mode no longer holds the others back.
        series[1].fail("mount: gone".into());
        assert!(rounds_done(&series, &p));
    }

    #[test]
    fn rounds_stop_at_the_maximum_even_when_unsettled() {
        let p = params();
        let mut noisy = WarmSeries::default();
        for i in 0..p.warm_max {
            assert!(!rounds_done(std::slice::from_ref(&noisy), &p));
            noisy.push((i * i * 100 + 1) as f64, &p);
        }
        assert!(!noisy.settled);
        assert!(rounds_done(&[noisy], &p));
        assert!(rounds_done(&[], &p));
    }
}

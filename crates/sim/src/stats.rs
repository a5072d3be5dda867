//! Latency histograms and per-class, per-minute and per-bin accumulators.

use serde::Serialize;

/// A log-bucketed histogram of milliseconds: relative error ≤ `growth − 1`, from 0.1 ms up.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    ln_growth: f64,
}

const FLOOR_MS: f64 = 0.1;

impl Histogram {
    /// Buckets growing by `growth` (e.g. 1.02 for 2 %) up to `max_ms`.
    pub fn new(growth: f64, max_ms: f64) -> Self {
        let ln_growth = growth.ln();
        let n = ((max_ms / FLOOR_MS).ln() / ln_growth).ceil() as usize + 2;
        Self {
            counts: vec![0; n],
            total: 0,
            ln_growth,
        }
    }

    /// A fine histogram (2 %) for reported percentiles.
    pub fn fine() -> Self {
        Self::new(1.02, 3.6e6)
    }

    /// A coarse histogram (10 %) for charts.
    pub fn coarse() -> Self {
        Self::new(1.1, 3.6e6)
    }

    fn index(&self, ms: f64) -> usize {
        if ms <= FLOOR_MS {
            return 0;
        }
        (((ms / FLOOR_MS).ln() / self.ln_growth) as usize + 1).min(self.counts.len() - 1)
    }

    /// Records one value.
    pub fn record(&mut self, ms: f64) {
        let i = self.index(ms);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (upper edge of its bucket), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(if i == 0 {
                    FLOOR_MS
                } else {
                    FLOOR_MS * (self.ln_growth * i as f64).exp()
                });
            }
        }
        None
    }
}

/// Outcome counts and latencies of one class of tenants.
#[derive(Debug, Clone)]
pub struct ClassStats {
    pub requests: u64,
    pub served: u64,
    pub rejected: u64,
    pub over_slo: u64,
    pub latency: Histogram,
    pub pre_spike: Histogram,
}

impl ClassStats {
    pub fn new() -> Self {
        Self {
            requests: 0,
            served: 0,
            rejected: 0,
            over_slo: 0,
            latency: Histogram::fine(),
            pre_spike: Histogram::fine(),
        }
    }
}

impl Default for ClassStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-minute counts of a class: all outcomes, and those that missed the SLO or were refused.
#[derive(Debug, Clone, Default)]
pub struct Minutes {
    pub total: Vec<u32>,
    pub bad: Vec<u32>,
}

impl Minutes {
    pub fn new(minutes: usize) -> Self {
        Self {
            total: vec![0; minutes],
            bad: vec![0; minutes],
        }
    }

    pub fn record(&mut self, minute: usize, bad: bool) {
        if minute < self.total.len() {
            self.total[minute] += 1;
            self.bad[minute] += u32::from(bad);
        }
    }

    /// Minutes in which more than `fraction` of outcomes were bad.
    pub fn breaches(&self, fraction: f64) -> u64 {
        self.total
            .iter()
            .zip(&self.bad)
            .filter(|(t, b)| **t > 0 && f64::from(**b) > fraction * f64::from(**t))
            .count() as u64
    }
}

/// Time series for the charts, one point per bin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub bin_seconds: f64,
    /// Mean replicas (pods that cost money) per bin.
    pub replicas: Vec<f64>,
    /// Per class: mean backlog per tenant (queued at pods or waiting to retry) per bin.
    pub queue_depth: Vec<Vec<f64>>,
    /// Per class: p99 latency of requests that finished in the bin (ms), if any.
    pub p99_ms: Vec<Vec<Option<f64>>>,
}

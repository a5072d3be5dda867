//! Latency histograms and per-class, per-minute and per-bin accumulators.

use serde::Serialize;

/// A log-linear histogram of latencies in microseconds (HdrHistogram's layout): each power of
/// two is split into `2^precision_bits` buckets, so a value's bucket is found with bit
/// arithmetic and reported within a relative error of `2^-precision_bits`.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    bits: u32,
}

impl Histogram {
    /// A histogram with `2^bits` buckets per power of two.
    pub fn new(bits: u32) -> Self {
        Self {
            counts: vec![0; ((64 - bits + 1) << bits) as usize],
            total: 0,
            bits,
        }
    }

    /// A fine histogram (1.6 %) for reported percentiles.
    pub fn fine() -> Self {
        Self::new(6)
    }

    /// A coarse histogram (12.5 %) for charts.
    pub fn coarse() -> Self {
        Self::new(3)
    }

    fn index(&self, micros: u64) -> usize {
        let sub = 1u64 << self.bits;
        if micros < sub {
            return micros as usize;
        }
        let exp = 63 - micros.leading_zeros();
        let shift = exp - self.bits;
        let mantissa = (micros >> shift) - sub;
        (((shift + 1) as u64) << self.bits | mantissa) as usize
    }

    /// The largest value in bucket `i`, in microseconds.
    fn upper(&self, i: usize) -> u64 {
        let sub = 1u64 << self.bits;
        let (group, mantissa) = ((i as u64) >> self.bits, (i as u64) & (sub - 1));
        if group == 0 {
            return mantissa;
        }
        let shift = group - 1;
        ((sub + mantissa + 1) << shift) - 1
    }

    /// Records one latency in microseconds.
    pub fn record(&mut self, micros: u64) {
        let i = self.index(micros);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile in milliseconds (upper edge of its bucket), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(self.upper(i) as f64 / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_the_stated_precision() {
        let mut h = Histogram::fine();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for q in [0.5, 0.95, 0.99] {
            let exact = q * 1_000_000.0 / 1000.0;
            let got = h.quantile(q).unwrap();
            assert!(
                got >= exact && got <= exact * 1.016 + 0.001,
                "q{q}: {got} vs {exact}"
            );
        }
        let mut small = Histogram::coarse();
        small.record(3);
        assert_eq!(small.quantile(0.99), Some(0.003));
        assert_eq!(Histogram::coarse().quantile(0.5), None);
        for v in [0u64, 1, 7, 8, 9, 1000, 123_456_789, u64::MAX / 2] {
            let i = h.index(v);
            assert!(h.upper(i) >= v && (i == 0 || h.upper(i - 1) < v), "{v}");
        }
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

//! A small, seeded, version-stable random source (xoshiro256++ seeded by splitmix64) and the
//! few distributions the model needs. Written here so a seed means the same run forever.

/// Deterministic pseudo-random numbers.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// An independent stream derived from this seed and `stream`.
    pub fn fork(seed: u64, stream: u64) -> Self {
        Self::new(seed ^ stream.wrapping_mul(0xd605_bbb5_8c8a_bd53))
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Exponential with mean 1 (Marsaglia–Tsang ziggurat: one table lookup and compare in
    /// ~98 % of draws, no logarithm).
    pub fn exp1(&mut self) -> f64 {
        let z = ziggurat();
        loop {
            let bits = self.next_u64();
            let i = (bits & 255) as usize;
            let j = bits >> 32;
            if j < z.k[i] {
                return j as f64 * z.w[i];
            }
            if i == 0 {
                return Z_R - (1.0 - self.uniform()).ln();
            }
            let x = j as f64 * z.w[i];
            if z.f[i] + self.uniform() * (z.f[i - 1] - z.f[i]) < (-x).exp() {
                return x;
            }
        }
    }

    /// The standard normal quantile of `p` in (0, 1) (Acklam's rational approximation,
    /// relative error below 1.2e-9).
    pub fn normal_quantile(p: f64) -> f64 {
        const A: [f64; 6] = [
            -3.969683028665376e1,
            2.209460984245205e2,
            -2.759285104469687e2,
            1.383_577_518_672_69e2,
            -3.066479806614716e1,
            2.506628277459239,
        ];
        const B: [f64; 5] = [
            -5.447609879822406e1,
            1.615858368580409e2,
            -1.556989798598866e2,
            6.680131188771972e1,
            -1.328068155288572e1,
        ];
        const C: [f64; 6] = [
            -7.784894002430293e-3,
            -3.223964580411365e-1,
            -2.400758277161838,
            -2.549732539343734,
            4.374664141464968,
            2.938163982698783,
        ];
        const D: [f64; 4] = [
            7.784695709041462e-3,
            3.224671290700398e-1,
            2.445134137142996,
            3.754408661907416,
        ];
        let tail = |p: f64| {
            let q = (-2.0 * p.ln()).sqrt();
            (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
                / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
        };
        if p < 0.02425 {
            tail(p)
        } else if p > 1.0 - 0.02425 {
            -tail(1.0 - p)
        } else {
            let q = p - 0.5;
            let r = q * q;
            (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
                / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
        }
    }

    /// Standard normal, by inverting its CDF (Acklam's rational approximation, relative error
    /// below 1.2e-9): no logarithm or trigonometry outside the 5 % tails.
    pub fn normal(&mut self) -> f64 {
        let p = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
            + 0.5 / (1u64 << 53) as f64;
        Self::normal_quantile(p)
    }

    /// An index in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// `exp(sigma × Z)` for a standard normal Z, sampled by inverting its CDF: a table of 4096
/// quantiles, linearly interpolated, covers the central 99.8 %; the tails are computed exactly.
#[derive(Debug, Clone)]
pub struct LogNormal {
    sigma: f64,
    table: Vec<f64>,
}

const LN_EDGE: f64 = 0.001;
const LN_STEPS: usize = 4096;

impl LogNormal {
    pub fn new(sigma: f64) -> Self {
        let table = (0..=LN_STEPS)
            .map(|k| {
                let p = LN_EDGE + (1.0 - 2.0 * LN_EDGE) * k as f64 / LN_STEPS as f64;
                (sigma * Rng::normal_quantile(p)).exp()
            })
            .collect();
        Self { sigma, table }
    }

    pub fn sample(&self, rng: &mut Rng) -> f64 {
        let u = rng.uniform();
        if !(LN_EDGE..1.0 - LN_EDGE).contains(&u) {
            return (self.sigma * Rng::normal_quantile(u.max(f64::MIN_POSITIVE))).exp();
        }
        let x = (u - LN_EDGE) / (1.0 - 2.0 * LN_EDGE) * LN_STEPS as f64;
        let i = (x as usize).min(LN_STEPS - 1);
        let frac = x - i as f64;
        self.table[i] + (self.table[i + 1] - self.table[i]) * frac
    }
}

/// Right edge of the exponential ziggurat's base layer.
const Z_R: f64 = 7.697_117_470_131_05;

/// The exponential ziggurat's 256 layers.
struct Ziggurat {
    k: [u64; 256],
    w: [f64; 256],
    f: [f64; 256],
}

fn ziggurat() -> &'static Ziggurat {
    static TABLE: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const M: f64 = 4_294_967_296.0;
        const V: f64 = 3.949_659_822_581_572e-3;
        let mut z = Ziggurat {
            k: [0; 256],
            w: [0.0; 256],
            f: [0.0; 256],
        };
        let (mut d, mut t) = (Z_R, Z_R);
        let q = V / (-d).exp();
        z.k[0] = ((d / q) * M) as u64;
        z.k[1] = 0;
        z.w[0] = q / M;
        z.w[255] = d / M;
        z.f[0] = 1.0;
        z.f[255] = (-d).exp();
        for i in (1..=254).rev() {
            d = -(V / d + (-d).exp()).ln();
            z.k[i + 1] = ((d / t) * M) as u64;
            t = d;
            z.f[i] = (-d).exp();
            z.w[i] = d / M;
        }
        z
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(
            (0..10).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..10).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
        let n = 200_000;
        let exps: Vec<f64> = (0..n).map(|_| a.exp1()).collect();
        let mean_exp = exps.iter().sum::<f64>() / f64::from(n);
        assert!((mean_exp - 1.0).abs() < 0.02, "{mean_exp}");
        // The tail: P(X > 3) = e^-3.
        let tail = exps.iter().filter(|x| **x > 3.0).count() as f64 / f64::from(n);
        assert!((tail - (-3.0f64).exp()).abs() < 0.003, "{tail}");
        let zs: Vec<f64> = (0..n).map(|_| a.normal()).collect();
        let mean = zs.iter().sum::<f64>() / f64::from(n);
        let var = zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
        assert!((0..1000).all(|_| a.below(7) < 7));
        // The lognormal sampler: median 1, and P(factor > e^sigma) = P(Z > 1) ≈ 0.1587.
        let ln = LogNormal::new(0.25);
        let draws: Vec<f64> = (0..n).map(|_| ln.sample(&mut a)).collect();
        let above_median = draws.iter().filter(|x| **x > 1.0).count() as f64 / f64::from(n);
        let above_sigma =
            draws.iter().filter(|x| **x > 0.25f64.exp()).count() as f64 / f64::from(n);
        assert!(
            (above_median - 0.5).abs() < 0.005 && (above_sigma - 0.1587).abs() < 0.004,
            "{above_median} {above_sigma}"
        );
    }
}

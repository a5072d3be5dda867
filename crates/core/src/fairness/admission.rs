//! Gateway admission: a GCRA rate limit per tenant and a cap on each tenant's in-flight
//! requests at `maxShare ×` the live pool capacity. Rejections say which limit and when to
//! retry.

use serde::Serialize;

/// Generic cell rate algorithm: `rps` sustained with bursts of `burst` (a token bucket
/// without the bucket). State is one timestamp, the theoretical arrival time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    /// Seconds between requests at the sustained rate.
    emission_interval: f64,
    /// How far ahead of now the theoretical arrival time may run.
    tolerance: f64,
}

impl Gcra {
    /// A limiter of `rps` per second with bursts of `burst`.
    pub fn new(rps: f64, burst: u32) -> Self {
        let emission_interval = 1.0 / rps;
        Self {
            emission_interval,
            tolerance: emission_interval * f64::from(burst.max(1) - 1),
        }
    }

    /// Seconds between requests at the sustained rate.
    pub fn emission_interval(&self) -> f64 {
        self.emission_interval
    }

    /// How far (seconds) the theoretical arrival time may run ahead of now: the burst.
    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }

    /// This limit's part for one of several enforcers that each see part of the traffic:
    /// `share` of the rate and of the burst (at least one request).
    pub fn share(&self, share: f64) -> Self {
        let rps = share / self.emission_interval;
        let burst = (self.tolerance / self.emission_interval).round() + 1.0;
        Self::new(rps, ((burst * share) as u32).max(1))
    }

    /// Admits at `now` (updating `tat`), or says how many seconds until it would.
    pub fn check(&self, tat: &mut f64, now: f64) -> Result<(), f64> {
        let start = tat.max(now);
        let ahead = start - now;
        if ahead > self.tolerance + 1e-12 {
            return Err(ahead - self.tolerance);
        }
        *tat = start + self.emission_interval;
        Ok(())
    }
}

/// The most requests a tenant with `max_share` may have in flight in a pool of `live_slots`
/// (at least one, so a tenant is never shut out of a small pool).
pub fn share_cap(max_share: f64, live_slots: u32) -> u32 {
    // Truncation is floor here (non-negative), without a libm call.
    ((max_share * f64::from(live_slots)) as u32).max(1)
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Limit {
    /// The tenant's tier rate limit.
    RateLimit,
    /// The tenant already holds its maxShare of the live pool.
    ShareCap,
    /// The tenant's queue in the pod is full.
    QueueFull,
}

/// A refusal: which limit, and seconds after which a retry may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub limit: Limit,
    pub retry_after: f64,
}

/// One tenant's admission settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    pub rate: Option<Gcra>,
    pub max_share: f64,
}

impl TenantLimits {
    /// Each catalog tenant's limits, in catalog order.
    pub fn for_catalog(catalog: &crate::catalog::Catalog) -> Vec<Self> {
        catalog
            .tenants
            .iter()
            .map(|t| Self {
                rate: t.rate_limit.map(|r| Gcra::new(r.rps, r.burst)),
                max_share: t.max_share,
            })
            .collect()
    }
}

impl TenantLimits {
    /// The part of these limits one of `enforcers` gateways enforces alone (their shared
    /// state being unreachable): `1/enforcers` of the rate, the burst and the share.
    pub fn split(&self, enforcers: u32) -> Self {
        if enforcers <= 1 {
            return *self;
        }
        let share = 1.0 / f64::from(enforcers);
        Self {
            rate: self.rate.map(|r| r.share(share)),
            max_share: self.max_share * share,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct TenantState {
    limits: TenantLimits,
    tat: f64,
    in_flight: u32,
}

/// Admission state for all tenants of one gateway.
#[derive(Debug, Clone)]
pub struct Admission {
    tenants: Vec<TenantState>,
    /// Retry-After for a share-cap refusal (roughly one service time).
    share_retry_after: f64,
}

impl Admission {
    /// Admission for tenants with these limits; share-cap refusals ask for a retry after
    /// `share_retry_after` seconds.
    pub fn new(limits: &[TenantLimits], share_retry_after: f64) -> Self {
        let tenants = limits
            .iter()
            .map(|l| TenantState {
                limits: *l,
                tat: f64::NEG_INFINITY,
                in_flight: 0,
            })
            .collect();
        Self {
            tenants,
            share_retry_after,
        }
    }

    /// The most requests `tenant` may have in flight when the pool has `live_slots`.
    pub fn cap(&self, tenant: usize, live_slots: u32) -> u32 {
        share_cap(self.tenants[tenant].limits.max_share, live_slots)
    }

    /// Admits a request of `tenant` at `now` with `live_slots` serving, or refuses it.
    /// An admitted request must be [`release`](Self::release)d when it completes.
    pub fn admit(&mut self, tenant: usize, now: f64, live_slots: u32) -> Result<(), Rejection> {
        let cap = self.cap(tenant, live_slots);
        let t = &mut self.tenants[tenant];
        if t.in_flight >= cap {
            return Err(Rejection {
                limit: Limit::ShareCap,
                retry_after: self.share_retry_after,
            });
        }
        if let Some(rate) = &t.limits.rate {
            rate.check(&mut t.tat, now).map_err(|wait| Rejection {
                limit: Limit::RateLimit,
                retry_after: wait,
            })?;
        }
        t.in_flight += 1;
        Ok(())
    }

    /// A request of `tenant` left the system (answered, or refused by a pod).
    pub fn release(&mut self, tenant: usize) {
        let t = &mut self.tenants[tenant];
        t.in_flight = t.in_flight.saturating_sub(1);
    }

    /// Requests of `tenant` admitted and not yet released.
    pub fn in_flight(&self, tenant: usize) -> u32 {
        self.tenants[tenant].in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let g = Gcra::new(10.0, 5);
        let mut tat = f64::NEG_INFINITY;
        for _ in 0..5 {
            assert!(g.check(&mut tat, 0.0).is_ok());
        }
        let wait = g.check(&mut tat, 0.0).unwrap_err();
        assert!(
            (wait - 0.1).abs() < 1e-9,
            "next slot in one emission interval, got {wait}"
        );
        assert!(g.check(&mut tat, 0.1).is_ok());
        assert!(g.check(&mut tat, 0.1).is_err());
        // After a long pause the full burst is back.
        for _ in 0..5 {
            assert!(g.check(&mut tat, 100.0).is_ok());
        }
    }

    #[test]
    fn a_split_limit_is_its_part_of_the_whole() {
        let whole = TenantLimits {
            rate: Some(Gcra::new(100.0, 40)),
            max_share: 0.3,
        };
        let part = whole.split(4);
        let rate = part.rate.unwrap();
        assert!((rate.emission_interval() - 0.04).abs() < 1e-12, "25 rps");
        assert!(
            (rate.tolerance() - 9.0 * 0.04).abs() < 1e-9,
            "a burst of 10"
        );
        assert!((part.max_share - 0.075).abs() < 1e-12);
        assert_eq!(whole.split(1), whole);
    }

    #[test]
    fn share_cap_follows_live_capacity() {
        let mut a = Admission::new(
            &[TenantLimits {
                rate: None,
                max_share: 0.3,
            }],
            0.2,
        );
        for _ in 0..7 {
            assert!(a.admit(0, 0.0, 24).is_ok(), "0.3 × 24 slots = 7");
        }
        let r = a.admit(0, 0.0, 24).unwrap_err();
        assert_eq!(r.limit, Limit::ShareCap);
        assert!(a.admit(0, 0.0, 48).is_ok(), "the cap grows with the pool");
        a.release(0);
        a.release(0);
        assert!(a.admit(0, 0.0, 24).is_ok());
    }

    #[test]
    fn rate_limit_rejection_says_when_to_retry() {
        let mut a = Admission::new(
            &[TenantLimits {
                rate: Some(Gcra::new(2.0, 1)),
                max_share: 1.0,
            }],
            0.2,
        );
        assert!(a.admit(0, 0.0, 100).is_ok());
        let r = a.admit(0, 0.1, 100).unwrap_err();
        assert_eq!(r.limit, Limit::RateLimit);
        assert!((r.retry_after - 0.4).abs() < 1e-9);
        assert_eq!(a.in_flight(0), 1, "a refused request holds nothing");
    }
}

//! From the pods' `/metrics` to the engine's inputs: per-tenant demand (in flight, queued,
//! arrival rate, service time) summed over pods, and the seed's `queue_depth_per_tenant`.
//!
//! Rates come from counter deltas between two scrapes of the same pod; a pod seen for the
//! first time, or whose counters went back (it restarted), adds no rate until its next scrape.

use crate::exposition::Sample;
use std::collections::HashMap;
use tenantscale_core::catalog::Catalog;
use tenantscale_core::scaling::tenant_aware::{TenantDemand, queue_depth_per_tenant};

/// One tenant's series in one scrape of one pod.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantCounters {
    /// `tenant_queue_depth`
    pub queued: f64,
    /// `tenantscale_in_flight`
    pub in_flight: f64,
    /// `total_queries_processed_total`, all statuses.
    pub completed: f64,
    /// `tenantscale_busy_seconds_total`
    pub busy_seconds: f64,
}

/// One scrape of one pod, by tenant index in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct PodScrape {
    /// Seconds (the control loop's clock) when it was taken.
    pub at: f64,
    pub tenants: Vec<TenantCounters>,
    /// `tenantscale_slots_busy`
    pub slots_busy: f64,
    /// `tenantscale_drain_dropped_total`
    pub drain_dropped: f64,
}

impl PodScrape {
    /// Reads the series the autoscaler needs; samples of tenants not in the catalog are
    /// ignored (a pod with an older catalog).
    pub fn from_samples(catalog: &Catalog, at: f64, samples: &[Sample]) -> Self {
        let index = tenant_index(catalog);
        let mut scrape = Self {
            at,
            tenants: vec![TenantCounters::default(); catalog.tenants.len()],
            slots_busy: 0.0,
            drain_dropped: 0.0,
        };
        for s in samples {
            let tenant = s.label("tenant_id").and_then(|id| index.get(id).copied());
            match (s.name.as_str(), tenant) {
                ("tenant_queue_depth", Some(t)) => scrape.tenants[t].queued += s.value,
                ("tenantscale_in_flight", Some(t)) => scrape.tenants[t].in_flight += s.value,
                ("total_queries_processed_total", Some(t)) => {
                    scrape.tenants[t].completed += s.value
                }
                ("tenantscale_busy_seconds_total", Some(t)) => {
                    scrape.tenants[t].busy_seconds += s.value
                }
                ("tenantscale_slots_busy", _) => scrape.slots_busy = s.value,
                ("tenantscale_drain_dropped_total", _) => scrape.drain_dropped = s.value,
                _ => {}
            }
        }
        scrape
    }

    /// This scrape by the tenant indexes of `new` (it was read with `old`): a catalog reload
    /// keeps the pods' rates going. A tenant `old` did not have gets NaN counters, so its
    /// first delta is no rate (as for a pod seen for the first time), not its whole count.
    pub fn for_catalog(&self, old: &Catalog, new: &Catalog) -> Self {
        let index = tenant_index(old);
        let unseen = TenantCounters {
            completed: f64::NAN,
            busy_seconds: f64::NAN,
            ..TenantCounters::default()
        };
        Self {
            tenants: new
                .tenants
                .iter()
                .map(|t| {
                    index
                        .get(t.id.as_str())
                        .map_or(unseen, |&i| self.tenants[i])
                })
                .collect(),
            ..self.clone()
        }
    }

    /// Outstanding work: in flight plus queued, over all tenants (the scale-down order).
    pub fn outstanding(&self) -> f64 {
        self.tenants.iter().map(|t| t.in_flight + t.queued).sum()
    }
}

/// The catalog's tenant ids → their index.
pub fn tenant_index(catalog: &Catalog) -> HashMap<&str, usize> {
    catalog
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect()
}

/// Every catalog tenant with nothing observed yet (only its maxShare).
pub fn idle_demands(catalog: &Catalog) -> Vec<TenantDemand> {
    catalog
        .tenants
        .iter()
        .map(|t| TenantDemand {
            max_share: t.max_share,
            ..TenantDemand::default()
        })
        .collect()
}

/// One pod as a round saw it (either source).
#[derive(Debug, Clone, PartialEq)]
pub struct PodSeen {
    /// `tenantscale_pod_state`'s state label.
    pub state: Option<String>,
    /// Queued + in flight, all tenants.
    pub outstanding: f64,
}

/// Per tenant, what the pool saw in one round of scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSignals {
    pub demands: Vec<TenantDemand>,
    /// The seed's metric: Σ queued over tenants with work (queued, or arrivals).
    pub queue_depth_per_tenant: f64,
}

/// Sums one round of scrapes. `previous` holds each pod's last scrape (by address) for the
/// rates; it is updated with this round's.
pub fn pool_signals(
    catalog: &Catalog,
    round: &[(String, PodScrape)],
    previous: &mut HashMap<String, PodScrape>,
) -> PoolSignals {
    let n = catalog.tenants.len();
    let mut demands = idle_demands(catalog);
    let mut completions = vec![0.0; n];
    let mut busy = vec![0.0; n];
    for (addr, scrape) in round {
        for (t, c) in scrape.tenants.iter().enumerate() {
            demands[t].in_flight += c.in_flight;
            demands[t].queued += c.queued;
        }
        if let Some(before) = previous.get(addr) {
            let dt = scrape.at - before.at;
            if dt > 0.0 {
                for (t, (now, then)) in scrape.tenants.iter().zip(&before.tenants).enumerate() {
                    let done = now.completed - then.completed;
                    let spent = now.busy_seconds - then.busy_seconds;
                    // False for NaN too: a tenant that scrape did not know.
                    if done >= 0.0 && spent >= 0.0 {
                        completions[t] += done / dt;
                        busy[t] += spent / dt;
                    }
                }
            }
        }
    }
    previous.retain(|addr, _| round.iter().any(|(a, _)| a == addr));
    for (addr, scrape) in round {
        previous.insert(addr.clone(), scrape.clone());
    }
    for (t, d) in demands.iter_mut().enumerate() {
        d.set_rates(completions[t], busy[t]);
    }
    PoolSignals {
        queue_depth_per_tenant: queue_depth_per_tenant(&demands),
        demands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;

    fn catalog() -> Catalog {
        Catalog::parse(
            "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {weight: 3, share: 0.5, maxShare: 0.3}\n  bronze: {weight: 1, share: 0.5, maxShare: 0.1}\n\
             tenants:\n  - {id: media-1, tier: gold}\n  - {id: retail-1, tier: bronze}\n\
             pool: {minReplicas: 1, maxReplicas: 10}\n",
        )
        .unwrap()
        .catalog
    }

    fn scrape(at: f64, text: &str) -> PodScrape {
        PodScrape::from_samples(&catalog(), at, &parse(text).unwrap())
    }

    #[test]
    fn a_pod_scrape_reads_the_tenant_series() {
        let s = scrape(
            0.0,
            "tenant_queue_depth{tenant_id=\"media-1\"} 4\n\
             tenantscale_in_flight{tenant_id=\"media-1\"} 2\n\
             total_queries_processed_total{tenant_id=\"media-1\",status=\"success\"} 10\n\
             total_queries_processed_total{tenant_id=\"media-1\",status=\"error\"} 1\n\
             tenantscale_busy_seconds_total{tenant_id=\"retail-1\"} 0.5\n\
             tenant_queue_depth{tenant_id=\"gone\"} 9\ntenantscale_slots_busy 2\n",
        );
        assert_eq!(s.tenants[0].queued, 4.0);
        assert_eq!(s.tenants[0].completed, 11.0);
        assert_eq!(s.tenants[1].busy_seconds, 0.5);
        assert_eq!(s.outstanding(), 6.0, "the unknown tenant is ignored");
        assert_eq!(s.slots_busy, 2.0);
    }

    #[test]
    fn a_reloaded_catalog_keeps_rates_by_tenant_and_a_new_tenant_starts_with_none() {
        let old = catalog();
        // retail-1 goes first, media-1 stays, video-1 is new.
        let new = Catalog::parse(
            "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {weight: 3, share: 0.5, maxShare: 0.3}\n\
             tenants:\n  - {id: video-1, tier: gold}\n  - {id: media-1, tier: gold}\n\
             pool: {minReplicas: 1, maxReplicas: 10}\n",
        )
        .unwrap()
        .catalog;
        let counters = |at, media: f64, video: f64| {
            format!(
                "total_queries_processed_total{{tenant_id=\"media-1\",status=\"success\"}} {media}\n\
                 total_queries_processed_total{{tenant_id=\"video-1\",status=\"success\"}} {video}\n\
                 tenantscale_busy_seconds_total{{tenant_id=\"media-1\"}} {at}\n\
                 tenantscale_busy_seconds_total{{tenant_id=\"video-1\"}} {at}\n"
            )
        };
        let mut previous = HashMap::new();
        let before = scrape(0.0, &counters(0.0, 100.0, 500.0));
        pool_signals(&old, &[("a".into(), before)], &mut previous);
        for s in previous.values_mut() {
            *s = s.for_catalog(&old, &new);
        }
        let after = |at: f64, media, video| {
            PodScrape::from_samples(&new, at, &parse(&counters(at, media, video)).unwrap())
        };
        let s = pool_signals(
            &new,
            &[("a".into(), after(2.0, 140.0, 520.0))],
            &mut previous,
        );
        assert_eq!(s.demands[1].arrival_rate, 20.0, "media-1's rate goes on");
        assert_eq!(
            s.demands[0].arrival_rate, 0.0,
            "not video-1's whole count at once"
        );
        let s = pool_signals(
            &new,
            &[("a".into(), after(4.0, 180.0, 560.0))],
            &mut previous,
        );
        assert_eq!(
            s.demands[0].arrival_rate, 20.0,
            "its rate from the next round"
        );
    }

    #[test]
    fn rates_come_from_deltas_of_the_same_pod() {
        let c = catalog();
        let mut previous = HashMap::new();
        let first = |at, done, busy| {
            scrape(
                at,
                &format!(
                    "total_queries_processed_total{{tenant_id=\"media-1\",status=\"success\"}} {done}\n\
                     tenantscale_busy_seconds_total{{tenant_id=\"media-1\"}} {busy}\n\
                     tenant_queue_depth{{tenant_id=\"media-1\"}} 3\n"
                ),
            )
        };
        let s = pool_signals(&c, &[("a".into(), first(0.0, 100.0, 10.0))], &mut previous);
        assert_eq!(s.demands[0].arrival_rate, 0.0, "no rate from one scrape");
        assert_eq!(s.demands[0].queued, 3.0);
        let s = pool_signals(&c, &[("a".into(), first(2.0, 140.0, 18.0))], &mut previous);
        assert_eq!(s.demands[0].arrival_rate, 20.0);
        assert!((s.demands[0].mean_service_seconds - 0.2).abs() < 1e-12);
        assert_eq!(s.demands[0].max_share, 0.3);
        assert_eq!(s.queue_depth_per_tenant, 3.0, "one active tenant");
        // The pod restarted: its counters went back, so no rate this round.
        let s = pool_signals(&c, &[("a".into(), first(3.0, 5.0, 1.0))], &mut previous);
        assert_eq!(s.demands[0].arrival_rate, 0.0);
        // A pod that left is forgotten.
        pool_signals(&c, &[], &mut previous);
        assert!(previous.is_empty());
    }
}

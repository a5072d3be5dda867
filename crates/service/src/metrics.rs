//! Prometheus metrics. The seed's names are kept so its PromQL and adapter rules work:
//! `tenant_queue_depth{tenant_id}`, `total_queries_processed{tenant_id,status}`,
//! `query_latency_seconds{tenant_id}`; tenantscale's own carry the `tenantscale_` prefix.

use crate::pod::PodState;
use crate::store::Usage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::RwLock;
use tenantscale_core::catalog::Catalog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    tenant_id: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    tenant_id: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// One tenant's hot-path series, resolved once: a query then updates atomics instead of
/// hashing label strings under the family's lock.
struct TenantSeries {
    id: String,
    succeeded: Counter,
    latency: Histogram,
    busy_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    cache_hits: Counter,
    cache_misses: Counter,
}

/// Every `status` of `total_queries_processed` and `reason` of `tenantscale_rejections` the
/// pod writes: the series dropped with a removed tenant's.
const STATUSES: [&str; 4] = ["success", "rejected", "llm_timeout", "llm_error"];
const REASONS: [&str; 4] = [
    "queue_full",
    "queue_timeout",
    "storage_quota",
    "index_too_large",
];

type Seconds = Counter<f64, std::sync::atomic::AtomicU64>;

/// The pod's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// By tenant index (see `tenantscale_core::roster`); `None`: no series (a removed tenant
    /// whose work is done), and writes for it are dropped.
    tenants: RwLock<Vec<Option<TenantSeries>>>,
    queue_depth: Family<TenantLabel, Gauge>,
    in_flight: Family<TenantLabel, Gauge>,
    processed: Family<StatusLabel, Counter>,
    latency: Family<TenantLabel, Histogram, fn() -> Histogram>,
    busy_seconds: Family<TenantLabel, Seconds>,
    cache_hits: Family<TenantLabel, Counter>,
    cache_misses: Family<TenantLabel, Counter>,
    rejections: Family<ReasonLabel, Counter>,
    state: Family<StateLabel, Gauge>,
    drain_dropped: Counter,
    cache_evictions: Counter,
    cache_load: Histogram,
    slots: Gauge,
    slots_busy: Gauge,
    storage_documents: Family<TenantLabel, Gauge>,
    storage_bytes: Family<TenantLabel, Gauge>,
    graph_builders: Counter,
}

/// Cache-load buckets (seconds): a small tenant loads in about a millisecond, 10,000 chunks
/// in about 20.
const CACHE_LOAD_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The seed's latency buckets (seconds).
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    pub fn new(catalog: &Catalog) -> Self {
        let mut registry = Registry::default();
        let queue_depth = Family::<TenantLabel, Gauge>::default();
        let in_flight = Family::<TenantLabel, Gauge>::default();
        let processed = Family::<StatusLabel, Counter>::default();
        let latency =
            Family::<TenantLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS)
            });
        let busy_seconds = Family::<TenantLabel, Seconds>::default();
        let rejections = Family::<ReasonLabel, Counter>::default();
        let cache_hits = Family::<TenantLabel, Counter>::default();
        let cache_misses = Family::<TenantLabel, Counter>::default();
        let state = Family::<StateLabel, Gauge>::default();
        let drain_dropped = Counter::default();
        let cache_evictions = Counter::default();
        let cache_load = Histogram::new(CACHE_LOAD_BUCKETS);
        let slots = Gauge::default();
        let slots_busy = Gauge::default();
        let storage_documents = Family::<TenantLabel, Gauge>::default();
        let storage_bytes = Family::<TenantLabel, Gauge>::default();
        let graph_builders = Counter::default();
        registry.register(
            "tenantscale_tenant_storage_documents",
            "Documents the tenant keeps in the store, as this pod last saw (its writes; every 30 s)",
            storage_documents.clone(),
        );
        registry.register(
            "tenantscale_tenant_storage_bytes",
            "Bytes the tenant keeps in the store (ids, text, metadata and vectors), as this pod last saw",
            storage_bytes.clone(),
        );
        registry.register(
            "tenantscale_graph_builders",
            "HNSW graph builder threads started (at most one per tenant at a time)",
            graph_builders.clone(),
        );
        registry.register(
            "tenantscale_cache_evictions",
            "Tenant indexes evicted from the cache to make room",
            cache_evictions.clone(),
        );
        registry.register(
            "tenantscale_cache_load_seconds",
            "Time to load a tenant's index from the store on a cache miss",
            cache_load.clone(),
        );
        registry.register(
            "tenantscale_slots",
            "Worker slots of this pod",
            slots.clone(),
        );
        registry.register(
            "tenantscale_slots_busy",
            "Worker slots serving a query now",
            slots_busy.clone(),
        );
        registry.register(
            "tenant_queue_depth",
            "Queries waiting in the tenant's queue",
            queue_depth.clone(),
        );
        registry.register(
            "total_queries_processed",
            "Queries answered, by outcome",
            processed.clone(),
        );
        registry.register(
            "query_latency_seconds",
            "Query latency, queueing included",
            latency.clone(),
        );
        registry.register(
            "tenantscale_in_flight",
            "Queries being served",
            in_flight.clone(),
        );
        registry.register(
            "tenantscale_busy_seconds",
            "Seconds spent serving the tenant's queries (its rate is the mean concurrency)",
            busy_seconds.clone(),
        );
        registry.register(
            "tenantscale_rejections",
            "Requests refused, by reason (queries, and ingests: queue_full, queue_timeout, storage_quota)",
            rejections.clone(),
        );
        registry.register(
            "tenantscale_cache_hits",
            "Queries that found the tenant's index cached",
            cache_hits.clone(),
        );
        registry.register(
            "tenantscale_cache_misses",
            "Queries that loaded the tenant's index",
            cache_misses.clone(),
        );
        registry.register(
            "tenantscale_pod_state",
            "1 for the pod's current state",
            state.clone(),
        );
        registry.register(
            "tenantscale_drain_dropped",
            "Queries dropped by a drain timeout",
            drain_dropped.clone(),
        );
        let metrics = Self {
            registry,
            tenants: RwLock::new(Vec::new()),
            queue_depth,
            in_flight,
            processed,
            latency,
            busy_seconds,
            cache_hits,
            cache_misses,
            rejections,
            state,
            drain_dropped,
            cache_evictions,
            cache_load,
            slots,
            slots_busy,
            storage_documents,
            storage_bytes,
            graph_builders,
        };
        for (t, tenant) in catalog.tenants.iter().enumerate() {
            metrics.track(t, &tenant.id);
        }
        metrics
    }

    fn tenants(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<TenantSeries>>> {
        self.tenants.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `write` with tenant `t`'s series, if it has them.
    fn with(&self, t: usize, write: impl FnOnce(&TenantSeries)) {
        if let Some(Some(series)) = self.tenants().get(t) {
            write(series);
        }
    }

    /// Gives tenant `t` (id `id`) its series, unless it has them.
    pub fn track(&self, t: usize, id: &str) {
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if tenants.len() <= t {
            tenants.resize_with(t + 1, || None);
        }
        if tenants[t].is_some() {
            return;
        }
        let label = TenantLabel {
            tenant_id: id.into(),
        };
        tenants[t] = Some(TenantSeries {
            id: id.into(),
            succeeded: self.processed.get_or_create_owned(&StatusLabel {
                tenant_id: id.into(),
                status: "success".into(),
            }),
            latency: self.latency.get_or_create_owned(&label),
            busy_seconds: self.busy_seconds.get_or_create_owned(&label),
            cache_hits: self.cache_hits.get_or_create_owned(&label),
            cache_misses: self.cache_misses.get_or_create_owned(&label),
        });
    }

    /// Drops tenant `t`'s series from the exposition (a removed tenant whose work is done).
    pub fn forget(&self, t: usize) {
        let Some(series) = self
            .tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(t)
            .and_then(Option::take)
        else {
            return;
        };
        let label = TenantLabel {
            tenant_id: series.id.clone(),
        };
        for family in [
            &self.queue_depth,
            &self.in_flight,
            &self.storage_documents,
            &self.storage_bytes,
        ] {
            family.remove(&label);
        }
        self.latency.remove(&label);
        self.busy_seconds.remove(&label);
        self.cache_hits.remove(&label);
        self.cache_misses.remove(&label);
        for status in STATUSES {
            self.processed.remove(&StatusLabel {
                tenant_id: series.id.clone(),
                status: status.into(),
            });
        }
        for reason in REASONS {
            self.rejections.remove(&ReasonLabel {
                tenant_id: series.id.clone(),
                reason: reason.into(),
            });
        }
    }

    /// A query of tenant `t` finished with `status` after `seconds`, `busy` of them served.
    pub fn finished(&self, t: usize, status: &str, seconds: f64, busy: f64) {
        debug_assert!(STATUSES.contains(&status), "{status} is not in STATUSES");
        self.with(t, |series| {
            if status == "success" {
                series.succeeded.inc();
            } else {
                self.processed
                    .get_or_create(&StatusLabel {
                        tenant_id: series.id.clone(),
                        status: status.into(),
                    })
                    .inc();
            }
            series.latency.observe(seconds);
            series.busy_seconds.inc_by(busy);
        });
    }

    /// A query of tenant `t` was refused for `reason`.
    pub fn rejected(&self, t: usize, reason: &str) {
        debug_assert!(REASONS.contains(&reason), "{reason} is not in REASONS");
        self.with(t, |series| {
            self.rejections
                .get_or_create(&ReasonLabel {
                    tenant_id: series.id.clone(),
                    reason: reason.into(),
                })
                .inc();
        });
    }

    pub fn cache(&self, t: usize, hit: bool) {
        self.with(t, |series| {
            if hit {
                series.cache_hits.inc();
            } else {
                series.cache_misses.inc();
            }
        });
    }

    pub fn set_state(&self, now: PodState) {
        for (s, name) in [
            (PodState::Warming, "warming"),
            (PodState::Ready, "ready"),
            (PodState::Draining, "draining"),
        ] {
            self.state
                .get_or_create(&StateLabel { state: name.into() })
                .set(i64::from(s == now));
        }
    }

    /// A tenant index was loaded in `seconds`, evicting `evicted` others.
    pub fn cache_loaded(&self, seconds: f64, evicted: usize) {
        self.cache_load.observe(seconds);
        self.cache_evictions.inc_by(evicted as u64);
    }

    /// Tenant `t` keeps `usage` in the store.
    pub fn storage(&self, t: usize, usage: Usage) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.with(t, |series| {
            let label = TenantLabel {
                tenant_id: series.id.clone(),
            };
            self.storage_documents
                .get_or_create(&label)
                .set(gauge(usage.documents));
            self.storage_bytes
                .get_or_create(&label)
                .set(gauge(usage.bytes));
        });
    }

    pub fn graph_builder_started(&self) {
        self.graph_builders.inc();
    }

    /// Graph builder threads started so far.
    #[cfg(test)]
    pub fn graph_builders_started(&self) -> u64 {
        self.graph_builders.get()
    }

    pub fn dropped_by_drain(&self, n: u64) {
        self.drain_dropped.inc_by(n);
    }

    /// The text exposition, with queue gauges taken from `load` ((queued, in service) per tenant).
    pub fn encode(&self, load: &[(usize, u32)], slots: u32) -> String {
        self.slots.set(i64::from(slots));
        self.slots_busy
            .set(load.iter().map(|(_, busy)| i64::from(*busy)).sum());
        // Every tenant with series, zeros included: a series that appears and vanishes
        // makes `avg by (tenant_id)` and the HPA adapter jump.
        for (series, (queued, in_service)) in self.tenants().iter().zip(load) {
            if let Some(series) = series {
                let label = TenantLabel {
                    tenant_id: series.id.clone(),
                };
                self.queue_depth.get_or_create(&label).set(*queued as i64);
                self.in_flight
                    .get_or_create(&label)
                    .set(i64::from(*in_service));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

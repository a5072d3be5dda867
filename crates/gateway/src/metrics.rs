//! The gateway's Prometheus metrics: per tenant admitted, rejected by reason, in flight and
//! latency; per pod in flight, routed, ejections and upstream errors; retries, and how many
//! requests landed on their tenant's first-choice pod (cache affinity).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tenantscale_core::catalog::Catalog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    tenant_id: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabel {
    pub pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodErrorLabel {
    pod: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// One tenant's hot-path series, resolved once (atomics per request, no label hashing).
struct TenantSeries {
    admitted: Counter,
    in_flight: Gauge,
    latency: Histogram,
}

/// Why the gateway refused a request before it reached a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimit,
    ShareCap,
    NoPod,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::ShareCap => "share_cap",
            Self::NoPod => "no_pod",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    tenant_ids: Vec<String>,
    series: Vec<TenantSeries>,
    rejected: Family<ReasonLabel, Counter>,
    pub unauthorized: Counter,
    routed: Family<PodLabel, Counter>,
    pod_in_flight: Family<PodLabel, Gauge>,
    ejections: Family<PodLabel, Counter>,
    upstream_errors: Family<PodErrorLabel, Counter>,
    pub retries: Counter,
    pub first_choice: Counter,
    pods: Family<StateLabel, Gauge>,
    pub redis_up: Gauge,
}

/// Request latency buckets (seconds), the pods' (the seed's) buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    pub fn new(catalog: &Catalog) -> Self {
        let admitted = Family::<TenantLabel, Counter>::default();
        let in_flight = Family::<TenantLabel, Gauge>::default();
        let latency = Family::<TenantLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        let mut m = Self {
            tenant_ids: catalog.tenants.iter().map(|t| t.id.clone()).collect(),
            series: Vec::new(),
            rejected: Family::default(),
            unauthorized: Counter::default(),
            routed: Family::default(),
            pod_in_flight: Family::default(),
            ejections: Family::default(),
            upstream_errors: Family::default(),
            retries: Counter::default(),
            first_choice: Counter::default(),
            pods: Family::default(),
            redis_up: Gauge::default(),
            registry: Registry::default(),
        };
        m.registry.register(
            "tenantscale_gateway_admitted",
            "Requests admitted (by rate limit and share cap, from their head) and routed to a pod",
            admitted.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_rejected",
            "Requests refused by the gateway, by reason (rate_limit, share_cap, no_pod)",
            m.rejected.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_unauthorized",
            "Requests without a valid API key (or tenant header in trusted mode)",
            m.unauthorized.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_in_flight",
            "Admitted requests not yet answered (their body being read, or at a pod)",
            in_flight.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_request_seconds",
            "Time from an admitted request's arrival until its response is complete",
            latency.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_routed",
            "Requests sent to each pod (its share of the traffic)",
            m.routed.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_pod_in_flight",
            "Requests outstanding on each pod",
            m.pod_in_flight.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_ejections",
            "Times a pod was taken out of rotation after connection failures, timeouts or 5xx it marked as its own fault",
            m.ejections.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_upstream_errors",
            "Failed exchanges with a pod, by kind (connect, timeout, reset, 5xx: the pod's own fault)",
            m.upstream_errors.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_retries",
            "Requests retried on another pod",
            m.retries.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_first_choice",
            "Requests routed to their tenant's first-choice pod (divided by routed: cache affinity)",
            m.first_choice.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_pods",
            "Known pods by state (ready, warming, draining, unreachable, ejected)",
            m.pods.clone(),
        );
        m.registry.register(
            "tenantscale_gateway_redis_up",
            "1 while admission is shared through Redis, 0 while this replica decides alone",
            m.redis_up.clone(),
        );
        m.series = m
            .tenant_ids
            .iter()
            .map(|id| {
                let label = TenantLabel {
                    tenant_id: id.clone(),
                };
                TenantSeries {
                    admitted: admitted.get_or_create(&label).clone(),
                    in_flight: in_flight.get_or_create(&label).clone(),
                    latency: latency.get_or_create(&label).clone(),
                }
            })
            .collect();
        m
    }

    pub fn admitted(&self, tenant: usize) {
        let s = &self.series[tenant];
        s.admitted.inc();
        s.in_flight.inc();
    }

    pub fn finished(&self, tenant: usize, seconds: f64) {
        let s = &self.series[tenant];
        s.in_flight.dec();
        s.latency.observe(seconds);
    }

    pub fn refused(&self, tenant: usize, why: Refusal) {
        self.rejected
            .get_or_create(&ReasonLabel {
                tenant_id: self.tenant_ids[tenant].clone(),
                reason: why.code(),
            })
            .inc();
    }

    /// The `routed` series of `pod`, to keep and increment without a lookup.
    pub fn routed(&self, pod: &PodLabel) -> Counter {
        self.routed.get_or_create(pod).clone()
    }

    pub fn ejected(&self, pod: &PodLabel) {
        self.ejections.get_or_create(pod).inc();
    }

    pub fn upstream_error(&self, pod: &PodLabel, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&PodErrorLabel {
                pod: pod.pod.clone(),
                kind,
            })
            .inc();
    }

    /// The exposition, after setting the gauges read at scrape time: each pod's outstanding
    /// requests and the number of pods per state.
    pub fn encode(&self, pod_loads: &[(PodLabel, u32)], pod_states: &[&'static str]) -> String {
        for (label, load) in pod_loads {
            self.pod_in_flight
                .get_or_create(label)
                .set(i64::from(*load));
        }
        for state in ["ready", "warming", "draining", "unreachable", "ejected"] {
            let n = pod_states.iter().filter(|s| **s == state).count();
            self.pods.get_or_create(&StateLabel { state }).set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        tenantscale_core::text::to_prometheus_text(&out)
    }
}

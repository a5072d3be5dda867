//! Policies under comparison, and the adapters that feed the core engine what a real
//! autoscaler would see.

use crate::model::{PodView, Scrape};
use crate::scenario::Control;
use tenantscale_core::catalog::Catalog;
use tenantscale_core::scaling::hpa::{HpaState, MetricInput};
use tenantscale_core::scaling::replica::{Observation, PodInfo, PodPhase, PodSample};
use tenantscale_core::scaling::spec::{ControllerSettings, HpaConfig, HpaSpec, Metric};
use tenantscale_core::scaling::tenant_aware::{
    QUEUE_DEPTH_METRIC, TenantAwareConfig, TenantAwareState, TenantDemand, queue_depth_per_tenant,
};

/// Which data plane a policy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// tenantscale: admission, bounded-load routing, fair queues.
    Fair,
    /// The seed's world: no admission, random routing, one FIFO per pod.
    Naive,
}

/// A policy to simulate.
#[derive(Debug, Clone)]
pub enum Policy {
    /// A fixed pool of N pods (tenantscale's data plane).
    Static(i32),
    /// Stock HPA on CPU utilization 70 % (CPU = busy slot fraction), naive data plane.
    HpaCpu,
    /// The seed's HPA spec on `queue_depth_per_tenant`, naive data plane.
    HpaQueue,
    /// tenantscale's tenant-aware policy with its data plane.
    TenantAware,
    /// An HPA spec from a file, on tenantscale's data plane.
    Hpa { name: String, spec: Box<HpaSpec> },
}

/// The seed's HorizontalPodAutoscaler (its behavior block verbatim).
pub fn seed_hpa_spec(min: i32, max: i32) -> HpaSpec {
    serde_json::from_value(serde_json::json!({
        "minReplicas": min, "maxReplicas": max,
        "metrics": [
            {"type": "Pods", "pods": {"metric": {"name": QUEUE_DEPTH_METRIC}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
        ],
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 100, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min", "policies": [
                {"type": "Pods", "value": 2, "periodSeconds": 120}, {"type": "Percent", "value": 10, "periodSeconds": 120}]}
        }
    }))
    .expect("the seed's spec is valid")
}

/// A stock CPU HPA (no behavior: Kubernetes' legacy path).
pub fn cpu_hpa_spec(min: i32, max: i32) -> HpaSpec {
    serde_json::from_value(serde_json::json!({
        "minReplicas": min, "maxReplicas": max,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    }))
    .expect("valid")
}

impl Policy {
    /// The policy's name in reports.
    pub fn name(&self) -> String {
        match self {
            Policy::Static(n) => format!("static-{n}"),
            Policy::HpaCpu => "hpa-cpu".into(),
            Policy::HpaQueue => "hpa-queue".into(),
            Policy::TenantAware => "tenant-aware".into(),
            Policy::Hpa { name, .. } => name.clone(),
        }
    }

    /// The data plane it runs on.
    pub fn plane(&self) -> Plane {
        match self {
            Policy::HpaCpu | Policy::HpaQueue => Plane::Naive,
            _ => Plane::Fair,
        }
    }

    /// Checks that the simulator can feed every metric of an HPA spec.
    pub fn check(&self, catalog: &Catalog) -> Result<(), String> {
        if let Policy::Hpa { name, spec } = self {
            let config = spec
                .resolve(ControllerSettings::default())
                .map_err(|e| format!("{name}: {e}"))?;
            for m in &config.metrics {
                match m {
                    Metric::ResourceUtilization { resource, .. }
                    | Metric::ResourceAverageValue { resource, .. }
                        if resource == "cpu" => {}
                    Metric::Pods { name: metric, .. } if metric == QUEUE_DEPTH_METRIC => {}
                    other => {
                        return Err(format!(
                            "{name}: the simulator can feed cpu and {QUEUE_DEPTH_METRIC} metrics, not {:?}",
                            other.key()
                        ));
                    }
                }
            }
        }
        if let Policy::Static(n) = self {
            // 0 means "sized to the other policies' peak".
            if *n < 0 || *n > 10_000 {
                return Err(format!("static: {n} pods is not in [1, 10000]"));
            }
        }
        let _ = catalog;
        Ok(())
    }
}

/// One autoscaler decision and the inputs it was made from (for verification).
#[derive(Debug, Clone)]
pub enum DecisionRecord {
    Hpa {
        now: f64,
        current: i32,
        observations: Vec<Option<Observation>>,
        desired: i32,
    },
    TenantAware {
        now: f64,
        current: i32,
        demands: Vec<TenantDemand>,
        desired: i32,
    },
}

/// A policy's decision state during a run.
pub enum Autoscaler {
    Static(i32),
    Hpa {
        config: Box<HpaConfig>,
        state: HpaState,
    },
    TenantAware {
        config: Box<TenantAwareConfig>,
        state: Box<TenantAwareState>,
    },
}

impl Autoscaler {
    /// The decision state for `policy` on `catalog`'s pool.
    pub fn new(policy: &Policy, catalog: &Catalog) -> Self {
        let pool = &catalog.pool;
        let hpa = |spec: HpaSpec| Autoscaler::Hpa {
            config: Box::new(
                spec.resolve(ControllerSettings::default())
                    .expect("checked before the run"),
            ),
            state: HpaState::default(),
        };
        match policy {
            Policy::Static(n) => Autoscaler::Static(*n),
            Policy::HpaCpu => hpa(cpu_hpa_spec(pool.min_replicas, pool.max_replicas)),
            Policy::HpaQueue => hpa(seed_hpa_spec(pool.min_replicas, pool.max_replicas)),
            Policy::Hpa { spec, .. } => hpa((**spec).clone()),
            Policy::TenantAware => Autoscaler::TenantAware {
                config: Box::new(pool.tenant_aware.clone()),
                state: Box::default(),
            },
        }
    }

    pub fn is_static(&self) -> bool {
        matches!(self, Autoscaler::Static(_))
    }

    /// Replicas at t = 0: a running pool is already sized for the load it carries, so an
    /// autoscaled pool starts with the pods that `concurrency` needs at 70 % of its slots,
    /// within the policy's bounds.
    pub fn initial_replicas(&self, catalog: &Catalog, concurrency: f64) -> i32 {
        let pool = &catalog.pool;
        let needed = (concurrency / (f64::from(pool.slots_per_pod) * 0.7)).ceil() as i32;
        match self {
            Autoscaler::Static(n) => *n,
            Autoscaler::Hpa { config, .. } => {
                needed.clamp(config.min_replicas.max(1), config.max_replicas)
            }
            Autoscaler::TenantAware { config, .. } => {
                needed.clamp(config.min_replicas, config.max_replicas)
            }
        }
    }

    /// (scrape interval, sync period) in seconds.
    pub fn periods(&self, control: &Control) -> (f64, f64) {
        match self {
            Autoscaler::TenantAware { .. } => {
                (control.fast_scrape_seconds, control.fast_sync_seconds)
            }
            _ => (control.hpa_scrape_seconds, control.hpa_sync_seconds),
        }
    }

    /// Decides the replica count from the last scrape; `None` for a static pool.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        now: f64,
        current: i32,
        catalog: &Catalog,
        scrape: &Scrape,
        pods: &[PodView],
        cpu: &[Option<f64>],
        record: Option<&mut Vec<DecisionRecord>>,
    ) -> Option<i32> {
        match self {
            Autoscaler::Static(_) => None,
            Autoscaler::Hpa { config, state } => {
                let depth = queue_depth_per_tenant(&tenant_demands(catalog, scrape));
                let observations = hpa_observations(config, scrape, pods, cpu, depth, now);
                let d = config.reconcile(
                    state,
                    now,
                    current,
                    current,
                    MetricInput::Observations(&observations),
                );
                if let Some(r) = record {
                    r.push(DecisionRecord::Hpa {
                        now,
                        current,
                        observations,
                        desired: d.outcome.desired,
                    });
                }
                Some(d.outcome.desired)
            }
            Autoscaler::TenantAware { config, state } => {
                let demands = tenant_demands(catalog, scrape);
                let d = config.decide(state, now, current, &demands);
                if let Some(r) = record {
                    r.push(DecisionRecord::TenantAware {
                        now,
                        current,
                        demands,
                        desired: d.outcome.desired,
                    });
                }
                Some(d.outcome.desired)
            }
        }
    }
}

/// What tenantscale's autoscaler reads from the pods' metrics, per tenant.
pub fn tenant_demands(catalog: &Catalog, scrape: &Scrape) -> Vec<TenantDemand> {
    catalog
        .tenants
        .iter()
        .enumerate()
        .map(|(t, tenant)| TenantDemand {
            in_flight: scrape.in_service.get(t).copied().unwrap_or(0.0),
            queued: f64::from(scrape.backlog.get(t).copied().unwrap_or(0)),
            arrival_rate: scrape.arrival_rate.get(t).copied().unwrap_or(0.0),
            mean_service_seconds: scrape.mean_service.get(t).copied().unwrap_or(0.0),
            max_share: tenant.max_share,
        })
        .collect()
}

/// The pods as the HPA controller sees them, with each metric's samples.
fn hpa_observations(
    config: &HpaConfig,
    scrape: &Scrape,
    pods: &[PodView],
    cpu: &[Option<f64>],
    queue_depth_per_tenant: f64,
    now: f64,
) -> Vec<Option<Observation>> {
    let age = (now - scrape.at).max(0.0);
    let info = |p: &PodView| PodInfo {
        ready: p.ready,
        phase: if p.starting {
            PodPhase::Pending
        } else {
            PodPhase::Running
        },
        deleting: p.draining,
        started_seconds_ago: p.started_seconds_ago,
        ready_transition_seconds_ago: if p.ready {
            p.ready_seconds_ago
        } else {
            p.started_seconds_ago
        },
    };
    let queue_depth = (queue_depth_per_tenant * 1000.0).round() as i64;
    config
        .metrics
        .iter()
        .map(|m| {
            let samples = pods
                .iter()
                .zip(cpu)
                .map(|(p, c)| {
                    let value_milli = match m {
                        Metric::Pods { .. } => {
                            (p.ready && p.ready_seconds_ago >= age).then_some(queue_depth)
                        }
                        _ => c.map(|c| (c * 1000.0).round() as i64),
                    };
                    PodSample {
                        pod: info(p),
                        request_milli: Some(1000),
                        value_milli,
                        metric_age_seconds: age,
                        metric_window_seconds: 15.0,
                    }
                })
                .collect();
            Some(Observation::PodSamples(samples))
        })
        .collect()
}

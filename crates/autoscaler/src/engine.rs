//! The decision step: the catalog's policy (`tenant-aware` or `hpa`) from `tenantscale-core`,
//! its memory between decisions (persistable), and a reason for every decision.

use crate::signals::PoolSignals;
use serde::{Deserialize, Serialize};
use tenantscale_core::catalog::{Catalog, PolicyKind};
use tenantscale_core::scaling::behavior::ConditionType;
use tenantscale_core::scaling::hpa::{HpaState, MetricInput};
use tenantscale_core::scaling::replica::{Observation, PodInfo, PodPhase, PodSample};
use tenantscale_core::scaling::spec::{HpaConfig, Metric};
use tenantscale_core::scaling::tenant_aware::{
    QUEUE_DEPTH_METRIC, TenantAwareConfig, TenantAwareState,
};

/// A pod as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub ready: bool,
    /// Being scaled down.
    pub draining: bool,
    pub started_seconds_ago: f64,
    /// Since its readiness last changed.
    pub ready_seconds_ago: f64,
}

/// What the engine remembers between decisions: stabilization windows, scale events, the
/// tenant-aware policy's demand samples. Times are Unix seconds, so a restarted autoscaler
/// continues the same windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    #[serde(default)]
    pub hpa: HpaState,
    #[serde(default)]
    pub tenant_aware: TenantAwareState,
}

/// One decision and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Unix seconds.
    pub at: f64,
    pub current: i32,
    pub desired: i32,
    pub reason: String,
}

pub enum Engine {
    TenantAware(Box<TenantAwareConfig>),
    Hpa(Box<HpaConfig>),
}

impl Engine {
    pub fn for_catalog(catalog: &Catalog) -> Self {
        match catalog.pool.policy {
            PolicyKind::TenantAware => {
                Self::TenantAware(Box::new(catalog.pool.tenant_aware.clone()))
            }
            PolicyKind::Hpa => Self::Hpa(Box::new(catalog.pool.hpa.clone())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::TenantAware(_) => "tenant-aware",
            Self::Hpa(_) => "hpa",
        }
    }

    pub fn bounds(&self) -> (i32, i32) {
        match self {
            Self::TenantAware(c) => (c.min_replicas, c.max_replicas),
            Self::Hpa(c) => (c.min_replicas, c.max_replicas),
        }
    }

    /// Metrics of an `hpa` policy that the autoscaler cannot read from pods (it computes
    /// only `queue_depth_per_tenant`); they count as failed, as a missing metrics API does.
    pub fn unsupported_metrics(&self) -> Vec<String> {
        match self {
            Self::TenantAware(_) => vec![],
            Self::Hpa(c) => c
                .metrics
                .iter()
                .filter(|m| !matches!(m, Metric::Pods { name, .. } if name == QUEUE_DEPTH_METRIC))
                .map(|m| m.key().to_string())
                .collect(),
        }
    }

    /// Decides the replica count at Unix time `now` for a pool of `pods` (the target's
    /// `spec.replicas` is `current`).
    pub fn decide(
        &self,
        state: &mut EngineState,
        now: f64,
        current: i32,
        pods: &[PodView],
        signals: &PoolSignals,
    ) -> Decision {
        match self {
            Self::TenantAware(config) => {
                let d = config.decide(&mut state.tenant_aware, now, current, &signals.demands);
                let mut reason = format!(
                    "tenant demand {:.1} (raw {:.1}, {} tenant(s) capped at their share) → {} pods{}",
                    d.capped_demand,
                    d.raw_demand,
                    d.capped_tenants,
                    if d.panicking {
                        d.panic_desired.max(d.stable_desired)
                    } else {
                        d.stable_desired
                    },
                    if d.panicking {
                        format!(", panic mode ({} s window)", config.panic_window_seconds)
                    } else {
                        String::new()
                    },
                );
                append_limit(&mut reason, &state.tenant_aware.hpa);
                Decision {
                    at: now,
                    current,
                    desired: d.outcome.desired,
                    reason,
                }
            }
            Self::Hpa(config) => {
                let observations: Vec<Option<Observation>> = config
                    .metrics
                    .iter()
                    .map(|m| match m {
                        Metric::Pods { name, .. } if name == QUEUE_DEPTH_METRIC => {
                            Some(Observation::PodSamples(queue_depth_samples(pods, signals)))
                        }
                        _ => None,
                    })
                    .collect();
                let d = config.reconcile(
                    &mut state.hpa,
                    now,
                    current,
                    current,
                    MetricInput::Observations(&observations),
                );
                let mut reason = match d.outcome.recommendation {
                    Some(r) => format!(
                        "{QUEUE_DEPTH_METRIC} {:.2} → recommendation {r} pods",
                        signals.queue_depth_per_tenant
                    ),
                    None => state
                        .hpa
                        .conditions
                        .get(ConditionType::ScalingActive)
                        .map_or("no recommendation".into(), |c| {
                            format!("no recommendation: {} ({})", c.reason, c.message)
                        }),
                };
                append_limit(&mut reason, &state.hpa);
                Decision {
                    at: now,
                    current,
                    desired: d.outcome.desired,
                    reason,
                }
            }
        }
    }
}

/// Adds the behavior stage's limit (stabilization, rate policy, min/max) when one applied.
fn append_limit(reason: &mut String, state: &HpaState) {
    if let Some(c) = state.conditions.get(ConditionType::ScalingLimited)
        && c.status == "True"
    {
        reason.push_str(&format!("; limited: {} ({})", c.reason, c.message));
    } else if let Some(c) = state.conditions.get(ConditionType::AbleToScale)
        && c.reason != "SucceededGetScale"
        && c.reason != "SucceededRescale"
    {
        reason.push_str(&format!("; {} ({})", c.reason, c.message));
    }
}

/// Every pod's sample of `queue_depth_per_tenant`: the pool-wide value, as the seed's
/// prometheus-adapter rule reports it for each pod.
fn queue_depth_samples(pods: &[PodView], signals: &PoolSignals) -> Vec<PodSample> {
    let value = (signals.queue_depth_per_tenant * 1000.0).round() as i64;
    pods.iter()
        .map(|p| PodSample {
            pod: PodInfo {
                ready: p.ready,
                phase: PodPhase::Running,
                deleting: p.draining,
                started_seconds_ago: p.started_seconds_ago,
                ready_transition_seconds_ago: p.ready_seconds_ago,
            },
            request_milli: None,
            value_milli: p.ready.then_some(value),
            metric_age_seconds: 0.0,
            metric_window_seconds: 1.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::PoolSignals;
    use tenantscale_core::scaling::tenant_aware::TenantDemand;

    fn catalog(pool: &str) -> Catalog {
        Catalog::parse(&format!(
            "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{weight: 3, share: 0.9, maxShare: 0.3}}\n\
             tenants:\n  - {{id: a, tier: gold}}\n  - {{id: b, tier: gold}}\npool:\n{pool}"
        ))
        .unwrap()
        .catalog
    }

    fn demand(n: f64) -> PoolSignals {
        PoolSignals {
            demands: vec![
                TenantDemand {
                    in_flight: n,
                    max_share: 0.3,
                    ..TenantDemand::default()
                };
                2
            ],
            queue_depth_per_tenant: 0.0,
        }
    }

    #[test]
    fn the_catalogs_scale_down_rate_limit_holds_between_decisions() {
        let c = catalog(
            "  minReplicas: 1\n  maxReplicas: 4\n  slotsPerPod: 2\n  tenantAware:\n    stableWindowSeconds: 10\n    panicWindowSeconds: 2\n    behavior:\n      scaleDown: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 1, periodSeconds: 600}]}\n",
        );
        let engine = Engine::for_catalog(&c);
        let mut state = EngineState::default();
        let mut current = 4;
        let mut t = 1000.0;
        let mut changes = vec![];
        for step in 0..60 {
            let load = if step < 20 { 4.0 } else { 0.0 };
            let d = engine.decide(&mut state, t, current, &[], &demand(load));
            if d.desired != current {
                changes.push((step, d.desired));
                current = d.desired;
            }
            t += 0.5;
        }
        assert_eq!(changes.len(), 1, "one pod down per 600 s: {changes:?}");
        assert_eq!(current, 3);
    }
}

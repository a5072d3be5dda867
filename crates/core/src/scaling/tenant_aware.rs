//! The `tenant-aware` policy: size the pool for the demand each tenant is entitled to.
//!
//! Per tenant, demand is the larger of its concurrency now (in-flight + queued) and its
//! arrival rate × mean service time (Little's law), capped at its entitlement: `maxShare ×
//! maxReplicas × slotsPerPod` concurrent requests. A tenant flooding the pool past its cap
//! therefore never buys replicas that others would pay for.
//!
//! The capped total is averaged over a stable window (60 s) and a panic window (6 s), as
//! Knative's KPA does. `desired = ceil(demand / (slotsPerPod × targetUtilization))`. When the
//! panic window asks for at least `panicThreshold ×` the current replicas, the policy panics:
//! it follows the short window at once and never recommends fewer replicas until a whole
//! stable window passes without the condition. The recommendation then goes through the
//! same behavior stage (stabilization, rate policies, min/max) as the `hpa` policy.

use super::behavior::{ConditionType, Outcome, Seconds, Stage};
use super::hpa::HpaState;
use super::spec::{Behavior, BehaviorSpec, ControllerSettings, HpaSpec, SpecError};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the autoscaler observed of one tenant (summed over pods).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantDemand {
    /// Requests being served now.
    pub in_flight: f64,
    /// Requests waiting in the tenant's queues.
    pub queued: f64,
    /// Arrivals per second.
    pub arrival_rate: f64,
    /// Mean service time in seconds.
    pub mean_service_seconds: f64,
    /// The most of the pool this tenant may use, in (0, 1].
    pub max_share: f64,
}

impl TenantDemand {
    /// Sets the arrival rate and, by Little's law (concurrency in service = arrivals ×
    /// service time), the mean service time from the busy-seconds rate.
    pub fn set_rates(&mut self, arrivals_per_second: f64, busy_seconds_per_second: f64) {
        self.arrival_rate = arrivals_per_second;
        self.mean_service_seconds = if arrivals_per_second > 0.0 {
            busy_seconds_per_second / arrivals_per_second
        } else {
            0.0
        };
    }

    /// Concurrency the tenant needs now: the larger of what it holds and what it brings.
    pub fn raw(&self) -> f64 {
        (self.in_flight + self.queued)
            .max(self.arrival_rate * self.mean_service_seconds)
            .max(0.0)
    }
}

/// The seed's HPA metric (served by its prometheus-adapter rule for every pod).
pub const QUEUE_DEPTH_METRIC: &str = "queue_depth_per_tenant";

/// The seed's `queue_depth_per_tenant`: requests queued over all pods, divided by the tenants
/// with work (queued, or arriving). The simulator and the live autoscaler both feed it to the
/// `hpa` policy.
pub fn queue_depth_per_tenant(demands: &[TenantDemand]) -> f64 {
    let active = demands
        .iter()
        .filter(|d| d.queued > 0.0 || d.arrival_rate > 0.0)
        .count();
    if active == 0 {
        return 0.0;
    }
    demands.iter().map(|d| d.queued).sum::<f64>() / active as f64
}

/// [`queue_depth_per_tenant`] in PromQL, over the series matching `selector` (e.g.
/// `namespace="rag"`), with arrivals as `rate(...[window])`. The seed's adapter rule,
/// `avg(sum(tenant_queue_depth) by (tenant_id))`, divides by every tenant with a series, idle
/// ones too; this divides by the tenants with work, as the simulator and the autoscaler do.
/// With no active tenant the result is empty (read it as 0).
pub fn queue_depth_promql(selector: &str, window: &str) -> String {
    format!(
        "sum(tenant_queue_depth{{{selector}}}) / count(\
         sum by (tenant_id) (tenant_queue_depth{{{selector}}}) > 0 \
         or sum by (tenant_id) (rate(total_queries_processed_total{{{selector}}}[{window}])) > 0)"
    )
}

/// Settings of the tenant-aware policy.
///
/// Defaults (via [`TenantAwareConfig::new`]): target utilization 0.7, stable window 60 s,
/// panic window 6 s, panic threshold 2.0, and the behavior of
/// [`TenantAwareConfig::default_behavior`].
#[derive(Debug, Clone, PartialEq)]
pub struct TenantAwareConfig {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub slots_per_pod: u32,
    pub target_utilization: f64,
    pub stable_window_seconds: f64,
    pub panic_window_seconds: f64,
    pub panic_threshold: f64,
    pub behavior: Behavior,
    pub settings: ControllerSettings,
}

impl TenantAwareConfig {
    /// A config with the documented defaults.
    pub fn new(
        min_replicas: i32,
        max_replicas: i32,
        slots_per_pod: u32,
    ) -> Result<Self, SpecError> {
        Self::with_behavior(
            min_replicas,
            max_replicas,
            slots_per_pod,
            &Self::default_behavior(),
        )
    }

    /// The default behavior stage: scale up at once, by up to 10× per 15 s (Knative's maximum
    /// scale-up rate; demand-based sizing does not overshoot the way a utilization ratio can),
    /// and scale down as Kubernetes does by default (the highest recommendation of the last
    /// 300 s, up to 100 % per 15 s).
    pub fn default_behavior() -> BehaviorSpec {
        serde_json::from_value(serde_json::json!({
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                        "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 15}]}
        }))
        .expect("valid behavior")
    }

    /// A config whose behavior stage is `behavior` (an autoscaling/v2 behavior block).
    pub fn with_behavior(
        min_replicas: i32,
        max_replicas: i32,
        slots_per_pod: u32,
        behavior: &BehaviorSpec,
    ) -> Result<Self, SpecError> {
        if slots_per_pod == 0 {
            return Err(SpecError {
                path: "slotsPerPod".into(),
                message: "must be >= 1".into(),
            });
        }
        let settings = ControllerSettings::default();
        let spec = HpaSpec {
            min_replicas: Some(min_replicas),
            max_replicas,
            metrics: vec![],
            behavior: Some(behavior.clone()),
        };
        let resolved = spec.resolve(settings)?;
        Ok(Self {
            min_replicas: resolved.min_replicas,
            max_replicas,
            slots_per_pod,
            target_utilization: 0.7,
            stable_window_seconds: 60.0,
            panic_window_seconds: 6.0,
            panic_threshold: 2.0,
            behavior: resolved.behavior.expect("behavior was given"),
            settings,
        })
    }

    /// Concurrent requests a tenant of `max_share` is entitled to at full scale.
    pub fn entitlement(&self, max_share: f64) -> f64 {
        max_share * f64::from(self.max_replicas) * f64::from(self.slots_per_pod)
    }

    fn replicas_for(&self, demand: f64) -> i32 {
        let per_pod = f64::from(self.slots_per_pod) * self.target_utilization;
        (demand / per_pod).ceil().clamp(0.0, f64::from(i32::MAX)) as i32
    }
}

/// A time-stamped capped demand total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DemandSample {
    pub t: Seconds,
    pub demand: f64,
}

/// What the tenant-aware policy remembers between decisions (persistable).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantAwareState {
    #[serde(flatten)]
    pub hpa: HpaState,
    /// Capped demand totals inside the stable window, oldest first.
    #[serde(default)]
    pub samples: VecDeque<DemandSample>,
    /// When the panic condition last held, while panicking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_since: Option<Seconds>,
    /// The highest recommendation made during the current panic.
    #[serde(default)]
    pub panic_peak: i32,
}

/// One decision, with the numbers behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantAwareDecision {
    pub outcome: Outcome,
    /// Σ demand before capping.
    pub raw_demand: f64,
    /// Σ demand after capping each tenant at its entitlement.
    pub capped_demand: f64,
    /// Tenants whose demand exceeded their entitlement.
    pub capped_tenants: usize,
    pub stable_desired: i32,
    pub panic_desired: i32,
    pub panicking: bool,
}

impl TenantAwareConfig {
    /// Decides the replica count at `now` for a pool at `current` replicas.
    pub fn decide(
        &self,
        state: &mut TenantAwareState,
        now: Seconds,
        current: i32,
        tenants: &[TenantDemand],
    ) -> TenantAwareDecision {
        let (mut raw_demand, mut capped_demand, mut capped_tenants) = (0.0, 0.0, 0);
        for t in tenants {
            let raw = t.raw();
            let cap = self.entitlement(t.max_share);
            raw_demand += raw;
            if raw > cap {
                capped_tenants += 1;
            }
            capped_demand += raw.min(cap);
        }

        state.samples.push_back(DemandSample {
            t: now,
            demand: capped_demand,
        });
        while state
            .samples
            .front()
            .is_some_and(|s| s.t <= now - self.stable_window_seconds)
        {
            state.samples.pop_front();
        }
        let average_since = |cutoff: f64| {
            let (sum, n) = state
                .samples
                .iter()
                .filter(|s| s.t > cutoff)
                .fold((0.0, 0usize), |(sum, n), s| (sum + s.demand, n + 1));
            sum / n.max(1) as f64
        };
        let stable_desired = self.replicas_for(average_since(now - self.stable_window_seconds));
        let panic_desired = self.replicas_for(average_since(now - self.panic_window_seconds));

        if current > 0 && f64::from(panic_desired) >= self.panic_threshold * f64::from(current) {
            if state.panic_since.is_none() {
                state.panic_peak = 0;
            }
            state.panic_since = Some(now);
        } else if state
            .panic_since
            .is_some_and(|since| since + self.stable_window_seconds <= now)
        {
            state.panic_since = None;
            state.panic_peak = 0;
        }
        let panicking = state.panic_since.is_some();
        let recommendation = if panicking {
            // Follow the burst at once; never step down while it lasts. Panic only ever adds
            // to what the stable window asks for.
            state.panic_peak = state
                .panic_peak
                .max(panic_desired)
                .max(stable_desired)
                .max(current);
            state.panic_peak
        } else {
            stable_desired
        };

        let stage = Stage {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            behavior: Some(&self.behavior),
            settings: &self.settings,
        };
        let outcome = stage.reconcile(
            &mut state.hpa.history,
            &mut state.hpa.conditions,
            now,
            current,
            |conditions| {
                conditions.set(
                    ConditionType::ScalingActive,
                    true,
                    "ValidMetricFound",
                    if panicking {
                        "panic: following the short window"
                    } else {
                        "tenant demand within entitlements"
                    },
                );
                Some(recommendation)
            },
        );
        TenantAwareDecision {
            outcome,
            raw_demand,
            capped_demand,
            capped_tenants,
            stable_desired,
            panic_desired,
            panicking,
        }
    }
}

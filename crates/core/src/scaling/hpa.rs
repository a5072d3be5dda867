//! The `hpa` policy: Kubernetes' HorizontalPodAutoscaler controller, one reconcile at a time.

use super::behavior::{ConditionType, Conditions, Outcome, ScalingHistory, Seconds, Stage};
use super::replica::{CalcContext, MetricValue, Observation, replicas_for_metric};
use super::spec::HpaConfig;
use serde::{Deserialize, Serialize};

/// Everything the HPA controller remembers about one autoscaler between reconciles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HpaState {
    #[serde(flatten)]
    pub history: ScalingHistory,
    #[serde(default)]
    pub conditions: Conditions,
}

/// Where a reconcile's prenormalized recommendation comes from.
#[derive(Debug, Clone, Copy)]
pub enum MetricInput<'a> {
    /// Observations index-aligned with the config's metrics; `None` = the metric's source
    /// returned nothing.
    Observations(&'a [Option<Observation>]),
    /// A raw recommendation (`prenormalizedDesiredReplicas`) supplied by the caller.
    Recommendation(i32),
}

/// One reconcile's decision and the status it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaDecision {
    pub outcome: Outcome,
    /// `status.currentMetrics`, index-aligned with the metrics; empty when none were read.
    pub current_metrics: Vec<Option<MetricValue>>,
}

impl HpaConfig {
    /// One `reconcileAutoscaler` pass at `now` for a target with `spec.replicas = current` and
    /// `status.replicas = status_replicas`.
    pub fn reconcile(
        &self,
        state: &mut HpaState,
        now: Seconds,
        current: i32,
        status_replicas: i32,
        input: MetricInput<'_>,
    ) -> HpaDecision {
        let stage = Stage {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            behavior: self.behavior.as_ref(),
            settings: &self.settings,
        };
        let mut current_metrics = Vec::new();
        let outcome = stage.reconcile(
            &mut state.history,
            &mut state.conditions,
            now,
            current,
            |conditions| match input {
                MetricInput::Recommendation(r) => {
                    conditions.set(
                        ConditionType::ScalingActive,
                        true,
                        "ValidMetricFound",
                        "the HPA was given a raw recommendation",
                    );
                    Some(r)
                }
                MetricInput::Observations(observations) => {
                    let (proposal, statuses) = self.replicas_for_metrics(
                        conditions,
                        current,
                        status_replicas,
                        observations,
                    );
                    current_metrics = statuses;
                    proposal
                }
            },
        );
        HpaDecision {
            outcome,
            current_metrics,
        }
    }

    /// `computeReplicasForMetrics`: the maximum over metrics. A failed metric is tolerated
    /// only when the others still ask for at least the current count.
    fn replicas_for_metrics(
        &self,
        conditions: &mut Conditions,
        spec_replicas: i32,
        status_replicas: i32,
        observations: &[Option<Observation>],
    ) -> (Option<i32>, Vec<Option<MetricValue>>) {
        let cx = CalcContext {
            spec_replicas,
            status_replicas,
            tolerances: self.tolerances,
            settings: &self.settings,
        };
        let mut statuses = vec![None; self.metrics.len()];
        let mut replicas = 0;
        let mut invalid = 0;
        let mut first_failure = None;
        for (i, metric) in self.metrics.iter().enumerate() {
            let result = match observations.get(i).and_then(Option::as_ref) {
                Some(obs) => replicas_for_metric(metric, obs, cx),
                None => replicas_for_metric(metric, &Observation::PodSamples(Vec::new()), cx),
            };
            match result {
                Ok((proposal, status)) => {
                    statuses[i] = Some(status);
                    if replicas == 0 || proposal > replicas {
                        replicas = proposal;
                    }
                }
                Err(failure) => {
                    first_failure.get_or_insert(failure);
                    invalid += 1;
                }
            }
        }
        if invalid >= self.metrics.len() || (invalid > 0 && replicas < spec_replicas) {
            if let Some(f) = first_failure {
                conditions.set(ConditionType::ScalingActive, false, f.reason, f.message);
            }
            return (None, statuses);
        }
        conditions.set(
            ConditionType::ScalingActive,
            true,
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count",
        );
        (Some(replicas), statuses)
    }
}

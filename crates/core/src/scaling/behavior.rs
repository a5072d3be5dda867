//! Everything Kubernetes' HPA controller does after the metrics have spoken: the
//! currentReplicas guards, stabilization windows, rate policies, min/max clamping, the
//! conditions that explain them, and the history that must survive between reconciles.
//!
//! This is the stage the `hpa` policy and the `tenant-aware` policy share
//! (`reconcileAutoscaler`, `normalizeDesiredReplicas[WithBehaviors]` in
//! kubernetes/pkg/controller/podautoscaler/horizontal.go).

use super::spec::{Behavior, ControllerSettings, PolicyKind, ScalingRules, SelectPolicy};
use serde::{Deserialize, Serialize};

/// Seconds on the caller's clock. The engine never reads a clock itself.
pub type Seconds = f64;

/// An unstabilized recommendation the controller remembered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub t: Seconds,
    pub replicas: i32,
}

/// A past rescale, used by rate policies. `change` is the absolute replica change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleEvent {
    pub t: Seconds,
    pub change: i32,
}

/// The controller's memory of one autoscaler. Kubernetes keeps this in process memory and
/// loses it on restart; here it is a value the caller may persist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingHistory {
    /// `None`: no entry yet; the first reconcile seeds it with the current replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendations: Option<Vec<Recommendation>>,
    #[serde(default)]
    pub scale_up_events: Vec<ScaleEvent>,
    #[serde(default)]
    pub scale_down_events: Vec<ScaleEvent>,
}

/// HPA condition types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    AbleToScale,
    ScalingActive,
    ScalingLimited,
}

/// One status condition, as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// `"True"` or `"False"`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The HPA's status conditions, in the order they were first set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Conditions(pub Vec<Condition>);

impl Conditions {
    /// Sets (or adds) the condition of `kind`, like Kubernetes' `setCondition`.
    pub fn set(&mut self, kind: ConditionType, status: bool, reason: &str, message: impl Into<String>) {
        let status = if status { "True" } else { "False" }.to_string();
        let condition = Condition { kind, status, reason: reason.to_string(), message: message.into() };
        match self.0.iter_mut().find(|c| c.kind == kind) {
            Some(existing) => *existing = condition,
            None => self.0.push(condition),
        }
    }

    /// The condition of `kind`, if set.
    pub fn get(&self, kind: ConditionType) -> Option<&Condition> {
        self.0.iter().find(|c| c.kind == kind)
    }
}

/// The part of an autoscaler's configuration that the post-metrics stage needs.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// `None`: Kubernetes' legacy path.
    pub behavior: Option<&'a Behavior>,
    pub settings: &'a ControllerSettings,
}

/// What one reconcile decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The replica count to set (`current` when it decided not to scale).
    pub desired: i32,
    /// The prenormalized recommendation, when metrics were evaluated.
    pub recommendation: Option<i32>,
    /// Whether the scale target was changed.
    pub rescaled: bool,
}

impl Stage<'_> {
    /// One `reconcileAutoscaler` pass at time `now` for a target at `current` replicas.
    ///
    /// `compute` evaluates the metrics when the guards let it, and returns the prenormalized
    /// recommendation, or `None` when no usable recommendation exists (it sets the
    /// `ScalingActive` condition that says why).
    pub fn reconcile(
        &self,
        history: &mut ScalingHistory,
        conditions: &mut Conditions,
        now: Seconds,
        current: i32,
        compute: impl FnOnce(&mut Conditions) -> Option<i32>,
    ) -> Outcome {
        conditions.set(
            ConditionType::AbleToScale,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        );
        history.recommendations.get_or_insert_with(|| vec![Recommendation { t: now, replicas: current }]);

        let (desired, recommendation) = if current == 0 {
            conditions.set(
                ConditionType::ScalingActive,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            return Outcome { desired: 0, recommendation: None, rescaled: false };
        } else if current > self.max_replicas {
            (self.max_replicas, None)
        } else if current < self.min_replicas {
            (self.min_replicas, None)
        } else {
            let Some(proposed) = compute(conditions) else {
                return Outcome { desired: current, recommendation: None, rescaled: false };
            };
            let normalized = match self.behavior {
                None => self.normalize_legacy(history, conditions, now, current, proposed),
                Some(b) => self.normalize_with_behavior(b, history, conditions, now, current, proposed),
            };
            (normalized, Some(proposed))
        };

        if desired == current {
            return Outcome { desired: current, recommendation, rescaled: false };
        }
        conditions.set(
            ConditionType::AbleToScale,
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
        if let Some(b) = self.behavior {
            store_scale_event(b, history, now, current, desired);
        }
        Outcome { desired, recommendation, rescaled: true }
    }

    /// `normalizeDesiredReplicas`: no behavior in the spec.
    fn normalize_legacy(
        &self,
        history: &mut ScalingHistory,
        conditions: &mut Conditions,
        now: Seconds,
        current: i32,
        proposed: i32,
    ) -> i32 {
        let recs = history.recommendations.get_or_insert_with(Vec::new);
        let cutoff = now - self.settings.downscale_stabilization_seconds;
        let mut stabilized = proposed;
        let mut old = None;
        for (i, r) in recs.iter().enumerate() {
            if r.t < cutoff {
                old = Some(i);
            } else {
                stabilized = stabilized.max(r.replicas);
            }
        }
        let fresh = Recommendation { t: now, replicas: proposed };
        match old {
            Some(i) => recs[i] = fresh,
            None => recs.push(fresh),
        }
        if stabilized != proposed {
            conditions.set(
                ConditionType::AbleToScale,
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            );
        } else {
            conditions.set(ConditionType::AbleToScale, true, "ReadyForNewScale", "recommended size matches current size");
        }

        let scale_up_limit = (self.settings.scale_up_limit_factor * f64::from(current))
            .max(self.settings.scale_up_limit_minimum) as i32;
        let (max_allowed, max_reason, max_message) = if self.max_replicas > scale_up_limit {
            (scale_up_limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (self.max_replicas, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        let (desired, reason, message) = if stabilized < self.min_replicas {
            (self.min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        } else if stabilized > max_allowed {
            (max_allowed, max_reason, max_message)
        } else {
            (stabilized, "DesiredWithinRange", "the desired count is within the acceptable range")
        };
        conditions.set(ConditionType::ScalingLimited, desired != stabilized, reason, message);
        desired
    }

    /// `normalizeDesiredReplicasWithBehaviors`.
    fn normalize_with_behavior(
        &self,
        behavior: &Behavior,
        history: &mut ScalingHistory,
        conditions: &mut Conditions,
        now: Seconds,
        current: i32,
        proposed: i32,
    ) -> i32 {
        let stabilized = stabilize_with_behavior(behavior, history, now, current, proposed);
        if stabilized != proposed {
            if proposed >= current {
                conditions.set(
                    ConditionType::AbleToScale,
                    true,
                    "ScaleUpStabilized",
                    "recent recommendations were lower than current one, applying the lowest recent recommendation",
                );
            } else {
                conditions.set(
                    ConditionType::AbleToScale,
                    true,
                    "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation",
                );
            }
        } else {
            conditions.set(ConditionType::AbleToScale, true, "ReadyForNewScale", "recommended size matches current size");
        }

        let (desired, reason, message) = if stabilized > current {
            let limit = scale_up_limit(current, history, &behavior.scale_up, now).max(current);
            let (allowed, reason, message) = if self.max_replicas > limit {
                (limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
            } else {
                (self.max_replicas, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
            };
            if stabilized > allowed { (allowed, reason, message) } else { within_range(stabilized) }
        } else if stabilized < current {
            let limit = scale_down_limit(current, history, &behavior.scale_down, now).min(current);
            let (allowed, reason, message) = if self.min_replicas < limit {
                (limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
            } else {
                (self.min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
            };
            if stabilized < allowed { (allowed, reason, message) } else { within_range(stabilized) }
        } else {
            within_range(stabilized)
        };
        conditions.set(ConditionType::ScalingLimited, desired != stabilized, reason, message);
        desired
    }
}

fn within_range(replicas: i32) -> (i32, &'static str, &'static str) {
    (replicas, "DesiredWithinRange", "the desired count is within the acceptable range")
}

/// `stabilizeRecommendationWithBehaviors`: scale up no further than the lowest recommendation
/// in the up-window, down no further than the highest in the down-window; then remember
/// `proposed`, reusing the slot of a recommendation older than both windows.
fn stabilize_with_behavior(
    behavior: &Behavior,
    history: &mut ScalingHistory,
    now: Seconds,
    current: i32,
    proposed: i32,
) -> i32 {
    let up_cutoff = now - behavior.scale_up.stabilization_window_seconds;
    let down_cutoff = now - behavior.scale_down.stabilization_window_seconds;
    let recs = history.recommendations.get_or_insert_with(Vec::new);
    let (mut up, mut down) = (proposed, proposed);
    let mut old = None;
    for (i, r) in recs.iter().enumerate() {
        if r.t > up_cutoff {
            up = up.min(r.replicas);
        }
        if r.t > down_cutoff {
            down = down.max(r.replicas);
        }
        if r.t < up_cutoff && r.t < down_cutoff {
            old = Some(i);
        }
    }
    let fresh = Recommendation { t: now, replicas: proposed };
    match old {
        Some(i) => recs[i] = fresh,
        None => recs.push(fresh),
    }
    current.max(up).min(down)
}

/// Replicas added (or removed) by events inside the last `period` seconds.
fn change_in_period(events: &[ScaleEvent], now: Seconds, period: i32) -> i32 {
    let cutoff = now - f64::from(period);
    events.iter().filter(|e| e.t > cutoff).map(|e| e.change).sum()
}

/// Where a policy period started: undo the changes made inside it.
fn period_start(current: i32, history: &ScalingHistory, now: Seconds, period: i32) -> i32 {
    current - change_in_period(&history.scale_up_events, now, period)
        + change_in_period(&history.scale_down_events, now, period)
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(current: i32, history: &ScalingHistory, rules: &ScalingRules, now: Seconds) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => i32::min,
        SelectPolicy::Max => i32::max,
    };
    let init = if rules.select_policy == SelectPolicy::Min { i32::MAX } else { i32::MIN };
    rules.policies.iter().fold(init, |acc, p| {
        let start = period_start(current, history, now, p.period_seconds);
        let proposed = match p.kind {
            PolicyKind::Pods => start + p.value,
            PolicyKind::Percent => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
        };
        pick(acc, proposed)
    })
}

/// `calculateScaleDownLimitWithBehaviors`.
fn scale_down_limit(current: i32, history: &ScalingHistory, rules: &ScalingRules, now: Seconds) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => i32::max,
        SelectPolicy::Max => i32::min,
    };
    let init = if rules.select_policy == SelectPolicy::Min { i32::MIN } else { i32::MAX };
    rules.policies.iter().fold(init, |acc, p| {
        let start = period_start(current, history, now, p.period_seconds);
        let proposed = match p.kind {
            PolicyKind::Pods => start - p.value,
            PolicyKind::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        };
        pick(acc, proposed)
    })
}

/// `storeScaleEvent`: record a rescale, reusing the slot of an event older than the
/// direction's longest policy period.
fn store_scale_event(behavior: &Behavior, history: &mut ScalingHistory, now: Seconds, from: i32, to: i32) {
    let (events, rules, change) = if to > from {
        (&mut history.scale_up_events, &behavior.scale_up, to - from)
    } else {
        (&mut history.scale_down_events, &behavior.scale_down, from - to)
    };
    let cutoff = now - rules.longest_period();
    let fresh = ScaleEvent { t: now, change };
    match events.iter().rposition(|e| e.t < cutoff) {
        Some(i) => events[i] = fresh,
        None => events.push(fresh),
    }
}

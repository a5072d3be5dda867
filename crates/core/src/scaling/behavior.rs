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
    pub fn set(
        &mut self,
        kind: ConditionType,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
        let status = if status { "True" } else { "False" }.to_string();
        let condition = Condition {
            kind,
            status,
            reason: reason.to_string(),
            message: message.into(),
        };
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
        history.recommendations.get_or_insert_with(|| {
            vec![Recommendation {
                t: now,
                replicas: current,
            }]
        });

        let (desired, recommendation) = if current == 0 {
            conditions.set(
                ConditionType::ScalingActive,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            return Outcome {
                desired: 0,
                recommendation: None,
                rescaled: false,
            };
        } else if current > self.max_replicas {
            (self.max_replicas, None)
        } else if current < self.min_replicas {
            (self.min_replicas, None)
        } else {
            let Some(proposed) = compute(conditions) else {
                return Outcome {
                    desired: current,
                    recommendation: None,
                    rescaled: false,
                };
            };
            let normalized = match self.behavior {
                None => self.normalize_legacy(history, conditions, now, current, proposed),
                Some(b) => {
                    self.normalize_with_behavior(b, history, conditions, now, current, proposed)
                }
            };
            (normalized, Some(proposed))
        };

        if desired == current {
            return Outcome {
                desired: current,
                recommendation,
                rescaled: false,
            };
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
        Outcome {
            desired,
            recommendation,
            rescaled: true,
        }
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
        let stabilized = stabilize_legacy(
            history,
            now,
            self.settings.downscale_stabilization_seconds,
            proposed,
        );
        if stabilized != proposed {
            conditions.set(
                ConditionType::AbleToScale,
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            );
        } else {
            conditions.set(
                ConditionType::AbleToScale,
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
            );
        }

        let scale_up_limit = (self.settings.scale_up_limit_factor * f64::from(current))
            .max(self.settings.scale_up_limit_minimum) as i32;
        let (max_allowed, max_reason, max_message) = if self.max_replicas > scale_up_limit {
            (
                scale_up_limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                self.max_replicas,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        let (desired, reason, message) = if stabilized < self.min_replicas {
            (
                self.min_replicas,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        } else if stabilized > max_allowed {
            (max_allowed, max_reason, max_message)
        } else {
            (
                stabilized,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            )
        };
        conditions.set(
            ConditionType::ScalingLimited,
            desired != stabilized,
            reason,
            message,
        );
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
            conditions.set(
                ConditionType::AbleToScale,
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
            );
        }

        let (desired, reason, message) =
            self.rate_limit(behavior, history, now, current, stabilized);
        conditions.set(
            ConditionType::ScalingLimited,
            desired != stabilized,
            reason,
            message,
        );
        desired
    }

    /// `convertDesiredReplicasWithBehaviorRate`: hold `desired` within the rate policies and
    /// min/max; returns the count and the `ScalingLimited` reason and message.
    fn rate_limit(
        &self,
        behavior: &Behavior,
        history: &ScalingHistory,
        now: Seconds,
        current: i32,
        desired: i32,
    ) -> (i32, &'static str, &'static str) {
        if desired > current {
            let limit = scale_up_limit(current, history, &behavior.scale_up, now).max(current);
            let (allowed, reason, message) = if self.max_replicas > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    self.max_replicas,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > allowed {
                return (allowed, reason, message);
            }
        } else if desired < current {
            let limit = scale_down_limit(current, history, &behavior.scale_down, now).min(current);
            let (allowed, reason, message) = if self.min_replicas < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    self.min_replicas,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < allowed {
                return (allowed, reason, message);
            }
        }
        within_range(desired)
    }
}

fn within_range(replicas: i32) -> (i32, &'static str, &'static str) {
    (
        replicas,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    )
}

/// `stabilizeRecommendation` (legacy path): never go below the highest recommendation of the
/// downscale window; remember `proposed`, reusing the slot of one older than the window.
fn stabilize_legacy(
    history: &mut ScalingHistory,
    now: Seconds,
    window: Seconds,
    proposed: i32,
) -> i32 {
    let recs = history.recommendations.get_or_insert_with(Vec::new);
    let cutoff = now - window;
    let mut stabilized = proposed;
    let mut old = None;
    for (i, r) in recs.iter().enumerate() {
        if r.t < cutoff {
            old = Some(i);
        } else {
            stabilized = stabilized.max(r.replicas);
        }
    }
    let fresh = Recommendation {
        t: now,
        replicas: proposed,
    };
    match old {
        Some(i) => recs[i] = fresh,
        None => recs.push(fresh),
    }
    stabilized
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
    let fresh = Recommendation {
        t: now,
        replicas: proposed,
    };
    match old {
        Some(i) => recs[i] = fresh,
        None => recs.push(fresh),
    }
    current.max(up).min(down)
}

/// Replicas added (or removed) by events inside the last `period` seconds.
fn change_in_period(events: &[ScaleEvent], now: Seconds, period: i32) -> i32 {
    let cutoff = now - f64::from(period);
    events
        .iter()
        .filter(|e| e.t > cutoff)
        .map(|e| e.change)
        .sum()
}

/// Where a policy period started: undo the changes made inside it.
fn period_start(current: i32, history: &ScalingHistory, now: Seconds, period: i32) -> i32 {
    current - change_in_period(&history.scale_up_events, now, period)
        + change_in_period(&history.scale_down_events, now, period)
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(
    current: i32,
    history: &ScalingHistory,
    rules: &ScalingRules,
    now: Seconds,
) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => i32::min,
        SelectPolicy::Max => i32::max,
    };
    let init = if rules.select_policy == SelectPolicy::Min {
        i32::MAX
    } else {
        i32::MIN
    };
    rules.policies.iter().fold(init, |acc, p| {
        let start = period_start(current, history, now, p.period_seconds);
        let proposed = match p.kind {
            PolicyKind::Pods => start + p.value,
            PolicyKind::Percent => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        };
        pick(acc, proposed)
    })
}

/// `calculateScaleDownLimitWithBehaviors`.
fn scale_down_limit(
    current: i32,
    history: &ScalingHistory,
    rules: &ScalingRules,
    now: Seconds,
) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => i32::max,
        SelectPolicy::Max => i32::min,
    };
    let init = if rules.select_policy == SelectPolicy::Min {
        i32::MIN
    } else {
        i32::MAX
    };
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
fn store_scale_event(
    behavior: &Behavior,
    history: &mut ScalingHistory,
    now: Seconds,
    from: i32,
    to: i32,
) {
    let (events, rules, change) = if to > from {
        (&mut history.scale_up_events, &behavior.scale_up, to - from)
    } else {
        (
            &mut history.scale_down_events,
            &behavior.scale_down,
            from - to,
        )
    };
    let cutoff = now - rules.longest_period();
    let fresh = ScaleEvent { t: now, change };
    match events.iter().rposition(|e| e.t < cutoff) {
        Some(i) => events[i] = fresh,
        None => events.push(fresh),
    }
}

/// Ports of the unit tests in kubernetes/pkg/controller/podautoscaler/horizontal_test.go that
/// exercise stabilization, rate policies and event storage directly. "now" is t = 0.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::spec::ScalingPolicy;

    /// `generateScalingRules(pods, podsPeriod, percent, percentPeriod, window)`.
    fn rules(
        pods: i32,
        pods_period: i32,
        percent: i32,
        percent_period: i32,
        window: i32,
    ) -> ScalingRules {
        let mut policies = Vec::new();
        if pods != 0 {
            policies.push(ScalingPolicy {
                kind: PolicyKind::Pods,
                value: pods,
                period_seconds: pods_period,
            });
        }
        if percent != 0 {
            policies.push(ScalingPolicy {
                kind: PolicyKind::Percent,
                value: percent,
                period_seconds: percent_period,
            });
        }
        ScalingRules {
            stabilization_window_seconds: f64::from(window),
            select_policy: SelectPolicy::Max,
            policies,
        }
    }

    /// Kubernetes' defaults (`GenerateHPAScaleUpRules(nil)` / `GenerateHPAScaleDownRules(nil)`),
    /// as the spec module fills them in.
    fn defaults() -> Behavior {
        let spec = crate::scaling::spec::HpaSpec {
            min_replicas: Some(1),
            max_replicas: 10,
            metrics: vec![],
            behavior: Some(Default::default()),
        };
        spec.resolve(ControllerSettings::default())
            .unwrap()
            .behavior
            .unwrap()
    }
    fn default_up() -> ScalingRules {
        defaults().scale_up
    }
    fn default_down() -> ScalingRules {
        defaults().scale_down
    }

    /// `generateEventsUniformDistribution`: events spread over the last `period` seconds,
    /// each in the middle of its segment (Go truncates the offset to whole seconds).
    fn uniform(changes: &[i32], period: i32) -> Vec<ScaleEvent> {
        let segment = f64::from(period) / changes.len() as f64;
        changes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ago = (f64::from(period) - segment * (i as f64 + 1.0) + segment / 2.0).trunc();
                ScaleEvent {
                    t: -ago,
                    change: *c,
                }
            })
            .collect()
    }

    struct RateCase {
        name: &'static str,
        up_events: Vec<ScaleEvent>,
        down_events: Vec<ScaleEvent>,
        min: i32,
        max: i32,
        up: Option<ScalingRules>,
        down: Option<ScalingRules>,
        current: i32,
        desired: i32,
        expected: i32,
        reason: &'static str,
    }

    fn case(
        name: &'static str,
        min: i32,
        max: i32,
        current: i32,
        desired: i32,
        expected: i32,
        reason: &'static str,
    ) -> RateCase {
        RateCase {
            name,
            up_events: vec![],
            down_events: vec![],
            min,
            max,
            up: None,
            down: None,
            current,
            desired,
            expected,
            reason,
        }
    }

    /// Port of `TestScalingWithRules` (convertDesiredReplicasWithBehaviorRate).
    #[test]
    fn scaling_with_rules() {
        let ev = uniform(&[1, 5, 9], 120);
        let cases = vec![
            case(
                "prenormalized desired replicas within range",
                3,
                8,
                5,
                7,
                7,
                "DesiredWithinRange",
            ),
            case(
                "prenormalized desired replicas < minReplicas",
                2,
                8,
                3,
                1,
                2,
                "TooFewReplicas",
            ),
            case(
                "within range when minReplicas is 0",
                0,
                10,
                1,
                0,
                0,
                "DesiredWithinRange",
            ),
            case(
                "maxReplicas is the limit because maxReplicas < scaleUpLimit",
                1,
                10,
                20,
                1000,
                10,
                "TooManyReplicas",
            ),
            case(
                "desired replica count is more than the maximum replica count",
                100,
                150,
                100,
                1000,
                150,
                "TooManyReplicas",
            ),
            RateCase {
                up: Some(rules(0, 0, 1, 60, 0)),
                ..case(
                    "scaleUpLimit < maxReplicas with user policies",
                    1,
                    2000,
                    3,
                    1000,
                    4,
                    "ScaleUpLimit",
                )
            },
            case(
                "scaleUp with default behavior",
                1,
                1000,
                10,
                50,
                20,
                "ScaleUpLimit",
            ),
            RateCase {
                up: Some(rules(100, 60, 100, 60, 0)),
                ..case(
                    "pods policy larger than percent policy",
                    1,
                    1000,
                    10,
                    500,
                    110,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                up: Some(rules(2, 60, 100, 60, 0)),
                ..case(
                    "percent policy larger than pods policy",
                    1,
                    1000,
                    10,
                    500,
                    20,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                up: Some(rules(100, 60, 0, 0, 0)),
                ..case(
                    "large pod policy",
                    1,
                    1000,
                    10,
                    50,
                    50,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                up: Some(rules(10000, 60, 0, 0, 0)),
                ..case(
                    "large percent policy",
                    1,
                    1000,
                    10,
                    50,
                    50,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                up: Some(rules(30, 60, 0, 0, 0)),
                ..case("pod policy limitation", 1, 1000, 10, 50, 40, "ScaleUpLimit")
            },
            RateCase {
                up: Some(rules(0, 0, 200, 60, 0)),
                ..case(
                    "percent policy limitation",
                    1,
                    1000,
                    10,
                    50,
                    30,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                down: Some(rules(20, 60, 1, 60, 300)),
                ..case(
                    "scaleDown percent larger than pods",
                    1,
                    1000,
                    100,
                    2,
                    80,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                down: Some(rules(2, 60, 1, 60, 300)),
                ..case(
                    "scaleDown pods larger than percent",
                    1,
                    1000,
                    100,
                    2,
                    98,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                down: Some(rules(100, 60, 0, 0, 300)),
                ..case(
                    "scaleDown MinReplicas with large pod policy",
                    1,
                    1000,
                    10,
                    0,
                    1,
                    "TooFewReplicas",
                )
            },
            RateCase {
                down: Some(rules(0, 0, 100, 60, 300)),
                ..case(
                    "scaleDown MinReplicas with large percent policy",
                    5,
                    1000,
                    10,
                    2,
                    5,
                    "TooFewReplicas",
                )
            },
            RateCase {
                down: Some(rules(5, 60, 0, 0, 300)),
                ..case(
                    "scaleDown pod policy limitation",
                    1,
                    1000,
                    10,
                    2,
                    5,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                down: Some(rules(0, 0, 50, 60, 300)),
                ..case(
                    "scaleDown percent policy limitation",
                    1,
                    1000,
                    10,
                    5,
                    5,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                up_events: ev.clone(),
                up: Some(rules(300, 60, 0, 0, 0)),
                ..case(
                    "max with large pod policy and events",
                    1,
                    200,
                    100,
                    500,
                    200,
                    "TooManyReplicas",
                )
            },
            RateCase {
                up_events: ev.clone(),
                up: Some(rules(0, 0, 10000, 60, 0)),
                ..case(
                    "max with large percent policy and events",
                    1,
                    200,
                    100,
                    500,
                    200,
                    "TooManyReplicas",
                )
            },
            RateCase {
                up_events: ev.clone(),
                up: Some(rules(5, 120, 0, 0, 0)),
                ..case(
                    "a lot of recent scale up events",
                    1,
                    1000,
                    100,
                    500,
                    100,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                up_events: ev.clone(),
                up: Some(rules(150, 120, 0, 0, 0)),
                ..case(
                    "pod policy and previous scale up events",
                    1,
                    1000,
                    100,
                    500,
                    235,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                up_events: ev.clone(),
                up: Some(rules(0, 0, 200, 120, 0)),
                ..case(
                    "percent policy and previous scale up events",
                    1,
                    1000,
                    100,
                    500,
                    255,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                up_events: uniform(&[4], 120),
                down_events: uniform(&[2], 120),
                up: Some(rules(0, 0, 300, 300, 0)),
                ..case(
                    "percent policy and up and down events",
                    1,
                    1000,
                    6,
                    24,
                    16,
                    "ScaleUpLimit",
                )
            },
            RateCase {
                down_events: ev.clone(),
                ..case(
                    "scaleDown default policy and previous events",
                    1,
                    1000,
                    10,
                    5,
                    5,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                down_events: ev.clone(),
                down: Some(rules(115, 120, 0, 0, 300)),
                ..case(
                    "scaleDown MinReplicas=1 large pod policy and events",
                    1,
                    1000,
                    100,
                    0,
                    1,
                    "TooFewReplicas",
                )
            },
            RateCase {
                down_events: ev.clone(),
                down: Some(rules(130, 120, 0, 0, 300)),
                ..case(
                    "scaleDown MinReplicas large pod policy and events",
                    5,
                    1000,
                    100,
                    0,
                    5,
                    "TooFewReplicas",
                )
            },
            RateCase {
                down_events: ev.clone(),
                down: Some(rules(0, 0, 100, 120, 300)),
                ..case(
                    "scaleDown MinReplicas large percent policy and events",
                    5,
                    1000,
                    100,
                    2,
                    5,
                    "TooFewReplicas",
                )
            },
            RateCase {
                down_events: ev.clone(),
                down: Some(rules(5, 120, 0, 0, 300)),
                ..case(
                    "scaleDown pod policy limitation and events",
                    1,
                    1000,
                    100,
                    2,
                    100,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                down_events: uniform(&[2, 4, 6], 120),
                down: Some(rules(0, 0, 50, 120, 300)),
                ..case(
                    "scaleDown percent policy limitation and events",
                    1,
                    1000,
                    100,
                    0,
                    56,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                up_events: uniform(&[2], 120),
                down_events: uniform(&[4], 120),
                down: Some(rules(0, 0, 50, 180, 0)),
                ..case(
                    "scaleDown percent policy and up and down events",
                    1,
                    1000,
                    10,
                    1,
                    6,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                down_events: uniform(&[10, 10, 10], 120),
                down: Some(rules(0, 0, 10, 120, 300)),
                ..case(
                    "previous events preventing further scale down",
                    1,
                    1000,
                    100,
                    0,
                    100,
                    "ScaleDownLimit",
                )
            },
            RateCase {
                down_events: uniform(&[10, 10, 10], 120),
                down: Some(rules(0, 0, 1000, 120, 300)),
                ..case(
                    "previous events still allowing more scale down",
                    1,
                    1000,
                    10,
                    5,
                    5,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                up_events: uniform(&[8, 12, 9, 11], 120),
                up: Some(rules(1000, 60, 0, 0, 0)),
                ..case(
                    "outdated flag, one policy, up",
                    1,
                    1000,
                    100,
                    200,
                    200,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                up_events: uniform(&[8, 12, 9, 11], 120),
                up: Some(rules(1000, 120, 100, 60, 0)),
                ..case(
                    "not outdated, two policies, up",
                    1,
                    1000,
                    100,
                    200,
                    200,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                up_events: uniform(&[8, 12, 9, 11], 120),
                up: Some(rules(1000, 30, 100, 60, 0)),
                ..case(
                    "outdated, two policies, up",
                    1,
                    1000,
                    100,
                    200,
                    200,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                down_events: uniform(&[8, 12, 9, 11], 120),
                down: Some(rules(1000, 60, 0, 0, 300)),
                ..case(
                    "outdated flag, one policy, down",
                    1,
                    1000,
                    100,
                    5,
                    5,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                down_events: uniform(&[8, 12, 9, 11], 120),
                down: Some(rules(1000, 120, 100, 60, 300)),
                ..case(
                    "not outdated, two policies, down",
                    1,
                    1000,
                    100,
                    5,
                    5,
                    "DesiredWithinRange",
                )
            },
            RateCase {
                down_events: uniform(&[8, 12, 9, 11], 120),
                down: Some(rules(1000, 30, 100, 60, 300)),
                ..case(
                    "outdated, two policies, down",
                    1,
                    1000,
                    100,
                    5,
                    5,
                    "DesiredWithinRange",
                )
            },
        ];
        let settings = ControllerSettings::default();
        for c in cases {
            let behavior = Behavior {
                scale_up: c.up.unwrap_or_else(default_up),
                scale_down: c.down.unwrap_or_else(default_down),
            };
            let stage = Stage {
                min_replicas: c.min,
                max_replicas: c.max,
                behavior: Some(&behavior),
                settings: &settings,
            };
            let history = ScalingHistory {
                recommendations: None,
                scale_up_events: c.up_events,
                scale_down_events: c.down_events,
            };
            let (replicas, reason, _) =
                stage.rate_limit(&behavior, &history, 0.0, c.current, c.desired);
            assert_eq!((replicas, reason), (c.expected, c.reason), "{}", c.name);
        }
    }

    fn recs(list: &[(i32, f64)]) -> Vec<Recommendation> {
        list.iter()
            .map(|(r, ago)| Recommendation {
                t: -ago,
                replicas: *r,
            })
            .collect()
    }

    /// Port of `TestNormalizeDesiredReplicasWithBehavior` (stabilizeRecommendationWithBehaviors).
    #[test]
    fn stabilization_with_behavior() {
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<Recommendation>,
            i32,
            i32,
            i32,
            Option<Vec<i32>>,
            i32,
            i32,
        )> = vec![
            (
                "empty recommendations for scaling down",
                vec![],
                100,
                5,
                5,
                Some(vec![5]),
                0,
                0,
            ),
            (
                "simple scale down stabilization",
                recs(&[(4, 120.0), (5, 60.0)]),
                100,
                3,
                5,
                Some(vec![4, 5, 3]),
                0,
                180,
            ),
            (
                "simple scale up stabilization",
                recs(&[(4, 120.0), (5, 60.0)]),
                1,
                7,
                4,
                Some(vec![4, 5, 7]),
                300,
                0,
            ),
            (
                "no scale down stabilization",
                recs(&[(1, 120.0), (2, 60.0)]),
                100,
                3,
                3,
                Some(vec![1, 2, 3]),
                300,
                0,
            ),
            (
                "no scale up stabilization",
                recs(&[(4, 120.0), (5, 60.0)]),
                1,
                3,
                3,
                Some(vec![4, 5, 3]),
                0,
                300,
            ),
            (
                "no scale down stabilization, reuse element",
                recs(&[(10, 600.0), (9, 540.0)]),
                100,
                3,
                3,
                Some(vec![10, 3]),
                0,
                0,
            ),
            (
                "no scale up stabilization, reuse element",
                recs(&[(10, 600.0), (9, 540.0)]),
                1,
                100,
                100,
                Some(vec![10, 100]),
                0,
                0,
            ),
            (
                "scale down stabilization, reuse obsolete element",
                recs(&[(10, 600.0), (4, 60.0), (5, 120.0), (9, 540.0)]),
                100,
                3,
                5,
                Some(vec![10, 4, 5, 3]),
                0,
                180,
            ),
            (
                "scale up stabilization, reuse obsolete element",
                recs(&[(10, 6000.0), (6, 60.0), (5, 120.0), (9, 180.0)]),
                1,
                100,
                5,
                Some(vec![100, 6, 5, 9]),
                300,
                0,
            ),
            (
                "do not scale up when prenormalized rec goes down",
                recs(&[(2, 6000.0), (3, 180.0)]),
                2,
                1,
                2,
                None,
                300,
                300,
            ),
            (
                "do not scale down when prenormalized rec goes up",
                recs(&[(2, 6000.0), (1, 180.0)]),
                2,
                3,
                2,
                None,
                300,
                300,
            ),
        ];
        for (name, recommendations, current, proposed, expected, stored, up_window, down_window) in
            cases
        {
            let behavior = Behavior {
                scale_up: ScalingRules {
                    stabilization_window_seconds: f64::from(up_window),
                    ..default_up()
                },
                scale_down: ScalingRules {
                    stabilization_window_seconds: f64::from(down_window),
                    ..default_down()
                },
            };
            let mut history = ScalingHistory {
                recommendations: Some(recommendations),
                ..Default::default()
            };
            let got = stabilize_with_behavior(&behavior, &mut history, 0.0, current, proposed);
            assert_eq!(got, expected, "{name}");
            if let Some(stored) = stored {
                let got: Vec<i32> = history
                    .recommendations
                    .unwrap()
                    .iter()
                    .map(|r| r.replicas)
                    .collect();
                assert_eq!(got, stored, "{name}: stored recommendations");
            }
        }
    }

    /// Port of `TestNormalizeDesiredReplicas` (legacy stabilizeRecommendation, 5 min window).
    #[test]
    fn legacy_stabilization() {
        let cases = [
            ("empty log", recs(&[]), 5, 5, 1),
            ("stabilize", recs(&[(4, 120.0), (5, 60.0)]), 3, 5, 3),
            ("no stabilize", recs(&[(1, 120.0), (2, 60.0)]), 3, 3, 3),
            (
                "no stabilize - old recommendations",
                recs(&[(10, 600.0), (9, 540.0)]),
                3,
                3,
                2,
            ),
            (
                "stabilize - old recommendations",
                recs(&[(10, 600.0), (4, 60.0), (5, 120.0), (9, 540.0)]),
                3,
                5,
                4,
            ),
        ];
        for (name, recommendations, proposed, expected, log_len) in cases {
            let mut history = ScalingHistory {
                recommendations: Some(recommendations),
                ..Default::default()
            };
            assert_eq!(
                stabilize_legacy(&mut history, 0.0, 300.0, proposed),
                expected,
                "{name}"
            );
            assert_eq!(
                history.recommendations.unwrap().len(),
                log_len,
                "{name}: log length"
            );
        }
    }

    /// Port of `TestStoreScaleEvents`: which slot a new event takes, in both directions.
    #[test]
    fn store_scale_events() {
        let ev = |change, ago: f64| ScaleEvent { t: -ago, change };
        let cases = vec![
            (
                "empty entries with two-policy-behavior",
                vec![],
                rules(10, 60, 100, 60, 0),
                vec![5],
                0,
            ),
            (
                "one outdated entry to be replaced",
                vec![ev(7, 61.0)],
                rules(10, 60, 100, 60, 0),
                vec![5],
                0,
            ),
            (
                "one actual entry to be not touched",
                vec![ev(7, 58.0)],
                rules(10, 60, 100, 60, 0),
                vec![7, 5],
                7,
            ),
            (
                "two entries, one of them to be replaced",
                vec![ev(7, 61.0), ev(6, 59.0)],
                rules(10, 60, 0, 0, 0),
                vec![5, 6],
                6,
            ),
            (
                "replace one entry, use policies with different periods",
                vec![ev(8, 29.0), ev(6, 59.0), ev(7, 61.0), ev(9, 61.0)],
                rules(10, 60, 100, 30, 0),
                vec![8, 6, 7, 5],
                14,
            ),
            (
                "two entries, both actual",
                vec![ev(7, 58.0), ev(6, 59.0)],
                rules(10, 120, 100, 30, 0),
                vec![7, 6, 5],
                13,
            ),
        ];
        for (name, previous, rules, expected, change_in_60s) in cases {
            assert_eq!(
                change_in_period(&previous, 0.0, 60),
                change_in_60s,
                "{name}"
            );
            let behavior = Behavior {
                scale_up: rules.clone(),
                scale_down: rules,
            };
            let mut up = ScalingHistory {
                scale_up_events: previous.clone(),
                ..Default::default()
            };
            store_scale_event(&behavior, &mut up, 0.0, 10, 15);
            let got: Vec<i32> = up.scale_up_events.iter().map(|e| e.change).collect();
            assert_eq!(got, expected, "{name}: up");
            let mut down = ScalingHistory {
                scale_down_events: previous,
                ..Default::default()
            };
            store_scale_event(&behavior, &mut down, 0.0, 10, 5);
            let got: Vec<i32> = down.scale_down_events.iter().map(|e| e.change).collect();
            assert_eq!(got, expected, "{name}: down");
        }
    }
}

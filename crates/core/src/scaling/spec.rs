//! The Kubernetes `autoscaling/v2` HorizontalPodAutoscalerSpec, as submitted (serde, Kubernetes
//! field names), and its defaulted form ([`HpaConfig`]) that the engine runs on.

use crate::quantity::Quantity;
use serde::{Deserialize, Serialize};

/// `HorizontalPodAutoscalerSpec` as a user writes it. Fields the engine does not use
/// (`scaleTargetRef`, …) are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaSpec {
    /// Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Upper bound; required.
    pub max_replicas: i32,
    /// Defaults to CPU utilization 80 %.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
    /// Absent: the legacy path. Present (even `{}`): the behavior path with defaults filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<BehaviorSpec>,
}

/// One entry of `spec.metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// `Resource`, `Pods`, `Object`, `External` (or `ContainerResource`, not supported).
    #[serde(rename = "type")]
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamedSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<NamedSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<NamedSource>,
}

/// The metric source types of autoscaling/v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    Resource,
    Pods,
    Object,
    External,
    ContainerResource,
}

/// `spec.metrics[].resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSource {
    /// `cpu`, `memory`, …
    pub name: String,
    pub target: MetricTarget,
}

/// `spec.metrics[].pods|object|external`: a named metric with a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedSource {
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
    /// Object metrics only; ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub described_object: Option<serde_json::Value>,
}

/// `metric: {name, selector}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricIdentifier {
    pub name: String,
    /// Label selector; passed through to the metrics source, ignored by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
}

/// `target: {type, averageUtilization | averageValue | value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    #[serde(rename = "type")]
    pub kind: TargetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Quantity>,
}

/// `Utilization`, `AverageValue` or `Value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetKind {
    Utilization,
    AverageValue,
    Value,
}

/// `spec.behavior`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRulesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRulesSpec>,
}

/// `HPAScalingRules`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRulesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalingPolicy>>,
    /// Per-direction tolerance (feature `HPAConfigurableTolerance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Quantity>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// One rate policy: change by at most `value` pods (or percent) per `periodSeconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub kind: PolicyKind,
    pub value: i32,
    pub period_seconds: i32,
}

/// `Pods` or `Percent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// Controller-wide settings (the kube-controller-manager flags).
///
/// Defaults: tolerance 0.1, downscale stabilization 300 s, CPU initialization period 300 s,
/// initial readiness delay 30 s, legacy scale-up limit `max(2 × current, 4)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerSettings {
    pub tolerance: f64,
    pub downscale_stabilization_seconds: f64,
    pub cpu_initialization_period_seconds: f64,
    pub delay_of_initial_readiness_status_seconds: f64,
    pub scale_up_limit_factor: f64,
    pub scale_up_limit_minimum: f64,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            tolerance: 0.1,
            downscale_stabilization_seconds: 300.0,
            cpu_initialization_period_seconds: 300.0,
            delay_of_initial_readiness_status_seconds: 30.0,
            scale_up_limit_factor: 2.0,
            scale_up_limit_minimum: 4.0,
        }
    }
}

/// Scaling rules of one direction after defaulting.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    pub stabilization_window_seconds: f64,
    pub select_policy: SelectPolicy,
    pub policies: Vec<ScalingPolicy>,
}

impl ScalingRules {
    /// The longest policy period: events older than this are reusable slots.
    pub fn longest_period(&self) -> f64 {
        f64::from(
            self.policies
                .iter()
                .map(|p| p.period_seconds)
                .max()
                .unwrap_or(0),
        )
    }
}

/// `behavior` after Kubernetes' API defaulting and the controller's window default.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub scale_up: ScalingRules,
    pub scale_down: ScalingRules,
}

/// Usage-ratio tolerances: a ratio `r` is within iff `1 - down <= r <= 1 + up`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub down: f64,
    pub up: f64,
}

impl Tolerances {
    /// Whether `ratio` is close enough to 1 to leave the replica count alone.
    pub fn contains(&self, ratio: f64) -> bool {
        1.0 - self.down <= ratio && ratio <= 1.0 + self.up
    }
}

/// A metric after validation: what to measure and the target to hold it at.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// Average utilization (percent of request) of a resource.
    ResourceUtilization {
        resource: String,
        target_percent: i32,
    },
    /// Average raw usage of a resource, in milli-units.
    ResourceAverageValue { resource: String, target_milli: i64 },
    /// Average over pods of a per-pod metric.
    Pods { name: String, target_milli: i64 },
    /// A metric of another object, held at a total value.
    ObjectValue { name: String, target_milli: i64 },
    /// A metric of another object, divided among the pods.
    ObjectAverageValue { name: String, target_milli: i64 },
    /// Sum of an external metric's series, held at a total value.
    ExternalValue { name: String, target_milli: i64 },
    /// Sum of an external metric's series, divided among the pods.
    ExternalAverageValue { name: String, target_milli: i64 },
}

impl Metric {
    /// The key under which observations of this metric are supplied (`cpu`, `qps`, …).
    pub fn key(&self) -> &str {
        match self {
            Metric::ResourceUtilization { resource, .. }
            | Metric::ResourceAverageValue { resource, .. } => resource,
            Metric::Pods { name, .. }
            | Metric::ObjectValue { name, .. }
            | Metric::ObjectAverageValue { name, .. }
            | Metric::ExternalValue { name, .. }
            | Metric::ExternalAverageValue { name, .. } => name,
        }
    }
}

/// A defaulted, validated HPA: what the engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaConfig {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub metrics: Vec<Metric>,
    /// `None`: the legacy path (no `behavior` in the spec).
    pub behavior: Option<Behavior>,
    pub tolerances: Tolerances,
    pub settings: ControllerSettings,
}

/// A spec that Kubernetes' API validation would reject; `path` names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

fn spec_err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.into(),
        message: message.into(),
    }
}

impl HpaSpec {
    /// Applies API defaulting and validation, as the API server and controller would.
    pub fn resolve(&self, settings: ControllerSettings) -> Result<HpaConfig, SpecError> {
        let min_replicas = self.min_replicas.unwrap_or(1);
        if min_replicas < 0 {
            return Err(spec_err("minReplicas", "must be >= 0"));
        }
        if self.max_replicas < 1 {
            return Err(spec_err("maxReplicas", "must be >= 1"));
        }
        if self.max_replicas < min_replicas {
            return Err(spec_err(
                "maxReplicas",
                format!("must be >= minReplicas ({min_replicas})"),
            ));
        }
        let metrics = if self.metrics.is_empty() {
            vec![Metric::ResourceUtilization {
                resource: "cpu".into(),
                target_percent: 80,
            }]
        } else {
            self.metrics
                .iter()
                .enumerate()
                .map(|(i, m)| m.resolve(&format!("metrics[{i}]")))
                .collect::<Result<_, _>>()?
        };
        let mut keys: Vec<&str> = metrics.iter().map(Metric::key).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(spec_err(
                "metrics",
                format!("metric {:?} listed twice", w[0]),
            ));
        }
        let mut tolerances = Tolerances {
            down: settings.tolerance,
            up: settings.tolerance,
        };
        let behavior = match &self.behavior {
            None => None,
            Some(b) => {
                let up = b.scale_up.clone().unwrap_or_default();
                let down = b.scale_down.clone().unwrap_or_default();
                if let Some(t) = &up.tolerance {
                    tolerances.up = t.as_f64();
                }
                if let Some(t) = &down.tolerance {
                    tolerances.down = t.as_f64();
                }
                Some(Behavior {
                    scale_up: up.resolve(
                        "behavior.scaleUp",
                        0.0,
                        &[
                            ScalingPolicy {
                                kind: PolicyKind::Pods,
                                value: 4,
                                period_seconds: 15,
                            },
                            ScalingPolicy {
                                kind: PolicyKind::Percent,
                                value: 100,
                                period_seconds: 15,
                            },
                        ],
                    )?,
                    scale_down: down.resolve(
                        "behavior.scaleDown",
                        settings.downscale_stabilization_seconds,
                        &[ScalingPolicy {
                            kind: PolicyKind::Percent,
                            value: 100,
                            period_seconds: 15,
                        }],
                    )?,
                })
            }
        };
        if tolerances.up < 0.0 || tolerances.down < 0.0 {
            return Err(spec_err("behavior", "tolerance must be >= 0"));
        }
        Ok(HpaConfig {
            min_replicas,
            max_replicas: self.max_replicas,
            metrics,
            behavior,
            tolerances,
            settings,
        })
    }
}

impl ScalingRulesSpec {
    fn resolve(
        &self,
        path: &str,
        default_window: f64,
        default_policies: &[ScalingPolicy],
    ) -> Result<ScalingRules, SpecError> {
        let window = match self.stabilization_window_seconds {
            Some(w) if !(0..=3600).contains(&w) => {
                return Err(spec_err(
                    format!("{path}.stabilizationWindowSeconds"),
                    "must be between 0 and 3600",
                ));
            }
            Some(w) => f64::from(w),
            None => default_window,
        };
        let policies = self
            .policies
            .clone()
            .unwrap_or_else(|| default_policies.to_vec());
        for (i, p) in policies.iter().enumerate() {
            if p.value <= 0 {
                return Err(spec_err(
                    format!("{path}.policies[{i}].value"),
                    "must be > 0",
                ));
            }
            if !(1..=1800).contains(&p.period_seconds) {
                return Err(spec_err(
                    format!("{path}.policies[{i}].periodSeconds"),
                    "must be between 1 and 1800",
                ));
            }
        }
        let select_policy = self.select_policy.unwrap_or(SelectPolicy::Max);
        if policies.is_empty() && select_policy != SelectPolicy::Disabled {
            return Err(spec_err(format!("{path}.policies"), "must not be empty"));
        }
        Ok(ScalingRules {
            stabilization_window_seconds: window,
            select_policy,
            policies,
        })
    }
}

impl MetricSpec {
    fn resolve(&self, path: &str) -> Result<Metric, SpecError> {
        fn positive(q: Option<&Quantity>, path: String) -> Result<i64, SpecError> {
            match q.map(Quantity::milli_value) {
                Some(v) if v > 0 => Ok(v),
                Some(_) => Err(spec_err(path, "must be positive")),
                None => Err(spec_err(path, "required for this target type")),
            }
        }
        let named = |source: &Option<NamedSource>, field: &str| {
            source
                .clone()
                .ok_or_else(|| spec_err(format!("{path}.{field}"), "required for this metric type"))
        };
        match self.kind {
            MetricKind::Resource => {
                let r = self.resource.as_ref().ok_or_else(|| {
                    spec_err(format!("{path}.resource"), "required for type Resource")
                })?;
                let tpath = format!("{path}.resource.target");
                // Kubernetes looks at averageValue first, whatever `type` says.
                if let Some(v) = &r.target.average_value {
                    let target_milli = positive(Some(v), format!("{tpath}.averageValue"))?;
                    return Ok(Metric::ResourceAverageValue {
                        resource: r.name.clone(),
                        target_milli,
                    });
                }
                match r.target.average_utilization {
                    Some(p) if p > 0 => Ok(Metric::ResourceUtilization {
                        resource: r.name.clone(),
                        target_percent: p,
                    }),
                    Some(_) => Err(spec_err(
                        format!("{tpath}.averageUtilization"),
                        "must be positive",
                    )),
                    None => Err(spec_err(
                        tpath,
                        "neither averageUtilization nor averageValue is set",
                    )),
                }
            }
            MetricKind::Pods => {
                let s = named(&self.pods, "pods")?;
                let target_milli = positive(
                    s.target.average_value.as_ref(),
                    format!("{path}.pods.target.averageValue"),
                )?;
                Ok(Metric::Pods {
                    name: s.metric.name,
                    target_milli,
                })
            }
            MetricKind::Object => {
                let s = named(&self.object, "object")?;
                let tpath = format!("{path}.object.target");
                match s.target.kind {
                    TargetKind::Value => Ok(Metric::ObjectValue {
                        target_milli: positive(s.target.value.as_ref(), format!("{tpath}.value"))?,
                        name: s.metric.name,
                    }),
                    TargetKind::AverageValue => Ok(Metric::ObjectAverageValue {
                        target_milli: positive(
                            s.target.average_value.as_ref(),
                            format!("{tpath}.averageValue"),
                        )?,
                        name: s.metric.name,
                    }),
                    TargetKind::Utilization => Err(spec_err(
                        format!("{tpath}.type"),
                        "must be Value or AverageValue",
                    )),
                }
            }
            MetricKind::External => {
                let s = named(&self.external, "external")?;
                let tpath = format!("{path}.external.target");
                // Kubernetes prefers averageValue when both are set.
                if s.target.average_value.is_some() {
                    Ok(Metric::ExternalAverageValue {
                        target_milli: positive(
                            s.target.average_value.as_ref(),
                            format!("{tpath}.averageValue"),
                        )?,
                        name: s.metric.name,
                    })
                } else {
                    Ok(Metric::ExternalValue {
                        target_milli: positive(s.target.value.as_ref(), format!("{tpath}.value"))?,
                        name: s.metric.name,
                    })
                }
            }
            MetricKind::ContainerResource => Err(spec_err(
                format!("{path}.type"),
                "ContainerResource metrics are not supported by tenantscale",
            )),
        }
    }
}

//! `tenantscale hpa replay`: run a timeline of observations through the HPA engine.
//!
//! The file format and output are fixed by `specs/hpa-replay.md`; this module is that
//! contract in code. Parsing is the caller's (JSON or YAML into [`ReplayFile`]); this module
//! validates, runs, and returns one [`StepOutput`] per step.

use super::behavior::{Recommendation, ScaleEvent, ScalingHistory};
use super::hpa::{HpaState, MetricInput};
use super::replica::{MetricValue, Observation, PodInfo, PodPhase, PodSample};
use super::spec::{ControllerSettings, HpaConfig, HpaSpec, Metric, SpecError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The replay file (§2 of the contract).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayFile {
    pub hpa: HpaObject,
    pub current_replicas: i32,
    #[serde(default)]
    pub status_replicas: Option<i32>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub downscale_stabilization_window_seconds: Option<f64>,
    #[serde(default)]
    pub cpu_initialization_period_seconds: Option<f64>,
    #[serde(default)]
    pub delay_of_initial_readiness_status_seconds: Option<f64>,
    #[serde(default)]
    pub scale_up_limit_factor: Option<f64>,
    #[serde(default)]
    pub scale_up_limit_minimum: Option<f64>,
    #[serde(default)]
    pub history: ReplayHistory,
    pub steps: Vec<Step>,
}

/// `hpa`: a HorizontalPodAutoscaler object; only its `spec` is read.
#[derive(Debug, Clone, Deserialize)]
pub struct HpaObject {
    pub spec: HpaSpec,
}

/// Controller state before the first step (§2.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayHistory {
    /// Absent: the controller has no entry yet. Present (even empty): exactly this list.
    #[serde(default)]
    pub recommendations: Option<Vec<Recommendation>>,
    #[serde(default)]
    pub scale_up_events: Vec<ScaleEvent>,
    #[serde(default)]
    pub scale_down_events: Vec<ScaleEvent>,
}

/// One reconcile (§2.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    pub t: f64,
    #[serde(default)]
    pub recommendation: Option<i32>,
    #[serde(default)]
    pub metrics: Option<BTreeMap<String, ObservationInput>>,
    #[serde(default)]
    pub current_replicas: Option<i32>,
    #[serde(default)]
    pub status_replicas: Option<i32>,
}

/// Observations of one metric at one step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObservationInput {
    /// A copy of the spec's target, accepted for convenience and ignored.
    #[serde(default)]
    pub target: Option<serde_json::Value>,
    #[serde(default)]
    pub pods: Option<Vec<PodInput>>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub values: Option<Vec<f64>>,
}

/// One pod in an observation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodInput {
    #[serde(default)]
    pub request: Option<f64>,
    #[serde(default)]
    pub usage: Option<f64>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub missing: bool,
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(default)]
    pub phase: PodPhase,
    #[serde(default)]
    pub deleting: bool,
    #[serde(default = "long_ago")]
    pub started_seconds_ago: f64,
    #[serde(default)]
    pub ready_transition_seconds_ago: Option<f64>,
    #[serde(default)]
    pub metric_age_seconds: f64,
    #[serde(default = "default_window")]
    pub metric_window_seconds: f64,
}

fn yes() -> bool {
    true
}
fn long_ago() -> f64 {
    1e10
}
fn default_window() -> f64 {
    60.0
}

/// What the command prints for one step (§4).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutput {
    pub t: serde_json::Number,
    pub current_replicas: i32,
    pub desired_replicas: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<i32>,
    pub conditions: super::behavior::Conditions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_metrics: Option<Vec<Option<MetricValue>>>,
    pub recommendations: Vec<Recommendation>,
    pub scale_up_events: Vec<ScaleEvent>,
    pub scale_down_events: Vec<ScaleEvent>,
}

/// Converts decimal base units to Kubernetes milli-values: `round(x × 1000)`.
fn milli(x: f64) -> i64 {
    (x * 1000.0).round() as i64
}

fn number(t: f64) -> serde_json::Number {
    if t.fract() == 0.0 && t.abs() < 9e15 {
        serde_json::Number::from(t as i64)
    } else {
        serde_json::Number::from_f64(t).unwrap_or_else(|| serde_json::Number::from(0))
    }
}

impl ReplayFile {
    /// Controller settings with the file's overrides applied.
    pub fn settings(&self) -> ControllerSettings {
        let d = ControllerSettings::default();
        ControllerSettings {
            tolerance: self.tolerance.unwrap_or(d.tolerance),
            downscale_stabilization_seconds: self
                .downscale_stabilization_window_seconds
                .unwrap_or(d.downscale_stabilization_seconds),
            cpu_initialization_period_seconds: self
                .cpu_initialization_period_seconds
                .unwrap_or(d.cpu_initialization_period_seconds),
            delay_of_initial_readiness_status_seconds: self
                .delay_of_initial_readiness_status_seconds
                .unwrap_or(d.delay_of_initial_readiness_status_seconds),
            scale_up_limit_factor: self
                .scale_up_limit_factor
                .unwrap_or(d.scale_up_limit_factor),
            scale_up_limit_minimum: self
                .scale_up_limit_minimum
                .unwrap_or(d.scale_up_limit_minimum),
        }
    }

    /// Validates the file and replays every step.
    pub fn run(&self) -> Result<Vec<StepOutput>, SpecError> {
        let config = self
            .hpa
            .spec
            .resolve(self.settings())
            .map_err(|e| SpecError {
                path: format!("hpa.spec.{}", e.path),
                message: e.message,
            })?;
        self.check_top_level()?;
        let mut state = HpaState {
            history: ScalingHistory {
                recommendations: self.history.recommendations.clone(),
                scale_up_events: self.history.scale_up_events.clone(),
                scale_down_events: self.history.scale_down_events.clone(),
            },
            conditions: Default::default(),
        };
        let mut current = self.current_replicas;
        let mut outputs = Vec::with_capacity(self.steps.len());
        let mut previous_t = f64::NEG_INFINITY;
        for (i, step) in self.steps.iter().enumerate() {
            let path = format!("steps[{i}]");
            if !step.t.is_finite() || step.t <= previous_t {
                return Err(SpecError {
                    path: format!("{path}.t"),
                    message: "must be strictly increasing".into(),
                });
            }
            previous_t = step.t;
            current = step.current_replicas.unwrap_or(current);
            let status_replicas = step
                .status_replicas
                .or(if i == 0 { self.status_replicas } else { None })
                .unwrap_or(current);
            if current < 0 || status_replicas < 0 {
                return Err(SpecError {
                    path,
                    message: "replica counts must be >= 0".into(),
                });
            }
            let observations;
            let input = match (&step.recommendation, &step.metrics) {
                (Some(r), None) => MetricInput::Recommendation(*r),
                (None, Some(m)) => {
                    observations = observations_for(&config, m, current, &path)?;
                    MetricInput::Observations(&observations)
                }
                _ => {
                    return Err(SpecError {
                        path,
                        message: "exactly one of `recommendation` and `metrics` is required".into(),
                    });
                }
            };
            let decision = config.reconcile(&mut state, step.t, current, status_replicas, input);
            outputs.push(StepOutput {
                t: number(step.t),
                current_replicas: current,
                desired_replicas: decision.outcome.desired,
                recommendation: decision.outcome.recommendation,
                conditions: state.conditions.clone(),
                current_metrics: (!decision.current_metrics.is_empty())
                    .then_some(decision.current_metrics),
                recommendations: state.history.recommendations.clone().unwrap_or_default(),
                scale_up_events: state.history.scale_up_events.clone(),
                scale_down_events: state.history.scale_down_events.clone(),
            });
            current = decision.outcome.desired;
        }
        Ok(outputs)
    }

    fn check_top_level(&self) -> Result<(), SpecError> {
        let err = |path: &str, message: &str| {
            Err(SpecError {
                path: path.into(),
                message: message.into(),
            })
        };
        if self.current_replicas < 0 {
            return err("currentReplicas", "must be >= 0");
        }
        if self.steps.is_empty() {
            return err("steps", "must list at least one step");
        }
        if self.tolerance.is_some_and(|t| !(0.0..1.0).contains(&t)) {
            return err("tolerance", "must be in [0, 1)");
        }
        Ok(())
    }
}

/// Builds the engine's observations, index-aligned with the config's metrics.
fn observations_for(
    config: &HpaConfig,
    given: &BTreeMap<String, ObservationInput>,
    current: i32,
    step_path: &str,
) -> Result<Vec<Option<Observation>>, SpecError> {
    for key in given.keys() {
        if !config.metrics.iter().any(|m| m.key() == key) {
            return Err(SpecError {
                path: format!("{step_path}.metrics.{key}"),
                message: "no metric of the HPA spec has this name".into(),
            });
        }
    }
    config
        .metrics
        .iter()
        .map(|metric| {
            let key = metric.key();
            let Some(obs) = given.get(key) else {
                return Ok(None);
            };
            let path = format!("{step_path}.metrics.{key}");
            convert(metric, obs, current, &path).map(Some)
        })
        .collect()
}

fn convert(
    metric: &Metric,
    obs: &ObservationInput,
    current: i32,
    path: &str,
) -> Result<Observation, SpecError> {
    let err = |field: String, message: &str| SpecError {
        path: field,
        message: message.into(),
    };
    let default_pods = || vec![PodInfo::default(); current.max(0) as usize];
    let pod_states = |pods: &Option<Vec<PodInput>>| match pods {
        Some(pods) => pods.iter().map(pod_info).collect(),
        None => default_pods(),
    };
    match metric {
        Metric::ResourceUtilization { .. }
        | Metric::ResourceAverageValue { .. }
        | Metric::Pods { .. } => {
            let is_resource = !matches!(metric, Metric::Pods { .. });
            let pods = obs
                .pods
                .as_ref()
                .ok_or_else(|| err(format!("{path}.pods"), "required for this metric"))?;
            let samples = pods
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    let ppath = format!("{path}.pods[{j}]");
                    let reading = if is_resource { p.usage } else { p.value };
                    let field = if is_resource { "usage" } else { "value" };
                    let value_milli = match (reading, p.missing) {
                        (Some(_), true) => {
                            return Err(err(
                                ppath,
                                &format!("`{field}` and `missing` exclude each other"),
                            ));
                        }
                        (Some(v), false) => Some(milli(v)),
                        (None, true) => None,
                        (None, false) => {
                            return Err(err(
                                format!("{ppath}.{field}"),
                                "required unless `missing: true`",
                            ));
                        }
                    };
                    let request_milli = match (is_resource, p.request) {
                        (true, Some(r)) => Some(milli(r)),
                        (true, None) => {
                            return Err(err(
                                format!("{ppath}.request"),
                                "required for Resource metrics",
                            ));
                        }
                        (false, _) => None,
                    };
                    Ok(PodSample {
                        pod: pod_info(p),
                        request_milli,
                        value_milli,
                        metric_age_seconds: p.metric_age_seconds,
                        metric_window_seconds: p.metric_window_seconds,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Observation::PodSamples(samples))
        }
        Metric::ObjectValue { .. } | Metric::ObjectAverageValue { .. } => {
            let value = obs
                .value
                .ok_or_else(|| err(format!("{path}.value"), "required for Object metrics"))?;
            Ok(Observation::Object {
                value_milli: milli(value),
                pods: pod_states(&obs.pods),
            })
        }
        Metric::ExternalValue { .. } | Metric::ExternalAverageValue { .. } => {
            let values = obs
                .values
                .as_ref()
                .ok_or_else(|| err(format!("{path}.values"), "required for External metrics"))?;
            Ok(Observation::External {
                values_milli: values.iter().map(|v| milli(*v)).collect(),
                pods: pod_states(&obs.pods),
            })
        }
    }
}

fn pod_info(p: &PodInput) -> PodInfo {
    PodInfo {
        ready: p.ready,
        phase: p.phase,
        deleting: p.deleting,
        started_seconds_ago: p.started_seconds_ago,
        ready_transition_seconds_ago: p
            .ready_transition_seconds_ago
            .unwrap_or(p.started_seconds_ago),
    }
}

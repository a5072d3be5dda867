//! Kubernetes' replica calculator (`replica_calculator.go`): one metric's observations in,
//! one replica-count proposal out, with its treatment of missing metrics, unready,
//! pending, deleted and failed pods.

use super::spec::{ControllerSettings, Metric, Tolerances};
use serde::{Deserialize, Serialize};

/// A pod's lifecycle phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PodPhase {
    #[default]
    Running,
    Pending,
    Failed,
    Succeeded,
}

/// What the controller knows about a pod, with times relative to the reconcile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodInfo {
    pub ready: bool,
    pub phase: PodPhase,
    /// Has a deletion timestamp.
    pub deleting: bool,
    pub started_seconds_ago: f64,
    /// When the `Ready` condition last changed.
    pub ready_transition_seconds_ago: f64,
}

impl Default for PodInfo {
    /// A running, ready pod that started long ago.
    fn default() -> Self {
        Self {
            ready: true,
            phase: PodPhase::Running,
            deleting: false,
            started_seconds_ago: 1e10,
            ready_transition_seconds_ago: 1e10,
        }
    }
}

/// One pod's sample of a per-pod metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodSample {
    pub pod: PodInfo,
    /// The pod's resource request in milli-units (Resource metrics only).
    pub request_milli: Option<i64>,
    /// `None`: the metrics API returned no sample for this pod.
    pub value_milli: Option<i64>,
    pub metric_age_seconds: f64,
    pub metric_window_seconds: f64,
}

impl PodSample {
    /// A sample from a running, ready, long-started pod.
    pub fn ready(value_milli: i64) -> Self {
        Self {
            pod: PodInfo::default(),
            request_milli: None,
            value_milli: Some(value_milli),
            metric_age_seconds: 0.0,
            metric_window_seconds: 60.0,
        }
    }
}

/// Observations of one metric at one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Per-pod samples (Resource and Pods metrics).
    PodSamples(Vec<PodSample>),
    /// An object's metric value, and the target's pods (for the ready count).
    Object { value_milli: i64, pods: Vec<PodInfo> },
    /// The external metric's series values (summed), and the target's pods.
    External { values_milli: Vec<i64>, pods: Vec<PodInfo> },
}

/// `status.currentMetrics[i].<source>.current`, as milli-values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_value_milli: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_milli: Option<i64>,
}

/// A metric that could not produce a proposal: the `ScalingActive` reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFailure {
    pub reason: &'static str,
    pub message: String,
}

/// Inputs every calculation shares.
#[derive(Debug, Clone, Copy)]
pub struct CalcContext<'a> {
    /// The scale subresource's `spec.replicas`.
    pub spec_replicas: i32,
    /// The scale subresource's `status.replicas`.
    pub status_replicas: i32,
    pub tolerances: Tolerances,
    pub settings: &'a ControllerSettings,
}

/// Proposes a replica count for `metric` from `observation`.
pub fn replicas_for_metric(
    metric: &Metric,
    observation: &Observation,
    cx: CalcContext<'_>,
) -> Result<(i32, MetricValue), MetricFailure> {
    let reason = match metric {
        Metric::ResourceUtilization { .. } | Metric::ResourceAverageValue { .. } => "FailedGetResourceMetric",
        Metric::Pods { .. } => "FailedGetPodsMetric",
        Metric::ObjectValue { .. } | Metric::ObjectAverageValue { .. } => "FailedGetObjectMetric",
        Metric::ExternalValue { .. } | Metric::ExternalAverageValue { .. } => "FailedGetExternalMetric",
    };
    let fail = |message: String| MetricFailure {
        reason,
        message: format!("the HPA was unable to compute the replica count: {message}"),
    };
    let wrong_kind = || fail(format!("observation of {:?} has the wrong shape for this metric type", metric.key()));
    match (metric, observation) {
        (Metric::ResourceUtilization { resource, target_percent }, Observation::PodSamples(samples)) => {
            resource_utilization(samples, resource == "cpu", *target_percent, cx).map_err(fail)
        }
        (Metric::ResourceAverageValue { resource, target_milli }, Observation::PodSamples(samples)) => {
            plain(samples, resource == "cpu", *target_milli, cx)
                .map(|(r, v)| (r, MetricValue { average_value_milli: Some(v), ..Default::default() }))
                .map_err(fail)
        }
        (Metric::Pods { target_milli, .. }, Observation::PodSamples(samples)) => plain(samples, false, *target_milli, cx)
            .map(|(r, v)| (r, MetricValue { average_value_milli: Some(v), ..Default::default() }))
            .map_err(fail),
        (Metric::ObjectValue { target_milli, .. }, Observation::Object { value_milli, pods }) => {
            total_value(*value_milli, *target_milli, pods, cx)
                .map(|r| (r, MetricValue { value_milli: Some(*value_milli), ..Default::default() }))
                .map_err(fail)
        }
        (Metric::ObjectAverageValue { target_milli, .. }, Observation::Object { value_milli, .. }) => {
            Ok(per_pod_value(*value_milli, *target_milli, cx))
        }
        (Metric::ExternalValue { target_milli, .. }, Observation::External { values_milli, pods }) => {
            let usage = saturating_sum(values_milli);
            total_value(usage, *target_milli, pods, cx)
                .map(|r| (r, MetricValue { value_milli: Some(usage), ..Default::default() }))
                .map_err(fail)
        }
        (Metric::ExternalAverageValue { target_milli, .. }, Observation::External { values_milli, .. }) => {
            Ok(per_pod_value(saturating_sum(values_milli), *target_milli, cx))
        }
        _ => Err(wrong_kind()),
    }
}

fn saturating_sum(values: &[i64]) -> i64 {
    values.iter().fold(0i64, |acc, v| acc.saturating_add(*v))
}

fn ceil_to_i32(x: f64) -> i32 {
    x.ceil().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// How `groupPods` sorts the target's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Ready,
    Unready,
    Missing,
    Ignored,
}

/// `groupPods`: deleted and terminal pods are ignored; pending pods are unready; a pod with
/// no sample is missing; for CPU, a pod still initialising or never ready is unready.
fn group(sample: &PodSample, is_cpu: bool, settings: &ControllerSettings) -> Group {
    let pod = &sample.pod;
    if pod.deleting || matches!(pod.phase, PodPhase::Failed | PodPhase::Succeeded) {
        return Group::Ignored;
    }
    if pod.phase == PodPhase::Pending {
        return Group::Unready;
    }
    if sample.value_milli.is_none() {
        return Group::Missing;
    }
    if is_cpu {
        // Times as "seconds ago": larger is earlier.
        let unready = if pod.started_seconds_ago < settings.cpu_initialization_period_seconds {
            // Still initialising: skip the sample if unready, or if a whole metric window
            // has not passed since the pod last changed readiness.
            !pod.ready || sample.metric_age_seconds > pod.ready_transition_seconds_ago - sample.metric_window_seconds
        } else {
            // Ignore a pod that is unready and has never been ready.
            !pod.ready
                && pod.ready_transition_seconds_ago + settings.delay_of_initial_readiness_status_seconds
                    > pod.started_seconds_ago
        };
        if unready {
            return Group::Unready;
        }
    }
    Group::Ready
}

/// Sample values the calculation starts from, per pod: `Some` for ready pods only.
struct Grouped {
    ready_count: usize,
    groups: Vec<Group>,
    values: Vec<Option<i64>>,
}

fn group_all(samples: &[PodSample], is_cpu: bool, settings: &ControllerSettings) -> Result<Grouped, String> {
    if samples.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups: Vec<Group> = samples.iter().map(|s| group(s, is_cpu, settings)).collect();
    let values: Vec<Option<i64>> =
        samples.iter().zip(&groups).map(|(s, g)| (*g == Group::Ready).then_some(s.value_milli).flatten()).collect();
    let ready_count = groups.iter().filter(|g| **g == Group::Ready).count();
    if ready_count == 0 {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    Ok(Grouped { ready_count, groups, values })
}

/// `GetResourceUtilizationRatio`: (ratio, utilization %, raw average).
fn utilization_ratio(values: &[Option<i64>], requests: &[i64], target: i32) -> Result<(f64, i32, i64), String> {
    let (mut total, mut requested, mut n) = (0i128, 0i128, 0i128);
    for (v, r) in values.iter().zip(requests) {
        if let Some(v) = v {
            total += i128::from(*v);
            requested += i128::from(*r);
            n += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (total * 100 / requested).clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
    let raw = (total / n) as i64;
    Ok((f64::from(utilization) / f64::from(target), utilization, raw))
}

/// `GetMetricUsageRatio`: (ratio, integer average).
fn usage_ratio(values: &[Option<i64>], target: i64) -> (f64, i64) {
    let present: Vec<i64> = values.iter().flatten().copied().collect();
    let total: i128 = present.iter().map(|v| i128::from(*v)).sum();
    let average = (total / present.len().max(1) as i128) as i64;
    (average as f64 / target as f64, average)
}

/// The shared second pass: fill in missing and unready pods, recompute, and refuse changes
/// that flip direction or fall within tolerance.
fn rebalance(
    grouped: &mut Grouped,
    usage: f64,
    missing_on_scale_down: impl Fn(usize) -> i64,
    recompute: impl Fn(&[Option<i64>]) -> Result<f64, String>,
    cx: CalcContext<'_>,
) -> Result<i32, String> {
    let current = cx.spec_replicas;
    let scale_up_with_unready = usage > 1.0 && grouped.groups.contains(&Group::Unready);
    let has_missing = grouped.groups.contains(&Group::Missing);
    if !scale_up_with_unready && !has_missing {
        if cx.tolerances.contains(usage) {
            return Ok(current);
        }
        return Ok(ceil_to_i32(usage * grouped.ready_count as f64));
    }
    for (i, g) in grouped.groups.iter().enumerate() {
        match g {
            Group::Missing if usage < 1.0 => grouped.values[i] = Some(missing_on_scale_down(i)),
            Group::Missing if usage > 1.0 => grouped.values[i] = Some(0),
            Group::Unready if scale_up_with_unready => grouped.values[i] = Some(0),
            _ => {}
        }
    }
    let new_usage = recompute(&grouped.values)?;
    if cx.tolerances.contains(new_usage) || (usage < 1.0 && new_usage > 1.0) || (usage > 1.0 && new_usage < 1.0) {
        return Ok(current);
    }
    let counted = grouped.values.iter().flatten().count();
    let proposed = ceil_to_i32(new_usage * counted as f64);
    if (new_usage < 1.0 && proposed > current) || (new_usage > 1.0 && proposed < current) {
        return Ok(current);
    }
    Ok(proposed)
}

/// `GetResourceReplicas`: average utilization as a percentage of requests.
fn resource_utilization(
    samples: &[PodSample],
    is_cpu: bool,
    target: i32,
    cx: CalcContext<'_>,
) -> Result<(i32, MetricValue), String> {
    let mut grouped = group_all(samples, is_cpu, cx.settings)?;
    let requests: Vec<i64> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| s.request_milli.ok_or_else(|| format!("missing request for pod {i}")))
        .collect::<Result<_, _>>()?;
    let (usage, utilization, raw) = utilization_ratio(&grouped.values, &requests, target)?;
    let status = MetricValue {
        average_utilization: Some(utilization),
        average_value_milli: Some(raw),
        value_milli: None,
    };
    // A missing pod on scale-down counts as using its full request, or the target if higher.
    let fallback = i64::from(target.max(100));
    let replicas = rebalance(
        &mut grouped,
        usage,
        |i| requests[i] * fallback / 100,
        |values| utilization_ratio(values, &requests, target).map(|r| r.0),
        cx,
    )?;
    Ok((replicas, status))
}

/// `calcPlainMetricReplicas`: average raw value per pod.
fn plain(samples: &[PodSample], is_cpu: bool, target: i64, cx: CalcContext<'_>) -> Result<(i32, i64), String> {
    let mut grouped = group_all(samples, is_cpu, cx.settings)?;
    let (usage, average) = usage_ratio(&grouped.values, target);
    // A missing pod on scale-down counts as exactly on target.
    let replicas = rebalance(&mut grouped, usage, |_| target, |values| Ok(usage_ratio(values, target).0), cx)?;
    Ok((replicas, average))
}

/// `GetObjectMetricReplicas` / `GetExternalMetricReplicas`: a total held at a target.
fn total_value(usage: i64, target: i64, pods: &[PodInfo], cx: CalcContext<'_>) -> Result<i32, String> {
    let ratio = usage as f64 / target as f64;
    if cx.spec_replicas == 0 {
        return Ok(ceil_to_i32(ratio));
    }
    if cx.tolerances.contains(ratio) {
        return Ok(cx.spec_replicas);
    }
    if pods.is_empty() {
        return Err("unable to calculate ready pods: no pods returned by selector while calculating replica count".into());
    }
    let ready = pods.iter().filter(|p| p.phase == PodPhase::Running && p.ready).count();
    Ok(ceil_to_i32(ratio * ready as f64))
}

/// `GetObjectPerPodMetricReplicas` / `GetExternalPerPodMetricReplicas`: a total divided
/// among `status.replicas` pods.
fn per_pod_value(usage: i64, target: i64, cx: CalcContext<'_>) -> (i32, MetricValue) {
    let status_replicas = cx.status_replicas;
    let ratio = usage as f64 / (target as f64 * f64::from(status_replicas));
    let replicas =
        if cx.tolerances.contains(ratio) { status_replicas } else { ceil_to_i32(usage as f64 / target as f64) };
    let per_pod = if status_replicas == 0 { 0 } else { (usage as f64 / f64::from(status_replicas)).ceil() as i64 };
    (replicas, MetricValue { average_value_milli: Some(per_pod), ..Default::default() })
}

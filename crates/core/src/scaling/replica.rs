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
    Object {
        value_milli: i64,
        pods: Vec<PodInfo>,
    },
    /// The external metric's series values (summed), and the target's pods.
    External {
        values_milli: Vec<i64>,
        pods: Vec<PodInfo>,
    },
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
        Metric::ResourceUtilization { .. } | Metric::ResourceAverageValue { .. } => {
            "FailedGetResourceMetric"
        }
        Metric::Pods { .. } => "FailedGetPodsMetric",
        Metric::ObjectValue { .. } | Metric::ObjectAverageValue { .. } => "FailedGetObjectMetric",
        Metric::ExternalValue { .. } | Metric::ExternalAverageValue { .. } => {
            "FailedGetExternalMetric"
        }
    };
    let fail = |message: String| MetricFailure {
        reason,
        message: format!("the HPA was unable to compute the replica count: {message}"),
    };
    let wrong_kind = || {
        fail(format!(
            "observation of {:?} has the wrong shape for this metric type",
            metric.key()
        ))
    };
    match (metric, observation) {
        (
            Metric::ResourceUtilization {
                resource,
                target_percent,
            },
            Observation::PodSamples(samples),
        ) => resource_utilization(samples, resource == "cpu", *target_percent, cx).map_err(fail),
        (
            Metric::ResourceAverageValue {
                resource,
                target_milli,
            },
            Observation::PodSamples(samples),
        ) => plain(samples, resource == "cpu", *target_milli, cx)
            .map(|(r, v)| {
                (
                    r,
                    MetricValue {
                        average_value_milli: Some(v),
                        ..Default::default()
                    },
                )
            })
            .map_err(fail),
        (Metric::Pods { target_milli, .. }, Observation::PodSamples(samples)) => {
            plain(samples, false, *target_milli, cx)
                .map(|(r, v)| {
                    (
                        r,
                        MetricValue {
                            average_value_milli: Some(v),
                            ..Default::default()
                        },
                    )
                })
                .map_err(fail)
        }
        (Metric::ObjectValue { target_milli, .. }, Observation::Object { value_milli, pods }) => {
            total_value(*value_milli, *target_milli, pods, cx)
                .map(|r| {
                    (
                        r,
                        MetricValue {
                            value_milli: Some(*value_milli),
                            ..Default::default()
                        },
                    )
                })
                .map_err(fail)
        }
        (
            Metric::ObjectAverageValue { target_milli, .. },
            Observation::Object { value_milli, .. },
        ) => Ok(per_pod_value(*value_milli, *target_milli, cx)),
        (
            Metric::ExternalValue { target_milli, .. },
            Observation::External { values_milli, pods },
        ) => {
            let usage = saturating_sum(values_milli);
            total_value(usage, *target_milli, pods, cx)
                .map(|r| {
                    (
                        r,
                        MetricValue {
                            value_milli: Some(usage),
                            ..Default::default()
                        },
                    )
                })
                .map_err(fail)
        }
        (
            Metric::ExternalAverageValue { target_milli, .. },
            Observation::External { values_milli, .. },
        ) => Ok(per_pod_value(
            saturating_sum(values_milli),
            *target_milli,
            cx,
        )),
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
            !pod.ready
                || sample.metric_age_seconds
                    > pod.ready_transition_seconds_ago - sample.metric_window_seconds
        } else {
            // Ignore a pod that is unready and has never been ready.
            !pod.ready
                && pod.ready_transition_seconds_ago
                    + settings.delay_of_initial_readiness_status_seconds
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

fn group_all(
    samples: &[PodSample],
    is_cpu: bool,
    settings: &ControllerSettings,
) -> Result<Grouped, String> {
    if samples.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups: Vec<Group> = samples.iter().map(|s| group(s, is_cpu, settings)).collect();
    let values: Vec<Option<i64>> = samples
        .iter()
        .zip(&groups)
        .map(|(s, g)| (*g == Group::Ready).then_some(s.value_milli).flatten())
        .collect();
    let ready_count = groups.iter().filter(|g| **g == Group::Ready).count();
    if ready_count == 0 {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    Ok(Grouped {
        ready_count,
        groups,
        values,
    })
}

/// `GetResourceUtilizationRatio`: (ratio, utilization %, raw average).
fn utilization_ratio(
    values: &[Option<i64>],
    requests: &[i64],
    target: i32,
) -> Result<(f64, i32, i64), String> {
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
    let utilization =
        (total * 100 / requested).clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
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
    if cx.tolerances.contains(new_usage)
        || (usage < 1.0 && new_usage > 1.0)
        || (usage > 1.0 && new_usage < 1.0)
    {
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
        .map(|(i, s)| {
            s.request_milli
                .ok_or_else(|| format!("missing request for pod {i}"))
        })
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
fn plain(
    samples: &[PodSample],
    is_cpu: bool,
    target: i64,
    cx: CalcContext<'_>,
) -> Result<(i32, i64), String> {
    let mut grouped = group_all(samples, is_cpu, cx.settings)?;
    let (usage, average) = usage_ratio(&grouped.values, target);
    // A missing pod on scale-down counts as exactly on target.
    let replicas = rebalance(
        &mut grouped,
        usage,
        |_| target,
        |values| Ok(usage_ratio(values, target).0),
        cx,
    )?;
    Ok((replicas, average))
}

/// `GetObjectMetricReplicas` / `GetExternalMetricReplicas`: a total held at a target.
fn total_value(
    usage: i64,
    target: i64,
    pods: &[PodInfo],
    cx: CalcContext<'_>,
) -> Result<i32, String> {
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
    let ready = pods
        .iter()
        .filter(|p| p.phase == PodPhase::Running && p.ready)
        .count();
    Ok(ceil_to_i32(ratio * ready as f64))
}

/// `GetObjectPerPodMetricReplicas` / `GetExternalPerPodMetricReplicas`: a total divided
/// among `status.replicas` pods.
fn per_pod_value(usage: i64, target: i64, cx: CalcContext<'_>) -> (i32, MetricValue) {
    let status_replicas = cx.status_replicas;
    let ratio = usage as f64 / (target as f64 * f64::from(status_replicas));
    let replicas = if cx.tolerances.contains(ratio) {
        status_replicas
    } else {
        ceil_to_i32(usage as f64 / target as f64)
    };
    let per_pod = if status_replicas == 0 {
        0
    } else {
        (usage as f64 / f64::from(status_replicas)).ceil() as i64
    };
    (
        replicas,
        MetricValue {
            average_value_milli: Some(per_pod),
            ..Default::default()
        },
    )
}

/// Ports of kubernetes/pkg/controller/podautoscaler/replica_calculator_test.go. That file's
/// fake gives both containers of a pod the full level and request, so pod totals are
/// doubled; its Ready conditions and metric timestamps are Go's zero time ("long ago").
/// `ContainerResource` cases are not ported: tenantscale does not support that source.
#[cfg(test)]
mod tests {
    use super::*;

    const HOT: f64 = 0.0;
    const COOL: f64 = 180.0;
    const LONG_AGO: f64 = 1e10;

    #[derive(Default, Clone)]
    struct Fixture {
        current: i32,
        readiness: Vec<bool>,
        start_ago: Vec<f64>,
        phase: Vec<PodPhase>,
        deleting: Vec<bool>,
        /// Per-pod request in cores (one container's; the pod has two).
        requests: Vec<f64>,
        /// Per-pod level in milli-units (one container's).
        levels: Vec<i64>,
        /// Per-direction tolerances (down, up); default 0.1 both.
        tolerances: Option<(f64, f64)>,
    }

    impl Fixture {
        fn samples(&self, doubled: bool) -> Vec<PodSample> {
            let factor = if doubled { 2 } else { 1 };
            let pods = (self.current.max(0) as usize).max(self.phase.len());
            (0..pods)
                .map(|i| PodSample {
                    pod: PodInfo {
                        ready: self.readiness.get(i).copied().unwrap_or(true),
                        phase: self.phase.get(i).copied().unwrap_or_default(),
                        deleting: self.deleting.get(i).copied().unwrap_or(false),
                        started_seconds_ago: self.start_ago.get(i).copied().unwrap_or(LONG_AGO),
                        ready_transition_seconds_ago: LONG_AGO,
                    },
                    request_milli: self
                        .requests
                        .get(i)
                        .map(|r| (r * 1000.0).round() as i64 * factor),
                    value_milli: self.levels.get(i).map(|l| l * factor),
                    metric_age_seconds: LONG_AGO,
                    metric_window_seconds: 60.0,
                })
                .collect()
        }

        fn cx<'a>(&self, settings: &'a ControllerSettings) -> CalcContext<'a> {
            let (down, up) = self.tolerances.unwrap_or((0.1, 0.1));
            CalcContext {
                spec_replicas: self.current,
                status_replicas: self.current,
                tolerances: Tolerances { down, up },
                settings,
            }
        }
    }

    /// The Kubernetes unit tests run with a 2-minute CPU initialization period and a
    /// 10-second readiness delay.
    fn settings() -> ControllerSettings {
        ControllerSettings {
            cpu_initialization_period_seconds: 120.0,
            delay_of_initial_readiness_status_seconds: 10.0,
            ..Default::default()
        }
    }

    fn cpu(target: i32) -> Metric {
        Metric::ResourceUtilization {
            resource: "cpu".into(),
            target_percent: target,
        }
    }

    fn run_resource(name: &str, fx: Fixture, target: i32, expected: Result<(i32, i32, i64), ()>) {
        let s = settings();
        let got = replicas_for_metric(
            &cpu(target),
            &Observation::PodSamples(fx.samples(true)),
            fx.cx(&s),
        );
        match (got, expected) {
            (Ok((r, v)), Ok((er, eu, eraw))) => {
                assert_eq!(
                    (r, v.average_utilization, v.average_value_milli),
                    (er, Some(eu), Some(eraw)),
                    "{name}"
                )
            }
            (Err(_), Err(())) => {}
            (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
        }
    }

    fn ones(n: usize) -> Vec<f64> {
        vec![1.0; n]
    }

    /// Port of `TestReplicaCalcResourceScale` (non-container cases).
    #[test]
    fn resource_scale() {
        use PodPhase::*;
        let f = |current, levels: &[i64], requests: Vec<f64>| Fixture {
            current,
            levels: levels.to_vec(),
            requests,
            ..Default::default()
        };
        run_resource(
            "scale up",
            f(3, &[300, 500, 700], ones(3)),
            30,
            Ok((5, 50, 1000)),
        );
        run_resource(
            "unready pod scales less",
            Fixture {
                readiness: vec![false, true, true],
                ..f(3, &[300, 500, 700], ones(3))
            },
            30,
            Ok((4, 60, 1200)),
        );
        run_resource(
            "hot-CPU pod scales less",
            Fixture {
                start_ago: vec![HOT, COOL, COOL],
                ..f(3, &[300, 500, 700], ones(3))
            },
            30,
            Ok((4, 60, 1200)),
        );
        run_resource(
            "no scale: unready pods ignored",
            Fixture {
                readiness: vec![true, false, false],
                ..f(3, &[400, 500, 700], ones(3))
            },
            30,
            Ok((3, 40, 800)),
        );
        run_resource(
            "no scale: hot-CPU pods ignored",
            Fixture {
                readiness: vec![true, false, false],
                start_ago: vec![COOL, HOT, HOT],
                ..f(3, &[400, 500, 700], ones(3))
            },
            30,
            Ok((3, 40, 800)),
        );
        run_resource(
            "scale up: failed pods ignored",
            Fixture {
                readiness: vec![true, true, false, false],
                phase: vec![Running, Running, Failed, Failed],
                ..f(2, &[500, 700], ones(4))
            },
            30,
            Ok((4, 60, 1200)),
        );
        run_resource(
            "scale up: succeeded pods ignored",
            Fixture {
                readiness: vec![true, true, false, false],
                phase: vec![Running, Running, Succeeded, Succeeded],
                ..f(2, &[500, 700], ones(4))
            },
            30,
            Ok((4, 60, 1200)),
        );
        run_resource(
            "scale up: pods being deleted are ignored",
            Fixture {
                readiness: vec![true, true, false, false],
                phase: vec![Running; 4],
                deleting: vec![false, false, true, true],
                ..f(2, &[500, 700], ones(4))
            },
            30,
            Ok((4, 60, 1200)),
        );
        run_resource(
            "scale down",
            f(5, &[100, 300, 500, 250, 250], ones(5)),
            50,
            Ok((3, 28, 560)),
        );
        run_resource(
            "scale down: exclude unready pods",
            Fixture {
                readiness: vec![true, true, true, false, false],
                ..f(5, &[100, 300, 500, 250, 250], ones(5))
            },
            50,
            Ok((2, 30, 600)),
        );
        run_resource(
            "scale down: exclude unscheduled pods",
            Fixture {
                readiness: vec![true, false, false, false, false],
                phase: vec![Running, Pending, Pending, Pending, Pending],
                ..f(5, &[100], ones(5))
            },
            50,
            Ok((1, 10, 200)),
        );
        run_resource(
            "scale down: ignore hot-CPU pods",
            Fixture {
                start_ago: vec![COOL, COOL, COOL, HOT, HOT],
                ..f(5, &[100, 300, 500, 250, 250], ones(5))
            },
            50,
            Ok((2, 30, 600)),
        );
        let seven = || Fixture {
            readiness: vec![true, true, true, true, true, false, false],
            ..f(5, &[100, 300, 500, 250, 250], ones(7))
        };
        run_resource(
            "scale down: failed pods ignored",
            Fixture {
                phase: [vec![Running; 5], vec![Failed; 2]].concat(),
                ..seven()
            },
            50,
            Ok((3, 28, 560)),
        );
        run_resource(
            "scale down: succeeded pods ignored",
            Fixture {
                phase: [vec![Running; 5], vec![Succeeded; 2]].concat(),
                ..seven()
            },
            50,
            Ok((3, 28, 560)),
        );
        run_resource(
            "scale down: pods being deleted are ignored",
            Fixture {
                phase: vec![Running; 7],
                deleting: [vec![false; 5], vec![true; 2]].concat(),
                ..seven()
            },
            50,
            Ok((3, 28, 560)),
        );
    }

    /// Port of `TestReplicaCalcResourceTolerance`.
    #[test]
    fn resource_tolerance() {
        let mixed = vec![0.9, 1.0, 1.1];
        let f = |levels: &[i64], tol: Option<(f64, f64)>| Fixture {
            current: 3,
            levels: levels.to_vec(),
            requests: mixed.clone(),
            tolerances: tol,
            ..Default::default()
        };
        run_resource(
            "within default tolerance",
            f(&[1010, 1030, 1020], None),
            100,
            Ok((3, 102, 2040)),
        );
        run_resource(
            "outside 0% tolerance",
            f(&[909, 1010, 1111], Some((0.0, 0.0))),
            100,
            Ok((4, 101, 2020)),
        );
        run_resource(
            "within 200% scale-up tolerance",
            f(&[1890, 1910, 1900], Some((0.1, 2.0))),
            100,
            Ok((3, 190, 3800)),
        );
        run_resource(
            "outside 8% scale-up tolerance",
            f(&[1100, 1080, 1090], Some((2.0, 0.08))),
            100,
            Ok((4, 109, 2180)),
        );
        run_resource(
            "within 36% scale-down tolerance",
            f(&[660, 640, 650], Some((0.36, 0.1))),
            100,
            Ok((3, 65, 1300)),
        );
        run_resource(
            "outside 34% scale-down tolerance",
            f(&[660, 640, 650], Some((0.34, 0.1))),
            100,
            Ok((2, 65, 1300)),
        );
    }

    /// Port of `TestReplicaCalcResourceMissingMetrics`.
    #[test]
    fn resource_missing_metrics() {
        let f = |current, levels: &[i64], requests: Vec<f64>| Fixture {
            current,
            levels: levels.to_vec(),
            requests,
            ..Default::default()
        };
        // Kubernetes drops metrics of pods the selector did not return; our samples are per pod.
        run_resource(
            "superfluous metrics counted",
            f(4, &[4000, 9500, 3000, 7000], ones(4)),
            100,
            Ok((24, 587, 11750)),
        );
        run_resource(
            "some pods missing metrics scales down",
            f(4, &[400, 95], ones(4)),
            100,
            Ok((3, 24, 495)),
        );
        run_resource(
            "no change: metric equal to target",
            f(2, &[1000], ones(2)),
            100,
            Ok((2, 100, 2000)),
        );
        run_resource(
            "no change: metric above target",
            f(2, &[1900], ones(2)),
            100,
            Ok((2, 190, 3800)),
        );
        run_resource(
            "no change: metric below target",
            f(2, &[600], ones(2)),
            100,
            Ok((2, 60, 1200)),
        );
        run_resource(
            "no change: unready pod metric missing",
            Fixture {
                readiness: vec![false, true, true],
                ..f(3, &[100, 450], ones(3))
            },
            50,
            Ok((3, 45, 900)),
        );
        run_resource(
            "no change: hot-CPU pod metric missing",
            Fixture {
                start_ago: vec![HOT, COOL, COOL],
                ..f(3, &[100, 450], ones(3))
            },
            50,
            Ok((3, 45, 900)),
        );
        run_resource(
            "scale up: unready pod metric missing",
            Fixture {
                readiness: vec![false, true, true],
                ..f(3, &[100, 2000], ones(3))
            },
            50,
            Ok((4, 200, 4000)),
        );
        run_resource(
            "scale up: hot-CPU pod metric missing",
            Fixture {
                readiness: vec![false, true, true],
                start_ago: vec![HOT, COOL, COOL],
                ..f(3, &[100, 2000], ones(3))
            },
            50,
            Ok((4, 200, 4000)),
        );
        run_resource(
            "scale down: unready pod metric missing",
            Fixture {
                readiness: vec![false, true, true, true],
                ..f(4, &[100, 100, 100], ones(4))
            },
            50,
            Ok((3, 10, 200)),
        );
        run_resource(
            "scale down: target over 100",
            Fixture {
                readiness: vec![false, true, true, true],
                ..f(4, &[200, 100, 100], vec![1.0, 1.0, 2.0, 2.0])
            },
            300,
            Ok((2, 6, 200)),
        );
        run_resource(
            "rolling update with maxSurge: extra pod missing metric",
            Fixture {
                phase: vec![PodPhase::Running; 3],
                ..f(2, &[100, 100], ones(3))
            },
            50,
            Ok((2, 10, 200)),
        );
        run_resource(
            "no metrics returned from metrics API",
            f(4, &[], ones(3)),
            100,
            Err(()),
        );
        run_resource(
            "missing CPU request on container",
            f(1, &[200], vec![]),
            100,
            Err(()),
        );
    }

    /// Port of `TestReplicaCalcComputedToleranceAlgImplementation`.
    #[test]
    fn computed_tolerance() {
        let per_pod_requested = 300;
        let requests: Vec<f64> = [100, -100, 10, -10, 2, -2, 1, -1, 0, 0]
            .iter()
            .map(|d| f64::from(per_pod_requested + d) / 1000.0)
            .collect();
        let fx = Fixture {
            current: 10,
            levels: vec![150; 10],
            requests,
            ..Default::default()
        };
        // target = |1 / (2 × 0.9)| + 0.01 → 56 %, then + 0.004 → 55 %.
        let target = ((1.0 / (2.0 * 0.9)) + 0.01) * 100.0;
        let final_pods = (1500.0 / (3000.0 * ((1.0 / (2.0 * 0.9)) + 0.01)) * 10.0f64).ceil() as i32;
        run_resource(
            "scales at the edge",
            fx.clone(),
            target as i32,
            Ok((final_pods, 50, 300)),
        );
        let target = ((1.0 / (2.0 * 0.9)) + 0.004) * 100.0;
        run_resource(
            "no scale inside the tolerance",
            fx,
            target as i32,
            Ok((10, 50, 300)),
        );
    }

    fn run_plain(
        name: &str,
        metric: Metric,
        obs: Observation,
        fx: &Fixture,
        status: i32,
        expected: (i32, MetricValue),
    ) {
        let s = settings();
        let cx = CalcContext {
            status_replicas: status,
            ..fx.cx(&s)
        };
        assert_eq!(
            replicas_for_metric(&metric, &obs, cx).unwrap(),
            expected,
            "{name}"
        );
    }

    fn avg(v: i64) -> MetricValue {
        MetricValue {
            average_value_milli: Some(v),
            ..Default::default()
        }
    }
    fn total(v: i64) -> MetricValue {
        MetricValue {
            value_milli: Some(v),
            ..Default::default()
        }
    }

    /// Port of `TestReplicaCalcPodMetric`.
    #[test]
    fn pod_metric() {
        let qps = |target| Metric::Pods {
            name: "qps".into(),
            target_milli: target,
        };
        let cases = [
            (
                "scale up",
                Fixture {
                    current: 3,
                    levels: vec![20000, 10000, 30000],
                    ..Default::default()
                },
                15000,
                (4, 20000),
            ),
            (
                "unready hot-CPU pod scales less",
                Fixture {
                    current: 3,
                    readiness: vec![true, true, false],
                    start_ago: vec![COOL, COOL, HOT],
                    levels: vec![50000, 10000, 30000],
                    ..Default::default()
                },
                15000,
                (6, 30000),
            ),
            (
                "unready hot-CPU pods avoid scale-down",
                Fixture {
                    current: 3,
                    readiness: vec![false, true, false],
                    start_ago: vec![HOT, COOL, HOT],
                    levels: vec![50000, 15000, 30000],
                    ..Default::default()
                },
                15000,
                (7, 31666),
            ),
            (
                "scale down",
                Fixture {
                    current: 5,
                    levels: vec![12000; 5],
                    ..Default::default()
                },
                20000,
                (3, 12000),
            ),
            (
                "within default tolerance",
                Fixture {
                    current: 3,
                    levels: vec![20000, 21000, 21000],
                    ..Default::default()
                },
                20000,
                (3, 20666),
            ),
            (
                "outside configurable 1% tolerance",
                Fixture {
                    current: 3,
                    levels: vec![20000, 21000, 21000],
                    tolerances: Some((0.1, 0.01)),
                    ..Default::default()
                },
                20000,
                (4, 20666),
            ),
            (
                "no change: missing metrics",
                Fixture {
                    current: 5,
                    levels: vec![20000, 19000, 21000],
                    ..Default::default()
                },
                20000,
                (5, 20000),
            ),
            (
                "rolling update with maxSurge",
                Fixture {
                    current: 2,
                    phase: vec![PodPhase::Running; 3],
                    levels: vec![10000, 10000],
                    ..Default::default()
                },
                17000,
                (2, 10000),
            ),
        ];
        for (name, fx, target, (r, v)) in cases {
            run_plain(
                name,
                qps(target),
                Observation::PodSamples(fx.samples(false)),
                &fx,
                fx.current,
                (r, avg(v)),
            );
        }
    }

    fn ready_pods(readiness: &[bool]) -> Vec<PodInfo> {
        readiness
            .iter()
            .map(|r| PodInfo {
                ready: *r,
                ..Default::default()
            })
            .collect()
    }

    /// Ports of `TestReplicaCalcObjectMetric` and `TestReplicaCalcExternalMetric`.
    #[test]
    fn object_and_external_value() {
        let obj = |t| Metric::ObjectValue {
            name: "qps".into(),
            target_milli: t,
        };
        let fx = |current, tol| Fixture {
            current,
            tolerances: tol,
            ..Default::default()
        };
        let cases = [
            (
                "object scale up",
                obj(15000),
                20000,
                ready_pods(&[true; 3]),
                fx(3, None),
                (4, 20000),
            ),
            (
                "object saturates to MaxInt32",
                obj(1),
                i64::MAX,
                ready_pods(&[true; 3]),
                fx(3, None),
                (i32::MAX, i64::MAX),
            ),
            (
                "object ignores unready pods",
                obj(10000),
                50000,
                ready_pods(&[false, true, false]),
                fx(3, None),
                (5, 50000),
            ),
            (
                "object scale down",
                obj(20000),
                12000,
                ready_pods(&[true; 5]),
                fx(5, None),
                (3, 12000),
            ),
            (
                "object within default tolerance",
                obj(20000),
                20666,
                ready_pods(&[true; 3]),
                fx(3, None),
                (3, 20666),
            ),
            (
                "object outside 1% tolerance",
                obj(20000),
                20666,
                ready_pods(&[true; 3]),
                fx(3, Some((0.1, 0.01))),
                (4, 20666),
            ),
        ];
        for (name, metric, value, pods, fx, (r, v)) in cases {
            run_plain(
                name,
                metric,
                Observation::Object {
                    value_milli: value,
                    pods,
                },
                &fx,
                fx.current,
                (r, total(v)),
            );
        }
        let ext = |t| Metric::ExternalValue {
            name: "qps".into(),
            target_milli: t,
        };
        let cases = [
            (
                "external ignores unready pods",
                ext(4400),
                vec![8600],
                ready_pods(&[false, true, false]),
                fx(3, None),
                (2, 8600),
            ),
            (
                "external scale down",
                ext(14334),
                vec![8600],
                ready_pods(&[true; 5]),
                fx(5, None),
                (3, 8600),
            ),
            (
                "external within default tolerance",
                ext(8888),
                vec![8600],
                ready_pods(&[true; 3]),
                fx(3, None),
                (3, 8600),
            ),
            (
                "external outside 1% tolerance",
                ext(8800),
                vec![8900],
                ready_pods(&[true; 3]),
                fx(3, Some((0.1, 0.01))),
                (4, 8900),
            ),
            (
                "external usage overflow caps",
                ext(i64::MAX),
                vec![i64::MAX / 2 + 1, i64::MAX / 2 + 1],
                ready_pods(&[true; 3]),
                fx(3, None),
                (3, i64::MAX),
            ),
        ];
        for (name, metric, values, pods, fx, (r, v)) in cases {
            run_plain(
                name,
                metric,
                Observation::External {
                    values_milli: values,
                    pods,
                },
                &fx,
                fx.current,
                (r, total(v)),
            );
        }
    }

    /// Ports of `TestReplicaCalcObjectPerPodMetric` and `TestReplicaCalcExternalPerPodMetric`.
    #[test]
    fn per_pod_values() {
        let obj = |t| Metric::ObjectAverageValue {
            name: "qps".into(),
            target_milli: t,
        };
        let fx = |tol| Fixture {
            tolerances: tol,
            ..Default::default()
        };
        let cases = [
            (
                "huge target leaves replicas unchanged",
                obj(i64::MAX),
                i64::MAX,
                1,
                None,
                (1, i64::MAX),
            ),
            ("scale up", obj(5000), 20000, 3, None, (4, 6667)),
            ("scale down", obj(2000), 6000, 5, None, (3, 1200)),
            (
                "within default tolerance",
                obj(5000),
                20166,
                4,
                None,
                (4, 5042),
            ),
            (
                "outside 1% tolerance",
                obj(5000),
                20208,
                4,
                Some((0.1, 0.01)),
                (5, 5052),
            ),
            ("statusReplicas zero", obj(5000), 20000, 0, None, (4, 0)),
            (
                "statusReplicas zero and metric zero",
                obj(5000),
                0,
                0,
                None,
                (0, 0),
            ),
        ];
        for (name, metric, value, status, tol, (r, v)) in cases {
            run_plain(
                name,
                metric,
                Observation::Object {
                    value_milli: value,
                    pods: vec![],
                },
                &fx(tol),
                status,
                (r, avg(v)),
            );
        }
        let ext = |t| Metric::ExternalAverageValue {
            name: "qps".into(),
            target_milli: t,
        };
        let cases = [
            (
                "overflow saturates to MaxInt32",
                ext(1),
                i64::MAX,
                1,
                None,
                (i32::MAX, i64::MAX),
            ),
            ("scale up", ext(2150), 8600, 3, None, (4, 2867)),
            ("scale down", ext(2867), 8600, 5, None, (3, 1720)),
            (
                "within default tolerance",
                ext(2900),
                8600,
                3,
                None,
                (3, 2867),
            ),
            (
                "outside 1% tolerance",
                ext(2800),
                8600,
                3,
                Some((0.1, 0.01)),
                (4, 2867),
            ),
            ("statusReplicas zero", ext(5000), 20000, 0, None, (4, 0)),
        ];
        for (name, metric, value, status, tol, (r, v)) in cases {
            run_plain(
                name,
                metric,
                Observation::External {
                    values_milli: vec![value],
                    pods: vec![],
                },
                &fx(tol),
                status,
                (r, avg(v)),
            );
        }
    }

    /// Port of `TestGroupPods` (CPU cases; times as seconds ago).
    #[test]
    fn group_pods() {
        let s = settings();
        let sample = |ready, started, transition, age, window, value: Option<i64>| PodSample {
            pod: PodInfo {
                ready,
                phase: PodPhase::Running,
                deleting: false,
                started_seconds_ago: started,
                ready_transition_seconds_ago: transition,
            },
            request_milli: Some(1000),
            value_milli: value,
            metric_age_seconds: age,
            metric_window_seconds: window,
        };
        let cases = [
            (
                "ready pod with fresh metrics during initialization",
                sample(true, 60.0, 30.0, 0.0, 30.0, Some(1)),
                Group::Ready,
            ),
            (
                "ready pod without fresh metrics during initialization",
                sample(true, 60.0, 30.0, 0.0, 60.0, Some(1)),
                Group::Unready,
            ),
            (
                "unready pod during initialization",
                sample(false, 600.0, 594.0, LONG_AGO, 0.0, Some(1)),
                Group::Unready,
            ),
            (
                "ready pod without fresh metrics after initialization",
                sample(true, 180.0, 180.0, 120.0, 60.0, Some(1)),
                Group::Ready,
            ),
            (
                "unready pod that was ready after initialization",
                sample(false, 600.0, 540.0, LONG_AGO, 0.0, Some(1)),
                Group::Ready,
            ),
            (
                "unready pod readied exactly at the readiness delay",
                sample(false, 600.0, 590.0, LONG_AGO, 0.0, Some(1)),
                Group::Ready,
            ),
            (
                "a missing pod",
                sample(true, 180.0, 180.0, 0.0, 60.0, None),
                Group::Missing,
            ),
        ];
        for (name, sample, expected) in cases {
            assert_eq!(group(&sample, true, &s), expected, "{name}");
        }
        let mut pending = sample(false, LONG_AGO, LONG_AGO, 0.0, 60.0, None);
        pending.pod.phase = PodPhase::Pending;
        assert_eq!(
            group(&pending, true, &s),
            Group::Unready,
            "pending pods are unreadied"
        );
        let mut deleted = pending;
        deleted.pod.deleting = true;
        assert_eq!(
            group(&deleted, true, &s),
            Group::Ignored,
            "ignore pods with deletion timestamps"
        );
        for phase in [PodPhase::Failed, PodPhase::Succeeded] {
            let mut p = sample(false, LONG_AGO, LONG_AGO, 0.0, 60.0, Some(1));
            p.pod.phase = phase;
            assert_eq!(group(&p, true, &s), Group::Ignored, "ignore {phase:?} pods");
        }
        // Memory (non-CPU): readiness timing does not matter.
        assert_eq!(
            group(&sample(true, 0.0, 0.0, 0.0, 60.0, Some(1)), false, &s),
            Group::Ready,
            "ready pod - memory"
        );
    }
}

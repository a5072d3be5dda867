//! Ports of the controller-level tests in kubernetes/pkg/controller/podautoscaler/
//! horizontal_test.go, run through the `hpa replay` contract (`ReplayFile`).
//!
//! Fixture translation (specs/hpa-replay.md): the Go fake gives each pod two containers that
//! each get `level/2` CPU and `request.MilliValue()/2` request; its Ready condition changed
//! when the pod started; hot pods started now, cool ones 3 minutes ago, others at Go's zero
//! time. The Go test binary sets `scaleUpLimitFactor` to 8 and uses a 2-minute CPU
//! initialization period and 10 s readiness delay.

use serde_json::{Value, json};
use tenantscale_core::scaling::replay::{ReplayFile, StepOutput};

const HOT: f64 = 0.0;
const COOL: f64 = 180.0;

/// One `testCase` of horizontal_test.go.
#[derive(Clone)]
struct Case {
    min: i32,
    max: i32,
    spec: i32,
    status: i32,
    cpu_target: Option<i32>,
    /// Extra `spec.metrics` entries (after the CPU one, as in the Go fixture).
    metrics: Vec<Value>,
    levels: Vec<u64>,
    requests: Option<Vec<f64>>,
    readiness: Vec<bool>,
    start_ago: Vec<f64>,
    phase: Vec<&'static str>,
    deleting: Vec<bool>,
    /// `None`: the controller has no entry (nil); `Some`: exactly these (t, replicas).
    recommendations: Option<Vec<(f64, i32)>>,
    behavior: Option<Value>,
    /// Observation override for non-CPU metrics.
    custom: Option<(&'static str, Value)>,
}

impl Default for Case {
    fn default() -> Self {
        Self {
            min: 2,
            max: 6,
            spec: 3,
            status: 3,
            cpu_target: None,
            metrics: vec![],
            levels: vec![],
            requests: None,
            readiness: vec![],
            start_ago: vec![],
            phase: vec![],
            deleting: vec![],
            recommendations: Some(vec![]),
            behavior: None,
            custom: None,
        }
    }
}

impl Case {
    fn pods(&self) -> usize {
        self.requests
            .as_ref()
            .map_or(self.status as usize, Vec::len)
    }

    fn cpu_observation(&self) -> Value {
        let pods: Vec<Value> = (0..self.pods())
            .map(|i| {
                let request = self.requests.as_ref().map_or(1.0, |r| r[i]);
                let request_milli = ((request * 1000.0).round() as i64 / 2) * 2;
                let mut pod = json!({
                    "request": request_milli as f64 / 1000.0,
                    "ready": self.readiness.get(i).copied().unwrap_or(true),
                    "phase": self.phase.get(i).copied().unwrap_or("Running"),
                    "deleting": self.deleting.get(i).copied().unwrap_or(false),
                });
                if let Some(ago) = self.start_ago.get(i) {
                    pod["startedSecondsAgo"] = json!(ago);
                }
                match self.levels.get(i) {
                    Some(level) => pod["usage"] = json!(((level / 2) * 2) as f64 / 1000.0),
                    None => pod["missing"] = json!(true),
                }
                pod
            })
            .collect();
        json!({ "pods": pods })
    }

    fn replay(&self) -> Value {
        let mut metrics = Vec::new();
        let mut observations = serde_json::Map::new();
        if let Some(target) = self.cpu_target {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}));
        }
        metrics.extend(self.metrics.iter().cloned());
        if self.cpu_target.is_some() || metrics.is_empty() {
            observations.insert("cpu".into(), self.cpu_observation());
        }
        if let Some((key, obs)) = &self.custom {
            observations.insert((*key).into(), obs.clone());
        }
        let mut spec =
            json!({"minReplicas": self.min, "maxReplicas": self.max, "metrics": metrics});
        if let Some(b) = &self.behavior {
            spec["behavior"] = b.clone();
        }
        let mut file = json!({
            "hpa": {"spec": spec},
            "currentReplicas": self.spec,
            "statusReplicas": self.status,
            "scaleUpLimitFactor": 8,
            "cpuInitializationPeriodSeconds": 120,
            "delayOfInitialReadinessStatusSeconds": 10,
            "steps": [{"t": 0, "metrics": observations}],
        });
        if let Some(recs) = &self.recommendations {
            let list: Vec<Value> = recs
                .iter()
                .map(|(t, r)| json!({"t": t, "replicas": r}))
                .collect();
            file["history"] = json!({ "recommendations": list });
        }
        file
    }

    fn run(&self) -> StepOutput {
        let file: ReplayFile = serde_json::from_value(self.replay()).expect("replay file parses");
        file.run().expect("replay runs").remove(0)
    }
}

/// Asserts the desired count and, for each listed condition type, its status and reason; and
/// keeps the case as a fixture under tests/fixtures/hpa-replay/ so the CLI runs it too.
fn check(name: &str, case: Case, desired: i32, conditions: &[(&str, &str, &str)]) -> StepOutput {
    keep_fixture(name, &case, desired, conditions);
    let out = case.run();
    assert_eq!(out.desired_replicas, desired, "{name}: desiredReplicas");
    let got = serde_json::to_value(&out.conditions).unwrap();
    for (kind, status, reason) in conditions {
        let c = got.as_array().unwrap().iter().find(|c| c["type"] == *kind);
        let c = c.unwrap_or_else(|| panic!("{name}: no {kind} condition in {got}"));
        assert_eq!(
            (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap()),
            (*status, *reason),
            "{name}: {kind}"
        );
    }
    out
}

/// Writes (with `UPDATE_FIXTURES=1`) or verifies the case's replay fixture.
fn keep_fixture(name: &str, case: &Case, desired: i32, conditions: &[(&str, &str, &str)]) {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let path = format!(
        "{}/../../tests/fixtures/hpa-replay/{slug}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture = json!({
        "name": name,
        "replay": case.replay(),
        "expect": {"desiredReplicas": desired, "conditions": conditions},
    });
    let text = serde_json::to_string_pretty(&fixture).unwrap() + "\n";
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, text,
            "{path} is stale: rerun with UPDATE_FIXTURES=1"
        );
    }
}

const OK_UP: &[(&str, &str, &str)] = &[
    ("AbleToScale", "True", "SucceededRescale"),
    ("ScalingActive", "True", "ValidMetricFound"),
    ("ScalingLimited", "False", "DesiredWithinRange"),
];

fn cpu(target: i32, levels: &[u64]) -> Case {
    Case {
        cpu_target: Some(target),
        levels: levels.to_vec(),
        ..Case::default()
    }
}

#[test]
fn scale_up_cpu() {
    // TestScaleUp / TestScaleUpDeployment / TestScaleUpReplicaSet
    let out = check("TestScaleUp", cpu(30, &[300, 500, 700]), 5, OK_UP);
    assert_eq!(
        out.current_metrics.unwrap()[0].unwrap().average_utilization,
        Some(50)
    );
    // TestScaleUpUnreadyLessScale
    check(
        "TestScaleUpUnreadyLessScale",
        Case {
            readiness: vec![false, true, true],
            ..cpu(30, &[300, 500, 700])
        },
        4,
        OK_UP,
    );
    // TestScaleUpHotCpuLessScale
    check(
        "TestScaleUpHotCpuLessScale",
        Case {
            start_ago: vec![HOT, COOL, COOL],
            ..cpu(30, &[300, 500, 700])
        },
        4,
        OK_UP,
    );
    // TestScaleUpIgnoresFailedPods
    let failed = Case {
        spec: 2,
        status: 2,
        requests: Some(vec![1.0; 4]),
        readiness: vec![true, true, false, false],
        phase: vec!["Running", "Running", "Failed", "Failed"],
        ..cpu(30, &[500, 700])
    };
    check("TestScaleUpIgnoresFailedPods", failed.clone(), 4, OK_UP);
    // TestScaleUpIgnoresDeletionPods
    check(
        "TestScaleUpIgnoresDeletionPods",
        Case {
            phase: vec!["Running"; 4],
            deleting: vec![false, false, true, true],
            ..failed
        },
        4,
        OK_UP,
    );
}

#[test]
fn unready_or_hot_cpu_no_scale() {
    let ready_for_new_scale = &[
        ("AbleToScale", "True", "ReadyForNewScale"),
        ("ScalingActive", "True", "ValidMetricFound"),
    ];
    // TestScaleUpUnreadyNoScale
    let out = check(
        "TestScaleUpUnreadyNoScale",
        Case {
            readiness: vec![true, false, false],
            ..cpu(30, &[400, 500, 700])
        },
        3,
        ready_for_new_scale,
    );
    assert_eq!(
        out.current_metrics.unwrap()[0].unwrap().average_utilization,
        Some(40)
    );
    // TestScaleUpHotCpuNoScale
    check(
        "TestScaleUpHotCpuNoScale",
        Case {
            readiness: vec![true, false, false],
            start_ago: vec![COOL, HOT, HOT],
            ..cpu(30, &[400, 500, 700])
        },
        3,
        ready_for_new_scale,
    );
}

fn pods_qps(target: &str, levels: &[f64]) -> Case {
    let pods: Vec<Value> = levels.iter().map(|v| json!({"value": v})).collect();
    Case {
        metrics: vec![
            json!({"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": target}}}),
        ],
        custom: Some(("qps", json!({ "pods": pods }))),
        ..Case::default()
    }
}

#[test]
fn scale_up_custom_metrics() {
    // TestScaleUpCM: qps 20, 10, 30 against 15 per pod.
    let out = check(
        "TestScaleUpCM",
        pods_qps("15.0", &[20.0, 10.0, 30.0]),
        4,
        OK_UP,
    );
    assert_eq!(
        out.current_metrics.unwrap()[0].unwrap().average_value_milli,
        Some(20000)
    );
    // TestScaleUpCMUnreadyAndHotCpuNoLessScale: readiness does not matter for Pods metrics.
    let mut case = pods_qps("15.0", &[50.0, 10.0, 30.0]);
    case.custom = Some((
        "qps",
        json!({"pods": [{"value": 50.0}, {"value": 10.0}, {"value": 30.0, "ready": false, "startedSecondsAgo": HOT}]}),
    ));
    check("TestScaleUpCMUnreadyAndHotCpuNoLessScale", case, 6, OK_UP);
    // TestScaleUpCMObject: 20 against an object value target of 15, 3 ready pods.
    let object = |target: Value, value: f64| Case {
        metrics: vec![
            json!({"type": "Object", "object": {"metric": {"name": "qps"}, "describedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "some-deployment"}, "target": target}}),
        ],
        custom: Some(("qps", json!({ "value": value }))),
        ..Case::default()
    };
    let out = check(
        "TestScaleUpCMObject",
        object(json!({"type": "Value", "value": "15"}), 20.0),
        4,
        OK_UP,
    );
    assert_eq!(
        out.current_metrics.unwrap()[0].unwrap().value_milli,
        Some(20000)
    );
    // TestScaleUpPerPodCMObject: 40 over 3 pods against 10 per pod.
    let out = check(
        "TestScaleUpPerPodCMObject",
        object(json!({"type": "AverageValue", "averageValue": "10"}), 40.0),
        4,
        OK_UP,
    );
    assert_eq!(
        out.current_metrics.unwrap()[0].unwrap().average_value_milli,
        Some(13334)
    );
    // TestScaleUpCMExternal / TestScaleUpPerPodCMExternal
    let external = |target: Value| Case {
        metrics: vec![
            json!({"type": "External", "external": {"metric": {"name": "qps", "selector": {}}, "target": target}}),
        ],
        custom: Some(("qps", json!({"values": [8.6]}))),
        ..Case::default()
    };
    check(
        "TestScaleUpCMExternal",
        external(json!({"type": "Value", "value": "6666m"})),
        4,
        OK_UP,
    );
    check(
        "TestScaleUpPerPodCMExternal",
        external(json!({"type": "AverageValue", "averageValue": "2150m"})),
        4,
        OK_UP,
    );
}

fn scale_down_case() -> Case {
    Case {
        spec: 5,
        status: 5,
        ..cpu(50, &[100, 300, 500, 250, 250])
    }
}

#[test]
fn scale_down() {
    // TestScaleDown
    check("TestScaleDown", scale_down_case(), 3, OK_UP);
    // TestScaleDownStabilizeInitialSize: no history, so the seed (5 at t) holds the count.
    check(
        "TestScaleDownStabilizeInitialSize",
        Case {
            recommendations: None,
            ..scale_down_case()
        },
        5,
        &[
            ("AbleToScale", "True", "ScaleDownStabilized"),
            ("ScalingActive", "True", "ValidMetricFound"),
            ("ScalingLimited", "False", "DesiredWithinRange"),
        ],
    );
    // TestScaleDownIgnoresUnreadyPods
    check(
        "TestScaleDownIgnoresUnreadyPods",
        Case {
            readiness: vec![true, true, true, false, false],
            ..scale_down_case()
        },
        2,
        OK_UP,
    );
    // TestScaleDownIgnoresDeletionPods / TestScaleDownIgnoresFailedPods
    let seven = Case {
        requests: Some(vec![1.0; 7]),
        readiness: vec![true, true, true, true, true, false, false],
        ..scale_down_case()
    };
    check(
        "TestScaleDownIgnoresDeletionPods",
        Case {
            phase: vec!["Running"; 7],
            deleting: vec![false, false, false, false, false, true, true],
            ..seven.clone()
        },
        3,
        OK_UP,
    );
    check(
        "TestScaleDownIgnoresFailedPods",
        Case {
            phase: vec![
                "Running", "Running", "Running", "Running", "Running", "Failed", "Failed",
            ],
            ..seven
        },
        3,
        OK_UP,
    );
    // After TestStabilizeDownscale (legacy path): the metrics ask for 2, but a recommendation
    // of 4 inside the 5-minute window holds the count; the 10 from 10 minutes ago is too old.
    check(
        "legacy downscale stabilization",
        Case {
            min: 1,
            max: 5,
            spec: 4,
            status: 4,
            recommendations: Some(vec![(-600.0, 10), (-60.0, 4)]),
            ..cpu(100, &[50, 50, 50])
        },
        4,
        &[
            ("AbleToScale", "True", "ScaleDownStabilized"),
            ("ScalingLimited", "False", "DesiredWithinRange"),
        ],
    );
}

#[test]
fn limits_and_guards() {
    // TestMinReplicas: 3 % against 90 % → 1, held at min 2.
    check(
        "TestMinReplicas",
        Case {
            min: 2,
            max: 5,
            ..cpu(90, &[10, 95, 10])
        },
        2,
        &[("ScalingLimited", "True", "TooFewReplicas")],
    );
    // TestZeroMinReplicasDesiredZero
    check(
        "TestZeroMinReplicasDesiredZero",
        Case {
            min: 0,
            max: 5,
            ..cpu(90, &[0, 0, 0])
        },
        0,
        &[("ScalingLimited", "False", "DesiredWithinRange")],
    );
    // TestMinReplicasDesiredZero
    check(
        "TestMinReplicasDesiredZero",
        Case {
            min: 2,
            max: 5,
            ..cpu(90, &[0, 0, 0])
        },
        2,
        &[("ScalingLimited", "True", "TooFewReplicas")],
    );
    // TestZeroReplicas: scaling disabled, no metrics read.
    let out = check(
        "TestZeroReplicas",
        Case {
            min: 3,
            max: 5,
            spec: 0,
            status: 0,
            ..cpu(90, &[])
        },
        0,
        &[
            ("AbleToScale", "True", "SucceededGetScale"),
            ("ScalingActive", "False", "ScalingDisabled"),
        ],
    );
    assert!(out.recommendation.is_none() && out.current_metrics.is_none());
    // TestTooFewReplicas / TestTooManyReplicas / TestScaleUpRCImmediately / TestScaleDownRCImmediately
    for (name, min, max, spec, desired) in [
        ("TestTooFewReplicas", 3, 5, 2, 3),
        ("TestTooManyReplicas", 3, 5, 10, 5),
        ("TestScaleUpRCImmediately", 2, 6, 1, 2),
        ("TestScaleDownRCImmediately", 2, 5, 6, 5),
    ] {
        let out = check(
            name,
            Case {
                min,
                max,
                spec,
                status: spec,
                ..cpu(90, &[])
            },
            desired,
            &[("AbleToScale", "True", "SucceededRescale")],
        );
        assert_eq!(out.conditions.0.len(), 1, "{name}: only AbleToScale is set");
    }
    // TestMaxReplicas
    check(
        "TestMaxReplicas",
        Case {
            min: 2,
            max: 5,
            ..cpu(90, &[8000, 9500, 1000])
        },
        5,
        &[("ScalingLimited", "True", "TooManyReplicas")],
    );
    // TestSuperfluousMetrics (metrics of pods the selector does not return are dropped).
    check(
        "TestSuperfluousMetrics",
        Case {
            spec: 4,
            status: 4,
            ..cpu(100, &[4000, 9500, 3000, 7000])
        },
        6,
        &[("ScalingLimited", "True", "TooManyReplicas")],
    );
    // TestUpscaleCap: legacy limit max(8 × 3, 4) = 24.
    let cap = Case {
        min: 1,
        max: 100,
        requests: Some(vec![0.1; 3]),
        ..cpu(10, &[100, 200, 300])
    };
    check(
        "TestUpscaleCap",
        cap.clone(),
        24,
        &[("ScalingLimited", "True", "ScaleUpLimit")],
    );
    // TestUpscaleCapGreaterThanMaxReplicas (behavior: Percent 700 / 60 s)
    check(
        "TestUpscaleCapGreaterThanMaxReplicas",
        Case {
            max: 20,
            behavior: Some(
                json!({"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [{"type": "Percent", "value": 700, "periodSeconds": 60}]}}),
            ),
            ..cap
        },
        20,
        &[("ScalingLimited", "True", "TooManyReplicas")],
    );
    // TestMoreReplicasThanSpecNoScale: 5 pods during a surge, spec 4, exactly on target.
    check(
        "TestMoreReplicasThanSpecNoScale",
        Case {
            min: 1,
            max: 8,
            spec: 4,
            status: 5,
            requests: Some(vec![1.0; 5]),
            ..cpu(50, &[500, 500, 500, 500, 500])
        },
        4,
        &[("AbleToScale", "True", "ReadyForNewScale")],
    );
}

#[test]
fn missing_and_failing_metrics() {
    // TestMissingMetrics: two pods without samples count as using their request.
    check(
        "TestMissingMetrics",
        Case {
            spec: 4,
            status: 4,
            ..cpu(100, &[400, 95])
        },
        3,
        OK_UP,
    );
    // TestEmptyMetrics: no samples at all.
    check(
        "TestEmptyMetrics",
        Case {
            spec: 4,
            status: 4,
            ..cpu(100, &[])
        },
        4,
        &[
            ("AbleToScale", "True", "SucceededGetScale"),
            ("ScalingActive", "False", "FailedGetResourceMetric"),
        ],
    );
    // TestEmptyCPURequest: the selector returned no pods.
    check(
        "TestEmptyCPURequest",
        Case {
            min: 1,
            max: 5,
            spec: 1,
            status: 1,
            requests: Some(vec![]),
            ..cpu(100, &[200])
        },
        1,
        &[("ScalingActive", "False", "FailedGetResourceMetric")],
    );
    let external_unavailable = json!({"type": "External", "external": {"metric": {"name": "qps", "selector": {}}, "target": {"type": "Value", "value": "100m"}}});
    // TestScaleUpOneMetricEmpty: CPU still asks for more, so the failed metric is tolerated.
    check(
        "TestScaleUpOneMetricEmpty",
        Case {
            metrics: vec![external_unavailable.clone()],
            ..cpu(30, &[300, 400, 500])
        },
        4,
        OK_UP,
    );
    // TestNoScaleDownOneMetricEmpty: never scale down on a partial view.
    let out = check(
        "TestNoScaleDownOneMetricEmpty",
        Case {
            metrics: vec![external_unavailable],
            ..scale_down_case()
        },
        5,
        &[
            ("AbleToScale", "True", "SucceededGetScale"),
            ("ScalingActive", "False", "FailedGetExternalMetric"),
        ],
    );
    assert!(out.recommendation.is_none());
}

/// The seed's worked example: 10 pods at [12,15,8,11,14,9,13,10,16,11], target 10 → 12.
#[test]
fn seed_worked_example() {
    let pods: Vec<Value> = [12, 15, 8, 11, 14, 9, 13, 10, 16, 11]
        .iter()
        .map(|v| json!({"value": v}))
        .collect();
    let case = Case {
        min: 3,
        max: 20,
        spec: 10,
        status: 10,
        metrics: vec![
            json!({"type": "Pods", "pods": {"metric": {"name": "queue_depth_per_tenant"}, "target": {"type": "AverageValue", "averageValue": "10"}}}),
        ],
        custom: Some(("queue_depth_per_tenant", json!({ "pods": pods }))),
        ..Case::default()
    };
    let out = check("seed worked example", case, 12, OK_UP);
    assert_eq!(out.recommendation, Some(12));
    assert_eq!(
        out.current_metrics.unwrap()[0].unwrap().average_value_milli,
        Some(11900)
    );
}

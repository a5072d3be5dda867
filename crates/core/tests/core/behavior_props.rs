//! Properties of the Kubernetes behavior stage (stabilization, rate policies, min/max).

use proptest::prelude::*;
use tenantscale_core::scaling::hpa::{HpaState, MetricInput};
use tenantscale_core::scaling::spec::{ControllerSettings, HpaConfig, HpaSpec};

fn config(
    min: i32,
    max: i32,
    up_window: i32,
    down_window: i32,
    pods: i32,
    percent: i32,
) -> HpaConfig {
    let spec: HpaSpec = serde_json::from_value(serde_json::json!({
        "minReplicas": min, "maxReplicas": max,
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": up_window, "policies": [
                {"type": "Pods", "value": pods, "periodSeconds": 60}, {"type": "Percent", "value": percent, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": down_window, "policies": [{"type": "Pods", "value": pods, "periodSeconds": 60}]}
        }
    }))
    .unwrap();
    spec.resolve(ControllerSettings::default()).unwrap()
}

/// A controller state reached by earlier raw recommendations, as the replay drives it.
fn run(cfg: &HpaConfig, recs: &[i32], start: i32) -> (HpaState, i32, f64) {
    let mut state = HpaState::default();
    let mut current = start;
    let mut now = 0.0;
    for r in recs {
        current = cfg
            .reconcile(
                &mut state,
                now,
                current,
                current,
                MetricInput::Recommendation(*r),
            )
            .outcome
            .desired;
        now += 15.0;
    }
    (state, current, now)
}

proptest! {
    #[test]
    fn stays_within_min_and_max(
        min in 1..5i32, span in 0..30i32, up in 0..300i32, down in 0..600i32, pods in 1..10i32, percent in 1..300i32,
        recs in prop::collection::vec(0..100i32, 1..40),
    ) {
        let cfg = config(min, min + span, up, down, pods, percent);
        let mut state = HpaState::default();
        let mut current = min;
        for (k, r) in recs.iter().enumerate() {
            current = cfg.reconcile(&mut state, k as f64 * 15.0, current, current, MetricInput::Recommendation(*r)).outcome.desired;
            prop_assert!((min..=min + span).contains(&current), "{current} outside [{min}, {}]", min + span);
        }
    }

    #[test]
    fn monotone_in_the_recommendation(
        history in prop::collection::vec(1..60i32, 0..20), a in 0..100i32, b in 0..100i32,
        up in 0..300i32, down in 0..600i32, pods in 1..10i32, percent in 1..300i32,
    ) {
        let cfg = config(1, 50, up, down, pods, percent);
        let (state, current, now) = run(&cfg, &history, 3);
        let (low, high) = (a.min(b), a.max(b));
        let d_low = cfg.reconcile(&mut state.clone(), now, current, current, MetricInput::Recommendation(low)).outcome.desired;
        let d_high = cfg.reconcile(&mut state.clone(), now, current, current, MetricInput::Recommendation(high)).outcome.desired;
        prop_assert!(d_low <= d_high, "{low} -> {d_low}, {high} -> {d_high}");
    }

    #[test]
    fn scale_up_respects_the_larger_policy_per_period(
        start in 1..20i32, pods in 1..10i32, percent in 1..200i32, recs in prop::collection::vec(0..200i32, 1..30),
    ) {
        // Rising recommendations, no stabilization: the growth within any 60 s period is bounded
        // by the larger of the two policies applied to the count the period started with.
        let mut recs: Vec<i32> = recs.iter().map(|r| (*r).max(start)).collect();
        recs.sort_unstable();
        let cfg = config(1, 1000, 0, 0, pods, percent);
        let mut state = HpaState::default();
        let mut current = start;
        let mut history = vec![(0.0f64, start)];
        for (k, r) in recs.iter().enumerate() {
            let now = k as f64 * 15.0;
            current = cfg.reconcile(&mut state, now, current, current, MetricInput::Recommendation(*r)).outcome.desired;
            history.push((now, current));
            // Replicas before the first scale event inside the trailing 60 s period.
            let period_start = history.iter().rev().find(|(t, _)| *t <= now - 60.0).map_or(start, |(_, c)| *c);
            let limit = (period_start + pods).max((f64::from(period_start) * (1.0 + f64::from(percent) / 100.0)).ceil() as i32);
            prop_assert!(current <= limit, "{current} > {limit} (period start {period_start})");
        }
    }
}

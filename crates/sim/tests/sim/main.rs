//! Simulator tests: conservation, determinism, decisions equal to the core engine's, bad
//! scenarios, traces, and the claims the README makes about the shipped scenarios.

use std::path::{Path, PathBuf};
use tenantscale_core::scaling::hpa::{HpaState, MetricInput};
use tenantscale_core::scaling::spec::ControllerSettings;
use tenantscale_core::scaling::tenant_aware::TenantAwareState;
use tenantscale_sim::policy::{DecisionRecord, seed_hpa_spec};
use tenantscale_sim::{Policy, Report, Scenario, simulate, simulate_recorded};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A short spike scenario on the GCC platform.
fn short(duration: &str, spike_at: &str, spike_for: &str) -> Scenario {
    let text = format!(
        "name: short\ncatalog: gcc-platform.yaml\nduration: {duration}\nclasses:\n\
  - {{name: media, match: media-*, baseRps: 1.0, dataBytes: 50Mi, rate: [spike: {{at: {spike_at}, for: {spike_for}, multiplier: 50}}]}}\n\
  - {{name: finance, match: finance-*, baseRps: 1.0, dataBytes: 30Mi}}\n\
  - {{name: retail, match: retail-*, baseRps: 1.0, dataBytes: 40Mi}}\n"
    );
    Scenario::parse(&text, "short.yaml", &examples(), None).unwrap()
}

fn all_policies() -> Vec<Policy> {
    vec![
        Policy::Static(0),
        Policy::HpaCpu,
        Policy::HpaQueue,
        Policy::TenantAware,
    ]
}

#[test]
fn every_arrival_is_served_rejected_or_still_in_the_system() {
    let sc = short("20m", "5m", "10m");
    let report = simulate(&sc, &all_policies(), 7, None);
    for p in &report.policies {
        let requests: u64 = p.classes.iter().map(|c| c.requests).sum();
        let served: u64 = p.classes.iter().map(|c| c.served).sum();
        let rejected: u64 = p.classes.iter().map(|c| c.rejected_429).sum();
        assert!(requests > 100_000, "{}: {requests}", p.name);
        assert_eq!(
            requests,
            served + rejected + p.in_system_at_end,
            "{}",
            p.name
        );
    }
}

fn without_wall_time(r: &Report) -> String {
    let mut v = serde_json::to_value(r).unwrap();
    v["wallSeconds"] = serde_json::Value::Null;
    v.to_string()
}

#[test]
fn a_seed_determines_the_run() {
    let sc = short("10m", "3m", "5m");
    let policies = [Policy::TenantAware, Policy::HpaQueue];
    let a = simulate(&sc, &policies, 11, None);
    let b = simulate(&sc, &policies, 11, None);
    assert_eq!(without_wall_time(&a), without_wall_time(&b));
    let c = simulate(&sc, &policies, 12, None);
    assert_ne!(without_wall_time(&a), without_wall_time(&c));
    // Every policy sees the same arrivals.
    assert_eq!(
        a.policies[0].classes[0].requests,
        a.policies[1].classes[0].requests
    );
}

#[test]
fn tenant_aware_decisions_equal_the_core_engines() {
    let sc = short("15m", "5m", "5m");
    let run = simulate_recorded(&sc, &Policy::TenantAware, 3);
    let cfg = sc.catalog.pool.tenant_aware.clone();
    let mut state = TenantAwareState::default();
    let mut scaled = false;
    assert!(run.decisions.len() > 400);
    for d in &run.decisions {
        let DecisionRecord::TenantAware {
            now,
            current,
            demands,
            desired,
        } = d
        else {
            panic!("wrong record")
        };
        assert_eq!(
            cfg.decide(&mut state, *now, *current, demands)
                .outcome
                .desired,
            *desired,
            "t={now}"
        );
        scaled |= desired != current;
    }
    assert!(scaled, "the spike made it scale");
}

#[test]
fn hpa_decisions_equal_the_core_engines() {
    let sc = short("15m", "5m", "5m");
    let run = simulate_recorded(&sc, &Policy::HpaQueue, 3);
    let pool = &sc.catalog.pool;
    let cfg = seed_hpa_spec(pool.min_replicas, pool.max_replicas)
        .resolve(ControllerSettings::default())
        .unwrap();
    let mut state = HpaState::default();
    let mut scaled = false;
    for d in &run.decisions {
        let DecisionRecord::Hpa {
            now,
            current,
            observations,
            desired,
        } = d
        else {
            panic!("wrong record")
        };
        let got = cfg.reconcile(
            &mut state,
            *now,
            *current,
            *current,
            MetricInput::Observations(observations),
        );
        assert_eq!(got.outcome.desired, *desired, "t={now}");
        scaled |= desired != current;
    }
    assert!(scaled && run.decisions.len() > 50);
}

#[test]
fn scenario_errors_name_the_field_and_line() {
    let cases = [
        (
            "name: x\ncatalog: gcc-platform.yaml\nduration: 1h\nclasses:\n  - {name: a, match: nobody-*, baseRps: 1}\n",
            "classes[0].match (line 5)",
            "matches no tenant",
        ),
        (
            "name: x\ncatalog: gcc-platform.yaml\nduration: 1h\nclasses:\n  - {name: a, count: 3, tier: platinum, baseRps: 1}\n",
            "classes[0].tier (line 5)",
            "unknown tier",
        ),
        (
            "name: x\ncatalog: gcc-platform.yaml\nduration: 1h\nclasses:\n  - name: a\n    match: media-*\n    baseRps: 1\n    rate: [spike: {at: 2h, for: 1h, multiplier: 5}]\n",
            "classes[0].rate[0].spike.at (line 8)",
            "inside the scenario's duration",
        ),
        (
            "name: x\ncatalog: gcc-platform.yaml\nduration: 1h\nclasses:\n  - {name: a, match: media-*, baseRps: 1, colour: red}\n",
            "classes[0].colour (line 5)",
            "unknown field",
        ),
        (
            "name: x\ncatalog: gcc-platform.yaml\nduration: soon\nclasses: []\n",
            "duration (line 3)",
            "bad duration",
        ),
        (
            "name: x\ncatalog: gcc-platform.yaml\nduration: 1h\nmodel: {llmSigma: 9}\nclasses:\n  - {name: a, match: media-*, baseRps: 1}\n",
            "model.llmSigma (line 4)",
            "must be in [0, 3]",
        ),
    ];
    for (text, location, message) in cases {
        let e = Scenario::parse(text, "x.yaml", &examples(), None).unwrap_err();
        assert!(e.location.ends_with(location), "{e}");
        assert!(e.message.contains(message), "{e}");
    }
}

#[test]
fn a_trace_replaces_poisson_arrivals() {
    let dir = std::env::temp_dir().join(format!("tenantscale-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        examples().join("gcc-platform.yaml"),
        dir.join("gcc-platform.yaml"),
    )
    .unwrap();
    let mut csv = String::from("t,tenant_id\n");
    for i in 0..1000 {
        csv.push_str(&format!(
            "{},{}\n",
            f64::from(i) * 0.05,
            if i % 2 == 0 { "media-1" } else { "retail-3" }
        ));
    }
    std::fs::write(dir.join("trace.csv"), csv).unwrap();
    let text = "name: traced\ncatalog: gcc-platform.yaml\nduration: 2m\ntrace: trace.csv\nclasses:\n  - {name: media, match: media-1, baseRps: 0}\n  - {name: retail, match: retail-3, baseRps: 0}\n";
    std::fs::write(dir.join("s.yaml"), text).unwrap();
    let sc = Scenario::load(&dir.join("s.yaml"), None).unwrap();
    let r = simulate(&sc, &[Policy::TenantAware], 1, None);
    let classes = &r.policies[0].classes;
    assert_eq!((classes[0].requests, classes[1].requests), (500, 500));
    let done: u64 = classes.iter().map(|c| c.served + c.rejected_429).sum();
    assert_eq!(done + r.policies[0].in_system_at_end, 1000);
    assert!(classes[0].served == 500, "media-1 is far under its limits");
}

/// The claims the README makes about `media-spike`, checked on the shipped scenario.
#[test]
fn media_spike_claims_hold() {
    let sc = Scenario::load(&examples().join("scenarios/media-spike.yaml"), None).unwrap();
    let r = simulate(
        &sc,
        &[Policy::HpaCpu, Policy::HpaQueue, Policy::TenantAware],
        42,
        None,
    );
    let [cpu, queue, aware] = [&r.policies[0], &r.policies[1], &r.policies[2]];
    let relief_aware = aware.relief_s.expect("tenant-aware relieves the spike");
    let relief_queue = queue.relief_s.expect("hpa-queue relieves the spike");
    assert!(
        relief_queue >= 3.0 * relief_aware,
        "relief {relief_aware} s vs hpa-queue {relief_queue} s"
    );
    for class in aware.classes.iter().filter(|c| !c.spiking) {
        let (p99, pre) = (class.p99_ms.unwrap(), class.pre_spike_p99_ms.unwrap());
        assert!(
            p99 <= 1.2 * pre,
            "tenant-aware {}: p99 {p99} vs {pre} before the spike",
            class.name
        );
    }
    for class in cpu.classes.iter().filter(|c| !c.spiking) {
        let (p99, pre) = (class.p99_ms.unwrap(), class.pre_spike_p99_ms.unwrap());
        assert!(
            p99 > 1.2 * pre,
            "hpa-cpu {}: p99 {p99} vs {pre} before the spike",
            class.name
        );
    }
    let max_share = sc
        .catalog
        .tenants
        .iter()
        .map(|t| t.max_share)
        .fold(0.0, f64::max);
    assert!(
        aware.max_tenant_share <= max_share,
        "{} > {max_share}",
        aware.max_tenant_share
    );
}

/// Autoscaling against a pool provisioned for peak, on two days with one media spike.
#[test]
fn tenant_aware_uses_far_fewer_pod_hours_than_peak_provisioning() {
    let sc = short("2d", "26h", "3h");
    let r = simulate(&sc, &[Policy::TenantAware, Policy::Static(0)], 5, None);
    let (aware, fixed) = (&r.policies[0], &r.policies[1]);
    assert_eq!(
        fixed.peak_replicas, aware.peak_replicas,
        "static is sized to the peak"
    );
    assert!(
        aware.pod_hours <= 0.6 * fixed.pod_hours,
        "{} vs {}",
        aware.pod_hours,
        fixed.pod_hours
    );
}

//! Decision-time benchmarks for the scaling engine.
//!
//! `cargo bench -p tenantscale-core --bench scaling`
//!
//! Targets (issue #2): one tenant-aware decision over 1,000 tenants, behavior stage included,
//! under 50 µs; one HPA decision over 500 pods' samples under 50 µs. `baseline/*` measures a
//! bare sum over the same inputs in the same run, so results can be read as ratios on a noisy
//! machine.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tenantscale_core::scaling::hpa::{HpaState, MetricInput};
use tenantscale_core::scaling::replica::{Observation, PodSample};
use tenantscale_core::scaling::spec::{ControllerSettings, HpaSpec};
use tenantscale_core::scaling::tenant_aware::{TenantAwareConfig, TenantAwareState, TenantDemand};

fn tenants(n: usize) -> Vec<TenantDemand> {
    (0..n)
        .map(|i| TenantDemand {
            in_flight: (i % 7) as f64,
            queued: (i % 13) as f64 * 3.0,
            arrival_rate: (i % 5) as f64 * 2.5,
            mean_service_seconds: 0.2,
            max_share: [0.1, 0.2, 0.3][i % 3],
        })
        .collect()
}

fn tenant_aware(c: &mut Criterion) {
    let cfg = TenantAwareConfig::new(3, 20, 8).unwrap();
    let demand = tenants(1000);
    // A state one minute into operation: a full stable window of samples and history.
    let mut state = TenantAwareState::default();
    let mut current = 3;
    for k in 0..60 {
        current = cfg
            .decide(&mut state, f64::from(k), current, &demand)
            .outcome
            .desired;
    }
    c.bench_function("tenant_aware/decide/1000-tenants", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| black_box(cfg.decide(&mut s, 60.0, current, black_box(&demand))),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("baseline/sum-1000-demands", |b| {
        b.iter(|| {
            black_box(&demand)
                .iter()
                .map(|t| t.raw().min(48.0))
                .sum::<f64>()
        })
    });
}

fn hpa(c: &mut Criterion) {
    let spec: HpaSpec = serde_json::from_value(serde_json::json!({
        "minReplicas": 3, "maxReplicas": 1000,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        "behavior": {}
    }))
    .unwrap();
    let cfg = spec.resolve(ControllerSettings::default()).unwrap();
    let samples: Vec<PodSample> = (0..500)
        .map(|i| PodSample {
            request_milli: Some(1000),
            ..PodSample::ready(500 + (i % 400) as i64)
        })
        .collect();
    let observations = vec![Some(Observation::PodSamples(samples.clone()))];
    let state = HpaState::default();
    c.bench_function("hpa/reconcile/500-pods", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                black_box(cfg.reconcile(
                    &mut s,
                    0.0,
                    500,
                    500,
                    MetricInput::Observations(black_box(&observations)),
                ))
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("baseline/sum-500-samples", |b| {
        b.iter(|| {
            black_box(&samples)
                .iter()
                .filter_map(|s| s.value_milli)
                .sum::<i64>()
        })
    });
}

criterion_group!(benches, tenant_aware, hpa);
criterion_main!(benches);

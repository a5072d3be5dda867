//! Simulator throughput.
//!
//! `cargo bench -p tenantscale-sim --bench simulate`
//!
//! Targets (issue #3): ≥ 5 million simulated requests per second on one core; the shipped
//! `media-spike` (4 simulated hours, four policies) in under 10 s. Criterion reports requests
//! per second (`thrpt`) for one policy on a 20-minute slice of the media spike.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;
use tenantscale_sim::{Policy, Scenario, simulate};

fn slice() -> Scenario {
    let text = "name: bench\ncatalog: gcc-platform.yaml\nduration: 20m\nclasses:\n\
  - {name: media, match: media-*, baseRps: 1.0, dataBytes: 50Mi, rate: [spike: {at: 5m, for: 10m, multiplier: 50}]}\n\
  - {name: finance, match: finance-*, baseRps: 1.0, dataBytes: 30Mi}\n\
  - {name: retail, match: retail-*, baseRps: 1.0, dataBytes: 40Mi}\n";
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    Scenario::parse(text, "bench.yaml", &examples, None).unwrap()
}

fn throughput(c: &mut Criterion) {
    let sc = slice();
    let mut group = c.benchmark_group("simulate");
    group.sample_size(10);
    for policy in [Policy::TenantAware, Policy::HpaQueue] {
        let requests = simulate(&sc, std::slice::from_ref(&policy), 1, None).requests;
        group.throughput(Throughput::Elements(requests));
        group.bench_function(policy.name(), |b| {
            b.iter(|| simulate(&sc, std::slice::from_ref(&policy), 1, None))
        });
    }
    group.finish();

    let media = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios/media-spike.yaml"),
        None,
    )
    .unwrap();
    let mut group = c.benchmark_group("media-spike");
    group.sample_size(10);
    let policies = [
        Policy::Static(0),
        Policy::HpaCpu,
        Policy::HpaQueue,
        Policy::TenantAware,
    ];
    group.bench_function("four-policies", |b| {
        b.iter(|| simulate(&media, &policies, 42, None))
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);

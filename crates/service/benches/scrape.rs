//! The cost of one `/metrics` scrape with 1,000 tenants, every tenant having served queries
//! (so every per-tenant series, histograms included, is present).
//!
//! Run: `cargo bench -p tenantscale-service --bench scrape`. Prints the median and p99 of 200
//! scrapes (OpenMetrics encoding plus the rewrite to the Prometheus text format, as `/metrics`
//! does), and as a baseline measured in the same run, formatting the same number of sample
//! lines with `format!`.

use std::time::{Duration, Instant};
use tenantscale_core::catalog::Catalog;
use tenantscale_core::text::to_prometheus_text;
use tenantscale_service::pod::{Pod, PodConfig};
use tenantscale_service::store::Store;

const TENANTS: usize = 1_000;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let mut yaml = String::from(
        "cluster: {cores: 400, memory: 800Gi}\ntiers:\n  standard: {share: 0.9, maxShare: 0.3}\ntenants:\n",
    );
    for t in 0..TENANTS {
        yaml.push_str(&format!("  - {{id: tenant-{t:04}, tier: standard}}\n"));
    }
    yaml.push_str("pool: {maxReplicas: 100, slotsPerPod: 8}\n");
    let catalog = Catalog::parse(&yaml).expect("catalog").catalog;
    let pod = Pod::new(
        catalog,
        Store::in_memory().expect("store"),
        &PodConfig {
            slots: 8,
            cache_bytes: 1 << 20,
            hnsw_threshold: usize::MAX,
            embedder: std::sync::Arc::new(tenantscale_service::embedder::Embedder::Hashed),
        },
    );
    for t in 0..TENANTS {
        pod.metrics.finished(t, "success", 0.05, 0.04);
        pod.metrics.rejected(t, "queue_full");
    }
    let scrape = || {
        let t = Instant::now();
        let text = to_prometheus_text(&pod.metrics.encode(&pod.load(), pod.slots()));
        (t.elapsed(), text)
    };
    let (_, text) = scrape();
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    let ours: Vec<Duration> = (0..200).map(|_| scrape().0).collect();
    let baseline: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let mut out = String::new();
            for i in 0..lines {
                out.push_str(&format!("metric{{tenant_id=\"tenant-{i:04}\"}} {i}\n"));
            }
            std::hint::black_box(out);
            t.elapsed()
        })
        .collect();
    let (p50, p99) = percentiles(ours);
    let (b50, _) = percentiles(baseline);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{TENANTS} tenants: {lines} samples, {:.0} KiB",
        text.len() as f64 / 1024.0
    );
    println!(
        "scrape: p50 {:.2} ms p99 {:.2} ms (target < 10 ms); baseline format! of as many lines p50 {:.2} ms ({:.1}x)",
        ms(p50),
        ms(p99),
        ms(b50),
        ms(p50) / ms(b50)
    );
}

//! Retrieval at 10,000 chunks for one tenant: query latency on a cache hit (embed + exact
//! top-5), the same through the pod with the store generation check every query makes, the
//! cache-miss load from SQLite, and the memory a cached tenant takes.
//!
//! Run: `cargo bench -p tenantscale-service --bench retrieval`. Prints medians and p99 of many
//! repetitions, plus a baseline measured in the same run: the same scan with a plain
//! single-accumulator dot product. With `TENANTSCALE_BENCH_POSTGRES` (a database URL; the
//! bench writes tenant `tenant-00` there) the pod's cache hit is measured on Postgres too.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tenantscale_core::catalog::Catalog;
use tenantscale_core::retrieval::{DIMENSIONS, embed};
use tenantscale_service::embedder::Embedder;
use tenantscale_service::pod::{Pod, PodConfig, TenantIndex};
use tenantscale_service::store::{Loaded, NewDocument, Store};

const CHUNKS: usize = 10_000;

/// A search: query -> (row, score), best first.
type Search<'a> = &'a dyn Fn(&str) -> Vec<(usize, f32)>;
const VOCABULARY: [&str; 40] = [
    "tenant",
    "scaling",
    "pod",
    "queue",
    "latency",
    "gateway",
    "cache",
    "replica",
    "drain",
    "quota",
    "media",
    "finance",
    "retail",
    "embedding",
    "index",
    "query",
    "document",
    "budget",
    "window",
    "policy",
    "spike",
    "burst",
    "weight",
    "share",
    "limit",
    "retry",
    "signal",
    "metric",
    "cluster",
    "node",
    "memory",
    "cpu",
    "token",
    "answer",
    "passage",
    "score",
    "vector",
    "shard",
    "region",
    "tier",
];

/// Deterministic text of about 600 characters: one chunk per document.
fn document(i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut words = Vec::new();
    while words.iter().map(|w: &String| w.len() + 1).sum::<usize>() < 600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = VOCABULARY[(x % VOCABULARY.len() as u64) as usize];
        words.push(format!("{w}{}", x % 97));
    }
    words.join(" ") + "."
}

/// Like [`document`], but from one of 100 topics: 80 % of its words come from the topic's 25,
/// as a real corpus clusters by subject.
fn topical_document(i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let topic = next() % 100;
    let mut words = Vec::new();
    while words.iter().map(|w: &String| w.len() + 1).sum::<usize>() < 600 {
        let r = next();
        let pick = if r % 5 == 0 {
            next()
        } else {
            topic * 31 + next() % 25
        };
        let w = VOCABULARY[(pick % VOCABULARY.len() as u64) as usize];
        words.push(format!("{w}{}", (pick / VOCABULARY.len() as u64) % 97));
    }
    words.join(" ") + "."
}

fn plain_top_k(vectors: &[f32], query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (row, v) in vectors.chunks_exact(DIMENSIONS).enumerate() {
        let score: f32 = v.iter().zip(query).map(|(x, y)| x * y).sum();
        if best.len() < k || score > best[best.len() - 1].1 {
            let at = best.partition_point(|(_, s)| *s >= score);
            best.insert(at, (row, score));
            best.truncate(k);
        }
    }
    best
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// The median of rounds of (p50, p99), by p50.
fn median_round(rounds: &mut [(Duration, Duration)]) -> (Duration, Duration) {
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("tenantscale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Store::open(&dir.join("store.db")).expect("store");
    let docs: Vec<NewDocument> = (0..CHUNKS)
        .map(|i| NewDocument {
            id: format!("doc-{i:05}"),
            text: document(i),
            metadata: serde_json::Value::Null,
        })
        .collect();
    let started = Instant::now();
    let unlimited = tenantscale_core::catalog::StorageQuota {
        documents: u64::MAX,
        bytes: u64::MAX,
    };
    let (written, _) = store
        .ingest("tenant-00", &docs, &Embedder::Hashed, &unlimited)
        .expect("ingest");
    println!("ingest: {written} chunks in {}", ms(started.elapsed()));

    let loads: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let loaded = store.load("tenant-00").expect("load");
            assert_eq!(loaded.chunks.len(), written);
            std::hint::black_box(loaded.vectors);
            t.elapsed()
        })
        .collect();
    let (load_p50, load_p99) = percentiles(loads);
    let Loaded {
        chunks, vectors, ..
    } = store.load("tenant-00").expect("load");
    let index = TenantIndex::new(chunks, vectors, usize::MAX);
    let bytes = index.bytes() as usize;

    let queries: Vec<String> = (0..1000)
        .map(|i| document(i * 7 + 3)[..80].to_string())
        .collect();
    let time = |search: Search| {
        let samples: Vec<Duration> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let hits = search(q);
                std::hint::black_box(hits);
                t.elapsed()
            })
            .collect();
        percentiles(samples)
    };
    // Interleave rounds so machine noise hits both alike.
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..3 {
        ours.push(time(&|q| {
            index.search(&Embedder::Hashed, q, 5).expect("search")
        }));
        plain.push(time(&|q| plain_top_k(&index.vectors, &embed(q), 5)));
    }
    let (ours_p50, ours_p99) = median_round(&mut ours);
    let (plain_p50, plain_p99) = median_round(&mut plain);
    println!(
        "tenant: {} chunks, {} per cached tenant",
        index.chunks.len(),
        mib(bytes)
    );
    println!(
        "cache-miss load from SQLite: p50 {} p99 {}",
        ms(load_p50),
        ms(load_p99)
    );
    println!(
        "query on a cache hit (embed + top-5): p50 {} p99 {}  (target p99 <= 5 ms)",
        ms(ours_p50),
        ms(ours_p99)
    );
    println!(
        "baseline, single-accumulator dot:     p50 {} p99 {}  (ours/baseline p50 {:.2}x)",
        ms(plain_p50),
        ms(plain_p99),
        ours_p50.as_secs_f64() / plain_p50.as_secs_f64()
    );
    let pod_store = Store::open(&dir.join("store.db")).expect("store");
    through_the_pod("SQLite", pod_store, &time);
    match std::env::var("TENANTSCALE_BENCH_POSTGRES") {
        Ok(url) => {
            let store = Store::connect_postgres(&url).expect("Postgres");
            store
                .ingest("tenant-00", &docs, &Embedder::Hashed, &unlimited)
                .expect("ingest");
            through_the_pod("Postgres", store, &time);
        }
        Err(_) => println!("Postgres: skipped (set TENANTSCALE_BENCH_POSTGRES)"),
    }
    std::fs::remove_dir_all(&dir).ok();
    let topical: Vec<String> = (0..1000)
        .map(|i| topical_document(i * 7 + 3)[..80].to_string())
        .collect();
    beyond_the_threshold("topical corpus", &topical_document, &topical, &time);
    beyond_the_threshold("no topics (worst case)", &document, &queries, &time);
    #[cfg(feature = "minilm")]
    minilm(&queries);
}

/// A query of tenant-00 as a pod serves it on a cache hit: the read of the tenant's store
/// generation that keeps pods coherent, then embed + top-5; and that read alone.
fn through_the_pod(backend: &str, store: Store, time: &dyn Fn(Search) -> (Duration, Duration)) {
    let catalog = "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {share: 0.5}\n\
tenants:\n  - {id: tenant-00, tier: gold}\n\
pool: {maxReplicas: 4, slotsPerPod: 4, queuePerTenant: 10}\n";
    let config = PodConfig {
        slots: 4,
        cache_bytes: 1 << 30,
        hnsw_threshold: usize::MAX,
        embedder: Arc::new(Embedder::Hashed),
    };
    let pod = Pod::new(
        Catalog::parse(catalog).expect("catalog").catalog,
        store,
        &config,
    );
    pod.index(0).expect("the first load");
    let (mut served, mut checks) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        served.push(time(&|q| {
            let index = pod.index(0).expect("index");
            index.search(&Embedder::Hashed, q, 5).expect("search")
        }));
        checks.push(time(&|_| {
            std::hint::black_box(pod.store.generation("tenant-00").expect("generation"));
            Vec::new()
        }));
    }
    let (served_p50, served_p99) = median_round(&mut served);
    let (check_p50, check_p99) = median_round(&mut checks);
    println!(
        "query on a cache hit through the pod ({backend}, generation check included): p50 {} p99 {}  (target p99 <= 5 ms); the check alone: p50 {} p99 {}",
        ms(served_p50),
        ms(served_p99),
        ms(check_p50),
        ms(check_p99)
    );
}

/// The MiniLM embedder's cost (`--features minilm`, `TENANTSCALE_MINILM_DIR`): one query at a
/// time, as the pod embeds them, against the built-in embedder; and chunks per second at ingest.
#[cfg(feature = "minilm")]
fn minilm(queries: &[String]) {
    let Ok(dir) = std::env::var("TENANTSCALE_MINILM_DIR") else {
        println!("MiniLM: skipped (set TENANTSCALE_MINILM_DIR)");
        return;
    };
    let started = Instant::now();
    let model = Embedder::from_spec(&format!("minilm:{dir}")).expect("model");
    println!("MiniLM: loaded in {}", ms(started.elapsed()));
    let per_query = |embedder: &Embedder| {
        let samples = queries[..200]
            .iter()
            .map(|q| {
                let t = Instant::now();
                std::hint::black_box(embedder.embed(q).expect("embed"));
                t.elapsed()
            })
            .collect();
        percentiles(samples)
    };
    let (model_p50, model_p99) = per_query(&model);
    let (hashed_p50, hashed_p99) = per_query(&Embedder::Hashed);
    println!(
        "  query embedding: MiniLM p50 {} p99 {}; built-in p50 {} p99 {} (MiniLM/built-in p50 {:.0}x)",
        ms(model_p50),
        ms(model_p99),
        ms(hashed_p50),
        ms(hashed_p99),
        model_p50.as_secs_f64() / hashed_p50.as_secs_f64()
    );
    let chunks: Vec<String> = (0..256).map(document).collect();
    let texts: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let t = Instant::now();
    model.embed_all(&texts).expect("embed");
    println!(
        "  ingest: {:.0} chunks/s (256 chunks of ~600 characters, batches of 32)",
        texts.len() as f64 / t.elapsed().as_secs_f64()
    );
}

/// A tenant past the HNSW threshold: graph build time, its memory, and search through it
/// against the exact scan of the same vectors (ratio and recall@5).
fn beyond_the_threshold(
    corpus: &str,
    document: &dyn Fn(usize) -> String,
    queries: &[String],
    time: &dyn Fn(Search) -> (Duration, Duration),
) {
    let rows: usize = std::env::var("TENANTSCALE_BENCH_ANN_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let vectors: Vec<f32> = (0..rows).flat_map(|i| embed(&document(i))).collect();
    let chunks = (0..rows)
        .map(|i| tenantscale_service::store::Chunk {
            document_id: format!("doc-{i:06}"),
            chunk_id: i as i64,
            text: String::new(),
        })
        .collect();
    let index = TenantIndex::new(chunks, vectors, 0);
    let exact_results: Vec<Vec<(usize, f32)>> = queries
        .iter()
        .map(|q| index.search(&Embedder::Hashed, q, 5).expect("search"))
        .collect();
    let mut exact = Vec::new();
    for _ in 0..3 {
        exact.push(time(&|q| {
            index.search(&Embedder::Hashed, q, 5).expect("search")
        }));
    }
    let started = Instant::now();
    index.build_graph();
    let build = started.elapsed();
    let mut graph = Vec::new();
    for _ in 0..3 {
        graph.push(time(&|q| {
            index.search(&Embedder::Hashed, q, 5).expect("search")
        }));
    }
    let (mut found, mut same_first) = (0, 0);
    for (q, want) in queries.iter().zip(&exact_results) {
        let got = index.search(&Embedder::Hashed, q, 5).expect("search");
        found += want
            .iter()
            .filter(|w| got.iter().any(|g| g.0 == w.0))
            .count();
        same_first += usize::from(got.first().map(|g| g.0) == want.first().map(|w| w.0));
    }
    let (exact_p50, exact_p99) = median_round(&mut exact);
    let (graph_p50, graph_p99) = median_round(&mut graph);
    println!(
        "{corpus}, {rows} chunks: HNSW build {} ({} per cached tenant with the graph)",
        ms(build),
        mib(index.bytes() as usize)
    );
    println!(
        "  exact scan:  p50 {} p99 {}\n  HNSW graph:  p50 {} p99 {}  (graph/exact p50 {:.3}x, recall@5 {:.3}, same first passage {:.3})",
        ms(exact_p50),
        ms(exact_p99),
        ms(graph_p50),
        ms(graph_p99),
        graph_p50.as_secs_f64() / exact_p50.as_secs_f64(),
        found as f64 / (5 * queries.len()) as f64,
        same_first as f64 / queries.len() as f64
    );
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

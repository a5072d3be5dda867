//! One tenant floods a pod with ingests (many at once, large, past its storage quota) while
//! other tenants query through the same pod: none of their queries fails or times out, the
//! flooder gets 403 storage_quota once its quota is full, and no refused request leaves
//! anything behind.

use super::{Server, http, promtool_accepts, temp_file, temp_store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Documents per flood request, and their size (each is several chunks).
const DOCS_PER_REQUEST: usize = 20;
const DOC_CHARS: usize = 3_000;

fn flood_body(thread: usize, request: usize) -> String {
    let text: String = (0..DOC_CHARS / 10)
        .map(|i| format!("word{:05} ", (i * 7919 + thread * 31 + request) % 100_000))
        .collect();
    let docs: Vec<serde_json::Value> = (0..DOCS_PER_REQUEST)
        .map(|d| serde_json::json!({"id": format!("t{thread}-r{request}-d{d}"), "text": text}))
        .collect();
    serde_json::json!({ "documents": docs }).to_string()
}

/// The value of the metric line starting with `series` (`name{labels}`).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn an_ingest_flood_hits_its_quota_and_never_fails_another_tenants_query() {
    // The cache holds one calm tenant's index, not two: their alternating queries load
    // indexes from the store while the flood writes to it.
    let catalog = temp_file(
        "flood.yaml",
        concat!(
            "cluster: {cores: 8, memory: 16Gi}\n",
            "tiers:\n",
            "  gold: {weight: 2, share: 0.5, maxShare: 0.3}\n",
            "  bronze: {weight: 1, share: 0.2, maxShare: 0.25, quota: {documents: 1000, bytes: 2Mi}}\n",
            "tenants:\n",
            "  - {id: flood-1, tier: bronze}\n",
            "  - {id: calm-1, tier: gold}\n",
            "  - {id: calm-2, tier: gold}\n",
            "pool: {maxReplicas: 4, slotsPerPod: 4, queuePerTenant: 8}\n",
        ),
    );
    let store = temp_store("flood");
    let pod = Server::start(&[
        "serve",
        "-c",
        catalog.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--trust-tenant-header",
        "--warm-up",
        "0",
        "--drain-grace",
        "0",
        "--cache-bytes",
        "3000",
    ]);
    let addr = pod.addr.clone();
    for calm in ["calm-1", "calm-2"] {
        let doc =
            format!(r#"{{"documents":[{{"id":"d","text":"{calm} keeps its ledger here"}}]}}"#);
        let (status, body) = http(&addr, "POST", "/v1/documents", calm, &doc).unwrap();
        assert_eq!(status, 200, "{body}");
    }

    let flooding = Arc::new(AtomicBool::new(true));
    let calm: Vec<_> = ["calm-1", "calm-2"]
        .into_iter()
        .map(|tenant| {
            let (addr, flooding) = (addr.clone(), Arc::clone(&flooding));
            std::thread::spawn(move || {
                let mut answered = 0;
                while flooding.load(Ordering::Relaxed) || answered < 10 {
                    // A read timeout (10 s) is an Err: a failure like any other status.
                    let (status, body) = http(
                        &addr,
                        "POST",
                        "/v1/query",
                        tenant,
                        r#"{"query":"where is the ledger"}"#,
                    )
                    .unwrap_or_else(|e| panic!("{tenant}'s query: {e}"));
                    assert_eq!(status, 200, "{tenant}'s query during the flood: {body}");
                    assert!(body.contains(tenant), "{body}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();

    let flooders: Vec<_> = (0..8)
        .map(|thread| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for request in 0..6 {
                    let body = flood_body(thread, request);
                    let (status, answer) =
                        http(&addr, "POST", "/v1/documents", "flood-1", &body).unwrap();
                    let code = serde_json::from_str::<serde_json::Value>(&answer)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(String::from));
                    outcomes.push((status, code, answer));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<_> = flooders
        .into_iter()
        .flat_map(|f| f.join().unwrap())
        .collect();
    flooding.store(false, Ordering::Relaxed);
    for c in calm {
        assert!(c.join().unwrap() >= 10);
    }

    let stored = outcomes.iter().filter(|(s, ..)| *s == 200).count();
    let over_quota = outcomes
        .iter()
        .filter(|(s, code, _)| *s == 403 && code.as_deref() == Some("storage_quota"))
        .count();
    for (status, code, answer) in &outcomes {
        // A full queue is fair too; anything else is not.
        let queue = *status == 429 && code.as_deref() == Some("queue_full");
        assert!(
            *status == 200 || *status == 403 || queue,
            "flood answer {status}: {answer}"
        );
    }
    assert!(stored > 0, "the flooder stores up to its quota");
    assert!(over_quota > 0, "and is refused past it: {outcomes:?}");
    let (_, answer) = outcomes
        .iter()
        .find(|(s, ..)| *s == 403)
        .map(|(s, _, a)| (s, a.as_str()))
        .unwrap();
    assert!(answer.contains("over its quota of 2097152"), "{answer}");

    // Every refused request stored nothing: the tenant keeps exactly the accepted ones.
    let (_, text) = http(&addr, "GET", "/metrics", "calm-1", "").unwrap();
    promtool_accepts(&text);
    let documents = metric(
        &text,
        r#"tenantscale_tenant_storage_documents{tenant_id="flood-1"}"#,
    );
    assert_eq!(
        documents,
        Some((stored * DOCS_PER_REQUEST) as f64),
        "{text}"
    );
    let bytes = metric(
        &text,
        r#"tenantscale_tenant_storage_bytes{tenant_id="flood-1"}"#,
    );
    assert!(bytes.is_some_and(|b| b <= 2097152.0), "{text}");
    let refused = metric(
        &text,
        r#"tenantscale_rejections_total{tenant_id="flood-1",reason="storage_quota"}"#,
    );
    assert_eq!(refused, Some(over_quota as f64), "{text}");
    for calm in ["calm-1", "calm-2"] {
        let failed = text.lines().any(|l| {
            l.starts_with("total_queries_processed")
                && l.contains(&format!("tenant_id=\"{calm}\""))
                && !l.contains("status=\"success\"")
        });
        assert!(!failed, "{calm} had a query fail:\n{text}");
    }

    pod.terminate();
    pod.exit_log();
}

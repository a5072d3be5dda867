//! The autoscaler's HTTP API: `GET /status` (JSON), `GET /metrics` (Prometheus), and
//! `GET /v1/pods` — the registry a gateway follows (`?after=VERSION` waits up to
//! `waitSeconds`, 0 to 30, for a newer version: an HTTP watch), and
//! `GET /v1/prometheus-targets` — the pods for a Prometheus' `http_sd_configs`.

use crate::control::Status;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantscale_core::registry::Members;
use tenantscale_core::reload::Reloads;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant_id: String,
}

struct Metrics {
    registry: Registry,
    replicas: Gauge,
    desired: Gauge,
    min: Gauge,
    max: Gauge,
    dropped: Gauge,
    restarts: Gauge,
    scrape_failures: Gauge,
    queue_depth: Gauge<f64, AtomicU64>,
    demand: Family<TenantLabel, Gauge<f64, AtomicU64>>,
    cap: Family<TenantLabel, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            replicas: Gauge::default(),
            desired: Gauge::default(),
            min: Gauge::default(),
            max: Gauge::default(),
            dropped: Gauge::default(),
            restarts: Gauge::default(),
            scrape_failures: Gauge::default(),
            queue_depth: Gauge::default(),
            demand: Family::default(),
            cap: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "tenantscale_autoscaler_replicas",
            "Pods running and not draining",
            m.replicas.clone(),
        );
        r.register(
            "tenantscale_autoscaler_desired_replicas",
            "The last decision",
            m.desired.clone(),
        );
        r.register(
            "tenantscale_autoscaler_min_replicas",
            "The policy's lower bound",
            m.min.clone(),
        );
        r.register(
            "tenantscale_autoscaler_max_replicas",
            "The policy's upper bound",
            m.max.clone(),
        );
        r.register(
            "tenantscale_autoscaler_dropped_on_drain",
            "Queries pods reported dropped when a scale-down drain timed out (since start)",
            m.dropped.clone(),
        );
        r.register(
            "tenantscale_autoscaler_pod_restarts",
            "Pods that exited on their own and were replaced (since start)",
            m.restarts.clone(),
        );
        r.register(
            "tenantscale_autoscaler_scrape_failures",
            "Pod scrapes that failed (since start)",
            m.scrape_failures.clone(),
        );
        r.register(
            "queue_depth_per_tenant",
            "The seed's HPA metric: queued queries over tenants with work",
            m.queue_depth.clone(),
        );
        r.register(
            "tenantscale_autoscaler_tenant_demand",
            "Concurrency the policy counts for the tenant (capped at its entitlement)",
            m.demand.clone(),
        );
        r.register(
            "tenantscale_autoscaler_tenant_entitlement",
            "maxShare × maxReplicas × slotsPerPod",
            m.cap.clone(),
        );
        m
    }

    fn encode(&self, s: &Status) -> String {
        self.replicas.set(s.replicas as i64);
        self.desired.set(i64::from(s.desired));
        self.min.set(i64::from(s.min_replicas));
        self.max.set(i64::from(s.max_replicas));
        self.dropped.set(s.dropped_on_drain as i64);
        self.restarts.set(s.restarts as i64);
        self.scrape_failures.set(s.scrape_failures as i64);
        self.queue_depth.set(s.queue_depth_per_tenant);
        self.demand.clear();
        self.cap.clear();
        for t in &s.tenants {
            let label = TenantLabel {
                tenant_id: t.id.clone(),
            };
            self.demand.get_or_create(&label).set(t.demand);
            self.cap.get_or_create(&label).set(t.cap);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        tenantscale_core::text::to_prometheus_text(&text)
    }
}

#[derive(Clone)]
struct Api {
    status: Arc<Mutex<Status>>,
    members: watch::Receiver<Members>,
    metrics: Arc<Metrics>,
    /// The catalog file's reloads, exported with the metrics.
    reloads: Arc<Reloads>,
}

/// The API's routes.
pub fn router(
    status: Arc<Mutex<Status>>,
    members: watch::Receiver<Members>,
    reloads: Arc<Reloads>,
) -> Router {
    Router::new()
        .route("/status", get(status_page))
        .route("/metrics", get(metrics))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/pods", get(pods))
        .route("/v1/prometheus-targets", get(prometheus_targets))
        .with_state(Api {
            status,
            members,
            metrics: Arc::new(Metrics::new()),
            reloads,
        })
}

async fn status_page(State(api): State<Api>) -> Json<Status> {
    Json(api.status.lock().expect("status lock").clone())
}

async fn metrics(State(api): State<Api>) -> Response {
    let mut text = {
        let s = api.status.lock().expect("status lock");
        api.metrics.encode(&s)
    };
    api.reloads.exposition(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Watch {
    after: Option<u64>,
    wait_seconds: Option<f64>,
}

/// Longest wait of one watch request.
const MAX_WAIT: f64 = 30.0;

fn bad_query(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": {"code": "bad_query", "message": message}})),
    )
        .into_response()
}

async fn pods(
    State(api): State<Api>,
    query: Result<Query<Watch>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let watch = match query {
        Ok(Query(watch)) => watch,
        Err(e) => {
            return bad_query(format!(
                "{}: expected ?after=VERSION&waitSeconds=S",
                e.body_text()
            ));
        }
    };
    let wait = watch.wait_seconds.unwrap_or(MAX_WAIT);
    // Also false for NaN, which would panic in `Duration::from_secs_f64`.
    if !(0.0..=MAX_WAIT).contains(&wait) {
        return bad_query(format!("waitSeconds {wait}: expected 0 to {MAX_WAIT}"));
    }
    let mut members = api.members.clone();
    if let Some(after) = watch.after {
        let newer = members.wait_for(|m| m.version > after);
        // A timeout answers with the current (unchanged) version.
        let _ = tokio::time::timeout(Duration::from_secs_f64(wait), newer).await;
    }
    let current = members.borrow().clone();
    Json(current).into_response()
}

/// Every pod, draining ones too (they still hold work), in the target-group format of
/// Prometheus' HTTP service discovery.
async fn prometheus_targets(State(api): State<Api>) -> Json<serde_json::Value> {
    let targets: Vec<String> = api
        .members
        .borrow()
        .pods
        .iter()
        .map(|m| m.addr.clone())
        .collect();
    Json(serde_json::json!([{
        "targets": targets,
        "labels": {"tenantscale_pool": "local"},
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One `GET target` over a fresh connection: (status, body); status 0 when the
    /// connection closed without an answer.
    async fn get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        let status = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_string())
    }

    #[tokio::test]
    async fn a_watch_with_a_wait_outside_0_to_30_seconds_is_refused_naming_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_members, watch) = watch::channel(Members::default());
        let reloads = Arc::new(Reloads::new(String::new()));
        let app = router(Arc::new(Mutex::new(Status::default())), watch, reloads);
        tokio::spawn(async move { axum::serve(listener, app).await });
        for wait in [
            "NaN", "-1", "-0.001", "inf", "-inf", "1e400", "30.5", "1e300",
        ] {
            for after in ["?after=0&", "?"] {
                let (status, body) = get(addr, &format!("/v1/pods{after}waitSeconds={wait}")).await;
                assert_eq!(status, 400, "{wait}: {body}");
                assert!(body.contains(r#""code":"bad_query""#), "{body}");
                assert!(body.contains("waitSeconds"), "{body}");
            }
        }
        let (status, body) = get(addr, "/v1/pods?after=0&waitSeconds=x").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("waitSeconds"), "{body}");
        // Within the bounds: no newer version within 0 s, so the current one at once.
        let (status, body) = get(addr, "/v1/pods?after=0&waitSeconds=0").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""version":0"#), "{body}");
    }
}

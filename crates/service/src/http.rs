//! The pod's HTTP API (axum, JSON, camelCase). Errors are `{"error": {"code", "message"}}`
//! with the right status; nothing is half-written when a request fails.

use crate::llm::LlmError;
use crate::pod::{Pod, PodState};
use crate::store::NewDocument;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenantscale_core::auth;

/// How the pod learns a request's tenant.
#[derive(Debug, Clone)]
pub enum TenantAuth {
    /// Gateway-signed `X-Tenantscale-*` headers under this shared secret.
    Signed(Vec<u8>),
    /// The seed's plain `X-Tenant-ID`, for pods behind an ingress that already authenticates.
    TrustHeader,
}

/// HTTP settings. Defaults: 1 MiB bodies, 2,000-character queries, 30 s queue wait.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub auth: TenantAuth,
    pub max_body: usize,
    pub max_query_chars: usize,
    pub queue_timeout: Duration,
    /// Answers `generate: true` queries; without it their answer is null.
    pub llm: Option<Arc<crate::llm::Llm>>,
}

#[derive(Clone)]
struct AppState {
    pod: Arc<Pod>,
    config: Arc<HttpConfig>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<f64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        // The pod's own fault, not the tenant's request's: only these (and a pod that does
        // not answer) take a pod out of the gateway's rotation for every tenant.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            response.headers_mut().insert(
                header::HeaderName::from_static("x-tenantscale-fault"),
                HeaderValue::from_static("pod"),
            );
        }
        if let Some(s) = self.retry_after {
            let secs = s.ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_json"
    };
    ApiError::new(status, code, rejection.body_text())
}

/// The router of one pod.
pub fn router(pod: Arc<Pod>, config: HttpConfig) -> axum::Router {
    let max_body = config.max_body;
    let state = AppState {
        pod,
        config: Arc::new(config),
    };
    axum::Router::new()
        .route("/v1/query", post(query))
        .route("/v1/documents", post(ingest))
        .route("/v1/documents/{id}", delete(remove))
        .route("/metrics", get(metrics))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The tenant a request is for, or 401/404.
fn tenant(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<usize, ApiError> {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let id = match &state.config.auth {
        TenantAuth::TrustHeader => header("x-tenant-id")
            .ok_or_else(|| unauthorized("missing X-Tenant-ID header".into()))?,
        TenantAuth::Signed(secret) => {
            let id = header("x-tenantscale-tenant")
                .ok_or_else(|| unauthorized("missing X-Tenantscale-Tenant header".into()))?;
            let ts = header("x-tenantscale-timestamp")
                .ok_or_else(|| unauthorized("missing X-Tenantscale-Timestamp header".into()))?;
            let sig = header("x-tenantscale-signature")
                .ok_or_else(|| unauthorized("missing X-Tenantscale-Signature header".into()))?;
            auth::verify(secret, id, method.as_str(), uri.path(), ts, sig, unix_now())
                .map_err(|e| unauthorized(e.to_string()))?;
            id
        }
    };
    state.pod.tenant(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("no tenant {id:?}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QueryRequest {
    query: String,
    #[serde(default = "default_top_k")]
    top_k: usize,
    #[serde(default)]
    generate: bool,
}

fn default_top_k() -> usize {
    5
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Passage {
    document_id: String,
    chunk_id: i64,
    text: String,
    score: f32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Timings {
    queued_ms: f64,
    retrieval_ms: f64,
    generation_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryResponse {
    tenant_id: String,
    answer: Option<String>,
    passages: Vec<Passage>,
    timings: Timings,
}

async fn query(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Result<Json<QueryResponse>, ApiError> {
    let started = Instant::now();
    let t = tenant(&state, &method, &uri, &headers)?;
    let Json(req) = body.map_err(json_error)?;
    if req.query.trim().is_empty() || req.query.chars().count() > state.config.max_query_chars {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_query",
            format!(
                "query must have 1 to {} characters",
                state.config.max_query_chars
            ),
        ));
    }
    if !(1..=50).contains(&req.top_k) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_top_k",
            "topK must be in [1, 50]",
        ));
    }
    let pod = &state.pod;
    let granted = pod.enqueue(t).map_err(|full| {
        pod.metrics.rejected(t, "queue_full");
        pod.metrics
            .finished(t, "rejected", started.elapsed().as_secs_f64(), 0.0);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "tenant {}'s queue on this pod is full",
                pod.catalog.tenants[t].id
            ),
        );
        e.retry_after = Some(full.retry_after);
        e
    })?;
    if tokio::time::timeout(state.config.queue_timeout, granted)
        .await
        .is_err()
    {
        pod.metrics.rejected(t, "queue_timeout");
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_timeout",
            "waited too long for a worker",
        );
        e.retry_after = Some(1.0);
        return Err(e);
    }
    let _slot = pod.slot(t);
    let queued = started.elapsed();
    let work_started = Instant::now();
    let index = match pod.cached_index(t) {
        Some(index) => index,
        None => {
            let pod = Arc::clone(pod);
            tokio::task::spawn_blocking(move || pod.index(t))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })?
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
                })?
        }
    };
    let embedder = Arc::clone(&pod.embedder);
    let hits = if embedder.is_slow() {
        // A model takes milliseconds of CPU per query: not on an async thread.
        let (index, query, k) = (Arc::clone(&index), req.query.clone(), req.top_k);
        tokio::task::spawn_blocking(move || index.search(&embedder, &query, k))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
    } else {
        index.search(&embedder, &req.query, req.top_k)
    }
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "embedder", e.to_string()))?;
    let passages: Vec<Passage> = hits
        .into_iter()
        .map(|(row, score)| {
            let c = &index.chunks[row];
            Passage {
                document_id: c.document_id.clone(),
                chunk_id: c.chunk_id,
                text: c.text.clone(),
                score,
            }
        })
        .collect();
    let retrieval = work_started.elapsed();
    let generation_started = Instant::now();
    let answer = match (&state.config.llm, req.generate) {
        (Some(llm), true) => {
            let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
            match llm.answer(&req.query, &texts).await {
                Ok(answer) => Some(answer),
                Err(e) => {
                    let (status, code) = match e {
                        LlmError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "llm_timeout"),
                        LlmError::Upstream(_) => (StatusCode::BAD_GATEWAY, "llm_error"),
                    };
                    pod.metrics.finished(
                        t,
                        code,
                        started.elapsed().as_secs_f64(),
                        work_started.elapsed().as_secs_f64(),
                    );
                    return Err(ApiError::new(status, code, e.to_string()));
                }
            }
        }
        _ => None,
    };
    let generation = generation_started.elapsed();
    pod.count_served(t);
    pod.metrics.finished(
        t,
        "success",
        started.elapsed().as_secs_f64(),
        work_started.elapsed().as_secs_f64(),
    );
    Ok(Json(QueryResponse {
        tenant_id: pod.catalog.tenants[t].id.clone(),
        answer,
        passages,
        timings: Timings {
            queued_ms: queued.as_secs_f64() * 1000.0,
            retrieval_ms: retrieval.as_secs_f64() * 1000.0,
            generation_ms: generation.as_secs_f64() * 1000.0,
        },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest {
    documents: Vec<NewDocument>,
}

async fn ingest(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<IngestRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = tenant(&state, &method, &uri, &headers)?;
    let Json(req) = body.map_err(json_error)?;
    for (i, d) in req.documents.iter().enumerate() {
        if d.id.is_empty() || d.id.len() > 256 {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_document",
                format!("documents[{i}].id must have 1 to 256 characters"),
            ));
        }
        if d.text.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_document",
                format!("documents[{i}].text is empty"),
            ));
        }
    }
    let pod = Arc::clone(&state.pod);
    let tenant_id = pod.catalog.tenants[t].id.clone();
    let count = req.documents.len();
    let chunks = tokio::task::spawn_blocking(move || {
        let written = pod.store.ingest(&tenant_id, &req.documents, &pod.embedder);
        pod.invalidate(t);
        written
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?;
    Ok(Json(
        serde_json::json!({"documents": count, "chunks": chunks}),
    ))
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = tenant(&state, &method, &uri, &headers)?;
    let pod = Arc::clone(&state.pod);
    let tenant_id = pod.catalog.tenants[t].id.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        let d = pod.store.delete(&tenant_id, &id);
        pod.invalidate(t);
        d
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_document",
            "no such document",
        ));
    }
    Ok(Json(serde_json::json!({"deleted": true})))
}

/// OpenMetrics for scrapers that ask for it, the Prometheus text format otherwise.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let body = state
        .pod
        .metrics
        .encode(&state.pod.load(), state.pod.slots());
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response()
    } else {
        let text = tenantscale_core::text::to_prometheus_text(&body);
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response()
    }
}

/// `warmUntil` is the end of the warm-up window in Unix milliseconds (null without one).
async fn ready(State(state): State<AppState>) -> Response {
    let warm_until = state.pod.warm_until_ms();
    match state.pod.state() {
        PodState::Ready => {
            Json(serde_json::json!({"state": "ready", "warmUntil": warm_until})).into_response()
        }
        PodState::Warming => {
            Json(serde_json::json!({"state": "warming", "warmUntil": warm_until})).into_response()
        }
        PodState::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"state": "draining"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod fault_mark_tests {
    use super::*;

    /// The gateway takes a pod out of rotation for its own faults only: those are marked,
    /// a tenant's own failures (its LLM call, its queue) are not.
    #[test]
    fn only_the_pods_own_errors_are_marked_as_its_fault() {
        let marked = |status, code| {
            ApiError::new(status, code, "x")
                .into_response()
                .headers()
                .get("x-tenantscale-fault")
                .cloned()
        };
        assert_eq!(
            marked(StatusCode::INTERNAL_SERVER_ERROR, "store"),
            Some(HeaderValue::from_static("pod"))
        );
        for (status, code) in [
            (StatusCode::BAD_GATEWAY, "llm_error"),
            (StatusCode::GATEWAY_TIMEOUT, "llm_timeout"),
            (StatusCode::SERVICE_UNAVAILABLE, "queue_timeout"),
            (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
        ] {
            assert_eq!(marked(status, code), None, "{code}");
        }
    }
}

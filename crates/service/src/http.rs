//! The pod's HTTP API (axum, JSON, camelCase). Errors are `{"error": {"code", "message"}}`
//! with the right status; nothing is half-written when a request fails.

use crate::llm::LlmError;
use crate::pod::{IndexError, NoSlot, Pod, PodState};
use crate::store::{NewDocument, StoreError};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenantscale_core::auth;

/// How the pod learns a request's tenant.
#[derive(Debug, Clone)]
pub enum TenantAuth {
    /// Gateway-signed `X-Tenantscale-*` headers (see `tenantscale_core::auth`).
    Signed(Keys),
    /// The seed's plain `X-Tenant-ID`, for pods behind an ingress that already authenticates.
    TrustHeader,
}

/// The shared secrets a pod accepts the gateway's signatures under.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The current secret, and the next one while the secret rotates.
    signers: Vec<auth::Signer>,
    /// Whether a request without `X-Tenantscale-Body-SHA256` is checked against the format
    /// before it (which binds neither body nor query): only while gateways are upgraded.
    accept_legacy: bool,
}

impl Keys {
    pub fn new(current: &[u8]) -> Self {
        Self {
            signers: vec![auth::Signer::new(current)],
            accept_legacy: false,
        }
    }

    /// Accepts signatures under `next` too, so that gateways can switch to it one by one.
    pub fn with_next(mut self, next: &[u8]) -> Self {
        self.signers.push(auth::Signer::new(next));
        self
    }

    pub fn accepting_legacy(mut self) -> Self {
        self.accept_legacy = true;
        self
    }
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
    /// A failure whose cause names internal things (store and TLS errors, host names, a model
    /// provider's own words): the cause goes to the log, the client gets the code.
    fn failed(status: StatusCode, code: &'static str, cause: impl std::fmt::Display) -> Self {
        tracing::warn!(code, %cause, "request failed");
        Self::new(
            status,
            code,
            format!("{code} failed; the pod's log has the cause"),
        )
    }

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
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The tenant a request is for, decided by [`authenticate`].
#[derive(Debug, Clone, Copy)]
struct Tenant(usize);

/// Decides a request's tenant from its head alone (401 or 503 before a byte of the body is
/// read). A signed body is then read, within `max_body`, and must have the digest that was
/// signed (401 `bad_signature`); the handler parses the bytes that were checked.
async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let (t, signed_body) = tenant(&state, &parts)?;
    let body = match signed_body {
        None => body,
        Some(signed) => {
            let bytes = read_body(body, state.config.max_body).await?;
            if auth::BodySha256::of(&bytes).as_str() != signed {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_signature",
                    "the body is not the one signed (X-Tenantscale-Body-SHA256)",
                ));
            }
            Body::from(bytes)
        }
    };
    parts.extensions.insert(Tenant(t));
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// The tenant a request's head names and proves, or 401/503; with signatures, also the
/// signed `X-Tenantscale-Body-SHA256` the body must match (`None` for the legacy format).
fn tenant<'a>(state: &AppState, parts: &'a Parts) -> Result<(usize, Option<&'a str>), ApiError> {
    let header = |name: &'static str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let (id, body_sha256) = match &state.config.auth {
        TenantAuth::TrustHeader => (
            header("x-tenant-id")
                .ok_or_else(|| unauthorized("missing X-Tenant-ID header".into()))?,
            None,
        ),
        TenantAuth::Signed(keys) => {
            let id = header("x-tenantscale-tenant")
                .ok_or_else(|| unauthorized("missing X-Tenantscale-Tenant header".into()))?;
            let ts = header("x-tenantscale-timestamp")
                .ok_or_else(|| unauthorized("missing X-Tenantscale-Timestamp header".into()))?;
            let sig = header("x-tenantscale-signature")
                .ok_or_else(|| unauthorized("missing X-Tenantscale-Signature header".into()))?;
            let body_sha256 = header("x-tenantscale-body-sha256");
            let target = match body_sha256 {
                Some(_) => parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                None if keys.accept_legacy => parts.uri.path(),
                None => {
                    return Err(unauthorized(
                        "missing X-Tenantscale-Body-SHA256 header (a gateway older than this pod: see --accept-legacy-signatures)".into(),
                    ));
                }
            };
            let claim = auth::Claim {
                tenant: id,
                method: parts.method.as_str(),
                target,
                body_sha256,
            };
            auth::verify(&keys.signers, &claim, ts, sig, unix_now())
                .map_err(|e| unauthorized(e.to_string()))?;
            (id, body_sha256)
        }
    };
    // Retryable, never 404: while replicas reload a changed catalog at different moments,
    // the gateway may know a tenant this pod does not know yet.
    let t = state.pod.tenant(id).ok_or_else(|| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unknown_tenant",
            format!("this pod's catalog has no tenant {id:?} (yet)"),
        );
        e.retry_after = Some(1.0);
        e
    })?;
    Ok((t, body_sha256))
}

/// The whole body, at most `max` bytes (413 past that, before reading when its length says so).
async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over {max} bytes"),
        )
    };
    if body.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading the body: {e}"),
        )),
    }
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
    Extension(Tenant(t)): Extension<Tenant>,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Result<Json<QueryResponse>, ApiError> {
    let started = Instant::now();
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
    let slot = pod
        .acquire(t, state.config.queue_timeout)
        .await
        .map_err(|e| {
            if matches!(e, NoSlot::Full(_)) {
                pod.metrics
                    .finished(t, "rejected", started.elapsed().as_secs_f64(), 0.0);
            }
            no_slot(pod, t, e)
        })?;
    let queued = started.elapsed();
    let work_started = Instant::now();
    // Even a cached index takes a store read (its generation), so the index is had off the
    // async threads. Blocking work holds the slot itself: a client that goes away drops this
    // handler, not the work, which keeps its slot (and its store connection) until it ends.
    let (slot, index) = {
        let pod = Arc::clone(pod);
        let (slot, index) = tokio::task::spawn_blocking(move || (slot, pod.index(t)))
            .await
            .map_err(|e| ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
        (slot, index.map_err(index_error)?)
    };
    let embedder = Arc::clone(&pod.embedder);
    let (_slot, hits) = if embedder.is_slow() {
        // A model takes milliseconds of CPU per query: not on an async thread.
        let (index, query, k) = (Arc::clone(&index), req.query.clone(), req.top_k);
        tokio::task::spawn_blocking(move || (slot, index.search(&embedder, &query, k)))
            .await
            .map_err(|e| ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?
    } else {
        (slot, index.search(&embedder, &req.query, req.top_k))
    };
    let hits =
        hits.map_err(|e| ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "embedder", e))?;
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
                    let error = match &e {
                        LlmError::Timeout(_) => {
                            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "llm_timeout", e.to_string())
                        }
                        LlmError::Upstream(_) => {
                            ApiError::failed(StatusCode::BAD_GATEWAY, "llm_error", &e)
                        }
                    };
                    pod.metrics.finished(
                        t,
                        error.code,
                        started.elapsed().as_secs_f64(),
                        work_started.elapsed().as_secs_f64(),
                    );
                    return Err(error);
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
        tenant_id: pod.tenant_id(t),
        answer,
        passages,
        timings: Timings {
            queued_ms: queued.as_secs_f64() * 1000.0,
            retrieval_ms: retrieval.as_secs_f64() * 1000.0,
            generation_ms: generation.as_secs_f64() * 1000.0,
        },
    }))
}

/// 429 for a full queue, 503 after waiting the queue timeout.
fn no_slot(pod: &Pod, t: usize, refusal: NoSlot) -> ApiError {
    let (status, code, message, retry_after) = match refusal {
        NoSlot::Full(full) => (
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("tenant {}'s queue on this pod is full", pod.tenant_id(t)),
            full.retry_after,
        ),
        NoSlot::TimedOut => (
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_timeout",
            "waited too long for a worker".to_string(),
            1.0,
        ),
    };
    pod.metrics.rejected(t, code);
    let mut e = ApiError::new(status, code, message);
    e.retry_after = Some(retry_after);
    e
}

/// An index larger than the pod's cache is the tenant's doing: 507, which the gateway does
/// not count against the pod. A store that cannot be read (even for the generation a cached
/// index is checked against) is the pod's: 500 `store`, never an answer that may be stale.
fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::TooLarge { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "index_too_large",
            e.to_string(),
        ),
        IndexError::Store(e) => ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest {
    documents: Vec<NewDocument>,
}

async fn ingest(
    State(state): State<AppState>,
    Extension(Tenant(t)): Extension<Tenant>,
    body: Result<Json<IngestRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
        for (field, nul) in [
            ("id", d.id.contains('\0')),
            ("text", d.text.contains('\0')),
            ("metadata", has_nul(&d.metadata)),
        ] {
            if nul {
                return Err(nul_error(&format!("documents[{i}].{field}")));
            }
        }
    }
    // Embedding and writing are the tenant's work: they take a worker slot in its turn.
    let slot = (state.pod)
        .acquire(t, state.config.queue_timeout)
        .await
        .map_err(|e| no_slot(&state.pod, t, e))?;
    let pod = Arc::clone(&state.pod);
    let count = req.documents.len();
    let chunks = tokio::task::spawn_blocking(move || {
        // Held until the write ends, even if the client went away meanwhile.
        let _slot = slot;
        let (id, quota) = (pod.tenant_id(t), pod.quota(t));
        let (chunks, written) = pod
            .store
            .ingest(&id, &req.documents, &pod.embedder, &quota)?;
        pod.written(t, written);
        Ok(chunks)
    })
    .await
    .map_err(|e| ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?
    .map_err(|e| match e {
        StoreError::Quota(q) => {
            state.pod.metrics.rejected(t, "storage_quota");
            ApiError::new(StatusCode::FORBIDDEN, "storage_quota", q.to_string())
        }
        e => ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
    })?;
    Ok(Json(
        serde_json::json!({"documents": count, "chunks": chunks}),
    ))
}

/// Postgres refuses NUL in text ("invalid byte sequence"), which would make a tenant's input
/// a store fault of the pod: every backend refuses it up front instead.
fn nul_error(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_document",
        format!("{what} contains a NUL character"),
    )
}

/// Whether any string of `value`, key or value at any depth, holds a NUL.
fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(fields) => {
            fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
        }
        _ => false,
    }
}

async fn remove(
    State(state): State<AppState>,
    Extension(Tenant(t)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if id.contains('\0') {
        return Err(nul_error("the document id"));
    }
    // A write like an ingest: in the tenant's turn, and never more at once than slots.
    let slot = (state.pod)
        .acquire(t, state.config.queue_timeout)
        .await
        .map_err(|e| no_slot(&state.pod, t, e))?;
    let pod = Arc::clone(&state.pod);
    let tenant_id = pod.tenant_id(t);
    let deleted = tokio::task::spawn_blocking(move || {
        // Held until the write ends, even if the client went away meanwhile.
        let _slot = slot;
        let written = pod.store.delete(&tenant_id, &id)?;
        if let Some(written) = written {
            pod.written(t, written);
        }
        Ok::<_, StoreError>(written.is_some())
    })
    .await
    .map_err(|e| ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?
    .map_err(|e| ApiError::failed(StatusCode::INTERNAL_SERVER_ERROR, "store", e))?;
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
    let body = state.pod.exposition();
    let mut reloads = String::new();
    if let Some(r) = state.pod.reloads() {
        r.exposition(&mut reloads);
    }
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
            tenantscale_core::text::openmetrics_with(&body, &reloads),
        )
            .into_response()
    } else {
        let mut text = tenantscale_core::text::to_prometheus_text(&body);
        text.push_str(&reloads);
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

/// 503 once a thread panicked holding one of the pod's locks: it keeps serving (the locks
/// recover), but its counts may be off, so it asks to be restarted.
async fn health(State(state): State<AppState>) -> Response {
    if state.pod.healthy() {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "poisoned"})),
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

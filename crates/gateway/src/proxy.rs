//! One request through the gateway: its own endpoints, or authenticate → admit and route
//! (from the head alone) → read the body → sign → send (one retry elsewhere when that is
//! safe) → stream the answer.

use crate::Gateway;
use crate::connections::{Connections, PodBody, PodFault, PodRequest};
use crate::metrics::Refusal;
use crate::pods::MAX_READY_BODY;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::shared::Decision;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenantscale_core::fairness::admission::{Limit, Rejection, share_cap};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// The client for the autoscaler's registry watch; the pods are reached through their own
/// [`Connections`], requests and `/ready` probes alike.
pub fn client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

type ResponseBody = Either<Full<Bytes>, Tracked>;

// Header names made once: a `&str` name is parsed and checked on every use.
const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_TENANTSCALE_TENANT: HeaderName = HeaderName::from_static("x-tenantscale-tenant");
const X_TENANTSCALE_TIMESTAMP: HeaderName = HeaderName::from_static("x-tenantscale-timestamp");
const X_TENANTSCALE_SIGNATURE: HeaderName = HeaderName::from_static("x-tenantscale-signature");
const X_TENANTSCALE_BODY_SHA256: HeaderName = HeaderName::from_static("x-tenantscale-body-sha256");

/// An error answer, boxed: it is the rare path, and keeps `Result`s small.
type ErrorResponse = Box<Response<ResponseBody>>;

/// GET `/ready` from a pod: (status, body), or `None` if it did not answer in time. Its idle
/// connections that the pod closed are let go first.
pub async fn probe_ready(pod: Arc<Connections>) -> Option<(u16, Vec<u8>)> {
    pod.close_closed();
    let req = pod.request(&Method::GET, "/ready");
    let exchange = async {
        let res = pod.send(req, Bytes::new(), true).await.ok()?;
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_READY_BODY)
            .collect()
            .await
            .ok()?;
        Some((status, body.to_bytes().to_vec()))
    };
    tokio::time::timeout(crate::pods::POLL_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<ResponseBody> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<ResponseBody> {
    json(
        status,
        serde_json::json!({"error": {"code": code, "message": message.into()}}),
    )
}

/// An error answer to a request on its way to a pod: its id in the body and in
/// `X-Request-Id`, and nothing about the pods (that goes to the log, under the same id).
fn failed(
    id: &RequestId,
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> ErrorResponse {
    let body = serde_json::json!({"error": {
        "code": code,
        "message": message.into(),
        "requestId": id.as_str(),
    }});
    with_id(json(status, body), id)
}

fn with_id(mut res: Response<ResponseBody>, id: &RequestId) -> ErrorResponse {
    res.headers_mut().insert(X_REQUEST_ID, id.header_value());
    Box::new(res)
}

/// The gateway's answer to one request (never an `Err`: failures are HTTP errors).
///
/// Not an `async fn`: that would store the request and its arguments a second time beside
/// [`forward`]'s future, and hyper moves the whole future into place on every request.
pub fn handle(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    client_ip: HeaderValue,
    access: Access,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    use futures_util::future::{Either, FutureExt};
    match own_answer(&gateway, &req, access) {
        Some(answer) => Either::Left(std::future::ready(Ok(answer))),
        None => Either::Right(
            forward(gateway, req, client_ip).map(|answer| Ok(answer.unwrap_or_else(|e| *e))),
        ),
    }
}

/// What a client connection may ask of the gateway, decided once when it is accepted.
///
/// The operator paths (`/metrics`: every tenant's id and counts, the pods' addresses) are not
/// for tenants: they are served on the admin listener, or, when there is none, to this
/// machine only. Anyone else gets the 404 of a path that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The tenant listener: proxied requests and the probes (`/health`, `/ready`).
    Tenant,
    /// The tenant listener from a loopback address, with no admin listener configured: the
    /// operator paths too (`tenantscale up`, local use), unless a proxy relayed the request.
    Local,
    /// The admin listener: the operator paths and the probes, nothing proxied.
    Admin,
}

impl Access {
    /// A connection to the tenant listener from `peer`.
    pub fn tenant(peer: IpAddr, admin_listener: bool) -> Self {
        // A `[::]` listener sees an IPv4 client as `::ffff:a.b.c.d`.
        if !admin_listener && peer.to_canonical().is_loopback() {
            Self::Local
        } else {
            Self::Tenant
        }
    }

    /// Whether this request may read the operator paths. A request relayed by a proxy on this
    /// machine (it says so in `Forwarded` or `X-Forwarded-For`) comes from loopback whoever
    /// sent it.
    fn operator(self, headers: &HeaderMap) -> bool {
        match self {
            Self::Admin => true,
            Self::Local => {
                !headers.contains_key(&X_FORWARDED_FOR) && !headers.contains_key(header::FORWARDED)
            }
            Self::Tenant => false,
        }
    }
}

/// The answer to a request the gateway serves itself (its endpoints, or no route), if it is one.
fn own_answer<B>(
    gateway: &Gateway,
    req: &Request<B>,
    access: Access,
) -> Option<Response<ResponseBody>> {
    // hyper refuses an HTTP/1.1 head over the limit itself; HTTP/2 limits only its bytes.
    if req.headers().len() > crate::MAX_CLIENT_HEADERS {
        return Some(error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too_many_headers",
            format!("more than {} header fields", crate::MAX_CLIENT_HEADERS),
        ));
    }
    let path = req.uri().path();
    if req.method() == Method::GET {
        match path {
            "/metrics" if access.operator(req.headers()) => return Some(metrics(gateway)),
            "/health" => return Some(json(StatusCode::OK, serde_json::json!({"status": "ok"}))),
            "/ready" => return Some(ready(gateway)),
            _ => {}
        }
    }
    let (proxied, served) = match access {
        Access::Admin => (
            false,
            "the admin listener serves /metrics, /health and /ready",
        ),
        Access::Tenant | Access::Local => (
            path.starts_with("/v1/") || path == "/query",
            "the gateway serves /v1/… (and the seed's /query)",
        ),
    };
    if !proxied {
        return Some(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}: {served}"),
        ));
    }
    None
}

fn metrics(gateway: &Gateway) -> Response<ResponseBody> {
    let (loads, states) = {
        let s = gateway.state();
        (s.pool.loads(), s.pool.states(gateway.now()))
    };
    let shared = gateway.shared.get().is_some_and(|s| !s.is_down());
    gateway.metrics.redis_up.set(i64::from(shared));
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(
        gateway.metrics.encode(&loads, &states),
    ))));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

fn ready(gateway: &Gateway) -> Response<ResponseBody> {
    let pods = gateway.state().pool.router.ready_pods();
    let status = if pods > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        serde_json::json!({"state": if pods > 0 { "ready" } else { "no_pods" }, "pods": pods}),
    )
}

/// The tenant a request is for, from its API key (or, trusted, its `X-Tenant-ID`).
fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
    request: &RequestId,
) -> Result<usize, ErrorResponse> {
    let refuse = |message: &str| {
        gateway.metrics.unauthorized.inc();
        let mut res = failed(request, StatusCode::UNAUTHORIZED, "unauthorized", message);
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        res
    };
    if gateway.config.trust_tenant_header {
        let Some(id) = headers.get(&X_TENANT_ID).and_then(|v| v.to_str().ok()) else {
            return Err(refuse("missing X-Tenant-ID header"));
        };
        return gateway.tenant_ids.get(id).copied().ok_or_else(|| {
            failed(
                request,
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                format!("no tenant {id:?}"),
            )
        });
    }
    let Some(key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(refuse("missing Authorization: Bearer <API key>"));
    };
    let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
    gateway
        .api_keys
        .get(&digest)
        .copied()
        .ok_or_else(|| refuse("unknown API key"))
}

/// Everything after the gateway's own endpoints; `Err` is an error response.
async fn forward(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    client_ip: HeaderValue,
) -> Result<Response<ResponseBody>, ErrorResponse> {
    let started = Instant::now();
    let id = RequestId::of(req.headers());
    let tenant = authenticate(&gateway, req.headers(), &id)?;
    if !gateway
        .config
        .scope
        .serves(&gateway.catalog.tenants[tenant])
    {
        return Err(failed(
            &id,
            StatusCode::FORBIDDEN,
            "other_deployment",
            format!(
                "tenant {:?} is served by its own deployment, not this gateway",
                gateway.catalog.tenants[tenant].id
            ),
        ));
    }
    let (parts, body) = req.into_parts();
    // Decided from the head: a request refused by a limit costs no body read. The body is
    // read holding the admission, which `admitted` gives back however this ends.
    check_declared_length(&gateway, &parts, &id)?;
    let mut admitted = admit(&gateway, tenant, started, &id).await?;
    let body = read_body(&gateway, body, &id).await?;

    let retry_safe = idempotent(&parts.method, parts.uri.path());
    let mut retried = false;
    loop {
        let connections = Arc::clone(&gateway.state().pool.upstream(admitted.route).connections);
        let upstream = upstream_request(
            &gateway,
            &connections,
            &parts,
            &body,
            tenant,
            &client_ip,
            &id,
        );
        let sent = tokio::time::timeout(
            gateway.config.timeouts.response,
            connections.send(upstream, body.clone(), retry_safe),
        )
        .await;
        let failure = match sent {
            Ok(Ok(res)) if !res.status().is_server_error() => {
                admitted.succeeded = true;
                return Ok(respond(res, admitted, &id));
            }
            Ok(Ok(res)) => {
                // Only the pod's own faults count against it: a 5xx the tenant's request
                // caused (its LLM call, its queue) says nothing about the pod.
                if res.extensions().get::<PodFault>().is_some() {
                    pod_failed(&gateway, admitted.route, Failure::ServerError);
                }
                return Ok(respond(res, admitted, &id));
            }
            Ok(Err(e)) => e,
            Err(_) => {
                pod_failed(&gateway, admitted.route, Failure::Timeout);
                tracing::warn!(
                    request_id = %id,
                    pod = %connections.addr(),
                    "no answer from the pod in time"
                );
                return Err(failed(
                    &id,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "the pod did not answer within {} s",
                        gateway.config.timeouts.response.as_secs_f64()
                    ),
                ));
            }
        };
        let connect = failure.is_connect();
        pod_failed(
            &gateway,
            admitted.route,
            if connect {
                Failure::Connect
            } else {
                Failure::Reset
            },
        );
        if retried || !(connect || retry_safe) {
            tracing::warn!(
                request_id = %id,
                pod = %connections.addr(),
                error = %failure,
                "exchange with a pod failed"
            );
            return Err(failed(
                &id,
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the pod failed before its answer",
            ));
        }
        tracing::debug!(request_id = %id, error = %failure, "exchange with a pod failed; retrying");
        retried = true;
        gateway.metrics.retries.inc();
        let mut s = gateway.state();
        s.pool.release(admitted.route);
        let Some(route) = s.pool.router.route(tenant, gateway.now()) else {
            admitted.routed = false;
            drop(s);
            return Err(no_pod(&gateway, tenant, &id));
        };
        admitted.route = route;
        s.pool.upstream(route).routed.inc();
    }
}

/// How an exchange with a pod failed.
#[derive(Clone, Copy)]
enum Failure {
    /// The connection was refused or could not be opened (the request was never sent).
    Connect,
    /// The connection broke before the response.
    Reset,
    /// No response headers within the response timeout.
    Timeout,
    /// A 5xx response the pod marked as its own fault (passed on to the client).
    ServerError,
}

/// Counts a failed exchange with the pod behind `route`. A refused or broken connection takes
/// the pod out of rotation at once, until its `/ready` answers again (a killed pod must not get
/// the retry); timeouts and 5xx the pod marked as its own fault eject it only when they come in
/// a row.
fn pod_failed(gateway: &Gateway, route: usize, failure: Failure) {
    let (label, out) = {
        let mut s = gateway.state();
        let now = gateway.now();
        let out = match failure {
            Failure::Connect | Failure::Reset => s.pool.unreachable(route, now),
            Failure::Timeout | Failure::ServerError => s.pool.failed(route, now),
        };
        (s.pool.upstream(route).label.clone(), out)
    };
    let kind = match failure {
        Failure::Connect => "connect",
        Failure::Reset => "reset",
        Failure::Timeout => "timeout",
        Failure::ServerError => "5xx",
    };
    gateway.metrics.upstream_error(&label, kind);
    if out {
        gateway.metrics.ejected(&label);
        tracing::warn!(pod = %label.pod, kind, "pod out of rotation");
    }
}

/// 413 for a head that states a body over `--max-body` (before admission is asked).
fn check_declared_length(
    gateway: &Gateway,
    parts: &Parts,
    id: &RequestId,
) -> Result<(), ErrorResponse> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > gateway.config.max_body as u64 => Err(too_large(gateway, id)),
        _ => Ok(()),
    }
}

fn too_large(gateway: &Gateway, id: &RequestId) -> ErrorResponse {
    failed(
        id,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is over {} bytes", gateway.config.max_body),
    )
}

/// The whole request body, within the size and time limits.
async fn read_body(
    gateway: &Gateway,
    body: Incoming,
    id: &RequestId,
) -> Result<Bytes, ErrorResponse> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    match tokio::time::timeout(
        gateway.config.timeouts.body_read,
        whole(Limited::new(body, gateway.config.max_body)),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(gateway, id)),
        Ok(Err(e)) => Err(failed(
            id,
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading the body: {e}"),
        )),
        Err(_) => Err(failed(
            id,
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body took too long to arrive",
        )),
    }
}

/// A body's data in one buffer. Most bodies arrive as one frame, which is kept as it came.
/// `BodyExt::collect` keeps one frame without a copy too, but first queues every frame in a
/// list it allocates: 468 more instructions per proxied request (`bench/proxy-cpu.sh
/// --callgrind`).
async fn whole<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Result<Bytes, B::Error> {
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: a pod is not sent any
        };
        match &mut joined {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => joined = Some([&first[..], &data[..]].concat()),
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

fn no_pod(gateway: &Gateway, tenant: usize, id: &RequestId) -> ErrorResponse {
    gateway.metrics.refused(tenant, Refusal::NoPod);
    let mut res = failed(
        id,
        StatusCode::SERVICE_UNAVAILABLE,
        "no_pod",
        "no pod is ready to take requests",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// How a request was admitted, and so how it is released.
enum Ticket {
    /// By this gateway's own admission state.
    Local,
    /// By Redis, holding this lease.
    Shared(String),
}

/// Admission (through Redis when it answers, else locally), then the first routing decision.
async fn admit(
    gateway: &Arc<Gateway>,
    tenant: usize,
    started: Instant,
    id: &RequestId,
) -> Result<Admitted, ErrorResponse> {
    let now = gateway.now();
    let now_ms = (now * 1000.0) as u64;
    let slots = gateway.catalog.pool.slots_per_pod;
    let mut decision = None;
    if let Some(shared) = gateway.shared.get().filter(|s| s.available(now_ms)) {
        let live_slots = gateway.state().pool.router.ready_pods() as u32 * slots;
        let limits = &gateway.limits[tenant];
        let cap = share_cap(limits.max_share, live_slots);
        let id = &gateway.catalog.tenants[tenant].id;
        // Boxed: its future is large and only a Redis-backed gateway awaits it.
        decision = Box::pin(shared.admit(id, limits, cap, now_ms))
            .await
            .map(|d| match d {
                Decision::Admitted { lease } => Ok((Ticket::Shared(lease), cap)),
                Decision::Refused(r) => Err((r, cap)),
            });
    }
    let mut s = gateway.state();
    let live_slots = s.pool.router.ready_pods() as u32 * slots;
    let decision = decision.unwrap_or_else(|| {
        let cap = s.admission.cap(tenant, live_slots);
        match s.admission.admit(tenant, now, live_slots) {
            Ok(()) => Ok((Ticket::Local, cap)),
            Err(r) => Err((r, cap)),
        }
    });
    let ticket = match decision {
        Ok((ticket, _)) => ticket,
        Err((rejection, cap)) => {
            drop(s);
            return Err(refuse(gateway, tenant, rejection, cap, id));
        }
    };
    let Some(route) = s.pool.router.route(tenant, now) else {
        drop(s);
        release_ticket(gateway, tenant, ticket);
        return Err(no_pod(gateway, tenant, id));
    };
    let first_choice = s.pool.router.ranking(tenant).first() == Some(&(route as u32));
    s.pool.upstream(route).routed.inc();
    drop(s);
    gateway.metrics.admitted(tenant);
    if first_choice {
        gateway.metrics.first_choice.inc();
    }
    Ok(Admitted {
        gateway: Arc::clone(gateway),
        tenant,
        ticket: Some(ticket),
        route,
        routed: true,
        succeeded: false,
        started,
    })
}

fn release_ticket(gateway: &Gateway, tenant: usize, ticket: Ticket) {
    match ticket {
        Ticket::Local => gateway.state().admission.release(tenant),
        Ticket::Shared(lease) => {
            if let Some(shared) = gateway.shared.get() {
                shared.release(&gateway.catalog.tenants[tenant].id, lease);
            }
        }
    }
}

/// 429 for a refusal: which limit, and when to retry.
fn refuse(
    gateway: &Gateway,
    tenant: usize,
    rejection: Rejection,
    cap: u32,
    id: &RequestId,
) -> ErrorResponse {
    let (why, message) = match rejection.limit {
        Limit::RateLimit => (Refusal::RateLimit, "over the tier's rate limit".to_string()),
        _ => (
            Refusal::ShareCap,
            format!("{cap} requests in flight: the tenant's share of the pool"),
        ),
    };
    gateway.metrics.refused(tenant, why);
    let mut res = json(
        StatusCode::TOO_MANY_REQUESTS,
        serde_json::json!({"error": {
            "code": why.code(),
            "message": message,
            "retryAfter": rejection.retry_after,
            "requestId": id.as_str(),
        }}),
    );
    // Whole seconds, rounded up: a client retrying earlier would be refused again.
    let seconds = (rejection.retry_after.ceil() as u64).max(1);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    with_id(res, id)
}

/// Requests that may be sent twice: the read-only and replace-by-id methods, and the pod
/// API's POSTs, which are a query (read-only) and an ingest that replaces documents by id.
fn idempotent(method: &Method, path: &str) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || (*method == Method::POST && matches!(path, "/v1/query" | "/query" | "/v1/documents"))
}

/// The client's headers that go on to the pod (past the ones the connection writes itself):
/// not `Trailer` (the body goes out whole, with no trailers), and none of the ones only the
/// gateway may set (`X-Request-Id` is written once, as the gateway took it).
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "trailer"
            | "authorization"
            | "x-forwarded-for"
            | "x-tenant-id"
            | "x-tenantscale-tenant"
            | "x-tenantscale-timestamp"
            | "x-tenantscale-signature"
            | "x-tenantscale-body-sha256"
            | "x-request-id"
    )
}

/// The request as it goes to the pod behind `connections`.
fn upstream_request(
    gateway: &Gateway,
    connections: &Connections,
    parts: &Parts,
    body: &[u8],
    tenant: usize,
    client_ip: &HeaderValue,
    request_id: &RequestId,
) -> PodRequest {
    // Origin-form, whatever form the client used; `Host` is the pod's.
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = connections.request(&parts.method, target);
    for (name, value) in &parts.headers {
        if forwarded(name) {
            req.header(name, value);
        }
    }
    req.header_ascii(&X_REQUEST_ID, request_id.as_bytes());
    let forwarded_for = match parts.headers.get(&X_FORWARDED_FOR) {
        Some(chain) => {
            let mut v = chain.as_bytes().to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| client_ip.clone())
        }
        None => client_ip.clone(),
    };
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let signing = gateway
        .signatures
        .headers(tenant, &parts.method, target, body, second);
    let id = &gateway.tenant_headers[tenant];
    req.header(&X_FORWARDED_FOR, &forwarded_for);
    req.header(&X_TENANT_ID, id);
    req.header(&X_TENANTSCALE_TENANT, id);
    req.header(&X_TENANTSCALE_TIMESTAMP, &signing.timestamp);
    req.header(&X_TENANTSCALE_BODY_SHA256, &signing.body_sha256);
    req.header(&X_TENANTSCALE_SIGNATURE, &signing.signature);
    req
}

/// The pod's answer on its way to the client (its hop-by-hop fields were left out when it was
/// read); an error answer carries the request's id.
fn respond(res: Response<PodBody>, admitted: Admitted, id: &RequestId) -> Response<ResponseBody> {
    let (mut parts, body) = res.into_parts();
    if parts.status.as_u16() >= 400 {
        parts.headers.insert(X_REQUEST_ID, id.header_value());
    }
    Response::from_parts(
        parts,
        Either::Right(Tracked {
            inner: body,
            _admitted: admitted,
        }),
    )
}

/// An admitted request until its response is complete: its in-flight place in admission and
/// its load on a pod are released when it is dropped, however the exchange ends.
struct Admitted {
    gateway: Arc<Gateway>,
    tenant: usize,
    ticket: Option<Ticket>,
    route: usize,
    /// Whether `route` still counts this request.
    routed: bool,
    /// Whether the pod answered without a server error.
    succeeded: bool,
    started: Instant,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let ticket = self.ticket.take();
        {
            // One lock for the pod's load, its failure count and local admission.
            let mut s = self.gateway.state();
            if self.routed {
                if self.succeeded {
                    s.pool.succeeded(self.route);
                }
                s.pool.release(self.route);
            }
            if let Some(Ticket::Local) = ticket {
                s.admission.release(self.tenant);
            }
        }
        if let Some(Ticket::Shared(lease)) = ticket {
            release_ticket(&self.gateway, self.tenant, Ticket::Shared(lease));
        }
        self.gateway
            .metrics
            .finished(self.tenant, self.started.elapsed().as_secs_f64());
    }
}

/// A pod's response body, streamed to the client, holding the request's admission.
pub struct Tracked {
    inner: PodBody,
    _admitted: Admitted,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_body::Frames;

    fn gateway() -> Gateway {
        let catalog = tenantscale_core::catalog::Catalog::parse(
            "cluster: {cores: 4, memory: 8Gi}\n\
             tiers:\n  gold: {weight: 1, share: 0.9}\n\
             tenants:\n  - {id: media-1, tier: gold}\n\
             pool: {minReplicas: 1, maxReplicas: 1, slotsPerPod: 10}\n",
        )
        .unwrap()
        .catalog;
        let config = crate::GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: None,
            tls: None,
            discovery: crate::Discovery::Static(Vec::new()),
            secret: b"0123456789abcdef".to_vec(),
            trust_tenant_header: false,
            max_body: 1024,
            timeouts: crate::Timeouts::default(),
            connections: tenantscale_listener::Limits::default(),
            router: tenantscale_core::routing::RouterConfig::default(),
            share_retry_after: 1.0,
            redis: None,
            replicas: 1,
            scope: crate::TenantScope::All,
        };
        Gateway::new(catalog, config)
    }

    #[tokio::test]
    async fn operator_paths_are_answered_only_where_they_are_allowed() {
        let gateway = gateway();
        // `None`: the request goes on to a pod.
        let answer_with = |access, method: Method, path: &str, header: Option<HeaderName>| {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(name) = header {
                req = req.header(name, "203.0.113.9");
            }
            own_answer(&gateway, &req.body(()).unwrap(), access).map(|r| r.status().as_u16())
        };
        let answer = |access, method, path: &str| answer_with(access, method, path, None);
        for (access, metrics, proxied) in [
            (Access::Tenant, Some(404), None),
            (Access::Local, Some(200), None),
            (Access::Admin, Some(200), Some(404)),
        ] {
            assert_eq!(
                answer(access, Method::GET, "/metrics"),
                metrics,
                "{access:?}"
            );
            assert_eq!(answer(access, Method::POST, "/metrics"), Some(404));
            assert_eq!(answer(access, Method::GET, "/health"), Some(200));
            // No pods: not ready.
            assert_eq!(answer(access, Method::GET, "/ready"), Some(503));
            assert_eq!(answer(access, Method::POST, "/v1/query"), proxied);
            assert_eq!(answer(access, Method::POST, "/query"), proxied);
            assert_eq!(answer(access, Method::GET, "/status"), Some(404));
        }
        // Relayed by a proxy on this machine: not local.
        for name in [X_FORWARDED_FOR, header::FORWARDED] {
            let relayed = |access| answer_with(access, Method::GET, "/metrics", Some(name.clone()));
            assert_eq!(relayed(Access::Local), Some(404));
            assert_eq!(relayed(Access::Admin), Some(200));
        }
    }

    #[test]
    fn only_loopback_peers_get_operator_paths_and_only_without_an_admin_listener() {
        for peer in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            let peer = peer.parse().unwrap();
            assert_eq!(Access::tenant(peer, false), Access::Local, "{peer}");
            assert_eq!(Access::tenant(peer, true), Access::Tenant, "{peer}");
        }
        for peer in [
            "192.0.2.2",
            "10.0.0.1",
            "0.0.0.0",
            "::ffff:10.0.0.1",
            "fd00::2",
            "::",
        ] {
            let peer = peer.parse().unwrap();
            for admin_listener in [false, true] {
                assert_eq!(
                    Access::tenant(peer, admin_listener),
                    Access::Tenant,
                    "{peer}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole_whatever_its_frames() {
        for parts in [
            &[][..],
            &["{}"],
            &["", "{\"query\":", "", "\"x\"}"],
            &["a", "b", "c"],
        ] {
            for trailers in [false, true] {
                let got = whole(Frames::new(parts, trailers)).await.unwrap();
                assert_eq!(got, parts.concat(), "{parts:?} trailers {trailers}");
            }
        }
    }
}

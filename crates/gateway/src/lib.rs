//! The tenantscale gateway (`tenantscale gateway`): a reverse proxy in front of the pod pool that
//! authenticates tenants (API keys, stored as SHA-256 in the catalog), admits them fairly
//! (GCRA rate limit and an in-flight cap of `maxShare ×` the live pool, from
//! `tenantscale-core`), routes each tenant to the pods that hold its index (rendezvous hashing
//! with bounded loads and slow start, also from core), signs the tenant for the pod, and keeps
//! away from draining, unreachable and failing pods.
//!
//! Requests are read whole (up to `max_body`) before they are sent on: a request refused by a
//! limit never reaches a pod, and one whose pod refused the connection can be sent to another.
//! Responses stream through.

pub mod metrics;
pub mod pods;
mod proxy;
mod shared;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::Metrics;
use pods::{Observed, POLL_EVERY, Pool};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenantscale_core::catalog::Catalog;
use tenantscale_core::fairness::admission::{Admission, TenantLimits};
use tenantscale_core::routing::{Router, RouterConfig, stable_hash};

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Pods as `host:port`.
    pub pods: Vec<String>,
    /// Shared secret with the pods, for `X-Tenantscale-Signature`.
    pub secret: Vec<u8>,
    /// Take the tenant from the seed's `X-Tenant-ID` (behind an authenticating ingress).
    pub trust_tenant_header: bool,
    pub max_body: usize,
    pub timeouts: Timeouts,
    pub router: RouterConfig,
    /// Seconds a client waits after a share-cap refusal (about one service time).
    pub share_retry_after: f64,
    /// Redis shared by the gateway replicas for rate and in-flight state.
    pub redis: Option<String>,
    /// Gateway replicas sharing the limits: without Redis each enforces 1/replicas of them.
    pub replicas: u32,
}

/// Time limits of each stage.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A client's request headers.
    pub header_read: Duration,
    /// A client's request body.
    pub body_read: Duration,
    /// Opening a connection to a pod.
    pub connect: Duration,
    /// A pod's response headers.
    pub response: Duration,
    /// Open connections finishing after a shutdown signal.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            connect: Duration::from_secs(2),
            response: Duration::from_secs(60),
            shutdown: Duration::from_secs(30),
        }
    }
}

/// Routing and admission state, behind one lock: both are a few arithmetic operations.
pub(crate) struct State {
    pub pool: Pool,
    pub admission: Admission,
}

pub(crate) struct Gateway {
    pub catalog: Catalog,
    pub config: GatewayConfig,
    /// SHA-256 of each API key → tenant. The presented key is hashed before the lookup, so
    /// timing can only tell an attacker about digest bits they cannot steer.
    pub api_keys: HashMap<[u8; 32], usize>,
    pub tenant_ids: HashMap<String, usize>,
    pub state: Mutex<State>,
    /// Each tenant's whole limits (what Redis enforces across replicas).
    pub limits: Vec<TenantLimits>,
    /// Set once Redis is connected.
    pub shared: std::sync::OnceLock<shared::SharedLimits>,
    pub client: proxy::Client,
    pub metrics: Metrics,
    pub signer: tenantscale_core::auth::Signer,
    /// Each tenant's id as a header value, made once.
    pub tenant_headers: Vec<hyper::header::HeaderValue>,
    started: Instant,
}

impl Gateway {
    fn new(catalog: Catalog, config: GatewayConfig) -> Self {
        let tenant_keys = catalog
            .tenants
            .iter()
            .map(|t| stable_hash(t.id.as_bytes()))
            .collect();
        let router = Router::new(config.router, tenant_keys);
        let metrics = Metrics::new(&catalog);
        let pool = Pool::new(router, config.router.warmup_seconds, &config.pods, |pod| {
            metrics.routed(pod)
        });
        let limits = TenantLimits::for_catalog(&catalog);
        // Decided here alone (no Redis configured, or Redis down): this replica's part.
        let enforcers = if config.redis.is_some() {
            config.replicas
        } else {
            1
        };
        let local: Vec<TenantLimits> = limits.iter().map(|l| l.split(enforcers)).collect();
        let admission = Admission::new(&local, config.share_retry_after);
        Self {
            api_keys: catalog
                .tenants
                .iter()
                .enumerate()
                .filter_map(|(i, t)| Some((t.api_key_sha256?, i)))
                .collect(),
            tenant_ids: catalog
                .tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), i))
                .collect(),
            metrics,
            signer: tenantscale_core::auth::Signer::new(&config.secret),
            tenant_headers: catalog
                .tenants
                .iter()
                .map(|t| t.id.parse().expect("DNS-1123 ids are header values"))
                .collect(),
            state: Mutex::new(State { pool, admission }),
            limits,
            shared: std::sync::OnceLock::new(),
            client: proxy::client(config.timeouts.connect),
            catalog,
            config,
            started: Instant::now(),
        }
    }

    /// Seconds since the gateway started: the router's and the limiter's clock.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gateway state lock")
    }
}

/// Serves until `stop` completes (the binary passes SIGTERM or Ctrl-C), then stops accepting
/// and lets open connections finish (up to the shutdown timeout).
pub async fn run(
    catalog: Catalog,
    config: GatewayConfig,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let gateway = Arc::new(Gateway::new(catalog, config));
    if let Some(url) = gateway.config.redis.clone() {
        connect_redis(Arc::clone(&gateway), url).await;
    }
    // Know the pods before taking traffic.
    poll_pods(&gateway).await;
    let ready = gateway.state().pool.router.ready_pods();
    tracing::info!(
        listen = %listener.local_addr()?,
        pods = gateway.config.pods.len(),
        ready,
        "gateway serving"
    );
    let poller = tokio::spawn(poll_pods_forever(Arc::clone(&gateway)));

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config.timeouts.header_read)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = Arc::clone(&gateway);
                let client_ip = hyper::header::HeaderValue::try_from(peer.ip().to_string())
                    .expect("an IP address is a header value");
                let service = hyper::service::service_fn(move |req| {
                    proxy::handle(Arc::clone(&gateway), req, client_ip.clone())
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    poller.abort();
    tracing::info!("shutting down: no new connections; finishing open ones");
    if tokio::time::timeout(gateway.config.timeouts.shutdown, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout: closing the connections left");
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Connects to Redis; if it is down, serves with local limits and keeps trying in the
/// background.
async fn connect_redis(gateway: Arc<Gateway>, url: String) {
    // Longer than any admitted request can last: the lease outlives a slow answer.
    let t = gateway.config.timeouts;
    let lease_ttl = t.body_read + t.response + Duration::from_secs(30);
    match shared::SharedLimits::connect(&url, lease_ttl).await {
        Ok(limits) => {
            let _ = gateway.shared.set(limits);
            tracing::info!("limits shared through Redis");
        }
        Err(e) => {
            tracing::warn!(error = %e, "Redis unavailable at start: enforcing this replica's part of the limits; retrying");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if let Ok(limits) = shared::SharedLimits::connect(&url, lease_ttl).await {
                        let _ = gateway.shared.set(limits);
                        tracing::info!("Redis connected: limits shared through Redis");
                        return;
                    }
                }
            });
        }
    }
}

async fn poll_pods_forever(gateway: Arc<Gateway>) {
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        poll_pods(&gateway).await;
    }
}

/// Asks every pod's `/ready` at once and applies the answers.
async fn poll_pods(gateway: &Arc<Gateway>) {
    let probes: Vec<_> = gateway
        .config
        .pods
        .iter()
        .map(|addr| tokio::spawn(proxy::probe_ready(gateway.client.clone(), addr.clone())))
        .collect();
    let mut answers = Vec::with_capacity(probes.len());
    for probe in probes {
        answers.push(probe.await.unwrap_or(None));
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let now = gateway.now();
    let mut state = gateway.state();
    for (i, answer) in answers.into_iter().enumerate() {
        let observed = match answer {
            Some((status, body)) => Observed::from_ready(status, &body, now_ms),
            None => Observed::Unreachable,
        };
        let before = state.pool.upstreams[i].observed;
        if std::mem::discriminant(&before) != std::mem::discriminant(&observed) {
            tracing::info!(pod = %state.pool.upstreams[i].addr, ?observed, "pod state");
        }
        state.pool.observe(i, observed, now);
    }
    state.pool.tick(now);
}

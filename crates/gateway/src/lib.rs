//! The tenantscale gateway (`tenantscale gateway`): a reverse proxy in front of the pod pool that
//! authenticates tenants (API keys, stored as SHA-256 in the catalog), admits them fairly
//! (GCRA rate limit and an in-flight cap of `maxShare ×` the live pool, from
//! `tenantscale-core`), routes each tenant to the pods that hold its index (rendezvous hashing
//! with bounded loads and slow start, also from core), signs the tenant for the pod, and keeps
//! away from draining, unreachable and failing pods.
//!
//! Admission is decided from a request's head; an admitted request is read whole (up to
//! `max_body`) before it is sent on: a request refused by a limit costs no body read and never
//! reaches a pod, and one whose pod refused the connection can be sent to another.
//! Responses stream through.

mod connections;
pub mod metrics;
pub mod pods;
mod proxy;
mod request_id;
mod shared;
mod signatures;
#[cfg(test)]
mod test_body;
mod tls;

pub use connections::valid_pod_addr;
use http_body_util::BodyExt;
use metrics::Metrics;
use pods::{Observed, POLL_EVERY, Pool};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenantscale_core::catalog::Catalog;
use tenantscale_core::fairness::admission::{Admission, TenantLimits};
use tenantscale_core::registry::Members;
use tenantscale_core::routing::{Router, RouterConfig, stable_hash};
pub use tls::TlsFiles;

/// Header fields a client's request may have: a pod's limit less the nine fields the gateway
/// adds (`Host`, `Content-Length`, `X-Forwarded-For`, `X-Tenant-ID`, `X-Request-Id`,
/// `X-Tenantscale-Tenant`, `-Timestamp`, `-Body-SHA256` and `-Signature`), so that every
/// request the gateway lets through fits in a pod's.
pub const MAX_CLIENT_HEADERS: usize = tenantscale_listener::MAX_HEADERS - 9;

/// Connections the admin listener keeps open at once: a few scrapers and operators (more wait
/// in the listen backlog).
const ADMIN_MAX_CONNECTIONS: usize = 16;

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The operator endpoints' own listener (`/metrics`, and the probes). Without it they are
    /// answered on `listen` to loopback clients only.
    pub admin_listen: Option<SocketAddr>,
    /// Serve the tenant listener over TLS with this certificate (reloaded when it changes).
    pub tls: Option<TlsFiles>,
    /// Where the pods come from.
    pub discovery: Discovery,
    /// Shared secret with the pods, for `X-Tenantscale-Signature`.
    pub secret: Vec<u8>,
    /// Take the tenant from the seed's `X-Tenant-ID` (behind an authenticating ingress).
    pub trust_tenant_header: bool,
    pub max_body: usize,
    pub timeouts: Timeouts,
    /// The client listener's connection limits (its `max_headers` is [`MAX_CLIENT_HEADERS`]).
    pub connections: tenantscale_listener::Limits,
    pub router: RouterConfig,
    /// Seconds a client waits after a share-cap refusal (about one service time).
    pub share_retry_after: f64,
    /// Redis shared by the gateway replicas for rate and in-flight state (`rediss://`: TLS).
    pub redis: Option<redis::Client>,
    /// Gateway replicas sharing the limits: without Redis each enforces 1/replicas of them.
    pub replicas: u32,
    /// The tenants this gateway serves.
    pub scope: TenantScope,
}

/// Which tenants a gateway serves. On Kubernetes a silo tenant has its own deployment: the
/// shared gateway refuses it and the silo's gateway serves only it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TenantScope {
    #[default]
    All,
    /// Every tenant not marked `silo` in the catalog.
    ExceptSilos,
    /// One tenant, by id.
    Only(String),
}

impl TenantScope {
    pub fn serves(&self, tenant: &tenantscale_core::catalog::Tenant) -> bool {
        match self {
            Self::All => true,
            Self::ExceptSilos => !tenant.silo,
            Self::Only(id) => &tenant.id == id,
        }
    }
}

/// Where the gateway learns the pool's pods.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// A fixed list of `host:port`.
    Static(Vec<String>),
    /// An in-process registry (`tenantscale up`: the local actuator's).
    Watch(tokio::sync::watch::Receiver<Members>),
    /// An autoscaler's HTTP registry, e.g. `http://127.0.0.1:9090` (its `/v1/pods` watch).
    Registry(String),
}

/// Time limits of each stage.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A client's request body.
    pub body_read: Duration,
    /// Opening a connection to a pod.
    pub connect: Duration,
    /// A pod's response headers; also the longest a pod may go silent in the middle of a
    /// response body.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            body_read: Duration::from_secs(30),
            connect: Duration::from_secs(2),
            response: Duration::from_secs(75),
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
    /// For the autoscaler's registry watch (pods are reached through their `Connections`).
    pub client: proxy::Client,
    pub metrics: Metrics,
    pub signatures: signatures::Signatures,
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
        let addrs = match &config.discovery {
            Discovery::Static(pods) => pods.clone(),
            Discovery::Watch(_) | Discovery::Registry(_) => Vec::new(),
        };
        let pool = Pool::new(
            router,
            config.router.warmup_seconds,
            connections::PodTimeouts {
                connect: config.timeouts.connect,
                body_silence: config.timeouts.response,
            },
            &addrs,
            |pod| metrics.routed(pod),
        );
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
            signatures: signatures::Signatures::new(
                tenantscale_core::auth::Signer::new(&config.secret),
                catalog.tenants.iter().map(|t| t.id.clone()).collect(),
            ),
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
    let tls = match config.tls.clone() {
        Some(files) => Some(tls::Tls::load(files).map_err(std::io::Error::other)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let admin_listener =
        match config.admin_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("--admin-listen {addr}: {e}"))
            })?),
            None => None,
        };
    let gateway = Arc::new(Gateway::new(catalog, config));
    if let Some(client) = gateway.config.redis.clone() {
        connect_redis(Arc::clone(&gateway), client).await;
    }
    let discovery = match gateway.config.discovery.clone() {
        Discovery::Static(_) => None,
        Discovery::Watch(members) => {
            let mut members = members;
            let now = gateway.now();
            let current = members.borrow_and_update().clone();
            apply_members(&gateway, &current, now);
            Some(tokio::spawn(follow_watch(Arc::clone(&gateway), members)))
        }
        Discovery::Registry(url) => {
            let (tx, mut rx) = tokio::sync::watch::channel(Members::default());
            // The first answer, so the pods are known before traffic (a registry that is
            // down now is retried in the background).
            if let Some(m) = registry_members(&gateway.client, &url, None).await {
                let _ = tx.send(m);
            }
            let now = gateway.now();
            apply_members(&gateway, &rx.borrow_and_update().clone(), now);
            tokio::spawn(watch_registry(gateway.client.clone(), url, tx));
            Some(tokio::spawn(follow_watch(Arc::clone(&gateway), rx)))
        }
    };
    // Know the pods before taking traffic.
    poll_pods(&gateway).await;
    let (pods, ready) = {
        let s = gateway.state();
        (s.pool.members().len(), s.pool.router.ready_pods())
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = tls.is_some(),
        pods,
        ready,
        "gateway serving"
    );
    if let Some(admin) = &admin_listener {
        tracing::info!(admin = %admin.local_addr()?, "gateway operator endpoints serving");
    }
    let poller = tokio::spawn(poll_pods_forever(Arc::clone(&gateway)));
    let reloader = tls.as_ref().map(tls::Tls::follow_files);
    let acceptor = tls.map(|t| t.acceptor);

    // One service per connection; what it may ask is decided from its listener and address.
    let service = |peer: SocketAddr, access: proxy::Access| {
        let gateway = Arc::clone(&gateway);
        let client_ip = hyper::header::HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is a header value");
        hyper::service::service_fn(move |req| {
            proxy::handle(Arc::clone(&gateway), req, client_ip.clone(), access)
        })
    };
    let has_admin = admin_listener.is_some();
    let tenant_service =
        |peer: SocketAddr| service(peer, proxy::Access::tenant(peer.ip(), has_admin));
    let limits = gateway.config.connections;
    // The stop signal, for both listeners.
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let stop = async {
        stop.await;
        tracing::info!("shutting down: no new connections; finishing open ones");
        let _ = stopping.send(true);
    };
    let admin = async {
        if let Some(listener) = admin_listener {
            let limits = tenantscale_listener::Limits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..limits
            };
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let admin_service = |peer: SocketAddr| service(peer, proxy::Access::Admin);
            tenantscale_listener::serve(listener, limits, None, admin_service, stop).await;
        }
    };
    tokio::join!(
        tenantscale_listener::serve(listener, limits, acceptor, tenant_service, stop),
        admin
    );
    poller.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    if let Some(d) = discovery {
        d.abort();
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Connects to Redis; if it is down, serves with local limits and keeps trying in the
/// background.
async fn connect_redis(gateway: Arc<Gateway>, client: redis::Client) {
    // Longer than any admitted request can last: the lease outlives a slow answer.
    let t = gateway.config.timeouts;
    let lease_ttl = t.body_read + t.response + Duration::from_secs(30);
    match shared::SharedLimits::connect(client.clone(), lease_ttl).await {
        Ok(limits) => {
            let _ = gateway.shared.set(limits);
            tracing::info!("limits shared through Redis");
        }
        Err(e) => {
            tracing::warn!(error = %e, "Redis unavailable at start: enforcing this replica's part of the limits; retrying");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if let Ok(limits) =
                        shared::SharedLimits::connect(client.clone(), lease_ttl).await
                    {
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

fn apply_members(gateway: &Gateway, members: &Members, now: f64) -> bool {
    let mut s = gateway.state();
    let joined = s
        .pool
        .set_members(&members.pods, now, |pod| gateway.metrics.routed(pod));
    tracing::info!(
        version = members.version,
        pods = members.pods.len(),
        draining = members.pods.iter().filter(|m| m.draining).count(),
        "pod membership"
    );
    joined
}

/// Applies each new membership. New pods are polled at once and then every 100 ms until
/// they answer (a pod just started is not listening yet), not only at the next tick: in a
/// burst every second a new pod is not taking traffic counts.
async fn follow_watch(gateway: Arc<Gateway>, mut members: tokio::sync::watch::Receiver<Members>) {
    while members.changed().await.is_ok() {
        let current = members.borrow_and_update().clone();
        if apply_members(&gateway, &current, gateway.now()) {
            for _ in 0..30 {
                poll_pods(&gateway).await;
                let unknown = {
                    let s = gateway.state();
                    s.pool
                        .members()
                        .into_iter()
                        .any(|i| s.pool.upstreams[i].observed == Observed::Unreachable)
                };
                if !unknown || members.has_changed().unwrap_or(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One read of an autoscaler's registry; with `after`, waits for a newer version.
async fn registry_members(
    client: &proxy::Client,
    url: &str,
    after: Option<u64>,
) -> Option<Members> {
    let query = after.map_or(String::new(), |v| format!("?after={v}&waitSeconds=25"));
    let req = hyper::Request::get(format!("{}/v1/pods{query}", url.trim_end_matches('/')))
        .body(http_body_util::Full::default())
        .ok()?;
    let exchange = async {
        let res = client.request(req).await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let body = http_body_util::Limited::new(res.into_body(), 1 << 20)
            .collect()
            .await
            .ok()?;
        serde_json::from_slice::<Members>(&body.to_bytes()).ok()
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .ok()
        .flatten()
}

/// Follows an autoscaler's registry by long polls; while it is unreachable the last
/// membership stands (pods keep being polled), and it is retried every second.
async fn watch_registry(
    client: proxy::Client,
    url: String,
    members: tokio::sync::watch::Sender<Members>,
) {
    let mut down = false;
    loop {
        let after = members.borrow().version;
        match registry_members(&client, &url, Some(after)).await {
            Some(m) => {
                if down {
                    tracing::info!(%url, "registry reachable again");
                    down = false;
                }
                if m.version != after {
                    let _ = members.send(m);
                }
            }
            None => {
                if !down {
                    tracing::warn!(%url, "registry unreachable: keeping the last pods; retrying");
                    down = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Asks every member's `/ready` at once and applies the answers.
async fn poll_pods(gateway: &Arc<Gateway>) {
    let (members, probes): (Vec<_>, Vec<_>) = {
        let s = gateway.state();
        let members = s.pool.members();
        let probes = members
            .iter()
            .map(|&i| Arc::clone(&s.pool.upstreams[i].connections))
            .map(|pod| tokio::spawn(proxy::probe_ready(pod)))
            .collect();
        (members, probes)
    };
    let mut answers = Vec::with_capacity(probes.len());
    for probe in probes {
        answers.push(probe.await.unwrap_or(None));
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let now = gateway.now();
    let mut state = gateway.state();
    for (i, answer) in members.into_iter().zip(answers) {
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

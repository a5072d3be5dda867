//! The tenantscale pod (`tenantscale serve`): answers RAG queries for many tenants on one set of
//! worker slots, with per-tenant bounded queues and weighted fair scheduling from
//! `tenantscale-core`, a per-pod LRU of tenant indexes loaded from the store, Prometheus
//! metrics, and a drain on SIGTERM that finishes every admitted query.

pub mod embedder;
pub mod http;
pub mod llm;
pub mod llm_sim;
pub mod metrics;
pub mod pod;
pub mod store;
pub mod warming_flag;

use pod::{Pod, PodState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How to run a pod.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub http: http::HttpConfig,
    /// After SIGTERM, keep accepting for this long (the gateway sees `/ready` 503 and stops).
    pub drain_grace: Duration,
    /// Give up on queued and running queries after this long.
    pub drain_timeout: Duration,
    /// The listener's connection limits (its shutdown is the drain timeout).
    pub connections: tenantscale_listener::Limits,
    /// Report `warming` in `/ready` for this long after start (zero: ready at once).
    pub warm_up: Duration,
    /// Load this many of the busiest tenants' indexes (by recorded volume) at start.
    pub preload: usize,
    /// Also announce the warm-up in Redis (the seed's `pod:{ip}:warming_up`).
    pub warming_flag: Option<warming_flag::WarmingFlag>,
}

/// How often served-query counts are added to the store's tenant volume.
const VOLUME_FLUSH: Duration = Duration::from_secs(30);

/// Serves until `stop` completes (the binary passes SIGTERM or Ctrl-C), then drains: `/ready`
/// turns 503 at once, new connections are refused after the grace period, and the process
/// returns once every admitted query is answered (or the drain timeout passes), with the
/// number of queries the drain timeout dropped.
pub async fn serve(
    pod: Arc<Pod>,
    config: ServeConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<u64> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    if !config.warm_up.is_zero() {
        pod.begin_warm_up(config.warm_up);
    }
    let addr = listener.local_addr()?;
    let flag = (config.warming_flag.clone()).map(|f| f.or_named_after(addr));
    if let Some(flag) = &flag
        && !config.warm_up.is_zero()
    {
        flag.set(config.warm_up).await;
    }
    tracing::info!(listen = %addr, "serving");
    tokio::spawn(warm(
        Arc::clone(&pod),
        config.preload,
        config.warm_up,
        flag.clone(),
    ));
    tokio::spawn(flush_volume_every(Arc::clone(&pod), VOLUME_FLUSH));
    let app = http::router(Arc::clone(&pod), config.http.clone());
    let drain_pod = Arc::clone(&pod);
    let shutdown = async move {
        stop.await;
        drain_pod.set_state(PodState::Draining);
        tracing::info!("draining: /ready is 503");
        if let Some(flag) = &flag {
            flag.clear().await;
        }
        tokio::time::sleep(config.drain_grace).await;
        tracing::info!("draining: no new connections");
    };
    let limits = tenantscale_listener::Limits {
        shutdown: config.drain_timeout,
        ..config.connections
    };
    let service_for = |_| hyper_util::service::TowerToHyperService::new(app.clone());
    tenantscale_listener::serve(listener, limits, None, service_for, shutdown).await;
    let left = pod.outstanding() as u64;
    pod.metrics.dropped_by_drain(left);
    flush_volume(&pod).await;
    tracing::info!(dropped = left, "drained");
    Ok(left)
}

/// Preloads the busiest tenants, then ends the warm-up window when it is over.
async fn warm(
    pod: Arc<Pod>,
    preload: usize,
    window: Duration,
    flag: Option<warming_flag::WarmingFlag>,
) {
    let until = tokio::time::Instant::now() + window;
    if preload > 0 {
        let started = std::time::Instant::now();
        let loader = Arc::clone(&pod);
        match tokio::task::spawn_blocking(move || loader.preload(preload)).await {
            Ok(Ok(tenants)) => tracing::info!(
                ?tenants,
                ms = started.elapsed().as_millis() as u64,
                "preloaded the busiest tenants"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "preload failed; tenants load on first use"),
            Err(e) => tracing::warn!(error = %e, "preload task failed"),
        }
    }
    tokio::time::sleep_until(until).await;
    pod.end_warm_up();
    if pod.state() == PodState::Ready && !window.is_zero() {
        if let Some(flag) = &flag {
            flag.clear().await;
        }
        tracing::info!("warm-up over: ready for full traffic");
    }
}

/// Also reads every tenant's storage usage into the metrics, at start and then each time.
async fn flush_volume_every(pod: Arc<Pod>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let reader = Arc::clone(&pod);
        match tokio::task::spawn_blocking(move || reader.refresh_usage()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not read tenants' storage usage"),
            Err(e) => tracing::warn!(error = %e, "storage usage task failed"),
        }
        flush_volume(&pod).await;
    }
}

async fn flush_volume(pod: &Arc<Pod>) {
    let pod = Arc::clone(pod);
    match tokio::task::spawn_blocking(move || pod.flush_volume()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not record tenant volume; kept for the next flush")
        }
        Err(e) => tracing::warn!(error = %e, "volume flush task failed"),
    }
}

/// Locks `m` even if a thread panicked holding it. Every lock of the pod guards state that a
/// panic cannot leave half-changed in a way that matters (a connection whose transaction rolls
/// back when dropped; the scheduler's counters, whose poisoning `/health` reports), so serving
/// goes on instead of every later caller panicking too.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

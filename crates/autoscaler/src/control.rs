//! The control loop: every interval, replace exited pods, observe them (every pod's
//! `/metrics` scraped in parallel, or a Prometheus server asked), decide with the engine, act,
//! and persist the engine's state.

use crate::engine::{Decision, Engine, EngineState, PodView};
use crate::exposition;
use crate::local::PodRecord;
use crate::pool::Pool;
use crate::prometheus::PrometheusSource;
use crate::signals::{PodScrape, PodSeen, PoolSignals, pool_signals};
use crate::state::{Persisted, StateStore};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantscale_core::catalog::Catalog;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Between decisions (and scrapes).
    pub interval: Duration,
    /// One scrape may take this long; a pod that does not answer counts as missing.
    pub scrape_timeout: Duration,
    /// Where the engine's state and the pods are written after every decision.
    pub state: Option<StateStore>,
    /// Ask this Prometheus server instead of scraping the pods.
    pub prometheus: Option<PrometheusSource>,
    /// Reloaded catalogs: the newest one applies from the next round on.
    pub catalog_updates: Option<tokio::sync::watch::Receiver<Catalog>>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            scrape_timeout: Duration::from_millis(800),
            state: None,
            prometheus: None,
            catalog_updates: None,
        }
    }
}

/// One tenant on the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    pub id: String,
    pub in_flight: f64,
    pub queued: f64,
    pub arrival_rate: f64,
    /// Concurrency the policy counts for it: its demand, capped at its entitlement.
    pub demand: f64,
    /// `maxShare × maxReplicas × slotsPerPod`.
    pub cap: f64,
}

/// `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub policy: String,
    /// Deciding (always, locally); on Kubernetes only the Lease's holder decides.
    pub leading: bool,
    /// Where the signals come from: `scrape` (the pods' `/metrics`) or `prometheus`.
    pub source: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub replicas: usize,
    pub desired: i32,
    pub pods: Vec<PodStatus>,
    pub queue_depth_per_tenant: f64,
    /// Tenants with any work, busiest first.
    pub tenants: Vec<TenantStatus>,
    /// The last decisions, newest last.
    pub decisions: VecDeque<Decision>,
    pub dropped_on_drain: u64,
    pub restarts: u64,
    pub scrape_failures: u64,
    /// Rounds with no observation at all (Prometheus did not answer): no decision was made.
    pub source_errors: u64,
    pub last_source_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub addr: String,
    /// `starting` (no scrape yet), `warming`, `ready`, `draining`, or `unreachable`.
    pub state: String,
    pub outstanding: f64,
}

/// Decisions kept on the status page.
const DECISIONS_KEPT: usize = 20;
/// Largest `/metrics` body read from a pod.
const MAX_SCRAPE: usize = 8 << 20;

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One scrape of `addr`, or why not.
async fn scrape(
    client: &Client<HttpConnector, Empty<Bytes>>,
    catalog: &Catalog,
    addr: &str,
    timeout: Duration,
) -> Result<(PodScrape, Option<String>), String> {
    let exchange = async {
        let uri: hyper::Uri = format!("http://{addr}/metrics")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let res = client.get(uri).await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("status {}", res.status()));
        }
        let body = Limited::new(res.into_body(), MAX_SCRAPE)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string())
    };
    let text = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "timeout".to_string())??;
    let samples = exposition::parse(&text).map_err(|e| e.to_string())?;
    let state = samples
        .iter()
        .find(|s| s.name == "tenantscale_pod_state" && s.value == 1.0)
        .and_then(|s| s.label("state").map(str::to_string));
    Ok((
        PodScrape::from_samples(catalog, unix_now(), &samples),
        state,
    ))
}

fn source_name(config: &ControlConfig) -> &'static str {
    if config.prometheus.is_some() {
        "prometheus"
    } else {
        "scrape"
    }
}

/// One round of observation: per pod (in `pods`' order) what it showed or why not, and the
/// pool's signals. An error means no observation at all.
async fn observe(
    config: &ControlConfig,
    client: &Client<HttpConnector, Empty<Bytes>>,
    catalog: &Catalog,
    pods: &[PodRecord],
    previous: &mut HashMap<String, PodScrape>,
) -> Result<(Vec<Result<PodSeen, String>>, PoolSignals), String> {
    if let Some(prometheus) = &config.prometheus {
        let addrs: Vec<String> = pods.iter().map(|p| p.addr.clone()).collect();
        let mut seen = prometheus
            .observe(catalog, &addrs, config.scrape_timeout)
            .await?;
        let per_pod = addrs
            .iter()
            .map(|a| {
                seen.pods
                    .remove(a)
                    .ok_or_else(|| "no series in Prometheus".to_string())
            })
            .collect();
        return Ok((per_pod, seen.signals));
    }
    let scrapes = futures_util::future::join_all(
        pods.iter()
            .map(|p| scrape(client, catalog, &p.addr, config.scrape_timeout)),
    )
    .await;
    let mut round = Vec::new();
    let per_pod = scrapes
        .into_iter()
        .zip(pods)
        .map(|(result, pod)| {
            result.map(|(scrape, state)| {
                let outstanding = scrape.outstanding();
                round.push((pod.addr.clone(), scrape));
                PodSeen { state, outstanding }
            })
        })
        .collect();
    Ok((per_pod, pool_signals(catalog, &round, previous)))
}

/// Runs the loop until `stop` completes; returns the pool (for a drain or a hand-over).
pub async fn run<P: Pool>(
    mut catalog: Catalog,
    mut config: ControlConfig,
    mut actuator: P,
    mut engine_state: EngineState,
    status: Arc<Mutex<Status>>,
    stop: impl Future<Output = ()>,
) -> P {
    let mut engine = Engine::for_catalog(&catalog);
    let (mut min, mut max) = engine.bounds();
    warn_unsupported(&engine);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut previous: HashMap<String, PodScrape> = HashMap::new();
    // When each pod was last seen change readiness (for the HPA's readiness rules).
    let mut ready_since: HashMap<String, (bool, f64)> = HashMap::new();
    let (mut scrape_failures, mut source_errors) = (0u64, 0u64);
    // Prometheus sees a new pod only after its discovery refresh and a scrape.
    let startup_grace = if config.prometheus.is_some() {
        30.0
    } else {
        10.0
    };
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Below minReplicas (a fresh start or fewer pods adopted): start them now.
    let mut leading = actuator.prepare().await == Ok(true);
    if leading && actuator.replicas() < min.max(0) as usize {
        actuator.scale_to(min as usize, &HashMap::new()).await;
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stop => break,
        }
        if let Some(updates) = &mut config.catalog_updates
            && updates.has_changed().unwrap_or(false)
        {
            // Every field applies now; the engine's memory (windows, scale events) goes on,
            // as a Kubernetes HPA's does when its spec is edited.
            let new = updates.borrow_and_update().clone();
            for scrape in previous.values_mut() {
                *scrape = scrape.for_catalog(&catalog, &new);
            }
            catalog = new;
            engine = Engine::for_catalog(&catalog);
            (min, max) = engine.bounds();
            warn_unsupported(&engine);
        }
        let was_leading = leading;
        leading = match actuator.prepare().await {
            Ok(l) => l,
            Err(e) => {
                source_errors += 1;
                tracing::warn!(error = %e, "cannot see the pool this round: no decision");
                let mut s = status.lock().expect("status lock");
                s.source_errors = source_errors;
                s.last_source_error = Some(e);
                continue;
            }
        };
        if leading && !was_leading {
            // Another autoscaler led until now: continue from the windows it saved.
            if let Some(store) = &config.state {
                match store.load().await {
                    Ok(Some(saved)) => engine_state = saved.engine,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the saved state"),
                }
            }
            tracing::info!("leading: this autoscaler decides now");
        } else if was_leading && !leading {
            tracing::info!("another autoscaler leads now: observing only");
        }
        let pods = actuator.records();
        let Some((observed, signals)) = observe(&config, &client, &catalog, &pods, &mut previous)
            .await
            .inspect_err(|e| {
                source_errors += 1;
                tracing::warn!(error = %e, "no observation this round: no decision");
                status.lock().expect("status lock").last_source_error = Some(e.clone());
            })
            .ok()
        else {
            status.lock().expect("status lock").source_errors = source_errors;
            continue;
        };
        let now = unix_now();
        let mut views = Vec::new();
        let mut pod_status = Vec::new();
        for (result, record) in observed.into_iter().zip(&pods) {
            let addr = record.addr.clone();
            let (state, outstanding, ready) = match result {
                Ok(seen) => {
                    let state = seen.state.unwrap_or_else(|| "ready".into());
                    let ready = state == "ready" || state == "warming";
                    (state, seen.outstanding, ready)
                }
                Err(e) => {
                    // A pod still starting does not answer yet: that is not a failure.
                    if now - record.started > startup_grace {
                        scrape_failures += 1;
                        tracing::debug!(pod = %addr, error = %e, "no metrics from pod");
                        ("unreachable".to_string(), 0.0, false)
                    } else {
                        ("starting".to_string(), 0.0, false)
                    }
                }
            };
            let since = ready_since
                .entry(addr.clone())
                .or_insert((ready, record.started));
            if since.0 != ready {
                *since = (ready, now);
            }
            views.push(PodView {
                ready,
                draining: false,
                started_seconds_ago: now - record.started,
                ready_seconds_ago: now - since.1,
            });
            pod_status.push(PodStatus {
                addr,
                state,
                outstanding,
            });
        }
        ready_since.retain(|a, _| pods.iter().any(|p| &p.addr == a));
        let current = actuator.replicas() as i32;
        // Only the leader decides, acts and saves; a follower keeps its status page current.
        let decision = if leading {
            let decision = engine.decide(&mut engine_state, now, current, &views, &signals);
            if decision.desired != current {
                tracing::info!(
                    from = current,
                    to = decision.desired,
                    reason = %decision.reason,
                    "scaling"
                );
                let outstanding: HashMap<String, f64> = pod_status
                    .iter()
                    .map(|p| (p.addr.clone(), p.outstanding))
                    .collect();
                actuator
                    .scale_to(decision.desired.max(0) as usize, &outstanding)
                    .await;
            } else {
                tracing::debug!(replicas = current, reason = %decision.reason, "steady");
            }
            persist(&config, engine.name(), &engine_state, &actuator).await;
            Some(decision)
        } else {
            None
        };
        let mut s = status.lock().expect("status lock");
        s.leading = leading;
        s.policy = engine.name().into();
        s.source = source_name(&config).into();
        (s.min_replicas, s.max_replicas) = (min, max);
        s.replicas = actuator.replicas();
        s.pods = pod_status;
        s.queue_depth_per_tenant = signals.queue_depth_per_tenant;
        let entitlement = |share| catalog.pool.tenant_aware.entitlement(share);
        let mut tenants: Vec<TenantStatus> = signals
            .demands
            .iter()
            .zip(&catalog.tenants)
            .filter(|(d, _)| d.raw() > 0.0 || d.arrival_rate > 0.0)
            .map(|(d, t)| TenantStatus {
                id: t.id.clone(),
                in_flight: d.in_flight,
                queued: d.queued,
                arrival_rate: d.arrival_rate,
                demand: d.raw().min(entitlement(d.max_share)),
                cap: entitlement(d.max_share),
            })
            .collect();
        tenants.sort_by(|a, b| b.demand.total_cmp(&a.demand));
        s.tenants = tenants;
        if let Some(decision) = decision {
            s.desired = decision.desired;
            s.decisions.push_back(decision);
            while s.decisions.len() > DECISIONS_KEPT {
                s.decisions.pop_front();
            }
        }
        (s.dropped_on_drain, s.restarts) = actuator.counters();
        s.scrape_failures = scrape_failures;
        s.source_errors = source_errors;
        s.last_source_error = None;
    }
    if leading {
        persist(&config, engine.name(), &engine_state, &actuator).await;
    }
    actuator
}

fn warn_unsupported(engine: &Engine) {
    for m in engine.unsupported_metrics() {
        tracing::warn!(metric = %m, "the autoscaler cannot read this metric from pods: it counts as unavailable");
    }
}

/// Writes the engine's memory and the adoptable pods to the configured store, if any.
async fn persist<P: Pool>(config: &ControlConfig, policy: &str, engine: &EngineState, pool: &P) {
    if let Some(store) = &config.state {
        let persisted = Persisted {
            policy: policy.into(),
            engine: engine.clone(),
            pods: pool.adoptable(),
        };
        if let Err(e) = store.save(&persisted).await {
            tracing::warn!(error = %e, "cannot persist the autoscaler's state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use tenantscale_core::scaling::tenant_aware::TenantDemand;

    /// A restart in the middle of a run decides exactly as the uninterrupted run: everything
    /// the engine remembers survives the state file.
    #[test]
    fn a_restored_state_file_decides_as_if_never_stopped() {
        let catalog = Catalog::parse(
            "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {weight: 3, share: 0.9, maxShare: 0.3}\n\
             tenants:\n  - {id: a, tier: gold}\n  - {id: b, tier: gold}\n\
             pool:\n  minReplicas: 1\n  maxReplicas: 10\n  slotsPerPod: 2\n  tenantAware:\n    stableWindowSeconds: 20\n    panicWindowSeconds: 2\n    behavior:\n      scaleDown: {stabilizationWindowSeconds: 5, policies: [{type: Pods, value: 1, periodSeconds: 8}]}\n",
        )
        .unwrap()
        .catalog;
        let engine = Engine::for_catalog(&catalog);
        let demand = |step: usize| PoolSignals {
            demands: vec![
                TenantDemand {
                    in_flight: if (10..40).contains(&step) { 5.0 } else { 0.5 },
                    max_share: 0.3,
                    ..TenantDemand::default()
                };
                2
            ],
            queue_depth_per_tenant: 0.0,
        };
        let run = |restart_at: Option<usize>| {
            let path = std::env::temp_dir().join(format!(
                "tenantscale-state-{}-{restart_at:?}.json",
                std::process::id()
            ));
            let store = StateStore::File(path.clone());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut state = EngineState::default();
            let (mut current, mut out) = (1, vec![]);
            for step in 0..120 {
                if Some(step) == restart_at {
                    let persisted = Persisted {
                        policy: engine.name().into(),
                        engine: state,
                        pods: vec![],
                    };
                    runtime.block_on(store.save(&persisted)).unwrap();
                    state = runtime.block_on(store.load()).unwrap().unwrap().engine;
                }
                let d = engine.decide(
                    &mut state,
                    1e9 + step as f64 * 0.5,
                    current,
                    &[],
                    &demand(step),
                );
                current = d.desired;
                out.push(d.desired);
            }
            let _ = std::fs::remove_file(path);
            out
        };
        let uninterrupted = run(None);
        assert!(
            uninterrupted.iter().max() > Some(&3),
            "it scaled up: {uninterrupted:?}"
        );
        assert!(uninterrupted.windows(2).any(|w| w[1] < w[0]), "and down");
        for restart in [12, 45, 50, 60, 80] {
            assert_eq!(
                run(Some(restart)),
                uninterrupted,
                "restart at step {restart}"
            );
        }
    }
}

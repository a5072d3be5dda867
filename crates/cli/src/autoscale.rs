//! `tenantscale autoscale` (the control loop over a local pool) and `tenantscale up` (the
//! whole stack in one process: gateway + autoscaler, pods as child processes).

use crate::gateway::GatewayOptions;
use crate::{BadInput, CatalogFile};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantscale_autoscaler::control::{self, ControlConfig, Status};
use tenantscale_autoscaler::engine::EngineState;
use tenantscale_autoscaler::local::{LocalActuator, LocalConfig};
use tenantscale_autoscaler::prometheus::PrometheusSource;
use tenantscale_autoscaler::state::StateStore;
use tenantscale_core::catalog::Catalog;
use tenantscale_core::reload::Reloads;
use tenantscale_gateway::Discovery;

pub const DEFAULT_STATE_KEY: &str = "tenantscale:autoscaler-state";

/// How the local pool's pods are started and controlled (shared by `autoscale` and `up`).
#[derive(clap::Args)]
pub struct PoolArgs {
    /// Directory for the store (unless --store), the autoscaler's state file and pod logs.
    #[arg(long, default_value = "tenantscale-data")]
    pub data_dir: PathBuf,
    /// The pods' store (default: sqlite://DATA_DIR/store.db).
    #[arg(long, env = "TENANTSCALE_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// The pods' embedder (see `serve --embedder`).
    #[arg(long, env = "TENANTSCALE_EMBEDDER", default_value = "hashed")]
    pub embedder: String,
    /// OpenAI-compatible chat completions URL for the pods (see `serve --llm-url`).
    #[arg(long = "llm", env = "TENANTSCALE_LLM_URL")]
    pub llm_url: Option<String>,
    /// PEM CA certificates for an https:// --llm (see `serve --llm-ca`).
    #[arg(
        long,
        env = "TENANTSCALE_LLM_CA",
        value_name = "FILE",
        requires = "llm_url"
    )]
    pub llm_ca: Option<PathBuf>,
    /// Seconds a new pod reports `warming` (the gateway ramps its share over this window).
    #[arg(long, default_value_t = 30.0)]
    pub warm_up: f64,
    /// Seconds a draining pod may take to finish its queries (then it drops them).
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Seconds between decisions (each one scrapes every pod first).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Read the signals from this Prometheus server (http[s]://HOST:PORT) instead of scraping
    /// the pods; it must scrape them, e.g. with `http_sd_configs` on the autoscaler's
    /// /v1/prometheus-targets, as examples/prometheus-local.yml does.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// PEM CA certificates an https:// --prometheus is verified against, instead of the
    /// system's roots.
    #[arg(long, value_name = "FILE", requires = "prometheus")]
    pub prometheus_ca: Option<PathBuf>,
    /// Seconds of `rate(...)` in the Prometheus queries: at least two of its scrape intervals.
    #[arg(long, default_value_t = 30.0, requires = "prometheus")]
    pub prometheus_window: f64,
    /// The Redis key of the autoscaler's state when --redis is given (instead of
    /// DATA_DIR/autoscaler-state.json).
    #[arg(long, default_value = DEFAULT_STATE_KEY)]
    pub state_key: String,
    /// More arguments for every `serve`, e.g. --pod-arg=--cache-bytes=1073741824.
    #[arg(long = "pod-arg", allow_hyphen_values = true)]
    pub pod_args: Vec<String>,
}

#[derive(clap::Args)]
pub struct AutoscaleArgs {
    #[command(flatten)]
    pub catalog: CatalogFile,
    /// The autoscaler's API: /status, /metrics, and the pod registry /v1/pods that
    /// `tenantscale gateway --registry` follows. For operators and the gateways only (it names
    /// every tenant and pod): keep it on loopback, or behind a firewall or NetworkPolicy
    /// (`render` adds one).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Shared secret of the gateway and the pods (at least 16 bytes); given to the pods.
    #[arg(long, env = "TENANTSCALE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Keep the autoscaler's state (windows, pods) in this Redis, e.g. redis://127.0.0.1:6379
    /// (rediss:// for TLS).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    #[command(flatten)]
    pub redis_ca: crate::RedisCa,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Scale this Deployment on Kubernetes (NAMESPACE/NAME) instead of local pods: the
    /// `scale` subresource, pod-deletion-cost before a scale-down, a Lease so only one
    /// replica decides, the engine's state in a ConfigMap. Credentials: in-cluster, or
    /// KUBECONFIG. Builds with `--features kubernetes` (the Dockerfile's).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub kubernetes_deployment: Option<String>,
    /// The pods' HTTP port (with --kubernetes-deployment).
    #[arg(long, default_value_t = 8080, requires = "kubernetes_deployment")]
    pub pod_port: u16,
    /// On SIGTERM, drain and stop the pods too. By default they keep running and the next
    /// `autoscale` with the same --data-dir adopts them, as a restarted controller would.
    #[arg(long)]
    pub stop_pods: bool,
    #[command(flatten)]
    pub connections: crate::serve::ConnectionArgs,
}

#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub catalog: CatalogFile,
    /// The gateway's address (clients connect here).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// The autoscaler's API (/status, /metrics, /v1/pods), for operators only (see
    /// `autoscale --listen`).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub api: SocketAddr,
    #[command(flatten)]
    pub pool: PoolArgs,
    #[command(flatten)]
    pub gateway: GatewayOptions,
}

/// A secret from the flag, or a fresh random one for this run (only our children use it).
pub fn secret_or_random(secret: Option<String>) -> anyhow::Result<String> {
    match secret {
        Some(s) => crate::check_secret(s),
        None => {
            use std::io::Read;
            let mut bytes = [0u8; 24];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .context("reading /dev/urandom for a secret")?;
            Ok(hex::encode(bytes))
        }
    }
}

pub struct Prepared {
    catalog: Catalog,
    /// The catalog file, as given (a symlink is followed at every reload).
    catalog_path: PathBuf,
    reloads: Arc<Reloads>,
    actuator: LocalActuator,
    pub members: tokio::sync::watch::Receiver<tenantscale_core::registry::Members>,
    engine: EngineState,
    control: ControlConfig,
}

/// Checks the flags, reads the saved state (the file, or `redis`) and adopts the pods it lists
/// that still run.
pub fn prepare(
    catalog_path: &Path,
    pool: PoolArgs,
    redis: Option<(&str, Option<&Path>)>,
    secret: &str,
) -> anyhow::Result<Prepared> {
    let (catalog, reloads) = crate::reload::initial(catalog_path)?;
    let interval = crate::serve::seconds("--interval", pool.interval)?;
    if interval < Duration::from_millis(100) {
        return Err(BadInput(format!("--interval {}: at least 0.1 s", pool.interval)).into());
    }
    let prometheus = match &pool.prometheus {
        Some(url) => Some(
            PrometheusSource::new(
                url,
                pool.prometheus_ca.as_deref(),
                crate::serve::seconds("--prometheus-window", pool.prometheus_window)?,
            )
            .map_err(BadInput)?,
        ),
        None => None,
    };
    let warm_up = crate::serve::seconds("--warm-up", pool.warm_up)?;
    let drain_timeout = crate::serve::seconds("--drain-timeout", pool.drain_timeout)?;
    std::fs::create_dir_all(&pool.data_dir)
        .with_context(|| format!("cannot create {}", pool.data_dir.display()))?;
    let data_dir = pool.data_dir.canonicalize()?;
    let store = pool
        .store
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("store.db").display()));
    // Absolute, not canonical: a pod must follow a symlink the catalog is swapped through.
    let catalog_path = std::path::absolute(catalog_path)
        .with_context(|| format!("cannot read {}", catalog_path.display()))?;
    let mut args: Vec<String> = vec![
        "-c".into(),
        catalog_path.display().to_string(),
        "--store".into(),
        store,
        "--embedder".into(),
        pool.embedder,
        "--warm-up".into(),
        warm_up.as_secs_f64().to_string(),
        "--drain-timeout".into(),
        drain_timeout.as_secs_f64().to_string(),
    ];
    if let Some(url) = pool.llm_url {
        args.extend(["--llm-url".into(), url]);
    }
    if let Some(ca) = pool.llm_ca {
        args.extend(["--llm-ca".into(), ca.display().to_string()]);
    }
    args.extend(pool.pod_args);
    let store = match redis {
        Some((url, ca)) => StateStore::redis(url, ca, &pool.state_key).map_err(BadInput)?,
        None => StateStore::File(data_dir.join("autoscaler-state.json")),
    };
    let persisted = tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(store.load())
        .map_err(BadInput)?;
    let (mut actuator, members) = LocalActuator::new(LocalConfig {
        program: std::env::current_exe().context("cannot find the tenantscale binary")?,
        args,
        env: vec![("TENANTSCALE_SECRET".into(), secret.into())],
        log_dir: data_dir.join("logs"),
        // The pod's grace period and drain, and a margin to exit.
        stop_timeout: drain_timeout + Duration::from_secs(10),
    });
    let engine = match persisted {
        Some(p) => {
            let adopted = actuator.adopt(&p.pods);
            tracing::info!(
                adopted,
                recorded = p.pods.len(),
                from = %store.describe(),
                "restored the autoscaler's state"
            );
            p.engine
        }
        None => EngineState::default(),
    };
    Ok(Prepared {
        catalog,
        catalog_path,
        reloads,
        actuator,
        members,
        engine,
        control: ControlConfig {
            interval,
            state: Some(store),
            prometheus,
            ..ControlConfig::default()
        },
    })
}

/// Reloads the catalog file into the control loop (see [`crate::reload::spawn_watch`]): every
/// field applies at the next round but the restart-only ones, which keep the values the
/// pods started with (the pods keep them too).
fn watch_catalog(
    path: &Path,
    start: &Catalog,
    reloads: Arc<Reloads>,
) -> anyhow::Result<tokio::sync::watch::Receiver<Catalog>> {
    let (updates, received) = tokio::sync::watch::channel(start.clone());
    let start = start.clone();
    crate::reload::spawn_watch(path.to_path_buf(), reloads, move |loaded| {
        let restart_only = start.restart_only_changes(&loaded.catalog);
        updates.send_replace(loaded.catalog.keeping_restart_only(&start));
        restart_only.into_iter().map(String::from).collect()
    })?;
    Ok(received)
}

async fn serve_api(
    listen: SocketAddr,
    limits: tenantscale_listener::Limits,
    status: Arc<Mutex<Status>>,
    members: tokio::sync::watch::Receiver<tenantscale_core::registry::Members>,
    reloads: Arc<Reloads>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "autoscaler API serving");
    let app = tenantscale_autoscaler::http::router(status, members, reloads);
    let service_for = move |_| hyper_util::service::TowerToHyperService::new(app.clone());
    // Served until the task is aborted.
    let serving =
        tenantscale_listener::serve(listener, limits, None, service_for, std::future::pending());
    Ok(tokio::spawn(serving))
}

pub fn run_autoscale(args: AutoscaleArgs) -> anyhow::Result<()> {
    if let Some(target) = &args.kubernetes_deployment {
        return run_on_kubernetes(&args, target);
    }
    let secret = match args.secret {
        Some(s) => crate::check_secret(s)?,
        None => {
            return Err(BadInput(
                "the pods check the gateway's signatures: give --secret (or TENANTSCALE_SECRET), the gateway's"
                    .into(),
            )
            .into());
        }
    };
    let limits = args.connections.limits(tenantscale_listener::MAX_HEADERS)?;
    let prepared = prepare(
        &args.catalog.config,
        args.pool,
        args.redis
            .as_deref()
            .map(|url| (url, args.redis_ca.file.as_deref())),
        &secret,
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let status = Arc::new(Mutex::new(Status::default()));
            let updates = watch_catalog(
                &prepared.catalog_path,
                &prepared.catalog,
                Arc::clone(&prepared.reloads),
            )?;
            let api = serve_api(
                args.listen,
                limits,
                Arc::clone(&status),
                prepared.members,
                prepared.reloads,
            )
            .await?;
            let actuator = control::run(
                prepared.catalog,
                ControlConfig {
                    catalog_updates: Some(updates),
                    ..prepared.control
                },
                prepared.actuator,
                prepared.engine,
                status,
                crate::stop_signal(),
            )
            .await;
            if args.stop_pods {
                tracing::info!("draining the pods");
                actuator.shutdown().await;
            } else {
                tracing::info!("stopping; the pods keep running for the next autoscaler");
            }
            api.abort();
            Ok(())
        })
}

pub fn run_up(args: UpArgs) -> anyhow::Result<()> {
    let secret = secret_or_random(args.gateway.secret.clone())?;
    // One Redis for the gateway's shared limits and the autoscaler's state.
    let prepared = prepare(
        &args.catalog.config,
        args.pool,
        args.gateway
            .redis
            .as_deref()
            .map(|url| (url, args.gateway.redis_ca.file.as_deref())),
        &secret,
    )?;
    let gateway = args.gateway.config(
        args.listen,
        Discovery::Watch(prepared.members.clone()),
        secret.into_bytes(),
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let status = Arc::new(Mutex::new(Status::default()));
            run_stack(prepared, gateway, args.api, status, crate::stop_signal()).await?;
            Ok(())
        })
}

/// What a stopped stack reports.
pub struct Stopped {
    /// Queries pods dropped when a drain timed out, over the whole run.
    pub dropped_on_drain: u64,
}

/// Gateway + autoscaler until `stop`; then the pods drain (the gateway stops sending to
/// each as it goes), then the gateway stops.
pub async fn run_stack(
    prepared: Prepared,
    gateway: tenantscale_gateway::GatewayConfig,
    api: SocketAddr,
    status: Arc<Mutex<Status>>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Stopped> {
    // `up`'s connection flags are the gateway's; the API takes them too.
    let limits = tenantscale_listener::Limits {
        max_headers: tenantscale_listener::MAX_HEADERS,
        ..gateway.connections
    };
    let updates = watch_catalog(
        &prepared.catalog_path,
        &prepared.catalog,
        Arc::clone(&prepared.reloads),
    )?;
    let api = serve_api(
        api,
        limits,
        Arc::clone(&status),
        prepared.members,
        prepared.reloads,
    )
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gateway = tokio::spawn(tenantscale_gateway::run(
        prepared.catalog.clone(),
        gateway,
        async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let actuator = control::run(
        prepared.catalog,
        ControlConfig {
            catalog_updates: Some(updates),
            ..prepared.control
        },
        prepared.actuator,
        prepared.engine,
        status,
        stop,
    )
    .await;
    tracing::info!("stopping: draining the pods");
    let counters = Arc::clone(&actuator.counters);
    actuator.shutdown().await;
    let _ = stop_tx.send(true);
    match gateway.await {
        Ok(result) => result.context("gateway")?,
        Err(e) => anyhow::bail!("gateway task: {e}"),
    }
    api.abort();
    tracing::info!("stopped");
    Ok(Stopped {
        dropped_on_drain: counters
            .dropped_on_drain
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// `autoscale --kubernetes-deployment`: the same loop, acting on a Deployment.
#[cfg(feature = "kubernetes")]
fn run_on_kubernetes(args: &AutoscaleArgs, target: &str) -> anyhow::Result<()> {
    use tenantscale_autoscaler::kubernetes::{KubeActuator, KubeTarget};
    let (catalog, reloads) = crate::reload::initial(&args.catalog.config)?;
    let catalog_path = args.catalog.config.clone();
    let interval = crate::serve::seconds("--interval", args.pool.interval)?;
    // In a pod, its name (the Deployment sets HOSTNAME); elsewhere host and process.
    let identity = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("autoscaler-{}", std::process::id()));
    let target = KubeTarget::parse(target, args.pod_port, identity).map_err(BadInput)?;
    let prometheus = match &args.pool.prometheus {
        Some(url) => Some(
            PrometheusSource::new(
                url,
                args.pool.prometheus_ca.as_deref(),
                crate::serve::seconds("--prometheus-window", args.pool.prometheus_window)?,
            )
            .map_err(BadInput)?,
        ),
        None => None,
    };
    let listen = args.listen;
    let limits = args.connections.limits(tenantscale_listener::MAX_HEADERS)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let client = tenantscale_k8s::cluster::client().await?;
            let (actuator, members, state) = KubeActuator::new(client, &target);
            let store = StateStore::ConfigMap(Box::new(state));
            let engine = match store.load().await.map_err(BadInput)? {
                Some(saved) => {
                    tracing::info!(from = %store.describe(), "restored the autoscaler's state");
                    saved.engine
                }
                None => EngineState::default(),
            };
            let status = Arc::new(Mutex::new(Status::default()));
            let updates = watch_catalog(&catalog_path, &catalog, Arc::clone(&reloads))?;
            let api = serve_api(listen, limits, Arc::clone(&status), members, reloads).await?;
            tracing::info!(
                namespace = %target.namespace,
                deployment = %target.deployment,
                identity = %target.identity,
                "autoscaling a Deployment"
            );
            control::run(
                catalog,
                ControlConfig {
                    interval,
                    state: Some(store),
                    prometheus,
                    catalog_updates: Some(updates),
                    ..ControlConfig::default()
                },
                actuator,
                engine,
                status,
                crate::stop_signal(),
            )
            .await;
            api.abort();
            Ok(())
        })
}

#[cfg(not(feature = "kubernetes"))]
fn run_on_kubernetes(_: &AutoscaleArgs, target: &str) -> anyhow::Result<()> {
    Err(BadInput(format!(
        "--kubernetes-deployment {target}: this build has no Kubernetes support; build with `cargo build --release -p tenantscale --features kubernetes` (the Dockerfile does)"
    ))
    .into())
}

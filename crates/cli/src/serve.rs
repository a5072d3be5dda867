//! `tenantscale serve` (the RAG pod) and `tenantscale ingest` (load files into the store).

use crate::{BadInput, CatalogFile, StoreArgs, read_input};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tenantscale_core::catalog::Catalog;
use tenantscale_service::embedder::Embedder;
use tenantscale_service::http::{HttpConfig, Keys, TenantAuth};
use tenantscale_service::llm::{Llm, LlmConfig};
use tenantscale_service::llm_sim::{self, LlmSimConfig};
use tenantscale_service::pod::{Pod, PodConfig};
use tenantscale_service::store::{NewDocument, Store, StoreError};
use tenantscale_service::warming_flag::WarmingFlag;
use tenantscale_service::{ServeConfig, serve};

/// The longest a query or write waits for a worker slot (then 503 `queue_timeout`).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// `--llm-timeout`'s default.
pub const DEFAULT_LLM_TIMEOUT: f64 = 30.0;

/// Options of `tenantscale serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub catalog: CatalogFile,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Shared secret with the gateway (at least 16 bytes).
    #[arg(long, env = "TENANTSCALE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A second accepted secret (at least 16 bytes), for rotating the secret without downtime:
    /// roll the pods with the new secret here, switch the gateways to it, then roll the pods
    /// with it as --secret and no --next-secret.
    #[arg(long, env = "TENANTSCALE_NEXT_SECRET", hide_env_values = true)]
    pub next_secret: Option<String>,
    /// Also accept requests signed in the format before the body digest (no
    /// X-Tenantscale-Body-SHA256: neither body nor query is bound), only for the duration of a
    /// rolling upgrade of the gateways.
    #[arg(long)]
    pub accept_legacy_signatures: bool,
    /// Accept the seed's plain X-Tenant-ID (only behind an ingress that authenticates).
    #[arg(long)]
    pub trust_tenant_header: bool,
    /// Memory budget of the tenant index cache, bytes.
    #[arg(long, default_value_t = 512 << 20)]
    pub cache_bytes: u64,
    /// Chunks from which a tenant is searched through an HNSW graph (built in the background
    /// when its index loads) instead of an exact scan. The default keeps exact search, which
    /// is never wrong, up to where its p99 nears 5 ms (see README, benchmarks).
    #[arg(long, default_value_t = 50_000)]
    pub hnsw_threshold: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Seconds to keep accepting after SIGTERM (while /ready says draining).
    #[arg(long, default_value_t = 2.0)]
    pub drain_grace: f64,
    /// Seconds to wait for queued and running queries before giving up.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Seconds /ready reports `warming` after start, so the gateway ramps traffic slowly.
    #[arg(long, default_value_t = 300.0)]
    pub warm_up: f64,
    /// Busiest tenants (by queries recorded in the store over the last hour) to preload.
    #[arg(long, default_value_t = 5)]
    pub preload: usize,
    /// Redis for the seed's warm-up flag `pod:{POD}:warming_up` (set for the warm-up window,
    /// deleted when it ends or the pod drains), e.g. redis://127.0.0.1:6379 (rediss:// for
    /// TLS).
    #[arg(long, env = "TENANTSCALE_REDIS")]
    pub redis: Option<String>,
    #[command(flatten)]
    pub redis_ca: crate::RedisCa,
    /// The pod's name in that key; the seed uses the pod IP (Kubernetes: from the downward
    /// API). Default: the address the pod listens on.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<String>,
    /// OpenAI-compatible chat completions URL (http:// or https://) for `generate: true`
    /// queries, e.g. http://127.0.0.1:9000/v1/chat/completions; without it answers are null.
    #[arg(long, env = "TENANTSCALE_LLM_URL")]
    pub llm_url: Option<String>,
    /// PEM CA certificates an https:// --llm-url is verified against, instead of the
    /// system's roots.
    #[arg(
        long,
        env = "TENANTSCALE_LLM_CA",
        value_name = "FILE",
        requires = "llm_url"
    )]
    pub llm_ca: Option<PathBuf>,
    /// Model name sent to the LLM.
    #[arg(long, default_value = "llm-sim")]
    pub llm_model: String,
    /// Bearer token for the LLM.
    #[arg(long, env = "TENANTSCALE_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Seconds an answer may take, retries included (then 504).
    #[arg(long, default_value_t = DEFAULT_LLM_TIMEOUT)]
    pub llm_timeout: f64,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// The limits of a listener's client connections (`serve`, `gateway`, `autoscale`, `up`).
#[derive(clap::Args)]
pub struct ConnectionArgs {
    /// Seconds from a connection's accept to its first complete request head, whatever the
    /// protocol (the h2c preface, SETTINGS and HEADERS too), and for each later HTTP/1.1 head
    /// from the end of the previous exchange (so also an idle keep-alive connection's life).
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds an HTTP/2 connection may go without a new request (then GOAWAY and close).
    #[arg(long, default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Client connections open at once; more wait in the listen backlog until one closes.
    /// Default: half of the open-file limit (`ulimit -n`) less 64.
    #[arg(long)]
    pub max_connections: Option<usize>,
}

impl ConnectionArgs {
    /// The listener's limits, each flag checked, for requests of up to `max_headers` fields.
    pub fn limits(&self, max_headers: usize) -> anyhow::Result<tenantscale_listener::Limits> {
        if self.max_connections == Some(0) {
            return Err(BadInput("--max-connections 0: expected at least 1".into()).into());
        }
        let defaults = tenantscale_listener::Limits::default();
        Ok(tenantscale_listener::Limits {
            header_timeout: time_limit("--header-timeout", self.header_timeout)?,
            idle_timeout: time_limit("--idle-timeout", self.idle_timeout)?,
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_headers,
            ..defaults
        })
    }
}

/// Options of `tenantscale llm-sim`.
#[derive(clap::Args)]
pub struct LlmSimArgs {
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Milliseconds before the first token.
    #[arg(long, default_value_t = 200.0)]
    pub latency_ms: f64,
    /// Tokens per second after the first (0: the whole answer at once).
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_second: f64,
    /// Longest answer, tokens, when a request names no max_tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
}

pub fn catalog(path: &Path) -> anyhow::Result<Catalog> {
    parse_catalog(path, &read_input(path)?)
}

/// The catalog in `text` (read from `path`), its warnings printed; every problem if invalid.
pub fn parse_catalog(path: &Path, text: &str) -> anyhow::Result<Catalog> {
    let loaded = Catalog::parse(text)
        .map_err(|e| BadInput(format!("{}: invalid catalog\n{e}", path.display())))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.catalog)
}

/// Opens `sqlite://PATH` (creating its directory) or connects to `postgres://…`.
/// The store, checked to hold the vectors of the embedder asked for, and that embedder.
fn open_store(args: &StoreArgs) -> anyhow::Result<(Store, Arc<Embedder>)> {
    let embedder = Embedder::from_spec(&args.embedder).map_err(|e| BadInput(e.to_string()))?;
    let store = open_store_at(&args.store)?;
    match store.claim_embedder(embedder.name()) {
        Err(e @ StoreError::EmbedderMismatch { .. }) => Err(BadInput(e.to_string()).into()),
        Err(e) => Err(e).context("cannot read the store's embedder"),
        Ok(()) => Ok((store, Arc::new(embedder))),
    }
}

fn open_store_at(url: &str) -> anyhow::Result<Store> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The URL may hold a password: name only the scheme in errors.
        return Store::connect_postgres(url).context("cannot open the Postgres store (--store)");
    }
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Err(BadInput(format!(
            "--store {url:?}: expected sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE"
        ))
        .into());
    };
    let path = Path::new(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Store::open(path).with_context(|| format!("cannot open the store {}", path.display()))
}

/// A time limit: a duration flag (see [`seconds`]) that is not zero.
pub fn time_limit(flag: &str, value: f64) -> anyhow::Result<Duration> {
    let limit = seconds(flag, value)?;
    if limit.is_zero() {
        return Err(BadInput(format!(
            "{flag} 0: a time limit must be more than 0 seconds"
        ))
        .into());
    }
    Ok(limit)
}

/// A duration flag: finite, 0 to one day.
pub fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(0.0..=86_400.0).contains(&value) {
        return Err(BadInput(format!("{flag} {value}: expected 0 to 86400 seconds")).into());
    }
    Ok(Duration::from_secs_f64(value))
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let (catalog, reloads) = crate::reload::initial(&args.catalog.config)?;
    let start = catalog.clone();
    let auth = match (args.trust_tenant_header, args.secret) {
        (true, _) => TenantAuth::TrustHeader,
        (false, Some(s)) => {
            let mut keys = Keys::new(crate::check_secret(s)?.as_bytes());
            if let Some(next) = args.next_secret {
                let next = crate::check_secret(next)
                    .map_err(|_| BadInput("--next-secret: use at least 16 bytes".into()))?;
                keys = keys.with_next(next.as_bytes());
            }
            if args.accept_legacy_signatures {
                tracing::warn!(
                    "--accept-legacy-signatures: requests without X-Tenantscale-Body-SHA256 are accepted with any body and query; remove it once every gateway is upgraded"
                );
                keys = keys.accepting_legacy();
            }
            TenantAuth::Signed(keys)
        }
        (false, None) => {
            return Err(BadInput(
                "pods trust only the gateway: give --secret (or TENANTSCALE_SECRET), or --trust-tenant-header behind an authenticating ingress"
                    .into(),
            )
            .into());
        }
    };
    let llm = match &args.llm_url {
        None => None,
        Some(url) => {
            let uri: axum::http::Uri = url
                .parse()
                .ok()
                .filter(|u: &axum::http::Uri| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                })
                .ok_or_else(|| {
                    BadInput(format!(
                        "--llm-url {url:?}: expected http[s]://HOST[:PORT]/v1/chat/completions"
                    ))
                })?;
            let llm = Llm::new(LlmConfig {
                url: uri,
                ca: args.llm_ca.clone(),
                model: args.llm_model.clone(),
                api_key: args.llm_api_key.clone(),
                timeout: seconds("--llm-timeout", args.llm_timeout)?,
                retries: 2,
                max_tokens: 256,
            })
            .map_err(|e| BadInput(format!("--llm-url {url:?} (--llm-ca): {e}")))?;
            Some(Arc::new(llm))
        }
    };
    let warming_flag = match &args.redis {
        None => None,
        Some(url) => Some(
            WarmingFlag::new(url, args.redis_ca.file.as_deref(), args.pod_ip.clone())
                .map_err(|e| BadInput(format!("--redis {url:?}: {e}")))?,
        ),
    };
    let (store, embedder) = open_store(&args.store)?;
    tracing::info!(embedder = embedder.name(), "store open");
    let slots = catalog.pool.slots_per_pod;
    let pod = Arc::new(
        Pod::new(
            catalog,
            store,
            &PodConfig {
                slots,
                cache_bytes: args.cache_bytes,
                hnsw_threshold: args.hnsw_threshold,
                embedder,
            },
        )
        .with_reloads(Arc::clone(&reloads)),
    );
    let config = ServeConfig {
        listen: args.listen,
        http: HttpConfig {
            auth,
            max_body: args.max_body,
            max_query_chars: 2000,
            queue_timeout: QUEUE_TIMEOUT,
            llm,
        },
        drain_grace: seconds("--drain-grace", args.drain_grace)?,
        drain_timeout: seconds("--drain-timeout", args.drain_timeout)?,
        connections: args.connections.limits(tenantscale_listener::MAX_HEADERS)?,
        warm_up: seconds("--warm-up", args.warm_up)?,
        preload: args.preload,
        warming_flag,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dropped = runtime.block_on(async {
        let stop = crate::stop_signal();
        // Before `serve` logs its address: once it has, SIGHUP reloads (never kills).
        let watched = Arc::clone(&pod);
        crate::reload::spawn_watch(args.catalog.config.clone(), reloads, move |loaded| {
            let change = watched.reload(&loaded.catalog);
            tracing::info!(
                added = ?change.added,
                removed = ?change.removed,
                changed = ?change.changed,
                "tenants reloaded"
            );
            let restart_only = start.restart_only_changes(&loaded.catalog);
            restart_only.into_iter().map(String::from).collect()
        })?;
        anyhow::Ok(serve(Arc::clone(&pod), config, stop).await?)
    })?;
    // The pod outlives the runtime: its store's Postgres connections block when they close,
    // which a runtime's worker thread (dropping a task's last handle) may not do.
    drop(runtime);
    drop(pod);
    // The drain report for whoever started the pod (the local actuator reads it). Nobody
    // may be reading stdout any more (a restarted parent): a failed write is no error.
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::json!({"event": "drained", "dropped": dropped})
    );
    Ok(())
}

pub fn run_ingest(
    config: &Path,
    tenant: &str,
    store: &StoreArgs,
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    let catalog = catalog(config)?;
    let Some(quota) = catalog
        .tenants
        .iter()
        .find(|t| t.id == tenant)
        .map(|t| t.quota)
    else {
        return Err(BadInput(format!(
            "--tenant: no tenant {tenant:?} in {}",
            config.display()
        ))
        .into());
    };
    let mut docs = Vec::new();
    for p in paths {
        let text = read_input(p)?;
        let id = p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        docs.push(NewDocument {
            id,
            text,
            metadata: serde_json::json!({"path": p.display().to_string()}),
        });
    }
    let (store, embedder) = open_store(store)?;
    let (chunks, written) = match store.ingest(tenant, &docs, &embedder, &quota) {
        Err(StoreError::Quota(q)) => return Err(BadInput(q.to_string()).into()),
        written => written?,
    };
    let usage = written.usage;
    println!(
        "ingested {} documents ({chunks} chunks) for {tenant}; it keeps {} of its {} documents \
         and {} of its {} bytes",
        docs.len(),
        usage.documents,
        quota.documents,
        usage.bytes,
        quota.bytes
    );
    Ok(())
}

pub fn run_llm_sim(args: &LlmSimArgs) -> anyhow::Result<()> {
    let config = LlmSimConfig {
        latency: seconds("--latency-ms", args.latency_ms / 1000.0)?,
        tokens_per_second: if args.tokens_per_second.is_finite() && args.tokens_per_second >= 0.0 {
            args.tokens_per_second
        } else {
            return Err(BadInput("--tokens-per-second: expected 0 or more".into()).into());
        },
        max_tokens: args.max_tokens,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "llm-sim (a test double, not a model) serving");
        axum::serve(listener, llm_sim::router(config))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(())
}

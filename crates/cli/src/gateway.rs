//! `tenantscale gateway`: flags → [`GatewayConfig`].

use crate::serve::{ConnectionArgs, seconds, time_limit};
use crate::{BadInput, CatalogFile};
use std::path::PathBuf;
use tenantscale_core::routing::RouterConfig;
use tenantscale_gateway::{Discovery, GatewayConfig, TenantScope, Timeouts, TlsFiles};

/// The gateway's default wait for a pod's answer: above a pod's slowest answer with its own
/// defaults (its queue wait, 30 s, plus its LLM timeout, 30 s, plus retrieval), so that a
/// tenant's own slow requests end as the pod's 504, not as timeouts that eject the pod.
pub const DEFAULT_RESPONSE_TIMEOUT: f64 = 75.0;
const _: () = assert!(
    DEFAULT_RESPONSE_TIMEOUT
        >= crate::serve::QUEUE_TIMEOUT.as_secs_f64() + crate::serve::DEFAULT_LLM_TIMEOUT + 10.0,
    "the gateway must outwait a pod's slowest default answer"
);
#[derive(clap::Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub catalog: CatalogFile,
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// The pods, HOST:PORT,… (their /ready is polled every second).
    #[arg(
        long,
        alias = "upstreams",
        value_delimiter = ',',
        required_unless_present_any = ["registry", "endpoint_slices"],
        conflicts_with_all = ["registry", "endpoint_slices"]
    )]
    pub pods: Vec<String>,
    /// Follow an autoscaler's pod registry instead of a fixed list, e.g.
    /// http://127.0.0.1:9090 (`tenantscale autoscale --listen`): pods it starts join, pods
    /// it scales down leave at once.
    #[arg(long, conflicts_with = "endpoint_slices")]
    pub registry: Option<String>,
    /// On Kubernetes: follow the EndpointSlices of this Service (NAMESPACE/SERVICE), ready
    /// pods join, terminating ones are drained. Credentials: in-cluster, or KUBECONFIG.
    /// Builds with `--features kubernetes` (the Dockerfile's).
    #[arg(long, value_name = "NAMESPACE/SERVICE")]
    pub endpoint_slices: Option<String>,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub options: GatewayOptions,
}

/// The gateway's settings that `tenantscale up` shares.
#[derive(clap::Args)]
pub struct GatewayOptions {
    /// Serve the operator endpoints (/metrics; /health and /ready too) on this address, e.g.
    /// 0.0.0.0:9000, and answer 404 for them on --listen. Without it they are answered on
    /// --listen to loopback clients only.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Shared secret with the pods (at least 16 bytes): the gateway signs each request's tenant.
    #[arg(long, env = "TENANTSCALE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Take the tenant from the seed's X-Tenant-ID instead of an API key (only behind an
    /// ingress that authenticates).
    #[arg(long)]
    pub trust_tenant_header: bool,
    /// Redis shared by the gateway replicas for rate limits and in-flight counts, e.g.
    /// redis://127.0.0.1:6379 (rediss:// for TLS). Without it each replica enforces its part
    /// alone. (`up` keeps the autoscaler's state there too.)
    #[arg(long, env = "TENANTSCALE_REDIS")]
    pub redis: Option<String>,
    #[command(flatten)]
    pub redis_ca: crate::RedisCa,
    /// Serve clients over TLS with this PEM certificate chain (HTTP/2 by ALPN, else
    /// HTTP/1.1); reloaded, with --tls-key, when the files change.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Gateway replicas: while Redis is unreachable each enforces 1/N of every limit.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Serve only this tenant (a silo tenant's own gateway); others get 403.
    #[arg(long, value_name = "TENANT", conflicts_with = "except_silos")]
    pub only_tenant: Option<String>,
    /// Refuse the catalog's silo tenants with 403 (the shared gateway when silos have their
    /// own deployments).
    #[arg(long)]
    pub except_silos: bool,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Load bound: no pod above this factor × its fair share of the outstanding requests.
    #[arg(long, default_value_t = 1.25)]
    pub balance_factor: f64,
    /// Seconds over which a new (warming) pod's share ramps to full.
    #[arg(long, default_value_t = 300.0)]
    pub slow_start: f64,
    /// Share of a full pod's weight a new pod starts with.
    #[arg(long, default_value_t = 0.1)]
    pub slow_start_floor: f64,
    /// Seconds to open a connection to a pod.
    #[arg(long, default_value_t = 2.0)]
    pub connect_timeout: f64,
    /// Seconds for a pod's response headers (then 504), and the longest a pod may go silent in
    /// the middle of a response body (then the body is cut short). Keep it above the pods'
    /// queue wait plus --llm-timeout: a timeout counts against the pod.
    #[arg(long, default_value_t = DEFAULT_RESPONSE_TIMEOUT)]
    pub response_timeout: f64,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let catalog = crate::serve::catalog(&args.catalog.config)?;
    let secret = match args.options.secret.clone() {
        Some(s) => crate::check_secret(s)?.into_bytes(),
        None => {
            return Err(BadInput(
                "the gateway signs each request for the pods: give --secret (or TENANTSCALE_SECRET), the same as theirs"
                    .into(),
            )
            .into());
        }
    };
    for pod in &args.pods {
        if !tenantscale_gateway::valid_pod_addr(pod) {
            return Err(BadInput(format!("--pods {pod:?}: expected HOST:PORT")).into());
        }
    }
    let mut follow_slices = None;
    let discovery = match (args.registry, args.endpoint_slices) {
        (Some(url), _) if url.starts_with("http://") => Discovery::Registry(url),
        (Some(url), _) => {
            return Err(BadInput(format!("--registry {url:?}: expected http://HOST:PORT")).into());
        }
        (None, Some(target)) => {
            let (tx, rx) = tokio::sync::watch::channel(Default::default());
            follow_slices = Some((target, tx));
            Discovery::Watch(rx)
        }
        (None, None) => Discovery::Static(args.pods),
    };
    if args.threads == Some(0) {
        return Err(BadInput("--threads 0: expected at least 1".into()).into());
    }
    let config = args.options.config(args.listen, discovery, secret)?;
    if let TenantScope::Only(id) = &config.scope
        && !catalog.tenants.iter().any(|t| &t.id == id)
    {
        return Err(BadInput(format!(
            "--only-tenant {id:?}: no such tenant in the catalog"
        ))
        .into());
    }
    // One thread: the current-thread scheduler, without the work-stealing machinery.
    let mut runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(async move {
        if let Some((target, members)) = follow_slices {
            follow_endpoint_slices(&target, members).await?;
        }
        tenantscale_gateway::run(catalog, config, crate::stop_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// Starts watching a Service's EndpointSlices into `members`.
#[cfg(feature = "kubernetes")]
async fn follow_endpoint_slices(
    target: &str,
    members: tokio::sync::watch::Sender<tenantscale_core::registry::Members>,
) -> anyhow::Result<()> {
    let (namespace, service) =
        tenantscale_k8s::namespaced("--endpoint-slices", target).map_err(BadInput)?;
    let client = tenantscale_k8s::cluster::client().await?;
    let slices = tenantscale_k8s::cluster::ServiceEndpoints::new(client, &namespace, &service);
    tracing::info!(%namespace, %service, "following the Service's EndpointSlices");
    tokio::spawn(slices.follow(members));
    Ok(())
}

#[cfg(not(feature = "kubernetes"))]
async fn follow_endpoint_slices(
    target: &str,
    _: tokio::sync::watch::Sender<tenantscale_core::registry::Members>,
) -> anyhow::Result<()> {
    Err(BadInput(format!(
        "--endpoint-slices {target}: this build has no Kubernetes support; build with `cargo build --release -p tenantscale --features kubernetes` (the Dockerfile does)"
    ))
    .into())
}

impl GatewayOptions {
    /// Every option at its default (and environment) value.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            options: GatewayOptions,
        }
        <Defaults as clap::Parser>::parse_from(["tenantscale"]).options
    }

    /// The gateway's config, every flag checked.
    pub fn config(
        self,
        listen: std::net::SocketAddr,
        discovery: Discovery,
        secret: Vec<u8>,
    ) -> anyhow::Result<GatewayConfig> {
        let args = self;
        if !(1.0..=10.0).contains(&args.balance_factor) {
            return Err(BadInput(format!(
                "--balance-factor {}: expected 1 to 10",
                args.balance_factor
            ))
            .into());
        }
        let slow_start = seconds("--slow-start", args.slow_start)?;
        if !(args.slow_start_floor > 0.0 && args.slow_start_floor <= 1.0) {
            return Err(BadInput(format!(
                "--slow-start-floor {}: expected more than 0 and at most 1",
                args.slow_start_floor
            ))
            .into());
        }
        if args.replicas == 0 {
            return Err(BadInput("--replicas 0: expected at least 1".into()).into());
        }
        if let Some(admin) = args.admin_listen
            && admin == listen
            && admin.port() != 0
        {
            return Err(BadInput(format!(
                "--admin-listen {admin}: the same address as --listen; give the operator endpoints their own port"
            ))
            .into());
        }
        let redis = match &args.redis {
            Some(url) => Some(
                tenantscale_tls::redis_client(url, args.redis_ca.file.as_deref())
                    .map_err(|e| BadInput(format!("--redis {url:?} (--redis-ca): {e}")))?,
            ),
            None => None,
        };
        Ok(GatewayConfig {
            listen,
            admin_listen: args.admin_listen,
            tls: args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
            discovery,
            secret,
            trust_tenant_header: args.trust_tenant_header,
            max_body: args.max_body,
            timeouts: Timeouts {
                connect: time_limit("--connect-timeout", args.connect_timeout)?,
                response: time_limit("--response-timeout", args.response_timeout)?,
                ..Timeouts::default()
            },
            connections: args
                .connections
                .limits(tenantscale_gateway::MAX_CLIENT_HEADERS)?,
            router: RouterConfig {
                c: args.balance_factor,
                warmup_seconds: slow_start.as_secs_f64(),
                min_weight: args.slow_start_floor,
            },
            share_retry_after: 1.0,
            redis,
            replicas: args.replicas,
            scope: match (args.only_tenant, args.except_silos) {
                (Some(id), _) => TenantScope::Only(id),
                (None, true) => TenantScope::ExceptSilos,
                (None, false) => TenantScope::All,
            },
        })
    }
}

//! `tenantscale`: tenant-aware autoscaling for shared RAG pod pools.
//!
//! This binary only wires: argument parsing, file reading, output. Decisions live in
//! `tenantscale-core`.

mod autoscale;
mod check;
mod dashboard;
mod demo;
mod gateway;
mod loadgen;
mod reload;
mod render;
mod replay;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for input that failed validation (bad file, bad field).
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "tenantscale",
    version,
    about = "Tenant-aware autoscaling, fairness and routing for a shared pool of RAG pods",
    long_about = "tenantscale sizes one shared pool of RAG pods for many tenants: it scales on \
per-tenant demand (or exactly as Kubernetes' HPA does), caps what any one tenant may make the \
pool grow to, and lets you replay a policy against a timeline before deploying it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a tenant catalog and print the quota table it implies.
    ///
    /// Every problem is reported with its field path and line; exit status 2 if any.
    /// Warnings (e.g. too little headroom) go to stderr and do not fail the check.
    Check {
        #[command(flatten)]
        catalog: CatalogFile,
        /// Print the quota table as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replay a traffic scenario through the real decision code and compare policies.
    ///
    /// Each policy sees the same arrivals (same --seed). Prints a table per policy (latency
    /// percentiles per tenant class, 429s, SLA-breach minutes, reaction to the spike,
    /// replicas, pod-hours and cost), or one JSON object with --json.
    Simulate(simulate::Args),
    /// Run a RAG pod: per-tenant fair queues, retrieval, Prometheus metrics, drain on SIGTERM.
    ///
    /// Tenants come from the gateway: requests carry X-Tenantscale-Tenant, -Timestamp,
    /// -Body-SHA256 and -Signature (HMAC-SHA256 under --secret of the tenant, method, target,
    /// time and body digest); anything else is 401. Logs its address on stderr
    /// ("serving listen=…").
    Serve(serve::ServeArgs),
    /// Run the tenant-aware gateway in front of the pods.
    ///
    /// Clients send `Authorization: Bearer <API key>` (keys are stored as SHA-256 in the
    /// catalog). Each request is admitted (tier rate limit, the tenant's share of the live
    /// pool; 429 with Retry-After otherwise), routed to its tenant's pods (bounded loads,
    /// slow start for warming pods, none to draining ones), signed for the pod and proxied.
    /// GET /health and /ready are the gateway's own; GET /metrics too, on --admin-listen (or,
    /// without it, to loopback clients only). Logs "gateway serving listen=…".
    Gateway(gateway::GatewayArgs),
    /// Run the autoscaler over a local pool of `serve` child processes.
    ///
    /// Every --interval it scrapes each pod's /metrics, decides with the catalog's policy
    /// (tenant-aware, or Kubernetes' HPA exactly), starts pods or drains the least-loaded
    /// ones, and replaces pods that exit. Serves /status (JSON), /metrics and the pod
    /// registry /v1/pods for `gateway --registry`. Its state (windows, pods) survives a
    /// restart in DATA_DIR/autoscaler-state.json.
    Autoscale(autoscale::AutoscaleArgs),
    /// Send a scenario's traffic (the simulator's format) to a gateway, open loop.
    ///
    /// Per tenant, Poisson arrivals at its class's rate over the scenario's timeline
    /// (--duration replays it faster). Prints progress, then a per-class summary (429s,
    /// failures, p50/p99, p99 before and during the spike); --out writes every request and
    /// the summary as JSON. Exit status 1 if any request failed (5xx, connection, timeout).
    Loadgen(loadgen::LoadgenArgs),
    /// Replay the seed's 2:47 AM incident live: 52 tenants, 8 media tenants spike 50×.
    ///
    /// Needs nothing else: writes the catalog and small corpora, starts llm-sim (200 ms)
    /// and the whole stack (gateway, autoscaler, pods as children), drives the media-spike
    /// scenario compressed to --duration, waits for the pool to shrink back, drains it,
    /// prints a summary and writes REPORT/index.html (charts) and REPORT/summary.json.
    /// Exit status 1 if any request failed or any query was dropped on drain.
    Demo(demo::DemoArgs),
    /// Run the whole stack locally: gateway + autoscaler in one process, pods as children.
    ///
    /// Clients use the gateway at --listen; the autoscaler's /status is at --api. Ctrl-C
    /// drains every pod (no query dropped) and exits.
    Up(autoscale::UpArgs),
    /// Serve an OpenAI-compatible chat API that only waits: a TEST DOUBLE for a paid LLM.
    ///
    /// It answers with words lifted from the prompt after --latency-ms plus one token per
    /// 1/--tokens-per-second, so pods with generation can be load-tested without a model.
    LlmSim(serve::LlmSimArgs),
    /// Load text or Markdown files into the store for one tenant.
    Ingest {
        #[command(flatten)]
        catalog: CatalogFile,
        /// The tenant (catalog id) that owns the documents.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Files to load; each becomes one document, its id the file name (re-ingesting replaces it).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write Kubernetes manifests for the catalog, one resource per file.
    ///
    /// The shared pool (pods, gateway, PodDisruptionBudget, the catalog as a ConfigMap), its
    /// autoscaler (ours with RBAC, or --hpa native: the stock HPA and prometheus-adapter
    /// rules), a namespace with ResourceQuota, LimitRange and NetworkPolicy per silo tenant,
    /// and monitoring. Deterministic: the same catalog gives the same bytes.
    Render(render::RenderArgs),
    /// Kubernetes HorizontalPodAutoscaler tools.
    Hpa {
        #[command(subcommand)]
        command: HpaCommand,
    },
}

#[derive(Subcommand)]
enum HpaCommand {
    /// Replay an HPA spec against a timeline and print each decision and why.
    ///
    /// The file (YAML or JSON) holds an autoscaling/v2 spec, controller settings, prior
    /// controller state and a list of steps with metric observations or raw recommendations
    /// (format: specs/hpa-replay.md). Output: one JSON object per step (JSON lines) with
    /// desiredReplicas, recommendation, conditions, currentMetrics and the controller's stored
    /// recommendations and scale events. Exit status 2 on bad input.
    Replay {
        /// The replay file.
        file: PathBuf,
        /// Print a human-readable table instead of JSON lines.
        #[arg(long)]
        explain: bool,
    },
}

/// The catalog option shared by the commands that read one.
#[derive(clap::Args)]
struct CatalogFile {
    /// The catalog (tenantscale.yaml), YAML or JSON.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "TENANTSCALE_CONFIG"
    )]
    config: PathBuf,
}

/// `--redis-ca`, beside a command's `--redis`.
#[derive(clap::Args)]
struct RedisCa {
    /// PEM CA certificates a rediss:// --redis is verified against, instead of the system's
    /// roots.
    #[arg(
        long = "redis-ca",
        env = "TENANTSCALE_REDIS_CA",
        value_name = "FILE",
        requires = "redis"
    )]
    file: Option<PathBuf>,
}

/// The store and embedder options shared by `serve` and `ingest`.
#[derive(clap::Args)]
struct StoreArgs {
    /// sqlite://PATH, or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]
    /// (require or verify-full: TLS, the server's certificate verified against the system's
    /// roots or the PEM file in &sslrootcert=FILE; without sslmode, plain text)
    #[arg(
        long,
        env = "TENANTSCALE_STORE",
        hide_env_values = true,
        default_value = "sqlite://./tenantscale-data/store.db"
    )]
    store: String,
    /// `hashed` (built in: lexical, no files) or `minilm:DIR` (all-MiniLM-L6-v2 from local
    /// files, in builds with `--features minilm`). A store keeps the embedder it began with.
    #[arg(long, env = "TENANTSCALE_EMBEDDER", default_value = "hashed")]
    embedder: String,
}

/// An error the user caused (bad file contents): printed as is, exit status 2.
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TENANTSCALE_LOG")
            .unwrap_or_else(|_| "info".into())
    };
    // The demo's live view owns the terminal: its logs go to a file.
    let log_file = match &cli.command {
        Command::Demo(args) => demo::dashboard_log(args),
        _ => None,
    };
    let opened = log_file.as_ref().map(|path| {
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(path))
    });
    match opened {
        Some(Ok(file)) => tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter(filter())
            .init(),
        Some(Err(e)) => {
            eprintln!("error: cannot write the demo's log file: {e}");
            return ExitCode::from(2);
        }
        None => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter())
            .init(),
    }
    let result = match cli.command {
        Command::Check { catalog, json } => check::run(&catalog.config, json),
        Command::Hpa {
            command: HpaCommand::Replay { file, explain },
        } => replay::run(&file, explain),
        Command::Serve(args) => serve::run_serve(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Autoscale(args) => autoscale::run_autoscale(args),
        Command::Up(args) => autoscale::run_up(args),
        Command::Loadgen(args) => loadgen::run_command(args),
        Command::Demo(args) => demo::run(args),
        Command::Render(args) => render::run(args),
        Command::LlmSim(args) => serve::run_llm_sim(&args),
        Command::Ingest {
            catalog,
            tenant,
            store,
            paths,
        } => serve::run_ingest(&catalog.config, &tenant, &store, &paths),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(bad) = e.downcast_ref::<BadInput>() {
                eprintln!("{bad}");
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// A `--secret` shared by the gateway and the pods: at least 16 bytes.
fn check_secret(secret: String) -> anyhow::Result<String> {
    if secret.len() < 16 {
        return Err(BadInput("--secret: use at least 16 bytes".into()).into());
    }
    Ok(secret)
}

/// Completes on SIGTERM or Ctrl-C: what stops `serve` (it drains) and `gateway`. The handlers
/// are installed by this call, not at the future's first poll: a signal that comes before the
/// server first polls it (just after the pod printed its address) must still stop it cleanly,
/// not kill it. Call it inside the runtime.
fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// Reads a file, refusing ones larger than the parser would accept.
fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > tenantscale_core::yaml::MAX_DOCUMENT_BYTES as u64 {
        return Err(BadInput(format!(
            "{}: {} bytes; the limit is {}",
            path.display(),
            meta.len(),
            tenantscale_core::yaml::MAX_DOCUMENT_BYTES
        ))
        .into());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

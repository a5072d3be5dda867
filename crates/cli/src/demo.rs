//! `tenantscale demo`: the seed's 2:47 AM incident replayed live on this machine.
//!
//! It writes the seed's 52-tenant catalog (with the autoscaler's windows shortened as much as
//! the scenario's clock is sped up), gives every tenant a small corpus, starts `llm-sim`
//! (200 ms) and the whole stack (`up`: gateway + autoscaler + pods as children), drives the
//! `media-spike` scenario through the gateway with `loadgen`, waits for the pool to shrink
//! back, drains it, and reports: a summary on stdout, `summary.json` and `index.html`
//! (charts by the simulator's report code) in the report folder.

use crate::autoscale::{PoolArgs, Stopped, prepare, run_stack};
use crate::gateway::GatewayOptions;
use crate::loadgen::{self, Auth, ClassSummary, Plan, Record, Records};
use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenantscale_autoscaler::control::Status;
use tenantscale_core::catalog::Catalog;
use tenantscale_gateway::Discovery;
use tenantscale_sim::scenario::Scenario;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Wall-clock length of the replayed scenario (its 4 h in this time).
    #[arg(long, default_value = "3m", value_parser = loadgen::parse_duration)]
    pub duration: f64,
    /// Folder for index.html and summary.json.
    #[arg(long, default_value = "demo-report")]
    pub report: PathBuf,
    /// Multiply the scenario's rates (lower it on a slow machine).
    #[arg(long, default_value_t = 1.0)]
    pub rate_scale: f64,
    /// Where the demo's catalog, store, pod logs and state go (default: a fresh folder
    /// under the system's temporary directory, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also run the scenario through the simulator and print both side by side.
    #[arg(long)]
    pub compare_sim: bool,
    /// Progress lines instead of the live view, even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// With the live view on (a terminal of at least 60×20, no --plain), the stack's logs go to
/// this file instead of the screen the view owns.
pub fn dashboard_log(args: &DemoArgs) -> Option<PathBuf> {
    let roomy = ratatui::crossterm::terminal::size().is_ok_and(|(w, h)| w >= 60 && h >= 20);
    (std::io::IsTerminal::is_terminal(&std::io::stderr()) && roomy && !args.plain)
        .then(|| args.report.join("demo.log"))
}

/// The scenario the demo plays (its catalog is replaced by the demo's own).
const SCENARIO: &str = include_str!("../../../examples/scenarios/media-spike.yaml");
/// Documents per tenant.
const DOCS_PER_TENANT: usize = 6;
/// After the load: how long to wait for the pool to return to minReplicas.
const COOL_DOWN_LIMIT: Duration = Duration::from_secs(120);

/// The seed's GCC platform (as examples/gcc-platform.yaml), with the autoscaler's windows
/// shortened by `speed` (the scenario's clock runs that much faster than the wall's).
fn catalog_yaml(speed: f64) -> String {
    // Each window shrinks with the clock, down to what one-second scrapes can still measure.
    let window = |seconds: f64, floor: f64| (seconds / speed).clamp(floor, seconds).round();
    let mut y = String::from(
        "# Written by `tenantscale demo`: the seed's 52 tenants; demo API keys are\n\
         # demo-key-<id>. Windows are shortened as the scenario's clock is sped up.\n\
         cluster: {cores: 40, memory: 80Gi}\n\
         tiers:\n\
         \x20 gold:   {weight: 3, share: 0.27, maxShare: 0.30, rateLimit: {rps: 200, burst: 400}, sloMs: 500}\n\
         \x20 silver: {weight: 2, share: 0.45, maxShare: 0.20, rateLimit: {rps: 50, burst: 100}, sloMs: 1000}\n\
         \x20 bronze: {weight: 1, share: 0.18, maxShare: 0.10, rateLimit: {rps: 10, burst: 20}, sloMs: 2000}\n\
         tenants:\n",
    );
    let tenants = (1..=8)
        .map(|i| (format!("media-{i}"), "gold"))
        .chain((1..=22).map(|i| {
            (
                format!("finance-{i}"),
                if i <= 2 { "gold" } else { "silver" },
            )
        }))
        .chain((1..=22).map(|i| {
            (
                format!("retail-{i}"),
                if i <= 2 { "silver" } else { "bronze" },
            )
        }));
    for (id, tier) in tenants {
        let key = hex::encode(Sha256::digest(format!("demo-key-{id}")));
        let _ = writeln!(y, "  - {{id: {id}, tier: {tier}, apiKeySha256: {key}}}");
    }
    let _ = write!(
        y,
        "pool:\n  minReplicas: 3\n  maxReplicas: 20\n  slotsPerPod: 8\n  queuePerTenant: 100\n  policy: tenant-aware\n  tenantAware:\n    targetUtilization: 0.7\n    stableWindowSeconds: {stable}\n    panicWindowSeconds: {panic}\n    panicThreshold: 2.0\n    behavior:\n      scaleUp:\n        stabilizationWindowSeconds: 0\n        selectPolicy: Max\n        policies: [{{type: Percent, value: 1000, periodSeconds: {up}}}]\n      scaleDown:\n        stabilizationWindowSeconds: {down}\n        selectPolicy: Max\n        policies: [{{type: Percent, value: 100, periodSeconds: {up}}}]\ncost: {{currency: INR, podHour: 150}}\n",
        stable = window(60.0, 10.0),
        panic = window(6.0, 1.0),
        up = window(15.0, 1.0),
        down = window(300.0, 10.0),
    );
    y
}

/// Small documents in each tenant's words, so retrieval has something to find.
fn corpus(tenant: &str) -> Vec<tenantscale_service::store::NewDocument> {
    let topics = [
        (
            "revenue",
            "Revenue this quarter grew in the north region; the highest growth came from subscriptions.",
        ),
        (
            "refunds",
            "Refunds are approved within five days; a refund over the limit needs a manager.",
        ),
        (
            "vendors",
            "A new vendor is approved by procurement after a security review and a contract check.",
        ),
        (
            "incidents",
            "The incident escalation path is on-call engineer, then team lead, then the duty manager.",
        ),
        (
            "retention",
            "The data retention review happens every March; logs are kept for ninety days.",
        ),
        (
            "growth",
            "Regional growth was highest in the west; retail footfall rose after the holiday campaign.",
        ),
    ];
    topics
        .iter()
        .take(DOCS_PER_TENANT)
        .map(|(id, text)| tenantscale_service::store::NewDocument {
            id: (*id).to_string(),
            text: format!("{tenant} handbook, {id}. {text}"),
            metadata: serde_json::Value::Null,
        })
        .collect()
}

/// One second of the run, as the autoscaler's status showed it.
#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    replicas: usize,
    queue_depth_per_tenant: f64,
    /// Per class: queued at pods.
    queued: Vec<f64>,
    /// Per class: the largest share of the pool's slots one of its tenants was served.
    share: Vec<f64>,
}

/// An autoscaler decision, on the run's clock.
#[derive(Debug, Clone)]
struct SeenDecision {
    t: f64,
    current: i32,
    desired: i32,
}

/// The summary.json the issue specifies (times in seconds since the run started).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    duration_s: f64,
    min_replicas: i32,
    spike_start_s: Option<f64>,
    spike_end_s: Option<f64>,
    first_scale_up_s: Option<f64>,
    relief_s: Option<f64>,
    peak_replicas: usize,
    final_replicas: usize,
    dropped_on_drain: u64,
    requests: u64,
    failed: u64,
    classes: Vec<ClassResult>,
    /// Once a second: pods, the pool's queue and each class's queued requests.
    timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TimelinePoint {
    t: f64,
    replicas: usize,
    queue_depth_per_tenant: f64,
    queued: Vec<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClassResult {
    #[serde(flatten)]
    load: ClassSummary,
    /// The largest share of the pool's slots any one tenant of the class was served.
    max_share: f64,
    /// The catalog's maxShare of the class's tenants.
    allowed_share: f64,
}

fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let scenario_speed = 4.0 * 3600.0 / args.duration;
    let (data_dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tenantscale-demo-{}", std::process::id())),
            true,
        ),
    };
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot clear {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let catalog_path = data_dir.join("catalog.yaml");
    std::fs::write(&catalog_path, catalog_yaml(scenario_speed))?;
    let catalog = crate::serve::catalog(&catalog_path)?;
    let scenario = Scenario::parse(SCENARIO, "media-spike.yaml", &data_dir, Some(&catalog_path))
        .map_err(|e| anyhow::anyhow!("the demo's scenario: {e}"))?;

    eprintln!("demo: writing {} tenants' documents", catalog.tenants.len());
    let store_path = data_dir.join("store.db");
    {
        let store = tenantscale_service::store::Store::open(&store_path)?;
        let embedder = tenantscale_service::embedder::Embedder::Hashed;
        store.claim_embedder(embedder.name())?;
        for t in &catalog.tenants {
            store.ingest(&t.id, &corpus(&t.id), &embedder, &t.quota)?;
        }
    }

    let (gateway_addr, api_addr, llm_addr) = (free_port()?, free_port()?, free_port()?);
    let secret = crate::autoscale::secret_or_random(None)?;
    let prepared = prepare(
        &catalog_path,
        PoolArgs {
            data_dir: data_dir.clone(),
            store: Some(format!("sqlite://{}", store_path.display())),
            embedder: "hashed".into(),
            llm_url: Some(format!("http://{llm_addr}/v1/chat/completions")),
            llm_ca: None,
            warm_up: (300.0 / scenario_speed).clamp(5.0, 300.0),
            drain_timeout: 30.0,
            interval: 1.0,
            prometheus: None,
            prometheus_ca: None,
            prometheus_window: 30.0,
            state_key: crate::autoscale::DEFAULT_STATE_KEY.into(),
            pod_args: vec!["--preload=0".into()],
        },
        None,
        &secret,
    )?;
    let options = GatewayOptions::defaults();
    let gateway = options.config(
        gateway_addr,
        Discovery::Watch(prepared.members.clone()),
        secret.into_bytes(),
    )?;
    let plan = Plan {
        scenario: Arc::new(scenario),
        wall_seconds: args.duration,
        rate_scale: args.rate_scale,
        target: format!("http://{gateway_addr}/v1/query").parse()?,
        auth: Auth::KeyPrefix("demo-key-".into()),
        generate: true,
        timeout: Duration::from_secs(30),
        seed: 1,
    };
    let spike = loadgen::spike_window(&plan);
    let min_replicas = catalog.pool.min_replicas;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let status = Arc::new(Mutex::new(Status::default()));
    let records: Records = Arc::default();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let decisions: Arc<Mutex<Vec<SeenDecision>>> = Arc::default();
    let stopped: Stopped = runtime.block_on(async {
        let llm = tokio::net::TcpListener::bind(llm_addr).await?;
        tokio::spawn(async move {
            let _ = axum::serve(
                llm,
                tenantscale_service::llm_sim::router(tenantscale_service::llm_sim::LlmSimConfig {
                    latency: Duration::from_millis(200),
                    tokens_per_second: 0.0,
                    max_tokens: 32,
                }),
            )
            .await;
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let stack = tokio::spawn(run_stack(
            prepared,
            gateway,
            api_addr,
            Arc::clone(&status),
            async move {
                let _ = done_rx.await;
            },
        ));
        // Wait for the pool's first pods to be ready before the clock starts.
        wait_ready(&status, min_replicas as usize).await;
        let started = Instant::now();
        let load = tokio::spawn(loadgen::run(plan.clone(), Arc::clone(&records)));
        let phases = async {
            load.await.context("load task")?;
            tracing::info!(
                "demo: load finished; waiting for the pool to return to {min_replicas} pods"
            );
            let cool_down = async {
                loop {
                    let s = status.lock().expect("status lock").clone();
                    if s.replicas <= min_replicas as usize && s.pods.len() <= min_replicas as usize
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            if tokio::time::timeout(COOL_DOWN_LIMIT, cool_down)
                .await
                .is_err()
            {
                tracing::warn!(
                    "demo: the pool did not shrink within {} s",
                    COOL_DOWN_LIMIT.as_secs()
                );
            }
            anyhow::Ok(())
        };
        // The watcher samples the status every second through both phases; it never ends.
        let screen = dashboard_log(&args).and_then(|log| {
            crate::dashboard::Screen::enter()
                .inspect_err(|e| eprintln!("demo: no live view ({e}); progress lines instead"))
                .ok()
                .map(|screen| (screen, log))
        });
        let watching = watch(
            &catalog, &plan, started, &status, &records, &samples, &decisions, screen,
        );
        tokio::select! {
            r = phases => r?,
            () = watching => {}
            () = crate::stop_signal() => anyhow::bail!("interrupted"),
        }
        let _ = done_tx.send(());
        stack.await.context("stack task")?
    })?;
    let records = records.lock().expect("records lock").clone();
    let samples = samples.lock().expect("samples lock").clone();
    let decisions = decisions.lock().expect("decisions lock").clone();
    let summary = summarize(
        &catalog,
        &plan,
        spike,
        &records,
        &samples,
        &decisions,
        stopped.dropped_on_drain,
        args.duration,
    );
    std::fs::create_dir_all(&args.report)
        .with_context(|| format!("cannot create {}", args.report.display()))?;
    loadgen::write_json(
        &args.report.join("summary.json"),
        &serde_json::to_value(&summary)?,
    )?;
    let mut csv = String::from("t,tenant,class,status,latency_ms,queued_ms,generation_ms\n");
    for r in &records {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{},{:.1},{:.1},{:.1}",
            r.t,
            catalog.tenants[usize::from(r.tenant)].id,
            plan.scenario.classes[usize::from(r.class)].name,
            r.status,
            r.latency_ms,
            r.queued_ms,
            r.generation_ms
        );
    }
    std::fs::write(args.report.join("requests.csv"), csv)?;
    std::fs::write(
        args.report.join("index.html"),
        html(&catalog, &plan, &summary, &samples, &records),
    )?;
    print_summary(&summary);
    println!(
        "report: {}  summary: {}",
        args.report.join("index.html").display(),
        args.report.join("summary.json").display()
    );
    if args.compare_sim {
        compare_sim(&plan, &summary, &samples);
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    if summary.failed > 0 || summary.dropped_on_drain > 0 {
        anyhow::bail!(
            "{} request(s) failed and {} were dropped on drain",
            summary.failed,
            summary.dropped_on_drain
        );
    }
    Ok(())
}

async fn wait_ready(status: &Mutex<Status>, pods: usize) {
    loop {
        let ready = status
            .lock()
            .expect("status lock")
            .pods
            .iter()
            .filter(|p| p.state == "ready" || p.state == "warming")
            .count();
        if ready >= pods {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every second: a sample of the autoscaler's status, new decisions, and the live view on
/// `screen` (with the log file it names) or a progress line every 5 s.
#[allow(clippy::too_many_arguments)]
async fn watch(
    catalog: &Catalog,
    plan: &Plan,
    started: Instant,
    status: &Mutex<Status>,
    records: &Mutex<Vec<Record>>,
    samples: &Mutex<Vec<Sample>>,
    decisions: &Mutex<Vec<SeenDecision>>,
    mut screen: Option<(crate::dashboard::Screen, PathBuf)>,
) {
    let class_of: std::collections::HashMap<&str, usize> = plan
        .scenario
        .traffic
        .iter()
        .map(|t| (catalog.tenants[t.tenant].id.as_str(), t.class))
        .collect();
    let classes = plan.scenario.classes.len();
    let slots = f64::from(catalog.pool.slots_per_pod);
    let spike = loadgen::spike_window(plan);
    let unix_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - started.elapsed().as_secs_f64();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        ticks.tick().await;
        let t = started.elapsed().as_secs_f64();
        let s = status.lock().expect("status lock").clone();
        let mut queued = vec![0.0; classes];
        let mut share = vec![0.0f64; classes];
        let capacity = (s.replicas.max(1) as f64) * slots;
        for tenant in &s.tenants {
            if let Some(&c) = class_of.get(tenant.id.as_str()) {
                queued[c] += tenant.queued;
                share[c] = share[c].max(tenant.in_flight / capacity);
            }
        }
        let mut samples = samples.lock().expect("samples lock");
        samples.push(Sample {
            t,
            replicas: s.replicas,
            queue_depth_per_tenant: s.queue_depth_per_tenant,
            queued,
            share,
        });
        {
            let mut d = decisions.lock().expect("decisions lock");
            let last = d.last().map_or(f64::NEG_INFINITY, |x| x.t);
            for dec in s.decisions.iter().filter(|x| x.at - unix_start > last) {
                d.push(SeenDecision {
                    t: dec.at - unix_start,
                    current: dec.current,
                    desired: dec.desired,
                });
            }
        }
        n += 1;
        let records = records.lock().expect("records lock");
        if let Some((screen, log)) = &mut screen {
            let view = crate::dashboard::View {
                scenario: plan.scenario.name.clone(),
                t,
                total: plan.wall_seconds,
                spike,
                replicas: s.replicas,
                desired: s.desired,
                min_replicas: s.min_replicas,
                max_replicas: s.max_replicas,
                replica_history: samples.iter().map(|x| x.replicas as u64).collect(),
                classes: class_rows(catalog, plan, &records, &samples, t),
                decision: s.decisions.back().map(|d| crate::dashboard::LastDecision {
                    t: d.at - unix_start,
                    current: d.current,
                    desired: d.desired,
                    reason: d.reason.clone(),
                }),
                log: log.display().to_string(),
            };
            screen.show(&view);
        } else if n.is_multiple_of(5) {
            let reason = s.decisions.back().map_or("", |d| d.reason.as_str());
            eprintln!(
                "{}  pods {:>2} (desired {:>2})  queue/tenant {:>5.1}  {}",
                loadgen::progress_line(t, plan.wall_seconds, &records),
                s.replicas,
                s.desired,
                s.queue_depth_per_tenant,
                reason.chars().take(90).collect::<String>()
            );
        }
    }
}

/// The live view's rows: per class, counts so far, queued now, p99 of the last 10 s.
fn class_rows(
    catalog: &Catalog,
    plan: &Plan,
    records: &[Record],
    samples: &[Sample],
    now: f64,
) -> Vec<crate::dashboard::ClassRow> {
    plan.scenario
        .classes
        .iter()
        .enumerate()
        .map(|(c, class)| {
            let of_class = || records.iter().filter(move |r| usize::from(r.class) == c);
            let mut recent: Vec<f64> = of_class()
                .filter(|r| r.status == 200 && r.t >= now - 10.0)
                .map(|r| f64::from(r.latency_ms))
                .collect();
            crate::dashboard::ClassRow {
                name: class.name.clone(),
                spiking: class.spiking,
                requests: of_class().count() as u64,
                rejected_429: of_class().filter(|r| r.status == 429).count() as u64,
                failed: of_class().filter(|r| r.failed()).count() as u64,
                queued: samples.last().map_or(0.0, |x| x.queued[c]),
                recent_p99_ms: loadgen::quantile(&mut recent, 0.99),
                max_share: samples.iter().map(|x| x.share[c]).fold(0.0, f64::max),
                allowed_share: plan
                    .scenario
                    .traffic
                    .iter()
                    .filter(|t| t.class == c)
                    .map(|t| catalog.tenants[t.tenant].max_share)
                    .fold(0.0, f64::max),
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    catalog: &Catalog,
    plan: &Plan,
    spike: Option<(f64, f64)>,
    records: &[Record],
    samples: &[Sample],
    decisions: &[SeenDecision],
    dropped_on_drain: u64,
    duration: f64,
) -> Summary {
    let onset = spike.map(|s| s.0);
    let first_scale_up_s = onset.and_then(|o| {
        decisions
            .iter()
            .find(|d| d.t >= o && d.desired > d.current)
            .map(|d| round1(d.t))
    });
    let relief_s = first_scale_up_s.and_then(|up| relief(samples, up));
    let classes = loadgen::summarize(plan, records, spike)
        .into_iter()
        .enumerate()
        .map(|(c, load)| {
            let allowed = plan
                .scenario
                .traffic
                .iter()
                .filter(|t| t.class == c)
                .map(|t| catalog.tenants[t.tenant].max_share)
                .fold(0.0, f64::max);
            ClassResult {
                max_share: round3(samples.iter().map(|s| s.share[c]).fold(0.0, f64::max)),
                allowed_share: allowed,
                load,
            }
        })
        .collect::<Vec<_>>();
    Summary {
        duration_s: duration,
        min_replicas: catalog.pool.min_replicas,
        spike_start_s: spike.map(|s| round1(s.0)),
        spike_end_s: spike.map(|s| round1(s.1)),
        first_scale_up_s,
        relief_s,
        peak_replicas: samples.iter().map(|s| s.replicas).max().unwrap_or(0),
        final_replicas: samples.last().map_or(0, |s| s.replicas),
        dropped_on_drain,
        requests: records.len() as u64,
        failed: records.iter().filter(|r| r.failed()).count() as u64,
        classes,
        timeline: samples
            .iter()
            .map(|s| TimelinePoint {
                t: round1(s.t),
                replicas: s.replicas,
                queue_depth_per_tenant: round3(s.queue_depth_per_tenant),
                queued: s.queued.clone(),
            })
            .collect(),
    }
}

/// Relief: the first sample at or after the first scale-up from which the pool's queue stays
/// under one queued query per active tenant for 10 s (`None` if it never does, or the run
/// ends first).
fn relief(samples: &[Sample], first_up: f64) -> Option<f64> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t >= first_up).collect();
    let last = after.last()?.t;
    (0..after.len())
        .find(|&i| {
            let from = after[i].t;
            last >= from + 10.0
                && after[i..]
                    .iter()
                    .take_while(|s| s.t < from + 10.0)
                    .all(|s| s.queue_depth_per_tenant < 1.0)
        })
        .map(|i| round1(after[i].t))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_summary(s: &Summary) {
    let opt = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    println!(
        "\nspike {}–{} s · first scale-up {} s · relief {} s · pods {} → peak {} → {} · dropped on drain {} · failed {}/{}",
        opt(s.spike_start_s),
        opt(s.spike_end_s),
        opt(s.first_scale_up_s),
        opt(s.relief_s),
        s.min_replicas,
        s.peak_replicas,
        s.final_replicas,
        s.dropped_on_drain,
        s.failed,
        s.requests
    );
    let mut rows = vec![
        [
            "class",
            "requests",
            "429",
            "failed",
            "p50 ms",
            "p99 ms",
            "p99 before",
            "p99 in spike",
            "max share",
            "allowed",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for c in &s.classes {
        rows.push(vec![
            format!("{}{}", c.load.name, if c.load.spiking { "*" } else { "" }),
            c.load.requests.to_string(),
            c.load.rejected_429.to_string(),
            c.load.failed.to_string(),
            opt(c.load.p50_ms),
            opt(c.load.p99_ms),
            opt(c.load.pre_spike_p99_ms),
            opt(c.load.spike_p99_ms),
            format!("{:.1} %", c.max_share * 100.0),
            format!("{:.0} %", c.allowed_share * 100.0),
        ]);
    }
    print!("{}", tenantscale_core::text::table(&rows));
}

/// The report page: the simulator's report, filled with the live run.
fn html(
    catalog: &Catalog,
    plan: &Plan,
    s: &Summary,
    samples: &[Sample],
    records: &[Record],
) -> String {
    use tenantscale_sim::report::{ClassReport, PolicyReport, Report};
    use tenantscale_sim::stats::Series;
    const BIN: f64 = 5.0;
    let end = samples.last().map_or(0.0, |x| x.t);
    let bins = (end / BIN).ceil() as usize + 1;
    let classes = plan.scenario.classes.len();
    let tenants_in = |c: usize| {
        plan.scenario
            .traffic
            .iter()
            .filter(|t| t.class == c)
            .count()
            .max(1) as f64
    };
    let mut replicas = vec![0.0; bins];
    let mut queue = vec![vec![0.0; bins]; classes];
    let mut counts = vec![0usize; bins];
    for x in samples {
        let b = (x.t / BIN) as usize;
        replicas[b] += x.replicas as f64;
        counts[b] += 1;
        for (c, q) in queue.iter_mut().enumerate() {
            q[b] += x.queued[c] / tenants_in(c);
        }
    }
    for b in 0..bins {
        let n = counts[b].max(1) as f64;
        replicas[b] /= n;
        for q in &mut queue {
            q[b] /= n;
        }
    }
    let p99 = (0..classes)
        .map(|c| {
            (0..bins)
                .map(|b| {
                    let mut v: Vec<f64> = records
                        .iter()
                        .filter(|r| {
                            usize::from(r.class) == c
                                && r.status == 200
                                && ((r.t / BIN) as usize) == b
                        })
                        .map(|r| f64::from(r.latency_ms))
                        .collect();
                    loadgen::quantile(&mut v, 0.99)
                })
                .collect()
        })
        .collect();
    let pod_hours = samples
        .windows(2)
        .map(|w| w[0].replicas as f64 * (w[1].t - w[0].t))
        .sum::<f64>()
        / 3600.0;
    let policy = PolicyReport {
        name: "live (tenant-aware)".into(),
        first_scale_up_s: s
            .first_scale_up_s
            .zip(s.spike_start_s)
            .map(|(a, b)| round1(a - b)),
        relief_s: s.relief_s.zip(s.spike_start_s).map(|(a, b)| round1(a - b)),
        peak_replicas: s.peak_replicas as i32,
        mean_replicas: samples.iter().map(|x| x.replicas as f64).sum::<f64>()
            / samples.len().max(1) as f64,
        pod_hours,
        cost: pod_hours * catalog.cost.pod_hour,
        max_tenant_share: s.classes.iter().map(|c| c.max_share).fold(0.0, f64::max),
        classes: s
            .classes
            .iter()
            .map(|c| ClassReport {
                name: c.load.name.clone(),
                spiking: c.load.spiking,
                requests: c.load.requests,
                served: c.load.ok,
                rejected_429: c.load.rejected_429,
                p50_ms: c.load.p50_ms,
                p95_ms: None,
                p99_ms: c.load.p99_ms,
                pre_spike_p99_ms: c.load.pre_spike_p99_ms,
                over_slo: 0,
                sla_breach_minutes: 0,
            })
            .collect(),
        in_system_at_end: 0,
    };
    Report {
        scenario: format!("{} (live, {:.0} s)", plan.scenario.name, plan.wall_seconds),
        seed: plan.seed,
        simulated_seconds: end,
        requests: s.requests,
        wall_seconds: end,
        policies: vec![policy],
        series: vec![Series {
            bin_seconds: BIN,
            replicas,
            queue_depth: queue,
            p99_ms: p99,
        }],
        class_names: plan
            .scenario
            .classes
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        currency: catalog.cost.currency.clone(),
        spike_onset: s.spike_start_s,
    }
    .html()
}

/// The same scenario through the simulator, side by side with the live run.
fn compare_sim(plan: &Plan, s: &Summary, samples: &[Sample]) {
    use tenantscale_sim::policy::Policy;
    let report = tenantscale_sim::simulate(&plan.scenario, &[Policy::TenantAware], plan.seed, None);
    let Some(sim) = report.policies.first() else {
        return;
    };
    let series = report.series.first();
    println!(
        "\nsimulated vs live (the simulator runs the scenario's own 4 h clock; times scaled to the run):"
    );
    let mut rows = vec![
        ["at", "live pods", "simulated pods"]
            .map(String::from)
            .to_vec(),
    ];
    for k in 0..=10 {
        let f = f64::from(k) / 10.0;
        let live = samples
            .iter()
            .find(|x| x.t >= f * plan.wall_seconds)
            .map_or("-".into(), |x| x.replicas.to_string());
        let simulated = series
            .and_then(|sr| {
                sr.replicas
                    .get(((sr.replicas.len() - 1) as f64 * f) as usize)
            })
            .map_or("-".into(), |v| format!("{v:.1}"));
        rows.push(vec![
            format!("{:.0} s", f * plan.wall_seconds),
            live,
            simulated,
        ]);
    }
    print!("{}", tenantscale_core::text::table(&rows));
    let mut rows = vec![
        ["class", "live p99 ms", "simulated p99 ms"]
            .map(String::from)
            .to_vec(),
    ];
    for (live, simulated) in s.classes.iter().zip(&sim.classes) {
        let opt = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        rows.push(vec![
            live.load.name.clone(),
            opt(live.load.p99_ms),
            opt(simulated.p99_ms),
        ]);
    }
    print!("{}", tenantscale_core::text::table(&rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(queue: &[f64]) -> Vec<Sample> {
        queue
            .iter()
            .enumerate()
            .map(|(t, q)| Sample {
                t: t as f64,
                replicas: 3,
                queue_depth_per_tenant: *q,
                queued: vec![],
                share: vec![],
            })
            .collect()
    }

    #[test]
    fn relief_is_when_the_queue_stays_down_after_the_scale_up() {
        // Scale-up at 2 s, while the queue is still empty: it builds, then clears at 5 s.
        let mut q = vec![0.0, 0.0, 0.0, 3.0, 4.0];
        q.extend([0.0; 12]);
        assert_eq!(relief(&samples(&q), 2.0), Some(5.0));
        // A blip inside the 10 s restarts the count.
        q[9] = 2.0;
        assert_eq!(
            relief(&samples(&q), 2.0),
            None,
            "the run ends too soon after it"
        );
        q.extend([0.0; 5]);
        assert_eq!(relief(&samples(&q), 2.0), Some(10.0));
        // A queue that never builds: relief at the scale-up.
        assert_eq!(relief(&samples(&[0.0; 15]), 2.0), Some(2.0));
    }
}

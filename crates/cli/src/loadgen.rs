//! `tenantscale loadgen`: open-loop load from a simulator scenario against a gateway.
//!
//! Each tenant's arrivals are a Poisson process whose rate follows its class's shape
//! (`baseRps ×` the spike/diurnal/weekly multipliers), drawn by thinning so rate changes are
//! exact. `--duration` replays the scenario's timeline faster: a 4 h scenario in 3 min runs
//! its clock 80× faster, while rates stay per wall-clock second. Open loop: a slow answer
//! never delays the next request, and a 429 is recorded, not retried.

use crate::BadInput;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenantscale_sim::rng::Rng;
use tenantscale_sim::scenario::Scenario;

#[derive(clap::Args)]
pub struct LoadgenArgs {
    /// The scenario (the simulator's format); its catalog names the tenants.
    #[arg(long)]
    pub scenario: PathBuf,
    /// Use this catalog instead of the scenario's `catalog:`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub target: String,
    /// Wall-clock length of the run: the scenario's timeline is replayed in this time
    /// (e.g. 3m; default: the scenario's own duration).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Multiply every rate (e.g. 0.5 for a smaller machine).
    #[arg(long, default_value_t = 1.0)]
    pub rate_scale: f64,
    /// API keys are this prefix + the tenant id (the example catalogs' demo keys).
    #[arg(long, default_value = "demo-key-")]
    pub key_prefix: String,
    /// Send the seed's X-Tenant-ID instead of an API key (a gateway with
    /// --trust-tenant-header).
    #[arg(long)]
    pub tenant_header: bool,
    /// Ask the pods for an LLM answer too.
    #[arg(long)]
    pub generate: bool,
    /// Seconds before a request counts as failed.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write every request (tenant, class, start, status, latency) and the summary here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `3m`, `45s`, `90` (seconds), `1h`.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    tenantscale_sim::scenario::Seconds::parse(s)
        .map(|d| d.0)
        .map_err(|e| format!("{s:?}: {e}"))
        .and_then(|d| {
            if d > 0.0 && d.is_finite() {
                Ok(d)
            } else {
                Err(format!("{s:?}: must be more than 0"))
            }
        })
}

/// One request's outcome.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Record {
    /// Seconds since the run started, when it was sent.
    pub t: f64,
    pub tenant: u16,
    pub class: u8,
    /// HTTP status; 0 for a connection error or a timeout.
    pub status: u16,
    pub latency_ms: f32,
    /// The pod's own account of an answered query (`timings`): waiting for a slot, and
    /// the LLM step; the rest of the latency is the network, the gateway and retrieval.
    pub queued_ms: f32,
    pub generation_ms: f32,
}

impl Record {
    pub fn failed(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

/// What to send.
#[derive(Clone)]
pub struct Plan {
    pub scenario: Arc<Scenario>,
    /// Wall seconds of the run.
    pub wall_seconds: f64,
    pub rate_scale: f64,
    pub target: hyper::Uri,
    pub auth: Auth,
    pub generate: bool,
    pub timeout: Duration,
    pub seed: u64,
}

#[derive(Clone)]
pub enum Auth {
    KeyPrefix(String),
    TenantHeader,
}

impl Plan {
    /// Scenario seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.scenario.duration / self.wall_seconds
    }

    /// A time of the scenario's clock as seconds of the run.
    pub fn wall(&self, scenario_t: f64) -> f64 {
        scenario_t / self.speed()
    }
}

/// Questions the demo corpora answer (any text works against any corpus).
const QUESTIONS: [&str; 6] = [
    "what was the revenue this quarter",
    "how do refunds work",
    "who approves a new vendor",
    "what is the incident escalation path",
    "when is the data retention review",
    "which region had the highest growth",
];

/// The records so far, shared with whoever watches the run.
pub type Records = Arc<Mutex<Vec<Record>>>;

/// Sends the plan's load; returns when the last request has finished.
pub async fn run(plan: Plan, records: Records) {
    let client: Client<HttpConnector, Full<Bytes>> = {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .build(connector)
    };
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for (i, traffic) in plan.scenario.traffic.iter().enumerate() {
        let plan = plan.clone();
        let (client, records) = (client.clone(), Arc::clone(&records));
        let tenant = traffic.tenant;
        let class = traffic.class;
        senders.spawn(async move {
            let sc = &plan.scenario;
            let c = &sc.classes[class];
            let id = sc.catalog.tenants[tenant].id.clone();
            let peak = peak_multiplier(&plan, class);
            let max_rate = c.base_rps * peak * plan.rate_scale;
            if max_rate <= 0.0 {
                return;
            }
            let mut rng = Rng::fork(plan.seed, i as u64);
            let mut requests = tokio::task::JoinSet::new();
            let mut t = 0.0;
            loop {
                t += rng.exp1() / max_rate;
                if t >= plan.wall_seconds {
                    break;
                }
                let rate = c.base_rps * c.multiplier(t * plan.speed(), sc.clock_start);
                if rng.uniform() * peak >= rate / c.base_rps.max(1e-12) {
                    continue;
                }
                tokio::time::sleep_until((start + Duration::from_secs_f64(t)).into()).await;
                let question = QUESTIONS[rng.below(QUESTIONS.len())];
                let req = request(&plan, &id, question);
                let (client, records) = (client.clone(), Arc::clone(&records));
                let timeout = plan.timeout;
                requests.spawn(async move {
                    let sent = Instant::now();
                    let exchange = async {
                        let res = client.request(req).await.ok()?;
                        let status = res.status().as_u16();
                        let body = res.into_body().collect().await.ok()?.to_bytes();
                        Some((status, body))
                    };
                    let (status, body) = tokio::time::timeout(timeout, exchange)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let latency_ms = sent.elapsed().as_secs_f32() * 1000.0;
                    let timings = (status == 200)
                        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                        .flatten();
                    let timing = |name: &str| {
                        timings
                            .as_ref()
                            .and_then(|v| v["timings"][name].as_f64())
                            .unwrap_or(0.0) as f32
                    };
                    let record = Record {
                        t: sent.duration_since(start).as_secs_f64(),
                        tenant: tenant as u16,
                        class: class as u8,
                        status,
                        latency_ms,
                        queued_ms: timing("queuedMs"),
                        generation_ms: timing("generationMs"),
                    };
                    records.lock().expect("records lock").push(record);
                });
                while requests.try_join_next().is_some() {}
            }
            while requests.join_next().await.is_some() {}
        });
    }
    while senders.join_next().await.is_some() {}
}

/// The largest rate multiplier of a class over the run (sampled at 1/1000 of it, and at
/// every onset), for thinning.
fn peak_multiplier(plan: &Plan, class: usize) -> f64 {
    let c = &plan.scenario.classes[class];
    let (d, start) = (plan.scenario.duration, plan.scenario.clock_start);
    (0..=1000)
        .map(|k| d * f64::from(k) / 1000.0)
        .chain(plan.scenario.onsets.iter().copied())
        .map(|t| c.multiplier(t, start))
        .fold(1.0, f64::max)
        * 1.05
}

fn request(plan: &Plan, tenant: &str, question: &str) -> hyper::Request<Full<Bytes>> {
    let body = serde_json::json!({"query": question, "topK": 3, "generate": plan.generate});
    let mut req = hyper::Request::post(plan.target.clone())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid request");
    let value = match &plan.auth {
        Auth::KeyPrefix(prefix) => (
            hyper::header::AUTHORIZATION,
            format!("Bearer {prefix}{tenant}"),
        ),
        Auth::TenantHeader => (
            hyper::header::HeaderName::from_static("x-tenant-id"),
            tenant.to_string(),
        ),
    };
    req.headers_mut().insert(
        value.0,
        value.1.parse().expect("ids and keys are header values"),
    );
    req
}

/// One class's results.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSummary {
    pub name: String,
    pub spiking: bool,
    pub requests: u64,
    pub ok: u64,
    #[serde(rename = "rejected429")]
    pub rejected_429: u64,
    /// 5xx, connection errors and timeouts.
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// p99 of answered requests sent before the first spike.
    pub pre_spike_p99_ms: Option<f64>,
    /// p99 of answered requests sent during a spike of any class.
    pub spike_p99_ms: Option<f64>,
}

/// The `q` quantile (nearest rank) of `values`, sorted in place.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some((values[rank - 1] * 10.0).round() / 10.0)
}

/// Per class: counts and latency percentiles; `spike` is the wall window of the spike.
pub fn summarize(plan: &Plan, records: &[Record], spike: Option<(f64, f64)>) -> Vec<ClassSummary> {
    plan.scenario
        .classes
        .iter()
        .enumerate()
        .map(|(c, class)| {
            let mine: Vec<&Record> = records
                .iter()
                .filter(|r| usize::from(r.class) == c)
                .collect();
            let ok: Vec<&&Record> = mine.iter().filter(|r| r.status == 200).collect();
            let latencies = |f: &dyn Fn(&Record) -> bool| -> Vec<f64> {
                ok.iter()
                    .filter(|r| f(r))
                    .map(|r| f64::from(r.latency_ms))
                    .collect()
            };
            let (onset, end) = spike.unwrap_or((f64::INFINITY, f64::INFINITY));
            ClassSummary {
                name: class.name.clone(),
                spiking: class.spiking,
                requests: mine.len() as u64,
                ok: ok.len() as u64,
                rejected_429: mine.iter().filter(|r| r.status == 429).count() as u64,
                failed: mine.iter().filter(|r| r.failed()).count() as u64,
                p50_ms: quantile(&mut latencies(&|_| true), 0.5),
                p99_ms: quantile(&mut latencies(&|_| true), 0.99),
                pre_spike_p99_ms: quantile(&mut latencies(&|r| r.t < onset), 0.99),
                spike_p99_ms: quantile(&mut latencies(&|r| r.t >= onset && r.t < end), 0.99),
            }
        })
        .collect()
}

/// The plan from the command's flags.
pub fn plan(args: &LoadgenArgs) -> anyhow::Result<Plan> {
    let scenario = Scenario::load(&args.scenario, args.catalog.as_deref())
        .map_err(|e| BadInput(e.to_string()))?;
    if scenario.trace.is_some() {
        return Err(BadInput(format!(
            "{}: a trace scenario replays recorded arrivals; loadgen needs classes with rates",
            args.scenario.display()
        ))
        .into());
    }
    if !(args.rate_scale > 0.0 && args.rate_scale <= 1000.0) {
        return Err(BadInput(format!(
            "--rate-scale {}: expected (0, 1000]",
            args.rate_scale
        ))
        .into());
    }
    let target: hyper::Uri = format!("{}/v1/query", args.target.trim_end_matches('/'))
        .parse()
        .map_err(|e| BadInput(format!("--target {:?}: {e}", args.target)))?;
    if target.scheme_str() != Some("http") {
        return Err(BadInput(format!(
            "--target {:?}: expected http://HOST:PORT",
            args.target
        ))
        .into());
    }
    let timeout = crate::serve::seconds("--timeout", args.timeout)?;
    Ok(Plan {
        wall_seconds: args.duration.unwrap_or(scenario.duration),
        scenario: Arc::new(scenario),
        rate_scale: args.rate_scale,
        target,
        auth: if args.tenant_header {
            Auth::TenantHeader
        } else {
            Auth::KeyPrefix(args.key_prefix.clone())
        },
        generate: args.generate,
        timeout,
        seed: args.seed,
    })
}

/// The first spike's window on the run's clock.
pub fn spike_window(plan: &Plan) -> Option<(f64, f64)> {
    let sc = &plan.scenario;
    let onset = sc.spike_onset?;
    // The spike lasts while any spiking class's multiplier is above 1 after the onset.
    let step = sc.duration / 2000.0;
    let mut end = onset;
    while end < sc.duration
        && sc
            .classes
            .iter()
            .any(|c| c.spiking && c.multiplier(end, sc.clock_start) > 1.0)
    {
        end += step;
    }
    Some((plan.wall(onset), plan.wall(end.min(sc.duration))))
}

pub fn run_command(args: LoadgenArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let records: Records = Arc::default();
    eprintln!(
        "loadgen: {} tenants, {} over {:.0} s (scenario clock {:.0}× faster), against {}",
        plan.scenario.traffic.len(),
        plan.scenario.name,
        plan.wall_seconds,
        plan.speed(),
        plan.target
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    runtime.block_on(async {
        let load = tokio::spawn(run(plan.clone(), Arc::clone(&records)));
        let progress = async {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let r = records.lock().expect("records lock");
                eprintln!(
                    "{}",
                    progress_line(started.elapsed().as_secs_f64(), plan.wall_seconds, &r)
                );
            }
        };
        tokio::select! {
            _ = load => {}
            () = progress => {}
        }
    });
    let records = records.lock().expect("records lock").clone();
    let summary = summarize(&plan, &records, spike_window(&plan));
    print_summary(&summary);
    if let Some(out) = &args.out {
        write_json(
            out,
            &serde_json::json!({"classes": summary, "requests": records}),
        )?;
    }
    let failed: u64 = summary.iter().map(|c| c.failed).sum();
    if failed > 0 {
        anyhow::bail!("{failed} request(s) failed (5xx, connection error or timeout)");
    }
    Ok(())
}

/// `[=====>    ] 40 s / 180 s  1234 sent, 12 × 429, 0 failed`
pub fn progress_line(elapsed: f64, total: f64, records: &[Record]) -> String {
    let width = 30;
    let done = ((elapsed / total).clamp(0.0, 1.0) * width as f64) as usize;
    format!(
        "[{}{}] {:>4.0} s / {:.0} s  {} answered, {} × 429, {} failed",
        "=".repeat(done),
        " ".repeat(width - done),
        elapsed,
        total,
        records.len(),
        records.iter().filter(|r| r.status == 429).count(),
        records.iter().filter(|r| r.failed()).count()
    )
}

pub fn print_summary(summary: &[ClassSummary]) {
    let opt = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    let mut rows = vec![
        [
            "class",
            "requests",
            "ok",
            "429",
            "failed",
            "p50 ms",
            "p99 ms",
            "p99 before spike",
            "p99 in spike",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for c in summary {
        rows.push(vec![
            format!("{}{}", c.name, if c.spiking { "*" } else { "" }),
            c.requests.to_string(),
            c.ok.to_string(),
            c.rejected_429.to_string(),
            c.failed.to_string(),
            opt(c.p50_ms),
            opt(c.p99_ms),
            opt(c.pre_spike_p99_ms),
            opt(c.spike_p99_ms),
        ]);
    }
    print!("{}", tenantscale_core::text::table(&rows));
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

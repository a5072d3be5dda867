//! `tenantscale simulate`: what would this traffic have done under each policy?

use crate::{BadInput, read_input};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tenantscale_core::scaling::spec::HpaSpec;
use tenantscale_core::yaml;
use tenantscale_sim::{Policy, Scenario, simulate};

/// Options of `tenantscale simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// The scenario (YAML), e.g. examples/scenarios/media-spike.yaml.
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Catalog to use instead of the scenario's `catalog:`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Comma-separated: static (sized to the others' peak), static:N, hpa-cpu, hpa-queue,
    /// tenant-aware, hpa:FILE (an autoscaling/v2 HPA spec on tenantscale's data plane).
    #[arg(long, default_value = "static,hpa-cpu,hpa-queue,tenant-aware")]
    pub policies: String,
    /// Random seed: the same seed gives the same run.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML report with SVG charts (and report.json) into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Show a progress bar on stderr.
    #[arg(long)]
    pub progress: bool,
}

/// An HPA file: a bare `HorizontalPodAutoscalerSpec` or a whole object with `spec`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum HpaFile {
    Object { spec: HpaSpec },
    Spec(HpaSpec),
}

fn parse_policies(list: &str) -> Result<Vec<Policy>, BadInput> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let policy = match item {
            "static" => Policy::Static(0),
            "hpa-cpu" => Policy::HpaCpu,
            "hpa-queue" => Policy::HpaQueue,
            "tenant-aware" => Policy::TenantAware,
            _ if item.starts_with("static:") => {
                let n = item[7..].parse().map_err(|_| {
                    BadInput(format!("--policies: {item:?}: static:N takes a pod count"))
                })?;
                Policy::Static(n)
            }
            _ if item.starts_with("hpa:") => {
                let path = Path::new(&item[4..]);
                let text = read_input(path).map_err(|e| BadInput(format!("--policies: {e:#}")))?;
                let spec = match yaml::from_str::<HpaFile>(&text) {
                    Ok(HpaFile::Object { spec } | HpaFile::Spec(spec)) => spec,
                    Err(e) => return Err(BadInput(format!("--policies: {}: {e}", path.display()))),
                };
                let name = path
                    .file_stem()
                    .map_or("hpa".into(), |s| format!("hpa:{}", s.to_string_lossy()));
                Policy::Hpa {
                    name,
                    spec: Box::new(spec),
                }
            }
            _ => {
                return Err(BadInput(format!(
                    "--policies: unknown policy {item:?} (static, static:N, hpa-cpu, hpa-queue, tenant-aware, hpa:FILE)"
                )));
            }
        };
        out.push(policy);
    }
    if out.is_empty() {
        return Err(BadInput("--policies: name at least one policy".into()));
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario, args.config.as_deref())
        .map_err(|e| BadInput(e.to_string()))?;
    let policies = parse_policies(&args.policies)?;
    for p in &policies {
        p.check(&scenario.catalog)
            .map_err(|e| BadInput(format!("--policies: {e}")))?;
    }
    let bar = |fraction: f64| {
        let width = 40;
        let filled = ((fraction * f64::from(width)).round() as usize).min(width as usize);
        eprint!(
            "\r[{}{}] {:>3.0} %",
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            fraction * 100.0
        );
        let _ = std::io::stderr().flush();
        if fraction >= 1.0 {
            eprintln!();
        }
    };
    let report = simulate(
        &scenario,
        &policies,
        args.seed,
        args.progress.then_some(&bar as &dyn Fn(f64)),
    );
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)?;
        let page = dir.join("index.html");
        std::fs::write(&page, report.html())?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        eprintln!("report: {}", page.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

//! `tenantscale render`: the catalog as Kubernetes manifests in a folder.

use crate::{BadInput, CatalogFile, read_input};
use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tenantscale_k8s::render::{Autoscaler, KubeVersion, Options, render};

#[derive(clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub catalog: CatalogFile,
    /// Folder for the manifests: NAMESPACE/KIND-NAME.yaml, cluster/ for cluster-scoped kinds.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// The cluster's Kubernetes version: fields it lacks are left out (with a warning).
    #[arg(long, default_value = "1.30")]
    pub kubernetes_version: KubeVersion,
    /// Who scales the pool: `tenantscale` (our autoscaler) or `native` (the stock HPA on
    /// queue_depth_per_tenant through prometheus-adapter, the seed's path).
    #[arg(long, value_enum, default_value = "tenantscale")]
    pub hpa: HpaChoice,
    /// Also a ServiceMonitor and a PrometheusRule (prometheus-operator's CRDs).
    #[arg(long)]
    pub prometheus_operator: bool,
    /// Render the gateway/pod secret as a Secret (otherwise create it with kubectl).
    #[arg(long, env = "TENANTSCALE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum HpaChoice {
    Tenantscale,
    Native,
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let text = read_input(&args.catalog.config)?;
    let catalog = crate::serve::catalog(&args.catalog.config)?;
    let secret = args.secret.map(crate::check_secret).transpose()?;
    let rendered = render(
        &catalog,
        &Options {
            version: args.kubernetes_version,
            autoscaler: match args.hpa {
                HpaChoice::Tenantscale => Autoscaler::Tenantscale,
                HpaChoice::Native => Autoscaler::Native,
            },
            prometheus_operator: args.prometheus_operator,
            secret,
            catalog_text: text,
        },
    )
    .map_err(|e| {
        let mut msg = format!("{}: cannot render", args.catalog.config.display());
        for p in &e.problems {
            let _ = write!(msg, "\n  {p}");
        }
        BadInput(msg)
    })?;
    for w in &rendered.warnings {
        eprintln!("warning: {w}");
    }
    let stale = stale_files(&args.out, &rendered.files)?;
    for (path, yaml) in &rendered.files {
        let path = args.out.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for path in stale {
        eprintln!(
            "warning: {} is not rendered any more (delete it before applying the folder)",
            path.display()
        );
    }
    eprintln!(
        "wrote {} manifests for Kubernetes {} to {}",
        rendered.files.len(),
        args.kubernetes_version,
        args.out.display()
    );
    Ok(())
}

/// `.yaml` files already in `out` that this render does not write.
fn stale_files(
    out: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Vec<PathBuf>> {
    if out.exists() && !out.is_dir() {
        return Err(BadInput(format!("-o {}: not a folder", out.display())).into());
    }
    let mut stale = Vec::new();
    let Ok(dirs) = std::fs::read_dir(out) else {
        return Ok(stale);
    };
    for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
        for file in std::fs::read_dir(dir.path())?.flatten() {
            let path = file.path();
            let relative = path.strip_prefix(out).unwrap_or(&path).to_string_lossy();
            if path.extension().is_some_and(|e| e == "yaml") && !files.contains_key(&*relative) {
                stale.push(path);
            }
        }
    }
    stale.sort();
    Ok(stale)
}

//! `tenantscale serve` (the RAG pod) and `tenantscale ingest` (load files into the store).

use crate::{BadInput, read_input};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tenantscale_core::catalog::Catalog;
use tenantscale_service::http::{HttpConfig, TenantAuth};
use tenantscale_service::pod::{Pod, PodConfig};
use tenantscale_service::store::{NewDocument, Store};
use tenantscale_service::{ServeConfig, serve};

/// Options of `tenantscale serve`.
pub struct ServeArgs {
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub store: String,
    pub secret: Option<String>,
    pub trust_tenant_header: bool,
    pub cache_bytes: u64,
    pub max_body: usize,
    pub drain_grace: f64,
    pub drain_timeout: f64,
    pub warm_up: f64,
    pub preload: usize,
}

fn catalog(path: &Path) -> anyhow::Result<Catalog> {
    let text = read_input(path)?;
    let loaded = Catalog::parse(&text)
        .map_err(|e| BadInput(format!("{}: invalid catalog\n{e}", path.display())))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.catalog)
}

/// Opens `sqlite://PATH` (creating its directory) or connects to `postgres://…`.
fn open_store(url: &str) -> anyhow::Result<Store> {
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

/// A duration flag: finite, 0 to one day.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(0.0..=86_400.0).contains(&value) {
        return Err(BadInput(format!("{flag} {value}: expected 0 to 86400 seconds")).into());
    }
    Ok(Duration::from_secs_f64(value))
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let catalog = catalog(&args.config)?;
    let auth = match (args.trust_tenant_header, args.secret) {
        (true, _) => TenantAuth::TrustHeader,
        (false, Some(s)) if s.len() >= 16 => TenantAuth::Signed(s.into_bytes()),
        (false, Some(_)) => return Err(BadInput("--secret: use at least 16 bytes".into()).into()),
        (false, None) => {
            return Err(BadInput(
                "pods trust only the gateway: give --secret (or TENANTSCALE_SECRET), or --trust-tenant-header behind an authenticating ingress"
                    .into(),
            )
            .into());
        }
    };
    let store = open_store(&args.store)?;
    let slots = catalog.pool.slots_per_pod;
    let pod = Arc::new(Pod::new(
        catalog,
        store,
        &PodConfig {
            slots,
            cache_bytes: args.cache_bytes,
        },
    ));
    let config = ServeConfig {
        listen: args.listen,
        http: HttpConfig {
            auth,
            max_body: args.max_body,
            max_query_chars: 2000,
            queue_timeout: Duration::from_secs(30),
        },
        drain_grace: seconds("--drain-grace", args.drain_grace)?,
        drain_timeout: seconds("--drain-timeout", args.drain_timeout)?,
        warm_up: seconds("--warm-up", args.warm_up)?,
        preload: args.preload,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(pod, config))?;
    Ok(())
}

pub fn run_ingest(
    config: &Path,
    tenant: &str,
    store: &str,
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    let catalog = catalog(config)?;
    if !catalog.tenants.iter().any(|t| t.id == tenant) {
        return Err(BadInput(format!(
            "--tenant: no tenant {tenant:?} in {}",
            config.display()
        ))
        .into());
    }
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
    let chunks = open_store(store)?.ingest(tenant, &docs)?;
    println!(
        "ingested {} documents ({chunks} chunks) for {tenant}",
        docs.len()
    );
    Ok(())
}

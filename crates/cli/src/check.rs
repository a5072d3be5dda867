//! `tenantscale check`: validate a catalog, print its quota table (resources, and the storage
//! quota of each tenant).

use crate::{BadInput, read_input};
use std::fmt::Write as _;
use std::path::Path;
use tenantscale_core::catalog::{Catalog, QuotaTable, Resources, StorageQuota};

pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let text = read_input(path)?;
    let loaded = Catalog::parse(&text).map_err(|e| {
        let mut msg = format!("{}: invalid catalog", path.display());
        for p in &e.problems {
            let _ = write!(msg, "\n  {p}");
        }
        BadInput(msg)
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let table = loaded.catalog.quota_table();
    if json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print!("{}", render(&loaded.catalog, &table));
    }
    Ok(())
}

fn gib(bytes: i64) -> String {
    let g = bytes as f64 / (1u64 << 30) as f64;
    format!("{} GiB", trim(g, 2))
}

/// A byte count in the largest binary unit it reaches (`64 MiB`, `1.5 GiB`).
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let step = (0..units.len())
        .rev()
        .find(|i| bytes >= 1u64 << (10 * i))
        .unwrap_or(0);
    let x = bytes as f64 / (1u64 << (10 * step)) as f64;
    format!("{} {}", trim(x, 2), units[step])
}

fn storage(q: &StorageQuota) -> [String; 2] {
    [q.documents.to_string(), size(q.bytes)]
}

/// `x` with at most `places` decimals and no trailing zeros.
fn trim(x: f64, places: usize) -> String {
    let s = format!("{x:.places$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn cells(r: &Resources) -> [String; 3] {
    [trim(r.cpu, 3), gib(r.memory_bytes), r.pods.to_string()]
}

/// The quota table as aligned text.
pub fn render(catalog: &Catalog, table: &QuotaTable) -> String {
    let mut out = String::new();
    let c = &catalog.cluster;
    let _ = writeln!(
        out,
        "cluster: {} cores, {}, {} pods (pool maxReplicas); headroom {} %",
        trim(c.cores, 3),
        gib(c.memory_bytes),
        catalog.pool.max_replicas,
        trim(table.headroom * 100.0, 1)
    );
    out.push('\n');
    let mut rows = vec![
        [
            "TIER",
            "TENANTS",
            "SHARE",
            "CPU",
            "MEMORY",
            "PODS",
            "DOCUMENTS",
            "STORED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for t in &table.tiers {
        let [cpu, mem, pods] = cells(&t.resources);
        let [documents, stored] = storage(&t.storage);
        rows.push(vec![
            t.name.clone(),
            t.tenants.to_string(),
            format!("{} %", trim(t.share * 100.0, 1)),
            cpu,
            mem,
            pods,
            documents,
            stored,
        ]);
    }
    out.push_str(&tenantscale_core::text::table(&rows));
    out.push('\n');
    let mut rows = vec![
        [
            "TENANT",
            "TIER",
            "GUARANTEED CPU",
            "MEMORY",
            "PODS",
            "MAX CPU",
            "MEMORY",
            "PODS",
            "DOCUMENTS",
            "STORED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for t in &table.tenants {
        let [gc, gm, gp] = cells(&t.guaranteed);
        let [mc, mm, mp] = cells(&t.max);
        let [documents, stored] = storage(&t.storage);
        rows.push(vec![
            t.id.clone(),
            t.tier.clone(),
            gc,
            gm,
            gp,
            mc,
            mm,
            mp,
            documents,
            stored,
        ]);
    }
    out.push_str(&tenantscale_core::text::table(&rows));
    out
}

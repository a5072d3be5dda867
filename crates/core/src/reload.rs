//! What a running process knows about its catalog reloads: how many applied, how many files
//! were refused as invalid, and the SHA-256 of the catalog it runs. Gateway, pod and autoscaler
//! export the same series, so a dashboard can see replicas that have not caught up.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a catalog file's text: its identity in logs and metrics.
pub fn catalog_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Reload counters and the running catalog's hash.
#[derive(Debug)]
pub struct Reloads {
    applied: AtomicU64,
    invalid: AtomicU64,
    running: Mutex<String>,
}

impl Reloads {
    /// A process that started on the catalog with this hash.
    pub fn new(sha256: String) -> Self {
        Reloads {
            applied: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            running: Mutex::new(sha256),
        }
    }

    /// A new catalog is running.
    pub fn applied(&self, sha256: String) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = sha256;
        self.applied.fetch_add(1, Ordering::Relaxed);
    }

    /// A changed file was refused; the running catalog stays.
    pub fn invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// The running catalog's hash.
    pub fn running(&self) -> String {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `tenantscale_catalog_reloads_total{result}` and `tenantscale_catalog_info{sha256}`, in
    /// the Prometheus text format.
    pub fn exposition(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP tenantscale_catalog_reloads_total Catalog reloads by result: applied, or invalid (the running catalog stayed).\n\
             # TYPE tenantscale_catalog_reloads_total counter\n\
             tenantscale_catalog_reloads_total{{result=\"applied\"}} {}\n\
             tenantscale_catalog_reloads_total{{result=\"invalid\"}} {}\n\
             # HELP tenantscale_catalog_info The running catalog, by the SHA-256 of its file.\n\
             # TYPE tenantscale_catalog_info gauge\n\
             tenantscale_catalog_info{{sha256=\"{}\"}} 1\n",
            self.applied.load(Ordering::Relaxed),
            self.invalid.load(Ordering::Relaxed),
            self.running(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_names_the_running_catalog() {
        let r = Reloads::new(catalog_sha256("a"));
        r.invalid();
        r.applied(catalog_sha256("b"));
        let mut out = String::new();
        r.exposition(&mut out);
        assert!(out.contains("tenantscale_catalog_reloads_total{result=\"applied\"} 1\n"));
        assert!(out.contains("tenantscale_catalog_reloads_total{result=\"invalid\"} 1\n"));
        let b = catalog_sha256("b");
        assert_eq!(b.len(), 64);
        assert!(out.contains(&format!("tenantscale_catalog_info{{sha256=\"{b}\"}} 1\n")));
    }
}

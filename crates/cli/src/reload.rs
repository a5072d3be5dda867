//! Catalog reload for a running gateway, pod or autoscaler: on SIGHUP, and when the file's
//! content changes (checked every second). The path is followed on every check, so a
//! Kubernetes Secret or ConfigMap mount, which changes by swapping a symlink, is seen.
//! An invalid file is refused with every problem logged; the running catalog stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tenantscale_core::catalog::{Catalog, Loaded};
use tenantscale_core::reload::{Reloads, catalog_sha256};

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What identifies the file a path leads to without reading it.
#[derive(PartialEq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
}

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: m.len(),
        modified: m.modified().ok(),
        inode: (m.dev(), m.ino()),
    })
}

/// The catalog a process starts on (see [`crate::serve::catalog`]) and its reload counters.
pub fn initial(path: &Path) -> anyhow::Result<(Catalog, Arc<Reloads>)> {
    let text = crate::read_input(path)?;
    let catalog = crate::serve::parse_catalog(path, &text)?;
    Ok((catalog, Arc::new(Reloads::new(catalog_sha256(&text)))))
}

/// Watches `path` until the runtime ends. `apply` installs a valid new catalog and returns
/// the paths of changed fields this process cannot apply while it runs (logged: they take
/// effect at its next start).
pub fn spawn_watch(
    path: PathBuf,
    reloads: Arc<Reloads>,
    mut apply: impl FnMut(Loaded) -> Vec<String> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        // Nothing seen yet: the first check reads the file, so a change between the start's
        // read and this watch is not missed.
        let mut seen = None;
        // The last file refused, so a bad file is reported once, not every second.
        let mut refused = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = hangup.recv() => true,
                _ = tick.tick() => false,
            };
            let now = fingerprint(&path);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            let text = match crate::read_input(&path) {
                Ok(text) => text,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "catalog reload: cannot read the file; the running catalog stays");
                    continue;
                }
            };
            let sha256 = catalog_sha256(&text);
            if sha256 == reloads.running() || (!forced && refused.as_ref() == Some(&sha256)) {
                continue;
            }
            match Catalog::parse(&text) {
                Ok(loaded) => {
                    refused = None;
                    for w in &loaded.warnings {
                        tracing::warn!(path = %path.display(), "catalog: {w}");
                    }
                    for field in apply(loaded) {
                        tracing::warn!(field = %field, "catalog reload: this field changed but takes effect only when the process restarts");
                    }
                    tracing::info!(path = %path.display(), sha256 = %sha256, "catalog reloaded");
                    reloads.applied(sha256);
                }
                Err(e) => {
                    for p in &e.problems {
                        tracing::error!(path = %path.display(), "catalog reload refused: {p}");
                    }
                    reloads.invalid();
                    refused = Some(sha256);
                }
            }
        }
    }))
}

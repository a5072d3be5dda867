//! The local actuator: the pool is `tenantscale serve` child processes on 127.0.0.1.
//!
//! It starts pods on free ports, replaces pods that exit on their own, and scales down by
//! taking the pods with the least outstanding work out of the registry (the gateway stops
//! sending to them at once), sending SIGTERM and waiting for the pod's own drain to finish.
//! A drained pod prints `{"event":"drained","dropped":N}` on stdout; N is added to
//! `dropped_on_drain`. Pods recorded by a previous run that are still alive are adopted, so
//! restarting the autoscaler leaves the pool alone.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tenantscale_core::registry::{Candidate, Member, Members, scale_down_order};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How to start a pod.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `tenantscale` binary.
    pub program: PathBuf,
    /// Arguments after `serve`, without `--listen` (the actuator picks the port).
    pub args: Vec<String>,
    /// Environment for the pods (the HMAC secret goes here, not on the command line).
    pub env: Vec<(String, String)>,
    /// Each pod's stderr goes to `pod-<port>.log` here.
    pub log_dir: PathBuf,
    /// After SIGTERM, how long a pod may take to drain before SIGKILL.
    pub stop_timeout: Duration,
}

/// A pod in the state file: enough to adopt it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub addr: String,
    pub pid: u32,
    /// Unix seconds.
    pub started: f64,
}

struct LocalPod {
    record: PodRecord,
    /// `None` for a pod adopted from a previous run (not our child).
    child: Option<Child>,
    draining: bool,
}

/// Counters the status page reports.
#[derive(Debug, Default)]
pub struct Counters {
    /// Queries pods reported dropped when their drain timed out.
    pub dropped_on_drain: AtomicU64,
    /// Pods that exited on their own and were replaced.
    pub restarts: AtomicU64,
}

pub struct LocalActuator {
    config: LocalConfig,
    pods: Vec<LocalPod>,
    registry: watch::Sender<Members>,
    pub counters: Arc<Counters>,
    /// Scale-downs still draining.
    /// Scale-downs still draining; each ends with the pod's address.
    stopping: tokio::task::JoinSet<String>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Whether `pid` is a live `tenantscale serve` process.
fn is_live_pod(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"serve"))
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
}

impl LocalActuator {
    pub fn new(config: LocalConfig) -> (Self, watch::Receiver<Members>) {
        let (registry, members) = watch::channel(Members::default());
        let actuator = Self {
            config,
            pods: Vec::new(),
            registry,
            counters: Arc::default(),
            stopping: tokio::task::JoinSet::new(),
        };
        (actuator, members)
    }

    /// Takes over the pods a previous run recorded that are still alive; returns how many.
    pub fn adopt(&mut self, records: &[PodRecord]) -> usize {
        for r in records {
            if is_live_pod(r.pid) {
                tracing::info!(pod = %r.addr, pid = r.pid, "adopted a running pod");
                self.pods.push(LocalPod {
                    record: r.clone(),
                    child: None,
                    draining: false,
                });
            }
        }
        self.publish();
        self.pods.len()
    }

    /// The pods that count as replicas (not draining).
    pub fn replicas(&self) -> usize {
        self.pods.iter().filter(|p| !p.draining).count()
    }

    /// Every pod that is not draining, for scraping and the state file.
    pub fn records(&self) -> Vec<PodRecord> {
        self.pods
            .iter()
            .filter(|p| !p.draining)
            .map(|p| p.record.clone())
            .collect()
    }

    fn publish(&self) {
        let pods = self
            .pods
            .iter()
            .map(|p| Member {
                addr: p.record.addr.clone(),
                draining: p.draining,
            })
            .collect();
        self.registry.send_modify(|m| {
            m.version += 1;
            m.pods = pods;
        });
    }

    fn spawn_pod(&mut self) -> std::io::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(&self.config.log_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.log_dir.join(format!("pod-{port}.log")))?;
        let child = Command::new(&self.config.program)
            .arg("serve")
            .args(&self.config.args)
            .args(["--listen", &addr])
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            // Its own process group: a Ctrl-C in the terminal reaches the autoscaler, which
            // drains the pods in order, not every pod at once.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(pod = %addr, pid, "pod started");
        self.pods.push(LocalPod {
            record: PodRecord {
                addr,
                pid,
                started: unix_now(),
            },
            child: Some(child),
            draining: false,
        });
        Ok(())
    }

    /// Replaces pods that exited without being asked to; returns how many.
    pub fn replace_exited(&mut self) -> usize {
        self.forget_stopped();
        let mut exited = Vec::new();
        for (i, p) in self.pods.iter_mut().enumerate() {
            if p.draining {
                continue;
            }
            let gone = match &mut p.child {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::warn!(pod = %p.record.addr, %status, "pod exited; replacing it");
                        true
                    }
                    Ok(None) => false,
                    Err(e) => {
                        tracing::warn!(pod = %p.record.addr, error = %e, "cannot check a pod");
                        false
                    }
                },
                None => {
                    let gone = !is_live_pod(p.record.pid);
                    if gone {
                        tracing::warn!(pod = %p.record.addr, "adopted pod exited; replacing it");
                    }
                    gone
                }
            };
            if gone {
                exited.push(i);
            }
        }
        for i in exited.iter().rev() {
            self.pods.remove(*i);
        }
        for _ in &exited {
            self.counters.restarts.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.spawn_pod() {
                tracing::error!(error = %e, "cannot start a replacement pod");
            }
        }
        if !exited.is_empty() {
            self.publish();
        }
        exited.len()
    }

    /// Moves the pool to `desired` pods. Scale-down takes the pods with the least
    /// `outstanding` work (by address; unknown counts as 0).
    pub fn scale_to(&mut self, desired: usize, outstanding: &HashMap<String, f64>) {
        let current = self.replicas();
        if desired > current {
            for _ in current..desired {
                if let Err(e) = self.spawn_pod() {
                    tracing::error!(error = %e, "cannot start a pod");
                    break;
                }
            }
            self.publish();
        } else if desired < current {
            let candidates: Vec<usize> = (0..self.pods.len())
                .filter(|i| !self.pods[*i].draining)
                .collect();
            let order = scale_down_order(
                &candidates
                    .iter()
                    .map(|&i| Candidate {
                        outstanding: outstanding
                            .get(&self.pods[i].record.addr)
                            .copied()
                            .unwrap_or(0.0),
                        started: self.pods[i].record.started,
                    })
                    .collect::<Vec<_>>(),
            );
            let mut leaving = Vec::new();
            for k in order.into_iter().take(current - desired) {
                let pod = &mut self.pods[candidates[k]];
                pod.draining = true;
                leaving.push((pod.record.clone(), pod.child.take()));
            }
            // Listed as draining until they exit: the gateway stops sending to them before
            // they are told to drain.
            self.publish();
            for (record, child) in leaving {
                let (timeout, counters) = (self.config.stop_timeout, Arc::clone(&self.counters));
                self.stopping
                    .spawn(stop_pod(record, child, timeout, counters));
            }
        }
        self.forget_stopped();
    }

    /// Drops the pods whose drain has finished from the registry.
    fn forget_stopped(&mut self) {
        let mut stopped = Vec::new();
        while let Some(done) = self.stopping.try_join_next() {
            stopped.extend(done.ok());
        }
        if !stopped.is_empty() {
            self.pods.retain(|p| !stopped.contains(&p.record.addr));
            self.publish();
        }
    }

    /// Drains and stops every pod (Ctrl-C of `tenantscale up`).
    pub async fn shutdown(mut self) {
        self.scale_to(0, &HashMap::new());
        self.settle().await;
    }

    /// Waits until every pod being scaled down has stopped.
    pub async fn settle(&mut self) {
        while let Some(done) = self.stopping.join_next().await {
            if let Ok(addr) = done {
                self.pods.retain(|p| p.record.addr != addr);
            }
        }
        self.publish();
    }
}

/// SIGTERM, then wait for the pod's drain (SIGKILL after `timeout`) and read its report;
/// ends with the pod's address.
async fn stop_pod(
    record: PodRecord,
    child: Option<Child>,
    timeout: Duration,
    counters: Arc<Counters>,
) -> String {
    let addr = record.addr;
    let pid = Pid::from_raw(record.pid as i32);
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        tracing::warn!(pod = %addr, error = %e, "cannot signal the pod");
        return addr;
    }
    tracing::info!(pod = %addr, "draining pod (SIGTERM)");
    let Some(mut child) = child else {
        // Adopted: not our child, so no report; wait for it to go.
        let deadline = tokio::time::Instant::now() + timeout;
        while is_live_pod(record.pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if is_live_pod(record.pid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        return addr;
    };
    let report = async {
        let mut dropped = None;
        if let Some(stdout) = child.stdout.take() {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["event"] == "drained" {
                    dropped = v["dropped"].as_u64();
                }
            }
        }
        (dropped, child.wait().await)
    };
    match tokio::time::timeout(timeout, report).await {
        Ok((dropped, status)) => {
            let dropped = dropped.unwrap_or(0);
            counters
                .dropped_on_drain
                .fetch_add(dropped, Ordering::Relaxed);
            match status {
                Ok(s) if s.success() && dropped == 0 => {
                    tracing::info!(pod = %addr, "pod drained and stopped")
                }
                Ok(s) => tracing::warn!(pod = %addr, status = %s, dropped, "pod stopped uncleanly"),
                Err(e) => tracing::warn!(pod = %addr, error = %e, "cannot wait for the pod"),
            }
        }
        Err(_) => {
            tracing::warn!(pod = %addr, "drain took too long: SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    addr
}

impl crate::pool::Pool for LocalActuator {
    fn prepare(&mut self) -> impl Future<Output = Result<bool, String>> + Send {
        self.replace_exited();
        std::future::ready(Ok(true))
    }

    fn records(&self) -> Vec<PodRecord> {
        LocalActuator::records(self)
    }

    fn replicas(&self) -> usize {
        LocalActuator::replicas(self)
    }

    fn scale_to(
        &mut self,
        desired: usize,
        outstanding: &HashMap<String, f64>,
    ) -> impl Future<Output = ()> + Send {
        LocalActuator::scale_to(self, desired, outstanding);
        std::future::ready(())
    }

    fn counters(&self) -> (u64, u64) {
        (
            self.counters.dropped_on_drain.load(Ordering::Relaxed),
            self.counters.restarts.load(Ordering::Relaxed),
        )
    }

    fn adoptable(&self) -> Vec<PodRecord> {
        LocalActuator::records(self)
    }
}

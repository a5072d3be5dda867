//! The Kubernetes actuator (feature `kubernetes`): the pool is a Deployment. Only the holder
//! of the Lease decides and writes the scale; every replica observes and publishes the pods
//! (ready, or terminating = draining) on `/v1/pods` for the gateways.

use crate::local::PodRecord;
use crate::pool::Pool;
use std::collections::HashMap;
use tenantscale_core::registry::{Member, Members};
use tenantscale_k8s::cluster::{ConfigMapState, KubePool, LeaderLease, PoolPod};
use tokio::sync::watch;

/// Seconds a Lease lasts without renewal (client-go's default).
pub const LEASE_SECONDS: i32 = 15;

pub struct KubeActuator {
    pool: KubePool,
    lease: LeaderLease,
    pods: Vec<PoolPod>,
    replicas: i32,
    members: watch::Sender<Members>,
}

/// Where a Kubernetes actuator works.
#[derive(Debug, Clone)]
pub struct KubeTarget {
    pub namespace: String,
    pub deployment: String,
    /// The pods' HTTP port.
    pub port: u16,
    /// This autoscaler's name in the Lease (its pod name).
    pub identity: String,
    /// How long the Lease holds without renewal: another replica takes over after it.
    pub lease_seconds: i32,
}

impl KubeTarget {
    /// `NAMESPACE/NAME`.
    pub fn parse(target: &str, port: u16, identity: String) -> Result<Self, String> {
        let (namespace, deployment) =
            tenantscale_k8s::namespaced("--kubernetes-deployment", target)?;
        Ok(Self {
            namespace,
            deployment,
            port,
            identity,
            lease_seconds: LEASE_SECONDS,
        })
    }

    /// The Lease and the state ConfigMap are named after the Deployment (as `render` names
    /// the ones it creates).
    pub fn lease_name(&self) -> String {
        tenantscale_k8s::autoscaler_lease_name(&self.deployment)
    }
    pub fn state_name(&self) -> String {
        tenantscale_k8s::autoscaler_state_name(&self.deployment)
    }
}

impl KubeActuator {
    /// The actuator, the membership it publishes, and the state store next to it.
    pub fn new(
        client: tenantscale_k8s::cluster::Client,
        target: &KubeTarget,
    ) -> (Self, watch::Receiver<Members>, ConfigMapState) {
        let (members, receiver) = watch::channel(Members::default());
        let state = ConfigMapState::new(client.clone(), &target.namespace, &target.state_name());
        (
            Self {
                pool: KubePool::new(
                    client.clone(),
                    &target.namespace,
                    &target.deployment,
                    target.port,
                ),
                lease: LeaderLease::new(
                    client,
                    &target.namespace,
                    &target.lease_name(),
                    &target.identity,
                    target.lease_seconds,
                ),
                pods: Vec::new(),
                replicas: 0,
                members,
            },
            receiver,
            state,
        )
    }

    fn publish(&self) {
        let pods: Vec<Member> = self
            .pods
            .iter()
            .filter(|p| !p.addr.is_empty())
            .map(|p| Member {
                addr: p.addr.clone(),
                draining: p.terminating,
            })
            .collect();
        self.members.send_if_modified(|m| {
            if m.pods == pods {
                return false;
            }
            m.version += 1;
            m.pods = pods;
            true
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Pool for KubeActuator {
    async fn prepare(&mut self) -> Result<bool, String> {
        let leading = self
            .lease
            .try_lead(now_ms())
            .await
            .map_err(|e| e.to_string())?;
        self.pods = self.pool.pods().await.map_err(|e| e.to_string())?;
        self.replicas = self.pool.replicas().await.map_err(|e| e.to_string())?;
        self.publish();
        Ok(leading)
    }

    fn records(&self) -> Vec<PodRecord> {
        self.pods
            .iter()
            .filter(|p| !p.addr.is_empty() && !p.terminating)
            .map(|p| PodRecord {
                addr: p.addr.clone(),
                pid: 0,
                started: p.started,
            })
            .collect()
    }

    fn replicas(&self) -> usize {
        self.replicas.max(0) as usize
    }

    async fn scale_to(&mut self, desired: usize, outstanding: &HashMap<String, f64>) {
        let desired = i32::try_from(desired).unwrap_or(i32::MAX);
        match self.pool.scale_to(desired, outstanding).await {
            Ok(()) => self.replicas = desired,
            Err(e) => tracing::error!(error = %e, "cannot scale the Deployment"),
        }
    }

    fn counters(&self) -> (u64, u64) {
        // Pods report drops in their own metrics (tenantscale_drain_dropped_total); the
        // ReplicaSet, not this actuator, restarts them.
        (0, 0)
    }

    fn adoptable(&self) -> Vec<PodRecord> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_and_the_state_are_named_after_the_deployment() {
        let t = KubeTarget::parse("tenantscale/tenantscale-pod", 8080, "a".into()).unwrap();
        assert_eq!(t.lease_name(), "tenantscale-pod-autoscaler");
        assert_eq!(t.state_name(), "tenantscale-pod-autoscaler-state");
        let e = KubeTarget::parse("tenantscale-pod", 8080, "a".into()).unwrap_err();
        assert!(e.starts_with("--kubernetes-deployment"), "{e}");
    }
}

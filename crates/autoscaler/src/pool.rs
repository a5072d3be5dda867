//! What the control loop acts on: local child processes ([`crate::local::LocalActuator`]) or a
//! Deployment on Kubernetes (`crate::kubernetes::KubeActuator`, feature `kubernetes`).

use crate::local::PodRecord;
use std::collections::HashMap;

pub trait Pool {
    /// Before each round. Local: replace the pods that exited. Kubernetes: renew (or take)
    /// the lease, list the pods, read the replicas. `Ok(true)` while this autoscaler may act;
    /// `Err` when the pool cannot be seen this round (no decision then).
    fn prepare(&mut self) -> impl Future<Output = Result<bool, String>> + Send;
    /// The pods to observe.
    fn records(&self) -> Vec<PodRecord>;
    /// The replicas the pool is asked to have now (Kubernetes: the scale's `spec.replicas`).
    fn replicas(&self) -> usize;
    /// Grows or shrinks the pool; shrinking takes the pods with the least `outstanding` work
    /// (by address) first.
    fn scale_to(
        &mut self,
        desired: usize,
        outstanding: &HashMap<String, f64>,
    ) -> impl Future<Output = ()> + Send;
    /// Queries dropped by draining pods, and pods replaced after exiting on their own.
    fn counters(&self) -> (u64, u64);
    /// The pods a restarted autoscaler should adopt (only the local pool has any).
    fn adoptable(&self) -> Vec<PodRecord>;
}

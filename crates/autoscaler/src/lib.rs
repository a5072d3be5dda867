//! The tenantscale autoscaler (`tenantscale autoscale`, and the control half of
//! `tenantscale up`): a loop that observes the pods (their `/metrics`), decides with the
//! catalog's policy from `tenantscale-core` (`tenant-aware`, or Kubernetes' HPA exactly),
//! and acts on the pool through an actuator (local child processes here; Kubernetes in
//! the `k8s` crate). It publishes the pool's membership for the gateway, serves
//! `/status` and `/metrics`, and persists its state so a restart neither forgets its
//! stabilization windows nor its pods.

pub mod control;
pub mod engine;
pub mod exposition;
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod local;
pub mod pool;
pub mod prometheus;
pub mod signals;
pub mod state;

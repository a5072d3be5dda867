//! tenantscale on Kubernetes. `render`: the catalog as manifests (`tenantscale render`).
//! `cluster` (feature `cluster`, kube-rs): the pool's actuator, leader election and state.

#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod render;

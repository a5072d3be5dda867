//! Scaling decisions: Kubernetes' HPA semantics exactly, and tenantscale's tenant-aware policy.
//!
//! Both policies end in the same [`behavior::Stage`]: stabilization windows, rate policies,
//! min/max and the conditions that explain them.

pub mod behavior;
pub mod hpa;
pub mod replay;
pub mod replica;
pub mod spec;
pub mod tenant_aware;

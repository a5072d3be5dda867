//! Fairness between tenants: who is admitted (gateway) and who is served next (pod).

pub mod admission;
pub mod scheduler;

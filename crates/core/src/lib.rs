//! Pure decision code shared by tenantscale's simulator, pods, gateway and autoscaler.
//!
//! Nothing here reads a clock, a socket or a file: time and observations are arguments, so
//! the live system and the simulator make the same decisions, and tests need no runtime.

pub mod auth;
pub mod cache;
pub mod catalog;
pub mod fairness;
pub mod hnsw;
pub mod quantity;
pub mod registry;
pub mod reload;
pub mod retrieval;
pub mod roster;
pub mod routing;
pub mod scaling;
pub mod text;
pub mod yaml;

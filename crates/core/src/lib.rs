//! Pure decision code shared by tenantscale's simulator, pods, gateway and autoscaler.
//!
//! Nothing here reads a clock, a socket or a file: time and observations are arguments, so
//! the live system and the simulator make the same decisions, and tests need no runtime.

pub mod catalog;
pub mod quantity;
pub mod scaling;
pub mod yaml;

//! Integration tests of tenantscale-core (one test binary for the crate).

mod catalog;
mod controller;
mod routing;
mod tenant_aware;

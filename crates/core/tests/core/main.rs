//! Integration tests of tenantscale-core (one test binary for the crate).

mod behavior_props;
mod catalog;
mod controller;
mod routing;
mod tenant_aware;

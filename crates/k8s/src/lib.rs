//! tenantscale on Kubernetes. `render`: the catalog as manifests (`tenantscale render`).

pub mod render;

//! tenantscale on Kubernetes. `render`: the catalog as manifests (`tenantscale render`).
//! `cluster` (feature `cluster`, kube-rs): the pool's actuator, leader election and state.

#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod render;

/// The autoscaler's Lease, named after the Deployment it scales. `render` creates it and the
/// autoscaler only reads and updates it (its Role names it): one name for both.
pub fn autoscaler_lease_name(deployment: &str) -> String {
    format!("{deployment}-autoscaler")
}

/// The ConfigMap holding the autoscaler's state, named like its Lease.
pub fn autoscaler_state_name(deployment: &str) -> String {
    format!("{deployment}-autoscaler-state")
}

/// `NAMESPACE/NAME` from a flag's value, or an error naming the flag.
pub fn namespaced(flag: &str, value: &str) -> Result<(String, String), String> {
    value
        .split_once('/')
        .filter(|(ns, name)| {
            tenantscale_core::catalog::is_dns1123_label(ns)
                && !name.is_empty()
                && !name.contains('/')
        })
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .ok_or_else(|| format!("{flag} {value:?}: expected NAMESPACE/NAME"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespaced_names_are_namespace_slash_name() {
        assert_eq!(
            super::namespaced("--x", "tenantscale/tenantscale-pod"),
            Ok(("tenantscale".into(), "tenantscale-pod".into()))
        );
        for bad in ["tenantscale-pod", "a/b/c", "Bad_NS/x", "ns/"] {
            let e = super::namespaced("--x", bad).unwrap_err();
            assert!(e.starts_with("--x "), "{e}");
        }
    }
}

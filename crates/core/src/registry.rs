//! The pool's membership as an actuator publishes it and the gateway follows it: which pods
//! exist, and which are being scaled down (the gateway stops sending to those at once,
//! before their own `/ready` turns 503).

use serde::{Deserialize, Serialize};

/// One pod of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// `host:port`.
    pub addr: String,
    /// Chosen for scale-down: no new requests.
    #[serde(default)]
    pub draining: bool,
}

/// The whole membership; `version` grows with every change, for watchers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    pub version: u64,
    pub pods: Vec<Member>,
}

/// A pod that a scale-down may choose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Queued + in-flight queries.
    pub outstanding: f64,
    /// When it started (any clock, the same for all).
    pub started: f64,
}

/// The order in which pods should leave a shrinking pool (indices into `candidates`): the
/// least outstanding work first (the shortest drain, the fewest queries at risk); among
/// equals the youngest, whose cache is the coldest. The local actuator stops pods in this
/// order; on Kubernetes it becomes each pod's `pod-deletion-cost`.
pub fn scale_down_order(candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        a.outstanding
            .total_cmp(&b.outstanding)
            .then(b.started.total_cmp(&a.started))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_leave_first_and_ties_go_youngest_first() {
        let c = |outstanding, started| Candidate {
            outstanding,
            started,
        };
        let pods = [c(3.0, 1.0), c(0.0, 1.0), c(0.0, 5.0), c(1.0, 9.0)];
        assert_eq!(scale_down_order(&pods), vec![2, 1, 3, 0]);
        assert!(scale_down_order(&[]).is_empty());
    }
}

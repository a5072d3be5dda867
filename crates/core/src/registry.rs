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

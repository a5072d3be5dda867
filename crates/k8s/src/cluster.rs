//! The pool on a Kubernetes cluster (feature `cluster`, kube-rs): read and change the
//! Deployment's replicas through its `scale` subresource, choose which pods a scale-down
//! removes (`controller.kubernetes.io/pod-deletion-cost`, which the ReplicaSet controller
//! honours and neither the HPA, KEDA nor Knative can set), lead through a Lease so two
//! autoscaler replicas are safe, and keep the engine's state in a ConfigMap.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, HashMap};
use tenantscale_core::registry::{Candidate, Member, Members, scale_down_order};

pub use kube::Client;

/// A client from the environment: the in-cluster ServiceAccount, or `KUBECONFIG` /
/// `~/.kube/config` outside a cluster.
pub async fn client() -> Result<kube::Client> {
    kube::Client::try_default()
        .await
        .map_err(|source| ClusterError::Api {
            what: "connecting to the Kubernetes API (in-cluster or KUBECONFIG)".into(),
            source,
        })
}

/// The annotation the ReplicaSet controller reads: lower cost, deleted first.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Read-modify-write attempts on a conflict (409) before giving up.
const CONFLICT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// 403: the ServiceAccount lacks a permission; says which.
    #[error(
        "forbidden: the autoscaler may not {verb} {resource} in namespace {namespace} ({message}); apply the Role that `tenantscale render` writes"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        message: String,
    },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ClusterError>;

/// Maps a kube error, naming the permission a 403 lacks.
fn api_error(
    e: kube::Error,
    verb: &'static str,
    resource: &'static str,
    namespace: &str,
) -> ClusterError {
    match e {
        kube::Error::Api(status) if status.is_forbidden() => ClusterError::Forbidden {
            verb,
            resource,
            namespace: namespace.to_string(),
            message: status.message.clone(),
        },
        source => ClusterError::Api {
            what: format!("{verb} {resource} in {namespace}"),
            source,
        },
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_conflict())
}

/// One pod of the Deployment as the autoscaler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPod {
    pub name: String,
    /// `podIP:port`; empty until the pod has an IP.
    pub addr: String,
    pub ready: bool,
    /// Being deleted (it drains).
    pub terminating: bool,
    /// Unix seconds of `status.startTime` (0 when not yet known).
    pub started: f64,
    pub deletion_cost: Option<i32>,
}

/// The Deployment whose replicas the autoscaler owns.
#[derive(Clone)]
pub struct KubePool {
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    namespace: String,
    name: String,
    port: u16,
}

impl KubePool {
    pub fn new(client: kube::Client, namespace: &str, name: &str, port: u16) -> Self {
        Self {
            deployments: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
        }
    }

    /// The Deployment's desired replicas (`scale.spec.replicas`).
    pub async fn replicas(&self) -> Result<i32> {
        let scale = self
            .deployments
            .get_scale(&self.name)
            .await
            .map_err(|e| api_error(e, "get", "deployments/scale", &self.namespace))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// The Deployment's pods (by its selector).
    pub async fn pods(&self) -> Result<Vec<PoolPod>> {
        let deployment = self
            .deployments
            .get(&self.name)
            .await
            .map_err(|e| api_error(e, "get", "deployments", &self.namespace))?;
        let labels = deployment
            .spec
            .and_then(|s| s.selector.match_labels)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "deployment {}/{} has no matchLabels selector",
                    self.namespace, self.name
                ))
            })?;
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "pods", &self.namespace))?;
        let mut pods: Vec<PoolPod> = list
            .items
            .into_iter()
            .map(|p| pool_pod(p, self.port))
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Sets the replicas to `desired`. Shrinking, it first ranks the pods with core's
    /// scale-down order (least outstanding work, then youngest) as their deletion cost, so
    /// the ReplicaSet removes exactly those. `outstanding` is by pod address.
    pub async fn scale_to(&self, desired: i32, outstanding: &HashMap<String, f64>) -> Result<()> {
        let current = self.replicas().await?;
        if desired < current {
            let pods: Vec<PoolPod> = self
                .pods()
                .await?
                .into_iter()
                .filter(|p| !p.terminating)
                .collect();
            let order = scale_down_order(
                &pods
                    .iter()
                    .map(|p| Candidate {
                        outstanding: outstanding.get(&p.addr).copied().unwrap_or(0.0),
                        started: p.started,
                    })
                    .collect::<Vec<_>>(),
            );
            for (rank, &i) in order.iter().enumerate() {
                let cost = rank as i32;
                if pods[i].deletion_cost != Some(cost) {
                    self.set_deletion_cost(&pods[i].name, cost).await?;
                }
            }
        }
        if desired != current {
            self.write_replicas(desired).await?;
        }
        Ok(())
    }

    async fn set_deletion_cost(&self, pod: &str, cost: i32) -> Result<()> {
        let patch =
            serde_json::json!({"metadata": {"annotations": {DELETION_COST: cost.to_string()}}});
        self.pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(e, "patch", "pods", &self.namespace))?;
        Ok(())
    }

    /// Read-modify-write of the scale subresource (its resourceVersion guards against a
    /// concurrent writer); a conflict is read again and retried.
    async fn write_replicas(&self, desired: i32) -> Result<()> {
        let mut attempt = 0;
        loop {
            let mut scale = self
                .deployments
                .get_scale(&self.name)
                .await
                .map_err(|e| api_error(e, "get", "deployments/scale", &self.namespace))?;
            scale.spec.get_or_insert_default().replicas = Some(desired);
            match self
                .deployments
                .replace_scale(&self.name, &PostParams::default(), &scale)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) && attempt + 1 < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::info!(attempt, "scale changed under us (409): reading it again");
                }
                Err(e) => return Err(api_error(e, "update", "deployments/scale", &self.namespace)),
            }
        }
    }
}

fn pool_pod(p: Pod, port: u16) -> PoolPod {
    let status = p.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let addr = status
        .pod_ip
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        })
        .unwrap_or_default();
    PoolPod {
        name: p.metadata.name.unwrap_or_default(),
        addr,
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        started: status
            .start_time
            .map_or(0.0, |t| t.0.as_millisecond() as f64 / 1000.0),
        deletion_cost: p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DELETION_COST))
            .and_then(|v| v.parse().ok()),
    }
}

/// Leadership through a `coordination.k8s.io/v1` Lease, as client-go's leader election does:
/// the holder renews it; anyone may take it once `renewTime + leaseDurationSeconds` has
/// passed; every write carries the resourceVersion it read, so of two candidates only one
/// wins (the other gets 409 and stays a follower).
#[derive(Clone)]
pub struct LeaderLease {
    leases: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration_seconds: i32,
}

impl LeaderLease {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration_seconds: i32,
    ) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration_seconds,
        }
    }

    /// Acquires or renews the lease at `now` (Unix milliseconds); `true` while leading.
    pub async fn try_lead(&self, now_ms: i64) -> Result<bool> {
        let now = micro_time(now_ms)?;
        let existing = self
            .leases
            .get_opt(&self.name)
            .await
            .map_err(|e| api_error(e, "get", "leases", &self.namespace))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another candidate created it first.
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(api_error(e, "create", "leases", &self.namespace)),
            };
        };
        let spec = lease.spec.get_or_insert_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expires_ms = spec.renew_time.as_ref().map_or(0, |t| t.0.as_millisecond())
            + i64::from(spec.lease_duration_seconds.unwrap_or(self.duration_seconds)) * 1000;
        if !mine && now_ms < expires_ms {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.duration_seconds);
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(api_error(e, "update", "leases", &self.namespace)),
        }
    }
}

fn micro_time(ms: i64) -> Result<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(MicroTime)
        .map_err(|e| ClusterError::Invalid(format!("time {ms} ms: {e}")))
}

/// The engine's state (a JSON document) in one ConfigMap key, so a restarted or newly
/// elected autoscaler continues the same stabilization windows.
#[derive(Clone)]
pub struct ConfigMapState {
    maps: Api<ConfigMap>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for ConfigMapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigMap {}/{}", self.namespace, self.name)
    }
}

/// The key of the state in the ConfigMap.
pub const STATE_KEY: &str = "state.json";

impl ConfigMapState {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            maps: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub async fn load(&self) -> Result<Option<String>> {
        let map = self
            .maps
            .get_opt(&self.name)
            .await
            .map_err(|e| api_error(e, "get", "configmaps", &self.namespace))?;
        Ok(map
            .and_then(|m| m.data)
            .and_then(|mut d| d.remove(STATE_KEY)))
    }

    /// Creates or replaces the ConfigMap's state; a conflict is read again and retried.
    pub async fn save(&self, state: &str) -> Result<()> {
        let mut attempt = 0;
        loop {
            let existing = self
                .maps
                .get_opt(&self.name)
                .await
                .map_err(|e| api_error(e, "get", "configmaps", &self.namespace))?;
            let data = BTreeMap::from([(STATE_KEY.to_string(), state.to_string())]);
            let result = match existing {
                Some(mut map) => {
                    map.data = Some(data);
                    self.maps
                        .replace(&self.name, &PostParams::default(), &map)
                        .await
                        .map_err(|e| (e, "update"))
                }
                None => {
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some(self.namespace.clone()),
                            ..ObjectMeta::default()
                        },
                        data: Some(data),
                        ..ConfigMap::default()
                    };
                    self.maps
                        .create(&PostParams::default(), &map)
                        .await
                        .map_err(|e| (e, "create"))
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err((e, _)) if is_conflict(&e) && attempt + 1 < CONFLICT_RETRIES => attempt += 1,
                Err((e, verb)) => return Err(api_error(e, verb, "configmaps", &self.namespace)),
            }
        }
    }
}

/// A Service's pods from its EndpointSlices, for the gateway: ready endpoints are members,
/// terminating ones are members marked draining (no new requests), the rest are left out.
#[derive(Clone)]
pub struct ServiceEndpoints {
    slices: Api<EndpointSlice>,
    namespace: String,
    service: String,
}

impl ServiceEndpoints {
    pub fn new(client: kube::Client, namespace: &str, service: &str) -> Self {
        Self {
            slices: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            service: service.to_string(),
        }
    }

    /// The members now, sorted by address.
    pub async fn members(&self) -> Result<Vec<Member>> {
        let list = self
            .slices
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| api_error(e, "list", "endpointslices", &self.namespace))?;
        Ok(members_of(list.items.iter()))
    }

    fn selector(&self) -> String {
        format!("kubernetes.io/service-name={}", self.service)
    }

    /// Watches the Service's EndpointSlices and publishes the members on `into` after every
    /// change, until the receivers are gone. A broken watch is re-listed with backoff (the
    /// last membership stays meanwhile).
    pub async fn follow(self, into: tokio::sync::watch::Sender<Members>) {
        use futures_util::StreamExt;
        use kube::runtime::WatchStreamExt;
        use kube::runtime::watcher::{self, Event};
        let config = watcher::Config::default().labels(&self.selector());
        let mut events =
            std::pin::pin!(watcher::watcher(self.slices.clone(), config).default_backoff());
        // Slices by name; during a (re)list the new set is gathered apart, then swapped in.
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut relisting: Option<BTreeMap<String, EndpointSlice>> = None;
        while !into.is_closed() {
            let Some(event) = events.next().await else {
                return;
            };
            let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
            match event {
                Ok(Event::Init) => relisting = Some(BTreeMap::new()),
                Ok(Event::InitApply(slice)) => {
                    relisting
                        .get_or_insert_default()
                        .insert(name(&slice), slice);
                    continue;
                }
                Ok(Event::InitDone) => slices = relisting.take().unwrap_or_default(),
                Ok(Event::Apply(slice)) => {
                    slices.insert(name(&slice), slice);
                }
                Ok(Event::Delete(slice)) => {
                    slices.remove(&name(&slice));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching the pods' EndpointSlices");
                    continue;
                }
            }
            if relisting.is_some() {
                continue;
            }
            let pods = members_of(slices.values());
            into.send_if_modified(|m| {
                if m.pods == pods {
                    return false;
                }
                m.version += 1;
                m.pods = pods;
                true
            });
        }
    }
}

/// Ready endpoints are members, terminating ones members marked draining, the rest wait;
/// sorted by address.
fn members_of<'a>(slices: impl Iterator<Item = &'a EndpointSlice>) -> Vec<Member> {
    let mut members = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let Some(port) = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .or(ports.first())
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let terminating = conditions.terminating == Some(true);
            // A missing `ready` means ready (the API's rule).
            if !terminating && conditions.ready == Some(false) {
                continue;
            }
            if let Some(ip) = endpoint.addresses.first() {
                let addr = if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                };
                members.push(Member {
                    addr,
                    draining: terminating,
                });
            }
        }
    }
    members.sort_by(|a, b| a.addr.cmp(&b.addr));
    members.dedup_by(|a, b| a.addr == b.addr);
    members
}

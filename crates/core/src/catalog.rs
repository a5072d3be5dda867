//! The tenant catalog (`tenantscale.yaml`): tiers, tenants, the pod pool, cluster capacity and
//! cost. Parsed from YAML or JSON, defaulted, and validated; every problem names its field
//! path and line, and all problems are reported at once.
//!
//! ```yaml
//! cluster: {cores: 40, memory: 80Gi}
//! tiers:       # share: the tier's guaranteed slice of the cluster, split among its tenants
//!              # maxShare: the most any one tenant of the tier may use of the pool
//!   gold: {weight: 3, share: 0.27, maxShare: 0.30, rateLimit: {rps: 200, burst: 400},
//!          quota: {documents: 100000, bytes: 256Mi}}   # storage, per tenant of the tier
//! tenants:
//!   - {id: media-1, tier: gold, apiKeySha256: "<64 hex>", quota: {bytes: 512Mi}}
//! pool: {minReplicas: 3, maxReplicas: 20, slotsPerPod: 8, queuePerTenant: 100}
//! cost: {currency: INR, podHour: 150}
//! ```

use crate::quantity::Quantity;
use crate::scaling::spec::{BehaviorSpec, ControllerSettings, HpaConfig, HpaSpec, MetricSpec};
use crate::scaling::tenant_aware::TenantAwareConfig;
use crate::yaml;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The default cap on one tenant's share of the pool (the seed's "30 % rule").
pub const DEFAULT_MAX_SHARE: f64 = 0.30;
/// Capacity the tiers should leave for system pods and bursts.
pub const RECOMMENDED_HEADROOM: f64 = 0.10;

// ---- The file as written -------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CatalogFile {
    cluster: ClusterFile,
    tiers: IndexMap<String, TierFile>,
    tenants: Vec<TenantFile>,
    pool: PoolFile,
    #[serde(default)]
    cost: CostFile,
    /// Written or not: a catalog that has the section must say how its replicas share
    /// state (`render` asks the same of one that has not).
    #[serde(default)]
    kubernetes: Option<KubernetesFile>,
}

/// `kubernetes`: how `tenantscale render` deploys the catalog.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KubernetesFile {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    pod_resources: Option<ResourcesFile>,
    #[serde(default)]
    anti_affinity: Option<AntiAffinity>,
    #[serde(default)]
    gateway_replicas: Option<i32>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    drain_timeout_seconds: Option<u32>,
    #[serde(default)]
    store: Option<SecretKey>,
    #[serde(default)]
    redis: Option<Redis>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResourcesFile {
    requests: CpuMemory,
    limits: CpuMemory,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterFile {
    cores: f64,
    memory: Quantity,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TierFile {
    #[serde(default)]
    weight: Option<u32>,
    share: f64,
    #[serde(default)]
    max_share: Option<f64>,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    max_share_override: Option<bool>,
    #[serde(default)]
    slo_ms: Option<u32>,
    #[serde(default)]
    quota: Option<QuotaFile>,
}

/// `quota`: a tier's storage quota for each of its tenants, or a tenant's own; a field left
/// out is the tier's (for a tier: the default's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuotaFile {
    #[serde(default)]
    documents: Option<u64>,
    #[serde(default)]
    bytes: Option<Quantity>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantFile {
    id: String,
    tier: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    max_share: Option<f64>,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    max_share_override: Option<bool>,
    #[serde(default)]
    slo_ms: Option<u32>,
    #[serde(default)]
    api_key_sha256: Option<String>,
    #[serde(default)]
    silo: bool,
    #[serde(default)]
    quota: Option<QuotaFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolFile {
    #[serde(default = "default_min_replicas")]
    min_replicas: i32,
    max_replicas: i32,
    #[serde(default = "default_slots")]
    slots_per_pod: u32,
    #[serde(default = "default_queue")]
    queue_per_tenant: u32,
    #[serde(default)]
    policy: PolicyKind,
    #[serde(default)]
    tenant_aware: TenantAwareFile,
    #[serde(default)]
    hpa: Option<PoolHpaFile>,
}

/// `pool.tenantAware`: the tenant-aware policy's knobs (see [`TenantAwareConfig`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantAwareFile {
    #[serde(default)]
    target_utilization: Option<f64>,
    #[serde(default)]
    stable_window_seconds: Option<f64>,
    #[serde(default)]
    panic_window_seconds: Option<f64>,
    #[serde(default)]
    panic_threshold: Option<f64>,
    #[serde(default)]
    behavior: Option<BehaviorSpec>,
}

/// `pool.hpa`: an autoscaling/v2 spec without min/max (those are the pool's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolHpaFile {
    #[serde(default)]
    metrics: Vec<MetricSpec>,
    #[serde(default)]
    behavior: Option<BehaviorSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CostFile {
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default = "default_pod_hour")]
    pod_hour: f64,
}

impl Default for CostFile {
    fn default() -> Self {
        Self {
            currency: default_currency(),
            pod_hour: default_pod_hour(),
        }
    }
}

fn default_min_replicas() -> i32 {
    3
}
fn default_slots() -> u32 {
    8
}
fn default_queue() -> u32 {
    100
}
fn default_currency() -> String {
    "INR".into()
}
fn default_pod_hour() -> f64 {
    150.0
}
const DEFAULT_WEIGHT: u32 = 1;
const DEFAULT_SLO_MS: u32 = 1000;

/// The storage quota of a tier that sets none. Bounded by default, so that no tenant can fill
/// the store unless the catalog says so: the quota counts a document's text and its chunks'
/// texts and vectors, so a chunk of 800 ASCII characters takes 800 + 800 + 1,536 = 3,136
/// bytes and 64 MiB holds about 21,000 chunks, under the default `--hnsw-threshold` of 50,000,
/// and an eighth of the default `--cache-bytes` (512 MiB), so a tenant at its quota is still
/// served from the cache beside seven others.
pub const DEFAULT_STORAGE_QUOTA: StorageQuota = StorageQuota {
    documents: 10_000,
    bytes: 64 << 20,
};
/// Most documents a quota may allow.
const MAX_QUOTA_DOCUMENTS: u64 = 1_000_000_000;
/// Bounds of a quota's bytes: 1 KiB to 1 TiB.
const QUOTA_BYTES: std::ops::RangeInclusive<i64> = 1 << 10..=1 << 40;

// ---- The validated catalog -------------------------------------------------------------

/// A token-bucket rate limit: `rps` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub rps: f64,
    pub burst: u32,
}

/// What a tenant may keep in the store. `bytes` counts what the store keeps for it: each
/// document's id, text and metadata (as JSON), and each of its chunks' text and vector, all in
/// bytes (UTF-8 text, 4 bytes a vector component), without the database's own overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StorageQuota {
    pub documents: u64,
    pub bytes: u64,
}

/// How the pool is scaled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// tenantscale's policy (default).
    #[default]
    TenantAware,
    /// A Kubernetes autoscaling/v2 HPA, exactly.
    Hpa,
}

/// Cluster capacity the quotas divide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cluster {
    pub cores: f64,
    pub memory_bytes: i64,
}

/// A service tier. Defaults: weight 1, maxShare 0.30, no rate limit, SLO 1000 ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Weighted-fair-queuing weight.
    pub weight: u32,
    /// The whole tier's guaranteed slice of the cluster.
    pub share: f64,
    /// The most one tenant of the tier may use of the pool.
    pub max_share: f64,
    pub rate_limit: Option<RateLimit>,
    /// Latency objective for a query, in milliseconds.
    pub slo_ms: u32,
    /// Storage quota of each of the tier's tenants.
    pub quota: StorageQuota,
}

/// A tenant, with its tier's fields and its own overrides resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// DNS-1123 label.
    pub id: String,
    /// Index into [`Catalog::tiers`].
    pub tier: usize,
    pub weight: u32,
    pub max_share: f64,
    pub rate_limit: Option<RateLimit>,
    pub slo_ms: u32,
    /// SHA-256 of the tenant's API key; `None`: the gateway rejects the tenant.
    pub api_key_sha256: Option<[u8; 32]>,
    /// Deployed apart on Kubernetes: its own namespace, quota and pods (`tenantscale
    /// render`); locally it is served like any tenant.
    pub silo: bool,
    /// What the tenant may keep in the store.
    pub quota: StorageQuota,
}

/// The shared pod pool. Defaults: minReplicas 3, slotsPerPod 8, queuePerTenant 100,
/// policy tenant-aware.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Queries one pod serves at once.
    pub slots_per_pod: u32,
    /// Bound of each tenant's queue in each pod; beyond it, 429.
    pub queue_per_tenant: u32,
    pub policy: PolicyKind,
    /// The tenant-aware policy, with `pool.tenantAware` applied.
    pub tenant_aware: TenantAwareConfig,
    /// The HPA (defaulted), used by the `hpa` policy.
    pub hpa: HpaConfig,
    /// The behavior block as written, for renderers.
    pub behavior: Option<BehaviorSpec>,
    /// The metrics as written, for renderers.
    pub metrics: Vec<MetricSpec>,
}

/// Price of capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub currency: String,
    pub pod_hour: f64,
}

/// CPU and memory of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuMemory {
    pub cpu: Quantity,
    pub memory: Quantity,
}

/// How the pool's pods avoid sharing a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AntiAffinity {
    /// At most one pod per node: the pool can never outgrow the nodes.
    Required,
    /// Spread when possible, share nodes when the pool outgrows them.
    #[default]
    Preferred,
}

/// One key of a Kubernetes Secret (in the namespace of what reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    pub secret: String,
    pub key: String,
}

/// The Redis the gateway replicas share (and the pods' warm-up flags): `deploy`, or
/// `{secret, key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redis {
    /// `render` deploys one next to the gateways.
    Deploy,
    /// An existing Redis: its `redis://` or `rediss://` URL is in this Secret's key.
    Secret(SecretKey),
}

impl<'de> Deserialize<'de> for Redis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Redis;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("deploy, or {secret, key} (a Secret key holding a redis:// URL)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Redis, E> {
                match v {
                    "deploy" => Ok(Redis::Deploy),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            // A map is the Secret's key, with SecretKey's own errors (a missing or unknown
            // field by name) rather than an untagged enum's "no variant matched".
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Redis, A::Error> {
                SecretKey::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Redis::Secret)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `kubernetes`: what `tenantscale render` needs beyond the pool. Defaults: namespace
/// `tenantscale`, image `tenantscale:latest`, pods requesting 1 CPU / 2Gi and limited to 2 CPU
/// / 2Gi, preferred anti-affinity, 2 gateway replicas, no Ingress, a 30 s drain.
#[derive(Debug, Clone, PartialEq)]
pub struct Kubernetes {
    pub namespace: String,
    pub image: String,
    pub requests: CpuMemory,
    pub limits: CpuMemory,
    pub anti_affinity: AntiAffinity,
    pub gateway_replicas: i32,
    /// An Ingress for this host name.
    pub host: Option<String>,
    pub drain_timeout_seconds: u32,
    /// The Secret key holding the `postgres://` URL every pod shares; required once the pool
    /// can hold more than one pod.
    pub store: Option<SecretKey>,
    /// Required with more than one gateway.
    pub redis: Option<Redis>,
}

/// A validated catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub cluster: Cluster,
    pub tiers: Vec<Tier>,
    pub tenants: Vec<Tenant>,
    pub pool: Pool,
    pub cost: Cost,
    pub kubernetes: Kubernetes,
}

/// One thing wrong with a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {line}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A catalog that failed to load: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A catalog that loaded, and what in it deserves a second look.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub catalog: Catalog,
    pub warnings: Vec<Problem>,
}

/// Collects problems with their lines.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&self, path: &str, message: String) -> Problem {
        Problem {
            path: path.to_string(),
            line: yaml::line_of_nearest(self.text, path),
            message,
        }
    }
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let p = self.problem(path, message.into());
        self.problems.push(p);
    }
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let p = self.problem(path, message.into());
        self.warnings.push(p);
    }
    fn share(&mut self, path: &str, value: f64) {
        if !(value > 0.0 && value <= 1.0) {
            self.error(path, format!("{value} is not in (0, 1]"));
        }
    }
    fn max_share(&mut self, path: &str, value: f64, allowed: bool) {
        self.share(path, value);
        if value > DEFAULT_MAX_SHARE + 1e-12 && !allowed {
            self.error(
                path,
                format!(
                    "{value} exceeds the default cap of {DEFAULT_MAX_SHARE}; set maxShareOverride: true to allow it"
                ),
            );
        }
    }
    fn weight(&mut self, path: &str, value: u32) {
        if !(1..=1000).contains(&value) {
            self.error(path, format!("{value} is not in [1, 1000]"));
        }
    }
    /// `quota` over `base`, bounds checked.
    fn quota(&mut self, path: &str, quota: &Option<QuotaFile>, base: StorageQuota) -> StorageQuota {
        let Some(q) = quota else { return base };
        let documents = q.documents.unwrap_or(base.documents);
        if q.documents.is_some() && !(1..=MAX_QUOTA_DOCUMENTS).contains(&documents) {
            self.error(
                &format!("{path}.documents"),
                format!("{documents} is not in [1, {MAX_QUOTA_DOCUMENTS}]"),
            );
        }
        let bytes = match &q.bytes {
            None => base.bytes,
            Some(b) if QUOTA_BYTES.contains(&b.value()) => b.value() as u64,
            Some(b) => {
                self.error(
                    &format!("{path}.bytes"),
                    format!("{b} is not in [1Ki, 1Ti]"),
                );
                base.bytes
            }
        };
        StorageQuota { documents, bytes }
    }
    fn rate_limit(&mut self, path: &str, limit: &Option<RateLimit>) {
        if let Some(l) = limit {
            if !(l.rps > 0.0 && l.rps.is_finite()) {
                self.error(&format!("{path}.rps"), format!("{} must be > 0", l.rps));
            }
            if l.burst == 0 {
                self.error(&format!("{path}.burst"), "must be >= 1");
            }
        }
    }
}

/// Whether `key` may name a key of a Secret: `[-._a-zA-Z0-9]`, at most 253, not `.`, `..`
/// nor starting with `..` (Kubernetes' IsConfigMapKey).
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && key != "."
        && !key.starts_with("..")
}

/// Whether `name` is a DNS-1123 subdomain (the names of Secrets): labels joined by `.`, at
/// most 253.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

fn check_secret_key(c: &mut Checker, path: &str, s: &SecretKey) {
    if !is_dns1123_subdomain(&s.secret) {
        c.error(
            &format!("{path}.secret"),
            format!("{:?} is not a Secret name (a DNS-1123 subdomain)", s.secret),
        );
    }
    if !is_secret_key(&s.key) {
        c.error(
            &format!("{path}.key"),
            format!(
                "{:?} is not a Secret key (letters, digits, '-', '_' and '.', at most 253)",
                s.key
            ),
        );
    }
}

/// What the deployment's replicas would not share without these fields: the store once the
/// pool can hold more than one pod (each pod would keep its own documents, gone with it),
/// Redis once there is more than one gateway (each would enforce every limit alone).
fn unshared(k: &Kubernetes, max_replicas: i32) -> Vec<(&'static str, String)> {
    let mut missing = Vec::new();
    if k.store.is_none() && max_replicas > 1 {
        missing.push((
            "kubernetes.store",
            format!(
                "required when pool.maxReplicas > 1 (it is {max_replicas}): the Secret and key of the postgres:// URL every pod shares, e.g. {{secret: tenantscale-store, key: url}}; without it each pod would keep its documents alone, and lose them with its volume"
            ),
        ));
    }
    if k.redis.is_none() && k.gateway_replicas > 1 {
        missing.push((
            "kubernetes.redis",
            format!(
                "required when kubernetes.gatewayReplicas > 1 (it is {}): deploy (render one), or {{secret, key}} of a redis:// URL; without it each gateway would enforce every tenant's limits alone",
                k.gateway_replicas
            ),
        ));
    }
    missing
}

/// `kubernetes`, defaulted and checked.
fn kubernetes_config(c: &mut Checker, k: &KubernetesFile) -> Kubernetes {
    let namespace = k.namespace.clone().unwrap_or_else(|| "tenantscale".into());
    if !is_dns1123_label(&namespace) {
        c.error(
            "kubernetes.namespace",
            format!("{namespace:?} is not a DNS-1123 label"),
        );
    }
    let image = k
        .image
        .clone()
        .unwrap_or_else(|| "tenantscale:latest".into());
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        c.error(
            "kubernetes.image",
            format!("{image:?} is not an image reference"),
        );
    }
    let quantity = |s: &str| Quantity::parse(s).expect("a valid default quantity");
    let (requests, limits) = match &k.pod_resources {
        Some(r) => (r.requests.clone(), r.limits.clone()),
        None => (
            CpuMemory {
                cpu: quantity("1"),
                memory: quantity("2Gi"),
            },
            CpuMemory {
                cpu: quantity("2"),
                memory: quantity("2Gi"),
            },
        ),
    };
    for (name, request, limit) in [
        ("cpu", &requests.cpu, &limits.cpu),
        ("memory", &requests.memory, &limits.memory),
    ] {
        if request.milli_value() <= 0 {
            c.error(
                &format!("kubernetes.podResources.requests.{name}"),
                "must be > 0",
            );
        }
        if limit.milli_value() < request.milli_value() {
            c.error(
                &format!("kubernetes.podResources.limits.{name}"),
                format!("{limit} is less than the request ({request})"),
            );
        }
    }
    let gateway_replicas = k.gateway_replicas.unwrap_or(2);
    if !(1..=100).contains(&gateway_replicas) {
        c.error(
            "kubernetes.gatewayReplicas",
            format!("{gateway_replicas} is not in [1, 100]"),
        );
    }
    if let Some(host) = &k.host
        && (host.is_empty() || host.len() > 253 || !host.split('.').all(is_dns1123_label))
    {
        c.error(
            "kubernetes.host",
            format!("{host:?} is not a DNS host name"),
        );
    }
    let drain_timeout_seconds = k.drain_timeout_seconds.unwrap_or(30);
    if !(1..=3600).contains(&drain_timeout_seconds) {
        c.error(
            "kubernetes.drainTimeoutSeconds",
            format!("{drain_timeout_seconds} is not in [1, 3600]"),
        );
    }
    if let Some(store) = &k.store {
        check_secret_key(c, "kubernetes.store", store);
    }
    if let Some(Redis::Secret(redis)) = &k.redis {
        check_secret_key(c, "kubernetes.redis", redis);
    }
    Kubernetes {
        namespace,
        image,
        requests,
        limits,
        anti_affinity: k.anti_affinity.unwrap_or_default(),
        gateway_replicas,
        host: k.host.clone(),
        drain_timeout_seconds,
        store: k.store.clone(),
        redis: k.redis.clone(),
    }
}

/// Whether `id` is a DNS-1123 label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(id: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|c| alnum(c) || c == b'-')
        && alnum(id.as_bytes()[0])
        && alnum(id.as_bytes()[id.len() - 1])
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

impl Catalog {
    /// Parses, defaults and validates a catalog from YAML or JSON text.
    pub fn parse(text: &str) -> Result<Loaded, CatalogError> {
        let file: CatalogFile = yaml::from_str(text).map_err(|e| CatalogError {
            problems: vec![Problem {
                path: if e.path.is_empty() {
                    "(document)".into()
                } else {
                    e.path
                },
                line: e.line,
                message: e.message,
            }],
        })?;
        let mut c = Checker {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };

        if !(file.cluster.cores > 0.0 && file.cluster.cores.is_finite()) {
            c.error(
                "cluster.cores",
                format!("{} must be > 0", file.cluster.cores),
            );
        }
        let memory_bytes = file.cluster.memory.value();
        if memory_bytes <= 0 {
            c.error("cluster.memory", "must be > 0");
        }

        if file.tiers.is_empty() {
            c.error("tiers", "at least one tier is required");
        }
        let mut tiers = Vec::with_capacity(file.tiers.len());
        for (name, t) in &file.tiers {
            let path = format!("tiers.{name}");
            if !is_dns1123_label(name) {
                c.error(&path, format!("tier name {name:?} is not a DNS-1123 label"));
            }
            let weight = t.weight.unwrap_or(DEFAULT_WEIGHT);
            c.weight(&format!("{path}.weight"), weight);
            c.share(&format!("{path}.share"), t.share);
            let max_share = t.max_share.unwrap_or(DEFAULT_MAX_SHARE);
            c.max_share(
                &format!("{path}.maxShare"),
                max_share,
                t.max_share_override.unwrap_or(false),
            );
            c.rate_limit(&format!("{path}.rateLimit"), &t.rate_limit);
            let quota = c.quota(&format!("{path}.quota"), &t.quota, DEFAULT_STORAGE_QUOTA);
            tiers.push(Tier {
                name: name.clone(),
                weight,
                share: t.share,
                max_share,
                rate_limit: t.rate_limit,
                slo_ms: t.slo_ms.unwrap_or(DEFAULT_SLO_MS),
                quota,
            });
        }
        let total_share: f64 = tiers.iter().map(|t| t.share).sum();
        if total_share > 1.0 + 1e-9 {
            c.error(
                "tiers",
                format!("shares sum to {total_share:.3}, more than the whole cluster"),
            );
        } else if 1.0 - total_share < RECOMMENDED_HEADROOM - 1e-9 {
            c.warn(
                "tiers",
                format!(
                    "shares sum to {:.0} %, leaving {:.0} % headroom for system pods and bursts (recommended: at least {:.0} %)",
                    total_share * 100.0,
                    (1.0 - total_share) * 100.0,
                    RECOMMENDED_HEADROOM * 100.0
                ),
            );
        }

        let mut tenants: Vec<Tenant> = Vec::with_capacity(file.tenants.len());
        let mut seen = std::collections::HashMap::new();
        for (i, t) in file.tenants.iter().enumerate() {
            let path = format!("tenants[{i}]");
            if !is_dns1123_label(&t.id) {
                c.error(&format!("{path}.id"), format!("{:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)", t.id));
            }
            if let Some(first) = seen.insert(t.id.clone(), i) {
                c.error(
                    &format!("{path}.id"),
                    format!("duplicate tenant id {:?} (first at tenants[{first}])", t.id),
                );
            }
            let Some(tier_index) = tiers.iter().position(|tier| tier.name == t.tier) else {
                c.error(
                    &format!("{path}.tier"),
                    format!("unknown tier {:?}", t.tier),
                );
                continue;
            };
            let tier = &tiers[tier_index];
            let weight = t.weight.unwrap_or(tier.weight);
            if t.weight.is_some() {
                c.weight(&format!("{path}.weight"), weight);
            }
            let max_share = t.max_share.unwrap_or(tier.max_share);
            if t.max_share.is_some() {
                let allowed = t
                    .max_share_override
                    .or(file.tiers[tier_index].max_share_override)
                    .unwrap_or(false);
                c.max_share(&format!("{path}.maxShare"), max_share, allowed);
            }
            c.rate_limit(&format!("{path}.rateLimit"), &t.rate_limit);
            let quota = c.quota(&format!("{path}.quota"), &t.quota, tier.quota);
            let api_key_sha256 = match &t.api_key_sha256 {
                None => {
                    c.warn(
                        &format!("{path}.id"),
                        format!(
                            "tenant {:?} has no apiKeySha256: gateways refuse its API-key requests (only one with --trust-tenant-header serves it)",
                            t.id
                        ),
                    );
                    None
                }
                Some(hex) => match parse_hex32(hex) {
                    Some(h) => Some(h),
                    None => {
                        c.error(
                            &format!("{path}.apiKeySha256"),
                            "must be 64 hexadecimal digits (the SHA-256 of the key)",
                        );
                        None
                    }
                },
            };
            tenants.push(Tenant {
                id: t.id.clone(),
                tier: tier_index,
                weight,
                max_share,
                rate_limit: t.rate_limit.or(tier.rate_limit),
                slo_ms: t.slo_ms.unwrap_or(tier.slo_ms),
                api_key_sha256,
                silo: t.silo,
                quota,
            });
        }
        for (i, tier) in tiers.iter().enumerate() {
            if !tenants.iter().any(|t| t.tier == i) {
                c.warn(&format!("tiers.{}", tier.name), "no tenant is in this tier");
            }
        }

        let p = &file.pool;
        if p.min_replicas < 1 {
            c.error(
                "pool.minReplicas",
                format!("{} must be >= 1", p.min_replicas),
            );
        }
        if p.max_replicas < p.min_replicas.max(1) {
            c.error(
                "pool.maxReplicas",
                format!(
                    "{} must be >= minReplicas ({})",
                    p.max_replicas, p.min_replicas
                ),
            );
        }
        if !(1..=1024).contains(&p.slots_per_pod) {
            c.error(
                "pool.slotsPerPod",
                format!("{} is not in [1, 1024]", p.slots_per_pod),
            );
        }
        if !(1..=100_000).contains(&p.queue_per_tenant) {
            c.error(
                "pool.queuePerTenant",
                format!("{} is not in [1, 100000]", p.queue_per_tenant),
            );
        }
        let tenant_aware = tenant_aware_config(&mut c, p);
        if p.policy == PolicyKind::Hpa && p.hpa.as_ref().is_none_or(|h| h.metrics.is_empty()) {
            c.error("pool.hpa.metrics", "required when pool.policy is hpa");
        }
        let hpa_file = p.hpa.clone().unwrap_or_default();
        let spec = HpaSpec {
            min_replicas: Some(p.min_replicas),
            max_replicas: p.max_replicas,
            metrics: hpa_file.metrics.clone(),
            behavior: hpa_file.behavior.clone(),
        };
        let hpa = match spec.resolve(ControllerSettings::default()) {
            Ok(h) => Some(h),
            Err(e) => {
                if !e.path.ends_with("Replicas") {
                    c.error(&format!("pool.hpa.{}", e.path), e.message);
                }
                None
            }
        };

        if !(file.cost.pod_hour >= 0.0 && file.cost.pod_hour.is_finite()) {
            c.error(
                "cost.podHour",
                format!("{} must be >= 0", file.cost.pod_hour),
            );
        }
        if file.cost.currency.trim().is_empty() {
            c.error("cost.currency", "must not be empty");
        }
        let kubernetes = kubernetes_config(&mut c, &file.kubernetes.clone().unwrap_or_default());
        if file.kubernetes.is_some() {
            for (path, message) in unshared(&kubernetes, p.max_replicas) {
                c.error(path, message);
            }
        }

        match (hpa, tenant_aware) {
            (Some(hpa), Some(tenant_aware)) if c.problems.is_empty() => Ok(Loaded {
                catalog: Catalog {
                    cluster: Cluster {
                        cores: file.cluster.cores,
                        memory_bytes,
                    },
                    tiers,
                    tenants,
                    pool: Pool {
                        min_replicas: p.min_replicas,
                        max_replicas: p.max_replicas,
                        slots_per_pod: p.slots_per_pod,
                        queue_per_tenant: p.queue_per_tenant,
                        policy: p.policy,
                        tenant_aware,
                        hpa,
                        behavior: hpa_file.behavior,
                        metrics: hpa_file.metrics,
                    },
                    cost: Cost {
                        currency: file.cost.currency,
                        pod_hour: file.cost.pod_hour,
                    },
                    kubernetes,
                },
                warnings: c.warnings,
            }),
            _ => Err(CatalogError {
                problems: c.problems,
            }),
        }
    }

    /// The tier a tenant belongs to.
    pub fn tier_of(&self, tenant: &Tenant) -> &Tier {
        &self.tiers[tenant.tier]
    }
}

/// Builds and checks `pool.tenantAware`.
fn tenant_aware_config(c: &mut Checker<'_>, p: &PoolFile) -> Option<TenantAwareConfig> {
    let t = &p.tenant_aware;
    let behavior = t
        .behavior
        .clone()
        .unwrap_or_else(TenantAwareConfig::default_behavior);
    let mut cfg = match TenantAwareConfig::with_behavior(
        p.min_replicas,
        p.max_replicas.max(1),
        p.slots_per_pod.max(1),
        &behavior,
    ) {
        Ok(cfg) => cfg,
        Err(e) => {
            if !e.path.ends_with("Replicas") {
                c.error(&format!("pool.tenantAware.{}", e.path), e.message);
            }
            return None;
        }
    };
    let fields = [
        (
            "targetUtilization",
            t.target_utilization,
            &mut cfg.target_utilization,
            0.0,
            1.0,
        ),
        (
            "stableWindowSeconds",
            t.stable_window_seconds,
            &mut cfg.stable_window_seconds,
            0.0,
            3600.0,
        ),
        (
            "panicWindowSeconds",
            t.panic_window_seconds,
            &mut cfg.panic_window_seconds,
            0.0,
            3600.0,
        ),
        (
            "panicThreshold",
            t.panic_threshold,
            &mut cfg.panic_threshold,
            0.0,
            100.0,
        ),
    ];
    for (name, given, slot, low, high) in fields {
        if let Some(v) = given {
            if v > low && v <= high {
                *slot = v;
            } else {
                c.error(
                    &format!("pool.tenantAware.{name}"),
                    format!("{v} is not in ({low}, {high}]"),
                );
            }
        }
    }
    if cfg.panic_window_seconds > cfg.stable_window_seconds {
        c.error(
            "pool.tenantAware.panicWindowSeconds",
            "must not exceed stableWindowSeconds",
        );
    }
    Some(cfg)
}

// ---- Quotas ------------------------------------------------------------------------------

/// CPU, memory and pods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Cores.
    pub cpu: f64,
    pub memory_bytes: i64,
    pub pods: i64,
}

/// A tier's guaranteed slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TierQuota {
    pub name: String,
    pub tenants: usize,
    pub share: f64,
    #[serde(flatten)]
    pub resources: Resources,
    /// Storage quota of each of its tenants.
    pub storage: StorageQuota,
}

/// One tenant's guaranteed and maximum resources.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantQuota {
    pub id: String,
    pub tier: String,
    pub guaranteed: Resources,
    pub max: Resources,
    pub storage: StorageQuota,
}

/// What the cluster capacity implies per tier and per tenant (`tenantscale check`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaTable {
    /// Fraction of the cluster no tier is guaranteed.
    pub headroom: f64,
    pub tiers: Vec<TierQuota>,
    pub tenants: Vec<TenantQuota>,
}

/// Rounds to millicores / 1e-9, so `40 × 0.3` prints as 12, not 12.000000000000002.
fn tidy(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// Whole pods, rounding a fraction up (the seed: "0.6 pods, round up to 1").
fn pods_up(x: f64) -> i64 {
    tidy(x).ceil() as i64
}

impl Catalog {
    /// Fields a running process cannot change, with their values: a pod sizes its slots and
    /// queues at start. A reload that changes one logs it; `render` rolls the pods on them.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        vec![
            ("pool.slotsPerPod", self.pool.slots_per_pod.to_string()),
            (
                "pool.queuePerTenant",
                self.pool.queue_per_tenant.to_string(),
            ),
        ]
    }

    /// SHA-256 (hex) of [`Catalog::restart_only`]: `render` annotates the pod templates with
    /// it, so the pods roll when one of those fields changes and keep running (and reload)
    /// when any other does.
    pub fn restart_only_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for (field, value) in self.restart_only() {
            hash.update(format!("{field}={value}\n"));
        }
        hex::encode(hash.finalize())
    }

    /// What `render` refuses: a deployment whose replicas would not share their store or
    /// their Redis. Loading checks the same when the catalog has a `kubernetes` section; a
    /// catalog without one is deployed with the defaults, and must still say this.
    pub fn unshared(&self) -> Vec<Problem> {
        unshared(&self.kubernetes, self.pool.max_replicas)
            .into_iter()
            .map(|(path, message)| Problem {
                path: path.into(),
                line: None,
                message,
            })
            .collect()
    }

    /// The restart-only fields whose values differ in `new`.
    pub fn restart_only_changes(&self, new: &Catalog) -> Vec<&'static str> {
        self.restart_only()
            .into_iter()
            .zip(new.restart_only())
            .filter(|(old, new)| old.1 != new.1)
            .map(|(old, _)| old.0)
            .collect()
    }

    /// This catalog with the restart-only fields of `running`: what a process that started on
    /// `running` applies when it reloads this one.
    pub fn keeping_restart_only(mut self, running: &Catalog) -> Catalog {
        self.pool.slots_per_pod = running.pool.slots_per_pod;
        self.pool.tenant_aware.slots_per_pod = running.pool.slots_per_pod;
        self.pool.queue_per_tenant = running.pool.queue_per_tenant;
        self
    }

    /// Slices of `fraction` of the cluster: guaranteed pods round up; CPU to the millicore.
    fn slice(&self, fraction: f64) -> Resources {
        Resources {
            cpu: (self.cluster.cores * fraction * 1000.0).round() / 1000.0,
            memory_bytes: (self.cluster.memory_bytes as f64 * fraction).round() as i64,
            pods: pods_up(f64::from(self.pool.max_replicas) * fraction),
        }
    }

    /// The quota table: per tier, its share of the cluster; per tenant, the tier's share split
    /// evenly (guaranteed) and its maxShare of the cluster (maximum; pods round down, at least 1).
    pub fn quota_table(&self) -> QuotaTable {
        let counts: Vec<usize> = (0..self.tiers.len())
            .map(|i| self.tenants.iter().filter(|t| t.tier == i).count())
            .collect();
        let tiers = self
            .tiers
            .iter()
            .zip(&counts)
            .map(|(t, n)| TierQuota {
                name: t.name.clone(),
                tenants: *n,
                share: t.share,
                resources: self.slice(t.share),
                storage: t.quota,
            })
            .collect();
        let tenants = self
            .tenants
            .iter()
            .map(|t| {
                let tier = self.tier_of(t);
                let mut max = self.slice(t.max_share);
                max.pods =
                    (tidy(f64::from(self.pool.max_replicas) * t.max_share).floor() as i64).max(1);
                TenantQuota {
                    id: t.id.clone(),
                    tier: tier.name.clone(),
                    guaranteed: self.slice(tier.share / counts[t.tier] as f64),
                    max,
                    storage: t.quota,
                }
            })
            .collect();
        let total: f64 = self.tiers.iter().map(|t| t.share).sum();
        QuotaTable {
            headroom: tidy(1.0 - total),
            tiers,
            tenants,
        }
    }
}

//! `tenantscale render`: the catalog as Kubernetes manifests, one resource per file, the same
//! bytes for the same input (keys sorted, no timestamps), valid for the Kubernetes version
//! asked for (fields it lacks are left out with a warning).
//!
//! What is rendered (namespace from `kubernetes.namespace`):
//! - the shared pool: Deployment (no `replicas`: an autoscaler owns it), headless Service,
//!   PodDisruptionBudget, a NetworkPolicy (only the gateway and the autoscaler reach the
//!   pods); the gateway: Deployment (tenant port, and an admin port for `/metrics`), Service
//!   (tenant port), a NetworkPolicy (the admin port only from the monitoring namespace),
//!   optional Ingress (only the tenant API's paths); the catalog (it holds the API-key hashes)
//!   and the shared secret (when one is given) as Secrets;
//! - `--hpa tenantscale` (default): the tenantscale autoscaler with its ServiceAccount, Role,
//!   RoleBinding and a NetworkPolicy (only the gateway and the monitoring namespace reach its
//!   API); `--hpa native`: the catalog's `autoscaling/v2` HPA (the seed's) and the
//!   prometheus-adapter rules that make its `queue_depth_per_tenant` work;
//! - per silo tenant: its own Namespace, ResourceQuota, LimitRange, pods and gateway serving
//!   only it, and NetworkPolicies that let only that gateway reach its pods;
//! - `--prometheus-operator`: a ServiceMonitor (pods, autoscaler), a PodMonitor (the gateway's
//!   admin port) and a PrometheusRule (alerts); always a Grafana dashboard ConfigMap.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use tenantscale_core::catalog::{AntiAffinity, Catalog, CatalogError, Redis, SecretKey, Tenant};
use tenantscale_core::quantity::Quantity;
use tenantscale_core::scaling::tenant_aware::{QUEUE_DEPTH_METRIC, queue_depth_promql};

/// A Kubernetes minor version (`1.30`, `1.37.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::str::FromStr for KubeVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected a Kubernetes version such as 1.30 or 1.37.0");
        let mut parts = s.trim_start_matches('v').split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some_and(|p| p.parse::<u32>().is_err()) || parts.next().is_some() {
            return Err(bad());
        }
        if major != 1 || !(OLDEST.minor..=NEWEST.minor).contains(&minor) {
            return Err(format!(
                "{s}: tenantscale renders for Kubernetes 1.{}–1.{}",
                OLDEST.minor, NEWEST.minor
            ));
        }
        Ok(Self { major, minor })
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

pub const OLDEST: KubeVersion = KubeVersion {
    major: 1,
    minor: 30,
};
pub const NEWEST: KubeVersion = KubeVersion {
    major: 1,
    minor: 37,
};
/// `behavior.scaleUp|scaleDown.tolerance` (HPAConfigurableTolerance) first exists here.
const TOLERANCE_SINCE: KubeVersion = KubeVersion {
    major: 1,
    minor: 33,
};

/// Who scales the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autoscaler {
    /// `tenantscale autoscale` with the Kubernetes actuator.
    Tenantscale,
    /// The stock HPA on `queue_depth_per_tenant` through prometheus-adapter (the seed's path).
    Native,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub version: KubeVersion,
    pub autoscaler: Autoscaler,
    pub prometheus_operator: bool,
    /// The gateway↔pod secret; without it no Secret is rendered (create it with kubectl).
    pub secret: Option<String>,
    /// The catalog file's text, shipped as the Secret `tenantscale-catalog`.
    pub catalog_text: String,
}

/// The rendered set: relative path → YAML document.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub files: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// Ports inside the containers.
const POD_PORT: u16 = 8080;
const GATEWAY_PORT: u16 = 8000;
/// The gateway's operator endpoints (`--admin-listen`): `/metrics` names every tenant and pod.
const GATEWAY_ADMIN_PORT: u16 = 9000;
const AUTOSCALER_PORT: u16 = 9090;
/// The namespace whose Prometheus may scrape what is not open to everyone (pods, the gateway's
/// admin port, the autoscaler), as kube-prometheus installs it.
const MONITORING_NAMESPACE: &str = "monitoring";
const CATALOG_DIR: &str = "/etc/tenantscale";
/// A pod's working directory when it keeps its own SQLite store (no `kubernetes.store`).
const DATA_DIR: &str = "/var/lib/tenantscale";
/// A gateway container's (milli-CPU, bytes of memory).
const GATEWAY_REQUESTS: (i64, i64) = (250, 128 << 20);
const GATEWAY_LIMITS: (i64, i64) = (1000, 256 << 20);
const SECRET_NAME: &str = "tenantscale-secret";
/// The pool's Deployment in the shared namespace (the autoscaler's target).
const POOL_DEPLOYMENT: &str = "tenantscale-pod";
/// `kubernetes.redis: deploy`: a Deployment and Service of this name.
const REDIS_NAME: &str = "tenantscale-redis";
const REDIS_IMAGE: &str = "redis:7.4-alpine";
const REDIS_PORT: u16 = 6379;
/// The `redis` user of the official image.
const REDIS_UID: u32 = 999;
/// On every template: [`Catalog::restart_only_sha256`], so a change to a field a running
/// process cannot take rolls the pods, and a change it reloads does not.
const RESTART_ONLY_ANNOTATION: &str = "tenantscale.io/restart-only-sha256";
/// Seconds a terminating pod keeps serving before its own drain starts, so that endpoint
/// removal reaches every gateway first.
const PRE_STOP_SECONDS: u32 = 5;

struct Ctx<'a> {
    catalog: &'a Catalog,
    options: &'a Options,
    out: Rendered,
}

/// The manifests, or why the catalog cannot be deployed as it is (every replica must share
/// the store and, with several gateways, Redis: [`Catalog::unshared`]).
pub fn render(catalog: &Catalog, options: &Options) -> Result<Rendered, CatalogError> {
    let problems = catalog.unshared();
    if !problems.is_empty() {
        return Err(CatalogError { problems });
    }
    let mut ctx = Ctx {
        catalog,
        options,
        out: Rendered::default(),
    };
    let ns = catalog.kubernetes.namespace.clone();
    ctx.add(namespace(&ns, None));
    ctx.add(catalog_secret(&ns, &options.catalog_text));
    match &options.secret {
        Some(secret) => ctx.add(secret_resource(&ns, secret)),
        None => ctx.out.warnings.push(format!(
            "no --secret: create the gateway/pod secret before applying: kubectl -n {ns} create secret generic {SECRET_NAME} --from-literal=secret=$(openssl rand -hex 24)"
        )),
    }
    let shared = Stack::shared(&ns);
    if catalog.kubernetes.store.is_none() {
        ctx.out.warnings.push(format!(
            "no kubernetes.store: the pod keeps its documents in SQLite on an emptyDir, and loses them when it is replaced (pool.maxReplicas is {})",
            catalog.pool.max_replicas
        ));
    }
    if catalog.kubernetes.redis == Some(Redis::Deploy) {
        ctx.add(redis_deployment(&shared));
        ctx.add(redis_service(&shared));
        ctx.add(redis_network_policy(&shared));
    }
    ctx.add(pod_deployment(&ctx, &shared, None));
    ctx.add(pod_service(&shared));
    ctx.add(pod_disruption_budget(&shared));
    ctx.add(network_policy(&shared));
    ctx.add(gateway_deployment(&ctx, &shared));
    ctx.add(gateway_service(&shared));
    ctx.add(gateway_network_policy(&shared));
    for r in gateway_rbac(&shared) {
        ctx.add(r);
    }
    if let Some(host) = &catalog.kubernetes.host {
        ctx.add(ingress(&ns, host));
    }
    match options.autoscaler {
        Autoscaler::Tenantscale => {
            ctx.add(service_account(&ns));
            ctx.add(role(&ns));
            for r in autoscaler_objects(&ns) {
                ctx.add(r);
            }
            ctx.add(role_binding(&ns));
            ctx.add(autoscaler_deployment(&ctx, &ns));
            ctx.add(autoscaler_service(&ns));
            ctx.add(autoscaler_network_policy(&ns));
        }
        Autoscaler::Native => {
            let hpa = native_hpa(&mut ctx, &ns);
            ctx.add(hpa);
            ctx.add(adapter_rules(&ns));
        }
    }
    for tenant in catalog.tenants.iter().filter(|t| t.silo) {
        silo(&mut ctx, tenant);
    }
    if options.prometheus_operator {
        ctx.add(service_monitor(&ns));
        ctx.add(gateway_pod_monitor(&ns));
        ctx.add(prometheus_rule(&ns, catalog));
    }
    ctx.add(grafana_dashboard(&ns));
    Ok(ctx.out)
}

impl Ctx<'_> {
    /// Files go to `NAMESPACE/KIND-NAME.yaml` (`cluster/…` for cluster-scoped kinds).
    fn add(&mut self, resource: Value) {
        let kind = resource["kind"].as_str().expect("kind").to_lowercase();
        let name = resource["metadata"]["name"].as_str().expect("name");
        let dir = resource["metadata"]["namespace"]
            .as_str()
            .unwrap_or("cluster");
        let path = format!("{dir}/{kind}-{name}.yaml");
        let yaml = serde_saphyr::to_string(&resource).expect("JSON values serialize as YAML");
        let previous = self.out.files.insert(path.clone(), yaml);
        assert!(previous.is_none(), "two resources render to {path}");
    }
}

/// One deployment of gateway + pods: the shared pool, or a silo tenant's.
struct Stack {
    namespace: String,
    /// Name prefix: `tenantscale`, or `tenantscale-<tenant>` for a silo.
    prefix: String,
    /// The tenant a silo serves; `None`: every tenant that is not a silo.
    scope: Option<String>,
}

impl Stack {
    /// The shared pool's stack in `namespace`.
    fn shared(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            prefix: "tenantscale".into(),
            scope: None,
        }
    }

    fn name(&self, component: &str) -> String {
        format!("{}-{component}", self.prefix)
    }
    fn labels(&self, component: &str) -> Value {
        let mut l = json!({
            "app.kubernetes.io/name": "tenantscale",
            "app.kubernetes.io/instance": self.prefix,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "tenantscale",
            "app.kubernetes.io/managed-by": "tenantscale-render",
            "app.kubernetes.io/version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(t) = &self.scope {
            l["tenantscale.io/tenant"] = json!(t);
        }
        l
    }
    /// The stable subset used in selectors (never the version).
    fn selector(&self, component: &str) -> Value {
        json!({
            "app.kubernetes.io/name": "tenantscale",
            "app.kubernetes.io/instance": self.prefix,
            "app.kubernetes.io/component": component,
        })
    }
    /// The shared pool's stack (not a silo's): the only one with an autoscaler and Redis.
    fn is_shared(&self) -> bool {
        self.scope.is_none()
    }
    fn scope_arg(&self) -> Vec<String> {
        match &self.scope {
            Some(t) => vec!["--only-tenant".into(), t.clone()],
            None => vec!["--except-silos".into()],
        }
    }
}

fn base_labels(component: &str) -> Value {
    Stack::shared("").labels(component)
}

fn metadata(name: &str, namespace: &str, labels: Value) -> Value {
    json!({"name": name, "namespace": namespace, "labels": labels})
}

fn namespace(name: &str, tenant: Option<&Tenant>) -> Value {
    let mut labels = base_labels("namespace");
    if let Some(t) = tenant {
        labels["tenantscale.io/tenant"] = json!(t.id);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    })
}

/// The catalog holds the tenants' API-key hashes: it ships as a Secret (readable only by
/// what mounts it and by whoever may read Secrets), not a ConfigMap.
fn catalog_secret(ns: &str, text: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata("tenantscale-catalog", ns, base_labels("config")),
        "type": "Opaque",
        "stringData": {"tenantscale.yaml": text},
    })
}

fn secret_resource(ns: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(SECRET_NAME, ns, base_labels("config")),
        "type": "Opaque",
        "stringData": {"secret": secret},
    })
}

fn quantity(q: &Quantity) -> Value {
    json!(q.to_string())
}

/// Container defaults every tenantscale container shares: non-root, read-only root file
/// system, no privilege escalation, no capabilities.
fn security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn catalog_volume() -> (Value, Value) {
    (
        json!({"name": "catalog", "secret": {"secretName": "tenantscale-catalog"}}),
        json!({"name": "catalog", "mountPath": CATALOG_DIR, "readOnly": true}),
    )
}

fn secret_env() -> Value {
    json!({
        "name": "TENANTSCALE_SECRET",
        "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "secret"}},
    })
}

/// An environment variable from a Secret's key, required: a pod without it does not start
/// (no silent fallback).
fn secret_key_env(name: &str, from: &SecretKey) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": from.secret, "key": from.key}}})
}

/// `TENANTSCALE_REDIS` of the shared stack's gateways and pods, when the catalog names a
/// Redis. A silo has one gateway: nothing to share.
fn redis_env(ctx: &Ctx, stack: &Stack) -> Option<Value> {
    if !stack.is_shared() {
        return None;
    }
    Some(match ctx.catalog.kubernetes.redis.as_ref()? {
        Redis::Deploy => json!({
            "name": "TENANTSCALE_REDIS",
            "value": format!("redis://{REDIS_NAME}.{}.svc:{REDIS_PORT}", stack.namespace),
        }),
        Redis::Secret(from) => secret_key_env("TENANTSCALE_REDIS", from),
    })
}

/// A template's annotations: where Prometheus scrapes it, and the restart-only checksum.
fn template_annotations(ctx: &Ctx, port: u16) -> Value {
    json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": port.to_string(),
        "prometheus.io/path": "/metrics",
        RESTART_ONLY_ANNOTATION: ctx.catalog.restart_only_sha256(),
    })
}

fn http_probe(path: &str, port: u16, period: u32, failures: u32) -> Value {
    json!({
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    })
}

/// The RAG pods. `replicas` only for a silo (nothing autoscales it).
fn pod_deployment(ctx: &Ctx, stack: &Stack, replicas: Option<i64>) -> Value {
    let k = &ctx.catalog.kubernetes;
    let (volume, mount) = catalog_volume();
    let args: Vec<String> = [
        "serve",
        "-c",
        &format!("{CATALOG_DIR}/tenantscale.yaml"),
        "--listen",
        &format!("0.0.0.0:{POD_PORT}"),
        "--drain-timeout",
        &k.drain_timeout_seconds.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let selector = stack.selector("pod");
    let affinity_term = json!({
        "labelSelector": {"matchLabels": selector},
        "topologyKey": "kubernetes.io/hostname",
    });
    let anti_affinity = match k.anti_affinity {
        AntiAffinity::Required => {
            json!({"requiredDuringSchedulingIgnoredDuringExecution": [affinity_term]})
        }
        AntiAffinity::Preferred => json!({
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": affinity_term}
            ]
        }),
    };
    let mut env = vec![
        secret_env(),
        // Set only while the secret rotates (README: rotating the secret).
        json!({"name": "TENANTSCALE_NEXT_SECRET", "valueFrom": {"secretKeyRef": {
            "name": SECRET_NAME, "key": "next-secret", "optional": true}}}),
        json!({"name": "TENANTSCALE_LLM_URL", "valueFrom": {"secretKeyRef": {
            "name": SECRET_NAME, "key": "llm-url", "optional": true}}}),
    ];
    let mut mounts = vec![mount];
    let mut volumes = vec![volume];
    match &k.store {
        Some(store) => env.push(secret_key_env("TENANTSCALE_STORE", store)),
        // One pod at most (the catalog is checked): serve's default SQLite file, in the
        // working directory, on the only writable volume.
        None => {
            mounts.push(json!({"name": "data", "mountPath": DATA_DIR}));
            volumes.push(json!({"name": "data", "emptyDir": {}}));
        }
    }
    if let Some(redis) = redis_env(ctx, stack) {
        env.push(redis);
        // The pod's name in its warm-up flag (`pod:{POD_IP}:warming_up`), as the seed's.
        env.push(
            json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        );
    }
    let mut container = json!({
        "name": "pod",
        "image": k.image,
        "args": args,
        "ports": [{"name": "http", "containerPort": POD_PORT}],
        "env": env,
        "resources": {
            "requests": {"cpu": quantity(&k.requests.cpu), "memory": quantity(&k.requests.memory)},
            "limits": {"cpu": quantity(&k.limits.cpu), "memory": quantity(&k.limits.memory)},
        },
        "startupProbe": http_probe("/health", POD_PORT, 2, 60),
        "livenessProbe": http_probe("/health", POD_PORT, 10, 3),
        "readinessProbe": http_probe("/ready", POD_PORT, 2, 1),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": security_context(),
        "volumeMounts": mounts,
    });
    if k.store.is_none() {
        container["workingDir"] = json!(DATA_DIR);
    }
    let mut spec = json!({
        "selector": {"matchLabels": selector},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": if replicas.is_some() {
                // A silo's quota has room for one extra pod during a rollout.
                json!({"maxSurge": 1, "maxUnavailable": 0})
            } else {
                // The seed's: at most 4 new pods at once, at most 2 missing.
                json!({"maxSurge": 4, "maxUnavailable": 2})
            },
        },
        "template": {
            "metadata": {
                "labels": stack.labels("pod"),
                "annotations": template_annotations(ctx, POD_PORT),
            },
            "spec": {
                "automountServiceAccountToken": false,
                // The pod's own drain, the pre-stop pause, and a margin to exit.
                "terminationGracePeriodSeconds": k.drain_timeout_seconds + PRE_STOP_SECONDS + 10,
                "affinity": {"podAntiAffinity": anti_affinity},
                "topologySpreadConstraints": [{
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    // A zone that cannot take a pod must not block a scale-up.
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": selector},
                }],
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001},
                "containers": [container],
                "volumes": volumes,
            },
        },
    });
    if let Some(n) = replicas {
        spec["replicas"] = json!(n);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(&stack.name("pod"), &stack.namespace, stack.labels("pod")),
        "spec": spec,
    })
}

/// `kubernetes.redis: deploy`: one Redis for the gateways' shared limits and the pods'
/// warm-up flags. It holds only counters that expire (rate-limit buckets, in-flight leases,
/// flags), so it keeps nothing on disk, and while it restarts each gateway enforces 1/N of
/// every limit: one replica, replaced whole (`Recreate`).
fn redis_deployment(stack: &Stack) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(REDIS_NAME, &stack.namespace, stack.labels("redis")),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": stack.selector("redis")},
            "template": {
                // No restart-only checksum: Redis does not read the catalog.
                "metadata": {"labels": stack.labels("redis")},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": REDIS_UID},
                    "containers": [{
                        "name": "redis",
                        "image": REDIS_IMAGE,
                        "args": [
                            "redis-server",
                            // No snapshots, no append-only file: nothing is written, so the
                            // root file system stays read-only.
                            "--save", "",
                            "--appendonly", "no",
                            // The NetworkPolicy admits only the gateways and the pods.
                            "--protected-mode", "no",
                            // Below the memory limit: refuse writes rather than be killed.
                            "--maxmemory", "192mb",
                            "--maxmemory-policy", "noeviction",
                        ],
                        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                            "limits": {"cpu": "500m", "memory": "256Mi"},
                        },
                        "livenessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 10, "failureThreshold": 3},
                        "readinessProbe": {
                            "exec": {"command": ["redis-cli", "ping"]},
                            "periodSeconds": 5,
                            "timeoutSeconds": 2,
                        },
                        "securityContext": security_context(),
                    }],
                },
            },
        },
    })
}

fn redis_service(stack: &Stack) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(REDIS_NAME, &stack.namespace, stack.labels("redis")),
        "spec": {
            "selector": stack.selector("redis"),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    })
}

/// Only the gateways (limits, leases) and the pods (warm-up flags) reach Redis. Not the
/// autoscaler: on Kubernetes it keeps its state in a ConfigMap and never connects.
fn redis_network_policy(stack: &Stack) -> Value {
    ingress_policy(
        metadata(REDIS_NAME, &stack.namespace, stack.labels("redis")),
        stack.selector("redis"),
        json!([{
            "from": [
                {"podSelector": {"matchLabels": stack.selector("gateway")}},
                {"podSelector": {"matchLabels": stack.selector("pod")}},
            ],
            "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
        }]),
    )
}

/// Headless: the gateway routes to each pod itself (it reads the EndpointSlices).
fn pod_service(stack: &Stack) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(&stack.name("pod"), &stack.namespace, stack.labels("pod")),
        "spec": {
            "clusterIP": "None",
            "selector": stack.selector("pod"),
            "ports": [{"name": "http", "port": POD_PORT, "targetPort": "http"}],
        },
    })
}

fn pod_disruption_budget(stack: &Stack) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(&stack.name("pod"), &stack.namespace, stack.labels("pod")),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": stack.selector("pod")},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    })
}

fn gateway_deployment(ctx: &Ctx, stack: &Stack) -> Value {
    let (volume, mount) = catalog_volume();
    let mut args: Vec<String> = vec![
        "gateway".into(),
        "-c".into(),
        format!("{CATALOG_DIR}/tenantscale.yaml"),
        "--listen".into(),
        format!("0.0.0.0:{GATEWAY_PORT}"),
        "--admin-listen".into(),
        format!("0.0.0.0:{GATEWAY_ADMIN_PORT}"),
        "--endpoint-slices".into(),
        format!("{}/{}", stack.namespace, stack.name("pod")),
    ];
    args.extend(stack.scope_arg());
    let mut env = vec![secret_env()];
    let replicas = if stack.is_shared() {
        ctx.catalog.kubernetes.gateway_replicas
    } else {
        1
    };
    if let Some(redis) = redis_env(ctx, stack) {
        env.push(redis);
        // While Redis is unreachable each replica enforces 1/N of every limit.
        args.extend(["--replicas".into(), replicas.to_string()]);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(&stack.name("gateway"), &stack.namespace, stack.labels("gateway")),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": stack.selector("gateway")},
            "template": {
                "metadata": {
                    "labels": stack.labels("gateway"),
                    "annotations": template_annotations(ctx, GATEWAY_ADMIN_PORT),
                },
                "spec": {
                    "serviceAccountName": stack.name("gateway"),
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
                    "containers": [{
                        "name": "gateway",
                        "image": ctx.catalog.kubernetes.image,
                        "args": args,
                        "ports": [
                            {"name": "http", "containerPort": GATEWAY_PORT},
                            {"name": "admin", "containerPort": GATEWAY_ADMIN_PORT},
                        ],
                        "env": env,
                        "resources": {
                            "requests": {"cpu": format!("{}m", GATEWAY_REQUESTS.0), "memory": mem_text(GATEWAY_REQUESTS.1)},
                            "limits": {"cpu": format!("{}m", GATEWAY_LIMITS.0), "memory": mem_text(GATEWAY_LIMITS.1)},
                        },
                        "livenessProbe": http_probe("/health", GATEWAY_PORT, 10, 3),
                        "readinessProbe": http_probe("/ready", GATEWAY_PORT, 2, 1),
                        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
                        "securityContext": security_context(),
                        "volumeMounts": [mount],
                    }],
                    "volumes": [volume],
                },
            },
        },
    })
}

fn gateway_service(stack: &Stack) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(&stack.name("gateway"), &stack.namespace, stack.labels("gateway")),
        "spec": {
            "selector": stack.selector("gateway"),
            "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}],
        },
    })
}

/// Ingress from the monitoring namespace to `port`.
fn from_monitoring(port: u16) -> Value {
    json!({
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}],
        "ports": [{"protocol": "TCP", "port": port}],
    })
}

/// The tenant port is open to all (clients, the ingress controller); the admin port only to
/// the monitoring namespace: the gateway answers its paths to anyone who reaches it.
fn gateway_network_policy(stack: &Stack) -> Value {
    ingress_policy(
        metadata(
            &stack.name("gateway"),
            &stack.namespace,
            stack.labels("gateway"),
        ),
        stack.selector("gateway"),
        json!([
            {"ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]},
            from_monitoring(GATEWAY_ADMIN_PORT),
        ]),
    )
}

/// A NetworkPolicy: the pods `selector` matches accept only the connections `ingress` lists.
fn ingress_policy(metadata: Value, selector: Value, ingress: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    })
}

/// Only the tenant API's paths: `/v1/…` and the seed's `/query`. The gateway's own paths
/// (`/metrics`, the probes) are not published.
fn ingress(ns: &str, host: &str) -> Value {
    let backend = json!({"service": {"name": "tenantscale-gateway", "port": {"name": "http"}}});
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata("tenantscale-gateway", ns, base_labels("gateway")),
        "spec": {"rules": [{"host": host, "http": {"paths": [
            {"path": "/v1/", "pathType": "Prefix", "backend": backend},
            {"path": "/query", "pathType": "Exact", "backend": backend},
        ]}}]},
    })
}

fn service_account(ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata("tenantscale-autoscaler", ns, base_labels("autoscaler")),
    })
}

/// What the autoscaler may do, and no more: by name wherever the verb allows. It creates
/// nothing (its Lease and state ConfigMap are rendered, [`autoscaler_objects`]); it lists the
/// pool's pods by label and patches their deletion cost, whose names it cannot know.
fn role(ns: &str) -> Value {
    let lease = crate::autoscaler_lease_name(POOL_DEPLOYMENT);
    let state = crate::autoscaler_state_name(POOL_DEPLOYMENT);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata("tenantscale-autoscaler", ns, base_labels("autoscaler")),
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [POOL_DEPLOYMENT], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": [POOL_DEPLOYMENT], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]},
            // Leader election.
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "update"]},
            // The engine's state, kept in one ConfigMap.
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [state], "verbs": ["get", "update"]},
        ],
    })
}

/// The Lease and the state ConfigMap the autoscaler only reads and updates, so that its Role
/// needs no `create` (which cannot be limited by name). Neither carries a spec or data: a
/// later `kubectl apply` of the folder leaves the holder and the saved state alone.
fn autoscaler_objects(ns: &str) -> [Value; 2] {
    let labels = base_labels("autoscaler");
    [
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata(&crate::autoscaler_lease_name(POOL_DEPLOYMENT), ns, labels.clone()),
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(&crate::autoscaler_state_name(POOL_DEPLOYMENT), ns, labels),
        }),
    ]
}

fn role_binding(ns: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata("tenantscale-autoscaler", ns, base_labels("autoscaler")),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenantscale-autoscaler"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenantscale-autoscaler", "namespace": ns}],
    })
}

fn autoscaler_deployment(ctx: &Ctx, ns: &str) -> Value {
    let (volume, mount) = catalog_volume();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata("tenantscale-autoscaler", ns, base_labels("autoscaler")),
        "spec": {
            // Two replicas: one leads (a Lease), the other takes over.
            "replicas": 2,
            "selector": {"matchLabels": Stack::shared(ns).selector("autoscaler")},
            "template": {
                "metadata": {
                    "labels": base_labels("autoscaler"),
                    "annotations": template_annotations(ctx, AUTOSCALER_PORT),
                },
                "spec": {
                    "serviceAccountName": "tenantscale-autoscaler",
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
                    "containers": [{
                        "name": "autoscaler",
                        "image": ctx.catalog.kubernetes.image,
                        "args": [
                            "autoscale", "-c", format!("{CATALOG_DIR}/tenantscale.yaml"),
                            "--listen", format!("0.0.0.0:{AUTOSCALER_PORT}"),
                            "--kubernetes-deployment", format!("{ns}/{POOL_DEPLOYMENT}"),
                        ],
                        "ports": [{"name": "http", "containerPort": AUTOSCALER_PORT}],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"cpu": "500m", "memory": "256Mi"},
                        },
                        "livenessProbe": http_probe("/health", AUTOSCALER_PORT, 10, 3),
                        "securityContext": security_context(),
                        "volumeMounts": [mount],
                    }],
                    "volumes": [volume],
                },
            },
        },
    })
}

fn autoscaler_service(ns: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata("tenantscale-autoscaler", ns, base_labels("autoscaler")),
        "spec": {
            "selector": Stack::shared(ns).selector("autoscaler"),
            "ports": [{"name": "http", "port": AUTOSCALER_PORT, "targetPort": "http"}],
        },
    })
}

/// The autoscaler's whole API is for the cluster's own (its metrics and `/status` name every
/// tenant; `/v1/pods` every pod): only the gateway (`--registry` follows `/v1/pods`) and the
/// monitoring namespace reach it. The kubelet's probes are let through by every CNI, and
/// `kubectl port-forward` is not network traffic to the pod.
fn autoscaler_network_policy(ns: &str) -> Value {
    let shared = Stack::shared(ns);
    ingress_policy(
        metadata("tenantscale-autoscaler", ns, base_labels("autoscaler")),
        shared.selector("autoscaler"),
        json!([
            {
                "from": [{"podSelector": {"matchLabels": shared.selector("gateway")}}],
                "ports": [{"protocol": "TCP", "port": AUTOSCALER_PORT}],
            },
            from_monitoring(AUTOSCALER_PORT),
        ]),
    )
}

/// The catalog's `autoscaling/v2` HPA for the pool, as the seed writes it.
fn native_hpa(ctx: &mut Ctx, ns: &str) -> Value {
    let pool = &ctx.catalog.pool;
    let mut behavior = serde_json::to_value(&pool.behavior).expect("behavior serializes");
    if ctx.options.version < TOLERANCE_SINCE {
        for direction in ["scaleUp", "scaleDown"] {
            if let Some(rules) = behavior.get_mut(direction).and_then(Value::as_object_mut)
                && rules.remove("tolerance").is_some()
            {
                ctx.out.warnings.push(format!(
                    "pool.hpa.behavior.{direction}.tolerance left out: Kubernetes {} has no such field (since {TOLERANCE_SINCE})",
                    ctx.options.version
                ));
            }
        }
    }
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": POOL_DEPLOYMENT},
        "minReplicas": pool.min_replicas,
        "maxReplicas": pool.max_replicas,
        "metrics": serde_json::to_value(&pool.metrics).expect("metrics serialize"),
    });
    if !behavior.is_null() {
        spec["behavior"] = behavior;
    }
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(POOL_DEPLOYMENT, ns, base_labels("pod")),
        "spec": spec,
    })
}

/// prometheus-adapter rules serving `queue_depth_per_tenant` as a Pods metric. The seed's
/// query returns one series with no `pod` label, which the adapter cannot hand out per pod
/// (seed NOTES #7); here every pod of the HPA's selection gets the pool's value, so the
/// HPA's average over pods is exactly the seed's metric.
fn adapter_rules(ns: &str) -> Value {
    let pool_value = queue_depth_promql("<<.LabelMatchers>>", "1m");
    let rules = json!({"rules": [{
        "seriesQuery": format!("tenant_queue_depth{{namespace!=\"\",pod!=\"\"}}"),
        "resources": {"overrides": {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }},
        "name": {"matches": "^tenant_queue_depth$", "as": QUEUE_DEPTH_METRIC},
        "metricsQuery": format!(
            "count by (<<.GroupBy>>) (tenant_queue_depth{{<<.LabelMatchers>>}}) * 0 + scalar(({pool_value}) or vector(0))"
        ),
    }]});
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("tenantscale-prometheus-adapter", ns, base_labels("autoscaler")),
        "data": {"config.yaml": serde_saphyr::to_string(&rules).expect("rules serialize")},
    })
}

/// The seed's per-tier extras of a silo quota: PVCs, storage, load balancers (its gold,
/// silver and bronze manifests); other tier names get bronze's.
fn silo_extras(tier: &str) -> (i64, &'static str, i64) {
    match tier {
        "gold" => (5, "100Gi", 3),
        "silver" => (2, "20Gi", 1),
        _ => (1, "10Gi", 0),
    }
}

fn silo(ctx: &mut Ctx, tenant: &Tenant) {
    let ns = format!("tenant-{}", tenant.id);
    let quota = ctx
        .catalog
        .quota_table()
        .tenants
        .into_iter()
        .find(|q| q.id == tenant.id)
        .expect("every tenant has a quota row");
    let stack = Stack {
        namespace: ns.clone(),
        prefix: format!("tenantscale-{}", tenant.id),
        scope: Some(tenant.id.clone()),
    };
    let catalog = ctx.catalog;
    let k = &catalog.kubernetes;
    // Its guaranteed CPU in pods of the pool's size (after its gateway), at least one.
    let guaranteed_milli = (quota.guaranteed.cpu * 1000.0).round() as i64;
    let replicas = ((guaranteed_milli - GATEWAY_REQUESTS.0) / k.requests.cpu.milli_value().max(1))
        .clamp(1, quota.max.pods);
    // A rollout adds one pod and one gateway for a moment.
    let pods = replicas + 1;
    let needs = |pod_cpu: i64, pod_memory: i64, gateway: (i64, i64)| {
        (
            pods * pod_cpu + 2 * gateway.0,
            pods * pod_memory + 2 * gateway.1,
        )
    };
    let need_requests = needs(
        k.requests.cpu.milli_value(),
        k.requests.memory.value(),
        GATEWAY_REQUESTS,
    );
    let need_limits = needs(
        k.limits.cpu.milli_value(),
        k.limits.memory.value(),
        GATEWAY_LIMITS,
    );
    let tier_requests = (guaranteed_milli, quota.guaranteed.memory_bytes);
    let tier_limits = (
        (quota.max.cpu * 1000.0).round() as i64,
        quota.max.memory_bytes,
    );
    let mut hard = |tier: (i64, i64), need: (i64, i64), what: &str| {
        if need.0 > tier.0 || need.1 > tier.1 {
            ctx.out.warnings.push(format!(
                "tenant {}: its tier's {what} ({}m CPU, {} memory) cannot hold {replicas} pod(s), its gateway and a rollout; the quota is raised to {}m CPU, {}",
                tenant.id,
                tier.0,
                mem_text(tier.1),
                need.0.max(tier.0),
                mem_text(need.1.max(tier.1)),
            ));
        }
        (
            json!(format!("{}m", need.0.max(tier.0))),
            json!(mem_text(need.1.max(tier.1))),
        )
    };
    let (requests_cpu, requests_memory) = hard(tier_requests, need_requests, "guaranteed share");
    let (limits_cpu, limits_memory) = hard(tier_limits, need_limits, "maxShare");
    let (pvcs, storage, load_balancers) = silo_extras(&quota.tier);
    ctx.add(namespace(&ns, Some(tenant)));
    ctx.add(catalog_secret(&ns, &ctx.options.catalog_text.clone()));
    ctx.add(json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(&format!("{}-quota", quota.tier), &ns, stack.labels("quota")),
        "spec": {"hard": {
            "requests.cpu": requests_cpu,
            "requests.memory": requests_memory,
            "limits.cpu": limits_cpu,
            "limits.memory": limits_memory,
            "pods": (quota.max.pods.max(pods) + 2).to_string(),
            "persistentvolumeclaims": pvcs.to_string(),
            "requests.storage": storage,
            "services.loadbalancers": load_balancers.to_string(),
        }},
    }));
    ctx.add(limit_range(ctx.catalog, &ns, &stack));
    ctx.add(network_policy(&stack));
    ctx.add(pod_deployment(ctx, &stack, Some(replicas)));
    ctx.add(pod_service(&stack));
    ctx.add(gateway_deployment(ctx, &stack));
    ctx.add(gateway_service(&stack));
    ctx.add(gateway_network_policy(&stack));
    for r in gateway_rbac(&stack) {
        ctx.add(r);
    }
}

/// Memory as Kubernetes writes it, in whole MiB.
fn mem_text(bytes: i64) -> String {
    format!("{}Mi", (bytes as f64 / (1 << 20) as f64).ceil() as i64)
}

/// The gateway reads its pool's EndpointSlices (and nothing else).
fn gateway_rbac(stack: &Stack) -> [Value; 3] {
    let name = stack.name("gateway");
    let labels = stack.labels("gateway");
    [
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(&name, &stack.namespace, labels.clone()),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(&name, &stack.namespace, labels.clone()),
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(&name, &stack.namespace, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": stack.namespace}],
        }),
    ]
}

/// The seed's LimitRange, widened to fit the catalog's pod size.
fn limit_range(catalog: &Catalog, ns: &str, stack: &Stack) -> Value {
    let k = &catalog.kubernetes;
    let at_least = |q: &Quantity, floor: &str| {
        let floor = Quantity::parse(floor).expect("valid");
        if q.milli_value() > floor.milli_value() {
            *q
        } else {
            floor
        }
    };
    let container_cpu = at_least(&k.limits.cpu, "4");
    let container_memory = at_least(&k.limits.memory, "8Gi");
    json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata("tenant-limits", ns, stack.labels("quota")),
        "spec": {"limits": [
            {
                "type": "Container",
                "max": {"cpu": quantity(&container_cpu), "memory": quantity(&container_memory)},
                "min": {"cpu": "100m", "memory": "128Mi"},
                "default": {"cpu": "500m", "memory": "512Mi"},
                "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
            },
            {
                // A pod has no defaults of its own (they are per container).
                "type": "Pod",
                "min": {"cpu": "100m", "memory": "128Mi"},
                "max": {"cpu": quantity(&at_least(&container_cpu, "8")),
                        "memory": quantity(&at_least(&container_memory, "16Gi"))},
            },
        ]},
    })
}

/// The pods take traffic only from their gateway (and, for the shared pool, the autoscaler,
/// which scrapes them), and scrapes from the `monitoring` namespace. The gateway's signature
/// already makes a pod refuse anyone else; this keeps them from being reached at all.
fn network_policy(stack: &Stack) -> Value {
    let port = json!([{"protocol": "TCP", "port": POD_PORT}]);
    let mut from = vec![json!({"podSelector": {"matchLabels": stack.selector("gateway")}})];
    if stack.is_shared() {
        from.push(json!({"podSelector": {"matchLabels": stack.selector("autoscaler")}}));
    }
    ingress_policy(
        metadata(&stack.name("pod"), &stack.namespace, stack.labels("pod")),
        stack.selector("pod"),
        json!([{"from": from, "ports": port}, from_monitoring(POD_PORT)]),
    )
}

/// The pods and the autoscaler, on their one port. Not the gateway: its Service carries only
/// the tenant port, where `/metrics` is 404 (see [`gateway_pod_monitor`]).
fn service_monitor(ns: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata("tenantscale", ns, base_labels("monitoring")),
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "tenantscale"},
                "matchExpressions": [{
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": ["pod", "autoscaler"],
                }],
            },
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    })
}

/// The gateways' admin port, scraped from the pods (no Service publishes it).
fn gateway_pod_monitor(ns: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata("tenantscale-gateway", ns, base_labels("monitoring")),
        "spec": {
            "selector": {"matchLabels": {
                "app.kubernetes.io/name": "tenantscale",
                "app.kubernetes.io/component": "gateway",
            }},
            "podMetricsEndpoints": [{"port": "admin", "path": "/metrics", "interval": "15s"}],
        },
    })
}

/// Alerts: queue depth high, pool at maxReplicas, a tenant at its cap, queries dropped on
/// drain. The expressions are checked by `promtool check rules` in the tests.
pub fn alert_rules(catalog: &Catalog) -> Value {
    let target = catalog
        .pool
        .metrics
        .iter()
        .find_map(|m| {
            m.pods
                .as_ref()
                .filter(|p| p.metric.name == QUEUE_DEPTH_METRIC)
                .and_then(|p| p.target.average_value.as_ref())
                .map(Quantity::as_f64)
        })
        .unwrap_or(10.0);
    json!({"groups": [{
        "name": "tenantscale",
        "rules": [
            {
                "alert": "TenantscaleQueueDepthHigh",
                "expr": format!("({}) > {target}", queue_depth_promql("", "5m")),
                "for": "5m",
                "labels": {"severity": "warning"},
                "annotations": {"summary": format!("Queued queries per active tenant above {target} for 5 minutes")},
            },
            {
                "alert": "TenantscaleAtMaxReplicas",
                "expr": "tenantscale_autoscaler_replicas >= tenantscale_autoscaler_max_replicas",
                "for": "10m",
                "labels": {"severity": "warning"},
                "annotations": {"summary": "The pool has been at maxReplicas for 10 minutes"},
            },
            {
                "alert": "TenantscaleTenantAtCap",
                "expr": "tenantscale_autoscaler_tenant_demand >= tenantscale_autoscaler_tenant_entitlement and tenantscale_autoscaler_tenant_entitlement > 0",
                "for": "5m",
                "labels": {"severity": "info"},
                "annotations": {"summary": "Tenant {{ $labels.tenant_id }} has used its whole share for 5 minutes"},
            },
            {
                "alert": "TenantscaleDroppedOnDrain",
                "expr": "increase(tenantscale_drain_dropped_total[15m]) > 0",
                "labels": {"severity": "critical"},
                "annotations": {"summary": "A pod dropped queries when it was scaled down"},
            },
        ],
    }]})
}

fn prometheus_rule(ns: &str, catalog: &Catalog) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata("tenantscale", ns, base_labels("monitoring")),
        "spec": alert_rules(catalog),
    })
}

fn grafana_dashboard(ns: &str) -> Value {
    let panel = |id: u32, title: &str, expr: &str, y: u32, x: u32| {
        json!({
            "id": id, "title": title, "type": "timeseries",
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "targets": [{"expr": expr, "legendFormat": "{{tenant_id}}", "refId": "A"}],
        })
    };
    let dashboard = json!({
        "title": "tenantscale",
        "uid": "tenantscale",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "panels": [
            panel(1, "Queue depth per tenant", "sum by (tenant_id) (tenant_queue_depth)", 0, 0),
            panel(2, "p99 latency per tenant (s)", "histogram_quantile(0.99, sum by (tenant_id, le) (rate(query_latency_seconds_bucket[5m])))", 0, 12),
            panel(3, "Replicas", "tenantscale_autoscaler_replicas or kube_deployment_status_replicas{deployment=\"tenantscale-pod\"}", 8, 0),
            panel(4, "Rejections (429/s) per tenant", "sum by (tenant_id) (rate(tenantscale_gateway_rejected_total[5m]))", 8, 12),
        ],
    });
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "tenantscale-grafana-dashboard",
            "namespace": ns,
            // Grafana's dashboard sidecar picks up ConfigMaps with this label.
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/name": "tenantscale",
                       "app.kubernetes.io/component": "monitoring", "app.kubernetes.io/part-of": "tenantscale",
                       "app.kubernetes.io/managed-by": "tenantscale-render"},
        },
        "data": {"tenantscale.json": serde_json::to_string_pretty(&dashboard).expect("json")},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = "cluster: {cores: 8, memory: 16Gi}
tiers:
  gold: {weight: 3, share: 0.6}
tenants:
  - {id: media-1, tier: gold}
  - {id: media-2, tier: gold, silo: true}
pool: {minReplicas: 2, maxReplicas: 6}
kubernetes:
  namespace: rag
  store: {secret: pg, key: url}
  redis: deploy
";

    fn rendered(text: &str) -> Rendered {
        let catalog = Catalog::parse(text).unwrap().catalog;
        render(
            &catalog,
            &Options {
                version: OLDEST,
                autoscaler: Autoscaler::Tenantscale,
                prometheus_operator: false,
                secret: None,
                catalog_text: text.into(),
            },
        )
        .unwrap()
    }

    fn resource(r: &Rendered, path: &str) -> Value {
        let text = r
            .files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not rendered"));
        serde_saphyr::from_str(text).unwrap()
    }

    fn env_of(container: &Value, name: &str) -> Value {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    #[test]
    fn an_unshared_deployment_is_refused_with_the_fields_paths() {
        // No kubernetes section: it loads (local use), but cannot be rendered.
        let text = CATALOG.split("kubernetes:").next().unwrap();
        let catalog = Catalog::parse(text).unwrap().catalog;
        let options = Options {
            version: OLDEST,
            autoscaler: Autoscaler::Tenantscale,
            prometheus_operator: false,
            secret: None,
            catalog_text: text.into(),
        };
        let e = render(&catalog, &options).unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["kubernetes.store", "kubernetes.redis"]);
    }

    #[test]
    fn gateways_and_pods_are_wired_to_the_shared_store_and_redis() {
        let r = rendered(CATALOG);
        let redis_url = json!("redis://tenantscale-redis.rag.svc:6379");
        let gateway = resource(&r, "rag/deployment-tenantscale-gateway.yaml");
        let container = &gateway["spec"]["template"]["spec"]["containers"][0];
        assert!(
            container["args"]
                .to_string()
                .contains(r#""--replicas","2""#),
            "{}",
            container["args"]
        );
        assert_eq!(env_of(container, "TENANTSCALE_REDIS")["value"], redis_url);

        let pods = resource(&r, "rag/deployment-tenantscale-pod.yaml");
        let spec = &pods["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        assert_eq!(
            env_of(container, "TENANTSCALE_STORE")["valueFrom"],
            json!({"secretKeyRef": {"name": "pg", "key": "url"}}),
            "required: a pod without its store does not start"
        );
        assert_eq!(env_of(container, "TENANTSCALE_REDIS")["value"], redis_url);
        assert_eq!(
            env_of(container, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
            "status.podIP"
        );
        // No SQLite of its own: the catalog is the only volume.
        assert_eq!(
            spec["volumes"].as_array().unwrap().len(),
            1,
            "{}",
            spec["volumes"]
        );
        assert!(container.get("workingDir").is_none());

        // A silo's one gateway shares nothing; its pods share the store.
        let silo = "tenant-media-2/deployment-tenantscale-media-2";
        let gateway = resource(&r, &format!("{silo}-gateway.yaml"));
        let container = &gateway["spec"]["template"]["spec"]["containers"][0];
        assert!(!container["args"].to_string().contains("--replicas"));
        assert!(env_of(container, "TENANTSCALE_REDIS").is_null());
        let pods = resource(&r, &format!("{silo}-pod.yaml"));
        let container = &pods["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            env_of(container, "TENANTSCALE_STORE")["valueFrom"]["secretKeyRef"]["name"],
            "pg"
        );

        // Redis: non-root, read-only, bounded, replaced whole, reached by gateways and pods only.
        let redis = resource(&r, "rag/deployment-tenantscale-redis.yaml");
        assert_eq!(redis["spec"]["strategy"]["type"], "Recreate");
        let c = &redis["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], REDIS_IMAGE);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["runAsNonRoot"], true);
        assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
        let policy = resource(&r, "rag/networkpolicy-tenantscale-redis.yaml");
        let components: Vec<&Value> = policy["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["podSelector"]["matchLabels"]["app.kubernetes.io/component"])
            .collect();
        assert_eq!(components, [&json!("gateway"), &json!("pod")]);
        assert!(r.files.contains_key("rag/service-tenantscale-redis.yaml"));
    }

    #[test]
    fn an_existing_redis_comes_from_its_secret_and_nothing_is_deployed() {
        let r =
            rendered(&CATALOG.replace("redis: deploy", "redis: {secret: redis-conn, key: url}"));
        assert!(!r.files.keys().any(|p| p.contains("tenantscale-redis")));
        let gateway = resource(&r, "rag/deployment-tenantscale-gateway.yaml");
        let container = &gateway["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            env_of(container, "TENANTSCALE_REDIS")["valueFrom"],
            json!({"secretKeyRef": {"name": "redis-conn", "key": "url"}})
        );
    }

    #[test]
    fn one_pod_without_a_store_keeps_sqlite_and_is_warned_about() {
        let r = rendered(
            &CATALOG
                .replace("maxReplicas: 6", "maxReplicas: 1")
                .replace("minReplicas: 2", "minReplicas: 1")
                .replace("  store: {secret: pg, key: url}\n", ""),
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("no kubernetes.store")),
            "{:?}",
            r.warnings
        );
        let pods = resource(&r, "rag/deployment-tenantscale-pod.yaml");
        let container = &pods["spec"]["template"]["spec"]["containers"][0];
        assert!(env_of(container, "TENANTSCALE_STORE").is_null());
        assert_eq!(container["workingDir"], DATA_DIR);
    }

    #[test]
    fn pods_roll_on_a_restart_only_change_and_not_on_a_reloaded_one() {
        let annotation = |r: &Rendered, path: &str| {
            resource(r, path)["spec"]["template"]["metadata"]["annotations"]
                [RESTART_ONLY_ANNOTATION]
                .clone()
        };
        let templates = [
            "rag/deployment-tenantscale-pod.yaml",
            "rag/deployment-tenantscale-gateway.yaml",
            "rag/deployment-tenantscale-autoscaler.yaml",
            "tenant-media-2/deployment-tenantscale-media-2-pod.yaml",
        ];
        let base = rendered(CATALOG);
        let slots =
            rendered(&CATALOG.replace("maxReplicas: 6}", "maxReplicas: 6, slotsPerPod: 4}"));
        let tenant = rendered(&CATALOG.replace(
            "  - {id: media-1, tier: gold}\n",
            "  - {id: media-1, tier: gold}\n  - {id: media-3, tier: gold, apiKeySha256: \"2222222222222222222222222222222222222222222222222222222222222222\"}\n",
        ));
        for path in templates {
            let before = annotation(&base, path);
            assert!(
                before.as_str().is_some_and(|s| s.len() == 64),
                "{path}: {before}"
            );
            assert_ne!(annotation(&slots, path), before, "{path}");
            // A tenant is reloaded live: the Deployment is byte for byte the same, only the
            // catalog Secret changes.
            assert_eq!(tenant.files[path], base.files[path], "{path}");
        }
        assert_ne!(
            tenant.files["rag/secret-tenantscale-catalog.yaml"],
            base.files["rag/secret-tenantscale-catalog.yaml"]
        );
    }

    #[test]
    fn the_autoscaler_creates_nothing_and_names_what_it_touches() {
        let r = rendered(CATALOG);
        let role = resource(&r, "rag/role-tenantscale-autoscaler.yaml");
        let lease = crate::autoscaler_lease_name(POOL_DEPLOYMENT);
        let state = crate::autoscaler_state_name(POOL_DEPLOYMENT);
        for rule in role["rules"].as_array().unwrap() {
            let verbs = rule["verbs"].as_array().unwrap();
            assert!(!verbs.contains(&json!("create")), "{rule}");
            let names = rule.get("resourceNames");
            match rule["resources"][0].as_str().unwrap() {
                "deployments" | "deployments/scale" => {
                    assert_eq!(names, Some(&json!([POOL_DEPLOYMENT])), "{rule}")
                }
                "leases" => assert_eq!(names, Some(&json!([lease])), "{rule}"),
                "configmaps" => assert_eq!(names, Some(&json!([state])), "{rule}"),
                // Its pods' names come and go: listed by label, patched by name.
                "pods" => assert_eq!(verbs, &[json!("list"), json!("patch")]),
                other => panic!("unexpected rule for {other}"),
            }
        }
        // What it would have created is rendered, empty (a re-apply keeps its holder and state).
        let lease = resource(&r, &format!("rag/lease-{lease}.yaml"));
        assert!(lease.get("spec").is_none());
        let state = resource(&r, &format!("rag/configmap-{state}.yaml"));
        assert!(state.get("data").is_none());
        let autoscaler = resource(&r, "rag/deployment-tenantscale-autoscaler.yaml");
        assert!(
            autoscaler["spec"]["template"]["spec"]["containers"][0]["args"]
                .to_string()
                .contains(&format!("\"rag/{POOL_DEPLOYMENT}\""))
        );
    }

    #[test]
    fn versions_parse_within_the_supported_range_only() {
        let v: KubeVersion = "1.30".parse().unwrap();
        assert_eq!(v, OLDEST);
        assert_eq!("v1.37.0".parse::<KubeVersion>().unwrap(), NEWEST);
        assert!("1.33".parse::<KubeVersion>().unwrap() >= TOLERANCE_SINCE);
        for bad in ["1.29", "1.38", "2.30", "1", "1.x", "1.30.0.1", "1.30.x"] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad}");
        }
    }
}

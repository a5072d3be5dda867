//! `FakeApiServer`: a TEST DOUBLE of the Kubernetes API server (feature `fake-api`; none can
//! run on these machines). It keeps a Deployment, its `scale` subresource, pods, Leases and
//! ConfigMaps in memory and answers with the JSON shapes, status codes and `Status` errors
//! the real API server sends: 409 Conflict on a stale resourceVersion, 404 NotFound, 409
//! AlreadyExists, and 403 Forbidden in its message format. Tests of the actuator and of the
//! `autoscale` binary (through a kubeconfig pointing at it) use it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The namespace and Deployment the fake serves.
pub const NS: &str = "tenantscale";
pub const DEPLOYMENT: &str = "tenantscale-pod";

/// The fake cluster's state; tests read and steer it.
#[derive(Default)]
pub struct World {
    pub replicas: i64,
    pub scale_version: u64,
    /// By name.
    pub pods: BTreeMap<String, Value>,
    pub leases: BTreeMap<String, Value>,
    pub maps: BTreeMap<String, Value>,
    /// The next N scale updates answer 409, as when another writer got there first.
    pub conflicts: usize,
    /// Every request answers 403, as for a ServiceAccount without the Role.
    pub forbidden: bool,
    pub version: u64,
    /// Each request as "METHOD path".
    pub log: Vec<String>,
    /// The port the pods' EndpointSlice lists (the Service's `http` port).
    pub pod_port: u16,
}

type Shared = Arc<Mutex<World>>;

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

fn forbidden(resource: &str, group: &str) -> Response {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{resource} is forbidden: User \"system:serviceaccount:{NS}:default\" cannot access resource \"{resource}\" in API group \"{group}\" in the namespace \"{NS}\""
        ),
    )
}

fn scale_json(w: &World) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": DEPLOYMENT, "namespace": NS, "resourceVersion": w.scale_version.to_string(),
                     "uid": "3f0e6c1a-6f0e-4b8e-9a43-5d2f1c0b7a11", "creationTimestamp": "2026-11-28T10:00:00Z"},
        "spec": {"replicas": w.replicas},
        "status": {"replicas": w.replicas, "selector": "app.kubernetes.io/component=pod,app.kubernetes.io/instance=tenantscale,app.kubernetes.io/name=tenantscale"},
    })
}

/// A running pod of the Deployment, as the API lists it.
pub fn pod_json(name: &str, ip: &str, started: &str, ready: bool) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "100",
                     "labels": {"app.kubernetes.io/name": "tenantscale", "app.kubernetes.io/instance": "tenantscale",
                                "app.kubernetes.io/component": "pod", "pod-template-hash": "5d8f7c9b4"}},
        "spec": {"containers": [{"name": "pod", "image": "tenantscale:0.1.0"}]},
        "status": {"phase": "Running", "podIP": ip, "startTime": started,
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                   "lastTransitionTime": started}]},
    })
}

pub struct FakeApiServer {
    world: Shared,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Serves a Deployment with `replicas` and `pods` on a free port.
    pub async fn start(replicas: i64, pods: Vec<Value>) -> Self {
        let world = Arc::new(Mutex::new(World {
            replicas,
            scale_version: 1,
            pods: pods
                .into_iter()
                .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p))
                .collect(),
            version: 200,
            pod_port: 8080,
            ..World::default()
        }));
        let app = Router::new()
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                get(get_deployment),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
                get(get_scale).put(put_scale),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                axum::routing::patch(patch_pod),
            )
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(list_endpoint_slices),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                axum::routing::post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(put_lease),
            )
            .route(
                "/api/v1/namespaces/{ns}/configmaps",
                axum::routing::post(create_map),
            )
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(get_map).put(put_map),
            )
            .with_state(Arc::clone(&world));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { world, url, task }
    }

    /// A kube-rs client of the fake.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(self.url.parse().unwrap())).unwrap()
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn log(w: &mut World, line: String) -> Option<Response> {
    w.log.push(line);
    None
}

async fn get_deployment(
    State(w): State<Shared>,
    Path((_, name)): Path<(String, String)>,
) -> Response {
    let mut w = w.lock().unwrap();
    log(&mut w, format!("GET deployments/{name}"));
    if w.forbidden {
        return forbidden("deployments", "apps");
    }
    axum::Json(json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": DEPLOYMENT, "namespace": NS, "resourceVersion": "42"},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "tenantscale",
                 "app.kubernetes.io/instance": "tenantscale", "app.kubernetes.io/component": "pod"}},
                 "template": {"metadata": {}, "spec": {"containers": []}}},
    }))
    .into_response()
}

async fn get_scale(State(w): State<Shared>) -> Response {
    let mut w = w.lock().unwrap();
    log(&mut w, "GET deployments/scale".into());
    if w.forbidden {
        return forbidden("deployments/scale", "apps");
    }
    axum::Json(scale_json(&w)).into_response()
}

async fn put_scale(State(w): State<Shared>, body: Bytes) -> Response {
    let mut w = w.lock().unwrap();
    log(&mut w, "PUT deployments/scale".into());
    if w.forbidden {
        return forbidden("deployments/scale", "apps");
    }
    let scale: Value = serde_json::from_slice(&body).unwrap();
    let sent = scale["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if w.conflicts > 0 || sent != w.scale_version.to_string() {
        w.conflicts = w.conflicts.saturating_sub(1);
        w.scale_version += 1; // the other writer's change
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on deployments.apps \"{DEPLOYMENT}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    w.replicas = scale["spec"]["replicas"].as_i64().unwrap();
    w.scale_version += 1;
    axum::Json(scale_json(&w)).into_response()
}

async fn list_pods(State(w): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut w = w.lock().unwrap();
    log(
        &mut w,
        format!(
            "GET pods?labelSelector={}",
            q.get("labelSelector").cloned().unwrap_or_default()
        ),
    );
    if w.forbidden {
        return forbidden("pods", "");
    }
    let wanted: Vec<(String, String)> = q
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<&Value> = w
        .pods
        .values()
        .filter(|p| {
            wanted
                .iter()
                .all(|(k, v)| p["metadata"]["labels"][k] == v.as_str())
        })
        .collect();
    axum::Json(json!({"kind": "PodList", "apiVersion": "v1",
                      "metadata": {"resourceVersion": w.version.to_string()}, "items": items}))
    .into_response()
}

async fn patch_pod(
    State(w): State<Shared>,
    Path((_, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = w.lock().unwrap();
    log(&mut w, format!("PATCH pods/{name}"));
    if w.forbidden {
        return forbidden("pods", "");
    }
    assert_eq!(
        headers["content-type"], "application/merge-patch+json",
        "a merge patch"
    );
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let Some(pod) = w.pods.get_mut(&name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        );
    };
    for (k, v) in patch["metadata"]["annotations"].as_object().unwrap() {
        pod["metadata"]["annotations"][k] = v.clone();
    }
    let pod = pod.clone();
    axum::Json(pod).into_response()
}

/// The EndpointSlice controller's view of the pods: one slice for the Service, each pod an
/// endpoint with its readiness (a pod with `deletionTimestamp` is terminating).
fn endpoint_slice(w: &World) -> Value {
    let endpoints: Vec<Value> = w
        .pods
        .values()
        .map(|p| {
            let ready = p["status"]["conditions"][0]["status"] == "True";
            let terminating = !p["metadata"]["deletionTimestamp"].is_null();
            json!({
                "addresses": [p["status"]["podIP"]],
                "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": NS, "name": p["metadata"]["name"]},
            })
        })
        .collect();
    json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": format!("{DEPLOYMENT}-x7k2p"), "namespace": NS, "resourceVersion": w.version.to_string(),
                     "labels": {"kubernetes.io/service-name": DEPLOYMENT,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": w.pod_port, "protocol": "TCP"}],
    })
}

/// A list, or with `watch=true` a watch: newline-separated `{"type","object"}` events, one
/// each time the slice changes (the fake looks every 50 ms), the connection held open.
async fn list_endpoint_slices(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let watch = q.get("watch").is_some_and(|w| w == "true");
    let ours = selector == format!("kubernetes.io/service-name={DEPLOYMENT}");
    let mut w = shared.lock().unwrap();
    log(
        &mut w,
        format!(
            "GET endpointslices?labelSelector={selector}{}",
            if watch { "&watch=true" } else { "" }
        ),
    );
    if w.forbidden {
        return forbidden("endpointslices", "discovery.k8s.io");
    }
    if !watch {
        let items = if ours {
            vec![endpoint_slice(&w)]
        } else {
            vec![]
        };
        return axum::Json(json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                                 "metadata": {"resourceVersion": w.version.to_string()}, "items": items}))
        .into_response();
    }
    drop(w);
    let events = futures_util::stream::unfold(
        (Arc::clone(&shared), None::<String>),
        move |(shared, last)| async move {
            loop {
                let slice = endpoint_slice(&shared.lock().unwrap());
                let text = slice["endpoints"].to_string();
                if ours && last.as_deref() != Some(text.as_str()) {
                    let kind = if last.is_none() { "ADDED" } else { "MODIFIED" };
                    let line = format!("{}\n", json!({"type": kind, "object": slice}));
                    return Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                        (shared, Some(text)),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        },
    );
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(events))
        .expect("a response")
}

/// Create, read and replace with resourceVersion checks: leases and configmaps alike.
fn create(
    map: &mut BTreeMap<String, Value>,
    version: &mut u64,
    mut obj: Value,
    kind: &str,
) -> Response {
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    if map.contains_key(&name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{kind} \"{name}\" already exists"),
        );
    }
    *version += 1;
    obj["metadata"]["resourceVersion"] = json!(version.to_string());
    map.insert(name, obj.clone());
    (StatusCode::CREATED, axum::Json(obj)).into_response()
}

fn read(map: &BTreeMap<String, Value>, name: &str, kind: &str) -> Response {
    match map.get(name) {
        Some(obj) => axum::Json(obj.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{kind} \"{name}\" not found"),
        ),
    }
}

fn replace(
    map: &mut BTreeMap<String, Value>,
    version: &mut u64,
    name: &str,
    mut obj: Value,
    kind: &str,
) -> Response {
    let Some(current) = map.get(name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{kind} \"{name}\" not found"),
        );
    };
    if obj["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    *version += 1;
    obj["metadata"]["resourceVersion"] = json!(version.to_string());
    map.insert(name.to_string(), obj.clone());
    axum::Json(obj).into_response()
}

async fn create_lease(State(w): State<Shared>, body: Bytes) -> Response {
    let w = &mut *w.lock().unwrap();
    w.log.push("POST leases".into());
    create(
        &mut w.leases,
        &mut w.version,
        serde_json::from_slice(&body).unwrap(),
        "leases.coordination.k8s.io",
    )
}

async fn get_lease(State(w): State<Shared>, Path((_, name)): Path<(String, String)>) -> Response {
    let w = w.lock().unwrap();
    read(&w.leases, &name, "leases.coordination.k8s.io")
}

async fn put_lease(
    State(w): State<Shared>,
    Path((_, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let w = &mut *w.lock().unwrap();
    w.log.push("PUT leases".into());
    replace(
        &mut w.leases,
        &mut w.version,
        &name,
        serde_json::from_slice(&body).unwrap(),
        "leases.coordination.k8s.io",
    )
}

async fn create_map(State(w): State<Shared>, body: Bytes) -> Response {
    let w = &mut *w.lock().unwrap();
    w.log.push("POST configmaps".into());
    create(
        &mut w.maps,
        &mut w.version,
        serde_json::from_slice(&body).unwrap(),
        "configmaps",
    )
}

async fn get_map(State(w): State<Shared>, Path((_, name)): Path<(String, String)>) -> Response {
    let w = w.lock().unwrap();
    read(&w.maps, &name, "configmaps")
}

async fn put_map(
    State(w): State<Shared>,
    Path((_, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let w = &mut *w.lock().unwrap();
    w.log.push("PUT configmaps".into());
    replace(
        &mut w.maps,
        &mut w.version,
        &name,
        serde_json::from_slice(&body).unwrap(),
        "configmaps",
    )
}

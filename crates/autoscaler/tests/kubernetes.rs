//! The control loop with the Kubernetes actuator, two replicas of it, against the fake API
//! server (`tenantscale_k8s::fake_api`, a TEST DOUBLE: no API server runs here). The "pods"
//! are small HTTP servers on 127.0.0.x that answer `/metrics` like a busy pod (also test
//! doubles); everything else — the loop, the engine, kube-rs, the Lease, the ConfigMap — is
//! the real code.
#![cfg(feature = "kubernetes")]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantscale_autoscaler::control::{self, ControlConfig, Status};
use tenantscale_autoscaler::engine::EngineState;
use tenantscale_autoscaler::kubernetes::{KubeActuator, KubeTarget};
use tenantscale_autoscaler::state::StateStore;
use tenantscale_core::catalog::Catalog;
use tenantscale_k8s::fake_api::{DEPLOYMENT, FakeApiServer, NS, pod_json};

const CATALOG: &str = "cluster: {cores: 8, memory: 16Gi}
tiers:
  gold: {weight: 3, share: 0.9, maxShare: 0.3}
tenants:
  - {id: media-1, tier: gold}
  - {id: media-2, tier: gold}
pool:
  minReplicas: 3
  maxReplicas: 10
  slotsPerPod: 2
  tenantAware:
    stableWindowSeconds: 4
    panicWindowSeconds: 1
";

/// A busy pod's `/metrics` on `ip:port`.
async fn busy_pod(ip: &str, port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            "tenant_queue_depth{tenant_id=\"media-1\"} 6\n\
             tenant_queue_depth{tenant_id=\"media-2\"} 6\n\
             tenantscale_in_flight{tenant_id=\"media-1\"} 1\n\
             tenantscale_in_flight{tenant_id=\"media-2\"} 1\n\
             tenantscale_pod_state{state=\"ready\"} 1\n"
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

struct Replica {
    status: Arc<Mutex<Status>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn replica(api: &FakeApiServer, identity: &str, port: u16) -> Replica {
    let catalog = Catalog::parse(CATALOG).unwrap().catalog;
    let mut target =
        KubeTarget::parse(&format!("{NS}/{DEPLOYMENT}"), port, identity.into()).unwrap();
    target.lease_seconds = 2;
    let (actuator, _members, state) = KubeActuator::new(api.client(), &target);
    let status = Arc::new(Mutex::new(Status::default()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ControlConfig {
        interval: Duration::from_millis(200),
        state: Some(StateStore::ConfigMap(Box::new(state))),
        ..ControlConfig::default()
    };
    let run = tokio::spawn(control::run(
        catalog,
        config,
        actuator,
        EngineState::default(),
        Arc::clone(&status),
        async move {
            let _ = stopped.await;
        },
    ));
    Replica {
        status,
        stop,
        task: tokio::spawn(async move {
            let _ = run.await;
        }),
    }
}

async fn until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lease_holder(api: &FakeApiServer) -> serde_json::Value {
    api.world().leases[&format!("{DEPLOYMENT}-autoscaler")]["spec"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_scales_the_deployment_and_hands_over_with_its_state() {
    // One port, free on three loopback addresses.
    let port = std::net::TcpListener::bind("127.0.0.11:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let mut pods = Vec::new();
    for ip in ips {
        pods.push(busy_pod(ip, port).await);
    }
    let api = FakeApiServer::start(
        3,
        ips.iter()
            .enumerate()
            .map(|(i, ip)| {
                pod_json(
                    &format!("{DEPLOYMENT}-{i}"),
                    ip,
                    "2026-11-28T10:00:00Z",
                    true,
                )
            })
            .collect(),
    )
    .await;
    let a = replica(&api, "autoscaler-a", port);
    let b = replica(&api, "autoscaler-b", port);

    // Each tenant holds 21 (3 pods × (6 queued + 1 in flight)), capped at its entitlement
    // 0.3 × 10 pods × 2 slots = 6: 12 for both, at 2 slots × 0.7 per pod → 9 pods.
    until(Duration::from_secs(20), || {
        api.world().replicas > 3
            && [&a, &b]
                .iter()
                .any(|r| !r.status.lock().unwrap().decisions.is_empty())
    })
    .await;
    let leaders: Vec<bool> = [&a, &b]
        .iter()
        .map(|r| r.status.lock().unwrap().leading)
        .collect();
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    let (leader, follower) = if leaders[0] { (a, b) } else { (b, a) };
    let holder = lease_holder(&api)["holderIdentity"].clone();
    let saved = api.world().maps[&format!("{DEPLOYMENT}-autoscaler-state")]["data"]["state.json"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(saved.contains("\"policy\": \"tenant-aware\""), "{saved}");
    assert!(
        follower.status.lock().unwrap().decisions.is_empty(),
        "the follower never decided"
    );

    // The leader goes away; after its 2 s lease the follower takes over, continuing from the
    // saved windows, and keeps the pool where the demand wants it.
    let _ = leader.stop.send(());
    leader.task.await.unwrap();
    until(Duration::from_secs(10), || {
        follower.status.lock().unwrap().leading
    })
    .await;
    assert_ne!(lease_holder(&api)["holderIdentity"], holder);
    assert_eq!(lease_holder(&api)["leaseTransitions"], 1);
    until(Duration::from_secs(10), || {
        !follower.status.lock().unwrap().decisions.is_empty()
    })
    .await;
    until(Duration::from_secs(10), || api.world().replicas == 9).await;
    let _ = follower.stop.send(());
    follower.task.await.unwrap();
    for p in pods {
        p.abort();
    }
}

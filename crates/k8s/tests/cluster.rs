//! The Kubernetes actuator against `FakeApiServer` (see `tenantscale_k8s::fake_api`), over
//! real HTTP through kube-rs.
#![cfg(feature = "fake-api")]

use serde_json::Value;
use std::collections::HashMap;
use tenantscale_k8s::cluster::{
    ClusterError, ConfigMapState, DELETION_COST, KubePool, LeaderLease, ServiceEndpoints,
};
use tenantscale_k8s::fake_api::{DEPLOYMENT, FakeApiServer, NS, pod_json};

fn four_pods() -> Vec<Value> {
    vec![
        pod_json(
            "tenantscale-pod-aaaaa",
            "10.1.0.11",
            "2026-11-28T10:00:00Z",
            true,
        ),
        pod_json(
            "tenantscale-pod-bbbbb",
            "10.1.0.12",
            "2026-11-28T10:00:00Z",
            true,
        ),
        pod_json(
            "tenantscale-pod-ccccc",
            "10.1.0.13",
            "2026-11-28T11:00:00Z",
            true,
        ),
        pod_json(
            "tenantscale-pod-ddddd",
            "10.1.0.14",
            "2026-11-28T10:30:00Z",
            false,
        ),
    ]
}

#[tokio::test]
async fn scaling_up_writes_the_scale_subresource_and_leaves_the_pods_alone() {
    let api = FakeApiServer::start(3, four_pods()).await;
    let pool = KubePool::new(api.client(), NS, DEPLOYMENT, 8080);
    assert_eq!(pool.replicas().await.unwrap(), 3);
    let pods = pool.pods().await.unwrap();
    assert_eq!(pods.len(), 4);
    assert_eq!(pods[0].addr, "10.1.0.11:8080");
    assert!(pods[0].ready && !pods[3].ready);
    pool.scale_to(5, &HashMap::new()).await.unwrap();
    let w = api.world();
    assert_eq!(w.replicas, 5);
    assert!(!w.log.iter().any(|l| l.starts_with("PATCH")), "{:?}", w.log);
    assert!(
        w.log.iter().any(|l| l.contains("labelSelector=app.kubernetes.io/component=pod,app.kubernetes.io/instance=tenantscale,app.kubernetes.io/name=tenantscale")),
        "pods are listed by the Deployment's selector: {:?}",
        w.log
    );
}

#[tokio::test]
async fn scaling_down_ranks_the_pods_by_outstanding_work_then_youth_as_deletion_cost() {
    let api = FakeApiServer::start(4, four_pods()).await;
    let pool = KubePool::new(api.client(), NS, DEPLOYMENT, 8080);
    let outstanding = HashMap::from([
        ("10.1.0.11:8080".to_string(), 5.0),
        ("10.1.0.12:8080".to_string(), 0.0),
        ("10.1.0.13:8080".to_string(), 0.0),
        ("10.1.0.14:8080".to_string(), 2.0),
    ]);
    pool.scale_to(2, &outstanding).await.unwrap();
    let w = api.world();
    assert_eq!(w.replicas, 2);
    let cost = |name: &str| w.pods[name]["metadata"]["annotations"][DELETION_COST].clone();
    // ccccc and bbbbb are idle; ccccc is younger, so it goes first.
    assert_eq!(cost("tenantscale-pod-ccccc"), "0");
    assert_eq!(cost("tenantscale-pod-bbbbb"), "1");
    assert_eq!(cost("tenantscale-pod-ddddd"), "2");
    assert_eq!(cost("tenantscale-pod-aaaaa"), "3");
    // The costs are written before the replicas drop.
    let last_patch = w.log.iter().rposition(|l| l.starts_with("PATCH")).unwrap();
    let put = w
        .log
        .iter()
        .position(|l| l == "PUT deployments/scale")
        .unwrap();
    assert!(last_patch < put, "{:?}", w.log);
}

#[tokio::test]
async fn a_conflict_is_read_again_and_retried_and_a_persistent_one_is_an_error() {
    let api = FakeApiServer::start(3, four_pods()).await;
    let pool = KubePool::new(api.client(), NS, DEPLOYMENT, 8080);
    api.world().conflicts = 2;
    pool.scale_to(6, &HashMap::new()).await.unwrap();
    assert_eq!(api.world().replicas, 6);
    api.world().conflicts = 10;
    let e = pool.scale_to(7, &HashMap::new()).await.unwrap_err();
    assert!(matches!(e, ClusterError::Api { .. }), "{e}");
    assert!(e.to_string().contains("update deployments/scale"), "{e}");
    assert_eq!(api.world().replicas, 6);
}

#[tokio::test]
async fn a_missing_permission_is_reported_with_the_verb_and_resource() {
    let api = FakeApiServer::start(3, four_pods()).await;
    api.world().forbidden = true;
    let pool = KubePool::new(api.client(), NS, DEPLOYMENT, 8080);
    let e = pool.scale_to(4, &HashMap::new()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ClusterError::Forbidden { .. }), "{text}");
    assert!(
        text.starts_with(
            "forbidden: the autoscaler may not get deployments/scale in namespace tenantscale"
        ),
        "{text}"
    );
    assert!(text.contains("apply the Role"), "{text}");
}

#[tokio::test]
async fn leadership_passes_to_the_other_replica_only_after_the_lease_expires() {
    let api = FakeApiServer::start(3, vec![]).await;
    let a = LeaderLease::new(
        api.client(),
        NS,
        "tenantscale-autoscaler",
        "autoscaler-a",
        15,
    );
    let b = LeaderLease::new(
        api.client(),
        NS,
        "tenantscale-autoscaler",
        "autoscaler-b",
        15,
    );
    let t0 = 1_795_000_000_000i64;
    assert!(
        a.try_lead(t0).await.unwrap(),
        "the first candidate creates the lease"
    );
    assert!(!b.try_lead(t0 + 1_000).await.unwrap());
    assert!(a.try_lead(t0 + 10_000).await.unwrap(), "renewed");
    assert!(
        !b.try_lead(t0 + 20_000).await.unwrap(),
        "renewed at +10 s: held until +25 s"
    );
    // a stops renewing (it died); after its lease runs out, b takes over.
    assert!(b.try_lead(t0 + 26_000).await.unwrap());
    assert!(
        !a.try_lead(t0 + 27_000).await.unwrap(),
        "a came back: b holds it now"
    );
    let lease = api.world().leases["tenantscale-autoscaler"].clone();
    assert_eq!(lease["spec"]["holderIdentity"], "autoscaler-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn two_candidates_racing_for_an_expired_lease_elect_one() {
    let api = FakeApiServer::start(3, vec![]).await;
    let names = ["a", "b", "c"];
    let candidates: Vec<LeaderLease> = names
        .iter()
        .map(|n| LeaderLease::new(api.client(), NS, "race", n, 15))
        .collect();
    let t = 1_795_000_000_000i64;
    let won: Vec<bool> = futures_util::future::join_all(candidates.iter().map(|c| c.try_lead(t)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

#[tokio::test]
async fn the_engine_state_survives_in_a_config_map() {
    let api = FakeApiServer::start(3, vec![]).await;
    let first = ConfigMapState::new(api.client(), NS, "tenantscale-autoscaler-state");
    assert_eq!(first.load().await.unwrap(), None, "a fresh start");
    first.save(r#"{"engine":{"step":1}}"#).await.unwrap();
    first.save(r#"{"engine":{"step":2}}"#).await.unwrap();
    // A restarted (or newly elected) autoscaler reads what the last one wrote.
    let second = ConfigMapState::new(api.client(), NS, "tenantscale-autoscaler-state");
    assert_eq!(
        second.load().await.unwrap().as_deref(),
        Some(r#"{"engine":{"step":2}}"#)
    );
}

/// What `render` writes for the autoscaler (a Lease with no spec, a ConfigMap with no data),
/// as `kubectl apply` leaves them: the actuator takes and fills them with get and update
/// only, the verbs its rendered Role allows (no create).
#[tokio::test]
async fn the_rendered_lease_and_state_are_used_without_create() {
    use tenantscale_k8s::render::{Autoscaler, OLDEST, Options, render};
    let text = "cluster: {cores: 8, memory: 16Gi}
tiers: {gold: {share: 0.5}}
tenants: [{id: media-1, tier: gold}]
pool: {minReplicas: 2, maxReplicas: 4}
kubernetes: {store: {secret: pg, key: url}, redis: deploy}
";
    let catalog = tenantscale_core::catalog::Catalog::parse(text)
        .unwrap()
        .catalog;
    let rendered = render(
        &catalog,
        &Options {
            version: OLDEST,
            autoscaler: Autoscaler::Tenantscale,
            prometheus_operator: false,
            secret: None,
            catalog_text: text.into(),
        },
    )
    .unwrap();
    let lease_name = tenantscale_k8s::autoscaler_lease_name(DEPLOYMENT);
    let state_name = tenantscale_k8s::autoscaler_state_name(DEPLOYMENT);
    let object = |kind: &str, name: &str| {
        let mut v: Value =
            serde_saphyr::from_str(&rendered.files[&format!("{NS}/{kind}-{name}.yaml")]).unwrap();
        v["metadata"]["resourceVersion"] = "1".into();
        v
    };
    let api = FakeApiServer::start(3, vec![]).await;
    {
        let mut w = api.world();
        w.leases
            .insert(lease_name.clone(), object("lease", &lease_name));
        w.maps
            .insert(state_name.clone(), object("configmap", &state_name));
    }
    let lease = LeaderLease::new(api.client(), NS, &lease_name, "autoscaler-a", 15);
    assert!(lease.try_lead(1_795_000_000_000).await.unwrap());
    let state = ConfigMapState::new(api.client(), NS, &state_name);
    assert_eq!(state.load().await.unwrap(), None, "nothing saved yet");
    state.save(r#"{"engine":{"step":1}}"#).await.unwrap();
    assert_eq!(
        state.load().await.unwrap().as_deref(),
        Some(r#"{"engine":{"step":1}}"#)
    );
    let w = api.world();
    assert!(!w.log.iter().any(|l| l.starts_with("POST")), "{:?}", w.log);
    assert!(w.log.contains(&"PUT leases".to_string()), "{:?}", w.log);
    assert!(w.log.contains(&"PUT configmaps".to_string()), "{:?}", w.log);
    assert_eq!(
        w.leases[&lease_name]["spec"]["holderIdentity"],
        "autoscaler-a"
    );
    assert_eq!(
        w.maps[&state_name]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tenantscale-render",
        "the rendered object, updated in place"
    );
}

#[tokio::test]
async fn the_gateway_sees_ready_pods_as_members_and_terminating_ones_as_draining() {
    let mut pods = four_pods();
    pods[1]["metadata"]["deletionTimestamp"] = serde_json::json!("2026-11-28T12:00:00Z");
    let api = FakeApiServer::start(4, pods).await;
    let service = ServiceEndpoints::new(api.client(), NS, DEPLOYMENT);
    let members = service.members().await.unwrap();
    let shown: Vec<(&str, bool)> = members
        .iter()
        .map(|m| (m.addr.as_str(), m.draining))
        .collect();
    // ddddd is not ready: left out until it is.
    assert_eq!(
        shown,
        [
            ("10.1.0.11:8080", false),
            ("10.1.0.12:8080", true),
            ("10.1.0.13:8080", false)
        ]
    );
    // Watched: the same members at once, then every change.
    let (tx, mut rx) = tokio::sync::watch::channel(Default::default());
    let follower = tokio::spawn(service.follow(tx));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().pods, members);
    assert_eq!(rx.borrow().version, 1);
    api.world().pods.get_mut("tenantscale-pod-aaaaa").unwrap()["metadata"]["deletionTimestamp"] =
        serde_json::json!("2026-11-28T12:01:00Z");
    rx.changed().await.unwrap();
    assert!(rx.borrow().pods[0].draining, "{:?}", rx.borrow().pods);
    assert_eq!(rx.borrow().version, 2);
    assert!(
        api.world().log.iter().any(|l| l.ends_with("&watch=true")),
        "a watch, not polling"
    );
    follower.abort();
}

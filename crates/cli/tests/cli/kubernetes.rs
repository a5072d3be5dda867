//! `tenantscale autoscale --kubernetes-deployment` (built with `--features
//! kubernetes-fake-api`) against the fake API server (`tenantscale_k8s::fake_api`, a TEST
//! DOUBLE: no API server runs here), found through a kubeconfig as on a workstation.

use super::{Server, temp_file};
use std::time::{Duration, Instant};
use tenantscale_k8s::fake_api::{DEPLOYMENT, FakeApiServer, NS, pod_json};

/// The fake on a runtime of its own, serving while the test blocks on the binaries.
fn fake_api(
    replicas: i64,
    pods: Vec<serde_json::Value>,
) -> (tokio::runtime::Runtime, FakeApiServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = runtime.block_on(FakeApiServer::start(replicas, pods));
    (runtime, api)
}

/// A kubeconfig (as `kubectl` writes one) for the fake, namespace `tenantscale`.
fn kubeconfig(name: &str, api: &FakeApiServer) -> std::path::PathBuf {
    temp_file(
        name,
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: {NS}}}}}]\n",
            api.url
        ),
    )
}

#[test]
fn autoscale_on_kubernetes_takes_the_lease_scales_to_min_and_publishes_the_pods() {
    // Two pods where the catalog asks for at least three (their IPs serve no metrics).
    let (_runtime, api) = fake_api(
        2,
        vec![
            pod_json(
                "tenantscale-pod-a",
                "127.0.0.21",
                "2026-11-28T10:00:00Z",
                true,
            ),
            pod_json(
                "tenantscale-pod-b",
                "127.0.0.22",
                "2026-11-28T10:05:00Z",
                true,
            ),
        ],
    );
    let kubeconfig = kubeconfig("kubeconfig", &api);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tenantscale"));
    command
        .env("KUBECONFIG", &kubeconfig)
        .env("HOSTNAME", "autoscaler-0");
    let autoscaler = Server::start_command(
        command,
        &[
            "autoscale",
            "-c",
            "examples/gcc-platform.yaml",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "0.2",
            "--kubernetes-deployment",
            &format!("{NS}/{DEPLOYMENT}"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.world().replicas != 3 {
        assert!(Instant::now() < deadline, "never scaled to minReplicas");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lease = api.world().leases[&format!("{DEPLOYMENT}-autoscaler")].clone();
    assert_eq!(lease["spec"]["holderIdentity"], "autoscaler-0");
    let (status, pods) = super::http_with(&autoscaler.addr, "GET", "/v1/pods", &[], "").unwrap();
    assert_eq!(status, 200);
    assert!(
        pods.contains("127.0.0.21:8080") && pods.contains("127.0.0.22:8080"),
        "{pods}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !api
        .world()
        .maps
        .contains_key(&format!("{DEPLOYMENT}-autoscaler-state"))
    {
        assert!(Instant::now() < deadline, "the state was never saved");
        std::thread::sleep(Duration::from_millis(50));
    }
    autoscaler.terminate();
    autoscaler.exit_log();
}

#[test]
fn the_gateway_follows_endpoint_slices_and_stops_sending_to_a_terminating_pod() {
    const SECRET: &str = "kubernetes-test-secret-0123";
    let pod = Server::serve(&[
        "--store",
        &super::temp_store("k8s-slices"),
        "--secret",
        SECRET,
        "--warm-up",
        "0",
    ]);
    let (ip, port) = pod.addr.rsplit_once(':').unwrap();
    let (_runtime, api) = fake_api(
        1,
        vec![pod_json(
            "tenantscale-pod-a",
            ip,
            "2026-11-28T10:00:00Z",
            true,
        )],
    );
    api.world().pod_port = port.parse().unwrap();
    let kubeconfig = kubeconfig("kubeconfig-slices", &api);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tenantscale"));
    command.env("KUBECONFIG", &kubeconfig);
    let gateway = Server::start_command(
        command,
        &[
            "gateway",
            "-c",
            "examples/gcc-platform.yaml",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--endpoint-slices",
            &format!("{NS}/{DEPLOYMENT}"),
        ],
    );
    let query = || {
        super::http_with(
            &gateway.addr,
            "POST",
            "/v1/query",
            &[("Authorization", "Bearer demo-key-media-1")],
            r#"{"query":"refunds"}"#,
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while query().0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the pod never joined: {:?}",
            query()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The pod is being deleted: its endpoint turns terminating and the gateway stops sending.
    api.world().pods.get_mut("tenantscale-pod-a").unwrap()["metadata"]["deletionTimestamp"] =
        serde_json::json!("2026-11-28T12:00:00Z");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = query();
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "still sending: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = api.world().log.clone();
    assert!(
        log.iter().any(|l| l
            == "GET endpointslices?labelSelector=kubernetes.io/service-name=tenantscale-pod&watch=true"),
        "the gateway watches: {log:?}"
    );
}

//! The local loop with real processes: `tenantscale demo`, `up` and `autoscale` starting
//! `serve` pods as children, `gateway --registry` following the autoscaler, and `llm-sim` (the
//! test double for a paid LLM) so a query can take a set time.

use super::{Server, free_port, http_with, root, temp_file};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "local-loop-test-secret-0123";

/// A fresh directory for one test.
pub(super) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantscale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// GET a JSON document.
fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = http_with(addr, "GET", path, &[], "").unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `GET /status` until `done` holds (or panics after `limit`); returns that status.
pub(super) fn wait_status(api: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = get_json(api, "/status");
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting; last status: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `addr` of every entry of `pods` (in `/status` or the saved state), sorted.
fn pod_addrs(status: &Value) -> Vec<String> {
    let mut pods: Vec<String> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["addr"].as_str().unwrap().to_string())
        .collect();
    pods.sort();
    pods
}

pub(super) fn ready_pods(status: &Value) -> usize {
    status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "ready" || p["state"] == "warming")
        .count()
}

/// SIGTERM and wait (its pods drain first); asserts a clean exit and returns the log.
pub(super) fn stop(server: Server) -> String {
    server.terminate();
    server.exit_log()
}

/// The example's tenants on a pool of 1–4 pods of 2 slots, with short windows and a
/// scale-down stabilization of `scale_down_seconds`.
pub(super) fn small_pool(name: &str, scale_down_seconds: u32) -> std::path::PathBuf {
    let base = std::fs::read_to_string(root().join("examples/gcc-platform.yaml")).unwrap();
    let tenants_only = base.split("pool:").next().unwrap();
    temp_file(
        name,
        &format!(
            "{tenants_only}pool:\n  minReplicas: 1\n  maxReplicas: 4\n  slotsPerPod: 2\n  tenantAware:\n    stableWindowSeconds: 10\n    panicWindowSeconds: 2\n    behavior:\n      scaleDown: {{stabilizationWindowSeconds: {scale_down_seconds}}}\n"
        ),
    )
}

/// `llm-sim` answering after `ms`, and its chat completions URL.
fn llm_sim(ms: u32) -> (Server, String) {
    let llm = Server::start(&[
        "llm-sim",
        "--listen",
        "127.0.0.1:0",
        "--latency-ms",
        &ms.to_string(),
    ]);
    let url = format!("http://{}/v1/chat/completions", llm.addr);
    (llm, url)
}

/// `tenantscale autoscale` on `catalog`, listening on `listen`, with the tests' secret, no
/// warm-up, a round every 0.5 s and `data` as its data dir; `extra` adds flags.
pub(super) fn autoscale(
    catalog: &std::path::Path,
    listen: &str,
    data: &std::path::Path,
    extra: &[&str],
) -> Server {
    let mut args = vec![
        "autoscale",
        "-c",
        catalog.to_str().unwrap(),
        "--listen",
        listen,
        "--secret",
        SECRET,
        "--warm-up",
        "0",
        "--interval",
        "0.5",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A gateway on a free port that follows the pods of the autoscaler at `api`.
fn registry_gateway(catalog: &std::path::Path, api: &str) -> Server {
    let registry = format!("http://{api}");
    Server::start(&[
        "gateway",
        "-c",
        catalog.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--secret",
        SECRET,
        "--registry",
        &registry,
    ])
}

/// Threads sending queries through the gateway until stopped: (answered, failed) where failed
/// is a 5xx or a connection error (a 429 is the gateway's limit, not a failure).
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &str, tenants: &[&str], generate: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, failed) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let threads = tenants
            .iter()
            .map(|t| {
                let (gateway, tenant) = (gateway.to_string(), t.to_string());
                let (stop, answered, failed) = (
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                    Arc::clone(&failed),
                );
                std::thread::spawn(move || {
                    let body = format!(r#"{{"query":"refunds","generate":{generate}}}"#);
                    let auth = format!("Bearer demo-key-{tenant}");
                    while !stop.load(Ordering::Relaxed) {
                        let headers = [
                            ("Authorization", auth.as_str()),
                            ("X-Tenant-ID", tenant.as_str()),
                        ];
                        match http_with(&gateway, "POST", "/v1/query", &headers, &body) {
                            Ok((200, _)) => answered.fetch_add(1, Ordering::Relaxed),
                            Ok((429, _)) => 0,
                            Ok((status, body)) => {
                                eprintln!("{tenant}: {status} {body}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                eprintln!("{tenant}: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            answered,
            failed,
            threads,
        }
    }

    /// Stops the threads: (answered, failed).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn demo_scales_up_for_the_spike_and_back_down_without_losing_a_query() {
    let report = temp_dir("demo-report");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantscale"))
        .args(["demo", "--duration", "45s", "--report"])
        .arg(&report)
        .current_dir(root())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {log}");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["droppedOnDrain"], 0, "{s}");
    let min = s["minReplicas"].as_u64().unwrap();
    assert!(
        s["peakReplicas"].as_u64().unwrap() > min,
        "it scaled up: {s}"
    );
    assert_eq!(
        s["finalReplicas"].as_u64(),
        Some(min),
        "it scaled back down: {s}"
    );
    let onset = s["spikeStartS"].as_f64().unwrap();
    let first_up = s["firstScaleUpS"]
        .as_f64()
        .expect("a scale-up after the onset");
    assert!(
        first_up >= onset && first_up - onset <= 5.0,
        "reaction: {s}"
    );
    for class in s["classes"].as_array().unwrap() {
        assert!(class["requests"].as_u64().unwrap() > 0);
        assert!(
            class["maxShare"].as_f64().unwrap() <= class["allowedShare"].as_f64().unwrap() + 1e-9,
            "{class}"
        );
    }
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("media"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("first scale-up"));
    let _ = std::fs::remove_dir_all(&report);
}

#[test]
fn up_replaces_a_killed_pod_without_failing_a_query_and_drains_on_sigterm() {
    let data = temp_dir("up-kill");
    let mut up = Server::start(&[
        "up",
        "-c",
        "examples/gcc-platform.yaml",
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--warm-up",
        "0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let api = up.addr.clone();
    let line = up.wait_for("gateway serving");
    let gateway = line
        .split_once("listen=")
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let before = wait_status(&api, Duration::from_secs(30), |s| ready_pods(s) == 3);

    let load = Load::start(
        &gateway,
        &["media-1", "finance-1", "retail-1", "media-2"],
        false,
    );
    std::thread::sleep(Duration::from_millis(500));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("autoscaler-state.json")).unwrap())
            .unwrap();
    let victim = &state["pods"][0];
    let status = std::process::Command::new("kill")
        .args(["-KILL", &victim["pid"].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let after = wait_status(&api, Duration::from_secs(20), |s| {
        ready_pods(s) == 3 && !pod_addrs(s).contains(&victim["addr"].as_str().unwrap().to_string())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (answered, failed) = load.finish();
    assert!(answered > 50, "{answered} answered");
    assert_eq!(
        failed, 0,
        "a killed pod cost no query (the gateway retried them)"
    );
    assert!(after["restarts"].as_u64().unwrap() >= 1);
    assert_ne!(pod_addrs(&before), pod_addrs(&after));

    let pids: Vec<u64> = serde_json::from_str::<Value>(
        &std::fs::read_to_string(data.join("autoscaler-state.json")).unwrap(),
    )
    .unwrap()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    let log = stop(up);
    assert!(log.contains("pod drained and stopped"), "{log}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pod {pid} still runs"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_restarted_autoscaler_adopts_its_pods_and_neither_grows_nor_shrinks_them() {
    let data = temp_dir("restart");
    // Small pods and a 10-minute scale-down window: once scaled up, the pool stays, across a
    // restart too. Kubernetes' stabilization seeds a fresh history with the current count,
    // so this cannot tell a restored window from a lost one; that the restored state decides
    // exactly as the uninterrupted run is the control module's unit test. This one checks
    // the adoption: the same pods, no new ones, no scale either way.
    let catalog = small_pool("restart.yaml", 600);
    let (llm, llm_url) = llm_sim(300);
    let start = |extra: &[&str]| {
        let flags = [&["--llm", llm_url.as_str()], extra].concat();
        autoscale(&catalog, "127.0.0.1:0", &data, &flags)
    };
    let first = start(&[]);
    wait_status(&first.addr, Duration::from_secs(30), |s| ready_pods(s) == 1);
    let gateway = registry_gateway(&catalog, &first.addr);
    let tenants = [
        "media-1",
        "media-2",
        "media-3",
        "finance-1",
        "finance-2",
        "finance-3",
    ];
    let load = Load::start(&gateway.addr, &tenants, true);
    let grown = wait_status(&first.addr, Duration::from_secs(30), |s| {
        s["replicas"].as_u64() >= Some(3) && ready_pods(s) >= 3
    });
    let (answered, failed) = load.finish();
    assert!(answered > 0);
    assert_eq!(failed, 0);
    drop(gateway);
    // No demand now, but the window holds the pool.
    std::thread::sleep(Duration::from_secs(2));
    let held = get_json(&first.addr, "/status");
    let replicas = held["replicas"].as_u64().unwrap();
    assert_eq!(Some(replicas), grown["replicas"].as_u64(), "{held}");
    let pods = pod_addrs(&held);
    let log = stop(first);
    assert!(log.contains("pods keep running"), "{log}");

    // (Its "restored … adopted=N" line comes before the address Server::start waits for.)
    let second = start(&["--stop-pods"]);
    // Ten decisions later: the same pods, no scale-down (the window), no scale-up.
    std::thread::sleep(Duration::from_secs(5));
    let after = get_json(&second.addr, "/status");
    assert_eq!(pod_addrs(&after), pods, "the same pods, adopted: {after}");
    assert_eq!(after["restarts"], 0);
    for d in after["decisions"].as_array().unwrap() {
        assert_eq!(d["desired"].as_u64(), Some(replicas), "{d}");
    }
    let log = stop(second);
    assert!(log.contains("draining the pods"), "{log}");
    drop(llm);
    let _ = std::fs::remove_dir_all(&data);
}

/// A throwaway Prometheus (the Debian package's binary) on a free port with `config`, killed on
/// drop. Without the binary the test is skipped, except under CI (`.ci/run` installs it).
struct Prometheus {
    child: std::process::Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(config: &str) -> Option<Self> {
        let dir = temp_dir("prometheus");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = super::spawn_tool(
            std::process::Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stderr(std::fs::File::create(dir.join("log")).unwrap()),
        )?;
        let server = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            http_with(&server.addr, "GET", "/-/ready", &[], ""),
            Ok((200, _))
        ) {
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn autoscale_can_read_its_signals_from_prometheus_and_holds_still_when_it_is_gone() {
    let api = format!("127.0.0.1:{}", free_port());
    // The shipped example, pointed at this test's autoscaler.
    let config = std::fs::read_to_string(root().join("examples/prometheus-local.yml"))
        .unwrap()
        .replace("127.0.0.1:9090", &api);
    let Some(prometheus) = Prometheus::start(&config) else {
        return;
    };
    let data = temp_dir("prometheus-source");
    let catalog = small_pool("prometheus-source.yaml", 3);
    let (llm, llm_url) = llm_sim(300);
    let prometheus_url = format!("http://{}", prometheus.addr);
    let autoscaler = autoscale(
        &catalog,
        &api,
        &data,
        &[
            "--llm",
            &llm_url,
            "--prometheus",
            &prometheus_url,
            "--prometheus-window",
            "4",
            "--stop-pods",
        ],
    );
    // The first pod is ready once Prometheus has scraped it (found through the API).
    wait_status(&api, Duration::from_secs(40), |s| ready_pods(s) == 1);
    let gateway = registry_gateway(&catalog, &api);
    let tenants = ["media-1", "media-2", "finance-1", "finance-2", "retail-1"];
    let load = Load::start(&gateway.addr, &tenants, true);
    let grown = wait_status(&api, Duration::from_secs(40), |s| {
        s["replicas"].as_u64() >= Some(3)
    });
    assert_eq!(grown["source"], "prometheus", "{grown}");
    assert!(
        grown["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "media-1" && t["demand"].as_f64() > Some(0.0)),
        "per-tenant demand comes from Prometheus: {grown}"
    );
    let (answered, failed) = load.finish();
    assert!(answered > 0);
    assert_eq!(failed, 0);

    // Prometheus goes away: no observation, so no decision — the pool holds, as Kubernetes'
    // HPA does when its metrics API fails.
    let before = get_json(&api, "/status");
    drop(prometheus);
    let gone = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // 8 rounds (4 s) without Prometheus, longer than the 3 s scale-down window.
    let blind = wait_status(&api, Duration::from_secs(20), |s| {
        s["sourceErrors"].as_u64() >= Some(8)
    });
    assert_eq!(blind["replicas"], before["replicas"], "{blind}");
    // No decision since it went (one round already under way may still finish).
    let last = blind["decisions"].as_array().unwrap().last().unwrap()["at"]
        .as_f64()
        .unwrap();
    assert!(
        last < gone + 1.0,
        "decided at {last}, Prometheus gone at {gone}"
    );
    assert!(
        blind["lastSourceError"]
            .as_str()
            .is_some_and(|e| e.contains("Prometheus at")),
        "{blind}"
    );
    let log = stop(autoscaler);
    assert!(log.contains("no observation this round"), "{log}");
    drop((gateway, llm));
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn with_redis_the_autoscaler_state_lives_in_redis_and_a_new_data_dir_resumes_from_it() {
    let Some(redis) = super::RedisServer::start() else {
        return;
    };
    let catalog = root().join("examples/gcc-platform.yaml");
    let start = |data: &std::path::Path, extra: &[&str]| {
        let redis_flags = ["--redis", &redis.url, "--state-key", "test:autoscaler"];
        autoscale(
            &catalog,
            "127.0.0.1:0",
            data,
            &[&redis_flags[..], extra].concat(),
        )
    };
    let first_dir = temp_dir("redis-state-1");
    let first = start(&first_dir, &[]);
    let started = wait_status(&first.addr, Duration::from_secs(30), |s| ready_pods(s) == 3);
    let pods = pod_addrs(&started);
    stop(first);
    assert!(
        !first_dir.join("autoscaler-state.json").exists(),
        "with --redis the state is not in the data dir"
    );
    let stored: String = redis::cmd("GET")
        .arg("test:autoscaler")
        .query(&mut redis.connection())
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["policy"], "tenant-aware");
    // The stored state lists its pods as `/status` does.
    assert_eq!(pod_addrs(&stored), pods, "{stored}");

    // Another data dir, the same Redis: it resumes with the same pods.
    let second_dir = temp_dir("redis-state-2");
    let second = start(&second_dir, &["--stop-pods"]);
    let resumed = wait_status(&second.addr, Duration::from_secs(10), |s| {
        ready_pods(s) == 3
    });
    assert_eq!(pod_addrs(&resumed), pods, "{resumed}");
    assert_eq!(resumed["restarts"], 0);
    stop(second);
    for dir in [first_dir, second_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

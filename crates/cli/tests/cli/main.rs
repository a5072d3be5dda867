//! End-to-end tests: run the real `tenantscale` binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

mod attack_connections;
mod attack_listen;
mod attack_store;
mod coherence;
mod gateway;
mod k8s;
#[cfg(feature = "kubernetes-fake-api")]
mod kubernetes;
mod local;
mod reload_pod;
mod tls;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tenantscale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenantscale"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}
fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A file in the temp dir, unique to this test process and call.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("tenantscale-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, contents).unwrap();
    path
}

/// A fresh SQLite store URL, `sqlite://…/N-name.db`, in this run's temp folder.
fn temp_store(name: &str) -> String {
    format!(
        "sqlite://{}",
        temp_file(&format!("{name}.db"), "").display()
    )
}

/// A test's outside requirement is missing: under CI (`.ci/run` provides them all) the test
/// fails; elsewhere it says so and the caller skips the test.
fn missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide {what} (see .ci/run)"
    );
    eprintln!("skipped: no {what}");
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts `text`; skipped without
/// promtool, except under CI.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return missing(&format!("promtool ({e})")),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "{} differs: rerun with UPDATE_GOLDEN=1 if intended",
        path.display()
    );
}

#[test]
fn help_lists_the_commands() {
    let o = tenantscale(&["--help"]);
    assert!(o.status.success());
    for word in ["check", "hpa"] {
        assert!(stdout(&o).contains(word), "{}", stdout(&o));
    }
    let o = tenantscale(&["hpa", "replay", "--help"]);
    assert!(stdout(&o).contains("--explain"), "{}", stdout(&o));
}

#[test]
fn check_reproduces_the_seeds_quota_math() {
    let o = tenantscale(&["check", "-c", "examples/seed-quota.yaml", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: tiers (line 7): shares sum to 100 %"),
        "{}",
        stderr(&o)
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["headroom"], 0.0);
    let tenant = |id: &str| {
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    let gib: f64 = 1024.0 * 1024.0 * 1024.0;
    for (id, cpu, mem) in [
        ("gold-3", 1.2, 2.4),
        ("silver-3", 1.0, 2.0),
        ("bronze-3", 0.4, 0.8),
    ] {
        let g = &tenant(id)["guaranteed"];
        assert_eq!(g["cpu"], cpu, "{id}");
        assert_eq!(g["memoryBytes"], (mem * gib).round() as i64, "{id}");
        assert_eq!(g["pods"], 1, "{id}");
        // The seed's example sets no storage quota: every tier has the default.
        assert_eq!(
            tenant(id)["storage"],
            serde_json::json!({"documents": 10000, "bytes": 64 << 20}),
            "{id}"
        );
    }
    let gold = &v["tiers"][0];
    assert_eq!(
        (
            gold["name"].as_str(),
            gold["tenants"].as_u64(),
            gold["share"].as_f64()
        ),
        (Some("gold"), Some(10), Some(0.3))
    );
}

#[test]
fn check_prints_a_readable_table() {
    let o = tenantscale(&["check", "-c", "examples/gcc-platform.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "the platform example has no warnings");
    golden("check-gcc-platform.txt", &stdout(&o));
}

#[test]
fn check_rejects_bad_catalogs_with_paths_and_lines() {
    let text = std::fs::read_to_string(root().join("examples/gcc-platform.yaml"))
        .unwrap()
        .replacen("tier: silver", "tier: platinum", 1);
    let o = tenantscale(&[
        "check",
        "-c",
        temp_file("bad.yaml", &text).to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(r#"tenants[10].tier (line 30): unknown tier "platinum""#),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");

    let o = tenantscale(&["check", "-c", "/nonexistent/tenantscale.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/tenantscale.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn replay_seed_worked_example() {
    let o = tenantscale(&["hpa", "replay", "examples/hpa/seed-worked-example.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["t"].as_i64(), lines[0]["desiredReplicas"].as_i64()),
        (Some(0), Some(12))
    );
    assert_eq!(lines[0]["currentMetrics"][0]["averageValueMilli"], 11900);
}

#[test]
fn replay_explains_the_seeds_behavior_block() {
    let o = tenantscale(&[
        "hpa",
        "replay",
        "examples/hpa/seed-behavior.yaml",
        "--explain",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    golden("replay-seed-behavior.txt", &stdout(&o));
}

/// Every Kubernetes case ported in tenantscale-core's tests, through the binary.
#[test]
fn replay_passes_the_ported_kubernetes_cases() {
    let dir = root().join("tests/fixtures/hpa-replay");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = fixture["name"].as_str().unwrap();
        let file = temp_file("case.json", &fixture["replay"].to_string());
        let o = tenantscale(&["hpa", "replay", file.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let out: Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
        assert_eq!(
            out["desiredReplicas"], fixture["expect"]["desiredReplicas"],
            "{name}"
        );
        for c in fixture["expect"]["conditions"].as_array().unwrap() {
            let got = out["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["type"] == c[0]);
            let got = got.unwrap_or_else(|| panic!("{name}: no {} condition", c[0]));
            assert_eq!((&got["status"], &got["reason"]), (&c[1], &c[2]), "{name}");
        }
        count += 1;
    }
    assert!(count >= 30, "only {count} fixtures in {}", dir.display());
}

#[test]
fn replay_rejects_bad_input_naming_the_field() {
    let cases = [
        (
            "hpa: {spec: {maxReplicas: 5}}\nsteps: [{t: 0, recommendation: 3}]\n",
            "missing field `currentReplicas`",
        ),
        (
            "hpa: {spec: {maxReplicas: 5}}\ncurrentReplicas: 2\nsteps:\n  - {t: 0, recommendation: 3}\n  - {t: 0, recommendation: 3}\n",
            "steps[1].t (line 5): must be strictly increasing",
        ),
        (
            "hpa: {spec: {maxReplicas: 5, minReplicas: 9}}\ncurrentReplicas: 2\nsteps: [{t: 0, recommendation: 3}]\n",
            "hpa.spec.maxReplicas (line 1): must be >= minReplicas (9)",
        ),
        (
            "hpa: {spec: {maxReplicas: 5}}\ncurrentReplicas: 2\nsteps: [{t: 0, recommendation: 3, wat: 1}]\n",
            "steps[0].wat (line 3, column 35): unknown field `wat`",
        ),
        (
            "hpa: {spec: {maxReplicas: 5}}\ncurrentReplicas: 2\nsteps:\n  - t: 0\n    metrics: {cpu: {pods: [{usage: 0.5}]}}\n",
            "steps[0].metrics.cpu.pods[0].request (line 5): required for Resource metrics",
        ),
        (
            "hpa: {spec: {maxReplicas: 5}}\ncurrentReplicas: 2\nsteps: [{t: 0}]\n",
            "exactly one of `recommendation` and `metrics`",
        ),
    ];
    for (text, want) in cases {
        let o = tenantscale(&[
            "hpa",
            "replay",
            temp_file("bad.yaml", text).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{want}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "want {want:?}, got {}",
            stderr(&o)
        );
    }
}

#[test]
fn simulate_prints_json_and_writes_an_offline_report() {
    let scenario = "name: tiny\ncatalog: gcc-platform.yaml\nduration: 10m\nclasses:\n  - {name: media, match: media-*, baseRps: 1, rate: [spike: {at: 3m, for: 4m, multiplier: 20}]}\n  - {name: retail, match: retail-*, baseRps: 1}\n";
    let file = root()
        .join("examples")
        .join(format!("tiny-{}.yaml", std::process::id()));
    std::fs::write(&file, scenario).unwrap();
    let report_dir = temp_file("unused", "").with_file_name("report");
    let o = tenantscale(&[
        "simulate",
        "--scenario",
        file.to_str().unwrap(),
        "--policies",
        "static,hpa-queue,tenant-aware,hpa:examples/hpa/fast-queue-hpa.yaml",
        "--seed",
        "9",
        "--json",
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            v["scenario"].as_str(),
            v["seed"].as_u64(),
            v["simulatedSeconds"].as_f64()
        ),
        (Some("tiny"), Some(9), Some(600.0))
    );
    let names: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4);
    assert_eq!(names[3], "hpa:fast-queue-hpa");
    assert!(
        names[0].starts_with("static-"),
        "static is sized to the peak: {names:?}"
    );
    for p in v["policies"].as_array().unwrap() {
        for key in [
            "firstScaleUpS",
            "reliefS",
            "peakReplicas",
            "meanReplicas",
            "podHours",
            "cost",
            "maxTenantShare",
        ] {
            assert!(p.get(key).is_some(), "{key} missing in {p}");
        }
        let media = &p["classes"][0];
        for key in [
            "name",
            "spiking",
            "requests",
            "served",
            "rejected429",
            "p50Ms",
            "p95Ms",
            "p99Ms",
            "preSpikeP99Ms",
            "overSlo",
            "slaBreachMinutes",
        ] {
            assert!(media.get(key).is_some(), "{key} missing in {media}");
        }
        assert_eq!(media["spiking"], true);
    }
    let html = std::fs::read_to_string(report_dir.join("index.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("tenant-aware"),
        "charts and policies in the page"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("<script"),
        "the page needs no network"
    );
}

#[test]
fn simulate_rejects_bad_scenarios_and_policies() {
    let o = tenantscale(&[
        "simulate",
        "--scenario",
        "examples/scenarios/media-spike.yaml",
        "--policies",
        "magic",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown policy \"magic\""),
        "{}",
        stderr(&o)
    );
    let hpa = temp_file(
        "cpu-mem.yaml",
        "spec: {maxReplicas: 5, metrics: [{type: Resource, resource: {name: memory, target: {type: Utilization, averageUtilization: 50}}}]}\n",
    );
    let policy = format!("hpa:{}", hpa.display());
    let o = tenantscale(&[
        "simulate",
        "--scenario",
        "examples/scenarios/media-spike.yaml",
        "--policies",
        &policy,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the simulator can feed cpu and queue_depth_per_tenant"),
        "{}",
        stderr(&o)
    );
    let bad = temp_file("bad-scenario.yaml", "name: x\nduration: 1h\nclasses: []\n");
    let o = tenantscale(&[
        "simulate",
        "--scenario",
        bad.to_str().unwrap(),
        "-c",
        "examples/gcc-platform.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("classes (line 3): at least one class is required"),
        "{}",
        stderr(&o)
    );
}

/// A minimal HTTP/1.1 exchange over a fresh connection, as the seed's clients send it (the
/// tenant in `X-Tenant-ID`): (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    tenant: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    http_with(addr, method, path, &[("X-Tenant-ID", tenant)], body)
}

/// [`http`] with any request headers.
fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

#[test]
fn serve_answers_queries_and_drains_without_dropping_any() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = std::env::temp_dir().join(format!("tenantscale-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = dir.join("hpa.md");
    std::fs::write(
        &doc,
        "The horizontal pod autoscaler adjusts replicas from observed metrics.",
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.join("store.db").display());
    ingest(&store, "media-1", &doc);

    let pod = Server::serve(&[
        "--store",
        &store,
        "--trust-tenant-header",
        "--drain-grace",
        "1",
    ]);
    let addr = pod.addr.clone();
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/query",
        "media-1",
        r#"{"query":"what adjusts replicas"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"documentId\":\"hpa.md\""), "{body}");
    promtool_accepts(&http(&addr, "GET", "/metrics", "media-1", "").unwrap().1);

    // Load from 8 clients; SIGTERM; clients stop when /ready says draining, as a gateway would.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, stop, sent, failed) =
                (addr.clone(), stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    match http(
                        &addr,
                        "POST",
                        "/v1/query",
                        "media-1",
                        r#"{"query":"replicas"}"#,
                    ) {
                        Ok((200, _)) => {}
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    while sent.load(Ordering::SeqCst) < 200 {
        std::thread::yield_now();
    }
    pod.terminate();
    loop {
        match http(&addr, "GET", "/ready", "media-1", "") {
            Ok((503, body)) => {
                assert!(body.contains("draining"), "{body}");
                break;
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("the pod stopped accepting before reporting draining: {e}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let rest = pod.exit_log();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "of {} queries",
        sent.load(Ordering::SeqCst)
    );
    assert!(rest.contains("dropped=0"), "{rest}");

    // The drain recorded media-1's volume: a new pod on the same store preloads it and reports
    // warming until its window ends.
    let mut pod = Server::serve(&[
        "--store",
        &store,
        "--trust-tenant-header",
        "--preload",
        "1",
        "--warm-up",
        "2",
    ]);
    let addr = pod.addr.clone();
    let (status, body) = http(&addr, "GET", "/ready", "media-1", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state":"warming""#), "{body}");
    assert!(body.contains(r#""warmUntil":1"#), "{body}");
    let preloaded = pod.wait_for("preloaded");
    assert!(preloaded.contains("media-1"), "{preloaded}");
    let (_, metrics) = http(&addr, "GET", "/metrics", "media-1", "").unwrap();
    assert!(
        metrics.contains(r#"tenantscale_cache_misses_total{tenant_id="media-1"} 1"#),
        "the preload is the only miss"
    );
    let (status, _) = http(
        &addr,
        "POST",
        "/v1/query",
        "media-1",
        r#"{"query":"replicas"}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    let (_, metrics) = http(&addr, "GET", "/metrics", "media-1", "").unwrap();
    assert!(
        metrics.contains(r#"tenantscale_cache_hits_total{tenant_id="media-1"} 1"#),
        "the first query finds the preloaded index"
    );
    pod.wait_for("warm-up over");
    let (status, body) = http(&addr, "GET", "/ready", "media-1", "").unwrap();
    assert_eq!(
        (status, body.contains(r#""state":"ready""#)),
        (200, true),
        "{body}"
    );
    pod.terminate();
    pod.exit_log();
}

/// A fresh database on the Postgres server named by `TENANTSCALE_TEST_POSTGRES`
/// (`postgres://USER@HOST:PORT/DB`, a role allowed to create databases; `.ci/run` starts one).
/// Without it the test is skipped, except under CI, where it fails.
fn fresh_postgres_database(name: &str) -> Option<String> {
    let Ok(admin) = std::env::var("TENANTSCALE_TEST_POSTGRES") else {
        missing("TENANTSCALE_TEST_POSTGRES (a Postgres server)");
        return None;
    };
    let db = format!("{name}_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    // Separate statements: a multi-statement batch runs as one transaction, which these refuse.
    for statement in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        client.batch_execute(&statement).unwrap();
    }
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{db}"))
}

/// `tenantscale ingest` of `doc` for `tenant` of the demo catalog into `store`.
fn ingest(store: &str, tenant: &str, doc: &Path) {
    let o = ingest_with(store, tenant, doc, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `tenantscale ingest` with `extra` options; its output, whatever the outcome.
fn ingest_with(store: &str, tenant: &str, doc: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ingest",
        "-c",
        "examples/gcc-platform.yaml",
        "--tenant",
        tenant,
        "--store",
        store,
    ];
    args.extend_from_slice(extra);
    args.push(doc.to_str().unwrap());
    tenantscale(&args)
}

/// A running `tenantscale` server (`serve` or `llm-sim`): its process, its log (stderr) and
/// the address it logged ("listen=…").
struct Server {
    child: std::process::Child,
    log: std::io::BufReader<std::process::ChildStderr>,
    addr: String,
}

impl Server {
    /// Starts `tenantscale ARGS…` and waits until it logs its address.
    fn start(args: &[&str]) -> Self {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_tenantscale")), args)
    }

    /// As [`Server::start`], with a prepared command (its environment).
    fn start_command(mut command: Command, args: &[&str]) -> Self {
        let mut child = command
            .args(args)
            .current_dir(root())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut server = Self {
            child,
            log,
            addr: String::new(),
        };
        let line = server.wait_for("listen=");
        let after = line.split_once("listen=").unwrap().1;
        server.addr = after.split_whitespace().next().unwrap().to_string();
        server
    }

    /// `tenantscale serve` on the demo catalog, a free port and `args`.
    fn serve(args: &[&str]) -> Self {
        let mut all = vec![
            "serve",
            "-c",
            "examples/gcc-platform.yaml",
            "--listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        Self::start(&all)
    }

    /// Reads the log up to the first line containing `needle`; returns that line.
    fn wait_for(&mut self, needle: &str) -> String {
        use std::io::BufRead;
        let mut read = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.log.read_line(&mut line).unwrap() > 0,
                "the server exited without logging {needle:?}; its log since the last wait:\n{read}"
            );
            if line.contains(needle) {
                return line;
            }
            read.push_str(&line);
        }
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; asserts it succeeded and returns the rest of the log.
    fn exit_log(mut self) -> String {
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.log, &mut rest).unwrap();
        assert!(status.success(), "exit {status:?}: {rest}");
        rest
    }
}

/// A failed test must not leave its server running (holding ports and the test's output).
impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

#[test]
fn serve_on_postgres_keeps_tenants_apart_and_drains() {
    let Some(store) = fresh_postgres_database("tenantscale_cli") else {
        return;
    };
    let media = temp_file(
        "media-plan.md",
        "The media team renders video thumbnails at night.",
    );
    let finance = temp_file(
        "finance-plan.md",
        "The finance team closes the quarterly ledger.",
    );
    for (tenant, doc) in [("media-1", &media), ("finance-1", &finance)] {
        ingest(&store, tenant, doc);
    }
    let pod = Server::serve(&[
        "--store",
        &store,
        "--trust-tenant-header",
        "--drain-grace",
        "0",
    ]);
    let addr = pod.addr.clone();
    for (tenant, own, other) in [
        ("media-1", "media-plan", "finance-plan"),
        ("finance-1", "finance-plan", "media-plan"),
    ] {
        // Ask for the other tenant's words: the answer may only come from the tenant's own.
        let query = r#"{"query":"finance quarterly ledger media video thumbnails","topK":50}"#;
        let (status, body) = http(&addr, "POST", "/v1/query", tenant, query).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(own), "{tenant}: {body}");
        assert!(
            !body.contains(other),
            "{tenant} saw another tenant's document: {body}"
        );
    }
    let path = format!(
        "/v1/documents/{}",
        finance.file_name().unwrap().to_str().unwrap()
    );
    let (status, _) = http(&addr, "DELETE", &path, "media-1", "").unwrap();
    assert_eq!(status, 404, "media-1 cannot delete finance-1's document");
    let (status, _) = http(&addr, "DELETE", &path, "finance-1", "").unwrap();
    assert_eq!(status, 200);

    pod.terminate();
    let rest = pod.exit_log();
    assert!(rest.contains("dropped=0"), "{rest}");
}

/// Polls `/metrics` until it has `needle` (each poll is a fresh scrape; the deadline only
/// bounds a broken run).
fn wait_for_metric(addr: &str, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, text) = http(addr, "GET", "/metrics", "media-1", "").unwrap();
        if text.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in\n{text}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_full_tenant_queue_gets_429_while_another_tenant_is_served() {
    // One slot, one queue place per tenant; llm-sim makes each answer take a second.
    let catalog = temp_file(
        "one-slot.yaml",
        "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {share: 0.5, maxShare: 0.3}\n\
tenants:\n  - {id: media-1, tier: gold}\n  - {id: finance-1, tier: gold}\n\
pool: {maxReplicas: 4, slotsPerPod: 1, queuePerTenant: 1}\n",
    );
    let mut llm = Server::start(&["llm-sim", "--listen", "127.0.0.1:0", "--latency-ms", "1000"]);
    let store = temp_store("429");
    let llm_url = format!("http://{}/v1/chat/completions", llm.addr);
    let pod = Server::start(&[
        "serve",
        "-c",
        catalog.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--trust-tenant-header",
        "--warm-up",
        "0",
        "--drain-grace",
        "0",
        "--llm-url",
        &llm_url,
    ]);
    let addr = pod.addr.clone();
    let slow = r#"{"query":"anything","generate":true}"#;
    let background = |tenant: &'static str| {
        let addr = addr.clone();
        std::thread::spawn(move || http(&addr, "POST", "/v1/query", tenant, slow).unwrap().0)
    };
    let first = background("media-1");
    wait_for_metric(&addr, r#"tenantscale_in_flight{tenant_id="media-1"} 1"#);
    let second = background("media-1");
    wait_for_metric(&addr, r#"tenant_queue_depth{tenant_id="media-1"} 1"#);
    let (status, body) = http(&addr, "POST", "/v1/query", "media-1", slow).unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("queue_full"), "{body}");
    let (status, body) = http(&addr, "POST", "/v1/query", "finance-1", slow).unwrap();
    assert_eq!(
        status, 200,
        "finance-1 is served while media-1 is full: {body}"
    );
    assert_eq!((first.join().unwrap(), second.join().unwrap()), (200, 200));

    pod.terminate();
    pod.exit_log();
    llm.child.kill().unwrap();
    llm.child.wait().unwrap();
}

#[test]
fn serve_rejects_bad_input_with_a_json_error_and_writes_nothing() {
    const SECRET: &str = "a-shared-secret-of-the-gateway";
    let store = temp_store("bad-input");
    let pod = Server::serve(&[
        "--store",
        &store,
        "--secret",
        SECRET,
        "--max-body",
        "4096",
        "--warm-up",
        "0",
        "--drain-grace",
        "0",
    ]);
    let addr = pod.addr.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let send = |method: &str, path: &str, tenant: &str, at: i64, body: &str| {
        let headers = gateway_headers(SECRET, method, path, tenant, at, body);
        http_with(&addr, method, path, &pairs(&headers), body).unwrap()
    };
    let expect = |(status, body): (u16, String), want: u16, code: &str| {
        assert_eq!(status, want, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };
    let query = r#"{"query":"replicas"}"#;

    // Authentication: the seed's plain header, a stale signature, a signature for another
    // tenant, an unknown tenant.
    let plain = http(&addr, "POST", "/v1/query", "media-1", query).unwrap();
    expect(plain, 401, "unauthorized");
    expect(
        send("POST", "/v1/query", "media-1", now - 60, query),
        401,
        "unauthorized",
    );
    let mut forged = gateway_headers(SECRET, "POST", "/v1/query", "media-1", now, query);
    forged[0].1 = "finance-1".into();
    let forged = http_with(&addr, "POST", "/v1/query", &pairs(&forged), query).unwrap();
    expect(forged, 401, "unauthorized");
    // Retryable: the pod may not have reloaded a catalog the gateway already has.
    expect(
        send("POST", "/v1/query", "nobody-1", now, query),
        503,
        "unknown_tenant",
    );

    // Requests: malformed JSON, unknown field, too long a query, topK out of range, a body
    // over --max-body.
    expect(
        send("POST", "/v1/query", "media-1", now, "{not json"),
        400,
        "bad_json",
    );
    let unknown_field = r#"{"query":"x","colour":1}"#;
    expect(
        send("POST", "/v1/query", "media-1", now, unknown_field),
        422,
        "bad_json",
    );
    let long = format!(r#"{{"query":"{}"}}"#, "x".repeat(2001));
    expect(
        send("POST", "/v1/query", "media-1", now, &long),
        422,
        "bad_query",
    );
    for top_k in [0, 51] {
        let body = format!(r#"{{"query":"x","topK":{top_k}}}"#);
        expect(
            send("POST", "/v1/query", "media-1", now, &body),
            422,
            "bad_top_k",
        );
    }
    let huge = format!(
        r#"{{"documents":[{{"id":"big","text":"{}"}}]}}"#,
        "y".repeat(5000)
    );
    expect(
        send("POST", "/v1/documents", "media-1", now, &huge),
        413,
        "body_too_large",
    );

    // A batch with one bad document stores none of it.
    let batch =
        r#"{"documents":[{"id":"good","text":"autoscaler replicas"},{"id":"","text":"y"}]}"#;
    expect(
        send("POST", "/v1/documents", "media-1", now, batch),
        422,
        "bad_document",
    );
    let (status, body) = send("POST", "/v1/query", "media-1", now, query);
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["passages"],
        serde_json::json!([]),
        "nothing was half-written"
    );
    expect(
        send("DELETE", "/v1/documents/good", "media-1", now, ""),
        404,
        "no_document",
    );

    pod.terminate();
    pod.exit_log();
}

/// What the gateway adds to a request to a pod, signed under `secret`: the tenant, the
/// timestamp `at`, the body's digest and the signature.
fn gateway_headers(
    secret: &str,
    method: &str,
    target: &str,
    tenant: &str,
    at: i64,
    body: &str,
) -> [(&'static str, String); 4] {
    use tenantscale_core::auth;
    let digest = auth::BodySha256::of(body.as_bytes());
    let claim = auth::Claim {
        tenant,
        method,
        target,
        body_sha256: Some(digest.as_str()),
    };
    [
        ("X-Tenantscale-Tenant", tenant.into()),
        ("X-Tenantscale-Timestamp", at.to_string()),
        ("X-Tenantscale-Body-SHA256", digest.as_str().into()),
        (
            "X-Tenantscale-Signature",
            auth::sign(secret.as_bytes(), &claim, at),
        ),
    ]
}

/// The format before the body digest: `tenant \n METHOD \n path \n timestamp`.
fn legacy_headers(secret: &str, path: &str, tenant: &str, at: i64) -> [(&'static str, String); 3] {
    use tenantscale_core::auth;
    let claim = auth::Claim {
        tenant,
        method: "POST",
        target: path,
        body_sha256: None,
    };
    [
        ("X-Tenantscale-Tenant", tenant.into()),
        ("X-Tenantscale-Timestamp", at.to_string()),
        (
            "X-Tenantscale-Signature",
            auth::sign(secret.as_bytes(), &claim, at),
        ),
    ]
}

fn pairs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// Sends a request's head alone, announcing a body of `content_length` bytes that never
/// comes, and reads the answer's status: the pod must answer without reading the body.
fn status_before_the_body(addr: &str, head: &str, content_length: usize) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    // Only a bound for a broken pod (which would wait for the body for ever).
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "{head}Content-Length: {content_length}\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s
            .read(&mut buf)
            .expect("the pod answers before the body is sent");
        assert_ne!(n, 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
}

#[test]
fn pod_signatures_bind_body_and_query_and_rotate_without_downtime() {
    const SECRET: &str = "the-current-secret-0123";
    const NEXT: &str = "the-next-secret-0123456";
    let store = temp_store("signatures");
    let common = ["--store", &store, "--warm-up", "0", "--drain-grace", "0"];
    // The next secret as the rendered manifests give it, from the environment.
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantscale"));
    command.env("TENANTSCALE_NEXT_SECRET", NEXT);
    let serve = [
        "serve",
        "-c",
        "examples/gcc-platform.yaml",
        "--listen",
        "127.0.0.1:0",
    ];
    let pod = Server::start_command(
        command,
        &[&serve[..], &common, &["--secret", SECRET]].concat(),
    );
    let addr = pod.addr.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let code = |(status, body): (u16, String)| {
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        (status, json["error"]["code"].as_str().map(String::from))
    };
    let refused = |c: &str| (401, Some(c.to_string()));
    let doc = |text: &str| format!(r#"{{"documents":[{{"id":"d","text":"{text}"}}]}}"#);
    let ingest = |secret: &str, target: &str, signed_body: &str, sent_body: &str| {
        let headers = gateway_headers(secret, "POST", "/v1/documents", "media-1", now, signed_body);
        code(http_with(&addr, "POST", target, &pairs(&headers), sent_body).unwrap())
    };

    // Under the current and the next secret, not a third.
    let original = doc("the original text");
    for secret in [SECRET, NEXT] {
        assert_eq!(
            ingest(secret, "/v1/documents", &original, &original),
            (200, None)
        );
    }
    assert_eq!(
        ingest(
            "a-third-secret-0123456",
            "/v1/documents",
            &original,
            &original
        ),
        refused("unauthorized")
    );
    // A captured request's headers replayed with another body, or another query string.
    let other = doc("overwritten by a replay");
    assert_eq!(
        ingest(SECRET, "/v1/documents", &original, &other),
        refused("bad_signature")
    );
    assert_eq!(
        ingest(SECRET, "/v1/documents?x=1", &original, &original),
        refused("unauthorized")
    );
    // A digest header that names the new body no longer matches the signature.
    let mut lying = gateway_headers(SECRET, "POST", "/v1/documents", "media-1", now, &original);
    lying[2].1 = tenantscale_core::auth::BodySha256::of(other.as_bytes())
        .as_str()
        .into();
    assert_eq!(
        code(http_with(&addr, "POST", "/v1/documents", &pairs(&lying), &other).unwrap()),
        refused("unauthorized")
    );
    let query = r#"{"query":"original text","topK":1}"#;
    let headers = gateway_headers(NEXT, "POST", "/v1/query", "media-1", now, query);
    let (status, body) = http_with(&addr, "POST", "/v1/query", &pairs(&headers), query).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("the original text"),
        "a replay overwrote it: {body}"
    );

    // A bad signature is refused from the head alone; so is a body over --max-body.
    let head = |headers: &[(&'static str, String)]| {
        let fields: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        format!(
            "POST /v1/documents HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{fields}"
        )
    };
    let mut bad = gateway_headers(SECRET, "POST", "/v1/documents", "media-1", now, "");
    bad[3].1 = "00".repeat(32);
    assert_eq!(status_before_the_body(&addr, &head(&bad), 500_000), 401);
    let good = gateway_headers(SECRET, "POST", "/v1/documents", "media-1", now, "");
    assert_eq!(status_before_the_body(&addr, &head(&good), 2 << 20), 413);

    // The format before the body digest: refused by default, accepted with the flag.
    let legacy = legacy_headers(SECRET, "/v1/query", "media-1", now);
    let (status, body) =
        http_with(&addr, "POST", "/v1/query?any=1", &pairs(&legacy), query).unwrap();
    assert_eq!(
        (status, code((status, body.clone())).1.as_deref()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert!(body.contains("--accept-legacy-signatures"), "{body}");
    pod.terminate();
    pod.exit_log();
    let upgrading = Server::serve(
        &[
            &common[..],
            &["--secret", SECRET, "--accept-legacy-signatures"],
        ]
        .concat(),
    );
    let (status, body) = http_with(
        &upgrading.addr,
        "POST",
        "/v1/query?any=1",
        &pairs(&legacy),
        query,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // The new format is still bound to its body there.
    let headers = gateway_headers(SECRET, "POST", "/v1/documents", "media-1", now, &original);
    assert_eq!(
        code(
            http_with(
                &upgrading.addr,
                "POST",
                "/v1/documents",
                &pairs(&headers),
                &other
            )
            .unwrap()
        ),
        refused("bad_signature")
    );
    upgrading.terminate();
    upgrading.exit_log();

    let short = tenantscale(&[
        "serve",
        "-c",
        "examples/gcc-platform.yaml",
        "--secret",
        SECRET,
        "--next-secret",
        "short",
    ]);
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("--next-secret: use at least 16 bytes"),
        "{}",
        stderr(&short)
    );
}

/// Spawns an outside server the tests need (stdin and stdout null); `None` (the test skips)
/// when it is not installed, except under CI (`.ci/run` installs it), where that fails.
fn spawn_tool(command: &mut Command) -> Option<std::process::Child> {
    let tool = command.get_program().to_string_lossy().to_string();
    match command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => Some(child),
        Err(e) => {
            missing(&format!("{tool} ({e})"));
            None
        }
    }
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway `redis-server` on a free 127.0.0.1 port, killed on drop. Without the binary the
/// test is skipped, except under CI (`.ci/run` installs it), where it fails.
struct RedisServer {
    child: std::process::Child,
    url: String,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = free_port();
        Self::launch(port, "redis", |c| c.args(["--port", &port.to_string()]))
    }

    /// `redis-server` on `port`, listening as `listen` says; `scheme` begins its URL.
    fn launch(
        port: u16,
        scheme: &str,
        listen: impl FnOnce(&mut Command) -> &mut Command,
    ) -> Option<Self> {
        let mut command = Command::new("redis-server");
        listen(&mut command)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stderr(std::process::Stdio::null());
        let server = Self {
            child: spawn_tool(&mut command)?,
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::yield_now();
        }
        Some(server)
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn serve_sets_the_seeds_warming_flag_in_redis_for_the_warm_up_window() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = temp_store("redis");
    let mut pod = Server::serve(&[
        "--store",
        &store,
        "--trust-tenant-header",
        "--redis",
        &redis.url,
        "--pod-ip",
        "10.0.0.7",
        "--warm-up",
        "3",
    ]);
    let mut conn = redis.connection();
    let key = "pod:10.0.0.7:warming_up";
    // The flag is set before the pod reports its address.
    let (value, ttl): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(key)
        .cmd("TTL")
        .arg(key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(value.as_deref(), Some("true"));
    assert!((1..=3).contains(&ttl), "TTL {ttl}");
    pod.wait_for("warm-up over");
    let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap();
    assert!(!exists, "the flag is deleted when the window ends");
    pod.terminate();
    pod.exit_log();

    // Draining ends a warm-up early, and the flag with it; an unnamed pod is named after its
    // address.
    let mut pod = Server::serve(&[
        "--store",
        &store,
        "--trust-tenant-header",
        "--redis",
        &redis.url,
        "--warm-up",
        "300",
        "--drain-grace",
        "0",
    ]);
    let key = format!("pod:{}:warming_up", pod.addr);
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(exists, "{key}");
    pod.terminate();
    pod.wait_for("warming flag cleared");
    pod.exit_log();
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(!exists, "{key}");

    // Without Redis the pod still serves.
    drop(redis);
    let pod = Server::serve(&[
        "--store",
        &store,
        "--trust-tenant-header",
        "--redis",
        "redis://127.0.0.1:1",
    ]);
    let (status, body) = http(&pod.addr, "GET", "/ready", "media-1", "").unwrap();
    assert_eq!(status, 200, "{body}");
    pod.terminate();
    pod.exit_log();
}

#[test]
fn ingest_and_serve_refuse_an_unknown_or_unbuilt_embedder() {
    let doc = temp_file("embedder.md", "Replicas follow demand.");
    let store = temp_store("embedder");
    let ingest_with =
        |embedder: &str| ingest_with(&store, "media-1", &doc, &["--embedder", embedder]);
    let o = ingest_with("word2vec");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(r#"--embedder "word2vec": expected `hashed` or `minilm:DIR`"#),
        "{}",
        stderr(&o)
    );
    let o = ingest_with("minilm:/nowhere");
    assert_eq!(o.status.code(), Some(2));
    let expected = if cfg!(feature = "minilm") {
        "MiniLM model in /nowhere: config.json"
    } else {
        "this build has no MiniLM; build with `--features minilm`"
    };
    assert!(stderr(&o).contains(expected), "{}", stderr(&o));
    assert!(ingest_with("hashed").status.success());
    // serve reads the same option: it refuses before listening.
    let o = tenantscale(&[
        "serve",
        "-c",
        "examples/gcc-platform.yaml",
        "--store",
        &store,
        "--trust-tenant-header",
        "--embedder",
        "word2vec",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The real model end to end (`--features minilm` and `TENANTSCALE_MINILM_DIR`, see the
/// service tests): ingest with it, serve with it, find a passage by meaning over HTTP; a
/// store written by one embedder refuses the other.
#[cfg(feature = "minilm")]
#[test]
fn minilm_serves_passages_by_meaning_and_the_store_keeps_its_embedder() {
    let Ok(dir) = std::env::var("TENANTSCALE_MINILM_DIR") else {
        return missing("TENANTSCALE_MINILM_DIR (the MiniLM model)");
    };
    let embedder = format!("minilm:{dir}");
    let store = temp_store("minilm");
    let car = temp_file(
        "car.md",
        "The automobile needs new tyres and an oil change.",
    );
    let rain = temp_file(
        "rain.md",
        "Heavy rain and strong winds are expected tomorrow.",
    );
    for doc in [&car, &rain] {
        let o = ingest_with(&store, "media-1", doc, &["--embedder", &embedder]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let hashed = ingest_with(&store, "media-1", &car, &[]);
    assert_eq!(hashed.status.code(), Some(2));
    assert!(
        stderr(&hashed).contains("written by the all-MiniLM-L6-v2 embedder"),
        "{}",
        stderr(&hashed)
    );

    let pod = Server::serve(&[
        "--store",
        &store,
        "--embedder",
        &embedder,
        "--trust-tenant-header",
    ]);
    let (status, body) = http(
        &pod.addr,
        "POST",
        "/v1/query",
        "media-1",
        r#"{"query":"my car has to be serviced","topK":1}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"car.md","chunkId""#), "{body}");
    pod.terminate();
    pod.exit_log();
}

//! The gateway in front of real pods (`tenantscale serve`) and `llm-sim` (the test double for
//! a paid LLM, so a query can take a set time): affinity, bounded loads, the share cap, slow
//! start, draining and killed pods.

use super::{Server, http_with};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(super) const SECRET: &str = "gateway-test-secret-0123";
const CATALOG: &str = "examples/gcc-platform.yaml";

/// llm-sim, pods and a gateway over them (each killed on drop if still running).
pub(super) struct Stack {
    _llm: Server,
    pods: Vec<Server>,
    gateway: Server,
}

impl Stack {
    /// `warm_up[i]` is pod i's warm-up window (0: ready at once); each answer that generates
    /// takes `llm_ms`.
    fn start(warm_up: &[u32], llm_ms: u32, gateway_args: &[&str]) -> Self {
        let llm = Server::start(&[
            "llm-sim",
            "--listen",
            "127.0.0.1:0",
            "--latency-ms",
            &llm_ms.to_string(),
        ]);
        let store = super::temp_store("gateway");
        let llm_url = format!("http://{}/v1/chat/completions", llm.addr);
        let pods: Vec<Server> = warm_up
            .iter()
            .map(|w| Self::pod(&store, &llm_url, *w))
            .collect();
        let gateway = Self::gateway(&pods, gateway_args);
        Self {
            _llm: llm,
            pods,
            gateway,
        }
    }

    /// A gateway over `pods` with `args`.
    pub(super) fn gateway(pods: &[Server], args: &[&str]) -> Server {
        let list: Vec<&str> = pods.iter().map(|p| p.addr.as_str()).collect();
        let list = list.join(",");
        let mut all = vec![
            "gateway",
            "-c",
            CATALOG,
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--pods",
            &list,
        ];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    fn pod(store: &str, llm_url: &str, warm_up: u32) -> Server {
        Server::start(&[
            "serve",
            "-c",
            CATALOG,
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--secret",
            SECRET,
            "--llm-url",
            llm_url,
            "--warm-up",
            &warm_up.to_string(),
            "--drain-grace",
            "3",
        ])
    }

    /// A query of `tenant` with its demo API key; `generate` makes it wait for llm-sim.
    fn query(addr: &str, tenant: &str, generate: bool) -> (u16, String) {
        let key = format!("Bearer demo-key-{tenant}");
        let body = format!(r#"{{"query":"replicas","generate":{generate}}}"#);
        http_with(addr, "POST", "/v1/query", &[("Authorization", &key)], &body)
            .unwrap_or((0, String::new()))
    }

    fn metrics(&self) -> String {
        http_with(&self.gateway.addr, "GET", "/metrics", &[], "")
            .unwrap()
            .1
    }

    /// The value of the gateway metric sample `series` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics(), series)
    }

    /// Polls the gateway's metrics until `series` reaches `value`.
    fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(series) != value {
            assert!(Instant::now() < deadline, "{series} never reached {value}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn pod_series(name: &str, pod: &Server) -> String {
    format!("{name}{{pod=\"{}\"}}", pod.addr)
}

#[test]
fn gateway_keeps_tenants_on_their_pods_bounds_a_hot_one_and_caps_its_share() {
    let stack = Stack::start(&[0, 0, 0], 2000, &[]);
    let gw = stack.gateway.addr.clone();

    // Affinity: each tenant's sequential queries all land on one pod.
    for tenant in ["media-1", "finance-1", "retail-1", "retail-7"] {
        for _ in 0..5 {
            assert_eq!(Stack::query(&gw, tenant, false).0, 200);
        }
        let served: Vec<f64> = stack
            .pods
            .iter()
            .map(|p| {
                let text = http_with(&p.addr, "GET", "/metrics", &[], "").unwrap().1;
                sample(
                    &text,
                    &format!(
                        "total_queries_processed_total{{tenant_id=\"{tenant}\",status=\"success\"}}"
                    ),
                )
            })
            .collect();
        assert_eq!(
            served.iter().filter(|n| **n == 5.0).count(),
            1,
            "{tenant}: {served:?}"
        );
        assert_eq!(served.iter().sum::<f64>(), 5.0, "{tenant}: {served:?}");
    }
    assert_eq!(stack.metric("tenantscale_gateway_first_choice_total"), 20.0);

    // A hot tenant: 7 slow queries at once (its cap: 30 % of 3 pods × 8 slots). Bounded
    // loads spread them: no pod above ceil(1.25 × 7 / 3) = 3.
    let hot: Vec<_> = (0..7)
        .map(|_| {
            let gw = gw.clone();
            std::thread::spawn(move || Stack::query(&gw, "media-1", true))
        })
        .collect();
    stack.wait_for_metric(r#"tenantscale_gateway_in_flight{tenant_id="media-1"}"#, 7.0);
    let text = stack.metrics();
    let loads: Vec<f64> = stack
        .pods
        .iter()
        .map(|p| sample(&text, &pod_series("tenantscale_gateway_pod_in_flight", p)))
        .collect();
    assert_eq!(loads.iter().sum::<f64>(), 7.0, "{loads:?}");
    assert!(loads.iter().all(|l| *l <= 3.0), "{loads:?}");

    // The eighth is over the tenant's share: 429 with Retry-After; another tenant is served.
    let key = "Bearer demo-key-media-1";
    let over = http_with(
        &gw,
        "POST",
        "/v1/query",
        &[("Authorization", key)],
        r#"{"query":"x"}"#,
    )
    .unwrap();
    assert_eq!(over.0, 429, "{}", over.1);
    assert!(over.1.contains(r#""code":"share_cap""#), "{}", over.1);
    assert!(over.1.contains(r#""retryAfter":"#), "{}", over.1);
    assert_eq!(Stack::query(&gw, "finance-1", false).0, 200);
    for h in hot {
        assert_eq!(h.join().unwrap().0, 200);
    }
    assert_eq!(
        stack.metric(
            r#"tenantscale_gateway_rejected_total{tenant_id="media-1",reason="share_cap"}"#
        ),
        1.0
    );
}

#[test]
fn gateway_answers_bad_requests_itself() {
    let stack = Stack::start(&[0], 10, &["--max-body", "1024"]);
    let gw = stack.gateway.addr.clone();
    let body = r#"{"query":"x"}"#;
    // (method, path, headers, body, status, error code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        String,
        u16,
        &'a str,
    );
    let cases: [Case; 5] = [
        (
            "POST",
            "/v1/query",
            vec![],
            body.into(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/query",
            vec![("Authorization", "Bearer not-a-key")],
            body.into(),
            401,
            "unauthorized",
        ),
        (
            // A client cannot pose as the gateway: its tenant headers are replaced.
            "POST",
            "/v1/query",
            vec![
                ("X-Tenantscale-Tenant", "media-1"),
                ("X-Tenant-ID", "media-1"),
            ],
            body.into(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/query",
            vec![("Authorization", "Bearer demo-key-media-1")],
            format!(r#"{{"query":"{}"}}"#, "x".repeat(2000)),
            413,
            "body_too_large",
        ),
        ("GET", "/admin", vec![], String::new(), 404, "not_found"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (got, text) = http_with(&gw, method, path, &headers, &body).unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(text.contains(&format!(r#""code":"{code}""#)), "{text}");
    }
    // The pod's own errors pass through.
    let (status, text) = http_with(
        &gw,
        "POST",
        "/v1/query",
        &[("Authorization", "Bearer demo-key-media-1")],
        r#"{"query":"x","topK":0}"#,
    )
    .unwrap();
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("bad_top_k"), "{text}");
    super::promtool_accepts(&stack.metrics());

    // SIGTERM: the gateway stops accepting, finishes what is open and exits 0.
    let Stack { gateway, .. } = stack;
    gateway.terminate();
    assert!(gateway.exit_log().contains("gateway stopped"));
}

/// Clients of many tenants querying in a loop until stopped; counts answers that are not 200.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &str, tenants: &[String], generate: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let clients = tenants
            .iter()
            .map(|t| {
                let (gw, t) = (gateway.to_string(), t.clone());
                let (stop, failed, sent) = (stop.clone(), failed.clone(), sent.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        sent.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = Stack::query(&gw, &t, generate);
                        if status != 200 {
                            eprintln!("{t}: {status} {body}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            failed,
            sent,
            clients,
        }
    }

    /// Stops the clients; (sent, failed).
    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.join().unwrap();
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

fn tenants(n: usize) -> Vec<String> {
    (1..=8)
        .map(|i| format!("media-{i}"))
        .chain((1..=22).map(|i| format!("finance-{i}")))
        .take(n)
        .collect()
}

#[test]
fn gateway_ramps_a_warming_pod_and_skips_a_draining_one() {
    // Two warm pods and one warming for 6 s; the gateway ramps over the same 6 s.
    let stack = Stack::start(&[0, 0, 6], 200, &["--slow-start", "6"]);
    let gw = stack.gateway.addr.clone();
    let load = Load::start(&gw, &tenants(24), true);
    let share = |seconds: f64| {
        let before: Vec<f64> = stack
            .pods
            .iter()
            .map(|p| stack.metric(&pod_series("tenantscale_gateway_routed_total", p)))
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let after: Vec<f64> = stack
            .pods
            .iter()
            .map(|p| stack.metric(&pod_series("tenantscale_gateway_routed_total", p)))
            .collect();
        let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        delta[2] / delta.iter().sum::<f64>()
    };
    let early = share(1.5);
    std::thread::sleep(Duration::from_secs(4));
    let late = share(1.5);
    assert!(
        early < 0.2,
        "the warming pod took {early:.2} of the traffic at first"
    );
    assert!(
        late > early + 0.05,
        "its share grew from {early:.2} to only {late:.2}"
    );

    // SIGTERM pod 0: its /ready turns 503 and the gateway stops sending to it within a poll.
    let draining = &stack.pods[0];
    draining.terminate();
    stack.wait_for_metric(r#"tenantscale_gateway_pods{state="draining"}"#, 1.0);
    let routed = pod_series("tenantscale_gateway_routed_total", draining);
    let before = stack.metric(&routed);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        stack.metric(&routed),
        before,
        "a draining pod got new requests"
    );
    let (sent, failed) = load.stop();
    assert_eq!(failed, 0, "of {sent}");
}

#[test]
fn gateway_loses_no_query_when_a_pod_is_killed() {
    let mut stack = Stack::start(&[0, 0, 0], 100, &[]);
    let gw = stack.gateway.addr.clone();
    let load = Load::start(&gw, &tenants(16), true);
    stack.wait_for_metric(r#"tenantscale_gateway_pods{state="ready"}"#, 3.0);
    std::thread::sleep(Duration::from_millis(700));
    // SIGKILL while queries are in flight on it: those are retried on another pod.
    let victim = stack.pods.remove(1);
    let label = pod_series("tenantscale_gateway_pod_in_flight", &victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.metric(&label) == 0.0 {
        assert!(Instant::now() < deadline, "no query in flight on the pod");
    }
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (sent, failed) = load.stop();
    assert_eq!(failed, 0, "of {sent}");
    assert!(stack.metric("tenantscale_gateway_retries_total") >= 1.0);
    assert_eq!(
        stack.metric(r#"tenantscale_gateway_pods{state="unreachable"}"#),
        1.0
    );
}

#[test]
fn gateway_replicas_share_one_limit_through_redis_and_fall_back_without_it() {
    let Some(redis) = super::RedisServer::start() else {
        return;
    };
    let shared = ["--redis", redis.url.as_str(), "--replicas", "2"];
    let stack = Stack::start(&[0], 10, &shared);
    let second = Stack::gateway(&stack.pods, &shared);
    let gateways = [stack.gateway.addr.clone(), second.addr.clone()];
    // retail-3 is bronze: 10 requests/s with bursts of 20. Alternating between the replicas,
    // the burst is shared: about 20 pass in all, not 20 at each.
    let mut statuses = Vec::new();
    let started = Instant::now();
    for i in 0..40 {
        // retail-3 may hold one request in flight. Its lease is released when the answer is
        // complete, a moment after the client has it, so a request sent at once can meet the
        // share cap; that refusal is not the rate limit under test: ask again.
        let (status, body) = loop {
            let (status, body) = Stack::query(&gateways[i % 2], "retail-3", false);
            if !body.contains(r#""code":"share_cap""#) {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if status == 429 {
            assert!(body.contains(r#""code":"rate_limit""#), "{body}");
        }
        statuses.push(status);
    }
    let refill = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (20..=20 + refill).contains(&passed),
        "{passed} passed (burst 20, +{refill} refilled): {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Decided by Redis, not by each replica's local half (which would also sum to 20).
    assert_eq!(stack.metric("tenantscale_gateway_redis_up"), 1.0);
    let tat: Option<i64> = redis::cmd("GET")
        .arg("tenantscale:{retail-3}:rate")
        .query(&mut redis.connection())
        .unwrap();
    assert!(tat.is_some(), "no shared rate state in Redis");

    // Redis gone: each replica enforces its half alone; nothing fails for lack of Redis.
    drop(redis);
    std::thread::sleep(Duration::from_secs(1));
    let mut after = Vec::new();
    for i in 0..40 {
        after.push(Stack::query(&gateways[i % 2], "retail-4", false).0);
    }
    assert!(after.iter().all(|s| *s == 200 || *s == 429), "{after:?}");
    let passed = after.iter().filter(|s| **s == 200).count();
    // Each replica: a burst of 10 (half of 20), and a little refill.
    assert!((20..=26).contains(&passed), "{passed} passed: {after:?}");
    assert_eq!(stack.metric("tenantscale_gateway_redis_up"), 0.0);
}

/// Clients may speak HTTP/2 without TLS (h2c, prior knowledge); the pods still get HTTP/1.1.
#[test]
fn gateway_serves_h2c_clients() {
    use http_body_util::{BodyExt, Full};
    let stack = Stack::start(&[0], 10, &[]);
    let addr = stack.gateway.addr.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, version, body) = runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{addr}/v1/query"))
            .header("authorization", "Bearer demo-key-media-1")
            .header("content-type", "application/json")
            .body(Full::new(hyper::body::Bytes::from(
                r#"{"query":"replicas"}"#,
            )))
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        let (status, version) = (res.status().as_u16(), res.version());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, version, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""tenantId":"media-1""#), "{body}");
}

#[test]
fn gateway_refuses_bad_flags_naming_them() {
    let run = |extra: &[&str]| {
        let mut args = vec!["gateway", "-c", CATALOG, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        super::tenantscale(&args)
    };
    let pods = ["--pods", "127.0.0.1:1"];
    let secret = ["--secret", SECRET];
    for (extra, message) in [
        (vec![pods[0], pods[1]], "give --secret"),
        (
            vec![pods[0], pods[1], "--secret", "short"],
            "--secret: use at least 16 bytes",
        ),
        (
            vec!["--pods", "pod-without-port", secret[0], secret[1]],
            r#"--pods "pod-without-port": expected HOST:PORT"#,
        ),
        (
            vec![
                pods[0],
                pods[1],
                secret[0],
                secret[1],
                "--connect-timeout",
                "0",
            ],
            "--connect-timeout 0: a time limit must be more than 0 seconds",
        ),
        (
            vec![
                pods[0],
                pods[1],
                secret[0],
                secret[1],
                "--slow-start",
                "90000",
            ],
            "--slow-start 90000: expected 0 to 86400 seconds",
        ),
        (
            vec![
                pods[0],
                pods[1],
                secret[0],
                secret[1],
                "--balance-factor",
                "0.5",
            ],
            "--balance-factor 0.5: expected 1 to 10",
        ),
    ] {
        let o = run(&extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        assert!(
            super::stderr(&o).contains(message),
            "{extra:?}: {}",
            super::stderr(&o)
        );
    }
}

#[test]
fn the_shared_gateway_refuses_silo_tenants_and_a_silo_gateway_serves_only_its_own() {
    // finance-1 is a silo tenant in the example catalog.
    let stack = Stack::start(&[0], 10, &["--except-silos"]);
    let (status, body) = Stack::query(&stack.gateway.addr, "finance-1", false);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("other_deployment"), "{body}");
    assert_eq!(Stack::query(&stack.gateway.addr, "finance-2", false).0, 200);

    let silo = Stack::gateway(&stack.pods, &["--only-tenant", "finance-1"]);
    assert_eq!(Stack::query(&silo.addr, "finance-1", false).0, 200);
    let (status, body) = Stack::query(&silo.addr, "finance-2", false);
    assert_eq!(status, 403, "{body}");
    // An unknown API key is still a 401, before any scope check.
    assert_eq!(Stack::query(&silo.addr, "nobody", false).0, 401);

    let o = super::tenantscale(&[
        "gateway",
        "-c",
        CATALOG,
        "--secret",
        SECRET,
        "--pods",
        "127.0.0.1:1",
        "--only-tenant",
        "nobody",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        super::stderr(&o).contains("--only-tenant \"nobody\""),
        "{}",
        super::stderr(&o)
    );
}

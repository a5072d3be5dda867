//! The gateway against hostile or failing peers, through real HTTP: admission decided from the
//! request head (a refused request's body is never read, an admitted one's place is given back
//! however its body fails), pods taken out of rotation only for their own faults, error
//! answers that name a request id and no pod, and a registry's bad address refused.

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tenantscale_core::catalog::Catalog;
use tenantscale_core::registry::{Member, Members};
use tenantscale_core::routing::RouterConfig;
use tenantscale_gateway::{Discovery, GatewayConfig, TenantScope, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

/// Long enough for any wait below on a loaded machine; a test that needs it has failed.
const DEADLINE: Duration = Duration::from_secs(30);

/// Everything the gateways of this test binary log, for the tests that look for a line.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .init();
        logs
    }))
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until a logged line contains every one of `needles`; returns it.
async fn logged(needles: &[&str]) -> String {
    let logs = logs();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no log line with {needles:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pod test double: `/ready` says ready; any other request is answered with the status in
/// its `X-Test-Status` (200 without), marked as the pod's own fault when it has
/// `X-Test-Fault`, or its connection closed without an answer when it has `X-Test-Close`.
/// Counts the requests (but `/ready`) and keeps their `X-Request-Id`s.
struct PodDouble {
    addr: String,
    requests: Arc<AtomicUsize>,
    request_ids: Arc<Mutex<Vec<String>>>,
    /// Closes the listener: new connections are refused, open ones still served.
    stop_listening: Option<tokio::sync::oneshot::Sender<()>>,
}

impl PodDouble {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let request_ids = Arc::new(Mutex::new(Vec::new()));
        let (count, ids) = (Arc::clone(&requests), Arc::clone(&request_ids));
        let (stop_listening, mut stop) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stop => return,
                };
                tokio::spawn(serve(stream, Arc::clone(&count), Arc::clone(&ids)));
            }
        });
        Self {
            addr,
            requests,
            request_ids,
            stop_listening: Some(stop_listening),
        }
    }
}

async fn serve(mut stream: TcpStream, count: Arc<AtomicUsize>, ids: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let (len, path, headers) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).to_string();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (len, req.path.unwrap().to_string(), headers);
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let body_len: usize = get("content-length").map_or(0, |v| v.parse().unwrap());
        while buf.len() < len + body_len {
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
        buf.drain(..len + body_len);
        if path == "/ready" {
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"state\":\"ready\"}";
            stream.write_all(answer).await.unwrap();
            continue;
        }
        count.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = get("x-request-id") {
            ids.lock().unwrap().push(id.clone());
        }
        if get("x-test-close").is_some() {
            return;
        }
        let status = get("x-test-status").map_or("200", |s| s.as_str());
        let fault = if get("x-test-fault").is_some() {
            "x-tenantscale-fault: pod\r\n"
        } else {
            ""
        };
        let answer = format!("HTTP/1.1 {status} Whatever\r\n{fault}content-length: 2\r\n\r\n{{}}");
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Three tenants: `slow` may send one request per 100 s, `gold` and `other` are unlimited.
fn catalog() -> Catalog {
    let key = |tenant: &str| hex::encode(Sha256::digest(format!("key-{tenant}")));
    Catalog::parse(&format!(
        "cluster: {{cores: 4, memory: 8Gi}}\n\
         tiers:\n  \
           slow: {{weight: 1, share: 0.3, maxShare: 0.3, rateLimit: {{rps: 0.01, burst: 1}}}}\n  \
           gold: {{weight: 1, share: 0.6, maxShare: 0.3}}\n\
         tenants:\n  \
           - {{id: slow, tier: slow, apiKeySha256: \"{}\"}}\n  \
           - {{id: gold, tier: gold, apiKeySha256: \"{}\"}}\n  \
           - {{id: other, tier: gold, apiKeySha256: \"{}\"}}\n\
         pool: {{minReplicas: 1, maxReplicas: 1, slotsPerPod: 10}}\n",
        key("slow"),
        key("gold"),
        key("other"),
    ))
    .unwrap()
    .catalog
}

/// A gateway in this process over `discovery`, serving once its pods are known and ready.
async fn gateway(discovery: Discovery, max_body: usize, timeouts: Timeouts) -> SocketAddr {
    gateway_with(discovery, max_body, timeouts, None).await
}

/// [`gateway`], sharing its limits through the Redis at `redis`.
async fn gateway_with(
    discovery: Discovery,
    max_body: usize,
    timeouts: Timeouts,
    redis: Option<String>,
) -> SocketAddr {
    logs();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = GatewayConfig {
        listen,
        admin_listen: None,
        tls: None,
        discovery,
        secret: b"admission-test-secret-0123456789".to_vec(),
        trust_tenant_header: false,
        max_body,
        timeouts,
        connections: tenantscale_listener::Limits {
            max_headers: tenantscale_gateway::MAX_CLIENT_HEADERS,
            ..Default::default()
        },
        router: RouterConfig::default(),
        share_retry_after: 1.0,
        redis: redis.map(|url| redis::Client::open(url).expect("a Redis URL")),
        replicas: 1,
        scope: TenantScope::All,
    };
    tokio::spawn(tenantscale_gateway::run(
        catalog(),
        config,
        std::future::pending(),
    ));
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while ask(listen, "GET /ready HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listen
}

async fn static_gateway(pods: &[&PodDouble], timeouts: Timeouts) -> SocketAddr {
    let addrs = pods.iter().map(|p| p.addr.clone()).collect();
    gateway(Discovery::Static(addrs), 1024, timeouts).await
}

/// An answer: status, head (lowercase) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one answer (framed by its Content-Length) off `stream`.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if body.len() >= len {
                    let status = head[9..12].parse().unwrap();
                    return Answer {
                        status,
                        head,
                        body: body.to_string(),
                    };
                }
            }
            assert_ne!(
                stream.read_buf(&mut buf).await.unwrap(),
                0,
                "closed: {text}"
            );
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("no answer")
}

/// The value of field `name` in an answer's (lowercase) head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// One request on its own connection.
async fn ask(gateway: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let a = read_answer(&mut stream).await;
    (a.status, a.head, a.body)
}

/// `POST path` as `tenant` with `extra` header lines and a small body.
async fn post(gateway: SocketAddr, tenant: &str, path: &str, extra: &str) -> Answer {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer key-{tenant}\r\n{extra}\
         Content-Length: 2\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut stream).await
}

/// The gateway's metric `series` (0 when absent).
async fn metric(gateway: SocketAddr, series: &str) -> f64 {
    let (_, _, text) = ask(gateway, "GET /metrics HTTP/1.1\r\nHost: g\r\n\r\n").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for_metric(gateway: SocketAddr, series: &str, value: f64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = metric(gateway, series).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now}, never {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_tenant_at_its_rate_limit_is_refused_from_the_head_without_its_body() {
    refused_from_the_head(None).await;
}

#[tokio::test]
async fn a_tenant_at_its_shared_rate_limit_is_refused_from_the_head_without_its_body() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let gw = refused_from_the_head(Some(&redis)).await;
    assert_eq!(metric(gw, "tenantscale_gateway_redis_up").await, 1.0);
}

/// A tenant over its rate limit (through `redis` when given) announces a large body and
/// sends none of it: it is refused at once.
async fn refused_from_the_head(redis: Option<&RedisServer>) -> SocketAddr {
    let pod = PodDouble::start().await;
    // Reading the body first would wait this long for bytes that never come.
    let timeouts = Timeouts {
        body_read: Duration::from_secs(600),
        ..Timeouts::default()
    };
    let discovery = Discovery::Static(vec![pod.addr.clone()]);
    let gw = gateway_with(discovery, 2 << 20, timeouts, redis.map(|r| r.url.clone())).await;
    assert_eq!(post(gw, "slow", "/v1/query", "").await.status, 200);

    let mut stream = TcpStream::connect(gw).await.unwrap();
    let head = "POST /v1/query HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer key-slow\r\n\
                Content-Length: 1000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(
        header(&answer.head, "retry-after").is_some(),
        "{}",
        answer.head
    );
    assert!(answer.body.contains("\"rate_limit\""), "{}", answer.body);
    assert_eq!(pod.requests.load(Ordering::SeqCst), 1);
    gw
}

#[tokio::test]
async fn an_admitted_requests_place_is_given_back_however_its_body_fails() {
    body_failures_give_admission_back(None).await;
}

#[tokio::test]
async fn an_admitted_requests_redis_lease_is_given_back_however_its_body_fails() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let gw = body_failures_give_admission_back(Some(&redis)).await;
    assert_eq!(metric(gw, "tenantscale_gateway_redis_up").await, 1.0);
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let leases: u64 = redis::cmd("ZCARD")
            .arg("tenantscale:{gold}:leases")
            .query_async(&mut conn)
            .await
            .unwrap();
        if leases == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{leases} leases still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bodies too large, too slow and cut off by a client gone: each request was admitted (through
/// `redis` when given) before its body failed, and all their places are free again.
async fn body_failures_give_admission_back(redis: Option<&RedisServer>) -> SocketAddr {
    let pod = PodDouble::start().await;
    let timeouts = Timeouts {
        body_read: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let discovery = Discovery::Static(vec![pod.addr.clone()]);
    let gw = gateway_with(discovery, 1024, timeouts, redis.map(|r| r.url.clone())).await;
    let in_flight = r#"tenantscale_gateway_in_flight{tenant_id="gold"}"#;
    let admitted = r#"tenantscale_gateway_admitted_total{tenant_id="gold"}"#;
    let head = |framing: &str| {
        format!(
            "POST /v1/query HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer key-gold\r\n{framing}\r\n"
        )
    };

    // Stated too large: refused from the head, never admitted.
    let (status, _, _) = ask(gw, &head("Content-Length: 5000\r\n")).await;
    assert_eq!(status, 413);
    assert_eq!(metric(gw, admitted).await, 0.0);

    // Found too large while it streams in.
    let chunk = format!("{:x}\r\n{}\r\n", 2000, "x".repeat(2000));
    let (status, _, _) = ask(gw, &(head("Transfer-Encoding: chunked\r\n") + &chunk)).await;
    assert_eq!(status, 413);

    // Too slow: part of the body, then nothing.
    let (status, _, body) = ask(gw, &(head("Content-Length: 100\r\n") + "0123456789")).await;
    assert_eq!(status, 408, "{body}");

    // The client goes away while its body is awaited, admitted.
    let mut stream = TcpStream::connect(gw).await.unwrap();
    let part = head("Content-Length: 100\r\n") + "0123456789";
    stream.write_all(part.as_bytes()).await.unwrap();
    wait_for_metric(gw, in_flight, 1.0).await;
    drop(stream);

    wait_for_metric(gw, in_flight, 0.0).await;
    assert_eq!(metric(gw, admitted).await, 3.0);
    assert_eq!(
        pod.requests.load(Ordering::SeqCst),
        0,
        "no body reached the pod"
    );
    gw
}

#[tokio::test]
async fn a_tenants_own_5xx_never_eject_a_pod_and_the_pods_own_faults_do() {
    let pod = PodDouble::start().await;
    let gw = static_gateway(&[&pod], Timeouts::default()).await;
    let ejections = format!(
        "tenantscale_gateway_ejections_total{{pod=\"{}\"}}",
        pod.addr
    );
    for i in 0..30 {
        let status = [502, 503, 504][i % 3];
        let answer = post(
            gw,
            "gold",
            "/v1/query",
            &format!("X-Test-Status: {status}\r\n"),
        )
        .await;
        assert_eq!(answer.status, status, "the tenant gets its pod's answer");
        assert!(
            header(&answer.head, "x-request-id").is_some(),
            "{}",
            answer.head
        );
    }
    assert_eq!(post(gw, "other", "/v1/query", "").await.status, 200);
    assert_eq!(pod.requests.load(Ordering::SeqCst), 31);
    assert_eq!(metric(gw, &ejections).await, 0.0);

    for _ in 0..tenantscale_gateway::pods::EJECT_AFTER_FAILURES {
        let answer = post(
            gw,
            "gold",
            "/v1/query",
            "X-Test-Status: 500\r\nX-Test-Fault: 1\r\n",
        )
        .await;
        assert_eq!(answer.status, 500);
        assert_eq!(
            header(&answer.head, "x-tenantscale-fault"),
            None,
            "passed on"
        );
    }
    assert_eq!(metric(gw, &ejections).await, 1.0);
    let answer = post(gw, "other", "/v1/query", "").await;
    assert_eq!(answer.status, 503, "the only pod is out: {}", answer.body);
}

#[tokio::test]
async fn a_502_names_the_request_and_not_the_pod_whose_address_goes_to_the_log() {
    let mut pods = [PodDouble::start().await, PodDouble::start().await];
    let gw = static_gateway(&[&pods[0], &pods[1]], Timeouts::default()).await;
    wait_for_metric(gw, r#"tenantscale_gateway_pods{state="ready"}"#, 2.0).await;
    // Both refuse new connections; the gateway's kept ones still get their `/ready`
    // answered (the pods stay in rotation), but the request's is closed unanswered.
    for pod in &mut pods {
        pod.stop_listening.take().unwrap().send(()).unwrap();
    }
    // Refused by one pod, then by the other on the retry.
    let answer = post(gw, "gold", "/v1/query", "X-Test-Close: 1\r\n").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let id = body["error"]["requestId"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(header(&answer.head, "x-request-id"), Some(id.as_str()));
    for pod in &pods {
        let (_, port) = pod.addr.rsplit_once(':').unwrap();
        assert!(
            !answer.body.contains(port),
            "a pod's port in {}",
            answer.body
        );
        // Connections the pod refused take it out of rotation.
        let ejections = format!(
            "tenantscale_gateway_ejections_total{{pod=\"{}\"}}",
            pod.addr
        );
        assert_eq!(metric(gw, &ejections).await, 1.0);
    }
    assert!(!answer.body.contains("127.0.0.1"), "{}", answer.body);
    let line = logged(&[&id, "connecting to 127.0.0.1:"]).await;
    assert!(line.contains("WARN"), "{line}");
}

#[tokio::test]
async fn a_clients_request_id_is_kept_when_sane_and_replaced_when_not() {
    let pod = PodDouble::start().await;
    let gw = static_gateway(&[&pod], Timeouts::default()).await;
    let answer = post(gw, "gold", "/v1/query", "X-Request-Id: client-7.a_b\r\n").await;
    assert_eq!(answer.status, 200);
    let answer = post(gw, "gold", "/v1/query", "X-Request-Id: two words\r\n").await;
    assert_eq!(answer.status, 200);
    let answer = post(gw, "gold", "/v1/query", "X-Test-Status: 503\r\n").await;
    assert_eq!(answer.status, 503);
    let ids = pod.request_ids.lock().unwrap().clone();
    assert_eq!(ids[0], "client-7.a_b");
    assert!(ids[1] != "two words" && !ids[1].contains(' '), "{ids:?}");
    assert_eq!(header(&answer.head, "x-request-id"), Some(ids[2].as_str()));
    // Refused by the gateway itself: the id is in the body too.
    let (status, head, body) = ask(
        gw,
        "POST /v1/query HTTP/1.1\r\nHost: g\r\nX-Request-Id: mine-1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(header(&head, "x-request-id"), Some("mine-1"));
    assert!(body.contains("\"requestId\":\"mine-1\""), "{body}");
}

#[tokio::test]
async fn a_registry_address_that_is_no_host_value_is_refused_and_the_others_are_served() {
    let pod = PodDouble::start().await;
    let member = |addr: &str| Member {
        addr: addr.into(),
        draining: false,
    };
    let (members, watch) = tokio::sync::watch::channel(Members {
        version: 1,
        pods: vec![member(&pod.addr)],
    });
    let gw = gateway(Discovery::Watch(watch), 1024, Timeouts::default()).await;
    assert_eq!(post(gw, "gold", "/v1/query", "").await.status, 200);
    members
        .send(Members {
            version: 2,
            pods: vec![member("bad\naddress:80"), member(&pod.addr)],
        })
        .unwrap();
    logged(&["pod address refused", "bad\\naddress:80"]).await;
    logged(&["pod membership", "version=2"]).await;
    for tenant in ["gold", "other"] {
        assert_eq!(post(gw, tenant, "/v1/query", "").await.status, 200);
    }
}

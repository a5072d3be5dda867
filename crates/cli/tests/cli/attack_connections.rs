//! Attacks on the listeners' connections, through the real binaries: a connection may not be
//! held open for free on the gateway, a pod or the autoscaler's API, whatever its protocol, and
//! the gateway's connection cap holds new clients back without failing them.

use super::{Server, http_with, temp_file};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "attack-connections-secret-0123";
const CATALOG: &str = "examples/gcc-platform.yaml";
/// RFC 9113 §3.4.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 SETTINGS frame with no settings.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// The servers' header timeout in these tests, seconds.
const HEADER_TIMEOUT: &str = "1";
/// How long a test waits for what the header timeout should do by 1 s: a loaded machine may be
/// slow, but a connection the server never closes is still open after this.
const WAIT: Duration = Duration::from_secs(20);

/// A pod on a fresh store that takes the gateway's signatures, with `extra` flags.
fn pod(extra: &[&str]) -> Server {
    let store = super::temp_store("attack");
    let mut args = vec!["--store", &store, "--secret", SECRET, "--warm-up", "0"];
    args.extend_from_slice(extra);
    Server::serve(&args)
}

/// `tenantscale COMMAND` on the demo catalog and a free port, with the tests' secret and
/// `extra` flags.
fn start(command: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        command,
        "-c",
        CATALOG,
        "--listen",
        "127.0.0.1:0",
        "--secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A gateway over `pod` with `extra` flags.
fn gateway(pod: &Server, extra: &[&str]) -> Server {
    start("gateway", &[&["--pods", pod.addr.as_str()], extra].concat())
}

/// A tenant's query through the gateway at `addr`; its status.
fn query(addr: &str) -> u16 {
    let auth = [("Authorization", "Bearer demo-key-media-1")];
    http_with(addr, "POST", "/v1/query", &auth, r#"{"query":"replicas"}"#).map_or(0, |r| r.0)
}

/// Connections that each begin something and then say nothing more.
fn hostile(addr: &str) -> Vec<(&'static str, TcpStream)> {
    let openings: [(&str, &[u8]); 6] = [
        ("a connection that sends nothing", b""),
        ("a lone P", b"P"),
        ("the whole h2c preface", PREFACE),
        (
            "the h2c preface and SETTINGS, no HEADERS",
            &[PREFACE, SETTINGS].concat(),
        ),
        (
            "half an HTTP/1.1 head",
            b"GET /health HTTP/1.1\r\nHost: x\r\n",
        ),
        (
            "an HTTP/1.1 keep-alive connection after its exchange",
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ];
    openings
        .into_iter()
        .map(|(name, bytes)| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(bytes).unwrap();
            (name, stream)
        })
        .collect()
}

/// Asserts the server closes `stream` within [`WAIT`]: a read ends (end of stream, or a reset)
/// instead of timing out. What the server says first (a response, its SETTINGS) is skipped.
fn assert_closed(name: &str, stream: &mut TcpStream) {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{name}: still open after {WAIT:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{name}: still open after {WAIT:?}")
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// Opens the [`hostile`] connections to `addr` and asserts the server closes each by its
/// header timeout while another client's `request`s (true: served) keep succeeding.
fn hostile_connections_are_closed_while_others_are_served(
    addr: &str,
    request: impl Fn() -> bool + Send + 'static,
) {
    let mut connections = hostile(addr);
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let client = {
        let (done, served) = (Arc::clone(&done), Arc::clone(&served));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                assert!(request(), "another client's request failed");
                served.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for (name, stream) in &mut connections {
        assert_closed(name, stream);
    }
    done.store(true, Ordering::Relaxed);
    client.join().expect("every other request was served");
    assert!(served.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_gateway_closes_connections_that_hold_back_their_first_request() {
    let pod = pod(&[]);
    let gateway = gateway(&pod, &["--header-timeout", HEADER_TIMEOUT]);
    let addr = gateway.addr.clone();
    hostile_connections_are_closed_while_others_are_served(&gateway.addr, move || {
        query(&addr) == 200
    });
}

#[test]
fn a_pod_closes_connections_that_hold_back_their_first_request() {
    let pod = pod(&["--trust-tenant-header", "--header-timeout", HEADER_TIMEOUT]);
    let addr = pod.addr.clone();
    hostile_connections_are_closed_while_others_are_served(&pod.addr, move || {
        let tenant = [("X-Tenant-ID", "media-1")];
        let body = r#"{"query":"replicas"}"#;
        http_with(&addr, "POST", "/v1/query", &tenant, body).is_ok_and(|r| r.0 == 200)
    });
}

#[test]
fn the_autoscaler_api_closes_connections_that_hold_back_their_first_request() {
    let data = temp_file("attack-autoscaler", "");
    std::fs::remove_file(&data).unwrap();
    let autoscaler = start(
        "autoscale",
        &[
            "--warm-up",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
            "--stop-pods",
            "--header-timeout",
            HEADER_TIMEOUT,
        ],
    );
    let addr = autoscaler.addr.clone();
    hostile_connections_are_closed_while_others_are_served(&autoscaler.addr, move || {
        http_with(&addr, "GET", "/status", &[], "").is_ok_and(|r| r.0 == 200)
    });
    autoscaler.terminate();
    autoscaler.exit_log();
}

/// With `--max-connections 2`, two idle connections take every place: a third client waits
/// (in the listen backlog), the gateway says why in its log, and the client is served as soon
/// as one of the two closes.
#[test]
fn the_gateway_holds_connections_over_the_cap_back_until_one_closes() {
    let pod = pod(&[]);
    let mut gateway = gateway(&pod, &["--max-connections", "2", "--header-timeout", "60"]);
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&gateway.addr).unwrap())
        .collect();
    let mut third = TcpStream::connect(&gateway.addr).unwrap();
    write!(
        third,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Not served while both places are taken (a bounded look: it must not be answered now).
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut response = String::new();
    let early = third.read_to_string(&mut response);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "served over the cap: {early:?} {response:?}"
    );
    gateway.wait_for("connection cap reached");
    drop(idle);
    third.set_read_timeout(Some(WAIT)).unwrap();
    third.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// Runs `client` (given an HTTP/2 connection to `addr` and the task driving it) to its end.
fn with_h2c<T, F: Future<Output = T>>(
    addr: &str,
    client: impl FnOnce(
        hyper::client::conn::http2::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ) -> F,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        client(send, tokio::spawn(conn)).await
    })
}

/// An HTTP/2 client of the gateway, served one request and then idle past `--idle-timeout`:
/// the gateway closes the connection gracefully (GOAWAY, then close).
#[test]
fn the_gateway_closes_an_idle_http2_connection() {
    let pod = pod(&[]);
    let gateway = gateway(&pod, &["--idle-timeout", "1"]);
    let addr = gateway.addr.clone();
    with_h2c(&gateway.addr, |mut send, conn| async move {
        let req = hyper::Request::get(format!("http://{addr}/health"))
            .body(http_body_util::Full::default())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        drop(res);
        let ended = tokio::time::timeout(WAIT, conn)
            .await
            .expect("the idle connection is closed");
        // A GOAWAY is a graceful end; a reset or a dropped connection would be an error.
        ended.unwrap().expect("closed gracefully, by GOAWAY");
    });
}

/// A request with as many header fields as the gateway admits reaches the pod and is answered
/// (the fields the gateway adds still fit in the pod's limit); one more is refused by the
/// gateway itself, over HTTP/1.1 and HTTP/2.
#[test]
fn the_gateway_admits_only_as_many_header_fields_as_the_pod_takes_with_its_own() {
    const MAX: usize = 91;
    let pod = pod(&[]);
    let gateway = gateway(&pod, &[]);
    let fillers = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("x-filler-{i}"), "1".into()))
            .collect()
    };
    // HTTP/1.1: `http_with` writes Host, Content-Type, Content-Length and Connection, plus
    // Authorization here.
    let h1 = |n: usize| {
        let extra = fillers(n - 5);
        let mut headers: Vec<(&str, &str)> = vec![("Authorization", "Bearer demo-key-media-1")];
        headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        http_with(
            &gateway.addr,
            "POST",
            "/v1/query",
            &headers,
            r#"{"query":"replicas"}"#,
        )
        .unwrap()
    };
    let (status, body) = h1(MAX);
    assert_eq!(status, 200, "{body}");
    assert_eq!(h1(MAX + 1).0, 431);

    // HTTP/2 has no Host or Connection field: every field but Content-Length (which hyper's
    // client adds, and the gateway writes anew) goes to the pod.
    let addr = gateway.addr.as_str();
    let h2 = |n: usize| {
        with_h2c(&gateway.addr, |mut send, _conn| async move {
            use http_body_util::BodyExt;
            let mut req = hyper::Request::post(format!("http://{addr}/v1/query"))
                .header("authorization", "Bearer demo-key-media-1")
                .header("content-type", "application/json");
            for (name, value) in fillers(n - 3) {
                req = req.header(name, value);
            }
            let req = req
                .body(http_body_util::Full::new(hyper::body::Bytes::from(
                    r#"{"query":"replicas"}"#,
                )))
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    let (status, body) = h2(MAX);
    assert_eq!(status, 200, "{body}");
    let (status, body) = h2(MAX + 1);
    assert_eq!(status, 431, "{body}");
    assert!(body.contains(r#""code":"too_many_headers""#), "{body}");
}

/// A stand-in pod (a test double: it only records): answers `/ready` and records the request
/// line of anything else that reaches it.
fn recording_pod() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = Arc::clone(&record);
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        match std::io::BufRead::read_line(&mut reader, &mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push(line),
                        }
                    }
                    let request_line = head.first().cloned().unwrap_or_default();
                    if !request_line.starts_with("GET /ready ") {
                        record.lock().unwrap().push(request_line);
                    }
                    let body = r#"{"state":"ready"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// What the gateway at `addr` answers to `request`, sent whole on a new connection (empty if it
/// closed without an answer).
fn raw_answer(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Request smuggling and malformed framing, each from a tenant with a valid key: answered 4xx
/// by the gateway (or the connection closed), and nothing reaches the pod. A request framed
/// both by Transfer-Encoding and Content-Length is read by its chunks and its connection closed
/// after it (RFC 9112 §6.3; hyper drops the Content-Length before the gateway sees it): what
/// follows the chunks, the smuggled request, never reaches the pod.
#[test]
fn smuggling_attempts_are_refused_and_never_reach_a_pod() {
    let (pod_addr, seen) = recording_pod();
    let gateway = start("gateway", &["--pods", pod_addr.as_str()]);
    let head = "POST /v1/query HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer demo-key-media-1\r\n";
    let smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let both = raw_answer(
        &gateway.addr,
        &format!(
            "{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
    );
    assert!(both.contains("connection: close"), "{both:?}");
    assert_eq!(both.matches("HTTP/1.1 ").count(), 1, "one answer: {both:?}");
    let attacks = [
        (
            "two Content-Lengths",
            format!("{head}Content-Length: 2\r\nContent-Length: 20\r\n\r\n{{}}"),
        ),
        (
            "obs-fold",
            format!("{head}X-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (
            "a bad chunk size",
            format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
        ),
        (
            "a chunk size past 64 bits",
            format!(
                "{head}Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n{{}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "Transfer-Encoding other than chunked",
            format!("{head}Transfer-Encoding: gzip\r\n\r\n{{}}"),
        ),
    ];
    for (name, request) in attacks {
        let answer = raw_answer(&gateway.addr, &request);
        let status: u16 = answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(
            status == 0 || (400..500).contains(&status),
            "{name}: answered {answer:?}"
        );
    }
    // A well-formed request afterwards reaches the pod: the recording works.
    assert_eq!(query(&gateway.addr), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "only the chunk-framed request and the well-formed one reach the pod: {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.starts_with("POST /v1/query ")),
        "{seen:?}"
    );
}

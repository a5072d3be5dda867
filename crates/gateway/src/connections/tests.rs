use super::*;
use crate::test_body::Frames;
use http_body_util::{BodyExt, Either, Full};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// A hyper pod stand-in on a free port that answers "ok" (chunked or with a length) and
/// counts the connections it accepted; with `keep_alive` off it closes each after one answer.
async fn pod(keep_alive: bool, chunked: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let ok = hyper::service::service_fn(move |_req| async move {
                let body = if chunked {
                    Either::Left(Frames::new(&["o", "k"], false))
                } else {
                    Either::Right(Full::new(Bytes::from_static(b"ok")))
                };
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), ok),
            );
        }
    });
    (addr, accepted)
}

/// A pod that speaks raw bytes: for each request it reads (a head with no body), it sends
/// the next answer of `answers`, a piece at a time, each piece once `go` says so (or at
/// once, without `go`). After the last answer it closes the connection. It reports each
/// request it read.
async fn raw_pod(
    answers: Vec<Vec<&'static [u8]>>,
    mut go: Option<mpsc::UnboundedReceiver<()>>,
) -> (String, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (requests_tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        for pieces in answers {
            let end = loop {
                if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                assert_ne!(
                    stream.read_buf(&mut request).await.unwrap(),
                    0,
                    "closed early"
                );
            };
            // The test may not be listening.
            let _ = requests_tx.send(request.drain(..end + 4).collect());
            for piece in pieces {
                if let Some(go) = &mut go {
                    go.recv().await.unwrap();
                }
                stream.write_all(piece).await.unwrap();
            }
        }
    });
    (addr, requests)
}

fn connections_to(addr: &str) -> Arc<Connections> {
    let timeouts = PodTimeouts {
        connect: Duration::from_secs(1),
        body_silence: Duration::from_secs(30),
    };
    Arc::new(Connections::new(addr, timeouts).unwrap())
}

async fn send(
    connections: &Arc<Connections>,
    method: Method,
) -> Result<Response<PodBody>, SendError> {
    let req = connections.request(&method, "/v1/query");
    connections.send(req, Bytes::new(), true).await
}

async fn get(connections: &Arc<Connections>) -> Result<Bytes, Failure> {
    let res = send(connections, Method::GET).await?;
    Ok(res.into_body().collect().await?.to_bytes())
}

/// Sends five requests in a row; returns how many connections the pod accepted.
async fn connections_for_five(keep_alive: bool, chunked: bool) -> usize {
    let (addr, accepted) = pod(keep_alive, chunked).await;
    let connections = connections_to(&addr);
    for _ in 0..5 {
        assert_eq!(get(&connections).await.unwrap(), "ok");
        connections.close_closed(); // lets go of no open one
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_finished_exchange_leaves_its_connection_for_the_next() {
    assert_eq!(connections_for_five(true, false).await, 1);
    assert_eq!(connections_for_five(true, true).await, 1, "chunked");
}

#[tokio::test]
async fn connections_the_pod_closed_are_replaced() {
    assert_eq!(connections_for_five(false, false).await, 5);
}

#[tokio::test]
async fn the_pod_receives_the_request_as_built() {
    let (addr, mut requests) =
        raw_pod(vec![vec![b"HTTP/1.1 204 No Content\r\n\r\n"]; 3], None).await;
    let connections = connections_to(&addr);
    let mut req = connections.request(&Method::POST, "/v1/query?k=3");
    req.header(
        &header::CONTENT_TYPE,
        &HeaderValue::from_static("application/json"),
    );
    // The connection's own fields, given by the caller, are left out: it writes its own.
    for (name, value) in [
        (header::HOST, "elsewhere"),
        (header::CONTENT_LENGTH, "99"),
        (header::CONNECTION, "close"),
        (header::TRANSFER_ENCODING, "chunked"),
    ] {
        req.header(&name, &HeaderValue::from_static(value));
    }
    let res = connections
        .send(req, Bytes::from_static(b"{}"), true)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let expected = format!(
        "POST /v1/query?k=3 HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 2\r\n\r\n"
    );
    assert_eq!(
        String::from_utf8(requests.recv().await.unwrap()).unwrap(),
        expected
    );
    // The body followed the head; the next request reads it as the start of its own.
    let req = connections.request(&Method::DELETE, "/x");
    connections.send(req, Bytes::new(), true).await.unwrap();
    let got = String::from_utf8(requests.recv().await.unwrap()).unwrap();
    assert_eq!(
        got,
        format!("{{}}DELETE /x HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n")
    );
    let req = connections.request(&Method::GET, "/");
    connections.send(req, Bytes::new(), true).await.unwrap();
    let got = String::from_utf8(requests.recv().await.unwrap()).unwrap();
    assert_eq!(
        got,
        format!("GET / HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
        "no length for GET"
    );
}

#[tokio::test]
async fn answers_are_framed_as_rfc_9112_says() {
    // (answer, method, body, whether the connection is kept)
    let cases: [(&[u8], Method, &str, bool); 8] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Method::GET, "ok", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", Method::GET, "ok", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", Method::HEAD, "", true),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n", Method::GET, "", true),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1", Method::GET, "1", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", Method::GET, "ok", false),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Method::GET, "ok", false),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            Method::GET,
            "ok",
            false,
        ),
    ];
    for (answer, method, body, kept) in cases {
        let name = String::from_utf8_lossy(answer);
        let (addr, _) = raw_pod(vec![vec![answer]], None).await;
        let connections = connections_to(&addr);
        let res = send(&connections, method).await.unwrap();
        assert!(!res.headers().contains_key(header::CONNECTION), "{name}");
        assert!(
            !res.headers().contains_key(header::TRANSFER_ENCODING),
            "{name}"
        );
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, body, "{name}");
        assert_eq!(connections.lock().len(), usize::from(kept), "{name}");
    }
}

#[tokio::test]
async fn a_body_without_a_length_runs_to_the_close() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nall of it";
    let (addr, _) = raw_pod(vec![vec![answer]], None).await;
    let connections = connections_to(&addr);
    assert_eq!(get(&connections).await.unwrap(), "all of it");
    assert_eq!(connections.lock().len(), 0);
}

#[tokio::test]
async fn a_body_is_streamed_as_it_arrives() {
    for pieces in [
        vec![
            &b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nab"[..],
            b"cd",
            b"ef",
        ],
        vec![
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n"[..],
            b"2\r\ncd\r\n",
            b"2\r\nef\r\n0\r\n\r\n",
        ],
    ] {
        let (go_tx, go) = mpsc::unbounded_channel();
        let (addr, _) = raw_pod(vec![pieces], Some(go)).await;
        let connections = connections_to(&addr);
        go_tx.send(()).unwrap();
        let mut body = send(&connections, Method::GET).await.unwrap().into_body();
        let mut got = Vec::new();
        for _ in 0..2 {
            // Each piece is passed on before the next is sent.
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            got.extend_from_slice(&frame);
            assert!(!body.is_end_stream());
            go_tx.send(()).unwrap();
        }
        got.extend_from_slice(&body.collect().await.unwrap().to_bytes());
        assert_eq!(got, b"abcdef");
        assert_eq!(connections.lock().len(), 1, "kept for the next exchange");
    }
}

#[tokio::test]
async fn a_pod_silent_mid_body_cuts_the_body_short() {
    // The pod sends its head and half the body, then nothing (its connection stays open).
    let (go_tx, go) = mpsc::unbounded_channel();
    let pieces = vec![
        &b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab"[..],
        b"cd",
    ];
    let (addr, _) = raw_pod(vec![pieces], Some(go)).await;
    let timeouts = PodTimeouts {
        connect: Duration::from_secs(1),
        body_silence: Duration::from_millis(200),
    };
    let connections = Arc::new(Connections::new(&addr, timeouts).unwrap());
    go_tx.send(()).unwrap();
    let mut body = send(&connections, Method::GET).await.unwrap().into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "ab"
    );
    let started = std::time::Instant::now();
    let cut = tokio::time::timeout(Duration::from_secs(10), body.frame());
    let e = cut.await.expect("the body waits on").unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(body.is_end_stream());
    assert_eq!(
        connections.lock().len(),
        0,
        "a connection mid-answer is not reused"
    );
    drop(go_tx);
}

#[tokio::test]
async fn bad_answers_are_errors() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nok",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"not http at all\r\n\r\n",
    ] {
        let name = String::from_utf8_lossy(answer);
        let (addr, _) = raw_pod(vec![vec![answer]], None).await;
        let connections = connections_to(&addr);
        let e = send(&connections, Method::GET).await.err();
        assert!(matches!(e, Some(SendError::Exchange(_))), "{name}: {e:?}");
    }
}

#[tokio::test]
async fn a_head_over_the_limit_is_an_error() {
    let huge: &'static [u8] = Box::leak(
        [
            &b"HTTP/1.1 200 OK\r\nx-big: "[..],
            &vec![b'a'; MAX_HEAD],
            b"\r\n\r\n",
        ]
        .concat()
        .into_boxed_slice(),
    );
    let (addr, _) = raw_pod(vec![vec![huge]], None).await;
    let e = send(&connections_to(&addr), Method::GET)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("over 65536 bytes"), "{e}");
}

#[tokio::test]
async fn an_answer_cut_short_is_an_error() {
    // Cut in the head (not a retry: the pod answered something), then in the body.
    let (addr, _) = raw_pod(vec![vec![b"HTTP/1.1 200 OK\r\ncontent-"]], None).await;
    let e = send(&connections_to(&addr), Method::GET)
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("before its answer's head ended"),
        "{e}"
    );
    let (addr, _) = raw_pod(
        vec![vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"]],
        None,
    )
    .await;
    let connections = connections_to(&addr);
    let e = get(&connections).await.unwrap_err();
    assert!(
        e.to_string().contains("before its answer's body ended"),
        "{e}"
    );
    assert_eq!(connections.lock().len(), 0);
}

#[tokio::test]
async fn a_connection_the_pod_closed_while_idle_costs_no_request() {
    // A pod that answers one request per connection as keep-alive, then closes the
    // connection when told to (as a pod does when it stops): the gateway learns of it only
    // from the socket, while the connection sits idle. The checkout skips a connection known
    // to be closed, and an idempotent request that found its connection closed before any
    // answer goes out again on a new one.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (close_tx, mut close) = mpsc::unbounded_channel::<()>();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            close.recv().await.unwrap();
            drop(stream);
            closed_tx.send(()).unwrap();
        }
    });
    let connections = connections_to(&addr);
    for _ in 0..3 {
        assert_eq!(get(&connections).await.unwrap(), "ok");
        assert_eq!(connections.lock().len(), 1, "idle after its exchange");
        close_tx.send(()).unwrap();
        closed.recv().await.unwrap();
    }
}

#[tokio::test]
async fn idle_connections_the_pod_closed_are_let_go() {
    let (addr, _) = raw_pod(
        vec![vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]],
        None,
    )
    .await;
    let connections = connections_to(&addr);
    assert_eq!(get(&connections).await.unwrap(), "ok");
    // The pod closed the connection after its one answer; the runtime learns of it when it
    // next polls the sockets.
    let started = std::time::Instant::now();
    while !connections.lock().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "still kept");
        tokio::time::sleep(Duration::from_millis(5)).await;
        connections.close_closed();
    }
}

#[tokio::test]
async fn a_request_that_may_not_be_repeated_is_not_resent() {
    // The pod closes its idle connection; a POST that is not idempotent, written on it before
    // the gateway noticed, fails rather than going out twice.
    let (addr, mut requests) = raw_pod(
        vec![
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            vec![],
        ],
        None,
    )
    .await;
    let connections = connections_to(&addr);
    assert_eq!(get(&connections).await.unwrap(), "ok");
    requests.recv().await.unwrap();
    let req = connections.request(&Method::POST, "/v1/other");
    let sent = connections.send(req, Bytes::from_static(b"x"), false).await;
    // The second request reached the pod, which closed the connection without answering.
    requests.recv().await.unwrap();
    assert!(matches!(sent, Err(SendError::Exchange(_))), "{sent:?}");
}

#[tokio::test]
async fn a_body_dropped_part_way_closes_its_connection() {
    let (addr, accepted) = pod(true, true).await;
    let connections = connections_to(&addr);
    drop(send(&connections, Method::GET).await.unwrap());
    assert_eq!(connections.lock().len(), 0);
    assert_eq!(get(&connections).await.unwrap(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let e = get(&connections_to(&addr)).await.unwrap_err();
    let e = e.downcast::<SendError>().unwrap();
    assert!(e.is_connect(), "{e}");
    assert!(e.to_string().contains(&addr), "{e}");
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    /// Bytes like an answer's head: a status line, then fields (and body) of any bytes.
    fn answer() -> impl Strategy<Value = Vec<u8>> {
        let any_bytes = prop::collection::vec(any::<u8>(), 0..300);
        let fields = prop::collection::vec(
            prop_oneof![
                Just("content-length: 5\r\n".to_string()),
                Just("content-length: 1, 1\r\n".to_string()),
                Just("transfer-encoding: chunked\r\n".to_string()),
                Just("connection: close\r\n".to_string()),
                Just("x-tenantscale-fault: pod\r\n".to_string()),
                "[ -~]{0,20}:[ -~\t]{0,20}\r\n",
                "[\\x00-\\xff]{0,10}",
            ],
            0..8,
        );
        prop_oneof![
            any_bytes.clone(),
            ("[0-9]{0,4}", fields, any_bytes).prop_map(|(status, fields, rest)| {
                let mut wire = format!("HTTP/1.1 {status} X\r\n").into_bytes();
                wire.extend(fields.concat().bytes());
                wire.extend_from_slice(b"\r\n");
                wire.extend(rest);
                wire
            }),
        ]
    }

    proptest! {
        /// Whatever a pod sends, its head is read or refused, and its body decoded or
        /// refused: never a panic.
        #[test]
        fn any_answer_is_read_or_refused_never_a_panic(wire in answer(), head_only in any::<bool>()) {
            let mut buf = bytes::BytesMut::from(&wire[..]);
            if let Ok(Some(mut head)) = parse_head(&mut buf, head_only) {
                prop_assert!(buf.len() < wire.len(), "the head was taken off");
                prop_assert!(!head.headers.contains_key(FAULT), "the pod's mark is not passed on");
                for _ in 0..=wire.len() {
                    match head.framing.next(&mut buf) {
                        Ok(Some(framing::Piece::Data(data))) => prop_assert!(!data.is_empty()),
                        Ok(Some(framing::Piece::End)) | Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}

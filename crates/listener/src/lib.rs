//! Accepting and serving HTTP connections with the limits every tenantscale listener needs:
//! the gateway's, a pod's and the autoscaler's API all serve through [`serve`].
//!
//! - **One deadline to the first request head**, whatever the protocol: a connection whose
//!   first request (an HTTP/1.1 head; for h2c the preface, SETTINGS and the first HEADERS) has
//!   not reached the service `header_timeout` after it was accepted is closed. hyper's HTTP/2
//!   server has no such timer and its HTTP/1.1 one starts only once the protocol is chosen, so
//!   each connection here has its own timer from accept.
//! - **HTTP/1.1 heads after the first** are under hyper's header timer, which starts when the
//!   connection begins waiting for the next head: a keep-alive connection idle between
//!   requests for `header_timeout` is closed by it too.
//! - **HTTP/2**: keep-alive pings (a peer that does not answer one within 20 s is dropped), an
//!   idle timeout (a connection on which no request began for `idle_timeout` gets GOAWAY; its
//!   open streams may finish for up to `shutdown`, then it is closed), and the stream and
//!   reset limits below.
//! - **A connection cap**: at `max_connections` the listener stops accepting, and new
//!   connections wait in the kernel's listen backlog until one closes (as nginx's
//!   `worker_connections` does). Closing them at once instead would cost an accept and a close
//!   per attempt of a flood and turn away the clients that would have been served a moment
//!   later.
//! - **Graceful shutdown**: once `stop` completes, no new connection is accepted and each open
//!   one finishes the exchange it is in, for up to `shutdown`. A connection told to close, by
//!   `stop` or its idle timeout, is closed when `shutdown` is over even if a response is still
//!   unsent: a client that never reads (HTTP/1.1) or never opens its flow-control window
//!   (HTTP/2) cannot hold it open.
//! - **TLS** when given an acceptor: the handshake counts against the first-head deadline, and
//!   the protocol comes from ALPN (`h2`: HTTP/2, anything else or none: HTTP/1.1) instead of
//!   the first bytes.

mod closing;
mod preface;

use closing::Closing;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use preface::Protocol;
use std::error::Error as StdError;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Header fields a request may have (HTTP/1.1; hyper's default, which keeps its parser's field
/// array on the stack).
pub const MAX_HEADERS: usize = 100;

/// Streams one HTTP/2 connection may have open at once. RFC 9113 §6.5.2 advises no fewer than
/// 100 (nginx: 128). Each stream may hold a request body of up to `--max-body` while it is
/// read, so one connection holds at most 100 × that (100 MiB at the default 1 MiB); hyper's
/// default of 200 doubled that for no client's benefit.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Bytes of one HTTP/2 request's header list (RFC 9113 §6.5.2 counting: name + value + 32
/// per field); hyper's default, stated.
const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;
/// Streams a client may open and reset before the server has seen them (the "rapid reset"
/// attack, CVE-2023-44487): past this many at once the connection gets GOAWAY.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it drops the
/// connection (the "MadeYouReset" attack, CVE-2025-8671).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// An HTTP/2 connection with no frame for this long gets a PING; one not answered within
/// [`KEEP_ALIVE_TIMEOUT`] is closed (a peer that vanished without a FIN).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// File descriptors kept for what a process opens besides client connections (its store,
/// Redis, listeners, logs).
const RESERVED_FILES: u64 = 64;
/// At most one "connection cap reached" line per this long.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the first complete request head; also each later HTTP/1.1 head,
    /// counted from the end of the previous exchange.
    pub header_timeout: Duration,
    /// An HTTP/2 connection on which no request began for this long is closed (GOAWAY, then
    /// close once its open streams end, within `shutdown`): it is noticed between one and two
    /// of these after the last request began. An HTTP/1.1 exchange (one request) gets the same
    /// bound.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Header fields an HTTP/1.1 request may have (more: 431).
    pub max_headers: usize,
    /// Once told to close (the stop signal, or the idle timeout), a connection may finish its
    /// exchanges for this long; then it is closed.
    pub shutdown: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_headers: MAX_HEADERS,
            shutdown: Duration::from_secs(30),
        }
    }
}

/// Half of the open files this process may have (its soft `RLIMIT_NOFILE`, `ulimit -n`) after
/// [`RESERVED_FILES`]: every client connection with a request in flight can hold a second
/// descriptor (a pod connection at the gateway, the store or LLM connection at a pod). A
/// descriptor limit reached mid-flight fails requests already admitted (and makes `accept`
/// fail in a loop); the cap refuses no one, it makes new clients wait.
fn default_max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let files = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let files = files.min(1 << 21);
    (files.saturating_sub(RESERVED_FILES) / 2).max(1) as usize
}

/// Serves `listener`'s connections (through `tls` when given) with the service `service_for`
/// makes for each client's address, within `limits`, until `stop` completes; then stops
/// accepting and lets open connections finish (up to `limits.shutdown`).
pub async fn serve<M, S>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    mut service_for: M,
    stop: impl Future<Output = ()>,
) where
    M: FnMut(SocketAddr) -> S,
    S: HttpService,
{
    let shared = Arc::new(Shared {
        protocols: Protocols::new(&limits),
        limits,
        tls,
        closing: Arc::new(Closing::default()),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut warned: Option<Instant> = None;
    let mut stop = pin!(stop);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        %listen,
                        "connection cap reached: new connections wait in the listen backlog until open ones close (--max-connections)"
                    );
                    warned = Some(Instant::now());
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => {
                        slot.expect("the semaphore is never closed")
                    }
                    () = &mut stop => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = service_for(peer);
                    connections.spawn(connection(stream, service, Arc::clone(&shared), slot));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop => break,
        }
        // Forget the connections that have ended.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    shared.closing.ask();
    let all_ended = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown, all_ended)
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout: closing the connections left");
    }
}

/// A service a listener can serve: its futures and bodies may move between threads.
pub trait HttpService:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Future: Send + 'static,
        Error: Into<Box<dyn StdError + Send + Sync>>,
    > + Send
    + 'static
{
    type Body: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Body = B;
}

struct Shared {
    limits: Limits,
    tls: Option<TlsAcceptor>,
    protocols: Protocols,
    closing: Arc<Closing>,
}

/// Serves one connection; `_slot` is its place under the connection cap.
async fn connection<S: HttpService>(
    stream: TcpStream,
    service: S,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let head_deadline = Instant::now() + shared.limits.header_timeout;
    let _ = stream.set_nodelay(true);
    let Some(tls) = &shared.tls else {
        let first_bytes = tokio::time::timeout_at(head_deadline, preface::sniff(&stream));
        // Nothing by the deadline, closed, broken, or shutting down: nothing to serve.
        let Some(Ok(Ok(Some(protocol)))) =
            Arc::clone(&shared.closing).unless_asked(first_bytes).await
        else {
            return;
        };
        return serve_connection(stream, protocol, service, &shared, head_deadline).await;
    };
    let handshake = tokio::time::timeout_at(head_deadline, tls.accept(stream));
    let Some(Ok(Ok(stream))) = Arc::clone(&shared.closing).unless_asked(handshake).await else {
        return;
    };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    serve_connection(stream, protocol, service, &shared, head_deadline).await;
}

/// Serves one connection in `protocol` once it is chosen.
async fn serve_connection<I, S: HttpService>(
    stream: I,
    protocol: Protocol,
    service: S,
    shared: &Shared,
    head_deadline: Instant,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let begun = Arc::new(AtomicU64::new(0));
    let service = Counted {
        service,
        begun: Arc::clone(&begun),
    };
    let watch = Watch {
        closing: Arc::clone(&shared.closing),
        begun,
        head_deadline,
        idle: shared.limits.idle_timeout,
        grace: shared.limits.shutdown,
    };
    let io = TokioIo::new(stream);
    let protocols = &shared.protocols;
    // An error ends the connection (hyper has answered what it could).
    match protocol {
        Protocol::Http1 => {
            let conn = protocols.http1.serve_connection(io, service);
            watch.drive(conn, |c| c.graceful_shutdown()).await;
        }
        Protocol::Http2 => {
            let conn = protocols.http2.serve_connection(io, service);
            watch.drive(conn, |c| c.graceful_shutdown()).await;
        }
        Protocol::Unsure => {
            let conn = protocols.auto.serve_connection(io, service);
            watch.drive(conn, |c| c.graceful_shutdown()).await;
        }
    }
}

/// A connection's service, counting the requests that began (each call is a complete head).
struct Counted<S> {
    service: S,
    begun: Arc<AtomicU64>,
}

impl<S: Service<R>, R> Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> S::Future {
        // Only the connection's own task calls its service: a load and a store, no locked
        // instruction.
        let begun = self.begun.load(Ordering::Relaxed);
        self.begun.store(begun + 1, Ordering::Relaxed);
        self.service.call(req)
    }
}

/// What ends one connection besides its client: the first-head deadline, the idle timeout and
/// the listener's shutdown.
struct Watch {
    closing: Arc<Closing>,
    begun: Arc<AtomicU64>,
    head_deadline: Instant,
    idle: Duration,
    /// How long a shut-down connection may take to finish.
    grace: Duration,
}

impl Watch {
    /// Drives `connection` to its end. It is dropped (closed) if no request has begun by the
    /// head deadline, and `shut_down` (finish the exchanges in progress, then close) once
    /// closing is asked or once no request began for an idle period; dropped if still open
    /// `grace` after that (a response its client never takes, by not reading or with a zero
    /// HTTP/2 window, would hold it forever).
    async fn drive<C: Future>(self, connection: C, shut_down: impl Fn(Pin<&mut C>)) {
        let mut connection = pin!(connection);
        let mut listener = Arc::clone(&self.closing).listener();
        let mut timer = pin!(tokio::time::sleep_until(self.head_deadline));
        // Whether the timer is registered to wake this task: then it is only polled once it
        // has fired (one atomic load per wake of a busy connection, instead of a poll).
        let mut armed = false;
        let mut shut = false;
        let mut seen = 0;
        poll_fn(|cx| {
            if !shut && listener.asked(cx) {
                shut = true;
                shut_down(connection.as_mut());
                timer.as_mut().reset(Instant::now() + self.grace);
                armed = false;
            }
            if connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            while !armed || timer.is_elapsed() {
                if timer.as_mut().poll(cx).is_pending() {
                    armed = true;
                    break;
                }
                armed = false;
                let begun = self.begun.load(Ordering::Relaxed);
                // No request by the head deadline, or the grace after shutting down is over.
                if begun == 0 || shut {
                    return Poll::Ready(());
                }
                if begun == seen {
                    shut = true;
                    shut_down(connection.as_mut());
                    // The connection has to be polled again to say goodbye.
                    cx.waker().wake_by_ref();
                    timer.as_mut().reset(Instant::now() + self.grace);
                } else {
                    seen = begun;
                    timer.as_mut().reset(Instant::now() + self.idle);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The same HTTP/1.1 settings on hyper's builder and on hyper-util's auto builder's.
macro_rules! http1_limits {
    ($builder:expr, $limits:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($limits.header_timeout)
            .max_headers($limits.max_headers)
            .keep_alive(true)
    };
}

/// The same HTTP/2 settings on hyper's builder and on hyper-util's auto builder's.
macro_rules! http2_limits {
    ($builder:expr) => {
        $builder
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
    };
}

/// How connections are served, by protocol.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// For a connection whose first bytes do not yet tell (see [`preface`]).
    auto: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_limits!(http1, limits);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2_limits!(http2);
        let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        http1_limits!(auto.http1(), limits);
        http2_limits!(auto.http2());
        Self { http1, http2, auto }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    /// A connection stand-in: pending until shut down, then it ends with how many times it was
    /// polled; a `stuck` one never ends (a response its client never takes).
    struct Connection {
        shut: bool,
        stuck: bool,
        polls: usize,
    }

    impl Future for Connection {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.shut && !self.stuck {
                Poll::Ready(self.polls)
            } else {
                Poll::Pending
            }
        }
    }

    /// Drives a stand-in on which `begun` requests began; true if it was shut down, false if
    /// it was dropped.
    fn drive(
        closing: &Arc<Closing>,
        begun: u64,
        head: Duration,
        idle: Duration,
    ) -> tokio::task::JoinHandle<bool> {
        drive_stuck(closing, begun, head, idle, false)
    }

    fn drive_stuck(
        closing: &Arc<Closing>,
        begun: u64,
        head: Duration,
        idle: Duration,
        stuck: bool,
    ) -> tokio::task::JoinHandle<bool> {
        let watch = Watch {
            closing: Arc::clone(closing),
            begun: Arc::new(AtomicU64::new(begun)),
            head_deadline: Instant::now() + head,
            idle,
            grace: Duration::from_millis(50),
        };
        tokio::spawn(async move {
            let shut = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = Arc::clone(&shut);
            let connection = Connection {
                shut: false,
                stuck,
                polls: 0,
            };
            watch
                .drive(connection, move |mut c| {
                    seen.store(true, Ordering::Relaxed);
                    c.shut = true;
                })
                .await;
            shut.load(Ordering::Relaxed)
        })
    }

    /// Bounded only so a regression fails instead of hanging.
    async fn ended(task: tokio::task::JoinHandle<bool>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the connection ends")
            .unwrap()
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn asking_shuts_down_open_connections_and_ones_served_after() {
        let closing = Arc::new(Closing::default());
        let open: Vec<_> = (0..3).map(|_| drive(&closing, 1, LONG, LONG)).collect();
        tokio::task::yield_now().await;
        assert!(open.iter().all(|c| !c.is_finished()));
        closing.ask();
        for c in open {
            assert!(ended(c).await, "shut down, not dropped");
        }
        assert!(ended(drive(&closing, 1, LONG, LONG)).await);
    }

    #[tokio::test]
    async fn a_connection_without_a_request_by_the_deadline_is_dropped() {
        let closing = Arc::new(Closing::default());
        let short = Duration::from_millis(50);
        assert!(!ended(drive(&closing, 0, short, LONG)).await);
    }

    #[tokio::test]
    async fn a_connection_without_a_new_request_for_the_idle_timeout_is_shut_down() {
        let closing = Arc::new(Closing::default());
        let short = Duration::from_millis(50);
        assert!(ended(drive(&closing, 1, short, short)).await);
    }

    #[tokio::test]
    async fn a_connection_that_does_not_finish_within_the_grace_is_dropped() {
        let closing = Arc::new(Closing::default());
        let short = Duration::from_millis(50);
        // Shut down by its idle timeout.
        assert!(ended(drive_stuck(&closing, 1, short, short, true)).await);
        // Shut down by the listener's stop.
        let open = drive_stuck(&closing, 1, LONG, LONG, true);
        tokio::task::yield_now().await;
        assert!(!open.is_finished());
        closing.ask();
        assert!(ended(open).await);
    }

    /// The attack: an HTTP/2 client that opens no window for the response body, so the
    /// response's DATA can never be sent and its stream never ends (PINGs it answers).
    #[tokio::test]
    async fn a_client_that_takes_no_response_cannot_hold_its_connection_open() {
        use http_body_util::{BodyExt, Empty, Full};
        use hyper::body::Bytes;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let short = Duration::from_millis(100);
        // The idle timer starts at the head deadline: long enough for a loaded machine to
        // send the request, short for the test.
        let limits = Limits {
            header_timeout: Duration::from_secs(2),
            idle_timeout: short,
            shutdown: short,
            ..Limits::default()
        };
        let service = |_| {
            hyper::service::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"ok",
                ))))
            })
        };
        let server = tokio::spawn(serve(
            listener,
            limits,
            None,
            service,
            std::future::pending(),
        ));
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let request = Request::get("http://localhost/health")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        // Its body can never come: the client's connection ends only if the server closes it.
        // Bounded only so a regression fails instead of hanging.
        tokio::time::timeout(Duration::from_secs(30), conn)
            .await
            .expect("the server closes the connection")
            .unwrap()
            .unwrap();
        let body = response.into_body().collect().await;
        assert!(body.is_err(), "the response was cut: {body:?}");
        drop(send);
        server.abort();
    }

    /// The same over HTTP/1.1: a client that never reads its response, at the connection cap,
    /// holds back the next client only until its connection is closed.
    #[tokio::test]
    async fn a_client_that_never_reads_cannot_hold_its_connection_open() {
        use http_body_util::Full;
        use hyper::body::Bytes;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(100),
            shutdown: Duration::from_millis(100),
            max_connections: 1,
            ..Limits::default()
        };
        // More than the socket buffers hold with the client's receive buffer kept small.
        const LEN: usize = 16 << 20;
        let body = Bytes::from(vec![0; LEN]);
        let service = move |_| {
            let body = body.clone();
            hyper::service::service_fn(move |_| {
                let body = body.clone();
                async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(body))) }
            })
        };
        let server = tokio::spawn(serve(
            listener,
            limits,
            None,
            service,
            std::future::pending(),
        ));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stuck = socket.connect(addr).await.unwrap();
        stuck
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Served only once the connection that does not read is closed.
        let mut next = TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        // Bounded only so a regression fails instead of hanging.
        tokio::time::timeout(Duration::from_secs(30), next.read_to_end(&mut response))
            .await
            .expect("the next client is served")
            .unwrap();
        assert!(response.starts_with(b"HTTP/1.1 200"));
        let mut cut = Vec::new();
        let _ = stuck.read_to_end(&mut cut).await;
        assert!(cut.len() < LEN, "the response was cut");
        server.abort();
    }
}

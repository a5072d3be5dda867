//! Keep-alive HTTP/1.1 connections to one pod: the data path's client.
//!
//! The task serving a client's request writes it to the pod and reads the answer itself. With
//! hyper's client each exchange went through a second task per connection, a channel for the
//! request, a oneshot for the answer and a channel for every body chunk; that task was a third
//! of the gateway's instructions per request (`bench/proxy-cpu.sh --callgrind`). The answer's
//! head is parsed with httparse. A body that arrived with the head is passed on whole and the
//! connection is idle again at once; a longer one is streamed off the socket by [`PodBody`],
//! which hands the connection back when the body ends.
//!
//! A pod's connections hang off its entry in the pool (found under the lock the request takes
//! anyway): no lookup by authority.

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod framing;

use framing::{Framing, Piece};

/// Idle connections kept per pod; more are closed when their exchange ends.
const MAX_IDLE: usize = 1024;
/// An answer's head may be this long and have this many fields (hyper's own limits).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Free room a connection's read buffer gets before each read.
const READ_SIZE: usize = 8 * 1024;

/// Headers about one connection, not the message (RFC 9110 §7.6.1): dropped on the way in
/// and on the way out; each connection writes its own.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "transfer-encoding" | "upgrade"
    )
}

/// The field a pod marks an answer with (`X-Tenantscale-Fault: pod`, on a 5xx) when the
/// failure is its own, not the tenant's request's (the pod's `ApiError`): only such answers
/// count against the pod. Never passed on to the client.
const FAULT: &str = "x-tenantscale-fault";

/// In an answer's extensions when the pod marked it as its own fault (see [`FAULT`]).
#[derive(Clone, Copy, Debug)]
pub struct PodFault;

/// How sending a request to a pod failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the request was never sent.
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// The exchange broke after the request may have reached the pod.
    #[error(transparent)]
    Exchange(io::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// A request for one pod, written out in HTTP/1.1 form as it is built: the gateway's
/// header names and values are valid by their types, so nothing needs checking twice.
#[derive(Debug)]
pub struct PodRequest {
    head: Vec<u8>,
    /// Whether an empty body is still stated (`Content-Length: 0`), as hyper does for
    /// methods other than GET, HEAD and CONNECT.
    states_empty_body: bool,
    /// A HEAD request's answer has no body, whatever its length says.
    head_only: bool,
}

impl PodRequest {
    /// Adds a field, unless it is one the connection writes itself: `Host`, `Content-Length`
    /// (the body goes out whole, with its length) and the hop-by-hop ones.
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        if !(hop_by_hop(name) || *name == header::HOST || *name == header::CONTENT_LENGTH) {
            self.field(name, value.as_bytes());
        }
    }

    /// Adds a field whose value the caller has made of visible ASCII (no `HeaderValue` to
    /// build for it).
    pub fn header_ascii(&mut self, name: &HeaderName, value: &[u8]) {
        debug_assert!(value.iter().all(u8::is_ascii_graphic));
        self.field(name, value);
    }

    fn field(&mut self, name: &HeaderName, value: &[u8]) {
        self.head.extend_from_slice(name.as_str().as_bytes());
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value);
        self.head.extend_from_slice(b"\r\n");
    }

    /// The head, ended by the body's length.
    fn finish(mut self, body: &[u8]) -> Self {
        if !body.is_empty() || self.states_empty_body {
            use std::io::Write;
            // Formatted into the Vec itself, which cannot fail.
            let _ = write!(self.head, "content-length: {}\r\n", body.len());
        }
        self.head.extend_from_slice(b"\r\n");
        self
    }
}

/// How long a pod may take.
#[derive(Clone, Copy, Debug)]
pub struct PodTimeouts {
    /// To accept a connection.
    pub connect: Duration,
    /// To send the next bytes of an answer's body, once its head has come (the head itself is
    /// under the response timeout of the whole exchange). A pod silent this long mid-body has
    /// hung: its client gets the body cut short rather than a wait without end.
    pub body_silence: Duration,
}

/// One pod's connections.
#[derive(Debug)]
pub struct Connections {
    addr: String,
    host: HeaderValue,
    timeouts: PodTimeouts,
    idle: Mutex<Vec<Connection>>,
}

/// Whether `addr` is `host:port` in visible ASCII: it becomes the requests' `Host`.
pub fn valid_pod_addr(addr: &str) -> bool {
    let host_port = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    host_port && addr.bytes().all(|b| b.is_ascii_graphic())
}

impl Connections {
    /// Connections to `addr`, which must be `host:port` in visible ASCII (it is the requests'
    /// `Host`); a registry's addresses are the network's input, checked here.
    pub fn new(addr: &str, timeouts: PodTimeouts) -> Result<Self, String> {
        if !valid_pod_addr(addr) {
            return Err("a pod address is host:port in visible ASCII".into());
        }
        Ok(Self {
            addr: addr.to_string(),
            host: HeaderValue::try_from(addr).map_err(|e| e.to_string())?,
            timeouts,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A request to this pod: `target` is in origin form (path and query); `Host` is the pod.
    pub fn request(&self, method: &Method, target: &str) -> PodRequest {
        let mut head = Vec::with_capacity(1024);
        for part in [method.as_str(), " ", target, " HTTP/1.1\r\n"] {
            head.extend_from_slice(part.as_bytes());
        }
        let mut req = PodRequest {
            head,
            states_empty_body: !matches!(*method, Method::GET | Method::HEAD | Method::CONNECT),
            head_only: *method == Method::HEAD,
        };
        req.field(&header::HOST, self.host.as_bytes());
        req
    }

    /// Sends `req` with `body` on an idle connection, or a new one, and reads the answer's
    /// head. If a reused connection turns out closed before the pod answered anything, an
    /// `idempotent` request goes out again on another connection (RFC 9112 §9.3.1): the pod
    /// may have closed it while idle, before the request arrived.
    pub async fn send(
        self: &Arc<Self>,
        req: PodRequest,
        body: Bytes,
        idempotent: bool,
    ) -> Result<Response<PodBody>, SendError> {
        let req = req.finish(&body);
        loop {
            let (mut connection, reused) = match self.checkout() {
                Some(connection) => (connection, true),
                // Boxed: opening a connection is rare, and its future would make every
                // request's larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            match connection.exchange(&req.head, &body, req.head_only).await {
                Ok(head) => return Ok(self.answer(connection, head)),
                Err(Broken::BeforeAnswer(_)) if reused && idempotent => continue,
                Err(Broken::BeforeAnswer(e) | Broken::Answering(e)) => {
                    return Err(SendError::Exchange(e));
                }
            }
        }
    }

    /// Closes the idle connections (the pod left rotation).
    pub fn close_idle(&self) {
        self.lock().clear();
    }

    /// Closes the idle connections the pod has closed: unlike the most recent ones, those at
    /// the bottom of the idle list may wait long for a checkout to find them out.
    pub fn close_closed(&self) {
        self.lock().retain_mut(Connection::may_be_open);
    }

    /// The answer whose head was just read: its body, whole if it has all arrived (and the
    /// connection idle again), else streamed.
    fn answer(self: &Arc<Self>, mut connection: Connection, head: Head) -> Response<PodBody> {
        // Most answers arrive in one read with their head: nothing left to wait for.
        let body = match head.framing {
            Framing::Length(n) if connection.buf.len() as u64 >= n => {
                Some(connection.buf.split_to(n as usize).freeze())
            }
            _ => None,
        };
        let body = match body {
            Some(data) => {
                if head.keep_alive {
                    self.give_back(connection);
                }
                PodBody::whole(data)
            }
            None => PodBody {
                state: State::Streaming(Box::new(Stream {
                    connection,
                    framing: head.framing,
                    keep_alive: head.keep_alive,
                    pool: Arc::clone(self),
                    silence: None,
                })),
            },
        };
        let mut res = Response::new(body);
        *res.status_mut() = head.status;
        *res.headers_mut() = head.headers;
        if head.pod_fault {
            res.extensions_mut().insert(PodFault);
        }
        res
    }

    /// Keeps a connection for the next exchange if it is between exchanges: nothing of an
    /// answer left unread.
    fn give_back(&self, connection: Connection) {
        if connection.buf.is_empty() {
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
    }

    /// The most recently used idle connection that is not known to be closed.
    fn checkout(&self) -> Option<Connection> {
        loop {
            let mut connection = self.lock().pop()?;
            if connection.may_be_open() {
                return Some(connection);
            }
        }
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let failed = |source| SendError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(
            self.timeouts.connect,
            TcpStream::connect(self.addr.as_str()),
        )
        .await
        .map_err(|_| failed(io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        Ok(Connection {
            stream,
            buf: bytes::BytesMut::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().expect("idle connections lock")
    }
}

/// How an exchange broke.
enum Broken {
    /// Before a byte of the answer: writing failed, or the pod closed the connection.
    BeforeAnswer(io::Error),
    Answering(io::Error),
}

/// An answer's head, as the gateway passes it on.
struct Head {
    status: StatusCode,
    /// Without the hop-by-hop fields.
    headers: HeaderMap,
    framing: Framing,
    /// Whether the connection may carry another exchange after this one.
    keep_alive: bool,
    /// Whether the pod marked the answer as its own fault.
    pod_fault: bool,
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    /// Bytes read from the pod and not yet passed on.
    buf: bytes::BytesMut,
}

impl Connection {
    /// Writes the request and reads the answer's head (past any 1xx interim answers).
    async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        head_only: bool,
    ) -> Result<Head, Broken> {
        use bytes::Buf;
        self.stream
            .write_all_buf(&mut head.chain(body))
            .await
            .map_err(Broken::BeforeAnswer)?;
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                match parse_head(&mut self.buf, head_only).map_err(Broken::Answering)? {
                    Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                        return Err(Broken::Answering(invalid(
                            "the pod switched protocols, which was not asked".into(),
                        )));
                    }
                    Some(head) if head.status.is_informational() => continue,
                    Some(head) => return Ok(head),
                    None if self.buf.len() >= MAX_HEAD => {
                        return Err(Broken::Answering(invalid(format!(
                            "the pod's answer head is over {MAX_HEAD} bytes"
                        ))));
                    }
                    None => {}
                }
            }
            let read = std::future::poll_fn(|cx| self.poll_read(cx)).await;
            let broken = match read {
                Ok(0) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the pod closed the connection before its answer's head ended",
                ),
                Ok(_) => continue,
                Err(e) => e,
            };
            return Err(if answered {
                Broken::Answering(broken)
            } else {
                Broken::BeforeAnswer(broken)
            });
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            // Readiness is tokio's cached state: no system call until the socket has data.
            ready!(self.stream.poll_read_ready(cx))?;
            self.buf.reserve(READ_SIZE);
            match self.stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                read => return Poll::Ready(read),
            }
        }
    }

    /// Whether an idle connection may still be open. The pod closing it (or, against the
    /// protocol, sending something unasked) makes it readable, which the runtime's cached
    /// readiness shows without a system call; a stale readiness costs the read a request's
    /// answer would otherwise start with.
    fn may_be_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.stream.try_read(&mut [0; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Takes a complete answer head off the front of `buf`, or `None` if it has not all arrived.
fn parse_head(buf: &mut bytes::BytesMut, head_only: bool) -> io::Result<Option<Head>> {
    use std::mem::MaybeUninit;
    // Each field's name and value as offsets into the head, so that the values can share the
    // head's memory once it is split off the buffer.
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, version, count) = {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(format!("the pod's answer head: {e}"))),
        };
        let start = buf.as_ptr() as usize;
        for (field, header) in fields.iter_mut().zip(res.headers.iter()) {
            let name = header.name.as_ptr() as usize - start;
            let value = header.value.as_ptr() as usize - start;
            // The head is at most MAX_HEAD (64 KiB) and one read long: offsets fit in a u32.
            *field = (
                name as u32,
                (name + header.name.len()) as u32,
                value as u32,
                (value + header.value.len()) as u32,
            );
        }
        (len, res.code, res.version, res.headers.len())
    };
    let head = buf.split_to(len).freeze();
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| invalid("the pod's answer has no valid status".into()))?;
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = version != Some(1);
    let mut pod_fault = false;
    for &(name_start, name_end, value_start, value_end) in &fields[..count] {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|e| invalid(format!("the pod's answer head: {e}")))?;
        let value = head.slice(value_start as usize..value_end as usize);
        if name.as_str() == FAULT {
            pod_fault |= value.trim_ascii().eq_ignore_ascii_case(b"pod");
            continue;
        }
        match name {
            header::CONTENT_LENGTH => length = Some(content_length(&value, length)?),
            // Only the last coding says whether the body is chunked (RFC 9112 §6.3).
            header::TRANSFER_ENCODING => {
                chunked = Some(
                    value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
                );
            }
            header::CONNECTION => {
                close |= value
                    .split(|&b| b == b',')
                    .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
            _ => {}
        }
        if !hop_by_hop(&name) {
            // httparse has already refused bytes a value may not hold; checked again anyway,
            // as the head is a pod's input and the check is a pass over a few bytes.
            headers.append(
                name,
                HeaderValue::from_maybe_shared(value)
                    .map_err(|e| invalid(format!("the pod's answer head: {e}")))?,
            );
        }
    }
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // RFC 9112 §6.3: no body for these; a transfer coding wins over a length, and then the
    // connection is not reused; with neither, the body runs to the end of the connection.
    let framing = match (no_body, chunked, length) {
        (true, ..) => Framing::Length(0),
        (false, Some(true), length) => {
            close |= length.is_some();
            Framing::chunked()
        }
        (false, Some(false), _) | (false, None, None) => {
            close = true;
            Framing::UntilClose
        }
        (false, None, Some(n)) => Framing::Length(n),
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive: !close,
        pod_fault,
    }))
}

/// The length a `Content-Length` field states: digits, or a list of the same digits (RFC 9110
/// §8.6), which must also agree with the length an earlier field stated.
fn content_length(value: &[u8], mut stated: Option<u64>) -> io::Result<u64> {
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        let n = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| invalid("the pod's answer has an invalid Content-Length".into()))?;
        if stated.is_some_and(|s| s != n) {
            return Err(invalid("the pod's answer states two lengths".into()));
        }
        stated = Some(n);
    }
    stated.ok_or_else(|| invalid("the pod's answer has an empty Content-Length".into()))
}

/// A pod's answer body. One that arrived with its head is held whole; a longer one is read
/// off its connection, which goes back to the pod's idle list when the body has ended (a
/// body dropped part-way closes it: the rest of the answer would still be on the wire).
#[derive(Debug)]
pub struct PodBody {
    state: State,
}

#[derive(Debug)]
enum State {
    Whole(Bytes),
    Streaming(Box<Stream>),
    Ended,
}

#[derive(Debug)]
struct Stream {
    connection: Connection,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Connections>,
    /// Armed when a read has to wait, pushed back by every read that brings bytes.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream {
    /// The body's next piece, read off the connection as needed.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Piece>> {
        loop {
            if let Some(piece) = self.framing.next(&mut self.connection.buf)? {
                return Poll::Ready(Ok(piece));
            }
            let limit = self.pool.timeouts.body_silence;
            let read = match self.connection.poll_read(cx) {
                Poll::Ready(read) => read?,
                Poll::Pending => {
                    let silence = self
                        .silence
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    ready!(silence.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the pod sent nothing for {} s in the middle of its answer's body",
                            limit.as_secs_f64()
                        ),
                    )));
                }
            };
            match read {
                // The end of such a body; its connection is not kept (`keep_alive` is false).
                0 if self.framing == Framing::UntilClose => return Poll::Ready(Ok(Piece::End)),
                0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the pod closed the connection before its answer's body ended",
                    )));
                }
                _ => {
                    if let Some(silence) = &mut self.silence {
                        silence.as_mut().reset(tokio::time::Instant::now() + limit);
                    }
                }
            }
        }
    }
}

impl PodBody {
    fn whole(data: Bytes) -> Self {
        Self {
            state: if data.is_empty() {
                State::Ended
            } else {
                State::Whole(data)
            },
        }
    }

    /// The body has ended: its connection is free for the next exchange.
    fn end(&mut self) {
        if let State::Streaming(stream) = std::mem::replace(&mut self.state, State::Ended) {
            let Stream {
                connection,
                keep_alive,
                pool,
                ..
            } = *stream;
            if keep_alive {
                pool.give_back(connection);
            }
        }
    }
}

impl Body for PodBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let stream = match &mut this.state {
            State::Streaming(stream) => stream,
            _ => {
                return Poll::Ready(match std::mem::replace(&mut this.state, State::Ended) {
                    State::Whole(data) => Some(Ok(Frame::data(data))),
                    _ => None,
                });
            }
        };
        match ready!(stream.poll_piece(cx)) {
            Ok(Piece::Data(data)) => {
                if stream.framing.is_done() {
                    this.end();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(Piece::End) => {
                this.end();
                Poll::Ready(None)
            }
            Err(e) => {
                this.state = State::Ended;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Ended => SizeHint::with_exact(0),
            State::Whole(data) => SizeHint::with_exact(data.len() as u64),
            State::Streaming(stream) => match stream.framing {
                Framing::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests;

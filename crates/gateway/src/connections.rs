//! Keep-alive HTTP/1 connections to one pod: the data path's client.
//!
//! hyper-util's pooled client looks a connection up by the request's authority on every
//! request and, for most responses, spawns a task that waits until the connection can take
//! another request. Here a pod's connections hang off its entry in the pool (found under the
//! lock the request takes anyway), and a connection goes back to the idle list when the
//! response body it carries has ended ([`PodBody`]): no lookup, no task per request.

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Idle connections kept per pod; more are closed when their exchange ends.
const MAX_IDLE: usize = 1024;

type Sender = SendRequest<Full<Bytes>>;

/// How sending a request to a pod failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the request was never sent.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The exchange broke after the request may have reached the pod.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// One pod's connections.
#[derive(Debug)]
pub struct Connections {
    addr: String,
    host: HeaderValue,
    connect_timeout: Duration,
    idle: Mutex<Vec<Sender>>,
}

impl Connections {
    /// Connections to `addr` (`host:port`), each opened within `connect_timeout`.
    pub fn new(addr: &str, connect_timeout: Duration) -> Self {
        Self {
            addr: addr.to_string(),
            host: HeaderValue::try_from(addr).expect("pod addresses are validated as HOST:PORT"),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (origin-form URI; `Host` is set here) on an idle connection, or a new one.
    /// The connection is reused once the response's body has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PodBody>, SendError> {
        req.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed: opening a connection is rare, and its future would make every
                // request's larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    return Ok(res.map(|inner| PodBody {
                        inner,
                        ended: false,
                        connection: Some((Arc::clone(self), sender)),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // An idle connection the pod had just closed: the request was not
                    // written, so another connection is safe for any method.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// Closes the idle connections (the pod left rotation).
    pub fn close_idle(&self) {
        self.lock().clear();
    }

    /// The most recently used idle connection that is still open.
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let mut sender = self.lock().pop()?;
            // Ready at once unless the connection is still finishing its last exchange.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let failed = |source| SendError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.addr.as_str()),
        )
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(pod = %addr, error = %e, "pod connection closed");
            }
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        self.idle.lock().expect("idle connections lock")
    }
}

/// A pod's response body; it hands its connection back for reuse when dropped after its end
/// (a body dropped part-way leaves the connection unusable, and it is then closed).
pub struct PodBody {
    inner: Incoming,
    /// Whether a poll returned the end (a chunked body's length is never known to be done).
    ended: bool,
    connection: Option<(Arc<Connections>, Sender)>,
}

impl Body for PodBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PodBody {
    fn drop(&mut self) {
        // hyper's server may drop a body without polling past its last frame.
        if self.is_end_stream()
            && let Some((connections, sender)) = self.connection.take()
        {
            let mut idle = connections.lock();
            if idle.len() < MAX_IDLE {
                idle.push(sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_body::Frames;
    use http_body_util::{BodyExt, Either};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A pod stand-in on a free port that answers "ok" (chunked or with a length) and counts
    /// the connections it accepted; with `keep_alive` off it closes each after one response.
    async fn pod(keep_alive: bool, chunked: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let ok = hyper::service::service_fn(move |_req| async move {
                    let body = if chunked {
                        Either::Left(Frames::new(&["ok"], false))
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

    async fn get(connections: &Arc<Connections>) -> Result<Bytes, SendError> {
        let req = Request::get("/v1/query").body(Full::default()).unwrap();
        let res = connections.send(req).await?;
        Ok(res.into_body().collect().await?.to_bytes())
    }

    /// Sends five requests in a row; returns how many connections the pod accepted.
    async fn connections_for_five(keep_alive: bool, chunked: bool) -> usize {
        let (addr, accepted) = pod(keep_alive, chunked).await;
        let connections = Arc::new(Connections::new(&addr, Duration::from_secs(1)));
        for _ in 0..5 {
            assert_eq!(get(&connections).await.unwrap(), "ok");
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
    async fn a_connection_the_pod_closed_while_idle_costs_no_request() {
        // A pod that answers one request per connection as keep-alive, then closes the
        // connection when told to (as a pod does when it stops): the client learns of it only
        // from the socket, while the connection sits idle. Either safeguard saves the next
        // request: the checkout skips a closed connection, and a request it could not write
        // goes out on a new one.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (close_tx, mut close) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let connections = Arc::new(Connections::new(&addr, Duration::from_secs(1)));
        for _ in 0..3 {
            assert_eq!(get(&connections).await.unwrap(), "ok");
            assert_eq!(connections.lock().len(), 1, "idle after its exchange");
            close_tx.send(()).unwrap();
            closed.recv().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_body_dropped_part_way_closes_its_connection() {
        let (addr, accepted) = pod(true, false).await;
        let connections = Arc::new(Connections::new(&addr, Duration::from_secs(1)));
        let req = Request::get("/").body(Full::default()).unwrap();
        drop(connections.send(req).await.unwrap());
        assert_eq!(get(&connections).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let connections = Arc::new(Connections::new(&addr, Duration::from_secs(1)));
        let e = get(&connections).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
        assert!(e.to_string().contains(&addr), "{e}");
    }
}

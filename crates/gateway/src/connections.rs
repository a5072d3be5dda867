//! Keep-alive HTTP/1 connections to one pod: the data path's client.
//!
//! hyper-util's pooled client looks a connection up by the request's authority on every
//! request and, for most responses, spawns a task that waits until the connection can take
//! another request. Here a pod's connections hang off its entry in the pool (found under the
//! lock the request takes anyway), and a connection goes back to the idle list when the
//! response body it carries has ended: no lookup, no task per request.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
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
    /// The connection stays with the returned [`Lease`] until the response body has ended.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        req.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = Lease {
                        connections: Arc::clone(self),
                        sender,
                    };
                    return Ok((res, lease));
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

/// A connection carrying one response.
pub struct Lease {
    connections: Arc<Connections>,
    sender: Sender,
}

impl Lease {
    /// Gives the connection back for reuse; call once its response body has ended (a body
    /// dropped part-way leaves the connection unusable, and it is then simply closed).
    pub fn reuse(self) {
        let mut idle = self.connections.lock();
        if idle.len() < MAX_IDLE {
            idle.push(self.sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A pod stand-in on a free port that answers "ok" and counts the connections it
    /// accepted; with `keep_alive` off it closes each connection after one response.
    async fn pod(keep_alive: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let ok = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
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
        let (res, lease) = connections.send(req).await?;
        let body = res.into_body().collect().await?.to_bytes();
        lease.reuse();
        Ok(body)
    }

    /// Sends five requests in a row; returns how many connections the pod accepted.
    async fn connections_for_five(keep_alive: bool) -> usize {
        let (addr, accepted) = pod(keep_alive).await;
        let connections = Arc::new(Connections::new(&addr, Duration::from_secs(1)));
        for _ in 0..5 {
            assert_eq!(get(&connections).await.unwrap(), "ok");
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_finished_exchange_leaves_its_connection_for_the_next() {
        assert_eq!(connections_for_five(true).await, 1);
    }

    #[tokio::test]
    async fn connections_the_pod_closed_are_replaced() {
        assert_eq!(connections_for_five(false).await, 5);
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

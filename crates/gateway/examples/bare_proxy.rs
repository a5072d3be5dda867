//! A reverse proxy made of hyper alone, measured beside nginx with the same rig as the gateway
//! (see README, "The gateway against nginx and HAProxy"): what a proxy on hyper's server and
//! hyper's client costs before it does anything of its own. The gateway, whose pod side is now
//! its own client, does all of its work in fewer instructions than this.
//!
//! It does only this: hyper's server connection, a hash of `X-Tenant-ID` to pick one of the
//! backends, hyper's client connection over a keep-alive connection kept per backend, and the
//! response streamed back. No authentication, admission, timeouts, signing, metrics or load
//! bound. On one thread, like the rig's `--pin split`.
//!
//! ```sh
//! cargo build --release -p tenantscale-gateway --example bare_proxy
//! ../shared/bench/proxy_bench.sh --proxy 'bare=target/release/examples/bare_proxy {PORT} {BACKENDS}'
//! ```

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderName;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");

/// One backend: its address and its idle keep-alive connections.
struct Backend {
    addr: String,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

/// A backend's response body; its connection goes back to the idle list once the body ended.
struct Returning {
    inner: Incoming,
    connection: Option<(Arc<Vec<Backend>>, usize, SendRequest<Incoming>)>,
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if self.inner.is_end_stream()
            && let Some((backends, i, sender)) = self.connection.take()
        {
            backends[i].idle.lock().expect("idle lock").push(sender);
        }
    }
}

type Answer = Response<http_body_util::Either<Returning, http_body_util::Empty<Bytes>>>;

async fn forward(
    backends: Arc<Vec<Backend>>,
    hasher: RandomState,
    req: Request<Incoming>,
) -> Result<Answer, std::io::Error> {
    let tenant = req.headers().get(&X_TENANT_ID).map(|v| v.as_bytes());
    let i = hasher.hash_one(tenant) as usize % backends.len();
    let backend = &backends[i];
    let idle = backend.idle.lock().expect("idle lock").pop();
    let ready = match idle {
        Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
        None => None,
    };
    let mut sender = match ready {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(&backend.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            sender
        }
    };
    let Ok(res) = sender.send_request(req).await else {
        let mut failed = Response::new(http_body_util::Either::Right(Default::default()));
        *failed.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(failed);
    };
    Ok(res.map(|inner| {
        http_body_util::Either::Left(Returning {
            inner,
            connection: Some((Arc::clone(&backends), i, sender)),
        })
    }))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, backends] = &args[..] else {
        eprintln!("usage: bare_proxy PORT HOST:PORT,HOST:PORT,...");
        std::process::exit(2);
    };
    let backends: Arc<Vec<Backend>> = Arc::new(
        backends
            .split(',')
            .map(|addr| Backend {
                addr: addr.to_string(),
                idle: Mutex::new(Vec::new()),
            })
            .collect(),
    );
    let hasher = RandomState::new();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener =
                tokio::net::TcpListener::bind(("127.0.0.1", port.parse().unwrap_or(0))).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let backends = Arc::clone(&backends);
                let hasher = hasher.clone();
                let service =
                    service_fn(move |req| forward(Arc::clone(&backends), hasher.clone(), req));
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        })
}

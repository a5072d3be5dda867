//! The seed's warm-up flag for balancers outside tenantscale: while a pod warms up, Redis holds
//! `pod:{pod}:warming_up = "true"` with the window as its TTL (so a crashed pod's flag expires
//! by itself); it is deleted when the window ends or the pod starts draining. tenantscale's own
//! gateway reads `/ready` instead. Redis trouble is logged and never stops the pod.

use std::time::Duration;

/// How long one Redis command may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The flag of one pod.
#[derive(Debug, Clone)]
pub struct WarmingFlag {
    client: redis::Client,
    pod: Option<String>,
}

impl WarmingFlag {
    /// The flag of `pod` (the seed uses the pod's IP; `None`: the address the pod listens on)
    /// in the Redis at `url` (`redis://HOST:PORT[/DB]`, or `rediss://` for TLS trusting the
    /// PEM CAs in `ca` or the system's roots); fails only on a malformed URL or CA file.
    pub fn new(
        url: &str,
        ca: Option<&std::path::Path>,
        pod: Option<String>,
    ) -> Result<Self, tenantscale_tls::TlsError> {
        Ok(Self {
            client: tenantscale_tls::redis_client(url, ca)?,
            pod,
        })
    }

    /// Names an unnamed pod after the address it listens on.
    pub fn or_named_after(mut self, listen: std::net::SocketAddr) -> Self {
        self.pod.get_or_insert_with(|| listen.to_string());
        self
    }

    pub fn key(&self) -> String {
        format!(
            "pod:{}:warming_up",
            self.pod.as_deref().unwrap_or("unnamed")
        )
    }

    /// Sets the flag for `window` (at least a second).
    pub async fn set(&self, window: Duration) {
        let seconds = window.as_secs_f64().ceil().max(1.0) as u64;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key()).arg("true").arg("EX").arg(seconds);
        self.run(cmd, "set").await;
    }

    /// Deletes the flag.
    pub async fn clear(&self) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key());
        self.run(cmd, "cleared").await;
    }

    async fn run(&self, cmd: redis::Cmd, done: &'static str) {
        let (client, key) = (self.client.clone(), self.key());
        let result = tokio::task::spawn_blocking(move || -> redis::RedisResult<()> {
            let mut conn = client.get_connection_with_timeout(TIMEOUT)?;
            conn.set_read_timeout(Some(TIMEOUT))?;
            conn.set_write_timeout(Some(TIMEOUT))?;
            cmd.query::<()>(&mut conn)
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::info!(%key, "warming flag {done}"),
            Ok(Err(e)) => tracing::warn!(%key, error = %e, "Redis refused the warming flag"),
            Err(e) => tracing::warn!(%key, error = %e, "warming flag task failed"),
        }
    }
}

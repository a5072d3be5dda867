//! Admission shared by all gateway replicas through Redis (`--redis`): one Lua script per
//! decision checks the tenant's in-flight leases against its cap and its GCRA state, then
//! takes a lease, atomically and on Redis's clock. A lease expires by itself, so a crashed
//! gateway leaks no capacity; a finished request deletes its lease.
//!
//! The lease's id is chosen here, before the script is sent. A script that Redis runs after
//! the gateway stopped waiting for it (a slow Redis, the decision timeout) has still taken its
//! lease, which no request holds: the gateway deletes it by id at once, on the same
//! connection, where Redis runs commands in the order they were sent, so the delete comes
//! after the script if the script was sent at all. (Over a connection that broke meanwhile
//! the order is not certain; that lease expires with its TTL.) The same holds when the request
//! is cancelled while the script is awaited (client disconnect, HTTP/2 reset): a guard deletes
//! the lease when the decision's future is dropped before the lease has an owner.
//!
//! When Redis does not answer within a few milliseconds the gateway falls back to its local
//! admission, set up with its part (1/`--replicas`) of every limit, logs once, and tries
//! Redis again a second later: a Redis outage never refuses every tenant.

use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tenantscale_core::fairness::admission::{Limit, Rejection, TenantLimits};

/// Checks cap and rate, then takes a lease. KEYS: the tenant's GCRA key and lease set.
/// ARGV: emission interval µs (-1: no rate limit), tolerance µs, cap, lease id, lease TTL µs.
/// Returns {0, 0} admitted, {1, µs to wait} over the rate, {2, 0} at the cap.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return {2, 0}
end
local emission = tonumber(ARGV[1])
if emission >= 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  local ahead = tat - now
  local tolerance = tonumber(ARGV[2])
  if ahead > tolerance then
    return {1, ahead - tolerance}
  end
  local next_tat = tat + emission
  redis.call('SET', KEYS[1], next_tat, 'PX', math.floor((next_tat - now) / 1000) + 1000)
end
local ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[2], math.floor(ttl / 1000) + 1000)
return {0, 0}
";

/// How long one Redis decision may take before the local fallback decides.
const DECISION_TIMEOUT: Duration = Duration::from_millis(50);
/// After a failure, how long the fallback decides before Redis is tried again.
const RETRY_AFTER_FAILURE_MS: u64 = 1000;

pub struct SharedLimits {
    conn: ConnectionManager,
    script: redis::Script,
    /// Lease ids: this gateway's random prefix and a counter.
    gateway_id: u64,
    next_lease: AtomicU64,
    lease_ttl: Duration,
    /// Gateway milliseconds before which Redis is not asked (after a failure).
    down_until_ms: AtomicU64,
    /// Whether the last attempt failed (logged once per outage).
    down: AtomicBool,
}

/// Redis's answer for one request.
pub enum Decision {
    Admitted { lease: String },
    Refused(Rejection),
}

impl SharedLimits {
    /// Connects through `client` (`rediss://`: TLS); leases live `lease_ttl` (longer than any
    /// request may take).
    pub async fn connect(client: redis::Client, lease_ttl: Duration) -> redis::RedisResult<Self> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(DECISION_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let gateway_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Ok(Self {
            conn,
            script: redis::Script::new(ADMIT),
            gateway_id,
            next_lease: AtomicU64::new(0),
            lease_ttl,
            down_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        })
    }

    /// Whether Redis is being used (not in a fallback period) at gateway time `now_ms`.
    pub fn available(&self, now_ms: u64) -> bool {
        now_ms >= self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Redis's decision for a request of `tenant` (an id) under `limits` and a cap of `cap`
    /// requests in flight; `None` if Redis did not answer (the caller falls back).
    pub async fn admit(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        cap: u32,
        now_ms: u64,
    ) -> Option<Decision> {
        let lease = format!(
            "{:x}-{:x}",
            self.gateway_id,
            self.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let (emission, tolerance) = limits.rate.map_or((-1, 0), |r| {
            (
                (r.emission_interval() * 1e6).round() as i64,
                (r.tolerance() * 1e6).round() as i64,
            )
        });
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(rate_key(tenant));
        invocation
            .key(lease_key(tenant))
            .arg(emission)
            .arg(tolerance)
            .arg(cap)
            .arg(&lease)
            .arg(self.lease_ttl.as_micros() as u64);
        // Until the answer says whether the lease was taken, any way out (an error, the
        // timeout, this future dropped) deletes it.
        let pending = PendingLease {
            limits: self,
            tenant,
            lease,
        };
        let answer: Result<redis::RedisResult<(i64, i64)>, _> =
            tokio::time::timeout(DECISION_TIMEOUT, invocation.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok((0, _))) => {
                self.recovered();
                Some(Decision::Admitted {
                    lease: pending.disarm(),
                })
            }
            Ok(Ok((1, wait_us))) => {
                pending.disarm();
                self.recovered();
                Some(Decision::Refused(Rejection {
                    limit: Limit::RateLimit,
                    retry_after: wait_us as f64 / 1e6,
                }))
            }
            Ok(Ok(_)) => {
                pending.disarm();
                self.recovered();
                Some(Decision::Refused(Rejection {
                    limit: Limit::ShareCap,
                    retry_after: 1.0,
                }))
            }
            Ok(Err(e)) => {
                self.failed(now_ms, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(now_ms, "no answer in time");
                None
            }
        }
    }

    /// Deletes a lease: a finished request's, or one a script may have taken after its
    /// answer came too late (in the background; if it is lost, the lease expires by itself).
    pub fn release(&self, tenant: &str, lease: String) {
        let mut conn = self.conn.clone();
        let key = lease_key(tenant);
        tokio::spawn(async move {
            let removed: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(key)
                .arg(lease)
                .query_async(&mut conn)
                .await;
            if let Err(e) = removed {
                tracing::debug!(error = %e, "lease not removed; it will expire");
            }
        });
    }

    fn failed(&self, now_ms: u64, why: &str) {
        self.down_until_ms
            .store(now_ms + RETRY_AFTER_FAILURE_MS, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                "Redis unavailable: each gateway enforces its part of the limits alone"
            );
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis back: limits are shared again");
        }
    }

    /// Whether the last attempt failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// A lease a script may have taken that no request holds yet: deleted when dropped armed.
struct PendingLease<'a> {
    limits: &'a SharedLimits,
    tenant: &'a str,
    /// Empty once disarmed (lease ids never are).
    lease: String,
}

impl PendingLease<'_> {
    /// The lease, now owned by the caller (or known not taken).
    fn disarm(mut self) -> String {
        std::mem::take(&mut self.lease)
    }
}

impl Drop for PendingLease<'_> {
    fn drop(&mut self) {
        // Without a runtime (it is shutting down) nothing can be sent: the lease expires.
        if !self.lease.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            self.limits
                .release(self.tenant, std::mem::take(&mut self.lease));
        }
    }
}

/// Keys of one tenant, hash-tagged so both live on one Redis Cluster slot.
fn rate_key(tenant: &str) -> String {
    format!("tenantscale:{{{tenant}}}:rate")
}

fn lease_key(tenant: &str) -> String {
    format!("tenantscale:{{{tenant}}}:leases")
}

#[cfg(test)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tenantscale_core::fairness::admission::Gcra;

    use redis_server::RedisServer;

    /// A gateway whose script Redis has loaded, its tenant's limits, and another connection
    /// that waits as long as a pause lasts.
    async fn warmed_up(
        server: &RedisServer,
    ) -> (
        SharedLimits,
        TenantLimits,
        redis::aio::MultiplexedConnection,
    ) {
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let limits = SharedLimits::connect(client, Duration::from_secs(120))
            .await
            .unwrap();
        let tenant = TenantLimits {
            // Slow enough that the rate key outlives the test: it shows the script ran.
            rate: Some(Gcra::new(0.01, 1)),
            max_share: 1.0,
        };
        let patient = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let other = redis::Client::open(server.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .unwrap();
        // A first decision loads the script (a NOSCRIPT retry would not be sent once the
        // gateway stops waiting).
        let deadline = Instant::now() + Duration::from_secs(20);
        while limits.admit("warm", &tenant, 10, 0).await.is_none() {
            assert!(Instant::now() < deadline, "Redis never answered in time");
        }
        (limits, tenant, other)
    }

    /// Waits until `tenant`'s script has run and no lease of it is left.
    async fn await_no_lease(other: &mut redis::aio::MultiplexedConnection, tenant: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ran: bool = redis::cmd("EXISTS")
                .arg(rate_key(tenant))
                .query_async(other)
                .await
                .unwrap();
            let leases: u64 = redis::cmd("ZCARD")
                .arg(lease_key(tenant))
                .query_async(other)
                .await
                .unwrap();
            if ran && leases == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the script's lease is still held: {leases} (script ran: {ran})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_lease_taken_after_the_gateway_stopped_waiting_is_deleted() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let (limits, tenant, mut other) = warmed_up(&server).await;
        // Redis holds every command for a while: the script runs after the decision timeout.
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1000)
            .arg("ALL")
            .query_async::<()>(&mut other)
            .await
            .unwrap();
        assert!(limits.admit("slow", &tenant, 10, 0).await.is_none());
        await_no_lease(&mut other, "slow").await;
        assert!(
            limits.is_down(),
            "the late answer fell back to local limits"
        );
    }

    #[tokio::test]
    async fn a_lease_whose_request_was_cancelled_while_redis_decided_is_deleted() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let (limits, tenant, mut other) = warmed_up(&server).await;
        // Redis holds writes (the script) but still answers CLIENT LIST.
        let pause = |mut conn: redis::aio::MultiplexedConnection, args: &'static [&str]| async move {
            redis::cmd("CLIENT")
                .arg(args)
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
        };
        // Each attempt drops the decision once Redis holds its script; an attempt whose
        // decision timed out first (a stalled machine) took the timeout path: try again.
        for attempt in 0.. {
            assert!(attempt < 20, "the decision always timed out first");
            let name = format!("cancelled-{attempt}");
            pause(other.clone(), &["PAUSE", "60000", "WRITE"]).await;
            let script_held = async {
                loop {
                    let clients: String = redis::cmd("CLIENT")
                        .arg("LIST")
                        .query_async(&mut other.clone())
                        .await
                        .unwrap();
                    if clients
                        .lines()
                        .any(|c| c.contains(" flags=b ") && c.contains(" cmd=evalsha "))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            let cancelled = tokio::select! {
                biased;
                _ = limits.admit(&name, &tenant, 10, 0) => false,
                () = script_held => true,
            };
            pause(other.clone(), &["UNPAUSE"]).await;
            await_no_lease(&mut other, &name).await;
            if cancelled {
                return;
            }
        }
    }
}

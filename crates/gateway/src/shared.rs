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
//! the order is not certain; that lease expires with its TTL.)
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
        let answer: Result<redis::RedisResult<(i64, i64)>, _> =
            tokio::time::timeout(DECISION_TIMEOUT, invocation.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok((0, _))) => {
                self.recovered();
                Some(Decision::Admitted { lease })
            }
            Ok(Ok((1, wait_us))) => {
                self.recovered();
                Some(Decision::Refused(Rejection {
                    limit: Limit::RateLimit,
                    retry_after: wait_us as f64 / 1e6,
                }))
            }
            Ok(Ok(_)) => {
                self.recovered();
                Some(Decision::Refused(Rejection {
                    limit: Limit::ShareCap,
                    retry_after: 1.0,
                }))
            }
            Ok(Err(e)) => {
                self.failed(now_ms, &e.to_string());
                self.release(tenant, lease);
                None
            }
            Err(_) => {
                self.failed(now_ms, "no answer in time");
                self.release(tenant, lease);
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

    #[tokio::test]
    async fn a_lease_taken_after_the_gateway_stopped_waiting_is_deleted() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let limits = SharedLimits::connect(client, Duration::from_secs(120))
            .await
            .unwrap();
        let tenant = TenantLimits {
            // Slow enough that the rate key outlives the test: it shows the script ran.
            rate: Some(Gcra::new(0.01, 1)),
            max_share: 1.0,
        };
        // Waits as long as the pause lasts.
        let patient = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut other = redis::Client::open(server.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .unwrap();
        let leases = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("ZCARD")
                    .arg(lease_key("slow"))
                    .query_async::<u64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        // A first decision loads the script (a NOSCRIPT retry would not be sent once the
        // gateway stops waiting).
        let deadline = Instant::now() + Duration::from_secs(20);
        while limits.admit("warm", &tenant, 10, 0).await.is_none() {
            assert!(Instant::now() < deadline, "Redis never answered in time");
        }
        // Redis holds every command for a while: the script runs after the decision timeout.
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1000)
            .arg("ALL")
            .query_async::<()>(&mut other)
            .await
            .unwrap();
        assert!(limits.admit("slow", &tenant, 10, 0).await.is_none());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ran: bool = redis::cmd("EXISTS")
                .arg(rate_key("slow"))
                .query_async(&mut other)
                .await
                .unwrap();
            if ran && leases(&mut other).await == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the late script's lease is still held: {} (script ran: {ran})",
                leases(&mut other).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            limits.is_down(),
            "the late answer fell back to local limits"
        );
    }
}

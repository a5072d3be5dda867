//! What the autoscaler remembers across a restart — the engine's windows and the pods it
//! runs — and where: a file in the data directory, or a Redis key when one is configured (so
//! the memory outlives the machine's disk, and any autoscaler pointed at that Redis resumes).

use crate::engine::EngineState;
use crate::local::PodRecord;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The engine's memory and the pods, so a restart continues both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    pub policy: String,
    pub engine: EngineState,
    pub pods: Vec<PodRecord>,
}

/// How long one Redis command may take, connecting included.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where [`Persisted`] lives.
#[derive(Debug, Clone)]
pub enum StateStore {
    File(PathBuf),
    Redis {
        /// Boxed: with TLS settings a client is large.
        client: Box<redis::Client>,
        key: String,
    },
    /// A ConfigMap next to the Deployment (the Kubernetes actuator). Boxed: its client is
    /// large, and the other variants are not.
    #[cfg(feature = "kubernetes")]
    ConfigMap(Box<tenantscale_k8s::cluster::ConfigMapState>),
}

impl StateStore {
    /// The Redis at `url` (`redis://HOST:PORT[/DB]`, or `rediss://` for TLS trusting the PEM
    /// CAs in `ca` or the system's roots), under `key`.
    pub fn redis(url: &str, ca: Option<&Path>, key: &str) -> Result<Self, String> {
        let client = tenantscale_tls::redis_client(url, ca)
            .map_err(|e| format!("--redis {url:?} (--redis-ca): {e}"))?;
        if key.is_empty() {
            return Err("--state-key: empty".into());
        }
        Ok(Self::Redis {
            client: Box::new(client),
            key: key.to_string(),
        })
    }

    /// For logs: `file /path` or `redis key K`.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("file {}", path.display()),
            Self::Redis { key, .. } => format!("redis key {key}"),
            #[cfg(feature = "kubernetes")]
            Self::ConfigMap(_) => "a ConfigMap".to_string(),
        }
    }

    /// The last state written; `None` on a fresh start.
    pub async fn load(&self) -> Result<Option<Persisted>, String> {
        let (text, source) = match self {
            #[cfg(feature = "kubernetes")]
            Self::ConfigMap(map) => match map.load().await.map_err(|e| e.to_string())? {
                Some(text) => (text, "the state ConfigMap".to_string()),
                None => return Ok(None),
            },
            Self::File(_) | Self::Redis { .. } => {
                let store = self.clone();
                match tokio::task::spawn_blocking(move || store.read_blocking())
                    .await
                    .map_err(|e| e.to_string())??
                {
                    Some(found) => found,
                    None => return Ok(None),
                }
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{source}: not a tenantscale autoscaler state ({e})"))
    }

    /// The stored text and where it came from (file and Redis stores).
    fn read_blocking(&self) -> Result<Option<(String, String)>, String> {
        match self {
            Self::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some((text, path.display().to_string()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
            Self::Redis { client, key } => {
                let text: Option<String> = redis_query(client, redis::cmd("GET").arg(key))
                    .map_err(|e| format!("reading the state from Redis key {key}: {e}"))?;
                Ok(text.map(|t| (t, format!("Redis key {key}"))))
            }
            #[cfg(feature = "kubernetes")]
            Self::ConfigMap(_) => unreachable!("read asynchronously in load"),
        }
    }

    /// Replaces the stored state (a file atomically: a temporary file renamed over it).
    pub async fn save(&self, state: &Persisted) -> Result<(), String> {
        let json = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
        #[cfg(feature = "kubernetes")]
        if let Self::ConfigMap(map) = self {
            return map.save(&json).await.map_err(|e| e.to_string());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || match &store {
            Self::File(path) => {
                write_atomically(path, &json).map_err(|e| format!("{}: {e}", path.display()))
            }
            Self::Redis { client, key } => {
                redis_query::<()>(client, redis::cmd("SET").arg(key).arg(json))
                    .map_err(|e| format!("Redis key {key}: {e}"))
            }
            #[cfg(feature = "kubernetes")]
            Self::ConfigMap(_) => unreachable!("saved above"),
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Replaces the file so that a crash or power cut at any moment leaves the old state or the
/// new one, whole: the text reaches the disk in a temporary file before the rename makes it
/// the state, and the directory is flushed so the rename itself is kept.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn redis_query<T: redis::FromRedisValue>(
    client: &redis::Client,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    let mut conn = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
    conn.set_read_timeout(Some(REDIS_TIMEOUT))?;
    conn.set_write_timeout(Some(REDIS_TIMEOUT))?;
    cmd.query(&mut conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_store_round_trips_and_a_missing_file_is_a_fresh_start() {
        let path =
            std::env::temp_dir().join(format!("tenantscale-store-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = StateStore::File(path.clone());
        assert_eq!(store.load().await, Ok(None));
        let state = Persisted {
            policy: "hpa".into(),
            engine: EngineState::default(),
            pods: vec![PodRecord {
                addr: "127.0.0.1:4000".into(),
                pid: 42,
                started: 1.5,
            }],
        };
        store.save(&state).await.unwrap();
        assert_eq!(store.load().await, Ok(Some(state)));
        std::fs::write(&path, "{").unwrap();
        let e = store.load().await.unwrap_err();
        assert!(e.contains("not a tenantscale autoscaler state"), "{e}");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_save_leaves_the_whole_state_and_no_temporary_file_and_a_half_written_one_is_ignored()
    {
        let dir = std::env::temp_dir().join(format!("tenantscale-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("autoscaler-state.json");
        let store = StateStore::File(path.clone());
        let state = |pods: u32| Persisted {
            policy: "tenant-aware".into(),
            engine: EngineState::default(),
            pods: (0..pods)
                .map(|i| PodRecord {
                    addr: format!("127.0.0.1:{}", 4000 + i),
                    pid: i,
                    started: f64::from(i),
                })
                .collect(),
        };
        let old = state(3);
        store.save(&old).await.unwrap();
        // A crash while the next state was being written leaves a partial temporary file:
        // the state is still the old one.
        std::fs::write(dir.join("autoscaler-state.tmp"), "{\"policy\": \"tena").unwrap();
        assert_eq!(store.load().await, Ok(Some(old)));
        // A large state (about 1 MB) arrives whole, and the temporary file is gone.
        let new = state(10_000);
        store.save(&new).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            serde_json::to_string_pretty(&new).unwrap()
        );
        assert_eq!(store.load().await, Ok(Some(new)));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["autoscaler-state.json"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_redis_url_names_the_flag() {
        let e = StateStore::redis("http://nope", None, "k").unwrap_err();
        assert!(e.starts_with("--redis \"http://nope\""), "{e}");
    }
}

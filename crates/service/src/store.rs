//! Tenant documents, chunks and their vectors, and each tenant's served-query volume, in
//! SQLite (embedded, one file, WAL) or Postgres (shared by many pods). Every statement is scoped
//! by tenant id; writes are transactions, so an error leaves nothing half-written, and a commit
//! returns only once the write is durable (SQLite `synchronous=FULL`, Postgres's default).

use crate::embedder::{Embedder, EmbedderError};
use std::path::Path;
use std::sync::Mutex;
use tenantscale_core::retrieval::{DIMENSIONS, chunk};

/// A stored chunk of a tenant's document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub document_id: String,
    pub chunk_id: i64,
    pub text: String,
}

/// A document to ingest.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDocument {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("store: {0}")]
    Tls(#[from] tenantscale_tls::TlsError),
    #[error(transparent)]
    Embedder(#[from] EmbedderError),
    #[error(
        "the store's vectors were written by the {stored} embedder, not {requested}: use \
         --embedder accordingly, or a new store"
    )]
    EmbedderMismatch { stored: String, requested: String },
}

/// The store: one connection behind a lock (the pod calls it from blocking threads only).
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres {
        url: String,
        client: Box<Mutex<postgres::Client>>,
    },
}

/// Characters per chunk the chunker aims for.
const CHUNK_TARGET: usize = 800;

/// Schema version 1, with the dialect's names for a 64-bit integer and a byte string: both
/// stores keep the same tables and columns.
fn schema(integer: &str, bytes: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS documents (
             tenant_id TEXT NOT NULL, id TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,
             PRIMARY KEY (tenant_id, id));
         CREATE TABLE IF NOT EXISTS chunks (
             tenant_id TEXT NOT NULL, document_id TEXT NOT NULL, chunk_id {integer} NOT NULL,
             text TEXT NOT NULL, vector {bytes} NOT NULL,
             PRIMARY KEY (tenant_id, document_id, chunk_id));
         CREATE TABLE IF NOT EXISTS tenant_volume (
             tenant_id TEXT NOT NULL, hour {integer} NOT NULL, queries {integer} NOT NULL,
             PRIMARY KEY (tenant_id, hour));
         CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
}

/// Statements in SQLite's dialect; `pg` turns `?N` into Postgres's `$N`.
mod sql {
    pub const DELETE_CHUNKS: &str = "DELETE FROM chunks WHERE tenant_id = ?1 AND document_id = ?2";
    pub const DELETE_DOCUMENT: &str = "DELETE FROM documents WHERE tenant_id = ?1 AND id = ?2";
    pub const UPSERT_DOCUMENT: &str = "INSERT INTO documents (tenant_id, id, text, metadata)
        VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id, id)
        DO UPDATE SET text = excluded.text, metadata = excluded.metadata";
    pub const INSERT_CHUNK: &str =
        "INSERT INTO chunks (tenant_id, document_id, chunk_id, text, vector)
        VALUES (?1, ?2, ?3, ?4, ?5)";
    pub const LOAD: &str = "SELECT document_id, chunk_id, text, vector FROM chunks
        WHERE tenant_id = ?1 ORDER BY document_id, chunk_id";
    pub const ADD_VOLUME: &str = "INSERT INTO tenant_volume (tenant_id, hour, queries)
        VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id, hour)
        DO UPDATE SET queries = tenant_volume.queries + excluded.queries";
    pub const TOP_TENANTS: &str = "SELECT tenant_id FROM tenant_volume WHERE hour >= ?1
        GROUP BY tenant_id ORDER BY SUM(queries) DESC, tenant_id LIMIT ?2";

    pub const EMBEDDER: &str = "SELECT value FROM settings WHERE key = 'embedder'";
    pub const ANY_CHUNK: &str = "SELECT EXISTS (SELECT 1 FROM chunks)";
    pub const CLAIM_EMBEDDER: &str = "INSERT INTO settings (key, value) VALUES ('embedder', ?1)
        ON CONFLICT (key) DO NOTHING";

    pub fn pg(statement: &str) -> String {
        statement.replace('?', "$")
    }
}

/// One connection to the Postgres at `url`, in TLS when its `sslmode` asks.
fn postgres_client(url: &str) -> Result<postgres::Client, StoreError> {
    use tenantscale_tls::postgres::{ConnectError, connect};
    connect(url).map_err(|e| match e {
        ConnectError::Tls(e) => e.into(),
        ConnectError::Postgres(e) => e.into(),
    })
}

/// A chunk ready to write: its text and its vector as little-endian f32 bytes.
type EmbeddedChunk = (String, Vec<u8>);

fn embedded_chunks(text: &str, embedder: &Embedder) -> Result<Vec<EmbeddedChunk>, EmbedderError> {
    let chunks = chunk(text, CHUNK_TARGET);
    let texts: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let vectors = embedder.embed_all(&texts)?;
    Ok(chunks
        .into_iter()
        .zip(vectors)
        .map(|(c, v)| (c, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect())
}

/// Appends a stored vector; false (skipped) if it has the wrong width.
fn push_vector(vectors: &mut Vec<f32>, blob: &[u8]) -> bool {
    if blob.len() != DIMENSIONS * 4 {
        return false;
    }
    vectors.extend(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    true
}

/// SQLite write transactions take the write lock at BEGIN: one that read first and then
/// upgraded could not wait for another writer (SQLite fails such an upgrade at once).
const IMMEDIATE: rusqlite::TransactionBehavior = rusqlite::TransactionBehavior::Immediate;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::sqlite(rusqlite::Connection::open(path)?)
    }

    /// A private in-memory SQLite database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::sqlite(rusqlite::Connection::open_in_memory()?)
    }

    fn sqlite(db: rusqlite::Connection) -> Result<Self, StoreError> {
        // Pods started together share one file: a writer waits for another's lock instead
        // of failing at once with "database is locked".
        const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
        db.busy_timeout(WAIT)?;
        // Switching a new file to WAL while another process does the same can fail with
        // SQLITE_BUSY without consulting the busy handler: retry that step for as long.
        let deadline = std::time::Instant::now() + WAIT;
        let setup = || -> rusqlite::Result<()> {
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.execute_batch(&schema("INTEGER", "BLOB"))
        };
        while let Err(e) = setup() {
            let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
            if !busy || std::time::Instant::now() >= deadline {
                return Err(e.into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Self {
            backend: Backend::Sqlite(Mutex::new(db)),
        })
    }

    /// Connects to Postgres at `url` (`postgres://user[:password]@host[:port]/db[?sslmode=…]`,
    /// TLS as [`tenantscale_tls::postgres`] reads `sslmode`) and applies migrations; pods
    /// starting together serialize on an advisory lock.
    pub fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        let mut client = postgres_client(url)?;
        let mut tx = client.transaction()?;
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide in Postgres's catalog.
        tx.execute("SELECT pg_advisory_xact_lock(7400311)", &[])?;
        tx.batch_execute(&schema("BIGINT", "BYTEA"))?;
        tx.commit()?;
        Ok(Self {
            backend: Backend::Postgres {
                url: url.to_string(),
                client: Box::new(Mutex::new(client)),
            },
        })
    }

    /// Runs `f` on the Postgres client, reconnecting first if the connection was lost.
    fn with_postgres<T>(
        url: &str,
        client: &Mutex<postgres::Client>,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut client = client.lock().expect("store lock");
        if client.is_closed() {
            *client = postgres_client(url)?;
        }
        Ok(f(&mut client)?)
    }

    /// Records `embedder` as the one whose vectors this store holds, or checks that it is:
    /// vectors of different embedders cannot be compared. A store with chunks but no record
    /// predates the record, when the hashed embedder was the only one.
    pub fn claim_embedder(&self, embedder: &str) -> Result<(), StoreError> {
        let before_the_record = Embedder::Hashed.name();
        let stored: String = match &self.backend {
            Backend::Sqlite(db) => {
                let mut db = db.lock().expect("store lock");
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                let any: bool = tx.query_row(sql::ANY_CHUNK, [], |r| r.get(0))?;
                let claim = if any { before_the_record } else { embedder };
                tx.execute(sql::CLAIM_EMBEDDER, [claim])?;
                let stored = tx.query_row(sql::EMBEDDER, [], |r| r.get(0))?;
                tx.commit()?;
                stored
            }
            Backend::Postgres { url, client } => Self::with_postgres(url, client, |c| {
                let mut tx = c.transaction()?;
                let any: bool = tx.query_one(sql::ANY_CHUNK, &[])?.get(0);
                let claim = if any { before_the_record } else { embedder };
                tx.execute(&sql::pg(sql::CLAIM_EMBEDDER), &[&claim])?;
                let stored = tx.query_one(sql::EMBEDDER, &[])?.get(0);
                tx.commit()?;
                Ok(stored)
            })?,
        };
        if stored == embedder {
            Ok(())
        } else {
            Err(StoreError::EmbedderMismatch {
                stored,
                requested: embedder.to_string(),
            })
        }
    }

    /// Stores `docs` for `tenant`, replacing documents with the same id; returns the number of
    /// chunks written. All or nothing.
    pub fn ingest(
        &self,
        tenant: &str,
        docs: &[NewDocument],
        embedder: &Embedder,
    ) -> Result<usize, StoreError> {
        // Embed before taking the lock: it is the slow part.
        let prepared: Vec<(&NewDocument, String, Vec<EmbeddedChunk>)> = docs
            .iter()
            .map(|d| {
                Ok((
                    d,
                    d.metadata.to_string(),
                    embedded_chunks(&d.text, embedder)?,
                ))
            })
            .collect::<Result<_, EmbedderError>>()?;
        let written = prepared.iter().map(|(_, _, c)| c.len()).sum();
        match &self.backend {
            Backend::Sqlite(db) => {
                let mut db = db.lock().expect("store lock");
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                for (d, metadata, chunks) in &prepared {
                    tx.execute(sql::DELETE_CHUNKS, (tenant, &d.id))?;
                    tx.execute(sql::UPSERT_DOCUMENT, (tenant, &d.id, &d.text, metadata))?;
                    for (i, (text, vector)) in chunks.iter().enumerate() {
                        tx.execute(sql::INSERT_CHUNK, (tenant, &d.id, i as i64, text, vector))?;
                    }
                }
                tx.commit()?;
            }
            Backend::Postgres { url, client } => Self::with_postgres(url, client, |c| {
                let mut tx = c.transaction()?;
                let delete = tx.prepare(&sql::pg(sql::DELETE_CHUNKS))?;
                let upsert = tx.prepare(&sql::pg(sql::UPSERT_DOCUMENT))?;
                let insert = tx.prepare(&sql::pg(sql::INSERT_CHUNK))?;
                for (d, metadata, chunks) in &prepared {
                    tx.execute(&delete, &[&tenant, &d.id])?;
                    tx.execute(&upsert, &[&tenant, &d.id, &d.text, metadata])?;
                    for (i, (text, vector)) in chunks.iter().enumerate() {
                        tx.execute(&insert, &[&tenant, &d.id, &(i as i64), text, vector])?;
                    }
                }
                tx.commit()
            })?,
        }
        Ok(written)
    }

    /// Deletes `tenant`'s document `id` and its chunks; false if there was none.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let mut db = db.lock().expect("store lock");
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                tx.execute(sql::DELETE_CHUNKS, (tenant, id))?;
                let n = tx.execute(sql::DELETE_DOCUMENT, (tenant, id))?;
                tx.commit()?;
                Ok(n > 0)
            }
            Backend::Postgres { url, client } => Self::with_postgres(url, client, |c| {
                let mut tx = c.transaction()?;
                tx.execute(&sql::pg(sql::DELETE_CHUNKS), &[&tenant, &id])?;
                let n = tx.execute(&sql::pg(sql::DELETE_DOCUMENT), &[&tenant, &id])?;
                tx.commit()?;
                Ok(n > 0)
            }),
        }
    }

    /// All of `tenant`'s chunks with their vectors (row-major, `DIMENSIONS` wide).
    pub fn load(&self, tenant: &str) -> Result<(Vec<Chunk>, Vec<f32>), StoreError> {
        let mut chunks = Vec::new();
        let mut vectors = Vec::new();
        match &self.backend {
            Backend::Sqlite(db) => {
                let db = db.lock().expect("store lock");
                let mut stmt = db.prepare_cached(sql::LOAD)?;
                let mut rows = stmt.query([tenant])?;
                while let Some(row) = rows.next()? {
                    let blob = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
                    if push_vector(&mut vectors, blob) {
                        chunks.push(Chunk {
                            document_id: row.get(0)?,
                            chunk_id: row.get(1)?,
                            text: row.get(2)?,
                        });
                    }
                }
            }
            Backend::Postgres { url, client } => {
                let rows =
                    Self::with_postgres(url, client, |c| c.query(&sql::pg(sql::LOAD), &[&tenant]))?;
                for row in rows {
                    if push_vector(&mut vectors, row.get::<_, &[u8]>(3)) {
                        chunks.push(Chunk {
                            document_id: row.get(0),
                            chunk_id: row.get(1),
                            text: row.get(2),
                        });
                    }
                }
            }
        }
        Ok((chunks, vectors))
    }

    /// Adds served query counts to each tenant's volume in the hour `hour` (Unix hours).
    pub fn record_volume(&self, hour: i64, counts: &[(&str, u64)]) -> Result<(), StoreError> {
        let counts: Vec<(&str, i64)> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (*t, i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        match &self.backend {
            Backend::Sqlite(db) => {
                let mut db = db.lock().expect("store lock");
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                for (tenant, n) in &counts {
                    tx.execute(sql::ADD_VOLUME, (tenant, hour, n))?;
                }
                tx.commit()?;
                Ok(())
            }
            Backend::Postgres { url, client } => Self::with_postgres(url, client, |c| {
                let mut tx = c.transaction()?;
                for (tenant, n) in &counts {
                    tx.execute(&sql::pg(sql::ADD_VOLUME), &[tenant, &hour, n])?;
                }
                tx.commit()
            }),
        }
    }

    /// The `n` tenants with the most queries since hour `since` (Unix hours), busiest first.
    pub fn top_tenants(&self, since: i64, n: usize) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        match &self.backend {
            Backend::Sqlite(db) => {
                let db = db.lock().expect("store lock");
                let mut stmt = db.prepare(sql::TOP_TENANTS)?;
                let ids = stmt
                    .query_map((since, limit), |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(ids)
            }
            Backend::Postgres { url, client } => {
                let rows = Self::with_postgres(url, client, |c| {
                    c.query(&sql::pg(sql::TOP_TENANTS), &[&since, &limit])
                })?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }
        }
    }
}

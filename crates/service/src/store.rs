//! Tenant documents, chunks and their vectors, and each tenant's served-query volume, in
//! SQLite (embedded, one file, WAL) or Postgres (shared by many pods). Every statement is scoped
//! by tenant id; writes are transactions, so an error leaves nothing half-written, and a commit
//! returns only once the write is durable (SQLite `synchronous=FULL`, Postgres's default).
//!
//! Each tenant's usage (documents, and the bytes its [`StorageQuota`] counts) is kept in
//! `tenant_usage`, updated by every write under a per-tenant lock (SQLite: its one writer;
//! Postgres: an advisory transaction lock on the tenant), so pods writing for one tenant at
//! once never take it past its quota. Reads use their own connections: a write never holds
//! another tenant's index load.
//!
//! Every write also advances the tenant's generation (`tenant_generation`) in its transaction:
//! a pod holding an index of generation `g` knows it has every write whose generation is at
//! most `g`, and one read of the current generation ([`Store::generation`]) tells it whether a
//! write committed since, through any pod.

use crate::embedder::{Embedder, EmbedderError};
use crate::lock;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use tenantscale_core::catalog::StorageQuota;
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
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// A committed write: the tenant's usage and generation after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub usage: Usage,
    pub generation: u64,
}

/// A tenant's chunks, their vectors (row-major, `DIMENSIONS` wide) and the generation they
/// are, read in one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub chunks: Vec<Chunk>,
    pub vectors: Vec<f32>,
    pub generation: u64,
}

/// What a tenant keeps in the store: documents, and bytes as [`StorageQuota`] counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub documents: u64,
    pub bytes: u64,
}

/// A write refused because it would take the tenant over its storage quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant {tenant}'s storage quota: this request would bring its {what} to {after} (now \
     {before}), over its quota of {limit}; nothing was stored"
)]
pub struct QuotaExceeded {
    pub tenant: String,
    /// `documents` or `bytes`.
    pub what: &'static str,
    pub before: u64,
    pub after: u64,
    pub limit: u64,
}

/// Checks a write that takes `tenant` from `before` to `after`: a measure over its limit is
/// refused only if the write grows it (a tenant over a lowered quota may still shrink).
fn within_quota(
    tenant: &str,
    before: Usage,
    after: Usage,
    quota: &StorageQuota,
) -> Result<(), QuotaExceeded> {
    for (what, before, after, limit) in [
        (
            "documents",
            before.documents,
            after.documents,
            quota.documents,
        ),
        ("bytes", before.bytes, after.bytes, quota.bytes),
    ] {
        if after > limit && after > before {
            return Err(QuotaExceeded {
                tenant: tenant.to_string(),
                what,
                before,
                after,
                limit,
            });
        }
    }
    Ok(())
}

/// The store. SQLite: one writer, and connections of their own for reads (WAL lets them read
/// while it writes); Postgres: a connection per statement at a time, from a pool.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite {
        writer: Mutex<rusqlite::Connection>,
        /// None for a private in-memory database, which only its one connection can see.
        readers: Option<Connections<rusqlite::Connection>>,
    },
    Postgres(Connections<postgres::Client>),
}

/// Idle connections kept for reuse (more are opened when more statements run at once).
const IDLE_CONNECTIONS: usize = 8;

/// Connections for statements that run side by side: each caller takes one of its own
/// (opening one when none is idle, or waiting for one when `max` are open) and gives it back,
/// so one tenant's long statement never holds another's, and a pod never opens more than
/// `max` (its slots and a few, see [`Store::limit_connections`]): Postgres's
/// `max_connections` is shared by every pod.
struct Connections<C> {
    pool: Mutex<Pool<C>>,
    freed: Condvar,
    open: Box<dyn Fn() -> Result<C, StoreError> + Send + Sync>,
}

struct Pool<C> {
    idle: Vec<C>,
    /// Connections open, idle or in use.
    open: usize,
    max: usize,
}

/// A connection in use (None while it opens); dropping it gives it back, even on a panic.
struct Lease<'a, C: Usable> {
    connections: &'a Connections<C>,
    c: Option<C>,
}

impl<C: Usable> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        let mut p = lock(&self.connections.pool);
        match self.c.take().filter(Usable::usable) {
            Some(c) if p.idle.len() < IDLE_CONNECTIONS => p.idle.push(c),
            _ => p.open -= 1,
        }
        drop(p);
        self.connections.freed.notify_one();
    }
}

/// A connection that can tell it was lost.
trait Usable {
    fn usable(&self) -> bool;
}

impl Usable for rusqlite::Connection {
    fn usable(&self) -> bool {
        true
    }
}

impl Usable for postgres::Client {
    fn usable(&self) -> bool {
        !self.is_closed()
    }
}

impl<C: Usable> Connections<C> {
    fn new(open: impl Fn() -> Result<C, StoreError> + Send + Sync + 'static) -> Self {
        Self {
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
                max: usize::MAX,
            }),
            freed: Condvar::new(),
            open: Box::new(open),
        }
    }

    /// Runs `f` on a connection of its own.
    fn with<T>(&self, f: impl FnOnce(&mut C) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut lease = Lease {
            connections: self,
            c: None,
        };
        let mut p = lock(&self.pool);
        loop {
            if let Some(c) = p.idle.pop() {
                if c.usable() {
                    lease.c = Some(c);
                    break;
                }
                p.open -= 1;
            } else if p.open < p.max {
                p.open += 1;
                break;
            } else {
                p = self
                    .freed
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        drop(p);
        if lease.c.is_none() {
            lease.c = Some((self.open)()?);
        }
        f(lease
            .c
            .as_mut()
            .expect("a connection was just taken or opened"))
    }
}

/// Characters per chunk the chunker aims for.
const CHUNK_TARGET: usize = 800;

/// Schema version 1 (and `tenant_usage` and `tenant_generation`, which a store without them
/// gets on open; a tenant without a usage row has its usage counted at its first write, one
/// without a generation row is at generation 0), with the dialect's names for a 64-bit integer
/// and a byte string: both stores keep the same tables and columns.
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
         CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS tenant_usage (
             tenant_id TEXT PRIMARY KEY, documents {integer} NOT NULL, bytes {integer} NOT NULL);
         CREATE TABLE IF NOT EXISTS tenant_generation (
             tenant_id TEXT PRIMARY KEY, generation {integer} NOT NULL);"
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

    pub const USAGE: &str = "SELECT documents, bytes FROM tenant_usage WHERE tenant_id = ?1";
    pub const ALL_USAGE: &str = "SELECT tenant_id, documents, bytes FROM tenant_usage";
    pub const PUT_USAGE: &str = "INSERT INTO tenant_usage (tenant_id, documents, bytes)
        VALUES (?1, ?2, ?3) ON CONFLICT (tenant_id)
        DO UPDATE SET documents = excluded.documents, bytes = excluded.bytes";
    pub const GENERATION: &str = "SELECT generation FROM tenant_generation WHERE tenant_id = ?1";
    pub const ADVANCE_GENERATION: &str = "INSERT INTO tenant_generation (tenant_id, generation)
        VALUES (?1, 1) ON CONFLICT (tenant_id)
        DO UPDATE SET generation = tenant_generation.generation + 1 RETURNING generation";
    /// Serializes one tenant's writes across connections and pods until the transaction ends
    /// (Postgres; SQLite has one writer). Tenants whose ids hash alike share a lock: harmless.
    pub const LOCK_TENANT: &str = "SELECT pg_advisory_xact_lock(7400312, hashtext($1))";

    /// Bytes of a column's value (SQLite's `length` counts a text's characters).
    pub fn sqlite_octets(column: &str) -> String {
        format!("length(CAST({column} AS BLOB))")
    }
    pub fn pg_octets(column: &str) -> String {
        format!("octet_length({column})")
    }

    /// The bytes of tenant ?1's document ?2 as `StorageQuota` counts them (no row: no such
    /// document).
    pub fn document_bytes(octets: fn(&str) -> String) -> String {
        format!(
            "SELECT {} + {} + {} + COALESCE((SELECT SUM({} + {}) FROM chunks c
                 WHERE c.tenant_id = d.tenant_id AND c.document_id = d.id), 0)
             FROM documents d WHERE d.tenant_id = ?1 AND d.id = ?2",
            octets("d.id"),
            octets("d.text"),
            octets("d.metadata"),
            octets("c.text"),
            octets("c.vector"),
        )
    }

    /// Tenant ?1's documents and bytes, counted from its rows.
    pub fn count_usage(octets: fn(&str) -> String) -> String {
        format!(
            "SELECT (SELECT COUNT(*) FROM documents WHERE tenant_id = ?1),
                 COALESCE((SELECT SUM({} + {} + {}) FROM documents WHERE tenant_id = ?1), 0)
                 + COALESCE((SELECT SUM({} + {}) FROM chunks WHERE tenant_id = ?1), 0)",
            octets("id"),
            octets("text"),
            octets("metadata"),
            octets("text"),
            octets("vector"),
        )
    }

    pub fn pg(statement: &str) -> String {
        statement.replace('?', "$")
    }
}

/// A usage row's or count's two columns (never negative).
fn usage_of(documents: i64, bytes: i64) -> Usage {
    Usage {
        documents: documents.max(0) as u64,
        bytes: bytes.max(0) as u64,
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The documents of a request by id, each with the bytes it will take (the last of an id is
/// what stays).
fn new_sizes<'a>(prepared: &'a [Prepared<'a>]) -> BTreeMap<&'a str, u64> {
    prepared
        .iter()
        .map(|(d, metadata, chunks)| {
            let chunks: usize = chunks.iter().map(|(t, v)| t.len() + v.len()).sum();
            let bytes = d.id.len() + d.text.len() + metadata.len() + chunks;
            (d.id.as_str(), bytes as u64)
        })
        .collect()
}

/// `before` after documents are written over ones that took `stored` bytes (`None`: a new
/// id): (stored, new) per id.
fn usage_after(before: Usage, replaced: &[(Option<u64>, u64)]) -> Usage {
    replaced.iter().fold(before, |u, (stored, new)| Usage {
        documents: u.documents + u64::from(stored.is_none()),
        bytes: (u.bytes + new).saturating_sub(stored.unwrap_or(0)),
    })
}

/// A document ready to write: itself, its metadata as stored, its chunks.
type Prepared<'a> = (&'a NewDocument, String, Vec<EmbeddedChunk>);

/// One connection to the Postgres at `url`, in TLS when its `sslmode` asks.
fn postgres_client(url: &str) -> Result<postgres::Client, StoreError> {
    Ok(match tenantscale_tls::postgres::tls_for(url)? {
        (url, None) => postgres::Client::connect(&url, postgres::NoTls)?,
        (url, Some(tls)) => postgres::Client::connect(&url, tls)?,
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

/// How long a SQLite connection waits for another's lock.
const SQLITE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// SQLite write transactions take the write lock at BEGIN: one that read first and then
/// upgraded could not wait for another writer (SQLite fails such an upgrade at once).
const IMMEDIATE: rusqlite::TransactionBehavior = rusqlite::TransactionBehavior::Immediate;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = Self::sqlite_writer(rusqlite::Connection::open(path)?)?;
        let path = path.to_path_buf();
        let readers = Connections::new(move || {
            let db = rusqlite::Connection::open(&path)?;
            db.busy_timeout(SQLITE_WAIT)?;
            db.pragma_update(None, "query_only", true)?;
            Ok(db)
        });
        Ok(Self {
            backend: Backend::Sqlite {
                writer: Mutex::new(writer),
                readers: Some(readers),
            },
        })
    }

    /// A private in-memory SQLite database (tests): reads share the writer's connection.
    pub fn in_memory() -> Result<Self, StoreError> {
        let writer = Self::sqlite_writer(rusqlite::Connection::open_in_memory()?)?;
        Ok(Self {
            backend: Backend::Sqlite {
                writer: Mutex::new(writer),
                readers: None,
            },
        })
    }

    fn sqlite_writer(db: rusqlite::Connection) -> Result<rusqlite::Connection, StoreError> {
        // Pods started together share one file: a writer waits for another's lock instead
        // of failing at once with "database is locked".
        db.busy_timeout(SQLITE_WAIT)?;
        // Switching a new file to WAL while another process does the same can fail with
        // SQLITE_BUSY without consulting the busy handler: retry that step for as long.
        let deadline = std::time::Instant::now() + SQLITE_WAIT;
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
        Ok(db)
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
        let url = url.to_string();
        let clients = Connections::new(move || postgres_client(&url));
        let mut pool = lock(&clients.pool);
        pool.idle.push(client);
        pool.open = 1;
        drop(pool);
        Ok(Self {
            backend: Backend::Postgres(clients),
        })
    }

    /// Opens at most `max` connections at once (besides a SQLite store's writer): more
    /// statements at once wait for one to be free.
    pub fn limit_connections(&mut self, max: usize) {
        let max = max.max(1);
        match &self.backend {
            Backend::Sqlite {
                readers: Some(readers),
                ..
            } => lock(&readers.pool).max = max,
            Backend::Sqlite { readers: None, .. } => {}
            Backend::Postgres(clients) => lock(&clients.pool).max = max,
        }
    }

    /// Runs a read on a SQLite connection of its own (the writer's for an in-memory store).
    fn sqlite_read<T>(
        writer: &Mutex<rusqlite::Connection>,
        readers: &Option<Connections<rusqlite::Connection>>,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match readers {
            Some(readers) => readers.with(|db| f(db)),
            None => f(&lock(writer)),
        }
    }

    /// Records `embedder` as the one whose vectors this store holds, or checks that it is:
    /// vectors of different embedders cannot be compared. A store with chunks but no record
    /// predates the record, when the hashed embedder was the only one.
    pub fn claim_embedder(&self, embedder: &str) -> Result<(), StoreError> {
        let before_the_record = Embedder::Hashed.name();
        let stored: String = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut db = lock(writer);
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                let any: bool = tx.query_row(sql::ANY_CHUNK, [], |r| r.get(0))?;
                let claim = if any { before_the_record } else { embedder };
                tx.execute(sql::CLAIM_EMBEDDER, [claim])?;
                let stored = tx.query_row(sql::EMBEDDER, [], |r| r.get(0))?;
                tx.commit()?;
                stored
            }
            Backend::Postgres(clients) => clients.with(|c| {
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
    /// chunks written and the tenant's usage and generation after. All or nothing: a request
    /// that would take the tenant over `quota` stores nothing ([`StoreError::Quota`]).
    pub fn ingest(
        &self,
        tenant: &str,
        docs: &[NewDocument],
        embedder: &Embedder,
        quota: &StorageQuota,
    ) -> Result<(usize, Written), StoreError> {
        // Embed before taking the lock: it is the slow part.
        let prepared: Vec<Prepared> = docs
            .iter()
            .map(|d| {
                Ok((
                    d,
                    d.metadata.to_string(),
                    embedded_chunks(&d.text, embedder)?,
                ))
            })
            .collect::<Result<_, EmbedderError>>()?;
        let chunks = prepared.iter().map(|(_, _, c)| c.len()).sum();
        let sizes = new_sizes(&prepared);
        let written = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut db = lock(writer);
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                let before = Self::sqlite_usage(&tx, tenant)?;
                let stored = tx.prepare(&sql::document_bytes(sql::sqlite_octets))?;
                let replaced = Self::sqlite_replaced(stored, tenant, &sizes)?;
                let after = usage_after(before, &replaced);
                within_quota(tenant, before, after, quota)?;
                for (d, metadata, chunks) in &prepared {
                    tx.execute(sql::DELETE_CHUNKS, (tenant, &d.id))?;
                    tx.execute(sql::UPSERT_DOCUMENT, (tenant, &d.id, &d.text, metadata))?;
                    for (i, (text, vector)) in chunks.iter().enumerate() {
                        tx.execute(sql::INSERT_CHUNK, (tenant, &d.id, i as i64, text, vector))?;
                    }
                }
                let written = Self::sqlite_record(&tx, tenant, after)?;
                tx.commit()?;
                written
            }
            Backend::Postgres(clients) => clients.with(|c| {
                let mut tx = c.transaction()?;
                let before = Self::pg_usage(&mut tx, tenant)?;
                let stored = tx.prepare(&sql::pg(&sql::document_bytes(sql::pg_octets)))?;
                let mut replaced = Vec::with_capacity(sizes.len());
                for (id, new) in &sizes {
                    let row = tx.query_opt(&stored, &[&tenant, id])?;
                    replaced.push((row.map(|r| r.get::<_, i64>(0).max(0) as u64), *new));
                }
                let after = usage_after(before, &replaced);
                within_quota(tenant, before, after, quota)?;
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
                let written = Self::pg_record(&mut tx, tenant, after)?;
                tx.commit()?;
                Ok(written)
            })?,
        };
        Ok((chunks, written))
    }

    /// (stored bytes, new bytes) of each id a request writes.
    fn sqlite_replaced(
        mut stored: rusqlite::Statement,
        tenant: &str,
        sizes: &BTreeMap<&str, u64>,
    ) -> Result<Vec<(Option<u64>, u64)>, StoreError> {
        use rusqlite::OptionalExtension;
        let mut replaced = Vec::with_capacity(sizes.len());
        for (id, new) in sizes {
            let old: Option<i64> = stored.query_row((tenant, id), |r| r.get(0)).optional()?;
            replaced.push((old.map(|b| b.max(0) as u64), *new));
        }
        Ok(replaced)
    }

    /// The tenant's usage, inside a write transaction (which holds the tenant's writes).
    fn sqlite_usage(tx: &rusqlite::Connection, tenant: &str) -> Result<Usage, StoreError> {
        use rusqlite::OptionalExtension;
        let row = tx
            .query_row(sql::USAGE, [tenant], |r| Ok(usage_of(r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some(usage) => Ok(usage),
            None => Ok(
                tx.query_row(&sql::count_usage(sql::sqlite_octets), [tenant], |r| {
                    Ok(usage_of(r.get(0)?, r.get(1)?))
                })?,
            ),
        }
    }

    /// Puts the tenant's usage after a write and advances its generation, in the write's
    /// transaction.
    fn sqlite_record(
        tx: &rusqlite::Connection,
        tenant: &str,
        usage: Usage,
    ) -> Result<Written, StoreError> {
        tx.execute(
            sql::PUT_USAGE,
            (tenant, as_i64(usage.documents), as_i64(usage.bytes)),
        )?;
        let generation: i64 = tx.query_row(sql::ADVANCE_GENERATION, [tenant], |r| r.get(0))?;
        Ok(Written {
            usage,
            generation: generation.max(0) as u64,
        })
    }

    /// The tenant's usage, taking its write lock until the transaction ends.
    fn pg_usage(tx: &mut postgres::Transaction, tenant: &str) -> Result<Usage, StoreError> {
        tx.execute(sql::LOCK_TENANT, &[&tenant])?;
        let row = match tx.query_opt(&sql::pg(sql::USAGE), &[&tenant])? {
            Some(row) => row,
            None => tx.query_one(&sql::pg(&sql::count_usage(sql::pg_octets)), &[&tenant])?,
        };
        Ok(usage_of(row.get(0), row.get(1)))
    }

    /// As [`Store::sqlite_record`], under the tenant's lock [`Store::pg_usage`] took.
    fn pg_record(
        tx: &mut postgres::Transaction,
        tenant: &str,
        usage: Usage,
    ) -> Result<Written, StoreError> {
        tx.execute(
            &sql::pg(sql::PUT_USAGE),
            &[&tenant, &as_i64(usage.documents), &as_i64(usage.bytes)],
        )?;
        let row = tx.query_one(&sql::pg(sql::ADVANCE_GENERATION), &[&tenant])?;
        Ok(Written {
            usage,
            generation: row.get::<_, i64>(0).max(0) as u64,
        })
    }

    /// Deletes `tenant`'s document `id` and its chunks; the tenant's usage and generation
    /// after, or `None` if there was no such document (nothing written).
    pub fn delete(&self, tenant: &str, id: &str) -> Result<Option<Written>, StoreError> {
        let gone = |before: Usage, bytes: i64| Usage {
            documents: before.documents.saturating_sub(1),
            bytes: before.bytes.saturating_sub(bytes.max(0) as u64),
        };
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                use rusqlite::OptionalExtension;
                let mut db = lock(writer);
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                let before = Self::sqlite_usage(&tx, tenant)?;
                let stored: Option<i64> = tx
                    .query_row(
                        &sql::document_bytes(sql::sqlite_octets),
                        (tenant, id),
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(bytes) = stored else { return Ok(None) };
                tx.execute(sql::DELETE_CHUNKS, (tenant, id))?;
                tx.execute(sql::DELETE_DOCUMENT, (tenant, id))?;
                let written = Self::sqlite_record(&tx, tenant, gone(before, bytes))?;
                tx.commit()?;
                Ok(Some(written))
            }
            Backend::Postgres(clients) => clients.with(|c| {
                let mut tx = c.transaction()?;
                let before = Self::pg_usage(&mut tx, tenant)?;
                let stored = tx.query_opt(
                    &sql::pg(&sql::document_bytes(sql::pg_octets)),
                    &[&tenant, &id],
                )?;
                let Some(row) = stored else { return Ok(None) };
                tx.execute(&sql::pg(sql::DELETE_CHUNKS), &[&tenant, &id])?;
                tx.execute(&sql::pg(sql::DELETE_DOCUMENT), &[&tenant, &id])?;
                let written = Self::pg_record(&mut tx, tenant, gone(before, row.get(0)))?;
                tx.commit()?;
                Ok(Some(written))
            }),
        }
    }

    /// Every tenant's usage as last written (a tenant that has not written since its usage
    /// began to be kept is missing until its next write).
    pub fn usage(&self) -> Result<Vec<(String, Usage)>, StoreError> {
        match &self.backend {
            Backend::Sqlite { writer, readers } => Self::sqlite_read(writer, readers, |db| {
                let mut stmt = db.prepare_cached(sql::ALL_USAGE)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, usage_of(r.get(1)?, r.get(2)?))))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            }),
            Backend::Postgres(clients) => clients.with(|c| {
                let rows = c.query(sql::ALL_USAGE, &[])?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get(0), usage_of(r.get(1), r.get(2))))
                    .collect())
            }),
        }
    }

    /// All of `tenant`'s chunks with their vectors, and the generation they are: one
    /// snapshot, so a write committing meanwhile is either wholly in it or after its generation.
    pub fn load(&self, tenant: &str) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        match &self.backend {
            Backend::Sqlite { writer, readers } => Self::sqlite_read(writer, readers, |db| {
                // A WAL reader's snapshot lasts from its transaction's first read to its end.
                let tx = db.unchecked_transaction()?;
                loaded.generation = Self::sqlite_generation(&tx, tenant)?;
                let mut stmt = tx.prepare_cached(sql::LOAD)?;
                let mut rows = stmt.query([tenant])?;
                while let Some(row) = rows.next()? {
                    let blob = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
                    if push_vector(&mut loaded.vectors, blob) {
                        loaded.chunks.push(Chunk {
                            document_id: row.get(0)?,
                            chunk_id: row.get(1)?,
                            text: row.get(2)?,
                        });
                    }
                }
                Ok(())
            })?,
            Backend::Postgres(clients) => {
                let (generation, rows) = clients.with(|c| {
                    // Read committed would take a snapshot per statement.
                    let mut tx = c
                        .build_transaction()
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()?;
                    let generation = tx.query_opt(&sql::pg(sql::GENERATION), &[&tenant])?;
                    let rows = tx.query(&sql::pg(sql::LOAD), &[&tenant])?;
                    tx.commit()?;
                    Ok((generation.map_or(0, |r| r.get::<_, i64>(0)), rows))
                })?;
                loaded.generation = generation.max(0) as u64;
                for row in rows {
                    if push_vector(&mut loaded.vectors, row.get::<_, &[u8]>(3)) {
                        loaded.chunks.push(Chunk {
                            document_id: row.get(0),
                            chunk_id: row.get(1),
                            text: row.get(2),
                        });
                    }
                }
            }
        }
        Ok(loaded)
    }

    /// The tenant's current generation: every write acknowledged so far, through any pod, has
    /// one at most this. One indexed read on a reader connection (SQLite, never behind the
    /// writer) or one round trip on the pool (Postgres: an unnamed statement, not prepared
    /// apart).
    pub fn generation(&self, tenant: &str) -> Result<u64, StoreError> {
        let generation = match &self.backend {
            Backend::Sqlite { writer, readers } => {
                Self::sqlite_read(writer, readers, |db| Self::sqlite_generation(db, tenant))?
            }
            Backend::Postgres(clients) => clients.with(|c| {
                let text = postgres::types::Type::TEXT;
                let row = c.query_typed_opt(&sql::pg(sql::GENERATION), &[(&tenant, text)])?;
                Ok(row.map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
            })?,
        };
        Ok(generation)
    }

    fn sqlite_generation(db: &rusqlite::Connection, tenant: &str) -> Result<u64, StoreError> {
        use rusqlite::OptionalExtension;
        let mut stmt = db.prepare_cached(sql::GENERATION)?;
        let generation: Option<i64> = stmt.query_row([tenant], |r| r.get(0)).optional()?;
        Ok(generation.unwrap_or(0).max(0) as u64)
    }

    /// Adds served query counts to each tenant's volume in the hour `hour` (Unix hours).
    pub fn record_volume(&self, hour: i64, counts: &[(&str, u64)]) -> Result<(), StoreError> {
        let counts: Vec<(&str, i64)> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (*t, as_i64(*n)))
            .collect();
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut db = lock(writer);
                let tx = db.transaction_with_behavior(IMMEDIATE)?;
                for (tenant, n) in &counts {
                    tx.execute(sql::ADD_VOLUME, (tenant, hour, n))?;
                }
                tx.commit()?;
                Ok(())
            }
            Backend::Postgres(clients) => clients.with(|c| {
                let mut tx = c.transaction()?;
                for (tenant, n) in &counts {
                    tx.execute(&sql::pg(sql::ADD_VOLUME), &[tenant, &hour, n])?;
                }
                Ok(tx.commit()?)
            }),
        }
    }

    /// The `n` tenants with the most queries since hour `since` (Unix hours), busiest first.
    pub fn top_tenants(&self, since: i64, n: usize) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        match &self.backend {
            Backend::Sqlite { writer, readers } => Self::sqlite_read(writer, readers, |db| {
                let mut stmt = db.prepare(sql::TOP_TENANTS)?;
                let ids = stmt
                    .query_map((since, limit), |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(ids)
            }),
            Backend::Postgres(clients) => {
                let rows = clients
                    .with(|c| Ok(c.query(&sql::pg(sql::TOP_TENANTS), &[&since, &limit])?))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// More callers at once than the limit wait for a connection instead of opening more.
    #[test]
    fn connections_never_exceed_their_limit() {
        let opened = std::sync::Arc::new(AtomicUsize::new(0));
        let connections = Connections::new({
            let opened = std::sync::Arc::clone(&opened);
            move || {
                opened.fetch_add(1, Ordering::SeqCst);
                Ok(rusqlite::Connection::open_in_memory()?)
            }
        });
        lock(&connections.pool).max = 2;
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    connections
                        .with(|_| {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            // Stay until a third caller gets in, or long enough to be sure
                            // none will.
                            let deadline = Instant::now() + Duration::from_millis(300);
                            while inside.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
                                std::thread::yield_now();
                            }
                            inside.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(opened.load(Ordering::SeqCst), 2, "the two were reused");
    }
}

//! Tenant documents, chunks and their vectors in SQLite (one file, WAL). Every statement is
//! scoped by tenant id; writes are transactions, so an error leaves nothing half-written.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;
use tenantscale_core::retrieval::{DIMENSIONS, chunk, embed};

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
}

/// The store (SQLite).
pub struct Store {
    db: Mutex<Connection>,
}

/// Characters per chunk the chunker aims for.
const CHUNK_TARGET: usize = 800;

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(db: Connection) -> Result<Self, StoreError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS documents (
                 tenant_id TEXT NOT NULL, id TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,
                 PRIMARY KEY (tenant_id, id));
             CREATE TABLE IF NOT EXISTS chunks (
                 tenant_id TEXT NOT NULL, document_id TEXT NOT NULL, chunk_id INTEGER NOT NULL,
                 text TEXT NOT NULL, vector BLOB NOT NULL,
                 PRIMARY KEY (tenant_id, document_id, chunk_id));
             CREATE TABLE IF NOT EXISTS tenant_volume (
                 tenant_id TEXT NOT NULL, hour INTEGER NOT NULL, queries INTEGER NOT NULL,
                 PRIMARY KEY (tenant_id, hour));",
        )?;
        Ok(Self { db: Mutex::new(db) })
    }

    /// Chunks, embeds and stores `docs` for `tenant`, replacing documents with the same id.
    /// Returns the number of chunks written.
    pub fn ingest(&self, tenant: &str, docs: &[NewDocument]) -> Result<usize, StoreError> {
        let mut db = self.db.lock().expect("store lock");
        let tx = db.transaction()?;
        let mut written = 0;
        for d in docs {
            tx.execute(
                "DELETE FROM chunks WHERE tenant_id = ?1 AND document_id = ?2",
                params![tenant, d.id],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO documents (tenant_id, id, text, metadata) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, d.id, d.text, d.metadata.to_string()],
            )?;
            for (i, text) in chunk(&d.text, CHUNK_TARGET).iter().enumerate() {
                let vector: Vec<u8> = embed(text).iter().flat_map(|x| x.to_le_bytes()).collect();
                tx.execute(
                    "INSERT INTO chunks (tenant_id, document_id, chunk_id, text, vector) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![tenant, d.id, i as i64, text, vector],
                )?;
                written += 1;
            }
        }
        tx.commit()?;
        Ok(written)
    }

    /// Deletes one document of `tenant`; whether it existed.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut db = self.db.lock().expect("store lock");
        let tx = db.transaction()?;
        tx.execute(
            "DELETE FROM chunks WHERE tenant_id = ?1 AND document_id = ?2",
            params![tenant, id],
        )?;
        let n = tx.execute(
            "DELETE FROM documents WHERE tenant_id = ?1 AND id = ?2",
            params![tenant, id],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Adds served query counts to each tenant's volume in the hour `hour` (Unix hours).
    pub fn record_volume(&self, hour: i64, counts: &[(&str, u64)]) -> Result<(), StoreError> {
        let mut db = self.db.lock().expect("store lock");
        let tx = db.transaction()?;
        for (tenant, n) in counts.iter().filter(|(_, n)| *n > 0) {
            tx.execute(
                "INSERT INTO tenant_volume (tenant_id, hour, queries) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id, hour) DO UPDATE SET queries = queries + excluded.queries",
                params![tenant, hour, *n as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The `n` tenants with the most queries since hour `since` (Unix hours), busiest first.
    pub fn top_tenants(&self, since: i64, n: usize) -> Result<Vec<String>, StoreError> {
        let db = self.db.lock().expect("store lock");
        let mut stmt = db.prepare(
            "SELECT tenant_id FROM tenant_volume WHERE hour >= ?1
             GROUP BY tenant_id ORDER BY SUM(queries) DESC, tenant_id LIMIT ?2",
        )?;
        let ids = stmt
            .query_map(params![since, n as i64], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// All of `tenant`'s chunks with their vectors (row-major, `DIMENSIONS` wide).
    pub fn load(&self, tenant: &str) -> Result<(Vec<Chunk>, Vec<f32>), StoreError> {
        let db = self.db.lock().expect("store lock");
        let mut stmt = db.prepare(
            "SELECT document_id, chunk_id, text, vector FROM chunks WHERE tenant_id = ?1 ORDER BY document_id, chunk_id",
        )?;
        let mut chunks = Vec::new();
        let mut vectors = Vec::new();
        let mut rows = stmt.query(params![tenant])?;
        while let Some(row) = rows.next()? {
            let blob: Vec<u8> = row.get(3)?;
            if blob.len() != DIMENSIONS * 4 {
                continue;
            }
            vectors.extend(
                blob.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            chunks.push(Chunk {
                document_id: row.get(0)?,
                chunk_id: row.get(1)?,
                text: row.get(2)?,
            });
        }
        Ok((chunks, vectors))
    }

    /// Whether `tenant` has a document `id`.
    pub fn has_document(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let db = self.db.lock().expect("store lock");
        let found = db
            .query_row(
                "SELECT 1 FROM documents WHERE tenant_id = ?1 AND id = ?2",
                params![tenant, id],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }
}

//! The pod's shared state: fair admission to worker slots, the tenant index cache, the store,
//! metrics and the lifecycle (warming → ready → draining).

use crate::embedder::{Embedder, EmbedderError};
use crate::metrics::Metrics;
use crate::store::{Chunk, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tenantscale_core::cache::{Access, TenantCache};
use tenantscale_core::catalog::Catalog;
use tenantscale_core::fairness::scheduler::{FairScheduler, TenantSlot};
use tenantscale_core::hnsw::{Hnsw, HnswParams};
use tenantscale_core::retrieval::{DIMENSIONS, top_k};
use tokio::sync::oneshot;

/// Lifecycle states, as `/ready` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PodState {
    Warming = 0,
    Ready = 1,
    Draining = 2,
}

/// A loaded tenant index: chunks and their vectors, searched exactly, or through an HNSW graph
/// once the tenant is large enough for one (see [`PodConfig::hnsw_threshold`]).
#[derive(Debug)]
pub struct TenantIndex {
    pub chunks: Vec<Chunk>,
    pub vectors: Vec<f32>,
    /// Whether this tenant gets a graph (it is at or over the threshold).
    approximate: bool,
    /// Set when the background build finishes; until then searches are exact.
    graph: OnceLock<Hnsw>,
}

/// How graphs are built, and the search beam: recall@10 ≥ 0.95 in `hnsw`'s tests.
const GRAPH: HnswParams = HnswParams {
    m: 16,
    ef_construction: 100,
};
const SEARCH_EF: usize = 128;

impl TenantIndex {
    /// An index searched exactly until it has at least `hnsw_threshold` chunks.
    pub fn new(chunks: Vec<Chunk>, vectors: Vec<f32>, hnsw_threshold: usize) -> Self {
        Self {
            approximate: chunks.len() >= hnsw_threshold,
            chunks,
            vectors,
            graph: OnceLock::new(),
        }
    }

    /// Whether the index wants a graph it does not have yet.
    pub fn needs_graph(&self) -> bool {
        self.approximate && self.graph.get().is_none()
    }

    /// Builds the graph (seconds for a large tenant: run it off the request path).
    pub fn build_graph(&self) {
        if self.needs_graph() {
            let graph = Hnsw::build(&self.vectors, DIMENSIONS, GRAPH);
            let _ = self.graph.set(graph);
        }
    }

    /// The `k` chunks most similar to `query` (embedded by `embedder`, which wrote the
    /// vectors): (row, score), best first. An empty index answers at once, without embedding.
    pub fn search(
        &self,
        embedder: &Embedder,
        query: &str,
        k: usize,
    ) -> Result<Vec<(usize, f32)>, EmbedderError> {
        if self.vectors.is_empty() {
            return Ok(Vec::new());
        }
        let query = embedder.embed(query)?;
        Ok(match self.graph.get() {
            Some(graph) => graph.search(&self.vectors, &query, k, SEARCH_EF.max(2 * k)),
            None => top_k(&self.vectors, &query, k),
        })
    }

    /// Approximate bytes held in memory (with the graph it will have, so the cache budget
    /// does not grow behind its back).
    pub fn bytes(&self) -> u64 {
        let graph = if self.approximate {
            Hnsw::estimated_bytes(self.chunks.len(), GRAPH)
        } else {
            0
        };
        (self.vectors.len() * 4
            + graph
            + self
                .chunks
                .iter()
                .map(|c| c.text.len() + c.document_id.len() + 32)
                .sum::<usize>()) as u64
    }
}

/// A refusal to queue: the tenant's queue is full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueFull {
    /// Seconds until a place is likely to free up.
    pub retry_after: f64,
}

struct Slots {
    scheduler: FairScheduler<oneshot::Sender<()>>,
    /// Recent service seconds (EWMA), for Retry-After.
    mean_service: f64,
}

/// Settings of one pod.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub slots: u32,
    pub cache_bytes: u64,
    /// Tenants with at least this many chunks are searched through an HNSW graph, built in
    /// the background after their index loads; smaller ones by an exact scan.
    pub hnsw_threshold: usize,
    /// What embeds queries (the store's vectors were written by the same one).
    pub embedder: Arc<Embedder>,
}

/// Everything the HTTP handlers share.
pub struct Pod {
    pub catalog: Catalog,
    pub store: Store,
    pub embedder: Arc<Embedder>,
    pub metrics: Metrics,
    state: AtomicU8,
    slots: Mutex<Slots>,
    cache: Mutex<(TenantCache, HashMap<usize, Arc<TenantIndex>>)>,
    /// Queries served per tenant since the last volume flush to the store.
    served: Vec<AtomicU64>,
    /// End of the warm-up window, Unix milliseconds (0: no warm-up).
    warm_until_ms: AtomicU64,
    hnsw_threshold: usize,
    /// Held by the one graph build running.
    graph_builds: Arc<Mutex<()>>,
}

/// A held worker slot; dropping it frees the slot for the next queued request.
pub struct SlotGuard {
    pod: Arc<Pod>,
    tenant: usize,
    started: std::time::Instant,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let service = self.started.elapsed().as_secs_f64();
        let mut s = self.pod.slots.lock().expect("slots lock");
        s.mean_service = 0.9 * s.mean_service + 0.1 * service;
        s.scheduler.complete(self.tenant);
        Pod::grant(&mut s);
    }
}

impl Pod {
    /// A pod for `catalog`'s tenants.
    pub fn new(catalog: Catalog, store: Store, config: &PodConfig) -> Self {
        let slots = TenantSlot::for_catalog(&catalog);
        let metrics = Metrics::new(&catalog);
        let tenants = catalog.tenants.len();
        Self {
            catalog,
            store,
            embedder: Arc::clone(&config.embedder),
            metrics,
            state: AtomicU8::new(PodState::Ready as u8),
            slots: Mutex::new(Slots {
                scheduler: FairScheduler::new(config.slots, &slots),
                mean_service: 0.2,
            }),
            cache: Mutex::new((TenantCache::new(config.cache_bytes), HashMap::new())),
            served: (0..tenants).map(|_| AtomicU64::new(0)).collect(),
            warm_until_ms: AtomicU64::new(0),
            hnsw_threshold: config.hnsw_threshold,
            graph_builds: Arc::new(Mutex::new(())),
        }
    }

    pub fn state(&self) -> PodState {
        match self.state.load(Ordering::SeqCst) {
            0 => PodState::Warming,
            1 => PodState::Ready,
            _ => PodState::Draining,
        }
    }

    pub fn set_state(&self, state: PodState) {
        self.state.store(state as u8, Ordering::SeqCst);
        self.metrics.set_state(state);
    }

    /// The catalog index of tenant `id`.
    pub fn tenant(&self, id: &str) -> Option<usize> {
        self.catalog.tenants.iter().position(|t| t.id == id)
    }

    fn grant(s: &mut Slots) {
        while let Some((tenant, waiter)) = s.scheduler.start_next() {
            if waiter.send(()).is_err() {
                // The request gave up waiting: its slot goes to the next one.
                s.scheduler.complete(tenant);
            }
        }
    }

    /// Queues a request of `tenant` for a worker slot (weighted fair, bounded per tenant).
    pub fn enqueue(self: &Arc<Self>, tenant: usize) -> Result<oneshot::Receiver<()>, QueueFull> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.slots.lock().expect("slots lock");
        if s.scheduler.enqueue(tenant, tx).is_err() {
            return Err(QueueFull {
                retry_after: s.scheduler.retry_after(tenant, s.mean_service),
            });
        }
        Self::grant(&mut s);
        Ok(rx)
    }

    /// The slot a granted request holds.
    pub fn slot(self: &Arc<Self>, tenant: usize) -> SlotGuard {
        SlotGuard {
            pod: Arc::clone(self),
            tenant,
            started: std::time::Instant::now(),
        }
    }

    /// (queued, in service) per tenant, now.
    pub fn load(&self) -> Vec<(usize, u32)> {
        let s = self.slots.lock().expect("slots lock");
        (0..self.catalog.tenants.len())
            .map(|t| (s.scheduler.queued_for(t), s.scheduler.in_service_for(t)))
            .collect()
    }

    /// Worker slots of this pod.
    pub fn slots(&self) -> u32 {
        self.slots.lock().expect("slots lock").scheduler.slots()
    }

    /// Requests queued or in service, all tenants.
    pub fn outstanding(&self) -> usize {
        let s = self.slots.lock().expect("slots lock");
        s.scheduler.queued() + s.scheduler.busy() as usize
    }

    /// The tenant's index, from the cache or loaded from the store (a miss: that load is what
    /// routing for locality saves).
    pub fn index(&self, tenant: usize) -> Result<Arc<TenantIndex>, crate::store::StoreError> {
        if let Some(index) = self.cached_index(tenant) {
            return Ok(index);
        }
        self.metrics.cache(tenant, false);
        let started = std::time::Instant::now();
        let (chunks, vectors) = self.store.load(&self.catalog.tenants[tenant].id)?;
        let index = Arc::new(TenantIndex::new(chunks, vectors, self.hnsw_threshold));
        let mut c = self.cache.lock().expect("cache lock");
        let (lru, map) = &mut *c;
        let mut evicted = 0;
        if let Access::Miss { evicted: n } = lru.access(tenant, index.bytes()) {
            evicted = n;
            map.insert(tenant, Arc::clone(&index));
            map.retain(|t, _| lru.contains(*t));
        }
        self.metrics
            .cache_loaded(started.elapsed().as_secs_f64(), evicted);
        if index.needs_graph() {
            self.build_graph_in_background(tenant, &index);
        }
        Ok(index)
    }

    /// Builds a large tenant's graph on its own thread, one build at a time so builds never
    /// take more than one core from serving; searches stay exact until it is done.
    fn build_graph_in_background(&self, tenant: usize, index: &Arc<TenantIndex>) {
        let (index, builds) = (Arc::clone(index), Arc::clone(&self.graph_builds));
        let id = self.catalog.tenants[tenant].id.clone();
        let spawned = std::thread::Builder::new()
            .name("hnsw-build".into())
            .spawn(move || {
                let _one_at_a_time = builds.lock().expect("graph build lock");
                let started = std::time::Instant::now();
                index.build_graph();
                tracing::info!(
                    tenant = %id,
                    chunks = index.chunks.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "built the tenant's HNSW graph"
                );
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a graph build; searches stay exact");
        }
    }

    /// The tenant's index if it is cached (a hit needs no blocking thread).
    pub fn cached_index(&self, tenant: usize) -> Option<Arc<TenantIndex>> {
        let mut c = self.cache.lock().expect("cache lock");
        let (lru, map) = &mut *c;
        let ix = map.get(&tenant)?;
        lru.access(tenant, ix.bytes());
        self.metrics.cache(tenant, true);
        Some(Arc::clone(ix))
    }

    /// Counts a served query of `tenant` towards its recorded volume.
    pub fn count_served(&self, tenant: usize) {
        self.served[tenant].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the queries served since the last flush to the store's per-hour tenant volume,
    /// which the next pod's warm-up reads.
    pub fn flush_volume(&self) -> Result<(), crate::store::StoreError> {
        let counts: Vec<(&str, u64)> = self
            .catalog
            .tenants
            .iter()
            .zip(&self.served)
            .map(|(t, n)| (t.id.as_str(), n.swap(0, Ordering::Relaxed)))
            .collect();
        let result = self
            .store
            .record_volume((unix_ms() / 3_600_000) as i64, &counts);
        if result.is_err() {
            // Keep the counts for the next flush.
            for (t, (_, n)) in counts.iter().enumerate() {
                self.served[t].fetch_add(*n, Ordering::Relaxed);
            }
        }
        result
    }

    /// Loads the indexes of the `n` tenants with the most queries in the last hour or two
    /// into the cache; returns their ids.
    pub fn preload(&self, n: usize) -> Result<Vec<String>, crate::store::StoreError> {
        let since = (unix_ms() / 3_600_000) as i64 - 1;
        let mut loaded = Vec::new();
        for id in self.store.top_tenants(since, n)? {
            if let Some(t) = self.tenant(&id) {
                self.index(t)?;
                loaded.push(id);
            }
        }
        Ok(loaded)
    }

    /// Starts a warm-up window of `window`: the pod reports `warming` until it ends.
    pub fn begin_warm_up(&self, window: std::time::Duration) {
        let until = unix_ms() + window.as_millis() as u64;
        self.warm_until_ms.store(until, Ordering::SeqCst);
        self.set_state(PodState::Warming);
    }

    /// Ends the warm-up window: `warming` becomes `ready` (a draining pod stays draining).
    pub fn end_warm_up(&self) {
        let swapped = self.state.compare_exchange(
            PodState::Warming as u8,
            PodState::Ready as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if swapped.is_ok() {
            self.metrics.set_state(PodState::Ready);
        }
    }

    /// End of the warm-up window (Unix milliseconds), if the pod had one.
    pub fn warm_until_ms(&self) -> Option<u64> {
        Some(self.warm_until_ms.load(Ordering::SeqCst)).filter(|ms| *ms > 0)
    }

    /// Forgets a tenant's cached index (its documents changed).
    pub fn invalidate(&self, tenant: usize) {
        let mut c = self.cache.lock().expect("cache lock");
        c.0.remove(tenant);
        c.1.remove(&tenant);
    }
}

/// Wall-clock Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

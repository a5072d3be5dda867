//! The pod's shared state: fair admission to worker slots, the tenant index cache, the store,
//! metrics and the lifecycle (warming → ready → draining).
//!
//! Cached indexes are coherent across pods: each is kept with the store generation it was
//! loaded at, and every query reads the tenant's current generation first (one indexed read)
//! and loads the index again if the cached one is older. A write's 200 is sent after its
//! commit, so a query sent after it reads a generation at least the write's and never gets an
//! index without it, whichever pod wrote. A notification (Postgres LISTEN/NOTIFY) would not
//! remove that read: it arrives asynchronously, after the 200 may have reached the client.

use crate::embedder::{Embedder, EmbedderError};
use crate::lock;
use crate::metrics::Metrics;
use crate::store::{Chunk, Store, StoreError, Usage, Written};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;
use tenantscale_core::cache::{Access, TenantCache};
use tenantscale_core::catalog::{Catalog, StorageQuota};
use tenantscale_core::fairness::scheduler::{FairScheduler, TenantSlot};
use tenantscale_core::hnsw::{Hnsw, HnswParams};
use tenantscale_core::reload::Reloads;
use tenantscale_core::retrieval::{DIMENSIONS, top_k};
use tenantscale_core::roster::{Roster, RosterChange};
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

/// Why a request got no worker slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoSlot {
    Full(QueueFull),
    /// Waited the whole queue timeout.
    TimedOut,
}

/// Why a tenant's index could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index is larger than this pod's whole cache: loading it for every query would
    /// cost a full store read each time, so it is refused until the tenant's next write,
    /// through any pod (its generation changes).
    #[error(
        "tenant {tenant}'s index needs {bytes} bytes of memory, more than this pod's whole \
         index cache ({cache} bytes, --cache-bytes): delete documents, or serve it from pods \
         with a larger cache"
    )]
    TooLarge {
        tenant: String,
        bytes: u64,
        cache: u64,
    },
}

/// The cache of tenant indexes and what goes with it.
struct Cached {
    lru: TenantCache,
    indexes: HashMap<usize, Entry>,
    /// Per tenant, the newest store generation this pod knows of (its own writes' and the
    /// ones its queries read): an index loaded at an older one is not cached.
    newest: HashMap<usize, u64>,
    /// Tenants whose index did not fit the whole cache: its size and generation. Refused
    /// without loading again while the tenant's generation is still that one.
    too_large: HashMap<usize, (u64, u64)>,
    /// Tenants with a graph builder thread (running or waiting for its turn).
    building: HashSet<usize>,
}

/// A cached index and the store generation it was loaded at.
struct Entry {
    index: Arc<TenantIndex>,
    generation: u64,
}

/// An index read from the store, not yet cached.
struct Fresh {
    index: TenantIndex,
    generation: u64,
    started: Instant,
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

/// The pod's tenants by stable index (see [`Roster`]), and what it keeps for each. Replaced
/// whole at a catalog reload; a request keeps the snapshot it read.
pub struct Tenants {
    pub roster: Roster,
    /// One index load per tenant at a time: queries that miss together share it.
    loading: Vec<Arc<Mutex<()>>>,
    /// Queries served per tenant since the last volume flush to the store.
    served: Vec<Arc<AtomicU64>>,
}

impl Tenants {
    /// Grows the per-tenant vectors to the roster's tenants.
    fn new(
        roster: Roster,
        mut loading: Vec<Arc<Mutex<()>>>,
        mut served: Vec<Arc<AtomicU64>>,
    ) -> Self {
        loading.resize_with(roster.len(), Arc::default);
        served.resize_with(roster.len(), Arc::default);
        Self {
            roster,
            loading,
            served,
        }
    }
}

/// Everything the HTTP handlers share.
pub struct Pod {
    tenants: RwLock<Arc<Tenants>>,
    /// Each tenant's queue bound: `pool.queuePerTenant` at start (restart-only).
    queue_per_tenant: u32,
    /// The catalog reloads, for `/metrics` (a pod that watches its catalog file).
    reloads: Option<Arc<Reloads>>,
    pub store: Store,
    pub embedder: Arc<Embedder>,
    pub metrics: Metrics,
    state: AtomicU8,
    slots: Mutex<Slots>,
    cache: Arc<Mutex<Cached>>,
    cache_bytes: u64,
    /// End of the warm-up window, Unix milliseconds (0: no warm-up).
    warm_until_ms: AtomicU64,
    hnsw_threshold: usize,
    /// Held by the one graph build running.
    graph_builds: Arc<Mutex<()>>,
}

/// Store connections beyond the worker slots, for the pod's background tasks.
const BACKGROUND_CONNECTIONS: usize = 4;

/// A held worker slot; dropping it frees the slot for the next queued request.
pub struct SlotGuard {
    pod: Arc<Pod>,
    tenant: usize,
    started: std::time::Instant,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let service = self.started.elapsed().as_secs_f64();
        // Never panic in a drop: a poisoned lock is recovered and reported by /health.
        let mut s = lock(&self.pod.slots);
        s.mean_service = 0.9 * s.mean_service + 0.1 * service;
        s.scheduler.complete(self.tenant);
        Pod::grant(&mut s);
    }
}

impl Pod {
    /// A pod for `catalog`'s tenants.
    pub fn new(catalog: Catalog, mut store: Store, config: &PodConfig) -> Self {
        // Store work holds a worker slot (its blocking part too, after a client goes away),
        // but for the pod's few background tasks (volume, usage, warm-up).
        store.limit_connections(config.slots as usize + BACKGROUND_CONNECTIONS);
        let slots = TenantSlot::for_catalog(&catalog);
        let metrics = Metrics::new(&catalog);
        Self {
            tenants: RwLock::new(Arc::new(Tenants::new(
                Roster::new(&catalog),
                Vec::new(),
                Vec::new(),
            ))),
            queue_per_tenant: catalog.pool.queue_per_tenant,
            reloads: None,
            store,
            embedder: Arc::clone(&config.embedder),
            metrics,
            state: AtomicU8::new(PodState::Ready as u8),
            slots: Mutex::new(Slots {
                scheduler: FairScheduler::new(config.slots, &slots),
                mean_service: 0.2,
            }),
            cache: Arc::new(Mutex::new(Cached {
                lru: TenantCache::new(config.cache_bytes),
                indexes: HashMap::new(),
                newest: HashMap::new(),
                too_large: HashMap::new(),
                building: HashSet::new(),
            })),
            cache_bytes: config.cache_bytes,
            warm_until_ms: AtomicU64::new(0),
            hnsw_threshold: config.hnsw_threshold,
            graph_builds: Arc::new(Mutex::new(())),
        }
    }

    /// The pod, exporting `reloads` (those of the catalog file it watches) in its metrics.
    pub fn with_reloads(mut self, reloads: Arc<Reloads>) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// The reloads of the catalog file the pod watches, if it watches one.
    pub fn reloads(&self) -> Option<&Reloads> {
        self.reloads.as_deref()
    }

    /// Whether every lock of the pod is sound. A thread that panicked holding one may have
    /// left the slot counts or the cache half-changed: the pod goes on serving (see
    /// [`crate::lock`]) but reports it, so that it is restarted.
    pub fn healthy(&self) -> bool {
        !(self.slots.is_poisoned() || self.cache.is_poisoned() || self.graph_builds.is_poisoned())
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

    /// The tenants now.
    pub fn tenants(&self) -> Arc<Tenants> {
        Arc::clone(&self.tenants.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The index of tenant `id`, if the running catalog lists it.
    pub fn tenant(&self, id: &str) -> Option<usize> {
        self.tenants().roster.index(id)
    }

    /// The id of tenant `t` (a removed tenant's too).
    pub fn tenant_id(&self, t: usize) -> String {
        self.tenants().roster.tenant(t).id.clone()
    }

    /// Tenant `t`'s storage quota, as the catalog that last listed it says.
    pub fn quota(&self, t: usize) -> StorageQuota {
        self.tenants().roster.tenant(t).quota
    }

    /// Applies a reloaded catalog's tenants: new ones are served from now on; removed ones
    /// are refused from now on, but what they have queued or running is answered; changed
    /// weights and maxShares apply to the next scheduling decision. The pool's fields
    /// (`slotsPerPod`, `queuePerTenant`) stay as they were at start.
    pub fn reload(&self, catalog: &Catalog) -> RosterChange {
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        let mut roster = tenants.roster.clone();
        let change = roster.update(catalog);
        // Queues and series exist before any request can find a new tenant's index.
        lock(&self.slots)
            .scheduler
            .set_tenants(&roster.slots(self.queue_per_tenant));
        let mut removed = Vec::new();
        for t in 0..roster.len() {
            if roster.is_current(t) {
                self.metrics.track(t, &roster.tenant(t).id);
            } else {
                removed.push(t);
            }
        }
        *tenants = Arc::new(Tenants::new(
            roster,
            tenants.loading.clone(),
            tenants.served.clone(),
        ));
        // Not under the tenants' lock: holders of the cache's lock read the tenants.
        drop(tenants);
        for t in removed {
            // Its memory goes now; a queued query of it loads it again.
            self.evict(t);
        }
        change
    }

    /// The OpenMetrics exposition. A removed tenant's series stay until its queue and its
    /// running requests are done, then go (they come back if the tenant does).
    pub fn exposition(&self) -> String {
        let tenants = self.tenants();
        let load = self.load();
        for (t, (queued, running)) in load.iter().enumerate() {
            if !tenants.roster.is_current(t) && *queued == 0 && *running == 0 {
                self.metrics.forget(t);
            }
        }
        self.metrics.encode(&load, self.slots())
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
        let mut s = lock(&self.slots);
        if s.scheduler.enqueue(tenant, tx).is_err() {
            return Err(QueueFull {
                retry_after: s.scheduler.retry_after(tenant, s.mean_service),
            });
        }
        Self::grant(&mut s);
        Ok(rx)
    }

    /// Waits (up to `timeout`) for a worker slot for a request of `tenant`: queries and
    /// ingests take turns in the same weighted fair queues.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: usize,
        timeout: std::time::Duration,
    ) -> Result<SlotGuard, NoSlot> {
        let granted = self.enqueue(tenant).map_err(NoSlot::Full)?;
        match tokio::time::timeout(timeout, granted).await {
            Ok(Ok(())) => Ok(self.slot(tenant)),
            _ => Err(NoSlot::TimedOut),
        }
    }

    /// The slot a granted request holds.
    pub fn slot(self: &Arc<Self>, tenant: usize) -> SlotGuard {
        SlotGuard {
            pod: Arc::clone(self),
            tenant,
            started: std::time::Instant::now(),
        }
    }

    /// (queued, in service) per tenant index, now.
    pub fn load(&self) -> Vec<(usize, u32)> {
        // The scheduler has at least the snapshot's tenants (it grows first).
        let n = self.tenants().roster.len();
        let s = lock(&self.slots);
        (0..n)
            .map(|t| (s.scheduler.queued_for(t), s.scheduler.in_service_for(t)))
            .collect()
    }

    /// Worker slots of this pod.
    pub fn slots(&self) -> u32 {
        lock(&self.slots).scheduler.slots()
    }

    /// Requests queued or in service, all tenants.
    pub fn outstanding(&self) -> usize {
        let s = lock(&self.slots);
        s.scheduler.queued() + s.scheduler.busy() as usize
    }

    /// The tenant's index with every write acknowledged before this call, through any pod:
    /// from the cache if the cached one is as new as the tenant's current generation in the
    /// store (read first, so a store that cannot be read is an error, never a stale answer),
    /// or loaded from the store (a miss: that load is what routing for locality saves).
    /// Queries that miss together wait for one load; an index larger than the whole cache is
    /// refused, not loaded again until the tenant's next write.
    pub fn index(&self, tenant: usize) -> Result<Arc<TenantIndex>, IndexError> {
        let current = self.store.generation(&self.tenant_id(tenant))?;
        if let Some(index) = self.cached(tenant, current) {
            return Ok(index);
        }
        let loading = Arc::clone(&self.tenants().loading[tenant]);
        let _one_load = lock(&loading);
        // Another query may have loaded it while this one waited.
        if let Some(index) = self.cached(tenant, current) {
            return Ok(index);
        }
        let known_too_large = lock(&self.cache)
            .too_large
            .get(&tenant)
            .filter(|&&(_, generation)| generation >= current)
            .map(|&(bytes, _)| bytes);
        if let Some(bytes) = known_too_large {
            return Err(self.too_large(tenant, bytes));
        }
        self.metrics.cache(tenant, false);
        let fresh = self.read_index(tenant)?;
        self.keep(tenant, fresh)
    }

    /// The cached index if it is at `generation` or newer (and `generation` noted as known).
    fn cached(&self, tenant: usize, generation: u64) -> Option<Arc<TenantIndex>> {
        let mut c = lock(&self.cache);
        let newest = c.newest.entry(tenant).or_default();
        *newest = (*newest).max(generation);
        let Cached { lru, indexes, .. } = &mut *c;
        let entry = indexes
            .get(&tenant)
            .filter(|e| e.generation >= generation)?;
        lru.access(tenant, entry.index.bytes());
        self.metrics.cache(tenant, true);
        Some(Arc::clone(&entry.index))
    }

    /// Reads the tenant's index from the store, outside the cache's lock (a write may land
    /// meanwhile: [`Pod::keep`] sees to it).
    fn read_index(&self, tenant: usize) -> Result<Fresh, StoreError> {
        let started = Instant::now();
        let loaded = self.store.load(&self.tenant_id(tenant))?;
        Ok(Fresh {
            index: TenantIndex::new(loaded.chunks, loaded.vectors, self.hnsw_threshold),
            generation: loaded.generation,
            started,
        })
    }

    /// Caches an index read from the store, unless a newer write became known while it was
    /// read (that write's 200 may be out: a later query must load again). Either way it
    /// answers the query that read it, which arrived before that write's commit was read.
    fn keep(&self, tenant: usize, fresh: Fresh) -> Result<Arc<TenantIndex>, IndexError> {
        let Fresh {
            index,
            generation,
            started,
        } = fresh;
        let index = Arc::new(index);
        let bytes = index.bytes();
        let mut c = lock(&self.cache);
        if generation < c.newest.get(&tenant).copied().unwrap_or(0) {
            return Ok(index);
        }
        c.newest.insert(tenant, generation);
        // The older index it replaces goes first, so its bytes are not counted twice.
        c.lru.remove(tenant);
        c.indexes.remove(&tenant);
        let evicted = match c.lru.access(tenant, bytes) {
            Access::Miss { evicted } => evicted,
            Access::Hit => 0,
            Access::TooLarge => {
                c.too_large.insert(tenant, (bytes, generation));
                return Err(self.too_large(tenant, bytes));
            }
        };
        let entry = Entry {
            index: Arc::clone(&index),
            generation,
        };
        c.indexes.insert(tenant, entry);
        let Cached { lru, indexes, .. } = &mut *c;
        indexes.retain(|t, _| lru.contains(*t));
        if index.needs_graph() && c.building.insert(tenant) {
            self.start_graph_builder(tenant);
        }
        drop(c);
        self.metrics
            .cache_loaded(started.elapsed().as_secs_f64(), evicted);
        Ok(index)
    }

    fn too_large(&self, tenant: usize, bytes: u64) -> IndexError {
        self.metrics.rejected(tenant, "index_too_large");
        IndexError::TooLarge {
            tenant: self.tenant_id(tenant),
            bytes,
            cache: self.cache_bytes,
        }
    }

    /// Starts the tenant's one graph builder thread: it builds the graph of the tenant's
    /// cached index (again if a new one replaced it meanwhile) and ends when that index has
    /// its graph or is gone. Builders of all tenants take turns, so builds never take more
    /// than one core from serving; searches stay exact until the graph is done.
    fn start_graph_builder(&self, tenant: usize) {
        let (cache, builds) = (Arc::clone(&self.cache), Arc::clone(&self.graph_builds));
        let id = self.tenant_id(tenant);
        let build = move || {
            loop {
                let index = {
                    let mut c = lock(&cache);
                    match c.indexes.get(&tenant).filter(|e| e.index.needs_graph()) {
                        Some(entry) => Arc::clone(&entry.index),
                        None => {
                            c.building.remove(&tenant);
                            return;
                        }
                    }
                };
                let _one_at_a_time = lock(&builds);
                let started = std::time::Instant::now();
                index.build_graph();
                tracing::info!(
                    tenant = %id,
                    chunks = index.chunks.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "built the tenant's HNSW graph"
                );
            }
        };
        match std::thread::Builder::new()
            .name("hnsw-build".into())
            .spawn(build)
        {
            Ok(_) => self.metrics.graph_builder_started(),
            Err(e) => {
                lock(&self.cache).building.remove(&tenant);
                tracing::warn!(error = %e, "could not start a graph build; searches stay exact");
            }
        }
    }

    /// Whether the pod holds an index of the tenant (of any generation).
    pub fn is_cached(&self, tenant: usize) -> bool {
        lock(&self.cache).indexes.contains_key(&tenant)
    }

    /// Counts a served query of `tenant` towards its recorded volume.
    pub fn count_served(&self, tenant: usize) {
        self.tenants().served[tenant].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the queries served since the last flush to the store's per-hour tenant volume,
    /// which the next pod's warm-up reads.
    pub fn flush_volume(&self) -> Result<(), StoreError> {
        let tenants = self.tenants();
        let counts: Vec<(&str, u64)> = (0..tenants.roster.len())
            .map(|t| {
                let id = tenants.roster.tenant(t).id.as_str();
                (id, tenants.served[t].swap(0, Ordering::Relaxed))
            })
            .collect();
        let result = self
            .store
            .record_volume((unix_ms() / 3_600_000) as i64, &counts);
        if result.is_err() {
            // Keep the counts for the next flush.
            for (t, (_, n)) in counts.iter().enumerate() {
                tenants.served[t].fetch_add(*n, Ordering::Relaxed);
            }
        }
        result
    }

    /// Loads the indexes of the `n` tenants with the most queries in the last hour or two
    /// into the cache; returns their ids.
    pub fn preload(&self, n: usize) -> Result<Vec<String>, IndexError> {
        let since = (unix_ms() / 3_600_000) as i64 - 1;
        let mut loaded = Vec::new();
        for id in self.store.top_tenants(since, n)? {
            if let Some(t) = self.tenant(&id) {
                match self.index(t) {
                    Ok(_) => loaded.push(id),
                    // That tenant's problem: the others still preload.
                    Err(e @ IndexError::TooLarge { .. }) => {
                        tracing::warn!(error = %e, "not preloaded")
                    }
                    Err(e) => return Err(e),
                }
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

    /// Drops the tenant's cached index (a removed tenant's memory); generations stay known.
    fn evict(&self, tenant: usize) {
        let mut c = lock(&self.cache);
        c.lru.remove(tenant);
        c.indexes.remove(&tenant);
    }

    /// Takes note of a write of the tenant this pod committed: its usage, and its generation,
    /// which older indexes (cached, or being read from the store now) do not have.
    pub fn written(&self, tenant: usize, written: Written) {
        let mut c = lock(&self.cache);
        let newest = c.newest.entry(tenant).or_default();
        *newest = (*newest).max(written.generation);
        if c.indexes
            .get(&tenant)
            .is_some_and(|e| e.generation < written.generation)
        {
            c.lru.remove(tenant);
            c.indexes.remove(&tenant);
        }
        drop(c);
        self.record_usage(tenant, written.usage);
    }

    /// Records a tenant's storage usage (after its write, or as the store last had it).
    pub fn record_usage(&self, tenant: usize, usage: Usage) {
        self.metrics.storage(tenant, usage);
    }

    /// Reads every tenant's storage usage from the store into the metrics (other pods'
    /// writes included).
    pub fn refresh_usage(&self) -> Result<(), StoreError> {
        for (id, usage) in self.store.usage()? {
            if let Some(t) = self.tenant(&id) {
                self.record_usage(t, usage);
            }
        }
        Ok(())
    }
}

/// Wall-clock Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewDocument;

    fn pod(hnsw_threshold: usize) -> Arc<Pod> {
        let text = "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {share: 0.5}\n\
tenants:\n  - {id: media-1, tier: gold}\n  - {id: finance-1, tier: gold}\n\
pool: {maxReplicas: 4, slotsPerPod: 2, queuePerTenant: 10}\n";
        let store = Store::in_memory().unwrap();
        let docs: Vec<NewDocument> = (0..20)
            .map(|i| NewDocument {
                id: format!("d{i}"),
                text: format!("document number {i} about topic {}", i % 3),
                metadata: serde_json::Value::Null,
            })
            .collect();
        let quota = tenantscale_core::catalog::DEFAULT_STORAGE_QUOTA;
        store
            .ingest("media-1", &docs, &Embedder::Hashed, &quota)
            .unwrap();
        Arc::new(Pod::new(
            Catalog::parse(text).unwrap().catalog,
            store,
            &PodConfig {
                slots: 2,
                cache_bytes: 64 << 20,
                hnsw_threshold,
                embedder: Arc::new(Embedder::Hashed),
            },
        ))
    }

    /// The index the pod holds for the tenant now, without touching the LRU or the metrics.
    fn held(pod: &Pod, tenant: usize) -> Option<Arc<TenantIndex>> {
        let c = lock(&pod.cache);
        c.indexes.get(&tenant).map(|e| Arc::clone(&e.index))
    }

    fn doc(id: &str, text: &str) -> NewDocument {
        NewDocument {
            id: id.into(),
            text: text.into(),
            metadata: serde_json::Value::Null,
        }
    }

    /// A write of media-1 through this pod, as the HTTP handlers make it.
    fn write(pod: &Pod, id: &str, text: &str) {
        let quota = tenantscale_core::catalog::DEFAULT_STORAGE_QUOTA;
        let (_, written) = (pod.store)
            .ingest("media-1", &[doc(id, text)], &Embedder::Hashed, &quota)
            .unwrap();
        pod.written(0, written);
    }

    /// Waits (bounded) for `done`.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn concurrent_misses_past_the_threshold_start_one_graph_builder() {
        let pod = pod(1);
        // Builds wait for their turn behind this one, so every query misses while none is done.
        let turn = lock(&pod.graph_builds);
        let queries: Vec<_> = (0..16)
            .map(|_| {
                let pod = Arc::clone(&pod);
                std::thread::spawn(move || pod.index(0).map(|ix| ix.chunks.len()))
            })
            .collect();
        for q in queries {
            assert_eq!(q.join().unwrap().unwrap(), 20);
        }
        // The builder holds the index (cache, this check and the builder: three owners) and
        // waits for its turn; before that, an invalidation would end it and rightly start another.
        wait_for("the builder to take the index", || {
            held(&pod, 0).is_some_and(|ix| Arc::strong_count(&ix) >= 3)
        });
        // Its documents change and it is loaded again, several times, while the builder
        // still waits: the waiting builder takes the newest index; no other starts.
        for i in 0..5 {
            write(&pod, &format!("new{i}"), "a new document");
            assert_eq!(pod.index(0).unwrap().chunks.len(), 21 + i);
        }
        assert_eq!(pod.metrics.graph_builders_started(), 1);
        drop(turn);
        wait_for("the graph", || {
            held(&pod, 0).is_some_and(|ix| !ix.needs_graph())
        });
        wait_for("the builder to end", || {
            lock(&pod.cache).building.is_empty()
        });
        assert_eq!(pod.metrics.graph_builders_started(), 1);
    }

    /// A write lands while a query reads the index from the store (after the read, before the
    /// cache takes it): the index read is answered to that query but not cached, since the
    /// write's 200 may be out; the next query loads the new one.
    #[test]
    fn an_index_read_before_a_write_is_not_cached_after_it() {
        let pod = pod(usize::MAX);
        write(&pod, "d0", "the old text of d0");
        let before = pod.read_index(0).unwrap();
        write(&pod, "d0", "the new text of d0");
        let answered = pod.keep(0, before).unwrap();
        let text = |ix: &TenantIndex| {
            let d0 = ix.chunks.iter().find(|c| c.document_id == "d0").unwrap();
            d0.text.clone()
        };
        assert_eq!(text(&answered), "the old text of d0");
        assert!(
            held(&pod, 0).is_none(),
            "the index older than the write was cached"
        );
        assert_eq!(text(&pod.index(0).unwrap()), "the new text of d0");
        assert_eq!(text(&held(&pod, 0).unwrap()), "the new text of d0");

        // A delete, the same way; and a read that began after the write is cached.
        let before = pod.read_index(0).unwrap();
        let deleted = pod.store.delete("media-1", "d0").unwrap().unwrap();
        pod.written(0, deleted);
        pod.keep(0, before).unwrap();
        assert!(held(&pod, 0).is_none());
        let after = pod.read_index(0).unwrap();
        pod.keep(0, after).unwrap();
        let held = held(&pod, 0).unwrap();
        assert!(held.chunks.iter().all(|c| c.document_id != "d0"));
    }

    /// The generation check alone, without this pod hearing of the write (another pod made it):
    /// the cached index is not served once the store's generation moved past it.
    #[test]
    fn a_write_through_another_pod_is_seen_by_the_next_query() {
        let pod = pod(usize::MAX);
        assert_eq!(pod.index(0).unwrap().chunks.len(), 20);
        let quota = tenantscale_core::catalog::DEFAULT_STORAGE_QUOTA;
        (pod.store)
            .ingest(
                "media-1",
                &[doc("x", "another pod's")],
                &Embedder::Hashed,
                &quota,
            )
            .unwrap();
        assert_eq!(pod.index(0).unwrap().chunks.len(), 21);
        pod.store.delete("media-1", "x").unwrap().unwrap();
        assert_eq!(pod.index(0).unwrap().chunks.len(), 20);
    }

    #[tokio::test]
    async fn a_poisoned_lock_keeps_the_pod_serving_and_fails_health() {
        let pod = pod(usize::MAX);
        let app = crate::http::router(
            Arc::clone(&pod),
            crate::http::HttpConfig {
                auth: crate::http::TenantAuth::TrustHeader,
                max_body: 1 << 16,
                max_query_chars: 100,
                queue_timeout: std::time::Duration::from_secs(5),
                llm: None,
            },
        );
        let held = pod
            .acquire(0, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        // A thread panics holding the slots' lock and the cache's.
        let poisoner = Arc::clone(&pod);
        std::thread::spawn(move || {
            let _slots = poisoner.slots.lock();
            let _cache = poisoner.cache.lock();
            panic!("poisoning the pod's locks on purpose");
        })
        .join()
        .unwrap_err();
        assert!(!pod.healthy());
        drop(held); // SlotGuard::drop takes the poisoned lock: no panic.
        let get = |uri: &str, tenant: bool| {
            let mut req = axum::http::Request::builder().uri(uri);
            if tenant {
                req = req
                    .method("POST")
                    .header("x-tenant-id", "media-1")
                    .header("content-type", "application/json");
            }
            let body = if tenant {
                r#"{"query": "topic 1"}"#
            } else {
                ""
            };
            let app = app.clone();
            let req = req.body(axum::body::Body::from(body)).unwrap();
            async move {
                use tower::ServiceExt;
                app.oneshot(req).await.unwrap().status()
            }
        };
        for _ in 0..3 {
            assert_eq!(get("/v1/query", true).await, axum::http::StatusCode::OK);
        }
        assert_eq!(
            get("/health", false).await,
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

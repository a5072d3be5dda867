//! The discrete-event model of one policy on one scenario.
//!
//! Arrivals (Poisson per tenant, or a trace) → gateway admission (tier rate limit, share cap)
//! → routing (bounded-load hashing by tenant, slow start, drain) → the pod's per-tenant bounded
//! queues and fair scheduler → service (cache hit or miss, then the LLM) → completion. Metrics
//! are scraped every scrape interval; the autoscaler decides every sync period; pods take a
//! startup time to become ready, ramp up, and drain before they go. Every decision — admit,
//! route, schedule, scale — is `tenantscale-core`'s, the same code the live system runs.
//!
//! The `naive` data plane is the seed's world for the stock HPA policies: no admission
//! control, random routing (a Kubernetes Service), one FIFO per pod.

use crate::policy::{Autoscaler, DecisionRecord, Plane, Policy};
use crate::queue::EventQueue;
use crate::report::{ClassReport, PolicyReport};
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::stats::{ClassStats, Histogram, Minutes, Series};
use std::cmp::Reverse;
use std::collections::VecDeque;
use tenantscale_core::cache::{Access, TenantCache};
use tenantscale_core::fairness::admission::{Admission, TenantLimits};
use tenantscale_core::fairness::scheduler::{FairScheduler, TenantSlot};
use tenantscale_core::routing::{Router, RouterConfig, stable_hash};

/// Microseconds: event times are integers so ordering is exact.
type Micros = u64;

/// Event keys are `time µs << SEQ_BITS | sequence`: times up to ~200 days; events at the same
/// microsecond run in a fixed order.
const SEQ_BITS: u32 = 20;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

fn us(seconds: f64) -> Micros {
    (seconds * 1e6 + 0.5).max(0.0) as Micros
}
fn secs(t: Micros) -> f64 {
    t as f64 / 1e6
}

/// Backlog per spiking tenant under which a spike counts as relieved (the seed's target).
pub const RELIEF_TARGET: f64 = 10.0;
/// How long the backlog must stay under the target to count as relief.
pub const RELIEF_HOLD_SECONDS: f64 = 60.0;
/// Window over which a tenant's share of served capacity is measured.
pub const SHARE_WINDOW_SECONDS: f64 = 10.0;
/// Retry-After for a refusal by an empty pool, or by a full queue of the seed's FIFO plane.
const QUEUE_RETRY_AFTER: f64 = 1.0;

/// An event. Kept to 16 bytes (the queue moves them a lot): times are offsets in µs from the
/// event's own time (`age`: since the request's first attempt), tenants fit in 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Retry {
        tenant: u16,
        attempts: u8,
        age: u32,
    },
    Complete {
        pod: u32,
        tenant: u16,
        age: u32,
        service: u32,
    },
    PodReady {
        pod: u32,
    },
    Observe,
    Scrape,
    Sync,
}

/// The seed's pod: one FIFO, each tenant bounded to `bound` waiting requests.
#[derive(Debug, Clone)]
struct Fifo {
    items: VecDeque<(usize, Micros)>,
    per_tenant: Vec<u32>,
    bound: u32,
    slots: u32,
    busy: u32,
}

#[derive(Debug, Clone)]
enum Queues {
    Fair(FairScheduler<Micros>),
    Fifo(Fifo),
}

impl Queues {
    /// Queues a request; a full queue refuses it with a Retry-After (the fair plane computes
    /// it as the live pod does, from the queue's drain rate at `mean_service` seconds).
    fn enqueue(&mut self, tenant: usize, first_at: Micros, mean_service: f64) -> Result<(), f64> {
        match self {
            Queues::Fair(s) => s
                .enqueue(tenant, first_at)
                .map_err(|_| s.retry_after(tenant, mean_service)),
            Queues::Fifo(f) => {
                if f.per_tenant[tenant] >= f.bound {
                    return Err(QUEUE_RETRY_AFTER);
                }
                f.per_tenant[tenant] += 1;
                f.items.push_back((tenant, first_at));
                Ok(())
            }
        }
    }
    fn start_next(&mut self) -> Option<(usize, Micros)> {
        match self {
            Queues::Fair(s) => s.start_next(),
            Queues::Fifo(f) => {
                if f.busy >= f.slots {
                    return None;
                }
                let (t, at) = f.items.pop_front()?;
                f.per_tenant[t] -= 1;
                f.busy += 1;
                Some((t, at))
            }
        }
    }
    fn complete(&mut self, tenant: usize) {
        match self {
            Queues::Fair(s) => s.complete(tenant),
            Queues::Fifo(f) => f.busy -= 1,
        }
    }
    fn busy(&self) -> u32 {
        match self {
            Queues::Fair(s) => s.busy(),
            Queues::Fifo(f) => f.busy,
        }
    }
    fn is_idle(&self) -> bool {
        match self {
            Queues::Fair(s) => s.is_idle(),
            Queues::Fifo(f) => f.busy == 0 && f.items.is_empty(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PodPhase {
    Starting,
    Ready,
    Draining,
    Gone,
}

#[derive(Debug, Clone)]
struct Pod {
    phase: PodPhase,
    created: Micros,
    ready_at: Micros,
    queues: Queues,
    cache: TenantCache,
    router_index: Option<usize>,
    /// ∫ busy slots dt (slot-µs), and its value at the last scrape.
    busy_area: f64,
    busy_area_at_scrape: f64,
    last_busy_change: Micros,
}

/// The pod-level view the autoscaler sees at a scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub at: f64,
    /// Per pod (index into the engine's pods): CPU as the busy fraction of slots over the interval.
    pub cpu: Vec<(usize, f64)>,
    /// Per tenant: mean requests in service over the interval (a rate of busy seconds, as a
    /// pod's `tenantscale_busy_seconds_total` counter gives it).
    pub in_service: Vec<f64>,
    /// Per tenant: requests waiting at pods or for a retry.
    pub backlog: Vec<u32>,
    /// Per tenant: first attempts per second over the interval.
    pub arrival_rate: Vec<f64>,
    /// Per tenant: mean service seconds over the interval (0 if none completed).
    pub mean_service: Vec<f64>,
}

/// What a pod looks like to the HPA.
#[derive(Debug, Clone, Copy)]
pub struct PodView {
    pub ready: bool,
    pub starting: bool,
    pub draining: bool,
    pub started_seconds_ago: f64,
    pub ready_seconds_ago: f64,
}

/// Results of one policy's run: the report's numbers, and what the charts and tests need.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub report: PolicyReport,
    pub series: Series,
    pub decisions: Vec<DecisionRecord>,
    /// First attempts, all tenants.
    pub requests: u64,
}

/// One policy running on one scenario.
pub struct Engine<'s> {
    sc: &'s Scenario,
    plane: Plane,
    autoscaler: Autoscaler,
    policy_name: String,
    record: bool,
    now: Micros,
    end: Micros,
    seq: u64,
    heap: EventQueue<Kind>,
    /// The next first attempt (µs, tenant): arrivals bypass the event queue.
    next_arrival: Option<(Micros, usize)>,
    arrival_rng: Rng,
    service_rng: Rng,
    llm_factor: crate::rng::LogNormal,
    startup_rng: Rng,
    route_rng: Rng,
    /// Per class, the rate multiplier for each simulated second.
    multipliers: Vec<Vec<f32>>,
    /// Per second, the total arrival rate of all tenants.
    total_rate: Vec<f64>,
    /// Per class, its tenants (catalog indices).
    members: Vec<Vec<usize>>,
    trace_cursor: usize,
    pods: Vec<Pod>,
    router_pods: Vec<usize>,
    ready_pods: Vec<usize>,
    router: Router,
    admission: Admission,
    slot_template: Vec<TenantSlot>,
    /// Typical service seconds of one request (for Retry-After).
    mean_service: f64,
    // per tenant (catalog index)
    class_of: Vec<Option<usize>>,
    slo: Vec<Micros>,
    data_bytes: Vec<u64>,
    queued: Vec<u32>,
    in_service: Vec<u32>,
    retrying: Vec<u32>,
    arrivals: Vec<u64>,
    arrivals_at_scrape: Vec<u64>,
    service_sum: Vec<f64>,
    service_count: Vec<u64>,
    service_at_scrape: Vec<(f64, u64)>,
    /// Per tenant: ∫ requests in service dt (µs), cumulative; and its value at the last share
    /// window and the last scrape.
    busy_area: Vec<f64>,
    busy_at_share: Vec<f64>,
    busy_at_scrape: Vec<f64>,
    busy_changed: Vec<Micros>,
    // results
    classes: Vec<ClassStats>,
    minutes: Vec<Minutes>,
    spiking_tenants: Vec<usize>,
    last_scrape: Scrape,
    alive: u32,
    draining: u32,
    alive_area: f64,
    alive_changed: Micros,
    live_slot_area: f64,
    spec_replicas: i32,
    peak_replicas: i32,
    first_scale_up: Option<f64>,
    relief: Option<f64>,
    relief_candidate: Option<f64>,
    max_share: f64,
    share_window_start: Micros,
    series: Series,
    bin_hist: Vec<Histogram>,
    bin_queue: Vec<f64>,
    bin_replicas: f64,
    bin_samples: u32,
    decisions: Vec<DecisionRecord>,
    progress: Option<&'s dyn Fn(f64)>,
}

impl<'s> Engine<'s> {
    /// Prepares `policy` on `scenario` with `seed`; `record` keeps every autoscaler decision.
    pub fn new(sc: &'s Scenario, policy: &Policy, seed: u64, record: bool) -> Self {
        let cat = &sc.catalog;
        let n = cat.tenants.len();
        let plane = policy.plane();
        let slot_template = TenantSlot::for_catalog(cat);
        let limits = TenantLimits::for_catalog(cat);
        let seconds = sc.duration.ceil() as usize + 1;
        let multipliers: Vec<Vec<f32>> = sc
            .classes
            .iter()
            .map(|c| {
                (0..seconds)
                    .map(|s| c.multiplier(s as f64, sc.clock_start) as f32)
                    .collect()
            })
            .collect();
        let class_of: Vec<Option<usize>> = (0..n).map(|t| sc.class_of(t)).collect();
        let data_bytes = (0..n)
            .map(|t| class_of[t].map_or(0, |c| sc.classes[c].data_bytes))
            .collect();
        let minutes = (sc.duration / 60.0).ceil() as usize + 1;
        let bin_seconds = (sc.duration / 600.0).max(60.0).ceil();
        let spiking_tenants = sc
            .traffic
            .iter()
            .filter(|t| sc.classes[t.class].spiking)
            .map(|t| t.tenant)
            .collect();
        // A request's typical service time: a cache hit and the median LLM call.
        let mean_service = (sc.model.retrieval_hit_ms + sc.model.llm_median_ms) / 1000.0;
        let router = Router::new(
            RouterConfig {
                warmup_seconds: sc.model.warmup_seconds,
                ..RouterConfig::default()
            },
            cat.tenants
                .iter()
                .map(|t| stable_hash(t.id.as_bytes()))
                .collect(),
        );
        let members: Vec<Vec<usize>> = (0..sc.classes.len())
            .map(|c| {
                sc.traffic
                    .iter()
                    .filter(|t| t.class == c)
                    .map(|t| t.tenant)
                    .collect()
            })
            .collect();
        let total_rate = (0..seconds)
            .map(|s| {
                (0..sc.classes.len())
                    .map(|c| {
                        members[c].len() as f64
                            * sc.classes[c].base_rps
                            * f64::from(multipliers[c][s])
                    })
                    .sum()
            })
            .collect();
        let mut engine = Engine {
            sc,
            plane,
            autoscaler: Autoscaler::new(policy, cat),
            policy_name: policy.name(),
            record,
            now: 0,
            end: us(sc.duration),
            seq: 0,
            heap: EventQueue::new(),
            next_arrival: None,
            arrival_rng: Rng::fork(seed, 0),
            service_rng: Rng::fork(seed, 1 << 40),
            llm_factor: crate::rng::LogNormal::new(sc.model.llm_sigma),
            startup_rng: Rng::fork(seed, 2 << 40),
            route_rng: Rng::fork(seed, 3 << 40),
            total_rate,
            members,
            multipliers,
            trace_cursor: 0,
            pods: Vec::new(),
            router_pods: Vec::new(),
            ready_pods: Vec::new(),
            router,
            admission: Admission::new(&limits, mean_service),
            mean_service,
            slot_template,
            class_of,
            slo: cat
                .tenants
                .iter()
                .map(|t| u64::from(t.slo_ms) * 1000)
                .collect(),
            data_bytes,
            queued: vec![0; n],
            in_service: vec![0; n],
            retrying: vec![0; n],
            arrivals: vec![0; n],
            arrivals_at_scrape: vec![0; n],
            service_sum: vec![0.0; n],
            service_count: vec![0; n],
            service_at_scrape: vec![(0.0, 0); n],
            busy_area: vec![0.0; n],
            busy_at_share: vec![0.0; n],
            busy_at_scrape: vec![0.0; n],
            busy_changed: vec![0; n],
            classes: sc.classes.iter().map(|_| ClassStats::new()).collect(),
            minutes: sc.classes.iter().map(|_| Minutes::new(minutes)).collect(),
            spiking_tenants,
            last_scrape: Scrape::default(),
            alive: 0,
            draining: 0,
            alive_area: 0.0,
            alive_changed: 0,
            live_slot_area: 0.0,
            spec_replicas: 0,
            peak_replicas: 0,
            first_scale_up: None,
            relief: None,
            relief_candidate: None,
            max_share: 0.0,
            share_window_start: 0,
            series: Series {
                bin_seconds,
                replicas: Vec::new(),
                queue_depth: vec![Vec::new(); sc.classes.len()],
                p99_ms: vec![Vec::new(); sc.classes.len()],
            },
            bin_hist: sc.classes.iter().map(|_| Histogram::coarse()).collect(),
            bin_queue: vec![0.0; sc.classes.len()],
            bin_replicas: 0.0,
            bin_samples: 0,
            decisions: Vec::new(),
            progress: None,
        };
        engine.start();
        engine
    }

    /// Reports the fraction of simulated time done, every ten simulated minutes.
    pub fn with_progress(mut self, progress: &'s dyn Fn(f64)) -> Self {
        self.progress = Some(progress);
        self
    }

    fn push(&mut self, at: Micros, kind: Kind) {
        self.seq += 1;
        self.heap
            .push((at << SEQ_BITS) | (self.seq & SEQ_MASK), kind);
    }

    fn start(&mut self) {
        let m = &self.sc.model;
        let concurrency = self.total_rate.first().copied().unwrap_or(0.0)
            * (m.retrieval_hit_ms + m.llm_median_ms)
            / 1000.0;
        let initial = self
            .autoscaler
            .initial_replicas(&self.sc.catalog, concurrency);
        // The pool starts warm: pods ready long enough to have finished their ramp.
        for _ in 0..initial {
            let pod = self.new_pod();
            self.pods[pod].created = 0;
            self.make_ready(pod, -self.sc.model.warmup_seconds);
        }
        self.spec_replicas = initial;
        self.peak_replicas = initial;
        self.next_arrival = self.following_arrival(0.0);
        self.push(0, Kind::Observe);
        if !self.autoscaler.is_static() {
            let (scrape, sync) = self.autoscaler.periods(&self.sc.control);
            self.push(us(scrape), Kind::Scrape);
            self.push(us(sync), Kind::Sync);
        }
    }

    /// The first attempt after `from`: the next line of a trace, or the next event of the
    /// merged Poisson process of all tenants. Its rate is constant within each simulated second
    /// (one unit exponential is spent across the seconds at their rates: exact for that
    /// piecewise-constant rate); the tenant is drawn in proportion to the tenants' rates then.
    fn following_arrival(&mut self, from: f64) -> Option<(Micros, usize)> {
        if let Some(trace) = &self.sc.trace {
            let (t, tenant) = *trace.get(self.trace_cursor)?;
            self.trace_cursor += 1;
            return Some((us(t), tenant));
        }
        let mut mass = self.arrival_rng.exp1();
        let mut t = from;
        let at = loop {
            // Truncation is floor for t >= 0, and one instruction (floor() is a libm call).
            let second = (t as u64) as f64;
            let rate = *self.total_rate.get(second as usize)?;
            let span = second + 1.0 - t;
            if rate * span > mass {
                break t + mass / rate;
            }
            mass -= rate * span;
            t = second + 1.0;
            if t >= self.sc.duration {
                return None;
            }
        };
        if at >= self.sc.duration {
            return None;
        }
        let second = at as usize;
        let mut pick = self.arrival_rng.uniform() * self.total_rate[second];
        for (c, members) in self.members.iter().enumerate() {
            let class_rate = members.len() as f64
                * self.sc.classes[c].base_rps
                * f64::from(self.multipliers[c][second]);
            if pick < class_rate && !members.is_empty() {
                let tenant = members[(((pick / class_rate) * members.len() as f64) as usize)
                    .min(members.len() - 1)];
                return Some((us(at), tenant));
            }
            pick -= class_rate;
        }
        let last = self.members.iter().rev().find(|m| !m.is_empty())?;
        Some((us(at), last[last.len() - 1]))
    }

    /// Runs to the end of the scenario.
    pub fn run(mut self) -> RunOutcome {
        loop {
            let limit = self.next_arrival.map_or(u64::MAX, |(at, _)| at << SEQ_BITS);
            let Some((key, kind)) = self.heap.pop_before(limit) else {
                // The next first attempt comes before any queued event.
                let Some((at, tenant)) = self.next_arrival else {
                    break;
                };
                if at > self.end {
                    break;
                }
                self.advance(at);
                self.next_arrival = self.following_arrival(secs(at));
                self.first_attempt(tenant);
                continue;
            };
            let at = key >> SEQ_BITS;
            if at > self.end {
                break;
            }
            self.advance(at);
            match kind {
                Kind::Retry {
                    tenant,
                    attempts,
                    age,
                } => {
                    self.retrying[tenant as usize] -= 1;
                    self.attempt(tenant as usize, at - u64::from(age), attempts);
                }
                Kind::Complete {
                    pod,
                    tenant,
                    age,
                    service,
                } => self.on_complete(pod as usize, tenant as usize, at - u64::from(age), service),
                Kind::PodReady { pod } => {
                    if self.pods[pod as usize].phase == PodPhase::Starting {
                        self.make_ready(pod as usize, secs(self.now));
                    }
                }
                Kind::Observe => self.on_observe(),
                Kind::Scrape => self.on_scrape(),
                Kind::Sync => self.on_sync(),
            }
        }
        self.advance(self.end);
        self.finish()
    }

    /// Moves the clock, integrating pod-time and live capacity.
    fn advance(&mut self, to: Micros) {
        let dt = (to - self.alive_changed) as f64;
        self.alive_area += f64::from(self.alive) * dt;
        let live_slots =
            (self.ready_pods.len() as u32 + self.draining) * self.sc.catalog.pool.slots_per_pod;
        self.live_slot_area += f64::from(live_slots) * dt;
        self.alive_changed = to;
        self.now = to;
    }

    fn first_attempt(&mut self, tenant: usize) {
        self.arrivals[tenant] += 1;
        if let Some(c) = self.class_of[tenant] {
            self.classes[c].requests += 1;
        }
        self.attempt(tenant, self.now, 0);
    }

    fn live_slots(&self) -> u32 {
        self.ready_pods.len() as u32 * self.sc.catalog.pool.slots_per_pod
    }

    fn attempt(&mut self, tenant: usize, first_at: Micros, attempts: u8) {
        let now_s = secs(self.now);
        let pod = match self.plane {
            Plane::Fair => {
                if let Err(r) = self.admission.admit(tenant, now_s, self.live_slots()) {
                    return self.refuse(tenant, first_at, attempts, r.retry_after);
                }
                match self.router.route(tenant, now_s) {
                    Some(ri) => self.router_pods[ri],
                    None => {
                        self.admission.release(tenant);
                        return self.refuse(tenant, first_at, attempts, QUEUE_RETRY_AFTER);
                    }
                }
            }
            Plane::Naive => {
                if self.ready_pods.is_empty() {
                    return self.refuse(tenant, first_at, attempts, QUEUE_RETRY_AFTER);
                }
                self.ready_pods[self.route_rng.below(self.ready_pods.len())]
            }
        };
        let enqueued = self.pods[pod]
            .queues
            .enqueue(tenant, first_at, self.mean_service);
        if let Err(retry_after) = enqueued {
            if self.plane == Plane::Fair {
                self.router.release(
                    self.pods[pod]
                        .router_index
                        .expect("routed pods are in the router"),
                );
                self.admission.release(tenant);
            }
            return self.refuse(tenant, first_at, attempts, retry_after);
        }
        self.queued[tenant] += 1;
        self.dispatch(pod);
    }

    /// A 429: the client retries after `retry_after`, or gives up after its last retry.
    fn refuse(&mut self, tenant: usize, first_at: Micros, attempts: u8, retry_after: f64) {
        if attempts < self.sc.model.max_retries {
            self.retrying[tenant] += 1;
            let at = self.now + us(retry_after.max(0.001));
            let age = (at - first_at).min(u64::from(u32::MAX)) as u32;
            self.push(
                at,
                Kind::Retry {
                    tenant: tenant as u16,
                    attempts: attempts + 1,
                    age,
                },
            );
            return;
        }
        if let Some(c) = self.class_of[tenant] {
            self.classes[c].rejected += 1;
            self.minutes[c].record((secs(self.now) / 60.0) as usize, true);
        }
    }

    fn set_busy(&mut self, pod: usize) {
        let p = &mut self.pods[pod];
        p.busy_area += f64::from(p.queues.busy()) * (self.now - p.last_busy_change) as f64;
        p.last_busy_change = self.now;
    }

    fn touch_tenant_busy(&mut self, tenant: usize) {
        self.busy_area[tenant] +=
            f64::from(self.in_service[tenant]) * (self.now - self.busy_changed[tenant]) as f64;
        self.busy_changed[tenant] = self.now;
    }

    /// Starts queued requests while the pod has free slots.
    fn dispatch(&mut self, pod: usize) {
        self.set_busy(pod);
        while let Some((tenant, first_at)) = self.pods[pod].queues.start_next() {
            self.queued[tenant] -= 1;
            self.touch_tenant_busy(tenant);
            self.in_service[tenant] += 1;
            let m = &self.sc.model;
            let retrieval = match self.pods[pod].cache.access(tenant, self.data_bytes[tenant]) {
                Access::Hit => m.retrieval_hit_ms,
                Access::Miss { .. } | Access::TooLarge => m.retrieval_miss_ms,
            };
            let llm = m.llm_median_ms * self.llm_factor.sample(&mut self.service_rng);
            let service = us((retrieval + llm) / 1000.0).clamp(1, u64::from(u32::MAX)) as u32;
            let at = self.now + u64::from(service);
            let age = (at - first_at).min(u64::from(u32::MAX)) as u32;
            self.push(
                at,
                Kind::Complete {
                    pod: pod as u32,
                    tenant: tenant as u16,
                    age,
                    service,
                },
            );
        }
    }

    fn on_complete(&mut self, pod: usize, tenant: usize, first_at: Micros, service: u32) {
        self.set_busy(pod);
        self.touch_tenant_busy(tenant);
        self.pods[pod].queues.complete(tenant);
        self.in_service[tenant] -= 1;
        self.service_sum[tenant] += f64::from(service) / 1e6;
        self.service_count[tenant] += 1;
        if self.plane == Plane::Fair {
            self.admission.release(tenant);
            self.router.release(
                self.pods[pod]
                    .router_index
                    .expect("routed pods are in the router"),
            );
        }
        let latency = self.now - first_at;
        if let Some(c) = self.class_of[tenant] {
            let slow = latency > self.slo[tenant];
            let stats = &mut self.classes[c];
            stats.served += 1;
            stats.over_slo += u64::from(slow);
            stats.latency.record(latency);
            if self
                .sc
                .spike_onset
                .is_none_or(|onset| secs(first_at) < onset)
            {
                stats.pre_spike.record(latency);
            }
            self.bin_hist[c].record(latency);
            self.minutes[c].record((secs(self.now) / 60.0) as usize, slow);
        }
        self.dispatch(pod);
        if self.pods[pod].phase == PodPhase::Draining && self.pods[pod].queues.is_idle() {
            self.remove_pod(pod);
        }
    }

    fn new_pod(&mut self) -> usize {
        let cat = &self.sc.catalog;
        let slots = cat.pool.slots_per_pod;
        let queues = match self.plane {
            Plane::Fair => Queues::Fair(FairScheduler::new(slots, &self.slot_template)),
            Plane::Naive => Queues::Fifo(Fifo {
                items: VecDeque::new(),
                per_tenant: vec![0; cat.tenants.len()],
                bound: cat.pool.queue_per_tenant,
                slots,
                busy: 0,
            }),
        };
        self.pods.push(Pod {
            phase: PodPhase::Starting,
            created: self.now,
            ready_at: 0,
            queues,
            cache: TenantCache::new(self.sc.model.cache_bytes_per_pod.value().max(0) as u64),
            router_index: None,
            busy_area: 0.0,
            busy_area_at_scrape: 0.0,
            last_busy_change: self.now,
        });
        self.alive += 1;
        self.pods.len() - 1
    }

    fn make_ready(&mut self, pod: usize, since: f64) {
        let p = &mut self.pods[pod];
        p.phase = PodPhase::Ready;
        p.ready_at = self.now;
        let ri = self
            .router
            .add_pod(stable_hash(format!("pod-{pod}").as_bytes()), since);
        self.pods[pod].router_index = Some(ri);
        if self.router_pods.len() <= ri {
            self.router_pods.resize(ri + 1, usize::MAX);
        }
        self.router_pods[ri] = pod;
        self.ready_pods.push(pod);
    }

    fn remove_pod(&mut self, pod: usize) {
        if self.pods[pod].phase == PodPhase::Draining {
            self.draining -= 1;
        }
        if let Some(ri) = self.pods[pod].router_index {
            self.router.remove(ri);
        }
        self.pods[pod].phase = PodPhase::Gone;
        self.alive -= 1;
    }

    /// Makes the pool match `desired`: start pods, or stop the newest (unstarted first).
    fn scale_to(&mut self, desired: i32) {
        let live: Vec<usize> = (0..self.pods.len())
            .filter(|p| matches!(self.pods[*p].phase, PodPhase::Starting | PodPhase::Ready))
            .collect();
        let have = live.len() as i32;
        if desired > have {
            let m = &self.sc.model;
            for _ in 0..desired - have {
                let pod = self.new_pod();
                let startup = self
                    .startup_rng
                    .between(m.pod_startup_min_seconds, m.pod_startup_max_seconds);
                self.push(self.now + us(startup), Kind::PodReady { pod: pod as u32 });
            }
        } else {
            let mut victims: Vec<usize> = live;
            // Unstarted pods first, then the newest ready ones (coldest caches).
            victims.sort_by_key(|p| {
                (
                    self.pods[*p].phase == PodPhase::Ready,
                    Reverse(self.pods[*p].created),
                )
            });
            for pod in victims.into_iter().take((have - desired) as usize) {
                match self.pods[pod].phase {
                    PodPhase::Starting => self.remove_pod(pod),
                    _ => {
                        self.pods[pod].phase = PodPhase::Draining;
                        self.draining += 1;
                        self.ready_pods.retain(|p| *p != pod);
                        if let Some(ri) = self.pods[pod].router_index {
                            self.router.drain(ri);
                        }
                        if self.pods[pod].queues.is_idle() {
                            self.remove_pod(pod);
                        }
                    }
                }
            }
        }
        self.spec_replicas = desired;
        self.peak_replicas = self.peak_replicas.max(desired);
    }

    fn on_scrape(&mut self) {
        let (period, _) = self.autoscaler.periods(&self.sc.control);
        let now_s = secs(self.now);
        let interval = (now_s - self.last_scrape.at).max(1e-9);
        let slots = f64::from(self.sc.catalog.pool.slots_per_pod);
        let mut cpu = Vec::new();
        for pod in 0..self.pods.len() {
            if self.pods[pod].phase == PodPhase::Gone {
                continue;
            }
            self.set_busy(pod);
            let p = &mut self.pods[pod];
            let busy = (p.busy_area - p.busy_area_at_scrape) / 1e6;
            p.busy_area_at_scrape = p.busy_area;
            if p.phase == PodPhase::Ready {
                let since = (now_s - secs(p.ready_at)).min(interval).max(1e-9);
                cpu.push((pod, (busy / (slots * since)).min(1.0)));
            }
        }
        let n = self.sc.catalog.tenants.len();
        let mut scrape = Scrape {
            at: now_s,
            cpu,
            in_service: vec![0.0; n],
            backlog: (0..n).map(|t| self.queued[t] + self.retrying[t]).collect(),
            arrival_rate: vec![0.0; n],
            mean_service: vec![0.0; n],
        };
        for t in 0..n {
            self.touch_tenant_busy(t);
            scrape.in_service[t] = (self.busy_area[t] - self.busy_at_scrape[t]) / (interval * 1e6);
            self.busy_at_scrape[t] = self.busy_area[t];
            scrape.arrival_rate[t] =
                (self.arrivals[t] - self.arrivals_at_scrape[t]) as f64 / interval;
            self.arrivals_at_scrape[t] = self.arrivals[t];
            let (sum0, count0) = self.service_at_scrape[t];
            let count = self.service_count[t] - count0;
            scrape.mean_service[t] = if count > 0 {
                (self.service_sum[t] - sum0) / count as f64
            } else {
                0.0
            };
            self.service_at_scrape[t] = (self.service_sum[t], self.service_count[t]);
        }
        self.last_scrape = scrape;
        self.push(self.now + us(period), Kind::Scrape);
    }

    fn pod_views(&self) -> Vec<PodView> {
        let now_s = secs(self.now);
        self.pods
            .iter()
            .filter(|p| p.phase != PodPhase::Gone)
            .map(|p| PodView {
                ready: p.phase == PodPhase::Ready,
                starting: p.phase == PodPhase::Starting,
                draining: p.phase == PodPhase::Draining,
                started_seconds_ago: now_s - secs(p.created),
                ready_seconds_ago: if p.phase == PodPhase::Starting {
                    0.0
                } else {
                    now_s - secs(p.ready_at)
                },
            })
            .collect()
    }

    fn on_sync(&mut self) {
        let (_, period) = self.autoscaler.periods(&self.sc.control);
        let now_s = secs(self.now);
        let views = self.pod_views();
        let cpu_by_view: Vec<Option<f64>> = {
            let alive: Vec<usize> = (0..self.pods.len())
                .filter(|p| self.pods[*p].phase != PodPhase::Gone)
                .collect();
            alive
                .iter()
                .map(|p| {
                    self.last_scrape
                        .cpu
                        .iter()
                        .find(|(q, _)| q == p)
                        .map(|(_, c)| *c)
                })
                .collect()
        };
        let current = self.spec_replicas;
        let decision = self.autoscaler.decide(
            now_s,
            current,
            &self.sc.catalog,
            &self.last_scrape,
            &views,
            &cpu_by_view,
            self.record.then_some(&mut self.decisions),
        );
        if let Some(desired) = decision {
            if desired > current
                && self.first_scale_up.is_none()
                && let Some(onset) = self.sc.spike_onset.filter(|o| now_s >= *o)
            {
                self.first_scale_up = Some(now_s - onset);
            }
            if desired != current {
                self.scale_to(desired);
            }
        }
        self.push(self.now + us(period), Kind::Sync);
    }

    /// Once a second: relief tracking, chart bins, the share window.
    fn on_observe(&mut self) {
        let now_s = secs(self.now);
        if let Some(onset) = self
            .sc
            .spike_onset
            .filter(|o| now_s >= *o && self.relief.is_none())
        {
            let backlog: f64 = self
                .spiking_tenants
                .iter()
                .map(|t| f64::from(self.queued[*t] + self.retrying[*t]))
                .sum::<f64>()
                / self.spiking_tenants.len().max(1) as f64;
            if backlog > RELIEF_TARGET {
                self.relief_candidate = None;
            } else {
                let since = *self.relief_candidate.get_or_insert(now_s);
                if now_s - since >= RELIEF_HOLD_SECONDS {
                    self.relief = Some(since - onset);
                }
            }
        }
        // Chart bin sample.
        self.bin_replicas += f64::from(self.alive);
        self.bin_samples += 1;
        for (c, q) in self.bin_queue.iter_mut().enumerate() {
            let members = self.sc.traffic.iter().filter(|t| t.class == c);
            let (sum, n) = members.fold((0u64, 0u32), |(s, n), t| {
                (
                    s + u64::from(self.queued[t.tenant] + self.retrying[t.tenant]),
                    n + 1,
                )
            });
            *q += sum as f64 / f64::from(n.max(1));
        }
        if now_s > 0.0 && (now_s % self.series.bin_seconds) < 1e-9 {
            self.close_bin();
        }
        if let Some(p) = self
            .progress
            .filter(|_| self.now.is_multiple_of(600_000_000))
        {
            p(now_s / self.sc.duration);
        }
        if secs(self.now - self.share_window_start) >= SHARE_WINDOW_SECONDS {
            self.close_share_window();
        }
        if self.now + 1_000_000 <= self.end {
            self.push(self.now + 1_000_000, Kind::Observe);
        }
    }

    fn close_bin(&mut self) {
        let n = f64::from(self.bin_samples.max(1));
        self.series.replicas.push(self.bin_replicas / n);
        for c in 0..self.bin_queue.len() {
            self.series.queue_depth[c].push(self.bin_queue[c] / n);
            self.series.p99_ms[c].push(self.bin_hist[c].quantile(0.99));
            self.bin_hist[c] = Histogram::coarse();
            self.bin_queue[c] = 0.0;
        }
        self.bin_replicas = 0.0;
        self.bin_samples = 0;
    }

    fn close_share_window(&mut self) {
        if self.live_slot_area > 0.0 {
            for t in 0..self.busy_area.len() {
                self.touch_tenant_busy(t);
                let busy = self.busy_area[t] - self.busy_at_share[t];
                self.max_share = self.max_share.max(busy / self.live_slot_area);
            }
        }
        self.busy_at_share.copy_from_slice(&self.busy_area);
        self.live_slot_area = 0.0;
        self.share_window_start = self.now;
    }

    fn finish(mut self) -> RunOutcome {
        if self.bin_samples > 0 {
            self.close_bin();
        }
        let duration = self.sc.duration;
        let pod_hours = self.alive_area / 1e6 / 3600.0;
        let price = self
            .sc
            .model
            .pod_hour_price
            .unwrap_or(self.sc.catalog.cost.pod_hour);
        let in_system: u64 = (0..self.queued.len())
            .map(|t| u64::from(self.queued[t] + self.in_service[t] + self.retrying[t]))
            .sum();
        let breach_fraction = self.sc.model.breach_fraction;
        let classes = self
            .sc
            .classes
            .iter()
            .zip(&self.classes)
            .zip(&self.minutes)
            .map(|((class, s), m)| ClassReport {
                name: class.name.clone(),
                spiking: class.spiking,
                requests: s.requests,
                served: s.served,
                rejected_429: s.rejected,
                p50_ms: s.latency.quantile(0.50),
                p95_ms: s.latency.quantile(0.95),
                p99_ms: s.latency.quantile(0.99),
                pre_spike_p99_ms: s.pre_spike.quantile(0.99),
                over_slo: s.over_slo,
                sla_breach_minutes: m.breaches(breach_fraction),
            })
            .collect();
        RunOutcome {
            report: PolicyReport {
                name: self.policy_name,
                first_scale_up_s: self.first_scale_up,
                relief_s: self.relief,
                peak_replicas: self.peak_replicas,
                mean_replicas: self.alive_area / 1e6 / duration,
                pod_hours,
                cost: pod_hours * price,
                max_tenant_share: self.max_share,
                classes,
                in_system_at_end: in_system,
            },
            series: self.series,
            decisions: self.decisions,
            requests: self.arrivals.iter().sum(),
        }
    }
}

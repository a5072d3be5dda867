//! Routing a tenant's requests for cache locality, with bounded loads and slow start.
//!
//! Each tenant ranks the pods by rendezvous hashing (highest random weight): the ranking only
//! changes for a tenant when a pod it ranks above the others comes or goes, so a tenant stays
//! on the pods that already hold its data. A request goes to the first pod in its tenant's
//! ranking whose load is under `c ×` its fair share of the total load (consistent hashing with
//! bounded loads, Mirrokni et al.); a pod that just became ready has its fair share scaled by a
//! weight that ramps from `min_weight` to 1 over the warm-up window (Envoy's slow start), and a
//! draining pod takes nothing.

/// 64-bit FNV-1a, then a splitmix64 finalizer: a stable hash for ids.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// `x.ceil()` for `x >= 0` without a libm call (baseline x86-64 has no rounding instruction).
fn ceil_positive(x: f64) -> f64 {
    let t = x as u64 as f64;
    if t < x { t + 1.0 } else { t }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A pod's routing state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PodState {
    /// Ready since `since` (seconds); ramping until `since + warmup`.
    Ready { since: f64 },
    /// Takes no new requests.
    Draining,
    /// Gone; its index goes to the next pod added.
    Removed,
}

#[derive(Debug, Clone)]
struct Pod {
    key: u64,
    state: PodState,
    load: u32,
}

/// Router settings. Defaults: `c` 1.25, warm-up 60 s, minimum weight 0.1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterConfig {
    /// Load bound factor: no pod above `c ×` its share of the load.
    pub c: f64,
    pub warmup_seconds: f64,
    /// Weight of a pod that has just become ready.
    pub min_weight: f64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            c: 1.25,
            warmup_seconds: 60.0,
            min_weight: 0.1,
        }
    }
}

/// Routes requests of tenants (dense indices with stable keys) to pods (stable keys).
#[derive(Debug, Clone)]
pub struct Router {
    config: RouterConfig,
    /// As many entries as pods were ever at once in rotation or draining with requests: a
    /// removed pod's index is reused, so pods coming and going (ejections, re-admissions)
    /// do not grow it.
    pods: Vec<Pod>,
    /// Indices of removed pods, for the next pods added.
    free: Vec<usize>,
    /// Pods in the `Ready` state.
    ready: usize,
    tenant_keys: Vec<u64>,
    /// Per tenant, pod indices best first; rebuilt lazily after the pod set changes.
    rankings: Vec<Vec<u32>>,
    ranked_generation: Vec<u64>,
    generation: u64,
    total_load: u64,
    /// No pod ramps after this time: every weight is 1.
    warm_after: f64,
    /// Scratch space for slow-start weights (no allocation per request).
    weights: Vec<f64>,
}

impl Router {
    /// A router for tenants with these keys (e.g. `stable_hash(tenant_id)`).
    pub fn new(config: RouterConfig, tenant_keys: Vec<u64>) -> Self {
        let n = tenant_keys.len();
        Self {
            config,
            pods: Vec::new(),
            free: Vec::new(),
            ready: 0,
            tenant_keys,
            rankings: vec![Vec::new(); n],
            ranked_generation: vec![u64::MAX; n],
            generation: 0,
            total_load: 0,
            warm_after: f64::NEG_INFINITY,
            weights: Vec::new(),
        }
    }

    /// Adds a pod that became ready at `now`; returns its index (a removed pod's, if any).
    pub fn add_pod(&mut self, key: u64, now: f64) -> usize {
        let pod = Pod {
            key,
            state: PodState::Ready { since: now },
            load: 0,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.pods[index] = pod;
                index
            }
            None => {
                self.pods.push(pod);
                self.pods.len() - 1
            }
        };
        self.ready += 1;
        self.warm_after = self.warm_after.max(now + self.config.warmup_seconds);
        self.generation += 1;
        index
    }

    /// Stops sending to pod `index` (its load still counts until released).
    pub fn drain(&mut self, index: usize) {
        self.leave_ready(index);
        self.pods[index].state = PodState::Draining;
        self.generation += 1;
    }

    /// Forgets pod `index` (drained and idle); indices of other pods do not change, and a pod
    /// added later may get this one: no request may hold it any more.
    pub fn remove(&mut self, index: usize) {
        if self.pods[index].state == PodState::Removed {
            return;
        }
        self.leave_ready(index);
        let pod = &mut self.pods[index];
        self.total_load -= u64::from(pod.load);
        pod.load = 0;
        pod.state = PodState::Removed;
        self.free.push(index);
        self.generation += 1;
    }

    fn leave_ready(&mut self, index: usize) {
        if matches!(self.pods[index].state, PodState::Ready { .. }) {
            self.ready -= 1;
        }
    }

    /// Slow-start weight of pod `index` at `now`, in [min_weight, 1]; 0 when draining.
    pub fn weight(&self, index: usize, now: f64) -> f64 {
        match self.pods[index].state {
            PodState::Draining | PodState::Removed => 0.0,
            PodState::Ready { since } if self.config.warmup_seconds > 0.0 => {
                ((now - since) / self.config.warmup_seconds).clamp(self.config.min_weight, 1.0)
            }
            PodState::Ready { .. } => 1.0,
        }
    }

    fn rank(&mut self, tenant: usize) {
        if self.ranked_generation[tenant] == self.generation {
            return;
        }
        let tk = self.tenant_keys[tenant];
        let pods = &self.pods;
        let ranking = &mut self.rankings[tenant];
        ranking.clear();
        ranking.extend(
            (0..pods.len() as u32)
                .filter(|i| matches!(pods[*i as usize].state, PodState::Ready { .. })),
        );
        ranking.sort_unstable_by_key(|i| std::cmp::Reverse(mix(tk ^ pods[*i as usize].key)));
        self.ranked_generation[tenant] = self.generation;
    }

    /// Picks a pod for a request of `tenant` at `now` and counts it in that pod's load.
    /// `None` when no pod takes requests.
    pub fn route(&mut self, tenant: usize, now: f64) -> Option<usize> {
        self.rank(tenant);
        let ranking = &self.rankings[tenant];
        if ranking.is_empty() {
            return None;
        }
        let load_after = (self.total_load + 1) as f64;
        if now >= self.warm_after {
            // Every pod at full weight: one bound for all.
            let bound = ceil_positive(self.config.c * load_after / ranking.len() as f64) as u32;
            let pick = ranking
                .iter()
                .map(|i| *i as usize)
                .find(|i| self.pods[*i].load < bound);
            let pick = pick.unwrap_or_else(|| {
                ranking
                    .iter()
                    .map(|i| *i as usize)
                    .min_by_key(|i| self.pods[*i].load)
                    .expect("non-empty")
            });
            return Some(self.take(pick));
        }
        let mut weights = std::mem::take(&mut self.weights);
        weights.clear();
        weights.extend(ranking.iter().map(|i| self.weight(*i as usize, now)));
        let total_weight: f64 = weights.iter().sum();
        let mut least: Option<(usize, f64)> = None;
        let mut pick = None;
        for (&i, w) in ranking.iter().zip(&weights) {
            let i = i as usize;
            let bound = ceil_positive(self.config.c * load_after * w / total_weight);
            let load = f64::from(self.pods[i].load);
            if load < bound {
                pick = Some(i);
                break;
            }
            let fill = load / bound.max(1.0);
            if least.is_none_or(|(_, f)| fill < f) {
                least = Some((i, fill));
            }
        }
        self.weights = weights;
        pick.or(least.map(|(i, _)| i)).map(|i| self.take(i))
    }

    fn take(&mut self, index: usize) -> usize {
        self.pods[index].load += 1;
        self.total_load += 1;
        index
    }

    /// A request routed to pod `index` finished (or was refused there).
    pub fn release(&mut self, index: usize) {
        let pod = &mut self.pods[index];
        debug_assert!(pod.load > 0);
        pod.load = pod.load.saturating_sub(1);
        self.total_load = self.total_load.saturating_sub(1);
    }

    /// Outstanding requests on pod `index`.
    pub fn load(&self, index: usize) -> u32 {
        self.pods[index].load
    }

    /// Pods taking requests.
    pub fn ready_pods(&self) -> usize {
        self.ready
    }

    /// The tenant's pod ranking, best first (draining and removed pods excluded).
    pub fn ranking(&mut self, tenant: usize) -> &[u32] {
        self.rank(tenant);
        &self.rankings[tenant]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A pod (of four) enters rotation, if it is out.
        Admit(u64),
        /// A pod leaves rotation (ejected, unreachable, draining), if it is in.
        Eject(u64),
        Route(usize),
        /// The `n`th outstanding request (modulo their number) finishes.
        Release(usize),
        Wait(f64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4u64).prop_map(Op::Admit),
            (0..4u64).prop_map(Op::Eject),
            (0..8usize).prop_map(Op::Route),
            any::<usize>().prop_map(Op::Release),
            (0.0..30.0f64).prop_map(Op::Wait),
        ]
    }

    /// Two routers through one sequence of pods coming and going: one used as the gateway
    /// used it before (a left pod's entry is kept forever), one whose left pods are removed
    /// once idle, as the gateway's pool does now.
    struct Pair {
        kept: Router,
        reused: Router,
        /// Per pod key, its index in each while it is in rotation.
        in_rotation: Vec<Option<(usize, usize)>>,
        outstanding: Vec<(usize, usize)>,
    }

    impl Pair {
        /// Removes `index` from the reusing router if it is out of rotation and idle.
        fn remove_if_idle(&mut self, index: usize) {
            let in_rotation = self
                .in_rotation
                .iter()
                .any(|r| r.is_some_and(|r| r.1 == index));
            if !in_rotation && self.reused.load(index) == 0 {
                self.reused.remove(index);
            }
        }
    }

    proptest! {
        #[test]
        fn pods_coming_and_going_leave_no_entries_behind_and_route_alike(
            ops in prop::collection::vec(op(), 1..400),
        ) {
            let config = RouterConfig { warmup_seconds: 20.0, ..RouterConfig::default() };
            let tenants: Vec<u64> = (0..8).map(|t| stable_hash(&[t])).collect();
            let mut p = Pair {
                kept: Router::new(config, tenants.clone()),
                reused: Router::new(config, tenants),
                in_rotation: vec![None; 4],
                outstanding: Vec::new(),
            };
            let mut now = 0.0;
            let mut most_outstanding = 0;
            for op in ops {
                match op {
                    Op::Admit(pod) if p.in_rotation[pod as usize].is_none() => {
                        let key = stable_hash(&pod.to_le_bytes());
                        let kept = p.kept.add_pod(key, now);
                        let reused = p.reused.add_pod(key, now);
                        p.in_rotation[pod as usize] = Some((kept, reused));
                    }
                    Op::Eject(pod) => {
                        if let Some((kept, reused)) = p.in_rotation[pod as usize].take() {
                            p.kept.drain(kept);
                            p.reused.drain(reused);
                            p.remove_if_idle(reused);
                        }
                    }
                    Op::Route(tenant) => {
                        let kept = p.kept.route(tenant, now);
                        let reused = p.reused.route(tenant, now);
                        prop_assert_eq!(
                            kept.map(|i| p.kept.pods[i].key),
                            reused.map(|i| p.reused.pods[i].key),
                            "tenant {} at {}", tenant, now
                        );
                        if let (Some(kept), Some(reused)) = (kept, reused) {
                            p.outstanding.push((kept, reused));
                        }
                        most_outstanding = most_outstanding.max(p.outstanding.len());
                    }
                    Op::Release(n) if !p.outstanding.is_empty() => {
                        let (kept, reused) = p.outstanding.swap_remove(n % p.outstanding.len());
                        p.kept.release(kept);
                        p.reused.release(reused);
                        p.remove_if_idle(reused);
                    }
                    Op::Wait(seconds) => now += seconds,
                    _ => {}
                }
                prop_assert_eq!(p.kept.ready_pods(), p.reused.ready_pods());
                prop_assert_eq!(p.kept.total_load, p.reused.total_load);
                // Each entry is a pod in rotation or one a request still holds.
                let bound = 4 + most_outstanding;
                prop_assert!(
                    p.reused.pods.len() <= bound,
                    "{} entries for 4 pods and {} requests", p.reused.pods.len(), most_outstanding
                );
            }
        }
    }
}

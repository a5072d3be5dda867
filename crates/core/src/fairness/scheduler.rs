//! Weighted fair scheduling inside one pod.
//!
//! One bounded FIFO per tenant and a pod-wide budget of worker slots. Tenants with waiting
//! work take turns in deficit round robin with a quantum of `weight` requests per turn, so over
//! a busy period each gets slots in proportion to its weight; a tenant whose queue was empty
//! joins at the head of the round, so light tenants wait for one slot, not for a round. A tenant already holding its
//! `cap` of slots is skipped while another tenant waits; when only capped tenants wait, they are
//! served anyway. The last `slots / 8` free slots are headroom for sparse tenants, those with
//! nothing else waiting: a tenant arriving in a neighbour's burst starts at once instead of
//! waiting up to a whole service time for a slot to free (a burst fills every slot at the
//! same moment, so they also free together). It costs backlogged tenants at most one slot in
//! eight, only while the pod is full — until the autoscaler adds pods. (A quarter protected
//! the demo's light tenants a little more, but in the simulator, where pods take 30–90 s to
//! start, the lost capacity made the noisy-neighbor scenario breach for steady tenants too.)

use crate::catalog::Catalog;
use std::collections::VecDeque;

/// A tenant's place in the scheduler (dense index, as in the catalog).
pub type TenantIndex = usize;

#[derive(Debug, Clone)]
struct TenantQueue<T> {
    items: VecDeque<T>,
    weight: u32,
    /// Requests this tenant may still start in its current turn.
    deficit: u32,
    in_service: u32,
    /// Slots the tenant may hold while others wait.
    cap: u32,
    /// Most requests that may wait.
    bound: u32,
    /// In the active ring.
    active: bool,
}

/// Per-tenant settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantSlot {
    /// Weighted-fair-queuing weight (tier weight), ≥ 1.
    pub weight: u32,
    /// Share of the pod's slots the tenant may hold while others wait, in (0, 1].
    pub max_share: f64,
    /// Bound of the tenant's queue.
    pub queue_bound: u32,
}

impl TenantSlot {
    /// Every catalog tenant's settings, in catalog order: tier weight, maxShare and the pool's
    /// queue bound.
    pub fn for_catalog(catalog: &Catalog) -> Vec<TenantSlot> {
        catalog
            .tenants
            .iter()
            .map(|t| TenantSlot {
                weight: t.weight,
                max_share: t.max_share,
                queue_bound: catalog.pool.queue_per_tenant,
            })
            .collect()
    }
}

/// A full queue: the item comes back to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull<T>(pub T);

/// The scheduler of one pod.
#[derive(Debug, Clone)]
pub struct FairScheduler<T> {
    queues: Vec<TenantQueue<T>>,
    ring: VecDeque<TenantIndex>,
    /// The first `fresh` tenants of the ring became active since their last turn.
    fresh: usize,
    slots: u32,
    /// Free slots that only tenants with nothing else waiting may take.
    headroom: u32,
    busy: u32,
    queued: usize,
}

impl<T> FairScheduler<T> {
    /// A scheduler with `slots` workers for the tenants described by `tenants`.
    pub fn new(slots: u32, tenants: &[TenantSlot]) -> Self {
        let queues = tenants
            .iter()
            .map(|t| TenantQueue {
                items: VecDeque::new(),
                weight: t.weight.max(1),
                deficit: 0,
                in_service: 0,
                cap: ((t.max_share * f64::from(slots)).floor() as u32).max(1),
                bound: t.queue_bound,
                active: false,
            })
            .collect();
        Self {
            queues,
            ring: VecDeque::new(),
            fresh: 0,
            slots: slots.max(1),
            headroom: slots / 8,
            busy: 0,
            queued: 0,
        }
    }

    /// New settings for every tenant, by index (a catalog reload): `tenants` may add tenants
    /// at the end, never drop any. Queued items stay; a lower bound refuses only new ones.
    pub fn set_tenants(&mut self, tenants: &[TenantSlot]) {
        debug_assert!(
            tenants.len() >= self.queues.len(),
            "tenants are never dropped"
        );
        let slots = self.slots;
        let cap = |t: &TenantSlot| ((t.max_share * f64::from(slots)).floor() as u32).max(1);
        for (q, t) in self.queues.iter_mut().zip(tenants) {
            q.weight = t.weight.max(1);
            // A turn in progress ends no later than the new weight allows.
            q.deficit = q.deficit.min(q.weight);
            q.cap = cap(t);
            q.bound = t.queue_bound;
        }
        for t in &tenants[self.queues.len().min(tenants.len())..] {
            self.queues.push(TenantQueue {
                items: VecDeque::new(),
                weight: t.weight.max(1),
                deficit: 0,
                in_service: 0,
                cap: cap(t),
                bound: t.queue_bound,
                active: false,
            });
        }
    }

    /// Queues `item` for `tenant`, or hands it back if the tenant's queue is full.
    pub fn enqueue(&mut self, tenant: TenantIndex, item: T) -> Result<(), QueueFull<T>> {
        let q = &mut self.queues[tenant];
        if q.items.len() >= q.bound as usize {
            return Err(QueueFull(item));
        }
        q.items.push_back(item);
        self.queued += 1;
        if !q.active {
            q.active = true;
            q.deficit = 0;
            // A tenant that had nothing waiting goes ahead of the backlogged ones, after other
            // newcomers (fq_codel's "new flows"): a sparse tenant's request starts at the next
            // free slot instead of after a whole round of quanta. After its first turn it
            // takes turns like everyone else.
            self.ring.insert(self.fresh, tenant);
            self.fresh += 1;
        }
        Ok(())
    }

    /// Starts the next request if a slot is free: the tenant and its item.
    #[inline]
    pub fn start_next(&mut self) -> Option<(TenantIndex, T)> {
        if self.busy >= self.slots || self.queued == 0 {
            return None;
        }
        self.pick()
    }

    /// [`start_next`](Self::start_next) once a slot is free and work waits.
    fn pick(&mut self) -> Option<(TenantIndex, T)> {
        if self.slots - self.busy <= self.headroom {
            // Only a sparse tenant may take the headroom: one with nothing else waiting (a
            // tenant with a backlog is the burst the headroom is kept from). The round keeps
            // its order.
            let t = self
                .ring
                .iter()
                .copied()
                .find(|t| self.queues[*t].items.len() == 1)?;
            return Some(self.take(t));
        }
        // At most one full lap looking for a tenant under its cap; else serve the head anyway.
        let mut fallback = None;
        for _ in 0..self.ring.len() {
            let t = *self.ring.front()?;
            let q = &mut self.queues[t];
            if q.in_service >= q.cap {
                fallback.get_or_insert(t);
                self.rotate();
                continue;
            }
            return Some(self.take(t));
        }
        fallback.map(|t| self.take(t))
    }

    /// Serves the head of `tenant`'s queue and advances its turn.
    fn take(&mut self, tenant: TenantIndex) -> (TenantIndex, T) {
        let q = &mut self.queues[tenant];
        if q.deficit == 0 {
            q.deficit = q.weight;
        }
        let item = q.items.pop_front().expect("active tenants have work");
        q.deficit -= 1;
        q.in_service += 1;
        self.busy += 1;
        self.queued -= 1;
        let at_front = self.ring.front() == Some(&tenant);
        if q.items.is_empty() {
            q.active = false;
            q.deficit = 0;
            if let Some(pos) = self.ring.iter().position(|t| *t == tenant) {
                self.ring.remove(pos);
                if pos < self.fresh {
                    self.fresh -= 1;
                }
            }
        } else if q.deficit == 0 && at_front {
            self.rotate();
        }
        (tenant, item)
    }

    /// The tenant at the head of the round goes to its end (no longer a newcomer).
    fn rotate(&mut self) {
        self.ring.rotate_left(1);
        self.fresh = self.fresh.saturating_sub(1);
    }

    /// A request of `tenant` finished: its slot is free.
    pub fn complete(&mut self, tenant: TenantIndex) {
        let q = &mut self.queues[tenant];
        debug_assert!(q.in_service > 0 && self.busy > 0);
        q.in_service = q.in_service.saturating_sub(1);
        self.busy = self.busy.saturating_sub(1);
    }

    /// Requests waiting, all tenants.
    pub fn queued(&self) -> usize {
        self.queued
    }
    /// Requests waiting for `tenant`.
    /// Retry-After (seconds) for a request refused by `tenant`'s full queue: the time that
    /// queue takes to drain at its own current rate, one request per `mean_service_s` for each
    /// slot the tenant holds (at least one).
    pub fn retry_after(&self, tenant: TenantIndex, mean_service_s: f64) -> f64 {
        let q = &self.queues[tenant];
        let rate = f64::from(q.in_service.max(1)) / mean_service_s.max(1e-3);
        (q.items.len().max(1) as f64 / rate).max(0.001)
    }

    pub fn queued_for(&self, tenant: TenantIndex) -> usize {
        self.queues[tenant].items.len()
    }
    /// Requests of `tenant` being served.
    pub fn in_service_for(&self, tenant: TenantIndex) -> u32 {
        self.queues[tenant].in_service
    }
    /// Busy slots.
    pub fn busy(&self) -> u32 {
        self.busy
    }
    /// All slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }
    /// Nothing waiting and nothing in service.
    pub fn is_idle(&self) -> bool {
        self.queued == 0 && self.busy == 0
    }
    /// Removes every waiting item (e.g. a pod that dies), oldest first per tenant.
    pub fn drain_queued(&mut self) -> Vec<(TenantIndex, T)> {
        let mut out = Vec::with_capacity(self.queued);
        for (t, q) in self.queues.iter_mut().enumerate() {
            out.extend(q.items.drain(..).map(|i| (t, i)));
            q.active = false;
            q.deficit = 0;
        }
        self.ring.clear();
        self.fresh = 0;
        self.queued = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(weights: &[u32], max_share: f64) -> Vec<TenantSlot> {
        weights
            .iter()
            .map(|w| TenantSlot {
                weight: *w,
                max_share,
                queue_bound: 1000,
            })
            .collect()
    }

    #[test]
    fn retry_after_is_the_time_the_tenants_queue_takes_to_drain() {
        let mut s = FairScheduler::new(2, &tenants(&[1, 1], 1.0));
        for i in 0..6 {
            s.enqueue(0, i).unwrap();
        }
        while s.start_next().is_some() {}
        // Tenant 0 holds both slots with 4 waiting: 4 / (2 per 0.2 s) = 0.4 s.
        assert!((s.retry_after(0, 0.2) - 0.4).abs() < 1e-9);
        // Tenant 1 holds no slot and waits for none: one request's time at one slot.
        assert!((s.retry_after(1, 0.2) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn new_settings_apply_to_waiting_work_and_new_tenants_join() {
        let mut s = FairScheduler::new(1, &tenants(&[1], 1.0));
        for i in 0..4 {
            s.enqueue(0, i).unwrap();
        }
        let mut changed = tenants(&[1, 2], 1.0);
        changed[0].queue_bound = 2;
        s.set_tenants(&changed);
        assert_eq!(s.queued_for(0), 4, "what waits stays");
        assert_eq!(s.enqueue(0, 9), Err(QueueFull(9)), "the lower bound holds");
        s.enqueue(1, 100).unwrap();
        let mut order = vec![];
        while let Some((t, _)) = s.start_next() {
            order.push(t);
            s.complete(t);
        }
        assert_eq!(
            order,
            vec![0, 1, 0, 0, 0],
            "the new tenant takes turns at once"
        );
    }

    #[test]
    fn bounded_queue_hands_the_item_back() {
        let mut s = FairScheduler::new(
            1,
            &[TenantSlot {
                weight: 1,
                max_share: 1.0,
                queue_bound: 2,
            }],
        );
        assert!(s.enqueue(0, 1).is_ok());
        assert!(s.enqueue(0, 2).is_ok());
        assert_eq!(s.enqueue(0, 3), Err(QueueFull(3)));
        assert_eq!(s.queued(), 2);
    }

    #[test]
    fn fifo_within_a_tenant() {
        let mut s = FairScheduler::new(1, &tenants(&[1], 1.0));
        for i in 0..5 {
            s.enqueue(0, i).unwrap();
        }
        let mut got = vec![];
        while let Some((_, i)) = s.start_next() {
            got.push(i);
            s.complete(0);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn slots_are_a_hard_budget() {
        let mut s = FairScheduler::new(2, &tenants(&[1, 1], 1.0));
        for i in 0..4 {
            s.enqueue(i % 2, i).unwrap();
        }
        assert!(s.start_next().is_some());
        assert!(s.start_next().is_some());
        assert_eq!(s.start_next(), None, "both slots busy");
        s.complete(0);
        assert!(s.start_next().is_some());
    }

    #[test]
    fn capped_tenant_yields_while_others_wait_but_work_conserves() {
        // 4 slots (no headroom below 8), max share 0.25 → one slot each while the other waits.
        let mut s = FairScheduler::new(4, &tenants(&[1, 1], 0.25));
        for i in 0..10 {
            s.enqueue(0, i).unwrap();
        }
        s.enqueue(1, 100).unwrap();
        let (a, _) = s.start_next().unwrap();
        let (b, _) = s.start_next().unwrap();
        assert_eq!(
            (a, b),
            (0, 1),
            "tenant 1 is not starved by tenant 0's backlog"
        );
        // Only tenant 0 waits now: it may use the idle slots.
        assert_eq!(s.start_next().map(|x| x.0), Some(0));
        assert_eq!(s.start_next().map(|x| x.0), Some(0));
        assert_eq!(s.busy(), 4);
    }

    #[test]
    fn a_tenant_that_was_idle_starts_before_the_backlogged_round() {
        let mut s = FairScheduler::new(1, &tenants(&[3, 3, 1], 1.0));
        for i in 0..10 {
            s.enqueue(0, i).unwrap();
            s.enqueue(1, 10 + i).unwrap();
        }
        let serve = |s: &mut FairScheduler<i32>, n: usize| -> Vec<usize> {
            (0..n)
                .map(|_| {
                    let (t, _) = s.start_next().unwrap();
                    s.complete(t);
                    t
                })
                .collect()
        };
        // Both backlogged tenants have had a whole turn, and tenant 0 is into its second.
        assert_eq!(serve(&mut s, 7), vec![0, 0, 0, 1, 1, 1, 0]);
        s.enqueue(2, 100).unwrap();
        assert_eq!(
            s.start_next(),
            Some((2, 100)),
            "the newcomer does not wait a round"
        );
        s.complete(2);
        // Tenant 0 resumes its turn, then tenant 1 has its.
        assert_eq!(serve(&mut s, 5), vec![0, 0, 1, 1, 1]);
    }

    #[test]
    fn a_burst_leaves_the_headroom_to_tenants_with_nothing_else_waiting() {
        // 8 slots (headroom 1), max share 0.25 → a cap of 2 slots while others wait.
        let mut s = FairScheduler::new(8, &tenants(&[1, 1, 1], 0.25));
        for i in 0..20 {
            s.enqueue(0, i).unwrap();
        }
        while s.start_next().is_some() {}
        assert_eq!(s.busy(), 7, "the burst fills all but the headroom");
        s.enqueue(1, 100).unwrap();
        assert_eq!(s.start_next(), Some((1, 100)), "a newcomer starts at once");
        s.enqueue(1, 101).unwrap();
        s.enqueue(2, 200).unwrap();
        assert_eq!(s.start_next(), None, "the pod is full");
        // One slot frees at a time: each is headroom, and goes to a sparse tenant (even one
        // that holds a slot), not to the backlogged burst.
        s.complete(0);
        assert_eq!(s.start_next(), Some((1, 101)));
        s.complete(0);
        assert_eq!(s.start_next(), Some((2, 200)));
        s.complete(1);
        assert_eq!(
            s.start_next(),
            None,
            "tenant 0 has a backlog: no headroom for it"
        );
        s.complete(1);
        assert_eq!(s.start_next().map(|x| x.0), Some(0));
        assert_eq!(s.start_next(), None);
        assert_eq!(s.busy(), 7);
    }
}

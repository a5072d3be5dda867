//! The event queue: a timing wheel of 1 ms slots over the next ~4 s (where almost every event
//! of this model falls: arrivals, completions, retries), and a 4-ary heap for the rest. Pops
//! are in key order: (time in µs, sequence number) packed into a `u64`.

const SLOT_MICROS: u64 = 1000;
/// Bits of a key below the time.
const SHIFT: u32 = 20;
const SLOTS: usize = 4096;

/// Pending events ordered by `key`; keys are unique (the sequence number breaks ties).
#[derive(Debug, Clone)]
pub struct EventQueue<T> {
    slots: Vec<Vec<(u64, T)>>,
    /// Absolute slot number (time / 1 ms) of the earliest possible event.
    cursor: u64,
    in_wheel: usize,
    far: Heap<T>,
}

impl<T: Copy> EventQueue<T> {
    pub fn new() -> Self {
        Self {
            slots: vec![Vec::new(); SLOTS],
            cursor: 0,
            in_wheel: 0,
            far: Heap::new(),
        }
    }

    fn slot_of(key: u64) -> u64 {
        (key >> SHIFT) / SLOT_MICROS
    }

    pub fn push(&mut self, key: u64, item: T) {
        let slot = Self::slot_of(key).max(self.cursor);
        if slot < self.cursor + SLOTS as u64 {
            self.slots[slot as usize % SLOTS].push((key, item));
            self.in_wheel += 1;
        } else {
            self.far.push(key, item);
        }
    }

    #[cfg(test)]
    pub fn pop(&mut self) -> Option<(u64, T)> {
        self.pop_before(u64::MAX)
    }

    /// Removes and returns the earliest event if its key is below `limit`.
    pub fn pop_before(&mut self, limit: u64) -> Option<(u64, T)> {
        let limit_slot = Self::slot_of(limit);
        loop {
            let slot = &mut self.slots[self.cursor as usize % SLOTS];
            if !slot.is_empty() {
                let mut best = 0;
                for i in 1..slot.len() {
                    if slot[i].0 < slot[best].0 {
                        best = i;
                    }
                }
                if slot[best].0 >= limit {
                    return None;
                }
                self.in_wheel -= 1;
                return Some(slot.swap_remove(best));
            }
            if self.cursor >= limit_slot {
                return None;
            }
            if self.in_wheel == 0 {
                // Nothing near: jump towards the far heap's earliest event.
                let (key, _) = self.far.peek()?;
                self.cursor = self.cursor.max(Self::slot_of(key).min(limit_slot));
            } else {
                self.cursor += 1;
            }
            while self.far.min_slot < self.cursor + SLOTS as u64 {
                let (key, item) = self
                    .far
                    .pop()
                    .expect("min_slot is finite only when non-empty");
                self.push(key, item);
            }
        }
    }
}

/// A 4-ary min-heap: shallower than a binary heap, so fewer cache-missing moves.
#[derive(Debug, Clone)]
struct Heap<T> {
    items: Vec<(u64, T)>,
    /// Wheel slot of the earliest item (`u64::MAX` when empty): the wheel's refill check.
    min_slot: u64,
}

impl<T: Copy> Heap<T> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            min_slot: u64::MAX,
        }
    }

    fn update_min_slot(&mut self) {
        self.min_slot = self
            .items
            .first()
            .map_or(u64::MAX, |(k, _)| (k >> SHIFT) / SLOT_MICROS);
    }

    fn peek(&self) -> Option<(u64, T)> {
        self.items.first().copied()
    }

    fn push(&mut self, key: u64, item: T) {
        self.items.push((key, item));
        let mut i = self.items.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 4;
            if self.items[parent].0 <= key {
                break;
            }
            self.items.swap(i, parent);
            i = parent;
        }
        self.update_min_slot();
    }

    fn pop(&mut self) -> Option<(u64, T)> {
        let last = self.items.pop()?;
        if self.items.is_empty() {
            self.min_slot = u64::MAX;
            return Some(last);
        }
        let top = std::mem::replace(&mut self.items[0], last);
        let n = self.items.len();
        let mut i = 0;
        loop {
            let first = 4 * i + 1;
            if first >= n {
                break;
            }
            let end = (first + 4).min(n);
            let mut best = first;
            for c in first + 1..end {
                if self.items[c].0 < self.items[best].0 {
                    best = c;
                }
            }
            if self.items[best].0 >= self.items[i].0 {
                break;
            }
            self.items.swap(i, best);
            i = best;
        }
        self.update_min_slot();
        Some(top)
    }
}

impl<T: Copy> Default for EventQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_key_order_near_and_far() {
        let mut q = EventQueue::new();
        let mut rng = crate::rng::Rng::new(3);
        // Times from 0 to ~20 s (wheel and far heap), as (µs << 64 | sequence).
        let mut keys: Vec<u64> = (0..5000u64)
            .map(|seq| ((rng.next_u64() % 20_000_000) << SHIFT) | seq)
            .collect();
        for k in &keys {
            q.push(*k, ());
        }
        keys.sort_unstable();
        let popped: Vec<u64> = std::iter::from_fn(|| q.pop().map(|(k, ())| k)).collect();
        assert_eq!(popped, keys);
    }

    #[test]
    fn interleaved_pushes_keep_order() {
        let mut q = EventQueue::new();
        let mut rng = crate::rng::Rng::new(9);
        let mut seq = 0u64;
        let push = |q: &mut EventQueue<()>, at: u64, seq: &mut u64| {
            *seq += 1;
            q.push((at << SHIFT) | *seq, ());
        };
        push(&mut q, 0, &mut seq);
        let mut last = 0u64;
        let mut popped = 0;
        while let Some((k, ())) = q.pop() {
            assert!(k > last, "out of order");
            last = k;
            popped += 1;
            let now = k >> SHIFT;
            if popped < 20_000 {
                for _ in 0..rng.below(3) {
                    push(&mut q, now + rng.next_u64() % 10_000_000, &mut seq);
                }
                push(&mut q, now + rng.next_u64() % 300_000, &mut seq);
            }
        }
        assert!(popped >= 20_000);
    }
}

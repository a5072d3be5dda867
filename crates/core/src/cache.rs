//! A pod's cache of tenant indexes: least-recently-used tenants are evicted to keep the total
//! under a memory budget. Loading a tenant on a miss is what routing for locality avoids.

/// The outcome of touching a tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Hit,
    /// Loaded now, evicting this many tenants.
    Miss {
        evicted: usize,
    },
    /// Larger than the whole budget: served without caching.
    TooLarge,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tenant: usize,
    bytes: u64,
    last_use: u64,
}

/// LRU by tenant under a byte budget. Tenants per pod are few, so a small vector beats a map.
#[derive(Debug, Clone)]
pub struct TenantCache {
    budget: u64,
    used: u64,
    clock: u64,
    entries: Vec<Entry>,
}

impl TenantCache {
    /// An empty cache of `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            used: 0,
            clock: 0,
            entries: Vec::new(),
        }
    }

    /// Uses `tenant`'s data (`bytes` large), loading it on a miss.
    pub fn access(&mut self, tenant: usize, bytes: u64) -> Access {
        self.clock += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.tenant == tenant) {
            e.last_use = self.clock;
            return Access::Hit;
        }
        if bytes > self.budget {
            return Access::TooLarge;
        }
        let mut evicted = 0;
        while self.used + bytes > self.budget {
            let (i, _) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_use)
                .expect("used > 0");
            self.used -= self.entries.swap_remove(i).bytes;
            evicted += 1;
        }
        self.entries.push(Entry {
            tenant,
            bytes,
            last_use: self.clock,
        });
        self.used += bytes;
        Access::Miss { evicted }
    }

    /// Forgets `tenant` (its data changed).
    pub fn remove(&mut self, tenant: usize) {
        if let Some(i) = self.entries.iter().position(|e| e.tenant == tenant) {
            self.used -= self.entries.swap_remove(i).bytes;
        }
    }

    /// Whether `tenant` is cached.
    pub fn contains(&self, tenant: usize) -> bool {
        self.entries.iter().any(|e| e.tenant == tenant)
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Tenants cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_to_fit() {
        let mut c = TenantCache::new(100);
        assert_eq!(c.access(1, 40), Access::Miss { evicted: 0 });
        assert_eq!(c.access(2, 40), Access::Miss { evicted: 0 });
        assert_eq!(c.access(1, 40), Access::Hit);
        assert_eq!(
            c.access(3, 40),
            Access::Miss { evicted: 1 },
            "2 was least recently used"
        );
        assert!(c.contains(1) && c.contains(3) && !c.contains(2));
        assert_eq!(c.used(), 80);
        assert_eq!(c.access(4, 101), Access::TooLarge);
        assert_eq!(c.access(5, 100), Access::Miss { evicted: 2 });
        assert_eq!(c.len(), 1);
        c.remove(5);
        assert!(c.is_empty() && c.used() == 0);
    }
}

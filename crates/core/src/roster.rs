//! The tenants a running process serves across catalog reloads, each at an index that never
//! changes while the process runs: a removed tenant keeps its index (its queued and running
//! requests still hold it), a new one is appended, and a tenant that comes back gets its old
//! index again. Per-tenant state kept in vectors (queues, counters, metric series) stays aligned
//! with the tenants whatever order the catalog lists them in.

use crate::catalog::{Catalog, Tenant};
use crate::fairness::scheduler::TenantSlot;
use std::collections::HashMap;

/// Every tenant a process has served since it started, by stable index.
#[derive(Debug, Clone)]
pub struct Roster {
    /// The tenant as the catalog that last listed it had it (tier indexes point into that
    /// catalog's tiers), and whether the running catalog lists it.
    entries: Vec<(Tenant, bool)>,
    by_id: HashMap<String, usize>,
}

/// What a reload changed, by tenant id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterChange {
    /// New tenants, and removed ones that came back.
    pub added: Vec<String>,
    /// Tenants the new catalog no longer lists.
    pub removed: Vec<String>,
    /// Tenants whose fields changed.
    pub changed: Vec<String>,
}

impl RosterChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl Roster {
    /// The tenants of the catalog a process starts with, at their catalog index.
    pub fn new(catalog: &Catalog) -> Self {
        let mut roster = Self {
            entries: Vec::new(),
            by_id: HashMap::new(),
        };
        roster.update(catalog);
        roster
    }

    /// Makes `catalog`'s tenants the current ones.
    pub fn update(&mut self, catalog: &Catalog) -> RosterChange {
        let mut change = RosterChange::default();
        let mut listed = vec![false; self.entries.len()];
        for tenant in &catalog.tenants {
            match self.by_id.get(&tenant.id) {
                Some(&t) => {
                    let (old, current) = &mut self.entries[t];
                    if !*current {
                        change.added.push(tenant.id.clone());
                    } else if old != tenant {
                        change.changed.push(tenant.id.clone());
                    }
                    *old = tenant.clone();
                    *current = true;
                    listed[t] = true;
                }
                None => {
                    self.by_id.insert(tenant.id.clone(), self.entries.len());
                    self.entries.push((tenant.clone(), true));
                    change.added.push(tenant.id.clone());
                }
            }
        }
        for (t, listed) in listed.into_iter().enumerate() {
            let (tenant, current) = &mut self.entries[t];
            if *current && !listed {
                *current = false;
                change.removed.push(tenant.id.clone());
            }
        }
        change
    }

    /// The index of a tenant the running catalog lists.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied().filter(|&t| self.entries[t].1)
    }

    /// Tenant `t` as it was last listed.
    pub fn tenant(&self, t: usize) -> &Tenant {
        &self.entries[t].0
    }

    /// Whether the running catalog lists tenant `t`.
    pub fn is_current(&self, t: usize) -> bool {
        self.entries[t].1
    }

    /// Tenants ever listed (the indexes are `0..len`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every tenant's scheduler settings, by index, with queues bounded at `queue_bound`
    /// (removed tenants keep theirs while their queues drain).
    pub fn slots(&self, queue_bound: u32) -> Vec<TenantSlot> {
        self.entries
            .iter()
            .map(|(t, _)| TenantSlot {
                weight: t.weight,
                max_share: t.max_share,
                queue_bound,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(tenants: &str) -> Catalog {
        Catalog::parse(&format!(
            "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{weight: 3, share: 0.4}}\n  \
             bronze: {{weight: 1, share: 0.4}}\ntenants:\n{tenants}pool: {{maxReplicas: 4}}\n"
        ))
        .unwrap()
        .catalog
    }

    #[test]
    fn indexes_stay_put_across_removals_reorders_and_returns() {
        let mut r = Roster::new(&catalog(
            "  - {id: a-1, tier: gold}\n  - {id: b-1, tier: bronze}\n",
        ));
        assert_eq!((r.index("a-1"), r.index("b-1")), (Some(0), Some(1)));
        // b-1 moves up and turns gold, a-1 goes, c-1 is new.
        let change = r.update(&catalog(
            "  - {id: c-1, tier: bronze}\n  - {id: b-1, tier: gold}\n",
        ));
        assert_eq!(
            change,
            RosterChange {
                added: vec!["c-1".into()],
                removed: vec!["a-1".into()],
                changed: vec!["b-1".into()],
            }
        );
        assert_eq!(r.index("a-1"), None, "a removed tenant is not found");
        assert!(!r.is_current(0));
        assert_eq!(r.tenant(0).id, "a-1", "but its index still names it");
        assert_eq!((r.index("b-1"), r.index("c-1")), (Some(1), Some(2)));
        assert_eq!(r.tenant(1).weight, 3);
        let slots = r.slots(7);
        assert_eq!(slots.len(), 3);
        assert_eq!((slots[1].weight, slots[1].queue_bound), (3, 7));
        // a-1 comes back to its old index; nothing else changed.
        let change = r.update(&catalog(
            "  - {id: c-1, tier: bronze}\n  - {id: b-1, tier: gold}\n  - {id: a-1, tier: gold}\n",
        ));
        assert_eq!(change.added, vec!["a-1".to_string()]);
        assert!(change.removed.is_empty() && change.changed.is_empty());
        assert_eq!(r.index("a-1"), Some(0));
        assert_eq!(r.len(), 3);
        assert!(r.update(&catalog(
            "  - {id: a-1, tier: gold}\n  - {id: b-1, tier: gold}\n  - {id: c-1, tier: bronze}\n",
        ))
        .is_empty(), "a reorder changes nothing");
    }
}

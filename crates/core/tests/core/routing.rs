//! Router and scheduler properties, and a golden file of routing picks.

use proptest::prelude::*;
use tenantscale_core::fairness::scheduler::{FairScheduler, TenantSlot};
use tenantscale_core::routing::{Router, RouterConfig, stable_hash};

fn tenant_keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| stable_hash(format!("tenant-{i}").as_bytes()))
        .collect()
}

fn warm_router(pods: usize, tenants: usize) -> Router {
    let mut r = Router::new(RouterConfig::default(), tenant_keys(tenants));
    for p in 0..pods {
        r.add_pod(stable_hash(format!("pod-{p}").as_bytes()), -1000.0);
    }
    r
}

proptest! {
    #[test]
    fn no_pod_above_its_bounded_load(pods in 1..20usize, picks in prop::collection::vec(0..52usize, 1..2000)) {
        let mut r = warm_router(pods, 52);
        for (k, t) in picks.iter().enumerate() {
            r.route(*t, 0.0).unwrap();
            let total = (k + 1) as f64;
            let bound = (1.25 * total / pods as f64).ceil() as u32;
            for p in 0..pods {
                prop_assert!(r.load(p) <= bound, "pod {p} holds {} > {bound}", r.load(p));
            }
        }
    }

    /// Any mix of arrivals and completions: the pod a request lands on holds at most
    /// `ceil(c × total / pods)` right after it.
    #[test]
    fn bounded_load_holds_for_any_load_vector(
        pods in 1..12usize,
        ops in prop::collection::vec((0..52usize, any::<bool>()), 1..1500),
    ) {
        let mut r = warm_router(pods, 52);
        let mut outstanding: Vec<usize> = Vec::new();
        for (t, arrive) in ops {
            if arrive || outstanding.is_empty() {
                let p = r.route(t, 0.0).unwrap();
                outstanding.push(p);
                let bound = (1.25 * outstanding.len() as f64 / pods as f64).ceil() as u32;
                prop_assert!(r.load(p) <= bound, "pod {p} holds {} > {bound}", r.load(p));
            } else {
                r.release(outstanding.swap_remove(t % outstanding.len()));
            }
        }
    }

    /// Draining or removing a pod changes the first choice of that pod's tenants only, and
    /// they move to their old second choice.
    #[test]
    fn removing_a_pod_moves_only_its_tenants(pods in 2..16usize, gone in 0..16usize, drain in any::<bool>()) {
        let gone = gone % pods;
        let tenants = 500;
        let mut r = warm_router(pods, tenants);
        let before: Vec<(u32, u32)> = (0..tenants).map(|t| (r.ranking(t)[0], r.ranking(t)[1])).collect();
        if drain { r.drain(gone) } else { r.remove(gone) }
        for (t, (first, second)) in before.into_iter().enumerate() {
            let now = r.ranking(t)[0];
            let expected = if first as usize == gone { second } else { first };
            prop_assert_eq!(now, expected, "tenant {}", t);
            prop_assert!(!r.ranking(t).contains(&(gone as u32)));
        }
    }

    /// A warming pod's weight never falls as time passes, and stays in [min_weight, 1].
    #[test]
    fn slow_start_weight_is_monotone_in_time(since in -100.0..100.0f64, a in -100.0..300.0f64, b in -100.0..300.0f64) {
        let mut r = warm_router(0, 1);
        let p = r.add_pod(1, since);
        let (early, late) = if a <= b { (a, b) } else { (b, a) };
        let (we, wl) = (r.weight(p, early), r.weight(p, late));
        prop_assert!(we <= wl, "{we} at {early} > {wl} at {late}");
        prop_assert!((0.1..=1.0).contains(&we) && (0.1..=1.0).contains(&wl));
    }

    #[test]
    fn adding_a_pod_moves_about_one_nth_of_tenants(pods in 2..16usize) {
        let tenants = 2000;
        let mut r = warm_router(pods, tenants);
        let before: Vec<u32> = (0..tenants).map(|t| r.ranking(t)[0]).collect();
        let new = r.add_pod(stable_hash(b"pod-new"), -1000.0) as u32;
        let mut moved = 0;
        for (t, b) in before.iter().enumerate() {
            let now = r.ranking(t)[0];
            if now != *b {
                prop_assert_eq!(now, new, "a tenant only moves to the new pod");
                moved += 1;
            }
        }
        let expected = tenants as f64 / (pods + 1) as f64;
        prop_assert!((moved as f64) > 0.6 * expected && (moved as f64) < 1.4 * expected, "moved {moved}, expected ~{expected}");
    }

    #[test]
    fn slow_start_caps_a_new_pods_share(age in 0.0..60.0f64, requests in 10..500usize) {
        let mut r = warm_router(4, 52);
        let new = r.add_pod(stable_hash(b"pod-cold"), 0.0);
        let w = r.weight(new, age);
        let total_weight = 4.0 + w;
        for k in 0..requests {
            r.route(k % 52, age).unwrap();
            let bound = (1.25 * (k + 1) as f64 * w / total_weight).ceil() as u32;
            prop_assert!(r.load(new) <= bound.max(1), "cold pod holds {} > {bound}", r.load(new));
        }
    }

    #[test]
    fn weighted_fair_shares_converge_to_weights(weights in prop::collection::vec(1..5u32, 2..6), rounds in 20..60u32) {
        let slots: Vec<TenantSlot> = weights.iter().map(|w| TenantSlot { weight: *w, max_share: 1.0, queue_bound: 100_000 }).collect();
        let mut s = FairScheduler::new(1, &slots);
        let total_weight: u32 = weights.iter().sum();
        let n = rounds * total_weight;
        for t in 0..weights.len() {
            for i in 0..n {
                s.enqueue(t, i).unwrap();
            }
        }
        let mut served = vec![0u32; weights.len()];
        for _ in 0..n {
            let (t, _) = s.start_next().unwrap();
            served[t] += 1;
            s.complete(t);
        }
        for (t, w) in weights.iter().enumerate() {
            let fair = rounds * w;
            prop_assert!(served[t].abs_diff(fair) <= *w, "tenant {t}: {} served, fair {fair}", served[t]);
        }
    }

    #[test]
    fn scheduler_conserves_requests(ops in prop::collection::vec((0..4usize, any::<bool>()), 1..500)) {
        let slots: Vec<TenantSlot> = (0..4).map(|_| TenantSlot { weight: 2, max_share: 0.3, queue_bound: 20 }).collect();
        let mut s = FairScheduler::new(3, &slots);
        let (mut accepted, mut rejected, mut done) = (0, 0, 0);
        let mut running: Vec<usize> = vec![];
        for (i, (t, finish)) in ops.iter().enumerate() {
            match s.enqueue(*t, i) { Ok(()) => accepted += 1, Err(_) => rejected += 1 }
            if *finish && !running.is_empty() {
                s.complete(running.remove(0));
                done += 1;
            }
            while let Some((t, _)) = s.start_next() {
                running.push(t);
            }
        }
        prop_assert_eq!(accepted + rejected, ops.len());
        prop_assert_eq!(accepted, done + running.len() + s.queued());
        prop_assert!(s.busy() as usize == running.len() && s.busy() <= 3);
    }
}

/// Routing picks must not change unless a version bump is intended: they decide which pods
/// hold which tenants' data. `UPDATE_GOLDEN=1` rewrites tests/data/ring_v1.csv.
#[test]
fn routing_picks_match_the_golden_file() {
    let ids: Vec<String> = [
        "media-1",
        "media-2",
        "finance-1",
        "finance-22",
        "retail-7",
        "retail-22",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let keys = ids.iter().map(|i| stable_hash(i.as_bytes())).collect();
    let mut r = Router::new(RouterConfig::default(), keys);
    let mut csv = String::from("tenant,pods,ranking\n");
    for p in 0..8 {
        r.add_pod(stable_hash(format!("rag-service-{p}").as_bytes()), -1000.0);
        for (t, id) in ids.iter().enumerate() {
            let ranking: Vec<String> = r.ranking(t).iter().map(u32::to_string).collect();
            csv.push_str(&format!("{id},{},{}\n", p + 1, ranking.join(" ")));
        }
    }
    let path = format!(
        "{}/../../tests/data/ring_v1.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &csv).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        csv,
        "routing picks changed: {path}"
    );
}

#[test]
fn draining_pods_take_nothing_and_leave_cleanly() {
    let mut r = warm_router(3, 10);
    let p = r.route(0, 0.0).unwrap();
    r.drain(p);
    for t in 0..10 {
        assert_ne!(r.route(t, 0.0), Some(p), "no new request to a draining pod");
    }
    assert_eq!(r.load(p), 1, "its in-flight request still counts");
    r.release(p);
    r.remove(p);
    assert_eq!(r.ready_pods(), 2);
    for t in 0..10 {
        assert_ne!(r.route(t, 0.0), Some(p), "no request to a removed pod");
    }
}

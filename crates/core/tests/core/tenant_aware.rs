//! Properties of the tenant-aware policy (proptest).

use proptest::prelude::*;
use tenantscale_core::scaling::tenant_aware::{TenantAwareConfig, TenantAwareState, TenantDemand};

const MIN: i32 = 3;
const MAX: i32 = 20;
const SLOTS: u32 = 8;

fn config() -> TenantAwareConfig {
    TenantAwareConfig::new(MIN, MAX, SLOTS).unwrap()
}

fn tenant() -> impl Strategy<Value = TenantDemand> {
    (
        0.0..80.0f64,
        0.0..200.0f64,
        0.0..100.0f64,
        0.05..2.0f64,
        prop::sample::select(vec![0.1, 0.2, 0.3]),
    )
        .prop_map(
            |(in_flight, queued, arrival_rate, mean_service_seconds, max_share)| TenantDemand {
                in_flight,
                queued,
                arrival_rate,
                mean_service_seconds,
                max_share,
            },
        )
}

fn tenants() -> impl Strategy<Value = Vec<TenantDemand>> {
    prop::collection::vec(tenant(), 1..60)
}

/// A state reached by a few earlier decisions, so properties hold mid-flight too.
fn warmed(history: &[Vec<TenantDemand>]) -> (TenantAwareState, i32, f64) {
    let cfg = config();
    let mut state = TenantAwareState::default();
    let mut current = MIN;
    let mut now = 0.0;
    for tenants in history {
        current = cfg
            .decide(&mut state, now, current, tenants)
            .outcome
            .desired;
        now += 5.0;
    }
    (state, current, now)
}

fn history() -> impl Strategy<Value = Vec<Vec<TenantDemand>>> {
    prop::collection::vec(prop::collection::vec(tenant(), 1..10), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn never_outside_min_max(history in history(), tenants in tenants(), current in 1..30i32) {
        let (mut state, _, now) = warmed(&history);
        let d = config().decide(&mut state, now, current, &tenants).outcome.desired;
        prop_assert!((MIN..=MAX).contains(&d), "desired {d}");
    }

    #[test]
    fn monotone_in_any_tenants_demand(
        history in history(), tenants in tenants(), pick in any::<prop::sample::Index>(), extra in 0.0..500.0f64
    ) {
        let cfg = config();
        let (state, current, now) = warmed(&history);
        let before = cfg.decide(&mut state.clone(), now, current, &tenants).outcome.desired;
        let mut more = tenants.clone();
        more[pick.index(tenants.len())].queued += extra;
        let after = cfg.decide(&mut state.clone(), now, current, &more).outcome.desired;
        prop_assert!(after >= before, "{before} -> {after}");
    }

    #[test]
    fn tenant_above_its_cap_adds_no_replicas(
        history in history(), tenants in tenants(), pick in any::<prop::sample::Index>(), extra in 0.0..5000.0f64
    ) {
        let cfg = config();
        let (state, current, now) = warmed(&history);
        let i = pick.index(tenants.len());
        let mut over = tenants.clone();
        over[i].queued = cfg.entitlement(over[i].max_share) + 1.0;
        let mut further = over.clone();
        further[i].queued += extra;
        let a = cfg.decide(&mut state.clone(), now, current, &over);
        let b = cfg.decide(&mut state.clone(), now, current, &further);
        prop_assert_eq!(a.outcome, b.outcome);
        prop_assert_eq!(a.capped_demand, b.capped_demand);
    }

    #[test]
    fn removing_a_tenants_excess_changes_nothing(
        history in history(), tenants in tenants(), pick in any::<prop::sample::Index>()
    ) {
        let cfg = config();
        let (state, current, now) = warmed(&history);
        let i = pick.index(tenants.len());
        let cap = cfg.entitlement(tenants[i].max_share);
        prop_assume!(tenants[i].raw() > cap);
        let mut trimmed = tenants.clone();
        trimmed[i] = TenantDemand { in_flight: cap, queued: 0.0, arrival_rate: 0.0, ..tenants[i] };
        let a = cfg.decide(&mut state.clone(), now, current, &tenants).outcome;
        let b = cfg.decide(&mut state.clone(), now, current, &trimmed).outcome;
        prop_assert_eq!(a, b);
    }

    #[test]
    fn stable_input_does_not_flap(tenants in tenants(), start in MIN..=MAX, step in 1.0..30.0f64) {
        let cfg = config();
        let mut state = TenantAwareState::default();
        let mut current = start;
        let mut seen = vec![current];
        // Long enough for the 300 s scale-down window to pass, then some.
        let steps = (900.0 / step).ceil() as u32 + 20;
        for k in 0..steps {
            current = cfg.decide(&mut state, f64::from(k) * step, current, &tenants).outcome.desired;
            seen.push(current);
        }
        let ups = seen.windows(2).any(|w| w[1] > w[0]);
        let downs = seen.windows(2).any(|w| w[1] < w[0]);
        prop_assert!(!(ups && downs), "flapped: {seen:?}");
        let tail = &seen[seen.len() - 10..];
        prop_assert!(tail.iter().all(|r| *r == tail[0]), "did not settle: {seen:?}");
    }
}

#[test]
fn panic_scales_up_at_once_and_holds() {
    let cfg = config();
    let mut state = TenantAwareState::default();
    let quiet = vec![
        TenantDemand {
            in_flight: 4.0,
            max_share: 0.3,
            ..Default::default()
        };
        10
    ];
    let mut current = MIN;
    for k in 0..20 {
        current = cfg
            .decide(&mut state, f64::from(k), current, &quiet)
            .outcome
            .desired;
    }
    assert_eq!(current, 8, "40 concurrent / 5.6 per pod");
    // A burst: 8 tenants at 6 × their usual concurrency.
    let mut burst = quiet.clone();
    for t in burst.iter_mut().take(8) {
        t.in_flight = 24.0;
    }
    let d = cfg.decide(&mut state, 20.0, current, &burst);
    assert!(d.panicking, "burst of 2× capacity panics");
    assert!(
        d.outcome.desired > current,
        "scales up in the same decision"
    );
    // Demand drops back at once: no step down while the panic lasts (one stable window).
    let mut last = d.outcome.desired;
    for k in 21..75 {
        let d = cfg.decide(&mut state, f64::from(k), last, &quiet);
        assert!(
            d.outcome.desired >= last,
            "stepped down during panic at t={k}"
        );
        last = d.outcome.desired;
    }
}

#[test]
fn capped_demand_counts_only_entitlements() {
    let cfg = config();
    // maxShare 0.3 × 20 pods × 8 slots = 48 concurrent requests.
    assert_eq!(cfg.entitlement(0.3), 48.0);
    let hog = TenantDemand {
        queued: 10_000.0,
        max_share: 0.3,
        ..Default::default()
    };
    let d = cfg.decide(&mut TenantAwareState::default(), 0.0, MIN, &[hog]);
    assert_eq!(
        (d.raw_demand, d.capped_demand, d.capped_tenants),
        (10_000.0, 48.0, 1)
    );
    assert_eq!(d.stable_desired, 9, "ceil(48 / 5.6)");
}

#[test]
fn state_round_trips_through_json() {
    let cfg = config();
    let mut state = TenantAwareState::default();
    let t = [TenantDemand {
        in_flight: 30.0,
        max_share: 0.3,
        ..Default::default()
    }];
    let mut current = MIN;
    for k in 0..5 {
        current = cfg
            .decide(&mut state, f64::from(k), current, &t)
            .outcome
            .desired;
    }
    let json = serde_json::to_string(&state).unwrap();
    let mut restored: TenantAwareState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, state);
    let a = cfg.decide(&mut state, 5.0, current, &t);
    let b = cfg.decide(&mut restored, 5.0, current, &t);
    assert_eq!(
        a, b,
        "a restarted autoscaler decides as if it never stopped"
    );
}

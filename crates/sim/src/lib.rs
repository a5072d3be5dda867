//! tenantscale's discrete-event simulator: replay a traffic scenario through the same decision
//! code the live system runs, and report what each policy would cost and what tenants would feel.
//!
//! ```no_run
//! use tenantscale_sim::{Policy, Scenario, simulate};
//! let scenario = Scenario::load("examples/scenarios/media-spike.yaml".as_ref(), None).unwrap();
//! let report = simulate(&scenario, &[Policy::TenantAware, Policy::HpaQueue], 42, None);
//! println!("{}", report.table());
//! ```

pub mod model;
pub mod policy;
mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod stats;

pub use policy::Policy;
pub use report::Report;
pub use scenario::Scenario;

use model::{Engine, RunOutcome};

/// Runs every policy on `scenario` with `seed`. A `Static(0)` policy is sized to the peak
/// replicas any other policy reached ("provisioned for peak"); it runs last. `progress` is
/// called now and then with the fraction of all the work done.
#[allow(clippy::disallowed_types)] // wall time of the run, for the report; simulated time is the engine's
pub fn simulate(
    scenario: &Scenario,
    policies: &[Policy],
    seed: u64,
    progress: Option<&dyn Fn(f64)>,
) -> Report {
    let started = std::time::Instant::now();
    let mut outcomes: Vec<(usize, RunOutcome)> = Vec::new();
    let (sized_later, now): (Vec<_>, Vec<_>) = policies
        .iter()
        .enumerate()
        .partition(|(_, p)| matches!(p, Policy::Static(0)));
    let total = policies.len();
    let run = |policy: &Policy, done: usize| {
        let engine = Engine::new(scenario, policy, seed, false);
        let report = move |f: f64| {
            if let Some(p) = progress {
                p((done as f64 + f) / total as f64);
            }
        };
        engine.with_progress(&report).run()
    };
    for (i, policy) in now {
        let done = outcomes.len();
        outcomes.push((i, run(policy, done)));
    }
    let peak = outcomes
        .iter()
        .map(|(_, o)| o.report.peak_replicas)
        .max()
        .unwrap_or(scenario.catalog.pool.max_replicas);
    for (i, _) in sized_later {
        let done = outcomes.len();
        outcomes.push((i, run(&Policy::Static(peak), done)));
    }
    if let Some(p) = progress {
        p(1.0);
    }
    outcomes.sort_by_key(|(i, _)| *i);
    Report::new(
        scenario,
        seed,
        outcomes.into_iter().map(|(_, o)| o).collect(),
        started.elapsed().as_secs_f64(),
    )
}

/// Runs one policy and keeps every autoscaler decision with its inputs.
pub fn simulate_recorded(scenario: &Scenario, policy: &Policy, seed: u64) -> RunOutcome {
    Engine::new(scenario, policy, seed, true).run()
}

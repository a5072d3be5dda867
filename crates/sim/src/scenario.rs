//! Scenario files: who sends how much traffic when, and the constants of the model.
//!
//! ```yaml
//! name: media-spike
//! catalog: ../gcc-platform.yaml     # relative to this file; `--config` overrides
//! duration: 4h                      # seconds, or 90s / 15m / 4h / 7d / 1h30m
//! clockStart: 47m                   # wall-clock time at t = 0 (day 0 = Monday 00:00)
//! classes:
//!   - name: media
//!     match: media-*                # tenants of the catalog (prefix*, or an exact id)
//!     baseRps: 1.0                  # per tenant
//!     dataBytes: 50Mi               # the tenant's index, loaded into a pod's cache on a miss
//!     rate:                         # multiplied together
//!       - spike: {at: 2h, for: 2h, multiplier: 50}
//!       - diurnal: {amplitude: 0.3, peakHour: 14}
//!       - weekly: {windows: [{day: 2, at: 2h47m, for: 3h, multiplier: 50}]}
//!       - constant: {multiplier: 1.5}
//!   - {name: extra, count: 10, tier: bronze, baseRps: 0.5}   # tenants made up for the run
//! trace: arrivals.csv               # optional: replay `t,tenant_id` instead of Poisson
//! model: {...}                      # see `Model` (defaults are the seed's constants)
//! control: {...}                    # see `Control`
//! ```

use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use tenantscale_core::catalog::{Catalog, Tenant};
use tenantscale_core::quantity::Quantity;
use tenantscale_core::yaml;

/// A bad scenario: the field path, its line, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ScenarioError {
    pub location: String,
    pub message: String,
}

/// Seconds, written as a number or as `90s`, `15m`, `4h`, `7d`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Seconds(pub f64);

impl Seconds {
    /// Parses `2h30m`-style text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(v) = text.parse::<f64>() {
            return Ok(Self(v));
        }
        let mut total = 0.0;
        let mut number = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let unit = match c {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                'd' => 86400.0,
                _ => {
                    return Err(format!(
                        "bad duration {text:?}: unknown unit {c:?} (use s, m, h, d)"
                    ));
                }
            };
            let v: f64 = number
                .parse()
                .map_err(|_| format!("bad duration {text:?}"))?;
            total += v * unit;
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!("bad duration {text:?}: a number needs a unit"));
        }
        Ok(Self(total))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Ok(Seconds(v)),
            Raw::Text(t) => Seconds::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    catalog: Option<String>,
    duration: Seconds,
    #[serde(default)]
    clock_start: Seconds,
    #[serde(default)]
    model: Model,
    #[serde(default)]
    control: Control,
    classes: Vec<ClassFile>,
    #[serde(default)]
    trace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClassFile {
    name: String,
    #[serde(default, rename = "match")]
    pattern: Option<String>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    tier: Option<String>,
    base_rps: f64,
    #[serde(default = "default_data_bytes")]
    data_bytes: Quantity,
    #[serde(default)]
    rate: Vec<RateTerm>,
}

fn default_data_bytes() -> Quantity {
    Quantity::parse("40Mi").expect("valid")
}

/// One factor of a class's rate over time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RateTerm {
    /// A constant factor.
    Constant { multiplier: f64 },
    /// `multiplier` from `at` for `for` seconds (a step spike).
    #[serde(rename_all = "camelCase")]
    Spike {
        at: Seconds,
        #[serde(rename = "for")]
        duration: Seconds,
        multiplier: f64,
    },
    /// `1 + amplitude × cos(2π (hour − peakHour) / 24)` on the wall clock.
    #[serde(rename_all = "camelCase")]
    Diurnal { amplitude: f64, peak_hour: f64 },
    /// Weekly windows (day 0 = Monday) of `multiplier` on the wall clock.
    Weekly { windows: Vec<WeeklyWindow> },
}

/// A recurring window of a weekly schedule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeeklyWindow {
    /// 0 = Monday … 6 = Sunday.
    pub day: u8,
    /// Time of day the window opens.
    pub at: Seconds,
    #[serde(rename = "for")]
    pub duration: Seconds,
    pub multiplier: f64,
}

/// Constants of the modelled pods. Defaults are the seed's: retrieval 50 ms on a cache hit and
/// 85 ms on a miss, an LLM step with median 150 ms (so a warm query takes ~200 ms), pods that
/// take 30–90 s to start, a 60 s warm-up ramp, 512 MiB of tenant cache per pod (the seed's
/// 5–10 tenants of 30–50 MB), 3 retries of a
/// 429, and ₹150 per pod-hour from the catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Model {
    pub retrieval_hit_ms: f64,
    pub retrieval_miss_ms: f64,
    /// Median of the lognormal LLM latency.
    pub llm_median_ms: f64,
    /// Sigma of the lognormal LLM latency.
    pub llm_sigma: f64,
    pub pod_startup_min_seconds: f64,
    pub pod_startup_max_seconds: f64,
    pub warmup_seconds: f64,
    pub cache_bytes_per_pod: Quantity,
    /// A client retries a 429 after its Retry-After this many times, then gives up.
    pub max_retries: u8,
    /// A minute breaches a class's SLA when more than this fraction of its requests miss the
    /// SLO or are refused.
    pub breach_fraction: f64,
    /// Overrides the catalog's `cost.podHour`.
    pub pod_hour_price: Option<f64>,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            retrieval_hit_ms: 50.0,
            retrieval_miss_ms: 85.0,
            llm_median_ms: 150.0,
            llm_sigma: 0.25,
            pod_startup_min_seconds: 30.0,
            pod_startup_max_seconds: 90.0,
            warmup_seconds: 60.0,
            cache_bytes_per_pod: Quantity::parse("512Mi").expect("valid"),
            max_retries: 3,
            breach_fraction: 0.01,
            pod_hour_price: None,
        }
    }
}

/// How often metrics are scraped and the autoscaler decides.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Control {
    /// tenantscale's autoscaler scrapes pods directly (default 2 s / 2 s).
    pub fast_scrape_seconds: f64,
    pub fast_sync_seconds: f64,
    /// Prometheus + HPA, as the seed deploys them (default 15 s / 15 s).
    pub hpa_scrape_seconds: f64,
    pub hpa_sync_seconds: f64,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            fast_scrape_seconds: 2.0,
            fast_sync_seconds: 2.0,
            hpa_scrape_seconds: 15.0,
            hpa_sync_seconds: 15.0,
        }
    }
}

/// A class of tenants that share a traffic shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    pub base_rps: f64,
    pub data_bytes: u64,
    pub terms: Vec<RateTerm>,
    /// Has a spike or weekly window.
    pub spiking: bool,
}

impl Class {
    /// The rate multiplier at simulated time `t` when the wall clock started at `clock_start`.
    pub fn multiplier(&self, t: f64, clock_start: f64) -> f64 {
        let wall = clock_start + t;
        self.terms.iter().fold(1.0, |m, term| {
            m * match term {
                RateTerm::Constant { multiplier } => *multiplier,
                RateTerm::Spike {
                    at,
                    duration,
                    multiplier,
                } => {
                    if t >= at.0 && t < at.0 + duration.0 {
                        *multiplier
                    } else {
                        1.0
                    }
                }
                RateTerm::Diurnal {
                    amplitude,
                    peak_hour,
                } => {
                    let hour = (wall / 3600.0).rem_euclid(24.0);
                    1.0 + amplitude * (std::f64::consts::TAU * (hour - peak_hour) / 24.0).cos()
                }
                RateTerm::Weekly { windows } => {
                    let in_week = wall.rem_euclid(7.0 * 86400.0);
                    windows
                        .iter()
                        .find(|w| {
                            let open = f64::from(w.day) * 86400.0 + w.at.0;
                            in_week >= open && in_week < open + w.duration.0
                        })
                        .map_or(1.0, |w| w.multiplier)
                }
            }
        })
    }

    /// Simulated times at which a spike or weekly window opens, within `[0, horizon)`.
    fn onsets(&self, clock_start: f64, horizon: f64) -> Vec<f64> {
        let mut out = Vec::new();
        for term in &self.terms {
            match term {
                RateTerm::Spike { at, .. } if at.0 < horizon => out.push(at.0),
                RateTerm::Weekly { windows } => {
                    for w in windows {
                        let open = f64::from(w.day) * 86400.0 + w.at.0;
                        let mut t = open - clock_start.rem_euclid(7.0 * 86400.0);
                        while t < 0.0 {
                            t += 7.0 * 86400.0;
                        }
                        while t < horizon {
                            out.push(t);
                            t += 7.0 * 86400.0;
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// A tenant's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficTenant {
    /// Index into the catalog's tenants.
    pub tenant: usize,
    pub class: usize,
}

/// A loaded, validated scenario with its catalog.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub duration: f64,
    pub clock_start: f64,
    pub model: Model,
    pub control: Control,
    pub catalog: Catalog,
    pub classes: Vec<Class>,
    /// Tenants that send traffic (a catalog tenant in no class sends none).
    pub traffic: Vec<TrafficTenant>,
    /// The first spike's onset, if any class spikes.
    pub spike_onset: Option<f64>,
    /// Every spike onset (for relief measurements), sorted.
    pub onsets: Vec<f64>,
    /// Replayed arrivals `(t, catalog tenant index)`, sorted by time, instead of Poisson.
    pub trace: Option<Vec<(f64, usize)>>,
}

struct Checker<'a> {
    text: &'a str,
    file: &'a str,
}

impl Checker<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> ScenarioError {
        let line = yaml::line_of_nearest(self.text, path)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        ScenarioError {
            location: format!("{}: {path}{line}", self.file),
            message: message.into(),
        }
    }
}

impl Scenario {
    /// Loads a scenario file; its catalog comes from `catalog` if given, else from the
    /// scenario's `catalog:` path (relative to the scenario file).
    pub fn load(path: &Path, catalog: Option<&Path>) -> Result<Self, ScenarioError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| ScenarioError {
                location: p.display().to_string(),
                message: format!("cannot read: {e}"),
            })
        };
        let text = read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base, catalog)
    }

    /// Parses scenario `text`; relative paths resolve against `base`.
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        catalog: Option<&Path>,
    ) -> Result<Self, ScenarioError> {
        let c = Checker { text, file };
        let f: ScenarioFile = yaml::from_str(text).map_err(|e| ScenarioError {
            location: format!(
                "{file}: {}",
                if e.path.is_empty() {
                    "(document)".into()
                } else {
                    e.path.clone()
                }
            ) + &e.line.map(|l| format!(" (line {l})")).unwrap_or_default(),
            message: e.message,
        })?;
        let catalog_path: PathBuf = match (catalog, &f.catalog) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(p)) => base.join(p),
            (None, None) => {
                return Err(c.err("catalog", "no catalog: set `catalog:` or pass --config"));
            }
        };
        let catalog_text = std::fs::read_to_string(&catalog_path).map_err(|e| {
            c.err(
                "catalog",
                format!("cannot read {}: {e}", catalog_path.display()),
            )
        })?;
        let mut catalog = Catalog::parse(&catalog_text)
            .map_err(|e| ScenarioError {
                location: catalog_path.display().to_string(),
                message: e.to_string(),
            })?
            .catalog;

        if !(f.duration.0 > 0.0 && f.duration.0 <= 60.0 * 86400.0) {
            return Err(c.err("duration", "must be > 0 and at most 60 days"));
        }
        check_model(&c, &f.model)?;
        check_control(&c, &f.control)?;
        if f.classes.is_empty() {
            return Err(c.err("classes", "at least one class is required"));
        }

        let mut classes = Vec::new();
        let mut traffic: Vec<TrafficTenant> = Vec::new();
        for (i, cl) in f.classes.iter().enumerate() {
            let path = format!("classes[{i}]");
            if classes.iter().any(|k: &Class| k.name == cl.name) {
                return Err(c.err(
                    &format!("{path}.name"),
                    format!("duplicate class {:?}", cl.name),
                ));
            }
            if !(cl.base_rps >= 0.0 && cl.base_rps.is_finite()) {
                return Err(c.err(&format!("{path}.baseRps"), "must be >= 0"));
            }
            if cl.data_bytes.value() <= 0 {
                return Err(c.err(&format!("{path}.dataBytes"), "must be > 0"));
            }
            for (j, term) in cl.rate.iter().enumerate() {
                check_term(&c, &format!("{path}.rate[{j}]"), term, f.duration.0)?;
            }
            let members: Vec<usize> = match (&cl.pattern, cl.count) {
                (Some(p), None) => {
                    let m: Vec<usize> = (0..catalog.tenants.len())
                        .filter(|t| matches(p, &catalog.tenants[*t].id))
                        .collect();
                    if m.is_empty() {
                        return Err(c.err(
                            &format!("{path}.match"),
                            format!("{p:?} matches no tenant of the catalog"),
                        ));
                    }
                    m
                }
                (None, Some(n)) => {
                    let tier_name = cl
                        .tier
                        .as_ref()
                        .ok_or_else(|| c.err(&format!("{path}.tier"), "required with count"))?;
                    let Some(tier) = catalog.tiers.iter().position(|t| &t.name == tier_name) else {
                        return Err(c.err(
                            &format!("{path}.tier"),
                            format!("unknown tier {tier_name:?}"),
                        ));
                    };
                    if n == 0 || catalog.tenants.len() + n as usize > usize::from(u16::MAX) {
                        return Err(c.err(
                            &format!("{path}.count"),
                            "must be >= 1, with at most 65535 tenants in all",
                        ));
                    }
                    let t = &catalog.tiers[tier];
                    (1..=n)
                        .map(|k| {
                            catalog.tenants.push(Tenant {
                                id: format!("{}-{k}", cl.name),
                                tier,
                                weight: t.weight,
                                max_share: t.max_share,
                                rate_limit: t.rate_limit,
                                slo_ms: t.slo_ms,
                                api_key_sha256: None,
                                silo: false,
                                quota: t.quota,
                            });
                            catalog.tenants.len() - 1
                        })
                        .collect()
                }
                _ => {
                    return Err(c.err(
                        &path,
                        "give exactly one of `match` and `count` (with `tier`)",
                    ));
                }
            };
            for m in members {
                if let Some(prev) = traffic.iter().find(|t| t.tenant == m) {
                    return Err(c.err(
                        &format!("{path}.match"),
                        format!(
                            "tenant {} is already in class {:?}",
                            catalog.tenants[m].id, classes[prev.class].name
                        ),
                    ));
                }
                traffic.push(TrafficTenant {
                    tenant: m,
                    class: i,
                });
            }
            let spiking = cl
                .rate
                .iter()
                .any(|t| matches!(t, RateTerm::Spike { .. } | RateTerm::Weekly { .. }));
            classes.push(Class {
                name: cl.name.clone(),
                base_rps: cl.base_rps,
                data_bytes: cl.data_bytes.value() as u64,
                terms: cl.rate.clone(),
                spiking,
            });
        }

        let mut onsets: Vec<f64> = classes
            .iter()
            .flat_map(|k| k.onsets(f.clock_start.0, f.duration.0))
            .collect();
        onsets.sort_by(f64::total_cmp);
        onsets.dedup();
        let trace = match &f.trace {
            None => None,
            Some(p) => Some(load_trace(&base.join(p), &catalog, f.duration.0, &traffic)?),
        };
        Ok(Scenario {
            name: f.name,
            description: f.description,
            duration: f.duration.0,
            clock_start: f.clock_start.0,
            model: f.model,
            control: f.control,
            catalog,
            classes,
            traffic,
            spike_onset: onsets.first().copied(),
            onsets,
            trace,
        })
    }

    /// The class of catalog tenant `tenant`, if it sends traffic.
    pub fn class_of(&self, tenant: usize) -> Option<usize> {
        self.traffic
            .iter()
            .find(|t| t.tenant == tenant)
            .map(|t| t.class)
    }
}

fn matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => id == pattern,
    }
}

fn check_model(c: &Checker<'_>, m: &Model) -> Result<(), ScenarioError> {
    let positive = [
        ("model.retrievalHitMs", m.retrieval_hit_ms),
        ("model.retrievalMissMs", m.retrieval_miss_ms),
        ("model.llmMedianMs", m.llm_median_ms),
    ];
    for (path, v) in positive {
        if !(v > 0.0 && v.is_finite()) {
            return Err(c.err(path, "must be > 0"));
        }
    }
    if !(0.0..=3.0).contains(&m.llm_sigma) {
        return Err(c.err("model.llmSigma", "must be in [0, 3]"));
    }
    if !(m.pod_startup_min_seconds >= 0.0 && m.pod_startup_min_seconds <= m.pod_startup_max_seconds)
    {
        return Err(c.err(
            "model.podStartupMinSeconds",
            "must be >= 0 and <= podStartupMaxSeconds",
        ));
    }
    if m.warmup_seconds < 0.0 {
        return Err(c.err("model.warmupSeconds", "must be >= 0"));
    }
    if m.cache_bytes_per_pod.value() < 0 {
        return Err(c.err("model.cacheBytesPerPod", "must be >= 0"));
    }
    if !(0.0..1.0).contains(&m.breach_fraction) {
        return Err(c.err("model.breachFraction", "must be in [0, 1)"));
    }
    if m.pod_hour_price.is_some_and(|p| p.is_nan() || p < 0.0) {
        return Err(c.err("model.podHourPrice", "must be >= 0"));
    }
    Ok(())
}

fn check_control(c: &Checker<'_>, k: &Control) -> Result<(), ScenarioError> {
    for (path, v) in [
        ("control.fastScrapeSeconds", k.fast_scrape_seconds),
        ("control.fastSyncSeconds", k.fast_sync_seconds),
        ("control.hpaScrapeSeconds", k.hpa_scrape_seconds),
        ("control.hpaSyncSeconds", k.hpa_sync_seconds),
    ] {
        if !(0.1..=3600.0).contains(&v) {
            return Err(c.err(path, "must be in [0.1, 3600] seconds"));
        }
    }
    Ok(())
}

fn check_term(
    c: &Checker<'_>,
    path: &str,
    term: &RateTerm,
    horizon: f64,
) -> Result<(), ScenarioError> {
    let multiplier_ok = |m: f64| m >= 0.0 && m.is_finite() && m <= 10_000.0;
    match term {
        RateTerm::Constant { multiplier } if !multiplier_ok(*multiplier) => Err(c.err(
            &format!("{path}.constant.multiplier"),
            "must be in [0, 10000]",
        )),
        RateTerm::Spike {
            at,
            duration,
            multiplier,
        } => {
            if !(at.0 >= 0.0 && at.0 < horizon) {
                return Err(c.err(
                    &format!("{path}.spike.at"),
                    "must fall inside the scenario's duration",
                ));
            }
            if duration.0 <= 0.0 {
                return Err(c.err(&format!("{path}.spike.for"), "must be > 0"));
            }
            if !multiplier_ok(*multiplier) {
                return Err(c.err(&format!("{path}.spike.multiplier"), "must be in [0, 10000]"));
            }
            Ok(())
        }
        RateTerm::Diurnal {
            amplitude,
            peak_hour,
        } => {
            if !(0.0..=1.0).contains(amplitude) {
                return Err(c.err(&format!("{path}.diurnal.amplitude"), "must be in [0, 1]"));
            }
            if !(0.0..24.0).contains(peak_hour) {
                return Err(c.err(&format!("{path}.diurnal.peakHour"), "must be in [0, 24)"));
            }
            Ok(())
        }
        RateTerm::Weekly { windows } => {
            for (i, w) in windows.iter().enumerate() {
                let wp = format!("{path}.weekly.windows[{i}]");
                if w.day > 6 {
                    return Err(c.err(&format!("{wp}.day"), "must be 0 (Monday) to 6 (Sunday)"));
                }
                if !(0.0..86400.0).contains(&w.at.0) {
                    return Err(c.err(&format!("{wp}.at"), "must be a time of day below 24h"));
                }
                if !(w.duration.0 > 0.0 && w.duration.0 <= 7.0 * 86400.0) {
                    return Err(c.err(&format!("{wp}.for"), "must be > 0 and at most a week"));
                }
                if !multiplier_ok(w.multiplier) {
                    return Err(c.err(&format!("{wp}.multiplier"), "must be in [0, 10000]"));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads a `t,tenant_id` CSV (an optional header line; `t` in seconds from the start).
fn load_trace(
    path: &Path,
    catalog: &Catalog,
    horizon: f64,
    traffic: &[TrafficTenant],
) -> Result<Vec<(f64, usize)>, ScenarioError> {
    let err = |line: usize, m: String| ScenarioError {
        location: format!("{}:{line}", path.display()),
        message: m,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(0, format!("cannot read: {e}")))?;
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || (n == 0 && line.starts_with('t')) {
            continue;
        }
        let (t, id) = line
            .split_once(',')
            .ok_or_else(|| err(n + 1, "expected `t,tenant_id`".into()))?;
        let t: f64 = t
            .trim()
            .parse()
            .map_err(|_| err(n + 1, format!("bad time {t:?}")))?;
        if !(0.0..horizon).contains(&t) {
            continue;
        }
        let id = id.trim();
        let tenant = catalog
            .tenants
            .iter()
            .position(|x| x.id == id)
            .ok_or_else(|| err(n + 1, format!("unknown tenant {id:?}")))?;
        if !traffic.iter().any(|x| x.tenant == tenant) {
            return Err(err(n + 1, format!("tenant {id:?} is in no class")));
        }
        out.push((t, tenant));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

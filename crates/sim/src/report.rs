//! Results: a table per policy, one JSON object, and an HTML page with SVG charts.

use crate::model::RunOutcome;
use crate::scenario::Scenario;
use serde::Serialize;
use std::fmt::Write as _;

/// A simulation's results (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub simulated_seconds: f64,
    /// First attempts, summed over policies.
    pub requests: u64,
    pub wall_seconds: f64,
    pub policies: Vec<PolicyReport>,
    #[serde(skip)]
    pub series: Vec<crate::stats::Series>,
    #[serde(skip)]
    pub class_names: Vec<String>,
    #[serde(skip)]
    pub currency: String,
    #[serde(skip)]
    pub spike_onset: Option<f64>,
}

/// One policy's results.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub name: String,
    /// Seconds from the first spike's onset to the first scale-up.
    pub first_scale_up_s: Option<f64>,
    /// Seconds from the first spike's onset until the spiking tenants' backlog stayed under
    /// target for a minute.
    pub relief_s: Option<f64>,
    pub peak_replicas: i32,
    pub mean_replicas: f64,
    pub pod_hours: f64,
    pub cost: f64,
    /// The largest fraction of the pool's serving capacity one tenant held in any 10 s window.
    pub max_tenant_share: f64,
    pub classes: Vec<ClassReport>,
    /// Requests still queued, served or waiting to retry when the run ended.
    #[serde(skip)]
    pub in_system_at_end: u64,
}

/// One class's results under one policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassReport {
    pub name: String,
    pub spiking: bool,
    pub requests: u64,
    pub served: u64,
    #[serde(rename = "rejected429")]
    pub rejected_429: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub pre_spike_p99_ms: Option<f64>,
    pub over_slo: u64,
    pub sla_breach_minutes: u64,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl Report {
    pub(crate) fn new(
        sc: &Scenario,
        seed: u64,
        outcomes: Vec<RunOutcome>,
        wall_seconds: f64,
    ) -> Self {
        let r1 = |x: &mut Option<f64>| *x = x.map(|v| round(v, 1));
        let policies = outcomes
            .iter()
            .map(|o| {
                let mut p = o.report.clone();
                r1(&mut p.first_scale_up_s);
                r1(&mut p.relief_s);
                p.mean_replicas = round(p.mean_replicas, 2);
                p.pod_hours = round(p.pod_hours, 2);
                p.cost = round(p.cost, 0);
                p.max_tenant_share = round(p.max_tenant_share, 3);
                for c in &mut p.classes {
                    for q in [
                        &mut c.p50_ms,
                        &mut c.p95_ms,
                        &mut c.p99_ms,
                        &mut c.pre_spike_p99_ms,
                    ] {
                        r1(q);
                    }
                }
                p
            })
            .collect();
        Report {
            scenario: sc.name.clone(),
            seed,
            simulated_seconds: sc.duration,
            requests: outcomes.iter().map(|o| o.requests).sum(),
            wall_seconds: round(wall_seconds, 3),
            policies,
            series: outcomes.into_iter().map(|o| o.series).collect(),
            class_names: sc.classes.iter().map(|c| c.name.clone()).collect(),
            currency: sc.catalog.cost.currency.clone(),
            spike_onset: sc.spike_onset,
        }
    }

    /// The report as aligned text: a summary line per policy, then a table per policy.
    pub fn table(&self) -> String {
        let opt =
            |x: Option<f64>, unit: &str| x.map_or_else(|| "-".into(), |v| format!("{v}{unit}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}: {} simulated, seed {}, {} requests per policy, {:.1} s wall",
            self.scenario,
            human_duration(self.simulated_seconds),
            self.seed,
            self.requests / self.policies.len().max(1) as u64,
            self.wall_seconds
        );
        out.push('\n');
        let mut rows = vec![
            [
                "POLICY",
                "FIRST SCALE-UP",
                "RELIEF",
                "PEAK",
                "MEAN",
                "POD-HOURS",
                "COST",
                "MAX TENANT SHARE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for p in &self.policies {
            rows.push(vec![
                p.name.clone(),
                opt(p.first_scale_up_s, " s"),
                opt(p.relief_s, " s"),
                p.peak_replicas.to_string(),
                format!("{:.2}", p.mean_replicas),
                format!("{:.1}", p.pod_hours),
                format!("{} {:.0}", self.currency, p.cost),
                format!("{:.1} %", p.max_tenant_share * 100.0),
            ]);
        }
        out.push_str(&tenantscale_core::text::table(&rows));
        for p in &self.policies {
            let _ = writeln!(out, "\n{}", p.name);
            let mut rows = vec![
                [
                    "CLASS",
                    "REQUESTS",
                    "SERVED",
                    "429",
                    "P50",
                    "P95",
                    "P99",
                    "P99 PRE-SPIKE",
                    "OVER SLO",
                    "BREACH MIN",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for c in &p.classes {
                rows.push(vec![
                    if c.spiking {
                        format!("{} *", c.name)
                    } else {
                        c.name.clone()
                    },
                    c.requests.to_string(),
                    c.served.to_string(),
                    c.rejected_429.to_string(),
                    opt(c.p50_ms, " ms"),
                    opt(c.p95_ms, " ms"),
                    opt(c.p99_ms, " ms"),
                    opt(c.pre_spike_p99_ms, " ms"),
                    c.over_slo.to_string(),
                    c.sla_breach_minutes.to_string(),
                ]);
            }
            out.push_str(&tenantscale_core::text::table(&rows));
        }
        out.push_str("\n* spiking class. Times are seconds after the first spike's onset.\n");
        out
    }

    /// A self-contained HTML page (inline SVG, no scripts, no network).
    pub fn html(&self) -> String {
        const COLORS: [&str; 8] = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        let mut page = String::new();
        let _ = write!(
            page,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>tenantscale simulate: {name}</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child{{text-align:left}}\
.legend span{{margin-right:1.5em}}svg{{background:#fff;border:1px solid #ddd}}</style></head><body>\
<h1>Scenario {name}</h1><p>{dur} simulated, seed {seed}. Spike onset: {onset}.</p>",
            name = escape(&self.scenario),
            dur = human_duration(self.simulated_seconds),
            seed = self.seed,
            onset = self
                .spike_onset
                .map_or_else(|| "none".into(), human_duration),
        );
        page.push_str("<div class=\"legend\">");
        for (i, p) in self.policies.iter().enumerate() {
            let _ = write!(
                page,
                "<span style=\"color:{}\">&#9632; {}</span>",
                COLORS[i % COLORS.len()],
                escape(&p.name)
            );
        }
        page.push_str("</div><h2>Summary</h2><table><tr><th>policy</th><th>first scale-up (s)</th><th>relief (s)</th><th>peak</th><th>mean replicas</th><th>pod-hours</th><th>cost</th><th>max tenant share</th></tr>");
        let opt = |x: Option<f64>| x.map_or_else(|| "–".into(), |v| v.to_string());
        for p in &self.policies {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.1}</td><td>{} {:.0}</td><td>{:.1} %</td></tr>",
                escape(&p.name),
                opt(p.first_scale_up_s),
                opt(p.relief_s),
                p.peak_replicas,
                p.mean_replicas,
                p.pod_hours,
                escape(&self.currency),
                p.cost,
                p.max_tenant_share * 100.0
            );
        }
        page.push_str("</table>");
        let lines =
            |f: &dyn Fn(&crate::stats::Series) -> Vec<Option<f64>>| -> Vec<Vec<Option<f64>>> {
                self.series.iter().map(f).collect()
            };
        page.push_str("<h2>Replicas</h2>");
        page.push_str(&chart(
            &lines(&|s| s.replicas.iter().map(|v| Some(*v)).collect()),
            self.bin_seconds(),
            "pods",
            &COLORS,
            self.spike_onset,
        ));
        for (c, name) in self.class_names.iter().enumerate() {
            let _ = write!(page, "<h2>Class {}: backlog per tenant</h2>", escape(name));
            page.push_str(&chart(
                &lines(&|s| s.queue_depth[c].iter().map(|v| Some(*v)).collect()),
                self.bin_seconds(),
                "requests",
                &COLORS,
                self.spike_onset,
            ));
            let _ = write!(page, "<h2>Class {}: p99 latency</h2>", escape(name));
            page.push_str(&chart(
                &lines(&|s| s.p99_ms[c].clone()),
                self.bin_seconds(),
                "ms",
                &COLORS,
                self.spike_onset,
            ));
        }
        let _ = write!(page, "<h2>Per class</h2>");
        for p in &self.policies {
            let _ = write!(
                page,
                "<h3>{}</h3><table><tr><th>class</th><th>requests</th><th>served</th><th>429</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>p99 pre-spike ms</th><th>over SLO</th><th>SLA breach minutes</th></tr>",
                escape(&p.name)
            );
            for c in &p.classes {
                let _ = write!(
                    page,
                    "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&c.name),
                    if c.spiking { " (spiking)" } else { "" },
                    c.requests,
                    c.served,
                    c.rejected_429,
                    opt(c.p50_ms),
                    opt(c.p95_ms),
                    opt(c.p99_ms),
                    opt(c.pre_spike_p99_ms),
                    c.over_slo,
                    c.sla_breach_minutes
                );
            }
            page.push_str("</table>");
        }
        page.push_str("</body></html>\n");
        page
    }

    fn bin_seconds(&self) -> f64 {
        self.series.first().map_or(60.0, |s| s.bin_seconds)
    }
}

fn human_duration(s: f64) -> String {
    let s = s.round() as u64;
    match (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60) {
        (d, h, _, _) if d > 0 => format!("{d}d{h}h"),
        (_, h, m, _) if h > 0 => format!("{h}h{m:02}m"),
        (_, _, m, sec) => format!("{m}m{sec:02}s"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart: one polyline per series, x in bins, y from 0 to the max.
fn chart(
    series: &[Vec<Option<f64>>],
    bin_seconds: f64,
    unit: &str,
    colors: &[&str],
    onset: Option<f64>,
) -> String {
    let (w, h, left, bottom) = (900.0, 240.0, 60.0, 30.0);
    let n = series.iter().map(Vec::len).max().unwrap_or(0).max(2);
    let max = series
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |m, v| m.max(*v))
        .max(1e-9);
    let x = |i: usize| left + (w - left - 10.0) * i as f64 / (n - 1) as f64;
    let y = |v: f64| (h - bottom) - (h - bottom - 10.0) * v / max;
    let mut svg = format!("<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">");
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/><line x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{b}\" stroke=\"#888\"/>",
        b = h - bottom,
        r = w - 10.0
    );
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"16\" font-size=\"11\">{max:.1} {unit}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text>",
        h - bottom
    );
    let total = bin_seconds * (n - 1) as f64;
    for k in 0..=4 {
        let i = (n - 1) * k / 4;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x(i),
            h - 10.0,
            human_duration(bin_seconds * i as f64)
        );
    }
    if let Some(o) = onset.filter(|o| *o <= total) {
        let ox = left + (w - left - 10.0) * o / total.max(1e-9);
        let _ = write!(
            svg,
            "<line x1=\"{ox:.1}\" y1=\"10\" x2=\"{ox:.1}\" y2=\"{}\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>",
            h - bottom
        );
    }
    for (s, values) in series.iter().enumerate() {
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(i),
                        y(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            svg,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>",
            colors[s % colors.len()]
        );
    }
    svg.push_str("</svg>");
    svg
}

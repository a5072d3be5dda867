//! The other metric source: a Prometheus server's HTTP API (`GET /api/v1/query`) instead of
//! scraping the pods. Prometheus computes the rates and the seed's `queue_depth_per_tenant`
//! (core's PromQL for it); the per-tenant sums feed the tenant-aware policy as the direct
//! scrape's do. Prometheus must scrape the pods: `GET /v1/prometheus-targets` on the
//! autoscaler's API lists them in the format of Prometheus' `http_sd_configs`.
//!
//! A pod Prometheus has no series for is missing (starting, or unreachable once it is older
//! than its start-up grace), as with a failed direct scrape. When Prometheus itself cannot
//! answer, the round has no observation and the loop makes no decision, as Kubernetes' HPA
//! does when its metrics API fails.

use crate::signals::{PodSeen, PoolSignals, idle_demands, tenant_index};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tenantscale_core::catalog::Catalog;
use tenantscale_core::scaling::tenant_aware::queue_depth_promql;
use tenantscale_tls::HttpsConnector;

/// Largest answer read from Prometheus.
const MAX_ANSWER: usize = 8 << 20;

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    /// `http[s]://host:port`, no trailing slash.
    base: String,
    client: Client<HttpsConnector, Empty<Bytes>>,
    /// The range of `rate(...)`: at least two scrapes of Prometheus must fit in it.
    window: Duration,
}

/// One round of queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// By pod address (Prometheus' `instance`); pods without series are absent.
    pub pods: HashMap<String, PodSeen>,
    pub signals: PoolSignals,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerData {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: HashMap<String, String>,
    /// `[unix seconds, "value"]`
    value: (f64, String),
}

impl Series {
    fn number(&self) -> f64 {
        // Prometheus writes NaN and ±Inf as strings too; they count as nothing.
        self.value
            .1
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    }
}

impl PrometheusSource {
    /// `url` is the server's root, e.g. `http://127.0.0.1:9091`; an `https://` one is
    /// verified against the PEM CAs in `ca`, or the system's roots.
    pub fn new(url: &str, ca: Option<&Path>, window: Duration) -> Result<Self, String> {
        let base = url.trim_end_matches('/');
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| format!("--prometheus {url}: not a URL ({e})"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("--prometheus {url}: expected http[s]://HOST:PORT"));
        }
        let connector = tenantscale_tls::http_connector(&uri, ca)
            .map_err(|e| format!("--prometheus {url} (--prometheus-ca): {e}"))?;
        if window < Duration::from_secs(2) {
            return Err(format!(
                "--prometheus-window {}: at least 2 s (two scrapes must fit)",
                window.as_secs_f64()
            ));
        }
        Ok(Self {
            base: base.to_string(),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            window,
        })
    }

    /// The queries of one round, by what they fill in.
    fn queries(&self, selector: &str) -> [(Query, String); 8] {
        let w = format!("{}s", self.window.as_secs());
        let by_tenant = |expr: String| format!("sum by (tenant_id) ({expr})");
        [
            (
                Query::Queued,
                by_tenant(format!("tenant_queue_depth{{{selector}}}")),
            ),
            (
                Query::InFlight,
                by_tenant(format!("tenantscale_in_flight{{{selector}}}")),
            ),
            (
                Query::Arrivals,
                by_tenant(format!(
                    "rate(total_queries_processed_total{{{selector}}}[{w}])"
                )),
            ),
            (
                Query::Busy,
                by_tenant(format!(
                    "rate(tenantscale_busy_seconds_total{{{selector}}}[{w}])"
                )),
            ),
            (Query::QueueDepth, queue_depth_promql(selector, &w)),
            (
                Query::PodQueued,
                format!("sum by (instance) (tenant_queue_depth{{{selector}}})"),
            ),
            (
                Query::PodInFlight,
                format!("sum by (instance) (tenantscale_in_flight{{{selector}}})"),
            ),
            (
                Query::PodState,
                format!("max by (instance, state) (tenantscale_pod_state{{{selector}}}) == 1"),
            ),
        ]
    }

    /// Asks about the pods at `addrs` (Prometheus' `instance` labels).
    pub async fn observe(
        &self,
        catalog: &Catalog,
        addrs: &[String],
        timeout: Duration,
    ) -> Result<Seen, String> {
        let selector = instance_selector(addrs);
        let queries = self.queries(&selector);
        let answers = futures_util::future::join_all(
            queries
                .iter()
                .map(|(_, promql)| self.query(promql, timeout)),
        )
        .await;
        let index = tenant_index(catalog);
        let mut demands = idle_demands(catalog);
        let (mut arrivals, mut busy) = (vec![0.0; demands.len()], vec![0.0; demands.len()]);
        let mut queue_depth = 0.0;
        let mut pods: HashMap<String, PodSeen> = HashMap::new();
        for ((what, _), answer) in queries.iter().zip(answers) {
            for series in answer? {
                let v = series.number();
                let tenant = series
                    .metric
                    .get("tenant_id")
                    .and_then(|id| index.get(id.as_str()).copied());
                let pod = series.metric.get("instance").map(|addr| {
                    pods.entry(addr.clone()).or_insert(PodSeen {
                        state: None,
                        outstanding: 0.0,
                    })
                });
                match (what, tenant, pod) {
                    (Query::Queued, Some(t), _) => demands[t].queued = v,
                    (Query::InFlight, Some(t), _) => demands[t].in_flight = v,
                    (Query::Arrivals, Some(t), _) => arrivals[t] = v,
                    (Query::Busy, Some(t), _) => busy[t] = v,
                    (Query::QueueDepth, ..) => queue_depth = v,
                    (Query::PodQueued | Query::PodInFlight, _, Some(p)) => p.outstanding += v,
                    (Query::PodState, _, Some(p)) => {
                        p.state = series.metric.get("state").cloned();
                    }
                    _ => {}
                }
            }
        }
        for ((d, arrivals), busy) in demands.iter_mut().zip(arrivals).zip(busy) {
            d.set_rates(arrivals, busy);
        }
        Ok(Seen {
            pods,
            signals: PoolSignals {
                demands,
                queue_depth_per_tenant: queue_depth,
            },
        })
    }

    async fn query(&self, promql: &str, timeout: Duration) -> Result<Vec<Series>, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .append_pair("timeout", &format!("{}ms", timeout.as_millis()))
            .finish();
        let url = format!("{}/api/v1/query?{query}", self.base);
        let exchange = async {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
            let res = self
                .client
                .get(uri)
                .await
                .map_err(|e| tenantscale_tls::describe(&e))?;
            let status = res.status();
            let body = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let answer: Answer = serde_json::from_slice(&body)
                .map_err(|e| format!("status {status}, not a Prometheus API answer ({e})"))?;
            match (answer.status.as_str(), answer.data) {
                ("success", Some(data)) if data.result_type == "vector" => Ok(data.result),
                ("success", Some(data)) => {
                    Err(format!("expected a vector, got a {}", data.result_type))
                }
                _ => Err(answer.error.unwrap_or_else(|| format!("status {status}"))),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| format!("Prometheus at {}: {e} (query: {promql})", self.base))
    }
}

#[derive(Debug, Clone, Copy)]
enum Query {
    Queued,
    InFlight,
    Arrivals,
    Busy,
    QueueDepth,
    PodQueued,
    PodInFlight,
    PodState,
}

/// `instance=~"127\\.0\\.0\\.1:4001|…"`: only this pool's pods.
fn instance_selector(addrs: &[String]) -> String {
    let alternatives: Vec<String> = addrs
        .iter()
        .map(|a| {
            a.chars()
                .flat_map(|c| match c {
                    // A regex metacharacter, escaped for the regex and then for PromQL's string.
                    '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '|' | '^' | '$' | '{' | '}' => {
                        vec!['\\', '\\', c]
                    }
                    '"' => vec!['\\', '"'],
                    '\\' => vec!['\\', '\\', '\\', '\\'],
                    c => vec![c],
                })
                .collect()
        })
        .collect();
    format!("instance=~\"{}\"", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_matches_exactly_the_pool_s_pods() {
        assert_eq!(
            instance_selector(&["127.0.0.1:4001".into(), "[::1]:80".into()]),
            r#"instance=~"127\\.0\\.0\\.1:4001|\\[::1\\]:80""#
        );
    }

    #[test]
    fn bad_urls_and_windows_are_refused_with_the_flag_named() {
        let w = Duration::from_secs(10);
        assert!(PrometheusSource::new("http://127.0.0.1:9091/", None, w).is_ok());
        for bad in ["ftp://prom:9090", "127.0.0.1:9091", "http://"] {
            let e = PrometheusSource::new(bad, None, w).unwrap_err();
            assert!(e.starts_with("--prometheus "), "{e}");
        }
        // A CA for a plain URL: a forgotten `s` would send in the clear.
        let ca = Path::new("/etc/hostname");
        let e = PrometheusSource::new("http://p:1", Some(ca), w).unwrap_err();
        assert!(e.contains("not https://"), "{e}");
        let e = PrometheusSource::new("http://p:1", None, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("--prometheus-window"), "{e}");
    }

    #[test]
    fn answers_are_read_as_prometheus_writes_them() {
        let a: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"tenant_id":"media-1"},"value":[1700000000.5,"12.5"]},
                {"metric":{},"value":[1700000000.5,"NaN"]}]}}"#,
        )
        .unwrap();
        let result = a.data.unwrap().result;
        assert_eq!(result[0].number(), 12.5);
        assert_eq!(result[1].number(), 0.0);
        let e: Answer = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#,
        )
        .unwrap();
        assert_eq!(e.error.as_deref(), Some("parse error at char 4"));
    }

    #[tokio::test]
    async fn an_https_prometheus_is_asked_through_tls_trusting_the_given_ca() {
        use tenantscale_tls::testing::{TestCa, https_double};
        let ca = TestCa::new("test CA");
        let answer = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"127.0.0.1:4001"},"value":[1,"2"]}]}}"#;
        let prometheus = https_double(&ca.issue(), answer).await;
        let url = format!("https://127.0.0.1:{}", prometheus.port());
        let ca_file =
            std::env::temp_dir().join(format!("tenantscale-prom-ca-{}", std::process::id()));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let catalog = Catalog::parse(
            "cluster: {cores: 8, memory: 16Gi}\ntiers:\n  gold: {weight: 3, share: 1, maxShare: 0.3}\n\
             tenants:\n  - {id: media-1, tier: gold}\npool: {minReplicas: 1, maxReplicas: 10}\n",
        )
        .unwrap()
        .catalog;
        let (w, timeout) = (Duration::from_secs(10), Duration::from_secs(10));
        let pods = ["127.0.0.1:4001".to_string()];

        let source = PrometheusSource::new(&url, Some(&ca_file), w).unwrap();
        let seen = source.observe(&catalog, &pods, timeout).await.unwrap();
        assert!(seen.pods.contains_key("127.0.0.1:4001"), "{seen:?}");

        // Trusting the system's roots only: the test CA's certificate is refused.
        let source = PrometheusSource::new(&url, None, w).unwrap();
        let e = source.observe(&catalog, &pods, timeout).await.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        let _ = std::fs::remove_file(ca_file);
    }
}

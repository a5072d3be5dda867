//! `tenantscale render`: golden files of the example catalog, `kubernetes-validate --strict`
//! for the oldest and newest supported versions, the seed's HPA on the native path, alert
//! rules through `promtool check rules`, and version-gated fields.

use super::{golden, root, stderr, temp_file, tenantscale};
use std::path::{Path, PathBuf};
use std::process::Command;

fn render(name: &str, catalog: &Path, extra: &[&str]) -> (PathBuf, String) {
    let out =
        std::env::temp_dir().join(format!("tenantscale-render-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "render",
        "-c",
        catalog.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = tenantscale(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    (out, stderr(&o))
}

/// Every rendered file (relative path, text), sorted.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let path = f.path();
            let relative = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .to_string();
            all.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
    all.sort();
    all
}

/// All files as one stream, each under a `# path` comment (the golden form).
fn stream(dir: &Path) -> String {
    files(dir)
        .into_iter()
        .map(|(path, text)| format!("---\n# {path}\n{text}"))
        .collect()
}

fn example() -> PathBuf {
    root().join("examples/gcc-platform.yaml")
}

#[test]
fn render_matches_the_golden_files_and_is_deterministic() {
    let (first, log) = render("golden-a", &example(), &["--kubernetes-version", "1.30"]);
    assert!(
        log.contains("create secret generic tenantscale-secret"),
        "{log}"
    );
    let (second, _) = render("golden-b", &example(), &["--kubernetes-version", "1.30"]);
    assert_eq!(
        stream(&first),
        stream(&second),
        "the same catalog, the same bytes"
    );
    golden("render-tenantscale-1.30.yaml", &stream(&first));
    let (native, _) = render(
        "golden-native",
        &example(),
        &[
            "--kubernetes-version",
            "1.37.0",
            "--hpa",
            "native",
            "--prometheus-operator",
        ],
    );
    golden("render-native-1.37.yaml", &stream(&native));
    for dir in [first, second, native] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `kubernetes-validate --strict` for `version` accepts `files` (`what`, for the message).
/// `kubernetes-validate` (PyPI) is installed by `.ci/run`; elsewhere a missing one skips.
fn assert_valid(version: &str, files: &[PathBuf], what: &str) {
    let o = match Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        .output()
    {
        Ok(o) => o,
        Err(e) => return super::missing(&format!("kubernetes-validate ({e})")),
    };
    assert!(
        o.status.success(),
        "{version} {what}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_rendered_manifest_passes_kubernetes_validate_strict() {
    for version in ["1.30.0", "1.37.0"] {
        for extra in [&[][..], &["--hpa", "native", "--prometheus-operator"][..]] {
            let mut args = vec!["--kubernetes-version", version];
            args.extend_from_slice(extra);
            let (dir, _) = render(
                &format!("validate-{version}-{}", extra.len()),
                &example(),
                &args,
            );
            // prometheus-operator's kinds have no schema there: golden files and promtool
            // cover them.
            let operator_kinds = ["/servicemonitor-", "/podmonitor-", "/prometheusrule-"];
            let paths: Vec<PathBuf> = files(&dir)
                .into_iter()
                .filter(|(p, _)| !operator_kinds.iter().any(|k| p.contains(k)))
                .map(|(p, _)| dir.join(p))
                .collect();
            assert!(paths.len() > 30, "{} files", paths.len());
            assert_valid(version, &paths, &format!("{extra:?}"));
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    value
}

#[test]
fn the_native_path_renders_the_seeds_hpa_and_a_working_adapter_rule() {
    let (dir, _) = render("native", &example(), &["--hpa", "native"]);
    let hpa = yaml(&dir.join("tenantscale/horizontalpodautoscaler-tenantscale-pod.yaml"));
    let spec = &hpa["spec"];
    assert_eq!(spec["minReplicas"], 3);
    assert_eq!(spec["maxReplicas"], 20);
    assert_eq!(spec["scaleTargetRef"]["name"], "tenantscale-pod");
    assert_eq!(
        spec["metrics"][0]["pods"]["metric"]["name"],
        "queue_depth_per_tenant"
    );
    assert_eq!(spec["metrics"][0]["pods"]["target"]["averageValue"], "10");
    assert_eq!(
        spec["metrics"][1]["resource"]["target"]["averageUtilization"],
        70
    );
    let up = &spec["behavior"]["scaleUp"];
    assert_eq!(up["stabilizationWindowSeconds"], 60);
    assert_eq!(
        up["policies"][0],
        serde_json::json!({"type": "Pods", "value": 4, "periodSeconds": 60})
    );
    assert_eq!(
        spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    // The pool is the HPA's: no autoscaler of ours, and no replicas in the Deployment.
    assert!(
        !dir.join("tenantscale/deployment-tenantscale-autoscaler.yaml")
            .exists()
    );
    let pods = yaml(&dir.join("tenantscale/deployment-tenantscale-pod.yaml"));
    assert!(pods["spec"].get("replicas").is_none());
    // The adapter answers per pod (seed NOTES #7), with the pool's value for each.
    let adapter = yaml(&dir.join("tenantscale/configmap-tenantscale-prometheus-adapter.yaml"));
    let rules: serde_json::Value =
        serde_saphyr::from_str(adapter["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let query = rules["rules"][0]["metricsQuery"].as_str().unwrap();
    assert!(query.starts_with("count by (<<.GroupBy>>)"), "{query}");
    assert_eq!(rules["rules"][0]["name"]["as"], "queue_depth_per_tenant");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn silo_tenants_get_a_namespace_quota_limits_and_a_gateway_of_their_own() {
    let (dir, log) = render("silo", &example(), &[]);
    let quota = yaml(&dir.join("tenant-finance-1/resourcequota-gold-quota.yaml"));
    let hard = &quota["spec"]["hard"];
    assert_eq!(
        hard["persistentvolumeclaims"], "5",
        "the seed's gold extras"
    );
    assert_eq!(hard["services.loadbalancers"], "3");
    assert_eq!(hard["limits.cpu"], "12000m", "maxShare 0.30 of 40 cores");
    let bronze = yaml(&dir.join("tenant-retail-3/resourcequota-bronze-quota.yaml"));
    assert_eq!(bronze["spec"]["hard"]["services.loadbalancers"], "0");
    // A bronze tenant's guaranteed 0.36 cores cannot hold a 1-CPU pod: raised, and said so.
    assert!(
        log.contains("tenant retail-3: its tier's guaranteed share"),
        "{log}"
    );
    let gateway = yaml(&dir.join("tenant-finance-1/deployment-tenantscale-finance-1-gateway.yaml"));
    let args = gateway["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("\"--only-tenant\",\"finance-1\""), "{args}");
    let shared = yaml(&dir.join("tenantscale/deployment-tenantscale-gateway.yaml"));
    assert!(shared.to_string().contains("--except-silos"));
    let policy = yaml(&dir.join("tenant-finance-1/networkpolicy-tenantscale-finance-1-pod.yaml"));
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "gateway"
    );
    assert!(
        dir.join("tenant-finance-1/limitrange-tenant-limits.yaml")
            .exists()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_alert_rules_pass_promtool() {
    let (dir, _) = render("rules", &example(), &["--prometheus-operator"]);
    let rule = yaml(&dir.join("tenantscale/prometheusrule-tenantscale.yaml"));
    let rules = temp_file(
        "tenantscale-rules.yaml",
        &serde_saphyr::to_string(&rule["spec"]).unwrap(),
    );
    let o = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (the prometheus package) is installed");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 rules found"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_field_the_cluster_lacks_is_left_out_with_a_warning_never_emitted_invalid() {
    let base = std::fs::read_to_string(example()).unwrap();
    let with_tolerance = base.replacen(
        "      scaleDown:\n        stabilizationWindowSeconds: 300",
        "      scaleDown:\n        tolerance: \"0.05\"\n        stabilizationWindowSeconds: 300",
        1,
    );
    assert_ne!(with_tolerance, base);
    let catalog = temp_file("tolerance.yaml", &with_tolerance);
    let hpa_of =
        |dir: &Path| yaml(&dir.join("tenantscale/horizontalpodautoscaler-tenantscale-pod.yaml"));
    let (old, log) = render(
        "tolerance-old",
        &catalog,
        &["--hpa", "native", "--kubernetes-version", "1.32"],
    );
    assert!(
        log.contains("pool.hpa.behavior.scaleDown.tolerance left out"),
        "{log}"
    );
    assert!(
        hpa_of(&old)["spec"]["behavior"]["scaleDown"]
            .get("tolerance")
            .is_none()
    );
    let (new, log) = render(
        "tolerance-new",
        &catalog,
        &["--hpa", "native", "--kubernetes-version", "1.33"],
    );
    assert!(!log.contains("left out"), "{log}");
    // Kubernetes' canonical form of 0.05.
    assert_eq!(
        hpa_of(&new)["spec"]["behavior"]["scaleDown"]["tolerance"],
        "50m"
    );
    let o = tenantscale(&[
        "render",
        "-c",
        catalog.to_str().unwrap(),
        "-o",
        "/tmp/x",
        "--kubernetes-version",
        "1.29",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("1.30–1.37"), "{}", stderr(&o));
    for dir in [old, new] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn only_the_tenant_api_is_published_the_admin_port_is_scraped_and_the_autoscaler_is_fenced() {
    let text = std::fs::read_to_string(example()).unwrap().replacen(
        "  gatewayReplicas: 2\n",
        "  gatewayReplicas: 2\n  host: rag.example.com\n",
        1,
    );
    let catalog = temp_file("with-host.yaml", &text);
    let (dir, _) = render("published", &catalog, &["--prometheus-operator"]);
    let ns = dir.join("tenantscale");

    // The Ingress routes the tenant API to the tenant port, and nothing else.
    let ingress = yaml(&ns.join("ingress-tenantscale-gateway.yaml"));
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap();
    let routes: Vec<(&str, &str)> = paths
        .iter()
        .map(|p| {
            assert_eq!(p["backend"]["service"]["port"]["name"], "http", "{p}");
            (p["path"].as_str().unwrap(), p["pathType"].as_str().unwrap())
        })
        .collect();
    assert_eq!(routes, [("/v1/", "Prefix"), ("/query", "Exact")]);

    // Every gateway (the shared one and a silo's) has an admin port, scraped there; its
    // probes stay on the tenant port; its Service carries only the tenant port; the admin
    // port is open to the monitoring namespace only.
    for (dir, name) in [
        (ns.clone(), "tenantscale-gateway"),
        (
            dir.join("tenant-finance-1"),
            "tenantscale-finance-1-gateway",
        ),
    ] {
        let gateway = yaml(&dir.join(format!("deployment-{name}.yaml")));
        let template = &gateway["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"]["prometheus.io/port"],
            "9000"
        );
        let container = &template["spec"]["containers"][0];
        assert!(
            container["args"]
                .to_string()
                .contains(r#""--admin-listen","0.0.0.0:9000""#),
            "{}",
            container["args"]
        );
        assert_eq!(
            container["ports"],
            serde_json::json!([
                {"name": "http", "containerPort": 8000},
                {"name": "admin", "containerPort": 9000},
            ])
        );
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], 8000);
        let service = yaml(&dir.join(format!("service-{name}.yaml")));
        assert_eq!(
            service["spec"]["ports"],
            serde_json::json!([{"name": "http", "port": 8000, "targetPort": "http"}])
        );
        let policy = yaml(&dir.join(format!("networkpolicy-{name}.yaml")));
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "gateway"
        );
        assert_eq!(
            policy["spec"]["ingress"],
            serde_json::json!([
                {"ports": [{"protocol": "TCP", "port": 8000}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "monitoring"}}}],
                    "ports": [{"protocol": "TCP", "port": 9000}],
                },
            ])
        );
    }
    let pod_monitor = yaml(&ns.join("podmonitor-tenantscale-gateway.yaml"));
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
        "admin"
    );
    // The ServiceMonitor's port `http` would be the gateway's tenant port: not the gateway.
    let service_monitor = yaml(&ns.join("servicemonitor-tenantscale.yaml"));
    assert_eq!(
        service_monitor["spec"]["selector"]["matchExpressions"][0]["values"],
        serde_json::json!(["pod", "autoscaler"])
    );

    // The autoscaler listens on every address, and only the gateway and the monitoring
    // namespace reach it.
    let autoscaler = yaml(&ns.join("deployment-tenantscale-autoscaler.yaml"));
    let container = &autoscaler["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"]
            .to_string()
            .contains(r#""--listen","0.0.0.0:9090""#)
    );
    let policy = yaml(&ns.join("networkpolicy-tenantscale-autoscaler.yaml"));
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        autoscaler["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(
        ingress[0]["from"],
        serde_json::json!([{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "tenantscale",
            "app.kubernetes.io/instance": "tenantscale",
            "app.kubernetes.io/component": "gateway",
        }}}])
    );
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    for rule in ingress {
        assert_eq!(
            rule["ports"],
            serde_json::json!([{"protocol": "TCP", "port": 9090}])
        );
    }

    let changed: Vec<PathBuf> = [
        "tenantscale/ingress-tenantscale-gateway.yaml",
        "tenantscale/networkpolicy-tenantscale-gateway.yaml",
        "tenantscale/networkpolicy-tenantscale-autoscaler.yaml",
        "tenantscale/deployment-tenantscale-gateway.yaml",
        "tenantscale/deployment-tenantscale-autoscaler.yaml",
    ]
    .iter()
    .map(|p| dir.join(p))
    .collect();
    for version in ["1.30.0", "1.37.0"] {
        assert_valid(version, &changed, "with an Ingress");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn render_and_check_refuse_replicas_that_would_not_share_their_store_or_redis() {
    let text = std::fs::read_to_string(example()).unwrap();
    let unwired = text
        .replacen("  store: {secret: tenantscale-store, key: url}\n", "", 1)
        .replacen("  redis: deploy\n", "", 1);
    assert_ne!(unwired, text);
    let catalog = temp_file("unwired.yaml", &unwired);
    let out = std::env::temp_dir().join(format!("tenantscale-unwired-{}", std::process::id()));
    for args in [
        vec![
            "render",
            "-c",
            catalog.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        vec!["check", "-c", catalog.to_str().unwrap()],
    ] {
        let o = tenantscale(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("kubernetes.store (line ")
                && e.contains("required when pool.maxReplicas > 1 (it is 20)"),
            "{args:?}: {e}"
        );
        assert!(
            e.contains("kubernetes.redis (line ")
                && e.contains("required when kubernetes.gatewayReplicas > 1 (it is 2)"),
            "{args:?}: {e}"
        );
    }
    assert!(!out.exists(), "nothing rendered");
    // Without a kubernetes section the catalog still serves locally (check passes), but
    // render, deploying the defaults, asks the same.
    let local = temp_file("local.yaml", unwired.split("kubernetes:").next().unwrap());
    assert!(
        tenantscale(&["check", "-c", local.to_str().unwrap()])
            .status
            .success()
    );
    let o = tenantscale(&[
        "render",
        "-c",
        local.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("kubernetes.store: required"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing rendered");
}

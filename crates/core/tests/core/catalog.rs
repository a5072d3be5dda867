//! The tenant catalog: the seed's quota example, the 52-tenant platform, and bad input.

use tenantscale_core::catalog::{Catalog, PolicyKind};

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[test]
fn seed_quota_example_reproduces_the_seed() {
    let loaded = Catalog::parse(&example("seed-quota.yaml")).unwrap();
    let table = loaded.catalog.quota_table();
    assert_eq!(table.headroom, 0.0);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "tiers" && w.message.contains("headroom")),
        "the seed's shares leave no headroom: {:?}",
        loaded.warnings
    );
    let tier = |name: &str| table.tiers.iter().find(|t| t.name == name).unwrap();
    assert_eq!(
        (
            tier("gold").tenants,
            tier("gold").resources.cpu,
            tier("gold").resources.pods
        ),
        (10, 12.0, 6)
    );
    assert_eq!(
        (
            tier("silver").tenants,
            tier("silver").resources.cpu,
            tier("silver").resources.pods
        ),
        (20, 20.0, 10)
    );
    assert_eq!(
        (
            tier("bronze").tenants,
            tier("bronze").resources.cpu,
            tier("bronze").resources.pods
        ),
        (20, 8.0, 4)
    );
    for (id, cpu, gib, max_cpu, max_pods) in [
        ("gold-1", 1.2, 2.4, 12.0, 6),
        ("silver-7", 1.0, 2.0, 8.0, 4),
        ("bronze-20", 0.4, 0.8, 4.0, 2),
    ] {
        let t = table.tenants.iter().find(|t| t.id == id).unwrap();
        assert_eq!(t.guaranteed.cpu, cpu, "{id} cpu");
        assert_eq!(
            t.guaranteed.memory_bytes,
            (gib * GIB).round() as i64,
            "{id} memory"
        );
        assert_eq!(
            t.guaranteed.pods, 1,
            "{id}: a fraction of a pod rounds up to 1"
        );
        assert_eq!((t.max.cpu, t.max.pods), (max_cpu, max_pods), "{id} max");
    }
}

#[test]
fn gcc_platform_loads_clean() {
    let loaded = Catalog::parse(&example("gcc-platform.yaml")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.catalog;
    assert_eq!(c.tenants.len(), 52);
    assert_eq!(
        c.tenants
            .iter()
            .filter(|t| t.id.starts_with("media-"))
            .count(),
        8
    );
    assert!(
        c.tenants
            .iter()
            .filter(|t| t.id.starts_with("media-"))
            .all(|t| c.tier_of(t).name == "gold")
    );
    assert_eq!(c.pool.policy, PolicyKind::TenantAware);
    assert_eq!(c.pool.hpa.metrics.len(), 2);
    assert!((c.quota_table().headroom - 0.10).abs() < 1e-9);
    assert_eq!(c.tenant_aware_entitlement_check(), 48.0);
}

trait Entitlement {
    fn tenant_aware_entitlement_check(&self) -> f64;
}
impl Entitlement for Catalog {
    /// A gold tenant's entitlement: 0.3 × 20 pods × 8 slots.
    fn tenant_aware_entitlement_check(&self) -> f64 {
        self.pool
            .tenant_aware
            .entitlement(self.tenants[0].max_share)
    }
}

const BASE: &str = "cluster: {cores: 40, memory: 80Gi}
tiers:
  gold: {weight: 3, share: 0.3}
  silver: {share: 0.5, maxShare: 0.2}
tenants:
  - {id: media-1, tier: gold}
  - {id: media-2, tier: gold}
  - {id: finance-1, tier: silver}
  - {id: retail-1, tier: silver}
pool: {minReplicas: 3, maxReplicas: 20}
";

fn errors_of(text: &str) -> Vec<String> {
    Catalog::parse(text)
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn errors_name_the_field_path_and_line() {
    let bad = BASE.replace(
        "{id: retail-1, tier: silver}",
        "{id: retail-1, tier: platinum}",
    );
    assert_eq!(
        errors_of(&bad),
        vec![r#"tenants[3].tier (line 9): unknown tier "platinum""#]
    );

    let bad = BASE.replace(
        "{id: media-2, tier: gold}",
        "{id: media-2, tier: gold, colour: red}",
    );
    let e = errors_of(&bad);
    assert!(
        e[0].starts_with("tenants[1].colour (line 7): unknown field `colour`"),
        "{e:?}"
    );

    let bad = BASE.replace(
        "pool: {minReplicas: 3, maxReplicas: 20}",
        "pool: {minReplicas: 3}",
    );
    assert!(
        errors_of(&bad)[0].contains("missing field `maxReplicas`"),
        "{:?}",
        errors_of(&bad)
    );
}

#[test]
fn all_problems_are_reported_together() {
    let bad = BASE
        .replace("{id: media-2, tier: gold}", "{id: Media_2, tier: gold}")
        .replace(
            "{id: finance-1, tier: silver}",
            "{id: media-1, tier: silver, maxShare: 0.4}",
        )
        .replace("share: 0.5,", "share: 1.5,")
        .replace(
            "minReplicas: 3, maxReplicas: 20",
            "minReplicas: 5, maxReplicas: 4",
        );
    let e = errors_of(&bad);
    let expect = [
        "tiers.silver.share (line 4): 1.5 is not in (0, 1]",
        "tiers (line 2): shares sum to 1.800, more than the whole cluster",
        r#"tenants[1].id (line 7): "Media_2" is not a DNS-1123 label"#,
        r#"tenants[2].id (line 8): duplicate tenant id "media-1" (first at tenants[0])"#,
        "tenants[2].maxShare (line 8): 0.4 exceeds the default cap of 0.3; set maxShareOverride: true",
        "pool.maxReplicas (line 10): 4 must be >= minReplicas (5)",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn max_share_above_the_cap_needs_an_explicit_override() {
    let over = BASE.replace(
        "{id: finance-1, tier: silver}",
        "{id: finance-1, tier: silver, maxShare: 0.4, maxShareOverride: true}",
    );
    let c = Catalog::parse(&over).unwrap().catalog;
    assert_eq!(c.tenants[2].max_share, 0.4);
}

#[test]
fn api_keys_and_hpa_specs_are_checked() {
    let bad = BASE.replace(
        "{id: media-1, tier: gold}",
        "{id: media-1, tier: gold, apiKeySha256: abc}",
    );
    assert!(
        errors_of(&bad)[0]
            .starts_with("tenants[0].apiKeySha256 (line 6): must be 64 hexadecimal digits")
    );
    let bad = BASE.replace(
        "pool: {minReplicas: 3, maxReplicas: 20}",
        "pool:\n  minReplicas: 3\n  maxReplicas: 20\n  policy: hpa\n  hpa:\n    metrics:\n      - type: Pods\n        pods: {metric: {name: q}, target: {type: AverageValue, averageValue: \"-1\"}}\n",
    );
    let e = errors_of(&bad);
    assert!(
        e[0].starts_with("pool.hpa.metrics[0].pods.target.averageValue"),
        "{e:?}"
    );
    let missing = BASE.replace(
        "pool: {minReplicas: 3, maxReplicas: 20}",
        "pool: {maxReplicas: 20, policy: hpa}",
    );
    assert!(
        errors_of(&missing)[0].starts_with("pool.hpa.metrics"),
        "{:?}",
        errors_of(&missing)
    );
}

#[test]
fn missing_api_keys_and_empty_tiers_are_warnings() {
    let text = BASE.replace(
        "silver: {share: 0.5, maxShare: 0.2}",
        "silver: {share: 0.5, maxShare: 0.2}\n  bronze: {share: 0.1}",
    );
    let loaded = Catalog::parse(&text).unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("tiers.bronze (line 5): no tenant is in this tier")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|w| w.contains("has no apiKeySha256")),
        "{w:#?}"
    );
}

#[test]
fn json_catalogs_are_accepted_with_the_same_errors() {
    let json = r#"{"cluster": {"cores": 8, "memory": "16Gi"},
        "tiers": {"gold": {"share": 0.5, "weight": 3}},
        "tenants": [{"id": "media-1", "tier": "gold"}],
        "pool": {"maxReplicas": 4}}"#;
    let c = Catalog::parse(json).unwrap().catalog;
    assert_eq!(
        (c.cluster.cores, c.tenants[0].weight, c.pool.min_replicas),
        (8.0, 3, 3)
    );
    let bad = json.replace(r#""tier": "gold""#, r#""tier": "platinum""#);
    assert_eq!(
        errors_of(&bad),
        vec![r#"tenants[0].tier (line 3): unknown tier "platinum""#]
    );
}

#[test]
fn the_kubernetes_section_defaults_and_names_bad_fields() {
    let k = Catalog::parse(BASE).unwrap().catalog.kubernetes;
    assert_eq!(k.namespace, "tenantscale");
    assert_eq!(k.requests.cpu.to_string(), "1");
    assert_eq!(k.limits.memory.to_string(), "2Gi");
    assert_eq!(k.gateway_replicas, 2);
    let bad = format!(
        "{BASE}kubernetes:\n  namespace: Tenant_Scale\n  podResources:\n    requests: {{cpu: \"2\", memory: 1Gi}}\n    limits: {{cpu: \"1\", memory: 1Gi}}\n  gatewayReplicas: 0\n  host: \"bad host\"\n"
    );
    let errors = errors_of(&bad);
    for expected in [
        "kubernetes.namespace (line 12)",
        "kubernetes.podResources.limits.cpu (line 15): 1 is less than the request (2)",
        "kubernetes.gatewayReplicas (line 16): 0 is not in [1, 100]",
        "kubernetes.host (line 17)",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected} in {errors:#?}"
        );
    }
    let unknown = errors_of(&format!("{BASE}kubernetes: {{replicas: 3}}\n"));
    assert!(unknown[0].starts_with("kubernetes.replicas"), "{unknown:?}");
    let silo = Catalog::parse(&BASE.replace(
        "{id: media-2, tier: gold}",
        "{id: media-2, tier: gold, silo: true}",
    ))
    .unwrap()
    .catalog;
    assert_eq!(silo.tenants.iter().filter(|t| t.silo).count(), 1);
}

#[test]
fn a_kubernetes_section_must_share_the_store_and_redis_among_replicas() {
    use tenantscale_core::catalog::{Redis, SecretKey};
    // BASE: maxReplicas 20, and the default 2 gateways.
    let errors = errors_of(&format!("{BASE}kubernetes:\n  namespace: rag\n"));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "kubernetes.store (line 11): required when pool.maxReplicas > 1 (it is 20)"
        ),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(
            "kubernetes.redis (line 11): required when kubernetes.gatewayReplicas > 1 (it is 2)"
        ),
        "{errors:#?}"
    );
    // One pod and one gateway share nothing: neither is needed.
    let single = BASE.replace(
        "minReplicas: 3, maxReplicas: 20",
        "minReplicas: 1, maxReplicas: 1",
    );
    let k = Catalog::parse(&format!("{single}kubernetes: {{gatewayReplicas: 1}}\n"))
        .unwrap()
        .catalog;
    assert!(k.unshared().is_empty());
    assert_eq!((k.kubernetes.store, k.kubernetes.redis), (None, None));

    let wired = Catalog::parse(&format!(
        "{BASE}kubernetes:\n  store: {{secret: pg, key: url}}\n  redis: {{secret: redis.example, key: redis-url}}\n"
    ))
    .unwrap()
    .catalog
    .kubernetes;
    let key = |secret: &str, key: &str| SecretKey {
        secret: secret.into(),
        key: key.into(),
    };
    assert_eq!(wired.store, Some(key("pg", "url")));
    assert_eq!(
        wired.redis,
        Some(Redis::Secret(key("redis.example", "redis-url")))
    );
    let deploy = Catalog::parse(&format!(
        "{BASE}kubernetes: {{store: {{secret: pg, key: url}}, redis: deploy}}\n"
    ))
    .unwrap()
    .catalog;
    assert_eq!(deploy.kubernetes.redis, Some(Redis::Deploy));

    // Without the section the catalog serves locally as before; `render` asks the same.
    let local = Catalog::parse(BASE).unwrap().catalog;
    let paths: Vec<String> = local.unshared().iter().map(|p| p.path.clone()).collect();
    assert_eq!(paths, ["kubernetes.store", "kubernetes.redis"]);

    for (section, expected) in [
        (
            "kubernetes:\n  store: {secret: Bad_Name, key: \"a/b\"}\n  redis: deploy\n",
            vec![
                "kubernetes.store.secret (line 12): \"Bad_Name\" is not a Secret name",
                "kubernetes.store.key (line 12): \"a/b\" is not a Secret key",
            ],
        ),
        (
            "kubernetes:\n  store: {secret: pg, key: url}\n  redis: {secret: r, key: \"..x\"}\n",
            vec!["kubernetes.redis.key (line 13): \"..x\" is not a Secret key"],
        ),
        (
            "kubernetes:\n  store: {secret: pg, key: url}\n  redis: deploy-it\n",
            vec![
                "kubernetes.redis (line 13): invalid value: string \"deploy-it\", expected deploy, or {secret, key}",
            ],
        ),
        (
            "kubernetes:\n  store: {secret: pg, key: url}\n  redis: {secret: r}\n",
            vec!["kubernetes.redis"],
        ),
        (
            "kubernetes:\n  store: {secret: pg, key: url, optional: true}\n",
            vec!["kubernetes.store"],
        ),
    ] {
        let errors = errors_of(&format!("{BASE}{section}"));
        for e in &expected {
            assert!(
                errors.iter().any(|x| x.starts_with(e)),
                "{e} in {errors:#?}"
            );
        }
    }
}

#[test]
fn the_restart_only_checksum_follows_restart_only_fields_and_nothing_else() {
    let sha = |text: &str| Catalog::parse(text).unwrap().catalog.restart_only_sha256();
    let base = sha(BASE);
    assert_eq!(base.len(), 64);
    assert_eq!(base, sha(BASE), "deterministic");
    let slots = BASE.replace("maxReplicas: 20}", "maxReplicas: 20, slotsPerPod: 4}");
    assert_ne!(sha(&slots), base, "pool.slotsPerPod needs a restart");
    let queue = BASE.replace("maxReplicas: 20}", "maxReplicas: 20, queuePerTenant: 50}");
    assert_ne!(sha(&queue), base, "pool.queuePerTenant needs a restart");
    // Reloaded live: tenants, keys, tiers.
    let live = BASE
        .replace(
            "  - {id: retail-1, tier: silver}\n",
            "  - {id: retail-1, tier: silver}\n  - {id: retail-2, tier: gold, apiKeySha256: \"1111111111111111111111111111111111111111111111111111111111111111\"}\n",
        )
        .replace("gold: {weight: 3, share: 0.3}", "gold: {weight: 5, share: 0.25, rateLimit: {rps: 10, burst: 20}}");
    assert_ne!(live, BASE);
    assert_eq!(sha(&live), base);
}

#[test]
fn storage_quotas_default_per_tier_and_are_overridden_per_tenant() {
    use tenantscale_core::catalog::{DEFAULT_STORAGE_QUOTA, StorageQuota};
    let text = BASE
        .replace(
            "gold: {weight: 3, share: 0.3}",
            "gold: {weight: 3, share: 0.3, quota: {documents: 500, bytes: 1Gi}}",
        )
        .replace(
            "{id: media-2, tier: gold}",
            "{id: media-2, tier: gold, quota: {bytes: 2Mi}}",
        )
        .replace(
            "{id: finance-1, tier: silver}",
            "{id: finance-1, tier: silver, quota: {documents: 7}}",
        );
    let c = Catalog::parse(&text).unwrap().catalog;
    let quota = |id: &str| c.tenants.iter().find(|t| t.id == id).unwrap().quota;
    let q = |documents, bytes| StorageQuota { documents, bytes };
    assert_eq!(quota("media-1"), q(500, 1 << 30), "the tier's");
    assert_eq!(quota("media-2"), q(500, 2 << 20), "bytes overridden");
    assert_eq!(quota("retail-1"), DEFAULT_STORAGE_QUOTA, "no tier quota");
    assert_eq!(quota("finance-1"), q(7, DEFAULT_STORAGE_QUOTA.bytes));
    let table = c.quota_table();
    assert_eq!(table.tiers[0].storage, q(500, 1 << 30));
    assert_eq!(table.tenants[1].storage, q(500, 2 << 20));

    let bad = BASE
        .replace(
            "gold: {weight: 3, share: 0.3}",
            "gold: {weight: 3, share: 0.3, quota: {documents: 0, bytes: 10}}",
        )
        .replace(
            "{id: media-2, tier: gold}",
            "{id: media-2, tier: gold, quota: {bytes: 2Pi}}",
        )
        .replace(
            "{id: finance-1, tier: silver}",
            "{id: finance-1, tier: silver, quota: {bytes: -1Mi}}",
        );
    assert_eq!(
        errors_of(&bad),
        vec![
            "tiers.gold.quota.documents (line 3): 0 is not in [1, 1000000000]",
            "tiers.gold.quota.bytes (line 3): 10 is not in [1Ki, 1Ti]",
            "tenants[1].quota.bytes (line 7): 2Pi is not in [1Ki, 1Ti]",
            "tenants[2].quota.bytes (line 8): -1Mi is not in [1Ki, 1Ti]",
        ]
    );
    let e = errors_of(&BASE.replace(
        "{id: retail-1, tier: silver}",
        "{id: retail-1, tier: silver, quota: {bytes: lots}}",
    ));
    assert!(e[0].starts_with("tenants[3].quota.bytes"), "{e:?}");
}

mod parser_never_panics {
    use proptest::prelude::*;
    use tenantscale_core::catalog::Catalog;

    /// Fragments of a real catalog, so mutations reach past the first syntax error.
    const PIECES: &[&str] = &[
        "cluster: {cores: 40, memory: 80Gi}\n",
        "tiers:\n  gold: {weight: 3, share: 0.3, quota: {documents: 5, bytes: 1Mi}}\n",
        "tenants:\n  - {id: a, tier: gold, quota: {bytes: 2Ki}}\n",
        "pool: {minReplicas: 3, maxReplicas: 20}\n",
        "kubernetes: {namespace: x, podResources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 1e400, memory: -0}}}\n",
        "  - ",
        "{",
        "}",
        "[",
        ": ",
        "&a ",
        "*a ",
        "!!binary ",
        "\"\\u",
        "1e99999",
        "-9223372036854775809",
        "9999999999999999999999Ei",
        "\t",
        "\u{feff}",
        "---\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Catalog::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_strings(text in "\\PC{0,400}") {
            let _ = Catalog::parse(&text);
        }

        #[test]
        fn spliced_catalog_pieces(
            picks in proptest::collection::vec(0..PIECES.len(), 0..24),
            cut in 0usize..600,
        ) {
            let text: String = picks.iter().map(|&i| PIECES[i]).collect();
            let cut = (0..=cut.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let _ = Catalog::parse(&text[..cut]);
            let _ = Catalog::parse(&text);
        }
    }
}

#[test]
fn a_reload_keeps_the_running_restart_only_fields_and_takes_the_rest() {
    let catalog = |slots: u32, queue: u32, max: i32| {
        Catalog::parse(&format!(
            "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{share: 0.5}}\n\
             tenants:\n  - {{id: media-1, tier: gold}}\n\
             pool: {{maxReplicas: {max}, slotsPerPod: {slots}, queuePerTenant: {queue}}}\n"
        ))
        .unwrap()
        .catalog
    };
    let running = catalog(8, 100, 4);
    let new = catalog(4, 10, 6);
    assert_eq!(
        running.restart_only_changes(&new),
        vec!["pool.slotsPerPod", "pool.queuePerTenant"]
    );
    let applied = new.keeping_restart_only(&running);
    assert!(running.restart_only_changes(&applied).is_empty());
    assert_eq!(applied.pool.tenant_aware.slots_per_pod, 8);
    assert_eq!(applied.pool.max_replicas, 6, "the rest is the new file's");
    assert_eq!(applied.pool.tenant_aware.max_replicas, 6);
}

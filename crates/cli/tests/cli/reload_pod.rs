//! A catalog that changes while `serve` and `autoscale` run: reached through a symlink that
//! is swapped (as a Kubernetes Secret or ConfigMap mount changes), refused when invalid, and
//! reloaded on SIGHUP.

use super::local::{autoscale, stop, temp_dir, wait_status};
use super::{Server, gateway_headers, http_with, pairs, promtool_accepts, temp_store};
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "reload-test-secret-of-the-gateway";

/// A catalog of `tenants` (all gold) with these pool fields.
fn catalog(tenants: &[&str], pool: &str) -> String {
    let tenants: String = tenants
        .iter()
        .map(|id| format!("  - {{id: {id}, tier: gold}}\n"))
        .collect();
    format!(
        "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{share: 0.5, maxShare: 0.3}}\n\
         tenants:\n{tenants}pool: {{{pool}}}\n"
    )
}

/// Points `link` at `target` in one step: a new link renamed over the old one, as the
/// kubelet swaps a mount's `..data`.
fn swap_link(link: &Path, target: &Path) {
    let next = link.with_extension("next");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(target, &next).unwrap();
    std::fs::rename(&next, link).unwrap();
}

/// A signed query of `tenant` to the pod: (status, body).
fn query(pod: &str, tenant: &str) -> (u16, String) {
    let body = r#"{"query":"replicas"}"#;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let headers = gateway_headers(SECRET, "POST", "/v1/query", tenant, at, body);
    http_with(pod, "POST", "/v1/query", &pairs(&headers), body).unwrap()
}

/// Polls until `done` holds (each try a fresh request); the deadline only bounds a broken run.
fn poll<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = get();
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: last {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(addr: &str) -> String {
    let (status, text) = http_with(addr, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

fn reloads(result: &str, n: u32) -> String {
    format!("tenantscale_catalog_reloads_total{{result=\"{result}\"}} {n}\n")
}

fn info(text: &str) -> String {
    format!(
        "tenantscale_catalog_info{{sha256=\"{}\"}} 1\n",
        tenantscale_core::reload::catalog_sha256(text)
    )
}

fn unknown_tenant((status, body): &(u16, String)) -> bool {
    *status == 503 && body.contains("\"unknown_tenant\"")
}

#[test]
fn pod_and_autoscaler_follow_a_swapped_symlink_refuse_an_invalid_file_and_reload_on_sighup() {
    let dir = temp_dir("reload-pod");
    let first = catalog(
        &["media-1", "finance-1"],
        "minReplicas: 1, maxReplicas: 3, slotsPerPod: 2",
    );
    // retail-1 comes, finance-1 goes, maxReplicas and the restart-only slotsPerPod change.
    let second = catalog(
        &["media-1", "retail-1"],
        "minReplicas: 1, maxReplicas: 5, slotsPerPod: 4",
    );
    // Longer than the catalog written over it below.
    let invalid = format!(
        "cluster: {{cores: 8, memory: 16Gi}}\ntiers:\n  gold: {{share: 0.5}}\n\
         tenants:\n  - {{id: media-1, tier: platinum}}\npool: {{maxReplicas: 0}}\n#{}\n",
        "-".repeat(200)
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (first_file, second_file) = (write("first.yaml", &first), write("second.yaml", &second));
    let invalid_file = write("invalid.yaml", &invalid);
    let link = dir.join("catalog.yaml");
    swap_link(&link, &first_file);

    let store = temp_store("reload-pod");
    let mut pod = Server::start(&[
        "serve",
        "-c",
        link.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--secret",
        SECRET,
        "--warm-up",
        "0",
        "--drain-grace",
        "0",
    ]);
    let auto = autoscale(&link, "127.0.0.1:0", &dir.join("data"), &["--stop-pods"]);
    let status = wait_status(&auto.addr, Duration::from_secs(30), |s| {
        s["pods"][0]["state"] == "ready"
    });
    let child = status["pods"][0]["addr"].as_str().unwrap().to_string();
    let (pod_addr, api) = (pod.addr.clone(), auto.addr.clone());

    assert_eq!(query(&pod_addr, "finance-1").0, 200);
    let refused = query(&pod_addr, "retail-1");
    assert!(unknown_tenant(&refused), "retryable, not 404: {refused:?}");
    for addr in [&pod_addr, &child, &api] {
        let text = metrics(addr);
        assert!(text.contains(&reloads("applied", 0)), "{addr}:\n{text}");
        assert!(text.contains(&info(&first)), "{addr}:\n{text}");
    }

    // The swap: the new tenant is served, the removed one refused, on every process.
    swap_link(&link, &second_file);
    poll(
        "retail-1 served",
        || query(&pod_addr, "retail-1"),
        |r| r.0 == 200,
    );
    assert!(unknown_tenant(&query(&pod_addr, "finance-1")));
    for addr in [&pod_addr, &child, &api] {
        let text = poll(
            "the reload in the metrics",
            || metrics(addr),
            |t| t.contains(&reloads("applied", 1)),
        );
        assert!(text.contains(&info(&second)), "{addr}:\n{text}");
        promtool_accepts(&text);
    }
    // The autoscaler applies a reloaded catalog at its next round, after counting the reload.
    poll(
        "the new maxReplicas in the autoscaler",
        || metrics(&api),
        |t| t.contains("tenantscale_autoscaler_max_replicas 5\n"),
    );
    let line = pod.wait_for("pool.slotsPerPod");
    assert!(line.contains("restarts"), "named as restart-only: {line}");
    assert!(
        metrics(&pod_addr).contains("tenantscale_slots 2\n"),
        "and not applied"
    );

    // An invalid file: refused with its field errors, the running catalog stays.
    swap_link(&link, &invalid_file);
    for addr in [&pod_addr, &api] {
        let text = poll(
            "the refusal in the metrics",
            || metrics(addr),
            |t| t.contains(&reloads("invalid", 1)),
        );
        assert!(text.contains(&reloads("applied", 1)), "{text}");
        assert!(text.contains(&info(&second)), "{text}");
    }
    for field in ["tenants[0].tier", "pool.maxReplicas"] {
        pod.wait_for(field);
    }
    assert_eq!(query(&pod_addr, "retail-1").0, 200, "still served");

    // SIGHUP: the file changes where the 1 s check cannot see it (same inode, length and
    // modification time), so only the signal reloads it.
    let third = catalog(
        &["media-1", "retail-2"],
        "minReplicas: 1, maxReplicas: 5, slotsPerPod: 2",
    );
    let padded = format!("{third}{}\n", "#".repeat(invalid.len() - third.len() - 1));
    let modified = std::fs::metadata(&invalid_file)
        .unwrap()
        .modified()
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&invalid_file)
        .unwrap();
    std::io::Write::write_all(&mut &file, padded.as_bytes()).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    assert!(unknown_tenant(&query(&pod_addr, "retail-2")));
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pod.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    poll(
        "retail-2 served after SIGHUP",
        || query(&pod_addr, "retail-2"),
        |r| r.0 == 200,
    );
    let text = metrics(&pod_addr);
    assert!(text.contains(&reloads("applied", 2)), "{text}");
    assert!(text.contains(&info(&padded)), "{text}");

    pod.terminate();
    let rest = pod.exit_log();
    assert!(rest.contains("dropped=0"), "{rest}");
    stop(auto);
}

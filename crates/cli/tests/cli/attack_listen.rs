//! Attacks on what the listeners tell: the gateway's operator endpoints (`/metrics` names
//! every tenant and pod) are not served to tenants, and the autoscaler's API survives a
//! hostile watch.

use super::{Server, http_with};
use std::net::IpAddr;

const SECRET: &str = "listen-test-secret-0123";

/// `tenantscale gateway` on the demo catalog with `extra`, over a pod address nothing listens
/// on (the operator endpoints need no pod; a proxied request gets 503).
fn gateway_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "gateway",
        "-c",
        "examples/gcc-platform.yaml",
        "--secret",
        SECRET,
        "--pods",
        "127.0.0.1:1",
    ];
    args.extend_from_slice(extra);
    args
}

fn gateway(extra: &[&str]) -> Server {
    Server::start(&gateway_args(extra))
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http_with(addr, "GET", path, &[], "").unwrap()
}

/// The answer to a path that does not exist: nothing tells that `/metrics` is there.
fn assert_not_found(addr: &str, path: &str) {
    let (status, body) = get(addr, path);
    assert_eq!(status, 404, "{addr}{path}: {body}");
    assert!(body.contains(r#""code":"not_found""#), "{body}");
    assert!(
        !body.contains("tenant_id") && !body.contains("127.0.0.1:1"),
        "{body}"
    );
}

#[test]
fn with_an_admin_listener_metrics_are_served_there_and_nowhere_else() {
    let mut gateway = gateway(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let line = gateway.wait_for("admin=");
    let admin = line.split_once("admin=").unwrap().1;
    let admin = admin.split_whitespace().next().unwrap().to_string();
    let tenant = gateway.addr.clone();

    // Even from this machine: the admin listener is where they are.
    assert_not_found(&tenant, "/metrics");
    let (status, text) = get(&admin, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#"tenant_id="media-1""#), "{text}");
    super::promtool_accepts(&text);

    // The probes on both; tenants' requests only on the tenant listener.
    for addr in [&tenant, &admin] {
        assert_eq!(get(addr, "/health").0, 200);
        assert_eq!(get(addr, "/ready").0, 503, "no pod is ready");
    }
    let query = |addr: &str| {
        http_with(
            addr,
            "POST",
            "/v1/query",
            &[("Authorization", "Bearer demo-key-media-1")],
            r#"{"query":"x"}"#,
        )
        .unwrap()
    };
    let (status, body) = query(&tenant);
    assert_eq!(status, 503, "proxied, and no pod: {body}");
    let (status, body) = query(&admin);
    assert_eq!(status, 404, "{body}");
}

/// An address of this machine's other than loopback, if it has one: the source address of a
/// route out (a UDP `connect` sends nothing).
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn without_an_admin_listener_metrics_are_for_loopback_clients_only() {
    let gateway = gateway(&["--listen", "0.0.0.0:0"]);
    let port = gateway.addr.rsplit_once(':').unwrap().1;
    let local = format!("127.0.0.1:{port}");
    let (status, text) = get(&local, "/metrics");
    assert_eq!(status, 200, "{text}");
    super::promtool_accepts(&text);
    // A proxy on this machine relaying someone else's request.
    let (status, body) = http_with(
        &local,
        "GET",
        "/metrics",
        &[("X-Forwarded-For", "203.0.113.9")],
        "",
    )
    .unwrap();
    assert_eq!(status, 404, "{body}");

    // A connection to this machine's own address comes from that address: not loopback.
    let Some(ip) = non_loopback_address() else {
        eprintln!("skipped the non-loopback half: this machine has no other address");
        return;
    };
    let remote = std::net::SocketAddr::new(ip, port.parse().unwrap()).to_string();
    assert_not_found(&remote, "/metrics");
    assert_eq!(get(&remote, "/health").0, 200, "the probes stay reachable");
}

#[test]
fn a_watch_with_a_nan_wait_is_refused_and_the_autoscaler_keeps_serving() {
    let data = std::env::temp_dir().join(format!("tenantscale-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let catalog = super::local::small_pool("nan.yaml", 600);
    let autoscaler = super::local::autoscale(&catalog, "127.0.0.1:0", &data, &["--stop-pods"]);
    for wait in ["NaN", "-1", "inf", "1e400"] {
        let (status, body) = get(
            &autoscaler.addr,
            &format!("/v1/pods?after=0&waitSeconds={wait}"),
        );
        assert_eq!(status, 400, "{wait}: {body}");
        assert!(body.contains("waitSeconds"), "{body}");
    }
    assert_eq!(get(&autoscaler.addr, "/status").0, 200);
    super::local::stop(autoscaler);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn an_admin_listener_must_have_an_address_of_its_own() {
    let run = |listen: &str, admin: &str| {
        super::tenantscale(&gateway_args(&[
            "--listen",
            listen,
            "--admin-listen",
            admin,
        ]))
    };
    let o = run("127.0.0.1:8123", "127.0.0.1:8123");
    assert_eq!(o.status.code(), Some(2), "{}", super::stderr(&o));
    assert!(
        super::stderr(&o).contains("--admin-listen 127.0.0.1:8123: the same address as --listen"),
        "{}",
        super::stderr(&o)
    );
    // Taken by another process: the error names the flag.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let o = run("127.0.0.1:0", &taken);
    assert!(!o.status.success());
    assert!(
        super::stderr(&o).contains(&format!("--admin-listen {taken}: ")),
        "{}",
        super::stderr(&o)
    );
}

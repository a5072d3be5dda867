//! TLS through the real binaries, with certificates made at test time: the gateway's listener
//! (ALPN, certificate reload), Redis (`rediss://`), Postgres (`sslmode`) and an HTTPS LLM.

use super::gateway::{SECRET, Stack};
use super::{
    RedisServer, Server, free_port, http, http_with, ingest, ingest_with, missing, stderr,
    temp_file,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tenantscale_tls::testing::{Issued, TestCa};

const CATALOG: &str = "examples/gcc-platform.yaml";

/// Certificate files as a Kubernetes Secret volume holds them: `tls.crt` and `tls.key` are
/// links into `..data`, itself a link to a versioned directory that an update swaps at once.
struct SecretMount {
    dir: PathBuf,
    version: usize,
}

impl SecretMount {
    fn new(cert_pem: &str, key_pem: &str) -> Self {
        let dir = temp_file("secret", "");
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let mut mount = Self { dir, version: 0 };
        mount.update(cert_pem, key_pem);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.join(name)).unwrap();
        }
        mount
    }

    fn update(&mut self, cert_pem: &str, key_pem: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.crt"), cert_pem).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.key"), key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(tmp, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> String {
        self.dir.join("tls.crt").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("tls.key").display().to_string()
    }
}

/// What one TLS request saw.
#[derive(Debug)]
struct Answer {
    version: hyper::Version,
    status: u16,
    body: String,
    /// The server's certificate (DER).
    certificate: Vec<u8>,
}

/// `POST /v1/query` for media-1 over a new TLS connection to `addr` that trusts `ca` and
/// offers `alpn`; HTTP/2 if the server chose `h2`, else HTTP/1.1.
fn https_query(addr: &str, ca: &Path, alpn: &[&[u8]]) -> std::io::Result<Answer> {
    use http_body_util::{BodyExt, Full};
    let mut config = (*tenantscale_tls::client_config(Some(ca)).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await?;
        let (_, session) = tls.get_ref();
        let certificate = session.peer_certificates().unwrap()[0].to_vec();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = hyper_util::rt::TokioIo::new(tls);
        let request = hyper::Request::post(format!("https://{addr}/v1/query"))
            .header("authorization", "Bearer demo-key-media-1")
            .header("content-type", "application/json")
            .body(Full::new(hyper::body::Bytes::from(
                r#"{"query":"replicas"}"#,
            )))
            .unwrap();
        let response = if h2 {
            let executor = hyper_util::rt::TokioExecutor::new();
            let (mut send, conn) = hyper::client::conn::http2::handshake(executor, io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            send.send_request(request).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            send.send_request(request).await
        }
        .map_err(std::io::Error::other)?;
        let (version, status) = (response.version(), response.status().as_u16());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Answer {
            version,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            certificate,
        })
    })
}

/// Reads `server`'s log up to `needle`, for at most 30 s: then the server is killed, and the
/// wait fails instead of hanging.
fn wait_for_log(server: &mut Server, needle: &str) {
    let pid = server.child.id().to_string();
    let (found, timer) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let waited = timer.recv_timeout(Duration::from_secs(30));
        if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    server.wait_for(needle);
    let _ = found.send(());
    watchdog.join().unwrap();
}

fn pod(args: &[&str]) -> Server {
    let store = super::temp_store("tls");
    let mut all = vec!["--store", store.as_str(), "--secret", SECRET];
    all.extend_from_slice(args);
    Server::serve(&all)
}

fn gateway(pod: &Server, args: &[&str]) -> Server {
    Stack::gateway(std::slice::from_ref(pod), args)
}

#[test]
fn gateway_serves_tls_by_alpn_and_follows_its_certificate_files() {
    let ca = TestCa::new("tenantscale test CA");
    let ca_file = temp_file("ca.pem", &ca.pem());
    let first = ca.issue();
    let mut mount = SecretMount::new(&first.cert_pem, &first.key_pem);
    let pod = pod(&[]);
    let mut gateway = gateway(
        &pod,
        &[
            "--tls-cert",
            &mount.cert(),
            "--tls-key",
            &mount.key(),
            "--header-timeout",
            "1",
        ],
    );

    for (alpn, version) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], hyper::Version::HTTP_2),
        (&[b"http/1.1".as_slice()][..], hyper::Version::HTTP_11),
        // No ALPN at all: HTTP/1.1.
        (&[][..], hyper::Version::HTTP_11),
    ] {
        let answer = https_query(&gateway.addr, &ca_file, alpn).unwrap();
        assert_eq!(answer.version, version, "{answer:?}");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body.contains(r#""tenantId":"media-1""#),
            "{answer:?}"
        );
        assert_eq!(answer.certificate, first.der.to_vec());
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = http_with(&gateway.addr, "GET", "/health", &[], "");
    assert!(matches!(plain, Err(_) | Ok((0, _))), "{plain:?}");
    // A handshake that stops half-way (a TLS record header, then nothing) is closed at the
    // header deadline.
    {
        use std::io::{Read, Write};
        let mut stalled = std::net::TcpStream::connect(&gateway.addr).unwrap();
        stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        let limit = Some(Duration::from_secs(30));
        stalled.set_read_timeout(limit).unwrap();
        let read = stalled.read(&mut [0; 64]);
        let closed = match &read {
            Ok(n) => *n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "still open: {read:?}");
    }

    // The Secret is updated: new connections get the new certificate.
    let second = ca.issue();
    mount.update(&second.cert_pem, &second.key_pem);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = https_query(&gateway.addr, &ca_file, &[b"h2"]).unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.certificate == second.der.to_vec() {
            break;
        }
        assert_eq!(answer.certificate, first.der.to_vec());
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_log(&mut gateway, "TLS certificate reloaded");

    // Broken updates (not PEM; a key that is not the certificate's) are logged and the
    // certificate in use stays.
    let third = ca.issue();
    for (cert, key) in [
        ("not a certificate", second.key_pem.as_str()),
        (third.cert_pem.as_str(), second.key_pem.as_str()),
    ] {
        mount.update(cert, key);
        wait_for_log(&mut gateway, "keeping the certificate in use");
        let answer = https_query(&gateway.addr, &ca_file, &[b"http/1.1"]).unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.certificate, second.der.to_vec());
    }
    // A client that trusts another CA refuses the gateway.
    let other = temp_file("other-ca.pem", &TestCa::new("another CA").pem());
    let refused = https_query(&gateway.addr, &other, &[b"h2"]).unwrap_err();
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
}

#[test]
fn gateway_refuses_unusable_tls_files_at_start() {
    let ca = TestCa::new("tenantscale test CA");
    let (one, two) = (ca.issue(), ca.issue());
    let cert = temp_file("cert.pem", &one.cert_pem);
    let wrong_key = temp_file("key.pem", &two.key_pem);
    let o = super::tenantscale(&[
        "gateway",
        "-c",
        CATALOG,
        "--listen",
        "127.0.0.1:0",
        "--secret",
        SECRET,
        "--pods",
        "127.0.0.1:1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        wrong_key.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not the key of"), "{}", stderr(&o));
}

/// A throwaway `redis-server` that speaks only TLS, with a certificate from `ca`.
fn tls_redis(ca: &TestCa) -> Option<RedisServer> {
    let cert = ca.issue();
    let files = [
        temp_file("redis.crt", &cert.cert_pem),
        temp_file("redis.key", &cert.key_pem),
        temp_file("redis-ca.crt", &ca.pem()),
    ];
    let port = free_port();
    RedisServer::launch(port, "rediss", |c| {
        c.args(["--tls-port", &port.to_string(), "--port", "0"])
            .arg("--tls-cert-file")
            .arg(&files[0])
            .arg("--tls-key-file")
            .arg(&files[1])
            .arg("--tls-ca-cert-file")
            .arg(&files[2])
            .args(["--tls-auth-clients", "no"])
    })
}

#[test]
fn the_gateway_and_the_pod_reach_redis_over_tls() {
    let ca = TestCa::new("tenantscale test CA");
    let Some(redis) = tls_redis(&ca) else {
        return;
    };
    let ca_file = temp_file("ca.pem", &ca.pem());
    let ca_arg = ca_file.to_str().unwrap();
    let mut conn = tenantscale_tls::redis_client(&redis.url, Some(&ca_file))
        .unwrap()
        .get_connection()
        .unwrap();

    // The pod's warm-up flag.
    let pod = pod(&[
        "--redis",
        &redis.url,
        "--redis-ca",
        ca_arg,
        "--pod-ip",
        "10.0.0.9",
    ]);
    let flag: Option<String> = redis::cmd("GET")
        .arg("pod:10.0.0.9:warming_up")
        .query(&mut conn)
        .unwrap();
    assert_eq!(flag.as_deref(), Some("true"));

    // The gateway's shared limits: retail-3's rate state is kept in Redis.
    let sharing = gateway(&pod, &["--redis", &redis.url, "--redis-ca", ca_arg]);
    gateway_query(&sharing, "retail-3");
    let tat: Option<i64> = redis::cmd("GET")
        .arg("tenantscale:{retail-3}:rate")
        .query(&mut conn)
        .unwrap();
    assert!(tat.is_some(), "no shared rate state in Redis");

    // A gateway that trusts only the system's roots refuses the test CA's certificate: it
    // serves with its local limits, and nothing reaches Redis.
    let untrusting = gateway(&pod, &["--redis", &redis.url]);
    gateway_query(&untrusting, "retail-4");
    let tat: Option<i64> = redis::cmd("GET")
        .arg("tenantscale:{retail-4}:rate")
        .query(&mut conn)
        .unwrap();
    assert_eq!(tat, None);
}

fn gateway_query(gateway: &Server, tenant: &str) {
    let key = format!("Bearer demo-key-{tenant}");
    let (status, body) = http_with(
        &gateway.addr,
        "POST",
        "/v1/query",
        &[("Authorization", &key)],
        r#"{"query":"replicas"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// A throwaway Postgres that takes only TLS connections (`hostssl`), with a certificate from
/// `ca`, started like `.ci/run` starts the shared one (as the `postgres` user when root).
struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
    as_root: bool,
    port: u16,
}

impl TlsPostgres {
    fn start(ca: &TestCa) -> Option<Self> {
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| v.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .max()
            });
        let Some(version) = newest else {
            missing("Postgres (/usr/lib/postgresql/VERSION/bin)");
            return None;
        };
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let id = Command::new("id").arg("-u").output().unwrap();
        let as_root = String::from_utf8_lossy(&id.stdout).trim() == "0";
        let data = temp_file("pgdata", "");
        std::fs::remove_file(&data).unwrap();
        std::fs::create_dir(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self {
            bin,
            data,
            as_root,
            port,
        };
        server.chown();
        let initdb = server
            .run("initdb")
            .arg("-D")
            .arg(&server.data)
            .args(["-A", "trust", "-U", "tenantscale"])
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {}", stderr(&initdb));
        let cert = ca.issue();
        std::fs::write(server.data.join("server.crt"), &cert.cert_pem).unwrap();
        std::fs::write(server.data.join("server.key"), &cert.key_pem).unwrap();
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let key = server.data.join("server.key");
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
        server.chown();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on",
            server.data.display()
        );
        let log = server.data.join("server.log");
        let started = server
            .run("pg_ctl")
            .arg("-D")
            .arg(&server.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-o", &options, "start"])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start: {}{}",
            stderr(&started),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(server)
    }

    /// `tool` of this Postgres, run as the `postgres` user when we are root.
    fn run(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool);
            command
        } else {
            Command::new(tool)
        }
    }

    fn chown(&self) {
        if self.as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&self.data)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn url(&self) -> String {
        format!("postgres://tenantscale@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .run("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn the_store_reaches_postgres_over_tls_when_sslmode_asks() {
    let ca = TestCa::new("tenantscale test CA");
    let Some(postgres) = TlsPostgres::start(&ca) else {
        return;
    };
    let ca_file = temp_file("ca.pem", &ca.pem());
    let doc = temp_file("tls.md", "Replicas follow demand.");
    let base = postgres.url();
    // The server takes TLS only: without sslmode the store connects in plain text, refused.
    let o = ingest_with(&base, "media-1", &doc, &[]);
    assert!(!o.status.success(), "{}", stderr(&o));
    for mode in ["require", "verify-full"] {
        let url = format!("{base}?sslmode={mode}&sslrootcert={}", ca_file.display());
        ingest(&url, "media-1", &doc);
    }
    // The pod serves from it.
    let url = format!("{base}?sslmode=require&sslrootcert={}", ca_file.display());
    let pod = Server::serve(&["--store", &url, "--trust-tenant-header"]);
    let (status, body) = http(
        &pod.addr,
        "POST",
        "/v1/query",
        "media-1",
        r#"{"query":"replicas"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Replicas follow demand"), "{body}");
    // A server whose certificate the given CA did not sign is refused.
    let other = temp_file("other-ca.pem", &TestCa::new("another CA").pem());
    let url = format!("{base}?sslmode=require&sslrootcert={}", other.display());
    let o = ingest_with(&url, "media-1", &doc, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("UnknownIssuer"), "{}", stderr(&o));
}

#[test]
fn sslmode_require_refuses_a_postgres_without_tls() {
    let Some(plain) = super::fresh_postgres_database("tenantscale_tls") else {
        return;
    };
    let ca_file = temp_file("ca.pem", &TestCa::new("tenantscale test CA").pem());
    let doc = temp_file("tls.md", "Replicas follow demand.");
    let url = format!("{plain}?sslmode=require&sslrootcert={}", ca_file.display());
    let o = ingest_with(&url, "media-1", &doc, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("server does not support TLS"),
        "{}",
        stderr(&o)
    );
}

/// The LLM test double's answer.
const LLM_ANSWER: &str =
    r#"{"choices":[{"message":{"role":"assistant","content":"from the https LLM test double"}}]}"#;

#[test]
fn the_pod_asks_an_https_llm_trusting_the_given_ca() {
    let ca = TestCa::new("tenantscale test CA");
    let cert: Issued = ca.issue();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let llm = runtime.block_on(tenantscale_tls::testing::https_double(&cert, LLM_ANSWER));
    let llm_url = format!("https://127.0.0.1:{}/v1/chat/completions", llm.port());
    let ca_file = temp_file("ca.pem", &ca.pem());
    let query = r#"{"query":"replicas","generate":true}"#;

    let pod = pod(&[
        "--trust-tenant-header",
        "--llm-url",
        &llm_url,
        "--llm-ca",
        ca_file.to_str().unwrap(),
    ]);
    let (status, body) = http(&pod.addr, "POST", "/v1/query", "media-1", query).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("from the https LLM test double"), "{body}");

    // Trusting only the system's roots, the pod refuses the test CA's certificate.
    let pod = self::pod(&["--trust-tenant-header", "--llm-url", &llm_url]);
    let (status, body) = http(&pod.addr, "POST", "/v1/query", "media-1", query).unwrap();
    assert_eq!(status, 502, "{body}");

    // A CA file for a plain http:// URL is a mistake, refused.
    let o = super::tenantscale(&[
        "serve",
        "-c",
        CATALOG,
        "--trust-tenant-header",
        "--llm-url",
        "http://127.0.0.1:1/v1/chat/completions",
        "--llm-ca",
        ca_file.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not https://"), "{}", stderr(&o));
}

#[test]
fn the_autoscaler_keeps_its_state_in_redis_over_tls() {
    use super::local::{autoscale, ready_pods, stop, temp_dir, wait_status};
    let ca = TestCa::new("tenantscale test CA");
    let Some(redis) = tls_redis(&ca) else {
        return;
    };
    let ca_file = temp_file("ca.pem", &ca.pem());
    let data = temp_dir("tls-state");
    let catalog = super::root().join(CATALOG);
    let flags = [
        "--redis",
        redis.url.as_str(),
        "--redis-ca",
        ca_file.to_str().unwrap(),
        "--state-key",
        "test:tls",
        "--stop-pods",
    ];
    let autoscaler = autoscale(&catalog, "127.0.0.1:0", &data, &flags);
    wait_status(&autoscaler.addr, Duration::from_secs(30), |s| {
        ready_pods(s) == 3
    });
    stop(autoscaler);
    let mut conn = tenantscale_tls::redis_client(&redis.url, Some(&ca_file))
        .unwrap()
        .get_connection()
        .unwrap();
    let stored: String = redis::cmd("GET").arg("test:tls").query(&mut conn).unwrap();
    assert!(stored.contains(r#""policy": "tenant-aware""#), "{stored}");
    let _ = std::fs::remove_dir_all(data);
}

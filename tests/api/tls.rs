//! TLS to PostgreSQL (SPEC "Backends"): a cluster of the test's own, restarted with `ssl = on`,
//! a server certificate for `localhost` signed by a CA made in the test, and a `pg_hba.conf`
//! that refuses every connection without TLS. The engine honours the URL's `sslmode` and
//! `sslrootcert`: with the right CA it starts and places an order over TLS; a certificate that
//! fails verification (another CA, or a host name it was not made for), or no TLS at all,
//! stops start-up with libpq's reason in one error line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

use crate::helpers::*;
use crate::invariants;
use crate::pg_cluster::PgCluster;
use crate::process::EngineProcess;

/// Only TLS connections over TCP; the socket (the cluster's own tools) stays open.
const HBA: &str = "local all all trust\n\
                   hostssl all all 127.0.0.1/32 trust\n\
                   hostssl all all ::1/128 trust\n\
                   hostnossl all all 0.0.0.0/0 reject\n\
                   hostnossl all all ::/0 reject\n";

/// A certificate authority made for one test run.
struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        TestCa { cert, key }
    }

    /// A server certificate for `host`, and its private key, both PEM.
    fn server(&self, host: &str) -> (String, String) {
        let key = KeyPair::generate().expect("a server key");
        let mut params = CertificateParams::new(vec![host.to_string()]).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, host);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a server certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA certificate to `dir/file` and returns its path.
    fn write(&self, dir: &Path, file: &str) -> String {
        let path = dir.join(file);
        std::fs::write(&path, self.cert.pem()).expect("write the CA certificate");
        path.display().to_string()
    }
}

/// `url` with its query string replaced by `query`.
fn with_query(url: &str, query: &str) -> String {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    format!("{base}?{query}")
}

/// Runs `order-engine serve` on `url`, expecting start-up to fail; its exit status and stderr.
fn start_fails(dir: &Path, url: &str) -> (std::process::ExitStatus, String) {
    let log = dir.join(format!("refused-{}.log", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .arg("serve")
        .current_dir(dir)
        .env("ORDER_ENGINE__DATABASE__URL", url)
        .env("ORDER_ENGINE__SERVER__BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("start the engine binary");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the engine") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the engine kept running on {url}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn postgres_over_tls_verifies_the_server() {
    let Some(cluster) = PgCluster::create() else {
        return;
    };
    let ca = TestCa::new("order-engine test CA");
    let stranger = TestCa::new("some other CA");
    let (cert, key) = ca.server("localhost");
    cluster.write_private("server.crt", &cert);
    cluster.write_private("server.key", &key);
    cluster.write_private("pg_hba.conf", HBA);
    let conf = cluster.dir.join("data").join("postgresql.conf");
    let mut settings = std::fs::read_to_string(&conf).expect("read postgresql.conf");
    settings.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    cluster.write_private("postgresql.conf", &settings);
    cluster.restart();

    let server = format!("postgres://postgres@localhost:{}/postgres", cluster.port);
    // The harness itself connects with TLS too (the server refuses anything else).
    let db = TestDatabase::create_on(&format!("{server}?sslmode=require"));
    // In the cluster's own folder, deleted with it.
    let right = ca.write(&cluster.dir, "ca.pem");
    let wrong = stranger.write(&cluster.dir, "other-ca.pem");

    // The right CA and host name: the engine starts and works, every connection encrypted.
    let verified = with_query(&db.url, &format!("sslmode=verify-full&sslrootcert={right}"));
    let engine = EngineProcess::start(&db, &[("database.url", &verified)]);
    let ready = engine.request("GET", "/readyz", &[], None);
    assert_eq!(
        (ready.status, &ready.json["database"]),
        (200, &json!("ok")),
        "{}",
        ready.text
    );
    let admin = [("Authorization", format!("Bearer {ADMIN_TOKEN}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let post = |path: &str, headers: &[(&str, &str)], body: serde_json::Value| {
        engine.request("POST", path, headers, Some(body.to_string().as_bytes()))
    };
    let user = post("/admin/users", &admin, json!({"name": "tls", "points": 0}));
    user.assert_status(201);
    let course = post(
        "/admin/courses",
        &admin,
        json!({"title": "tls", "price_cents": 100, "on_sale": true, "chapters": ["one"]}),
    );
    course.assert_status(201);
    let token = format!(
        "Bearer {}",
        order_engine::auth::JwtKeys::new(JWT_SECRET)
            .issue(user.json["id"].as_i64().expect("a user id"), 3600)
            .expect("a token")
    );
    let placed = post(
        "/api/orders",
        &[("Authorization", token.as_str())],
        json!({"course_ids": [course.json["id"]]}),
    );
    placed.assert_status(201);
    let mut conn = db.connect();
    #[derive(QueryableByName)]
    struct Seen {
        #[diesel(sql_type = BigInt)]
        encrypted: i64,
        #[diesel(sql_type = BigInt)]
        plain: i64,
    }
    let seen: Seen = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE s.ssl) AS encrypted, \
                count(*) FILTER (WHERE NOT s.ssl) AS plain \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .get_result(&mut conn)
    .expect("read pg_stat_ssl");
    assert!(
        seen.encrypted > 0 && seen.plain == 0,
        "the engine's connections: {} encrypted, {} not",
        seen.encrypted,
        seen.plain
    );
    invariants::check_db(&mut conn, "PostgreSQL over TLS");
    drop(engine);

    // `require` encrypts without verifying: it starts.
    let required = with_query(&db.url, "sslmode=require");
    drop(EngineProcess::start(&db, &[("database.url", &required)]));

    // A certificate that fails verification, or no TLS: start-up stops with libpq's reason.
    let other_host = with_query(&db.url, &format!("sslmode=verify-full&sslrootcert={right}"))
        .replace("@localhost:", "@127.0.0.1:");
    for (what, url, reason) in [
        (
            "a server certificate from another CA",
            with_query(&db.url, &format!("sslmode=verify-full&sslrootcert={wrong}")),
            "certificate verify failed",
        ),
        (
            "a certificate for another host name",
            other_host,
            "does not match host name",
        ),
        (
            "no TLS",
            with_query(&db.url, "sslmode=disable"),
            "no encryption",
        ),
    ] {
        let (status, log) = start_fails(&cluster.dir, &url);
        assert_eq!(status.code(), Some(1), "{what}: {status}\n{log}");
        // libpq's message may span lines (one per address it tried).
        let error = log
            .find("error: cannot connect to the database")
            .map(|at| &log[at..])
            .unwrap_or_else(|| panic!("{what}: no start-up error in\n{log}"));
        assert!(error.contains(reason), "{what}: {error}");
    }
}

//! TLS to PostgreSQL (SPEC "Backends"): the test owns a PostgreSQL cluster started with
//! `ssl=on`, a server certificate signed by a CA made here with the `openssl` tool (for
//! 127.0.0.1 only), and a `pg_hba.conf` that refuses every connection without TLS. The engine
//! honours the URL's `sslmode` and `sslrootcert` as libpq does: `verify-full` with the CA
//! serves (every connection of its pool encrypted); `require` serves without checking the
//! certificate; another CA, another host name or no TLS stops start-up with libpq's reason.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::helpers::*;
use crate::pg_cluster::PgCluster;
use crate::process::EngineProcess;

/// Runs the `openssl` tool in `dir`, asserting success.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A self-signed CA (`{name}.crt`, `{name}.key`) in `dir`.
pub(crate) fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            &format!("/CN=order-engine test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(crt)
}

/// `server.crt` and `server.key` for IP 127.0.0.1 only, signed by the CA `ca`.
pub(crate) fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    );
}

/// Starts `cluster` with TLS on and plain TCP refused, the server certificate from `pki`.
fn start_with_tls(cluster: &PgCluster, pki: &Path) {
    let data = PathBuf::from(cluster.data());
    for file in ["server.crt", "server.key"] {
        std::fs::copy(pki.join(file), data.join(file)).expect("copy the server certificate");
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 trust\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    // The server wants its key private and its own.
    for file in ["server.crt", "server.key", "pg_hba.conf"] {
        cluster.give(&data.join(file));
    }
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    cluster.start(&[
        "-c ssl=on",
        "-c ssl_cert_file=server.crt",
        "-c ssl_key_file=server.key",
    ]);
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// `order-engine serve` on `url`, which must fail: its stderr.
fn failed_start(dir: &Path, url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .arg("serve")
        .current_dir(dir)
        .env("ORDER_ENGINE__DATABASE__URL", url)
        .env("ORDER_ENGINE__SERVER__BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("run the engine");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{url}: {stderr}");
    stderr
}

#[test]
fn the_engine_talks_tls_to_postgresql_as_the_url_says() {
    let Some(cluster) = PgCluster::initdb("PostgreSQL TLS") else {
        return;
    };
    let pki = cluster.dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = make_ca(&pki, "ca");
    let other_ca = make_ca(&pki, "other-ca");
    make_server_cert(&pki, "ca");
    start_with_tls(&cluster, &pki);
    let verify = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url(),
        ca.display()
    );

    // verify-full with the right CA: the engine serves, over TLS only.
    let db = TestDatabase::create_on(&verify);
    let engine = EngineProcess::start(&db, &[]);
    let (_, token) = engine.user_with_token(100);
    let order = engine.place_ok(&token, &[engine.course(1_000)], None, 10);
    engine.pay(&order);
    // Granted before the engine goes (the invariant checker below waits for no engine).
    engine.wait_effects_done(order["order_no"].as_str().unwrap());
    let name = db
        .url
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let mut conn = db.connect();
    let counts = |conn: &mut order_engine::db::DbConnection, ssl: bool| -> i64 {
        let sql = format!(
            "SELECT count(*) AS n FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = '{name}' AND ssl = {ssl}"
        );
        match conn {
            order_engine::db::DbConnection::Postgresql(pg) => {
                diesel::sql_query(sql).get_result::<Count>(pg).unwrap().n
            }
            _ => unreachable!("a PostgreSQL database"),
        }
    };
    assert!(
        counts(&mut conn, true) >= 2,
        "the engine's pool and this connection use TLS"
    );
    assert_eq!(counts(&mut conn, false), 0, "no connection without TLS");
    drop(conn);
    drop(engine);
    crate::invariants::check_db(&mut db.connect(), "over TLS");

    // require: TLS without checking the certificate (what a managed database's default
    // instructions give).
    let require = format!("{}?sslmode=require", cluster.url());
    let mut plain = order_engine::db::ConnectionManager::new(
        order_engine::config::DatabaseUrl::parse(&require).unwrap(),
    )
    .establish()
    .expect("sslmode=require connects");
    if let order_engine::db::DbConnection::Postgresql(pg) = &mut plain {
        let v: Version =
            diesel::sql_query("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .get_result(pg)
                .unwrap();
        assert!(v.version.starts_with("TLS"), "{}", v.version);
    }

    // What must stop start-up, with libpq's reason.
    let dir = cluster.dir.join("engine");
    std::fs::create_dir_all(&dir).unwrap();
    let wrong_ca = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url(),
        other_ca.display()
    );
    let stderr = failed_start(&dir, &wrong_ca);
    assert!(
        stderr.contains("cannot connect to the database")
            && stderr.contains("certificate verify failed"),
        "another CA: {stderr}"
    );
    let wrong_host = verify.replace("127.0.0.1", "localhost");
    let stderr = failed_start(&dir, &wrong_host);
    assert!(
        stderr.contains("does not match host name"),
        "another host name: {stderr}"
    );
    let no_tls = format!("{}?sslmode=disable", cluster.url());
    let stderr = failed_start(&dir, &no_tls);
    assert!(stderr.contains("no encryption"), "no TLS: {stderr}");
    let missing_ca = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url(),
        pki.join("nope.crt").display()
    );
    let stderr = failed_start(&dir, &missing_ca);
    assert!(stderr.contains("nope.crt"), "a missing CA file: {stderr}");
}

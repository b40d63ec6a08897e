//! TLS to MySQL / MariaDB (SPEC "Backends"): the test owns a MariaDB server
//! ([`MariaServer`]) started with a server certificate for 127.0.0.1 signed by a CA made here with the `openssl` tool, and
//! `require_secure_transport`, so it refuses every TCP connection without TLS. It listens on
//! 127.0.0.1 and 127.0.0.2, so the same server can be reached under a name its certificate does
//! not hold. The engine honours the URL's `ssl-mode` and `ssl-ca` as MySQL's clients do:
//! VERIFY_IDENTITY with the CA serves (its pooled connections encrypted); REQUIRED serves
//! without a CA; another CA, another host name, a missing CA file or no TLS stops start-up with
//! the client library's reason.

use std::path::Path;
use std::process::{Command, Stdio};

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::helpers::*;
use crate::mysql_server::MariaServer;
use crate::process::EngineProcess;
use crate::tls::{make_ca, make_server_cert};

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

/// The TLS cipher of `conn`'s session, empty without TLS.
fn cipher(conn: &mut order_engine::db::DbConnection) -> String {
    match conn {
        order_engine::db::DbConnection::Mysql(my) => {
            diesel::sql_query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                .get_result::<Status>(my)
                .expect("read Ssl_cipher")
                .value
        }
        _ => unreachable!("a MySQL database"),
    }
}

/// `order-engine serve` on `url`, which must fail with exit code `code`: its stderr.
fn failed_start(dir: &Path, url: &str, code: i32) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .arg("serve")
        .current_dir(dir)
        .env("ORDER_ENGINE__DATABASE__URL", url)
        .env("ORDER_ENGINE__SERVER__BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("run the engine");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(code), "{url}: {stderr}");
    stderr
}

fn establish(url: &str) -> Result<order_engine::db::DbConnection, String> {
    let url = order_engine::config::DatabaseUrl::parse(url).map_err(|e| format!("parse: {e}"))?;
    order_engine::db::ConnectionManager::new(url)
        .establish()
        .map_err(|e| e.to_string())
}

#[test]
fn the_engine_talks_tls_to_mariadb_as_the_url_says() {
    let dir = std::env::temp_dir().join(format!("oe_my_{}", uuid::Uuid::new_v4().simple()));
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    // Before the server exists, so that its guard deletes the folder.
    let ca = make_ca(&pki, "ca");
    let other_ca = make_ca(&pki, "other-ca");
    make_server_cert(&pki, "ca");
    let Some(server) = MariaServer::start("MariaDB TLS", dir.clone(), Some(&pki)) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let ca = ca.display().to_string();
    let verify = format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}",
        server.url("127.0.0.1")
    );

    // VERIFY_IDENTITY with the right CA: the engine serves, over TLS only. The test's own
    // connections (Diesel's spelling: with a CA, TLS) create and drop the database.
    let db = TestDatabase::create_on_mysql(&format!("{}?ssl_ca={ca}", server.url("127.0.0.1")));
    let name = db
        .url
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let engine_url = with_database(&verify, name);
    let engine = EngineProcess::start(&db, &[("database.url", &engine_url)]);
    let (_, token) = engine.user_with_token(100);
    let order = engine.place_ok(&token, &[engine.course(1_000)], None, 10);
    engine.pay(&order);
    engine.wait_effects_done(order["order_no"].as_str().unwrap());
    drop(engine);
    let pool = order_engine::db::connect(&order_engine::config::DatabaseSettings {
        url: order_engine::config::DatabaseUrl::parse(&engine_url).unwrap(),
        pool_size: 2,
    })
    .expect("a pool over VERIFY_IDENTITY");
    let mut pooled = pool.get().expect("a pooled connection");
    assert!(
        !cipher(&mut pooled).is_empty(),
        "the pool's connections use TLS"
    );
    crate::invariants::check_db(&mut pooled, "over TLS");
    drop(pooled);
    drop(pool);

    // REQUIRED: TLS without a CA, nothing verified (a managed database's quick start).
    let mut required = establish(&format!("{}?ssl-mode=required", server.url("127.0.0.1")))
        .expect("ssl-mode=REQUIRED connects");
    assert!(!cipher(&mut required).is_empty(), "REQUIRED uses TLS");
    drop(required);
    // VERIFY_CA checks the signature, not the name: 127.0.0.2 is not in the certificate.
    let mut verify_ca = establish(&format!(
        "{}?ssl_mode=VERIFY_CA&ssl_ca={ca}",
        server.url("127.0.0.2")
    ))
    .expect("VERIFY_CA connects under another name");
    assert!(!cipher(&mut verify_ca).is_empty(), "VERIFY_CA uses TLS");
    drop(verify_ca);

    // What must stop start-up, with the client library's reason.
    let engine_dir = dir.join("engine");
    std::fs::create_dir_all(&engine_dir).unwrap();
    let wrong_ca = format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        server.url("127.0.0.1"),
        other_ca.display()
    );
    let stderr = failed_start(&engine_dir, &wrong_ca, 1);
    assert!(
        stderr.contains("cannot connect to the database")
            && stderr.contains("TLS/SSL error")
            && stderr.contains("certificate"),
        "another CA: {stderr}"
    );
    let wrong_host = verify.replace("127.0.0.1", "127.0.0.2");
    let stderr = failed_start(&engine_dir, &wrong_host, 1);
    assert!(
        stderr.contains("Validation of SSL server certificate failed"),
        "another host name: {stderr}"
    );
    let missing_ca = format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        server.url("127.0.0.1"),
        pki.join("nope.crt").display()
    );
    let stderr = failed_start(&engine_dir, &missing_ca, 1);
    assert!(
        stderr.contains("TLS/SSL error: No such file or directory"),
        "a missing CA file: {stderr}"
    );
    // DISABLED drops the CA too: a plain connection, which this server refuses.
    let plain = format!("{}?ssl-mode=DISABLED&ssl-ca={ca}", server.url("127.0.0.1"));
    let stderr = failed_start(&engine_dir, &plain, 1);
    assert!(
        stderr.contains("cannot connect to the database") && stderr.contains("Access denied"),
        "no TLS: {stderr}"
    );
    let bad_mode = format!("{}?ssl-mode=sometimes", server.url("127.0.0.1"));
    let stderr = failed_start(&engine_dir, &bad_mode, 2);
    assert!(
        stderr.contains("config error: database.url: ssl-mode=sometimes"),
        "an unknown ssl-mode: {stderr}"
    );
    drop(db);
    drop(server);
}

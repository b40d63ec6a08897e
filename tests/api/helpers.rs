//! The one test harness: `TestApp::spawn` starts the real engine on a random port, on a fresh
//! SQLite file or a fresh PostgreSQL database, and talks to it over HTTP.
//!
//! PostgreSQL tests run when `TEST_DATABASE_URL` is set (a server URL; each test creates and
//! drops its own database); without it they print one `skipped:` line, unless `CI` is set, in
//! which case they fail: CI must never pass without them. Built with `--features mysql`, the
//! same tests run on MySQL / MariaDB too, on the `TEST_MYSQL_URL` server, in the same way.

use std::io::Write;
use std::sync::mpsc;
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use order_engine::app::Application;
use order_engine::auth::JwtKeys;
use order_engine::config::{DatabaseUrl, Settings};
use order_engine::db::{ConnectionManager, DbConnection};
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const JWT_SECRET: &str = "test-jwt-secret";
pub const PAYMENT_SECRET: &str = "test-payment-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    #[cfg(feature = "mysql")]
    Mysql,
}

/// Generates one test per backend from one body: `mod name { fn sqlite(); fn postgres(); }`,
/// and `fn mysql()` when built with the feature `mysql`.
/// Every lifecycle test ends with the shared SPEC-invariant checker. Extra settings go after
/// the signature: `fn name(app) with [("orders.payment_timeout_secs", "2")] { ... }`.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[doc = $doc:literal])* fn $name:ident($app:ident) $body:block) => {
        $crate::on_both_backends! { $(#[doc = $doc])* fn $name($app) with [] $body }
    };
    ($(#[doc = $doc:literal])* fn $name:ident($app:ident)
        with [$(($key:literal, $value:literal)),* $(,)?] $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            const SETTINGS: &[(&str, &str)] = &[$(($key, $value)),*];
            fn body($app: &$crate::helpers::TestApp) $body
            #[test]
            fn sqlite() {
                let app = $crate::helpers::TestApp::spawn_with(
                    $crate::helpers::Backend::Sqlite,
                    SETTINGS,
                )
                .expect("SQLite is always available");
                body(&app);
                $crate::invariants::check(&app);
            }
            #[test]
            fn postgres() {
                let Some(app) = $crate::helpers::TestApp::spawn_with(
                    $crate::helpers::Backend::Postgres,
                    SETTINGS,
                ) else {
                    return;
                };
                body(&app);
                $crate::invariants::check(&app);
            }
            #[cfg(feature = "mysql")]
            #[test]
            fn mysql() {
                let Some(app) = $crate::helpers::TestApp::spawn_with(
                    $crate::helpers::Backend::Mysql,
                    SETTINGS,
                ) else {
                    return;
                };
                body(&app);
                $crate::invariants::check(&app);
            }
        }
    };
}

/// One test per backend from a `fn(Backend)`, for tests whose settings are made at run time
/// (with [`run_with`]): `mod name { fn sqlite(); fn postgres(); }` (and `fn mysql()`, as
/// [`on_both_backends!`]).
#[macro_export]
macro_rules! on_both_backends_of {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                super::$name($crate::helpers::Backend::Postgres);
            }
            #[cfg(feature = "mysql")]
            #[test]
            fn mysql() {
                super::$name($crate::helpers::Backend::Mysql);
            }
        }
    };
}

/// A response: status, headers and the body parsed as JSON (`Value::Null` when empty or not
/// JSON; the raw text is kept too).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error envelope's code; panics with the whole response when it is not one.
    pub fn error_code(&self) -> &str {
        let code = self.json["error"]["code"].as_str();
        let message = self.json["error"]["message"].as_str();
        match (code, message) {
            (Some(code), Some(_)) if self.json.as_object().is_some_and(|o| o.len() == 1) => code,
            _ => panic!("not an error envelope: {} {}", self.status, self.text),
        }
    }

    /// Asserts status and error code together.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.error_code()),
            (status, code),
            "unexpected response: {}",
            self.text
        );
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected response: {}", self.text);
        &self.json
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub settings: Settings,
    server: Option<(actix_web::dev::ServerHandle, JoinHandle<()>)>,
    http: Http,
    /// Dropped after the server has stopped (fields drop after `Drop::drop`).
    _database: TestDatabase,
}

impl std::ops::Deref for TestApp {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

/// A fresh, empty database for one test (a SQLite file in its own folder, a PostgreSQL
/// database on the `TEST_DATABASE_URL` server, or a MySQL one on the `TEST_MYSQL_URL` server),
/// removed on drop.
pub struct TestDatabase {
    /// The engine's `database.url` setting for it.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteDir(std::path::PathBuf),
    PostgresDatabase {
        server_url: String,
        name: String,
    },
    #[cfg(feature = "mysql")]
    MysqlDatabase {
        server_url: String,
        name: String,
    },
}

impl TestDatabase {
    /// `None` when the backend is PostgreSQL and `TEST_DATABASE_URL` is not set (MySQL:
    /// `TEST_MYSQL_URL`).
    pub fn create(backend: Backend) -> Option<TestDatabase> {
        Some(match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique_name());
                std::fs::create_dir_all(&dir).expect("create the test folder");
                let url = format!("sqlite://{}", dir.join("engine.db").display());
                TestDatabase {
                    url,
                    cleanup: Cleanup::SqliteDir(dir),
                }
            }
            Backend::Postgres => TestDatabase::create_on(&postgres_server_url()?),
            #[cfg(feature = "mysql")]
            Backend::Mysql => TestDatabase::create_on_mysql(&mysql_server_url()?),
        })
    }

    /// A fresh database on the MySQL server at `server_url` (dropped with it).
    #[cfg(feature = "mysql")]
    pub fn create_on_mysql(server_url: &str) -> TestDatabase {
        let name = unique_name();
        let mut admin = diesel::MysqlConnection::establish(server_url)
            .unwrap_or_else(|e| panic!("connect to {server_url}: {e}"));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .expect("create the test database");
        TestDatabase {
            url: with_database(server_url, &name),
            cleanup: Cleanup::MysqlDatabase {
                server_url: server_url.to_string(),
                name,
            },
        }
    }

    /// A fresh database on the PostgreSQL server at `server_url` (dropped with it).
    pub fn create_on(server_url: &str) -> TestDatabase {
        let name = unique_name();
        order_engine::db::init_tls();
        let mut admin = diesel::PgConnection::establish(server_url)
            .unwrap_or_else(|e| panic!("connect to {server_url}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        TestDatabase {
            url: with_database(server_url, &name),
            cleanup: Cleanup::PostgresDatabase {
                server_url: server_url.to_string(),
                name,
            },
        }
    }

    /// A folder that lives as long as this database (SQLite: the database's own folder).
    pub fn dir(&self) -> std::path::PathBuf {
        match &self.cleanup {
            Cleanup::SqliteDir(dir) => dir.clone(),
            _ => std::env::temp_dir(),
        }
    }

    /// A direct connection (the engine must have migrated the database first).
    pub fn connect(&self) -> DbConnection {
        let url = DatabaseUrl::parse(&self.url).expect("a valid database url");
        ConnectionManager::new(url)
            .establish()
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresDatabase { server_url, name } => {
                if let Ok(mut admin) = diesel::PgConnection::establish(server_url) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
            #[cfg(feature = "mysql")]
            Cleanup::MysqlDatabase { server_url, name } => {
                if let Ok(mut admin) = diesel::MysqlConnection::establish(server_url) {
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
                }
            }
        }
    }
}

fn init_logging() {
    static LOG: Once = Once::new();
    LOG.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ =
                env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                    .is_test(true)
                    .try_init();
        }
    });
}

/// The PostgreSQL server URL, or `None` (after printing one skip line) when not set. Under CI
/// a missing URL is a failure.
pub fn postgres_server_url() -> Option<String> {
    static SKIP: Once = Once::new();
    service_url("TEST_DATABASE_URL", "PostgreSQL", &SKIP)
}

/// The MySQL / MariaDB server URL (`TEST_MYSQL_URL`), as [`postgres_server_url`].
#[cfg(feature = "mysql")]
pub fn mysql_server_url() -> Option<String> {
    static SKIP: Once = Once::new();
    service_url("TEST_MYSQL_URL", "MySQL", &SKIP)
}

/// The URL in `var`, or `None` after printing one `skipped: <suite> tests (<var> not set)`
/// line (once per `skip`); under CI a missing URL is a failure, so CI never passes without
/// the suite.
pub fn service_url(var: &str, suite: &str, skip: &Once) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip_or_fail_under_ci(&format!("{suite} tests ({var} not set)"), skip);
            None
        }
    }
}

/// Prints one `skipped: <what>` line (once per `skip`) for a check that cannot run here; when
/// `CI` is set it fails instead: CI must never pass without the check.
pub fn skip_or_fail_under_ci(what: &str, skip: &Once) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set, so this must not be skipped: {what}"
    );
    skip.call_once(|| {
        // Written past the test harness's capture so it shows in `cargo test` output.
        let _ = writeln!(std::io::stderr(), "skipped: {what}");
    });
}

/// `server_url` with its database name replaced.
pub fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{root}/{name}{query}")
}

fn unique_name() -> String {
    format!("oe_test_{}", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    pub fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).expect("backend available")
    }

    pub fn spawn_if_available(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, &[])
    }

    /// Starts the engine with extra `section.key = value` settings (as environment overrides).
    pub fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> Option<TestApp> {
        Self::spawn_with_file(backend, overrides, None)
    }

    /// [`TestApp::spawn_with`] plus a settings file's text, for what only a file can say
    /// (`[[schedules]]`).
    pub fn spawn_with_file(
        backend: Backend,
        overrides: &[(&str, &str)],
        file: Option<&str>,
    ) -> Option<TestApp> {
        init_logging();
        let database = TestDatabase::create(backend)?;
        let mut vars = vec![
            ("server.bind".to_string(), "127.0.0.1:0".to_string()),
            ("server.workers".to_string(), "2".to_string()),
            ("database.url".to_string(), database.url.clone()),
            ("database.pool_size".to_string(), "8".to_string()),
            ("admin.token".to_string(), ADMIN_TOKEN.to_string()),
            ("auth.jwt_secret".to_string(), JWT_SECRET.to_string()),
            ("payment.secret".to_string(), PAYMENT_SECRET.to_string()),
        ];
        for (key, value) in overrides {
            vars.retain(|(k, _)| k != key);
            vars.push((key.to_string(), value.to_string()));
        }
        let env = vars.into_iter().map(|(key, value)| {
            let (section, name) = key.split_once('.').expect("section.key");
            (
                format!(
                    "ORDER_ENGINE__{}__{}",
                    section.to_uppercase(),
                    name.to_uppercase().replace('.', "__")
                ),
                value,
            )
        });
        let settings = Settings::load_from(file.map(|text| ("test.toml", text)), env)
            .expect("test settings are valid");

        let (tx, rx) = mpsc::channel();
        let app_settings = settings.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                match Application::build(app_settings) {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.port(), app.handle())));
                        let _ = app.run_until_stopped().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (port, handle) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the engine starts")
            .expect("the engine builds");
        Some(TestApp {
            backend,
            settings,
            server: Some((handle, thread)),
            http: Http::new(format!("http://127.0.0.1:{port}")),
            _database: database,
        })
    }

    /// A direct connection to the engine's database, for the invariant checker.
    pub fn db(&self) -> DbConnection {
        ConnectionManager::new(self.settings.database.url.clone())
            .establish()
            .expect("connect to the test database")
    }

    pub fn database_url(&self) -> &DatabaseUrl {
        &self.settings.database.url
    }
}

/// An HTTP client for one running engine (in this process or a child process).
#[derive(Clone)]
pub struct Http {
    pub base: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(base: String) -> Http {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        Http { base, agent }
    }

    /// The same engine through a client that returns a redirect instead of following it
    /// (to see a 303 and its `Location`).
    pub fn not_following_redirects(&self) -> Http {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .redirects(0)
            .build();
        Http {
            base: self.base.clone(),
            agent,
        }
    }

    /// Sends a request; never fails on a status, only on a transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: transport error {e}"))
    }

    /// Sends a request; `Err` on a transport error (the engine may be down).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let result = match body {
            Some(bytes) => req.send_bytes(bytes),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .flat_map(|name| {
                response
                    .all(&name)
                    .into_iter()
                    .map(|v| (name.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let text = response.into_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            text,
            json,
        })
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map(|b| b.to_string());
        self.request(
            method,
            path,
            &[("Authorization", &bearer)],
            body.as_deref().map(str::as_bytes),
        )
    }

    pub fn as_user(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
        let bearer = format!("Bearer {token}");
        let body = body.map(|b| b.to_string());
        self.request(
            method,
            path,
            &[("Authorization", &bearer)],
            body.as_deref().map(str::as_bytes),
        )
    }

    /// A valid client JWT for `user_id`.
    pub fn token(&self, user_id: i64) -> String {
        JwtKeys::new(JWT_SECRET)
            .issue(user_id, 3600)
            .expect("issue a token")
    }

    // Catalog helpers: each asserts its 201 and returns the created object.

    pub fn create_user(&self, name: &str, points: i64) -> Value {
        self.admin(
            "POST",
            "/admin/users",
            Some(json!({"name": name, "points": points})),
        )
        .assert_status(201)
        .clone()
    }

    /// A user with points, and a token for them.
    pub fn user_with_token(&self, points: i64) -> (i64, String) {
        let user = self.create_user("student", points);
        let id = user["id"].as_i64().expect("user id");
        (id, self.token(id))
    }

    pub fn create_course(&self, title: &str, price_cents: i64, chapters: &[&str]) -> Value {
        self.admin(
            "POST",
            "/admin/courses",
            Some(json!({"title": title, "price_cents": price_cents, "on_sale": true, "chapters": chapters})),
        )
        .assert_status(201)
        .clone()
    }

    /// A course on sale with two chapters; returns its id.
    pub fn course(&self, price_cents: i64) -> i64 {
        self.create_course("course", price_cents, &["one", "two"])["id"]
            .as_i64()
            .expect("course id")
    }

    pub fn create_coupon(
        &self,
        discount_cents: i64,
        min_spend_cents: i64,
        valid_until: Option<&str>,
    ) -> i64 {
        self.admin(
            "POST",
            "/admin/coupons",
            Some(json!({"title": "coupon", "discount_cents": discount_cents,
                        "min_spend_cents": min_spend_cents, "valid_until": valid_until})),
        )
        .assert_status(201)["id"]
            .as_i64()
            .expect("coupon id")
    }

    /// Gives `user_id` a copy of a coupon; returns the user coupon id.
    pub fn give_coupon(&self, user_id: i64, coupon_id: i64) -> i64 {
        self.admin(
            "POST",
            &format!("/admin/users/{user_id}/coupons"),
            Some(json!({"coupon_id": coupon_id})),
        )
        .assert_status(201)["user_coupon_id"]
            .as_i64()
            .expect("user coupon id")
    }

    pub fn place(&self, token: &str, body: Value) -> Resp {
        self.as_user(token, "POST", "/api/orders", Some(body))
    }

    pub fn admin_user(&self, user_id: i64) -> Value {
        self.admin("GET", &format!("/admin/users/{user_id}"), None)
            .assert_status(200)
            .clone()
    }

    pub fn me(&self, token: &str) -> Value {
        self.as_user(token, "GET", "/api/me", None)
            .assert_status(200)
            .clone()
    }
}

/// The value of one series of `GET /metrics` (`name{labels}` exactly as exposed).
#[track_caller]
pub fn metric_value(app: &Http, series: &str) -> f64 {
    let text = app.request("GET", "/metrics", &[], None).text;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Polls `probe` until it returns `Some`, or fails after `timeout` with the last thing seen.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((handle, thread)) = self.server.take() {
            // Graceful stop: requests in flight finish, then the server's thread ends.
            actix_web::rt::System::new().block_on(handle.stop(true));
            let _ = thread.join();
        }
        // The database goes with `_database`, after this.
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by the placement, error, idempotency and concurrency tests.

/// Runs `body` on an engine started with extra settings, then the shared invariant checker:
/// the by-hand form of `on_both_backends!` for tests that need non-default settings. On
/// PostgreSQL it does nothing (after the skip line) when TEST_DATABASE_URL is not set.
pub fn run_with(backend: Backend, overrides: &[(&str, &str)], body: impl FnOnce(&TestApp)) {
    let Some(app) = TestApp::spawn_with(backend, overrides) else {
        return;
    };
    body(&app);
    crate::invariants::check(&app);
}

/// Runs `f(0..n)` on `n` threads released together; returns the results in index order.
pub fn in_parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread panicked"))
            .collect()
    })
}

/// A JWT signed with `secret` using `alg`.
pub fn jwt(claims: &Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a JWT")
}

/// A JWT with any header (jsonwebtoken's `Header` cannot carry `crit`), HS256-signed with
/// `secret` by hand.
pub fn jwt_with_header(header: &Value, claims: &Value, secret: &str) -> String {
    use hmac::{Hmac, Mac};
    let message = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(message.as_bytes());
    format!("{message}.{}", base64url(&mac.finalize().into_bytes()))
}

/// Unpadded base64url, for hand-made (unsigned) tokens.
pub fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Unix seconds from now.
pub fn unix_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

/// The keys of the SPEC's Order object.
pub const ORDER_KEYS: [&str; 15] = [
    "order_no",
    "user_id",
    "status",
    "items",
    "total_cents",
    "discount_cents",
    "points_used",
    "payable_cents",
    "user_coupon_id",
    "created_at",
    "expires_at",
    "paid_at",
    "closed_at",
    "close_reason",
    "trade_no",
];

/// The sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[track_caller]
pub fn assert_keys(value: &Value, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(keys(value), expected, "keys of {value}");
}

/// Asserts the SPEC's Order shape (every key present, items as `{course_id, price_cents}`).
#[track_caller]
pub fn assert_order_shape(order: &Value) {
    assert_keys(order, &ORDER_KEYS);
    for item in order["items"].as_array().expect("items") {
        assert_keys(item, &["course_id", "price_cents"]);
    }
    let no = order["order_no"].as_str().expect("order_no");
    assert!(
        !no.is_empty()
            && no.len() <= 64
            && no
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)),
        "order_no {no:?} is not an opaque URL-safe string of at most 64 characters"
    );
}

/// The SPEC's User coupon keys.
pub const USER_COUPON_KEYS: [&str; 9] = [
    "user_coupon_id",
    "user_id",
    "coupon_id",
    "title",
    "discount_cents",
    "min_spend_cents",
    "valid_until",
    "status",
    "order_no",
];

/// Parses a SPEC timestamp (`2026-11-26T12:00:00.123Z`: UTC, exactly three fractional digits).
#[track_caller]
pub fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    let b = text.as_bytes();
    assert!(
        b.len() == 24 && b[19] == b'.' && b[20..23].iter().all(u8::is_ascii_digit) && b[23] == b'Z',
        "timestamp {text:?} is not RFC 3339 UTC with three fractional digits"
    );
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("timestamp {text:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

impl Resp {
    /// 401 `unauthenticated` with `WWW-Authenticate: Bearer`.
    #[track_caller]
    pub fn assert_unauthenticated(&self) {
        self.assert_error(401, "unauthenticated");
        assert_eq!(
            self.header("WWW-Authenticate"),
            Some("Bearer"),
            "401 without WWW-Authenticate: Bearer: {:?}",
            self.headers
        );
    }

    /// The error envelope's message.
    pub fn error_message(&self) -> &str {
        self.error_code();
        self.json["error"]["message"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    /// `POST /api/orders` with a raw body, an optional client token and extra headers.
    pub fn post_order_raw(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(bearer) = &bearer {
            all.push(("Authorization", bearer));
        }
        self.request("POST", "/api/orders", &all, Some(body))
    }

    /// `POST /api/orders` with an `Idempotency-Key`.
    pub fn place_with_key(&self, token: &str, key: &str, body: &Value) -> Resp {
        self.post_order_raw(
            Some(token),
            &[("Idempotency-Key", key)],
            body.to_string().as_bytes(),
        )
    }

    /// Everything a refused request must leave unchanged: the user as admins and as they
    /// themselves see them, and the course catalog.
    pub fn snapshot(&self, user_id: i64, token: &str) -> Value {
        let courses = self
            .admin("GET", "/admin/courses", None)
            .assert_status(200)
            .clone();
        json!({"admin": self.admin_user(user_id), "me": self.me(token), "courses": courses})
    }

    pub fn set_on_sale(&self, course_id: i64, on_sale: bool) {
        let course = self
            .admin(
                "PATCH",
                &format!("/admin/courses/{course_id}"),
                Some(json!({"on_sale": on_sale})),
            )
            .assert_status(200)
            .clone();
        assert_eq!(course["on_sale"], on_sale);
    }

    pub fn get_order(&self, token: &str, order_no: &str) -> Resp {
        self.as_user(token, "GET", &format!("/api/orders/{order_no}"), None)
    }
}
/// The callback code that means success.
pub const SUCCESS: i64 = 100_000;
/// Some other code: a failed payment.
pub const FAILURE: i64 = 200_001;

/// A callback body as the provider sends it.
pub fn callback_body(order_no: &str, trade_no: &str, code: i64, amount_cents: i64) -> Vec<u8> {
    json!({"order_no": order_no, "trade_no": trade_no, "code": code,
           "amount_cents": amount_cents, "paid_at": "2026-11-26T12:00:00.000Z"})
    .to_string()
    .into_bytes()
}

/// A valid `X-Signature` for `body`, signed now with the test secret.
pub fn signature(body: &[u8]) -> String {
    signature_at(body, chrono::Utc::now().timestamp())
}

pub fn signature_at(body: &[u8], t: i64) -> String {
    order_engine::http::signature::sign(body, PAYMENT_SECRET.as_bytes(), t)
}

/// Input timestamps the SPEC refuses: outside 1970-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999Z once normalised to UTC, or with a 60th second.
pub const OUT_OF_RANGE_TIMESTAMPS: [&str; 7] = [
    "0000-01-01T00:00:00+23:59",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:59:59+01:00",
    "9999-12-31T23:59:59-00:01",
    "10000-01-01T00:00:00Z",
    "2026-06-30T23:59:60Z",
    "2026-07-01T08:59:60.500+09:00",
];

/// An API timestamp.
#[track_caller]
pub fn ts(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad timestamp {text}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// A fresh trade number.
pub fn trade_no() -> String {
    format!("T{}", uuid::Uuid::new_v4().simple())
}

/// Payment callbacks, raw requests and order helpers.
impl Http {
    /// Signs a callback with the test secret and posts it.
    pub fn callback(&self, order_no: &str, trade_no: &str, code: i64, amount_cents: i64) -> Resp {
        let body = callback_body(order_no, trade_no, code, amount_cents);
        self.callback_raw(&body, &[("X-Signature", &signature(&body))])
    }

    /// Posts `body` to the callback route with exactly these headers (a name may repeat), over
    /// a raw connection so that nothing is added, merged or re-encoded.
    pub fn callback_raw(&self, body: &[u8], headers: &[(&str, &str)]) -> Resp {
        self.raw_request("POST", "/api/payments/callback", headers, body)
    }

    /// One HTTP/1.1 request written byte for byte (`Connection: close`).
    pub fn raw_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        self.raw_request_bytes(method, path, &headers, body)
    }

    /// [`Http::raw_request`] with header values as raw bytes (which need not be UTF-8).
    pub fn raw_request_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Resp {
        use std::io::Read;
        let host = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).expect("connect to the engine");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        // A refusal (413) may come, and the connection close, before the whole body is sent:
        // the response is what counts.
        let sent = stream.write_all(&request);
        let mut raw = Vec::new();
        if let Err(e) = stream.read_to_end(&mut raw) {
            assert!(
                !raw.is_empty(),
                "{method} {path}: no response ({e}; sending: {sent:?})"
            );
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut payload = raw[split + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let chunked = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        if chunked {
            let mut decoded = Vec::new();
            let mut rest = &payload[..];
            while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
                let size_text = String::from_utf8_lossy(&rest[..end]).to_string();
                let size = usize::from_str_radix(size_text.trim(), 16).unwrap_or(0);
                if size == 0 {
                    break;
                }
                decoded.extend_from_slice(&rest[end + 2..end + 2 + size]);
                rest = &rest[end + 2 + size + 2..];
            }
            payload = decoded;
        }
        let text = String::from_utf8_lossy(&payload).to_string();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    /// `GET /admin/orders/{order_no}`: `{"order", "actor", "effects"}`.
    pub fn admin_order(&self, order_no: &str) -> Value {
        self.admin("GET", &format!("/admin/orders/{order_no}"), None)
            .assert_status(200)
            .clone()
    }

    /// Waits until the order has `status`; returns the order.
    #[track_caller]
    pub fn wait_order_status(&self, order_no: &str, status: &str, timeout: Duration) -> Value {
        wait_for(&format!("order {order_no} to be {status}"), timeout, || {
            let view = self.admin_order(order_no);
            if view["order"]["status"] == status {
                Ok(view["order"].clone())
            } else {
                Err(view["order"].to_string())
            }
        })
    }

    /// Waits until every effect of the order is `done`; returns the admin view.
    #[track_caller]
    pub fn wait_effects_done(&self, order_no: &str) -> Value {
        wait_for(
            &format!("the effects of order {order_no} to be done"),
            Duration::from_secs(30),
            || {
                let view = self.admin_order(order_no);
                let effects = view["effects"].as_array().cloned().unwrap_or_default();
                if !effects.is_empty() && effects.iter().all(|e| e["status"] == "done") {
                    Ok(view)
                } else {
                    Err(view["effects"].to_string())
                }
            },
        )
    }

    /// Places an order and asserts its 201; returns the order.
    #[track_caller]
    pub fn place_ok(
        &self,
        token: &str,
        course_ids: &[i64],
        user_coupon_id: Option<i64>,
        points: i64,
    ) -> Value {
        self.place(
            token,
            json!({"course_ids": course_ids, "user_coupon_id": user_coupon_id, "points": points}),
        )
        .assert_status(201)
        .clone()
    }

    /// Pays an order with its exact payable amount and asserts the 200.
    #[track_caller]
    pub fn pay(&self, order: &Value) -> String {
        let trade = trade_no();
        let no = order["order_no"].as_str().expect("order_no");
        let resp = self.callback(
            no,
            &trade,
            SUCCESS,
            order["payable_cents"].as_i64().unwrap(),
        );
        assert_eq!(resp.assert_status(200), &json!({"result": "success"}));
        trade
    }
}

// Fault injection through a direct connection to the test's own database.

/// Makes every insert into `user_courses` fail with "injected".
pub fn reject_grants(conn: &mut DbConnection) {
    let sql = match conn {
        DbConnection::Sqlite(_) => {
            "CREATE TRIGGER reject_grants BEFORE INSERT ON user_courses \
             BEGIN SELECT RAISE(ABORT, 'injected'); END;"
        }
        DbConnection::Postgresql(_) => {
            "CREATE FUNCTION reject_grants() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected'; END $$; \
             CREATE TRIGGER reject_grants BEFORE INSERT ON user_courses \
             FOR EACH ROW EXECUTE FUNCTION reject_grants();"
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => {
            "CREATE TRIGGER reject_grants BEFORE INSERT ON user_courses \
             FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected';"
        }
    };
    conn.batch_execute(sql).expect("create the failing trigger");
}

/// Removes what [`reject_grants`] created.
pub fn allow_grants(conn: &mut DbConnection) {
    let sql = match conn {
        DbConnection::Sqlite(_) => "DROP TRIGGER reject_grants;",
        DbConnection::Postgresql(_) => {
            "DROP TRIGGER reject_grants ON user_courses; DROP FUNCTION reject_grants();"
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => "DROP TRIGGER reject_grants;",
    };
    conn.batch_execute(sql).expect("drop the failing trigger");
}

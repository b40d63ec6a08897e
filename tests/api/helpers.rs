//! The one test harness: `TestApp::spawn` starts the real engine on a random port, on a fresh
//! SQLite file or a fresh PostgreSQL database, and talks to it over HTTP.
//!
//! PostgreSQL tests run when `TEST_DATABASE_URL` is set (a server URL; each test creates and
//! drops its own database); without it they print one `skipped:` line, unless `CI` is set, in
//! which case they fail: CI must never pass without them.

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
}

/// Generates one test per backend from one body: `mod name { fn sqlite(); fn postgres(); }`.
/// Every lifecycle test ends with the shared SPEC-invariant checker.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[doc = $doc:literal])* fn $name:ident($app:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($app: &$crate::helpers::TestApp) $body
            #[test]
            fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite);
                body(&app);
                $crate::invariants::check(&app);
            }
            #[test]
            fn postgres() {
                let Some(app) = $crate::helpers::TestApp::spawn_if_available(
                    $crate::helpers::Backend::Postgres,
                ) else {
                    return;
                };
                body(&app);
                $crate::invariants::check(&app);
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
    pub base: String,
    pub settings: Settings,
    server: Option<(actix_web::dev::ServerHandle, JoinHandle<()>)>,
    agent: ureq::Agent,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteDir(std::path::PathBuf),
    PostgresDatabase { server_url: String, name: String },
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
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TEST_DATABASE_URL is not set, but CI is: the PostgreSQL suite must run in CI"
            );
            SKIP.call_once(|| {
                // Written past the test harness's capture so it shows in `cargo test` output.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: PostgreSQL tests (TEST_DATABASE_URL not set)"
                );
            });
            None
        }
    }
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
        init_logging();
        let (database_url, cleanup) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique_name());
                let url = format!("sqlite://{}", dir.join("engine.db").display());
                (url, Cleanup::SqliteDir(dir))
            }
            Backend::Postgres => {
                let server_url = postgres_server_url()?;
                let name = unique_name();
                let mut admin = diesel::PgConnection::establish(&server_url)
                    .expect("connect to TEST_DATABASE_URL");
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create the test database");
                (
                    with_database(&server_url, &name),
                    Cleanup::PostgresDatabase { server_url, name },
                )
            }
        };
        let mut vars = vec![
            ("server.bind".to_string(), "127.0.0.1:0".to_string()),
            ("server.workers".to_string(), "2".to_string()),
            ("database.url".to_string(), database_url),
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
                    name.to_uppercase()
                ),
                value,
            )
        });
        let settings = Settings::load_from(None, env).expect("test settings are valid");

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
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        Some(TestApp {
            backend,
            base: format!("http://127.0.0.1:{port}"),
            settings,
            server: Some((handle, thread)),
            agent,
            cleanup,
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

    /// Sends a request; never fails on a status, only on a transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
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
            Err(e) => panic!("{method} {path}: transport error {e}"),
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
        Resp {
            status,
            headers,
            text,
            json,
        }
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
        }
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

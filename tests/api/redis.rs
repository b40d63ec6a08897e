//! Redis: the order-event stream (a full story of orders, `order-engine events`, a Redis outage
//! and an engine restart), three engine processes on one PostgreSQL database with one killed
//! (its orders adopted, deadlines on time, the stop channel), and the fast path (rate limit,
//! idempotency look-up, Redis unreachable).
//!
//! They run when `TEST_REDIS_URL` is set (each test with its own key prefix and stream, deleted
//! at the end); the outage test runs its own `redis-server` on a free port.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use redis::streams::StreamRangeReply;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::invariants;
use crate::process::{free_port, EngineProcess};

/// The Redis server URL, or `None` (after one skip line) when `TEST_REDIS_URL` is not set.
/// Under CI a missing URL is a failure.
pub fn redis_url() -> Option<String> {
    static SKIP: Once = Once::new();
    service_url("TEST_REDIS_URL", "Redis", &SKIP)
}

/// One test's corner of a Redis server: its own key prefix and event stream, deleted on drop.
pub struct RedisScope {
    pub url: String,
    pub prefix: String,
    pub stream: String,
}

impl RedisScope {
    pub fn new() -> Option<RedisScope> {
        Some(Self::on(redis_url()?))
    }

    pub fn on(url: String) -> RedisScope {
        let id = uuid::Uuid::new_v4().simple().to_string();
        RedisScope {
            url,
            prefix: format!("oe-test-{id}"),
            stream: format!("oe-test-{id}-events"),
        }
    }

    /// The engine settings that point at this scope.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("redis.url", self.url.clone()),
            ("redis.key_prefix", self.prefix.clone()),
            ("redis.events_stream", self.stream.clone()),
        ]
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test Redis")
    }

    /// Every entry of the event stream, oldest first.
    pub fn events(&self) -> Vec<Event> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .query(&mut self.conn())
            .expect("XRANGE");
        reply
            .ids
            .iter()
            .map(|entry| {
                let field = |name: &str| -> String {
                    entry
                        .get::<String>(name)
                        .unwrap_or_else(|| panic!("event {} has no {name}", entry.id))
                };
                Event {
                    event_id: field("event_id").parse().expect("numeric event_id"),
                    kind: field("kind"),
                    order_no: field("order_no"),
                    at: field("at"),
                    data: serde_json::from_str(&field("data")).expect("data is JSON"),
                }
            })
            .collect()
    }

    /// Waits until the stream holds `count` events; returns them.
    #[track_caller]
    pub fn wait_events(&self, count: usize) -> Vec<Event> {
        wait_for(
            &format!("{count} events in {}", self.stream),
            Duration::from_secs(30),
            || {
                let events = self.events();
                if events.len() >= count {
                    Ok(events)
                } else {
                    Err(format!("{} events: {:?}", events.len(), kinds(&events)))
                }
            },
        )
    }
}

impl Drop for RedisScope {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&self.stream)
            .arg(keys)
            .query(&mut conn);
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: i64,
    pub kind: String,
    pub order_no: String,
    pub at: String,
    pub data: Value,
}

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}:{}", &e.order_no[e.order_no.len() - 6..], e.kind))
        .collect()
}

/// Each order's event kinds, in stream order; asserts every event id appears once and that
/// each event carries its order in the state the kind implies.
fn stories(events: &[Event]) -> BTreeMap<String, Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        assert!(
            seen.insert(e.event_id),
            "event {} twice: {events:?}",
            e.event_id
        );
        assert_eq!(e.data["order_no"], e.order_no.as_str(), "{e:?}");
        assert_order_shape(&e.data);
        timestamp(&json!(e.at));
        let status = e.data["status"].as_str().unwrap();
        let expected: &[&str] = match e.kind.as_str() {
            "placed" => &["pending", "paid"],
            "paid" | "granted" => &["paid"],
            "failed" => &["failed"],
            "cancelled" => &["cancelled"],
            "refunded" | "late_payment" | "dead_lettered" => &["cancelled", "failed", "paid"],
            other => panic!("unknown event kind {other}"),
        };
        assert!(
            expected.contains(&status),
            "{} with status {status}",
            e.kind
        );
        by_order
            .entry(e.order_no.clone())
            .or_default()
            .push(e.kind.clone());
    }
    by_order
}

fn story(by_order: &BTreeMap<String, Vec<String>>, order: &Value) -> Vec<String> {
    by_order
        .get(order["order_no"].as_str().unwrap())
        .cloned()
        .unwrap_or_default()
}

fn settings_of<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Runs `order-engine events` (without `--follow`: it stops at the end of the stream) on the
/// scope's stream as `group`; returns the printed lines.
fn events_cli(scope: &RedisScope, group: &str) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_order-engine"))
        .args(["events", "--group", group])
        .env("ORDER_ENGINE__REDIS__URL", &scope.url)
        .env("ORDER_ENGINE__REDIS__EVENTS_STREAM", &scope.stream)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run order-engine events");
    assert!(
        output.status.success(),
        "order-engine events failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The event stream.

/// Four orders' whole stories — paid and granted, cancelled and refunded then paid late, free,
/// failed — arrive once each and in order; `order-engine events` prints them as a consumer
/// group and gives a second run nothing new.
fn events_of_order_stories(backend: Backend) {
    let Some(scope) = RedisScope::new() else {
        return;
    };
    let pairs = scope.settings();
    let Some(app) = TestApp::spawn_with(backend, &settings_of(&pairs)) else {
        return;
    };
    let (user_id, token) = app.user_with_token(1_000);
    let coupon = app.create_coupon(100, 0, None);
    let user_coupon = app.give_coupon(user_id, coupon);
    let paid = app.place_ok(&token, &[app.course(1_000)], Some(user_coupon), 100);
    app.pay(&paid);
    app.wait_effects_done(paid["order_no"].as_str().unwrap());

    let cancelled = app.place_ok(&token, &[app.course(1_000)], None, 50);
    let no = cancelled["order_no"].as_str().unwrap();
    app.as_user(&token, "POST", &format!("/api/orders/{no}/cancel"), None)
        .assert_status(200);
    app.wait_effects_done(no);
    app.callback(no, &trade_no(), SUCCESS, 950)
        .assert_status(200);

    let free = app.place_ok(&token, &[app.course(0)], None, 0);
    assert_eq!(free["status"], "paid");
    app.wait_effects_done(free["order_no"].as_str().unwrap());

    let failed = app.place_ok(&token, &[app.course(700)], None, 0);
    app.callback(
        failed["order_no"].as_str().unwrap(),
        &trade_no(),
        200_001,
        700,
    )
    .assert_status(200);
    app.wait_order_status(
        failed["order_no"].as_str().unwrap(),
        "failed",
        Duration::from_secs(10),
    );

    let events = scope.wait_events(12);
    let by_order = stories(&events);
    assert_eq!(story(&by_order, &paid), ["placed", "paid", "granted"]);
    assert_eq!(
        story(&by_order, &cancelled),
        ["placed", "cancelled", "refunded", "late_payment"]
    );
    assert_eq!(story(&by_order, &free), ["placed", "paid", "granted"]);
    assert_eq!(story(&by_order, &failed), ["placed", "failed"]);
    assert_eq!(events.len(), 12, "{:?}", kinds(&events));
    let last = &events.iter().rev().find(|e| e.order_no == no).unwrap().data;
    assert_eq!(last["status"], "cancelled");
    assert_eq!(last["close_reason"], "user");

    // The publisher deletes a batch from the outbox just after appending it to the stream.
    wait_for("the outbox to be empty", Duration::from_secs(10), || {
        let actors = app.admin("GET", "/admin/actors", None);
        match &actors.assert_status(200)["events"]["unpublished"] {
            n if *n == 0 => Ok(()),
            n => Err(format!("{n} events unpublished")),
        }
    });

    let printed = events_cli(&scope, "indexer");
    assert_eq!(printed.len(), 12, "{printed:?}");
    for (line, event) in printed.iter().zip(&events) {
        assert_eq!(line["event_id"], event.event_id);
        assert_eq!(line["kind"], event.kind.as_str());
        assert_eq!(line["order_no"], event.order_no.as_str());
        assert_eq!(line["at"], event.at.as_str());
        assert_eq!(line["data"], event.data);
    }
    assert!(
        events_cli(&scope, "indexer").is_empty(),
        "a group reads each event once"
    );
    assert_eq!(events_cli(&scope, "another-indexer").len(), 12);

    invariants::check(&app);
}

#[test]
fn events_of_order_stories_sqlite() {
    events_of_order_stories(Backend::Sqlite);
}

#[test]
fn events_of_order_stories_postgres() {
    events_of_order_stories(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn events_of_order_stories_mysql() {
    events_of_order_stories(Backend::Mysql);
}

/// A `redis-server` of the test's own on a free port, with its data in a temp folder
/// (append-only, fsync always, so a stop and start keeps the stream). Killed on drop.
struct OwnedRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnedRedis {
    fn start() -> OwnedRedis {
        let dir = std::env::temp_dir().join(format!("oe-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = OwnedRedis {
            port: free_port(),
            dir,
            child: None,
        };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                self.dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        self.child = Some(child);
        let url = self.url();
        wait_for("the test's redis-server", Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .map_err(|e| e.to_string())
        });
    }

    /// Stops the server (SIGTERM: the append-only file is complete) and waits for the exit.
    fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Events made while Redis is down wait in the outbox — across an engine restart — and are
/// published once each, in order, when it is back; orders, callbacks and cancels go on
/// meanwhile and `/readyz` says `degraded`.
fn events_across_a_redis_outage_and_a_restart(backend: Backend) {
    if redis_url().is_none() {
        return;
    }
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let mut redis = OwnedRedis::start();
    let scope = RedisScope::on(redis.url());
    let mut pairs = scope.settings();
    pairs.push(("cluster.node_id", "solo".into()));
    let settings = settings_of(&pairs);
    let mut engine = EngineProcess::start(&db, &settings);
    let (_, token) = engine.user_with_token(1_000);
    let first = engine.place_ok(&token, &[engine.course(1_000)], None, 100);
    scope.wait_events(1);

    redis.pause();
    let ready = engine.request("GET", "/readyz", &[], None);
    assert_eq!(
        ready.assert_status(200),
        &json!({"status": "degraded", "database": "ok", "redis": "down"})
    );
    engine.pay(&first);
    let first_no = first["order_no"].as_str().unwrap();
    engine.wait_effects_done(first_no);
    let second = engine.place_ok(&token, &[engine.course(1_000)], None, 0);
    let waiting = engine.admin("GET", "/admin/actors", None);
    assert_eq!(waiting.assert_status(200)["events"]["unpublished"], 3);

    assert!(engine.terminate().success(), "{}", engine.log_tail());
    let engine = EngineProcess::start(&db, &settings);
    let second_no = second["order_no"].as_str().unwrap();
    engine
        .as_user(
            &token,
            "POST",
            &format!("/api/orders/{second_no}/cancel"),
            None,
        )
        .assert_status(200);

    redis.resume();
    let events = scope.wait_events(5);
    let by_order = stories(&events);
    assert_eq!(story(&by_order, &first), ["placed", "paid", "granted"]);
    assert_eq!(story(&by_order, &second), ["placed", "cancelled"]);
    assert_eq!(events.len(), 5, "{:?}", kinds(&events));
    wait_for("/readyz ok again", Duration::from_secs(10), || {
        let ready = engine.request("GET", "/readyz", &[], None);
        if ready.json["status"] == "ok" {
            Ok(())
        } else {
            Err(ready.text)
        }
    });
    invariants::check_db(&mut db.connect(), &format!("{backend:?}"));
}

#[test]
fn events_across_a_redis_outage_and_a_restart_sqlite() {
    events_across_a_redis_outage_and_a_restart(Backend::Sqlite);
}

#[test]
fn events_across_a_redis_outage_and_a_restart_postgres() {
    events_across_a_redis_outage_and_a_restart(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn events_across_a_redis_outage_and_a_restart_mysql() {
    events_across_a_redis_outage_and_a_restart(Backend::Mysql);
}

// ---------------------------------------------------------------------------------------------
// Several processes.

fn admin_actors(engine: &EngineProcess) -> Value {
    engine
        .admin("GET", "/admin/actors", None)
        .assert_status(200)
        .clone()
}

fn node<'a>(actors: &'a Value, id: &str) -> &'a Value {
    actors["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == id)
        .unwrap_or_else(|| panic!("node {id} in {actors}"))
}

/// Three processes on one PostgreSQL database. A callback through one process for an order
/// another owns stops the owner's actor at once (stop channel). Then the owner of most pending
/// orders is SIGKILLed: the others adopt its orders (each exactly once) and every deadline fires
/// within the heartbeat TTL plus 1 s, with the SPEC invariants intact.
#[test]
fn three_processes_one_killed() {
    three_processes_one_killed_on(Backend::Postgres);
}

/// The same on one MySQL / MariaDB database.
#[cfg(feature = "mysql")]
#[test]
fn mysql_three_processes_one_killed() {
    three_processes_one_killed_on(Backend::Mysql);
}

fn three_processes_one_killed_on(backend: Backend) {
    const TTL_SECS: i64 = 2;
    if redis_url().is_none() {
        return;
    }
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let scope = RedisScope::new().expect("TEST_REDIS_URL is set");
    let start = |id: &str| {
        let mut pairs = scope.settings();
        pairs.push(("cluster.node_id", id.to_string()));
        pairs.push(("cluster.heartbeat_ttl_secs", TTL_SECS.to_string()));
        pairs.push(("orders.payment_timeout_secs", "10".into()));
        EngineProcess::start(&db, &settings_of(&pairs))
    };
    let mut a = start("node-a");
    let b = start("node-b");
    let c = start("node-c");

    let (_, token) = a.user_with_token(10_000);
    let placed_on_a: Vec<Value> = (0..8)
        .map(|_| a.place_ok(&token, &[a.course(1_000)], None, 10))
        .collect();
    let on_b = b.place_ok(&token, &[b.course(1_000)], None, 10);
    let view = admin_actors(&a);
    for id in ["node-a", "node-b", "node-c"] {
        assert_eq!(node(&view, id)["alive"], true, "{view}");
    }
    assert_eq!(node(&view, "node-a")["pending_orders"], 8);
    assert_eq!(node(&view, "node-b")["pending_orders"], 1);
    assert_eq!(view["live_actors"], 8);

    // Paid through node b: node a's actor for it goes at once.
    let paid = &placed_on_a[0];
    let paid_no = paid["order_no"].as_str().unwrap();
    b.pay(paid);
    wait_for(
        "node a to stop the paid order's actor",
        Duration::from_secs(10),
        || {
            let actor = a.admin_order(paid_no)["actor"].clone();
            if actor.is_null() || actor["alive"] == false {
                Ok(())
            } else {
                Err(actor.to_string())
            }
        },
    );
    assert_eq!(admin_actors(&a)["live_actors"], 7);

    a.kill();
    let killed_at = chrono::Utc::now();
    let adopted = wait_for(
        "nodes b and c to adopt node a's orders",
        Duration::from_secs(20),
        || {
            let (vb, vc) = (admin_actors(&b), admin_actors(&c));
            let from_a = |v: &Value, id: &str| -> i64 {
                node(v, id)["adoptions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|x| x["from_node"] == "node-a")
                    .map(|x| x["orders"].as_i64().unwrap())
                    .sum()
            };
            let total = from_a(&vb, "node-b") + from_a(&vc, "node-c");
            if total >= 7 {
                Ok((total, vb, vc))
            } else {
                Err(format!("adopted {total} so far: {vb}"))
            }
        },
    );
    assert_eq!(adopted.0, 7, "each order adopted exactly once");
    let adoption_delay = chrono::Utc::now() - killed_at;
    // The adopter creates the actors right after its claim commits.
    wait_for(
        "actors for the adopted orders",
        Duration::from_secs(10),
        || {
            let live = admin_actors(&b)["live_actors"].as_i64().unwrap()
                + admin_actors(&c)["live_actors"].as_i64().unwrap();
            if live == 8 {
                Ok(())
            } else {
                Err(format!("{live} live actors on nodes b and c, expected 8"))
            }
        },
    );
    assert!(
        adoption_delay.num_milliseconds() <= (TTL_SECS + 1) * 1000 + 3000,
        "adopted after {adoption_delay}"
    );

    for order in placed_on_a.iter().skip(1).chain([&on_b]) {
        let no = order["order_no"].as_str().unwrap();
        let closed = b.wait_order_status(no, "cancelled", Duration::from_secs(30));
        assert_eq!(closed["close_reason"], "timeout");
        let lateness = ts(&closed["closed_at"]) - ts(&closed["expires_at"]);
        assert!(
            lateness.num_milliseconds() <= (TTL_SECS + 1) * 1000,
            "order {no} closed {lateness} after its deadline"
        );
    }
    invariants::check_db(&mut db.connect(), "three processes");
}

// ---------------------------------------------------------------------------------------------
// The fast path.

/// Over `limits.orders_per_user_per_minute`, 429 `rate_limited` with `Retry-After`, per user;
/// an idempotent response is replayed from Redis (here even after its database row is gone)
/// and a different body with the same key is refused from it.
fn rate_limit_and_idempotency(backend: Backend) {
    let Some(scope) = RedisScope::new() else {
        return;
    };
    let mut pairs = scope.settings();
    pairs.push(("limits.orders_per_user_per_minute", "3".into()));
    let Some(app) = TestApp::spawn_with(backend, &settings_of(&pairs)) else {
        return;
    };
    let (_, token) = app.user_with_token(1_000);
    let courses: Vec<i64> = (0..5).map(|_| app.course(100)).collect();
    let first = app.place_with_key(&token, "k-1", &json!({"course_ids": [courses[0]]}));
    first.assert_status(201);
    for course in &courses[1..3] {
        app.place_ok(&token, &[*course], None, 0);
    }
    let limited = app.place(&token, json!({"course_ids": [courses[3]]}));
    limited.assert_error(429, "rate_limited");
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let (_, other) = app.user_with_token(1_000);
    app.place_ok(&other, &[courses[3]], None, 0);

    // The replay is not an order: it is answered before the limit.
    {
        use diesel::prelude::*;
        use order_engine::db::schema::idempotency_keys;
        diesel::delete(idempotency_keys::table)
            .execute(&mut app.db())
            .expect("delete the database's idempotency records");
    }
    let again = app.place_with_key(&token, "k-1", &json!({"course_ids": [courses[0]]}));
    assert_eq!(again.assert_status(201), first.assert_status(201));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    app.place_with_key(&token, "k-1", &json!({"course_ids": [courses[4]]}))
        .assert_error(422, "idempotency_key_reused");
    let orders = app
        .admin("GET", "/admin/orders?limit=100", None)
        .assert_status(200)["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        orders, 4,
        "three orders of the first user, one of the other"
    );
    invariants::check(&app);
}

#[test]
fn rate_limit_and_idempotency_sqlite() {
    rate_limit_and_idempotency(Backend::Sqlite);
}

#[test]
fn rate_limit_and_idempotency_postgres() {
    rate_limit_and_idempotency(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn rate_limit_and_idempotency_mysql() {
    rate_limit_and_idempotency(Backend::Mysql);
}

/// With Redis configured but unreachable the engine serves orders, callbacks and timeouts, does
/// not enforce the rate limit, and `/readyz` says `degraded`.
#[test]
fn redis_unreachable_degrades() {
    if redis_url().is_none() {
        return;
    }
    let scope = RedisScope::on(format!("redis://127.0.0.1:{}", free_port()));
    let mut pairs = scope.settings();
    pairs.push(("limits.orders_per_user_per_minute", "1".into()));
    pairs.push(("orders.payment_timeout_secs", "2".into()));
    let app = TestApp::spawn_with(Backend::Sqlite, &settings_of(&pairs)).expect("SQLite");
    let ready = app.request("GET", "/readyz", &[], None);
    assert_eq!(
        ready.assert_status(200),
        &json!({"status": "degraded", "database": "ok", "redis": "down"})
    );
    let (_, token) = app.user_with_token(1_000);
    let paid = app.place_ok(&token, &[app.course(500)], None, 0);
    let expiring = app.place_ok(&token, &[app.course(500)], None, 100);
    app.pay(&paid);
    app.wait_effects_done(paid["order_no"].as_str().unwrap());
    let closed = app.wait_order_status(
        expiring["order_no"].as_str().unwrap(),
        "cancelled",
        Duration::from_secs(20),
    );
    assert_eq!(closed["close_reason"], "timeout");
    invariants::check(&app);
}

//! Reliability, part 2: a database outage. The test owns its database server (a PostgreSQL
//! cluster, `initdb` into a temporary folder; or, with the `mysql` feature, a MariaDB server,
//! `mariadb-install-db` likewise), started on a free loopback port (the shared servers are
//! never touched), runs the real binary on it, and under load (placements, signed success
//! callbacks, orders left to expire) stops the server at once (`pg_ctl -m immediate stop`, a
//! SIGKILL of `mariadbd`) for a few seconds past some deadlines, then starts it again on the
//! same data and port. One scenario, the same checks, for both servers.
//!
//! While it is down: `/readyz` is 503, every placement and callback is 503 `unavailable` in
//! the error envelope, and the process stays alive. Once it is back: within 30 s every passed
//! deadline has closed its order, every effect has landed, nothing acknowledged is lost, and
//! the SPEC invariants hold.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use order_engine::db::schema::{effects, orders, payment_events};
use order_engine::db::sql_types::At;
use order_engine::db::DbConnection;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::invariants;
use crate::pg_cluster::PgCluster;
use crate::process::EngineProcess;

const SETTINGS: [(&str, &str); 3] = [
    ("orders.payment_timeout_secs", "3"),
    ("effects.backoff_base_ms", "100"),
    ("effects.backoff_max_ms", "1000"),
];
const THREADS: usize = 4;
const COURSES_PER_THREAD: usize = 40;
/// The shortest outage: the pool's 5 s connection timeout, twice, and a margin.
const MIN_OUTAGE: TimeDelta = TimeDelta::seconds(12);
/// How long the provider may take to get its last callbacks acknowledged after the load.
const DRAIN: Duration = Duration::from_secs(30);
/// Payment provider threads.
const PROVIDERS: usize = 2;
/// Pacing of each load thread between two placements (load shaping, not a wait).
const PACE: Duration = Duration::from_millis(100);

/// One request of the load and its response.
#[derive(Debug, Clone)]
struct Record {
    what: &'static str,
    order_no: Option<String>,
    trade_no: Option<String>,
    sent: Instant,
    answered: Instant,
    answered_utc: DateTime<Utc>,
    resp: Resp,
}

/// A success callback the provider owes (and retries until it gets a 200).
#[derive(Debug, Clone)]
struct Owed {
    order_no: String,
    trade_no: String,
    amount_cents: i64,
}

struct Load<'a> {
    engine: &'a EngineProcess,
    records: Mutex<Vec<Record>>,
    /// Callbacks the provider owes, each with the time it is due.
    owed: Mutex<VecDeque<(Instant, Owed)>>,
    /// 201s so far, and 201s for placements sent after the restart.
    placed: AtomicUsize,
    placed_after_restart: AtomicUsize,
    restarted: AtomicBool,
    /// Students place back to back (so that the stop cuts transactions in flight).
    burst: AtomicBool,
    stop: AtomicBool,
    students_done: AtomicUsize,
}

impl Load<'_> {
    fn record(
        &self,
        what: &'static str,
        order_no: Option<&str>,
        trade_no: Option<&str>,
        send: impl FnOnce() -> Resp,
    ) -> Resp {
        let sent = Instant::now();
        let resp = send();
        self.records.lock().unwrap().push(Record {
            what,
            order_no: order_no.map(str::to_string),
            trade_no: trade_no.map(str::to_string),
            sent,
            answered: Instant::now(),
            answered_utc: Utc::now(),
            resp: resp.clone(),
        });
        resp
    }

    /// One student: places an order for a fresh course at every step (some spending points);
    /// two orders in three are paid by the provider a step later, the rest left to expire.
    fn student(&self, index: usize, token: &str, courses: &[i64]) {
        for (n, course) in courses.iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let after_restart = self.restarted.load(Ordering::SeqCst);
            let points = if (index + n).is_multiple_of(2) { 10 } else { 0 };
            let body = json!({"course_ids": [course], "points": points});
            let resp = self.record("place", None, None, || self.engine.place(token, body));
            if resp.status == 201 {
                self.placed.fetch_add(1, Ordering::SeqCst);
                if after_restart {
                    self.placed_after_restart.fetch_add(1, Ordering::SeqCst);
                }
                let order = &resp.json;
                if n % 3 != 2 {
                    let owed = Owed {
                        order_no: order["order_no"].as_str().expect("order_no").to_string(),
                        trade_no: trade_no(),
                        amount_cents: order["payable_cents"].as_i64().expect("payable"),
                    };
                    let due = Instant::now() + PACE;
                    self.owed.lock().unwrap().push_back((due, owed));
                }
            }
            if !self.burst.load(Ordering::SeqCst) {
                std::thread::sleep(PACE);
            }
        }
        self.students_done.fetch_add(1, Ordering::SeqCst);
    }

    /// The payment provider: sends each owed success callback, signed, and retries it after a
    /// 503 until it gets a 200 (anything else is recorded for the checks and not retried).
    /// Ends once the students are done and nothing is owed.
    fn provider(&self) {
        let mut drained_by: Option<Instant> = None;
        loop {
            let next = {
                let mut owed = self.owed.lock().unwrap();
                let now = Instant::now();
                match owed.iter().position(|(due, _)| *due <= now) {
                    Some(i) => owed.remove(i),
                    None if owed.is_empty()
                        && self.students_done.load(Ordering::SeqCst) == THREADS =>
                    {
                        return
                    }
                    None => None,
                }
            };
            let Some((_, cb)) = next else {
                if self.students_done.load(Ordering::SeqCst) == THREADS {
                    let by = *drained_by.get_or_insert_with(|| Instant::now() + DRAIN);
                    assert!(
                        Instant::now() < by,
                        "callbacks still not acknowledged {DRAIN:?} after the load: {:?}",
                        self.owed.lock().unwrap()
                    );
                }
                // Polling the queue.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let resp = self.record("callback", Some(&cb.order_no), Some(&cb.trade_no), || {
                self.engine
                    .callback(&cb.order_no, &cb.trade_no, SUCCESS, cb.amount_cents)
            });
            if resp.status == 503 {
                let due = Instant::now() + PACE;
                self.owed.lock().unwrap().push_back((due, cb));
            }
        }
    }
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// A database server the test owns, which the scenario stops and starts again.
trait OwnedServer {
    /// What the failure messages call it.
    const NAME: &'static str;
    /// The server's URL (its default database).
    fn url(&self) -> String;
    /// A fresh database on it, dropped with the guard.
    fn create_database(&self) -> TestDatabase;
    /// Stops the server at once (no shutdown), cutting every connection.
    fn stop(&mut self);
    /// Starts it again on the same data and port, and waits until it takes connections.
    fn start(&mut self);
}

impl OwnedServer for PgCluster {
    const NAME: &'static str = "PostgreSQL";

    fn url(&self) -> String {
        PgCluster::url(self)
    }

    fn create_database(&self) -> TestDatabase {
        TestDatabase::create_on(&OwnedServer::url(self))
    }

    fn stop(&mut self) {
        self.stop_immediate();
    }

    fn start(&mut self) {
        PgCluster::start(self, &[]);
    }
}

#[cfg(feature = "mysql")]
impl OwnedServer for crate::mysql_server::MariaServer {
    const NAME: &'static str = "MariaDB";

    fn url(&self) -> String {
        crate::mysql_server::MariaServer::url(self, "127.0.0.1")
    }

    fn create_database(&self) -> TestDatabase {
        TestDatabase::create_on_mysql(&OwnedServer::url(self))
    }

    fn stop(&mut self) {
        self.stop_immediately();
    }

    fn start(&mut self) {
        self.restart();
    }
}

#[test]
fn postgres_cluster_stopped_under_load() {
    let Some(mut cluster) = PgCluster::create("database outage") else {
        return;
    };
    stopped_under_load(&mut cluster);
}

/// The same outage on a MariaDB server of the test's own, killed (SIGKILL of `mariadbd`)
/// and started again on its data folder and port.
#[cfg(feature = "mysql")]
#[test]
fn mysql_server_stopped_under_load() {
    let Some(mut server) = crate::mysql_server::MariaServer::create("MariaDB outage") else {
        return;
    };
    stopped_under_load(&mut server);
}

/// The scenario: load, the server stopped past some deadlines, started again, the checks.
fn stopped_under_load<S: OwnedServer>(server: &mut S) {
    let db = server.create_database();
    let mut engine = EngineProcess::start(&db, &SETTINGS);
    engine
        .request("GET", "/readyz", &[], None)
        .assert_status(200);

    let students: Vec<(String, Vec<i64>)> = (0..THREADS)
        .map(|_| {
            let (_, token) = engine.user_with_token(1_000);
            let courses = (0..COURSES_PER_THREAD)
                .map(|_| engine.course(1_000))
                .collect();
            (token, courses)
        })
        .collect();

    let load = Load {
        engine: &engine,
        records: Mutex::new(Vec::new()),
        placed: AtomicUsize::new(0),
        owed: Mutex::new(VecDeque::new()),
        placed_after_restart: AtomicUsize::new(0),
        restarted: AtomicBool::new(false),
        burst: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        students_done: AtomicUsize::new(0),
    };
    let mut readyz_down: Vec<Resp> = Vec::new();
    let (stopped_at, stopped_utc, restart_at, restarted_utc) = std::thread::scope(|scope| {
        let load = &load;
        let threads: Vec<_> = students
            .iter()
            .enumerate()
            .map(|(i, (token, courses))| scope.spawn(move || load.student(i, token, courses)))
            .chain((0..PROVIDERS).map(|_| scope.spawn(move || load.provider())))
            .collect();

        wait_for(
            "every student to place two orders",
            Duration::from_secs(60),
            || match load.placed.load(Ordering::SeqCst) {
                n if n >= 2 * THREADS => Ok(()),
                n => Err(format!("{n} placed")),
            },
        );

        // A burst, so that the stop cuts transactions (placements, payments, timeouts,
        // effects) in flight.
        let before_burst = load.placed.load(Ordering::SeqCst);
        load.burst.store(true, Ordering::SeqCst);
        wait_for(
            "the burst to place orders",
            Duration::from_secs(30),
            || match load.placed.load(Ordering::SeqCst) - before_burst {
                n if n >= THREADS => Ok(()),
                n => Err(format!("{n} placed in the burst")),
            },
        );
        server.stop();
        load.burst.store(false, Ordering::SeqCst);
        let stopped_at = Instant::now();
        let stopped_utc = Utc::now();
        // Down until a few seconds past the deadlines of the orders placed before the stop,
        // and long enough that requests sent during the outage are answered during it (the
        // pool waits up to 5 s for a connection before it gives up).
        let last_deadline = load
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.what == "place" && r.resp.status == 201)
            .map(|r| ts(&r.resp.json["expires_at"]))
            .max()
            .expect("orders placed before the outage");
        let down_until = (last_deadline + TimeDelta::seconds(2)).max(stopped_utc + MIN_OUTAGE);
        while Utc::now() < down_until {
            let sent = Instant::now();
            let resp = engine.request("GET", "/readyz", &[], None);
            assert!(sent >= stopped_at);
            readyz_down.push(resp);
            // Keeps the database down for the span (not a wait for the engine).
            std::thread::sleep(Duration::from_millis(200));
        }

        let restart_at = Instant::now();
        let restarted_utc = Utc::now();
        server.start();
        load.restarted.store(true, Ordering::SeqCst);
        wait_for(
            "/readyz to be 200 after the restart",
            Duration::from_secs(30),
            || {
                let resp = engine.request("GET", "/readyz", &[], None);
                if resp.status == 200 {
                    Ok(())
                } else {
                    Err(resp.text)
                }
            },
        );
        wait_for(
            "every student to place an order after the restart",
            Duration::from_secs(30),
            || match load.placed_after_restart.load(Ordering::SeqCst) {
                n if n >= THREADS => Ok(()),
                n => Err(format!("{n} placed after the restart")),
            },
        );
        load.stop.store(true, Ordering::SeqCst);
        for thread in threads {
            thread.join().expect("a load thread panicked");
        }
        (stopped_at, stopped_utc, restart_at, restarted_utc)
    });
    let records = load.records.into_inner().unwrap();

    // The process survived, and nothing panicked in it.
    assert_eq!(
        engine.exited(),
        None,
        "the engine died:\n{}",
        engine.log_tail()
    );
    let log = engine.log();
    assert!(
        !log.contains("panicked"),
        "the engine panicked during the outage:\n{log}"
    );

    // During the outage: /readyz is 503 with the envelope, placements and callbacks are 503
    // `unavailable`.
    assert!(
        !readyz_down.is_empty(),
        "no /readyz probe during the outage"
    );
    for resp in &readyz_down {
        resp.assert_error(503, "unavailable");
    }
    let during: Vec<&Record> = records
        .iter()
        .filter(|r| r.sent >= stopped_at && r.answered <= restart_at)
        .collect();
    let timeline = || {
        records
            .iter()
            .map(|r| {
                let at = |t: Instant| {
                    if t >= stopped_at {
                        format!("+{:.3}s", (t - stopped_at).as_secs_f64())
                    } else {
                        format!("-{:.3}s", (stopped_at - t).as_secs_f64())
                    }
                };
                format!(
                    "{} {:?} sent {} answered {}: {} {}",
                    r.what,
                    r.order_no,
                    at(r.sent),
                    at(r.answered),
                    r.resp.status,
                    r.resp.text.chars().take(120).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let outage = format!(
        "the database was down from +0s to +{:.3}s",
        (restart_at - stopped_at).as_secs_f64()
    );
    for what in ["place", "callback"] {
        assert!(
            during.iter().any(|r| r.what == what),
            "no {what} was sent and answered during the outage ({outage}):\n{}",
            timeline()
        );
    }
    for r in &during {
        assert_eq!(
            (r.resp.status, r.resp.error_code()),
            (503, "unavailable"),
            "{} {:?} during the outage: {}",
            r.what,
            r.order_no,
            r.resp.text
        );
        assert!(
            r.resp.header("Retry-After").is_some(),
            "503 without Retry-After: {:?}",
            r.resp.headers
        );
    }
    // Around it: the request succeeded or was 503 `unavailable`; never a 500 or anything else.
    for r in &records {
        let ok = if r.what == "place" { 201 } else { 200 };
        if r.resp.status != ok {
            assert_eq!(
                (r.resp.status, r.resp.error_code()),
                (503, "unavailable"),
                "{} {:?} (sent {:?} after the stop, answered {:?} after the restart): {}",
                r.what,
                r.order_no,
                r.sent.saturating_duration_since(stopped_at),
                r.answered.saturating_duration_since(restart_at),
                r.resp.text
            );
        }
    }

    // Within 30 s of the restart: no pending order past its deadline, no pending effect.
    let mut conn = db.connect();
    let settle_by = restart_at + Duration::from_secs(30);
    wait_for(
        "every passed deadline to close its order and every effect to land, 30 s after the \
         restart",
        settle_by.saturating_duration_since(Instant::now()),
        || {
            let now = naive(Utc::now());
            let overdue: Vec<(String, NaiveDateTime)> = orders::table
                .filter(orders::status.eq("pending"))
                .filter(orders::expires_at.le(At(now)))
                .select((orders::order_no, orders::expires_at))
                .load(&mut conn)
                .map_err(|e| e.to_string())?;
            let effects: Vec<(String, String, i32, Option<String>)> = effects::table
                .filter(effects::status.eq("pending"))
                .select((
                    effects::order_no,
                    effects::kind,
                    effects::attempts,
                    effects::last_error,
                ))
                .load(&mut conn)
                .map_err(|e| e.to_string())?;
            if overdue.is_empty() && effects.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "pending past the deadline: {overdue:?}; pending effects: {effects:?}"
                ))
            }
        },
    );
    let dead: Vec<(String, String, i32, Option<String>)> = effects::table
        .filter(effects::status.eq("dead_lettered"))
        .select((
            effects::order_no,
            effects::kind,
            effects::attempts,
            effects::last_error,
        ))
        .load(&mut conn)
        .expect("read effects");
    assert!(
        dead.is_empty(),
        "effects dead-lettered by the outage: {dead:?}"
    );

    // Nothing acknowledged is lost: every 201 placement exists as it was returned.
    let stored =
        |conn: &mut DbConnection, no: &str| -> Option<(String, Option<String>, NaiveDateTime)> {
            orders::table
                .find(no)
                .select((orders::status, orders::trade_no, orders::expires_at))
                .first(conn)
                .optional()
                .expect("read the order")
        };
    let mut placed: HashMap<String, Value> = HashMap::new();
    for r in records
        .iter()
        .filter(|r| r.what == "place" && r.resp.status == 201)
    {
        let order = &r.resp.json;
        let no = order["order_no"].as_str().expect("order_no");
        let view = engine.admin_order(no);
        assert_eq!(
            view["order"]["order_no"], no,
            "a 201 order is lost: {order}"
        );
        for key in [
            "user_id",
            "items",
            "points_used",
            "payable_cents",
            "created_at",
            "expires_at",
        ] {
            assert_eq!(view["order"][key], order[key], "{key} changed: {view}");
        }
        placed.insert(no.to_string(), order.clone());
    }
    // Every 200 callback for a pending order left it paid (or recorded as a late payment);
    // one answered before the deadline left it paid.
    let mut paid_or_late = 0;
    for r in records
        .iter()
        .filter(|r| r.what == "callback" && r.resp.status == 200)
    {
        assert_eq!(r.resp.json, json!({"result": "success"}));
        let (no, trade) = (
            r.order_no.as_deref().unwrap(),
            r.trade_no.as_deref().unwrap(),
        );
        let (status, order_trade, expires_at) =
            stored(&mut conn, no).unwrap_or_else(|| panic!("order {no} is gone"));
        let late: Vec<String> = payment_events::table
            .filter(payment_events::trade_no.eq(trade))
            .select(payment_events::outcome)
            .load(&mut conn)
            .expect("read payment events");
        let is_paid = status == "paid" && order_trade.as_deref() == Some(trade);
        let is_late = late.iter().any(|o| o == "late_payment");
        assert!(
            is_paid || is_late,
            "callback {trade} for {no} got 200 but the order is {status} (trade_no \
             {order_trade:?}) and no late payment is recorded: {late:?}"
        );
        if naive(r.answered_utc) < expires_at {
            assert!(
                is_paid,
                "callback {trade} answered 200 before the deadline of {no}, which is {status}"
            );
        }
        paid_or_late += 1;
    }
    assert!(paid_or_late > 0, "no callback was acknowledged");

    // The deadlines that passed while the database was down closed their orders (timeout).
    let mut passed_while_down = 0;
    for (no, order) in &placed {
        let expires_at = ts(&order["expires_at"]);
        if expires_at <= stopped_utc || expires_at >= restarted_utc {
            continue;
        }
        let stored = engine.admin_order(no)["order"].clone();
        if stored["status"] == "cancelled" {
            assert_eq!(stored["close_reason"], "timeout", "{stored}");
            assert!(ts(&stored["closed_at"]) >= expires_at, "{stored}");
            passed_while_down += 1;
        } else {
            assert_eq!(stored["status"], "paid", "{stored}");
        }
    }
    assert!(
        passed_while_down > 0,
        "no deadline passed (unpaid) while the database was down"
    );

    invariants::check_db(&mut conn, &format!("{}, after a database outage", S::NAME));
    assert_eq!(
        engine.exited(),
        None,
        "the engine died:\n{}",
        engine.log_tail()
    );
    drop(conn);
    drop(engine);
    drop(db);
}

/// Makes every transaction that inserts an order or a payment event sleep 2 s inside its
/// `COMMIT` (a deferred constraint trigger), so the outage can land exactly there.
fn slow_commits(conn: &mut DbConnection) {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER slow_order_commit AFTER INSERT ON orders \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit(); \
         CREATE CONSTRAINT TRIGGER slow_payment_commit AFTER INSERT ON payment_events \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )
    .expect("create the slow-commit triggers");
}

fn fast_commits(conn: &mut DbConnection) {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(
        "DROP TRIGGER slow_order_commit ON orders; \
         DROP TRIGGER slow_payment_commit ON payment_events; DROP FUNCTION slow_commit();",
    )
    .expect("drop the slow-commit triggers");
}

/// The outage lands while a placement and a payment are inside `COMMIT` (neither committed):
/// both must be 503 `unavailable` (the client and the provider retry), not 500, and once
/// the database is back the retried payment pays the order.
#[test]
fn postgres_stopped_during_commit() {
    let Some(cluster) = PgCluster::create("database outage") else {
        return;
    };
    let db = TestDatabase::create_on(&cluster.url());
    let mut engine = EngineProcess::start(&db, &[("orders.payment_timeout_secs", "120")]);
    let (_, token) = engine.user_with_token(1_000);
    let courses = [engine.course(1_000), engine.course(1_000)];
    let order = engine.place_ok(&token, &[courses[0]], None, 10);
    let order_no = order["order_no"].as_str().unwrap().to_string();
    let trade = trade_no();
    let key = format!("outage-{}", trade_no());
    let body = json!({"course_ids": [courses[1]], "user_coupon_id": null, "points": 20});

    slow_commits(&mut db.connect());
    let (place, pay) = std::thread::scope(|scope| {
        let place = scope.spawn(|| place_with_key(&engine, &token, &key, &body));
        let pay = scope.spawn(|| engine.callback(&order_no, &trade, SUCCESS, 990));
        let mut watcher = db.connect();
        wait_for(
            "the placement and the payment to be inside COMMIT",
            Duration::from_secs(30),
            || {
                let sleeping: i64 = diesel::sql_query(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
                )
                .get_result::<Count>(&mut watcher)
                .map_err(|e| e.to_string())?
                .n;
                if sleeping >= 2 {
                    Ok(())
                } else {
                    Err(format!("{sleeping} sleeping in COMMIT"))
                }
            },
        );
        drop(watcher);
        cluster.stop_immediate();
        (place.join().unwrap(), pay.join().unwrap())
    });
    cluster.start(&[]);
    fast_commits(&mut db.connect());

    assert_eq!(
        engine.exited(),
        None,
        "the engine died:\n{}",
        engine.log_tail()
    );
    for (what, resp) in [("placement", &place), ("payment", &pay)] {
        assert_eq!(
            (resp.status, resp.error_code()),
            (503, "unavailable"),
            "a {what} cut inside COMMIT by the outage: {}\nengine log:\n{}",
            resp.text,
            engine.log_tail()
        );
    }
    // The provider retries: the order is paid once the database is back.
    wait_for(
        "the retried payment to be acknowledged",
        Duration::from_secs(30),
        || {
            let resp = engine.callback(&order_no, &trade, SUCCESS, 990);
            match resp.status {
                200 => Ok(()),
                503 => Err(resp.text),
                _ => panic!("retried payment: {}", resp.text),
            }
        },
    );
    let stored = engine.wait_order_status(&order_no, "paid", Duration::from_secs(30));
    assert_eq!(stored["trade_no"], trade.as_str(), "{stored}");
    // The client retries its placement with the same Idempotency-Key and body: the first
    // attempt ended (503) and stored nothing, so the retry places the order. SPEC: 409
    // `idempotency_key_in_use` only while the first request is in flight.
    let placed = wait_for(
        "the retried placement (same Idempotency-Key) to be placed",
        Duration::from_secs(30),
        || {
            let resp = place_with_key(&engine, &token, &key, &body);
            match resp.status {
                201 => Ok(resp.json),
                503 => Err(resp.text),
                409 if resp.error_code() == "idempotency_key_in_use" => Err(format!(
                    "409 idempotency_key_in_use, though the first request ended with a 503: {}",
                    resp.text
                )),
                _ => panic!("retried placement: {} {}", resp.status, resp.text),
            }
        },
    );
    assert_eq!(placed["items"][0]["course_id"], courses[1], "{placed}");
    assert_eq!(placed["points_used"], 20, "{placed}");
    invariants::check_db(
        &mut db.connect(),
        "PostgreSQL, after an outage inside COMMIT",
    );
    assert_eq!(
        engine.exited(),
        None,
        "the engine died:\n{}",
        engine.log_tail()
    );
}

/// `POST /api/orders` with an `Idempotency-Key`.
fn place_with_key(engine: &Http, token: &str, key: &str, body: &Value) -> Resp {
    let bearer = format!("Bearer {token}");
    engine.request(
        "POST",
        "/api/orders",
        &[("Authorization", &bearer), ("Idempotency-Key", key)],
        Some(body.to_string().as_bytes()),
    )
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

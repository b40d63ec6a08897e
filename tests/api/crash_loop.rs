//! The crash loop (Reliability): under continuous load — orders placed, callbacks sent
//! (duplicated, late, racing their deadlines), cancels, orders left to expire — the engine
//! process is SIGKILLed at random moments and restarted, many times. At every restart, with the
//! load paused, the SPEC invariants hold; throughout, no order stays pending more than 2 s past
//! its deadline while the engine has been up for 2 s; at the end every 2xx is reflected.
//!
//! A short run (`CRASH_LOOP_SECS`, default 20 per backend) is part of `cargo test`; a long one:
//! `CRASH_LOOP_SECS=1800 cargo test --release --test api crash_loop -- --nocapture`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use order_engine::db::schema::{orders, payment_events};
use order_engine::db::sql_types::At;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::invariants;
use crate::process::EngineProcess;

const TIMEOUT_SECS: i64 = 2;
const SETTINGS: &[(&str, &str)] = &[
    ("orders.payment_timeout_secs", "2"),
    ("effects.backoff_base_ms", "50"),
    ("effects.backoff_max_ms", "500"),
];

/// What the engine acknowledged with a 2xx, to be found in the database at the end.
#[derive(Default)]
struct Acknowledged {
    placed: Vec<String>,
    /// (order_no, trade_no) of callbacks answered 200.
    callbacks: Vec<(String, String)>,
    /// Orders whose cancel was answered 200.
    cancelled: Vec<String>,
}

/// Shared by the load threads, the deadline monitor and the killer.
struct Run {
    /// The engine's base URL; `None` while it is down.
    engine: RwLock<Option<(Http, Instant)>>,
    stop: AtomicBool,
    paused: AtomicBool,
    /// Requests in flight; the killer waits for 0 when pausing.
    in_flight: AtomicU64,
    acked: Mutex<Acknowledged>,
    late: Mutex<Vec<String>>,
    requests: AtomicU64,
}

/// Stops the load threads when the killer's part of the scope ends, also by a failed
/// assertion (else the scope would wait for them forever).
struct StopOnDrop<'a>(&'a Run);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

impl Run {
    /// Pauses the load and waits for the requests in flight to finish.
    fn pause(&self) {
        self.paused.store(true, Ordering::Release);
        wait_for(
            "requests in flight to finish",
            Duration::from_secs(60),
            || match self.in_flight.load(Ordering::Acquire) {
                0 => Ok(()),
                n => Err(format!("{n} in flight")),
            },
        );
    }

    fn http(&self) -> Option<Http> {
        self.engine
            .read()
            .ok()?
            .as_ref()
            .map(|(http, _)| http.clone())
    }
}

fn duration() -> Duration {
    let secs = std::env::var("CRASH_LOOP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One client: places orders for its own user and does something with each.
fn client(run: &Run, seed: u64, token: String, courses: Vec<i64>) {
    let mut rng = Rng(seed);
    while !run.stop.load(Ordering::Relaxed) {
        if run.paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        run.in_flight.fetch_add(1, Ordering::AcqRel);
        if !run.paused.load(Ordering::Acquire) {
            if let Some(http) = run.http() {
                one_order(run, &http, &mut rng, &token, &courses);
            }
        }
        run.in_flight.fetch_sub(1, Ordering::AcqRel);
        if run.http().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn one_order(run: &Run, http: &Http, rng: &mut Rng, token: &str, courses: &[i64]) {
    let course = courses[rng.below(courses.len() as u64) as usize];
    let points = rng.below(3) * 10;
    let body = json!({"course_ids": [course], "points": points}).to_string();
    let bearer = format!("Bearer {token}");
    let Some(placed) = try_request(run, || {
        http.try_request(
            "POST",
            "/api/orders",
            &[("Authorization", &bearer)],
            Some(body.as_bytes()),
        )
    }) else {
        return;
    };
    if placed.status != 201 {
        return;
    }
    let order: Value = placed.json;
    let order_no = order["order_no"].as_str().unwrap_or_default().to_string();
    run.acked.lock().unwrap().placed.push(order_no.clone());
    if order["status"] != "pending" {
        return;
    }
    let amount = order["payable_cents"].as_i64().unwrap_or_default();
    match rng.below(6) {
        // Pay, and send the same callback again.
        0 | 1 => {
            let trade = trade_no();
            for _ in 0..2 {
                send_callback(run, http, &order_no, &trade, SUCCESS, amount);
            }
        }
        // Fail it.
        2 => send_callback(run, http, &order_no, &trade_no(), FAILURE, 0),
        // Cancel it.
        3 => {
            let path = format!("/api/orders/{order_no}/cancel");
            if let Some(resp) = try_request(run, || {
                http.try_request("POST", &path, &[("Authorization", &bearer)], None)
            }) {
                if resp.status == 200 {
                    run.acked.lock().unwrap().cancelled.push(order_no);
                }
            }
        }
        // Leave it to expire; pay it around its deadline later.
        4 => run.late.lock().unwrap().push(order_no),
        // Leave it to expire.
        _ => {}
    }
}

fn send_callback(run: &Run, http: &Http, order_no: &str, trade: &str, code: i64, amount: i64) {
    let body = callback_body(order_no, trade, code, amount);
    let signed = signature(&body);
    if let Some(resp) = try_request(run, || {
        http.try_request(
            "POST",
            "/api/payments/callback",
            &[("X-Signature", &signed)],
            Some(&body),
        )
    }) {
        if resp.status == 200 {
            run.acked
                .lock()
                .unwrap()
                .callbacks
                .push((order_no.to_string(), trade.to_string()));
        } else {
            assert!(
                resp.status == 503 || resp.status == 422 || resp.status == 409,
                "callback for {order_no}: unexpected {} {}",
                resp.status,
                resp.text
            );
        }
    }
}

/// A request to an engine that may die under it: `None` when the connection failed.
fn try_request(run: &Run, send: impl FnOnce() -> Result<Resp, String>) -> Option<Resp> {
    run.requests.fetch_add(1, Ordering::Relaxed);
    let resp = send().ok()?;
    assert!(
        resp.status < 500 || resp.status == 503,
        "server error: {} {}",
        resp.status,
        resp.text
    );
    Some(resp)
}

/// Pays orders left to expire, each around its own deadline: before it (paid) or after it
/// (a late payment) — never both.
fn late_payer(run: &Run, db: &TestDatabase) {
    while !run.stop.load(Ordering::Relaxed) {
        let due: Vec<String> = std::mem::take(&mut *run.late.lock().unwrap());
        for order_no in due {
            let expires_at: chrono::NaiveDateTime = orders::table
                .find(&order_no)
                .select(orders::expires_at)
                .first(&mut db.connect())
                .expect("read the deadline");
            let at = expires_at.and_utc() - TimeDelta::milliseconds(5);
            while Utc::now() < at && !run.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if run.paused.load(Ordering::Acquire) {
                continue;
            }
            run.in_flight.fetch_add(1, Ordering::AcqRel);
            if let Some(http) = run.http() {
                let payable: i64 = orders::table
                    .find(&order_no)
                    .select(orders::payable_cents)
                    .first(&mut db.connect())
                    .expect("read the amount");
                send_callback(run, &http, &order_no, &trade_no(), SUCCESS, payable);
            }
            run.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the run when an order stays pending more than 2 s past its deadline while the
/// engine has been up for 2 s.
fn deadline_monitor(run: &Run, db: &TestDatabase) {
    let mut conn = db.connect();
    while !run.stop.load(Ordering::Relaxed) {
        let up_since = run.engine.read().unwrap().as_ref().map(|(_, since)| *since);
        if let Some(since) = up_since {
            if since.elapsed() > Duration::from_secs(2) {
                let overdue_before = Utc::now().naive_utc() - TimeDelta::seconds(2);
                let overdue: Vec<String> = orders::table
                    .filter(orders::status.eq("pending"))
                    .filter(orders::expires_at.lt(At(overdue_before)))
                    .select(orders::order_no)
                    .load(&mut conn)
                    .expect("read overdue orders");
                let still_up = run.engine.read().unwrap().as_ref().map(|(_, s)| *s) == Some(since);
                assert!(
                    overdue.is_empty() || !still_up,
                    "orders pending more than 2 s past their deadline while the engine is up: {overdue:?}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn crash_loop(backend: Backend) {
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let first = EngineProcess::start(&db, SETTINGS);
    let clients = 3;
    let mut users = Vec::new();
    for _ in 0..clients {
        let (_, token) = first.user_with_token(1_000_000);
        let courses: Vec<i64> = (0..40).map(|_| first.course(1_000)).collect();
        users.push((token, courses));
    }
    let run = Arc::new(Run {
        engine: RwLock::new(Some((first.http_clone(), Instant::now()))),
        stop: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        acked: Mutex::new(Acknowledged::default()),
        late: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
    });
    let mut engine = first;
    let started = Instant::now();
    let mut restarts = 0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ backend as u64);
    std::thread::scope(|scope| {
        for (i, (token, courses)) in users.into_iter().enumerate() {
            let run = &run;
            scope.spawn(move || client(run, 17 + i as u64, token, courses));
        }
        scope.spawn(|| late_payer(&run, &db));
        scope.spawn(|| deadline_monitor(&run, &db));
        let _stop = StopOnDrop(&run);

        while started.elapsed() < duration() {
            std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
            // SIGKILL at a random moment, under load.
            *run.engine.write().unwrap() = None;
            engine.kill();
            restarts += 1;
            if rng.below(2) == 0 {
                // Stay down across some deadlines.
                std::thread::sleep(Duration::from_millis(rng.below(TIMEOUT_SECS as u64 * 1000)));
            }
            engine = EngineProcess::start(&db, SETTINGS);
            *run.engine.write().unwrap() = Some((engine.http_clone(), Instant::now()));
            if restarts % 3 == 0 {
                // At this restart: pause the load, let the engine settle, check everything.
                run.pause();
                invariants::check_db(
                    &mut db.connect(),
                    &format!("{backend:?} after restart {restarts}"),
                );
                run.paused.store(false, Ordering::Release);
            }
        }
        run.pause();
        invariants::check_db(&mut db.connect(), &format!("{backend:?} at the end"));
        run.stop.store(true, Ordering::Relaxed);
    });

    // Every acknowledged change is in the database.
    let acked = run.acked.lock().unwrap();
    let mut conn = db.connect();
    for order_no in &acked.placed {
        let found: i64 = orders::table
            .find(order_no)
            .count()
            .get_result(&mut conn)
            .expect("count");
        assert_eq!(found, 1, "placed order {order_no} (201) is missing");
    }
    for (order_no, trade) in &acked.callbacks {
        let stored: Vec<String> = payment_events::table
            .filter(payment_events::trade_no.eq(trade))
            .select(payment_events::order_no)
            .load(&mut conn)
            .expect("events");
        assert_eq!(
            stored,
            vec![order_no.clone()],
            "acknowledged callback {trade} is not stored"
        );
    }
    for order_no in &acked.cancelled {
        let (status, reason): (String, Option<String>) = orders::table
            .find(order_no)
            .select((orders::status, orders::close_reason))
            .first(&mut conn)
            .expect("order");
        assert_eq!(
            (status.as_str(), reason.as_deref()),
            ("cancelled", Some("user")),
            "{order_no}"
        );
    }
    let line = format!(
        "crash loop ({backend:?}): {restarts} SIGKILLs, {} requests, {} orders, {} callbacks and {} cancels acknowledged",
        run.requests.load(Ordering::Relaxed),
        acked.placed.len(),
        acked.callbacks.len(),
        acked.cancelled.len()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{line}\n").as_bytes());
    assert!(
        restarts >= 3 && acked.placed.len() > 10,
        "the loop did too little: {line}"
    );
}

mod crash_loop_under_load {
    use super::*;

    #[test]
    fn sqlite() {
        crash_loop(Backend::Sqlite);
    }

    #[test]
    fn postgres() {
        crash_loop(Backend::Postgres);
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        crash_loop(Backend::Mysql);
    }
}

//! Process level: the real binary as a child process. A SIGKILL and a restart on the same
//! database (passed deadlines fire at once, the others on time, pending effects land once),
//! a graceful SIGTERM (exit 0, pending orders resumed), and two processes sharing one
//! PostgreSQL database under concurrent callbacks and cancels.

use std::sync::Barrier;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::invariants;
use crate::process::EngineProcess;

fn no(order: &Value) -> &str {
    order["order_no"].as_str().expect("order_no")
}

/// Waits, by the clock, until `at` has passed.
fn wait_until(what: &str, at: DateTime<Utc>) {
    let budget = (at - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(5);
    wait_for(what, budget, || {
        if Utc::now() > at {
            Ok(())
        } else {
            Err(format!("now {}", Utc::now()))
        }
    });
}

/// The status of an order straight from the database (the engine is down).
fn stored_status(db: &TestDatabase, order_no: &str) -> String {
    use diesel::prelude::*;
    use order_engine::db::schema::orders;
    orders::table
        .find(order_no)
        .select(orders::status)
        .first(&mut db.connect())
        .expect("read the order")
}

/// A student with 1000 points; `n` two-chapter courses.
fn catalog(engine: &EngineProcess, n: usize) -> (i64, String, Vec<i64>) {
    let (user_id, token) = engine.user_with_token(1_000);
    let courses = (0..n).map(|_| engine.course(1_000)).collect();
    (user_id, token, courses)
}

/// SIGKILL with orders pending and a grant unfinished; deadlines pass while the engine is
/// down; a new process on the same database closes those at once, the others on time, and
/// applies the grant exactly once.
fn kill_and_restart(backend: Backend) {
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let settings = [
        ("orders.payment_timeout_secs", "3"),
        // A failed grant waits for the restart, not for a retry.
        ("effects.backoff_base_ms", "600000"),
        ("effects.backoff_max_ms", "600000"),
    ];
    let mut first = EngineProcess::start(&db, &settings);
    let (_, token, courses) = catalog(&first, 6);

    // A paid order whose grant fails (a trigger rejects it) and stays pending.
    let paid = first.place_ok(&token, &[courses[0]], None, 0);
    reject_grants(&mut db.connect());
    first.pay(&paid);
    wait_for("the grant to fail once", Duration::from_secs(30), || {
        let effects = first.admin_order(no(&paid))["effects"].clone();
        let failed = effects[0]["attempts"].as_i64().unwrap_or(0) >= 1;
        if failed && effects[0]["status"] == "pending" {
            Ok(())
        } else {
            Err(effects.to_string())
        }
    });

    // Early orders: their deadlines pass while the engine is down.
    let early = vec![
        first.place_ok(&token, &[courses[1]], None, 100),
        first.place_ok(&token, &[courses[2]], None, 0),
    ];
    // Late orders, placed 2 s later: still pending when the engine is back.
    wait_until(
        "2 s after the early orders",
        ts(&early[0]["created_at"]) + TimeDelta::seconds(2),
    );
    let late = vec![
        first.place_ok(&token, &[courses[3]], None, 50),
        first.place_ok(&token, &[courses[4]], None, 0),
    ];
    first.kill();
    for order in early.iter().chain(&late) {
        assert_eq!(
            stored_status(&db, no(order)),
            "pending",
            "{} closed before the kill; the machine is too slow for this test",
            no(order)
        );
    }
    allow_grants(&mut db.connect());
    let last_early = early.iter().map(|o| ts(&o["expires_at"])).max().unwrap();
    wait_until(
        "the early deadlines to pass while the engine is down",
        last_early + TimeDelta::milliseconds(300),
    );

    let restarted_at = Utc::now();
    let second = EngineProcess::start(&db, &settings);
    let ready_at = Utc::now();
    for order in &late {
        let view = second.admin_order(no(order));
        if view["order"]["status"] == "pending" {
            assert_eq!(view["actor"]["alive"], true, "{view}");
            assert_eq!(view["actor"]["deadline"], order["expires_at"], "{view}");
        }
    }
    for order in &early {
        let closed = second.wait_order_status(no(order), "cancelled", Duration::from_secs(20));
        assert_eq!(closed["close_reason"], "timeout", "{closed}");
        let closed_at = ts(&closed["closed_at"]);
        assert!(
            closed_at + TimeDelta::milliseconds(1) >= restarted_at,
            "closed while down? {closed}"
        );
        assert!(
            closed_at <= ready_at + TimeDelta::seconds(2),
            "not closed at once on start (ready at {ready_at}): {closed}"
        );
    }
    for order in &late {
        let closed = second.wait_order_status(no(order), "cancelled", Duration::from_secs(20));
        assert_eq!(closed["close_reason"], "timeout", "{closed}");
        let lateness = ts(&closed["closed_at"]) - ts(&closed["expires_at"]);
        assert!(
            lateness >= TimeDelta::zero() && lateness < TimeDelta::milliseconds(1_500),
            "lateness {lateness}: {closed}"
        );
    }
    let view = second.wait_effects_done(no(&paid));
    assert_eq!(view["effects"].as_array().unwrap().len(), 1, "{view}");
    for order in early.iter().chain(&late) {
        if order["points_used"] != 0 {
            let view = second.wait_effects_done(no(order));
            assert_eq!(view["effects"][0]["kind"], "refund", "{view}");
        }
    }
    assert_eq!(second.me(&token)["points"], 1_000);
    invariants::check_db(&mut db.connect(), &format!("{backend:?}, after a SIGKILL"));
    drop(second);
}

/// SIGTERM: exit code 0; a new process resumes the pending orders' timers.
fn graceful_shutdown(backend: Backend) {
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    // Long enough that the second process has started and been looked at before the deadline
    // (an admin view reads the order, then the actor: a timeout between the two reads shows a
    // pending order without its actor).
    let settings = [("orders.payment_timeout_secs", "15")];
    let mut first = EngineProcess::start(&db, &settings);
    let (_, token, courses) = catalog(&first, 3);
    let orders = vec![
        first.place_ok(&token, &[courses[0]], None, 100),
        first.place_ok(&token, &[courses[1]], None, 0),
    ];
    let status = first.terminate();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", first.log_tail());
    for order in &orders {
        assert_eq!(stored_status(&db, no(order)), "pending");
    }

    let second = EngineProcess::start(&db, &settings);
    for order in &orders {
        let view = second.admin_order(no(order));
        if view["order"]["status"] == "pending" {
            assert_eq!(view["actor"]["alive"], true, "{view}");
            assert_eq!(view["actor"]["state"], "armed", "{view}");
            assert_eq!(view["actor"]["deadline"], order["expires_at"], "{view}");
        }
    }
    let paid = second.callback(no(&orders[1]), &trade_no(), SUCCESS, 1_000);
    let answered_at = Utc::now();
    assert_eq!(paid.assert_status(200), &json!({"result": "success"}));
    let stored = second.admin_order(no(&orders[1]))["order"].clone();
    if answered_at < ts(&orders[1]["expires_at"]) {
        // Answered before the deadline, so it was processed before it: the order is paid.
        assert_eq!(stored["status"], "paid", "{stored}");
    }
    let closed = second.wait_order_status(no(&orders[0]), "cancelled", Duration::from_secs(30));
    assert_eq!(closed["close_reason"], "timeout");
    assert!(ts(&closed["closed_at"]) >= ts(&closed["expires_at"]));
    invariants::check_db(&mut db.connect(), &format!("{backend:?}, after a SIGTERM"));
    drop(second);
}

mod kill_and_restart {
    use super::*;

    #[test]
    fn sqlite() {
        kill_and_restart(Backend::Sqlite);
    }

    #[test]
    fn postgres() {
        kill_and_restart(Backend::Postgres);
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        kill_and_restart(Backend::Mysql);
    }
}

mod graceful_shutdown {
    use super::*;

    #[test]
    fn sqlite() {
        graceful_shutdown(Backend::Sqlite);
    }

    #[test]
    fn postgres() {
        graceful_shutdown(Backend::Postgres);
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        graceful_shutdown(Backend::Mysql);
    }
}

/// Two engine processes on one PostgreSQL database; every order gets, at once, a success
/// callback, a user cancel and an admin cancel, spread over both: exactly one transition each.
#[test]
fn two_processes_one_postgres_database() {
    two_processes_one_database(Backend::Postgres);
}

/// The same on one MySQL / MariaDB database.
#[cfg(feature = "mysql")]
#[test]
fn mysql_two_processes_one_database() {
    two_processes_one_database(Backend::Mysql);
}

fn two_processes_one_database(backend: Backend) {
    const ORDERS: usize = 16;
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let settings = [("orders.payment_timeout_secs", "120")];
    let nodes = [
        EngineProcess::start(&db, &settings),
        EngineProcess::start(&db, &settings),
    ];
    let (_, token, courses) = catalog(&nodes[0], ORDERS);
    let orders: Vec<Value> = courses
        .iter()
        .enumerate()
        .map(|(i, course)| nodes[i % 2].place_ok(&token, &[*course], None, 10))
        .collect();
    let barrier = Barrier::new(ORDERS * 3);
    let results: Vec<(String, Resp, Resp, Resp)> = std::thread::scope(|scope| {
        let handles: Vec<_> = orders
            .iter()
            .enumerate()
            .map(|(i, order)| {
                let (a, b) = (&nodes[i % 2], &nodes[(i + 1) % 2]);
                let (barrier, token) = (&barrier, &token);
                let no = no(order).to_string();
                let trade = trade_no();
                let pay = {
                    let (no, trade) = (no.clone(), trade.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        b.callback(&no, &trade, SUCCESS, 990)
                    })
                };
                let user = {
                    let path = format!("/api/orders/{no}/cancel");
                    scope.spawn(move || {
                        barrier.wait();
                        a.as_user(token, "POST", &path, None)
                    })
                };
                let admin = {
                    let path = format!("/admin/orders/{no}/cancel");
                    scope.spawn(move || {
                        barrier.wait();
                        b.admin("POST", &path, None)
                    })
                };
                (trade, pay, user, admin)
            })
            .collect();
        handles
            .into_iter()
            .map(|(trade, pay, user, admin)| {
                (
                    trade,
                    pay.join().expect("pay"),
                    user.join().expect("user cancel"),
                    admin.join().expect("admin cancel"),
                )
            })
            .collect()
    });
    let late = nodes[0]
        .admin("GET", "/admin/late-payments?limit=100", None)
        .assert_status(200)["data"]
        .clone();
    let (mut paid, mut cancelled) = (0, 0);
    for (order, (trade, pay, user, admin)) in orders.iter().zip(&results) {
        assert_eq!(pay.assert_status(200), &json!({"result": "success"}));
        let stored = nodes[0].admin_order(no(order))["order"].clone();
        let is_late = late
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["trade_no"] == trade.as_str() && p["reason"] == "late_payment");
        let cancels_ok = [user, admin].iter().filter(|r| r.status == 200).count();
        for resp in [user, admin] {
            if resp.status != 200 {
                resp.assert_error(409, "order_not_pending");
            }
        }
        match stored["status"].as_str().unwrap() {
            "paid" => {
                paid += 1;
                assert_eq!(stored["trade_no"], trade.as_str(), "{stored}");
                assert_eq!(cancels_ok, 0, "paid and cancelled: {stored}");
                assert!(!is_late, "paid and late: {stored}");
            }
            "cancelled" => {
                cancelled += 1;
                assert_eq!(cancels_ok, 1, "{stored}");
                let winner = if user.status == 200 { user } else { admin };
                assert_eq!(winner.json["close_reason"], stored["close_reason"]);
                assert!(is_late, "the lost success is not a late payment: {stored}");
            }
            other => panic!("order ended {other}: {stored}"),
        }
    }
    assert_eq!(paid + cancelled, ORDERS);
    invariants::check_db(
        &mut db.connect(),
        "two processes on one PostgreSQL database",
    );
    drop(nodes);
}

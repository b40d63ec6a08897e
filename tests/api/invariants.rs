//! The shared SPEC-invariant checker, run after every lifecycle test (SPEC §Invariants).
//!
//! It first waits, with a deadline, for the engine to settle (no effect left pending, no
//! pending order more than 2 s past its deadline), then reads every table and checks:
//! 1. points: `points = initial_points + sum(ledger)`; each order's points spent once, and
//!    given back exactly once when it closed unpaid;
//! 2. coupons: locked by at most one, pending, order; used iff that order is paid; else unused;
//! 3. grants: the users' courses and chapters are exactly those of their paid orders;
//! 4. one transition per order: states agree with their timestamps and payment events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use order_engine::db::models::*;
use order_engine::db::schema::*;
use order_engine::db::sql_types::At;
use order_engine::db::DbConnection;
use order_engine::domain::states::{CloseReason, OrderStatus};

use crate::helpers::{wait_for, TestApp};

pub fn check(app: &TestApp) {
    check_db(&mut app.db(), &format!("{:?}", app.backend));
}

/// The same check on any database the engine (one or several processes) runs on; `label`
/// names it in the failure message. The engine must still be running while it settles.
pub fn check_db(conn: &mut DbConnection, label: &str) {
    // Timers keep firing while the checker reads, so it reads one consistent snapshot of the
    // whole database, and takes a new one until that snapshot is settled too.
    let violations = wait_for("a settled snapshot", Duration::from_secs(60), || {
        settle(conn);
        let (unsettled, violations) = snapshot(conn).map_err(|e| e.to_string())?;
        match unsettled {
            Some(seen) => Err(seen),
            None => Ok(violations),
        }
    });
    assert!(
        violations.is_empty(),
        "SPEC invariants violated ({label}):\n  {}",
        violations.join("\n  ")
    );
}

/// Reads everything in one transaction (REPEATABLE READ on PostgreSQL and MySQL, whose
/// engine connections read committed; a SQLite read transaction is a snapshot already):
/// whether it is settled, and its violations.
fn snapshot(conn: &mut DbConnection) -> QueryResult<(Option<String>, Vec<String>)> {
    // MySQL sets the next transaction's isolation before it begins.
    #[cfg(feature = "mysql")]
    if let DbConnection::Mysql(_) = conn {
        diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(conn)?;
    }
    conn.transaction(|conn| {
        if let DbConnection::Postgresql(_) = conn {
            diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(conn)?;
        }
        let unsettled = unsettled(conn)?;
        Ok((unsettled, violations(conn)))
    })
}

/// Waits until no effect is pending and no pending order is more than 2 s past its deadline.
fn settle(conn: &mut DbConnection) {
    wait_for(
        "the engine to settle",
        Duration::from_secs(60),
        || match unsettled(conn).map_err(|e| e.to_string())? {
            Some(seen) => Err(seen),
            None => Ok(()),
        },
    );
}

/// What is still moving: pending effects, or pending orders more than 2 s past their deadline.
fn unsettled(conn: &mut DbConnection) -> QueryResult<Option<String>> {
    let pending_effects: i64 = effects::table
        .filter(effects::status.eq("pending"))
        .count()
        .get_result(conn)?;
    let overdue_before = Utc::now().naive_utc() - TimeDelta::seconds(2);
    let overdue: i64 = orders::table
        .filter(orders::status.eq("pending"))
        .filter(orders::expires_at.lt(At(overdue_before)))
        .count()
        .get_result(conn)?;
    Ok((pending_effects > 0 || overdue > 0)
        .then(|| format!("{pending_effects} effects pending, {overdue} orders overdue")))
}

#[derive(Queryable)]
struct Event {
    order_no: String,
    trade_no: String,
    outcome: String,
}

pub fn violations(conn: &mut DbConnection) -> Vec<String> {
    let mut v = Vec::new();
    let users: Vec<User> = users::table
        .select(User::as_select())
        .load(conn)
        .expect("users");
    let ledger: Vec<LedgerRow> = points_ledger::table
        .select(LedgerRow::as_select())
        .load(conn)
        .expect("ledger");
    let orders: Vec<OrderRow> = orders::table
        .select(OrderRow::as_select())
        .load(conn)
        .expect("orders");
    let items: Vec<OrderItemRow> = order_items::table
        .select(OrderItemRow::as_select())
        .load(conn)
        .expect("items");
    let coupons: Vec<UserCouponRow> = user_coupons::table
        .select(UserCouponRow::as_select())
        .load(conn)
        .expect("user coupons");
    let granted: Vec<(i64, i64)> = user_courses::table
        .select((user_courses::user_id, user_courses::course_id))
        .load(conn)
        .expect("user courses");
    let granted_chapters: Vec<(i64, i64, i64)> = user_course_chapters::table
        .select((
            user_course_chapters::user_id,
            user_course_chapters::course_id,
            user_course_chapters::chapter_id,
        ))
        .load(conn)
        .expect("user chapters");
    let chapters: Vec<(i64, i64)> = chapters::table
        .select((chapters::course_id, chapters::id))
        .load(conn)
        .expect("chapters");
    let events: Vec<Event> = payment_events::table
        .select((
            payment_events::order_no,
            payment_events::trade_no,
            payment_events::outcome,
        ))
        .load(conn)
        .expect("payment events");
    let effects: Vec<(String, String, String)> = effects::table
        .select((effects::order_no, effects::kind, effects::status))
        .load(conn)
        .expect("effects");

    // 1. Points.
    for user in &users {
        let sum: i64 = ledger
            .iter()
            .filter(|l| l.user_id == user.id)
            .map(|l| l.delta)
            .sum();
        if user.points != user.initial_points + sum {
            v.push(format!(
                "user {}: points {} != initial {} + ledger {}",
                user.id, user.points, user.initial_points, sum
            ));
        }
    }
    let closed =
        |o: &OrderRow| o.status == OrderStatus::Failed || o.status == OrderStatus::Cancelled;
    for order in &orders {
        let rows = |kind: &str| -> Vec<i64> {
            ledger
                .iter()
                .filter(|l| l.order_no == order.order_no && l.kind.as_str() == kind)
                .map(|l| l.delta)
                .collect()
        };
        let expected_spend = if order.points_used > 0 {
            vec![-order.points_used]
        } else {
            vec![]
        };
        if rows("spend") != expected_spend {
            v.push(format!(
                "order {}: spend rows {:?}, expected {:?}",
                order.order_no,
                rows("spend"),
                expected_spend
            ));
        }
        let expected_refund = if closed(order) && order.points_used > 0 {
            vec![order.points_used]
        } else {
            vec![]
        };
        if rows("refund") != expected_refund {
            v.push(format!(
                "order {} ({}): refund rows {:?}, expected {:?}",
                order.order_no,
                order.status,
                rows("refund"),
                expected_refund
            ));
        }
    }

    // 2. Coupons.
    let by_no: BTreeMap<&str, &OrderRow> =
        orders.iter().map(|o| (o.order_no.as_str(), o)).collect();
    for coupon in &coupons {
        let holder = coupon.order_no.as_deref().and_then(|no| by_no.get(no));
        let ok = match (coupon.status.as_str(), holder) {
            ("unused", None) => coupon.order_no.is_none(),
            ("locked", Some(o)) => {
                o.status == OrderStatus::Pending && o.user_coupon_id == Some(coupon.id)
            }
            ("used", Some(o)) => {
                o.status == OrderStatus::Paid && o.user_coupon_id == Some(coupon.id)
            }
            _ => false,
        };
        if !ok {
            v.push(format!(
                "user coupon {}: status {} with order {:?} ({:?})",
                coupon.id,
                coupon.status,
                coupon.order_no,
                holder.map(|o| &o.status)
            ));
        }
    }
    for order in orders
        .iter()
        .filter(|o| o.status == OrderStatus::Pending || o.status == OrderStatus::Paid)
    {
        if let Some(id) = order.user_coupon_id {
            let held = coupons
                .iter()
                .any(|c| c.id == id && c.order_no.as_deref() == Some(order.order_no.as_str()));
            if !held {
                v.push(format!(
                    "order {} ({}): its coupon {id} is not held by it",
                    order.order_no, order.status
                ));
            }
        }
    }

    // 3. Grants: exactly the courses and chapters of paid orders.
    let should_own: BTreeSet<(i64, i64)> = items
        .iter()
        .filter_map(|i| {
            by_no
                .get(i.order_no.as_str())
                .filter(|o| o.status == OrderStatus::Paid)
                .map(|o| (o.user_id.0, i.course_id.0))
        })
        .collect();
    let owns: BTreeSet<(i64, i64)> = granted.iter().copied().collect();
    if owns.len() != granted.len() {
        v.push("a course is granted twice to one user".into());
    }
    if owns != should_own {
        v.push(format!(
            "granted courses {owns:?} != courses of paid orders {should_own:?}"
        ));
    }
    let should_chapters: BTreeSet<(i64, i64, i64)> = should_own
        .iter()
        .flat_map(|(user, course)| {
            chapters
                .iter()
                .filter(move |(c, _)| c == course)
                .map(move |(c, ch)| (*user, *c, *ch))
        })
        .collect();
    let has_chapters: BTreeSet<(i64, i64, i64)> = granted_chapters.iter().copied().collect();
    if has_chapters.len() != granted_chapters.len() {
        v.push("a chapter is granted twice to one user".into());
    }
    if has_chapters != should_chapters {
        v.push(format!(
            "granted chapters {has_chapters:?} != chapters of paid orders {should_chapters:?}"
        ));
    }

    // 4. One transition out of pending per order, consistent with its events and effects.
    for order in &orders {
        let no = &order.order_no;
        let outcome_count = |outcome: &str| {
            events
                .iter()
                .filter(|e| e.order_no == no.as_str() && e.outcome == outcome)
                .count()
        };
        let effect_count = |kind: &str| {
            effects
                .iter()
                .filter(|(o, k, _)| o == no.as_str() && k == kind)
                .count()
        };
        match order.status.as_str() {
            "pending" => {
                if order.paid_at.is_some()
                    || order.closed_at.is_some()
                    || order.close_reason.is_some()
                {
                    v.push(format!("order {no}: pending with paid/closed fields set"));
                }
            }
            "paid" => {
                let paid_events = outcome_count("paid");
                let expected = usize::from(order.payable_cents > 0);
                if paid_events != expected || order.closed_at.is_some() {
                    v.push(format!(
                        "order {no}: paid with {paid_events} paid events (expected {expected})"
                    ));
                }
                if let Some(trade_no) = &order.trade_no {
                    if !events
                        .iter()
                        .any(|e| &e.trade_no == trade_no && e.outcome == "paid")
                    {
                        v.push(format!("order {no}: trade_no {trade_no} has no paid event"));
                    }
                }
                // One grant effect, or none once a `purge` deleted it done (SPEC: finished
                // effects are purged); the grant itself is checked by invariant 3 either way.
                if effect_count("grant") > 1 || effect_count("refund") != 0 {
                    v.push(format!("order {no}: paid with more than one grant effect"));
                }
            }
            "failed" | "cancelled" => {
                if order.paid_at.is_some()
                    || order.closed_at.is_none()
                    || outcome_count("paid") != 0
                {
                    v.push(format!(
                        "order {no}: {} but paid fields or events present",
                        order.status
                    ));
                }
                let failed = order.close_reason == Some(CloseReason::PaymentFailed);
                if (order.status == OrderStatus::Failed) != failed
                    || outcome_count("failed") != usize::from(failed)
                {
                    v.push(format!(
                        "order {no}: {} with reason {:?} and {} failed events",
                        order.status,
                        order.close_reason,
                        outcome_count("failed")
                    ));
                }
                // As for grants: a purged refund effect leaves none; the points given back are
                // checked by invariant 1.
                let refunds = usize::from(order.points_used > 0);
                if effect_count("refund") > refunds || effect_count("grant") != 0 {
                    v.push(format!("order {no}: closed with wrong effects"));
                }
                if let Some(closed_at) = order.closed_at {
                    if order.close_reason == Some(CloseReason::Timeout)
                        && closed_at < order.expires_at
                    {
                        v.push(format!("order {no}: timed out before its deadline"));
                    }
                }
            }
            other => v.push(format!("order {no}: unknown status {other}")),
        }
    }
    for (order_no, kind, status) in &effects {
        if status != "done" {
            v.push(format!("effect {kind} of order {order_no} is {status}"));
        }
    }
    v
}

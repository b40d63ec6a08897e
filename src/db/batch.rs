//! Set-based transactions for many orders at once, for when deadlines bunch up (a burst of
//! orders sharing one deadline second, or a restart after downtime): a constant number of
//! statements per batch instead of per order, so the database's commit rate stops being the
//! limit. Each does exactly what the one-order path does for each order it touches
//! ([`super::transitions::apply`] with `Timeout`, [`super::effects::attempt`] for a refund);
//! orders it does not touch are left to that path.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::events::{kind as event, Journal};
use super::models::{Order, OrderItemRow, OrderRow};
use super::schema::*;
use super::{write_transaction, DbConnection};
use crate::domain::order::{coupon_status, effect, ledger_kind, CloseReason, OrderStatus};
use crate::per_backend;

/// Most orders in one batch (well under SQLite's bound-parameter limit).
pub const MAX_BATCH: usize = 500;

/// Closes for timeout, in one transaction, those of `order_nos` that are still pending and
/// whose deadline is at or before `now`: each becomes `cancelled` (reason `timeout`,
/// `closed_at = now`), its locked coupon goes back to `unused`, and a refund is queued when it
/// spent points. Returns the closed orders with whether each queued a refund.
pub fn close_expired(
    conn: &mut DbConnection,
    order_nos: &[String],
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Vec<(String, bool)>> {
    if order_nos.is_empty() {
        return Ok(Vec::new());
    }
    write_transaction(conn, |conn| {
        let target = orders::table
            .filter(orders::order_no.eq_any(order_nos))
            .filter(orders::status.eq(OrderStatus::Pending.as_str()))
            .filter(orders::expires_at.le(now));
        let closed: Vec<(String, i64)> = per_backend!(conn, |c| diesel::update(target)
            .set((
                orders::status.eq(OrderStatus::Cancelled.as_str()),
                orders::closed_at.eq(now),
                orders::close_reason.eq(CloseReason::Timeout.as_str()),
                orders::trade_no.eq(None::<String>),
                orders::owner_node.eq(None::<String>),
            ))
            .returning((orders::order_no, orders::points_used))
            .get_results(c))?;
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let numbers: Vec<&str> = closed.iter().map(|(no, _)| no.as_str()).collect();
        diesel::update(
            user_coupons::table
                .filter(user_coupons::order_no.eq_any(&numbers))
                .filter(user_coupons::status.eq(coupon_status::LOCKED)),
        )
        .set((
            user_coupons::status.eq(coupon_status::UNUSED),
            user_coupons::order_no.eq(None::<String>),
        ))
        .execute(conn)?;
        let refunds: Vec<_> = closed
            .iter()
            .filter(|(_, points)| *points > 0)
            .map(|(no, _)| {
                (
                    effects::order_no.eq(no.as_str()),
                    effects::kind.eq(effect::REFUND),
                    effects::status.eq(effect::PENDING),
                    effects::attempts.eq(0),
                    effects::next_attempt_at.eq(now),
                    effects::created_at.eq(now),
                    effects::updated_at.eq(now),
                )
            })
            .collect();
        if !refunds.is_empty() {
            per_backend!(conn, |c| diesel::insert_into(effects::table)
                .values(&refunds)
                .execute(c))?;
        }
        if journal.enabled {
            for order in load_orders(conn, &numbers)? {
                journal.record(conn, event::CANCELLED, &order, now)?;
            }
        }
        Ok(closed
            .into_iter()
            .map(|(no, points)| (no, points > 0))
            .collect())
    })
}

/// Applies, in one transaction, the pending refunds of `order_nos`: one `refund` ledger row per
/// order and the points back on each user, and the effects marked done. Returns the orders
/// whose refund this applied (the others were not pending: done, dead-lettered or unknown).
pub fn apply_refunds(
    conn: &mut DbConnection,
    order_nos: &[String],
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Vec<String>> {
    if order_nos.is_empty() {
        return Ok(Vec::new());
    }
    write_transaction(conn, |conn| {
        // Lock the pending refund rows; only those are ours to apply.
        let target = effects::table
            .filter(effects::order_no.eq_any(order_nos))
            .filter(effects::kind.eq(effect::REFUND))
            .filter(effects::status.eq(effect::PENDING));
        let mine: Vec<String> = per_backend!(conn, |c| diesel::update(target)
            .set(effects::updated_at.eq(now))
            .returning(effects::order_no)
            .get_results(c))?;
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let spent: Vec<(String, i64, i64)> = orders::table
            .filter(orders::order_no.eq_any(&mine))
            .select((orders::order_no, orders::user_id, orders::points_used))
            .load(conn)?;
        let rows: Vec<_> = spent
            .iter()
            .filter(|(_, _, points)| *points > 0)
            .map(|(no, user, points)| {
                (
                    points_ledger::user_id.eq(*user),
                    points_ledger::order_no.eq(no.as_str()),
                    points_ledger::kind.eq(ledger_kind::REFUND),
                    points_ledger::delta.eq(*points),
                    points_ledger::created_at.eq(now),
                )
            })
            .collect();
        // A refund row already there (a replay) is skipped, and so are its points.
        let inserted: Vec<String> = if rows.is_empty() {
            Vec::new()
        } else {
            per_backend!(conn, |c| diesel::insert_into(points_ledger::table)
                .values(&rows)
                .on_conflict_do_nothing()
                .returning(points_ledger::order_no)
                .get_results(c))?
        };
        let mut per_user: BTreeMap<i64, i64> = BTreeMap::new();
        for (no, user, points) in &spent {
            if inserted.contains(no) {
                *per_user.entry(*user).or_default() += points;
            }
        }
        // Users in id order, so concurrent batches lock them in one order.
        for (user, points) in per_user {
            diesel::update(users::table.find(user))
                .set(users::points.eq(users::points + points))
                .execute(conn)?;
        }
        diesel::update(
            effects::table
                .filter(effects::order_no.eq_any(&mine))
                .filter(effects::kind.eq(effect::REFUND)),
        )
        .set((
            effects::status.eq(effect::DONE),
            effects::attempts.eq(effects::attempts + 1),
            effects::last_error.eq(None::<String>),
            effects::updated_at.eq(now),
        ))
        .execute(conn)?;
        if journal.enabled {
            let numbers: Vec<&str> = mine.iter().map(String::as_str).collect();
            for order in load_orders(conn, &numbers)? {
                journal.record(conn, event::REFUNDED, &order, now)?;
            }
        }
        Ok(mine)
    })
}

/// The orders `order_nos` with their items.
fn load_orders(conn: &mut DbConnection, order_nos: &[&str]) -> QueryResult<Vec<Order>> {
    let rows: Vec<OrderRow> = orders::table
        .filter(orders::order_no.eq_any(order_nos))
        .order(orders::order_no)
        .select(OrderRow::as_select())
        .load(conn)?;
    let items: Vec<OrderItemRow> = order_items::table
        .filter(order_items::order_no.eq_any(order_nos))
        .order((order_items::order_no, order_items::position))
        .select(OrderItemRow::as_select())
        .load(conn)?;
    let mut by_order: BTreeMap<String, Vec<OrderItemRow>> = BTreeMap::new();
    for item in items {
        by_order
            .entry(item.order_no.clone())
            .or_default()
            .push(item);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let items = by_order.remove(&row.order_no).unwrap_or_default();
            Order::new(row, items)
        })
        .collect())
}

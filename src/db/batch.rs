//! Set-based transactions for many orders at once, for when deadlines or payments bunch up (a
//! burst of orders sharing one deadline second, a restart after downtime, many callbacks): a
//! constant number of statements per batch instead of per order, so the database's commit rate
//! stops being the limit. Each does exactly what the one-order path does for each order it
//! touches ([`super::transitions::apply`] with `Timeout`, [`super::effects::attempt`] for a
//! refund or a grant: a batch of one); orders it does not touch are left to that path.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::effects::mark_done;
use super::events::{kind as event, Journal};
use super::models::{Order, OrderRow};
use super::orders::with_items;
use super::schema::*;
use super::{write_transaction, DbConnection};
use crate::domain::order::{coupon_status, effect, ledger_kind, CloseReason, OrderStatus};
use crate::per_backend;

/// Most orders in one batch (well under SQLite's bound-parameter limit).
pub const MAX_BATCH: usize = 500;
/// Most rows in one multi-row `INSERT` of a grant batch (4 parameters a row; an order may hold
/// several courses of many chapters).
const INSERT_CHUNK: usize = 1000;

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
        // Lock the rows by primary key and decide here which to close: a predicate on
        // `status` could lead the planner to the partial index of pending deadlines, which is
        // full of dead entries while a burst of orders leaves `pending`.
        let query = orders::table
            .filter(orders::order_no.eq_any(order_nos))
            .select((
                orders::order_no,
                orders::status,
                orders::expires_at,
                orders::points_used,
            ));
        let rows: Vec<(String, String, NaiveDateTime, i64)> = match conn {
            DbConnection::Postgresql(c) => query.for_update().load(c)?,
            DbConnection::Sqlite(c) => query.load(c)?,
        };
        let closed: Vec<(String, i64)> = rows
            .into_iter()
            .filter(|(_, status, expires_at, _)| {
                status == OrderStatus::Pending.as_str() && *expires_at <= now
            })
            .map(|(no, _, _, points)| (no, points))
            .collect();
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let closing: Vec<&str> = closed.iter().map(|(no, _)| no.as_str()).collect();
        diesel::update(orders::table.filter(orders::order_no.eq_any(&closing)))
            .set((
                orders::status.eq(OrderStatus::Cancelled.as_str()),
                orders::closed_at.eq(now),
                orders::close_reason.eq(CloseReason::Timeout.as_str()),
                orders::trade_no.eq(None::<String>),
                orders::owner_node.eq(None::<String>),
            ))
            .execute(conn)?;
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

/// What one kind of effect does to the orders whose effect is pending (locked).
type ApplyFn = fn(&mut DbConnection, &[String], NaiveDateTime) -> QueryResult<()>;

/// Applies, in one transaction, the pending `kind` effects of `order_nos` — a refund: one
/// `refund` ledger row per order and the points back on each user; a grant: each order's user
/// gets the order's courses and every chapter of each (rows already there are kept) — and marks
/// them done, journaled. Returns the orders whose effect this applied (the others were not
/// pending: done, dead-lettered or unknown).
pub fn apply_effects(
    conn: &mut DbConnection,
    kind: &str,
    order_nos: &[String],
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Vec<String>> {
    let (apply, done): (ApplyFn, _) = match kind {
        effect::GRANT => (grant, event::GRANTED),
        effect::REFUND => (refund, event::REFUNDED),
        other => {
            return Err(diesel::result::Error::QueryBuilderError(
                format!("unknown effect kind {other}").into(),
            ))
        }
    };
    if order_nos.is_empty() {
        return Ok(Vec::new());
    }
    write_transaction(conn, |conn| {
        let mine = lock_pending(conn, order_nos, kind)?;
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        apply(conn, &mine, now)?;
        let numbers: Vec<&str> = mine.iter().map(String::as_str).collect();
        mark_done(conn, &numbers, kind, now)?;
        if journal.enabled {
            for order in load_orders(conn, &numbers)? {
                journal.record(conn, done, &order, now)?;
            }
        }
        Ok(mine)
    })
}

/// The refunds of `mine` (orders with a pending refund, locked).
fn refund(conn: &mut DbConnection, mine: &[String], now: NaiveDateTime) -> QueryResult<()> {
    let spent: Vec<(String, i64, i64)> = orders::table
        .filter(orders::order_no.eq_any(mine))
        .select((orders::order_no, orders::user_id, orders::points_used))
        .load(conn)?;
    // Lock the users first, in id order: the ledger insert below takes key-share locks on
    // them (its foreign key) in its own order, which would deadlock with a concurrent batch.
    let users_touched = sorted_unique(
        spent
            .iter()
            .filter(|(_, _, points)| *points > 0)
            .map(|(_, user, _)| *user),
    );
    lock_users(conn, &users_touched, "UPDATE")?;
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
    add_points(conn, per_user)?;
    Ok(())
}

/// The grants of `mine` (orders with a pending grant, locked).
fn grant(conn: &mut DbConnection, mine: &[String], now: NaiveDateTime) -> QueryResult<()> {
    let items: Vec<(String, i64, i64)> = order_items::table
        .inner_join(orders::table)
        .filter(order_items::order_no.eq_any(mine))
        .select((
            order_items::order_no,
            orders::user_id,
            order_items::course_id,
        ))
        .load(conn)?;
    // (user, course) -> the order that gives it; sorted, so that every batch inserts (and
    // takes its unique-key and foreign-key locks) in the same order as any other.
    let mut courses: BTreeMap<(i64, i64), &str> = BTreeMap::new();
    for (no, user, course) in &items {
        courses.entry((*user, *course)).or_insert(no.as_str());
    }
    let course_ids = sorted_unique(courses.keys().map(|(_, course)| *course));
    let mut chapters_of: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (course, chapter) in chapters::table
        .filter(chapters::course_id.eq_any(&course_ids))
        .order((chapters::course_id, chapters::id))
        .select((chapters::course_id, chapters::id))
        .load::<(i64, i64)>(conn)?
    {
        chapters_of.entry(course).or_default().push(chapter);
    }
    let users = sorted_unique(courses.keys().map(|(user, _)| *user));
    lock_users(conn, &users, "KEY SHARE")?;
    let course_rows: Vec<_> = courses
        .iter()
        .map(|((user, course), no)| {
            (
                user_courses::user_id.eq(*user),
                user_courses::course_id.eq(*course),
                user_courses::order_no.eq(Some(*no)),
                user_courses::created_at.eq(now),
            )
        })
        .collect();
    for chunk in course_rows.chunks(INSERT_CHUNK) {
        per_backend!(conn, |c| diesel::insert_into(user_courses::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    let chapter_rows: Vec<_> = courses
        .keys()
        .flat_map(|(user, course)| {
            chapters_of
                .get(course)
                .into_iter()
                .flatten()
                .map(move |chapter| {
                    (
                        user_course_chapters::user_id.eq(*user),
                        user_course_chapters::course_id.eq(*course),
                        user_course_chapters::chapter_id.eq(*chapter),
                        user_course_chapters::created_at.eq(now),
                    )
                })
        })
        .collect();
    for chunk in chapter_rows.chunks(INSERT_CHUNK) {
        per_backend!(conn, |c| diesel::insert_into(user_course_chapters::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    Ok(())
}

/// Locks the `kind` effects of `order_nos` through the (order_no, kind) index and returns the
/// orders whose effect is pending (see `close_expired` on why not filter `status` in SQL).
fn lock_pending(
    conn: &mut DbConnection,
    order_nos: &[String],
    kind: &str,
) -> QueryResult<Vec<String>> {
    let query = effects::table
        .filter(effects::order_no.eq_any(order_nos))
        .filter(effects::kind.eq(kind))
        .select((effects::order_no, effects::status));
    let rows: Vec<(String, String)> = match conn {
        DbConnection::Postgresql(c) => query.for_update().load(c)?,
        DbConnection::Sqlite(c) => query.load(c)?,
    };
    Ok(rows
        .into_iter()
        .filter(|(_, status)| status == effect::PENDING)
        .map(|(no, _)| no)
        .collect())
}

/// The distinct values, ascending.
fn sorted_unique(values: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut values: Vec<i64> = values.collect();
    values.sort_unstable();
    values.dedup();
    values
}

/// The orders `order_nos` with their items.
fn load_orders(conn: &mut DbConnection, order_nos: &[&str]) -> QueryResult<Vec<Order>> {
    let rows: Vec<OrderRow> = orders::table
        .filter(orders::order_no.eq_any(order_nos))
        .select(OrderRow::as_select())
        .load(conn)?;
    with_items(conn, rows)
}

/// Locks users' rows in id order, `FOR UPDATE` (refunds change their points) or `FOR KEY
/// SHARE` (grants reference them), before the batch's inserts take the foreign keys' key-share
/// locks in their own order, which could deadlock with a concurrent batch (PostgreSQL;
/// SQLite's write transaction holds the whole database).
fn lock_users(conn: &mut DbConnection, ids: &[i64], strength: &'static str) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt};
    if let DbConnection::Postgresql(pg) = conn {
        if !ids.is_empty() {
            diesel::sql_query(format!(
                "SELECT 1 FROM users WHERE id = ANY($1) ORDER BY id FOR {strength}"
            ))
            .bind::<Array<BigInt>, _>(ids)
            .execute(pg)?;
        }
    }
    Ok(())
}

/// Adds points to users (locked first by [`lock_users`]): one statement on PostgreSQL, one per
/// user on SQLite (in-process, no round trips).
fn add_points(conn: &mut DbConnection, per_user: BTreeMap<i64, i64>) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt};
    match conn {
        DbConnection::Postgresql(pg) => {
            let (ids, deltas): (Vec<i64>, Vec<i64>) = per_user.into_iter().unzip();
            diesel::sql_query(
                "UPDATE users SET points = users.points + d.delta \
                 FROM unnest($1::bigint[], $2::bigint[]) AS d(id, delta) WHERE users.id = d.id",
            )
            .bind::<Array<BigInt>, _>(ids)
            .bind::<Array<BigInt>, _>(deltas)
            .execute(pg)?;
        }
        DbConnection::Sqlite(_) => {
            for (user, points) in per_user {
                diesel::update(users::table.find(user))
                    .set(users::points.eq(users::points + points))
                    .execute(conn)?;
            }
        }
    }
    Ok(())
}

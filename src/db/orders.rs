//! Orders: placement (one transaction, every rule of SPEC §Business rules) and reads.

use std::collections::BTreeSet;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::catalog::{find_user_coupon, load_courses, owned_course_ids};
use super::journal::Journal;
use super::models::*;
use super::schema::*;
use super::{outbox, plan_by_key_from_here, write_transaction, DbConnection};
use crate::db::sql_types::At;
use crate::domain::ids::{CourseId, UserId};
use crate::domain::order::new_order_no;
use crate::domain::pricing::{quote, total, CouponTerms};
use crate::domain::states::{CouponStatus, EffectKind, EventKind, LedgerKind, OrderStatus};
use crate::error::ApiError;
use crate::per_backend;

/// A placement that passed the shape checks.
#[derive(Debug, Clone)]
pub struct Placement {
    pub user_id: UserId,
    pub course_ids: Vec<CourseId>,
    pub user_coupon_id: Option<i64>,
    pub points: i64,
    pub cents_per_point: i64,
    pub payment_timeout_secs: u64,
    /// The engine process that will own the order's actor.
    pub node_id: String,
    /// The engine's clock, read once the user's row is locked (the order's `created_at`).
    pub clock: fn() -> NaiveDateTime,
    /// Whether the placement writes its order events.
    pub journal: Journal,
}

/// Places an order in one transaction: points deducted with a `spend` ledger row, the coupon
/// locked (or used, when nothing is left to pay), the order and its items written, and for a
/// zero-payable order its grant queued. `before_commit` runs inside the same transaction with
/// the created order (the idempotency record is completed there, so it commits with it), and
/// again if MySQL runs the transaction again after a deadlock.
pub fn place_order(
    conn: &mut DbConnection,
    p: &Placement,
    mut before_commit: impl FnMut(&mut DbConnection, &Order) -> Result<(), ApiError>,
) -> Result<Order, ApiError> {
    write_transaction(conn, |conn| {
        // Lock the user's row first: concurrent placements by one user queue here, so the
        // checks below see every order committed before, and points cannot be overspent.
        let locked = diesel::update(users::table.find(p.user_id))
            .set(users::points.eq(users::points))
            .execute(conn)?;
        if locked == 0 {
            return Err(ApiError::Unauthenticated("the token's user does not exist"));
        }
        let now = (p.clock)();
        let available_points: i64 = users::table
            .find(p.user_id)
            .select(users::points)
            .first(conn)?;

        // The user's orders by status first, locked: a success being applied to one of them
        // finishes before this reads what the user owns (see `lock_open_orders`). These two
        // reads are planned for the statuses bound; everything after finds its rows by key.
        let pending = lock_open_orders(conn, p.user_id, &p.course_ids, now)?;
        let owned = owned_course_ids(conn, p.user_id)?;
        plan_by_key_from_here(conn)?;

        let courses = load_courses(conn, &p.course_ids)?;
        let total_cents = total(&courses.values().map(|c| c.price_cents).collect::<Vec<_>>())?;
        let mut items = Vec::with_capacity(p.course_ids.len());
        for id in &p.course_ids {
            let course = courses.get(id).ok_or(ApiError::CourseNotFound(*id))?;
            items.push(course);
        }
        let coupon = match p.user_coupon_id {
            None => None,
            Some(id) => Some(
                find_user_coupon(conn, id)?
                    .filter(|c| c.user_id == p.user_id)
                    .ok_or(ApiError::CouponNotFound(id))?,
            ),
        };

        for course in &items {
            if !course.on_sale {
                return Err(ApiError::CourseNotOnSale(course.id));
            }
            if owned.contains(&course.id) {
                return Err(ApiError::CourseAlreadyOwned(course.id));
            }
            if pending.contains(&course.id) {
                return Err(ApiError::CourseInPendingOrder(course.id));
            }
        }
        if let Some(c) = &coupon {
            if c.status != CouponStatus::Unused {
                return Err(ApiError::CouponNotUsable(c.user_coupon_id));
            }
        }

        let terms = coupon.as_ref().map(|c| CouponTerms {
            discount_cents: c.discount_cents,
            min_spend_cents: c.min_spend_cents,
            valid_until: c.valid_until,
        });
        let q = quote(
            total_cents,
            terms.as_ref(),
            p.points,
            available_points,
            p.cents_per_point,
            now,
        )?;

        let paid_now = q.payable_cents == 0;
        let timeout = i64::try_from(p.payment_timeout_secs)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .ok_or_else(|| ApiError::Internal("payment timeout out of range".into()))?;
        let row = OrderRow {
            order_no: new_order_no(&now),
            user_id: p.user_id,
            status: if paid_now {
                OrderStatus::Paid
            } else {
                OrderStatus::Pending
            },
            total_cents: q.total_cents,
            discount_cents: q.discount_cents,
            points_used: q.points_used,
            payable_cents: q.payable_cents,
            user_coupon_id: p.user_coupon_id,
            created_at: now,
            expires_at: now + timeout,
            paid_at: paid_now.then_some(now),
            closed_at: None,
            close_reason: None,
            trade_no: None,
            owner_node: (!paid_now).then(|| p.node_id.clone()),
        };
        diesel::insert_into(orders::table)
            .values(row.clone())
            .execute(conn)?;
        let item_rows: Vec<OrderItemRow> = items
            .iter()
            .enumerate()
            .map(|(i, c)| OrderItemRow {
                order_no: row.order_no.clone(),
                position: i as i32,
                course_id: c.id,
                price_cents: c.price_cents,
            })
            .collect();
        for item in &item_rows {
            diesel::insert_into(order_items::table)
                .values(item)
                .execute(conn)?;
        }

        if q.points_used > 0 {
            diesel::update(users::table.find(p.user_id))
                .set(users::points.eq(users::points - q.points_used))
                .execute(conn)?;
            diesel::insert_into(points_ledger::table)
                .values((
                    points_ledger::user_id.eq(p.user_id),
                    points_ledger::order_no.eq(&row.order_no),
                    points_ledger::kind.eq(LedgerKind::Spend),
                    points_ledger::delta.eq(-q.points_used),
                    points_ledger::created_at.eq(At(now)),
                ))
                .execute(conn)?;
        }
        if let Some(c) = &coupon {
            let new_status = if paid_now {
                CouponStatus::Used
            } else {
                CouponStatus::Locked
            };
            let taken = diesel::update(
                user_coupons::table
                    .find(c.user_coupon_id)
                    .filter(user_coupons::status.eq(CouponStatus::Unused)),
            )
            .set((
                user_coupons::status.eq(new_status),
                user_coupons::order_no.eq(&row.order_no),
            ))
            .execute(conn)?;
            if taken != 1 {
                return Err(ApiError::CouponNotUsable(c.user_coupon_id));
            }
        }
        if paid_now {
            outbox::enqueue(conn, &[(row.order_no.as_str(), EffectKind::Grant)], now)?;
        }

        let order = Order::new(row, item_rows);
        p.journal.record(conn, EventKind::Placed, &order, now)?;
        if paid_now {
            p.journal.record(conn, EventKind::Paid, &order, now)?;
        }
        before_commit(conn, &order)?;
        Ok(order)
    })
}

/// Courses among `course_ids` that sit in one of the user's pending orders that can still be
/// paid (one past its deadline is about to be closed), locking every pending order of the user
/// that holds one of them. The lock is what keeps a course from being paid twice: a success
/// being applied to such an order holds its row, so this waits for it and then (the row no
/// longer pending) the ownership check sees it paid; and a success that comes after waits for
/// this placement to commit and then reads its clock after ours, so an order this placement
/// took as past its deadline is closed by it, never paid (on SQLite the write transaction
/// holds the whole database).
fn lock_open_orders(
    conn: &mut DbConnection,
    user_id: UserId,
    course_ids: &[CourseId],
    now: NaiveDateTime,
) -> QueryResult<BTreeSet<CourseId>> {
    let query = order_items::table
        .inner_join(orders::table)
        .filter(orders::user_id.eq(user_id))
        .filter(orders::status.eq(OrderStatus::Pending))
        .filter(order_items::course_id.eq_any(course_ids))
        .order(orders::order_no)
        .select((order_items::course_id, orders::expires_at));
    let rows: Vec<(CourseId, NaiveDateTime)> = match conn {
        DbConnection::Postgresql(c) => query.for_update().load(c)?,
        DbConnection::Sqlite(c) => query.load(c)?,
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(c) => query.for_update().load(c)?,
    };
    Ok(rows
        .into_iter()
        .filter(|(_, expires_at)| *expires_at > now)
        .map(|(course, _)| course)
        .collect())
}

pub fn find_order(conn: &mut DbConnection, order_no: &str) -> QueryResult<Option<Order>> {
    let Some(row) = orders::table
        .find(order_no)
        .select(OrderRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let items = order_items::table
        .filter(order_items::order_no.eq(order_no))
        .order(order_items::position)
        .select(OrderItemRow::as_select())
        .load(conn)?;
    Ok(Some(Order::new(row, items)))
}

/// Every pending order with its deadline (at start, without Redis: one process re-creates
/// the actors of all of them; nothing is written, so a start costs one read).
pub fn all_pending(conn: &mut DbConnection) -> QueryResult<Vec<(String, NaiveDateTime)>> {
    orders::table
        .filter(orders::status.eq(OrderStatus::Pending))
        .select((orders::order_no, orders::expires_at))
        .load(conn)
}

/// At start with Redis: claims the pending orders that are unowned or owned by one of `from`
/// (lapsed nodes), then returns every pending order `node_id` owns, with its deadline.
pub fn claim_at_start(
    conn: &mut DbConnection,
    node_id: &str,
    from: &[String],
) -> QueryResult<Vec<(String, NaiveDateTime)>> {
    let others: Vec<&String> = from.iter().filter(|n| *n != node_id).collect();
    diesel::update(
        orders::table
            .filter(orders::status.eq(OrderStatus::Pending))
            .filter(
                orders::owner_node
                    .is_null()
                    .or(orders::owner_node.eq_any(others)),
            ),
    )
    .set(orders::owner_node.eq(node_id))
    .execute(conn)?;
    owned_by(conn, node_id)
}

fn owned_by(conn: &mut DbConnection, node_id: &str) -> QueryResult<Vec<(String, NaiveDateTime)>> {
    orders::table
        .filter(orders::status.eq(OrderStatus::Pending))
        .filter(orders::owner_node.eq(node_id))
        .select((orders::order_no, orders::expires_at))
        .load(conn)
}

/// Claims for `me` the pending orders owned by one of `from` and returns them with their
/// deadlines. The condition on the old owner is the fencing token: when several processes
/// adopt at once, each order goes to exactly one.
pub fn adopt_from(
    conn: &mut DbConnection,
    me: &str,
    from: &[String],
) -> QueryResult<Vec<(String, NaiveDateTime)>> {
    let target = orders::table
        .filter(orders::status.eq(OrderStatus::Pending))
        .filter(orders::owner_node.eq_any(from));
    per_backend!(
        conn,
        |c| diesel::update(target)
            .set(orders::owner_node.eq(me))
            .returning((orders::order_no, orders::expires_at))
            .get_results(c),
        mysql | m | {
            // No RETURNING: lock the orders, then move exactly those (a deadlock fails this
            // adoption; the next round of the cluster adopts them).
            m.transaction(|m| {
                let claimed: Vec<(String, NaiveDateTime)> = target
                    .order(orders::order_no)
                    .select((orders::order_no, orders::expires_at))
                    .for_update()
                    .load(m)?;
                let numbers: Vec<&str> = claimed.iter().map(|(no, _)| no.as_str()).collect();
                diesel::update(orders::table.filter(orders::order_no.eq_any(numbers)))
                    .set(orders::owner_node.eq(me))
                    .execute(m)?;
                Ok(claimed)
            })
        }
    )
}

/// The owners of pending orders, with how many each owns.
pub fn pending_by_owner(conn: &mut DbConnection) -> QueryResult<Vec<(Option<String>, i64)>> {
    use diesel::dsl::count_star;
    orders::table
        .filter(orders::status.eq(OrderStatus::Pending))
        .group_by(orders::owner_node)
        .select((orders::owner_node, count_star()))
        .load(conn)
}

/// A page of orders, newest first (order numbers sort by creation time), optionally filtered.
pub fn page(
    conn: &mut DbConnection,
    status: Option<OrderStatus>,
    user_id: Option<UserId>,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<Order>> {
    let mut query = orders::table.select(OrderRow::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(orders::status.eq(status));
    }
    if let Some(user_id) = user_id {
        query = query.filter(orders::user_id.eq(user_id));
    }
    if let Some(after) = after {
        query = query.filter(orders::order_no.lt(after.to_string()));
    }
    let rows: Vec<OrderRow> = query
        .order(orders::order_no.desc())
        .limit(limit)
        .load(conn)?;
    with_items(conn, rows)
}

/// The orders `order_nos` with their items.
pub fn find_orders(conn: &mut DbConnection, order_nos: &[&str]) -> QueryResult<Vec<Order>> {
    let rows: Vec<OrderRow> = orders::table
        .filter(orders::order_no.eq_any(order_nos))
        .select(OrderRow::as_select())
        .load(conn)?;
    with_items(conn, rows)
}

/// Joins order rows with their items (one query for all), keeping the rows' order.
pub fn with_items(conn: &mut DbConnection, rows: Vec<OrderRow>) -> QueryResult<Vec<Order>> {
    let numbers: Vec<&str> = rows.iter().map(|r| r.order_no.as_str()).collect();
    let mut items: Vec<OrderItemRow> = order_items::table
        .filter(order_items::order_no.eq_any(&numbers))
        .order((order_items::order_no, order_items::position))
        .select(OrderItemRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine: Vec<OrderItemRow> = items
                .extract_if(.., |i| i.order_no == row.order_no)
                .collect();
            Order::new(row, mine)
        })
        .collect())
}

/// How many orders are in each state.
pub fn count_by_status(conn: &mut DbConnection) -> QueryResult<Vec<(OrderStatus, i64)>> {
    use diesel::dsl::count_star;
    orders::table
        .group_by(orders::status)
        .select((orders::status, count_star()))
        .load(conn)
}

/// Pending orders whose deadline passed before `before`, oldest deadline first.
pub fn overdue(
    conn: &mut DbConnection,
    before: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<String>> {
    orders::table
        .filter(orders::status.eq(OrderStatus::Pending))
        .filter(orders::expires_at.lt(At(before)))
        .order(orders::expires_at)
        .limit(limit)
        .select(orders::order_no)
        .load(conn)
}

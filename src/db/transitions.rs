//! The one transaction that moves an order: it locks the order's row, applies the pure plan of
//! [`crate::domain::order::plan`], and in the same transaction moves the coupon, stores the
//! payment event and queues the effect in the outbox. The update out of `pending` is
//! conditional on `status = 'pending'`, so exactly one transition happens even across
//! processes.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::events::{kind as event, Journal};
use super::models::{Order, OrderRow};
use super::orders::{find_order, insert_effect};
use super::schema::*;
use super::{write_transaction, DbConnection};
use crate::domain::order::{
    coupon_status, effect, plan, CloseReason, Decision, Event, OrderStatus, Rejection,
};
use crate::error::ApiError;

/// Callback code that means success.
pub const SUCCESS_CODE: i64 = 100_000;

/// A payment provider callback, after its signature and shape were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub trade_no: String,
    pub code: i64,
    pub amount_cents: i64,
    pub provider_paid_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Timeout,
    Callback(Callback),
    /// A cancel by the order's user (`Some(user_id)`) or an admin (`None`).
    Cancel {
        user_id: Option<i64>,
    },
}

impl Command {
    /// The state-machine event this command is (also used by the model check).
    pub fn event(&self) -> Event {
        match self {
            Command::Timeout => Event::Timeout,
            Command::Callback(cb) if cb.code == SUCCESS_CODE => Event::Success {
                amount_cents: cb.amount_cents,
            },
            Command::Callback(_) => Event::Failure,
            Command::Cancel { user_id: Some(_) } => Event::Cancel(CloseReason::User),
            Command::Cancel { user_id: None } => Event::Cancel(CloseReason::Admin),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The order left `pending` in this transaction.
    Transitioned,
    /// The same callback again: nothing changed.
    Duplicate,
    LatePayment,
    DoublePayment,
    /// Stored (a failure code for a closed order) or nothing to do (a late timer).
    Unchanged,
    /// The timer fired before the deadline.
    NotDue,
}

/// What one command did. `rejection` is set when the command itself was refused; an expired
/// order may still have been closed for timeout in the same, committed, transaction.
#[derive(Debug)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub order: Order,
    /// Effects queued in the outbox by this transaction (`grant` / `refund`).
    pub effects: Vec<&'static str>,
    pub rejection: Option<Rejection>,
    /// The process that owned the order (and armed its timer) before this transaction.
    pub previous_owner: Option<String>,
}

impl Outcome {
    /// True once the order is no longer pending: its actor can go.
    pub fn is_final(&self) -> bool {
        self.order.status != OrderStatus::Pending.as_str()
    }
}

/// Applies `command` to the order. `clock` is read inside the transaction, once the order's
/// row is locked, so `paid_at` / `closed_at` and the deadline check are the engine's time at
/// the transition. A concurrent callback with the same `trade_no` (caught by the unique
/// index) is retried once, and then reads as a duplicate or conflict. With `journal` on, the
/// transaction also writes the order events it causes.
pub fn apply(
    conn: &mut DbConnection,
    order_no: &str,
    command: &Command,
    clock: fn() -> NaiveDateTime,
    journal: Journal,
) -> Result<Outcome, ApiError> {
    match apply_once(conn, order_no, command, clock, journal) {
        Err(TxError::Race) => match apply_once(conn, order_no, command, clock, journal) {
            Err(TxError::Race) => Err(ApiError::Internal(format!(
                "order {order_no}: unique violation twice in a row"
            ))),
            other => other.map_err(ApiError::from),
        },
        other => other.map_err(ApiError::from),
    }
}

/// A transaction's failure: an API error, or a unique violation from a concurrent
/// transaction (worth one retry, which then sees what the other committed).
enum TxError {
    Api(ApiError),
    Race,
}

impl From<ApiError> for TxError {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

impl From<DieselError> for TxError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::Race,
            other => Self::Api(other.into()),
        }
    }
}

impl From<TxError> for ApiError {
    fn from(err: TxError) -> Self {
        match err {
            TxError::Api(api) => api,
            TxError::Race => ApiError::Internal("unique violation".into()),
        }
    }
}

fn apply_once(
    conn: &mut DbConnection,
    order_no: &str,
    command: &Command,
    clock: fn() -> NaiveDateTime,
    journal: Journal,
) -> Result<Outcome, TxError> {
    write_transaction(conn, |conn| -> Result<Outcome, TxError> {
        // Lock the order's row: transitions of one order queue here, in every process.
        let locked = diesel::update(orders::table.find(order_no))
            .set(orders::status.eq(orders::status))
            .execute(conn)?;
        let row: Option<OrderRow> = if locked == 0 {
            None
        } else {
            orders::table
                .find(order_no)
                .select(OrderRow::as_select())
                .first(conn)
                .optional()?
        };
        let row = match (row, command) {
            (
                Some(row),
                Command::Cancel {
                    user_id: Some(user),
                },
            ) if row.user_id != *user => None,
            (row, _) => row,
        };
        let row = row.ok_or_else(|| ApiError::OrderNotFound(order_no.to_string()))?;
        let now = clock();
        let status = OrderStatus::parse(&row.status).ok_or_else(|| {
            ApiError::Internal(format!("order {order_no} has status {}", row.status))
        })?;

        if let Command::Callback(cb) = command {
            if let Some(kind) = check_duplicate(conn, order_no, cb)? {
                let done = Finish {
                    kind,
                    effects: Vec::new(),
                    rejection: None,
                    previous_owner: row.owner_node,
                };
                return Ok(done.load(conn, order_no, &[], journal, now)?);
            }
        }

        let p = plan(
            status,
            now >= row.expires_at,
            row.payable_cents,
            command.event(),
        );
        let mut effects = Vec::new();
        let mut events: Vec<&'static str> = Vec::new();
        if p.close_for_timeout {
            events.push(event::CANCELLED);
            close(
                conn,
                &row,
                OrderStatus::Cancelled,
                CloseReason::Timeout,
                None,
                now,
                &mut effects,
            )?;
        }
        let mut transitioned = p.close_for_timeout;
        let (kind, rejection) = match p.then {
            Decision::Transition {
                to: OrderStatus::Paid,
                ..
            } => {
                let Command::Callback(cb) = command else {
                    return Err(ApiError::Internal("only a callback pays".into()).into());
                };
                pay(conn, &row, cb, now, &mut effects)?;
                events.push(event::PAID);
                transitioned = true;
                (OutcomeKind::Transitioned, None)
            }
            Decision::Transition { to, reason } => {
                let reason =
                    reason.ok_or_else(|| ApiError::Internal("a close needs a reason".into()))?;
                let callback = match command {
                    Command::Callback(cb) => Some(cb),
                    _ => None,
                };
                close(conn, &row, to, reason, callback, now, &mut effects)?;
                events.push(if to == OrderStatus::Failed {
                    event::FAILED
                } else {
                    event::CANCELLED
                });
                if let Some(cb) = callback {
                    record_event(conn, order_no, cb, now, "failed")?;
                }
                transitioned = true;
                (OutcomeKind::Transitioned, None)
            }
            Decision::RecordLatePayment => {
                record_callback(conn, order_no, command, now, "late_payment")?;
                events.push(event::LATE_PAYMENT);
                (OutcomeKind::LatePayment, None)
            }
            Decision::RecordDoublePayment => {
                record_callback(conn, order_no, command, now, "double_payment")?;
                events.push(event::LATE_PAYMENT);
                (OutcomeKind::DoublePayment, None)
            }
            Decision::RecordIgnored => {
                record_callback(conn, order_no, command, now, "ignored")?;
                (OutcomeKind::Unchanged, None)
            }
            Decision::NoChange => (OutcomeKind::Unchanged, None),
            Decision::NotDue => (OutcomeKind::NotDue, None),
            Decision::Reject(r) => (OutcomeKind::Unchanged, Some(r)),
        };
        let kind = if transitioned && kind == OutcomeKind::Unchanged {
            OutcomeKind::Transitioned
        } else {
            kind
        };
        let done = Finish {
            kind,
            effects,
            rejection,
            previous_owner: row.owner_node,
        };
        Ok(done.load(conn, order_no, &events, journal, now)?)
    })
}

/// What a transaction did, before the order is read back.
struct Finish {
    kind: OutcomeKind,
    effects: Vec<&'static str>,
    rejection: Option<Rejection>,
    previous_owner: Option<String>,
}

impl Finish {
    /// Reads the order as the transaction leaves it and journals `events` with it.
    fn load(
        self,
        conn: &mut DbConnection,
        order_no: &str,
        events: &[&'static str],
        journal: Journal,
        now: NaiveDateTime,
    ) -> Result<Outcome, ApiError> {
        let order = find_order(conn, order_no)?
            .ok_or_else(|| ApiError::OrderNotFound(order_no.to_string()))?;
        for kind in events {
            journal.record(conn, kind, &order, now)?;
        }
        Ok(Outcome {
            kind: self.kind,
            order,
            effects: self.effects,
            rejection: self.rejection,
            previous_owner: self.previous_owner,
        })
    }
}

/// A callback whose `trade_no` was seen before: the same one again is a duplicate; a
/// different one is a conflict.
fn check_duplicate(
    conn: &mut DbConnection,
    order_no: &str,
    cb: &Callback,
) -> Result<Option<OutcomeKind>, ApiError> {
    let seen: Option<(String, i64, i64)> = payment_events::table
        .filter(payment_events::trade_no.eq(&cb.trade_no))
        .select((
            payment_events::order_no,
            payment_events::code,
            payment_events::amount_cents,
        ))
        .first(conn)
        .optional()?;
    match seen {
        None => Ok(None),
        Some((seen_order, code, amount))
            if seen_order == order_no && code == cb.code && amount == cb.amount_cents =>
        {
            Ok(Some(OutcomeKind::Duplicate))
        }
        Some(_) => Err(ApiError::TradeNoConflict(cb.trade_no.clone())),
    }
}

fn pay(
    conn: &mut DbConnection,
    row: &OrderRow,
    cb: &Callback,
    now: NaiveDateTime,
    effects: &mut Vec<&'static str>,
) -> Result<(), TxError> {
    let updated = diesel::update(
        orders::table
            .find(&row.order_no)
            .filter(orders::status.eq(OrderStatus::Pending.as_str())),
    )
    .set((
        orders::status.eq(OrderStatus::Paid.as_str()),
        orders::paid_at.eq(now),
        orders::trade_no.eq(&cb.trade_no),
        orders::owner_node.eq(None::<String>),
    ))
    .execute(conn)?;
    left_pending(updated, &row.order_no)?;
    diesel::update(locked_coupon(&row.order_no))
        .set(user_coupons::status.eq(coupon_status::USED))
        .execute(conn)?;
    record_event(conn, &row.order_no, cb, now, "paid")?;
    insert_effect(conn, &row.order_no, effect::GRANT, now)?;
    effects.push(effect::GRANT);
    Ok(())
}

/// The query of the coupon an order holds locked.
type LockedCoupon<'a> = diesel::dsl::Filter<
    diesel::dsl::Filter<user_coupons::table, diesel::dsl::Eq<user_coupons::order_no, &'a str>>,
    diesel::dsl::Eq<user_coupons::status, &'static str>,
>;

/// The coupon an order holds locked (none, or one: `user_coupons.order_no` is unique).
fn locked_coupon(order_no: &str) -> LockedCoupon<'_> {
    user_coupons::table
        .filter(user_coupons::order_no.eq(order_no))
        .filter(user_coupons::status.eq(coupon_status::LOCKED))
}

/// The conditional update out of `pending` must hit exactly the row locked at the start.
fn left_pending(updated: usize, order_no: &str) -> Result<(), TxError> {
    if updated == 1 {
        Ok(())
    } else {
        Err(ApiError::Internal(format!("order {order_no} left pending under its lock")).into())
    }
}

/// Closes a pending order; `callback` is the failure callback that closes it, if one does (its
/// `trade_no` becomes the order's).
fn close(
    conn: &mut DbConnection,
    row: &OrderRow,
    to: OrderStatus,
    reason: CloseReason,
    callback: Option<&Callback>,
    now: NaiveDateTime,
    effects: &mut Vec<&'static str>,
) -> Result<(), TxError> {
    let updated = diesel::update(
        orders::table
            .find(&row.order_no)
            .filter(orders::status.eq(OrderStatus::Pending.as_str())),
    )
    .set((
        orders::status.eq(to.as_str()),
        orders::closed_at.eq(now),
        orders::close_reason.eq(reason.as_str()),
        orders::trade_no.eq(callback.map(|cb| cb.trade_no.as_str())),
        orders::owner_node.eq(None::<String>),
    ))
    .execute(conn)?;
    left_pending(updated, &row.order_no)?;
    diesel::update(locked_coupon(&row.order_no))
        .set((
            user_coupons::status.eq(coupon_status::UNUSED),
            user_coupons::order_no.eq(None::<String>),
        ))
        .execute(conn)?;
    if row.points_used > 0 {
        insert_effect(conn, &row.order_no, effect::REFUND, now)?;
        effects.push(effect::REFUND);
    }
    Ok(())
}

fn record_callback(
    conn: &mut DbConnection,
    order_no: &str,
    command: &Command,
    now: NaiveDateTime,
    outcome: &str,
) -> Result<(), TxError> {
    match command {
        Command::Callback(cb) => record_event(conn, order_no, cb, now, outcome),
        _ => Err(ApiError::Internal(format!("{outcome} without a callback")).into()),
    }
}

fn record_event(
    conn: &mut DbConnection,
    order_no: &str,
    cb: &Callback,
    now: NaiveDateTime,
    outcome: &str,
) -> Result<(), TxError> {
    diesel::insert_into(payment_events::table)
        .values((
            payment_events::order_no.eq(order_no),
            payment_events::trade_no.eq(&cb.trade_no),
            payment_events::code.eq(cb.code),
            payment_events::amount_cents.eq(cb.amount_cents),
            payment_events::provider_paid_at.eq(cb.provider_paid_at),
            payment_events::received_at.eq(now),
            payment_events::outcome.eq(outcome),
        ))
        .execute(conn)?;
    Ok(())
}

/// A success that arrived for an order that could not take it: money to give back.
#[derive(Debug, Clone, Queryable, serde::Serialize)]
pub struct LatePayment {
    pub id: i64,
    pub order_no: String,
    pub trade_no: String,
    pub amount_cents: i64,
    #[serde(with = "crate::domain::time::serde_ts_opt")]
    pub provider_paid_at: Option<NaiveDateTime>,
    #[serde(with = "crate::domain::time::serde_ts")]
    pub received_at: NaiveDateTime,
    pub reason: String,
}

/// Late and double payments, newest first.
pub fn late_payments(
    conn: &mut DbConnection,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<LatePayment>> {
    let mut query = payment_events::table
        .filter(payment_events::outcome.eq_any(["late_payment", "double_payment"]))
        .select((
            payment_events::id,
            payment_events::order_no,
            payment_events::trade_no,
            payment_events::amount_cents,
            payment_events::provider_paid_at,
            payment_events::received_at,
            payment_events::outcome,
        ))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(payment_events::id.lt(after));
    }
    query
        .order(payment_events::id.desc())
        .limit(limit)
        .load(conn)
}

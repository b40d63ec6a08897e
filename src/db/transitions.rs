//! The one transaction that moves orders. It locks the orders' rows, asks the pure state
//! machine ([`crate::domain::order::step_batch`]) what each command does, and writes all of it
//! in the same transaction: the conditional update out of `pending`, the coupon, the payment event,
//! the outbox effect and the order events. Every way an order leaves `pending` comes through
//! [`apply_batch`]: a callback or a cancel is a batch of one ([`apply`]); timeouts that fire
//! together are one batch (the closer's), written with a constant number of statements.
//!
//! The update out of `pending` is conditional on `status = 'pending'` under the row lock, so
//! exactly one transition happens even across processes.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::journal::Journal;
use super::models::{Order, OrderItemRow, OrderRow};
use super::schema::*;
use super::{keyed_transaction, outbox, provider_payments, DbConnection};
use crate::db::sql_types::At;
use crate::domain::ids::OrderNo;
use crate::domain::order::{
    step_batch, Command, CouponStatus, EffectKind, EventKind, OrderStatus, OrderView, OutcomeKind,
    PaymentOutcome, ProviderName, Rejection, Step, StepError, StoredTrade, Transition,
};
use crate::domain::states::CloseReason;
use crate::error::ApiError;

/// One command for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub order_no: OrderNo,
    pub command: Command,
}

/// What one command did.
#[derive(Debug)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// The order as the transaction left it.
    pub order: Order,
    /// The effect queued in the outbox by this transaction.
    pub effect: Option<EffectKind>,
    /// The provider effects (close, refund) this transaction queued for the order.
    pub provider_effects: Vec<EffectKind>,
    /// The transition out of `pending` this transaction made.
    pub transition: Option<Transition>,
    /// Set when the command itself was refused (an expired order may still have been closed
    /// for timeout in the same, committed, transaction).
    pub rejection: Option<Rejection>,
    /// The process that owned the order (and armed its timer) before this transaction.
    pub previous_owner: Option<String>,
}

impl Outcome {
    /// True once the order is no longer pending: its actor can go.
    pub fn is_final(&self) -> bool {
        self.order.status != OrderStatus::Pending
    }
}

/// Applies one command to one order: a batch of one.
pub fn apply(
    conn: &mut DbConnection,
    order_no: &str,
    command: &Command,
    clock: fn() -> NaiveDateTime,
    journal: Journal,
) -> Result<Outcome, ApiError> {
    let request = Request {
        order_no: OrderNo::from(order_no),
        command: command.clone(),
    };
    apply_batch(conn, std::slice::from_ref(&request), clock, journal)?
        .pop()
        .unwrap_or_else(|| Err(ApiError::Internal(format!("order {order_no}: no outcome"))))
}

/// Applies `requests` in one transaction and answers each in request order: its outcome, or
/// why it was refused (that request wrote nothing). `Err` when the transaction itself failed
/// (nothing was written). `clock` is read once every row is locked, so `paid_at` / `closed_at`
/// and the deadline checks are the engine's time at the transition. A unique violation from a
/// concurrent transaction (the same `trade_no` at once) is retried once, and then reads as a
/// duplicate or conflict.
pub fn apply_batch(
    conn: &mut DbConnection,
    requests: &[Request],
    clock: fn() -> NaiveDateTime,
    journal: Journal,
) -> Result<Vec<Result<Outcome, ApiError>>, ApiError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    match apply_once(conn, requests, clock, journal) {
        Err(TxError::Race) => match apply_once(conn, requests, clock, journal) {
            Err(TxError::Race) => Err(ApiError::Internal(format!(
                "orders {}: unique violation twice in a row",
                numbers_of(requests).join(", ")
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

fn numbers_of(requests: &[Request]) -> Vec<&str> {
    let mut numbers: Vec<&str> = requests.iter().map(|r| r.order_no.as_str()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

/// A kind of transition out of `pending`: the new status, reason and trade_no.
type TransitionKey<'a> = (OrderStatus, Option<CloseReason>, Option<&'a str>);

/// What the steps of a batch write, gathered so each kind of write is one statement.
#[derive(Default)]
struct Writes<'a> {
    /// Transitions out of `pending` by kind, with their orders.
    transitions: BTreeMap<TransitionKey<'a>, Vec<&'a str>>,
    coupons: BTreeMap<CouponStatus, Vec<&'a str>>,
    payments: Vec<(&'a str, &'a crate::domain::order::Callback, PaymentOutcome)>,
    effects: Vec<(&'a str, EffectKind)>,
    /// Orders leaving `pending`: their new status and the provider whose trade paid them.
    left_pending: Vec<(&'a str, OrderStatus, Option<ProviderName>)>,
}

fn apply_once(
    conn: &mut DbConnection,
    requests: &[Request],
    clock: fn() -> NaiveDateTime,
    journal: Journal,
) -> Result<Vec<Result<Outcome, ApiError>>, TxError> {
    keyed_transaction(conn, |conn| {
        let numbers = numbers_of(requests);
        // The clock is read once the rows are locked: a placement of the same user that locked
        // one of these orders first has committed, and saw a clock no later than ours.
        let mut rows: HashMap<OrderNo, OrderRow> = lock_orders(conn, &numbers)?
            .into_iter()
            .map(|row| (row.order_no.clone(), row))
            .collect();
        let now = clock();
        let mut seen = seen_trades(conn, requests)?;

        let previous_owners: HashMap<OrderNo, Option<String>> = rows
            .iter()
            .map(|(no, row)| (no.clone(), row.owner_node.clone()))
            .collect();
        let mut views: HashMap<OrderNo, OrderView> = rows
            .iter()
            .map(|(no, row)| (no.clone(), view_of(row)))
            .collect();
        let commands: Vec<(OrderNo, &Command)> = requests
            .iter()
            .map(|r| (r.order_no.clone(), &r.command))
            .collect();
        let planned = step_batch(&mut views, &mut seen, now, &commands);

        let mut writes = Writes::default();
        let mut steps: Vec<Result<Step, ApiError>> = Vec::with_capacity(requests.len());
        for (request, planned) in requests.iter().zip(planned) {
            let no = request.order_no.as_str();
            let cb = request.command.callback();
            let (planned, row) = match (planned, rows.get_mut(no)) {
                (Ok(planned), Some(row)) => (planned, row),
                (Err(StepError::TradeNoConflict), _) => {
                    let trade_no = cb.map(|cb| cb.trade_no.clone()).unwrap_or_default();
                    steps.push(Err(ApiError::TradeNoConflict(trade_no)));
                    continue;
                }
                _ => {
                    steps.push(Err(ApiError::OrderNotFound(no.to_string())));
                    continue;
                }
            };
            if let Some(t) = planned.transition {
                let trade_no = cb
                    .filter(|_| t.takes_trade_no)
                    .map(|cb| cb.trade_no.as_str());
                writes
                    .transitions
                    .entry((t.to, t.reason, trade_no))
                    .or_default()
                    .push(no);
                writes.coupons.entry(t.coupon()).or_default().push(no);
                let paid_by = cb
                    .filter(|cb| t.to == OrderStatus::Paid && cb.provider != ProviderName::Generic)
                    .map(|cb| cb.provider);
                writes.left_pending.push((no, t.to, paid_by));
                move_row(row, t.to, t.reason, trade_no, now);
            }
            if let (Some(payment), Some(cb)) = (planned.payment, cb) {
                writes.payments.push((no, cb, payment));
            }
            if let Some(effect) = planned.effect {
                writes.effects.push((no, effect));
            }
            steps.push(Ok(planned));
        }

        write_transitions(conn, &writes, now)?;
        write_coupons(conn, &writes)?;
        write_payments(conn, &writes, now)?;
        outbox::enqueue(conn, &writes.effects, now)?;
        let provider_effects =
            provider_payments::after_steps(conn, &writes.left_pending, &writes.payments, now)?;

        // The orders as the transaction leaves them, with their items, for the answers and
        // the events.
        let answered: Vec<&str> = requests
            .iter()
            .zip(&steps)
            .filter(|(_, s)| s.is_ok())
            .map(|(r, _)| r.order_no.as_str())
            .collect();
        let orders = orders_with_items(conn, &answered, &rows)?;
        let mut events: Vec<(EventKind, &Order)> = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for (request, planned) in requests.iter().zip(steps) {
            outcomes.push(planned.and_then(|s| {
                let order = orders
                    .get(request.order_no.as_str())
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::Internal(format!("order {}: not read back", request.order_no))
                    })?;
                Ok((s, order))
            }));
        }
        for outcome in outcomes.iter().flatten() {
            let (s, order) = outcome;
            for kind in &s.events {
                events.push((*kind, order));
            }
        }
        journal.record_all(conn, &events, now)?;
        Ok(outcomes
            .into_iter()
            .zip(requests)
            .map(|(outcome, request)| {
                outcome.map(|(s, order)| Outcome {
                    kind: s.kind,
                    provider_effects: provider_effects
                        .iter()
                        .filter(|(no, _)| *no == request.order_no.as_str())
                        .map(|(_, kind)| *kind)
                        .collect(),
                    order,
                    effect: s.effect,
                    transition: s.transition,
                    rejection: s.rejection,
                    previous_owner: previous_owners
                        .get(request.order_no.as_str())
                        .cloned()
                        .flatten(),
                })
            })
            .collect())
    })
}

fn view_of(row: &OrderRow) -> OrderView {
    OrderView {
        status: row.status,
        user_id: row.user_id,
        expires_at: row.expires_at,
        payable_cents: row.payable_cents,
        points_used: row.points_used,
    }
}

/// The row as the transition leaves it (what [`write_transitions`] writes).
fn move_row(
    row: &mut OrderRow,
    to: OrderStatus,
    reason: Option<CloseReason>,
    trade_no: Option<&str>,
    now: NaiveDateTime,
) {
    row.status = to;
    row.close_reason = reason;
    row.trade_no = trade_no.map(str::to_string);
    row.owner_node = None;
    if to == OrderStatus::Paid {
        row.paid_at = Some(now);
    } else {
        row.closed_at = Some(now);
    }
}

/// Locks the orders' rows (by primary key, in key order so that concurrent batches cannot
/// deadlock) and reads them. A predicate on `status` is avoided: it could lead the planner to
/// the partial index of pending deadlines, full of dead entries while a burst of orders leaves
/// `pending`. SQLite's write transaction holds the whole database already.
pub fn lock_orders(conn: &mut DbConnection, numbers: &[&str]) -> QueryResult<Vec<OrderRow>> {
    let query = orders::table
        .filter(orders::order_no.eq_any(numbers))
        .order(orders::order_no);
    match conn {
        DbConnection::Postgresql(c) => query.select(OrderRow::as_select()).for_update().load(c),
        DbConnection::Sqlite(c) => query.select(OrderRow::as_select()).load(c),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(c) => query.select(OrderRow::as_select()).for_update().load(c),
    }
}

/// The stored payment events carrying the batch's trade numbers: `(provider, trade_no) ->
/// (order, code, amount)`.
fn seen_trades(
    conn: &mut DbConnection,
    requests: &[Request],
) -> QueryResult<HashMap<(ProviderName, String), StoredTrade<OrderNo>>> {
    let trade_nos: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.command.callback().map(|cb| cb.trade_no.as_str()))
        .collect();
    if trade_nos.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(ProviderName, String, OrderNo, i64, i64)> = payment_events::table
        .filter(payment_events::trade_no.eq_any(&trade_nos))
        .select((
            payment_events::provider,
            payment_events::trade_no,
            payment_events::order_no,
            payment_events::code,
            payment_events::amount_cents,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(provider, trade_no, order, code, amount)| {
            ((provider, trade_no), (order, code, amount))
        })
        .collect())
}

/// One conditional update per kind of transition; each must hit exactly the rows locked at
/// the start, still pending.
fn write_transitions(
    conn: &mut DbConnection,
    writes: &Writes<'_>,
    now: NaiveDateTime,
) -> Result<(), TxError> {
    for ((to, reason, trade_no), numbers) in &writes.transitions {
        let target = orders::table
            .filter(orders::order_no.eq_any(numbers))
            .filter(orders::status.eq(OrderStatus::Pending));
        let moved = (
            orders::status.eq(*to),
            orders::close_reason.eq(*reason),
            orders::trade_no.eq(*trade_no),
            orders::owner_node.eq(None::<String>),
        );
        let updated = if *to == OrderStatus::Paid {
            diesel::update(target)
                .set((moved, orders::paid_at.eq(Some(now))))
                .execute(conn)?
        } else {
            diesel::update(target)
                .set((moved, orders::closed_at.eq(Some(now))))
                .execute(conn)?
        };
        if updated != numbers.len() {
            return Err(ApiError::Internal(format!(
                "orders {}: {updated} of {} left pending under their lock",
                numbers.join(", "),
                numbers.len()
            ))
            .into());
        }
    }
    Ok(())
}

/// The coupons the orders hold locked: used when paid, back to unused (and free) otherwise.
fn write_coupons(conn: &mut DbConnection, writes: &Writes<'_>) -> QueryResult<()> {
    for (status, numbers) in &writes.coupons {
        let locked = user_coupons::table
            .filter(user_coupons::order_no.eq_any(numbers))
            .filter(user_coupons::status.eq(CouponStatus::Locked));
        match status {
            CouponStatus::Used => diesel::update(locked)
                .set(user_coupons::status.eq(CouponStatus::Used))
                .execute(conn)?,
            _ => diesel::update(locked)
                .set((
                    user_coupons::status.eq(*status),
                    user_coupons::order_no.eq(None::<String>),
                ))
                .execute(conn)?,
        };
    }
    Ok(())
}

fn write_payments(
    conn: &mut DbConnection,
    writes: &Writes<'_>,
    now: NaiveDateTime,
) -> QueryResult<()> {
    if writes.payments.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = writes
        .payments
        .iter()
        .map(|(order_no, cb, outcome)| {
            (
                payment_events::order_no.eq(*order_no),
                payment_events::provider.eq(cb.provider),
                payment_events::trade_no.eq(cb.trade_no.as_str()),
                payment_events::code.eq(cb.code),
                payment_events::amount_cents.eq(cb.amount_cents),
                payment_events::provider_paid_at.eq(cb.provider_paid_at),
                payment_events::received_at.eq(At(now)),
                payment_events::outcome.eq(*outcome),
            )
        })
        .collect();
    crate::per_backend!(conn, |c| diesel::insert_into(payment_events::table)
        .values(&rows)
        .execute(c))?;
    Ok(())
}

/// The answered orders, from their rows as the transaction left them, with their items (one
/// query for all).
fn orders_with_items(
    conn: &mut DbConnection,
    numbers: &[&str],
    rows: &HashMap<OrderNo, OrderRow>,
) -> QueryResult<HashMap<OrderNo, Order>> {
    let mut numbers = numbers.to_vec();
    numbers.sort_unstable();
    numbers.dedup();
    let items: Vec<OrderItemRow> = order_items::table
        .filter(order_items::order_no.eq_any(&numbers))
        .order((order_items::order_no, order_items::position))
        .select(OrderItemRow::as_select())
        .load(conn)?;
    let mut by_order: HashMap<OrderNo, Vec<OrderItemRow>> = HashMap::new();
    for item in items {
        by_order
            .entry(item.order_no.clone())
            .or_default()
            .push(item);
    }
    Ok(numbers
        .iter()
        .filter_map(|no| {
            let row = rows.get(*no)?.clone();
            let items = by_order.remove(*no).unwrap_or_default();
            Some((OrderNo::from(*no), Order::new(row, items)))
        })
        .collect())
}

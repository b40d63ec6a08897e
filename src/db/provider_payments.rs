//! Payments started with a provider (`payments`, SPEC "Payment providers"): one row per order
//! and provider, written when `POST /api/orders/{order_no}/payments` started the trade, moved
//! by the transition that decides a notification ([`after_steps`]) and by the provider effects
//! ([`crate::providers::effects`]).

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use serde::Serialize;

use super::schema::*;
use super::{outbox, DbConnection};
use crate::db::sql_types::At;
use crate::domain::ids::OrderNo;
use crate::domain::order::{Callback, PROVIDER_CLOSED_CODE};
use crate::domain::states::{
    EffectKind, EffectStatus, OrderStatus, PaymentOutcome, PaymentStatus, ProviderName,
};
use crate::domain::time::serde_ts;

/// A payment as stored and as the API shows it (the SPEC's Payment object, plus nothing).
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = payments)]
pub struct Payment {
    #[serde(skip)]
    pub id: i64,
    pub order_no: OrderNo,
    pub provider: ProviderName,
    pub status: PaymentStatus,
    #[schema(required = true)]
    pub pay_url: Option<String>,
    #[schema(required = true)]
    pub code_url: Option<String>,
    #[schema(required = true)]
    pub provider_ref: Option<String>,
    /// The order's deadline.
    #[serde(with = "serde_ts")]
    pub expires_at: NaiveDateTime,
    #[serde(with = "serde_ts")]
    pub created_at: NaiveDateTime,
    #[serde(skip)]
    pub updated_at: NaiveDateTime,
}

/// A new payment, as its provider started it.
pub struct NewPayment<'a> {
    pub order_no: &'a str,
    pub provider: ProviderName,
    pub pay_url: Option<&'a str>,
    pub code_url: Option<&'a str>,
    pub provider_ref: Option<&'a str>,
    pub expires_at: NaiveDateTime,
}

/// The payment of `order_no` with `provider`, if one was started.
pub fn find(
    conn: &mut DbConnection,
    order_no: &str,
    provider: ProviderName,
) -> QueryResult<Option<Payment>> {
    payments::table
        .filter(payments::order_no.eq(order_no))
        .filter(payments::provider.eq(provider))
        .select(Payment::as_select())
        .first(conn)
        .optional()
}

/// Every payment of an order, in the order they were started.
pub fn of_order(conn: &mut DbConnection, order_no: &str) -> QueryResult<Vec<Payment>> {
    payments::table
        .filter(payments::order_no.eq(order_no))
        .order(payments::id)
        .select(Payment::as_select())
        .load(conn)
}

/// Stores a started payment; `false` when the order already has one with that provider (a
/// concurrent start won: the caller reads that one).
pub fn insert(
    conn: &mut DbConnection,
    new: &NewPayment<'_>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let row = (
        payments::order_no.eq(new.order_no),
        payments::provider.eq(new.provider),
        payments::status.eq(PaymentStatus::Started),
        payments::pay_url.eq(new.pay_url),
        payments::code_url.eq(new.code_url),
        payments::provider_ref.eq(new.provider_ref),
        payments::expires_at.eq(At(new.expires_at)),
        payments::created_at.eq(At(now)),
        payments::updated_at.eq(At(now)),
    );
    let inserted = crate::per_backend!(
        conn,
        |c| diesel::insert_into(payments::table)
            .values(row)
            .on_conflict((payments::order_no, payments::provider))
            .do_nothing()
            .execute(c),
        mysql
            | m
            | diesel::insert_into(payments::table)
                // ON DUPLICATE KEY: (order_no, provider) is the one unique key besides id.
                .values(row)
                .on_conflict_do_nothing()
                .execute(m)
    )?;
    Ok(inserted == 1)
}

/// Marks these payments of `order_no` `closed` (their trades were closed at the provider),
/// unless they paid the order.
pub fn mark_closed(
    conn: &mut DbConnection,
    order_no: &str,
    providers: &[ProviderName],
    now: NaiveDateTime,
) -> QueryResult<usize> {
    if providers.is_empty() {
        return Ok(0);
    }
    diesel::update(
        payments::table
            .filter(payments::order_no.eq(order_no))
            .filter(payments::provider.eq_any(providers))
            .filter(payments::status.eq(PaymentStatus::Started)),
    )
    .set((
        payments::status.eq(PaymentStatus::Closed),
        payments::updated_at.eq(At(now)),
    ))
    .execute(conn)
}

/// What the steps of a transition leave to do to the payments: `left_pending` holds the
/// orders that left `pending` (their new status, and the provider whose trade paid them), and
/// `events` the payment events the transaction stores. Queues, and returns, the provider
/// effects this makes:
/// - an order that left `pending`: its payment with the provider that paid it is `paid`, its
///   other open payments `closed` when it was paid; `provider_close` for every trade but the
///   one that paid, if it has any;
/// - a provider's close of a trade: that payment `closed` (the order stays as it is);
/// - a late or double payment through a provider: `provider_refund` (again, if an earlier
///   one is done).
///
/// The batched close of due orders costs one query here (and one insert when any of them had a
/// payment started).
pub fn after_steps<'a>(
    conn: &mut DbConnection,
    left_pending: &[(&'a str, OrderStatus, Option<ProviderName>)],
    events: &[(&'a str, &Callback, PaymentOutcome)],
    now: NaiveDateTime,
) -> QueryResult<Vec<(&'a str, EffectKind)>> {
    let mut closes: Vec<(&'a str, EffectKind)> = Vec::new();
    if !left_pending.is_empty() {
        let numbers: Vec<&str> = left_pending.iter().map(|(no, _, _)| *no).collect();
        let started: Vec<(OrderNo, ProviderName)> = payments::table
            .filter(payments::order_no.eq_any(&numbers))
            .select((payments::order_no, payments::provider))
            .load(conn)?;
        for (no, to, paid_by) in left_pending {
            let mine = started.iter().filter(|(order, _)| order.as_str() == *no);
            let mut others = false;
            for (_, provider) in mine {
                if Some(*provider) != *paid_by {
                    others = true;
                }
            }
            if let Some(provider) = paid_by {
                diesel::update(
                    payments::table
                        .filter(payments::order_no.eq(*no))
                        .filter(payments::provider.eq(*provider)),
                )
                .set((
                    payments::status.eq(PaymentStatus::Paid),
                    payments::updated_at.eq(At(now)),
                ))
                .execute(conn)?;
            }
            if *to == OrderStatus::Paid && others {
                // Another trade paid the order: these are closed (their trades are closed at
                // the provider by the effect).
                diesel::update(
                    payments::table
                        .filter(payments::order_no.eq(*no))
                        .filter(payments::status.eq(PaymentStatus::Started)),
                )
                .set((
                    payments::status.eq(PaymentStatus::Closed),
                    payments::updated_at.eq(At(now)),
                ))
                .execute(conn)?;
            }
            if others {
                closes.push((*no, EffectKind::ProviderClose));
            }
        }
        outbox::enqueue(conn, &closes, now)?;
    }
    let mut queued = closes;
    for (no, cb, outcome) in events {
        if cb.provider == ProviderName::Generic {
            continue;
        }
        match outcome {
            PaymentOutcome::Ignored if cb.code == PROVIDER_CLOSED_CODE => {
                mark_closed(conn, no, &[cb.provider], now)?;
            }
            PaymentOutcome::LatePayment | PaymentOutcome::DoublePayment => {
                outbox::requeue(conn, no, EffectKind::ProviderRefund, now)?;
                if !queued.contains(&(*no, EffectKind::ProviderRefund)) {
                    queued.push((*no, EffectKind::ProviderRefund));
                }
            }
            _ => {}
        }
    }
    Ok(queued)
}

/// A provider payment of an order that may need a refund: a late or double payment through a
/// provider, not refunded yet.
#[derive(Debug, Clone, Queryable)]
pub struct Unrefunded {
    pub id: i64,
    pub provider: ProviderName,
    pub trade_no: String,
    pub amount_cents: i64,
}

/// The late and double payments of `order_no` that came through a provider and are not
/// refunded yet, oldest first.
pub fn unrefunded(conn: &mut DbConnection, order_no: &str) -> QueryResult<Vec<Unrefunded>> {
    payment_events::table
        .filter(payment_events::order_no.eq(order_no))
        .filter(payment_events::provider.ne(ProviderName::Generic))
        .filter(
            payment_events::outcome
                .eq_any([PaymentOutcome::LatePayment, PaymentOutcome::DoublePayment]),
        )
        .filter(payment_events::refunded_at.is_null())
        .order(payment_events::id)
        .select((
            payment_events::id,
            payment_events::provider,
            payment_events::trade_no,
            payment_events::amount_cents,
        ))
        .load(conn)
}

/// Records that the provider refunded the payment event `id`.
pub fn mark_refunded(conn: &mut DbConnection, id: i64, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        payment_events::table
            .find(id)
            .filter(payment_events::refunded_at.is_null()),
    )
    .set(payment_events::refunded_at.eq(Some(now)))
    .execute(conn)
}

/// What `reconcile_payments` asks the providers about, oldest first, at most `limit` of each
/// kind: the started payments of pending orders older than `min_age`, and the payments but the
/// paying one of orders that left `pending` within `lookback` whose trades are not closed at
/// their providers yet (their `provider_close` effect is pending or dead-lettered: once it is
/// done, every such trade was closed — a close that found one paid applied it — so there is
/// nothing left to find, and a day of closed orders is not asked about again every run).
pub fn to_reconcile(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    min_age: TimeDelta,
    lookback: TimeDelta,
    limit: i64,
) -> QueryResult<Vec<Payment>> {
    let pending: Vec<Payment> = payments::table
        .inner_join(orders::table)
        .filter(orders::status.eq(OrderStatus::Pending))
        .filter(payments::status.eq(PaymentStatus::Started))
        .filter(payments::created_at.le(At(now - min_age)))
        .order(payments::created_at)
        .limit(limit)
        .select(Payment::as_select())
        .load(conn)?;
    let since = now - lookback;
    let unclosed = diesel::dsl::exists(
        effects::table
            .filter(effects::order_no.eq(payments::order_no))
            .filter(effects::kind.eq(EffectKind::ProviderClose))
            .filter(effects::status.ne(EffectStatus::Done)),
    );
    let left: Vec<Payment> = payments::table
        .inner_join(orders::table)
        .filter(orders::status.ne(OrderStatus::Pending))
        .filter(
            orders::closed_at
                .ge(Some(since))
                .or(orders::paid_at.ge(Some(since))),
        )
        .filter(payments::status.ne(PaymentStatus::Paid))
        .filter(unclosed)
        .order(payments::created_at)
        .limit(limit)
        .select(Payment::as_select())
        .load(conn)?;
    Ok(pending.into_iter().chain(left).collect())
}

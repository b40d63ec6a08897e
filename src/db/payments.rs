//! Stored payment events: every callback the engine decided (`payment_events`, written by the
//! transition), and the late and double payments admins must refund.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;
use super::DbConnection;
use crate::domain::ids::OrderNo;
use crate::domain::states::{EffectKind, EffectStatus, PaymentOutcome, ProviderName};

/// A success that arrived for an order that could not take it: money to give back.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LatePayment {
    pub id: i64,
    pub order_no: OrderNo,
    pub trade_no: String,
    pub amount_cents: i64,
    #[serde(with = "crate::domain::time::serde_ts_opt")]
    #[schema(required = true)]
    pub provider_paid_at: Option<NaiveDateTime>,
    #[serde(with = "crate::domain::time::serde_ts")]
    pub received_at: NaiveDateTime,
    pub reason: PaymentOutcome,
    /// Who took the money: `generic` (the signed callback), `alipay`, `wechatpay` or
    /// `stripe`.
    pub provider: ProviderName,
    /// The refund through the provider (the order's `provider_refund` effect, `done` once
    /// this payment is refunded); null for `generic`, whose refunds stay manual.
    #[schema(required = true)]
    pub refund: Option<ProviderRefund>,
}

/// A late payment's refund through its provider (SPEC "Payment providers").
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderRefund {
    pub status: crate::domain::states::EffectStatus,
    pub attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

type LatePaymentRow = (
    i64,
    OrderNo,
    String,
    i64,
    Option<NaiveDateTime>,
    NaiveDateTime,
    PaymentOutcome,
    ProviderName,
    Option<NaiveDateTime>,
);

/// Late and double payments, newest first.
pub fn late_payments(
    conn: &mut DbConnection,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<LatePayment>> {
    late_payments_where(conn, None, after, Some(limit))
}

/// The late and double payments of one order, newest first (the dashboard's order page).
pub fn late_payments_of_order(
    conn: &mut DbConnection,
    order_no: &str,
) -> QueryResult<Vec<LatePayment>> {
    late_payments_where(conn, Some(order_no), None, None)
}

/// Late and double payments (of `order_no` when given), newest first, before id `after`, at
/// most `limit`, each with its refund.
fn late_payments_where(
    conn: &mut DbConnection,
    order_no: Option<&str>,
    after: Option<i64>,
    limit: Option<i64>,
) -> QueryResult<Vec<LatePayment>> {
    let mut query = payment_events::table
        .filter(
            payment_events::outcome
                .eq_any([PaymentOutcome::LatePayment, PaymentOutcome::DoublePayment]),
        )
        .select((
            payment_events::id,
            payment_events::order_no,
            payment_events::trade_no,
            payment_events::amount_cents,
            payment_events::provider_paid_at,
            payment_events::received_at,
            payment_events::outcome,
            payment_events::provider,
            payment_events::refunded_at,
        ))
        .into_boxed();
    if let Some(order_no) = order_no {
        query = query.filter(payment_events::order_no.eq(order_no));
    }
    if let Some(after) = after {
        query = query.filter(payment_events::id.lt(after));
    }
    if let Some(limit) = limit {
        query = query.limit(limit);
    }
    let rows: Vec<LatePaymentRow> = query.order(payment_events::id.desc()).load(conn)?;
    // The refund effects of the page's provider payments, in one query.
    let numbers: Vec<&str> = rows
        .iter()
        .filter(|row| row.7 != ProviderName::Generic)
        .map(|row| row.1.as_str())
        .collect();
    let refunds: Vec<(OrderNo, EffectStatus, i32, Option<String>)> = if numbers.is_empty() {
        Vec::new()
    } else {
        effects::table
            .filter(effects::order_no.eq_any(&numbers))
            .filter(effects::kind.eq(EffectKind::ProviderRefund))
            .select((
                effects::order_no,
                effects::status,
                effects::attempts,
                effects::last_error,
            ))
            .load(conn)?
    };
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                order_no,
                trade_no,
                amount_cents,
                provider_paid_at,
                received_at,
                reason,
                provider,
                refunded_at,
            )| {
                let effect = refunds.iter().find(|r| r.0 == order_no);
                let refund =
                    (provider != ProviderName::Generic).then(|| match (refunded_at, effect) {
                        (Some(_), effect) => ProviderRefund {
                            status: EffectStatus::Done,
                            attempts: effect.map_or(1, |e| e.2),
                            last_error: None,
                        },
                        (None, Some((_, status, attempts, last_error))) => ProviderRefund {
                            // The order's effect may be done with an earlier payment's refund while
                            // this one waits for its turn.
                            status: if *status == EffectStatus::Done {
                                EffectStatus::Pending
                            } else {
                                *status
                            },
                            attempts: *attempts,
                            last_error: last_error.clone(),
                        },
                        (None, None) => ProviderRefund {
                            status: EffectStatus::Pending,
                            attempts: 0,
                            last_error: None,
                        },
                    });
                LatePayment {
                    id,
                    order_no,
                    trade_no,
                    amount_cents,
                    provider_paid_at,
                    received_at,
                    reason,
                    provider,
                    refund,
                }
            },
        )
        .collect())
}

/// One stored callback of an order, as the engine decided it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payment_events)]
pub struct PaymentEvent {
    pub id: i64,
    pub trade_no: String,
    pub code: i64,
    pub amount_cents: i64,
    pub provider_paid_at: Option<NaiveDateTime>,
    pub received_at: NaiveDateTime,
    pub outcome: PaymentOutcome,
    /// Who sent it: the generic callback or a provider's notification.
    pub provider: ProviderName,
}

/// Every stored callback of one order, in the order received.
pub fn of_order(conn: &mut DbConnection, order_no: &str) -> QueryResult<Vec<PaymentEvent>> {
    payment_events::table
        .filter(payment_events::order_no.eq(order_no))
        .order(payment_events::id)
        .select(PaymentEvent::as_select())
        .load(conn)
}

//! The provider effects (SPEC "Payment providers"), applied by their effect actors one at a
//! time: the calls to the providers run outside any database transaction (a slow provider
//! holds no lock), then the effect is settled in one transaction with what they did. Each call
//! is idempotent at its provider (closing a closed trade; a refund's request number), so a
//! retry, a replay after a crash, or two processes racing repeat nothing at the provider.
//! - `provider_close`: every payment of the order but the one that paid is closed at its
//!   provider; "no such trade" counts as closed; a trade the provider reports paid is handled
//!   as that trade's success notification (a late or double payment, refunded next).
//! - `provider_refund`: every late or double payment of the order that came through a provider
//!   and is not refunded yet is refunded whole, with the request number `{order_no}_{event id}`.

use chrono::NaiveDateTime;
use diesel::QueryResult;

use super::{apply, Closed, Providers, RefundRequest, TradeRef};
use crate::db::journal::Journal;
use crate::db::outbox::{self, Attempt, RetryPolicy};
use crate::db::provider_payments::{self, Payment};
use crate::db::transitions::Outcome;
use crate::db::DbConnection;
use crate::domain::states::{EffectKind, PaymentStatus, ProviderName};

/// What the calls of one attempt achieved, written when the attempt is settled (or, when a
/// later call failed, before the failure is recorded).
#[derive(Default)]
struct Progress {
    /// Providers whose trade of the order is closed now.
    closed: Vec<ProviderName>,
    /// Payment events refunded now.
    refunded: Vec<i64>,
    /// Paid trades a close found, applied as notifications.
    found_paid: Vec<Outcome>,
}

impl Progress {
    fn write(
        &self,
        conn: &mut DbConnection,
        order_no: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        provider_payments::mark_closed(conn, order_no, &self.closed, now)?;
        for id in &self.refunded {
            provider_payments::mark_refunded(conn, *id, now)?;
        }
        Ok(())
    }
}

/// One attempt at the provider effect `kind` of `order_no`. `after` receives the outcomes of
/// trades found paid (the caller's `after_commit`).
#[allow(clippy::too_many_arguments)]
pub fn attempt(
    providers: &Providers,
    currency: &str,
    conn: &mut DbConnection,
    order_no: &str,
    kind: EffectKind,
    policy: RetryPolicy,
    now: NaiveDateTime,
    journal: Journal,
    after: &dyn Fn(&Outcome),
) -> QueryResult<Attempt> {
    if !outbox::is_pending(conn, order_no, kind)? {
        return Ok(Attempt::AlreadySettled);
    }
    let mut progress = Progress::default();
    let failed = match kind {
        EffectKind::ProviderClose => {
            close_trades(providers, conn, order_no, journal, &mut progress)?
        }
        EffectKind::ProviderRefund => {
            refund_payments(providers, currency, conn, order_no, &mut progress)?
        }
        EffectKind::Grant | EffectKind::Refund => Some(format!("{kind} is not a provider effect")),
    };
    for outcome in &progress.found_paid {
        after(outcome);
    }
    match failed {
        None => {
            let settled = outbox::settle(conn, order_no, kind, now, journal, |conn| {
                progress.write(conn, order_no, now)
            })?;
            Ok(if settled {
                Attempt::Applied
            } else {
                Attempt::AlreadySettled
            })
        }
        Some(error) => {
            crate::db::effect_transaction(conn, |conn| progress.write(conn, order_no, now))?;
            outbox::record_failure(conn, order_no, kind, &error, policy, now, journal)
        }
    }
}

/// Closes every trade of the order but the one that paid; `Some(error)` when a call failed
/// (the others are still tried).
fn close_trades(
    providers: &Providers,
    conn: &mut DbConnection,
    order_no: &str,
    journal: Journal,
    progress: &mut Progress,
) -> QueryResult<Option<String>> {
    let payments: Vec<Payment> = provider_payments::of_order(conn, order_no)?
        .into_iter()
        .filter(|p| p.status != PaymentStatus::Paid)
        .collect();
    let mut errors = Vec::new();
    for payment in payments {
        let Some(provider) = providers.get(payment.provider) else {
            errors.push(format!("{} is not configured", payment.provider));
            continue;
        };
        let trade = TradeRef {
            order_no: order_no.to_string(),
            provider_ref: payment.provider_ref.clone(),
        };
        match provider.close(&trade) {
            Ok(Closed::Closed | Closed::NoSuchTrade) => {
                log::info!("order {order_no}: trade closed at {}", payment.provider);
                progress.closed.push(payment.provider);
            }
            Ok(Closed::Paid(report)) => {
                log::warn!(
                    "order {order_no}: closing at {} found trade {} paid: handled as its notification",
                    payment.provider,
                    report.trade_no
                );
                match apply::apply_report(conn, payment.provider, &report, journal) {
                    Ok(outcome) => {
                        progress.closed.push(payment.provider);
                        progress.found_paid.push(outcome);
                    }
                    Err(err) => errors.push(format!(
                        "{}: trade {} paid, and applying it failed: {err}",
                        payment.provider, report.trade_no
                    )),
                }
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    Ok((!errors.is_empty()).then(|| errors.join("; ")))
}

/// Refunds every late or double provider payment of the order not refunded yet.
fn refund_payments(
    providers: &Providers,
    currency: &str,
    conn: &mut DbConnection,
    order_no: &str,
    progress: &mut Progress,
) -> QueryResult<Option<String>> {
    let mut errors = Vec::new();
    for payment in provider_payments::unrefunded(conn, order_no)? {
        let Some(provider) = providers.get(payment.provider) else {
            errors.push(format!("{} is not configured", payment.provider));
            continue;
        };
        let refund = RefundRequest {
            order_no: order_no.to_string(),
            trade_no: payment.trade_no.clone(),
            amount_cents: payment.amount_cents,
            refund_no: refund_no(order_no, payment.id),
            currency: currency.to_string(),
        };
        match provider.refund(&refund) {
            Ok(()) => {
                log::info!(
                    "order {order_no}: {} cents of trade {} refunded through {}",
                    payment.amount_cents,
                    payment.trade_no,
                    payment.provider
                );
                progress.refunded.push(payment.id);
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    Ok((!errors.is_empty()).then(|| errors.join("; ")))
}

/// The refund's request number at the provider (Alipay `out_request_no`, WeChat Pay
/// `out_refund_no`, Stripe's `Idempotency-Key`): the order and the late-payment record, so
/// every retry asks for the same refund. At most 32 + 1 + 20 characters of `[A-Za-z0-9_]`.
pub fn refund_no(order_no: &str, payment_event_id: i64) -> String {
    format!("{order_no}_{payment_event_id}")
}

//! A provider's word on a trade — a verified notification, a query's answer, or a close that
//! found the trade paid — as the engine's command: decided by the callback rules exactly like
//! the generic callback (SPEC "Payment providers": "applied exactly as a notification").

use super::{ProviderName, TradeReport, TradeStatus};
use crate::db::transitions::{self, Outcome};
use crate::db::DbConnection;
use crate::domain::order::{Callback, Command, PROVIDER_CLOSED_CODE, SUCCESS_CODE};
use crate::domain::time;
use crate::error::ApiError;

/// Longest provider trade number (SPEC: 1-255 characters).
pub const MAX_TRADE_NO_CHARS: usize = 255;

/// The order a report names and the command it is: 400 for a trade number out of bounds, 404
/// for an order number that cannot exist.
pub fn command_of(
    provider: ProviderName,
    report: &TradeReport,
) -> Result<(String, Command), ApiError> {
    let chars = report.trade_no.chars().count();
    if chars == 0 || chars > MAX_TRADE_NO_CHARS || report.trade_no.contains('\0') {
        return Err(ApiError::InvalidRequest(format!(
            "{provider}: the trade number must be 1-{MAX_TRADE_NO_CHARS} characters"
        )));
    }
    if report.amount_cents < 0 {
        return Err(ApiError::InvalidRequest(format!(
            "{provider}: the amount must not be negative"
        )));
    }
    let order_no = crate::http::order_no_or_404(report.order_no.clone())?;
    let code = match report.status {
        TradeStatus::Paid => SUCCESS_CODE,
        TradeStatus::Closed => PROVIDER_CLOSED_CODE,
    };
    let command = Command::Callback(Callback {
        provider,
        trade_no: report.trade_no.clone(),
        code,
        amount_cents: report.amount_cents,
        provider_paid_at: report.paid_at.map(time::truncate_ms),
    });
    Ok((order_no, command))
}

/// Applies a report in the calling thread's transaction (the order's actor, if any, finds the
/// order settled when its timer fires; the caller hands the outcome to `after_commit`).
pub fn apply_report(
    conn: &mut DbConnection,
    provider: ProviderName,
    report: &TradeReport,
    journal: crate::db::journal::Journal,
) -> Result<Outcome, ApiError> {
    let (order_no, command) = command_of(provider, report)?;
    transitions::apply(conn, &order_no, &command, time::now, journal)
}

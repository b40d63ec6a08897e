//! `POST /api/payments/callback`: the payment provider, server to server. Checks, in order:
//! 413, the signature over the raw bytes (401), the body (400), the order (404), then the
//! SPEC's callback rules. 200 `{"result":"success"}` goes out only once the event is durable.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::NaiveDateTime;
use serde::Deserialize;

use super::signature::verify;
use super::{parse_json, read_body, AppState};
use crate::domain::order::Rejection;
use crate::domain::order::{Callback, Command, OutcomeKind};
use crate::domain::time::serde_ts_opt;
use crate::error::{ApiError, ErrorEnvelope};
use crate::metrics::CallbackResult;

/// A payment callback: `code` 100000 is a success, any other integer a failure.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    order_no: String,
    /// 1-64 characters, unique across the provider's events.
    #[schema(min_length = 1, max_length = 64)]
    trade_no: String,
    #[schema(example = 100000)]
    code: i64,
    #[schema(minimum = 0)]
    amount_cents: i64,
    #[serde(default, with = "serde_ts_opt")]
    paid_at: Option<NaiveDateTime>,
}

/// The callback's success reply.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CallbackAck {
    /// Always `success`.
    result: &'static str,
}

/// Parses and checks a callback body (400 for a malformed one; 404 for an order number that
/// cannot exist). Public for the fuzzer.
pub fn parse_callback(body: &[u8]) -> Result<(String, Callback), ApiError> {
    let input: CallbackBody = parse_json(body)?;
    if input.trade_no.is_empty() || input.trade_no.chars().count() > 64 {
        return Err(ApiError::InvalidRequest(
            "trade_no must be 1-64 characters".into(),
        ));
    }
    if input.amount_cents < 0 {
        return Err(ApiError::InvalidRequest(
            "amount_cents must not be negative".into(),
        ));
    }
    if input.trade_no.contains('\0') {
        return Err(ApiError::InvalidRequest(
            "trade_no must not contain NUL".into(),
        ));
    }
    let order_no = super::order_no_or_404(input.order_no)?;
    let callback = Callback {
        provider: crate::domain::order::ProviderName::Generic,
        trade_no: input.trade_no,
        code: input.code,
        amount_cents: input.amount_cents,
        provider_paid_at: input.paid_at,
    };
    Ok((order_no, callback))
}

/// The generic signed callback: applied by the callback rules, answered once durable.
#[utoipa::path(post, path = "/api/payments/callback", tag = "payment provider",
    request_body = CallbackBody,
    security(("callback_signature" = [])),
    responses(
        (status = 200, description = "Durable: applied, a duplicate, or a late or double payment kept for a refund", body = CallbackAck),
        (status = 400, description = "Malformed body", body = ErrorEnvelope),
        (status = 401, description = "`invalid_signature`", body = ErrorEnvelope),
        (status = 404, description = "`order_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`trade_no_conflict`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope),
        (status = 422, description = "`amount_mismatch`", body = ErrorEnvelope),
        (status = 503, description = "`unavailable`: retry", body = ErrorEnvelope)))]
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let decided = decide(&state, req, payload).await;
    let result = match &decided {
        Ok(OutcomeKind::Duplicate) => CallbackResult::Duplicate,
        Ok(OutcomeKind::LatePayment | OutcomeKind::DoublePayment) => CallbackResult::Late,
        Ok(_) => CallbackResult::Applied,
        Err(error) if error.status_code().is_server_error() => CallbackResult::Error,
        Err(_) => CallbackResult::Rejected,
    };
    state.engine.core.metrics.callback("generic", result);
    decided.map(|_| HttpResponse::Ok().json(CallbackAck { result: "success" }))
}

/// Verifies and applies one callback: what it came to once durable.
async fn decide(
    state: &AppState,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<OutcomeKind, ApiError> {
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let mut headers = req.headers().get_all("X-Signature");
    let header = match (headers.next(), headers.next()) {
        (Some(value), None) => value
            .to_str()
            .map_err(|_| ApiError::InvalidSignature("the X-Signature header is not text"))?,
        (None, _) => return Err(ApiError::InvalidSignature("missing X-Signature header")),
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidSignature("repeated X-Signature header"))
        }
    };
    let payment = &state.settings.payment;
    verify(
        header,
        &body,
        payment.secret.as_bytes(),
        payment.tolerance_secs,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| {
        log::warn!("callback refused: {e}");
        ApiError::InvalidSignature("invalid signature")
    })?;

    let (order_no, callback) = parse_callback(&body)?;
    let (trade_no, amount_cents) = (callback.trade_no.clone(), callback.amount_cents);
    let command = Command::Callback(callback);
    let outcome = state.engine.deliver(&order_no, command).await?;
    if let Some(Rejection::AmountMismatch) = outcome.rejection {
        return Err(ApiError::AmountMismatch {
            expected: outcome.order.payable_cents,
            received: amount_cents,
        });
    }
    match outcome.kind {
        OutcomeKind::LatePayment | OutcomeKind::DoublePayment => log::warn!(
            "order {}: {:?} of {} cents with trade_no {} kept for a refund",
            order_no,
            outcome.kind,
            amount_cents,
            trade_no
        ),
        OutcomeKind::Duplicate => log::info!(
            "order {}: duplicate callback {} acknowledged",
            order_no,
            trade_no
        ),
        _ => {}
    }
    Ok(outcome.kind)
}

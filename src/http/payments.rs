//! The payment-provider routes (SPEC "Payment providers"): starting a payment of the caller's
//! pending order with Alipay, WeChat Pay or Stripe, and the three notification routes. A
//! notification is verified by its provider's adapter ([`crate::providers`]) and then decided
//! by the callback rules, exactly as the generic callback (`super::provider`); the reply is the
//! provider's own (`success`, 204, `{"received":true}`) once the event is durable.
//!
//! On a provider's notification route, `provider_not_enabled` (404) ranks before every other
//! error while that provider is off; on the client route it comes after the request's own
//! 413, 401 and 400.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;

use super::{authenticate_client, order_no_or_404, parse_json, read_body, AppState};
use crate::actors::Core;
use crate::db::provider_payments::{self, NewPayment};
use crate::db::transitions::lock_orders;
use crate::db::{keyed_transaction, outbox, DbConnection};
use crate::domain::ids::UserId;
use crate::domain::order::{OutcomeKind, Rejection};
use crate::domain::states::{EffectKind, OrderStatus, ProviderName};
use crate::domain::time;
use crate::error::{ApiError, ErrorEnvelope};
use crate::metrics::CallbackResult;
use crate::providers::{self, apply, Notified, NotifyError, NotifyRequest, Provider, StartRequest};

pub use crate::db::provider_payments::Payment;

/// The providers a payment can be started with.
pub const PROVIDERS: [ProviderName; 3] = [
    ProviderName::Alipay,
    ProviderName::Wechatpay,
    ProviderName::Stripe,
];

/// `POST /api/orders/{order_no}/payments`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartPayment {
    /// `alipay`, `wechatpay` or `stripe`.
    #[schema(example = "alipay")]
    provider: String,
}

/// Which provider a body names: 400 for anything but the three.
fn provider_of(body: &[u8]) -> Result<ProviderName, ApiError> {
    let start: StartPayment = parse_json(body)?;
    PROVIDERS
        .into_iter()
        .find(|p| p.as_str() == start.provider)
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "provider must be one of alipay, wechatpay, stripe, not {:?}",
                start.provider
            ))
        })
}

/// Starts a payment of the caller's pending order with a provider: 201 with the new Payment,
/// 200 with the one started before (the same request again).
#[utoipa::path(post, path = "/api/orders/{order_no}/payments", tag = "clients",
    params(("order_no" = String, Path)),
    request_body = StartPayment,
    security(("client_jwt" = [])),
    responses(
        (status = 201, description = "Started", body = Payment),
        (status = 200, description = "Started before: the same payment", body = Payment),
        (status = 400, description = "`invalid_request`: malformed body or unknown provider", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`order_not_found`, `provider_not_enabled`", body = ErrorEnvelope),
        (status = 409, description = "`order_not_pending`, `payment_window_closed`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope),
        (status = 503, description = "`unavailable`: the provider cannot be reached", body = ErrorEnvelope)))]
pub async fn start_payment(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let user = authenticate_client(&state, &req).await?;
    let provider = provider_of(&body)?;
    let order_no = order_no_or_404(path.into_inner())?;
    if state.engine.core.providers.get(provider).is_none() {
        return Err(ApiError::ProviderNotEnabled(provider.as_str()));
    }
    let core = state.engine.core.clone();
    let (payment, created) = web::block(move || start_blocking(&core, user, &order_no, provider))
        .await
        .map_err(|e| ApiError::Internal(format!("start of a payment: {e}")))??;
    Ok(if created {
        HttpResponse::Created().json(payment)
    } else {
        HttpResponse::Ok().json(payment)
    })
}

/// Checks the order, asks the provider (outside any transaction) and stores the payment. An
/// order that left `pending` while the provider was asked gets its trade closed by
/// `provider_close`, like every other trade of a closed order.
fn start_blocking(
    core: &Core,
    user: UserId,
    order_no: &str,
    name: ProviderName,
) -> Result<(Payment, bool), ApiError> {
    let provider = core
        .providers
        .get(name)
        .ok_or(ApiError::ProviderNotEnabled(name.as_str()))?;
    let settings = &core.settings;
    let mut conn = core
        .pool
        .get()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let order = crate::db::orders::find_order(&mut conn, order_no)?
        .filter(|o| o.user_id == user)
        .ok_or_else(|| ApiError::OrderNotFound(order_no.to_string()))?;
    if let Some(existing) = provider_payments::find(&mut conn, order_no, name)? {
        return Ok((existing, false));
    }
    let not_pending = |status| ApiError::OrderNotPending {
        order_no: order_no.to_string(),
        status,
    };
    if order.status != OrderStatus::Pending {
        return Err(not_pending(order.status));
    }
    let now = time::now();
    let margin = chrono::TimeDelta::seconds(settings.providers.expire_margin_secs as i64);
    if order.expires_at - now < margin {
        return Err(ApiError::PaymentWindowClosed(order_no.to_string()));
    }
    let subject = subject_of(&mut conn, &order)?;
    let request = StartRequest {
        order_no: order_no.to_string(),
        subject,
        amount_cents: order.payable_cents,
        currency: settings.pricing.currency.clone(),
        provider_expires_at: order.expires_at - margin,
        order_expires_at: order.expires_at,
        notify_url: settings.providers.notify_url(providers::notify_route(name)),
        idempotency_key: format!("{order_no}-{name}-start"),
        now,
    };
    let started = provider.start(&request).map_err(|e| {
        log::warn!("order {order_no}: starting a payment with {name} failed: {e}");
        ApiError::Unavailable(e.to_string())
    })?;
    let new = NewPayment {
        order_no,
        provider: name,
        pay_url: started.pay_url.as_deref(),
        code_url: started.code_url.as_deref(),
        provider_ref: started.provider_ref.as_deref(),
        expires_at: order.expires_at,
    };
    let (payment, created, status) = keyed_transaction(&mut conn, |conn| {
        let status = lock_orders(conn, &[order_no])?
            .first()
            .map(|row| row.status)
            .ok_or(diesel::result::Error::NotFound)?;
        let created = provider_payments::insert(conn, &new, time::now())?;
        if created && status != OrderStatus::Pending {
            outbox::requeue(conn, order_no, EffectKind::ProviderClose, time::now())?;
        }
        let payment = provider_payments::find(conn, order_no, name)?
            .ok_or(diesel::result::Error::NotFound)?;
        Ok::<_, diesel::result::Error>((payment, created, status))
    })?;
    if status != OrderStatus::Pending {
        if created {
            log::warn!("order {order_no}: closed while {name} started its trade; closing it there");
            core.after_commit(crate::actors::Committed {
                effects: vec![(order.order_no.clone(), EffectKind::ProviderClose)],
                ..Default::default()
            });
        }
        return Err(not_pending(status));
    }
    if created {
        log::info!("order {order_no}: payment started with {name}");
    }
    Ok((payment, created))
}

/// What the payer sees: the order's course titles (at most 128 characters).
fn subject_of(
    conn: &mut DbConnection,
    order: &crate::db::models::Order,
) -> Result<String, ApiError> {
    let ids: Vec<_> = order.items.iter().map(|i| i.course_id).collect();
    let courses = crate::db::catalog::load_courses(conn, &ids)?;
    let titles: Vec<&str> = ids
        .iter()
        .filter_map(|id| courses.get(id).map(|c| c.title.as_str()))
        .collect();
    let subject: String = titles.join(", ").chars().take(128).collect();
    Ok(if subject.trim().is_empty() {
        format!("Order {}", order.order_no)
    } else {
        subject
    })
}

/// Alipay's asynchronous notification (form-encoded): `success` (text/plain) once durable,
/// else `fail` with the callback rules' status.
#[utoipa::path(post, path = "/api/payments/alipay/notify", tag = "payment provider",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "Alipay's notification parameters (`notify_id`, `app_id`, `out_trade_no`, `trade_no`, `trade_status`, `total_amount`, `gmt_payment`, ..., `sign_type` `RSA2`, `sign`)"),
    security(("alipay_signature" = [])),
    responses(
        (status = 200, description = "`success`: durable", content_type = "text/plain", body = String),
        (status = 401, description = "`fail`: bad signature or app_id", content_type = "text/plain", body = String),
        (status = 404, description = "`provider_not_enabled` (envelope) while Alipay is off; `fail` for an unknown order", body = ErrorEnvelope)))]
pub async fn alipay_notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    notify(&state, &req, payload, ProviderName::Alipay).await
}

/// WeChat Pay's (API v3) payment notification: 204 once durable, else
/// `{"code":"FAIL","message"}` with the callback rules' status.
#[utoipa::path(post, path = "/api/payments/wechatpay/notify", tag = "payment provider",
    request_body(content = Object, content_type = "application/json",
        description = "WeChat Pay's notification: `id`, `create_time`, `event_type`, `resource_type`, `summary`, `resource` (`algorithm` `AEAD_AES_256_GCM`, `ciphertext`, `nonce`, `associated_data`, `original_type`), with headers `Wechatpay-Timestamp`, `Wechatpay-Nonce`, `Wechatpay-Serial`, `Wechatpay-Signature`"),
    security(("wechatpay_signature" = [])),
    responses(
        (status = 204, description = "Durable"),
        (status = 401, description = "`FAIL`: signature, serial, timestamp or decryption failed"),
        (status = 404, description = "`provider_not_enabled` (envelope) while WeChat Pay is off", body = ErrorEnvelope)))]
pub async fn wechatpay_notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    notify(&state, &req, payload, ProviderName::Wechatpay).await
}

/// Stripe's webhook (`Stripe-Signature`): `{"received":true}` once durable; errors in the
/// SPEC envelope.
#[utoipa::path(post, path = "/api/payments/stripe/webhook", tag = "payment provider",
    request_body(content = Object, content_type = "application/json",
        description = "A Stripe event (`id`, `type`, `created`, `data.object`: the Checkout Session)"),
    security(("stripe_signature" = [])),
    responses(
        (status = 200, description = "Durable, or an event the engine does not use"),
        (status = 401, description = "`invalid_signature`", body = ErrorEnvelope),
        (status = 404, description = "`provider_not_enabled`, `order_not_found`", body = ErrorEnvelope),
        (status = 422, description = "`amount_mismatch`", body = ErrorEnvelope)))]
pub async fn stripe_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    notify(&state, &req, payload, ProviderName::Stripe).await
}

/// One notification: decided, counted, answered in the provider's format.
async fn notify(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    provider: ProviderName,
) -> HttpResponse {
    let decided = decide(state, req, payload, provider).await;
    let result = match &decided {
        Ok(Some(OutcomeKind::Duplicate)) | Ok(None) => CallbackResult::Duplicate,
        Ok(Some(OutcomeKind::LatePayment | OutcomeKind::DoublePayment)) => CallbackResult::Late,
        Ok(Some(_)) => CallbackResult::Applied,
        Err(ApiError::ProviderNotEnabled(_)) => {
            return ApiError::ProviderNotEnabled(provider.as_str()).error_response()
        }
        Err(error) if error.status_code().is_server_error() => CallbackResult::Error,
        Err(_) => CallbackResult::Rejected,
    };
    state
        .engine
        .core
        .metrics
        .callback(provider.as_str(), result);
    // Present: a provider that is off was answered above.
    let Some(adapter) = state.engine.core.providers.get(provider) else {
        return ApiError::ProviderNotEnabled(provider.as_str()).error_response();
    };
    match decided {
        Ok(_) => respond(adapter.success_reply()),
        Err(error) => failure_reply(adapter, &error),
    }
}

/// Verifies and applies a notification: what it came to once durable (`None`: authentic, and
/// nothing to decide).
async fn decide(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    name: ProviderName,
) -> Result<Option<OutcomeKind>, ApiError> {
    let Some(provider) = state.engine.core.providers.get(name) else {
        return Err(ApiError::ProviderNotEnabled(name.as_str()));
    };
    let body = read_body(req, payload, state.settings.server.max_body_bytes).await?;
    // A header counts only when it comes once: a repeated signature header is refused.
    let header = |header: &str| {
        let mut values = req.headers().get_all(header);
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().map(str::to_string),
            _ => None,
        }
    };
    let request = NotifyRequest {
        headers: &header,
        body: &body,
        now_unix: chrono::Utc::now().timestamp(),
        tolerance_secs: state.settings.payment.tolerance_secs,
    };
    let report = match provider.verify(&request) {
        Ok(Notified::Trade(report)) => report,
        Ok(Notified::Acknowledge(why)) => {
            log::info!("{name} notification acknowledged, nothing to decide: {why}");
            return Ok(None);
        }
        Err(NotifyError::Unauthentic(why)) => {
            log::warn!("{name} notification refused: {why}");
            return Err(ApiError::InvalidSignature("invalid signature"));
        }
        Err(NotifyError::Malformed(why)) => {
            return Err(ApiError::InvalidRequest(format!(
                "{name} notification: {why}"
            )))
        }
    };
    let (order_no, command) = apply::command_of(name, &report)?;
    let outcome = state.engine.deliver(&order_no, command).await?;
    if let Some(Rejection::AmountMismatch) = outcome.rejection {
        return Err(ApiError::AmountMismatch {
            expected: outcome.order.payable_cents,
            received: report.amount_cents,
        });
    }
    match outcome.kind {
        OutcomeKind::LatePayment | OutcomeKind::DoublePayment => log::warn!(
            "order {order_no}: {:?} of {} cents through {name} (trade {}): refunding it there",
            outcome.kind,
            report.amount_cents,
            report.trade_no
        ),
        OutcomeKind::Duplicate => log::info!(
            "order {order_no}: {name}'s word on trade {} acknowledged (recorded before)",
            report.trade_no
        ),
        kind => log::info!(
            "order {order_no}: {name} notification on trade {} decided: {kind:?}",
            report.trade_no
        ),
    }
    Ok(Some(outcome.kind))
}

/// A provider's reply ([`providers::Reply`]) as the HTTP response.
fn respond(reply: providers::Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    match reply.content_type {
        Some(content_type) => response.content_type(content_type).body(reply.body),
        None => response.finish(),
    }
}

/// The reply to a refused notification, with the callback rules' status, in the provider's
/// format (the provider retries it), else the SPEC envelope.
fn failure_reply(provider: &dyn Provider, error: &ApiError) -> HttpResponse {
    error.log_server_error();
    let status = error.status_code();
    match provider.failure_reply(status.as_u16(), error.code(), &error.public_message()) {
        Some(reply) => respond(reply),
        // No WWW-Authenticate: a provider signs, it does not authenticate.
        None if status == StatusCode::UNAUTHORIZED => {
            HttpResponse::build(status).json(error.envelope())
        }
        None => error.error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_names_one_of_the_three_providers() {
        for provider in PROVIDERS {
            let body = format!(r#"{{"provider":"{provider}"}}"#);
            assert_eq!(provider_of(body.as_bytes()).unwrap(), provider);
        }
        for bad in [
            r#"{"provider":"paypal"}"#,
            r#"{"provider":"Alipay"}"#,
            r#"{"provider":"generic"}"#,
            r#"{"provider":1}"#,
            r#"{}"#,
            r#"{"provider":"stripe","x":1}"#,
            "nope",
        ] {
            assert!(
                matches!(
                    provider_of(bad.as_bytes()),
                    Err(ApiError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
    }
}

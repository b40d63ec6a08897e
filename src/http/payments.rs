//! The payment-provider routes of the SPEC ("Payment providers"): starting a payment with
//! Alipay, WeChat Pay or Stripe, and their notification routes. This build has no adapter for
//! any of the three yet, so each provider is off: the routes answer what the SPEC gives for a
//! provider that is off — 404 `provider_not_enabled` (on a provider's notification route
//! before every other error; on the client route after the request's own 413, 401 and 400).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{authenticate_client, parse_json, read_body, AppState};
use crate::error::{ApiError, ErrorEnvelope};

/// The providers a payment can be started with.
pub const PROVIDERS: [&str; 3] = ["alipay", "wechatpay", "stripe"];

/// `POST /api/orders/{order_no}/payments`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartPayment {
    /// `alipay`, `wechatpay` or `stripe`.
    #[schema(example = "alipay")]
    provider: String,
}

/// A payment started with a provider for an order (SPEC "Payment providers"), as
/// `GET /admin/orders/{order_no}` lists them under `payments`. None exist until a provider
/// adapter is built and configured.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Payment {
    pub order_no: String,
    pub provider: String,
    /// `started`, `paid` or `closed`.
    pub status: String,
    #[schema(required = true)]
    pub pay_url: Option<String>,
    #[schema(required = true)]
    pub code_url: Option<String>,
    #[schema(required = true)]
    pub provider_ref: Option<String>,
    pub expires_at: String,
    pub created_at: String,
}

/// Which provider a body names: 400 for anything but the three.
fn provider_of(body: &[u8]) -> Result<&'static str, ApiError> {
    let start: StartPayment = parse_json(body)?;
    PROVIDERS
        .into_iter()
        .find(|p| *p == start.provider)
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "provider must be one of {}, not {:?}",
                PROVIDERS.join(", "),
                start.provider
            ))
        })
}

/// Starts a payment of the caller's pending order with a provider. No provider is enabled in
/// this build, so a well-formed request is 404 `provider_not_enabled`.
#[utoipa::path(post, path = "/api/orders/{order_no}/payments", tag = "clients",
    params(("order_no" = String, Path)),
    request_body = StartPayment,
    security(("client_jwt" = [])),
    responses(
        (status = 400, description = "`invalid_request`: malformed body or unknown provider", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`provider_not_enabled`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope)))]
pub async fn start_payment(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    _path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    authenticate_client(&state, &req).await?;
    let provider = provider_of(&body)?;
    Err(ApiError::ProviderNotEnabled(provider))
}

/// Alipay's asynchronous notification (form-encoded; `success` once durable). Alipay is off
/// in this build.
#[utoipa::path(post, path = "/api/payments/alipay/notify", tag = "payment provider",
    responses((status = 404, description = "`provider_not_enabled`", body = ErrorEnvelope)))]
pub async fn alipay_notify() -> Result<HttpResponse, ApiError> {
    Err(ApiError::ProviderNotEnabled("alipay"))
}

/// WeChat Pay's (API v3) payment notification (204 once durable). WeChat Pay is off in this
/// build.
#[utoipa::path(post, path = "/api/payments/wechatpay/notify", tag = "payment provider",
    responses((status = 404, description = "`provider_not_enabled`", body = ErrorEnvelope)))]
pub async fn wechatpay_notify() -> Result<HttpResponse, ApiError> {
    Err(ApiError::ProviderNotEnabled("wechatpay"))
}

/// Stripe's webhook (`Stripe-Signature`; `{"received":true}` once durable). Stripe is off in
/// this build.
#[utoipa::path(post, path = "/api/payments/stripe/webhook", tag = "payment provider",
    responses((status = 404, description = "`provider_not_enabled`", body = ErrorEnvelope)))]
pub async fn stripe_webhook() -> Result<HttpResponse, ApiError> {
    Err(ApiError::ProviderNotEnabled("stripe"))
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

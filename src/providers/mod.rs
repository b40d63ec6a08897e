//! Payment providers (SPEC "Payment providers"): one interface, [`Provider`], and an adapter per
//! provider — [`alipay`], [`wechatpay`], [`stripe`] — each speaking its provider's published
//! protocol (signatures, field names, amount and time formats). Wire formats stay inside the
//! adapters: the rest of the engine speaks the types of this module.
//!
//! Every call an adapter makes is blocking (ureq, with `providers.request_timeout_ms`): they run
//! on the effect actors' threads or in `web::block`, never on the async executor.

pub mod alipay;
pub mod apply;
pub mod effects;
pub mod keys;
pub mod reconcile;
pub mod stripe;
pub mod wechatpay;

use chrono::NaiveDateTime;

pub use crate::domain::states::ProviderName;

/// What the engine asks a provider to start: a trade for a pending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// The trade's `out_trade_no` (Stripe: `client_reference_id` and `metadata[order_no]`).
    pub order_no: String,
    /// What the payer sees: the order's course titles.
    pub subject: String,
    /// The order's payable amount, in the currency's minor unit (cents).
    pub amount_cents: i64,
    /// `pricing.currency`, upper case (`CNY`).
    pub currency: String,
    /// The provider-side expiry: the order's deadline less `providers.expire_margin_secs`.
    pub provider_expires_at: NaiveDateTime,
    /// The order's own deadline (Stripe: the session is expired when the order closes, if
    /// `provider_expires_at` is outside Stripe's 30 min - 24 h window).
    pub order_expires_at: NaiveDateTime,
    /// Where the provider sends its notifications (`providers.public_base_url` + the route).
    pub notify_url: String,
    /// The provider's idempotency key for this start, where it takes one (Stripe).
    pub idempotency_key: String,
    /// The engine's clock now (Stripe decides whether `expires_at` fits its window).
    pub now: NaiveDateTime,
}

/// A started trade.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Started {
    /// Where to send the payer (Alipay's signed page-pay URL, Stripe's session URL).
    pub pay_url: Option<String>,
    /// What to show as a QR code (WeChat Pay Native).
    pub code_url: Option<String>,
    /// The Stripe session id, else the provider's trade number once known, else `None`.
    pub provider_ref: Option<String>,
}

/// What a verified notification (or a query, or a close that found the trade paid) says about
/// one trade, in the engine's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeReport {
    /// The engine's order number (`out_trade_no`, `client_reference_id`).
    pub order_no: String,
    /// The provider's own trade id (Alipay `trade_no`, WeChat `transaction_id`, Stripe
    /// `payment_intent`; for a Stripe session that expired without one, the session id):
    /// 1-255 characters.
    pub trade_no: String,
    pub status: TradeStatus,
    /// The amount the trade is for (paid, when `Paid`), in cents.
    pub amount_cents: i64,
    /// When the provider says it was paid.
    pub paid_at: Option<NaiveDateTime>,
    /// The Stripe session id (so a Payment row can learn it), else `None`.
    pub provider_ref: Option<String>,
}

/// A trade's state as its provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeStatus {
    /// Money received: a success (Alipay `TRADE_SUCCESS` / `TRADE_FINISHED`, WeChat `SUCCESS`,
    /// Stripe `checkout.session.completed` with `payment_status` `paid` or
    /// `async_payment_succeeded`).
    Paid,
    /// The trade closed, expired or failed without money (Alipay `TRADE_CLOSED`, WeChat
    /// `CLOSED` / `REVOKED` / `PAYERROR`, Stripe `expired` / `async_payment_failed`).
    Closed,
}

/// What a notification comes to once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notified {
    /// A word on a trade, to decide by the callback rules.
    Trade(TradeReport),
    /// Authentic, but nothing to decide (a Stripe event type the engine does not use, an Alipay
    /// `WAIT_BUYER_PAY`, a refund notice): acknowledged with the success reply.
    Acknowledge(String),
}

/// A notification as it arrived: its headers (by lower-case name, each once; a repeated
/// header is refused before this) and its raw body.
pub struct NotifyRequest<'a> {
    pub headers: &'a dyn Fn(&str) -> Option<String>,
    pub body: &'a [u8],
    /// Unix seconds now (signature timestamps are checked against it).
    pub now_unix: i64,
    /// `payment.tolerance_secs`.
    pub tolerance_secs: u64,
}

/// Why a notification was refused; nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Signature, key serial, app id, timestamp or decryption failed: 401 `invalid_signature`.
    #[error("{0}")]
    Unauthentic(String),
    /// Authentic but malformed (missing or mistyped fields, a bad amount): 400
    /// `invalid_request`.
    #[error("{0}")]
    Malformed(String),
}

/// One open trade to close or ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRef {
    pub order_no: String,
    /// The Payment's `provider_ref` (the Stripe session id; the provider's trade number).
    pub provider_ref: Option<String>,
}

/// What closing a trade came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The provider closed (expired) it, or it was closed already.
    Closed,
    /// The provider has no such trade (never paid for: Alipay creates it on the payer's first
    /// visit; `time_expire` bars a later payment). Counts as done.
    NoSuchTrade,
    /// The trade was paid: handled as that trade's success notification.
    Paid(TradeReport),
}

/// A refund of a late or double payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub order_no: String,
    /// The provider's trade id of the payment to refund ([`TradeReport::trade_no`]).
    pub trade_no: String,
    /// The amount received, refunded whole, in cents.
    pub amount_cents: i64,
    /// The provider-side request number / idempotency key, derived from the late-payment
    /// record (`lp<id>`): the same on every retry, so the provider refunds once.
    pub refund_no: String,
    /// `pricing.currency`.
    pub currency: String,
}

/// What a query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queried {
    /// The provider has no such trade (yet).
    NotFound,
    /// Open, waiting for the payer.
    Open,
    /// Paid or closed: applied exactly as a notification saying so.
    Report(TradeReport),
}

/// Why a call to a provider failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No answer (connection refused, timeout): worth a retry; 503 on the client route.
    #[error("{provider} unreachable: {reason}")]
    Unreachable {
        provider: ProviderName,
        reason: String,
    },
    /// The provider answered with an error, a 5xx, a bad signature or a body we cannot read.
    #[error("{provider} refused: {reason}")]
    Refused {
        provider: ProviderName,
        reason: String,
    },
}

/// A reply to a notification, in the provider's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// `None`: no body.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

/// One payment provider's adapter.
pub trait Provider: Send + Sync {
    fn name(&self) -> ProviderName;

    /// What the provider expects once a notification is durable.
    fn success_reply(&self) -> Reply;

    /// The reply to a refused notification, with the callback rules' `status` and the error's
    /// `code` and `message`; `None` when the provider takes the engine's error envelope.
    fn failure_reply(&self, status: u16, code: &str, message: &str) -> Option<Reply>;

    /// Starts a trade (Alipay makes no call: its pay URL is signed locally).
    fn start(&self, request: &StartRequest) -> Result<Started, ProviderError>;

    /// Verifies a notification and reads what it says. Checks nothing of the engine's state.
    fn verify(&self, request: &NotifyRequest<'_>) -> Result<Notified, NotifyError>;

    /// Closes a trade (Alipay `alipay.trade.close`, WeChat `.../out-trade-no/{no}/close`,
    /// Stripe session expire). Idempotent.
    fn close(&self, trade: &TradeRef) -> Result<Closed, ProviderError>;

    /// Refunds a payment whole, idempotently by `refund_no`.
    fn refund(&self, refund: &RefundRequest) -> Result<(), ProviderError>;

    /// Asks about a trade (`reconcile_payments`).
    fn query(&self, trade: &TradeRef) -> Result<Queried, ProviderError>;
}

/// The HTTP agent of provider calls: every call times out after `timeout`.
pub fn agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build()
}

/// A ureq error as a [`ProviderError`]: transport failures are `Unreachable`, an answered
/// error status `Refused` with (the start of) the body.
pub fn call_error(provider: ProviderName, err: ureq::Error) -> ProviderError {
    match err {
        ureq::Error::Status(status, response) => {
            let body = response.into_string().unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            ProviderError::Refused {
                provider,
                reason: format!("HTTP {status}: {body}"),
            }
        }
        ureq::Error::Transport(t) => ProviderError::Unreachable {
            provider,
            reason: t.to_string(),
        },
    }
}

/// The notification route of each provider (its `notify_url` is
/// `providers.public_base_url` + this).
pub fn notify_route(provider: ProviderName) -> &'static str {
    match provider {
        ProviderName::Alipay => "/api/payments/alipay/notify",
        ProviderName::Wechatpay => "/api/payments/wechatpay/notify",
        ProviderName::Stripe => "/api/payments/stripe/webhook",
        ProviderName::Generic => "/api/payments/callback",
    }
}

/// The adapters of the providers that are on.
#[derive(Default, Clone)]
pub struct Providers {
    on: Vec<std::sync::Arc<dyn Provider>>,
}

impl Providers {
    /// An adapter for each provider whose config section is set.
    pub fn from_settings(settings: &crate::config::ProviderSettings) -> Result<Self, String> {
        let timeout = std::time::Duration::from_millis(settings.request_timeout_ms);
        let mut on: Vec<std::sync::Arc<dyn Provider>> = Vec::new();
        if let Some(s) = &settings.alipay {
            on.push(std::sync::Arc::new(alipay::Alipay::new(s, timeout)?));
        }
        if let Some(s) = &settings.wechatpay {
            on.push(std::sync::Arc::new(wechatpay::Wechatpay::new(s, timeout)?));
        }
        if let Some(s) = &settings.stripe {
            on.push(std::sync::Arc::new(stripe::Stripe::new(s, timeout)?));
        }
        Ok(Providers { on })
    }

    /// The adapter of `name`, when that provider is on.
    pub fn get(&self, name: ProviderName) -> Option<&dyn Provider> {
        self.on
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    /// Every provider that is on.
    pub fn all(&self) -> impl Iterator<Item = &dyn Provider> {
        self.on.iter().map(|p| p.as_ref())
    }
}

//! Stripe's wire formats and their conversions to and from the engine's types (Hyperswitch's
//! `transformers.rs`): the form of a Checkout Session create, the session, refund, error and
//! event objects as Stripe sends them, the `Stripe-Signature` scheme, and the rules that read a
//! session as a trade. Pure: no I/O, so every rule has a unit test below.
//!
//! Sources: the API reference of Checkout Sessions (create, retrieve, expire) and Refunds
//! <https://docs.stripe.com/api/checkout/sessions/create>,
//! <https://docs.stripe.com/api/checkout/sessions/expire>, <https://docs.stripe.com/api/refunds/create>;
//! errors <https://docs.stripe.com/api/errors>; idempotency
//! <https://docs.stripe.com/api/idempotent_requests>; webhook signatures
//! <https://docs.stripe.com/webhooks#verify-manually>.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::providers::{NotifyError, StartRequest, TradeReport, TradeStatus};

/// The API version every call pins (`Stripe-Version`), so an account's default version moving
/// on never changes what the adapter reads. The webhook endpoint must be created with the same
/// `api_version`, so the events' `data.object` has the shape read here.
pub const STRIPE_VERSION: &str = "2025-09-30.clover";

/// The shortest and longest `expires_at` Stripe accepts after a session's creation: 30 minutes
/// to 24 hours.
const EXPIRES_AT_MIN_SECS: i64 = 30 * 60;
const EXPIRES_AT_MAX_SECS: i64 = 24 * 60 * 60;
/// Stripe measures the window from the moment it creates the session, a little after the
/// engine's `now`: an expiry this close to the 30-minute edge is left out rather than refused.
const EXPIRES_AT_EDGE_SECS: i64 = 60;

/// The longest `trade_no` the engine stores (SPEC: 1-255 characters).
const TRADE_NO_MAX_CHARS: usize = 255;

/// Form fields in Stripe's bracket notation (`metadata[order_no]`), in the order they are sent.
pub type Form = Vec<(String, String)>;

/// `application/x-www-form-urlencoded` of `form` (brackets percent-encoded, as Stripe's SDKs send
/// them; Stripe decodes either).
pub fn encode_form(form: &Form) -> String {
    // A list of string pairs always encodes: serde_urlencoded fails only on nested values.
    serde_urlencoded::to_string(form).unwrap_or_default()
}

/// Unix seconds of a UTC wall-clock time.
pub fn unix_seconds(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp()
}

/// The UTC time of Unix seconds, when representable.
pub fn from_unix_seconds(seconds: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(seconds, 0).map(|at| at.naive_utc())
}

/// An amount in cents as Stripe's `unit_amount` / `amount`: "a positive integer in the smallest
/// currency unit", the same integer (the engine allows only two-decimal currencies, whose minor
/// unit is the cent).
pub fn minor_units(amount_cents: i64) -> String {
    amount_cents.to_string()
}

/// `expires_at` for a session created at `request.now`: the provider-side expiry when it falls
/// in Stripe's window, else `None` (the session is then expired when the order closes).
pub fn session_expires_at(request: &StartRequest) -> Option<i64> {
    let expires_at = unix_seconds(request.provider_expires_at);
    let ahead = expires_at - unix_seconds(request.now);
    (EXPIRES_AT_MIN_SECS + EXPIRES_AT_EDGE_SECS..=EXPIRES_AT_MAX_SECS)
        .contains(&ahead)
        .then_some(expires_at)
}

/// The form of `POST /v1/checkout/sessions` for `request`: a hosted, payment-mode session of
/// one line item. `success_url` is left out: it is optional for hosted sessions in the pinned
/// version, and the engine has no page of its own to send the payer back to.
pub fn create_session_form(request: &StartRequest) -> Form {
    let mut form: Form = vec![
        ("mode".into(), "payment".into()),
        ("client_reference_id".into(), request.order_no.clone()),
        ("metadata[order_no]".into(), request.order_no.clone()),
        (
            "line_items[0][price_data][currency]".into(),
            request.currency.to_ascii_lowercase(),
        ),
        (
            "line_items[0][price_data][unit_amount]".into(),
            minor_units(request.amount_cents),
        ),
        (
            "line_items[0][price_data][product_data][name]".into(),
            request.subject.clone(),
        ),
        ("line_items[0][quantity]".into(), "1".into()),
        (
            "payment_intent_data[metadata][order_no]".into(),
            request.order_no.clone(),
        ),
    ];
    if let Some(expires_at) = session_expires_at(request) {
        form.push(("expires_at".into(), expires_at.to_string()));
    }
    form
}

/// The form of `POST /v1/refunds`: the whole `amount` of the PaymentIntent `payment_intent`.
pub fn refund_form(
    payment_intent: &str,
    amount_cents: i64,
    refund_no: &str,
    order_no: &str,
) -> Form {
    vec![
        ("payment_intent".into(), payment_intent.to_string()),
        ("amount".into(), minor_units(amount_cents)),
        ("metadata[refund_no]".into(), refund_no.to_string()),
        ("metadata[order_no]".into(), order_no.to_string()),
    ]
}

/// The `Idempotency-Key` of a session's expire: the same on every retry of that close.
pub fn expire_idempotency_key(session_id: &str) -> String {
    format!("expire-{session_id}")
}

/// An expandable field: the object's id, or (when expanded) the object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

/// The fields of a Checkout Session the adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub id: String,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: Option<String>,
    pub client_reference_id: Option<String>,
    pub payment_intent: Option<Expandable>,
    pub amount_total: Option<i64>,
    pub url: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

/// A session's state, in the terms the adapter decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for the payer.
    Open,
    /// Complete and paid.
    Paid,
    /// Complete, an asynchronous payment method still processing: money may yet come.
    Processing,
    /// Expired (by `expires_at`, by an expire call).
    Expired,
}

impl Session {
    /// The session's state, or why it cannot be read.
    pub fn state(&self) -> Result<SessionState, String> {
        match (self.status.as_deref(), self.payment_status.as_deref()) {
            (Some("open"), _) => Ok(SessionState::Open),
            (Some("complete"), Some("paid")) => Ok(SessionState::Paid),
            (Some("complete"), Some("unpaid")) => Ok(SessionState::Processing),
            (Some("expired"), _) => Ok(SessionState::Expired),
            (status, payment_status) => Err(format!(
                "session {} has status {status:?} and payment_status {payment_status:?}",
                self.id
            )),
        }
    }

    /// The session as a trade report of `status`: order = `client_reference_id`, trade_no =
    /// `payment_intent` (a closed session without one: the session id), amount =
    /// `amount_total`.
    pub fn report(
        &self,
        status: TradeStatus,
        paid_at: Option<NaiveDateTime>,
    ) -> Result<TradeReport, String> {
        let order_no = self
            .client_reference_id
            .as_deref()
            .filter(|no| !no.is_empty())
            .ok_or_else(|| {
                format!(
                    "session {} has no client_reference_id: not a session this engine started",
                    self.id
                )
            })?;
        if let Some(metadata_order_no) = self.metadata.as_ref().and_then(|m| m.get("order_no")) {
            if metadata_order_no != order_no {
                return Err(format!(
                    "session {}: client_reference_id {order_no} and metadata[order_no] {metadata_order_no} differ",
                    self.id
                ));
            }
        }
        let trade_no = match (&self.payment_intent, status) {
            (Some(intent), _) => intent.id().to_string(),
            (None, TradeStatus::Closed) => self.id.clone(),
            (None, TradeStatus::Paid) => {
                return Err(format!(
                    "paid session {} of order {order_no} has no payment_intent",
                    self.id
                ))
            }
        };
        if trade_no.is_empty() || trade_no.chars().count() > TRADE_NO_MAX_CHARS {
            return Err(format!(
                "session {} of order {order_no}: trade_no must be 1-{TRADE_NO_MAX_CHARS} characters",
                self.id
            ));
        }
        let amount_cents = self
            .amount_total
            .filter(|amount| *amount >= 0)
            .ok_or_else(|| {
                format!(
                    "session {} of order {order_no} has no amount_total",
                    self.id
                )
            })?;
        Ok(TradeReport {
            order_no: order_no.to_string(),
            trade_no,
            status,
            amount_cents,
            paid_at,
            provider_ref: Some(self.id.clone()),
        })
    }
}

/// The fields of a Refund the adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    pub status: Option<String>,
}

impl Refund {
    /// Whether Stripe took the refund: every status but `failed` and `canceled` (a `pending`
    /// refund completes on Stripe's side; the idempotency key keeps a retry from refunding
    /// twice).
    pub fn taken(&self) -> bool {
        !matches!(self.status.as_deref(), Some("failed") | Some("canceled"))
    }
}

/// Stripe's error answer: `{"error":{"type","code","message","param"}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ApiError,
}

impl ApiError {
    /// The error of an error answer's body, when it is Stripe's shape.
    pub fn parse(body: &str) -> Option<ApiError> {
        serde_json::from_str::<ErrorBody>(body)
            .ok()
            .map(|b| b.error)
    }

    /// `type/code: message`, for a refusal's reason.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}: {}",
            self.kind.as_deref().unwrap_or("unknown_type"),
            self.code.as_deref().unwrap_or("no_code"),
            self.message.as_deref().unwrap_or("")
        )
    }

    /// `resource_missing`: no such object.
    pub fn is_resource_missing(&self) -> bool {
        self.code.as_deref() == Some("resource_missing")
    }
}

/// An event as a webhook delivers it (the fields the adapter reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds the event was created.
    pub created: i64,
    pub livemode: Option<bool>,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// What an event's type asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventMeaning {
    /// `checkout.session.completed` with `payment_status` `paid`,
    /// `checkout.session.async_payment_succeeded`.
    Paid,
    /// `checkout.session.async_payment_failed`, `checkout.session.expired`.
    Closed,
    /// `checkout.session.completed` while an asynchronous payment is processing
    /// (`unpaid`): its outcome comes in a later event.
    Processing,
    /// A type the engine does not use.
    Other,
}

/// The meaning of an event of type `kind` about `session`.
pub fn event_meaning(kind: &str, session: &Session) -> EventMeaning {
    match kind {
        "checkout.session.completed" => match session.payment_status.as_deref() {
            Some("paid") => EventMeaning::Paid,
            _ => EventMeaning::Processing,
        },
        "checkout.session.async_payment_succeeded" => EventMeaning::Paid,
        "checkout.session.async_payment_failed" | "checkout.session.expired" => {
            EventMeaning::Closed
        }
        _ => EventMeaning::Other,
    }
}

/// Whether an event type is about a Checkout Session the engine decides on.
pub fn is_session_event(kind: &str) -> bool {
    matches!(
        kind,
        "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "checkout.session.async_payment_failed"
            | "checkout.session.expired"
    )
}

/// The mode of a secret key (`sk_test_`/`rk_test_`: test, `sk_live_`/`rk_live_`: live), to
/// match events' `livemode` against; `None` for a key of another shape.
pub fn key_livemode(secret_key: &str) -> Option<bool> {
    if secret_key.contains("_test_") {
        Some(false)
    } else if secret_key.contains("_live_") {
        Some(true)
    } else {
        None
    }
}

/// The hex HMAC-SHA256 Stripe signs a delivery with: keyed with the endpoint's whole signing
/// secret (`whsec_...` as the dashboard shows it, not decoded), over `"{t}.{raw body}"`.
pub fn signature_hex(secret: &str, timestamp: &str, body: &[u8]) -> String {
    hex::encode(signature_bytes(secret, timestamp, body))
}

fn signature_bytes(secret: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes a key of any length; this arm is never taken.
        return Vec::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Checks a `Stripe-Signature` header (`t=...,v1=...[,v1=...][,v0=...]`) on `body`: one `v1`
/// (several appear while a secret is rolled) must be the HMAC of `"{t}.{body}"`, compared in
/// constant time, and `t` within `tolerance_secs` of `now_unix`. Other schemes (`v0`, test-mode
/// signatures) are ignored. Returns `t`.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &str,
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<i64, NotifyError> {
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<&str> = Vec::new();
    for element in header.split(',') {
        let Some((key, value)) = element.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp.is_none() => timestamp = Some(value.trim()),
            "v1" => signatures.push(value.trim()),
            _ => {}
        }
    }
    let timestamp =
        timestamp.ok_or_else(|| NotifyError::Unauthentic("Stripe-Signature has no t".into()))?;
    let t: i64 = timestamp.parse().map_err(|_| {
        NotifyError::Unauthentic(format!(
            "Stripe-Signature t={timestamp} is not Unix seconds"
        ))
    })?;
    if signatures.is_empty() {
        return Err(NotifyError::Unauthentic(
            "Stripe-Signature has no v1 signature".into(),
        ));
    }
    let expected = signature_bytes(secret, timestamp, body);
    let matched = signatures.iter().any(|candidate| {
        hex::decode(candidate.to_ascii_lowercase())
            .map(|given| given.len() == expected.len() && bool::from(given.ct_eq(&expected)))
            .unwrap_or(false)
    });
    if !matched {
        return Err(NotifyError::Unauthentic(
            "no v1 signature of Stripe-Signature matches the body".into(),
        ));
    }
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if now_unix.saturating_sub(t).saturating_abs() > tolerance {
        return Err(NotifyError::Unauthentic(format!(
            "Stripe-Signature t={t} is outside the tolerance of {tolerance_secs} s"
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 3)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
    }

    fn request(provider_expires_at: NaiveDateTime) -> StartRequest {
        StartRequest {
            order_no: "ord_1".into(),
            subject: "Rust 101, Diesel in depth".into(),
            amount_cents: 12_345,
            currency: "CNY".into(),
            provider_expires_at,
            order_expires_at: provider_expires_at + chrono::Duration::seconds(60),
            notify_url: "https://pay.example.com/api/payments/stripe/webhook".into(),
            idempotency_key: "start-ord_1-stripe".into(),
            now: at(10, 0, 0),
        }
    }

    /// The fixed vector of async-stripe's `test_webhook_construct_event`
    /// (https://github.com/arlyon/async-stripe/blob/master/src/resources/webhook_events.rs):
    /// secret `webhook_secret`, t = 1533204620, this exact payload (its whitespace and final
    /// newline are part of the signed bytes), v1 = 82216eca...
    const VECTOR_PAYLOAD: &str = r#"{
  "id": "evt_123",
  "object": "event",
  "account": "acct_123",
  "api_version": "2017-05-25",
  "created": 1533204620,
  "data": {
    "object": {
      "id": "ii_123",
      "object": "invoiceitem",
      "amount": 1000,
      "currency": "usd",
      "customer": "cus_123",
      "date": 1533204620,
      "description": "Test Invoice Item",
      "discountable": false,
      "invoice": "in_123",
      "livemode": false,
      "metadata": {},
      "period": {
        "start": 1533204620,
        "end": 1533204620
      },
      "proration": false,
      "quantity": 3
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_123",
    "idempotency_key": "idempotency-key-123"
  },
  "type": "invoiceitem.created"
}
"#;
    const VECTOR_V1: &str = "82216eca827bcb7b34b8055eb2d2d9e6bc13b9ac39ded14a61e69f70c565f53a";
    const VECTOR_V0: &str = "63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";

    #[test]
    fn the_published_vector_signs_and_verifies() {
        assert_eq!(
            signature_hex("webhook_secret", "1533204620", VECTOR_PAYLOAD.as_bytes()),
            VECTOR_V1
        );
        let header = format!("t=1533204620,v1={VECTOR_V1},v0={VECTOR_V0}");
        assert_eq!(
            verify_signature(
                &header,
                VECTOR_PAYLOAD.as_bytes(),
                "webhook_secret",
                1533204620,
                300
            ),
            Ok(1533204620)
        );
    }

    /// The fixed vector of Stripe's official .NET SDK: `EventUtilityTest`
    /// (https://github.com/stripe/stripe-dotnet/blob/master/src/StripeTests/Services/Events/EventUtilityTest.cs)
    /// over its fixture `src/StripeTests/Resources/event_test_signature.json` (this text, final
    /// newline included), secret `webhook_secret`, t = 1533204620, checked there with a current
    /// time of t + 100 and a tolerance of 300.
    const DOTNET_PAYLOAD: &str = "{\n  \"id\": \"evt_123\",\n  \"object\": \"event\",\n  \"account\": \"acct_123\",\n  \"api_version\": \"2017-05-25\",\n  \"created\": 1533204620,\n  \"data\": {\n    \"object\": {\n      \"id\": \"cus_123\",\n      \"object\": \"customer\",\n      \"created\": 123456789,\n      \"email\": \"test@stripe.com\",\n      \"livemode\": false,\n      \"metadata\": {}\n    }\n  },\n  \"livemode\": false,\n  \"pending_webhooks\": 1,\n  \"request\": {\n    \"id\": \"req_123\",\n    \"idempotency_key\": \"idempotency-key-123\"\n  },\n  \"type\": \"customer.created\"\n}\n";
    const DOTNET_HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";

    #[test]
    fn the_official_sdks_vector_verifies() {
        let body = DOTNET_PAYLOAD.as_bytes();
        assert_eq!(
            verify_signature(DOTNET_HEADER, body, "webhook_secret", 1533204620 + 100, 300),
            Ok(1533204620)
        );
        // Its RejectOutdatedTimestamp and RejectIncorrectSignature cases.
        assert!(
            verify_signature(DOTNET_HEADER, body, "webhook_secret", 1533204620 + 400, 300).is_err()
        );
        let changed = format!("{DOTNET_PAYLOAD}this_changes_the_json");
        assert!(verify_signature(
            DOTNET_HEADER,
            changed.as_bytes(),
            "webhook_secret",
            1533204620,
            300
        )
        .is_err());
        // Its malformed headers.
        for header in [
            "t=,v1=2220f87e",
            "t,v1=,v0=",
            "t,v1=,v0",
            "t,v1=,",
            "t,,",
            ",,",
            "t",
        ] {
            assert!(
                verify_signature(header, b"{}", "webhook_secret", 0, 300).is_err(),
                "{header}"
            );
        }
    }

    #[test]
    fn the_signed_payload_is_t_dot_the_raw_body() {
        // Stripe's docs: signed_payload = timestamp + "." + the raw JSON payload.
        let by_hand = {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_abc").unwrap();
            mac.update(b"1700000000.{\"a\":1}");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(
            signature_hex("whsec_abc", "1700000000", br#"{"a":1}"#),
            by_hand
        );
    }

    #[test]
    fn any_v1_may_match_and_other_schemes_are_ignored() {
        let body = br#"{"id":"evt_1"}"#;
        let good = signature_hex("whsec_k", "100", body);
        let header = format!(
            "t=100, v1={}, v1={}, v0={good}",
            "00".repeat(32),
            good.to_uppercase()
        );
        assert_eq!(
            verify_signature(&header, body, "whsec_k", 100, 300),
            Ok(100)
        );
        // Only a v0 that matches is not enough.
        let only_v0 = format!("t=100,v0={good}");
        assert!(matches!(
            verify_signature(&only_v0, body, "whsec_k", 100, 300),
            Err(NotifyError::Unauthentic(_))
        ));
    }

    #[test]
    fn bad_signatures_are_unauthentic() {
        let body = br#"{"id":"evt_1"}"#;
        let good = signature_hex("whsec_k", "100", body);
        let cases = [
            format!("v1={good}"),                                          // no t
            format!("t=abc,v1={good}"),                                    // t not a number
            "t=100".to_string(),                                           // no v1
            format!("t=101,v1={good}"),                                    // another t
            format!("t=100,v1={}", signature_hex("whsec_x", "100", body)), // another secret
            format!("t=100,v1={}", &good[..62]),                           // truncated
            format!("t=100,v1=zz{}", &good[2..]),                          // not hex
        ];
        for header in cases {
            assert!(
                matches!(
                    verify_signature(&header, body, "whsec_k", 100, 300),
                    Err(NotifyError::Unauthentic(_))
                ),
                "{header}"
            );
        }
        // The body changed after signing.
        assert!(verify_signature(&format!("t=100,v1={good}"), b"{}", "whsec_k", 100, 300).is_err());
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance_either_way() {
        let body = b"{}";
        let header = format!("t=1000,v1={}", signature_hex("whsec_k", "1000", body));
        assert!(verify_signature(&header, body, "whsec_k", 1300, 300).is_ok());
        assert!(verify_signature(&header, body, "whsec_k", 700, 300).is_ok());
        assert!(verify_signature(&header, body, "whsec_k", 1301, 300).is_err());
        assert!(verify_signature(&header, body, "whsec_k", 699, 300).is_err());
    }

    #[test]
    fn amounts_are_the_integer_minor_unit() {
        assert_eq!(minor_units(12_345), "12345");
        assert_eq!(minor_units(1), "1");
        // No float anywhere: the largest amount stays exact.
        assert_eq!(minor_units(9_007_199_254_740_993), "9007199254740993");
    }

    #[test]
    fn times_are_unix_seconds_of_utc() {
        assert_eq!(unix_seconds(at(0, 0, 0)), 1_796_256_000);
        assert_eq!(from_unix_seconds(1_796_256_000), Some(at(0, 0, 0)));
        assert_eq!(from_unix_seconds(i64::MAX), None);
    }

    #[test]
    fn expires_at_is_sent_only_inside_stripes_window() {
        let now = at(10, 0, 0);
        let minutes = |m: i64| now + chrono::Duration::minutes(m);
        assert_eq!(session_expires_at(&request(minutes(29))), None);
        assert_eq!(session_expires_at(&request(minutes(30))), None); // on the edge: left out
        assert_eq!(
            session_expires_at(&request(minutes(31))),
            Some(unix_seconds(minutes(31)))
        );
        assert_eq!(
            session_expires_at(&request(minutes(24 * 60))),
            Some(unix_seconds(minutes(24 * 60)))
        );
        assert_eq!(session_expires_at(&request(minutes(24 * 60 + 1))), None);
        assert_eq!(session_expires_at(&request(minutes(-5))), None);
    }

    #[test]
    fn the_create_form_uses_stripes_bracket_notation() {
        let req = request(at(11, 0, 0));
        let form = create_session_form(&req);
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(get("client_reference_id"), Some("ord_1"));
        assert_eq!(get("metadata[order_no]"), Some("ord_1"));
        assert_eq!(get("line_items[0][price_data][currency]"), Some("cny"));
        assert_eq!(get("line_items[0][price_data][unit_amount]"), Some("12345"));
        assert_eq!(
            get("line_items[0][price_data][product_data][name]"),
            Some("Rust 101, Diesel in depth")
        );
        assert_eq!(get("line_items[0][quantity]"), Some("1"));
        assert_eq!(
            get("payment_intent_data[metadata][order_no]"),
            Some("ord_1")
        );
        assert_eq!(get("expires_at"), Some("1796295600"));
        assert_eq!(get("success_url"), None);
        let encoded = encode_form(&form);
        assert!(encoded
            .starts_with("mode=payment&client_reference_id=ord_1&metadata%5Border_no%5D=ord_1&"));
        assert!(encoded.contains("product_data%5D%5Bname%5D=Rust+101%2C+Diesel+in+depth"));
        // Out of the window: no expires_at at all.
        let form = create_session_form(&request(at(10, 10, 0)));
        assert!(form.iter().all(|(n, _)| n != "expires_at"));
    }

    #[test]
    fn the_refund_form_and_keys() {
        let form = refund_form("pi_1", 500, "lp7", "ord_1");
        assert_eq!(
            encode_form(&form),
            "payment_intent=pi_1&amount=500&metadata%5Brefund_no%5D=lp7&metadata%5Border_no%5D=ord_1"
        );
        assert_eq!(expire_idempotency_key("cs_test_a1"), "expire-cs_test_a1");
    }

    /// The session of the API reference's create example
    /// (https://docs.stripe.com/api/checkout/sessions/create), trimmed to the fields read.
    const DOC_SESSION: &str = r#"{
  "id": "cs_test_a11YYufWQzNY63zpQ6QSNRQhkUpVph4WRmzW0zWJO2znZKdVujZ0N0S22u",
  "object": "checkout.session",
  "amount_subtotal": 2198,
  "amount_total": 2198,
  "client_reference_id": null,
  "created": 1679600215,
  "currency": "usd",
  "expires_at": 1679686615,
  "livemode": false,
  "metadata": {},
  "mode": "payment",
  "payment_intent": null,
  "payment_status": "unpaid",
  "status": "open",
  "success_url": "https://example.com/success",
  "url": "https://checkout.stripe.com/c/pay/cs_test_a11YYufWQzNY63zpQ6QSNRQhkUpVph4WRmzW0zWJO2znZKdVujZ0N0S22u#fidkdWxOYHwnPyd1blpxYHZxWjA0SDdPUW5JbmFMck1wMmx9N2BLZjFEfGRUNWhqTmJ%2FM2F8bUA2SDRySkFdUV81T1BSV0YxcWJcTUJcYW5rSzN3dzBLPUE0TzRKTTxzNFBjPWZEX1NKSkxpNTVjRjN8VHE0YicpJ2N3amhWYHdzYHcnP3F3cGApJ2lkfGpwcVF8dWAnPyd2bGtiaWBabHFgaCcpJ2BrZGdpYFVpZGZgbWppYWB3dic%2FcXdwYHgl"
}"#;

    #[test]
    fn the_documented_session_reads_as_open() {
        let session: Session = serde_json::from_str(DOC_SESSION).unwrap();
        assert_eq!(session.state(), Ok(SessionState::Open));
        assert!(session
            .url
            .unwrap()
            .starts_with("https://checkout.stripe.com/c/pay/cs_test_"));
        assert_eq!(session.amount_total, Some(2198));
    }

    fn session(status: &str, payment_status: &str, intent: Option<&str>) -> Session {
        serde_json::from_value(serde_json::json!({
            "id": "cs_test_1", "status": status, "payment_status": payment_status,
            "client_reference_id": "ord_1", "payment_intent": intent,
            "amount_total": 12345, "metadata": {"order_no": "ord_1"}, "url": null
        }))
        .unwrap()
    }

    #[test]
    fn sessions_read_as_trades() {
        let paid = session("complete", "paid", Some("pi_1"));
        assert_eq!(paid.state(), Ok(SessionState::Paid));
        let report = paid.report(TradeStatus::Paid, Some(at(10, 5, 0))).unwrap();
        assert_eq!(
            report,
            TradeReport {
                order_no: "ord_1".into(),
                trade_no: "pi_1".into(),
                status: TradeStatus::Paid,
                amount_cents: 12345,
                paid_at: Some(at(10, 5, 0)),
                provider_ref: Some("cs_test_1".into()),
            }
        );
        let expired = session("expired", "unpaid", None);
        assert_eq!(expired.state(), Ok(SessionState::Expired));
        assert_eq!(
            expired.report(TradeStatus::Closed, None).unwrap().trade_no,
            "cs_test_1"
        );
        assert_eq!(
            session("complete", "unpaid", Some("pi_1")).state(),
            Ok(SessionState::Processing)
        );
        assert!(session("weird", "paid", None).state().is_err());
        // A paid session without a PaymentIntent cannot be a trade.
        assert!(session("complete", "paid", None)
            .report(TradeStatus::Paid, None)
            .is_err());
        // An expanded payment_intent reads by its id.
        let expanded: Session = serde_json::from_value(serde_json::json!({
            "id": "cs_test_2", "status": "complete", "payment_status": "paid",
            "client_reference_id": "ord_2", "payment_intent": {"id": "pi_2", "object": "payment_intent"},
            "amount_total": 1
        }))
        .unwrap();
        assert_eq!(
            expanded.report(TradeStatus::Paid, None).unwrap().trade_no,
            "pi_2"
        );
    }

    #[test]
    fn a_session_of_no_order_of_ours_is_refused() {
        let mut foreign = session("complete", "paid", Some("pi_1"));
        foreign.client_reference_id = None;
        assert!(foreign
            .report(TradeStatus::Paid, None)
            .unwrap_err()
            .contains("client_reference_id"));
        foreign.client_reference_id = Some(String::new());
        assert!(foreign.report(TradeStatus::Paid, None).is_err());
        let mut mismatched = session("complete", "paid", Some("pi_1"));
        mismatched.metadata = Some(HashMap::from([("order_no".into(), "ord_9".into())]));
        assert!(mismatched.report(TradeStatus::Paid, None).is_err());
        let mut no_amount = session("complete", "paid", Some("pi_1"));
        no_amount.amount_total = None;
        assert!(no_amount.report(TradeStatus::Paid, None).is_err());
    }

    #[test]
    fn event_types_map_to_meanings() {
        let paid = session("complete", "paid", Some("pi_1"));
        let unpaid = session("complete", "unpaid", Some("pi_1"));
        assert_eq!(
            event_meaning("checkout.session.completed", &paid),
            EventMeaning::Paid
        );
        assert_eq!(
            event_meaning("checkout.session.completed", &unpaid),
            EventMeaning::Processing
        );
        assert_eq!(
            event_meaning("checkout.session.async_payment_succeeded", &unpaid),
            EventMeaning::Paid
        );
        assert_eq!(
            event_meaning("checkout.session.async_payment_failed", &unpaid),
            EventMeaning::Closed
        );
        assert_eq!(
            event_meaning("checkout.session.expired", &unpaid),
            EventMeaning::Closed
        );
        assert_eq!(
            event_meaning("payment_intent.succeeded", &paid),
            EventMeaning::Other
        );
        assert!(is_session_event("checkout.session.expired"));
        assert!(!is_session_event("charge.refunded"));
    }

    #[test]
    fn errors_and_refunds_parse() {
        // The shape of https://docs.stripe.com/api/errors.
        let missing = ApiError::parse(
            r#"{"error":{"code":"resource_missing","doc_url":"https://stripe.com/docs/error-codes/resource-missing","message":"No such checkout.session: 'cs_test_x'","param":"session","type":"invalid_request_error"}}"#,
        )
        .unwrap();
        assert!(missing.is_resource_missing());
        assert_eq!(
            missing.describe(),
            "invalid_request_error/resource_missing: No such checkout.session: 'cs_test_x'"
        );
        assert!(ApiError::parse("<html>bad gateway</html>").is_none());
        let refund: Refund = serde_json::from_str(
            r#"{"id":"re_1","object":"refund","amount":100,"status":"succeeded"}"#,
        )
        .unwrap();
        assert!(refund.taken());
        for (status, taken) in [
            ("pending", true),
            ("requires_action", true),
            ("failed", false),
            ("canceled", false),
        ] {
            let refund: Refund =
                serde_json::from_value(serde_json::json!({"id": "re_1", "status": status}))
                    .unwrap();
            assert_eq!(refund.taken(), taken, "{status}");
        }
    }

    #[test]
    fn key_modes() {
        assert_eq!(key_livemode("sk_test_abc"), Some(false));
        assert_eq!(key_livemode("rk_live_abc"), Some(true));
        assert_eq!(key_livemode("custom"), None);
    }
}

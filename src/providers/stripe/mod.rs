//! Stripe's adapter (SPEC "Payment providers"): a hosted Checkout Session per payment, expired
//! to close it, refunds through `/v1/refunds`, and the webhook's `Stripe-Signature` checked.
//!
//! Every call carries `Authorization: Bearer {secret_key}` and the pinned
//! [`transformers::STRIPE_VERSION`]; every POST an `Idempotency-Key` that is the same on each
//! retry of the same step (start: the engine's key; expire: `expire-{session id}`; refund: the
//! refund number), so a retried call never creates a second session or refunds twice. Bodies are
//! form-encoded in Stripe's bracket notation; answers are JSON. The wire formats live in
//! [`transformers`]; this file speaks HTTP and maps answers to the engine's types.

pub mod transformers;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{
    Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, ProviderName, Queried,
    RefundRequest, StartRequest, Started, TradeRef, TradeStatus,
};
use crate::config::StripeSettings;
use transformers::{
    ApiError, Event, EventMeaning, Form, Refund, Session, SessionState, STRIPE_VERSION,
};

/// What a path segment (a session id) may hold unescaped.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// The longest body read from Stripe (a session is a few kB).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

pub struct Stripe {
    settings: StripeSettings,
    agent: ureq::Agent,
}

/// An answer Stripe gave: a 2xx body, or an error status with its error (when the body is
/// Stripe's error shape).
enum Answer {
    Ok(String),
    Error { status: u16, error: ApiError },
}

impl Stripe {
    /// The adapter for `settings`; `timeout` bounds every call.
    pub fn new(settings: &StripeSettings, timeout: std::time::Duration) -> Result<Self, String> {
        Ok(Stripe {
            settings: settings.clone(),
            agent: super::agent(timeout),
        })
    }

    fn refused(&self, order_no: &str, step: &str, reason: impl std::fmt::Display) -> ProviderError {
        ProviderError::Refused {
            provider: ProviderName::Stripe,
            reason: format!("order {order_no}: stripe {step}: {reason}"),
        }
    }

    fn unreachable(
        &self,
        order_no: &str,
        step: &str,
        reason: impl std::fmt::Display,
    ) -> ProviderError {
        ProviderError::Unreachable {
            provider: ProviderName::Stripe,
            reason: format!("order {order_no}: stripe {step}: {reason}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.api_base)
    }

    fn session_path(session_id: &str) -> String {
        format!(
            "/v1/checkout/sessions/{}",
            utf8_percent_encode(session_id, PATH_SEGMENT)
        )
    }

    /// Sends `request` (with a form body, for a POST) and reads the answer: a transport failure
    /// is `Unreachable`; a 5xx or an unreadable answer `Refused`; a 4xx an [`Answer::Error`] for
    /// the caller to decide on.
    fn call(
        &self,
        request: ureq::Request,
        form: Option<&Form>,
        order_no: &str,
        step: &str,
    ) -> Result<Answer, ProviderError> {
        let request = request
            .set(
                "Authorization",
                &format!("Bearer {}", self.settings.secret_key),
            )
            .set("Stripe-Version", STRIPE_VERSION);
        let result = match form {
            Some(form) => request
                .set("Content-Type", "application/x-www-form-urlencoded")
                .send_string(&transformers::encode_form(form)),
            None => request.call(),
        };
        let (status, response) = match result {
            Ok(response) => (response.status(), response),
            Err(ureq::Error::Status(status, response)) => (status, response),
            Err(ureq::Error::Transport(transport)) => {
                return Err(self.unreachable(order_no, step, transport))
            }
        };
        let mut body = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(response.into_reader(), MAX_ANSWER_BYTES),
            &mut body,
        )
        .map_err(|e| {
            self.refused(
                order_no,
                step,
                format!("HTTP {status}: unreadable body: {e}"),
            )
        })?;
        if (200..300).contains(&status) {
            return Ok(Answer::Ok(body));
        }
        let error = ApiError::parse(&body);
        if status >= 500 || error.is_none() {
            let start: String = body.chars().take(300).collect();
            let reason = match &error {
                Some(error) => format!("HTTP {status} {}", error.describe()),
                None => format!("HTTP {status}: {start}"),
            };
            return Err(self.refused(order_no, step, reason));
        }
        Ok(Answer::Error {
            status,
            error: error.unwrap_or_default(),
        })
    }

    fn post(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &Form,
        order_no: &str,
        step: &str,
    ) -> Result<Answer, ProviderError> {
        let request = self
            .agent
            .post(&self.url(path))
            .set("Idempotency-Key", idempotency_key);
        self.call(request, Some(form), order_no, step)
    }

    fn get(&self, path: &str, order_no: &str, step: &str) -> Result<Answer, ProviderError> {
        self.call(self.agent.get(&self.url(path)), None, order_no, step)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        body: &str,
        order_no: &str,
        step: &str,
    ) -> Result<T, ProviderError> {
        serde_json::from_str(body)
            .map_err(|e| self.refused(order_no, step, format!("unreadable answer: {e}")))
    }

    fn error_reason(status: u16, error: &ApiError) -> String {
        format!("HTTP {status} {}", error.describe())
    }

    /// Retrieves a session: `None` when Stripe has no such session.
    fn retrieve(
        &self,
        session_id: &str,
        order_no: &str,
        step: &str,
    ) -> Result<Option<Session>, ProviderError> {
        match self.get(&Self::session_path(session_id), order_no, step)? {
            Answer::Ok(body) => Ok(Some(self.parse(&body, order_no, step)?)),
            Answer::Error { status, error, .. } if status == 404 || error.is_resource_missing() => {
                Ok(None)
            }
            Answer::Error { status, error, .. } => {
                Err(self.refused(order_no, step, Self::error_reason(status, &error)))
            }
        }
    }

    /// What a session that could not be expired comes to.
    fn close_outcome(&self, session: &Session, order_no: &str) -> Result<Closed, ProviderError> {
        let state = session
            .state()
            .map_err(|reason| self.refused(order_no, "close", reason))?;
        match state {
            SessionState::Expired => Ok(Closed::Closed),
            SessionState::Paid => session
                .report(TradeStatus::Paid, None)
                .map(Closed::Paid)
                .map_err(|reason| self.refused(order_no, "close", reason)),
            // The payer submitted an asynchronous method: the session cannot be expired, and
            // its outcome comes as async_payment_succeeded / _failed. Retried until then.
            SessionState::Processing => Err(self.refused(
                order_no,
                "close",
                format!(
                    "session {} is complete, its payment still processing",
                    session.id
                ),
            )),
            SessionState::Open => Err(self.refused(
                order_no,
                "close",
                format!("session {} is still open after an expire", session.id),
            )),
        }
    }
}

impl Provider for Stripe {
    /// `{"received":true}`.
    fn success_reply(&self) -> super::Reply {
        super::Reply {
            status: 200,
            content_type: Some("application/json"),
            body: br#"{"received":true}"#.to_vec(),
        }
    }

    /// The engine's error envelope.
    fn failure_reply(&self, _status: u16, _code: &str, _message: &str) -> Option<super::Reply> {
        None
    }

    fn name(&self) -> ProviderName {
        ProviderName::Stripe
    }

    fn start(&self, request: &StartRequest) -> Result<Started, ProviderError> {
        let order_no = request.order_no.as_str();
        let form = transformers::create_session_form(request);
        match self.post(
            "/v1/checkout/sessions",
            &request.idempotency_key,
            &form,
            order_no,
            "start",
        )? {
            Answer::Ok(body) => {
                let session: Session = self.parse(&body, order_no, "start")?;
                let url = session
                    .url
                    .clone()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        self.refused(
                            order_no,
                            "start",
                            format!("session {} has no url", session.id),
                        )
                    })?;
                Ok(Started {
                    pay_url: Some(url),
                    code_url: None,
                    provider_ref: Some(session.id),
                })
            }
            Answer::Error { status, error, .. } => {
                Err(self.refused(order_no, "start", Self::error_reason(status, &error)))
            }
        }
    }

    fn verify(&self, request: &NotifyRequest<'_>) -> Result<Notified, NotifyError> {
        let header = (request.headers)("stripe-signature")
            .ok_or_else(|| NotifyError::Unauthentic("no Stripe-Signature header".into()))?;
        transformers::verify_signature(
            &header,
            request.body,
            &self.settings.webhook_secret,
            request.now_unix,
            request.tolerance_secs,
        )?;
        let event: Event = serde_json::from_slice(request.body)
            .map_err(|e| NotifyError::Malformed(format!("stripe event: {e}")))?;
        // A test-mode event at a live key's endpoint (or the reverse) is not this account's.
        if let (Some(key_live), Some(event_live)) = (
            transformers::key_livemode(&self.settings.secret_key),
            event.livemode,
        ) {
            if key_live != event_live {
                return Err(NotifyError::Unauthentic(format!(
                    "stripe event {}: livemode {event_live} does not match the secret key's mode",
                    event.id
                )));
            }
        }
        if !transformers::is_session_event(&event.kind) {
            return Ok(Notified::Acknowledge(format!(
                "stripe event {} of type {} is not used",
                event.id, event.kind
            )));
        }
        if event.data.object.get("object").and_then(|o| o.as_str()) != Some("checkout.session") {
            return Err(NotifyError::Malformed(format!(
                "stripe event {} of type {} does not hold a checkout.session",
                event.id, event.kind
            )));
        }
        let session: Session = serde_json::from_value(event.data.object.clone()).map_err(|e| {
            NotifyError::Malformed(format!("stripe event {}: session: {e}", event.id))
        })?;
        let status = match transformers::event_meaning(&event.kind, &session) {
            EventMeaning::Paid => TradeStatus::Paid,
            EventMeaning::Closed => TradeStatus::Closed,
            EventMeaning::Processing => {
                return Ok(Notified::Acknowledge(format!(
                    "stripe event {}: session {} completed with payment_status {}: its outcome comes in a later event",
                    event.id,
                    session.id,
                    session.payment_status.as_deref().unwrap_or("missing")
                )))
            }
            EventMeaning::Other => {
                return Ok(Notified::Acknowledge(format!(
                    "stripe event {} of type {} is not used",
                    event.id, event.kind
                )))
            }
        };
        let paid_at = match status {
            TradeStatus::Paid => Some(transformers::from_unix_seconds(event.created).ok_or_else(
                || {
                    NotifyError::Malformed(format!(
                        "stripe event {}: created {} is not a time",
                        event.id, event.created
                    ))
                },
            )?),
            TradeStatus::Closed => None,
        };
        session
            .report(status, paid_at)
            .map(Notified::Trade)
            .map_err(|reason| {
                NotifyError::Malformed(format!("stripe event {}: {reason}", event.id))
            })
    }

    fn close(&self, trade: &TradeRef) -> Result<Closed, ProviderError> {
        let order_no = trade.order_no.as_str();
        let Some(session_id) = trade.provider_ref.as_deref().filter(|id| !id.is_empty()) else {
            return Ok(Closed::NoSuchTrade);
        };
        let path = format!("{}/expire", Self::session_path(session_id));
        let key = transformers::expire_idempotency_key(session_id);
        match self.post(&path, &key, &Form::new(), order_no, "close")? {
            Answer::Ok(body) => {
                let session: Session = self.parse(&body, order_no, "close")?;
                self.close_outcome(&session, order_no)
            }
            Answer::Error { status, error, .. } if status == 404 || error.is_resource_missing() => {
                Ok(Closed::NoSuchTrade)
            }
            // "Only Checkout Sessions with a status in ["open"] can be expired": see what it is.
            Answer::Error { status: 400, .. } => {
                match self.retrieve(session_id, order_no, "close")? {
                    Some(session) => self.close_outcome(&session, order_no),
                    None => Ok(Closed::NoSuchTrade),
                }
            }
            Answer::Error { status, error, .. } => {
                Err(self.refused(order_no, "close", Self::error_reason(status, &error)))
            }
        }
    }

    fn refund(&self, refund: &RefundRequest) -> Result<(), ProviderError> {
        let order_no = refund.order_no.as_str();
        let form = transformers::refund_form(
            &refund.trade_no,
            refund.amount_cents,
            &refund.refund_no,
            order_no,
        );
        match self.post("/v1/refunds", &refund.refund_no, &form, order_no, "refund")? {
            Answer::Ok(body) => {
                let taken: Refund = self.parse(&body, order_no, "refund")?;
                if taken.taken() {
                    Ok(())
                } else {
                    Err(self.refused(
                        order_no,
                        "refund",
                        format!(
                            "refund {} of {} is {}",
                            taken.id,
                            refund.trade_no,
                            taken.status.as_deref().unwrap_or("without a status")
                        ),
                    ))
                }
            }
            // The payment is refunded whole already: the money is back, which is what was asked.
            Answer::Error { error, .. }
                if error.code.as_deref() == Some("charge_already_refunded") =>
            {
                Ok(())
            }
            Answer::Error { status, error, .. } => Err(self.refused(
                order_no,
                "refund",
                format!(
                    "{} of {}",
                    Self::error_reason(status, &error),
                    refund.trade_no
                ),
            )),
        }
    }

    fn query(&self, trade: &TradeRef) -> Result<Queried, ProviderError> {
        let order_no = trade.order_no.as_str();
        let Some(session_id) = trade.provider_ref.as_deref().filter(|id| !id.is_empty()) else {
            return Ok(Queried::NotFound);
        };
        let Some(session) = self.retrieve(session_id, order_no, "query")? else {
            return Ok(Queried::NotFound);
        };
        let state = session
            .state()
            .map_err(|reason| self.refused(order_no, "query", reason))?;
        let status = match state {
            SessionState::Open | SessionState::Processing => return Ok(Queried::Open),
            SessionState::Paid => TradeStatus::Paid,
            SessionState::Expired => TradeStatus::Closed,
        };
        session
            .report(status, None)
            .map(Queried::Report)
            .map_err(|reason| self.refused(order_no, "query", reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_escaped_in_paths() {
        assert_eq!(
            Stripe::session_path("cs_test_a1-B2"),
            "/v1/checkout/sessions/cs_test_a1-B2"
        );
        assert_eq!(
            Stripe::session_path("../v1/refunds"),
            "/v1/checkout/sessions/%2E%2E%2Fv1%2Frefunds"
        );
    }

    fn adapter() -> Stripe {
        Stripe::new(
            &StripeSettings {
                secret_key: "sk_test_x".into(),
                webhook_secret: "whsec_test_endpoint".into(),
                api_base: "http://127.0.0.1:9".into(),
            },
            std::time::Duration::from_millis(200),
        )
        .unwrap()
    }

    fn event(kind: &str, status: &str, payment_status: &str, intent: Option<&str>) -> Vec<u8> {
        serde_json::json!({
            "id": "evt_1", "object": "event", "api_version": STRIPE_VERSION,
            "created": 1_796_256_000, "livemode": false, "type": kind,
            "data": {"object": {
                "id": "cs_test_1", "object": "checkout.session", "status": status,
                "payment_status": payment_status, "client_reference_id": "ord_1",
                "metadata": {"order_no": "ord_1"}, "payment_intent": intent,
                "amount_total": 12345, "currency": "cny", "mode": "payment"
            }}
        })
        .to_string()
        .into_bytes()
    }

    fn verify(body: &[u8]) -> Result<Notified, NotifyError> {
        let now = 1_796_256_010;
        let header = format!(
            "t={now},v1={}",
            transformers::signature_hex("whsec_test_endpoint", &now.to_string(), body)
        );
        let headers = move |name: &str| (name == "stripe-signature").then(|| header.clone());
        adapter().verify(&NotifyRequest {
            headers: &headers,
            body,
            now_unix: now,
            tolerance_secs: 300,
        })
    }

    #[test]
    fn each_session_event_reads_as_the_spec_says() {
        let paid_at = transformers::from_unix_seconds(1_796_256_000);
        let paid = |body: Vec<u8>| match verify(&body).unwrap() {
            Notified::Trade(report) => report,
            other => panic!("{other:?}"),
        };
        let report = paid(event(
            "checkout.session.completed",
            "complete",
            "paid",
            Some("pi_1"),
        ));
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.trade_no, "pi_1");
        assert_eq!(report.paid_at, paid_at);
        assert_eq!(report.provider_ref.as_deref(), Some("cs_test_1"));
        let report = paid(event(
            "checkout.session.async_payment_succeeded",
            "complete",
            "paid",
            Some("pi_1"),
        ));
        assert_eq!(report.status, TradeStatus::Paid);
        let report = paid(event(
            "checkout.session.async_payment_failed",
            "complete",
            "unpaid",
            Some("pi_1"),
        ));
        assert_eq!(
            (report.status, report.trade_no.as_str()),
            (TradeStatus::Closed, "pi_1")
        );
        let report = paid(event("checkout.session.expired", "expired", "unpaid", None));
        assert_eq!(
            (report.status, report.trade_no.as_str()),
            (TradeStatus::Closed, "cs_test_1")
        );
        assert_eq!(report.paid_at, None);
        // An asynchronous method still processing, and a type the engine does not use.
        for body in [
            event(
                "checkout.session.completed",
                "complete",
                "unpaid",
                Some("pi_1"),
            ),
            event("charge.refunded", "complete", "paid", Some("pi_1")),
        ] {
            assert!(matches!(verify(&body), Ok(Notified::Acknowledge(_))));
        }
        // Authentic but unreadable: 400, not 401.
        assert!(matches!(
            verify(b"not json"),
            Err(NotifyError::Malformed(_))
        ));
        let no_intent = event("checkout.session.completed", "complete", "paid", None);
        assert!(matches!(verify(&no_intent), Err(NotifyError::Malformed(_))));
    }

    #[test]
    fn failures_name_the_order_and_the_step() {
        let stripe = Stripe::new(
            &StripeSettings {
                secret_key: "sk_test_x".into(),
                webhook_secret: "whsec_x".into(),
                api_base: "http://127.0.0.1:9".into(),
            },
            std::time::Duration::from_millis(200),
        )
        .unwrap();
        let err = stripe.refused("ord_1", "close", "HTTP 400 invalid_request_error/x: y");
        assert_eq!(
            err.to_string(),
            "stripe refused: order ord_1: stripe close: HTTP 400 invalid_request_error/x: y"
        );
    }
}

//! WeChat Pay API v3's adapter (SPEC "Payment providers", wechatpay): Native pay for a QR code,
//! close, refund and query by `out_trade_no`, and the verification of payment notifications.
//!
//! Every request is signed with the merchant's API key (`Authorization: WECHATPAY2-SHA256-
//! RSA2048 ...`); every answer WeChat Pay signs (all of them once our request's signature has
//! passed) is checked with the WeChat Pay public key whose id `Wechatpay-Serial` names, and a
//! 2xx without a good signature is refused, as the protocol says a forged answer looks like
//! that. Wire formats live in [`transformers`]; the engine sees only `providers` types.

pub mod transformers;

use std::io::Read as _;

use ring::aead;

use self::transformers as wire;
use super::keys::{SigningKey, VerifyingKey};
use super::{
    Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, ProviderName, Queried,
    RefundRequest, StartRequest, Started, TradeRef, TradeReport, TradeStatus,
};
use crate::config::WechatpaySettings;

/// How far a response's `Wechatpay-Timestamp` may be from our clock: the 5 minutes WeChat
/// Pay's own SDKs allow, so a replayed old answer is refused.
const RESPONSE_TOLERANCE_SECS: i64 = 300;

/// Bytes of an answer read at most: WeChat Pay's answers are small; a runaway body is refused.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

const USER_AGENT: &str = concat!(
    "order-engine/",
    env!("CARGO_PKG_VERSION"),
    " (WeChat Pay API v3)"
);

/// The characters escaped in an `out_trade_no` placed in a URL path (order numbers are
/// `[0-9A-Za-z_-|*]`, but an escape costs nothing and keeps the signed path the sent one).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub struct Wechatpay {
    settings: WechatpaySettings,
    merchant_key: SigningKey,
    platform_key: VerifyingKey,
    agent: ureq::Agent,
}

/// An answer of WeChat Pay, its signature checked where it has one.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// Whether `Wechatpay-Signature` verified (with our `platform_serial`, in time). A 2xx
    /// that is not authentic never leaves [`Wechatpay::call`].
    authentic: bool,
    /// Why not, for the reason of a refusal.
    signature_problem: Option<String>,
}

impl Answer {
    /// The `code` of an error body, if it has one.
    fn error_code(&self) -> Option<wire::ErrorResponse> {
        serde_json::from_slice(&self.body).ok()
    }

    fn describe(&self) -> String {
        match self.error_code() {
            Some(e) => format!(
                "HTTP {} {}: {}",
                self.status,
                e.code,
                e.message.unwrap_or_default()
            ),
            None => {
                let text: String = String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect();
                format!("HTTP {} {text}", self.status)
            }
        }
    }

    /// Whether this is an authentic error answer with `code`.
    fn is_error(&self, code: &str) -> bool {
        self.authentic && self.error_code().is_some_and(|e| e.code == code)
    }
}

impl Wechatpay {
    /// The adapter for `settings` (keys already validated by config); `timeout` bounds every
    /// call.
    pub fn new(settings: &WechatpaySettings, timeout: std::time::Duration) -> Result<Self, String> {
        let merchant_key = SigningKey::parse(&settings.merchant_private_key)
            .map_err(|e| format!("providers.wechatpay.merchant_private_key: {e}"))?;
        let platform_key = VerifyingKey::parse(&settings.platform_public_key)
            .map_err(|e| format!("providers.wechatpay.platform_public_key: {e}"))?;
        if settings.apiv3_key.len() != 32 {
            return Err("providers.wechatpay.apiv3_key: must be 32 bytes".into());
        }
        Ok(Wechatpay {
            settings: settings.clone(),
            merchant_key,
            platform_key,
            agent: super::agent(timeout),
        })
    }

    fn refused(&self, order_no: &str, reason: impl std::fmt::Display) -> ProviderError {
        ProviderError::Refused {
            provider: ProviderName::Wechatpay,
            reason: format!("order {order_no}: {reason}"),
        }
    }

    /// Signs and sends one request; reads and checks the answer. Transport failures are
    /// `Unreachable`; a 5xx, an unreadable body or an unsigned 2xx is `Refused`; a 4xx comes
    /// back for the caller to read its code.
    fn call(
        &self,
        what: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&str>,
        order_no: &str,
    ) -> Result<Answer, ProviderError> {
        let timestamp = chrono::Utc::now().timestamp();
        let nonce = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let message = wire::request_message(
            method,
            path_and_query,
            timestamp,
            &nonce,
            body.unwrap_or(""),
        );
        let signature = self
            .merchant_key
            .sign_base64(message.as_bytes())
            .map_err(|e| self.refused(order_no, format!("{what}: cannot sign: {e}")))?;
        let authorization = wire::authorization(
            &self.settings.mch_id,
            &nonce,
            &signature,
            timestamp,
            &self.settings.merchant_serial,
        );
        let url = format!("{}{path_and_query}", self.settings.api_base);
        let request = self
            .agent
            .request(method, &url)
            .set("Authorization", &authorization)
            .set("Accept", "application/json")
            .set("Content-Type", "application/json")
            .set("User-Agent", USER_AGENT);
        let sent = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        let response = match sent {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(t)) => {
                return Err(ProviderError::Unreachable {
                    provider: ProviderName::Wechatpay,
                    reason: format!("order {order_no}: {what}: {t}"),
                })
            }
        };
        let status = response.status();
        let header = |name: &str| response.header(name).map(str::to_string);
        let (timestamp, nonce, signature, serial) = (
            header("Wechatpay-Timestamp"),
            header("Wechatpay-Nonce"),
            header("Wechatpay-Signature"),
            header("Wechatpay-Serial"),
        );
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut body)
            .map_err(|e| {
                self.refused(
                    order_no,
                    format!("{what}: unreadable answer (HTTP {status}): {e}"),
                )
            })?;
        let checked = self.check_response_signature(
            timestamp.as_deref(),
            nonce.as_deref(),
            signature.as_deref(),
            serial.as_deref(),
            &body,
        );
        let answer = Answer {
            status,
            body,
            authentic: checked.is_ok(),
            signature_problem: checked.err(),
        };
        if status >= 500 {
            return Err(self.refused(order_no, format!("{what}: {}", answer.describe())));
        }
        if (200..300).contains(&status) && !answer.authentic {
            return Err(self.refused(
                order_no,
                format!(
                    "{what}: HTTP {status} answer is not WeChat Pay's: {}",
                    answer.signature_problem.clone().unwrap_or_default()
                ),
            ));
        }
        Ok(answer)
    }

    /// The answer's signature: `Wechatpay-Serial` must be our `platform_serial`, the timestamp
    /// within [`RESPONSE_TOLERANCE_SECS`], the signature SHA256withRSA over
    /// `"{timestamp}\n{nonce}\n{body}\n"` with the WeChat Pay public key.
    fn check_response_signature(
        &self,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
        serial: Option<&str>,
        body: &[u8],
    ) -> Result<(), String> {
        let (Some(timestamp), Some(nonce), Some(signature), Some(serial)) =
            (timestamp, nonce, signature, serial)
        else {
            return Err("no Wechatpay-Signature/-Timestamp/-Nonce/-Serial".into());
        };
        if serial != self.settings.platform_serial {
            return Err(format!(
                "signed with key {serial}, not {}",
                self.settings.platform_serial
            ));
        }
        let at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| format!("Wechatpay-Timestamp {timestamp:?} is not Unix seconds"))?;
        if (chrono::Utc::now().timestamp() - at).abs() > RESPONSE_TOLERANCE_SECS {
            return Err(format!("Wechatpay-Timestamp {at} is outside 5 minutes"));
        }
        self.platform_key
            .verify_base64(&wire::response_message(timestamp, nonce, body), signature)
    }

    fn out_trade_no_path(order_no: &str) -> String {
        percent_encoding::utf8_percent_encode(order_no, PATH_SEGMENT).to_string()
    }

    /// A transaction (a query answer or a notification's plaintext) as a report, when it is
    /// paid or closed.
    fn report(
        transaction: &wire::Transaction,
        state: wire::TradeState,
    ) -> Result<TradeReport, String> {
        let status = match state {
            wire::TradeState::Paid => TradeStatus::Paid,
            wire::TradeState::Closed => TradeStatus::Closed,
            wire::TradeState::Open => return Err("the trade is still open".into()),
        };
        let total = transaction.amount.as_ref().and_then(|a| a.total);
        let amount_cents = match (status, total) {
            (_, Some(fen)) => wire::cents_from_fen(fen)?,
            (TradeStatus::Paid, None) => {
                return Err("a paid transaction without amount.total".into())
            }
            // A trade that closed unpaid may come without an amount; nothing is decided on it.
            (TradeStatus::Closed, None) => 0,
        };
        // A trade closed before payment has no transaction_id; its out_trade_no (unique per
        // merchant) names it instead, so the report still has its 1-255 character trade_no.
        let trade_no = match (&transaction.transaction_id, status) {
            (Some(id), _) if !id.is_empty() => id.clone(),
            (_, TradeStatus::Paid) => {
                return Err("a paid transaction without transaction_id".into())
            }
            (_, TradeStatus::Closed) => transaction.out_trade_no.clone(),
        };
        if trade_no.is_empty() || trade_no.len() > 255 {
            return Err(format!(
                "transaction_id {trade_no:?} is not 1-255 characters"
            ));
        }
        let paid_at = match (&transaction.success_time, status) {
            (Some(text), TradeStatus::Paid) => Some(wire::parse_time(text)?),
            _ => None,
        };
        Ok(TradeReport {
            order_no: transaction.out_trade_no.clone(),
            trade_no,
            status,
            amount_cents,
            paid_at,
            provider_ref: None,
        })
    }

    fn post_json<T: serde::Serialize>(
        &self,
        what: &str,
        path: &str,
        body: &T,
        order_no: &str,
    ) -> Result<Answer, ProviderError> {
        let body = serde_json::to_string(body)
            .map_err(|e| self.refused(order_no, format!("{what}: cannot encode: {e}")))?;
        self.call(what, "POST", path, Some(&body), order_no)
    }
}

impl Provider for Wechatpay {
    /// 204 with no body.
    fn success_reply(&self) -> super::Reply {
        super::Reply {
            status: 204,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// `{"code":"FAIL","message"}`.
    fn failure_reply(&self, status: u16, code: &str, message: &str) -> Option<super::Reply> {
        let body = serde_json::json!({"code": "FAIL", "message": format!("{code}: {message}")});
        Some(super::Reply {
            status,
            content_type: Some("application/json"),
            body: body.to_string().into_bytes(),
        })
    }

    fn name(&self) -> ProviderName {
        ProviderName::Wechatpay
    }

    fn start(&self, request: &StartRequest) -> Result<Started, ProviderError> {
        let order_no = request.order_no.as_str();
        let total = wire::fen_from_cents(request.amount_cents)
            .map_err(|e| self.refused(order_no, format!("native pay: {e}")))?;
        let description = wire::description(&request.subject, order_no);
        let body = wire::NativeRequest {
            appid: &self.settings.app_id,
            mchid: &self.settings.mch_id,
            description: &description,
            out_trade_no: order_no,
            time_expire: wire::time_expire(request.provider_expires_at),
            notify_url: &request.notify_url,
            amount: wire::OrderAmount {
                total,
                currency: &request.currency,
            },
        };
        let answer =
            self.post_json("native pay", "/v3/pay/transactions/native", &body, order_no)?;
        if answer.status != 200 {
            return Err(self.refused(order_no, format!("native pay: {}", answer.describe())));
        }
        let native: wire::NativeResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| self.refused(order_no, format!("native pay: unreadable answer: {e}")))?;
        if native.code_url.is_empty() {
            return Err(self.refused(order_no, "native pay: empty code_url"));
        }
        Ok(Started {
            pay_url: None,
            code_url: Some(native.code_url),
            provider_ref: None,
        })
    }

    fn verify(&self, request: &NotifyRequest<'_>) -> Result<Notified, NotifyError> {
        let header = |name: &str| {
            (request.headers)(name)
                .ok_or_else(|| NotifyError::Unauthentic(format!("no {name} header")))
        };
        let timestamp = header("wechatpay-timestamp")?;
        let nonce = header("wechatpay-nonce")?;
        let signature = header("wechatpay-signature")?;
        let serial = header("wechatpay-serial")?;
        if serial.trim() != self.settings.platform_serial {
            return Err(NotifyError::Unauthentic(format!(
                "Wechatpay-Serial {serial} is not the configured WeChat Pay key {}",
                self.settings.platform_serial
            )));
        }
        let at: i64 = timestamp.trim().parse().map_err(|_| {
            NotifyError::Unauthentic(format!(
                "Wechatpay-Timestamp {timestamp:?} is not Unix seconds"
            ))
        })?;
        let tolerance = i64::try_from(request.tolerance_secs).unwrap_or(i64::MAX);
        if request.now_unix.saturating_sub(at).abs() > tolerance {
            return Err(NotifyError::Unauthentic(format!(
                "Wechatpay-Timestamp {at} is more than {tolerance} s from now"
            )));
        }
        self.platform_key
            .verify_base64(
                &wire::response_message(&timestamp, &nonce, request.body),
                &signature,
            )
            .map_err(|e| NotifyError::Unauthentic(format!("Wechatpay-Signature: {e}")))?;

        let envelope: wire::Notification = serde_json::from_slice(request.body)
            .map_err(|e| NotifyError::Malformed(format!("notification body: {e}")))?;
        if envelope.resource.algorithm != wire::RESOURCE_ALGORITHM {
            return Err(NotifyError::Unauthentic(format!(
                "resource algorithm {} is not {}",
                envelope.resource.algorithm,
                wire::RESOURCE_ALGORITHM
            )));
        }
        let plaintext = wire::open_resource(
            &aead::AES_256_GCM,
            self.settings.apiv3_key.as_bytes(),
            &envelope.resource.nonce,
            envelope.resource.associated_data.as_deref().unwrap_or(""),
            &envelope.resource.ciphertext,
        )
        .map_err(|e| NotifyError::Unauthentic(format!("notification {}: {e}", envelope.id)))?;

        if envelope.event_type.starts_with("REFUND.") {
            return Ok(Notified::Acknowledge(format!(
                "refund notice {} ({})",
                envelope.id, envelope.event_type
            )));
        }
        let transaction: wire::Transaction = serde_json::from_slice(&plaintext).map_err(|e| {
            NotifyError::Malformed(format!("notification {} resource: {e}", envelope.id))
        })?;
        if transaction.appid.as_deref() != Some(self.settings.app_id.as_str()) {
            return Err(NotifyError::Unauthentic(format!(
                "notification {}: appid {:?} is not ours",
                envelope.id, transaction.appid
            )));
        }
        if transaction.mchid.as_deref() != Some(self.settings.mch_id.as_str()) {
            return Err(NotifyError::Unauthentic(format!(
                "notification {}: mchid {:?} is not ours",
                envelope.id, transaction.mchid
            )));
        }
        match wire::TradeState::parse(&transaction.trade_state) {
            // A notification says SUCCESS or a failure; REFUND (and any state we do not know)
            // decides nothing here.
            Some(state @ (wire::TradeState::Paid | wire::TradeState::Closed))
                if transaction.trade_state != "REFUND" =>
            {
                Self::report(&transaction, state)
                    .map(Notified::Trade)
                    .map_err(|e| {
                        NotifyError::Malformed(format!(
                            "notification {} for order {}: {e}",
                            envelope.id, transaction.out_trade_no
                        ))
                    })
            }
            _ => Ok(Notified::Acknowledge(format!(
                "notification {} ({}): trade_state {} of order {}",
                envelope.id, envelope.event_type, transaction.trade_state, transaction.out_trade_no
            ))),
        }
    }

    fn close(&self, trade: &TradeRef) -> Result<Closed, ProviderError> {
        let order_no = trade.order_no.as_str();
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            Self::out_trade_no_path(order_no)
        );
        let body = wire::CloseRequest {
            mchid: &self.settings.mch_id,
        };
        let answer = self.post_json("close", &path, &body, order_no)?;
        if (200..300).contains(&answer.status) {
            return Ok(Closed::Closed);
        }
        if answer.is_error("ORDER_NOT_EXIST") {
            return Ok(Closed::NoSuchTrade);
        }
        if answer.is_error("ORDER_CLOSED") || answer.is_error("ORDERCLOSED") {
            return Ok(Closed::Closed);
        }
        if answer.is_error("ORDERPAID") {
            return match self.query(trade)? {
                Queried::Report(report) if report.status == TradeStatus::Paid => {
                    Ok(Closed::Paid(report))
                }
                Queried::Report(_) => Ok(Closed::Closed),
                other => Err(self.refused(
                    order_no,
                    format!("close answered ORDERPAID, but a query finds {other:?}"),
                )),
            };
        }
        Err(self.refused(order_no, format!("close: {}", answer.describe())))
    }

    fn refund(&self, refund: &RefundRequest) -> Result<(), ProviderError> {
        let order_no = refund.order_no.as_str();
        let amount = wire::fen_from_cents(refund.amount_cents)
            .map_err(|e| self.refused(order_no, format!("refund {}: {e}", refund.refund_no)))?;
        let body = wire::RefundBody {
            transaction_id: &refund.trade_no,
            out_refund_no: &refund.refund_no,
            amount: wire::RefundAmount {
                refund: amount,
                total: amount,
                currency: &refund.currency,
            },
        };
        let what = format!("refund {}", refund.refund_no);
        let answer = self.post_json(&what, "/v3/refund/domestic/refunds", &body, order_no)?;
        if answer.status != 200 {
            return Err(self.refused(order_no, format!("{what}: {}", answer.describe())));
        }
        let refunded: wire::RefundResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| self.refused(order_no, format!("{what}: unreadable answer: {e}")))?;
        match refunded.status.as_str() {
            // PROCESSING completes at WeChat Pay without another call from us.
            "SUCCESS" | "PROCESSING" => Ok(()),
            other => Err(self.refused(
                order_no,
                format!(
                    "{what}: refund {} is {other}",
                    refunded.refund_id.unwrap_or_default()
                ),
            )),
        }
    }

    fn query(&self, trade: &TradeRef) -> Result<Queried, ProviderError> {
        let order_no = trade.order_no.as_str();
        let query: String =
            percent_encoding::utf8_percent_encode(&self.settings.mch_id, PATH_SEGMENT).to_string();
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={query}",
            Self::out_trade_no_path(order_no)
        );
        let answer = self.call("query", "GET", &path, None, order_no)?;
        if answer.is_error("ORDER_NOT_EXIST") {
            return Ok(Queried::NotFound);
        }
        if answer.status != 200 {
            return Err(self.refused(order_no, format!("query: {}", answer.describe())));
        }
        let transaction: wire::Transaction = serde_json::from_slice(&answer.body)
            .map_err(|e| self.refused(order_no, format!("query: unreadable answer: {e}")))?;
        if transaction.out_trade_no != order_no {
            return Err(self.refused(
                order_no,
                format!(
                    "query answered for out_trade_no {}",
                    transaction.out_trade_no
                ),
            ));
        }
        match wire::TradeState::parse(&transaction.trade_state) {
            Some(wire::TradeState::Open) => Ok(Queried::Open),
            Some(state) => Self::report(&transaction, state)
                .map(Queried::Report)
                .map_err(|e| self.refused(order_no, format!("query: {e}"))),
            None => Err(self.refused(
                order_no,
                format!("query: unknown trade_state {}", transaction.trade_state),
            )),
        }
    }
}

//! Alipay's adapter: the OpenAPI `gateway.do` protocol with RSA2 (SHA256withRSA) signatures.
//!
//! - Start: `alipay.trade.page.pay` is a signed URL built here; no call is made (Alipay creates
//!   the trade when the payer first opens it, and `time_expire` bars a payment after the
//!   provider-side expiry).
//! - Close, refund, query: `alipay.trade.close` / `.refund` / `.query`, POSTed form-encoded to
//!   the gateway; each answer's `sign` is checked with Alipay's public key over the exact text
//!   of its `xxx_response` member.
//! - Notifications: form-encoded, signed over the sorted parameters without `sign` and
//!   `sign_type`; `sign_type` must be `RSA2` and `app_id` ours.
//!
//! Wire formats are in [`transformers`]; this file maps them to the engine's types.

pub mod transformers;

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use super::keys::{SigningKey, VerifyingKey};
use super::{
    Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, ProviderName, Queried,
    RefundRequest, StartRequest, Started, TradeRef, TradeReport, TradeStatus,
};
use crate::config::AlipaySettings;
use transformers::{
    cents, cst_time, notification_sign_content, parse_cst_time, request_sign_content, split_answer,
    yuan, GatewayAnswer, PagePayContent, RefundContent, TradeContent,
};

const PAGE_PAY: &str = "alipay.trade.page.pay";
const CLOSE: &str = "alipay.trade.close";
const REFUND: &str = "alipay.trade.refund";
const QUERY: &str = "alipay.trade.query";

/// Page pay's product code (电脑网站支付).
const PRODUCT_CODE: &str = "FAST_INSTANT_TRADE_PAY";
/// The only signature type the adapter signs with and accepts.
const SIGN_TYPE: &str = "RSA2";
/// `alipay.trade.page.pay` takes a `subject` of at most 256 characters.
const SUBJECT_MAX_CHARS: usize = 256;
/// Characters page pay's `subject` must not hold ("不可使用特殊字符，如 /，=，& 等").
const SUBJECT_FORBIDDEN: [char; 3] = ['/', '=', '&'];

const TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";
const TRADE_STATUS_ERROR: &str = "ACQ.TRADE_STATUS_ERROR";

pub struct Alipay {
    app_id: String,
    app_key: SigningKey,
    alipay_key: VerifyingKey,
    gateway_url: String,
    agent: ureq::Agent,
}

impl Alipay {
    /// The adapter for `settings` (whose keys config already checked); `timeout` bounds every
    /// call.
    pub fn new(settings: &AlipaySettings, timeout: std::time::Duration) -> Result<Self, String> {
        Ok(Alipay {
            app_id: settings.app_id.clone(),
            app_key: SigningKey::parse(&settings.app_private_key)
                .map_err(|e| format!("providers.alipay.app_private_key: {e}"))?,
            alipay_key: VerifyingKey::parse(&settings.alipay_public_key)
                .map_err(|e| format!("providers.alipay.alipay_public_key: {e}"))?,
            gateway_url: settings.gateway_url.clone(),
            agent: super::agent(timeout),
        })
    }

    fn refused(order_no: &str, method: &str, detail: impl std::fmt::Display) -> ProviderError {
        ProviderError::Refused {
            provider: ProviderName::Alipay,
            reason: format!("order {order_no}: {method}: {detail}"),
        }
    }

    /// The common request parameters of `method` with `biz_content`, signed.
    fn signed_params(
        &self,
        method: &'static str,
        biz_content: String,
        notify_url: Option<&str>,
        now: NaiveDateTime,
    ) -> Result<Vec<(&'static str, String)>, String> {
        let mut params: Vec<(&'static str, String)> = vec![
            ("app_id", self.app_id.clone()),
            ("method", method.to_string()),
            ("format", "JSON".to_string()),
            ("charset", "utf-8".to_string()),
            ("sign_type", SIGN_TYPE.to_string()),
            ("timestamp", cst_time(now)),
            ("version", "1.0".to_string()),
        ];
        if let Some(url) = notify_url {
            params.push(("notify_url", url.to_string()));
        }
        params.push(("biz_content", biz_content));
        let content = request_sign_content(params.iter().map(|(k, v)| (*k, v.as_str())));
        let sign = self.app_key.sign_base64(content.as_bytes())?;
        params.push(("sign", sign));
        Ok(params)
    }

    /// Calls `method` at the gateway and returns its answer once its signature checks — a
    /// success or a business error alike; only a transport failure is `Unreachable`.
    fn call(
        &self,
        order_no: &str,
        method: &'static str,
        biz_content: String,
    ) -> Result<GatewayAnswer, ProviderError> {
        let now = chrono::Utc::now().naive_utc();
        let params = self
            .signed_params(method, biz_content, None, now)
            .map_err(|e| Self::refused(order_no, method, e))?;
        let form =
            serde_urlencoded::to_string(&params).map_err(|e| Self::refused(order_no, method, e))?;
        let response = self
            .agent
            .post(&self.gateway_url)
            .set(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .send_string(&form)
            .map_err(|e| match super::call_error(ProviderName::Alipay, e) {
                ProviderError::Unreachable { provider, reason } => ProviderError::Unreachable {
                    provider,
                    reason: format!("order {order_no}: {method}: {reason}"),
                },
                ProviderError::Refused { reason, .. } => Self::refused(order_no, method, reason),
            })?;
        let body = response
            .into_string()
            .map_err(|e| Self::refused(order_no, method, format!("unreadable body: {e}")))?;
        self.read_answer(order_no, method, &body)
    }

    /// An answer's response object, once its signature checks.
    fn read_answer(
        &self,
        order_no: &str,
        method: &str,
        body: &str,
    ) -> Result<GatewayAnswer, ProviderError> {
        let unreadable = |e: String| {
            let start: String = body.chars().take(200).collect();
            Self::refused(
                order_no,
                method,
                format!("unreadable answer ({e}): {start}"),
            )
        };
        let split = split_answer(body, method).map_err(unreadable)?;
        let answer: GatewayAnswer =
            serde_json::from_str(split.content).map_err(|e| unreadable(e.to_string()))?;
        let Some(sign) = split.sign else {
            // Alipay leaves the signature off gateway errors (a bad request signature, an
            // unknown app); nothing unsigned is believed, so this is a refusal either way.
            return Err(Self::refused(
                order_no,
                method,
                format!("unsigned answer {}", answer.describe()),
            ));
        };
        let checks = |content: &str| {
            self.alipay_key
                .verify_base64(content.as_bytes(), &sign)
                .is_ok()
        };
        // As Alipay's SDKs do: a signature made over the text with `\/` unescaped also counts.
        let verified = checks(split.content)
            || (split.content.contains("\\/") && checks(&split.content.replace("\\/", "/")));
        if !verified {
            return Err(Self::refused(
                order_no,
                method,
                format!("answer signature does not verify ({})", answer.code),
            ));
        }
        Ok(answer)
    }

    /// What a query answer says about `order_no`'s trade.
    fn queried(order_no: &str, answer: &GatewayAnswer) -> Result<Queried, ProviderError> {
        if !answer.is_success() {
            return match answer.error_code() {
                TRADE_NOT_EXIST => Ok(Queried::NotFound),
                _ => Err(Self::refused(order_no, QUERY, answer.describe())),
            };
        }
        if let Some(other) = answer.out_trade_no.as_deref().filter(|o| *o != order_no) {
            return Err(Self::refused(
                order_no,
                QUERY,
                format!("answer is about out_trade_no {other}"),
            ));
        }
        let status = match answer.trade_status.as_deref() {
            Some("WAIT_BUYER_PAY") => return Ok(Queried::Open),
            Some("TRADE_SUCCESS") | Some("TRADE_FINISHED") => TradeStatus::Paid,
            Some("TRADE_CLOSED") => TradeStatus::Closed,
            other => {
                return Err(Self::refused(
                    order_no,
                    QUERY,
                    format!("unknown trade_status {other:?}"),
                ))
            }
        };
        let trade_no = answer
            .trade_no
            .clone()
            .filter(|t| (1..=255).contains(&t.chars().count()))
            .ok_or_else(|| Self::refused(order_no, QUERY, "answer without a usable trade_no"))?;
        let amount_cents = answer
            .total_amount
            .as_deref()
            .and_then(cents)
            .ok_or_else(|| {
                Self::refused(
                    order_no,
                    QUERY,
                    format!("bad total_amount {:?}", answer.total_amount),
                )
            })?;
        let paid_at = match (status, answer.send_pay_date.as_deref()) {
            (TradeStatus::Paid, Some(text)) => Some(parse_cst_time(text).ok_or_else(|| {
                Self::refused(order_no, QUERY, format!("bad send_pay_date {text:?}"))
            })?),
            _ => None,
        };
        Ok(Queried::Report(TradeReport {
            order_no: order_no.to_string(),
            trade_no,
            status,
            amount_cents,
            paid_at,
            provider_ref: None,
        }))
    }
}

/// The order's subject as page pay takes it: the forbidden characters as spaces, at most 256
/// characters (a course title may well be "C/C++ & Rust").
fn page_pay_subject(subject: &str) -> String {
    subject
        .chars()
        .map(|c| {
            if SUBJECT_FORBIDDEN.contains(&c) {
                ' '
            } else {
                c
            }
        })
        .take(SUBJECT_MAX_CHARS)
        .collect()
}

fn to_json(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

impl Provider for Alipay {
    /// `success` as text/plain (Alipay retries anything else).
    fn success_reply(&self) -> super::Reply {
        super::Reply {
            status: 200,
            content_type: Some("text/plain; charset=utf-8"),
            body: b"success".to_vec(),
        }
    }

    fn failure_reply(&self, status: u16, _code: &str, _message: &str) -> Option<super::Reply> {
        Some(super::Reply {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: b"fail".to_vec(),
        })
    }

    fn name(&self) -> ProviderName {
        ProviderName::Alipay
    }

    fn start(&self, request: &StartRequest) -> Result<Started, ProviderError> {
        let refused = |e: String| Self::refused(&request.order_no, PAGE_PAY, e);
        let content = PagePayContent {
            out_trade_no: &request.order_no,
            total_amount: yuan(request.amount_cents),
            subject: page_pay_subject(&request.subject),
            product_code: PRODUCT_CODE,
            time_expire: cst_time(request.provider_expires_at),
        };
        let params = self
            .signed_params(
                PAGE_PAY,
                to_json(&content).map_err(refused)?,
                Some(&request.notify_url),
                request.now,
            )
            .map_err(refused)?;
        let query = serde_urlencoded::to_string(&params).map_err(|e| refused(e.to_string()))?;
        let separator = if self.gateway_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(Started {
            pay_url: Some(format!("{}{separator}{query}", self.gateway_url)),
            code_url: None,
            provider_ref: None,
        })
    }

    /// `request.now_unix` and `tolerance_secs` go unused: Alipay's notification protocol has
    /// no freshness check (`notify_time` is informative, and Alipay retries a notification for
    /// about a day).
    fn verify(&self, request: &NotifyRequest<'_>) -> Result<Notified, NotifyError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(request.body)
            .map_err(|_| NotifyError::Unauthentic("not a form body: nothing to check".into()))?;
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in pairs {
            if params.contains_key(&name) {
                // Which of the two was signed is unknowable.
                return Err(NotifyError::Unauthentic(format!(
                    "parameter {name} appears twice"
                )));
            }
            params.insert(name, value);
        }
        let order = params
            .get("out_trade_no")
            .map(|o| format!(" for order {o}"))
            .unwrap_or_default();
        let unauthentic =
            |why: &str| NotifyError::Unauthentic(format!("alipay notification{order}: {why}"));
        let malformed =
            |why: String| NotifyError::Malformed(format!("alipay notification{order}: {why}"));

        let sign = params
            .get("sign")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthentic("no sign"))?;
        match params.get("sign_type").map(String::as_str) {
            Some(SIGN_TYPE) => {}
            other => return Err(unauthentic(&format!("sign_type {other:?} is not RSA2"))),
        }
        let content =
            notification_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.alipay_key
            .verify_base64(content.as_bytes(), sign)
            .map_err(|e| unauthentic(&e))?;
        if params.get("app_id") != Some(&self.app_id) {
            return Err(unauthentic(&format!(
                "app_id {:?} is not ours",
                params.get("app_id")
            )));
        }

        let field = |name: &str| {
            params
                .get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| malformed(format!("no {name}")))
        };
        let status = match field("trade_status")?.as_str() {
            "TRADE_SUCCESS" | "TRADE_FINISHED" => TradeStatus::Paid,
            "TRADE_CLOSED" => TradeStatus::Closed,
            "WAIT_BUYER_PAY" => {
                return Ok(Notified::Acknowledge(format!(
                    "alipay notification{order}: WAIT_BUYER_PAY"
                )))
            }
            other => return Err(malformed(format!("unknown trade_status {other:?}"))),
        };
        let order_no = field("out_trade_no")?.clone();
        let trade_no = field("trade_no")?.clone();
        if trade_no.chars().count() > 255 {
            return Err(malformed("trade_no longer than 255 characters".into()));
        }
        let total_amount = field("total_amount")?;
        let amount_cents = cents(total_amount)
            .ok_or_else(|| malformed(format!("total_amount {total_amount:?} is not yuan")))?;
        let paid_at = match params.get("gmt_payment").filter(|v| !v.is_empty()) {
            Some(text) => Some(
                parse_cst_time(text)
                    .ok_or_else(|| malformed(format!("gmt_payment {text:?} is not a time")))?,
            ),
            None => None,
        };
        Ok(Notified::Trade(TradeReport {
            order_no,
            trade_no,
            status,
            amount_cents,
            paid_at: if status == TradeStatus::Paid {
                paid_at
            } else {
                None
            },
            provider_ref: None,
        }))
    }

    fn close(&self, trade: &TradeRef) -> Result<Closed, ProviderError> {
        let order_no = &trade.order_no;
        let content = to_json(&TradeContent {
            out_trade_no: order_no,
        })
        .map_err(|e| Self::refused(order_no, CLOSE, e))?;
        let answer = self.call(order_no, CLOSE, content)?;
        if answer.is_success() {
            return Ok(Closed::Closed);
        }
        match answer.error_code() {
            TRADE_NOT_EXIST => Ok(Closed::NoSuchTrade),
            // Paid (or already closed, or refunded): the query says which.
            TRADE_STATUS_ERROR => match self.query(trade)? {
                Queried::Report(report) if report.status == TradeStatus::Paid => {
                    Ok(Closed::Paid(report))
                }
                Queried::Report(_) => Ok(Closed::Closed),
                Queried::NotFound => Ok(Closed::NoSuchTrade),
                Queried::Open => Err(Self::refused(
                    order_no,
                    CLOSE,
                    format!("{} yet the trade is WAIT_BUYER_PAY", answer.describe()),
                )),
            },
            _ => Err(Self::refused(order_no, CLOSE, answer.describe())),
        }
    }

    fn refund(&self, refund: &RefundRequest) -> Result<(), ProviderError> {
        let order_no = &refund.order_no;
        if refund.currency != "CNY" {
            return Err(Self::refused(
                order_no,
                REFUND,
                format!("Alipay refunds CNY, not {}", refund.currency),
            ));
        }
        let content = to_json(&RefundContent {
            out_trade_no: order_no,
            trade_no: &refund.trade_no,
            refund_amount: yuan(refund.amount_cents),
            out_request_no: &refund.refund_no,
        })
        .map_err(|e| Self::refused(order_no, REFUND, e))?;
        let answer = self.call(order_no, REFUND, content)?;
        // A repeated out_request_no answers success with fund_change N: refunded once, done.
        if answer.is_success() {
            Ok(())
        } else {
            Err(Self::refused(order_no, REFUND, answer.describe()))
        }
    }

    fn query(&self, trade: &TradeRef) -> Result<Queried, ProviderError> {
        let order_no = &trade.order_no;
        let content = to_json(&TradeContent {
            out_trade_no: order_no,
        })
        .map_err(|e| Self::refused(order_no, QUERY, e))?;
        let answer = self.call(order_no, QUERY, content)?;
        Self::queried(order_no, &answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const ENGINE_KEY: &str = include_str!("../../../tests/fixtures/providers/engine_key.pem");
    const ENGINE_PUBLIC: &str =
        include_str!("../../../tests/fixtures/providers/engine_key.pub.pem");
    const PROVIDER_KEY: &str = include_str!("../../../tests/fixtures/providers/provider_key.pem");
    const PROVIDER_PUBLIC: &str =
        include_str!("../../../tests/fixtures/providers/provider_key.pub.pem");
    const OTHER_KEY: &str = include_str!("../../../tests/fixtures/providers/other_key.pem");

    const APP_ID: &str = "2021000000000001";

    fn adapter() -> Alipay {
        Alipay::new(
            &AlipaySettings {
                app_id: APP_ID.into(),
                app_private_key: ENGINE_KEY.into(),
                alipay_public_key: PROVIDER_PUBLIC.into(),
                gateway_url: "https://openapi.alipay.com/gateway.do".into(),
            },
            std::time::Duration::from_secs(1),
        )
        .unwrap()
    }

    fn at(h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2025, 3, 1)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
    }

    /// A notification as Alipay's page-pay notification example lays it out
    /// (<https://opendocs.alipay.com/open/270/105902>), signed with `key`.
    fn notification(key: &str, edit: impl FnOnce(&mut Vec<(String, String)>)) -> Vec<u8> {
        let mut params: Vec<(String, String)> = [
            ("gmt_create", "2025-03-01 10:00:00"),
            ("charset", "utf-8"),
            ("seller_email", "seller@example.com"),
            ("subject", "Rust 入门 & more = 100%"),
            ("buyer_id", "2088102169940354"),
            ("invoice_amount", "12.30"),
            ("notify_id", "2025030100222100000000000000000001"),
            (
                "fund_bill_list",
                r#"[{"amount":"12.30","fundChannel":"ALIPAYACCOUNT"}]"#,
            ),
            ("notify_type", "trade_status_sync"),
            ("trade_status", "TRADE_SUCCESS"),
            ("receipt_amount", "12.30"),
            ("app_id", APP_ID),
            ("buyer_pay_amount", "12.30"),
            ("seller_id", "2088102119685838"),
            ("gmt_payment", "2025-03-01 10:00:05"),
            ("notify_time", "2025-03-01 10:00:06"),
            ("version", "1.0"),
            ("out_trade_no", "ORD-1"),
            ("total_amount", "12.30"),
            ("trade_no", "2025030122001400000000000001"),
            ("auth_app_id", APP_ID),
            ("point_amount", "0.00"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        edit(&mut params);
        let content =
            notification_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let sign = SigningKey::parse(key)
            .unwrap()
            .sign_base64(content.as_bytes())
            .unwrap();
        if !params.iter().any(|(k, _)| k == "sign_type") {
            params.push(("sign_type".into(), "RSA2".into()));
        }
        params.push(("sign".into(), sign));
        serde_urlencoded::to_string(&params).unwrap().into_bytes()
    }

    fn verify(body: &[u8]) -> Result<Notified, NotifyError> {
        let headers = |_: &str| None;
        adapter().verify(&NotifyRequest {
            headers: &headers,
            body,
            now_unix: 0,
            tolerance_secs: 300,
        })
    }

    fn set(params: &mut [(String, String)], name: &str, value: &str) {
        for (k, v) in params.iter_mut() {
            if k == name {
                *v = value.to_string();
            }
        }
    }

    #[test]
    fn a_signed_paid_notification_reads_back() {
        let got = verify(&notification(PROVIDER_KEY, |_| {})).unwrap();
        assert_eq!(
            got,
            Notified::Trade(TradeReport {
                order_no: "ORD-1".into(),
                trade_no: "2025030122001400000000000001".into(),
                status: TradeStatus::Paid,
                amount_cents: 1230,
                paid_at: Some(at(2, 0, 5)),
                provider_ref: None,
            })
        );
        let closed = verify(&notification(PROVIDER_KEY, |p| {
            set(p, "trade_status", "TRADE_CLOSED");
            p.retain(|(k, _)| k != "gmt_payment");
        }))
        .unwrap();
        assert!(
            matches!(closed, Notified::Trade(r) if r.status == TradeStatus::Closed && r.paid_at.is_none())
        );
        let finished = verify(&notification(PROVIDER_KEY, |p| {
            set(p, "trade_status", "TRADE_FINISHED")
        }))
        .unwrap();
        assert!(matches!(finished, Notified::Trade(r) if r.status == TradeStatus::Paid));
        let waiting = verify(&notification(PROVIDER_KEY, |p| {
            set(p, "trade_status", "WAIT_BUYER_PAY")
        }))
        .unwrap();
        assert!(matches!(waiting, Notified::Acknowledge(_)));
    }

    #[test]
    fn unauthentic_notifications_are_told_from_malformed_ones() {
        let unauthentic = |body: Vec<u8>| match verify(&body) {
            Err(NotifyError::Unauthentic(why)) => why,
            other => panic!("{other:?}"),
        };
        unauthentic(notification(OTHER_KEY, |_| {}));
        unauthentic(notification(PROVIDER_KEY, |p| {
            p.push(("sign_type".into(), "RSA".into()))
        }));
        let why = unauthentic(notification(PROVIDER_KEY, |p| {
            set(p, "app_id", "2021000000000999")
        }));
        assert!(why.contains("ORD-1") && why.contains("app_id"), "{why}");
        // Changed after signing.
        let body = String::from_utf8(notification(PROVIDER_KEY, |_| {})).unwrap();
        unauthentic(
            body.replace("total_amount=12.30", "total_amount=0.01")
                .into_bytes(),
        );
        unauthentic(b"no-sign=1".to_vec());
        unauthentic(
            String::from_utf8(notification(PROVIDER_KEY, |_| {}))
                .unwrap()
                .replace("&sign=", "&sign=AAAA")
                .into_bytes(),
        );
        // Signed by the engine's own key, which is not Alipay's.
        unauthentic(notification(ENGINE_KEY, |_| {}));

        let malformed = |body: Vec<u8>| match verify(&body) {
            Err(NotifyError::Malformed(why)) => why,
            other => panic!("{other:?}"),
        };
        for bad in ["12.345", "-12.30", "twelve", "1e3", ""] {
            let why = malformed(notification(PROVIDER_KEY, |p| set(p, "total_amount", bad)));
            assert!(why.contains("ORD-1"), "{why}");
        }
        malformed(notification(PROVIDER_KEY, |p| {
            set(p, "trade_status", "TRADE_PENDING")
        }));
        malformed(notification(PROVIDER_KEY, |p| {
            p.retain(|(k, _)| k != "trade_no")
        }));
        malformed(notification(PROVIDER_KEY, |p| {
            set(p, "gmt_payment", "2025-03-01T10:00:05")
        }));
        let _ = ENGINE_PUBLIC;
    }

    #[test]
    fn the_pay_url_is_signed_page_pay() {
        let started = adapter()
            .start(&StartRequest {
                order_no: "ORD-1".into(),
                subject: "C/C++ & Rust = 入门".into(),
                amount_cents: 1230,
                currency: "CNY".into(),
                provider_expires_at: at(2, 29, 0),
                order_expires_at: at(2, 30, 0),
                notify_url: "https://pay.example.com/api/payments/alipay/notify".into(),
                idempotency_key: "k".into(),
                now: at(2, 0, 0),
            })
            .unwrap();
        assert_eq!(started.code_url, None);
        assert_eq!(started.provider_ref, None);
        let url = started.pay_url.unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://openapi.alipay.com/gateway.do");
        let params: BTreeMap<String, String> = serde_urlencoded::from_str(query).unwrap();
        assert_eq!(params["app_id"], APP_ID);
        assert_eq!(params["method"], "alipay.trade.page.pay");
        assert_eq!(params["format"], "JSON");
        assert_eq!(params["charset"], "utf-8");
        assert_eq!(params["sign_type"], "RSA2");
        assert_eq!(params["version"], "1.0");
        assert_eq!(params["timestamp"], "2025-03-01 10:00:00");
        assert_eq!(
            params["notify_url"],
            "https://pay.example.com/api/payments/alipay/notify"
        );
        let biz: serde_json::Value = serde_json::from_str(&params["biz_content"]).unwrap();
        assert_eq!(
            biz,
            serde_json::json!({"out_trade_no": "ORD-1", "total_amount": "12.30",
                "subject": "C C++   Rust   入门", "product_code": "FAST_INSTANT_TRADE_PAY",
                "time_expire": "2025-03-01 10:29:00"})
        );
        let content = request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        VerifyingKey::parse(ENGINE_PUBLIC)
            .unwrap()
            .verify_base64(content.as_bytes(), &params["sign"])
            .unwrap();
    }

    fn signed_answer(method: &str, inner: &str, key: &str) -> String {
        let sign = SigningKey::parse(key)
            .unwrap()
            .sign_base64(inner.as_bytes())
            .unwrap();
        format!(
            r#"{{"{}":{inner},"sign":"{sign}"}}"#,
            transformers::response_member(method)
        )
    }

    #[test]
    fn subjects_fit_page_pay() {
        assert_eq!(page_pay_subject("a/b=c&d"), "a b c d");
        let long = "课".repeat(300);
        assert_eq!(page_pay_subject(&long).chars().count(), 256);
    }

    #[test]
    fn answers_are_believed_only_when_signed_by_alipay() {
        let inner = r#"{"code":"10000","msg":"Success","trade_no":"2025030122001400000000000001","out_trade_no":"ORD-1","trade_status":"TRADE_SUCCESS","total_amount":"12.30","send_pay_date":"2025-03-01 10:00:05"}"#;
        let alipay = adapter();
        let answer = alipay
            .read_answer("ORD-1", QUERY, &signed_answer(QUERY, inner, PROVIDER_KEY))
            .unwrap();
        assert_eq!(
            Alipay::queried("ORD-1", &answer).unwrap(),
            Queried::Report(TradeReport {
                order_no: "ORD-1".into(),
                trade_no: "2025030122001400000000000001".into(),
                status: TradeStatus::Paid,
                amount_cents: 1230,
                paid_at: Some(at(2, 0, 5)),
                provider_ref: None,
            })
        );
        // Re-serialised by a proxy (spaces): no longer the signed text.
        let spaced = signed_answer(QUERY, inner, PROVIDER_KEY).replace("\":\"", "\": \"");
        let refused = alipay.read_answer("ORD-1", QUERY, &spaced).unwrap_err();
        assert!(
            matches!(&refused, ProviderError::Refused { reason, .. } if reason.contains("ORD-1")),
            "{refused:?}"
        );
        assert!(alipay
            .read_answer("ORD-1", QUERY, &signed_answer(QUERY, inner, OTHER_KEY))
            .is_err());
        let unsigned = format!(r#"{{"alipay_trade_query_response":{inner}}}"#);
        assert!(alipay.read_answer("ORD-1", QUERY, &unsigned).is_err());
        // Signed over the text with `/` where the body has `\/`.
        let slashed = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"a/b"}"#;
        let body = signed_answer(QUERY, slashed, PROVIDER_KEY).replace("a/b", "a\\/b");
        let answer = alipay.read_answer("ORD-1", QUERY, &body).unwrap();
        assert_eq!(
            Alipay::queried("ORD-1", &answer).unwrap(),
            Queried::NotFound
        );
    }

    #[test]
    fn query_answers_map_to_trade_states() {
        let read = |inner: &str| {
            let answer: GatewayAnswer = serde_json::from_str(inner).unwrap();
            Alipay::queried("ORD-1", &answer)
        };
        assert_eq!(
            read(r#"{"code":"10000","out_trade_no":"ORD-1","trade_no":"T1","trade_status":"WAIT_BUYER_PAY","total_amount":"12.30"}"#).unwrap(),
            Queried::Open
        );
        assert!(matches!(
            read(r#"{"code":"10000","out_trade_no":"ORD-1","trade_no":"T1","trade_status":"TRADE_CLOSED","total_amount":"12.30"}"#).unwrap(),
            Queried::Report(r) if r.status == TradeStatus::Closed && r.amount_cents == 1230 && r.paid_at.is_none()
        ));
        assert!(matches!(
            read(r#"{"code":"10000","out_trade_no":"ORD-1","trade_no":"T1","trade_status":"TRADE_FINISHED","total_amount":"0.01"}"#).unwrap(),
            Queried::Report(r) if r.status == TradeStatus::Paid && r.amount_cents == 1
        ));
        assert_eq!(
            read(r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}"#)
                .unwrap(),
            Queried::NotFound
        );
        let refused = read(r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"busy"}"#).unwrap_err();
        assert!(
            matches!(&refused, ProviderError::Refused { reason, .. }
                if reason.contains("ORD-1") && reason.contains("ACQ.SYSTEM_ERROR")),
            "{refused:?}"
        );
        assert!(read(r#"{"code":"10000","out_trade_no":"ORD-2","trade_no":"T1","trade_status":"TRADE_SUCCESS","total_amount":"12.30"}"#).is_err());
        assert!(read(r#"{"code":"10000","out_trade_no":"ORD-1","trade_no":"T1","trade_status":"TRADE_SUCCESS","total_amount":"12.301"}"#).is_err());
    }
}

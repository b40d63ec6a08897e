//! The Alipay simulator: Alipay's OpenAPI `gateway.do` on 127.0.0.1, with Alipay's side of
//! the test keys (tests/fixtures/providers/).
//!
//! - `GET /gateway.do?method=alipay.trade.page.pay&...` is the payer opening the engine's pay
//!   URL ([`AlipaySim::visit`]): the signature is checked with the engine's public key and the
//!   trade is created then, as at Alipay (the engine makes no call to start a trade).
//! - `POST /gateway.do` (form-encoded; parameters also read from the query string, as Alipay
//!   does) answers `alipay.trade.close` / `.refund` / `.query`: a request with a bad RSA2
//!   signature or another `app_id` gets Alipay's unsigned `40002` answer; every other answer is
//!   `{"alipay_trade_xxx_response":{...},"sign":"..."}` signed with Alipay's key over the exact
//!   response text.
//! - Notifications are form bodies signed with Alipay's key over the sorted parameters without
//!   `sign` / `sign_type`; each can be built without being sent ([`AlipaySim::pay`],
//!   [`AlipaySim::close_trade`], [`AlipaySim::bad_notification`]) and sent with
//!   [`AlipaySim::send`].
//!
//! The signing strings and amounts are written out here again rather than taken from the
//! adapter, so a mistake in one is not copied into the other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{NaiveDateTime, TimeDelta, Utc};
use order_engine::config::AlipaySettings;
use order_engine::providers::alipay::Alipay;
use order_engine::providers::keys::{read_key_text, SigningKey, VerifyingKey};
use serde_json::{json, Value};

use super::server::{serve, SimRequest, SimResponse};
use super::{Op, SimRefund, SimTrade, Simulator};

/// The app id the engine is configured with.
pub const APP_ID: &str = "2021000000000001";
/// Another app's id (the `wrong_app` notification).
pub const OTHER_APP_ID: &str = "2021000000009999";
/// The seller (merchant) id Alipay puts in its notifications.
const SELLER_ID: &str = "2088102119685838";

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn key_text(name: &str) -> String {
    read_key_text(&format!("@{}", fixture(name))).expect("a fixture key")
}

/// `yyyy-MM-dd HH:mm:ss` in China Standard Time (UTC+8).
fn cst(utc: NaiveDateTime) -> String {
    (utc + TimeDelta::hours(8))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn parse_cst(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t - TimeDelta::hours(8))
}

fn to_yuan(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Alipay's amount rule: a number with at most two decimals, at least 0.01.
fn from_yuan(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 2
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let fraction = format!("{fraction:0<2}");
    Some(whole.parse::<i64>().ok()? * 100 + fraction.parse::<i64>().ok()?)
}

/// Sorted `k=v&...` of the non-empty parameters not in `left_out`.
fn signing_string(params: &BTreeMap<String, String>, left_out: &[&str]) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !left_out.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug, Clone)]
struct Trade {
    order_no: String,
    trade_no: String,
    amount_cents: i64,
    paid_cents: Option<i64>,
    paid_at: Option<NaiveDateTime>,
    refunded_cents: i64,
    expires_at_unix: Option<i64>,
    notify_url: Option<String>,
    subject: String,
    created_at: NaiveDateTime,
    /// `open`, `paid`, `closed`, `refunded`.
    state: &'static str,
}

impl Trade {
    /// Alipay's `trade_status` for this trade (a fully refunded trade is `TRADE_CLOSED`).
    fn trade_status(&self) -> &'static str {
        match self.state {
            "open" => "WAIT_BUYER_PAY",
            "paid" => "TRADE_SUCCESS",
            _ => "TRADE_CLOSED",
        }
    }
}

#[derive(Default)]
struct State {
    trades: HashMap<String, Trade>,
    /// By refund number: one refund each.
    refunds: Vec<SimRefund>,
    fail: HashMap<Op, usize>,
    calls: HashMap<(Op, String), usize>,
    last_notification: Option<String>,
    next_trade: u64,
}

impl State {
    fn new_trade_no(&mut self) -> String {
        self.next_trade += 1;
        // 28 digits like Alipay's: date, a channel part, a sequence.
        format!(
            "{}22001{:015}",
            (Utc::now().naive_utc() + TimeDelta::hours(8)).format("%Y%m%d"),
            self.next_trade
        )
    }

    /// The trade of `order_no`, made up (open, for `amount_cents`) when the engine never
    /// started it.
    fn trade_or_new(&mut self, order_no: &str, amount_cents: i64) -> &mut Trade {
        if !self.trades.contains_key(order_no) {
            let trade_no = self.new_trade_no();
            self.trades.insert(
                order_no.to_string(),
                Trade {
                    order_no: order_no.to_string(),
                    trade_no,
                    amount_cents,
                    paid_cents: None,
                    paid_at: None,
                    refunded_cents: 0,
                    expires_at_unix: None,
                    notify_url: None,
                    subject: format!("order {order_no}"),
                    created_at: Utc::now().naive_utc(),
                    state: "open",
                },
            );
        }
        self.trades
            .get_mut(order_no)
            .expect("the trade just inserted")
    }
}

struct Inner {
    state: Mutex<State>,
    /// Alipay's private key: answers and notifications.
    alipay_key: SigningKey,
    /// Not Alipay's: forged notifications.
    other_key: SigningKey,
    /// The engine's app public key: its requests.
    engine_key: VerifyingKey,
}

/// The Alipay simulator (see the module doc).
#[derive(Clone)]
pub struct AlipaySim {
    port: u16,
    inner: Arc<Inner>,
}

impl AlipaySim {
    /// Starts a simulator on a port of its own.
    pub fn start() -> AlipaySim {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            alipay_key: SigningKey::parse(&key_text("provider_key.pem")).expect("provider key"),
            other_key: SigningKey::parse(&key_text("other_key.pem")).expect("other key"),
            engine_key: VerifyingKey::parse(&key_text("engine_key.pub.pem")).expect("engine key"),
        });
        let handler = inner.clone();
        let port = serve(Arc::new(move |request: &SimRequest| {
            handler.handle(request)
        }));
        AlipaySim { port, inner }
    }

    /// `http://127.0.0.1:<port>/gateway.do`.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}/gateway.do", self.port)
    }

    /// The adapter as the engine would build it from [`Simulator::engine_settings`].
    pub fn adapter(&self) -> Alipay {
        Alipay::new(&self.adapter_settings(), std::time::Duration::from_secs(5))
            .expect("the adapter")
    }

    /// The settings of [`Self::adapter`], keys read from the fixture files.
    pub fn adapter_settings(&self) -> AlipaySettings {
        AlipaySettings {
            app_id: APP_ID.into(),
            app_private_key: key_text("engine_key.pem"),
            alipay_public_key: key_text("provider_key.pub.pem"),
            gateway_url: self.gateway_url(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    /// The payer opens `pay_url` (the engine's signed page-pay URL): the simulator checks it
    /// and creates the trade. Returns the status and body of the "cashier page".
    pub fn visit(&self, pay_url: &str) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(10))
            .build();
        match agent.get(pay_url).call() {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(e) => panic!("visiting {pay_url}: {e}"),
        }
    }

    /// The payer pays `amount_cents` for `order_no`'s trade (made up if never started): the
    /// trade is paid, and the notification Alipay would send is returned (and kept for
    /// [`Simulator::renotify`]), not sent.
    pub fn pay(&self, order_no: &str, amount_cents: i64) -> String {
        let mut state = self.state();
        let trade = state.trade_or_new(order_no, amount_cents);
        trade.paid_cents = Some(amount_cents);
        trade.paid_at = Some(Utc::now().naive_utc());
        trade.state = "paid";
        let trade = trade.clone();
        let body = self
            .inner
            .notification(&trade, "TRADE_SUCCESS", Notice::Good);
        state.last_notification = Some(body.clone());
        body
    }

    /// Alipay closes `order_no`'s trade (its `time_expire` passed): the `TRADE_CLOSED`
    /// notification, returned and kept, not sent.
    pub fn close_trade(&self, order_no: &str) -> String {
        let mut state = self.state();
        let trade = state.trade_or_new(order_no, 0);
        trade.state = "closed";
        let trade = trade.clone();
        let body = self
            .inner
            .notification(&trade, "TRADE_CLOSED", Notice::Good);
        state.last_notification = Some(body.clone());
        body
    }

    /// The notice Alipay sends after a full refund of a paid trade (`TRADE_CLOSED` with
    /// `refund_fee` and `gmt_refund`), built from the trade as it stands; not sent.
    pub fn refund_notice(&self, order_no: &str) -> String {
        let trade = self
            .state()
            .trades
            .get(order_no)
            .cloned()
            .expect("a trade to have been refunded");
        self.inner
            .notification(&trade, "TRADE_CLOSED", Notice::Refunded)
    }

    /// A notification of `order_no` paid with `amount_cents`, wrong in the way `how` says
    /// (`forged`, `tampered`, `stale`, `wrong_app`); the simulator's trades are unchanged.
    pub fn bad_notification(&self, order_no: &str, amount_cents: i64, how: &str) -> String {
        let mut trade = {
            let mut state = self.state();
            match state.trades.get(order_no) {
                Some(trade) => trade.clone(),
                None => {
                    let trade_no = state.new_trade_no();
                    Trade {
                        order_no: order_no.to_string(),
                        trade_no,
                        amount_cents,
                        paid_cents: None,
                        paid_at: None,
                        refunded_cents: 0,
                        expires_at_unix: None,
                        notify_url: None,
                        subject: format!("order {order_no}"),
                        created_at: Utc::now().naive_utc(),
                        state: "open",
                    }
                }
            }
        };
        trade.paid_cents = Some(amount_cents);
        trade.paid_at = Some(Utc::now().naive_utc());
        let notice = match how {
            "forged" => Notice::Forged,
            "tampered" => Notice::Tampered,
            "stale" => Notice::WrongSignType,
            "wrong_app" => Notice::WrongApp,
            other => panic!("no such bad notification: {other}"),
        };
        self.inner.notification(&trade, "TRADE_SUCCESS", notice)
    }

    /// POSTs a notification body to the engine's Alipay route, as Alipay does; the engine's
    /// status and body.
    pub fn send(&self, engine_base: &str, body: &str) -> (u16, String) {
        let url = format!(
            "{}{}",
            engine_base.trim_end_matches('/'),
            order_engine::providers::notify_route(order_engine::providers::ProviderName::Alipay)
        );
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(30))
            .build();
        let sent = agent
            .post(&url)
            .set(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .send_string(body);
        match sent {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(e) => panic!("notifying {url}: {e}"),
        }
    }
}

/// How a notification is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Good,
    /// After a full refund: `refund_fee`, `gmt_refund`, `out_biz_no`.
    Refunded,
    /// Signed with a key that is not Alipay's.
    Forged,
    /// `total_amount` changed after signing.
    Tampered,
    /// `sign_type=RSA` (Alipay's protocol has no notification timestamp to be stale).
    WrongSignType,
    /// Another app's id, correctly signed.
    WrongApp,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A form-encoded notification about `trade`, laid out as Alipay's page-pay notification
    /// (<https://opendocs.alipay.com/open/270/105902>).
    fn notification(&self, trade: &Trade, trade_status: &str, notice: Notice) -> String {
        let now = Utc::now().naive_utc();
        let amount = trade.paid_cents.unwrap_or(trade.amount_cents);
        let app_id = if notice == Notice::WrongApp {
            OTHER_APP_ID
        } else {
            APP_ID
        };
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            params.insert(k.to_string(), v);
        };
        put("notify_time", cst(now));
        put("notify_type", "trade_status_sync".into());
        put(
            "notify_id",
            format!("{}0{}", now.and_utc().timestamp_micros(), trade.trade_no),
        );
        put("charset", "utf-8".into());
        put("version", "1.0".into());
        put("app_id", app_id.into());
        put("auth_app_id", app_id.into());
        put("trade_no", trade.trade_no.clone());
        put("out_trade_no", trade.order_no.clone());
        put("buyer_id", "2088102169940354".into());
        put("buyer_logon_id", "stu***@example.com".into());
        put("seller_id", SELLER_ID.into());
        put("seller_email", "courses@example.com".into());
        put("trade_status", trade_status.into());
        put("total_amount", to_yuan(amount));
        put("subject", trade.subject.clone());
        put("gmt_create", cst(trade.created_at));
        if trade.paid_cents.is_some() {
            put("receipt_amount", to_yuan(amount));
            put("invoice_amount", to_yuan(amount));
            put("buyer_pay_amount", to_yuan(amount));
            put("point_amount", "0.00".into());
            put(
                "fund_bill_list",
                json!([{"amount": to_yuan(amount), "fundChannel": "ALIPAYACCOUNT"}]).to_string(),
            );
            if let Some(paid_at) = trade.paid_at {
                put("gmt_payment", cst(paid_at));
            }
        }
        if trade_status == "TRADE_CLOSED" {
            put("gmt_close", cst(now));
        }
        if notice == Notice::Refunded {
            put("refund_fee", to_yuan(trade.refunded_cents));
            put("gmt_refund", format!("{}.000", cst(now)));
            put("out_biz_no", "refund".into());
        }
        let content = signing_string(&params, &["sign", "sign_type"]);
        let key = if notice == Notice::Forged {
            &self.other_key
        } else {
            &self.alipay_key
        };
        let sign = key.sign_base64(content.as_bytes()).expect("sign");
        params.insert("sign".into(), sign);
        params.insert(
            "sign_type".into(),
            if notice == Notice::WrongSignType {
                "RSA".into()
            } else {
                "RSA2".into()
            },
        );
        if notice == Notice::Tampered {
            params.insert("total_amount".into(), to_yuan(amount + 100));
        }
        serde_urlencoded::to_string(&params).expect("a form body")
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        if request.path() != "/gateway.do" {
            return SimResponse::status(404);
        }
        // Alipay reads the parameters from the query string and the form body alike.
        let mut params: BTreeMap<String, String> =
            serde_urlencoded::from_str::<Vec<(String, String)>>(request.query())
                .unwrap_or_default()
                .into_iter()
                .collect();
        if request.method == "POST" {
            params.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
                    .unwrap_or_default(),
            );
        }
        let method = params.get("method").cloned().unwrap_or_default();
        let op = match method.as_str() {
            "alipay.trade.page.pay" => Op::Start,
            "alipay.trade.close" => Op::Close,
            "alipay.trade.refund" => Op::Refund,
            "alipay.trade.query" => Op::Query,
            _ => {
                return unsigned(
                    "error_response",
                    "40002",
                    "isv.invalid-method",
                    "不存在的方法名",
                )
            }
        };
        let member = format!("{}_response", method.replace('.', "_"));
        {
            let mut state = self.state();
            if let Some(left) = state.fail.get_mut(&op).filter(|n| **n > 0) {
                *left -= 1;
                return SimResponse {
                    status: 500,
                    headers: vec![("Content-Type".into(), "text/plain".into())],
                    body: b"simulated failure".to_vec(),
                };
            }
        }
        let signed = params.get("sign_type").map(String::as_str) == Some("RSA2")
            && params.get("sign").is_some_and(|sign| {
                self.engine_key
                    .verify_base64(signing_string(&params, &["sign"]).as_bytes(), sign)
                    .is_ok()
            });
        if !signed {
            return if op == Op::Start {
                page(400, "isv.invalid-signature 验签出错")
            } else {
                unsigned(
                    &member,
                    "40002",
                    "isv.invalid-signature",
                    "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
                )
            };
        }
        if params.get("app_id").map(String::as_str) != Some(APP_ID) {
            return if op == Op::Start {
                page(400, "isv.invalid-app-id")
            } else {
                unsigned(&member, "40002", "isv.invalid-app-id", "无效的AppID参数")
            };
        }
        let biz: Value = params
            .get("biz_content")
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        let text = |name: &str| biz.get(name).and_then(Value::as_str).map(str::to_string);
        let Some(order_no) = text("out_trade_no") else {
            return self.business_error(&member, "ACQ.INVALID_PARAMETER", "缺少out_trade_no");
        };
        let mut state = self.state();
        *state.calls.entry((op, order_no.clone())).or_default() += 1;
        match op {
            Op::Start => {
                let Some(amount_cents) = text("total_amount").as_deref().and_then(from_yuan) else {
                    return page(400, "ACQ.INVALID_PARAMETER total_amount");
                };
                let expires_at_unix = text("time_expire")
                    .as_deref()
                    .and_then(parse_cst)
                    .map(|t| t.and_utc().timestamp());
                if let Some(existing) = state.trades.get(&order_no) {
                    if existing.amount_cents != amount_cents {
                        return page(400, "ACQ.CONTEXT_INCONSISTENT 交易信息被篡改");
                    }
                    return page(200, &format!("收银台 {order_no} ({})", existing.state));
                }
                let trade = state.trade_or_new(&order_no, amount_cents);
                trade.expires_at_unix = expires_at_unix;
                trade.notify_url = params.get("notify_url").cloned();
                if let Some(subject) = text("subject") {
                    trade.subject = subject;
                }
                page(200, &format!("收银台 {order_no}"))
            }
            Op::Close => {
                let Some(trade) = state.trades.get_mut(&order_no) else {
                    return self.business_error(&member, "ACQ.TRADE_NOT_EXIST", "交易不存在");
                };
                if trade.state != "open" {
                    return self.business_error(
                        &member,
                        "ACQ.TRADE_STATUS_ERROR",
                        "交易状态不合法",
                    );
                }
                trade.state = "closed";
                self.success(
                    &member,
                    json!({"trade_no": trade.trade_no, "out_trade_no": order_no}),
                )
            }
            Op::Refund => {
                let refund_no = text("out_request_no").unwrap_or_default();
                let Some(refund_cents) = text("refund_amount").as_deref().and_then(from_yuan)
                else {
                    return self.business_error(&member, "ACQ.INVALID_PARAMETER", "退款金额");
                };
                let Some(trade) = state.trades.get(&order_no).cloned() else {
                    return self.business_error(&member, "ACQ.TRADE_NOT_EXIST", "交易不存在");
                };
                if text("trade_no").is_some_and(|t| t != trade.trade_no) {
                    return self.business_error(
                        &member,
                        "ACQ.TRADE_NOT_EXIST",
                        "交易号与商户订单号不匹配",
                    );
                }
                let answer = |fund_change: &str, refunded: i64| {
                    json!({"trade_no": trade.trade_no, "out_trade_no": order_no,
                        "buyer_logon_id": "stu***@example.com", "fund_change": fund_change,
                        "refund_fee": to_yuan(refunded), "send_back_fee": to_yuan(refund_cents)})
                };
                // The same out_request_no is the same refund: answered again, not refunded.
                if state
                    .refunds
                    .iter()
                    .any(|r| r.refund_no == refund_no && r.trade_no == trade.trade_no)
                {
                    return self.success(&member, answer("N", trade.refunded_cents));
                }
                let Some(paid) = trade.paid_cents else {
                    return self.business_error(
                        &member,
                        "ACQ.TRADE_STATUS_ERROR",
                        "交易状态不合法",
                    );
                };
                if refund_cents <= 0 || trade.refunded_cents + refund_cents > paid {
                    return self.business_error(
                        &member,
                        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                        "退款金额超限",
                    );
                }
                state.refunds.push(SimRefund {
                    trade_no: trade.trade_no.clone(),
                    amount_cents: refund_cents,
                    refund_no,
                });
                let refunded = trade.refunded_cents + refund_cents;
                if let Some(held) = state.trades.get_mut(&order_no) {
                    held.refunded_cents = refunded;
                    if refunded == paid {
                        held.state = "refunded";
                    }
                }
                self.success(&member, answer("Y", refunded))
            }
            Op::Query => {
                let Some(trade) = state.trades.get(&order_no) else {
                    return self.business_error(&member, "ACQ.TRADE_NOT_EXIST", "交易不存在");
                };
                let mut answer = json!({
                    "trade_no": trade.trade_no,
                    "out_trade_no": order_no,
                    "trade_status": trade.trade_status(),
                    "total_amount": to_yuan(trade.paid_cents.unwrap_or(trade.amount_cents)),
                });
                if let Some(paid_at) = trade.paid_at {
                    answer["send_pay_date"] = json!(cst(paid_at));
                    answer["buyer_logon_id"] = json!("stu***@example.com");
                    answer["buyer_pay_amount"] = json!(to_yuan(trade.paid_cents.unwrap_or(0)));
                }
                self.success(&member, answer)
            }
        }
    }

    /// `{"<member>": {code 10000 + fields}, "sign": ...}`, signed over the member's text.
    fn success(&self, member: &str, fields: Value) -> SimResponse {
        let mut inner = json!({"code": "10000", "msg": "Success"});
        if let (Some(target), Some(extra)) = (inner.as_object_mut(), fields.as_object()) {
            target.extend(extra.clone());
        }
        self.signed(member, &inner)
    }

    /// A business error (`40004 Business Failed` with `sub_code`), signed as Alipay signs them.
    fn business_error(&self, member: &str, sub_code: &str, sub_msg: &str) -> SimResponse {
        self.signed(
            member,
            &json!({"code": "40004", "msg": "Business Failed", "sub_code": sub_code,
                "sub_msg": sub_msg}),
        )
    }

    fn signed(&self, member: &str, inner: &Value) -> SimResponse {
        let text = inner.to_string();
        let sign = self.alipay_key.sign_base64(text.as_bytes()).expect("sign");
        let body = format!("{{\"{member}\":{text},\"sign\":{}}}", Value::String(sign));
        SimResponse {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/json;charset=utf-8".into(),
            )],
            body: body.into_bytes(),
        }
    }
}

/// A gateway error Alipay does not sign (bad request signature, unknown app or method).
fn unsigned(member: &str, code: &str, sub_code: &str, sub_msg: &str) -> SimResponse {
    SimResponse::json(
        200,
        &json!({ member: {"code": code, "msg": "Invalid Arguments", "sub_code": sub_code,
            "sub_msg": sub_msg} }),
    )
}

/// The cashier page (or its error page) of a page-pay visit.
fn page(status: u16, text: &str) -> SimResponse {
    SimResponse {
        status,
        headers: vec![("Content-Type".into(), "text/html;charset=utf-8".into())],
        body: format!("<html><body>{text}</body></html>").into_bytes(),
    }
}

impl Simulator for AlipaySim {
    fn provider(&self) -> &'static str {
        "alipay"
    }

    fn engine_settings(&self) -> Vec<(String, String)> {
        vec![
            ("providers.alipay.app_id".into(), APP_ID.into()),
            (
                "providers.alipay.app_private_key".into(),
                format!("@{}", fixture("engine_key.pem")),
            ),
            (
                "providers.alipay.alipay_public_key".into(),
                format!("@{}", fixture("provider_key.pub.pem")),
            ),
            ("providers.alipay.gateway_url".into(), self.gateway_url()),
        ]
    }

    fn trade(&self, order_no: &str) -> Option<SimTrade> {
        self.state().trades.get(order_no).map(|t| SimTrade {
            order_no: t.order_no.clone(),
            trade_no: t.paid_cents.map(|_| t.trade_no.clone()),
            amount_cents: t.amount_cents,
            expires_at_unix: t.expires_at_unix,
            notify_url: t.notify_url.clone(),
            state: t.state,
        })
    }

    fn pay_and_notify(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
    ) -> (u16, String) {
        let body = self.pay(order_no, amount_cents);
        self.send(engine_base, &body)
    }

    fn pay_silently(&self, order_no: &str, amount_cents: i64) {
        self.pay(order_no, amount_cents);
    }

    fn close_and_notify(&self, engine_base: &str, order_no: &str) -> (u16, String) {
        let body = self.close_trade(order_no);
        self.send(engine_base, &body)
    }

    fn renotify(&self, engine_base: &str) -> (u16, String) {
        let body = self
            .state()
            .last_notification
            .clone()
            .expect("a notification sent before");
        self.send(engine_base, &body)
    }

    fn notify_bad(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
        how: &str,
    ) -> (u16, String) {
        let body = self.bad_notification(order_no, amount_cents, how);
        self.send(engine_base, &body)
    }

    fn fail_next(&self, op: Op, n: usize) {
        *self.state().fail.entry(op).or_default() += n;
    }

    fn calls(&self, op: Op, order_no: &str) -> usize {
        self.state()
            .calls
            .get(&(op, order_no.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn refunds(&self) -> Vec<SimRefund> {
        self.state().refunds.clone()
    }

    fn success_reply(&self) -> (u16, String) {
        (200, "success".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_engine::providers::{
        Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, Queried,
        RefundRequest, StartRequest, TradeRef, TradeStatus,
    };

    fn order_no(tag: &str) -> String {
        format!("ALI-{tag}-{}", uuid::Uuid::new_v4().simple())
    }

    fn start_request(order_no: &str, amount_cents: i64) -> StartRequest {
        let now = Utc::now().naive_utc();
        // Whole seconds: Alipay's times have no fraction.
        let now = now - TimeDelta::nanoseconds(now.and_utc().timestamp_subsec_nanos() as i64);
        StartRequest {
            order_no: order_no.into(),
            subject: "Rust 入门 & 进阶 = 100%".into(),
            amount_cents,
            currency: "CNY".into(),
            provider_expires_at: now + TimeDelta::minutes(14),
            order_expires_at: now + TimeDelta::minutes(15),
            notify_url: "http://127.0.0.1:9/api/payments/alipay/notify".into(),
            idempotency_key: format!("start-{order_no}"),
            now,
        }
    }

    /// Starts the trade at the adapter and opens its pay URL at the simulator.
    fn started(sim: &AlipaySim, adapter: &Alipay, order_no: &str, amount_cents: i64) {
        let url = adapter
            .start(&start_request(order_no, amount_cents))
            .unwrap()
            .pay_url
            .unwrap();
        assert_eq!(sim.visit(&url).0, 200);
    }

    fn verify(adapter: &Alipay, body: &str) -> Result<Notified, NotifyError> {
        let headers = |_: &str| None;
        adapter.verify(&NotifyRequest {
            headers: &headers,
            body: body.as_bytes(),
            now_unix: Utc::now().timestamp(),
            tolerance_secs: 300,
        })
    }

    fn trade_ref(order_no: &str) -> TradeRef {
        TradeRef {
            order_no: order_no.into(),
            provider_ref: None,
        }
    }

    fn refused_reason(result: Result<impl std::fmt::Debug, ProviderError>) -> String {
        match result {
            Err(ProviderError::Refused { reason, .. }) => reason,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[test]
    fn a_started_trade_is_held_with_its_amount_expiry_and_notify_url() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();
        let order = order_no("start");
        let request = start_request(&order, 1230);
        let started = adapter.start(&request).unwrap();
        assert_eq!(started.code_url, None);
        assert_eq!(started.provider_ref, None);
        let url = started.pay_url.unwrap();
        assert!(url.starts_with(&format!("{}?", sim.gateway_url())), "{url}");
        // No call is made to start: nothing until the payer opens the URL.
        assert_eq!(sim.trade(&order), None);

        let (status, page) = sim.visit(&url);
        assert_eq!(status, 200, "{page}");
        let trade = sim.trade(&order).unwrap();
        assert_eq!(trade.amount_cents, 1230);
        assert_eq!(
            trade.expires_at_unix,
            Some(request.provider_expires_at.and_utc().timestamp())
        );
        assert_eq!(
            trade.notify_url.as_deref(),
            Some(request.notify_url.as_str())
        );
        assert_eq!(trade.state, "open");
        assert_eq!(trade.trade_no, None);
        assert_eq!(sim.calls(Op::Start, &order), 1);

        // A pay URL changed after signing is refused, and makes no trade.
        let other = order_no("tampered");
        let url = adapter
            .start(&start_request(&other, 1230))
            .unwrap()
            .pay_url
            .unwrap()
            .replace("12.30", "0.01");
        assert_eq!(sim.visit(&url).0, 400);
        assert_eq!(sim.trade(&other), None);
    }

    #[test]
    fn the_simulators_notifications_verify_and_read_back() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();
        let order = order_no("notify");
        started(&sim, &adapter, &order, 1230);

        let before = Utc::now().naive_utc() - TimeDelta::seconds(1);
        let body = sim.pay(&order, 1230);
        let Notified::Trade(report) = verify(&adapter, &body).unwrap() else {
            panic!("a word on the trade");
        };
        let trade = sim.trade(&order).unwrap();
        assert_eq!(trade.state, "paid");
        assert_eq!(report.order_no, order);
        assert_eq!(Some(report.trade_no.clone()), trade.trade_no);
        assert_eq!(report.trade_no.len(), 28);
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 1230);
        let paid_at = report.paid_at.unwrap();
        assert!(
            paid_at >= before && paid_at <= Utc::now().naive_utc(),
            "{paid_at}"
        );
        assert_eq!(report.provider_ref, None);

        // Another amount than the started one reads as what was paid.
        let odd = order_no("odd");
        let Notified::Trade(report) = verify(&adapter, &sim.pay(&odd, 99_999)).unwrap() else {
            panic!("a word on the trade");
        };
        assert_eq!(
            (report.order_no.as_str(), report.amount_cents),
            (odd.as_str(), 99_999)
        );

        let closing = order_no("closing");
        started(&sim, &adapter, &closing, 500);
        let Notified::Trade(report) = verify(&adapter, &sim.close_trade(&closing)).unwrap() else {
            panic!("a word on the trade");
        };
        assert_eq!(report.status, TradeStatus::Closed);
        assert_eq!(report.amount_cents, 500);
        assert_eq!(report.paid_at, None);
        assert_eq!(sim.trade(&closing).unwrap().state, "closed");
    }

    #[test]
    fn forged_tampered_stale_and_wrong_app_notifications_are_unauthentic() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();
        let order = order_no("bad");
        started(&sim, &adapter, &order, 1230);
        for how in ["forged", "tampered", "stale", "wrong_app"] {
            let body = sim.bad_notification(&order, 1230, how);
            match verify(&adapter, &body) {
                Err(NotifyError::Unauthentic(why)) => assert!(why.contains(&order), "{how}: {why}"),
                other => panic!("{how}: {other:?}"),
            }
        }
        // None of them paid the trade.
        assert_eq!(sim.trade(&order).unwrap().state, "open");
    }

    #[test]
    fn close_answers_closed_no_such_trade_or_the_payment() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();

        let open = order_no("open");
        started(&sim, &adapter, &open, 1230);
        assert_eq!(adapter.close(&trade_ref(&open)).unwrap(), Closed::Closed);
        assert_eq!(sim.trade(&open).unwrap().state, "closed");
        // Again: the trade is closed already; still Closed.
        assert_eq!(adapter.close(&trade_ref(&open)).unwrap(), Closed::Closed);
        assert_eq!(sim.calls(Op::Close, &open), 2);

        let unknown = order_no("unknown");
        assert_eq!(
            adapter.close(&trade_ref(&unknown)).unwrap(),
            Closed::NoSuchTrade
        );
        assert_eq!(sim.calls(Op::Close, &unknown), 1);

        let paid = order_no("paid");
        started(&sim, &adapter, &paid, 1230);
        sim.pay_silently(&paid, 1230);
        let Closed::Paid(report) = adapter.close(&trade_ref(&paid)).unwrap() else {
            panic!("the close found the payment");
        };
        assert_eq!(report.order_no, paid);
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 1230);
        assert_eq!(Some(report.trade_no), sim.trade(&paid).unwrap().trade_no);
        assert!(report.paid_at.is_some());
        assert_eq!(sim.trade(&paid).unwrap().state, "paid");
        assert_eq!(sim.calls(Op::Query, &paid), 1);
    }

    #[test]
    fn a_refund_repeated_with_its_number_refunds_once() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();
        let order = order_no("refund");
        started(&sim, &adapter, &order, 1230);
        sim.pay_silently(&order, 1230);
        let trade_no = sim.trade(&order).unwrap().trade_no.unwrap();
        let refund = RefundRequest {
            order_no: order.clone(),
            trade_no: trade_no.clone(),
            amount_cents: 1230,
            refund_no: "lp17".into(),
            currency: "CNY".into(),
        };
        adapter.refund(&refund).unwrap();
        adapter.refund(&refund).unwrap();
        assert_eq!(
            sim.refunds(),
            vec![SimRefund {
                trade_no,
                amount_cents: 1230,
                refund_no: "lp17".into()
            }]
        );
        assert_eq!(sim.calls(Op::Refund, &order), 2);
        assert_eq!(sim.trade(&order).unwrap().state, "refunded");

        // Another refund number on a trade refunded whole is refused, naming the code.
        let reason = refused_reason(adapter.refund(&RefundRequest {
            refund_no: "lp18".into(),
            ..refund.clone()
        }));
        assert!(
            reason.contains(&order) && reason.contains("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"),
            "{reason}"
        );
        // The refund notice Alipay would send still reads as a word on the trade.
        let Notified::Trade(report) = verify(&adapter, &sim.refund_notice(&order)).unwrap() else {
            panic!("a word on the trade");
        };
        assert_eq!(report.status, TradeStatus::Closed);
        // Refunding an unknown trade is refused.
        let unknown = order_no("refund-unknown");
        let reason = refused_reason(adapter.refund(&RefundRequest {
            order_no: unknown.clone(),
            ..refund
        }));
        assert!(reason.contains("ACQ.TRADE_NOT_EXIST"), "{reason}");
    }

    #[test]
    fn query_finds_open_paid_closed_and_missing_trades() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();

        let open = order_no("q-open");
        started(&sim, &adapter, &open, 1230);
        assert_eq!(adapter.query(&trade_ref(&open)).unwrap(), Queried::Open);

        let paid = order_no("q-paid");
        started(&sim, &adapter, &paid, 4560);
        sim.pay_silently(&paid, 4560);
        let Queried::Report(report) = adapter.query(&trade_ref(&paid)).unwrap() else {
            panic!("a report");
        };
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 4560);
        assert_eq!(Some(report.trade_no), sim.trade(&paid).unwrap().trade_no);
        assert!(report.paid_at.is_some());

        let closed = order_no("q-closed");
        started(&sim, &adapter, &closed, 100);
        sim.close_trade(&closed);
        let Queried::Report(report) = adapter.query(&trade_ref(&closed)).unwrap() else {
            panic!("a report");
        };
        assert_eq!(report.status, TradeStatus::Closed);
        assert_eq!(report.paid_at, None);

        let missing = order_no("q-missing");
        assert_eq!(
            adapter.query(&trade_ref(&missing)).unwrap(),
            Queried::NotFound
        );
        assert_eq!(sim.calls(Op::Query, &missing), 1);
    }

    #[test]
    fn a_failing_or_dead_gateway_is_refused_or_unreachable() {
        let sim = AlipaySim::start();
        let adapter = sim.adapter();
        let order = order_no("fail");
        started(&sim, &adapter, &order, 1230);

        sim.fail_next(Op::Query, 1);
        let reason = refused_reason(adapter.query(&trade_ref(&order)));
        assert!(
            reason.contains(&order) && reason.contains("500"),
            "{reason}"
        );
        assert_eq!(sim.calls(Op::Query, &order), 0);
        assert_eq!(adapter.query(&trade_ref(&order)).unwrap(), Queried::Open);
        assert_eq!(sim.calls(Op::Query, &order), 1);

        sim.fail_next(Op::Close, 1);
        refused_reason(adapter.close(&trade_ref(&order)));
        assert_eq!(sim.trade(&order).unwrap().state, "open");

        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dead = Alipay::new(
            &AlipaySettings {
                gateway_url: format!("http://127.0.0.1:{port}/gateway.do"),
                ..sim.adapter_settings()
            },
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        match dead.query(&trade_ref(&order)) {
            Err(ProviderError::Unreachable { reason, .. }) => {
                assert!(reason.contains(&order), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_keys_and_app_ids_are_refused_on_both_sides() {
        let sim = AlipaySim::start();
        let order = order_no("keys");
        started(&sim, &sim.adapter(), &order, 1230);

        // The engine signs with a key Alipay does not know: Alipay's unsigned 40002.
        let wrong_app_key = Alipay::new(
            &AlipaySettings {
                app_private_key: key_text("other_key.pem"),
                ..sim.adapter_settings()
            },
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let reason = refused_reason(wrong_app_key.close(&trade_ref(&order)));
        assert!(reason.contains("isv.invalid-signature"), "{reason}");
        assert_eq!(sim.trade(&order).unwrap().state, "open");
        let url = wrong_app_key
            .start(&start_request(&order_no("k"), 100))
            .unwrap()
            .pay_url
            .unwrap();
        assert_eq!(sim.visit(&url).0, 400);

        let wrong_app = Alipay::new(
            &AlipaySettings {
                app_id: OTHER_APP_ID.into(),
                ..sim.adapter_settings()
            },
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let reason = refused_reason(wrong_app.query(&trade_ref(&order)));
        assert!(reason.contains("isv.invalid-app-id"), "{reason}");

        // The engine expects another Alipay key: the simulator's signed answers are refused.
        let wrong_alipay_key = Alipay::new(
            &AlipaySettings {
                alipay_public_key: key_text("other_key.pub.pem"),
                ..sim.adapter_settings()
            },
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let reason = refused_reason(wrong_alipay_key.query(&trade_ref(&order)));
        assert!(
            reason.contains(&order) && reason.contains("signature"),
            "{reason}"
        );
    }

    #[test]
    fn engine_settings_point_at_the_simulator_with_the_fixture_keys() {
        let sim = AlipaySim::start();
        let settings: HashMap<String, String> = sim.engine_settings().into_iter().collect();
        assert_eq!(settings["providers.alipay.app_id"], APP_ID);
        assert_eq!(settings["providers.alipay.gateway_url"], sim.gateway_url());
        for key in [
            "providers.alipay.app_private_key",
            "providers.alipay.alipay_public_key",
        ] {
            let path = settings[key].strip_prefix('@').unwrap();
            assert!(std::path::Path::new(path).is_absolute(), "{path}");
            assert!(read_key_text(&settings[key]).is_ok());
        }
        assert_eq!(sim.success_reply(), (200, "success".to_string()));
        assert_eq!(sim.provider(), "alipay");
    }
}

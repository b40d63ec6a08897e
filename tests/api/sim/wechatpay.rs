//! The WeChat Pay API v3 simulator: serves Native pay, close, refund and query on 127.0.0.1 as
//! https://api.mch.weixin.qq.com does. It checks every request's `Authorization`
//! (`WECHATPAY2-SHA256-RSA2048`, the merchant id, the certificate serial, the signature with
//! `engine_key.pub.pem`; else 401 `SIGN_ERROR`), signs every answer with `provider_key.pem`
//! under a fixed `PUB_KEY_ID_...`, holds the trades by `out_trade_no`, refunds once per
//! `out_refund_no`, and sends notifications as WeChat Pay does: the transaction encrypted with
//! AEAD_AES_256_GCM under the APIv3 key, the envelope signed. Its protocol code is its own (not
//! the adapter's), so the adapter's tests below check the adapter against an independent
//! reading of the documents.
//!
//! Sources: https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml (request
//! signature), wechatpay4_1.shtml (response / notification signature), wechatpay4_2.shtml
//! (resource encryption), apis/chapter3_4_1.shtml (Native pay), chapter3_4_2 (query),
//! chapter3_4_3 (close), chapter3_4_5 (notification), chapter3_4_9 (refund).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use order_engine::providers::keys::{SigningKey, VerifyingKey};
use ring::aead;
use serde_json::{json, Value};

use super::server::{serve, SimRequest, SimResponse};
use super::{Op, SimRefund, SimTrade, Simulator};

pub const MCH_ID: &str = "1900000109";
pub const APP_ID: &str = "wxd678efh567hg6787";
/// The APIv3 key of the tests: 32 ASCII characters.
pub const APIV3_KEY: &str = "SimulatorApiV3Key0123456789abcde";
/// The merchant API certificate serial the engine must name.
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
/// The id of the "WeChat Pay public key" the simulator signs with.
pub const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0119000001092024120300112233000001";
/// Another merchant, for `wrong_app`.
const OTHER_MCH_ID: &str = "1900000999";

pub const NOTIFY_ROUTE: &str = "/api/payments/wechatpay/notify";

/// The path of a test key file (`engine_key.pem`, ...).
pub fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/providers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("read a test key")
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// RFC 3339 in China Standard Time, as WeChat Pay writes its times.
fn beijing_time(unix: i64) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00");
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("a time")
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn nonce32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A notification as it would be sent: its headers and raw body.
#[derive(Debug, Clone)]
pub struct Notification {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Notification {
    /// The header `name` (any case), as the engine's route hands it to the adapter.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

struct Trade {
    sim: SimTrade,
    code_url: String,
    /// What the payer paid, in fen, once paid.
    paid_cents: Option<i64>,
    success_time: Option<String>,
}

#[derive(Default)]
struct State {
    trades: HashMap<String, Trade>,
    /// Refunds by `out_refund_no`, with the answer given (repeated as is).
    refunds: Vec<(SimRefund, Value)>,
    fail: HashMap<Op, usize>,
    calls: HashMap<(Op, String), usize>,
    /// The last notification's body (re-signed on a retry, as each delivery is signed anew).
    last_notification: Option<Vec<u8>>,
    next_id: u64,
}

struct Inner {
    state: Mutex<State>,
    provider_key: SigningKey,
    other_key: SigningKey,
    engine_key: VerifyingKey,
}

pub struct WechatpaySim {
    port: u16,
    inner: Arc<Inner>,
}

fn error(status: u16, code: &str, message: &str) -> (u16, Option<Value>) {
    (status, Some(json!({"code": code, "message": message})))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signs an answer: `Wechatpay-Signature` over `"{ts}\n{nonce}\n{body}\n"`.
    fn signed(&self, status: u16, body: Option<Value>) -> SimResponse {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let timestamp = now_unix().to_string();
        let nonce = nonce32();
        let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
        message.extend_from_slice(&body);
        message.push(b'\n');
        let signature = self.provider_key.sign_base64(&message).expect("sign");
        let mut headers = vec![
            ("Wechatpay-Timestamp".to_string(), timestamp),
            ("Wechatpay-Nonce".to_string(), nonce),
            ("Wechatpay-Signature".to_string(), signature),
            ("Wechatpay-Serial".to_string(), PLATFORM_SERIAL.to_string()),
            (
                "Wechatpay-Signature-Type".to_string(),
                "WECHATPAY2-SHA256-RSA2048".to_string(),
            ),
            ("Request-ID".to_string(), uuid::Uuid::new_v4().to_string()),
        ];
        if !body.is_empty() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        SimResponse {
            status,
            headers,
            body,
        }
    }

    /// Checks the request's `Authorization` the way WeChat Pay does.
    fn authenticate(&self, request: &SimRequest) -> Result<(), String> {
        let header = request.header("authorization").ok_or("no Authorization")?;
        let fields = header
            .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
            .ok_or("not WECHATPAY2-SHA256-RSA2048")?;
        let mut map = HashMap::new();
        for part in fields.split(',') {
            let (name, value) = part.trim().split_once('=').ok_or("a field without =")?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or("an unquoted field")?;
            map.insert(name.to_string(), value.to_string());
        }
        let field = |name: &str| map.get(name).cloned().ok_or(format!("no {name}"));
        if field("mchid")? != MCH_ID {
            return Err("another mchid".into());
        }
        if field("serial_no")? != MERCHANT_SERIAL {
            return Err("another certificate serial".into());
        }
        let timestamp = field("timestamp")?;
        let at: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
        if (now_unix() - at).abs() > 300 {
            return Err("timestamp too old".into());
        }
        let mut message = format!(
            "{}\n{}\n{timestamp}\n{}\n",
            request.method,
            request.target,
            field("nonce_str")?
        )
        .into_bytes();
        message.extend_from_slice(&request.body);
        message.push(b'\n');
        self.engine_key
            .verify_base64(&message, &field("signature")?)
            .map_err(|e| format!("signature: {e}"))
    }

    fn handle(&self, request: &SimRequest) -> SimResponse {
        let path = request.path().to_string();
        let decode = |no: &str| {
            percent_encoding::percent_decode_str(no)
                .decode_utf8_lossy()
                .to_string()
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let (op, order_no) = if request.method == "POST" && path == "/v3/pay/transactions/native" {
            let no = body["out_trade_no"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (Op::Start, no)
        } else if let Some(rest) = path.strip_prefix("/v3/pay/transactions/out-trade-no/") {
            match (request.method.as_str(), rest.strip_suffix("/close")) {
                ("POST", Some(no)) => (Op::Close, decode(no)),
                ("GET", None) => (Op::Query, decode(rest)),
                _ => return self.signed(404, error(404, "NOT_FOUND", "no such API").1),
            }
        } else if request.method == "POST" && path == "/v3/refund/domestic/refunds" {
            let transaction_id = body["transaction_id"].as_str().unwrap_or_default();
            let state = self.lock();
            let no = state
                .trades
                .values()
                .find(|t| t.sim.trade_no.as_deref() == Some(transaction_id))
                .map(|t| t.sim.order_no.clone())
                .unwrap_or_default();
            (Op::Refund, no)
        } else {
            return self.signed(404, error(404, "NOT_FOUND", "no such API").1);
        };

        if let Err(why) = self.authenticate(request) {
            // WeChat Pay does not sign an answer to a request it could not authenticate.
            return SimResponse::json(401, &json!({"code": "SIGN_ERROR", "message": why}));
        }
        {
            let mut state = self.lock();
            if let Some(n) = state.fail.get_mut(&op).filter(|n| **n > 0) {
                *n -= 1;
                return SimResponse::json(
                    500,
                    &json!({"code": "SYSTEM_ERROR", "message": "系统错误"}),
                );
            }
            *state.calls.entry((op, order_no.clone())).or_default() += 1;
        }
        let (status, answer) = match op {
            Op::Start => self.native(&body),
            Op::Close => self.close(&order_no, &body),
            Op::Refund => self.refund(&body),
            Op::Query => self.query(&order_no, request.query()),
        };
        self.signed(status, answer)
    }

    fn native(&self, body: &Value) -> (u16, Option<Value>) {
        if body["appid"] != APP_ID || body["mchid"] != MCH_ID {
            return error(400, "PARAM_ERROR", "appid和mch_id不匹配");
        }
        let (Some(order_no), Some(description), Some(notify_url), Some(time_expire)) = (
            body["out_trade_no"].as_str(),
            body["description"].as_str(),
            body["notify_url"].as_str(),
            body["time_expire"].as_str(),
        ) else {
            return error(400, "PARAM_ERROR", "缺少参数");
        };
        if description.is_empty() || description.len() > 127 || order_no.len() > 32 {
            return error(400, "PARAM_ERROR", "参数长度不符合要求");
        }
        let Ok(expires) = chrono::DateTime::parse_from_rfc3339(time_expire) else {
            return error(400, "PARAM_ERROR", "time_expire格式错误");
        };
        let (Some(total), Some("CNY")) = (
            body["amount"]["total"].as_i64().filter(|t| *t > 0),
            body["amount"]["currency"].as_str(),
        ) else {
            return error(400, "PARAM_ERROR", "amount格式错误");
        };
        if !notify_url.starts_with("http") {
            return error(400, "PARAM_ERROR", "notify_url格式错误");
        }
        let mut state = self.lock();
        state.next_id += 1;
        let code = format!("weixin://wxpay/bizpayurl?pr=Sim{:07}", state.next_id);
        match state.trades.get(order_no) {
            Some(t) if t.sim.state == "open" => {
                return (200, Some(json!({"code_url": t.code_url})));
            }
            Some(t) if t.sim.state == "closed" => return error(400, "ORDER_CLOSED", "订单已关闭"),
            Some(_) => return error(400, "ORDERPAID", "该订单已支付"),
            None => {}
        }
        state.trades.insert(
            order_no.to_string(),
            Trade {
                sim: SimTrade {
                    order_no: order_no.to_string(),
                    trade_no: None,
                    amount_cents: total,
                    expires_at_unix: Some(expires.timestamp()),
                    notify_url: Some(notify_url.to_string()),
                    state: "open",
                },
                code_url: code.clone(),
                paid_cents: None,
                success_time: None,
            },
        );
        (200, Some(json!({"code_url": code})))
    }

    fn close(&self, order_no: &str, body: &Value) -> (u16, Option<Value>) {
        if body["mchid"] != MCH_ID {
            return error(400, "PARAM_ERROR", "mchid不匹配");
        }
        let mut state = self.lock();
        match state.trades.get_mut(order_no) {
            None => error(404, "ORDER_NOT_EXIST", "订单不存在"),
            Some(t) if t.sim.state == "paid" || t.sim.state == "refunded" => {
                error(400, "ORDERPAID", "订单已支付")
            }
            Some(t) => {
                t.sim.state = "closed";
                (204, None)
            }
        }
    }

    fn refund(&self, body: &Value) -> (u16, Option<Value>) {
        let (Some(transaction_id), Some(out_refund_no), Some(refund), Some(total)) = (
            body["transaction_id"].as_str(),
            body["out_refund_no"].as_str(),
            body["amount"]["refund"].as_i64(),
            body["amount"]["total"].as_i64(),
        ) else {
            return error(400, "PARAM_ERROR", "缺少参数");
        };
        if body["amount"]["currency"] != "CNY" {
            return error(400, "PARAM_ERROR", "currency错误");
        }
        let mut state = self.lock();
        if let Some((_, answer)) = state
            .refunds
            .iter()
            .find(|(r, _)| r.refund_no == out_refund_no)
        {
            return (200, Some(answer.clone()));
        }
        state.next_id += 1;
        let refund_id = format!("50000{:024}", state.next_id);
        let Some(trade) = state
            .trades
            .values_mut()
            .find(|t| t.sim.trade_no.as_deref() == Some(transaction_id))
        else {
            return error(404, "RESOURCE_NOT_EXISTS", "订单不存在");
        };
        if Some(total) != trade.paid_cents {
            return error(400, "PARAM_ERROR", "订单金额与实际不一致");
        }
        if refund <= 0 || refund > total {
            return error(400, "INVALID_REQUEST", "退款金额超过可退金额");
        }
        trade.sim.state = "refunded";
        let answer = json!({
            "refund_id": refund_id,
            "out_refund_no": out_refund_no,
            "transaction_id": transaction_id,
            "out_trade_no": trade.sim.order_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": beijing_time(now_unix()),
            "status": "PROCESSING",
            "funds_account": "AVAILABLE",
            "amount": {"total": total, "refund": refund, "payer_total": total,
                "payer_refund": refund, "currency": "CNY"},
        });
        let record = SimRefund {
            trade_no: transaction_id.to_string(),
            amount_cents: refund,
            refund_no: out_refund_no.to_string(),
        };
        state.refunds.push((record, answer.clone()));
        (200, Some(answer))
    }

    fn query(&self, order_no: &str, query: &str) -> (u16, Option<Value>) {
        if query != format!("mchid={MCH_ID}") {
            return error(400, "PARAM_ERROR", "mchid不匹配");
        }
        let state = self.lock();
        match state.trades.get(order_no) {
            None => error(404, "ORDER_NOT_EXIST", "订单不存在"),
            Some(t) => (200, Some(transaction_json(t, APP_ID, MCH_ID))),
        }
    }
}

/// A trade as WeChat Pay's transaction object (query answer, notification plaintext).
fn transaction_json(t: &Trade, appid: &str, mchid: &str) -> Value {
    let (trade_state, desc) = match t.sim.state {
        "paid" => ("SUCCESS", "支付成功"),
        "refunded" => ("REFUND", "转入退款"),
        "closed" => ("CLOSED", "订单已关闭"),
        _ => ("NOTPAY", "订单未支付"),
    };
    let mut v = json!({
        "appid": appid,
        "mchid": mchid,
        "out_trade_no": t.sim.order_no,
        "trade_type": "NATIVE",
        "trade_state": trade_state,
        "trade_state_desc": desc,
        "attach": "",
        "amount": {"total": t.paid_cents.unwrap_or(t.sim.amount_cents), "currency": "CNY"},
    });
    if let (Some(trade_no), Some(paid)) = (&t.sim.trade_no, t.paid_cents) {
        v["transaction_id"] = json!(trade_no);
        v["bank_type"] = json!("OTHERS");
        v["success_time"] = json!(t.success_time);
        v["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
        v["amount"]["payer_total"] = json!(paid);
        v["amount"]["payer_currency"] = json!("CNY");
    }
    v
}

impl WechatpaySim {
    pub fn start() -> WechatpaySim {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            provider_key: SigningKey::parse(&read_fixture("provider_key.pem")).expect("key"),
            other_key: SigningKey::parse(&read_fixture("other_key.pem")).expect("key"),
            engine_key: VerifyingKey::parse(&read_fixture("engine_key.pub.pem")).expect("key"),
        });
        let handler = inner.clone();
        let port = serve(Arc::new(move |request: &SimRequest| {
            handler.handle(request)
        }));
        WechatpaySim { port, inner }
    }

    /// `http://127.0.0.1:port`: the `api_base` the engine calls.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The payer pays: the trade (made up if the engine never started it) is paid with
    /// `amount_cents` and gets a `transaction_id`.
    pub fn pay(&self, order_no: &str, amount_cents: i64) {
        let mut state = self.inner.lock();
        state.next_id += 1;
        let trade_no = format!("42000{:023}", state.next_id);
        let trade = state
            .trades
            .entry(order_no.to_string())
            .or_insert_with(|| Trade {
                sim: SimTrade {
                    order_no: order_no.to_string(),
                    trade_no: None,
                    amount_cents,
                    expires_at_unix: None,
                    notify_url: None,
                    state: "open",
                },
                code_url: String::new(),
                paid_cents: None,
                success_time: None,
            });
        trade.sim.trade_no = Some(trade_no);
        trade.sim.state = "paid";
        trade.paid_cents = Some(amount_cents);
        trade.success_time = Some(beijing_time(now_unix()));
    }

    /// The provider closes the trade (made up, unpaid, if unknown).
    pub fn close_trade(&self, order_no: &str) {
        let mut state = self.inner.lock();
        let trade = state
            .trades
            .entry(order_no.to_string())
            .or_insert_with(|| Trade {
                sim: SimTrade {
                    order_no: order_no.to_string(),
                    trade_no: None,
                    amount_cents: 0,
                    expires_at_unix: None,
                    notify_url: None,
                    state: "open",
                },
                code_url: String::new(),
                paid_cents: None,
                success_time: None,
            });
        trade.sim.state = "closed";
    }

    /// The notification WeChat Pay would send now about the trade of `order_no` as the
    /// simulator holds it; `how` spoils it (`forged`, `tampered`, `stale`, `wrong_app`).
    pub fn notification(&self, order_no: &str, how: Option<&str>) -> Notification {
        let (plaintext, event_type, summary, amount) = {
            let state = self.inner.lock();
            let trade = state.trades.get(order_no).expect("a trade to notify about");
            let mchid = if how == Some("wrong_app") {
                OTHER_MCH_ID
            } else {
                MCH_ID
            };
            let plaintext = transaction_json(trade, APP_ID, mchid);
            let (event_type, summary) = match trade.sim.state {
                "closed" => ("TRANSACTION.CLOSED", "订单已关闭"),
                _ => ("TRANSACTION.SUCCESS", "支付成功"),
            };
            let amount = trade.paid_cents.unwrap_or(trade.sim.amount_cents);
            (plaintext, event_type, summary, amount)
        };
        let body = self.envelope(&plaintext, event_type, summary);
        let timestamp = match how {
            Some("stale") => now_unix() - 600,
            _ => now_unix(),
        };
        let key = match how {
            Some("forged") => &self.inner.other_key,
            _ => &self.inner.provider_key,
        };
        let mut notification = self.sign_notification(body, timestamp, key);
        if how == Some("tampered") {
            // The same notification with ten times the amount, encrypted with the right key:
            // only the signature over the raw body tells it apart.
            let mut bigger = plaintext;
            bigger["amount"]["total"] = json!(amount * 10);
            bigger["amount"]["payer_total"] = json!(amount * 10);
            notification.body = self.envelope(&bigger, event_type, summary);
        }
        notification
    }

    /// A notification envelope around `plaintext`, encrypted with the APIv3 key.
    pub fn envelope(&self, plaintext: &Value, event_type: &str, summary: &str) -> Vec<u8> {
        let nonce: String = nonce32().chars().take(12).collect();
        let associated_data = if event_type.starts_with("REFUND.") {
            "refund"
        } else {
            "transaction"
        };
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, APIV3_KEY.as_bytes()).expect("a key"),
        );
        let mut in_out = plaintext.to_string().into_bytes();
        key.seal_in_place_append_tag(
            aead::Nonce::try_assume_unique_for_key(nonce.as_bytes()).expect("12 bytes"),
            aead::Aad::from(associated_data.as_bytes()),
            &mut in_out,
        )
        .expect("seal");
        let id = format!("EV-{}", nonce32());
        json!({
            "id": id,
            "create_time": beijing_time(now_unix()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": associated_data,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64::engine::general_purpose::STANDARD.encode(in_out),
                "associated_data": associated_data,
                "nonce": nonce,
            },
        })
        .to_string()
        .into_bytes()
    }

    /// Signs a notification body as WeChat Pay does, at `timestamp`, with `key`.
    fn sign_notification(&self, body: Vec<u8>, timestamp: i64, key: &SigningKey) -> Notification {
        let nonce = nonce32();
        let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
        message.extend_from_slice(&body);
        message.push(b'\n');
        let signature = key.sign_base64(&message).expect("sign");
        Notification {
            headers: vec![
                ("Wechatpay-Timestamp".into(), timestamp.to_string()),
                ("Wechatpay-Nonce".into(), nonce),
                ("Wechatpay-Signature".into(), signature),
                ("Wechatpay-Serial".into(), PLATFORM_SERIAL.into()),
                (
                    "Wechatpay-Signature-Type".into(),
                    "WECHATPAY2-SHA256-RSA2048".into(),
                ),
                ("Content-Type".into(), "application/json".into()),
            ],
            body,
        }
    }

    /// `body` signed rightly now (for tests of authentic but malformed notifications).
    pub fn signed_notification(&self, body: Vec<u8>) -> Notification {
        self.sign_notification(body, now_unix(), &self.inner.provider_key)
    }

    /// POSTs a notification to the engine; its status and body.
    pub fn send(&self, engine_base: &str, notification: &Notification) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(30))
            .build();
        let mut request = agent.post(&format!("{engine_base}{NOTIFY_ROUTE}"));
        for (name, value) in &notification.headers {
            request = request.set(name, value);
        }
        match request.send_bytes(&notification.body) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(status, r)) => (status, r.into_string().unwrap_or_default()),
            Err(e) => panic!("the engine did not answer a WeChat Pay notification: {e}"),
        }
    }

    fn notify(&self, engine_base: &str, notification: Notification) -> (u16, String) {
        self.inner.lock().last_notification = Some(notification.body.clone());
        self.send(engine_base, &notification)
    }
}

impl Simulator for WechatpaySim {
    fn provider(&self) -> &'static str {
        "wechatpay"
    }

    fn engine_settings(&self) -> Vec<(String, String)> {
        [
            ("mch_id", MCH_ID.to_string()),
            ("app_id", APP_ID.to_string()),
            ("apiv3_key", APIV3_KEY.to_string()),
            (
                "merchant_private_key",
                format!("@{}", fixture("engine_key.pem")),
            ),
            ("merchant_serial", MERCHANT_SERIAL.to_string()),
            (
                "platform_public_key",
                format!("@{}", fixture("provider_key.pub.pem")),
            ),
            ("platform_serial", PLATFORM_SERIAL.to_string()),
            ("api_base", self.base_url()),
        ]
        .into_iter()
        .map(|(key, value)| (format!("providers.wechatpay.{key}"), value))
        .collect()
    }

    fn trade(&self, order_no: &str) -> Option<SimTrade> {
        self.inner
            .lock()
            .trades
            .get(order_no)
            .map(|t| t.sim.clone())
    }

    fn pay_and_notify(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
    ) -> (u16, String) {
        self.pay(order_no, amount_cents);
        let notification = self.notification(order_no, None);
        self.notify(engine_base, notification)
    }

    fn pay_silently(&self, order_no: &str, amount_cents: i64) {
        self.pay(order_no, amount_cents);
    }

    fn close_and_notify(&self, engine_base: &str, order_no: &str) -> (u16, String) {
        self.close_trade(order_no);
        let notification = self.notification(order_no, None);
        self.notify(engine_base, notification)
    }

    fn renotify(&self, engine_base: &str) -> (u16, String) {
        let body = self
            .inner
            .lock()
            .last_notification
            .clone()
            .expect("a notification sent before");
        let notification = self.signed_notification(body);
        self.send(engine_base, &notification)
    }

    fn notify_bad(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
        how: &str,
    ) -> (u16, String) {
        assert!(
            ["forged", "tampered", "stale", "wrong_app"].contains(&how),
            "unknown kind of bad notification {how}"
        );
        // A paid trade to speak of, without changing the one the simulator holds.
        let saved = self.inner.lock().trades.remove(order_no);
        self.pay(order_no, amount_cents);
        let notification = self.notification(order_no, Some(how));
        {
            let mut state = self.inner.lock();
            state.trades.remove(order_no);
            if let Some(trade) = saved {
                state.trades.insert(order_no.to_string(), trade);
            }
        }
        self.send(engine_base, &notification)
    }

    fn fail_next(&self, op: Op, n: usize) {
        *self.inner.lock().fail.entry(op).or_default() += n;
    }

    fn calls(&self, op: Op, order_no: &str) -> usize {
        self.inner
            .lock()
            .calls
            .get(&(op, order_no.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn refunds(&self) -> Vec<SimRefund> {
        self.inner
            .lock()
            .refunds
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    fn success_reply(&self) -> (u16, String) {
        (204, String::new())
    }
}

/// The adapter driven directly against the simulator (no engine).
#[cfg(test)]
mod adapter {
    use super::*;
    use order_engine::config::WechatpaySettings;
    use order_engine::providers::wechatpay::Wechatpay;
    use order_engine::providers::{
        Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, Queried,
        RefundRequest, StartRequest, TradeRef, TradeStatus,
    };

    fn settings(sim: &WechatpaySim) -> WechatpaySettings {
        WechatpaySettings {
            mch_id: MCH_ID.into(),
            app_id: APP_ID.into(),
            apiv3_key: APIV3_KEY.into(),
            merchant_private_key: read_fixture("engine_key.pem"),
            merchant_serial: MERCHANT_SERIAL.into(),
            platform_public_key: read_fixture("provider_key.pub.pem"),
            platform_serial: PLATFORM_SERIAL.into(),
            api_base: sim.base_url(),
        }
    }

    fn adapter_with(settings: &WechatpaySettings) -> Wechatpay {
        Wechatpay::new(settings, std::time::Duration::from_secs(5)).unwrap()
    }

    fn order_no() -> String {
        format!("WX{}", &nonce32()[..20])
    }

    fn start_request(order_no: &str, amount_cents: i64) -> StartRequest {
        let now = chrono::Utc::now().naive_utc();
        let now =
            now - chrono::Duration::nanoseconds(now.and_utc().timestamp_subsec_nanos().into());
        StartRequest {
            order_no: order_no.into(),
            subject: "Rust 入门 / Intro to Rust".into(),
            amount_cents,
            currency: "CNY".into(),
            provider_expires_at: now + chrono::Duration::minutes(29),
            order_expires_at: now + chrono::Duration::minutes(30),
            notify_url: format!("https://pay.example.com{NOTIFY_ROUTE}"),
            idempotency_key: format!("start-{order_no}"),
            now,
        }
    }

    fn started(sim: &WechatpaySim, wechat: &Wechatpay, amount_cents: i64) -> String {
        let no = order_no();
        wechat.start(&start_request(&no, amount_cents)).unwrap();
        assert!(sim.trade(&no).is_some());
        no
    }

    fn trade_ref(order_no: &str) -> TradeRef {
        TradeRef {
            order_no: order_no.into(),
            provider_ref: None,
        }
    }

    fn verify(wechat: &Wechatpay, n: &Notification) -> Result<Notified, NotifyError> {
        let headers = |name: &str| n.header(name);
        wechat.verify(&NotifyRequest {
            headers: &headers,
            body: &n.body,
            now_unix: now_unix(),
            tolerance_secs: 300,
        })
    }

    #[test]
    fn start_leaves_the_trade_at_the_simulator() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let no = order_no();
        let request = start_request(&no, 1999);
        let started = wechat.start(&request).unwrap();
        let code_url = started.code_url.clone().unwrap();
        assert!(code_url.starts_with("weixin://wxpay/bizpayurl?pr="));
        assert_eq!(started.pay_url, None);
        assert_eq!(started.provider_ref, None);
        let trade = sim.trade(&no).unwrap();
        assert_eq!(trade.amount_cents, 1999);
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
        assert_eq!(sim.calls(Op::Start, &no), 1);
        // Starting again answers the same QR code.
        assert_eq!(wechat.start(&request).unwrap().code_url, Some(code_url));
        assert_eq!(sim.calls(Op::Start, &no), 2);
    }

    #[test]
    fn a_notification_verifies_and_reads_back() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let no = started(&sim, &wechat, 1999);
        sim.pay(&no, 1999);
        let trade_no = sim.trade(&no).unwrap().trade_no.unwrap();
        let Notified::Trade(report) = verify(&wechat, &sim.notification(&no, None)).unwrap() else {
            panic!("a trade report");
        };
        assert_eq!(report.order_no, no);
        assert_eq!(report.trade_no, trade_no);
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 1999);
        assert!(report.paid_at.is_some());
        assert_eq!(report.provider_ref, None);

        // Another amount than started: the notification says what was paid.
        let other = started(&sim, &wechat, 500);
        sim.pay(&other, 700);
        let Ok(Notified::Trade(report)) = verify(&wechat, &sim.notification(&other, None)) else {
            panic!("a trade report");
        };
        assert_eq!(report.amount_cents, 700);

        // A closed trade: no transaction_id, so the out_trade_no names it.
        let closed = started(&sim, &wechat, 300);
        sim.close_trade(&closed);
        let Ok(Notified::Trade(report)) = verify(&wechat, &sim.notification(&closed, None)) else {
            panic!("a trade report");
        };
        assert_eq!(report.status, TradeStatus::Closed);
        assert_eq!(report.trade_no, closed);
        assert_eq!(report.amount_cents, 300);
        assert_eq!(report.paid_at, None);
    }

    #[test]
    fn bad_notifications_are_unauthentic() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let no = started(&sim, &wechat, 1999);
        sim.pay(&no, 1999);
        // Each is refused for its own reason.
        for (how, why) in [
            ("forged", "Wechatpay-Signature"),
            ("tampered", "Wechatpay-Signature"),
            ("stale", "Wechatpay-Timestamp"),
            ("wrong_app", "mchid"),
        ] {
            let result = verify(&wechat, &sim.notification(&no, Some(how)));
            assert!(
                matches!(&result, Err(NotifyError::Unauthentic(m)) if m.contains(why)),
                "{how}: {result:?}"
            );
        }
        // Another key serial, a missing header, another APIv3 key.
        let mut n = sim.notification(&no, None);
        n.headers[3].1 = "PUB_KEY_ID_SOMEONE_ELSE".into();
        assert!(matches!(
            verify(&wechat, &n),
            Err(NotifyError::Unauthentic(_))
        ));
        let mut n = sim.notification(&no, None);
        n.headers.remove(2);
        assert!(matches!(
            verify(&wechat, &n),
            Err(NotifyError::Unauthentic(_))
        ));
        let mut other = settings(&sim);
        other.apiv3_key = "AnotherApiV3Key0123456789abcdefg".into();
        let result = verify(&adapter_with(&other), &sim.notification(&no, None));
        assert!(
            matches!(result, Err(NotifyError::Unauthentic(_))),
            "{result:?}"
        );
        let mut other = settings(&sim);
        other.app_id = "wx0000000000000000".into();
        let result = verify(&adapter_with(&other), &sim.notification(&no, None));
        assert!(
            matches!(result, Err(NotifyError::Unauthentic(_))),
            "{result:?}"
        );
    }

    #[test]
    fn authentic_but_unreadable_notifications_are_malformed() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let n = sim.signed_notification(b"not json".to_vec());
        assert!(matches!(
            verify(&wechat, &n),
            Err(NotifyError::Malformed(_))
        ));
        // Decrypts, but the transaction lacks its out_trade_no.
        let body = sim.envelope(
            &json!({"appid": APP_ID, "mchid": MCH_ID, "trade_state": "SUCCESS"}),
            "TRANSACTION.SUCCESS",
            "支付成功",
        );
        let result = verify(&wechat, &sim.signed_notification(body));
        assert!(
            matches!(result, Err(NotifyError::Malformed(_))),
            "{result:?}"
        );
        // A paid transaction with a fractional amount.
        let body = sim.envelope(
            &json!({"appid": APP_ID, "mchid": MCH_ID, "out_trade_no": "o1",
                "transaction_id": "4200000000000000000000000001", "trade_state": "SUCCESS",
                "success_time": "2026-12-03T18:00:00+08:00", "amount": {"total": 19.99}}),
            "TRANSACTION.SUCCESS",
            "支付成功",
        );
        let result = verify(&wechat, &sim.signed_notification(body));
        assert!(
            matches!(result, Err(NotifyError::Malformed(_))),
            "{result:?}"
        );
    }

    #[test]
    fn refund_notices_and_open_states_are_acknowledged() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let body = sim.envelope(
            &json!({"mchid": MCH_ID, "out_trade_no": "o1", "out_refund_no": "lp1",
                "refund_status": "SUCCESS", "amount": {"total": 1, "refund": 1}}),
            "REFUND.SUCCESS",
            "退款成功",
        );
        let result = verify(&wechat, &sim.signed_notification(body));
        assert!(matches!(result, Ok(Notified::Acknowledge(_))), "{result:?}");
        let no = started(&sim, &wechat, 100);
        let result = verify(&wechat, &sim.notification(&no, None));
        assert!(matches!(result, Ok(Notified::Acknowledge(_))), "{result:?}");
    }

    #[test]
    fn close_open_unknown_paid_and_closed_trades() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let open = started(&sim, &wechat, 100);
        assert_eq!(wechat.close(&trade_ref(&open)).unwrap(), Closed::Closed);
        assert_eq!(sim.trade(&open).unwrap().state, "closed");
        assert_eq!(wechat.close(&trade_ref(&open)).unwrap(), Closed::Closed);
        assert_eq!(sim.calls(Op::Close, &open), 2);

        let unknown = order_no();
        assert_eq!(
            wechat.close(&trade_ref(&unknown)).unwrap(),
            Closed::NoSuchTrade
        );
        assert_eq!(sim.calls(Op::Close, &unknown), 1);

        let paid = started(&sim, &wechat, 100);
        sim.pay(&paid, 100);
        let Closed::Paid(report) = wechat.close(&trade_ref(&paid)).unwrap() else {
            panic!("a paid trade");
        };
        assert_eq!(report.order_no, paid);
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 100);
        assert_eq!(Some(report.trade_no), sim.trade(&paid).unwrap().trade_no);
        assert_eq!(sim.trade(&paid).unwrap().state, "paid");
    }

    #[test]
    fn a_refund_is_made_once_per_refund_number() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let no = started(&sim, &wechat, 1999);
        sim.pay(&no, 1999);
        let trade_no = sim.trade(&no).unwrap().trade_no.unwrap();
        let refund = RefundRequest {
            order_no: no.clone(),
            trade_no: trade_no.clone(),
            amount_cents: 1999,
            refund_no: "lp7".into(),
            currency: "CNY".into(),
        };
        wechat.refund(&refund).unwrap();
        wechat.refund(&refund).unwrap();
        assert_eq!(
            sim.refunds(),
            vec![SimRefund {
                trade_no,
                amount_cents: 1999,
                refund_no: "lp7".into()
            }]
        );
        assert_eq!(sim.calls(Op::Refund, &no), 2);
        assert_eq!(sim.trade(&no).unwrap().state, "refunded");
        // A refund of a trade WeChat Pay does not know is refused, naming the order.
        let err = wechat
            .refund(&RefundRequest {
                trade_no: "4200009999999999999999999999".into(),
                refund_no: "lp8".into(),
                ..refund
            })
            .unwrap_err();
        let ProviderError::Refused { reason, .. } = err else {
            panic!("refused");
        };
        assert!(
            reason.contains(&no) && reason.contains("RESOURCE_NOT_EXISTS"),
            "{reason}"
        );
    }

    #[test]
    fn query_open_paid_closed_and_unknown_trades() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let open = started(&sim, &wechat, 100);
        assert_eq!(wechat.query(&trade_ref(&open)).unwrap(), Queried::Open);

        let paid = started(&sim, &wechat, 250);
        sim.pay_silently(&paid, 250);
        let Queried::Report(report) = wechat.query(&trade_ref(&paid)).unwrap() else {
            panic!("a report");
        };
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 250);
        assert_eq!(Some(report.trade_no), sim.trade(&paid).unwrap().trade_no);
        assert!(report.paid_at.is_some());

        let closed = started(&sim, &wechat, 100);
        sim.close_trade(&closed);
        let Queried::Report(report) = wechat.query(&trade_ref(&closed)).unwrap() else {
            panic!("a report");
        };
        assert_eq!(report.status, TradeStatus::Closed);

        let unknown = order_no();
        assert_eq!(
            wechat.query(&trade_ref(&unknown)).unwrap(),
            Queried::NotFound
        );
        assert_eq!(sim.calls(Op::Query, &unknown), 1);
    }

    #[test]
    fn a_500_is_refused_and_a_dead_port_unreachable() {
        let sim = WechatpaySim::start();
        let wechat = adapter_with(&settings(&sim));
        let no = order_no();
        sim.fail_next(Op::Start, 1);
        let err = wechat.start(&start_request(&no, 100)).unwrap_err();
        let ProviderError::Refused { reason, .. } = err else {
            panic!("refused, not {err:?}");
        };
        assert!(
            reason.contains(&no) && reason.contains("SYSTEM_ERROR"),
            "{reason}"
        );
        assert_eq!(sim.calls(Op::Start, &no), 0);
        wechat.start(&start_request(&no, 100)).unwrap();
        assert_eq!(sim.calls(Op::Start, &no), 1);

        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut dead = settings(&sim);
        dead.api_base = format!("http://127.0.0.1:{port}");
        let err = adapter_with(&dead).query(&trade_ref(&no)).unwrap_err();
        assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    }

    #[test]
    fn wrong_keys_on_either_side_are_refused() {
        let sim = WechatpaySim::start();
        // The engine signs with a key WeChat Pay does not know: 401 SIGN_ERROR.
        let mut wrong_merchant = settings(&sim);
        wrong_merchant.merchant_private_key = read_fixture("other_key.pem");
        let no = order_no();
        let err = adapter_with(&wrong_merchant)
            .start(&start_request(&no, 100))
            .unwrap_err();
        let ProviderError::Refused { reason, .. } = err else {
            panic!("refused");
        };
        assert!(reason.contains("SIGN_ERROR"), "{reason}");
        assert!(sim.trade(&no).is_none());
        // Another serial in the header is refused the same way.
        let mut wrong_serial = settings(&sim);
        wrong_serial.merchant_serial = "0000".into();
        assert!(adapter_with(&wrong_serial).query(&trade_ref(&no)).is_err());
        // The answer is signed with a key that is not the configured one: not WeChat Pay's.
        let mut wrong_platform = settings(&sim);
        wrong_platform.platform_public_key = read_fixture("other_key.pub.pem");
        let err = adapter_with(&wrong_platform)
            .start(&start_request(&no, 100))
            .unwrap_err();
        assert!(matches!(err, ProviderError::Refused { .. }), "{err:?}");
        // ... or names another key id.
        let mut wrong_id = settings(&sim);
        wrong_id.platform_serial = "PUB_KEY_ID_OTHER".into();
        let err = adapter_with(&wrong_id).query(&trade_ref(&no)).unwrap_err();
        assert!(matches!(err, ProviderError::Refused { .. }), "{err:?}");
    }
}

//! Alipay's wire formats (OpenAPI `gateway.do`, RSA2): the signing strings, amounts in yuan,
//! China Standard Time, the `biz_content` of each method and the answers' fields. Pure
//! functions only — the calls are in `mod.rs` — so each rule is tested against the published
//! examples.
//!
//! Sources:
//! - Signing a request ("自行实现签名"), with the signing-string example used as a test vector
//!   below: <https://opendocs.alipay.com/common/02kf5q>
//! - Checking a notification ("异步通知验签"), with its example notification and string to
//!   check: <https://opendocs.alipay.com/common/02mse7> (formerly
//!   <https://docs.open.alipay.com/200/106120>)
//! - Checking an answer: the signature is over the raw text of the `xxx_response` member, as
//!   `AlipaySignature.extractSignContent` of the official Java SDK extracts it
//!   (<https://github.com/alipay/alipay-sdk-java-all>,
//!   `src/main/java/com/alipay/api/internal/util/AlipaySignature.java`)
//! - Page pay: <https://opendocs.alipay.com/open/028r8t>; its notification:
//!   <https://opendocs.alipay.com/open/270/105902>; close, refund, query:
//!   <https://opendocs.alipay.com/apis/api_1/alipay.trade.close>,
//!   <https://opendocs.alipay.com/apis/api_1/alipay.trade.refund>,
//!   <https://opendocs.alipay.com/apis/api_1/alipay.trade.query>.

use chrono::{NaiveDateTime, TimeDelta};
use serde::{Deserialize, Serialize};

/// `yyyy-MM-dd HH:mm:ss`, the only time format of the protocol (`timestamp`, `time_expire`,
/// `gmt_payment`, `send_pay_date`, `notify_time`).
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Every success answer's `code`.
pub const SUCCESS_CODE: &str = "10000";

/// China Standard Time is UTC+8 all year (no daylight saving since 1991): what every Alipay
/// time means.
const CHINA_STANDARD_TIME_HOURS: i64 = 8;

/// A UTC time as Alipay writes it: China Standard Time, `yyyy-MM-dd HH:mm:ss`.
pub fn cst_time(utc_time: NaiveDateTime) -> String {
    let local = utc_time
        .checked_add_signed(TimeDelta::hours(CHINA_STANDARD_TIME_HOURS))
        .unwrap_or(utc_time);
    local.format(TIME_FORMAT).to_string()
}

/// An Alipay time (China Standard Time, `yyyy-MM-dd HH:mm:ss`) in UTC.
pub fn parse_cst_time(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT)
        .ok()?
        .checked_sub_signed(TimeDelta::hours(CHINA_STANDARD_TIME_HOURS))
}

/// Cents as Alipay's yuan amount: exactly two decimals (`1230` -> `12.30`).
pub fn yuan(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// An Alipay yuan amount in cents, exactly: digits, then at most two decimals (`12.30` ->
/// 1230, `12` -> 1200). Anything else — more decimals, a sign, an exponent, spaces — is `None`:
/// no float is ever involved.
pub fn cents(yuan: &str) -> Option<i64> {
    let (whole, fraction) = match yuan.split_once('.') {
        Some((w, f)) => (w, f),
        None => (yuan, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.len() > 2 || (yuan.contains('.') && !digits(fraction)) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<i64>().ok()? * 10,
        _ => fraction.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(fraction)
}

/// The string a request is signed over: every parameter but `sign` and those with empty
/// values, sorted by name, `name=value` joined with `&`, values raw (not URL-encoded).
pub fn request_sign_content<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    sign_content(params, &["sign"])
}

/// The string a notification is signed over: as [`request_sign_content`], but without
/// `sign_type` too, over the URL-decoded values.
pub fn notification_sign_content<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    sign_content(params, &["sign", "sign_type"])
}

fn sign_content<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    left_out: &[&str],
) -> String {
    let mut kept: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty() && !left_out.contains(k))
        .collect();
    // Byte order of the names: what Java's String sort (the SDK's) gives for ASCII names.
    kept.sort_by(|a, b| a.0.cmp(b.0));
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `biz_content` of `alipay.trade.page.pay`.
#[derive(Debug, Serialize)]
pub struct PagePayContent<'a> {
    pub out_trade_no: &'a str,
    pub total_amount: String,
    pub subject: String,
    pub product_code: &'static str,
    pub time_expire: String,
}

/// `biz_content` of `alipay.trade.close` and `alipay.trade.query`.
#[derive(Debug, Serialize)]
pub struct TradeContent<'a> {
    pub out_trade_no: &'a str,
}

/// `biz_content` of `alipay.trade.refund`.
#[derive(Debug, Serialize)]
pub struct RefundContent<'a> {
    pub out_trade_no: &'a str,
    pub trade_no: &'a str,
    pub refund_amount: String,
    pub out_request_no: &'a str,
}

/// The fields of an `xxx_response` object the adapter reads (each method's answer carries a
/// subset; the rest are ignored).
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct GatewayAnswer {
    pub code: String,
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default)]
    pub sub_code: Option<String>,
    #[serde(default)]
    pub sub_msg: Option<String>,
    #[serde(default)]
    pub trade_no: Option<String>,
    #[serde(default)]
    pub out_trade_no: Option<String>,
    #[serde(default)]
    pub trade_status: Option<String>,
    #[serde(default)]
    pub total_amount: Option<String>,
    #[serde(default)]
    pub send_pay_date: Option<String>,
    #[serde(default)]
    pub fund_change: Option<String>,
}

impl GatewayAnswer {
    pub fn is_success(&self) -> bool {
        self.code == SUCCESS_CODE
    }

    /// The business error code (`ACQ.TRADE_NOT_EXIST`), else the gateway's (`40002`).
    pub fn error_code(&self) -> &str {
        self.sub_code.as_deref().unwrap_or(&self.code)
    }

    /// `code sub_code: sub_msg`, for a reason.
    pub fn describe(&self) -> String {
        let mut text = self.code.clone();
        if let Some(sub) = &self.sub_code {
            text.push(' ');
            text.push_str(sub);
        }
        if let Some(message) = self.sub_msg.as_ref().or(self.msg.as_ref()) {
            text.push_str(": ");
            text.push_str(message);
        }
        text
    }
}

/// A gateway answer split as the signature check needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct SignedAnswer<'a> {
    /// The exact text of the `xxx_response` (or `error_response`) value, as signed.
    pub content: &'a str,
    /// The `sign` member, when present (Alipay leaves it off some gateway errors).
    pub sign: Option<String>,
}

/// The name of `method`'s answer member: `alipay.trade.close` -> `alipay_trade_close_response`.
pub fn response_member(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// Splits a gateway answer `{"<method>_response":{...},"sign":"..."}` into the raw text of the
/// response object (not a re-serialisation: the signature is over the bytes Alipay sent) and
/// its signature. `error_response` stands in when the method's member is absent.
pub fn split_answer<'a>(body: &'a str, method: &str) -> Result<SignedAnswer<'a>, String> {
    let members = top_level_members(body)?;
    let wanted = response_member(method);
    let content = members
        .iter()
        .find(|(name, _)| *name == wanted)
        .or_else(|| members.iter().find(|(name, _)| name == "error_response"))
        .map(|(_, raw)| *raw)
        .ok_or_else(|| format!("no {wanted} in the answer"))?;
    if !content.starts_with('{') {
        return Err(format!("{wanted} is not an object"));
    }
    let sign = match members.iter().find(|(name, _)| name == "sign") {
        Some((_, raw)) => Some(
            serde_json::from_str::<String>(raw).map_err(|_| "sign is not a string".to_string())?,
        ),
        None => None,
    };
    Ok(SignedAnswer { content, sign })
}

/// The members of a JSON object as (decoded name, raw value text), checked by serde_json to be
/// well-formed first, so the scan below only has to find where each value starts and ends.
fn top_level_members(body: &str) -> Result<Vec<(String, &str)>, String> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
        .map_err(|e| format!("not a JSON object: {e}"))?;
    let bytes = body.as_bytes();
    let mut at = skip_space(bytes, 0);
    // Well-formed and an object: the first non-space byte is `{`.
    at += 1;
    let mut members = Vec::new();
    loop {
        at = skip_space(bytes, at);
        match bytes.get(at) {
            Some(b'}') | None => break,
            Some(b',') => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let name_end = string_end(bytes, at);
        let name: String = serde_json::from_str(&body[at..name_end])
            .map_err(|_| "a member name is not a string".to_string())?;
        at = skip_space(bytes, name_end);
        at = skip_space(bytes, at + 1); // the `:`
        let value_end = value_end(bytes, at);
        members.push((name, &body[at..value_end]));
        at = value_end;
    }
    Ok(members)
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

/// The index after the closing quote of the string starting at `at`.
fn string_end(bytes: &[u8], at: usize) -> usize {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index after the JSON value starting at `at` (an object or array by bracket depth outside
/// strings; a string by its closing quote; a scalar up to the next `,` `}` `]` or space).
fn value_end(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(b'"') => string_end(bytes, at),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            bytes.len()
        }
        _ => {
            let mut i = at;
            while i < bytes.len() && !matches!(bytes[i], b',' | b'}' | b']') {
                if bytes[i].is_ascii_whitespace() {
                    break;
                }
                i += 1;
            }
            i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, s)
            .unwrap()
    }

    /// The signing-string example of "自行实现签名" (<https://opendocs.alipay.com/common/02kf5q>):
    /// the parameters of
    /// `alipay.mobile.public.menu.add` and the string to sign they give.
    #[test]
    fn the_published_request_signing_string() {
        let biz = r#"{"button":[{"actionParam":"ZFB_HFCZ","actionType":"out","name":"话费充值"},{"name":"查询","subButton":[{"actionParam":"ZFB_YECX","actionType":"out","name":"余额查询"},{"actionParam":"ZFB_LLCX","actionType":"out","name":"流量查询"},{"actionParam":"ZFB_HFCX","actionType":"out","name":"话费查询"}]},{"actionParam":"http://m.alipay.com","actionType":"link","name":"最新优惠"}]}"#;
        let params = [
            ("app_id", "2014072300007148"),
            ("method", "alipay.mobile.public.menu.add"),
            ("charset", "GBK"),
            ("sign_type", "RSA2"),
            ("timestamp", "2014-07-24 03:07:50"),
            ("biz_content", biz),
            ("version", "1.0"),
            ("sign", "not part of it"),
            ("app_auth_token", ""),
        ];
        let expected = format!(
            "app_id=2014072300007148&biz_content={biz}&charset=GBK\
             &method=alipay.mobile.public.menu.add&sign_type=RSA2\
             &timestamp=2014-07-24 03:07:50&version=1.0"
        );
        assert_eq!(request_sign_content(params), expected);
    }

    /// The example notification of "异步通知验签" (<https://opendocs.alipay.com/common/02mse7>,
    /// formerly <https://docs.open.alipay.com/200/106120>) and its published string to check.
    #[test]
    fn the_published_notification_signing_string() {
        let body = "gmt_payment=2015-06-11 22:33:59&notify_id=42af7baacd1d3746cf7b56752b91edcj34\
            &seller_email=testyufabu07@alipay.com&notify_type=trade_status_sync\
            &sign=kPbQIjX+xQc8F0/A6/AocELIjhhZnGbcBN6G4MM/HmfWL4ZiHM6fWl5NQhzXJusaklZ1LFuMo+lHQUELAYeugH8LYFvxnNajOvZhuxNFbN2LhF0l/KL8ANtj8oyPM4NN7Qft2kWJTDJUpQOzCzNnV9hDxh5AaT9FPqRS6ZKxnzM=\
            &trade_no=2015061121001004400068549373&out_trade_no=21repl2ac2eOutTradeNo322\
            &gmt_create=2015-06-11 22:33:46&seller_id=2088211521646673\
            &notify_time=2015-06-11 22:34:03&subject=FACE_TO_FACE_PAYMENT_PRECREATE中文\
            &trade_status=TRADE_SUCCESS&sign_type=RSA2";
        let params: Vec<(&str, &str)> = body
            .split('&')
            .map(|pair| pair.split_once('=').unwrap())
            .collect();
        assert_eq!(
            notification_sign_content(params),
            "gmt_create=2015-06-11 22:33:46&gmt_payment=2015-06-11 22:33:59\
             &notify_id=42af7baacd1d3746cf7b56752b91edcj34&notify_time=2015-06-11 22:34:03\
             &notify_type=trade_status_sync&out_trade_no=21repl2ac2eOutTradeNo322\
             &seller_email=testyufabu07@alipay.com&seller_id=2088211521646673\
             &subject=FACE_TO_FACE_PAYMENT_PRECREATE中文\
             &trade_no=2015061121001004400068549373&trade_status=TRADE_SUCCESS"
        );
    }

    #[test]
    fn yuan_has_exactly_two_decimals() {
        assert_eq!(yuan(1230), "12.30");
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(10_000_000_000), "100000000.00");
        assert_eq!(yuan(-5), "-0.05");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn cents_read_exactly_or_not_at_all() {
        assert_eq!(cents("12.30"), Some(1230));
        assert_eq!(cents("0.01"), Some(1));
        assert_eq!(cents("88.88"), Some(8888));
        assert_eq!(cents("12.3"), Some(1230));
        assert_eq!(cents("12"), Some(1200));
        assert_eq!(cents("0.10"), Some(10));
        for bad in [
            "12.345",
            "-1.00",
            "+1.00",
            "1e2",
            "",
            ".5",
            "1.",
            " 1.00",
            "1.00 ",
            "abc",
            "1,00",
            "0x10",
            "１.００",
            "99999999999999999999.00",
        ] {
            assert_eq!(cents(bad), None, "{bad:?}");
        }
        for amount in [0, 1, 99, 100, 1230, 123_456_789] {
            assert_eq!(cents(&yuan(amount)), Some(amount));
        }
    }

    #[test]
    fn times_are_china_standard_time() {
        assert_eq!(cst_time(at(2015, 6, 11, 14, 33, 59)), "2015-06-11 22:33:59");
        assert_eq!(cst_time(at(2024, 12, 31, 16, 0, 0)), "2025-01-01 00:00:00");
        assert_eq!(
            parse_cst_time("2015-06-11 22:33:59"),
            Some(at(2015, 6, 11, 14, 33, 59))
        );
        assert_eq!(
            parse_cst_time("2025-01-01 00:00:00"),
            Some(at(2024, 12, 31, 16, 0, 0))
        );
        assert_eq!(parse_cst_time("2015-06-11T22:33:59"), None);
        assert_eq!(parse_cst_time("2015-06-11 22:33"), None);
        assert_eq!(parse_cst_time(""), None);
    }

    /// The answer examples of alipay.trade.query / close (opendocs, "响应示例").
    #[test]
    fn answers_split_on_the_raw_response_text() {
        let body = r#"{"alipay_trade_query_response":{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"6823789339978248","buyer_logon_id":"159****5620","trade_status":"TRADE_CLOSED","total_amount":"88.88","send_pay_date":"2014-11-27 15:45:57","fund_bill_list":[{"fund_channel":"ALIPAYACCOUNT","amount":"10"}]},"sign":"ERITJKEIJKJHKKKKKKKHJEREEEEEEEEEEE"}"#;
        let split = split_answer(body, "alipay.trade.query").unwrap();
        assert!(split.content.starts_with(r#"{"code":"10000""#));
        assert!(split.content.ends_with(r#""amount":"10"}]}"#));
        assert_eq!(
            split.sign.as_deref(),
            Some("ERITJKEIJKJHKKKKKKKHJEREEEEEEEEEEE")
        );
        let answer: GatewayAnswer = serde_json::from_str(split.content).unwrap();
        assert!(answer.is_success());
        assert_eq!(answer.trade_status.as_deref(), Some("TRADE_CLOSED"));
        assert_eq!(answer.total_amount.as_deref(), Some("88.88"));

        // Sign first, spaces, escapes and braces inside strings: still the exact text.
        let body = "{ \"sign\" : \"c2ln\" , \"alipay_trade_close_response\" : \
                    {\"code\":\"40004\",\"msg\":\"Business Failed\",\"sub_code\":\"ACQ.TRADE_NOT_EXIST\",\
                    \"sub_msg\":\"a \\\"}\\\" {brace\"} }";
        let split = split_answer(body, "alipay.trade.close").unwrap();
        assert_eq!(
            split.content,
            "{\"code\":\"40004\",\"msg\":\"Business Failed\",\"sub_code\":\"ACQ.TRADE_NOT_EXIST\",\
             \"sub_msg\":\"a \\\"}\\\" {brace\"}"
        );
        assert_eq!(split.sign.as_deref(), Some("c2ln"));
        let answer: GatewayAnswer = serde_json::from_str(split.content).unwrap();
        assert_eq!(answer.error_code(), "ACQ.TRADE_NOT_EXIST");

        // A gateway error without a signature.
        let body = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}"#;
        let split = split_answer(body, "alipay.trade.query").unwrap();
        assert_eq!(split.sign, None);
        let answer: GatewayAnswer = serde_json::from_str(split.content).unwrap();
        assert_eq!(
            answer.describe(),
            "40002 isv.invalid-app-id: Invalid Arguments"
        );

        assert!(split_answer("<html>", "alipay.trade.query").is_err());
        assert!(split_answer(r#"{"sign":"x"}"#, "alipay.trade.query").is_err());
        assert!(split_answer(
            r#"{"alipay_trade_query_response":"x"}"#,
            "alipay.trade.query"
        )
        .is_err());
        assert_eq!(
            response_member("alipay.trade.refund"),
            "alipay_trade_refund_response"
        );
    }

    #[test]
    fn biz_content_is_the_documented_json() {
        let content = PagePayContent {
            out_trade_no: "ORD1",
            total_amount: yuan(1230),
            subject: "Rust 入门".into(),
            product_code: "FAST_INSTANT_TRADE_PAY",
            time_expire: cst_time(at(2025, 1, 1, 0, 0, 0)),
        };
        assert_eq!(
            serde_json::to_string(&content).unwrap(),
            r#"{"out_trade_no":"ORD1","total_amount":"12.30","subject":"Rust 入门","product_code":"FAST_INSTANT_TRADE_PAY","time_expire":"2025-01-01 08:00:00"}"#
        );
    }
}

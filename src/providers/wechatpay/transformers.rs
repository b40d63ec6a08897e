//! WeChat Pay API v3's wire formats: the signature base strings, the `Authorization` header, the
//! JSON bodies of Native pay, close, refund and query, the notification envelope and its
//! AEAD_AES_256_GCM resource, and the conversions of amounts (integer fen) and times (RFC 3339
//! with the +08:00 offset). Pure functions and plain types, so each is unit-tested against what
//! WeChat Pay publishes; nothing here leaves the adapter.
//!
//! Sources: request signature https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml,
//! response and notification signature https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_1.shtml,
//! resource decryption https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_2.shtml.

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, TimeZone as _};
use ring::aead;
use serde::{Deserialize, Serialize};

/// The authentication scheme of every request's `Authorization` header.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// The only resource encryption WeChat Pay uses (and the only one the adapter accepts).
pub const RESOURCE_ALGORITHM: &str = "AEAD_AES_256_GCM";

/// The base string a request's signature covers: five lines, each ending in `\n` — method,
/// path with query, Unix seconds, nonce, body (empty for GET).
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The base string a response's or notification's `Wechatpay-Signature` covers: the
/// `Wechatpay-Timestamp`, the `Wechatpay-Nonce` and the raw body, each followed by `\n`.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// The `Authorization` header value (the five fields in the order WeChat Pay's examples use;
/// the protocol says their order does not matter).
pub fn authorization(
    mchid: &str,
    nonce: &str,
    signature: &str,
    timestamp: i64,
    serial_no: &str,
) -> String {
    format!(
        "{AUTH_SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",\
         timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    )
}

/// `amount.total` / `amount.refund` from engine cents: WeChat Pay counts CNY in fen (1/100
/// yuan), as an integer, so the value is the cents unchanged — but it must be positive and fit
/// the 32-bit `int` the API declares.
pub fn fen_from_cents(cents: i64) -> Result<i64, String> {
    if cents <= 0 || cents > i64::from(i32::MAX) {
        return Err(format!(
            "amount {cents} cents is outside WeChat Pay's 1..=2147483647 fen"
        ));
    }
    Ok(cents)
}

/// Engine cents from an `amount.total` WeChat Pay sent: fen are cents; a negative amount is
/// refused.
pub fn cents_from_fen(fen: i64) -> Result<i64, String> {
    if fen < 0 {
        return Err(format!("negative amount {fen}"));
    }
    Ok(fen)
}

/// `time_expire`: RFC 3339 with seconds and the +08:00 offset (`2018-06-08T10:34:56+08:00`)
/// of an engine time (UTC).
pub fn time_expire(at_utc: NaiveDateTime) -> String {
    // China Standard Time (no daylight saving since 1991): always +08:00.
    chrono_tz::Asia::Shanghai
        .from_utc_datetime(&at_utc)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// An RFC 3339 time WeChat Pay sent (`success_time`), as engine time (UTC).
pub fn parse_time(text: &str) -> Result<NaiveDateTime, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.naive_utc())
        .map_err(|e| format!("time {text:?} is not RFC 3339: {e}"))
}

/// Opens an AEAD resource: `ciphertext_base64` is the base64 of the ciphertext with its
/// 16-byte tag appended, `nonce` the 12 ASCII bytes of the resource's nonce, `aad` its
/// `associated_data`. `algorithm` is `AES_256_GCM` for the 32-byte APIv3 key (the unit tests
/// also run an SDK vector made with a 16-byte key through `AES_128_GCM`).
pub fn open_resource(
    algorithm: &'static aead::Algorithm,
    key: &[u8],
    nonce: &str,
    aad: &str,
    ciphertext_base64: &str,
) -> Result<Vec<u8>, String> {
    let unbound =
        aead::UnboundKey::new(algorithm, key).map_err(|_| "the APIv3 key has the wrong length")?;
    let key = aead::LessSafeKey::new(unbound);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce.as_bytes())
        .map_err(|_| "the resource nonce is not 12 bytes")?;
    let mut in_out = base64::engine::general_purpose::STANDARD
        .decode(ciphertext_base64.trim())
        .map_err(|_| "the resource ciphertext is not base64")?;
    let plaintext = key
        .open_in_place(nonce, aead::Aad::from(aad.as_bytes()), &mut in_out)
        .map_err(|_| "the resource does not decrypt (wrong APIv3 key, nonce, aad or tag)")?;
    Ok(plaintext.to_vec())
}

/// `POST /v3/pay/transactions/native`.
#[derive(Debug, Serialize)]
pub struct NativeRequest<'a> {
    pub appid: &'a str,
    pub mchid: &'a str,
    pub description: &'a str,
    pub out_trade_no: &'a str,
    pub time_expire: String,
    pub notify_url: &'a str,
    pub amount: OrderAmount<'a>,
}

#[derive(Debug, Serialize)]
pub struct OrderAmount<'a> {
    pub total: i64,
    pub currency: &'a str,
}

/// The answer to Native pay: the QR code's content.
#[derive(Debug, Deserialize)]
pub struct NativeResponse {
    pub code_url: String,
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close`.
#[derive(Debug, Serialize)]
pub struct CloseRequest<'a> {
    pub mchid: &'a str,
}

/// `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Serialize)]
pub struct RefundBody<'a> {
    pub transaction_id: &'a str,
    pub out_refund_no: &'a str,
    pub amount: RefundAmount<'a>,
}

#[derive(Debug, Serialize)]
pub struct RefundAmount<'a> {
    pub refund: i64,
    pub total: i64,
    pub currency: &'a str,
}

/// The refund as WeChat Pay answers it (only what the adapter reads).
#[derive(Debug, Deserialize)]
pub struct RefundResponse {
    /// `SUCCESS`, `PROCESSING`, `CLOSED`, `ABNORMAL`.
    pub status: String,
    #[serde(default)]
    pub refund_id: Option<String>,
}

/// WeChat Pay's error body (`{"code":"ORDER_NOT_EXIST","message":"..."}`).
#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    pub code: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// A transaction: the query answer, and the plaintext of a `TRANSACTION.*` notification.
#[derive(Debug, Deserialize)]
pub struct Transaction {
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default)]
    pub mchid: Option<String>,
    pub out_trade_no: String,
    /// Present once the payer has paid (absent for `NOTPAY`, `CLOSED` without payment).
    #[serde(default)]
    pub transaction_id: Option<String>,
    pub trade_state: String,
    #[serde(default)]
    pub success_time: Option<String>,
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Deserialize)]
pub struct TransactionAmount {
    /// The order's amount, in fen.
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub payer_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// A notification's envelope (the signed raw body).
#[derive(Debug, Deserialize)]
pub struct Notification {
    pub id: String,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub resource_type: Option<String>,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, ...
    pub event_type: String,
    #[serde(default)]
    pub summary: Option<String>,
    pub resource: Resource,
}

/// The encrypted object inside a notification.
#[derive(Debug, Deserialize)]
pub struct Resource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: Option<String>,
    #[serde(default)]
    pub original_type: Option<String>,
    pub nonce: String,
}

/// What a `trade_state` means to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeState {
    /// `SUCCESS`; also `REFUND` (paid, then refunded at the merchant's request: money was
    /// received, which is what the engine decides on).
    Paid,
    /// `NOTPAY`, `USERPAYING`: waiting for the payer.
    Open,
    /// `CLOSED`, `REVOKED`, `PAYERROR`: over without money.
    Closed,
}

impl TradeState {
    /// `None` for a state the adapter does not know.
    pub fn parse(trade_state: &str) -> Option<TradeState> {
        match trade_state {
            "SUCCESS" | "REFUND" => Some(TradeState::Paid),
            "NOTPAY" | "USERPAYING" => Some(TradeState::Open),
            "CLOSED" | "REVOKED" | "PAYERROR" => Some(TradeState::Closed),
            _ => None,
        }
    }
}

/// `description` is `string[1,127]`: the subject cut at a character boundary to 127 bytes (the
/// strictest reading of the limit, so a long Chinese title is never refused).
pub fn description(subject: &str, order_no: &str) -> String {
    let text = if subject.trim().is_empty() {
        order_no
    } else {
        subject
    };
    let mut end = text.len().min(127);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// WeChat Pay's request-signature walkthrough: `GET /v3/certificates` at 1554208460 with
    /// nonce `593BEC0C930BF1AFEB40B4A08C8FB242` and no body gives this five-line string
    /// (https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml, step six).
    #[test]
    fn the_request_base_string_is_the_documented_one() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/certificates",
                1554208460,
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                ""
            ),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        // A POST signs the JSON body as sent, followed by its own newline.
        assert_eq!(
            request_message("POST", "/v3/pay/transactions/native", 1, "N", "{\"a\":1}"),
            "POST\n/v3/pay/transactions/native\n1\nN\n{\"a\":1}\n"
        );
    }

    #[test]
    fn the_response_base_string_ends_every_line_with_a_newline() {
        assert_eq!(
            response_message(
                "1554209980",
                "c5ac7061fccab6bf3e254dcf98995b8c",
                b"{\"x\":1}"
            ),
            b"1554209980\nc5ac7061fccab6bf3e254dcf98995b8c\n{\"x\":1}\n".to_vec()
        );
        // A 204 has an empty body: the base string still has three lines.
        assert_eq!(response_message("1", "n", b""), b"1\nn\n\n".to_vec());
    }

    /// The header's shape, as in the documented example (`Authorization: WECHATPAY2-SHA256-
    /// RSA2048 mchid="1900009191",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",signature=
    /// "...",timestamp="1554208460",serial_no="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"`,
    /// https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml, step four).
    #[test]
    fn the_authorization_header_has_the_documented_shape() {
        assert_eq!(
            authorization(
                "1900009191",
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                "c2ln",
                1554208460,
                "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"
            ),
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",\
             nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",signature=\"c2ln\",\
             timestamp=\"1554208460\",serial_no=\"1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C\""
        );
    }

    /// The SHA256withRSA vector of WeChat Pay's official Go SDK (PKCS#8 test key, message
    /// `source`): https://github.com/wechatpay-apiv3/wechatpay-go/blob/main/utils/sign_test.go.
    /// PKCS#1 v1.5 is deterministic, so ring's signature must be this one byte for byte.
    #[test]
    fn signing_reproduces_the_official_sdk_vector() {
        const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDZUJN33V+dSfvd
fL0Mu+39XrZNXFFMQSy1V15FpncHeV47SmV0TzTqZc7hHB0ddqAdDi8Z5k3TKqb7
6sOwYr5TcAfuR6PIPaleyE0/0KrljBum2Isa2Nyq7Dgc3ElBQ6YN4l/a+DpvKaz1
FSKmKrhLNskqokWVSlu4g8OlKlbPXQ9ibII14MZRQrrkTmHYHzfi7GXXM0thAKuR
0HNvyhTHBh4/lrYM3GaMvmWwkwvsMavnOex6+eioZHBOb1/EIZ/LzC6zuHArPpyW
3daGaZ1rtQB1vVzTyERAVVFsXXgBHvfFud3w3ShsJYk8JvMwK2RpJ5/gV0QSARcm
LDRUAlPzAgMBAAECggEBAMc7rDeUaXiWv6bMGbZ3BTXpg1FhdddnWUnYE8HfX/km
OFI7XtBHXcgYFpcjYz4D5787pcsk7ezPidAj58zqenuclmjKnUmT3pfbI5eCA2v4
C9HnbYDrmUPK1ZcADtka4D6ScDccpNYNa1g2TFHzkIrEa6H+q7S3O2fqxY/DRVtN
0JIXalBb8daaqL5QVzSmM2BMVnHy+YITJWIkP2a3pKs9C0W65JGDsnG0wVrHinHF
+cnhFZIbaPEI//DAFMc9NkrWOKVRTEgcCUxCFaHOZVNxDWZD7A2ZfJB2rK6eg//y
gEiFDR2h6mTaDowMB4YF2n2dsIO4/dCG8vPHI20jn4ECgYEA/ZGu6lEMlO0XZnam
AZGtiNgLcCfM/C2ZERZE7QTRPZH1WdK92Al9ndldsswFw4baJrJLCmghjF/iG4zi
hhBvLnOLksnZUfjdumxoHDWXo2QBWbI5QsWIE7AuTiWgWj1I7X4fCXSQf6i+M/y2
6TogQ7d0ANpZFyOkTNMn/tiJvLECgYEA22XqlamG/yfAGWery5KNH2DGlTIyd6xJ
WtJ9j3jU99lZ0bCQ5xhiBbU9ImxCi3zgTsoqLWgA/p00HhNFNoUcTl9ofc0G3zwT
D1y0ZzcnVKxGJdZ6ohW52V0hJStAigtjYAsUgjm7//FH7PiQDBDP1Wa6xSRkDQU/
aSbQxvEE8+MCgYEA3bb8krW7opyM0XL9RHH0oqsFlVO30Oit5lrqebS0oHl3Zsr2
ZGgoBlWBsEzk3UqUhTFwm/DhJLTSJ/TQPRkxnhQ5/mewNhS9C7yua7wQkzVmWN+V
YeUGTvDGDF6qDz12/vJAgSwDDRym8x4NcXD5tTw7mmNRcwIfL22SkysThIECgYAV
BgccoEoXWS/HP2/u6fQr9ZIR6eV8Ij5FPbZacTG3LlS1Cz5XZra95UgebFFUHHtC
EY1JHJY7z8SWvTH8r3Su7eWNaIAoFBGffzqqSVazfm6aYZsOvRY6BfqPHT3p/H1h
Tq6AbBffxrcltgvXnCTORjHPglU0CjSxVs7awW3AEQKBgB5WtaC8VLROM7rkfVIq
+RXqE5vtJfa3e3N7W3RqxKp4zHFAPfr82FK5CX2bppEaxY7SEZVvVInKDc5gKdG/
jWNRBmvvftZhY59PILHO2X5vO4FXh7suEjy6VIh0gsnK36mmRboYIBGsNuDHjXLe
BDa+8mDLkWu5nHEhOxy2JJZl
-----END PRIVATE KEY-----
";
        const EXPECTED: &str = "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoV\
z+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLl\
i/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj\
1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg==";
        let key = crate::providers::keys::SigningKey::parse(KEY).unwrap();
        assert_eq!(key.sign_base64(b"source").unwrap(), EXPECTED);
    }

    /// The AEAD vector of WeChat Pay's official Go SDK
    /// (https://github.com/wechatpay-apiv3/wechatpay-go/blob/main/utils/aes_test.go): its key
    /// is 16 bytes, so it runs through AES-128-GCM — the same framing (base64, tag appended,
    /// ASCII nonce and aad) as the 32-byte APIv3 key's AES-256-GCM.
    #[test]
    fn decryption_reproduces_the_official_sdk_vector() {
        let open = |key: &str, ciphertext: &str| {
            open_resource(
                &aead::AES_128_GCM,
                key.as_bytes(),
                "wCq51qZv4Yfg",
                "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                ciphertext,
            )
        };
        assert_eq!(
            open("testAPIv3Key0000", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC").unwrap(),
            b"Hello World".to_vec()
        );
        assert!(open("testAPIv3Key1111", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC").is_err());
        assert!(open("testAPIv3Key0000", "invalid cipher").is_err());
        assert!(open("testAPIv3Key0000", "SGVsbG8gV29ybGQK").is_err());
        assert!(open("not a aes key", "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC").is_err());
    }

    #[test]
    fn an_aes_256_resource_opens_with_its_key_nonce_and_aad_only() {
        let key = b"0123456789abcdef0123456789ABCDEF";
        let sealing =
            aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).unwrap());
        let mut in_out = b"{\"trade_state\":\"SUCCESS\"}".to_vec();
        sealing
            .seal_in_place_append_tag(
                aead::Nonce::try_assume_unique_for_key(b"fdasflkja484").unwrap(),
                aead::Aad::from(b"transaction"),
                &mut in_out,
            )
            .unwrap();
        let ciphertext = base64::engine::general_purpose::STANDARD.encode(&in_out);
        let open = |key: &[u8], nonce: &str, aad: &str| {
            open_resource(&aead::AES_256_GCM, key, nonce, aad, &ciphertext)
        };
        assert_eq!(
            open(key, "fdasflkja484", "transaction").unwrap(),
            b"{\"trade_state\":\"SUCCESS\"}".to_vec()
        );
        assert!(open(
            b"0123456789abcdef0123456789ABCDEX",
            "fdasflkja484",
            "transaction"
        )
        .is_err());
        assert!(open(key, "fdasflkja485", "transaction").is_err());
        assert!(open(key, "fdasflkja484", "refund").is_err());
        assert!(open(key, "short", "transaction").is_err());
    }

    #[test]
    fn amounts_are_fen_exactly() {
        assert_eq!(fen_from_cents(1).unwrap(), 1);
        assert_eq!(fen_from_cents(9_999).unwrap(), 9_999);
        assert_eq!(fen_from_cents(2_147_483_647).unwrap(), 2_147_483_647);
        assert!(fen_from_cents(0).is_err());
        assert!(fen_from_cents(-5).is_err());
        assert!(fen_from_cents(2_147_483_648).is_err());
        assert_eq!(cents_from_fen(100).unwrap(), 100);
        assert_eq!(cents_from_fen(0).unwrap(), 0);
        assert!(cents_from_fen(-1).is_err());
        // The JSON number is the integer itself, never a float.
        let body = serde_json::to_string(&OrderAmount {
            total: fen_from_cents(1999).unwrap(),
            currency: "CNY",
        })
        .unwrap();
        assert_eq!(body, "{\"total\":1999,\"currency\":\"CNY\"}");
    }

    #[test]
    fn times_are_rfc3339_in_china_standard_time() {
        let at = NaiveDate::from_ymd_opt(2026, 12, 3)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        assert_eq!(time_expire(at), "2026-12-03T18:00:00+08:00");
        // Past midnight in Beijing is the next day.
        let late = NaiveDate::from_ymd_opt(2026, 12, 31)
            .unwrap()
            .and_hms_opt(16, 30, 5)
            .unwrap();
        assert_eq!(time_expire(late), "2027-01-01T00:30:05+08:00");
        // The documented success_time example.
        assert_eq!(
            parse_time("2018-06-08T10:34:56+08:00").unwrap(),
            NaiveDate::from_ymd_opt(2018, 6, 8)
                .unwrap()
                .and_hms_opt(2, 34, 56)
                .unwrap()
        );
        assert_eq!(parse_time(&time_expire(late)).unwrap(), late);
        assert!(parse_time("2018-06-08 10:34:56").is_err());
    }

    #[test]
    fn trade_states_map_to_the_engine_s_terms() {
        assert_eq!(TradeState::parse("SUCCESS"), Some(TradeState::Paid));
        assert_eq!(TradeState::parse("REFUND"), Some(TradeState::Paid));
        assert_eq!(TradeState::parse("NOTPAY"), Some(TradeState::Open));
        assert_eq!(TradeState::parse("USERPAYING"), Some(TradeState::Open));
        for closed in ["CLOSED", "REVOKED", "PAYERROR"] {
            assert_eq!(TradeState::parse(closed), Some(TradeState::Closed));
        }
        assert_eq!(TradeState::parse("success"), None);
    }

    /// The documented query answer and decrypted notification of a paid transaction
    /// (https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_4_2.shtml, example trimmed to
    /// the fields the adapter reads plus some it ignores).
    #[test]
    fn a_documented_transaction_reads_back() {
        let body = r#"{"amount":{"currency":"CNY","payer_currency":"CNY","payer_total":1,"total":1},
            "appid":"wxd678efh567hg6787","attach":"自定义数据","bank_type":"OTHERS",
            "mchid":"1230000109","out_trade_no":"1217752501201407033233368018",
            "payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"promotion_detail":[],
            "success_time":"2018-06-08T10:34:56+08:00","trade_state":"SUCCESS",
            "trade_state_desc":"支付成功","trade_type":"NATIVE",
            "transaction_id":"1217752501201407033233368018"}"#;
        let t: Transaction = serde_json::from_str(body).unwrap();
        assert_eq!(t.appid.as_deref(), Some("wxd678efh567hg6787"));
        assert_eq!(t.mchid.as_deref(), Some("1230000109"));
        assert_eq!(t.trade_state, "SUCCESS");
        assert_eq!(t.amount.unwrap().total, Some(1));
        // An unpaid one has no transaction_id.
        let open: Transaction = serde_json::from_str(
            r#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"NOTPAY",
                "amount":{"total":100,"currency":"CNY"}}"#,
        )
        .unwrap();
        assert!(open.transaction_id.is_none());
        // The documented error body.
        let e: ErrorResponse =
            serde_json::from_str(r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#).unwrap();
        assert_eq!(e.code, "ORDER_NOT_EXIST");
    }

    /// The documented notification envelope
    /// (https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_4_5.shtml).
    #[test]
    fn the_documented_notification_envelope_reads_back() {
        let body = r#"{"id":"EV-2018022511223320873","create_time":"2015-05-20T13:29:35+08:00",
            "resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS",
            "summary":"支付成功","resource":{"original_type":"transaction",
            "algorithm":"AEAD_AES_256_GCM","ciphertext":"","associated_data":"","nonce":""}}"#;
        let n: Notification = serde_json::from_str(body).unwrap();
        assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
        assert_eq!(n.resource.algorithm, RESOURCE_ALGORITHM);
        assert_eq!(n.resource.original_type.as_deref(), Some("transaction"));
    }

    #[test]
    fn descriptions_fit_127_bytes_at_a_character_boundary() {
        assert_eq!(description("Rust 101", "o1"), "Rust 101");
        assert_eq!(description("  ", "o1"), "o1");
        let long = "课".repeat(60); // 180 bytes
        let cut = description(&long, "o1");
        assert!(cut.len() <= 127);
        assert_eq!(cut, "课".repeat(42));
    }

    #[test]
    fn the_native_request_has_the_documented_field_names() {
        let at = NaiveDate::from_ymd_opt(2026, 12, 3)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        let body = serde_json::to_value(NativeRequest {
            appid: "wxd678efh567hg6787",
            mchid: "1230000109",
            description: "Image形象店-深圳腾大-QQ公仔",
            out_trade_no: "1217752501201407033233368018",
            time_expire: time_expire(at),
            notify_url: "https://www.weixin.qq.com/wxpay/pay.php",
            amount: OrderAmount {
                total: 100,
                currency: "CNY",
            },
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"appid":"wxd678efh567hg6787","mchid":"1230000109",
                "description":"Image形象店-深圳腾大-QQ公仔",
                "out_trade_no":"1217752501201407033233368018",
                "time_expire":"2026-12-03T18:00:00+08:00",
                "notify_url":"https://www.weixin.qq.com/wxpay/pay.php",
                "amount":{"total":100,"currency":"CNY"}})
        );
    }
}

//! Standard Webhooks signatures: `v1,` + base64 of HMAC-SHA256, keyed with the decoded
//! `whsec_` secret, over `"{webhook-id}.{webhook-timestamp}.{body}"`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `webhook-signature` header value of one attempt.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode_webhook_secret;

    /// The test vector the Standard Webhooks libraries publish (and svix's with them).
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let key = decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn another_timestamp_or_body_signs_differently() {
        let key = decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = sign(&key, "1", 1_614_265_330, "{}");
        assert_ne!(base, sign(&key, "1", 1_614_265_331, "{}"));
        assert_ne!(base, sign(&key, "1", 1_614_265_330, "{ }"));
        assert_ne!(base, sign(&key, "2", 1_614_265_330, "{}"));
    }
}

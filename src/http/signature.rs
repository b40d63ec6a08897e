//! The payment provider's `X-Signature` header, Stripe style:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. Several `v1` may appear
//! (key rotation); other schemes are ignored; whitespace is trimmed and hex is
//! case-insensitive; the comparison is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Signature header has no timestamp")]
    MissingTimestamp,
    #[error("the X-Signature timestamp is malformed")]
    BadTimestamp,
    #[error("the X-Signature timestamp is outside the tolerance window")]
    Stale,
    #[error("the X-Signature header has no v1 signature")]
    MissingSignature,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// Verifies `header` for `body` at `now` (unix seconds).
pub fn verify(
    header: &str,
    body: &[u8],
    secret: &[u8],
    tolerance_secs: u64,
    now: i64,
) -> Result<(), SignatureError> {
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp.replace(value.trim()).is_some() => {
                return Err(SignatureError::BadTimestamp);
            }
            "v1" => signatures.push(value.trim()),
            _ => {}
        }
    }
    let t_text = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if t_text.is_empty() || !t_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    let t: i64 = t_text.parse().map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(t) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    if signatures.is_empty() {
        return Err(SignatureError::MissingSignature);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(t_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    for candidate in signatures {
        let Ok(bytes) = hex::decode(candidate) else {
            continue;
        };
        if mac.clone().verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// Signs `body` at `t` the way the provider does (for tools and tests).
pub fn sign(body: &[u8], secret: &[u8], t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn accepts_a_fresh_signature_in_any_hex_case_among_others() {
        let body = br#"{"a":1}"#;
        let header = sign(body, b"k", NOW);
        assert_eq!(verify(&header, body, b"k", 300, NOW + 300), Ok(()));
        let upper = header
            .to_uppercase()
            .replace("T=", "t=")
            .replace("V1=", "v1=");
        assert_eq!(verify(&upper, body, b"k", 300, NOW), Ok(()));
        let rotated = format!(" v0=zz , v1=00ff, {} ", header.replace(',', " , "));
        assert_eq!(verify(&rotated, body, b"k", 300, NOW), Ok(()));
    }

    #[test]
    fn rejects_wrong_stale_and_malformed_signatures() {
        let body = b"{}";
        let header = sign(body, b"k", NOW);
        assert_eq!(
            verify(&header, b"{ }", b"k", 300, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, b"other", 300, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, b"k", 300, NOW + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header, body, b"k", 300, NOW - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("v1=00", body, b"k", 300, NOW),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify("t=x,v1=00", body, b"k", 300, NOW),
            Err(SignatureError::BadTimestamp)
        );
        let no_sig = format!("t={NOW}");
        assert_eq!(
            verify(&no_sig, body, b"k", 300, NOW),
            Err(SignatureError::MissingSignature)
        );
    }
}

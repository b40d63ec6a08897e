//! Client JWTs (HS256 with `auth.jwt_secret`, `sub` = user id, `exp` required, valid iff
//! `nbf <= now < exp` in whole seconds, no leeway, no `crit` header) and the admin bearer
//! token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id: a string per RFC 7519, a number is accepted too.
    sub: serde_json::Value,
    exp: i64,
    /// When present it must be a whole number of seconds (`null` is not absent).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// A claim that is there: `Some` of its value, never `None` for a `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize(d).map(Some)
}

const INVALID: ApiError = ApiError::Unauthenticated("invalid or expired token");

impl JwtKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A client token for `user_id`, valid for `ttl_secs`.
    pub fn issue(
        &self,
        user_id: i64,
        ttl_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: serde_json::Value::String(user_id.to_string()),
            exp: now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
            nbf: None,
            iat: Some(now),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The user id a valid token names (whether that user exists is checked by the caller).
    pub fn verify(&self, token: &str) -> Result<i64, ApiError> {
        refuse_crit(token)?;
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|_| INVALID)?;
        // The SPEC's window in one place, on one clock reading: the library allows
        // `exp == now`, and RFC 7519 says a token is expired on or after `exp`.
        let now = chrono::Utc::now().timestamp();
        let from = data.claims.nbf.unwrap_or(i64::MIN);
        if !(from <= now && now < data.claims.exp) {
            return Err(INVALID);
        }
        user_id(&data.claims.sub).ok_or(ApiError::Unauthenticated(
            "the token's sub is not a user id",
        ))
    }
}

/// RFC 7515 §4.1.11: a `crit` header names extensions that must be understood, and this
/// engine understands none. jsonwebtoken's `Header` drops unknown fields, so the raw header
/// is read here.
fn refuse_crit(token: &str) -> Result<(), ApiError> {
    let encoded = token.split('.').next().unwrap_or_default();
    let header: serde_json::Map<String, serde_json::Value> = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(INVALID)?;
    if header.contains_key("crit") {
        return Err(ApiError::Unauthenticated(
            "the token has a crit header, which this engine does not support",
        ));
    }
    Ok(())
}

/// A `sub` naming a user: a string in canonical form (`^[1-9][0-9]*$`, so not `"01"`, `"+1"`
/// or `"1.0"`), or a positive integer number.
fn user_id(sub: &serde_json::Value) -> Option<i64> {
    let id = match sub {
        serde_json::Value::String(s) => crate::domain::canonical_id(s)?,
        // Integers only: serde_json reads `1.0` and `1e0` as floats, which `as_i64` refuses.
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    (id > 0).then_some(id)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &actix_web::HttpRequest) -> Option<&str> {
    let mut values = req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION);
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        // Two credentials: trust neither.
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares in constant time, so response timing tells nothing about the admin token.
pub fn token_matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let keys = JwtKeys::new("secret");
        let token = keys.issue(42, 60).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), 42);
        assert!(JwtKeys::new("other").verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }

    #[test]
    fn numeric_sub_is_accepted_and_expiry_is_required() {
        let keys = JwtKeys::new("s");
        let exp = chrono::Utc::now().timestamp() + 60;
        let numeric = encode(
            &Header::default(),
            &serde_json::json!({"sub": 7, "exp": exp}),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert_eq!(keys.verify(&numeric).unwrap(), 7);
        let no_exp = encode(
            &Header::default(),
            &serde_json::json!({"sub": "7"}),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(keys.verify(&no_exp).is_err());
        let expired = encode(
            &Header::default(),
            &serde_json::json!({"sub": "7", "exp": exp - 120}),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(keys.verify(&expired).is_err());
    }

    /// A token with any header, HS256-signed by hand (jsonwebtoken's `Header` cannot carry
    /// `crit`).
    fn signed(header: &serde_json::Value, claims: &serde_json::Value, secret: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(message.as_bytes());
        format!(
            "{message}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn with_claims(claims: serde_json::Value) -> String {
        signed(
            &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            &claims,
            "s",
        )
    }

    #[test]
    fn not_before_is_checked_in_whole_seconds_without_leeway() {
        let keys = JwtKeys::new("s");
        let now = chrono::Utc::now().timestamp();
        let token = |nbf: serde_json::Value| {
            with_claims(serde_json::json!({"sub": "7", "exp": now + 600, "nbf": nbf}))
        };
        assert_eq!(keys.verify(&token(serde_json::json!(now - 60))).unwrap(), 7);
        // `nbf <= now`: valid from the `nbf` second itself (`now` may have moved on since).
        assert_eq!(keys.verify(&token(serde_json::json!(now))).unwrap(), 7);
        for nbf in [
            serde_json::json!(now + 2),
            serde_json::json!(now + 60),
            serde_json::json!(i64::MAX),
            serde_json::json!("0"),
            serde_json::json!(null),
            serde_json::json!(1.5),
        ] {
            assert!(keys.verify(&token(nbf.clone())).is_err(), "nbf {nbf}");
        }
        // Absent: no lower bound.
        let plain = with_claims(serde_json::json!({"sub": "7", "exp": now + 600}));
        assert_eq!(keys.verify(&plain).unwrap(), 7);
    }

    #[test]
    fn a_crit_header_is_refused() {
        let keys = JwtKeys::new("s");
        let claims = serde_json::json!({"sub": "7", "exp": chrono::Utc::now().timestamp() + 600});
        let plain = signed(
            &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            &claims,
            "s",
        );
        assert_eq!(keys.verify(&plain).unwrap(), 7);
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["b64"]),
            serde_json::json!([]),
            serde_json::json!(null),
        ] {
            let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "crit": crit});
            let token = signed(&header, &claims, "s");
            assert!(keys.verify(&token).is_err(), "crit {crit}");
        }
    }

    #[test]
    fn sub_must_be_a_canonical_positive_integer() {
        let keys = JwtKeys::new("s");
        let exp = chrono::Utc::now().timestamp() + 600;
        let token =
            |sub: serde_json::Value| with_claims(serde_json::json!({"sub": sub, "exp": exp}));
        assert_eq!(keys.verify(&token(serde_json::json!("1"))).unwrap(), 1);
        assert_eq!(keys.verify(&token(serde_json::json!(1))).unwrap(), 1);
        assert_eq!(keys.verify(&token(serde_json::json!("120"))).unwrap(), 120);
        let max = serde_json::json!(i64::MAX.to_string());
        assert_eq!(keys.verify(&token(max)).unwrap(), i64::MAX);
        for sub in [
            serde_json::json!("+1"),
            serde_json::json!("01"),
            serde_json::json!("1.0"),
            serde_json::json!(" 1"),
            serde_json::json!("1 "),
            serde_json::json!("1e0"),
            serde_json::json!("0"),
            serde_json::json!("-1"),
            serde_json::json!(""),
            serde_json::json!("\u{0661}"),
            serde_json::json!("9223372036854775808"),
            serde_json::json!(1.0),
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(u64::MAX),
            serde_json::json!(true),
            serde_json::json!(null),
            serde_json::json!(["1"]),
        ] {
            let result = keys.verify(&token(sub.clone()));
            assert!(result.is_err(), "sub {sub} accepted as {result:?}");
        }
    }
}

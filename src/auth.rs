//! Client JWTs (HS256 with `auth.jwt_secret`, `sub` = user id, `exp` required, no leeway) and
//! the admin bearer token.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

impl JwtKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
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
            iat: Some(now),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The user id a valid token names (whether that user exists is checked by the caller).
    pub fn verify(&self, token: &str) -> Result<i64, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::Unauthenticated("invalid or expired token"))?;
        // RFC 7519: a token is expired on or after `exp` (the library allows `exp == now`).
        if data.claims.exp <= chrono::Utc::now().timestamp() {
            return Err(ApiError::Unauthenticated("invalid or expired token"));
        }
        let user_id = match &data.claims.sub {
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            serde_json::Value::Number(n) => n.as_i64(),
            _ => None,
        };
        user_id
            .filter(|id| *id > 0)
            .ok_or(ApiError::Unauthenticated(
                "the token's sub is not a user id",
            ))
    }
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
}

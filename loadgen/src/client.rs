//! The engine's HTTP API as clients, the payment provider and admins use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use sha2::Sha256;

/// Secrets the engine is started with and the load generator signs with.
#[derive(Clone)]
pub struct Secrets {
    pub admin_token: String,
    pub jwt_secret: String,
    pub payment_secret: String,
}

impl Secrets {
    pub fn random() -> Self {
        let r = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            admin_token: format!("admin-{}", r()),
            jwt_secret: format!("jwt-{}", r()),
            payment_secret: format!("pay-{}", r()),
        }
    }
}

/// One answer: status and JSON body (`Null` when the body is not JSON).
pub type Answer = (u16, Value);

#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    secrets: Secrets,
    jwt_key: EncodingKey,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Api {
    pub fn new(base: &str, secrets: Secrets) -> Self {
        let agent = ureq::AgentBuilder::new()
            .max_idle_connections(4096)
            .max_idle_connections_per_host(4096)
            .timeout(Duration::from_secs(120))
            .build();
        let jwt_key = EncodingKey::from_secret(secrets.jwt_secret.as_bytes());
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
            secrets,
            jwt_key,
        }
    }

    fn finish(result: Result<ureq::Response, ureq::Error>) -> Result<Answer, String> {
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status();
        let text = resp.into_string().map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn admin_auth(&self) -> String {
        format!("Bearer {}", self.secrets.admin_token)
    }

    pub fn admin_get(&self, path: &str) -> Result<Answer, String> {
        Self::finish(
            self.agent
                .get(&format!("{}{path}", self.base))
                .set("Authorization", &self.admin_auth())
                .call(),
        )
    }

    pub fn admin_post(&self, path: &str, body: &Value) -> Result<Answer, String> {
        Self::finish(
            self.agent
                .post(&format!("{}{path}", self.base))
                .set("Authorization", &self.admin_auth())
                .send_string(&body.to_string()),
        )
    }

    /// An admin GET that must answer 200.
    pub fn admin_get_ok(&self, path: &str) -> Result<Value, String> {
        match self.admin_get(path)? {
            (200, v) => Ok(v),
            (s, v) => Err(format!("GET {path}: {s} {v}")),
        }
    }

    /// An admin POST that must answer 201.
    pub fn admin_create(&self, path: &str, body: &Value) -> Result<Value, String> {
        match self.admin_post(path, body)? {
            (201, v) => Ok(v),
            (s, v) => Err(format!("POST {path}: {s} {v}")),
        }
    }

    /// A client JWT (HS256, `sub` = the user id as a string) valid for a day.
    pub fn token(&self, user_id: i64) -> String {
        let claims = json!({"sub": user_id.to_string(), "exp": unix_now() + 86_400});
        jsonwebtoken::encode(&Header::default(), &claims, &self.jwt_key)
            .expect("HS256 encoding cannot fail")
    }

    pub fn place(
        &self,
        token: &str,
        course_ids: &[i64],
        coupon: Option<i64>,
        points: i64,
    ) -> Result<Answer, String> {
        let body = json!({"course_ids": course_ids, "user_coupon_id": coupon, "points": points});
        Self::finish(
            self.agent
                .post(&format!("{}/api/orders", self.base))
                .set("Authorization", &format!("Bearer {token}"))
                .send_string(&body.to_string()),
        )
    }

    /// `X-Signature` for a raw body, as SPEC §Payment provider signs it.
    pub fn signature(&self, t: u64, body: &str) -> String {
        sign(&self.secrets.payment_secret, t, body)
    }

    /// A signed payment callback.
    pub fn callback(
        &self,
        order_no: &str,
        trade_no: &str,
        code: i64,
        amount_cents: i64,
    ) -> Result<Answer, String> {
        let body = json!({
            "order_no": order_no,
            "trade_no": trade_no,
            "code": code,
            "amount_cents": amount_cents,
            "paid_at": null,
        })
        .to_string();
        let sig = self.signature(unix_now(), &body);
        Self::finish(
            self.agent
                .post(&format!("{}/api/payments/callback", self.base))
                .set("X-Signature", &sig)
                .send_string(&body),
        )
    }

    /// Every item of a paged admin list (`limit=100`, following `next_after`).
    pub fn admin_list_all(&self, path: &str) -> Result<Vec<Value>, String> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                None => format!("{path}{sep}limit=100"),
                Some(a) => format!("{path}{sep}limit=100&after={a}"),
            };
            let page = self.admin_get_ok(&url)?;
            if let Some(data) = page["data"].as_array() {
                all.extend(data.iter().cloned());
            }
            if page["has_more"].as_bool() != Some(true) {
                return Ok(all);
            }
            after = Some(match &page["next_after"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
    }

    /// Whether any order is still pending and any effect still pending: two one-row pages,
    /// cheap on the database whatever the number of orders (unlike `/admin/actors`, whose
    /// counts scan every order), so polling them does not load the run it measures.
    pub fn anything_pending(&self) -> Result<(bool, bool), String> {
        let orders = self.admin_get_ok("/admin/orders?status=pending&limit=1")?;
        let effects = self.admin_get_ok("/admin/effects?status=pending&limit=1")?;
        let some = |v: &Value| v["data"].as_array().is_some_and(|d| !d.is_empty());
        Ok((some(&orders), some(&effects)))
    }

    pub fn actors(&self) -> Result<Value, String> {
        self.admin_get_ok("/admin/actors")
    }
}

pub fn sign(secret: &str, t: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256("k", "1.{}") computed independently (`printf '1.{}' | openssl dgst -sha256 -hmac k`).
        assert_eq!(
            super::sign("k", 1, "{}"),
            "t=1,v1=3dd49b2593d0f9a349e9e71c4bde3e2b862c2be4003fe9b4ba81332029310158"
        );
    }
}

//! The Redis fast path of `POST /api/orders`: the per-user rate limit and the
//! `Idempotency-Key` look-up. Both are used only while Redis answers; the database stays
//! authoritative for idempotency (a response is cached only after it is stored there), and
//! without Redis the limit is simply not enforced.

use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::{now_ms, RedisLink};
use crate::db::idempotency::{Claim, RETENTION_SECS};
use crate::domain::ids::UserId;
use crate::error::ApiError;

/// The rate limit's window.
const WINDOW_MS: i64 = 60_000;

/// A sliding-window log per user, checked and appended atomically: the request is counted
/// only when it is let through. Returns `{allowed, ms until a slot frees}`.
const RATE_LIMIT_SCRIPT: &str = r#"
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window)
return {1, 0}
"#;

/// Counts one order request of `user_id`; over `limits.orders_per_user_per_minute` in the
/// last 60 s it is 429 `rate_limited` with the seconds until a slot frees.
pub async fn rate_limit(
    link: Option<Arc<RedisLink>>,
    limit: u32,
    user_id: UserId,
) -> Result<(), ApiError> {
    let Some(link) = link else {
        return Ok(());
    };
    if !link.available() {
        return Ok(());
    }
    let key = link.key(&format!("rate:{user_id}"));
    let verdict = actix_web::web::block(move || {
        let now = now_ms();
        let member = format!("{now}-{}", uuid::Uuid::new_v4().simple());
        link.run(|conn| {
            redis::cmd("EVAL")
                .arg(RATE_LIMIT_SCRIPT)
                .arg(1)
                .arg(&key)
                .arg(now)
                .arg(WINDOW_MS)
                .arg(limit)
                .arg(member)
                .query::<(i64, i64)>(conn)
        })
    })
    .await;
    match verdict {
        Ok(Ok((1, _))) => Ok(()),
        Ok(Ok((_, wait_ms))) => Err(ApiError::RateLimited {
            retry_after_secs: (wait_ms.max(1) as u64).div_ceil(1000),
        }),
        Ok(Err(err)) => {
            log::warn!("user {user_id}: rate limit not checked, Redis failed: {err}");
            Ok(())
        }
        Err(err) => {
            log::warn!("user {user_id}: rate limit not checked: {err}");
            Ok(())
        }
    }
}

fn idempotency_record(link: &RedisLink, user_id: UserId, key: &str) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    link.key(&format!("idem:{user_id}:{digest}"))
}

/// The stored first response for `key`, from Redis: a replay (same body) or `Reused`. `None`
/// when Redis does not have it (or is down): the database decides.
pub async fn cached_response(
    link: Option<Arc<RedisLink>>,
    user_id: UserId,
    key: &str,
    request_hash: &str,
) -> Option<Claim> {
    let link = link?;
    let record = idempotency_record(&link, user_id, key);
    if !link.available() {
        return None;
    }
    let found = actix_web::web::block(move || {
        link.run(|conn| {
            redis::cmd("HMGET")
                .arg(&record)
                .arg("hash")
                .arg("status")
                .arg("body")
                .query::<(Option<String>, Option<u16>, Option<String>)>(conn)
        })
    })
    .await
    .ok()?
    .ok()?;
    match found {
        (Some(hash), Some(status), Some(body)) if hash == request_hash => {
            Some(Claim::Replay { status, body })
        }
        (Some(_), Some(_), Some(_)) => Some(Claim::Reused),
        _ => None,
    }
}

/// Caches a response the database has stored (in the background; best effort). It expires a
/// minute before the database's record does, so Redis never answers for a key the database
/// has let go.
pub fn remember_response(
    link: Option<Arc<RedisLink>>,
    user_id: UserId,
    key: &str,
    request_hash: &str,
    status: u16,
    body: &str,
) {
    let Some(link) = link else {
        return;
    };
    let record = idempotency_record(&link, user_id, key);
    if !link.available() {
        return;
    }
    let (hash, body) = (request_hash.to_string(), body.to_string());
    actix_web::rt::task::spawn_blocking(move || {
        let stored = link.run(|conn| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&record)
                .arg("hash")
                .arg(&hash)
                .arg("status")
                .arg(status)
                .arg("body")
                .arg(&body)
                .ignore()
                .cmd("EXPIRE")
                .arg(&record)
                .arg(RETENTION_SECS - 60)
                .ignore()
                .query::<()>(conn)
        });
        if let Err(err) = stored {
            log::debug!("user {user_id}: idempotent response not cached in Redis: {err}");
        }
    });
}

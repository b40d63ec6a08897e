//! `Idempotency-Key` records for `POST /api/orders`, scoped to the user, kept 24 hours.
//!
//! A key is claimed (a row without a response) before placement runs; the placement
//! transaction completes it with the 201 it returns, so the order and its stored response
//! commit together. A 404/409/422 is stored afterwards; anything else releases the claim so the
//! client may retry. A claim left by a process that died mid-request is taken over after
//! [`ABANDONED_AFTER_SECS`].

use crate::domain::ids::UserId;
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::schema::idempotency_keys as keys;
use super::{write_transaction, DbConnection};
use crate::db::sql_types::At;
use crate::error::ApiError;
use crate::per_backend;

/// How long a stored response is replayed.
pub const RETENTION_SECS: i64 = 24 * 3600;
/// A claim older than this with no response belongs to a request that died.
pub const ABANDONED_AFTER_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: run the request.
    Fresh,
    /// The first response, to send again.
    Replay { status: u16, body: String },
    /// The first request with this key is still running.
    InUse,
    /// The key was used with a different body.
    Reused,
}

/// Claims `key` for a new request: [`peek`] decides, and a free key is taken with an update
/// conditional on it still being free (expired, or abandoned without a response), or a fresh
/// insert; when a concurrent request took it first, the key is in use.
pub fn claim(
    conn: &mut DbConnection,
    user_id: UserId,
    key: &str,
    request_hash: &str,
    now: NaiveDateTime,
) -> Result<Claim, ApiError> {
    write_transaction(conn, |conn| {
        let seen = peek(conn, user_id, key, request_hash, now)?;
        if seen != Claim::Fresh {
            return Ok(seen);
        }
        let expired = keys::created_at.le(At(now - secs(RETENTION_SECS)));
        let abandoned = keys::response_status
            .is_null()
            .and(keys::created_at.le(At(now - secs(ABANDONED_AFTER_SECS))));
        let retaken = diesel::update(
            keys::table
                .find((user_id, key))
                .filter(expired.or(abandoned)),
        )
        .set((
            keys::request_hash.eq(request_hash),
            keys::response_status.eq(None::<i32>),
            keys::response_body.eq(None::<String>),
            keys::created_at.eq(At(now)),
        ))
        .execute(conn)?;
        if retaken == 1 {
            return Ok(Claim::Fresh);
        }
        let row = (
            keys::user_id.eq(user_id),
            keys::idempotency_key.eq(key),
            keys::request_hash.eq(request_hash),
            keys::created_at.eq(At(now)),
        );
        let inserted = per_backend!(
            conn,
            |c| diesel::insert_into(keys::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute(c),
            mysql | m | {
                // MySQL counts a duplicate that ON DUPLICATE KEY left alone as a row found, so a
                // plain insert tells: a duplicate key fails the statement (not the transaction).
                match diesel::insert_into(keys::table).values(row).execute(m) {
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => Ok(0),
                    other => other,
                }
            }
        )?;
        Ok(if inserted == 1 {
            Claim::Fresh
        } else {
            Claim::InUse
        })
    })
}

/// What a waiting duplicate sees, read-only: a stored response, a different body, still in
/// flight, or `Fresh` when the key is free again (released, expired or abandoned: call
/// [`claim`] to take it).
pub fn peek(
    conn: &mut DbConnection,
    user_id: UserId,
    key: &str,
    request_hash: &str,
    now: NaiveDateTime,
) -> QueryResult<Claim> {
    let existing: Option<(String, Option<i32>, Option<String>, NaiveDateTime)> = keys::table
        .find((user_id, key))
        .select((
            keys::request_hash,
            keys::response_status,
            keys::response_body,
            keys::created_at,
        ))
        .first(conn)
        .optional()?;
    Ok(match existing {
        None => Claim::Fresh,
        Some((_, _, _, created_at)) if created_at + secs(RETENTION_SECS) <= now => Claim::Fresh,
        Some((hash, _, _, _)) if hash != request_hash => Claim::Reused,
        Some((_, Some(status), Some(body), _)) => Claim::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
        Some((_, _, _, created_at)) if created_at + secs(ABANDONED_AFTER_SECS) <= now => {
            Claim::Fresh
        }
        Some(_) => Claim::InUse,
    })
}

/// Stores the first response for replays.
pub fn complete(
    conn: &mut DbConnection,
    user_id: UserId,
    key: &str,
    status: u16,
    body: &str,
) -> QueryResult<()> {
    diesel::update(keys::table.find((user_id, key)))
        .set((
            keys::response_status.eq(i32::from(status)),
            keys::response_body.eq(body),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Gives a claim back after a response that must not be replayed (500, 503).
pub fn release(conn: &mut DbConnection, user_id: UserId, key: &str) -> QueryResult<()> {
    diesel::delete(
        keys::table
            .find((user_id, key))
            .filter(keys::response_status.is_null()),
    )
    .execute(conn)
    .map(|_| ())
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

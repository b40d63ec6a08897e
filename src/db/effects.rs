//! The effect outbox: grants (courses and chapters for a paid order) and refunds (points back
//! for a closed one). Applying effects, one or a batch in a transaction, is
//! [`super::batch`]'s; it is idempotent: the effect rows are locked and checked first, and the
//! unique (user, course), (user, chapter) and (order, kind) constraints make a replay a no-op.
//! Here: one attempt with its failure recorded, retries and the dead letters, admin pages.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use serde::Serialize;

use super::events::{kind as event, Journal};
use super::models::Order;
use super::schema::*;
use super::{write_transaction, DbConnection};
use crate::domain::order::effect;
use crate::domain::time::serde_ts;

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = effects)]
pub struct EffectRow {
    pub id: i64,
    pub order_no: String,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(with = "serde_ts")]
    pub next_attempt_at: NaiveDateTime,
    #[serde(with = "serde_ts")]
    pub created_at: NaiveDateTime,
    #[serde(with = "serde_ts")]
    pub updated_at: NaiveDateTime,
}

/// What one attempt at an effect came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Applied now.
    Applied,
    /// Nothing to do: already done or dead-lettered (a replay).
    AlreadySettled,
    /// Failed; try again after this long.
    RetryAfter(std::time::Duration),
    /// Failed for the last allowed time.
    DeadLettered(String),
}

/// Retry policy: `base * 2^(attempt-1)`, capped, dead-lettered after `max_attempts`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl RetryPolicy {
    pub fn delay_after(&self, attempts: u32) -> std::time::Duration {
        let exp = attempts.saturating_sub(1).min(40);
        let ms = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_max_ms);
        std::time::Duration::from_millis(ms)
    }
}

/// Applies the `kind` effect of `order_no` once — a batch of one
/// ([`super::batch::apply_effects`]); on failure records the attempt. With `journal` on, the
/// same transaction writes the `granted` / `refunded` (or `dead_lettered`) event.
pub fn attempt(
    conn: &mut DbConnection,
    order_no: &str,
    kind: &str,
    policy: RetryPolicy,
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Attempt> {
    match super::batch::apply_effects(conn, kind, &[order_no.to_string()], now, journal) {
        // Empty when the effect is not pending (done, dead-lettered, or unknown).
        Ok(applied) if applied.is_empty() => Ok(Attempt::AlreadySettled),
        Ok(_) => Ok(Attempt::Applied),
        Err(err) => record_failure(conn, order_no, kind, &err.to_string(), policy, now, journal),
    }
}

/// Marks the `kind` effects of `order_nos` done (one more attempt, no error).
pub fn mark_done(
    conn: &mut DbConnection,
    order_nos: &[&str],
    kind: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        effects::table
            .filter(effects::order_no.eq_any(order_nos))
            .filter(effects::kind.eq(kind)),
    )
    .set((
        effects::status.eq(effect::DONE),
        effects::attempts.eq(effects::attempts + 1),
        effects::last_error.eq(None::<String>),
        effects::updated_at.eq(now),
    ))
    .execute(conn)
}

fn record_failure(
    conn: &mut DbConnection,
    order_no: &str,
    kind: &str,
    error: &str,
    policy: RetryPolicy,
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Attempt> {
    write_transaction(conn, |conn| {
        let attempts: Option<i32> = effects::table
            .filter(effects::order_no.eq(order_no))
            .filter(effects::kind.eq(kind))
            .filter(effects::status.eq(effect::PENDING))
            .select(effects::attempts)
            .first(conn)
            .optional()?;
        let Some(attempts) = attempts else {
            return Ok(Attempt::AlreadySettled);
        };
        let attempts = attempts.saturating_add(1);
        let dead = u32::try_from(attempts).unwrap_or(u32::MAX) >= policy.max_attempts;
        let delay = policy.delay_after(attempts as u32);
        let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        diesel::update(
            effects::table
                .filter(effects::order_no.eq(order_no))
                .filter(effects::kind.eq(kind)),
        )
        .set((
            effects::attempts.eq(attempts),
            effects::last_error.eq(error),
            effects::status.eq(if dead {
                effect::DEAD_LETTERED
            } else {
                effect::PENDING
            }),
            effects::next_attempt_at.eq(next),
            effects::updated_at.eq(now),
        ))
        .execute(conn)?;
        if dead {
            journal.record_of(conn, event::DEAD_LETTERED, order_no, now)?;
        }
        Ok(if dead {
            Attempt::DeadLettered(error.to_string())
        } else {
            Attempt::RetryAfter(delay)
        })
    })
}

/// Every pending effect, oldest first: replayed at start.
pub fn pending(conn: &mut DbConnection) -> QueryResult<Vec<EffectRow>> {
    effects::table
        .filter(effects::status.eq(effect::PENDING))
        .order(effects::id)
        .select(EffectRow::as_select())
        .load(conn)
}

/// Pending effects due before `before` (missed by this process: another one queued them and
/// died, or a notification was lost).
pub fn overdue(
    conn: &mut DbConnection,
    before: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<EffectRow>> {
    effects::table
        .filter(effects::status.eq(effect::PENDING))
        .filter(effects::next_attempt_at.lt(before))
        .order(effects::next_attempt_at)
        .limit(limit)
        .select(EffectRow::as_select())
        .load(conn)
}

pub fn of_order(conn: &mut DbConnection, order_no: &str) -> QueryResult<Vec<EffectRow>> {
    effects::table
        .filter(effects::order_no.eq(order_no))
        .order(effects::id)
        .select(EffectRow::as_select())
        .load(conn)
}

/// A page of effects, newest first, optionally of one status.
pub fn page(
    conn: &mut DbConnection,
    status: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<EffectRow>> {
    let mut query = effects::table.select(EffectRow::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(effects::status.eq(status.to_string()));
    }
    if let Some(after) = after {
        query = query.filter(effects::id.lt(after));
    }
    query.order(effects::id.desc()).limit(limit).load(conn)
}

/// Puts a dead-lettered effect back in the queue with a fresh set of attempts.
pub fn retry(
    conn: &mut DbConnection,
    id: i64,
    now: NaiveDateTime,
) -> QueryResult<Option<EffectRow>> {
    let updated = diesel::update(
        effects::table
            .find(id)
            .filter(effects::status.eq(effect::DEAD_LETTERED)),
    )
    .set((
        effects::status.eq(effect::PENDING),
        effects::attempts.eq(0),
        effects::next_attempt_at.eq(now),
        effects::updated_at.eq(now),
    ))
    .execute(conn)?;
    if updated == 0 {
        return Ok(None);
    }
    effects::table
        .find(id)
        .select(EffectRow::as_select())
        .first(conn)
        .optional()
}

/// An effect with its order, as admins list them.
#[derive(Debug, Serialize)]
pub struct EffectWithOrder {
    #[serde(flatten)]
    pub effect: EffectRow,
    pub order: Order,
}

/// How many effects are pending and dead-lettered.
pub fn backlog(conn: &mut DbConnection) -> QueryResult<(i64, i64)> {
    let count = |conn: &mut DbConnection, status: &str| {
        effects::table
            .filter(effects::status.eq(status.to_string()))
            .count()
            .get_result::<i64>(conn)
    };
    Ok((
        count(conn, effect::PENDING)?,
        count(conn, effect::DEAD_LETTERED)?,
    ))
}

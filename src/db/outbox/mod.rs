//! The effect outbox, for every kind of effect, from insert to done or dead letter: a
//! transition queues its effect in its own transaction ([`enqueue`]); the effect actors apply
//! the effects of one kind that wait together in one transaction ([`apply`]; one attempt is a
//! batch of one, [`attempt`]); a failure is recorded and retried with backoff, and after
//! `effects.max_attempts` dead-lettered; admins list and retry them.
//!
//! Applying is idempotent: the effect rows are locked and checked first, and each kind's
//! unique constraints make a replay a no-op. Adding a kind is one [`EffectKind`] variant and
//! one apply function in [`applier`].

mod grant;
mod refund;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use serde::Serialize;

use super::journal::Journal;
use super::models::Order;
use super::schema::*;
use super::{effect_transaction, DbConnection};
use crate::db::sql_types::At;
use crate::domain::ids::OrderNo;
use crate::domain::states::{EffectKind, EffectStatus, EventKind};
use crate::domain::time::serde_ts;

/// Most effects in one batch (well under SQLite's bound-parameter limit).
pub const MAX_BATCH: usize = 500;

/// What one kind of effect does to the orders whose effect is pending (locked).
type ApplyFn = fn(&mut DbConnection, &[OrderNo], NaiveDateTime) -> QueryResult<()>;

/// The apply function of each kind that the database alone applies; `None` for the kinds
/// that call a payment provider ([`EffectKind::calls_provider`]), which
/// [`crate::providers::effects`] applies, one at a time and outside any transaction, before
/// settling them here ([`settle`]).
fn applier(kind: EffectKind) -> Option<ApplyFn> {
    match kind {
        EffectKind::Grant => Some(grant::apply),
        EffectKind::Refund => Some(refund::apply),
        EffectKind::ProviderClose | EffectKind::ProviderRefund => None,
    }
}

/// Queues `kind` for `order_no` again, due at once: a new row, or the existing one back to
/// `pending` with a fresh set of attempts (a second late payment after the first one's
/// refund). Runs under the order's row lock (the transition's transaction, or the start of a
/// payment), so no other transaction inserts it meanwhile.
pub fn requeue(
    conn: &mut DbConnection,
    order_no: &str,
    kind: EffectKind,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let updated = diesel::update(
        effects::table
            .filter(effects::order_no.eq(order_no))
            .filter(effects::kind.eq(kind)),
    )
    .set((
        effects::status.eq(EffectStatus::Pending),
        effects::attempts.eq(0),
        effects::last_error.eq(None::<String>),
        effects::next_attempt_at.eq(At(now)),
        effects::updated_at.eq(At(now)),
    ))
    .execute(conn)?;
    if updated == 0 {
        enqueue(conn, &[(order_no, kind)], now)?;
    }
    Ok(())
}

/// Marks the `kind` effect of `order_no` done, if it is still pending, in one transaction with
/// `also` (what applying it wrote) and its event: how a provider effect ends once its calls
/// succeeded. `false` when it was not pending (done or dead-lettered meanwhile; `also` is not
/// run).
pub fn settle(
    conn: &mut DbConnection,
    order_no: &str,
    kind: EffectKind,
    now: NaiveDateTime,
    journal: Journal,
    mut also: impl FnMut(&mut DbConnection) -> QueryResult<()>,
) -> QueryResult<bool> {
    effect_transaction(conn, |conn| {
        let mine = lock_pending(conn, &[OrderNo::from(order_no)], kind)?;
        if mine.is_empty() {
            return Ok(false);
        }
        also(conn)?;
        mark_done(conn, &[order_no], kind, now)?;
        journal.record_of(conn, kind.done_event(), order_no, now)?;
        Ok(true)
    })
}

/// Whether the `kind` effect of `order_no` is pending.
pub fn is_pending(conn: &mut DbConnection, order_no: &str, kind: EffectKind) -> QueryResult<bool> {
    let status: Option<EffectStatus> = effects::table
        .filter(effects::order_no.eq(order_no))
        .filter(effects::kind.eq(kind))
        .select(effects::status)
        .first(conn)
        .optional()?;
    Ok(status == Some(EffectStatus::Pending))
}

/// Queues effects, due at once (in the transaction that decided them).
pub fn enqueue(
    conn: &mut DbConnection,
    effects: &[(&str, EffectKind)],
    now: NaiveDateTime,
) -> QueryResult<()> {
    if effects.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = effects
        .iter()
        .map(|(order_no, kind)| {
            (
                effects::order_no.eq(*order_no),
                effects::kind.eq(*kind),
                effects::status.eq(EffectStatus::Pending),
                effects::attempts.eq(0),
                effects::next_attempt_at.eq(At(now)),
                effects::created_at.eq(At(now)),
                effects::updated_at.eq(At(now)),
            )
        })
        .collect();
    crate::per_backend!(conn, |c| diesel::insert_into(effects::table)
        .values(&rows)
        .execute(c))?;
    Ok(())
}

/// Applies, in one transaction, the pending `kind` effects of `order_nos` and marks them done,
/// journaled. Returns the orders whose effect this applied (the others were not pending:
/// done, dead-lettered or unknown).
pub fn apply(
    conn: &mut DbConnection,
    kind: EffectKind,
    order_nos: &[OrderNo],
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Vec<OrderNo>> {
    if order_nos.is_empty() {
        return Ok(Vec::new());
    }
    effect_transaction(conn, |conn| {
        let apply = applier(kind).ok_or_else(|| {
            diesel::result::Error::QueryBuilderError(
                format!("{kind} effects call a provider: providers::effects applies them").into(),
            )
        })?;
        let mine = lock_pending(conn, order_nos, kind)?;
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        apply(conn, &mine, now)?;
        let numbers: Vec<&str> = mine.iter().map(OrderNo::as_str).collect();
        mark_done(conn, &numbers, kind, now)?;
        if journal.enabled {
            let orders = super::orders::find_orders(conn, &numbers)?;
            let events: Vec<(EventKind, &Order)> =
                orders.iter().map(|o| (kind.done_event(), o)).collect();
            journal.record_all(conn, &events, now)?;
        }
        Ok(mine)
    })
}

/// Locks the `kind` effects of `order_nos` through the (order_no, kind) index and returns the
/// orders whose effect is pending (not filtered on `status` in SQL, so the planner keeps to
/// that index: the partial index of pending effects is full of dead entries in a burst).
fn lock_pending(
    conn: &mut DbConnection,
    order_nos: &[OrderNo],
    kind: EffectKind,
) -> QueryResult<Vec<OrderNo>> {
    let query = effects::table
        .filter(effects::order_no.eq_any(order_nos))
        .filter(effects::kind.eq(kind))
        .select((effects::order_no, effects::status));
    let rows: Vec<(OrderNo, EffectStatus)> = match conn {
        DbConnection::Postgresql(c) => query.for_update().load(c)?,
        DbConnection::Sqlite(c) => query.load(c)?,
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(c) => query.for_update().load(c)?,
    };
    Ok(rows
        .into_iter()
        .filter(|(_, status)| *status == EffectStatus::Pending)
        .map(|(no, _)| no)
        .collect())
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = effects)]
pub struct EffectRow {
    pub id: i64,
    pub order_no: OrderNo,
    pub kind: EffectKind,
    pub status: EffectStatus,
    pub attempts: i32,
    #[schema(required = true)]
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

/// Applies the `kind` effect of `order_no` once — a batch of one ([`apply`]); on failure
/// records the attempt. With `journal` on, the
/// same transaction writes the `granted` / `refunded` (or `dead_lettered`) event.
pub fn attempt(
    conn: &mut DbConnection,
    order_no: &str,
    kind: EffectKind,
    policy: RetryPolicy,
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Attempt> {
    match apply(conn, kind, &[OrderNo::from(order_no)], now, journal) {
        // Empty when the effect is not pending (done, dead-lettered, or unknown).
        Ok(applied) if applied.is_empty() => Ok(Attempt::AlreadySettled),
        Ok(_) => Ok(Attempt::Applied),
        Err(err) => record_failure(conn, order_no, kind, &err.to_string(), policy, now, journal),
    }
}

/// Marks the `kind` effects of `order_nos` done (one more attempt, no error).
fn mark_done(
    conn: &mut DbConnection,
    order_nos: &[&str],
    kind: EffectKind,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        effects::table
            .filter(effects::order_no.eq_any(order_nos))
            .filter(effects::kind.eq(kind)),
    )
    .set((
        effects::status.eq(EffectStatus::Done),
        effects::attempts.eq(effects::attempts + 1),
        effects::last_error.eq(None::<String>),
        effects::updated_at.eq(At(now)),
    ))
    .execute(conn)
}

/// Records a failed attempt at the `kind` effect of `order_no`: retried after a backoff, or
/// dead-lettered after the last allowed attempt (journaled).
pub fn record_failure(
    conn: &mut DbConnection,
    order_no: &str,
    kind: EffectKind,
    error: &str,
    policy: RetryPolicy,
    now: NaiveDateTime,
    journal: Journal,
) -> QueryResult<Attempt> {
    effect_transaction(conn, |conn| {
        let attempts: Option<i32> = effects::table
            .filter(effects::order_no.eq(order_no))
            .filter(effects::kind.eq(kind))
            .filter(effects::status.eq(EffectStatus::Pending))
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
                EffectStatus::DeadLettered
            } else {
                EffectStatus::Pending
            }),
            effects::next_attempt_at.eq(At(next)),
            effects::updated_at.eq(At(now)),
        ))
        .execute(conn)?;
        if dead {
            journal.record_of(conn, EventKind::DeadLettered, order_no, now)?;
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
        .filter(effects::status.eq(EffectStatus::Pending))
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
        .filter(effects::status.eq(EffectStatus::Pending))
        .filter(effects::next_attempt_at.lt(At(before)))
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
    status: Option<EffectStatus>,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<EffectRow>> {
    let mut query = effects::table.select(EffectRow::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(effects::status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(effects::id.lt(after));
    }
    query.order(effects::id.desc()).limit(limit).load(conn)
}

/// Puts a dead-lettered effect back in the queue with a fresh set of attempts; `None` when
/// there is no such effect or it is not dead-lettered ([`exists`] tells which).
pub fn retry(
    conn: &mut DbConnection,
    id: i64,
    now: NaiveDateTime,
) -> QueryResult<Option<EffectRow>> {
    let updated = diesel::update(
        effects::table
            .find(id)
            .filter(effects::status.eq(EffectStatus::DeadLettered)),
    )
    .set((
        effects::status.eq(EffectStatus::Pending),
        effects::attempts.eq(0),
        effects::next_attempt_at.eq(At(now)),
        effects::updated_at.eq(At(now)),
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

/// Whether the effect `id` exists.
pub fn exists(conn: &mut DbConnection, id: i64) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(effects::table.find(id))).get_result(conn)
}

/// An effect with its order, as admins list them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EffectWithOrder {
    #[serde(flatten)]
    pub effect: EffectRow,
    pub order: Order,
}

/// How many effects are pending and dead-lettered.
pub fn backlog(conn: &mut DbConnection) -> QueryResult<(i64, i64)> {
    let count = |conn: &mut DbConnection, status: EffectStatus| {
        effects::table
            .filter(effects::status.eq(status))
            .count()
            .get_result::<i64>(conn)
    };
    Ok((
        count(conn, EffectStatus::Pending)?,
        count(conn, EffectStatus::DeadLettered)?,
    ))
}

/// How many effects are pending, by kind (read through the partial index of pending effects).
pub fn pending_by_kind(conn: &mut DbConnection) -> QueryResult<Vec<(EffectKind, i64)>> {
    effects::table
        .filter(effects::status.eq(EffectStatus::Pending))
        .group_by(effects::kind)
        .select((effects::kind, diesel::dsl::count_star()))
        .load(conn)
}

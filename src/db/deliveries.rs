//! Webhook deliveries: one row per order event and endpoint, from the fan-out of the journal
//! ([`fan_out`]) to done or dead letter. An endpoint's worker claims the deliveries that are
//! due and first of their order at that endpoint ([`claim`]: no earlier event of the same
//! order is still pending there), sends them, and records what came of it ([`record`]).
//! A claim leases its rows (their `next_attempt_at` moves past the attempt's timeout), so
//! processes sharing the database never send the same delivery at once, and a process that
//! dies mid-send leaves them to be claimed again when the lease ends: at least once.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;

use super::journal::{self, EventRow};
use super::schema::webhook_deliveries as wd;
use super::{effect_transaction, DbConnection};
use crate::config::WebhookEndpoint;
use crate::db::sql_types::{At, Timestamp};
use crate::domain::ids::OrderNo;
use crate::domain::states::{EffectStatus, EventKind};
use crate::domain::time::{self, serde_ts_opt};

/// A delivery's state: the effects' three (`pending`, `done`, `dead_lettered`).
pub type DeliveryStatus = EffectStatus;

/// One delivery as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = wd)]
struct DeliveryRow {
    id: i64,
    url: String,
    event_id: i64,
    kind: EventKind,
    order_no: OrderNo,
    status: DeliveryStatus,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: NaiveDateTime,
    delivered_at: Option<NaiveDateTime>,
}

/// One delivery, as `GET /admin/deliveries` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub url: String,
    /// The order event's id: the `webhook-id` header of every attempt.
    pub event_id: i64,
    pub kind: EventKind,
    pub order_no: OrderNo,
    pub status: DeliveryStatus,
    pub attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the next attempt is due; null once done or dead-lettered.
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true, value_type = Option<String>)]
    pub next_attempt_at: Option<NaiveDateTime>,
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true, value_type = Option<String>)]
    pub delivered_at: Option<NaiveDateTime>,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        let pending = row.status == DeliveryStatus::Pending;
        Delivery {
            id: row.id,
            url: row.url,
            event_id: row.event_id,
            kind: row.kind,
            order_no: row.order_no,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: pending.then_some(row.next_attempt_at),
            delivered_at: row.delivered_at,
        }
    }
}

/// A claimed delivery: what an attempt sends.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = wd)]
pub struct Claimed {
    pub id: i64,
    pub event_id: i64,
    pub url: String,
    pub order_no: OrderNo,
    pub kind: EventKind,
    pub body: String,
    pub attempts: i32,
}

/// The body every endpoint gets for an event (Standard Webhooks' `type`, `timestamp`,
/// `data`): the order as the event carries it.
pub fn body_of(event: &EventRow) -> String {
    format!(
        r#"{{"type":"{}","timestamp":"{}","data":{}}}"#,
        event.kind.as_str(),
        time::format(&event.at),
        event.data
    )
}

/// Writes the deliveries of the oldest events not yet fanned out, one per endpoint that wants
/// the event's kind, and marks those events fanned out (`keep_events`: Redis still has to
/// publish them) or deletes them. One transaction; on PostgreSQL one fan-out in the cluster
/// at a time. Returns how many events it took.
pub fn fan_out(
    conn: &mut DbConnection,
    endpoints: &[WebhookEndpoint],
    keep_events: bool,
    limit: i64,
) -> QueryResult<usize> {
    effect_transaction(conn, |conn| {
        if !journal::try_fanout_lock(conn)? {
            return Ok(0);
        }
        let events = journal::unfanned(conn, limit)?;
        if events.is_empty() {
            return Ok(0);
        }
        let now = time::now();
        let mut rows = Vec::new();
        for event in &events {
            let body = body_of(event);
            for endpoint in endpoints.iter().filter(|e| e.wants(event.kind)) {
                rows.push((
                    wd::event_id.eq(event.id),
                    wd::url.eq(endpoint.url.clone()),
                    wd::order_no.eq(event.order_no.as_str().to_string()),
                    wd::kind.eq(event.kind),
                    wd::body.eq(body.clone()),
                    wd::status.eq(DeliveryStatus::Pending),
                    wd::attempts.eq(0),
                    wd::next_attempt_at.eq(At(now)),
                    wd::created_at.eq(At(now)),
                ));
            }
        }
        // Bound parameters per statement stay well under SQLite's limit.
        for chunk in rows.chunks(500) {
            crate::per_backend!(
                &mut *conn,
                |c| diesel::insert_into(wd::table)
                    .values(chunk)
                    .on_conflict((wd::event_id, wd::url))
                    .do_nothing()
                    .execute(c),
                mysql
                    | m
                    | diesel::insert_into(wd::table)
                        // ON DUPLICATE KEY: (event_id, url) is the table's one unique key besides id.
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(m)
            )?;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        if keep_events {
            journal::mark_fanned_out(conn, &ids)?;
        } else {
            journal::delete(conn, &ids)?;
        }
        Ok(events.len())
    })
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Claims up to `limit` deliveries to `url` that are due and the oldest pending event of
/// their order there, leasing them until `lease_until`. Locked rows (another process's
/// claim in flight) are skipped on PostgreSQL and MySQL.
pub fn claim(
    conn: &mut DbConnection,
    url: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<Claimed>> {
    const DUE: &str = "SELECT d.id FROM webhook_deliveries d \
        WHERE d.url = {url} AND d.status = 'pending' AND d.next_attempt_at <= {now} \
        AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.url = d.url \
            AND e.order_no = d.order_no AND e.status = 'pending' AND e.event_id < d.event_id) \
        ORDER BY d.event_id LIMIT {limit}";
    effect_transaction(conn, |conn| {
        let ids: Vec<i64> = match conn {
            DbConnection::Postgresql(pg) => {
                let sql = DUE
                    .replace("{url}", "$1")
                    .replace("{now}", "$2")
                    .replace("{limit}", "$3");
                diesel::sql_query(format!("{sql} FOR UPDATE SKIP LOCKED"))
                    .bind::<Text, _>(url)
                    .bind::<Timestamp, _>(now)
                    .bind::<BigInt, _>(limit)
                    .load::<Id>(pg)?
            }
            DbConnection::Sqlite(sqlite) => {
                let sql = DUE
                    .replace("{url}", "?")
                    .replace("{now}", "?")
                    .replace("{limit}", "?");
                diesel::sql_query(sql)
                    .bind::<Text, _>(url)
                    .bind::<Timestamp, _>(now)
                    .bind::<BigInt, _>(limit)
                    .load::<Id>(sqlite)?
            }
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(my) => {
                let sql = DUE
                    .replace("{url}", "?")
                    .replace("{now}", "?")
                    .replace("{limit}", "?");
                diesel::sql_query(format!("{sql} FOR UPDATE SKIP LOCKED"))
                    .bind::<Text, _>(url)
                    .bind::<Timestamp, _>(now)
                    .bind::<BigInt, _>(limit)
                    .load::<Id>(my)?
            }
        }
        .into_iter()
        .map(|row| row.id)
        .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        diesel::update(wd::table.filter(wd::id.eq_any(&ids)))
            .set(wd::next_attempt_at.eq(At(lease_until)))
            .execute(conn)?;
        wd::table
            .filter(wd::id.eq_any(&ids))
            .order(wd::event_id)
            .select(Claimed::as_select())
            .load(conn)
    })
}

/// What one attempt at a delivery came to, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed; the next attempt is due after this long.
    RetryAfter(std::time::Duration),
    /// Failed for the last allowed time.
    DeadLettered,
    /// Not pending any more (an admin or another process settled it meanwhile).
    AlreadySettled,
}

/// Records an attempt at a claimed delivery: delivered (`error` none), or failed with `error`,
/// then retried after `retry_delay(attempts)` or dead-lettered after `max_attempts`.
pub fn record(
    conn: &mut DbConnection,
    id: i64,
    error: Option<&str>,
    max_attempts: u32,
    retry_delay: impl Fn(u32) -> std::time::Duration,
) -> QueryResult<Outcome> {
    effect_transaction(conn, |conn| {
        let now = time::now();
        let pending = || {
            wd::table
                .find(id)
                .filter(wd::status.eq(DeliveryStatus::Pending))
        };
        let Some(attempts) = pending()
            .select(wd::attempts)
            .first::<i32>(conn)
            .optional()?
        else {
            return Ok(Outcome::AlreadySettled);
        };
        let attempts = attempts.saturating_add(1);
        let Some(error) = error else {
            diesel::update(pending())
                .set((
                    wd::status.eq(DeliveryStatus::Done),
                    wd::attempts.eq(attempts),
                    wd::last_error.eq(None::<String>),
                    wd::delivered_at.eq(Some(now)),
                ))
                .execute(conn)?;
            return Ok(Outcome::Delivered);
        };
        let dead = u32::try_from(attempts).unwrap_or(u32::MAX) >= max_attempts;
        let delay = retry_delay(attempts as u32);
        let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        diesel::update(pending())
            .set((
                wd::status.eq(if dead {
                    DeliveryStatus::DeadLettered
                } else {
                    DeliveryStatus::Pending
                }),
                wd::attempts.eq(attempts),
                wd::last_error.eq(error),
                wd::next_attempt_at.eq(At(if dead { now } else { next })),
            ))
            .execute(conn)?;
        Ok(if dead {
            Outcome::DeadLettered
        } else {
            Outcome::RetryAfter(delay)
        })
    })
}

/// A page of deliveries, newest first, optionally of one status.
pub fn page(
    conn: &mut DbConnection,
    status: Option<DeliveryStatus>,
    after: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Delivery>> {
    let mut query = wd::table.select(DeliveryRow::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(wd::status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(wd::id.lt(after));
    }
    let rows: Vec<DeliveryRow> = query.order(wd::id.desc()).limit(limit).load(conn)?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

/// One order's deliveries, oldest first.
pub fn of_order(conn: &mut DbConnection, order_no: &str) -> QueryResult<Vec<Delivery>> {
    let rows: Vec<DeliveryRow> = wd::table
        .filter(wd::order_no.eq(order_no))
        .order(wd::id)
        .select(DeliveryRow::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

/// Why a retry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefused {
    NotFound,
    NotDeadLettered,
}

/// Puts a dead-lettered delivery back in its endpoint's queue with a fresh set of attempts.
pub fn retry(
    conn: &mut DbConnection,
    id: i64,
    now: NaiveDateTime,
) -> QueryResult<Result<Delivery, RetryRefused>> {
    effect_transaction(conn, |conn| {
        let updated = diesel::update(
            wd::table
                .find(id)
                .filter(wd::status.eq(DeliveryStatus::DeadLettered)),
        )
        .set((
            wd::status.eq(DeliveryStatus::Pending),
            wd::attempts.eq(0),
            wd::next_attempt_at.eq(At(now)),
        ))
        .execute(conn)?;
        let found: Option<DeliveryRow> = wd::table
            .find(id)
            .select(DeliveryRow::as_select())
            .first(conn)
            .optional()?;
        Ok(match (found, updated) {
            (None, _) => Err(RetryRefused::NotFound),
            (Some(_), 0) => Err(RetryRefused::NotDeadLettered),
            (Some(delivery), _) => Ok(Delivery::from(delivery)),
        })
    })
}

/// How many deliveries are pending and dead-lettered.
pub fn backlog(conn: &mut DbConnection) -> QueryResult<(i64, i64)> {
    let count = |conn: &mut DbConnection, status: DeliveryStatus| {
        wd::table
            .filter(wd::status.eq(status))
            .count()
            .get_result::<i64>(conn)
    };
    Ok((
        count(conn, DeliveryStatus::Pending)?,
        count(conn, DeliveryStatus::DeadLettered)?,
    ))
}

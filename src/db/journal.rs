//! The order-event journal (an outbox of events). When Redis or a webhook endpoint is
//! configured, every transaction that changes an order or applies one of its effects also
//! writes an event row here. With endpoints, a row is written `fanned_out = false`: the
//! webhook fan-out ([`crate::webhooks`]) turns it into one delivery row per matching endpoint
//! and then marks it (or, without Redis, deletes it). The publisher
//! ([`crate::redis::publisher`]) appends fanned-out rows to the Redis stream and then deletes
//! them. So an event exists iff its change committed, and none is lost while Redis or an
//! endpoint is away.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::Order;
use super::orders::find_order;
use super::schema::order_events;
use super::DbConnection;
use crate::db::sql_types::At;
use crate::domain::ids::OrderNo;
use crate::domain::states::EventKind;

/// Whether transactions write order events (Redis or a webhook endpoint is configured), and
/// whether those wait for the webhook fan-out (an endpoint is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Journal {
    pub enabled: bool,
    pub webhooks: bool,
}

impl Journal {
    pub const OFF: Journal = Journal {
        enabled: false,
        webhooks: false,
    };
    pub const ON: Journal = Journal {
        enabled: true,
        webhooks: false,
    };

    /// Writes a `kind` event carrying `order` (as it is now, in this transaction).
    pub fn record(
        self,
        conn: &mut DbConnection,
        kind: EventKind,
        order: &Order,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        self.record_all(conn, &[(kind, order)], at)
    }

    /// Writes events, in this order (ids ascend with it), in one statement.
    pub fn record_all(
        self,
        conn: &mut DbConnection,
        events: &[(EventKind, &Order)],
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        if !self.enabled || events.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(events.len());
        for (kind, order) in events {
            let data = serde_json::to_string(order)
                .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
            rows.push((
                order_events::order_no.eq(order.order_no.as_str()),
                order_events::kind.eq(*kind),
                order_events::at.eq(At(at)),
                order_events::data.eq(data),
                order_events::fanned_out.eq(!self.webhooks),
            ));
        }
        crate::per_backend!(conn, |c| diesel::insert_into(order_events::table)
            .values(&rows)
            .execute(c))?;
        Ok(())
    }

    /// Like [`Journal::record`], loading the order first.
    pub fn record_of(
        self,
        conn: &mut DbConnection,
        kind: EventKind,
        order_no: &str,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        if !self.enabled {
            return Ok(());
        }
        match find_order(conn, order_no)? {
            Some(order) => self.record(conn, kind, &order, at),
            None => Err(diesel::result::Error::NotFound),
        }
    }
}

/// One unpublished event.
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = order_events)]
pub struct EventRow {
    pub id: i64,
    pub order_no: OrderNo,
    pub kind: EventKind,
    pub at: NaiveDateTime,
    pub data: String,
}

/// The oldest `limit` unpublished events that the webhook fan-out is done with, by id.
pub fn oldest(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<EventRow>> {
    order_events::table
        .filter(order_events::fanned_out.eq(true))
        .order(order_events::id)
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)
}

/// The oldest `limit` events not yet fanned out to the webhook endpoints, by id.
pub fn unfanned(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<EventRow>> {
    order_events::table
        .filter(order_events::fanned_out.eq(false))
        .order(order_events::id)
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)
}

/// Marks events fanned out (the Redis publisher may take them now).
pub fn mark_fanned_out(conn: &mut DbConnection, ids: &[i64]) -> QueryResult<usize> {
    diesel::update(order_events::table.filter(order_events::id.eq_any(ids)))
        .set(order_events::fanned_out.eq(true))
        .execute(conn)
}

/// Events left waiting for a fan-out when no endpoint is configured any more (run at start):
/// marked fanned out for the Redis publisher (`keep_events`), else deleted. Returns how many.
pub fn release_unfanned(conn: &mut DbConnection, keep_events: bool) -> QueryResult<usize> {
    let waiting = order_events::table.filter(order_events::fanned_out.eq(false));
    if keep_events {
        diesel::update(waiting)
            .set(order_events::fanned_out.eq(true))
            .execute(conn)
    } else {
        diesel::delete(waiting).execute(conn)
    }
}

/// One order's events still in the journal (unpublished), oldest first.
pub fn of_order(conn: &mut DbConnection, order_no: &str) -> QueryResult<Vec<EventRow>> {
    order_events::table
        .filter(order_events::order_no.eq(order_no))
        .order(order_events::id)
        .select(EventRow::as_select())
        .load(conn)
}

/// Forgets published events.
pub fn delete(conn: &mut DbConnection, ids: &[i64]) -> QueryResult<usize> {
    diesel::delete(order_events::table.filter(order_events::id.eq_any(ids))).execute(conn)
}

/// How many events wait to be published.
pub fn backlog(conn: &mut DbConnection) -> QueryResult<i64> {
    order_events::table.count().get_result(conn)
}

/// On PostgreSQL, takes the cluster-wide publisher lock for this transaction (`false` when
/// another process holds it: it is publishing, and doing it from two processes at once could
/// reorder an order's events). SQLite has one process and one publisher.
pub fn try_publisher_lock(conn: &mut DbConnection) -> QueryResult<bool> {
    try_xact_lock(conn, 7400430180002)
}

/// [`try_publisher_lock`] for the webhook fan-out: one in the cluster at a time, so an order's
/// deliveries are written in the order of its events.
pub fn try_fanout_lock(conn: &mut DbConnection) -> QueryResult<bool> {
    try_xact_lock(conn, 7400430180003)
}

fn try_xact_lock(conn: &mut DbConnection, key: i64) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    match conn {
        DbConnection::Postgresql(pg) => {
            let row: Locked = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
                .bind::<diesel::sql_types::BigInt, _>(key)
                .get_result(pg)?;
            Ok(row.locked)
        }
        DbConnection::Sqlite(_) => Ok(true),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(my) => super::mysql::lock_for_transaction(my, &format!("lock{key}")),
    }
}

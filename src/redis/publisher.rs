//! Order events in Redis: the publisher that moves committed rows of the `order_events`
//! outbox to the stream `redis.events_stream`, and the consumer-group reader behind
//! `order-engine events --follow`.
//!
//! Delivery is at least once: a batch is appended (one MULTI/EXEC) before its rows are
//! deleted, so a crash in between publishes it again; readers skip an `event_id` they have
//! seen. Order per order holds because one publisher in the cluster runs at a time (a
//! PostgreSQL advisory lock) and publishes in id order, and an order's events are written by
//! transactions that follow one another.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::Connection as _;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{Commands, RedisError, RedisResult};
use serde_json::{json, Value};

use super::{is_connection_error, RedisLink};
use crate::db::journal::{self as events, EventRow};
use crate::db::{DbConnection, DbPool};
use crate::domain::time;

/// Events published per Redis round trip.
const BATCH: i64 = 500;
/// How often the outbox is looked at without a kick (events of other processes).
const POLL: Duration = Duration::from_millis(250);
/// Redis timeout of the publisher's own connection.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// Wakes the publisher (coalescing: one pending wake-up at most).
#[derive(Clone)]
pub struct Kick(SyncSender<()>);

impl Kick {
    pub fn kick(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the publisher thread. It runs until every [`Kick`] is dropped, then publishes what
/// is left once more and ends.
pub fn spawn_publisher(
    pool: DbPool,
    link: Arc<RedisLink>,
    stream: String,
    maxlen: u64,
) -> std::io::Result<Kick> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("event-publisher".into())
        .spawn(move || {
            Publisher {
                pool,
                link,
                stream,
                maxlen,
                redis: None,
                failing_since: None,
            }
            .run(rx)
        })?;
    Ok(Kick(tx))
}

struct Publisher {
    pool: DbPool,
    link: Arc<RedisLink>,
    stream: String,
    maxlen: u64,
    redis: Option<redis::Connection>,
    failing_since: Option<Instant>,
}

impl Publisher {
    fn run(mut self, rx: Receiver<()>) {
        let mut backoff = Duration::ZERO;
        loop {
            let last_round = if backoff.is_zero() {
                matches!(rx.recv_timeout(POLL), Err(RecvTimeoutError::Disconnected))
            } else {
                // Kicks do not cut a back-off short.
                let until = Instant::now() + backoff;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break false;
                    }
                    if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(left) {
                        break true;
                    }
                }
            };
            backoff = match self.drain() {
                Ok(()) => Duration::ZERO,
                Err(_) => (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF),
            };
            if last_round {
                return;
            }
        }
    }

    /// Publishes until the outbox is empty.
    fn drain(&mut self) -> Result<(), PublishError> {
        loop {
            match self.publish_batch() {
                Ok(n) => {
                    if let Some(since) = self.failing_since.take() {
                        log::info!(
                            "event stream {}: publishing again after {:.1} s",
                            self.stream,
                            since.elapsed().as_secs_f64()
                        );
                    }
                    if n < BATCH as usize {
                        return Ok(());
                    }
                }
                Err(err) => {
                    if let PublishError::Redis(e) = &err {
                        self.link.trip(e);
                        if is_connection_error(e) {
                            self.redis = None;
                        }
                    }
                    if self.failing_since.is_none() {
                        self.failing_since = Some(Instant::now());
                        log::warn!(
                            "event stream {}: cannot publish, events wait in the outbox: {err}",
                            self.stream
                        );
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Appends the oldest unpublished events to the stream, then deletes them. Returns how many.
    fn publish_batch(&mut self) -> Result<usize, PublishError> {
        // Redis first: while it is down no database connection is borrowed for nothing.
        if self.redis.is_none() {
            self.redis = Some(self.link.connect(PUBLISH_TIMEOUT)?);
        }
        let mut db = self.pool.get_timeout(PUBLISH_TIMEOUT)?;
        let Some(redis) = self.redis.as_mut() else {
            return Ok(0);
        };
        let (stream, maxlen) = (self.stream.as_str(), self.maxlen);
        match &mut *db {
            DbConnection::Postgresql(_) => db.transaction(|conn| {
                if !events::try_publisher_lock(conn)? {
                    return Ok(0);
                }
                publish(conn, redis, stream, maxlen)
            }),
            DbConnection::Sqlite(_) => publish(&mut db, redis, stream, maxlen),
            // The lock lasts until the transaction ends only in the database's own
            // transaction helper (`journal::try_publisher_lock`).
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(_) => crate::db::keyed_transaction(&mut db, |conn| {
                if !events::try_publisher_lock(conn)? {
                    return Ok(0);
                }
                publish(conn, redis, stream, maxlen)
            }),
        }
    }
}

fn publish(
    conn: &mut DbConnection,
    redis: &mut redis::Connection,
    stream: &str,
    maxlen: u64,
) -> Result<usize, PublishError> {
    let rows = events::oldest(conn, BATCH)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for row in &rows {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*")
            .arg("event_id")
            .arg(row.id)
            .arg("kind")
            .arg(row.kind.as_str())
            .arg("order_no")
            .arg(row.order_no.as_str())
            .arg("at")
            .arg(time::format(&row.at))
            .arg("data")
            .arg(&row.data)
            .ignore();
    }
    pipe.query::<()>(redis)?;
    let ids: Vec<i64> = rows.iter().map(|r: &EventRow| r.id).collect();
    events::delete(conn, &ids)?;
    log::debug!("published {} order events to {stream}", rows.len());
    Ok(rows.len())
}

/// How `order-engine events` reads.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    /// Keep waiting for new events; else stop once the stream has nothing new.
    pub follow: bool,
}

/// Reads the stream as consumer `consumer` of group `group` (created at the stream's start if
/// missing), prints one JSON line per event and acknowledges it after printing. The
/// consumer's own unacknowledged entries (from a reader that died) come first. While Redis is
/// unreachable it waits and tries again.
pub fn follow(
    client: &redis::Client,
    opts: &FollowOptions,
    out: &mut impl Write,
) -> Result<(), FollowError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match follow_once(client, opts, out) {
            Ok(()) => return Ok(()),
            Err(FollowError::Redis(err)) if is_connection_error(&err) && opts.follow => {
                eprintln!("redis unreachable ({err}); retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("cannot write: {0}")]
    Output(#[from] std::io::Error),
}

fn follow_once(
    client: &redis::Client,
    opts: &FollowOptions,
    out: &mut impl Write,
) -> Result<(), FollowError> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&opts.stream)
        .arg(&opts.group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn);
    if let Err(err) = created {
        if err.code() != Some("BUSYGROUP") {
            return Err(err.into());
        }
    }
    // First what this consumer was given but did not acknowledge, then new entries.
    let mut from_pending = true;
    loop {
        let mut read = StreamReadOptions::default()
            .group(&opts.group, &opts.consumer)
            .count(100);
        if !from_pending && opts.follow {
            read = read.block(2_000);
        }
        let start = if from_pending { "0" } else { ">" };
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&opts.stream], &[start], &read)?;
        let entries: Vec<_> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if entries.is_empty() {
            if from_pending {
                from_pending = false;
                continue;
            }
            if opts.follow {
                continue;
            }
            return Ok(());
        }
        for entry in &entries {
            let field = |name: &str| -> Option<String> { entry.get(name) };
            let data = field("data")
                .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                .unwrap_or(Value::Null);
            let event_id = field("event_id")
                .and_then(|id| id.parse::<i64>().ok())
                .map_or(Value::Null, Value::from);
            let line = json!({
                "stream_id": entry.id,
                "event_id": event_id,
                "kind": field("kind"),
                "order_no": field("order_no"),
                "at": field("at"),
                "data": data,
            });
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let _: i64 = conn.xack(&opts.stream, &opts.group, &ids)?;
    }
}

//! Everything Redis (when `redis.url` is set): the [`publisher`] of order events to the
//! stream, the [`cluster`] of processes (heartbeats, adoption, stop messages) and the request
//! [`fastpath`] (rate limit, idempotency cache); and here the link they share: a small pool of
//! connections with timeouts, the engine's key names, and a breaker. Redis is never the source of truth: when a
//! call fails with a connection error the link reports Redis down for a moment, and callers
//! on the request path (rate limit, idempotency look-up) go on without it instead of waiting
//! on every request.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub mod cluster;
pub mod fastpath;
pub mod publisher;

use redis::{Client, Connection, ErrorKind, RedisError, RedisResult};

/// How long a request waits for Redis before going on without it.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis counts as down after a connection error (no call tries it meanwhile).
const BREAKER_MS: i64 = 1_000;
/// Idle connections kept.
const POOL_MAX_IDLE: usize = 16;

pub struct RedisLink {
    client: Client,
    prefix: String,
    idle: Mutex<Vec<Connection>>,
    /// Unix ms until which Redis counts as down.
    down_until_ms: AtomicI64,
}

impl RedisLink {
    pub fn open(url: &str, prefix: &str) -> RedisResult<Self> {
        Ok(Self {
            client: Client::open(url)?,
            prefix: prefix.to_string(),
            idle: Mutex::new(Vec::new()),
            down_until_ms: AtomicI64::new(0),
        })
    }

    /// `<prefix>:<rest>`
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// A new connection of its own (for a background loop), with `timeout` on connect, reads
    /// and writes.
    pub fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }

    /// False while the breaker holds Redis for down.
    pub fn available(&self) -> bool {
        now_ms() >= self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Runs `f` on a pooled connection. Fails at once while the breaker is open; a connection
    /// error opens it.
    pub fn run<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        if !self.available() {
            return Err(RedisError::from((
                ErrorKind::IoError,
                "redis is unreachable (retried shortly)",
            )));
        }
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self
                .connect(REQUEST_TIMEOUT)
                .inspect_err(|e| self.trip(e))?,
        };
        match f(&mut conn) {
            Ok(value) => {
                if let Ok(mut idle) = self.idle.lock() {
                    if idle.len() < POOL_MAX_IDLE {
                        idle.push(conn);
                    }
                }
                Ok(value)
            }
            Err(err) => {
                self.trip(&err);
                Err(err)
            }
        }
    }

    /// A connection-level failure marks Redis down for a moment and drops idle connections.
    pub fn trip(&self, err: &RedisError) {
        if is_connection_error(err) {
            self.down_until_ms
                .store(now_ms() + BREAKER_MS, Ordering::Relaxed);
            if let Ok(mut idle) = self.idle.lock() {
                idle.clear();
            }
        }
    }

    /// PING on a fresh connection, whatever the breaker says (for `/readyz`).
    pub fn ping(&self) -> bool {
        self.connect(REQUEST_TIMEOUT)
            .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
            .is_ok()
    }
}

pub fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.kind() == ErrorKind::IoError
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

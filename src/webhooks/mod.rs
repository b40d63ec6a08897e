//! Webhooks (SPEC "Schedules and webhooks"): every order event POSTed to each configured
//! endpoint that wants its kind, per the Standard Webhooks specification.
//!
//! - The journal ([`crate::db::journal`]) holds each event from the transaction that made it.
//!   The [`fanout`] thread turns the events into delivery rows, one per matching endpoint,
//!   before the Redis publisher may delete them (or deletes them itself without Redis): an
//!   event is never lost for an endpoint, and the hot path writes only the one event row.
//! - One [`worker`] thread per endpoint claims its due deliveries, each the oldest pending
//!   event of its order there (in order per order and endpoint), POSTs them with a timeout,
//!   and records the outcome: 2xx done; anything else retried with exponential backoff and
//!   jitter, dead-lettered after `webhooks.max_attempts`. A slow or dead endpoint holds up
//!   only its own thread: never another endpoint, an actix arbiter or the engine's work.
//! - [`signature`] signs each attempt afresh (`webhook-timestamp` is the attempt's time).

pub mod fanout;
pub mod signature;
pub mod worker;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::WebhookSettings;
use crate::db::DbPool;
use crate::metrics::Metrics;

/// Wakes a webhook thread (coalescing: one pending wake-up at most).
#[derive(Clone)]
pub struct Kick(SyncSender<()>);

impl Kick {
    fn new() -> (Kick, Receiver<()>) {
        let (tx, rx) = mpsc::sync_channel(1);
        (Kick(tx), rx)
    }

    pub fn kick(&self) {
        let _ = self.0.try_send(());
    }
}

/// Waits for a kick or until `timeout`; `false` once every [`Kick`] is gone (stop).
fn wait(rx: &Receiver<()>, timeout: Duration) -> bool {
    !matches!(
        rx.recv_timeout(timeout),
        Err(RecvTimeoutError::Disconnected)
    )
}

/// Sleeps `pause` unless the last [`Kick`] goes first; `false` then (stop).
fn pause(rx: &Receiver<()>, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        // Kicks do not cut a pause after a failure short.
        if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(left) {
            return false;
        }
    }
}

/// The HTTP client of webhook POSTs: every call within `timeout`, no redirects followed.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("order-engine/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `body` to `url` as Standard Webhooks message `id`, signed with `key` at this
/// attempt's time: `Ok` for a 2xx answer, else what went wrong.
pub fn post_signed(
    agent: &ureq::Agent,
    url: &str,
    key: &[u8],
    id: &str,
    body: &str,
) -> Result<(), String> {
    let timestamp = crate::domain::time::now().and_utc().timestamp();
    let result = agent
        .post(url)
        .set("content-type", "application/json")
        .set("webhook-id", id)
        .set("webhook-timestamp", &timestamp.to_string())
        .set(
            "webhook-signature",
            &signature::sign(key, id, timestamp, body),
        )
        .send_string(body);
    match result {
        Ok(response) if (200..300).contains(&response.status()) => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
        Err(ureq::Error::Transport(err)) => Err(err.to_string()),
    }
}

/// Starts the fan-out thread and one worker thread per endpoint; `None` when no endpoint is
/// configured. `keep_events`: Redis is configured, so fanned-out events stay for its
/// publisher. The threads end when the returned [`Kick`] (and its clones) are dropped.
pub fn start(
    pool: DbPool,
    settings: &WebhookSettings,
    keep_events: bool,
    metrics: Arc<Metrics>,
) -> std::io::Result<Option<Kick>> {
    if settings.endpoints.is_empty() {
        // Events journaled while endpoints were configured must not wait for a fan-out that
        // no longer comes (the Redis publisher takes only fanned-out events).
        let released = pool.get().map_err(|e| e.to_string()).and_then(|mut conn| {
            crate::db::journal::release_unfanned(&mut conn, keep_events).map_err(|e| e.to_string())
        });
        match released {
            Ok(0) => {}
            Ok(n) => log::warn!(
                "webhooks: no endpoint is configured; {n} order events journaled for endpoints \
                 are no longer waited for"
            ),
            Err(err) => log::warn!("webhooks: cannot release events left for endpoints: {err}"),
        }
        return Ok(None);
    }
    let mut workers = Vec::with_capacity(settings.endpoints.len());
    for (index, endpoint) in settings.endpoints.iter().enumerate() {
        let (kick, rx) = Kick::new();
        let worker = worker::Worker::new(
            pool.clone(),
            endpoint.clone(),
            settings.clone(),
            metrics.clone(),
        );
        std::thread::Builder::new()
            .name(format!("webhook-{index}"))
            .spawn(move || worker.run(rx))?;
        workers.push(kick);
    }
    let (kick, rx) = Kick::new();
    let fanout = fanout::FanOut {
        pool,
        endpoints: settings.endpoints.clone(),
        keep_events,
        workers,
    };
    std::thread::Builder::new()
        .name("webhook-fanout".into())
        .spawn(move || fanout.run(rx))?;
    log::info!(
        "webhooks: {} endpoint(s): {}",
        settings.endpoints.len(),
        settings
            .endpoints
            .iter()
            .map(|e| e.url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(kick))
}

//! One endpoint's worker thread: claims its due deliveries (each the oldest pending event of
//! its order at this endpoint), POSTs them one after another with the attempt's own
//! timestamp and signature, and records each outcome. Its own thread and HTTP client, so a
//! slow or dead endpoint holds up nothing but itself.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use crate::config::{WebhookEndpoint, WebhookSettings};
use crate::db::deliveries::{self, Claimed, Outcome};
use crate::db::outbox::RetryPolicy;
use crate::db::DbPool;
use crate::domain::time;
use crate::metrics::{EffectResult, Metrics};

/// Deliveries claimed at once (each a different order).
const CLAIM: i64 = 20;
/// Longest sleep without a kick (deliveries queued by other processes, retries falling due).
const POLL: Duration = Duration::from_millis(250);
/// A claim's lease beyond the attempt's timeout: after it another process (or this one,
/// restarted after a crash) may send the delivery again.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

pub struct Worker {
    pool: DbPool,
    endpoint: WebhookEndpoint,
    policy: RetryPolicy,
    timeout: Duration,
    metrics: Arc<Metrics>,
    agent: ureq::Agent,
}

impl Worker {
    pub fn new(
        pool: DbPool,
        endpoint: WebhookEndpoint,
        settings: WebhookSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let agent = super::agent(timeout);
        Worker {
            pool,
            endpoint,
            policy: RetryPolicy {
                max_attempts: settings.max_attempts,
                backoff_base_ms: settings.backoff_base_ms,
                backoff_max_ms: settings.backoff_max_ms,
            },
            timeout,
            metrics,
            agent,
        }
    }

    /// Claims and sends whatever is due, then waits for a kick (new deliveries) or [`POLL`]
    /// (retries falling due, deliveries of other processes), until the engine stops.
    pub fn run(self, rx: Receiver<()>) {
        loop {
            if let Err(err) = self.round() {
                log::warn!(
                    "webhook {}: cannot claim deliveries: {err}",
                    self.endpoint.url
                );
                if !super::pause(&rx, POLL) {
                    return;
                }
            }
            if !super::wait(&rx, POLL) {
                return;
            }
        }
    }

    /// Claims and sends until nothing here is due.
    fn round(&self) -> Result<(), String> {
        loop {
            let now = time::now();
            let lease = TimeDelta::from_std(self.timeout + LEASE_MARGIN).unwrap_or(TimeDelta::MAX);
            let claimed = {
                let mut conn = self.pool.get().map_err(|e| e.to_string())?;
                deliveries::claim(&mut conn, &self.endpoint.url, now, now + lease, CLAIM)
                    .map_err(|e| e.to_string())?
            };
            if claimed.is_empty() {
                return Ok(());
            }
            for delivery in &claimed {
                let error = self.send(delivery);
                self.record(delivery, error.as_deref());
            }
        }
    }

    /// One attempt: `None` when the endpoint answered 2xx, else what went wrong.
    fn send(&self, delivery: &Claimed) -> Option<String> {
        super::post_signed(
            &self.agent,
            &self.endpoint.url,
            &self.endpoint.key,
            &delivery.event_id.to_string(),
            &delivery.body,
        )
        .err()
    }

    /// Records an attempt (retrying the recording itself until the database answers: the
    /// lease keeps others off meanwhile), then logs and counts it.
    fn record(&self, delivery: &Claimed, error: Option<&str>) {
        let url = &self.endpoint.url;
        let what = format!(
            "event {} ({} of order {})",
            delivery.event_id, delivery.kind, delivery.order_no
        );
        let mut wait = Duration::from_millis(100);
        let outcome = loop {
            let result = self
                .pool
                .get()
                .map_err(|e| e.to_string())
                .and_then(|mut conn| {
                    deliveries::record(
                        &mut conn,
                        delivery.id,
                        error,
                        self.policy.max_attempts,
                        |attempts| jittered(self.policy.delay_after(attempts)),
                    )
                    .map_err(|e| e.to_string())
                });
            match result {
                Ok(outcome) => break outcome,
                Err(err) if wait > LEASE_MARGIN => {
                    log::error!("webhook {url}: {what}: cannot record the attempt, it is sent again later: {err}");
                    return;
                }
                Err(err) => {
                    log::warn!("webhook {url}: {what}: cannot record the attempt yet: {err}");
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        };
        let attempt = delivery.attempts + 1;
        let error = error.unwrap_or_default();
        match outcome {
            Outcome::Delivered => {
                self.metrics.webhook_delivery(EffectResult::Done);
                log::info!("webhook {url}: {what} delivered (attempt {attempt})");
            }
            Outcome::RetryAfter(delay) => {
                self.metrics.webhook_delivery(EffectResult::Retried);
                log::warn!(
                    "webhook {url}: {what} failed (attempt {attempt}: {error}), retrying in {delay:?}"
                );
            }
            Outcome::DeadLettered => {
                self.metrics.webhook_delivery(EffectResult::DeadLettered);
                log::error!(
                    "webhook {url}: {what} dead-lettered after {attempt} attempts: {error}"
                );
            }
            Outcome::AlreadySettled => {
                log::info!("webhook {url}: {what} was settled meanwhile");
            }
        }
    }
}

/// `delay` with "equal jitter": half of it, plus a random part of the other half, so the
/// retries of many deliveries that failed together spread out.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    half + Duration::from_micros(random % spread.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_whole() {
        let delay = Duration::from_millis(1000);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let d = jittered(delay);
            assert!(d >= delay / 2 && d <= delay, "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 1, "no jitter");
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}

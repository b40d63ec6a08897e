//! The fan-out thread: journal events -> delivery rows, one per endpoint that wants the kind
//! ([`crate::db::deliveries::fan_out`]), then a kick to every endpoint's worker. Woken after
//! each commit (`Core::after_commit`), and every [`POLL`] for events of other processes and
//! those left by a crash.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::Kick;
use crate::config::WebhookEndpoint;
use crate::db::{deliveries, DbPool};

/// Events fanned out per transaction.
const BATCH: i64 = 200;
/// How often the journal is looked at without a kick.
const POLL: Duration = Duration::from_millis(250);
/// Longest pause after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct FanOut {
    pub pool: DbPool,
    pub endpoints: Vec<WebhookEndpoint>,
    /// Redis is configured: fanned-out events stay for its publisher.
    pub keep_events: bool,
    /// Each endpoint's worker.
    pub workers: Vec<Kick>,
}

impl FanOut {
    pub fn run(self, rx: Receiver<()>) {
        let mut backoff = Duration::ZERO;
        loop {
            let go_on = if backoff.is_zero() {
                super::wait(&rx, POLL)
            } else {
                super::pause(&rx, backoff)
            };
            backoff = match self.drain() {
                Ok(()) => Duration::ZERO,
                Err(err) => {
                    if backoff.is_zero() {
                        log::warn!("webhooks: cannot fan out order events (they wait): {err}");
                    }
                    (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF)
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// Fans out until the journal has no event left for it.
    fn drain(&self) -> Result<(), String> {
        loop {
            let mut conn = self.pool.get().map_err(|e| e.to_string())?;
            let n = deliveries::fan_out(&mut conn, &self.endpoints, self.keep_events, BATCH)
                .map_err(|e| e.to_string())?;
            drop(conn);
            if n > 0 {
                log::debug!("webhooks: {n} order events fanned out");
                for worker in &self.workers {
                    worker.kick();
                }
            }
            if n < BATCH as usize {
                return Ok(());
            }
        }
    }
}

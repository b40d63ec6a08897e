//! `Closer`: group commit for timeouts. An order actor whose timer fired (or a sweep that found
//! an overdue order with no actor) asks the closer to close the order; the closer runs the
//! requests that arrived together as one batch of the one transition path
//! ([`crate::db::transitions::apply_batch`], each a `Command::Timeout`), at most [`PARALLEL`]
//! batches at a time (one on SQLite). A lone timer is a batch of one, started at once (no
//! added delay); when deadlines bunch up, the requests that queue while a batch runs form the
//! next one. The closer hands what committed to the after-commit step and answers each order.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Committed, Core, MAILBOX_CAPACITY};
use crate::config::DatabaseUrl;
use crate::db::outbox::MAX_BATCH;
use crate::db::transitions::{apply_batch, Request};
use crate::domain::order::{Command, OutcomeKind};
use crate::domain::time;
use crate::error::ApiError;

/// Batches in flight at once on PostgreSQL; on SQLite one (it has one writer: a second batch
/// would only queue for it, while the timeouts arriving meanwhile join the next batch).
const PARALLEL: usize = 2;
/// Longest wait for a pooled connection.
const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Close this order for timeout, if it is pending and due.
#[derive(Message)]
#[rtype(result = "Expired")]
pub struct Expire(pub String);

/// What became of an order the closer was asked to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// It is no longer pending (closed now, or earlier by something else; or gone).
    Settled,
    /// Still pending and, by the database's clock, not yet due.
    NotDue,
    /// The batch failed (the database is unavailable): try again later.
    Failed(String),
}

type Waiting = (String, oneshot::Sender<Expired>);

pub struct Closer {
    core: Arc<Core>,
    queue: Vec<Waiting>,
    running: usize,
    parallel: usize,
}

impl Closer {
    pub fn new(core: Arc<Core>) -> Self {
        let parallel = match core.settings.database.url {
            DatabaseUrl::Sqlite(_) => 1,
            _ => PARALLEL,
        };
        Self {
            core,
            queue: Vec::new(),
            running: 0,
            parallel,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        while self.running < self.parallel && !self.queue.is_empty() {
            let take = self.queue.len().min(MAX_BATCH);
            let batch: Vec<Waiting> = self.queue.drain(..take).collect();
            let requests: Vec<Request> = batch
                .iter()
                .map(|(order_no, _)| Request {
                    order_no: order_no.as_str().into(),
                    command: Command::Timeout,
                })
                .collect();
            let core = self.core.clone();
            let journal = core.journal;
            self.running += 1;
            let work = async move {
                core.run_db(CONNECTION_WAIT, move |conn| {
                    apply_batch(conn, &requests, time::now, journal)
                })
                .await
            };
            ctx.spawn(
                actix::fut::wrap_future(work).map(move |result, closer: &mut Self, ctx| {
                    closer.running -= 1;
                    closer.answer(batch, result);
                    closer.flush(ctx);
                }),
            );
        }
    }

    /// Hands what committed to the after-commit step, then answers each waiting order.
    fn answer(
        &mut self,
        batch: Vec<Waiting>,
        result: Result<Vec<Result<crate::db::transitions::Outcome, ApiError>>, ApiError>,
    ) {
        match result {
            Ok(outcomes) => {
                let node_id = &self.core.settings.cluster.node_id;
                self.core
                    .after_commit(Committed::of(outcomes.iter().flatten(), node_id));
                let closed: Vec<&str> = outcomes
                    .iter()
                    .flatten()
                    .filter(|o| o.kind == OutcomeKind::Transitioned)
                    .map(|o| o.order.order_no.as_str())
                    .collect();
                log_closed(&closed);
                for ((order_no, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let expired = match outcome {
                        Ok(o) if o.kind == OutcomeKind::NotDue => Expired::NotDue,
                        Ok(o) if !o.is_final() => Expired::Failed(format!(
                            "order {order_no}: still pending after its timeout"
                        )),
                        Ok(_) | Err(ApiError::OrderNotFound(_)) => Expired::Settled,
                        Err(err) => Expired::Failed(err.to_string()),
                    };
                    let _ = reply.send(expired);
                }
            }
            Err(err) => {
                log::warn!(
                    "a batch of {} timeouts failed; each order retries: {err}",
                    batch.len()
                );
                // The database is unavailable for the waiting ones too: they back off rather
                // than queue up behind more failing batches.
                let waiting: Vec<Waiting> = self.queue.drain(..).collect();
                for (_, reply) in batch.into_iter().chain(waiting) {
                    let _ = reply.send(Expired::Failed(err.to_string()));
                }
            }
        }
    }
}

impl Actor for Closer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Handler<Expire> for Closer {
    type Result = ResponseFuture<Expired>;

    fn handle(&mut self, msg: Expire, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue.push((msg.0, tx));
        self.flush(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Expired::Failed("the closer stopped".into()))
        })
    }
}

/// One line per batch: the orders themselves when there are few, else how many (each at
/// debug level).
fn log_closed(closed: &[&str]) {
    if closed.is_empty() {
    } else if closed.len() <= 8 {
        log::info!("order {} -> cancelled (timeout)", closed.join(", "));
    } else {
        log::info!(
            "{} orders -> cancelled (timeout) in one transaction",
            closed.len()
        );
        for no in closed {
            log::debug!("order {no} -> cancelled (timeout)");
        }
    }
}

//! `Closer`: group commit for timeouts. An order actor whose timer fired asks the closer to
//! close its order; the closer runs the requests that arrived together as one set-based
//! transaction ([`crate::db::batch::close_expired`]), at most [`PARALLEL`] at a time. A lone
//! timer is a batch of one, started at once (no added delay); when deadlines bunch up, the
//! requests that queue while a batch runs form the next one. An order the batch did not close
//! (paid meanwhile, not yet due, or the batch failed) is answered `false`, and its actor takes
//! the one-order path, which decides it exactly as before.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::effects::{EffectDispatcher, QueueEffect};
use super::{blocking_within, Core, MAILBOX_CAPACITY};
use crate::db::batch::{close_expired, MAX_BATCH};
use crate::domain::order::effect;
use crate::domain::time;

/// Batches in flight at once.
const PARALLEL: usize = 2;
/// Longest wait for a pooled connection.
const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Close this order for timeout, if it is pending and due.
#[derive(Message)]
#[rtype(result = "Expired")]
pub struct Expire(pub String);

/// What the closer did with an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// Closed (and its refund queued).
    Closed,
    /// Left as it was: not pending or not due; the one-order path decides what it needs.
    Untouched,
    /// The batch failed (the database is unavailable): try again later.
    Failed(String),
}

pub struct Closer {
    core: Arc<Core>,
    effects: Addr<EffectDispatcher>,
    queue: Vec<(String, oneshot::Sender<Expired>)>,
    running: usize,
}

impl Closer {
    pub fn new(core: Arc<Core>, effects: Addr<EffectDispatcher>) -> Self {
        Self {
            core,
            effects,
            queue: Vec::new(),
            running: 0,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        while self.running < PARALLEL && !self.queue.is_empty() {
            let take = self.queue.len().min(MAX_BATCH);
            let batch: Vec<(String, oneshot::Sender<Expired>)> = self.queue.drain(..take).collect();
            let numbers: Vec<String> = batch.iter().map(|(no, _)| no.clone()).collect();
            let core = self.core.clone();
            let journal = core.journal;
            self.running += 1;
            let work = async move {
                blocking_within(&core, CONNECTION_WAIT, move |conn| {
                    Ok(close_expired(conn, &numbers, time::now(), journal)?)
                })
                .await
            };
            ctx.spawn(
                actix::fut::wrap_future(work).map(move |result, closer: &mut Self, ctx| {
                    closer.running -= 1;
                    match result {
                        Ok(closed) => {
                            if !closed.is_empty() {
                                closer.core.kick_events();
                                log_closed(&closed);
                            }
                            let closed: std::collections::HashMap<String, bool> =
                                closed.into_iter().collect();
                            for (order_no, reply) in batch {
                                let done = match closed.get(&order_no) {
                                    Some(refund) => {
                                        if *refund {
                                            closer.effects.do_send(QueueEffect {
                                                order_no: order_no.clone(),
                                                kind: effect::REFUND,
                                            });
                                        }
                                        Expired::Closed
                                    }
                                    None => Expired::Untouched,
                                };
                                let _ = reply.send(done);
                            }
                        }
                        Err(err) => {
                            log::warn!(
                                "a batch of {} timeouts failed; each order retries: {err}",
                                batch.len()
                            );
                            // The database is unavailable for the waiting ones too: they back
                            // off rather than queue up behind more failing batches.
                            let waiting: Vec<_> = closer.queue.drain(..).collect();
                            for (_, reply) in batch.into_iter().chain(waiting) {
                                let _ = reply.send(Expired::Failed(err.to_string()));
                            }
                        }
                    }
                    closer.flush(ctx);
                }),
            );
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
fn log_closed(closed: &[(String, bool)]) {
    if closed.len() <= 8 {
        let numbers: Vec<&str> = closed.iter().map(|(no, _)| no.as_str()).collect();
        log::info!("order {} -> cancelled (timeout)", numbers.join(", "));
    } else {
        log::info!(
            "{} orders -> cancelled (timeout) in one transaction",
            closed.len()
        );
        for (no, _) in closed {
            log::debug!("order {no} -> cancelled (timeout)");
        }
    }
}

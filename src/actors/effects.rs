//! The effect actors. Each kind of effect (the grant actor, the refund actor, ...) has an
//! [`EffectWorker`] `SyncArbiter` owning pooled connections (Diesel is blocking: they run on
//! their own threads); each applies, idempotently, a batch of the outbox rows of its kind that
//! wait together in one transaction, or one row alone ([`crate::db::outbox`]). `EffectDispatcher` routes queued effects to them and retries failures one at a time
//! with exponential backoff; after `effects.max_attempts` an effect is dead-lettered
//! for admins. Every few seconds it also picks up overdue effects that no message announced
//! (queued by a process that died, or retried across a database outage).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::TimeDelta;

use super::{Core, MAILBOX_CAPACITY};
use crate::db::outbox::{self, Attempt, RetryPolicy, MAX_BATCH};
use crate::domain::ids::OrderNo;
use crate::domain::states::EffectKind;
use crate::domain::time;
use crate::metrics::EffectResult;

/// Threads of each effect actor.
const WORKERS_PER_KIND: usize = 2;
/// How often overdue effects are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Apply one effect of one order.
#[derive(Message, Clone)]
#[rtype(result = "Result<Attempt, String>")]
pub struct Apply {
    pub order_no: OrderNo,
}

/// Queue an effect (written by a committed transaction) for its actor.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct QueueEffect {
    pub order_no: OrderNo,
    pub kind: EffectKind,
}

fn policy(core: &Core) -> RetryPolicy {
    let e = &core.settings.effects;
    RetryPolicy {
        max_attempts: e.max_attempts,
        backoff_base_ms: e.backoff_base_ms,
        backoff_max_ms: e.backoff_max_ms,
    }
}

/// The actor of one kind of effect — the grant actor, the refund actor — a `SyncArbiter` of
/// [`WORKERS_PER_KIND`] threads, each owning pooled connections as it needs them.
pub struct EffectWorker {
    kind: EffectKind,
    core: Arc<Core>,
}

impl Actor for EffectWorker {
    type Context = SyncContext<Self>;
}

impl Handler<Apply> for EffectWorker {
    type Result = Result<Attempt, String>;

    fn handle(&mut self, msg: Apply, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let core = &self.core;
        let mut conn = core.pool.get().map_err(|e| e.to_string())?;
        let attempt = if self.kind.calls_provider() {
            let node = core.settings.cluster.node_id.as_str();
            crate::providers::effects::attempt(
                &core.providers,
                &core.settings.pricing.currency,
                &mut conn,
                msg.order_no.as_str(),
                self.kind,
                policy(core),
                time::now(),
                core.journal,
                &|outcome| core.after_commit(super::Committed::of([outcome], node)),
            )
        } else {
            outbox::attempt(
                &mut conn,
                msg.order_no.as_str(),
                self.kind,
                policy(core),
                time::now(),
                core.journal,
            )
        }
        .map_err(|e| e.to_string())?;
        if matches!(attempt, Attempt::Applied | Attempt::DeadLettered(_)) {
            core.after_commit(super::Committed::default());
        }
        Ok(attempt)
    }
}

/// Apply the pending effects (of the worker's kind) of these orders in one transaction;
/// answers the orders whose effect it applied.
#[derive(Message)]
#[rtype(result = "Result<Vec<OrderNo>, String>")]
pub struct ApplyBatch(pub Vec<OrderNo>);

impl Handler<ApplyBatch> for EffectWorker {
    type Result = Result<Vec<OrderNo>, String>;

    fn handle(&mut self, msg: ApplyBatch, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let core = &self.core;
        let mut conn = core.pool.get().map_err(|e| e.to_string())?;
        let applied = outbox::apply(&mut conn, self.kind, &msg.0, time::now(), core.journal)
            .map_err(|e| e.to_string())?;
        if !applied.is_empty() {
            core.after_commit(super::Committed::default());
        }
        Ok(applied)
    }
}

/// Effects of one kind waiting for the next batch, and that kind's batches in flight.
#[derive(Default)]
struct Batches {
    waiting: Vec<OrderNo>,
    in_flight: usize,
}

pub struct EffectDispatcher {
    core: Arc<Core>,
    /// The actor of each kind.
    workers: BTreeMap<EffectKind, Addr<EffectWorker>>,
    /// Effects sent to an actor and not answered yet, so a sweep does not send them twice.
    in_flight: HashSet<(OrderNo, EffectKind)>,
    batches: BTreeMap<EffectKind, Batches>,
}

impl EffectDispatcher {
    pub fn start_with_workers(core: Arc<Core>) -> Addr<Self> {
        let workers = EffectKind::ALL
            .iter()
            .map(|&kind| {
                let core = core.clone();
                let addr = SyncArbiter::start(WORKERS_PER_KIND, move || EffectWorker {
                    kind,
                    core: core.clone(),
                });
                (kind, addr)
            })
            .collect();
        let dispatcher = EffectDispatcher {
            core,
            workers,
            in_flight: HashSet::new(),
            batches: EffectKind::ALL
                .iter()
                .map(|&kind| (kind, Batches::default()))
                .collect(),
        };
        // A thread of its own: a burst of effects must not hold up the order actors' timers.
        EffectDispatcher::start_in_arbiter(&Arbiter::new().handle(), move |_| dispatcher)
    }

    /// Queues an effect for the next batch of its kind (one transaction for all the effects
    /// that wait together; a lone effect is a batch of one, sent at once).
    fn dispatch(&mut self, msg: QueueEffect, ctx: &mut Context<Self>) {
        if !self.in_flight.insert((msg.order_no.clone(), msg.kind)) {
            return;
        }
        self.batches(msg.kind).waiting.push(msg.order_no);
        self.flush(msg.kind, ctx);
    }

    fn batches(&mut self, kind: EffectKind) -> &mut Batches {
        self.batches.entry(kind).or_default()
    }

    /// The actor that applies `kind` effects.
    fn worker(&self, kind: EffectKind) -> Option<&Addr<EffectWorker>> {
        self.workers.get(&kind)
    }

    /// Sends waiting effects of `kind` to their actors, up to one batch per worker in flight.
    /// A batch that fails is retried one effect at a time (with the retry policy).
    fn flush(&mut self, kind: EffectKind, ctx: &mut Context<Self>) {
        if kind.calls_provider() {
            // Calls to a provider go one effect at a time, outside any transaction.
            let waiting: Vec<OrderNo> = self.batches(kind).waiting.drain(..).collect();
            for order_no in waiting {
                self.apply_alone(QueueEffect { order_no, kind }, ctx);
            }
            return;
        }
        loop {
            let batches = self.batches(kind);
            if batches.in_flight >= WORKERS_PER_KIND || batches.waiting.is_empty() {
                return;
            }
            let take = batches.waiting.len().min(MAX_BATCH);
            let batch: Vec<OrderNo> = batches.waiting.drain(..take).collect();
            batches.in_flight += 1;
            let Some(worker) = self.worker(kind) else {
                log::error!("no actor applies {kind} effects");
                return;
            };
            let request = worker.send(ApplyBatch(batch.clone()));
            ctx.spawn(actix::fut::wrap_future(request).map(
                move |result, actor: &mut Self, ctx| {
                    actor.batches(kind).in_flight -= 1;
                    match result {
                        Ok(Ok(applied)) => {
                            let done = applied.len() as u64;
                            actor.core.metrics.effects(kind, EffectResult::Done, done);
                            if applied.len() <= 8 && !applied.is_empty() {
                                log::info!("order {}: {kind} applied", applied.join(", "));
                            } else if !applied.is_empty() {
                                log::info!("{} {kind}s applied in one transaction", applied.len());
                                for no in &applied {
                                    log::debug!("order {no}: {kind} applied");
                                }
                            }
                            for order_no in batch {
                                actor.in_flight.remove(&(order_no, kind));
                            }
                        }
                        failed => {
                            let error = match failed {
                                Ok(Err(error)) => error,
                                Err(mailbox) => mailbox.to_string(),
                                Ok(Ok(_)) => String::new(),
                            };
                            log::warn!(
                                "a batch of {} {kind}s failed; each retries alone: {error}",
                                batch.len()
                            );
                            for order_no in batch {
                                actor.apply_alone(QueueEffect { order_no, kind }, ctx);
                            }
                        }
                    }
                    actor.flush(kind, ctx);
                },
            ));
        }
    }

    /// Applies one effect in a transaction of its own; retries with backoff.
    fn apply_alone(&mut self, msg: QueueEffect, ctx: &mut Context<Self>) {
        let key = (msg.order_no.clone(), msg.kind);
        self.in_flight.insert(key.clone());
        let Some(worker) = self.worker(msg.kind) else {
            log::error!(
                "order {}: no actor applies {} effects",
                msg.order_no,
                msg.kind
            );
            return;
        };
        let request = worker.send(Apply {
            order_no: msg.order_no.clone(),
        });
        // The reply comes back as a message: a future spawned in this context per effect would
        // be polled on every wake-up of the dispatcher (quadratic in the backlog).
        let me = ctx.address();
        actix::spawn(async move {
            let result = request.await.map_err(|e| e.to_string());
            me.do_send(Attempted { msg, result });
        });
    }
    /// Queues pending effects that are overdue and not in flight here.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let core = self.core.clone();
        let lookup = async move {
            let wait = core.pool.connection_timeout();
            core.run_db(wait, |conn| {
                let before = time::now() - TimeDelta::seconds(1);
                Ok(outbox::overdue(conn, before, 1000)?)
            })
            .await
        };
        ctx.spawn(
            actix::fut::wrap_future(lookup).map(|rows, actor: &mut Self, ctx| match rows {
                Ok(rows) => {
                    for row in rows {
                        let msg = QueueEffect {
                            order_no: row.order_no,
                            kind: row.kind,
                        };
                        actor.dispatch(msg, ctx);
                    }
                }
                Err(err) => log::warn!("overdue effect sweep failed: {err}"),
            }),
        );
    }
}

impl Actor for EffectDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(SWEEP_EVERY, |actor, ctx| actor.sweep(ctx));
    }
}

/// The answer of one effect's attempt.
#[derive(Message)]
#[rtype(result = "()")]
struct Attempted {
    msg: QueueEffect,
    /// `Err` when the worker was unreachable.
    result: Result<Result<Attempt, String>, String>,
}

impl Handler<Attempted> for EffectDispatcher {
    type Result = ();

    fn handle(&mut self, Attempted { msg, result }: Attempted, ctx: &mut Context<Self>) {
        self.in_flight.remove(&(msg.order_no.clone(), msg.kind));
        let counted = match &result {
            Ok(Ok(Attempt::Applied)) => Some(EffectResult::Done),
            Ok(Ok(Attempt::AlreadySettled)) => None,
            Ok(Ok(Attempt::DeadLettered(_))) => Some(EffectResult::DeadLettered),
            Ok(Ok(Attempt::RetryAfter(_)) | Err(_)) | Err(_) => Some(EffectResult::Retried),
        };
        if let Some(counted) = counted {
            self.core.metrics.effects(msg.kind, counted, 1);
        }
        let retry = match result {
            Ok(Ok(Attempt::Applied)) => {
                log::info!("order {}: {} applied", msg.order_no, msg.kind);
                None
            }
            Ok(Ok(Attempt::AlreadySettled)) => None,
            Ok(Ok(Attempt::RetryAfter(delay))) => {
                log::warn!(
                    "order {}: {} failed, retrying in {delay:?}",
                    msg.order_no,
                    msg.kind
                );
                Some(delay)
            }
            Ok(Ok(Attempt::DeadLettered(error))) => {
                log::error!(
                    "order {}: {} dead-lettered: {error}",
                    msg.order_no,
                    msg.kind
                );
                None
            }
            // The database (or the worker) could not even record the attempt: try again
            // without counting it.
            Ok(Err(error)) => {
                log::warn!(
                    "order {}: {} could not run: {error}",
                    msg.order_no,
                    msg.kind
                );
                Some(Duration::from_millis(
                    self.core.settings.effects.backoff_base_ms,
                ))
            }
            Err(mailbox) => {
                log::error!(
                    "order {}: {} worker unreachable: {mailbox}",
                    msg.order_no,
                    msg.kind
                );
                Some(Duration::from_millis(
                    self.core.settings.effects.backoff_base_ms,
                ))
            }
        };
        if let Some(delay) = retry {
            ctx.run_later(delay, move |actor, ctx| actor.dispatch(msg, ctx));
        }
    }
}

impl Handler<QueueEffect> for EffectDispatcher {
    type Result = ();

    fn handle(&mut self, msg: QueueEffect, ctx: &mut Context<Self>) {
        self.dispatch(msg, ctx);
    }
}

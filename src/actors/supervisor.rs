//! `OrderSupervisor`: maps `order_no` to its actor's (weak) address and deadline. An actor
//! whose context stopped anyway is re-created from the stored deadline when it is next asked
//! for or its timer is due (`restarts` counts it); an actor stops itself after its order's
//! final transition, and the supervisor forgets it.
//!
//! It also keeps the actors' timers: one entry per order in a heap on the deadline and one
//! tokio timer for the earliest, which sends each due actor [`Fire`]. A tokio `Sleep` of each
//! actor's own would cost 112 bytes per pending order; an entry here costs 32.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix::WeakAddr;
use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use super::closer::{Expire, Expired};
use super::effects::{EffectDispatcher, QueueEffect};
use super::key::OrderKey;
use super::order::{Fire, OrderActor, StandDown};
use super::{blocking, Core, MAILBOX_CAPACITY};
use crate::db::orders;
use crate::db::transitions::{self, Command, OutcomeKind};
use crate::domain::time;

/// A live order actor, with what is needed to re-create it if its mailbox ever closes.
struct Entry {
    /// Weak: a strong address costs two allocations per pending order, and the actor keeps
    /// itself alive.
    addr: WeakAddr<OrderActor>,
    /// The deadline, in Unix milliseconds (what is stored).
    deadline_ms: i64,
}

pub struct OrderSupervisor {
    actors: HashMap<OrderKey, Entry>,
    /// Times this supervisor re-created an order's actor after its mailbox closed.
    revivals: HashMap<OrderKey, u32>,
    timers: Timers,
    core: Arc<Core>,
    effects: Addr<EffectDispatcher>,
    sweeping: bool,
}

/// The order actors' timers: `(deadline in Unix ms, order)` in a min-heap, and the one tokio
/// timer armed for the earliest. An order that leaves `pending` leaves its entry behind; it is
/// skipped when due, and the heap is compacted when such entries outnumber the live ones.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(i64, OrderKey)>>,
    /// When the tokio timer wakes the supervisor, and its handle.
    wake: Option<(i64, SpawnHandle)>,
}

/// Most actors told to fire in one wake-up, so a burst of shared deadlines does not hold the
/// supervisor's mailbox (placements, callbacks) for long.
const FIRE_PER_WAKE: usize = 4096;

impl OrderSupervisor {
    pub fn new(core: Arc<Core>, effects: Addr<EffectDispatcher>) -> Self {
        Self {
            actors: HashMap::new(),
            revivals: HashMap::new(),
            timers: Timers::default(),
            core,
            effects,
            sweeping: false,
        }
    }

    /// Adds an order's timer entry.
    fn schedule(&mut self, key: OrderKey, deadline_ms: i64, ctx: &mut Context<Self>) {
        self.timers.heap.push(Reverse((deadline_ms, key)));
        self.wake_for_earliest(ctx);
    }

    /// Keeps the tokio timer set for the earliest entry.
    fn wake_for_earliest(&mut self, ctx: &mut Context<Self>) {
        let Some(Reverse((next, _))) = self.timers.heap.peek() else {
            return;
        };
        let next = *next;
        if let Some((at, handle)) = self.timers.wake {
            if at <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let now_us = time::now_precise().and_utc().timestamp_micros();
        let delay = Duration::from_micros(u64::try_from(next * 1000 - now_us).unwrap_or(0));
        let handle = ctx.run_later(delay, |supervisor, ctx| {
            supervisor.timers.wake = None;
            supervisor.fire_due(ctx);
        });
        self.timers.wake = Some((next, handle));
    }

    /// Tells every actor whose deadline has passed to fire (never before the deadline: the
    /// heap is read against the clock at full precision).
    fn fire_due(&mut self, ctx: &mut Context<Self>) {
        let now_us = time::now_precise().and_utc().timestamp_micros();
        let mut fired = 0;
        while fired < FIRE_PER_WAKE {
            match self.timers.heap.peek() {
                Some(Reverse((due, _))) if due * 1000 <= now_us => {}
                _ => break,
            }
            let Some(Reverse((_, key))) = self.timers.heap.pop() else {
                break;
            };
            if let Some(addr) = self.live(&key, ctx) {
                addr.do_send(Fire);
                fired += 1;
            }
        }
        self.wake_for_earliest(ctx);
    }

    /// An order left this supervisor: drops its timer entries once the ones left behind
    /// outnumber the live ones (amortised O(1) per order).
    fn removed(&mut self, key: &OrderKey) {
        self.revivals.remove(key);
        if self.timers.heap.len() > 2 * self.actors.len() + FIRE_PER_WAKE {
            let actors = &self.actors;
            self.timers
                .heap
                .retain(|Reverse((_, key))| actors.contains_key(key));
        }
    }
}

impl Actor for OrderSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(SWEEP_EVERY, |supervisor, ctx| supervisor.sweep(ctx));
    }
}

/// How often overdue pending orders are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How far past its deadline an order must be before the sweep closes it (its own actor, if
/// any, closes it long before).
const SWEEP_GRACE_MS: i64 = 1000;

impl OrderSupervisor {
    /// The safety net behind the timers: pending orders more than a second past their deadline
    /// with no actor here (their process died, or their actor could not be created) are closed
    /// through the same transition. The partial index on pending deadlines makes this cost
    /// O(overdue orders), not O(pending orders).
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        // One sweep at a time, so a slow database does not pile them up; `spawn`, not `wait`,
        // so the supervisor keeps routing messages meanwhile.
        if std::mem::replace(&mut self.sweeping, true) {
            return;
        }
        let core = self.core.clone();
        let fetch = async move {
            blocking(&core, |conn| {
                let before = time::now() - TimeDelta::milliseconds(SWEEP_GRACE_MS);
                Ok(orders::overdue(conn, before, 1000)?)
            })
            .await
        };
        let close = fetch.into_actor(self).map(|found, supervisor, ctx| {
            let orphans: Vec<String> = match found {
                Ok(found) => found
                    .into_iter()
                    .filter(|no| match supervisor.live(&OrderKey::new(no), ctx) {
                        // An actor still armed a second after its deadline has lost its timer
                        // entry somehow: fire it (it ignores this unless armed).
                        Some(addr) => {
                            addr.do_send(Fire);
                            false
                        }
                        None => true,
                    })
                    .collect(),
                Err(err) => {
                    log::warn!("overdue order sweep failed: {err}");
                    Vec::new()
                }
            };
            let core = supervisor.core.clone();
            let effects = supervisor.effects.clone();
            let closer = core.closer.get().cloned();
            ctx.spawn(actix::fut::wrap_future(async move {
                // Batched through the closer first; what it did not close goes alone.
                let mut left = Vec::new();
                if let Some(closer) = closer {
                    let asks = orphans.iter().map(|no| closer.send(Expire(no.clone())));
                    let answers = futures_util::future::join_all(asks).await;
                    for (order_no, closed) in orphans.into_iter().zip(answers) {
                        if closed != Ok(Expired::Closed) {
                            left.push(order_no);
                        }
                    }
                } else {
                    left = orphans;
                }
                for order_no in left {
                    let no = order_no.clone();
                    let journal = core.journal;
                    let outcome = blocking(&core, move |conn| {
                        transitions::apply(conn, &no, &Command::Timeout, time::now, journal)
                    })
                    .await;
                    match outcome {
                        Ok(outcome) => {
                            core.after_transition(&order_no, &outcome);
                            if outcome.kind == OutcomeKind::Transitioned {
                                log::info!(
                                    "order {order_no} -> {} (timeout, by the sweep)",
                                    outcome.order.status
                                );
                            }
                            for kind in outcome.effects {
                                effects.do_send(QueueEffect {
                                    order_no: order_no.clone(),
                                    kind,
                                });
                            }
                        }
                        Err(err) => log::warn!("order {order_no}: sweep could not close it: {err}"),
                    }
                }
            }));
        });
        ctx.spawn(close.map(|(), supervisor, _| supervisor.sweeping = false));
    }
}

/// Start an actor for a pending order (no-op when it has one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub order_no: String,
    pub deadline: NaiveDateTime,
}

/// The order's actor in this process, if any.
#[derive(Message)]
#[rtype(result = "Option<Addr<OrderActor>>")]
pub struct Lookup(pub OrderKey);

/// The order left `pending`: drop its actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub OrderKey);

/// The order left `pending` in another process: stop its actor and timer here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire(pub String);

#[derive(Message)]
#[rtype(result = "SupervisorStats")]
pub struct Stats;

#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStats {
    pub live_actors: usize,
    pub armed: i64,
    pub transitioning: i64,
}

impl OrderSupervisor {
    /// Starts an order's actor and its timer entry (armed before `Track` is answered, so the
    /// timer is counted).
    fn start_actor(
        &mut self,
        key: OrderKey,
        deadline: NaiveDateTime,
        restarts: u32,
        ctx: &mut Context<Self>,
    ) -> Addr<OrderActor> {
        let core = self.core.clone();
        let addr = OrderActor::new(key.clone(), deadline, core, restarts).start();
        let deadline_ms = time::unix_ms(&deadline);
        self.schedule(key.clone(), deadline_ms, ctx);
        self.actors.insert(
            key,
            Entry {
                addr: addr.downgrade(),
                deadline_ms,
            },
        );
        addr
    }

    /// The live address of an order's actor. An actor whose mailbox closed anyway (its
    /// context is gone) is re-created from the stored deadline, and the restart counted.
    fn live(&mut self, key: &OrderKey, ctx: &mut Context<Self>) -> Option<Addr<OrderActor>> {
        let entry = self.actors.get(key)?;
        if let Some(addr) = entry.addr.upgrade().filter(Addr::connected) {
            return Some(addr);
        }
        let deadline_ms = entry.deadline_ms;
        let revivals = self.revivals.entry(key.clone()).or_insert(0);
        *revivals += 1;
        let revivals = *revivals;
        log::warn!("order {key}: actor mailbox closed; re-creating it ({revivals} so far)");
        let deadline = chrono::DateTime::from_timestamp_millis(deadline_ms)
            .unwrap_or_default()
            .naive_utc();
        Some(self.start_actor(key.clone(), deadline, revivals, ctx))
    }
}

impl Handler<Track> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Track, ctx: &mut Context<Self>) {
        let key = OrderKey::new(&msg.order_no);
        if self.live(&key, ctx).is_none() {
            self.start_actor(key, msg.deadline, 0, ctx);
        }
    }
}

impl Handler<Lookup> for OrderSupervisor {
    type Result = Option<Addr<OrderActor>>;

    fn handle(&mut self, msg: Lookup, ctx: &mut Context<Self>) -> Self::Result {
        self.live(&msg.0, ctx)
    }
}

impl Handler<Forget> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Forget, _ctx: &mut Context<Self>) {
        if self.actors.remove(&msg.0).is_some() {
            self.removed(&msg.0);
        }
    }
}

impl Handler<Retire> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Retire, _ctx: &mut Context<Self>) {
        let key = OrderKey::new(&msg.0);
        if let Some(entry) = self.actors.remove(&key) {
            if let Some(addr) = entry.addr.upgrade() {
                addr.do_send(StandDown);
            }
            self.removed(&key);
            log::info!(
                "order {}: left pending in another process; actor stopped",
                msg.0
            );
        }
    }
}

impl Handler<Stats> for OrderSupervisor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(SupervisorStats {
            live_actors: self.actors.len(),
            armed: self.core.gauges.armed.load(Ordering::Relaxed),
            transitioning: self.core.gauges.transitioning.load(Ordering::Relaxed),
        })
    }
}

//! `OrderSupervisor`: maps `order_no` to its actor's address. It starts each order actor under
//! actix's `Supervisor` (a stopped actor whose address is still held is restarted, and
//! re-arms from the stored deadline), and lets an actor go after its final transition by
//! dropping the address.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use super::closer::{Expire, Expired};
use super::effects::{EffectDispatcher, QueueEffect};
use super::order::{OrderActor, StandDown};
use super::{blocking, Core, MAILBOX_CAPACITY};
use crate::db::orders;
use crate::db::transitions::{self, Command, OutcomeKind};
use crate::domain::time;

/// A live order actor, with what is needed to re-create it if its mailbox ever closes.
struct Entry {
    addr: Addr<OrderActor>,
    deadline: NaiveDateTime,
    /// Times this supervisor re-created the actor after its mailbox closed.
    revivals: u32,
}

pub struct OrderSupervisor {
    actors: HashMap<String, Entry>,
    core: Arc<Core>,
    effects: Addr<EffectDispatcher>,
    sweeping: bool,
}

impl OrderSupervisor {
    pub fn new(core: Arc<Core>, effects: Addr<EffectDispatcher>) -> Self {
        Self {
            actors: HashMap::new(),
            core,
            effects,
            sweeping: false,
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
                    .filter(|no| {
                        !supervisor
                            .actors
                            .get(no)
                            .is_some_and(|entry| entry.addr.connected())
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
pub struct Lookup(pub String);

/// The order left `pending`: drop its actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub String);

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
    /// Starts an order's actor under actix's `Supervisor` (which restarts a stopped context
    /// while this map holds the address). Armed here, not in `started`, so the timer is counted
    /// before `Track` is answered.
    fn start_actor(
        &self,
        order_no: &str,
        deadline: NaiveDateTime,
        restarts: u32,
    ) -> Addr<OrderActor> {
        let core = self.core.clone();
        let order_no = order_no.to_string();
        actix::Supervisor::start(move |ctx| {
            let mut actor = OrderActor::new(order_no, deadline, core, restarts);
            actor.arm(ctx, None);
            actor
        })
    }

    /// The live address of an order's actor. An actor whose mailbox closed anyway (its
    /// context is gone) is re-created from the stored deadline, and the restart counted.
    fn live(&mut self, order_no: &str) -> Option<Addr<OrderActor>> {
        let (deadline, revivals) = match self.actors.get(order_no) {
            None => return None,
            Some(entry) if entry.addr.connected() => return Some(entry.addr.clone()),
            Some(entry) => (entry.deadline, entry.revivals + 1),
        };
        log::warn!("order {order_no}: actor mailbox closed; re-creating it ({revivals} so far)");
        let addr = self.start_actor(order_no, deadline, revivals);
        self.actors.insert(
            order_no.to_string(),
            Entry {
                addr: addr.clone(),
                deadline,
                revivals,
            },
        );
        Some(addr)
    }
}

impl Handler<Track> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Track, _ctx: &mut Context<Self>) {
        if self.live(&msg.order_no).is_some() {
            return;
        }
        let addr = self.start_actor(&msg.order_no, msg.deadline, 0);
        self.actors.insert(
            msg.order_no,
            Entry {
                addr,
                deadline: msg.deadline,
                revivals: 0,
            },
        );
    }
}

impl Handler<Lookup> for OrderSupervisor {
    type Result = Option<Addr<OrderActor>>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.live(&msg.0)
    }
}

impl Handler<Forget> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Forget, _ctx: &mut Context<Self>) {
        self.actors.remove(&msg.0);
    }
}

impl Handler<Retire> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Retire, _ctx: &mut Context<Self>) {
        if let Some(entry) = self.actors.remove(&msg.0) {
            entry.addr.do_send(StandDown);
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

//! `OrderSupervisor`: maps `order_no` to its actor's address. It starts each order actor under
//! actix's `Supervisor` (a stopped actor whose address is still held is restarted, and
//! re-arms from the stored deadline), and lets an actor go after its final transition by
//! dropping the address.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use chrono::NaiveDateTime;
use serde::Serialize;

use super::effects::EffectDispatcher;
use super::order::OrderActor;
use super::{Core, MAILBOX_CAPACITY};

pub struct OrderSupervisor {
    actors: HashMap<String, Addr<OrderActor>>,
    core: Arc<Core>,
    effects: Addr<EffectDispatcher>,
}

impl OrderSupervisor {
    pub fn new(core: Arc<Core>, effects: Addr<EffectDispatcher>) -> Self {
        Self {
            actors: HashMap::new(),
            core,
            effects,
        }
    }
}

impl Actor for OrderSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Many orders arrive at once at start-up and in bursts.
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
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

#[derive(Message)]
#[rtype(result = "SupervisorStats")]
pub struct Stats;

#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStats {
    pub live_actors: usize,
    pub armed: i64,
    pub transitioning: i64,
}

impl Handler<Track> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Track, ctx: &mut Context<Self>) {
        if self.actors.contains_key(&msg.order_no) {
            return;
        }
        let core = self.core.clone();
        let supervisor = ctx.address();
        let effects = self.effects.clone();
        let order_no = msg.order_no.clone();
        let addr = actix::Supervisor::start(move |_| {
            OrderActor::new(order_no, msg.deadline, core, supervisor, effects)
        });
        self.actors.insert(msg.order_no, addr);
    }
}

impl Handler<Lookup> for OrderSupervisor {
    type Result = Option<Addr<OrderActor>>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.actors
            .get(&msg.0)
            .filter(|addr| addr.connected())
            .cloned()
    }
}

impl Handler<Forget> for OrderSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Forget, _ctx: &mut Context<Self>) {
        self.actors.remove(&msg.0);
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

//! `OrderSupervisor`: maps `order_no` to its actor's (weak) address and deadline. An actor
//! whose context stopped anyway is re-created from the stored deadline when it is next asked
//! for or its timer is due (`restarts` counts it); an actor stops itself after its order's
//! final transition, and the supervisor forgets it. It also keeps the actors' deadline timers
//! ([`super::timers`]) and sweeps for overdue orders no actor holds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix::WeakAddr;
use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use super::closer::{Expire, Expired};
use super::key::OrderKey;
use super::order::{Fire, OrderActor, StandDown};
use super::timers::Timers;
use super::{Core, MAILBOX_CAPACITY};
use crate::db::orders;
use crate::domain::time;

/// A live order actor, with what is needed to re-create it if its mailbox ever closes.
pub(super) struct Entry {
    /// Weak: a strong address costs two allocations per pending order, and the actor keeps
    /// itself alive.
    addr: WeakAddr<OrderActor>,
    /// The deadline, in Unix milliseconds (what is stored).
    deadline_ms: i64,
}

pub struct OrderSupervisor {
    pub(super) actors: HashMap<OrderKey, Entry>,
    /// Times this supervisor re-created an order's actor after its mailbox closed.
    pub(super) revivals: HashMap<OrderKey, u32>,
    pub(super) timers: Timers,
    pub(super) core: Arc<Core>,
    sweeping: bool,
}

impl OrderSupervisor {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            actors: HashMap::new(),
            revivals: HashMap::new(),
            timers: Timers::default(),
            core,
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
            let wait = core.pool.connection_timeout();
            core.run_db(wait, |conn| {
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
            let closer = supervisor.core.closer.get().cloned();
            ctx.spawn(actix::fut::wrap_future(async move {
                let Some(closer) = closer else { return };
                // The closer batches them, decides each through the one transition path and
                // runs the after-commit step.
                let asks = orphans.iter().map(|no| closer.send(Expire(no.clone())));
                let answers = futures_util::future::join_all(asks).await;
                for (order_no, answer) in orphans.iter().zip(answers) {
                    match answer {
                        Ok(Expired::Settled) => {
                            log::info!("order {order_no}: closed by the overdue sweep");
                        }
                        Ok(other) => {
                            log::warn!("order {order_no}: sweep could not close it: {other:?}")
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

/// The order left `pending`: drop its actor (and stop it, if it is still running).
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

/// How many live actors' deadlines fall due in each of `count` windows of `width_ms` from
/// now: the dashboard's chart of upcoming deadlines, read from the supervisor's own map (no
/// scan of the orders table).
#[derive(Message)]
#[rtype(result = "DeadlineBuckets")]
pub struct UpcomingDeadlines {
    pub width_ms: i64,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineBuckets {
    pub width_ms: i64,
    /// `counts[i]`: deadlines from `i * width_ms` to `(i + 1) * width_ms` from now; an overdue
    /// one (its actor is about to fire) counts in the first.
    pub counts: Vec<usize>,
    /// Deadlines past the last window.
    pub later: usize,
}

impl DeadlineBuckets {
    /// Buckets `deadlines` (Unix ms) as seen at `now_ms`.
    pub fn of(
        deadlines: impl IntoIterator<Item = i64>,
        now_ms: i64,
        width_ms: i64,
        count: usize,
    ) -> Self {
        let width_ms = width_ms.max(1);
        let mut counts = vec![0; count];
        let mut later = 0;
        for deadline in deadlines {
            let index = usize::try_from((deadline - now_ms).max(0) / width_ms).unwrap_or(0);
            match counts.get_mut(index) {
                Some(bucket) => *bucket += 1,
                None => later += 1,
            }
        }
        Self {
            width_ms,
            counts,
            later,
        }
    }
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
        let entry = Entry {
            addr: addr.downgrade(),
            deadline_ms,
        };
        if self.actors.insert(key, entry).is_none() {
            self.core.gauges.live.fetch_add(1, Ordering::Relaxed);
        }
        addr
    }

    /// The live address of an order's actor. An actor whose mailbox closed anyway (its
    /// context is gone) is re-created from the stored deadline, and the restart counted.
    pub(super) fn live(
        &mut self,
        key: &OrderKey,
        ctx: &mut Context<Self>,
    ) -> Option<Addr<OrderActor>> {
        let entry = self.actors.get(key)?;
        if let Some(addr) = entry.addr.upgrade().filter(Addr::connected) {
            return Some(addr);
        }
        let deadline_ms = entry.deadline_ms;
        let revivals = self.revivals.entry(key.clone()).or_insert(0);
        *revivals += 1;
        let revivals = *revivals;
        log::warn!("order {key}: actor mailbox closed; re-creating it ({revivals} so far)");
        self.core.metrics.actor_restarted();
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
        if let Some(entry) = self.actors.remove(&msg.0) {
            // The order may have left `pending` by another path than this actor (the sweep,
            // a direct transition) while the actor is armed: without this it would stay
            // alive, unreachable, counted as armed (found by the model check).
            if let Some(addr) = entry.addr.upgrade() {
                addr.do_send(StandDown);
            }
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

impl Handler<UpcomingDeadlines> for OrderSupervisor {
    type Result = MessageResult<UpcomingDeadlines>;

    fn handle(&mut self, msg: UpcomingDeadlines, _ctx: &mut Context<Self>) -> Self::Result {
        let now_ms = time::unix_ms(&time::now());
        MessageResult(DeadlineBuckets::of(
            self.actors.values().map(|entry| entry.deadline_ms),
            now_ms,
            msg.width_ms,
            msg.count,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::DeadlineBuckets;

    #[test]
    fn deadlines_fall_in_their_minute_and_overdue_ones_in_the_first() {
        let now = 1_000_000;
        let minute = 60_000;
        let deadlines = [
            now - 5,              // overdue
            now,                  // due now
            now + minute - 1,     // still the first minute
            now + minute,         // the second
            now + 3 * minute + 7, // the fourth
            now + 10 * minute,    // past the last window of ten
        ];
        let buckets = DeadlineBuckets::of(deadlines, now, minute, 10);
        assert_eq!(buckets.counts, vec![3, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(buckets.later, 1);
        assert_eq!(
            DeadlineBuckets::of([], now, minute, 3).counts,
            vec![0, 0, 0]
        );
    }
}

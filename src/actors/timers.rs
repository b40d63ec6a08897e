//! Where an order's timeout fires. Every pending order's timer is an entry in one min-heap
//! on its deadline, kept by the order supervisor, with one tokio timer armed for the earliest
//! entry; when it wakes, [`OrderSupervisor::fire_due`] sends each actor whose deadline has
//! passed [`Fire`], and the actor closes its order through the closer. A tokio `Sleep` of each
//! actor's own would cost 112 bytes per pending order; an entry here costs 32.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;

use super::key::OrderKey;
use super::order::Fire;
use super::supervisor::OrderSupervisor;
use crate::domain::time;

/// The order actors' timers: `(deadline in Unix ms, order)` in a min-heap, and the one tokio
/// timer armed for the earliest. An order that leaves `pending` leaves its entry behind; it is
/// skipped when due, and the heap is compacted when such entries outnumber the live ones.
#[derive(Default)]
pub struct Timers {
    pub(super) heap: BinaryHeap<Reverse<(i64, OrderKey)>>,
    /// When the tokio timer wakes the supervisor, and its handle.
    pub(super) wake: Option<(i64, SpawnHandle)>,
}

/// Most actors told to fire in one wake-up, so a burst of shared deadlines does not hold the
/// supervisor's mailbox (placements, callbacks) for long.
const FIRE_PER_WAKE: usize = 4096;

impl OrderSupervisor {
    /// Adds an order's timer entry.
    pub(super) fn schedule(&mut self, key: OrderKey, deadline_ms: i64, ctx: &mut Context<Self>) {
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
    pub(super) fn fire_due(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn removed(&mut self, key: &OrderKey) {
        self.core.gauges.live.fetch_sub(1, Ordering::Relaxed);
        self.revivals.remove(key);
        if self.timers.heap.len() > 2 * self.actors.len() + FIRE_PER_WAKE {
            let actors = &self.actors;
            self.timers
                .heap
                .retain(|Reverse((_, key))| actors.contains_key(key));
        }
    }
}

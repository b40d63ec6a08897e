//! `OrderActor`: one per pending order. It arms a timer for the order's absolute deadline;
//! the timer firing cancels the order. Callbacks and cancels arrive as [`Deliver`] messages;
//! the mailbox runs one at a time (`AtomicResponse`), so timer and callback never interleave
//! in this process, and the database's conditional update settles races between processes.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::NaiveDateTime;
use serde::Serialize;

use super::closer::{Expire, Expired};
use super::{blocking_within, ActorState, Core};
use crate::db::effects::RetryPolicy;
use crate::db::transitions::{self, Command, Outcome, OutcomeKind};
use crate::domain::time::{self, serde_ts};
use crate::error::ApiError;

/// Longest wait for a pooled connection when the timer fires.
const TIMER_CONNECTION_WAIT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts at a timeout transition.
const MAX_TIMEOUT_BACKOFF_MS: u64 = 2_000;

pub struct OrderActor {
    order_no: String,
    deadline: NaiveDateTime,
    state: ActorState,
    timer: Option<SpawnHandle>,
    restarts: u32,
    last_error: Option<String>,
    /// Timeout transitions that failed in a row (the database is down): they back off.
    failed_timeouts: u32,
    /// Shared with every actor; the supervisor's and effect dispatcher's addresses live there
    /// too (an address held here would cost two allocations per pending order).
    core: Arc<Core>,
}

/// A callback or cancel for this order.
#[derive(Message)]
#[rtype(result = "Result<Outcome, ApiError>")]
pub struct Deliver(pub Command);

/// Asks for the actor's live state.
#[derive(Message)]
#[rtype(result = "ActorSnapshot")]
pub struct Snapshot;

/// The `actor` object of `GET /admin/orders/{order_no}`.
#[derive(Debug, Clone, Serialize)]
pub struct ActorSnapshot {
    pub alive: bool,
    pub node_id: String,
    pub state: ActorState,
    #[serde(with = "serde_ts")]
    pub deadline: NaiveDateTime,
    pub remaining_ms: i64,
    pub restarts: u32,
    pub last_error: Option<String>,
}

impl OrderActor {
    pub fn new(order_no: String, deadline: NaiveDateTime, core: Arc<Core>, restarts: u32) -> Self {
        Self {
            order_no,
            deadline,
            state: ActorState::Stopped,
            timer: None,
            restarts,
            last_error: None,
            failed_timeouts: 0,
            core,
        }
    }

    fn set_state(&mut self, state: ActorState) {
        self.core.gauges.moved(self.state, state);
        self.state = state;
    }

    /// Arms the timer for the deadline (at once when it has passed), or for `retry` after a
    /// failed attempt.
    pub fn arm(&mut self, ctx: &mut Context<Self>, retry: Option<Duration>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let delay = retry.unwrap_or_else(|| {
            (self.deadline - time::now_precise())
                .to_std()
                .unwrap_or(Duration::ZERO)
        });
        self.set_state(ActorState::Armed);
        self.timer = Some(ctx.run_later(delay, |actor, ctx| {
            actor.timer = None;
            actor.fire(ctx);
        }));
    }

    /// The deadline passed: cancel the order (the mailbox waits until this is done). The
    /// closer tries first, batched with other timers firing together; what it does not close
    /// goes through the one-order transition.
    fn fire(&mut self, ctx: &mut Context<Self>) {
        self.set_state(ActorState::Transitioning);
        let closer = self.core.closer.get().cloned();
        let order_no = self.order_no.clone();
        let batched = actix::fut::wrap_future(async move {
            match closer {
                Some(closer) => closer
                    .send(Expire(order_no))
                    .await
                    .unwrap_or(Expired::Untouched),
                None => Expired::Untouched,
            }
        });
        let attempt = batched.then(|expired, actor: &mut Self, ctx| match expired {
            Expired::Closed => {
                actor.closed_by_closer(ctx);
                futures_util::future::Either::Left(actix::fut::ready(()))
            }
            Expired::Failed(err) => {
                actor.timeout_failed(err, ctx);
                futures_util::future::Either::Left(actix::fut::ready(()))
            }
            Expired::Untouched => futures_util::future::Either::Right(actor.timeout_alone()),
        });
        ctx.wait(attempt);
    }

    /// The closer cancelled the order (and queued its refund): let go.
    fn closed_by_closer(&mut self, ctx: &mut Context<Self>) {
        self.failed_timeouts = 0;
        log::debug!("order {} -> cancelled (timeout)", self.order_no);
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.set_state(ActorState::Stopped);
        self.core.forget(&self.order_no);
    }

    /// The timeout as a transaction of its own: retried with backoff while it fails.
    fn timeout_alone(&mut self) -> impl ActorFuture<Self, Output = ()> {
        self.transition(Command::Timeout)
            .map(|result, actor, ctx| match result {
                Ok(outcome) => {
                    actor.failed_timeouts = 0;
                    actor.settle(&outcome, ctx)
                }
                Err(err) => actor.timeout_failed(err.to_string(), ctx),
            })
    }

    /// A timeout could not be written (the database is unavailable): back off and retry.
    fn timeout_failed(&mut self, err: String, ctx: &mut Context<Self>) {
        self.failed_timeouts += 1;
        let backoff = self.timeout_backoff();
        log::warn!(
            "order {}: timeout transition failed, retrying in {backoff:?}: {err}",
            self.order_no
        );
        self.last_error = Some(err);
        self.arm(ctx, Some(backoff));
    }

    /// The wait before retrying a failed timeout: exponential from `effects.backoff_base_ms`,
    /// but at most 2 s, so an order closes within moments of the database coming back.
    fn timeout_backoff(&self) -> Duration {
        let e = &self.core.settings.effects;
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            backoff_base_ms: e.backoff_base_ms,
            backoff_max_ms: e.backoff_max_ms.min(MAX_TIMEOUT_BACKOFF_MS),
        };
        policy.delay_after(self.failed_timeouts)
    }

    /// Runs one command's database transition off the actor's thread.
    fn transition(
        &mut self,
        command: Command,
    ) -> impl ActorFuture<Self, Output = Result<Outcome, ApiError>> {
        self.set_state(ActorState::Transitioning);
        let order_no = self.order_no.clone();
        let core = self.core.clone();
        // The timer waits less for a connection than a request does: while the database is
        // down, a callback queued behind a failing timeout must not wait a whole pool timeout.
        let wait = match command {
            Command::Timeout => TIMER_CONNECTION_WAIT,
            _ => core.pool.connection_timeout(),
        };
        let journal = core.journal;
        actix::fut::wrap_future(async move {
            blocking_within(&core, wait, move |conn| {
                transitions::apply(conn, &order_no, &command, time::now, journal)
            })
            .await
        })
    }

    /// After a transaction: queue its effects; let go after a final transition; else keep
    /// (or re-arm) the timer.
    fn settle(&mut self, outcome: &Outcome, ctx: &mut Context<Self>) {
        self.core.after_transition(&self.order_no, outcome);
        for kind in &outcome.effects {
            self.core.queue_effect(&self.order_no, kind);
        }
        if outcome.is_final() {
            if outcome.kind == OutcomeKind::Transitioned {
                log::info!(
                    "order {} -> {} ({})",
                    self.order_no,
                    outcome.order.status,
                    outcome.order.close_reason.as_deref().unwrap_or("callback")
                );
            }
            if let Some(handle) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            self.set_state(ActorState::Stopped);
            // Dropping the supervisor's address stops this actor for good.
            self.core.forget(&self.order_no);
        } else if self.timer.is_none() {
            self.arm(ctx, None);
        } else {
            self.set_state(ActorState::Armed);
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    /// Re-arms after a restart (the first start is armed by the supervisor already).
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.timer.is_none() {
            self.arm(ctx, None);
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.set_state(ActorState::Stopped);
    }
}

impl Supervised for OrderActor {
    /// The context stopped while the supervisor still holds the address: start again from the
    /// stored deadline (`started` re-arms; a passed deadline fires at once).
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.restarts += 1;
        self.timer = None;
        self.set_state(ActorState::Stopped);
        log::warn!(
            "order {}: actor restarted ({} restarts)",
            self.order_no,
            self.restarts
        );
    }
}

impl Handler<Deliver> for OrderActor {
    type Result = AtomicResponse<Self, Result<Outcome, ApiError>>;

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.transition(msg.0).map(
            |result, actor, ctx| {
                match &result {
                    Ok(outcome) => actor.settle(outcome, ctx),
                    Err(err) => {
                        // A refused request (404, 409, ...) is the caller's problem, not the
                        // actor's: only the engine's own failures become `last_error`.
                        if err.is_server_error() {
                            actor.last_error = Some(err.to_string());
                        }
                        actor.set_state(ActorState::Armed);
                    }
                }
                result
            },
        )))
    }
}

/// The order left `pending` in another process: disarm (the supervisor has dropped its
/// address, so the actor stops once this is handled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StandDown;

impl Handler<StandDown> for OrderActor {
    type Result = ();

    fn handle(&mut self, _msg: StandDown, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.set_state(ActorState::Stopped);
    }
}

impl Handler<Snapshot> for OrderActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let remaining = (self.deadline - time::now_precise())
            .num_milliseconds()
            .max(0);
        MessageResult(ActorSnapshot {
            alive: self.state != ActorState::Stopped,
            node_id: self.core.settings.cluster.node_id.clone(),
            state: self.state,
            deadline: self.deadline,
            remaining_ms: remaining,
            restarts: self.restarts,
            last_error: self.last_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::supervisor::Lookup;
    use crate::actors::Engine;
    use crate::config::Settings;
    use crate::db::orders::{place_order, Placement};
    use crate::db::{catalog, connect};

    /// Stops the actor's context as a failure would (tests only).
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Crash> for OrderActor {
        type Result = ();

        fn handle(&mut self, _msg: Crash, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    /// A stopped actor whose address the supervisor still holds is restarted by actix's
    /// `Supervisor`: `restarts` counts it, the timer is re-armed from the stored deadline and
    /// still cancels the order.
    #[test]
    fn a_crashed_actor_is_restarted_and_its_timer_still_fires() {
        let dir = std::env::temp_dir().join(format!("oe-unit-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("engine.db").display());
        let env = [
            ("ORDER_ENGINE__DATABASE__URL".to_string(), url),
            (
                "ORDER_ENGINE__ORDERS__PAYMENT_TIMEOUT_SECS".to_string(),
                "1".to_string(),
            ),
        ];
        let settings = Arc::new(Settings::load_from(None, env).unwrap());
        let pool = connect(&settings.database).unwrap();
        let order = {
            let conn = &mut *pool.get().unwrap();
            let now = time::now();
            let user = catalog::create_user(conn, "u", 0, now).unwrap();
            let course = catalog::create_course(conn, "c", 100, true, &[], now).unwrap();
            let placement = Placement {
                user_id: user.id,
                course_ids: vec![course.id],
                user_coupon_id: None,
                points: 0,
                cents_per_point: 1,
                payment_timeout_secs: 1,
                node_id: settings.cluster.node_id.clone(),
                clock: time::now,
                journal: Default::default(),
            };
            place_order(conn, &placement, |_, _| Ok(())).unwrap()
        };

        actix::System::new().block_on(async {
            // Start-up recovery gives the pending order its actor.
            let engine = Engine::start(pool.clone(), settings.clone(), None).unwrap();
            let addr = loop {
                if let Some(addr) = engine
                    .supervisor
                    .send(Lookup(order.order_no.clone()))
                    .await
                    .unwrap()
                {
                    break addr;
                }
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            };
            addr.send(Crash).await.unwrap();
            let snapshot = addr.send(Snapshot).await.unwrap();
            assert_eq!((snapshot.restarts, snapshot.state), (1, ActorState::Armed));

            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let stored =
                    crate::db::orders::find_order(&mut pool.get().unwrap(), &order.order_no)
                        .unwrap()
                        .unwrap();
                if stored.status == "cancelled" {
                    assert_eq!(stored.close_reason.as_deref(), Some("timeout"));
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the timer never fired"
                );
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}

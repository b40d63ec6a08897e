//! `OrderActor`: one per pending order. Its timer for the order's absolute deadline is an
//! entry in the supervisor's timer heap, which sends it [`Fire`] when the deadline passes; the
//! timer firing cancels the order. Callbacks and cancels arrive as [`Deliver`] messages; the
//! mailbox runs one at a time (`AtomicResponse`), so timer and callback never interleave in
//! this process, and the database's conditional update settles races between processes.
//!
//! Memory per pending order is what bounds a million of them (BENCHMARKS.md): the actor is kept
//! within 64 bytes, because actix runs it inside a tokio task whose allocation grows in 128-byte
//! steps and at 64 bytes the whole task is 512 bytes rather than 640 (a test below keeps it so);
//! and the supervisor holds only a weak address (a strong one costs two allocations), so the
//! actor keeps itself alive and stops itself when its order leaves `pending`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::NaiveDateTime;
use serde::Serialize;

use super::closer::{Expire, Expired};
use super::key::OrderKey;
use super::{ActorState, Committed, Core};
use crate::db::outbox::RetryPolicy;
use crate::db::transitions::{self, Outcome};
use crate::domain::order::{Command, OutcomeKind};
use crate::domain::time::{self, serde_ts};
use crate::error::ApiError;

/// Longest wait for a pooled connection when the timer fires.
const TIMER_CONNECTION_WAIT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts at a timeout transition.
const MAX_TIMEOUT_BACKOFF_MS: u64 = 2_000;

pub struct OrderActor {
    key: OrderKey,
    deadline: NaiveDateTime,
    state: ActorState,
    restarts: u32,
    /// What only an actor in trouble needs, boxed so the healthy many stay small.
    trouble: Option<Box<Trouble>>,
    /// Shared with every actor; the supervisor's and effect dispatcher's addresses live there
    /// too (an address held here would cost two allocations per pending order).
    core: Arc<Core>,
}

#[derive(Default)]
struct Trouble {
    /// A timer of the actor's own: a retry after a failed timeout, or a deadline the database
    /// did not yet see as passed.
    retry: Option<SpawnHandle>,
    /// Timeout transitions that failed in a row (the database is down): they back off.
    failed_timeouts: u32,
    last_error: Option<String>,
}

/// The order's deadline passed (sent by the supervisor's timers; ignored unless armed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fire;

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
    /// An armed actor (its deadline is the supervisor's timer entry).
    pub fn new(key: OrderKey, deadline: NaiveDateTime, core: Arc<Core>, restarts: u32) -> Self {
        let mut actor = Self {
            key,
            deadline,
            state: ActorState::Stopped,
            restarts,
            trouble: None,
            core,
        };
        actor.set_state(ActorState::Armed);
        actor
    }

    fn set_state(&mut self, state: ActorState) {
        self.core.gauges.moved(self.state, state);
        self.state = state;
    }

    fn trouble(&mut self) -> &mut Trouble {
        self.trouble.get_or_insert_with(Box::default)
    }

    fn cancel_retry(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.trouble.as_mut().and_then(|t| t.retry.take()) {
            ctx.cancel_future(handle);
        }
    }

    /// Arms a timer of the actor's own: the timeout is attempted after `delay`.
    fn fire_in(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        self.cancel_retry(ctx);
        self.set_state(ActorState::Armed);
        let handle = ctx.run_later(delay, |actor, ctx| {
            actor.trouble().retry = None;
            actor.fire(ctx);
        });
        self.trouble().retry = Some(handle);
    }

    /// The deadline passed: cancel the order (the mailbox waits until this is done). The
    /// closer decides and writes it, in one transaction with the other timers firing together
    /// (through the same transition as every other command). Only an armed actor fires: a
    /// second firing (the sweep's, or a timer entry left from before a restart) finds it
    /// transitioning or stopped.
    fn fire(&mut self, ctx: &mut Context<Self>) {
        if self.state != ActorState::Armed {
            return;
        }
        self.cancel_retry(ctx);
        self.set_state(ActorState::Transitioning);
        let closer = self.core.closer.get().cloned();
        let order_no = self.key.to_string();
        let closing = actix::fut::wrap_future(async move {
            match closer {
                Some(closer) => closer
                    .send(Expire(order_no))
                    .await
                    .unwrap_or_else(|e| Expired::Failed(format!("the closer is gone: {e}"))),
                None => Expired::Failed("no closer yet".into()),
            }
        });
        ctx.wait(closing.map(|expired, actor: &mut Self, ctx| match expired {
            Expired::Settled => {
                if let Some(trouble) = &mut actor.trouble {
                    trouble.failed_timeouts = 0;
                }
                actor.let_go(ctx);
            }
            Expired::NotDue => {
                // Still pending and, by the database's clock, not yet due.
                let left = (actor.deadline - time::now_precise()).to_std();
                let left = left.unwrap_or_default().max(Duration::from_millis(1));
                actor.fire_in(left, ctx);
            }
            Expired::Failed(err) => actor.timeout_failed(err, ctx),
        }));
    }

    /// The order left `pending` (the after-commit step has had the supervisor forget this
    /// actor): stop.
    fn let_go(&mut self, ctx: &mut Context<Self>) {
        self.cancel_retry(ctx);
        self.set_state(ActorState::Stopped);
        ctx.stop();
    }

    /// A timeout could not be written (the database is unavailable): back off and retry.
    fn timeout_failed(&mut self, err: String, ctx: &mut Context<Self>) {
        let trouble = self.trouble();
        trouble.failed_timeouts += 1;
        let backoff = self.timeout_backoff();
        log::warn!(
            "order {}: timeout transition failed, retrying in {backoff:?}: {err}",
            self.key
        );
        self.trouble().last_error = Some(err);
        self.fire_in(backoff, ctx);
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
        policy.delay_after(self.trouble.as_ref().map_or(0, |t| t.failed_timeouts))
    }

    /// Runs one command's database transition off the actor's thread.
    fn transition(
        &mut self,
        command: Command,
    ) -> impl ActorFuture<Self, Output = Result<Outcome, ApiError>> {
        self.set_state(ActorState::Transitioning);
        let order_no = self.key.to_string();
        let core = self.core.clone();
        // The timer waits less for a connection than a request does: while the database is
        // down, a callback queued behind a failing timeout must not wait a whole pool timeout.
        let wait = match command {
            Command::Timeout => TIMER_CONNECTION_WAIT,
            _ => core.pool.connection_timeout(),
        };
        let journal = core.journal;
        actix::fut::wrap_future(async move {
            core.run_db(wait, move |conn| {
                transitions::apply(conn, &order_no, &command, time::now, journal)
            })
            .await
        })
    }

    /// After a transaction: the after-commit step; let go after a final transition; else stay
    /// armed (the supervisor's timer entry, or a retry of our own, still stands).
    fn settle(&mut self, outcome: &Outcome, ctx: &mut Context<Self>) {
        let node_id = &self.core.settings.cluster.node_id;
        self.core.after_commit(Committed::of([outcome], node_id));
        if outcome.is_final() {
            if outcome.kind == OutcomeKind::Transitioned {
                log::info!(
                    "order {} -> {} ({})",
                    self.key,
                    outcome.order.status,
                    outcome
                        .order
                        .close_reason
                        .map_or("callback", |reason| reason.as_str())
                );
            }
            self.let_go(ctx);
        } else {
            self.set_state(ActorState::Armed);
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    /// The supervisor holds only a weak address, so nothing else keeps the context running:
    /// a future that never finishes does (it is zero-sized, so boxing it allocates nothing).
    /// The actor stops itself when its order leaves `pending`.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::wrap_future(std::future::pending::<()>()));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.set_state(ActorState::Stopped);
    }
}

impl Handler<Fire> for OrderActor {
    type Result = ();

    fn handle(&mut self, _msg: Fire, ctx: &mut Context<Self>) {
        self.fire(ctx);
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
                            actor.trouble().last_error = Some(err.to_string());
                        }
                        actor.set_state(ActorState::Armed);
                    }
                }
                result
            },
        )))
    }
}

/// The order left `pending` in another process: stop (the supervisor has forgotten the actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StandDown;

impl Handler<StandDown> for OrderActor {
    type Result = ();

    fn handle(&mut self, _msg: StandDown, ctx: &mut Context<Self>) {
        self.cancel_retry(ctx);
        self.set_state(ActorState::Stopped);
        ctx.stop();
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
            last_error: self.trouble.as_ref().and_then(|t| t.last_error.clone()),
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
    use crate::domain::states::{CloseReason, OrderStatus};

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

    /// Crashes an actor and waits until its mailbox has closed.
    async fn crash(addr: &Addr<OrderActor>) {
        addr.send(Crash).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while addr.connected() {
            assert!(
                std::time::Instant::now() < deadline,
                "the actor never stopped"
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The order's live actor, waiting for start-up recovery to create it.
    async fn engine_lookup(engine: &Engine, order_no: &str) -> Addr<OrderActor> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = engine
                .supervisor
                .send(Lookup(order_no.into()))
                .await
                .unwrap()
            {
                break addr;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no actor for {order_no}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The actor and its context stay small enough for the 512-byte task (see the module
    /// comment). tokio's task cell on x86-64 is aligned to 128 bytes and holds a 32-byte
    /// header, the scheduler and task id (16), the stage's tag (8), the future and a 48-byte
    /// trailer: a future of at most 408 bytes makes a 512-byte task.
    #[test]
    fn an_order_actor_fits_a_512_byte_task() {
        assert!(std::mem::size_of::<OrderActor>() <= 64);
        let future = std::mem::size_of::<actix::dev::ContextFut<OrderActor, Context<OrderActor>>>();
        assert!(future <= 512 - 32 - 16 - 8 - 48, "{future} bytes");
    }

    /// An actor whose context stops anyway is re-created by the supervisor from the stored
    /// deadline: when next asked for (`restarts` counts it, armed again), and when its timer
    /// is due, which still cancels the order.
    #[test]
    fn a_crashed_actor_is_re_created_and_its_timer_still_fires() {
        let dir = std::env::temp_dir().join(format!("oe-unit-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("engine.db").display());
        let env = [
            ("ORDER_ENGINE__DATABASE__URL".to_string(), url),
            (
                "ORDER_ENGINE__ORDERS__PAYMENT_TIMEOUT_SECS".to_string(),
                "5".to_string(),
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
                payment_timeout_secs: 5,
                node_id: settings.cluster.node_id.clone(),
                clock: time::now,
                journal: Default::default(),
            };
            place_order(conn, &placement, |_, _| Ok(())).unwrap()
        };

        actix::System::new().block_on(async {
            // Start-up recovery gives the pending order its actor.
            let engine = Engine::start(pool.clone(), settings.clone(), None).unwrap();
            let lookup = || engine_lookup(&engine, order.order_no.as_str());
            let addr = lookup().await;
            crash(&addr).await;
            let revived = lookup().await;
            let snapshot = revived.send(Snapshot).await.unwrap();
            assert_eq!((snapshot.restarts, snapshot.state), (1, ActorState::Armed));
            assert_eq!(snapshot.deadline, order.expires_at);
            // Crashed again and not asked for: its timer re-creates it and still fires.
            crash(&revived).await;

            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let stored = crate::db::orders::find_order(
                    &mut pool.get().unwrap(),
                    order.order_no.as_str(),
                )
                .unwrap()
                .unwrap();
                if stored.status == OrderStatus::Cancelled {
                    assert_eq!(stored.close_reason, Some(CloseReason::Timeout));
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

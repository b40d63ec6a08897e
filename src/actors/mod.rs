//! The actor side of the engine: one [`order::OrderActor`] per pending order under the
//! [`supervisor::OrderSupervisor`], and the effect actors ([`effects`]) that apply grants and
//! refunds from the outbox.
//!
//! HTTP handlers talk to it through [`Engine`]: `track` a placed order, `deliver` a callback or
//! cancel, `inspect` a live actor.

pub mod effects;
pub mod order;
pub mod supervisor;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::NaiveDateTime;
use serde::Serialize;

use crate::config::Settings;
use crate::db::transitions::{self, Command, Outcome};
use crate::db::DbPool;
use crate::domain::time;
use crate::error::ApiError;
use effects::{EffectDispatcher, QueueEffect};
use order::{ActorSnapshot, Deliver, Snapshot};
use supervisor::{Forget, Lookup, OrderSupervisor, Stats, SupervisorStats, Track};

/// Mailbox size of the supervisor and the effect dispatcher: many orders arrive at once at
/// start-up and in bursts, and senders that await must not be parked behind them.
pub const MAILBOX_CAPACITY: usize = 1 << 24;

/// What every actor shares.
pub struct Core {
    pub pool: DbPool,
    pub settings: Arc<Settings>,
    pub gauges: Gauges,
}

/// Live actor counts by state, kept by the actors themselves (cheap to read for
/// `GET /admin/actors`, whatever the number of actors).
#[derive(Default)]
pub struct Gauges {
    pub armed: AtomicI64,
    pub transitioning: AtomicI64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Armed,
    Transitioning,
    Stopped,
}

impl Gauges {
    pub fn moved(&self, from: ActorState, to: ActorState) {
        if from == to {
            return;
        }
        if let Some(gauge) = self.gauge(from) {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(gauge) = self.gauge(to) {
            gauge.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn gauge(&self, state: ActorState) -> Option<&AtomicI64> {
        match state {
            ActorState::Armed => Some(&self.armed),
            ActorState::Transitioning => Some(&self.transitioning),
            ActorState::Stopped => None,
        }
    }
}

/// Runs blocking Diesel work on the blocking thread pool.
pub async fn blocking<T, F>(core: &Arc<Core>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut crate::db::DbConnection) -> Result<T, ApiError> + Send + 'static,
{
    blocking_within(core, core.pool.connection_timeout(), f).await
}

/// Like [`blocking`], giving up after `wait` for a pooled connection (503 `unavailable`).
pub async fn blocking_within<T, F>(core: &Arc<Core>, wait: Duration, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut crate::db::DbConnection) -> Result<T, ApiError> + Send + 'static,
{
    let pool = core.pool.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let mut conn = pool.get_timeout(wait)?;
        f(&mut conn)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// The engine's handle, cloned into every HTTP worker.
#[derive(Clone)]
pub struct Engine {
    pub core: Arc<Core>,
    pub supervisor: Addr<OrderSupervisor>,
    pub effects: Addr<EffectDispatcher>,
}

impl Engine {
    /// Starts the supervisor and the effect actors, then re-creates an actor for every pending
    /// order and replays every unfinished effect. Must run inside an actix system.
    pub fn start(pool: DbPool, settings: Arc<Settings>) -> Result<Self, ApiError> {
        let core = Arc::new(Core {
            pool,
            settings,
            gauges: Gauges::default(),
        });
        let effects = EffectDispatcher::start_with_workers(core.clone());
        let supervisor = OrderSupervisor::new(core.clone(), effects.clone()).start();
        let engine = Engine {
            core,
            supervisor,
            effects,
        };
        engine.recover()?;
        Ok(engine)
    }

    /// Adopts every pending order (its deadline may already have passed: that timer fires at
    /// once) and queues every pending effect.
    fn recover(&self) -> Result<(), ApiError> {
        let mut conn = self.core.pool.get()?;
        let node_id = &self.core.settings.cluster.node_id;
        let pending = crate::db::orders::adopt_pending(&mut conn, node_id)?;
        let count = pending.len();
        for (order_no, expires_at) in pending {
            self.supervisor.do_send(Track {
                order_no,
                deadline: expires_at,
            });
        }
        let effects = crate::db::effects::pending(&mut conn)?;
        let effect_count = effects.len();
        for effect in effects {
            self.effects.do_send(QueueEffect::from_row(&effect));
        }
        log::info!("recovered {count} pending orders and {effect_count} unfinished effects");
        Ok(())
    }

    /// Gives a freshly placed pending order its actor and timer (awaited, so the actor exists
    /// before the client hears of the order).
    pub async fn track(&self, order_no: String, deadline: NaiveDateTime) {
        if self
            .supervisor
            .send(Track {
                order_no: order_no.clone(),
                deadline,
            })
            .await
            .is_err()
        {
            log::error!(
                "order {order_no}: the supervisor is gone; its timer fires after a restart"
            );
        }
    }

    /// Queues an effect that a transaction outside any actor wrote (a zero-payable order).
    pub fn queue_effect(&self, order_no: &str, kind: &'static str) {
        self.effects.do_send(QueueEffect {
            order_no: order_no.to_string(),
            kind,
        });
    }

    /// Delivers a callback or cancel: to the order's actor when this process has one (its
    /// mailbox serialises it against the timer), else straight to the database transition.
    /// After a final transition the actor is let go before this returns.
    pub async fn deliver(&self, order_no: &str, command: Command) -> Result<Outcome, ApiError> {
        let actor = self
            .supervisor
            .send(Lookup(order_no.to_string()))
            .await
            .ok()
            .flatten();
        let from_actor = match actor {
            Some(addr) => addr.send(Deliver(command.clone())).await.ok(),
            None => None,
        };
        let outcome = match from_actor {
            Some(result) => result?,
            None => self.apply_direct(order_no, command).await?,
        };
        if outcome.is_final() {
            let _ = self.supervisor.send(Forget(order_no.to_string())).await;
        }
        Ok(outcome)
    }

    async fn apply_direct(&self, order_no: &str, command: Command) -> Result<Outcome, ApiError> {
        let no = order_no.to_string();
        let outcome = blocking(&self.core, move |conn| {
            transitions::apply(conn, &no, &command, time::now)
        })
        .await?;
        for kind in &outcome.effects {
            self.queue_effect(order_no, kind);
        }
        Ok(outcome)
    }

    /// The live actor of an order in this process, if any.
    pub async fn inspect(&self, order_no: &str) -> Option<ActorSnapshot> {
        let addr = self
            .supervisor
            .send(Lookup(order_no.to_string()))
            .await
            .ok()
            .flatten()?;
        addr.send(Snapshot).await.ok()
    }

    pub async fn stats(&self) -> Result<SupervisorStats, ApiError> {
        self.supervisor
            .send(Stats)
            .await
            .map_err(|e| ApiError::Internal(format!("supervisor: {e}")))
    }
}

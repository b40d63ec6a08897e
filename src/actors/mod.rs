//! The actor side of the engine: one [`order::OrderActor`] per pending order under the
//! [`supervisor::OrderSupervisor`]; their deadline timers ([`timers`]); the [`closer`], which
//! closes the orders whose timers fire together in one transaction; and the effect actors
//! ([`effects`]) that apply the outbox's effects.
//!
//! HTTP handlers talk to it through [`Engine`]: `track` a placed order, `deliver` a callback or
//! cancel, `inspect` a live actor. Whatever commits an outcome hands it to one step,
//! [`Core::after_commit`].

pub mod closer;
pub mod effects;
pub mod key;
pub mod order;
pub mod supervisor;
pub mod timers;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use crate::config::Settings;
use crate::db::journal::Journal;
use crate::db::transitions::{self, Outcome};
use crate::db::DbPool;
use crate::domain::ids::OrderNo;
use crate::domain::order::{Command, OutcomeKind, Transition};
use crate::domain::states::{CloseReason, EffectKind};
use crate::domain::time;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::redis::cluster::{Cluster, LocalOrders};
use crate::redis::publisher::{spawn_publisher, Kick};
use crate::redis::RedisLink;
use closer::Closer;
use effects::{EffectDispatcher, QueueEffect};
use key::OrderKey;
use order::{ActorSnapshot, Deliver, Snapshot};
pub use supervisor::DeadlineBuckets;
use supervisor::{
    Forget, Lookup, OrderSupervisor, Retire, Stats, SupervisorStats, Track, UpcomingDeadlines,
};

/// Mailbox size of the supervisor and the effect dispatcher: many orders arrive at once at
/// start-up and in bursts, and senders that await must not be parked behind them.
pub const MAILBOX_CAPACITY: usize = 1 << 24;

/// What every actor shares.
pub struct Core {
    pub pool: DbPool,
    pub settings: Arc<Settings>,
    pub gauges: Gauges,
    pub metrics: Arc<Metrics>,
    /// Whether transactions write order events (Redis or a webhook endpoint is configured).
    pub journal: Journal,
    pub redis: Option<Arc<RedisLink>>,
    pub cluster: Option<Arc<Cluster>>,
    /// The adapters of the payment providers that are on.
    pub providers: crate::providers::Providers,
    /// When this process started.
    pub started_at: NaiveDateTime,
    /// Batches timeouts (set once at start).
    pub closer: OnceLock<Addr<Closer>>,
    /// The order supervisor and the effect dispatcher (set once at start).
    supervisor: OnceLock<Addr<OrderSupervisor>>,
    effects: OnceLock<Addr<EffectDispatcher>>,
    events: Option<Kick>,
    /// The webhook fan-out, when an endpoint is configured.
    webhooks: Option<crate::webhooks::Kick>,
    /// The scheduler thread, when `[[schedules]]` are configured (stops when dropped).
    schedules: Option<crate::schedules::Handle>,
}

impl Core {
    /// Stops the scheduler and waits up to `wait` for its runs under way to finish.
    pub fn stop_schedules(&self, wait: Duration) {
        if let Some(schedules) = &self.schedules {
            schedules.stop_and_drain(wait);
        }
    }
}

/// What a committed transaction leaves for the engine to do, handed to
/// [`Core::after_commit`].
#[derive(Debug, Default)]
pub struct Committed {
    /// Orders that left `pending`: their actors go.
    pub settled: Vec<OrderNo>,
    /// Effects it queued in the outbox.
    pub effects: Vec<(OrderNo, EffectKind)>,
    /// Orders another process owned (and armed a timer for): `(owner, order_no)`.
    pub moved: Vec<(String, OrderNo)>,
    /// The transitions out of `pending` it made, with `closed_at - expires_at` of timeouts
    /// (for the metrics).
    pub transitions: Vec<(Transition, Option<TimeDelta>)>,
}

impl Committed {
    /// What the outcomes of transitions leave to do.
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, node_id: &str) -> Self {
        let mut done = Committed::default();
        for outcome in outcomes {
            let no = &outcome.order.order_no;
            if outcome.is_final() {
                done.settled.push(no.clone());
            }
            if let Some(kind) = outcome.effect {
                done.effects.push((no.clone(), kind));
            }
            for kind in &outcome.provider_effects {
                done.effects.push((no.clone(), *kind));
            }
            if let Some(transition) = outcome.transition {
                let lateness = match (transition.reason, outcome.order.closed_at) {
                    (Some(CloseReason::Timeout), Some(closed_at)) => {
                        Some(closed_at - outcome.order.expires_at)
                    }
                    _ => None,
                };
                done.transitions.push((transition, lateness));
            }
            match &outcome.previous_owner {
                Some(owner) if outcome.kind == OutcomeKind::Transitioned && owner != node_id => {
                    done.moved.push((owner.clone(), no.clone()));
                }
                _ => {}
            }
        }
        done
    }

    /// Effects queued outside any transition (a zero-payable placement, an admin's retry, the
    /// replay at start).
    pub fn effects(effects: Vec<(OrderNo, EffectKind)>) -> Self {
        Committed {
            effects,
            ..Committed::default()
        }
    }
}

impl Core {
    /// The one step after any commit: the transitions are counted, the settled orders'
    /// actors are forgotten, the queued effects go to their actors, the event publisher wakes
    /// (the transaction may have written events), and a process that owned a moved order is
    /// told to let its actor go (in the background: this may run on an actor's thread).
    pub fn after_commit(&self, committed: Committed) {
        for (transition, lateness) in &committed.transitions {
            self.metrics.transitioned(*transition, *lateness);
        }
        if let Some(supervisor) = self.supervisor.get() {
            for order_no in &committed.settled {
                supervisor.do_send(Forget(OrderKey::new(order_no.as_str())));
            }
        }
        if let Some(effects) = self.effects.get() {
            for (order_no, kind) in committed.effects {
                effects.do_send(QueueEffect { order_no, kind });
            }
        }
        if let Some(kick) = &self.events {
            kick.kick();
        }
        if let Some(kick) = &self.webhooks {
            kick.kick();
        }
        if let (Some(cluster), false) = (&self.cluster, committed.moved.is_empty()) {
            let (cluster, moved) = (cluster.clone(), committed.moved);
            actix_web::rt::task::spawn_blocking(move || {
                for (owner, order_no) in moved {
                    cluster.tell_owner_to_stop(&owner, order_no.as_str());
                }
            });
        }
    }

    /// Runs blocking database work, waiting at most `wait` for a connection.
    pub async fn run_db<T, F>(&self, wait: Duration, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::db::DbConnection) -> Result<T, ApiError> + Send + 'static,
    {
        crate::db::run(&self.pool, wait, f).await
    }
}

/// Live actor counts by state, kept by the actors themselves (cheap to read for
/// `GET /admin/actors`, whatever the number of actors).
#[derive(Default)]
pub struct Gauges {
    /// Order actors the supervisor holds (this process's pending orders).
    pub live: AtomicI64,
    pub armed: AtomicI64,
    pub transitioning: AtomicI64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Armed,
    Transitioning,
    Stopped,
}

impl std::fmt::Display for ActorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Armed => "armed",
            Self::Transitioning => "transitioning",
            Self::Stopped => "stopped",
        })
    }
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

/// The engine's handle, cloned into every HTTP worker.
#[derive(Clone)]
pub struct Engine {
    pub core: Arc<Core>,
    pub supervisor: Addr<OrderSupervisor>,
    pub effects: Addr<EffectDispatcher>,
}

impl Engine {
    /// Starts the supervisor and the effect actors (with Redis the event publisher and the
    /// cluster threads, with webhook endpoints their fan-out and workers, with `[[schedules]]` the
    /// scheduler), then re-creates an actor for every pending order it owns and
    /// replays every unfinished effect. Must run inside an actix system.
    pub fn start(
        pool: DbPool,
        settings: Arc<Settings>,
        redis: Option<Arc<RedisLink>>,
    ) -> Result<Self, ApiError> {
        let thread_error =
            |e: std::io::Error| ApiError::Internal(format!("cannot start a thread: {e}"));
        let events = match &redis {
            Some(link) => Some(
                spawn_publisher(
                    pool.clone(),
                    link.clone(),
                    settings.redis.events_stream.clone(),
                    settings.redis.events_maxlen,
                )
                .map_err(thread_error)?,
            ),
            None => None,
        };
        let cluster = redis.as_ref().map(|link| {
            Arc::new(Cluster::new(
                link.clone(),
                settings.cluster.node_id.clone(),
                settings.cluster.heartbeat_ttl_secs,
            ))
        });
        let metrics = Arc::new(Metrics::new());
        let webhooks = crate::webhooks::start(
            pool.clone(),
            &settings.webhooks,
            redis.is_some(),
            metrics.clone(),
        )
        .map_err(thread_error)?;
        let schedules = crate::schedules::start(pool.clone(), &settings, metrics.clone())
            .map_err(thread_error)?;
        let providers = crate::providers::Providers::from_settings(&settings.providers)
            .map_err(ApiError::Internal)?;
        let core = Arc::new(Core {
            pool,
            providers,
            journal: Journal {
                enabled: redis.is_some() || webhooks.is_some(),
                webhooks: webhooks.is_some(),
            },
            redis,
            cluster,
            settings,
            gauges: Gauges::default(),
            metrics,
            started_at: time::now(),
            closer: OnceLock::new(),
            supervisor: OnceLock::new(),
            effects: OnceLock::new(),
            events,
            webhooks,
            schedules,
        });
        if let Some(schedules) = &core.schedules {
            schedules.bind(&core);
        }
        let effects = EffectDispatcher::start_with_workers(core.clone());
        let _ = core.closer.set(Closer::new(core.clone()).start());
        let supervisor = OrderSupervisor::new(core.clone()).start();
        let _ = core.supervisor.set(supervisor.clone());
        let _ = core.effects.set(effects.clone());
        if let Some(cluster) = &core.cluster {
            // The first beat before any order is served or adopted.
            if let Err(err) = cluster
                .link()
                .connect(Duration::from_secs(1))
                .and_then(|mut conn| cluster.heartbeat(&mut conn))
            {
                log::warn!("cannot write the first heartbeat (Redis down?): {err}");
            }
            let orders: Arc<dyn LocalOrders> = Arc::new(SupervisorOrders(supervisor.clone()));
            cluster
                .start(&core, core.pool.clone(), orders)
                .map_err(thread_error)?;
        }
        let engine = Engine {
            core,
            supervisor,
            effects,
        };
        engine.recover()?;
        Ok(engine)
    }

    /// Adopts the pending orders this process should own (its deadline may already have
    /// passed: that timer fires at once) and queues every pending effect. Without Redis that
    /// is every pending order (one process); with Redis, those that are unowned, this node's
    /// own, or owned by a node whose heartbeat lapsed — live nodes keep theirs.
    fn recover(&self) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let mut conn = self.core.pool.get()?;
        let node_id = &self.core.settings.cluster.node_id;
        let pending = match &self.core.cluster {
            None => crate::db::orders::all_pending(&mut conn)?,
            Some(cluster) => {
                let owners: Vec<String> = crate::db::orders::pending_by_owner(&mut conn)?
                    .into_iter()
                    .filter_map(|(owner, _)| owner)
                    .collect();
                let from = cluster.lapsed(&owners).unwrap_or_else(|| {
                    log::warn!(
                        "Redis unreachable at start: adopting only this node's own orders; \
                         other lapsed nodes' orders are adopted once Redis answers"
                    );
                    Vec::new()
                });
                if !from.is_empty() {
                    log::info!("adopting the pending orders of lapsed nodes {from:?}");
                }
                crate::db::orders::claim_at_start(&mut conn, node_id, &from)?
            }
        };
        let count = pending.len();
        let loaded = started.elapsed();
        for (order_no, expires_at) in pending {
            self.supervisor.do_send(Track {
                order_no,
                deadline: expires_at,
            });
        }
        let effects = crate::db::outbox::pending(&mut conn)?;
        let effect_count = effects.len();
        self.core.after_commit(Committed::effects(
            effects.into_iter().map(|e| (e.order_no, e.kind)).collect(),
        ));
        log::info!(
            "recovered {count} pending orders (read in {loaded:?}, queued to the supervisor in \
             {:?}) and {effect_count} unfinished effects",
            started.elapsed()
        );
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

    /// Delivers a callback or cancel: to the order's actor when this process has one (its
    /// mailbox serialises it against the timer), else straight to the database transition.
    /// After a final transition the actor is let go before this returns.
    pub async fn deliver(&self, order_no: &str, command: Command) -> Result<Outcome, ApiError> {
        let actor = self
            .supervisor
            .send(Lookup(order_no.into()))
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
            let _ = self.supervisor.send(Forget(order_no.into())).await;
        }
        Ok(outcome)
    }

    async fn apply_direct(&self, order_no: &str, command: Command) -> Result<Outcome, ApiError> {
        let no = order_no.to_string();
        let journal = self.core.journal;
        let wait = self.core.pool.connection_timeout();
        let outcome = self
            .core
            .run_db(wait, move |conn| {
                transitions::apply(conn, &no, &command, time::now, journal)
            })
            .await?;
        let node_id = &self.core.settings.cluster.node_id;
        self.core.after_commit(Committed::of([&outcome], node_id));
        Ok(outcome)
    }

    /// The live actor of an order in this process, if any.
    pub async fn inspect(&self, order_no: &str) -> Option<ActorSnapshot> {
        let addr = self
            .supervisor
            .send(Lookup(order_no.into()))
            .await
            .ok()
            .flatten()?;
        addr.send(Snapshot).await.ok()
    }

    /// Live actors' deadlines due in each of `count` windows of `width` from now.
    pub async fn upcoming_deadlines(
        &self,
        width: Duration,
        count: usize,
    ) -> Result<DeadlineBuckets, ApiError> {
        self.supervisor
            .send(UpcomingDeadlines {
                width_ms: i64::try_from(width.as_millis()).unwrap_or(i64::MAX),
                count,
            })
            .await
            .map_err(|e| ApiError::Internal(format!("supervisor: {e}")))
    }

    pub async fn stats(&self) -> Result<SupervisorStats, ApiError> {
        self.supervisor
            .send(Stats)
            .await
            .map_err(|e| ApiError::Internal(format!("supervisor: {e}")))
    }
}

/// The cluster's way to this process's order actors.
struct SupervisorOrders(Addr<OrderSupervisor>);

impl LocalOrders for SupervisorOrders {
    fn adopted(&self, orders: Vec<(String, NaiveDateTime)>) {
        for (order_no, deadline) in orders {
            self.0.do_send(Track { order_no, deadline });
        }
    }

    fn moved_away(&self, order_no: String) {
        self.0.do_send(Retire(order_no));
    }
}

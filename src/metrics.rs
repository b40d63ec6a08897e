//! `GET /metrics`: the process's counters, gauges and histograms in the Prometheus text format
//! (OpenMetrics, through `prometheus-client`). Counters count what this process did since it
//! started; gauges are read when scraped from what the process keeps in memory, and from the
//! outbox tables' partial indexes — never from the orders table.

use chrono::TimeDelta;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::domain::order::Transition;
use crate::domain::states::{CloseReason, EffectKind, OrderStatus};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of `order_engine_timeout_lateness_seconds` (SPEC "Operations").
const LATENESS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of `http_server_request_duration_seconds`: the same half-millisecond to ten seconds.
const HTTP_BUCKETS: [f64; 14] = LATENESS_BUCKETS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    to: &'static str,
    reason: &'static str,
}

impl TransitionLabels {
    /// `reason` is the close reason, `payment` for paid.
    fn new(to: OrderStatus, reason: Option<CloseReason>) -> Self {
        TransitionLabels {
            to: to.as_str(),
            reason: reason.map_or("payment", CloseReason::as_str),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EffectLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabels {
    provider: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The matched route's pattern (`/api/orders/{order_no}`), `unmatched` when none matched.
    route: String,
    status: u16,
}

/// What an effect's attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectResult {
    Done,
    Retried,
    DeadLettered,
}

impl EffectResult {
    const ALL: [EffectResult; 3] = [
        EffectResult::Done,
        EffectResult::Retried,
        EffectResult::DeadLettered,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EffectResult::Done => "done",
            EffectResult::Retried => "retried",
            EffectResult::DeadLettered => "dead_lettered",
        }
    }
}

/// What a payment notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackResult {
    /// Decided by the callback rules and stored (a transition, or a failure code kept).
    Applied,
    Duplicate,
    /// A late or double payment, kept for a refund.
    Late,
    /// Refused (bad signature, body, order, trade_no conflict, amount).
    Rejected,
    /// Not decided: the engine could not (500 / 503); the provider retries.
    Error,
}

impl CallbackResult {
    fn as_str(self) -> &'static str {
        match self {
            CallbackResult::Applied => "applied",
            CallbackResult::Duplicate => "duplicate",
            CallbackResult::Late => "late",
            CallbackResult::Rejected => "rejected",
            CallbackResult::Error => "error",
        }
    }
}

/// What the gauges show at a scrape, read by the caller (`None`: keep the last value).
#[derive(Debug, Default, Clone)]
pub struct Readings {
    pub pending_orders: i64,
    pub live_actors: i64,
    pub armed_timers: i64,
    pub effects_pending: Option<Vec<(EffectKind, i64)>>,
    pub events_unpublished: Option<i64>,
}

/// The process's metrics (one per engine, shared by its actors and HTTP workers).
pub struct Metrics {
    registry: Registry,
    orders_placed: Counter,
    transitions: Family<TransitionLabels, Counter>,
    timeout_lateness: Histogram,
    pending_orders: Gauge,
    live_actors: Gauge,
    armed_timers: Gauge,
    actor_restarts: Counter,
    effects: Family<EffectLabels, Counter>,
    effects_pending: Family<KindLabels, Gauge>,
    callbacks: Family<CallbackLabels, Counter>,
    events_unpublished: Gauge,
    webhook_deliveries: Family<ResultLabels, Counter>,
    schedule_runs: Family<ScheduleLabels, Counter>,
    http_requests: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let metrics = Metrics {
            orders_placed: register(
                &mut r,
                "order_engine_orders_placed",
                "Orders placed (201) by this process",
                Counter::default(),
            ),
            transitions: register(
                &mut r,
                "order_engine_transitions",
                "Orders that left pending in this process, by new status and close reason (payment for paid)",
                Family::default(),
            ),
            timeout_lateness: register(
                &mut r,
                "order_engine_timeout_lateness_seconds",
                "closed_at - expires_at of orders this process closed for timeout",
                Histogram::new(LATENESS_BUCKETS),
            ),
            pending_orders: register(
                &mut r,
                "order_engine_pending_orders",
                "Pending orders this process owns (each has a live actor and a timer)",
                Gauge::default(),
            ),
            live_actors: register(
                &mut r,
                "order_engine_live_actors",
                "Order actors alive in this process",
                Gauge::default(),
            ),
            armed_timers: register(
                &mut r,
                "order_engine_armed_timers",
                "Order actors whose deadline timer is armed",
                Gauge::default(),
            ),
            actor_restarts: register(
                &mut r,
                "order_engine_actor_restarts",
                "Order actors re-created after their mailbox closed",
                Counter::default(),
            ),
            effects: register(
                &mut r,
                "order_engine_effects",
                "Effect attempts by kind and result",
                Family::default(),
            ),
            effects_pending: register(
                &mut r,
                "order_engine_effects_pending",
                "Effects in the outbox not yet done nor dead-lettered, by kind (all processes)",
                Family::default(),
            ),
            callbacks: register(
                &mut r,
                "order_engine_callbacks",
                "Payment notifications by provider and result",
                Family::default(),
            ),
            events_unpublished: register(
                &mut r,
                "order_engine_events_unpublished",
                "Order events written and not yet published (all processes)",
                Gauge::default(),
            ),
            webhook_deliveries: register(
                &mut r,
                "order_engine_webhook_deliveries",
                "Webhook delivery attempts by result",
                Family::default(),
            ),
            schedule_runs: register(
                &mut r,
                "order_engine_schedule_runs",
                "Finished runs of each configured schedule by result (ok, failed), in this process",
                Family::default(),
            ),
            http_requests: register(
                &mut r,
                "http_server_request_duration_seconds",
                "HTTP requests by method, route pattern and status, from routing to the response",
                Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS)),
            ),
            registry: r,
        };
        metrics.preset();
        metrics
    }

    pub fn order_placed(&self) {
        self.orders_placed.inc();
    }

    /// An order left `pending` in a committed transaction of this process; `lateness` is
    /// `closed_at - expires_at` of a timeout.
    pub fn transitioned(&self, transition: Transition, lateness: Option<TimeDelta>) {
        self.transitions
            .get_or_create(&TransitionLabels::new(transition.to, transition.reason))
            .inc();
        if let Some(lateness) = lateness {
            let seconds = lateness.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            self.timeout_lateness.observe(seconds.max(0.0));
        }
    }

    pub fn actor_restarted(&self) {
        self.actor_restarts.inc();
    }

    pub fn effects(&self, kind: EffectKind, result: EffectResult, count: u64) {
        self.effects
            .get_or_create(&EffectLabels {
                kind: kind.as_str(),
                result: result.as_str(),
            })
            .inc_by(count);
    }

    /// One attempt at a webhook delivery: delivered, to be retried, or dead-lettered.
    pub fn webhook_delivery(&self, result: EffectResult) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// A schedule's run finished here: `ok` or `failed`.
    pub fn schedule_run(&self, schedule: &str, ok: bool) {
        self.schedule_runs
            .get_or_create(&ScheduleLabels {
                schedule: schedule.to_string(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// The zero-valued series of each configured schedule (see [`Metrics::preset`]).
    pub fn preset_schedules<'a>(&self, names: impl Iterator<Item = &'a str>) {
        for schedule in names {
            for result in ["ok", "failed"] {
                let _ = self.schedule_runs.get_or_create(&ScheduleLabels {
                    schedule: schedule.to_string(),
                    result,
                });
            }
        }
    }

    pub fn callback(&self, provider: &'static str, result: CallbackResult) {
        self.callbacks
            .get_or_create(&CallbackLabels {
                provider,
                result: result.as_str(),
            })
            .inc();
    }

    pub fn request(&self, method: &str, route: Option<&str>, status: u16, seconds: f64) {
        // A client can send any token as a method: only the known ones get a series of their
        // own (as OpenTelemetry's HTTP conventions do), so labels stay bounded.
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        let method = if KNOWN.contains(&method) {
            method
        } else {
            "_OTHER"
        };
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.unwrap_or("unmatched").to_string(),
                status,
            })
            .observe(seconds);
    }

    /// The text of a scrape, with the gauges set from `readings`.
    pub fn render(&self, readings: &Readings) -> String {
        self.pending_orders.set(readings.pending_orders);
        self.live_actors.set(readings.live_actors);
        self.armed_timers.set(readings.armed_timers);
        if let Some(pending) = &readings.effects_pending {
            for kind in EffectKind::ALL {
                let count = pending
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or(0, |(_, n)| *n);
                self.effects_pending
                    .get_or_create(&KindLabels {
                        kind: kind.as_str(),
                    })
                    .set(count);
            }
        }
        if let Some(unpublished) = readings.events_unpublished {
            self.events_unpublished.set(unpublished);
        }
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            log::error!("cannot encode the metrics: {err}");
        }
        text
    }

    /// Creates the zero-valued series of every known label value: a family shows only the
    /// series it has, and `rate()` and alerts need them from the first scrape.
    fn preset(&self) {
        for (to, reason) in TRANSITIONS {
            let _ = self
                .transitions
                .get_or_create(&TransitionLabels::new(to, reason));
        }
        for kind in EffectKind::ALL {
            let _ = self.effects_pending.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
            for result in EffectResult::ALL {
                let _ = self.effects.get_or_create(&EffectLabels {
                    kind: kind.as_str(),
                    result: result.as_str(),
                });
            }
        }
        for result in [
            CallbackResult::Applied,
            CallbackResult::Duplicate,
            CallbackResult::Late,
            CallbackResult::Rejected,
            CallbackResult::Error,
        ] {
            let _ = self.callbacks.get_or_create(&CallbackLabels {
                provider: "generic",
                result: result.as_str(),
            });
        }
        for result in EffectResult::ALL {
            let _ = self.webhook_deliveries.get_or_create(&ResultLabels {
                result: result.as_str(),
            });
        }
    }
}

/// Every transition out of `pending`: the new status and its close reason (none for paid).
const TRANSITIONS: [(OrderStatus, Option<CloseReason>); 5] = [
    (OrderStatus::Paid, None),
    (OrderStatus::Failed, Some(CloseReason::PaymentFailed)),
    (OrderStatus::Cancelled, Some(CloseReason::User)),
    (OrderStatus::Cancelled, Some(CloseReason::Timeout)),
    (OrderStatus::Cancelled, Some(CloseReason::Admin)),
];

/// Registers `metric` under `name` and returns it (a handle to the registered one).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

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
use prometheus_client::registry::Registry;

use crate::domain::order::Transition;
use crate::domain::states::{EffectKind, OrderStatus};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of `order_engine_timeout_lateness_seconds` (SPEC "Operations").
const LATENESS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of `http_server_request_duration_seconds`.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    to: &'static str,
    reason: &'static str,
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
    http_requests: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let orders_placed = Counter::default();
        registry.register(
            "order_engine_orders_placed",
            "Orders placed (201) by this process",
            orders_placed.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "order_engine_transitions",
            "Orders that left pending in this process, by new status and close reason (payment for paid)",
            transitions.clone(),
        );
        let timeout_lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register(
            "order_engine_timeout_lateness_seconds",
            "closed_at - expires_at of orders this process closed for timeout",
            timeout_lateness.clone(),
        );
        let pending_orders = Gauge::default();
        registry.register(
            "order_engine_pending_orders",
            "Pending orders this process owns (each has a live actor and a timer)",
            pending_orders.clone(),
        );
        let live_actors = Gauge::default();
        registry.register(
            "order_engine_live_actors",
            "Order actors alive in this process",
            live_actors.clone(),
        );
        let armed_timers = Gauge::default();
        registry.register(
            "order_engine_armed_timers",
            "Order actors whose deadline timer is armed",
            armed_timers.clone(),
        );
        let actor_restarts = Counter::default();
        registry.register(
            "order_engine_actor_restarts",
            "Order actors re-created after their mailbox closed",
            actor_restarts.clone(),
        );
        let effects = Family::<EffectLabels, Counter>::default();
        registry.register(
            "order_engine_effects",
            "Effect attempts by kind and result",
            effects.clone(),
        );
        let effects_pending = Family::<KindLabels, Gauge>::default();
        registry.register(
            "order_engine_effects_pending",
            "Effects in the outbox not yet done nor dead-lettered, by kind (all processes)",
            effects_pending.clone(),
        );
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register(
            "order_engine_callbacks",
            "Payment notifications by provider and result",
            callbacks.clone(),
        );
        let events_unpublished = Gauge::default();
        registry.register(
            "order_engine_events_unpublished",
            "Order events written and not yet published (all processes)",
            events_unpublished.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "order_engine_webhook_deliveries",
            "Webhook delivery attempts by result",
            webhook_deliveries.clone(),
        );
        let http_requests: Family<HttpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS));
        registry.register(
            "http_server_request_duration_seconds",
            "HTTP requests by method, route pattern and status, from routing to the response",
            http_requests.clone(),
        );
        let metrics = Metrics {
            registry,
            orders_placed,
            transitions,
            timeout_lateness,
            pending_orders,
            live_actors,
            armed_timers,
            actor_restarts,
            effects,
            effects_pending,
            callbacks,
            events_unpublished,
            webhook_deliveries,
            http_requests,
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
        let reason = transition.reason.map_or("payment", |r| r.as_str());
        self.transitions
            .get_or_create(&TransitionLabels {
                to: transition.to.as_str(),
                reason,
            })
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
        for to in OrderStatus::ALL {
            for reason in reasons_for(*to) {
                let _ = self.transitions.get_or_create(&TransitionLabels {
                    to: to.as_str(),
                    reason,
                });
            }
        }
        for kind in EffectKind::ALL {
            let _ = self.effects_pending.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
            for result in [
                EffectResult::Done,
                EffectResult::Retried,
                EffectResult::DeadLettered,
            ] {
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
        for result in ["done", "retried", "dead_lettered"] {
            let _ = self
                .webhook_deliveries
                .get_or_create(&ResultLabels { result });
        }
    }
}

/// The close reasons an order can reach `to` with (`payment` for paid).
fn reasons_for(to: OrderStatus) -> &'static [&'static str] {
    match to {
        OrderStatus::Pending => &[],
        OrderStatus::Paid => &["payment"],
        OrderStatus::Failed => &["payment_failed"],
        OrderStatus::Cancelled => &["timeout", "user", "admin"],
    }
}

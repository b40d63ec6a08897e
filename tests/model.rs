//! The order state machine, model-checked (Reliability, part 5).
//!
//! One order is explored exhaustively with `stateright`'s breadth-first checker: every
//! interleaving of its timer (also firing before the deadline), the overdue sweep, payment
//! callbacks (each possibly duplicated or reordered), user and admin cancels, the closer's
//! batches, effect workers (possibly replaying) and crashes with restarts, up to two
//! deliveries of each message, two runs of each effect worker and two crashes. No database is
//! needed: the model keeps the rows the engine writes as plain values ([`Rows`]).
//!
//! What is the engine's code and what is modelled:
//!
//! - **The decision is the engine's.** Every transaction — a callback or cancel (a batch of
//!   one) and each batch of the closer's timeouts — is one call of the engine's
//!   [`order_engine::domain::order::step_batch`], on the engine's own types: `Command`,
//!   `Callback`, `Canceller` and `OrderView` in, `Step`s out (`OutcomeKind`, the one
//!   `Transition` and its `coupon()`, the `PaymentOutcome` to store, the `EffectKind`, the
//!   events). The model makes no business decision of its own: no status, amount, deadline or
//!   trade_no rule is written here.
//! - **The writes are modelled**, as `db::transitions::apply_batch` does them
//!   ([`Rows::apply_batch`] follows it step for step): lock and view the rows (`view_of`),
//!   read the stored trades of the batch's callbacks (`seen_trades`), gather what the steps
//!   say (`Writes`), then write it in the engine's order — one conditional update out of
//!   `pending` per kind of transition, which must hit exactly the rows it names
//!   (`write_transitions`), the coupons (`write_coupons`), the payment events
//!   (`write_payments`, unique `trade_no`), the outbox (`outbox::enqueue`, unique
//!   (order_no, kind)) and the journal. A guard that trips rolls the whole transaction back
//!   (the engine answers 500); the property "no internal error" shows it never happens.
//!   Effects follow `db::outbox::apply`: applied only while their row is `pending`, then
//!   `done`; grants and refund ledger rows are inserted with ON CONFLICT DO NOTHING, and the
//!   points are credited only when the refund row was inserted.
//! - **The process is modelled** (`src/actors`). A pending order has an actor; its timer
//!   fires into the closer (`Expire`) and the actor waits for the answer, its mailbox holding
//!   deliveries meanwhile. The closer runs the first waiting request alone or all of them in
//!   one batch (it keeps two batches in flight, so both happen). The overdue sweep sends a
//!   pending order past its deadline with no actor here to the same closer, so a sweep and the
//!   order's timer can be decided in one `step_batch` call. The closer's answer lets the actor
//!   go, arms it again (not due) or makes it retry (`Failed`, which no modelled path may
//!   cause: database errors are not modelled). After a commit
//!   (`Core::after_commit`) the effects are queued and a final order is forgotten by the
//!   supervisor. A crash loses the actor, the closer's queue and the effect queue; a restart
//!   (`Engine::recover`) sends `Track` for a still-pending order — handled by the supervisor
//!   later, before any delivery (its `Lookup`s queue behind it) but possibly after a sweep —
//!   and queues every pending effect. A transaction is one atomic step: the row lock (in every
//!   process) and the mailbox (in one) serialise them, and a crash falls before or after it. A
//!   2xx lost to a crash is the provider's retry: the same message delivered again.
//! - Time is one boolean, `deadline_passed`, that flips once; the transaction's clock reads
//!   `expires_at` once it flipped and a millisecond before it until then.
//!
//! The engine batches only timeouts, so a second test,
//! [`a_batch_decides_as_its_commands_one_by_one`], covers the rest of `step_batch`: every
//! sequence of up to three commands (timeouts, callbacks, cancels) to two orders of one user,
//! cut into consecutive batches in every way, through the same [`Rows::apply_batch`]. Each cut
//! must trip no guard and give the same answers and rows as one command per transaction.
//!
//! **A defect this model found** (in the actors, not the state machine), and its fix: after a
//! restart the overdue sweep can find the order before the supervisor handles its `Track`;
//! the `Track` then starts an armed actor, and if the sweep's batch commits before the timer
//! heap fires that actor, `Forget` removed the supervisor's entry — the only way to reach the
//! actor — so it never fired or stopped and the `armed` gauge counted it forever (trace:
//! `DeadlinePasses, Crash, Restart, SweepFinds, TrackArrives, CloserRuns { all: false }`).
//! Now `Forget` also stands a still-live actor down (as `Retire` does), modelled in
//! [`State::after_commit`], and "order, effects and actor settle" requires that no actor is left.
//!
//! Not modelled: transient database errors and dead-lettering (an effect that never succeeds
//! is never "applied", which the conditional properties below do not cover), several engine
//! processes and the cluster (adoption, `Retire`; their transactions serialise on the same row
//! locks), and the effect dispatcher's overdue sweep, so the liveness properties show that
//! restart replay alone is enough. The order sweep is an optional step: liveness holds on the
//! paths where it never runs too.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use order_engine::domain::ids::UserId;
use order_engine::domain::order::{
    step_batch, Callback, Canceller, CloseReason, Command, CouponStatus, EffectKind, EventKind,
    OrderStatus, OrderView, OutcomeKind, PaymentOutcome, ProviderName, Step, StepError,
    StoredTrade, Transition, SUCCESS_CODE,
};
use order_engine::domain::states::LedgerKind;
use stateright::{Checker, HasDiscoveries, Model, Property};

/// The order's payable amount, in cents.
const PAYABLE: i64 = 100;
/// The user's points before placing the order.
const INITIAL_POINTS: i64 = 50;
/// The order's user (a user cancel names them).
const USER: UserId = UserId(1);
/// Per-action bound: each message, each effect worker and the crash happen at most this many
/// times.
const MAX_DELIVERIES: u8 = 2;

/// An order's key in the model's rows (its `order_no`).
type Key = u8;
/// The order the model checks.
const ORDER: Key = 0;
/// A second order of the same user, only in the batch test.
const OTHER: Key = 1;

/// The orders' `expires_at`.
fn expires_at() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 26)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("a valid instant")
}

/// The engine's clock as a transaction reads it under its locks: at the deadline once it
/// passed, a millisecond before it until then.
fn clock(deadline_passed: bool) -> NaiveDateTime {
    if deadline_passed {
        expires_at()
    } else {
        expires_at() - TimeDelta::milliseconds(1)
    }
}

/// Provider trade numbers: A pays, B pays too (a second payment), W pays the wrong amount, F
/// reports a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Trade {
    A,
    B,
    W,
    F,
}

const TRADES: [Trade; 4] = [Trade::A, Trade::B, Trade::W, Trade::F];

impl Trade {
    /// Its `trade_no`.
    fn no(self) -> &'static str {
        match self {
            Trade::A => "A",
            Trade::B => "B",
            Trade::W => "W",
            Trade::F => "F",
        }
    }

    fn of(trade_no: &str) -> Trade {
        TRADES
            .into_iter()
            .find(|t| t.no() == trade_no)
            .expect("a trade_no of the model")
    }
}

/// Messages from outside (the provider's callbacks and the cancel routes). A second delivery of
/// the same message is a duplicate (the provider retries until it gets a 200, and a 200 may be
/// lost to a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Msg {
    /// Success, trade_no A, the right amount.
    SuccessA,
    /// Success, trade_no B, the right amount.
    SuccessB,
    /// Success, trade_no W, a wrong amount.
    SuccessWrongAmount,
    /// A failure code, trade_no F.
    FailureF,
    UserCancel,
    AdminCancel,
}

const MSGS: [Msg; 6] = [
    Msg::SuccessA,
    Msg::SuccessB,
    Msg::SuccessWrongAmount,
    Msg::FailureF,
    Msg::UserCancel,
    Msg::AdminCancel,
];

impl Msg {
    fn index(self) -> usize {
        MSGS.iter()
            .position(|m| *m == self)
            .expect("a message of MSGS")
    }

    /// The engine's command for this message (what the callback and cancel routes hand it).
    fn command(self) -> Command {
        let callback = |trade: Trade, code, amount_cents| {
            Command::Callback(Callback {
                provider: ProviderName::Generic,
                trade_no: trade.no().to_string(),
                code,
                amount_cents,
                provider_paid_at: None,
            })
        };
        match self {
            Msg::SuccessA => callback(Trade::A, SUCCESS_CODE, PAYABLE),
            Msg::SuccessB => callback(Trade::B, SUCCESS_CODE, PAYABLE),
            Msg::SuccessWrongAmount => callback(Trade::W, SUCCESS_CODE, PAYABLE - 1),
            Msg::FailureF => callback(Trade::F, 2001, PAYABLE),
            Msg::UserCancel => Command::Cancel(Canceller::User(USER)),
            Msg::AdminCancel => Command::Cancel(Canceller::Admin),
        }
    }
}

// ----- the database: the rows the engine writes -----

/// A row of `orders` (the columns a transition writes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OrderRow {
    status: OrderStatus,
    close_reason: Option<CloseReason>,
    trade_no: Option<Trade>,
    points_used: i64,
    paid_at: Option<NaiveDateTime>,
    closed_at: Option<NaiveDateTime>,
    /// Ghost: times the conditional update out of `pending` hit this row.
    exits: u8,
}

/// A row of `user_coupons`: each order of the model holds its own coupon, locked to it at
/// placement (the coupon's index is its order's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CouponRow {
    status: CouponStatus,
    order: Option<Key>,
}

/// A row of `payment_events` (unique `trade_no`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PaymentRow {
    trade: Trade,
    order: Key,
    code: i64,
    amount_cents: i64,
    outcome: PaymentOutcome,
}

/// A row of the `effects` outbox (unique (order_no, kind)); `done` or `pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EffectRow {
    order: Key,
    kind: EffectKind,
    done: bool,
}

/// A row of `points_ledger` (unique (order_no, kind)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct LedgerRow {
    order: Key,
    kind: LedgerKind,
    delta: i64,
}

/// The rows of the model's orders (one user, one course per order). Sets keyed by a unique
/// column are kept sorted: their id order matters to no rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rows {
    /// `orders`, by key.
    orders: Vec<OrderRow>,
    /// `user_coupons`, by the key of the order that locked it.
    coupons: Vec<CouponRow>,
    payments: Vec<PaymentRow>,
    effects: Vec<EffectRow>,
    ledger: Vec<LedgerRow>,
    /// `users.points`.
    user_points: i64,
    /// `user_courses`: the orders whose course the user holds (unique (user, course)).
    courses: Vec<Key>,
    /// Order events the transactions journaled, in order.
    events: Vec<(Key, EventKind)>,
}

/// What a transaction answers each request: the engine's step, or why it refused it (that
/// request wrote nothing).
type Answer = Result<Step, StepError>;

/// A database guard that tripped: the whole transaction rolls back and the engine answers 500.
type Tripped = &'static str;

/// A kind of transition out of `pending` (`transitions::TransitionKey`).
type TransitionKey = (OrderStatus, Option<CloseReason>, Option<Trade>);

impl Rows {
    /// Pending orders as placed, spending `points[key]` each, each with its coupon locked.
    fn placed(points: &[i64]) -> Self {
        let ledger: Vec<LedgerRow> = points
            .iter()
            .enumerate()
            .filter(|(_, p)| **p > 0)
            .map(|(key, p)| LedgerRow {
                order: key as Key,
                kind: LedgerKind::Spend,
                delta: -p,
            })
            .collect();
        Rows {
            orders: points
                .iter()
                .map(|p| OrderRow {
                    status: OrderStatus::Pending,
                    close_reason: None,
                    trade_no: None,
                    points_used: *p,
                    paid_at: None,
                    closed_at: None,
                    exits: 0,
                })
                .collect(),
            coupons: (0..points.len())
                .map(|key| CouponRow {
                    status: CouponStatus::Locked,
                    order: Some(key as Key),
                })
                .collect(),
            payments: Vec::new(),
            effects: Vec::new(),
            user_points: INITIAL_POINTS + ledger.iter().map(|r| r.delta).sum::<i64>(),
            ledger,
            courses: Vec::new(),
            events: Vec::new(),
        }
    }

    fn order(&self, key: Key) -> &OrderRow {
        &self.orders[usize::from(key)]
    }

    /// `transitions::view_of`: what the state machine sees of a locked row.
    fn view(&self, key: Key) -> OrderView {
        let row = self.order(key);
        OrderView {
            status: row.status,
            user_id: USER,
            expires_at: expires_at(),
            payable_cents: PAYABLE,
            points_used: row.points_used,
        }
    }

    // ----- `transitions::apply_batch`, on a copy of the rows -----

    /// One transaction for `requests`: lock the orders, read the stored trades of the batch's
    /// callbacks, let the engine's `step_batch` decide every request, and write what the
    /// steps say, as `apply_once` does. `Ok` commits (the new rows and each request's
    /// answer); `Err` rolls everything back.
    fn apply_batch(
        &self,
        now: NaiveDateTime,
        requests: &[(Key, Command)],
    ) -> Result<(Rows, Vec<Answer>), Tripped> {
        let mut tx = self.clone();
        // `lock_orders`, `view_of`.
        let mut views: HashMap<Key, OrderView> = requests
            .iter()
            .map(|(key, _)| (*key, tx.view(*key)))
            .collect();
        // `seen_trades`: the stored events carrying the batch's trade numbers.
        let trade_nos: Vec<&str> = requests
            .iter()
            .filter_map(|(_, command)| command.callback().map(|cb| cb.trade_no.as_str()))
            .collect();
        let mut seen: HashMap<(ProviderName, String), StoredTrade<Key>> = tx
            .payments
            .iter()
            .filter(|p| trade_nos.contains(&p.trade.no()))
            .map(|p| {
                let key = (ProviderName::Generic, p.trade.no().to_string());
                (key, (p.order, p.code, p.amount_cents))
            })
            .collect();
        let commands: Vec<(Key, &Command)> = requests.iter().map(|(k, c)| (*k, c)).collect();
        let answers = step_batch(&mut views, &mut seen, now, &commands);

        // `Writes`: what the steps write, gathered by kind of write.
        let mut transitions: BTreeMap<TransitionKey, Vec<Key>> = BTreeMap::new();
        let mut coupons: BTreeMap<CouponStatus, Vec<Key>> = BTreeMap::new();
        let mut payments: Vec<PaymentRow> = Vec::new();
        let mut effects: Vec<(Key, EffectKind)> = Vec::new();
        let mut events: Vec<(Key, EventKind)> = Vec::new();
        for ((key, command), answer) in requests.iter().zip(&answers) {
            let Ok(step) = answer else { continue };
            let cb = command.callback();
            if let Some(t) = step.transition {
                let Transition {
                    to,
                    reason,
                    takes_trade_no,
                } = t;
                let trade = cb
                    .filter(|_| takes_trade_no)
                    .map(|cb| Trade::of(&cb.trade_no));
                transitions
                    .entry((to, reason, trade))
                    .or_default()
                    .push(*key);
                coupons.entry(t.coupon()).or_default().push(*key);
            }
            if let (Some(outcome), Some(cb)) = (step.payment, cb) {
                payments.push(PaymentRow {
                    trade: Trade::of(&cb.trade_no),
                    order: *key,
                    code: cb.code,
                    amount_cents: cb.amount_cents,
                    outcome,
                });
            }
            if let Some(kind) = step.effect {
                effects.push((*key, kind));
            }
            events.extend(step.events.iter().map(|kind| (*key, *kind)));
        }
        tx.write_transitions(&transitions, now)?;
        tx.write_coupons(&coupons);
        tx.write_payments(payments)?;
        tx.enqueue(&effects)?;
        // `journal.record_all`.
        tx.events.extend(events);
        Ok((tx, answers))
    }

    /// `write_transitions`: one `UPDATE orders ... WHERE order_no IN (..) AND status =
    /// 'pending'` per kind of transition, which must hit exactly the rows it names.
    fn write_transitions(
        &mut self,
        transitions: &BTreeMap<TransitionKey, Vec<Key>>,
        now: NaiveDateTime,
    ) -> Result<(), Tripped> {
        for ((to, reason, trade), keys) in transitions {
            let mut updated = 0;
            for (key, row) in self.orders.iter_mut().enumerate() {
                if !keys.contains(&(key as Key)) || row.status != OrderStatus::Pending {
                    continue;
                }
                row.status = *to;
                row.close_reason = *reason;
                row.trade_no = *trade;
                if *to == OrderStatus::Paid {
                    row.paid_at = Some(now);
                } else {
                    row.closed_at = Some(now);
                }
                row.exits += 1;
                updated += 1;
            }
            if updated != keys.len() {
                return Err("an order left pending under its lock (the conditional update missed)");
            }
        }
        Ok(())
    }

    /// `write_coupons`: the orders' locked coupons become used (paid) or unused and free.
    fn write_coupons(&mut self, coupons: &BTreeMap<CouponStatus, Vec<Key>>) {
        for (status, keys) in coupons {
            for coupon in &mut self.coupons {
                let locked_here = coupon.status == CouponStatus::Locked
                    && coupon.order.is_some_and(|order| keys.contains(&order));
                if locked_here {
                    coupon.status = *status;
                    if *status != CouponStatus::Used {
                        coupon.order = None;
                    }
                }
            }
        }
    }

    /// `write_payments` (unique `trade_no`; a violation is retried once by `apply_batch`,
    /// which here would violate again: a 500).
    fn write_payments(&mut self, rows: Vec<PaymentRow>) -> Result<(), Tripped> {
        for row in rows {
            if self.payments.iter().any(|p| p.trade == row.trade) {
                return Err("payment_events.trade_no unique violation");
            }
            self.payments.push(row);
        }
        self.payments.sort();
        Ok(())
    }

    /// `outbox::enqueue` (unique (order_no, kind)).
    fn enqueue(&mut self, effects: &[(Key, EffectKind)]) -> Result<(), Tripped> {
        for (order, kind) in effects {
            if self
                .effects
                .iter()
                .any(|e| e.order == *order && e.kind == *kind)
            {
                return Err("effects (order_no, kind) unique violation");
            }
            self.effects.push(EffectRow {
                order: *order,
                kind: *kind,
                done: false,
            });
        }
        self.effects.sort();
        Ok(())
    }

    // ----- `outbox::apply` -----

    /// Applies `kind` for `order` only while its row is `pending`, then marks it `done`: a
    /// grant inserts `user_courses` with ON CONFLICT DO NOTHING; a refund inserts its `refund`
    /// ledger row with ON CONFLICT DO NOTHING and credits the points only when it inserted.
    fn apply_effect(&mut self, order: Key, kind: EffectKind) {
        let Some(row) = self
            .effects
            .iter_mut()
            .find(|e| e.order == order && e.kind == kind && !e.done)
        else {
            return; // not pending: already applied
        };
        row.done = true;
        match kind {
            EffectKind::Grant => {
                if !self.courses.contains(&order) {
                    self.courses.push(order);
                    self.courses.sort();
                }
            }
            EffectKind::Refund => {
                let points = self.order(order).points_used;
                if points > 0 && self.refund_rows(order) == 0 {
                    self.ledger.push(LedgerRow {
                        order,
                        kind: LedgerKind::Refund,
                        delta: points,
                    });
                    self.ledger.sort();
                    self.user_points += points;
                }
            }
            // The model's callbacks are the generic provider's: no provider trades to close or
            // refund.
            EffectKind::ProviderClose | EffectKind::ProviderRefund => {}
        }
    }

    // ----- what the properties read -----

    fn refund_rows(&self, order: Key) -> usize {
        self.ledger
            .iter()
            .filter(|r| r.order == order && r.kind == LedgerKind::Refund)
            .count()
    }

    fn grants(&self, order: Key) -> usize {
        self.courses.iter().filter(|k| **k == order).count()
    }

    fn is_closed(&self, order: Key) -> bool {
        matches!(
            self.order(order).status,
            OrderStatus::Failed | OrderStatus::Cancelled
        )
    }

    fn effects_done(&self, order: Key) -> bool {
        self.effects.iter().all(|e| e.order != order || e.done)
    }

    fn recorded(&self, trade: Trade, outcome: PaymentOutcome) -> bool {
        self.payments
            .iter()
            .any(|p| p.trade == trade && p.outcome == outcome)
    }

    /// SPEC invariant 2: `locked` to the order while it is pending, `used` (still naming it)
    /// iff paid, `unused` and free iff failed or cancelled.
    fn coupon_follows_order(&self, order: Key) -> bool {
        let expected = match self.order(order).status {
            OrderStatus::Pending => (CouponStatus::Locked, Some(order)),
            OrderStatus::Paid => (CouponStatus::Used, Some(order)),
            OrderStatus::Failed | OrderStatus::Cancelled => (CouponStatus::Unused, None),
        };
        let coupon = self.coupons[usize::from(order)];
        (coupon.status, coupon.order) == expected
    }

    /// SPEC invariant 1: `points = initial_points + sum(ledger deltas)`.
    fn points_balance(&self) -> bool {
        self.user_points == INITIAL_POINTS + self.ledger.iter().map(|r| r.delta).sum::<i64>()
    }

    /// Never a refund for a paid or pending order or one without points, never two; never a
    /// grant for an unpaid order, never two (SPEC invariants 1 and 3).
    fn effects_at_most_once(&self, order: Key) -> bool {
        let row = self.order(order);
        let refunds = usize::from(self.is_closed(order) && row.points_used > 0);
        let grants = usize::from(row.status == OrderStatus::Paid);
        self.refund_rows(order) <= refunds && self.grants(order) <= grants
    }

    /// Once every effect row of the order is applied: points refunded exactly once for a
    /// closed order with points (never for a paid one), courses granted exactly once iff paid.
    fn settled_effects_exact(&self, order: Key) -> bool {
        if !self.effects_done(order) {
            return true;
        }
        let row = self.order(order);
        let refunds = usize::from(self.is_closed(order) && row.points_used > 0);
        let grants = usize::from(row.status == OrderStatus::Paid);
        self.refund_rows(order) == refunds && self.grants(order) == grants
    }

    /// SPEC "Business rules": paid only while `now < expires_at`; at or after it any
    /// transition is the close for timeout (`closed_at = now`); before it, never a timeout.
    fn moved_on_time(&self, order: Key) -> bool {
        let row = self.order(order);
        let deadline = expires_at();
        match (row.status, row.close_reason) {
            (OrderStatus::Pending, _) => row.paid_at.is_none() && row.closed_at.is_none(),
            (OrderStatus::Paid, _) => row.paid_at.is_some_and(|at| at < deadline),
            (_, Some(CloseReason::Timeout)) => row.closed_at.is_some_and(|at| at >= deadline),
            (_, _) => row.closed_at.is_some_and(|at| at < deadline),
        }
    }

    /// The order's `trade_no` is that of the stored callback that moved it (`paid` or
    /// `failed`), else null; at most one callback moved it.
    fn trade_no_is_the_movers(&self, order: Key) -> bool {
        let movers: Vec<Trade> = self
            .payments
            .iter()
            .filter(|p| p.order == order)
            .filter(|p| matches!(p.outcome, PaymentOutcome::Paid | PaymentOutcome::Failed))
            .map(|p| p.trade)
            .collect();
        movers.len() <= 1 && self.order(order).trade_no == movers.first().copied()
    }

    /// The journal holds the order's status event once it left `pending` (first) and one
    /// `late_payment` per late or double payment kept for it.
    fn events_follow_rows(&self, order: Key) -> bool {
        let kinds: Vec<EventKind> = self
            .events
            .iter()
            .filter(|(k, _)| *k == order)
            .map(|(_, kind)| *kind)
            .collect();
        let status = self.order(order).status;
        let kept = self
            .payments
            .iter()
            .filter(|p| p.order == order)
            .filter(|p| {
                matches!(
                    p.outcome,
                    PaymentOutcome::LatePayment | PaymentOutcome::DoublePayment
                )
            })
            .count();
        let mut expected = Vec::new();
        if status != OrderStatus::Pending {
            expected.push(status.event());
        }
        expected.extend(std::iter::repeat_n(EventKind::LatePayment, kept));
        kinds == expected
    }

    /// Every rows-only property of one order.
    fn consistent(&self, order: Key) -> bool {
        self.order(order).exits <= 1
            && self.coupon_follows_order(order)
            && self.points_balance()
            && self.effects_at_most_once(order)
            && self.settled_effects_exact(order)
            && self.moved_on_time(order)
            && self.trade_no_is_the_movers(order)
            && self.events_follow_rows(order)
    }
}

// ----- the engine process around the database -----

/// The order's actor in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Actor {
    /// None: never tracked since the start, or let go.
    None,
    /// Alive, known to the supervisor, its timer armed.
    Armed,
    /// Its timer fired: it waits (mailbox held) for the closer's answer.
    Transitioning,
}

/// Who asked the closer to close the order (an `Expire` waiting in its queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Asker {
    /// The order's actor, its timer fired.
    Timer,
    /// The supervisor's overdue sweep: the order is overdue and has no actor here.
    Sweep,
}

/// What the closer answers an asker (`closer::Expired`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    Settled,
    NotDue,
    Failed,
}

/// What the order looked like when it left `pending` (status, close reason, trade_no).
type Terminal = (OrderStatus, Option<CloseReason>, Option<Trade>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    // --- durable: the database ---
    rows: Rows,

    // --- time ---
    /// `now >= expires_at`; flips once.
    deadline_passed: bool,

    // --- volatile: the engine process ---
    up: bool,
    actor: Actor,
    /// The `Track` that start-up recovery sent for the (then pending) order, not yet handled
    /// by the supervisor.
    track_queued: bool,
    /// `Expire` requests waiting in the closer, in arrival order.
    closer: Vec<Asker>,
    /// `QueueEffect` messages waiting in the effect dispatcher.
    queued: Vec<EffectKind>,

    // --- what is still in flight (bounded) ---
    /// Deliveries so far of each message of [`MSGS`].
    delivered: [u8; 6],
    /// Effect worker runs so far, per [`EffectKind::ALL`].
    effect_runs: [u8; 2],
    crashes: u8,

    // --- history (ghost state for the properties) ---
    /// The order as it first left `pending`.
    terminal: Option<Terminal>,
    /// Successes that reached a non-pending order and what they must be recorded as.
    owed: Vec<(Trade, PaymentOutcome)>,
    /// The first thing that went wrong: a database guard tripped (the transaction rolled
    /// back, a 500), or a timeout left its order pending (the closer answers `Failed`).
    error: Option<&'static str>,
}

impl State {
    fn initial(points_used: i64) -> Self {
        State {
            rows: Rows::placed(&[points_used]),
            deadline_passed: false,
            up: true,
            actor: Actor::Armed,
            track_queued: false,
            closer: Vec::new(),
            queued: Vec::new(),
            delivered: [0; 6],
            effect_runs: [0; 2],
            crashes: 0,
            terminal: None,
            owed: Vec::new(),
            error: None,
        }
    }

    fn status(&self) -> OrderStatus {
        self.rows.order(ORDER).status
    }

    /// One transaction of `commands` for the order, on the engine's clock: the committed
    /// answers, or `None` when it rolled back.
    fn transact(&mut self, commands: Vec<Command>) -> Option<Vec<Answer>> {
        let requests: Vec<(Key, Command)> = commands.into_iter().map(|c| (ORDER, c)).collect();
        match self
            .rows
            .apply_batch(clock(self.deadline_passed), &requests)
        {
            Ok((rows, answers)) => {
                self.rows = rows;
                let row = self.rows.order(ORDER);
                if row.status != OrderStatus::Pending {
                    self.terminal
                        .get_or_insert((row.status, row.close_reason, row.trade_no));
                }
                Some(answers)
            }
            Err(why) => {
                self.error.get_or_insert(why);
                None
            }
        }
    }

    /// `Core::after_commit`: the committed effects go to the dispatcher; a final order's
    /// actor is forgotten by the supervisor (`Forget`), which also stands a still-live actor
    /// down (`StandDown`), so an armed actor that did not make the commit itself stops too.
    fn after_commit(&mut self, answers: &[Answer]) {
        for step in answers.iter().flatten() {
            if let Some(kind) = step.effect {
                self.queue(kind);
            }
        }
        if self.status() != OrderStatus::Pending && self.actor == Actor::Armed {
            self.actor = Actor::None;
        }
    }

    /// A success that reaches an order that is no longer pending (its deadline passed counts
    /// as closed) must be kept for admins, unless it is the paying callback again.
    fn owe(&mut self, command: &Command) {
        let Some(cb) = command.callback() else { return };
        let trade = Trade::of(&cb.trade_no);
        let row = self.rows.order(ORDER);
        let effective = if row.status == OrderStatus::Pending && self.deadline_passed {
            OrderStatus::Cancelled
        } else {
            row.status
        };
        let paying_again = row.status == OrderStatus::Paid && row.trade_no == Some(trade);
        if cb.code == SUCCESS_CODE && effective != OrderStatus::Pending && !paying_again {
            let must = if effective == OrderStatus::Paid {
                PaymentOutcome::DoublePayment
            } else {
                PaymentOutcome::LatePayment
            };
            if !self.owed.contains(&(trade, must)) {
                self.owed.push((trade, must));
                self.owed.sort();
            }
        }
    }

    /// `Engine::deliver`: a callback or cancel, a batch of one — through the order's actor
    /// when it is armed here (`settle`: let go after a final outcome), else straight to the
    /// database (`apply_direct`: the supervisor knows no actor of the order).
    fn deliver(&mut self, command: Command) {
        self.owe(&command);
        let via_actor = self.actor == Actor::Armed;
        if via_actor {
            self.actor = Actor::Transitioning;
        }
        if let Some(answers) = self.transact(vec![command]) {
            self.after_commit(&answers);
        }
        if via_actor {
            self.actor = if self.status() == OrderStatus::Pending {
                Actor::Armed
            } else {
                Actor::None
            };
        }
    }

    /// `Closer::flush` + `answer`: the first `take` waiting `Expire`s, one batch of
    /// `Command::Timeout`s; what committed goes to the after-commit step, then each asker gets
    /// its answer (the actor: let go, arm again, or retry).
    fn close_batch(&mut self, take: usize) {
        let askers: Vec<Asker> = self.closer.drain(..take).collect();
        let answers = self.transact(vec![Command::Timeout; take]);
        let expired: Vec<Expired> = match &answers {
            Some(answers) => {
                self.after_commit(answers);
                let is_final = self.status() != OrderStatus::Pending;
                answers
                    .iter()
                    .map(|answer| match answer {
                        Ok(s) if s.kind == OutcomeKind::NotDue => Expired::NotDue,
                        Ok(_) if !is_final => Expired::Failed,
                        Ok(_) | Err(StepError::OrderNotFound) => Expired::Settled,
                        Err(_) => Expired::Failed,
                    })
                    .collect()
            }
            None => vec![Expired::Failed; take],
        };
        for (asker, expired) in askers.into_iter().zip(expired) {
            if asker != Asker::Timer {
                continue; // the sweep only logs it
            }
            self.actor = match expired {
                Expired::Settled => Actor::None,
                Expired::NotDue => Actor::Armed,
                Expired::Failed => {
                    self.error
                        .get_or_insert("a timeout left its order pending (the timer retries)");
                    Actor::Armed
                }
            };
        }
    }

    fn queue(&mut self, kind: EffectKind) {
        self.queued.push(kind);
        self.queued.sort();
    }
}

fn effect_index(kind: EffectKind) -> usize {
    EffectKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("a kind of EffectKind::ALL")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// Time passes the order's `expires_at` (once).
    DeadlinePasses,
    /// The actor's timer fires (at the deadline, or before it by the process clock, which the
    /// transaction's clock answers "not due"): it asks
    /// the closer to close the order and waits.
    TimerFires,
    /// The overdue sweep finds the order pending past its deadline with no actor here and
    /// asks the closer too.
    SweepFinds,
    /// The supervisor handles start-up recovery's `Track`: an armed actor, unless one lives.
    TrackArrives,
    /// The closer runs one batch: the first waiting request alone, or all of them at once.
    CloserRuns {
        all: bool,
    },
    Deliver(Msg),
    /// An effect worker takes a queued effect; `keep_copy` leaves a duplicate message queued
    /// (a replay).
    ApplyEffect {
        kind: EffectKind,
        keep_copy: bool,
    },
    /// The process dies: actor, timer, closer queue and effect queue are lost.
    Crash,
    /// The process starts again (`Engine::recover`).
    Restart,
}

struct OrderModel;

impl Model for OrderModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // With and without points spent (the coupon is locked in both).
        vec![State::initial(0), State::initial(10)]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if !s.deadline_passed {
            actions.push(Action::DeadlinePasses);
        }
        if !s.up {
            actions.push(Action::Restart);
            return;
        }
        if s.actor == Actor::Armed {
            actions.push(Action::TimerFires);
        }
        if s.deadline_passed
            && s.status() == OrderStatus::Pending
            && s.actor == Actor::None
            && !s.closer.contains(&Asker::Sweep)
        {
            actions.push(Action::SweepFinds);
        }
        if s.track_queued {
            actions.push(Action::TrackArrives);
        }
        if !s.closer.is_empty() {
            actions.push(Action::CloserRuns { all: false });
        }
        if s.closer.len() > 1 {
            actions.push(Action::CloserRuns { all: true });
        }
        // A delivery waits while the actor waits for the closer (its mailbox holds it), and
        // behind start-up recovery's `Track` (the supervisor answers `Lookup`s in order).
        let mailbox_free = s.actor != Actor::Transitioning && !s.track_queued;
        for msg in MSGS {
            if mailbox_free && s.delivered[msg.index()] < MAX_DELIVERIES {
                actions.push(Action::Deliver(msg));
            }
        }
        for kind in EffectKind::ALL.iter().copied() {
            if s.queued.contains(&kind) && s.effect_runs[effect_index(kind)] < MAX_DELIVERIES {
                for keep_copy in [false, true] {
                    actions.push(Action::ApplyEffect { kind, keep_copy });
                }
            }
        }
        if s.crashes < MAX_DELIVERIES {
            actions.push(Action::Crash);
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        let mut s = s.clone();
        match action {
            Action::DeadlinePasses => s.deadline_passed = true,
            Action::TimerFires => {
                s.actor = Actor::Transitioning;
                s.closer.push(Asker::Timer);
            }
            Action::SweepFinds => s.closer.push(Asker::Sweep),
            Action::TrackArrives => {
                s.track_queued = false;
                if s.actor == Actor::None {
                    s.actor = Actor::Armed;
                }
            }
            Action::CloserRuns { all } => {
                let take = if all { s.closer.len() } else { 1 };
                s.close_batch(take);
            }
            Action::Deliver(msg) => {
                s.delivered[msg.index()] += 1;
                s.deliver(msg.command());
            }
            Action::ApplyEffect { kind, keep_copy } => {
                s.effect_runs[effect_index(kind)] += 1;
                if !keep_copy {
                    let at = s.queued.iter().position(|k| *k == kind)?;
                    s.queued.remove(at);
                }
                s.rows.apply_effect(ORDER, kind);
            }
            Action::Crash => {
                s.crashes += 1;
                s.up = false;
                s.actor = Actor::None;
                s.track_queued = false;
                s.closer.clear();
                s.queued.clear();
            }
            Action::Restart => {
                s.up = true;
                // `all_pending` -> `Track`, handled later by the supervisor.
                s.track_queued = s.status() == OrderStatus::Pending;
                // `outbox::pending`: every unfinished effect is queued again.
                let pending: Vec<EffectKind> = s
                    .rows
                    .effects
                    .iter()
                    .filter(|e| !e.done)
                    .map(|e| e.kind)
                    .collect();
                for kind in pending {
                    s.queue(kind);
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        use Property as P;
        vec![
            // ----- safety, in every reachable state -----
            P::always("no internal error", no_internal_error),
            P::always("at most one transition out of pending", one_transition),
            P::always("a terminal state never changes", terminal_is_final),
            P::always("coupon follows the order", |_, s: &State| {
                s.rows.coupon_follows_order(ORDER)
            }),
            P::always("points = initial + ledger", |_, s: &State| {
                s.rows.points_balance()
            }),
            P::always(
                "refund at most once, only if closed; grant at most once, only if paid",
                |_, s: &State| s.rows.effects_at_most_once(ORDER),
            ),
            P::always("settled effects are exact", |_, s: &State| {
                s.rows.settled_effects_exact(ORDER)
            }),
            P::always("late and double payments recorded", payments_recorded),
            P::always(
                "paid before the deadline, timed out at or after it",
                |_, s: &State| s.rows.moved_on_time(ORDER),
            ),
            P::always(
                "the order's trade_no is the callback that moved it",
                |_, s: &State| s.rows.trade_no_is_the_movers(ORDER),
            ),
            P::always("order events follow the rows", |_, s: &State| {
                s.rows.events_follow_rows(ORDER)
            }),
            P::always("a running pending order has a timer", pending_has_timer),
            // ----- liveness, on every maximal path -----
            P::eventually("order, effects and actor settle", settles),
            // ----- reachability sanity -----
            P::sometimes("paid", |_, s: &State| s.status() == OrderStatus::Paid),
            P::sometimes("failed", |_, s: &State| s.status() == OrderStatus::Failed),
            P::sometimes("cancelled by timeout", |_, s: &State| {
                s.rows.order(ORDER).close_reason == Some(CloseReason::Timeout)
            }),
            P::sometimes("cancelled by the user", |_, s: &State| {
                s.rows.order(ORDER).close_reason == Some(CloseReason::User)
            }),
            P::sometimes("cancelled by an admin", |_, s: &State| {
                s.rows.order(ORDER).close_reason == Some(CloseReason::Admin)
            }),
            P::sometimes("a late payment recorded", |_, s: &State| {
                s.rows
                    .payments
                    .iter()
                    .any(|p| p.outcome == PaymentOutcome::LatePayment)
            }),
            P::sometimes("a double payment recorded", |_, s: &State| {
                s.rows
                    .payments
                    .iter()
                    .any(|p| p.outcome == PaymentOutcome::DoublePayment)
            }),
            P::sometimes("a late failure stored as ignored", |_, s: &State| {
                s.rows
                    .payments
                    .iter()
                    .any(|p| p.outcome == PaymentOutcome::Ignored)
            }),
            P::sometimes("the paying callback duplicated", |_, s: &State| {
                s.rows.order(ORDER).trade_no == Some(Trade::A)
                    && s.status() == OrderStatus::Paid
                    && s.delivered[Msg::SuccessA.index()] == 2
            }),
            P::sometimes("points refunded", |_, s: &State| {
                s.rows.refund_rows(ORDER) == 1
            }),
            P::sometimes("courses granted", |_, s: &State| s.rows.grants(ORDER) == 1),
            P::sometimes("a done effect replayed", |_, s: &State| {
                s.queued
                    .iter()
                    .any(|k| s.rows.effects.iter().any(|e| e.kind == *k && e.done))
            }),
            P::sometimes("an effect queued again by a restart", |_, s: &State| {
                s.crashes > 0
                    && s.queued
                        .iter()
                        .any(|k| s.rows.effects.iter().any(|e| e.kind == *k && !e.done))
            }),
            P::sometimes("a pending order survives a crash", |_, s: &State| {
                s.crashes > 0 && s.up && s.status() == OrderStatus::Pending && s.deadline_passed
            }),
            P::sometimes("a timer fired before the deadline", |_, s: &State| {
                !s.deadline_passed && s.closer.contains(&Asker::Timer)
            }),
            // A known defect of the actors (not of the state machine), kept visible: see the
            // module doc. Once fixed, model the fix in `after_commit` and make this
            P::sometimes(
                "a timer and a sweep wait for one batch, the order pending past its deadline",
                |_, s: &State| {
                    s.closer.len() == 2 && s.status() == OrderStatus::Pending && s.deadline_passed
                },
            ),
        ]
    }
}

// ----- the properties' conditions -----

/// No transaction tripped a database guard (the steps never asked for a second transition out
/// of `pending`, a second event with one trade_no, or a second effect of one kind), and no
/// timeout left its order pending.
fn no_internal_error(_: &OrderModel, s: &State) -> bool {
    s.error.is_none()
}

/// SPEC invariant 4: exactly one transition out of `pending` (counted where the status is
/// written; "eventually settles" gives at least one).
fn one_transition(_: &OrderModel, s: &State) -> bool {
    s.rows.order(ORDER).exits <= 1
}

/// Once out of `pending`, status, close reason and trade_no never change.
fn terminal_is_final(_: &OrderModel, s: &State) -> bool {
    let row = s.rows.order(ORDER);
    match s.terminal {
        None => row.status == OrderStatus::Pending,
        Some(t) => t == (row.status, row.close_reason, row.trade_no),
    }
}

/// Every success that reached a non-pending order (other than the paying callback again) is
/// kept as `late_payment` (closed) or `double_payment` (paid).
fn payments_recorded(_: &OrderModel, s: &State) -> bool {
    s.owed
        .iter()
        .all(|(trade, outcome)| s.rows.recorded(*trade, *outcome))
}

/// While the engine runs, a pending order has its actor with its timer armed or fired, or its
/// `Track` is on the way (SPEC invariant 5).
fn pending_has_timer(_: &OrderModel, s: &State) -> bool {
    !s.up
        || s.status() != OrderStatus::Pending
        || matches!(s.actor, Actor::Armed | Actor::Transitioning)
        || s.track_queued
}

/// On every path: the order leaves `pending` and every effect it queued is applied.
fn settles(_: &OrderModel, s: &State) -> bool {
    s.status() != OrderStatus::Pending && s.rows.effects_done(ORDER) && s.actor == Actor::None
}

#[test]
fn the_order_state_machine_holds_under_every_interleaving() {
    let started = std::time::Instant::now();
    // Stop soon after the first counterexample: breadth-first, so its trace is (nearly) the
    // shortest. Without one the whole bounded space is explored.
    let checker = OrderModel
        .checker()
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    println!(
        "order model: {} states ({} unique), max depth {}, in {:?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    // Every violated safety or liveness property, each with its trace and final state.
    let violations: Vec<String> = OrderModel
        .properties()
        .into_iter()
        .filter(|p| p.expectation.discovery_is_failure())
        .filter_map(|p| {
            let path = checker.discovery(p.name)?;
            let last = format!("{:#?}", path.last_state());
            Some(format!(
                "\n\"{}\" violated by {path}final state: {last}",
                p.name
            ))
        })
        .collect();
    assert!(violations.is_empty(), "{}", violations.concat());
    checker.assert_properties();
}

// ----- batches of mixed commands -----

/// Every request the batch test combines: each command of the model, to either order.
fn requests() -> Vec<(Key, Command)> {
    let commands = std::iter::once(Command::Timeout).chain(MSGS.map(Msg::command));
    commands
        .flat_map(|c| [(ORDER, c.clone()), (OTHER, c)])
        .collect()
}

/// `sequence` applied as consecutive batches of the given sizes: the rows it leaves and every
/// request's answer, in order.
fn run_batches(
    start: &Rows,
    now: NaiveDateTime,
    sequence: &[(Key, Command)],
    sizes: &[usize],
) -> Result<(Rows, Vec<Answer>), Tripped> {
    let mut rows = start.clone();
    let mut answers = Vec::new();
    let mut at = 0;
    for size in sizes {
        let (next, mut got) = rows.apply_batch(now, &sequence[at..at + size])?;
        rows = next;
        answers.append(&mut got);
        at += size;
    }
    Ok((rows, answers))
}

/// The ways to cut `n` requests into consecutive non-empty batches.
fn splits(n: usize) -> Vec<Vec<usize>> {
    (0..1u32 << (n - 1))
        .map(|cuts| {
            let mut sizes = vec![1];
            for i in 0..n - 1 {
                if cuts & (1 << i) != 0 {
                    sizes.push(1);
                } else if let Some(last) = sizes.last_mut() {
                    *last += 1;
                }
            }
            sizes
        })
        .collect()
}

/// What the model check cannot reach with one order and the engine's own batches (timeouts
/// only): every sequence of up to three commands to two orders of one user — the same trade_no
/// reaching both, callbacks and cancels beside timeouts — decided by `step_batch` in every cut
/// into consecutive batches, from both sides of the deadline. Every cut must trip no database
/// guard, give every request the same answer and leave the same rows as one command per
/// transaction, and the rows must keep the model check's invariants.
#[test]
fn a_batch_decides_as_its_commands_one_by_one() {
    let requests = requests();
    let start = Rows::placed(&[0, 10]);
    let mut checked = 0;
    for deadline_passed in [false, true] {
        let now = clock(deadline_passed);
        let mut sequences: Vec<Vec<(Key, Command)>> = vec![Vec::new()];
        for _ in 0..3 {
            sequences = sequences
                .iter()
                .flat_map(|s| {
                    requests.iter().map(move |r| {
                        let mut longer = s.clone();
                        longer.push(r.clone());
                        longer
                    })
                })
                .collect();
            for sequence in &sequences {
                let one_by_one = vec![1; sequence.len()];
                let expected = run_batches(&start, now, sequence, &one_by_one)
                    .unwrap_or_else(|why| panic!("{sequence:?} one by one: {why}"));
                for order in [ORDER, OTHER] {
                    assert!(
                        expected.0.consistent(order),
                        "{sequence:?}: order {order}: {:#?}",
                        expected.0
                    );
                }
                for sizes in splits(sequence.len()) {
                    let got = run_batches(&start, now, sequence, &sizes)
                        .unwrap_or_else(|why| panic!("{sequence:?} in batches {sizes:?}: {why}"));
                    assert_eq!(got, expected, "{sequence:?} in batches {sizes:?}");
                    checked += 1;
                }
            }
        }
    }
    println!("batch test: {checked} cuts checked");
}

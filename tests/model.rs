//! The order state machine, model-checked (Reliability, part 5).
//!
//! One order is explored exhaustively with `stateright`'s breadth-first checker: every
//! interleaving of its timer, payment callbacks (each possibly duplicated or reordered), user and
//! admin cancels, effect workers (possibly replaying) and crashes with restarts, up to a bound
//! of two deliveries per action. No database is needed: the model keeps the rows the engine
//! writes for one order as plain values and replays, step for step, what the engine does with
//! them.
//!
//! Correspondence with the engine:
//!
//! - Every delivery is decided by the engine's own pure function
//!   [`order_engine::domain::order::plan`]; the model never re-implements the business rules.
//!   What the model does copy is the *shape* of the transaction of `src/db/transitions.rs`
//!   (`apply_once`): lock the row, `check_duplicate` by trade_no first (same order, code and
//!   amount -> duplicate, anything else -> 409 `trade_no_conflict`, rolled back), then
//!   `close_for_timeout`, then the decision (`pay`, `close`, `record_event`), with the
//!   database's own guards: the update out of `pending` is conditional (`left_pending` fails the
//!   whole transaction if it hits no row) and `payment_events.trade_no` and
//!   `effects (order_no, kind)` are unique (a violation rolls the transaction back).
//! - A transaction is atomic and serialised by the row lock (in every process) and by the
//!   actor's mailbox (in one process), so a delivery is one atomic step of the model; a crash
//!   falls before or after it. A 2xx lost to a crash is the provider's retry: the same message
//!   delivered again.
//! - Effects follow `src/db/effects.rs`: an effect row is applied only while `pending` and then
//!   marked `done`; a grant inserts `user_courses` rows with ON CONFLICT DO NOTHING
//!   (unique (user, course)); a refund inserts one `refund` ledger row with ON CONFLICT DO
//!   NOTHING (unique (order_no, kind)) and credits the points only when it inserted.
//! - Volatile state follows `src/actors`: a pending order has an actor whose timer is armed for
//!   the stored deadline; after a final outcome the actor is let go (`settle` -> `Forget`);
//!   committed effects are queued to the effect dispatcher (`QueueEffect`). A crash loses the
//!   actor and the queue; a restart (`Engine::recover`) re-creates an actor for a still-pending
//!   order (`adopt_pending`; a passed deadline fires at once) and queues every pending effect.
//!   The dispatcher's periodic overdue sweep is deliberately *not* modelled, so the liveness
//!   properties show that restart replay alone is enough.
//! - Time is one boolean, `deadline_passed` (`now >= expires_at`), that flips once; the timer
//!   fires only after it flipped.
//!
//! Not modelled: transient database errors and dead-lettering (an effect that never succeeds
//! is never "applied", which the conditional properties below do not cover), several engine
//! processes (their transactions serialise on the same row lock, which is what a step is here),
//! and the supervisor's overdue-order sweep (it sends the same `Command::Timeout`).

use order_engine::domain::order::SUCCESS_CODE;
use order_engine::domain::order::{plan, CloseReason, Decision, Event, OrderStatus};
use stateright::{Checker, HasDiscoveries, Model, Property};

/// The order's payable amount, in cents.
const PAYABLE: i64 = 100;
/// The user's points before placing the order.
const INITIAL_POINTS: i64 = 50;
/// Per-action bound: each message, the timer, each effect worker and the crash happen at most
/// this many times.
const MAX_DELIVERIES: u8 = 2;

/// Provider trade numbers: A pays, B pays too (a second payment), W pays the wrong amount, F
/// reports a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Trade {
    A,
    B,
    W,
    F,
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

/// A callback as the engine receives it (`transitions::Callback`, less `provider_paid_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Callback {
    trade: Trade,
    code: i64,
    amount_cents: i64,
}

/// `transitions::Command`, for one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Timeout,
    Callback(Callback),
    Cancel(CloseReason),
}

impl Msg {
    fn index(self) -> usize {
        MSGS.iter().position(|m| *m == self).unwrap()
    }

    fn command(self) -> Command {
        let cb = |trade, code, amount_cents| {
            Command::Callback(Callback {
                trade,
                code,
                amount_cents,
            })
        };
        match self {
            Msg::SuccessA => cb(Trade::A, SUCCESS_CODE, PAYABLE),
            Msg::SuccessB => cb(Trade::B, SUCCESS_CODE, PAYABLE),
            Msg::SuccessWrongAmount => cb(Trade::W, SUCCESS_CODE, PAYABLE - 1),
            Msg::FailureF => cb(Trade::F, 2001, PAYABLE),
            Msg::UserCancel => Command::Cancel(CloseReason::User),
            Msg::AdminCancel => Command::Cancel(CloseReason::Admin),
        }
    }
}

impl Command {
    /// The event the engine's own `transitions::Command::event` makes of this command.
    fn event(self) -> Event {
        use order_engine::domain::order as engine;
        let command = match self {
            Command::Timeout => engine::Command::Timeout,
            Command::Callback(cb) => engine::Command::Callback(engine::Callback {
                trade_no: format!("{:?}", cb.trade),
                code: cb.code,
                amount_cents: cb.amount_cents,
                provider_paid_at: None,
            }),
            Command::Cancel(CloseReason::User) => engine::Command::Cancel(engine::Canceller::User(
                order_engine::domain::ids::UserId(1),
            )),
            Command::Cancel(_) => engine::Command::Cancel(engine::Canceller::Admin),
        };
        command.event()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Coupon {
    Locked,
    Used,
    Unused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum EffectKind {
    Grant,
    Refund,
}

const EFFECT_KINDS: [EffectKind; 2] = [EffectKind::Grant, EffectKind::Refund];

/// A row of `payment_events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StoredEvent {
    callback: Callback,
    /// `paid`, `failed`, `late_payment`, `double_payment` or `ignored`.
    outcome: &'static str,
}

/// A row of the `effects` outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EffectRow {
    kind: EffectKind,
    /// `done` (true) or `pending` (false).
    done: bool,
}

/// A row of `points_ledger` for this order: (`spend` | `refund`, delta).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LedgerRow {
    kind: &'static str,
    delta: i64,
}

/// What the order looked like when it left `pending` (status, close reason, trade_no).
type Terminal = (OrderStatus, Option<&'static str>, Option<Trade>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    // --- durable: the database rows of this order ---
    status: OrderStatus,
    close_reason: Option<&'static str>,
    trade_no: Option<Trade>,
    points_used: i64,
    /// `payment_events`, by trade_no.
    events: Vec<StoredEvent>,
    coupon: Coupon,
    /// `effects`, in id order.
    effects: Vec<EffectRow>,
    /// `points_ledger` rows of this order.
    ledger: Vec<LedgerRow>,
    /// `users.points`.
    user_points: i64,
    /// `user_courses` rows the order's user holds (the order has one course).
    grants: u8,

    // --- time ---
    deadline_passed: bool,

    // --- volatile: the engine process ---
    up: bool,
    /// The order's actor is alive with its timer armed.
    actor_armed: bool,
    /// `QueueEffect` messages waiting in the effect dispatcher.
    queued: Vec<EffectKind>,

    // --- what is still in flight (bounded) ---
    /// Deliveries so far of each message of [`MSGS`].
    delivered: [u8; 6],
    timer_fired: u8,
    /// Effect worker runs so far, per [`EFFECT_KINDS`].
    effect_runs: [u8; 2],
    crashes: u8,

    // --- history (ghost state for the properties) ---
    /// Times the order's status moved out of `pending`.
    exits: u8,
    /// The order as it first left `pending`.
    terminal: Option<Terminal>,
    /// Successes that reached a non-pending order and what they must be recorded as.
    owed: Vec<(Trade, &'static str)>,
    /// The first transaction that failed with an internal error (a guard of the database
    /// tripped: the plan asked for something impossible).
    internal_error: Option<&'static str>,
}

/// Why a transaction did not commit (it is rolled back whole).
#[derive(Debug)]
enum TxError {
    /// 409 `trade_no_conflict`.
    Conflict,
    /// A 500: the plan asked for something the database refused.
    Internal(&'static str),
}

/// What a committed transaction reports (`transitions::OutcomeKind` plus its effects).
struct Outcome {
    effects: Vec<EffectKind>,
}

impl State {
    fn initial(points_used: i64) -> Self {
        let mut ledger = Vec::new();
        if points_used > 0 {
            ledger.push(LedgerRow {
                kind: "spend",
                delta: -points_used,
            });
        }
        State {
            status: OrderStatus::Pending,
            close_reason: None,
            trade_no: None,
            points_used,
            events: Vec::new(),
            coupon: Coupon::Locked,
            effects: Vec::new(),
            ledger,
            user_points: INITIAL_POINTS - points_used,
            grants: 0,
            deadline_passed: false,
            up: true,
            actor_armed: true,
            queued: Vec::new(),
            delivered: [0; 6],
            timer_fired: 0,
            effect_runs: [0; 2],
            crashes: 0,
            exits: 0,
            terminal: None,
            owed: Vec::new(),
            internal_error: None,
        }
    }

    fn all_effects_done(&self) -> bool {
        self.effects.iter().all(|e| e.done)
    }

    fn refund_rows(&self) -> usize {
        self.ledger.iter().filter(|r| r.kind == "refund").count()
    }

    fn recorded(&self, trade: Trade, outcome: &str) -> bool {
        self.events
            .iter()
            .any(|e| e.callback.trade == trade && e.outcome == outcome)
    }

    fn is_closed(&self) -> bool {
        matches!(self.status, OrderStatus::Failed | OrderStatus::Cancelled)
    }

    // ----- the transaction of `transitions::apply_once`, on a working copy -----

    /// `check_duplicate`: the same trade_no seen before.
    fn check_duplicate(&self, cb: &Callback) -> Result<bool, TxError> {
        match self.events.iter().find(|e| e.callback.trade == cb.trade) {
            None => Ok(false),
            Some(seen)
                if seen.callback.code == cb.code
                    && seen.callback.amount_cents == cb.amount_cents =>
            {
                Ok(true)
            }
            Some(_) => Err(TxError::Conflict),
        }
    }

    /// The conditional `UPDATE orders ... WHERE status = 'pending'`; `left_pending` fails the
    /// transaction when it hits no row.
    fn leave_pending(
        &mut self,
        to: OrderStatus,
        reason: Option<&'static str>,
        trade: Option<Trade>,
    ) -> Result<(), TxError> {
        if self.status != OrderStatus::Pending {
            return Err(TxError::Internal("left pending under its lock"));
        }
        self.status = to;
        self.close_reason = reason;
        self.trade_no = trade;
        self.exits += 1;
        self.terminal.get_or_insert((to, reason, trade));
        Ok(())
    }

    /// `insert_effect` (unique (order_no, kind)).
    fn insert_effect(&mut self, kind: EffectKind, out: &mut Outcome) -> Result<(), TxError> {
        if self.effects.iter().any(|e| e.kind == kind) {
            return Err(TxError::Internal(
                "effects (order_no, kind) unique violation",
            ));
        }
        self.effects.push(EffectRow { kind, done: false });
        out.effects.push(kind);
        Ok(())
    }

    /// `record_event` (unique trade_no).
    fn record_event(&mut self, cb: Callback, outcome: &'static str) -> Result<(), TxError> {
        if self.events.iter().any(|e| e.callback.trade == cb.trade) {
            return Err(TxError::Internal(
                "payment_events.trade_no unique violation",
            ));
        }
        self.events.push(StoredEvent {
            callback: cb,
            outcome,
        });
        // A set keyed by the unique trade_no: the id order matters to no rule.
        self.events.sort_by_key(|e| e.callback.trade);
        Ok(())
    }

    /// `transitions::pay`.
    fn pay(&mut self, cb: Callback, out: &mut Outcome) -> Result<(), TxError> {
        self.leave_pending(OrderStatus::Paid, None, Some(cb.trade))?;
        if self.coupon == Coupon::Locked {
            self.coupon = Coupon::Used;
        }
        self.record_event(cb, "paid")?;
        self.insert_effect(EffectKind::Grant, out)
    }

    /// `transitions::close`.
    fn close(
        &mut self,
        to: OrderStatus,
        reason: CloseReason,
        cb: Option<Callback>,
        out: &mut Outcome,
    ) -> Result<(), TxError> {
        self.leave_pending(to, Some(reason.as_str()), cb.map(|c| c.trade))?;
        if self.coupon == Coupon::Locked {
            self.coupon = Coupon::Unused;
        }
        if self.points_used > 0 {
            self.insert_effect(EffectKind::Refund, out)?;
        }
        Ok(())
    }

    /// `record_callback`: only a callback can be recorded.
    fn record_callback(&mut self, command: Command, outcome: &'static str) -> Result<(), TxError> {
        match command {
            Command::Callback(cb) => self.record_event(cb, outcome),
            _ => Err(TxError::Internal("record without a callback")),
        }
    }

    /// `transitions::apply_once`, steps in the same order. The caller keeps `self` only when
    /// this returns `Ok` (a rollback otherwise).
    fn apply_once(&mut self, command: Command) -> Result<Outcome, TxError> {
        let mut out = Outcome {
            effects: Vec::new(),
        };
        // 1. A trade_no seen before: a duplicate (no change) or a conflict.
        if let Command::Callback(cb) = command {
            if self.check_duplicate(&cb)? {
                return Ok(out);
            }
        }
        // 2. The engine's own plan, from the locked row.
        let p = plan(self.status, self.deadline_passed, PAYABLE, command.event());
        // 3. Close for timeout first.
        if p.close_for_timeout {
            self.close(OrderStatus::Cancelled, CloseReason::Timeout, None, &mut out)?;
        }
        // 4. Then the decision.
        match p.then {
            Decision::Transition {
                to: OrderStatus::Paid,
                ..
            } => {
                let Command::Callback(cb) = command else {
                    return Err(TxError::Internal("only a callback pays"));
                };
                self.pay(cb, &mut out)?;
            }
            Decision::Transition { to, reason } => {
                let reason = reason.ok_or(TxError::Internal("a close needs a reason"))?;
                let cb = match command {
                    Command::Callback(cb) => Some(cb),
                    _ => None,
                };
                self.close(to, reason, cb, &mut out)?;
                if let Some(cb) = cb {
                    self.record_event(cb, "failed")?;
                }
            }
            Decision::RecordLatePayment => self.record_callback(command, "late_payment")?,
            Decision::RecordDoublePayment => self.record_callback(command, "double_payment")?,
            Decision::RecordIgnored => self.record_callback(command, "ignored")?,
            // Nothing written; a rejection (409 / 422) still commits a close for timeout.
            Decision::NoChange | Decision::NotDue | Decision::Reject(_) => {}
        }
        Ok(out)
    }

    /// One delivery of `command`, by the actor (its mailbox) or straight to the database when
    /// there is none: the same transaction either way, then `settle`.
    fn deliver(&mut self, command: Command) {
        // Ghost: a success that reaches an order that is no longer pending (its deadline
        // passed counts as closed) must be kept for admins, unless it is the paying callback
        // again.
        if let Command::Callback(cb) = command {
            let effective = if self.status == OrderStatus::Pending && self.deadline_passed {
                OrderStatus::Cancelled
            } else {
                self.status
            };
            let paying_again = self.status == OrderStatus::Paid && self.trade_no == Some(cb.trade);
            if cb.code == SUCCESS_CODE && effective != OrderStatus::Pending && !paying_again {
                let must = if effective == OrderStatus::Paid {
                    "double_payment"
                } else {
                    "late_payment"
                };
                if !self.owed.contains(&(cb.trade, must)) {
                    self.owed.push((cb.trade, must));
                    self.owed.sort();
                }
            }
        }

        let mut tx = self.clone();
        match tx.apply_once(command) {
            Ok(out) => {
                *self = tx;
                // `settle` / `apply_direct`: queue the committed effects.
                for kind in out.effects {
                    self.queue(kind);
                }
                // A final outcome lets the actor go; otherwise it stays armed.
                if self.status != OrderStatus::Pending {
                    self.actor_armed = false;
                }
            }
            Err(TxError::Conflict) => {}
            Err(TxError::Internal(why)) => {
                self.internal_error.get_or_insert(why);
            }
        }
    }

    fn queue(&mut self, kind: EffectKind) {
        self.queued.push(kind);
        self.queued.sort();
    }

    /// `db::effects::apply`: only while the row is pending, then `done`.
    fn apply_effect(&mut self, kind: EffectKind) {
        let Some(row) = self.effects.iter_mut().find(|e| e.kind == kind && !e.done) else {
            return; // AlreadySettled
        };
        row.done = true;
        match kind {
            EffectKind::Grant => {
                // INSERT INTO user_courses ... ON CONFLICT DO NOTHING
                if self.grants == 0 {
                    self.grants = 1;
                }
            }
            EffectKind::Refund => {
                if self.points_used > 0 && self.refund_rows() == 0 {
                    // INSERT INTO points_ledger ... ON CONFLICT DO NOTHING; credit if inserted.
                    self.ledger.push(LedgerRow {
                        kind: "refund",
                        delta: self.points_used,
                    });
                    self.user_points += self.points_used;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// Time passes the order's `expires_at` (once).
    DeadlinePasses,
    /// The actor's timer fires: `Command::Timeout`.
    TimerFires,
    Deliver(Msg),
    /// An effect worker takes a queued effect; `keep_copy` leaves a duplicate message queued
    /// (a replay).
    ApplyEffect {
        kind: EffectKind,
        keep_copy: bool,
    },
    /// The process dies: actor, timer and effect queue are lost.
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
        if s.actor_armed && s.deadline_passed && s.timer_fired < MAX_DELIVERIES {
            actions.push(Action::TimerFires);
        }
        for msg in MSGS {
            if s.delivered[msg.index()] < MAX_DELIVERIES {
                actions.push(Action::Deliver(msg));
            }
        }
        for (i, kind) in EFFECT_KINDS.into_iter().enumerate() {
            if s.queued.contains(&kind) && s.effect_runs[i] < MAX_DELIVERIES {
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
                s.timer_fired += 1;
                s.deliver(Command::Timeout);
            }
            Action::Deliver(msg) => {
                s.delivered[msg.index()] += 1;
                s.deliver(msg.command());
            }
            Action::ApplyEffect { kind, keep_copy } => {
                let i = EFFECT_KINDS.iter().position(|k| *k == kind).unwrap();
                s.effect_runs[i] += 1;
                if !keep_copy {
                    let at = s.queued.iter().position(|k| *k == kind).unwrap();
                    s.queued.remove(at);
                }
                s.apply_effect(kind);
            }
            Action::Crash => {
                s.crashes += 1;
                s.up = false;
                s.actor_armed = false;
                s.queued.clear();
            }
            Action::Restart => {
                s.up = true;
                // `adopt_pending` + `Track`: an actor, armed for the stored deadline.
                s.actor_armed = s.status == OrderStatus::Pending;
                // `effects::pending`: every unfinished effect is queued again.
                let pending: Vec<EffectKind> = s
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
            P::always("coupon follows the order", coupon_follows_order),
            P::always("points = initial + ledger", points_balance),
            P::always("refund at most once, only if closed", refund_at_most_once),
            P::always("grant at most once, only if paid", grant_at_most_once),
            P::always("settled effects are exact", settled_effects_exact),
            P::always("late and double payments recorded", payments_recorded),
            P::always("a running pending order has a timer", pending_has_timer),
            // ----- liveness, on every maximal path -----
            P::eventually("order and effects settle", settles),
            // ----- reachability sanity -----
            P::sometimes("paid", |_, s: &State| s.status == OrderStatus::Paid),
            P::sometimes("failed", |_, s: &State| s.status == OrderStatus::Failed),
            P::sometimes("cancelled by timeout", |_, s: &State| {
                s.close_reason == Some("timeout")
            }),
            P::sometimes("cancelled by the user", |_, s: &State| {
                s.close_reason == Some("user")
            }),
            P::sometimes("cancelled by an admin", |_, s: &State| {
                s.close_reason == Some("admin")
            }),
            P::sometimes("a late payment recorded", |_, s: &State| {
                s.events.iter().any(|e| e.outcome == "late_payment")
            }),
            P::sometimes("a double payment recorded", |_, s: &State| {
                s.events.iter().any(|e| e.outcome == "double_payment")
            }),
            P::sometimes("a late failure stored as ignored", |_, s: &State| {
                s.events.iter().any(|e| e.outcome == "ignored")
            }),
            P::sometimes("the paying callback duplicated", |_, s: &State| {
                s.trade_no == Some(Trade::A)
                    && s.status == OrderStatus::Paid
                    && s.delivered[Msg::SuccessA.index()] == 2
            }),
            P::sometimes("points refunded", |_, s: &State| s.refund_rows() == 1),
            P::sometimes("courses granted", |_, s: &State| s.grants == 1),
            P::sometimes("a done effect replayed", |_, s: &State| {
                s.queued
                    .iter()
                    .any(|k| s.effects.iter().any(|e| e.kind == *k && e.done))
            }),
            P::sometimes("an effect queued again by a restart", |_, s: &State| {
                s.crashes > 0
                    && s.queued
                        .iter()
                        .any(|k| s.effects.iter().any(|e| e.kind == *k && !e.done))
            }),
            P::sometimes("a pending order survives a crash", |_, s: &State| {
                s.crashes > 0 && s.up && s.status == OrderStatus::Pending && s.deadline_passed
            }),
        ]
    }
}

// ----- the properties' conditions -----

/// No transaction tripped a database guard: the plan never asked for a second transition out
/// of `pending`, a second event with one trade_no, or a second effect of one kind.
fn no_internal_error(_: &OrderModel, s: &State) -> bool {
    s.internal_error.is_none()
}

/// SPEC invariant 4: exactly one transition out of `pending` (counted where the status is
/// written).
fn one_transition(_: &OrderModel, s: &State) -> bool {
    s.exits <= 1
}

/// Once out of `pending`, status, close reason and trade_no never change.
fn terminal_is_final(_: &OrderModel, s: &State) -> bool {
    match s.terminal {
        None => s.status == OrderStatus::Pending,
        Some(t) => t == (s.status, s.close_reason, s.trade_no),
    }
}

/// SPEC invariant 2: the coupon is `used` iff paid, `locked` iff pending, `unused` iff failed
/// or cancelled.
fn coupon_follows_order(_: &OrderModel, s: &State) -> bool {
    let expected = match s.status {
        OrderStatus::Pending => Coupon::Locked,
        OrderStatus::Paid => Coupon::Used,
        OrderStatus::Failed | OrderStatus::Cancelled => Coupon::Unused,
    };
    s.coupon == expected
}

/// SPEC invariant 1: `points = initial_points + sum(ledger deltas)`.
fn points_balance(_: &OrderModel, s: &State) -> bool {
    s.user_points == INITIAL_POINTS + s.ledger.iter().map(|r| r.delta).sum::<i64>()
}

/// Never a refund for a paid or pending order or one without points, never two.
fn refund_at_most_once(_: &OrderModel, s: &State) -> bool {
    s.refund_rows() <= usize::from(s.is_closed() && s.points_used > 0)
}

/// SPEC invariant 3: no grants for an unpaid order, never two.
fn grant_at_most_once(_: &OrderModel, s: &State) -> bool {
    s.grants <= u8::from(s.status == OrderStatus::Paid)
}

/// Once every effect row is applied: points refunded exactly once for a closed order with
/// points (never for a paid one), courses granted exactly once iff paid.
fn settled_effects_exact(_: &OrderModel, s: &State) -> bool {
    if !s.all_effects_done() {
        return true;
    }
    let refunds = usize::from(s.is_closed() && s.points_used > 0);
    let grants = u8::from(s.status == OrderStatus::Paid);
    s.refund_rows() == refunds && s.grants == grants
}

/// Every success that reached a non-pending order (other than the paying callback again) is
/// kept as `late_payment` (closed) or `double_payment` (paid).
fn payments_recorded(_: &OrderModel, s: &State) -> bool {
    s.owed
        .iter()
        .all(|(trade, outcome)| s.recorded(*trade, outcome))
}

/// While the engine runs, a pending order has its actor with an armed timer (SPEC invariant 5).
fn pending_has_timer(_: &OrderModel, s: &State) -> bool {
    !s.up || s.status != OrderStatus::Pending || s.actor_armed
}

/// On every path: the order leaves `pending` and every effect it queued is applied.
fn settles(_: &OrderModel, s: &State) -> bool {
    s.status != OrderStatus::Pending && s.all_effects_done()
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

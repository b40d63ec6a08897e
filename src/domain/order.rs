//! The order state machine, pure: what one command (timer, callback, cancel) does to one
//! order, decided from the order's locked row before anything is written. Every way an order
//! leaves `pending` — its timer, the batched close of due orders, a callback, a user or admin
//! cancel, the start-up and overdue sweeps, adoption — is decided here, by [`step`], and
//! applied by `db::transitions` (a batch; one order is a batch of one). The model check
//! (`tests/model.rs`) drives the same function.

use chrono::NaiveDateTime;

use super::ids::{OrderNo, UserId};

pub use super::states::{
    CloseReason, CouponStatus, EffectKind, EventKind, OrderStatus, PaymentOutcome, ProviderName,
};

/// Callback code that means success.
pub const SUCCESS_CODE: i64 = 100_000;
/// The code stored for a provider's word that a trade closed, expired or failed (providers
/// other than the generic one have no codes of their own).
pub const PROVIDER_CLOSED_CODE: i64 = 0;

/// A payment provider callback, after its signature and shape were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Who it came through: trade numbers are unique per provider, and only the generic
    /// callback's failure codes fail an order.
    pub provider: ProviderName,
    pub trade_no: String,
    pub code: i64,
    pub amount_cents: i64,
    pub provider_paid_at: Option<NaiveDateTime>,
}

/// Who cancels an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canceller {
    /// The order's user (another user's order is "not found").
    User(UserId),
    Admin,
}

/// What reaches an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Its deadline passed (its timer, the batched close, a sweep).
    Timeout,
    Callback(Callback),
    Cancel(Canceller),
}

impl Command {
    /// The state-machine event this command is.
    pub fn event(&self) -> Event {
        match self {
            Command::Timeout => Event::Timeout,
            Command::Callback(cb) if cb.code == SUCCESS_CODE => Event::Success {
                amount_cents: cb.amount_cents,
            },
            Command::Callback(cb) if cb.provider != ProviderName::Generic => Event::ProviderClosed,
            Command::Callback(_) => Event::Failure,
            Command::Cancel(Canceller::User(_)) => Event::Cancel(CloseReason::User),
            Command::Cancel(Canceller::Admin) => Event::Cancel(CloseReason::Admin),
        }
    }

    pub fn callback(&self) -> Option<&Callback> {
        match self {
            Command::Callback(cb) => Some(cb),
            _ => None,
        }
    }
}

/// A new opaque, unique, URL-safe order number: a UUIDv7 made from the order's own creation
/// time, so order numbers sort like `created_at` (newest-first pages are keyset pages on it).
pub fn new_order_no(created_at: &chrono::NaiveDateTime) -> OrderNo {
    let ms = super::time::unix_ms(created_at).max(0) as u64;
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    OrderNo(uuid::Uuid::new_v7(ts).simple().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_sort_by_creation_time() {
        let a = crate::domain::time::parse("2026-11-26T12:00:00.001Z").unwrap();
        let b = crate::domain::time::parse("2026-11-26T12:00:00.002Z").unwrap();
        let (x, y) = (new_order_no(&a), new_order_no(&b));
        assert!(x < y);
        assert_eq!(x.as_str().len(), 32);
        assert!(x.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}

/// A command as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Timeout,
    /// Callback code 100000, with the amount received.
    Success {
        amount_cents: i64,
    },
    /// Any other callback code.
    Failure,
    /// A provider's trade closed, expired or failed: through a provider an order leaves
    /// `pending` only by a success (the student may pay another way; the deadline still
    /// closes it).
    ProviderClosed,
    Cancel(CloseReason),
}

/// Why an event is refused (the order is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    OrderNotPending,
    AmountMismatch,
}

/// What an event does to an order in a given state (after the expiry step of [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The one transition out of `pending`.
    Transition {
        to: OrderStatus,
        reason: Option<CloseReason>,
    },
    /// A success for a closed order: kept for admins (refund required), acknowledged.
    RecordLatePayment,
    /// A success with a new trade_no for a paid order: kept for admins, acknowledged.
    RecordDoublePayment,
    /// A failure code for an order that is no longer pending: stored, acknowledged.
    RecordIgnored,
    /// Nothing to do (a timer of an order that is no longer pending).
    NoChange,
    /// A timer that fired before the deadline: arm it again.
    NotDue,
    Reject(Rejection),
}

/// The whole plan for one event: first, if the order is pending and its deadline has passed,
/// close it (`cancelled`, `timeout`); then apply `then` to the resulting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub close_for_timeout: bool,
    pub then: Decision,
}

/// The order state machine (SPEC §Business rules), pure. `expired` is `now >= expires_at`.
pub fn plan(status: OrderStatus, expired: bool, payable_cents: i64, event: Event) -> Plan {
    if status == OrderStatus::Pending && expired {
        return Plan {
            close_for_timeout: true,
            then: decide(OrderStatus::Cancelled, payable_cents, event),
        };
    }
    Plan {
        close_for_timeout: false,
        then: decide(status, payable_cents, event),
    }
}

fn decide(status: OrderStatus, payable_cents: i64, event: Event) -> Decision {
    use OrderStatus::*;
    match (status, event) {
        (Pending, Event::Timeout) => Decision::NotDue,
        (Pending, Event::Success { amount_cents }) if amount_cents == payable_cents => {
            Decision::Transition {
                to: Paid,
                reason: None,
            }
        }
        (Pending, Event::Success { .. }) => Decision::Reject(Rejection::AmountMismatch),
        (Pending, Event::Failure) => Decision::Transition {
            to: Failed,
            reason: Some(CloseReason::PaymentFailed),
        },
        (Pending, Event::Cancel(reason)) => Decision::Transition {
            to: Cancelled,
            reason: Some(reason),
        },
        (Paid, Event::Success { .. }) => Decision::RecordDoublePayment,
        (Failed | Cancelled, Event::Success { .. }) => Decision::RecordLatePayment,
        (_, Event::Failure | Event::ProviderClosed) => Decision::RecordIgnored,
        (_, Event::Cancel(_)) => Decision::Reject(Rejection::OrderNotPending),
        (_, Event::Timeout) => Decision::NoChange,
    }
}

/// What the transaction sees of an order: its locked row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderView {
    pub status: OrderStatus,
    pub user_id: UserId,
    pub expires_at: NaiveDateTime,
    pub payable_cents: i64,
    pub points_used: i64,
}

/// The stored payment event that already carries a callback's `trade_no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenTrade {
    /// It names this order.
    pub same_order: bool,
    pub code: i64,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The order left `pending` in this transaction.
    Transitioned,
    /// The same callback again: nothing changed.
    Duplicate,
    LatePayment,
    DoublePayment,
    /// Stored (a failure code for a closed order) or nothing to do (a late timer, a refusal).
    Unchanged,
    /// The timer fired before the deadline.
    NotDue,
}

/// The one transition out of `pending` a command makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: OrderStatus,
    /// `None` for `paid`.
    pub reason: Option<CloseReason>,
    /// Whether the callback's `trade_no` becomes the order's (the success that pays it, the
    /// failure that fails it).
    pub takes_trade_no: bool,
}

impl Transition {
    /// Where the order's locked coupon goes: used when paid, back to unused otherwise.
    pub fn coupon(self) -> CouponStatus {
        if self.to == OrderStatus::Paid {
            CouponStatus::Used
        } else {
            CouponStatus::Unused
        }
    }

    /// The effect it queues: the grant of a paid order, the refund of a closed one that spent
    /// points (none otherwise).
    pub fn effect(self, points_used: i64) -> Option<EffectKind> {
        match self.to {
            OrderStatus::Paid => Some(EffectKind::Grant),
            _ if points_used > 0 => Some(EffectKind::Refund),
            _ => None,
        }
    }
}

/// Everything one command writes, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: OutcomeKind,
    /// Set when the command itself was refused; an expired order may still have been closed
    /// for timeout in the same, committed, transaction.
    pub rejection: Option<Rejection>,
    pub transition: Option<Transition>,
    /// The callback is stored as a payment event with this outcome.
    pub payment: Option<PaymentOutcome>,
    /// The effect queued in the outbox.
    pub effect: Option<EffectKind>,
    /// Order events written (in this order).
    pub events: Vec<EventKind>,
}

impl Step {
    fn nothing(kind: OutcomeKind) -> Self {
        Step {
            kind,
            rejection: None,
            transition: None,
            payment: None,
            effect: None,
            events: Vec::new(),
        }
    }
}

/// Why a command is refused before anything is written (the transaction writes nothing for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepError {
    /// No such order, or another user's.
    OrderNotFound,
    /// The callback's `trade_no` was stored for a different order, code or amount.
    TradeNoConflict,
}

/// The order state machine for one command (SPEC "Business rules"): `order` is the locked
/// row (`None`: no such order), `now` the engine's clock read under the lock, `seen` the stored
/// payment event that already carries the callback's `trade_no`.
pub fn step(
    order: Option<&OrderView>,
    now: NaiveDateTime,
    command: &Command,
    seen: Option<SeenTrade>,
) -> Result<Step, StepError> {
    let order = match (order, command) {
        (Some(order), Command::Cancel(Canceller::User(user))) if order.user_id != *user => None,
        (order, _) => order,
    };
    let order = order.ok_or(StepError::OrderNotFound)?;
    if let (Some(cb), Some(seen)) = (command.callback(), seen) {
        // A provider's later word on a trade it reported already (Alipay TRADE_FINISHED after
        // TRADE_SUCCESS, a close after a refund, a repeat) is acknowledged: providers retry a
        // refusal for a day. Only the generic callback's differing repeat is a conflict.
        let same_word = cb.provider != ProviderName::Generic
            || (seen.code == cb.code && seen.amount_cents == cb.amount_cents);
        return if seen.same_order && same_word {
            Ok(Step::nothing(OutcomeKind::Duplicate))
        } else {
            Err(StepError::TradeNoConflict)
        };
    }
    let p = plan(
        order.status,
        now >= order.expires_at,
        order.payable_cents,
        command.event(),
    );
    let mut out = Step::nothing(OutcomeKind::Unchanged);
    if p.close_for_timeout {
        out.transition = Some(Transition {
            to: OrderStatus::Cancelled,
            reason: Some(CloseReason::Timeout),
            takes_trade_no: false,
        });
        out.kind = OutcomeKind::Transitioned;
    }
    match p.then {
        Decision::Transition { to, reason } => {
            let by_callback = command.callback().is_some();
            out.transition = Some(Transition {
                to,
                reason,
                takes_trade_no: by_callback,
            });
            out.kind = OutcomeKind::Transitioned;
            out.payment = by_callback.then_some(if to == OrderStatus::Paid {
                PaymentOutcome::Paid
            } else {
                PaymentOutcome::Failed
            });
        }
        Decision::RecordLatePayment => {
            out.payment = Some(PaymentOutcome::LatePayment);
            out.kind = OutcomeKind::LatePayment;
        }
        Decision::RecordDoublePayment => {
            out.payment = Some(PaymentOutcome::DoublePayment);
            out.kind = OutcomeKind::DoublePayment;
        }
        Decision::RecordIgnored => out.payment = Some(PaymentOutcome::Ignored),
        Decision::NoChange => {}
        Decision::NotDue => out.kind = OutcomeKind::NotDue,
        Decision::Reject(r) => out.rejection = Some(r),
    }
    if let Some(t) = out.transition {
        out.effect = t.effect(order.points_used);
        out.events.push(t.to.event());
    }
    if matches!(
        out.payment,
        Some(PaymentOutcome::LatePayment | PaymentOutcome::DoublePayment)
    ) {
        out.events.push(EventKind::LatePayment);
    }
    Ok(out)
}

/// What the batch knows of a `trade_no` already stored: the order it names, its code and
/// amount.
pub type StoredTrade<K> = (K, i64, i64);

/// The state machine for a batch of commands in one transaction, in order: each command sees
/// the orders as the earlier ones left them (the same order may appear twice: a timer and a
/// sweep), and a callback's `trade_no` recorded earlier in the batch counts as seen. `orders`
/// holds the locked rows (`K` is the order's key) and ends as the batch leaves them; `seen`
/// holds the stored trades of the batch's callbacks.
pub fn step_batch<K: Eq + std::hash::Hash + Clone>(
    orders: &mut std::collections::HashMap<K, OrderView>,
    seen: &mut std::collections::HashMap<(ProviderName, String), StoredTrade<K>>,
    now: NaiveDateTime,
    requests: &[(K, &Command)],
) -> Vec<Result<Step, StepError>> {
    requests
        .iter()
        .map(|(key, command)| {
            let trade = command.callback().and_then(|cb| {
                seen.get(&(cb.provider, cb.trade_no.clone()))
                    .map(|(order, code, amount)| SeenTrade {
                        same_order: order == key,
                        code: *code,
                        amount_cents: *amount,
                    })
            });
            let planned = step(orders.get(key), now, command, trade)?;
            if let Some(view) = orders.get_mut(key) {
                *view = view.after(&planned);
            }
            if let (Some(_), Some(cb)) = (planned.payment, command.callback()) {
                seen.insert(
                    (cb.provider, cb.trade_no.clone()),
                    (key.clone(), cb.code, cb.amount_cents),
                );
            }
            Ok(planned)
        })
        .collect()
}

impl OrderView {
    /// The order as a committed step leaves it.
    pub fn after(mut self, step: &Step) -> Self {
        if let Some(t) = step.transition {
            self.status = t.to;
        }
        self
    }
}
#[cfg(test)]
mod plan_tests {
    use super::*;

    const PAY: Event = Event::Success { amount_cents: 100 };

    #[test]
    fn pending_orders_take_exactly_one_transition() {
        let p = plan(OrderStatus::Pending, false, 100, PAY);
        assert_eq!(
            p.then,
            Decision::Transition {
                to: OrderStatus::Paid,
                reason: None
            }
        );
        assert!(!p.close_for_timeout);
        assert_eq!(
            plan(
                OrderStatus::Pending,
                false,
                100,
                Event::Success { amount_cents: 99 }
            )
            .then,
            Decision::Reject(Rejection::AmountMismatch)
        );
        assert_eq!(
            plan(OrderStatus::Pending, false, 100, Event::Timeout).then,
            Decision::NotDue
        );
    }

    #[test]
    fn an_expired_order_is_closed_first() {
        let late = plan(OrderStatus::Pending, true, 100, PAY);
        assert_eq!(
            late,
            Plan {
                close_for_timeout: true,
                then: Decision::RecordLatePayment
            }
        );
        let cancel = plan(
            OrderStatus::Pending,
            true,
            100,
            Event::Cancel(CloseReason::User),
        );
        assert_eq!(cancel.then, Decision::Reject(Rejection::OrderNotPending));
        assert_eq!(
            plan(OrderStatus::Pending, true, 100, Event::Timeout).then,
            Decision::NoChange
        );
    }

    #[test]
    fn closed_and_paid_orders_only_record() {
        assert_eq!(
            plan(OrderStatus::Paid, false, 100, PAY).then,
            Decision::RecordDoublePayment
        );
        assert_eq!(
            plan(OrderStatus::Failed, false, 100, PAY).then,
            Decision::RecordLatePayment
        );
        assert_eq!(
            plan(OrderStatus::Cancelled, true, 100, Event::Failure).then,
            Decision::RecordIgnored
        );
        assert_eq!(
            plan(
                OrderStatus::Paid,
                false,
                100,
                Event::Cancel(CloseReason::Admin)
            )
            .then,
            Decision::Reject(Rejection::OrderNotPending)
        );
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;
    use crate::domain::time::parse;

    fn pending(points_used: i64) -> OrderView {
        OrderView {
            status: OrderStatus::Pending,
            user_id: UserId(7),
            expires_at: parse("2026-11-26T12:00:00.000Z").unwrap(),
            payable_cents: 100,
            points_used,
        }
    }

    fn pay(trade_no: &str, amount_cents: i64) -> Command {
        Command::Callback(Callback {
            provider: ProviderName::Generic,
            trade_no: trade_no.into(),
            code: SUCCESS_CODE,
            amount_cents,
            provider_paid_at: None,
        })
    }

    fn before() -> NaiveDateTime {
        parse("2026-11-26T11:59:59.999Z").unwrap()
    }

    fn at_deadline() -> NaiveDateTime {
        parse("2026-11-26T12:00:00.000Z").unwrap()
    }

    #[test]
    fn a_success_pays_uses_the_coupon_and_queues_the_grant() {
        let s = step(Some(&pending(5)), before(), &pay("T1", 100), None).unwrap();
        let t = s.transition.unwrap();
        assert_eq!(
            (t.to, t.reason, t.takes_trade_no),
            (OrderStatus::Paid, None, true)
        );
        assert_eq!(t.coupon(), CouponStatus::Used);
        assert_eq!(s.effect, Some(EffectKind::Grant));
        assert_eq!(s.payment, Some(PaymentOutcome::Paid));
        assert_eq!(s.events, vec![EventKind::Paid]);
        assert_eq!(s.kind, OutcomeKind::Transitioned);
    }

    #[test]
    fn at_the_deadline_a_success_closes_then_is_a_late_payment() {
        let s = step(Some(&pending(5)), at_deadline(), &pay("T1", 100), None).unwrap();
        let t = s.transition.unwrap();
        assert_eq!(
            (t.to, t.reason),
            (OrderStatus::Cancelled, Some(CloseReason::Timeout))
        );
        assert!(!t.takes_trade_no);
        assert_eq!(t.coupon(), CouponStatus::Unused);
        assert_eq!(s.effect, Some(EffectKind::Refund));
        assert_eq!(s.payment, Some(PaymentOutcome::LatePayment));
        assert_eq!(s.events, vec![EventKind::Cancelled, EventKind::LatePayment]);
        assert_eq!(s.kind, OutcomeKind::LatePayment);
    }

    #[test]
    fn a_timeout_closes_only_when_due_and_refunds_only_spent_points() {
        let due = step(Some(&pending(0)), at_deadline(), &Command::Timeout, None).unwrap();
        assert_eq!(due.kind, OutcomeKind::Transitioned);
        assert_eq!(due.effect, None);
        assert_eq!(due.payment, None);
        let early = step(Some(&pending(5)), before(), &Command::Timeout, None).unwrap();
        assert_eq!(early.kind, OutcomeKind::NotDue);
        assert_eq!(early.transition, None);
        let closed = pending(5).after(&due);
        let again = step(Some(&closed), at_deadline(), &Command::Timeout, None).unwrap();
        assert_eq!(again, Step::nothing(OutcomeKind::Unchanged));
    }

    #[test]
    fn another_users_cancel_is_not_found_and_a_late_cancel_is_refused_after_closing() {
        let other = Command::Cancel(Canceller::User(UserId(8)));
        assert_eq!(
            step(Some(&pending(0)), before(), &other, None),
            Err(StepError::OrderNotFound)
        );
        assert_eq!(
            step(None, before(), &Command::Timeout, None),
            Err(StepError::OrderNotFound)
        );
        let late = step(
            Some(&pending(0)),
            at_deadline(),
            &Command::Cancel(Canceller::User(UserId(7))),
            None,
        )
        .unwrap();
        assert_eq!(late.transition.unwrap().reason, Some(CloseReason::Timeout));
        assert_eq!(late.rejection, Some(Rejection::OrderNotPending));
    }

    #[test]
    fn a_seen_trade_no_is_a_duplicate_or_a_conflict() {
        let seen = SeenTrade {
            same_order: true,
            code: SUCCESS_CODE,
            amount_cents: 100,
        };
        let dup = step(Some(&pending(0)), before(), &pay("T1", 100), Some(seen)).unwrap();
        assert_eq!(dup, Step::nothing(OutcomeKind::Duplicate));
        for other in [
            SeenTrade {
                same_order: false,
                ..seen
            },
            SeenTrade {
                amount_cents: 99,
                ..seen
            },
            SeenTrade { code: 2001, ..seen },
        ] {
            assert_eq!(
                step(Some(&pending(0)), before(), &pay("T1", 100), Some(other)),
                Err(StepError::TradeNoConflict)
            );
        }
    }

    #[test]
    fn a_failure_fails_a_pending_order_and_is_only_stored_for_a_closed_one() {
        let fail = Command::Callback(Callback {
            provider: ProviderName::Generic,
            trade_no: "F".into(),
            code: 2001,
            amount_cents: 100,
            provider_paid_at: None,
        });
        let s = step(Some(&pending(3)), before(), &fail, None).unwrap();
        let t = s.transition.unwrap();
        assert_eq!(
            (t.to, t.reason, t.takes_trade_no),
            (OrderStatus::Failed, Some(CloseReason::PaymentFailed), true)
        );
        assert_eq!(s.payment, Some(PaymentOutcome::Failed));
        assert_eq!(s.events, vec![EventKind::Failed]);
        let closed = pending(3).after(&s);
        let again = step(Some(&closed), before(), &fail, None).unwrap();
        assert_eq!(
            (again.kind, again.payment),
            (OutcomeKind::Unchanged, Some(PaymentOutcome::Ignored))
        );
        let double = step(
            Some(
                &pending(3)
                    .after(&step(Some(&pending(3)), before(), &pay("A", 100), None).unwrap()),
            ),
            before(),
            &pay("B", 100),
            None,
        )
        .unwrap();
        assert_eq!(double.kind, OutcomeKind::DoublePayment);
        assert_eq!(double.events, vec![EventKind::LatePayment]);
        assert_eq!(double.transition, None);
    }

    #[test]
    fn through_a_provider_only_a_success_moves_the_order_and_a_later_word_is_acknowledged() {
        let word = |code: i64, amount_cents: i64| {
            Command::Callback(Callback {
                provider: ProviderName::Alipay,
                trade_no: "2026120322001".into(),
                code,
                amount_cents,
                provider_paid_at: None,
            })
        };
        // A provider's close leaves the order pending: the payment is closed, not the order.
        let closed = step(
            Some(&pending(3)),
            before(),
            &word(PROVIDER_CLOSED_CODE, 100),
            None,
        )
        .unwrap();
        assert_eq!(closed.transition, None);
        assert_eq!(closed.payment, Some(PaymentOutcome::Ignored));
        assert_eq!(closed.kind, OutcomeKind::Unchanged);
        // Any later word on a recorded trade of the same order is a duplicate, whatever it
        // says; on another order's trade it is a conflict.
        let seen = SeenTrade {
            same_order: true,
            code: SUCCESS_CODE,
            amount_cents: 100,
        };
        for later in [word(PROVIDER_CLOSED_CODE, 100), word(SUCCESS_CODE, 90)] {
            assert_eq!(
                step(Some(&pending(3)), before(), &later, Some(seen)).unwrap(),
                Step::nothing(OutcomeKind::Duplicate)
            );
            let other = SeenTrade {
                same_order: false,
                ..seen
            };
            assert_eq!(
                step(Some(&pending(3)), before(), &later, Some(other)),
                Err(StepError::TradeNoConflict)
            );
        }
        // A provider's success pays, as the generic callback's does.
        let paid = step(Some(&pending(3)), before(), &word(SUCCESS_CODE, 100), None).unwrap();
        assert_eq!(paid.transition.unwrap().to, OrderStatus::Paid);
    }
}

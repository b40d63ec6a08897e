//! Order states and reasons, as stored and as shown.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    Paid,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] = [Self::Pending, Self::Paid, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Timeout,
    User,
    Admin,
    PaymentFailed,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::User => "user",
            Self::Admin => "admin",
            Self::PaymentFailed => "payment_failed",
        }
    }
}

/// Coupon states on a user's coupon.
pub mod coupon_status {
    pub const UNUSED: &str = "unused";
    pub const LOCKED: &str = "locked";
    pub const USED: &str = "used";
}

/// Kinds of points-ledger rows.
pub mod ledger_kind {
    pub const SPEND: &str = "spend";
    pub const REFUND: &str = "refund";
}

/// Kinds and states of outbox effects.
pub mod effect {
    pub const GRANT: &str = "grant";
    pub const REFUND: &str = "refund";
    pub const PENDING: &str = "pending";
    pub const DONE: &str = "done";
    pub const DEAD_LETTERED: &str = "dead_lettered";
}

/// A new opaque, unique, URL-safe order number: a UUIDv7 made from the order's own creation
/// time, so order numbers sort like `created_at` (newest-first pages are keyset pages on it).
pub fn new_order_no(created_at: &chrono::NaiveDateTime) -> String {
    let ms = super::time::unix_ms(created_at).max(0) as u64;
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    uuid::Uuid::new_v7(ts).simple().to_string()
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
        assert_eq!(x.len(), 32);
        assert!(x.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn statuses_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("nope"), None);
    }
}

/// What reaches an order: its timer, a payment callback, or a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Timeout,
    /// Callback code 100000, with the amount received.
    Success {
        amount_cents: i64,
    },
    /// Any other callback code.
    Failure,
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
        (_, Event::Failure) => Decision::RecordIgnored,
        (_, Event::Cancel(_)) => Decision::Reject(Rejection::OrderNotPending),
        (_, Event::Timeout) => Decision::NoChange,
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

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

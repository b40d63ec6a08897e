//! Every status, reason and kind the engine stores: one Rust enum each, stored as the same
//! snake_case text the API shows. A value read from the database that the code does not know
//! is a deserialisation error naming the column and the value — never a default.

use std::fmt;

/// Defines a fieldless enum stored and shown as text: `as_str`, `parse`, `ALL`, `Display`,
/// serde `Serialize`, and Diesel's `Text` mapping on every backend (through `str`/`String`,
/// so `MultiConnection` needs nothing more). `$column` names where it is stored, for errors.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident in $column:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, DB>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    DB,
                >>::from_sql(bytes)?;
                $name::parse(&text).ok_or_else(|| {
                    format!("{} holds {text:?}, which this engine does not know", $column).into()
                })
            }
        }
    };
}

text_enum! {
    /// An order's status (SPEC "Order").
    pub enum OrderStatus in "orders.status" {
        Pending = "pending",
        Paid = "paid",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// Why an order closed unpaid.
    pub enum CloseReason in "orders.close_reason" {
        Timeout = "timeout",
        User = "user",
        Admin = "admin",
        PaymentFailed = "payment_failed",
    }
}

text_enum! {
    /// A user coupon's state (expiry is not a state).
    pub enum CouponStatus in "user_coupons.status" {
        Unused = "unused",
        Locked = "locked",
        Used = "used",
    }
}

text_enum! {
    /// A points-ledger row's kind.
    pub enum LedgerKind in "points_ledger.kind" {
        Spend = "spend",
        Refund = "refund",
    }
}

text_enum! {
    /// What an outbox effect does (SPEC "Shape"): one variant per kind; the outbox
    /// (`db::outbox`) gives each its one apply function.
    pub enum EffectKind in "effects.kind" {
        /// A paid order's user gets each course and every chapter of it.
        Grant = "grant",
        /// A closed unpaid order's points go back, with a `refund` ledger row.
        Refund = "refund",
        /// Once an order leaves `pending`, each of its provider trades but the one that paid
        /// is closed at its provider.
        ProviderClose = "provider_close",
        /// Each late or double payment of the order that came through a provider is refunded
        /// through it.
        ProviderRefund = "provider_refund",
    }
}

text_enum! {
    /// A payment started with a provider (`payments.status`, SPEC "Payment providers").
    pub enum PaymentStatus in "payments.status" {
        /// Its trade is open at the provider.
        Started = "started",
        /// Its trade paid the order.
        Paid = "paid",
        /// Its trade is closed, expired or failed at the provider, or another trade paid the
        /// order.
        Closed = "closed",
    }
}

text_enum! {
    /// An outbox effect's state.
    pub enum EffectStatus in "effects.status" {
        Pending = "pending",
        Done = "done",
        DeadLettered = "dead_lettered",
    }
}

text_enum! {
    /// What a stored payment event did (`payment_events.outcome`).
    pub enum PaymentOutcome in "payment_events.outcome" {
        /// The success that paid the order.
        Paid = "paid",
        /// The failure code that failed the order.
        Failed = "failed",
        /// A success for a closed order: money to give back.
        LatePayment = "late_payment",
        /// A second success for a paid order: money to give back.
        DoublePayment = "double_payment",
        /// A failure code for an order that was no longer pending.
        Ignored = "ignored",
    }
}

text_enum! {
    /// Order events, as the Redis stream's `kind` field spells them.
    pub enum EventKind in "order_events.kind" {
        Placed = "placed",
        Paid = "paid",
        Failed = "failed",
        Cancelled = "cancelled",
        Granted = "granted",
        Refunded = "refunded",
        LatePayment = "late_payment",
        DeadLettered = "dead_lettered",
        /// The order's open provider trades were closed at their providers.
        ProviderClosed = "provider_closed",
        /// The order's late or double provider payments were refunded through the provider.
        ProviderRefunded = "provider_refunded",
    }
}

text_enum! {
    /// Who a payment came through (`payment_events.provider`, `payments.provider`): the
    /// generic signed callback or one of the three providers (SPEC "Payment providers").
    pub enum ProviderName in "payment_events.provider" {
        Generic = "generic",
        Alipay = "alipay",
        Wechatpay = "wechatpay",
        Stripe = "stripe",
    }
}

text_enum! {
    /// A schedule run's state (`schedule_runs.status`).
    pub enum RunStatus in "schedule_runs.status" {
        /// Claimed, its job under way (or its process died: then taken over once its lease
        /// passes).
        Running = "running",
        Ok = "ok",
        Failed = "failed",
    }
}

impl EffectKind {
    /// The event written when this effect is applied.
    pub fn done_event(self) -> EventKind {
        match self {
            EffectKind::Grant => EventKind::Granted,
            EffectKind::Refund => EventKind::Refunded,
            EffectKind::ProviderClose => EventKind::ProviderClosed,
            EffectKind::ProviderRefund => EventKind::ProviderRefunded,
        }
    }

    /// Whether applying it calls a payment provider (then it runs outside any database
    /// transaction, and one effect at a time).
    pub fn calls_provider(self) -> bool {
        matches!(self, EffectKind::ProviderClose | EffectKind::ProviderRefund)
    }
}

impl OrderStatus {
    /// The event written when an order enters this status.
    pub fn event(self) -> EventKind {
        match self {
            OrderStatus::Pending => EventKind::Placed,
            OrderStatus::Paid => EventKind::Paid,
            OrderStatus::Failed => EventKind::Failed,
            OrderStatus::Cancelled => EventKind::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            text: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for value in all {
                assert_eq!(parse(text(*value)), Some(*value));
            }
            assert_eq!(parse("nope"), None);
        }
        check(OrderStatus::ALL, OrderStatus::as_str, OrderStatus::parse);
        check(CloseReason::ALL, CloseReason::as_str, CloseReason::parse);
        check(CouponStatus::ALL, CouponStatus::as_str, CouponStatus::parse);
        check(LedgerKind::ALL, LedgerKind::as_str, LedgerKind::parse);
        check(EffectKind::ALL, EffectKind::as_str, EffectKind::parse);
        check(EffectStatus::ALL, EffectStatus::as_str, EffectStatus::parse);
        check(
            PaymentOutcome::ALL,
            PaymentOutcome::as_str,
            PaymentOutcome::parse,
        );
        check(EventKind::ALL, EventKind::as_str, EventKind::parse);
        check(RunStatus::ALL, RunStatus::as_str, RunStatus::parse);
        check(
            PaymentStatus::ALL,
            PaymentStatus::as_str,
            PaymentStatus::parse,
        );
        check(ProviderName::ALL, ProviderName::as_str, ProviderName::parse);
    }
}

//! Payment-provider simulators (issue 13): a local HTTP server per provider that holds its own
//! test keys (tests/fixtures/providers/), verifies the engine's signed requests, signs its
//! responses and notifications the way the real provider does, keeps the trades the engine
//! started, and can be told to fail calls. The story tests (tests/api/payments.rs) drive every
//! provider through [`Simulator`].

pub mod server;

pub mod alipay;
pub mod stripe;
pub mod wechatpay;

/// A call the engine makes to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Close,
    Refund,
    Query,
}

/// A trade as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTrade {
    /// The engine's order number (`out_trade_no`, `client_reference_id`).
    pub order_no: String,
    /// The provider's own trade id once paid (Alipay `trade_no`, WeChat `transaction_id`,
    /// Stripe `payment_intent`), else `None`.
    pub trade_no: Option<String>,
    /// The amount the engine started the trade for, in cents.
    pub amount_cents: i64,
    /// The provider-side expiry the engine asked for (Unix seconds), when it sent one.
    pub expires_at_unix: Option<i64>,
    /// The notify URL the engine sent, when the protocol carries one per trade.
    pub notify_url: Option<String>,
    /// `open`, `paid`, `closed`, `refunded`.
    pub state: &'static str,
}

/// A refund the simulator accepted: one per distinct refund number (a repeated number is the
/// same refund, answered again, not refunded twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRefund {
    pub trade_no: String,
    pub amount_cents: i64,
    /// The engine's refund number / idempotency key.
    pub refund_no: String,
}

/// One provider's simulator, as the story tests use it.
pub trait Simulator: Send + Sync {
    /// `alipay`, `wechatpay` or `stripe`.
    fn provider(&self) -> &'static str;

    /// The engine settings (`section.key`, value; e.g. `providers.alipay.app_id`) that turn the
    /// provider on and point the engine at this simulator.
    fn engine_settings(&self) -> Vec<(String, String)>;

    /// The trade the engine started for `order_no`, if any.
    fn trade(&self, order_no: &str) -> Option<SimTrade>;

    /// The payer pays the trade of `order_no` (`amount_cents` received; a real provider takes
    /// only the started amount, the tests also need others) and the provider notifies the
    /// engine at `engine_base` (`http://127.0.0.1:port`). Returns the engine's status and body.
    /// Works also for a trade the engine never started (the simulator makes one up).
    fn pay_and_notify(&self, engine_base: &str, order_no: &str, amount_cents: i64)
        -> (u16, String);

    /// The payer pays, and the notification is lost: only a query finds it.
    fn pay_silently(&self, order_no: &str, amount_cents: i64);

    /// The provider closes (expires, fails) the trade of `order_no` and notifies the engine.
    fn close_and_notify(&self, engine_base: &str, order_no: &str) -> (u16, String);

    /// Sends the last notification again, as the provider's retry would.
    fn renotify(&self, engine_base: &str) -> (u16, String);

    /// Sends a notification of a paid trade signed wrongly: `how` is one of `forged` (another
    /// key / secret), `tampered` (the body changed after signing), `stale` (a timestamp outside
    /// the tolerance; Alipay: a notify_time an hour old is not refused by Alipay's protocol, so
    /// its simulator sends a wrong `sign_type` instead), `wrong_app` (another app / merchant
    /// id). Returns the engine's status and body.
    fn notify_bad(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
        how: &str,
    ) -> (u16, String);

    /// Makes the next `n` calls of `op` answer HTTP 500.
    fn fail_next(&self, op: Op, n: usize);

    /// Calls of `op` the simulator answered successfully, for `order_no`.
    fn calls(&self, op: Op, order_no: &str) -> usize;

    /// Refunds made, one per distinct refund number.
    fn refunds(&self) -> Vec<SimRefund>;

    /// What the engine's success reply to a notification looks like (status and body), to
    /// assert on: Alipay `200 success`, WeChat Pay `204` empty, Stripe `200 {"received":true}`.
    fn success_reply(&self) -> (u16, String);
}

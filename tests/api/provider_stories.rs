//! Issue 13's stories, for each provider (Alipay, WeChat Pay, Stripe) on every backend, through
//! the provider's simulator (`sim::`), which speaks its protocol with test keys: start -> paid
//! -> granted; start -> deadline -> cancelled on time -> closed at the provider exactly once,
//! also through provider 500s; paid after the deadline -> acknowledged, late payment recorded,
//! refunded at the provider exactly once for the amount received; a lost notification found by
//! `reconcile_payments`; forged, tampered, stale, wrong-app and wrong-amount notifications
//! refused with nothing changed; duplicates and later words acknowledged; starting a payment's
//! refusals. The SPEC invariants after every story.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::sim::{Op, Simulator};

/// An engine with the simulator's provider on (fast effect retries; notify URLs on a base the
/// tests do not use: the simulators post to the engine's real address).
fn spawn(
    backend: Backend,
    sim: &dyn Simulator,
    extra: &[(&str, &str)],
    file: Option<&str>,
) -> Option<TestApp> {
    let mut settings = sim.engine_settings();
    for (key, value) in [
        ("providers.public_base_url", "https://pay.example.com"),
        ("effects.backoff_base_ms", "50"),
        ("effects.backoff_max_ms", "200"),
    ] {
        settings.push((key.to_string(), value.to_string()));
    }
    for (key, value) in extra {
        settings.retain(|(k, _)| k != key);
        settings.push((key.to_string(), value.to_string()));
    }
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestApp::spawn_with_file(backend, &pairs, file)
}

fn route_of(provider: &str) -> &'static str {
    match provider {
        "alipay" => "/api/payments/alipay/notify",
        "wechatpay" => "/api/payments/wechatpay/notify",
        _ => "/api/payments/stripe/webhook",
    }
}

/// A user with a pending order of one course (price `cents`): (token, order).
fn pending_order(app: &TestApp, cents: i64) -> (String, Value) {
    let (_, token) = app.user_with_token(100);
    let order = app.place_ok(&token, &[app.course(cents)], None, 0);
    (token, order)
}

fn no_of(order: &Value) -> String {
    order["order_no"].as_str().expect("order_no").to_string()
}

/// Starts a payment with the simulator's provider and asserts the 201 and the Payment's
/// shape; a pay URL served by the simulator (Alipay's page pay) is visited, as the payer's
/// browser would.
#[track_caller]
fn start_ok(app: &TestApp, sim: &dyn Simulator, token: &str, order: &Value) -> Value {
    let margin = app.settings.providers.expire_margin_secs as i64;
    start_ok_on(app, margin, sim, token, order)
}

/// [`start_ok`] on any engine (a process of its own), with its expiry margin.
#[track_caller]
fn start_ok_on(app: &Http, margin: i64, sim: &dyn Simulator, token: &str, order: &Value) -> Value {
    let no = no_of(order);
    let path = format!("/api/orders/{no}/payments");
    let body = json!({"provider": sim.provider()});
    let payment = app
        .as_user(token, "POST", &path, Some(body.clone()))
        .assert_status(201)
        .clone();
    assert_keys(
        &payment,
        &[
            "order_no",
            "provider",
            "status",
            "pay_url",
            "code_url",
            "provider_ref",
            "expires_at",
            "created_at",
        ],
    );
    assert_eq!(payment["order_no"], no.as_str());
    assert_eq!(payment["provider"], sim.provider());
    assert_eq!(payment["status"], "started");
    assert_eq!(payment["expires_at"], order["expires_at"]);
    match sim.provider() {
        "wechatpay" => {
            assert!(payment["code_url"].as_str().is_some(), "{payment}");
            assert_eq!(payment["pay_url"], Value::Null);
        }
        _ => {
            assert!(payment["pay_url"].as_str().is_some(), "{payment}");
            assert_eq!(payment["code_url"], Value::Null);
        }
    }
    if sim.provider() == "stripe" {
        assert!(payment["provider_ref"].as_str().is_some(), "{payment}");
    }
    // The same request again: the same payment, 200.
    let again = app
        .as_user(token, "POST", &path, Some(body))
        .assert_status(200)
        .clone();
    assert_eq!(again, payment);
    if let Some(url) = payment["pay_url"].as_str() {
        if url.starts_with("http://127.0.0.1") {
            let status = ureq::get(url)
                .call()
                .map(|r| r.status())
                .unwrap_or_else(|e| match e {
                    ureq::Error::Status(status, _) => status,
                    other => panic!("visiting {url}: {other}"),
                });
            assert_eq!(
                status, 200,
                "the simulator refused the signed pay URL {url}"
            );
        }
    }
    let trade = sim.trade(&no).expect("the simulator holds the trade");
    assert_eq!(trade.amount_cents, order["payable_cents"].as_i64().unwrap());
    if let Some(url) = &trade.notify_url {
        assert_eq!(
            url,
            &format!("https://pay.example.com{}", route_of(sim.provider()))
        );
    }
    if let Some(expires) = trade.expires_at_unix {
        // The provider's own expiry: the order's deadline less the margin.
        let deadline = ts(&order["expires_at"]).timestamp();
        assert_eq!(expires, deadline - margin, "provider-side expiry");
    }
    payment
}

#[track_caller]
fn assert_success_reply(sim: &dyn Simulator, (status, body): (u16, String)) {
    let (want_status, want_body) = sim.success_reply();
    assert_eq!(status, want_status, "reply body: {body}");
    if !want_body.is_empty() {
        let same = match (
            serde_json::from_str::<Value>(&body),
            serde_json::from_str::<Value>(&want_body),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => body == want_body,
        };
        assert!(same, "reply {body:?}, expected {want_body:?}");
    } else {
        assert!(body.is_empty(), "reply {body:?}");
    }
}

fn payments_of(app: &TestApp, no: &str) -> Vec<Value> {
    app.admin_order(no)["payments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The order's `kind` effect as admins see it (`Value::Null` when it has none).
fn effect_of(app: &Http, no: &str, kind: &str) -> Value {
    app.admin_order(no)["effects"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == kind).cloned())
        .unwrap_or_default()
}

/// Waits until the order's `kind` effect is `done`; returns it.
#[track_caller]
fn wait_effect_done(app: &Http, no: &str, kind: &str) -> Value {
    wait_for(
        &format!("order {no}'s {kind} effect to be done"),
        Duration::from_secs(30),
        || {
            let effect = effect_of(app, no, kind);
            if effect["status"] == "done" {
                Ok(effect)
            } else {
                Err(effect.to_string())
            }
        },
    )
}

/// The provider's trade number of the order's trade at the simulator.
#[track_caller]
fn trade_no_at(sim: &dyn Simulator, no: &str) -> String {
    sim.trade(no)
        .and_then(|t| t.trade_no)
        .expect("a trade number")
}

/// The refunds the simulator made of one trade.
fn refunds_of(sim: &dyn Simulator, trade_no: &str) -> Vec<crate::sim::SimRefund> {
    sim.refunds()
        .into_iter()
        .filter(|r| r.trade_no == trade_no)
        .collect()
}

fn late_payments(app: &TestApp) -> Vec<Value> {
    app.admin("GET", "/admin/late-payments", None)
        .assert_status(200)["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Four seconds to pay, the provider's expiry one second before.
const SHORT_DEADLINE: [(&str, &str); 2] = [
    ("orders.payment_timeout_secs", "4"),
    ("providers.expire_margin_secs", "1"),
];

// ----- the stories -----

/// start -> the provider notifies paid -> paid, granted; the Payment is `paid`; the same
/// notification again and a later word (a close) are acknowledged and change nothing.
fn paid_and_granted(backend: Backend, sim: &dyn Simulator) {
    let Some(app) = spawn(backend, sim, &[], None) else {
        return;
    };
    let (token, order) = pending_order(&app, 12_345);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    let payable = order["payable_cents"].as_i64().unwrap();
    assert_success_reply(sim, sim.pay_and_notify(&app.base, &no, payable));
    let paid = app.admin_order(&no);
    assert_eq!(paid["order"]["status"], "paid", "{paid}");
    let trade_no = trade_no_at(sim, &no);
    assert_eq!(paid["order"]["trade_no"], trade_no.as_str());
    wait_effect_done(&app, &no, "grant");
    let payments = payments_of(&app, &no);
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "paid");
    // The provider's retry, then a later word on the same trade: acknowledged, unchanged.
    assert_success_reply(sim, sim.renotify(&app.base));
    let after = app.admin_order(&no);
    assert_eq!(after["order"], paid["order"]);
    assert!(late_payments(&app).is_empty());
    crate::invariants::check(&app);
}

/// start -> the deadline passes -> cancelled on time; the trade is closed at the provider
/// exactly once, through two 500s; the Payment is `closed`.
fn deadline_closes_the_trade_once(backend: Backend, sim: &dyn Simulator) {
    let Some(app) = spawn(backend, sim, &SHORT_DEADLINE, None) else {
        return;
    };
    let (token, order) = pending_order(&app, 5_000);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    sim.fail_next(Op::Close, 2);
    let closed = app.wait_order_status(&no, "cancelled", Duration::from_secs(30));
    assert_eq!(closed["close_reason"], "timeout");
    let lateness = ts(&closed["closed_at"]) - ts(&closed["expires_at"]);
    assert!(
        lateness >= chrono::TimeDelta::zero() && lateness < chrono::TimeDelta::seconds(2),
        "closed {lateness} after the deadline"
    );
    let effect = wait_effect_done(&app, &no, "provider_close");
    assert_eq!(effect["attempts"], 3, "two 500s, then the close: {effect}");
    assert_eq!(
        sim.calls(Op::Close, &no),
        1,
        "closed at the provider exactly once"
    );
    let payments = payments_of(&app, &no);
    assert_eq!(payments[0]["status"], "closed", "{payments:?}");
    crate::invariants::check(&app);
}

/// Paid at the provider after the deadline -> acknowledged, the late payment recorded with its
/// provider, refunded at the provider exactly once (through a 500) for the amount received;
/// the provider's repeat and a second word change nothing.
fn late_payment_is_refunded_once(backend: Backend, sim: &dyn Simulator) {
    let Some(app) = spawn(backend, sim, &SHORT_DEADLINE, None) else {
        return;
    };
    let (token, order) = pending_order(&app, 7_000);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    app.wait_order_status(&no, "cancelled", Duration::from_secs(30));
    wait_effect_done(&app, &no, "provider_close");
    sim.fail_next(Op::Refund, 1);
    // The payer pays anyway (the provider had taken it just before the close, say), with a
    // different amount than the order's: a late payment is acknowledged whatever the amount.
    assert_success_reply(sim, sim.pay_and_notify(&app.base, &no, 6_999));
    let trade_no = trade_no_at(sim, &no);
    let view = app.admin_order(&no);
    assert_eq!(view["order"]["status"], "cancelled");
    let refund = wait_effect_done(&app, &no, "provider_refund");
    assert_eq!(refund["attempts"], 2, "a 500, then the refund: {refund}");
    let late = late_payments(&app);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["order_no"], no.as_str());
    assert_eq!(late[0]["trade_no"], trade_no.as_str());
    assert_eq!(late[0]["amount_cents"], 6_999);
    assert_eq!(late[0]["reason"], "late_payment");
    assert_eq!(late[0]["provider"], sim.provider());
    assert_eq!(late[0]["refund"]["status"], "done", "{}", late[0]);
    assert_success_reply(sim, sim.renotify(&app.base));
    let refunds = refunds_of(sim, &trade_no);
    assert_eq!(refunds.len(), 1, "refunded exactly once: {refunds:?}");
    assert_eq!(refunds[0].amount_cents, 6_999);
    assert_eq!(late_payments(&app).len(), 1);
    crate::invariants::check(&app);
}

/// A notification that never came: `reconcile_payments` asks the provider and pays the order;
/// a late payment whose notification was lost is found and refunded the same way.
fn lost_notification_is_found(backend: Backend, sim: &dyn Simulator) {
    let schedules = "[[schedules]]\nname = \"reconcile\"\njob = \"reconcile_payments\"\n\
                     every_secs = 1\nmin_age_secs = 0\n";
    let Some(app) = spawn(backend, sim, &[], Some(schedules)) else {
        return;
    };
    let (token, order) = pending_order(&app, 4_200);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    sim.pay_silently(&no, 4_200);
    let paid = app.wait_order_status(&no, "paid", Duration::from_secs(30));
    let trade_no = trade_no_at(sim, &no);
    assert_eq!(paid["trade_no"], trade_no.as_str());
    wait_effect_done(&app, &no, "grant");

    // Another order, cancelled by its user, whose trade the provider will not close (its
    // provider_close fails every attempt and is dead-lettered): the payer pays it anyway and
    // nobody tells us. The query finds the late payment, and it is refunded; then an admin
    // retries the close, which now goes through.
    let (token, order) = pending_order(&app, 3_100);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    let max_attempts = app.settings.effects.max_attempts as usize;
    sim.fail_next(Op::Close, max_attempts);
    app.as_user(&token, "POST", &format!("/api/orders/{no}/cancel"), None)
        .assert_status(200);
    let dead = wait_for(
        "the close to be dead-lettered",
        Duration::from_secs(60),
        || {
            let effects = app
                .admin("GET", "/admin/effects?status=dead_lettered", None)
                .assert_status(200)["data"]
                .clone();
            effects
                .as_array()
                .and_then(|e| {
                    e.iter()
                        .find(|e| {
                            e["order"]["order_no"] == no.as_str() && e["kind"] == "provider_close"
                        })
                        .cloned()
                })
                .ok_or_else(|| effects.to_string())
        },
    );
    sim.pay_silently(&no, 3_100);
    wait_effect_done(&app, &no, "provider_refund");
    let late = late_payments(&app);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["order_no"], no.as_str());
    let trade_no = trade_no_at(sim, &no);
    let refunds = refunds_of(sim, &trade_no);
    assert_eq!(refunds.len(), 1, "refunded exactly once: {refunds:?}");
    app.admin(
        "POST",
        &format!("/admin/effects/{}/retry", dead["id"]),
        None,
    )
    .assert_status(200);
    wait_effect_done(&app, &no, "provider_close");
    assert_eq!(
        late_payments(&app).len(),
        1,
        "the close's answer changed nothing"
    );
    crate::invariants::check(&app);
}

/// Forged, tampered, stale and wrong-app notifications are refused (401) and a wrong amount is
/// 422: the order stays pending, nothing is recorded. An unknown order is 404.
fn bad_notifications_change_nothing(backend: Backend, sim: &dyn Simulator) {
    let Some(app) = spawn(backend, sim, &[], None) else {
        return;
    };
    let (token, order) = pending_order(&app, 2_000);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    let before = app.admin_order(&no);
    for how in ["forged", "tampered", "stale", "wrong_app"] {
        let (status, body) = sim.notify_bad(&app.base, &no, 2_000, how);
        // Stripe has no app id: its "wrong app" is an event that names no order, authentic
        // but unusable (400).
        let expected = if how == "wrong_app" && sim.provider() == "stripe" {
            400
        } else {
            401
        };
        assert_eq!(status, expected, "{how}: {body}");
        assert_eq!(app.admin_order(&no)["order"], before["order"], "{how}");
    }
    let (status, body) = sim.pay_and_notify(&app.base, &no, 1_999);
    assert_eq!(status, 422, "a wrong amount: {body}");
    let after = app.admin_order(&no);
    assert_eq!(after["order"]["status"], "pending");
    assert_eq!(after["payments"], before["payments"]);
    assert!(late_payments(&app).is_empty());
    let (status, body) = sim.pay_and_notify(&app.base, "nosuchorder1234", 100);
    assert_eq!(status, 404, "an unknown order: {body}");
    crate::invariants::check(&app);
}

/// The provider's close of a trade marks that Payment `closed` and leaves the order pending
/// (the student may pay another way); then a payment through another trade pays it.
fn provider_close_leaves_the_order_pending(backend: Backend, sim: &dyn Simulator) {
    let Some(app) = spawn(backend, sim, &[], None) else {
        return;
    };
    let (token, order) = pending_order(&app, 3_000);
    let no = no_of(&order);
    start_ok(&app, sim, &token, &order);
    assert_success_reply(sim, sim.close_and_notify(&app.base, &no));
    let view = app.admin_order(&no);
    assert_eq!(view["order"]["status"], "pending", "{view}");
    assert_eq!(view["payments"][0]["status"], "closed", "{view}");
    // The deadline still closes it; here the generic callback pays it instead.
    app.pay(&order);
    assert_eq!(app.admin_order(&no)["order"]["status"], "paid");
    wait_effect_done(&app, &no, "provider_close");
    crate::invariants::check(&app);
}

/// Starting a payment: another user's order is 404, a paid one 409 `order_not_pending`, one
/// with less than the margin left 409 `payment_window_closed`; a provider that fails is 503
/// and nothing is stored (Alipay makes no call to start).
fn start_refusals(backend: Backend, sim: &dyn Simulator) {
    let Some(app) = spawn(
        backend,
        sim,
        &[("providers.expire_margin_secs", "3000")],
        None,
    ) else {
        return;
    };
    let (token, order) = pending_order(&app, 1_000);
    let no = no_of(&order);
    let path = format!("/api/orders/{no}/payments");
    let body = json!({"provider": sim.provider()});
    // 30 minutes to pay, 50 minutes of margin: the window is closed.
    app.as_user(&token, "POST", &path, Some(body.clone()))
        .assert_error(409, "payment_window_closed");
    let (_, other) = app.user_with_token(0);
    app.as_user(&other, "POST", &path, Some(body.clone()))
        .assert_error(404, "order_not_found");
    app.pay(&order);
    app.as_user(&token, "POST", &path, Some(body.clone()))
        .assert_error(409, "order_not_pending");
    assert!(payments_of(&app, &no).is_empty());
    drop(app);

    let Some(app) = spawn(backend, sim, &[], None) else {
        return;
    };
    let (token, order) = pending_order(&app, 1_000);
    let no = no_of(&order);
    if sim.provider() != "alipay" {
        sim.fail_next(Op::Start, 1);
        let path = format!("/api/orders/{no}/payments");
        app.as_user(&token, "POST", &path, Some(body))
            .assert_error(503, "unavailable");
        assert!(payments_of(&app, &no).is_empty());
    }
    start_ok(&app, sim, &token, &order);
    crate::invariants::check(&app);
}

/// The engine is SIGKILLed while an order's provider_close waits for its retry (the first
/// call failed); the next process replays it, and the trade is closed at the provider once.
fn provider_effects_are_replayed_after_a_kill(backend: Backend, sim: &dyn Simulator) {
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let mut settings = sim.engine_settings();
    for (key, value) in [
        ("providers.public_base_url", "https://pay.example.com"),
        ("orders.payment_timeout_secs", "4"),
        ("providers.expire_margin_secs", "1"),
        // A failed close waits for the restart, not for a retry.
        ("effects.backoff_base_ms", "600000"),
        ("effects.backoff_max_ms", "600000"),
    ] {
        settings.push((key.to_string(), value.to_string()));
    }
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut first = crate::process::EngineProcess::start(&db, &pairs);
    let (_, token) = first.user_with_token(100);
    let order = first.place_ok(&token, &[first.course(5_000)], None, 0);
    let no = no_of(&order);
    start_ok_on(&first, 1, sim, &token, &order);
    sim.fail_next(Op::Close, 1);
    first.wait_order_status(&no, "cancelled", Duration::from_secs(30));
    wait_for("the first close to fail", Duration::from_secs(30), || {
        let close = effect_of(&first, &no, "provider_close");
        if close["attempts"] == 1 && close["status"] == "pending" {
            Ok(())
        } else {
            Err(close.to_string())
        }
    });
    first.kill();
    let second = crate::process::EngineProcess::start(&db, &pairs);
    wait_effect_done(&second, &no, "provider_close");
    assert_eq!(
        sim.calls(Op::Close, &no),
        1,
        "closed at the provider exactly once"
    );
    assert_eq!(second.admin_order(&no)["payments"][0]["status"], "closed");
    crate::invariants::check_db(&mut db.connect(), &format!("{backend:?}"));
}

/// One test per story, provider and backend: `provider::story::{sqlite, postgres, mysql}`.
macro_rules! stories {
    ($provider:ident, $sim:ty, [$($story:ident),* $(,)?]) => {
        mod $provider {
            $(
                mod $story {
                    use crate::helpers::Backend;
                    #[test]
                    fn sqlite() {
                        super::super::$story(Backend::Sqlite, &<$sim>::start());
                    }
                    #[test]
                    fn postgres() {
                        super::super::$story(Backend::Postgres, &<$sim>::start());
                    }
                    #[cfg(feature = "mysql")]
                    #[test]
                    fn mysql() {
                        super::super::$story(Backend::Mysql, &<$sim>::start());
                    }
                }
            )*
        }
    };
}

stories!(
    alipay,
    crate::sim::alipay::AlipaySim,
    [
        paid_and_granted,
        deadline_closes_the_trade_once,
        late_payment_is_refunded_once,
        lost_notification_is_found,
        bad_notifications_change_nothing,
        provider_close_leaves_the_order_pending,
        start_refusals,
        provider_effects_are_replayed_after_a_kill,
    ]
);

stories!(
    wechatpay,
    crate::sim::wechatpay::WechatpaySim,
    [
        paid_and_granted,
        deadline_closes_the_trade_once,
        late_payment_is_refunded_once,
        lost_notification_is_found,
        bad_notifications_change_nothing,
        provider_close_leaves_the_order_pending,
        start_refusals,
        provider_effects_are_replayed_after_a_kill,
    ]
);

stories!(
    stripe,
    crate::sim::stripe::StripeSim,
    [
        paid_and_granted,
        deadline_closes_the_trade_once,
        late_payment_is_refunded_once,
        lost_notification_is_found,
        bad_notifications_change_nothing,
        provider_close_leaves_the_order_pending,
        start_refusals,
        provider_effects_are_replayed_after_a_kill,
    ]
);

/// `order-engine reconcile` (the real binary, once, by hand) finds a payment whose
/// notification was lost and pays the order; the running engine grants it.
#[test]
fn reconcile_once_from_the_command_line() {
    let sim = crate::sim::stripe::StripeSim::start();
    let app = spawn(Backend::Sqlite, &sim, &[], None).expect("SQLite");
    let (token, order) = pending_order(&app, 2_500);
    let no = no_of(&order);
    start_ok(&app, &sim, &token, &order);
    sim.pay_silently(&no, 2_500);
    let order_engine::config::DatabaseUrl::Sqlite(path) = app.database_url() else {
        panic!("a SQLite test database");
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-engine"));
    command
        .args(["reconcile", "--min-age-secs", "0"])
        .env_clear()
        .env("RUST_LOG", "warn")
        .env(
            "ORDER_ENGINE__DATABASE__URL",
            format!("sqlite://{}", path.display()),
        )
        .env(
            "ORDER_ENGINE__PROVIDERS__PUBLIC_BASE_URL",
            "https://pay.example.com",
        );
    for (key, value) in sim.engine_settings() {
        let name = key.to_uppercase().replace('.', "__");
        command.env(format!("ORDER_ENGINE__{name}"), value);
    }
    let out = command.output().expect("run order-engine reconcile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("asked about 1 trades: 1 applied"),
        "printed {stdout:?}"
    );
    let paid = app.wait_order_status(&no, "paid", Duration::from_secs(10));
    assert_eq!(
        paid["trade_no"].as_str(),
        sim.trade(&no).and_then(|t| t.trade_no).as_deref()
    );
    // The grant was queued by another process: the engine's sweep picks it up.
    wait_effect_done(&app, &no, "grant");
    crate::invariants::check(&app);
}

//! `GET /metrics` (SPEC "Operations"): what a Prometheus server scraping the engine sees while
//! orders are placed, paid, cancelled and timed out, parsed from the text format.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

/// One scrape: every sample line as `name{labels}` -> value.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of one series, named as in the text (`name{a="x",b="y"}`, labels in the
    /// order the engine declares them).
    #[track_caller]
    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }
}

fn scrape_with(http: &Http, headers: &[(&str, &str)]) -> Scrape {
    let resp = http.request("GET", "/metrics", headers, None);
    assert_eq!(resp.status, 200, "{}", resp.text);
    let content_type = resp.header("Content-Type").unwrap_or_default().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let samples = resp
        .text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            (series.to_string(), value)
        })
        .collect();
    Scrape {
        text: resp.text,
        samples,
    }
}

fn scrape(http: &Http) -> Scrape {
    scrape_with(http, &[])
}

/// Waits until a scrape satisfies `ok`.
#[track_caller]
fn scrape_until(http: &Http, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_for(what, Duration::from_secs(30), || {
        let s = scrape(http);
        if ok(&s) {
            Ok(s)
        } else {
            Err(s.text)
        }
    })
}

const PAID: &str = r#"order_engine_transitions_total{to="paid",reason="payment"}"#;
const TIMED_OUT: &str = r#"order_engine_transitions_total{to="cancelled",reason="timeout"}"#;
const BY_USER: &str = r#"order_engine_transitions_total{to="cancelled",reason="user"}"#;
const LATENESS_COUNT: &str = "order_engine_timeout_lateness_seconds_count";
const GRANTS_DONE: &str = r#"order_engine_effects_total{kind="grant",result="done"}"#;
const REFUNDS_DONE: &str = r#"order_engine_effects_total{kind="refund",result="done"}"#;

on_both_backends! {
    /// A fresh engine shows every family at zero; one order paid, one cancelled by its user
    /// and one timed out are counted once each, with the timeout's lateness observed, the
    /// callbacks by result, the effects done, and the HTTP requests by route pattern — never
    /// by raw path.
    fn metrics_count_the_lifecycle(app) with [("orders.payment_timeout_secs", "3")] {
        let fresh = scrape(app);
        for series in [
            "order_engine_orders_placed_total",
            PAID,
            TIMED_OUT,
            BY_USER,
            r#"order_engine_transitions_total{to="cancelled",reason="admin"}"#,
            r#"order_engine_transitions_total{to="failed",reason="payment_failed"}"#,
            LATENESS_COUNT,
            "order_engine_pending_orders",
            "order_engine_live_actors",
            "order_engine_armed_timers",
            "order_engine_actor_restarts_total",
            GRANTS_DONE,
            r#"order_engine_effects_total{kind="refund",result="dead_lettered"}"#,
            r#"order_engine_effects_pending{kind="grant"}"#,
            r#"order_engine_callbacks_total{provider="generic",result="applied"}"#,
            r#"order_engine_callbacks_total{provider="generic",result="rejected"}"#,
            "order_engine_events_unpublished",
            r#"order_engine_webhook_deliveries_total{result="done"}"#,
        ] {
            assert_eq!(fresh.value(series), 0.0, "{series}");
        }
        assert!(
            fresh.text.contains(r#"order_engine_timeout_lateness_seconds_bucket{le="0.0005"}"#),
            "{}",
            fresh.text
        );

        let (_, token) = app.user_with_token(100);
        let paid = app
            .place(&token, json!({"course_ids": [app.course(500)], "points": 10}))
            .assert_status(201)
            .clone();
        let paid_no = paid["order_no"].as_str().unwrap().to_string();
        let pending = scrape(app);
        assert_eq!(pending.value("order_engine_orders_placed_total"), 1.0);
        assert_eq!(pending.value("order_engine_pending_orders"), 1.0);
        assert_eq!(pending.value("order_engine_live_actors"), 1.0);
        assert_eq!(pending.value("order_engine_armed_timers"), 1.0);

        let trade = trade_no();
        app.callback(&paid_no, &trade, 100000, 490).assert_status(200);
        app.callback(&paid_no, &trade, 100000, 490).assert_status(200);
        let forged = callback_body(&paid_no, &trade_no(), 100000, 490);
        app.callback_raw(&forged, &[("X-Signature", "t=1,v1=00")])
            .assert_error(401, "invalid_signature");

        let cancelled = app
            .place(&token, json!({"course_ids": [app.course(300)], "points": 5}))
            .assert_status(201)
            .clone();
        let cancelled_no = cancelled["order_no"].as_str().unwrap().to_string();
        app.as_user(&token, "POST", &format!("/api/orders/{cancelled_no}/cancel"), None)
            .assert_status(200);
        app.get_order(&token, &cancelled_no).assert_status(200);

        let timed_out = app
            .place(&token, json!({"course_ids": [app.course(200)], "points": 7}))
            .assert_status(201)
            .clone();
        let timed_out_no = timed_out["order_no"].as_str().unwrap().to_string();
        app.request("GET", "/no/such/route", &[], None).assert_error(404, "route_not_found");
        app.raw_request("BREW", "/no/such/pot", &[], b"");

        let settled = scrape_until(app, "the timeout and both refunds", |s| {
            s.value(LATENESS_COUNT) == 1.0 && s.value(REFUNDS_DONE) == 2.0
        });
        assert_eq!(settled.value("order_engine_orders_placed_total"), 3.0);
        assert_eq!(settled.value(PAID), 1.0);
        assert_eq!(settled.value(BY_USER), 1.0);
        assert_eq!(settled.value(TIMED_OUT), 1.0);
        let lateness = settled.value("order_engine_timeout_lateness_seconds_sum");
        let order = app.get_order(&token, &timed_out_no).assert_status(200).clone();
        let honest = (ts(&order["closed_at"]) - ts(&order["expires_at"])).num_milliseconds();
        assert!(
            (lateness * 1000.0 - honest as f64).abs() < 1.0,
            "lateness {lateness} s, the order says {honest} ms"
        );
        let callbacks = |result: &str| {
            settled.value(&format!(
                r#"order_engine_callbacks_total{{provider="generic",result="{result}"}}"#
            ))
        };
        assert_eq!(
            (callbacks("applied"), callbacks("duplicate"), callbacks("rejected"), callbacks("late")),
            (1.0, 1.0, 1.0, 0.0)
        );
        let settled = scrape_until(app, "the grant", |s| s.value(GRANTS_DONE) == 1.0);
        assert_eq!(settled.value(r#"order_engine_effects_pending{kind="grant"}"#), 0.0);
        assert_eq!(settled.value(r#"order_engine_effects_pending{kind="refund"}"#), 0.0);
        assert_eq!(settled.value("order_engine_pending_orders"), 0.0);
        assert_eq!(settled.value("order_engine_live_actors"), 0.0);
        assert_eq!(settled.value("order_engine_armed_timers"), 0.0);

        let http = |method: &str, route: &str, status: u16| {
            settled.value(&format!(
                r#"http_server_request_duration_seconds_count{{method="{method}",route="{route}",status="{status}"}}"#
            ))
        };
        assert_eq!(http("POST", "/api/orders", 201), 3.0);
        assert_eq!(http("GET", "/api/orders/{order_no}", 200), 2.0);
        assert_eq!(http("POST", "/api/orders/{order_no}/cancel", 200), 1.0);
        assert_eq!(http("POST", "/api/payments/callback", 200), 2.0);
        assert_eq!(http("POST", "/api/payments/callback", 401), 1.0);
        assert_eq!(http("GET", "unmatched", 404), 1.0);
        assert!(!settled.text.contains("BREW"), "{}", settled.text);
        assert!(settled.text.contains(r#"method="_OTHER",route="unmatched""#), "{}", settled.text);
        for no in [&paid_no, &cancelled_no, &timed_out_no] {
            assert!(!settled.text.contains(no.as_str()), "{no} in a label:\n{}", settled.text);
        }
        assert!(!settled.text.contains("/no/such/route"), "{}", settled.text);
    }
}

/// With `metrics.token` set, a scrape needs that Bearer token: none, a wrong one or the admin
/// token get 401 in the error envelope.
#[test]
fn metrics_token_guards_the_scrape() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("metrics.token", "scrape-secret")])
        .expect("SQLite is always available");
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Bearer test-admin-token")],
    ] {
        let resp = app.request("GET", "/metrics", &headers, None);
        resp.assert_error(401, "unauthenticated");
        assert!(resp.header("WWW-Authenticate").is_some(), "{headers:?}");
    }
    let ok = scrape_with(&app, &[("Authorization", "Bearer scrape-secret")]);
    assert_eq!(ok.value("order_engine_orders_placed_total"), 0.0);
    crate::invariants::check(&app);
}

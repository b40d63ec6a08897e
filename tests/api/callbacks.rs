//! The payment provider's callback: signatures, bodies, the rules by order state, duplicates,
//! conflicts, late and double payments, a duplicate storm and the race against the deadline.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// A user (500 points) with a pending order for one two-chapter course, using 200 points.
struct Pending {
    user_id: i64,
    token: String,
    order: Value,
}

impl Pending {
    fn new(app: &TestApp) -> Pending {
        let (user_id, token) = app.user_with_token(500);
        let order = app.place_ok(&token, &[app.course(2_000)], None, 200);
        Pending {
            user_id,
            token,
            order,
        }
    }

    fn no(&self) -> &str {
        self.order["order_no"].as_str().unwrap()
    }

    fn payable(&self) -> i64 {
        self.order["payable_cents"].as_i64().unwrap()
    }

    /// Everything a callback could change: the stored order and its effects, the user as the
    /// user and as an admin sees them, and the late payments.
    fn snapshot(&self, app: &TestApp) -> Value {
        let view = app.admin_order(self.no());
        json!({
            "order": view["order"],
            "effects": view["effects"],
            "me": app.me(&self.token),
            "user": app.admin_user(self.user_id),
            "late": late_payments(app),
        })
    }
}

fn late_payments(app: &TestApp) -> Value {
    app.admin("GET", "/admin/late-payments", None)
        .assert_status(200)["data"]
        .clone()
}

/// The late-payment records of one trade number.
fn late_of(app: &TestApp, trade: &str) -> Vec<Value> {
    late_payments(app)
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["trade_no"] == trade)
        .cloned()
        .collect()
}

/// What a signature case sends: its name, the body and the headers.
type SignatureCase<'a> = (&'a str, Vec<u8>, Vec<(&'a str, String)>);

#[track_caller]
fn assert_success(resp: &Resp) {
    assert_eq!(resp.assert_status(200), &json!({"result": "success"}));
}

on_both_backends! {
    /// Any signature failure is 401 invalid_signature and changes nothing.
    fn bad_signatures_change_nothing(app) {
        let p = Pending::new(app);
        let before = p.snapshot(app);
        let body = callback_body(p.no(), &trade_no(), SUCCESS, p.payable());
        let now = chrono::Utc::now().timestamp();
        let valid = signature_at(&body, now);
        let mut altered = body.clone();
        let at = altered.iter().position(|b| *b == b'T').expect("a T in the body");
        altered[at] = b'U';
        let wrong_secret = order_engine::http::signature::sign(&body, b"not-the-secret", now);
        let only_sig = valid.split_once(',').unwrap().1.to_string();
        let mut cases: Vec<SignatureCase> = vec![
            ("missing header", body.clone(), vec![]),
            ("repeated header", body.clone(),
                vec![("X-Signature", valid.clone()), ("X-Signature", valid.clone())]),
            ("wrong secret", body.clone(), vec![("X-Signature", wrong_secret)]),
            ("body altered by one byte", altered, vec![("X-Signature", valid.clone())]),
            ("stale: t = now - 301", body.clone(),
                vec![("X-Signature", signature_at(&body, now - 301))]),
            // The server reads its clock after this test did, so a timestamp ahead of it by
            // 301 s comes inside the window once a second boundary passes before the request
            // is checked; 5 s of margin covers the requests before this one (as in hostile.rs).
            // The exact boundary, ±301 s against a fixed clock, is src/http/signature.rs's test.
            ("future: t = now + 305", body.clone(),
                vec![("X-Signature", signature_at(&body, now + 305))]),
            ("no timestamp", body.clone(), vec![("X-Signature", only_sig.clone())]),
            ("no v1", body.clone(), vec![("X-Signature", format!("t={now}"))]),
            ("bad timestamp", body.clone(), vec![("X-Signature", format!("t=abc,{only_sig}"))]),
            ("negative timestamp", body.clone(), vec![("X-Signature", format!("t=-{now},{only_sig}"))]),
            ("v1 not hex", body.clone(), vec![("X-Signature", format!("t={now},v1=zz"))]),
            ("garbage", body.clone(), vec![("X-Signature", "garbage".to_string())]),
            ("empty", body.clone(), vec![("X-Signature", String::new())]),
            ("unsigned malformed JSON", b"{\"order_no\":".to_vec(), vec![]),
        ];
        let big = vec![b' '; 65_537];
        let big_signature = signature(&big);
        cases.push(("over max_body_bytes, signed", big.clone(), vec![("X-Signature", big_signature)]));
        cases.push(("over max_body_bytes, unsigned", big, vec![]));
        for (what, body, headers) in &cases {
            let expected = if what.starts_with("over") {
                (413, "payload_too_large")
            } else {
                (401, "invalid_signature")
            };
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let resp = app.callback_raw(body, &headers);
            assert_eq!(resp.status, expected.0, "{what}: {}", resp.text);
            assert_eq!(resp.error_code(), expected.1, "{what}: {}", resp.text);
        }
        assert_eq!(p.snapshot(app), before);
        // The same body with its valid signature pays.
        assert_success(&app.callback_raw(&body, &[("X-Signature", &valid)]));
        assert_eq!(app.admin_order(p.no())["order"]["status"], "paid");
    }
}

on_both_backends! {
    /// A signed body that is not a valid callback is 400 invalid_request and changes nothing.
    fn bad_bodies_are_400(app) {
        let p = Pending::new(app);
        let before = p.snapshot(app);
        let no = p.no();
        let amount = p.payable();
        let long = "x".repeat(65);
        let bodies: Vec<(&str, String)> = vec![
            ("malformed JSON", format!("{{\"order_no\":\"{no}\",")),
            ("not an object", "[1,2]".into()),
            ("empty", String::new()),
            ("missing trade_no", json!({"order_no": no, "code": SUCCESS, "amount_cents": amount}).to_string()),
            ("missing order_no", json!({"trade_no": "t1", "code": SUCCESS, "amount_cents": amount}).to_string()),
            ("missing code", json!({"order_no": no, "trade_no": "t1", "amount_cents": amount}).to_string()),
            ("missing amount", json!({"order_no": no, "trade_no": "t1", "code": SUCCESS}).to_string()),
            ("trade_no of 65 chars", json!({"order_no": no, "trade_no": long, "code": SUCCESS, "amount_cents": amount}).to_string()),
            ("empty trade_no", json!({"order_no": no, "trade_no": "", "code": SUCCESS, "amount_cents": amount}).to_string()),
            ("amount as a string", json!({"order_no": no, "trade_no": "t1", "code": SUCCESS, "amount_cents": amount.to_string()}).to_string()),
            ("code as a string", json!({"order_no": no, "trade_no": "t1", "code": "100000", "amount_cents": amount}).to_string()),
            ("trade_no as a number", json!({"order_no": no, "trade_no": 7, "code": SUCCESS, "amount_cents": amount}).to_string()),
            ("fractional amount", json!({"order_no": no, "trade_no": "t1", "code": SUCCESS, "amount_cents": 1.5}).to_string()),
            ("bad paid_at", json!({"order_no": no, "trade_no": "t1", "code": SUCCESS, "amount_cents": amount, "paid_at": "yesterday"}).to_string()),
            ("unknown field", json!({"order_no": no, "trade_no": "t1", "code": SUCCESS, "amount_cents": amount, "tip": 1}).to_string()),
        ];
        for (what, body) in &bodies {
            let body = body.as_bytes();
            let resp = app.callback_raw(body, &[("X-Signature", &signature(body))]);
            assert_eq!((resp.status, resp.error_code()), (400, "invalid_request"), "{what}: {}", resp.text);
        }
        assert_eq!(p.snapshot(app), before);
        // 64 characters is a valid trade_no.
        assert_success(&app.callback(no, &"y".repeat(64), SUCCESS, amount));
        assert_eq!(app.admin_order(no)["order"]["trade_no"], "y".repeat(64));
    }
}

on_both_backends! {
    /// A `paid_at` outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z after its offset,
    /// or with a 60th second, is 400 invalid_request and changes nothing, for a pending order
    /// (not paid) and a cancelled one (no late payment kept). The edges of the range are kept.
    fn out_of_range_paid_at_is_400(app) {
        let pending = Pending::new(app);
        let cancelled = Pending::new(app);
        app.admin("POST", &format!("/admin/orders/{}/cancel", cancelled.no()), None)
            .assert_status(200);
        app.wait_effects_done(cancelled.no());
        let before = (pending.snapshot(app), cancelled.snapshot(app));
        for paid_at in OUT_OF_RANGE_TIMESTAMPS {
            for order in [&pending, &cancelled] {
                let body = json!({"order_no": order.no(), "trade_no": trade_no(), "code": SUCCESS,
                                  "amount_cents": order.payable(), "paid_at": paid_at})
                    .to_string();
                let body = body.as_bytes();
                let resp = app.callback_raw(body, &[("X-Signature", &signature(body))]);
                resp.assert_error(400, "invalid_request");
                assert_keys(&resp.json["error"], &["code", "message"]);
            }
        }
        assert_eq!((pending.snapshot(app), cancelled.snapshot(app)), before);

        // The last stored millisecond of 9999 (sub-millisecond digits are truncated first) and
        // the epoch itself are accepted.
        let late = trade_no();
        let body = json!({"order_no": cancelled.no(), "trade_no": late, "code": SUCCESS,
                          "amount_cents": 1, "paid_at": "9999-12-31T23:59:59.9999Z"})
            .to_string();
        let body = body.as_bytes();
        assert_success(&app.callback_raw(body, &[("X-Signature", &signature(body))]));
        let records = late_of(app, &late);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["provider_paid_at"], "9999-12-31T23:59:59.999Z");
        let body = json!({"order_no": pending.no(), "trade_no": trade_no(), "code": SUCCESS,
                          "amount_cents": pending.payable(), "paid_at": "1970-01-01T00:00:00Z"})
            .to_string();
        let body = body.as_bytes();
        assert_success(&app.callback_raw(body, &[("X-Signature", &signature(body))]));
        assert_eq!(app.admin_order(pending.no())["order"]["status"], "paid");
    }
}

on_both_backends! {
    /// An unknown order is 404; a wrong amount on a pending order is 422; neither changes it.
    fn unknown_order_and_wrong_amount(app) {
        let p = Pending::new(app);
        let before = p.snapshot(app);
        app.callback("no-such-order", &trade_no(), SUCCESS, 100).assert_error(404, "order_not_found");
        app.callback(&"z".repeat(65), &trade_no(), SUCCESS, 100).assert_error(404, "order_not_found");
        let trade = trade_no();
        app.callback(p.no(), &trade, SUCCESS, p.payable() - 1).assert_error(422, "amount_mismatch");
        app.callback(p.no(), &trade_no(), SUCCESS, p.payable() + 1).assert_error(422, "amount_mismatch");
        assert_eq!(p.snapshot(app), before);
        let view = app.admin_order(p.no());
        assert_eq!((&view["actor"]["alive"], &view["actor"]["state"]), (&json!(true), &json!("armed")), "{view}");
        // The refused trade_no was not stored: it can pay now.
        assert_success(&app.callback(p.no(), &trade, SUCCESS, p.payable()));
        assert_eq!(app.admin_order(p.no())["order"]["status"], "paid");
    }
}

on_both_backends! {
    /// The same callback again is a 200 duplicate; the same trade_no with anything else is 409.
    fn duplicates_and_trade_no_conflicts(app) {
        let p = Pending::new(app);
        let other = Pending::new(app);
        let trade = app.pay(&p.order);
        app.wait_effects_done(p.no());
        let after_pay = p.snapshot(app);
        let other_before = other.snapshot(app);

        assert_success(&app.callback(p.no(), &trade, SUCCESS, p.payable()));
        app.callback(p.no(), &trade, SUCCESS, p.payable() + 1).assert_error(409, "trade_no_conflict");
        app.callback(p.no(), &trade, FAILURE, p.payable()).assert_error(409, "trade_no_conflict");
        app.callback(other.no(), &trade, SUCCESS, other.payable()).assert_error(409, "trade_no_conflict");
        assert_eq!(p.snapshot(app), after_pay);
        assert_eq!(other.snapshot(app), other_before);
        // The refused callback is the provider's error, not the pending order actor's.
        let view = app.admin_order(other.no());
        assert_eq!(view["actor"]["alive"], true, "{view}");
        let actor_error = view["actor"]["last_error"].clone();

        // A failure's trade_no is taken too.
        let failed = trade_no();
        assert_success(&app.callback(other.no(), &failed, FAILURE, other.payable()));
        assert_eq!(app.admin_order(other.no())["order"]["status"], "failed");
        app.wait_effects_done(other.no());
        let other_failed = other.snapshot(app);
        assert_success(&app.callback(other.no(), &failed, FAILURE, other.payable()));
        app.callback(other.no(), &failed, SUCCESS, other.payable()).assert_error(409, "trade_no_conflict");
        assert_eq!(other.snapshot(app), other_failed);
        assert_eq!(actor_error, Value::Null, "last_error of a pending order's actor after a 409");
    }
}

on_both_backends! {
    /// A success for a cancelled or failed order is a late payment: 200, order unchanged, a
    /// refund-required record with the received amount. A failure code changes nothing.
    fn late_payments_are_kept(app) {
        let p = Pending::new(app);
        app.as_user(&p.token, "POST", &format!("/api/orders/{}/cancel", p.no()), None)
            .assert_status(200);
        app.wait_effects_done(p.no());
        let cancelled = p.snapshot(app);

        let trade = trade_no();
        assert_success(&app.callback(p.no(), &trade, SUCCESS, 1_234));
        let records = late_of(app, &trade);
        assert_eq!(records.len(), 1, "{records:?}");
        let record = &records[0];
        assert_eq!(record["order_no"], p.no());
        assert_eq!(record["amount_cents"], 1_234);
        assert_eq!(record["reason"], "late_payment");
        assert_eq!(record["provider_paid_at"], "2026-11-26T12:00:00.000Z");
        assert!(record["id"].is_i64());
        ts(&record["received_at"]);
        // The provider retries: a duplicate, still one record.
        assert_success(&app.callback(p.no(), &trade, SUCCESS, 1_234));
        assert_eq!(late_of(app, &trade).len(), 1);
        let mut now = p.snapshot(app);
        now["late"] = cancelled["late"].clone();
        assert_eq!(now, cancelled, "only the late payment was added");

        // A failure code for the cancelled order: stored, no change, no record.
        let before = p.snapshot(app);
        let failure = trade_no();
        assert_success(&app.callback(p.no(), &failure, FAILURE, 1));
        assert_eq!(p.snapshot(app), before);
        assert!(late_of(app, &failure).is_empty());

        // A failure code fails a pending order whatever the amount; a failed order takes a
        // late payment the same way.
        let q = Pending::new(app);
        assert_success(&app.callback(q.no(), &trade_no(), FAILURE, 1));
        assert_eq!(app.admin_order(q.no())["order"]["status"], "failed");
        let late = trade_no();
        assert_success(&app.callback(q.no(), &late, SUCCESS, q.payable()));
        let records = late_of(app, &late);
        assert_eq!(records.len(), 1);
        assert_eq!((&records[0]["reason"], &records[0]["amount_cents"]), (&json!("late_payment"), &json!(q.payable())));
        assert_eq!(app.admin_order(q.no())["order"]["status"], "failed");
    }
}

on_both_backends! {
    /// A second success with a new trade_no for a paid order is a double payment; a failure
    /// code for a paid order changes nothing.
    fn double_payments_are_kept(app) {
        let p = Pending::new(app);
        let first = app.pay(&p.order);
        app.wait_effects_done(p.no());
        let paid = p.snapshot(app);

        let second = trade_no();
        assert_success(&app.callback(p.no(), &second, SUCCESS, 999));
        let records = late_of(app, &second);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!((&records[0]["reason"], &records[0]["amount_cents"]), (&json!("double_payment"), &json!(999)));
        assert_eq!(records[0]["order_no"], p.no());
        let mut now = p.snapshot(app);
        assert_eq!(now["order"]["trade_no"], first.as_str());
        now["late"] = paid["late"].clone();
        assert_eq!(now, paid);

        let before = p.snapshot(app);
        let failure = trade_no();
        assert_success(&app.callback(p.no(), &failure, FAILURE, p.payable()));
        assert_eq!(p.snapshot(app), before);
        assert!(late_of(app, &failure).is_empty());
    }
}

on_both_backends! {
    /// Key rotation: several v1 values, one of which matches (any hex case, spaces, other
    /// schemes) is accepted.
    fn key_rotation(app) {
        let p = Pending::new(app);
        let body = callback_body(p.no(), &trade_no(), SUCCESS, p.payable());
        let now = chrono::Utc::now().timestamp();
        let valid = signature_at(&body, now);
        let good = valid.split_once("v1=").unwrap().1.to_uppercase();
        let old = order_engine::http::signature::sign(&body, b"old-secret", now);
        let old = old.split_once("v1=").unwrap().1;
        let header = format!(" t={now} , v0=abc, v1={old} ,v1= {good} ");
        assert_success(&app.callback_raw(&body, &[("X-Signature", &header)]));
        assert_eq!(app.admin_order(p.no())["order"]["status"], "paid");
    }
}

on_both_backends! {
    /// One valid callback sent 50 times at once, then 20 times in sequence: all 200, one
    /// transition, one grant.
    fn duplicate_storm(app) {
        let p = Pending::new(app);
        let trade = trade_no();
        let body = callback_body(p.no(), &trade, SUCCESS, p.payable());
        let header = signature(&body);
        let http: &Http = app;
        let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..50)
                .map(|_| scope.spawn(|| {
                    let resp = http.callback_raw(&body, &[("X-Signature", &header)]);
                    (resp.status, resp.text)
                }))
                .collect();
            handles.into_iter().map(|h| h.join().expect("a sender thread")).collect()
        });
        for (status, text) in &statuses {
            assert_eq!((*status, text.as_str()), (200, r#"{"result":"success"}"#));
        }
        for _ in 0..20 {
            let resp = http.callback_raw(&body, &[("X-Signature", &header)]);
            assert_eq!((resp.status, resp.text.as_str()), (200, r#"{"result":"success"}"#));
        }
        let view = app.wait_effects_done(p.no());
        assert_eq!(view["order"]["status"], "paid");
        assert_eq!(view["order"]["trade_no"], trade.as_str());
        assert_eq!(view["effects"].as_array().unwrap().len(), 1, "{view}");
        assert!(late_of(app, &trade).is_empty());
        assert_eq!(app.me(&p.token)["course_ids"], json!([p.order["items"][0]["course_id"]]));
    }
}

on_both_backends! {
    /// Success callbacks sent within a few milliseconds of their orders' deadlines: each order
    /// ends paid or cancelled for timeout, never both, and a success that lost is a late payment.
    fn race_against_the_deadline(app) with [("orders.payment_timeout_secs", "2")] {
        const ORDERS: usize = 30;
        let (_, token) = app.user_with_token(0);
        let courses: Vec<i64> = (0..ORDERS).map(|_| app.course(1_000)).collect();
        let http: &Http = app;
        let results: Vec<(Value, String, i64, Resp)> = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, course) in courses.iter().enumerate() {
                let order = http.place_ok(&token, &[*course], None, 0);
                let offset_ms = (i % 11) as i64 - 5;
                handles.push(scope.spawn(move || {
                    let target = ts(&order["expires_at"]) + chrono::TimeDelta::milliseconds(offset_ms);
                    if let Ok(wait) = (target - chrono::Utc::now()).to_std() {
                        std::thread::sleep(wait);
                    }
                    let trade = trade_no();
                    let no = order["order_no"].as_str().unwrap().to_string();
                    let resp = http.callback(&no, &trade, SUCCESS, 1_000);
                    (order, trade, offset_ms, resp)
                }));
            }
            handles.into_iter().map(|h| h.join().expect("a sender thread")).collect()
        });
        let started = Instant::now();
        let (mut paid, mut timed_out) = (0, 0);
        for (order, trade, offset_ms, resp) in &results {
            assert_success(resp);
            let no = order["order_no"].as_str().unwrap();
            let view = wait_for("the order to leave pending", Duration::from_secs(20), || {
                let view = app.admin_order(no);
                if view["order"]["status"] == "pending" { Err(view.to_string()) } else { Ok(view) }
            });
            let stored = &view["order"];
            let late = late_of(app, trade);
            match stored["status"].as_str().unwrap() {
                "paid" => {
                    paid += 1;
                    assert_eq!(stored["trade_no"], trade.as_str(), "{stored}");
                    assert!(ts(&stored["paid_at"]) < ts(&stored["expires_at"]), "{stored}");
                    assert!(late.is_empty(), "paid and late: {late:?}");
                }
                "cancelled" => {
                    timed_out += 1;
                    assert_eq!(stored["close_reason"], "timeout", "{stored}");
                    assert_eq!(stored["trade_no"], Value::Null, "{stored}");
                    assert!(ts(&stored["closed_at"]) >= ts(&stored["expires_at"]), "{stored}");
                    assert_eq!(late.len(), 1, "offset {offset_ms} ms: the lost success is not a late payment: {stored}");
                    assert_eq!((&late[0]["reason"], &late[0]["amount_cents"]), (&json!("late_payment"), &json!(1_000)));
                }
                other => panic!("order {no} ended {other}: {stored}"),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(paid + timed_out, ORDERS);
        eprintln!("race_against_the_deadline ({:?}): {paid} paid, {timed_out} timed out", app.backend);
    }
}

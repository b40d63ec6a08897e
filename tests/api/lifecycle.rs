//! The order lifecycle over HTTP: paid, failed, timed out, cancelled by the user or an admin,
//! live actor state, admin listings, and an order that costs nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

#[track_caller]
fn assert_order_shape(order: &Value) {
    let keys: BTreeSet<&str> = order
        .as_object()
        .unwrap_or_else(|| panic!("not an order: {order}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ORDER_KEYS.iter().copied().collect(), "{order}");
}

fn no(order: &Value) -> &str {
    order["order_no"].as_str().expect("order_no")
}

/// The user's copy of a coupon as `GET /api/me` shows it.
fn my_coupon(app: &TestApp, token: &str, user_coupon_id: i64) -> Value {
    app.me(token)["coupons"]
        .as_array()
        .expect("coupons")
        .iter()
        .find(|c| c["user_coupon_id"] == user_coupon_id)
        .cloned()
        .expect("the coupon is listed")
}

/// Ledger rows of one order as `(kind, delta)`.
fn ledger_of(app: &TestApp, user_id: i64, order_no: &str) -> Vec<(String, i64)> {
    app.admin_user(user_id)["ledger"]
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|row| row["order_no"] == order_no)
        .map(|row| {
            (
                row["kind"].as_str().unwrap().to_string(),
                row["delta"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The live actor of a pending order: armed, with the order's deadline and time left.
#[track_caller]
fn assert_armed(app: &TestApp, order: &Value) {
    let view = app.admin_order(no(order));
    let actor = &view["actor"];
    assert_eq!(actor["alive"], true, "{view}");
    assert_eq!(actor["state"], "armed", "{view}");
    assert_eq!(actor["deadline"], order["expires_at"], "{view}");
    assert!(actor["remaining_ms"].as_i64().unwrap() > 0, "{view}");
    assert!(actor["node_id"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(actor["restarts"], 0, "{view}");
    assert_eq!(actor["last_error"], Value::Null, "{view}");
}

/// Right after a transition's 2xx the answering process has let the actor go.
#[track_caller]
fn assert_actor_gone(app: &TestApp, order_no: &str) {
    let view = app.admin_order(order_no);
    assert_eq!(
        view["actor"],
        json!({"alive": false, "node_id": null, "state": null, "deadline": null,
               "remaining_ms": null, "restarts": null, "last_error": null}),
        "{view}"
    );
}

/// A user with 1000 points and a 500-cent coupon, two courses (2 and 3 chapters), and a
/// pending order for both using the coupon and 300 points.
struct Setup {
    user_id: i64,
    token: String,
    courses: Vec<Value>,
    user_coupon: i64,
    order: Value,
}

fn setup(app: &TestApp) -> Setup {
    let (user_id, token) = app.user_with_token(1_000);
    let courses = vec![
        app.create_course("rust", 5_000, &["one", "two"]),
        app.create_course("sql", 3_000, &["a", "b", "c"]),
    ];
    let ids: Vec<i64> = courses.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    let coupon = app.create_coupon(500, 0, None);
    let user_coupon = app.give_coupon(user_id, coupon);
    let order = app.place_ok(&token, &ids, Some(user_coupon), 300);
    assert_order_shape(&order);
    assert_eq!(order["status"], "pending");
    assert_eq!(order["payable_cents"], 8_000 - 500 - 300);
    Setup {
        user_id,
        token,
        courses,
        user_coupon,
        order,
    }
}

/// `GET /admin/users/{id}`'s `courses` after these courses (as the admin API created them)
/// were granted: each with every chapter, by course id.
fn granted<'a>(courses: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut expected: Vec<Value> = courses
        .into_iter()
        .map(|c| {
            let mut chapters: Vec<i64> = c["chapters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ch| ch["id"].as_i64().unwrap())
                .collect();
            chapters.sort();
            json!({"course_id": c["id"], "chapter_ids": chapters})
        })
        .collect();
    expected.sort_by_key(|c| c["course_id"].as_i64());
    json!(expected)
}

/// After an unpaid close: points back exactly once, coupon free again, nothing granted.
fn assert_given_back(app: &TestApp, s: &Setup) {
    let view = app.wait_effects_done(no(&s.order));
    let kinds: Vec<&Value> = view["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["kind"])
        .collect();
    assert_eq!(kinds, vec!["refund"], "{view}");
    assert_eq!(app.me(&s.token)["points"], 1_000);
    assert_eq!(
        ledger_of(app, s.user_id, no(&s.order)),
        vec![("spend".to_string(), -300), ("refund".to_string(), 300)]
    );
    let coupon = my_coupon(app, &s.token, s.user_coupon);
    assert_eq!(
        (&coupon["status"], &coupon["order_no"]),
        (&json!("unused"), &Value::Null)
    );
    assert_eq!(app.me(&s.token)["course_ids"], json!([]));
    assert_eq!(app.admin_user(s.user_id)["courses"], json!([]));
}

on_both_backends! {
    /// The right amount pays the order: coupon used, every course and chapter granted.
    fn paid_with_the_right_amount(app) {
        let s = setup(app);
        assert_armed(app, &s.order);
        let trade = trade_no();
        let resp = app.callback(no(&s.order), &trade, SUCCESS, 7_200);
        assert_eq!(resp.assert_status(200), &json!({"result": "success"}));
        assert_actor_gone(app, no(&s.order));

        let order = app.as_user(&s.token, "GET", &format!("/api/orders/{}", no(&s.order)), None)
            .assert_status(200)
            .clone();
        assert_order_shape(&order);
        assert_eq!(order["status"], "paid");
        assert_eq!(order["trade_no"], trade.as_str());
        assert_eq!((&order["closed_at"], &order["close_reason"]), (&Value::Null, &Value::Null));
        let paid_at = ts(&order["paid_at"]);
        assert!(paid_at >= ts(&order["created_at"]) && paid_at < ts(&order["expires_at"]));

        let coupon = my_coupon(app, &s.token, s.user_coupon);
        assert_eq!((&coupon["status"], &coupon["order_no"]), (&json!("used"), &order["order_no"]));

        let view = app.wait_effects_done(no(&order));
        assert_eq!(view["effects"].as_array().unwrap().len(), 1, "{view}");
        assert_eq!(view["effects"][0]["kind"], "grant");
        assert_eq!(view["effects"][0]["last_error"], Value::Null);

        let mut ids: Vec<i64> = s.courses.iter().map(|c| c["id"].as_i64().unwrap()).collect();
        ids.sort();
        let me = app.me(&s.token);
        assert_eq!(me["course_ids"], json!(ids));
        assert_eq!(me["points"], 700);
        assert_eq!(app.admin_user(s.user_id)["courses"], granted(s.courses.iter()));
        assert_eq!(ledger_of(app, s.user_id, no(&order)), vec![("spend".to_string(), -300)]);
    }
}

on_both_backends! {
    /// A failure code fails the order: points back once, coupon unused.
    fn failure_code_fails_the_order(app) {
        let s = setup(app);
        let trade = trade_no();
        let resp = app.callback(no(&s.order), &trade, FAILURE, 7_200);
        assert_eq!(resp.assert_status(200), &json!({"result": "success"}));
        assert_actor_gone(app, no(&s.order));
        let order = app.admin_order(no(&s.order))["order"].clone();
        assert_order_shape(&order);
        assert_eq!(order["status"], "failed");
        assert_eq!(order["close_reason"], "payment_failed");
        assert_eq!(order["paid_at"], Value::Null);
        assert!(ts(&order["closed_at"]) >= ts(&order["created_at"]));
        assert_given_back(app, &s);
        // SPEC §Objects: `trade_no` is that of the callback that made the transition.
        assert_eq!(order["trade_no"], trade.as_str(), "{order}");
    }
}

on_both_backends! {
    /// The deadline passes unpaid: cancelled for timeout, points and coupon back.
    fn timeout_cancels_the_order(app) with [("orders.payment_timeout_secs", "1")] {
        let s = setup(app);
        assert_armed(app, &s.order);
        let order = app.wait_order_status(no(&s.order), "cancelled", Duration::from_secs(20));
        assert_eq!(order["close_reason"], "timeout");
        assert_eq!(order["trade_no"], Value::Null);
        assert_eq!(order["paid_at"], Value::Null);
        let lateness = ts(&order["closed_at"]) - ts(&order["expires_at"]);
        assert!(lateness >= chrono::TimeDelta::zero(), "closed early: {order}");
        assert!(lateness < chrono::TimeDelta::milliseconds(1_500), "closed late: {order}");
        assert_actor_gone(app, no(&order));
        assert_given_back(app, &s);
        // A cancel after the timeout is 409.
        app.as_user(&s.token, "POST", &format!("/api/orders/{}/cancel", no(&order)), None)
            .assert_error(409, "order_not_pending");
    }
}

on_both_backends! {
    /// The user cancels once (200), again (409); another user gets 404.
    fn user_cancel(app) {
        let s = setup(app);
        let path = format!("/api/orders/{}/cancel", no(&s.order));
        assert_armed(app, &s.order);
        let (_, stranger) = app.user_with_token(0);
        app.as_user(&stranger, "POST", &path, None).assert_error(404, "order_not_found");
        // Another user's refused cancel is the client's error, not the order actor's.
        let after_stranger = app.admin_order(no(&s.order));
        assert_eq!(after_stranger["order"]["status"], "pending");

        let order = app.as_user(&s.token, "POST", &path, None).assert_status(200).clone();
        assert_order_shape(&order);
        assert_eq!((&order["status"], &order["close_reason"]), (&json!("cancelled"), &json!("user")));
        assert!(ts(&order["closed_at"]) >= ts(&order["created_at"]));
        assert_actor_gone(app, no(&order));
        app.as_user(&s.token, "POST", &path, None).assert_error(409, "order_not_pending");
        app.as_user(&stranger, "POST", &path, None).assert_error(404, "order_not_found");
        app.as_user(&s.token, "POST", "/api/orders/nope/cancel", None)
            .assert_error(404, "order_not_found");
        assert_given_back(app, &s);
        assert_eq!(
            after_stranger["actor"]["last_error"],
            Value::Null,
            "another user's refused cancel became the actor's last_error: {after_stranger}"
        );
    }
}

on_both_backends! {
    /// An admin force-cancels a pending order (200, reason admin), then gets 409.
    fn admin_cancel(app) {
        let s = setup(app);
        let path = format!("/admin/orders/{}/cancel", no(&s.order));
        let order = app.admin("POST", &path, None).assert_status(200).clone();
        assert_order_shape(&order);
        assert_eq!((&order["status"], &order["close_reason"]), (&json!("cancelled"), &json!("admin")));
        assert_actor_gone(app, no(&order));
        app.admin("POST", &path, None).assert_error(409, "order_not_pending");
        app.admin("POST", "/admin/orders/nope/cancel", None).assert_error(404, "order_not_found");
        app.request("POST", &path, &[], None).assert_error(401, "unauthenticated");
        assert_given_back(app, &s);
    }
}

on_both_backends! {
    /// `GET /admin/actors` counts live actors, timers, orders by status and the effect backlog.
    fn actor_counts(app) {
        let (_, token) = app.user_with_token(0);
        let orders: Vec<Value> = (0..3)
            .map(|_| app.place_ok(&token, &[app.course(1_000)], None, 0))
            .collect();
        let stats = app.admin("GET", "/admin/actors", None).assert_status(200).clone();
        assert_eq!(stats["live_actors"], 3, "{stats}");
        assert_eq!(stats["armed_timers"], 3, "{stats}");
        assert_eq!(stats["actors_by_state"], json!({"armed": 3, "transitioning": 0, "stopped": 0}));
        assert_eq!(stats["orders_by_status"], json!({"pending": 3, "paid": 0, "failed": 0, "cancelled": 0}));
        assert_eq!(stats["effects"], json!({"pending": 0, "dead_lettered": 0}));
        assert!(stats["node_id"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(stats["nodes"].is_array());

        app.pay(&orders[0]);
        app.as_user(&token, "POST", &format!("/api/orders/{}/cancel", no(&orders[1])), None)
            .assert_status(200);
        let stats = app.admin("GET", "/admin/actors", None).assert_status(200).clone();
        assert_eq!(stats["live_actors"], 1, "{stats}");
        assert_eq!(stats["armed_timers"], 1, "{stats}");
        assert_eq!(stats["orders_by_status"], json!({"pending": 1, "paid": 1, "failed": 0, "cancelled": 1}));
        app.wait_effects_done(no(&orders[0]));
        let stats = app.admin("GET", "/admin/actors", None).assert_status(200).clone();
        assert_eq!(stats["effects"], json!({"pending": 0, "dead_lettered": 0}), "{stats}");
    }
}

on_both_backends! {
    /// `GET /admin/orders`: newest first, keyset pages, filters, and 400 for bad parameters.
    fn admin_order_listing(app) {
        let (alice, alice_token) = app.user_with_token(0);
        let (bob, bob_token) = app.user_with_token(0);
        let mut all = Vec::new();
        for _ in 0..3 {
            all.push(app.place_ok(&alice_token, &[app.course(100)], None, 0));
        }
        for _ in 0..2 {
            all.push(app.place_ok(&bob_token, &[app.course(100)], None, 0));
        }
        let cancelled = no(&all[4]).to_string();
        app.as_user(&bob_token, "POST", &format!("/api/orders/{cancelled}/cancel"), None)
            .assert_status(200);

        let list = |query: &str| app.admin("GET", &format!("/admin/orders{query}"), None);
        let numbers = |page: &Value| -> Vec<String> {
            page["data"].as_array().unwrap().iter().map(|o| no(o).to_string()).collect()
        };

        // Pages of two, following next_after to the end.
        let mut seen = Vec::new();
        let mut pages = Vec::new();
        let mut query = "?limit=2".to_string();
        loop {
            let page = list(&query).assert_status(200).clone();
            pages.push(page.clone());
            for order in page["data"].as_array().unwrap() {
                assert_order_shape(order);
                seen.push(order.clone());
            }
            if page["has_more"] == true {
                assert_eq!(page["data"].as_array().unwrap().len(), 2);
                let next = page["next_after"].as_str().expect("next_after").to_string();
                assert_eq!(next, no(page["data"].as_array().unwrap().last().unwrap()));
                query = format!("?limit=2&after={next}");
            } else {
                assert_eq!(page["next_after"], Value::Null);
                break;
            }
            assert!(pages.len() < 10, "paging does not end");
        }
        assert_eq!(pages.len(), 3);
        let seen_numbers: Vec<String> = seen.iter().map(|o| no(o).to_string()).collect();
        let unique: BTreeSet<&String> = seen_numbers.iter().collect();
        assert_eq!(unique.len(), 5, "{seen_numbers:?}");
        let expected: BTreeSet<String> = all.iter().map(|o| no(o).to_string()).collect();
        assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
        for pair in seen.windows(2) {
            assert!(ts(&pair[0]["created_at"]) >= ts(&pair[1]["created_at"]), "newest first");
        }
        let everything = list("").assert_status(200).clone();
        assert_eq!(numbers(&everything), seen_numbers);
        assert_eq!((&everything["has_more"], &everything["next_after"]), (&json!(false), &Value::Null));

        let alices = list(&format!("?user_id={alice}")).assert_status(200).clone();
        assert_eq!(numbers(&alices).len(), 3);
        assert!(alices["data"].as_array().unwrap().iter().all(|o| o["user_id"] == alice));
        let only = list("?status=cancelled").assert_status(200).clone();
        assert_eq!(numbers(&only), vec![cancelled.clone()]);
        let bobs_pending = list(&format!("?status=pending&user_id={bob}")).assert_status(200).clone();
        assert_eq!(numbers(&bobs_pending), vec![no(&all[3]).to_string()]);
        assert_eq!(numbers(&list("?status=paid").assert_status(200).clone()), Vec::<String>::new());
        assert_eq!(numbers(&list("?limit=100").assert_status(200).clone()).len(), 5);

        for bad in ["?limit=0", "?limit=101", "?limit=x", "?limit=-1", "?status=nope",
                    "?status=PAID", "?after=!!", "?after=a-b", "?user_id=x", "?colour=red"] {
            let resp = list(bad);
            assert_eq!((resp.status, resp.error_code()), (400, "invalid_request"), "{bad}: {}", resp.text);
        }
        app.request("GET", "/admin/orders", &[], None).assert_error(401, "unauthenticated");
    }
}

on_both_backends! {
    /// An order that costs nothing is created paid, its coupon used, and it gets its grant.
    fn zero_payable_order_is_granted(app) {
        let (user_id, token) = app.user_with_token(0);
        let course = app.create_course("free", 500, &["x", "y"]);
        let coupon = app.create_coupon(800, 0, None);
        let user_coupon = app.give_coupon(user_id, coupon);
        let order = app.place_ok(&token, &[course["id"].as_i64().unwrap()], Some(user_coupon), 0);
        assert_order_shape(&order);
        assert_eq!(order["status"], "paid");
        assert_eq!((&order["payable_cents"], &order["discount_cents"]), (&json!(0), &json!(500)));
        assert_eq!(order["paid_at"], order["created_at"]);
        assert_eq!(order["trade_no"], Value::Null);
        assert_actor_gone(app, no(&order));
        let coupon = my_coupon(app, &token, user_coupon);
        assert_eq!((&coupon["status"], &coupon["order_no"]), (&json!("used"), &order["order_no"]));
        let view = app.wait_effects_done(no(&order));
        assert_eq!(view["effects"].as_array().unwrap().len(), 1);
        assert_eq!(view["effects"][0]["kind"], "grant");
        let chapters: Vec<&Value> = course["chapters"].as_array().unwrap().iter().map(|c| &c["id"]).collect();
        assert_eq!(app.admin_user(user_id)["courses"], json!([{"course_id": course["id"], "chapter_ids": chapters}]));
        assert_eq!(app.me(&token)["course_ids"], json!([course["id"]]));
        let stats = app.admin("GET", "/admin/actors", None).assert_status(200).clone();
        assert_eq!(stats["live_actors"], 0, "{stats}");
    }
}

on_both_backends! {
    /// User cancels sent within a few milliseconds of their orders' deadlines: before it, the
    /// cancel wins (200, reason user); at or after it, the order is closed for timeout and the
    /// cancel gets 409 — never both.
    fn cancel_races_the_deadline(app) with [("orders.payment_timeout_secs", "2")] {
        const ORDERS: usize = 12;
        let (_, token) = app.user_with_token(1_000);
        let courses: Vec<i64> = (0..ORDERS).map(|_| app.course(1_000)).collect();
        let http: &Http = app;
        let results: Vec<(Value, Resp)> = std::thread::scope(|scope| {
            let handles: Vec<_> = courses
                .iter()
                .enumerate()
                .map(|(i, course)| {
                    let order = http.place_ok(&token, &[*course], None, 10);
                    let token = &token;
                    scope.spawn(move || {
                        let offset = chrono::TimeDelta::milliseconds((i % 11) as i64 - 5);
                        let target = ts(&order["expires_at"]) + offset;
                        if let Ok(wait) = (target - chrono::Utc::now()).to_std() {
                            std::thread::sleep(wait);
                        }
                        let path = format!("/api/orders/{}/cancel", no(&order));
                        let resp = http.as_user(token, "POST", &path, None);
                        (order, resp)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a cancel thread")).collect()
        });
        for (order, resp) in &results {
            let stored = app.wait_order_status(no(order), "cancelled", Duration::from_secs(20));
            let closed_at = ts(&stored["closed_at"]);
            let expires_at = ts(&stored["expires_at"]);
            if resp.status == 200 {
                assert_eq!(resp.json, stored);
                assert_eq!(stored["close_reason"], "user", "{stored}");
                assert!(closed_at < expires_at, "a cancel at or after the deadline won: {stored}");
            } else {
                resp.assert_error(409, "order_not_pending");
                assert_eq!(stored["close_reason"], "timeout", "{stored}");
                assert!(closed_at >= expires_at, "{stored}");
            }
            app.wait_effects_done(no(order));
        }
    }
}

on_both_backends! {
    /// Many orders whose deadlines bunch up (placed at once by 40 users) are closed together —
    /// batched — never before their deadline, each with its coupon back and its points
    /// refunded exactly once (the invariant checker), while one of them is paid in time.
    fn deadlines_that_bunch_up_close_together(app) with [("orders.payment_timeout_secs", "3")] {
        const USERS: usize = 40;
        let courses: Vec<i64> = (0..3).map(|_| app.course(1_000)).collect();
        let coupon = app.create_coupon(100, 0, None);
        let users: Vec<(i64, String, i64)> = (0..USERS)
            .map(|_| {
                let (id, token) = app.user_with_token(1_000);
                let user_coupon = app.give_coupon(id, coupon);
                (id, token, user_coupon)
            })
            .collect();
        let placed: Vec<Value> = in_parallel(USERS, |i| {
            let (_, token, user_coupon) = &users[i];
            let mut orders = vec![app.place_ok(token, &[courses[0]], Some(*user_coupon), 10)];
            orders.push(app.place_ok(token, &[courses[1], courses[2]], None, 25));
            orders
        })
        .into_iter()
        .flatten()
        .collect();
        let paid = &placed[0];
        app.pay(paid);
        for order in &placed[1..] {
            let no = order["order_no"].as_str().unwrap();
            let closed = app.wait_order_status(no, "cancelled", Duration::from_secs(30));
            assert_eq!(closed["close_reason"], "timeout");
            let lateness = ts(&closed["closed_at"]) - ts(&closed["expires_at"]);
            assert!(lateness >= chrono::TimeDelta::zero(), "order {no} closed early");
            app.wait_effects_done(no);
        }
        for (id, _, user_coupon) in &users[1..] {
            let user = app.admin_user(*id);
            assert_eq!(user["points"], 1_000, "{user}");
            let coupon = user["coupons"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["user_coupon_id"] == *user_coupon)
                .unwrap()
                .clone();
            assert_eq!(coupon["status"], "unused");
        }
    }
}

on_both_backends! {
    /// Many orders paid at once (40 users' callbacks in parallel) have their grants applied
    /// together — batched — and each user gets exactly the courses of their own order and
    /// every chapter of each, once (and the invariant checker), also for the course they all
    /// bought.
    fn payments_that_bunch_up_are_granted_together(app) {
        const USERS: usize = 40;
        let shared = app.create_course("shared", 1_000, &["a", "b", "c"]);
        let users: Vec<(i64, String, Value)> = (0..USERS)
            .map(|i| {
                let (id, token) = app.user_with_token(0);
                let own = app.create_course(&format!("own {i}"), 500, &["x", "y", "z"][..i % 3 + 1]);
                (id, token, own)
            })
            .collect();
        let placed: Vec<Value> = in_parallel(USERS, |i| {
            let (_, token, own) = &users[i];
            app.place_ok(token, &[shared["id"].as_i64().unwrap(), own["id"].as_i64().unwrap()], None, 0)
        });
        in_parallel(USERS, |i| app.pay(&placed[i]));
        for (i, (id, _, own)) in users.iter().enumerate() {
            app.wait_effects_done(no(&placed[i]));
            assert_eq!(app.admin_user(*id)["courses"], granted([&shared, own]), "user {id}");
        }
    }
}

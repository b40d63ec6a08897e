//! `POST /api/orders`, rule by rule (SPEC §Business rules and §Errors precedence), plus the
//! reads that show a placement's effects (`GET /api/orders/{order_no}`, `GET /api/me`,
//! `GET /admin/users/{id}`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// The order of a 201, shape-checked.
#[track_caller]
fn created(resp: &Resp) -> Value {
    let order = resp.assert_status(201).clone();
    assert_order_shape(&order);
    order
}

fn order_no(order: &Value) -> &str {
    order["order_no"].as_str().expect("order_no")
}

on_both_backends! {
    /// payable = total - min(coupon, total) - points x 1, reported field by field.
    fn pricing_sums_items_then_takes_coupon_and_points(app) {
        let (user_id, token) = app.user_with_token(1_000);
        let (a, b) = (app.course(5_000), app.course(3_000));
        let coupon = app.give_coupon(user_id, app.create_coupon(1_000, 0, None));
        let order = created(&app.place(&token, json!({"course_ids": [a, b], "user_coupon_id": coupon, "points": 200})));
        assert_eq!(order["status"], "pending");
        assert_eq!(order["user_id"], user_id);
        assert_eq!(order["total_cents"], 8_000);
        assert_eq!(order["discount_cents"], 1_000);
        assert_eq!(order["points_used"], 200);
        assert_eq!(order["payable_cents"], 8_000 - 1_000 - 200);
        assert_eq!(order["user_coupon_id"], coupon);
        for key in ["paid_at", "closed_at", "close_reason", "trade_no"] {
            assert_eq!(order[key], Value::Null, "{key} of a pending order");
        }
        // Without coupon and points: the total is payable, user_coupon_id null.
        let c = app.course(1_234);
        let plain = created(&app.place(&token, json!({"course_ids": [c]})));
        assert_eq!(
            (&plain["total_cents"], &plain["discount_cents"], &plain["points_used"], &plain["payable_cents"], &plain["user_coupon_id"]),
            (&json!(1_234), &json!(0), &json!(0), &json!(1_234), &Value::Null)
        );
        assert_eq!(app.me(&token)["points"], 800);
    }
}

/// Points are worth `pricing.cents_per_point` cents each; the limit is on cents, not points.
fn points_use_cents_per_point(app: &TestApp) {
    let (user_id, token) = app.user_with_token(10_000);
    let coupon = app.give_coupon(user_id, app.create_coupon(1_000, 0, None));
    let course = app.course(10_000);
    // 3001 points = 9003 cents > 10000 - 1000.
    let before = app.snapshot(user_id, &token);
    app.place(
        &token,
        json!({"course_ids": [course], "user_coupon_id": coupon, "points": 3_001}),
    )
    .assert_error(422, "points_exceed_payable");
    assert_eq!(app.snapshot(user_id, &token), before);
    let order = created(&app.place(
        &token,
        json!({"course_ids": [course], "user_coupon_id": coupon, "points": 2_999}),
    ));
    assert_eq!(order["discount_cents"], 1_000);
    assert_eq!(order["points_used"], 2_999);
    assert_eq!(order["payable_cents"], 10_000 - 1_000 - 2_999 * 3);
    let user = app.admin_user(user_id);
    assert_eq!(user["points"], 10_000 - 2_999);
    assert_eq!(user["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(user["ledger"][0]["delta"], -2_999);
}

mod points_use_cents_per_point {
    use super::*;
    const SETTINGS: &[(&str, &str)] = &[("pricing.cents_per_point", "3")];
    #[test]
    fn sqlite() {
        run_with(Backend::Sqlite, SETTINGS, super::points_use_cents_per_point);
    }
    #[test]
    fn postgres() {
        run_with(
            Backend::Postgres,
            SETTINGS,
            super::points_use_cents_per_point,
        );
    }
}

on_both_backends! {
    /// Payable 0 (a coupon worth more than the total, or points worth exactly what is left):
    /// created `paid`, paid_at = created_at, coupon `used` (and then not usable again).
    fn zero_payable_order_is_created_paid(app) {
        let (user_id, token) = app.user_with_token(500);
        let coupon = app.give_coupon(user_id, app.create_coupon(9_000, 0, None));
        let course = app.course(3_000);
        let order = created(&app.place(&token, json!({"course_ids": [course], "user_coupon_id": coupon})));
        assert_eq!(order["status"], "paid");
        assert_eq!(order["discount_cents"], 3_000, "discount = min(coupon, total)");
        assert_eq!(order["payable_cents"], 0);
        assert_eq!(order["paid_at"], order["created_at"]);
        timestamp(&order["paid_at"]);
        assert_eq!((&order["closed_at"], &order["close_reason"], &order["trade_no"]), (&Value::Null, &Value::Null, &Value::Null));
        assert_eq!(app.get_order(&token, order_no(&order)).assert_status(200), &order);

        let me = app.me(&token);
        assert_eq!(me["coupons"][0]["status"], "used");
        assert_eq!(me["coupons"][0]["order_no"], order["order_no"]);
        assert_eq!(me["course_ids"], json!([course]), "a paid course is owned at once");
        assert_eq!(app.admin_user(user_id)["ledger"], json!([]), "no ledger row for 0 points");

        // A used coupon is not usable.
        let other = app.course(4_000);
        app.place(&token, json!({"course_ids": [other], "user_coupon_id": coupon}))
            .assert_error(409, "coupon_not_usable");

        // Points worth exactly total - discount are allowed, and pay the whole order.
        let cheap = app.course(500);
        let by_points = created(&app.place(&token, json!({"course_ids": [cheap], "points": 500})));
        assert_eq!((&by_points["status"], &by_points["payable_cents"]), (&json!("paid"), &json!(0)));
        assert_eq!(by_points["paid_at"], by_points["created_at"]);
        assert_eq!(app.me(&token)["points"], 0);
    }
}

on_both_backends! {
    /// Items keep request order, each with its course's price.
    fn items_keep_request_order(app) {
        let (_, token) = app.user_with_token(0);
        let (a, b, c) = (app.course(100), app.course(200), app.course(300));
        let order = created(&app.place(&token, json!({"course_ids": [c, a, b]})));
        assert_eq!(
            order["items"],
            json!([{"course_id": c, "price_cents": 300}, {"course_id": a, "price_cents": 100}, {"course_id": b, "price_cents": 200}])
        );
        assert_eq!(order["total_cents"], 600);
        assert_eq!(app.get_order(&token, order_no(&order)).assert_status(200)["items"], order["items"]);
    }
}

on_both_backends! {
    /// expires_at = created_at + orders.payment_timeout_secs (default 1800), in the SPEC's
    /// timestamp format; created_at is the engine's "now".
    fn expires_at_is_created_at_plus_the_payment_timeout(app) {
        let (_, token) = app.user_with_token(0);
        let course = app.course(1_000);
        let before = chrono::Utc::now() - chrono::TimeDelta::milliseconds(1);
        let order = created(&app.place(&token, json!({"course_ids": [course]})));
        let after = chrono::Utc::now();
        let created_at = timestamp(&order["created_at"]);
        assert!(before <= created_at && created_at <= after, "created_at {created_at} not within the request");
        assert_eq!(timestamp(&order["expires_at"]) - created_at, chrono::TimeDelta::seconds(1_800));
    }
}

on_both_backends! {
    /// Another user's coupon, or no such coupon: 404 coupon_not_found.
    fn another_users_coupon_is_not_found(app) {
        let (owner, _) = app.user_with_token(0);
        let (user_id, token) = app.user_with_token(0);
        let theirs = app.give_coupon(owner, app.create_coupon(100, 0, None));
        let course = app.course(1_000);
        let before = app.snapshot(user_id, &token);
        for coupon in [theirs, 999_999] {
            app.place(&token, json!({"course_ids": [course], "user_coupon_id": coupon}))
                .assert_error(404, "coupon_not_found");
        }
        assert_eq!(app.snapshot(user_id, &token), before);
        assert_eq!(app.admin_user(owner)["coupons"][0]["status"], "unused");
    }
}

on_both_backends! {
    /// A coupon locked by a pending order: 409 coupon_not_usable.
    fn locked_coupon_is_not_usable(app) {
        let (user_id, token) = app.user_with_token(0);
        let coupon = app.give_coupon(user_id, app.create_coupon(100, 0, None));
        let (a, b) = (app.course(1_000), app.course(2_000));
        let first = created(&app.place(&token, json!({"course_ids": [a], "user_coupon_id": coupon})));
        let me = app.me(&token);
        assert_eq!(me["coupons"][0]["status"], "locked");
        assert_eq!(me["coupons"][0]["order_no"], first["order_no"]);
        app.place(&token, json!({"course_ids": [b], "user_coupon_id": coupon}))
            .assert_error(409, "coupon_not_usable");
        assert_eq!(app.me(&token), me);
        // Another copy of the same coupon is a different user coupon, and usable.
        let copy = app.give_coupon(user_id, me["coupons"][0]["coupon_id"].as_i64().unwrap());
        created(&app.place(&token, json!({"course_ids": [b], "user_coupon_id": copy})));
    }
}

on_both_backends! {
    /// valid_until in the past: 422 coupon_expired; far in the future (any offset) or null:
    /// usable.
    fn coupon_validity(app) {
        let (user_id, token) = app.user_with_token(0);
        let expired = app.give_coupon(user_id, app.create_coupon(100, 0, Some("2020-01-01T00:00:00Z")));
        let future_coupon = app.create_coupon(100, 0, Some("2999-12-31T23:59:59.5+08:00"));
        let future = app.give_coupon(user_id, future_coupon);
        let forever = app.give_coupon(user_id, app.create_coupon(100, 0, None));
        let (a, b, c) = (app.course(1_000), app.course(1_000), app.course(1_000));
        let before = app.snapshot(user_id, &token);
        app.place(&token, json!({"course_ids": [a], "user_coupon_id": expired}))
            .assert_error(422, "coupon_expired");
        assert_eq!(app.snapshot(user_id, &token), before);
        // The input offset is normalised to UTC.
        assert_eq!(before["me"]["coupons"][1]["valid_until"], "2999-12-31T15:59:59.500Z");
        assert_eq!(created(&app.place(&token, json!({"course_ids": [b], "user_coupon_id": future})))["discount_cents"], 100);
        assert_eq!(created(&app.place(&token, json!({"course_ids": [c], "user_coupon_id": forever})))["discount_cents"], 100);
        assert_eq!(app.me(&token)["coupons"][0]["status"], "unused", "expiry is not a status");
    }
}

on_both_backends! {
    /// Instants far past 2038 (MySQL's TIMESTAMP ends there) up to the SPEC's last one are
    /// stored and read back exactly, to the millisecond, and still compare as instants.
    fn far_future_instants_round_trip(app) {
        let (user_id, token) = app.user_with_token(0);
        let instants = ["2100-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z"];
        let given: Vec<i64> = instants
            .iter()
            .map(|at| app.give_coupon(user_id, app.create_coupon(100, 0, Some(at))))
            .collect();
        let me = app.me(&token);
        for (user_coupon_id, at) in given.iter().zip(instants) {
            let coupon = me["coupons"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["user_coupon_id"] == *user_coupon_id)
                .unwrap_or_else(|| panic!("user coupon {user_coupon_id} in {me}"));
            assert_eq!(coupon["valid_until"], at, "{coupon}");
        }
        let course = app.course(1_000);
        let order = created(&app.place(&token, json!({"course_ids": [course], "user_coupon_id": given[1]})));
        assert_eq!(order["discount_cents"], 100, "a coupon valid until 9999 is valid now");
    }
}

on_both_backends! {
    /// total < min_spend_cents: 422 coupon_min_spend_not_met; total == min spend is enough.
    fn coupon_min_spend(app) {
        let (user_id, token) = app.user_with_token(0);
        let coupon = app.give_coupon(user_id, app.create_coupon(100, 5_000, None));
        let (small, exact) = (app.course(4_999), app.course(5_000));
        let before = app.snapshot(user_id, &token);
        app.place(&token, json!({"course_ids": [small], "user_coupon_id": coupon}))
            .assert_error(422, "coupon_min_spend_not_met");
        assert_eq!(app.snapshot(user_id, &token), before);
        let order = created(&app.place(&token, json!({"course_ids": [exact], "user_coupon_id": coupon})));
        assert_eq!(order["payable_cents"], 4_900);
    }
}

on_both_backends! {
    /// More points than the user has: 422 insufficient_points; all of them is fine.
    fn insufficient_points(app) {
        let (user_id, token) = app.user_with_token(100);
        let course = app.course(1_000);
        let before = app.snapshot(user_id, &token);
        app.place(&token, json!({"course_ids": [course], "points": 101}))
            .assert_error(422, "insufficient_points");
        assert_eq!(app.snapshot(user_id, &token), before);
        assert_eq!(created(&app.place(&token, json!({"course_ids": [course], "points": 100})))["points_used"], 100);
        assert_eq!(app.me(&token)["points"], 0);
    }
}

on_both_backends! {
    /// Points worth more than total - discount: 422 points_exceed_payable.
    fn points_exceed_payable(app) {
        let (user_id, token) = app.user_with_token(5_000);
        let coupon = app.give_coupon(user_id, app.create_coupon(300, 0, None));
        let course = app.course(1_000);
        let before = app.snapshot(user_id, &token);
        app.place(&token, json!({"course_ids": [course], "user_coupon_id": coupon, "points": 701}))
            .assert_error(422, "points_exceed_payable");
        assert_eq!(app.snapshot(user_id, &token), before);
        let order = created(&app.place(&token, json!({"course_ids": [course], "user_coupon_id": coupon, "points": 699})));
        assert_eq!(order["payable_cents"], 1);
    }
}

on_both_backends! {
    fn unknown_course_is_not_found(app) {
        let (user_id, token) = app.user_with_token(0);
        let course = app.course(1_000);
        let before = app.snapshot(user_id, &token);
        let resp = app.place(&token, json!({"course_ids": [course, 999_999]}));
        resp.assert_error(404, "course_not_found");
        assert!(resp.error_message().contains("999999"), "{}", resp.text);
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// A course taken off sale: 409 course_not_on_sale; back on sale: placeable.
    fn course_not_on_sale(app) {
        let (user_id, token) = app.user_with_token(0);
        let course = app.course(1_000);
        app.set_on_sale(course, false);
        let before = app.snapshot(user_id, &token);
        app.place(&token, json!({"course_ids": [course]})).assert_error(409, "course_not_on_sale");
        assert_eq!(app.snapshot(user_id, &token), before);
        app.set_on_sale(course, true);
        created(&app.place(&token, json!({"course_ids": [course]})));
    }
}

on_both_backends! {
    /// A course in a paid order is owned (grants are asynchronous): 409 course_already_owned,
    /// also next to a course that is not owned.
    fn course_already_owned(app) {
        let (user_id, token) = app.user_with_token(0);
        let coupon = app.give_coupon(user_id, app.create_coupon(10_000, 0, None));
        let (owned, other) = (app.course(1_000), app.course(1_000));
        let paid = created(&app.place(&token, json!({"course_ids": [owned], "user_coupon_id": coupon})));
        assert_eq!(paid["status"], "paid");
        // The grant lands asynchronously; compare against the state after it.
        wait_for("the grant of the paid order", Duration::from_secs(30), || {
            let courses = app.admin_user(user_id)["courses"].clone();
            if courses.as_array().is_some_and(|c| c.len() == 1) { Ok(()) } else { Err(courses.to_string()) }
        });
        let before = app.snapshot(user_id, &token);
        for body in [json!({"course_ids": [owned]}), json!({"course_ids": [other, owned]})] {
            app.place(&token, body).assert_error(409, "course_already_owned");
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// A course in one of the user's pending orders: 409 course_in_pending_order; disjoint
    /// pending orders are allowed, and another user may buy the same course.
    fn course_in_pending_order_and_disjoint_orders(app) {
        let (user_id, token) = app.user_with_token(0);
        let (a, b, c, d) = (app.course(100), app.course(200), app.course(300), app.course(400));
        created(&app.place(&token, json!({"course_ids": [a, b]})));
        let before = app.snapshot(user_id, &token);
        let resp = app.place(&token, json!({"course_ids": [c, b]}));
        resp.assert_error(409, "course_in_pending_order");
        assert!(resp.error_message().contains(&b.to_string()), "{}", resp.text);
        assert_eq!(app.snapshot(user_id, &token), before);
        created(&app.place(&token, json!({"course_ids": [c, d]})));
        let (_, other) = app.user_with_token(0);
        created(&app.place(&other, json!({"course_ids": [a, b, c, d]})));
    }
}

on_both_backends! {
    /// Spending points writes one `spend` ledger row with the order, at its creation time;
    /// no row for 0 points.
    fn points_spend_ledger_row(app) {
        let (user_id, token) = app.user_with_token(1_000);
        let (a, b) = (app.course(1_000), app.course(1_000));
        let order = created(&app.place(&token, json!({"course_ids": [a], "points": 300})));
        created(&app.place(&token, json!({"course_ids": [b], "points": 0})));
        let user = app.admin_user(user_id);
        assert_keys(&user, &["id", "name", "points", "initial_points", "ledger", "coupons", "courses"]);
        assert_eq!((&user["points"], &user["initial_points"]), (&json!(700), &json!(1_000)));
        let ledger = user["ledger"].as_array().unwrap();
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        assert_keys(&ledger[0], &["order_no", "kind", "delta", "at"]);
        assert_eq!((&ledger[0]["order_no"], &ledger[0]["kind"], &ledger[0]["delta"]), (&order["order_no"], &json!("spend"), &json!(-300)));
        assert_eq!(timestamp(&ledger[0]["at"]), timestamp(&order["created_at"]));
        assert_eq!(app.me(&token)["points"], 700);
    }
}

on_both_backends! {
    /// Another user's order, or no such order: 404 order_not_found.
    fn another_users_order_is_not_found(app) {
        let (_, owner) = app.user_with_token(0);
        let (_, other) = app.user_with_token(0);
        let order = created(&app.place(&owner, json!({"course_ids": [app.course(1_000)]})));
        app.get_order(&other, order_no(&order)).assert_error(404, "order_not_found");
        app.get_order(&owner, "no-such-order").assert_error(404, "order_not_found");
        assert_eq!(app.get_order(&owner, order_no(&order)).assert_status(200), &order);
    }
}

on_both_backends! {
    /// GET /api/me: id, name, points, every coupon of the user by id (whatever its state),
    /// owned course ids ascending.
    fn me_shape(app) {
        let user = app.create_user("ada", 50);
        let user_id = user["id"].as_i64().unwrap();
        let token = app.token(user_id);
        let big = app.create_coupon(10_000, 0, None);
        let small = app.create_coupon(100, 0, Some("2999-01-01T00:00:00Z"));
        let used = app.give_coupon(user_id, big);
        let unused = app.give_coupon(user_id, small);
        let (_, stranger_token) = app.user_with_token(0);
        let (low, high, pending) = (app.course(100), app.course(200), app.course(300));
        // One paid order holding [high, low]; course_ids come back ascending.
        created(&app.place(&token, json!({"course_ids": [high, low], "user_coupon_id": used})));
        created(&app.place(&token, json!({"course_ids": [pending], "points": 10})));
        let me = app.me(&token);
        assert_keys(&me, &["id", "name", "points", "coupons", "course_ids"]);
        assert_eq!((&me["id"], &me["name"], &me["points"]), (&json!(user_id), &json!("ada"), &json!(40)));
        assert_eq!(me["course_ids"], json!([low.min(high), low.max(high)]), "owned = paid, ascending; pending is not owned");
        let coupons = me["coupons"].as_array().unwrap();
        assert_eq!(coupons.len(), 2);
        for c in coupons {
            assert_keys(c, &USER_COUPON_KEYS);
            assert_eq!(c["user_id"], user_id);
        }
        assert_eq!(coupons[0]["user_coupon_id"], used);
        assert_eq!((&coupons[0]["coupon_id"], &coupons[0]["status"], &coupons[0]["valid_until"]), (&json!(big), &json!("used"), &Value::Null));
        assert_eq!(coupons[1]["user_coupon_id"], unused);
        assert_eq!((&coupons[1]["status"], &coupons[1]["order_no"], &coupons[1]["valid_until"]), (&json!("unused"), &Value::Null, &json!("2999-01-01T00:00:00.000Z")));
        assert_eq!((&coupons[1]["discount_cents"], &coupons[1]["min_spend_cents"], &coupons[1]["title"]), (&json!(100), &json!(0), &json!("coupon")));
        let stranger = app.me(&stranger_token);
        assert_eq!((&stranger["coupons"], &stranger["course_ids"]), (&json!([]), &json!([])));
    }
}

on_both_backends! {
    /// 404 beats 409 whatever their order in the body; within a class the first bad course in
    /// request order wins.
    fn error_precedence_between_courses(app) {
        let (user_id, token) = app.user_with_token(100);
        let (off, in_pending, fine) = (app.course(100), app.course(100), app.course(100));
        created(&app.place(&token, json!({"course_ids": [in_pending]})));
        app.set_on_sale(off, false);
        let before = app.snapshot(user_id, &token);
        let cases = [
            (json!([off, 999_999]), 404, "course_not_found"),
            (json!([in_pending, fine, 999_998]), 404, "course_not_found"),
            (json!([off, in_pending]), 409, "course_not_on_sale"),
            (json!([fine, in_pending, off]), 409, "course_in_pending_order"),
        ];
        for (ids, status, code) in cases {
            app.place(&token, json!({"course_ids": ids})).assert_error(status, code);
        }
        let resp = app.place(&token, json!({"course_ids": [fine, 999_997, 999_996]}));
        resp.assert_error(404, "course_not_found");
        assert!(resp.error_message().contains("999997") && !resp.error_message().contains("999996"), "{}", resp.text);
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// 400 > 404 > 409 > 422 across courses, coupons and points.
    fn error_precedence_across_classes(app) {
        let (user_id, token) = app.user_with_token(100);
        let (owner, _) = app.user_with_token(0);
        let theirs = app.give_coupon(owner, app.create_coupon(100, 0, None));
        let expired = app.give_coupon(user_id, app.create_coupon(100, 0, Some("2020-01-01T00:00:00Z")));
        let locked = app.give_coupon(user_id, app.create_coupon(100, 0, None));
        let (off, fine, other) = (app.course(1_000), app.course(1_000), app.course(1_000));
        created(&app.place(&token, json!({"course_ids": [other], "user_coupon_id": locked})));
        app.set_on_sale(off, false);
        let before = app.snapshot(user_id, &token);
        let cases = [
            // 400 before 404
            (json!({"course_ids": [999_999, 999_999]}), 400, "invalid_course_ids"),
            (json!({"course_ids": [999_999], "user_coupon_id": 999_999, "points": -1}), 400, "invalid_points"),
            // 404 before 409
            (json!({"course_ids": [999_999], "user_coupon_id": locked}), 404, "course_not_found"),
            (json!({"course_ids": [off], "user_coupon_id": theirs}), 404, "coupon_not_found"),
            // 409 before 422
            (json!({"course_ids": [off], "user_coupon_id": expired}), 409, "course_not_on_sale"),
            (json!({"course_ids": [fine], "user_coupon_id": locked, "points": 101}), 409, "coupon_not_usable"),
            (json!({"course_ids": [off], "points": 101}), 409, "course_not_on_sale"),
        ];
        for (body, status, code) in cases {
            let resp = app.place(&token, body.clone());
            assert_eq!((resp.status, resp.error_code()), (status, code), "{body} -> {}", resp.text);
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// 413 > 401 > 400: an oversize body without a token is 413; a malformed body without (or
    /// with a bad) token is 401.
    fn error_precedence_of_size_auth_and_shape(app) {
        let (user_id, token) = app.user_with_token(0);
        let course = app.course(500);
        let before = app.snapshot(user_id, &token);
        let huge = vec![b'{'; 70_000];
        app.post_order_raw(None, &[], &huge).assert_error(413, "payload_too_large");
        app.post_order_raw(Some("garbage"), &[], &huge).assert_error(413, "payload_too_large");
        app.post_order_raw(None, &[], b"{not json").assert_unauthenticated();
        app.post_order_raw(Some("garbage"), &[], b"{not json").assert_unauthenticated();
        app.post_order_raw(None, &[], br#"{"course_ids": []}"#).assert_unauthenticated();
        app.post_order_raw(Some(&token), &[], b"{not json").assert_error(400, "invalid_request");
        // A bad Idempotency-Key (400) without a token is 401 too.
        let long_key = "k".repeat(300);
        app.post_order_raw(None, &[("Idempotency-Key", &long_key)], b"{}").assert_unauthenticated();
        // A valid token whose `sub` names no user is 401 whatever else is wrong, and whether
        // or not the request carries an Idempotency-Key.
        let nobody = app.token(999_999);
        let fine = json!({"course_ids": [course]}).to_string();
        let unknown_course = json!({"course_ids": [course + 1000]}).to_string();
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let shapes: [(Headers, &[u8]); 7] = [
            (&[], b"{not json"),
            (&[], br#"{"course_ids": []}"#),
            (&[("Idempotency-Key", &long_key)], fine.as_bytes()),
            (&[], fine.as_bytes()),
            (&[], unknown_course.as_bytes()),
            (&[("Idempotency-Key", "k1")], fine.as_bytes()),
            (&[("Idempotency-Key", "k1")], b"{not json"),
        ];
        for (headers, body) in shapes {
            app.post_order_raw(Some(&nobody), headers, body).assert_unauthenticated();
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

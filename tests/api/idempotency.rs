//! `Idempotency-Key` on `POST /api/orders` (SPEC §Clients): the first response after the shape
//! checks (201, 404, 409, 422) is replayed byte for byte for the same key and canonical body,
//! per user; a different body is 422 `idempotency_key_reused`; a key in flight is 409.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

const REPLAYED: &str = "Idempotent-Replayed";

/// Asserts that `replay` is `first` sent again: same status and bytes, marked replayed.
#[track_caller]
fn assert_replay_of(replay: &Resp, first: &Resp) {
    assert_eq!(
        (replay.status, replay.text.as_str()),
        (first.status, first.text.as_str()),
        "a replay differs from the first response"
    );
    assert_eq!(
        replay.header(REPLAYED),
        Some("true"),
        "{:?}",
        replay.headers
    );
    assert_ne!(
        first.header(REPLAYED),
        Some("true"),
        "the first response is marked replayed"
    );
}

/// Orders of a user, counted by their `spend` ledger rows (every order here spends points).
fn spends(app: &TestApp, user_id: i64) -> Vec<Value> {
    app.admin_user(user_id)["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["kind"] == "spend")
        .cloned()
        .collect()
}

on_both_backends! {
    /// Same key, same canonical body: the same 201 again, byte for byte, one order.
    fn same_key_and_body_replays_the_201(app) {
        let (user_id, token) = app.user_with_token(100);
        let course = app.course(1_000);
        let body = json!({"course_ids": [course], "points": 10});
        let first = app.place_with_key(&token, "key-1", &body);
        let order = first.assert_status(201).clone();
        let replay = app.place_with_key(&token, "key-1", &body);
        assert_replay_of(&replay, &first);
        // The same canonical body written differently (defaults spelled out, keys reordered,
        // whitespace) is the same request.
        let spelled_out = format!(r#"{{ "points" : 10, "user_coupon_id": null, "course_ids": [ {course} ] }}"#);
        let replay = app.post_order_raw(Some(&token), &[("Idempotency-Key", "key-1")], spelled_out.as_bytes());
        assert_replay_of(&replay, &first);
        let ledger = spends(app, user_id);
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        assert_eq!(ledger[0]["order_no"], order["order_no"]);
        assert_eq!(app.me(&token)["points"], 90);
        // Without a key the request is a new one (and meets the pending order).
        app.place(&token, body).assert_error(409, "course_in_pending_order");
    }
}

on_both_backends! {
    /// Same key, different body: 422 idempotency_key_reused, nothing changes.
    fn same_key_other_body_is_reused(app) {
        let (user_id, token) = app.user_with_token(100);
        let (a, b) = (app.course(1_000), app.course(1_000));
        app.place_with_key(&token, "k", &json!({"course_ids": [a], "points": 1})).assert_status(201);
        let before = app.snapshot(user_id, &token);
        for other in [
            json!({"course_ids": [b], "points": 1}),
            json!({"course_ids": [a], "points": 2}),
            json!({"course_ids": [a]}),
            json!({"course_ids": [a], "points": 1, "user_coupon_id": 1}),
        ] {
            let resp = app.place_with_key(&token, "k", &other);
            resp.assert_error(422, "idempotency_key_reused");
            assert_ne!(resp.header(REPLAYED), Some("true"));
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// Keys are scoped to the user: one key, two users, two orders.
    fn keys_are_scoped_per_user(app) {
        let (alice_id, alice) = app.user_with_token(10);
        let (bob_id, bob) = app.user_with_token(10);
        let course = app.course(1_000);
        let body = json!({"course_ids": [course], "points": 5});
        let a = app.place_with_key(&alice, "shared-key", &body);
        let b = app.place_with_key(&bob, "shared-key", &body);
        let (a, b) = (a.assert_status(201), b.assert_status(201));
        assert_ne!(a["order_no"], b["order_no"]);
        assert_eq!((&a["user_id"], &b["user_id"]), (&json!(alice_id), &json!(bob_id)));
        assert_eq!((spends(app, alice_id).len(), spends(app, bob_id).len()), (1, 1));
    }
}

on_both_backends! {
    /// A stored 404, 409 or 422 is replayed too, even after the world changed; a 400 (shape)
    /// is not stored.
    fn stored_errors_are_replayed(app) {
        let (user_id, token) = app.user_with_token(10);
        let course = app.course(1_000);
        // 409, then the course goes back on sale: the key still answers 409.
        app.set_on_sale(course, false);
        let body = json!({"course_ids": [course], "points": 1});
        let first = app.place_with_key(&token, "k409", &body);
        first.assert_error(409, "course_not_on_sale");
        app.set_on_sale(course, true);
        assert_replay_of(&app.place_with_key(&token, "k409", &body), &first);
        // 404.
        let missing = json!({"course_ids": [999_999]});
        let first = app.place_with_key(&token, "k404", &missing);
        first.assert_error(404, "course_not_found");
        assert_replay_of(&app.place_with_key(&token, "k404", &missing), &first);
        // 422.
        let greedy = json!({"course_ids": [course], "points": 11});
        let first = app.place_with_key(&token, "k422", &greedy);
        first.assert_error(422, "insufficient_points");
        assert_replay_of(&app.place_with_key(&token, "k422", &greedy), &first);
        // 400 is not stored: the key is still free for a good request.
        let bad = app.place_with_key(&token, "k400", &json!({"course_ids": [course], "points": -1}));
        bad.assert_error(400, "invalid_points");
        let good = app.place_with_key(&token, "k400", &body);
        good.assert_status(201);
        assert_ne!(good.header(REPLAYED), Some("true"));
        assert_eq!(spends(app, user_id).len(), 1);
    }
}

on_both_backends! {
    /// 20 identical requests at once: one order, and all get the same response (the duplicates
    /// wait for the first and replay its 201 byte for byte).
    fn concurrent_identical_requests_make_one_order(app) {
        let (user_id, token) = app.user_with_token(100);
        let course = app.course(1_000);
        let body = json!({"course_ids": [course], "points": 1});
        let answers = in_parallel(20, |_| app.place_with_key(&token, "race", &body));
        let created: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
        assert!(!created.is_empty(), "no 201 among {:?}", answers.iter().map(|r| &r.text).collect::<Vec<_>>());
        let order_no = &created[0].json["order_no"];
        for resp in &answers {
            assert_eq!((resp.status, &resp.text), (201, &created[0].text), "every answer is the same 201");
        }
        let originals = created.iter().filter(|r| r.header(REPLAYED) != Some("true")).count();
        assert_eq!(originals, 1, "exactly one 201 is not a replay");
        let ledger = spends(app, user_id);
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        assert_eq!(&ledger[0]["order_no"], order_no);
        assert_eq!(app.me(&token)["points"], 99);
        // Afterwards the key replays.
        let replay = app.place_with_key(&token, "race", &body);
        assert_eq!((replay.status, &replay.json["order_no"], replay.header(REPLAYED)), (201, order_no, Some("true")));
    }
}

on_both_backends! {
    /// A key of 1-255 characters; 256 is 400 invalid_request and changes nothing.
    fn key_length_is_checked(app) {
        let (user_id, token) = app.user_with_token(10);
        let course = app.course(1_000);
        let body = json!({"course_ids": [course]});
        let before = app.snapshot(user_id, &token);
        app.place_with_key(&token, &"k".repeat(256), &body).assert_error(400, "invalid_request");
        app.place_with_key(&token, &"k".repeat(1_000), &body).assert_error(400, "invalid_request");
        assert_eq!(app.snapshot(user_id, &token), before);
        let long = "k".repeat(255);
        let first = app.place_with_key(&token, &long, &body);
        first.assert_status(201);
        assert_replay_of(&app.place_with_key(&token, &long, &body), &first);
        let one = app.place_with_key(&token, "1", &json!({"course_ids": [app.course(5)]}));
        one.assert_status(201);
    }
}

on_both_backends! {
    /// A key is kept 24 hours: a day later the same key is new again (a different body is
    /// placed, not refused as reused).
    fn keys_expire_after_24_hours(app) {
        use diesel::prelude::*;
        use order_engine::db::schema::idempotency_keys;
        let (_, token) = app.user_with_token(0);
        let (first, second) = (app.course(1_000), app.course(1_000));
        let key = "kept-a-day";
        let placed = app.place_with_key(&token, key, &json!({"course_ids": [first]}));
        placed.assert_status(201);
        app.place_with_key(&token, key, &json!({"course_ids": [second]}))
            .assert_error(422, "idempotency_key_reused");

        // Age the stored key by just over a day.
        let day_ago = chrono::Utc::now().naive_utc() - chrono::TimeDelta::hours(24) - chrono::TimeDelta::seconds(1);
        diesel::update(idempotency_keys::table.filter(idempotency_keys::idempotency_key.eq(key)))
            .set(idempotency_keys::created_at.eq(order_engine::db::sql_types::At(day_ago)))
            .execute(&mut app.db())
            .expect("age the key");
        let again = app.place_with_key(&token, key, &json!({"course_ids": [second]}));
        assert_eq!(again.assert_status(201)["items"][0]["course_id"], second);
        assert!(again.header("Idempotent-Replayed").is_none());
        assert_ne!(again.json["order_no"], placed.json["order_no"]);
    }
}

/// A retry while the first request is still running (here: held up on its user's row lock for
/// longer than a duplicate waits) gets 409 idempotency_key_in_use; once the first finishes,
/// the key replays its 201. PostgreSQL only: on SQLite the lock that holds the first request up
/// holds every writer.
#[test]
fn a_retry_while_the_first_is_in_flight_is_409() {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use order_engine::db::schema::idempotency_keys;

    let Some(app) = TestApp::spawn_if_available(Backend::Postgres) else {
        return;
    };
    let (user_id, token) = app.user_with_token(0);
    let body = json!({"course_ids": [app.course(1_000)]});
    let mut lock = app.db();
    lock.batch_execute(&format!(
        "BEGIN; UPDATE users SET points = points WHERE id = {user_id}"
    ))
    .expect("hold the user's row");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| app.place_with_key(&token, "slow", &body));
        wait_for(
            "the first request to claim its key",
            Duration::from_secs(30),
            || {
                let claimed: i64 = idempotency_keys::table
                    .filter(idempotency_keys::idempotency_key.eq("slow"))
                    .count()
                    .get_result(&mut app.db())
                    .map_err(|e| e.to_string())?;
                if claimed == 1 {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            },
        );
        app.place_with_key(&token, "slow", &body)
            .assert_error(409, "idempotency_key_in_use");
        lock.batch_execute("COMMIT")
            .expect("release the user's row");
        let first = first.join().expect("the first request");
        first.assert_status(201);
        let replay = app.place_with_key(&token, "slow", &body);
        assert_eq!((replay.status, &replay.text), (201, &first.text));
        assert_eq!(replay.header(REPLAYED), Some("true"));
    });
    crate::invariants::check(&app);
}

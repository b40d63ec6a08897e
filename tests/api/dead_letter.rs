//! A grant that fails for real (a trigger in the test's own database rejects it) is retried
//! with backoff, dead-lettered after `effects.max_attempts`, and applied once an admin retries
//! it after the fault is gone.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

fn dead_lettered(app: &TestApp) -> Vec<Value> {
    app.admin("GET", "/admin/effects?status=dead_lettered", None)
        .assert_status(200)["data"]
        .as_array()
        .expect("data")
        .clone()
}

on_both_backends! {
    fn grant_dead_lettered_then_retried(app)
        with [("effects.max_attempts", "3"), ("effects.backoff_base_ms", "50")]
    {
        let (user_id, token) = app.user_with_token(0);
        let course = app.course(1_500);
        let order = app.place_ok(&token, &[course], None, 0);
        let no = order["order_no"].as_str().unwrap();
        let mut conn = app.db();
        reject_grants(&mut conn);

        app.pay(&order);
        let effect = wait_for("the grant to be dead-lettered", Duration::from_secs(30), || {
            let list = dead_lettered(app);
            match list.iter().find(|e| e["order_no"] == no) {
                Some(e) => Ok(e.clone()),
                None => Err(format!("{list:?}; order view {}", app.admin_order(no)["effects"])),
            }
        });
        assert_eq!(effect["kind"], "grant", "{effect}");
        assert_eq!(effect["status"], "dead_lettered", "{effect}");
        assert_eq!(effect["attempts"], 3, "{effect}");
        let error = effect["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("injected"), "last_error {error:?}");
        assert_eq!(effect["order"]["order_no"], no);
        assert_eq!(effect["order"]["status"], "paid");
        assert_eq!(dead_lettered(app).len(), 1);

        let stats = app.admin("GET", "/admin/actors", None).assert_status(200).clone();
        assert_eq!(stats["effects"], json!({"pending": 0, "dead_lettered": 1}), "{stats}");
        let view = app.admin_order(no);
        assert_eq!(view["effects"], json!([{"kind": "grant", "status": "dead_lettered",
                                            "attempts": 3, "last_error": error}]));
        assert_eq!(app.me(&token)["course_ids"], json!([course]), "a paid course is owned");
        assert_eq!(app.admin_user(user_id)["courses"], json!([]));

        // No attempt is made after the last one.
        let pending_list = app.admin("GET", "/admin/effects?status=pending", None).assert_status(200).clone();
        assert_eq!(pending_list["data"], json!([]));

        let id = effect["id"].as_i64().expect("effect id");
        allow_grants(&mut conn);
        app.admin("POST", &format!("/admin/effects/{id}/retry"), None).assert_status(200);
        let view = app.wait_effects_done(no);
        assert_eq!(view["effects"][0]["last_error"], Value::Null, "{view}");
        assert!(dead_lettered(app).is_empty());
        let stats = app.admin("GET", "/admin/actors", None).assert_status(200).clone();
        assert_eq!(stats["effects"], json!({"pending": 0, "dead_lettered": 0}), "{stats}");
        assert_eq!(app.admin_user(user_id)["courses"][0]["course_id"], course);
        // Retrying an effect that is not dead-lettered any more is 409 (SPEC §Admins), one
        // that does not exist 404; neither changes anything.
        let before = app.admin("GET", "/admin/effects?limit=100", None).assert_status(200).clone();
        app.admin("POST", &format!("/admin/effects/{id}/retry"), None)
            .assert_error(409, "effect_not_dead_lettered");
        app.admin("POST", &format!("/admin/effects/{}/retry", id + 1000), None)
            .assert_error(404, "effect_not_found");
        assert_eq!(app.admin("GET", "/admin/effects?limit=100", None).assert_status(200), &before);
    }
}

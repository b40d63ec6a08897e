use serde_json::json;

use crate::on_both_backends;

on_both_backends! {
    /// The README walkthrough in miniature: catalog, token, place, read back.
    fn place_and_read_back(app) {
        let (user_id, token) = app.user_with_token(1_000);
        let course = app.course(5_000);
        let coupon = app.create_coupon(500, 0, None);
        let user_coupon = app.give_coupon(user_id, coupon);
        let placed = app.place(&token, json!({"course_ids": [course], "user_coupon_id": user_coupon, "points": 300}));
        let order = placed.assert_status(201).clone();
        assert_eq!(order["status"], "pending");
        assert_eq!(order["payable_cents"], 5_000 - 500 - 300);
        let no = order["order_no"].as_str().unwrap();
        let read = app.as_user(&token, "GET", &format!("/api/orders/{no}"), None);
        assert_eq!(read.assert_status(200), &order);
        assert_eq!(app.me(&token)["points"], 700);
    }
}

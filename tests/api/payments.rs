//! The payment-provider routes (SPEC "Payment providers") while every provider is off — this
//! build has no Alipay, WeChat Pay or Stripe adapter yet: `POST /api/orders/{order_no}/payments`
//! answers its own 413, 401 and 400 and then 404 `provider_not_enabled`; each notification
//! route answers 404 `provider_not_enabled` before anything else; nothing changes. An order's
//! admin view lists its (no) payments, and a late payment names its provider, `generic`, with
//! no provider refund.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends! {
    fn with_every_provider_off_the_routes_say_so(app) {
        let (_, token) = app.user_with_token(100);
        let order = app.place_ok(&token, &[app.course(1_000)], None, 0);
        let no = order["order_no"].as_str().unwrap().to_string();
        let path = format!("/api/orders/{no}/payments");
        let before = app.admin_order(&no);
        let me_before = app.me(&token);

        for provider in ["alipay", "wechatpay", "stripe"] {
            let body = json!({"provider": provider});
            app.as_user(&token, "POST", &path, Some(body.clone()))
                .assert_error(404, "provider_not_enabled");
            // Whatever the order: the provider is what is off.
            app.as_user(&token, "POST", "/api/orders/nosuchorder1/payments", Some(body.clone()))
                .assert_error(404, "provider_not_enabled");
            let body = body.to_string();
            app.request("POST", &path, &[], Some(body.as_bytes()))
                .assert_unauthenticated();
        }
        for bad in [
            json!({"provider": "paypal"}),
            json!({"provider": 1}),
            json!({}),
            json!({"provider": "stripe", "amount": 1}),
        ] {
            app.as_user(&token, "POST", &path, Some(bad))
                .assert_error(400, "invalid_request");
        }
        let huge = format!(r#"{{"provider":"stripe","x":"{}"}}"#, "a".repeat(70_000));
        let resp = app.raw_request("POST", &path, &[], huge.as_bytes());
        resp.assert_error(413, "payload_too_large");

        for route in [
            "/api/payments/alipay/notify",
            "/api/payments/wechatpay/notify",
            "/api/payments/stripe/webhook",
        ] {
            for (headers, body) in [
                (vec![], "trade_status=TRADE_SUCCESS&out_trade_no=x".as_bytes()),
                (vec![("Stripe-Signature", "t=1,v1=00")], br#"{"type":"x"}"#.as_slice()),
                (vec![], b"".as_slice()),
            ] {
                app.raw_request("POST", route, &headers, body)
                    .assert_error(404, "provider_not_enabled");
            }
            app.request("GET", route, &[], None)
                .assert_error(405, "method_not_allowed");
        }

        // Nothing changed (the actor's remaining_ms aside: time passes).
        let after = app.admin_order(&no);
        assert_eq!(after["order"], before["order"]);
        assert_eq!(after["effects"], before["effects"]);
        assert_eq!(after["actor"]["state"], "armed");
        assert_eq!(app.me(&token), me_before);
        assert_keys(&after, &["actor", "effects", "order", "payments"]);
        assert_eq!(after["payments"], json!([]));
    }
}

on_both_backends! {
    fn a_late_payment_names_its_provider(app) {
        let (_, token) = app.user_with_token(0);
        let order = app.place_ok(&token, &[app.course(500)], None, 0);
        let no = order["order_no"].as_str().unwrap();
        app.as_user(&token, "POST", &format!("/api/orders/{no}/cancel"), None)
            .assert_status(200);
        let trade = trade_no();
        app.callback(no, &trade, SUCCESS, 500).assert_status(200);
        let list = app.admin("GET", "/admin/late-payments", None);
        let entry: &Value = list.assert_status(200)["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["trade_no"] == trade.as_str())
            .expect("the late payment is listed");
        assert_keys(
            entry,
            &[
                "amount_cents",
                "id",
                "order_no",
                "provider",
                "provider_paid_at",
                "reason",
                "received_at",
                "refund",
                "trade_no",
            ],
        );
        assert_eq!(entry["provider"], "generic");
        assert_eq!(entry["refund"], Value::Null);
        assert_eq!(entry["reason"], "late_payment");
    }
}

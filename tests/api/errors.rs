//! Every 400/401/404/405/413 of the client and admin routes (SPEC §Errors): each response is
//! exactly `{"error": {"code", "message"}}` and changes nothing.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// Asserts the status, the code and the exact envelope (no other keys anywhere).
#[track_caller]
fn refused(resp: &Resp, status: u16, code: &str) {
    resp.assert_error(status, code);
    assert_keys(&resp.json["error"], &["code", "message"]);
    assert!(
        !resp.error_message().is_empty(),
        "empty error message: {}",
        resp.text
    );
    let content_type = resp.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error with Content-Type {content_type:?}: {}",
        resp.text
    );
}

/// A client and a course it could buy.
fn client(app: &TestApp) -> (i64, String, i64) {
    let (user_id, token) = app.user_with_token(1_000);
    (user_id, token, app.course(1_000))
}

on_both_backends! {
    /// Malformed JSON, wrong types, missing or unknown fields, bad course_ids and points.
    fn bad_order_bodies_are_400(app) {
        let (user_id, token, c) = client(app);
        let too_many: Vec<i64> = (1..=21).collect();
        let huge = "100000000000000000000";
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "invalid_request"),
            ("{".into(), "invalid_request"),
            ("{not json}".into(), "invalid_request"),
            ("null".into(), "invalid_request"),
            ("[]".into(), "invalid_request"),
            (format!("[{c}]"), "invalid_request"),
            ("\"course_ids\"".into(), "invalid_request"),
            ("{}".into(), "invalid_request"),
            (r#"{"points": 0}"#.into(), "invalid_request"),
            (r#"{"course_ids": null}"#.into(), "invalid_request"),
            (format!(r#"{{"course_ids": {c}}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": ["{c}"]}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}.5]}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "points": 1.5}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "points": "10"}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "points": null}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "points": true}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "user_coupon_id": "1"}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "coupon_id": 1}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "extra": null}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "course_ids": [{c}]}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}]}} trailing"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "points": {huge}}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{huge}]}}"#), "invalid_request"),
            (format!(r#"{{"course_ids": [{c}], "user_coupon_id": {huge}}}"#), "invalid_request"),
            (r#"{"course_ids": []}"#.into(), "invalid_course_ids"),
            (format!(r#"{{"course_ids": [{c}, {c}]}}"#), "invalid_course_ids"),
            (format!(r#"{{"course_ids": [{c}, 999999, {c}]}}"#), "invalid_course_ids"),
            (json!({"course_ids": too_many}).to_string(), "invalid_course_ids"),
            (format!(r#"{{"course_ids": [{c}], "points": -1}}"#), "invalid_points"),
            (format!(r#"{{"course_ids": [{c}], "points": {}}}"#, i64::MIN), "invalid_points"),
        ];
        let before = app.snapshot(user_id, &token);
        for (body, code) in &cases {
            let resp = app.post_order_raw(Some(&token), &[], body.as_bytes());
            assert_eq!((resp.status, resp.error_code()), (400, *code), "body {body:?} -> {}", resp.text);
            refused(&resp, 400, code);
        }
        // 20 course ids is a valid shape (the courses do not exist: 404).
        let twenty: Vec<i64> = (1_000_001..=1_000_020).collect();
        refused(&app.place(&token, json!({"course_ids": twenty})), 404, "course_not_found");
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

/// Arithmetic overflow is 400: points x cents_per_point, and the sum of the prices.
fn overflow_is_400(app: &TestApp) {
    let (user_id, token) = app.user_with_token(i64::MAX);
    let c = app.course(1_000);
    let (big1, big2) = (app.course(i64::MAX / 2 + 1), app.course(i64::MAX / 2 + 1));
    let before = app.snapshot(user_id, &token);
    for points in [i64::MAX / 3 + 1, i64::MAX] {
        refused(
            &app.place(&token, json!({"course_ids": [c], "points": points})),
            400,
            "invalid_request",
        );
    }
    refused(
        &app.place(&token, json!({"course_ids": [big1, big2]})),
        400,
        "invalid_request",
    );
    assert_eq!(app.snapshot(user_id, &token), before);
    // One big course alone does not overflow.
    let order = app.place(&token, json!({"course_ids": [big1]}));
    assert_eq!(order.assert_status(201)["total_cents"], i64::MAX / 2 + 1);
}

mod overflow_is_400 {
    use super::*;
    const SETTINGS: &[(&str, &str)] = &[("pricing.cents_per_point", "3")];
    #[test]
    fn sqlite() {
        run_with(Backend::Sqlite, SETTINGS, super::overflow_is_400);
    }
    #[test]
    fn postgres() {
        run_with(Backend::Postgres, SETTINGS, super::overflow_is_400);
    }
}

/// Authorization header values that must not authenticate a client (`None`: no header).
fn bad_client_credentials(user_id: i64) -> Vec<(&'static str, Option<String>)> {
    use jsonwebtoken::Algorithm::*;
    let sub = user_id.to_string();
    let exp = unix_in(3_600);
    let unsigned = |claims: Value| {
        format!(
            "Bearer {}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(claims.to_string().as_bytes())
        )
    };
    let bearer = |t: String| Some(format!("Bearer {t}"));
    // A well-signed HS256 token whose `sub` is the given (non-canonical) string.
    let with_sub = |sub: String| bearer(jwt(&json!({"sub": sub, "exp": exp}), JWT_SECRET, HS256));
    vec![
        ("no header", None),
        ("empty bearer", Some("Bearer".into())),
        ("garbage", bearer("garbage".into())),
        ("three garbage parts", bearer("a.b.c".into())),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".into())),
        (
            "valid token, other scheme",
            Some(format!(
                "Token {}",
                jwt(&json!({"sub": sub, "exp": exp}), JWT_SECRET, HS256)
            )),
        ),
        (
            "expired",
            bearer(jwt(
                &json!({"sub": sub, "exp": unix_in(-5)}),
                JWT_SECRET,
                HS256,
            )),
        ),
        (
            "wrong secret",
            bearer(jwt(
                &json!({"sub": sub, "exp": exp}),
                "not-the-secret",
                HS256,
            )),
        ),
        (
            "HS384",
            bearer(jwt(&json!({"sub": sub, "exp": exp}), JWT_SECRET, HS384)),
        ),
        (
            "HS512",
            bearer(jwt(&json!({"sub": sub, "exp": exp}), JWT_SECRET, HS512)),
        ),
        ("alg none", Some(unsigned(json!({"sub": sub, "exp": exp})))),
        (
            "no exp",
            bearer(jwt(&json!({"sub": sub}), JWT_SECRET, HS256)),
        ),
        (
            "no sub",
            bearer(jwt(&json!({"exp": exp}), JWT_SECRET, HS256)),
        ),
        (
            "sub not a user",
            bearer(jwt(
                &json!({"sub": "999999", "exp": exp}),
                JWT_SECRET,
                HS256,
            )),
        ),
        (
            "numeric sub not a user",
            bearer(jwt(&json!({"sub": 999_999, "exp": exp}), JWT_SECRET, HS256)),
        ),
        (
            "sub not a number",
            bearer(jwt(&json!({"sub": "alice", "exp": exp}), JWT_SECRET, HS256)),
        ),
        (
            "sub zero",
            bearer(jwt(&json!({"sub": "0", "exp": exp}), JWT_SECRET, HS256)),
        ),
        (
            "sub negative",
            bearer(jwt(&json!({"sub": "-1", "exp": exp}), JWT_SECRET, HS256)),
        ),
        ("admin token", bearer(ADMIN_TOKEN.into())),
        (
            "nbf in the future",
            bearer(jwt(
                &json!({"sub": sub, "exp": exp, "nbf": unix_in(60)}),
                JWT_SECRET,
                HS256,
            )),
        ),
        (
            "crit header",
            bearer(jwt_with_header(
                &json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
                &json!({"sub": sub, "exp": exp}),
                JWT_SECRET,
            )),
        ),
        ("sub with a plus sign", with_sub(format!("+{user_id}"))),
        ("sub with a leading zero", with_sub(format!("0{user_id}"))),
        ("sub with a fraction", with_sub(format!("{user_id}.0"))),
        ("sub with a space", with_sub(format!(" {user_id}"))),
        ("sub with an exponent", with_sub(format!("{user_id}e0"))),
        (
            "numeric sub as a float",
            bearer(jwt(
                &json!({"sub": user_id as f64, "exp": exp}),
                JWT_SECRET,
                HS256,
            )),
        ),
    ]
}

on_both_backends! {
    /// Missing, garbage, expired, wrongly signed or wrong-algorithm JWTs and tokens naming no
    /// user: 401 unauthenticated with `WWW-Authenticate: Bearer`, on every client route.
    fn bad_client_tokens_are_401(app) {
        let (user_id, token, c) = client(app);
        let order = app.place(&token, json!({"course_ids": [c]})).assert_status(201).clone();
        let order_path = format!("/api/orders/{}", order["order_no"].as_str().unwrap());
        let body = json!({"course_ids": [app.course(500)]}).to_string();
        let before = app.snapshot(user_id, &token);
        for (what, authorization) in bad_client_credentials(user_id) {
            let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("Authorization", a.as_str())).collect();
            for (method, path, body) in [
                ("POST", "/api/orders", Some(body.as_bytes())),
                ("GET", "/api/me", None),
                ("GET", order_path.as_str(), None),
                ("GET", "/api/courses", None),
            ] {
                let resp = app.request(method, path, &headers, body);
                assert_eq!((resp.status, resp.header("WWW-Authenticate")), (401, Some("Bearer")), "{what}: {method} {path} -> {} {:?}", resp.text, resp.headers);
                refused(&resp, 401, "unauthenticated");
            }
        }
        assert_eq!(app.snapshot(user_id, &token), before);
        // Controls: the same user with a string or numeric sub is accepted, also with an `nbf`
        // already reached and a header with other unknown fields.
        for sub in [json!(user_id.to_string()), json!(user_id)] {
            let t = jwt(&json!({"sub": sub, "exp": unix_in(60)}), JWT_SECRET, jsonwebtoken::Algorithm::HS256);
            assert_eq!(app.me(&t)["id"], user_id);
        }
        let claims = json!({"sub": user_id.to_string(), "exp": unix_in(60), "nbf": unix_in(-1)});
        let reached = jwt(&claims, JWT_SECRET, jsonwebtoken::Algorithm::HS256);
        assert_eq!(app.me(&reached)["id"], user_id);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "k1", "x-note": 1});
        assert_eq!(app.me(&jwt_with_header(&header, &claims, JWT_SECRET))["id"], user_id);
    }
}

on_both_backends! {
    /// Admin routes without the admin token (none, wrong, a client JWT, no Bearer scheme): 401,
    /// before any body check.
    fn admin_routes_need_the_admin_token(app) {
        let (user_id, token, course) = client(app);
        let coupon = app.create_coupon(100, 0, None);
        let routes: Vec<(&str, String, Option<Value>)> = vec![
            ("POST", "/admin/users".into(), Some(json!({"name": "eve", "points": 5}))),
            ("GET", format!("/admin/users/{user_id}"), None),
            ("POST", format!("/admin/users/{user_id}/coupons"), Some(json!({"coupon_id": coupon}))),
            ("POST", "/admin/courses".into(), Some(json!({"title": "t", "price_cents": 1, "on_sale": true, "chapters": []}))),
            ("GET", "/admin/courses".into(), None),
            ("PATCH", format!("/admin/courses/{course}"), Some(json!({"on_sale": false}))),
            ("POST", "/admin/coupons".into(), Some(json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": null}))),
        ];
        let auths = [
            None,
            Some("Bearer".to_string()),
            Some("Bearer wrong-token".to_string()),
            Some(format!("Bearer {ADMIN_TOKEN}x")),
            Some(format!("Bearer {token}")),
            Some(ADMIN_TOKEN.to_string()),
            Some(format!("Basic {ADMIN_TOKEN}")),
        ];
        let before = app.snapshot(user_id, &token);
        for (method, path, body) in &routes {
            for auth in &auths {
                let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
                let body = body.as_ref().map(|b| b.to_string());
                let resp = app.request(method, path, &headers, body.as_deref().map(str::as_bytes));
                assert_eq!(resp.status, 401, "{method} {path} with {auth:?}: {}", resp.text);
                refused(&resp, 401, "unauthenticated");
                resp.assert_unauthenticated();
            }
            if body.is_some() {
                // 401 before 400: a malformed body without the token.
                refused(&app.request(method, path, &[], Some(b"{oops")), 401, "unauthenticated");
            }
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// Paths no route matches: 404 route_not_found; a known path with another method: 405
    /// method_not_allowed. With or without credentials.
    fn unknown_routes_and_methods(app) {
        let (user_id, token, _) = client(app);
        let client_auth = format!("Bearer {token}");
        let admin_auth = format!("Bearer {ADMIN_TOKEN}");
        let before = app.snapshot(user_id, &token);
        for path in ["/", "/nope", "/api", "/api/nope", "/api/orders/x/y/z", "/admin", "/admin/nope", "/admin/users/1/nope"] {
            for auth in [None, Some(client_auth.as_str()), Some(admin_auth.as_str())] {
                let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
                for method in ["GET", "POST"] {
                    let body = (method == "POST").then_some(&b"{}"[..]);
                    refused(&app.request(method, path, &headers, body), 404, "route_not_found");
                }
            }
        }
        for (method, path, auth) in [
            ("GET", "/api/orders", &client_auth),
            ("PUT", "/api/orders", &client_auth),
            ("DELETE", "/api/orders/abc", &client_auth),
            ("POST", "/api/me", &client_auth),
            ("DELETE", "/api/me", &client_auth),
            ("GET", "/admin/users", &admin_auth),
            ("DELETE", "/admin/users/1", &admin_auth),
            ("GET", "/admin/users/1/coupons", &admin_auth),
            ("DELETE", "/admin/courses", &admin_auth),
            ("GET", "/admin/courses/1", &admin_auth),
            ("GET", "/admin/coupons", &admin_auth),
            ("POST", "/healthz", &admin_auth),
            ("DELETE", "/readyz", &admin_auth),
        ] {
            let body = matches!(method, "POST" | "PUT").then_some(&b"{}"[..]);
            let resp = app.request(method, path, &[("Authorization", auth)], body);
            assert_eq!(resp.status, 405, "{method} {path}: {}", resp.text);
            refused(&resp, 405, "method_not_allowed");
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// A body over server.max_body_bytes (65536) is 413 on client and admin routes; exactly
    /// 65536 bytes is read.
    fn bodies_over_64_kib_are_413(app) {
        let (user_id, token, c) = client(app);
        let pad = |json: String, len: usize| {
            let mut body = json.into_bytes();
            body.resize(len, b' ');
            body
        };
        let order_body = json!({"course_ids": [c]}).to_string();
        let before = app.snapshot(user_id, &token);
        refused(&app.post_order_raw(Some(&token), &[], &pad(order_body.clone(), 65_537)), 413, "payload_too_large");
        refused(&app.post_order_raw(Some(&token), &[], &vec![b'x'; 1 << 20]), 413, "payload_too_large");
        let admin_auth = format!("Bearer {ADMIN_TOKEN}");
        let user_body = pad(json!({"name": "big", "points": 1}).to_string(), 65_537);
        refused(&app.request("POST", "/admin/users", &[("Authorization", &admin_auth)], Some(&user_body)), 413, "payload_too_large");
        refused(&app.request("POST", "/admin/users", &[], Some(&user_body)), 413, "payload_too_large");
        let course_body = pad(json!({"title": "big", "price_cents": 1}).to_string(), 65_537);
        refused(&app.request("POST", "/admin/courses", &[("Authorization", &admin_auth)], Some(&course_body)), 413, "payload_too_large");
        assert_eq!(app.snapshot(user_id, &token), before);
        // The limit itself is accepted.
        app.post_order_raw(Some(&token), &[], &pad(order_body, 65_536)).assert_status(201);
    }
}

on_both_backends! {
    /// A coupon's `valid_until` outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z after
    /// its offset, or with a 60th second, is 400 invalid_request and creates nothing; the edges
    /// of the range are kept (sub-millisecond digits truncated).
    fn out_of_range_valid_until_is_400(app) {
        let first = app.create_coupon(100, 0, None);
        for valid_until in OUT_OF_RANGE_TIMESTAMPS {
            let body = json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": valid_until});
            refused(&app.admin("POST", "/admin/coupons", Some(body)), 400, "invalid_request");
        }
        // Nothing was created: the next coupon takes the next id.
        for (id, valid_until, shown) in [
            (first + 1, "9999-12-31T23:59:59.9999Z", "9999-12-31T23:59:59.999Z"),
            (first + 2, "1970-01-01T01:00:00+01:00", "1970-01-01T00:00:00.000Z"),
        ] {
            let body = json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": valid_until});
            let coupon = app.admin("POST", "/admin/coupons", Some(body)).assert_status(201).clone();
            assert_eq!((&coupon["id"], &coupon["valid_until"]), (&json!(id), &json!(shown)), "{coupon}");
        }
    }
}

on_both_backends! {
    /// Admin catalog validation: non-empty titles, prices and points >= 0, discount >= 1,
    /// timestamps with an offset, exact field sets: else 400 invalid_request.
    fn admin_catalog_validation_is_400(app) {
        let (user_id, token, course) = client(app);
        let coupon = app.create_coupon(100, 0, None);
        let cases: Vec<(&str, String, Value)> = vec![
            ("POST", "/admin/users".into(), json!({"name": "", "points": 0})),
            ("POST", "/admin/users".into(), json!({"name": "x", "points": -1})),
            ("POST", "/admin/users".into(), json!({"points": 1})),
            ("POST", "/admin/users".into(), json!({"name": 5, "points": 1})),
            ("POST", "/admin/users".into(), json!({"name": "x", "points": 1.5})),
            ("POST", "/admin/users".into(), json!({"name": "x", "points": 1, "admin": true})),
            ("POST", "/admin/courses".into(), json!({"title": "", "price_cents": 100, "on_sale": true, "chapters": []})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "price_cents": -1, "on_sale": true, "chapters": []})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "on_sale": true, "chapters": []})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "price_cents": "100"})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "price_cents": 100, "on_sale": "yes"})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "price_cents": 100, "chapters": [""]})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "price_cents": 100, "chapters": [1]})),
            ("POST", "/admin/courses".into(), json!({"title": "t", "price_cents": 100, "colour": "red"})),
            ("POST", "/admin/coupons".into(), json!({"title": "", "discount_cents": 1, "min_spend_cents": 0, "valid_until": null})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 0, "min_spend_cents": 0, "valid_until": null})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": -5, "min_spend_cents": 0, "valid_until": null})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 1, "min_spend_cents": -1, "valid_until": null})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": "2030-01-01T00:00:00"})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": "2030-01-01"})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": "tomorrow"})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": 1_900_000_000})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "min_spend_cents": 0, "valid_until": null})),
            ("POST", "/admin/coupons".into(), json!({"title": "t", "discount_cents": 1, "min_spend_cents": 0, "valid_until": null, "max_uses": 1})),
            ("POST", format!("/admin/users/{user_id}/coupons"), json!({"coupon_id": coupon.to_string()})),
            ("POST", format!("/admin/users/{user_id}/coupons"), json!({})),
            ("POST", format!("/admin/users/{user_id}/coupons"), json!({"coupon_id": coupon, "status": "used"})),
            ("PATCH", format!("/admin/courses/{course}"), json!({})),
            ("PATCH", format!("/admin/courses/{course}"), json!({"on_sale": "no"})),
            ("PATCH", format!("/admin/courses/{course}"), json!({"on_sale": null})),
            ("PATCH", format!("/admin/courses/{course}"), json!({"on_sale": false, "price_cents": 1})),
            // 400 before 404.
            ("POST", "/admin/users/999999/coupons".into(), json!({"coupon_id": "x"})),
            ("PATCH", "/admin/courses/999999".into(), json!({"on_sale": 1})),
        ];
        let admin_auth = format!("Bearer {ADMIN_TOKEN}");
        let before = app.snapshot(user_id, &token);
        for (method, path, body) in &cases {
            let resp = app.admin(method, path, Some(body.clone()));
            assert_eq!(resp.status, 400, "{method} {path} {body} -> {}", resp.text);
            refused(&resp, 400, "invalid_request");
        }
        for raw in [&b""[..], b"{", b"null", b"[]"] {
            refused(&app.request("POST", "/admin/users", &[("Authorization", &admin_auth)], Some(raw)), 400, "invalid_request");
        }
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// Unknown users, coupons and courses in admin routes: 404 with the matching code.
    fn admin_unknown_ids_are_404(app) {
        let (user_id, token, _) = client(app);
        let coupon = app.create_coupon(100, 0, None);
        let before = app.snapshot(user_id, &token);
        refused(&app.admin("GET", "/admin/users/999999", None), 404, "user_not_found");
        refused(&app.admin("POST", "/admin/users/999999/coupons", Some(json!({"coupon_id": coupon}))), 404, "user_not_found");
        refused(&app.admin("POST", &format!("/admin/users/{user_id}/coupons"), Some(json!({"coupon_id": 999_999}))), 404, "coupon_not_found");
        refused(&app.admin("PATCH", "/admin/courses/999999", Some(json!({"on_sale": false}))), 404, "course_not_found");
        assert_eq!(app.snapshot(user_id, &token), before);
    }
}

on_both_backends! {
    /// A body is parsed as JSON whatever its Content-Type.
    fn bodies_are_json_whatever_the_content_type(app) {
        let (user_id, token, _) = client(app);
        let admin_auth = format!("Bearer {ADMIN_TOKEN}");
        for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"] {
            let course = app.course(100);
            let body = json!({"course_ids": [course]}).to_string();
            let resp = app.post_order_raw(Some(&token), &[("Content-Type", content_type)], body.as_bytes());
            assert_eq!(resp.assert_status(201)["items"][0]["course_id"], course, "{content_type}");
            let user = app.request(
                "POST",
                "/admin/users",
                &[("Authorization", &admin_auth), ("Content-Type", content_type)],
                Some(br#"{"name": "plain", "points": 7}"#),
            );
            assert_eq!(user.assert_status(201)["points"], 7, "{content_type}");
            // And a malformed one is still 400 invalid_request, not 415.
            refused(&app.post_order_raw(Some(&token), &[("Content-Type", content_type)], b"course_ids=1"), 400, "invalid_request");
        }
        assert_eq!(app.me(&token)["id"], user_id);
    }
}

on_both_backends! {
    /// "exp required, no leeway": a token is expired on and after its `exp` second (RFC 7519
    /// §4.1.4), so one whose `exp` is the current second is refused.
    fn token_expiring_this_second_is_401(app) {
        let (user_id, token) = app.user_with_token(0);
        // Start early in a second, so the request lands in the same second as `exp`.
        wait_for("the start of a second", std::time::Duration::from_secs(3), || {
            let ms = chrono::Utc::now().timestamp_subsec_millis();
            if ms < 300 { Ok(()) } else { Err(format!("{ms} ms into the second")) }
        });
        let claims = json!({"sub": user_id.to_string(), "exp": unix_in(0)});
        let expiring = jwt(&claims, JWT_SECRET, jsonwebtoken::Algorithm::HS256);
        let resp = app.as_user(&expiring, "GET", "/api/me", None);
        assert_eq!(resp.status, 401, "token with exp = now accepted: {}", resp.text);
        resp.assert_unauthenticated();
        assert_eq!(app.me(&token)["id"], user_id);
    }
}

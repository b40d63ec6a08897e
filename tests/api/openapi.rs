//! `GET /openapi.json` and `GET /docs` (SPEC "Operations"): the document names every route the
//! SPEC lists with its security scheme, every documented operation is routed, the objects the
//! engine sends have exactly the documented properties, and the API page is served from the
//! binary.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::*;

/// Every route of the SPEC's HTTP API, with the security scheme it takes (None: no auth).
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("post", "/api/orders", Some("client_jwt")),
    ("get", "/api/orders/{order_no}", Some("client_jwt")),
    ("post", "/api/orders/{order_no}/cancel", Some("client_jwt")),
    ("get", "/api/me", Some("client_jwt")),
    ("get", "/api/courses", Some("client_jwt")),
    ("post", "/api/payments/callback", Some("callback_signature")),
    (
        "post",
        "/api/orders/{order_no}/payments",
        Some("client_jwt"),
    ),
    (
        "post",
        "/api/payments/alipay/notify",
        Some("alipay_signature"),
    ),
    (
        "post",
        "/api/payments/wechatpay/notify",
        Some("wechatpay_signature"),
    ),
    (
        "post",
        "/api/payments/stripe/webhook",
        Some("stripe_signature"),
    ),
    ("get", "/admin/orders/{order_no}", Some("admin_token")),
    ("get", "/admin/orders", Some("admin_token")),
    ("get", "/admin/actors", Some("admin_token")),
    ("get", "/admin/effects", Some("admin_token")),
    (
        "post",
        "/admin/orders/{order_no}/cancel",
        Some("admin_token"),
    ),
    ("get", "/admin/late-payments", Some("admin_token")),
    ("get", "/admin/users/{id}", Some("admin_token")),
    ("post", "/admin/effects/{id}/retry", Some("admin_token")),
    ("get", "/admin/deliveries", Some("admin_token")),
    ("post", "/admin/deliveries/{id}/retry", Some("admin_token")),
    ("get", "/admin/courses", Some("admin_token")),
    ("post", "/admin/users", Some("admin_token")),
    ("post", "/admin/courses", Some("admin_token")),
    ("patch", "/admin/courses/{id}", Some("admin_token")),
    ("post", "/admin/coupons", Some("admin_token")),
    ("post", "/admin/users/{id}/coupons", Some("admin_token")),
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/metrics", Some("metrics_token")),
];

/// The admin dashboard's routes are left out of the document on purpose: they answer HTML
/// forms and pages (SPEC "Operations", "Admin dashboard"), not JSON, and are authorised by a
/// session cookie, not a documented security scheme. tests/api/dashboard.rs covers them; here
/// they must be routed (without a session: 303 to the sign-in page, which itself is 200) and
/// absent from the document.
const HTML_ROUTES: &[(&str, &str)] = &[
    ("get", "/admin/ui"),
    ("get", "/admin/ui/live"),
    ("get", "/admin/ui/login"),
    ("post", "/admin/ui/login"),
    ("post", "/admin/ui/logout"),
    ("get", "/admin/ui/orders"),
    ("get", "/admin/ui/orders/{order_no}"),
    ("get", "/admin/ui/orders/{order_no}/actor"),
    ("post", "/admin/ui/orders/{order_no}/cancel"),
    ("get", "/admin/ui/effects"),
    ("post", "/admin/ui/effects/{id}/retry"),
    ("get", "/admin/ui/late-payments"),
    ("get", "/admin/ui/assets/htmx.min.js"),
    ("get", "/admin/ui/assets/style.css"),
];

fn document(app: &TestApp) -> Value {
    let resp = app.request("GET", "/openapi.json", &[], None);
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("application/json")));
    resp.json
}

/// The property names of a component schema, each of which it must also require: every key
/// of a documented object is always present (SPEC "HTTP API"), `null` when it does not apply.
#[track_caller]
fn properties(doc: &Value, name: &str) -> BTreeSet<String> {
    let schema = &doc["components"]["schemas"][name];
    let props: BTreeSet<String> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {schema}"))
        .keys()
        .cloned()
        .collect();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(required, props, "{name}: required is not every property");
    props
}

fn keys_of(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_document_covers_every_route_with_its_security() {
    let app = TestApp::spawn(Backend::Sqlite);
    let doc = document(&app);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let schemes = &doc["components"]["securitySchemes"];
    for scheme in [
        "client_jwt",
        "admin_token",
        "metrics_token",
        "callback_signature",
    ] {
        assert!(schemes[scheme].is_object(), "security scheme {scheme}");
    }
    assert_eq!(schemes["callback_signature"]["name"], "X-Signature");

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
        }
    }
    for (method, path, scheme) in ROUTES {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not in the document"
        );
        let operation = &doc["paths"][path][method];
        let names: Vec<String> = operation["security"]
            .as_array()
            .map(|list| {
                list.iter()
                    .flat_map(|req| req.as_object().unwrap().keys().cloned())
                    .collect()
            })
            .unwrap_or_default();
        match scheme {
            Some(scheme) => assert!(
                names.iter().any(|n| n == scheme),
                "{method} {path}: security {names:?}, expected {scheme}"
            ),
            None => assert!(names.is_empty(), "{method} {path}: security {names:?}"),
        }
        if *method != "get" && operation.get("requestBody").is_none() {
            // Only the bodiless POSTs (cancels, retry) may lack a request body.
            assert!(
                path.ends_with("/cancel") || path.ends_with("/retry"),
                "{method} {path} documents no request body"
            );
        }
    }

    // Every documented operation is routed: not 404 route_not_found, not 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{order_no}", "doc_probe_1")
            .replace("{id}", "1");
        let resp = app.request(&method.to_uppercase(), &concrete, &[], Some(b"{}"));
        assert!(
            resp.status != 405 && resp.json["error"]["code"] != "route_not_found",
            "{method} {path}: {} {}",
            resp.status,
            resp.text
        );
    }
    assert!(
        !documented.iter().any(|(_, p)| p.starts_with("/admin/ui")),
        "the dashboard's HTML routes are not part of the document"
    );
    for (method, path) in HTML_ROUTES {
        let concrete = path
            .replace("{order_no}", "doc_probe_1")
            .replace("{id}", "1");
        let resp =
            app.not_following_redirects()
                .request(&method.to_uppercase(), &concrete, &[], None);
        let expected = match (*method, *path) {
            ("get", "/admin/ui/login")
            | ("get", "/admin/ui/assets/htmx.min.js")
            | ("get", "/admin/ui/assets/style.css") => 200,
            // A sign-in without the token.
            ("post", "/admin/ui/login") => 401,
            _ => 303,
        };
        assert_eq!(resp.status, expected, "{method} {path}: {}", resp.text);
    }
    crate::invariants::check(&app);
}

#[test]
fn sent_objects_have_exactly_the_documented_properties() {
    let app = TestApp::spawn(Backend::Sqlite);
    let doc = document(&app);
    let (user_id, token) = app.user_with_token(50);
    let order = app
        .place(
            &token,
            json!({"course_ids": [app.course(900)], "points": 5}),
        )
        .assert_status(201)
        .clone();
    assert_eq!(keys_of(&order), properties(&doc, "Order"));
    assert_eq!(keys_of(&order["items"][0]), properties(&doc, "OrderItem"));
    let no = order["order_no"].as_str().unwrap();
    let detail = app
        .admin("GET", &format!("/admin/orders/{no}"), None)
        .assert_status(200)
        .clone();
    assert_eq!(keys_of(&detail), properties(&doc, "OrderDetail"));
    assert_eq!(keys_of(&detail["actor"]), properties(&doc, "ActorView"));
    app.admin("POST", &format!("/admin/orders/{no}/cancel"), None)
        .assert_status(200);
    let detail = app
        .admin("GET", &format!("/admin/orders/{no}"), None)
        .assert_status(200)
        .clone();
    assert_eq!(keys_of(&detail["actor"]), properties(&doc, "ActorView"));
    assert_eq!(
        keys_of(&detail["effects"][0]),
        properties(&doc, "EffectView")
    );
    let actors = app
        .admin("GET", "/admin/actors", None)
        .assert_status(200)
        .clone();
    assert_eq!(keys_of(&actors), properties(&doc, "ActorsView"));
    assert_eq!(keys_of(&app.me(&token)), properties(&doc, "Me"));
    assert_eq!(
        keys_of(&app.admin_user(user_id)),
        properties(&doc, "AdminUser")
    );
    let missing = app.get_order(&token, "no_such_order");
    missing.assert_error(404, "order_not_found");
    assert_eq!(keys_of(&missing.json), properties(&doc, "ErrorEnvelope"));
    assert_eq!(
        keys_of(&missing.json["error"]),
        properties(&doc, "ErrorBody")
    );
    let health = app.request("GET", "/readyz", &[], None);
    assert_eq!(keys_of(&health.json), properties(&doc, "Readiness"));
    crate::invariants::check(&app);
}

#[test]
fn the_api_page_is_served_from_the_binary() {
    let app = TestApp::spawn(Backend::Sqlite);
    let redirect = app.raw_request("GET", "/docs", &[], b"");
    assert_eq!(redirect.status, 308, "{}", redirect.text);
    assert_eq!(redirect.header("Location"), Some("/docs/"));
    let page = app.request("GET", "/docs/", &[], None);
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(page.text.contains("swagger-ui"), "{}", page.text);
    for external in ["src=\"http", "href=\"http", "src='http", "href='http"] {
        assert!(
            !page.text.contains(external),
            "an external asset: {}",
            page.text
        );
    }
    let init = app.request("GET", "/docs/swagger-initializer.js", &[], None);
    assert_eq!(init.status, 200);
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"] {
        let resp = app.request("GET", &format!("/docs/{asset}"), &[], None);
        assert_eq!(resp.status, 200, "{asset}");
        assert!(
            resp.text.len() > 10_000,
            "{asset}: {} bytes",
            resp.text.len()
        );
    }
    app.request("GET", "/docs/no-such-file", &[], None)
        .assert_error(404, "route_not_found");
    crate::invariants::check(&app);
}

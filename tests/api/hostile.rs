//! Hostile input (SPEC §HTTP API, Errors and Payment provider): property-based tests, with
//! proptest, of `POST /api/orders` and `POST /api/payments/callback`.
//!
//! Each test function starts ONE engine per backend (SQLite always, PostgreSQL when
//! `TEST_DATABASE_URL` is set), builds a small world in it (a pending, a paid and a failed
//! order, owned, pending and off-sale courses, unusable coupons) and runs a fixed number of
//! generated requests against it: random and truncated bodies, wrong types at every field,
//! numbers beyond i64, unicode and control characters, deep nesting, bodies over the limit,
//! missing, repeated or malformed headers, signatures one digit off, stale timestamps and
//! amounts one cent off. A small model of the SPEC computes what each request must get:
//! every one is refused with a 4xx whose status follows the SPEC's precedence
//! (413 > 401 > 400 > 404 > 409 > 422; a set of codes when the SPEC leaves the order within a
//! class open), with exactly the error envelope, and leaves everything an admin or the user
//! can see unchanged. `errors.rs` and `callbacks.rs` hold the example-based versions.
//!
//! Header values hold only bytes HTTP allows (visible ASCII, space, tab, obs-text); control
//! bytes in headers, JSON arrays in place of objects, repeated `Authorization` headers and NUL
//! characters in looked-up strings have test functions of their own at the end, so that each
//! engine bug found there fails one test and does not hide what the others check.
//! `PROPTEST_CASES=N` runs more cases.

use std::cell::RefCell;
use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::helpers::*;

/// Generated requests per test function and backend (`PROPTEST_CASES` overrides it).
const CASES: u32 = 64;
/// `server.max_body_bytes`' default.
const MAX_BODY: usize = 65_536;
const FREE_PRICE: i64 = 1_000;
const PENDING_PRICE: i64 = 2_000;
const COUPON_DISCOUNT: i64 = 100;
const FAILED_PRICE: i64 = 300;

// ---------------------------------------------------------------------------------------------
// The world every case runs against.

/// Ids and numbers of the world, cheap to clone into strategies.
#[derive(Debug, Clone)]
struct Ids {
    user: i64,
    /// 1 000 cents, on sale, neither owned nor in a pending order: the user may buy it.
    free: i64,
    /// In the user's pending order.
    pending_course: i64,
    /// Bought at 0 cents: owned.
    owned: i64,
    off_sale: i64,
    /// The user's, minimum spend 100 000 cents.
    coupon_min_spend: i64,
    /// The user's, valid until 2020.
    coupon_expired: i64,
    /// The user's, locked by the pending order.
    coupon_locked: i64,
    /// Another user's.
    coupon_other: i64,
    /// The user's points after the pending order.
    points: i64,
    pending_no: String,
    pending_payable: i64,
    paid_no: String,
    failed_no: String,
    failed_payable: i64,
    /// The trade_no of the failure callback that failed `failed_no`.
    failed_trade: String,
}

struct World {
    ids: Ids,
    token: String,
    other: i64,
    other_token: String,
}

impl World {
    fn new(app: &TestApp) -> World {
        let (user, token) = app.user_with_token(1_000);
        let (other, other_token) = app.user_with_token(100);
        let free = app.course(FREE_PRICE);
        let pending_course = app.course(PENDING_PRICE);
        let owned = app.course(0);
        let off_sale = app.course(500);
        app.set_on_sale(off_sale, false);
        let coupon = |user_id, min_spend, valid_until| {
            let coupon = app.create_coupon(COUPON_DISCOUNT, min_spend, valid_until);
            app.give_coupon(user_id, coupon)
        };
        let coupon_min_spend = coupon(user, 100_000, None);
        let coupon_expired = coupon(user, 0, Some("2020-01-01T00:00:00Z"));
        let coupon_locked = coupon(user, 0, None);
        let coupon_other = coupon(other, 0, None);

        let pending = app.place_ok(&token, &[pending_course], Some(coupon_locked), 200);
        let paid = app.place_ok(&token, &[owned], None, 0);
        assert_eq!(paid["status"], "paid", "{paid}");
        let failed = app.place_ok(&other_token, &[app.course(FAILED_PRICE)], None, 50);
        let failed_trade = trade_no();
        let no = |order: &Value| order["order_no"].as_str().unwrap().to_string();
        let failed_payable = failed["payable_cents"].as_i64().unwrap();
        let resp = app.callback(&no(&failed), &failed_trade, FAILURE, failed_payable);
        assert_eq!(resp.assert_status(200), &json!({"result": "success"}));
        app.wait_effects_done(&no(&paid));
        app.wait_effects_done(&no(&failed));
        let points = app.me(&token)["points"].as_i64().unwrap();
        assert_eq!(points, 800);
        let pending_payable = pending["payable_cents"].as_i64().unwrap();
        assert_eq!(pending_payable, PENDING_PRICE - COUPON_DISCOUNT - 200);
        World {
            ids: Ids {
                user,
                free,
                pending_course,
                owned,
                off_sale,
                coupon_min_spend,
                coupon_expired,
                coupon_locked,
                coupon_other,
                points,
                pending_no: no(&pending),
                pending_payable,
                paid_no: no(&paid),
                failed_no: no(&failed),
                failed_payable,
                failed_trade,
            },
            token,
            other,
            other_token,
        }
    }

    /// Everything a refused request must leave as it was: both users as admins and as they
    /// see themselves, the catalog, every order (the list, and each known order with its
    /// effects and actor), the late payments, the effects and the actor counts.
    fn state(&self, app: &TestApp) -> Value {
        let ok = |path: &str| app.admin("GET", path, None).assert_status(200).clone();
        let ids = &self.ids;
        let views: Vec<Value> = [&ids.pending_no, &ids.paid_no, &ids.failed_no]
            .into_iter()
            .map(|no| {
                let mut view = app.admin_order(no);
                if let Some(actor) = view["actor"].as_object_mut() {
                    actor.remove("remaining_ms");
                }
                view
            })
            .collect();
        let actors = ok("/admin/actors");
        json!({
            "user": app.snapshot(ids.user, &self.token),
            "other": {"admin": app.admin_user(self.other), "me": app.me(&self.other_token)},
            "orders": ok("/admin/orders?limit=100"),
            "views": views,
            "late": ok("/admin/late-payments?limit=100"),
            "effects": ok("/admin/effects?limit=100"),
            "actors": [&actors["live_actors"], &actors["armed_timers"], &actors["actors_by_state"],
                       &actors["orders_by_status"], &actors["effects"]],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Expectations and the case runner.

/// What the SPEC demands: this status, with one of these codes (several when the SPEC does
/// not order the codes that apply within the class).
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    status: u16,
    codes: Vec<&'static str>,
}

impl Expect {
    fn one(status: u16, code: &'static str) -> Expect {
        Expect {
            status,
            codes: vec![code],
        }
    }

    /// A request the HTTP/1 parser itself refuses (a control byte in a header value, which
    /// RFC 9110 forbids): actix answers a bare 400 before any route runs, so no envelope can
    /// be sent. The engine never sees it; nothing may change.
    fn protocol_400() -> Expect {
        Expect {
            status: 400,
            codes: Vec::new(),
        }
    }

    /// `Some` when any code applies.
    fn any(status: u16, codes: Vec<&'static str>) -> Option<Expect> {
        (!codes.is_empty()).then_some(Expect { status, codes })
    }
}

/// Raw bytes, shown shortened in failure reports.
#[derive(Clone, PartialEq)]
struct Blob(Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(240)];
        write!(
            f,
            "{} bytes: {:?}",
            self.0.len(),
            String::from_utf8_lossy(shown)
        )?;
        if self.0.len() > shown.len() {
            write!(f, "...")?;
        }
        Ok(())
    }
}

/// Runs `CASES` generated cases against one engine; `send` returns the expectation (`None`:
/// the SPEC would accept the request, so the case is not hostile and is discarded) and the
/// response. The state is compared with the one just before each case. There is no
/// shrinking: the cases share the engine's state, so a shrunk case would run in a state an
/// earlier failure may have changed; the first failing request is reported as it was sent.
fn run_cases<S: Strategy>(
    app: &TestApp,
    world: &World,
    strategy: S,
    send: impl Fn(&S::Value) -> Option<(Expect, Resp)>,
) where
    S::Value: fmt::Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 0,
        max_global_rejects: 4 * cases,
        ..Config::default()
    };
    let last = RefCell::new(world.state(app));
    let result = TestRunner::new(config).run(&strategy, |case| {
        let Some((expect, resp)) = send(&case) else {
            return Err(TestCaseError::reject("the SPEC accepts this request"));
        };
        check_refusal(&resp, &expect, &case);
        let before = last.replace(world.state(app));
        assert_eq!(
            *last.borrow(),
            before,
            "a refused request changed the state ({} {}): {case:#?}",
            resp.status,
            resp.text
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{:?}: {e}", app.backend);
    }
}

/// A 4xx with the expected status and one of the expected codes, exactly the SPEC envelope,
/// as JSON, and `WWW-Authenticate: Bearer` with a client 401.
#[track_caller]
fn check_refusal(resp: &Resp, expect: &Expect, case: &dyn fmt::Debug) {
    assert!(
        (400..500).contains(&resp.status),
        "expected {expect:?}, got a non-4xx: {} {}\nrequest: {case:#?}",
        resp.status,
        resp.text
    );
    if expect.codes.is_empty() {
        assert_eq!(resp.status, expect.status, "request: {case:#?}");
        return;
    }
    let code = resp.json["error"]["code"].as_str().unwrap_or_default();
    assert!(
        resp.status == expect.status && expect.codes.contains(&code),
        "expected {expect:?}, got {} {:?}\nrequest: {case:#?}",
        resp.status,
        resp.text
    );
    resp.error_code();
    assert_keys(&resp.json["error"], &["code", "message"]);
    assert!(
        !resp.error_message().is_empty(),
        "empty message: {}",
        resp.text
    );
    let content_type = resp.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "Content-Type {content_type:?}: {}",
        resp.text
    );
    if code == "unauthenticated" {
        assert_eq!(resp.header("WWW-Authenticate"), Some("Bearer"), "{resp:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Shared generators.

/// Ids that no row has: 0, negatives, i64::MAX and other huge values.
fn missing_id() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1i64),
        Just(i64::MAX),
        Just(i64::MIN),
        1_000_000_000i64..,
        ..0i64,
    ]
}

/// Characters that break naive code: control characters, NUL, quotes, escapes, bidi
/// overrides, zero-width and astral characters, and any char at all.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => (0x20u8..0x7f).prop_map(char::from),
        2 => prop::sample::select(vec![
            '\0', '\u{1}', '\u{8}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}',
            '\u{200b}', '\u{202e}', '\u{2028}', '\u{feff}', '\u{fffd}', '\u{ffff}', '\u{10ffff}',
            '"', '\\', '/', '\'', '%', 'é', 'ß', '中', '😀', '𝕏',
        ]),
    ]
}

fn hostile_string(len: std::ops::RangeInclusive<usize>) -> BoxedStrategy<String> {
    prop::collection::vec(hostile_char(), len)
        .prop_map(|chars| chars.into_iter().collect())
        .boxed()
}

/// Any JSON value, a few levels deep, with hostile strings and numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e15f64..1e15f64).prop_map(Value::from),
        hostile_string(0..=16).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((hostile_string(0..=8), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Number literals that no i64 holds: beyond i64::MAX or below i64::MIN, fractions and
/// exponents.
fn huge_number() -> impl Strategy<Value = String> {
    let digits = prop::collection::vec(0u8..10, 19..60).prop_map(|d| {
        d.into_iter()
            .map(|d| char::from(b'0' + d))
            .collect::<String>()
    });
    prop_oneof![
        prop::sample::select(vec![
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "1e19",
            "1E400",
            "-1e400",
            "9223372036854775807.0",
            "1.5",
            "-0.5",
            "1e2",
            "0.0",
        ])
        .prop_map(String::from),
        digits.clone().prop_map(|d| format!("9{d}")),
        digits.prop_map(|d| format!("-9{d}")),
    ]
}

/// `depth` nested arrays (or objects) around `inner`.
fn nested(depth: usize, objects: bool, inner: &str) -> String {
    let (open, close) = if objects {
        ("{\"a\":", "}")
    } else {
        ("[", "]")
    };
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn depth() -> impl Strategy<Value = usize> {
    prop_oneof![Just(10_000usize), 129usize..3_000]
}

/// Random bytes, or JSON-looking token soup.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let tokens = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\\",
        " ",
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "\"a\"",
        "\"course_ids\"",
        "\"points\"",
        "\"user_coupon_id\"",
        "\"order_no\"",
        "\"trade_no\"",
        "\"code\"",
        "\"amount_cents\"",
        "\"paid_at\"",
        "\\u0000",
        "\u{0}",
        "\u{feff}",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        prop::collection::vec(tokens, 0..40).prop_map(|t| t.concat().into_bytes()),
    ]
}

/// `body` padded with spaces to `len` bytes (over the limit).
fn padded(mut body: Vec<u8>, len: usize) -> Vec<u8> {
    if body.len() < len {
        body.resize(len, b' ');
    }
    body
}

/// Header values that are legal on the wire but not text: obs-text bytes (0x80-0xFF).
fn not_utf8() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(0x21u8..0x7f, 0..8),
        prop::collection::vec(0x80u8..=0xff, 1..8),
    )
        .prop_map(|(mut a, b)| {
            a.extend(b);
            a
        })
}

/// A visible-ASCII header value.
fn visible(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(0x21u8..0x7f, len).prop_map(|b| String::from_utf8(b).unwrap())
}

// ---------------------------------------------------------------------------------------------
// POST /api/orders

#[derive(Debug, Clone, Copy, PartialEq)]
enum CourseRef {
    Free,
    Pending,
    Owned,
    OffSale,
    Missing(i64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CouponRef {
    Absent,
    Null,
    MinSpend,
    Expired,
    Locked,
    Other,
    Missing(i64),
}

#[derive(Debug, Clone)]
enum OrderBody {
    /// A well-formed body; what it gets follows from the world.
    Shaped {
        courses: Vec<CourseRef>,
        coupon: CouponRef,
        points: Option<i64>,
    },
    /// A body that is not a placement request at all: 400 invalid_request. (The name is
    /// read in failure reports.)
    #[allow(dead_code)]
    Malformed(&'static str, Blob),
}

/// `bytes` as a `T` when they are one JSON object of that shape (a JSON array of the field
/// values is not: the SPEC's bodies are objects).
fn object_of<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let object = serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.is_object());
    object.then(|| serde_json::from_slice(bytes).ok()).flatten()
}

/// Whether `bytes` are a JSON array (those are tested by `array_bodies`).
fn json_array(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.is_array())
}

/// The SPEC's request shape, to tell a malformed body from a well-formed one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OrderShape {
    course_ids: Vec<i64>,
    #[serde(default)]
    user_coupon_id: Option<i64>,
    #[serde(default)]
    points: i64,
}

impl OrderBody {
    fn bytes(&self, ids: &Ids) -> Vec<u8> {
        match self {
            OrderBody::Shaped {
                courses,
                coupon,
                points,
            } => shaped_order(ids, courses, *coupon, *points)
                .to_string()
                .into_bytes(),
            OrderBody::Malformed(_, blob) => blob.0.clone(),
        }
    }

    /// What the SPEC answers to this body from an authenticated user; `None`: 201.
    fn expect(&self, ids: &Ids) -> Option<Expect> {
        let (courses, coupon, points) = match self {
            OrderBody::Malformed(..) => return Some(Expect::one(400, "invalid_request")),
            OrderBody::Shaped {
                courses,
                coupon,
                points,
            } => (courses, *coupon, points.unwrap_or(0)),
        };
        let course_ids: Vec<i64> = courses.iter().map(|c| course_id(ids, *c)).collect();
        let duplicated = course_ids
            .iter()
            .enumerate()
            .any(|(i, id)| course_ids[..i].contains(id));
        let mut bad = Vec::new();
        if course_ids.is_empty() || course_ids.len() > 20 || duplicated {
            bad.push("invalid_course_ids");
        }
        if points < 0 {
            bad.push("invalid_points");
        }
        if let Some(e) = Expect::any(400, bad) {
            return Some(e);
        }
        let mut missing = Vec::new();
        if courses.iter().any(|c| matches!(c, CourseRef::Missing(_))) {
            missing.push("course_not_found");
        }
        if matches!(coupon, CouponRef::Other | CouponRef::Missing(_)) {
            missing.push("coupon_not_found");
        }
        if let Some(e) = Expect::any(404, missing) {
            return Some(e);
        }
        // Within 409, the first bad course in request order.
        let mut conflicts: Vec<&'static str> = courses
            .iter()
            .find_map(|c| match c {
                CourseRef::OffSale => Some("course_not_on_sale"),
                CourseRef::Owned => Some("course_already_owned"),
                CourseRef::Pending => Some("course_in_pending_order"),
                _ => None,
            })
            .into_iter()
            .collect();
        if coupon == CouponRef::Locked {
            conflicts.push("coupon_not_usable");
        }
        if let Some(e) = Expect::any(409, conflicts) {
            return Some(e);
        }
        // Only the free course is left.
        let mut unprocessable = Vec::new();
        match coupon {
            CouponRef::Expired => unprocessable.push("coupon_expired"),
            CouponRef::MinSpend => unprocessable.push("coupon_min_spend_not_met"),
            _ => {}
        }
        if points > ids.points {
            unprocessable.push("insufficient_points");
        }
        // With or without the (refused) coupon's discount.
        let discount = match coupon {
            CouponRef::Expired | CouponRef::MinSpend => COUPON_DISCOUNT,
            _ => 0,
        };
        if points > FREE_PRICE - discount {
            unprocessable.push("points_exceed_payable");
        }
        Expect::any(422, unprocessable)
    }
}

fn course_id(ids: &Ids, course: CourseRef) -> i64 {
    match course {
        CourseRef::Free => ids.free,
        CourseRef::Pending => ids.pending_course,
        CourseRef::Owned => ids.owned,
        CourseRef::OffSale => ids.off_sale,
        CourseRef::Missing(id) => id,
    }
}

fn shaped_order(ids: &Ids, courses: &[CourseRef], coupon: CouponRef, points: Option<i64>) -> Value {
    let mut body = Map::new();
    let course_ids: Vec<i64> = courses.iter().map(|c| course_id(ids, *c)).collect();
    body.insert("course_ids".into(), json!(course_ids));
    let coupon = match coupon {
        CouponRef::Absent => None,
        CouponRef::Null => Some(Value::Null),
        CouponRef::MinSpend => Some(json!(ids.coupon_min_spend)),
        CouponRef::Expired => Some(json!(ids.coupon_expired)),
        CouponRef::Locked => Some(json!(ids.coupon_locked)),
        CouponRef::Other => Some(json!(ids.coupon_other)),
        CouponRef::Missing(id) => Some(json!(id)),
    };
    if let Some(coupon) = coupon {
        body.insert("user_coupon_id".into(), coupon);
    }
    if let Some(points) = points {
        body.insert("points".into(), json!(points));
    }
    Value::Object(body)
}

fn shaped_order_body() -> impl Strategy<Value = OrderBody> {
    let course = prop_oneof![
        3 => Just(CourseRef::Free),
        1 => Just(CourseRef::Pending),
        1 => Just(CourseRef::Owned),
        1 => Just(CourseRef::OffSale),
        1 => missing_id().prop_map(CourseRef::Missing),
    ];
    let courses = prop_oneof![
        4 => Just(vec![CourseRef::Free]),
        6 => prop::collection::vec(course.clone(), 1..=4),
        1 => Just(Vec::new()),
        1 => prop::collection::vec(course, 21..=24),
    ];
    let coupon = prop_oneof![
        3 => Just(CouponRef::Absent),
        1 => Just(CouponRef::Null),
        1 => Just(CouponRef::MinSpend),
        1 => Just(CouponRef::Expired),
        1 => Just(CouponRef::Locked),
        1 => Just(CouponRef::Other),
        1 => missing_id().prop_map(CouponRef::Missing),
    ];
    let points = prop_oneof![
        Just(None),
        Just(Some(0i64)),
        (1i64..=800).prop_map(Some),
        (801i64..=1_000).prop_map(Some),
        (1_001i64..).prop_map(Some),
        Just(Some(i64::MAX)),
        Just(Some(-1i64)),
        (..0i64).prop_map(Some),
    ];
    (courses, coupon, points).prop_map(|(courses, coupon, points)| OrderBody::Shaped {
        courses,
        coupon,
        points,
    })
}

/// Bodies that are not a placement request, each checked against [`OrderShape`].
fn malformed_order_body(ids: &Ids) -> impl Strategy<Value = OrderBody> {
    let base = || json!({"course_ids": [ids.free], "points": 801});
    let field = prop::sample::select(vec!["course_ids", "user_coupon_id", "points"]);
    let free = ids.free;
    let shaped_text = {
        let ids = ids.clone();
        shaped_order_body()
            .prop_map(move |b| String::from_utf8(b.bytes(&ids)).unwrap())
            .boxed()
    };
    let wrong_type = {
        let base = base();
        (field.clone(), json_value(), 0usize..4).prop_filter_map(
            "a value of the right type",
            move |(field, value, at)| {
                let ok = match field {
                    "course_ids" => value
                        .as_array()
                        .is_some_and(|a| a.iter().all(|v| v.is_i64())),
                    "user_coupon_id" => value.is_null() || value.is_i64(),
                    _ => value.is_i64(),
                };
                let mut body = base.clone();
                if ok {
                    // Put the value inside course_ids instead, beside good ids.
                    if field != "course_ids" || value.is_i64() {
                        return None;
                    }
                    let mut list = vec![json!(free)];
                    list.insert(at.min(1), value);
                    body["course_ids"] = Value::Array(list);
                } else {
                    body[field] = value;
                }
                Some(("wrong type", body.to_string()))
            },
        )
    };
    let huge = (field.clone(), huge_number()).prop_map(move |(field, number)| {
        let text = match field {
            "course_ids" => format!("{{\"course_ids\": [{free}, {number}]}}"),
            "user_coupon_id" => {
                format!("{{\"course_ids\": [{free}], \"user_coupon_id\": {number}}}")
            }
            _ => format!("{{\"course_ids\": [{free}], \"points\": {number}}}"),
        };
        ("number beyond i64", text)
    });
    let unknown = {
        let base = base();
        (hostile_string(0..=12), json_value()).prop_map(move |(key, value)| {
            let mut body = base.clone();
            body[key.as_str()] = value;
            ("unknown field", body.to_string())
        })
    };
    let deep = (depth(), any::<bool>(), 0usize..4).prop_map(move |(depth, objects, at)| {
        let deep = nested(depth, objects, "1");
        let text = match at {
            0 => deep,
            1 => format!("{{\"course_ids\": [{free}, {deep}]}}"),
            2 => format!("{{\"course_ids\": [{free}], \"points\": {deep}}}"),
            _ => format!("{{\"course_ids\": [{free}], \"x\": {deep}}}"),
        };
        ("deep nesting", text)
    });
    let truncated = (shaped_text.clone(), any::<prop::sample::Index>())
        .prop_map(|(text, at)| ("truncated", text[..at.index(text.len())].to_string()));
    let trailing = (shaped_text, visible(1..=8))
        .prop_map(|(text, tail)| ("trailing garbage", format!("{text}{tail}")));
    let not_object = json_value()
        .prop_filter("neither an object nor an array", |v| {
            !v.is_object() && !v.is_array()
        })
        .prop_map(|v| ("not an object", v.to_string()));
    let missing = (any::<bool>(), any::<i64>()).prop_map(|(coupon, n)| {
        let body = if coupon {
            json!({"user_coupon_id": n, "points": 0})
        } else {
            json!({"points": n})
        };
        ("no course_ids", body.to_string())
    });
    let text =
        prop_oneof![wrong_type, huge, unknown, deep, truncated, trailing, not_object, missing]
            .prop_map(|(what, text)| (what, text.into_bytes()));
    prop_oneof![
        4 => text,
        1 => garbage().prop_map(|bytes| ("garbage", bytes)),
    ]
    .prop_filter("a well-formed body", |(_, bytes)| {
        object_of::<OrderShape>(bytes).is_none()
    })
    .prop_filter("a JSON array (see array_bodies)", |(_, bytes)| {
        !json_array(bytes)
    })
    .prop_map(|(what, bytes)| OrderBody::Malformed(what, Blob(bytes)))
}

fn order_body(ids: &Ids) -> impl Strategy<Value = OrderBody> {
    prop_oneof![shaped_order_body(), malformed_order_body(ids)]
}

/// The `Authorization` header(s) of a client request.
#[derive(Debug, Clone)]
enum Auth {
    Valid,
    Missing,
    /// One header with this (bad) value.
    Bad(String),
    NotText(Blob),
    Expired,
    WrongSecret,
    /// Signed with HS256 for a user that does not exist.
    NoSuchUser(i64),
    /// The user's valid token and another value, in this order.
    RepeatedValidFirst(String),
    RepeatedValidLast(String),
}

fn auth() -> impl Strategy<Value = Auth> {
    let bad = prop_oneof![
        Just(String::new()),
        Just("Bearer".to_string()),
        Just("Bearer ".to_string()),
        Just(format!("Bearer {ADMIN_TOKEN}")),
        Just("Basic dXNlcjpwYXNz".to_string()),
        visible(1..=40).prop_map(|t| format!("Bearer {t}")),
        visible(1..=40),
    ];
    prop_oneof![
        3 => Just(Auth::Valid),
        1 => Just(Auth::Missing),
        1 => bad.clone().prop_map(Auth::Bad),
        1 => not_utf8().prop_map(|b| Auth::NotText(Blob(b))),
        1 => Just(Auth::Expired),
        1 => Just(Auth::WrongSecret),
        1 => missing_id().prop_map(Auth::NoSuchUser),
    ]
}

/// Two `Authorization` headers, one of them the user's valid token.
fn repeated_auth() -> impl Strategy<Value = Auth> {
    let other = prop_oneof![
        Just(String::new()),
        Just("Bearer".to_string()),
        Just(format!("Bearer {ADMIN_TOKEN}")),
        visible(1..=40).prop_map(|t| format!("Bearer {t}")),
    ];
    (other, any::<bool>()).prop_map(|(other, first)| {
        if first {
            Auth::RepeatedValidFirst(other)
        } else {
            Auth::RepeatedValidLast(other)
        }
    })
}

/// The `Idempotency-Key` header(s).
#[derive(Debug, Clone)]
enum Idem {
    None,
    /// A fresh, valid key (made unique when sent) with this prefix.
    Fresh(String),
    Repeated,
    Empty,
    TooLong(String),
    NotText(Blob),
}

fn idem() -> impl Strategy<Value = Idem> {
    prop_oneof![
        3 => Just(Idem::None),
        2 => visible(0..=200).prop_map(Idem::Fresh),
        1 => Just(Idem::Repeated),
        1 => Just(Idem::Empty),
        1 => visible(256..=600).prop_map(Idem::TooLong),
        1 => not_utf8().prop_map(|b| Idem::NotText(Blob(b))),
    ]
}

#[derive(Debug, Clone)]
struct OrderRequest {
    auth: Auth,
    idem: Idem,
    body: OrderBody,
    /// Padded with spaces to this many bytes.
    oversize: Option<usize>,
}

fn oversize() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        9 => Just(None),
        1 => (MAX_BODY + 1..MAX_BODY + 30_000).prop_map(Some),
    ]
}

impl OrderRequest {
    fn expect(&self, ids: &Ids) -> Option<Expect> {
        if self.oversize.is_some() {
            return Some(Expect::one(413, "payload_too_large"));
        }
        if !matches!(self.auth, Auth::Valid) {
            return Some(Expect::one(401, "unauthenticated"));
        }
        let body = self.body.expect(ids);
        if matches!(self.idem, Idem::None | Idem::Fresh(_)) {
            return body;
        }
        // A bad key and a bad body are both 400.
        let mut codes = vec!["invalid_request"];
        if let Some(Expect {
            status: 400,
            codes: body,
        }) = body
        {
            codes.extend(body);
        }
        Some(Expect { status: 400, codes })
    }

    fn send(&self, app: &TestApp, world: &World) -> Option<(Expect, Resp)> {
        let expect = self.expect(&world.ids)?;
        let valid = format!("Bearer {}", world.token).into_bytes();
        let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
        let token = |claims: Value, secret: &str| {
            let t = jwt(&claims, secret, jsonwebtoken::Algorithm::HS256);
            format!("Bearer {t}").into_bytes()
        };
        let user = world.ids.user.to_string();
        match &self.auth {
            Auth::Valid => headers.push(("Authorization", valid)),
            Auth::Missing => {}
            Auth::Bad(value) => headers.push(("Authorization", value.clone().into_bytes())),
            Auth::NotText(value) => headers.push(("Authorization", value.0.clone())),
            Auth::Expired => headers.push((
                "Authorization",
                token(json!({"sub": user, "exp": unix_in(-60)}), JWT_SECRET),
            )),
            Auth::WrongSecret => headers.push((
                "Authorization",
                token(json!({"sub": user, "exp": unix_in(600)}), "not-the-secret"),
            )),
            Auth::NoSuchUser(id) => headers.push((
                "Authorization",
                token(
                    json!({"sub": id.to_string(), "exp": unix_in(600)}),
                    JWT_SECRET,
                ),
            )),
            Auth::RepeatedValidFirst(other) => {
                headers.push(("Authorization", valid));
                headers.push(("Authorization", other.clone().into_bytes()));
            }
            Auth::RepeatedValidLast(other) => {
                headers.push(("Authorization", other.clone().into_bytes()));
                headers.push(("Authorization", valid));
            }
        }
        let fresh =
            |prefix: &str| format!("{prefix}{}", uuid::Uuid::new_v4().simple()).into_bytes();
        match &self.idem {
            Idem::None => {}
            Idem::Fresh(prefix) => headers.push(("Idempotency-Key", fresh(prefix))),
            Idem::Repeated => {
                headers.push(("Idempotency-Key", fresh("a")));
                headers.push(("Idempotency-Key", fresh("b")));
            }
            Idem::Empty => headers.push(("Idempotency-Key", Vec::new())),
            Idem::TooLong(key) => headers.push(("Idempotency-Key", key.clone().into_bytes())),
            Idem::NotText(key) => headers.push(("Idempotency-Key", key.0.clone())),
        }
        let mut body = self.body.bytes(&world.ids);
        if let Some(len) = self.oversize {
            body = padded(body, len);
        }
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        Some((
            expect,
            app.raw_request_bytes("POST", "/api/orders", &headers, &body),
        ))
    }
}

/// Bodies from an authenticated client: wrong types, huge numbers, deep nesting, garbage and
/// well-formed bodies the catalog refuses (404, 409 first bad course, 422).
fn order_bodies(app: &TestApp) {
    let world = World::new(app);
    let strategy = (
        prop_oneof![
            3 => Just(Idem::None),
            1 => visible(0..=40).prop_map(Idem::Fresh),
        ],
        order_body(&world.ids),
        oversize(),
    )
        .prop_map(|(idem, body, oversize)| OrderRequest {
            auth: Auth::Valid,
            idem,
            body,
            oversize,
        });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

/// Missing, bad, repeated and non-text `Authorization` and `Idempotency-Key` headers, bodies
/// over the limit, over any body, including bodies that would otherwise be accepted.
fn order_headers(app: &TestApp) {
    let world = World::new(app);
    let ids = world.ids.clone();
    let accepted = (0i64..=800).prop_map(|points| OrderBody::Shaped {
        courses: vec![CourseRef::Free],
        coupon: CouponRef::Absent,
        points: Some(points),
    });
    let strategy = (
        auth(),
        idem(),
        prop_oneof![2 => order_body(&ids), 1 => accepted],
        oversize(),
    )
        .prop_map(|(auth, idem, body, oversize)| OrderRequest {
            auth,
            idem,
            body,
            oversize,
        });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

// ---------------------------------------------------------------------------------------------
// POST /api/payments/callback

#[derive(Debug, Clone, PartialEq)]
enum Target {
    Pending,
    Paid,
    Failed,
    /// An order number no order has (possibly empty, over 64 characters, or hostile).
    Missing(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Trade {
    /// Unused: 1-64 hostile characters.
    Fresh(String),
    /// The failed order's trade_no.
    Taken,
    /// Empty or over 64 characters.
    Bad(String),
}

#[derive(Debug, Clone)]
enum CallbackBody {
    Shaped {
        target: Target,
        trade: Trade,
        code: i64,
        amount: i64,
        /// `None`: no key; `Some(None)`: null.
        paid_at: Option<Option<&'static str>>,
    },
    /// Not a callback at all: 400 invalid_request. (The name is read in failure reports.)
    #[allow(dead_code)]
    Malformed(&'static str, Blob),
}

/// The SPEC's callback shape, to tell a malformed body from a well-formed one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackShape {
    order_no: String,
    trade_no: String,
    #[allow(dead_code)]
    code: i64,
    amount_cents: i64,
    #[serde(default)]
    paid_at: Option<String>,
}

impl CallbackShape {
    fn valid(bytes: &[u8]) -> bool {
        object_of::<CallbackShape>(bytes).is_some_and(|c| {
            (1..=64).contains(&c.trade_no.chars().count())
                && c.amount_cents >= 0
                && !c.order_no.is_empty()
                && c.paid_at
                    .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(&t).is_ok())
        })
    }
}

impl CallbackBody {
    fn bytes(&self, ids: &Ids) -> Vec<u8> {
        match self {
            CallbackBody::Shaped {
                target,
                trade,
                code,
                amount,
                paid_at,
            } => {
                let order_no = match target {
                    Target::Pending => ids.pending_no.as_str(),
                    Target::Paid => ids.paid_no.as_str(),
                    Target::Failed => ids.failed_no.as_str(),
                    Target::Missing(no) => no.as_str(),
                };
                let trade_no = match trade {
                    Trade::Fresh(t) | Trade::Bad(t) => t.as_str(),
                    Trade::Taken => ids.failed_trade.as_str(),
                };
                let mut body = json!({"order_no": order_no, "trade_no": trade_no, "code": code,
                                      "amount_cents": amount});
                if let Some(paid_at) = paid_at {
                    body["paid_at"] = json!(paid_at);
                }
                body.to_string().into_bytes()
            }
            CallbackBody::Malformed(_, blob) => blob.0.clone(),
        }
    }

    /// What the SPEC answers to this body, validly signed; `None`: 200.
    fn expect(&self, ids: &Ids) -> Option<Expect> {
        let CallbackBody::Shaped {
            target,
            trade,
            code,
            amount,
            ..
        } = self
        else {
            return Some(Expect::one(400, "invalid_request"));
        };
        // A trade_no holding NUL cannot be stored (PostgreSQL text): the engine refuses it.
        let nul_trade = matches!(trade, Trade::Fresh(t) if t.contains('\0'));
        if matches!(trade, Trade::Bad(_)) || *amount < 0 || nul_trade {
            return Some(Expect::one(400, "invalid_request"));
        }
        if matches!(target, Target::Missing(_)) {
            return Some(Expect::one(404, "order_not_found"));
        }
        if *trade == Trade::Taken {
            // The same trade_no again with the same order, code and amount is a duplicate.
            let duplicate =
                *target == Target::Failed && *code == FAILURE && *amount == ids.failed_payable;
            return (!duplicate).then(|| Expect::one(409, "trade_no_conflict"));
        }
        let mismatch =
            *target == Target::Pending && *code == SUCCESS && *amount != ids.pending_payable;
        mismatch.then(|| Expect::one(422, "amount_mismatch"))
    }
}

fn code() -> impl Strategy<Value = i64> {
    prop_oneof![4 => Just(SUCCESS), 1 => Just(FAILURE), 1 => any::<i64>()]
}

fn paid_at() -> impl Strategy<Value = Option<Option<&'static str>>> {
    prop::sample::select(vec![
        None,
        Some(None),
        Some(Some("2026-11-26T12:00:00.000Z")),
        Some(Some("2026-11-26T20:00:00+08:00")),
    ])
}

/// Well-formed callbacks the SPEC refuses (and a few it accepts, discarded unless signed
/// badly): unknown orders, taken trade numbers, amounts off by one cent, bad trade numbers,
/// negative amounts.
///
/// `nul`: the order and trade numbers, which the engine looks up, hold a NUL character
/// (`\0`, which PostgreSQL's text cannot); otherwise they never do.
fn shaped_callback(pending_payable: i64, nul: bool) -> BoxedStrategy<CallbackBody> {
    let fresh = looked_up(1..=64, nul)
        .prop_filter("1-64 characters", |t| (1..=64).contains(&t.chars().count()))
        .prop_map(Trade::Fresh)
        .boxed();
    let known = prop_oneof![
        Just(Target::Pending),
        Just(Target::Paid),
        Just(Target::Failed)
    ];
    let amount = prop_oneof![
        Just(pending_payable - 1),
        Just(pending_payable + 1),
        Just(0i64),
        Just(i64::MAX),
        0i64..,
    ];
    let missing_no = prop_oneof![
        looked_up(0..=64, nul),
        looked_up(65..=120, nul),
        visible(1..=64).prop_map(move |v| if nul { format!("{v}\0") } else { v }),
    ]
    .prop_map(Target::Missing);
    let mismatch =
        (fresh.clone(), amount.clone(), paid_at()).prop_map(|(trade, amount, paid_at)| {
            CallbackBody::Shaped {
                target: Target::Pending,
                trade,
                code: SUCCESS,
                amount,
                paid_at,
            }
        });
    let taken = (known.clone(), code(), amount.clone(), paid_at()).prop_map(
        |(target, code, amount, paid_at)| CallbackBody::Shaped {
            target,
            trade: Trade::Taken,
            code,
            amount,
            paid_at,
        },
    );
    let unknown = (
        missing_no,
        prop_oneof![fresh.clone(), Just(Trade::Taken)],
        code(),
        amount.clone(),
        paid_at(),
    )
        .prop_map(
            |(target, trade, code, amount, paid_at)| CallbackBody::Shaped {
                target,
                trade,
                code,
                amount,
                paid_at,
            },
        );
    let bad_trade = prop_oneof![Just(String::new()), hostile_string(65..=100)]
        .prop_filter("over 64 characters or empty", |t| {
            t.is_empty() || t.chars().count() > 64
        })
        .prop_map(Trade::Bad);
    let invalid = (
        prop_oneof![known, Just(Target::Missing("nope".into()))],
        prop_oneof![bad_trade, fresh],
        code(),
        prop_oneof![amount, ..0i64, Just(i64::MIN), Just(-1i64)],
        paid_at(),
    )
        .prop_map(
            |(target, trade, code, amount, paid_at)| CallbackBody::Shaped {
                target,
                trade,
                code,
                amount,
                paid_at,
            },
        );
    if nul {
        prop_oneof![mismatch, unknown].boxed()
    } else {
        prop_oneof![mismatch, taken, unknown, invalid].boxed()
    }
}

/// A hostile string the engine looks up in the database: with one NUL, or none.
fn looked_up(len: std::ops::RangeInclusive<usize>, nul: bool) -> BoxedStrategy<String> {
    (hostile_string(len), any::<prop::sample::Index>())
        .prop_map(move |(s, at)| {
            let mut chars: Vec<char> = s.chars().filter(|c| *c != '\0').collect();
            if nul {
                if chars.is_empty() {
                    chars.push('\0');
                } else {
                    let i = at.index(chars.len());
                    chars[i] = '\0';
                }
            }
            chars.into_iter().collect()
        })
        .boxed()
}

/// Bodies that are not a callback, each checked against [`CallbackShape`].
fn malformed_callback(ids: &Ids) -> impl Strategy<Value = CallbackBody> {
    let base = json!({"order_no": ids.pending_no, "trade_no": "T-hostile", "code": SUCCESS,
                      "amount_cents": ids.pending_payable - 1});
    let fields = vec!["order_no", "trade_no", "code", "amount_cents", "paid_at"];
    let field = prop::sample::select(fields);
    let wrong_type = {
        let base = base.clone();
        (field.clone(), json_value()).prop_map(move |(field, value)| {
            let mut body = base.clone();
            body[field] = value;
            ("wrong type", body.to_string())
        })
    };
    let bad_time = {
        let base = base.clone();
        prop_oneof![
            prop::sample::select(vec![
                "2026-11-26T12:00:00",
                "2026-11-26",
                "yesterday",
                "2026-13-01T00:00:00Z",
                "2026-11-26T12:00:00.000+24:00",
                "",
                "1764158400",
            ])
            .prop_map(String::from),
            hostile_string(0..=30),
        ]
        .prop_map(move |text| {
            let mut body = base.clone();
            body["paid_at"] = json!(text);
            ("bad paid_at", body.to_string())
        })
    };
    let huge = {
        let base = base.clone();
        (any::<bool>(), huge_number()).prop_map(move |(amount, number)| {
            let mut body = base.clone();
            let field = if amount { "amount_cents" } else { "code" };
            body[field] = json!("HUGE");
            (
                "number beyond i64",
                body.to_string().replace("\"HUGE\"", &number),
            )
        })
    };
    let unknown = {
        let base = base.clone();
        (hostile_string(0..=12), json_value()).prop_map(move |(key, value)| {
            let mut body = base.clone();
            body[key.as_str()] = value;
            ("unknown field", body.to_string())
        })
    };
    let missing = {
        let base = base.clone();
        field.prop_map(move |field| {
            let mut body = base.clone();
            body.as_object_mut().unwrap().remove(field);
            ("missing field", body.to_string())
        })
    };
    let deep = {
        let no = ids.pending_no.clone();
        (depth(), any::<bool>(), 0usize..4).prop_map(move |(depth, objects, at)| {
            let deep = nested(depth, objects, "1");
            let head =
                format!("{{\"order_no\": \"{no}\", \"trade_no\": \"T-deep\", \"code\": 100000");
            let text = match at {
                0 => deep,
                1 => format!("{head}, \"amount_cents\": {deep}}}"),
                2 => format!("{head}, \"amount_cents\": 1, \"paid_at\": {deep}}}"),
                _ => format!("{head}, \"amount_cents\": 1, \"x\": {deep}}}"),
            };
            ("deep nesting", text)
        })
    };
    let valid_text = base.to_string();
    let truncated = any::<prop::sample::Index>().prop_map(move |at| {
        (
            "truncated",
            valid_text[..at.index(valid_text.len())].to_string(),
        )
    });
    let not_object = json_value()
        .prop_filter("neither an object nor an array", |v| {
            !v.is_object() && !v.is_array()
        })
        .prop_map(|v| ("not an object", v.to_string()));
    let text =
        prop_oneof![wrong_type, bad_time, huge, unknown, missing, deep, truncated, not_object]
            .prop_map(|(what, text)| (what, text.into_bytes()));
    prop_oneof![
        4 => text,
        1 => garbage().prop_map(|bytes| ("garbage", bytes)),
    ]
    .prop_filter("a well-formed body", |(_, bytes)| {
        !CallbackShape::valid(bytes)
    })
    .prop_filter("a JSON array (see array_bodies)", |(_, bytes)| {
        !json_array(bytes)
    })
    .prop_map(|(what, bytes)| CallbackBody::Malformed(what, Blob(bytes)))
}

fn callback_body_strategy(ids: &Ids) -> impl Strategy<Value = CallbackBody> {
    prop_oneof![
        shaped_callback(ids.pending_payable, false),
        malformed_callback(ids)
    ]
}

/// The `X-Signature` header(s).
#[derive(Debug, Clone)]
enum Sig {
    /// Signed now.
    Valid,
    /// Signed this many seconds off now, well inside the tolerance.
    Skewed(i64),
    Missing,
    /// The valid header twice.
    Repeated,
    /// The valid header and another value, in either order.
    RepeatedWith(String, bool),
    WrongSecret,
    /// One hex digit of the MAC replaced by another.
    HexDigit(prop::sample::Index, u8),
    /// One byte of the MAC off by one.
    MacByte(prop::sample::Index, bool),
    /// The MAC one hex digit short, or one longer.
    Length(bool),
    /// The body changed after signing (this byte XOR-ed).
    BodyByte(prop::sample::Index, u8),
    /// Signed this many seconds off now, outside the tolerance (300 s).
    Stale(i64),
    /// `t=` something that is not unix seconds (the MAC is over that text).
    BadTimestamp(String),
    /// Only other schemes (a valid MAC under `v0`), or no `t`.
    NoV1,
    NoTimestamp,
    Garbage(String),
    NotText(Blob),
}

impl Sig {
    fn valid(&self) -> bool {
        matches!(self, Sig::Valid | Sig::Skewed(_))
    }
}

fn sig() -> impl Strategy<Value = Sig> {
    prop_oneof![
        2 => Just(Sig::Valid),
        1 => (-290i64..=290).prop_map(Sig::Skewed),
        1 => Just(Sig::Missing),
        1 => Just(Sig::Repeated),
        1 => (prop_oneof![visible(0..=80), Just("t=1,v1=00".to_string())], any::<bool>())
            .prop_map(|(v, first)| Sig::RepeatedWith(v, first)),
        1 => Just(Sig::WrongSecret),
        2 => (any::<prop::sample::Index>(), 1u8..16).prop_map(|(i, d)| Sig::HexDigit(i, d)),
        2 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, up)| Sig::MacByte(i, up)),
        1 => any::<bool>().prop_map(Sig::Length),
        2 => (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Sig::BodyByte(i, x)),
        2 => prop_oneof![
            Just(-301i64 - 5),
            Just(305i64),
            (306i64..10_000_000_000),
            (..-306i64),
        ]
        .prop_map(Sig::Stale),
        1 => prop_oneof![
            prop::sample::select(vec!["", "-1", "+1", " ", "1e9", "0x10", "99999999999999999999",
                                      "1.5", "١٢٣"]).prop_map(String::from),
            hostile_string(1..=12).prop_filter("bytes a header value may hold", |s| {
                s.chars().all(|c| c == '\t' || (c >= ' ' && c != '\u{7f}'))
            }),
        ]
        .prop_map(Sig::BadTimestamp),
        1 => Just(Sig::NoV1),
        1 => Just(Sig::NoTimestamp),
        1 => visible(0..=100).prop_map(Sig::Garbage),
        1 => not_utf8().prop_map(|b| Sig::NotText(Blob(b))),
    ]
}

#[derive(Debug, Clone)]
struct CallbackRequest {
    sig: Sig,
    body: CallbackBody,
    oversize: Option<usize>,
}

fn mac_hex(body: &[u8], secret: &[u8], t: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl CallbackRequest {
    fn expect(&self, ids: &Ids) -> Option<Expect> {
        if self.oversize.is_some() {
            Some(Expect::one(413, "payload_too_large"))
        } else if !self.sig.valid() {
            Some(Expect::one(401, "invalid_signature"))
        } else {
            self.body.expect(ids)
        }
    }

    fn send(&self, app: &TestApp, world: &World) -> Option<(Expect, Resp)> {
        let expect = self.expect(&world.ids)?;
        let mut body = self.body.bytes(&world.ids);
        if let Some(len) = self.oversize {
            body = padded(body, len);
        }
        let secret = PAYMENT_SECRET.as_bytes();
        let now = chrono::Utc::now().timestamp();
        let valid = signature_at(&body, now);
        let mac = mac_hex(&body, secret, &now.to_string());
        let mut sent_body = body.clone();
        let values: Vec<Vec<u8>> = match &self.sig {
            Sig::Valid => vec![valid.into_bytes()],
            Sig::Skewed(offset) => vec![signature_at(&body, now + offset).into_bytes()],
            Sig::Missing => vec![],
            Sig::Repeated => vec![valid.clone().into_bytes(), valid.into_bytes()],
            Sig::RepeatedWith(other, first) => {
                let mut v = vec![valid.into_bytes(), other.clone().into_bytes()];
                if *first {
                    v.reverse();
                }
                v
            }
            Sig::WrongSecret => {
                vec![
                    order_engine::http::signature::sign(&body, b"not-the-secret", now).into_bytes(),
                ]
            }
            Sig::HexDigit(at, delta) => {
                let mut digits = mac.into_bytes();
                let i = at.index(digits.len());
                let value = u8::from_str_radix(&(digits[i] as char).to_string(), 16).unwrap();
                digits[i] = b"0123456789abcdef"[usize::from((value + delta) % 16)];
                vec![format!("t={now},v1={}", String::from_utf8(digits).unwrap()).into_bytes()]
            }
            Sig::MacByte(at, up) => {
                let mut bytes = hex::decode(&mac).unwrap();
                let i = at.index(bytes.len());
                bytes[i] = if *up {
                    bytes[i].wrapping_add(1)
                } else {
                    bytes[i].wrapping_sub(1)
                };
                vec![format!("t={now},v1={}", hex::encode(bytes)).into_bytes()]
            }
            Sig::Length(longer) => {
                let digits = if *longer {
                    format!("{mac}0")
                } else {
                    mac[..mac.len() - 1].to_string()
                };
                vec![format!("t={now},v1={digits}").into_bytes()]
            }
            Sig::BodyByte(at, xor) => {
                if sent_body.is_empty() {
                    sent_body.push(b' ');
                } else {
                    let i = at.index(sent_body.len());
                    sent_body[i] ^= xor;
                }
                vec![valid.into_bytes()]
            }
            Sig::Stale(offset) => vec![signature_at(&body, now + offset).into_bytes()],
            Sig::BadTimestamp(t) => {
                let mac = mac_hex(&body, secret, t);
                vec![format!("t={t},v1={mac}").into_bytes()]
            }
            Sig::NoV1 => vec![format!("t={now},v0={mac},v2={mac}").into_bytes()],
            Sig::NoTimestamp => vec![format!("v1={mac}").into_bytes()],
            Sig::Garbage(value) => vec![value.clone().into_bytes()],
            Sig::NotText(value) => vec![value.0.clone()],
        };
        let headers: Vec<(&str, &[u8])> = values.iter().map(|v| ("X-Signature", &v[..])).collect();
        Some((
            expect,
            app.raw_request_bytes("POST", "/api/payments/callback", &headers, &sent_body),
        ))
    }
}

/// Validly signed bodies: garbage, truncations, wrong types, huge and negative numbers,
/// hostile strings, deep nesting, unknown orders, taken trade numbers, amounts one cent off.
fn callback_bodies(app: &TestApp) {
    let world = World::new(app);
    let strategy = (
        prop_oneof![3 => Just(Sig::Valid), 1 => (-290i64..=290).prop_map(Sig::Skewed)],
        callback_body_strategy(&world.ids),
        oversize(),
    )
        .prop_map(|(sig, body, oversize)| CallbackRequest {
            sig,
            body,
            oversize,
        });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

/// Bad, stale, repeated, missing and non-text signatures (and bodies over the limit) over
/// any body, including ones that would pay or fail the pending order.
fn callback_signatures(app: &TestApp) {
    let world = World::new(app);
    let ids = &world.ids;
    let would_pay = (
        hostile_string(1..=64),
        prop_oneof![Just(SUCCESS), Just(FAILURE)],
    )
        .prop_filter("1-64 characters", |(t, _)| t.chars().count() <= 64)
        .prop_map({
            let payable = ids.pending_payable;
            move |(trade, code)| CallbackBody::Shaped {
                target: Target::Pending,
                trade: Trade::Fresh(trade),
                code,
                amount: payable,
                paid_at: None,
            }
        });
    let strategy = (
        sig(),
        prop_oneof![2 => callback_body_strategy(ids), 1 => would_pay],
        oversize(),
    )
        .prop_map(|(sig, body, oversize)| CallbackRequest {
            sig,
            body,
            oversize,
        });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

// ---------------------------------------------------------------------------------------------
// Cases split off so that each engine bug they find fails one test of its own (see the
// report on the Reliability issue), and does not hide what the tests above check.

/// Either route.
#[derive(Debug, Clone)]
enum AnyRequest {
    Order(OrderRequest),
    Callback(CallbackRequest),
}

impl AnyRequest {
    fn send(&self, app: &TestApp, world: &World) -> Option<(Expect, Resp)> {
        match self {
            AnyRequest::Order(r) => r.send(app, world),
            AnyRequest::Callback(r) => r.send(app, world),
        }
    }
}

/// A body that is a JSON array: the right values in an array instead of an object
/// (`[[course_id], null, 0]` for an order, `[order_no, trade_no, code, amount, paid_at]` for a
/// callback), or any array. The SPEC's bodies are objects: 400 invalid_request.
fn array_bodies(app: &TestApp) {
    let world = World::new(app);
    let ids = world.ids.clone();
    let orders = {
        let ids = ids.clone();
        let accepted = (0i64..=800).prop_map(|points| OrderBody::Shaped {
            courses: vec![CourseRef::Free],
            coupon: CouponRef::Absent,
            points: Some(points),
        });
        prop_oneof![shaped_order_body(), accepted].prop_map(move |body| {
            let body: Value = serde_json::from_slice(&body.bytes(&ids)).unwrap();
            let fields = json!([
                body["course_ids"],
                body.get("user_coupon_id").cloned().unwrap_or(Value::Null),
                body.get("points").cloned().unwrap_or(json!(0)),
            ]);
            AnyRequest::Order(OrderRequest {
                auth: Auth::Valid,
                idem: Idem::None,
                body: OrderBody::Malformed(
                    "the fields as an array",
                    Blob(fields.to_string().into_bytes()),
                ),
                oversize: None,
            })
        })
    };
    let callbacks = {
        let (no, payable) = (ids.pending_no.clone(), ids.pending_payable);
        // No NUL (see nul_in_callback_strings).
        let trade = looked_up(1..=64, false)
            .prop_filter("1-64 characters", |t| (1..=64).contains(&t.chars().count()));
        (
            trade,
            prop_oneof![Just(payable), Just(payable - 1)],
            prop_oneof![Just(SUCCESS), Just(FAILURE)],
        )
            .prop_map(move |(trade, amount, code)| {
                let fields = json!([no, trade, code, amount, "2026-11-26T12:00:00.000Z"]);
                AnyRequest::Callback(CallbackRequest {
                    sig: Sig::Valid,
                    body: CallbackBody::Malformed(
                        "the fields as an array",
                        Blob(fields.to_string().into_bytes()),
                    ),
                    oversize: None,
                })
            })
    };
    let any_array = {
        let arrays = json_value().prop_filter("an array", |v| v.is_array());
        (arrays, any::<bool>()).prop_map(|(array, order)| {
            let body = Blob(array.to_string().into_bytes());
            if order {
                AnyRequest::Order(OrderRequest {
                    auth: Auth::Valid,
                    idem: Idem::None,
                    body: OrderBody::Malformed("an array", body),
                    oversize: None,
                })
            } else {
                AnyRequest::Callback(CallbackRequest {
                    sig: Sig::Valid,
                    body: CallbackBody::Malformed("an array", body),
                    oversize: None,
                })
            }
        })
    };
    let strategy = prop_oneof![orders, callbacks, any_array];
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

/// Two `Authorization` headers, one the user's valid token, the other not: 401 (a repeated
/// credential is ambiguous, as a repeated X-Signature is), over any body, including bodies
/// that would otherwise be accepted.
fn repeated_authorization(app: &TestApp) {
    let world = World::new(app);
    let accepted = (0i64..=800).prop_map(|points| OrderBody::Shaped {
        courses: vec![CourseRef::Free],
        coupon: CouponRef::Absent,
        points: Some(points),
    });
    let strategy = (
        repeated_auth(),
        prop_oneof![order_body(&world.ids), accepted],
    )
        .prop_map(|(auth, body)| OrderRequest {
            auth,
            idem: Idem::None,
            body,
            oversize: None,
        });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

/// A header value holding a control byte (which HTTP does not allow in a field value):
/// `Authorization` (401 unauthenticated), `Idempotency-Key` (400) or `X-Signature` (401
/// invalid_signature); whatever the status, the answer is the SPEC's error envelope.
#[derive(Debug, Clone)]
struct ControlByte {
    header: &'static str,
    /// Where in the otherwise valid value the byte goes, and the byte.
    at: prop::sample::Index,
    byte: u8,
}

impl ControlByte {
    fn send(&self, app: &TestApp, world: &World) -> Option<(Expect, Resp)> {
        let insert = |value: String| {
            let mut bytes = value.into_bytes();
            let at = self.at.index(bytes.len() + 1);
            bytes.insert(at, self.byte);
            bytes
        };
        let ids = &world.ids;
        if self.header == "X-Signature" {
            let body = callback_body(&ids.pending_no, &trade_no(), SUCCESS, ids.pending_payable);
            let value = insert(signature(&body));
            let resp = app.raw_request_bytes(
                "POST",
                "/api/payments/callback",
                &[("X-Signature", &value)],
                &body,
            );
            return Some((Expect::protocol_400(), resp));
        }
        let bearer = format!("Bearer {}", world.token);
        let body = json!({"course_ids": [ids.free]}).to_string();
        let (expect, headers) = if self.header == "Authorization" {
            (
                Expect::protocol_400(),
                vec![("Authorization", insert(bearer))],
            )
        } else {
            let key = insert(format!("key-{}", uuid::Uuid::new_v4().simple()));
            let headers = vec![
                ("Authorization", bearer.into_bytes()),
                ("Idempotency-Key", key),
            ];
            (Expect::protocol_400(), headers)
        };
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        Some((
            expect,
            app.raw_request_bytes("POST", "/api/orders", &headers, body.as_bytes()),
        ))
    }
}

fn control_bytes_in_headers(app: &TestApp) {
    let world = World::new(app);
    let control = prop_oneof![1u8..=8, 0x0bu8..=0x0c, 0x0eu8..=0x1f, Just(0x7fu8)];
    let strategy = (
        prop::sample::select(vec!["Authorization", "Idempotency-Key", "X-Signature"]),
        any::<prop::sample::Index>(),
        control,
    )
        .prop_map(|(header, at, byte)| ControlByte { header, at, byte });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

/// Order and trade numbers holding a NUL character, in validly signed callbacks that must
/// be refused: a trade_no with NUL cannot be stored (400), an order number with NUL cannot
/// exist (404).
fn nul_in_callback_strings(app: &TestApp) {
    let world = World::new(app);
    let strategy =
        shaped_callback(world.ids.pending_payable, true).prop_map(|body| CallbackRequest {
            sig: Sig::Valid,
            body,
            oversize: None,
        });
    run_cases(app, &world, strategy, |case| case.send(app, &world));
}

/// One `#[test]` per backend: the engine is started once and every case runs against it.
macro_rules! hostile_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::helpers::{run_with, Backend};
            #[test]
            fn sqlite() {
                run_with(Backend::Sqlite, &[], super::$name);
            }
            #[test]
            fn postgres() {
                run_with(Backend::Postgres, &[], super::$name);
            }
            #[cfg(feature = "mysql")]
            #[test]
            fn mysql() {
                run_with(Backend::Mysql, &[], super::$name);
            }
        }
    )*};
}

hostile_tests!(
    order_bodies,
    order_headers,
    callback_bodies,
    callback_signatures,
    array_bodies,
    repeated_authorization,
    control_bytes_in_headers,
    nul_in_callback_strings,
);

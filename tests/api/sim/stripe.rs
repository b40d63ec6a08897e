//! The Stripe simulator: the part of Stripe's API the engine calls — Checkout Sessions (create,
//! retrieve, expire) and Refunds — and Stripe's webhook deliveries, on 127.0.0.1.
//!
//! Like Stripe it checks `Authorization: Bearer {secret key}` (401 otherwise), keeps each
//! `Idempotency-Key` with its request and answer (a repeat replays the answer with
//! `Idempotent-Replayed: true`; the same key with other parameters is 400 `idempotency_error`),
//! refuses an `expires_at` outside 30 min - 24 h, expires only open sessions, and refunds a
//! PaymentIntent at most its amount. Stricter than Stripe: a POST without an `Idempotency-Key` is
//! 400, because the engine must send one on every POST. Webhook deliveries are signed the way
//! Stripe signs them: `Stripe-Signature: t={unix},v1={hex HMAC-SHA256(whsec, "{t}.{body}")}`,
//! re-signed with a fresh `t` on every delivery attempt (a retry is the same event body).
//!
//! Sessions get ids `cs_test_...` and urls `https://checkout.stripe.com/c/pay/cs_test_...`;
//! paying one creates a PaymentIntent `pi_test_...`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::server::{serve, SimRequest, SimResponse};
use super::{Op, SimRefund, SimTrade, Simulator};

/// The simulator's (test-mode) secret key: the engine must send it as its Bearer token.
pub const SECRET_KEY: &str = "sk_test_51SimulatorOnlyNotARealKey";
/// The webhook endpoint's signing secret the simulator signs deliveries with.
pub const WEBHOOK_SECRET: &str = "whsec_simulatorOnlyNotARealSigningSecret";
/// Another endpoint's secret, for forged deliveries.
const OTHER_WEBHOOK_SECRET: &str = "whsec_anotherEndpointsSigningSecret";
/// The API version events say they were rendered with (the adapter pins the same).
const API_VERSION: &str = "2025-09-30.clover";
/// How old a stale delivery's `t` is.
const STALE_SECS: i64 = 600;

/// A Checkout Session as the simulator holds it.
#[derive(Debug, Clone)]
struct SimSession {
    id: String,
    order_no: Option<String>,
    metadata_order_no: Option<String>,
    currency: String,
    /// `unit_amount` x quantity, as started.
    amount_cents: i64,
    /// What was paid (tests pay other amounts than started).
    amount_total: i64,
    expires_at: i64,
    /// Whether the engine sent `expires_at` (else Stripe's default of 24 h applies).
    expires_at_sent: bool,
    created: i64,
    /// `open`, `complete`, `expired`.
    status: &'static str,
    /// `unpaid`, `paid`.
    payment_status: &'static str,
    payment_intent: Option<String>,
    refunded_cents: i64,
}

/// A webhook delivery: the event's raw body and its `Stripe-Signature` header.
#[derive(Debug, Clone)]
pub struct Notification {
    pub body: Vec<u8>,
    pub signature: String,
}

#[derive(Default)]
struct State {
    sessions: Vec<SimSession>,
    /// Idempotency-Key -> (the request's fingerprint, the answer, the order it counted for).
    idempotency: HashMap<String, (String, SimResponse, String)>,
    refunds: Vec<SimRefund>,
    fail: HashMap<Op, usize>,
    calls: HashMap<(Op, String), usize>,
    /// The body of the last event delivered, for `renotify`.
    last_event: Option<Vec<u8>>,
    /// The `Stripe-Version` of the last API call.
    last_stripe_version: Option<String>,
}

impl State {
    fn session_mut(&mut self, id: &str) -> Option<&mut SimSession> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }

    /// The latest session of `order_no`.
    fn latest_for(&mut self, order_no: &str) -> Option<&mut SimSession> {
        self.sessions
            .iter_mut()
            .rev()
            .find(|s| s.order_no.as_deref() == Some(order_no))
    }

    /// Stripe expires an open session once its `expires_at` passes.
    fn expire_due(&mut self, now: i64) {
        for session in &mut self.sessions {
            if session.status == "open" && session.expires_at <= now {
                session.status = "expired";
            }
        }
    }
}

pub struct StripeSim {
    state: Arc<Mutex<State>>,
    port: u16,
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_test_{}", uuid::Uuid::new_v4().simple())
}

fn session_json(session: &SimSession) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(order_no) = &session.metadata_order_no {
        metadata.insert("order_no".into(), json!(order_no));
    }
    json!({
        "id": session.id,
        "object": "checkout.session",
        "amount_subtotal": session.amount_total,
        "amount_total": session.amount_total,
        "cancel_url": null,
        "client_reference_id": session.order_no,
        "created": session.created,
        "currency": session.currency,
        "expires_at": session.expires_at,
        "livemode": false,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": session.payment_intent,
        "payment_status": session.payment_status,
        "status": session.status,
        "success_url": null,
        "ui_mode": "hosted",
        // Stripe clears the url once the session is no longer open.
        "url": if session.status == "open" {
            json!(format!("https://checkout.stripe.com/c/pay/{}", session.id))
        } else {
            Value::Null
        },
    })
}

fn error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> SimResponse {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    SimResponse::json(status, &json!({ "error": error }))
}

fn invalid(param: &str, code: &str, message: &str) -> SimResponse {
    error(
        400,
        "invalid_request_error",
        Some(code),
        Some(param),
        message,
    )
}

fn missing(object: &str, param: &str, id: &str) -> SimResponse {
    error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        Some(param),
        &format!("No such {object}: '{id}'"),
    )
}

/// The HMAC Stripe signs a delivery with.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The form of a request, by field name (the last value of a repeated name).
fn form(body: &[u8]) -> Result<HashMap<String, String>, SimResponse> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|_| {
            error(
                400,
                "invalid_request_error",
                None,
                None,
                "Invalid form body",
            )
        })
}

impl StripeSim {
    /// Starts a simulator on a port of its own.
    pub fn start() -> StripeSim {
        let state = Arc::new(Mutex::new(State::default()));
        let handler_state = state.clone();
        let port = serve(Arc::new(move |request: &SimRequest| {
            handle(&handler_state, request)
        }));
        StripeSim { state, port }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `http://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The engine's Stripe settings pointing at this simulator.
    pub fn settings(&self) -> order_engine::config::StripeSettings {
        order_engine::config::StripeSettings {
            secret_key: SECRET_KEY.into(),
            webhook_secret: WEBHOOK_SECRET.into(),
            api_base: self.base_url(),
        }
    }

    /// The engine's adapter, pointed at this simulator (for tests without an engine).
    pub fn adapter(&self) -> order_engine::providers::stripe::Stripe {
        order_engine::providers::stripe::Stripe::new(
            &self.settings(),
            std::time::Duration::from_secs(5),
        )
        .expect("the adapter starts")
    }

    /// The `Stripe-Version` the last API call carried.
    pub fn last_stripe_version(&self) -> Option<String> {
        self.lock().last_stripe_version.clone()
    }

    /// The id of the latest session of `order_no`.
    pub fn session_id(&self, order_no: &str) -> Option<String> {
        self.lock().latest_for(order_no).map(|s| s.id.clone())
    }

    /// The latest session of `order_no` paid with `amount_cents` (one made up when the engine
    /// started none); Stripe would take only an open session's amount, the tests need more.
    fn pay(&self, order_no: &str, amount_cents: i64) -> SimSession {
        let mut state = self.lock();
        let now = now_unix();
        if state.latest_for(order_no).is_none() {
            state.sessions.push(SimSession {
                id: new_id("cs"),
                order_no: Some(order_no.into()),
                metadata_order_no: Some(order_no.into()),
                currency: "cny".into(),
                amount_cents,
                amount_total: amount_cents,
                expires_at: now + 24 * 3600,
                expires_at_sent: false,
                created: now,
                status: "open",
                payment_status: "unpaid",
                payment_intent: None,
                refunded_cents: 0,
            });
        }
        let session = state.latest_for(order_no).expect("just made");
        session.status = "complete";
        session.payment_status = "paid";
        session.amount_total = amount_cents;
        if session.payment_intent.is_none() {
            session.payment_intent = Some(new_id("pi"));
        }
        session.clone()
    }

    /// An event of `kind` about `session`, as Stripe renders it.
    fn event(kind: &str, session: Value) -> Vec<u8> {
        json!({
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": now_unix(),
            "data": { "object": session },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": kind,
        })
        .to_string()
        .into_bytes()
    }

    fn signed(&self, body: Vec<u8>) -> Notification {
        let signature = sign(WEBHOOK_SECRET, now_unix(), &body);
        self.lock().last_event = Some(body.clone());
        Notification { body, signature }
    }

    /// The payer pays the session of `order_no`; the `checkout.session.completed` delivery
    /// Stripe would send (not sent).
    pub fn paid_notification(&self, order_no: &str, amount_cents: i64) -> Notification {
        let session = self.pay(order_no, amount_cents);
        self.signed(Self::event(
            "checkout.session.completed",
            session_json(&session),
        ))
    }

    /// The session of `order_no` expires; the `checkout.session.expired` delivery (not sent).
    pub fn closed_notification(&self, order_no: &str) -> Notification {
        let session = {
            let mut state = self.lock();
            let now = now_unix();
            match state.latest_for(order_no) {
                Some(session) => {
                    if session.status == "open" {
                        session.status = "expired";
                    }
                    session.clone()
                }
                None => {
                    let session = SimSession {
                        id: new_id("cs"),
                        order_no: Some(order_no.into()),
                        metadata_order_no: Some(order_no.into()),
                        currency: "cny".into(),
                        amount_cents: 0,
                        amount_total: 0,
                        expires_at: now,
                        expires_at_sent: false,
                        created: now,
                        status: "expired",
                        payment_status: "unpaid",
                        payment_intent: None,
                        refunded_cents: 0,
                    };
                    state.sessions.push(session.clone());
                    session
                }
            }
        };
        self.signed(Self::event(
            "checkout.session.expired",
            session_json(&session),
        ))
    }

    /// A `checkout.session.completed` delivery of a paid session of `order_no` gone wrong
    /// (`forged`, `tampered`, `stale`, `wrong_app`); nothing changes at the simulator.
    /// `wrong_app`: Stripe has no app id; a session of another account reaches an endpoint only
    /// correctly signed, and then carries none of this engine's references — so it is a
    /// correctly signed event whose session has no `client_reference_id` (the engine answers
    /// 400: authentic, but about no order of its).
    pub fn bad_notification(&self, order_no: &str, amount_cents: i64, how: &str) -> Notification {
        let now = now_unix();
        let existing = self.lock().latest_for(order_no).map(|s| s.clone());
        let mut session = existing.unwrap_or_else(|| SimSession {
            id: new_id("cs"),
            order_no: Some(order_no.into()),
            metadata_order_no: Some(order_no.into()),
            currency: "cny".into(),
            amount_cents,
            amount_total: amount_cents,
            expires_at: now + 3600,
            expires_at_sent: false,
            created: now,
            status: "open",
            payment_status: "unpaid",
            payment_intent: None,
            refunded_cents: 0,
        });
        session.status = "complete";
        session.payment_status = "paid";
        session.amount_total = amount_cents;
        session.payment_intent = session.payment_intent.or_else(|| Some(new_id("pi")));
        if how == "wrong_app" {
            session.order_no = None;
            session.metadata_order_no = None;
        }
        let body = Self::event("checkout.session.completed", session_json(&session));
        match how {
            "forged" => Notification {
                signature: sign(OTHER_WEBHOOK_SECRET, now, &body),
                body,
            },
            "tampered" => {
                let signature = sign(WEBHOOK_SECRET, now, &body);
                let text = String::from_utf8(body).expect("JSON is UTF-8");
                let changed = text.replacen(
                    &format!("\"amount_total\":{amount_cents}"),
                    &format!("\"amount_total\":{}", amount_cents + 100),
                    1,
                );
                assert_ne!(text, changed, "the amount is in the body");
                Notification {
                    body: changed.into_bytes(),
                    signature,
                }
            }
            "stale" => Notification {
                signature: sign(WEBHOOK_SECRET, now - STALE_SECS, &body),
                body,
            },
            "wrong_app" => Notification {
                signature: sign(WEBHOOK_SECRET, now, &body),
                body,
            },
            other => panic!("unknown bad notification {other}"),
        }
    }

    /// POSTs a delivery to the engine's webhook route; the engine's status and body.
    pub fn deliver(&self, engine_base: &str, notification: &Notification) -> (u16, String) {
        let url = format!(
            "{}{}",
            engine_base.trim_end_matches('/'),
            order_engine::providers::notify_route(order_engine::providers::ProviderName::Stripe)
        );
        let result = ureq::post(&url)
            .set("Content-Type", "application/json; charset=utf-8")
            .set(
                "User-Agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .set("Stripe-Signature", &notification.signature)
            .send_bytes(&notification.body);
        match result {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_string().unwrap_or_default())
            }
            Err(ureq::Error::Transport(t)) => (0, t.to_string()),
        }
    }
}

/// Which call a request is.
enum Route {
    Create,
    Retrieve(String),
    Expire(String),
    Refund,
}

fn route(request: &SimRequest) -> Option<(Op, Route)> {
    let path = request.path();
    let method = request.method.as_str();
    if path == "/v1/checkout/sessions" && method == "POST" {
        return Some((Op::Start, Route::Create));
    }
    if path == "/v1/refunds" && method == "POST" {
        return Some((Op::Refund, Route::Refund));
    }
    let rest = path.strip_prefix("/v1/checkout/sessions/")?;
    match (method, rest.split_once('/')) {
        ("GET", None) => Some((Op::Query, Route::Retrieve(rest.to_string()))),
        ("POST", Some((id, "expire"))) => Some((Op::Close, Route::Expire(id.to_string()))),
        _ => None,
    }
}

fn handle(state: &Mutex<State>, request: &SimRequest) -> SimResponse {
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if request.header("authorization") != Some(&format!("Bearer {SECRET_KEY}")) {
        return error(
            401,
            "invalid_request_error",
            None,
            None,
            "Invalid API Key provided: sk_test_****",
        );
    }
    state.last_stripe_version = request.header("stripe-version").map(str::to_string);
    let Some((op, route)) = route(request) else {
        return error(
            404,
            "invalid_request_error",
            None,
            None,
            &format!(
                "Unrecognized request URL ({}: {}).",
                request.method,
                request.path()
            ),
        );
    };
    if let Some(left) = state.fail.get_mut(&op).filter(|left| **left > 0) {
        *left -= 1;
        return error(500, "api_error", None, None, "Simulated failure");
    }
    let key = if request.method == "POST" {
        let Some(key) = request.header("idempotency-key").map(str::to_string) else {
            return error(
                400,
                "invalid_request_error",
                None,
                None,
                "The simulator requires an Idempotency-Key on every POST.",
            );
        };
        let fingerprint = format!(
            "{} {} {}",
            request.method,
            request.path(),
            String::from_utf8_lossy(&request.body)
        );
        if let Some((seen, answer, counted_for)) = state.idempotency.get(&key).cloned() {
            if seen != fingerprint {
                return error(
                    400,
                    "idempotency_error",
                    None,
                    None,
                    &format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                );
            }
            *state.calls.entry((op, counted_for)).or_default() += 1;
            let mut replayed = answer;
            replayed
                .headers
                .push(("Idempotent-Replayed".into(), "true".into()));
            return replayed;
        }
        Some((key, fingerprint))
    } else {
        None
    };
    state.expire_due(now_unix());
    let (answer, counted_for) = match route {
        Route::Create => create(&mut state, request),
        Route::Retrieve(id) => retrieve(&mut state, &id),
        Route::Expire(id) => expire(&mut state, &id),
        Route::Refund => refund(&mut state, request),
    };
    *state.calls.entry((op, counted_for.clone())).or_default() += 1;
    if let Some((key, fingerprint)) = key {
        state
            .idempotency
            .insert(key, (fingerprint, answer.clone(), counted_for));
    }
    answer
}

/// `POST /v1/checkout/sessions`; the answer and the order it is for.
fn create(state: &mut State, request: &SimRequest) -> (SimResponse, String) {
    let fields = match form(&request.body) {
        Ok(fields) => fields,
        Err(answer) => return (answer, String::new()),
    };
    let order_no = fields.get("client_reference_id").cloned();
    let counted_for = order_no.clone().unwrap_or_default();
    let get = |name: &str| fields.get(name).map(String::as_str);
    if get("mode") != Some("payment") {
        return (
            invalid("mode", "parameter_invalid_string", "mode must be payment"),
            counted_for,
        );
    }
    let Some(currency) = get("line_items[0][price_data][currency]")
        .filter(|c| c.len() == 3 && c.chars().all(|ch| ch.is_ascii_lowercase()))
    else {
        return (
            invalid(
                "line_items[0][price_data][currency]",
                "parameter_invalid_string",
                "Invalid currency: must be a lower-case ISO code",
            ),
            counted_for,
        );
    };
    let Some(unit_amount) = get("line_items[0][price_data][unit_amount]")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
    else {
        return (
            invalid(
                "line_items[0][price_data][unit_amount]",
                "parameter_invalid_integer",
                "Invalid integer: unit_amount",
            ),
            counted_for,
        );
    };
    if get("line_items[0][price_data][product_data][name]").is_none_or(str::is_empty) {
        return (
            invalid(
                "line_items[0][price_data][product_data][name]",
                "parameter_missing",
                "Missing required param: line_items[0][price_data][product_data][name].",
            ),
            counted_for,
        );
    }
    if get("line_items[0][quantity]") != Some("1") {
        return (
            invalid(
                "line_items[0][quantity]",
                "parameter_invalid_integer",
                "The simulator takes quantity 1",
            ),
            counted_for,
        );
    }
    let now = now_unix();
    let expires_at = match get("expires_at") {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(at) if (now + 30 * 60..=now + 24 * 3600).contains(&at) => Some(at),
            _ => {
                return (
                    invalid(
                        "expires_at",
                        "parameter_invalid_integer",
                        "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                    ),
                    counted_for,
                )
            }
        },
    };
    let session = SimSession {
        id: new_id("cs"),
        order_no,
        metadata_order_no: fields.get("metadata[order_no]").cloned(),
        currency: currency.to_string(),
        amount_cents: unit_amount,
        amount_total: unit_amount,
        expires_at: expires_at.unwrap_or(now + 24 * 3600),
        expires_at_sent: expires_at.is_some(),
        created: now,
        status: "open",
        payment_status: "unpaid",
        payment_intent: None,
        refunded_cents: 0,
    };
    let answer = SimResponse::json(200, &session_json(&session));
    state.sessions.push(session);
    (answer, counted_for)
}

/// `GET /v1/checkout/sessions/{id}`.
fn retrieve(state: &mut State, id: &str) -> (SimResponse, String) {
    match state.session_mut(id) {
        Some(session) => (
            SimResponse::json(200, &session_json(session)),
            session.order_no.clone().unwrap_or_default(),
        ),
        None => (missing("checkout.session", "session", id), id.to_string()),
    }
}

/// `POST /v1/checkout/sessions/{id}/expire`: only an open session expires.
fn expire(state: &mut State, id: &str) -> (SimResponse, String) {
    let Some(session) = state.session_mut(id) else {
        return (missing("checkout.session", "session", id), id.to_string());
    };
    let counted_for = session.order_no.clone().unwrap_or_default();
    if session.status != "open" {
        let message = format!(
            "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
            session.status
        );
        return (
            error(400, "invalid_request_error", None, None, &message),
            counted_for,
        );
    }
    session.status = "expired";
    (SimResponse::json(200, &session_json(session)), counted_for)
}

/// `POST /v1/refunds`: of a paid session's PaymentIntent, at most what is left of it.
fn refund(state: &mut State, request: &SimRequest) -> (SimResponse, String) {
    let fields = match form(&request.body) {
        Ok(fields) => fields,
        Err(answer) => return (answer, String::new()),
    };
    let intent = fields.get("payment_intent").cloned().unwrap_or_default();
    let metadata_order_no = fields.get("metadata[order_no]").cloned();
    let Some(session) = state
        .sessions
        .iter_mut()
        .find(|s| s.payment_intent.as_deref() == Some(intent.as_str()))
    else {
        return (
            missing("payment_intent", "payment_intent", &intent),
            metadata_order_no.unwrap_or(intent),
        );
    };
    let counted_for = session.order_no.clone().unwrap_or_default();
    let left = session.amount_total - session.refunded_cents;
    if left <= 0 {
        return (
            error(
                400,
                "invalid_request_error",
                Some("charge_already_refunded"),
                None,
                &format!("Charge for PaymentIntent {intent} has already been refunded."),
            ),
            counted_for,
        );
    }
    let amount = match fields.get("amount").map(|a| a.parse::<i64>()) {
        None => left,
        Some(Ok(amount)) if amount > 0 && amount <= left => amount,
        Some(Ok(amount)) if amount > left => {
            return (
                invalid(
                    "amount",
                    "amount_too_large",
                    &format!(
                    "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
                ),
                ),
                counted_for,
            )
        }
        Some(_) => {
            return (
                invalid(
                    "amount",
                    "parameter_invalid_integer",
                    "Invalid integer: amount",
                ),
                counted_for,
            )
        }
    };
    session.refunded_cents += amount;
    let currency = session.currency.clone();
    let refund_no = fields
        .get("metadata[refund_no]")
        .cloned()
        .or_else(|| request.header("idempotency-key").map(str::to_string))
        .unwrap_or_default();
    let id = new_id("re");
    state.refunds.push(SimRefund {
        trade_no: intent.clone(),
        amount_cents: amount,
        refund_no: refund_no.clone(),
    });
    let answer = SimResponse::json(
        200,
        &json!({
            "id": id,
            "object": "refund",
            "amount": amount,
            "currency": currency,
            "metadata": { "refund_no": refund_no, "order_no": metadata_order_no },
            "payment_intent": intent,
            "status": "succeeded",
            "created": now_unix(),
        }),
    );
    (answer, counted_for)
}

impl Simulator for StripeSim {
    fn provider(&self) -> &'static str {
        "stripe"
    }

    fn engine_settings(&self) -> Vec<(String, String)> {
        // Stripe's API is keyed by the secret key and the webhook secret: no RSA keys (the
        // fixtures of tests/fixtures/providers/ are Alipay's and WeChat Pay's).
        vec![
            ("providers.stripe.secret_key".into(), SECRET_KEY.into()),
            (
                "providers.stripe.webhook_secret".into(),
                WEBHOOK_SECRET.into(),
            ),
            ("providers.stripe.api_base".into(), self.base_url()),
        ]
    }

    fn trade(&self, order_no: &str) -> Option<SimTrade> {
        let mut state = self.lock();
        state.expire_due(now_unix());
        let session = state.latest_for(order_no)?;
        Some(SimTrade {
            order_no: order_no.to_string(),
            trade_no: session.payment_intent.clone(),
            amount_cents: session.amount_cents,
            expires_at_unix: session.expires_at_sent.then_some(session.expires_at),
            // Stripe sends every event to the account's webhook endpoints: no URL per session.
            notify_url: None,
            state: match (session.status, session.refunded_cents > 0) {
                ("expired", _) => "closed",
                ("complete", true) => "refunded",
                ("complete", false) => "paid",
                _ => "open",
            },
        })
    }

    fn pay_and_notify(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
    ) -> (u16, String) {
        let notification = self.paid_notification(order_no, amount_cents);
        self.deliver(engine_base, &notification)
    }

    fn pay_silently(&self, order_no: &str, amount_cents: i64) {
        self.pay(order_no, amount_cents);
    }

    fn close_and_notify(&self, engine_base: &str, order_no: &str) -> (u16, String) {
        let notification = self.closed_notification(order_no);
        self.deliver(engine_base, &notification)
    }

    fn renotify(&self, engine_base: &str) -> (u16, String) {
        let body = self
            .lock()
            .last_event
            .clone()
            .expect("a notification was sent before");
        // Each delivery attempt is signed anew, with its own t.
        let notification = Notification {
            signature: sign(WEBHOOK_SECRET, now_unix(), &body),
            body,
        };
        self.deliver(engine_base, &notification)
    }

    fn notify_bad(
        &self,
        engine_base: &str,
        order_no: &str,
        amount_cents: i64,
        how: &str,
    ) -> (u16, String) {
        let notification = self.bad_notification(order_no, amount_cents, how);
        self.deliver(engine_base, &notification)
    }

    fn fail_next(&self, op: Op, n: usize) {
        *self.lock().fail.entry(op).or_default() += n;
    }

    fn calls(&self, op: Op, order_no: &str) -> usize {
        self.lock()
            .calls
            .get(&(op, order_no.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn refunds(&self) -> Vec<SimRefund> {
        self.lock().refunds.clone()
    }

    fn success_reply(&self) -> (u16, String) {
        (200, r#"{"received":true}"#.into())
    }
}

/// The adapter driven directly against the simulator (no engine).
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDateTime};
    use order_engine::providers::{
        Closed, Notified, NotifyError, NotifyRequest, Provider, ProviderError, Queried,
        RefundRequest, StartRequest, TradeRef, TradeStatus,
    };

    /// Now, to the second (Stripe's times are Unix seconds).
    fn now() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(now_unix(), 0)
            .unwrap()
            .naive_utc()
    }

    fn order_no() -> String {
        format!("ord_{}", uuid::Uuid::new_v4().simple())
    }

    fn start_request(order_no: &str, ahead: Duration) -> StartRequest {
        let now = now();
        StartRequest {
            order_no: order_no.to_string(),
            subject: "Rust 101".into(),
            amount_cents: 12_345,
            currency: "CNY".into(),
            provider_expires_at: now + ahead,
            order_expires_at: now + ahead + Duration::seconds(60),
            notify_url: "https://pay.example.com/api/payments/stripe/webhook".into(),
            idempotency_key: format!("start-{order_no}"),
            now,
        }
    }

    fn started(sim: &StripeSim, order_no: &str) -> TradeRef {
        let started = sim
            .adapter()
            .start(&start_request(order_no, Duration::hours(1)))
            .unwrap();
        TradeRef {
            order_no: order_no.to_string(),
            provider_ref: started.provider_ref,
        }
    }

    fn verify_at(
        sim: &StripeSim,
        notification: &Notification,
        now_unix: i64,
    ) -> Result<Notified, NotifyError> {
        let signature = notification.signature.clone();
        let headers = move |name: &str| (name == "stripe-signature").then(|| signature.clone());
        sim.adapter().verify(&NotifyRequest {
            headers: &headers,
            body: &notification.body,
            now_unix,
            tolerance_secs: 300,
        })
    }

    fn verify(sim: &StripeSim, notification: &Notification) -> Result<Notified, NotifyError> {
        verify_at(sim, notification, now_unix())
    }

    #[test]
    fn start_creates_a_session_with_the_amount_and_expiry() {
        let sim = StripeSim::start();
        let order = order_no();
        let request = start_request(&order, Duration::hours(1));
        let started = sim.adapter().start(&request).unwrap();
        let session_id = started.provider_ref.clone().unwrap();
        assert!(session_id.starts_with("cs_test_"), "{session_id}");
        assert_eq!(
            started.pay_url.as_deref(),
            Some(format!("https://checkout.stripe.com/c/pay/{session_id}").as_str())
        );
        assert_eq!(started.code_url, None);
        let trade = sim.trade(&order).unwrap();
        assert_eq!(trade.amount_cents, 12_345);
        assert_eq!(
            trade.expires_at_unix,
            Some(request.provider_expires_at.and_utc().timestamp())
        );
        assert_eq!(trade.notify_url, None); // Stripe has none per session
        assert_eq!(trade.state, "open");
        assert_eq!(trade.trade_no, None);
        assert_eq!(sim.last_stripe_version().as_deref(), Some(API_VERSION));
        assert_eq!(sim.calls(Op::Start, &order), 1);

        // The same start again (a retry) is the same session: Stripe replays the answer.
        let again = sim.adapter().start(&request).unwrap();
        assert_eq!(again, started);
        assert_eq!(sim.calls(Op::Start, &order), 2);
        assert_eq!(sim.session_id(&order), Some(session_id));
    }

    #[test]
    fn an_expiry_outside_stripes_window_is_left_out() {
        let sim = StripeSim::start();
        for ahead in [Duration::minutes(10), Duration::hours(30)] {
            let order = order_no();
            sim.adapter().start(&start_request(&order, ahead)).unwrap();
            assert_eq!(sim.trade(&order).unwrap().expires_at_unix, None, "{ahead}");
        }
    }

    #[test]
    fn a_paid_notification_verifies_and_reads_back() {
        let sim = StripeSim::start();
        let order = order_no();
        let trade = started(&sim, &order);
        let notification = sim.paid_notification(&order, 12_345);
        let Notified::Trade(report) = verify(&sim, &notification).unwrap() else {
            panic!("a trade report");
        };
        let held = sim.trade(&order).unwrap();
        assert_eq!(held.state, "paid");
        assert_eq!(report.order_no, order);
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 12_345);
        assert_eq!(Some(report.trade_no.clone()), held.trade_no);
        assert!(report.trade_no.starts_with("pi_test_"));
        assert_eq!(report.provider_ref, trade.provider_ref);
        let paid_at = report.paid_at.unwrap().and_utc().timestamp();
        assert!((now_unix() - paid_at).abs() < 60);
    }

    #[test]
    fn an_expired_notification_reads_as_closed() {
        let sim = StripeSim::start();
        let order = order_no();
        let trade = started(&sim, &order);
        let Notified::Trade(report) = verify(&sim, &sim.closed_notification(&order)).unwrap()
        else {
            panic!("a trade report");
        };
        assert_eq!(report.status, TradeStatus::Closed);
        assert_eq!(report.order_no, order);
        assert_eq!(report.amount_cents, 12_345);
        // No PaymentIntent: the session id stands for the trade.
        assert_eq!(Some(report.trade_no.clone()), trade.provider_ref);
        assert_eq!(report.paid_at, None);
        assert_eq!(sim.trade(&order).unwrap().state, "closed");
    }

    #[test]
    fn forged_tampered_and_stale_notifications_are_unauthentic() {
        let sim = StripeSim::start();
        let order = order_no();
        started(&sim, &order);
        for how in ["forged", "tampered", "stale"] {
            let result = verify(&sim, &sim.bad_notification(&order, 12_345, how));
            assert!(
                matches!(result, Err(NotifyError::Unauthentic(_))),
                "{how}: {result:?}"
            );
        }
        // A good one, too late or too early, or without its header.
        let good = sim.paid_notification(&order, 12_345);
        assert!(verify(&sim, &good).is_ok());
        assert!(matches!(
            verify_at(&sim, &good, now_unix() + 301),
            Err(NotifyError::Unauthentic(_))
        ));
        let unsigned = sim.adapter().verify(&NotifyRequest {
            headers: &|_: &str| -> Option<String> { None },
            body: &good.body,
            now_unix: now_unix(),
            tolerance_secs: 300,
        });
        assert!(matches!(unsigned, Err(NotifyError::Unauthentic(_))));
        // None of them paid anything at the simulator but the good one.
        assert_eq!(sim.trade(&order).unwrap().state, "paid");
    }

    #[test]
    fn an_event_for_a_session_of_no_order_of_ours_is_malformed() {
        let sim = StripeSim::start();
        let order = order_no();
        let result = verify(&sim, &sim.bad_notification(&order, 100, "wrong_app"));
        assert!(
            matches!(&result, Err(NotifyError::Malformed(reason)) if reason.contains("client_reference_id")),
            "{result:?}"
        );
    }

    #[test]
    fn other_event_types_are_acknowledged() {
        let sim = StripeSim::start();
        let body = json!({
            "id": "evt_test_1", "object": "event", "api_version": API_VERSION,
            "created": now_unix(), "livemode": false, "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_test_1", "object": "payment_intent"}}
        })
        .to_string()
        .into_bytes();
        let notification = Notification {
            signature: sign(WEBHOOK_SECRET, now_unix(), &body),
            body,
        };
        assert!(matches!(
            verify(&sim, &notification),
            Ok(Notified::Acknowledge(_))
        ));
        // A live-mode event at a test key's endpoint is not this account's.
        let body = String::from_utf8(notification.body)
            .unwrap()
            .replace("\"livemode\":false", "\"livemode\":true")
            .into_bytes();
        let live = Notification {
            signature: sign(WEBHOOK_SECRET, now_unix(), &body),
            body,
        };
        assert!(matches!(
            verify(&sim, &live),
            Err(NotifyError::Unauthentic(_))
        ));
    }

    #[test]
    fn close_expires_an_open_session_and_tells_a_paid_one() {
        let sim = StripeSim::start();
        let adapter = sim.adapter();
        // Open -> expired.
        let order = order_no();
        let trade = started(&sim, &order);
        assert_eq!(adapter.close(&trade).unwrap(), Closed::Closed);
        assert_eq!(sim.trade(&order).unwrap().state, "closed");
        // Again (a retry, the same key): still closed.
        assert_eq!(adapter.close(&trade).unwrap(), Closed::Closed);
        assert_eq!(sim.calls(Op::Close, &order), 2);
        // Unknown session, no session.
        let unknown = TradeRef {
            order_no: order_no(),
            provider_ref: Some("cs_test_nosuch".into()),
        };
        assert_eq!(adapter.close(&unknown).unwrap(), Closed::NoSuchTrade);
        let never = TradeRef {
            order_no: order_no(),
            provider_ref: None,
        };
        assert_eq!(adapter.close(&never).unwrap(), Closed::NoSuchTrade);
        // Paid -> the payment, as its report.
        let order = order_no();
        let trade = started(&sim, &order);
        sim.pay_silently(&order, 12_345);
        let Closed::Paid(report) = adapter.close(&trade).unwrap() else {
            panic!("the paid trade");
        };
        assert_eq!(report.order_no, order);
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 12_345);
        assert_eq!(Some(report.trade_no), sim.trade(&order).unwrap().trade_no);
        assert_eq!(report.provider_ref, trade.provider_ref);
        // The failed expire and the retrieve that followed it.
        assert_eq!(sim.calls(Op::Close, &order), 1);
        assert_eq!(sim.calls(Op::Query, &order), 1);
    }

    #[test]
    fn a_refund_repeated_with_its_number_refunds_once() {
        let sim = StripeSim::start();
        let adapter = sim.adapter();
        let order = order_no();
        started(&sim, &order);
        sim.pay_silently(&order, 12_345);
        let trade_no = sim.trade(&order).unwrap().trade_no.unwrap();
        let refund = RefundRequest {
            order_no: order.clone(),
            trade_no: trade_no.clone(),
            amount_cents: 12_345,
            refund_no: "lp42".into(),
            currency: "CNY".into(),
        };
        adapter.refund(&refund).unwrap();
        adapter.refund(&refund).unwrap();
        assert_eq!(
            sim.refunds(),
            vec![SimRefund {
                trade_no: trade_no.clone(),
                amount_cents: 12_345,
                refund_no: "lp42".into(),
            }]
        );
        assert_eq!(sim.calls(Op::Refund, &order), 2);
        assert_eq!(sim.trade(&order).unwrap().state, "refunded");
        // Another number for a payment refunded whole: the money is back already.
        adapter
            .refund(&RefundRequest {
                refund_no: "lp43".into(),
                ..refund.clone()
            })
            .unwrap();
        assert_eq!(sim.refunds().len(), 1);
        // A payment Stripe does not know is refused, naming the order.
        let err = adapter
            .refund(&RefundRequest {
                trade_no: "pi_test_nosuch".into(),
                refund_no: "lp44".into(),
                ..refund
            })
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Refused { reason, .. } if reason.contains(&order) && reason.contains("resource_missing")),
            "{err}"
        );
    }

    #[test]
    fn query_reads_open_paid_closed_and_missing() {
        let sim = StripeSim::start();
        let adapter = sim.adapter();
        let open = order_no();
        let trade = started(&sim, &open);
        assert_eq!(adapter.query(&trade).unwrap(), Queried::Open);

        let paid = order_no();
        let paid_trade = started(&sim, &paid);
        sim.pay_silently(&paid, 12_345);
        let Queried::Report(report) = adapter.query(&paid_trade).unwrap() else {
            panic!("a report");
        };
        assert_eq!(report.status, TradeStatus::Paid);
        assert_eq!(report.amount_cents, 12_345);
        assert_eq!(Some(report.trade_no), sim.trade(&paid).unwrap().trade_no);

        adapter.close(&trade).unwrap();
        let Queried::Report(report) = adapter.query(&trade).unwrap() else {
            panic!("a report");
        };
        assert_eq!(report.status, TradeStatus::Closed);
        assert_eq!(Some(report.trade_no), trade.provider_ref);

        let unknown = TradeRef {
            order_no: order_no(),
            provider_ref: Some("cs_test_nosuch".into()),
        };
        assert_eq!(adapter.query(&unknown).unwrap(), Queried::NotFound);
        assert_eq!(sim.calls(Op::Query, "cs_test_nosuch"), 1);
        let never = TradeRef {
            order_no: order_no(),
            provider_ref: None,
        };
        assert_eq!(adapter.query(&never).unwrap(), Queried::NotFound);
    }

    #[test]
    fn a_500_is_refused_and_not_counted() {
        let sim = StripeSim::start();
        let order = order_no();
        let trade = started(&sim, &order);
        sim.fail_next(Op::Query, 1);
        let err = sim.adapter().query(&trade).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Refused { reason, .. } if reason.contains(&order) && reason.contains("HTTP 500") && reason.contains("api_error")),
            "{err}"
        );
        assert_eq!(sim.calls(Op::Query, &order), 0);
        assert_eq!(sim.adapter().query(&trade).unwrap(), Queried::Open);
        assert_eq!(sim.calls(Op::Query, &order), 1);

        sim.fail_next(Op::Start, 1);
        let other = order_no();
        assert!(matches!(
            sim.adapter()
                .start(&start_request(&other, Duration::hours(1))),
            Err(ProviderError::Refused { .. })
        ));
        assert_eq!(sim.trade(&other), None);
    }

    #[test]
    fn a_dead_port_is_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let adapter = order_engine::providers::stripe::Stripe::new(
            &order_engine::config::StripeSettings {
                secret_key: SECRET_KEY.into(),
                webhook_secret: WEBHOOK_SECRET.into(),
                api_base: format!("http://127.0.0.1:{port}"),
            },
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        let order = order_no();
        let err = adapter
            .start(&start_request(&order, Duration::hours(1)))
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Unreachable { reason, .. } if reason.contains(&order)),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_key_and_a_reused_idempotency_key_are_refused() {
        let sim = StripeSim::start();
        let adapter = order_engine::providers::stripe::Stripe::new(
            &order_engine::config::StripeSettings {
                secret_key: "sk_test_wrong".into(),
                ..sim.settings()
            },
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let order = order_no();
        let err = adapter
            .start(&start_request(&order, Duration::hours(1)))
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Refused { reason, .. } if reason.contains("HTTP 401")),
            "{err}"
        );

        let request = start_request(&order, Duration::hours(1));
        sim.adapter().start(&request).unwrap();
        let changed = StartRequest {
            amount_cents: 1,
            ..request
        };
        let err = sim.adapter().start(&changed).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Refused { reason, .. } if reason.contains("idempotency_error")),
            "{err}"
        );
    }

    /// A stand-in for the engine's webhook route: verifies with the adapter, answers as the
    /// engine does.
    fn fake_engine(sim: &StripeSim) -> (String, Arc<Mutex<Vec<Notified>>>) {
        let adapter = Arc::new(sim.adapter());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_handler = seen.clone();
        let port = serve(Arc::new(move |request: &SimRequest| {
            assert_eq!(request.path(), "/api/payments/stripe/webhook");
            let headers = |name: &str| request.header(name).map(str::to_string);
            let verified = adapter.verify(&NotifyRequest {
                headers: &headers,
                body: &request.body,
                now_unix: now_unix(),
                tolerance_secs: 300,
            });
            match verified {
                Ok(notified) => {
                    seen_by_handler.lock().unwrap().push(notified);
                    SimResponse::json(200, &json!({"received": true}))
                }
                Err(NotifyError::Unauthentic(_)) => SimResponse::status(401),
                Err(NotifyError::Malformed(_)) => SimResponse::status(400),
            }
        }));
        (format!("http://127.0.0.1:{port}"), seen)
    }

    #[test]
    fn deliveries_reach_the_webhook_route_and_retry_the_same_event() {
        let sim = StripeSim::start();
        let (engine, seen) = fake_engine(&sim);
        let order = order_no();
        started(&sim, &order);
        assert_eq!(
            sim.pay_and_notify(&engine, &order, 12_345),
            sim.success_reply()
        );
        assert_eq!(sim.renotify(&engine), sim.success_reply());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1]);
        for how in ["forged", "tampered", "stale"] {
            assert_eq!(sim.notify_bad(&engine, &order, 12_345, how).0, 401, "{how}");
        }
        assert_eq!(sim.notify_bad(&engine, &order, 12_345, "wrong_app").0, 400);
        let other = order_no();
        started(&sim, &other);
        assert_eq!(sim.close_and_notify(&engine, &other), sim.success_reply());
        // A payment for a trade the engine never started: the simulator makes one up.
        let made_up = order_no();
        assert_eq!(
            sim.pay_and_notify(&engine, &made_up, 500),
            sim.success_reply()
        );
        assert_eq!(sim.trade(&made_up).unwrap().amount_cents, 500);
    }

    #[test]
    fn engine_settings_point_at_the_simulator() {
        let sim = StripeSim::start();
        let settings = sim.engine_settings();
        assert!(settings.contains(&("providers.stripe.api_base".into(), sim.base_url())));
        assert!(settings
            .iter()
            .any(|(k, v)| k == "providers.stripe.webhook_secret" && v.starts_with("whsec_")));
    }
}

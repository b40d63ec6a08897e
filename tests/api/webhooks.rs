//! Webhooks (SPEC "Schedules and webhooks"): real HTTP receivers started here, on
//! 127.0.0.1, that record each request and answer as the test scripts (2xx, 500, or never).
//! Every request's signature is checked by this file's own Standard Webhooks verifier, written
//! from the specification (not the engine's signer). An order's whole story arrives once and
//! in order; 500s and timeouts are retried with the same `webhook-id` and a fresh timestamp
//! and signature; a delivery is dead-lettered after `webhooks.max_attempts` and an admin's
//! retry delivers it; an `events` filter is honoured; a hanging endpoint holds up no other;
//! a SIGKILLed engine delivers after its restart; with Redis the stream still gets every
//! event; the admin routes refuse bad input.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::helpers::*;
use crate::invariants;
use crate::on_both_backends_of;
use crate::process::EngineProcess;

/// The secret every test endpoint uses (that of the Standard Webhooks test vector).
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another endpoint's secret, so a signature made with the wrong one shows.
const OTHER_SECRET: &str = "whsec_c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQh";

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    Answer(u16),
    /// 500 to the first `n` attempts at each webhook-id, then 200.
    FailFirst(usize),
    /// Reads the request and never answers.
    Hang,
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
    pub(crate) json: Value,
    /// What the receiver answered (0: nothing).
    pub(crate) answered: u16,
    pub(crate) at: Instant,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub(crate) fn id(&self) -> &str {
        self.header("webhook-id")
    }

    fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }

    fn order_no(&self) -> &str {
        self.json["data"]["order_no"].as_str().unwrap_or_default()
    }

    pub(crate) fn delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// A small HTTP/1.1 server on 127.0.0.1:0 that records every request.
pub(crate) struct Receiver {
    port: u16,
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) fn start(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
        let port = listener.local_addr().expect("its address").port();
        let receiver = Receiver {
            port,
            script: Arc::new(Mutex::new(script)),
            requests: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (script, requests, stop) = (
            receiver.script.clone(),
            receiver.requests.clone(),
            receiver.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (script, requests, stop) = (script.clone(), requests.clone(), stop.clone());
                std::thread::spawn(move || serve(stream, &script, &requests, &stop));
            }
        });
        receiver
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests so far; returns them.
    #[track_caller]
    pub(crate) fn wait(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        wait_for(what, timeout, || {
            let seen = self.requests();
            if done(&seen) {
                Ok(seen)
            } else {
                Err(describe(&seen))
            }
        })
    }

    /// Waits until the events of each order in `stories` have been delivered (answered 2xx),
    /// each order's kinds exactly as given.
    #[track_caller]
    fn wait_stories(&self, stories: &[(&str, &[&str])], timeout: Duration) -> Vec<Received> {
        self.wait("the orders' stories", timeout, |seen| {
            stories
                .iter()
                .all(|(order_no, kinds)| delivered_kinds(seen, order_no) == *kinds)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    mut stream: TcpStream,
    script: &Mutex<Script>,
    requests: &Mutex<Vec<Received>>,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
    assert!(request_line.starts_with("POST /hook "), "{request_line}");
    let script = *script.lock().unwrap();
    let status = {
        let mut requests = requests.lock().unwrap();
        let id = headers.get("webhook-id").cloned().unwrap_or_default();
        let earlier = requests
            .iter()
            .filter(|r| r.header("webhook-id") == id)
            .count();
        let status = match script {
            Script::Answer(code) => code,
            Script::FailFirst(n) if earlier < n => 500,
            Script::FailFirst(_) => 200,
            Script::Hang => 0,
        };
        requests.push(Received {
            json: serde_json::from_str(&body).unwrap_or(Value::Null),
            headers,
            body,
            answered: status,
            at: Instant::now(),
        });
        status
    };
    if status == 0 {
        let until = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

fn describe(seen: &[Received]) -> String {
    seen.iter()
        .map(|r| format!("{}:{}:{}->{}", r.id(), r.order_no(), r.kind(), r.answered))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kinds of `order_no`'s events delivered (answered 2xx), in arrival order, each event
/// once (delivery is at least once: a lease that ran out under load may send one again).
fn delivered_kinds<'a>(seen: &'a [Received], order_no: &str) -> Vec<&'a str> {
    let mut ids = std::collections::BTreeSet::new();
    seen.iter()
        .filter(|r| r.order_no() == order_no && r.delivered() && ids.insert(r.id()))
        .map(Received::kind)
        .collect()
}

/// This file's Standard Webhooks verifier, from the specification: the key is the base64
/// after `whsec_`; the signed content `{id}.{timestamp}.{body}`; the header a space-separated
/// list of `v1,<base64 HMAC-SHA256>`, one of which must match; the timestamp within 5 minutes.
pub(crate) fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &str,
    signatures: &str,
) -> bool {
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Ok(sent_at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - sent_at).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = mac.finalize().into_bytes();
    signatures.split(' ').any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|sig| sig.as_slice() == expected.as_slice())
    })
}

#[test]
fn the_verifier_accepts_the_specifications_test_vector() {
    // The vector is of 2021: only the clock check is left out here.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap(),
    )
    .unwrap();
    mac.update(br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#);
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    let now = chrono::Utc::now().timestamp().to_string();
    assert!(!verify(SECRET, "1", &now, "{}", "v1,AAAA"));
    assert!(!verify(
        SECRET,
        "1",
        "1614265330",
        r#"{"test": 2432232314}"#,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    ));
}

/// Checks one request as a receiver must: Standard Webhooks headers, a valid signature, and
/// the body `{"type","timestamp","data"}` with the order.
#[track_caller]
fn assert_well_formed(r: &Received, secret: &str) {
    assert_eq!(r.header("content-type"), "application/json", "{r:?}");
    assert!(
        r.id().parse::<i64>().is_ok_and(|id| id > 0),
        "webhook-id {r:?}"
    );
    assert!(
        verify(
            secret,
            r.id(),
            r.header("webhook-timestamp"),
            &r.body,
            r.header("webhook-signature")
        ),
        "bad signature: {r:?}"
    );
    assert_keys(&r.json, &["data", "timestamp", "type"]);
    let timestamp = r.json["timestamp"].as_str().expect("timestamp");
    assert!(
        timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
        "{timestamp}"
    );
    assert_order_shape(&r.json["data"]);
}

/// Engine settings for `endpoints` (receiver, `events` filter), quick retries and a short
/// attempt timeout, plus `extra`.
pub(crate) fn hook_settings(
    endpoints: &[(String, &str, Option<&[&str]>)],
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let entries: Vec<String> = endpoints
        .iter()
        .map(|(url, secret, events)| {
            let events = events.map_or(String::new(), |kinds| {
                format!(
                    ", events = [{}]",
                    kinds
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            format!("{{url = {url:?}, secret = {secret:?}{events}}}")
        })
        .collect();
    let mut settings = vec![
        (
            "webhooks.endpoints".to_string(),
            format!("[{}]", entries.join(", ")),
        ),
        ("webhooks.timeout_ms".to_string(), "1000".to_string()),
        ("webhooks.backoff_base_ms".to_string(), "50".to_string()),
        ("webhooks.backoff_max_ms".to_string(), "200".to_string()),
    ];
    for (key, value) in extra {
        settings.retain(|(k, _)| k != key);
        settings.push((key.to_string(), value.to_string()));
    }
    settings
}

pub(crate) fn as_refs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn no(order: &Value) -> &str {
    order["order_no"].as_str().expect("order_no")
}

/// Runs `body` on an engine with `settings`, then the shared invariant checker.
pub(crate) fn run(backend: Backend, settings: &[(String, String)], body: impl FnOnce(&TestApp)) {
    run_with(backend, &as_refs(settings), body);
}

/// Three orders' stories: paid and granted; cancelled with points given back; a free one,
/// placed paid and granted. Returns the orders with their expected kinds.
fn stories(app: &Http) -> Vec<(String, Vec<&'static str>)> {
    let (_, token) = app.user_with_token(1_000);
    let paid = app.place_ok(&token, &[app.course(1_000)], None, 0);
    app.pay(&paid);
    let cancelled = app.place_ok(&token, &[app.course(1_000)], None, 100);
    app.as_user(
        &token,
        "POST",
        &format!("/api/orders/{}/cancel", no(&cancelled)),
        None,
    )
    .assert_status(200);
    let free = app.place_ok(&token, &[app.course(0)], None, 0);
    assert_eq!(free["status"], "paid");
    vec![
        (no(&paid).to_string(), vec!["placed", "paid", "granted"]),
        (
            no(&cancelled).to_string(),
            vec!["placed", "cancelled", "refunded"],
        ),
        (no(&free).to_string(), vec!["placed", "paid", "granted"]),
    ]
}

fn borrowed<'a>(stories: &'a [(String, Vec<&'static str>)]) -> Vec<(&'a str, &'a [&'static str])> {
    stories
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_slice()))
        .collect()
}

/// Each order's requests carry ascending webhook-ids: a later event never arrived before an
/// earlier one was answered.
#[track_caller]
fn assert_in_order_per_order(seen: &[Received]) {
    let mut last: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
    for r in seen {
        let id: i64 = r.id().parse().unwrap();
        if let Some((before, delivered)) = last.get(r.order_no()) {
            assert!(
                id == *before || (id > *before && *delivered),
                "order {}: event {id} arrived after {before} (delivered: {delivered}): {}",
                r.order_no(),
                describe(seen)
            );
        }
        let delivered =
            r.delivered() || last.get(r.order_no()).is_some_and(|(b, d)| *b == id && *d);
        last.insert(r.order_no(), (id, delivered));
    }
}

fn metric(app: &Http, result: &str) -> f64 {
    metric_value(
        app,
        &format!("order_engine_webhook_deliveries_total{{result=\"{result}\"}}"),
    )
}

pub(crate) fn deliveries(app: &Http, query: &str) -> Vec<Value> {
    app.admin("GET", &format!("/admin/deliveries{query}"), None)
        .assert_status(200)["data"]
        .as_array()
        .expect("data")
        .clone()
}

/// Every event of three orders' stories arrives once, in order per order, signed, without
/// Redis; the deliveries are listed done, and counted.
fn an_orders_story_arrives_once_in_order_and_signed(backend: Backend) {
    let receiver = Receiver::start(Script::Answer(204));
    let settings = hook_settings(&[(receiver.url(), SECRET, None)], &[]);
    run(backend, &settings, |app| {
        let stories = stories(app);
        let seen = receiver.wait_stories(&borrowed(&stories), Duration::from_secs(30));
        assert_eq!(seen.len(), 9, "each event once: {}", describe(&seen));
        for r in &seen {
            assert_well_formed(r, SECRET);
            assert!(!verify(
                OTHER_SECRET,
                r.id(),
                r.header("webhook-timestamp"),
                &r.body,
                r.header("webhook-signature")
            ));
        }
        assert_in_order_per_order(&seen);
        let ids: std::collections::BTreeSet<&str> = seen.iter().map(Received::id).collect();
        assert_eq!(ids.len(), 9, "one webhook-id per event");
        // The data is the order as the event left it.
        for r in &seen {
            let status = r.json["data"]["status"].as_str().unwrap();
            let expected = match r.kind() {
                "placed" if r.json["data"]["payable_cents"] == 0 => "paid",
                "placed" => "pending",
                "paid" | "granted" => "paid",
                _ => "cancelled",
            };
            assert_eq!(status, expected, "{r:?}");
        }
        let listed = wait_for("every delivery done", Duration::from_secs(10), || {
            let done = deliveries(app, "?status=done");
            if done.len() == 9 {
                Ok(done)
            } else {
                Err(format!("{done:?}"))
            }
        });
        for d in &listed {
            assert_keys(
                d,
                &[
                    "attempts",
                    "delivered_at",
                    "event_id",
                    "id",
                    "kind",
                    "last_error",
                    "next_attempt_at",
                    "order_no",
                    "status",
                    "url",
                ],
            );
            assert_eq!(d["url"], receiver.url());
            assert_eq!(d["attempts"], 1);
            assert!(d["next_attempt_at"].is_null() && d["last_error"].is_null());
            timestamp(&d["delivered_at"]);
            let event_id = d["event_id"].as_i64().unwrap().to_string();
            let sent = seen.iter().find(|r| r.id() == event_id).expect("sent");
            assert_eq!(
                (sent.kind(), sent.order_no()),
                (d["kind"].as_str().unwrap(), d["order_no"].as_str().unwrap())
            );
        }
        // Newest first, paged.
        let first = app
            .admin("GET", "/admin/deliveries?limit=4", None)
            .assert_status(200)
            .clone();
        assert_eq!(first["has_more"], true);
        let page = first["data"].as_array().unwrap();
        assert!(page
            .windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()));
        let after = first["next_after"].as_str().unwrap();
        let rest = deliveries(app, &format!("?limit=100&after={after}"));
        assert_eq!(page.len() + rest.len(), 9);
        assert!(deliveries(app, "?status=pending").is_empty());
        assert!(deliveries(app, "?status=dead_lettered").is_empty());
        assert_eq!(metric(app, "done"), 9.0);
        assert_eq!(metric(app, "dead_lettered"), 0.0);
    });
}
on_both_backends_of!(an_orders_story_arrives_once_in_order_and_signed);

/// 500s are retried with the same webhook-id and each attempt signed afresh at its own time;
/// an order's later event waits for the earlier one.
fn failures_are_retried_with_the_same_id_and_fresh_signatures(backend: Backend) {
    let receiver = Receiver::start(Script::FailFirst(2));
    // Retries at least a second apart, so each attempt's timestamp is a new second.
    let settings = hook_settings(
        &[(receiver.url(), SECRET, None)],
        &[
            ("webhooks.backoff_base_ms", "2000"),
            ("webhooks.backoff_max_ms", "2000"),
        ],
    );
    run(backend, &settings, |app| {
        let (_, token) = app.user_with_token(0);
        let order = app.place_ok(&token, &[app.course(500)], None, 0);
        app.pay(&order);
        let story = [(no(&order), &["placed", "paid", "granted"][..])];
        let seen = receiver.wait_stories(&story, Duration::from_secs(60));
        assert_eq!(
            seen.len(),
            9,
            "three attempts at each of three events: {}",
            describe(&seen)
        );
        assert_in_order_per_order(&seen);
        for attempts in seen.chunks(3) {
            let id = attempts[0].id();
            assert!(attempts.iter().all(|a| a.id() == id), "{}", describe(&seen));
            assert_eq!(
                attempts.iter().map(|a| a.answered).collect::<Vec<_>>(),
                [500, 500, 200]
            );
            assert!(
                attempts.iter().all(|a| a.body == attempts[0].body),
                "the same body"
            );
            for a in attempts {
                assert_well_formed(a, SECRET);
            }
            let stamps: Vec<i64> = attempts
                .iter()
                .map(|a| a.header("webhook-timestamp").parse().unwrap())
                .collect();
            assert!(
                stamps.windows(2).all(|w| w[1] > w[0]),
                "fresh timestamps {stamps:?}"
            );
            let signatures: std::collections::BTreeSet<&str> = attempts
                .iter()
                .map(|a| a.header("webhook-signature"))
                .collect();
            assert_eq!(signatures.len(), 3, "re-signed each attempt");
            assert!(
                attempts[1].at - attempts[0].at >= Duration::from_millis(900),
                "backoff"
            );
        }
        let done = wait_for("the deliveries done", Duration::from_secs(10), || {
            let done = deliveries(app, "?status=done");
            if done.len() == 3 {
                Ok(done)
            } else {
                Err(format!("{done:?}"))
            }
        });
        assert!(done.iter().all(|d| d["attempts"] == 3), "{done:?}");
        assert_eq!(metric(app, "retried"), 6.0);
        assert_eq!(metric(app, "done"), 3.0);
    });
}
on_both_backends_of!(failures_are_retried_with_the_same_id_and_fresh_signatures);

/// An endpoint that never answers times out each attempt; after max_attempts the delivery is
/// dead-lettered (the order's next event then goes on); an admin's retry delivers it; a retry
/// of one that is not dead-lettered is 409, of none 404.
fn timeouts_dead_letter_and_an_admin_retry_delivers(backend: Backend) {
    let receiver = Receiver::start(Script::Hang);
    let settings = hook_settings(
        &[(receiver.url(), SECRET, None)],
        &[
            ("webhooks.timeout_ms", "300"),
            ("webhooks.max_attempts", "2"),
        ],
    );
    run(backend, &settings, |app| {
        let (_, token) = app.user_with_token(0);
        let order = app.place_ok(&token, &[app.course(500)], None, 0);
        let dead = wait_for(
            "the placed event dead-lettered",
            Duration::from_secs(30),
            || {
                let dead = deliveries(app, "?status=dead_lettered");
                if dead.len() == 1 {
                    Ok(dead[0].clone())
                } else {
                    Err(format!("{dead:?}"))
                }
            },
        );
        let dead_id = dead["event_id"].as_i64().unwrap().to_string();
        assert_eq!(
            (dead["kind"].as_str(), dead["attempts"].as_i64()),
            (Some("placed"), Some(2))
        );
        assert!(
            dead["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{dead}"
        );
        assert!(dead["next_attempt_at"].is_null() && dead["delivered_at"].is_null());
        let seen = receiver.requests();
        assert_eq!(seen.len(), 2, "{}", describe(&seen));
        assert!(seen.iter().all(|r| r.id() == dead_id));
        assert_eq!(metric(app, "dead_lettered"), 1.0);
        assert_eq!(metric(app, "retried"), 1.0);

        // The receiver recovers; the order is paid: its next events are not held up by the
        // dead letter.
        receiver.set(Script::Answer(200));
        app.pay(&order);
        receiver.wait(
            "paid and granted delivered",
            Duration::from_secs(30),
            |seen| delivered_kinds(seen, no(&order)) == ["paid", "granted"],
        );

        let id = dead["id"].as_i64().unwrap();
        let retried = app.admin("POST", &format!("/admin/deliveries/{id}/retry"), None);
        let retried = retried.assert_status(200);
        assert_eq!(
            (retried["status"].as_str(), retried["attempts"].as_i64()),
            (Some("pending"), Some(0))
        );
        assert_eq!(retried["event_id"], dead["event_id"]);
        let seen = receiver.wait("the retried delivery", Duration::from_secs(30), |seen| {
            seen.iter().any(|r| r.id() == dead_id && r.delivered())
        });
        let last = seen.iter().rfind(|r| r.id() == dead_id).unwrap();
        assert_well_formed(last, SECRET);
        assert_eq!(last.kind(), "placed");
        wait_for("the retried delivery done", Duration::from_secs(10), || {
            let d = deliveries(app, "?status=done");
            if d.iter().any(|d| d["id"] == id) {
                Ok(())
            } else {
                Err(format!("{d:?}"))
            }
        });
        app.admin("POST", &format!("/admin/deliveries/{id}/retry"), None)
            .assert_error(409, "delivery_not_dead_lettered");
        app.admin("POST", "/admin/deliveries/999999/retry", None)
            .assert_error(404, "delivery_not_found");
    });
}
on_both_backends_of!(timeouts_dead_letter_and_an_admin_retry_delivers);

/// An endpoint with an `events` filter gets only those kinds, promptly, while another
/// endpoint hangs on every attempt (the SPEC's full 10 s timeout).
fn a_hanging_endpoint_holds_up_no_other_and_filters_hold(backend: Backend) {
    let paid_only = Receiver::start(Script::Answer(200));
    let hanging = Receiver::start(Script::Hang);
    let settings = hook_settings(
        &[
            (hanging.url(), OTHER_SECRET, None),
            (paid_only.url(), SECRET, Some(&["paid", "cancelled"])),
        ],
        &[("webhooks.timeout_ms", "10000")],
    );
    run(backend, &settings, |app| {
        let (_, token) = app.user_with_token(0);
        let orders: Vec<Value> = (0..3)
            .map(|_| app.place_ok(&token, &[app.course(300)], None, 0))
            .collect();
        // The hanging endpoint holds its worker 10 s per attempt; the other's deliveries
        // arrive well within that of each payment.
        let mut paid_at = Vec::new();
        for order in &orders {
            app.pay(order);
            paid_at.push(Instant::now());
        }
        let seen = paid_only.wait("three paid events", Duration::from_secs(8), |seen| {
            seen.len() >= 3
        });
        for (r, at) in seen.iter().zip(&paid_at) {
            let lag = r.at.saturating_duration_since(*at);
            assert!(
                lag < Duration::from_secs(6),
                "held up {lag:?}: {}",
                describe(&seen)
            );
        }
        for (r, order) in seen.iter().zip(&orders) {
            assert_eq!((r.kind(), r.order_no()), ("paid", no(order)));
            assert_well_formed(r, SECRET);
        }
        // The hanging endpoint got (only) the first event so far, signed with its own secret.
        let hung = hanging.wait(
            "an attempt at the hanging endpoint",
            Duration::from_secs(5),
            |s| !s.is_empty(),
        );
        assert_well_formed(&hung[0], OTHER_SECRET);
        assert!(!verify(
            SECRET,
            hung[0].id(),
            hung[0].header("webhook-timestamp"),
            &hung[0].body,
            hung[0].header("webhook-signature")
        ));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(paid_only.requests().len(), 3, "nothing but the paid events");
        // The same event has the same webhook-id at every endpoint.
        let paid_ids: Vec<String> = seen.iter().map(|r| r.id().to_string()).collect();
        let all = deliveries(app, "?limit=100");
        for id in &paid_ids {
            let urls: Vec<&str> = all
                .iter()
                .filter(|d| d["event_id"].as_i64().is_some_and(|e| e.to_string() == *id))
                .map(|d| d["url"].as_str().unwrap())
                .collect();
            assert_eq!(urls.len(), 2, "event {id} at both endpoints: {all:?}");
        }
    });
}
on_both_backends_of!(a_hanging_endpoint_holds_up_no_other_and_filters_hold);

/// The engine is SIGKILLed while its deliveries fail; a new process on the same database
/// delivers every event, in order.
fn a_killed_engine_delivers_after_its_restart(backend: Backend) {
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let receiver = Receiver::start(Script::Answer(503));
    let settings = hook_settings(&[(receiver.url(), SECRET, None)], &[]);
    let refs = as_refs(&settings);
    let mut first = EngineProcess::start(&db, &refs);
    let (_, token) = first.user_with_token(1_000);
    let paid = first.place_ok(&token, &[first.course(1_000)], None, 0);
    first.pay(&paid);
    let cancelled = first.place_ok(&token, &[first.course(1_000)], None, 10);
    first
        .as_user(
            &token,
            "POST",
            &format!("/api/orders/{}/cancel", no(&cancelled)),
            None,
        )
        .assert_status(200);
    receiver.wait("attempts that fail", Duration::from_secs(30), |seen| {
        seen.iter()
            .filter(|r| r.order_no() == no(&cancelled))
            .count()
            >= 1
            && seen.iter().filter(|r| r.order_no() == no(&paid)).count() >= 1
    });
    first.kill();
    receiver.set(Script::Answer(200));
    let before = receiver.requests().len();

    let second = EngineProcess::start(&db, &refs);
    let story = [
        (no(&paid), &["placed", "paid", "granted"][..]),
        (no(&cancelled), &["placed", "cancelled", "refunded"][..]),
    ];
    let seen = receiver.wait_stories(&story, Duration::from_secs(60));
    assert_in_order_per_order(&seen);
    for r in &seen[before..] {
        assert_well_formed(r, SECRET);
    }
    wait_for("every delivery done", Duration::from_secs(10), || {
        let all = second
            .admin("GET", "/admin/deliveries?limit=100", None)
            .json["data"]
            .clone();
        let all = all.as_array().cloned().unwrap_or_default();
        if all.len() == 6 && all.iter().all(|d| d["status"] == "done") {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    invariants::check_db(&mut db.connect(), &format!("{backend:?} after a SIGKILL"));
}
on_both_backends_of!(a_killed_engine_delivers_after_its_restart);

/// With Redis configured too, the stream still gets every event, with the event ids the
/// webhooks carry.
fn with_redis_the_stream_and_the_endpoint_get_every_event(backend: Backend) {
    let Some(scope) = crate::redis::RedisScope::new() else {
        return;
    };
    let receiver = Receiver::start(Script::Answer(200));
    let redis: Vec<(&str, String)> = scope.settings();
    let redis_refs: Vec<(&str, &str)> = redis.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let settings = hook_settings(&[(receiver.url(), SECRET, None)], &redis_refs);
    run(backend, &settings, |app| {
        let stories = stories(app);
        let seen = receiver.wait_stories(&borrowed(&stories), Duration::from_secs(30));
        let events = scope.wait_events(9);
        let mut stream_ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let mut hook_ids: Vec<String> = seen.iter().map(|r| r.id().to_string()).collect();
        stream_ids.sort();
        hook_ids.sort();
        assert_eq!(stream_ids, hook_ids);
        for e in &events {
            let r = seen
                .iter()
                .find(|r| r.id() == e.event_id.to_string())
                .unwrap();
            assert_eq!(
                (r.kind(), r.order_no()),
                (e.kind.as_str(), e.order_no.as_str())
            );
        }
        // Published and fanned out: nothing waits in the journal.
        wait_for("an empty journal", Duration::from_secs(10), || {
            let unpublished =
                app.admin("GET", "/admin/actors", None).json["events"]["unpublished"].clone();
            if unpublished == 0 {
                Ok(())
            } else {
                Err(unpublished.to_string())
            }
        });
    });
}
on_both_backends_of!(with_redis_the_stream_and_the_endpoint_get_every_event);

/// Bad input to the admin routes: the SPEC envelope.
fn the_admin_routes_refuse_bad_input(backend: Backend) {
    let Some(app) = TestApp::spawn_if_available(backend) else {
        return;
    };
    for query in [
        "?status=sent",
        "?status=",
        "?after=abc",
        "?after=0",
        "?limit=0",
        "?limit=101",
        "?bogus=1",
    ] {
        app.admin("GET", &format!("/admin/deliveries{query}"), None)
            .assert_error(400, "invalid_request");
    }
    let empty = app.admin("GET", "/admin/deliveries?status=pending&limit=5", None);
    assert_eq!(
        empty.assert_status(200),
        &serde_json::json!({"data": [], "has_more": false, "next_after": null})
    );
    app.request("GET", "/admin/deliveries", &[], None)
        .assert_unauthenticated();
    app.request("POST", "/admin/deliveries/1/retry", &[], None)
        .assert_unauthenticated();
    app.admin("POST", "/admin/deliveries/1/retry", None)
        .assert_error(404, "delivery_not_found");
    app.admin("POST", "/admin/deliveries/x/retry", None)
        .assert_error(400, "invalid_request");
    app.admin("GET", "/admin/deliveries/1/retry", None)
        .assert_error(405, "method_not_allowed");
    // Without an endpoint no event is recorded (nor Redis): nothing to fan out.
    let (_, token) = app.user_with_token(0);
    app.place_ok(&token, &[app.course(100)], None, 0);
    assert!(deliveries(&app, "").is_empty());
    assert_eq!(
        app.admin("GET", "/admin/actors", None).json["events"]["unpublished"],
        0
    );
    invariants::check(&app);
}
on_both_backends_of!(the_admin_routes_refuse_bad_input);

/// Events journaled for endpoints that a restart no longer configures do not wait for a
/// fan-out that never comes: without Redis they go.
fn events_left_for_removed_endpoints_are_released_at_start(backend: Backend) {
    use diesel::prelude::*;
    use order_engine::db::schema::order_events;
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let mut first = EngineProcess::start(&db, &[]);
    let count = |db: &TestDatabase| -> i64 {
        order_events::table
            .count()
            .get_result(&mut db.connect())
            .expect("count events")
    };
    diesel::insert_into(order_events::table)
        .values((
            order_events::order_no.eq("left_for_an_endpoint"),
            order_events::kind.eq("placed"),
            order_events::at.eq(order_engine::db::sql_types::At(
                chrono::Utc::now().naive_utc(),
            )),
            order_events::data.eq("{}"),
            order_events::fanned_out.eq(false),
        ))
        .execute(&mut db.connect())
        .expect("journal an event");
    first.kill();
    assert_eq!(count(&db), 1);
    let _second = EngineProcess::start(&db, &[]);
    assert_eq!(count(&db), 0, "released at start");
}
on_both_backends_of!(events_left_for_removed_endpoints_are_released_at_start);

//! The whole-request timeout (SPEC §HTTP API): a request must arrive whole, head and body,
//! within `server.request_timeout_secs` of its first byte, idle keep-alive time not counted; a
//! slower client gets 408 `request_timeout` in the error envelope and its connection is closed.
//! Over raw TCP, with the timeout at 2 s.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

const TIMEOUT: Duration = Duration::from_secs(2);
const SETTINGS: &[(&str, &str)] = &[("server.request_timeout_secs", "2")];
/// How late a 408 or a close may come on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);
/// The pace of a slow client.
const STEP: Duration = Duration::from_millis(500);

/// One response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    json: Value,
    /// When its first byte came.
    at: Instant,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// 408 `request_timeout` in the exact envelope, announcing the close.
    #[track_caller]
    fn assert_request_timeout(&self, what: &str) {
        assert_eq!(self.status, 408, "{what}: {self:?}");
        assert_eq!(
            self.json["error"]["code"], "request_timeout",
            "{what}: {self:?}"
        );
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {self:?}"
        );
        assert_keys(&self.json, &["error"]);
        assert_keys(&self.json["error"], &["code", "message"]);
        assert!(
            self.header("Content-Type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: {self:?}"
        );
        assert_eq!(
            self.header("Connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close"),
            "{what}: {self:?}"
        );
    }
}

/// A raw connection to the engine, read without blocking for long.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    first_byte_at: Option<Instant>,
}

impl Conn {
    fn open(app: &TestApp) -> Conn {
        let stream = TcpStream::connect(app.base.trim_start_matches("http://")).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
            first_byte_at: None,
        }
    }

    /// Sends bytes; the first ones start the request's clock. Errors are returned, not raised:
    /// a server that has answered may have stopped reading.
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.first_byte_at.get_or_insert_with(Instant::now);
        self.stream.write_all(bytes)
    }

    /// Reads what has arrived; `Ok(false)` once the server has closed its side.
    fn pump(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One whole response off the front of the buffer, if it is all there.
    fn take_response(&mut self, at: Instant) -> Option<Raw> {
        let split = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..split]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if self.buf.len() < split + 4 + length {
            return None;
        }
        let body: Vec<u8> = self
            .buf
            .drain(..split + 4 + length)
            .skip(split + 4)
            .collect();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Some(Raw {
            status,
            headers,
            json,
            at,
        })
    }

    /// Waits for one response until `deadline`, calling `trickle` every [`STEP`] meanwhile (a
    /// slow client sending its next byte) until the response starts.
    fn response(&mut self, deadline: Instant, mut trickle: impl FnMut(&mut Conn)) -> Raw {
        let mut next_step = Instant::now() + STEP;
        let mut started: Option<Instant> = None;
        loop {
            if let Some(response) = self.take_response(started.unwrap_or_else(Instant::now)) {
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "no whole response by the deadline; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            let before = self.buf.len();
            match self.pump() {
                Ok(true) => {}
                Ok(false) => panic!(
                    "closed without a whole response; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Err(e) => panic!(
                    "read failed ({e}) without a whole response; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            if self.buf.len() > before && started.is_none() {
                started = Some(Instant::now());
            }
            if started.is_none() && Instant::now() >= next_step {
                trickle(self);
                next_step += STEP;
            }
        }
    }

    /// Asserts the server closes the connection (a read returns 0) by `deadline`, sending
    /// nothing more meanwhile.
    #[track_caller]
    fn assert_closed_by(&mut self, deadline: Instant) {
        loop {
            match self.pump() {
                Ok(false) => return,
                Ok(true) => assert!(
                    Instant::now() < deadline,
                    "still open at the deadline; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                // A reset also ends the connection, but the SPEC's close is an orderly one.
                Err(e) => panic!("read failed ({e}) instead of a close"),
            }
            assert!(
                self.buf.is_empty(),
                "bytes after the response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }
}

/// A request head for `path` with these headers (`Host` added).
fn head(method: &str, path: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: engine\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn admin_auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {ADMIN_TOKEN}"))
}

/// Sends one more byte of `rest` (errors ignored: the server may have answered).
fn trickle_from(rest: &mut std::collections::VecDeque<u8>) -> impl FnMut(&mut Conn) + '_ {
    move |conn: &mut Conn| {
        if let Some(byte) = rest.pop_front() {
            let _ = conn.send(&[byte]);
        }
    }
}

/// Sends `request` one byte at a time and asserts the 408 comes on time and the connection
/// is closed.
#[track_caller]
fn trickle_until_408(conn: &mut Conn, request: &[u8], what: &str) {
    let mut rest: std::collections::VecDeque<u8> = request.iter().copied().collect();
    let first = rest.pop_front().unwrap();
    conn.send(&[first]).unwrap();
    let response = conn.response(Instant::now() + TIMEOUT + SLACK, trickle_from(&mut rest));
    response.assert_request_timeout(what);
    assert_on_time(conn, &response, what);
    conn.assert_closed_by(Instant::now() + SLACK);
}

/// Asserts the 408 came no earlier than the timeout after the request's first byte, and not
/// much later.
#[track_caller]
fn assert_on_time(conn: &Conn, response: &Raw, what: &str) {
    let elapsed = response.at - conn.first_byte_at.expect("a request was sent");
    assert!(
        elapsed + Duration::from_millis(100) >= TIMEOUT,
        "{what}: 408 after only {elapsed:?}"
    );
    assert!(
        elapsed <= TIMEOUT + SLACK,
        "{what}: 408 only after {elapsed:?}"
    );
}

/// What a slow-body case sends: its name, the path and the headers.
type BodyCase<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

#[test]
fn a_slow_body_gets_408_and_the_connection_is_closed() {
    run_with(Backend::Sqlite, SETTINGS, |app| {
        // Every route that reads a body, each slow from its first byte; 408 ranks before the
        // missing credentials (401) and the malformed body (400) they would also get.
        let cases: Vec<BodyCase> = vec![
            ("admin user", "/admin/users", vec![admin_auth()]),
            ("admin user, no token", "/admin/users", vec![]),
            ("order, no token", "/api/orders", vec![]),
            ("callback, unsigned", "/api/payments/callback", vec![]),
        ];
        std::thread::scope(|s| {
            for (what, path, mut headers) in cases {
                s.spawn(move || {
                    headers.push(("Content-Length", "100".into()));
                    let mut conn = Conn::open(app);
                    conn.send(&head("POST", path, &headers))
                        .expect("send the head");
                    let mut rest: std::collections::VecDeque<u8> = std::iter::once(b'{')
                        .chain(std::iter::repeat_n(b' ', 99))
                        .collect();
                    let deadline = Instant::now() + TIMEOUT + SLACK;
                    let response = conn.response(deadline, trickle_from(&mut rest));
                    response.assert_request_timeout(what);
                    assert_on_time(&conn, &response, what);
                    conn.assert_closed_by(Instant::now() + SLACK);
                });
            }
        });
        // Nothing was created: the first user made now is user 1.
        assert_eq!(app.create_user("after", 0)["id"], 1);
    });
}

#[test]
fn a_slow_head_gets_408_on_any_request_of_a_connection() {
    run_with(Backend::Sqlite, SETTINGS, |app| {
        let request = head("GET", "/healthz", &[("X-Padding", "p".repeat(40))]);
        // The first request of a connection, one byte at a time.
        let mut conn = Conn::open(app);
        trickle_until_408(&mut conn, &request, "first request");

        // A later request on a kept-alive connection: the first is answered at once, the
        // second's head comes one byte at a time.
        let mut conn = Conn::open(app);
        conn.send(&request).unwrap();
        let ok = conn.response(Instant::now() + SLACK, |_| {});
        assert_eq!(
            (ok.status, &ok.json),
            (200, &json!({"status": "ok"})),
            "{ok:?}"
        );
        conn.first_byte_at = None;
        trickle_until_408(&mut conn, &request, "second request");
    });
}

#[test]
fn idle_keep_alive_time_does_not_count() {
    run_with(Backend::Sqlite, SETTINGS, |app| {
        let (user_id, token) = app.user_with_token(0);
        let request = head(
            "GET",
            "/api/me",
            &[("Authorization", format!("Bearer {token}"))],
        );
        let idle = TIMEOUT + Duration::from_secs(1);
        let mut conn = Conn::open(app);
        // Idle before the first request, then between requests: longer than the timeout,
        // shorter than keep-alive (5 s).
        for round in 0..2 {
            std::thread::sleep(idle);
            conn.send(&request).unwrap();
            let response = conn.response(Instant::now() + SLACK, |_| {});
            assert_eq!(
                (response.status, &response.json["id"]),
                (200, &json!(user_id)),
                "round {round}: {response:?}"
            );
        }
        // A request that is slow but whole within the timeout is served: its body arrives
        // over about a second.
        let body = json!({"name": "slow", "points": 3})
            .to_string()
            .into_bytes();
        let mut rest: std::collections::VecDeque<u8> = body.iter().copied().collect();
        let chunk: Vec<u8> = rest.drain(..body.len() / 2).collect();
        let headers = vec![admin_auth(), ("Content-Length", body.len().to_string())];
        conn.send(&head("POST", "/admin/users", &headers)).unwrap();
        conn.send(&chunk).unwrap();
        let rest: Vec<u8> = rest.into_iter().collect();
        let mut sent = false;
        let response = conn.response(Instant::now() + SLACK, |conn| {
            if !std::mem::replace(&mut sent, true) {
                conn.send(&rest).unwrap();
            }
        });
        assert_eq!(
            (response.status, &response.json["name"]),
            (201, &json!("slow")),
            "{response:?}"
        );
    });
}

#[test]
fn many_slow_connections_are_all_cut_off() {
    run_with(Backend::Sqlite, SETTINGS, |app| {
        const N: usize = 50;
        let mut conns: Vec<(Conn, std::collections::VecDeque<u8>)> = (0..N)
            .map(|i| {
                let mut conn = Conn::open(app);
                let rest: std::collections::VecDeque<u8> = if i % 2 == 0 {
                    // Slow in the head.
                    head("GET", "/healthz", &[("X-Padding", "p".repeat(40))])
                        .into_iter()
                        .collect()
                } else {
                    // Slow in the body.
                    let headers = vec![admin_auth(), ("Content-Length", "100".into())];
                    conn.send(&head("POST", "/admin/users", &headers)).unwrap();
                    std::iter::repeat_n(b' ', 100).collect()
                };
                // Read without waiting: one thread sweeps all of them.
                conn.stream.set_nonblocking(true).expect("nonblocking");
                (conn, rest)
            })
            .collect();
        for (conn, rest) in &mut conns {
            if let Some(byte) = rest.pop_front() {
                let _ = conn.send(&[byte]);
            }
        }
        let deadline = Instant::now() + TIMEOUT + SLACK + SLACK;
        let mut done = [false; N];
        let mut next_step = Instant::now() + STEP;
        while done.iter().any(|d| !d) {
            assert!(
                Instant::now() < deadline,
                "{} of {N} connections not cut off",
                done.iter().filter(|d| !**d).count()
            );
            for (i, (conn, rest)) in conns.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                conn.pump()
                    .unwrap_or_else(|e| panic!("connection {i}: read failed ({e})"));
                if let Some(response) = conn.take_response(Instant::now()) {
                    response.assert_request_timeout(&format!("connection {i}"));
                    done[i] = true;
                } else if Instant::now() >= next_step {
                    if let Some(byte) = rest.pop_front() {
                        let _ = conn.send(&[byte]);
                    }
                }
            }
            if Instant::now() >= next_step {
                next_step += STEP;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for (conn, _) in &mut conns {
            conn.stream.set_nonblocking(false).expect("blocking");
            conn.assert_closed_by(Instant::now() + SLACK);
        }
        // Still serving.
        app.request("GET", "/healthz", &[], None).assert_status(200);
    });
}

#[test]
fn a_silent_connection_is_closed_without_a_reply() {
    run_with(Backend::Sqlite, SETTINGS, |app| {
        // Nothing sent: no request to answer, so no 408; closed after the idle limit (5 s),
        // not held open for ever.
        let opened = Instant::now();
        let mut conn = Conn::open(app);
        conn.assert_closed_by(opened + Duration::from_secs(5) + SLACK);
        assert!(
            opened.elapsed() + Duration::from_millis(100) >= TIMEOUT,
            "closed after only {:?}: idle time counts as request time",
            opened.elapsed()
        );
    });
}

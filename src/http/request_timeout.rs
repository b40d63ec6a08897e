//! The SPEC's whole-request timeout: a request must arrive whole, head and body, within
//! `server.request_timeout_secs` of its first byte (idle keep-alive time does not count), or
//! it gets 408 `request_timeout` in the error envelope and its connection is closed.
//!
//! actix-web's own head timer (`client_request_timeout`) cannot do this: it runs from the
//! connection's accept rather than the request's first byte, only for the first request of a
//! connection, and it answers 408 with an empty body. So the engine turns it off and wraps
//! every accepted connection in a [`TimedStream`], which sees when each request's first byte
//! arrives and, while its head is still incomplete at the deadline, writes the 408 itself. Once
//! the head is parsed the request enters the app ([`enter`], from a middleware) with that same
//! deadline, and `http::read_body` reads the body against it, so the 408 for a slow body is an
//! ordinary `ApiError` response, ranked before every other error because bodies are read first.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::ServiceRequest;
use actix_web::rt::net::TcpStream;
use actix_web::rt::time::{sleep_until, Instant, Sleep};
use actix_web::{HttpMessage, HttpRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// How long a connection may stay silent before its first request; between requests actix's
/// keep-alive, set to the same value in `app.rs`, does the same. Neither counts towards the
/// request timeout.
pub const IDLE: Duration = Duration::from_secs(5);

/// How long a 408 may take to go out and the client's remaining bytes to be drained before
/// the connection is dropped (actix's `client_disconnect_timeout`, set to the same value), so
/// that unread bytes do not turn the close into a reset that destroys the reply.
pub const LINGER: Duration = Duration::from_secs(1);

/// When the request being served must have arrived whole; in the request's extensions.
#[derive(Clone, Copy, Debug)]
struct Deadline(Instant);

/// The deadline of the request's body, if it came through [`enter`].
pub fn deadline(req: &HttpRequest) -> Option<Instant> {
    req.extensions().get::<Deadline>().map(|d| d.0)
}

/// A request whose head has been parsed enters the app: records its deadline (from its first
/// byte, as seen by its connection's [`TimedStream`]) and returns the connection's clock, to
/// be told when the request is answered.
pub fn enter(req: &ServiceRequest, timeout: Duration) -> Option<Rc<Clock>> {
    let clock = req.conn_data::<Rc<Clock>>().cloned();
    let at = match &clock {
        Some(clock) => clock.enter(),
        None => Instant::now() + timeout,
    };
    req.extensions_mut().insert(Deadline(at));
    clock
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Connected at `since`, nothing received yet.
    Connected { since: Instant },
    /// A request's first byte came at `since`; its head is not parsed yet.
    Head { since: Instant },
    /// The app has the request; a body is read against its deadline there.
    InApp,
    /// Answered: the next byte received starts the next request.
    Answered,
}

/// Where the requests of one connection stand, shared by its stream and its requests (one
/// worker thread serves both).
#[derive(Debug)]
pub struct Clock {
    phase: Cell<Phase>,
    timeout: Duration,
}

impl Clock {
    fn received(&self, now: Instant) {
        if let Phase::Connected { .. } | Phase::Answered = self.phase.get() {
            self.phase.set(Phase::Head { since: now });
        }
    }

    fn enter(&self) -> Instant {
        let since = match self.phase.get() {
            Phase::Head { since } => since,
            // Its bytes came with the previous request's (pipelined): timed from now.
            _ => Instant::now(),
        };
        self.phase.set(Phase::InApp);
        since + self.timeout
    }

    /// The app has answered the current request.
    pub fn answered(&self) {
        self.phase.set(Phase::Answered);
    }
}

enum State {
    Open,
    /// Writing the 408 (`reply[written..]` is left), then closing the write side.
    Replying {
        reply: Vec<u8>,
        written: usize,
    },
    /// The client's remaining bytes are read and dropped until it closes or `LINGER` passes.
    Lingering,
    /// Reads see the end of the stream; writes go nowhere.
    Closed,
}

/// A TCP connection that answers 408 itself when a request's head is not whole in time, and
/// closes a connection that stays silent for [`IDLE`] before its first request.
pub struct TimedStream {
    io: TcpStream,
    clock: Rc<Clock>,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    /// The dispatcher's last write did not go through: a reply now would cut into a response.
    write_pending: bool,
    state: State,
}

impl TimedStream {
    /// Wraps an accepted connection (in the worker's runtime, which owns the timer).
    pub fn new(io: TcpStream, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            io,
            clock: Rc::new(Clock {
                phase: Cell::new(Phase::Connected { since: now }),
                timeout,
            }),
            timer: Box::pin(sleep_until(now + IDLE)),
            timer_at: now + IDLE,
            write_pending: false,
            state: State::Open,
        }
    }

    /// The clock its requests carry (as connection data).
    pub fn clock(&self) -> Rc<Clock> {
        self.clock.clone()
    }

    fn set_timer(&mut self, at: Instant) {
        if self.timer_at != at {
            self.timer.as_mut().reset(at);
            self.timer_at = at;
        }
    }

    /// Whether the current phase's deadline has passed (registering a wake-up for it if not).
    fn poll_phase_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Phase> {
        let phase = self.clock.phase.get();
        let at = match phase {
            Phase::Connected { since } => since + IDLE,
            Phase::Head { since } => since + self.clock.timeout,
            Phase::InApp | Phase::Answered => return Poll::Pending,
        };
        self.set_timer(at);
        self.timer.as_mut().poll(cx).map(|()| phase)
    }

    fn expire(&mut self, phase: Phase) {
        self.set_timer(Instant::now() + LINGER);
        self.state = match phase {
            Phase::Head { .. } if !self.write_pending => {
                log::info!(
                    "a request's head did not arrive whole within {:?}: 408, closing",
                    self.clock.timeout
                );
                State::Replying {
                    reply: reply_408(),
                    written: 0,
                }
            }
            Phase::Head { .. } => {
                log::info!("a request's head timed out while a response was unsent: closing");
                State::Closed
            }
            _ => State::Closed,
        };
    }

    /// Drives a timed-out connection to `Closed`.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Open | State::Closed => return Poll::Ready(()),
                State::Replying { reply, written } => {
                    while *written < reply.len() {
                        match Pin::new(&mut self.io).poll_write(cx, &reply[*written..]) {
                            Poll::Ready(Ok(n)) if n > 0 => *written += n,
                            Poll::Ready(_) => {
                                self.state = State::Closed;
                                return Poll::Ready(());
                            }
                            Poll::Pending => return self.give_up_when_due(cx),
                        }
                    }
                    match Pin::new(&mut self.io).poll_shutdown(cx) {
                        Poll::Ready(_) => self.state = State::Lingering,
                        Poll::Pending => return self.give_up_when_due(cx),
                    }
                }
                State::Lingering => {
                    let mut scratch = [0u8; 1024];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.io).poll_read(cx, &mut sink) {
                        Poll::Ready(Ok(())) if !sink.filled().is_empty() => {}
                        Poll::Ready(_) => self.state = State::Closed,
                        Poll::Pending => return self.give_up_when_due(cx),
                    }
                }
            }
        }
    }

    fn give_up_when_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.as_mut().poll(cx).is_ready() {
            self.state = State::Closed;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The 408 in the SPEC's envelope, announcing the close.
fn reply_408() -> Vec<u8> {
    let body = ApiError::RequestTimeout.envelope().to_string();
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\ndate: {date}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Open = this.state {
            let before = buf.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {
                    this.clock.received(Instant::now());
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(other) => return Poll::Ready(other),
                Poll::Pending => match this.poll_phase_deadline(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(phase) => this.expire(phase),
                },
            }
        }
        // Timed out: the end of the stream, once the reply is out.
        this.poll_close(cx).map(|()| Ok(()))
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let State::Open = this.state {
            let written = Pin::new(&mut this.io).poll_write(cx, buf);
            this.write_pending = written.is_pending();
            written
        } else {
            // The 408 was the last word on this connection.
            Poll::Ready(Ok(buf.len()))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Open = this.state {
            Pin::new(&mut this.io).poll_flush(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Open = this.state {
            Pin::new(&mut this.io).poll_shutdown(cx)
        } else {
            this.poll_close(cx).map(|()| Ok(()))
        }
    }
}

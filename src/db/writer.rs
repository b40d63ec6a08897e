//! SQLite's one writer, handed out in this process. Writers queue here and each starts the
//! moment the one before it commits; waiting in SQLite's busy handler instead sleeps in steps
//! of up to 100 ms, which was the tail of timeout lateness on SQLite (BENCHMARKS.md). Effects
//! (background work nobody waits on) let the transitions and placements waiting with them go
//! first, for at most [`BACKGROUND_MAX_WAIT`]: a closing that is due does not queue behind a
//! refund, and the effects that wait meanwhile form one bigger batch. `busy_timeout` still
//! covers other processes.
//!
//! One gate for the process: an engine serves one database; tests holding several in one
//! process only queue their writes behind each other.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Longest a background writer stands aside for foreground ones.
pub const BACKGROUND_MAX_WAIT: Duration = Duration::from_millis(50);

/// Whose turn a writer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Someone waits on it: a transition, a placement, an admin's write.
    Foreground,
    /// The effect actors' work.
    Background,
}

struct State {
    busy: bool,
    foreground_waiting: usize,
    background_waiting: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    busy: false,
    foreground_waiting: 0,
    background_waiting: 0,
});
static CHANGED: Condvar = Condvar::new();

/// The writer's turn, held until dropped.
pub struct Writer(());

fn state() -> MutexGuard<'static, State> {
    // A poisoned lock only means a writer panicked; the state itself is kept consistent by
    // `Writer::drop`.
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for the writer's turn.
pub fn enter(turn: Turn) -> Writer {
    enter_within(turn, BACKGROUND_MAX_WAIT)
}

fn enter_within(turn: Turn, background_max_wait: Duration) -> Writer {
    let mut s = state();
    match turn {
        Turn::Foreground => {
            s.foreground_waiting += 1;
            while s.busy {
                s = CHANGED.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            s.foreground_waiting -= 1;
        }
        Turn::Background => {
            s.background_waiting += 1;
            let until = Instant::now() + background_max_wait;
            loop {
                let now = Instant::now();
                if !s.busy && (s.foreground_waiting == 0 || now >= until) {
                    break;
                }
                s = if now < until {
                    CHANGED
                        .wait_timeout(s, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                } else {
                    CHANGED.wait(s).unwrap_or_else(PoisonError::into_inner)
                };
            }
            s.background_waiting -= 1;
        }
    }
    s.busy = true;
    Writer(())
}

impl Drop for Writer {
    fn drop(&mut self) {
        state().busy = false;
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn wait_for(what: &str, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&state()) {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::yield_now();
        }
    }

    /// One writer at a time, and a foreground writer that arrives while a background one
    /// waits goes first.
    #[test]
    fn one_writer_at_a_time_foreground_first() {
        let inside = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = enter(Turn::Foreground);
        let spawn = |turn: Turn, name: &'static str| {
            let (inside, order) = (inside.clone(), order.clone());
            std::thread::spawn(move || {
                let _w = enter_within(turn, Duration::from_secs(30));
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two writers at once"
                );
                order.lock().unwrap().push(name);
                std::thread::sleep(Duration::from_millis(2));
                inside.fetch_sub(1, Ordering::SeqCst);
            })
        };
        let background = spawn(Turn::Background, "background");
        wait_for("the background writer queues", |s| s.background_waiting > 0);
        let foreground = spawn(Turn::Foreground, "foreground");
        wait_for("the foreground writer queues", |s| s.foreground_waiting > 0);
        drop(first);
        background.join().unwrap();
        foreground.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["foreground", "background"]);
    }
}

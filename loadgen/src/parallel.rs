//! Scoped worker threads: each HTTP client of the load generator is one OS thread with its own
//! keep-alive connection, as independent clients would be.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Runs `f(job)` for `jobs` jobs on `threads` threads (a shared counter hands out the next
/// job) and returns the results in job order.
pub fn map<T: Send, F: Fn(usize) -> T + Sync>(threads: usize, jobs: usize, f: F) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= jobs {
                            return out;
                        }
                        out.push((i, f(i)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    let mut all: Vec<(usize, T)> = parts.drain(..).flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// Runs `f(thread)` once on each of `threads` threads and returns the results by thread.
pub fn each<T: Send, F: Fn(usize) -> T + Sync>(threads: usize, f: F) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || f(t))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    })
}

/// Jobs that worker threads take at their due time, earliest first (the mixed scenario's
/// payment provider: callbacks some time after each placement).
pub struct DelayQueue<T> {
    state: Mutex<Queued<T>>,
    changed: Condvar,
}

struct Queued<T> {
    /// Due times and push numbers, earliest first (`Reverse`: `BinaryHeap` is a max-heap).
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The jobs by push number.
    jobs: HashMap<u64, T>,
    pushed: u64,
    closed: bool,
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(Queued {
                due: BinaryHeap::new(),
                jobs: HashMap::new(),
                pushed: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }
}

impl<T> DelayQueue<T> {
    fn lock(&self) -> MutexGuard<'_, Queued<T>> {
        // A worker that panicked fails the run at `join`; the heap itself stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, due: Instant, job: T) {
        let mut q = self.lock();
        let seq = q.pushed;
        q.pushed += 1;
        q.due.push(Reverse((due, seq)));
        q.jobs.insert(seq, job);
        drop(q);
        self.changed.notify_one();
    }

    /// No more pushes: [`pop`](Self::pop) returns `None` once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Blocks until the earliest job is due and returns it with its due time; `None` when the
    /// queue is closed and empty.
    pub fn pop(&self) -> Option<(Instant, T)> {
        let mut q = self.lock();
        loop {
            let now = Instant::now();
            match q.due.peek().copied() {
                Some(Reverse((due, seq))) if due <= now => {
                    q.due.pop();
                    let job = q.jobs.remove(&seq)?;
                    // Another job may be due too: let a sleeping worker look.
                    if !q.due.is_empty() {
                        self.changed.notify_one();
                    }
                    return Some((due, job));
                }
                Some(Reverse((due, _))) => {
                    let wait = due - now;
                    q = self
                        .changed
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None if q.closed => return None,
                None => q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_keeps_job_order() {
        let out = super::map(4, 100, |i| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(super::each(3, |t| t), vec![0, 1, 2]);
    }

    #[test]
    fn delay_queue_hands_out_jobs_by_due_time_then_ends() {
        use std::time::{Duration, Instant};
        let q = super::DelayQueue::default();
        let t0 = Instant::now();
        q.push(t0 + Duration::from_millis(30), "late");
        q.push(t0 + Duration::from_millis(10), "early");
        q.push(t0 + Duration::from_millis(10), "early, pushed second");
        q.close();
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            got.iter().map(|(_, j)| *j).collect::<Vec<_>>(),
            ["early", "early, pushed second", "late"]
        );
        assert!(got.iter().all(|(due, _)| Instant::now() >= *due));
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}

//! Scoped worker threads: each HTTP client of the load generator is one OS thread with its own
//! keep-alive connection, as independent clients would be.

use std::sync::atomic::{AtomicUsize, Ordering};

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

#[cfg(test)]
mod tests {
    #[test]
    fn map_keeps_job_order() {
        let out = super::map(4, 100, |i| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(super::each(3, |t| t), vec![0, 1, 2]);
    }
}

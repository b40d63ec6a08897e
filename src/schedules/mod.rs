//! `[[schedules]]` (SPEC "Schedules and webhooks"; the original's Celery beat, done right):
//! each process runs one scheduler thread that wakes at the next due time of any of its
//! schedules, claims what is due in the database ([`crate::db::schedules::claim`]: exactly one
//! process gets each due time), and runs each claimed job on a thread of its own while renewing
//! the run's lease. A process that dies mid-run lets its lease lapse; another process (or this
//! one, restarted) takes the run over. Due times missed by more than the misfire threshold
//! (three times `cluster.heartbeat_ttl_secs`: every process was down) collapse into one run for
//! the latest of them; a run that ends wakes the scheduler, so due times that waited for it
//! (runs of a schedule never overlap) follow at once.

pub mod jobs;

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};

use crate::config::{Schedule, Settings};
use crate::db::schedules::{self, Claimed};
use crate::db::DbPool;
use crate::domain::time;
use crate::metrics::Metrics;

/// How a scheduler's timings relate to `cluster.heartbeat_ttl_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    /// How long a claimed run stays this process's without a renewal.
    pub lease: TimeDelta,
    /// How late a due time may be claimed and still run for itself; later ones collapse.
    pub misfire: TimeDelta,
}

impl Leases {
    pub fn from_heartbeat_ttl(ttl_secs: u64) -> Leases {
        let lease = TimeDelta::seconds(i64::try_from(ttl_secs.max(1)).unwrap_or(3600));
        Leases {
            lease,
            misfire: lease * 3,
        }
    }

    /// How often the leases of runs under way are renewed (and lapsed ones looked for).
    fn renew_every(&self) -> Duration {
        (self.lease / 3)
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(100))
    }
}

/// The ids of the runs under way in this process.
fn ids_of(running: &Mutex<HashSet<i64>>) -> Vec<i64> {
    running
        .lock()
        .expect("not poisoned")
        .iter()
        .copied()
        .collect()
}

/// What wakes the scheduler thread before its next due time.
enum Wake {
    /// A run ended.
    RunEnded,
    Stop,
}

/// Stops the scheduler thread when dropped (runs under way finish on their own threads).
pub struct Handle {
    wake: Sender<Wake>,
    running: Arc<Mutex<HashSet<i64>>>,
    engine: EngineLink,
}

/// The engine a job reaches (`reconcile_payments`: its providers and its after-commit step),
/// bound once the engine exists; weak, since the engine owns the scheduler's handle.
pub type EngineLink = Arc<std::sync::OnceLock<std::sync::Weak<crate::actors::Core>>>;

impl Handle {
    /// Lets jobs reach the engine (called once, when the engine is built).
    pub fn bind(&self, core: &Arc<crate::actors::Core>) {
        let _ = self.engine.set(Arc::downgrade(core));
    }

    /// Stops claiming, then waits up to `wait` for the runs under way here to finish and be
    /// recorded (a graceful stop); a run still going after that is taken over by another
    /// process once its lease passes.
    pub fn stop_and_drain(&self, wait: Duration) {
        let _ = self.wake.send(Wake::Stop);
        let until = std::time::Instant::now() + wait;
        loop {
            let left: Vec<i64> = ids_of(&self.running);
            if left.is_empty() {
                return;
            }
            if std::time::Instant::now() >= until {
                log::warn!("schedules: stopping with runs {left:?} under way; another process takes them over");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
    }
}

/// Starts the scheduler thread; `None` without `[[schedules]]`.
pub fn start(
    pool: DbPool,
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> std::io::Result<Option<Handle>> {
    if settings.schedules.is_empty() {
        return Ok(None);
    }
    metrics.preset_schedules(settings.schedules.iter().map(|s| s.name.as_str()));
    let (wake, rx) = mpsc::channel();
    let running = Arc::new(Mutex::new(HashSet::new()));
    let engine = EngineLink::default();
    let scheduler = Scheduler {
        engine: engine.clone(),
        wake: wake.clone(),
        pool,
        schedules: settings.schedules.clone(),
        node_id: settings.cluster.node_id.clone(),
        leases: Leases::from_heartbeat_ttl(settings.cluster.heartbeat_ttl_secs),
        metrics,
        running: running.clone(),
    };
    log::info!(
        "schedules: {}",
        settings
            .schedules
            .iter()
            .map(|s| format!("{} ({}, {})", s.name, s.job.name(), s.timing))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduler.run(rx))?;
    Ok(Some(Handle {
        wake,
        running,
        engine,
    }))
}

struct Scheduler {
    engine: EngineLink,
    /// Given to each job thread, to say its run ended.
    wake: Sender<Wake>,
    pool: DbPool,
    schedules: Vec<Schedule>,
    node_id: String,
    leases: Leases,
    metrics: Arc<Metrics>,
    /// The runs under way on this process's job threads.
    running: Arc<Mutex<HashSet<i64>>>,
}

impl Scheduler {
    fn run(self, rx: Receiver<Wake>) {
        let mut registered = false;
        loop {
            let now = time::now();
            if !registered {
                registered = self.register(now);
            }
            if registered {
                self.renew(now);
                for schedule in &self.schedules {
                    self.claim_due(schedule, now);
                }
            }
            let wake = self.next_wake(time::now_precise(), registered);
            match rx.recv_timeout(wake) {
                Err(RecvTimeoutError::Timeout) | Ok(Wake::RunEnded) => {}
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn register(&self, now: NaiveDateTime) -> bool {
        let result = self
            .pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                schedules::register(&mut conn, &self.schedules, now).map_err(|e| e.to_string())
            });
        match result {
            Ok(planned) => {
                for name in planned {
                    log::info!("schedule {name}: planned from now (new or its timing changed)");
                }
                true
            }
            Err(err) => {
                log::warn!("schedules: cannot record the schedules yet: {err}");
                false
            }
        }
    }

    fn renew(&self, now: NaiveDateTime) {
        let ids: Vec<i64> = ids_of(&self.running);
        if ids.is_empty() {
            return;
        }
        let result = self
            .pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                schedules::renew(&mut conn, &ids, &self.node_id, now + self.leases.lease)
                    .map_err(|e| e.to_string())
            });
        if let Err(err) = result {
            log::warn!("schedules: cannot renew the leases of runs {ids:?}: {err}");
        }
    }

    /// Claims and starts what of `schedule` is due (at most one run at a time).
    fn claim_due(&self, schedule: &Schedule, now: NaiveDateTime) {
        let claimed = self
            .pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                schedules::claim(
                    &mut conn,
                    schedule,
                    &self.node_id,
                    now,
                    now + self.leases.lease,
                    self.leases.misfire,
                )
                .map_err(|e| e.to_string())
            });
        match claimed {
            Ok(Some(run)) => self.start_run(schedule.clone(), run),
            Ok(None) => {}
            Err(err) => log::warn!("schedule {}: cannot claim: {err}", schedule.name),
        }
    }

    fn start_run(&self, schedule: Schedule, run: Claimed) {
        if run.attempts > 1 {
            log::warn!(
                "schedule {}: taking over the run due {} (attempt {}) from a process that \
                 stopped running it",
                schedule.name,
                time::format(&run.fire_at),
                run.attempts
            );
        } else {
            log::info!(
                "schedule {}: running {} due {}",
                schedule.name,
                schedule.job.name(),
                time::format(&run.fire_at)
            );
        }
        self.running.lock().expect("not poisoned").insert(run.id);
        let job = RunJob {
            engine: self.engine.clone(),
            wake: self.wake.clone(),
            pool: self.pool.clone(),
            node_id: self.node_id.clone(),
            metrics: self.metrics.clone(),
            running: self.running.clone(),
            lease: self.leases.lease,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("schedule-{}", schedule.name))
            .spawn({
                let run = run.clone();
                move || job.run(&schedule, &run)
            });
        if let Err(err) = spawned {
            // The lease lapses and the run is taken over.
            log::error!("schedules: cannot start a job thread: {err}");
            self.running.lock().expect("not poisoned").remove(&run.id);
        }
    }

    /// Until the next due time of any schedule, or the next lease renewal when runs are under
    /// way (also the longest sleep, so lapsed runs of others are found).
    fn next_wake(&self, now: NaiveDateTime, registered: bool) -> Duration {
        let renew = self.leases.renew_every();
        if !registered {
            return renew;
        }
        let next_due = self
            .schedules
            .iter()
            .filter_map(|s| s.timing.first_after(now))
            .min();
        // A millisecond late, so the due time has passed on the millisecond clock the claim
        // reads.
        next_due
            .and_then(|at| (at - now).to_std().ok())
            .map_or(renew, |until| (until + Duration::from_millis(1)).min(renew))
    }
}

/// What a job thread needs.
struct RunJob {
    engine: EngineLink,
    wake: Sender<Wake>,
    pool: DbPool,
    node_id: String,
    metrics: Arc<Metrics>,
    running: Arc<Mutex<HashSet<i64>>>,
    lease: TimeDelta,
}

impl RunJob {
    fn run(self, schedule: &Schedule, run: &Claimed) {
        let fire_at = time::format(&run.fire_at);
        let started = std::time::Instant::now();
        let outcome = jobs::run(&self.pool, &self.engine, schedule, run.fire_at);
        let error = outcome.as_ref().err().map(String::as_str);
        // Recorded with retries while the lease lasts; after that the run is another's.
        let deadline = std::time::Instant::now() + self.lease.to_std().unwrap_or_default();
        let mut wait = Duration::from_millis(100);
        let recorded = loop {
            let result = self
                .pool
                .get()
                .map_err(|e| e.to_string())
                .and_then(|mut conn| {
                    schedules::finish(&mut conn, run.id, &self.node_id, error, time::now())
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(mine) => break Ok(mine),
                Err(err) if std::time::Instant::now() + wait > deadline => break Err(err),
                Err(_) => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        };
        self.running.lock().expect("not poisoned").remove(&run.id);
        let _ = self.wake.send(Wake::RunEnded);
        self.metrics.schedule_run(&schedule.name, outcome.is_ok());
        let took = started.elapsed();
        let name = &schedule.name;
        match (&outcome, recorded) {
            (_, Err(err)) => log::error!(
                "schedule {name}: the run due {fire_at} ended but cannot be recorded, so it \
                 runs again: {err}"
            ),
            (_, Ok(false)) => log::warn!(
                "schedule {name}: the run due {fire_at} ended after its lease passed; another \
                 process took it over"
            ),
            (Ok(summary), Ok(true)) => {
                log::info!("schedule {name}: the run due {fire_at} is done in {took:?}: {summary}")
            }
            (Err(err), Ok(true)) => {
                log::error!("schedule {name}: the run due {fire_at} failed after {took:?}: {err}")
            }
        }
    }
}

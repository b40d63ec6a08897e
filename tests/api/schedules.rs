//! Schedules (SPEC "Schedules and webhooks"): `[[schedules]]` with cron, `every_secs` and `at`,
//! and the `purge` and `webhook` jobs.
//!
//! - With an injected clock, on a real database: the claim a scheduler makes at a given
//!   instant (`order_engine::db::schedules::claim`, the function every process's scheduler
//!   calls): cron in Shanghai across a day boundary, missed due times collapsing into one,
//!   `at` once (also after a restart), a dead process's run taken over, racing claimers.
//! - Real processes: three engines on one PostgreSQL database run each due second of an
//!   every-second webhook schedule exactly once over a minute while one of them is SIGKILLed;
//!   an engine stopped longer than the misfire threshold runs one run for the missed ones.
//! - Over HTTP: `GET /admin/schedules`, a failing job visible there and in `/metrics`, bad
//!   input refused.
//! - `purge` deletes what nothing reads and keeps the rest.
//!
//! Each schedule's webhook is checked by the webhooks suite's own Standard Webhooks verifier.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use order_engine::config::{Schedule, Settings};
use order_engine::db::schedules::{self as db_schedules, Claimed, Run};
use order_engine::db::DbConnection;
use order_engine::domain::time;
use serde_json::Value;

use crate::helpers::*;
use crate::on_both_backends_of;
use crate::process::EngineProcess;
use crate::webhooks::{verify, Received, Receiver, Script, SECRET};

fn at(text: &str) -> NaiveDateTime {
    time::parse(text).expect("a test instant")
}

/// The schedules a settings file's text configures.
fn configured(file: &str) -> Vec<Schedule> {
    Settings::load_from(Some(("test.toml", file)), std::iter::empty())
        .expect("valid test settings")
        .schedules
}

/// A fresh, migrated database and a connection to it.
fn database(backend: Backend) -> Option<(TestDatabase, DbConnection)> {
    let db = TestDatabase::create(backend)?;
    let mut conn = db.connect();
    order_engine::db::migrate(&mut conn).expect("migrate the test database");
    Some((db, conn))
}

/// What a scheduler with `node` would claim of `schedule` at `now` (lease 5 s, misfire 15 s:
/// the defaults).
fn claim(
    conn: &mut DbConnection,
    schedule: &Schedule,
    node: &str,
    now: NaiveDateTime,
) -> Option<Claimed> {
    db_schedules::claim(
        conn,
        schedule,
        node,
        now,
        now + TimeDelta::seconds(5),
        TimeDelta::seconds(15),
    )
    .expect("claim")
}

fn finish(conn: &mut DbConnection, run: &Claimed, node: &str, now: NaiveDateTime) -> bool {
    db_schedules::finish(conn, run.id, node, None, now).expect("finish")
}

/// Midnight in Shanghai, 16:00 UTC of the day before, with a clock set by the test.
fn cron_in_a_zone_east_of_utc_runs_at_local_midnight(backend: Backend) {
    let Some((_db, mut conn)) = database(backend) else {
        return;
    };
    let [daily] = &configured(
        "[[schedules]]\nname = \"nightly\"\njob = \"purge\"\ncron = \"0 0 * * *\"\n\
         timezone = \"Asia/Shanghai\"\n",
    )[..] else {
        panic!("one schedule")
    };
    let started = at("2026-12-03T15:00:00Z");
    assert_eq!(
        db_schedules::register(&mut conn, std::slice::from_ref(daily), started).unwrap(),
        vec!["nightly".to_string()]
    );
    assert_eq!(
        db_schedules::state(&mut conn, "nightly").unwrap().0,
        Some(at("2026-12-03T16:00:00Z"))
    );
    assert_eq!(
        claim(&mut conn, daily, "a", at("2026-12-03T15:59:59.999Z")),
        None
    );
    let run = claim(&mut conn, daily, "a", at("2026-12-03T16:00:00Z")).expect("due at 16:00Z");
    assert_eq!((run.fire_at, run.attempts), (at("2026-12-03T16:00:00Z"), 1));
    // Under way: nobody else gets it, nor a second run of it.
    assert_eq!(
        claim(&mut conn, daily, "b", at("2026-12-03T16:00:01Z")),
        None
    );
    assert!(finish(&mut conn, &run, "a", at("2026-12-03T16:00:02Z")));
    assert_eq!(
        claim(&mut conn, daily, "b", at("2026-12-03T16:00:03Z")),
        None
    );
    assert_eq!(
        db_schedules::state(&mut conn, "nightly").unwrap().0,
        Some(at("2026-12-04T16:00:00Z"))
    );
    let next = claim(&mut conn, daily, "b", at("2026-12-04T16:00:00.250Z")).expect("next day");
    assert_eq!(next.fire_at, at("2026-12-04T16:00:00Z"));
    // A process restarting with the same settings keeps the plan.
    assert!(db_schedules::register(
        &mut conn,
        std::slice::from_ref(daily),
        at("2026-12-04T17:00:00Z")
    )
    .unwrap()
    .is_empty());
}
on_both_backends_of!(cron_in_a_zone_east_of_utc_runs_at_local_midnight);

/// Due times missed by more than the misfire threshold (every process down) collapse into one
/// run for the latest; a late one within it still runs for itself; `at` runs once, also after
/// a restart; a changed timing is re-planned.
fn missed_runs_collapse_and_at_runs_once(backend: Backend) {
    let Some((_db, mut conn)) = database(backend) else {
        return;
    };
    let all = configured(
        "[[schedules]]\nname = \"tick\"\njob = \"purge\"\nevery_secs = 10\n\n\
         [[schedules]]\nname = \"once\"\njob = \"purge\"\nat = \"2026-12-03T10:00:30+08:00\"\n",
    );
    let [tick, once] = &all[..] else {
        panic!("two schedules")
    };
    let t0 = at("2026-12-03T02:00:05Z");
    db_schedules::register(&mut conn, &all, t0).unwrap();
    // 02:00:10 is due; claimed 4 s late, within the misfire threshold: it runs for itself.
    let late = claim(&mut conn, tick, "a", at("2026-12-03T02:00:14Z")).expect("due");
    assert_eq!(late.fire_at, at("2026-12-03T02:00:10Z"));
    assert!(finish(&mut conn, &late, "a", at("2026-12-03T02:00:14.5Z")));
    // Then everything is down for an hour: one run, for the latest due time.
    let back = at("2026-12-03T03:00:07Z");
    let collapsed = claim(&mut conn, tick, "a", back).expect("one run for the missed ones");
    assert_eq!(collapsed.fire_at, at("2026-12-03T03:00:00Z"));
    assert!(finish(&mut conn, &collapsed, "a", back));
    assert_eq!(
        claim(&mut conn, tick, "a", at("2026-12-03T03:00:09Z")),
        None
    );
    let runs: Vec<NaiveDateTime> = db_schedules::runs_of(&mut conn, "tick")
        .unwrap()
        .iter()
        .map(|r| r.fire_at)
        .collect();
    assert_eq!(
        runs,
        vec![at("2026-12-03T02:00:10Z"), at("2026-12-03T03:00:00Z")]
    );

    // `at` 10:00:30 in UTC+8 is 02:00:30Z: due once, even claimed long after.
    assert_eq!(
        claim(&mut conn, once, "a", at("2026-12-03T02:00:29.999Z")),
        None
    );
    let run = claim(&mut conn, once, "b", back).expect("due once");
    assert_eq!(run.fire_at, at("2026-12-03T02:00:30Z"));
    assert!(finish(&mut conn, &run, "b", back));
    assert_eq!(
        claim(&mut conn, once, "a", at("2027-01-01T00:00:00Z")),
        None
    );
    db_schedules::register(&mut conn, &all, at("2027-01-01T00:00:00Z")).unwrap();
    assert_eq!(
        claim(&mut conn, once, "a", at("2027-01-01T00:00:01Z")),
        None
    );
    assert_eq!(db_schedules::state(&mut conn, "once").unwrap().0, None);
    assert_eq!(db_schedules::runs_of(&mut conn, "once").unwrap().len(), 1);

    // Another timing under the same name is planned afresh from the restart.
    let [tick_hourly] =
        &configured("[[schedules]]\nname = \"tick\"\njob = \"purge\"\nevery_secs = 3600\n")[..]
    else {
        panic!("one schedule")
    };
    let restart = at("2027-01-01T00:10:00Z");
    assert_eq!(
        db_schedules::register(&mut conn, std::slice::from_ref(tick_hourly), restart).unwrap(),
        vec!["tick".to_string()]
    );
    // The old timing is another process's config now: it claims nothing.
    assert_eq!(
        claim(&mut conn, tick, "a", at("2027-01-01T00:10:20Z")),
        None
    );
    assert_eq!(
        claim(&mut conn, tick_hourly, "a", at("2027-01-01T01:00:00Z")).map(|r| r.fire_at),
        Some(at("2027-01-01T01:00:00Z"))
    );
}
on_both_backends_of!(missed_runs_collapse_and_at_runs_once);

/// A run whose process stops renewing its lease is taken over, once, by the next claim after
/// the lease; the dead process can no longer record it.
fn a_dead_processs_run_is_taken_over(backend: Backend) {
    let Some((_db, mut conn)) = database(backend) else {
        return;
    };
    let all = configured("[[schedules]]\nname = \"tick\"\njob = \"purge\"\nevery_secs = 1\n");
    let tick = &all[0];
    let t0 = at("2026-12-03T02:00:00.500Z");
    db_schedules::register(&mut conn, &all, t0).unwrap();
    let first = claim(&mut conn, tick, "dead", at("2026-12-03T02:00:01Z")).expect("due");
    // Renewed once, then its process dies: lease until 02:00:07.
    assert_eq!(
        db_schedules::renew(&mut conn, &[first.id], "dead", at("2026-12-03T02:00:07Z")).unwrap(),
        1
    );
    assert_eq!(
        claim(&mut conn, tick, "b", at("2026-12-03T02:00:06.999Z")),
        None
    );
    let taken = claim(&mut conn, tick, "b", at("2026-12-03T02:00:07Z")).expect("taken over");
    assert_eq!(
        (taken.id, taken.fire_at, taken.attempts),
        (first.id, first.fire_at, 2)
    );
    assert_eq!(
        claim(&mut conn, tick, "c", at("2026-12-03T02:00:08Z")),
        None
    );
    assert!(!finish(
        &mut conn,
        &first,
        "dead",
        at("2026-12-03T02:00:08Z")
    ));
    assert!(finish(&mut conn, &taken, "b", at("2026-12-03T02:00:08Z")));
    // Then the due times after it, each for itself (within the misfire threshold).
    let next = claim(&mut conn, tick, "c", at("2026-12-03T02:00:08.001Z")).expect("next");
    assert_eq!(next.fire_at, at("2026-12-03T02:00:02Z"));
    let runs = db_schedules::runs_of(&mut conn, "tick").unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].node_id.as_str()),
        ("ok", "b")
    );
}
on_both_backends_of!(a_dead_processs_run_is_taken_over);

/// Claimers racing on one database at the same instant: one gets each due time.
fn racing_claimers_get_each_due_time_once(backend: Backend) {
    let Some((db, mut conn)) = database(backend) else {
        return;
    };
    let all = configured("[[schedules]]\nname = \"tick\"\njob = \"purge\"\nevery_secs = 1\n");
    db_schedules::register(&mut conn, &all, at("2026-12-03T02:00:00.500Z")).unwrap();
    let mut claimed: Vec<NaiveDateTime> = Vec::new();
    for second in 1..=20 {
        let now = at("2026-12-03T02:00:00Z") + TimeDelta::seconds(second);
        let wins = in_parallel(4, |i| {
            let mut conn = db.connect();
            claim(&mut conn, &all[0], &format!("node-{i}"), now).map(|run| (i, run))
        });
        let wins: Vec<_> = wins.into_iter().flatten().collect();
        assert_eq!(wins.len(), 1, "at {now}: {wins:?}");
        let (node, run) = &wins[0];
        assert!(finish(&mut conn, run, &format!("node-{node}"), now));
        claimed.push(run.fire_at);
    }
    let expected: Vec<NaiveDateTime> = (1..=20)
        .map(|s| at("2026-12-03T02:00:00Z") + TimeDelta::seconds(s))
        .collect();
    assert_eq!(claimed, expected);
}
on_both_backends_of!(racing_claimers_get_each_due_time_once);

/// A schedule file for `every_secs = 1` webhooks to `url`.
pub(crate) fn every_second_webhook(name: &str, url: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\njob = \"webhook\"\nevery_secs = 1\nurl = \"{url}\"\n\
         secret = \"{SECRET}\"\n"
    )
}

/// A schedule file for one webhook to `url` at `at`.
pub(crate) fn webhook_at(name: &str, at: NaiveDateTime, url: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\njob = \"webhook\"\nat = \"{}\"\nurl = \"{url}\"\n\
         secret = \"{SECRET}\"\n",
        time::format(&at)
    )
}

/// Checks a schedule's webhook as a receiver must: signed per Standard Webhooks, `webhook-id`
/// `{name}:{fire_at}`, body `{"schedule","fire_at"}`. Returns its fire_at.
#[track_caller]
fn assert_schedule_webhook(r: &Received, name: &str) -> NaiveDateTime {
    assert!(
        verify(
            SECRET,
            r.id(),
            r.header("webhook-timestamp"),
            &r.body,
            r.header("webhook-signature")
        ),
        "bad signature: {r:?}"
    );
    assert_eq!(r.header("content-type"), "application/json", "{r:?}");
    assert_keys(&r.json, &["fire_at", "schedule"]);
    assert_eq!(r.json["schedule"], name, "{r:?}");
    let fire_at = r.json["fire_at"].as_str().expect("fire_at");
    assert_eq!(r.id(), format!("{name}:{fire_at}"), "{r:?}");
    at(fire_at)
}

/// The seconds from the first to the last run, each exactly once, none missing.
#[track_caller]
fn assert_every_second_once(runs: &[Run]) {
    let fire: Vec<NaiveDateTime> = runs.iter().map(|r| r.fire_at).collect();
    let gaps: Vec<String> = fire
        .windows(2)
        .filter(|w| w[1] - w[0] != TimeDelta::seconds(1))
        .map(|w| format!("{} -> {}", time::format(&w[0]), time::format(&w[1])))
        .collect();
    assert!(gaps.is_empty(), "due seconds skipped or doubled: {gaps:?}");
}

/// Three engine processes on one PostgreSQL database, one SIGKILLed halfway: over a minute,
/// every due second of an every-second schedule is run exactly once (a run the killed process
/// held is taken over, with the same webhook-id), and each is delivered signed.
#[test]
fn three_processes_run_each_due_second_once_through_a_kill() {
    let Some(server) = postgres_server_url() else {
        return;
    };
    three_processes_through_a_kill(TestDatabase::create_on(&server));
}

/// The same on one MySQL / MariaDB database.
#[cfg(feature = "mysql")]
#[test]
fn mysql_three_processes_run_each_due_second_once() {
    let Some(server) = mysql_server_url() else {
        return;
    };
    three_processes_through_a_kill(TestDatabase::create_on_mysql(&server));
}

fn three_processes_through_a_kill(db: TestDatabase) {
    let receiver = Receiver::start(Script::Answer(204));
    let file = every_second_webhook("tick", &receiver.url());
    let mut engines: Vec<EngineProcess> = ["n0", "n1", "n2"]
        .iter()
        .map(|node| {
            let settings = [
                ("cluster.heartbeat_ttl_secs", "2"),
                ("cluster.node_id", *node),
            ];
            EngineProcess::start_with_file(&db, &settings, Some(&file))
        })
        .collect();
    let started = std::time::Instant::now();
    let mut conn = db.connect();
    wait_for("30 s of runs", Duration::from_secs(60), || {
        let runs = db_schedules::runs_of(&mut conn, "tick").unwrap();
        if started.elapsed() >= Duration::from_secs(30) && runs.len() >= 20 {
            Ok(())
        } else {
            Err(format!("{} runs", runs.len()))
        }
    });
    engines[1].kill();
    wait_for("a minute in all", Duration::from_secs(90), || {
        if started.elapsed() >= Duration::from_secs(60) {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });
    // The survivors stop; whatever they were running is left as it was.
    engines[0].terminate();
    engines[2].terminate();

    let runs = db_schedules::runs_of(&mut conn, "tick").unwrap();
    assert!(runs.len() >= 50, "{} runs in a minute", runs.len());
    assert_every_second_once(&runs);
    let ok = runs.iter().filter(|r| r.status.as_str() == "ok").count();
    assert!(
        ok + 2 >= runs.len(),
        "runs not ok: {:?}",
        runs.iter()
            .filter(|r| r.status.as_str() != "ok")
            .collect::<Vec<_>>()
    );
    let seen = receiver.requests();
    let mut per_id: BTreeMap<String, i32> = BTreeMap::new();
    for r in &seen {
        assert_schedule_webhook(r, "tick");
        *per_id.entry(r.id().to_string()).or_default() += 1;
    }
    for run in runs.iter().filter(|r| r.status.as_str() == "ok") {
        let id = format!("tick:{}", time::format(&run.fire_at));
        let count = per_id.get(&id).copied().unwrap_or(0);
        // At least once; again only when the run was taken over (its attempts).
        assert!(
            (1..=run.attempts).contains(&count),
            "{id} delivered {count} times in {} attempts by {}",
            run.attempts,
            run.node_id
        );
    }
    // The killed process ran none after it was killed.
    let killed_at = runs
        .iter()
        .filter(|r| r.node_id == "n1")
        .map(|r| r.started_at)
        .max();
    assert!(killed_at.is_some(), "n1 ran nothing before it was killed");
}

/// An engine stopped for longer than the misfire threshold runs one run, for the latest due
/// time it missed, then goes on every second.
fn a_restart_after_an_outage_runs_one_run_for_the_missed_ones(backend: Backend) {
    let Some(db) = TestDatabase::create(backend) else {
        return;
    };
    let receiver = Receiver::start(Script::Answer(200));
    let file = every_second_webhook("tick", &receiver.url());
    // Lease 1 s, misfire threshold 2 s.
    let settings = [("cluster.heartbeat_ttl_secs", "1")];
    let mut engine = EngineProcess::start_with_file(&db, &settings, Some(&file));
    let mut conn = db.connect();
    let count = |conn: &mut DbConnection| db_schedules::runs_of(conn, "tick").unwrap().len();
    wait_for("three runs", Duration::from_secs(30), || {
        match count(&mut conn) {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} runs")),
        }
    });
    engine.terminate();
    let stopped = time::now();
    let before = db_schedules::runs_of(&mut conn, "tick").unwrap();
    // A graceful stop lets the run under way finish and be recorded.
    assert!(
        before.iter().all(|r| r.status.as_str() == "ok"),
        "runs left unfinished by a SIGTERM: {before:?}"
    );
    // Down for more than the threshold: wait on the clock, not for the engine.
    wait_for("six seconds down", Duration::from_secs(20), || {
        if time::now() - stopped >= TimeDelta::seconds(6) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    let restarted = time::now();
    let _engine = EngineProcess::start_with_file(&db, &settings, Some(&file));
    wait_for(
        "runs after the restart",
        Duration::from_secs(30),
        || match count(&mut conn) - before.len() {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} runs since")),
        },
    );
    let runs = db_schedules::runs_of(&mut conn, "tick").unwrap();
    let after = &runs[before.len()..];
    let first = &after[0];
    // One run for the missed seconds: for the latest one due when it was claimed.
    assert!(
        first.fire_at >= restarted - TimeDelta::seconds(1)
            && first.started_at - first.fire_at < TimeDelta::seconds(1),
        "the first run after the restart is due {} and started {} (restarted {})",
        time::format(&first.fire_at),
        time::format(&first.started_at),
        time::format(&restarted)
    );
    assert_every_second_once(after);
    assert!(
        !runs
            .iter()
            .any(|r| r.fire_at > stopped + TimeDelta::seconds(1) && r.fire_at < first.fire_at),
        "a missed second ran for itself"
    );
}
on_both_backends_of!(a_restart_after_an_outage_runs_one_run_for_the_missed_ones);

const SCHEDULE_KEYS: [&str; 5] = ["job", "last_run", "name", "next_run_at", "schedule"];
const RUN_KEYS: [&str; 6] = [
    "error",
    "finished_at",
    "fire_at",
    "node_id",
    "started_at",
    "status",
];

fn schedule_metric(app: &Http, schedule: &str, result: &str) -> f64 {
    metric_value(
        app,
        &format!("order_engine_schedule_runs_total{{schedule=\"{schedule}\",result=\"{result}\"}}"),
    )
}

/// `GET /admin/schedules` lists each schedule with its next due time and latest run; a job
/// that fails shows failed with its error, and is counted; bad input is 400, no token 401.
fn admins_see_schedules_and_failures(backend: Backend) {
    let ok = Receiver::start(Script::Answer(200));
    let failing = Receiver::start(Script::Answer(500));
    let soon = time::now() + TimeDelta::seconds(2);
    let file = format!(
        "{}\n{}\n[[schedules]]\nname = \"nightly-purge\"\njob = \"purge\"\n\
         cron = \"30 3 * * *\"\ntimezone = \"Asia/Shanghai\"\nretention_days = 7\n",
        every_second_webhook("a-tick", &ok.url()),
        webhook_at("broken", soon, &failing.url()),
    );
    let Some(app) = TestApp::spawn_with_file(backend, &[], Some(&file)) else {
        return;
    };
    let list = wait_for("the failed run", Duration::from_secs(30), || {
        let list = app.admin("GET", "/admin/schedules", None);
        let data = list.json["data"].clone();
        if data[1]["last_run"]["status"] == "failed" && data[0]["last_run"]["status"] == "ok" {
            Ok(list.json)
        } else {
            Err(list.text)
        }
    });
    assert_keys(&list, &["data", "has_more", "next_after"]);
    assert_eq!(
        (list["has_more"].clone(), list["next_after"].clone()),
        (Value::Bool(false), Value::Null)
    );
    let data = list["data"].as_array().unwrap();
    let names: Vec<&str> = data.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a-tick", "broken", "nightly-purge"]);
    for schedule in data {
        assert_keys(schedule, &SCHEDULE_KEYS);
    }
    let (tick, broken, purge) = (&data[0], &data[1], &data[2]);
    assert_eq!(
        (tick["job"].as_str(), tick["schedule"].as_str()),
        (Some("webhook"), Some("every 1s"))
    );
    assert_keys(&tick["last_run"], &RUN_KEYS);
    assert_eq!(tick["last_run"]["error"], Value::Null);
    assert!(ts(&tick["next_run_at"]) > ts(&tick["last_run"]["fire_at"]));
    assert_eq!(broken["next_run_at"], Value::Null, "{broken}");
    assert_eq!(broken["schedule"], format!("at {}", time::format(&soon)));
    assert_keys(&broken["last_run"], &RUN_KEYS);
    assert!(
        broken["last_run"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{broken}"
    );
    assert!(ts(&broken["last_run"]["finished_at"]) >= ts(&broken["last_run"]["started_at"]));
    assert_eq!(purge["schedule"], "cron 30 3 * * * Asia/Shanghai");
    assert_eq!(purge["last_run"], Value::Null);
    // 03:30 in Shanghai is 19:30 UTC.
    let next = ts(&purge["next_run_at"]);
    assert_eq!(next.format("%H:%M:%S%.3f").to_string(), "19:30:00.000");
    assert!(schedule_metric(&app, "broken", "failed") >= 1.0);
    assert_eq!(schedule_metric(&app, "broken", "ok"), 0.0);
    assert!(schedule_metric(&app, "a-tick", "ok") >= 1.0);
    assert_eq!(schedule_metric(&app, "nightly-purge", "failed"), 0.0);
    let sent = failing.requests();
    assert_eq!(sent.len(), 1, "an `at` schedule runs once: {sent:?}");
    assert_eq!(assert_schedule_webhook(&sent[0], "broken"), soon);

    // Paging by name.
    let first = app.admin("GET", "/admin/schedules?limit=2", None);
    first.assert_status(200);
    assert_eq!(first.json["has_more"], true);
    assert_eq!(first.json["next_after"], "broken");
    let rest = app.admin("GET", "/admin/schedules?limit=2&after=broken", None);
    assert_eq!(rest.json["data"][0]["name"], "nightly-purge");
    assert_eq!(rest.json["has_more"], false);
    for bad in [
        "?limit=0",
        "?limit=abc",
        "?after=a%20b",
        "?after=",
        "?status=ok",
    ] {
        app.admin("GET", &format!("/admin/schedules{bad}"), None)
            .assert_error(400, "invalid_request");
    }
    app.request("GET", "/admin/schedules", &[], None)
        .assert_error(401, "unauthenticated");
    app.request(
        "GET",
        "/admin/schedules",
        &[("authorization", "Bearer wrong")],
        None,
    )
    .assert_error(401, "unauthenticated");
    app.admin("POST", "/admin/schedules", None)
        .assert_error(405, "method_not_allowed");
}
on_both_backends_of!(admins_see_schedules_and_failures);

/// Without `[[schedules]]` the list is empty.
fn no_schedules_no_list(backend: Backend) {
    let Some(app) = TestApp::spawn_if_available(backend) else {
        return;
    };
    let list = app.admin("GET", "/admin/schedules", None);
    assert_eq!(
        list.assert_status(200),
        &serde_json::json!({"data": [], "has_more": false, "next_after": null})
    );
}
on_both_backends_of!(no_schedules_no_list);

/// `purge` deletes idempotency keys past 24 h, deliveries delivered and effects done before
/// the retention, expired sessions and old finished runs (not each schedule's latest), and
/// keeps everything else: pending work, dead letters, recent rows, ledger and payment rows.
fn purge_deletes_what_nothing_reads(backend: Backend) {
    let Some(app) = TestApp::spawn_if_available(backend) else {
        return;
    };
    // Real rows through the API: a paid order (grant effect done) and a cancelled one
    // (refund effect done), and an idempotency key.
    let (user, token) = app.user_with_token(500);
    let paid = app.place_ok(&token, &[app.course(1_000)], None, 0);
    app.pay(&paid);
    let cancelled = app.place_ok(&token, &[app.course(1_000)], None, 100);
    app.as_user(
        &token,
        "POST",
        &format!(
            "/api/orders/{}/cancel",
            cancelled["order_no"].as_str().unwrap()
        ),
        None,
    )
    .assert_status(200);
    app.place_with_key(
        &token,
        "purge-key",
        &serde_json::json!({"course_ids": [app.course(10)]}),
    )
    .assert_status(201);
    app.wait_effects_done(paid["order_no"].as_str().unwrap());
    app.wait_effects_done(cancelled["order_no"].as_str().unwrap());
    let before = app.admin_user(user);

    let mut conn = app.db();
    let now = time::now();
    // As Diesel writes timestamps on SQLite (compared as text there).
    let sql = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S%.f").to_string();
    let old = sql(now - TimeDelta::days(40));
    let recent = sql(now - TimeDelta::days(2));
    // Age the paid order's effect past the retention; the cancelled one's stays recent.
    conn.batch_execute(&format!(
        "UPDATE effects SET updated_at = '{}' WHERE order_no = '{}'; \
         UPDATE effects SET updated_at = '{}' WHERE order_no = '{}'; \
         UPDATE idempotency_keys SET created_at = '{}'; \
         INSERT INTO webhook_deliveries (event_id, url, order_no, kind, body, status, attempts, \
            next_attempt_at, delivered_at, created_at) VALUES \
            (1, 'http://x/', 'o1', 'placed', '{{}}', 'done', 1, '{old}', '{old}', '{old}'), \
            (2, 'http://x/', 'o1', 'paid', '{{}}', 'done', 1, '{recent}', '{recent}', '{recent}'), \
            (3, 'http://x/', 'o2', 'placed', '{{}}', 'dead_lettered', 8, '{old}', NULL, '{old}'), \
            (4, 'http://x/', 'o3', 'placed', '{{}}', 'pending', 0, '{old}', NULL, '{old}'); \
         INSERT INTO admin_sessions (token_hash, csrf_token, created_at, expires_at) VALUES \
            ('expired', 'c1', '{old}', '{recent}'), ('live', 'c2', '{recent}', '{}'); \
         INSERT INTO schedule_runs (name, fire_at, status, node_id, attempts, started_at, \
            finished_at, lease_until) VALUES \
            ('p', '{old}', 'ok', 'n', 1, '{old}', '{old}', '{old}'), \
            ('q', '{old}', 'failed', 'n', 1, '{old}', '{old}', '{old}'), \
            ('p', '{recent}', 'ok', 'n', 1, '{recent}', '{recent}', '{recent}');",
        sql(now - TimeDelta::days(31)),
        paid["order_no"].as_str().unwrap(),
        recent,
        cancelled["order_no"].as_str().unwrap(),
        sql(now - TimeDelta::hours(25)),
        sql(now + TimeDelta::days(1)),
    ))
    .expect("age rows");

    let purged = db_schedules::purge(&mut conn, now, TimeDelta::days(30)).expect("purge");
    assert_eq!(
        purged,
        db_schedules::Purged {
            idempotency_keys: 1,
            deliveries: 1,
            effects: 1,
            sessions: 1,
            runs: 1,
        }
    );
    let ids: Vec<i64> =
        diesel::sql_query("SELECT event_id AS id FROM webhook_deliveries ORDER BY event_id")
            .load::<IdRow>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
    assert_eq!(
        ids,
        [2, 3, 4],
        "the recent, dead-lettered and pending deliveries stay"
    );
    let effects = app.admin_order(cancelled["order_no"].as_str().unwrap())["effects"].clone();
    assert_eq!(effects.as_array().map(Vec::len), Some(1), "{effects}");
    assert_eq!(
        app.admin_order(paid["order_no"].as_str().unwrap())["effects"],
        serde_json::json!([])
    );
    // Each schedule keeps its latest run: q's only one, p's recent one.
    let runs =
        |conn: &mut DbConnection, name: &str| db_schedules::runs_of(conn, name).unwrap().len();
    assert_eq!((runs(&mut conn, "p"), runs(&mut conn, "q")), (1, 1));
    // Points, coupons, courses and the ledger are untouched; a second purge finds nothing.
    assert_eq!(app.admin_user(user), before);
    assert_eq!(
        db_schedules::purge(&mut conn, now, TimeDelta::days(30)).unwrap(),
        db_schedules::Purged::default()
    );
    crate::invariants::check(&app);
}
on_both_backends_of!(purge_deletes_what_nothing_reads);

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

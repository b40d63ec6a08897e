//! The jobs a schedule runs: `purge`, `reconcile_payments` and `webhook`. Each returns a one-line summary, or why it
//! failed (the run is then recorded `failed` with it, and counted).

use std::time::Duration;

use chrono::{NaiveDateTime, TimeDelta};

use crate::config::{Job, Schedule};
use crate::db::DbPool;
use crate::domain::time;

/// How long a schedule's webhook receiver has to answer (the SPEC's 10 s, as for webhooks).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `schedule`'s job for its due time `fire_at`.
pub fn run(
    pool: &DbPool,
    engine: &super::EngineLink,
    schedule: &Schedule,
    fire_at: NaiveDateTime,
) -> Result<String, String> {
    match &schedule.job {
        Job::ReconcilePayments {
            min_age_secs,
            lookback_secs,
        } => {
            let core = engine
                .get()
                .and_then(std::sync::Weak::upgrade)
                .ok_or("the engine is not running")?;
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            let node = core.settings.cluster.node_id.clone();
            let done = crate::providers::reconcile::run(
                &mut conn,
                &core.providers,
                core.journal,
                time::now(),
                *min_age_secs,
                *lookback_secs,
                &|outcome| core.after_commit(crate::actors::Committed::of([outcome], &node)),
            )?;
            Ok(done.to_string())
        }
        Job::Purge { retention_days } => {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            let retention = TimeDelta::days(i64::try_from(*retention_days).unwrap_or(36_500));
            let purged = crate::db::schedules::purge(&mut conn, time::now(), retention)
                .map_err(|e| format!("purge: {e}"))?;
            Ok(format!(
                "purged {} idempotency keys, {} deliveries, {} effects, {} sessions, {} runs",
                purged.idempotency_keys,
                purged.deliveries,
                purged.effects,
                purged.sessions,
                purged.runs
            ))
        }
        Job::Webhook { url, key } => {
            post(url, key, &schedule.name, fire_at)?;
            Ok(format!("{url} answered 2xx"))
        }
    }
}

/// The `webhook-id` of a schedule's run: `{name}:{fire_at}`, the same on a run taken over.
pub fn webhook_id(name: &str, fire_at: &NaiveDateTime) -> String {
    format!("{name}:{}", time::format(fire_at))
}

/// POSTs `{"schedule","fire_at"}` to `url`, signed per Standard Webhooks with `key`.
fn post(url: &str, key: &[u8], name: &str, fire_at: NaiveDateTime) -> Result<(), String> {
    let body = serde_json::json!({"schedule": name, "fire_at": time::format(&fire_at)}).to_string();
    crate::webhooks::post_signed(
        &crate::webhooks::agent(WEBHOOK_TIMEOUT),
        url,
        key,
        &webhook_id(name, &fire_at),
        &body,
    )
    .map_err(|err| format!("{url}: {err}"))
}

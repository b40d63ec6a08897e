//! Schedules in the database (SPEC "Schedules and webhooks"): each configured schedule's
//! earliest unclaimed due time, and its runs. A due time is claimed by exactly one of the
//! processes sharing the database: the claim locks the schedule's row (PostgreSQL: `FOR
//! UPDATE SKIP LOCKED`; SQLite: the write transaction holds the file), moves its next due time
//! on and inserts the run, in one transaction — the way Quartz's clustered job store claims a
//! trigger. `UNIQUE (name, fire_at)` backs it. A run holds a lease that its process renews
//! while the job runs; a running run whose lease has passed died with its process, and the
//! next claim of that schedule takes it over (runs of one schedule never overlap).

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use super::schema::{admin_sessions, effects, idempotency_keys, schedule_runs as runs, schedules};
use super::{effect_transaction, write_transaction, DbConnection};
use crate::config::Schedule;
use crate::db::sql_types::{At, Timestamp};
use crate::domain::schedule::Timing;
use crate::domain::states::{EffectStatus, RunStatus};

/// A schedule's first due time when the engine first sees it (or sees its timing change):
/// the first after `now`; for `at`, that instant even when it has passed, since it has not
/// run.
fn first_due(timing: &Timing, now: NaiveDateTime) -> Option<NaiveDateTime> {
    match timing {
        Timing::At(at) => Some(*at),
        _ => timing.first_after(now),
    }
}

/// Records the configured schedules: a new one, or one whose timing changed since it was
/// recorded, is planned from `now`; the others keep their next due time (so runs missed while
/// every process was down are found). Returns the names re-planned.
pub fn register(
    conn: &mut DbConnection,
    configured: &[Schedule],
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    write_transaction(conn, |conn| {
        let mut planned = Vec::new();
        for schedule in configured {
            let spec = schedule.timing.to_string();
            let next = first_due(&schedule.timing, now);
            let values = (
                schedules::name.eq(&schedule.name),
                schedules::spec.eq(&spec),
                schedules::next_fire_at.eq(next),
                schedules::updated_at.eq(At(now)),
            );
            let inserted = crate::per_backend!(
                &mut *conn,
                |c| diesel::insert_into(schedules::table)
                    .values(values)
                    .on_conflict_do_nothing()
                    .execute(c),
                mysql | m | {
                    // As in `idempotency::claim`: MySQL's ON DUPLICATE KEY counts the row it
                    // left alone, a plain insert's duplicate-key error does not.
                    match diesel::insert_into(schedules::table)
                        .values(values)
                        .execute(m)
                    {
                        Err(diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::UniqueViolation,
                            _,
                        )) => Ok(0),
                        other => other,
                    }
                }
            )?;
            let changed = diesel::update(
                schedules::table
                    .find(&schedule.name)
                    .filter(schedules::spec.ne(&spec)),
            )
            .set((
                schedules::spec.eq(&spec),
                schedules::next_fire_at.eq(next),
                schedules::updated_at.eq(At(now)),
            ))
            .execute(conn)?;
            if inserted + changed > 0 {
                planned.push(schedule.name.clone());
            }
        }
        Ok(planned)
    })
}

/// A run this process has claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub fire_at: NaiveDateTime,
    /// 1, or more for a run taken over from a process that died running it.
    pub attempts: i32,
}

#[derive(QueryableByName)]
struct ScheduleRow {
    #[diesel(sql_type = Nullable<Timestamp>)]
    next_fire_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Text)]
    spec: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = runs)]
struct Running {
    id: i64,
    fire_at: NaiveDateTime,
    attempts: i32,
    lease_until: NaiveDateTime,
}

/// Claims `schedule`'s due run at `now` for `node_id`, leased until `lease_until`: the run of
/// a process that died (its lease passed), else the earliest due time while it is less than
/// `misfire` late, else one run for the latest missed due time. `None` when nothing is due,
/// a run of it is under way, another process is claiming it this instant, or the database
/// holds another timing for it (another process's config).
pub fn claim(
    conn: &mut DbConnection,
    schedule: &Schedule,
    node_id: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    misfire: TimeDelta,
) -> QueryResult<Option<Claimed>> {
    let spec = schedule.timing.to_string();
    write_transaction(conn, |conn| {
        let row: Option<ScheduleRow> = match conn {
            DbConnection::Postgresql(pg) => diesel::sql_query(
                "SELECT next_fire_at, spec FROM schedules WHERE name = $1 FOR UPDATE SKIP LOCKED",
            )
            .bind::<Text, _>(&schedule.name)
            .get_result(pg)
            .optional()?,
            DbConnection::Sqlite(sqlite) => {
                diesel::sql_query("SELECT next_fire_at, spec FROM schedules WHERE name = ?")
                    .bind::<Text, _>(&schedule.name)
                    .get_result(sqlite)
                    .optional()?
            }
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(my) => diesel::sql_query(
                "SELECT next_fire_at, spec FROM schedules WHERE name = ? FOR UPDATE SKIP LOCKED",
            )
            .bind::<Text, _>(&schedule.name)
            .get_result(my)
            .optional()?,
        };
        let Some(row) = row.filter(|row| row.spec == spec) else {
            return Ok(None);
        };
        let running: Option<Running> = runs::table
            .filter(runs::name.eq(&schedule.name))
            .filter(runs::status.eq(RunStatus::Running))
            .select(Running::as_select())
            .first(conn)
            .optional()?;
        if let Some(run) = running {
            if run.lease_until > now {
                return Ok(None);
            }
            diesel::update(runs::table.find(run.id))
                .set((
                    runs::node_id.eq(node_id),
                    runs::attempts.eq(run.attempts + 1),
                    runs::started_at.eq(At(now)),
                    runs::lease_until.eq(At(lease_until)),
                ))
                .execute(conn)?;
            return Ok(Some(Claimed {
                id: run.id,
                fire_at: run.fire_at,
                attempts: run.attempts + 1,
            }));
        }
        let Some(fire_at) = row
            .next_fire_at
            .and_then(|next| schedule.timing.due(next, now, misfire))
        else {
            return Ok(None);
        };
        diesel::update(schedules::table.find(&schedule.name))
            .set((
                schedules::next_fire_at.eq(schedule.timing.first_after(fire_at)),
                schedules::updated_at.eq(At(now)),
            ))
            .execute(conn)?;
        let values = (
            runs::name.eq(&schedule.name),
            runs::fire_at.eq(At(fire_at)),
            runs::status.eq(RunStatus::Running),
            runs::node_id.eq(node_id),
            runs::attempts.eq(1),
            runs::started_at.eq(At(now)),
            runs::lease_until.eq(At(lease_until)),
        );
        let id: i64 = crate::per_backend!(
            &mut *conn,
            |c| diesel::insert_into(runs::table)
                .values(values)
                .returning(runs::id)
                .get_result(c),
            mysql | m | {
                diesel::insert_into(runs::table).values(values).execute(m)?;
                crate::db::mysql::last_insert_id(m)
            }
        )?;
        Ok(Some(Claimed {
            id,
            fire_at,
            attempts: 1,
        }))
    })
}

/// Extends the leases of this node's runs still under way. Returns how many it extended.
pub fn renew(
    conn: &mut DbConnection,
    ids: &[i64],
    node_id: &str,
    lease_until: NaiveDateTime,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    effect_transaction(conn, |conn| {
        diesel::update(
            runs::table
                .filter(runs::id.eq_any(ids))
                .filter(runs::node_id.eq(node_id))
                .filter(runs::status.eq(RunStatus::Running)),
        )
        .set(runs::lease_until.eq(At(lease_until)))
        .execute(conn)
    })
}

/// Records how this node's run ended (`error` none: ok). `false` when the run is no longer
/// this node's (its lease passed and another process took it over).
pub fn finish(
    conn: &mut DbConnection,
    id: i64,
    node_id: &str,
    error: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let status = if error.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    effect_transaction(conn, |conn| {
        let updated = diesel::update(
            runs::table
                .find(id)
                .filter(runs::node_id.eq(node_id))
                .filter(runs::status.eq(RunStatus::Running)),
        )
        .set((
            runs::status.eq(status),
            runs::finished_at.eq(Some(now)),
            runs::error.eq(error),
        ))
        .execute(conn)?;
        Ok(updated == 1)
    })
}

/// A run as `GET /admin/schedules` and the dashboard's Schedules pages show it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = runs)]
pub struct Run {
    pub fire_at: NaiveDateTime,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub status: RunStatus,
    pub node_id: String,
    pub error: Option<String>,
    /// 1, or more when taken over from a process that died running it.
    pub attempts: i32,
}

/// A schedule's next due time as recorded (`None` also when never recorded) and its latest
/// run.
pub fn state(
    conn: &mut DbConnection,
    name: &str,
) -> QueryResult<(Option<NaiveDateTime>, Option<Run>)> {
    let last = recent_runs(conn, name, 1)?.into_iter().next();
    Ok((next_due(conn, name)?, last))
}

/// A schedule's next due time as recorded: `None` once an `at` schedule has run, and when it
/// was never recorded.
pub fn next_due(conn: &mut DbConnection, name: &str) -> QueryResult<Option<NaiveDateTime>> {
    let next: Option<Option<NaiveDateTime>> = schedules::table
        .find(name)
        .select(schedules::next_fire_at)
        .first(conn)
        .optional()?;
    Ok(next.flatten())
}

/// A schedule's latest `limit` runs, newest due time first (`UNIQUE (name, fire_at)` reads
/// them in order).
pub fn recent_runs(conn: &mut DbConnection, name: &str, limit: i64) -> QueryResult<Vec<Run>> {
    runs::table
        .filter(runs::name.eq(name))
        .order(runs::fire_at.desc())
        .limit(limit)
        .select(Run::as_select())
        .load(conn)
}

/// Every run of a schedule, oldest due time first (tests and operators).
pub fn runs_of(conn: &mut DbConnection, name: &str) -> QueryResult<Vec<Run>> {
    runs::table
        .filter(runs::name.eq(name))
        .order(runs::fire_at)
        .select(Run::as_select())
        .load(conn)
}

/// What one purge deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_keys: usize,
    pub deliveries: usize,
    pub effects: usize,
    pub sessions: usize,
    pub runs: usize,
}

/// Rows per delete statement, so a purge never holds a big table's locks (or SQLite's writer)
/// for long.
const PURGE_BATCH: i64 = 1000;

/// Deletes rows nothing reads any more: idempotency keys past their 24 h, delivered webhook
/// deliveries and done effects finished more than `retention` ago, expired dashboard
/// sessions, and finished schedule runs older than `retention` except each schedule's latest.
/// Never a dead letter (an admin's to retry), a payment event or a ledger row (duplicate
/// checks read them). Order events need no purge: the journal deletes each once published
/// and fanned out.
pub fn purge(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    retention: TimeDelta,
) -> QueryResult<Purged> {
    use super::schema::webhook_deliveries as wd;
    let cutoff = now - retention;
    let keys_cutoff = now - TimeDelta::hours(24);
    let mut purged = Purged {
        idempotency_keys: effect_transaction(conn, |conn| {
            diesel::delete(
                idempotency_keys::table.filter(idempotency_keys::created_at.lt(At(keys_cutoff))),
            )
            .execute(conn)
        })?,
        sessions: effect_transaction(conn, |conn| {
            diesel::delete(admin_sessions::table.filter(admin_sessions::expires_at.le(At(now))))
                .execute(conn)
        })?,
        ..Purged::default()
    };
    purged.deliveries = in_batches(conn, |conn| {
        let ids: Vec<i64> = wd::table
            .filter(wd::status.eq(EffectStatus::Done))
            .filter(wd::delivered_at.lt(Some(cutoff)))
            .select(wd::id)
            .limit(PURGE_BATCH)
            .load(conn)?;
        diesel::delete(wd::table.filter(wd::id.eq_any(ids))).execute(conn)
    })?;
    purged.effects = in_batches(conn, |conn| {
        let ids: Vec<i64> = effects::table
            .filter(effects::status.eq(EffectStatus::Done))
            .filter(effects::updated_at.lt(At(cutoff)))
            .select(effects::id)
            .limit(PURGE_BATCH)
            .load(conn)?;
        diesel::delete(effects::table.filter(effects::id.eq_any(ids))).execute(conn)
    })?;
    purged.runs = in_batches(conn, |conn| {
        let latest = diesel::alias!(runs as latest);
        let ids: Vec<i64> = runs::table
            .filter(runs::status.ne(RunStatus::Running))
            .filter(runs::finished_at.lt(Some(cutoff)))
            .filter(diesel::dsl::exists(
                latest
                    .filter(latest.field(runs::name).eq(runs::name))
                    .filter(latest.field(runs::fire_at).gt(runs::fire_at)),
            ))
            .select(runs::id)
            .limit(PURGE_BATCH)
            .load(conn)?;
        diesel::delete(runs::table.filter(runs::id.eq_any(ids))).execute(conn)
    })?;
    Ok(purged)
}

/// Runs `delete_some` (one batch, in its own transaction) until it deletes nothing; the total.
fn in_batches(
    conn: &mut DbConnection,
    mut delete_some: impl FnMut(&mut DbConnection) -> QueryResult<usize>,
) -> QueryResult<usize> {
    let mut total = 0;
    loop {
        let deleted = effect_transaction(conn, &mut delete_some)?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
    }
}

//! `GET /admin/schedules`: the configured schedules, each with its next due time and its
//! latest run, as the database records them for all processes. The dashboard's Schedules
//! pages read through the same functions ([`schedules_page`], [`schedule_runs`]).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::paging::{query, List, Paging};
use super::{require_admin, run_db, AppState};
use crate::config::Schedule;
use crate::db::schedules::{self, Run};
use crate::domain::states::RunStatus;
use crate::domain::time::{serde_ts, serde_ts_opt};
use crate::error::{ApiError, ErrorEnvelope};

/// One schedule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub name: String,
    /// `purge` or `webhook`.
    pub job: &'static str,
    /// Its timing: `cron <pattern> <zone>`, `every <n>s` or `at <instant>`.
    pub schedule: String,
    /// The earliest due time not yet claimed; null for an `at` schedule that has run (and
    /// until the first process records the schedule).
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true, value_type = Option<String>)]
    pub next_run_at: Option<NaiveDateTime>,
    #[schema(required = true)]
    pub last_run: Option<RunView>,
}

/// A schedule's latest run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    /// The due time it ran for.
    #[serde(with = "serde_ts")]
    #[schema(value_type = String)]
    pub fire_at: NaiveDateTime,
    /// When its process claimed it (or took it over).
    #[serde(with = "serde_ts")]
    #[schema(value_type = String)]
    pub started_at: NaiveDateTime,
    #[serde(with = "serde_ts_opt")]
    #[schema(required = true, value_type = Option<String>)]
    pub finished_at: Option<NaiveDateTime>,
    pub status: RunStatus,
    /// The process that ran it (`cluster.node_id`).
    pub node_id: String,
    #[schema(required = true)]
    pub error: Option<String>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        RunView {
            fire_at: run.fire_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            status: run.status,
            node_id: run.node_id,
            error: run.error,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SchedulePage {
    /// 1-100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_after` of the page before: a schedule's name.
    after: Option<String>,
}

/// The configured schedules, by name.
#[utoipa::path(get, path = "/admin/schedules", tag = "admins", params(SchedulePage),
    security(("admin_token" = [])),
    responses((status = 200, description = "A page of schedules, by name", body = List<ScheduleView>),
        (status = 400, description = "A bad `limit` or cursor", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn list_schedules(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let page: SchedulePage = query(&req)?;
    let paging = Paging::parse(page.limit.as_deref())?;
    if let Some(after) = page.after.as_deref() {
        if !crate::domain::schedule::valid_name(after) {
            return Err(ApiError::InvalidRequest(
                "after is not a cursor from this list".into(),
            ));
        }
    }
    let rows = schedules_page(&state, page.after, paging.fetch()).await?;
    Ok(paging.respond(rows, |s| s.name.clone()))
}

/// Up to `fetch` schedules by name, after the name `after`: `GET /admin/schedules`, and the
/// dashboard's Schedules page.
pub async fn schedules_page(
    state: &AppState,
    after: Option<String>,
    fetch: i64,
) -> Result<Vec<ScheduleView>, ApiError> {
    let mut configured: Vec<_> = state
        .settings
        .schedules
        .iter()
        .filter(|s| after.as_ref().is_none_or(|after| s.name > *after))
        .cloned()
        .collect();
    configured.sort_by(|a, b| a.name.cmp(&b.name));
    configured.truncate(usize::try_from(fetch).unwrap_or(usize::MAX));
    run_db(state, move |conn| {
        let mut views = Vec::with_capacity(configured.len());
        for schedule in configured {
            let (next_run_at, last_run) = schedules::state(conn, &schedule.name)?;
            views.push(ScheduleView::of(schedule, next_run_at, last_run));
        }
        Ok(views)
    })
    .await
}

/// The configured schedule `name` and its latest `limit` runs, newest first (the dashboard's
/// page of one schedule); `None` when no schedule of that name is configured here.
pub async fn schedule_runs(
    state: &AppState,
    name: &str,
    limit: i64,
) -> Result<Option<(ScheduleView, Vec<Run>)>, ApiError> {
    let Some(schedule) = state.settings.schedules.iter().find(|s| s.name == name) else {
        return Ok(None);
    };
    let schedule = schedule.clone();
    run_db(state, move |conn| {
        let next_run_at = schedules::next_due(conn, &schedule.name)?;
        let runs = schedules::recent_runs(conn, &schedule.name, limit)?;
        let view = ScheduleView::of(schedule, next_run_at, runs.first().cloned());
        Ok(Some((view, runs)))
    })
    .await
}

impl ScheduleView {
    fn of(schedule: Schedule, next_run_at: Option<NaiveDateTime>, last_run: Option<Run>) -> Self {
        ScheduleView {
            job: schedule.job.name(),
            schedule: schedule.timing.to_string(),
            name: schedule.name,
            next_run_at,
            last_run: last_run.map(RunView::from),
        }
    }
}

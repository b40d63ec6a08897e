//! Operations routes: liveness and readiness (no auth), and the Prometheus metrics (Bearer
//! `metrics.token` when set).

use std::time::Duration;

use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use diesel::RunQueryDsl;
use serde::Serialize;

use super::AppState;
use crate::auth::{bearer_token, token_matches};
use crate::error::{ApiError, ErrorEnvelope};
use crate::metrics::{Readings, CONTENT_TYPE};

/// `GET /healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /readyz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok`, or `degraded` when Redis is configured and down.
    status: &'static str,
    /// `ok` (else the answer is 503).
    database: &'static str,
    /// `ok`, `down`, or `off` when not configured.
    redis: &'static str,
}

/// The process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// 200 while the database answers (`degraded` when Redis is configured but down), 503 when
/// the database does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The database answers", body = Readiness),
    (status = 503, description = "The database does not answer", body = ErrorEnvelope)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let pool = state.pool.clone();
    let redis = state.engine.core.redis.clone();
    let (database_ok, redis_state) = web::block(move || {
        let database_ok = pool
            .get_timeout(Duration::from_secs(2))
            .ok()
            .is_some_and(|mut conn| diesel::sql_query("SELECT 1").execute(&mut *conn).is_ok());
        let redis_state = match redis {
            None => "off",
            Some(link) => {
                if link.ping() {
                    "ok"
                } else {
                    "down"
                }
            }
        };
        (database_ok, redis_state)
    })
    .await?;
    if !database_ok {
        return Err(ApiError::Unavailable("the database does not answer".into()));
    }
    let status = if redis_state == "down" {
        "degraded"
    } else {
        "ok"
    };
    Ok(HttpResponse::Ok().json(Readiness {
        status,
        database: "ok",
        redis: redis_state,
    }))
}

/// This process's metrics in the Prometheus text format (OpenMetrics). The gauges are read
/// now: actor counts from memory, the outbox backlogs from their partial indexes (kept at
/// their last values, and the scrape still answered, when the database does not answer).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "`metrics.token` is set and was not sent", body = ErrorEnvelope)))]
pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(expected) = &state.settings.metrics.token {
        match bearer_token(&req) {
            Some(token) if token_matches(token, expected) => {}
            _ => return Err(ApiError::Unauthenticated("metrics token required")),
        }
    }
    let core = &state.engine.core;
    let live = core.gauges.live.load(Ordering::Relaxed);
    let journal = core.journal;
    let backlog = crate::db::run(&state.pool, Duration::from_secs(1), move |conn| {
        let effects = crate::db::outbox::pending_by_kind(conn)?;
        let events = if journal.enabled {
            crate::db::journal::backlog(conn)?
        } else {
            0
        };
        Ok((effects, events))
    })
    .await;
    let (effects_pending, events_unpublished) = match backlog {
        Ok((effects, events)) => (Some(effects), Some(events)),
        Err(err) => {
            log::warn!("metrics scrape without the outbox backlogs: {err}");
            (None, None)
        }
    };
    let readings = Readings {
        pending_orders: live,
        live_actors: live,
        armed_timers: core.gauges.armed.load(Ordering::Relaxed),
        effects_pending,
        events_unpublished,
    };
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(core.metrics.render(&readings)))
}

//! Operations routes, without authentication: liveness and readiness.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use diesel::RunQueryDsl;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while the database answers (`degraded` when Redis is configured but
/// down), 503 when the database does not.
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
    Ok(HttpResponse::Ok().json(json!({"status": status, "database": "ok", "redis": redis_state})))
}

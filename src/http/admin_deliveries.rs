//! Admin routes over webhook deliveries: the list, and retrying a dead-lettered one.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::admin_orders::status_filter;
use super::paging::{id_cursor, query, List, Paging};
use super::{parse_id, require_admin, run_db, AppState};
use crate::db::deliveries::{self, Delivery, DeliveryStatus, RetryRefused};
use crate::domain::time;
use crate::error::{ApiError, ErrorEnvelope};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryFilter {
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// 1-100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_after` of the page before.
    after: Option<String>,
}

/// Webhook deliveries (one per order event and endpoint), newest first.
#[utoipa::path(get, path = "/admin/deliveries", tag = "admins", params(DeliveryFilter),
    security(("admin_token" = [])),
    responses((status = 200, description = "A page of deliveries", body = List<Delivery>),
        (status = 400, description = "A bad `limit`, filter or cursor", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let filter: DeliveryFilter = query(&req)?;
    let paging = Paging::parse(filter.limit.as_deref())?;
    let status = status_filter(filter.status.as_deref(), DeliveryStatus::parse)?;
    let after = id_cursor(filter.after.as_deref())?;
    let rows = deliveries_page(&state, status, after, paging.fetch()).await?;
    Ok(paging.respond(rows, |d| d.id.to_string()))
}

/// Up to `fetch` deliveries, newest first, of one status or all: `GET /admin/deliveries`.
pub async fn deliveries_page(
    state: &AppState,
    status: Option<DeliveryStatus>,
    after: Option<i64>,
    fetch: i64,
) -> Result<Vec<Delivery>, ApiError> {
    run_db(state, move |conn| {
        Ok(deliveries::page(conn, status, after, fetch)?)
    })
    .await
}

/// A dead-lettered delivery gets a fresh set of attempts.
#[utoipa::path(post, path = "/admin/deliveries/{id}/retry", tag = "admins",
    params(("id" = i64, Path)),
    security(("admin_token" = [])),
    responses((status = 200, description = "The delivery, re-queued", body = Delivery),
        (status = 400, description = "An id that is not an integer", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`delivery_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`delivery_not_dead_lettered`", body = ErrorEnvelope)))]
pub async fn retry_delivery(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let id = parse_id(&path, "delivery id")?;
    Ok(HttpResponse::Ok().json(retry(&state, id).await?))
}

/// Re-queues a dead-lettered delivery (404 `delivery_not_found`, 409
/// `delivery_not_dead_lettered`); its endpoint's worker picks it up within a poll.
pub async fn retry(state: &AppState, id: i64) -> Result<Delivery, ApiError> {
    let delivery = run_db(state, move |conn| {
        Ok(deliveries::retry(conn, id, time::now())?)
    })
    .await?
    .map_err(|refused| match refused {
        RetryRefused::NotFound => ApiError::DeliveryNotFound(id),
        RetryRefused::NotDeadLettered => ApiError::DeliveryNotDeadLettered(id),
    })?;
    log::info!(
        "admin retried webhook delivery {id} (event {}, {} of order {}, to {})",
        delivery.event_id,
        delivery.kind,
        delivery.order_no,
        delivery.url
    );
    Ok(delivery)
}

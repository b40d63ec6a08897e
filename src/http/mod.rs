//! The HTTP API, by user: web clients (`client`), admins (`admin`), operations (`ops`).
//! Bodies are read raw (so the 413 and 401 checks come before JSON parsing, as the SPEC's
//! precedence demands) and parsed as JSON whatever their `Content-Type`.

pub mod admin;
pub mod admin_deliveries;
pub mod admin_orders;
pub mod admin_schedules;
pub mod client;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod payments;
pub mod provider;
pub mod request_timeout;
pub mod signature;
pub mod ui;

use std::sync::Arc;

use actix_web::rt::time::Instant;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::actors::Engine;
use crate::auth::{bearer_token, token_matches, JwtKeys};
use crate::config::Settings;
use crate::db::models::Order;
use crate::db::{catalog, DbConnection, DbPool};
use crate::domain::ids::UserId;
use crate::domain::order::Rejection;
use crate::domain::order::{Canceller, Command};
use crate::error::ApiError;

/// What every handler shares.
pub struct AppState {
    pub pool: DbPool,
    pub settings: Arc<Settings>,
    pub jwt: JwtKeys,
    pub engine: Engine,
}

/// Runs blocking Diesel work on the blocking thread pool, never on an async worker.
pub async fn run_db<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
{
    crate::db::run(&state.pool, state.pool.connection_timeout(), f).await
}

/// Reads the whole body, refusing one over `limit` bytes before reading it when the
/// `Content-Length` says so, and one not whole by the request's deadline (timed from its first
/// byte, see `request_timeout`) with 408.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let read = async move {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::InvalidRequest(format!("could not read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    match request_timeout::deadline(req) {
        // A body already whole is taken even at the deadline (the future is polled first).
        Some(at) => {
            actix_web::rt::time::timeout(at.saturating_duration_since(Instant::now()), read)
                .await
                .unwrap_or(Err(ApiError::RequestTimeout))
        }
        None => read.await,
    }
}

/// Parses a request body, which must be one JSON object (serde would also read a struct
/// from an array of its field values).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest(format!("invalid body: {e}")))
}

/// An order number that could exist: 1-64 characters without NUL (which PostgreSQL text
/// cannot hold). Any other is simply not found.
pub fn order_no_or_404(order_no: String) -> Result<String, ApiError> {
    if order_no.is_empty() || order_no.chars().count() > 64 || order_no.contains('\0') {
        Err(ApiError::OrderNotFound(order_no.replace('\0', "\\0")))
    } else {
        Ok(order_no)
    }
}

/// The user a valid client JWT names; 401 unless that user exists.
pub async fn authenticate_client(state: &AppState, req: &HttpRequest) -> Result<UserId, ApiError> {
    let user_id = client_claim(state, req)?;
    confirm_user(state, user_id).await?;
    Ok(user_id)
}

/// The user id a valid client JWT names, not yet looked up: for a handler whose own work finds
/// out whether the user exists (the placement locks the user's row first), and which calls
/// [`confirm_user`] before any error it answers ahead of that work, as 401 ranks first.
pub fn client_claim(state: &AppState, req: &HttpRequest) -> Result<UserId, ApiError> {
    let token = bearer_token(req).ok_or(ApiError::Unauthenticated("missing bearer token"))?;
    Ok(UserId(state.jwt.verify(token)?))
}

/// 401 unless the token's user exists.
pub async fn confirm_user(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    match run_db(state, move |conn| {
        Ok(catalog::find_user(conn, user_id)?.is_some())
    })
    .await?
    {
        true => Ok(()),
        false => Err(ApiError::Unauthenticated("the token's user does not exist")),
    }
}

pub fn require_admin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    match bearer_token(req) {
        Some(token) if token_matches(token, &state.settings.admin.token) => Ok(()),
        _ => Err(ApiError::Unauthenticated("admin token required")),
    }
}

/// A page of the catalog, newest course first (the admins' and the clients' course lists).
pub async fn course_page(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let (paging, after) = paging::PageOnly::parse(req)?;
    let fetch = paging.fetch();
    let courses = run_db(state, move |conn| {
        Ok(catalog::course_page(conn, after, fetch)?)
    })
    .await?;
    Ok(paging.respond(courses, |c| c.id.to_string()))
}

/// Cancels an order for its user (`Some(user_id)`, reason `user`) or an admin (`None`):
/// 200 with the cancelled order, or 409 `order_not_pending`.
pub async fn cancel(
    state: &AppState,
    order_no: String,
    user_id: Option<UserId>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(cancel_order(state, order_no, user_id).await?))
}

/// The one cancel path of the JSON API and the dashboard: the cancelled order, or 409
/// `order_not_pending`.
pub async fn cancel_order(
    state: &AppState,
    order_no: String,
    user_id: Option<UserId>,
) -> Result<Order, ApiError> {
    let order_no = order_no_or_404(order_no)?;
    let outcome = state
        .engine
        .deliver(
            &order_no,
            Command::Cancel(user_id.map_or(Canceller::Admin, Canceller::User)),
        )
        .await?;
    if outcome.rejection == Some(Rejection::OrderNotPending) {
        return Err(ApiError::OrderNotPending {
            order_no,
            status: outcome.order.status,
        });
    }
    match user_id {
        Some(user) => log::info!("order {order_no} cancelled by user {user}"),
        None => log::info!("order {order_no} cancelled by an admin"),
    }
    Ok(outcome.order)
}

/// A path segment that must be an id.
pub fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| ApiError::InvalidRequest(format!("{what} must be an integer, got {text:?}")))
}

/// A resource whose other methods get 405 with the error envelope.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .service(resource("/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(resource("/docs").route(web::get().to(openapi::docs_root)))
        .service(resource("/docs/{file:.*}").route(web::get().to(openapi::docs_file)))
        .service(resource("/api/orders").route(web::post().to(client::place_order)))
        .service(resource("/api/orders/{order_no}").route(web::get().to(client::get_order)))
        .service(
            resource("/api/orders/{order_no}/cancel").route(web::post().to(client::cancel_order)),
        )
        .service(
            resource("/api/orders/{order_no}/payments")
                .route(web::post().to(payments::start_payment)),
        )
        .service(resource("/api/payments/callback").route(web::post().to(provider::callback)))
        .service(
            resource("/api/payments/alipay/notify").route(web::post().to(payments::alipay_notify)),
        )
        .service(
            resource("/api/payments/wechatpay/notify")
                .route(web::post().to(payments::wechatpay_notify)),
        )
        .service(
            resource("/api/payments/stripe/webhook")
                .route(web::post().to(payments::stripe_webhook)),
        )
        .service(resource("/api/me").route(web::get().to(client::me)))
        .service(resource("/api/courses").route(web::get().to(client::list_courses)))
        .service(resource("/admin/users").route(web::post().to(admin::create_user)))
        .service(resource("/admin/users/{id}").route(web::get().to(admin::get_user)))
        .service(resource("/admin/users/{id}/coupons").route(web::post().to(admin::give_coupon)))
        .service(
            resource("/admin/courses")
                .route(web::post().to(admin::create_course))
                .route(web::get().to(admin::list_courses)),
        )
        .service(resource("/admin/courses/{id}").route(web::patch().to(admin::patch_course)))
        .service(resource("/admin/coupons").route(web::post().to(admin::create_coupon)))
        .service(resource("/admin/orders").route(web::get().to(admin_orders::list_orders)))
        .service(resource("/admin/orders/{order_no}").route(web::get().to(admin_orders::get_order)))
        .service(
            resource("/admin/orders/{order_no}/cancel")
                .route(web::post().to(admin_orders::cancel_order)),
        )
        .service(resource("/admin/actors").route(web::get().to(admin_orders::actors)))
        .service(resource("/admin/effects").route(web::get().to(admin_orders::list_effects)))
        .service(
            resource("/admin/effects/{id}/retry").route(web::post().to(admin_orders::retry_effect)),
        )
        .service(
            resource("/admin/deliveries").route(web::get().to(admin_deliveries::list_deliveries)),
        )
        .service(
            resource("/admin/deliveries/{id}/retry")
                .route(web::post().to(admin_deliveries::retry_delivery)),
        )
        .service(resource("/admin/schedules").route(web::get().to(admin_schedules::list_schedules)))
        .service(resource("/admin/late-payments").route(web::get().to(admin_orders::late_payments)))
        .configure(ui::routes);
}

/// Any path no route matches.
pub async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

//! Routes for web clients (students), authenticated with an HS256 JWT.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    authenticate_client, client_claim, confirm_user, parse_json, read_body, run_db, AppState,
};
use crate::actors::Committed;
use crate::db::catalog;
use crate::db::idempotency::{self, Claim};
use crate::db::models::Order;
use crate::db::models::{Course, Me};
use crate::db::orders::{self, Placement};
use crate::domain::ids::{CourseId, UserId};
use crate::domain::pricing::check_shape;
use crate::domain::states::{EffectKind, OrderStatus};
use crate::domain::time;
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::paging::List;
use crate::redis::fastpath;

/// A new order: 1-20 distinct courses, optionally one of the user's coupons and points.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderBody {
    #[schema(min_items = 1, max_items = 20)]
    course_ids: Vec<CourseId>,
    #[serde(default)]
    user_coupon_id: Option<i64>,
    /// Points to spend (default 0).
    #[serde(default)]
    #[schema(minimum = 0)]
    points: i64,
}

impl PlaceOrderBody {
    /// SHA-256 of the canonical request (defaults filled in), for `Idempotency-Key` checks.
    fn canonical_hash(&self) -> String {
        let canonical = serde_json::json!({
            "course_ids": self.course_ids,
            "user_coupon_id": self.user_coupon_id,
            "points": self.points,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::InvalidRequest(
            "Idempotency-Key must be one header of 1-255 visible characters".into(),
        )
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > 255 {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Places an order: points deducted, the coupon locked, the order pending until its deadline
/// (or paid at once when nothing is payable).
#[utoipa::path(post, path = "/api/orders", tag = "clients",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 characters, scoped to the user: the first answer (201, 404, 409, 422) is replayed for 24 h")),
    security(("client_jwt" = [])),
    responses(
        (status = 201, description = "The order (`Idempotent-Replayed: true` on a replay)", body = Order),
        (status = 400, description = "`invalid_request`, `invalid_course_ids`, `invalid_points`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`course_not_found`, `coupon_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`course_not_on_sale`, `course_already_owned`, `course_in_pending_order`, `coupon_not_usable`, `idempotency_key_in_use`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope),
        (status = 422, description = "`coupon_expired`, `coupon_min_spend_not_met`, `insufficient_points`, `points_exceed_payable`, `idempotency_key_reused`", body = ErrorEnvelope),
        (status = 429, description = "`rate_limited` (with `Retry-After`)", body = ErrorEnvelope)))]
pub async fn place_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    // Whether the token's user exists is found out by the placement's transaction, whose first
    // statement locks the user's row (401 when there is none), so a placement costs no look-up
    // of its own; an error answered before that work asks first, as 401 ranks before it.
    let user_id = client_claim(&state, &req)?;
    let shaped = idempotency_key(&req).and_then(|key| {
        let input: PlaceOrderBody = parse_json(&body)?;
        check_shape(
            &input.course_ids,
            input.points,
            state.settings.pricing.cents_per_point,
        )?;
        Ok((key, input))
    });
    let (key, input) = match shaped {
        Ok(shaped) => shaped,
        Err(err) => {
            confirm_user(&state, user_id).await?;
            return Err(err);
        }
    };
    if key.is_some() {
        // Idempotency records belong to a user that exists.
        confirm_user(&state, user_id).await?;
    }

    let hash = input.canonical_hash();
    if let Some(key) = &key {
        match fastpath::cached_response(state.engine.core.redis.clone(), user_id, key, &hash).await
        {
            Some(Claim::Replay { status, body }) => return replay(status, body),
            Some(Claim::Reused) => return Err(ApiError::IdempotencyKeyReused),
            _ => {}
        }
    }
    if let Err(limited) = fastpath::rate_limit(
        state.engine.core.redis.clone(),
        state.settings.limits.orders_per_user_per_minute,
        user_id,
    )
    .await
    {
        if key.is_none() {
            confirm_user(&state, user_id).await?;
        }
        return Err(limited);
    }

    let placement = Placement {
        user_id,
        course_ids: input.course_ids.clone(),
        user_coupon_id: input.user_coupon_id,
        points: input.points,
        cents_per_point: state.settings.pricing.cents_per_point,
        payment_timeout_secs: state.settings.orders.payment_timeout_secs,
        node_id: state.settings.cluster.node_id.clone(),
        clock: time::now,
        journal: state.engine.core.journal,
    };

    let Some(key) = key else {
        let order = run_db(&state, move |conn| {
            orders::place_order(conn, &placement, |_, _| Ok(()))
        })
        .await?;
        return Ok(placed(&state, order).await);
    };

    match claim_or_wait(&state, user_id, &key, &hash).await? {
        Claim::Fresh => {}
        Claim::InUse => return Err(ApiError::IdempotencyKeyInUse),
        Claim::Reused => return Err(ApiError::IdempotencyKeyReused),
        Claim::Replay { status, body } => {
            remember(&state, user_id, &key, &hash, status, &body);
            return replay(status, body);
        }
    }

    let place_key = key.clone();
    let placement = run_db(&state, move |conn| {
        orders::place_order(conn, &placement, |conn, order| {
            let body = serde_json::to_string(order)
                .map_err(|e| ApiError::Internal(format!("serialising order: {e}")))?;
            Ok(idempotency::complete(
                conn, user_id, &place_key, 201, &body,
            )?)
        })
    })
    .await;
    match placement {
        Ok(order) => {
            if let Ok(body) = serde_json::to_string(&order) {
                remember(&state, user_id, &key, &hash, 201, &body);
            }
            Ok(placed(&state, order).await)
        }
        Err(err) => {
            let status = actix_web::ResponseError::status_code(&err).as_u16();
            if matches!(status, 404 | 409 | 422) {
                let envelope = err.envelope().to_string();
                let release_key = key.clone();
                let (store_key, store_body) = (key.clone(), envelope.clone());
                let stored = run_db(&state, move |conn| {
                    Ok(idempotency::complete(
                        conn,
                        user_id,
                        &store_key,
                        status,
                        &store_body,
                    )?)
                })
                .await;
                if stored.is_ok() {
                    remember(&state, user_id, &key, &hash, status, &envelope);
                }
                if let Err(store_err) = stored {
                    log::warn!(
                        "user {user_id}: could not store the idempotent response: {store_err}"
                    );
                    release_claim(&state, user_id, release_key);
                }
            } else {
                release_claim(&state, user_id, key);
            }
            Err(err)
        }
    }
}

/// A stored first response, sent again.
fn replay(status: u16, body: String) -> Result<HttpResponse, ApiError> {
    let status = actix_web::http::StatusCode::from_u16(status)
        .map_err(|e| ApiError::Internal(format!("stored status: {e}")))?;
    Ok(HttpResponse::build(status)
        .insert_header(("Idempotent-Replayed", "true"))
        .content_type("application/json")
        .body(body))
}

/// Gives an `Idempotency-Key` claim back so the client's retry can run, retrying in the
/// background while the database is unavailable (else the retry would get 409
/// `idempotency_key_in_use` until the claim is taken as abandoned).
/// Caches a stored idempotent response in Redis (best effort).
fn remember(state: &AppState, user_id: UserId, key: &str, hash: &str, status: u16, body: &str) {
    let link = state.engine.core.redis.clone();
    fastpath::remember_response(link, user_id, key, hash, status, body);
}

fn release_claim(state: &web::Data<AppState>, user_id: UserId, key: String) {
    let state = state.clone();
    actix_web::rt::spawn(async move {
        let mut delay = Duration::from_millis(100);
        for _ in 0..RELEASE_ATTEMPTS {
            let attempt_key = key.clone();
            let released = run_db(&state, move |conn| {
                Ok(idempotency::release(conn, user_id, &attempt_key)?)
            })
            .await;
            match released {
                Ok(()) => return,
                Err(err) => log::warn!(
                    "user {user_id}: could not release Idempotency-Key claim, retrying in {delay:?}: {err}"
                ),
            }
            actix_web::rt::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    });
}

/// Attempts at releasing a claim: about ten minutes of a database outage.
const RELEASE_ATTEMPTS: u32 = 300;

/// How long a duplicate waits for the first request with its key before 409
/// `idempotency_key_in_use`: concurrent identical requests then all get the first's response.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(3);

/// Claims the key; while another request holds it, waits (reading, not locking) for that
/// request's stored response, up to [`IN_FLIGHT_WAIT`].
async fn claim_or_wait(
    state: &AppState,
    user_id: UserId,
    key: &str,
    hash: &str,
) -> Result<Claim, ApiError> {
    let give_up = std::time::Instant::now() + IN_FLIGHT_WAIT;
    loop {
        let (k, h) = (key.to_string(), hash.to_string());
        let claim = run_db(state, move |conn| {
            idempotency::claim(conn, user_id, &k, &h, time::now())
        })
        .await?;
        if claim != Claim::InUse {
            return Ok(claim);
        }
        loop {
            if std::time::Instant::now() >= give_up {
                return Ok(Claim::InUse);
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            let (k, h) = (key.to_string(), hash.to_string());
            let seen = run_db(state, move |conn| {
                Ok(idempotency::peek(conn, user_id, &k, &h, time::now())?)
            })
            .await?;
            match seen {
                Claim::InUse => continue,
                // Free again: try to take it.
                Claim::Fresh => break,
                answered => return Ok(answered),
            }
        }
    }
}

/// After the placement committed: give a pending order its actor (before the client hears
/// of it), or queue the grant of one that was paid at once.
async fn placed(state: &AppState, order: Order) -> HttpResponse {
    state.engine.core.metrics.order_placed();
    log::info!(
        "order {} placed by user {}: {}",
        order.order_no,
        order.user_id,
        order.status
    );
    let pending = order.status == OrderStatus::Pending;
    let effects = if pending {
        Vec::new()
    } else {
        vec![(order.order_no.clone(), EffectKind::Grant)]
    };
    state.engine.core.after_commit(Committed::effects(effects));
    if pending {
        state
            .engine
            .track(order.order_no.to_string(), order.expires_at)
            .await;
    }
    HttpResponse::Created().json(order)
}

/// The user gives up an unpaid order.
#[utoipa::path(post, path = "/api/orders/{order_no}/cancel", tag = "clients",
    params(("order_no" = String, Path)),
    security(("client_jwt" = [])),
    responses(
        (status = 200, description = "The cancelled order (reason `user`)", body = Order),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`order_not_found` (also another user's)", body = ErrorEnvelope),
        (status = 409, description = "`order_not_pending`", body = ErrorEnvelope)))]
pub async fn cancel_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user_id = authenticate_client(&state, &req).await?;
    super::cancel(&state, path.into_inner(), Some(user_id)).await
}

/// One of the user's orders (another user's order is 404 as well).
#[utoipa::path(get, path = "/api/orders/{order_no}", tag = "clients",
    params(("order_no" = String, Path)),
    security(("client_jwt" = [])),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`order_not_found`", body = ErrorEnvelope)))]
pub async fn get_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user_id = authenticate_client(&state, &req).await?;
    let order_no = super::order_no_or_404(path.into_inner())?;
    let lookup = order_no.clone();
    let order = run_db(&state, move |conn| Ok(orders::find_order(conn, &lookup)?)).await?;
    match order {
        Some(order) if order.user_id == user_id => Ok(HttpResponse::Ok().json(order)),
        _ => Err(ApiError::OrderNotFound(order_no)),
    }
}

/// The caller: points, coupons, owned courses.
#[utoipa::path(get, path = "/api/me", tag = "clients",
    security(("client_jwt" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let user_id = authenticate_client(&state, &req).await?;
    let me = run_db(&state, move |conn| catalog::me(conn, user_id)).await?;
    Ok(HttpResponse::Ok().json(me))
}

/// The catalog a student buys from, newest course first.
#[utoipa::path(get, path = "/api/courses", tag = "clients",
    params(super::paging::PageOnly),
    security(("client_jwt" = [])),
    responses(
        (status = 200, description = "A page of courses", body = List<Course>),
        (status = 400, description = "A bad `limit` or cursor", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn list_courses(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    authenticate_client(&state, &req).await?;
    super::course_page(&state, &req).await
}

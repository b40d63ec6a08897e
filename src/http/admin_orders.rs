//! Admin routes over orders and actors: live actor state, order and effect listings, late
//! payments, force-cancel, and retrying a dead-lettered effect.

use crate::redis::cluster::{describe_nodes, Beat};
use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::paging::{id_cursor, order_no_cursor, query, PageOnly, Paging};
use super::{parse_id, require_admin, run_db, AppState};
use crate::actors::Committed;
use crate::db::models::Order;
use crate::db::outbox::{EffectRow, EffectWithOrder};
use crate::db::payments::LatePayment;
use crate::db::{orders, outbox, payments};
use crate::domain::ids::UserId;
use crate::domain::states::{EffectStatus, OrderStatus};
use crate::domain::time;
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::paging::List;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OrderFilter {
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1)]
    user_id: Option<String>,
    /// 1-100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_after` of the page before.
    after: Option<String>,
}

/// A list's `status` filter: absent, or one the list knows (else 400).
pub fn status_filter<T>(
    text: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    text.map(|s| parse(s).ok_or_else(|| ApiError::InvalidRequest(format!("unknown status {s:?}"))))
        .transpose()
}

/// Orders, newest first, by status and user.
#[utoipa::path(get, path = "/admin/orders", tag = "admins", params(OrderFilter),
    security(("admin_token" = [])),
    responses((status = 200, description = "A page of orders", body = List<Order>),
        (status = 400, description = "A bad `limit`, filter or cursor", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn list_orders(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let filter: OrderFilter = query(&req)?;
    let paging = Paging::parse(filter.limit.as_deref())?;
    let search = OrderSearch::parse(
        filter.status.as_deref(),
        filter.user_id.as_deref(),
        filter.after.as_deref(),
    )?;
    let rows = orders_page(&state, search, paging.fetch()).await?;
    Ok(paging.respond(rows, |o| o.order_no.to_string()))
}

/// What the order list is filtered by, checked: `GET /admin/orders` and the dashboard's
/// orders page.
pub struct OrderSearch {
    pub status: Option<OrderStatus>,
    pub user_id: Option<UserId>,
    pub after: Option<String>,
}

impl OrderSearch {
    /// 400 for an unknown status, a user id that is not an integer, or a cursor the list
    /// never issued.
    pub fn parse(
        status: Option<&str>,
        user_id: Option<&str>,
        after: Option<&str>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            status: status_filter(status, OrderStatus::parse)?,
            user_id: user_id
                .map(|u| parse_id(u, "user_id").map(UserId))
                .transpose()?,
            after: order_no_cursor(after)?,
        })
    }
}

/// Up to `fetch` orders, newest first, matching `search`.
pub async fn orders_page(
    state: &AppState,
    search: OrderSearch,
    fetch: i64,
) -> Result<Vec<Order>, ApiError> {
    run_db(state, move |conn| {
        Ok(orders::page(
            conn,
            search.status,
            search.user_id,
            search.after.as_deref(),
            fetch,
        )?)
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EffectView {
    kind: crate::domain::states::EffectKind,
    status: EffectStatus,
    attempts: i32,
    #[schema(required = true)]
    last_error: Option<String>,
}

/// `GET /admin/orders/{order_no}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OrderDetail {
    order: Order,
    actor: ActorView,
    effects: Vec<EffectView>,
    /// Payments started with a provider, in the order they were started.
    payments: Vec<super::payments::Payment>,
}

/// An order's actor in the answering process; every field but `alive` is null when it has
/// none.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorView {
    pub alive: bool,
    #[schema(required = true)]
    pub node_id: Option<String>,
    #[schema(required = true)]
    pub state: Option<crate::actors::ActorState>,
    #[serde(with = "crate::domain::time::serde_ts_opt")]
    #[schema(required = true)]
    pub deadline: Option<chrono::NaiveDateTime>,
    #[schema(required = true)]
    pub remaining_ms: Option<i64>,
    #[schema(required = true)]
    pub restarts: Option<u32>,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

/// The stored order, its live actor in this process, its effects.
#[utoipa::path(get, path = "/admin/orders/{order_no}", tag = "admins",
    params(("order_no" = String, Path)),
    security(("admin_token" = [])),
    responses((status = 200, description = "The order with its actor and effects", body = OrderDetail),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`order_not_found`", body = ErrorEnvelope)))]
pub async fn get_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let inspection = inspect_order(&state, path.into_inner()).await?;
    let effects: Vec<EffectView> = inspection
        .effects
        .into_iter()
        .map(|e| EffectView {
            kind: e.kind,
            status: e.status,
            attempts: e.attempts,
            last_error: e.last_error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(OrderDetail {
        order: inspection.order,
        actor: inspection.actor,
        effects,
        payments: inspection.payments,
    }))
}

/// An order as admins look at it: stored, its actor in this process, its effects.
pub struct OrderInspection {
    pub order: Order,
    pub actor: ActorView,
    pub effects: Vec<EffectRow>,
    pub payments: Vec<super::payments::Payment>,
}

/// The stored order (404 `order_not_found`), then its live actor here, and its effects:
/// `GET /admin/orders/{order_no}` and the dashboard's order page.
pub async fn inspect_order(
    state: &AppState,
    order_no: String,
) -> Result<OrderInspection, ApiError> {
    let order_no = super::order_no_or_404(order_no)?;
    let lookup = order_no.clone();
    let (order, effects, payments) = run_db(state, move |conn| {
        let order =
            orders::find_order(conn, &lookup)?.ok_or(ApiError::OrderNotFound(lookup.clone()))?;
        let effects = outbox::of_order(conn, &lookup)?;
        let payments = crate::db::provider_payments::of_order(conn, &lookup)?;
        Ok((order, effects, payments))
    })
    .await?;
    let actor = actor_view(state, &order_no).await;
    Ok(OrderInspection {
        order,
        actor,
        effects,
        payments,
    })
}

/// The order's actor in this process, if it has one (nothing is read from the database).
pub async fn actor_view(state: &AppState, order_no: &str) -> ActorView {
    match state.engine.inspect(order_no).await {
        Some(snapshot) if snapshot.alive => ActorView {
            alive: true,
            node_id: Some(snapshot.node_id),
            state: Some(snapshot.state),
            deadline: Some(snapshot.deadline),
            remaining_ms: Some(snapshot.remaining_ms),
            restarts: Some(snapshot.restarts),
            last_error: snapshot.last_error,
        },
        _ => ActorView {
            alive: false,
            node_id: None,
            state: None,
            deadline: None,
            remaining_ms: None,
            restarts: None,
            last_error: None,
        },
    }
}

/// Force-cancels a pending order (reason `admin`).
#[utoipa::path(post, path = "/admin/orders/{order_no}/cancel", tag = "admins",
    params(("order_no" = String, Path)),
    security(("admin_token" = [])),
    responses((status = 200, description = "The cancelled order", body = Order),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`order_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`order_not_pending`", body = ErrorEnvelope)))]
pub async fn cancel_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    super::cancel(&state, path.into_inner(), None).await
}

/// `GET /admin/actors`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorsView {
    pub node_id: String,
    pub live_actors: usize,
    pub armed_timers: i64,
    pub actors_by_state: ActorsByState,
    /// Every status, with 0 for none.
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub orders_by_status: BTreeMap<&'static str, i64>,
    pub effects: Backlog,
    pub events: EventBacklog,
    /// The processes sharing the database, this one included.
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorsByState {
    pub armed: i64,
    pub transitioning: i64,
    pub stopped: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Backlog {
    pub pending: i64,
    pub dead_lettered: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventBacklog {
    pub unpublished: i64,
}

/// Live actors of this process, orders by status, the outbox backlogs, the nodes.
#[utoipa::path(get, path = "/admin/actors", tag = "admins",
    security(("admin_token" = [])),
    responses((status = 200, description = "Live actor state", body = ActorsView),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn actors(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    Ok(HttpResponse::Ok().json(actors_view(&state).await?))
}

/// `GET /admin/actors` and the dashboard's overview.
pub async fn actors_view(state: &AppState) -> Result<ActorsView, ApiError> {
    // The cluster's beat (adoptions) before the actor counts: an adoption shown here already
    // has its actors counted below.
    let beat = state.engine.core.cluster.as_ref().map(|c| c.beat());
    let stats = state.engine.stats().await?;
    let (by_status, (pending_effects, dead_lettered), by_owner, unpublished) =
        run_db(state, |conn| {
            Ok((
                orders::count_by_status(conn)?,
                outbox::backlog(conn)?,
                orders::pending_by_owner(conn)?,
                crate::db::journal::backlog(conn)?,
            ))
        })
        .await?;
    let core = state.engine.core.clone();
    let (me, known) = match (core.cluster.clone(), beat) {
        (Some(cluster), Some(beat)) => {
            let known = web::block(move || cluster.nodes().ok()).await?;
            (beat, known)
        }
        _ => (
            Beat {
                node_id: state.settings.cluster.node_id.clone(),
                started_at: core.started_at,
                adopted_orders: 0,
                adoptions: Vec::new(),
            },
            None,
        ),
    };
    let nodes = describe_nodes(&me, stats.live_actors, by_owner, known);
    let mut orders_by_status: BTreeMap<&str, i64> =
        OrderStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (status, count) in &by_status {
        orders_by_status.insert(status.as_str(), *count);
    }
    let stopped = (stats.live_actors as i64 - stats.armed - stats.transitioning).max(0);
    let node_id = &state.settings.cluster.node_id;
    Ok(ActorsView {
        node_id: node_id.clone(),
        live_actors: stats.live_actors,
        armed_timers: stats.armed,
        actors_by_state: ActorsByState {
            armed: stats.armed,
            transitioning: stats.transitioning,
            stopped,
        },
        orders_by_status,
        effects: Backlog {
            pending: pending_effects,
            dead_lettered,
        },
        events: EventBacklog { unpublished },
        nodes,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EffectFilter {
    #[param(value_type = Option<EffectStatus>)]
    status: Option<String>,
    /// 1-100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_after` of the page before.
    after: Option<String>,
}

/// Effects with their orders, newest first.
#[utoipa::path(get, path = "/admin/effects", tag = "admins", params(EffectFilter),
    security(("admin_token" = [])),
    responses((status = 200, description = "A page of effects", body = List<EffectWithOrder>),
        (status = 400, description = "A bad `limit`, filter or cursor", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn list_effects(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let filter: EffectFilter = query(&req)?;
    let paging = Paging::parse(filter.limit.as_deref())?;
    let status = status_filter(filter.status.as_deref(), EffectStatus::parse)?;
    let after = id_cursor(filter.after.as_deref())?;
    let rows = effects_page(&state, status, after, paging.fetch()).await?;
    Ok(paging.respond(rows, |e| e.effect.id.to_string()))
}

/// Up to `fetch` effects with their orders, newest first, of one status or all.
pub async fn effects_page(
    state: &AppState,
    status: Option<EffectStatus>,
    after: Option<i64>,
    fetch: i64,
) -> Result<Vec<EffectWithOrder>, ApiError> {
    run_db(state, move |conn| {
        let effects = outbox::page(conn, status, after, fetch)?;
        effects
            .into_iter()
            .map(|effect| {
                let order =
                    orders::find_order(conn, effect.order_no.as_str())?.ok_or_else(|| {
                        ApiError::Internal(format!("effect {} has no order", effect.id))
                    })?;
                Ok(outbox::EffectWithOrder { effect, order })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
}

/// A dead-lettered effect gets a fresh set of attempts.
#[utoipa::path(post, path = "/admin/effects/{id}/retry", tag = "admins",
    params(("id" = i64, Path)),
    security(("admin_token" = [])),
    responses((status = 200, description = "The effect, re-queued", body = EffectRow),
        (status = 400, description = "An id that is not an integer", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`effect_not_found`", body = ErrorEnvelope),
        (status = 409, description = "`effect_not_dead_lettered`", body = ErrorEnvelope)))]
pub async fn retry_effect(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let id = parse_id(&path, "effect id")?;
    Ok(HttpResponse::Ok().json(retry(&state, id).await?))
}

/// Re-queues a dead-lettered effect with a fresh set of attempts (404 `effect_not_found`,
/// 409 `effect_not_dead_lettered` otherwise) and wakes its effect actor:
/// `POST /admin/effects/{id}/retry` and the dashboard's Retry button.
pub async fn retry(state: &AppState, id: i64) -> Result<EffectRow, ApiError> {
    let effect = run_db(state, move |conn| {
        match outbox::retry(conn, id, time::now())? {
            Some(effect) => Ok(effect),
            None if outbox::exists(conn, id)? => Err(ApiError::EffectNotDeadLettered(id)),
            None => Err(ApiError::EffectNotFound(id)),
        }
    })
    .await?;
    state.engine.core.after_commit(Committed::effects(vec![(
        effect.order_no.clone(),
        effect.kind,
    )]));
    log::info!(
        "admin retried effect {id} ({} of order {})",
        effect.kind,
        effect.order_no
    );
    Ok(effect)
}

/// Successes that came too late or twice; each needs a refund.
#[utoipa::path(get, path = "/admin/late-payments", tag = "admins", params(PageOnly),
    security(("admin_token" = [])),
    responses((status = 200, description = "A page of late and double payments", body = List<LatePayment>),
        (status = 400, description = "A bad `limit`, filter or cursor", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn late_payments(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let (paging, after) = PageOnly::parse(&req)?;
    let rows = late_payments_page(&state, after, paging.fetch()).await?;
    Ok(paging.respond(rows, |p| p.id.to_string()))
}

/// Up to `fetch` late and double payments, newest first.
pub async fn late_payments_page(
    state: &AppState,
    after: Option<i64>,
    fetch: i64,
) -> Result<Vec<LatePayment>, ApiError> {
    run_db(state, move |conn| {
        Ok(payments::late_payments(conn, after, fetch)?)
    })
    .await
}

//! Admin routes over orders and actors: live actor state, order and effect listings, late
//! payments, force-cancel, and retrying a dead-lettered effect.

use crate::redis::cluster::{describe_nodes, Beat};
use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::paging::{id_cursor, order_no_cursor, query, Paging};
use super::{parse_id, require_admin, run_db, AppState};
use crate::actors::Committed;
use crate::db::{orders, outbox, payments};
use crate::domain::states::{EffectStatus, OrderStatus};
use crate::domain::time;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFilter {
    status: Option<String>,
    user_id: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// A list's `status` filter: absent, or one the list knows (else 400).
fn status_filter<T>(
    text: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    text.map(|s| parse(s).ok_or_else(|| ApiError::InvalidRequest(format!("unknown status {s:?}"))))
        .transpose()
}

/// `GET /admin/orders?status=&user_id=&limit=&after=`
pub async fn list_orders(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let filter: OrderFilter = query(&req)?;
    let paging = Paging::parse(filter.limit.as_deref())?;
    let status = status_filter(filter.status.as_deref(), OrderStatus::parse)?;
    let user_id = filter
        .user_id
        .as_deref()
        .map(|u| parse_id(u, "user_id").map(crate::domain::ids::UserId))
        .transpose()?;
    let after = order_no_cursor(filter.after.as_deref())?;
    let fetch = paging.fetch();
    let rows = run_db(&state, move |conn| {
        Ok(orders::page(
            conn,
            status,
            user_id,
            after.as_deref(),
            fetch,
        )?)
    })
    .await?;
    Ok(paging.respond(rows, |o| o.order_no.to_string()))
}

#[derive(Serialize)]
struct EffectView {
    kind: crate::domain::states::EffectKind,
    status: EffectStatus,
    attempts: i32,
    last_error: Option<String>,
}

/// `GET /admin/orders/{order_no}`: the stored order, its live actor in this process, its effects.
pub async fn get_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let order_no = super::order_no_or_404(path.into_inner())?;
    let lookup = order_no.clone();
    let (order, effects) = run_db(&state, move |conn| {
        let order =
            orders::find_order(conn, &lookup)?.ok_or(ApiError::OrderNotFound(lookup.clone()))?;
        Ok((order, outbox::of_order(conn, &lookup)?))
    })
    .await?;
    let actor = match state.engine.inspect(&order_no).await {
        Some(snapshot) if snapshot.alive => serde_json::to_value(snapshot)
            .map_err(|e| ApiError::Internal(format!("actor snapshot: {e}")))?,
        _ => json!({"alive": false, "node_id": null, "state": null, "deadline": null,
                    "remaining_ms": null, "restarts": null, "last_error": null}),
    };
    let effects: Vec<EffectView> = effects
        .into_iter()
        .map(|e| EffectView {
            kind: e.kind,
            status: e.status,
            attempts: e.attempts,
            last_error: e.last_error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"order": order, "actor": actor, "effects": effects})))
}

/// `POST /admin/orders/{order_no}/cancel`
pub async fn cancel_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    super::cancel(&state, path.into_inner(), None).await
}

/// `GET /admin/actors`
pub async fn actors(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    // The cluster's beat (adoptions) before the actor counts: an adoption shown here already
    // has its actors counted below.
    let beat = state.engine.core.cluster.as_ref().map(|c| c.beat());
    let stats = state.engine.stats().await?;
    let (by_status, (pending_effects, dead_lettered), by_owner, unpublished) =
        run_db(&state, |conn| {
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
    Ok(HttpResponse::Ok().json(json!({
        "node_id": node_id,
        "live_actors": stats.live_actors,
        "armed_timers": stats.armed,
        "actors_by_state": {"armed": stats.armed, "transitioning": stats.transitioning, "stopped": stopped},
        "orders_by_status": orders_by_status,
        "effects": {"pending": pending_effects, "dead_lettered": dead_lettered},
        "events": {"unpublished": unpublished},
        "nodes": nodes,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EffectFilter {
    status: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /admin/effects?status=&limit=&after=`: effects with their orders, newest first.
pub async fn list_effects(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let filter: EffectFilter = query(&req)?;
    let paging = Paging::parse(filter.limit.as_deref())?;
    let status = status_filter(filter.status.as_deref(), EffectStatus::parse)?;
    let after = id_cursor(filter.after.as_deref())?;
    let fetch = paging.fetch();
    let rows = run_db(&state, move |conn| {
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
    .await?;
    Ok(paging.respond(rows, |e| e.effect.id.to_string()))
}

/// `POST /admin/effects/{id}/retry`: a dead-lettered effect gets a fresh set of attempts.
pub async fn retry_effect(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let id = parse_id(&path, "effect id")?;
    let effect = run_db(&state, move |conn| {
        Ok(outbox::retry(conn, id, time::now())?)
    })
    .await?
    .ok_or(ApiError::EffectNotDeadLettered(id))?;
    state.engine.core.after_commit(Committed::effects(vec![(
        effect.order_no.clone(),
        effect.kind,
    )]));
    log::info!(
        "admin retried effect {id} ({} of order {})",
        effect.kind,
        effect.order_no
    );
    Ok(HttpResponse::Ok().json(effect))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageOnly {
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /admin/late-payments`: successes that came too late or twice; each needs a refund.
pub async fn late_payments(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let filter: PageOnly = query(&req)?;
    let paging = Paging::parse(filter.limit.as_deref())?;
    let after = id_cursor(filter.after.as_deref())?;
    let fetch = paging.fetch();
    let rows = run_db(&state, move |conn| {
        Ok(payments::late_payments(conn, after, fetch)?)
    })
    .await?;
    Ok(paging.respond(rows, |p| p.id.to_string()))
}

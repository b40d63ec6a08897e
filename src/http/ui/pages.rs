//! The dashboard's pages and its actions. Each page reads through the JSON admin API's data
//! functions ([`admin_orders`], [`admin_deliveries`], [`admin_schedules`]); Cancel and the
//! two Retry buttons call the very functions behind `POST /admin/orders/{order_no}/cancel`,
//! `POST /admin/effects/{id}/retry` and `POST /admin/deliveries/{id}/retry`, then 303 back to
//! their page with the result shown (POST-redirect-GET).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::error::UiError;
use super::session::{self, Session};
use super::view::{self, Chart, NodeRow};
use super::{html, see_other};
use crate::actors::DeadlineBuckets;
use crate::db::deliveries::{self, Delivery};
use crate::db::journal::{self, EventRow};
use crate::db::models::Order;
use crate::db::outbox::{EffectRow, EffectWithOrder};
use crate::db::payments::{self, LatePayment, PaymentEvent};
use crate::db::provider_payments::Payment;
use crate::db::schedules::Run;
use crate::domain::canonical_id;
use crate::domain::states::{EffectStatus, OrderStatus};
use crate::error::ApiError;
use crate::http::admin_deliveries;
use crate::http::admin_orders::{self, ActorView, ActorsView, OrderSearch};
use crate::http::admin_schedules::{self, ScheduleView};
use crate::http::paging::{id_cursor, query, Paging};
use crate::http::{cancel_order as cancel, run_db, AppState};

/// Rows a dashboard list shows per page.
const PAGE_ROWS: i64 = 50;
/// The overview's deadline chart: this many windows of this width.
const CHART_WINDOWS: usize = 10;
const CHART_WINDOW: Duration = Duration::from_secs(60);

/// What the layout needs: the session's CSRF token (for the sign-out form) and which page
/// is open.
pub struct Nav {
    pub csrf_token: String,
    pub active: &'static str,
}

impl Nav {
    fn of(session: &Session, active: &'static str) -> Self {
        Self {
            csrf_token: session.csrf_token.clone(),
            active,
        }
    }
}

/// An order number as a path segment.
pub fn path_segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// A query string's optional field: a form's empty input means "not given".
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A dashboard list's paging: [`PAGE_ROWS`] a page, by the JSON list's own cursor.
fn list_paging() -> Result<Paging, ApiError> {
    Paging::parse(Some(&PAGE_ROWS.to_string()))
}

/// The page of `rows` (read with `paging.fetch()`) and the link to the next one, which
/// `link` makes from its cursor.
fn paged<T>(
    paging: &Paging,
    rows: Vec<T>,
    cursor: impl Fn(&T) -> String,
    link: impl Fn(&str) -> String,
) -> (Vec<T>, Option<String>) {
    let page = paging.page(rows, cursor);
    (page.data, page.next_after.as_deref().map(link))
}

// ---------------------------------------------------------------------------------------------
// Pages with a live part

/// A page whose block `live` htmx polls at a path of its own, every two seconds: the
/// overview, the schedules pages.
pub trait LivePage: Template + Sized {
    /// Its entry in the nav.
    const ACTIVE: &'static str;

    /// Reads the page `req` asks for (its path may name what it shows).
    async fn load(state: &AppState, req: &HttpRequest, nav: Nav) -> Result<Self, UiError>;

    /// Its block `live` alone (askama's `blocks = ["live"]`).
    fn live(&self) -> impl Template + '_;
}

/// A [`LivePage`].
pub async fn page<P: LivePage>(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    html(&P::load(&state, &req, Nav::of(&session, P::ACTIVE)).await?)
}

/// A [`LivePage`]'s live part, polled by htmx.
pub async fn live_part<P: LivePage>(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    html(
        &P::load(&state, &req, Nav::of(&session, P::ACTIVE))
            .await?
            .live(),
    )
}

// ---------------------------------------------------------------------------------------------
// Overview

/// What the overview shows and refreshes every two seconds.
pub struct Live {
    pub actors: ActorsView,
    pub chart: Chart,
    pub nodes: Vec<NodeRow>,
    pub refreshed_at: String,
}

impl Live {
    async fn load(state: &AppState) -> Result<Self, ApiError> {
        let actors = admin_orders::actors_view(state).await?;
        let buckets: DeadlineBuckets = state
            .engine
            .upcoming_deadlines(CHART_WINDOW, CHART_WINDOWS)
            .await?;
        Ok(Self {
            chart: Chart::of(&buckets),
            nodes: actors.nodes.iter().map(NodeRow::of).collect(),
            actors,
            refreshed_at: view::at_text(crate::domain::time::now()),
        })
    }
}

/// `GET /admin/ui` ([`page`]), and its live part `GET /admin/ui/live` ([`live_part`]).
#[derive(Template)]
#[template(path = "overview.html", blocks = ["live"])]
pub struct OverviewPage {
    nav: Nav,
    live: Live,
}

impl LivePage for OverviewPage {
    const ACTIVE: &'static str = "overview";

    async fn load(state: &AppState, _req: &HttpRequest, nav: Nav) -> Result<Self, UiError> {
        Ok(Self {
            live: Live::load(state).await?,
            nav,
        })
    }

    fn live(&self) -> impl Template + '_ {
        self.as_live()
    }
}

// ---------------------------------------------------------------------------------------------
// Orders

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrdersQuery {
    status: Option<String>,
    user_id: Option<String>,
    /// Find one order: 303 to its page.
    order_no: Option<String>,
    after: Option<String>,
}

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    nav: Nav,
    orders: Vec<Order>,
    statuses: &'static [OrderStatus],
    status: String,
    user_id: String,
    /// The next page's link, when there is one.
    older: Option<String>,
    first_page: bool,
}

/// `GET /admin/ui/orders?status=&user_id=&order_no=&after=`.
pub async fn orders(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    let filter: OrdersQuery = query(&req)?;
    if let Some(order_no) = given(&filter.order_no) {
        return Ok(see_other(format!(
            "/admin/ui/orders/{}",
            path_segment(order_no)
        )));
    }
    let (status, user_id) = (given(&filter.status), given(&filter.user_id));
    let search = OrderSearch::parse(status, user_id, given(&filter.after))?;
    let paging = list_paging()?;
    let rows = admin_orders::orders_page(&state, search, paging.fetch()).await?;
    let (orders, older) = paged(
        &paging,
        rows,
        |o| o.order_no.to_string(),
        |after| {
            let query = serde_urlencoded::to_string([
                ("status", status.unwrap_or_default()),
                ("user_id", user_id.unwrap_or_default()),
                ("after", after),
            ])
            .unwrap_or_default();
            format!("/admin/ui/orders?{query}")
        },
    );
    html(&OrdersPage {
        nav: Nav::of(&session, "orders"),
        orders,
        statuses: OrderStatus::ALL,
        status: status.unwrap_or_default().to_string(),
        user_id: user_id.unwrap_or_default().to_string(),
        older,
        first_page: filter.after.is_none(),
    })
}

// ---------------------------------------------------------------------------------------------
// One order

/// What the order page says after an action, from its `done` query parameter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderQuery {
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    nav: Nav,
    order: Order,
    order_no: String,
    actor: ActorView,
    effects: Vec<EffectRow>,
    deliveries: Vec<Delivery>,
    /// Whether any webhook endpoint is configured (what an empty deliveries list means).
    webhooks_on: bool,
    /// The payments started with a provider (`GET /admin/orders/{order_no}`'s `payments`).
    provider_payments: Vec<Payment>,
    /// Every stored callback and provider notification.
    payments: Vec<PaymentEvent>,
    /// Its late and double payments, each with its refund.
    late: Vec<LatePayment>,
    events: Vec<EventRow>,
    can_cancel: bool,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "order.html", block = "actor")]
struct OrderActor {
    order_no: String,
    actor: ActorView,
}

/// `GET /admin/ui/orders/{order_no}`: every field, the live actor (refreshed every second),
/// effects, webhook deliveries, provider payments, callbacks, late payments with their
/// refunds, and unpublished events.
pub async fn order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    let notice = match query::<OrderQuery>(&req)?.done.as_deref() {
        None => None,
        Some("cancelled") => Some("Order cancelled (reason admin)."),
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!("unknown done={other:?}")).into())
        }
    };
    let inspection = admin_orders::inspect_order(&state, path.into_inner()).await?;
    let order_no = inspection.order.order_no.to_string();
    let lookup = order_no.clone();
    let (payments, late, events, deliveries) = run_db(&state, move |conn| {
        Ok((
            payments::of_order(conn, &lookup)?,
            payments::late_payments_of_order(conn, &lookup)?,
            journal::of_order(conn, &lookup)?,
            deliveries::of_order(conn, &lookup)?,
        ))
    })
    .await?;
    html(&OrderPage {
        nav: Nav::of(&session, "orders"),
        can_cancel: inspection.order.status == OrderStatus::Pending,
        order: inspection.order,
        order_no,
        actor: inspection.actor,
        effects: inspection.effects,
        deliveries,
        webhooks_on: !state.settings.webhooks.endpoints.is_empty(),
        provider_payments: inspection.payments,
        payments,
        late,
        events,
        notice,
    })
}

/// `GET /admin/ui/orders/{order_no}/actor`: the order page's actor panel, polled by htmx.
pub async fn order_actor(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    session::current(&state, &req).await?;
    let order_no = crate::http::order_no_or_404(path.into_inner())?;
    let actor = admin_orders::actor_view(&state, &order_no).await;
    html(&OrderActor { order_no, actor })
}

/// `POST /admin/ui/orders/{order_no}/cancel` (CSRF-protected): the admin cancel, then back
/// to the order page. A non-pending order is the 409 page; nothing changes.
pub async fn cancel_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, UiError> {
    session::current_with_csrf(&state, &req, body).await?;
    let order = cancel(&state, path.into_inner(), None).await?;
    log::info!("order {}: cancelled from the dashboard", order.order_no);
    Ok(see_other(format!(
        "/admin/ui/orders/{}?done=cancelled",
        path_segment(order.order_no.as_str())
    )))
}

// ---------------------------------------------------------------------------------------------
// Lists with status tabs and Retry buttons: effects and webhook deliveries

/// The query of a list with status tabs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TabbedQuery {
    /// `dead_lettered` (the default), `pending`, `done`, or `all`.
    status: Option<String>,
    after: Option<String>,
    /// The row a Retry just re-queued.
    retried: Option<String>,
}

/// The tabs of the effects and deliveries pages, in order: the outbox's statuses and `all`.
pub const STATUS_TABS: [(&str, &str); 4] = [
    ("dead_lettered", "Dead letters"),
    ("pending", "Pending"),
    ("done", "Done"),
    ("all", "All"),
];

/// One page of a tabbed list, as its template (`tabbed.html`) shows it.
pub struct Tabbed<T> {
    /// The list's page: its tabs, pager and Retry forms lead from here.
    pub path: &'static str,
    pub rows: Vec<T>,
    /// The tab: a status, or `all`.
    pub tab: &'static str,
    /// The next page's link, when there is one.
    pub older: Option<String>,
    /// The row a Retry just re-queued (the notice).
    pub retried: Option<i64>,
}

impl<T> Tabbed<T> {
    /// The page at `path` its query asks for: `load(status, after, fetch)` reads the rows,
    /// newest first, and `cursor` names a row for the "Older" link.
    async fn load<Fut>(
        req: &HttpRequest,
        path: &'static str,
        load: impl FnOnce(Option<EffectStatus>, Option<i64>, i64) -> Fut,
        cursor: impl Fn(&T) -> String,
    ) -> Result<Self, ApiError>
    where
        Fut: std::future::Future<Output = Result<Vec<T>, ApiError>>,
    {
        let filter: TabbedQuery = query(req)?;
        let (tab, status) = match given(&filter.status).unwrap_or("dead_lettered") {
            "all" => ("all", None),
            other => {
                let status = admin_orders::status_filter(Some(other), EffectStatus::parse)?;
                (status.map_or("all", EffectStatus::as_str), status)
            }
        };
        let retried = given(&filter.retried)
            .map(|id| {
                canonical_id(id)
                    .ok_or_else(|| ApiError::InvalidRequest(format!("retried={id:?} is not an id")))
            })
            .transpose()?;
        let after = id_cursor(given(&filter.after))?;
        let paging = list_paging()?;
        let rows = load(status, after, paging.fetch()).await?;
        let (rows, older) = paged(&paging, rows, cursor, |after| {
            format!("{path}?status={tab}&after={after}")
        });
        Ok(Self {
            path,
            rows,
            tab,
            older,
            retried,
        })
    }
}

/// After a Retry of row `id`: 303 back to the dead letters of the list at `path`, which say
/// it was re-queued.
fn back_after_retry(path: &str, id: i64) -> HttpResponse {
    see_other(format!("{path}?status=dead_lettered&retried={id}"))
}

// ---------------------------------------------------------------------------------------------
// Effects

const EFFECTS_PATH: &str = "/admin/ui/effects";

#[derive(Template)]
#[template(path = "effects.html")]
struct EffectsPage {
    nav: Nav,
    list: Tabbed<EffectWithOrder>,
}

/// `GET /admin/ui/effects?status=&after=`: dead letters first, each with a Retry button.
pub async fn effects(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    let list = Tabbed::load(
        &req,
        EFFECTS_PATH,
        |status, after, fetch| admin_orders::effects_page(&state, status, after, fetch),
        |e| e.effect.id.to_string(),
    )
    .await?;
    html(&EffectsPage {
        nav: Nav::of(&session, "effects"),
        list,
    })
}

/// `POST /admin/ui/effects/{id}/retry` (CSRF-protected): the admin retry, then back to the
/// dead letters with the result shown. Not dead-lettered: the 409 page; no such effect: 404.
pub async fn retry_effect(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, UiError> {
    session::current_with_csrf(&state, &req, body).await?;
    let id = crate::http::parse_id(&path, "effect id")?;
    let effect = admin_orders::retry(&state, id).await?;
    log::info!(
        "order {}: {} effect {id} retried from the dashboard",
        effect.order_no,
        effect.kind
    );
    Ok(back_after_retry(EFFECTS_PATH, id))
}

// ---------------------------------------------------------------------------------------------
// Webhook deliveries

const DELIVERIES_PATH: &str = "/admin/ui/deliveries";

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    nav: Nav,
    list: Tabbed<Delivery>,
}

/// `GET /admin/ui/deliveries?status=&after=`: webhook deliveries, dead letters first, each
/// with a Retry button.
pub async fn deliveries(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    let list = Tabbed::load(
        &req,
        DELIVERIES_PATH,
        |status, after, fetch| admin_deliveries::deliveries_page(&state, status, after, fetch),
        |d| d.id.to_string(),
    )
    .await?;
    html(&DeliveriesPage {
        nav: Nav::of(&session, "deliveries"),
        list,
    })
}

/// `POST /admin/ui/deliveries/{id}/retry` (CSRF-protected): the admin retry of
/// `POST /admin/deliveries/{id}/retry`, then back to the dead letters with the result shown.
/// Not dead-lettered: the 409 page; no such delivery: 404.
pub async fn retry_delivery(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, UiError> {
    session::current_with_csrf(&state, &req, body).await?;
    let id = crate::http::parse_id(&path, "delivery id")?;
    admin_deliveries::retry(&state, id).await?;
    Ok(back_after_retry(DELIVERIES_PATH, id))
}

// ---------------------------------------------------------------------------------------------
// Late payments

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LateQuery {
    after: Option<String>,
}

#[derive(Template)]
#[template(path = "late_payments.html")]
struct LatePaymentsPage {
    nav: Nav,
    payments: Vec<LatePayment>,
    older: Option<String>,
}

/// `GET /admin/ui/late-payments?after=`.
pub async fn late_payments(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let session = session::current(&state, &req).await?;
    let filter: LateQuery = query(&req)?;
    let after = id_cursor(given(&filter.after))?;
    let paging = list_paging()?;
    let rows = admin_orders::late_payments_page(&state, after, paging.fetch()).await?;
    let (payments, older) = paged(
        &paging,
        rows,
        |p| p.id.to_string(),
        |after| format!("/admin/ui/late-payments?after={after}"),
    );
    html(&LatePaymentsPage {
        nav: Nav::of(&session, "late"),
        payments,
        older,
    })
}

// ---------------------------------------------------------------------------------------------
// Schedules

/// Runs a schedule's page shows.
pub const SCHEDULE_RUNS: i64 = 50;

/// `GET /admin/ui/schedules`: every configured schedule with its next due time and latest
/// run; its live part is `GET /admin/ui/live/schedules`.
#[derive(Template)]
#[template(path = "schedules.html", blocks = ["live"])]
pub struct SchedulesPage {
    nav: Nav,
    schedules: Vec<ScheduleView>,
    refreshed_at: String,
}

impl LivePage for SchedulesPage {
    const ACTIVE: &'static str = "schedules";

    async fn load(state: &AppState, _req: &HttpRequest, nav: Nav) -> Result<Self, UiError> {
        // All of them: they come from config.toml, so they are few.
        let schedules = admin_schedules::schedules_page(state, None, i64::MAX).await?;
        Ok(Self {
            nav,
            schedules,
            refreshed_at: view::at_text(crate::domain::time::now()),
        })
    }

    fn live(&self) -> impl Template + '_ {
        self.as_live()
    }
}

/// `GET /admin/ui/schedules/{name}`: one schedule and its latest [`SCHEDULE_RUNS`] runs,
/// newest first; its live part is `GET /admin/ui/live/schedules/{name}`. The 404 page for a
/// name no `[[schedules]]` entry has.
#[derive(Template)]
#[template(path = "schedule.html", blocks = ["live"])]
pub struct SchedulePage {
    nav: Nav,
    schedule: ScheduleView,
    runs: Vec<Run>,
    refreshed_at: String,
}

impl LivePage for SchedulePage {
    const ACTIVE: &'static str = "schedules";

    async fn load(state: &AppState, req: &HttpRequest, nav: Nav) -> Result<Self, UiError> {
        let name = req.match_info().get("name").unwrap_or_default();
        let (schedule, runs) = admin_schedules::schedule_runs(state, name, SCHEDULE_RUNS)
            .await?
            .ok_or_else(|| UiError::ScheduleNotConfigured(name.to_string()))?;
        Ok(Self {
            nav,
            schedule,
            runs,
            refreshed_at: view::at_text(crate::domain::time::now()),
        })
    }

    fn live(&self) -> impl Template + '_ {
        self.as_live()
    }
}

/// Any other path under `/admin/ui`: the 404 page (after the session check, like every page).
pub async fn not_found(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    session::current(&state, &req).await?;
    Err(ApiError::RouteNotFound.into())
}

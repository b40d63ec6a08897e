//! Admin routes (`Authorization: Bearer <admin.token>`): the catalog and user inspection.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::Deserialize;

use super::{parse_id, parse_json, read_body, require_admin, run_db, AppState};
use crate::db::catalog;
use crate::db::models::{AdminUser, Coupon, Course, UserCoupon};
use crate::domain::ids::{CourseId, UserId};
use crate::domain::time::{self, serde_ts_opt};
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::paging::List;

/// Reads an admin request's body: 413, then 401, then the JSON shape (400).
async fn admin_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let body = read_body(req, payload, state.settings.server.max_body_bytes).await?;
    require_admin(state, req)?;
    parse_json(&body)
}

fn check(ok: bool, message: &str) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(message.to_string()))
    }
}

/// Not blank, and storable everywhere (PostgreSQL text cannot hold NUL).
fn non_empty(text: &str) -> bool {
    !text.trim().is_empty() && !text.contains('\0')
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Not blank.
    #[schema(min_length = 1, pattern = "\\S")]
    name: String,
    #[serde(default)]
    #[schema(minimum = 0)]
    points: i64,
}

/// Creates a user with points.
#[utoipa::path(post, path = "/admin/users", tag = "admins",
    request_body = NewUser,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The user", body = AdminUser),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope)))]
pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let input: NewUser = admin_body(&state, &req, payload).await?;
    check(non_empty(&input.name), "name must not be empty or hold NUL")?;
    check(input.points >= 0, "points must not be negative")?;
    let user = run_db(&state, move |conn| {
        let user = catalog::create_user(conn, &input.name, input.points, time::now())?;
        catalog::admin_user(conn, user.id)
    })
    .await?;
    log::info!("admin created user {} with {} points", user.id, user.points);
    Ok(HttpResponse::Created().json(user))
}

/// A user with the ledger, coupons and courses the invariants are checked against.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admins",
    params(("id" = i64, Path)),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The user", body = AdminUser),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`user_not_found`", body = ErrorEnvelope)))]
pub async fn get_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    let user_id = parse_id(&path, "user id")?;
    let user = run_db(&state, move |conn| {
        catalog::admin_user(conn, UserId(user_id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCourse {
    /// Not blank.
    #[schema(min_length = 1, pattern = "\\S")]
    title: String,
    #[schema(minimum = 0)]
    price_cents: i64,
    #[serde(default = "default_on_sale")]
    on_sale: bool,
    #[serde(default)]
    chapters: Vec<String>,
}

fn default_on_sale() -> bool {
    true
}

/// Creates a course with its chapters.
#[utoipa::path(post, path = "/admin/courses", tag = "admins",
    request_body = NewCourse,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The course", body = Course),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope)))]
pub async fn create_course(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let input: NewCourse = admin_body(&state, &req, payload).await?;
    check(
        non_empty(&input.title),
        "title must not be empty or hold NUL",
    )?;
    check(input.price_cents >= 0, "price_cents must not be negative")?;
    check(
        input.chapters.iter().all(|t| non_empty(t)),
        "chapter titles must not be empty or hold NUL",
    )?;
    let course = run_db(&state, move |conn| {
        Ok(catalog::create_course(
            conn,
            &input.title,
            input.price_cents,
            input.on_sale,
            &input.chapters,
            time::now(),
        )?)
    })
    .await?;
    log::info!(
        "admin created course {} at {} cents",
        course.id,
        course.price_cents
    );
    Ok(HttpResponse::Created().json(course))
}

/// The catalog, newest course first.
#[utoipa::path(get, path = "/admin/courses", tag = "admins",
    params(super::paging::PageOnly),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of courses", body = List<Course>),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope)))]
pub async fn list_courses(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    super::course_page(&state, &req).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoursePatch {
    on_sale: bool,
}

/// Puts a course on or off sale.
#[utoipa::path(patch, path = "/admin/courses/{id}", tag = "admins",
    request_body = CoursePatch,
    params(("id" = i64, Path)),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The course", body = Course),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`course_not_found`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope)))]
pub async fn patch_course(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let input: CoursePatch = admin_body(&state, &req, payload).await?;
    let course_id = parse_id(&path, "course id")?;
    let course = run_db(&state, move |conn| {
        catalog::set_course_on_sale(conn, CourseId(course_id), input.on_sale)
    })
    .await?;
    log::info!("admin set course {course_id} on_sale={}", course.on_sale);
    Ok(HttpResponse::Ok().json(course))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCoupon {
    /// Not blank.
    #[schema(min_length = 1, pattern = "\\S")]
    title: String,
    #[schema(minimum = 1)]
    discount_cents: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    min_spend_cents: i64,
    #[serde(default, with = "serde_ts_opt")]
    valid_until: Option<NaiveDateTime>,
}

/// Creates a coupon.
#[utoipa::path(post, path = "/admin/coupons", tag = "admins",
    request_body = NewCoupon,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The coupon", body = Coupon),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope)))]
pub async fn create_coupon(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let input: NewCoupon = admin_body(&state, &req, payload).await?;
    check(
        non_empty(&input.title),
        "title must not be empty or hold NUL",
    )?;
    check(
        input.discount_cents >= 1,
        "discount_cents must be at least 1",
    )?;
    check(
        input.min_spend_cents >= 0,
        "min_spend_cents must not be negative",
    )?;
    let coupon = run_db(&state, move |conn| {
        Ok(catalog::create_coupon(
            conn,
            &input.title,
            input.discount_cents,
            input.min_spend_cents,
            input.valid_until,
            time::now(),
        )?)
    })
    .await?;
    log::info!("admin created coupon {}", coupon.id);
    Ok(HttpResponse::Created().json(coupon))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GiveCoupon {
    coupon_id: i64,
}

/// Gives a user a copy of a coupon (more than once is allowed).
#[utoipa::path(post, path = "/admin/users/{id}/coupons", tag = "admins",
    request_body = GiveCoupon,
    params(("id" = i64, Path)),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The user coupon", body = UserCoupon),
        (status = 400, description = "`invalid_request`", body = ErrorEnvelope),
        (status = 401, description = "`unauthenticated`", body = ErrorEnvelope),
        (status = 404, description = "`user_not_found`, `coupon_not_found`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope)))]
pub async fn give_coupon(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let input: GiveCoupon = admin_body(&state, &req, payload).await?;
    let user_id = parse_id(&path, "user id")?;
    let coupon = run_db(&state, move |conn| {
        catalog::give_coupon(conn, UserId(user_id), input.coupon_id, time::now())
    })
    .await?;
    log::info!(
        "admin gave coupon {} to user {user_id} as user coupon {}",
        coupon.coupon_id,
        coupon.user_coupon_id
    );
    Ok(HttpResponse::Created().json(coupon))
}

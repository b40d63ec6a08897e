//! Admin routes (`Authorization: Bearer <admin.token>`): the catalog and user inspection.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::Deserialize;

use super::paging::SinglePage;
use super::{parse_id, parse_json, read_body, require_admin, run_db, AppState};
use crate::db::catalog;
use crate::domain::ids::{CourseId, UserId};
use crate::domain::time::{self, serde_ts_opt};
use crate::error::ApiError;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    points: i64,
}

/// `POST /admin/users`
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

/// `GET /admin/users/{id}`
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCourse {
    title: String,
    price_cents: i64,
    #[serde(default = "default_on_sale")]
    on_sale: bool,
    #[serde(default)]
    chapters: Vec<String>,
}

fn default_on_sale() -> bool {
    true
}

/// `POST /admin/courses`
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

/// `GET /admin/courses`
pub async fn list_courses(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &req)?;
    SinglePage::check(&req)?;
    let courses = run_db(&state, |conn| Ok(catalog::list_courses(conn)?)).await?;
    Ok(SinglePage::respond(courses))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CoursePatch {
    on_sale: bool,
}

/// `PATCH /admin/courses/{id}`
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCoupon {
    title: String,
    discount_cents: i64,
    #[serde(default)]
    min_spend_cents: i64,
    #[serde(default, with = "serde_ts_opt")]
    valid_until: Option<NaiveDateTime>,
}

/// `POST /admin/coupons`
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GiveCoupon {
    coupon_id: i64,
}

/// `POST /admin/users/{id}/coupons`
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

//! The admin dashboard, `/admin/ui` (SPEC "Operations"): server-rendered HTML from askama
//! templates compiled into the binary (`templates/`), live parts refreshed by a vendored htmx
//! (`vendor/`) polling HTML fragments, no external assets. Sign-in with the admin token makes
//! a session ([`session`]); every other page needs its cookie, every POST its CSRF token.
//! The pages read through the same data functions as the JSON admin API
//! ([`super::admin_orders`], [`super::admin_deliveries`], [`super::admin_schedules`]) and act
//! through the same code paths (cancel, retry).

mod error;
mod pages;
pub mod session;
pub mod view;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use askama::Template;
use serde::de::DeserializeOwned;

use super::{read_body, AppState};
use crate::error::ApiError;
pub use error::UiError;

/// Where the dashboard lives; the session cookie's path.
pub const UI_ROOT: &str = "/admin/ui";
/// The sign-in page.
pub const LOGIN_PATH: &str = "/admin/ui/login";
const HTML: &str = "text/html; charset=utf-8";

const HTMX: &[u8] = include_bytes!("vendor/htmx.min.js");
const STYLE: &[u8] = include_bytes!("style.css");

/// Headers of every dashboard page: nothing loads from elsewhere, no page of it is framed or
/// cached.
fn secure_headers(response: &mut HttpResponseBuilder) {
    response
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
}

/// A rendered page, 200.
fn html(page: &impl Template) -> Result<HttpResponse, UiError> {
    let body = page
        .render()
        .map_err(|e| ApiError::Internal(format!("dashboard template: {e}")))?;
    let mut response = HttpResponse::Ok();
    secure_headers(&mut response);
    Ok(response.content_type(HTML).body(body))
}

/// 303 to `location` (POST-redirect-GET).
fn see_other(location: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A form-encoded body as `T` (within `server.max_body_bytes`).
async fn read_form<T: DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<T, ApiError> {
    let bytes = read_body(req, body, state.settings.server.max_body_bytes).await?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid form: {e}")))
}

/// A vendored file, cached for a year: the pages name it with [`asset_version`].
fn asset(content_type: &'static str, bytes: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(bytes)
}

async fn htmx() -> HttpResponse {
    asset("text/javascript; charset=utf-8", HTMX)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// A dashboard resource: other methods get the HTML 405 page.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(UiError::Api(ApiError::MethodNotAllowed))
    }))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    use pages::{live_part, page, OverviewPage, SchedulePage, SchedulesPage};
    cfg.service(resource("/admin/ui").route(web::get().to(page::<OverviewPage>)))
        .service(resource("/admin/ui/live").route(web::get().to(live_part::<OverviewPage>)))
        .service(
            resource("/admin/ui/login")
                .route(web::get().to(session::login_page))
                .route(web::post().to(session::login)),
        )
        .service(resource("/admin/ui/logout").route(web::post().to(session::logout)))
        // The two static files are public (the sign-in page needs them; they hold no data).
        .service(resource("/admin/ui/assets/htmx.min.js").route(web::get().to(htmx)))
        .service(resource("/admin/ui/assets/style.css").route(web::get().to(style)))
        .service(resource("/admin/ui/orders").route(web::get().to(pages::orders)))
        .service(resource("/admin/ui/orders/{order_no}").route(web::get().to(pages::order)))
        .service(
            resource("/admin/ui/orders/{order_no}/actor").route(web::get().to(pages::order_actor)),
        )
        .service(
            resource("/admin/ui/orders/{order_no}/cancel")
                .route(web::post().to(pages::cancel_order)),
        )
        .service(resource("/admin/ui/effects").route(web::get().to(pages::effects)))
        .service(
            resource("/admin/ui/effects/{id}/retry").route(web::post().to(pages::retry_effect)),
        )
        .service(resource("/admin/ui/deliveries").route(web::get().to(pages::deliveries)))
        .service(
            resource("/admin/ui/deliveries/{id}/retry")
                .route(web::post().to(pages::retry_delivery)),
        )
        .service(resource("/admin/ui/late-payments").route(web::get().to(pages::late_payments)))
        .service(resource("/admin/ui/schedules").route(web::get().to(page::<SchedulesPage>)))
        .service(resource("/admin/ui/schedules/{name}").route(web::get().to(page::<SchedulePage>)))
        // The schedules pages' live parts: under /live, since a schedule may be named `live`.
        .service(
            resource("/admin/ui/live/schedules").route(web::get().to(live_part::<SchedulesPage>)),
        )
        .service(
            resource("/admin/ui/live/schedules/{name}")
                .route(web::get().to(live_part::<SchedulePage>)),
        )
        .service(web::resource("/admin/ui/{rest:.*}").to(pages::not_found));
}

/// A short hash of the vendored files, in their URLs: a new binary with other files is a new
/// URL, so the year-long cache never serves a stale one.
pub fn asset_version() -> &'static str {
    use sha2::{Digest, Sha256};
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut hasher = Sha256::new();
        hasher.update(HTMX);
        hasher.update(STYLE);
        hex::encode(&hasher.finalize()[..6])
    });
    &VERSION
}

//! The dashboard's errors: the engine's typed [`ApiError`]s plus the three only the dashboard
//! has (no session, a bad CSRF token, a schedule's page that is not configured), answered in one place as HTML pages, never as the JSON
//! envelope, with the status the API would give.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use super::LOGIN_PATH;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No live session cookie: 303 to the sign-in page.
    #[error("sign in first")]
    SignInRequired,
    /// A dashboard POST without its session's CSRF token: 403, nothing done.
    #[error("this form's security token is missing or wrong, so nothing was done; reload the page and try again")]
    CsrfRejected,
    /// The page of a schedule this process's config.toml has no `[[schedules]]` entry for: 404
    /// (the JSON API has no page of one schedule, hence no error code for it).
    #[error("no schedule named {0:?} is configured ([[schedules]] in config.toml)")]
    ScheduleNotConfigured(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: String,
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignInRequired => StatusCode::SEE_OTHER,
            Self::CsrfRejected => StatusCode::FORBIDDEN,
            Self::ScheduleNotConfigured(_) => StatusCode::NOT_FOUND,
            Self::Api(err) => err.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let Self::SignInRequired = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, LOGIN_PATH))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish();
        }
        let message = match self {
            Self::Api(err) => {
                err.log_server_error();
                err.public_message()
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error"),
            message,
        };
        let mut response = HttpResponse::build(status);
        super::secure_headers(&mut response);
        match page.render() {
            Ok(html) => response.content_type(super::HTML).body(html),
            Err(err) => {
                log::error!("dashboard error page could not be rendered: {err}");
                response
                    .content_type("text/plain; charset=utf-8")
                    .body(page.message)
            }
        }
    }
}

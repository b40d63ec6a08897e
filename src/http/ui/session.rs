//! Dashboard sessions: sign-in with the admin token sets a cookie holding a random session
//! token; the database keeps only its SHA-256 (`db::sessions`) with the session's CSRF token
//! and expiry. Every other dashboard route is authorised by that cookie alone, and every
//! dashboard POST must also carry the CSRF token. The JSON admin API never reads the cookie.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::TimeDelta;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::UiError;
use super::{html, read_form, UI_ROOT};
use crate::auth::token_matches;
use crate::db::sessions::{self, AdminSession};
use crate::domain::time;
use crate::error::ApiError;
use crate::http::{run_db, AppState};

/// The session cookie's name.
pub const COOKIE: &str = "oe_admin_session";

/// A signed-in browser's live session.
pub struct Session {
    token_hash: String,
    /// What the dashboard's forms carry back in their `csrf_token` field.
    pub csrf_token: String,
}

/// 32 bytes from the OS's random source, as hex.
fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a session token: {e}")))?;
    Ok(hex::encode(bytes))
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The request's live session, or [`UiError::SignInRequired`]. An expired one is deleted.
pub async fn current(state: &AppState, req: &HttpRequest) -> Result<Session, UiError> {
    let token = req
        .cookie(COOKIE)
        .map(|c| c.value().to_string())
        // A token the engine issued is 64 hex digits; anything else is not looked up.
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(UiError::SignInRequired)?;
    let token_hash = hash(&token);
    let lookup = token_hash.clone();
    let found = run_db(state, move |conn| {
        Ok(sessions::find_live(conn, &lookup, time::now())?)
    })
    .await?;
    match found {
        Some(session) => Ok(Session {
            token_hash,
            csrf_token: session.csrf_token,
        }),
        None => Err(UiError::SignInRequired),
    }
}

impl Session {
    /// 403 unless `given` is this session's CSRF token (compared in constant time).
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), UiError> {
        match given {
            Some(given) if bool::from(given.as_bytes().ct_eq(self.csrf_token.as_bytes())) => Ok(()),
            _ => Err(UiError::CsrfRejected),
        }
    }
}

/// The body of every dashboard POST form but the sign-in's.
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf_token: Option<String>,
}

/// The request's session, with its CSRF token checked against the POSTed form: 303 without
/// a session, then 403 without the right token.
pub async fn current_with_csrf(
    state: &AppState,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<Session, UiError> {
    let session = current(state, req).await?;
    // A body that is not a form carries no token.
    let form: Option<CsrfForm> = read_form(state, req, body).await.ok();
    session.check_csrf(form.as_ref().and_then(|f| f.csrf_token.as_deref()))?;
    Ok(session)
}

/// The session cookie: HttpOnly, SameSite=Strict, only under `/admin/ui`, `Secure` when the
/// request came over https.
fn cookie(req: &HttpRequest, value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(COOKIE, value)
        .path(UI_ROOT)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<&'static str>,
}

/// `GET /admin/ui/login`.
pub async fn login_page(req: HttpRequest) -> Result<HttpResponse, UiError> {
    let mut response = html(&LoginPage { error: None })?;
    // An htmx poll whose session ended was sent here: make the whole page come here.
    if req.headers().contains_key("HX-Request") {
        response.headers_mut().insert(
            header::HeaderName::from_static("hx-redirect"),
            header::HeaderValue::from_static(super::LOGIN_PATH),
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
struct LoginForm {
    token: Option<String>,
}

/// `POST /admin/ui/login` (form field `token`): the admin token starts a session, 303 to the
/// overview; anything else is the sign-in page again, 401.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, UiError> {
    let form: Option<LoginForm> = read_form(&state, &req, body).await.ok();
    let given = form.and_then(|f| f.token).unwrap_or_default();
    if !token_matches(given.trim(), &state.settings.admin.token) {
        log::warn!("dashboard sign-in refused: wrong admin token");
        let mut response = html(&LoginPage {
            error: Some("That is not the admin token."),
        })?;
        *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let ttl_secs = state.settings.admin.session_ttl_secs;
    let token = random_token()?;
    let now = time::now();
    let session = AdminSession {
        token_hash: hash(&token),
        csrf_token: random_token()?,
        created_at: now,
        expires_at: now + TimeDelta::seconds(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
    };
    let expires_at = session.expires_at;
    run_db(&state, move |conn| Ok(sessions::create(conn, &session)?)).await?;
    log::info!(
        "dashboard session started (expires at {})",
        time::format(&expires_at)
    );
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, UI_ROOT))
        .cookie(cookie(&req, token, ttl_secs as i64))
        .finish())
}

/// `POST /admin/ui/logout` (CSRF-protected): the session is deleted, its cookie cleared.
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, UiError> {
    let session = current_with_csrf(&state, &req, body).await?;
    let token_hash = session.token_hash;
    run_db(&state, move |conn| Ok(sessions::delete(conn, &token_hash)?)).await?;
    log::info!("dashboard session ended by sign-out");
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, super::LOGIN_PATH))
        .cookie(cookie(&req, String::new(), 0))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
        assert_eq!(hash(&a), hash(&a));
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let session = Session {
            token_hash: String::new(),
            csrf_token: "abc123".into(),
        };
        assert!(session.check_csrf(Some("abc123")).is_ok());
        for bad in [
            None,
            Some(""),
            Some("abc12"),
            Some("abc1234"),
            Some("ABC123"),
        ] {
            assert!(matches!(
                session.check_csrf(bad),
                Err(UiError::CsrfRejected)
            ));
        }
    }
}

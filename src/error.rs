//! The one API error type. Every handler returns `Result<_, ApiError>`; this file alone maps
//! each variant to its HTTP status and stable snake_case code, in the SPEC envelope
//! `{"error": {"code", "message"}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::domain::ids::{CourseId, UserId};
use crate::domain::pricing::{QuoteError, ShapeError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request did not arrive whole within the request timeout")]
    RequestTimeout,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    InvalidSignature(&'static str),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidCourseIds(String),
    #[error("{0}")]
    InvalidPoints(String),
    #[error("no route matches this path")]
    RouteNotFound,
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    #[error("order {0} not found")]
    OrderNotFound(String),
    #[error("course {0} not found")]
    CourseNotFound(CourseId),
    #[error("coupon {0} not found")]
    CouponNotFound(i64),
    #[error("user {0} not found")]
    UserNotFound(UserId),
    #[error("effect {0} not found")]
    EffectNotFound(i64),
    #[error("effect {0} is not dead-lettered")]
    EffectNotDeadLettered(i64),
    #[error("delivery {0} not found")]
    DeliveryNotFound(i64),
    #[error("payment provider {0} is not enabled")]
    ProviderNotEnabled(&'static str),
    #[error("delivery {0} is not dead-lettered")]
    DeliveryNotDeadLettered(i64),
    #[error("course {0} is not on sale")]
    CourseNotOnSale(CourseId),
    #[error("course {0} is already owned")]
    CourseAlreadyOwned(CourseId),
    #[error("course {0} is already in a pending order")]
    CourseInPendingOrder(CourseId),
    #[error("coupon {0} is locked by another order or already used")]
    CouponNotUsable(i64),
    #[error("order {order_no} is {status}, not pending")]
    OrderNotPending {
        order_no: String,
        status: crate::domain::states::OrderStatus,
    },
    #[error("trade_no {0} was already used for a different callback")]
    TradeNoConflict(String),
    #[error("order {0} has less than the provider's margin left before its deadline")]
    PaymentWindowClosed(String),
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyKeyInUse,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("{0}")]
    Quote(QuoteError),
    #[error("amount_cents {received} does not match the payable amount {expected}")]
    AmountMismatch { expected: i64, received: i64 },
    #[error("too many orders; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(String),
    #[error("a dependency is unavailable; retry later")]
    Unavailable(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::InvalidSignature(_) => "invalid_signature",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidCourseIds(_) => "invalid_course_ids",
            Self::InvalidPoints(_) => "invalid_points",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OrderNotFound(_) => "order_not_found",
            Self::CourseNotFound(_) => "course_not_found",
            Self::CouponNotFound(_) => "coupon_not_found",
            Self::UserNotFound(_) => "user_not_found",
            Self::EffectNotFound(_) => "effect_not_found",
            Self::EffectNotDeadLettered(_) => "effect_not_dead_lettered",
            Self::DeliveryNotFound(_) => "delivery_not_found",
            Self::ProviderNotEnabled(_) => "provider_not_enabled",
            Self::DeliveryNotDeadLettered(_) => "delivery_not_dead_lettered",
            Self::CourseNotOnSale(_) => "course_not_on_sale",
            Self::CourseAlreadyOwned(_) => "course_already_owned",
            Self::CourseInPendingOrder(_) => "course_in_pending_order",
            Self::CouponNotUsable(_) => "coupon_not_usable",
            Self::OrderNotPending { .. } => "order_not_pending",
            Self::TradeNoConflict(_) => "trade_no_conflict",
            Self::PaymentWindowClosed(_) => "payment_window_closed",
            Self::IdempotencyKeyInUse => "idempotency_key_in_use",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Quote(QuoteError::Overflow) => "invalid_request",
            Self::Quote(QuoteError::CouponExpired) => "coupon_expired",
            Self::Quote(QuoteError::MinSpendNotMet) => "coupon_min_spend_not_met",
            Self::Quote(QuoteError::InsufficientPoints) => "insufficient_points",
            Self::Quote(QuoteError::PointsExceedPayable) => "points_exceed_payable",
            Self::AmountMismatch { .. } => "amount_mismatch",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// A failure of the engine or a dependency (500, 503), not of the request.
    pub fn is_server_error(&self) -> bool {
        matches!(self, Self::Internal(_) | Self::Unavailable(_))
    }

    /// What a client is told: the error's text, without internal details (those go to the
    /// log, see [`ApiError::log_server_error`]).
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".to_string(),
            Self::Unavailable(_) => "a dependency is unavailable; retry later".to_string(),
            other => other.to_string(),
        }
    }

    /// Logs the detail of a 500 or 503, which the response does not carry.
    pub fn log_server_error(&self) {
        match self {
            Self::Internal(detail) => log::error!("internal error: {detail}"),
            Self::Unavailable(detail) => log::warn!("unavailable: {detail}"),
            _ => {}
        }
    }

    /// The JSON envelope, as stored for idempotent replays and sent to clients.
    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!(ErrorEnvelope {
            error: ErrorBody {
                code: self.code().to_string(),
                message: self.public_message(),
            },
        })
    }
}

/// The body of every error response (SPEC "Errors").
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A snake_case code from the SPEC's table (`invalid_request`, `order_not_found`, ...).
    pub code: String,
    /// Human text; not for parsing.
    pub message: String,
}

impl From<ShapeError> for ApiError {
    fn from(err: ShapeError) -> Self {
        match err {
            ShapeError::NegativePoints => Self::InvalidPoints(err.to_string()),
            ShapeError::Overflow => Self::InvalidRequest(err.to_string()),
            _ => Self::InvalidCourseIds(err.to_string()),
        }
    }
}

impl From<QuoteError> for ApiError {
    fn from(err: QuoteError) -> Self {
        Self::Quote(err)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        if is_unavailable(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

/// Whether `err` says the database is gone or busy (a 503 the client retries), not a fault.
fn is_unavailable(err: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match err {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            is_unavailable_message(info.message())
        }
        // A COMMIT cut by the server going away, whose rollback then failed on the same lost
        // connection (MariaDB killed mid-COMMIT: "Server has gone away" twice). Nothing is
        // acknowledged, so the client retries, as after a commit cut on PostgreSQL.
        Error::RollbackErrorOnCommit {
            rollback_error,
            commit_error,
        } => is_unavailable(commit_error) || is_unavailable(rollback_error),
        _ => false,
    }
}

/// libpq and SQLite report lost servers and busy files as "unknown" errors with these words.
fn is_unavailable_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "server closed the connection",
        "connection refused",
        "terminating connection",
        "no connection to the server",
        "database is locked",
        "could not connect",
        "the database system is",
        // MySQL / MariaDB: the server went away or is busy; the client may retry.
        "lost connection to",
        "server has gone away",
        "can't connect to",
        "too many connections",
        "lock wait timeout exceeded",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

impl From<r2d2::Error> for ApiError {
    fn from(err: r2d2::Error) -> Self {
        Self::Unavailable(format!("no database connection: {err}"))
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        Self::Internal(format!("blocking task failed: {err}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated(_) | Self::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_)
            | Self::InvalidCourseIds(_)
            | Self::InvalidPoints(_)
            | Self::Quote(QuoteError::Overflow) => StatusCode::BAD_REQUEST,
            Self::RouteNotFound
            | Self::OrderNotFound(_)
            | Self::CourseNotFound(_)
            | Self::CouponNotFound(_)
            | Self::UserNotFound(_)
            | Self::EffectNotFound(_)
            | Self::DeliveryNotFound(_)
            | Self::ProviderNotEnabled(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::CourseNotOnSale(_)
            | Self::CourseAlreadyOwned(_)
            | Self::CourseInPendingOrder(_)
            | Self::CouponNotUsable(_)
            | Self::OrderNotPending { .. }
            | Self::TradeNoConflict(_)
            | Self::PaymentWindowClosed(_)
            | Self::IdempotencyKeyInUse
            | Self::EffectNotDeadLettered(_)
            | Self::DeliveryNotDeadLettered(_) => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused | Self::Quote(_) | Self::AmountMismatch { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log_server_error();
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthenticated(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::RateLimited { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            // The rest of a late body is not waited for: the connection goes.
            Self::RequestTimeout => {
                response.force_close();
            }
            _ => {}
        }
        response.json(self.envelope())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_code_and_message() {
        let err = ApiError::CourseNotFound(CourseId(7));
        assert_eq!(err.status_code(), StatusCode::NOT_FOUND);
        assert_eq!(
            err.envelope(),
            serde_json::json!({"error": {"code": "course_not_found", "message": "course 7 not found"}})
        );
        let internal = ApiError::Internal("secret detail".into());
        assert_eq!(internal.envelope()["error"]["message"], "internal error");
    }

    #[test]
    fn a_lost_server_is_unavailable_even_inside_commit() {
        use diesel::result::{DatabaseErrorKind, Error};
        let gone = || {
            Box::new(Error::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new("Server has gone away".to_string()),
            ))
        };
        assert_eq!(ApiError::from(*gone()).code(), "unavailable");
        let cut_commit = Error::RollbackErrorOnCommit {
            rollback_error: gone(),
            commit_error: gone(),
        };
        assert_eq!(ApiError::from(cut_commit).code(), "unavailable");
        let constraint = || {
            Box::new(Error::DatabaseError(
                DatabaseErrorKind::CheckViolation,
                Box::new("check failed".to_string()),
            ))
        };
        let failed_commit = Error::RollbackErrorOnCommit {
            rollback_error: constraint(),
            commit_error: constraint(),
        };
        assert_eq!(ApiError::from(failed_commit).code(), "internal_error");
    }
}

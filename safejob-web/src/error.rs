//! Errors as the HTTP surface answers them: one enum, one stable JSON shape.
//!
//! Every refusal is `{"error": {"code": "...", "message": "..."}}` with a 4xx status for what
//! the client got wrong (bad input, access, CSRF, a state that does not allow the action) and a
//! 5xx only for the store failing. `code` is stable (clients match on it); `message` is for
//! people and may change.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use safejob_core::store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A query string that does not parse (unknown state text, a limit that is not a number).
    #[error("bad query: {0}")]
    BadQuery(String),
    /// A path parameter that does not parse (a job id that is not a number, a digest that is not
    /// 64 hex characters).
    #[error("bad path: {0}")]
    BadPath(String),
    /// A request body that does not parse.
    #[error("bad body: {0}")]
    BadBody(String),
    /// A `limit` above what one page may hold.
    #[error("limit {given} is above the maximum of {max}")]
    LimitTooLarge {
        /// What was asked.
        given: u64,
        /// The most one page returns.
        max: usize,
    },
    /// No such job, batch, key, schedule or action.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`job 42`).
        what: String,
    },
    /// No route for this path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The thing exists, but its state does not allow the action; nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// The web state was built without the store this route needs (schedules or actions).
    #[error("{0} are not configured on this server")]
    NotConfigured(&'static str),
    /// No credentials, or wrong ones ([`Access::Bearer`](crate::Access::Bearer)).
    #[error("authentication required")]
    Unauthorized,
    /// The client may not use this server ([`Access::LoopbackOnly`](crate::Access::LoopbackOnly)
    /// and a non-loopback peer, or a custom rule's refusal).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A state-changing request that may come from another site: no valid CSRF token, or a
    /// cross-site `Origin` / `Sec-Fetch-Site`.
    #[error("CSRF check failed: {0}")]
    Csrf(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store call could not complete on the blocking pool (it panicked or the runtime is
    /// shutting down).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadQuery(_) => "bad_query",
            Self::BadPath(_) => "bad_path",
            Self::BadBody(_) => "bad_body",
            Self::LimitTooLarge { .. } => "limit_too_large",
            Self::NotFound { .. } => "not_found",
            Self::NoRoute(_) => "no_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::NotConfigured(_) => "not_configured",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Csrf(_) => "csrf",
            Self::Store(StoreError::Unreachable { .. } | StoreError::PoolExhausted { .. }) => {
                "store_unavailable"
            }
            Self::Store(_) => "store_error",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadQuery(_)
            | Self::BadPath(_)
            | Self::BadBody(_)
            | Self::LimitTooLarge { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } | Self::NoRoute(_) | Self::NotConfigured(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Csrf(_) => StatusCode::FORBIDDEN,
            Self::Store(StoreError::Unreachable { .. } | StoreError::PoolExhausted { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `not found` for `what`.
    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        Self::NotFound {
            what: what.to_string(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What an error answer says.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `bad_query`, `bad_path`, `bad_body`, `limit_too_large`,
    /// `not_found`, `no_route`, `method_not_allowed`, `conflict`, `not_configured`,
    /// `unauthorized`, `forbidden`, `csrf`, `store_unavailable`, `store_error`, `internal`.
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "safejob-web request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"safejob\""),
            );
        }
        response
    }
}

impl<E: std::error::Error + 'static> From<safejob_tokio::AsyncError<E>> for ApiError
where
    ApiError: From<E>,
{
    fn from(e: safejob_tokio::AsyncError<E>) -> Self {
        match e {
            safejob_tokio::AsyncError::Failed(inner) => inner.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

//! Who may use the HTTP surface: closed to every non-loopback client unless opened.
//!
//! The gate runs before every route (API, dashboard, metrics, OpenAPI document). It reads the
//! peer address from axum's [`ConnectInfo`]: serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()` ([`serve`](crate::serve) does). A
//! router mounted without it sees no peer address, and [`Access::LoopbackOnly`] then refuses
//! every request (closed, not open, when misconfigured).
//!
//! Behind a reverse proxy on the same host every client looks like loopback: use
//! [`Access::Bearer`] (the token is asked of every client) or your own rule there.

use std::{fmt, net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::WebState};

/// A bearer token. Its `Debug` never shows it, and it is never logged.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// A token; an empty one is refused (it would open the server to anyone).
    pub fn new(token: impl Into<String>) -> Result<Self, AccessError> {
        let token: String = token.into();
        if token.trim().is_empty() {
            return Err(AccessError::EmptyToken);
        }
        Ok(Self(token.into()))
    }

    /// Whether `given` is the token, compared in constant time (over SHA-256 digests, so the
    /// length does not leak either).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (
            Sha256::digest(self.0.as_bytes()),
            Sha256::digest(given.as_bytes()),
        );
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Bad access configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// An empty (or blank) bearer token.
    #[error("the bearer token is empty")]
    EmptyToken,
}

/// A user's own rule: given the request head and the peer address (when known), `Ok` serves the
/// request and `Err` refuses it with that error (use [`ApiError::Unauthorized`] or
/// [`ApiError::Forbidden`]).
pub type Authorize =
    Arc<dyn Fn(&Parts, Option<SocketAddr>) -> Result<(), ApiError> + Send + Sync + 'static>;

/// Who may use the server. Defaults to [`Access::LoopbackOnly`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Access {
    /// Only clients whose peer address is loopback (127.0.0.0/8, ::1, and 127.0.0.0/8 mapped
    /// into IPv6); others get 403.
    #[default]
    LoopbackOnly,
    /// Every client, loopback included, presents `Authorization: Bearer <token>`; missing or
    /// wrong: 401 with `WWW-Authenticate`.
    Bearer(BearerToken),
    /// Loopback clients as with `LoopbackOnly` (a local browser can use the dashboard); any
    /// other client presents the bearer token.
    LoopbackOrBearer(BearerToken),
    /// Your own rule (a session check, an mTLS header set by your proxy, ...). To use a tower
    /// layer of your own instead, take this with a rule that admits everyone and put your layer
    /// around the router.
    Custom(Authorize),
}

impl Access {
    /// [`Access::Custom`] from a closure.
    pub fn custom(
        rule: impl Fn(&Parts, Option<SocketAddr>) -> Result<(), ApiError> + Send + Sync + 'static,
    ) -> Self {
        Self::Custom(Arc::new(rule))
    }

    /// Decides for one request.
    pub fn check(&self, parts: &Parts, peer: Option<SocketAddr>) -> Result<(), ApiError> {
        // `to_canonical`: an IPv4 client of a dual-stack listener shows as `::ffff:127.0.0.1`.
        let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
        match self {
            Self::LoopbackOnly if loopback => Ok(()),
            Self::LoopbackOnly => {
                Err(ApiError::Forbidden(match peer {
                    Some(_) => "only loopback clients are served; open access with a bearer token"
                        .to_owned(),
                    None => "the peer address is unknown (serve with ConnectInfo<SocketAddr>)"
                        .to_owned(),
                }))
            }
            Self::LoopbackOrBearer(_) if loopback => Ok(()),
            Self::Bearer(token) | Self::LoopbackOrBearer(token) => match bearer_of(parts) {
                Some(given) if token.matches(given) => Ok(()),
                _ => Err(ApiError::Unauthorized),
            },
            Self::Custom(rule) => rule(parts, peer),
        }
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LoopbackOnly => f.write_str("LoopbackOnly"),
            Self::Bearer(t) => f.debug_tuple("Bearer").field(t).finish(),
            Self::LoopbackOrBearer(t) => f.debug_tuple("LoopbackOrBearer").field(t).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_of(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The gate, as an axum middleware over the router's state.
pub(crate) async fn gate(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Err(refused) = state.access().check(&parts, peer) {
        return refused.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

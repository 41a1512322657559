//! Protection of state-changing requests against cross-site request forgery.
//!
//! Access by network position ([`Access::LoopbackOnly`](crate::Access::LoopbackOnly)) works like
//! a cookie: a page on any site, open in a local browser, could make that browser post to the
//! loopback server. So every `POST` (and any other unsafe method) passes these checks, in order:
//!
//! 1. a request carrying `Authorization: Bearer …` is not ambient authority (a browser never adds
//!    it on its own, and a cross-site page cannot set it without a CORS preflight this server
//!    never grants): it passes;
//! 2. `Sec-Fetch-Site`, when the browser sends it, must be `same-origin` or `none`;
//! 3. `Origin`, when sent, must be this server's own (`http://` or `https://` + `Host`);
//! 4. a body a cross-site HTML form can send (`application/x-www-form-urlencoded`,
//!    `multipart/form-data`, `text/plain`) must carry the field `csrf_token` equal to the
//!    process's token: an HMAC-SHA256, under a random per-process secret, that the dashboard
//!    writes into its forms.
//!
//! Otherwise (a JSON body, or none, from a non-browser client) the request passes: a
//! cross-site page cannot send a JSON content type without a preflight.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::Sha256;

use crate::{error::ApiError, state::WebState};

/// The form field that carries the token.
pub const CSRF_FIELD: &str = "csrf_token";

/// The most bytes of a form body read to find the token.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The per-process CSRF secret and the token derived from it.
#[derive(Clone)]
pub(crate) struct Csrf {
    token: String,
}

impl Csrf {
    /// A fresh random secret (from the operating system's generator); the token is its HMAC.
    pub(crate) fn random() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 64];
        getrandom::fill(&mut secret)?;
        Ok(Self::from_secret(&secret))
    }

    /// The token for `secret`: one SHA-256 block of key, so no length can be refused.
    fn from_secret(secret: &[u8; 64]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(secret.into());
        mac.update(b"safejob-web csrf v1");
        let token = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { token }
    }

    /// The token forms carry.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Constant-time comparison with the token.
    fn matches(&self, given: &str) -> bool {
        given.len() == self.token.len()
            && given
                .bytes()
                .zip(self.token.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(<redacted>)")
    }
}

/// The check, as an axum middleware (see the module docs).
pub(crate) async fn check(State(state): State<WebState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    if crate::access::bearer_of(&parts).is_some() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    if let Err(refused) = same_origin(&parts.headers) {
        return refused.into_response();
    }
    if !is_form_like(&parts.headers) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let bytes = match to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::BadBody("form body too large".into()).into_response(),
    };
    let given = form_field(&bytes, CSRF_FIELD);
    if !given.is_some_and(|t| state.csrf().matches(t)) {
        return ApiError::Csrf("missing or invalid csrf_token").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Steps 2 and 3 of the module docs.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(ApiError::Csrf("cross-site request (Sec-Fetch-Site)"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let own = !host.is_empty()
            && (origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host));
        if !own {
            return Err(ApiError::Csrf("Origin is not this server"));
        }
    }
    Ok(())
}

/// Whether the body is of a kind a cross-site HTML form can send.
fn is_form_like(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    matches!(
        essence,
        "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    ) || essence.is_empty()
}

/// The first value of `name` in an urlencoded body (the token is hex: no decoding needed).
fn form_field<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_secret_and_compare_exactly() {
        let a = Csrf::from_secret(&[1; 64]);
        let b = Csrf::from_secret(&[2; 64]);
        assert_ne!(a.token(), b.token());
        assert_eq!(a.token().len(), 64);
        assert!(a.matches(a.token()));
        assert!(!a.matches(b.token()));
        assert!(!a.matches(&a.token()[..63]));
        assert!(!a.matches(""));
    }

    #[test]
    fn the_field_is_found_among_others() {
        assert_eq!(
            form_field(b"a=1&csrf_token=abc&b=2", "csrf_token"),
            Some("abc")
        );
        assert_eq!(form_field(b"a=1", "csrf_token"), None);
        assert_eq!(form_field(&[0xff, 0xfe], "csrf_token"), None);
    }
}

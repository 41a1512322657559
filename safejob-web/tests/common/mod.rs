//! The tests' app: a seeded SQLite queue (its own temporary database) behind the router, and
//! requests sent with `oneshot` from a chosen peer address.

#![allow(dead_code)]

pub mod seed;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::ConnectInfo,
    http::{HeaderMap, Method, Request, StatusCode},
};
use safejob_diesel::{queue::DieselQueue, testing::TestDb};
use safejob_web::{Access, WebState};
use serde_json::Value;
use tower::ServiceExt;

/// A loopback peer.
pub const LOCAL: &str = "127.0.0.1:50000";
/// A remote peer.
pub const REMOTE: &str = "203.0.113.9:50000";

/// The app under test.
pub struct App {
    /// Keeps the database alive.
    pub db: TestDb,
    /// The queue.
    pub queue: Arc<DieselQueue>,
    /// The router.
    pub router: Router,
    /// What the seed made.
    pub seeded: seed::Seeded,
}

/// A seeded app with `access` on SQLite.
pub fn app(access: Access) -> App {
    app_on(TestDb::sqlite().expect("sqlite test db"), access)
}

/// A seeded app with `access` on `db`.
pub fn app_on(db: TestDb, access: Access) -> App {
    let queue = Arc::new(DieselQueue::new(db.store().clone()));
    app_on_queue(db, queue, access)
}

/// A seeded app with `access` on `queue` (over `db`).
pub fn app_on_queue(db: TestDb, queue: Arc<DieselQueue>, access: Access) -> App {
    let seeded = seed::seed(&queue).expect("seed");
    let state = WebState::from_store(queue.clone())
        .expect("state")
        .with_access(access);
    App {
        db,
        queue,
        router: safejob_web::router(state),
        seeded,
    }
}

/// An answer.
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub text: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text))
            .to_owned()
    }
}

/// A request builder from `peer` (None: no ConnectInfo at all).
pub fn request(method: Method, uri: &str, peer: Option<&str>) -> axum::http::request::Builder {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:8087");
    if let Some(peer) = peer {
        let addr: SocketAddr = peer.parse().expect("peer");
        b = b.extension(ConnectInfo(addr));
    }
    b
}

/// Sends a request.
pub async fn send(app: &App, req: Request<Body>) -> Answer {
    let response = app.router.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET uri` from loopback.
pub async fn get(app: &App, uri: &str) -> Answer {
    send(
        app,
        request(Method::GET, uri, Some(LOCAL))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// `POST uri` from loopback without a body (how a script or the CLI calls the API).
pub async fn post(app: &App, uri: &str) -> Answer {
    send(
        app,
        request(Method::POST, uri, Some(LOCAL))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// The CSRF token the dashboard writes into its forms.
pub async fn csrf_token(app: &App) -> String {
    let page = get(app, "/ui/dead").await;
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.text.find(marker).expect("a form with a token") + marker.len();
    page.text[start..start + 64].to_owned()
}

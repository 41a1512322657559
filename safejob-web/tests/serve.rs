//! `serve_on` over a real socket: what `safejob serve` runs. The access gate must see the peer
//! address, so a loopback client is served.

mod common;

use std::io::{Read, Write};

use safejob_web::{Access, WebState};

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// Break: `serve_on` serving `router(state).into_make_service()` (no `ConnectInfo`): the gate
/// then refuses every client with 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_jobs_and_metrics_on_loopback() {
    let app = common::app(Access::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = WebState::from_store(app.queue.clone()).unwrap();
    let server = tokio::spawn(safejob_web::serve_on(
        listener,
        state,
        Access::LoopbackOnly,
        async {
            let _ = stopped.await;
        },
    ));
    let (jobs, metrics) =
        tokio::task::spawn_blocking(move || (http_get(addr, "/jobs"), http_get(addr, "/metrics")))
            .await
            .unwrap();
    assert!(jobs.starts_with("HTTP/1.1 200"), "{jobs}");
    assert!(jobs.contains("\"definitions\""), "{jobs}");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("safejob_jobs{"), "{metrics}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The overview's charts have points at the first request after the start, from the jobs that
/// finished in the last hour (the seed's dead charge and succeeded audit), not from samples this
/// process took (it has had no time to take two).
///
/// Break: `serve_on` not calling `WebState::seed_charts`, `samples::history` leaving out a
/// minute's points, or the latency chart reading intervals without successes: a chart then says
/// "collecting samples…".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_serve_charts_the_last_hour_at_once() {
    let app = common::app(Access::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = WebState::from_store(app.queue.clone()).unwrap();
    let server = tokio::spawn(safejob_web::serve_on(
        listener,
        state,
        Access::LoopbackOnly,
        async {
            let _ = stopped.await;
        },
    ));
    let page = tokio::task::spawn_blocking(move || http_get(addr, "/"))
        .await
        .unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(!page.contains("collecting samples"), "{page}");
    for chart in ["aria-label=\"Throughput\"", "aria-label=\"Mean latency\""] {
        let at = page
            .find(chart)
            .unwrap_or_else(|| panic!("{chart} in {page}"));
        let figure = &page[at..at + page[at..].find("</figure>").unwrap()];
        assert!(figure.contains("<polyline"), "{chart} has a line: {figure}");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

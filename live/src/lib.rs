//! The live page: a map of the city's H3 grid cells coloured by demand in the current
//! window (all SKUs, a category or one SKU), the top SKUs, the latest plan signals per
//! supplier with their reason and firmness, and pipeline health (rate, lag, watermark
//! delay), refreshed in place every `refresh_ms`.
//!
//! It is a thin backend for the browser: each `/api/state` call reads the aggregator's
//! `/v1/cells`, the emitter's `/v1/plans` and the three stages' `/metrics`, adds each
//! cell's hexagon (from `h3o`), and answers one JSON document. The page and its one
//! third-party library (d3, from the npm registry, vendored by `scripts/live-assets.sh`)
//! are embedded in the binary: nothing is fetched from the internet at run time. A stage
//! that does not answer shows as such on the page; the page itself keeps working.
//!
//! # Layout
//! - [`config`]: the settings.
//! - [`sources`]: reading the stages (HTTP, Prometheus text) and building the state.
//! - this file: the HTTP server and the embedded assets.

pub mod config;
pub mod sources;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nearfield_common::http::{Readiness, ops_routes};
use nearfield_common::operator::{check_listen, guard};
use nearfield_common::shutdown::CancellationToken;
use serde_json::json;

pub use config::LiveConfig;

const INDEX: &str = include_str!("../assets/index.html");
const APP: &str = include_str!("../assets/app.js");
const D3: &str = include_str!("../assets/vendor/d3.min.js");

/// The live page could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("catalog: {0}")]
    Catalog(#[from] nearfield_emitter::catalog::CatalogFileError),
    #[error("live.listen {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("http server: {0}")]
    Serve(std::io::Error),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("{0}")]
    Listen(String),
}

/// A started live page.
#[derive(Debug)]
pub struct Running {
    pub local_addr: SocketAddr,
    pub done: tokio::task::JoinHandle<Result<(), LiveError>>,
}

/// Serves the page until `shutdown` is cancelled.
pub async fn run(config: LiveConfig, shutdown: CancellationToken) -> Result<(), LiveError> {
    let running = start(config, shutdown).await?;
    running.done.await.unwrap_or_else(|e| Err(LiveError::Serve(std::io::Error::other(e))))
}

/// Starts the server and returns once it listens.
pub async fn start(config: LiveConfig, shutdown: CancellationToken) -> Result<Running, LiveError> {
    config.validate()?;
    check_listen("live.listen", config.listen, config.operator_token.as_ref())
        .map_err(LiveError::Listen)?;
    let sources = Arc::new(sources::Sources::new(&config)?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| LiveError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(LiveError::Serve)?;
    let readiness = Readiness::default();
    readiness.set(true);
    // The page and its script are static; what it shows (`/api/*`) needs the operator
    // token when there is one (the page sends the one in its URL fragment, `#token=…`).
    let api = Router::new()
        .route("/api/options", get(options))
        .route("/api/state", get(state))
        .with_state(Arc::clone(&sources));
    let app = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP) }))
        .route("/vendor/d3.min.js", get(|| async { asset("text/javascript; charset=utf-8", D3) }))
        .merge(guard(api, config.operator_token.clone()))
        .merge(ops_routes(readiness));
    tracing::info!(%local_addr, "live page at http://{local_addr}/");
    {
        let (sources, shutdown) = (Arc::clone(&sources), shutdown.clone());
        tokio::spawn(async move {
            loop {
                sources.sample().await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(sources.refresh()) => {}
                }
            }
        });
    }
    let done = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(LiveError::Serve)
    });
    Ok(Running { local_addr, done })
}

/// The page's Content-Security-Policy: scripts only from this server (no inline script,
/// no `eval`), data only from its own `/api/*`, no frames, plugins or base-URI tricks.
/// Inline styles stay allowed (the page's stylesheet and d3's computed styles); they
/// cannot run code.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, body).into_response()
}

async fn options(State(s): State<Arc<sources::Sources>>) -> Response {
    Json(s.options()).into_response()
}

async fn state(
    State(s): State<Arc<sources::Sources>>,
    q: Result<Query<sources::StateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad("query", "only sku or category are accepted");
    };
    match s.state(&q).await {
        Ok(v) => Json(v).into_response(),
        Err((field, rule)) => bad(field, &rule),
    }
}

fn bad(field: &str, rule: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": {"field": field, "rule": rule}})))
        .into_response()
}

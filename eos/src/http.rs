//! What every exactly-once stage serves besides its own queries: `/metrics`, `/healthz`,
//! and `/readyz` from the loop's published [`Status`](crate::Status) — `200` once every
//! owned partition is restored, `503` while any is restoring or the loop restarts — with
//! each partition's phase and restore progress in the body. And [`launch`]: a stage's
//! loop and HTTP server, started and stopped together.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;

use nearfield_common::kafka::{Follower, KafkaSettings};
use nearfield_common::operator::{OperatorToken, SupplierTokens, check_listen, guard_with};
use nearfield_common::shutdown::CancellationToken;

use crate::config::{CreateOnDemand, RuntimeConfig, Wiring};
use crate::error::EosError;
use crate::plane::{Directory, Plane};
use crate::query::{Queries, SharedStatus};
use crate::runtime::Runtime;
use crate::stage::Stage;

/// `/metrics`, `/healthz`, `/readyz`.
pub fn ops(status: SharedStatus) -> Router {
    nearfield_common::http::probes()
        .merge(Router::new().route("/readyz", get(ready)).with_state(status))
}

async fn ready(State(status): State<SharedStatus>) -> Response {
    let s = status.load_full();
    let code = if s.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "ready": s.ready(),
        "stage": s.stage,
        "instance": s.instance,
        "running": s.running,
        "partitions": s.partitions,
    });
    (code, Json(body)).into_response()
}

/// A stage stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Loop(#[from] EosError),
    #[error("http server: {0}")]
    Http(std::io::Error),
    #[error("listen {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The listen address is not allowed (a non-loopback one without an operator token).
    #[error("{0}")]
    Listen(String),
}

/// What a stage starts with.
#[allow(missing_debug_implementations)]
pub struct Launch<S: Stage> {
    pub stage: Arc<S>,
    pub wiring: Wiring,
    pub config: RuntimeConfig,
    pub settings: KafkaSettings,
    /// Topics the stage creates when it first writes to them.
    pub create: Option<Arc<CreateOnDemand>>,
    /// Where its HTTP server listens.
    pub listen: SocketAddr,
    /// The token its query routes require (`None`: loopback only, no token).
    pub operator_token: Option<OperatorToken>,
    /// Suppliers' tokens its query routes also admit (as `Caller::Supplier`).
    pub supplier_tokens: SupplierTokens,
    /// The name of the listen setting, for errors (e.g. `aggregate.listen`).
    pub listen_setting: &'static str,
}

/// A started stage.
#[derive(Debug)]
pub struct Launched<S: Stage> {
    /// The HTTP address (useful with port 0).
    pub local_addr: SocketAddr,
    /// What the loop publishes: owned partitions, restore progress, readiness.
    pub status: SharedStatus,
    /// Questions for the loop.
    pub queries: Queries<S::Query, S::Answer>,
    /// Resolves when the loop committed its last transaction and the server stopped.
    pub done: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// Starts the stage's loop and its HTTP server (`routes` built with the query mailbox and
/// the query plane, plus [`ops`]); returns once the server listens. On `shutdown` or a fatal error both
/// stop, then `followers` (the stage's side-table followers: registry, catalog, coverage)
/// are stopped.
pub async fn launch<S: Stage>(
    l: Launch<S>,
    routes: impl FnOnce(&Queries<S::Query, S::Answer>, Arc<Plane>) -> Router,
    followers: Vec<Follower>,
    shutdown: CancellationToken,
) -> Result<Launched<S>, ServeError> {
    check_listen(l.listen_setting, l.listen, l.operator_token.as_ref())
        .map_err(ServeError::Listen)?;
    let bind = |source| ServeError::Bind { addr: l.listen, source };
    let listener = tokio::net::TcpListener::bind(l.listen).await.map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    let mut config = l.config;
    let url = config.advertised_url.get_or_insert_with(|| advertised(local_addr)).clone();
    let directory = Directory::new(&l.settings, &config.group_id, &l.wiring.input)?;
    let plane = Arc::new(Plane::new(directory, &config.instance_id, l.operator_token.clone()));
    tracing::info!(url, "{} answers queries for its partitions at", S::NAME);
    let runtime = crate::spawn(l.stage, l.wiring, config, l.settings, l.create, shutdown.clone())?;
    let (status, queries) = (Arc::clone(&runtime.status), runtime.queries.clone());
    // Queries need the operator token (when there is one); probes and metrics stay open.
    let app = guard_with(routes(&queries, plane), l.operator_token, l.supplier_tokens)
        .merge(ops(Arc::clone(&status)));
    tracing::info!(%local_addr, "{} listening", S::NAME);
    let done = tokio::spawn(async move {
        let served = serve(listener, app, runtime, shutdown).await;
        for f in followers {
            f.stop().await;
        }
        tracing::info!("{} stopped", S::NAME);
        served
    });
    Ok(Launched { local_addr, status, queries, done })
}

/// The default advertised address: the listen address, or the host name when listening on
/// every interface.
fn advertised(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        let host = crate::clients::instance_id(None);
        format!("http://{host}:{}", local.port())
    } else {
        format!("http://{local}")
    }
}

/// Serves `app` on `listener` while `runtime` runs; returns when both stopped: on
/// `shutdown` (HTTP drains, the loop commits and leaves the group) or when the loop stops
/// on a fatal error (the server then stops too, and the error is returned).
pub async fn serve<S: Stage>(
    listener: tokio::net::TcpListener,
    app: Router,
    runtime: Runtime<S>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let stop_http = shutdown.child_token();
    let server = {
        let t = stop_http.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { t.cancelled().await })
                .await
        })
    };
    let looped = runtime.join().await;
    stop_http.cancel();
    let served = server.await.map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
    looped?;
    served.map_err(ServeError::Http)
}

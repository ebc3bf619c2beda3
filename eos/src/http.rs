//! What every exactly-once stage serves besides its own queries: `/metrics`, `/healthz`,
//! and `/readyz` from the loop's published [`Status`](crate::Status) — `200` once every
//! owned partition is restored, `503` while any is restoring or the loop restarts — with
//! each partition's phase and restore progress in the body. And [`serve`]: the HTTP
//! server and the loop of one stage, stopped together.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nearfield_common::shutdown::CancellationToken;

use crate::error::EosError;
use crate::query::SharedStatus;
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

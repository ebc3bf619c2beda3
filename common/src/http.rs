//! HTTP endpoints every stage serves: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (the stage can do its work).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Whether a stage is ready; flipped by the stage, read by `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the stage ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    /// Whether the stage is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn ops_routes(readiness: Readiness) -> Router {
    probes().merge(Router::new().route("/readyz", get(ready)).with_state(readiness))
}

/// `/healthz` and `/readyz` without `/metrics`: for a port that faces clients.
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(Router::new().route("/readyz", get(ready)).with_state(readiness))
}

/// `/metrics` and `/healthz` (a stage with its own `/readyz` adds it).
pub fn probes() -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" }))
}

/// A `400` whose body names the field and the rule:
/// `{"error": {"field": …, "rule": …, "message": …}}`.
pub fn bad_request(field: &str, rule: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            serde_json::json!({"error": {"field": field, "rule": rule, "message": message}}),
        ),
    )
        .into_response()
}

async fn ready(State(r): State<Readiness>) -> Response {
    if r.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics() -> Response {
    let families = prometheus::gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

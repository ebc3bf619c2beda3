//! The emitter's HTTP server: `GET /v1/plans[?supplier=…][&limit=…]` (the latest committed
//! signals, newest first, for dashboards and the live page), plus `/metrics`, `/healthz`
//! and `/readyz` (ready once every owned partition is restored).

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nearfield_common::http::{Readiness, ops_routes};
use nearfield_schemas::PlanSignal;
use serde::Deserialize;
use serde_json::json;

use crate::kafka::SharedEngine;

/// Query parameters of `/v1/plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansQuery {
    pub supplier: Option<String>,
    pub limit: Option<usize>,
}

fn bad(field: &str, rule: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": {"field": field, "rule": rule}})))
        .into_response()
}

async fn plans(
    State(engine): State<SharedEngine>,
    q: Result<Query<PlansQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad("query", "only supplier and limit (1..=1000) are accepted");
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return bad("limit", "must be within 1..=1000");
    }
    if let Some(s) = &q.supplier
        && (s.is_empty()
            || s.len() > 48
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
    {
        return bad("supplier", "must be 1..=48 characters of [a-z0-9_-]");
    }
    let signals: Vec<PlanSignal> = {
        let e = engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        e.recent
            .iter()
            .rev()
            .filter(|s| q.supplier.as_ref().is_none_or(|sup| &s.supplier_id == sup))
            .take(limit)
            .cloned()
            .collect()
    };
    Json(json!({ "signals": signals })).into_response()
}

/// The router.
pub fn router(engine: SharedEngine, readiness: Readiness) -> Router {
    Router::new().route("/v1/plans", get(plans)).with_state(engine).merge(ops_routes(readiness))
}

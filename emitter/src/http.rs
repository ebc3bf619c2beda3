//! The emitter's HTTP server: `GET /v1/plans[?supplier=…][&limit=…]` (the latest committed
//! signals, newest first, for dashboards and the live page). The ops routes come from the
//! runtime (`nearfield_eos::http::ops`). Handlers read the signals the loop publishes after
//! each commit; they never touch the loop's state.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nearfield_schemas::PlanSignal;
use serde::Deserialize;
use serde_json::json;

use crate::stage::Recent;

/// Query parameters of `/v1/plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansQuery {
    pub supplier: Option<String>,
    pub limit: Option<usize>,
}

fn bad(field: &str, rule: &str) -> Response {
    nearfield_common::http::bad_request(field, rule, rule)
}

async fn plans(
    State(recent): State<Recent>,
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
        let recent = recent.load();
        recent
            .iter()
            .rev()
            .filter(|s| q.supplier.as_ref().is_none_or(|sup| &s.supplier_id == sup))
            .take(limit)
            .cloned()
            .collect()
    };
    Json(json!({ "signals": signals })).into_response()
}

/// The query routes.
pub fn router(recent: Recent) -> Router {
    Router::new().route("/v1/plans", get(plans)).with_state(recent)
}

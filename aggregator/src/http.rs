//! The aggregator's HTTP server: the live query `GET /v1/demand?grid=…[&sku=…]` over the
//! current in-memory state, the city view `GET /v1/cells[?window_ms=…][&skus=a,b,…]` (the
//! newest window's demand per grid and the top SKUs, for the live page), plus `/metrics`,
//! `/healthz` and `/readyz` (ready once every owned partition is restored; the body says
//! each partition's phase). Handlers validate, then ask the loop through the runtime's
//! mailbox (`query.rs`); they never touch its state.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nearfield_common::http::bad_request as bad;
use nearfield_eos::{Queries, QueryError};
use serde::Deserialize;
use serde_json::json;

use crate::query::{self, Answer};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    pub queries: Queries<query::Query, Answer>,
    /// Configured window sizes (ms), ascending.
    pub sizes: Arc<Vec<i64>>,
}

/// Query parameters of `/v1/demand`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandQuery {
    pub grid: Option<String>,
    pub sku: Option<String>,
}

/// Query parameters of `/v1/cells`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellsQuery {
    /// Window size (one of the configured sizes; default the smallest).
    pub window_ms: Option<i64>,
    /// Only these SKUs (comma-separated, at most 2000).
    pub skus: Option<String>,
}

fn unavailable(e: QueryError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({"error": {"rule": "query.unavailable", "message": e.to_string()}})),
    )
        .into_response()
}

async fn demand(
    State(api): State<Api>,
    q: Result<Query<DemandQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad("query", "query.invalid", &e.body_text()),
    };
    let Some(grid) = q.grid.filter(|g| !g.is_empty()) else {
        return bad("grid", "grid.required", "query parameter grid (an H3 cell) is required");
    };
    if grid.len() > 32 || !grid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("grid", "grid.format", "grid must be an H3 cell index in hex");
    }
    if let Some(s) = &q.sku
        && (s.is_empty() || s.len() > 64)
    {
        return bad("sku", "sku.length", "sku must be 1..=64 characters");
    }
    let answer = api.queries.ask(query::Query::Demand { grid: grid.clone(), sku: q.sku }).await;
    match answer {
        Ok(Answer::Demand { keys, owned, restoring }) if keys.is_empty() => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": {"rule": "demand.not_found",
                          "message": "no live windows for this grid (and sku) in this instance's partitions; \
                                      another instance may own the grid's partition"},
                "owned_partitions": owned,
                "restoring_partitions": restoring,
            })),
        )
            .into_response(),
        Ok(Answer::Demand { keys, restoring, .. }) => {
            Json(json!({ "grid_id": grid, "keys": keys, "restoring_partitions": restoring }))
                .into_response()
        }
        Ok(_) => unavailable(QueryError::Stopped),
        Err(e) => unavailable(e),
    }
}

async fn cells(
    State(api): State<Api>,
    q: Result<Query<CellsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad("query", "query.invalid", &e.body_text()),
    };
    let size = q.window_ms.unwrap_or_else(|| api.sizes.first().copied().unwrap_or(0));
    let Some(size_idx) = api.sizes.iter().position(|s| *s == size) else {
        let sizes = &api.sizes;
        return bad("window_ms", "window_ms.size", &format!("window_ms must be one of {sizes:?}"));
    };
    let skus = match &q.skus {
        None => None,
        Some(list) => {
            let skus: HashSet<String> = list.split(',').map(str::to_string).collect();
            if skus.len() > 2000 || skus.iter().any(|s| s.is_empty() || s.len() > 64) {
                return bad(
                    "skus",
                    "skus.format",
                    "skus must be 1..=2000 SKUs of 1..=64 characters, comma-separated",
                );
            }
            Some(skus)
        }
    };
    match api.queries.ask(query::Query::Cells { size_idx, size, skus }).await {
        Ok(Answer::Cells(v)) => Json(v).into_response(),
        Ok(_) => unavailable(QueryError::Stopped),
        Err(e) => unavailable(e),
    }
}

/// The query routes (the ops routes come from the runtime: `nearfield_eos::http::ops`).
pub fn router(api: Api) -> Router {
    Router::new().route("/v1/demand", get(demand)).route("/v1/cells", get(cells)).with_state(api)
}

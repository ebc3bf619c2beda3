//! The aggregator's HTTP server: the live query `GET /v1/demand?grid=…[&sku=…]` over the
//! current in-memory state, the city view `GET /v1/cells[?window_ms=…][&skus=a,b,…]` (the
//! newest window's demand per grid and the top SKUs, for the live page), plus `/metrics`,
//! `/healthz` and `/readyz` (ready once every owned partition is restored).

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nearfield_common::http::{Readiness, ops_routes};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kafka::{Engine, SharedEngine};
use crate::state::{KeyState, PartitionState};

/// Query parameters of `/v1/demand`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandQuery {
    pub grid: Option<String>,
    pub sku: Option<String>,
}

/// One window in a live answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LiveWindow {
    pub window_start: i64,
    pub window_end: i64,
    pub units_sold: i64,
    pub units_returned: i64,
    pub preorder_units: i64,
    pub net_units: i64,
    pub revenue_minor: i64,
    pub event_count: i64,
    pub distinct_stores: usize,
    pub stores_reporting: usize,
    /// `open`, or `closed` (final emitted; late events may still revise it).
    pub status: &'static str,
    pub revision: i32,
}

/// One grid × SKU in a live answer.
#[derive(Debug, Serialize)]
pub struct LiveKey {
    pub grid_id: String,
    pub sku: String,
    pub partition: i32,
    pub watermark: i64,
    pub windows: Vec<LiveWindow>,
}

fn live(p: i32, st: &PartitionState, k: &KeyState) -> LiveKey {
    let mut windows: Vec<LiveWindow> = k
        .windows
        .iter()
        .map(|w| LiveWindow {
            window_start: w.start,
            window_end: w.end,
            units_sold: w.counters.units_sold,
            units_returned: w.counters.units_returned,
            preorder_units: w.counters.preorder_units,
            net_units: w.counters.net_units(),
            revenue_minor: w.counters.revenue_minor,
            event_count: w.counters.event_count,
            distinct_stores: w.counters.stores.len(),
            stores_reporting: st.stores_reporting(k.grid(), w.size_idx, w.start),
            status: if st.is_closed(w) { "closed" } else { "open" },
            revision: w.revision.max(0),
        })
        .collect();
    windows.sort_by_key(|w| (w.window_end - w.window_start, w.window_start));
    LiveKey {
        grid_id: k.grid().to_string(),
        sku: k.sku().to_string(),
        partition: p,
        watermark: st.watermark(),
        windows,
    }
}

fn bad(field: &str, rule: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"field": field, "rule": rule, "message": message}})),
    )
        .into_response()
}

/// Answers from the owned partitions; a grid another instance owns answers 404 saying so.
pub fn answer(engine: &Engine, q: &DemandQuery) -> Response {
    let Some(grid) = q.grid.as_deref().filter(|g| !g.is_empty()) else {
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
    let mut keys = Vec::new();
    for (p, st) in &engine.partitions {
        match q.sku.as_deref() {
            Some(sku) => keys.extend(st.key(grid, sku).map(|k| live(*p, st, k))),
            None => keys.extend(st.keys_of_grid(grid).map(|k| live(*p, st, k))),
        }
    }
    keys.sort_by(|a, b| a.sku.cmp(&b.sku));
    if keys.is_empty() {
        let owned: Vec<i32> = engine.partitions.keys().copied().collect();
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": {"rule": "demand.not_found",
                          "message": "no live windows for this grid (and sku) in this instance's partitions; \
                                      another instance may own the grid's partition"},
                "owned_partitions": owned,
            })),
        )
            .into_response();
    }
    Json(json!({ "grid_id": grid, "keys": keys })).into_response()
}

async fn demand(
    State(engine): State<SharedEngine>,
    q: Result<Query<DemandQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => {
            let engine = engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            answer(&engine, &q)
        }
        Err(e) => bad("query", "query.invalid", &e.body_text()),
    }
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

/// Demand of one grid in the newest window.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub grid_id: String,
    pub net_units: i64,
    pub event_count: i64,
}

/// The newest window's demand per grid and the top SKUs, over the owned partitions. Scans
/// every key under the engine lock: meant for a dashboard polling every few seconds.
pub fn cells(engine: &Engine, q: &CellsQuery) -> Response {
    let sizes = &engine.cfg.windowing.sizes;
    let size = q.window_ms.unwrap_or_else(|| sizes.first().copied().unwrap_or(0));
    let Some(idx) = sizes.iter().position(|s| *s == size) else {
        return bad("window_ms", "window_ms.size", &format!("window_ms must be one of {sizes:?}"));
    };
    let filter: Option<std::collections::HashSet<&str>> = match &q.skus {
        None => None,
        Some(list) => {
            let skus: std::collections::HashSet<&str> = list.split(',').collect();
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
    let wanted = |sku: &str| filter.as_ref().is_none_or(|f| f.contains(sku));
    let newest = engine
        .partitions
        .values()
        .flat_map(|st| st.keys())
        .filter(|k| wanted(k.sku()))
        .flat_map(|k| k.windows.iter().filter(|w| w.size_idx == idx).map(|w| w.start))
        .max();
    let mut grids: std::collections::BTreeMap<&str, (i64, i64)> = std::collections::BTreeMap::new();
    let mut skus: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    if let Some(start) = newest {
        for k in engine.partitions.values().flat_map(|st| st.keys()).filter(|k| wanted(k.sku())) {
            for w in k.windows.iter().filter(|w| w.size_idx == idx && w.start == start) {
                let g = grids.entry(k.grid()).or_default();
                g.0 += w.counters.net_units();
                g.1 += w.counters.event_count;
                *skus.entry(k.sku()).or_default() += w.counters.net_units();
            }
        }
    }
    let mut top: Vec<(&str, i64)> = skus.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(10);
    let watermark =
        engine.partitions.values().map(PartitionState::watermark).filter(|w| *w > i64::MIN).min();
    Json(json!({
        "window_ms": size,
        "window_start": newest,
        "window_end": newest.map(|s| s + size),
        "watermark": watermark,
        "partitions": engine.partitions.keys().collect::<Vec<_>>(),
        "cells": grids.into_iter().map(|(g, (n, e))| Cell { grid_id: g.to_string(), net_units: n, event_count: e }).collect::<Vec<_>>(),
        "top_skus": top.into_iter().map(|(s, n)| json!({"sku": s, "net_units": n})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn cells_route(
    State(engine): State<SharedEngine>,
    q: Result<Query<CellsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => {
            let engine = engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cells(&engine, &q)
        }
        Err(e) => bad("query", "query.invalid", &e.body_text()),
    }
}

/// The router.
pub fn router(engine: SharedEngine, readiness: Readiness) -> Router {
    Router::new()
        .route("/v1/demand", get(demand))
        .route("/v1/cells", get(cells_route))
        .with_state(engine)
        .merge(ops_routes(readiness))
}

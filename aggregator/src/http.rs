//! The aggregator's HTTP server: the live query `GET /v1/demand` (by `grid` [× `sku`], by
//! `parent` cell rolled up, or by `sku` across grids; `window_ms`, `from`/`to`, `limit`
//! and the `after` cursor) and the city view `GET /v1/cells[?window_ms=…][&skus=a,b,…]`
//! (the newest window's demand per grid and the top SKUs, for the live page), plus
//! `/metrics`, `/healthz` and `/readyz`. Any instance answers for every partition: the
//! handlers validate, then gather the answers of the partitions' owners through the query
//! plane (this instance's own through the loop's mailbox, `query.rs`); they never touch
//! the loop's state. Every answer carries its `coverage`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use h3o::{CellIndex, Resolution};
use nearfield_common::http::bad_request as bad;
use nearfield_common::kafka::partition_for_key;
use nearfield_eos::{Coverage, Local, Plane, Queries, QueryError, Scope};
use serde::Deserialize;
use serde_json::json;

use crate::query::{self, Answer, CellsPart, DemandPart, Selector};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    pub queries: Queries<query::Query, Answer>,
    pub plane: Arc<Plane>,
    /// Configured window sizes (ms), ascending.
    pub sizes: Arc<Vec<i64>>,
    /// The grids' H3 resolution.
    pub resolution: Resolution,
}

/// Query parameters of `/v1/demand`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandQuery {
    pub grid: Option<String>,
    pub parent: Option<String>,
    pub sku: Option<String>,
    pub window_ms: Option<i64>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// The page cursor: `<grid or parent>/<sku>` (the `next` of the previous page).
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub scope: Option<String>,
    pub partitions: Option<String>,
}

/// Query parameters of `/v1/cells`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellsQuery {
    /// Window size (one of the configured sizes; default the smallest).
    pub window_ms: Option<i64>,
    /// Only these SKUs (comma-separated, at most 2000).
    pub skus: Option<String>,
    pub scope: Option<String>,
    pub partitions: Option<String>,
}

fn unavailable(e: &QueryError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({"error": {"rule": "query.unavailable", "message": e.to_string()}})),
    )
        .into_response()
}

fn incomplete(coverage: &Coverage) -> Response {
    let message = format!(
        "partitions {:?} had no answer in time (restoring: {:?}); retry shortly",
        coverage.missing, coverage.restoring
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({"error": {"rule": "query.incomplete", "message": message}, "coverage": coverage})),
    )
        .into_response()
}

/// A refused parameter: field, rule, message (rendered by [`Bad::response`]).
#[derive(Debug)]
struct Bad(&'static str, String, String);

impl Bad {
    fn new(field: &'static str, rule: &str, message: &str) -> Bad {
        Bad(field, rule.to_string(), message.to_string())
    }

    fn response(&self) -> Response {
        bad(self.0, &self.1, &self.2)
    }
}

fn cell(field: &'static str, text: &str) -> Result<CellIndex, Bad> {
    let refused = || {
        let message = format!("{field} must be an H3 cell index in hex");
        Bad::new(field, &format!("{field}.format"), &message)
    };
    if text.len() > 32 {
        return Err(refused());
    }
    text.parse::<CellIndex>().map_err(|_| refused())
}

/// The selector of a demand query, or the 400 naming the field and the rule.
fn selector(api: &Api, q: &DemandQuery) -> Result<Selector, Bad> {
    let grid = q.grid.as_deref().filter(|g| !g.is_empty());
    let parent = q.parent.as_deref().filter(|g| !g.is_empty());
    if grid.is_none() && parent.is_none() && q.sku.is_none() {
        return Err(Bad::new("grid", "demand.selector", "one of grid, parent or sku is required"));
    }
    if grid.is_some() && parent.is_some() {
        return Err(Bad::new("parent", "demand.selector", "give grid or parent, not both"));
    }
    // A grid is checked for form only: the registry decides which cells are grids.
    if let Some(g) = grid
        && (g.len() > 32 || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Bad::new("grid", "grid.format", "grid must be an H3 cell index in hex"));
    }
    let parent = match parent {
        Some(p) => {
            let c = cell("parent", p)?;
            if !query::parent_ok(c, api.resolution) {
                let rule = format!(
                    "parent must be a cell coarser than the grids' resolution {}",
                    u8::from(api.resolution)
                );
                return Err(Bad::new("parent", "parent.resolution", &rule));
            }
            Some(c)
        }
        None => None,
    };
    if let Some(s) = &q.sku
        && nearfield_common::ids::check(s, 64).is_err()
    {
        return Err(Bad::new("sku", "sku.format", "sku must be 1..=64 bytes of [A-Za-z0-9._:-]"));
    }
    let size_idx = match q.window_ms {
        None => None,
        Some(ms) => match api.sizes.iter().position(|s| *s == ms) {
            Some(i) => Some(i),
            None => {
                let sizes = &api.sizes;
                return Err(Bad::new(
                    "window_ms",
                    "window_ms.size",
                    &format!("window_ms must be one of {sizes:?}"),
                ));
            }
        },
    };
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return Err(Bad::new("to", "range.order", "to must be after from"));
    }
    let limit = q.limit.unwrap_or(query::DEFAULT_LIMIT);
    if !(1..=query::MAX_LIMIT).contains(&limit) {
        let rule = format!("limit must be within 1..={}", query::MAX_LIMIT);
        return Err(Bad::new("limit", "limit.range", &rule));
    }
    let after = match &q.after {
        None => None,
        Some(a) => match a.split_once('/') {
            Some((g, s)) if !g.is_empty() && g.len() <= 32 && s.len() <= 64 => {
                Some((g.to_string(), s.to_string()))
            }
            _ => {
                return Err(Bad::new(
                    "after",
                    "after.format",
                    "after must be the `next` of a previous page",
                ));
            }
        },
    };
    Ok(Selector {
        grid: grid.map(str::to_string),
        parent,
        sku: q.sku.clone(),
        size_idx,
        from: q.from,
        to: q.to,
        after,
        limit,
    })
}

fn scope(scope: Option<&str>, partitions: Option<&str>) -> Result<Scope, Bad> {
    Scope::parse(scope, partitions)
        .map_err(|(field, rule, message)| Bad::new(field, rule, &message))
}

/// The request's path and query, to forward (with a `?` so parameters can be appended).
fn forward_path(uri: &Uri) -> String {
    let p = uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    if p.contains('?') { p } else { format!("{p}?") }
}

/// All partitions, or the one holding `grid`.
async fn needed(api: &Api, grid: Option<&str>) -> Result<BTreeSet<i32>, Response> {
    match grid {
        Some(g) => {
            let n = api.plane.partitions().await.map_err(|e| unavailable(&e))?;
            Ok([partition_for_key(g.as_bytes(), n)].into())
        }
        None => api.plane.all_partitions().await.map_err(|e| unavailable(&e)),
    }
}

async fn ask_demand(
    api: &Api,
    sel: Selector,
    partitions: Vec<i32>,
) -> Result<Local<DemandPart>, QueryError> {
    match api.queries.ask(query::Query::Demand { sel, partitions }).await? {
        Answer::Demand(mut l) => {
            l.instance = api.plane.instance().to_string();
            Ok(l)
        }
        _ => Err(QueryError::Stopped),
    }
}

async fn demand(
    State(api): State<Api>,
    uri: Uri,
    q: Result<Query<DemandQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad("query", "query.invalid", &e.body_text()),
    };
    let sel = match selector(&api, &q) {
        Ok(s) => s,
        Err(b) => return b.response(),
    };
    match scope(q.scope.as_deref(), q.partitions.as_deref()) {
        Err(b) => return b.response(),
        Ok(Scope { local: Some(ps) }) => {
            return match ask_demand(&api, sel, ps).await {
                Ok(l) => Json(l).into_response(),
                Err(e) => unavailable(&e),
            };
        }
        Ok(Scope { local: None }) => {}
    }
    let path = forward_path(&uri);
    // A grid lives in the partition its key hashes to (ingest's partitioner); a grid a
    // producer partitioned otherwise is still found: then every partition is asked.
    let mut answer = None;
    for grid in [sel.grid.as_deref(), None] {
        let wanted = match needed(&api, grid).await {
            Ok(n) => n,
            Err(r) => return r,
        };
        let asked = |ps| ask_demand(&api, sel.clone(), ps);
        let (part, coverage) =
            match api.plane.gather(wanted, &path, DemandPart::new(sel.limit), asked).await {
                Ok(g) => g,
                Err(e) => return unavailable(&e),
            };
        let look_further = grid.is_some() && part.keys.is_empty() && coverage.complete;
        answer = Some((part, coverage));
        if !look_further || sel.after.is_some() {
            break;
        }
    }
    let Some((part, coverage)) = answer else { return unavailable(&QueryError::Stopped) };
    if !coverage.complete {
        return incomplete(&coverage);
    }
    if part.keys.is_empty() && sel.grid.is_some() && sel.after.is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": {"rule": "demand.not_found",
                          "message": "no live windows for this grid (and sku)"},
                "coverage": coverage,
            })),
        )
            .into_response();
    }
    let next =
        part.more.then(|| part.keys.last().map(|k| format!("{}/{}", k.grid_id, k.sku))).flatten();
    let mut body = json!({ "keys": part.keys, "next": next, "coverage": coverage });
    if let Some(g) = &sel.grid {
        body["grid_id"] = json!(g);
    }
    if let Some(p) = &sel.parent {
        body["parent"] = json!(p.to_string());
    }
    Json(body).into_response()
}

async fn ask_cells(
    api: &Api,
    size_idx: usize,
    skus: Option<HashSet<String>>,
    partitions: Vec<i32>,
) -> Result<Local<CellsPart>, QueryError> {
    match api.queries.ask(query::Query::Cells { size_idx, skus, partitions }).await? {
        Answer::Cells(mut l) => {
            l.instance = api.plane.instance().to_string();
            Ok(l)
        }
        _ => Err(QueryError::Stopped),
    }
}

async fn cells(
    State(api): State<Api>,
    uri: Uri,
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
    match scope(q.scope.as_deref(), q.partitions.as_deref()) {
        Err(b) => return b.response(),
        Ok(Scope { local: Some(ps) }) => {
            return match ask_cells(&api, size_idx, skus, ps).await {
                Ok(l) => Json(l).into_response(),
                Err(e) => unavailable(&e),
            };
        }
        Ok(Scope { local: None }) => {}
    }
    let needed = match needed(&api, None).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let path = forward_path(&uri);
    let asked = |ps| ask_cells(&api, size_idx, skus.clone(), ps);
    let (part, coverage) = match api.plane.gather(needed, &path, CellsPart::default(), asked).await
    {
        Ok(g) => g,
        Err(e) => return unavailable(&e),
    };
    let mut top: Vec<(&String, &i64)> = part.skus.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    top.truncate(10);
    let answered: BTreeSet<i32> = coverage.instances.values().flatten().copied().collect();
    Json(json!({
        "window_ms": size,
        "window_start": part.window_start,
        "window_end": part.window_start.map(|s| s + size),
        "watermark": part.watermark,
        "partitions": answered,
        "restoring": coverage.restoring,
        "cells": part.cells.iter().map(|(g, (n, e))| json!({"grid_id": g, "net_units": n, "event_count": e})).collect::<Vec<_>>(),
        "top_skus": top.into_iter().map(|(s, n)| json!({"sku": s, "net_units": n})).collect::<Vec<_>>(),
        "coverage": coverage,
    }))
    .into_response()
}

/// The query routes (the ops routes come from the runtime: `nearfield_eos::http::ops`).
pub fn router(api: Api) -> Router {
    Router::new().route("/v1/demand", get(demand)).route("/v1/cells", get(cells)).with_state(api)
}

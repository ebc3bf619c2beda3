//! The emitter's HTTP server: `GET /v1/plans[?supplier=…][&limit=…]`, the latest committed
//! signals, newest first, of every instance (gathered through the query plane: each
//! instance contributes the signals it committed, for the partitions it serves). A
//! supplier's own token shows that supplier's signals only (the same signals, under the
//! same privacy floor, as its plan topic); the operator's shows every supplier's. The ops
//! routes come from the runtime (`nearfield_eos::http::ops`). Handlers read the signals
//! the loop publishes after each commit; they never touch the loop's state.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use nearfield_common::operator::Caller;
use nearfield_eos::{Local, Part, Plane, Queries, QueryError, Scope};
use nearfield_schemas::PlanSignal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::stage::{Asked, Owns, Recent};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    pub queries: Queries<Asked, Owns>,
    pub plane: Arc<Plane>,
    pub recent: Recent,
}

/// Query parameters of `/v1/plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansQuery {
    pub supplier: Option<String>,
    pub limit: Option<usize>,
    pub scope: Option<String>,
    pub partitions: Option<String>,
}

/// The newest signals of some instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PlansPart {
    pub signals: Vec<PlanSignal>,
    pub limit: usize,
}

impl Part for PlansPart {
    fn merge(&mut self, other: Self) {
        self.signals.extend(other.signals);
        // Newest first; a signal two instances committed (a partition that moved) once.
        self.signals.sort_by(|a, b| {
            (b.generated_at, &a.signal_id, a.revision).cmp(&(
                a.generated_at,
                &b.signal_id,
                b.revision,
            ))
        });
        self.signals.dedup_by(|a, b| (&a.signal_id, a.revision) == (&b.signal_id, b.revision));
        self.signals.truncate(self.limit);
    }
}

fn bad(field: &str, rule: &str) -> Response {
    nearfield_common::http::bad_request(field, rule, rule)
}

fn unavailable(e: &QueryError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({"error": {"rule": "query.unavailable", "message": e.to_string()}})),
    )
        .into_response()
}

/// This instance's signals (of `supplier`, or all) for the partitions it serves of `asked`.
async fn local(
    api: &Api,
    supplier: Option<&str>,
    limit: usize,
    asked: Vec<i32>,
) -> Result<Local<PlansPart>, QueryError> {
    let owns = api.queries.ask(asked).await?;
    let signals = if owns.answered.is_empty() {
        Vec::new()
    } else {
        let recent = api.recent.load();
        recent
            .iter()
            .rev()
            .filter(|s| supplier.is_none_or(|sup| s.supplier_id == sup))
            .take(limit)
            .cloned()
            .collect()
    };
    Ok(Local {
        instance: api.plane.instance().to_string(),
        answered: owns.answered,
        restoring: owns.restoring,
        part: PlansPart { signals, limit },
    })
}

async fn plans(
    State(api): State<Api>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
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
    // A supplier sees its own plans only.
    let supplier = match (caller.map(|Extension(c)| c), q.supplier) {
        (Some(Caller::Supplier(own)), Some(asked)) if asked != own => {
            let body = json!({"error": {"field": "supplier", "rule": "plans.own_supplier",
                "message": "a supplier's token shows that supplier's plans only"}});
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
        (Some(Caller::Supplier(own)), _) => Some(own),
        (_, asked) => asked,
    };
    let scope = match Scope::parse(q.scope.as_deref(), q.partitions.as_deref()) {
        Ok(s) => s,
        Err((field, rule, _)) => return bad(field, rule),
    };
    if let Some(ps) = scope.local {
        return match local(&api, supplier.as_deref(), limit, ps).await {
            Ok(l) => Json(l).into_response(),
            Err(e) => unavailable(&e),
        };
    }
    let needed = match api.plane.all_partitions().await {
        Ok(all) => all,
        Err(e) => return unavailable(&e),
    };
    // Forwarded with the supplier fixed: the owner answers for this caller's supplier only.
    let path = match &supplier {
        Some(s) => format!("{}?supplier={s}&limit={limit}", uri.path()),
        None => format!("{}?limit={limit}", uri.path()),
    };
    let empty = PlansPart { signals: Vec::new(), limit };
    let asked = |ps| local(&api, supplier.as_deref(), limit, ps);
    match api.plane.gather(needed, &path, empty, asked).await {
        Ok((part, coverage)) => {
            Json(json!({ "signals": part.signals, "coverage": coverage })).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// The query routes.
pub fn router(api: Api) -> Router {
    Router::new().route("/v1/plans", get(plans)).with_state(api)
}

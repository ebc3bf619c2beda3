//! The HTTP API of SPEC §5 (axum): events, batches, heartbeats, the OpenAPI document, and
//! the operational endpoints.
//!
//! Every answer that says an event is accepted comes after Kafka acknowledged it. Errors
//! are JSON: `{"error": {"field": …, "rule": …, "message": …}}`.

#![allow(clippy::result_large_err)] // axum handlers return `Response` errors by design

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nearfield_common::http::{Readiness, health_routes, ops_routes};
use nearfield_common::kafka::Topics;
use nearfield_common::time::now_ms;
use nearfield_schemas::{Codec, Heartbeat, RejectSource, RejectedEvent, SaleEvent};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::{HEADER_DEVICE, HEADER_KEY_ID, HEADER_SIGNATURE, HEADER_STORE, HEADER_TIMESTAMP};
use crate::body::{Format, Parsed, parse_batch, parse_single};
use crate::config::IngestConfig;
use crate::internal_events::{
    AuthFailed, DlqWritten, EventRejected, EventsAccepted, HeartbeatAccepted, RateLimited,
    RequestCompleted,
};
use crate::kafka::{Outgoing, PublishError, Publisher};
use crate::ratelimit::RateLimiter;
use crate::registry::{Principal, Registry, SignedRequest};
use crate::replay::{Refused, ReplayCache};
use crate::validate::{Rejection, Rules, validate};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Everything a request needs.
#[derive(Debug)]
pub struct AppState {
    pub config: IngestConfig,
    pub topics: Topics,
    pub registry: Arc<Registry>,
    pub publisher: Publisher,
    pub limiter: RateLimiter,
    pub codec: Codec,
    /// Signatures already used (each is accepted once within the replay window).
    pub replays: ReplayCache,
    /// Requests in progress (`limits.max_concurrent_requests` permits).
    pub requests: Arc<Semaphore>,
    /// Request-body bytes held (`limits.max_inflight_bytes` permits).
    pub inflight_bytes: Arc<Semaphore>,
    /// Set when shutdown begins: new requests get 503.
    pub draining: AtomicBool,
    /// The supplier catalog, when configured (SKUs outside it are refused).
    pub catalog: Option<Arc<nearfield_common::catalog::Catalog>>,
    /// Units per store and window (the per-store cap, returns beyond sales).
    pub windows: crate::storecaps::StoreWindows,
}

impl AppState {
    fn rules(&self) -> Rules<'_> {
        Rules {
            limits: &self.config.limits,
            currencies: &self.config.currencies,
            catalog: self.catalog.as_deref(),
        }
    }
}

/// The device port's router: the API plus `/healthz` and `/readyz` (for load balancers);
/// `/metrics` is on the operator port ([`operator_router`]).
pub fn router(state: Arc<AppState>, readiness: Readiness) -> Router {
    Router::new()
        .route("/v1/events", post(single))
        .route("/v1/events:batch", post(batch))
        .route("/v1/heartbeat", post(heartbeat))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), concurrency))
        .with_state(state)
        .merge(health_routes(readiness))
}

/// The operator port's router: `/metrics`, `/healthz`, `/readyz`.
pub fn operator_router(readiness: Readiness) -> Router {
    ops_routes(readiness)
}

fn error(status: u16, r: &Rejection) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (code, axum::Json(json!({ "error": r }))).into_response()
}

fn unavailable(retry_after_s: u64, message: &str, extra: Option<Value>) -> Response {
    let mut body = json!({"error": {"rule": "kafka.unavailable", "message": message}});
    if let Some(extra) = extra {
        body["results"] = extra;
    }
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    resp
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn busy(what: &str) -> Response {
    let r = Rejection::body("server.busy", format!("{what}; retry shortly"));
    let mut resp = error(503, &r);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
    resp
}

fn refused(e: &crate::auth::AuthError, store: Option<&str>) -> Response {
    AuthFailed { reason: e.reason(), store_id: store }.emit();
    let status = if e.forbidden() { 403 } else { 401 };
    let (rule, message) = e.public();
    let mut resp = error(status, &Rejection { field: None, rule, message, status });
    if status == 401 {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("NearfieldHMAC"));
    }
    resp
}

/// Authenticates a request: its auth headers first (an unknown device or a stale
/// timestamp is refused before a byte of the body is read), then the body, bounded in
/// size, time and the bytes all requests hold at once, then the signature over it, once.
async fn admit(state: &AppState, req: Request) -> Result<(Principal, HeaderMap, Bytes), Response> {
    if state.draining.load(Ordering::Acquire) {
        return Err(unavailable(1, "ingest is shutting down; retry on another instance", None));
    }
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let store = header_str(h, HEADER_STORE);
    let signed = SignedRequest {
        store_id: store,
        device_id: header_str(h, HEADER_DEVICE),
        timestamp: header_str(h, HEADER_TIMESTAMP),
        signature: header_str(h, HEADER_SIGNATURE),
        key_id: header_str(h, HEADER_KEY_ID),
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        content_type: header_str(h, header::CONTENT_TYPE.as_str()).unwrap_or(""),
    };
    let limits = &state.config.limits;
    let claimed = state
        .registry
        .claim(&signed, now_ms(), limits.replay_window_ms)
        .map_err(|e| refused(&e, store))?;
    let limit = limits.max_body_bytes;
    let too_large =
        || error(413, &Rejection::body("body.size", format!("request body exceeds {limit} bytes")));
    let declared = header_str(h, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: usize| n > limit) {
        return Err(too_large());
    }
    let want = u32::try_from(declared.unwrap_or(limit).max(1)).unwrap_or(u32::MAX);
    let Ok(_held) = Arc::clone(&state.inflight_bytes).try_acquire_many_owned(want) else {
        return Err(busy("too many request bytes in flight"));
    };
    let read = axum::body::to_bytes(body, limit);
    let bytes =
        match tokio::time::timeout(Duration::from_millis(limits.body_timeout_ms), read).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return Err(too_large()),
            Err(_) => {
                let r = Rejection::body(
                    "body.timeout",
                    format!("the body did not arrive within {} ms", limits.body_timeout_ms),
                );
                return Err(error(408, &r));
            }
        };
    let (signature, ts) = claimed.signature();
    let signature = signature.to_vec();
    let (who, key) = claimed.verify_key(&signed, &bytes).map_err(|e| refused(&e, store))?;
    crate::internal_events::Authenticated { key }.emit();
    match state.replays.take(&signature, ts, now_ms()) {
        Ok(()) => {}
        Err(Refused::Replayed) => {
            return Err(refused(&crate::auth::AuthError::Replayed, store));
        }
        Err(Refused::Full) => return Err(busy("the replay cache is full")),
    }
    tracing::Span::current().record("store_id", who.store_id.as_str());
    Ok((who, parts.headers, bytes))
}

/// Caps the requests handled at once: past `limits.max_concurrent_requests`, 503 +
/// Retry-After before anything is read.
pub async fn concurrency(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match Arc::clone(&state.requests).try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => busy("too many requests in progress"),
    }
}

fn rate_limit(state: &AppState, who: &Principal, n: usize) -> Result<(), Response> {
    state.limiter.take(&who.store_id, n, Instant::now()).map_err(|wait| {
        RateLimited { store_id: &who.store_id }.emit();
        let r = Rejection::body(
            "rate_limit",
            format!("store {} exceeds its event rate; retry in {wait} s", who.store_id),
        );
        let mut resp = error(429, &r);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        resp
    })
}

/// Runs a handler inside a span for its route and reports its status and duration.
async fn timed(route: &'static str, handler: impl Future<Output = Response>) -> Response {
    let start = Instant::now();
    let span = tracing::debug_span!("request", route, store_id = tracing::field::Empty);
    let resp = handler.instrument(span).await;
    RequestCompleted { route, status: resp.status().as_u16(), elapsed: start.elapsed() }.emit();
    resp
}

/// An event after the rules: accepted, or rejected with its dead-letter record.
enum Outcome {
    /// Valid: `payload` is the encoded `SaleEvent`.
    Accepted {
        event: SaleEvent,
        payload: Vec<u8>,
    },
    Rejected {
        rejection: Rejection,
        event_id: Option<String>,
        dlq: Vec<u8>,
    },
}

fn decide(state: &AppState, who: &Principal, p: Parsed, format: Format, now: i64) -> Outcome {
    let checked = p
        .fields
        .and_then(|f| validate(f, who, state.rules(), now))
        .and_then(|event| {
            let admitted = state.windows.admit(&event)?;
            if admitted.return_beyond_sales {
                crate::internal_events::ReturnBeyondSales.emit();
            }
            Ok(event)
        })
        .and_then(|event| match state.codec.encode(&event) {
            Ok(payload) => Ok((event, payload)),
            // Only a Rust type out of step with its schema can get here (the contract
            // tests rule that out); the event is answered 500 and dead-lettered, not lost.
            Err(e) => Err(Rejection {
                field: None,
                rule: "internal.encode",
                message: e.to_string(),
                status: 500,
            }),
        });
    match checked {
        Ok((event, payload)) => Outcome::Accepted { event, payload },
        Err(rejection) => {
            EventRejected { rule: rejection.rule, store_id: Some(&who.store_id) }.emit();
            let keep = p.raw.len().min(state.config.dlq_payload_max_bytes);
            let payload = p.raw[..keep].to_vec();
            let record = RejectedEvent {
                source: RejectSource::Ingest,
                reason: rejection.rule.to_string(),
                field: rejection.field.clone(),
                message: rejection.message.clone(),
                store_id: Some(who.store_id.clone()),
                device_id: Some(who.device_id.clone()),
                event_id: p.event_id.clone(),
                content_type: format.media_type().to_string(),
                payload,
                origin: None,
                rejected_at: now,
            };
            // Cannot fail for the contract's own type (contract tests); say so loudly if it does.
            let dlq = state.codec.encode(&record).unwrap_or_else(|e| {
                tracing::error!(error = %e, "dead-letter record does not fit its schema");
                Vec::new()
            });
            Outcome::Rejected { rejection, event_id: p.event_id, dlq }
        }
    }
}

/// Publishes the outcomes; `Err` with the per-event results when anything is not durable.
async fn publish(
    state: &AppState,
    who: &Principal,
    outcomes: &mut [Outcome],
) -> Vec<Result<(), PublishError>> {
    // The encoded bytes move into the records; the outcomes keep what the answer needs.
    let out = outcomes
        .iter_mut()
        .map(|o| match o {
            Outcome::Accepted { event, payload } => Outgoing {
                topic: &state.topics.sales,
                key: event.grid_id.as_bytes(),
                payload: std::mem::take(payload),
            },
            Outcome::Rejected { dlq, .. } => Outgoing {
                topic: &state.topics.dlq,
                key: who.store_id.as_bytes(),
                payload: std::mem::take(dlq),
            },
        })
        .collect();
    state.publisher.publish(out).await
}

/// Counts what was stored, and gives back the store-window units of accepted events that
/// were not (the device retries them).
fn count(state: &AppState, outcomes: &[Outcome], results: &[Result<(), PublishError>]) {
    for (o, r) in outcomes.iter().zip(results) {
        if let (Outcome::Accepted { event, .. }, Err(_)) = (o, r) {
            state.windows.release(event);
        }
    }
    let accepted = outcomes
        .iter()
        .zip(results)
        .filter(|(o, r)| matches!(o, Outcome::Accepted { .. }) && r.is_ok())
        .count();
    let dlq = outcomes
        .iter()
        .zip(results)
        .filter(|(o, r)| matches!(o, Outcome::Rejected { .. }) && r.is_ok())
        .count();
    EventsAccepted { count: accepted }.emit();
    DlqWritten { count: dlq }.emit();
}

async fn single(State(state): State<Arc<AppState>>, req: Request) -> Response {
    timed("/v1/events", single_inner(&state, req)).await
}

async fn single_inner(state: &AppState, req: Request) -> Response {
    let (who, headers, body) = match admit(state, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match Format::from_content_type(header_str(&headers, header::CONTENT_TYPE.as_str())) {
        Some(Format::Json) => {}
        _ => {
            return error(
                415,
                &Rejection::body("body.content_type", "POST /v1/events takes application/json"),
            );
        }
    }
    if let Err(resp) = rate_limit(state, &who, 1) {
        return resp;
    }
    let now = now_ms();
    let parsed = match parse_single(&body) {
        Ok(p) => p,
        Err(e) => Parsed { raw: body.clone(), event_id: None, fields: Err(e.rejection) },
    };
    let mut outcomes = vec![decide(state, &who, parsed, Format::Json, now)];
    let results = publish(state, &who, &mut outcomes).await;
    count(state, &outcomes, &results);
    if let Some(Err(e)) = results.first() {
        return unavailable(
            1,
            &format!("event not stored: {e}; retry with the same event_id"),
            None,
        );
    }
    match outcomes.into_iter().next() {
        Some(Outcome::Accepted { event, .. }) => {
            (StatusCode::OK, axum::Json(json!({"status": "accepted", "event_id": event.event_id})))
                .into_response()
        }
        Some(Outcome::Rejected { rejection, .. }) => error(rejection.status, &rejection),
        None => error(400, &Rejection::body("body.empty", "no event")),
    }
}

async fn batch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    timed("/v1/events:batch", batch_inner(&state, req)).await
}

async fn batch_inner(state: &AppState, req: Request) -> Response {
    let (who, headers, body) = match admit(state, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let ct = header_str(&headers, header::CONTENT_TYPE.as_str());
    let Some(format) = Format::from_content_type(ct) else {
        return error(
            415,
            &Rejection::body(
                "body.content_type",
                "batches take application/json (array), application/x-ndjson or application/vnd.nearfield.avro-batch",
            ),
        );
    };
    let parsed = match parse_batch(format, &body, state.config.limits.max_batch_events) {
        Ok(p) => p,
        Err(e) => return error(e.status, &e.rejection),
    };
    if let Err(resp) = rate_limit(state, &who, parsed.len()) {
        return resp;
    }
    let now = now_ms();
    let mut outcomes: Vec<Outcome> =
        parsed.into_iter().map(|p| decide(state, &who, p, format, now)).collect();
    let results = publish(state, &who, &mut outcomes).await;
    count(state, &outcomes, &results);
    let mut accepted = 0;
    let mut rejected = 0;
    let mut failed = 0;
    let items: Vec<Value> = outcomes
        .iter()
        .zip(&results)
        .enumerate()
        .map(|(i, (o, r))| match (o, r) {
            (_, Err(e)) => {
                failed += 1;
                json!({"index": i, "status": "unavailable", "message": e.to_string()})
            }
            (Outcome::Accepted { event, .. }, Ok(())) => {
                accepted += 1;
                json!({"index": i, "event_id": event.event_id, "status": "accepted"})
            }
            (Outcome::Rejected { rejection, event_id, .. }, Ok(())) => {
                rejected += 1;
                json!({"index": i, "event_id": event_id, "status": "rejected", "error": rejection})
            }
        })
        .collect();
    if failed > 0 {
        return unavailable(
            1,
            &format!(
                "{failed} of {} events not stored; resend the batch (event_ids make it safe)",
                items.len()
            ),
            Some(Value::Array(items)),
        );
    }
    if accepted == 0 {
        // Nothing of the batch was taken: an error status, with every event's answer.
        let r = Rejection::body(
            "batch.rejected",
            format!("every event of the batch ({rejected}) was rejected; see results"),
        );
        let body = json!({"error": r, "accepted": 0, "rejected": rejected, "results": items});
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    }
    (
        StatusCode::OK,
        axum::Json(json!({"accepted": accepted, "rejected": rejected, "results": items})),
    )
        .into_response()
}

async fn heartbeat(State(state): State<Arc<AppState>>, req: Request) -> Response {
    timed("/v1/heartbeat", heartbeat_inner(&state, req)).await
}

async fn heartbeat_inner(state: &AppState, req: Request) -> Response {
    let (who, _headers, body) = match admit(state, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    // A heartbeat costs one token of the store's bucket, like an event: a device cannot
    // flood through the one endpoint that writes no event.
    if let Err(resp) = rate_limit(state, &who, 1) {
        return resp;
    }
    let now = now_ms();
    let fields = match crate::heartbeat::parse(&body, &state.config.limits, now) {
        Ok(f) => f,
        Err(r) => return error(r.status, &r),
    };
    let hb = Heartbeat {
        store_id: who.store_id.clone(),
        device_id: who.device_id.clone(),
        grid_id: who.grid_id.clone(),
        sent_at: fields.sent_at,
        received_at: now,
        pending_events: fields.pending_events,
        last_upload_at: fields.last_upload_at,
    };
    let payload = match state.codec.encode(&hb) {
        Ok(p) => p,
        Err(e) => return unavailable(1, &e.to_string(), None),
    };
    let out =
        vec![Outgoing { topic: &state.topics.heartbeats, key: who.grid_id.as_bytes(), payload }];
    match state.publisher.publish(out).await.pop() {
        Some(Ok(())) => {
            HeartbeatAccepted.emit();
            (StatusCode::OK, axum::Json(json!({"status": "ok", "server_time": now})))
                .into_response()
        }
        Some(Err(e)) => unavailable(1, &format!("heartbeat not stored: {e}"), None),
        None => unavailable(1, "heartbeat not stored", None),
    }
}

/// Responds 404 with a JSON error for unknown paths.
pub async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let r = Rejection::body(
        "route",
        format!("no route for {method} {}; see /openapi.json", uri.path()),
    );
    error(404, &r)
}

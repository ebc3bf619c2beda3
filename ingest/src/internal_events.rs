//! Everything ingest reports: one struct per event whose `emit()` logs and counts.
//! Metric names are constants; labels are low-cardinality (route, status class, reason),
//! never a store, device or SKU.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    exponential_buckets,
};

pub const REQUESTS_TOTAL: &str = "nearfield_ingest_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "nearfield_ingest_request_duration_seconds";
pub const EVENTS_ACCEPTED_TOTAL: &str = "nearfield_ingest_events_accepted_total";
pub const EVENTS_REJECTED_TOTAL: &str = "nearfield_ingest_events_rejected_total";
pub const PRODUCE_LATENCY_SECONDS: &str = "nearfield_ingest_produce_latency_seconds";
pub const PRODUCE_ERRORS_TOTAL: &str = "nearfield_ingest_produce_errors_total";
pub const PRODUCER_QUEUE_DEPTH: &str = "nearfield_ingest_producer_queue_depth";
pub const AUTH_FAILURES_TOTAL: &str = "nearfield_ingest_auth_failures_total";
pub const RATE_LIMITED_TOTAL: &str = "nearfield_ingest_rate_limited_total";
pub const HEARTBEATS_TOTAL: &str = "nearfield_ingest_heartbeats_total";
pub const REGISTRY_STORES: &str = "nearfield_ingest_registry_stores";
pub const DLQ_WRITTEN_TOTAL: &str = "nearfield_ingest_dlq_written_total";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "nearfield_ingest_connections_refused_total";
pub const CONNECTIONS_OPEN: &str = "nearfield_ingest_connections_open";
pub const AUTHENTICATED_TOTAL: &str = "nearfield_ingest_authenticated_total";
pub const RETURNS_BEYOND_SALES_TOTAL: &str = "nearfield_ingest_returns_beyond_sales_total";

use nearfield_common::metrics::{counter, counter_vec, gauge};

fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.000_5, 2.0, 16).unwrap_or_default()
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(REQUESTS_TOTAL, "HTTP requests by route and status code.", &["route", "status"])
});
static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(REQUEST_DURATION_SECONDS, "HTTP request duration by route.")
            .buckets(latency_buckets()),
        &["route"],
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
    let _ = prometheus::register(Box::new(h.clone()));
    h
});
static ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(EVENTS_ACCEPTED_TOTAL, "Sale events acknowledged by Kafka and answered 2xx.")
});
static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(EVENTS_REJECTED_TOTAL, "Sale events rejected, by rule.", &["reason"])
});
static PRODUCE_LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(PRODUCE_LATENCY_SECONDS, "Time from enqueue to Kafka acknowledgement.")
            .buckets(latency_buckets()),
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
    let _ = prometheus::register(Box::new(h.clone()));
    h
});
static PRODUCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(PRODUCE_ERRORS_TOTAL, "Records Kafka did not acknowledge, by kind.", &["kind"])
});
pub(crate) static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(PRODUCER_QUEUE_DEPTH, "Records waiting in the producer queue or in flight.")
});
static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(AUTH_FAILURES_TOTAL, "Requests refused by authentication, by reason.", &["reason"])
});
static RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(RATE_LIMITED_TOTAL, "Requests answered 429 by the per-store rate limit.")
});
static HEARTBEATS: LazyLock<IntCounter> =
    LazyLock::new(|| counter(HEARTBEATS_TOTAL, "Device heartbeats accepted."));
pub(crate) static STORES: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(REGISTRY_STORES, "Stores in the registry."));
static DLQ_WRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(DLQ_WRITTEN_TOTAL, "Rejected events written to the dead-letter topic.")
});

static CONNECTIONS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        CONNECTIONS_REFUSED_TOTAL,
        "Device-port connections refused at the connection cap (503).",
    )
});
static CONNECTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(CONNECTIONS_OPEN, "Device-port connections open."));

static AUTHENTICATED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        AUTHENTICATED_TOTAL,
        "Requests authenticated, by the master key the device's key derives from (a rotation is done when previous stays flat).",
        &["key"],
    )
});

static RETURNS_BEYOND_SALES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        RETURNS_BEYOND_SALES_TOTAL,
        "RETURN events accepted beyond what their store sold in the window (possible plan steering).",
    )
});

/// A RETURN took its store's returns past its sales in the window.
#[derive(Debug)]
pub struct ReturnBeyondSales;
impl ReturnBeyondSales {
    pub fn emit(self) {
        RETURNS_BEYOND_SALES.inc();
    }
}

/// A request's signature was verified.
#[derive(Debug)]
pub struct Authenticated {
    pub key: crate::registry::KeyUsed,
}
impl Authenticated {
    pub fn emit(self) {
        AUTHENTICATED.with_label_values(&[self.key.label()]).inc();
    }
}

/// The device port's edge events, as metrics.
#[derive(Debug)]
pub struct Edge;
impl nearfield_common::serve::EdgeEvents for Edge {
    fn connection_refused(&self) {
        CONNECTIONS_REFUSED.inc();
        tracing::debug!("connection refused at the connection cap");
    }
    fn connections_open(&self, n: usize) {
        CONNECTIONS.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Registers every metric so `/metrics` lists them from the start.
pub fn register_all() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&ACCEPTED);
    LazyLock::force(&REJECTED);
    LazyLock::force(&PRODUCE_LATENCY);
    LazyLock::force(&PRODUCE_ERRORS);
    LazyLock::force(&QUEUE_DEPTH);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&HEARTBEATS);
    LazyLock::force(&STORES);
    LazyLock::force(&DLQ_WRITTEN);
    LazyLock::force(&CONNECTIONS_REFUSED);
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&AUTHENTICATED);
    LazyLock::force(&RETURNS_BEYOND_SALES);
}

/// A request was answered.
#[derive(Debug)]
pub struct RequestCompleted {
    pub route: &'static str,
    pub status: u16,
    pub elapsed: Duration,
}
impl RequestCompleted {
    pub fn emit(self) {
        tracing::debug!(
            route = self.route,
            status = self.status,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "request"
        );
        REQUESTS.with_label_values(&[self.route, status_label(self.status)]).inc();
        REQUEST_DURATION.with_label_values(&[self.route]).observe(self.elapsed.as_secs_f64());
    }
}

fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// Events became durable and were acknowledged to the device.
#[derive(Debug)]
pub struct EventsAccepted {
    pub count: usize,
}
impl EventsAccepted {
    pub fn emit(self) {
        ACCEPTED.inc_by(self.count as u64);
    }
}

/// An event broke a rule.
#[derive(Debug)]
pub struct EventRejected<'a> {
    pub rule: &'static str,
    pub store_id: Option<&'a str>,
}
impl EventRejected<'_> {
    pub fn emit(self) {
        tracing::debug!(rule = self.rule, store_id = self.store_id, "event rejected");
        REJECTED.with_label_values(&[self.rule]).inc();
    }
}

/// Kafka acknowledged a record.
#[derive(Debug)]
pub struct RecordAcked {
    pub latency: Duration,
}
impl RecordAcked {
    pub fn emit(self) {
        PRODUCE_LATENCY.observe(self.latency.as_secs_f64());
    }
}

/// Kafka did not take or did not acknowledge a record.
#[derive(Debug)]
pub struct ProduceFailed<'a> {
    /// `queue_full`, `timeout`, `retryable` or `fatal`.
    pub kind: &'static str,
    pub error: &'a str,
}
impl ProduceFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(kind = self.kind, error = self.error, "produce failed; answering 503");
        PRODUCE_ERRORS.with_label_values(&[self.kind]).inc();
    }
}

/// A request failed authentication. The credentials themselves are never logged.
#[derive(Debug)]
pub struct AuthFailed<'a> {
    pub reason: &'static str,
    pub store_id: Option<&'a str>,
}
impl AuthFailed<'_> {
    pub fn emit(self) {
        tracing::info!(reason = self.reason, store_id = self.store_id, "authentication failed");
        AUTH_FAILURES.with_label_values(&[self.reason]).inc();
    }
}

/// A store exceeded its rate.
#[derive(Debug)]
pub struct RateLimited<'a> {
    pub store_id: &'a str,
}
impl RateLimited<'_> {
    pub fn emit(self) {
        tracing::debug!(store_id = self.store_id, "rate limited");
        RATE_LIMITED.inc();
    }
}

/// A heartbeat was accepted.
#[derive(Debug)]
pub struct HeartbeatAccepted;
impl HeartbeatAccepted {
    pub fn emit(self) {
        HEARTBEATS.inc();
    }
}

/// Rejected events reached the dead-letter topic.
#[derive(Debug)]
pub struct DlqWritten {
    pub count: usize,
}
impl DlqWritten {
    pub fn emit(self) {
        DLQ_WRITTEN.inc_by(self.count as u64);
    }
}

/// The registry changed size.
#[derive(Debug)]
pub struct RegistrySize {
    pub stores: usize,
}
impl RegistrySize {
    pub fn emit(self) {
        STORES.set(self.stores as i64);
    }
}

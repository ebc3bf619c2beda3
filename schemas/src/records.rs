//! Rust types of the Avro records in `schemas/avro/`.
//!
//! Field names, order and types mirror the `.avsc` files exactly; the tests in
//! [`crate::registry`] and `tests/contract.rs` prove it by round-tripping every record
//! through both the fast codec and the reference `apache-avro` implementation with the
//! schema files themselves. Timestamps are UTC milliseconds (`timestamp-millis`).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC (Avro `timestamp-millis`).
pub type Millis = i64;

/// What happened to the units of a [`SaleEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SaleKind {
    /// Units left the shop.
    Sale,
    /// Units came back.
    Return,
    /// Units were ordered for later pick-up.
    Preorder,
}

impl SaleKind {
    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            SaleKind::Sale => "SALE",
            SaleKind::Return => "RETURN",
            SaleKind::Preorder => "PREORDER",
        }
    }
}

/// One sale, return or pre-order recorded by a store device (`sales.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleEvent {
    pub event_id: String,
    pub store_id: String,
    pub device_id: String,
    pub grid_id: String,
    pub sku: String,
    pub kind: SaleKind,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub currency: String,
    pub occurred_at: Millis,
    pub received_at: Millis,
}

/// A [`SaleEvent`] whose strings borrow from the record they were decoded from (the
/// aggregator's hot path: no allocation per field). Decode it with
/// [`Codec::decode_sale`](crate::Codec::decode_sale) (or the general
/// [`Codec::decode_as::<SaleEvent, SaleEventRef>`](crate::Codec::decode_as), whose answers
/// it gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SaleEventRef<'a> {
    #[serde(borrow)]
    pub event_id: &'a str,
    #[serde(borrow)]
    pub store_id: &'a str,
    #[serde(borrow)]
    pub device_id: &'a str,
    #[serde(borrow)]
    pub grid_id: &'a str,
    #[serde(borrow)]
    pub sku: &'a str,
    pub kind: SaleKind,
    pub quantity: i32,
    pub unit_price_minor: i64,
    #[serde(borrow)]
    pub currency: &'a str,
    pub occurred_at: Millis,
    pub received_at: Millis,
}

impl<'a> From<&'a SaleEvent> for SaleEventRef<'a> {
    fn from(e: &'a SaleEvent) -> Self {
        SaleEventRef {
            event_id: &e.event_id,
            store_id: &e.store_id,
            device_id: &e.device_id,
            grid_id: &e.grid_id,
            sku: &e.sku,
            kind: e.kind,
            quantity: e.quantity,
            unit_price_minor: e.unit_price_minor,
            currency: &e.currency,
            occurred_at: e.occurred_at,
            received_at: e.received_at,
        }
    }
}

impl<'a> From<&SaleEventRef<'a>> for SaleEventRef<'a> {
    fn from(e: &SaleEventRef<'a>) -> Self {
        *e
    }
}

/// Aggregated demand of one SKU in one grid cell over one window (`demand.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandWindow {
    pub grid_id: String,
    pub sku: String,
    pub window_start: Millis,
    pub window_end: Millis,
    pub units_sold: i64,
    pub units_returned: i64,
    pub preorder_units: i64,
    pub net_units: i64,
    pub revenue_minor: i64,
    pub currency: String,
    pub event_count: i64,
    pub distinct_stores: i32,
    pub stores_reporting: i32,
    pub stores_expected: i32,
    /// Stores whose latest heartbeat in the window held sales not uploaded yet.
    #[serde(default)]
    pub stores_pending: i32,
    pub revision: i32,
    pub is_final: bool,
    pub watermark: Millis,
    /// The `sales.v1` partition whose state emitted the record (whose watermark
    /// `watermark` is); -1 when unknown.
    #[serde(default = "unknown_partition")]
    pub source_partition: i32,
    pub last_event_at: Millis,
    pub emitted_at: Millis,
}

fn unknown_partition() -> i32 {
    -1
}

/// How completely one grid reported during one closed window (`coverage.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridCoverage {
    pub grid_id: String,
    pub window_start: Millis,
    pub window_end: Millis,
    pub stores_expected: i32,
    pub stores_reporting: i32,
    pub stores_pending: i32,
    pub pending_events: i64,
    pub watermark: Millis,
    pub emitted_at: Millis,
}

/// Why a [`PlanSignal`] was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlanReason {
    Threshold,
    Scheduled,
    Surge,
    Revision,
}

/// How binding a [`PlanSignal`] is (as in EDI 830).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Firmness {
    Firm,
    Planning,
}

/// A production-plan signal for one supplier (`plan.<supplier_id>.v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSignal {
    pub signal_id: String,
    pub supplier_id: String,
    pub factory_id: String,
    pub sku: String,
    #[serde(default)]
    pub warehouse_id: Option<String>,
    pub region: String,
    pub horizon_start: Millis,
    pub horizon_end: Millis,
    pub observed_units: i64,
    pub forecast_units: f64,
    pub forecast_low: f64,
    pub forecast_high: f64,
    #[serde(default = "default_interval_coverage")]
    pub interval_coverage: f64,
    pub recommended_units: i64,
    pub moq: i64,
    pub batch_size: i64,
    pub reason: PlanReason,
    pub firmness: Firmness,
    pub contributing_grids: Vec<String>,
    pub contributing_stores: i32,
    pub stores_reporting: i32,
    pub stores_expected: i32,
    pub based_on_watermark: Millis,
    pub generated_at: Millis,
    pub revision: i32,
    #[serde(default)]
    pub supersedes: Option<String>,
    /// The quantile of demand over lead time + horizon that `recommended_units` covers.
    #[serde(default = "default_service_level")]
    pub service_level: f64,
    /// Units needed before rounding (MOQ and batch).
    #[serde(default)]
    pub need_units: f64,
    /// A warehouse plan's allocation per region (empty: a per-region plan of v1).
    #[serde(default)]
    pub allocations: Vec<RegionAllocation>,
}

/// The share of a warehouse plan that goes to one of its regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionAllocation {
    pub region: String,
    pub units: i64,
    pub forecast_units: f64,
    pub forecast_low: f64,
    pub forecast_high: f64,
    pub observed_units: i64,
    pub contributing_stores: i32,
}

fn default_interval_coverage() -> f64 {
    0.8
}

fn default_service_level() -> f64 {
    0.5
}

/// A store device saying it is online (`heartbeats.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub store_id: String,
    pub device_id: String,
    pub grid_id: String,
    pub sent_at: Millis,
    pub received_at: Millis,
    #[serde(default)]
    pub pending_events: i32,
    #[serde(default)]
    pub last_upload_at: Option<Millis>,
}

/// One store of the registry (`stores.v1`, compacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreRecord {
    pub store_id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub device_ids: Vec<String>,
    #[serde(default = "default_key_version")]
    pub key_version: i32,
    #[serde(default = "default_true")]
    pub active: bool,
    pub updated_at: Millis,
}

fn default_key_version() -> i32 {
    1
}

fn default_true() -> bool {
    true
}

/// A warehouse and the H3 cells it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceArea {
    pub warehouse_id: String,
    pub cells: Vec<String>,
}

/// One SKU of the supplier catalog (`catalog.v1`, compacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRecord {
    pub sku: String,
    pub name: String,
    pub category: String,
    pub supplier_id: String,
    pub factory_id: String,
    pub moq: i64,
    pub batch_size: i64,
    pub lead_time_hours: i32,
    pub service_areas: Vec<ServiceArea>,
    pub updated_at: Millis,
}

/// Stage that rejected an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectSource {
    Ingest,
    Aggregator,
    Emitter,
}

/// An input that could not be accepted, with the reason (`sales.dlq.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    pub source: RejectSource,
    pub reason: String,
    #[serde(default)]
    pub field: Option<String>,
    pub message: String,
    #[serde(default)]
    pub store_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    pub content_type: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(default)]
    pub origin: Option<String>,
    pub rejected_at: Millis,
}

impl RejectedEvent {
    /// A Kafka record a stage could not decode: the reason and message from the decode
    /// error, the bytes as read, and `origin` = `topic/partition/offset`.
    pub fn undecodable(
        source: RejectSource,
        error: &crate::DecodeError,
        content_type: &str,
        payload: &[u8],
        origin: String,
        rejected_at: Millis,
    ) -> Self {
        RejectedEvent {
            source,
            reason: error.reason().to_string(),
            field: None,
            message: error.to_string(),
            store_id: None,
            device_id: None,
            event_id: None,
            content_type: content_type.to_string(),
            payload: payload.to_vec(),
            origin: Some(origin),
            rejected_at,
        }
    }
}

//! Golden vectors: a few encoded messages per record, with their JSON form, in
//! `schemas/testdata/<Record>/<case>.avro` and `.json`.
//!
//! The `.avro` files are Avro single-object encoded (`C3 01`, fingerprint, datum). The
//! `.json` files are what the reference `apache-avro` implementation decodes the bytes to,
//! written in plain JSON: records as objects, unions as the bare value or `null`, enums as
//! their symbol, timestamps as integer milliseconds, `bytes` as a string whose code points
//! 0–255 are the bytes (Avro's JSON convention). Any standard Avro implementation must
//! decode each `.avro` to its `.json` and encode the JSON back to the same bytes; the Java
//! and Python clients test exactly that.
//!
//! `cargo run -p nearfield-schemas --example golden` rewrites the files; the tests check
//! that they are current.

use std::path::Path;

use apache_avro::types::Value;

use crate::codec::Codec;
use crate::records::*;
use crate::registry::AvroRecord;

/// One golden vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    /// Record simple name (directory).
    pub record: &'static str,
    /// Case name (file stem).
    pub case: &'static str,
    /// Single-object encoded bytes.
    pub bytes: Vec<u8>,
}

fn vector<T: AvroRecord>(case: &'static str, value: &T) -> Vector {
    #[allow(clippy::expect_used)] // fixed values of the contract's own types
    let bytes = Codec::single_object().encode(value).expect("golden value encodes");
    Vector { record: T::NAME, case, bytes }
}

const T0: Millis = 1_764_000_000_000; // 2025-11-24T16:00:00Z

/// Every golden vector, built from Rust values with this crate's encoder.
pub fn vectors() -> Vec<Vector> {
    let sale = SaleEvent {
        event_id: "01JDQ4T7ZK3W9V6M2X8B5N4C1A".into(),
        store_id: "store-000042".into(),
        device_id: "pos-1".into(),
        grid_id: "8831aa5551fffff".into(),
        sku: "SKU-MILK-1L".into(),
        kind: SaleKind::Sale,
        quantity: 2,
        unit_price_minor: 650,
        currency: "CNY".into(),
        occurred_at: T0,
        received_at: T0 + 412,
    };
    let window = DemandWindow {
        grid_id: "8831aa5551fffff".into(),
        sku: "SKU-MILK-1L".into(),
        window_start: T0,
        window_end: T0 + 300_000,
        units_sold: 120,
        units_returned: 3,
        preorder_units: 10,
        net_units: 127,
        revenue_minor: 76_050,
        currency: "CNY".into(),
        event_count: 71,
        distinct_stores: 9,
        stores_reporting: 11,
        stores_expected: 12,
        stores_pending: 2,
        revision: 0,
        is_final: true,
        watermark: T0 + 305_000,
        source_partition: 3,
        last_event_at: T0 + 299_870,
        emitted_at: T0 + 305_120,
    };
    let plan = PlanSignal {
        signal_id: "sig-3f9a1c0e7b2d4a51".into(),
        supplier_id: "dairy-east".into(),
        factory_id: "plant-7".into(),
        sku: "SKU-MILK-1L".into(),
        warehouse_id: Some("wh-pudong".into()),
        region: "8631aa557ffffff".into(),
        horizon_start: T0 + 86_400_000,
        horizon_end: T0 + 2 * 86_400_000,
        observed_units: 5_130,
        forecast_units: 5_402.5,
        forecast_low: 4_870.25,
        forecast_high: 5_990.75,
        interval_coverage: 0.8,
        recommended_units: 5_500,
        moq: 1_000,
        batch_size: 250,
        reason: PlanReason::Threshold,
        firmness: Firmness::Firm,
        contributing_grids: vec!["8831aa5551fffff".into(), "8831aa5553fffff".into()],
        contributing_stores: 37,
        stores_reporting: 35,
        stores_expected: 40,
        based_on_watermark: T0 + 86_100_000,
        generated_at: T0 + 86_105_000,
        revision: 0,
        supersedes: None,
        service_level: 0.9,
        need_units: 5_378.5,
        allocations: vec![
            RegionAllocation {
                region: "8731aa555ffffff".into(),
                units: 3_250,
                forecast_units: 3_180.5,
                forecast_low: 2_870.0,
                forecast_high: 3_530.25,
                observed_units: 3_020,
                contributing_stores: 22,
            },
            RegionAllocation {
                region: "8731aa554ffffff".into(),
                units: 2_250,
                forecast_units: 2_222.0,
                forecast_low: 2_000.25,
                forecast_high: 2_460.5,
                observed_units: 2_110,
                contributing_stores: 15,
            },
        ],
    };
    let revision = PlanSignal {
        signal_id: "sig-77c0d2e41a9b3f08".into(),
        warehouse_id: None,
        reason: PlanReason::Revision,
        firmness: Firmness::Planning,
        contributing_grids: vec![],
        revision: 1,
        supersedes: Some("sig-3f9a1c0e7b2d4a51".into()),
        forecast_units: -0.0,
        allocations: vec![],
        ..plan.clone()
    };
    let heartbeat = Heartbeat {
        store_id: "store-000042".into(),
        device_id: "pos-1".into(),
        grid_id: "8831aa5551fffff".into(),
        sent_at: T0 - 1_000,
        received_at: T0,
        pending_events: 0,
        last_upload_at: None,
    };
    let store = StoreRecord {
        store_id: "store-000042".into(),
        name: "Lin's Corner Shop 林记便利店".into(),
        lat: 31.2304,
        lon: 121.4737,
        device_ids: vec!["pos-1".into(), "scale-1".into()],
        key_version: 1,
        active: true,
        updated_at: T0,
    };
    let catalog = CatalogRecord {
        sku: "SKU-MILK-1L".into(),
        name: "Fresh milk 1 L".into(),
        category: "dairy".into(),
        supplier_id: "dairy-east".into(),
        factory_id: "plant-7".into(),
        moq: 1_000,
        batch_size: 250,
        lead_time_hours: 24,
        service_areas: vec![ServiceArea {
            warehouse_id: "wh-pudong".into(),
            cells: vec!["8631aa557ffffff".into(), "8631aa55fffffff".into()],
        }],
        updated_at: T0,
    };
    let rejected = RejectedEvent {
        source: RejectSource::Ingest,
        reason: "quantity.range".into(),
        field: Some("quantity".into()),
        message: "quantity must be between 1 and 10000, got 0".into(),
        store_id: Some("store-000042".into()),
        device_id: Some("pos-1".into()),
        event_id: Some("01JDQ4T7ZK3W9V6M2X8B5N4C1B".into()),
        content_type: "application/json".into(),
        payload: b"{\"quantity\":0}\x00\xff".to_vec(),
        origin: None,
        rejected_at: T0,
    };
    vec![
        vector("sale", &sale),
        vector(
            "return",
            &SaleEvent {
                kind: SaleKind::Return,
                quantity: 1,
                event_id: "r-1".into(),
                ..sale.clone()
            },
        ),
        vector(
            "preorder_zero_price",
            &SaleEvent {
                kind: SaleKind::Preorder,
                unit_price_minor: 0,
                event_id: "p-1".into(),
                ..sale
            },
        ),
        vector("final", &window),
        vector(
            "revision",
            &DemandWindow {
                revision: 2,
                units_sold: 121,
                net_units: 128,
                is_final: true,
                ..window.clone()
            },
        ),
        vector(
            "negative_net",
            &DemandWindow {
                units_sold: 0,
                preorder_units: 0,
                net_units: -3,
                revenue_minor: -1_950,
                is_final: false,
                ..window
            },
        ),
        vector("threshold", &plan),
        vector("revision", &revision),
        vector("online", &heartbeat),
        vector("backlog", &Heartbeat { pending_events: 37, ..heartbeat.clone() }),
        vector(
            "backlog_since",
            &Heartbeat {
                pending_events: 37,
                last_upload_at: Some(T0 - 8 * 3_600_000),
                ..heartbeat
            },
        ),
        vector("store", &store),
        vector(
            "closed_store",
            &StoreRecord { active: false, device_ids: vec![], key_version: 3, ..store },
        ),
        vector("sku", &catalog),
        vector("rejected", &rejected),
        vector(
            "silent_grid",
            &GridCoverage {
                grid_id: "8831aa5553fffff".into(),
                window_start: T0,
                window_end: T0 + 3_600_000,
                stores_expected: 6,
                stores_reporting: 2,
                stores_pending: 1,
                pending_events: 37,
                watermark: T0 + 3_610_000,
                emitted_at: T0 + 3_610_400,
            },
        ),
    ]
}

/// The JSON form of an Avro value, as described in the module docs.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => J::from(*i),
        Value::Long(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l)
        | Value::TimeMicros(l) => J::from(*l),
        Value::Float(f) => J::from(f64::from(*f)),
        Value::Double(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            J::String(b.iter().map(|&c| char::from(c)).collect())
        }
        Value::String(s) | Value::Enum(_, s) => J::String(s.clone()),
        Value::Union(_, inner) => value_to_json(inner),
        Value::Array(items) => J::Array(items.iter().map(value_to_json).collect()),
        Value::Map(map) => {
            J::Object(map.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
        }
        Value::Record(fields) => {
            J::Object(fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
        }
        other => J::String(format!("{other:?}")),
    }
}

/// Decodes single-object `bytes` with the reference implementation and the schema file.
pub fn reference_decode(record: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let (_, set) = crate::registry::all()
        .into_iter()
        .find(|(name, _)| *name == record)
        .ok_or_else(|| format!("unknown record {record}"))?;
    let crate::Header::SingleObject(fp) = crate::Header::split(bytes).map_err(|e| e.to_string())?.0
    else {
        return Err("not single-object encoded".into());
    };
    let writer = set.by_fingerprint(&fp).ok_or("unknown fingerprint")?;
    let schema = apache_avro::Schema::parse_str(writer.json).map_err(|e| e.to_string())?;
    let mut datum = &bytes[crate::framing::SINGLE_OBJECT_HEADER_LEN..];
    let value =
        apache_avro::from_avro_datum(&schema, &mut datum, None).map_err(|e| e.to_string())?;
    if !datum.is_empty() {
        return Err(format!("{} trailing bytes", datum.len()));
    }
    Ok(value_to_json(&value))
}

/// Writes every vector and its JSON form under `dir` (`<Record>/<case>.avro|.json`).
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    for v in vectors() {
        let sub = dir.join(v.record);
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("{}.avro", v.case)), &v.bytes)?;
        let json = reference_decode(v.record, &v.bytes).map_err(std::io::Error::other)?;
        let mut text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(sub.join(format!("{}.json", v.case)), text)?;
    }
    Ok(())
}

//! The Rust types, the schema files and the golden vectors agree.

use std::path::Path;

use nearfield_schemas::golden::{reference_decode, vectors};
use nearfield_schemas::*;
use proptest::prelude::*;

fn testdata() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata"))
}

#[test]
fn golden_vectors_on_disk_are_current() {
    for v in vectors() {
        let dir = testdata().join(v.record);
        let bytes = std::fs::read(dir.join(format!("{}.avro", v.case)))
            .unwrap_or_else(|e| panic!("{}/{}: {e} (run the golden example)", v.record, v.case));
        assert_eq!(bytes, v.bytes, "{}/{}.avro is stale", v.record, v.case);
        let text = std::fs::read_to_string(dir.join(format!("{}.json", v.case))).expect("json");
        let on_disk: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        let decoded = reference_decode(v.record, &bytes).expect("reference decodes");
        assert_eq!(decoded, on_disk, "{}/{}.json", v.record, v.case);
    }
}

#[test]
fn every_file_in_testdata_is_a_known_vector() {
    let known: Vec<String> = vectors().iter().map(|v| format!("{}/{}", v.record, v.case)).collect();
    for dir in std::fs::read_dir(testdata()).expect("testdata") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("dir") {
            let path = file.expect("entry").path();
            let stem = path.file_stem().and_then(|s| s.to_str()).expect("stem");
            let record = dir.file_name().and_then(|s| s.to_str()).expect("name");
            assert!(known.contains(&format!("{record}/{stem}")), "orphan {}", path.display());
        }
    }
}

/// Decoding a golden vector with the fast codec and encoding it again gives the same bytes,
/// and the reference decoder agrees with the JSON form of the Rust value.
fn fast_round_trip<T: AvroRecord + serde::Serialize + std::fmt::Debug>(bytes: &[u8]) {
    let codec = Codec::single_object();
    let value: T = codec.decode(bytes).expect("fast decode");
    assert_eq!(codec.encode(&value).expect("encode"), bytes, "{value:?}");
}

#[test]
fn fast_codec_round_trips_every_golden_vector() {
    for v in vectors() {
        match v.record {
            "SaleEvent" => fast_round_trip::<SaleEvent>(&v.bytes),
            "DemandWindow" => fast_round_trip::<DemandWindow>(&v.bytes),
            "PlanSignal" => fast_round_trip::<PlanSignal>(&v.bytes),
            "Heartbeat" => fast_round_trip::<Heartbeat>(&v.bytes),
            "StoreRecord" => fast_round_trip::<StoreRecord>(&v.bytes),
            "CatalogRecord" => fast_round_trip::<CatalogRecord>(&v.bytes),
            "RejectedEvent" => fast_round_trip::<RejectedEvent>(&v.bytes),
            "GridCoverage" => fast_round_trip::<GridCoverage>(&v.bytes),
            other => panic!("no Rust type for {other}"),
        }
    }
}

fn kind() -> impl Strategy<Value = SaleKind> {
    prop_oneof![Just(SaleKind::Sale), Just(SaleKind::Return), Just(SaleKind::Preorder)]
}

prop_compose! {
    fn sale_event()(
        event_id in "\\PC{0,40}", store_id in "[a-z0-9-]{0,20}", device_id in ".{0,10}",
        grid_id in "[0-9a-f]{15}", sku in "\\PC{0,30}", kind in kind(),
        quantity in any::<i32>(), unit_price_minor in any::<i64>(), currency in "[A-Z]{3}",
        occurred_at in any::<i64>(), received_at in any::<i64>(),
    ) -> SaleEvent {
        SaleEvent { event_id, store_id, device_id, grid_id, sku, kind, quantity,
                    unit_price_minor, currency, occurred_at, received_at }
    }
}

prop_compose! {
    fn plan_signal()(
        ids in proptest::collection::vec("\\PC{0,12}", 5), warehouse in proptest::option::of("[a-z]{1,8}"),
        nums in proptest::collection::vec(any::<i64>(), 8), floats in proptest::collection::vec(any::<f64>(), 4),
        ints in proptest::collection::vec(any::<i32>(), 4), grids in proptest::collection::vec("[0-9a-f]{15}", 0..20),
        reason in prop_oneof![Just(PlanReason::Threshold), Just(PlanReason::Scheduled), Just(PlanReason::Surge), Just(PlanReason::Revision)],
        firm in any::<bool>(), supersedes in proptest::option::of("sig-[0-9a-f]{16}"),
        level in any::<f64>(),
        allocations in proptest::collection::vec(("[0-9a-f]{15}", any::<i64>(), any::<f64>(), any::<i64>(), any::<i32>()), 0..4),
    ) -> PlanSignal {
        PlanSignal {
            signal_id: ids[0].clone(), supplier_id: ids[1].clone(), factory_id: ids[2].clone(),
            sku: ids[3].clone(), warehouse_id: warehouse, region: ids[4].clone(),
            horizon_start: nums[0], horizon_end: nums[1], observed_units: nums[2],
            forecast_units: floats[0], forecast_low: floats[1], forecast_high: floats[2], interval_coverage: floats[3],
            recommended_units: nums[3], moq: nums[4], batch_size: nums[5], reason,
            firmness: if firm { Firmness::Firm } else { Firmness::Planning },
            contributing_grids: grids, contributing_stores: ints[0], stores_reporting: ints[1],
            stores_expected: ints[2], based_on_watermark: nums[6], generated_at: nums[7],
            revision: ints[3], supersedes, service_level: level, need_units: level * 2.0,
            allocations: allocations.into_iter().map(|(region, units, f, observed_units, contributing_stores)| RegionAllocation {
                region, units, forecast_units: f, forecast_low: f / 2.0, forecast_high: f * 2.0, observed_units, contributing_stores,
            }).collect(),
        }
    }
}

/// What the reference implementation decodes, in the golden JSON form.
fn reference<T: AvroRecord>(bytes: &[u8]) -> serde_json::Value {
    reference_decode(T::NAME, bytes).expect("reference implementation decodes our bytes")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn sale_events_round_trip_and_match_the_schema_file(event in sale_event()) {
        let codec = Codec::single_object();
        let bytes = codec.encode(&event).expect("encodes");
        prop_assert_eq!(&codec.decode::<SaleEvent>(&bytes).expect("decodes"), &event);
        let json = reference::<SaleEvent>(&bytes);
        prop_assert_eq!(&json["event_id"], &serde_json::json!(event.event_id));
        prop_assert_eq!(&json["kind"], &serde_json::json!(event.kind.as_str()));
        prop_assert_eq!(&json["quantity"], &serde_json::json!(event.quantity));
        prop_assert_eq!(&json["occurred_at"], &serde_json::json!(event.occurred_at));
        prop_assert_eq!(&json["received_at"], &serde_json::json!(event.received_at));
        prop_assert_eq!(json.as_object().map(|o| o.len()), Some(11));
    }

    #[test]
    fn plan_signals_round_trip(signal in plan_signal()) {
        let codec = Codec::single_object();
        let bytes = codec.encode(&signal).expect("encodes");
        let back: PlanSignal = codec.decode(&bytes).expect("decodes");
        // NaN != NaN: compare through the bytes.
        prop_assert_eq!(codec.encode(&back).expect("encodes"), bytes.clone());
        let json = reference::<PlanSignal>(&bytes);
        prop_assert_eq!(&json["supersedes"], &serde_json::json!(signal.supersedes));
        prop_assert_eq!(json["contributing_grids"].as_array().map(Vec::len), Some(signal.contributing_grids.len()));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let codec = Codec::single_object();
        let _ = codec.decode::<SaleEvent>(&bytes);
        let _ = codec.decode::<PlanSignal>(&bytes);
        let _ = codec.decode::<CatalogRecord>(&bytes);
    }

    #[test]
    fn corrupting_a_valid_message_never_panics(
        event in sale_event(), pos in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let codec = Codec::single_object();
        let mut bytes = codec.encode(&event).expect("encodes");
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = codec.decode::<SaleEvent>(&bytes);
    }
}

#[test]
fn an_older_writer_is_read_with_defaults() {
    // A Heartbeat written before `pending_events` existed (simulated by a writer schema
    // without it) decodes with the default, through schema fingerprint lookup of a
    // released version. The released v1 already has the field, so build the old bytes by
    // hand with the reference implementation and check the fast decoder refuses unknown
    // fingerprints rather than misreading them.
    let old = r#"{"type":"record","name":"Heartbeat","namespace":"dev.nearfield.v1","fields":[
        {"name":"store_id","type":"string"},{"name":"device_id","type":"string"},
        {"name":"grid_id","type":"string"},
        {"name":"sent_at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"received_at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    compat::full(old, Heartbeat::schemas().current().json)
        .expect("adding a defaulted field is fully compatible");
    let schema = apache_avro::Schema::parse_str(old).expect("parses");
    let fp = schema.fingerprint::<apache_avro::rabin::Rabin>();
    let mut record = apache_avro::types::Record::new(&schema).expect("record");
    record.put("store_id", "s");
    record.put("device_id", "d");
    record.put("grid_id", "g");
    record.put("sent_at", apache_avro::types::Value::TimestampMillis(1));
    record.put("received_at", apache_avro::types::Value::TimestampMillis(2));
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&fp.bytes);
    bytes.extend(apache_avro::to_avro_datum(&schema, record).expect("encodes"));
    let err = Codec::single_object().decode::<Heartbeat>(&bytes).expect_err("unknown writer");
    assert_eq!(err.reason(), "decode.fingerprint");
}

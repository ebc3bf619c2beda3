//! SPEC §7 on real Kafka, in-process: a synthetic stream of DemandWindows in, plan signals
//! out on one topic per supplier — exactly the decisions of the reference state machine
//! (THRESHOLD, SCHEDULED, SURGE and REVISION among them) with the completeness that
//! `coverage.v1` gives (silent shops counted, pending ones holding FIRM back), nothing for a SKU whose shops
//! are thinner than the privacy floor, undecodable bytes to the dead-letter topic, and
//! the recent signals over HTTP (the operator's token sees every supplier's, a supplier's
//! own token only its own) and metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_common::operator::{OperatorToken, SupplierTokens};
use nearfield_common::shutdown::CancellationToken;
use nearfield_emitter::EmitConfig;
use nearfield_emitter::coverage::Coverage;
use nearfield_emitter::state::{Side, StateConfig};
use nearfield_emitter::synthetic::{self, Scenario};
use nearfield_schemas::{
    CatalogRecord, Codec, PlanReason, PlanSignal, RejectSource, RejectedEvent, ServiceArea,
};
use nearfield_testkit::http::assert_metrics;
use nearfield_testkit::{Isolation, Kafka, read_to_end};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const PARTITIONS: i32 = 2;
const OPERATOR: &str = "operator-token-of-the-test";
const SYN0: &str = "token-of-supplier-syn-0";
const LIVE: &str = "token-of-supplier-live";

fn read(topic: &str, isolation: Isolation) -> Vec<nearfield_testkit::Record> {
    read_to_end(Kafka::shared(), topic, isolation, Duration::from_secs(30))
}

async fn signals_on(topic: String) -> Vec<PlanSignal> {
    let recs = tokio::task::spawn_blocking(move || read(&topic, Isolation::ReadCommitted))
        .await
        .expect("read");
    let codec = Codec::single_object();
    recs.iter().map(|r| codec.decode(r.value.as_deref().expect("value")).expect("decode")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_windows_in_plan_signals_out() {
    let kafka = Kafka::shared();
    let (id, settings) = kafka.emitter_topics("emit", PARTITIONS);
    let topics = settings.topics.clone();
    // The synthetic SKUs, plus one sold by a single shop (thinner than k = 3).
    let scenario = Scenario::default();
    let mut records = synthetic::catalog_records(&scenario);
    let area = records[0].service_areas[0].cells[0].clone();
    records.push(CatalogRecord {
        sku: "THIN-1".into(),
        name: "Sold by one shop".into(),
        category: "synthetic".into(),
        supplier_id: "thin".into(),
        factory_id: "f".into(),
        moq: 1,
        batch_size: 1,
        lead_time_hours: 0,
        service_areas: vec![ServiceArea { warehouse_id: "wh".into(), cells: vec![area] }],
        updated_at: 0,
    });
    // One more SKU arrives on catalog.v1 only (a supplier not in the file: its plan topic
    // is created when its first signal is).
    let mut live = records[0].clone();
    live.sku = "LIVE-1".into();
    live.supplier_id = "live".into();
    let dir = tempfile::tempdir().expect("tmp");
    let catalog_file = dir.path().join("catalog.jsonl");
    let lines: Vec<String> =
        records.iter().map(|r| serde_json::to_string(r).expect("json")).collect();
    std::fs::write(&catalog_file, lines.join("\n")).expect("catalog");
    let cfg = EmitConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            group_id: format!("emit-{id}"),
            instance_id: Some("it".into()),
            commit_interval_ms: 100,
            operator_token: Some(OperatorToken::new(OPERATOR).expect("token")),
            supplier_tokens: SupplierTokens::parse(&format!("syn-0 {SYN0}\nlive {LIVE}\n"))
                .expect("tokens"),
            ..nearfield_eos::LoopSettings::default()
        },
        catalog_file: Some(catalog_file),
        follow_catalog_topic: true,
        privacy_k: 3,
        idle_advance_ms: 0,
        coverage_keep_buckets: 1_000,
        ..EmitConfig::default()
    };
    let state_cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
    let catalog = nearfield_emitter::catalog::Catalog::default();
    for r in records.iter().chain([&live]) {
        catalog.upsert(r).expect("valid record");
    }

    let grid = synthetic::grids(1).remove(0);
    // Interleaved with the stream (so they share its clock): THIN-1 sells like SYN-0000 in
    // one grid but from a single shop; LIVE-1 sells like SYN-0001.
    let windows: Vec<_> = synthetic::stream(&scenario)
        .into_iter()
        .flat_map(|w| {
            let thin = (w.sku == synthetic::sku(0) && w.grid_id == grid).then(|| {
                let mut c = w.clone();
                c.sku = "THIN-1".into();
                c.distinct_stores = 1;
                c
            });
            let live = (w.sku == synthetic::sku(1)).then(|| {
                let mut c = w.clone();
                c.sku = "LIVE-1".into();
                c
            });
            std::iter::once(w).chain(thin).chain(live)
        })
        .collect();
    let partition_of = |sku: &str| partition_for_key(sku.as_bytes(), PARTITIONS);
    let coverage = synthetic::coverage(&scenario);
    let book = Coverage::new(state_cfg.region_res, state_cfg.bucket, cfg.coverage_keep_buckets);
    for c in &coverage {
        book.apply(c).expect("valid coverage");
    }
    let side = Side { catalog: &catalog, coverage: Some(&book) };
    let expected = synthetic::reference(&windows, partition_of, &state_cfg, side);
    let plain = synthetic::reference(&windows, partition_of, &state_cfg, &catalog);
    assert!(
        expected.iter().zip(&plain).any(|(a, b)| a.firmness != b.firmness),
        "coverage changes some plan's firmness"
    );
    let reasons: BTreeSet<_> = expected.iter().map(|s| format!("{:?}", s.reason)).collect();
    assert_eq!(reasons.len(), 4, "the scenario exercises every rule: {reasons:?}");
    assert!(expected.iter().any(|s| s.supplier_id == "live"));
    assert!(expected.iter().all(|s| s.supplier_id != "thin"));
    // THIN-1 reached the decision points (its demand passed the MOQ): withheld by the
    // floor, not ignored.
    let thin_units: i64 = windows.iter().filter(|w| w.sku == "THIN-1").map(|w| w.net_units).sum();
    assert!(thin_units > 10 * records.last().map_or(1, |r| r.moq), "{thin_units}");
    let k1 = EmitConfig { privacy_k: 1, ..cfg.clone() };
    let k1 = Arc::new(StateConfig::from_config(&k1).expect("valid"));
    let without_floor = synthetic::reference(&windows, partition_of, &k1, &catalog);
    assert!(
        without_floor.iter().any(|s| s.supplier_id == "thin"),
        "with k = 1 THIN-1 would be planned: the floor is what withholds it"
    );

    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::single_object();
    producer
        .send(
            FutureRecord::to(&topics.catalog)
                .key("LIVE-1")
                .payload(&codec.encode(&live).expect("encode")),
            Duration::from_secs(10),
        )
        .await
        .expect("catalog record delivered");
    for c in &coverage {
        let key = format!("{}|{}|{}", c.grid_id, c.window_start, c.window_end);
        let payload = codec.encode(c).expect("encode");
        producer
            .send(FutureRecord::to(&topics.coverage).key(&key).payload(&payload), Duration::ZERO)
            .await
            .expect("coverage record delivered");
    }
    let token = CancellationToken::new();
    let running = nearfield_emitter::start(cfg, settings, token.clone()).await.expect("start");
    let base = format!("http://{}", running.stage.local_addr);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "emitter not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    while running.catalog.get("LIVE-1").is_none() {
        assert!(Instant::now() < deadline, "catalog.v1 never followed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The whole of coverage.v1 is read before any window (decisions are then exactly the
    // reference's; a bucket whose coverage is not read yet falls back to the windows).
    let held = running.coverage.as_ref().expect("coverage followed");
    while held.len() != book.len() {
        assert!(Instant::now() < deadline, "coverage.v1: {:?} of {:?}", held.len(), book.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let send = async |key: &str, partition: i32, bytes: &[u8]| {
        producer
            .send(
                FutureRecord::to(&topics.demand).key(key).partition(partition).payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    };
    send("SYN-0000", partition_of("SYN-0000"), b"\xc3\x01garbage").await;
    for w in &windows {
        send(&w.sku, partition_of(&w.sku), &codec.encode(w).expect("encode")).await;
    }

    // Every supplier's topic ends up with exactly the reference decisions.
    let mut by_supplier: BTreeMap<String, Vec<PlanSignal>> = BTreeMap::new();
    for s in &expected {
        by_supplier.entry(s.supplier_id.clone()).or_default().push(s.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for (supplier, want) in &by_supplier {
        let topic = topics.plan(supplier);
        loop {
            let mut got = signals_on(topic.clone()).await;
            assert!(got.iter().all(|s| &s.supplier_id == supplier), "only its own plans");
            if got.len() >= want.len() {
                for s in &mut got {
                    assert!(s.generated_at > 0);
                    s.generated_at = 0;
                }
                let key = |s: &PlanSignal| s.signal_id.clone();
                let mut got_sorted = got.clone();
                got_sorted.sort_by_key(key);
                let mut want_sorted = want.clone();
                want_sorted.sort_by_key(key);
                assert_eq!(got_sorted, want_sorted, "{supplier}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{supplier}: {} of {} signals",
                got.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for s in &expected {
        assert!(s.recommended_units >= s.moq && s.recommended_units % s.batch_size == 0, "{s:?}");
        assert!(s.contributing_stores >= 3, "{s:?}");
        if s.reason == PlanReason::Revision {
            let sup = s.supersedes.as_deref().expect("a revision names what it supersedes");
            assert!(expected.iter().any(|o| o.signal_id == sup), "supersedes a signal sent");
        }
    }

    // The undecodable record went to the dead-letter topic with its origin.
    let dlq = {
        let t = topics.dlq.clone();
        tokio::task::spawn_blocking(move || read(&t, Isolation::ReadCommitted)).await.expect("dlq")
    };
    assert_eq!(dlq.len(), 1);
    let rej: RejectedEvent = codec.decode(dlq[0].value.as_deref().expect("value")).expect("decode");
    assert_eq!(rej.source, RejectSource::Emitter);
    assert!(rej.reason.starts_with("decode."), "{}", rej.reason);
    assert!(rej.origin.as_deref().is_some_and(|o| o.starts_with(&topics.demand)));

    // Recent signals and metrics over HTTP.
    let plans = async |query: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}/v1/plans{query}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("plans");
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap_or_default())
    };
    let (status, body) = plans("?supplier=syn-0&limit=5", Some(OPERATOR)).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["signals"].as_array().expect("signals");
    assert!(!listed.is_empty() && listed.len() <= 5);
    assert!(listed.iter().all(|s| s["supplier_id"] == "syn-0"));
    assert_eq!(body["coverage"]["complete"], true, "{body}");
    let (status, body) = plans("?supplier=Not%20Valid", Some(OPERATOR)).await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("supplier")), "{body}");
    // The operator sees every supplier; a supplier's own token shows its plans only, and
    // asking for another's is refused; no token or an unknown one gets nothing.
    let suppliers = |b: &serde_json::Value| -> BTreeSet<String> {
        b["signals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["supplier_id"].as_str().map(str::to_string))
            .collect()
    };
    let (_, all) = plans("?limit=1000", Some(OPERATOR)).await;
    assert!(suppliers(&all).len() > 1, "{all}");
    let (status, own) = plans("?limit=1000", Some(SYN0)).await;
    assert_eq!(status, 200);
    assert_eq!(suppliers(&own), ["syn-0".to_string()].into(), "{own}");
    let (status, body) = plans("?supplier=live", Some(SYN0)).await;
    assert_eq!((status, &body["error"]["rule"]), (403, &json!("plans.own_supplier")), "{body}");
    assert_eq!(plans("", None).await.0, 401);
    assert_eq!(plans("", Some("not-a-known-token-at-all")).await.0, 401);
    let metrics = assert_metrics(
        &base,
        &[
            "nearfield_emitter_signals_total{firmness=",
            "nearfield_emitter_privacy_suppressed_total",
            "nearfield_emitter_forecast_abs_error_units_count",
            "nearfield_emitter_event_to_signal_seconds_count",
            "nearfield_emitter_windows_total{outcome=\"undecodable\"} 1",
            "nearfield_emitter_signal_completeness_total{source=\"coverage\"}",
            "nearfield_emitter_coverage_region_buckets",
        ],
    )
    .await;
    let suppressed =
        nearfield_testkit::http::sample(&metrics, "nearfield_emitter_privacy_suppressed_total")
            .expect("suppressed value");
    assert!(suppressed > 0.0, "the thin SKU's decisions were suppressed");

    token.cancel();
    running.stage.done.await.expect("join").expect("clean stop");
}

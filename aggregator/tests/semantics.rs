//! SPEC §6 on real Kafka, in-process: out-of-order events, a device retry (duplicate
//! event_id), a late event within the allowed lateness (revision 1), a very late event
//! (to `sales.late.v1`), undecodable bytes (to `sales.dlq.v1`, the pipeline goes on),
//! completeness from heartbeats and the registry, and the live query over HTTP.

use std::time::{Duration, Instant};

mod support;

use nearfield_aggregator::AggregateConfig;
use nearfield_aggregator::config::PerSize;
use nearfield_common::shutdown::CancellationToken;
use nearfield_schemas::{Codec, DemandWindow, Heartbeat, RejectedEvent, SaleEvent, SaleKind};
use nearfield_testkit::http::{assert_metrics, assert_refused, get_json};
use nearfield_testkit::{Isolation, Kafka, read_to_end};
use rdkafka::producer::{FutureProducer, FutureRecord};

const SEC: i64 = 1_000;

fn event(id: &str, store: &str, grid: &str, q: i32, t: i64) -> SaleEvent {
    SaleEvent {
        event_id: id.into(),
        store_id: store.into(),
        device_id: "d1".into(),
        grid_id: grid.into(),
        sku: "MILK-1L".into(),
        kind: SaleKind::Sale,
        quantity: q,
        unit_price_minor: 1_000,
        currency: "CNY".into(),
        occurred_at: t,
        received_at: t + 50,
    }
}

async fn send(p: &FutureProducer, topic: &str, key: &str, bytes: &[u8]) {
    p.send(FutureRecord::to(topic).key(key).payload(bytes), Duration::from_secs(10))
        .await
        .expect("delivered");
}

async fn demand(kafka: &Kafka, topic: &str) -> Vec<DemandWindow> {
    let (k, t) = (kafka.brokers().to_string(), topic.to_string());
    let recs = tokio::task::spawn_blocking(move || {
        let kafka = Kafka::shared();
        assert_eq!(kafka.brokers(), k);
        read_to_end(kafka, &t, Isolation::ReadCommitted, Duration::from_secs(30))
    })
    .await
    .expect("read");
    let codec = Codec::single_object();
    recs.iter().map(|r| codec.decode(r.value.as_deref().expect("value")).expect("decode")).collect()
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_end_where_the_spec_says() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .with_test_writer()
        .try_init();
    let kafka = Kafka::shared();
    let id = Kafka::unique_topic("sem");
    let settings = support::settings(kafka, &id);
    let topics = settings.topics.clone();
    // Four shops at one spot (one inactive): the grid expects three.
    let (lat, lon) = (31.2304, 121.4737);
    let grid = nearfield_common::stores::grid_of(lat, lon, h3o::Resolution::Eight).expect("grid");
    let dir = tempfile::tempdir().expect("tmp");
    let stores = dir.path().join("stores.jsonl");
    let line = |s: &str, active: bool| {
        format!(
            "{{\"store_id\":\"{s}\",\"name\":\"{s}\",\"lat\":{lat},\"lon\":{lon},\"device_ids\":[\"d1\"],\"active\":{active},\"updated_at\":0}}\n"
        )
    };
    std::fs::write(
        &stores,
        [line("s1", true), line("s2", true), line("s3", true), line("s4", false)].concat(),
    )
    .expect("stores");
    let cfg = AggregateConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            group_id: format!("agg-{id}"),
            instance_id: Some("sem".into()),
            commit_interval_ms: 100,
            ..nearfield_eos::LoopSettings::default()
        },
        windows_ms: vec![10 * SEC],
        out_of_orderness_ms: SEC,
        grace_ms: PerSize::All(0),
        allowed_lateness_ms: PerSize::All(10 * SEC),
        max_close_delay_ms: 86_400 * SEC,
        stores_file: Some(stores),
        follow_stores_topic: false,
        ..AggregateConfig::default()
    };
    let token = CancellationToken::new();
    let running = nearfield_aggregator::start(cfg, settings, token.clone()).await.expect("start");
    let base = format!("http://{}", running.local_addr);
    let http = reqwest::Client::new();
    until("ready", async || {
        http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::single_object();
    let now = nearfield_common::time::now_ms();
    let t0 = now - now.rem_euclid(10 * SEC) - 60 * SEC;
    let sale = async |e: SaleEvent| {
        send(&producer, &topics.sales, &e.grid_id, &codec.encode(&e).expect("encode")).await;
    };
    // A heartbeat from s3 (no sale) and, out of order, two sales and a retry of the first.
    let hb = Heartbeat {
        store_id: "s3".into(),
        device_id: "d1".into(),
        grid_id: grid.clone(),
        sent_at: t0 + 3 * SEC,
        received_at: t0 + 3 * SEC,
        pending_events: 0,
        last_upload_at: None,
    };
    send(&producer, &topics.heartbeats, &grid, &codec.encode(&hb).expect("encode")).await;
    sale(event("e1", "s1", &grid, 2, t0 + SEC)).await;
    sale(event("e2", "s2", &grid, 1, t0 + SEC / 2)).await;
    sale(event("e1", "s1", &grid, 2, t0 + SEC)).await;
    send(&producer, &topics.sales, &grid, b"\x00not avro").await;
    until("the first window in the live query", async || {
        let r = http
            .get(format!("{base}/v1/demand?grid={grid}&sku=MILK-1L"))
            .send()
            .await
            .expect("query");
        if r.status() != 200 {
            return false;
        }
        let v: serde_json::Value = r.json().await.expect("json");
        let w = &v["keys"][0]["windows"][0];
        w["event_count"] == 2 && w["stores_reporting"] == 3 && w["status"] == "open"
    })
    .await;
    // The next window's event moves the watermark past the first window: it closes.
    sale(event("e3", "s1", &grid, 4, t0 + 12 * SEC)).await;
    until("the final window", async || demand(kafka, &topics.demand).await.len() == 1).await;
    // Late but within the allowed lateness: revision 1.
    sale(event("e4", "s2", &grid, 5, t0 + 9 * SEC)).await;
    until("the revision", async || demand(kafka, &topics.demand).await.len() == 2).await;
    // Far ahead: the first window expires, the second closes; then a very late event.
    sale(event("e5", "s1", &grid, 1, t0 + 25 * SEC)).await;
    until("the second window", async || demand(kafka, &topics.demand).await.len() == 3).await;
    sale(event("e6", "s1", &grid, 7, t0 + 2 * SEC)).await;
    sale(event("e7", "s1", &grid, 1, t0 + 26 * SEC)).await;
    until("the late topic", async || {
        let k = kafka.brokers().to_string();
        let late = topics.late.clone();
        tokio::task::spawn_blocking(move || {
            assert_eq!(Kafka::shared().brokers(), k);
            read_to_end(Kafka::shared(), &late, Isolation::ReadCommitted, Duration::from_secs(30))
        })
        .await
        .expect("read")
        .len()
            == 1
    })
    .await;

    let out = demand(kafka, &topics.demand).await;
    let w0 = &out[0];
    assert_eq!((w0.window_start, w0.window_end), (t0, t0 + 10 * SEC));
    assert_eq!((w0.units_sold, w0.event_count, w0.distinct_stores), (3, 2, 2), "{w0:?}");
    assert_eq!((w0.revenue_minor, w0.net_units), (3_000, 3));
    assert_eq!((w0.stores_reporting, w0.stores_expected), (3, 3), "heartbeat + sales; registry");
    assert_eq!((w0.revision, w0.is_final), (0, true));
    assert_eq!(w0.watermark, t0 + 11 * SEC);
    let w1 = &out[1];
    assert_eq!((w1.window_start, w1.revision, w1.units_sold, w1.event_count), (t0, 1, 8, 3));
    let w2 = &out[2];
    assert_eq!((w2.window_start, w2.revision, w2.units_sold), (t0 + 10 * SEC, 0, 4));

    let read = |topic: String| {
        let k = kafka.brokers().to_string();
        tokio::task::spawn_blocking(move || {
            assert_eq!(Kafka::shared().brokers(), k);
            read_to_end(Kafka::shared(), &topic, Isolation::ReadCommitted, Duration::from_secs(30))
        })
    };
    let late = read(topics.late.clone()).await.expect("late");
    let late_ev: SaleEvent = codec.decode(late[0].value.as_deref().expect("v")).expect("decode");
    assert_eq!(late_ev.event_id, "e6");
    let dlq = read(topics.dlq.clone()).await.expect("dlq");
    assert_eq!(dlq.len(), 1);
    let rejected: RejectedEvent =
        codec.decode(dlq[0].value.as_deref().expect("v")).expect("decode");
    assert!(rejected.reason.starts_with("decode."), "{}", rejected.reason);
    assert_eq!(rejected.payload, b"\x00not avro");
    assert!(rejected.origin.as_deref().is_some_and(|o| o.starts_with(&topics.sales)));

    // The live query: the expired first window is gone, the others are there.
    let v: serde_json::Value = http
        .get(format!("{base}/v1/demand?grid={grid}"))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let starts: Vec<i64> = v["keys"][0]["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| w["window_start"].as_i64().expect("start"))
        .collect();
    assert_eq!(starts, vec![t0 + 10 * SEC, t0 + 20 * SEC]);
    // The city view: the newest window's demand per grid, and the top SKUs.
    let newest_net = v["keys"][0]["windows"][1]["net_units"].as_i64().expect("net");
    let c: serde_json::Value =
        http.get(format!("{base}/v1/cells")).send().await.expect("cells").json().await.expect("j");
    assert_eq!(c["window_start"], t0 + 20 * SEC);
    assert_eq!(c["cells"][0]["grid_id"], grid.as_str());
    assert_eq!(c["cells"][0]["net_units"], newest_net);
    assert_eq!(c["top_skus"][0]["sku"], "MILK-1L");
    let c: serde_json::Value = http
        .get(format!("{base}/v1/cells?skus=OTHER"))
        .send()
        .await
        .expect("cells")
        .json()
        .await
        .expect("j");
    assert_eq!(c["cells"].as_array().map(Vec::len), Some(0));
    assert_refused(&format!("{base}/v1/cells?window_ms=7"), 400, "window_ms").await;
    let (status, _) = get_json(&format!("{base}/v1/demand?grid=8830e1d8fffffff&sku=X")).await;
    assert_eq!(status, 404);
    assert_refused(&format!("{base}/v1/demand"), 400, "grid").await;
    assert_refused(&format!("{base}/v1/demand?sku=MILK-1L&limit=0"), 400, "limit").await;
    assert_refused(&format!("{base}/v1/demand?parent={grid}"), 400, "parent").await;
    // By SKU across grids, and by a parent cell (rolled up): the same figures here, one grid.
    let by_sku = get_json(&format!("{base}/v1/demand?sku=MILK-1L")).await.1;
    assert_eq!(by_sku["keys"][0]["windows"], v["keys"][0]["windows"], "{by_sku}");
    assert_eq!(by_sku["coverage"]["complete"], true);
    let parent: h3o::CellIndex = grid.parse().expect("cell");
    let parent = parent.parent(h3o::Resolution::Six).expect("parent");
    let rolled = get_json(&format!("{base}/v1/demand?parent={parent}&sku=MILK-1L")).await.1;
    assert_eq!(rolled["keys"][0]["grid_id"], parent.to_string());
    assert_eq!(rolled["keys"][0]["grids"], 1);
    assert_eq!(rolled["keys"][0]["windows"], v["keys"][0]["windows"]);
    // A time range keeps the windows that overlap it.
    let ranged = get_json(&format!(
        "{base}/v1/demand?grid={grid}&from={}&to={}",
        t0 + 20 * SEC,
        t0 + 21 * SEC
    ))
    .await
    .1;
    assert_eq!(ranged["keys"][0]["windows"].as_array().map(Vec::len), Some(1), "{ranged}");
    assert_metrics(
        &base,
        &[
            "nearfield_aggregator_events_total{outcome=\"duplicate\"} 1",
            "nearfield_aggregator_events_total{outcome=\"late\"} 1",
            "nearfield_aggregator_events_total{outcome=\"invalid\"} 1",
            "nearfield_aggregator_windows_emitted_total{kind=\"revision\"} 1",
        ],
    )
    .await;
    token.cancel();
    running.done.await.expect("join").expect("clean stop");
}

//! Offline shops on real Kafka (SPEC §6, lateness per window size): a grid's on-time
//! traffic is counted and its windows close; then sales of shops that were offline arrive
//! late. The windows that still accept them (the "hour" and the "day") count them — as
//! revisions of closed windows or in open ones — the expired "5-minute" windows do not,
//! and `sales.late.v1` holds only the event no window accepted, with the reason. And a
//! grid with registered stores but no sale gets a `GridCoverage` record for every closed
//! window, with the backlog its devices' heartbeats announced.
//!
//! Window sizes are scaled down (10 s, 60 s, 300 s for 5 min, 1 h, 1 day) and only the
//! watermark closes windows, so the test is fast and deterministic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nearfield_aggregator::AggregateConfig;
use nearfield_aggregator::config::PerSize;
use nearfield_aggregator::stage::{LATE_EXPIRED_AT_HEADER, LATE_REASON_HEADER};
mod support;

use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use nearfield_schemas::{Codec, DemandWindow, GridCoverage, Heartbeat, SaleEvent, SaleKind};
use nearfield_testkit::{Isolation, Kafka, Record, read_to_end};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::settings;

const SEC: i64 = 1_000;
const SIZES: [i64; 3] = [10 * SEC, 60 * SEC, 300 * SEC];

fn event(id: &str, store: &str, grid: &str, q: i32, t: i64) -> SaleEvent {
    SaleEvent {
        event_id: id.into(),
        store_id: store.into(),
        device_id: "d1".into(),
        grid_id: grid.into(),
        sku: "MILK-1L".into(),
        kind: SaleKind::Sale,
        quantity: q,
        unit_price_minor: 100,
        currency: "CNY".into(),
        occurred_at: t,
        received_at: t + 50,
    }
}

async fn read(topic: &str) -> Vec<Record> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        read_to_end(Kafka::shared(), &topic, Isolation::ReadCommitted, Duration::from_secs(30))
    })
    .await
    .expect("read")
}

/// The last revision of every final window, by (size, start).
async fn finals(topic: &str) -> BTreeMap<(i64, i64), DemandWindow> {
    let codec = Codec::single_object();
    let mut out = BTreeMap::new();
    for r in read(topic).await {
        let w: DemandWindow = codec.decode(r.value.as_deref().expect("value")).expect("decode");
        out.insert((w.window_end - w.window_start, w.window_start), w);
    }
    out
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Aggregator {
    token: CancellationToken,
    done: nearfield_aggregator::Running,
    base: String,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        // A failing assertion must not leave the loop running (the runtime would wait).
        self.token.cancel();
    }
}

async fn start(
    settings: &KafkaSettings,
    group: &str,
    lateness: [i64; 3],
    stores: Option<std::path::PathBuf>,
) -> Aggregator {
    let cfg = AggregateConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            group_id: group.to_string(),
            instance_id: Some("late".into()),
            commit_interval_ms: 100,
            ..nearfield_eos::LoopSettings::default()
        },
        windows_ms: SIZES.to_vec(),
        out_of_orderness_ms: SEC,
        grace_ms: PerSize::All(0),
        allowed_lateness_ms: PerSize::Each(lateness.to_vec()),
        max_close_delay_ms: 86_400 * SEC,
        coverage_windows_ms: Some(vec![60 * SEC]),
        stores_file: stores,
        follow_stores_topic: false,
        ..AggregateConfig::default()
    };
    let token = CancellationToken::new();
    let done =
        nearfield_aggregator::start(cfg, settings.clone(), token.clone()).await.expect("start");
    let base = format!("http://{}", done.local_addr);
    let http = reqwest::Client::new();
    until("ready", async || {
        http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    Aggregator { token, done, base }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_shops_count_in_the_windows_that_still_accept_them() {
    init_logs();
    let kafka = Kafka::shared();
    let id = Kafka::unique_topic("late");
    let settings = settings(kafka, &id);
    let topics = settings.topics.clone();
    let group = format!("agg-{id}");
    // 5 s, 2 min and 10 min of lateness for the 10 s, 60 s and 300 s windows.
    let mut agg = start(&settings, &group, [5 * SEC, 120 * SEC, 600 * SEC], None).await;
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::single_object();
    let now = nearfield_common::time::now_ms();
    let t0 = now - now.rem_euclid(300 * SEC) - 3_600 * SEC;
    let grid = "8831aa5a8bfffff";
    let sale = async |e: SaleEvent| {
        let bytes = codec.encode(&e).expect("encode");
        producer
            .send(
                FutureRecord::to(&topics.sales).key(grid).payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    };
    let windows = async |n: usize| {
        let demand = topics.demand.clone();
        until(&format!("{n} demand records"), async || read(&demand).await.len() >= n).await;
    };

    // On time: two shops sell in the first seconds; traffic moves the watermark past the
    // first "hour" (60 s), which closes (and its first "5-minute" windows expire).
    sale(event("e1", "s1", grid, 2, t0 + 2 * SEC)).await;
    sale(event("e2", "s2", grid, 3, t0 + 5 * SEC)).await;
    sale(event("e3", "s1", grid, 1, t0 + 30 * SEC)).await;
    sale(event("e4", "s1", grid, 1, t0 + 70 * SEC)).await; // watermark t0 + 69 s
    windows(3).await; // [t0, +10 s), [t0 + 30 s, +10 s), [t0, +60 s)
    let f = finals(&topics.demand).await;
    assert_eq!(f[&(60 * SEC, t0)].units_sold, 6, "the on-time hour");
    assert_eq!(f[&(60 * SEC, t0)].revision, 0);

    // Shop s3 was offline; its sales of that hour arrive now. Their 10 s windows have
    // expired (watermark 69 s > end + 5 s), the hour (closed) accepts them until 180 s,
    // the day (open) until 900 s.
    sale(event("e5", "s3", grid, 4, t0 + 3 * SEC)).await;
    sale(event("e6", "s3", grid, 1, t0 + 40 * SEC)).await;
    windows(4).await; // the hour's revision
    let f = finals(&topics.demand).await;
    let hour = &f[&(60 * SEC, t0)];
    assert_eq!((hour.units_sold, hour.event_count, hour.distinct_stores), (11, 5, 3), "{hour:?}");
    assert!(hour.revision >= 1);
    assert_eq!(f[&(10 * SEC, t0)].units_sold, 5, "the expired 5-minute window is not revised");
    assert!(!f.contains_key(&(10 * SEC, t0 + 40 * SEC)), "no window was made for e6's expired one");

    // Later still: past the hour's lateness, only the day accepts.
    sale(event("e7", "s1", grid, 1, t0 + 201 * SEC)).await; // watermark t0 + 200 s
    sale(event("e8", "s3", grid, 9, t0 + 4 * SEC)).await;
    let http = reqwest::Client::new();
    let day_live = async || -> Option<serde_json::Value> {
        let v: serde_json::Value = http
            .get(format!("{}/v1/demand?grid={grid}&sku=MILK-1L", agg.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["keys"][0]["windows"]
            .as_array()?
            .iter()
            .find(|w| w["window_start"] == t0 && w["window_end"] == t0 + 300 * SEC)
            .cloned()
    };
    // The live query: the open day holds every sale so far (2+3+1+1+4+1+1+9).
    until("the day counts e8", async || {
        day_live().await.is_some_and(|w| w["units_sold"] == 22 && w["status"] == "open")
    })
    .await;

    // Past the day's lateness too (watermark t0 + 904 s > 300 s + 600 s): late.
    sale(event("e9", "s1", grid, 1, t0 + 905 * SEC)).await;
    sale(event("e10", "s4", grid, 5, t0 + 6 * SEC)).await;
    let late = topics.late.clone();
    until("the late event", async || !read(&late).await.is_empty()).await;
    let f = finals(&topics.demand).await;
    let day = &f[&(300 * SEC, t0)];
    assert_eq!((day.units_sold, day.event_count, day.distinct_stores), (22, 8, 3), "{day:?}");
    let late = read(&topics.late).await;
    assert_eq!(late.len(), 1, "only the event no window accepts is late");
    let ev: SaleEvent = codec.decode(late[0].value.as_deref().expect("value")).expect("decode");
    assert_eq!(ev.event_id, "e10");
    let header = |name: &str| -> String {
        late[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    assert!(header(LATE_REASON_HEADER).contains("every window of occurred_at has expired"));
    assert_eq!(header(LATE_EXPIRED_AT_HEADER), (t0 + 900 * SEC).to_string());

    // `replay --late`: the late sale becomes a revision of each window it missed.
    let windowing = nearfield_aggregator::window::Windowing {
        sizes: SIZES.to_vec(),
        grace: vec![0; 3],
        allowed_lateness: vec![5 * SEC, 120 * SEC, 600 * SEC],
        out_of_orderness: SEC,
        max_close_delay: 86_400 * SEC,
    };
    let group = format!("replay-{id}");
    let replay = async || {
        let (s, w, g) = (settings.clone(), windowing.clone(), group.clone());
        tokio::task::spawn_blocking(move || nearfield_aggregator::late::replay(&s, &w, "CNY", &g))
            .await
            .expect("join")
            .expect("replay")
    };
    let before = finals(&topics.demand).await;
    let run = replay().await;
    assert_eq!((run.applied, run.windows_revised, run.windows_created), (1, 3, 0), "{run:?}");
    let after = finals(&topics.demand).await;
    for (size, units) in [(10 * SEC, 10), (60 * SEC, 16), (300 * SEC, 27)] {
        let (old, new) = (&before[&(size, t0)], &after[&(size, t0)]);
        assert_eq!((new.units_sold, new.revision), (units, old.revision + 1), "{size}: {new:?}");
        assert_eq!(new.event_count, old.event_count + 1);
    }
    // Nothing new: nothing applied. The device retries e10 (late again): a duplicate.
    assert_eq!(replay().await.applied, 0);
    sale(event("e10", "s4", grid, 5, t0 + 6 * SEC)).await;
    let late_topic = topics.late.clone();
    until("the retry is late too", async || read(&late_topic).await.len() == 2).await;
    let run = replay().await;
    assert_eq!((run.applied, run.duplicates), (0, 1), "{run:?}");
    assert_eq!(finals(&topics.demand).await[&(300 * SEC, t0)].units_sold, 27);

    agg.token.cancel();
    (&mut agg.done.done).await.expect("join").expect("stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_grids_get_coverage_and_heartbeats_announce_backlogs() {
    init_logs();
    let kafka = Kafka::shared();
    let id = Kafka::unique_topic("cover");
    let settings = settings(kafka, &id);
    let topics = settings.topics.clone();
    // Grid A: two shops that sell. Grid B: two active shops (and a closed one) that never
    // sell in this test.
    let spot = |lat: f64, lon: f64| {
        nearfield_common::stores::grid_of(lat, lon, h3o::Resolution::Eight).expect("grid")
    };
    let ((la, oa), (lb, ob)) = ((31.2304, 121.4737), (31.2904, 121.5337));
    let (a, b) = (spot(la, oa), spot(lb, ob));
    assert_ne!(a, b);
    let dir = tempfile::tempdir().expect("tmp");
    let stores = dir.path().join("stores.jsonl");
    let line = |s: &str, lat: f64, lon: f64, active: bool| {
        format!(
            "{{\"store_id\":\"{s}\",\"name\":\"{s}\",\"lat\":{lat},\"lon\":{lon},\"device_ids\":[\"d1\"],\"active\":{active},\"updated_at\":0}}\n"
        )
    };
    std::fs::write(
        &stores,
        [
            line("s1", la, oa, true),
            line("s2", la, oa, true),
            line("s3", lb, ob, true),
            line("s4", lb, ob, true),
            line("s5", lb, ob, false),
        ]
        .concat(),
    )
    .expect("stores");
    let mut agg =
        start(&settings, &format!("agg-{id}"), [5 * SEC, 120 * SEC, 600 * SEC], Some(stores)).await;
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::single_object();
    let now = nearfield_common::time::now_ms();
    let t0 = now - now.rem_euclid(300 * SEC) - 3_600 * SEC;
    let send = async |topic: &str, grid: &str, bytes: Vec<u8>| {
        producer
            .send(FutureRecord::to(topic).key(grid).payload(&bytes), Duration::from_secs(10))
            .await
            .expect("delivered");
    };
    let beat = |store: &str, grid: &str, at: i64, pending_events: i32| Heartbeat {
        store_id: store.into(),
        device_id: "d1".into(),
        grid_id: grid.into(),
        sent_at: at,
        received_at: at,
        pending_events,
        last_upload_at: None,
    };
    // Minute 0: s1 sells. Minute 1: s2 sells; s1's device says it holds 3 sales not
    // uploaded yet, and s3 (grid B, no sales) holds 5.
    send(&topics.sales, &a, codec.encode(&event("e1", "s1", &a, 2, t0 + 2 * SEC)).expect("enc"))
        .await;
    send(&topics.sales, &a, codec.encode(&event("e2", "s2", &a, 1, t0 + 70 * SEC)).expect("enc"))
        .await;
    send(&topics.heartbeats, &a, codec.encode(&beat("s1", &a, t0 + 66 * SEC, 3)).expect("enc"))
        .await;
    // s3's device says since when it holds them (its last upload, minute 1 too, on a
    // device clock 10 s behind): the same minute.
    let s3 = Heartbeat {
        sent_at: t0 + 55 * SEC,
        last_upload_at: Some(t0 + 52 * SEC),
        ..beat("s3", &b, t0 + 65 * SEC, 5)
    };
    send(&topics.heartbeats, &b, codec.encode(&s3).expect("enc")).await;
    until("both heartbeats applied", async || {
        let m = nearfield_testkit::http::metrics(&agg.base).await;
        nearfield_testkit::http::sample(&m, "nearfield_aggregator_heartbeats_total") >= Some(2.0)
    })
    .await;
    // Minute 2: a sale moves the watermark past minute 1: minutes 0 and 1 close.
    send(&topics.sales, &a, codec.encode(&event("e3", "s1", &a, 1, t0 + 130 * SEC)).expect("enc"))
        .await;
    let coverage = topics.coverage.clone();
    until("coverage of both grids for minutes 0 and 1", async || read(&coverage).await.len() >= 4)
        .await;
    let mut got: BTreeMap<(String, i64), GridCoverage> = BTreeMap::new();
    for r in read(&topics.coverage).await {
        let c: GridCoverage = codec.decode(r.value.as_deref().expect("value")).expect("decode");
        assert_eq!(c.window_end - c.window_start, 60 * SEC, "only the 60 s size is covered");
        let key = String::from_utf8(r.key.clone().expect("key")).expect("utf8");
        assert_eq!(key, format!("{}|{}|{}", c.grid_id, c.window_start, c.window_end));
        got.insert((c.grid_id.clone(), c.window_start), c);
    }
    let view = |g: &str, start: i64| {
        let c = &got[&(g.to_string(), start)];
        (c.stores_expected, c.stores_reporting, c.stores_pending, c.pending_events)
    };
    assert_eq!(view(&b, t0), (2, 0, 0, 0), "a silent grid: no demand, and no data either");
    assert_eq!(view(&b, t0 + 60 * SEC), (2, 1, 1, 5), "s3 is online and holds 5 sales");
    assert_eq!(view(&a, t0), (2, 1, 0, 0));
    assert_eq!(view(&a, t0 + 60 * SEC), (2, 2, 1, 3));
    assert_eq!(got.len(), 4, "{got:?}");
    // The demand of minute 1 in grid A says one of its stores holds unsent sales.
    let f = finals(&topics.demand).await;
    let minute1 = &f[&(60 * SEC, t0 + 60 * SEC)];
    assert_eq!((minute1.grid_id.as_str(), minute1.stores_reporting), (a.as_str(), 2));
    assert_eq!((minute1.stores_expected, minute1.stores_pending), (2, 1));
    agg.token.cancel();
    (&mut agg.done.done).await.expect("join").expect("stopped cleanly");
}

//! What the exactly-once runtime promises besides exactness, shown on the aggregator.

use std::time::{Duration, Instant};

use nearfield_schemas::{Codec, SaleEvent, SaleKind};
use nearfield_testkit::Kafka;
use nearfield_testkit::http::get_json;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::aggregator::{FAST_WINDOWS, deploy};
use crate::scenarios::Harness;

fn sale(id: u64, grid: &str, sku: &str) -> SaleEvent {
    let now = nearfield_common::time::now_ms();
    SaleEvent {
        event_id: format!("e{id}"),
        store_id: format!("st{}", id % 50),
        device_id: "d1".into(),
        grid_id: grid.into(),
        sku: sku.into(),
        kind: SaleKind::Sale,
        quantity: 1,
        unit_price_minor: 100,
        currency: "CNY".into(),
        occurred_at: now,
        received_at: now,
    }
}

/// A producer for writing test input in bulk.
fn producer(kafka: &Kafka) -> ThreadedProducer<rdkafka::producer::DefaultProducerContext> {
    kafka
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Writes `events` to `partition` of `topic` (whatever their key would say).
fn write(kafka: &Kafka, topic: &str, partition: i32, events: impl Iterator<Item = SaleEvent>) {
    let producer = producer(kafka);
    let codec = Codec::single_object();
    for e in events {
        let bytes = codec.encode(&e).expect("encode");
        let mut rec =
            BaseRecord::to(topic).partition(partition).key(e.grid_id.as_bytes()).payload(&bytes);
        while let Err((_, back)) = producer.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Writes `n` tombstones of de-duplication chunk keys past any real one to `partition`
/// of the changelog `topic`.
fn tombstones(kafka: &Kafka, topic: &str, partition: i32, n: u64) {
    let producer = producer(kafka);
    for seq in 0..n {
        let key = nearfield_aggregator::changelog::dedupe_key(u64::MAX / 2 + seq);
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic).partition(partition).key(&key[..]);
        while let Err((_, back)) = producer.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

fn phases(readyz: &serde_json::Value) -> (String, String) {
    let p = |i: &str| readyz["partitions"][i]["phase"].as_str().unwrap_or("none").to_string();
    (p("0"), p("1"))
}

/// Events counted for a grid × SKU over all its windows (the sales of a test are stamped
/// with the wall clock, so a run that crosses an hour boundary spreads them over two).
async fn event_count(base: &str, grid: &str, sku: &str) -> Option<i64> {
    let (status, v) = get_json(&format!("{base}/v1/demand?grid={grid}&sku={sku}")).await;
    let windows = v["keys"][0]["windows"].as_array().filter(|_| status == 200)?;
    windows.iter().map(|w| w["event_count"].as_i64()).sum()
}

/// Partition 0 holds a large state and partition 1 a small one. A new instance restores
/// both: partition 1 is restored at once and goes on processing — a new sale is counted and
/// the live query answers it — while partition 0 is still restoring (which `/readyz` says).
pub fn restoring_does_not_block(kafka: &Kafka) {
    let hour =
        "windows_ms = [3600000]\nmax_close_delay_ms = 86400000\nallowed_lateness_ms = 3600000\n";
    let (h, mut d) = deploy(kafka, 2, hour);
    let big = 400_000u64;
    // Grids whose keys hash to the partition they are written to, as ingest writes them
    // (the query plane routes a grid's query by that hash).
    fn grids_of(prefix: &'static str, p: i32) -> impl Iterator<Item = String> {
        (0u64..)
            .map(move |j| format!("{prefix}{j:09x}"))
            .filter(move |g| nearfield_common::kafka::partition_for_key(g.as_bytes(), 2) == p)
    }
    let big_grids: Vec<String> = grids_of("8831aa", 0).take(1_000).collect();
    write(
        kafka,
        h.sales(),
        0,
        (0..big).map(|i| sale(i, &big_grids[(i / 400) as usize], &format!("SKU-{:05}", i % 400))),
    );
    // One grid written where its key does not hash (a producer with another partitioner):
    // the query plane still finds it, by asking every partition.
    let stray = grids_of("8832aa", 1).next().expect("a grid of partition 1");
    write(kafka, h.sales(), 0, std::iter::once(sale(big + 100, &stray, "STRAY-1")));
    let grid = grids_of("8830e1", 1).next().expect("a grid of partition 1");
    let (grid, sku) = (grid.as_str(), "SMALL-1");
    write(kafka, h.sales(), 1, (0..10).map(|i| sale(big + i, grid, sku)));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let base = d.start_listening("a");
    let deadline = Instant::now() + Duration::from_secs(300);
    let counted = format!("nearfield_aggregator_events_total{{outcome=\"counted\"}} {}", big + 11);
    while !rt.block_on(nearfield_testkit::http::metrics(&base)).contains(&counted) {
        assert!(
            Instant::now() < deadline,
            "the first instance never counted everything:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // librdkafka's statistics reach the loop: the caught-up input's lag is reported as 0
    // (it counts from where processing stands, not from a commit this consumer never
    // made), and no partition was taken for stalled.
    let caught_up = format!("nearfield_aggregator_consumer_lag{{topic=\"{}\"}} 0", h.sales());
    let metrics = loop {
        let m = rt.block_on(nearfield_testkit::http::metrics(&base));
        if m.contains(&caught_up) {
            break m;
        }
        assert!(Instant::now() < deadline, "the lag never read 0 once caught up:\n{m}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        metrics.contains("nearfield_aggregator_stalled_partitions_total 0"),
        "a partition was taken for stalled:\n{metrics}"
    );
    // The stray grid, and only it, was seen where its key does not hash, and said so.
    assert!(
        metrics.contains("nearfield_aggregator_misplaced_grids_total 1\n"),
        "the stray grid was not counted as misplaced (once):\n{metrics}"
    );
    let named = d.count(&format!("\"{stray}\""));
    assert_eq!(named, 1, "one warning names the stray grid:\n{}", d.logs());
    d.stop("a");
    // A restore reads a partition's whole changelog, and state v5 restores 400 000 keys in
    // a fraction of a second: give partition 0 the changelog of a long-running partition
    // that compaction has not caught up with (tombstones of de-duplication chunks that no
    // longer exist: restoring them changes nothing, reading them takes seconds).
    tombstones(kafka, h.changelog(), 0, 10_000_000);

    let base = d.start_listening("b");
    // Partition 1 active while partition 0 restores.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, r) = rt.block_on(get_json(&format!("{base}/readyz")));
        match phases(&r) {
            (p0, p1) if p0 == "restoring" && p1 == "active" => break,
            (p0, _) if p0 == "active" => panic!(
                "partition 0 restored before it could be observed restoring; make it larger\n{r}"
            ),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "never saw partition 1 active beside partition 0 restoring:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    write(kafka, h.sales(), 1, std::iter::once(sale(big + 10, grid, sku)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(event_count(&base, grid, sku)) != Some(11) {
        assert!(
            Instant::now() < deadline,
            "partition 1 did not process while partition 0 restored:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, r) = rt.block_on(get_json(&format!("{base}/readyz")));
    assert_eq!(
        phases(&r).0,
        "restoring",
        "partition 0 still restoring when partition 1's sale was counted: {r}"
    );
    assert_eq!(status, 503, "not ready while a partition restores");
    eprintln!(
        "partition 1 counted a new sale while partition 0 restored: {}",
        r["partitions"]["0"]
    );
    // And then partition 0 finishes, with everything.
    let deadline = Instant::now() + Duration::from_secs(300);
    while rt.block_on(get_json(&format!("{base}/readyz"))).0 != 200 {
        assert!(Instant::now() < deadline, "partition 0 never restored:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rt.block_on(event_count(&base, &big_grids[0], "SKU-00000")).is_some());
    assert_eq!(rt.block_on(event_count(&base, &stray, "STRAY-1")), Some(1), "the stray grid");
    d.stop("b");
}

/// The aggregator's output topic is deleted while it runs: it stops within seconds with a
/// non-zero exit and a message naming the topic, instead of retrying forever.
pub fn deleted_output_is_fatal(kafka: &Kafka) {
    let (mut h, mut d) = deploy(kafka, 3, FAST_WINDOWS);
    h.feed(kafka);
    d.start("a");
    d.wait_owns("a");
    std::thread::sleep(Duration::from_secs(3));
    kafka.delete_topic(h.demand());
    let deleted = Instant::now();
    let status = d.exited("a", Duration::from_secs(90));
    let took = deleted.elapsed();
    h.stop_feeding();
    let log = d.log("a");
    let status = status.unwrap_or_else(|| {
        panic!("still running 90 s after its output topic was deleted:\n{}", d.logs())
    });
    assert!(!status.success(), "exited with {status} (should fail)");
    let fatal = log
        .lines()
        .find(|l| l.contains("permanent error"))
        .unwrap_or_else(|| panic!("no permanent error in:\n{log}"));
    assert!(
        fatal.contains(h.demand()) && fatal.contains("does not exist"),
        "the message names the topic: {fatal}"
    );
    eprintln!("stopped {:.1} s after its output topic was deleted: {fatal}", took.as_secs_f64());
}

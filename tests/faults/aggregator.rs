//! The aggregator under test: sale events (with device retries, i.e. duplicate event ids,
//! and out-of-order times) written the way ingest writes them; the truth is the recount of
//! the distinct events, and every `DemandWindow` read with read_committed — the latest
//! revision of each window — must equal it, no (grid, sku, window, revision) twice,
//! revisions 0, 1, 2… without gaps, nothing on the late topic.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nearfield_schemas::{Codec, DemandWindow, SaleEvent, SaleKind};
use nearfield_testkit::{Deployment, Isolation, Kafka, read_to_end};
use rdkafka::ClientContext;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::scenarios::Harness;

const SIZES: [i64; 2] = [1_000, 5_000];
const RATE: u64 = 1_500;

type WindowKey = (String, String, i64, i64);
type Truth = BTreeMap<WindowKey, (i64, i64, i64, i64)>;

pub struct Aggregator {
    sales: String,
    changelog: String,
    demand: String,
    late: String,
    group: String,
    stop: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<Vec<SaleEvent>>>,
    events: Vec<SaleEvent>,
}

/// Windows of 1 s and 5 s that close and expire while a test runs.
pub const FAST_WINDOWS: &str = "windows_ms = [1000, 5000]\nout_of_orderness_ms = 200\ngrace_ms = 100\n\
    allowed_lateness_ms = 120000\nmax_close_delay_ms = 2000\n";

/// The aggregator's topics and configuration file, with `windows` (the window settings).
pub fn deploy(kafka: &Kafka, partitions: i32, windows: &str) -> (Aggregator, Deployment) {
    let id = Kafka::unique_topic("agg");
    let t = |n: &str| format!("{n}-{id}");
    let (sales, hb, dlq, late, demand, changelog, stores) =
        (t("sales"), t("hb"), t("dlq"), t("late"), t("demand"), t("changelog"), t("stores"));
    let isr: &[(&str, &str)] =
        if kafka.nodes() >= 3 { &[("min.insync.replicas", "2")] } else { &[] };
    let compact = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![("cleanup.policy", "compact")];
        v.extend_from_slice(extra);
        v
    };
    kafka.create_topic(&sales, partitions, isr);
    kafka.create_topic(&hb, partitions, isr);
    kafka.create_topic(&dlq, 1, isr);
    kafka.create_topic(&late, partitions, isr);
    kafka.create_topic(&demand, partitions, &compact(isr));
    kafka.create_topic(&changelog, partitions, &compact(isr));
    kafka.create_topic(&stores, 1, &compact(isr));
    let config = format!(
        "[kafka]\nbrokers = \"{}\"\npartitions = {partitions}\n\
         [kafka.topics]\nsales = \"{sales}\"\nheartbeats = \"{hb}\"\ndlq = \"{dlq}\"\nlate = \"{late}\"\n\
         demand = \"{demand}\"\naggregator_changelog = \"{changelog}\"\nstores = \"{stores}\"\n\
         [aggregate]\nlisten = \"127.0.0.1:0\"\ngroup_id = \"agg-{id}\"\n{windows}\
         commit_interval_ms = 200\ntransaction_timeout_ms = 10000\nfollow_stores_topic = false\n",
        kafka.brokers()
    );
    let d = Deployment::new(env!("CARGO_BIN_EXE_nearfield").as_ref(), "aggregate", &config, &[]);
    let h = Aggregator {
        sales,
        changelog,
        demand,
        late,
        group: format!("agg-{id}"),
        stop: Arc::new(AtomicBool::new(false)),
        feeder: None,
        events: Vec::new(),
    };
    (h, d)
}

impl Aggregator {
    /// The input topic.
    pub fn sales(&self) -> &str {
        &self.sales
    }

    /// The state changelog topic.
    pub fn changelog(&self) -> &str {
        &self.changelog
    }

    /// The output topic.
    pub fn demand(&self) -> &str {
        &self.demand
    }

    /// The events written into its input some other way than [`Harness::feed`] (the
    /// ground truth of [`Harness::assert_exact`]).
    pub fn fed(&mut self, events: Vec<SaleEvent>) {
        self.events = events;
    }
}

impl Harness for Aggregator {
    const STAGE: &'static str = "aggregator";
    const KILL_PAUSE_MS: (u64, u64) = (1_500, 3_000);

    fn setup(kafka: &Kafka, partitions: i32) -> (Self, Deployment) {
        deploy(kafka, partitions, FAST_WINDOWS)
    }

    fn feed(&mut self, kafka: &Kafka) {
        let (brokers, topic, stop) =
            (kafka.brokers().to_string(), self.sales.clone(), Arc::clone(&self.stop));
        self.feeder = Some(std::thread::spawn(move || feed(&brokers, &topic, RATE, &stop)));
    }

    fn stop_feeding(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.feeder.take() {
            self.events = f.join().expect("feeder");
        }
    }

    fn assert_exact(&self, kafka: &Kafka, d: &Deployment) -> String {
        let truth = recount(&self.events);
        let deadline = Instant::now() + Duration::from_secs(180);
        let revisions = loop {
            match compare(kafka, &self.demand, &truth) {
                Ok(revisions) => break revisions,
                Err(e) if Instant::now() > deadline => {
                    panic!("outputs never matched ground truth: {e}\n{}\n{}", d.logs(), d.stacks())
                }
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        };
        let late =
            read_to_end(kafka, &self.late, Isolation::ReadCommitted, Duration::from_secs(30));
        assert!(late.is_empty(), "{} events went to the late topic", late.len());
        format!(
            "{} events, {} windows, {revisions} revisions: exact",
            self.events.len(),
            truth.len()
        )
    }

    fn group(&self) -> String {
        self.group.clone()
    }
}

struct Failures(Arc<AtomicU64>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes sale events at `rate` per second until `stop`, the way ingest does (key grid,
/// acks=all, idempotent); 5 % are sent twice (a device retry). Returns the distinct events.
pub fn feed(brokers: &str, topic: &str, rate: u64, stop: &AtomicBool) -> Vec<SaleEvent> {
    feed_routed(brokers, rate, stop, |_| [topic, topic])
}

/// [`feed`], each event written to the first topic `route` gives for it (from its random
/// bits) and its retry, if any, to the second: ingest instances of two versions during a
/// rolling move, a device's retry landing on the other one.
pub fn feed_routed<'a>(
    brokers: &str,
    rate: u64,
    stop: &AtomicBool,
    route: impl Fn(u64) -> [&'a str; 2],
) -> Vec<SaleEvent> {
    let failures = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Failures> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .set("partitioner", "murmur2_random")
        .create_with_context(Failures(Arc::clone(&failures)))
        .expect("producer");
    let codec = Codec::single_object();
    let mut events = Vec::new();
    let mut n: u64 = 0;
    let started = Instant::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while !stop.load(Ordering::Relaxed) {
        let due = started.elapsed().as_millis() as u64 * rate / 1000;
        while n < due {
            let r = next();
            let store = r % 40;
            let kind = match r % 10 {
                0 => SaleKind::Return,
                1 => SaleKind::Preorder,
                _ => SaleKind::Sale,
            };
            let now = nearfield_common::time::now_ms();
            let ev = SaleEvent {
                event_id: format!("e{n}"),
                store_id: format!("st{store}"),
                device_id: "d1".into(),
                grid_id: format!("8830e1d8{:02x}fffff", store % 12),
                sku: format!("SKU-{:02}", (r >> 8) % 15),
                kind,
                quantity: 1 + ((r >> 16) % 5) as i32,
                unit_price_minor: 250,
                currency: "CNY".into(),
                occurred_at: now - ((r >> 24) % 300) as i64,
                received_at: now,
            };
            let bytes = codec.encode(&ev).expect("encode");
            let copies = if (r >> 32) % 20 == 0 { 2 } else { 1 };
            // A header on some records (ingest writes none; the aggregator reads none): a
            // copy must carry it (`repartition.rs`).
            let headers = ((r >> 40) % 7 == 0).then(|| {
                let trace = format!("t{n}");
                OwnedHeaders::new().insert(Header { key: "trace", value: Some(trace.as_str()) })
            });
            for &topic in &route(r)[..copies] {
                let mut rec = BaseRecord::to(topic).key(ev.grid_id.as_bytes()).payload(&bytes);
                if let Some(h) = &headers {
                    rec = rec.headers(h.clone());
                }
                while let Err((_, back)) = producer.send(rec) {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            events.push(ev);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    assert_eq!(producer.in_flight_count(), 0, "every event written");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no delivery failed");
    events
}

/// The windows the distinct events make.
pub fn recount(events: &[SaleEvent]) -> Truth {
    let mut m = BTreeMap::new();
    for e in events {
        for size in SIZES {
            let start = e.occurred_at - e.occurred_at.rem_euclid(size);
            let c: &mut (i64, i64, i64, i64) =
                m.entry((e.grid_id.clone(), e.sku.clone(), start, start + size)).or_default();
            let q = i64::from(e.quantity);
            match e.kind {
                SaleKind::Sale => c.0 += q,
                SaleKind::Return => c.1 += q,
                SaleKind::Preorder => c.2 += q,
            }
            c.3 += 1;
        }
    }
    m
}

/// Compares `demand` (read_committed) with the recount; `Err` says what differs.
fn compare(kafka: &Kafka, demand: &str, truth: &Truth) -> Result<usize, String> {
    let codec = Codec::single_object();
    let mut seen = HashSet::new();
    let mut latest: BTreeMap<WindowKey, DemandWindow> = BTreeMap::new();
    let mut revisions: BTreeMap<WindowKey, Vec<i32>> = BTreeMap::new();
    for r in read_to_end(kafka, demand, Isolation::ReadCommitted, Duration::from_secs(60)) {
        let w: DemandWindow = codec.decode(&r.value.expect("value")).expect("decode");
        let k = (w.grid_id.clone(), w.sku.clone(), w.window_start, w.window_end);
        assert!(
            seen.insert((k.clone(), w.revision)),
            "duplicate output: {k:?} revision {}",
            w.revision
        );
        revisions.entry(k.clone()).or_default().push(w.revision);
        if latest.get(&k).is_none_or(|l| l.revision < w.revision) {
            latest.insert(k, w);
        }
    }
    for (k, revs) in &revisions {
        let mut sorted = revs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..sorted.len() as i32).collect::<Vec<_>>(), "revisions of {k:?}");
    }
    let got: Truth = latest
        .iter()
        .map(|(k, w)| {
            (k.clone(), (w.units_sold, w.units_returned, w.preorder_units, w.event_count))
        })
        .collect();
    if &got == truth {
        return Ok(revisions.values().map(|r| r.len() - 1).sum());
    }
    let missing = truth.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !truth.contains_key(*k)).count();
    let wrong: Vec<_> = truth
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k.clone(), *v, *g)))
        .take(3)
        .collect();
    Err(format!("{missing} windows missing, {extra} unexpected, differing (truth, got): {wrong:?}"))
}

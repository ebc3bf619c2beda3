//! Exactly-once of the aggregator under faults, on real Kafka: a known set of sale events
//! (with device retries, i.e. duplicate event ids, and out-of-order times) flows while
//! aggregator processes are SIGKILLed and restarted, scaled 1 → 3 → 1, or lose a broker.
//! At the end every `DemandWindow` read with read_committed — the latest revision of each
//! window — equals the recount from ground truth, no (grid, sku, window, revision) appears
//! twice, and revisions run 0, 1, 2… without gaps.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nearfield_schemas::{Codec, DemandWindow, SaleEvent, SaleKind};
use nearfield_testkit::{Isolation, Kafka, Process, read_to_end};
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

const SIZES: [i64; 2] = [1_000, 5_000];

/// The fault tests run one at a time: each drives brokers and several stage processes,
/// and on two cores running them together starves a 3-node cluster's failover.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    nearfield_common::time::now_ms()
}

/// One aggregator deployment: its own topics and config file.
struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    sales: String,
    demand: String,
    late: String,
    group: String,
}

fn setup(kafka: &Kafka, prefix: &str, partitions: i32) -> Setup {
    let id = Kafka::unique_topic(prefix);
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
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("nearfield.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = {partitions}\n\
             [kafka.topics]\nsales = \"{sales}\"\nheartbeats = \"{hb}\"\ndlq = \"{dlq}\"\nlate = \"{late}\"\n\
             demand = \"{demand}\"\naggregator_changelog = \"{changelog}\"\nstores = \"{stores}\"\n\
             [aggregate]\nlisten = \"127.0.0.1:0\"\ngroup_id = \"agg-{id}\"\nwindows_ms = [1000, 5000]\n\
             out_of_orderness_ms = 200\ngrace_ms = 100\nallowed_lateness_ms = 120000\nmax_close_delay_ms = 2000\n\
             commit_interval_ms = 200\ntransaction_timeout_ms = 10000\nfollow_stores_topic = false\n",
            kafka.brokers()
        ),
    )
    .expect("config");
    Setup { dir, config, sales, demand, late, group: format!("agg-{id}") }
}

fn spawn(s: &Setup, instance: &str, n: usize) -> Process {
    let log = s.dir.path().join(format!("{instance}-{n}.log"));
    Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .args([
                "--config",
                s.config.to_str().expect("utf8"),
                "aggregate",
                "--instance-id",
                instance,
            ])
            .env_remove("NEARFIELD_BROKERS")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn nearfield aggregate"),
    )
}

fn sigterm(Process(child): &mut Process, log: std::path::PathBuf) {
    let tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "aggregator exited with {status} after SIGTERM:\n{}", tail());
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("aggregator did not stop within 40 s of SIGTERM:\n{}", tail());
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
fn feed(brokers: &str, topic: &str, rate: u64, stop: Arc<AtomicBool>) -> Vec<SaleEvent> {
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
            let grid = format!("8830e1d8{:02x}fffff", store % 12);
            let kind = match r % 10 {
                0 => SaleKind::Return,
                1 => SaleKind::Preorder,
                _ => SaleKind::Sale,
            };
            let now = now_ms();
            let ev = SaleEvent {
                event_id: format!("e{n}"),
                store_id: format!("st{store}"),
                device_id: "d1".into(),
                grid_id: grid,
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
            for _ in 0..copies {
                let mut rec = BaseRecord::to(topic).key(ev.grid_id.as_bytes()).payload(&bytes);
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

type WindowKey = (String, String, i64, i64);

fn recount(events: &[SaleEvent]) -> BTreeMap<WindowKey, (i64, i64, i64, i64)> {
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

/// Compares demand.v1 (read_committed) with the recount; Err says what differs.
fn compare(
    kafka: &Kafka,
    s: &Setup,
    truth: &BTreeMap<WindowKey, (i64, i64, i64, i64)>,
) -> Result<usize, String> {
    let codec = Codec::single_object();
    let mut seen = HashSet::new();
    let mut latest: BTreeMap<WindowKey, DemandWindow> = BTreeMap::new();
    let mut revisions: BTreeMap<WindowKey, Vec<i32>> = BTreeMap::new();
    for r in read_to_end(kafka, &s.demand, Isolation::ReadCommitted, Duration::from_secs(60)) {
        let w: DemandWindow = codec.decode(&r.value.expect("value")).expect("decode");
        let k = (w.grid_id.clone(), w.sku.clone(), w.window_start, w.window_end);
        if !seen.insert((k.clone(), w.revision)) {
            panic!("duplicate output: {k:?} revision {}", w.revision);
        }
        revisions.entry(k.clone()).or_default().push(w.revision);
        if latest.get(&k).is_none_or(|l| l.revision < w.revision) {
            latest.insert(k, w);
        }
    }
    for (k, revs) in &revisions {
        let mut sorted = revs.clone();
        sorted.sort_unstable();
        if sorted != (0..sorted.len() as i32).collect::<Vec<_>>() {
            panic!("revisions of {k:?} are not 0..n: {revs:?}");
        }
    }
    let got: BTreeMap<WindowKey, (i64, i64, i64, i64)> = latest
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

/// Waits until the outputs equal the recount, then checks nothing went to the late topic.
/// The aggregators' logs without routine lines (for a failure message).
fn logs(s: &Setup) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(s.dir.path()).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("INFO") || l.contains("rebalance") || l.contains("restore"))
                .collect();
            out.push_str(&format!("--- {name}\n{}\n", lines.join("\n")));
        }
    }
    out
}

fn assert_exact(kafka: &Kafka, s: &Setup, events: &[SaleEvent]) -> usize {
    let truth = recount(events);
    let deadline = Instant::now() + Duration::from_secs(180);
    let revisions = loop {
        match compare(kafka, s, &truth) {
            Ok(revisions) => break revisions,
            Err(e) if Instant::now() > deadline => {
                panic!("outputs never matched ground truth: {e}\n{}", logs(s))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    };
    let late = read_to_end(kafka, &s.late, Isolation::ReadCommitted, Duration::from_secs(30));
    assert!(late.is_empty(), "{} events went to the late topic", late.len());
    revisions
}

fn feeding(
    kafka: &Kafka,
    topic: String,
    rate: u64,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<SaleEvent>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let brokers = kafka.brokers().to_string();
    (stop, std::thread::spawn(move || feed(&brokers, &topic, rate, s)))
}

#[test]
fn sigkill_at_random_moments_neither_loses_nor_double_counts() {
    let _serial = serial();
    let kafka = Kafka::shared();
    let s = setup(kafka, "agg-kill", 3);
    let (stop, feeder) = feeding(kafka, s.sales.clone(), 1_500);
    let mut child = spawn(&s, "a", 0);
    let mut pause = 0x2545_f491u64;
    for round in 1..=6 {
        pause = pause.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(1_500 + (pause >> 33) % 3_000));
        child.0.kill().expect("SIGKILL");
        let _ = child.0.wait();
        child = spawn(&s, "a", round);
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let events = feeder.join().expect("feeder");
    let revisions = assert_exact(kafka, &s, &events);
    sigterm(&mut child, s.dir.path().join("a-6.log"));
    eprintln!("{} events, 6 SIGKILLs, {revisions} revisions: outputs exact", events.len());
}

#[test]
fn scaling_one_to_three_to_one_moves_state_with_partitions() {
    let _serial = serial();
    let kafka = Kafka::shared();
    let s = setup(kafka, "agg-scale", 6);
    let (stop, feeder) = feeding(kafka, s.sales.clone(), 1_500);
    let mut a = spawn(&s, "a", 0);
    std::thread::sleep(Duration::from_secs(5));
    let mut b = spawn(&s, "b", 0);
    let mut c = spawn(&s, "c", 0);
    // Scale back in only once the new instances own partitions (and ran a while).
    let deadline = Instant::now() + Duration::from_secs(90);
    for name in ["b-0.log", "c-0.log"] {
        while !std::fs::read_to_string(s.dir.path().join(name))
            .is_ok_and(|l| l.contains("partition restored"))
        {
            assert!(Instant::now() < deadline, "{name} never owned a partition:\n{}", logs(&s));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_secs(4));
    sigterm(&mut b, s.dir.path().join("b-0.log"));
    sigterm(&mut c, s.dir.path().join("c-0.log"));
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let events = feeder.join().expect("feeder");
    assert_exact(kafka, &s, &events);
    let all = logs(&s);
    eprintln!(
        "{} events; {} aborted transactions, {} in-place recoveries, {} restarts: outputs exact",
        events.len(),
        all.matches("transaction aborted").count(),
        all.matches("recovered from the last commit").count(),
        all.matches("aggregator loop failed").count()
    );
    sigterm(&mut a, s.dir.path().join("a-0.log"));
}

/// A zombie takes the aggregator's transactional id (as a stale copy of the instance
/// would): the aggregator's producer is fenced, its transaction fails, and it must start
/// over from its last commit, fencing the zombie in turn, without losing or repeating a
/// count.
#[test]
fn a_fenced_producer_restarts_from_the_last_commit() {
    let _serial = serial();
    use rdkafka::producer::{BaseProducer, Producer};
    let kafka = Kafka::shared();
    let s = setup(kafka, "agg-fence", 3);
    let (stop, feeder) = feeding(kafka, s.sales.clone(), 1_500);
    let mut a = spawn(&s, "a", 0);
    std::thread::sleep(Duration::from_secs(6));
    let zombie: BaseProducer = kafka
        .client_config()
        .set("transactional.id", format!("{}-a", s.group))
        .create()
        .expect("zombie producer");
    zombie.init_transactions(Duration::from_secs(30)).expect("zombie fences the aggregator");
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let events = feeder.join().expect("feeder");
    assert_exact(kafka, &s, &events);
    let all = logs(&s);
    assert!(
        all.contains("aggregator loop failed"),
        "the fenced producer was never noticed:\n{all}"
    );
    sigterm(&mut a, s.dir.path().join("a-0.log"));
}

#[test]
fn losing_a_broker_mid_stream_changes_nothing() {
    let _serial = serial();
    let cluster = Kafka::start(3);
    let kafka = &cluster;
    let s = setup(kafka, "agg-broker", 3);
    let (stop, feeder) = feeding(kafka, s.sales.clone(), 1_000);
    let mut a = spawn(&s, "a", 0);
    std::thread::sleep(Duration::from_secs(6));
    kafka.kill_node(2);
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    let events = feeder.join().expect("feeder");
    assert_exact(kafka, &s, &events);
    let all = logs(&s);
    eprintln!(
        "{} events; {} aborted transactions, {} in-place recoveries, {} restarts: outputs exact",
        events.len(),
        all.matches("transaction aborted").count(),
        all.matches("recovered from the last commit").count(),
        all.matches("aggregator loop failed").count()
    );
    sigterm(&mut a, s.dir.path().join("a-0.log"));
    kafka.start_node(2);
}

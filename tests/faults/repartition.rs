//! `nearfield repartition` under test: sale events written the way ingest writes them into
//! a topic of `n` partitions, copied into one of `n + 2`; every record read back with
//! read_committed must be in the target exactly once, in the partition its key hashes to
//! there, with its headers and timestamp, and each key's records in the order they were
//! written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_testkit::{Deployment, Isolation, Kafka, Record, read_to_end};

use crate::scenarios::Harness;

const RATE: u64 = 1_500;

pub struct Repartition {
    from: String,
    to: String,
    to_partitions: i32,
    group: String,
    stop: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<usize>>,
    fed: usize,
}

/// The copy's topics (`to` with two partitions more than `from`) and configuration file,
/// with `from` made compacted when `compact`.
fn deploy(kafka: &Kafka, partitions: i32, compact: bool) -> (Repartition, Deployment) {
    let id = Kafka::unique_topic("rep");
    let (from, to) = (format!("from-{id}"), format!("to-{id}"));
    let policy: &[(&str, &str)] = if compact { &[("cleanup.policy", "compact")] } else { &[] };
    kafka.create_topic(&from, partitions, policy);
    kafka.create_topic(&to, partitions + 2, &[]);
    copy(kafka, &from, &to, partitions + 2)
}

/// The copy of `from` into `to` (which has `to_partitions`).
fn copy(kafka: &Kafka, from: &str, to: &str, to_partitions: i32) -> (Repartition, Deployment) {
    // No dead-letter topic: a copy needs none (it decodes and refuses nothing).
    let id = Kafka::unique_topic("rep");
    let config = format!(
        "[kafka]\nbrokers = \"{}\"\n\
         [repartition]\nfrom = \"{from}\"\nto = \"{to}\"\nlisten = \"127.0.0.1:0\"\n\
         group_id = \"rep-{id}\"\ncommit_interval_ms = 200\ntransaction_timeout_ms = 10000\n",
        kafka.brokers()
    );
    let d = Deployment::new(env!("CARGO_BIN_EXE_nearfield").as_ref(), "repartition", &config, &[]);
    let h = Repartition {
        from: from.to_string(),
        to: to.to_string(),
        to_partitions,
        group: format!("rep-{id}"),
        stop: Arc::new(AtomicBool::new(false)),
        feeder: None,
        fed: 0,
    };
    (h, d)
}

/// A record as a copy must keep it: value, headers, timestamp.
type Kept = (Vec<u8>, Vec<(String, String)>, Option<i64>);
/// Each key's records, in the order its partition holds them.
type ByKey = BTreeMap<Vec<u8>, Vec<Kept>>;

/// Each key's values, headers and timestamps in the order its partition holds them.
fn by_key(records: &[Record]) -> ByKey {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut keys = ByKey::new();
    for r in sorted {
        let key = r.key.clone().unwrap_or_default();
        let kept = (r.value.clone().unwrap_or_default(), r.headers.clone(), r.timestamp);
        keys.entry(key).or_default().push(kept);
    }
    keys
}

impl Repartition {
    /// `Ok` with the records copied when the target holds exactly the source's records,
    /// each in its key's partition, each key's in order; else what differs.
    fn compare(&self, kafka: &Kafka) -> Result<usize, String> {
        let t = Duration::from_secs(60);
        let source = read_to_end(kafka, &self.from, Isolation::ReadCommitted, t);
        let copied = read_to_end(kafka, &self.to, Isolation::ReadCommitted, t);
        if let Some(r) = copied.iter().find(|r| {
            partition_for_key(r.key.as_deref().unwrap_or_default(), self.to_partitions)
                != r.partition
        }) {
            return Err(format!("a record of key {:?} in partition {}", r.key, r.partition));
        }
        if source.len() != copied.len() {
            return Err(format!("{} records copied of {}", copied.len(), source.len()));
        }
        if by_key(&source) != by_key(&copied) {
            return Err(
                "a key's records (values, headers, timestamps) differ or are out of order".into()
            );
        }
        Ok(copied.len())
    }
}

impl Harness for Repartition {
    const STAGE: &'static str = "repartition";
    const KILL_PAUSE_MS: (u64, u64) = (1_000, 2_000);

    fn setup(kafka: &Kafka, partitions: i32) -> (Self, Deployment) {
        deploy(kafka, partitions, false)
    }

    fn feed(&mut self, kafka: &Kafka) {
        let (brokers, topic, stop) =
            (kafka.brokers().to_string(), self.from.clone(), Arc::clone(&self.stop));
        self.feeder = Some(std::thread::spawn(move || {
            crate::aggregator::feed(&brokers, &topic, RATE, &stop).len()
        }));
    }

    fn stop_feeding(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.feeder.take() {
            self.fed = f.join().expect("feeder");
        }
    }

    fn assert_exact(&self, kafka: &Kafka, d: &Deployment) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        let copied = loop {
            match self.compare(kafka) {
                Ok(n) => break n,
                Err(e) if Instant::now() > deadline => {
                    panic!("the copy never matched its source: {e}\n{}\n{}", d.logs(), d.stacks())
                }
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        };
        assert!(copied > self.fed, "{copied} records for {} events: retries too", self.fed);
        format!(
            "{copied} records into {} partitions: each once, in its key's partition, in order",
            self.to_partitions
        )
    }

    fn group(&self) -> String {
        self.group.clone()
    }
}

/// A compacted source is refused at start, naming the setting and why.
pub fn compacted_source_is_refused(kafka: &Kafka) {
    let (h, mut d) = deploy(kafka, 1, true);
    d.start("a");
    let status = d.exited("a", Duration::from_secs(60)).expect("it stops");
    assert!(!status.success(), "refused with a failing status");
    let log = d.log("a");
    let why = format!("repartition.from: {} is compacted", h.from);
    assert!(log.contains(&why), "the refusal names the setting and the rule:\n{log}");
}

/// The growth of docs/SCALING.md, end to end: sales written into a topic of 3 partitions
/// are copied, while they are written, into the 5 partitions of a running aggregator's
/// input, the copy SIGKILLed once on the way; then ingest's rolling move: for a while
/// sales go to either topic (instances of both versions), a device's retry landing on the
/// other one, then to the new topic only. The aggregator's demand windows equal the
/// recount of the distinct events (each retry counted once, through the copy or not),
/// and it never sees a grid where its key does not hash.
pub fn grown_topic_aggregates_exactly(kafka: &Kafka) {
    let (mut agg, mut ad) = crate::aggregator::deploy(kafka, 5, crate::aggregator::FAST_WINDOWS);
    let from = format!("from-{}", Kafka::unique_topic("grow"));
    kafka.create_topic(&from, 3, &[]);
    let (_, mut rd) = copy(kafka, &from, agg.sales(), 5);
    let stop = Arc::new(AtomicBool::new(false));
    // 0: every ingest writes the old topic; 1: some the old, some the new; 2: the new.
    let phase = Arc::new(AtomicU8::new(0));
    let feeder = {
        let (brokers, stop, phase) =
            (kafka.brokers().to_string(), Arc::clone(&stop), Arc::clone(&phase));
        let (old, new) = (from.clone(), agg.sales().to_string());
        std::thread::spawn(move || {
            crate::aggregator::feed_routed(&brokers, RATE, &stop, |r| {
                let (old, new) = (old.as_str(), new.as_str());
                match phase.load(Ordering::Relaxed) {
                    0 => [old, old],
                    1 if (r >> 40) % 2 == 0 => [old, new],
                    1 => [new, old],
                    _ => [new, new],
                }
            })
        })
    };
    ad.start("a");
    rd.start("a");
    rd.wait_owns("a");
    std::thread::sleep(Duration::from_secs(4));
    rd.kill("a");
    rd.start("a");
    rd.wait_owns("a");
    std::thread::sleep(Duration::from_secs(4));
    phase.store(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(4));
    phase.store(2, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    agg.fed(feeder.join().expect("feeder"));
    let summary = agg.assert_exact(kafka, &ad);
    assert_eq!(ad.count("does not hash to"), 0, "a grid was misplaced:\n{}", ad.logs());
    eprintln!(
        "a grown topic: 3 → 5 partitions through a copy killed once, ingest moved: {summary}"
    );
    rd.stop("a");
    ad.stop("a");
}

//! The emitter under test: a synthetic stream of `DemandWindow`s written in partition
//! order; the truth is what a single in-memory state machine decides on the same input,
//! and the plan topics (read_committed) must hold exactly those signals: none lost, none
//! repeated (every `signal_id` once), same content. [`PopularSku`] runs the same
//! scenarios on a SKU sold in 20 000 grids, whose changelog must stay in small records.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_emitter::EmitConfig;
use nearfield_emitter::state::StateConfig;
use nearfield_emitter::synthetic::{self, Scenario};
use nearfield_schemas::{Codec, DemandWindow, PlanSignal};
use nearfield_testkit::{Deployment, Isolation, Kafka, read_to_end};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::scenarios::Harness;

const RATE: u64 = 150;

pub struct Emitter {
    partitions: i32,
    rate: u64,
    demand: String,
    changelog: String,
    plan_prefix: String,
    group: String,
    suppliers: Vec<String>,
    windows: Vec<DemandWindow>,
    expected: Vec<PlanSignal>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Harness for Emitter {
    const STAGE: &'static str = "emitter";
    const KILL_PAUSE_MS: (u64, u64) = (300, 2_000);

    fn setup(kafka: &Kafka, partitions: i32) -> (Self, Deployment) {
        let scenario = Scenario { skus: 12, grids: 6, hours: 120, seed: 11, surge_hour: Some(100) };
        Emitter::with(kafka, partitions, &scenario, RATE)
    }

    fn feed(&mut self, kafka: &Kafka) {
        let (brokers, topic, windows, n, rate) = (
            kafka.brokers().to_string(),
            self.demand.clone(),
            self.windows.clone(),
            self.partitions,
            self.rate,
        );
        self.feeder = Some(std::thread::spawn(move || feed(&brokers, &topic, &windows, n, rate)));
    }

    fn stop_feeding(&mut self) {
        if let Some(f) = self.feeder.take() {
            f.join().expect("feeder");
        }
    }

    fn assert_exact(&self, kafka: &Kafka, d: &Deployment) -> String {
        self.exact(kafka, d)
    }

    fn group(&self) -> String {
        self.group.clone()
    }
}

/// One SKU sold in 20 000 grids (and a second one as popular): its state is spread over
/// small changelog records, so the stage commits, and restores after SIGKILLs.
pub struct PopularSku(Emitter);

/// Largest changelog record allowed (Kafka's default limit is 1 MiB).
const SMALL_RECORD: usize = 64 * 1024;

impl Harness for PopularSku {
    const STAGE: &'static str = "emitter";
    const KILL_PAUSE_MS: (u64, u64) = (1_000, 3_000);

    fn setup(kafka: &Kafka, partitions: i32) -> (Self, Deployment) {
        let scenario = Scenario { skus: 2, grids: 20_000, hours: 6, seed: 5, surge_hour: None };
        let (e, d) = Emitter::with(kafka, partitions, &scenario, 6_000);
        (PopularSku(e), d)
    }

    fn feed(&mut self, kafka: &Kafka) {
        self.0.feed(kafka);
    }

    fn stop_feeding(&mut self) {
        self.0.stop_feeding();
    }

    fn assert_exact(&self, kafka: &Kafka, d: &Deployment) -> String {
        let summary = self.0.exact(kafka, d);
        let records = read_to_end(
            kafka,
            &self.0.changelog,
            Isolation::ReadCommitted,
            Duration::from_secs(60),
        );
        let largest = records
            .iter()
            .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0);
        assert!(records.len() > 20_000, "{} changelog records", records.len());
        assert!(largest < SMALL_RECORD, "a changelog record of {largest} bytes");
        format!("{summary}; {} changelog records, the largest {largest} bytes", records.len())
    }

    fn group(&self) -> String {
        self.0.group()
    }
}

impl Emitter {
    fn with(kafka: &Kafka, partitions: i32, scenario: &Scenario, rate: u64) -> (Self, Deployment) {
        let id = Kafka::unique_topic("emit");
        let t = |n: &str| format!("{n}-{id}");
        let (demand, changelog, dlq, catalog) =
            (t("demand"), t("emchangelog"), t("dlq"), t("catalog"));
        let isr: &[(&str, &str)] =
            if kafka.nodes() >= 3 { &[("min.insync.replicas", "2")] } else { &[] };
        let mut compact = vec![("cleanup.policy", "compact")];
        compact.extend_from_slice(isr);
        kafka.create_topic(&demand, partitions, &compact);
        kafka.create_topic(&changelog, partitions, &compact);
        kafka.create_topic(&dlq, 1, isr);
        let lines: Vec<String> = synthetic::catalog_records(scenario)
            .iter()
            .map(|r| serde_json::to_string(r).expect("json"))
            .collect();
        let plan_prefix = format!("plan-{id}.");
        let config = format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = {partitions}\n\
             [kafka.topics]\ndemand = \"{demand}\"\nemitter_changelog = \"{changelog}\"\n\
             dlq = \"{dlq}\"\ncatalog = \"{catalog}\"\nplan_prefix = \"{plan_prefix}\"\n\
             [emit]\nlisten = \"127.0.0.1:0\"\ngroup_id = \"emit-{id}\"\n\
             catalog_file = \"catalog.jsonl\"\nfollow_catalog_topic = false\nfollow_coverage_topic = false\nprivacy_k = 3\n\
             idle_advance_ms = 0\ncommit_interval_ms = 200\ntransaction_timeout_ms = 10000\n",
            kafka.brokers()
        );
        let d = Deployment::new(
            env!("CARGO_BIN_EXE_nearfield").as_ref(),
            "emit",
            &config,
            &[("catalog.jsonl", &lines.join("\n"))],
        );
        let windows = synthetic::stream(scenario);
        let cfg = EmitConfig { privacy_k: 3, idle_advance_ms: 0, ..EmitConfig::default() };
        let state_cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
        let expected = synthetic::reference(
            &windows,
            |sku| partition_for_key(sku.as_bytes(), partitions),
            &state_cfg,
            &synthetic::catalog(scenario),
        );
        let h = Emitter {
            partitions,
            rate,
            demand,
            changelog,
            plan_prefix,
            group: format!("emit-{id}"),
            suppliers: (0..3).map(|i| format!("syn-{i}")).collect(),
            windows,
            expected,
            feeder: None,
        };
        (h, d)
    }

    fn exact(&self, kafka: &Kafka, d: &Deployment) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        let got = loop {
            let got = self.plans(kafka);
            if got.len() >= self.expected.len() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        let mut ids = HashSet::new();
        for p in &got {
            assert!(
                ids.insert(p.signal_id.clone()),
                "signal {} sent twice:\n{}",
                p.signal_id,
                d.logs()
            );
        }
        let by_id = |v: &[PlanSignal]| -> BTreeMap<String, PlanSignal> {
            v.iter().map(|p| (p.signal_id.clone(), p.clone())).collect()
        };
        let (got_m, want_m) = (by_id(&got), by_id(&self.expected));
        let missing: Vec<_> = want_m.keys().filter(|k| !got_m.contains_key(*k)).take(3).collect();
        let extra: Vec<_> = got_m.keys().filter(|k| !want_m.contains_key(*k)).take(3).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} expected, {} got; missing {missing:?}, unexpected {extra:?}\n{}\n{}",
            self.expected.len(),
            got.len(),
            d.logs(),
            d.stacks()
        );
        assert_eq!(got_m, want_m, "same decisions, same content");
        format!("{} windows, {} signals: exact", self.windows.len(), got.len())
    }

    fn plans(&self, kafka: &Kafka) -> Vec<PlanSignal> {
        read_plans(kafka, &self.plan_prefix, &self.suppliers)
    }
}

/// The committed signals on the plan topics of `suppliers` (each topic in partition
/// order), `generated_at` zeroed.
pub(crate) fn read_plans(kafka: &Kafka, prefix: &str, suppliers: &[String]) -> Vec<PlanSignal> {
    let codec = Codec::single_object();
    let mut out = Vec::new();
    for sup in suppliers {
        let topic = format!("{prefix}{sup}.v1");
        if !topic_exists(kafka, &topic) {
            continue;
        }
        for r in read_to_end(kafka, &topic, Isolation::ReadCommitted, Duration::from_secs(60)) {
            let mut p: PlanSignal = codec.decode(&r.value.expect("value")).expect("decode");
            assert_eq!(&p.supplier_id, sup, "a signal on another supplier's topic");
            p.generated_at = 0;
            out.push(p);
        }
    }
    out
}

fn topic_exists(kafka: &Kafka, topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = kafka.client_config().create().expect("consumer");
    c.fetch_metadata(Some(topic), Duration::from_secs(10))
        .is_ok_and(|md| md.topics().first().is_some_and(|t| t.error().is_none()))
}

/// Writes the windows in order (per partition) at about `rate` per second.
pub(crate) fn feed(
    brokers: &str,
    topic: &str,
    windows: &[DemandWindow],
    partitions: i32,
    rate: u64,
) {
    let producer: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");
    let codec = Codec::single_object();
    let started = Instant::now();
    for (i, w) in windows.iter().enumerate() {
        while (started.elapsed().as_millis() as u64) * rate / 1000 < i as u64 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let bytes = codec.encode(w).expect("encode");
        let part = partition_for_key(w.sku.as_bytes(), partitions);
        let mut rec = BaseRecord::to(topic).key(w.sku.as_bytes()).partition(part).payload(&bytes);
        while let Err((_, back)) = producer.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
}

//! Exactly-once of the emitter under faults, on real Kafka: a synthetic stream of
//! DemandWindows flows while `nearfield emit` processes are SIGKILLed and restarted and a
//! second instance joins and leaves the group. At the end the plan topics (read_committed)
//! hold exactly the decisions a single in-memory state machine makes on the same input:
//! none lost, none repeated (every `signal_id` once), same content.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_emitter::EmitConfig;
use nearfield_emitter::state::StateConfig;
use nearfield_emitter::synthetic::{self, Scenario};
use nearfield_schemas::{Codec, DemandWindow, PlanSignal};
use nearfield_testkit::{Isolation, Kafka, Process, read_to_end};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

const PARTITIONS: i32 = 3;

struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    demand: String,
    plan_prefix: String,
}

fn setup(kafka: &Kafka, scenario: &Scenario) -> Setup {
    let id = Kafka::unique_topic("emit-faults");
    let t = |n: &str| format!("{n}-{id}");
    let (demand, changelog, dlq, catalog) = (t("demand"), t("emchangelog"), t("dlq"), t("catalog"));
    kafka.create_topic(&demand, PARTITIONS, &[("cleanup.policy", "compact")]);
    kafka.create_topic(&changelog, PARTITIONS, &[("cleanup.policy", "compact")]);
    kafka.create_topic(&dlq, 1, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let catalog_file = dir.path().join("catalog.jsonl");
    let lines: Vec<String> = synthetic::catalog_records(scenario)
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    std::fs::write(&catalog_file, lines.join("\n")).expect("catalog");
    let plan_prefix = format!("plan-{id}.");
    let config = dir.path().join("nearfield.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = {PARTITIONS}\n\
             [kafka.topics]\ndemand = \"{demand}\"\nemitter_changelog = \"{changelog}\"\n\
             dlq = \"{dlq}\"\ncatalog = \"{catalog}\"\nplan_prefix = \"{plan_prefix}\"\n\
             [emit]\nlisten = \"127.0.0.1:0\"\ngroup_id = \"emit-{id}\"\n\
             catalog_file = \"catalog.jsonl\"\nfollow_catalog_topic = false\nprivacy_k = 3\n\
             idle_advance_ms = 0\ncommit_interval_ms = 200\ntransaction_timeout_ms = 10000\n",
            kafka.brokers()
        ),
    )
    .expect("config");
    Setup { dir, config, demand, plan_prefix }
}

fn spawn(s: &Setup, instance: &str, n: usize) -> Process {
    let log = s.dir.path().join(format!("{instance}-{n}.log"));
    Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .args(["--config", s.config.to_str().expect("utf8"), "emit", "--instance-id", instance])
            .env_remove("NEARFIELD_BROKERS")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn nearfield emit"),
    )
}

fn logs(s: &Setup) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(s.dir.path()).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.contains("INFO") || l.contains("rebalance") || l.contains("restored")
                })
                .collect();
            out.push_str(&format!("--- {name}\n{}\n", lines.join("\n")));
        }
    }
    out
}

/// Writes the windows in order (per partition) at about `rate` per second until done.
fn feed(
    brokers: String,
    topic: String,
    windows: Vec<DemandWindow>,
    rate: u64,
    done: Arc<AtomicBool>,
) {
    let producer: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let codec = Codec::single_object();
    let started = Instant::now();
    for (i, w) in windows.iter().enumerate() {
        while (started.elapsed().as_millis() as u64) * rate / 1000 < i as u64 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let bytes = codec.encode(w).expect("encode");
        let part = partition_for_key(w.sku.as_bytes(), PARTITIONS);
        let mut rec = BaseRecord::to(&topic).key(w.sku.as_bytes()).partition(part).payload(&bytes);
        while let Err((_, back)) = producer.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    done.store(true, Ordering::Relaxed);
}

fn plans(kafka: &Kafka, s: &Setup, suppliers: &[String]) -> Vec<PlanSignal> {
    let codec = Codec::single_object();
    let mut out = Vec::new();
    for sup in suppliers {
        let topic = format!("{}{sup}.v1", s.plan_prefix);
        for r in read_to_end(kafka, &topic, Isolation::ReadCommitted, Duration::from_secs(60)) {
            let mut p: PlanSignal = codec.decode(&r.value.expect("value")).expect("decode");
            assert_eq!(&p.supplier_id, sup, "a signal on another supplier's topic");
            p.generated_at = 0;
            out.push(p);
        }
    }
    out
}

#[test]
fn sigkill_and_rebalance_neither_lose_nor_repeat_a_decision() {
    let kafka = Kafka::shared();
    let scenario = Scenario { skus: 12, grids: 6, hours: 120, seed: 11, surge_hour: Some(100) };
    let s = setup(kafka, &scenario);
    let windows = synthetic::stream(&scenario);
    let cfg = EmitConfig { privacy_k: 3, idle_advance_ms: 0, ..EmitConfig::default() };
    let state_cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
    let expected = synthetic::reference(
        &windows,
        |sku| partition_for_key(sku.as_bytes(), PARTITIONS),
        &state_cfg,
        &synthetic::catalog(&scenario),
    );
    let suppliers: Vec<String> = (0..3).map(|i| format!("syn-{i}")).collect();

    let done = Arc::new(AtomicBool::new(false));
    let n = windows.len();
    let feeder = {
        let (b, t, d) = (kafka.brokers().to_string(), s.demand.clone(), Arc::clone(&done));
        std::thread::spawn(move || feed(b, t, windows, 150, d))
    };
    // Each SIGKILL hits an instance that owns partitions: wait until it restored some
    // (a killed member's partitions come free only after its session times out), then
    // kill it a random moment later.
    let owns = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(s.dir.path().join(name))
            .is_ok_and(|l| l.contains("partition restored"))
        {
            assert!(Instant::now() < deadline, "{name} never owned a partition:\n{}", logs(&s));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut a = spawn(&s, "a", 0);
    let mut pause = 0x2545_f491u64;
    let mut kills = 0;
    let mut round = 0;
    while !done.load(Ordering::Relaxed) || kills < 3 {
        round += 1;
        owns(&format!("a-{}.log", round - 1));
        pause = pause.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(300 + (pause >> 33) % 2_000));
        if round == 2 {
            // A second instance joins, takes partitions (and their state), and is killed.
            let mut b = spawn(&s, "b", 0);
            owns("b-0.log");
            std::thread::sleep(Duration::from_millis(500 + (pause >> 40) % 1_500));
            b.0.kill().expect("SIGKILL b");
            let _ = b.0.wait();
            kills += 1;
        }
        a.0.kill().expect("SIGKILL");
        let _ = a.0.wait();
        kills += 1;
        a = spawn(&s, "a", round);
    }
    feeder.join().expect("feeder");

    let deadline = Instant::now() + Duration::from_secs(180);
    let got = loop {
        let got = plans(kafka, &s, &suppliers);
        if got.len() >= expected.len() || Instant::now() > deadline {
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
            logs(&s)
        );
    }
    let by_id = |v: &[PlanSignal]| -> BTreeMap<String, PlanSignal> {
        v.iter().map(|p| (p.signal_id.clone(), p.clone())).collect()
    };
    let (got_m, want_m) = (by_id(&got), by_id(&expected));
    let missing: Vec<_> = want_m.keys().filter(|k| !got_m.contains_key(*k)).take(3).collect();
    let extra: Vec<_> = got_m.keys().filter(|k| !want_m.contains_key(*k)).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} expected, {} got; missing {missing:?}, unexpected {extra:?}\n{}",
        expected.len(),
        got.len(),
        logs(&s)
    );
    assert_eq!(got_m, want_m, "same decisions, same content");
    let all = logs(&s);
    eprintln!(
        "{n} windows, {kills} SIGKILLs (one of an instance that joined), {} signals exact ({} partition restores)",
        got.len(),
        all.matches("partition restored").count()
    );
    let _ = Command::new("kill").args(["-TERM", &a.0.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(40);
    while a.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "emitter did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

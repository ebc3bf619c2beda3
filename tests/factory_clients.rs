//! Issue #9's live test: the emitter writes plans to real Kafka, and the factory clients —
//! Java (`clients/java`, run as its `FollowPlans` example) and Python (`clients/python`,
//! `python -m nearfield_plans.follow`) — read them. Each must see exactly what the Rust
//! side wrote (every record, in order, decoded to the same values), reach the same
//! outcome per record and the same final book as [`nearfield_schemas::plan_book`], and
//! leave its consumer group committed at the end of the topic (offsets are committed only
//! after the plan was handled, and every plan was handled). A Python handler that raises
//! on the 7th plan leaves its group committed exactly at that plan.
//!
//! The clients are built by `make test` (`mvn package` in clients/java; the Python package
//! is installed into `.venv` by scripts/bootstrap.sh). Missing builds fail the test loudly.

use nearfield_testkit::repo_path;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_common::shutdown::CancellationToken;
use nearfield_emitter::EmitConfig;
use nearfield_emitter::state::StateConfig;
use nearfield_emitter::synthetic::{self, Scenario};
use nearfield_schemas::golden::reference_decode;
use nearfield_schemas::plan_book::PlanBook;
use nearfield_schemas::{Codec, PlanReason, PlanSignal};
use nearfield_testkit::{Isolation, Kafka, read_to_end};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

const PARTITIONS: i32 = 2;
const PLAN_PARTITIONS: i32 = 3;

/// What the Rust side wrote: per record, the line a client must print.
fn rust_lines(kafka: &Kafka, topic: &str) -> (Vec<Value>, Value) {
    let recs = read_to_end(kafka, topic, Isolation::ReadCommitted, Duration::from_secs(30));
    let codec = Codec::single_object();
    let mut book = PlanBook::default();
    let mut lines = Vec::new();
    for r in &recs {
        let bytes = r.value.as_deref().expect("plan records have values");
        let plan: PlanSignal = codec.decode(bytes).expect("the emitter's plan decodes");
        let outcome = book.apply(&plan);
        let json = reference_decode("PlanSignal", bytes).expect("reference decode");
        lines.push(json!({
            "partition": r.partition,
            "offset": r.offset,
            "outcome": outcome.name(),
            "plan": json,
        }));
    }
    let current: Vec<Value> = book
        .current()
        .map(|p| {
            let bytes = codec.encode(p).expect("encode");
            reference_decode("PlanSignal", &bytes).expect("reference decode")
        })
        .collect();
    (lines, Value::Array(current))
}

/// A client's output: the per-record lines in partition order, and the final book.
fn client_lines(path: &Path, who: &str) -> (Vec<Value>, Value) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{who}: no output: {e}"));
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{who}: bad line {l}: {e}")))
        .collect();
    let last = lines.pop().unwrap_or_else(|| panic!("{who}: printed nothing"));
    let book = last.get("book").cloned().unwrap_or_else(|| panic!("{who}: last line {last}"));
    (lines, book)
}

/// Records of one partition keep their order; partitions interleave freely.
fn by_partition(lines: &[Value]) -> BTreeMap<i64, Vec<Value>> {
    let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for l in lines {
        out.entry(l["partition"].as_i64().expect("partition")).or_default().push(l.clone());
    }
    out
}

/// The group's committed offsets must equal the partitions' ends (read_committed).
fn assert_committed_at_end(kafka: &Kafka, topic: &str, group: &str, ends: &BTreeMap<i32, i64>) {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PLAN_PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed");
    for p in 0..PLAN_PARTITIONS {
        let end = ends.get(&p).copied().unwrap_or(0);
        let got = committed.find_partition(topic, p).map(|e| e.offset());
        let ok = match got {
            Some(Offset::Offset(o)) => o >= end,
            _ => end == 0,
        };
        assert!(ok, "{group}: partition {p} committed {got:?}, topic ends at {end}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_and_python_clients_agree_with_what_the_emitter_wrote() {
    let java_classes = repo_path("clients/java/target/classes");
    let java_cp = repo_path("clients/java/target/classpath.txt");
    let python = repo_path(".venv/bin/python");
    assert!(
        java_classes.join("dev/nearfield/plans/FollowPlans.class").exists() && java_cp.exists(),
        "the Java client is not built: run `mvn -B package` in clients/java (make test does)"
    );
    assert!(python.exists(), "no .venv: run scripts/bootstrap.sh (make test does)");

    let kafka = Kafka::shared();
    let (id, settings) = kafka.emitter_topics("factory", PARTITIONS);
    let topics = settings.topics.clone();
    let scenario = Scenario::default();
    let records = synthetic::catalog_records(&scenario);
    let dir = tempfile::tempdir().expect("tmp");
    let catalog_file = dir.path().join("catalog.jsonl");
    let lines: Vec<String> =
        records.iter().map(|r| serde_json::to_string(r).expect("json")).collect();
    std::fs::write(&catalog_file, lines.join("\n")).expect("catalog");
    let cfg = EmitConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            group_id: format!("emit-{id}"),
            instance_id: Some("factory-it".into()),
            commit_interval_ms: 100,
            ..nearfield_eos::LoopSettings::default()
        },
        catalog_file: Some(catalog_file),
        privacy_k: 3,
        idle_advance_ms: 0,
        follow_coverage_topic: false,
        plan_partitions: PLAN_PARTITIONS,
        ..EmitConfig::default()
    };
    let state_cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
    let catalog = nearfield_emitter::catalog::Catalog::default();
    for r in &records {
        catalog.upsert(r).expect("valid record");
    }
    let windows = synthetic::stream(&scenario);
    let partition_of = |sku: &str| partition_for_key(sku.as_bytes(), PARTITIONS);
    let expected = synthetic::reference(&windows, partition_of, &state_cfg, &catalog);
    // The supplier with the most revisions: the clients must honour `supersedes`.
    let mut revisions: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &expected {
        *revisions.entry(&s.supplier_id).or_default() +=
            usize::from(s.reason == PlanReason::Revision);
    }
    let (supplier, n_rev) =
        revisions.iter().max_by_key(|(_, n)| **n).map(|(s, n)| (s.to_string(), *n)).expect("any");
    assert!(n_rev > 0, "the scenario produces revisions");
    let want = expected.iter().filter(|s| s.supplier_id == supplier).count();

    let token = CancellationToken::new();
    let running = nearfield_emitter::start(cfg, settings, token.clone()).await.expect("start");
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::single_object();
    for w in &windows {
        producer
            .send(
                FutureRecord::to(&topics.demand)
                    .key(&w.sku)
                    .partition(partition_of(&w.sku))
                    .payload(&codec.encode(w).expect("encode")),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }
    let topic = topics.plan(&supplier);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (rust, rust_book) = loop {
        let t = topic.clone();
        // A topic not created yet reads as empty.
        let (lines, book) = tokio::task::spawn_blocking(move || rust_lines(Kafka::shared(), &t))
            .await
            .expect("read");
        if lines.len() >= want {
            break (lines, book);
        }
        assert!(Instant::now() < deadline, "{topic}: fewer than {want} plans");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    token.cancel();
    running.stage.done.await.expect("join").expect("clean stop");
    assert_eq!(rust.len(), want, "the emitter wrote the reference decisions");
    let outcomes: Vec<&str> = rust.iter().filter_map(|l| l["outcome"].as_str()).collect();
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &outcomes {
        *histogram.entry(o).or_default() += 1;
    }
    eprintln!("{topic}: {} plans, outcomes {histogram:?}", rust.len());
    assert!(histogram.contains_key("REVISED"), "revisions applied: {histogram:?}");
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for l in &rust {
        let p = l["partition"].as_i64().expect("p") as i32;
        let o = l["offset"].as_i64().expect("o");
        let e = ends.entry(p).or_default();
        *e = (*e).max(o + 1);
    }

    // Both clients read the topic at once, each in its own consumer group.
    let brokers = kafka.brokers().to_string();
    let classpath = format!(
        "{}:{}",
        java_classes.display(),
        std::fs::read_to_string(&java_cp).expect("classpath").trim()
    );
    let java_out = dir.path().join("java.jsonl");
    let python_out = dir.path().join("python.jsonl");
    let java_group = format!("factory-java-{id}");
    let python_group = format!("factory-python-{id}");
    let mut java = Command::new("java")
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .args(["-cp", &classpath, "dev.nearfield.plans.FollowPlans", "--brokers", &brokers])
        .args(["--supplier", &supplier, "--topic", &topic, "--group", &java_group])
        .args(["--idle-exit-ms", "3000"])
        .arg("--out")
        .arg(&java_out)
        .env_remove("NEARFIELD_BROKERS")
        .stdin(Stdio::null())
        .spawn()
        .expect("java runs");
    let mut py = Command::new(&python)
        .args(["-m", "nearfield_plans.follow", "--brokers", &brokers, "--supplier", &supplier])
        .args(["--topic", &topic, "--group", &python_group, "--idle-exit-s", "3"])
        .arg("--out")
        .arg(&python_out)
        .current_dir(dir.path()) // the installed package, not the source tree
        .stdin(Stdio::null())
        .spawn()
        .expect("python runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let wait = |child: &mut std::process::Child, who: &str| loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{who} exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{who} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    tokio::task::block_in_place(|| {
        wait(&mut java, "java FollowPlans");
        wait(&mut py, "python nearfield_plans.follow");
    });

    // A handler that fails stops the consumer with that plan uncommitted: the group's
    // offset on its partition is exactly the failed record's (it is read again on
    // restart), and every plan handled before it is committed.
    let failing_group = format!("factory-failing-{id}");
    let script = r#"
import sys
from nearfield_plans import PlanConsumer, consumer_config
brokers, supplier, topic, group, fail_at = sys.argv[1:6]
seen = []
def handle(msg, plan, outcome):
    seen.append((msg.partition(), msg.offset()))
    if len(seen) == int(fail_at):
        print(f"FAILED {msg.partition()} {msg.offset()}", flush=True)
        raise RuntimeError("the factory's database is down")
consumer = PlanConsumer(consumer_config(brokers, group), supplier, topic=topic)
try:
    consumer.run(handle, idle_exit_s=3)
finally:
    consumer.close()
"#;
    let failed = Command::new(&python)
        .args(["-c", script, &brokers, &supplier, &topic, &failing_group, "7"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("python runs");
    assert!(!failed.status.success(), "the failing handler stops the consumer");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    let line = stdout.lines().find(|l| l.starts_with("FAILED ")).expect("the handler failed");
    let nums: Vec<i64> = line.split_whitespace().skip(1).map(|v| v.parse().expect("num")).collect();
    let (fp, fo) = (nums[0] as i32, nums[1]);
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", &failing_group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, fp);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed");
    let got = committed.find_partition(&topic, fp).map(|e| e.offset());
    // The handled record before the failed one in its partition (offsets skip the
    // transaction markers, so "just before" is the previous record, not `fo - 1`).
    let previous = rust
        .iter()
        .filter(|l| l["partition"].as_i64() == Some(i64::from(fp)))
        .filter_map(|l| l["offset"].as_i64())
        .filter(|&o| o < fo)
        .max();
    match previous {
        None => assert!(!matches!(got, Some(Offset::Offset(_))), "nothing handled: {got:?}"),
        Some(prev) => assert_eq!(
            got,
            Some(Offset::Offset(prev + 1)),
            "committed past the last handled plan ({prev}), not past the failed one ({fo})"
        ),
    }

    for (who, out, group) in
        [("java", &java_out, &java_group), ("python", &python_out, &python_group)]
    {
        let (lines, book) = client_lines(out, who);
        assert_eq!(lines.len(), rust.len(), "{who}: every plan handled once");
        let (got, want) = (by_partition(&lines), by_partition(&rust));
        for (p, want) in &want {
            let got = got.get(p).cloned().unwrap_or_default();
            assert_eq!(got.len(), want.len(), "{who}: partition {p}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g, w, "{who}: partition {p}: the client disagrees with Rust");
            }
        }
        assert_eq!(book, rust_book, "{who}: final book");
        assert_committed_at_end(kafka, &topic, group, &ends);
    }
}

//! The emitter benchmark's phases at city scale, each run as its own process so CPU time
//! and peak memory belong to one phase (`benches/emitter.sh` runs them in order):
//!
//! - `fill BROKERS PREFIX SKUS HOURS [GRIDS]`: creates the topics and writes the synthetic
//!   demand stream (`nearfield_emitter::synthetic`, hourly `DemandWindow`s as three
//!   aggregator partitions write them, late corrections and a surge included) for SKUS
//!   SKUs over GRIDS grids (default 49; 20 000 makes every SKU a popular one) and HOURS
//!   hours, keyed by SKU; writes its catalog (the suppliers of the
//!   example catalog, `deploy/examples/catalog.jsonl`) next to the results.
//! - `emit BROKERS PREFIX N`: the emitter (library, exactly-once, production defaults but
//!   for the catalog file and no coverage topic) consuming the N windows into fresh state;
//!   reports when every window is processed and the group's offsets are committed, then
//!   reads its changelog topic back: records, bytes, bytes per window, the largest record.
//! - `restore BROKERS PREFIX`: a new instance of the same group restoring that state.
//!
//! Each prints one JSON line: seconds, cpu_s, windows_per_cpu_s, peak_rss_mb and details.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its result is its output

use std::time::{Duration, Instant};

use nearfield_common::kafka::{KafkaSettings, Topics};
use nearfield_common::shutdown::CancellationToken;
use nearfield_emitter::EmitConfig;
use nearfield_emitter::internal_events::{
    FIRM_PLANS_REVISED_TOTAL, REVISION_UNITS_TOTAL, SIGNALS_TOTAL, WINDOWS_TOTAL,
};
use nearfield_emitter::synthetic::{self, Scenario};
use nearfield_eos::internal_events::{RESTORE_SECONDS, RESTORED_RECORDS_TOTAL, metric_name};
use nearfield_schemas::Codec;
use nearfield_testkit::Isolation;
use nearfield_testkit::bench::{proc_stat, rss_mb};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

/// The allocator the `nearfield` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The suppliers of the example catalog.
const SUPPLIERS: [&str; 6] =
    ["bright-dairy", "master-kong", "nongfu-spring", "wahaha", "liby", "three-squirrels"];

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1)
}

fn catalog_path(prefix: &str) -> std::path::PathBuf {
    nearfield_testkit::repo_path(&format!("target/bench/{prefix}-catalog.jsonl"))
}

fn settings(brokers: &str, prefix: &str) -> (KafkaSettings, EmitConfig) {
    let topics = Topics {
        // BENCH_DEMAND: the runs read one filled topic, each with its own group and changelog.
        demand: std::env::var("BENCH_DEMAND").unwrap_or_else(|_| format!("{prefix}-demand")),
        emitter_changelog: format!("{prefix}-emitter-changelog"),
        dlq: format!("{prefix}-dlq"),
        coverage: format!("{prefix}-coverage"),
        catalog: format!("{prefix}-catalog"),
        plan_prefix: format!("{prefix}-plan."),
        ..Topics::default()
    };
    let kafka = KafkaSettings { brokers: brokers.to_string(), topics, ..KafkaSettings::default() };
    let cfg = EmitConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().unwrap_or_else(|_| die("addr")),
            group_id: format!("{prefix}-emit"),
            instance_id: Some("bench-1".into()),
            ..nearfield_eos::LoopSettings::default()
        },
        catalog_file: Some(catalog_path(prefix)),
        follow_catalog_topic: false,
        follow_coverage_topic: false,
        ..EmitConfig::default()
    };
    (kafka, cfg)
}

fn scenario(skus: usize, hours: i64, grids: usize) -> Scenario {
    Scenario { skus, grids, hours, seed: 11, surge_hour: Some(hours - 2) }
}

async fn fill(brokers: &str, prefix: &str, skus: usize, hours: i64, grids: usize) {
    let (kafka, _) = settings(brokers, prefix);
    kafka
        .ensure_topics(&kafka.topic_specs())
        .await
        .unwrap_or_else(|e| die(&format!("topics: {e}")));
    let s = scenario(skus, hours, grids);
    let mut lines = String::new();
    for (i, mut r) in synthetic::catalog_records(&s).into_iter().enumerate() {
        r.supplier_id = SUPPLIERS[i % SUPPLIERS.len()].to_string();
        lines
            .push_str(&serde_json::to_string(&r).unwrap_or_else(|e| die(&format!("catalog: {e}"))));
        lines.push('\n');
    }
    std::fs::write(catalog_path(prefix), lines)
        .unwrap_or_else(|e| die(&format!("catalog file: {e}")));
    let producer: ThreadedProducer<_> = nearfield_testkit::bench::fill_producer(brokers)
        .create()
        .unwrap_or_else(|e| die(&format!("producer: {e}")));
    let codec = Codec::single_object();
    let windows = synthetic::stream(&s);
    let keys: std::collections::HashSet<(&str, &str)> =
        windows.iter().map(|w| (w.sku.as_str(), w.grid_id.as_str())).collect();
    let mut buf = Vec::with_capacity(256);
    for w in &windows {
        buf.clear();
        codec.encode_into(w, &mut buf).unwrap_or_else(|e| die(&format!("encode: {e}")));
        let mut rec =
            BaseRecord::to(&kafka.topics.demand).key(w.sku.as_str()).payload(buf.as_slice());
        while let Err((_, back)) = producer.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if producer.flush(Duration::from_secs(120)).is_err() || producer.in_flight_count() > 0 {
        die("fill: not every window was written");
    }
    println!(
        "{{\"phase\":\"fill\",\"windows\":{},\"keys\":{},\"skus\":{skus},\"grids\":{grids},\"hours\":{hours},\"suppliers\":{}}}",
        windows.len(),
        keys.len(),
        SUPPLIERS.len()
    );
}

fn counter(name: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum()
}

/// Signals counted by (is a revision, is FIRM): plans, revisions, FIRM plans.
fn signals_by_kind() -> (u64, u64, u64) {
    let (mut plans, mut revisions, mut firm) = (0, 0, 0);
    for f in prometheus::gather().iter().filter(|f| f.name() == SIGNALS_TOTAL) {
        for m in f.get_metric() {
            let label = |n: &str| {
                m.get_label().iter().find(|l| l.name() == n).map(|l| l.value().to_string())
            };
            let v = m.get_counter().get_value() as u64;
            if label("reason").as_deref() == Some("REVISION") {
                revisions += v;
            } else {
                plans += v;
                firm += if label("firmness").as_deref() == Some("FIRM") { v } else { 0 };
            }
        }
    }
    (plans, revisions, firm)
}

/// Whether `group` has committed offsets at the ends of `topic`.
fn committed_to_end(brokers: &str, group: &str, topic: &str) -> bool {
    let Ok(c) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else { return false };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition(topic, p.id());
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else { return false };
    committed.elements().iter().all(|e| {
        let end = c
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(5))
            .map_or(i64::MAX, |w| w.1);
        // An empty partition has nothing to commit.
        end == 0 || matches!(e.offset(), rdkafka::Offset::Offset(o) if o >= end)
    })
}

async fn emit(brokers: &str, prefix: &str, n: u64) {
    let (kafka, cfg) = settings(brokers, prefix);
    let (group, demand, changelog) = (
        cfg.exactly_once.group_id.clone(),
        kafka.topics.demand.clone(),
        kafka.topics.emitter_changelog.clone(),
    );
    let token = CancellationToken::new();
    let (cpu0, _) = proc_stat();
    let started = Instant::now();
    let running = nearfield_emitter::start(cfg, kafka, token.clone())
        .await
        .unwrap_or_else(|e| die(&format!("start: {e}")));
    let deadline = Instant::now() + Duration::from_secs(1800);
    while counter(WINDOWS_TOTAL) < n || !committed_to_end(brokers, &group, &demand) {
        if Instant::now() > deadline {
            die(&format!("emit: {} of {n} windows after 30 min", counter(WINDOWS_TOTAL)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, hwm) = proc_stat();
    let cpu = cpu1 - cpu0;
    let signals = counter(SIGNALS_TOTAL);
    let (plans, revisions, firm) = signals_by_kind();
    let churn = format!(
        "\"plans\":{plans},\"revisions\":{revisions},\"revisions_per_plan\":{:.4},\"firm_plans\":{firm},\"firm_plans_revised\":{},\"revision_units\":{}",
        revisions as f64 / plans.max(1) as f64,
        counter(FIRM_PLANS_REVISED_TOTAL),
        counter(REVISION_UNITS_TOTAL)
    );
    token.cancel();
    let _ = running.stage.done.await;
    let records = nearfield_testkit::read_topic(
        brokers,
        &changelog,
        Isolation::ReadCommitted,
        Duration::from_secs(600),
    );
    let size = |r: &nearfield_testkit::Record| {
        r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len)
    };
    let bytes: usize = records.iter().map(size).sum();
    let largest = records.iter().map(size).max().unwrap_or(0);
    println!(
        "{{\"phase\":\"emit\",\"windows\":{n},\"seconds\":{secs:.2},\"windows_per_s\":{:.0},\"cpu_s\":{cpu:.2},\"windows_per_cpu_s\":{:.0},\"peak_rss_mb\":{hwm:.1},\"signals\":{signals},\"changelog_records\":{},\"changelog_bytes\":{bytes},\"changelog_bytes_per_window\":{:.1},\"largest_changelog_record\":{largest},{churn}}}",
        n as f64 / secs,
        n as f64 / cpu.max(0.01),
        records.len(),
        bytes as f64 / n.max(1) as f64
    );
}

async fn restore(brokers: &str, prefix: &str) {
    let (kafka, cfg) = settings(brokers, prefix);
    let rss0 = rss_mb();
    let (cpu0, _) = proc_stat();
    let token = CancellationToken::new();
    let started = Instant::now();
    let running = nearfield_emitter::start(cfg, kafka, token.clone())
        .await
        .unwrap_or_else(|e| die(&format!("start: {e}")));
    loop {
        let status = running.stage.status.load();
        if status.ready() && !status.partitions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, hwm) = proc_stat();
    let gather = prometheus::gather();
    let records: u64 = gather
        .iter()
        .filter(|f| f.name() == metric_name("emitter", RESTORED_RECORDS_TOTAL))
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum();
    let restore_s = gather
        .iter()
        .filter(|f| f.name() == metric_name("emitter", RESTORE_SECONDS))
        .flat_map(|f| {
            f.get_metric().iter().map(|m| {
                let h = m.get_histogram();
                h.get_sample_sum() / h.get_sample_count().max(1) as f64
            })
        })
        .fold(0.0f64, f64::max);
    let rss = rss_mb();
    token.cancel();
    let _ = running.stage.done.await;
    println!(
        "{{\"phase\":\"restore\",\"seconds\":{restore_s:.2},\"until_ready_s\":{secs:.2},\"records\":{records},\"cpu_s\":{:.2},\"peak_rss_mb\":{hwm:.1},\"rss_growth_mb\":{:.1}}}",
        cpu1 - cpu0,
        rss - rss0
    );
}

fn main() {
    // The binary's allocator settings (nearfield_common::alloc), before anything is allocated.
    if let Err(e) = nearfield_common::alloc::settle() {
        die(&format!("allocator settings: {e}"));
    }
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().collect();
    let num = |s: &str| s.parse::<u64>().unwrap_or_else(|_| die("SKUS, HOURS and N are numbers"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "fill", b, p, skus, hours] => {
            rt.block_on(fill(b, p, num(skus) as usize, num(hours) as i64, 49));
        }
        [_, "fill", b, p, skus, hours, grids] => {
            rt.block_on(fill(b, p, num(skus) as usize, num(hours) as i64, num(grids) as usize));
        }
        [_, "emit", b, p, n] => rt.block_on(emit(b, p, num(n))),
        [_, "restore", b, p] => rt.block_on(restore(b, p)),
        _ => die(
            "usage: emitter_bench fill BROKERS PREFIX SKUS HOURS [GRIDS] | emit BROKERS PREFIX N | restore BROKERS PREFIX",
        ),
    }
}

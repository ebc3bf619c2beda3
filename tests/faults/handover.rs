//! The emitter's part of growing the partition count (docs/SCALING.md, step 5): the same
//! demand windows on a 3- and a 5-partition demand topic (what the v1 and v2 aggregators
//! write), an old deployment that planned the first day on its own, refuses a handover
//! earlier than a horizon it already planned, and then plans the horizons before `T`
//! while the new deployment plans those from `T` onto the same plan topics. The topics
//! must hold exactly what each side decides (the reference state machine on the same
//! input, partitioned alike), and a factory's plan book reading them must end on each
//! key's latest plan without meeting a `STALE` revision or a `DUPLICATE`, though both
//! sides are SIGKILLed mid-handover.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use nearfield_common::kafka::partition_for_key;
use nearfield_emitter::synthetic::{self, Scenario, T0};
use nearfield_schemas::plan_book::{PlanBook, PlanKey};
use nearfield_schemas::{DemandWindow, PlanSignal};
use nearfield_testkit::http::sample;
use nearfield_testkit::{Deployment, Kafka};

use crate::emitter::{feed, read_plans};

const DAY: i64 = 86_400_000;
/// The handover: horizons from the scenario's fourth day on are the new deployment's.
const T: i64 = T0 + 3 * DAY;
const OLD: i32 = 3;
const NEW: i32 = 5;

/// One deployment's topics and group.
struct Side {
    demand: String,
    changelog: String,
    group: String,
    partitions: i32,
}

/// What the whole test shares.
struct Setup {
    brokers: String,
    dlq: String,
    plan_prefix: String,
    catalog: String,
}

impl Side {
    fn new(kafka: &Kafka, id: &str, name: &str, partitions: i32) -> Self {
        let side = Side {
            demand: format!("demand-{name}-{id}"),
            changelog: format!("emchangelog-{name}-{id}"),
            group: format!("emit-{name}-{id}"),
            partitions,
        };
        kafka.create_topic(&side.demand, partitions, &[("cleanup.policy", "compact")]);
        kafka.create_topic(&side.changelog, partitions, &[("cleanup.policy", "compact")]);
        side
    }

    /// This side's emitters, planning horizons starting within `[from, before)`.
    fn deploy(&self, s: &Setup, from: Option<i64>, before: Option<i64>) -> Deployment {
        let bound = |name: &str, t: Option<i64>| t.map(|t| format!("{name} = {t}\n"));
        let config = format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = {}\n\
             [kafka.topics]\ndemand = \"{}\"\nemitter_changelog = \"{}\"\n\
             dlq = \"{}\"\nplan_prefix = \"{}\"\n\
             [emit]\nlisten = \"127.0.0.1:0\"\ngroup_id = \"{}\"\n\
             catalog_file = \"catalog.jsonl\"\nfollow_catalog_topic = false\n\
             follow_coverage_topic = false\nprivacy_k = 3\nidle_advance_ms = 0\n\
             commit_interval_ms = 200\ntransaction_timeout_ms = 10000\n{}{}",
            s.brokers,
            self.partitions,
            self.demand,
            self.changelog,
            s.dlq,
            s.plan_prefix,
            self.group,
            bound("horizons_from_ms", from).unwrap_or_default(),
            bound("horizons_before_ms", before).unwrap_or_default(),
        );
        let binary = env!("CARGO_BIN_EXE_nearfield").as_ref();
        Deployment::new(binary, "emit", &config, &[("catalog.jsonl", &s.catalog)])
    }

    /// What this side decides on `windows`, planning horizons within `[from, before)`.
    fn reference(
        &self,
        scenario: &Scenario,
        windows: &[DemandWindow],
        (from, before): (Option<i64>, Option<i64>),
    ) -> Vec<PlanSignal> {
        let cfg = synthetic::state_config(from, before);
        let n = self.partitions;
        let by = |sku: &str| partition_for_key(sku.as_bytes(), n);
        synthetic::reference(windows, by, &cfg, &synthetic::catalog(scenario))
    }
}

/// Waits until the plan topics hold `n` signals; returns them.
fn plans_once(kafka: &Kafka, s: &Setup, n: usize, d: &[&Deployment]) -> Vec<PlanSignal> {
    let suppliers: Vec<String> = (0..3).map(|i| format!("syn-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = read_plans(kafka, &s.plan_prefix, &suppliers);
        if got.len() >= n {
            return got;
        }
        let logs: Vec<String> = d.iter().map(|d| d.logs()).collect();
        assert!(Instant::now() < deadline, "{} of {n} signals:\n{}", got.len(), logs.join("\n"));
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub fn handover_gives_every_plan_key_one_chain(kafka: &Kafka) {
    let scenario = Scenario { skus: 12, grids: 6, hours: 120, seed: 11, surge_hour: Some(100) };
    let id = Kafka::unique_topic("handover");
    let (old, new) = (Side::new(kafka, &id, "old", OLD), Side::new(kafka, &id, "new", NEW));
    let records = synthetic::catalog_records(&scenario);
    let lines: Vec<String> =
        records.iter().map(|r| serde_json::to_string(r).expect("json")).collect();
    let s = Setup {
        brokers: kafka.brokers().to_string(),
        dlq: format!("dlq-{id}"),
        plan_prefix: format!("plan-{id}."),
        catalog: lines.join("\n"),
    };
    kafka.create_topic(&s.dlq, 1, &[]);
    let windows = synthetic::stream(&scenario);
    let first_day = windows.iter().position(|w| w.window_end > T0 + DAY).expect("a second day");
    let (day1, rest) = windows.split_at(first_day);

    // The old deployment plans the first day on its own (both aggregator fleets write it).
    feed(&s.brokers, &old.demand, day1, OLD, 5_000);
    feed(&s.brokers, &new.demand, day1, NEW, 5_000);
    let planned = old.reference(&scenario, day1, (None, None));
    let latest = planned.iter().map(|p| p.horizon_start).max().expect("day 1 planned");
    assert!(latest < T, "day 1 plans horizons up to {latest}, the handover is at {T}");
    let mut alone = old.deploy(&s, None, None);
    alone.start("old-1");
    plans_once(kafka, &s, planned.len(), &[&alone]);
    alone.stop("old-1");

    // A handover at a horizon it already planned: refused, naming the setting.
    let mut early = old.deploy(&s, None, Some(latest));
    early.start("old-1");
    let status = early.exited("old-1", Duration::from_secs(90));
    let said = early.log("old-1");
    assert!(status.is_some_and(|s| !s.success()), "ran on with {status:?}:\n{said}");
    assert!(said.contains("emit.horizons_before_ms: a plan of SKU"), "{said}");

    // The handover at T: both deployments run while both fleets write the rest.
    let mut before_t = old.deploy(&s, None, Some(T));
    let mut from_t = new.deploy(&s, Some(T), None);
    before_t.start("old-1");
    from_t.start("new-1");
    let feeders: Vec<_> = [(&old, OLD), (&new, NEW)]
        .into_iter()
        .map(|(side, n)| {
            let (brokers, topic, rest) = (s.brokers.clone(), side.demand.clone(), rest.to_vec());
            std::thread::spawn(move || feed(&brokers, &topic, &rest, n, 400))
        })
        .collect();
    // Both sides SIGKILLed mid-handover: each restores state whose plans are all on its
    // side (no conflict) and goes on exactly once.
    std::thread::sleep(Duration::from_secs(6));
    from_t.restart("new-1");
    before_t.kill("old-1");
    let old_url = before_t.start_listening("old-1");
    for f in feeders {
        f.join().expect("feeder");
    }
    let mut want = old.reference(&scenario, &windows, (None, Some(T)));
    want.extend(new.reference(&scenario, &windows, (Some(T), None)));
    let got = plans_once(kafka, &s, want.len(), &[&before_t, &from_t]);
    // What tells an SRE the old emitters may stop: past T + revision_retention_ms they
    // hold no plan any more, and they skipped the decisions past T.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = rt.block_on(nearfield_testkit::http::metrics(&old_url));
        if sample(&text, "nearfield_emitter_plans") == Some(0.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the old emitter still holds plans:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let skipped = sample(&text, "nearfield_emitter_decisions_handed_over_total");
    assert!(skipped.is_some_and(|n| n > 0.0), "no decision handed over: {skipped:?}");
    before_t.stop("old-1");
    from_t.stop("new-1");

    let mut ids = HashSet::new();
    for p in &got {
        assert!(ids.insert(p.signal_id.clone()), "signal {} sent twice", p.signal_id);
    }
    let by_id = |v: &[PlanSignal]| -> BTreeMap<String, PlanSignal> {
        v.iter().map(|p| (p.signal_id.clone(), p.clone())).collect()
    };
    assert_eq!(by_id(&got), by_id(&want), "each side's decisions, nothing else");
    let mut book = PlanBook::default();
    for p in &got {
        let outcome = book.apply(p).name();
        assert!(!["STALE", "DUPLICATE"].contains(&outcome), "{outcome}: {p:?}");
    }
    let latest: BTreeMap<PlanKey, &PlanSignal> = want.iter().map(|p| (PlanKey::of(p), p)).collect();
    let current: BTreeMap<PlanKey, &PlanSignal> =
        book.current().map(|p| (PlanKey::of(p), p)).collect();
    assert_eq!(current, latest, "the book holds each key's latest plan");
    let sides = |v: &[PlanSignal]| v.iter().filter(|p| p.horizon_start >= T).count();
    eprintln!(
        "handover at {T}: {} signals, {} of them the new deployment's, {} keys",
        got.len(),
        sides(&got),
        current.len()
    );
}

//! End to end on real Kafka, as separate `nearfield` processes: the simulator's devices →
//! ingest → aggregator → emitter → plan topics over the example city, then the same with
//! one SIGKILL of each stage mid-run (each restarted at once).
//!
//! Checks, with ground truth from the simulator's acknowledged events:
//! - in the run without kills, ingest's count of accepted events is the devices'
//!   acknowledged events plus the resends it accepted again (up to the events of
//!   attempts left unanswered);
//! - every acknowledged sale is on `sales.v1` (durable acks), and every final
//!   `DemandWindow` (latest revision) equals the recount of the distinct events there:
//!   each acked sale counted exactly once (none went to the late topic);
//! - every plan signal is consistent with the windows it names: the plan topics hold
//!   exactly the decisions the emitter's state machine makes on `demand.v1` as written
//!   (same ids, same figures), every signal's grids lie in its region, it is built from at
//!   least `k` shops, and its recommendation respects the SKU's MOQ and batch size.

mod observe;
mod pipeline;

use nearfield_testkit::repo_path;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use h3o::CellIndex;
use nearfield_common::kafka::partition_for_key;
use nearfield_emitter::EmitConfig;
use nearfield_emitter::catalog::Catalog;
use nearfield_emitter::state::StateConfig;
use nearfield_emitter::synthetic;
use nearfield_schemas::{Codec, DemandWindow, PlanSignal, SaleEvent, SaleKind};
use nearfield_testkit::http::get_blocking as http_get;
use nearfield_testkit::{Isolation, Kafka, Process, browser, read_to_end};
use pipeline::{
    K, PARTITIONS, Pipeline, SERIAL, STAGES, WINDOW, logs, setup, sigterm, spawn, wait_ready,
};

type Key = (String, String, i64);

/// Distinct sale events on `sales.v1` minus those on the late topic, recounted per
/// (grid, sku, window start): (sold, returned, preorder, events).
fn recount(kafka: &Kafka, p: &Pipeline) -> (HashSet<String>, BTreeMap<Key, [i64; 4]>) {
    let codec = Codec::single_object();
    let late: HashSet<(String, String)> =
        read_to_end(kafka, &p.late, Isolation::ReadCommitted, Duration::from_secs(60))
            .iter()
            .filter_map(|r| codec.decode::<SaleEvent>(r.value.as_deref()?).ok())
            .map(|e| (e.store_id, e.event_id))
            .collect();
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    let mut m: BTreeMap<Key, [i64; 4]> = BTreeMap::new();
    for r in read_to_end(kafka, &p.sales, Isolation::ReadCommitted, Duration::from_secs(60)) {
        let e: SaleEvent = codec.decode(r.value.as_deref().expect("value")).expect("decode");
        ids.insert(format!("{}/{}", e.store_id, e.event_id));
        if late.contains(&(e.store_id.clone(), e.event_id.clone()))
            || !seen.insert((e.store_id.clone(), e.event_id.clone()))
        {
            continue;
        }
        let start = e.occurred_at - e.occurred_at.rem_euclid(WINDOW);
        let c = m.entry((e.grid_id.clone(), e.sku.clone(), start)).or_default();
        let q = i64::from(e.quantity);
        match e.kind {
            SaleKind::Sale => c[0] += q,
            SaleKind::Return => c[1] += q,
            SaleKind::Preorder => c[2] += q,
        }
        c[3] += 1;
    }
    (ids, m)
}

/// The latest revision of every window on `demand.v1`, and the records in partition order.
fn windows(kafka: &Kafka, p: &Pipeline) -> (BTreeMap<Key, [i64; 4]>, Vec<DemandWindow>) {
    let codec = Codec::single_object();
    let mut recs = read_to_end(kafka, &p.demand, Isolation::ReadCommitted, Duration::from_secs(60));
    recs.sort_by_key(|r| (r.partition, r.offset));
    let all: Vec<DemandWindow> = recs
        .iter()
        .map(|r| codec.decode(r.value.as_deref().expect("value")).expect("decode"))
        .collect();
    let mut latest: BTreeMap<Key, (i32, [i64; 4])> = BTreeMap::new();
    for w in &all {
        let k = (w.grid_id.clone(), w.sku.clone(), w.window_start);
        let v = [w.units_sold, w.units_returned, w.preorder_units, w.event_count];
        if latest.get(&k).is_none_or(|(rev, _)| *rev < w.revision) {
            latest.insert(k, (w.revision, v));
        }
    }
    (latest.into_iter().map(|(k, (_, v))| (k, v)).collect(), all)
}

/// How the windows on `demand.v1` (`got`) differ from the recount (`want`), for a
/// failure's message: how many are missing or wrong, per input partition with their
/// window starts, and what each stage says of its partitions (`/readyz`).
fn differences(
    want: &BTreeMap<Key, [i64; 4]>,
    got: &BTreeMap<Key, [i64; 4]>,
    p: &Pipeline,
) -> String {
    let mut per: BTreeMap<(i32, &str), (usize, i64, i64)> = BTreeMap::new();
    for (k, v) in want {
        let what = match got.get(k) {
            None => "missing",
            Some(g) if g != v => "wrong",
            Some(_) => continue,
        };
        let part = partition_for_key(k.0.as_bytes(), PARTITIONS);
        let e = per.entry((part, what)).or_insert((0, i64::MAX, i64::MIN));
        *e = (e.0 + 1, e.1.min(k.2), e.2.max(k.2));
    }
    let count =
        |what: &str| per.iter().filter(|(k, _)| k.1 == what).map(|(_, v)| v.0).sum::<usize>();
    let (missing, wrong) = (count("missing"), count("wrong"));
    let newest = want.keys().map(|k| k.2).max().unwrap_or(0);
    let mut out = format!(
        "{missing} windows missing, {wrong} differ from the recount\nnewest window start {newest}\n"
    );
    for ((part, what), (n, first, last)) in per {
        out.push_str(&format!(
            "sales partition {part}: {n} {what}, starts {first}..={last} ({} to {} s before the newest)\n",
            (newest - first) / 1000,
            (newest - last) / 1000
        ));
    }
    for (i, stage) in STAGES.iter().enumerate() {
        let ready = http_get(p.ports[i], "/readyz").map(|(_, body)| body);
        out.push_str(&format!("{stage} /readyz: {}\n", ready.unwrap_or_default()));
    }
    out
}

fn plans(kafka: &Kafka, p: &Pipeline, suppliers: &[String]) -> Vec<PlanSignal> {
    let codec = Codec::single_object();
    let mut out = Vec::new();
    for s in suppliers {
        let topic = format!("{}{s}.v1", p.plan_prefix);
        for r in read_to_end(kafka, &topic, Isolation::ReadCommitted, Duration::from_secs(60)) {
            let mut sig: PlanSignal =
                codec.decode(r.value.as_deref().expect("value")).expect("decode");
            assert_eq!(&sig.supplier_id, s, "a signal on another supplier's topic");
            sig.generated_at = 0;
            out.push(sig);
        }
    }
    out.sort_by(|a, b| a.signal_id.cmp(&b.signal_id));
    out
}

fn simulate(p: &Pipeline, seconds: u32, acked: &Path) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_nearfield"))
            .args(["--config", &p.config.display().to_string(), "simulate"])
            .args(["--rate", "300", "--duration", &seconds.to_string()])
            .args(["--acked-log", &acked.display().to_string()])
            .env_remove("NEARFIELD_BROKERS")
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(p.dir.path().join("simulate.out")).expect("out"))
            .stderr(std::fs::File::create(p.dir.path().join("simulate.log")).expect("log"))
            .spawn()
            .expect("spawn simulate"),
    )
}

/// Ingest's count of accepted events against what the devices saw: every acknowledged
/// event once (as many as the acked log's lines), plus each resend of an acknowledged
/// request that ingest accepted again (ingest does not de-duplicate; the aggregator
/// does), plus at most the events of attempts whose answer was lost.
fn accepted_agrees_with_the_devices(p: &Pipeline, logged: usize) {
    let out = std::fs::read_to_string(p.dir.path().join("simulate.out")).expect("summary");
    let line = out.lines().rev().find(|l| l.starts_with('{')).expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(line).expect("summary json");
    let n = |f: &str| summary[f].as_u64().unwrap_or_else(|| panic!("{f} in {summary}"));
    let (acked, resent, unanswered) = (n("acked"), n("duplicates_sent"), n("unanswered"));
    assert_eq!(acked, logged as u64, "the summary and the acked log disagree: {summary}");
    assert!(resent > 0, "no resend to check: {summary}");
    let (_, metrics) = http_get(p.operator_port, "/metrics").expect("ingest metrics");
    let accepted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nearfield_ingest_events_accepted_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("nearfield_ingest_events_accepted_total");
    assert!(
        (acked + resent..=acked + resent + unanswered).contains(&accepted),
        "ingest accepted {accepted}; devices: {acked} acknowledged + {resent} resent \
         (+ up to {unanswered} unanswered): {summary}"
    );
    eprintln!("ingest accepted {accepted} = {acked} acknowledged + {resent} resent");
}

fn run(kill: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let kafka = Kafka::shared();
    let p = setup(kafka);
    let mut procs: Vec<Process> = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        procs.push(spawn(&p, stage, 0));
        wait_ready(&p, i);
    }
    let acked = p.dir.path().join("acked.jsonl");
    let mut sim = simulate(&p, 30, &acked);
    if kill {
        for (i, stage) in STAGES.iter().enumerate() {
            std::thread::sleep(Duration::from_secs(7));
            procs[i].0.kill().expect("SIGKILL");
            let _ = procs[i].0.wait();
            procs[i] = spawn(&p, stage, 1);
        }
    }
    let status = sim.0.wait().expect("simulator");
    assert!(status.success(), "simulator failed:\n{}", logs(&p));

    // Ground truth: the acknowledged events.
    let truth: Vec<serde_json::Value> = std::fs::read_to_string(&acked)
        .expect("acked log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(truth.len() > 3_000, "only {} events acknowledged", truth.len());
    if !kill {
        // Nothing restarted ingest, so its counter covers the whole run.
        accepted_agrees_with_the_devices(&p, truth.len());
    }

    // Windows: converge to the recount of what is on sales.v1.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (on_sales, all_windows) = loop {
        let (ids, want) = recount(kafka, &p);
        let (got, all) = windows(kafka, &p);
        if got == want {
            break (ids, all);
        }
        if Instant::now() > deadline {
            panic!("{}\n{}", differences(&want, &got, &p), logs(&p));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    for t in &truth {
        let id = format!(
            "{}/{}",
            t["store_id"].as_str().expect("store"),
            t["event_id"].as_str().expect("id")
        );
        assert!(on_sales.contains(&id), "acknowledged event {id} is not on sales.v1");
    }
    let late = read_to_end(kafka, &p.late, Isolation::ReadCommitted, Duration::from_secs(30));
    assert!(late.is_empty(), "{} acknowledged events went to the late topic", late.len());

    // Signals: exactly the emitter's decisions on demand.v1 as written.
    let catalog = Catalog::default();
    catalog.load_file(&repo_path("deploy/examples/catalog.jsonl")).expect("catalog");
    let cfg = EmitConfig {
        bucket_ms: WINDOW,
        settle_ms: 1000,
        horizon_ms: 60_000,
        schedule_ms: 20_000,
        history_buckets: 120,
        season_buckets: 12,
        privacy_k: K,
        revision_retention_ms: 3_600_000,
        idle_advance_ms: 0,
        ..EmitConfig::default()
    };
    let state_cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
    let suppliers: Vec<String> = catalog.suppliers().into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let (_, all) = windows(kafka, &p);
        let mut want = synthetic::reference(
            &all,
            |sku| partition_for_key(sku.as_bytes(), PARTITIONS),
            &state_cfg,
            &catalog,
        );
        want.sort_by(|a, b| a.signal_id.cmp(&b.signal_id));
        let got = plans(kafka, &p, &suppliers);
        if got == want {
            break got;
        }
        if Instant::now() > deadline {
            let ids =
                |v: &[PlanSignal]| v.iter().map(|s| s.signal_id.clone()).collect::<HashSet<_>>();
            let (g, w) = (ids(&got), ids(&want));
            panic!(
                "{} signals, {} expected; {} missing, {} unexpected\n{}",
                got.len(),
                want.len(),
                w.difference(&g).count(),
                g.difference(&w).count(),
                logs(&p)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(!got.is_empty(), "no signal at all");
    let skus_with_windows: HashSet<(String, String)> =
        all_windows.iter().map(|w| (w.sku.clone(), w.grid_id.clone())).collect();
    for s in &got {
        let item = catalog.get(&s.sku).expect("a catalog SKU");
        assert_eq!(s.supplier_id, item.supplier_id);
        assert!(s.recommended_units >= item.moq && s.recommended_units % item.batch_size == 0);
        assert!(s.contributing_stores >= K, "{s:?}");
        // One warehouse plan: rounded once, its units allocated over its regions, each
        // region from at least k stores and holding grids that sold the SKU.
        assert_eq!(Some(&s.region), s.warehouse_id.as_ref(), "{s:?}");
        assert!(!s.allocations.is_empty(), "{s:?}");
        let allocated: i64 = s.allocations.iter().map(|a| a.units).sum();
        assert_eq!(allocated, s.recommended_units, "{s:?}");
        // Rounded once: less than one batch over the need (or the MOQ).
        let floor = (s.need_units.ceil() as i64).max(item.moq);
        assert!(s.recommended_units - floor < item.batch_size, "{s:?}");
        for a in &s.allocations {
            assert!(a.contributing_stores >= K, "{a:?} in {s:?}");
            let region: CellIndex = a.region.parse().expect("region cell");
            let sold_there = skus_with_windows.iter().any(|(sku, g)| {
                let cell = g.parse::<CellIndex>().ok();
                *sku == s.sku && cell.and_then(|c| c.parent(region.resolution())) == Some(region)
            });
            assert!(sold_there, "no window of {} under {}", s.sku, a.region);
        }
    }
    // At most one current plan (superseded by none) per (SKU, warehouse, horizon).
    let superseded: HashSet<&String> = got.iter().filter_map(|s| s.supersedes.as_ref()).collect();
    let mut current: HashSet<(String, String, i64)> = HashSet::new();
    for s in got.iter().filter(|s| !superseded.contains(&s.signal_id)) {
        let key = (s.sku.clone(), s.region.clone(), s.horizon_start);
        assert!(current.insert(key), "two current plans for the key of {s:?}");
    }
    eprintln!(
        "e2e (kill: {kill}): {} events acknowledged, {} distinct windows, {} signals, all exact",
        truth.len(),
        all_windows.len(),
        got.len()
    );
    for proc in &mut procs {
        sigterm(proc);
    }
}

#[test]
fn simulator_to_plan_topics_exactly_once() {
    run(false);
}

#[test]
fn one_sigkill_of_each_stage_changes_nothing() {
    run(true);
}

/// `nearfield run` (every stage and the live page in one process) with simulated shops;
/// headless Chromium loads the live page and must see grid cells and plan signals drawn,
/// with no console message and no script error. The screenshot goes to
/// `target/live-page.png` (`docs/live-page.png` is one such).
#[test]
fn the_live_page_shows_the_city_in_a_browser() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let kafka = Kafka::shared();
    let p = setup(kafka);
    let mut all = spawn(&p, "run", 0);
    for i in 0..4 {
        wait_ready(&p, i);
    }
    let mut sim = simulate(&p, 40, &p.dir.path().join("acked.jsonl"));
    // Wait until the page's backend has cells and signals to show.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state: Option<serde_json::Value> = http_get(p.ports[3], "/api/state")
            .and_then(|(_, body)| serde_json::from_str(&body).ok());
        let n = |k: &str| state.as_ref().and_then(|s| s[k].as_array().map(Vec::len)).unwrap_or(0);
        if n("cells") > 0 && n("signals") > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no cells and signals to show:\n{}", logs(&p));
        std::thread::sleep(Duration::from_millis(500));
    }
    // The category filter: only that category's SKUs, and an unknown one is named.
    let (status, body) = http_get(p.ports[3], "/api/state?category=dairy").expect("dairy");
    assert!(status.contains("200"), "{status}");
    let dairy: serde_json::Value = serde_json::from_str(&body).expect("json");
    let catalog = Catalog::default();
    catalog.load_file(&repo_path("deploy/examples/catalog.jsonl")).expect("catalog");
    for t in dairy["top_skus"].as_array().expect("top") {
        let sku = t["sku"].as_str().expect("sku");
        assert_eq!(catalog.get(sku).map(|i| i.category.clone()).as_deref(), Some("dairy"), "{sku}");
    }
    let (status, body) = http_get(p.ports[3], "/api/state?category=nope").expect("nope");
    assert!(status.contains("400") && body.contains("category"), "{status} {body}");
    let url = format!("http://127.0.0.1:{}/", p.ports[3]);
    let headless = |extra: &[&str]| browser::headless(&url, 8000, extra);
    let out = headless(&["--dump-dom"]);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout);
    let console = browser::console(&out);
    assert!(console.is_empty(), "the page logged to the console: {console:#?}");
    let body = browser::body_tag(&dom);
    assert!(!body.contains("data-error"), "script error on the page: {body}");
    let attr = |name: &str| -> usize {
        body.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(attr("data-cells") > 0, "no cells drawn: {body}");
    assert!(attr("data-signals") > 0, "no signals listed: {body}");
    assert!(dom.contains("class=\"cell\""), "no hexagon in the map");
    assert!(dom.contains("class=\"signal\""), "no signal row");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let out = headless(&[&format!("--screenshot={}", shot.display())]);
    assert!(out.status.success() && shot.is_file(), "no screenshot");
    eprintln!(
        "live page: {} cells, {} signals drawn; screenshot {}",
        attr("data-cells"),
        attr("data-signals"),
        shot.display()
    );
    let _ = sim.0.kill();
    sigterm(&mut all);
}

/// `nearfield replay` backfills two hours of history (ending an hour ago) in seconds: every
/// row is acknowledged, nothing goes to the late topic (windows close by event time while
/// history streams through), and the final windows equal the recount of the file.
#[test]
fn replayed_history_is_counted_by_event_time() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let kafka = Kafka::shared();
    let p = setup(kafka);
    let mut procs = vec![spawn(&p, "ingest", 0), spawn(&p, "aggregate", 0)];
    wait_ready(&p, 0);
    wait_ready(&p, 1);
    let stores: Vec<String> = std::fs::read_to_string(repo_path("deploy/examples/stores.jsonl"))
        .expect("stores")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|s| s["active"] == true)
        .filter_map(|s| s["store_id"].as_str().map(str::to_string))
        .take(60)
        .collect();
    let now = nearfield_common::time::now_ms();
    let (from, rows) = (now - 3 * 3_600_000, 3_000i64);
    let mut csv =
        String::from("event_id,store_id,sku,kind,quantity,unit_price_minor,occurred_at\n");
    for i in 0..rows {
        let kind = if i % 17 == 0 { "RETURN" } else { "SALE" };
        let t = from + i * 2 * 3_600_000 / rows;
        csv.push_str(&format!(
            "h{i},{},SKU-{:05},{kind},{},350,{t}\n",
            stores[(i as usize * 7) % stores.len()],
            1 + i % 20,
            1 + i % 3
        ));
    }
    csv.push_str("bad,store-000001,SKU-00001,SALE,one,350,1\n");
    let file = p.dir.path().join("history.csv");
    std::fs::write(&file, csv).expect("csv");
    let acked = p.dir.path().join("replay-acked.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_nearfield"))
        .args(["--config", &p.config.display().to_string(), "replay", &file.display().to_string()])
        .args(["--speedup", "3600", "--acked-log", &acked.display().to_string()])
        .env_remove("NEARFIELD_BROKERS")
        .env("RUST_LOG", "warn")
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(stderr.contains("replay [") && stderr.contains("100.0%"), "no progress bar: {stderr}");
    assert!(stderr.contains("line 3002: quantity: must be an integer"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["acked"], rows, "{summary}");
    assert_eq!(summary["rejected"]["csv.quantity"], 1, "{summary}");

    let mut want: BTreeMap<Key, [i64; 4]> = BTreeMap::new();
    for l in std::fs::read_to_string(&acked).expect("acked").lines() {
        let t: serde_json::Value = serde_json::from_str(l).expect("json");
        let at = t["occurred_at"].as_i64().expect("t");
        let key = (
            t["grid_id"].as_str().expect("grid").to_string(),
            t["sku"].as_str().expect("sku").to_string(),
            at - at.rem_euclid(WINDOW),
        );
        let c = want.entry(key).or_default();
        let q = t["quantity"].as_i64().expect("q");
        if t["kind"] == "RETURN" {
            c[1] += q;
        } else {
            c[0] += q;
        }
        c[3] += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (got, _) = windows(kafka, &p);
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} windows of {} match the file\n{}",
            want.iter().filter(|(k, v)| got.get(*k) == Some(*v)).count(),
            want.len(),
            logs(&p)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let late = read_to_end(kafka, &p.late, Isolation::ReadCommitted, Duration::from_secs(30));
    assert!(late.is_empty(), "{} replayed events went to the late topic", late.len());
    eprintln!("replay: {rows} rows of history acknowledged and counted by event time, none late");
    for proc in &mut procs {
        sigterm(proc);
    }
}

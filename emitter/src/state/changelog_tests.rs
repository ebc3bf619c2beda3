//! The changelog's promises: records stay small however popular a SKU, the format is
//! stable (goldens), a format-1 (JSON) changelog still restores and is migrated, and a
//! restore from the log of many flushes (tombstones included, compacted or not)
//! continues exactly as the original. Also the demand clock's: a lagging aggregator
//! partition holds it back, a silent one stops doing so after `source_idle_ms`.

use super::tests::{T0, cfg, item, run, stream, strip, win};
use super::*;
use h3o::LatLng;
use nearfield_schemas::{Firmness, PlanReason};

const H: i64 = 3_600_000;

type Log = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn restore_from(log: &Log, c: Arc<StateConfig>) -> PartitionState {
    let mut b = PartitionState::new(c);
    for (k, v) in log {
        b.restore(k, v.as_deref()).unwrap_or_else(|e| panic!("restore {k:?}: {e}"));
    }
    b.restored(0);
    b
}

/// The last value per key, tombstones dropped: what a compacted topic keeps.
fn compacted(log: &Log) -> Log {
    let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for (k, v) in log {
        last.insert(k.clone(), v.clone());
    }
    last.into_iter().filter(|(_, v)| v.is_some()).collect()
}

#[test]
fn a_restore_from_many_flushes_continues_exactly() {
    let cat = Catalog::of([item(40, 12)]);
    let ws = stream();
    let expected = strip(run(&mut PartitionState::new(cfg(2)), &cat, &ws));
    for cut in [60, 170, 250] {
        let mut a = PartitionState::new(cfg(2));
        let (mut log, mut got) = (Log::new(), Vec::new());
        for (i, w) in ws[..cut].iter().enumerate() {
            a.apply(w, &cat, 0);
            if i % 7 == 0 {
                let f = a.flush(0, &cat);
                log.extend(f.changelog);
                got.extend(f.signals);
            }
        }
        let f = a.flush(0, &cat);
        log.extend(f.changelog);
        got.extend(f.signals);
        assert!(log.iter().any(|(_, v)| v.is_none()), "cut {cut}: the log deletes too");
        for (name, l) in [("raw", log.clone()), ("compacted", compacted(&log))] {
            let mut b = restore_from(&l, cfg(2));
            let mut all = got.clone();
            all.extend(run(&mut b, &cat, &ws[cut..]));
            assert_eq!(strip(all), expected, "cut {cut}, {name} log");
        }
    }
}

/// `n` res-8 grids: consecutive children of one res-3 cell near Shanghai.
fn many_grids(n: usize) -> (Vec<String>, String) {
    let base = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Three);
    let grids = base.children(Resolution::Eight).take(n).map(|c| c.to_string()).collect();
    (grids, base.to_string())
}

#[test]
fn a_popular_sku_over_20000_grids_writes_only_small_records() {
    let (grids, area) = many_grids(20_000);
    let mut it = item(20, 10);
    it.areas = vec![("wh-1".into(), vec![area.parse().expect("cell")])];
    let cat = Catalog::of([it]);
    let mut st = PartitionState::new(cfg(3));
    let (mut largest, mut records, mut signals) = (0usize, 0usize, 0usize);
    for h in 1..=4 {
        for (i, g) in grids.iter().enumerate() {
            let mut w = win(0, T0 + h * H, 1 + (i % 5) as i64, 1 + (i % 3) as i32, 0);
            w.grid_id = g.clone();
            w.watermark = T0 + h * H + 60_000;
            st.apply(&w, &cat, 0);
        }
        let f = st.flush(0, &cat);
        signals += f.signals.len();
        for s in &f.signals {
            assert!((1..=64).contains(&s.allocations.len()), "{} regions", s.allocations.len());
            let sum: i64 = s.allocations.iter().map(|a| a.units).sum();
            assert_eq!(sum, s.recommended_units);
        }
        records += f.changelog.len();
        largest = largest.max(
            f.changelog
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .max()
                .unwrap_or(0),
        );
    }
    // One warehouse plan a decision, its regions coarsened to `max_allocations`.
    assert!(signals >= 3, "{signals} signals");
    assert!(records > 80_000, "{records} records");
    // A plan names its groups, never its grids: a few kilobytes at most.
    assert!(largest < 16 * 1024, "largest record {largest} bytes");
}

#[test]
fn format_3_is_stable() {
    let cat = Catalog::of([item(20, 6)]);
    let mut st = PartitionState::new(cfg(1));
    let mut ws = vec![win(0, T0 + H, 25, 2, 0), win(2, T0 + H, 3, 1, 0)];
    ws[1].source_partition = 4;
    ws.push(win(1, T0 + 2 * H, 4, 1, 0));
    ws.push(win(2, T0 + 2 * H, 2, 1, 0));
    ws[3].source_partition = 4;
    let signals = run(&mut st, &cat, &ws);
    assert_eq!(signals.len(), 1);
    let log = {
        let mut st = PartitionState::new(cfg(1));
        for w in &ws {
            st.apply(w, &cat, 0);
        }
        st.flush(0, &cat).changelog
    };
    let text: String = log
        .iter()
        .map(|(k, v)| {
            format!("{} {}\n", hex::encode(k), v.as_ref().map_or("-".into(), hex::encode))
        })
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/changelog/format3.hex");
    if std::env::var_os("NEARFIELD_REGENERATE").is_some() {
        std::fs::write(path, &text).expect("write");
    }
    let stored =
        std::fs::read_to_string(path).expect("format3.hex (NEARFIELD_REGENERATE=1 writes it)");
    assert_eq!(
        stored, text,
        "the changelog of a fixed input changed: a new encoding needs a new format byte (and \
         format-2 records must still restore); changed decisions only: NEARFIELD_REGENERATE=1"
    );
    // And it restores to the state it was written from.
    let b = restore_from(&log, cfg(1));
    assert_eq!(b.skus, st.skus);
    assert_eq!((b.watermark, b.completed), (st.watermark, st.completed));
    assert_eq!(b.clock.counts(), (2, 0));
}

#[test]
fn a_format_2_changelog_restores_with_its_per_region_plans() {
    // `format2.hex`: the same input, written by the previous release (ded514c).
    let text = include_str!("../../testdata/changelog/format2.hex");
    let log: Log = text
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("key value");
            let v = (v != "-").then(|| hex::decode(v).expect("hex value"));
            (hex::decode(k).expect("hex key"), v)
        })
        .collect();
    let cat = Catalog::of([item(20, 6)]);
    let mut ws = vec![win(0, T0 + H, 25, 2, 0), win(2, T0 + H, 3, 1, 0)];
    ws[1].source_partition = 4;
    ws.push(win(1, T0 + 2 * H, 4, 1, 0));
    ws.push(win(2, T0 + 2 * H, 2, 1, 0));
    ws[3].source_partition = 4;
    let mut now = PartitionState::new(cfg(1));
    for w in &ws {
        now.apply(w, &cat, 0);
    }
    let mut old = restore_from(&log, cfg(1));
    assert_eq!((old.watermark, old.completed), (now.watermark, now.completed));
    let (x, y) = (&old.skus["SKU-1"], &now.skus["SKU-1"]);
    assert_eq!(x.grids, y.grids);
    for (k, c) in &x.cells {
        assert_eq!((&c.series, c.series_end), (&y.cells[k].series, y.cells[k].series_end), "{k}");
    }
    // Its plan is the previous release's per-region plan: one group, its region's.
    assert_eq!(x.plans.len(), 1);
    let p = &x.plans[0];
    assert!(!p.is_warehouse_plan());
    let groups = groups::grouping(p, &x.cells);
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].region.as_str(), &groups[0].members),
        (p.signal.region.as_str(), &p.members)
    );
    // A late window for its basis revises it by the old rules, and it is rewritten in
    // format 3 (restoring to the same plan).
    let late = win(1, T0 + H, 90, 1, 0);
    old.apply(&late, &cat, 0);
    let f = old.flush(0, &cat);
    assert!(f.changelog.iter().all(|(_, v)| v.as_ref().is_none_or(|v| v[0] == 3)));
    let mut all = log.clone();
    all.extend(f.changelog);
    let again = restore_from(&all, cfg(1));
    assert_eq!(again.skus["SKU-1"].plans, old.skus["SKU-1"].plans);
}

#[test]
fn a_format_1_changelog_restores_and_is_migrated() {
    // Written by the JSON-changelog emitter (commit 7264e7f) from `stream()[..150]`,
    // flushing every 50 windows, with `cfg(2)` and `item(40, 12)`.
    let text = include_str!("../../testdata/changelog/format1.jsonl");
    let old: Log = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let k = v["key"].as_str().expect("key").as_bytes().to_vec();
            (k, v["value"].as_str().map(|s| s.as_bytes().to_vec()))
        })
        .collect();
    let cat = Catalog::of([item(40, 12)]);
    let ws = stream();
    let mut now = PartitionState::new(cfg(2));
    run(&mut now, &cat, &ws[..150]);
    let mut b = restore_from(&old, cfg(2));
    // The demand it holds is what this release holds after the same windows (its plans
    // and accumulations were made by the previous release's rules).
    assert_eq!((b.watermark, b.completed), (now.watermark, now.completed));
    let (x, y) = (&b.skus["SKU-1"], &now.skus["SKU-1"]);
    assert_eq!(x.grids, y.grids);
    assert_eq!(x.cells.keys().collect::<Vec<_>>(), y.cells.keys().collect::<Vec<_>>());
    for (k, c) in &x.cells {
        assert_eq!((&c.series, c.series_end), (&y.cells[k].series, y.cells[k].series_end), "{k}");
    }
    assert!(!x.plans.is_empty() && x.plans.iter().all(|p| !p.root.is_empty()));
    let migration = b.flush(0, &cat);
    assert!(migration.signals.is_empty());
    for gone in [&b"s/SKU-1"[..], b"m"] {
        assert!(migration.changelog.contains(&(gone.to_vec(), None)), "{gone:?} tombstoned");
    }
    // The migrated log (format 1 deleted, format 2 written) restores as well.
    let mut log = old.clone();
    log.extend(migration.changelog);
    assert!(compacted(&log).iter().all(|(k, _)| !k.starts_with(b"s/") && k != b"m"));
    let mut c = restore_from(&log, cfg(2));
    let after_b = strip(run(&mut b, &cat, &ws[150..]));
    let after_c = strip(run(&mut c, &cat, &ws[150..]));
    assert!(after_b.len() > 10, "it goes on deciding");
    assert_eq!(after_b, after_c, "the migrated log restores to the same state");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever bytes a changelog record holds, restoring it never panics.
    #[test]
    fn corrupt_records_are_errors_not_panics(
        tag in proptest::sample::select(vec![b'M', b'C', b'B', b'G', b'P', b's', b'm', b'x']),
        key in proptest::collection::vec(proptest::num::u8::ANY, 0..24),
        value in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..64)),
    ) {
        let mut k = vec![tag];
        k.extend(key);
        let mut st = PartitionState::new(cfg(1));
        let _ = st.restore(&k, value.as_deref());
        st.restored(0);
    }
}

/// Grids 0 and 1 share a region; grid 0's windows come from aggregator partition 0,
/// grid 1's from partition 1, which runs `lag` hours behind; in arrival order.
fn lagging(hours: i64, lag: i64, sources: [i32; 2]) -> Vec<DemandWindow> {
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for h in 1..=hours {
        let end = T0 + h * H;
        let mut a = win(0, end, 6 + h % 4, 3, 0);
        a.watermark = end + 60_000;
        a.source_partition = sources[0];
        fast.push(a);
        let mut b = win(1, end, 4 + h % 3, 2, 0);
        b.watermark = end + 60_000;
        b.source_partition = sources[1];
        slow.push(b);
    }
    // Partition 1 is known from the start (a source holds the clock from its first
    // record on); it falls behind after that.
    let mut hello = win(1, T0, 0, 0, 0);
    (hello.window_start, hello.watermark, hello.source_partition) = (T0 - 300_000, T0, sources[1]);
    let mut out = vec![hello];
    for h in 0..hours as usize + lag as usize {
        out.extend(fast.get(h).cloned());
        if h >= lag as usize {
            out.extend(slow.get(h - lag as usize).cloned());
        }
    }
    out
}

#[test]
fn a_lagging_aggregator_partition_holds_firm_plans_back_and_nothing_is_revised() {
    let cat = Catalog::of([item(30, 6)]);
    let mut st = PartitionState::new(cfg(1));
    let (mut firm, mut plans) = (0, 0);
    let mut slow_clock = i64::MIN;
    for w in lagging(60, 3, [0, 1]) {
        if w.source_partition == 1 {
            slow_clock = slow_clock.max(w.window_end);
        }
        st.apply(&w, &cat, 0);
        for s in st.flush(0, &cat).signals {
            assert_ne!(s.reason, PlanReason::Revision, "{s:?}");
            // Nothing is planned on a bucket partition 1 has not closed.
            assert!(s.based_on_watermark <= slow_clock, "{s:?} before partition 1 closed it");
            plans += 1;
            firm += usize::from(s.firmness == Firmness::Firm);
        }
    }
    assert!(plans > 10 && firm > 5, "{plans} plans, {firm} FIRM");
    assert_eq!((st.tally.firm_plans_revised, st.tally.revision_units), (0, 0));
    assert!(st.tally.superseded > 0, "newer decisions for a horizon supersede the current plan");

    // The same arrivals taken as one source (the largest watermark, as the first emitter
    // did) plan before the laggard's windows are in, and revise FIRM plans after.
    let mut st = PartitionState::new(cfg(1));
    let out = run(&mut st, &cat, &lagging(60, 3, [-1, -1]));
    assert!(out.iter().any(|s| s.reason == PlanReason::Revision), "{out:#?}");
    assert!(st.tally.firm_plans_revised > 0);
}

#[test]
fn a_silent_aggregator_partition_stops_holding_the_clock_after_source_idle_ms() {
    let cat = Catalog::of([item(30, 6)]);
    let c = |idle: i64| {
        let e = EmitConfig {
            settle_ms: H / 2,
            privacy_k: 1,
            idle_advance_ms: 0,
            source_idle_ms: idle,
            ..EmitConfig::default()
        };
        Arc::new(StateConfig::from_config(&e).expect("valid"))
    };
    // Partition 1 sends hours 1..=3, then nothing: partition 0 goes on to hour 10.
    let ws: Vec<DemandWindow> = lagging(10, 0, [0, 1])
        .into_iter()
        .filter(|w| w.source_partition == 0 || w.window_end <= T0 + 3 * H)
        .collect();
    // Records come hourly: 90 minutes without one is silence.
    for (idle, completed) in [(0, T0 + 2 * H), (90 * 60_000, T0 + 9 * H)] {
        let mut st = PartitionState::new(c(idle));
        // Wall clock = event time: the record of hour h arrives a minute after its end.
        for w in &ws {
            st.apply(w, &cat, w.window_end + 60_000);
            st.flush(w.window_end + 60_000, &cat);
        }
        assert_eq!(st.completed(), completed, "source_idle_ms {idle}");
        assert_eq!(st.size().idle_sources, usize::from(idle > 0));
        assert_eq!(st.tally.sources_idled, u64::from(idle > 0));
    }
}

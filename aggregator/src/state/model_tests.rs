//! Property tests over generated histories of sales, flushes and crashes: the state
//! against a reference model (counts, revisions, distinct stores, restores at random
//! points), and `apply_sales` against `apply_sale` one event at a time.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use nearfield_schemas::{SaleEvent, SaleKind};

use proptest::prelude::*;

use super::tests::{MIN, NONE, cfg, ev};
use super::*;
use crate::changelog::StoresRef;

/// One step of a generated history.
#[derive(Debug, Clone)]
enum Step {
    Sale {
        id: u8,
        store: u8,
        grid: u8,
        sku: u8,
        kind: u8,
        q: i32,
        dt: Millis,
    },
    Flush {
        advance: Millis,
    },
    /// Crash after the last flush: restore from the changelog.
    Restore,
}

/// The event of a generated `Step::Sale` at time `t`.
fn sale_of(id: u8, store: u8, grid: u8, sku: u8, kind: u8, q: i32, t: Millis) -> SaleEvent {
    let kind = [SaleKind::Sale, SaleKind::Return, SaleKind::Preorder][kind as usize];
    ev(&id.to_string(), &format!("s{store}"), &format!("g{grid}"), &format!("k{sku}"), kind, q, t)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..40, 0u8..4, 0u8..2, 0u8..3, 0u8..3, 1i32..5, -50 * MIN..5 * MIN)
            .prop_map(|(id, store, grid, sku, kind, q, dt)| Step::Sale { id, store, grid, sku, kind, q, dt }),
        2 => (0..3 * MIN).prop_map(|advance| Step::Flush { advance }),
        1 => Just(Step::Restore),
    ]
}

type WinKey = (String, String, Millis, Millis);

/// Whether every store of each window's exact store set is in its grid's window while the
/// window accepts events: what `apply_identified` relies on to report to the grid only a
/// store new to the window. (A bucket held past its expiry accepts nothing.)
fn grids_hold_their_windows_stores(st: &PartitionState) -> Result<(), String> {
    let w = &st.cfg.windowing;
    for b in st.buckets.values() {
        let end = b.start + w.sizes[b.size_idx];
        if end <= st.expired_through[b.size_idx]
            || w.is_expired(b.size_idx, end, st.watermark(), st.wall_floor)
        {
            continue;
        }
        for p in 0..b.wins.len() as u32 {
            let w = &b.wins[p as usize];
            // A sketch is not an exact set: its stores were all reported.
            let StoresRef::List(ids) = flush::stores_of(b, p) else { continue };
            let gid = st.keys.grids.hash(st.keys.grid_id(w.key()));
            let reported: Vec<u32> = st
                .grids
                .get(&gid)
                .and_then(|g| {
                    g.windows.iter().find(|g| (g.size_idx, g.start) == (b.size_idx, b.start))
                })
                .map_or_else(Vec::new, |g| g.stores.iter().map(|&s| store32(s)).collect());
            if let Some(x) = ids.iter().find(|x| !reported.contains(x)) {
                return Err(format!(
                    "store {x} of a window ({}, {}) not in its grid's",
                    b.size_idx, b.start
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Against a reference model: every counted event is in the final value of each of
    /// its windows (units, events and distinct stores), closes emit `close_chunk` windows
    /// per flush, revisions run 0, 1, 2… without repeats, and crashes (restore from the
    /// changelog at a flush, read compacted or as written) change nothing.
    #[test]
    fn matches_the_reference_model(
        steps in proptest::collection::vec(step(), 1..120),
        close_chunk in prop_oneof![Just(1usize), Just(3), Just(50_000)],
        compacted in any::<bool>(),
    ) {
        let cfg = Arc::new(StateConfig { close_chunk, ..(*cfg()).clone() });
        let w = cfg.windowing.clone();
        let base = 2_000 * 60 * MIN;
        let mut st = PartitionState::new(Arc::clone(&cfg));
        // The changelog as compaction leaves it (latest value per key), and as written.
        let mut log: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut written: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut outputs: Vec<DemandWindow> = Vec::new();
        // The model.
        let mut now = base;
        let mut max_t: Option<Millis> = None;
        // When the model's watermark last advanced (wall clock): the wall-clock rules
        // apply only after max_close_delay without an advance.
        let mut advanced: Option<Millis> = None;
        let mut floor = Millis::MIN;
        let tick = |advanced: Option<Millis>, floor: &mut Millis, now: Millis| {
            if advanced.is_some_and(|a| now - a >= w.max_close_delay) {
                *floor = (*floor).max(now);
            }
            *floor
        };
        // (store, event id) → the horizon it was first counted under; forgotten when the
        // state forgets it (at a flush once that horizon has passed).
        let mut counted: BTreeMap<(u8, u8), Millis> = BTreeMap::new();
        let mut model: BTreeMap<WinKey, (i64, i64, i64, i64)> = BTreeMap::new();
        let mut stores: BTreeMap<WinKey, std::collections::BTreeSet<u8>> = BTreeMap::new();
        // What the state held at the last flush, to replay after a "crash".
        let mut since_flush: Vec<SaleEvent> = Vec::new();
        for s in steps {
            match s {
                Step::Sale { id, store, grid, sku, kind, q, dt } => {
                    let t = now + dt;
                    let e = sale_of(id, store, grid, sku, kind, q, t);
                    let wm = w.watermark(max_t);
                    let clock = tick(advanced, &mut floor, now);
                    let expect = if let Some(late) = w.late(t, wm, clock) {
                        Outcome::Late(late)
                    } else if let Entry::Occupied(_) = counted.entry((store, id)) {
                        // A retry, whatever time it carries.
                        Outcome::Duplicate
                    } else {
                        counted.insert((store, id), w.horizon(t));
                        let mut windows = 0;
                        for (_, start, end) in w.accepting(t, wm, clock) {
                            windows += 1;
                            stores.entry((e.grid_id.clone(), e.sku.clone(), start, end)).or_default().insert(store);
                            let c = model.entry((e.grid_id.clone(), e.sku.clone(), start, end)).or_default();
                            match e.kind {
                                SaleKind::Sale => c.0 += i64::from(q),
                                SaleKind::Return => c.1 += i64::from(q),
                                SaleKind::Preorder => c.2 += i64::from(q),
                            }
                            c.3 += 1;
                        }
                        let clamped = t.min(e.received_at);
                        if max_t.is_none_or(|m| clamped > m) {
                            max_t = Some(clamped);
                            advanced = Some(now);
                        }
                        Outcome::Counted { windows }
                    };
                    prop_assert_eq!(st.apply_sale(&e, now), expect, "event {:?}", e);
                    since_flush.push(e);
                }
                Step::Flush { advance } => {
                    now += advance;
                    let clock = tick(advanced, &mut floor, now);
                    let wm = w.watermark(max_t);
                    counted.retain(|_, h| !w.horizon_passed(*h, wm, clock));
                    let f = st.flush(now, &NONE);
                    for (k, v) in f.changelog {
                        written.push((k.clone(), v.clone()));
                        match v { Some(v) => { log.insert(k, v); } None => { log.remove(&k); } }
                    }
                    outputs.extend(f.outputs);
                    since_flush.clear();
                }
                Step::Restore => {
                    // Uncommitted work is lost with the process; Kafka redelivers it.
                    let mut fresh = PartitionState::new(Arc::clone(&cfg));
                    if compacted {
                        for (k, v) in &log {
                            fresh.restore(k, Some(v)).expect("restores");
                        }
                    } else {
                        for (k, v) in &written {
                            fresh.restore(k, v.as_deref()).expect("restores");
                        }
                    }
                    fresh.restored();
                    st = fresh;
                    for e in std::mem::take(&mut since_flush) {
                        st.apply_sale(&e, now);
                        since_flush.push(e);
                    }
                }
            }
            if let Err(e) = grids_hold_their_windows_stores(&st) {
                prop_assert!(false, "{}", e);
            }
        }
        // Let everything close and expire (a close emits close_chunk windows per flush).
        for _ in 0..1_000 {
            let f = st.flush(Millis::MAX / 4, &NONE);
            outputs.extend(f.outputs);
            if st.size().windows == 0 {
                break;
            }
        }
        prop_assert_eq!(st.size().windows, 0);
        prop_assert_eq!(st.size().dedupe_ids, 0);
        let mut last: BTreeMap<WinKey, DemandWindow> = BTreeMap::new();
        for o in outputs {
            let k = (o.grid_id.clone(), o.sku.clone(), o.window_start, o.window_end);
            let expected_rev = last.get(&k).map_or(0, |p| p.revision + 1);
            prop_assert_eq!(o.revision, expected_rev, "revisions are consecutive for {:?}", k);
            last.insert(k, o);
        }
        let got_stores: BTreeMap<WinKey, usize> =
            last.iter().map(|(k, o)| (k.clone(), o.distinct_stores as usize)).collect();
        let want_stores: BTreeMap<WinKey, usize> =
            stores.into_iter().map(|(k, s)| (k, s.len())).collect();
        prop_assert_eq!(got_stores, want_stores, "distinct stores (exact below 1 024)");
        let got: BTreeMap<WinKey, (i64, i64, i64, i64)> = last
            .into_iter()
            .map(|(k, o)| (k, (o.units_sold, o.units_returned, o.preorder_units, o.event_count)))
            .collect();
        prop_assert_eq!(got, model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `apply_sales` over runs of any length (it identifies events ahead of applying
    /// them) gives each event the outcome `apply_sale` gives it one by one, and the two
    /// states flush the same changelog, outputs and coverage.
    #[test]
    fn a_run_equals_its_events_one_by_one(
        steps in proptest::collection::vec(step(), 1..120),
        runs in proptest::collection::vec(1usize..20, 1..8),
    ) {
        let base = 2_000 * 60 * MIN;
        let mut one = PartitionState::new(cfg());
        let mut run = PartitionState::new(cfg());
        run.dedupe_seed = one.dedupe_seed;
        let mut now = base;
        let mut pending: Vec<SaleEvent> = Vec::new();
        let mut expected: Vec<Outcome> = Vec::new();
        let mut r = 0;
        for s in steps.into_iter().chain([Step::Flush { advance: 0 }]) {
            match s {
                Step::Sale { id, store, grid, sku, kind, q, dt } => {
                    let e = sale_of(id, store, grid, sku, kind, q, now + dt);
                    expected.push(one.apply_sale(&e, now));
                    pending.push(e);
                }
                // Restoring is the other test's; here it is a step without effect.
                Step::Restore => {}
                Step::Flush { advance } => {
                    let refs: Vec<SaleEventRef<'_>> = pending.iter().map(SaleEventRef::from).collect();
                    let mut got = Vec::new();
                    for chunk in refs.chunks(runs[r % runs.len()]) {
                        run.apply_sales(chunk, now, &mut got);
                        r += 1;
                    }
                    prop_assert_eq!(&got, &expected);
                    pending.clear();
                    expected.clear();
                    now += advance;
                    let (a, b) = (one.flush(now, &NONE), run.flush(now, &NONE));
                    prop_assert_eq!(a.changelog, b.changelog);
                    prop_assert_eq!(a.outputs, b.outputs);
                    prop_assert_eq!(a.coverage, b.coverage);
                }
            }
        }
    }
}

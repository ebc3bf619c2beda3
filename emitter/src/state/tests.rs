//! Unit tests of the planning state and the restore-equivalence property test.

use super::*;
use crate::catalog::Item;
use h3o::LatLng;
use nearfield_schemas::{Firmness, PlanReason};

pub(super) const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;
/// A Monday, 00:00 UTC.
pub(super) const T0: i64 = 1_764_547_200_000;

/// The tests' settings: hourly buckets settled after half an hour, floor `k`, no wall
/// clock; the production defaults otherwise.
pub(super) fn emit_config(k: i32) -> EmitConfig {
    EmitConfig { settle_ms: H / 2, privacy_k: k, idle_advance_ms: 0, ..EmitConfig::default() }
}

/// `emit_config` without the dominance rule and the revision tolerance (they have tests
/// of their own).
pub(super) fn cfg(k: i32) -> Arc<StateConfig> {
    let c = EmitConfig { dominance_share: 1.0, revision_tolerance: 0.0, ..emit_config(k) };
    Arc::new(StateConfig::from_config(&c).expect("valid"))
}

pub(super) fn item(moq: i64, batch: i64) -> Item {
    let area = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Four);
    Item {
        sku: "SKU-1".into(),
        category: "dairy".into(),
        supplier_id: "acme".into(),
        factory_id: "f1".into(),
        moq,
        batch_size: batch,
        lead_time_ms: 0,
        areas: vec![("wh-1".into(), vec![area])],
    }
}

/// Grid `i`: res-8 cells; 0 and 1 share a res-7 region, 2 is in another res-7 region.
pub(super) fn grid(i: usize) -> String {
    let base = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Seven);
    let children: Vec<CellIndex> = base.children(Resolution::Eight).collect();
    match i {
        0 | 1 => children[i].to_string(),
        _ => {
            let other = base
                .grid_disk::<Vec<_>>(1)
                .into_iter()
                .find(|c| *c != base && c.parent(Resolution::Six) == base.parent(Resolution::Six))
                .expect("a sibling region");
            other.center_child(Resolution::Eight).expect("child").to_string()
        }
    }
}

pub(super) fn win(g: usize, end: i64, net: i64, stores: i32, revision: i32) -> DemandWindow {
    DemandWindow {
        grid_id: grid(g),
        sku: "SKU-1".into(),
        window_start: end - H,
        window_end: end,
        units_sold: net,
        units_returned: 0,
        preorder_units: 0,
        net_units: net,
        revenue_minor: net * 100,
        currency: "CNY".into(),
        event_count: net,
        distinct_stores: stores,
        stores_reporting: stores,
        stores_expected: stores,
        stores_pending: 0,
        revision,
        is_final: true,
        watermark: end,
        source_partition: -1,
        last_event_at: end - 1,
        emitted_at: end,
    }
}

/// A five-minute window: it only moves the clock to `t`.
pub(super) fn tick(t: i64) -> DemandWindow {
    let mut w = win(0, t - t % 300_000, 1, 1, 0);
    w.window_start = w.window_end - 300_000;
    w.watermark = t;
    w
}

pub(super) fn run(st: &mut PartitionState, cat: &Catalog, ws: &[DemandWindow]) -> Vec<PlanSignal> {
    for w in ws {
        st.apply(w, cat, 0);
    }
    st.flush(0, cat).signals
}

#[test]
fn recommendation_is_a_batch_multiple_of_at_least_the_moq() {
    assert_eq!(recommend(0.0, 100, 24), 120);
    assert_eq!(recommend(100.0, 100, 25), 100);
    assert_eq!(recommend(101.2, 100, 25), 125);
    assert_eq!(recommend(-5.0, 1, 1), 1);
    assert_eq!(recommend(f64::NAN, 10, 4), 12);
    assert_eq!(recommend(7.0, 1, 5), 10);
}

#[test]
fn threshold_fires_when_accumulated_demand_reaches_the_moq() {
    let cat = Catalog::of([item(50, 24)]);
    let mut st = PartitionState::new(cfg(1));
    let start = T0 + 2 * H;
    let ws: Vec<_> = (1..=6).map(|i| win(0, start + i * H, 10, 2, 0)).collect();
    let out = run(&mut st, &cat, &ws);
    assert_eq!(out.len(), 1, "{out:#?}");
    let s = &out[0];
    assert_eq!(s.reason, PlanReason::Threshold);
    assert_eq!(s.observed_units, 50);
    // Bucket 5 completes when bucket 6's window moves the clock past it + settle; the
    // plan's basis is the completed buckets 1..=5 (bucket 6 waits for the next plan).
    assert_eq!(s.based_on_watermark, start + 5 * H);
    assert!(s.recommended_units >= 50 && s.recommended_units % 24 == 0, "{s:?}");
    // 10 units an hour for the next day: 240 expected, with the wide spread of five hours
    // of history (the median of a skewed count distribution sits below its mean).
    assert!(s.forecast_low < 240.0 && 240.0 < s.forecast_high, "{s:?}");
    assert!((150.0..240.0).contains(&s.forecast_units), "{s:?}");
    // What to make covers the day at the 0.9 service level: above the median.
    assert_eq!(s.service_level, 0.9);
    assert!(s.recommended_units as f64 > s.forecast_units, "{s:?}");
    assert_eq!(s.supplier_id, "acme");
    // One warehouse plan, its one region allocated everything.
    assert_eq!((s.region.as_str(), s.warehouse_id.as_deref()), ("wh-1", Some("wh-1")));
    let region = grid(0).parse::<CellIndex>().expect("cell").parent(Resolution::Seven);
    assert_eq!(s.contributing_grids, vec![region.expect("parent").to_string()]);
    assert_eq!(s.allocations.len(), 1);
    assert_eq!(s.allocations[0].units, s.recommended_units);
    assert_eq!(s.allocations[0].observed_units, 50);
    assert_eq!(s.firmness, Firmness::Planning, "less than a season of history");
    assert_eq!(s.horizon_start, T0 + DAY, "next aligned day");
    // The accumulation starts again after the plan.
    let more: Vec<_> = (7..=9).map(|i| win(0, start + i * H, 10, 2, 0)).collect();
    assert!(run(&mut st, &cat, &more).is_empty());
}

#[test]
fn scheduled_plans_come_at_the_schedule_boundary() {
    let cat = Catalog::of([item(1000, 10)]);
    let mut st = PartitionState::new(cfg(1));
    let mut ws: Vec<_> = (1..=24).map(|i| win(0, T0 + i * H, 3, 1, 0)).collect();
    ws.push(tick(T0 + DAY + H / 2));
    let out = run(&mut st, &cat, &ws);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].reason, PlanReason::Scheduled);
    assert_eq!(out[0].based_on_watermark, T0 + DAY);
    assert_eq!(out[0].observed_units, 72);
    assert_eq!(out[0].recommended_units, 1000, "below the MOQ: the MOQ");
}

#[test]
fn a_surge_well_above_the_forecast_is_signalled() {
    let cat = Catalog::of([item(100_000, 10)]);
    let mut st = PartitionState::new(cfg(1));
    let mut ws: Vec<_> = (1..=72).map(|i| win(0, T0 + i * H + 5 * H, 10, 3, 0)).collect();
    ws.push(win(0, T0 + 78 * H, 90, 3, 0));
    ws.push(tick(T0 + 78 * H + H / 2));
    let out = run(&mut st, &cat, &ws);
    let surges: Vec<_> = out.iter().filter(|s| s.reason == PlanReason::Surge).collect();
    assert_eq!(surges.len(), 1, "{out:#?}");
    assert_eq!(surges[0].based_on_watermark, T0 + 78 * H);
    assert_eq!(surges[0].firmness, Firmness::Firm, "3 days of history, full coverage");
    assert!(st.tally.forecast_abs_errors.len() > 40);
}

#[test]
fn thin_regions_merge_into_their_parent_or_are_suppressed() {
    let cat = Catalog::of([item(10, 1)]);
    let it = item(10, 1);
    for g in 0..3 {
        let cell: CellIndex = grid(g).parse().expect("cell");
        assert_eq!(it.warehouse_of(cell), Some("wh-1"), "grid {g}");
    }
    // Grids 0 and 2 are in different res-7 regions under one res-6 parent, one store
    // each: with k = 2 they are planned together at resolution 6.
    let mut st = PartitionState::new(cfg(2));
    let out = run(
        &mut st,
        &cat,
        &[win(0, T0 + H, 6, 1, 0), win(2, T0 + H, 6, 1, 0), tick(T0 + H + H / 2)],
    );
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].allocations.len(), 1, "{out:#?}");
    let region: CellIndex = out[0].allocations[0].region.parse().expect("cell");
    assert_eq!(region.resolution(), Resolution::Six);
    assert_eq!(out[0].contributing_stores, 2);
    assert_eq!(out[0].allocations[0].contributing_stores, 2);
    assert_eq!(out[0].observed_units, 12);
    assert_eq!(out[0].contributing_grids, vec![region.to_string()]);
    // With k = 3 nothing reaches the floor, even at resolution 5: suppressed.
    let mut st = PartitionState::new(cfg(3));
    let out = run(
        &mut st,
        &cat,
        &[win(0, T0 + H, 6, 1, 0), win(2, T0 + H, 6, 1, 0), tick(T0 + H + H / 2)],
    );
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(st.tally.suppressed, 1);
    // A region that reaches k alone is planned at resolution 7.
    let mut st = PartitionState::new(cfg(2));
    let out = run(&mut st, &cat, &[win(0, T0 + H, 12, 2, 0), tick(T0 + H + H / 2)]);
    assert_eq!(out.len(), 1);
    let region: CellIndex = out[0].allocations[0].region.parse().expect("cell");
    assert_eq!(region.resolution(), Resolution::Seven);
}

#[test]
fn a_burst_of_late_windows_is_one_re_decision_when_the_clock_moves() {
    let cat = Catalog::of([item(20, 1)]);
    let mut st = PartitionState::new(cfg(1));
    run(&mut st, &cat, &[win(0, T0 + H, 25, 2, 0), tick(T0 + H + H / 2)]);
    // Three late windows for the plan's bucket: nothing yet (the clock has not moved)...
    let late = [win(0, T0 + H, 40, 2, 1), win(1, T0 + H, 30, 1, 0), win(0, T0 + H, 45, 2, 2)];
    assert!(run(&mut st, &cat, &late).is_empty());
    assert!(st.skus["SKU-1"].plans[0].revise_pending);
    // ...then one revision with all of them, as the clock moves.
    let out = run(&mut st, &cat, &[tick(T0 + H + H / 2 + 60_000)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].observed_units, 45 + 30);
    assert!(!st.skus["SKU-1"].plans[0].revise_pending);
}

#[test]
fn late_data_that_changes_a_plan_revises_it() {
    let cat = Catalog::of([item(20, 1000)]);
    let mut st = PartitionState::new(cfg(1));
    let out = run(&mut st, &cat, &[win(0, T0 + H, 25, 2, 0), tick(T0 + H + H / 2)]);
    assert_eq!(out.len(), 1);
    let first = out[0].clone();
    // 25 an hour for a day: 600 expected; its 0.9 quantile, rounded up to the batch.
    assert_eq!(first.recommended_units % 1000, 0, "{first:?}");
    // A late correction of the same bucket that keeps the recommendation: absorbed.
    // (Late windows are re-decided when the demand clock next moves: the ticks.)
    let out = run(&mut st, &cat, &[win(0, T0 + H, 27, 2, 1), tick(T0 + H + H / 2 + 60_000)]);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(st.tally.revisions_absorbed, 1);
    // A late window from another grid of the same region that changes it: REVISION.
    let out = run(&mut st, &cat, &[win(1, T0 + H, 60, 1, 0), tick(T0 + H + H / 2 + 120_000)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    let rev = &out[0];
    assert_eq!(rev.reason, PlanReason::Revision);
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.supersedes.as_deref(), Some(first.signal_id.as_str()));
    assert_eq!(rev.observed_units, 87);
    assert_eq!(rev.allocations[0].observed_units, 87);
    assert!(rev.recommended_units > first.recommended_units, "87 an hour; {rev:?}");
    assert_eq!(rev.allocations[0].units, rev.recommended_units);
    assert_ne!(rev.signal_id, first.signal_id);
    // Churn: what the revision moved; a FIRM first plan counts as a FIRM plan revised.
    let moved = rev.recommended_units - first.recommended_units;
    assert_eq!(st.tally.revision_units, moved as u64);
    let firm = u64::from(first.firmness == Firmness::Firm);
    assert_eq!(st.tally.firm_plans_revised, firm);
}

#[test]
fn unknown_skus_other_sizes_and_far_grids_are_reported_not_applied() {
    let cat = Catalog::of([item(20, 10)]);
    let mut st = PartitionState::new(cfg(1));
    let mut w = win(0, T0 + H, 5, 1, 0);
    w.sku = "SKU-X".into();
    assert_eq!(st.apply(&w, &cat, 0), Outcome::UnknownSku);
    let mut w = win(0, T0 + H, 5, 1, 0);
    w.window_start = T0 + H - 300_000;
    assert_eq!(st.apply(&w, &cat, 0), Outcome::OtherSize);
    let mut w = win(0, T0 + H, 5, 1, 0);
    w.grid_id = "8828308281fffff".into();
    assert_eq!(st.apply(&w, &cat, 0), Outcome::OutsideAreas);
    w.grid_id = "not-a-cell".into();
    assert_eq!(st.apply(&w, &cat, 0), Outcome::InvalidGrid);
    assert_eq!(st.apply(&win(0, T0 + H, 5, 1, 0), &cat, 0), Outcome::Applied);
    assert_eq!(st.apply(&win(0, T0 - DAY, 5, 1, 0), &cat, 0), Outcome::TooOld);
}

pub(super) fn strip(mut v: Vec<PlanSignal>) -> Vec<PlanSignal> {
    for s in &mut v {
        s.generated_at = 0;
    }
    v
}

/// A deterministic stream: three grids, four days, random-ish demand and late
/// corrections.
pub(super) fn stream() -> Vec<DemandWindow> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for h in 1..=96 {
        let end = T0 + h * H;
        for g in 0..3 {
            let net = (next() % 12) as i64 + if h == 80 { 60 } else { 0 };
            out.push(win(g, end, net, 1 + (next() % 3) as i32, 0));
            if next() % 7 == 0 && h > 2 {
                out.push(win(g, end - H, net + 5, 2, 1));
            }
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever arrives — any times, sizes, counts, revisions, grids — nothing panics,
    /// every signal respects MOQ, batch and the floor, and a restore from the changelog
    /// continues exactly as the original.
    #[test]
    fn arbitrary_windows_never_break_the_rules(
        ws in proptest::collection::vec(
            (0usize..4, -3i64..200, -200i64..400, 0i32..6, 0i32..3, 0u8..8),
            1..120,
        ),
        cut in 0usize..120,
    ) {
        let cat = Catalog::of([item(30, 7)]);
        let make = |(g, h, net, stores, rev, odd): (usize, i64, i64, i32, i32, u8)| {
            let mut w = win(g.min(2), T0 + h * H, net, stores, rev);
            match odd {
                0 => w.window_end = i64::MAX,
                1 => w.watermark = i64::MIN,
                2 => { w.window_start = w.window_end - 300_000; }
                3 => w.grid_id = "nope".into(),
                4 => w.is_final = false,
                _ => {}
            }
            w
        };
        let ws: Vec<DemandWindow> = ws.into_iter().map(make).collect();
        let mut whole = PartitionState::new(cfg(2));
        let all = strip(run(&mut whole, &cat, &ws));
        for s in &all {
            proptest::prop_assert!(s.recommended_units >= 30 && s.recommended_units % 7 == 0);
            proptest::prop_assert!(s.contributing_stores >= 2);
            // Rounded once per warehouse and horizon: less than one batch over the need
            // (or the MOQ), and the regions' allocations add up to it.
            let floor = (s.need_units.ceil() as i64).max(30);
            proptest::prop_assert!(s.recommended_units - floor < 7, "{:?}", s);
            let allocated: i64 = s.allocations.iter().map(|a| a.units).sum();
            proptest::prop_assert_eq!(allocated, s.recommended_units);
            proptest::prop_assert!(s.allocations.iter().all(|a| a.contributing_stores >= 2));
        }
        let cut = cut.min(ws.len());
        let mut a = PartitionState::new(cfg(2));
        for w in &ws[..cut] {
            a.apply(w, &cat, 0);
        }
        let f = a.flush(0, &cat);
        let mut got = f.signals;
        let mut b = PartitionState::new(cfg(2));
        for (k, v) in &f.changelog {
            b.restore(k, v.as_deref()).expect("restore");
        }
        b.restored(0);
        got.extend(run(&mut b, &cat, &ws[cut..]));
        proptest::prop_assert_eq!(strip(got), all);
    }
}

#[test]
fn restoring_from_the_changelog_at_any_point_makes_the_same_decisions() {
    let cat = Catalog::of([item(40, 12)]);
    let ws = stream();
    let mut whole = PartitionState::new(cfg(2));
    let expected = strip(run(&mut whole, &cat, &ws));
    assert!(expected.len() > 20, "{}", expected.len());
    for reason in [PlanReason::Threshold, PlanReason::Scheduled, PlanReason::Revision] {
        assert!(expected.iter().any(|s| s.reason == reason), "no {reason:?}");
    }
    let ids: BTreeSet<_> = expected.iter().map(|s| s.signal_id.clone()).collect();
    assert_eq!(ids.len(), expected.len(), "signal ids are unique");
    for cut in [1, 37, 150, 290, ws.len() - 1] {
        let mut a = PartitionState::new(cfg(2));
        let mut log: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut got = Vec::new();
        for w in &ws[..cut] {
            a.apply(w, &cat, 0);
        }
        let f = a.flush(0, &cat);
        got.extend(f.signals);
        log.extend(f.changelog);
        let mut b = PartitionState::new(cfg(2));
        for (k, v) in &log {
            b.restore(k, v.as_deref()).expect("restore");
        }
        b.restored(0);
        got.extend(run(&mut b, &cat, &ws[cut..]));
        assert_eq!(strip(got), expected, "cut at {cut}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Whatever the lead time and schedule: every horizon is a whole calendar horizon
    /// starting at or after the decision plus the lead time (in whole buckets), and at any
    /// moment a (supplier, SKU, warehouse, region, horizon) has at most one current plan —
    /// each signal for a key that has one supersedes exactly it.
    #[test]
    fn one_current_plan_per_key_and_horizon(
        lead_minutes in 0i64..(72 * 60),
        schedule_hours in 1i64..48,
        moq in 5i64..80,
        seed in 0u64..1000,
    ) {
        let c = EmitConfig {
            dominance_share: 1.0,
            schedule_ms: schedule_hours * H,
            ..emit_config(1)
        };
        let cfg = Arc::new(StateConfig::from_config(&c).expect("valid"));
        let mut it = item(moq, 6);
        it.lead_time_ms = lead_minutes * 60_000;
        let cat = Catalog::of([it.clone()]);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut ws = Vec::new();
        for h in 1..=60 {
            for g in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ws.push(win(g, T0 + h * H, (x % 15) as i64, 1 + (x % 3) as i32, 0));
                if x % 5 == 0 && h > 1 {
                    ws.push(win(g, T0 + (h - 1) * H, (x % 20) as i64, 2, 1));
                }
            }
        }
        let out = run(&mut PartitionState::new(cfg), &cat, &ws);
        proptest::prop_assert!(!out.is_empty());
        let lead = it.lead_time_ms.div_euclid(H) * H + if it.lead_time_ms % H == 0 { 0 } else { H };
        let mut current: BTreeMap<(String, String, i64), String> = BTreeMap::new();
        for s in &out {
            proptest::prop_assert_eq!(s.horizon_start % DAY, 0, "calendar days: {:?}", s);
            proptest::prop_assert_eq!(s.horizon_end - s.horizon_start, DAY);
            proptest::prop_assert!(s.horizon_start >= s.based_on_watermark + lead, "{:?}", s);
            proptest::prop_assert!(s.horizon_start < s.based_on_watermark + lead + DAY, "{:?}", s);
            let key = (s.warehouse_id.clone().unwrap_or_default(), s.region.clone(), s.horizon_start);
            let before = current.insert(key, s.signal_id.clone());
            proptest::prop_assert_eq!(before, s.supersedes.clone(), "{:?}", s);
        }
    }
}

#[test]
fn a_revision_never_publishes_the_delta_of_fewer_than_k_stores() {
    let cat = Catalog::of([item(20, 10)]);
    let mut st = PartitionState::new(cfg(3));
    // A plan from grids 0 and 1 of one region: 2 + 1 stores, k = 3.
    let first = run(
        &mut st,
        &cat,
        &[win(0, T0 + H, 25, 2, 0), win(1, T0 + H, 10, 1, 0), tick(T0 + H + H / 2)],
    );
    assert_eq!(first.len(), 1, "{first:#?}");
    // One shop's late sales (grid 1's window corrected, still its one store): enough to
    // change the recommendation, but publishing it would expose that shop: held.
    let t = |i: i64| tick(T0 + H + H / 2 + i * 60_000);
    assert!(run(&mut st, &cat, &[win(1, T0 + H, 60, 1, 1), t(1)]).is_empty());
    assert_eq!(st.tally.revisions_held, 1);
    // A second store's (grid 0: 2 → 3 stores): two stores behind the change, still held.
    assert!(run(&mut st, &cat, &[win(0, T0 + H, 40, 3, 1), t(2)]).is_empty());
    assert_eq!(st.tally.revisions_held, 2);
    // A third store's: the revision goes out, its delta from three stores' changes.
    let out = run(&mut st, &cat, &[win(1, T0 + H, 70, 2, 2), t(3)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    let rev = &out[0];
    assert_eq!(rev.reason, PlanReason::Revision);
    assert_eq!(rev.supersedes.as_deref(), Some(first[0].signal_id.as_str()));
    assert_eq!(rev.observed_units, 110, "every held change is in it");
    assert!(rev.recommended_units > first[0].recommended_units);
}

#[test]
fn firm_only_inside_the_suppliers_frozen_time_fence() {
    // The surge stream (3 days of history, full coverage: FIRM by data) with a lead time
    // of two days: the horizon ends beyond the default 2-day fence.
    let mut ws: Vec<_> = (1..=72).map(|i| win(0, T0 + i * H + 5 * H, 10, 3, 0)).collect();
    ws.push(win(0, T0 + 78 * H, 90, 3, 0));
    ws.push(tick(T0 + 78 * H + H / 2));
    let mut it = item(100_000, 10);
    it.lead_time_ms = 2 * DAY;
    let cat = Catalog::of([it]);
    let fenced = |supplier_frozen_ms: BTreeMap<String, i64>| {
        let c = EmitConfig { dominance_share: 1.0, supplier_frozen_ms, ..emit_config(1) };
        let cfg = Arc::new(StateConfig::from_config(&c).expect("valid"));
        let out = run(&mut PartitionState::new(cfg), &cat, &ws);
        let surge = out.iter().find(|s| s.reason == PlanReason::Surge).cloned();
        surge.expect("a surge")
    };
    let beyond = fenced(BTreeMap::new());
    assert!(beyond.horizon_end - beyond.based_on_watermark > 2 * DAY, "{beyond:?}");
    assert_eq!(beyond.firmness, Firmness::Planning, "outside the fence");
    // The supplier's own, wider fence makes the same plan FIRM.
    let wide = fenced(BTreeMap::from([("acme".to_string(), 4 * DAY)]));
    assert_eq!(wide.firmness, Firmness::Firm, "inside acme's 4-day fence");
}

#[test]
fn no_store_dominates_a_published_figure() {
    let cat = Catalog::of([item(10, 1)]);
    let c = emit_config(2);
    let ruled = Arc::new(StateConfig::from_config(&c).expect("valid"));
    assert_eq!(ruled.dominance, 0.5, "the default share");
    // Grids 0 and 2 (two res-7 regions under one res-6 parent), 20 units from 3 stores
    // each: one store may hold up to 18 of a grid's 20, too much of either region alone;
    // of both (40), at most 18: published together at resolution 6.
    let mut st = PartitionState::new(Arc::clone(&ruled));
    let ws = [win(0, T0 + H, 20, 3, 0), win(2, T0 + H, 20, 3, 0), tick(T0 + H + H / 2)];
    let out = run(&mut st, &cat, &ws);
    assert_eq!(out.len(), 1, "{out:#?}");
    let regions: Vec<CellIndex> =
        out[0].allocations.iter().map(|a| a.region.parse().expect("cell")).collect();
    assert_eq!(regions.iter().map(|r| r.resolution()).collect::<Vec<_>>(), [Resolution::Six]);
    // Without the rule, each region is published alone.
    let mut st = PartitionState::new(cfg(2));
    let out = run(&mut st, &cat, &ws);
    assert_eq!(out[0].allocations.len(), 2, "{out:#?}");
    // One store that may hold 99 of 105 units: suppressed even at the coarsest region.
    let mut st = PartitionState::new(Arc::clone(&ruled));
    let ws = [win(0, T0 + H, 100, 2, 0), win(2, T0 + H, 5, 3, 0), tick(T0 + H + H / 2)];
    assert!(run(&mut st, &cat, &ws).is_empty());
    assert_eq!(st.tally.suppressed, 1);
}

#[test]
fn a_groups_change_from_fewer_than_k_stores_waits_for_more() {
    // k = 3: the first plan for tomorrow groups grids 0 and 1 (one region, 2 + 1 stores).
    let cat = Catalog::of([item(10, 1)]);
    let mut st = PartitionState::new(cfg(3));
    let first = run(
        &mut st,
        &cat,
        &[win(0, T0 + H, 20, 2, 0), win(1, T0 + H, 10, 1, 0), tick(T0 + H + H / 2)],
    );
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0].observed_units, 30);
    // The next hour only grid 1's one store sells, enough for the MOQ: publishing the
    // group's new figure would publish that store's sales alone; it stays accumulated.
    let out = run(&mut st, &cat, &[win(1, T0 + 2 * H, 15, 1, 0), tick(T0 + 2 * H + H / 2)]);
    assert!(out.is_empty(), "{out:#?}");
    // Another hour with grid 0's two stores: three stores behind the change, published
    // with what waited, superseding the first plan of the horizon.
    let out = run(&mut st, &cat, &[win(0, T0 + 3 * H, 12, 2, 0), tick(T0 + 3 * H + H / 2)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].supersedes.as_deref(), Some(first[0].signal_id.as_str()));
    assert_eq!(out[0].observed_units, 30 + 15 + 12);
    assert_eq!(out[0].allocations.len(), 1);
    assert_eq!(out[0].allocations[0].region, first[0].allocations[0].region, "fixed grouping");
}

#[test]
fn a_young_sku_borrows_its_categorys_shape() {
    // SKU-2 (same category) sold for 8 days, only 8:00–20:00; SKU-1 starts today.
    let mut old = item(1_000_000, 1);
    old.sku = "SKU-2".into();
    let cat = Catalog::of([item(1_000_000, 1), old]);
    let mut ws = Vec::new();
    for h in 1..=8 * 24 {
        let hour = (h - 1) % 24;
        if (8..20).contains(&hour) {
            let mut w = win(0, T0 + h * H, 30, 3, 0);
            w.sku = "SKU-2".into();
            ws.push(w);
        }
    }
    for h in 8 * 24 + 1..=8 * 24 + 12 {
        ws.push(win(2, T0 + h * H, 4, 2, 0));
    }
    ws.push(tick(T0 + 9 * DAY + H / 2));
    let mut st = PartitionState::new(cfg(1));
    run(&mut st, &cat, &ws);
    let young = &st.skus["SKU-1"];
    let plan = young.plans.last().expect("a plan for the young SKU");
    let prior = plan.prior.as_ref().expect("a prior");
    let (profile, _) = prior.parts();
    // The peer's day (the fit keeps a floor at night): night hours a fraction of the day's.
    let night = profile[..6].iter().sum::<f64>() / 6.0;
    let day = profile[10..18].iter().sum::<f64>() / 8.0;
    assert!(night < 0.25 * day, "night {night} day {day}: {profile:?}");
    let own = decide::sku_prior(young, plan.signal.based_on_watermark, &st.cfg, None);
    assert_ne!(own.as_ref(), Some(prior), "its own twelve hours would give another shape");
}

#[test]
fn late_data_revises_only_a_move_beyond_the_tolerance() {
    let cat = Catalog::of([item(20, 1)]);
    let c = EmitConfig { dominance_share: 1.0, ..emit_config(1) };
    let tolerant = Arc::new(StateConfig::from_config(&c).expect("valid"));
    assert_eq!(tolerant.revision_tolerance, 0.05, "the default");
    let ws = [win(0, T0 + H, 100, 2, 0), tick(T0 + H + H / 2)];
    let late = [win(0, T0 + H, 102, 2, 1), tick(T0 + H + H / 2 + 60_000)];
    // Without a tolerance two more units revise the plan; with 5 % they are absorbed.
    let mut st = PartitionState::new(cfg(1));
    let first = run(&mut st, &cat, &ws);
    assert_eq!(run(&mut st, &cat, &late).len(), 1, "revised at tolerance 0");
    let mut st = PartitionState::new(tolerant);
    assert_eq!(run(&mut st, &cat, &ws), first);
    assert!(run(&mut st, &cat, &late).is_empty());
    assert_eq!(st.tally.revisions_absorbed, 1);
    // A move well beyond 5 % is a revision.
    let out = run(&mut st, &cat, &[win(1, T0 + H, 60, 2, 0), tick(T0 + H + H / 2 + 120_000)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(out[0].recommended_units as f64 > 1.05 * first[0].recommended_units as f64);
}

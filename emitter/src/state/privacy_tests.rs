//! The differencing attack, as a property test: a supplier that subtracts any two figures
//! it received (two versions of one region's allocation) must never get a number built
//! from fewer than `k` shops.
//!
//! Which shops a published change is built from is measured, not assumed: the same world
//! is replayed once per shop with that shop selling one unit more in every hour it sold;
//! a shop is behind a change when the change differs in its world. Shops sell at random,
//! one shop sits alone in its grid, and some sales are uploaded hours late (revisions).

use std::collections::BTreeMap;
use std::sync::Arc;

use h3o::{CellIndex, LatLng, Resolution};
use nearfield_schemas::{DemandWindow, PlanSignal};

use super::tests::{H, T0, emit_config, item, win};
use super::{PartitionState, StateConfig};
use crate::catalog::Catalog;
use crate::config::EmitConfig;

/// The grids of the world and the stores in each: shop 0 alone in its grid.
fn world_grids() -> Vec<(String, Vec<usize>)> {
    let base = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Seven);
    let parent = base.parent(Resolution::Six).expect("parent");
    let regions: Vec<CellIndex> = parent.children(Resolution::Seven).take(3).collect();
    let child =
        |r: CellIndex, i: usize| r.children(Resolution::Eight).nth(i).expect("child").to_string();
    vec![
        (child(regions[0], 0), vec![0]),
        (child(regions[0], 1), vec![1, 2]),
        (child(regions[1], 0), vec![3, 4, 5]),
        (child(regions[2], 0), vec![6]),
        (child(regions[2], 1), vec![7, 8]),
    ]
}

const STORES: usize = 9;
const HOURS: i64 = 60;

/// Per (store, hour): units sold and how many hours late they were uploaded.
type Sales = BTreeMap<(usize, i64), (i64, i64)>;

/// A published figure: (horizon start, region, decision's bucket end, revision).
type Figure = (i64, String, i64, i32);

fn window(grid: &str, end: i64, net: i64, stores: i32, revision: i32, now: i64) -> DemandWindow {
    let mut w = win(0, end, net, stores, revision);
    w.grid_id = grid.into();
    (w.watermark, w.emitted_at) = (now, now);
    w
}

/// The windows the aggregator would write: per grid and hour, what was uploaded by then
/// (a revision when a late upload changes an hour already written).
fn windows(sales: &Sales) -> Vec<DemandWindow> {
    let grids = world_grids();
    let mut out = Vec::new();
    let mut written: BTreeMap<(usize, i64), (i64, i32)> = BTreeMap::new();
    for now_h in 1..=HOURS + 3 {
        let now = T0 + now_h * H;
        for (gi, (grid, stores)) in grids.iter().enumerate() {
            for h in (now_h - 3).max(1)..=now_h.min(HOURS) {
                let (mut net, mut n) = (0, 0);
                for s in stores {
                    if let Some((units, late)) = sales.get(&(*s, h))
                        && h + late <= now_h
                    {
                        net += units;
                        n += 1;
                    }
                }
                let before = written.get(&(gi, h)).copied();
                if n == 0 || before == Some((net, n)) {
                    continue;
                }
                let revision = i32::from(before.is_some());
                written.insert((gi, h), (net, n));
                out.push(window(grid, T0 + h * H, net, n, revision, now));
            }
        }
    }
    out
}

/// Each published allocation figure, by (horizon, region, decision, revision), in order,
/// and the change it published: its units minus the previous figure of that region.
fn changes(signals: &[PlanSignal]) -> BTreeMap<Figure, i64> {
    let mut last: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for s in signals {
        for a in &s.allocations {
            let before = last.insert((s.horizon_start, a.region.clone()), a.observed_units);
            let key = (s.horizon_start, a.region.clone(), s.based_on_watermark, s.revision);
            out.insert(key, a.observed_units - before.unwrap_or(0));
        }
    }
    out
}

fn config(k: i32) -> Arc<StateConfig> {
    let c = EmitConfig {
        schedule_ms: 3 * H,
        surge_factor: 1e9,
        // One more unit can tip a bound over the share and change a grouping, and the
        // worlds would no longer line up; the rule has tests of its own.
        dominance_share: 1.0,
        ..emit_config(k)
    };
    Arc::new(StateConfig::from_config(&c).expect("valid"))
}

fn run(sales: &Sales, cfg: &Arc<StateConfig>) -> Vec<PlanSignal> {
    // Scheduled plans only, always at the MOQ: the decisions' times and shapes do not
    // depend on the units, so the worlds line up figure by figure.
    let cat = Catalog::of([item(1_000_000, 1)]);
    let mut st = PartitionState::new(Arc::clone(cfg));
    for w in windows(sales) {
        st.apply(&w, &cat, 0);
    }
    st.flush(0, &cat).signals
}

/// Per published change (non-zero), the shops it is built from.
fn shops_behind_changes(
    sales: &Sales,
    cfg: &Arc<StateConfig>,
) -> (Vec<PlanSignal>, Vec<(Figure, Vec<usize>)>) {
    let base = run(sales, cfg);
    let worlds: Vec<BTreeMap<_, i64>> = (0..STORES)
        .map(|s| {
            let mut more = sales.clone();
            for ((store, _), (units, _)) in more.iter_mut() {
                if *store == s {
                    *units += 1;
                }
            }
            changes(&run(&more, cfg))
        })
        .collect();
    let behind = changes(&base)
        .into_iter()
        .filter(|(_, delta)| *delta != 0)
        .filter(|(key, _)| worlds.iter().all(|w| w.contains_key(key)))
        .map(|(key, delta)| {
            let shops = (0..STORES).filter(|s| worlds[*s][&key] != delta).collect();
            (key, shops)
        })
        .collect();
    (base, behind)
}

fn sales_of(seed: u64) -> Sales {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sales = Sales::new();
    for h in 1..=HOURS {
        for s in 0..STORES {
            if next() % 10 < 6 {
                let late = if next() % 6 == 0 { 1 + (next() % 2) as i64 } else { 0 };
                sales.insert((s, h), (1 + (next() % 6) as i64, late));
            }
        }
    }
    sales
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    #[test]
    fn differencing_two_figures_never_isolates_fewer_than_k_shops(seed in 0u64..1_000_000) {
        let cfg = config(3);
        let (signals, behind) = shops_behind_changes(&sales_of(seed), &cfg);
        proptest::prop_assert!(behind.len() > 10, "{} published changes", behind.len());
        for (key, shops) in &behind {
            proptest::prop_assert!(shops.len() >= 3, "the change {key:?} is built from {shops:?}");
        }
        // Groupings are fixed per horizon: a later signal keeps the earlier ones' regions,
        // in order (new regions only added after them).
        let mut seen: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for s in &signals {
            let regions: Vec<String> = s.allocations.iter().map(|a| a.region.clone()).collect();
            if let Some(before) = seen.get(&s.horizon_start) {
                proptest::prop_assert!(regions.starts_with(before), "{before:?} then {regions:?}");
            }
            seen.insert(s.horizon_start, regions);
        }
    }
}

#[test]
fn the_attribution_finds_a_change_of_fewer_shops_when_the_floor_is_lower() {
    // With k = 2 the emitter may publish two shops' change: the same measurement finds it,
    // so the property above can fail.
    let found = (0..8).any(|seed| {
        let (_, behind) = shops_behind_changes(&sales_of(seed), &config(2));
        behind.iter().any(|(_, shops)| shops.len() == 2)
    });
    assert!(found, "no change of exactly two shops under k = 2");
}

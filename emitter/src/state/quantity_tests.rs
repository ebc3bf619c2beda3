//! What the plans add up to against what was sold: rounding once per SKU × warehouse ×
//! horizon versus the per-region rounding it replaced, on realistic shop demand
//! (`crate::realistic`: intermittent counts, daily and weekly cycles, promotions, new
//! SKUs, offline hours).

use std::collections::BTreeMap;
use std::sync::Arc;

use h3o::{CellIndex, LatLng, Resolution};

use super::tests::{H, T0, emit_config, item, win};
use super::{PartitionState, StateConfig, recommend};
use crate::catalog::Catalog;
use crate::config::EmitConfig;

const DAY: i64 = 24 * H;
const DAYS: usize = 28;
const REGIONS: usize = 24;
/// Horizons judged: after two weeks of history.
const JUDGED: std::ops::Range<usize> = 14..DAYS;

/// (Σ recommended of the current plans, Σ per-region rounding of the same forecasts, Σ
/// sold, Σ of what the plans needed before rounding: max(⌈need⌉, MOQ)) over the judged
/// days, for an item with `moq` and `batch`.
fn plans_against_sales(moq: i64, batch: i64) -> (i64, i64, f64, i64) {
    let c = EmitConfig { dominance_share: 1.0, ..emit_config(1) };
    let cfg = Arc::new(StateConfig::from_config(&c).expect("valid"));
    let cat = Catalog::of([item(moq, batch)]);
    // One grid in each of REGIONS res-7 regions of the warehouse's res-4 area.
    let area = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Four);
    let grids: Vec<String> = area
        .children(Resolution::Seven)
        .take(REGIONS)
        .filter_map(|r: CellIndex| r.center_child(Resolution::Eight))
        .map(|g| g.to_string())
        .collect();
    let series = crate::realistic::generate(REGIONS, DAYS, 2026);
    assert_eq!(crate::realistic::START_MS, T0, "the generator starts on the tests' Monday");
    let mut st = PartitionState::new(cfg);
    let mut signals = Vec::new();
    for h in 0..DAYS * 24 {
        let end = T0 + (h as i64 + 1) * H;
        for (g, s) in grids.iter().zip(&series) {
            let units = s.units[h].round() as i64;
            if units > 0 {
                let mut w = win(0, end, units, 1, 0);
                w.grid_id = g.clone();
                st.apply(&w, &cat, 0);
            }
        }
        signals.extend(st.flush(0, &cat).signals);
    }
    // The current plan of each horizon: the last signal for it.
    let mut current = BTreeMap::new();
    for s in signals {
        current.insert(s.horizon_start, s);
    }
    let (mut once, mut per_region, mut sold, mut floor) = (0, 0, 0.0, 0);
    for day in JUDGED {
        let start = T0 + day as i64 * DAY;
        let plan = current.get(&start).expect("a plan for every day");
        assert!((1..=REGIONS).contains(&plan.allocations.len()), "one allocation per region");
        once += plan.recommended_units;
        floor += (plan.need_units.ceil() as i64).max(moq);
        per_region +=
            plan.allocations.iter().map(|a| recommend(a.forecast_units, moq, batch)).sum::<i64>();
        sold += series
            .iter()
            .map(|s| s.units[day * 24..(day + 1) * 24].iter().sum::<f64>())
            .sum::<f64>();
    }
    (once, per_region, sold, floor)
}

#[test]
fn rounding_once_per_warehouse_stays_near_what_sold() {
    let days = JUDGED.len() as i64;
    for (moq, batch) in [(60, 12), (480, 48)] {
        let (once, per_region, sold, floor) = plans_against_sales(moq, batch);
        let (r_once, r_region) = (once as f64 / sold, per_region as f64 / sold);
        eprintln!(
            "MOQ {moq}, batch {batch}: plans {once} ({r_once:.2}× sold; {floor} before \
             rounding), per-region rounding {per_region} ({r_region:.2}×), sold {sold:.0} \
             over {days} days"
        );
        // Rounded once per warehouse and horizon: less than a batch a day over the need
        // (or the MOQ), never a batch per region.
        assert!(once - floor < days * batch, "{once} vs {floor}");
        assert!(r_region > 3.0 * r_once, "per-region rounding {r_region:.2}× vs {r_once:.2}×");
        if moq == 60 {
            // The MOQ does not bind: the 0.9 service level over a day's demand.
            assert!((0.9..1.5).contains(&r_once), "plans {r_once:.2}× what sold");
        }
    }
}

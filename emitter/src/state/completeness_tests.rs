//! The forecast is completeness-aware: shops offline (or holding unsent sales) when a
//! bucket closed do not pull the plan down, and their late uploads are not counted twice.

use std::sync::Arc;

use nearfield_schemas::{GridCoverage, PlanReason};

use super::tests::{H, T0, emit_config, grid, item, tick, win};
use super::{PartitionState, Side, StateConfig, decide};
use crate::catalog::Catalog;
use crate::config::EmitConfig;
use crate::coverage::Coverage;

const DAY: i64 = 24 * H;
/// The last day's evening hours when 4 of the grid's 10 shops were offline.
const OFFLINE: std::ops::RangeInclusive<i64> = (3 * 24 + 15)..=(3 * 24 + 22);

fn coverage(book: &Coverage, hour: i64, reporting: i32) {
    let end = T0 + hour * H;
    let rec = GridCoverage {
        grid_id: grid(0),
        window_start: end - H,
        window_end: end,
        stores_expected: 10,
        stores_reporting: reporting,
        stores_pending: 0,
        pending_events: 0,
        watermark: end,
        emitted_at: end,
    };
    book.apply(&rec).expect("a valid record");
}

#[test]
fn offline_shops_do_not_pull_the_forecast_down_nor_count_twice() {
    let c = EmitConfig { dominance_share: 1.0, ..emit_config(1) };
    let cfg = Arc::new(StateConfig::from_config(&c).expect("valid"));
    let cat = Catalog::of([item(1_000_000, 1)]);
    // Ten shops selling one unit an hour each, four days; on the last evening four are
    // offline for eight hours and their sales come too late for the hourly windows.
    let book = Coverage::new(cfg.region_res, cfg.bucket, 48);
    let mut ws = Vec::new();
    for h in 1..=4 * 24 {
        let offline = OFFLINE.contains(&h);
        ws.push(win(0, T0 + h * H, if offline { 6 } else { 10 }, if offline { 6 } else { 10 }, 0));
        coverage(&book, h, if offline { 6 } else { 10 });
    }
    ws.push(tick(T0 + 4 * DAY + H / 2));
    let plan = |side: Side<'_>| {
        let mut st = PartitionState::new(Arc::clone(&cfg));
        for w in &ws {
            st.apply(w, side, 0);
        }
        let out = st.flush(0, side).signals;
        let s = out.into_iter().rev().find(|s| s.reason == PlanReason::Scheduled);
        (st, s.expect("the midnight plan"))
    };
    let (_, blind) = plan(Side::from(&cat));
    let (st, aware) = plan(Side { catalog: &cat, coverage: Some(&book) });
    assert_eq!(aware.horizon_start, T0 + 4 * DAY);
    // The next day's demand is 240: the blind forecast is pulled down by the evening.
    eprintln!(
        "next-day median, truth 240: blind {:.1}, completeness-aware {:.1}; recommended {} vs {}",
        blind.forecast_units,
        aware.forecast_units,
        blind.recommended_units,
        aware.recommended_units
    );
    let (b, a) = ((blind.forecast_units - 240.0).abs(), (aware.forecast_units - 240.0).abs());
    assert!(blind.forecast_units < aware.forecast_units, "{blind:?}\n{aware:?}");
    assert!(a < b, "aware {} vs blind {}", aware.forecast_units, blind.forecast_units);
    // The scaled buckets read as complete: 6 reported of 10 → 10.
    let sku = &st.skus["SKU-1"];
    let members: Vec<String> = sku.cells.keys().cloned().collect();
    let end = T0 + 4 * DAY;
    let series = decide::unit_series(sku, &members, end, &cfg, Some(&book));
    let last: Vec<f64> = series[series.len() - 24..].to_vec();
    assert!(last.iter().all(|v| (v - 10.0).abs() < 1e-9), "{last:?}");

    // Uploads within the windows' lateness do reach the hourly series (revisions): the
    // buckets they correct are no longer scaled, so nothing is counted twice.
    let mut st = PartitionState::new(Arc::clone(&cfg));
    let side = Side { catalog: &cat, coverage: Some(&book) };
    for w in &ws {
        st.apply(w, side, 0);
    }
    let late_hour = *OFFLINE.end();
    st.apply(&win(0, T0 + late_hour * H, 10, 10, 1), side, 0);
    let sku = &st.skus["SKU-1"];
    let cell = sku.cells.values().next().expect("a cell");
    assert!(cell.late.contains(&(T0 + late_hour * H)));
    let series = decide::unit_series(sku, &members, end, &cfg, Some(&book));
    let at = series.len() - 1 - (4 * 24 - late_hour) as usize;
    assert!((series[at] - 10.0).abs() < 1e-9, "late bucket {} (not 16.7)", series[at]);
    assert!((series[at - 1] - 10.0).abs() < 1e-9, "a scaled bucket {}", series[at - 1]);
}

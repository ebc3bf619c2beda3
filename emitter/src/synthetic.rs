//! Synthetic demand for tests and benchmarks: a deterministic stream of hourly
//! `DemandWindow`s as the aggregator would write them (with late corrections and a surge),
//! the catalog that goes with it, and the reference decisions a single in-memory state
//! machine makes on it. A run on Kafka — with crashes, restarts and rebalances — must
//! produce exactly the reference decisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use h3o::{CellIndex, LatLng, Resolution};
use nearfield_schemas::{CatalogRecord, DemandWindow, GridCoverage, PlanSignal, ServiceArea};

use crate::catalog::Catalog;
use crate::state::{PartitionState, Side, StateConfig};

/// 2025-12-01 00:00 UTC, a Monday.
pub const T0: i64 = 1_764_547_200_000;
const HOUR: i64 = 3_600_000;

/// The shape of a synthetic stream.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub skus: usize,
    /// Grids per SKU's region set (res-8 cells in a few res-7 regions).
    pub grids: usize,
    pub hours: i64,
    pub seed: u64,
    /// Hour with a demand spike ×8 (SURGE), if any.
    pub surge_hour: Option<i64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario { skus: 6, grids: 6, hours: 60, seed: 7, surge_hour: Some(52) }
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The SKU names of a scenario.
pub fn sku(i: usize) -> String {
    format!("SYN-{i:04}")
}

/// Most grids [`grids`] lays out around one res-7 region (7 regions × 7 children).
const NEAR: usize = 49;

/// `n` res-8 grids around Shanghai: up to 49 in neighbouring res-7 regions; more (a
/// popular SKU) as consecutive children of the res-3 cell there (7 per res-7 region).
pub fn grids(n: usize) -> Vec<String> {
    if n > NEAR {
        return LatLng::new(31.23, 121.47)
            .map(|ll| ll.to_cell(Resolution::Three))
            .map(|c| c.children(Resolution::Eight).take(n).map(|g| g.to_string()).collect())
            .unwrap_or_default();
    }
    let centre = LatLng::new(31.23, 121.47).map(|ll| ll.to_cell(Resolution::Seven));
    let Ok(centre) = centre else { return Vec::new() };
    let regions: Vec<CellIndex> = centre.grid_disk::<Vec<_>>(1);
    let mut out = Vec::new();
    'outer: for child in 0..7 {
        for r in &regions {
            if let Some(c) = r.children(Resolution::Eight).nth(child) {
                out.push(c.to_string());
            }
            if out.len() == n {
                break 'outer;
            }
        }
    }
    out
}

/// The catalog records of the scenario's SKUs: supplier `syn-<i % 3>`, one warehouse
/// serving the res-4 cell around the grids (the res-3 one for more than 49 grids).
pub fn catalog_records(s: &Scenario) -> Vec<CatalogRecord> {
    let res = if s.grids > NEAR { Resolution::Three } else { Resolution::Four };
    let area = LatLng::new(31.23, 121.47).map(|ll| ll.to_cell(res).to_string()).unwrap_or_default();
    (0..s.skus)
        .map(|i| CatalogRecord {
            sku: sku(i),
            name: format!("Synthetic {i}"),
            category: "synthetic".into(),
            supplier_id: format!("syn-{}", i % 3),
            factory_id: "factory-1".into(),
            moq: 60 + 20 * (i as i64 % 4),
            batch_size: 12 * (1 + i as i64 % 3),
            lead_time_hours: 24 * (i as i32 % 2),
            service_areas: vec![ServiceArea {
                warehouse_id: "wh-1".into(),
                cells: vec![area.clone()],
            }],
            updated_at: T0,
        })
        .collect()
}

/// The scenario's catalog.
pub fn catalog(s: &Scenario) -> Catalog {
    let c = Catalog::default();
    for r in catalog_records(s) {
        if let Err(e) = c.upsert(&r) {
            unreachable!("synthetic catalog record {}: {e}", r.sku);
        }
    }
    c
}

/// The stream, in the order the aggregator would write it: per hour, every (sku, grid)
/// window (quiet grids skipped), some late corrections of the hour before, then a
/// five-minute tick per SKU after the last hour so every bucket completes.
pub fn stream(s: &Scenario) -> Vec<DemandWindow> {
    let grids = grids(s.grids);
    let mut x = s.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::new();
    for h in 1..=s.hours {
        let end = T0 + h * HOUR;
        let hour_of_day = (h - 1) % 24;
        let profile = 1.0 + (std::f64::consts::PI * (hour_of_day as f64 - 6.0) / 12.0).sin();
        for i in 0..s.skus {
            for (gi, g) in grids.iter().enumerate() {
                let r = xorshift(&mut x);
                if r.is_multiple_of(5) {
                    continue; // quiet this hour
                }
                let base = 2.0 + (i % 4) as f64 + gi as f64 % 3.0;
                let mut net = (base * profile + (r >> 8) as f64 % 4.0).round() as i64;
                if s.surge_hour == Some(h) {
                    net = net * 8 + 20;
                }
                let stores = 1 + ((r >> 20) % 3) as i32;
                let source = source_of(gi);
                out.push(window(&sku(i), g, end, net, stores, 0, source));
                if (r >> 30).is_multiple_of(9) && h > 1 {
                    // A late correction of the previous hour (revision 1).
                    // Shops that were offline upload: more stores, more units.
                    out.push(window(&sku(i), g, end - HOUR, net + 7, stores + 3, 1, source));
                }
            }
        }
    }
    // Every aggregator partition's clock passes the last hour.
    let last = T0 + s.hours * HOUR + 10 * 60_000;
    for i in 0..s.skus {
        for (gi, g) in grids.iter().enumerate().take(SOURCES) {
            let mut t = window(&sku(i), g, last - last % 300_000, 0, 0, 0, source_of(gi));
            t.window_start = t.window_end - 300_000;
            t.watermark = last;
            out.push(t);
        }
    }
    out
}

/// The aggregator partitions the synthetic windows come from (`source_partition`).
const SOURCES: usize = 3;

fn source_of(grid_index: usize) -> i32 {
    (grid_index % SOURCES) as i32
}

fn window(
    sku: &str,
    grid: &str,
    end: i64,
    net: i64,
    stores: i32,
    revision: i32,
    source: i32,
) -> DemandWindow {
    DemandWindow {
        grid_id: grid.into(),
        sku: sku.into(),
        window_start: end - HOUR,
        window_end: end,
        units_sold: net.max(0),
        units_returned: (-net).max(0),
        preorder_units: 0,
        net_units: net,
        revenue_minor: net * 350,
        currency: "CNY".into(),
        event_count: net.abs(),
        distinct_stores: stores,
        stores_reporting: stores + 1,
        stores_expected: stores + 1,
        stores_pending: 0,
        revision,
        is_final: true,
        watermark: end + 60_000,
        source_partition: source,
        last_event_at: end - 1_000,
        emitted_at: end + 60_000,
    }
}

/// The coverage the aggregator would write for the scenario's hours (`coverage.v1`): each
/// selling grid has 8 stores, all reporting; each region also has one silent grid of 4
/// stores, which report every hour but, every fifth hour, hold sales not uploaded yet.
pub fn coverage(s: &Scenario) -> Vec<GridCoverage> {
    let selling = grids(s.grids);
    let mut silent: Vec<String> = selling
        .iter()
        .filter_map(|g| g.parse::<CellIndex>().ok()?.parent(Resolution::Seven))
        .filter_map(|r| r.children(Resolution::Eight).nth(6).map(|c| c.to_string()))
        .collect();
    silent.sort();
    silent.dedup();
    let mut out = Vec::new();
    for h in 1..=s.hours {
        let end = T0 + h * HOUR;
        let rec = |grid: &String, expected: i32, pending: i32| GridCoverage {
            grid_id: grid.clone(),
            window_start: end - HOUR,
            window_end: end,
            stores_expected: expected,
            stores_reporting: expected,
            stores_pending: pending,
            pending_events: i64::from(pending) * 9,
            watermark: end + 60_000,
            emitted_at: end + 60_000,
        };
        out.extend(selling.iter().map(|g| rec(g, 8, 0)));
        out.extend(silent.iter().map(|g| rec(g, 4, if h % 5 == 0 { 4 } else { 0 })));
    }
    out
}

/// The settings the scenarios are planned with in tests (a privacy floor of 3 stores, the
/// clock moved by windows only), planning the horizons starting within `[from, before)`.
pub fn state_config(from: Option<i64>, before: Option<i64>) -> Arc<StateConfig> {
    let c = crate::EmitConfig {
        privacy_k: 3,
        idle_advance_ms: 0,
        horizons_from_ms: from,
        horizons_before_ms: before,
        ..crate::EmitConfig::default()
    };
    match c.validate().and_then(|()| StateConfig::from_config(&c)) {
        Ok(cfg) => Arc::new(cfg),
        Err(e) => unreachable!("synthetic settings: {e}"),
    }
}

/// The decisions one state machine per partition makes on `windows` (grouped by
/// `partition_of`, each partition in stream order), with `generated_at` zeroed.
pub fn reference<'a>(
    windows: &[DemandWindow],
    partition_of: impl Fn(&str) -> i32,
    cfg: &Arc<StateConfig>,
    side: impl Into<Side<'a>>,
) -> Vec<PlanSignal> {
    let side = side.into();
    let mut parts: BTreeMap<i32, PartitionState> = BTreeMap::new();
    let mut out = Vec::new();
    for w in windows {
        let st = parts
            .entry(partition_of(&w.sku))
            .or_insert_with(|| PartitionState::new(Arc::clone(cfg)));
        st.apply(w, side, 0);
        out.extend(st.flush(0, side).signals);
    }
    for s in &mut out {
        s.generated_at = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmitConfig;
    use nearfield_schemas::PlanReason;

    #[test]
    fn the_default_scenario_exercises_every_rule() {
        let s = Scenario::default();
        let cfg = EmitConfig { privacy_k: 3, idle_advance_ms: 0, ..EmitConfig::default() };
        let cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
        let ws = stream(&s);
        let out = reference(&ws, |_| 0, &cfg, &catalog(&s));
        for r in
            [PlanReason::Threshold, PlanReason::Scheduled, PlanReason::Surge, PlanReason::Revision]
        {
            let n = out.iter().filter(|x| x.reason == r).count();
            assert!(n > 0, "no {r:?} among {} signals", out.len());
        }
        assert!(out.iter().all(|x| x.contributing_stores >= 3));
    }

    #[test]
    fn coverage_counts_silent_shops_and_holds_back_firmness() {
        let s = Scenario::default();
        let cfg = EmitConfig { privacy_k: 3, idle_advance_ms: 0, ..EmitConfig::default() };
        let cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
        let ws = stream(&s);
        let cat = catalog(&s);
        let book = crate::coverage::Coverage::new(cfg.region_res, cfg.bucket, 1_000);
        for c in coverage(&s) {
            assert_eq!(book.apply(&c), Ok(crate::coverage::Applied::Counted));
        }
        let without = reference(&ws, |_| 0, &cfg, &cat);
        let with = reference(&ws, |_| 0, &cfg, Side { catalog: &cat, coverage: Some(&book) });
        // The same decisions (revisions aside: scaled forecasts absorb different late
        // windows), keyed by what was decided when.
        let decisions = |v: &[PlanSignal]| -> Vec<PlanSignal> {
            v.iter().filter(|s| s.reason != PlanReason::Revision).cloned().collect()
        };
        let (without, with) = (decisions(&without), decisions(&with));
        assert_eq!(with.len(), without.len(), "the same decisions");
        let mut firm_before_planning_now = 0;
        let mut raised = 0;
        for (a, b) in without.iter().zip(&with) {
            let key = |s: &PlanSignal| {
                (s.sku.clone(), s.region.clone(), s.horizon_start, s.based_on_watermark, s.reason)
            };
            assert_eq!(key(a), key(b));
            // Buckets where shops held unsent sales are scaled up to the settled share.
            assert!(b.recommended_units >= a.recommended_units, "{a:?}\n{b:?}");
            raised += usize::from(b.recommended_units > a.recommended_units);
            // Every region has a silent grid of 4 stores the demand windows never name.
            assert!(b.stores_expected > a.stores_expected, "{a:?}\n{b:?}");
            let pending_hour = (b.based_on_watermark - T0) / HOUR % 5 == 0;
            if pending_hour {
                assert_eq!(b.firmness, nearfield_schemas::Firmness::Planning, "{b:?}");
                firm_before_planning_now +=
                    usize::from(a.firmness == nearfield_schemas::Firmness::Firm);
            } else {
                assert_eq!(a.firmness, b.firmness, "full coverage either way: {b:?}");
            }
        }
        assert!(firm_before_planning_now > 0, "pending shops held some plan back from FIRM");
        assert!(raised > 0, "no plan saw the shops holding sales");
    }
}

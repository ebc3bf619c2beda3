//! The decisions' parts: the privacy merge of regions that may not be published alone, a
//! unit's series and forecast, completeness, the rounding, and the deterministic signal id
//! (the warehouse decision itself is in `warehouse`).

use std::collections::BTreeMap;

use h3o::CellIndex;
use nearfield_schemas::PlanReason;

use crate::count_model::{History, Prior, predict};
use crate::coverage::{Coverage, Figures};
use crate::forecast::Forecast;

use super::StateConfig;
use super::model::{CellState, SkuState};

pub(crate) fn align_down(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size
}

pub(crate) fn align_up(t: i64, size: i64) -> i64 {
    -align_down(-t, size)
}

/// `units` rounded up to a multiple of `batch`, and at least `moq`.
pub fn recommend(need: f64, moq: i64, batch: i64) -> i64 {
    let need = if need.is_finite() { need.max(0.0).ceil() as i64 } else { 0 };
    let units = need.max(moq).max(1);
    let batch = batch.max(1);
    (units + batch - 1) / batch * batch
}

/// The deterministic id of a decision.
#[allow(clippy::too_many_arguments)]
pub fn signal_id(
    supplier: &str,
    sku: &str,
    warehouse: &str,
    region: &str,
    horizon_start: i64,
    based_on: i64,
    reason: PlanReason,
    revision: i32,
) -> String {
    let text = format!(
        "{supplier}|{sku}|{warehouse}|{region}|{horizon_start}|{based_on}|{reason:?}|{revision}"
    );
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// A set of cells published together after the privacy merge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    pub(crate) region: CellIndex,
    pub(crate) members: Vec<String>,
    pub(crate) stores: i32,
    /// Net units of the figure, and a bound on its largest store's.
    pub(crate) units: i64,
    pub(crate) top: i64,
}

impl Unit {
    /// Adds `u` to the unit of `region` in `level` (creating it): members and stores
    /// add up, the largest store's bound is the larger one.
    pub(crate) fn merge_into(self, region: CellIndex, level: &mut BTreeMap<CellIndex, Unit>) {
        let e = level.entry(region).or_insert_with(|| Unit {
            region,
            members: Vec::new(),
            stores: 0,
            units: 0,
            top: 0,
        });
        e.members.extend(self.members);
        e.stores += self.stores;
        e.units += self.units;
        e.top = e.top.max(self.top);
    }
}

/// Merges regions that may not be published alone (fewer than `k` stores, or one store
/// above the dominance share) into their parents, finest first; what still may not be
/// published at `min_region_res` is suppressed. Candidates: (cell, key, stores, units,
/// largest store's bound).
pub(crate) fn privacy_merge(
    cands: Vec<(CellIndex, String, i32, i64, i64)>,
    cfg: &StateConfig,
) -> (Vec<Unit>, Vec<Unit>) {
    let mut level: BTreeMap<CellIndex, Unit> = BTreeMap::new();
    for (region, key, stores, units, top) in cands {
        Unit { region, members: vec![key], stores, units, top }.merge_into(region, &mut level);
    }
    let (mut units, mut suppressed) = (Vec::new(), Vec::new());
    while let Some(res) = level.keys().map(|c| c.resolution()).max() {
        let at: Vec<CellIndex> = level.keys().filter(|c| c.resolution() == res).copied().collect();
        for c in at {
            let Some(u) = level.remove(&c) else { continue };
            let parent = res.pred().filter(|_| res > cfg.min_region_res).and_then(|r| c.parent(r));
            if super::groups::publishable(u.stores, u.units, u.top, cfg) {
                units.push(u);
            } else if let Some(p) = parent {
                u.merge_into(p, &mut level);
            } else {
                suppressed.push(u);
            }
        }
    }
    (units, suppressed)
}

/// A bucket whose settled share is below this is scaled as if this share had settled
/// (so a region with nearly every shop offline is not multiplied by a huge factor).
pub(crate) const MIN_SETTLED: f64 = 0.3;

/// The unit's net units per bucket, oldest first, ending at `end` (at most `history`).
/// Completeness-aware with the coverage book: a recent bucket of a region where stores did
/// not settle (offline, or holding unsent sales) is scaled by 1 / the settled share, until
/// late windows for it arrive (then what was missing has come in).
pub(crate) fn unit_series(
    sku: &SkuState,
    members: &[String],
    end: i64,
    cfg: &StateConfig,
    coverage: Option<&Coverage>,
) -> Vec<f64> {
    let cells: Vec<&CellState> = members.iter().filter_map(|m| sku.cells.get(m)).collect();
    cells_series(&cells, end, cfg, coverage)
}

/// [`unit_series`] of the given cells.
pub(crate) fn cells_series(
    cells: &[&CellState],
    end: i64,
    cfg: &StateConfig,
    coverage: Option<&Coverage>,
) -> Vec<f64> {
    let cells: Vec<&CellState> = cells.iter().copied().filter(|c| !c.series.is_empty()).collect();
    let Some(first) = cells.iter().map(|c| c.series_start(cfg.bucket)).min() else {
        return Vec::new();
    };
    let start = first.max(end - (cfg.history as i64 - 1) * cfg.bucket).min(end);
    let n = ((end - start) / cfg.bucket + 1) as usize;
    let mut v = vec![0.0; n];
    for c in cells {
        let s = c.series_start(cfg.bucket);
        for (i, val) in c.series.iter().enumerate() {
            let b = s + i as i64 * cfg.bucket;
            if (start..=end).contains(&b) {
                v[((b - start) / cfg.bucket) as usize] += *val as f64;
            }
        }
        let unsettled = match (coverage, c.index()) {
            (Some(book), Some(region)) => book.unsettled(region),
            _ => continue,
        };
        for (b, share) in unsettled {
            if (start..=end).contains(&b) && !c.late.contains(&b) {
                let x = c.sum_between(b - cfg.bucket, b, cfg.bucket) as f64;
                v[((b - start) / cfg.bucket) as usize] += x * (1.0 / share.max(MIN_SETTLED) - 1.0);
            }
        }
    }
    v
}

/// (stores_reporting, stores_expected, latest occurred_at) of `grids` in (from, to].
pub(crate) fn completeness(
    sku: &SkuState,
    grids: &[String],
    from: i64,
    to: i64,
) -> (i32, i32, i64) {
    let (mut rep, mut exp, mut last) = (0, 0, i64::MIN);
    for g in grids {
        let Some(b) = sku.grids.get(g) else { continue };
        if let Some(latest) = b.iter().rev().find(|b| b.end > from && b.end <= to) {
            rep += latest.reporting;
            exp += latest.expected;
        }
        for x in b.iter().filter(|b| b.end > from && b.end <= to) {
            last = last.max(x.last_event_at);
        }
    }
    (rep, exp, last)
}

/// When a decision is made: at the completion of bucket `end`, wall clock `now`, with the
/// coverage book when the emitter follows `coverage.v1`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Basis<'a> {
    pub(crate) end: i64,
    pub(crate) now: i64,
    pub(crate) coverage: Option<&'a Coverage>,
    /// The shape of the whole SKU's demand (all its cells), the units' prior.
    pub(crate) prior: Option<&'a Prior>,
}

/// The series of buckets ending at `end` as the count model sees it.
pub(crate) fn history<'a>(series: &'a [f64], end: i64, cfg: &StateConfig) -> History<'a> {
    let last = end.div_euclid(cfg.bucket) - 1;
    History { values: series, first: last - series.len() as i64 + 1, season: cfg.forecast.season }
}

/// How many buckets of history the SKU's longest cell series holds.
pub(crate) fn history_len(sku: &SkuState) -> usize {
    sku.cells.values().map(|c| c.series.len()).max().unwrap_or(0)
}

/// The prior of a SKU at the completion of bucket `end`: the shape of all its cells.
pub(crate) fn sku_prior(
    sku: &SkuState,
    end: i64,
    cfg: &StateConfig,
    coverage: Option<&Coverage>,
) -> Option<Prior> {
    let keys: Vec<String> = sku.cells.keys().cloned().collect();
    let series = unit_series(sku, &keys, end, cfg, coverage);
    (!series.is_empty()).then(|| Prior::of(&history(&series, end, cfg)))
}

/// The count model's forecast of `[horizon_start, horizon_end)` after the series ending at
/// `end`: its median, and the interval of the configured coverage.
pub(crate) fn horizon_forecast(
    series: &[f64],
    (end, horizon_start, horizon_end): (i64, i64, i64),
    cfg: &StateConfig,
    prior: Option<&Prior>,
) -> Forecast {
    let c = cfg.forecast.coverage;
    let qs = [(1.0 - c) / 2.0, 0.5, (1.0 + c) / 2.0];
    let (from, to) = (horizon_start.div_euclid(cfg.bucket), horizon_end.div_euclid(cfg.bucket));
    let p = predict(&history(series, end, cfg), from, to, &qs, prior);
    Forecast { point: p.quantiles[1], low: p.quantiles[0], high: p.quantiles[2] }
}

/// The coverage of the unit's regions for bucket `end`, when every region has a record
/// for it (the book is filled by another thread: a bucket whose coverage has not been
/// read yet falls back to the demand windows' own figures).
pub(crate) fn unit_coverage(
    members: &[&CellState],
    coverage: &Coverage,
    end: i64,
) -> Option<Figures> {
    let mut sum = Figures::default();
    for c in members {
        let f = coverage.region(c.index()?, end)?;
        sum.expected += f.expected;
        sum.reporting += f.reporting;
        sum.pending += f.pending;
        sum.pending_events += f.pending_events;
    }
    (!members.is_empty()).then_some(sum)
}

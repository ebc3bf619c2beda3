//! The decisions: the privacy merge of thin regions, a unit's series and forecast, which
//! rule fires (SURGE > THRESHOLD > SCHEDULED), the recommendation and its rounding, the
//! deterministic signal id, and the re-decision of a plan after late data (REVISION).

use std::collections::BTreeMap;

use h3o::{CellIndex, Resolution};
use nearfield_schemas::{Firmness, PlanReason, PlanSignal};

use crate::catalog::Item;
use crate::count_model::{History, Prior, predict};
use crate::coverage::{Coverage, Figures};
use crate::forecast::{Forecast, Model};

use super::model::{CellState, Plan, SkuState};
use super::{StateConfig, Tally};

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

/// A set of cells decided together after the privacy merge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    pub(crate) region: CellIndex,
    pub(crate) members: Vec<String>,
    pub(crate) stores: i32,
}

/// Merges regions thinner than `k` stores into their parents (finest first) until they
/// reach `k`; what is still thinner at `min_res` is suppressed.
pub(crate) fn privacy_merge(
    cands: Vec<(CellIndex, String, i32)>,
    k: i32,
    min_res: Resolution,
) -> (Vec<Unit>, Vec<Unit>) {
    let mut level: BTreeMap<CellIndex, (Vec<String>, i32)> = BTreeMap::new();
    for (cell, key, stores) in cands {
        let e = level.entry(cell).or_default();
        e.0.push(key);
        e.1 += stores;
    }
    let (mut units, mut suppressed) = (Vec::new(), Vec::new());
    while let Some(res) = level.keys().map(|c| c.resolution()).max() {
        let at: Vec<CellIndex> = level.keys().filter(|c| c.resolution() == res).copied().collect();
        for c in at {
            let Some((members, stores)) = level.remove(&c) else { continue };
            let parent = res.pred().filter(|_| res > min_res).and_then(|r| c.parent(r));
            if stores >= k {
                units.push(Unit { region: c, members, stores });
            } else if let Some(p) = parent {
                let e = level.entry(p).or_default();
                e.0.extend(members);
                e.1 += stores;
            } else {
                suppressed.push(Unit { region: c, members, stores });
            }
        }
    }
    (units, suppressed)
}

/// The unit's net units per bucket, oldest first, ending at `end` (at most `history`).
pub(crate) fn unit_series(
    sku: &SkuState,
    members: &[String],
    end: i64,
    cfg: &StateConfig,
) -> Vec<f64> {
    let cells: Vec<&CellState> =
        members.iter().filter_map(|m| sku.cells.get(m)).filter(|c| !c.series.is_empty()).collect();
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
    }
    v
}

pub(crate) fn need(reason: PlanReason, forecast: f64, observed: i64) -> f64 {
    match reason {
        PlanReason::Scheduled | PlanReason::Revision => forecast,
        // Demand already seen and not yet planned for is at least what to make.
        PlanReason::Threshold | PlanReason::Surge => forecast.max(observed as f64),
    }
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
fn history<'a>(series: &'a [f64], end: i64, cfg: &StateConfig) -> History<'a> {
    let last = end.div_euclid(cfg.bucket) - 1;
    History { values: series, first: last - series.len() as i64 + 1, season: cfg.forecast.season }
}

/// The prior of a SKU at the completion of bucket `end`: the shape of all its cells.
pub(crate) fn sku_prior(sku: &SkuState, end: i64, cfg: &StateConfig) -> Option<Prior> {
    let keys: Vec<String> = sku.cells.keys().cloned().collect();
    let series = unit_series(sku, &keys, end, cfg);
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
fn unit_coverage(members: &[&CellState], coverage: &Coverage, end: i64) -> Option<Figures> {
    let mut sum = Figures::default();
    for c in members {
        let f = coverage.region(c.region.parse::<CellIndex>().ok()?, end)?;
        sum.expected += f.expected;
        sum.reporting += f.reporting;
        sum.pending += f.pending;
        sum.pending_events += f.pending_events;
    }
    (!members.is_empty()).then_some(sum)
}

/// Decides one unit at the completion of bucket `basis.end`; on a signal, records the
/// plan and resets the members' accumulation.
pub(crate) fn decide_unit(
    sku: &mut SkuState,
    unit: &Unit,
    warehouse: &str,
    basis: Basis<'_>,
    item: &Item,
    cfg: &StateConfig,
    tally: &mut Tally,
) -> Option<PlanSignal> {
    let Basis { end, now, coverage, prior } = basis;
    let series = unit_series(sku, &unit.members, end, cfg);
    let n = series.len();
    let season = cfg.forecast.season;
    // How the bucket that just completed compares with its one-step forecast.
    let mut surge = false;
    if n > season {
        let f1 = Model::fit_best(&series[..n - 1], &cfg.forecast).horizon(1, 1);
        let actual = series[n - 1];
        tally.forecast_abs_errors.push((actual - f1.point).abs());
        if f1.low <= actual && actual <= f1.high {
            tally.forecast_hits += 1;
        }
        surge = actual > f1.high
            && actual >= cfg.surge_factor * f1.point
            && actual >= cfg.surge_min_units as f64;
    }
    let members: Vec<&CellState> = unit.members.iter().filter_map(|m| sku.cells.get(m)).collect();
    // The plan's basis is the completed buckets since the last plan, (acc_from, end]:
    // windows of later buckets (a faster aggregator partition's) stay accumulated for the
    // next decision, so their slower siblings are not taken for late data.
    let observed: i64 = members.iter().map(|c| c.sum_between(c.acc_from, end, cfg.bucket)).sum();
    let basis_from = members.iter().map(|c| c.acc_from).min().unwrap_or(i64::MIN);
    let basis_to = end;
    let reason = if surge {
        PlanReason::Surge
    } else if observed >= item.moq {
        PlanReason::Threshold
    } else if end % cfg.schedule == 0 {
        PlanReason::Scheduled
    } else {
        return None;
    };
    // The supplier's calendar: horizons of `horizon_ms` aligned to it (UTC), the first one
    // a decision can target starts after the lead time, in whole buckets.
    let lead = align_up(item.lead_time_ms.max(0), cfg.bucket);
    let horizon_start = align_up(end + lead, cfg.horizon);
    let horizon_end = horizon_start + cfg.horizon;
    let fc = horizon_forecast(&series, (end, horizon_start, horizon_end), cfg, prior);
    let mut grids: Vec<String> =
        members.iter().flat_map(|c| c.acc_stores.keys().cloned()).collect();
    grids.sort();
    grids.dedup();
    let (mut reporting, mut expected, last_event) = completeness(sku, &grids, basis_from, basis_to);
    if last_event != i64::MIN {
        tally.latencies_ms.push(now - last_event);
    }
    let mut share = if expected > 0 { f64::from(reporting) / f64::from(expected) } else { 0.0 };
    // Coverage of the whole regions (silent grids too; stores holding unsent sales count
    // as not settled) replaces the figures of the grids that sold, when it is known.
    if let Some(f) = coverage.and_then(|c| unit_coverage(&members, c, end)) {
        tally.coverage_known += 1;
        let int = |n: i64| i32::try_from(n.max(0)).unwrap_or(i32::MAX);
        (reporting, expected, share) = (int(f.reporting), int(f.expected), f.settled_share());
    } else if coverage.is_some() {
        tally.coverage_unknown += 1;
    }
    // FIRM only inside the supplier's frozen time fence, from complete data (EDI 830).
    let fenced = horizon_end - end <= cfg.frozen_for(&item.supplier_id);
    let firmness = if fenced && share >= cfg.firm_coverage && n >= season {
        Firmness::Firm
    } else {
        Firmness::Planning
    };
    let region = unit.region.to_string();
    // At most one current plan per (warehouse, region, horizon): a new decision for a
    // horizon that has one supersedes it, and covers what it covered.
    let current = sku.plans.iter().rposition(|p| {
        p.signal.horizon_start == horizon_start
            && p.signal.region == region
            && p.signal.warehouse_id.as_deref() == Some(warehouse)
    });
    let (revision, supersedes, observed, basis_from) = match current.map(|i| &sku.plans[i]) {
        Some(p) => (
            p.signal.revision + 1,
            Some(p.signal.signal_id.clone()),
            p.signal.observed_units + observed,
            p.basis_from.min(basis_from),
        ),
        None => (0, None, observed, basis_from),
    };
    let signal = PlanSignal {
        signal_id: signal_id(
            &item.supplier_id,
            &item.sku,
            warehouse,
            &region,
            horizon_start,
            end,
            reason,
            revision,
        ),
        supplier_id: item.supplier_id.clone(),
        factory_id: item.factory_id.clone(),
        sku: item.sku.clone(),
        warehouse_id: Some(warehouse.to_string()),
        region,
        horizon_start,
        horizon_end,
        observed_units: observed,
        forecast_units: fc.point,
        forecast_low: fc.low,
        forecast_high: fc.high,
        interval_coverage: cfg.forecast.coverage,
        recommended_units: recommend(need(reason, fc.point, observed), item.moq, item.batch_size),
        moq: item.moq,
        batch_size: item.batch_size,
        reason,
        firmness,
        contributing_grids: grids,
        contributing_stores: unit.stores,
        stores_reporting: reporting,
        stores_expected: expected,
        based_on_watermark: end,
        generated_at: now,
        revision,
        supersedes,
        service_level: 0.5,
        allocations: vec![],
    };
    let grid_figures = &sku.grids;
    for m in &unit.members {
        if let Some(c) = sku.cells.get_mut(m) {
            c.acc_units = c.sum_between(end, c.acc_to, cfg.bucket);
            if c.acc_to <= end {
                c.acc_stores.clear();
            } else {
                // The stores of the buckets still accumulated, per grid.
                let to = c.acc_to;
                c.acc_stores = std::mem::take(&mut c.acc_stores)
                    .into_keys()
                    .filter_map(|g| {
                        let b = grid_figures.get(&g)?;
                        let n = b
                            .iter()
                            .filter(|x| end < x.end && x.end <= to)
                            .map(|x| x.stores)
                            .max()?;
                        (n > 0).then_some((g, n))
                    })
                    .collect();
            }
            c.acc_from = end;
            c.acc_to = c.acc_to.max(end);
        }
    }
    let plan = Plan {
        root: signal.signal_id.clone(),
        signal: signal.clone(),
        base_reason: reason,
        members: unit.members.clone(),
        basis_from,
        basis_to,
        prior: prior.cloned(),
        pending_stores: 0,
    };
    match current {
        Some(i) => {
            let plan = Plan { root: sku.plans[i].root.clone(), ..plan };
            sku.plans[i] = plan;
            tally.superseded += 1;
        }
        None => sku.plans.push(plan),
    }
    Some(signal)
}

/// What re-deciding a plan after late data came to.
#[derive(Debug)]
pub(crate) enum Revised {
    /// A changed recommendation from at least `privacy_k` stores' changes: a REVISION.
    Sent(Box<PlanSignal>),
    /// A changed recommendation from fewer stores: held until more change (publishing it
    /// would expose their delta).
    Held,
    /// The recommendation is as it was.
    Absorbed,
}

/// Re-decides plan `idx` after late data; a changed recommendation is a REVISION once the
/// changes behind it come from at least `privacy_k` stores.
pub(crate) fn revise(
    sku: &mut SkuState,
    idx: usize,
    item: &Item,
    cfg: &StateConfig,
    now: i64,
) -> Revised {
    let plan = &sku.plans[idx];
    let end = plan.signal.based_on_watermark;
    let series = unit_series(sku, &plan.members, end, cfg);
    let span = (end, plan.signal.horizon_start, plan.signal.horizon_end);
    let fc = horizon_forecast(&series, span, cfg, plan.prior.as_ref());
    let observed = plan.signal.observed_units;
    let rec = recommend(need(plan.base_reason, fc.point, observed), item.moq, item.batch_size);
    if rec == plan.signal.recommended_units {
        return Revised::Absorbed;
    }
    if plan.pending_stores < cfg.k {
        return Revised::Held;
    }
    let plan = &mut sku.plans[idx];
    plan.pending_stores = 0;
    let old = plan.signal.signal_id.clone();
    let s = &mut plan.signal;
    s.revision += 1;
    s.reason = PlanReason::Revision;
    s.supersedes = Some(old);
    s.forecast_units = fc.point;
    s.forecast_low = fc.low;
    s.forecast_high = fc.high;
    s.recommended_units = rec;
    s.moq = item.moq;
    s.batch_size = item.batch_size;
    s.generated_at = now;
    s.signal_id = signal_id(
        &s.supplier_id,
        &s.sku,
        s.warehouse_id.as_deref().unwrap_or_default(),
        &s.region,
        s.horizon_start,
        end,
        PlanReason::Revision,
        s.revision,
    );
    Revised::Sent(Box::new(s.clone()))
}

//! The warehouse decision: one plan per (SKU, warehouse, horizon) whose quantity is
//! rounded once to the supplier's MOQ and batch, and carries the allocation per region.
//!
//! - **Grouping**: the first decision for a horizon fixes its groups (the privacy merge
//!   of the cells that sold: every group from at least `k` stores, none dominated by one
//!   store); later decisions for the horizon keep them, and cells new to it form groups of
//!   their own. A cell never moves between groups within a horizon, so two signals of it
//!   cannot be differenced into one store's sales.
//! - **Deltas**: a group publishes what it sold since the last decision only when that
//!   change is itself publishable (≥ `k` stores, not dominated); otherwise the change stays
//!   accumulated for a later decision.
//! - **Quantity**: the warehouse's need is the service-level quantile of its demand over
//!   the lead time and the horizon (the order-up-to level of a periodic review whose
//!   period is the horizon). Nothing we do not know is subtracted: stock on hand, in
//!   transit or produced from earlier plans is the factory's to net. The need is rounded
//!   once; the allocation splits the rounded units over the groups in proportion to their
//!   median forecasts (largest remainder), so the allocations sum to `recommended_units`.
//! - The rule that fired (THRESHOLD, SURGE, SCHEDULED) says when a plan is made, not how
//!   much: every plan of a horizon is sized the same way, so a revision moves only with
//!   the data.

use std::collections::{BTreeMap, BTreeSet};

use h3o::CellIndex;
use nearfield_schemas::{Firmness, PlanReason, PlanSignal, RegionAllocation};

use crate::catalog::Item;
use crate::count_model::predict_spans;
use crate::coverage::Coverage;
use crate::forecast::Forecast;

use super::decide::{
    Basis, align_up, cells_series, completeness, history, horizon_forecast, privacy_merge,
    recommend, signal_id, unit_coverage, unit_series,
};
use super::groups::{
    allocate, allocation_regions, cell_basis, coarsen, group_of, grouping, publishable,
};
use super::model::{CellState, Group, Plan, SkuState};
use super::{StateConfig, Tally};

/// The warehouse's forecast of the horizon (median and interval) and its need: the `level`
/// quantile of its demand over the lead time and the horizon, `[end, horizon_end)` — the
/// order-up-to level of a periodic review. One fit for both.
fn total_forecast(
    series: &[f64],
    (end, horizon_start, horizon_end): (i64, i64, i64),
    level: f64,
    cfg: &StateConfig,
    prior: Option<&crate::count_model::Prior>,
) -> (Forecast, f64) {
    let h = history(series, end, cfg);
    let b = |t: i64| t.div_euclid(cfg.bucket);
    let c = cfg.forecast.coverage;
    let qs = [(1.0 - c) / 2.0, 0.5, (1.0 + c) / 2.0];
    let spans: [(i64, i64, &[f64]); 2] =
        [(b(horizon_start), b(horizon_end), &qs), (b(end), b(horizon_end), &[level])];
    let p = predict_spans(&h, &spans, prior);
    let (q, need) = (&p[0].quantiles, p[1].quantiles[0].max(0.0));
    (Forecast { point: q[1], low: q[0], high: q[2] }, need)
}

/// One group's figures at a decision.
struct GroupFigures {
    series: Vec<f64>,
    fc: Forecast,
    /// Units sold since the group's last decision, when publishable (else 0, kept).
    fresh: i64,
    publish: bool,
    stores: i32,
}

/// Sums series of different lengths aligned at their ends.
pub(crate) fn sum_aligned<'a>(series: impl Iterator<Item = &'a Vec<f64>>) -> Vec<f64> {
    let mut total: Vec<f64> = Vec::new();
    for s in series {
        if s.len() > total.len() {
            let mut longer = vec![0.0; s.len() - total.len()];
            longer.append(&mut total);
            total = longer;
        }
        let off = total.len() - s.len();
        for (i, v) in s.iter().enumerate() {
            total[off + i] += v;
        }
    }
    total
}

/// Decides (SKU, `warehouse`) at the completion of bucket `basis.end`; on a signal,
/// records the plan, resets the published groups' accumulation, and returns the signal
/// with the cells it touched.
pub(crate) fn decide_warehouse(
    sku: &mut SkuState,
    warehouse: &str,
    basis: Basis<'_>,
    item: &Item,
    cfg: &StateConfig,
    tally: &mut Tally,
) -> Option<(PlanSignal, Vec<String>)> {
    let Basis { end, now, coverage, prior } = basis;
    // The supplier's calendar: horizons of `horizon_ms` aligned to it (UTC), the first one
    // a decision can target starts after the lead time, in whole buckets.
    let lead = align_up(item.lead_time_ms.max(0), cfg.bucket);
    let horizon_start = align_up(end + lead, cfg.horizon);
    let horizon_end = horizon_start + cfg.horizon;
    if !cfg.horizons.plans(horizon_start) {
        tally.handed_over += 1;
        return None;
    }
    let current = sku.plans.iter().rposition(|p| {
        p.is_warehouse_plan()
            && p.signal.horizon_start == horizon_start
            && p.signal.warehouse_id.as_deref() == Some(warehouse)
    });
    let mut groups = current.map(|i| grouping(&sku.plans[i], &sku.cells)).unwrap_or_default();
    let grouped: BTreeSet<String> = groups.iter().flat_map(|g| g.members.clone()).collect();
    let cands: Vec<_> = sku
        .cells
        .iter()
        .filter(|(k, c)| {
            c.warehouse == warehouse && !c.acc_stores.is_empty() && !grouped.contains(*k)
        })
        .filter_map(|(k, c)| {
            let cell = c.index()?;
            let b = cell_basis(c, &sku.grids, end, cfg.bucket);
            (b.stores > 0).then(|| (cell, k.clone(), b.stores, b.units, b.top))
        })
        .collect();
    let (fresh, suppressed) = privacy_merge(cands, cfg);
    let room = cfg.max_allocations.saturating_sub(groups.len()).max(1);
    let fresh = coarsen(fresh, room, cfg.min_region_res);
    groups.extend(
        fresh.into_iter().map(|u| Group { region: u.region.to_string(), members: u.members }),
    );
    let would_fire = |units: i64| units >= item.moq || end % cfg.schedule == 0;
    if !suppressed.is_empty() {
        let held: i64 = suppressed.iter().map(|u| u.units).sum();
        if would_fire(held) {
            tally.suppressed += 1;
        }
    }
    if groups.is_empty() {
        return None;
    }
    let previous = current.map(|i| sku.plans[i].signal.allocations.clone()).unwrap_or_default();
    let mut held = current.map(|i| sku.plans[i].held.clone()).unwrap_or_default();
    held.resize(groups.len(), 0);
    let season = cfg.forecast.season;
    let mut surge = false;
    let mut figures = Vec::with_capacity(groups.len());
    for (gi, g) in groups.iter().enumerate() {
        let cells: Vec<&CellState> = g.members.iter().filter_map(|m| sku.cells.get(m)).collect();
        let series = unit_series(sku, &g.members, end, cfg, coverage);
        let (mut units, mut stores, mut top) = (0, 0, 0);
        for c in &cells {
            let b = cell_basis(c, &sku.grids, end, cfg.bucket);
            (units, stores, top) = (units + b.units, stores + b.stores, top.max(b.top));
        }
        let publish = stores > 0 && publishable(stores, units, top, cfg);
        tally.group_changes_held += u64::from(stores > 0 && !publish);
        // How the bucket that just completed compares with its one-step forecast: on what
        // was sold (a surge is never an estimate of what offline shops sold).
        let sold = if coverage.is_some() && publish && series.len() > season {
            unit_series(sku, &g.members, end, cfg, None)
        } else {
            Vec::new()
        };
        let sold = if sold.is_empty() { &series } else { &sold };
        let n = sold.len();
        if publish && n > season {
            // The count model's one-step forecast of the bucket just completed, from what
            // the group sold alone (no prior: more than a season of its own history).
            let one = (end - cfg.bucket, end - cfg.bucket, end);
            let f1 = horizon_forecast(&sold[..n - 1], one, cfg, None);
            let actual = sold[n - 1];
            tally.forecast_abs_errors.push((actual - f1.point).abs());
            if f1.low <= actual && actual <= f1.high {
                tally.forecast_hits += 1;
            }
            surge |= actual > f1.high
                && actual >= cfg.surge_factor * f1.point
                && actual >= cfg.surge_min_units as f64;
        }
        let before = previous.get(gi).map_or(0, |a| a.contributing_stores);
        let stores = if publish { before.max(stores) } else { before };
        let fresh = if publish { units } else { 0 };
        let fc = Forecast { point: 0.0, low: 0.0, high: 0.0 };
        figures.push(GroupFigures { series, fc, fresh, publish, stores });
    }
    let observed_new: i64 = figures.iter().map(|f| f.fresh).sum();
    let reason = if surge {
        PlanReason::Surge
    } else if observed_new >= item.moq {
        PlanReason::Threshold
    } else if end % cfg.schedule == 0 {
        PlanReason::Scheduled
    } else {
        return None;
    };
    // A rule fired: the forecasts (the costly part) of the groups and of the warehouse.
    let span = (end, horizon_start, horizon_end);
    for f in &mut figures {
        f.fc = horizon_forecast(&f.series, span, cfg, prior);
    }
    let total = sum_aligned(figures.iter().map(|f| &f.series));
    let level = cfg.service_level_for(&item.supplier_id);
    let (fc, need) = total_forecast(&total, span, level, cfg, prior);

    let recommended = recommend(need, item.moq, item.batch_size);
    let medians: Vec<f64> = figures.iter().map(|f| f.fc.point).collect();
    let shares = allocate(recommended, &medians);
    let allocations: Vec<RegionAllocation> = groups
        .iter()
        .zip(&figures)
        .zip(shares)
        .enumerate()
        .map(|(gi, ((g, f), units))| RegionAllocation {
            region: g.region.clone(),
            units,
            forecast_units: f.fc.point,
            forecast_low: f.fc.low,
            forecast_high: f.fc.high,
            // Held late units go out with the group's publishable change, never alone.
            observed_units: previous.get(gi).map_or(0, |a| a.observed_units)
                + f.fresh
                + if f.publish { held[gi] } else { 0 },
            contributing_stores: f.stores,
        })
        .collect();
    let observed: i64 = allocations.iter().map(|a| a.observed_units).sum();
    for (h, f) in held.iter_mut().zip(&figures) {
        if f.publish {
            *h = 0;
        }
    }
    let pending_stores = match current {
        Some(i) if held.iter().any(|h| *h != 0) => sku.plans[i].pending_stores,
        _ => 0,
    };
    // The basis: the published groups' completed buckets since their last decision.
    let published: Vec<&Group> =
        groups.iter().zip(&figures).filter(|(_, f)| f.publish).map(|(g, _)| g).collect();
    let basis_cells: Vec<&CellState> =
        published.iter().flat_map(|g| &g.members).filter_map(|m| sku.cells.get(m)).collect();
    let mut basis_from = basis_cells.iter().map(|c| c.acc_from).min().unwrap_or(end);
    // Completeness: every grid of the groups with figures in the basis.
    let member_keys: BTreeSet<&String> = groups.iter().flat_map(|g| &g.members).collect();
    let grids: Vec<String> = sku
        .grids
        .keys()
        .filter(|g| {
            let Ok(cell) = g.parse::<CellIndex>() else { return false };
            let region = cell.parent(cfg.region_res).unwrap_or(cell);
            member_keys.contains(&format!("{warehouse}|{region}"))
        })
        .cloned()
        .collect();
    if let Some(i) = current {
        basis_from = basis_from.min(sku.plans[i].basis_from);
    }
    let (mut reporting, mut expected, last_event) = completeness(sku, &grids, basis_from, end);
    if last_event != i64::MIN {
        tally.latencies_ms.push(now - last_event);
    }
    let mut share = if expected > 0 { f64::from(reporting) / f64::from(expected) } else { 0.0 };
    let all_cells: Vec<&CellState> =
        groups.iter().flat_map(|g| &g.members).filter_map(|m| sku.cells.get(m)).collect();
    // Coverage of the whole regions (silent grids too; stores holding unsent sales count
    // as not settled) replaces the figures of the grids that sold, when it is known.
    if let Some(f) = coverage.and_then(|c| unit_coverage(&all_cells, c, end)) {
        tally.coverage_known += 1;
        let int = |n: i64| i32::try_from(n.max(0)).unwrap_or(i32::MAX);
        (reporting, expected, share) = (int(f.reporting), int(f.expected), f.settled_share());
    } else if coverage.is_some() {
        tally.coverage_unknown += 1;
    }
    // FIRM only inside the supplier's frozen time fence, from complete data (EDI 830).
    let fenced = horizon_end - end <= cfg.frozen_for(&item.supplier_id);
    let firmness = if fenced && share >= cfg.firm_coverage && total.len() >= season {
        Firmness::Firm
    } else {
        Firmness::Planning
    };
    let (revision, supersedes) = match current.map(|i| &sku.plans[i]) {
        Some(p) => (p.signal.revision + 1, Some(p.signal.signal_id.clone())),
        None => (0, None),
    };
    let stores: i32 = figures.iter().map(|f| f.stores).sum();
    let signal = PlanSignal {
        signal_id: signal_id(
            &item.supplier_id,
            &item.sku,
            warehouse,
            warehouse,
            horizon_start,
            end,
            reason,
            revision,
        ),
        supplier_id: item.supplier_id.clone(),
        factory_id: item.factory_id.clone(),
        sku: item.sku.clone(),
        warehouse_id: Some(warehouse.to_string()),
        region: warehouse.to_string(),
        horizon_start,
        horizon_end,
        observed_units: observed,
        forecast_units: fc.point,
        forecast_low: fc.low,
        forecast_high: fc.high,
        interval_coverage: cfg.forecast.coverage,
        recommended_units: recommended,
        moq: item.moq,
        batch_size: item.batch_size,
        reason,
        firmness,
        // The cells rolled up: the groups' regions (a warehouse's grids are unbounded).
        contributing_grids: groups.iter().map(|g| g.region.clone()).collect(),
        contributing_stores: stores,
        stores_reporting: reporting,
        stores_expected: expected,
        based_on_watermark: end,
        generated_at: now,
        revision,
        supersedes,
        service_level: level,
        need_units: need,
        allocations,
    };
    let touched: Vec<String> = published.iter().flat_map(|g| g.members.clone()).collect();
    for m in &touched {
        if let Some(c) = sku.cells.get_mut(m) {
            consume(c, end, cfg.bucket, &sku.grids);
        }
    }
    let plan = Plan {
        root: signal.signal_id.clone(),
        signal: signal.clone(),
        base_reason: reason,
        members: Vec::new(),
        basis_from,
        basis_to: end,
        prior: prior.cloned(),
        pending_stores,
        held: if held.iter().any(|h| *h != 0) { held } else { Vec::new() },
        revise_pending: false,
    };
    match current {
        Some(i) => {
            sku.plans[i] = Plan { root: sku.plans[i].root.clone(), ..plan };
            tally.superseded += 1;
        }
        None => sku.plans.push(plan),
    }
    Some((signal, touched))
}

/// Resets a cell's accumulation after a decision at `end`: buckets after it (a faster
/// aggregator partition's) stay, with their grids' stores and bounds.
fn consume(
    c: &mut CellState,
    end: i64,
    bucket: i64,
    grids: &BTreeMap<String, Vec<super::model::GridBucket>>,
) {
    c.acc_units = c.sum_between(end, c.acc_to, bucket);
    if c.acc_to <= end {
        c.acc_stores.clear();
        c.acc_top.clear();
    } else {
        let to = c.acc_to;
        let later =
            |g: &String| grids.get(g).map(|b| b.iter().filter(move |x| end < x.end && x.end <= to));
        c.acc_stores = std::mem::take(&mut c.acc_stores)
            .into_keys()
            .filter_map(|g| {
                let n = later(&g)?.map(|x| x.stores).max()?;
                (n > 0).then_some((g, n))
            })
            .collect();
        c.acc_top = c
            .acc_stores
            .keys()
            .filter_map(|g| {
                let t: i64 = later(g)?.map(|x| super::model::top_bound(x.net, x.stores)).sum();
                Some((g.clone(), t))
            })
            .collect();
    }
    c.acc_from = end;
    c.acc_to = c.acc_to.max(end);
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
/// changes behind it come from at least `privacy_k` stores. Only the groups holding late
/// units are forecast again (the others keep their figures).
pub(crate) fn revise(
    sku: &mut SkuState,
    idx: usize,
    (item, coverage): (&Item, Option<&Coverage>),
    cfg: &StateConfig,
    now: i64,
) -> Revised {
    let plan = &sku.plans[idx];
    let end = plan.signal.based_on_watermark;
    let span = (end, plan.signal.horizon_start, plan.signal.horizon_end);
    let prior = plan.prior.as_ref();
    // One pass over the warehouse's cells: those of the plan, and of its changed groups.
    let mut all = Vec::new();
    let mut changed: BTreeMap<usize, Vec<&CellState>> = plan
        .held
        .iter()
        .enumerate()
        .filter(|(_, h)| **h != 0)
        .map(|(g, _)| (g, Vec::new()))
        .collect();
    if plan.is_warehouse_plan() {
        let regions = allocation_regions(plan);
        let warehouse = plan.signal.region.as_str();
        for c in sku.cells.values().filter(|c| c.warehouse == warehouse) {
            if let Some(g) = group_of(c, &regions) {
                all.push(c);
                if let Some(cells) = changed.get_mut(&g) {
                    cells.push(c);
                }
            }
        }
    } else {
        all.extend(plan.members.iter().filter_map(|m| sku.cells.get(m)));
    }
    let total = cells_series(&all, end, cfg, coverage);
    let observed = plan.signal.observed_units + plan.held.iter().sum::<i64>();
    let level = plan.signal.service_level;
    let (fc, need, group_fc) = if plan.is_warehouse_plan() {
        let (fc, need) = total_forecast(&total, span, level, cfg, prior);
        let group_fc: Vec<(usize, Forecast)> = changed
            .iter()
            .map(|(g, cells)| {
                (*g, horizon_forecast(&cells_series(cells, end, cfg, coverage), span, cfg, prior))
            })
            .collect();
        (fc, need, group_fc)
    } else {
        // A per-region plan of the previous release keeps its rules.
        let fc = horizon_forecast(&total, span, cfg, prior);
        let need = match plan.base_reason {
            PlanReason::Threshold | PlanReason::Surge => fc.point.max(observed as f64),
            _ => fc.point,
        };
        (fc, need, Vec::new())
    };
    let rec = recommend(need, item.moq, item.batch_size);
    let before = plan.signal.recommended_units;
    if rec == before || ((rec - before).abs() as f64) < cfg.revision_tolerance * before as f64 {
        return Revised::Absorbed;
    }
    if plan.pending_stores < cfg.k {
        return Revised::Held;
    }
    let plan = &mut sku.plans[idx];
    plan.pending_stores = 0;
    let held = std::mem::take(&mut plan.held);
    let old = plan.signal.signal_id.clone();
    let s = &mut plan.signal;
    s.observed_units += held.iter().sum::<i64>();
    for (a, h) in s.allocations.iter_mut().zip(&held) {
        a.observed_units += h;
    }
    s.revision += 1;
    s.reason = PlanReason::Revision;
    s.supersedes = Some(old);
    s.forecast_units = fc.point;
    s.forecast_low = fc.low;
    s.forecast_high = fc.high;
    s.recommended_units = rec;
    s.need_units = need;
    s.moq = item.moq;
    s.batch_size = item.batch_size;
    s.generated_at = now;
    for (g, f) in group_fc {
        if let Some(a) = s.allocations.get_mut(g) {
            (a.forecast_units, a.forecast_low, a.forecast_high) = (f.point, f.low, f.high);
        }
    }
    let medians: Vec<f64> = s.allocations.iter().map(|a| a.forecast_units).collect();
    for (a, units) in s.allocations.iter_mut().zip(allocate(rec, &medians)) {
        a.units = units;
    }
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

//! The groups a warehouse plan publishes, and what may be published of them: the privacy
//! predicate (`k` stores, no dominant store), a plan's grouping (fixed for its horizon: a
//! cell belongs to the finest group region containing it), a cell's basis at a decision,
//! late units held per group, coarsening to `max_allocations`, and the allocation of a
//! rounded quantity over the groups.

use std::collections::BTreeMap;

use h3o::CellIndex;

use super::StateConfig;
use super::decide::Unit;
use super::model::{CellState, Group, Plan};

/// Whether a figure of `units` from `stores` stores, whose largest store is bounded by
/// `top`, may be published: at least `k` stores and no store above the dominance share.
pub(crate) fn publishable(stores: i32, units: i64, top: i64, cfg: &StateConfig) -> bool {
    stores >= cfg.k
        && (cfg.dominance >= 1.0 || units <= 0 || top as f64 <= cfg.dominance * units as f64)
}

/// The group of a warehouse's cell: the finest of `regions` containing its region.
pub(crate) fn group_of(cell: &CellState, regions: &BTreeMap<CellIndex, usize>) -> Option<usize> {
    let mut c = cell.index()?;
    loop {
        if let Some(i) = regions.get(&c) {
            return Some(*i);
        }
        c = c.resolution().pred().and_then(|r| c.parent(r))?;
    }
}

/// A plan's groups with their members now: a per-region plan of the previous release is
/// one group (its members); a warehouse plan's groups are its allocations' regions, each
/// with the warehouse's cells under it (finest region first).
pub(crate) fn grouping(plan: &Plan, cells: &BTreeMap<String, CellState>) -> Vec<Group> {
    if !plan.is_warehouse_plan() {
        return vec![Group { region: plan.signal.region.clone(), members: plan.members.clone() }];
    }
    let mut groups: Vec<Group> = plan
        .signal
        .allocations
        .iter()
        .map(|a| Group { region: a.region.clone(), members: Vec::new() })
        .collect();
    let regions = allocation_regions(plan);
    let warehouse = plan.signal.region.as_str();
    for (k, c) in cells.iter().filter(|(_, c)| c.warehouse == warehouse) {
        if let Some(i) = group_of(c, &regions) {
            groups[i].members.push(k.clone());
        }
    }
    groups
}

/// Whether `plan` covers the cell `key`.
pub(crate) fn covers(plan: &Plan, key: &str, cell: &CellState) -> bool {
    if !plan.is_warehouse_plan() {
        return plan.members.iter().any(|m| m == key);
    }
    if plan.signal.region != cell.warehouse {
        return false;
    }
    group_of(cell, &allocation_regions(plan)).is_some()
}

/// A warehouse plan's allocation regions and their indexes.
pub(crate) fn allocation_regions(plan: &Plan) -> BTreeMap<CellIndex, usize> {
    let allocations = plan.signal.allocations.iter().enumerate();
    allocations.filter_map(|(i, a)| Some((a.region.parse::<CellIndex>().ok()?, i))).collect()
}

/// What a cell would publish at a decision at `end`: its completed buckets since its last
/// decision, `(acc_from, end]`.
pub(crate) struct CellBasis {
    pub(crate) units: i64,
    /// Distinct stores (per grid the largest per-bucket count, summed): a lower bound.
    pub(crate) stores: i32,
    /// The bound on one store's units (the largest grid's).
    pub(crate) top: i64,
}

/// The basis of cell `c` at `end`. Buckets after `end` (a faster aggregator partition's)
/// are not in it; a grid whose buckets were pruned (older than `revision_retention_ms`)
/// counts with its accumulation when none of it is after `end`, else not at all.
pub(crate) fn cell_basis(
    c: &CellState,
    grids: &BTreeMap<String, Vec<super::model::GridBucket>>,
    end: i64,
    bucket: i64,
) -> CellBasis {
    let mut b = CellBasis { units: c.sum_between(c.acc_from, end, bucket), stores: 0, top: 0 };
    for (g, acc_stores) in &c.acc_stores {
        let kept = grids.get(g).map(Vec::as_slice).unwrap_or_default();
        let inside = kept.iter().filter(|x| c.acc_from < x.end && x.end <= end);
        let (mut stores, mut top, mut any) = (0, 0, false);
        for x in inside {
            stores = stores.max(x.stores);
            top += super::model::top_bound(x.net, x.stores);
            any = true;
        }
        if !any && !kept.iter().any(|x| x.end > end) {
            (stores, top) = (*acc_stores, c.acc_top.get(g).copied().unwrap_or(0));
        }
        b.stores += stores;
        b.top = b.top.max(top);
    }
    b
}

/// Holds a late change of `delta` units in cell `cell` for plan `plan` (published with its
/// next revision, or its group's next publishable change).
pub(crate) fn add_late(plan: &mut Plan, cell: &CellState, delta: i64) {
    let n = plan.signal.allocations.len().max(1);
    plan.held.resize(n, 0);
    let i = if plan.is_warehouse_plan() {
        group_of(cell, &allocation_regions(plan)).unwrap_or(0)
    } else {
        0
    };
    plan.held[i] += delta;
    plan.revise_pending = true;
}

/// Coarsens `units` (merging those that share a parent) until at most `max` remain or
/// they reach `min_res`.
pub(crate) fn coarsen(mut units: Vec<Unit>, max: usize, min_res: h3o::Resolution) -> Vec<Unit> {
    while units.len() > max {
        let Some(res) = units.iter().map(|u| u.region.resolution()).max() else { break };
        let Some(up) = res.pred().filter(|_| res > min_res) else { break };
        let mut merged: BTreeMap<CellIndex, Unit> = BTreeMap::new();
        for u in units {
            let region = if u.region.resolution() == res {
                u.region.parent(up).unwrap_or(u.region)
            } else {
                u.region
            };
            u.merge_into(region, &mut merged);
        }
        units = merged.into_values().collect();
    }
    units
}

/// `total` split over `weights` in proportion (largest remainder; equal shares when the
/// weights are not positive).
pub(crate) fn allocate(total: i64, weights: &[f64]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    let share = |w: f64| if sum > 0.0 { w.max(0.0) / sum } else { 1.0 / weights.len() as f64 };
    let exact: Vec<f64> = weights.iter().map(|w| share(*w) * total as f64).collect();
    let mut out: Vec<i64> = exact.iter().map(|x| x.floor() as i64).collect();
    let mut left = total - out.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| {
        (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor()))
    });
    for i in order.iter().cycle().take(weights.len() * 2) {
        if left <= 0 {
            break;
        }
        out[*i] += 1;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocation_sums_to_the_total_in_proportion() {
        assert_eq!(allocate(100, &[3.0, 1.0]), vec![75, 25]);
        assert_eq!(allocate(10, &[1.0, 1.0, 1.0]).iter().sum::<i64>(), 10);
        assert_eq!(allocate(5, &[0.0, 0.0]), vec![3, 2]);
        assert!(allocate(7, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn allocations_always_sum_and_stay_within_one_unit_of_the_exact_share(
            total in 0i64..100_000,
            weights in proptest::collection::vec(0.0f64..1e4, 1..40),
        ) {
            let out = allocate(total, &weights);
            prop_assert_eq!(out.iter().sum::<i64>(), total);
            let sum: f64 = weights.iter().sum();
            for (o, w) in out.iter().zip(&weights) {
                let exact = if sum > 0.0 { w / sum * total as f64 } else { total as f64 / weights.len() as f64 };
                prop_assert!((*o as f64 - exact).abs() < 1.0 + 1e-9, "{o} vs {exact}");
            }
        }
    }
}

//! The planning state's data: per SKU its (warehouse, region) cells with their bucket
//! series and accumulation, the latest figures per grid and bucket, and the plans still
//! revisable; and the partition's clock as the first changelog format wrote it (`Meta`).

use std::collections::{BTreeMap, VecDeque};

use nearfield_schemas::{PlanReason, PlanSignal};
use serde::{Deserialize, Serialize};

/// One (warehouse, region) of a SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CellState {
    pub(crate) warehouse: String,
    pub(crate) region: String,
    /// End of the newest bucket in `series`.
    pub(crate) series_end: i64,
    /// Net units per bucket, oldest first, ending at `series_end`.
    pub(crate) series: VecDeque<i64>,
    /// Net units of buckets ending after `acc_from`, not yet in a plan.
    pub(crate) acc_units: i64,
    pub(crate) acc_from: i64,
    pub(crate) acc_to: i64,
    /// Distinct stores per grid (largest per-bucket count) in the accumulation.
    pub(crate) acc_stores: BTreeMap<String, i32>,
    /// Per grid, a bound on one store's net units in the accumulation (the dominance
    /// rule): the sum over its buckets of `top_bound`.
    #[serde(default)]
    pub(crate) acc_top: BTreeMap<String, i64>,
    /// Recent buckets that received windows after they were completed (late uploads): the
    /// coverage of their closing no longer says what is missing, so they are not scaled.
    #[serde(default)]
    pub(crate) late: std::collections::BTreeSet<i64>,
    /// `region` parsed (not persisted: derived).
    #[serde(skip)]
    pub(crate) index: Option<h3o::CellIndex>,
}

/// A bound on the net units of a grid's largest store in one bucket: what is left of
/// `net` when every other store that sold sold one unit.
pub(crate) fn top_bound(net: i64, stores: i32) -> i64 {
    (net - i64::from(stores.max(1) - 1)).max(0)
}

impl CellState {
    pub(crate) fn new(warehouse: &str, region: String) -> Self {
        CellState {
            warehouse: warehouse.to_string(),
            series_end: i64::MIN,
            series: VecDeque::new(),
            acc_units: 0,
            acc_from: i64::MIN,
            acc_to: i64::MIN,
            acc_stores: BTreeMap::new(),
            acc_top: BTreeMap::new(),
            late: std::collections::BTreeSet::new(),
            index: region.parse().ok(),
            region,
        }
    }

    /// The region as an H3 cell.
    pub(crate) fn index(&self) -> Option<h3o::CellIndex> {
        self.index.or_else(|| self.region.parse().ok())
    }

    pub(crate) fn series_start(&self, bucket: i64) -> i64 {
        self.series_end - (self.series.len() as i64 - 1) * bucket
    }

    /// Net units of the buckets ending in `(from, to]`.
    pub(crate) fn sum_between(&self, from: i64, to: i64, bucket: i64) -> i64 {
        let start = self.series_start(bucket);
        self.series
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let e = start + *i as i64 * bucket;
                from < e && e <= to
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Adds `delta` to the bucket ending at `end`; the ends of non-zero buckets that fell
    /// out of the `history` go to `dropped`.
    pub(crate) fn add(
        &mut self,
        end: i64,
        delta: i64,
        (bucket, history): (i64, usize),
        dropped: &mut Vec<i64>,
    ) {
        if self.series.is_empty() {
            self.series_end = end;
            self.series.push_back(delta);
        } else if end > self.series_end {
            let gap = (end - self.series_end) / bucket;
            for _ in 1..gap.min(history as i64 + 1) {
                self.series.push_back(0);
            }
            self.series.push_back(delta);
            self.series_end = end;
        } else {
            let back = ((self.series_end - end) / bucket) as usize;
            let len = self.series.len();
            if back < len {
                self.series[len - 1 - back] += delta;
            } else if back < history {
                for _ in len..back {
                    self.series.push_front(0);
                }
                self.series.push_front(delta);
            }
        }
        while self.series.len() > history {
            let start = self.series_start(bucket);
            if self.series.pop_front().is_some_and(|v| v != 0) {
                dropped.push(start);
            }
        }
    }
}

/// The figures of one grid in one bucket, as last received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GridBucket {
    pub(crate) end: i64,
    pub(crate) net: i64,
    pub(crate) stores: i32,
    pub(crate) reporting: i32,
    pub(crate) expected: i32,
    pub(crate) last_event_at: i64,
}

/// A plan sent and still revisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// The id of its first signal (its changelog key; revisions keep it).
    #[serde(default)]
    pub(crate) root: String,
    /// The latest signal of this plan (after its revisions).
    pub(crate) signal: PlanSignal,
    /// The rule that made the first signal.
    pub(crate) base_reason: PlanReason,
    /// Cell keys rolled up into a per-region plan of the previous release (a warehouse
    /// plan's cells are those under its allocations' regions).
    pub(crate) members: Vec<String>,
    /// Buckets ending in (basis_from, basis_to] are the plan's observation basis.
    pub(crate) basis_from: i64,
    pub(crate) basis_to: i64,
    /// The shape of the SKU's demand the plan was forecast with (its revisions reuse it).
    #[serde(default)]
    pub(crate) prior: Option<crate::count_model::Prior>,
    /// Stores behind the late changes not yet published (a revision needs `privacy_k`).
    #[serde(default)]
    pub(crate) pending_stores: i32,
    /// Late units applied to the plan's basis and not yet published, per allocation (one
    /// entry for a per-region plan): they go out with a revision or a group's next
    /// publishable change, never alone.
    #[serde(default)]
    pub(crate) held: Vec<i64>,
    /// Late data arrived for the plan's basis: it is re-decided when the demand clock next
    /// moves (so a burst of late windows is one re-decision, at a point the input decides).
    #[serde(default)]
    pub(crate) revise_pending: bool,
}

/// A set of cells whose demand is published as one figure (an allocation): for a
/// warehouse plan, the warehouse's cells whose finest group region contains them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) region: String,
    pub(crate) members: Vec<String>,
}

impl Plan {
    /// Whether this is a warehouse plan (its region is the warehouse, its regions are in
    /// the allocations) rather than a per-region plan of the previous release.
    pub(crate) fn is_warehouse_plan(&self) -> bool {
        self.signal.warehouse_id.as_deref() == Some(self.signal.region.as_str())
    }

    /// The id of the plan's first signal, recomputed from the latest one.
    pub(crate) fn root_id(&self) -> String {
        let s = &self.signal;
        super::decide::signal_id(
            &s.supplier_id,
            &s.sku,
            s.warehouse_id.as_deref().unwrap_or_default(),
            &s.region,
            s.horizon_start,
            s.based_on_watermark,
            self.base_reason,
            0,
        )
    }
}

/// Everything about one SKU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SkuState {
    pub(crate) cells: BTreeMap<String, CellState>,
    pub(crate) grids: BTreeMap<String, Vec<GridBucket>>,
    pub(crate) plans: Vec<Plan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) watermark: i64,
    pub(crate) completed: i64,
}

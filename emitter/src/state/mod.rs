//! One input partition's planning state and the decisions made on it.
//!
//! `demand.v1` is keyed by SKU, so everything about a SKU lives in one partition. Per SKU
//! the state holds:
//! - **cells**: one per (warehouse, region) where the region is the grid's H3 parent at
//!   `region_resolution`: a series of net units per bucket (the forecast's history) and
//!   what accumulated since the cell's last plan (units, contributing stores per grid);
//! - **grids**: the last `DemandWindow` figures per grid and bucket, for the revision
//!   deltas and completeness (`stores_reporting` / `stores_expected`);
//! - **plans**: the signals still revisable (their basis within `revision_retention_ms`).
//!
//! Time is the demand clock (`clock`): the lowest watermark over the aggregator
//! partitions whose windows arrive here, so a bucket is decided only once every partition
//! feeding it has closed it (a partition silent for `source_idle_ms` stops holding the
//! clock back). A bucket is complete once the clock passes its end + `settle_ms`; each
//! completion decides, per (supplier, SKU, warehouse), whether the horizon's one plan is
//! made or superseded (SURGE > THRESHOLD > SCHEDULED), with its regions' allocations. A
//! window arriving for a bucket a plan already used is held for that plan, which is
//! re-decided when the clock next moves: a changed recommendation is a REVISION that
//! supersedes it.
//!
//! Everything is decided from the input records in partition order (the wall clock only
//! stamps `generated_at`, lets silent sources go and, after `idle_advance_ms` of silence
//! of the whole partition, moves the clock), so a replay from the last commit makes
//! exactly the same decisions with the same ids.
//!
//! What changed since the last flush is tracked per unit of state (a cell, one of its
//! buckets, a grid's bucket, a plan) and written as one small changelog record each.
//!
//! # Layout
//! - this file: applying windows, the clock, completing buckets, pruning, flushing;
//! - `model`: the state's data types;
//! - `warehouse`: the warehouse decision (rules, quantities, the plan) and revisions;
//! - `groups`: what may be published (privacy, dominance), a plan's fixed grouping, a
//!   cell's basis, held late units, coarsening, allocation;
//! - `decide`: the privacy merge, series (completeness-aware), forecasts, completeness,
//!   rounding, signal ids;
//! - `tally`: what the state reports for metrics;
//! - `clock`: the per-source clocks and their minimum;
//! - `handover`: which horizons this emitter plans (a handover between deployments);
//! - `changelog`: the changelog records (format 3, binary, per unit; formats 2 and 1 read) and
//!   restore;
//! - `tests`: unit tests and the restore-equivalence property test;
//! - `changelog_tests`: record sizes, goldens, format-1/2 migration, the clock;
//! - `privacy_tests`, `quantity_tests`, `completeness_tests`: the differencing attack,
//!   plans against what sold, offline shops.

mod changelog;
#[cfg(test)]
mod changelog_tests;
mod clock;
#[cfg(test)]
mod completeness_tests;
mod decide;
mod groups;
mod handover;
mod model;
#[cfg(test)]
mod privacy_tests;
#[cfg(test)]
mod quantity_tests;
mod tally;
#[cfg(test)]
mod tests;
mod warehouse;

use std::collections::{BTreeMap, BTreeSet};

use nearfield_schemas::Codec;
use std::sync::Arc;

use h3o::{CellIndex, Resolution};
use nearfield_schemas::{DemandWindow, PlanSignal};

use crate::catalog::Catalog;
use crate::config::EmitConfig;
use crate::count_model::Prior;
use crate::coverage::Coverage;
use crate::forecast;

pub use changelog::RestoreError;
use changelog::{Dirty, DirtySet, Restoring};
use clock::Clock;
use decide::align_down;
pub use decide::{recommend, signal_id};
pub use handover::{Conflict, Horizons};
use model::{CellState, GridBucket, SkuState};
pub use tally::{StateSize, Tally};
use warehouse::{Revised, decide_warehouse, revise};

/// The settings the state machine uses.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub bucket: i64,
    pub settle: i64,
    pub horizon: i64,
    pub schedule: i64,
    pub history: usize,
    pub forecast: forecast::Params,
    pub k: i32,
    pub region_res: Resolution,
    pub min_region_res: Resolution,
    pub surge_factor: f64,
    pub surge_min_units: i64,
    pub firm_coverage: f64,
    pub retention: i64,
    pub idle_advance: i64,
    pub source_idle: i64,
    /// The frozen time fence: FIRM only for a horizon ending within this of the decision.
    pub frozen: i64,
    /// Per supplier, its own fence.
    pub supplier_frozen: BTreeMap<String, i64>,
    /// The quantile of demand over lead time + horizon a recommendation covers.
    pub service_level: f64,
    /// Per supplier, its own service level.
    pub supplier_service_level: BTreeMap<String, f64>,
    /// No store above this share of a published figure.
    pub dominance: f64,
    /// Regions of one warehouse plan at most (coarser beyond).
    pub max_allocations: usize,
    /// A revision needs the recommendation to move by at least this share.
    pub revision_tolerance: f64,
    /// The horizons this emitter plans (all, unless handing over: `handover`).
    pub horizons: Horizons,
}

impl StateConfig {
    /// The frozen time fence of `supplier`.
    pub fn frozen_for(&self, supplier: &str) -> i64 {
        self.supplier_frozen.get(supplier).copied().unwrap_or(self.frozen)
    }

    /// The service level of `supplier`.
    pub fn service_level_for(&self, supplier: &str) -> f64 {
        self.supplier_service_level.get(supplier).copied().unwrap_or(self.service_level)
    }
}

impl StateConfig {
    /// From validated settings.
    pub fn from_config(c: &EmitConfig) -> Result<Self, crate::config::ConfigError> {
        let res = |setting, r: u8| {
            Resolution::try_from(r)
                .map_err(|e| crate::config::ConfigError { setting, rule: e.to_string() })
        };
        Ok(StateConfig {
            bucket: c.bucket_ms,
            settle: c.settle_ms,
            horizon: c.horizon_ms,
            schedule: c.schedule_ms,
            history: c.history_buckets,
            forecast: c.forecast(),
            k: c.privacy_k,
            region_res: res("region_resolution", c.region_resolution)?,
            min_region_res: res("min_region_resolution", c.min_region_resolution)?,
            surge_factor: c.surge_factor,
            surge_min_units: c.surge_min_units,
            firm_coverage: c.firm_coverage,
            retention: c.revision_retention_ms,
            idle_advance: c.idle_advance_ms,
            source_idle: c.source_idle_ms,
            frozen: c.frozen_ms,
            supplier_frozen: c.supplier_frozen_ms.clone(),
            service_level: c.service_level,
            supplier_service_level: c.supplier_service_level.clone(),
            dominance: c.dominance_share,
            max_allocations: c.max_allocations,
            revision_tolerance: c.revision_tolerance,
            horizons: Horizons::new(c.horizons_from_ms, c.horizons_before_ms),
        })
    }
}

/// What the state reads besides its input records: the catalog, and the coverage book
/// when the emitter follows `coverage.v1` (without it, completeness comes from the demand
/// windows alone).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub catalog: &'a Catalog,
    pub coverage: Option<&'a Coverage>,
}

impl<'a> From<&'a Catalog> for Side<'a> {
    fn from(catalog: &'a Catalog) -> Self {
        Side { catalog, coverage: None }
    }
}

/// What became of one `DemandWindow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted towards its region's next plan.
    Applied,
    /// A late correction applied to the accumulation or to a plan already sent.
    Revised,
    /// Another window size than `bucket_ms`, or not aligned to it (it only moves the clock).
    OtherSize,
    /// A provisional (not final) window (it only moves the clock).
    Provisional,
    /// The SKU is not in the catalog.
    UnknownSku,
    /// No warehouse of the SKU serves the grid.
    OutsideAreas,
    /// The grid is not an H3 cell.
    InvalidGrid,
    /// Window bounds or watermark outside years 1970..=9999, or end not after start.
    InvalidTime,
    /// Older than `revision_retention_ms` behind the clock: nothing left to revise.
    TooOld,
}

impl Outcome {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Revised => "revised",
            Outcome::OtherSize => "other_size",
            Outcome::Provisional => "provisional",
            Outcome::UnknownSku => "unknown_sku",
            Outcome::OutsideAreas => "outside_areas",
            Outcome::InvalidGrid => "invalid_grid",
            Outcome::InvalidTime => "invalid_time",
            Outcome::TooOld => "too_old",
        }
    }
}

/// What a flush hands to the transaction.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Changelog records (key, value; `None` deletes).
    pub changelog: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Signals decided since the last flush, in decision order.
    pub signals: Vec<PlanSignal>,
}

/// A SKU with less history than this many seasons (a week of days) is young: its prior is
/// its category's.
const YOUNG_BUCKETS: usize = 7;

/// How long a cell remembers that a bucket received late windows (the coverage book keeps
/// fewer buckets by default, `coverage_keep_buckets` = 24).
const LATE_KEEP_BUCKETS: i64 = 48;

/// 9999-12-31T23:59:59.999Z: times beyond are refused, so the arithmetic cannot overflow.
const MAX_TIME: i64 = 253_402_300_799_999;

/// One partition's state.
#[derive(Debug)]
pub struct PartitionState {
    cfg: Arc<StateConfig>,
    skus: BTreeMap<String, SkuState>,
    /// The demand clock: the minimum over the sources' clocks, never going back.
    watermark: i64,
    clock: Clock,
    /// End of the last completed bucket (`i64::MIN` before the first window).
    completed: i64,
    /// Units of state changed since the last flush.
    dirty: DirtySet,
    meta_dirty: bool,
    restoring: Restoring,
    codec: Codec,
    signals: Vec<PlanSignal>,
    last_input_wall: i64,
    /// A plan restored for a horizon this emitter does not plan (`handover`).
    conflict: Option<Conflict>,
    /// Metrics since the last flush.
    pub tally: Tally,
}
impl PartitionState {
    /// Empty state.
    pub fn new(cfg: Arc<StateConfig>) -> Self {
        PartitionState {
            cfg,
            skus: BTreeMap::new(),
            watermark: i64::MIN,
            clock: Clock::default(),
            completed: i64::MIN,
            dirty: DirtySet::new(),
            meta_dirty: false,
            restoring: Restoring::default(),
            codec: Codec::single_object(),
            signals: Vec::new(),
            last_input_wall: i64::MIN,
            conflict: None,
            tally: Tally::default(),
        }
    }

    /// The demand clock (`i64::MIN` before any window).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// A plan restored for a horizon this emitter does not plan: the stage must not go
    /// on (`handover`).
    pub fn conflict(&self) -> Option<&Conflict> {
        self.conflict.as_ref()
    }

    /// End of the last completed bucket.
    pub fn completed(&self) -> i64 {
        self.completed
    }

    /// Sizes for the gauges.
    pub fn size(&self) -> StateSize {
        let (sources, idle_sources) = self.clock.counts();
        let mut s =
            StateSize { skus: self.skus.len(), sources, idle_sources, ..StateSize::default() };
        for sku in self.skus.values() {
            s.cells += sku.cells.len();
            s.plans += sku.plans.len();
            s.bytes += sku.cells.values().map(|c| 160 + c.series.len() * 8).sum::<usize>()
                + sku.grids.values().map(|g| 64 + g.len() * 48).sum::<usize>()
                + sku.plans.len() * 600;
        }
        s
    }

    /// Applies one `DemandWindow` read at wall-clock `now`, then completes the buckets
    /// the clock passed (deciding on each).
    pub fn apply<'a>(&mut self, w: &DemandWindow, side: impl Into<Side<'a>>, now: i64) -> Outcome {
        let side = side.into();
        self.last_input_wall = now;
        let sane = |t: i64| (0..=MAX_TIME).contains(&t);
        if !sane(w.window_start) || !sane(w.window_end) || !sane(w.watermark) {
            return Outcome::InvalidTime;
        }
        if w.window_end <= w.window_start {
            return Outcome::InvalidTime;
        }
        let outcome = self.apply_data(w, side);
        // A record without a watermark (a replayed correction) moves no clock.
        let before = self.watermark;
        if w.watermark > 0 {
            let t = if w.is_final { w.watermark.max(w.window_end) } else { w.watermark };
            self.clock.observe(w.source_partition, t, now);
            self.meta_dirty = true;
            self.follow_sources();
        }
        if self.watermark > before {
            self.revise_pending(side, now);
        }
        self.advance(side, now);
        outcome
    }

    /// Moves the demand clock to the slowest source still holding it.
    fn follow_sources(&mut self) {
        if let Some(min) = self.clock.min_active()
            && min > self.watermark
        {
            self.watermark = min;
        }
    }

    fn apply_data(&mut self, w: &DemandWindow, side: Side<'_>) -> Outcome {
        let catalog = side.catalog;
        let cfg = Arc::clone(&self.cfg);
        if w.window_end - w.window_start != cfg.bucket || w.window_end % cfg.bucket != 0 {
            return Outcome::OtherSize;
        }
        if !w.is_final {
            return Outcome::Provisional;
        }
        let Some(item) = catalog.get(&w.sku) else { return Outcome::UnknownSku };
        let Ok(grid) = w.grid_id.parse::<CellIndex>() else { return Outcome::InvalidGrid };
        let Some(warehouse) = item.warehouse_of(grid) else { return Outcome::OutsideAreas };
        let end = w.window_end;
        if self.completed != i64::MIN && end <= self.completed - cfg.retention {
            return Outcome::TooOld;
        }
        if self.completed == i64::MIN {
            self.completed = end - cfg.bucket;
            self.meta_dirty = true;
        }
        let region = if grid.resolution() > cfg.region_res {
            grid.parent(cfg.region_res).unwrap_or(grid)
        } else {
            grid
        };
        let key = format!("{warehouse}|{region}");
        let sku = self.skus.entry(w.sku.clone()).or_default();
        self.dirty.insert(Dirty::Grid(w.sku.clone(), w.grid_id.clone(), end));
        let buckets = sku.grids.entry(w.grid_id.clone()).or_default();
        let fresh = GridBucket {
            end,
            net: w.net_units,
            stores: w.distinct_stores,
            reporting: w.stores_reporting,
            expected: w.stores_expected,
            last_event_at: w.last_event_at,
        };
        let (old, old_stores) = match buckets.iter_mut().find(|b| b.end == end) {
            Some(b) => {
                let o = std::mem::replace(b, fresh);
                (o.net, o.stores)
            }
            None => {
                let at = buckets.partition_point(|b| b.end < end);
                buckets.insert(at, fresh);
                (0, 0)
            }
        };
        let top_delta = model::top_bound(w.net_units, w.distinct_stores)
            - if old_stores == 0 && old == 0 { 0 } else { model::top_bound(old, old_stores) };
        // The stores behind this change, a lower bound: a grid new to the bucket brings
        // all its stores; a correction at least one.
        let changed_stores = if old_stores == 0 {
            w.distinct_stores.max(1)
        } else {
            (w.distinct_stores - old_stores).max(1)
        };
        let delta = w.net_units - old;
        let cell = sku
            .cells
            .entry(key.clone())
            .or_insert_with(|| CellState::new(warehouse, region.to_string()));
        let mut dropped = Vec::new();
        cell.add(end, delta, (cfg.bucket, cfg.history), &mut dropped);
        for e in dropped.into_iter().chain([end]) {
            self.dirty.insert(Dirty::Bucket(w.sku.clone(), key.clone(), e));
        }
        if end <= self.completed {
            // A late upload: the coverage of the bucket's closing no longer holds.
            cell.late.insert(end);
        }
        self.dirty.insert(Dirty::Cell(w.sku.clone(), key.clone()));
        if end > cell.acc_from {
            cell.acc_units += delta;
            let s = cell.acc_stores.entry(w.grid_id.clone()).or_default();
            *s = (*s).max(w.distinct_stores);
            *cell.acc_top.entry(w.grid_id.clone()).or_default() += top_delta;
            cell.acc_to = cell.acc_to.max(end);
            return if w.revision > 0 { Outcome::Revised } else { Outcome::Applied };
        }
        // The bucket is in the basis of a plan already sent: revise it.
        let Some(idx) = sku.plans.iter().rposition(|p| {
            p.basis_from < end && end <= p.basis_to && groups::covers(p, &key, cell)
        }) else {
            return Outcome::TooOld;
        };
        groups::add_late(&mut sku.plans[idx], cell, delta);
        sku.plans[idx].pending_stores =
            sku.plans[idx].pending_stores.saturating_add(changed_stores);
        self.dirty.insert(Dirty::Plan(w.sku.clone(), sku.plans[idx].root.clone()));
        Outcome::Revised
    }

    /// Re-decides the plans late data arrived for (when the demand clock moves: a burst of
    /// late windows is one re-decision, at a point the input decides).
    fn revise_pending(&mut self, side: Side<'_>, now: i64) {
        let cfg = Arc::clone(&self.cfg);
        for (sku_id, sku) in &mut self.skus {
            let Some(item) = side.catalog.get(sku_id) else { continue };
            for idx in 0..sku.plans.len() {
                if !std::mem::take(&mut sku.plans[idx].revise_pending) {
                    continue;
                }
                self.dirty.insert(Dirty::Plan(sku_id.clone(), sku.plans[idx].root.clone()));
                let before = &sku.plans[idx].signal;
                let (units, first_of_firm) = (
                    before.recommended_units,
                    before.revision == 0 && before.firmness == nearfield_schemas::Firmness::Firm,
                );
                match revise(sku, idx, (&item, side.coverage), &cfg, now) {
                    Revised::Sent(sig) => {
                        self.tally.revision_units += sig.recommended_units.abs_diff(units);
                        self.tally.firm_plans_revised += u64::from(first_of_firm);
                        self.signals.push(*sig);
                    }
                    Revised::Held => self.tally.revisions_held += 1,
                    Revised::Absorbed => self.tally.revisions_absorbed += 1,
                }
            }
        }
    }

    /// Completes every bucket the clock passed.
    fn advance(&mut self, side: Side<'_>, now: i64) {
        if self.completed == i64::MIN || self.watermark == i64::MIN {
            return;
        }
        let cfg = Arc::clone(&self.cfg);
        let horizon = self.watermark - cfg.settle;
        // After a long silence, only the last `history` buckets can matter.
        let skip_to = align_down(horizon, cfg.bucket) - cfg.history as i64 * cfg.bucket;
        if skip_to > self.completed {
            self.completed = skip_to;
            self.meta_dirty = true;
        }
        while self.completed + cfg.bucket <= horizon {
            let end = self.completed + cfg.bucket;
            self.decide(end, side, now);
            self.completed = end;
            self.meta_dirty = true;
            self.prune();
        }
    }

    /// Decides, for bucket `end`, which regions get a plan.
    fn decide(&mut self, end: i64, side: Side<'_>, now: i64) {
        let cfg = Arc::clone(&self.cfg);
        let category_priors = self.category_priors(end, side);
        for (sku_id, sku) in &mut self.skus {
            if sku.cells.values().all(|c| c.acc_stores.is_empty()) {
                continue;
            }
            let Some(item) = side.catalog.get(sku_id) else { continue };
            let warehouses: BTreeSet<String> = sku
                .cells
                .values()
                .filter(|c| !c.acc_stores.is_empty())
                .map(|c| c.warehouse.clone())
                .collect();
            // A young SKU (under a week of history) borrows its category's shape.
            let prior = match category_priors.get(&item.category) {
                Some(Some(p)) if decide::history_len(sku) < YOUNG_BUCKETS * cfg.forecast.season => {
                    Some(p.clone())
                }
                _ => decide::sku_prior(sku, end, &cfg, side.coverage),
            };
            for warehouse in warehouses {
                let how =
                    decide::Basis { end, now, coverage: side.coverage, prior: prior.as_ref() };
                let Some((sig, touched)) =
                    decide_warehouse(sku, &warehouse, how, &item, &cfg, &mut self.tally)
                else {
                    continue;
                };
                let root = sku.plans.iter().rev().find(|p| p.signal.signal_id == sig.signal_id);
                let root = root.map_or_else(|| sig.signal_id.clone(), |p| p.root.clone());
                self.dirty.insert(Dirty::Plan(sku_id.clone(), root));
                for m in touched {
                    self.dirty.insert(Dirty::Cell(sku_id.clone(), m));
                }
                self.signals.push(sig);
            }
        }
    }

    /// The priors of the categories of young SKUs about to be decided: the shape of the
    /// sum of their category's other SKUs in this partition with a week of history.
    fn category_priors(&self, end: i64, side: Side<'_>) -> BTreeMap<String, Option<Prior>> {
        let season = self.cfg.forecast.season;
        let young = |s: &SkuState| decide::history_len(s) < YOUNG_BUCKETS * season;
        let wanted: BTreeSet<String> = self
            .skus
            .iter()
            .filter(|(_, s)| young(s) && s.cells.values().any(|c| !c.acc_stores.is_empty()))
            .filter_map(|(id, _)| side.catalog.get(id).map(|i| i.category.clone()))
            .collect();
        wanted
            .into_iter()
            .map(|category| {
                let peers: Vec<Vec<f64>> = self
                    .skus
                    .iter()
                    .filter(|(id, s)| {
                        !young(s) && side.catalog.get(id).is_some_and(|i| i.category == category)
                    })
                    .map(|(_, s)| {
                        let keys: Vec<String> = s.cells.keys().cloned().collect();
                        decide::unit_series(s, &keys, end, &self.cfg, side.coverage)
                    })
                    .collect();
                let total = warehouse::sum_aligned(peers.iter());
                let prior = (!total.is_empty())
                    .then(|| Prior::of(&decide::history(&total, end, &self.cfg)));
                (category, prior)
            })
            .collect()
    }

    /// Drops what can no longer be revised or forecast with.
    fn prune(&mut self) {
        let cfg = Arc::clone(&self.cfg);
        let horizon = self.completed - cfg.retention;
        let oldest_series = self.completed - (cfg.history as i64 - 1) * cfg.bucket;
        let oldest_late = self.completed - LATE_KEEP_BUCKETS * cfg.bucket;
        let dirty = &mut self.dirty;
        let mut gone = Vec::new();
        for (id, sku) in &mut self.skus {
            let started = self.completed;
            sku.plans.retain(|p| {
                // Revisable while its basis is recent; current (superseded by a decision for
                // the same horizon) until its horizon starts.
                let keep = p.basis_to > horizon || p.signal.horizon_start > started;
                if !keep {
                    dirty.insert(Dirty::Plan(id.clone(), p.root.clone()));
                }
                keep
            });
            sku.grids.retain(|g, b| {
                b.retain(|x| {
                    let keep = x.end > horizon;
                    if !keep {
                        dirty.insert(Dirty::Grid(id.clone(), g.clone(), x.end));
                    }
                    keep
                });
                !b.is_empty()
            });
            let planned: BTreeSet<&String> = sku.plans.iter().flat_map(|p| &p.members).collect();
            sku.cells.retain(|key, c| {
                let mut changed = false;
                while !c.series.is_empty() && c.series_start(cfg.bucket) < oldest_series {
                    let start = c.series_start(cfg.bucket);
                    if c.series.pop_front().is_some_and(|v| v != 0) {
                        dirty.insert(Dirty::Bucket(id.clone(), key.clone(), start));
                    }
                    changed = true;
                }
                let before = c.late.len();
                c.late.retain(|e| *e > oldest_late);
                changed |= c.late.len() != before;
                let idle = c.series.iter().all(|v| *v == 0)
                    && c.acc_units == 0
                    && c.acc_stores.is_empty()
                    && !planned.contains(key);
                if changed || idle {
                    dirty.insert(Dirty::Cell(id.clone(), key.clone()));
                }
                !idle
            });
            if sku.cells.is_empty() && sku.grids.is_empty() && sku.plans.is_empty() {
                gone.push(id.clone());
            }
        }
        for id in gone {
            self.skus.remove(&id);
        }
    }

    /// Takes the changelog records of what changed and the signals decided since the last
    /// flush. First moves a silent partition's clock with the wall clock (see
    /// `idle_advance_ms`).
    pub fn flush<'a>(&mut self, now: i64, side: impl Into<Side<'a>>) -> Flushed {
        let side = side.into();
        let cfg = Arc::clone(&self.cfg);
        if cfg.idle_advance > 0
            && self.watermark != i64::MIN
            && self.last_input_wall != i64::MIN
            && now - self.last_input_wall >= cfg.idle_advance
            && now - cfg.idle_advance > self.watermark
        {
            self.watermark = now - cfg.idle_advance;
            self.meta_dirty = true;
            self.revise_pending(side, now);
            self.advance(side, now);
        }
        let idled = self.clock.idle_silent(now, cfg.source_idle);
        if idled > 0 {
            self.tally.sources_idled += idled;
            self.meta_dirty = true;
            let before = self.watermark;
            self.follow_sources();
            if self.watermark > before {
                self.revise_pending(side, now);
            }
            self.advance(side, now);
        }
        if std::mem::take(&mut self.meta_dirty) {
            self.dirty.insert(Dirty::Meta);
        }
        Flushed { signals: std::mem::take(&mut self.signals), changelog: self.changelog() }
    }
}

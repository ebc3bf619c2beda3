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
//! Time is the demand clock: the largest watermark (or end of a final window) seen on
//! the partition. A bucket is complete once the clock passes its end + `settle_ms`; each
//! completion decides, per (supplier, SKU, warehouse), which regions get a `PlanSignal`
//! (privacy floor first, then SURGE > THRESHOLD > SCHEDULED). A window arriving for a
//! bucket a plan already used is applied to that plan, which is re-decided at once: a
//! changed recommendation is a REVISION that supersedes it.
//!
//! Everything is decided from the input records in partition order (the wall clock only
//! stamps `generated_at` and, after `idle_advance_ms` of silence, moves the clock), so a
//! replay from the last commit makes exactly the same decisions with the same ids.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use h3o::{CellIndex, Resolution};
use nearfield_schemas::{DemandWindow, Firmness, PlanReason, PlanSignal};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Item};
use crate::config::EmitConfig;
use crate::forecast::{self, Model};

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
        })
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

/// One (warehouse, region) of a SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CellState {
    warehouse: String,
    region: String,
    /// End of the newest bucket in `series`.
    series_end: i64,
    /// Net units per bucket, oldest first, ending at `series_end`.
    series: VecDeque<i64>,
    /// Net units of buckets ending after `acc_from`, not yet in a plan.
    acc_units: i64,
    acc_from: i64,
    acc_to: i64,
    /// Distinct stores per grid (largest per-bucket count) in the accumulation.
    acc_stores: BTreeMap<String, i32>,
}

impl CellState {
    fn new(warehouse: &str, region: String) -> Self {
        CellState {
            warehouse: warehouse.to_string(),
            region,
            series_end: i64::MIN,
            series: VecDeque::new(),
            acc_units: 0,
            acc_from: i64::MIN,
            acc_to: i64::MIN,
            acc_stores: BTreeMap::new(),
        }
    }

    fn series_start(&self, bucket: i64) -> i64 {
        self.series_end - (self.series.len() as i64 - 1) * bucket
    }

    fn add(&mut self, end: i64, delta: i64, bucket: i64, history: usize) {
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
            self.series.pop_front();
        }
    }
}

/// The figures of one grid in one bucket, as last received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GridBucket {
    end: i64,
    net: i64,
    stores: i32,
    reporting: i32,
    expected: i32,
    last_event_at: i64,
}

/// A plan sent and still revisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    /// The latest signal of this plan (after its revisions).
    signal: PlanSignal,
    /// The rule that made the first signal.
    base_reason: PlanReason,
    /// Cell keys rolled up into the plan.
    members: Vec<String>,
    /// Buckets ending in (basis_from, basis_to] are the plan's observation basis.
    basis_from: i64,
    basis_to: i64,
}

/// Everything about one SKU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SkuState {
    cells: BTreeMap<String, CellState>,
    grids: BTreeMap<String, Vec<GridBucket>>,
    plans: Vec<Plan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Meta {
    watermark: i64,
    completed: i64,
}

/// What happened since the last flush, for metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// A rule would have fired for a region set thinner than the privacy floor.
    pub suppressed: u64,
    /// |actual − forecast| of one-step forecasts as buckets completed.
    pub forecast_abs_errors: Vec<f64>,
    /// How many of those actuals fell inside the interval.
    pub forecast_hits: u64,
    /// Revised windows that left a plan's recommendation unchanged.
    pub revisions_absorbed: u64,
    /// Milliseconds from the newest sale behind a signal to the signal.
    pub latencies_ms: Vec<i64>,
}

/// What a flush hands to the transaction.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Changelog records (key, value; `None` deletes).
    pub changelog: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Signals decided since the last flush, in decision order.
    pub signals: Vec<PlanSignal>,
}

/// Sizes for the gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateSize {
    pub skus: usize,
    pub cells: usize,
    pub plans: usize,
    pub bytes: usize,
}

/// A changelog record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog key {0:?} is not s/<sku> or m")]
    Key(String),
    #[error("changelog value: {0}")]
    Value(#[from] serde_json::Error),
}

const SKU_PREFIX: &[u8] = b"s/";
/// 9999-12-31T23:59:59.999Z: times beyond are refused, so the arithmetic cannot overflow.
const MAX_TIME: i64 = 253_402_300_799_999;
const META_KEY: &[u8] = b"m";

/// One partition's state.
#[derive(Debug)]
pub struct PartitionState {
    cfg: Arc<StateConfig>,
    skus: BTreeMap<String, SkuState>,
    watermark: i64,
    /// End of the last completed bucket (`i64::MIN` before the first window).
    completed: i64,
    dirty: BTreeSet<String>,
    meta_dirty: bool,
    signals: Vec<PlanSignal>,
    last_input_wall: i64,
    /// Metrics since the last flush.
    pub tally: Tally,
}

fn align_down(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size
}

fn align_up(t: i64, size: i64) -> i64 {
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
struct Unit {
    region: CellIndex,
    members: Vec<String>,
    stores: i32,
}

/// Merges regions thinner than `k` stores into their parents (finest first) until they
/// reach `k`; what is still thinner at `min_res` is suppressed.
fn privacy_merge(
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

impl PartitionState {
    /// Empty state.
    pub fn new(cfg: Arc<StateConfig>) -> Self {
        PartitionState {
            cfg,
            skus: BTreeMap::new(),
            watermark: i64::MIN,
            completed: i64::MIN,
            dirty: BTreeSet::new(),
            meta_dirty: false,
            signals: Vec::new(),
            last_input_wall: i64::MIN,
            tally: Tally::default(),
        }
    }

    /// The demand clock (`i64::MIN` before any window).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// End of the last completed bucket.
    pub fn completed(&self) -> i64 {
        self.completed
    }

    /// Sizes for the gauges.
    pub fn size(&self) -> StateSize {
        let mut s = StateSize { skus: self.skus.len(), ..StateSize::default() };
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
    pub fn apply(&mut self, w: &DemandWindow, catalog: &Catalog, now: i64) -> Outcome {
        self.last_input_wall = now;
        let sane = |t: i64| (0..=MAX_TIME).contains(&t);
        if !sane(w.window_start) || !sane(w.window_end) || !sane(w.watermark) {
            return Outcome::InvalidTime;
        }
        if w.window_end <= w.window_start {
            return Outcome::InvalidTime;
        }
        let outcome = self.apply_data(w, catalog, now);
        let clock = if w.is_final { w.watermark.max(w.window_end) } else { w.watermark };
        if clock > self.watermark {
            self.watermark = clock;
            self.meta_dirty = true;
        }
        self.advance(catalog, now);
        outcome
    }

    fn apply_data(&mut self, w: &DemandWindow, catalog: &Catalog, now: i64) -> Outcome {
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
        self.dirty.insert(w.sku.clone());
        let buckets = sku.grids.entry(w.grid_id.clone()).or_default();
        let fresh = GridBucket {
            end,
            net: w.net_units,
            stores: w.distinct_stores,
            reporting: w.stores_reporting,
            expected: w.stores_expected,
            last_event_at: w.last_event_at,
        };
        let old = match buckets.iter_mut().find(|b| b.end == end) {
            Some(b) => std::mem::replace(b, fresh).net,
            None => {
                let at = buckets.partition_point(|b| b.end < end);
                buckets.insert(at, fresh);
                0
            }
        };
        let delta = w.net_units - old;
        let cell = sku
            .cells
            .entry(key.clone())
            .or_insert_with(|| CellState::new(warehouse, region.to_string()));
        cell.add(end, delta, cfg.bucket, cfg.history);
        if end > cell.acc_from {
            cell.acc_units += delta;
            let s = cell.acc_stores.entry(w.grid_id.clone()).or_default();
            *s = (*s).max(w.distinct_stores);
            cell.acc_to = cell.acc_to.max(end);
            return if w.revision > 0 { Outcome::Revised } else { Outcome::Applied };
        }
        // The bucket is in the basis of a plan already sent: revise it.
        let Some(idx) = sku
            .plans
            .iter()
            .rposition(|p| p.members.contains(&key) && p.basis_from < end && end <= p.basis_to)
        else {
            return Outcome::TooOld;
        };
        sku.plans[idx].signal.observed_units += delta;
        if let Some(sig) = revise(sku, idx, &item, &cfg, now) {
            self.signals.push(sig);
        } else {
            self.tally.revisions_absorbed += 1;
        }
        Outcome::Revised
    }

    /// Completes every bucket the clock passed.
    fn advance(&mut self, catalog: &Catalog, now: i64) {
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
            self.decide(end, catalog, now);
            self.completed = end;
            self.meta_dirty = true;
            self.prune();
        }
    }

    /// Decides, for bucket `end`, which regions get a plan.
    fn decide(&mut self, end: i64, catalog: &Catalog, now: i64) {
        let cfg = Arc::clone(&self.cfg);
        for (sku_id, sku) in &mut self.skus {
            if sku.cells.values().all(|c| c.acc_stores.is_empty()) {
                continue;
            }
            let Some(item) = catalog.get(sku_id) else { continue };
            let mut by_warehouse: BTreeMap<String, Vec<(CellIndex, String, i32)>> = BTreeMap::new();
            for (key, c) in &sku.cells {
                if c.acc_stores.is_empty() {
                    continue;
                }
                let Ok(region) = c.region.parse::<CellIndex>() else { continue };
                by_warehouse.entry(c.warehouse.clone()).or_default().push((
                    region,
                    key.clone(),
                    c.acc_stores.values().sum(),
                ));
            }
            for (warehouse, cands) in by_warehouse {
                let (units, suppressed) = privacy_merge(cands, cfg.k, cfg.min_region_res);
                for unit in units {
                    if let Some(sig) =
                        decide_unit(sku, &unit, &warehouse, end, &item, &cfg, now, &mut self.tally)
                    {
                        self.signals.push(sig);
                        self.dirty.insert(sku_id.clone());
                    }
                }
                for unit in suppressed {
                    let acc: i64 = unit
                        .members
                        .iter()
                        .filter_map(|m| sku.cells.get(m))
                        .map(|c| c.acc_units)
                        .sum();
                    if acc >= item.moq || end % cfg.schedule == 0 {
                        self.tally.suppressed += 1;
                    }
                }
            }
        }
    }

    /// Drops what can no longer be revised or forecast with.
    fn prune(&mut self) {
        let cfg = Arc::clone(&self.cfg);
        let horizon = self.completed - cfg.retention;
        let oldest_series = self.completed - (cfg.history as i64 - 1) * cfg.bucket;
        let mut gone = Vec::new();
        for (id, sku) in &mut self.skus {
            let mut changed = false;
            let before = sku.plans.len();
            sku.plans.retain(|p| p.basis_to > horizon);
            changed |= sku.plans.len() != before;
            sku.grids.retain(|_, b| {
                let n = b.len();
                b.retain(|g| g.end > horizon);
                changed |= b.len() != n;
                !b.is_empty()
            });
            let plans = &sku.plans;
            sku.cells.retain(|key, c| {
                while !c.series.is_empty() && c.series_start(cfg.bucket) < oldest_series {
                    c.series.pop_front();
                    changed = true;
                }
                let idle = c.series.iter().all(|v| *v == 0)
                    && c.acc_units == 0
                    && c.acc_stores.is_empty()
                    && !plans.iter().any(|p| p.members.contains(key));
                changed |= idle;
                !idle
            });
            if changed {
                self.dirty.insert(id.clone());
            }
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
    pub fn flush(&mut self, now: i64, catalog: &Catalog) -> Flushed {
        let cfg = Arc::clone(&self.cfg);
        if cfg.idle_advance > 0
            && self.watermark != i64::MIN
            && self.last_input_wall != i64::MIN
            && now - self.last_input_wall >= cfg.idle_advance
            && now - cfg.idle_advance > self.watermark
        {
            self.watermark = now - cfg.idle_advance;
            self.meta_dirty = true;
            self.advance(catalog, now);
        }
        let mut out = Flushed { signals: std::mem::take(&mut self.signals), ..Flushed::default() };
        for id in std::mem::take(&mut self.dirty) {
            let mut key = SKU_PREFIX.to_vec();
            key.extend_from_slice(id.as_bytes());
            let value = self.skus.get(&id).and_then(|s| serde_json::to_vec(s).ok());
            out.changelog.push((key, value));
        }
        if std::mem::take(&mut self.meta_dirty) {
            let meta = Meta { watermark: self.watermark, completed: self.completed };
            if let Ok(v) = serde_json::to_vec(&meta) {
                out.changelog.push((META_KEY.to_vec(), Some(v)));
            }
        }
        out
    }

    /// Applies one changelog record while restoring.
    pub fn restore(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        now: i64,
    ) -> Result<(), RestoreError> {
        self.last_input_wall = now;
        if key == META_KEY {
            if let Some(v) = value {
                let m: Meta = serde_json::from_slice(v)?;
                self.watermark = m.watermark;
                self.completed = m.completed;
            }
            return Ok(());
        }
        let Some(id) = key.strip_prefix(SKU_PREFIX) else {
            return Err(RestoreError::Key(String::from_utf8_lossy(key).into_owned()));
        };
        let id = String::from_utf8_lossy(id).into_owned();
        match value {
            Some(v) => {
                self.skus.insert(id, serde_json::from_slice(v)?);
            }
            None => {
                self.skus.remove(&id);
            }
        }
        Ok(())
    }
}

/// The unit's net units per bucket, oldest first, ending at `end` (at most `history`).
fn unit_series(sku: &SkuState, members: &[String], end: i64, cfg: &StateConfig) -> Vec<f64> {
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

/// The buckets of a horizon as forecast steps after the bucket ending at `end`.
fn steps(end: i64, horizon_start: i64, horizon_end: i64, bucket: i64) -> (usize, usize) {
    (((horizon_start - end) / bucket) as usize + 1, ((horizon_end - end) / bucket) as usize)
}

fn need(reason: PlanReason, forecast: f64, observed: i64) -> f64 {
    match reason {
        PlanReason::Scheduled | PlanReason::Revision => forecast,
        // Demand already seen and not yet planned for is at least what to make.
        PlanReason::Threshold | PlanReason::Surge => forecast.max(observed as f64),
    }
}

/// (stores_reporting, stores_expected, latest occurred_at) of `grids` in (from, to].
fn completeness(sku: &SkuState, grids: &[String], from: i64, to: i64) -> (i32, i32, i64) {
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

/// Decides one unit at the completion of bucket `end`; on a signal, records the plan and
/// resets the members' accumulation.
#[allow(clippy::too_many_arguments)]
fn decide_unit(
    sku: &mut SkuState,
    unit: &Unit,
    warehouse: &str,
    end: i64,
    item: &Item,
    cfg: &StateConfig,
    now: i64,
    tally: &mut Tally,
) -> Option<PlanSignal> {
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
    let observed: i64 = members.iter().map(|c| c.acc_units).sum();
    let basis_from = members.iter().map(|c| c.acc_from).min().unwrap_or(i64::MIN);
    let basis_to = members.iter().map(|c| c.acc_to).max().unwrap_or(end).max(end);
    let reason = if surge {
        PlanReason::Surge
    } else if observed >= item.moq {
        PlanReason::Threshold
    } else if end % cfg.schedule == 0 {
        PlanReason::Scheduled
    } else {
        return None;
    };
    let model = Model::fit_best(&series, &cfg.forecast);
    let horizon_start = align_up(end + item.lead_time_ms, cfg.horizon).max(end + cfg.bucket);
    let horizon_end = horizon_start + cfg.horizon;
    let (k0, k1) = steps(end, horizon_start, horizon_end, cfg.bucket);
    let fc = model.horizon(k0, k1);
    let mut grids: Vec<String> =
        members.iter().flat_map(|c| c.acc_stores.keys().cloned()).collect();
    grids.sort();
    grids.dedup();
    let (reporting, expected, last_event) = completeness(sku, &grids, basis_from, basis_to);
    if last_event != i64::MIN {
        tally.latencies_ms.push(now - last_event);
    }
    let coverage = if expected > 0 { f64::from(reporting) / f64::from(expected) } else { 0.0 };
    let firmness = if coverage >= cfg.firm_coverage && n >= season {
        Firmness::Firm
    } else {
        Firmness::Planning
    };
    let region = unit.region.to_string();
    let signal = PlanSignal {
        signal_id: signal_id(
            &item.supplier_id,
            &item.sku,
            warehouse,
            &region,
            horizon_start,
            end,
            reason,
            0,
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
        revision: 0,
        supersedes: None,
    };
    for m in &unit.members {
        if let Some(c) = sku.cells.get_mut(m) {
            c.acc_units = 0;
            c.acc_stores.clear();
            c.acc_from = basis_to;
            c.acc_to = basis_to;
        }
    }
    sku.plans.push(Plan {
        signal: signal.clone(),
        base_reason: reason,
        members: unit.members.clone(),
        basis_from,
        basis_to,
    });
    Some(signal)
}

/// Re-decides plan `idx` after late data; a changed recommendation is a REVISION.
fn revise(
    sku: &mut SkuState,
    idx: usize,
    item: &Item,
    cfg: &StateConfig,
    now: i64,
) -> Option<PlanSignal> {
    let plan = &sku.plans[idx];
    let end = plan.signal.based_on_watermark;
    let series = unit_series(sku, &plan.members, end, cfg);
    let model = Model::fit_best(&series, &cfg.forecast);
    let (k0, k1) = steps(end, plan.signal.horizon_start, plan.signal.horizon_end, cfg.bucket);
    let fc = model.horizon(k0, k1);
    let observed = plan.signal.observed_units;
    let rec = recommend(need(plan.base_reason, fc.point, observed), item.moq, item.batch_size);
    if rec == plan.signal.recommended_units {
        return None;
    }
    let plan = &mut sku.plans[idx];
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
    Some(s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use h3o::LatLng;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;
    /// A Monday, 00:00 UTC.
    const T0: i64 = 1_764_547_200_000;

    fn cfg(k: i32) -> Arc<StateConfig> {
        let c = EmitConfig {
            settle_ms: H / 2,
            privacy_k: k,
            idle_advance_ms: 0,
            ..EmitConfig::default()
        };
        Arc::new(StateConfig::from_config(&c).expect("valid"))
    }

    fn item(moq: i64, batch: i64) -> Item {
        let area = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Four);
        Item {
            sku: "SKU-1".into(),
            category: "dairy".into(),
            supplier_id: "acme".into(),
            factory_id: "f1".into(),
            moq,
            batch_size: batch,
            lead_time_ms: 0,
            areas: vec![("wh-1".into(), vec![area])],
        }
    }

    /// Grid `i`: res-8 cells; 0 and 1 share a res-7 region, 2 is in another res-7 region.
    fn grid(i: usize) -> String {
        let base = LatLng::new(31.23, 121.47).expect("ll").to_cell(Resolution::Seven);
        let children: Vec<CellIndex> = base.children(Resolution::Eight).collect();
        match i {
            0 | 1 => children[i].to_string(),
            _ => {
                let other = base
                    .grid_disk::<Vec<_>>(1)
                    .into_iter()
                    .find(|c| {
                        *c != base && c.parent(Resolution::Six) == base.parent(Resolution::Six)
                    })
                    .expect("a sibling region");
                other.center_child(Resolution::Eight).expect("child").to_string()
            }
        }
    }

    fn win(g: usize, end: i64, net: i64, stores: i32, revision: i32) -> DemandWindow {
        DemandWindow {
            grid_id: grid(g),
            sku: "SKU-1".into(),
            window_start: end - H,
            window_end: end,
            units_sold: net,
            units_returned: 0,
            preorder_units: 0,
            net_units: net,
            revenue_minor: net * 100,
            currency: "CNY".into(),
            event_count: net,
            distinct_stores: stores,
            stores_reporting: stores,
            stores_expected: stores,
            revision,
            is_final: true,
            watermark: end,
            last_event_at: end - 1,
            emitted_at: end,
        }
    }

    /// A five-minute window: it only moves the clock to `t`.
    fn tick(t: i64) -> DemandWindow {
        let mut w = win(0, t - t % 300_000, 1, 1, 0);
        w.window_start = w.window_end - 300_000;
        w.watermark = t;
        w
    }

    fn run(st: &mut PartitionState, cat: &Catalog, ws: &[DemandWindow]) -> Vec<PlanSignal> {
        for w in ws {
            st.apply(w, cat, 0);
        }
        st.flush(0, cat).signals
    }

    #[test]
    fn recommendation_is_a_batch_multiple_of_at_least_the_moq() {
        assert_eq!(recommend(0.0, 100, 24), 120);
        assert_eq!(recommend(100.0, 100, 25), 100);
        assert_eq!(recommend(101.2, 100, 25), 125);
        assert_eq!(recommend(-5.0, 1, 1), 1);
        assert_eq!(recommend(f64::NAN, 10, 4), 12);
        assert_eq!(recommend(7.0, 1, 5), 10);
    }

    #[test]
    fn threshold_fires_when_accumulated_demand_reaches_the_moq() {
        let cat = Catalog::of([item(50, 24)]);
        let mut st = PartitionState::new(cfg(1));
        let start = T0 + 2 * H;
        let ws: Vec<_> = (1..=6).map(|i| win(0, start + i * H, 10, 2, 0)).collect();
        let out = run(&mut st, &cat, &ws);
        assert_eq!(out.len(), 1, "{out:#?}");
        let s = &out[0];
        assert_eq!(s.reason, PlanReason::Threshold);
        assert_eq!(s.observed_units, 50);
        // Bucket 4 completes when bucket 5's window moves the clock past it + settle; the
        // accumulation then holds buckets 1..=5 (every closed window received).
        assert_eq!(s.based_on_watermark, start + 4 * H);
        assert!(s.recommended_units >= 50 && s.recommended_units % 24 == 0, "{s:?}");
        // 10 units an hour for the next day: 240, a multiple of the batch already.
        assert!((s.forecast_units - 240.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.recommended_units, 240);
        assert_eq!(s.supplier_id, "acme");
        assert_eq!(s.contributing_grids, vec![grid(0)]);
        assert_eq!(s.firmness, Firmness::Planning, "less than a season of history");
        assert_eq!(s.horizon_start, T0 + DAY, "next aligned day");
        // The accumulation starts again after the plan.
        let more: Vec<_> = (7..=9).map(|i| win(0, start + i * H, 10, 2, 0)).collect();
        assert!(run(&mut st, &cat, &more).is_empty());
    }

    #[test]
    fn scheduled_plans_come_at_the_schedule_boundary() {
        let cat = Catalog::of([item(1000, 10)]);
        let mut st = PartitionState::new(cfg(1));
        let mut ws: Vec<_> = (1..=24).map(|i| win(0, T0 + i * H, 3, 1, 0)).collect();
        ws.push(tick(T0 + DAY + H / 2));
        let out = run(&mut st, &cat, &ws);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].reason, PlanReason::Scheduled);
        assert_eq!(out[0].based_on_watermark, T0 + DAY);
        assert_eq!(out[0].observed_units, 72);
        assert_eq!(out[0].recommended_units, 1000, "below the MOQ: the MOQ");
    }

    #[test]
    fn a_surge_well_above_the_forecast_is_signalled() {
        let cat = Catalog::of([item(100_000, 10)]);
        let mut st = PartitionState::new(cfg(1));
        let mut ws: Vec<_> = (1..=72).map(|i| win(0, T0 + i * H + 5 * H, 10, 3, 0)).collect();
        ws.push(win(0, T0 + 78 * H, 90, 3, 0));
        ws.push(tick(T0 + 78 * H + H / 2));
        let out = run(&mut st, &cat, &ws);
        let surges: Vec<_> = out.iter().filter(|s| s.reason == PlanReason::Surge).collect();
        assert_eq!(surges.len(), 1, "{out:#?}");
        assert_eq!(surges[0].based_on_watermark, T0 + 78 * H);
        assert_eq!(surges[0].firmness, Firmness::Firm, "3 days of history, full coverage");
        assert!(st.tally.forecast_abs_errors.len() > 40);
    }

    #[test]
    fn thin_regions_merge_into_their_parent_or_are_suppressed() {
        let cat = Catalog::of([item(10, 1)]);
        let it = item(10, 1);
        for g in 0..3 {
            let cell: CellIndex = grid(g).parse().expect("cell");
            assert_eq!(it.warehouse_of(cell), Some("wh-1"), "grid {g}");
        }
        // Grids 0 and 2 are in different res-7 regions under one res-6 parent, one store
        // each: with k = 2 they are planned together at resolution 6.
        let mut st = PartitionState::new(cfg(2));
        let out = run(
            &mut st,
            &cat,
            &[win(0, T0 + H, 6, 1, 0), win(2, T0 + H, 6, 1, 0), tick(T0 + H + H / 2)],
        );
        assert_eq!(out.len(), 1, "{out:#?}");
        let region: CellIndex = out[0].region.parse().expect("cell");
        assert_eq!(region.resolution(), Resolution::Six);
        assert_eq!(out[0].contributing_stores, 2);
        assert_eq!(out[0].observed_units, 12);
        let mut grids = vec![grid(0), grid(2)];
        grids.sort();
        assert_eq!(out[0].contributing_grids, grids);
        // With k = 3 nothing reaches the floor, even at resolution 5: suppressed.
        let mut st = PartitionState::new(cfg(3));
        let out = run(
            &mut st,
            &cat,
            &[win(0, T0 + H, 6, 1, 0), win(2, T0 + H, 6, 1, 0), tick(T0 + H + H / 2)],
        );
        assert!(out.is_empty(), "{out:#?}");
        assert_eq!(st.tally.suppressed, 1);
        // A region that reaches k alone is planned at resolution 7.
        let mut st = PartitionState::new(cfg(2));
        let out = run(&mut st, &cat, &[win(0, T0 + H, 12, 2, 0), tick(T0 + H + H / 2)]);
        assert_eq!(out.len(), 1);
        let region: CellIndex = out[0].region.parse().expect("cell");
        assert_eq!(region.resolution(), Resolution::Seven);
    }

    #[test]
    fn late_data_that_changes_a_plan_revises_it() {
        let cat = Catalog::of([item(20, 1000)]);
        let mut st = PartitionState::new(cfg(1));
        let out = run(&mut st, &cat, &[win(0, T0 + H, 25, 2, 0), tick(T0 + H + H / 2)]);
        assert_eq!(out.len(), 1);
        let first = out[0].clone();
        // 25 an hour for a day: 600, rounded up to the batch of 1000.
        assert_eq!(first.recommended_units, 1000);
        // A late correction of the same bucket that keeps the recommendation: absorbed.
        let out = run(&mut st, &cat, &[win(0, T0 + H, 27, 2, 1)]);
        assert!(out.is_empty(), "{out:#?}");
        assert_eq!(st.tally.revisions_absorbed, 1);
        // A late window from another grid of the same region that changes it: REVISION.
        let out = run(&mut st, &cat, &[win(1, T0 + H, 20, 1, 0)]);
        assert_eq!(out.len(), 1, "{out:#?}");
        let rev = &out[0];
        assert_eq!(rev.reason, PlanReason::Revision);
        assert_eq!(rev.revision, 1);
        assert_eq!(rev.supersedes.as_deref(), Some(first.signal_id.as_str()));
        assert_eq!(rev.observed_units, 47);
        assert_eq!(rev.recommended_units, 2000, "47 × 24 = 1128 → 2000");
        assert_ne!(rev.signal_id, first.signal_id);
    }

    #[test]
    fn unknown_skus_other_sizes_and_far_grids_are_reported_not_applied() {
        let cat = Catalog::of([item(20, 10)]);
        let mut st = PartitionState::new(cfg(1));
        let mut w = win(0, T0 + H, 5, 1, 0);
        w.sku = "SKU-X".into();
        assert_eq!(st.apply(&w, &cat, 0), Outcome::UnknownSku);
        let mut w = win(0, T0 + H, 5, 1, 0);
        w.window_start = T0 + H - 300_000;
        assert_eq!(st.apply(&w, &cat, 0), Outcome::OtherSize);
        let mut w = win(0, T0 + H, 5, 1, 0);
        w.grid_id = "8828308281fffff".into();
        assert_eq!(st.apply(&w, &cat, 0), Outcome::OutsideAreas);
        w.grid_id = "not-a-cell".into();
        assert_eq!(st.apply(&w, &cat, 0), Outcome::InvalidGrid);
        assert_eq!(st.apply(&win(0, T0 + H, 5, 1, 0), &cat, 0), Outcome::Applied);
        assert_eq!(st.apply(&win(0, T0 - DAY, 5, 1, 0), &cat, 0), Outcome::TooOld);
    }

    fn strip(mut v: Vec<PlanSignal>) -> Vec<PlanSignal> {
        for s in &mut v {
            s.generated_at = 0;
        }
        v
    }

    /// A deterministic stream: three grids, four days, random-ish demand and late
    /// corrections.
    fn stream() -> Vec<DemandWindow> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for h in 1..=96 {
            let end = T0 + h * H;
            for g in 0..3 {
                let net = (next() % 12) as i64 + if h == 80 { 60 } else { 0 };
                out.push(win(g, end, net, 1 + (next() % 3) as i32, 0));
                if next() % 7 == 0 && h > 2 {
                    out.push(win(g, end - H, net + 5, 2, 1));
                }
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever arrives — any times, sizes, counts, revisions, grids — nothing panics,
        /// every signal respects MOQ, batch and the floor, and a restore from the changelog
        /// continues exactly as the original.
        #[test]
        fn arbitrary_windows_never_break_the_rules(
            ws in proptest::collection::vec(
                (0usize..4, -3i64..200, -200i64..400, 0i32..6, 0i32..3, 0u8..8),
                1..120,
            ),
            cut in 0usize..120,
        ) {
            let cat = Catalog::of([item(30, 7)]);
            let make = |(g, h, net, stores, rev, odd): (usize, i64, i64, i32, i32, u8)| {
                let mut w = win(g.min(2), T0 + h * H, net, stores, rev);
                match odd {
                    0 => w.window_end = i64::MAX,
                    1 => w.watermark = i64::MIN,
                    2 => { w.window_start = w.window_end - 300_000; }
                    3 => w.grid_id = "nope".into(),
                    4 => w.is_final = false,
                    _ => {}
                }
                w
            };
            let ws: Vec<DemandWindow> = ws.into_iter().map(make).collect();
            let mut whole = PartitionState::new(cfg(2));
            let all = strip(run(&mut whole, &cat, &ws));
            for s in &all {
                proptest::prop_assert!(s.recommended_units >= 30 && s.recommended_units % 7 == 0);
                proptest::prop_assert!(s.contributing_stores >= 2);
            }
            let cut = cut.min(ws.len());
            let mut a = PartitionState::new(cfg(2));
            for w in &ws[..cut] {
                a.apply(w, &cat, 0);
            }
            let f = a.flush(0, &cat);
            let mut got = f.signals;
            let mut b = PartitionState::new(cfg(2));
            for (k, v) in &f.changelog {
                b.restore(k, v.as_deref(), 0).expect("restore");
            }
            got.extend(run(&mut b, &cat, &ws[cut..]));
            proptest::prop_assert_eq!(strip(got), all);
        }
    }

    #[test]
    fn restoring_from_the_changelog_at_any_point_makes_the_same_decisions() {
        let cat = Catalog::of([item(40, 12)]);
        let ws = stream();
        let mut whole = PartitionState::new(cfg(2));
        let expected = strip(run(&mut whole, &cat, &ws));
        assert!(expected.len() > 20, "{}", expected.len());
        for reason in [PlanReason::Threshold, PlanReason::Scheduled, PlanReason::Revision] {
            assert!(expected.iter().any(|s| s.reason == reason), "no {reason:?}");
        }
        let ids: BTreeSet<_> = expected.iter().map(|s| s.signal_id.clone()).collect();
        assert_eq!(ids.len(), expected.len(), "signal ids are unique");
        for cut in [1, 37, 150, 290, ws.len() - 1] {
            let mut a = PartitionState::new(cfg(2));
            let mut log: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            let mut got = Vec::new();
            for w in &ws[..cut] {
                a.apply(w, &cat, 0);
            }
            let f = a.flush(0, &cat);
            got.extend(f.signals);
            log.extend(f.changelog);
            let mut b = PartitionState::new(cfg(2));
            for (k, v) in &log {
                b.restore(k, v.as_deref(), 0).expect("restore");
            }
            got.extend(run(&mut b, &cat, &ws[cut..]));
            assert_eq!(strip(got), expected, "cut at {cut}");
        }
    }
}

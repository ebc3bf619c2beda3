//! The state of one input partition: counters per grid × SKU × window, the stores that
//! reported per grid × window, the `event_id` de-duplication set, and the watermark.
//!
//! Only the aggregator's polling thread mutates it. Every mutation marks what changed,
//! and [`PartitionState::flush`] turns the changes since the last flush into changelog
//! records and closed-window outputs, which the caller writes in one Kafka transaction
//! with the input offsets (see `stage.rs`). [`PartitionState::restore`] rebuilds the state
//! from the changelog records, so a restored partition continues exactly where the last
//! committed transaction left it.
//!
//! Layout, chosen by measurement (README, performance): one map entry per grid × SKU
//! holding its few live windows inline (one lookup per event, one changelog record per
//! changed key), one entry per grid for completeness, and de-duplication sets grouped by
//! the event's horizon, the expiry of its last window (a retry carries the same
//! `occurred_at`, so it lands in the same set; a whole set is dropped when no window of
//! its events accepts anything more). Closing and
//! expiry depend only on a window's end, so they are tracked per *bucket* (size, end);
//! when a bucket closes or expires, one scan over the keys finds its windows.
//!
//! # Layout
//! - this file: the partition's state, applying events and heartbeats, and flushing;
//! - `restore`: rebuilding the state from changelog records;
//! - `tests`: the unit tests and the reference-model property test.

mod grids;
mod restore;
use grids::GridState;
pub use grids::{Expected, Registry};
use restore::encode_key;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use nearfield_schemas::{DemandWindow, GridCoverage, SaleEvent};

use crate::changelog::{self, Record};
use crate::counters::Counters;
use crate::ids::{IdMap, IdSet, event_key, key_id, short_id};
use crate::window::{Late, Millis, Windowing};

/// Most windows of one size one flush writes coverage for (a partition back from a long
/// idle catches up over several commits).
pub const MAX_COVERAGE_WINDOWS: usize = 24;

/// Per size, the set entries of `ends` as `(size, end)` (the changelog's form).
fn per_size(w: &Windowing, ends: &[Millis]) -> Vec<(Millis, Millis)> {
    ends.iter()
        .enumerate()
        .filter(|(_, end)| **end != Millis::MIN)
        .map(|(i, end)| (w.sizes[i], *end))
        .collect()
}

/// Most event ids in one changelog record (8 bytes each: 256 KiB).
pub const DEDUPE_CHUNK_IDS: usize = 32_768;

/// One window of one grid × SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    pub size_idx: usize,
    pub start: Millis,
    pub end: Millis,
    pub counters: Counters,
    /// Last emitted revision; −1 before the first emission.
    pub revision: i32,
    /// Changed since its last emission (in memory only: a committed state never holds a
    /// closed window with unemitted changes).
    changed: bool,
}

/// All live windows of one grid × SKU.
#[derive(Debug, Clone)]
pub struct KeyState {
    /// `grid` followed by `sku`, in one allocation.
    name: Box<str>,
    grid_len: usize,
    pub windows: Vec<WindowState>,
    /// Changed since the last flush.
    dirty: bool,
}

impl KeyState {
    pub(crate) fn new(grid: &str, sku: &str) -> Self {
        KeyState {
            name: format!("{grid}{sku}").into_boxed_str(),
            grid_len: grid.len(),
            windows: Vec::with_capacity(3),
            dirty: false,
        }
    }

    /// The grid (H3 cell).
    pub fn grid(&self) -> &str {
        &self.name[..self.grid_len]
    }

    /// The SKU.
    pub fn sku(&self) -> &str {
        &self.name[self.grid_len..]
    }
}

/// A device heartbeat, as the state needs it.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    pub grid_id: &'a str,
    pub store_id: &'a str,
    /// When it was received (ingest clock).
    pub at: Millis,
    /// Sales the device holds but has not uploaded.
    pub pending_events: i32,
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in every window of it that still accepts it (`windows` of them).
    Counted { windows: usize },
    /// Its `event_id` was already counted (a device retry).
    Duplicate,
    /// Too late for every window of it: goes to `sales.late.v1` with the reason.
    Late(Late),
}

/// Changelog records and closed-window outputs of one flush.
#[derive(Debug, Default)]
pub struct Flushed {
    pub changelog: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub outputs: Vec<DemandWindow>,
    /// Coverage of every registered grid for the windows that closed (`coverage.v1`).
    pub coverage: Vec<GridCoverage>,
    /// Windows dropped after their allowed lateness.
    pub expired_windows: usize,
}

/// Per-partition settings the state needs.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub windowing: Windowing,
    /// The deployment's currency: revenue sums only events in it.
    pub currency: String,
    /// Per size index: whether closed windows of it get `GridCoverage` records.
    pub coverage: Vec<bool>,
}

/// The state of one input partition.
#[derive(Debug)]
pub struct PartitionState {
    cfg: Arc<StateConfig>,
    max_event_time: Option<Millis>,
    keys: IdMap<u128, KeyState>,
    dirty_keys: Vec<u128>,
    /// Buckets (end, size index) with live windows, and whether each is closed.
    buckets: BTreeMap<(Millis, usize), bool>,
    grids: IdMap<u64, GridState>,
    dirty_grids: Vec<u64>,
    /// Event ids by their horizon (the watermark at which the last window of the event
    /// expires, [`Windowing::horizon`]).
    dedupe: BTreeMap<Millis, IdSet<u64>>,
    dedupe_ids: usize,
    pending_ids: Vec<(Millis, u64)>,
    /// Dedupe changelog chunks and the window end they belong to.
    chunks: BTreeMap<u64, Millis>,
    next_chunk: u64,
    heartbeat_offset: i64,
    /// Wall-clock time the watermark last advanced: while it advances the partition is
    /// busy and only the watermark closes windows (see [`PartitionState::clock`]).
    last_advance_wall: Millis,
    /// The wall clock the window rules last saw; never goes back, so a window closed or
    /// expired by the wall clock stays so.
    wall_floor: Millis,
    meta_dirty: bool,
    windows: usize,
    /// Per size index: the newest end of an expired window. Such windows are gone: they
    /// count nothing more even if allowed lateness is widened later (a window made anew
    /// would be emitted with only the new events, over its final value).
    expired_through: Vec<Millis>,
    /// Whether the restored changelog said where `expired_through` is (version 4); if not,
    /// [`PartitionState::restored`] derives it.
    frontier_restored: bool,
    /// Per size index: the end of the last window whose coverage was written.
    covered_through: Vec<Millis>,
}

/// Sizes of a partition's state (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    pub keys: usize,
    pub windows: usize,
    pub dedupe_ids: usize,
    pub grid_windows: usize,
    pub bytes: usize,
}

impl std::iter::Sum for StateSize {
    fn sum<I: Iterator<Item = StateSize>>(iter: I) -> Self {
        iter.fold(StateSize::default(), |a, b| StateSize {
            keys: a.keys + b.keys,
            windows: a.windows + b.windows,
            dedupe_ids: a.dedupe_ids + b.dedupe_ids,
            grid_windows: a.grid_windows + b.grid_windows,
            bytes: a.bytes + b.bytes,
        })
    }
}

impl PartitionState {
    /// An empty partition.
    pub fn new(cfg: Arc<StateConfig>) -> Self {
        PartitionState {
            max_event_time: None,
            last_advance_wall: Millis::MIN,
            wall_floor: Millis::MIN,
            keys: IdMap::default(),
            dirty_keys: Vec::new(),
            buckets: BTreeMap::new(),
            grids: IdMap::default(),
            dirty_grids: Vec::new(),
            dedupe: BTreeMap::new(),
            dedupe_ids: 0,
            pending_ids: Vec::new(),
            chunks: BTreeMap::new(),
            next_chunk: 0,
            heartbeat_offset: -1,
            meta_dirty: false,
            windows: 0,
            expired_through: vec![Millis::MIN; cfg.windowing.sizes.len()],
            frontier_restored: false,
            covered_through: vec![Millis::MIN; cfg.windowing.sizes.len()],
            cfg,
        }
    }

    /// The partition's watermark.
    pub fn watermark(&self) -> Millis {
        self.cfg.windowing.watermark(self.max_event_time)
    }

    /// Next heartbeat offset to read for this partition (−1: none read yet).
    pub fn heartbeat_offset(&self) -> i64 {
        self.heartbeat_offset
    }

    /// The wall clock the window rules see. It moves to `now` once the watermark has not
    /// advanced for `max_close_delay` (a quiet or idle partition) and stands still while
    /// the watermark advances — live traffic, a consumer catching up on lag, a replay of
    /// history — so windows then close and expire by event time only, and reading old
    /// data never closes its windows before their events are read. It never goes back,
    /// and a partition whose watermark never advanced has none (`Millis::MIN`).
    pub fn clock(&mut self, now: Millis) -> Millis {
        let mcd = self.cfg.windowing.max_close_delay;
        if self.last_advance_wall != Millis::MIN
            && now.saturating_sub(self.last_advance_wall) >= mcd
            && now > self.wall_floor
        {
            self.wall_floor = now;
            self.meta_dirty = true;
        }
        self.wall_floor
    }

    /// Applies one sale event at wall-clock `now`.
    pub fn apply_sale(&mut self, ev: &SaleEvent, now: Millis) -> Outcome {
        let clock = self.clock(now);
        let w = &self.cfg.windowing;
        let t = ev.occurred_at;
        let wm = self.watermark();
        let through = &self.expired_through;
        let kept = |&(i, _, end): &(usize, Millis, Millis)| end > through[i];
        if !w.accepting(t, wm, clock).any(|x| kept(&x)) {
            return Outcome::Late(w.late(t, wm, clock).unwrap_or_else(|| w.last_window(t)));
        }
        let horizon = w.horizon(t);
        let id = event_key(&ev.store_id, &ev.event_id);
        if !self.dedupe.entry(horizon).or_default().insert(id) {
            return Outcome::Duplicate;
        }
        self.dedupe_ids += 1;
        self.pending_ids.push((horizon, id));
        let store = short_id(&ev.store_id);
        let count_revenue = ev.currency == self.cfg.currency;
        let kid = key_id(&ev.grid_id, &ev.sku);
        let ks = self.keys.entry(kid).or_insert_with(|| KeyState::new(&ev.grid_id, &ev.sku));
        let gid = short_id(&ev.grid_id);
        let grid = self.grids.entry(gid).or_default();
        let mut grid_dirty = false;
        let mut windows = 0;
        for (size_idx, start, end) in w.accepting(t, wm, clock).filter(kept) {
            windows += 1;
            let win =
                match ks.windows.iter().position(|x| x.size_idx == size_idx && x.start == start) {
                    Some(i) => &mut ks.windows[i],
                    None => {
                        self.buckets.entry((end, size_idx)).or_insert(false);
                        self.windows += 1;
                        ks.windows.push(WindowState {
                            size_idx,
                            start,
                            end,
                            counters: Counters::default(),
                            revision: -1,
                            changed: false,
                        });
                        ks.windows.last_mut().expect("just pushed")
                    }
                };
            win.counters.add(ev, store, count_revenue);
            win.changed = true;
            grid_dirty |= grid.report(size_idx, start, store);
        }
        if !std::mem::replace(&mut ks.dirty, true) {
            self.dirty_keys.push(kid);
        }
        if grid_dirty {
            self.dirty_grids.push(gid);
        }
        // The watermark follows event time, clamped by ingest's clock so one device with a
        // clock running ahead cannot close everyone's windows early.
        let clamped = t.min(ev.received_at);
        if self.max_event_time.is_none_or(|m| clamped > m) {
            if self.max_event_time.is_none() {
                // Coverage starts with the window of the partition's first event (a
                // function of the input, not of when commits happen).
                for (i, through) in self.covered_through.iter_mut().enumerate() {
                    if *through == Millis::MIN {
                        *through = Windowing::start(clamped, self.cfg.windowing.sizes[i]);
                    }
                }
            }
            self.max_event_time = Some(clamped);
            self.last_advance_wall = now;
            self.meta_dirty = true;
        }
        Outcome::Counted { windows }
    }

    /// Records that a store was online at `at` (a device heartbeat) holding
    /// `pending_events` sales not uploaded yet, and that the next heartbeat to read is at
    /// `next_offset`.
    pub fn apply_heartbeat(&mut self, beat: Beat<'_>, next_offset: i64, now: Millis) {
        let Beat { grid_id, store_id, at, pending_events } = beat;
        let pending = u32::try_from(pending_events).unwrap_or(0);
        self.heartbeat_offset = next_offset;
        self.meta_dirty = true;
        let now = self.clock(now);
        let w = &self.cfg.windowing;
        let wm = self.watermark();
        let gid = short_id(grid_id);
        let store = short_id(store_id);
        let grid = self.grids.entry(gid).or_default();
        let mut dirty = false;
        let through = &self.expired_through;
        for (size_idx, start, _) in w.accepting(at, wm, now).filter(|x| x.2 > through[x.0]) {
            dirty |= grid.report(size_idx, start, store);
            dirty |= grid.report_pending(size_idx, start, store, pending);
        }
        if dirty {
            self.dirty_grids.push(gid);
        }
    }

    /// Closes due windows, emits closed windows that changed and the coverage of every
    /// registered grid for closed windows, drops expired state, and returns the changelog
    /// records and outputs since the last flush.
    pub fn flush(&mut self, now: Millis, registry: &dyn Registry) -> Flushed {
        let emitted_at = now;
        let now = self.clock(now);
        let mut out = Flushed::default();
        let wm = self.watermark();
        let w = Arc::clone(&self.cfg);
        let w = &w.windowing;
        // Close buckets whose end is due; their windows become outputs. (Sizes have their
        // own grace, so the order of ends is not the order of closing: look at each.)
        let mut newly_closed = Vec::new();
        for ((end, size_idx), closed) in self.buckets.iter_mut() {
            if !*closed && w.is_closed(*size_idx, *end, wm, now) {
                *closed = true;
                newly_closed.push((*end, *size_idx));
            }
        }
        if !newly_closed.is_empty() {
            for (kid, ks) in &mut self.keys {
                let due = ks
                    .windows
                    .iter()
                    .any(|x| x.revision < 0 && newly_closed.contains(&(x.end, x.size_idx)));
                if due && !std::mem::replace(&mut ks.dirty, true) {
                    self.dirty_keys.push(*kid);
                }
            }
        }
        // Expire buckets past their allowed lateness.
        let expired: Vec<(Millis, usize)> = self
            .buckets
            .keys()
            .filter(|(end, i)| w.is_expired(*i, *end, wm, now))
            .copied()
            .collect();
        for b in &expired {
            self.buckets.remove(b);
            let through = &mut self.expired_through[b.1];
            *through = (*through).max(b.0);
            self.meta_dirty = true;
        }
        let mut tombstones = Vec::new();
        for kid in std::mem::take(&mut self.dirty_keys) {
            let Some(ks) = self.keys.get_mut(&kid) else { continue };
            let grid = &ks.name[..ks.grid_len];
            let sku = &ks.name[ks.grid_len..];
            for win in &mut ks.windows {
                let closed = self.buckets.get(&(win.end, win.size_idx)).copied().unwrap_or(true);
                if closed && (win.changed || win.revision < 0) {
                    win.revision += 1;
                    let g = self.grids.get(&short_id(grid));
                    let reporting = g.map_or(0, |g| g.reporting(win.size_idx, win.start));
                    let pending = g.map_or(0, |g| g.pending(win.size_idx, win.start).0);
                    out.outputs.push(demand_window(
                        (grid, sku),
                        win,
                        (reporting, registry.expected(grid), pending),
                        &self.cfg.currency,
                        wm,
                        emitted_at,
                    ));
                }
                win.changed = false;
            }
            if expired.is_empty() {
                ks.dirty = false;
                out.changelog.push((changelog::key_key(kid), Some(encode_key(w, ks))));
            }
            // Otherwise the expiry scan below writes it (once, without expired windows).
        }
        if !expired.is_empty() {
            // One scan drops the expired windows of every key.
            for (kid, ks) in &mut self.keys {
                let before = ks.windows.len();
                ks.windows.retain(|x| !expired.contains(&(x.end, x.size_idx)));
                let dropped = before - ks.windows.len();
                self.windows -= dropped;
                out.expired_windows += dropped;
                let dirty = std::mem::replace(&mut ks.dirty, false);
                if ks.windows.is_empty() {
                    tombstones.push(*kid);
                } else if dropped > 0 || dirty {
                    out.changelog.push((changelog::key_key(*kid), Some(encode_key(w, ks))));
                }
            }
            for kid in &tombstones {
                self.keys.remove(kid);
                out.changelog.push((changelog::key_key(*kid), None));
            }
            for (gid, g) in &mut self.grids {
                let before = g.windows.len();
                g.windows
                    .retain(|x| !w.is_expired(x.size_idx, x.start + w.sizes[x.size_idx], wm, now));
                if g.windows.len() != before && !std::mem::replace(&mut g.dirty, true) {
                    self.dirty_grids.push(*gid);
                }
            }
        }
        for gid in std::mem::take(&mut self.dirty_grids) {
            let Some(g) = self.grids.get_mut(&gid) else { continue };
            g.dirty = false;
            if g.windows.is_empty() {
                self.grids.remove(&gid);
                out.changelog.push((changelog::grid_key(gid), None));
            } else {
                let windows = g.records(w);
                out.changelog.push((
                    changelog::grid_key(gid),
                    Some(changelog::encode(&Record::Grid { windows })),
                ));
            }
        }
        // Ids seen since the last flush, grouped by horizon, in chunks that stay well
        // below Kafka's message size limit.
        let mut pending = std::mem::take(&mut self.pending_ids);
        pending.sort_unstable();
        for group in pending.chunk_by(|a, b| a.0 == b.0) {
            let horizon = group[0].0;
            for ids in group.chunks(DEDUPE_CHUNK_IDS) {
                let seq = self.next_chunk;
                self.next_chunk += 1;
                self.chunks.insert(seq, horizon);
                self.meta_dirty = true;
                let ids = ids.iter().map(|(_, id)| *id).collect();
                out.changelog.push((
                    changelog::dedupe_key(seq),
                    Some(changelog::encode(&Record::Dedupe { horizon, ids })),
                ));
            }
        }
        let gone: Vec<Millis> =
            self.dedupe.keys().take_while(|h| w.horizon_passed(**h, wm, now)).copied().collect();
        for e in gone {
            self.dedupe_ids -= self.dedupe.remove(&e).map_or(0, |s| s.len());
        }
        let chunks: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, h)| w.horizon_passed(**h, wm, now))
            .map(|(s, _)| *s)
            .collect();
        for seq in chunks {
            self.chunks.remove(&seq);
            out.changelog.push((changelog::dedupe_key(seq), None));
        }
        self.cover(registry, wm, now, emitted_at, &mut out);
        if std::mem::take(&mut self.meta_dirty) {
            out.changelog.push((
                changelog::meta_key(),
                Some(changelog::encode(&Record::Meta {
                    max_event_time: self.max_event_time,
                    next_chunk: self.next_chunk,
                    heartbeat_offset: self.heartbeat_offset,
                    last_advance_wall: self.last_advance_wall,
                    wall_floor: self.wall_floor,
                    expired_through: Some(per_size(w, &self.expired_through)),
                    covered_through: Some(per_size(w, &self.covered_through)),
                })),
            ));
        }
        out
    }

    /// Writes the coverage of every registered grid of the partition for each window of a
    /// coverage size that closed since the last flush — by time, so a grid (or a whole
    /// partition) without sales gets its records too. It starts with the window of the
    /// partition's first event, and catches up at most [`MAX_COVERAGE_WINDOWS`] windows
    /// per size and flush.
    fn cover(
        &mut self,
        registry: &dyn Registry,
        wm: Millis,
        now: Millis,
        emitted_at: Millis,
        out: &mut Flushed,
    ) {
        if wm == Millis::MIN {
            return;
        }
        let cfg = Arc::clone(&self.cfg);
        let w = &cfg.windowing;
        let mut grids: Option<Vec<(String, i32)>> = None;
        for (i, &size) in w.sizes.iter().enumerate() {
            if !cfg.coverage.get(i).copied().unwrap_or(false) {
                continue;
            }
            if self.covered_through[i] == Millis::MIN {
                // A changelog of an older release: start with the current window.
                self.covered_through[i] = Windowing::start(wm, size);
                self.meta_dirty = true;
            }
            for _ in 0..MAX_COVERAGE_WINDOWS {
                let start = self.covered_through[i];
                let end = start.saturating_add(size);
                if !w.is_closed(i, end, wm, now) {
                    break;
                }
                for (grid, expected) in grids.get_or_insert_with(|| registry.grids()).iter() {
                    let state = self.grids.get(&short_id(grid));
                    let rec = grids::coverage(
                        (grid.clone(), *expected),
                        state,
                        (i, start, end),
                        wm,
                        emitted_at,
                    );
                    out.coverage.push(rec);
                }
                self.covered_through[i] = end;
                self.meta_dirty = true;
            }
        }
    }

    /// The live windows of a grid × SKU (the live query).
    pub fn key(&self, grid: &str, sku: &str) -> Option<&KeyState> {
        self.keys.get(&key_id(grid, sku))
    }

    /// Every grid × SKU held (the live map).
    pub fn keys(&self) -> impl Iterator<Item = &KeyState> + '_ {
        self.keys.values()
    }

    /// Every grid × SKU of a grid (the live query without `sku`).
    pub fn keys_of_grid<'a>(&'a self, grid: &'a str) -> impl Iterator<Item = &'a KeyState> + 'a {
        self.keys.values().filter(move |k| k.grid() == grid)
    }

    /// Whether the bucket of a window is closed.
    pub fn is_closed(&self, win: &WindowState) -> bool {
        self.buckets.get(&(win.end, win.size_idx)).copied().unwrap_or(true)
    }

    /// Reporting stores of a grid during a window.
    pub fn stores_reporting(&self, grid: &str, size_idx: usize, start: Millis) -> usize {
        self.grids.get(&short_id(grid)).map_or(0, |g| g.reporting(size_idx, start))
    }

    /// How big the state is (an estimate of bytes: entries, their heap parts, and the
    /// maps' slack).
    pub fn size(&self) -> StateSize {
        let map_entry = |k: usize, v: usize| (k + v + 1) * 8 / 7;
        let mut bytes = self.dedupe_ids * map_entry(8, 0)
            + self.keys.capacity() * map_entry(16, size_of::<KeyState>());
        let mut grid_windows = 0;
        for ks in self.keys.values() {
            bytes += ks.name.len() + ks.windows.capacity() * size_of::<WindowState>();
            bytes += ks.windows.iter().map(|w| w.counters.stores.capacity() * 8).sum::<usize>();
        }
        for g in self.grids.values() {
            grid_windows += g.windows.len();
            bytes += map_entry(8, size_of::<GridState>()) + g.heap_bytes();
        }
        StateSize {
            keys: self.keys.len(),
            windows: self.windows,
            dedupe_ids: self.dedupe_ids,
            grid_windows,
            bytes,
        }
    }
}

fn demand_window(
    (grid, sku): (&str, &str),
    win: &WindowState,
    (stores_reporting, stores_expected, stores_pending): (usize, i32, usize),
    currency: &str,
    watermark: Millis,
    now: Millis,
) -> DemandWindow {
    let c = &win.counters;
    DemandWindow {
        grid_id: grid.to_string(),
        sku: sku.to_string(),
        window_start: win.start,
        window_end: win.end,
        units_sold: c.units_sold,
        units_returned: c.units_returned,
        preorder_units: c.preorder_units,
        net_units: c.net_units(),
        revenue_minor: c.revenue_minor,
        currency: currency.to_string(),
        event_count: c.event_count,
        distinct_stores: i32::try_from(c.stores.len()).unwrap_or(i32::MAX),
        stores_reporting: i32::try_from(stores_reporting).unwrap_or(i32::MAX),
        stores_expected,
        stores_pending: i32::try_from(stores_pending).unwrap_or(i32::MAX),
        revision: win.revision,
        is_final: true,
        watermark,
        last_event_at: c.last_event_at,
        emitted_at: now,
    }
}

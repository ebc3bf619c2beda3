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
//! Layout, made for hundreds of millions of keys (`docs/design/state-v5.md`,
//! `docs/SCALING.md`): grid and SKU strings are interned to `u32`s; a key is a 28-byte
//! slot in a slab found by one probe of an index of interned ids (`keys.rs`); its windows live in
//! **buckets**, one per window size × start (`bucket.rs`), as 28-byte records with two
//! store ids inline (`distinct.rs`); the key's slot holds the position of its newest
//! window of each size, so an event reaches each of its windows by index, not by a search.
//! A bucket closes as a whole (sorted once, then emitted behind a cursor in bounded
//! chunks) and expires as a whole. De-duplication sets are grouped by the event's
//! horizon, the expiry of its last window (a retry carries the same `occurred_at`, so it
//! lands in the same set; a whole set is dropped when no window of its events accepts
//! anything more).
//!
//! # Layout
//! - this file: the partition's state, applying events and heartbeats;
//! - `keys`, `index`, `bucket`, `wins`, `distinct`, `dedupe`: the key slab and its index,
//!   the buckets of windows and their block storage, store sets, event-id sets;
//! - `staged`: the schedule of a run's lookups, steps a few events apart;
//! - `rules`: which of an event's windows accept it, kept for the events after it;
//! - `flush`: closing, emitting, expiring and the changelog of one flush;
//! - `restore`: rebuilding the state from changelog records;
//! - `grids`: completeness per grid;
//! - `read`: views for queries and the live map, totals and size;
//! - `tests`: the unit tests;
//! - `model_tests`: property tests over generated histories (the reference model, and a
//!   run against its events one by one).
//! - `restore_tests`: the unit tests of restoring from changelogs (older versions, corrupt
//!   records, settings changed between runs).

mod bucket;
mod dedupe;
mod distinct;
mod flush;
mod grids;
mod index;
mod keys;
mod lookup;
mod read;
mod restore;
mod rules;
pub mod staged;
mod wins;
use bucket::{Bucket, Buckets};
use dedupe::{IdSets, IdTable};
use grids::GridState;
pub use grids::{Expected, Registry};
use keys::{Keys, NO_POS};
use lookup::{Ahead, Placed};
use rules::Ruled;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod restore_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use nearfield_schemas::{DemandWindow, GridCoverage, SaleEventRef};

use crate::counters::{Delta, sat32};

use crate::config::MAX_SIZES;
use crate::ids::{IdMap, short_id, store32};
use crate::window::{Late, Millis, Windowing};

/// Most windows of one size one flush writes coverage for (a partition back from a long
/// idle catches up over several commits).
pub const MAX_COVERAGE_WINDOWS: usize = 24;

/// Most event ids in one changelog record (8 bytes each: 256 KiB).
pub const DEDUPE_CHUNK_IDS: usize = 32_768;
/// Most pending event ids whose room a partition keeps between flushes (16 bytes each:
/// 1 MiB; a commit interval of a partition at the mission's peak holds a few thousand).
const PENDING_KEEP: usize = 1 << 16;

/// One window of a grid × SKU, as queries see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowView {
    pub size_idx: usize,
    pub start: Millis,
    pub end: Millis,
    pub units_sold: i64,
    pub units_returned: i64,
    pub preorder_units: i64,
    pub revenue_minor: i64,
    pub event_count: i64,
    pub last_event_at: Millis,
    pub distinct_stores: u64,
    /// Last emitted revision; −1 before the first emission.
    pub revision: i32,
    /// Whether its bucket closed (the final was emitted or is being emitted).
    pub closed: bool,
}

impl WindowView {
    /// units_sold + preorder_units − units_returned.
    pub fn net_units(&self) -> i64 {
        self.units_sold.saturating_add(self.preorder_units).saturating_sub(self.units_returned)
    }
}

/// The live windows of one grid × SKU, as queries see them.
#[derive(Debug, Clone)]
pub struct KeyView<'a> {
    pub grid: &'a str,
    pub sku: &'a str,
    /// Ordered by size, then start.
    pub windows: Vec<WindowView>,
}

/// A grid, a SKU and one of its windows (the live map).
pub type Row<'a> = (&'a str, &'a str, WindowView);

/// A device heartbeat, as the state needs it.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    pub grid_id: &'a str,
    pub store_id: &'a str,
    /// When it was received (ingest clock).
    pub at: Millis,
    /// Sales the device holds but has not uploaded.
    pub pending_events: i32,
    /// Since when it holds them (its last successful upload, on the ingest clock), when
    /// the device said: every window from then to `at` misses them. `None`: the backlog
    /// is attributed to the windows of `at` only.
    pub since: Option<Millis>,
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
    /// Not counted, and dead-lettered with this reason: its revenue, or a window's with
    /// it, does not fit ([`crate::counters::REVENUE_OVERFLOW`]).
    Refused(&'static str),
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
    /// Most closed windows emitted per flush (the rest wait for the next).
    pub close_chunk: usize,
}

/// The state of one input partition.
#[derive(Debug)]
pub struct PartitionState {
    cfg: Arc<StateConfig>,
    max_event_time: Option<Millis>,
    keys: Keys,
    /// Buckets by size index and window start.
    buckets: Buckets,
    windows: usize,
    grids: IdMap<u64, GridState>,
    dirty_grids: Vec<u64>,
    /// Event ids by their horizon (the watermark at which the last window of the event
    /// expires, [`Windowing::horizon`]).
    dedupe: IdSets,
    dedupe_ids: usize,
    /// The seed of the event-id hash ([`crate::ids::event_key`]): random for a new partition, restored
    /// with its ids (0 for a changelog from before version 6).
    dedupe_seed: u64,
    /// Event ids counted since the last flush (its changelog chunks to write).
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
    /// Per size index: the newest end of an expired window. Such windows are gone: they
    /// count nothing more even if allowed lateness is widened later (a window made anew
    /// would be emitted with only the new events, over its final value).
    expired_through: Vec<Millis>,
    /// Whether the restored changelog said where `expired_through` is (version 4); if not,
    /// [`PartitionState::restored`] derives it.
    frontier_restored: bool,
    /// Per size index: the end of the last window whose coverage was written.
    covered_through: Vec<Millis>,
    /// During a restore: the key last seen at each bucket position. Buckets of all sizes
    /// were filled by the same events in the same order, so the key at position p of one
    /// is most often the key at p of the others, and checking it saves an index probe.
    restore_guess: Vec<u32>,
    /// The input partition this state is of (`source_partition` of its outputs; -1 when
    /// not known, as in unit tests).
    partition: i32,
    /// The windows of the last event placed ([`PartitionState::placed`]): most events
    /// fall in the same windows as the event before, found then without a division.
    recent: Placed,
    /// The rules' answer for the windows of the last event applied ([`Ruled`]).
    ruled: Option<Ruled>,
}

/// Sizes of a partition's state (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    pub keys: usize,
    pub windows: usize,
    pub dedupe_ids: usize,
    pub grid_windows: usize,
    pub bytes: usize,
    /// Closed windows not emitted yet (a bucket closing over several flushes).
    pub close_backlog: usize,
}

/// Sums over every live window (a checksum of the counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub windows: u64,
    pub events: u64,
    pub units_sold: i64,
    pub net_units: i64,
    pub revenue_minor: i64,
    pub distinct_stores: u64,
}

impl std::iter::Sum for Totals {
    fn sum<I: Iterator<Item = Totals>>(iter: I) -> Self {
        iter.fold(Totals::default(), |a, b| Totals {
            windows: a.windows + b.windows,
            events: a.events + b.events,
            units_sold: a.units_sold.wrapping_add(b.units_sold),
            net_units: a.net_units.wrapping_add(b.net_units),
            revenue_minor: a.revenue_minor.wrapping_add(b.revenue_minor),
            distinct_stores: a.distinct_stores + b.distinct_stores,
        })
    }
}

impl std::iter::Sum for StateSize {
    fn sum<I: Iterator<Item = StateSize>>(iter: I) -> Self {
        iter.fold(StateSize::default(), |a, b| StateSize {
            keys: a.keys + b.keys,
            windows: a.windows + b.windows,
            dedupe_ids: a.dedupe_ids + b.dedupe_ids,
            grid_windows: a.grid_windows + b.grid_windows,
            bytes: a.bytes + b.bytes,
            close_backlog: a.close_backlog + b.close_backlog,
        })
    }
}

impl PartitionState {
    /// An empty partition.
    pub fn new(cfg: Arc<StateConfig>) -> Self {
        let sizes = cfg.windowing.sizes.len();
        PartitionState {
            max_event_time: None,
            last_advance_wall: Millis::MIN,
            wall_floor: Millis::MIN,
            keys: Keys::new(sizes),
            buckets: Buckets::new(&cfg.windowing.sizes),
            windows: 0,
            grids: IdMap::default(),
            dirty_grids: Vec::new(),
            dedupe: IdSets::default(),
            dedupe_ids: 0,
            // Never 0, which stands for the unseeded hash of older changelogs.
            dedupe_seed: rand::random::<u64>().max(1),
            pending_ids: Vec::new(),
            chunks: BTreeMap::new(),
            next_chunk: 0,
            heartbeat_offset: -1,
            // The seed goes out with the first ids hashed with it.
            meta_dirty: true,
            expired_through: vec![Millis::MIN; sizes],
            frontier_restored: false,
            covered_through: vec![Millis::MIN; sizes],
            restore_guess: Vec::new(),
            partition: -1,
            recent: Placed::NONE,
            ruled: None,
            cfg,
        }
    }

    /// The empty state of input partition `partition`.
    pub fn of_partition(cfg: Arc<StateConfig>, partition: i32) -> Self {
        PartitionState { partition, ..PartitionState::new(cfg) }
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
    pub fn apply_sale<'e>(&mut self, ev: impl Into<SaleEventRef<'e>>, now: Millis) -> Outcome {
        let ev: SaleEventRef<'e> = ev.into();
        let mut ahead = self.sight(&ev);
        self.probe(&mut ahead);
        self.resolve(&mut ahead);
        self.apply_identified(ev, ahead, now)
    }

    /// Applies a run of sale events at wall-clock `now`, in order, pushing each one's
    /// outcome to `out`: the same as [`apply_sale`](Self::apply_sale) one by one (the
    /// property test `a_run_equals_its_events_one_by_one`), but the lookups before an
    /// event's own work run in steps ahead of it ([`staged`]: 16, 8 and 4 events ahead),
    /// each step asking into cache (prefetches: hints that never block) what the next
    /// reads, so the cache misses of its event-id sets, key index, key slot and windows
    /// overlap other events' work instead of stalling their own.
    pub fn apply_sales(&mut self, evs: &[SaleEventRef<'_>], now: Millis, out: &mut Vec<Outcome>) {
        staged::run(
            self,
            evs,
            Ahead::NONE,
            |s, ev| s.sight(ev),
            |s, a| s.probe(a),
            |s, a| s.resolve(a),
            |s, ev, a| out.push(s.apply_identified(*ev, *a, now)),
        );
    }

    fn apply_identified(
        &mut self,
        ev: SaleEventRef<'_>,
        Ahead { id, key: known, at, ids, seen, .. }: Ahead,
        now: Millis,
    ) -> Outcome {
        let clock = self.clock(now);
        let t = ev.occurred_at;
        let wm = self.watermark();
        let (accepted, windows, horizon) = self.rules(at, wm, clock);
        let w = &self.cfg.windowing;
        if windows == 0 {
            return Outcome::Late(w.late(t, wm, clock).unwrap_or_else(|| w.last_window(t)));
        }
        // One identity per event whatever its time: a retry re-stamped into another
        // horizon is found in that horizon's set (a handful are live: one per day).
        // One pass over the live sets: the others searched, the horizon's own kept.
        let mut own = None;
        for (h, t) in self.dedupe.iter_mut() {
            if h == horizon {
                own = Some(t);
            } else if t.contains(id) {
                return Outcome::Duplicate;
            }
        }
        let added = match own {
            Some(set) => set.insert(id),
            None => self.id_set(horizon).insert(id),
        };
        if !added {
            return Outcome::Duplicate;
        }
        let count_revenue = ev.currency == self.cfg.currency;
        let Some(d) = Delta::of(&ev, count_revenue) else {
            return self.refuse(horizon, id, crate::counters::REVENUE_OVERFLOW);
        };
        let sid = short_id(ev.store_id);
        let store = store32(sid);
        // A key found ahead is still the event's (only a flush removes keys); one not
        // found may have been made since by an event before it in the run. Its grid and
        // SKU, when interned ahead, are not hashed again.
        let k = match (known, ids) {
            (Some(k), _) => k,
            (None, Some((g, s))) => self.keys.find_or_insert_ids(g, s),
            (None, None) => self.keys.find_or_insert(ev.grid_id, ev.sku),
        };
        // Every window is checked before any is counted: an event whose revenue would
        // overflow one of its windows is counted in none (an error, not a clamp).
        let mut pos = [0u32; MAX_SIZES];
        for (j, &i) in accepted[..windows].iter().enumerate() {
            let i = usize::from(i);
            let (b, p) = self.window_of(k, i, (at.start[i], at.number[i]), seen[i]);
            if b.wins[p as usize].revenue_plus(d.revenue).is_none() {
                return self.refuse(horizon, id, crate::counters::REVENUE_OVERFLOW);
            }
            pos[j] = p;
        }
        self.dedupe_ids += 1;
        self.pending_ids.push((horizon, id));
        // Whether the store may be new to each window. One its window's exact set already
        // held is in the grid's window too: every event counted in a window reported its
        // store there, and a grid's window expires by the window's rule, which let this
        // event in (up to the 32-bit store ids' collisions, `distinct.rs`).
        let mut report = [false; MAX_SIZES];
        for (j, &i) in accepted[..windows].iter().enumerate() {
            let (i, start) = (usize::from(i), at.start[usize::from(i)]);
            let Some(b) = self.buckets.get_mut(i, start) else { continue };
            count(b, pos[j], &d, ev.occurred_at);
            report[j] = b.add_store(pos[j], store);
            b.touch(pos[j]);
        }
        if report.contains(&true) {
            let gid = self.keys.grids.hash(self.keys.grid_id(k));
            let grid = self.grids.entry(gid).or_default();
            let mut grid_dirty = false;
            for (j, &i) in accepted[..windows].iter().enumerate() {
                let (i, start) = (usize::from(i), at.start[usize::from(i)]);
                grid_dirty |= report[j] && grid.report(i, start, sid);
            }
            if grid_dirty {
                self.dirty_grids.push(gid);
            }
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

    /// The event-id set of `horizon`; a new one expects as many ids as the set of the
    /// horizon before it (yesterday's for a day's: a period's sales are about as many as
    /// the period's before), so it grows in fewer, larger steps while below that.
    fn id_set(&mut self, horizon: Millis) -> &mut IdTable {
        self.dedupe
            .get_or_make(horizon, |before| IdTable::expecting(before.map_or(0, IdTable::len)))
    }

    /// An event refused after its id was recorded: the id is forgotten (a retry is refused
    /// again, not taken for a duplicate).
    fn refuse(&mut self, horizon: Millis, id: u64, reason: &'static str) -> Outcome {
        if let Some(t) = self.dedupe.get_mut(horizon) {
            t.remove(id);
        }
        Outcome::Refused(reason)
    }

    /// Key `k`'s window in bucket (size index `i`, `start`, whose number is `number`),
    /// made when new: its bucket and position. `seen` is where the key's slot said the
    /// window was when the event was resolved ([`NO_POS`]: not known): a hit there needs
    /// no second look at the slot. The key's slot points at its newest window
    /// of the size: an event of the newest window is a direct hit; an older one (out of
    /// order across a boundary, or late) searches its bucket; a newer one appends.
    fn window_of(
        &mut self,
        k: u32,
        i: usize,
        (start, number): (Millis, u16),
        seen: u32,
    ) -> (&mut Bucket, u32) {
        if seen != NO_POS
            && let Some(j) = self.buckets.holding(i, start, seen, k)
        {
            return (self.buckets.at_mut(i, j), seen);
        }
        let size = self.cfg.windowing.sizes[i];
        let (p, g) = self.keys.slot(k, i);
        // How many windows the slot's is after this one (modulo 2¹⁶: a hint, checked).
        let d = g.wrapping_sub(number) as i16;
        let hit = p != NO_POS && d == 0;
        if hit && self.buckets.get(i, start).and_then(|b| b.key_at(p)) == Some(k) {
            let b = self.buckets.get_mut(i, start).expect("checked above");
            return (b, p);
        }
        let newer = p != NO_POS && d > 0 && {
            let slot_start = start.saturating_add(i64::from(d).saturating_mul(size));
            self.buckets.get(i, slot_start).and_then(|b| b.key_at(p)) == Some(k)
        };
        let b = self.buckets.get_or_insert(i, start);
        if newer && let Some(pos) = b.find_mut(k, &self.keys) {
            return (b, pos);
        }
        let pos = b.push(k);
        self.windows += 1;
        self.keys.add_window(k);
        if !newer {
            self.keys.set_slot(k, i, pos, number);
        }
        (b, pos)
    }

    /// Records that a store was online at `at` (a device heartbeat) holding
    /// `pending_events` sales not uploaded yet, and that the next heartbeat to read is at
    /// `next_offset`.
    pub fn apply_heartbeat(&mut self, beat: Beat<'_>, next_offset: i64, now: Millis) {
        let Beat { grid_id, store_id, at, pending_events, since } = beat;
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
        let live = |&(i, _, end): &(usize, Millis, Millis)| {
            end > through[i] && !w.is_expired(i, end, wm, now)
        };
        for (size_idx, start, _) in w.windows_of(at).filter(live) {
            dirty |= grid.report(size_idx, start, store);
            if since.is_none() {
                dirty |= grid.report_pending(size_idx, start, store, pending);
            }
        }
        match since {
            None => {}
            // Everything uploaded: no live window waits for this store any more.
            Some(_) if pending == 0 => dirty |= grid.clear_pending(store, at),
            // The backlog is of sales since `since`: each live window from then on misses
            // them (older windows have expired and are bounded by the horizon).
            Some(since) => {
                let from = since.clamp(at.saturating_sub(w.max_event_age()), at);
                for (size_idx, start, _) in w.windows_between(from, at).filter(live) {
                    dirty |= grid.report_pending(size_idx, start, store, pending);
                }
            }
        }
        if dirty {
            self.dirty_grids.push(gid);
        }
    }
}

/// Adds a sale's counters `d` (of an event at `at`) to a window's; the revenue was
/// checked to fit, the unit counters saturate.
fn count(b: &mut Bucket, pos: u32, d: &Delta, at: Millis) {
    let mut win = b.wins[pos as usize];
    win.events = win.events.saturating_add(1);
    b.note_event(&mut win, at);
    win.sold = win.sold.saturating_add(sat32(d.sold));
    win.set_revenue(win.revenue().wrapping_add(d.revenue));
    b.wins[pos as usize] = win;
    if d.returned != 0 {
        b.add_extra(pos, 0, sat32(d.returned));
    }
    if d.preorder != 0 {
        b.add_extra(pos, 1, sat32(d.preorder));
    }
}

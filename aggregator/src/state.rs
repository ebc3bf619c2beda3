//! The state of one input partition: counters per grid × SKU × window, the stores that
//! reported per grid × window, the `event_id` de-duplication set, and the watermark.
//!
//! Only the aggregator's polling thread mutates it. Every mutation marks what changed,
//! and [`PartitionState::flush`] turns the changes since the last flush into changelog
//! records and closed-window outputs, which the caller writes in one Kafka transaction
//! with the input offsets (see `kafka.rs`). [`PartitionState::restore`] rebuilds the state
//! from the changelog records, so a restored partition continues exactly where the last
//! committed transaction left it.
//!
//! Layout, chosen by measurement (README, performance): one map entry per grid × SKU
//! holding its few live windows inline (one lookup per event, one changelog record per
//! changed key), one entry per grid for completeness, and de-duplication sets grouped by
//! the end of the event's earliest window (a retry carries the same `occurred_at`, so it
//! lands in the same set; a whole set is dropped when its windows expire). Closing and
//! expiry depend only on a window's end, so they are tracked per *bucket* (size, end);
//! when a bucket closes or expires, one scan over the keys finds its windows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use nearfield_schemas::{DemandWindow, SaleEvent, SaleKind};

use crate::changelog::{self, GridRec, Record, WindowRec};
use crate::window::{Millis, Windowing};

/// A fast hasher for keys made of integers that are already hashes (xxh3 of strings) or
/// small numbers: FxHash's rotate–xor–multiply per word. Not DoS-resistant, which is fine:
/// the strings behind the ids are hashed with xxh3 first.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const FX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(FX);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
}

/// Most event ids in one changelog record (8 bytes each: 256 KiB).
pub const DEDUPE_CHUNK_IDS: usize = 32_768;

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// `a`, 0xff, `b` in one buffer (on the stack when short), for one-shot hashing: the
/// streaming `Xxh3` hasher costs more to set up than the hash of a short input (profile of
/// the aggregator benchmark), and one-shot XXH3 of the concatenation is the same value.
fn joined<R>(a: &str, b: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let n = a.len() + 1 + b.len();
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap.resize(n, 0);
        &mut heap
    };
    buf[..a.len()].copy_from_slice(a.as_bytes());
    buf[a.len()] = 0xff;
    buf[a.len() + 1..].copy_from_slice(b.as_bytes());
    f(buf)
}

/// 128-bit identity of a grid × SKU.
pub fn key_id(grid: &str, sku: &str) -> u128 {
    joined(grid, sku, xxhash_rust::xxh3::xxh3_128)
}

/// 64-bit identity of an event for de-duplication: the device's `event_id` within its
/// store. Ids are compared only among events whose earliest window ends at the same time,
/// so a false match needs two of those few million ids to collide in 64 bits.
pub fn event_key(store_id: &str, event_id: &str) -> u64 {
    joined(store_id, event_id, xxhash_rust::xxh3::xxh3_64)
}

/// 64-bit identity of a store or grid (distinct counts).
pub fn short_id(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Counters of one grid × SKU × window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub units_sold: i64,
    pub units_returned: i64,
    pub preorder_units: i64,
    pub revenue_minor: i64,
    pub event_count: i64,
    pub last_event_at: Millis,
    /// Distinct stores (sorted short ids).
    pub stores: Vec<u64>,
}

impl Counters {
    fn add(&mut self, ev: &SaleEvent, store: u64, count_revenue: bool) {
        let q = i64::from(ev.quantity);
        let value = q.saturating_mul(ev.unit_price_minor);
        match ev.kind {
            SaleKind::Sale => {
                self.units_sold = self.units_sold.saturating_add(q);
                if count_revenue {
                    self.revenue_minor = self.revenue_minor.saturating_add(value);
                }
            }
            SaleKind::Return => {
                self.units_returned = self.units_returned.saturating_add(q);
                if count_revenue {
                    self.revenue_minor = self.revenue_minor.saturating_sub(value);
                }
            }
            SaleKind::Preorder => self.preorder_units = self.preorder_units.saturating_add(q),
        }
        self.event_count += 1;
        self.last_event_at = self.last_event_at.max(ev.occurred_at);
        insert_sorted(&mut self.stores, store);
    }

    /// units_sold + preorder_units − units_returned.
    pub fn net_units(&self) -> i64 {
        self.units_sold.saturating_add(self.preorder_units).saturating_sub(self.units_returned)
    }
}

fn insert_sorted(v: &mut Vec<u64>, x: u64) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(i) => {
            v.insert(i, x);
            true
        }
    }
}

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
    fn new(grid: &str, sku: &str) -> Self {
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

/// Stores of one grid that reported (a sale or a heartbeat), per live window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GridState {
    windows: Vec<(usize, Millis, Vec<u64>)>,
    dirty: bool,
}

impl GridState {
    /// Adds `store` to the window; true when the grid changed.
    fn report(&mut self, size_idx: usize, start: Millis, store: u64) -> bool {
        let changed = match self.windows.iter_mut().find(|w| w.0 == size_idx && w.1 == start) {
            Some(w) => insert_sorted(&mut w.2, store),
            None => {
                self.windows.push((size_idx, start, vec![store]));
                true
            }
        };
        changed && !std::mem::replace(&mut self.dirty, true)
    }

    fn reporting(&self, size_idx: usize, start: Millis) -> usize {
        self.windows.iter().find(|w| w.0 == size_idx && w.1 == start).map_or(0, |w| w.2.len())
    }
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in every window it belongs to.
    Counted,
    /// Its `event_id` was already counted (a device retry).
    Duplicate,
    /// Too late for its windows: goes to `sales.late.v1`.
    Late,
}

/// Changelog records and closed-window outputs of one flush.
#[derive(Debug, Default)]
pub struct Flushed {
    pub changelog: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub outputs: Vec<DemandWindow>,
    /// Windows dropped after their allowed lateness.
    pub expired_windows: usize,
}

/// Per-partition settings the state needs.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub windowing: Windowing,
    /// The deployment's currency: revenue sums only events in it.
    pub currency: String,
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
    /// Event ids by the end of their earliest window.
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

impl PartitionState {
    /// An empty partition.
    pub fn new(cfg: Arc<StateConfig>) -> Self {
        PartitionState {
            cfg,
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
        if w.is_late(t, wm, clock) {
            return Outcome::Late;
        }
        let first_end = w.first_end(t);
        let id = event_key(&ev.store_id, &ev.event_id);
        if !self.dedupe.entry(first_end).or_default().insert(id) {
            return Outcome::Duplicate;
        }
        self.dedupe_ids += 1;
        self.pending_ids.push((first_end, id));
        let store = short_id(&ev.store_id);
        let count_revenue = ev.currency == self.cfg.currency;
        let kid = key_id(&ev.grid_id, &ev.sku);
        let ks = self.keys.entry(kid).or_insert_with(|| KeyState::new(&ev.grid_id, &ev.sku));
        let gid = short_id(&ev.grid_id);
        let grid = self.grids.entry(gid).or_default();
        let mut grid_dirty = false;
        for (size_idx, start, end) in w.windows_of(t) {
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
            self.max_event_time = Some(clamped);
            self.last_advance_wall = now;
            self.meta_dirty = true;
        }
        Outcome::Counted
    }

    /// Records that `store_id` of `grid_id` was online at `at` (a device heartbeat), and
    /// that the next heartbeat to read is at `next_offset`.
    pub fn apply_heartbeat(
        &mut self,
        grid_id: &str,
        store_id: &str,
        at: Millis,
        next_offset: i64,
        now: Millis,
    ) {
        self.heartbeat_offset = next_offset;
        self.meta_dirty = true;
        let now = self.clock(now);
        let w = &self.cfg.windowing;
        let wm = self.watermark();
        let gid = short_id(grid_id);
        let store = short_id(store_id);
        let grid = self.grids.entry(gid).or_default();
        let mut dirty = false;
        for (size_idx, start, end) in w.windows_of(at) {
            if !w.is_expired(end, wm, now) {
                dirty |= grid.report(size_idx, start, store);
            }
        }
        if dirty {
            self.dirty_grids.push(gid);
        }
    }

    /// Closes due windows, emits closed windows that changed, drops expired state, and
    /// returns the changelog records and outputs since the last flush. `expected(grid)` is
    /// the number of active stores registered in a grid.
    pub fn flush(&mut self, now: Millis, expected: &dyn Fn(&str) -> i32) -> Flushed {
        let emitted_at = now;
        let now = self.clock(now);
        let mut out = Flushed::default();
        let wm = self.watermark();
        let w = Arc::clone(&self.cfg);
        let w = &w.windowing;
        // Close buckets whose end is due; their windows become outputs.
        let mut newly_closed = Vec::new();
        for ((end, size_idx), closed) in self.buckets.iter_mut() {
            if !w.is_closed(*end, wm, now) {
                break;
            }
            if !std::mem::replace(closed, true) {
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
            .take_while(|(end, _)| w.is_expired(*end, wm, now))
            .copied()
            .collect();
        for b in &expired {
            self.buckets.remove(b);
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
                    let reporting = self
                        .grids
                        .get(&short_id(grid))
                        .map_or(0, |g| g.reporting(win.size_idx, win.start));
                    out.outputs.push(demand_window(
                        (grid, sku),
                        win,
                        reporting,
                        expected(grid),
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
                g.windows.retain(|x| !w.is_expired(x.1 + w.sizes[x.0], wm, now));
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
                let windows = g
                    .windows
                    .iter()
                    .map(|(i, start, stores)| GridRec {
                        size: w.sizes[*i],
                        start: *start,
                        stores: stores.clone(),
                    })
                    .collect();
                out.changelog.push((
                    changelog::grid_key(gid),
                    Some(changelog::encode(&Record::Grid { windows })),
                ));
            }
        }
        // Ids seen since the last flush, grouped by window end, in chunks that stay well
        // below Kafka's message size limit.
        let mut pending = std::mem::take(&mut self.pending_ids);
        pending.sort_unstable();
        for group in pending.chunk_by(|a, b| a.0 == b.0) {
            let end = group[0].0;
            for ids in group.chunks(DEDUPE_CHUNK_IDS) {
                let seq = self.next_chunk;
                self.next_chunk += 1;
                self.chunks.insert(seq, end);
                self.meta_dirty = true;
                let ids = ids.iter().map(|(_, id)| *id).collect();
                out.changelog.push((
                    changelog::dedupe_key(seq),
                    Some(changelog::encode(&Record::Dedupe { end, ids })),
                ));
            }
        }
        let gone: Vec<Millis> =
            self.dedupe.keys().take_while(|e| w.is_expired(**e, wm, now)).copied().collect();
        for e in gone {
            self.dedupe_ids -= self.dedupe.remove(&e).map_or(0, |s| s.len());
        }
        let chunks: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, end)| w.is_expired(**end, wm, now))
            .map(|(s, _)| *s)
            .collect();
        for seq in chunks {
            self.chunks.remove(&seq);
            out.changelog.push((changelog::dedupe_key(seq), None));
        }
        if std::mem::take(&mut self.meta_dirty) {
            out.changelog.push((
                changelog::meta_key(),
                Some(changelog::encode(&Record::Meta {
                    max_event_time: self.max_event_time,
                    next_chunk: self.next_chunk,
                    heartbeat_offset: self.heartbeat_offset,
                    last_advance_wall: self.last_advance_wall,
                    wall_floor: self.wall_floor,
                })),
            ));
        }
        out
    }

    /// Applies one changelog record read back during restore (`None`: a tombstone).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), changelog::Error> {
        let k = changelog::parse_key(key)?;
        let Some(value) = value else {
            match k {
                changelog::Key::Key(kid) => {
                    if let Some(ks) = self.keys.remove(&kid) {
                        self.windows -= ks.windows.len();
                    }
                }
                changelog::Key::Grid(gid) => {
                    self.grids.remove(&gid);
                }
                changelog::Key::Dedupe(seq) => {
                    self.chunks.remove(&seq);
                }
                changelog::Key::Meta => {}
            }
            return Ok(());
        };
        let sizes = &self.cfg.windowing.sizes;
        let size_idx = |size: Millis| sizes.iter().position(|&s| s == size);
        match (k, changelog::decode(value)?) {
            (changelog::Key::Key(kid), Record::Key { grid, sku, windows }) => {
                let mut ks = KeyState::new(&grid, &sku);
                for WindowRec { size, start, counters, revision } in windows {
                    let Some(i) = size_idx(size) else {
                        tracing::warn!(
                            size,
                            "changelog window of a size no longer configured; dropped"
                        );
                        continue;
                    };
                    self.buckets.entry((start + size, i)).or_insert(false);
                    ks.windows.push(WindowState {
                        size_idx: i,
                        start,
                        end: start + size,
                        counters,
                        revision,
                        changed: false,
                    });
                }
                if let Some(old) = self.keys.insert(kid, ks.clone()) {
                    self.windows -= old.windows.len();
                }
                self.windows += ks.windows.len();
            }
            (changelog::Key::Grid(gid), Record::Grid { windows }) => {
                let windows = windows
                    .into_iter()
                    .filter_map(|g| size_idx(g.size).map(|i| (i, g.start, g.stores)))
                    .collect();
                self.grids.insert(gid, GridState { windows, dirty: false });
            }
            (changelog::Key::Dedupe(seq), Record::Dedupe { end, ids }) => {
                self.chunks.insert(seq, end);
                let set = self.dedupe.entry(end).or_default();
                for id in ids {
                    if set.insert(id) {
                        self.dedupe_ids += 1;
                    }
                }
            }
            (
                changelog::Key::Meta,
                Record::Meta {
                    max_event_time,
                    next_chunk,
                    heartbeat_offset,
                    last_advance_wall,
                    wall_floor,
                },
            ) => {
                self.last_advance_wall = last_advance_wall;
                self.wall_floor = wall_floor;
                self.max_event_time = max_event_time;
                self.next_chunk = next_chunk;
                self.heartbeat_offset = heartbeat_offset;
            }
            _ => return Err(changelog::Error::Mismatch),
        }
        Ok(())
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
            bytes += map_entry(8, size_of::<GridState>())
                + g.windows.iter().map(|w| 40 + w.2.capacity() * 8).sum::<usize>();
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

fn encode_key(w: &Windowing, ks: &KeyState) -> Vec<u8> {
    changelog::encode(&Record::Key {
        grid: ks.grid().to_string(),
        sku: ks.sku().to_string(),
        windows: ks
            .windows
            .iter()
            .map(|x| WindowRec {
                size: w.sizes[x.size_idx],
                start: x.start,
                counters: x.counters.clone(),
                revision: x.revision,
            })
            .collect(),
    })
}

fn demand_window(
    (grid, sku): (&str, &str),
    win: &WindowState,
    stores_reporting: usize,
    stores_expected: i32,
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
        revision: win.revision,
        is_final: true,
        watermark,
        last_event_at: c.last_event_at,
        emitted_at: now,
    }
}

#[cfg(test)]
mod tests {
    /// The one-shot ids equal the streaming hasher's (the ids persisted in changelogs
    /// written before the change), short and long inputs alike.
    #[test]
    fn one_shot_ids_equal_the_streaming_hash() {
        use xxhash_rust::xxh3::Xxh3;
        let long = "x".repeat(300);
        for (a, b) in [("store-000042", "01JDQ4T7ZK3W9V6M2X8B5N4C1A"), ("", ""), (&long[..], "e")] {
            let mut h = Xxh3::new();
            h.update(a.as_bytes());
            h.update(&[0xff]);
            h.update(b.as_bytes());
            assert_eq!(event_key(a, b), h.digest());
            assert_eq!(key_id(a, b), h.digest128());
        }
    }

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const MIN: Millis = 60_000;

    fn cfg() -> Arc<StateConfig> {
        Arc::new(StateConfig {
            windowing: Windowing {
                sizes: vec![5 * MIN, 60 * MIN],
                out_of_orderness: 30_000,
                grace: 10_000,
                allowed_lateness: 10 * MIN,
                max_close_delay: 2 * MIN,
            },
            currency: "CNY".into(),
        })
    }

    fn ev(
        id: &str,
        store: &str,
        grid: &str,
        sku: &str,
        kind: SaleKind,
        q: i32,
        t: Millis,
    ) -> SaleEvent {
        SaleEvent {
            event_id: id.into(),
            store_id: store.into(),
            device_id: "d".into(),
            grid_id: grid.into(),
            sku: sku.into(),
            kind,
            quantity: q,
            unit_price_minor: 100,
            currency: "CNY".into(),
            occurred_at: t,
            received_at: t + 1_000,
        }
    }

    fn none(_: &str) -> i32 {
        7
    }

    #[test]
    fn counts_close_once_and_revise_on_late_data() {
        let mut st = PartitionState::new(cfg());
        let t0 = 1_000 * 60 * MIN; // aligned to the hour
        assert_eq!(
            st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 3, t0 + 1), t0),
            Outcome::Counted
        );
        assert_eq!(
            st.apply_sale(&ev("2", "s2", "g", "A", SaleKind::Return, 1, t0 + 2), t0),
            Outcome::Counted
        );
        assert_eq!(
            st.apply_sale(&ev("3", "s2", "g", "A", SaleKind::Preorder, 5, t0 + 3), t0),
            Outcome::Counted
        );
        assert_eq!(
            st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 3, t0 + 1), t0),
            Outcome::Duplicate
        );
        // The same event id from another store is another event.
        assert_eq!(
            st.apply_sale(&ev("1", "s3", "g", "A", SaleKind::Sale, 1, t0 + 4), t0),
            Outcome::Counted
        );
        let f = st.flush(t0, &none);
        assert!(f.outputs.is_empty(), "nothing closes before the watermark passes");
        // An event 6 minutes later moves the watermark past the first 5-minute window + grace.
        st.apply_sale(&ev("4", "s1", "g", "B", SaleKind::Sale, 1, t0 + 6 * MIN), t0 + 6 * MIN);
        let f = st.flush(t0 + 6 * MIN, &none);
        assert_eq!(f.outputs.len(), 1);
        let w = &f.outputs[0];
        assert_eq!((w.sku.as_str(), w.window_start, w.window_end), ("A", t0, t0 + 5 * MIN));
        assert_eq!((w.units_sold, w.units_returned, w.preorder_units, w.net_units), (4, 1, 5, 8));
        assert_eq!((w.revenue_minor, w.event_count, w.distinct_stores), (300, 4, 3));
        assert_eq!(
            (w.stores_reporting, w.stores_expected, w.revision, w.is_final),
            (3, 7, 0, true)
        );
        // A late event within the allowed lateness revises it once.
        assert_eq!(
            st.apply_sale(&ev("5", "s4", "g", "A", SaleKind::Sale, 2, t0 + 10), t0 + 6 * MIN),
            Outcome::Counted
        );
        let f = st.flush(t0 + 6 * MIN, &none);
        assert_eq!(f.outputs.len(), 1);
        assert_eq!((f.outputs[0].revision, f.outputs[0].units_sold), (1, 6));
        // Past lateness it is late, and the window's state is gone.
        let later = t0 + 30 * MIN;
        st.apply_sale(&ev("6", "s1", "g", "B", SaleKind::Sale, 1, later), later);
        let _ = st.flush(later, &none);
        assert_eq!(
            st.apply_sale(&ev("7", "s1", "g", "A", SaleKind::Sale, 1, t0 + 20), later),
            Outcome::Late
        );
        assert!(st.key("g", "A").is_some_and(|k| k.windows.iter().all(|w| w.size_idx == 1)));
    }

    #[test]
    fn a_quiet_partition_closes_by_wall_clock() {
        let mut st = PartitionState::new(cfg());
        let t0 = 1_000 * 60 * MIN;
        st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 1, t0), t0);
        assert!(st.flush(t0 + 5 * MIN + MIN, &none).outputs.is_empty());
        let f = st.flush(t0 + 5 * MIN + 2 * MIN, &none);
        assert_eq!(f.outputs.len(), 1, "closed max_close_delay after its end");
    }

    #[test]
    fn heartbeats_count_towards_reporting_stores() {
        let mut st = PartitionState::new(cfg());
        let t0 = 1_000 * 60 * MIN;
        st.apply_heartbeat("g", "s9", t0 + 5, 11, t0);
        st.apply_heartbeat("g", "s8", t0 + 5, 12, t0);
        st.apply_sale(&ev("1", "s1", "g", "A", SaleKind::Sale, 1, t0), t0);
        let f = st.flush(t0 + 8 * MIN, &none);
        assert_eq!(f.outputs[0].stores_reporting, 3);
        assert_eq!(st.heartbeat_offset(), 12);
    }

    #[test]
    fn dedupe_ids_are_written_in_bounded_chunks() {
        let mut st = PartitionState::new(cfg());
        let t0 = 1_000 * 60 * MIN;
        let n = DEDUPE_CHUNK_IDS * 2 + 5;
        for i in 0..n {
            st.apply_sale(&ev(&i.to_string(), "s1", "g", "A", SaleKind::Sale, 1, t0), t0);
        }
        let f = st.flush(t0, &none);
        let chunks: Vec<usize> = f
            .changelog
            .iter()
            .filter(|(k, _)| k[0] == b'D')
            .map(|(_, v)| match changelog::decode(v.as_deref().expect("value")) {
                Ok(Record::Dedupe { ids, .. }) => ids.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(chunks, vec![DEDUPE_CHUNK_IDS, DEDUPE_CHUNK_IDS, 5]);
        assert!(f.changelog.iter().all(|(_, v)| v.as_ref().is_none_or(|v| v.len() < 512 * 1024)));
    }

    /// One step of a generated history.
    #[derive(Debug, Clone)]
    enum Step {
        Sale {
            id: u8,
            store: u8,
            grid: u8,
            sku: u8,
            kind: u8,
            q: i32,
            dt: Millis,
        },
        Flush {
            advance: Millis,
        },
        /// Crash after the last flush: restore from the changelog.
        Restore,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..40, 0u8..4, 0u8..2, 0u8..3, 0u8..3, 1i32..5, -20 * MIN..5 * MIN)
                .prop_map(|(id, store, grid, sku, kind, q, dt)| Step::Sale { id, store, grid, sku, kind, q, dt }),
            2 => (0..3 * MIN).prop_map(|advance| Step::Flush { advance }),
            1 => Just(Step::Restore),
        ]
    }

    type WinKey = (String, String, Millis, Millis);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Against a reference model: every counted event is in the final value of each of
        /// its windows, revisions run 0, 1, 2… without repeats, and crashes (restore from
        /// the changelog at a flush) change nothing.
        #[test]
        fn matches_the_reference_model(steps in proptest::collection::vec(step(), 1..120)) {
            let cfg = cfg();
            let w = cfg.windowing.clone();
            let base = 2_000 * 60 * MIN;
            let mut st = PartitionState::new(Arc::clone(&cfg));
            let mut log: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut outputs: Vec<DemandWindow> = Vec::new();
            // The model.
            let mut now = base;
            let mut max_t: Option<Millis> = None;
            // When the model's watermark last advanced (wall clock): the wall-clock rules
            // apply only after max_close_delay without an advance.
            let mut advanced: Option<Millis> = None;
            let mut floor = Millis::MIN;
            let tick = |advanced: Option<Millis>, floor: &mut Millis, now: Millis| {
                if advanced.is_some_and(|a| now - a >= w.max_close_delay) {
                    *floor = (*floor).max(now);
                }
                *floor
            };
            let mut counted: HashSet<(u8, u8, Millis)> = HashSet::new();
            let mut model: BTreeMap<WinKey, (i64, i64, i64, i64)> = BTreeMap::new();
            // What the state held at the last flush, to replay after a "crash".
            let mut since_flush: Vec<SaleEvent> = Vec::new();
            for s in steps {
                match s {
                    Step::Sale { id, store, grid, sku, kind, q, dt } => {
                        let kind = [SaleKind::Sale, SaleKind::Return, SaleKind::Preorder][kind as usize];
                        let t = now + dt;
                        let e = ev(&id.to_string(), &format!("s{store}"), &format!("g{grid}"), &format!("k{sku}"), kind, q, t);
                        let wm = w.watermark(max_t);
                        let clock = tick(advanced, &mut floor, now);
                        let expect = if w.is_late(t, wm, clock) {
                            Outcome::Late
                        } else if !counted.insert((store, id, w.first_end(t))) {
                            // A retry carries the event's own time: same earliest window.
                            Outcome::Duplicate
                        } else {
                            for (_, start, end) in w.windows_of(t) {
                                let c = model.entry((e.grid_id.clone(), e.sku.clone(), start, end)).or_default();
                                match kind {
                                    SaleKind::Sale => c.0 += i64::from(q),
                                    SaleKind::Return => c.1 += i64::from(q),
                                    SaleKind::Preorder => c.2 += i64::from(q),
                                }
                                c.3 += 1;
                            }
                            let clamped = t.min(e.received_at);
                            if max_t.is_none_or(|m| clamped > m) {
                                max_t = Some(clamped);
                                advanced = Some(now);
                            }
                            Outcome::Counted
                        };
                        prop_assert_eq!(st.apply_sale(&e, now), expect, "event {:?}", e);
                        since_flush.push(e);
                    }
                    Step::Flush { advance } => {
                        now += advance;
                        tick(advanced, &mut floor, now);
                        let f = st.flush(now, &none);
                        for (k, v) in f.changelog {
                            match v { Some(v) => { log.insert(k, v); } None => { log.remove(&k); } }
                        }
                        outputs.extend(f.outputs);
                        since_flush.clear();
                    }
                    Step::Restore => {
                        // Uncommitted work is lost with the process; Kafka redelivers it.
                        let mut fresh = PartitionState::new(Arc::clone(&cfg));
                        for (k, v) in &log {
                            fresh.restore(k, Some(v)).expect("restores");
                        }
                        st = fresh;
                        for e in std::mem::take(&mut since_flush) {
                            st.apply_sale(&e, now);
                            since_flush.push(e);
                        }
                    }
                }
            }
            // Let everything close and expire.
            let f = st.flush(Millis::MAX / 4, &none);
            outputs.extend(f.outputs);
            prop_assert_eq!(st.size().windows, 0);
            prop_assert_eq!(st.size().dedupe_ids, 0);
            let mut last: BTreeMap<WinKey, DemandWindow> = BTreeMap::new();
            for o in outputs {
                let k = (o.grid_id.clone(), o.sku.clone(), o.window_start, o.window_end);
                let expected_rev = last.get(&k).map_or(0, |p| p.revision + 1);
                prop_assert_eq!(o.revision, expected_rev, "revisions are consecutive for {:?}", k);
                last.insert(k, o);
            }
            let got: BTreeMap<WinKey, (i64, i64, i64, i64)> = last
                .into_iter()
                .map(|(k, o)| (k, (o.units_sold, o.units_returned, o.preorder_units, o.event_count)))
                .collect();
            prop_assert_eq!(got, model);
        }
    }
}

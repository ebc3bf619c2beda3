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
//! Windows with the same size and end share a *bucket*; closing and expiry are decided
//! per bucket (they depend only on the end), so a tick costs O(buckets), not O(windows).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use nearfield_schemas::{DemandWindow, SaleEvent, SaleKind};
use xxhash_rust::xxh3::Xxh3;

use crate::changelog::{self, Record};
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

/// Most event ids in one changelog record (24 bytes each: ~390 KiB).
pub const DEDUPE_CHUNK_IDS: usize = 16_384;

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// 128-bit identity of a grid × SKU.
pub fn key_id(grid: &str, sku: &str) -> u128 {
    let mut h = Xxh3::new();
    h.update(grid.as_bytes());
    h.update(&[0xff]);
    h.update(sku.as_bytes());
    h.digest128()
}

/// 128-bit identity of an event for de-duplication: the device's `event_id` within its
/// store.
pub fn event_key(store_id: &str, event_id: &str) -> u128 {
    let mut h = Xxh3::new();
    h.update(store_id.as_bytes());
    h.update(&[0xff]);
    h.update(event_id.as_bytes());
    h.digest128()
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
    /// Changed since the last flush.
    dirty: bool,
}

/// All live windows of one grid × SKU.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub grid: Arc<str>,
    pub sku: Arc<str>,
    pub windows: Vec<WindowState>,
}

#[derive(Debug, Default)]
struct Bucket {
    keys: HashSet<u128, BuildHasherDefault<IdHasher>>,
    closed: bool,
}

/// Stores that reported in a grid during a window (a sale or a heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GridWindow {
    pub stores: Vec<u64>,
    dirty: bool,
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
    buckets: BTreeMap<(Millis, usize), Bucket>,
    dirty_keys: Vec<u128>,
    grids: IdMap<(u64, usize, Millis), GridWindow>,
    dirty_grids: Vec<(u64, usize, Millis)>,
    dedupe: IdMap<u128, Millis>,
    dedupe_by_end: BTreeMap<Millis, Vec<u128>>,
    pending_ids: Vec<(u128, Millis)>,
    chunks: BTreeMap<u64, Millis>,
    next_chunk: u64,
    heartbeat_offset: i64,
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
            keys: IdMap::default(),
            buckets: BTreeMap::new(),
            dirty_keys: Vec::new(),
            grids: IdMap::default(),
            dirty_grids: Vec::new(),
            dedupe: IdMap::default(),
            dedupe_by_end: BTreeMap::new(),
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

    /// Applies one sale event at wall-clock `now`.
    pub fn apply_sale(&mut self, ev: &SaleEvent, now: Millis) -> Outcome {
        let w = &self.cfg.windowing;
        let t = ev.occurred_at;
        if w.is_late(t, self.watermark(), now) {
            return Outcome::Late;
        }
        let id = event_key(&ev.store_id, &ev.event_id);
        let first_end = w.first_end(t);
        // An id whose entry has expired (but not yet been purged) is not a duplicate: the
        // outcome must not depend on when the last flush ran.
        let wm = self.watermark();
        if self.dedupe.get(&id).is_some_and(|end| !w.is_expired(*end, wm, now)) {
            return Outcome::Duplicate;
        }
        self.dedupe.insert(id, first_end);
        self.dedupe_by_end.entry(first_end).or_default().push(id);
        self.pending_ids.push((id, first_end));
        let store = short_id(&ev.store_id);
        let count_revenue = ev.currency == self.cfg.currency;
        let kid = key_id(&ev.grid_id, &ev.sku);
        let ks = self.keys.entry(kid).or_insert_with(|| KeyState {
            grid: Arc::from(ev.grid_id.as_str()),
            sku: Arc::from(ev.sku.as_str()),
            windows: Vec::with_capacity(w.sizes.len()),
        });
        let mut key_dirty = false;
        let grid = short_id(&ev.grid_id);
        for (size_idx, start, end) in w.windows_of(t) {
            let win =
                match ks.windows.iter().position(|x| x.size_idx == size_idx && x.start == start) {
                    Some(i) => &mut ks.windows[i],
                    None => {
                        self.buckets.entry((end, size_idx)).or_default().keys.insert(kid);
                        self.windows += 1;
                        ks.windows.push(WindowState {
                            size_idx,
                            start,
                            end,
                            counters: Counters::default(),
                            revision: -1,
                            dirty: false,
                        });
                        ks.windows.last_mut().expect("just pushed")
                    }
                };
            win.counters.add(ev, store, count_revenue);
            key_dirty |= !std::mem::replace(&mut win.dirty, true);
            let gw = self.grids.entry((grid, size_idx, start)).or_default();
            if insert_sorted(&mut gw.stores, store) && !std::mem::replace(&mut gw.dirty, true) {
                self.dirty_grids.push((grid, size_idx, start));
            }
        }
        if key_dirty {
            self.dirty_keys.push(kid);
        }
        // The watermark follows event time, clamped by ingest's clock so one device with a
        // clock running ahead cannot close everyone's windows early.
        let clamped = t.min(ev.received_at);
        if self.max_event_time.is_none_or(|m| clamped > m) {
            self.max_event_time = Some(clamped);
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
        let w = &self.cfg.windowing;
        let wm = self.watermark();
        let grid = short_id(grid_id);
        let store = short_id(store_id);
        for (size_idx, start, end) in w.windows_of(at) {
            if w.is_expired(end, wm, now) {
                continue;
            }
            let gw = self.grids.entry((grid, size_idx, start)).or_default();
            if insert_sorted(&mut gw.stores, store) && !std::mem::replace(&mut gw.dirty, true) {
                self.dirty_grids.push((grid, size_idx, start));
            }
        }
    }

    /// Closes due windows, emits closed windows that changed, drops expired state, and
    /// returns the changelog records and outputs since the last flush. `expected(grid)` is
    /// the number of active stores registered in a grid.
    pub fn flush(&mut self, now: Millis, expected: &dyn Fn(&str) -> i32) -> Flushed {
        let mut out = Flushed::default();
        let wm = self.watermark();
        let w = self.cfg.windowing.clone();
        // Close buckets whose end is due: their never-emitted windows become outputs.
        for ((end, _), bucket) in self.buckets.iter_mut() {
            if !w.is_closed(*end, wm, now) {
                break;
            }
            if !bucket.closed {
                bucket.closed = true;
                for kid in &bucket.keys {
                    self.dirty_keys.push(*kid);
                }
            }
        }
        self.dirty_keys.sort_unstable();
        self.dirty_keys.dedup();
        for kid in std::mem::take(&mut self.dirty_keys) {
            let Some(KeyState { grid, sku, windows }) = self.keys.get_mut(&kid) else { continue };
            for win in windows.iter_mut() {
                let closed = self.buckets.get(&(win.end, win.size_idx)).is_some_and(|b| b.closed);
                let emit = closed && (win.dirty || win.revision < 0);
                if !win.dirty && !emit {
                    continue;
                }
                win.dirty = false;
                if emit {
                    win.revision += 1;
                    let gw = self.grids.get(&(short_id(grid), win.size_idx, win.start));
                    out.outputs.push(demand_window(
                        (grid, sku),
                        win,
                        gw.map_or(0, |g| g.stores.len()),
                        expected(grid),
                        &self.cfg.currency,
                        wm,
                        now,
                    ));
                }
                let size = w.sizes[win.size_idx];
                out.changelog.push((
                    changelog::window_key(size, win.start, kid),
                    Some(changelog::encode(&Record::Window {
                        grid: grid.to_string(),
                        sku: sku.to_string(),
                        size,
                        start: win.start,
                        counters: win.counters.clone(),
                        revision: win.revision,
                    })),
                ));
            }
        }
        for gk in std::mem::take(&mut self.dirty_grids) {
            if let Some(gw) = self.grids.get_mut(&gk) {
                gw.dirty = false;
                out.changelog.push((
                    changelog::grid_key(w.sizes[gk.1], gk.2, gk.0),
                    Some(changelog::encode(&Record::GridWindow { stores: gw.stores.clone() })),
                ));
            }
        }
        // Ids seen since the last flush, in chunks that stay well below Kafka's message
        // size limit (24 bytes per id).
        for ids in std::mem::take(&mut self.pending_ids).chunks(DEDUPE_CHUNK_IDS) {
            let max_end = ids.iter().map(|(_, e)| *e).max().unwrap_or(Millis::MIN);
            let seq = self.next_chunk;
            self.next_chunk += 1;
            self.chunks.insert(seq, max_end);
            self.meta_dirty = true;
            out.changelog.push((
                changelog::dedupe_key(seq),
                Some(changelog::encode(&Record::Dedupe { ids: ids.to_vec() })),
            ));
        }
        self.expire(wm, now, &mut out);
        if std::mem::take(&mut self.meta_dirty) {
            out.changelog.push((
                changelog::meta_key(),
                Some(changelog::encode(&Record::Meta {
                    max_event_time: self.max_event_time,
                    next_chunk: self.next_chunk,
                    heartbeat_offset: self.heartbeat_offset,
                })),
            ));
        }
        out
    }

    fn expire(&mut self, wm: Millis, now: Millis, out: &mut Flushed) {
        let w = &self.cfg.windowing;
        let due: Vec<(Millis, usize)> = self
            .buckets
            .keys()
            .take_while(|(end, _)| w.is_expired(*end, wm, now))
            .copied()
            .collect();
        for (end, size_idx) in due {
            let Some(bucket) = self.buckets.remove(&(end, size_idx)) else { continue };
            let size = w.sizes[size_idx];
            let start = end - size;
            for kid in bucket.keys {
                if let Some(ks) = self.keys.get_mut(&kid) {
                    let before = ks.windows.len();
                    ks.windows.retain(|x| !(x.size_idx == size_idx && x.start == start));
                    self.windows -= before - ks.windows.len();
                    out.expired_windows += before - ks.windows.len();
                    out.changelog.push((changelog::window_key(size, start, kid), None));
                    if ks.windows.is_empty() {
                        self.keys.remove(&kid);
                    }
                }
            }
        }
        // Grid windows (heartbeats may have made some without any sale).
        let gone: Vec<(u64, usize, Millis)> = self
            .grids
            .keys()
            .filter(|(_, i, start)| w.is_expired(start + w.sizes[*i], wm, now))
            .copied()
            .collect();
        for gk in gone {
            self.grids.remove(&gk);
            out.changelog.push((changelog::grid_key(w.sizes[gk.1], gk.2, gk.0), None));
        }
        let ends: Vec<Millis> =
            self.dedupe_by_end.keys().take_while(|e| w.is_expired(**e, wm, now)).copied().collect();
        for e in ends {
            for id in self.dedupe_by_end.remove(&e).unwrap_or_default() {
                if self.dedupe.get(&id) == Some(&e) {
                    self.dedupe.remove(&id);
                }
            }
        }
        let chunks: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, max_end)| w.is_expired(**max_end, wm, now))
            .map(|(s, _)| *s)
            .collect();
        for seq in chunks {
            self.chunks.remove(&seq);
            out.changelog.push((changelog::dedupe_key(seq), None));
        }
    }

    /// Applies one changelog record read back during restore (`None`: a tombstone).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), changelog::Error> {
        let k = changelog::parse_key(key)?;
        let Some(value) = value else {
            match k {
                changelog::Key::Window { size, start, key } => {
                    if let Some(i) = self.size_idx(size)
                        && let Some(ks) = self.keys.get_mut(&key)
                    {
                        let before = ks.windows.len();
                        ks.windows.retain(|x| !(x.size_idx == i && x.start == start));
                        self.windows -= before - ks.windows.len();
                        if ks.windows.is_empty() {
                            self.keys.remove(&key);
                        }
                        if let Some(b) = self.buckets.get_mut(&(start + size, i)) {
                            b.keys.remove(&key);
                        }
                    }
                }
                changelog::Key::Grid { size, start, grid } => {
                    if let Some(i) = self.size_idx(size) {
                        self.grids.remove(&(grid, i, start));
                    }
                }
                changelog::Key::Dedupe { seq } => {
                    self.chunks.remove(&seq);
                }
                changelog::Key::Meta => {}
            }
            return Ok(());
        };
        match (k, changelog::decode(value)?) {
            (
                changelog::Key::Window { size, start, key },
                Record::Window { grid, sku, counters, revision, .. },
            ) => {
                let Some(size_idx) = self.size_idx(size) else {
                    tracing::warn!(
                        size,
                        "changelog window of a size no longer configured; dropped"
                    );
                    return Ok(());
                };
                let end = start + size;
                let ks = self.keys.entry(key).or_insert_with(|| KeyState {
                    grid: Arc::from(grid.as_str()),
                    sku: Arc::from(sku.as_str()),
                    windows: Vec::new(),
                });
                let win = WindowState { size_idx, start, end, counters, revision, dirty: false };
                match ks.windows.iter_mut().find(|x| x.size_idx == size_idx && x.start == start) {
                    Some(x) => *x = win,
                    None => {
                        ks.windows.push(win);
                        self.windows += 1;
                        self.buckets.entry((end, size_idx)).or_default().keys.insert(key);
                    }
                }
            }
            (changelog::Key::Grid { size, start, grid }, Record::GridWindow { stores }) => {
                if let Some(i) = self.size_idx(size) {
                    self.grids.insert((grid, i, start), GridWindow { stores, dirty: false });
                }
            }
            (changelog::Key::Dedupe { seq }, Record::Dedupe { ids }) => {
                let max_end = ids.iter().map(|(_, e)| *e).max().unwrap_or(Millis::MIN);
                self.chunks.insert(seq, max_end);
                for (id, end) in ids {
                    // A later chunk may hold the same id again (reused after expiry).
                    if self.dedupe.get(&id).is_none_or(|e| *e < end) {
                        self.dedupe.insert(id, end);
                        self.dedupe_by_end.entry(end).or_default().push(id);
                    }
                }
            }
            (
                changelog::Key::Meta,
                Record::Meta { max_event_time, next_chunk, heartbeat_offset },
            ) => {
                self.max_event_time = max_event_time;
                self.next_chunk = next_chunk;
                self.heartbeat_offset = heartbeat_offset;
            }
            _ => return Err(changelog::Error::Mismatch),
        }
        Ok(())
    }

    fn size_idx(&self, size: Millis) -> Option<usize> {
        self.cfg.windowing.sizes.iter().position(|&s| s == size)
    }

    /// The live windows of a grid × SKU (the live query).
    pub fn key(&self, grid: &str, sku: &str) -> Option<&KeyState> {
        self.keys.get(&key_id(grid, sku))
    }

    /// Every grid × SKU of a grid (the live query without `sku`).
    pub fn keys_of_grid<'a>(&'a self, grid: &'a str) -> impl Iterator<Item = &'a KeyState> + 'a {
        self.keys.values().filter(move |k| &*k.grid == grid)
    }

    /// Whether the bucket of a window is closed.
    pub fn is_closed(&self, win: &WindowState) -> bool {
        self.buckets.get(&(win.end, win.size_idx)).is_some_and(|b| b.closed)
    }

    /// Reporting stores of a grid during a window.
    pub fn stores_reporting(&self, grid: &str, size_idx: usize, start: Millis) -> usize {
        self.grids.get(&(short_id(grid), size_idx, start)).map_or(0, |g| g.stores.len())
    }

    /// How big the state is (an estimate of bytes: fixed per-entry overheads plus strings
    /// and store sets).
    pub fn size(&self) -> StateSize {
        let mut bytes = self.dedupe.len() * 40 + self.grids.len() * 64;
        for ks in self.keys.values() {
            bytes += 96 + ks.grid.len() + ks.sku.len();
            for w in &ks.windows {
                bytes += size_of::<WindowState>() + w.counters.stores.capacity() * 8;
            }
        }
        for g in self.grids.values() {
            bytes += g.stores.capacity() * 8;
        }
        StateSize {
            keys: self.keys.len(),
            windows: self.windows,
            dedupe_ids: self.dedupe.len(),
            grid_windows: self.grids.len(),
            bytes,
        }
    }
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
                Ok(Record::Dedupe { ids }) => ids.len(),
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
            let mut counted: HashMap<(u8, u8), Millis> = HashMap::new();
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
                        let expect = if w.is_late(t, wm, now) {
                            Outcome::Late
                        } else if counted.get(&(store, id)).is_some_and(|end| !w.is_expired(*end, wm, now)) {
                            Outcome::Duplicate
                        } else {
                            counted.insert((store, id), w.first_end(t));
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
                            max_t = Some(max_t.map_or(clamped, |m| m.max(clamped)));
                            Outcome::Counted
                        };
                        prop_assert_eq!(st.apply_sale(&e, now), expect, "event {:?}", e);
                        since_flush.push(e);
                    }
                    Step::Flush { advance } => {
                        now += advance;
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

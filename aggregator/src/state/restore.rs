//! Rebuilding a partition's state from its changelog records: the version 5 chunks and
//! bucket records, and the per grid × SKU records of versions 2–4 (a release restores
//! what the one before it wrote).

use std::sync::Arc;

use crate::changelog::{self, Entry, Key, Record, Stores, WindowRec};
use crate::counters::{Counters, sat32};
use crate::ids::store32;
use crate::window::{Millis, Windowing};

use super::PartitionState;
use super::bucket::{Bucket, Win};
use super::dedupe::IdTable;
use super::distinct::{HLL_REGISTERS, SPILLED, StoreSet};
use super::grids::{GridState, GridWindow};

/// Most windows one restored bucket may hold (a bound against a broken record).
const MAX_BUCKET_WINDOWS: u32 = 1 << 28;
/// How far past a bucket's restored windows a chunk entry may lie. Positions are given
/// out in order and a flush writes its new windows in order across its chunks, so a
/// well-formed changelog stays within one chunk of the end; a corrupt position further
/// out is refused instead of allocating every window before it.
const MAX_POSITION_GAP: usize = 8 * changelog::CHUNK_WINDOWS;

/// Sets the stores of the window at `pos` of `b` (reusing its spill slot, if any).
fn set_stores(b: &mut Bucket, win: &mut Win, pos: u32, stores: StoreSet) {
    let old = b.wins.get(pos as usize).map(|w| w.stores);
    match stores.ids().filter(|v| v.len() <= 2) {
        Some(v) => win.stores = [v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)],
        None => {
            let i = match old {
                Some([SPILLED, i]) if (i as usize) < b.spill.len() => {
                    b.spill[i as usize] = stores;
                    i
                }
                _ => {
                    b.spill.push(stores);
                    b.spill.len() as u32 - 1
                }
            };
            win.stores = [SPILLED, i];
        }
    }
}

fn clean(ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = ids.into_iter().map(|x| x.clamp(1, u32::MAX - 1)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl PartitionState {
    /// Applies one changelog record read back during restore (`None`: a tombstone).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), changelog::Error> {
        let k = changelog::parse_key(key)?;
        let cfg = Arc::clone(&self.cfg);
        let sizes = &cfg.windowing.sizes;
        let size_idx = |size: Millis| sizes.iter().position(|&s| s == size);
        let Some(value) = value else {
            match k {
                // Version 4: the windows of a key with none left expired with their buckets.
                Key::Key(_) | Key::Meta => {}
                Key::Grid(gid) => {
                    self.grids.remove(&gid);
                }
                Key::Dedupe(seq) => {
                    self.chunks.remove(&seq);
                }
                // A chunk replaced by a rewrite of its bucket (which holds its windows).
                Key::Chunk(size, start, seq) => {
                    if let Some(b) = size_idx(size).and_then(|i| self.buckets.get_mut(i, start)) {
                        b.chunks.retain(|c| c.0 != seq);
                    }
                }
                // An expired bucket.
                Key::Bucket(size, start) => {
                    if let Some(i) = size_idx(size) {
                        self.buckets.remove(i, start);
                    }
                }
            }
            return Ok(());
        };
        match (k, changelog::decode(value)?) {
            (Key::Chunk(size, start, seq), Record::Chunk(c)) => {
                let Some(i) = size_idx(size) else {
                    tracing::warn!(
                        size,
                        "changelog window of a size no longer configured; dropped"
                    );
                    return Ok(());
                };
                let b = self.buckets.get_or_insert(i, start);
                b.chunks.retain(|x| x.0 != seq);
                b.chunks.push((seq, c.entries.len() as u32));
                b.next_seq = b.next_seq.max(seq.saturating_add(1));
                let gids: Vec<u32> = c.grids.iter().map(|g| self.keys.grids.intern(g)).collect();
                let sids: Vec<u32> = c.skus.iter().map(|s| self.keys.skus.intern(s)).collect();
                for e in c.entries {
                    if e.pos >= MAX_BUCKET_WINDOWS
                        || e.pos as usize > b.wins.len().saturating_add(MAX_POSITION_GAP)
                    {
                        return Err(changelog::Error::TooMany(e.pos as usize));
                    }
                    let (g, s) = (gids[e.grid as usize], sids[e.sku as usize]);
                    let pos = e.pos as usize;
                    let k = match self.restore_guess.get(pos) {
                        Some(&k) if self.keys.is(k, g, s) => k,
                        _ => self.keys.find_or_insert_ids(g, s),
                    };
                    if pos < self.restore_guess.len() {
                        self.restore_guess[pos] = k;
                    } else if pos == self.restore_guess.len() {
                        self.restore_guess.push(k);
                    }
                    put(b, k, e)?;
                }
            }
            (Key::Bucket(size, start), Record::Bucket(m)) => {
                if let Some(i) = size_idx(size) {
                    let b = self.buckets.get_or_insert(i, start);
                    b.closed = m.closed;
                    b.sorted = m.sorted;
                    b.cursor = m.cursor;
                    b.next_seq = b.next_seq.max(m.next_seq);
                }
            }
            (Key::Key(_), Record::Key { grid, sku, windows }) => {
                let k = self.keys.find_or_insert(&grid, &sku);
                for WindowRec { size, start, counters, revision } in windows {
                    let Some(i) = size_idx(size) else {
                        tracing::warn!(
                            size,
                            "changelog window of a size no longer configured; dropped"
                        );
                        continue;
                    };
                    let b = self.buckets.get_or_insert(i, start);
                    let pos = match b.find_mut(k, &self.keys) {
                        Some(p) => p,
                        None => b.push(k),
                    };
                    put_v4(b, k, pos, start, &counters);
                    // Version 4 emitted a closed window's final at once: one with a
                    // revision was emitted, whatever the cursor says.
                    if revision >= 0 {
                        b.revisions.insert(k, revision);
                    } else {
                        b.revisions.remove(&k);
                    }
                }
            }
            (Key::Grid(gid), Record::Grid { windows }) => {
                let windows = windows
                    .into_iter()
                    .filter_map(|g| {
                        size_idx(g.size).map(|size_idx| GridWindow {
                            size_idx,
                            start: g.start,
                            stores: g.stores,
                            pending: g.pending,
                        })
                    })
                    .collect();
                self.grids.insert(gid, GridState::of(windows));
            }
            (Key::Dedupe(seq), Record::Dedupe { horizon, ids }) => {
                self.restore_dedupe(seq, horizon, ids);
            }
            // An older release grouped ids by their events' earliest window end: keep them
            // as long as the last window of such an event accepts it.
            (Key::Dedupe(seq), Record::DedupeByFirstEnd { first_end, ids }) => {
                let horizon = self.cfg.windowing.horizon(first_end.saturating_sub(1));
                self.restore_dedupe(seq, horizon, ids);
            }
            (
                Key::Meta,
                Record::Meta {
                    max_event_time,
                    next_chunk,
                    heartbeat_offset,
                    last_advance_wall,
                    wall_floor,
                    expired_through,
                    covered_through,
                    dedupe_seed,
                },
            ) => {
                // The ids restored were hashed with this seed (0: unseeded, version ≤ 5).
                self.dedupe_seed = dedupe_seed.unwrap_or(0);
                for (size, end) in covered_through.unwrap_or_default() {
                    if let Some(i) = size_idx(size) {
                        self.covered_through[i] = end;
                    }
                }
                if let Some(through) = expired_through {
                    self.frontier_restored = true;
                    for (size, end) in through {
                        if let Some(i) = size_idx(size) {
                            self.set_expired_through(i, end);
                        }
                    }
                }
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

    /// After the last record: rebuilds what the records imply (each key's live windows
    /// and newest window per size, the buckets' indexes) and frees keys left with no
    /// window. A changelog of an older release does not say which windows were dropped;
    /// assume every closed window with no state of its own older than the oldest live
    /// window of its size was, so a widened lateness never remakes one with only its new
    /// events.
    pub fn restored(&mut self) {
        self.restore_guess = Vec::new();
        // A changelog read as written holds the id chunks of horizons dropped since, then
        // their tombstones: only sets with a chunk still live are the state's (ids are
        // looked up across every live horizon, so a dropped one must not linger).
        let live: std::collections::BTreeSet<Millis> = self.chunks.values().copied().collect();
        let before = self.dedupe.len();
        self.dedupe.retain(|h| live.contains(&h));
        if self.dedupe.len() != before {
            self.dedupe_ids = self.dedupe.values().map(IdTable::len).sum();
        }
        self.keys.clear_windows();
        self.windows = 0;
        let sizes = &self.cfg.windowing.sizes;
        // Ascending start per size: the last one seen is a key's newest.
        for b in self.buckets.values_mut() {
            let (i, start) = (b.size_idx, b.start);
            b.restored();
            let number = start.div_euclid(sizes[i]) as u16;
            for (pos, w) in b.wins.iter().enumerate() {
                self.keys.add_window(w.key());
                self.keys.set_slot(w.key(), i, pos as u32, number);
            }
            self.windows += b.wins.len();
        }
        let empty: Vec<u32> = self.keys.iter().filter(|&k| self.keys.windows_of(k) == 0).collect();
        for k in empty {
            self.keys.remove(k);
        }
        if self.frontier_restored || self.max_event_time.is_none() {
            return;
        }
        let cfg = Arc::clone(&self.cfg);
        let w = &cfg.windowing;
        let wm = self.watermark();
        for (i, &size) in w.sizes.iter().enumerate() {
            let closed = Windowing::start(wm.saturating_sub(w.grace[i]), size);
            let oldest_live = self.buckets.of_size(i).first().map(|b| b.start);
            let through = oldest_live.map_or(closed, |start| closed.min(start));
            self.set_expired_through(i, self.expired_through[i].max(through));
        }
        self.frontier_restored = true;
    }

    fn restore_dedupe(&mut self, seq: u64, horizon: Millis, ids: Vec<u64>) {
        self.chunks.insert(seq, horizon);
        // Sized as a live set is: the set before it (restored first: chunks are read in
        // the order they were written) says how many ids to expect.
        let set = self.id_set(horizon);
        let added = ids.into_iter().filter(|&id| set.insert(id)).count();
        self.dedupe_ids += added;
    }
}

/// Places a chunk entry of key `k` in its bucket.
fn put(b: &mut Bucket, k: u32, e: Entry) -> Result<(), changelog::Error> {
    let mut win = Win::new(k);
    win.sold = e.sold;
    b.set_extra(k, [e.returned, e.preorder]);
    win.events = e.events;
    win.set_revenue(e.revenue);
    b.note_event(&mut win, b.start + i64::from(e.last_off));
    let set = match e.stores {
        Stores::List(ids) => StoreSet::sorted(clean(ids)),
        Stores::Sketch(regs) => {
            let regs: Box<[u8; HLL_REGISTERS]> =
                regs.into_boxed_slice().try_into().map_err(|_| changelog::Error::Mismatch)?;
            StoreSet::Hll(regs)
        }
    };
    set_stores(b, &mut win, e.pos, set);
    b.put(e.pos, win);
    // Revisions −1 and 0 follow from the cursor; only later ones are kept.
    if e.revision >= 1 {
        b.revisions.insert(k, e.revision);
    } else if !b.revisions.is_empty() {
        b.revisions.remove(&k);
    }
    Ok(())
}

/// Sets the window at `pos` from a version 4 record's counters.
fn put_v4(b: &mut Bucket, k: u32, pos: u32, start: Millis, c: &Counters) {
    let mut win = Win::new(k);
    win.sold = sat32(c.units_sold);
    b.set_extra(k, [sat32(c.units_returned), sat32(c.preorder_units)]);
    win.events = u32::try_from(c.event_count).unwrap_or(u32::MAX);
    win.set_revenue(c.revenue_minor);
    b.note_event(&mut win, c.last_event_at.max(start));
    let set = StoreSet::of(clean(c.stores.iter().map(|&s| store32(s))));
    set_stores(b, &mut win, pos, set);
    b.put(pos, win);
}

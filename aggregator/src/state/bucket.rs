//! The windows of one bucket (window size × window start): a dense array of 28-byte
//! windows, one per grid × SKU that sold in it, in the order they were made.
//!
//! An event finds its window through its key's slot (`keys.rs`: the position of the key's
//! newest window of each size), so the open bucket needs no index. When the bucket
//! closes it is sorted by key hash once, and from then on late events find their window by
//! binary search; windows made after the close (a late event of a key that had none)
//! are appended and found through a small map. An open bucket that is not the newest of
//! its size (events a little out of order across a window boundary) builds a key → position
//! map on its first miss; it is dropped when the bucket closes.
//!
//! Windows are emitted in position order behind a cursor: the close walks a bounded
//! number of windows per flush (`close_chunk`), the rest wait for the next flush.

use crate::counters::{REVENUE_MAX, add_revenue};
use crate::ids::IdMap;
use crate::window::Millis;

use super::distinct::{self, StoreSet};
use super::keys::Keys;
use super::wins::Wins;

const DIRTY: u32 = 1 << 31;

/// One grid × SKU × window: 28 bytes, 4-aligned. Returned and pre-ordered units, which
/// few windows have, live in the bucket's `extra` map. The revenue is 48 bits (see
/// [`REVENUE_MAX`]) and shares a word with the newest event's time, kept in ticks of
/// the bucket's [`Bucket::quantum`] (1/65 536 of the window, rounded up to a whole ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Win {
    /// The key, with bit 31 set while the window changed since the last flush.
    key: u32,
    pub sold: i32,
    pub events: u32,
    /// Distinct stores, see `distinct.rs`.
    pub stores: [u32; 2],
    /// The revenue's low 32 bits.
    rev_lo: u32,
    /// The revenue's high 16 bits (signed) above the newest event's tick.
    rev_hi_tick: u32,
}

impl Win {
    /// A window of key `k` with no events.
    pub fn new(k: u32) -> Self {
        Win { key: k & !DIRTY, ..Win::default() }
    }

    /// The key.
    pub fn key(&self) -> u32 {
        self.key & !DIRTY
    }

    fn dirty(&self) -> bool {
        self.key & DIRTY != 0
    }

    /// The revenue, in minor units.
    pub fn revenue(&self) -> i64 {
        (i64::from((self.rev_hi_tick as i32) >> 16) << 32) | i64::from(self.rev_lo)
    }

    /// The revenue with `d` added, if it stays within [`REVENUE_MAX`].
    pub fn revenue_plus(&self, d: i64) -> Option<i64> {
        add_revenue(self.revenue(), d)
    }

    /// Sets the revenue, saturating at [`REVENUE_MAX`] (only a changelog of an older
    /// release can hold more).
    pub fn set_revenue(&mut self, r: i64) {
        let r = r.clamp(-REVENUE_MAX, REVENUE_MAX);
        self.rev_lo = r as u32;
        self.rev_hi_tick = ((((r >> 32) as i32) << 16) as u32) | (self.rev_hi_tick & 0xffff);
    }

    /// The newest event's time, in ticks from the window's start.
    pub fn tick(&self) -> u16 {
        self.rev_hi_tick as u16
    }

    /// Sets the newest event's tick.
    pub fn set_tick(&mut self, t: u16) {
        self.rev_hi_tick = (self.rev_hi_tick & 0xffff_0000) | u32::from(t);
    }
}

/// Milliseconds per tick of a window of `size`: the smallest whole number that fits the
/// window's offsets in 16 bits (5 ms at 5 m, 55 ms at 1 h, 1 319 ms at 1 d).
pub fn quantum(size: Millis) -> Millis {
    (size.max(1) as u64).div_ceil(1 << 16).max(1) as Millis
}

/// The windows of one size and start.
#[derive(Debug)]
pub struct Bucket {
    pub size_idx: usize,
    pub start: Millis,
    /// Milliseconds per tick of the newest event's time ([`quantum`] of the size).
    pub quantum: Millis,
    pub wins: Wins,
    /// Store sets of windows with more than two stores.
    pub spill: Vec<StoreSet>,
    /// Whether the bucket closed (its windows are emitted, in position order).
    pub closed: bool,
    /// Windows `[0, sorted)` are sorted by key hash (set when the bucket closes).
    pub sorted: u32,
    /// Windows before it have been emitted.
    pub cursor: u32,
    /// Key → position of the windows outside the sorted prefix, when built.
    index: Option<IdMap<u32, u32>>,
    /// Positions of windows that changed since the last flush.
    dirty: Vec<u32>,
    /// Revisions that are not the default (0 before the cursor, −1 from it on).
    pub revisions: IdMap<u32, i32>,
    /// Per key: units returned and pre-ordered, where not both 0.
    pub extra: IdMap<u32, [i32; 2]>,
    /// Changelog chunks of this bucket that are live: (seq, entries).
    pub chunks: Vec<(u32, u32)>,
    pub next_seq: u32,
    /// Whether its `B` record (closed, sorted, cursor) changed since the last flush.
    pub meta_dirty: bool,
}

impl Bucket {
    /// An empty open bucket.
    pub fn new(size_idx: usize, start: Millis, size: Millis) -> Self {
        Bucket {
            size_idx,
            start,
            quantum: quantum(size),
            wins: Wins::default(),
            spill: Vec::new(),
            closed: false,
            sorted: 0,
            cursor: 0,
            index: None,
            dirty: Vec::new(),
            revisions: IdMap::default(),
            extra: IdMap::default(),
            chunks: Vec::new(),
            next_seq: 0,
            meta_dirty: false,
        }
    }

    /// The key at `pos`, if any.
    pub fn key_at(&self, pos: u32) -> Option<u32> {
        self.wins.get(pos as usize).map(Win::key)
    }

    /// The position of key `k`'s window, without building anything (queries).
    pub fn find(&self, k: u32, keys: &Keys) -> Option<u32> {
        if let Some(p) = self.find_sorted(k, keys) {
            return Some(p);
        }
        match &self.index {
            Some(ix) => ix.get(&k).copied(),
            None => (self.sorted as usize..self.wins.len())
                .find(|&i| self.wins[i].key() == k)
                .map(|i| i as u32),
        }
    }

    /// The position of key `k`'s window, building the index of the unsorted part on the
    /// first miss.
    pub fn find_mut(&mut self, k: u32, keys: &Keys) -> Option<u32> {
        if let Some(p) = self.find_sorted(k, keys) {
            return Some(p);
        }
        let sorted = self.sorted as usize;
        let wins = &self.wins;
        let ix = self.index.get_or_insert_with(|| {
            let mut ix = IdMap::default();
            ix.reserve(wins.len() - sorted);
            for (i, w) in wins.iter().enumerate().skip(sorted) {
                ix.insert(w.key(), i as u32);
            }
            ix
        });
        ix.get(&k).copied()
    }

    fn find_sorted(&self, k: u32, keys: &Keys) -> Option<u32> {
        if self.sorted == 0 {
            return None;
        }
        let end = self.sorted as usize;
        let h = keys.hash(k);
        let first = self.wins.partition_point(end, |w| keys.hash(w.key()) < h);
        (first..end)
            .take_while(|&i| keys.hash(self.wins[i].key()) == h)
            .find(|&i| self.wins[i].key() == k)
            .map(|i| i as u32)
    }

    /// Appends a window for key `k`; its position.
    pub fn push(&mut self, k: u32) -> u32 {
        let pos = self.wins.len() as u32;
        self.wins.push(Win::new(k));
        if let Some(ix) = &mut self.index {
            ix.insert(k, pos);
        }
        pos
    }

    /// Places a restored window at `pos` (restore only; positions are the changelog's).
    pub fn put(&mut self, pos: u32, win: Win) {
        let pos = pos as usize;
        if pos >= self.wins.len() {
            self.wins.resize(pos + 1, Win::new(HOLE));
        }
        self.wins[pos] = Win { key: win.key(), ..win };
    }

    /// Marks the window at `pos` changed.
    pub fn touch(&mut self, pos: u32) {
        let w = &mut self.wins[pos as usize];
        if !w.dirty() {
            w.key |= DIRTY;
            self.dirty.push(pos);
        }
    }

    /// Asks the window at `pos` into cache (a hint).
    pub fn prefetch(&self, pos: u32) {
        self.wins.prefetch(pos as usize);
    }

    /// Adds store `x` to the window at `pos`.
    /// Adds store `x` to the window at `pos`; false only when its exact set already held
    /// `x` ([`distinct::insert`]).
    pub fn add_store(&mut self, pos: u32, x: u32) -> bool {
        let w = &mut self.wins[pos as usize];
        distinct::insert(&mut w.stores, &mut self.spill, x)
    }

    /// The time of the newest event of the window at `pos`, rounded down to a tick.
    pub fn last_event_at(&self, pos: u32) -> Millis {
        self.start + i64::from(self.wins[pos as usize].tick()) * self.quantum
    }

    /// The offset of the newest event from the window's start in whole ticks, as a
    /// changelog holds it (ms).
    pub fn last_off(&self, pos: u32) -> u32 {
        u32::try_from(i64::from(self.wins[pos as usize].tick()) * self.quantum).unwrap_or(u32::MAX)
    }

    /// Records an event at `at` in `win` (a window of this bucket): its tick moves up
    /// to the event's when newer.
    pub fn note_event(&self, win: &mut Win, at: Millis) {
        let t = (at.saturating_sub(self.start) / self.quantum).clamp(0, i64::from(u16::MAX));
        win.set_tick(win.tick().max(t as u16));
    }

    /// Units returned and pre-ordered in the window at `pos`.
    pub fn extra(&self, pos: u32) -> [i32; 2] {
        self.extra.get(&self.wins[pos as usize].key()).copied().unwrap_or_default()
    }

    /// Adds `q` to the returned (`which` 0) or pre-ordered (1) units of the window at
    /// `pos` (saturating).
    pub fn add_extra(&mut self, pos: u32, which: usize, q: i32) {
        let e = self.extra.entry(self.wins[pos as usize].key()).or_default();
        e[which] = e[which].saturating_add(q);
    }

    /// Sets the returned and pre-ordered units of key `k`'s window (restore).
    pub fn set_extra(&mut self, k: u32, extra: [i32; 2]) {
        if extra == [0, 0] {
            if !self.extra.is_empty() {
                self.extra.remove(&k);
            }
        } else {
            self.extra.insert(k, extra);
        }
    }

    /// `units_sold + preorder_units − units_returned` of the window at `pos`.
    pub fn net(&self, pos: u32) -> i64 {
        let [returned, preorder] = self.extra(pos);
        i64::from(self.wins[pos as usize].sold) + i64::from(preorder) - i64::from(returned)
    }

    /// Distinct stores of the window at `pos`.
    pub fn stores(&self, pos: u32) -> u64 {
        distinct::count(&self.wins[pos as usize].stores, &self.spill)
    }

    /// The revision the window at `pos` was last emitted with (−1: never).
    pub fn revision(&self, pos: u32) -> i32 {
        let k = self.wins[pos as usize].key();
        let default = if self.closed && pos < self.cursor { 0 } else { -1 };
        self.revisions.get(&k).copied().unwrap_or(default)
    }

    /// Sets the revision of the window at `pos` (after emitting it).
    pub fn set_revision(&mut self, pos: u32, rev: i32) {
        let k = self.wins[pos as usize].key();
        let default = if self.closed && pos < self.cursor { 0 } else { -1 };
        if rev == default {
            self.revisions.remove(&k);
        } else {
            self.revisions.insert(k, rev);
        }
    }

    /// Closes the bucket: sorts it by key hash (late events then find windows by binary
    /// search), so every window's position changes and the caller rewrites the bucket's
    /// changelog.
    pub fn close(&mut self, keys: &Keys) {
        self.wins.sort_by_hash(|w| keys.hash(w.key()));
        self.dirty.clear();
        for (i, w) in self.wins.iter().enumerate() {
            if w.dirty() {
                self.dirty.push(i as u32);
            }
        }
        self.closed = true;
        self.sorted = self.wins.len() as u32;
        self.index = Some(IdMap::default());
        self.meta_dirty = true;
    }

    /// The positions changed since the last flush, in order, clearing their marks.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        for &p in &d {
            self.wins[p as usize].key &= !DIRTY;
        }
        d
    }

    /// After a restore: drops positions no record filled and rebuilds the index of the
    /// windows after the sorted prefix.
    pub fn restored(&mut self) {
        if self.wins.iter().any(|w| w.key() == HOLE) {
            tracing::warn!(start = self.start, "changelog bucket has unfilled positions");
            let (mut sorted, mut cursor, mut out) = (self.sorted, self.cursor, 0u32);
            for i in 0..self.wins.len() {
                if self.wins[i].key() == HOLE {
                    sorted -= u32::from((i as u32) < self.sorted);
                    cursor -= u32::from((i as u32) < self.cursor);
                } else {
                    self.wins[out as usize] = self.wins[i];
                    out += 1;
                }
            }
            self.wins.truncate(out as usize);
            (self.sorted, self.cursor) = (sorted, cursor);
        }
        self.sorted = self.sorted.min(self.wins.len() as u32);
        self.cursor = self.cursor.min(self.wins.len() as u32);
        self.index = None;
        if self.closed {
            let mut ix = IdMap::default();
            for (i, w) in self.wins.iter().enumerate().skip(self.sorted as usize) {
                ix.insert(w.key(), i as u32);
            }
            self.index = Some(ix);
        }
    }

    /// Changelog entries of live chunks.
    pub fn chunk_entries(&self) -> usize {
        self.chunks.iter().map(|c| c.1 as usize).sum()
    }

    /// Estimated bytes.
    pub fn bytes(&self) -> usize {
        let map = |n: usize, entry: usize| n * (entry + 1) * 8 / 7;
        self.wins.bytes()
            + self.spill.iter().map(|s| s.heap_bytes() + 32).sum::<usize>()
            + self.index.as_ref().map_or(0, |ix| map(ix.capacity(), 8))
            + map(self.revisions.capacity(), 8)
            + map(self.extra.capacity(), 12)
            + self.dirty.capacity() * 4
            + self.chunks.capacity() * 8
    }
}

/// The buckets of a partition: per size index, ordered by start (a handful each: the
/// open window, those within their lateness, and any a device clock ran ahead to).
#[derive(Debug, Default)]
pub struct Buckets {
    sizes: Vec<Millis>,
    per_size: Vec<Vec<Bucket>>,
}

impl Buckets {
    /// No buckets, for windows of `sizes`.
    pub fn new(sizes: &[Millis]) -> Self {
        Buckets { sizes: sizes.to_vec(), per_size: sizes.iter().map(|_| Vec::new()).collect() }
    }

    fn find(&self, i: usize, start: Millis) -> Result<usize, usize> {
        let Some(v) = self.per_size.get(i) else { return Err(0) };
        // Most events are in the newest window of each size: its bucket is the last.
        match v.last() {
            Some(b) if b.start == start => Ok(v.len() - 1),
            _ => v.binary_search_by_key(&start, |b| b.start),
        }
    }

    /// The bucket of size index `i` starting at `start`.
    pub fn get(&self, i: usize, start: Millis) -> Option<&Bucket> {
        self.find(i, start).ok().map(|j| &self.per_size[i][j])
    }

    /// The bucket of size index `i` starting at `start`, mutable.
    pub fn get_mut(&mut self, i: usize, start: Millis) -> Option<&mut Bucket> {
        self.find(i, start).ok().map(|j| &mut self.per_size[i][j])
    }

    /// Where among its size's the bucket (size index `i`, `start`) is, if it holds key
    /// `k`'s window at `pos`: a place for [`Buckets::at_mut`].
    pub fn holding(&self, i: usize, start: Millis, pos: u32, k: u32) -> Option<usize> {
        let j = self.find(i, start).ok()?;
        (self.per_size[i][j].key_at(pos) == Some(k)).then_some(j)
    }

    /// The bucket at place `j` among size index `i`'s ([`Buckets::holding`]).
    pub fn at_mut(&mut self, i: usize, j: usize) -> &mut Bucket {
        &mut self.per_size[i][j]
    }

    /// The bucket, made when new.
    pub fn get_or_insert(&mut self, i: usize, start: Millis) -> &mut Bucket {
        let v = &mut self.per_size[i];
        let j = match v.binary_search_by_key(&start, |b| b.start) {
            Ok(j) => j,
            Err(j) => {
                v.insert(j, Bucket::new(i, start, self.sizes[i]));
                j
            }
        };
        &mut v[j]
    }

    /// Removes a bucket.
    pub fn remove(&mut self, i: usize, start: Millis) -> Option<Bucket> {
        self.find(i, start).ok().map(|j| self.per_size[i].remove(j))
    }

    /// (size index, start) of every bucket, by size then start.
    pub fn keys(&self) -> Vec<(usize, Millis)> {
        self.values().map(|b| (b.size_idx, b.start)).collect()
    }

    /// Every bucket, by size then start.
    pub fn values(&self) -> impl Iterator<Item = &Bucket> + '_ {
        self.per_size.iter().flatten()
    }

    /// Every bucket, mutable, by size then start.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Bucket> + '_ {
        self.per_size.iter_mut().flatten()
    }

    /// The buckets of size index `i`, by start.
    pub fn of_size(&self, i: usize) -> &[Bucket] {
        self.per_size.get(i).map_or(&[], Vec::as_slice)
    }
}

/// The key of a position no restored record filled.
const HOLE: u32 = DIRTY - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_twenty_eight_bytes() {
        assert_eq!((size_of::<Win>(), align_of::<Win>()), (28, 4));
    }

    proptest::proptest! {
        /// Revenue and tick share a word without touching each other, and the revenue
        /// holds every value within its bound.
        #[test]
        fn revenue_and_tick_pack_into_one_word(r in -REVENUE_MAX..=REVENUE_MAX, t: u16, r2 in -REVENUE_MAX..=REVENUE_MAX) {
            let mut w = Win::new(5);
            w.set_tick(t);
            w.set_revenue(r);
            proptest::prop_assert_eq!((w.revenue(), w.tick(), w.key()), (r, t, 5));
            w.set_revenue(r2);
            w.set_tick(t / 2);
            proptest::prop_assert_eq!((w.revenue(), w.tick()), (r2, t / 2));
            proptest::prop_assert_eq!(w.revenue_plus(1).is_some(), r2 < REVENUE_MAX);
        }

        /// A tick's time written to a changelog (ms) reads back to the same tick, for
        /// any window size; the time is at most one tick below the event's.
        #[test]
        fn ticks_round_trip_through_milliseconds(size in 1i64..=7 * 86_400_000, off_frac in 0.0f64..1.0) {
            let mut b = Bucket::new(0, 1_000, size);
            b.push(1);
            let off = ((size as f64 * off_frac) as i64).min(size - 1);
            let mut w = b.wins[0];
            b.note_event(&mut w, 1_000 + off);
            b.wins[0] = w;
            let at = b.last_event_at(0);
            proptest::prop_assert!(at <= 1_000 + off && at > 1_000 + off - b.quantum);
            let mut again = Win::new(1);
            b.note_event(&mut again, 1_000 + i64::from(b.last_off(0)));
            proptest::prop_assert_eq!(again.tick(), w.tick());
        }
    }

    #[test]
    fn a_closed_bucket_finds_windows_by_binary_search_and_appends_late_ones() {
        let mut keys = Keys::new(1);
        let ks: Vec<u32> = (0..50)
            .map(|i| {
                let sku = format!("S{i}");
                keys.find_or_insert("g", &sku)
            })
            .collect();
        let mut b = Bucket::new(0, 0, 300_000);
        for &k in &ks[..40] {
            let p = b.push(k);
            b.touch(p);
        }
        assert_eq!(b.find_mut(ks[7], &keys), Some(7));
        b.close(&keys);
        assert_eq!(b.take_dirty().len(), 40);
        for &k in &ks[..40] {
            let p = b.find(k, &keys).expect("found");
            assert_eq!(b.key_at(p), Some(k));
        }
        assert_eq!(b.find_mut(ks[45], &keys), None);
        let p = b.push(ks[45]);
        assert_eq!((p, b.find(ks[45], &keys)), (40, Some(40)));
        // Revisions: emitted windows before the cursor are at 0 unless recorded.
        b.cursor = 40;
        assert_eq!((b.revision(3), b.revision(40)), (0, -1));
        b.set_revision(3, 2);
        assert_eq!(b.revision(3), 2);
        b.set_revision(3, 0);
        assert!(b.revisions.is_empty());
    }
}

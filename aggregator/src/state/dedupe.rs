//! The set of event ids of one horizon, about 8.7 bytes an id, in 256 small cuckoo tables
//! of cache-line buckets.
//!
//! Ids are 64-bit hashes already (`ids::event_key`). An id is scrambled by an odd multiplier
//! (a bijection: ids arrive sorted on restore, since changelog chunks are, and must not
//! all land in one table); the low 8 bits of the result pick one of [`SHARDS`] tables,
//! which stores the other 56 bits in a 7-byte slot (the table a slot is in gives back the
//! 8 bits: nothing is lost; a value of 0 is a value like any other).
//!
//! A table is bucketed cuckoo hashing: a bucket is one 64-byte cache line of [`WAYS`]
//! slots and a count, and a value may live in either of two buckets (two independent
//! multiply-shift hashes of it). A search reads both lines — both are asked into cache
//! ahead of time by [`IdTable::prefetch`] — and compares at most 18 slots; a miss, every
//! new event, costs the same as a hit. An insert goes to the emptier of its two buckets;
//! when both are full it takes a slot of one and moves that slot's value to its other
//! bucket, and so on (a random walk, at most [`MAX_KICKS`] moves; far below the ~98 %
//! load where two 8-way choices stop fitting). A removal moves the bucket's last slot
//! into the freed one.
//!
//! A table grows by a quarter when 92 % of its slots are taken (or, rarely, when a walk
//! gives up); the 256 tables' sizes are staggered by a 256th of a step each, so they grow
//! one after another (their ids are spread evenly) and the set as a whole sits between
//! 74 % and 92 % full, 82 % on average: about 8.7 bytes an id at any size, with no step
//! that multiplies a million-id set's memory at once. A growth rebuilds one table (1/256
//! of the ids), in cache, each id moved to the bucket the same one of its hashes picks in
//! the bigger table (the old buckets read in order, the new ones written in order: one
//! line per id, where an insert reads two; 13–18 % less time an insert, growth included,
//! at 0.3–3 M ids). Growing by half instead (9.6 bytes an id) places every id about
//! twice over its life, not four times: inserts of 52 ns, not 72, at 300 000 ids alone,
//! but no difference the aggregator's runs could see (at 20 M keys, 368 k against 372 k
//! events per CPU-second, medians of three), where memory decides the fleet. Past one chunk a table's
//! buckets live in fixed-size chunks ([`CHUNK_BUCKETS`]), which the allocator hands from
//! one table to the next.
//!
//! A new horizon's set is made [`IdTable::expecting`] as many ids as the horizon's before
//! it (`PartitionState::id_set`: yesterday's for a day's). Below its share a table grows
//! by doubling, capped at the quarter step that holds the share, so each id is placed
//! about twice, not four times (inserts of 27 ns, not 63, at 300 000 ids; 32, not 74, at
//! 3 M). It never grows past the size of the set before it until it holds more ids, and
//! from there grows by quarters: a period with as many sales as the one before ends at
//! the size growth by quarters gives it (the same 8.7 bytes an id), one with fewer at
//! most at the size of the set before it.
//!
//! This replaced (2026-12-05) a table of sorted linear-probing runs at ~9.4 bytes an id
//! whose inserts shifted ~20 slots at its fill and whose searches walked a run: an insert
//! cost ~107 ns and a lookup ~34 ns at 300 000 ids; here ~72 ns and 26 ns (17 ns with
//! the buckets prefetched).

use crate::window::Millis;

/// Tables of a set (by the low 8 bits of the scrambled id).
const SHARDS: usize = 256;
/// Slots of a bucket: 9 × 7 bytes (a 4-byte and a 3-byte half each) and a count byte fill
/// one cache line.
const WAYS: usize = 9;
/// A table grows when this percentage of its slots would be taken.
const MAX_LOAD_PERCENT: usize = 92;
/// Moves an insert may make before the table grows instead.
const MAX_KICKS: usize = 500;
/// Buckets of a full chunk (64 KiB: one size for every table's chunks, so a chunk a
/// growing table frees is the next one any table takes; variable-size tables of a few
/// hundred KiB left holes in the allocator's pages that only same-size requests fill).
const CHUNK_BUCKETS: usize = 1 << 10;

/// The table of `id` and the value it stores there (56 bits).
fn split(id: u64) -> (usize, u64) {
    let mixed = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed & 0xff) as usize, mixed >> 8)
}

/// The two buckets of `v` in a table of `n` buckets (the same one twice when `n` is 1).
#[inline]
fn buckets_of(v: u64, n: usize) -> (usize, usize) {
    (first_bucket(v, n), second_bucket(v, n))
}

/// The first of `v`'s buckets in a table of `n` (multiply-shift of its bits).
#[inline]
fn first_bucket(v: u64, n: usize) -> usize {
    ((u128::from(v << 8) * n as u128) >> 64) as usize
}

/// The second of `v`'s buckets in a table of `n` (an independent mix of its bits).
#[inline]
fn second_bucket(v: u64, n: usize) -> usize {
    ((u128::from((v ^ (v >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)) * n as u128) >> 64) as usize
}

/// Buckets of table `shard` after `steps` growth steps: 1.25^(steps + shard / 256),
/// staggered by a 256th of a step from one table to the next.
fn table_buckets(shard: usize, steps: u32) -> usize {
    let e = f64::from(steps) + shard as f64 / SHARDS as f64;
    1.25f64.powf(e).ceil() as usize
}

/// One cache line: [`WAYS`] slots, each a value's low 32 bits in `lo` and its high 24 bits
/// in `hi` (the low halves side by side, so a search compares them all at once), then
/// the count.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    lo: [u32; WAYS],
    hi: [[u8; 3]; WAYS],
    len: u8,
}

impl Bucket {
    const EMPTY: Bucket = Bucket { lo: [0; WAYS], hi: [[0; 3]; WAYS], len: 0 };

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn get(&self, i: usize) -> u64 {
        let [a, b, c] = self.hi[i];
        u64::from(self.lo[i]) | u64::from_le_bytes([0, 0, 0, 0, a, b, c, 0])
    }

    fn set(&mut self, i: usize, v: u64) {
        let b = v.to_le_bytes();
        self.lo[i] = v as u32;
        self.hi[i] = [b[4], b[5], b[6]];
    }

    /// The slot holding `v`: every slot's low half compared (branch-free), then the high
    /// half of the few that match.
    fn position(&self, v: u64) -> Option<usize> {
        let lo = v as u32;
        let mut m = 0u32;
        for (i, &x) in self.lo.iter().enumerate() {
            m |= u32::from(x == lo) << i;
        }
        m &= (1 << self.len) - 1;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            if self.get(i) == v {
                return Some(i);
            }
            m &= m - 1;
        }
        None
    }

    /// The values it holds.
    fn values(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends `v`; false when the bucket is full.
    fn push(&mut self, v: u64) -> bool {
        let n = self.len();
        if n == WAYS {
            return false;
        }
        self.set(n, v);
        self.len += 1;
        true
    }

    /// Empties slot `i`: the last slot's value moves into it.
    fn remove_at(&mut self, i: usize) {
        let last = self.len() - 1;
        let x = self.get(last);
        self.set(i, x);
        self.set(last, 0);
        self.len -= 1;
    }
}

/// Empty chunks for `buckets` buckets: full ones, then one of the rest (the only chunk
/// whose size varies).
fn chunks_for(buckets: usize) -> Vec<Box<[Bucket]>> {
    let (full, rest) = (buckets / CHUNK_BUCKETS, buckets % CHUNK_BUCKETS);
    let sizes = std::iter::repeat_n(CHUNK_BUCKETS, full).chain((rest > 0).then_some(rest));
    sizes.map(|n| vec![Bucket::EMPTY; n].into_boxed_slice()).collect()
}

/// One of the set's tables.
#[derive(Debug)]
struct Table {
    chunks: Vec<Box<[Bucket]>>,
    buckets: usize,
    len: usize,
    /// Growth steps taken.
    steps: u32,
    /// The random walk's state (xorshift).
    rng: u64,
    /// Values it is expected to hold ([`IdTable::expecting`]): it doubles until it can.
    expected: usize,
    /// Rebuilds so far (each placed every value again).
    rebuilds: u32,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            chunks: Vec::new(),
            buckets: 0,
            len: 0,
            steps: 0,
            rng: 0x2545_f491_4f6c_dd1d,
            expected: 0,
            rebuilds: 0,
        }
    }
}

impl Table {
    fn bucket(&self, b: usize) -> &Bucket {
        &self.chunks[b / CHUNK_BUCKETS][b % CHUNK_BUCKETS]
    }

    fn bucket_mut(&mut self, b: usize) -> &mut Bucket {
        &mut self.chunks[b / CHUNK_BUCKETS][b % CHUNK_BUCKETS]
    }

    /// Where `v` is: its bucket and slot.
    fn find(&self, v: u64) -> Option<(usize, usize)> {
        if self.buckets == 0 {
            return None;
        }
        let (a, b) = buckets_of(v, self.buckets);
        let at = |x: usize| self.bucket(x).position(v).map(|i| (x, i));
        at(a).or_else(|| at(b))
    }

    fn contains(&self, v: u64) -> bool {
        self.find(v).is_some()
    }

    /// Whether one more value would take the table past its load limit.
    fn full(&self) -> bool {
        (self.len + 1) * 100 > self.buckets * WAYS * MAX_LOAD_PERCENT
    }

    fn insert(&mut self, v: u64, shard: usize) -> bool {
        if self.buckets > 0 {
            // One look at both buckets: whether `v` is there, and the emptier for it.
            let (a, b) = buckets_of(v, self.buckets);
            let (x, y) = (self.bucket(a), self.bucket(b));
            if x.position(v).is_some() || y.position(v).is_some() {
                return false;
            }
            let to = if y.len() < x.len() { b } else { a };
            if !self.full() && self.bucket_mut(to).push(v) {
                self.len += 1;
                return true;
            }
        }
        if self.full() {
            self.grow(shard, None);
        }
        if let Err(homeless) = self.place(v) {
            self.grow(shard, Some(homeless));
        }
        self.len += 1;
        true
    }

    /// Puts `v` (not in the table) in one of its buckets, moving others as needed; the value
    /// left without a slot when the walk gives up.
    fn place(&mut self, mut v: u64) -> Result<(), u64> {
        for _ in 0..MAX_KICKS {
            let (a, b) = buckets_of(v, self.buckets);
            let emptier = if self.bucket(b).len() < self.bucket(a).len() { b } else { a };
            if self.bucket_mut(emptier).push(v) {
                return Ok(());
            }
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let from = if self.rng & 1 == 0 { a } else { b };
            let i = (self.rng >> 8) as usize % WAYS;
            let out = self.bucket(from).get(i);
            self.bucket_mut(from).set(i, v);
            v = out;
        }
        Err(v)
    }

    /// Rebuilds the table with more buckets: its values (and `extra`) placed again, read
    /// bucket by bucket. A value goes to the bucket the same one of its two hashes picks
    /// in the new table (the hash that placed it: an old bucket's values land in new
    /// buckets that follow in order, one cache line read each), and takes the emptier-
    /// of-two walk of an insert only when that bucket is full.
    fn grow(&mut self, shard: usize, extra: Option<u64>) {
        let old = std::mem::take(&mut self.chunks);
        let old_buckets = self.buckets;
        loop {
            // Below the expected size, at least doubling (never past the step that holds
            // the expected values); then a quarter at a time.
            let enough = |n: usize| n * WAYS * MAX_LOAD_PERCENT >= self.expected * 100;
            let least = if enough(self.buckets) { self.buckets + 1 } else { self.buckets * 2 };
            let buckets = loop {
                let n = table_buckets(shard, self.steps);
                self.steps += 1;
                if n > self.buckets && (n >= least || enough(n)) {
                    break n;
                }
            };
            self.buckets = buckets;
            self.rebuilds += 1;
            // Drop the chunks of a try that did not fit before making the next.
            self.chunks = Vec::new();
            self.chunks = chunks_for(buckets);
            // A try that does not fit starts again, bigger.
            if self.replant(&old, old_buckets) && extra.is_none_or(|v| self.place(v).is_ok()) {
                return;
            }
        }
    }

    /// Puts the values of `old` (the buckets of a table of `old_buckets`) in this (bigger,
    /// empty) table: false when one finds no slot. A value held in bucket `from` goes to
    /// the bucket the same one of its hashes picks here (only that hash computed), and
    /// takes the walk of an insert only when that bucket is full.
    fn replant(&mut self, old: &[Box<[Bucket]>], old_buckets: usize) -> bool {
        let n = self.buckets;
        let held = old.iter().flat_map(|c| c.iter()).enumerate();
        for (from, b) in held {
            for v in b.values() {
                let to = match first_bucket(v, old_buckets) == from {
                    true => first_bucket(v, n),
                    false => second_bucket(v, n),
                };
                if !self.bucket_mut(to).push(v) && self.place(v).is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// Asks for the cache lines of `v`'s two buckets.
    fn prefetch(&self, v: u64) {
        if self.buckets > 0 {
            let (a, b) = buckets_of(v, self.buckets);
            for x in [a, b] {
                if let Some(c) = self.chunks.get(x / CHUNK_BUCKETS) {
                    prefetch_index::prefetch_index(&c[..], x % CHUNK_BUCKETS);
                }
            }
        }
    }

    /// Removes `v`; false when it was not there.
    fn remove(&mut self, v: u64) -> bool {
        let Some((b, i)) = self.find(v) else { return false };
        self.bucket_mut(b).remove_at(i);
        self.len -= 1;
        true
    }

    fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len() * size_of::<Bucket>()).sum::<usize>()
            + self.chunks.capacity() * 16
    }
}

/// A set of event ids.
#[derive(Debug)]
pub struct IdTable {
    tables: Box<[Table]>,
    len: usize,
}

impl Default for IdTable {
    fn default() -> Self {
        IdTable { tables: (0..SHARDS).map(|_| Table::default()).collect(), len: 0 }
    }
}

impl IdTable {
    /// An empty set expected to hold about `ids` ids (a new horizon's, as many as the
    /// horizon's before): until a table holds its share it grows by doubling, not by a
    /// quarter, so its ids are placed about twice, not four times, and it never grows
    /// past what the quarter steps give it at that share (holding that many, its memory
    /// is the same; on the way it is at most about twice what it holds, and never more
    /// than the share's size).
    pub fn expecting(ids: usize) -> Self {
        let mut set = IdTable::default();
        for t in set.tables.iter_mut() {
            t.expected = ids / SHARDS;
        }
        set
    }

    /// How many ids it expects (its tables' shares).
    #[cfg(test)]
    pub fn expected(&self) -> usize {
        self.tables.iter().map(|t| t.expected).sum()
    }

    /// Adds `id`; false when it was there.
    pub fn insert(&mut self, id: u64) -> bool {
        let (t, v) = split(id);
        let added = self.tables[t].insert(v, t);
        self.len += usize::from(added);
        added
    }

    /// Asks the CPU to fetch the slot where `id` is or would go into cache (a hint: no
    /// effect on the set).
    pub fn prefetch(&self, id: u64) {
        let (t, v) = split(id);
        self.tables[t].prefetch(v);
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        let (t, v) = split(id);
        self.tables[t].contains(v)
    }

    /// Removes `id`; false when it was not there.
    pub fn remove(&mut self, id: u64) -> bool {
        let (t, v) = split(id);
        let removed = self.tables[t].remove(v);
        self.len -= usize::from(removed);
        removed
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.tables.iter().map(Table::bytes).sum::<usize>() + SHARDS * size_of::<Table>()
    }
}

/// The live event-id sets of a partition, one per horizon (a day's sales for the day
/// window's lateness: a handful are live), by horizon. A sorted `Vec`, not a `BTreeMap`:
/// every event walks all of them twice (asking its buckets into cache, then searching),
/// and a walk over three entries of a tree cost ~90 instructions an event (callgrind).
#[derive(Debug, Default)]
pub struct IdSets(Vec<(Millis, IdTable)>);

impl IdSets {
    /// The same, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Millis, &mut IdTable)> + '_ {
        self.0.iter_mut().map(|(h, t)| (*h, t))
    }

    /// The sets, oldest first.
    pub fn values(&self) -> impl Iterator<Item = &IdTable> + '_ {
        self.0.iter().map(|(_, t)| t)
    }

    /// The horizons, oldest first.
    pub fn horizons(&self) -> impl Iterator<Item = Millis> + '_ {
        self.0.iter().map(|(h, _)| *h)
    }

    fn find(&self, h: Millis) -> Result<usize, usize> {
        self.0.binary_search_by_key(&h, |(x, _)| *x)
    }

    /// The set of horizon `h`.
    #[cfg(test)]
    pub fn get(&self, h: Millis) -> Option<&IdTable> {
        self.find(h).ok().map(|i| &self.0[i].1)
    }

    /// The set of horizon `h`, mutable.
    pub fn get_mut(&mut self, h: Millis) -> Option<&mut IdTable> {
        self.find(h).ok().map(|i| &mut self.0[i].1)
    }

    /// The set of horizon `h`, made by `make` (given the newest set before `h`, if any)
    /// when there is none.
    pub fn get_or_make(
        &mut self,
        h: Millis,
        make: impl FnOnce(Option<&IdTable>) -> IdTable,
    ) -> &mut IdTable {
        let i = match self.find(h) {
            Ok(i) => i,
            Err(i) => {
                let set = make(i.checked_sub(1).map(|b| &self.0[b].1));
                self.0.insert(i, (h, set));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Removes the set of horizon `h`.
    pub fn remove(&mut self, h: Millis) -> Option<IdTable> {
        self.find(h).ok().map(|i| self.0.remove(i).1)
    }

    /// Keeps the sets whose horizon `keep` says to.
    pub fn retain(&mut self, mut keep: impl FnMut(Millis) -> bool) {
        self.0.retain(|(h, _)| keep(*h));
    }

    /// How many sets.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// It is a set: an id is new exactly once, whatever the ids and their order.
        #[test]
        fn behaves_like_a_set(ids in proptest::collection::vec(prop_oneof![any::<u64>(), 0u64..50], 0..3000)) {
            let mut t = IdTable::default();
            let mut model = std::collections::HashSet::new();
            for id in ids {
                prop_assert_eq!(t.contains(id), model.contains(&id));
                prop_assert_eq!(t.insert(id), model.insert(id));
                prop_assert!(t.contains(id));
            }
            prop_assert_eq!(t.len(), model.len());
        }
    }

    /// The sets stay sorted by horizon whatever order they are made in; a new one is
    /// given the newest set before it; removal and retain keep the order.
    #[test]
    fn sets_by_horizon_stay_in_order() {
        let mut sets = IdSets::default();
        // Set `h` holds h / 10 ids; one made after another expects (its ids + 1) × 512.
        for h in [30, 10, 20, 40] {
            let set = sets.get_or_make(h, |before| {
                IdTable::expecting(before.map_or(256, |b| (b.len() + 1) * 512))
            });
            for id in 0..h / 10 {
                set.insert(id as u64);
            }
        }
        assert_eq!(sets.horizons().collect::<Vec<_>>(), [10, 20, 30, 40]);
        let expected = |sets: &IdSets, h| sets.get(h).map(IdTable::expected);
        // 30 and 10 had none before them when made; 20 had 10 (1 id), 40 had 30 (3 ids).
        assert_eq!([10, 20, 30, 40].map(|h| expected(&sets, h)), [256, 1024, 256, 2048].map(Some));
        assert!(sets.get_or_make(20, |_| IdTable::expecting(1 << 20)).contains(1));
        assert_eq!(expected(&sets, 20), Some(1024), "an existing set is not made again");
        assert!(sets.remove(20).is_some_and(|t| t.len() == 2));
        assert!(sets.get_mut(20).is_none() && sets.remove(20).is_none());
        sets.retain(|h| h != 40);
        let left: Vec<_> = sets.horizons().zip(sets.values().map(IdTable::len)).collect();
        assert_eq!(left, [(10, 1), (30, 3)]);
        assert_eq!(sets.len(), 2);
    }

    /// An id costs about 8.7 bytes (64 / 9 / 0.82) at any size, with no step: the tables
    /// grow one after another.
    #[test]
    fn an_id_costs_under_nine_bytes() {
        let mut t = IdTable::default();
        let mut per_id = Vec::new();
        for i in 0..1_000_000u64 {
            t.insert(i.wrapping_mul(0x2545_f491_4f6c_dd1d));
            if i % 100_000 == 99_999 {
                per_id.push(t.bytes() as f64 / t.len() as f64);
            }
        }
        assert_eq!(t.len(), 1_000_000);
        assert!(per_id.iter().all(|&b| (8.3..9.1).contains(&b)), "{per_id:?}");
    }

    /// A set expecting its ids holds them all, ends the size quarter steps give it, and
    /// grew in fewer steps (each id placed fewer times).
    #[test]
    fn a_set_expecting_its_ids_ends_where_growth_would() {
        let ids: Vec<u64> =
            (0..200_000u64).map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d)).collect();
        let mut grown = IdTable::default();
        let mut expecting = IdTable::expecting(ids.len());
        let mut most = 0f64;
        for &id in &ids {
            assert!(grown.insert(id) && expecting.insert(id));
            most = most.max(expecting.bytes() as f64 / grown.bytes() as f64);
        }
        assert!(ids.iter().all(|&id| expecting.contains(id)));
        assert_eq!(expecting.len(), grown.len());
        let (a, b) = (expecting.bytes() as f64, grown.bytes() as f64);
        assert!((a / b - 1.0).abs() < 0.02, "expecting {a} grown {b}");
        assert!(most < 2.6, "{most}× the memory of growth by quarters on the way");
        let rebuilds = |s: &IdTable| s.tables.iter().map(|t| t.rebuilds).sum::<u32>();
        assert!(rebuilds(&expecting) * 2 < rebuilds(&grown));
        let (mut more, mut plain) = (IdTable::expecting(1000), IdTable::default());
        for &id in &ids {
            assert!(more.insert(id) && plain.insert(id));
        }
        assert_eq!(more.bytes(), plain.bytes(), "past what it expected it grows by quarters");
    }

    /// One table past one chunk (every id in table 0): inserts, look-ups and removes
    /// agree with a set across chunk boundaries, and the table took full chunks.
    #[test]
    fn a_table_of_many_chunks_is_a_set() {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        // The inverse of the scrambling multiplier: ids whose scrambled low byte is 0.
        let mut inv = K;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(K.wrapping_mul(inv)));
        }
        let id = |r: u64| (r << 8).wrapping_mul(inv);
        let mut t = IdTable::default();
        let mut model = std::collections::HashSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x >> 8;
            assert_eq!(t.insert(id(r)), model.insert(r));
            if n % 7 == 0 {
                let gone = (x >> 20) & 0xff_ffff_ffff;
                assert_eq!(t.remove(id(gone)), model.remove(&gone));
                assert!(t.remove(id(r)) && model.remove(&r));
            }
        }
        assert_eq!(t.len(), model.len());
        assert!(t.tables[0].chunks.len() > 2);
        let chunks = &t.tables[0].chunks;
        let full = &chunks[..chunks.len() - 1];
        assert!(full.iter().all(|c| c.len() == CHUNK_BUCKETS));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), t.tables[0].buckets);
        assert!(model.iter().all(|&r| t.contains(id(r))));
        assert!((0..1000u64).all(|r| t.contains(id(r)) == model.contains(&r)));
    }

    /// A value a walk left without a slot is placed by the growth it causes, and every
    /// value already in the table stays found.
    #[test]
    fn a_growth_places_the_homeless_value() {
        let mut t = Table::default();
        let values: Vec<u64> =
            (1..=200u64).map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 8).collect();
        for &v in &values {
            assert!(t.insert(v, 7));
        }
        let before = t.buckets;
        t.grow(7, Some(42));
        assert!(t.buckets > before);
        assert!(t.contains(42) && values.iter().all(|&v| t.contains(v)));
        let held = t.chunks.iter().flat_map(|c| c.iter()).flat_map(Bucket::values).count();
        assert_eq!(held, values.len() + 1);
    }

    proptest! {
        /// Inserts and removes agree with a set, whatever the order and collisions (ids
        /// from a small range collide on home slots and form long runs).
        #[test]
        fn removes_keep_the_table_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..200), 0..600)) {
            let mut t = IdTable::default();
            let mut model = std::collections::HashSet::new();
            for (add, id) in ops {
                if add {
                    prop_assert_eq!(t.insert(id), model.insert(id));
                } else {
                    prop_assert_eq!(t.remove(id), model.remove(&id));
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for id in 0..200u64 {
                prop_assert_eq!(t.contains(id), model.contains(&id), "id {}", id);
            }
        }
    }
}

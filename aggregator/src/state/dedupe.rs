//! The set of event ids of one horizon, 7 bytes an id in 256 small ordered tables.
//!
//! Ids are 64-bit hashes already (`ids::event_key`). An id is scrambled by an odd multiplier
//! (a bijection: ids arrive sorted on restore, since changelog chunks are, and must not
//! all land in one table); the low 8 bits of the result pick one of [`SHARDS`] tables,
//! which stores the other 56 bits in a 7-byte slot (the table a slot is in gives back the
//! 8 bits: nothing is lost).
//!
//! A table is open addressing with linear probing whose runs are kept **sorted** (a
//! value's home is a monotone function of it, multiply-shift by its high bits, so this is
//! Robin Hood order): a search stops at the first slot holding a larger value, an insert
//! shifts the rest of its run up by one slot, a removal shifts it back. A miss — every new
//! event — reads about as many slots as a hit, where plain linear probing walks to the
//! end of the run. The slots run past the last home by a small slack instead of wrapping
//! around. A table grows by a quarter when 85 % of its homes are taken; the 256 tables'
//! sizes are staggered by a 256th of a step each, so they grow one after another (their
//! ids are spread evenly) and the set as a whole sits between 68 % and 85 % full: about
//! 9.4 bytes an id at any size (with the slack), with no step that multiplies a
//! million-id set's memory at once. A growth rebuilds one table (1/256 of the ids) in one
//! ordered pass, in cache. Past one chunk a table's slots live in fixed-size chunks
//! ([`CHUNK_SLOTS`]), which the allocator hands from one table to the next.
//!
//! 0 marks an empty slot; a value of 0 is stored as 1 (two ids then count as one: a
//! retry of an event whose scrambled id has 55 leading zeros may count once more in 2⁶³
//! — never in practice).

/// Tables of a set (by the low 8 bits of the scrambled id).
const SHARDS: usize = 256;
/// Homes of a table's first allocation.
const MIN_HOMES: usize = 8;
/// Bytes a slot.
const SLOT: usize = 7;
const MASK: u64 = (1 << 56) - 1;

/// The table of `id` and the value it stores there (never 0).
fn split(id: u64) -> (usize, u64) {
    let mixed = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed & 0xff) as usize, (mixed >> 8).max(1))
}

/// The home slot of a value in a table of `homes` (monotone in the value).
fn home(v: u64, homes: usize) -> usize {
    ((u128::from(v << 8) * homes as u128) >> 64) as usize
}

/// Homes of table `shard` after `steps` growth steps: [`MIN_HOMES`] × 1.25^(steps +
/// shard / 256), staggered by a 256th of a step from one table to the next.
fn table_homes(shard: usize, steps: u32) -> usize {
    let e = f64::from(steps) + shard as f64 / SHARDS as f64;
    (MIN_HOMES as f64 * 1.25f64.powf(e)).ceil() as usize
}

/// Slots past the last home: room for the last run to spill over.
fn slack(homes: usize) -> usize {
    16 + homes / 64
}

/// The value in slot `i` of `bytes` (0: empty).
fn read(bytes: &[u8], i: usize) -> u64 {
    bytes[i * SLOT..].first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b) & MASK)
}

/// Slots of a full chunk (56 KiB: one size for every table's chunks, so a chunk a
/// growing table frees is the next one any table takes; variable-size tables of a few
/// hundred KiB left holes in the allocator's pages that only same-size requests fill).
const CHUNK_SLOTS: usize = 1 << 13;

/// One of the set's tables.
#[derive(Debug, Default)]
struct Table {
    /// Slots of [`SLOT`] bytes in chunks of [`CHUNK_SLOTS`] and one of the rest, each
    /// with one byte of padding so every slot reads as a `u64`.
    chunks: Vec<Box<[u8]>>,
    homes: usize,
    slots: usize,
    len: usize,
    /// Growth steps taken.
    steps: u32,
}

/// Empty chunks for `slots` slots: full ones, then one of the rest (the only chunk whose
/// size varies; rounding the table up to whole chunks cost 8 % more memory at 5 M keys).
fn chunks_for(slots: usize) -> Vec<Box<[u8]>> {
    let (full, rest) = (slots / CHUNK_SLOTS, slots % CHUNK_SLOTS);
    let sizes = std::iter::repeat_n(CHUNK_SLOTS, full).chain((rest > 0).then_some(rest));
    sizes.map(|n| vec![0; n * SLOT + 1].into_boxed_slice()).collect()
}

/// The value in slot `i` of a table's `chunks`.
fn at(chunks: &[Box<[u8]>], i: usize) -> u64 {
    read(&chunks[i / CHUNK_SLOTS], i % CHUNK_SLOTS)
}

impl Table {
    fn get(&self, i: usize) -> u64 {
        at(&self.chunks, i)
    }

    fn set(&mut self, i: usize, v: u64) {
        let o = (i % CHUNK_SLOTS) * SLOT;
        self.chunks[i / CHUNK_SLOTS][o..o + SLOT].copy_from_slice(&v.to_le_bytes()[..SLOT]);
    }

    /// The first slot from `i` whose value `walk` refuses ([`Table::slots`] when there is
    /// none), a chunk at a time.
    fn scan(&self, mut i: usize, walk: impl Fn(u64) -> bool) -> usize {
        while i < self.slots {
            let base = i - i % CHUNK_SLOTS;
            let chunk = &self.chunks[i / CHUNK_SLOTS];
            let end = (base + CHUNK_SLOTS).min(self.slots);
            while i < end {
                if !walk(read(chunk, i - base)) {
                    return i;
                }
                i += 1;
            }
        }
        i
    }

    /// Where `v` is, or where it would go: the first slot from its home that is empty or
    /// holds a value not below it ([`Table::slots`] when there is none).
    fn find(&self, v: u64) -> (usize, bool) {
        let i = self.scan(home(v, self.homes), |x| x != 0 && x < v);
        (i, i < self.slots && self.get(i) == v)
    }

    fn insert(&mut self, v: u64, shard: usize) -> bool {
        if (self.len + 1) * 100 > self.homes * 85 {
            self.grow(shard);
        }
        loop {
            let (i, found) = self.find(v);
            if found {
                return false;
            }
            let j = self.scan(i, |x| x != 0);
            if j == self.slots {
                // The run reaches the end of the slack: grow (rare).
                self.grow(shard);
                continue;
            }
            if i / CHUNK_SLOTS == j / CHUNK_SLOTS {
                let (a, b) = (i % CHUNK_SLOTS, j % CHUNK_SLOTS);
                self.chunks[i / CHUNK_SLOTS].copy_within(a * SLOT..b * SLOT, (a + 1) * SLOT);
            } else {
                for k in (i..j).rev() {
                    let x = self.get(k);
                    self.set(k + 1, x);
                }
            }
            self.set(i, v);
            self.len += 1;
            return true;
        }
    }

    /// Rebuilds the table with more homes: its values in order, each at its new home or
    /// just after the previous one.
    fn grow(&mut self, shard: usize) {
        let old = std::mem::take(&mut self.chunks);
        let old_slots = self.slots;
        let values = || (0..old_slots).map(|i| at(&old, i)).filter(|&v| v != 0);
        'size: loop {
            let homes = loop {
                let h = table_homes(shard, self.steps);
                self.steps += 1;
                if h > self.homes {
                    break h;
                }
            };
            self.homes = homes;
            self.slots = homes + slack(homes);
            // Drop the chunks of a try that did not fit before making the next.
            self.chunks = Vec::new();
            self.chunks = chunks_for(self.slots);
            let mut next = 0;
            for v in values() {
                let i = home(v, homes).max(next);
                if i >= self.slots {
                    continue 'size;
                }
                self.set(i, v);
                next = i + 1;
            }
            return;
        }
    }

    /// Asks for the cache lines of `v`'s home slot and of the three slots after it (a
    /// search reads a few slots of its run; they may span two lines).
    fn prefetch(&self, v: u64) {
        if self.homes > 0 {
            let i = home(v, self.homes);
            if let Some(c) = self.chunks.get(i / CHUNK_SLOTS) {
                let at = (i % CHUNK_SLOTS) * SLOT;
                prefetch_index::prefetch_index(&c[..], at);
                prefetch_index::prefetch_index(&c[..], (at + 4 * SLOT).min(c.len() - 1));
            }
        }
    }

    fn contains(&self, v: u64) -> bool {
        self.homes > 0 && self.find(v).1
    }

    /// Removes `v`: the rest of its run that is not at home shifts back by one slot.
    fn remove(&mut self, v: u64) -> bool {
        if self.homes == 0 {
            return false;
        }
        let (i, found) = self.find(v);
        if !found {
            return false;
        }
        let mut k = i + 1;
        while k < self.slots {
            let x = self.get(k);
            if x == 0 || home(x, self.homes) >= k {
                break;
            }
            self.set(k - 1, x);
            k += 1;
        }
        self.set(k - 1, 0);
        self.len -= 1;
        true
    }

    fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum::<usize>() + self.chunks.capacity() * 16
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

    /// An id costs about 9.4 bytes (7 / 0.76 and the slack) at any size, with no step:
    /// the tables grow one after another.
    #[test]
    fn an_id_costs_about_nine_bytes() {
        let mut t = IdTable::default();
        let mut per_id = Vec::new();
        for i in 0..1_000_000u64 {
            t.insert(i.wrapping_mul(0x2545_f491_4f6c_dd1d));
            if i % 100_000 == 99_999 {
                per_id.push(t.bytes() as f64 / t.len() as f64);
            }
        }
        assert_eq!(t.len(), 1_000_000);
        assert!(per_id.iter().all(|&b| (9.2..9.9).contains(&b)), "{per_id:?}");
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
        assert!(full.iter().all(|c| c.len() == CHUNK_SLOTS * SLOT + 1));
        assert_eq!(chunks.iter().map(|c| c.len() / SLOT).sum::<usize>(), t.tables[0].slots);
        assert!(model.iter().all(|&r| t.contains(id(r))));
        assert!((0..1000u64).all(|r| t.contains(id(r)) == model.contains(&r)));
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

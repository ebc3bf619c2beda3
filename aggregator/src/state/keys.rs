//! The grid × SKU keys of one partition: grid and SKU strings interned once to `u32`s, a
//! slab of fixed-size key slots, and an index from the key's hash to its slot.
//!
//! A slot is `2 + S + ⌈(S + 1) / 2⌉` `u32`s for `S` window sizes (28 bytes at three
//! sizes): the grid and SKU ids, per size the position of the key's newest window in its
//! bucket, and per size the low 16 bits of that window's number, plus how many live
//! windows the key has. The index (`index.rs`) holds slot numbers (no key bytes of its
//! own) under [`key_hash`], a mix of the interned grid's and SKU's hashes: an event
//! interns its grid and SKU (two small, cache-resident tables), then one probe of the
//! index compares ids, not strings, and growing the index never re-reads a string. The
//! lookup can run in steps, each asking into cache what the next reads
//! ([`Keys::prefetch_index`], [`Keys::candidate`], [`Keys::prefetch_slot`],
//! [`Keys::confirm`]), so the events of a run overlap their misses.

use hashbrown::HashTable;

use super::index::KeyIndex;

/// The hash of a key from the hashes of its interned grid and SKU: cheap to recompute
/// (the index rehashes without touching a string) and a function of the strings only.
/// Closed buckets are sorted by it and restored in that order, so it is part of the
/// changelog format (version 5): `the_key_hash_is_stable` pins it.
pub fn key_hash(grid_hash: u64, sku_hash: u64) -> u64 {
    let x = grid_hash ^ sku_hash.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

/// No position: the key has no window of that size.
pub const NO_POS: u32 = u32::MAX;
/// Marks a free slot (in place of the grid id).
const FREE: u32 = u32::MAX;

/// Strings interned to dense `u32` ids, never freed (grids and SKUs are bounded by the
/// store registry and the catalog).
#[derive(Debug, Default)]
pub struct Interner {
    strings: Vec<Box<str>>,
    /// xxh3-64 of each string (`ids::short_id`).
    hashes: Vec<u64>,
    index: HashTable<u32>,
    bytes: usize,
}

fn str_hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Whether two strings are equal: those of 8 to 16 bytes (grid and SKU ids, as devices
/// send them) compared as two overlapping 8-byte words inline, where `==` calls `memcmp`
/// (~60 instructions an event for the two look-ups, callgrind).
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| {
            s.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()).map(u64::from_ne_bytes)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

impl Interner {
    /// The id of `s`, interning it when new.
    pub fn intern(&mut self, s: &str) -> u32 {
        let h = str_hash(s);
        let strings = &self.strings;
        if let Some(&id) = self.index.find(h, |&id| same(&strings[id as usize], s)) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX - 1);
        self.strings.push(s.into());
        self.hashes.push(h);
        self.bytes += s.len() + 24;
        let strings = &self.strings;
        self.index.insert_unique(h, id, |&id| str_hash(&strings[id as usize]));
        id
    }

    /// The id of `s`, if interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.index.find(str_hash(s), |&id| same(&self.strings[id as usize], s)).copied()
    }

    /// The string of `id`.
    pub fn str(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }

    /// The xxh3-64 hash of `id`'s string (equal to `ids::short_id` of it).
    pub fn hash(&self, id: u32) -> u64 {
        self.hashes.get(id as usize).copied().unwrap_or(0)
    }

    fn heap_bytes(&self) -> usize {
        self.bytes + self.index.capacity() * 5 + self.strings.capacity() * 16
    }

    /// Strings interned.
    pub fn len(&self) -> usize {
        self.strings.len()
    }
}

/// Keys per slab block (112 KiB at three sizes).
const SLAB_BLOCK: usize = 4096;

/// Where key `k`'s slot starts: its slab block and the offset in it.
fn place(stride: usize, k: u32) -> (usize, usize) {
    (k as usize / SLAB_BLOCK, (k as usize % SLAB_BLOCK) * stride)
}

fn slot_of(slab: &[Vec<u32>], stride: usize, k: u32) -> &[u32] {
    let (b, i) = place(stride, k);
    &slab[b][i..i + stride]
}

/// The index hash of any key, read from its slot (for the index to grow or shift back).
fn rehasher<'a>(
    slab: &'a [Vec<u32>],
    stride: usize,
    grids: &'a Interner,
    skus: &'a Interner,
) -> impl Fn(u32) -> u64 + 'a {
    move |k| {
        let slot = slot_of(slab, stride, k);
        key_hash(grids.hash(slot[0]), skus.hash(slot[1]))
    }
}

/// The 16-bit half `j` of a slot `s` of a key with `sizes` window sizes (after the grid,
/// the SKU and a position per size).
fn half_of(s: &[u32], sizes: usize, j: usize) -> u16 {
    let w = s[2 + sizes + j / 2];
    if j.is_multiple_of(2) { w as u16 } else { (w >> 16) as u16 }
}

/// Sets the 16-bit half `j` of a slot `s` (as [`half_of`] reads it).
fn put_half(s: &mut [u32], sizes: usize, j: usize, v: u16) {
    let w = &mut s[2 + sizes + j / 2];
    *w = if j.is_multiple_of(2) {
        (*w & 0xffff_0000) | u32::from(v)
    } else {
        (*w & 0x0000_ffff) | (u32::from(v) << 16)
    };
}

/// The keys of one partition.
#[derive(Debug)]
pub struct Keys {
    sizes: usize,
    stride: usize,
    /// Slots in blocks of [`SLAB_BLOCK`] keys (growing never copies).
    slab: Vec<Vec<u32>>,
    /// Slots made so far (live and free).
    slots: usize,
    free: Vec<u32>,
    index: KeyIndex,
    pub grids: Interner,
    pub skus: Interner,
    len: usize,
}

impl Keys {
    /// No keys, for `sizes` window sizes.
    pub fn new(sizes: usize) -> Self {
        Keys {
            sizes,
            stride: 2 + sizes + (sizes + 1).div_ceil(2),
            slab: Vec::new(),
            slots: 0,
            free: Vec::new(),
            index: KeyIndex::default(),
            grids: Interner::default(),
            skus: Interner::default(),
            len: 0,
        }
    }

    fn at(&self, k: u32) -> &[u32] {
        slot_of(&self.slab, self.stride, k)
    }

    fn at_mut(&mut self, k: u32) -> &mut [u32] {
        let (b, i) = place(self.stride, k);
        &mut self.slab[b][i..i + self.stride]
    }

    fn hash_of(&self, k: u32) -> u64 {
        rehasher(&self.slab, self.stride, &self.grids, &self.skus)(k)
    }

    /// The key of `grid` × `sku`.
    pub fn find(&self, grid: &str, sku: &str) -> Option<u32> {
        self.find_ids(self.grids.get(grid)?, self.skus.get(sku)?)
    }

    /// The key of interned grid `g` × SKU `s`.
    pub fn find_ids(&self, g: u32, s: u32) -> Option<u32> {
        self.find_hashed(self.ids_hash(g, s), g, s)
    }

    /// The index hash of interned grid `g` × SKU `s` ([`key_hash`]).
    pub fn ids_hash(&self, g: u32, s: u32) -> u64 {
        key_hash(self.grids.hash(g), self.skus.hash(s))
    }

    /// The key of interned grid `g` × SKU `s`, whose hash is `h`.
    pub fn find_hashed(&self, h: u64, g: u32, s: u32) -> Option<u32> {
        self.index.find(h, |k| self.is(k, g, s))
    }

    /// Asks into cache where the index keeps hash `h` (a hint).
    pub fn prefetch_index(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// The key most likely under hash `h`, read from the index alone (check it with
    /// [`Keys::confirm`]).
    pub fn candidate(&self, h: u64) -> Option<u32> {
        self.index.candidate(h)
    }

    /// Asks key `k`'s slot into cache (a hint): the lines of its first and its last word
    /// (a slot runs over into a second line in some positions, and its window positions
    /// are at its end; both always, as for windows in `wins.rs`).
    pub fn prefetch_slot(&self, k: u32) {
        let (b, i) = place(self.stride, k);
        if let Some(b) = self.slab.get(b) {
            prefetch_index::prefetch_index(&b[..], i);
            prefetch_index::prefetch_index(&b[..], i + self.stride - 1);
        }
    }

    /// The key of interned grid `g` × SKU `s` under hash `h`, given the index's
    /// `candidate` for it: the candidate when it is the key (most often), else found.
    pub fn confirm(&self, candidate: Option<u32>, h: u64, g: u32, s: u32) -> Option<u32> {
        match candidate {
            Some(k) if self.is(k, g, s) => Some(k),
            _ => self.find_hashed(h, g, s),
        }
    }

    /// The key of `grid` × `sku`, made when new.
    pub fn find_or_insert(&mut self, grid: &str, sku: &str) -> u32 {
        let (g, s) = (self.grids.intern(grid), self.skus.intern(sku));
        self.find_or_insert_ids(g, s)
    }

    /// Whether `k` is the key of interned grid `g` × SKU `s`.
    pub fn is(&self, k: u32, g: u32, s: u32) -> bool {
        (k as usize) < self.slots && {
            let slot = self.at(k);
            slot[0] == g && slot[1] == s
        }
    }

    /// The key of interned grid `g` × SKU `s`, made when new.
    pub fn find_or_insert_ids(&mut self, g: u32, s: u32) -> u32 {
        let hash = self.ids_hash(g, s);
        match self.find_hashed(hash, g, s) {
            Some(k) => k,
            None => self.insert(hash, g, s),
        }
    }

    fn insert(&mut self, hash: u64, g: u32, s: u32) -> u32 {
        let k = match self.free.pop() {
            Some(k) => k,
            None => {
                let k = u32::try_from(self.slots).unwrap_or(u32::MAX - 1);
                if self.slots.is_multiple_of(SLAB_BLOCK) {
                    self.slab.push(vec![0; SLAB_BLOCK * self.stride]);
                }
                self.slots += 1;
                k
            }
        };
        let sizes = self.sizes;
        let slot = self.at_mut(k);
        slot.fill(0);
        slot[0] = g;
        slot[1] = s;
        slot[2..2 + sizes].fill(NO_POS);
        self.len += 1;
        let rehash = rehasher(&self.slab, self.stride, &self.grids, &self.skus);
        self.index.insert(hash, k, rehash);
        k
    }

    /// Frees key `k` (its last window expired).
    pub fn remove(&mut self, k: u32) {
        let h = self.hash_of(k);
        let rehash = rehasher(&self.slab, self.stride, &self.grids, &self.skus);
        self.index.remove(h, k, rehash);
        self.at_mut(k)[0] = FREE;
        self.free.push(k);
        self.len -= 1;
    }

    /// The grid of `k`.
    pub fn grid(&self, k: u32) -> &str {
        self.grids.str(self.at(k)[0])
    }

    /// The interned grid id of `k`.
    pub fn grid_id(&self, k: u32) -> u32 {
        self.at(k)[0]
    }

    /// The interned SKU id of `k`.
    pub fn sku_id(&self, k: u32) -> u32 {
        self.at(k)[1]
    }

    /// Resets every key's live-window count and slots (restore rebuilds them).
    pub fn clear_windows(&mut self) {
        for k in self.iter().collect::<Vec<_>>() {
            let sizes = self.sizes;
            let slot = self.at_mut(k);
            slot[2..2 + sizes].fill(NO_POS);
            slot[2 + sizes..].fill(0);
        }
    }

    /// The number of live windows of `k`.
    pub fn windows_of(&self, k: u32) -> u16 {
        self.half(k, self.sizes)
    }

    /// The SKU of `k`.
    pub fn sku(&self, k: u32) -> &str {
        self.skus.str(self.at(k)[1])
    }

    /// The sort and index hash of `k` ([`key_hash`]).
    pub fn hash(&self, k: u32) -> u64 {
        self.hash_of(k)
    }

    fn half(&self, k: u32, j: usize) -> u16 {
        half_of(self.at(k), self.sizes, j)
    }

    fn set_half(&mut self, k: u32, j: usize, v: u16) {
        let sizes = self.sizes;
        put_half(self.at_mut(k), sizes, j, v);
    }

    /// Position of `k`'s newest window of size index `i` in its bucket ([`NO_POS`]:
    /// none), and the low 16 bits of that window's number.
    #[inline]
    pub fn slot(&self, k: u32, i: usize) -> (u32, u16) {
        let s = self.at(k);
        (s[2 + i], half_of(s, self.sizes, i))
    }

    /// Sets `k`'s newest window of size index `i` (one look-up of the slot, inlined: a
    /// sale that makes windows calls it once for each).
    #[inline]
    pub fn set_slot(&mut self, k: u32, i: usize, pos: u32, number: u16) {
        let sizes = self.sizes;
        let s = self.at_mut(k);
        s[2 + i] = pos;
        put_half(s, sizes, i, number);
    }

    /// Counts a new live window of `k` (as [`Keys::set_slot`]).
    #[inline]
    pub fn add_window(&mut self, k: u32) {
        let sizes = self.sizes;
        let s = self.at_mut(k);
        let n = half_of(s, sizes, sizes);
        put_half(s, sizes, sizes, n.saturating_add(1));
    }

    /// Counts a dropped window of `k`; true when it has none left.
    pub fn drop_window(&mut self, k: u32) -> bool {
        let n = self.half(k, self.sizes).saturating_sub(1);
        self.set_half(k, self.sizes, n);
        n == 0
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every live key.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let n = u32::try_from(self.slots).unwrap_or(u32::MAX);
        (0..n).filter(|&k| self.at(k)[0] != FREE)
    }

    /// Estimated bytes (slab, index, interned strings).
    pub fn bytes(&self) -> usize {
        self.slab.len() * SLAB_BLOCK * self.stride * 4
            + self.index.bytes()
            + self.free.capacity() * 4
            + self.grids.heap_bytes()
            + self.skus.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Strings compare as `==` does, whatever their lengths and where they differ.
        #[test]
        fn same_is_equality(a in "[a-c]{0,20}", b in "[a-c]{0,20}", cut in 0usize..20) {
            proptest::prop_assert_eq!(same(&a, &b), a == b);
            // Equal up to one byte, at any place, of the same length.
            let mut c = a.clone().into_bytes();
            if let Some(x) = c.get_mut(cut) {
                *x = b'd';
            }
            let c = String::from_utf8(c).unwrap_or_default();
            proptest::prop_assert_eq!(same(&a, &c), a == c);
            proptest::prop_assert!(same(&a, &a.clone()));
        }
    }

    use super::*;

    #[test]
    fn keys_are_found_freed_and_reused() {
        let mut keys = Keys::new(3);
        assert_eq!(keys.stride * 4, 28, "28 bytes per key at three sizes");
        let a = keys.find_or_insert("g1", "A");
        let b = keys.find_or_insert("g1", "B");
        assert_ne!(a, b);
        assert_eq!(keys.find_or_insert("g1", "A"), a);
        assert_eq!((keys.grid(b), keys.sku(b)), ("g1", "B"));
        assert_eq!(keys.slot(a, 1), (NO_POS, 0));
        keys.set_slot(a, 1, 7, 0xbeef);
        keys.set_slot(a, 2, 9, 0x1234);
        keys.add_window(a);
        keys.add_window(a);
        assert_eq!((keys.slot(a, 1), keys.slot(a, 2)), ((7, 0xbeef), (9, 0x1234)));
        assert!(!keys.drop_window(a));
        assert!(keys.drop_window(a));
        keys.remove(a);
        assert_eq!(keys.find("g1", "A"), None);
        assert_eq!(keys.len(), 1);
        let c = keys.find_or_insert("g2", "A");
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(keys.slot(c, 1), (NO_POS, 0), "a reused slot starts empty");
        assert_eq!(keys.iter().count(), 2);
        assert_eq!(keys.grids.get("g2"), Some(1));
    }

    /// Closed buckets are sorted by the key hash and restored as they were written: the
    /// function may only change with a new changelog version.
    #[test]
    fn the_key_hash_is_stable() {
        let mut keys = Keys::new(3);
        let k = keys.find_or_insert("8831aa5a8bfffff", "MILK-1L");
        assert_eq!(keys.hash(k), 0xd00b_d10c_f132_84e8, "{:#x}", keys.hash(k));
    }
}

//! The grid × SKU keys of one partition: grid and SKU strings interned once to `u32`s, a
//! slab of fixed-size key slots, and an index from the key's hash to its slot.
//!
//! A slot is `2 + S + ⌈(S + 1) / 2⌉` `u32`s for `S` window sizes (28 bytes at three
//! sizes): the grid and SKU ids, per size the position of the key's newest window in its
//! bucket, and per size the low 16 bits of that window's number, plus how many live
//! windows the key has. The index is a `hashbrown::HashTable<u32>` of slot numbers (no
//! key bytes of its own): one hash per event finds the key, and the strings are compared
//! through the interner.

use hashbrown::HashTable;

use crate::ids::join_hash;

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

impl Interner {
    /// The id of `s`, interning it when new.
    pub fn intern(&mut self, s: &str) -> u32 {
        let h = str_hash(s);
        let strings = &self.strings;
        if let Some(&id) = self.index.find(h, |&id| &*strings[id as usize] == s) {
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
        self.index.find(str_hash(s), |&id| &*self.strings[id as usize] == s).copied()
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
}

/// The keys of one partition.
#[derive(Debug)]
pub struct Keys {
    sizes: usize,
    stride: usize,
    slab: Vec<u32>,
    free: Vec<u32>,
    index: HashTable<u32>,
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
            free: Vec::new(),
            index: HashTable::new(),
            grids: Interner::default(),
            skus: Interner::default(),
            len: 0,
        }
    }

    fn at(&self, k: u32) -> &[u32] {
        let i = k as usize * self.stride;
        &self.slab[i..i + self.stride]
    }

    fn at_mut(&mut self, k: u32) -> &mut [u32] {
        let i = k as usize * self.stride;
        &mut self.slab[i..i + self.stride]
    }

    fn hash_of(&self, k: u32) -> u64 {
        let s = self.at(k);
        join_hash(self.grids.str(s[0]), self.skus.str(s[1]))
    }

    /// The key of `grid` × `sku`, whose [`join_hash`] is `hash`.
    pub fn find(&self, hash: u64, grid: &str, sku: &str) -> Option<u32> {
        self.index
            .find(hash, |&k| {
                let s = self.at(k);
                self.grids.str(s[0]) == grid && self.skus.str(s[1]) == sku
            })
            .copied()
    }

    /// The key of `grid` × `sku`, made when new.
    pub fn find_or_insert(&mut self, hash: u64, grid: &str, sku: &str) -> u32 {
        if let Some(k) = self.find(hash, grid, sku) {
            return k;
        }
        let (g, s) = (self.grids.intern(grid), self.skus.intern(sku));
        self.insert(hash, g, s)
    }

    /// The key of interned grid `g` × SKU `s` (whose strings' [`join_hash`] is `hash`),
    /// made when new: compares ids, not strings (restore, where a chunk's dictionary is
    /// interned once).
    pub fn find_or_insert_ids(&mut self, hash: u64, g: u32, s: u32) -> u32 {
        let found = self.index.find(hash, |&k| {
            let slot = self.at(k);
            slot[0] == g && slot[1] == s
        });
        match found {
            Some(&k) => k,
            None => self.insert(hash, g, s),
        }
    }

    fn insert(&mut self, hash: u64, g: u32, s: u32) -> u32 {
        let k = match self.free.pop() {
            Some(k) => k,
            None => {
                let k = u32::try_from(self.slab.len() / self.stride).unwrap_or(u32::MAX - 1);
                // Grow by a quarter, not double: the slab is most of a key's bytes.
                if self.slab.len() + self.stride > self.slab.capacity() {
                    self.slab.reserve_exact((self.slab.len() / 4).max(self.stride * 1024));
                }
                self.slab.resize(self.slab.len() + self.stride, 0);
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
        let (slab, stride, grids, skus) = (&self.slab, self.stride, &self.grids, &self.skus);
        self.index.insert_unique(hash, k, |&k| {
            let i = k as usize * stride;
            join_hash(grids.str(slab[i]), skus.str(slab[i + 1]))
        });
        k
    }

    /// Frees key `k` (its last window expired).
    pub fn remove(&mut self, k: u32) {
        let h = self.hash_of(k);
        if let Ok(e) = self.index.find_entry(h, |&x| x == k) {
            e.remove();
        }
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

    /// The sort and index hash of `k` ([`join_hash`] of its grid and SKU).
    pub fn hash(&self, k: u32) -> u64 {
        self.hash_of(k)
    }

    fn half(&self, k: u32, j: usize) -> u16 {
        let w = self.at(k)[2 + self.sizes + j / 2];
        if j.is_multiple_of(2) { w as u16 } else { (w >> 16) as u16 }
    }

    fn set_half(&mut self, k: u32, j: usize, v: u16) {
        let sizes = self.sizes;
        let w = &mut self.at_mut(k)[2 + sizes + j / 2];
        *w = if j.is_multiple_of(2) {
            (*w & 0xffff_0000) | u32::from(v)
        } else {
            (*w & 0x0000_ffff) | (u32::from(v) << 16)
        };
    }

    /// Position of `k`'s newest window of size index `i` in its bucket ([`NO_POS`]:
    /// none), and the low 16 bits of that window's number.
    pub fn slot(&self, k: u32, i: usize) -> (u32, u16) {
        (self.at(k)[2 + i], self.half(k, i))
    }

    /// Sets `k`'s newest window of size index `i`.
    pub fn set_slot(&mut self, k: u32, i: usize, pos: u32, number: u16) {
        self.at_mut(k)[2 + i] = pos;
        self.set_half(k, i, number);
    }

    /// Counts a new live window of `k`.
    pub fn add_window(&mut self, k: u32) {
        let n = self.half(k, self.sizes);
        self.set_half(k, self.sizes, n.saturating_add(1));
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
        let n = u32::try_from(self.slab.len() / self.stride).unwrap_or(u32::MAX);
        (0..n).filter(|&k| self.at(k)[0] != FREE)
    }

    /// Estimated bytes (slab, index, interned strings).
    pub fn bytes(&self) -> usize {
        self.slab.capacity() * 4
            + self.index.capacity() * 5
            + self.free.capacity() * 4
            + self.grids.heap_bytes()
            + self.skus.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_freed_and_reused() {
        let mut keys = Keys::new(3);
        assert_eq!(keys.stride * 4, 28, "28 bytes per key at three sizes");
        let a = keys.find_or_insert(join_hash("g1", "A"), "g1", "A");
        let b = keys.find_or_insert(join_hash("g1", "B"), "g1", "B");
        assert_ne!(a, b);
        assert_eq!(keys.find_or_insert(join_hash("g1", "A"), "g1", "A"), a);
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
        assert_eq!(keys.find(join_hash("g1", "A"), "g1", "A"), None);
        assert_eq!(keys.len(), 1);
        let c = keys.find_or_insert(join_hash("g2", "A"), "g2", "A");
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(keys.slot(c, 1), (NO_POS, 0), "a reused slot starts empty");
        assert_eq!(keys.iter().count(), 2);
        assert_eq!(keys.grids.get("g2"), Some(1));
    }
}

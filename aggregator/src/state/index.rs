//! The index from a key's hash to its slot number in the slab (`keys.rs`): open
//! addressing with linear probing over a power-of-two array of `u32` entries, at most 7/8
//! full. An entry is the slot number plus one (0: empty) and, in the high bits the number
//! does not need, a tag of the hash, so a probe reads the slab only for an entry whose
//! tag matches (a false match is one in 2^(31 − log₂ capacity): one in 64 at 2²⁵ entries).
//!
//! What a general hash table does not give, this one does: the line where a hash's probe
//! starts is computable, so [`KeyIndex::prefetch`] asks it into cache many events ahead,
//! and [`KeyIndex::candidate`] reads, from that line alone, the slot to ask into cache
//! next. A lookup's three dependent cache misses (index, slab slot, windows) are then each
//! overlapped with other events' work (`PartitionState::apply_sales`), where
//! `hashbrown`'s `HashTable` (control bytes, then a slot, then the slab) made the first
//! two stall their own event. 4 bytes an entry: 4.6–9.1 bytes a key, against 5.7–11.4
//! for `HashTable<u32>`.
//!
//! Removal shifts the entries of the probe run after the removed one back (no
//! tombstones), so the table never fills with dead entries; it re-hashes those entries'
//! keys (the caller's `rehash`, from the slab), as growth does.

/// Most entries a table has (4 GiB): about 940 million keys in one partition, far past
/// what the memory of one process holds (160 bytes a key).
const MAX_BITS: u32 = 30;
/// Entries in a 64-byte cache line.
const LINE: usize = 16;

/// A key index.
#[derive(Debug, Default)]
pub struct KeyIndex {
    entries: Vec<u32>,
    /// log₂ of the capacity (0 while empty).
    bits: u32,
    len: usize,
}

impl KeyIndex {
    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// Where the slot number ends (bits below hold it plus one).
    fn shift(&self) -> u32 {
        self.bits + 1
    }

    fn tag(&self, h: u64) -> u32 {
        // The high half of the hash; the position takes the low bits.
        (h >> 32) as u32 & (u32::MAX >> self.shift())
    }

    fn entry(&self, h: u64, k: u32) -> u32 {
        (self.tag(h) << self.shift()) | (k + 1)
    }

    fn key(&self, e: u32) -> u32 {
        (e & (u32::MAX >> (31 - self.bits))) - 1
    }

    fn home(&self, h: u64) -> usize {
        h as usize & self.mask()
    }

    /// Keys indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * 4
    }

    /// Asks into cache the line where the probe for hash `h` starts, and the next when
    /// the start is near the line's end (a hint; never blocks).
    pub fn prefetch(&self, h: u64) {
        if self.entries.is_empty() {
            return;
        }
        let i = self.home(h);
        prefetch_index::prefetch_index(&self.entries[..], i);
        if i % LINE > LINE * 3 / 4 {
            prefetch_index::prefetch_index(&self.entries[..], (i + LINE) & self.mask());
        }
    }

    /// The first key whose tag matches hash `h` (the one to check first), if any before
    /// the probe run ends.
    pub fn candidate(&self, h: u64) -> Option<u32> {
        self.find(h, |_| true)
    }

    /// The key under hash `h` for which `eq` holds.
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let (mask, shift, tag) = (self.mask(), self.shift(), self.tag(h));
        let mut i = self.home(h);
        loop {
            let e = self.entries[i];
            if e == 0 {
                return None;
            }
            if e >> shift == tag && eq(self.key(e)) {
                return Some(self.key(e));
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds key `k` under hash `h` (not there yet); `rehash` gives any indexed key's hash
    /// (for growing).
    pub fn insert(&mut self, h: u64, k: u32, rehash: impl Fn(u32) -> u64) {
        // 7/8 full at most, and room for the slot number beside the tag.
        while (self.len + 1) * 8 > self.entries.len() * 7 || u64::from(k) + 1 > 1u64 << self.bits {
            if self.bits >= MAX_BITS {
                break;
            }
            self.grow(&rehash);
        }
        // Past 2³⁰ entries (MAX_BITS) the table would have to stop growing: unreachable
        // before memory runs out (a billion keys of ~160 bytes), and refused loudly
        // rather than corrupting an entry.
        assert!(
            self.len < self.mask() && u64::from(k) < 1u64 << self.bits,
            "a partition's key index is full ({} keys, slot {k})",
            self.len
        );
        self.place(h, k);
        self.len += 1;
    }

    fn place(&mut self, h: u64, k: u32) {
        let (mask, e) = (self.mask(), self.entry(h, k));
        let mut i = self.home(h);
        while self.entries[i] != 0 {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    fn grow(&mut self, rehash: &impl Fn(u32) -> u64) {
        let bits = if self.entries.is_empty() { 4 } else { self.bits + 1 };
        let old = std::mem::replace(&mut self.entries, vec![0; 1 << bits]);
        let old_bits = std::mem::replace(&mut self.bits, bits);
        let low = u32::MAX >> (31 - old_bits);
        for e in old.into_iter().filter(|&e| e != 0) {
            let k = (e & low) - 1;
            self.place(rehash(k), k);
        }
    }

    /// Removes key `k`, indexed under hash `h`; `rehash` gives any indexed key's hash
    /// (the run after it shifts back). False when it was not there.
    pub fn remove(&mut self, h: u64, k: u32, rehash: impl Fn(u32) -> u64) -> bool {
        if self.len == 0 {
            return false;
        }
        let (mask, e) = (self.mask(), self.entry(h, k));
        let mut hole = self.home(h);
        loop {
            match self.entries[hole] {
                0 => return false,
                x if x == e => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // An entry after the hole moves into it unless its home lies after the hole
        // (cyclically, up to its own place): then it would be before its home.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let x = self.entries[j];
            if x == 0 {
                break;
            }
            let home = self.home(rehash(self.key(x)));
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.entries[hole] = x;
                hole = j;
            }
        }
        self.entries[hole] = 0;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A hash with few distinct home positions and tags, so runs are long and tags
    /// collide: every path of probing, growing and shifting back is taken.
    fn weak(k: u32, salt: u64) -> u64 {
        let x = (u64::from(k) ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x >> 61) | ((x >> 62) << 32)
    }

    fn strong(k: u32, salt: u64) -> u64 {
        crate::state::keys::key_hash(u64::from(k), salt)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The index answers as a map from key to presence does, over random inserts and
        /// removals of slot numbers (reused after removal, as the slab does), with strong
        /// and with deliberately colliding hashes.
        #[test]
        fn the_index_agrees_with_a_map(
            ops in proptest::collection::vec((any::<bool>(), 0u32..120), 1..400),
            salt in any::<u64>(),
            weak_hash in any::<bool>(),
        ) {
            let hash = |k: u32| if weak_hash { weak(k, salt) } else { strong(k, salt) };
            let mut ix = KeyIndex::default();
            let mut model: HashMap<u32, ()> = HashMap::new();
            for (n, (add, k)) in ops.into_iter().enumerate() {
                if add && !model.contains_key(&k) {
                    ix.insert(hash(k), k, hash);
                    model.insert(k, ());
                } else if !add {
                    prop_assert_eq!(ix.remove(hash(k), k, hash), model.remove(&k).is_some());
                }
                prop_assert_eq!(ix.len(), model.len());
                prop_assert!(ix.len() * 8 <= ix.entries.len() * 7);
                if n % 8 != 0 {
                    continue;
                }
                for q in 0..120u32 {
                    let found = ix.find(hash(q), |x| x == q);
                    prop_assert_eq!(found, model.contains_key(&q).then_some(q), "key {}", q);
                }
            }
        }
    }

    #[test]
    fn a_candidate_is_the_first_key_of_the_hash_tag() {
        let mut ix = KeyIndex::default();
        let h = |k: u32| strong(k, 7);
        for k in 0..10_000 {
            ix.insert(h(k), k, h);
        }
        let hits = (0..10_000).filter(|&k| ix.candidate(h(k)) == Some(k)).count();
        // Tags of 31 − 14 = 17 bits: a false first match is rare.
        assert!(hits > 9_990, "{hits} of 10 000 candidates right");
        assert_eq!(ix.bytes(), (1 << 14) * 4, "16 384 entries hold 10 000 keys");
    }

    #[test]
    fn slot_numbers_past_the_capacity_grow_the_table() {
        let mut ix = KeyIndex::default();
        let h = |k: u32| strong(k, 1);
        ix.insert(h(1_000), 1_000, h);
        assert_eq!(ix.find(h(1_000), |k| k == 1_000), Some(1_000));
        assert!(ix.entries.len() >= 1_024);
        assert!(!ix.remove(h(5), 5, h));
        assert!(ix.remove(h(1_000), 1_000, h));
        assert_eq!(ix.find(h(1_000), |k| k == 1_000), None);
    }
}

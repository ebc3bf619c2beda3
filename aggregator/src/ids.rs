//! Identities of strings as small integers: 128-bit grid × SKU ids, 64-bit event ids for
//! de-duplication, 64-bit store and grid ids, the fast hasher for maps keyed by them, and
//! the sort of values led by such hashes ([`sort_spread`]).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

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
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
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

/// A map keyed by ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A set of ids.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// The parts joined by 0xff (a byte no UTF-8 string holds) in one buffer (on the stack
/// when short), for one-shot hashing: the streaming `Xxh3` hasher costs more to set up
/// than the hash of a short input (profile of the aggregator benchmark), and one-shot XXH3
/// of the concatenation is the same value.
fn joined<R>(parts: &[&str], f: impl FnOnce(&[u8]) -> R) -> R {
    let n = parts.iter().map(|p| p.len() + 1).sum::<usize>().saturating_sub(1);
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap.resize(n, 0);
        &mut heap
    };
    let mut at = 0;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            buf[at] = 0xff;
            at += 1;
        }
        buf[at..at + p.len()].copy_from_slice(p.as_bytes());
        at += p.len();
    }
    f(buf)
}

/// 128-bit identity of a grid × SKU.
pub fn key_id(grid: &str, sku: &str) -> u128 {
    joined(&[grid, sku], xxhash_rust::xxh3::xxh3_128)
}

/// 64-bit identity of an event for de-duplication: the `event_id` a device gave it, within
/// that device and store (two devices of a shop may number their events alike). It does
/// not involve the event's time: a retry whose `occurred_at` was re-stamped is the same
/// event. A false match needs two of the ids held (a few million per partition) to
/// collide in 64 bits. The hash is keyed by the partition's secret `seed` (random, kept
/// in its changelog): a device cannot choose an `event_id` whose identity matches another
/// shop's event and so have that one dropped as a duplicate. Seed 0 is the unseeded hash
/// that changelogs before version 6 hold.
pub fn event_key(store_id: &str, device_id: &str, event_id: &str, seed: u64) -> u64 {
    joined(&[store_id, device_id, event_id], |b| xxhash_rust::xxh3::xxh3_64_with_seed(b, seed))
}

/// 32-bit identity of a store for the distinct-store sets of windows, never 0 or
/// `u32::MAX` (the set's markers). Two stores of one grid × SKU × window collide with
/// probability about n² / 2³³ (n = 100 stores: 1 in 860 000 windows), counting one fewer.
/// It is derived from the store's [`short_id`] (`h`), which the grid's reporting stores
/// keep whole.
pub fn store32(h: u64) -> u32 {
    ((h ^ (h >> 32)) as u32).clamp(1, u32::MAX - 1)
}

/// 64-bit identity of a store or grid (distinct counts).
pub fn short_id(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Items fewer than this are sorted by comparison alone.
const FEW_ITEMS: usize = 1024;
/// Items a bucket of [`sort_spread`] holds on average: a run the comparison sort
/// finishes in a few passes of insertion.
const ITEMS_PER_BUCKET: usize = 16;

/// Sorts `items` into the order `sort_unstable` gives, when their order leads with a
/// 64-bit hash spread evenly (`top`: an event id, a key's hash), using `scratch` (left in
/// an unspecified state): one pass counts them by the hash's top bits into buckets of
/// about [`ITEMS_PER_BUCKET`], one places them, and each bucket is sorted by comparison.
/// Used for a flush's event ids and a closing bucket's windows: criterion's flush after
/// 100 000 events (900 000 ids, every 5-minute window closing) took 20 % less time than
/// with `sort_unstable` and `sort_by_cached_key` (medians of five, alternated; the
/// seventeenth session's results in `benches/results/`). Hashes that are not spread (an old
/// changelog's unkeyed event ids chosen by a device) cost at worst one comparison sort
/// of a bucket holding them all, `O(n log n)` as before.
pub fn sort_spread<T: Ord + Copy + Default>(
    items: &mut Vec<T>,
    scratch: &mut Vec<T>,
    top: impl Fn(&T) -> u64,
) {
    let n = items.len();
    if n < FEW_ITEMS {
        items.sort_unstable();
        return;
    }
    let bits = (n / ITEMS_PER_BUCKET).ilog2().min(20);
    let bucket = |x: &T| (top(x) >> (64 - bits)) as usize;
    // Each bucket's count, then its first place, then (placing) its next free place,
    // which ends as the bucket's end.
    let mut at = vec![0u32; 1 << bits];
    for x in items.iter() {
        at[bucket(x)] += 1;
    }
    let mut sum = 0;
    for a in &mut at {
        (*a, sum) = (sum, sum + *a);
    }
    scratch.clear();
    scratch.resize(n, T::default());
    for x in items.iter() {
        let a = &mut at[bucket(x)];
        scratch[*a as usize] = *x;
        *a += 1;
    }
    let mut begin = 0;
    for &end in &at {
        scratch[begin..end as usize].sort_unstable();
        begin = end as usize;
    }
    std::mem::swap(items, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The bucket sort gives what the comparison sort gives: spread ids, ids bunched
        /// in one bucket (top bits alike), duplicates, around the small-input cut; pairs
        /// of a hash and an index (ties in index order, as `sort_by_cached_key`).
        #[test]
        fn sort_spread_sorts_like_sort_unstable(
            spread in proptest::collection::vec(any::<u64>(), 0..5000),
            bunched in proptest::collection::vec(0u64..1 << 20, 0..3000),
            top in any::<u64>(),
        ) {
            for mut ids in [spread.clone(), bunched.iter().map(|b| top & !0xf_ffff | b).collect()] {
                let mut want = ids.clone();
                want.sort_unstable();
                let mut pairs: Vec<(u64, u32)> =
                    ids.iter().enumerate().map(|(i, &h)| (h & !0xff, i as u32)).collect();
                let mut want_pairs = pairs.clone();
                want_pairs.sort_unstable();
                let mut scratch = vec![7; 3];
                sort_spread(&mut ids, &mut scratch, |&x| x);
                prop_assert_eq!(ids, want);
                sort_spread(&mut pairs, &mut Vec::new(), |p| p.0);
                prop_assert_eq!(pairs, want_pairs);
            }
        }
    }

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
            assert_eq!(key_id(a, b), h.digest128());
            h.update(&[0xff]);
            h.update(b"pos-1");
            assert_eq!(event_key(a, b, "pos-1", 0), h.digest(), "seed 0: as versions ≤ 5 wrote");
            let mut s = Xxh3::with_seed(7);
            for part in [a.as_bytes(), &[0xff], b.as_bytes(), &[0xff], b"pos-1"] {
                s.update(part);
            }
            assert_eq!(event_key(a, b, "pos-1", 7), s.digest());
            assert_ne!(event_key(a, b, "pos-1", 7), event_key(a, b, "pos-1", 8));
        }
    }
}

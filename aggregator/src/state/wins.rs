//! The windows of one bucket as a sequence of fixed-size blocks: appending never moves
//! what is there (no copy of a million windows when the array grows) and the slack is
//! at most one block, where a doubling array would leave up to half of itself unused.

use std::ops::{Index, IndexMut};

use super::bucket::Win;
use crate::ids::sort_spread;

/// Windows per block (112 KiB of 28-byte windows).
const BLOCK: usize = 4096;

/// A growable sequence of windows in blocks of [`BLOCK`].
#[derive(Debug, Default)]
pub struct Wins {
    blocks: Vec<Vec<Win>>,
    len: usize,
}

impl Wins {
    /// How many windows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The window at `i`, if any.
    pub fn get(&self, i: usize) -> Option<&Win> {
        (i < self.len).then(|| &self.blocks[i / BLOCK][i % BLOCK])
    }

    /// Asks the window at `i` into cache (a hint; nothing when there is none): the line
    /// of its first byte and the line of the byte just past it. 28-byte windows run over
    /// into a second line in 6 of 16 positions, and the revenue at their end was then a
    /// miss; asking for both always, not after a test of the address, keeps a branch
    /// that no predictor can learn off the path (that test cost 5 % in cache).
    pub fn prefetch(&self, i: usize) {
        if let Some(b) = self.blocks.get(i / BLOCK) {
            prefetch_index::prefetch_index(&b[..], i % BLOCK);
            prefetch_index::prefetch_index(&b[..], i % BLOCK + 1);
        }
    }

    /// Appends a window.
    pub fn push(&mut self, w: Win) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < BLOCK => b.push(w),
            _ => {
                // The first block grows as a vector (most buckets are small); later ones
                // are allocated whole.
                let mut b = Vec::with_capacity(if self.blocks.is_empty() { 16 } else { BLOCK });
                b.push(w);
                self.blocks.push(b);
            }
        }
        self.len += 1;
    }

    /// Grows to `n` windows, filling with `fill`.
    pub fn resize(&mut self, n: usize, fill: Win) {
        while self.len < n {
            self.push(fill);
        }
    }

    /// Keeps the first `n` windows.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        self.blocks.truncate(n.div_ceil(BLOCK));
        let full = self.blocks.len().saturating_sub(1) * BLOCK;
        if let Some(b) = self.blocks.last_mut() {
            b.truncate(n - full);
        }
        self.len = n;
    }

    /// Every window, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Win> + '_ {
        self.blocks.iter().flatten()
    }

    /// Sorts the windows by `hash` (computed once per window; spread evenly over 64 bits:
    /// [`sort_spread`]), windows of equal hashes in their order. The hash and index pairs
    /// are sorted first (with their scratch: 32 bytes a window), then the windows gathered
    /// from one copy of them (16 + 28 bytes a window, as `slice::sort_by_cached_key` on
    /// that copy took). Permuting in place instead (32 bytes a window, no copy) made the
    /// flush ~11 % slower (criterion, five alternated runs): each swap touches two random
    /// windows.
    pub fn sort_by_hash(&mut self, hash: impl Fn(&Win) -> u64) {
        let mut order: Vec<(u64, u32)> =
            self.iter().enumerate().map(|(i, w)| (hash(w), i as u32)).collect();
        sort_spread(&mut order, &mut Vec::new(), |p| p.0);
        let all: Vec<Win> = self.iter().copied().collect();
        for (i, &(_, j)) in order.iter().enumerate() {
            self[i] = all[j as usize];
        }
    }

    /// The first index in `[0, end)` for which `pred` is false, given that it is true
    /// for a prefix (binary search).
    pub fn partition_point(&self, end: usize, mut pred: impl FnMut(&Win) -> bool) -> usize {
        let (mut lo, mut hi) = (0, end.min(self.len));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Bytes allocated for windows.
    pub fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.capacity() * size_of::<Win>()).sum::<usize>()
            + self.blocks.capacity() * 24
    }
}

impl Index<usize> for Wins {
    type Output = Win;
    fn index(&self, i: usize) -> &Win {
        &self.blocks[i / BLOCK][i % BLOCK]
    }
}

impl IndexMut<usize> for Wins {
    fn index_mut(&mut self, i: usize) -> &mut Win {
        &mut self.blocks[i / BLOCK][i % BLOCK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Sorting by hash gives `sort_by_cached_key`'s order, windows of equal
        /// hashes in their order: hashes spread, and hashes with many ties.
        #[test]
        fn sort_by_hash_is_sort_by_cached_key(
            keys in proptest::collection::vec(0u32..50_000, 0..(3 * BLOCK)),
            ties in any::<bool>(),
        ) {
            let hash = |w: &Win| {
                let k = u64::from(w.key());
                if ties { (k % 97) << 57 } else { k.wrapping_mul(0x9e37_79b9_7f4a_7c15) }
            };
            let mut w = Wins::default();
            let mut want = Vec::new();
            for (i, &k) in keys.iter().enumerate() {
                let mut x = Win::new(k);
                x.sold = i as i32;
                w.push(x);
                want.push(x);
            }
            want.sort_by_cached_key(hash);
            w.sort_by_hash(hash);
            let got: Vec<(u32, i32)> = w.iter().map(|x| (x.key(), x.sold)).collect();
            let want: Vec<(u32, i32)> = want.iter().map(|x| (x.key(), x.sold)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn blocks_hold_a_sequence_that_sorts_truncates_and_searches() {
        let mut w = Wins::default();
        let n = BLOCK * 2 + 10;
        for i in 0..n {
            w.push(Win::new((n - i) as u32));
        }
        assert_eq!((w.len(), w[0].key(), w[n - 1].key()), (n, n as u32, 1));
        w.sort_by_hash(|w| u64::from(w.key()) << 50);
        assert!((1..n).all(|i| w[i - 1].key() < w[i].key()));
        assert_eq!(w.partition_point(n, |x| x.key() < 5000), 4999);
        w.truncate(BLOCK + 1);
        assert_eq!((w.len(), w.iter().count(), w.get(BLOCK + 1)), (BLOCK + 1, BLOCK + 1, None));
        w.resize(BLOCK + 3, Win::new(7));
        assert_eq!(w[BLOCK + 2].key(), 7);
    }
}

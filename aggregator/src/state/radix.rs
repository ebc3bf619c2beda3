//! Sorting a commit's event ids for their changelog chunks: a least-significant-digit
//! radix sort of 64-bit ids, six passes of 11 bits through a scratch buffer.
//!
//! The ids are hashes (`ids::event_key`), spread evenly over all 64 bits, so no pass can
//! be skipped and a comparison sort pays its full n log n: at a commit of 300 000 ids,
//! `sort_unstable` took ~160 instructions an id (callgrind, `make bench-instructions`'s
//! flush), this ~60. The result is the same sorted slice, so the chunks written are
//! byte for byte those of a comparison sort (property test below). Short slices, where
//! the six passes over 2 048 counters cost more than they save, take `sort_unstable`.

/// Bits of one digit.
const DIGIT: u32 = 11;
/// Passes over 64 bits.
const PASSES: usize = 64_usize.div_ceil(DIGIT as usize);
/// Counters of one digit.
const RADIX: usize = 1 << DIGIT;
/// Below this many ids a comparison sort is cheaper.
const SHORT: usize = 4_096;

/// The digit of `v` for pass `p`.
#[inline]
fn digit(v: u64, p: usize) -> usize {
    ((v >> (p as u32 * DIGIT)) as usize) & (RADIX - 1)
}

/// Sorts `ids` ascending; `scratch` is working room, left with unspecified contents
/// (kept by the caller so its capacity serves the next commit).
pub(super) fn sort_ids(ids: &mut Vec<u64>, scratch: &mut Vec<u64>) {
    if ids.len() < SHORT {
        ids.sort_unstable();
        return;
    }
    // Every pass's counts in one read of the ids.
    let mut counts = vec![[0usize; RADIX]; PASSES];
    for &v in ids.iter() {
        for (p, c) in counts.iter_mut().enumerate() {
            c[digit(v, p)] += 1;
        }
    }
    scratch.clear();
    scratch.resize(ids.len(), 0);
    for (p, c) in counts.iter_mut().enumerate() {
        // A digit every id shares moves nothing.
        if c.contains(&ids.len()) {
            continue;
        }
        let mut at = 0;
        for n in c.iter_mut() {
            (*n, at) = (at, at + *n);
        }
        for &v in ids.iter() {
            let d = digit(v, p);
            scratch[c[d]] = v;
            c[d] += 1;
        }
        std::mem::swap(ids, scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any ids, long or short, with repeats and shared digits: the comparison sort's
        /// result.
        #[test]
        fn sorts_as_sort_unstable(
            mut ids in prop_oneof![
                proptest::collection::vec(any::<u64>(), 0..10_000),
                proptest::collection::vec(0u64..3_000, SHORT..SHORT + 3_000),
                proptest::collection::vec((0u64..4).prop_map(|v| v << 40 | 7), SHORT..SHORT + 100),
            ],
        ) {
            let mut want = ids.clone();
            want.sort_unstable();
            let mut scratch = vec![1, 2, 3];
            sort_ids(&mut ids, &mut scratch);
            prop_assert_eq!(ids, want);
        }
    }

    /// Every pass moves the ids (no digit shared), each swapping the buffers: the sorted
    /// ids end in the caller's vector whichever buffer the last pass wrote.
    #[test]
    fn a_long_run_of_hashes_sorts() {
        let mut ids: Vec<u64> =
            (0..50_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 7)).collect();
        let mut want = ids.clone();
        want.sort_unstable();
        sort_ids(&mut ids, &mut Vec::new());
        assert_eq!(ids, want);
    }
}

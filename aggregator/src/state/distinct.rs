//! Distinct stores of one window: two store ids inline in the window (no allocation for
//! the common case of one or two stores), then in the bucket's spill arena a sorted list
//! held in the arena's slot itself up to [`FEW`] stores (a grid has tens of shops, a
//! grid × SKU × window a handful: still no allocation of its own), on the heap up to
//! [`SMALL_MAX`] stores, then a HyperLogLog sketch of [`HLL_REGISTERS`] one-byte
//! registers (1 KiB).
//!
//! Error: exact up to [`SMALL_MAX`] stores (up to collisions of the 32-bit store ids,
//! `ids::store32`); beyond, the HyperLogLog estimate has a relative standard error of
//! 1.04 / √1024 ≈ 3.3 % (`docs/lateness.md` § distinct stores). A grid × SKU × window
//! with more than 1 024 selling stores does not occur at grid resolution 8 (tens of shops
//! per cell); the sketch bounds memory when it does.

/// Most stores of a window counted exactly.
pub const SMALL_MAX: usize = 1024;
/// Most stores a spilled set holds without an allocation of its own (the slot stays
/// 32 bytes, the size of the heap list's).
pub const FEW: usize = 7;
/// Registers of the HyperLogLog sketch (2¹⁰).
pub const HLL_REGISTERS: usize = 1024;
const HLL_BITS: u32 = 10;

/// The inline marker of a spilled set: `[SPILLED, index into the spill arena]`.
pub const SPILLED: u32 = u32::MAX;

/// The stores of a window with more than two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSet {
    /// Up to [`FEW`] sorted store ids (`ids[..len]`; the rest 0).
    Few { len: u8, ids: [u32; FEW] },
    /// More than [`FEW`] sorted store ids.
    Small(Vec<u32>),
    /// HyperLogLog registers.
    Hll(Box<[u8; HLL_REGISTERS]>),
}

fn mix(x: u32) -> u64 {
    // splitmix64: the store ids are already hashes, this spreads them over 64 bits.
    let mut z = u64::from(x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hll_add(regs: &mut [u8; HLL_REGISTERS], x: u32) -> bool {
    let h = mix(x);
    let idx = (h >> (64 - HLL_BITS)) as usize;
    let rank = ((h << HLL_BITS) | (1 << (HLL_BITS - 1))).leading_zeros() as u8 + 1;
    if regs[idx] < rank {
        regs[idx] = rank;
        true
    } else {
        false
    }
}

fn hll_estimate(regs: &[u8; HLL_REGISTERS]) -> u64 {
    let m = HLL_REGISTERS as f64;
    let sum: f64 = regs.iter().map(|&r| (-f64::from(r)).exp2()).sum();
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let e = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    let e = if e <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { e };
    e.round() as u64
}

impl StoreSet {
    /// The set of stores `ids`.
    pub fn of(mut ids: Vec<u32>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        Self::sorted(ids)
    }

    /// The set of stores `ids`, sorted and without repeats.
    pub fn sorted(ids: Vec<u32>) -> Self {
        if ids.len() <= FEW {
            let mut few = [0; FEW];
            few[..ids.len()].copy_from_slice(&ids);
            StoreSet::Few { len: ids.len() as u8, ids: few }
        } else if ids.len() > SMALL_MAX {
            let mut regs = Box::new([0u8; HLL_REGISTERS]);
            ids.iter().for_each(|&x| {
                hll_add(&mut regs, x);
            });
            StoreSet::Hll(regs)
        } else {
            StoreSet::Small(ids)
        }
    }

    /// Adds a store; true when the set changed.
    pub fn insert(&mut self, x: u32) -> bool {
        match self {
            StoreSet::Few { len, ids } => {
                let n = usize::from(*len);
                let i = ids[..n].iter().position(|&y| y >= x).unwrap_or(n);
                if i < n && ids[i] == x {
                    return false;
                }
                if n == FEW {
                    let mut v = Vec::with_capacity(2 * FEW + 2);
                    v.extend_from_slice(&ids[..i]);
                    v.push(x);
                    v.extend_from_slice(&ids[i..]);
                    *self = StoreSet::Small(v);
                } else {
                    ids.copy_within(i..n, i + 1);
                    ids[i] = x;
                    *len += 1;
                }
                true
            }
            StoreSet::Small(v) => match v.binary_search(&x) {
                Ok(_) => false,
                Err(i) => {
                    v.insert(i, x);
                    if v.len() > SMALL_MAX {
                        *self = StoreSet::of(std::mem::take(v));
                    }
                    true
                }
            },
            StoreSet::Hll(regs) => hll_add(regs, x),
        }
    }

    /// How many stores (estimated beyond [`SMALL_MAX`]).
    pub fn len(&self) -> u64 {
        match self {
            StoreSet::Few { len, .. } => u64::from(*len),
            StoreSet::Small(v) => v.len() as u64,
            StoreSet::Hll(regs) => hll_estimate(regs),
        }
    }

    /// The sorted ids of an exact set (`None`: a sketch).
    pub fn ids(&self) -> Option<&[u32]> {
        match self {
            StoreSet::Few { len, ids } => ids.get(..usize::from(*len)),
            StoreSet::Small(v) => Some(v),
            StoreSet::Hll(_) => None,
        }
    }

    /// Heap bytes.
    pub fn heap_bytes(&self) -> usize {
        match self {
            StoreSet::Few { .. } => 0,
            StoreSet::Small(v) => v.capacity() * 4,
            StoreSet::Hll(_) => HLL_REGISTERS,
        }
    }
}

/// Adds store `x` to a window's inline pair, spilling to `spill` at the third store;
/// false only when an exact set already held `x` (a sketch cannot tell, so it says true).
pub fn insert(inline: &mut [u32; 2], spill: &mut Vec<StoreSet>, x: u32) -> bool {
    match *inline {
        [SPILLED, i] => {
            spill.get_mut(i as usize).is_none_or(|s| s.insert(x) || matches!(s, StoreSet::Hll(_)))
        }
        [0, _] => {
            inline[0] = x;
            true
        }
        [a, _] if a == x => false,
        [_, 0] => {
            inline[1] = x;
            true
        }
        [_, b] if b == x => false,
        [a, b] => {
            let i = u32::try_from(spill.len()).unwrap_or(u32::MAX);
            let mut ids = [0; FEW];
            ids[..3].copy_from_slice(&[a, b, x]);
            ids[..3].sort_unstable();
            spill.push(StoreSet::Few { len: 3, ids });
            *inline = [SPILLED, i];
            true
        }
    }
}

/// How many stores a window's inline pair stands for.
pub fn count(inline: &[u32; 2], spill: &[StoreSet]) -> u64 {
    match *inline {
        [SPILLED, i] => spill.get(i as usize).map_or(0, StoreSet::len),
        [0, _] => 0,
        [_, 0] => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_stores_inline_then_a_list_then_a_sketch() {
        let (mut inline, mut spill) = ([0u32; 2], Vec::new());
        assert!(insert(&mut inline, &mut spill, 5));
        assert!(!insert(&mut inline, &mut spill, 5));
        assert!(insert(&mut inline, &mut spill, 9));
        assert!(spill.is_empty(), "two stores stay inline");
        assert_eq!(count(&inline, &spill), 2);
        assert!(insert(&mut inline, &mut spill, 7));
        assert_eq!(inline, [SPILLED, 0]);
        assert_eq!(spill[0], StoreSet::Few { len: 3, ids: [5, 7, 9, 0, 0, 0, 0] });
        assert!(!insert(&mut inline, &mut spill, 7));
        for x in [8, 4, 6, 30] {
            assert!(insert(&mut inline, &mut spill, x));
        }
        assert_eq!(spill[0], StoreSet::Few { len: 7, ids: [4, 5, 6, 7, 8, 9, 30] });
        assert_eq!(spill[0].heap_bytes(), 0, "up to seven stores in the arena's slot");
        assert!(insert(&mut inline, &mut spill, 1));
        assert_eq!(spill[0], StoreSet::Small(vec![1, 4, 5, 6, 7, 8, 9, 30]));
        assert_eq!(count(&inline, &spill), 8);
        for x in 10..(SMALL_MAX as u32 + 10) {
            insert(&mut inline, &mut spill, x);
        }
        assert!(matches!(spill[0], StoreSet::Hll(_)));
        assert!(insert(&mut inline, &mut spill, 7), "a sketch cannot say a store was held");
        assert!(size_of::<StoreSet>() <= 32, "an arena slot stays 32 bytes");
        let n = count(&inline, &spill) as f64;
        let truth = (SMALL_MAX + 3) as f64;
        assert!((n - truth).abs() / truth < 0.1, "{n} vs {truth}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Exact up to the small limit; within 4 standard errors (13 %) beyond.
        #[test]
        fn counts_are_exact_then_within_the_documented_error(n in 0usize..6000, seed in any::<u32>()) {
            let (mut inline, mut spill) = ([0u32; 2], Vec::new());
            for i in 0..n as u32 {
                let x = mix(i ^ seed) as u32;
                insert(&mut inline, &mut spill, x.clamp(1, u32::MAX - 1));
                // Repeats never count twice.
                insert(&mut inline, &mut spill, x.clamp(1, u32::MAX - 1));
            }
            let got = count(&inline, &spill) as f64;
            let mut truth: Vec<u32> = (0..n as u32).map(|i| (mix(i ^ seed) as u32).clamp(1, u32::MAX - 1)).collect();
            truth.sort_unstable();
            truth.dedup();
            let truth = truth.len() as f64;
            if truth <= SMALL_MAX as f64 {
                prop_assert_eq!(got, truth);
            } else {
                prop_assert!((got - truth).abs() / truth < 4.0 * 1.04 / 32.0, "{} vs {}", got, truth);
            }
        }
    }
}

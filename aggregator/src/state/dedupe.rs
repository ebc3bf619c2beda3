//! The set of event ids of one horizon: open addressing with linear probing over a flat
//! array of `u64`s, grown by half when it is 85 % full (not doubled), so an id costs 9.4
//! to 14 bytes where a general hash set costs 9 to 18 (and its growth steps double the
//! memory of a million-id set at once). Ids are 64-bit hashes already (`ids::event_key`):
//! the slot is taken from the (scrambled) id's high bits by multiply-shift. 0 marks an empty slot;
//! the id 0 is stored as 1 (a retry of an event hashing to 0 or 1 may count once more in
//! 2⁶³ — never in practice).

/// A set of event ids.
#[derive(Debug, Default)]
pub struct IdTable {
    slots: Vec<u64>,
    len: usize,
}

/// The home slot of `id` in a table of `n`. The id is multiplied by an odd constant
/// first: ids arrive sorted on restore (changelog chunks are), and sorted homes would sweep
/// the table's runs together into one that every insert walks.
fn slot_of(id: u64, n: usize) -> usize {
    let mixed = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((u128::from(mixed) * n as u128) >> 64) as usize
}

impl IdTable {
    /// Adds `id`; false when it was there.
    pub fn insert(&mut self, id: u64) -> bool {
        let id = id.max(1);
        if (self.len + 1) * 100 > self.slots.len() * 85 {
            self.grow();
        }
        let n = self.slots.len();
        let mut i = slot_of(id, n);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = id;
                    self.len += 1;
                    return true;
                }
                x if x == id => return false,
                _ => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() + self.slots.len() / 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![0; n]);
        for id in old.into_iter().filter(|&x| x != 0) {
            let mut i = slot_of(id, n);
            while self.slots[i] != 0 {
                i = if i + 1 == n { 0 } else { i + 1 };
            }
            self.slots[i] = id;
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        let id = id.max(1);
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        let mut i = slot_of(id, n);
        loop {
            match self.slots[i] {
                0 => return false,
                x if x == id => return true,
                _ => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
    }

    /// Removes `id` (backward-shift deletion: the ids after it in its run move up, so no
    /// tombstone is left to slow later probes); false when it was not there.
    pub fn remove(&mut self, id: u64) -> bool {
        let id = id.max(1);
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        let next = |i: usize| if i + 1 == n { 0 } else { i + 1 };
        let mut hole = slot_of(id, n);
        loop {
            match self.slots[hole] {
                0 => return false,
                x if x == id => break,
                _ => hole = next(hole),
            }
        }
        let mut j = next(hole);
        while self.slots[j] != 0 {
            let home = slot_of(self.slots[j], n);
            // Whether `home` lies cyclically in (hole, j]: then the id may stay.
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = next(j);
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * 8
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
                prop_assert_eq!(t.contains(id), model.contains(&id.max(1)));
                prop_assert_eq!(t.insert(id), model.insert(id.max(1)));
                prop_assert!(t.contains(id));
            }
            prop_assert_eq!(t.len(), model.len());
            prop_assert!(t.bytes() <= (model.len() * 8 * 100 / 56).max(64 * 8 * 2));
        }
    }

    proptest! {
        /// Inserts and removes agree with a set, whatever the order and collisions (ids
        /// from a small range collide on home slots and form long runs).
        #[test]
        fn removes_keep_the_table_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..200), 0..600)) {
            let mut t = IdTable::default();
            let mut model = std::collections::HashSet::new();
            for (add, id) in ops {
                let id = id.max(1);
                if add {
                    prop_assert_eq!(t.insert(id), model.insert(id));
                } else {
                    prop_assert_eq!(t.remove(id), model.remove(&id));
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for id in 0..200u64 {
                let id = id.max(1);
                prop_assert_eq!(t.contains(id), model.contains(&id), "id {}", id);
            }
        }
    }
}

//! A lower bound for the update path that `update.rs` measures: the same events through
//! the leanest structures that still do the per-event work of
//! `PartitionState::apply_sales`: the event id hashed (the state's `event_key`) and
//! inserted in a set, the key found by one probe of an index, three windows counted with
//! their stores, the grid's stores per window, the watermark. It looks events up on the
//! state's own schedule of steps (`state::staged`).
//!
//! It has none of the state's rules or bounds: no lateness or expiry, no change marks for
//! the changelog, no revenue overflow check, no return or pre-order side counters, no
//! buckets by window start (nothing could close), one event-id set, presized and at
//! most half full (about 28 bytes an id here, where the state's sets take 8.7), store
//! sets of four then a count, a key confirmed by its 64-bit hash alone. So it is a
//! bound, not a peer: it shows how far any layout doing this work can go on this host.
//! `update.rs` checks that it counts the same events into the same keys and windows as
//! the state, with the same sums of events, units and revenue.

use nearfield_aggregator::ids::{IdMap, event_key, short_id, store32};
use nearfield_aggregator::state::{PartitionState, staged};
use nearfield_schemas::{SaleEventRef, SaleKind};

/// Window sizes (ms), as the bench's state has them.
const SIZES: [i64; 3] = [300_000, 3_600_000, 86_400_000];
/// No key, or no window.
const NONE: u32 = u32::MAX;

/// One window: counters and up to four stores inline.
#[derive(Clone, Copy, Default)]
struct Win {
    /// Its key (what a hit is checked against, and emitting a closed window reads).
    key: u32,
    events: u32,
    sold: i32,
    returned: i32,
    revenue: i64,
    stores: [u32; 4],
    distinct: u32,
}

/// One grid's stores in its newest window of one size.
#[derive(Default)]
struct GridWin {
    number: u32,
    stores: Vec<u64>,
}

/// What is known of an event before it is applied.
#[derive(Clone, Copy)]
struct Ahead {
    id: u64,
    key_hash: u64,
    grid_hash: u64,
    key: u32,
}

/// The lean partition state.
pub struct Lean {
    ids: Vec<u64>,
    index: Vec<u32>,
    key_hashes: Vec<u64>,
    /// Per key and size: the newest window's and the one before's number (low 32 bits)
    /// and position (an event out of order across a boundary counts in the one before).
    slots: Vec<[[(u32, u32); 2]; 3]>,
    key_grid: Vec<u32>,
    wins: [Vec<Win>; 3],
    grid_ids: IdMap<u64, u32>,
    grids: Vec<[GridWin; 3]>,
    max_event_time: i64,
    counted: usize,
}

impl Lean {
    /// An empty state with room for `keys` keys and `events` event ids and windows.
    pub fn new(keys: usize, events: usize) -> Self {
        Lean {
            ids: vec![0; (events * 2).next_power_of_two()],
            index: vec![0; (keys * 2).next_power_of_two()],
            key_hashes: Vec::with_capacity(keys),
            slots: Vec::with_capacity(keys),
            key_grid: Vec::with_capacity(keys),
            wins: std::array::from_fn(|_| Vec::with_capacity(events)),
            grid_ids: IdMap::default(),
            grids: Vec::new(),
            max_event_time: i64::MIN,
            counted: 0,
        }
    }

    /// Whether it counted the same events into as many keys and windows as `st`, with the
    /// same sums of events, units and revenue (distinct stores aside: it keeps four
    /// exactly): the check that it did the state's work.
    pub fn agrees_with(&self, st: &PartitionState) -> bool {
        let (size, t) = (st.size(), st.totals());
        let (counted, keys, windows) = self.sizes();
        (counted as u64 * 3, keys, windows) == (t.events, size.keys, size.windows)
            && self.sums() == (t.events, t.units_sold, t.net_units, t.revenue_minor)
    }

    /// Events counted, keys and windows.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.counted, self.key_hashes.len(), self.wins.iter().map(Vec::len).sum())
    }

    /// Sums over every window: events, units sold, net units, revenue.
    pub fn sums(&self) -> (u64, i64, i64, i64) {
        self.wins.iter().flatten().fold((0, 0, 0, 0), |(e, s, n, r), w| {
            let (sold, returned) = (i64::from(w.sold), i64::from(w.returned));
            (e + u64::from(w.events), s + sold, n + sold - returned, r + w.revenue)
        })
    }

    fn home(&self, key_hash: u64) -> usize {
        (key_hash >> 20) as usize & (self.index.len() - 1)
    }

    /// The event's id and key hash; the lines of its id and index entry asked for.
    fn sight(&self, ev: &SaleEventRef<'_>) -> Ahead {
        // Never 0, which marks an empty entry.
        let id = event_key(ev.store_id, ev.device_id, ev.event_id, 7) | 1;
        let grid_hash = short_id(ev.grid_id);
        let sku_hash = short_id(ev.sku);
        let key_hash = (grid_hash ^ sku_hash.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        prefetch_index::prefetch_index(&self.ids[..], id as usize & (self.ids.len() - 1));
        prefetch_index::prefetch_index(&self.index[..], self.home(key_hash));
        Ahead { id, key_hash, grid_hash, key: NONE }
    }

    /// The index's entry at the key's home; that key's hash and slot asked for.
    fn probe(&self, a: &mut Ahead) {
        let e = self.index[self.home(a.key_hash)];
        if e != 0 {
            a.key = e - 1;
            prefetch_index::prefetch_index(&self.key_hashes[..], a.key as usize);
            prefetch_index::prefetch_index(&self.slots[..], a.key as usize);
        }
    }

    /// The key confirmed (or searched for); its windows asked for.
    fn resolve(&self, a: &mut Ahead) {
        if a.key == NONE || self.key_hashes[a.key as usize] != a.key_hash {
            a.key = NONE;
            let mask = self.index.len() - 1;
            let mut i = self.home(a.key_hash);
            while self.index[i] != 0 {
                let k = self.index[i] - 1;
                if self.key_hashes[k as usize] == a.key_hash {
                    a.key = k;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        if a.key != NONE {
            for (wins, &[(_, p), _]) in self.wins.iter().zip(&self.slots[a.key as usize]) {
                if (p as usize) < wins.len() {
                    prefetch_index::prefetch_index(&wins[..], p as usize);
                }
            }
        }
    }

    fn insert_id(&mut self, id: u64) -> bool {
        let mask = self.ids.len() - 1;
        let mut i = id as usize & mask;
        loop {
            match self.ids[i] {
                v if v == id => return false,
                0 => {
                    self.ids[i] = id;
                    return true;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn new_key(&mut self, a: &Ahead) -> u32 {
        let k = self.key_hashes.len() as u32;
        self.key_hashes.push(a.key_hash);
        self.slots.push([[(NONE, NONE); 2]; 3]);
        let grid = match self.grid_ids.get(&a.grid_hash) {
            Some(&g) => g,
            None => {
                self.grids.push(Default::default());
                let g = self.grids.len() as u32 - 1;
                self.grid_ids.insert(a.grid_hash, g);
                g
            }
        };
        self.key_grid.push(grid);
        let mask = self.index.len() - 1;
        let mut i = self.home(a.key_hash);
        while self.index[i] != 0 {
            i = (i + 1) & mask;
        }
        self.index[i] = k + 1;
        k
    }

    fn apply(&mut self, ev: &SaleEventRef<'_>, a: Ahead) {
        if !self.insert_id(a.id) {
            return;
        }
        let k = if a.key == NONE { self.new_key(&a) } else { a.key };
        let t = ev.occurred_at;
        let store = short_id(ev.store_id);
        let s32 = store32(store);
        let q = ev.quantity;
        let grid = self.key_grid[k as usize] as usize;
        for (i, size) in SIZES.iter().enumerate() {
            let number = t.div_euclid(*size);
            let [newest, before] = self.slots[k as usize][i];
            let number = number as u32;
            // A hit is checked to be the key's (as the state checks its bucket's).
            let mine =
                |(n, p): (u32, u32)| p != NONE && n == number && self.wins[i][p as usize].key == k;
            let p = if mine(newest) {
                newest.1
            } else if mine(before) {
                before.1
            } else {
                self.wins[i].push(Win { key: k, ..Win::default() });
                let p = self.wins[i].len() as u32 - 1;
                if newest.1 == NONE || number > newest.0 {
                    self.slots[k as usize][i] = [(number, p), newest];
                }
                p
            };
            let w = &mut self.wins[i][p as usize];
            w.events += 1;
            // As the state counts (`counters::Delta`): a return takes its value off.
            let value = i64::from(q) * ev.unit_price_minor;
            match ev.kind {
                SaleKind::Return => {
                    w.returned += q;
                    w.revenue -= value;
                }
                _ => {
                    w.sold += q;
                    w.revenue += value;
                }
            }
            let held = (w.distinct as usize).min(4);
            if !w.stores[..held].contains(&s32) {
                if held < 4 {
                    w.stores[held] = s32;
                }
                w.distinct += 1;
                // The grid's newest window only (one out of order is not reported:
                // less work than the state's, as a bound may do).
                let g = &mut self.grids[grid][i];
                if number > g.number {
                    g.number = number;
                    g.stores.clear();
                }
                if number == g.number
                    && let Err(j) = g.stores.binary_search(&store)
                {
                    g.stores.insert(j, store);
                }
            }
        }
        self.max_event_time = self.max_event_time.max(t.min(ev.received_at));
        self.counted += 1;
    }

    /// Applies a run of events, looked up in the state's steps ([`staged::run`]).
    pub fn apply_sales(&mut self, evs: &[SaleEventRef<'_>]) {
        let none = Ahead { id: 0, key_hash: 0, grid_hash: 0, key: NONE };
        staged::run(
            self,
            evs,
            none,
            |s, ev| s.sight(ev),
            |s, a| s.probe(a),
            |s, a| s.resolve(a),
            |s, ev, &a| {
                let mut a = a;
                // A key made after this event was resolved.
                if a.key == NONE {
                    s.resolve(&mut a);
                }
                s.apply(ev, a);
            },
        );
    }
}

//! Reading a partition's state: the live query's views and selection, the live map's
//! newest windows, completeness of a grid, and totals and size for metrics and checks.

use std::collections::HashSet;

use super::bucket::Bucket;
use super::dedupe::IdTable;
use super::grids::GridState;
use super::keys::NO_POS;
use super::{KeyView, PartitionState, Row, StateSize, Totals, WindowView};
use crate::ids::short_id;
use crate::window::Millis;

impl PartitionState {
    /// How many grids the state interned so far (restored ones included); grids are
    /// never forgotten, so those interned later are [`grids_from`](Self::grids_from) it.
    pub fn grids_interned(&self) -> usize {
        self.keys.grids.len()
    }

    /// The grids interned after the first `from`, in the order they came.
    pub fn grids_from(&self, from: usize) -> impl Iterator<Item = &str> + '_ {
        let n = u32::try_from(self.keys.grids.len()).unwrap_or(u32::MAX);
        (u32::try_from(from).unwrap_or(u32::MAX)..n).map(|id| self.keys.grids.str(id))
    }

    fn view(&self, b: &Bucket, pos: u32) -> WindowView {
        let win = &b.wins[pos as usize];
        let [returned, preorder] = b.extra(pos);
        let size = self.cfg.windowing.sizes[b.size_idx];
        WindowView {
            size_idx: b.size_idx,
            start: b.start,
            end: b.start.saturating_add(size),
            units_sold: i64::from(win.sold),
            units_returned: i64::from(returned),
            preorder_units: i64::from(preorder),
            revenue_minor: win.revenue(),
            event_count: i64::from(win.events),
            last_event_at: b.last_event_at(pos),
            distinct_stores: b.stores(pos),
            revision: b.revision(pos),
            closed: b.closed,
        }
    }

    fn key_view(&self, k: u32) -> KeyView<'_> {
        let mut windows = Vec::new();
        for b in self.buckets.values() {
            let (p, _) = self.keys.slot(k, b.size_idx);
            let pos =
                if p != NO_POS && b.key_at(p) == Some(k) { Some(p) } else { b.find(k, &self.keys) };
            if let Some(pos) = pos {
                windows.push(self.view(b, pos));
            }
        }
        KeyView { grid: self.keys.grid(k), sku: self.keys.sku(k), windows }
    }

    /// The live windows of a grid × SKU (the live query).
    pub fn key(&self, grid: &str, sku: &str) -> Option<KeyView<'_>> {
        self.keys.find(grid, sku).map(|k| self.key_view(k))
    }

    /// The grid × SKU keys whose grid passes `grid_ok` (asked once per grid) and whose SKU
    /// is `sku` (any when `None`), unordered: the live query's selection. The cheaper of
    /// two ways: a lookup per (matching grid, SKU) pair, or one pass over the keys. The
    /// views are made by the caller for the keys it keeps ([`Self::view_of`]).
    pub fn select(
        &self,
        mut grid_ok: impl FnMut(&str) -> bool,
        sku: Option<&str>,
    ) -> Vec<(&str, &str, u32)> {
        let keys = &self.keys;
        let skus: Vec<u32> = match sku {
            Some(s) => match keys.skus.get(s) {
                Some(id) => vec![id],
                None => return Vec::new(),
            },
            None => (0..keys.skus.len() as u32).collect(),
        };
        let grids: Vec<u32> =
            (0..keys.grids.len() as u32).filter(|&g| grid_ok(keys.grids.str(g))).collect();
        let row = |k: u32| (keys.grid(k), keys.sku(k), k);
        if grids.len().saturating_mul(skus.len()) <= keys.len() {
            return grids
                .iter()
                .flat_map(|&g| skus.iter().filter_map(move |&s| keys.find_ids(g, s)))
                .map(row)
                .collect();
        }
        let (grids, skus): (HashSet<u32>, HashSet<u32>) =
            (grids.into_iter().collect(), skus.into_iter().collect());
        keys.iter()
            .filter(|&k| skus.contains(&keys.sku_id(k)) && grids.contains(&keys.grid_id(k)))
            .map(row)
            .collect()
    }

    /// The live windows of key `k` (from [`Self::select`]).
    pub fn view_of(&self, k: u32) -> KeyView<'_> {
        self.key_view(k)
    }

    /// The newest window of size index `size_idx`: its start and, per grid × SKU in it,
    /// the grid, the SKU and the window (the live map).
    pub fn newest(&self, size_idx: usize) -> Option<(Millis, Vec<Row<'_>>)> {
        let b = self.buckets.of_size(size_idx).last()?;
        let rows = (0..b.wins.len() as u32)
            .map(|pos| {
                let k = b.wins[pos as usize].key();
                (self.keys.grid(k), self.keys.sku(k), self.view(b, pos))
            })
            .collect();
        Some((b.start, rows))
    }

    /// Reporting stores of a grid during a window.
    pub fn stores_reporting(&self, grid: &str, size_idx: usize, start: Millis) -> usize {
        self.grids.get(&short_id(grid)).map_or(0, |g| g.completeness(size_idx, start).0)
    }

    /// Sums over every live window.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for b in self.buckets.values() {
            for pos in 0..b.wins.len() as u32 {
                let w = &b.wins[pos as usize];
                t.windows += 1;
                t.events += u64::from(w.events);
                t.units_sold = t.units_sold.wrapping_add(i64::from(w.sold));
                t.net_units = t.net_units.wrapping_add(b.net(pos));
                t.revenue_minor = t.revenue_minor.wrapping_add(w.revenue());
                t.distinct_stores += b.stores(pos);
            }
        }
        t
    }

    /// How big the state is (an estimate of bytes: entries, their heap parts, and the
    /// maps' slack).
    pub fn size(&self) -> StateSize {
        let map_entry = |k: usize, v: usize| (k + v + 1) * 8 / 7;
        let dedupe: usize = self.dedupe.values().map(IdTable::bytes).sum();
        let pending = self.pending_ids.capacity() * size_of::<(Millis, u64)>();
        let mut bytes = dedupe + pending + self.keys.bytes();
        let mut close_backlog = 0;
        for b in self.buckets.values() {
            bytes += b.bytes() + 160;
            if b.closed {
                close_backlog += b.wins.len() - b.cursor as usize;
            }
        }
        let mut grid_windows = 0;
        for g in self.grids.values() {
            grid_windows += g.windows.len();
            bytes += map_entry(8, size_of::<GridState>()) + g.heap_bytes();
        }
        StateSize {
            keys: self.keys.len(),
            windows: self.windows,
            dedupe_ids: self.dedupe_ids,
            grid_windows,
            bytes,
            close_backlog,
        }
    }
}

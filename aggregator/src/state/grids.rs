//! Completeness per grid: which stores of a grid reported (a sale or a device heartbeat)
//! during each live window, and which said they hold sales not uploaded yet (heartbeat
//! `pending_events`); and the `GridCoverage` records of closed windows, written for every
//! grid with registered stores whether it sold or not.

use nearfield_schemas::GridCoverage;

use crate::changelog::GridRec;
use crate::config::MAX_SIZES;
use crate::counters::insert_sorted;
use crate::window::{Millis, Windowing};

/// The registered grids an aggregator partition answers for.
pub trait Registry {
    /// Active stores registered in `grid`.
    fn expected(&self, grid: &str) -> i32;
    /// Every grid of this partition with active registered stores, and how many.
    fn grids(&self) -> Vec<(String, i32)>;
}

/// A registry without grids: `expected` from a function (tests, benchmarks).
pub struct Expected<F: Fn(&str) -> i32>(pub F);

impl<F: Fn(&str) -> i32> std::fmt::Debug for Expected<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expected(..)")
    }
}

impl<F: Fn(&str) -> i32> Registry for Expected<F> {
    fn expected(&self, grid: &str) -> i32 {
        (self.0)(grid)
    }
    fn grids(&self) -> Vec<(String, i32)> {
        Vec::new()
    }
}

/// One grid during one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GridWindow {
    pub(super) size_idx: usize,
    pub(super) start: Millis,
    /// Stores that reported, sorted.
    pub(super) stores: Vec<u64>,
    /// Stores whose latest heartbeat in the window held unsent sales, and how many;
    /// sorted by store.
    pub(super) pending: Vec<(u64, u32)>,
}

/// Stores of one grid that reported, per live window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GridState {
    pub(super) windows: Vec<GridWindow>,
    pub(super) dirty: bool,
    /// Where the window of each size last reported to is in `windows`.
    recent: Recent,
}

/// Per size index, the position in a grid's `windows` of the window last reported to: a
/// hint, checked before use (an expiry shifts positions), and no part of the state's
/// value (two states equal but for it are equal).
#[derive(Debug, Clone, Copy, Eq)]
struct Recent([u8; MAX_SIZES]);

impl Default for Recent {
    fn default() -> Self {
        Recent([u8::MAX; MAX_SIZES])
    }
}

impl PartialEq for Recent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl GridState {
    /// A grid with these live windows, clean (a restored one).
    pub(super) fn of(windows: Vec<GridWindow>) -> Self {
        GridState { windows, ..GridState::default() }
    }

    fn window(&mut self, size_idx: usize, start: Millis) -> &mut GridWindow {
        let is = |w: &GridWindow| w.size_idx == size_idx && w.start == start;
        let hint = self.recent.0.get(size_idx).map_or(usize::MAX, |&h| usize::from(h));
        let i = match self.windows.get(hint) {
            Some(w) if is(w) => hint,
            // From the back: the newest windows were added last, and most reports are
            // theirs.
            _ => match self.windows.iter().rposition(is) {
                Some(i) => i,
                None => {
                    self.windows.push(GridWindow { size_idx, start, ..GridWindow::default() });
                    self.windows.len() - 1
                }
            },
        };
        if let Some(h) = self.recent.0.get_mut(size_idx) {
            *h = u8::try_from(i).unwrap_or(u8::MAX);
        }
        &mut self.windows[i]
    }

    /// Adds `store` to the window; true when the grid just became dirty.
    pub(super) fn report(&mut self, size_idx: usize, start: Millis, store: u64) -> bool {
        let changed = insert_sorted(&mut self.window(size_idx, start).stores, store);
        changed && !std::mem::replace(&mut self.dirty, true)
    }

    /// Records a heartbeat's backlog (`0`: none); true when the grid just became dirty.
    pub(super) fn report_pending(
        &mut self,
        size_idx: usize,
        start: Millis,
        store: u64,
        events: u32,
    ) -> bool {
        let pending = &mut self.window(size_idx, start).pending;
        let changed = match (pending.binary_search_by_key(&store, |p| p.0), events) {
            (Ok(i), 0) => {
                pending.remove(i);
                true
            }
            (Ok(i), n) => std::mem::replace(&mut pending[i].1, n) != n,
            (Err(_), 0) => false,
            (Err(i), n) => {
                pending.insert(i, (store, n));
                true
            }
        };
        changed && !std::mem::replace(&mut self.dirty, true)
    }

    /// Forgets `store`'s backlog in every window starting at or before `through` (its
    /// device uploaded everything); true when the grid just became dirty.
    pub(super) fn clear_pending(&mut self, store: u64, through: Millis) -> bool {
        let mut changed = false;
        for w in self.windows.iter_mut().filter(|w| w.start <= through) {
            if let Ok(i) = w.pending.binary_search_by_key(&store, |p| p.0) {
                w.pending.remove(i);
                changed = true;
            }
        }
        changed && !std::mem::replace(&mut self.dirty, true)
    }

    fn find(&self, size_idx: usize, start: Millis) -> Option<&GridWindow> {
        self.windows.iter().find(|w| w.size_idx == size_idx && w.start == start)
    }

    /// How complete a window is: the stores that reported, the stores holding unsent
    /// sales, and the sum of what they hold (one search of the grid's windows).
    pub(super) fn completeness(&self, size_idx: usize, start: Millis) -> (usize, usize, i64) {
        self.find(size_idx, start).map_or((0, 0, 0), |w| {
            let held = w.pending.iter().map(|p| i64::from(p.1)).sum();
            (w.stores.len(), w.pending.len(), held)
        })
    }

    /// The changelog form of the live windows.
    pub(super) fn records(&self, w: &Windowing) -> Vec<GridRec> {
        self.windows
            .iter()
            .map(|g| GridRec {
                size: w.sizes[g.size_idx],
                start: g.start,
                stores: g.stores.clone(),
                pending: g.pending.clone(),
            })
            .collect()
    }

    /// Estimated heap bytes.
    pub(super) fn heap_bytes(&self) -> usize {
        self.windows
            .iter()
            .map(|w| size_of::<GridWindow>() + w.stores.capacity() * 8 + w.pending.capacity() * 16)
            .sum()
    }
}

/// The coverage record of one grid for one closed window.
pub(super) fn coverage(
    (grid, expected): (String, i32),
    state: Option<&GridState>,
    (size_idx, start, end): (usize, Millis, Millis),
    watermark: Millis,
    now: Millis,
) -> GridCoverage {
    let (reporting, pending, events) = state.map_or((0, 0, 0), |g| g.completeness(size_idx, start));
    let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    GridCoverage {
        grid_id: grid,
        window_start: start,
        window_end: end,
        stores_expected: expected,
        stores_reporting: int(reporting),
        stores_pending: int(pending),
        pending_events: events,
        watermark,
        emitted_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl GridState {
        fn pending(&self, size_idx: usize, start: Millis) -> (usize, i64) {
            let (_, stores, held) = self.completeness(size_idx, start);
            (stores, held)
        }
    }

    /// A report lands in its own window whatever the hint says: after windows before it
    /// expired (positions shift) and after another size's window was added.
    #[test]
    fn a_stale_hint_finds_the_right_window() {
        let mut g = GridState::default();
        assert!(g.report(0, 0, 1));
        assert!(!g.report(1, 0, 1));
        assert!(!g.report(0, 300_000, 2));
        g.windows.retain(|w| (w.size_idx, w.start) != (0, 0));
        g.report(0, 300_000, 3);
        g.report(1, 0, 4);
        g.report(0, 600_000, 5);
        let stores = |i: usize, start: Millis| g.find(i, start).map(|w| w.stores.clone());
        assert_eq!(stores(0, 300_000), Some(vec![2, 3]));
        assert_eq!(stores(1, 0), Some(vec![1, 4]));
        assert_eq!(stores(0, 600_000), Some(vec![5]));
        assert_eq!(stores(0, 0), None);
        assert_eq!(g.windows.len(), 3);
    }

    #[test]
    fn the_latest_heartbeat_of_a_store_says_what_it_holds() {
        let mut g = GridState::default();
        assert!(g.report_pending(0, 0, 7, 12));
        g.dirty = false;
        assert!(g.report_pending(0, 0, 9, 3));
        assert!(!g.report_pending(0, 0, 7, 5), "already dirty");
        assert_eq!(g.pending(0, 0), (2, 8));
        g.report_pending(0, 0, 7, 0);
        assert_eq!(g.pending(0, 0), (1, 3), "an empty backlog clears the store");
        g.report_pending(1, 0, 9, 4);
        g.report_pending(0, 300_000, 9, 4);
        g.dirty = false;
        assert!(g.clear_pending(9, 0), "cleared where it was pending, dirty");
        assert_eq!((g.pending(0, 0), g.pending(1, 0)), ((0, 0), (0, 0)));
        assert_eq!(g.pending(0, 300_000), (1, 4), "a window after `through` keeps it");
        assert!(!g.clear_pending(8, i64::MAX), "a store with no backlog changes nothing");
        assert_eq!(g.pending(1, 0), (0, 0));
        assert_eq!(g.completeness(0, 0).0, 0, "a backlog alone is not a report");
    }
}

//! The live query, answered on the loop's thread from the owned partitions' state for the
//! partitions asked (the HTTP handlers in `http.rs` validate, gather the answers of every
//! partition's owner through the query plane, and render): grid × SKU keys selected by
//! grid, by parent cell (rolled up), or by SKU across grids, over a time range, a page at
//! a time; and the city view (the newest window's demand per grid and SKU totals, for the
//! live page). Each answer is a [`Part`] that merges with other instances' answers.

use std::collections::{BTreeMap, HashSet};

use h3o::{CellIndex, Resolution};
use nearfield_eos::{Local, Owned, Part};
use serde::{Deserialize, Serialize};

use crate::state::{KeyView, PartitionState, StateSize, Totals};

/// Which keys and windows a demand query wants.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// One grid (its keys live in one partition).
    pub grid: Option<String>,
    /// Every grid under this coarser cell, rolled up into one key per SKU.
    pub parent: Option<CellIndex>,
    /// One SKU (across grids when no grid or parent is given).
    pub sku: Option<String>,
    /// Only windows of this size (index among the configured sizes).
    pub size_idx: Option<usize>,
    /// Only windows ending after `from` and starting before `to` (ms).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Keys after this (grid or parent, SKU) only: the page cursor.
    pub after: Option<(String, String)>,
    /// Most keys in the answer.
    pub limit: usize,
}

/// A question for the loop.
#[derive(Debug)]
pub enum Query {
    /// The live windows of the selected keys in `partitions`.
    Demand { sel: Selector, partitions: Vec<i32> },
    /// The newest window of size index `size_idx` per grid, over `skus` (all when `None`).
    Cells { size_idx: usize, skus: Option<HashSet<String>>, partitions: Vec<i32> },
    /// The size of the owned state (benchmarks, tests).
    Size,
    /// Sums over every live window of the owned state (benchmarks and fault tests compare
    /// them before a crash and after the restore).
    Totals,
}

/// The loop's answer.
#[derive(Debug)]
pub enum Answer {
    Demand(Local<DemandPart>),
    Cells(Local<CellsPart>),
    Size(StateSize),
    Totals(Totals),
}

/// Whether a window's final was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    Open,
    /// Final emitted; late events may still revise it.
    Closed,
}

/// One window in a live answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveWindow {
    pub window_start: i64,
    pub window_end: i64,
    pub units_sold: i64,
    pub units_returned: i64,
    pub preorder_units: i64,
    pub net_units: i64,
    pub revenue_minor: i64,
    pub event_count: i64,
    pub distinct_stores: usize,
    pub stores_reporting: usize,
    pub status: WindowStatus,
    pub revision: i32,
}

impl LiveWindow {
    /// Adds the same window of another grid (a roll-up): stores belong to one grid each,
    /// so store counts add up too.
    fn add(&mut self, o: &LiveWindow) {
        self.units_sold = self.units_sold.saturating_add(o.units_sold);
        self.units_returned = self.units_returned.saturating_add(o.units_returned);
        self.preorder_units = self.preorder_units.saturating_add(o.preorder_units);
        self.net_units = self.net_units.saturating_add(o.net_units);
        self.revenue_minor = self.revenue_minor.saturating_add(o.revenue_minor);
        self.event_count = self.event_count.saturating_add(o.event_count);
        self.distinct_stores = self.distinct_stores.saturating_add(o.distinct_stores);
        self.stores_reporting = self.stores_reporting.saturating_add(o.stores_reporting);
        if o.status == WindowStatus::Open {
            self.status = WindowStatus::Open;
        }
        self.revision = self.revision.max(o.revision);
    }
}

/// One grid × SKU (or parent cell × SKU) in a live answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveKey {
    /// The grid, or the parent cell of a roll-up.
    pub grid_id: String,
    pub sku: String,
    /// The input partition holding the grid (absent for a roll-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Grids rolled up into this key (1 for a grid).
    pub grids: usize,
    /// The lowest watermark of the partitions it comes from.
    pub watermark: i64,
    /// Ordered by size, then start.
    pub windows: Vec<LiveWindow>,
}

impl LiveKey {
    fn add(&mut self, o: LiveKey) {
        self.partition = None;
        self.grids += o.grids;
        self.watermark = self.watermark.min(o.watermark);
        for w in o.windows {
            match self
                .windows
                .iter_mut()
                .find(|m| (m.window_start, m.window_end) == (w.window_start, w.window_end))
            {
                Some(m) => m.add(&w),
                None => self.windows.push(w),
            }
        }
        self.windows.sort_by_key(|w| (w.window_end - w.window_start, w.window_start));
    }
}

/// A page of keys from some partitions, in (grid, SKU) order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DemandPart {
    pub keys: Vec<LiveKey>,
    /// Most keys kept.
    pub limit: usize,
    /// More keys follow this page.
    pub more: bool,
}

impl DemandPart {
    /// No keys yet, `limit` at most.
    pub fn new(limit: usize) -> Self {
        DemandPart { keys: Vec::new(), limit, more: false }
    }

    /// Sorts, combines keys that are the same roll-up, and keeps the first `limit`.
    fn normalize(&mut self) {
        self.keys.sort_by(|a, b| (&a.grid_id, &a.sku).cmp(&(&b.grid_id, &b.sku)));
        let mut out: Vec<LiveKey> = Vec::with_capacity(self.keys.len());
        for k in self.keys.drain(..) {
            match out.last_mut() {
                Some(last) if (&last.grid_id, &last.sku) == (&k.grid_id, &k.sku) => last.add(k),
                _ => out.push(k),
            }
        }
        if out.len() > self.limit {
            out.truncate(self.limit);
            self.more = true;
        }
        self.keys = out;
    }
}

impl Part for DemandPart {
    fn merge(&mut self, other: Self) {
        self.more |= other.more;
        self.keys.extend(other.keys);
        self.normalize();
    }
}

/// The newest window's demand per grid and per SKU, from some partitions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CellsPart {
    /// Start of the newest window seen (only its figures are kept).
    pub window_start: Option<i64>,
    /// Grid → (net units, events).
    pub cells: BTreeMap<String, (i64, i64)>,
    /// SKU → net units.
    pub skus: BTreeMap<String, i64>,
    /// The lowest watermark among the partitions.
    pub watermark: Option<i64>,
}

impl Part for CellsPart {
    fn merge(&mut self, o: Self) {
        self.watermark = match (self.watermark, o.watermark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match o.window_start.cmp(&self.window_start) {
            std::cmp::Ordering::Greater => {
                (self.window_start, self.cells, self.skus) = (o.window_start, o.cells, o.skus);
            }
            std::cmp::Ordering::Equal => {
                for (g, (n, e)) in o.cells {
                    let c = self.cells.entry(g).or_default();
                    (c.0, c.1) = (c.0.saturating_add(n), c.1.saturating_add(e));
                }
                for (s, n) in o.skus {
                    let c = self.skus.entry(s).or_default();
                    *c = c.saturating_add(n);
                }
            }
            std::cmp::Ordering::Less => {}
        }
    }
}

fn live(p: i32, st: &PartitionState, k: KeyView<'_>, sel: &Selector) -> LiveKey {
    let mut windows: Vec<LiveWindow> = k
        .windows
        .iter()
        .filter(|w| sel.size_idx.is_none_or(|i| w.size_idx == i))
        .filter(|w| sel.from.is_none_or(|f| w.end > f) && sel.to.is_none_or(|t| w.start < t))
        .map(|w| LiveWindow {
            window_start: w.start,
            window_end: w.end,
            units_sold: w.units_sold,
            units_returned: w.units_returned,
            preorder_units: w.preorder_units,
            net_units: w.net_units(),
            revenue_minor: w.revenue_minor,
            event_count: w.event_count,
            distinct_stores: usize::try_from(w.distinct_stores).unwrap_or(usize::MAX),
            stores_reporting: st.stores_reporting(k.grid, w.size_idx, w.start),
            status: if w.closed { WindowStatus::Closed } else { WindowStatus::Open },
            revision: w.revision.max(0),
        })
        .collect();
    windows.sort_by_key(|w| (w.window_end - w.window_start, w.window_start));
    LiveKey {
        grid_id: k.grid.to_string(),
        sku: k.sku.to_string(),
        partition: Some(p),
        grids: 1,
        watermark: st.watermark(),
        windows,
    }
}

/// Whether `grid` lies under `parent`.
fn under(grid: &str, parent: CellIndex) -> bool {
    grid.parse::<CellIndex>().ok().and_then(|c| c.parent(parent.resolution())) == Some(parent)
}

/// The key a row is paged by: its parent cell in a roll-up, else its grid.
fn label<'a>(parent: Option<&'a str>, grid: &'a str) -> &'a str {
    parent.unwrap_or(grid)
}

/// The selected keys of one partition, at most a page (of parents × SKUs for a roll-up).
fn select(p: i32, st: &PartitionState, sel: &Selector) -> Vec<LiveKey> {
    let sku = sel.sku.as_deref();
    let mut rows = match (&sel.grid, sel.parent) {
        (Some(grid), _) => st.select(|g| g == grid, sku),
        (None, Some(parent)) => st.select(|g| under(g, parent), sku),
        (None, None) => st.select(|_| true, sku),
    };
    let parent = sel.parent.map(|c| c.to_string());
    let after = sel.after.as_ref();
    rows.retain(|(g, s, _)| {
        after.is_none_or(|(ag, asku)| (label(parent.as_deref(), g), *s) > (ag.as_str(), asku))
    });
    // A page holds `limit` (grid or parent, SKU) pairs: every grid of those pairs is kept.
    rows.sort_unstable_by(|a, b| {
        (label(parent.as_deref(), a.0), a.1, a.0).cmp(&(label(parent.as_deref(), b.0), b.1, b.0))
    });
    let mut pairs = 0usize;
    let mut last: Option<(&str, &str)> = None;
    let mut keys = Vec::new();
    for (g, s, k) in rows {
        let pair = (label(parent.as_deref(), g), s);
        if last != Some(pair) {
            pairs += 1;
            if pairs > sel.limit {
                break;
            }
            last = Some(pair);
        }
        let mut key = live(p, st, st.view_of(k), sel);
        if key.windows.is_empty() {
            continue;
        }
        if let Some(parent) = &parent {
            key.grid_id.clone_from(parent);
            key.partition = None;
        }
        keys.push(key);
    }
    keys
}

/// Answers `q` from the owned partitions.
pub fn answer(owned: &Owned<'_, PartitionState>, q: Query) -> Answer {
    match q {
        Query::Demand { sel, partitions } => {
            let (answered, restoring) = owned.split(&partitions);
            let mut part = DemandPart::new(sel.limit);
            for p in &answered {
                if let Some(st) = owned.active.get(p) {
                    part.keys.extend(select(*p, st, &sel));
                    part.normalize();
                }
            }
            Answer::Demand(Local { instance: String::new(), answered, restoring, part })
        }
        Query::Cells { size_idx, skus, partitions } => {
            let (answered, restoring) = owned.split(&partitions);
            let mut part = CellsPart::default();
            for p in &answered {
                if let Some(st) = owned.active.get(p) {
                    part.merge(cells(st, size_idx, skus.as_ref()));
                }
            }
            Answer::Cells(Local { instance: String::new(), answered, restoring, part })
        }
        Query::Size => Answer::Size(owned.active.values().map(PartitionState::size).sum()),
        Query::Totals => Answer::Totals(owned.active.values().map(PartitionState::totals).sum()),
    }
}

/// The newest window's demand per grid and per SKU of one partition. Walks the newest
/// bucket of the size: meant for a dashboard polling every few seconds.
fn cells(st: &PartitionState, idx: usize, filter: Option<&HashSet<String>>) -> CellsPart {
    let wanted = |sku: &str| filter.is_none_or(|f| f.contains(sku));
    let watermark = Some(st.watermark()).filter(|w| *w > i64::MIN);
    let mut part = CellsPart { watermark, ..CellsPart::default() };
    let Some((start, rows)) = st.newest(idx) else { return part };
    for (grid, sku, w) in rows.iter().filter(|(_, sku, _)| wanted(sku)) {
        part.window_start = Some(start);
        let g = part.cells.entry(grid.to_string()).or_default();
        g.0 += w.net_units();
        g.1 += w.event_count;
        *part.skus.entry(sku.to_string()).or_default() += w.net_units();
    }
    part
}

/// Most keys a demand page may ask for.
pub const MAX_LIMIT: usize = 1_000;
/// Keys a demand page holds unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 100;

/// The coarsest resolution a parent cell may have, relative to the grids'.
pub fn parent_ok(parent: CellIndex, grid_resolution: Resolution) -> bool {
    parent.resolution() < grid_resolution
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(grid: &str, sku: &str, start: i64, units: i64) -> LiveKey {
        LiveKey {
            grid_id: grid.into(),
            sku: sku.into(),
            partition: Some(0),
            grids: 1,
            watermark: start,
            windows: vec![LiveWindow {
                window_start: start,
                window_end: start + 10,
                units_sold: units,
                units_returned: 0,
                preorder_units: 0,
                net_units: units,
                revenue_minor: units * 100,
                event_count: 1,
                distinct_stores: 1,
                stores_reporting: 1,
                status: WindowStatus::Closed,
                revision: 0,
            }],
        }
    }

    #[test]
    fn pages_merge_in_order_and_keep_the_first_limit() {
        let mut a = DemandPart {
            keys: vec![key("g1", "A", 0, 1), key("g3", "A", 0, 1)],
            ..DemandPart::new(2)
        };
        a.normalize();
        let b = DemandPart { keys: vec![key("g2", "A", 0, 1)], limit: 2, more: false };
        a.merge(b);
        let got: Vec<_> = a.keys.iter().map(|k| k.grid_id.as_str()).collect();
        assert_eq!(got, ["g1", "g2"]);
        assert!(a.more, "g3 is on the next page");
    }

    #[test]
    fn a_roll_up_adds_the_same_window_of_several_grids() {
        let mut a = DemandPart::new(10);
        let mut k1 = key("parent", "A", 0, 3);
        k1.partition = None;
        let mut k2 = key("parent", "A", 0, 4);
        k2.windows[0].status = WindowStatus::Open;
        k2.windows[0].revision = 2;
        let k3 = key("parent", "A", 10, 5);
        a.merge(DemandPart { keys: vec![k1, k2, k3], limit: 10, more: false });
        assert_eq!(a.keys.len(), 1);
        let k = &a.keys[0];
        assert_eq!((k.grids, k.partition), (3, None));
        assert_eq!(k.windows.len(), 2);
        let w = &k.windows[0];
        assert_eq!((w.units_sold, w.revenue_minor, w.distinct_stores), (7, 700, 2));
        assert_eq!((w.status, w.revision), (WindowStatus::Open, 2));
    }

    #[test]
    fn the_city_view_keeps_the_newest_window() {
        let part = |start: i64, grid: &str, n: i64| CellsPart {
            window_start: Some(start),
            cells: [(grid.to_string(), (n, 1))].into(),
            skus: [("A".to_string(), n)].into(),
            watermark: Some(start),
        };
        let mut a = part(10, "g1", 2);
        a.merge(part(10, "g2", 3));
        a.merge(part(0, "g3", 100));
        assert_eq!(a.skus["A"], 5);
        assert_eq!(a.cells.len(), 2);
        assert_eq!(a.watermark, Some(0));
        a.merge(part(20, "g4", 1));
        assert_eq!((a.window_start, a.cells.len(), a.skus["A"]), (Some(20), 1, 1));
    }

    #[test]
    fn a_grid_lies_under_its_parents_only() {
        let at = |lat, lon| h3o::LatLng::new(lat, lon).expect("ll").to_cell(Resolution::Eight);
        let grid = at(31.2304, 121.4737);
        let parent = grid.parent(Resolution::Six).expect("parent");
        assert!(under(&grid.to_string(), parent));
        let far = at(39.9042, 116.4074);
        assert!(!under(&far.to_string(), parent));
        assert!(!under("not-a-cell", parent));
        assert!(parent_ok(parent, Resolution::Eight));
        assert!(!parent_ok(grid, Resolution::Eight));
    }

    proptest::proptest! {
        /// The selection equals a brute-force filter whichever way it runs (a lookup
        /// per pair on a dense state, a pass over the keys on a sparse one).
        #[test]
        fn selection_is_the_filter(
            pairs in proptest::collection::btree_set((0u8..6, 0u8..6), 1..36),
            grid in proptest::option::of(0u8..7),
            sku in proptest::option::of(0u8..7),
        ) {
            use crate::window::Windowing;
            let cfg = std::sync::Arc::new(crate::state::StateConfig {
                windowing: Windowing {
                    sizes: vec![60_000],
                    out_of_orderness: 1_000,
                    grace: vec![1_000],
                    allowed_lateness: vec![60_000],
                    max_close_delay: 60_000,
                },
                currency: "CNY".into(),
                coverage: vec![false],
                close_chunk: 100,
            });
            let mut st = PartitionState::new(cfg);
            let t = 1_700_000_000_000;
            for (i, (g, s)) in pairs.iter().enumerate() {
                let ev = nearfield_schemas::SaleEvent {
                    event_id: format!("e{i}"),
                    store_id: "s".into(),
                    device_id: "d".into(),
                    grid_id: format!("g{g}"),
                    sku: format!("S{s}"),
                    kind: nearfield_schemas::SaleKind::Sale,
                    quantity: 1,
                    unit_price_minor: 100,
                    currency: "CNY".into(),
                    occurred_at: t,
                    received_at: t,
                };
                st.apply_sale(&ev, t);
            }
            let (gname, sname) = (grid.map(|g| format!("g{g}")), sku.map(|s| format!("S{s}")));
            let mut got: Vec<(String, String)> = st
                .select(|g| gname.as_deref().is_none_or(|w| w == g), sname.as_deref())
                .into_iter()
                .map(|(g, s, _)| (g.to_string(), s.to_string()))
                .collect();
            got.sort();
            let want: Vec<(String, String)> = pairs
                .iter()
                .filter(|(g, s)| grid.is_none_or(|w| w == *g) && sku.is_none_or(|w| w == *s))
                .map(|(g, s)| (format!("g{g}"), format!("S{s}")))
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}

//! The live query, answered on the loop's thread from the owned partitions' state (the
//! HTTP handlers in `http.rs` validate, ask through the runtime's mailbox, and render):
//! one grid's keys (all SKUs or one), and the city view (the newest window's demand per
//! grid and the top SKUs, for the live page).

use std::collections::{BTreeMap, HashMap, HashSet};

use nearfield_eos::Owned;
use serde::{Deserialize, Serialize};

use crate::state::{KeyView, PartitionState, StateSize, Totals};

/// A question for the loop.
#[derive(Debug)]
pub enum Query {
    /// The live windows of `grid` (× `sku`).
    Demand { grid: String, sku: Option<String> },
    /// The newest window of size index `size_idx` per grid, over `skus` (all when `None`).
    Cells { size_idx: usize, size: i64, skus: Option<HashSet<String>> },
    /// The size of the owned state (benchmarks, tests).
    Size,
    /// Sums over every live window of the owned state (benchmarks and fault tests compare
    /// them before a crash and after the restore).
    Totals,
}

/// The loop's answer.
#[derive(Debug)]
pub enum Answer {
    Demand { keys: Vec<LiveKey>, owned: Vec<i32>, restoring: Vec<i32> },
    Cells(serde_json::Value),
    Size(StateSize),
    Totals(Totals),
}

/// One window in a live answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
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
    /// `open`, or `closed` (final emitted; late events may still revise it).
    pub status: &'static str,
    pub revision: i32,
}

/// One grid × SKU in a live answer.
#[derive(Debug, Serialize)]
pub struct LiveKey {
    pub grid_id: String,
    pub sku: String,
    pub partition: i32,
    pub watermark: i64,
    pub windows: Vec<LiveWindow>,
}

/// Demand of one grid in the newest window.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub grid_id: String,
    pub net_units: i64,
    pub event_count: i64,
}

fn live(p: i32, st: &PartitionState, k: KeyView<'_>) -> LiveKey {
    let mut windows: Vec<LiveWindow> = k
        .windows
        .iter()
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
            status: if w.closed { "closed" } else { "open" },
            revision: w.revision.max(0),
        })
        .collect();
    windows.sort_by_key(|w| (w.window_end - w.window_start, w.window_start));
    LiveKey {
        grid_id: k.grid.to_string(),
        sku: k.sku.to_string(),
        partition: p,
        watermark: st.watermark(),
        windows,
    }
}

/// Answers `q` from the owned partitions.
pub fn answer(owned: &Owned<'_, PartitionState>, q: Query) -> Answer {
    match q {
        Query::Demand { grid, sku } => {
            let mut keys = Vec::new();
            for (p, st) in owned.active {
                match sku.as_deref() {
                    Some(sku) => keys.extend(st.key(&grid, sku).map(|k| live(*p, st, k))),
                    None => {
                        keys.extend(st.keys_of_grid(&grid).into_iter().map(|k| live(*p, st, k)))
                    }
                }
            }
            keys.sort_by(|a, b| a.sku.cmp(&b.sku));
            Answer::Demand {
                keys,
                owned: owned.active.keys().copied().collect(),
                restoring: owned.restoring.to_vec(),
            }
        }
        Query::Cells { size_idx, size, skus } => Answer::Cells(cells(owned, size_idx, size, skus)),
        Query::Size => Answer::Size(owned.active.values().map(PartitionState::size).sum()),
        Query::Totals => Answer::Totals(owned.active.values().map(PartitionState::totals).sum()),
    }
}

/// The newest window's demand per grid and the top SKUs. Walks the newest bucket of the
/// size on each partition: meant for a dashboard polling every few seconds.
fn cells(
    owned: &Owned<'_, PartitionState>,
    idx: usize,
    size: i64,
    filter: Option<HashSet<String>>,
) -> serde_json::Value {
    let wanted = |sku: &str| filter.as_ref().is_none_or(|f| f.contains(sku));
    let states = || owned.active.values();
    let buckets: Vec<_> = states().filter_map(|st| st.newest(idx)).collect();
    let newest = buckets
        .iter()
        .filter(|(_, rows)| rows.iter().any(|(_, sku, _)| wanted(sku)))
        .map(|(start, _)| *start)
        .max();
    let mut grids: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut skus: HashMap<&str, i64> = HashMap::new();
    for (start, rows) in &buckets {
        if Some(*start) != newest {
            continue;
        }
        for (grid, sku, w) in rows.iter().filter(|(_, sku, _)| wanted(sku)) {
            let g = grids.entry(grid).or_default();
            g.0 += w.net_units();
            g.1 += w.event_count;
            *skus.entry(sku).or_default() += w.net_units();
        }
    }
    let mut top: Vec<(&str, i64)> = skus.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(10);
    let watermark = states().map(PartitionState::watermark).filter(|w| *w > i64::MIN).min();
    let cells: Vec<Cell> = grids
        .into_iter()
        .map(|(g, (n, e))| Cell { grid_id: g.to_string(), net_units: n, event_count: e })
        .collect();
    serde_json::json!({
        "window_ms": size,
        "window_start": newest,
        "window_end": newest.map(|s| s + size),
        "watermark": watermark,
        "partitions": owned.active.keys().collect::<Vec<_>>(),
        "restoring": owned.restoring,
        "cells": cells,
        "top_skus": top.into_iter().map(|(s, n)| serde_json::json!({"sku": s, "net_units": n})).collect::<Vec<_>>(),
    })
}

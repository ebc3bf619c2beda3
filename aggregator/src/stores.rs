//! Active stores per grid (`stores_expected`), from the registry file and `stores.v1`.

use std::collections::HashMap;
use std::sync::Mutex;

use h3o::Resolution;
use nearfield_common::stores::{StoreSink, grid_of};
use nearfield_schemas::StoreRecord;

/// Which grid each store is in and whether it is active.
#[derive(Debug)]
pub struct GridDirectory {
    resolution: Resolution,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stores: HashMap<String, (String, bool)>,
    active_per_grid: HashMap<String, i32>,
}

impl GridDirectory {
    /// An empty directory for grids at `resolution`.
    pub fn new(resolution: Resolution) -> Self {
        GridDirectory { resolution, inner: Mutex::new(Inner::default()) }
    }

    /// Active stores registered in `grid`.
    pub fn expected(&self, grid: &str) -> i32 {
        self.inner.lock().map(|i| i.active_per_grid.get(grid).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Grids with active stores whose records go to input partition `partition` of
    /// `partitions` (sales and heartbeats are keyed by grid), and how many stores each has.
    pub fn grids_of_partition(&self, partition: i32, partitions: i32) -> Vec<(String, i32)> {
        let Ok(inner) = self.inner.lock() else { return Vec::new() };
        let mut out: Vec<(String, i32)> = inner
            .active_per_grid
            .iter()
            .filter(|(g, n)| {
                **n > 0
                    && nearfield_common::kafka::partition_for_key(g.as_bytes(), partitions)
                        == partition
            })
            .map(|(g, n)| (g.clone(), *n))
            .collect();
        out.sort_unstable();
        out
    }

    /// Registered stores.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.stores.len()).unwrap_or(0)
    }

    /// Whether no store is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn take(&mut self, store_id: &str) {
        if let Some((grid, true)) = self.stores.remove(store_id)
            && let Some(n) = self.active_per_grid.get_mut(&grid)
        {
            *n -= 1;
        }
    }
}

impl StoreSink for GridDirectory {
    fn upsert(&self, rec: &StoreRecord) -> Result<(), String> {
        let grid = grid_of(rec.lat, rec.lon, self.resolution)?;
        let mut inner = self.inner.lock().map_err(|_| "registry lock poisoned".to_string())?;
        inner.take(&rec.store_id);
        if rec.active {
            *inner.active_per_grid.entry(grid.clone()).or_default() += 1;
        }
        inner.stores.insert(rec.store_id.clone(), (grid, rec.active));
        Ok(())
    }

    fn remove(&self, store_id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.take(store_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, lat: f64, active: bool) -> StoreRecord {
        StoreRecord {
            store_id: id.into(),
            name: id.into(),
            lat,
            lon: 121.47,
            device_ids: vec!["d".into()],
            key_version: 1,
            active,
            updated_at: 0,
        }
    }

    #[test]
    fn counts_active_stores_per_grid_through_moves_and_removals() {
        let d = GridDirectory::new(Resolution::Eight);
        d.upsert(&rec("a", 31.23, true)).expect("ok");
        d.upsert(&rec("b", 31.23, true)).expect("ok");
        d.upsert(&rec("c", 31.23, false)).expect("ok");
        let g = grid_of(31.23, 121.47, Resolution::Eight).expect("grid");
        assert_eq!(d.expected(&g), 2);
        d.upsert(&rec("b", 31.30, true)).expect("moved");
        assert_eq!(d.expected(&g), 1);
        d.remove("a");
        assert_eq!(d.expected(&g), 0);
        assert!(d.upsert(&rec("x", 95.0, true)).is_err());
    }
}

//! The output digest: a fingerprint of the final windows a run wrote, so that two systems
//! that claim to compute the same windows can be checked to have done so (the aggregator
//! benchmark compares nearfield with Kafka Streams on it, `benches/README.md`).
//!
//! One line per final window of every size,
//! `grid_id,sku,window_start_ms,window_end_ms,net_units,event_count\n`; the lines sorted
//! bytewise; SHA-256 over their concatenation, in lower-case hex. A window written more
//! than once (a revision after late data) counts with its highest revision only.

use std::collections::HashMap;

use nearfield_schemas::DemandWindow;
use sha2::{Digest, Sha256};

use crate::window::Millis;

/// One window's identity: grid, SKU, start, end.
type WindowId = (String, String, Millis, Millis);

/// The final windows seen so far, by identity: the highest revision's figures.
#[derive(Debug, Default)]
pub struct OutputDigest {
    windows: HashMap<WindowId, Figures>,
    records: u64,
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    revision: i32,
    net_units: i64,
    event_count: i64,
}

impl OutputDigest {
    /// Takes one record of the demand topic (a window that is not final is ignored).
    pub fn add(&mut self, w: &DemandWindow) {
        if !w.is_final {
            return;
        }
        self.records += 1;
        let f =
            Figures { revision: w.revision, net_units: w.net_units, event_count: w.event_count };
        self.add_window(&w.grid_id, &w.sku, w.window_start, w.window_end, f);
    }

    /// Takes one window as figures (a generator's ground truth, revision 0).
    pub fn add_figures(
        &mut self,
        grid: &str,
        sku: &str,
        start: Millis,
        end: Millis,
        net: i64,
        events: i64,
    ) {
        self.records += 1;
        let f = Figures { revision: 0, net_units: net, event_count: events };
        self.add_window(grid, sku, start, end, f);
    }

    fn add_window(&mut self, grid: &str, sku: &str, start: Millis, end: Millis, f: Figures) {
        let id = (grid.to_string(), sku.to_string(), start, end);
        match self.windows.get_mut(&id) {
            Some(old) if old.revision >= f.revision => {}
            Some(old) => *old = f,
            None => {
                self.windows.insert(id, f);
            }
        }
    }

    /// Distinct final windows.
    pub fn windows_out(&self) -> usize {
        self.windows.len()
    }

    /// Final records taken, revisions included (`records − windows_out` were revisions).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The digest, lower-case hex.
    pub fn hex(&self) -> String {
        let mut lines: Vec<String> = self
            .windows
            .iter()
            .map(|((grid, sku, start, end), f)| {
                format!("{grid},{sku},{start},{end},{},{}\n", f.net_units, f.event_count)
            })
            .collect();
        lines.sort_unstable();
        let mut h = Sha256::new();
        for l in &lines {
            h.update(l.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(grid: &str, start: Millis, revision: i32, net: i64, events: i64) -> DemandWindow {
        DemandWindow {
            grid_id: grid.into(),
            sku: "SKU-1".into(),
            window_start: start,
            window_end: start + 300_000,
            units_sold: net,
            units_returned: 0,
            preorder_units: 0,
            net_units: net,
            revenue_minor: 0,
            currency: "CNY".into(),
            event_count: events,
            distinct_stores: 1,
            stores_reporting: 0,
            stores_expected: 0,
            stores_pending: 0,
            revision,
            is_final: true,
            watermark: 0,
            source_partition: -1,
            last_event_at: 0,
            emitted_at: 0,
        }
    }

    #[test]
    fn the_digest_is_sha256_over_sorted_lines() {
        let mut d = OutputDigest::default();
        // Out of order, and "b" sorts after "a,..." bytewise.
        d.add(&window("b", 0, 0, 3, 2));
        d.add(&window("a", 300_000, 0, -1, 1));
        // Golden: python3 -c 'import hashlib; print(hashlib.sha256(
        //   b"a,SKU-1,300000,600000,-1,1\nb,SKU-1,0,300000,3,2\n").hexdigest())'
        assert_eq!(d.hex(), "f982c0cadd1c93c2fc816dcbca1c96fb756fa6d73a23e5cf20f88c2fc0ed4711");
        assert_eq!(d.windows_out(), 2);
    }

    #[test]
    fn a_revision_replaces_its_window_and_order_does_not_matter() {
        let (mut a, mut b) = (OutputDigest::default(), OutputDigest::default());
        a.add(&window("g", 0, 0, 3, 2));
        a.add(&window("g", 0, 1, 4, 3));
        b.add(&window("g", 0, 1, 4, 3));
        b.add(&window("g", 0, 0, 3, 2));
        assert_eq!(a.hex(), b.hex());
        assert_eq!((a.windows_out(), a.records()), (1, 2));
        let mut c = OutputDigest::default();
        c.add_figures("g", "SKU-1", 0, 300_000, 4, 3);
        assert_eq!(c.hex(), a.hex());
        let mut not_final = window("h", 0, 0, 1, 1);
        not_final.is_final = false;
        c.add(&not_final);
        assert_eq!(c.windows_out(), 1);
    }
}

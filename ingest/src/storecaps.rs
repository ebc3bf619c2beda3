//! Per-store units per window: what one device can do to the demand curve. An event is
//! tallied in its store's window of `occurred_at`; one that would take the store past
//! `max_store_units_per_window` is refused (422 `quantity.store_window_cap`, dead-lettered),
//! and a RETURN that takes the store's returns past what it sold in that window is
//! counted as returns beyond sales (`nearfield_ingest_returns_beyond_sales_total`): accepted
//! — goods bought in another window come back too — but visible, and alerted on when many.
//!
//! Tallies are per ingest instance (devices may reach any instance: the cap is per
//! instance, so a fleet's effective cap is up to `instances ×` this), keyed by a seeded
//! hash of the store id, and dropped once their window is older than the event horizon.
//! Units of an event whose publication failed are given back, so a retry is not counted
//! twice.

use dashmap::DashMap;
use nearfield_schemas::{SaleEvent, SaleKind};

use crate::validate::Rejection;

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    /// Every kind's units.
    units: u64,
    sold: u64,
    returned: u64,
}

/// The tallies of every store's recent windows.
#[derive(Debug)]
pub struct StoreWindows {
    window_ms: i64,
    /// 0: no cap.
    cap: u64,
    seed: u64,
    tallies: DashMap<(u64, i64), Tally>,
}

/// What an admitted event did to its store's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// A RETURN beyond what the store sold in the window.
    pub return_beyond_sales: bool,
}

impl StoreWindows {
    /// Windows of `window_ms`; at most `cap` units per store and window (0: unlimited).
    pub fn new(window_ms: i64, cap: u64) -> Self {
        StoreWindows {
            window_ms: window_ms.max(1),
            cap,
            seed: rand::random(),
            tallies: DashMap::new(),
        }
    }

    fn key(&self, e: &SaleEvent) -> (u64, i64) {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(e.store_id.as_bytes(), self.seed);
        (h, e.occurred_at.div_euclid(self.window_ms))
    }

    /// Tallies `e`, or refuses it when it would take its store past the cap.
    pub fn admit(&self, e: &SaleEvent) -> Result<Admitted, Rejection> {
        let units = u64::try_from(e.quantity).unwrap_or(0);
        let mut t = self.tallies.entry(self.key(e)).or_default();
        if self.cap > 0 && t.units.saturating_add(units) > self.cap {
            return Err(Rejection::new(
                "quantity",
                "quantity.store_window_cap",
                format!(
                    "store {} would exceed {} units in its {} s window of occurred_at ({} so far)",
                    e.store_id,
                    self.cap,
                    self.window_ms / 1000,
                    t.units
                ),
            ));
        }
        t.units += units;
        let mut beyond = false;
        match e.kind {
            SaleKind::Sale => t.sold += units,
            SaleKind::Return => {
                t.returned += units;
                beyond = t.returned > t.sold;
            }
            SaleKind::Preorder => {}
        }
        Ok(Admitted { return_beyond_sales: beyond })
    }

    /// Gives back the units of an admitted event that was not stored.
    pub fn release(&self, e: &SaleEvent) {
        let units = u64::try_from(e.quantity).unwrap_or(0);
        if let Some(mut t) = self.tallies.get_mut(&self.key(e)) {
            t.units = t.units.saturating_sub(units);
            match e.kind {
                SaleKind::Sale => t.sold = t.sold.saturating_sub(units),
                SaleKind::Return => t.returned = t.returned.saturating_sub(units),
                SaleKind::Preorder => {}
            }
        }
    }

    /// Drops the windows that ended before `oldest_ms` (no event that old is accepted).
    pub fn prune(&self, oldest_ms: i64) {
        let first = oldest_ms.div_euclid(self.window_ms);
        self.tallies.retain(|(_, w), _| *w >= first);
    }

    /// Windows tallied.
    pub fn len(&self) -> usize {
        self.tallies.len()
    }

    /// Whether nothing is tallied.
    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(store: &str, kind: SaleKind, quantity: i32, at: i64) -> SaleEvent {
        SaleEvent {
            event_id: "e".into(),
            store_id: store.into(),
            device_id: "d".into(),
            grid_id: "g".into(),
            sku: "s".into(),
            kind,
            quantity,
            unit_price_minor: 1,
            currency: "CNY".into(),
            occurred_at: at,
            received_at: at,
        }
    }

    #[test]
    fn a_store_is_capped_per_window_and_others_are_not_affected() {
        let w = StoreWindows::new(3_600_000, 100);
        assert!(w.admit(&ev("a", SaleKind::Sale, 60, 10)).is_ok());
        let e = w.admit(&ev("a", SaleKind::Sale, 41, 20)).expect_err("over the cap");
        assert_eq!(
            (e.rule, e.field.as_deref(), e.status),
            ("quantity.store_window_cap", Some("quantity"), 422)
        );
        assert!(w.admit(&ev("a", SaleKind::Sale, 40, 30)).is_ok(), "exactly the cap");
        assert!(w.admit(&ev("b", SaleKind::Sale, 100, 30)).is_ok(), "another store");
        assert!(w.admit(&ev("a", SaleKind::Sale, 100, 3_600_000)).is_ok(), "the next window");
    }

    #[test]
    fn released_units_can_be_sent_again() {
        let w = StoreWindows::new(1_000, 10);
        let e = ev("a", SaleKind::Sale, 10, 5);
        assert!(w.admit(&e).is_ok());
        assert!(w.admit(&e).is_err());
        w.release(&e);
        assert!(w.admit(&e).is_ok(), "a retry after a failed publish is not counted twice");
    }

    #[test]
    fn returns_beyond_sales_are_flagged() {
        let w = StoreWindows::new(1_000, 0);
        assert!(w.admit(&ev("a", SaleKind::Sale, 3, 1)).is_ok_and(|a| !a.return_beyond_sales));
        assert!(w.admit(&ev("a", SaleKind::Return, 3, 2)).is_ok_and(|a| !a.return_beyond_sales));
        assert!(w.admit(&ev("a", SaleKind::Return, 1, 3)).is_ok_and(|a| a.return_beyond_sales));
        assert!(w.admit(&ev("b", SaleKind::Return, 1, 3)).is_ok_and(|a| a.return_beyond_sales));
    }

    #[test]
    fn old_windows_are_pruned() {
        let w = StoreWindows::new(1_000, 0);
        assert!(w.admit(&ev("a", SaleKind::Sale, 1, 500)).is_ok());
        assert!(w.admit(&ev("a", SaleKind::Sale, 1, 5_500)).is_ok());
        w.prune(2_000);
        assert_eq!(w.len(), 1);
    }
}

//! The counters of one grid × SKU × window, shared by the state and its changelog codec.

use nearfield_schemas::{SaleEvent, SaleKind};

use crate::window::Millis;

/// Counters of one grid × SKU × window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub units_sold: i64,
    pub units_returned: i64,
    pub preorder_units: i64,
    pub revenue_minor: i64,
    pub event_count: i64,
    pub last_event_at: Millis,
    /// Distinct stores (sorted short ids).
    pub stores: Vec<u64>,
}

impl Counters {
    pub(crate) fn add(&mut self, ev: &SaleEvent, store: u64, count_revenue: bool) {
        let q = i64::from(ev.quantity);
        let value = q.saturating_mul(ev.unit_price_minor);
        match ev.kind {
            SaleKind::Sale => {
                self.units_sold = self.units_sold.saturating_add(q);
                if count_revenue {
                    self.revenue_minor = self.revenue_minor.saturating_add(value);
                }
            }
            SaleKind::Return => {
                self.units_returned = self.units_returned.saturating_add(q);
                if count_revenue {
                    self.revenue_minor = self.revenue_minor.saturating_sub(value);
                }
            }
            SaleKind::Preorder => self.preorder_units = self.preorder_units.saturating_add(q),
        }
        self.event_count += 1;
        self.last_event_at = self.last_event_at.max(ev.occurred_at);
        insert_sorted(&mut self.stores, store);
    }

    /// units_sold + preorder_units − units_returned.
    pub fn net_units(&self) -> i64 {
        self.units_sold.saturating_add(self.preorder_units).saturating_sub(self.units_returned)
    }
}

pub(crate) fn insert_sorted(v: &mut Vec<u64>, x: u64) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(i) => {
            v.insert(i, x);
            true
        }
    }
}

//! The counters of one grid × SKU × window, shared by the state and its changelog codec.

use nearfield_schemas::{SaleEvent, SaleEventRef, SaleKind};

use crate::window::Millis;

/// What one sale adds to a window's counters: the one place the kinds are counted (the
/// state's windows and `replay --late`'s corrections both apply it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub sold: i64,
    pub returned: i64,
    pub preorder: i64,
    /// `quantity × unit_price_minor`, negative for a return, 0 for a pre-order or an
    /// event in another currency.
    pub revenue: i64,
}

impl Delta {
    /// The counters sale `ev` adds; revenue only when `count_revenue` (its currency is
    /// the deployment's). `None` when its revenue does not fit 64 bits (an error, never a
    /// clamp: see [`REVENUE_OVERFLOW`]).
    pub fn of(ev: &SaleEventRef<'_>, count_revenue: bool) -> Option<Self> {
        let q = i64::from(ev.quantity);
        let value = if count_revenue { q.checked_mul(ev.unit_price_minor)? } else { 0 };
        Some(match ev.kind {
            SaleKind::Sale => Delta { sold: q, revenue: value, ..Delta::default() },
            SaleKind::Return => {
                Delta { returned: q, revenue: value.checked_neg()?, ..Delta::default() }
            }
            SaleKind::Preorder => Delta { preorder: q, ..Delta::default() },
        })
    }
}

/// The reason an event whose revenue does not fit 64 bits, or would take a window's past
/// [`REVENUE_MAX`], is dead-lettered with instead of being counted.
pub const REVENUE_OVERFLOW: &str = "revenue.overflow";

/// Largest magnitude of a window's revenue: 2⁴⁷ − 1 minor units (48 bits with the sign,
/// ±1.4·10¹⁴: far above what one grid sells of one SKU in a window). Windows hold it in
/// 48 bits (`state/bucket.rs`); a sale that would take a window past it is refused, never
/// clamped.
pub const REVENUE_MAX: i64 = (1 << 47) - 1;

/// A window's revenue `r` with `d` added, if it stays within [`REVENUE_MAX`].
pub fn add_revenue(r: i64, d: i64) -> Option<i64> {
    r.checked_add(d).filter(|x| x.abs() <= REVENUE_MAX)
}

/// `v` as an `i32`, saturating (window counters are 32-bit).
pub(crate) fn sat32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

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
    /// Adds a sale; `false` (nothing added) when the revenue would not fit
    /// ([`REVENUE_OVERFLOW`]).
    pub(crate) fn add(&mut self, ev: &SaleEvent, store: u64, count_revenue: bool) -> bool {
        let Some(d) = Delta::of(&ev.into(), count_revenue) else { return false };
        let Some(revenue) = add_revenue(self.revenue_minor, d.revenue) else { return false };
        self.units_sold = self.units_sold.saturating_add(d.sold);
        self.units_returned = self.units_returned.saturating_add(d.returned);
        self.preorder_units = self.preorder_units.saturating_add(d.preorder);
        self.revenue_minor = revenue;
        self.event_count += 1;
        self.last_event_at = self.last_event_at.max(ev.occurred_at);
        insert_sorted(&mut self.stores, store);
        true
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

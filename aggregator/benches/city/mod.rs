//! The city the aggregator's update benches run on (`update.rs`, criterion; `steady.rs`,
//! one measured run for instruction counts): 500 grids, 3 000 stores, SKUs drawn with a
//! Zipf-like skew, 300 000 sales 6 ms apart, and the state's window configuration.

use std::sync::Arc;

use nearfield_aggregator::state::StateConfig;
use nearfield_aggregator::window::Windowing;
use nearfield_schemas::{SaleEvent, SaleKind};

/// Events measured.
pub const EVENTS: usize = 100_000;
/// Events applied before measuring, so the maps hold a realistic working set.
pub const WARM: usize = 200_000;

/// The events of a city of 500 grids × `skus` SKUs (3000 stores).
pub fn events(skus: f64) -> Vec<SaleEvent> {
    events_on(skus, 0)
}

/// The same city's events `day` days later (negative: earlier), with ids of their own.
pub fn events_on(skus: f64, day: i64) -> Vec<SaleEvent> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = 1_800_000_000_000i64 + day * 86_400_000;
    (0..WARM + EVENTS)
        .map(|i| {
            let r = next();
            // Zipf-like: squaring a uniform number skews towards small SKU numbers.
            let u = (r % 10_000) as f64 / 10_000.0;
            let sku = (u * u * skus) as u64;
            let store = (r >> 20) % 3000;
            SaleEvent {
                event_id: if day == 0 { format!("ev-{i}") } else { format!("ev-{day}-{i}") },
                store_id: format!("store-{store:05}"),
                device_id: "pos-1".into(),
                grid_id: format!("88309{:05x}fffff", store % 500),
                sku: format!("SKU-{sku:05}"),
                kind: if r % 20 == 0 { SaleKind::Return } else { SaleKind::Sale },
                quantity: 1 + (r >> 40) as i32 % 3,
                unit_price_minor: 990,
                currency: "CNY".into(),
                // 6 ms apart (30 minutes in all), slightly out of order.
                occurred_at: t0 + i as i64 * 6 - ((r >> 50) % 2000) as i64,
                received_at: t0 + i as i64 * 6,
            }
        })
        .collect()
}

/// Puts the `nearfield` binary's allocator settings in place before the bench allocates
/// (`nearfield_common::alloc`: mimalloc commits on demand, no transparent huge pages), so
/// the bench measures the memory the product runs on: the process is re-executed with
/// them when they are missing from its environment (`benches/instructions.sh` has
/// callgrind follow that re-execution).
pub fn production_allocator() {
    if let Err(e) = nearfield_common::alloc::settle() {
        eprintln!(
            "the allocator's settings could not be applied ({e}): measuring with mimalloc's defaults"
        );
    }
}

pub fn cfg() -> Arc<StateConfig> {
    Arc::new(StateConfig {
        windowing: Windowing {
            sizes: vec![300_000, 3_600_000, 86_400_000],
            out_of_orderness: 30_000,
            grace: vec![10_000; 3],
            allowed_lateness: vec![600_000, 7_200_000, 172_800_000],
            max_close_delay: 120_000,
        },
        currency: "CNY".into(),
        coverage: vec![false, true, true],
        close_chunk: 50_000,
    })
}

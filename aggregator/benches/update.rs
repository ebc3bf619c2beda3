//! The aggregator's in-memory update path, without Kafka: `PartitionState::apply_sale`
//! on a realistic key mix (500 grids × 400 SKUs with a Zipf-like skew, 3000 stores, three
//! window sizes), the same on 4 SKUs (keys and windows that stay in cache), each one event
//! at a time and as `apply_sales` over runs of 500 (what the stage calls with a polled
//! partition's records: it prefetches ahead), and `flush` of the changes. Throughput is
//! reported in window updates (events × window sizes).
//!
//! It also answers "dashmap or better": the same counter update on a `DashMap` (what a
//! shared, multi-writer map would need) against the single-writer `HashMap` per partition
//! the aggregator uses (each partition is owned by one thread, so it needs no lock).
//!
//! And the restore of a steady-state partition's changelog (three days of event ids).
//!
//! And a lower bound (`lean/mod.rs`): the same events through the leanest structures that
//! do the same per-event work without the state's rules and memory bounds, checked to
//! count the same events into the same keys and windows.

mod city;
mod lean;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use city::{EVENTS, WARM, cfg, events, events_on};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group};
use dashmap::DashMap;
use nearfield_aggregator::ids::{IdHasher, key_id};
use nearfield_aggregator::state::{Expected, Outcome, PartitionState};
use nearfield_schemas::{SaleEvent, SaleEventRef, SaleKind};

/// The allocator the `nearfield` binary uses (with its settings: `main`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Default)]
struct Cell {
    sold: i64,
    returned: i64,
    revenue: i64,
    events: i64,
}

fn update(c: &mut Cell, e: &SaleEvent) {
    let q = i64::from(e.quantity);
    match e.kind {
        SaleKind::Return => c.returned += q,
        _ => c.sold += q,
    }
    c.revenue += q * e.unit_price_minor;
    c.events += 1;
}

/// A new state that applied each event at its wall-clock time.
fn state_after<'a>(evs: impl IntoIterator<Item = (&'a SaleEvent, i64)>) -> PartitionState {
    let mut st = PartitionState::new(cfg());
    for (e, now) in evs {
        st.apply_sale(e, now);
    }
    st
}

/// A changelog and the event ids it holds.
struct Changelog {
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ids: usize,
}

/// The changelog of a partition that counted the city's sales of three days (the days
/// before today still accept late sales), flushed as the stage does every 50 000 events;
/// checked to restore every id.
fn three_days_of_ids() -> Changelog {
    let days: Vec<SaleEvent> = [-2, -1, 0].into_iter().flat_map(|d| events_on(400.0, d)).collect();
    let mut st = PartitionState::new(cfg());
    let mut records = Vec::new();
    for run in days.chunks(50_000) {
        for e in run {
            st.apply_sale(e, e.received_at);
        }
        let now = run.last().map_or(0, |e| e.received_at);
        records.extend(st.flush(now, &Expected(|_: &str| 10)).changelog);
    }
    let ids = st.size().dedupe_ids;
    let mut back = PartitionState::new(cfg());
    for (k, v) in &records {
        assert!(back.restore(k, v.as_deref()).is_ok(), "restores");
    }
    back.restored();
    assert_eq!(back.size().dedupe_ids, ids, "every id restored");
    Changelog { records, ids }
}

/// `apply_sale` on `evs` one by one, and `apply_sales` on them in runs of 500 (as the
/// stage hands it a polled partition's records), each from a state made by `setup`;
/// first checked to give every event the same outcome, so both do the same work.
fn apply_pair(
    g: &mut BenchmarkGroup<'_, WallTime>,
    suffix: &str,
    setup: &dyn Fn() -> PartitionState,
    evs: &[SaleEvent],
    now: i64,
) {
    g.bench_function(format!("apply_sale (3 windows per event){suffix}"), |b| {
        b.iter_batched(
            setup,
            |mut st| {
                for e in evs {
                    std::hint::black_box(st.apply_sale(e, now));
                }
                st
            },
            BatchSize::LargeInput,
        );
    });
    let refs: Vec<SaleEventRef<'_>> = evs.iter().map(SaleEventRef::from).collect();
    let (mut one, mut runs) = (setup(), setup());
    let each: Vec<Outcome> = evs.iter().map(|e| one.apply_sale(e, now)).collect();
    let mut together = Vec::with_capacity(evs.len());
    for run in refs.chunks(500) {
        runs.apply_sales(run, now, &mut together);
    }
    assert!(each == together, "apply_sale and apply_sales disagree{suffix}");
    g.bench_function(format!("apply_sales (3 windows per event), runs of 500{suffix}"), |b| {
        b.iter_batched(
            setup,
            |mut st| {
                let mut out = Vec::with_capacity(500);
                for run in refs.chunks(500) {
                    out.clear();
                    st.apply_sales(run, now, &mut out);
                    std::hint::black_box(&out);
                }
                st
            },
            BatchSize::LargeInput,
        );
    });
}

/// The lean lower bound (`lean/mod.rs`) on `warm` then `evs` in runs of 500; first checked
/// to count the same events into as many keys and windows as the state does, with the same
/// sums (distinct stores aside: the bound keeps four exactly).
fn lean_bound(
    g: &mut BenchmarkGroup<'_, WallTime>,
    suffix: &str,
    warm: &[SaleEvent],
    evs: &[SaleEvent],
    now: i64,
) {
    let warm: Vec<SaleEventRef<'_>> = warm.iter().map(SaleEventRef::from).collect();
    let evs: Vec<SaleEventRef<'_>> = evs.iter().map(SaleEventRef::from).collect();
    let n = warm.len() + evs.len();
    let warmed = || {
        let mut lean = lean::Lean::new(n, n);
        for run in warm.chunks(500) {
            lean.apply_sales(run);
        }
        lean
    };
    let (mut st, mut out, mut lean) = (PartitionState::new(cfg()), Vec::new(), warmed());
    for run in warm.chunks(500).chain(evs.chunks(500)) {
        st.apply_sales(run, now, &mut out);
    }
    for run in evs.chunks(500) {
        lean.apply_sales(run);
    }
    assert!(
        lean.agrees_with(&st),
        "the lean bound counts other events, keys, windows or sums than the state{suffix}"
    );
    g.bench_function(format!("lower bound: lean kernel, runs of 500{suffix}"), |b| {
        b.iter_batched(
            warmed,
            |mut lean| {
                for run in evs.chunks(500) {
                    lean.apply_sales(run);
                }
                lean
            },
            BatchSize::LargeInput,
        );
    });
}

fn bench(c: &mut Criterion) {
    let all = events(400.0);
    let now = all.last().map_or(0, |e| e.received_at);
    let (warm, evs) = all.split_at(WARM);
    let warmed = || state_after(warm.iter().map(|e| (e, now)));
    let mut g = c.benchmark_group("aggregator_update");
    g.throughput(Throughput::Elements((EVENTS * 3) as u64));
    apply_pair(&mut g, "", &warmed, evs, now);
    // The state a partition holds all day: the two days before still accept late sales
    // into their day windows (48 h of lateness), so their event-id sets are live too and
    // every event is looked up in three sets (its own and two others).
    let days: Vec<SaleEvent> = [-2, -1].into_iter().flat_map(|d| events_on(400.0, d)).collect();
    let three_days = || {
        state_after(days.iter().map(|e| (e, e.received_at)).chain(warm.iter().map(|e| (e, now))))
    };
    apply_pair(&mut g, ", 3 live event-id sets", &three_days, evs, now);
    // The same on 4 SKUs (≤ 2 000 keys): the keys and windows stay in cache, so this is
    // the path's cost without most of its memory latency (the event ids still do not).
    let small = events(4.0);
    let (small_warm, small_evs) = small.split_at(WARM);
    let small_warmed = || state_after(small_warm.iter().map(|e| (e, now)));
    apply_pair(&mut g, ", 2 000 keys in cache", &small_warmed, small_evs, now);
    lean_bound(&mut g, "", warm, evs, now);
    lean_bound(&mut g, ", 2 000 keys in cache", small_warm, small_evs, now);
    let sizes = [300_000i64, 3_600_000, 86_400_000];
    g.bench_function("counter update: HashMap, single writer", |b| {
        b.iter_batched(
            || {
                let mut m = HashMap::<(u128, i64), Cell, BuildHasherDefault<IdHasher>>::default();
                for e in warm {
                    let k = key_id(&e.grid_id, &e.sku);
                    for s in sizes {
                        update(
                            m.entry((k, e.occurred_at - e.occurred_at.rem_euclid(s))).or_default(),
                            e,
                        );
                    }
                }
                m
            },
            |mut m| {
                for e in evs {
                    let k = key_id(&e.grid_id, &e.sku);
                    for s in sizes {
                        update(
                            m.entry((k, e.occurred_at - e.occurred_at.rem_euclid(s))).or_default(),
                            e,
                        );
                    }
                }
                m
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("counter update: DashMap", |b| {
        b.iter_batched(
            || {
                let m = DashMap::<(u128, i64), Cell, BuildHasherDefault<IdHasher>>::default();
                for e in warm {
                    let k = key_id(&e.grid_id, &e.sku);
                    for s in sizes {
                        update(
                            &mut m
                                .entry((k, e.occurred_at - e.occurred_at.rem_euclid(s)))
                                .or_default(),
                            e,
                        );
                    }
                }
                m
            },
            |m| {
                for e in evs {
                    let k = key_id(&e.grid_id, &e.sku);
                    for s in sizes {
                        update(
                            &mut m
                                .entry((k, e.occurred_at - e.occurred_at.rem_euclid(s)))
                                .or_default(),
                            e,
                        );
                    }
                }
                m
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
    let mut g = c.benchmark_group("aggregator_restore");
    // A partition's changelog in the steady state: three days of sales still accepted by
    // their day windows, 300 000 event ids a day, restored into an empty state.
    let log = three_days_of_ids();
    g.throughput(Throughput::Elements(log.ids as u64));
    g.bench_function("restore three days of event ids", |b| {
        b.iter_batched(
            || PartitionState::new(cfg()),
            |mut st| {
                for (k, v) in &log.records {
                    if let Err(e) = st.restore(k, v.as_deref()) {
                        panic!("the bench's own changelog does not restore: {e}");
                    }
                }
                st.restored();
                st
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
    let mut g = c.benchmark_group("aggregator_flush");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("flush after 100k events (changelog + closed windows)", |b| {
        b.iter_batched(
            || {
                let mut st = warmed();
                for e in evs {
                    st.apply_sale(e, now);
                }
                st
            },
            |mut st| {
                // Far enough ahead that every 5-minute window closes.
                let f = st.flush(now + 600_000, &Expected(|_: &str| 10));
                (st, f)
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}

/// `criterion_main!`, with the binary's allocator settings in place first.
fn main() {
    city::production_allocator();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! The emitter's hot path on one core: applying DemandWindows (with every bucket's
//! decisions: privacy merge, forecasts, rules) and fitting one forecast.
//!
//! `cargo bench -p nearfield-emitter --bench decide`

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nearfield_emitter::EmitConfig;
use nearfield_emitter::forecast::Model;
use nearfield_emitter::state::{PartitionState, StateConfig};
use nearfield_emitter::synthetic::{self, Scenario};

fn apply(c: &mut Criterion) {
    let cfg = EmitConfig { privacy_k: 3, idle_advance_ms: 0, ..EmitConfig::default() };
    let state_cfg = Arc::new(StateConfig::from_config(&cfg).expect("valid"));
    let mut g = c.benchmark_group("emitter");
    g.sample_size(10);
    // The last: a popular SKU over 5 000 grids (one warehouse plan of many regions).
    for (skus, grids, hours) in [(20usize, 12usize, 72i64), (100, 7, 72), (2, 5_000, 8)] {
        let s = Scenario { skus, grids, hours, seed: 3, surge_hour: Some(60) };
        let windows = synthetic::stream(&s);
        let catalog = synthetic::catalog(&s);
        g.throughput(Throughput::Elements(windows.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("apply_and_decide", format!("{skus}skus_{grids}grids_{hours}h")),
            &windows,
            |b, w| {
                b.iter(|| {
                    // As the loop does: apply every window, flush (changelog records and
                    // signals) once per commit interval, here every 1000 windows.
                    let mut st = PartitionState::new(Arc::clone(&state_cfg));
                    let mut signals = 0;
                    for (i, x) in w.iter().enumerate() {
                        st.apply(x, &catalog, 0);
                        if i % 1000 == 999 {
                            signals += st.flush(0, &catalog).signals.len();
                        }
                    }
                    signals + st.flush(0, &catalog).signals.len()
                })
            },
        );
    }
    let series: Vec<f64> = (0..336)
        .map(|t| 20.0 + 10.0 * ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin())
        .collect();
    let params = cfg.forecast();
    g.throughput(Throughput::Elements(1));
    g.bench_function("fit_best_336_buckets", |b| b.iter(|| Model::fit_best(&series, &params)));
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);

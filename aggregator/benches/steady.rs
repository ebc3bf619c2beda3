//! One measured run of `PartitionState::apply_sales` for counting instructions, where
//! criterion (`update.rs`) times it: the same city (`city/mod.rs`), `WARM` events applied
//! to a fresh state, then `EVENTS` applied in runs of 500 inside [`measure`], the only
//! function `benches/instructions.sh` has callgrind count. Instruction counts do not
//! depend on how fast the host runs at the moment; times do (±15 % here).
//!
//! Arguments (numbers; anything else, such as the `--bench` cargo passes, is ignored):
//! SKUS (default 400: the 200 000-key mix; 4: 2 000 keys, whose keys and windows stay in
//! cache) and REPS (default 1: fresh states measured; prints the median ns an event, for
//! builds alternated by hand). It prints the state's keys and sums over every window, so
//! two builds can be checked for the same output.
//!
//! With the word `flush` it then also measures the flush that follows, inside
//! [`measure_flush`]: the changelog of every window the warm-up and the measured events
//! made, with the closing of the windows the watermark passed (at most `close_chunk`
//! outputs), and prints the records, their bytes and a digest of them, equal between
//! builds that wrote the same changelog. The event-id chunks and the partition's meta
//! record are counted, not digested: they carry ids hashed with the partition's random
//! seed, and the seed.
//!
//! With the word `lean` it measures the lean lower bound of `update.rs` (`lean/mod.rs`)
//! instead, inside [`measure_lean`], on the same events after the same warm-up, and checks
//! that it counted the same events, keys, windows and sums as the state: the instructions
//! an event any layout doing this work needs on this path, against the state's.

mod city;
mod lean;

use city::{WARM, cfg, events};
use nearfield_aggregator::state::{Expected, Flushed, Outcome, PartitionState};
use nearfield_schemas::SaleEventRef;

/// The allocator the `nearfield` binary uses (with its settings: `main`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Applies `evs` in runs of 500 as the stage does; how many events were counted.
#[inline(never)]
fn measure(st: &mut PartitionState, evs: &[SaleEventRef<'_>], now: i64) -> usize {
    let mut out = Vec::with_capacity(500);
    let mut counted = 0;
    for run in evs.chunks(500) {
        out.clear();
        st.apply_sales(run, now, &mut out);
        counted += out.iter().filter(|o| matches!(o, Outcome::Counted { .. })).count();
    }
    counted
}

/// The flush after the measured events: the changelog of every window and event id
/// since the state was made, and the closing of the windows the watermark passed.
#[inline(never)]
fn measure_flush(st: &mut PartitionState, now: i64) -> Flushed {
    st.flush(now, &Expected(|_: &str| 10))
}

/// Records, bytes and an FNV-1a digest of a flush's changelog (keys and values; of the
/// event-id chunks and the meta record, keyed `D` and `M`, only the keys and lengths).
fn digest(f: &Flushed) -> (usize, usize, u64) {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut bytes = 0;
    for (k, v) in &f.changelog {
        let len = v.as_ref().map_or(0, Vec::len);
        let value =
            v.as_deref().filter(|_| !matches!(k.first(), Some(b'D' | b'M'))).unwrap_or_default();
        for b in k.iter().chain(value).chain(&len.to_le_bytes()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        bytes += k.len() + len;
    }
    (f.changelog.len(), bytes, h)
}

/// Applies `evs` to the lean bound in runs of 500, as [`measure`] does to the state.
#[inline(never)]
fn measure_lean(l: &mut lean::Lean, evs: &[SaleEventRef<'_>]) {
    for run in evs.chunks(500) {
        l.apply_sales(run);
    }
}

/// The lean bound after `warm`, measured on `measured` `reps` times (fresh each time),
/// checked against the state's keys, windows and sums: the median ns an event.
fn lean_bound(warm: &[SaleEventRef<'_>], measured: &[SaleEventRef<'_>], now: i64, reps: usize) {
    let mut st = PartitionState::new(cfg());
    let mut out = Vec::new();
    for run in warm.chunks(500).chain(measured.chunks(500)) {
        st.apply_sales(run, now, &mut out);
    }
    let size = st.size();
    let n = warm.len() + measured.len();
    let mut ns = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut l = lean::Lean::new(n, n);
        for run in warm.chunks(500) {
            l.apply_sales(run);
        }
        let t0 = std::time::Instant::now();
        measure_lean(&mut l, measured);
        ns.push(t0.elapsed().as_nanos() as f64 / measured.len() as f64);
        assert!(
            l.agrees_with(&st),
            "the lean bound counted other events, keys, windows or sums than the state"
        );
    }
    ns.sort_by(f64::total_cmp);
    eprintln!(
        "steady: {} events measured (lean bound), {} keys, {} windows, the state's sums; median {:.1} ns an event over {reps} runs: {ns:.1?}",
        measured.len(),
        size.keys,
        size.windows,
        ns[ns.len() / 2]
    );
}

fn main() {
    city::production_allocator();
    let lean = std::env::args().skip(1).any(|a| a == "lean");
    let flush = std::env::args().skip(1).any(|a| a == "flush");
    let mut numbers = std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok());
    let skus = numbers.next().unwrap_or(400);
    let reps = numbers.next().unwrap_or(1).max(1);
    let all = events(skus as f64);
    let now = all.last().map_or(0, |e| e.received_at);
    let refs: Vec<SaleEventRef<'_>> = all.iter().map(SaleEventRef::from).collect();
    let (warm, measured) = refs.split_at(WARM);
    if lean {
        return lean_bound(warm, measured, now, reps);
    }
    let mut ns = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps {
        let mut st = PartitionState::new(cfg());
        let mut out = Vec::new();
        for run in warm.chunks(500) {
            out.clear();
            st.apply_sales(run, now, &mut out);
        }
        let t0 = std::time::Instant::now();
        let counted = measure(&mut st, measured, now);
        ns.push(t0.elapsed().as_nanos() as f64 / measured.len() as f64);
        // Every measured event counted: the run did the whole work, not an early exit.
        assert_eq!(counted, measured.len(), "events counted");
        let mut flushed = None;
        if flush {
            let size = st.size();
            let t0 = std::time::Instant::now();
            let f = measure_flush(&mut st, now);
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let (records, bytes, h) = digest(&f);
            eprintln!(
                "steady: flush of {} windows and {} event ids: {records} changelog records, {bytes} bytes, digest {h:016x}; {} outputs; {ms:.1} ms",
                size.windows,
                size.dedupe_ids,
                f.outputs.len()
            );
            flushed = Some((records, bytes, h));
        }
        // Every fresh state ends the same, and writes the same changelog: the repetitions
        // measured the same work, and the digest is one builds can be compared by.
        let state = (st.size().keys, st.totals(), flushed);
        assert!(last.is_none_or(|l| l == state), "repetitions differ");
        last = Some(state);
    }
    ns.sort_by(f64::total_cmp);
    // The keys and sums, so builds alternated by hand can be checked for the same output.
    let (keys, totals, _) = last.unwrap_or_default();
    eprintln!(
        "steady: {} events measured, {keys} keys, {totals:?}; median {:.1} ns an event over {reps} states: {ns:.1?}",
        measured.len(),
        ns[ns.len() / 2]
    );
}

//! `make bench`'s end-to-end latency report (`benches/latency.sh` runs the pipeline with
//! simulated shops first). Reads, under read_committed, what the pipeline wrote:
//! `sales.v1`, `demand.v1` and every `plan.*.v1`, and prints one JSON line:
//!
//! - `close_*_ms`: per final window of size `WINDOW_MS`, `emitted_at` − its nominal close
//!   (`window_end` + `grace` + out-of-orderness: the moment the watermark can first pass
//!   end + grace with events flowing in real time). The target: p99 ≤ 1 000 ms. Windows
//!   whose nominal close is after the last event's arrival (the run's end) close by the wall clock
//!   (`max_close_delay`) and are only counted (`windows_closed_after_the_run`), as are
//!   their events.
//! - `event_to_window_*_ms`: per sale event, the first emission of its window − `occurred_at`
//!   (so it includes waiting for the window to end and close).
//! - `bucket_to_signal_*_ms`: per plan signal, `generated_at` − `based_on_watermark` (the end
//!   of the bucket the decision completed; includes the emitter's `settle`);
//!   `bucket_to_decision_*_ms` the same over decisions only (a REVISION's basis is the
//!   revised plan's, so its figure is how late the late data came, not the emitter's
//!   delay), and `revisions` how many signals were revisions.
//!
//! Usage: `latency_report BROKERS WINDOW_MS GRACE_MS OUT_OF_ORDERNESS_MS`

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its result is its output

use std::collections::HashMap;
use std::time::Duration;

use nearfield_schemas::{Codec, DemandWindow, PlanSignal, SaleEvent};
use nearfield_testkit::{Isolation, read_topic};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn die(msg: &str) -> ! {
    eprintln!("latency_report: {msg}");
    std::process::exit(1)
}

/// Every record value of `topic`, from the beginning to its end at the time of the call
/// (read_committed).
fn read(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    read_topic(brokers, topic, Isolation::ReadCommitted, Duration::from_secs(300))
        .into_iter()
        .filter_map(|r| r.value)
        .collect()
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return -1;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, window, grace, ooo] = args.as_slice() else {
        die("usage: latency_report BROKERS WINDOW_MS GRACE_MS OUT_OF_ORDERNESS_MS")
    };
    let num = |s: &str| s.parse::<i64>().unwrap_or_else(|_| die("times are integers (ms)"));
    let (window, grace, ooo) = (num(window), num(grace), num(ooo));
    let codec = Codec::single_object();

    let sales: Vec<SaleEvent> =
        read(brokers, "sales.v1").iter().filter_map(|b| codec.decode(b).ok()).collect();
    // Windows whose nominal close came while events still flowed close by the watermark;
    // the last ones (after the simulator stopped) close by the wall clock
    // (max_close_delay) and are counted apart.
    // The run's end by the ingest clock (`received_at`): device clocks may run ahead.
    let last_event = sales.iter().map(|e| e.received_at).max().unwrap_or(0);
    // First emission of each window of the measured size.
    let mut first: HashMap<(String, String, i64), i64> = HashMap::new();
    let (mut close, mut tail) = (Vec::new(), 0u64);
    for bytes in read(brokers, "demand.v1") {
        let Ok(w) = codec.decode::<DemandWindow>(&bytes) else { continue };
        if w.window_end - w.window_start != window || w.revision != 0 {
            continue;
        }
        let key = (w.grid_id.clone(), w.sku.clone(), w.window_start);
        if first.insert(key, w.emitted_at).is_none() {
            let nominal = w.window_end + grace + ooo;
            if nominal + 1_000 <= last_event {
                close.push(w.emitted_at - nominal);
            } else {
                tail += 1;
            }
        }
    }
    let mut event_to_window = Vec::new();
    let mut unmatched = 0u64;
    for e in sales {
        let start = e.occurred_at.div_euclid(window) * window;
        if start + window + grace + ooo + 1_000 > last_event {
            continue; // its window closed by the wall clock after the run
        }
        match first.get(&(e.grid_id, e.sku, start)) {
            Some(at) => event_to_window.push(at - e.occurred_at),
            None => unmatched += 1,
        }
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers.as_str())
        .create()
        .unwrap_or_else(|e| die(&format!("client: {e}")));
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap_or_else(|e| die(&format!("metadata: {e}")));
    let (mut to_signal, mut to_decision, mut revisions) = (Vec::new(), Vec::new(), 0usize);
    for t in md.topics().iter().map(|t| t.name()).filter(|n| n.starts_with("plan.")) {
        for bytes in read(brokers, t) {
            if let Ok(s) = codec.decode::<PlanSignal>(&bytes) {
                to_signal.push(s.generated_at - s.based_on_watermark);
                if s.reason == nearfield_schemas::PlanReason::Revision {
                    revisions += 1;
                } else {
                    to_decision.push(s.generated_at - s.based_on_watermark);
                }
            }
        }
    }
    let (nw, ne, ns) = (close.len(), event_to_window.len(), to_signal.len());
    println!(
        "{{\"phase\":\"latency\",\"window_ms\":{window},\"windows\":{nw},\"windows_closed_after_the_run\":{tail},\"close_p50_ms\":{},\"close_p99_ms\":{},\"close_max_ms\":{},\"events\":{ne},\"events_without_window\":{unmatched},\"event_to_window_p50_ms\":{},\"event_to_window_p99_ms\":{},\"signals\":{ns},\"bucket_to_signal_p50_ms\":{},\"bucket_to_signal_p99_ms\":{},\"revisions\":{revisions},\"bucket_to_decision_p50_ms\":{},\"bucket_to_decision_p99_ms\":{}}}",
        pct(&mut close, 0.5),
        pct(&mut close, 0.99),
        pct(&mut close, 1.0),
        pct(&mut event_to_window, 0.5),
        pct(&mut event_to_window, 0.99),
        pct(&mut to_signal, 0.5),
        pct(&mut to_signal, 0.99),
        pct(&mut to_decision, 0.5),
        pct(&mut to_decision, 0.99),
    );
}

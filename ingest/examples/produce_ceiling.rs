//! The ceiling for ingest: a bare librdkafka producer writing the same records ingest
//! writes (Avro single-object `SaleEvent`s keyed by grid_id) with the same durability
//! settings (acks=all, idempotence, lz4, linger 5 ms), counting delivery reports.
//!
//! `cargo run --release -p nearfield-ingest --example produce_ceiling -- BROKERS TOPIC N`
//! prints one JSON line: events, seconds, events_per_s, cpu_s, events_per_cpu_s.

#![allow(clippy::print_stdout)] // a command-line tool: its result is its output

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nearfield_schemas::{Codec, SaleEvent, SaleKind};
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

struct Count(AtomicU64, AtomicU64);
impl ClientContext for &'static Count {}
impl ProducerContext for &'static Count {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_ok() { &self.0 } else { &self.1 }.fetch_add(1, Ordering::Relaxed);
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (clock ticks of 1/100 s).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic, n) = match args.as_slice() {
        [_, b, t, n] => (b.clone(), t.clone(), n.parse::<u64>().unwrap_or(1_000_000)),
        _ => {
            eprintln!("usage: produce_ceiling BROKERS TOPIC N");
            std::process::exit(2);
        }
    };
    let count: &'static Count = Box::leak(Box::new(Count(AtomicU64::new(0), AtomicU64::new(0))));
    let producer: ThreadedProducer<&'static Count> =
        match nearfield_testkit::bench::fill_producer(&brokers).create_with_context(count) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("producer: {e}");
                std::process::exit(1);
            }
        };
    let codec = Codec::single_object();
    let grids: Vec<String> = (0..400).map(|g| format!("8831aa{g:09x}")).collect();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut buf = Vec::with_capacity(128);
    for i in 0..n {
        let e = SaleEvent {
            event_id: format!("pos-1-store-{:06}-{i}", i % 3000),
            store_id: format!("store-{:06}", i % 3000),
            device_id: "pos-1".into(),
            grid_id: grids[(i % 400) as usize].clone(),
            sku: format!("SKU-{:05}", i % 400),
            kind: SaleKind::Sale,
            quantity: 1,
            unit_price_minor: 650,
            currency: "CNY".into(),
            occurred_at: 1_764_000_000_000 + i as i64,
            received_at: 1_764_000_000_000 + i as i64,
        };
        buf.clear();
        if codec.encode_into(&e, &mut buf).is_err() {
            continue;
        }
        let mut rec = BaseRecord::to(&topic).key(e.grid_id.as_str()).payload(buf.as_slice());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let ok = count.0.load(Ordering::Relaxed);
    println!(
        "{{\"events\":{ok},\"failed\":{},\"seconds\":{secs:.2},\"events_per_s\":{:.0},\"cpu_s\":{cpu:.2},\"events_per_cpu_s\":{:.0}}}",
        count.1.load(Ordering::Relaxed),
        ok as f64 / secs,
        ok as f64 / cpu.max(0.01)
    );
}

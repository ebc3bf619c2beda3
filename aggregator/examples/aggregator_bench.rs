//! The aggregator benchmark's phases, each run as its own process so CPU time and peak
//! memory belong to one phase (`benches/aggregator.sh` runs them in order):
//!
//! - `fill BROKERS TOPIC N KEYS PREFIX`: creates the topics, then writes N `SaleEvent`s over KEYS distinct grid × SKU keys
//!   (each key exactly N / KEYS times; times spread over four minutes of one 5-minute window that ended less than ten
//!   minutes ago, so every key has exactly one window of each size and none closes while
//!   the aggregator reads; 5 % returns) with ingest's settings.
//! - `consume BROKERS TOPIC N`: the ceiling: a bare librdkafka consumer reading the N
//!   records and decoding each `SaleEvent` (no state, no transactions).
//! - `aggregate BROKERS TOPIC N PREFIX`: the aggregator (library, exactly-once, the
//!   production defaults) consuming the same records into fresh state; reports when every
//!   record is processed and committed.
//!   With `BENCH_KILL=1` it prints its result and kills itself with SIGKILL (no
//!   shutdown, no flush). With `BENCH_QPS=Q` (and `BENCH_KEYS`, the keys of the fill) it
//!   also asks the live query `/v1/demand` Q times a second, open loop (latency counted
//!   from when each query was due, so a stall is not hidden), 90 % one grid × SKU and
//!   10 % one grid's first 100 SKUs; latencies are recorded once every key exists (the
//!   state holds KEYS keys) and reported as `query`: p50/p99/max ms, count, errors.
//! - `restore BROKERS TOPIC N PREFIX`: a new instance of the same group restoring the
//!   state the `aggregate` phase committed; reports restore time (`seconds`: from the
//!   assignment until every partition is active; `until_ready_s` adds the group join)
//!   and memory, and the same sums over every window (`totals`) as `aggregate`, to compare.
//!   `BENCH_LOG` sets the log filter (default `warn`); `BENCH_RESTORE_THREADS` the
//!   restore workers.
//!
//! `consume`, `aggregate` and `restore` take librdkafka properties over the production
//! defaults from `NEARFIELD_KAFKA_PROPERTY_<NAME>` variables, as the `nearfield` binary
//! does, to try a tuning without a build (the ceiling tuned as the aggregator is);
//! `aggregate` reports them as `kafka_properties` (`{}`: the production defaults).
//!
//! Each prints one JSON line: seconds, cpu_s, events_per_cpu_s, peak_rss_mb, and phase
//! details.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its result is its output

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nearfield_aggregator::AggregateConfig;
use nearfield_aggregator::query::{Answer, Query};
use nearfield_aggregator::state::StateSize;
use nearfield_common::kafka::{KafkaSettings, Topics};
use nearfield_common::shutdown::CancellationToken;
use nearfield_eos::internal_events::{RESTORE_SECONDS, RESTORED_RECORDS_TOTAL, metric_name};
use nearfield_schemas::{Codec, SaleEvent, SaleKind};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

/// The allocator the `nearfield` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use nearfield_testkit::bench::{proc_stat, rss_mb, threads_cpu_json};

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1)
}

struct Count(AtomicU64);
impl ClientContext for &'static Count {}
impl ProducerContext for &'static Count {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The window sizes of the production defaults (5 min, 1 h, 1 day), for the ground truth.
const SIZES: [i64; 3] = [300_000, 3_600_000, 86_400_000];
/// The production defaults' out-of-orderness + grace: a window closes when the largest
/// event time of its partition reaches its end + this.
const CLOSE_AFTER: i64 = 40_000;

/// The sale event number `i` of `n` over `keys` keys at `occurred_at`.
fn sale(i: u64, keys: u64, occurred_at: i64, preorders: bool) -> SaleEvent {
    // Every key gets exactly N / KEYS events (i ↦ i·m mod KEYS is a bijection for m prime
    // to KEYS), in an order that jumps across keys, grids and partitions.
    let k = i.wrapping_mul(2_654_435_761) % keys;
    let (grid, sku) = (k / 400, k % 400);
    let kind = match i {
        _ if i.is_multiple_of(20) => SaleKind::Return,
        _ if preorders && i % 50 == 7 => SaleKind::Preorder,
        _ => SaleKind::Sale,
    };
    SaleEvent {
        event_id: format!("pos-1-{i}"),
        store_id: format!("store-{:06}", (grid * 7 + i % 7) % 1_000_000),
        device_id: "pos-1".into(),
        grid_id: format!("8831aa{grid:09x}"),
        sku: format!("SKU-{sku:05}"),
        kind,
        quantity: 1 + (i % 3) as i32,
        unit_price_minor: 650,
        currency: "CNY".into(),
        occurred_at,
        received_at: occurred_at + 20,
    }
}

/// Writes the fill's records; dies unless every one was acknowledged.
struct Writer {
    producer: ThreadedProducer<&'static Count>,
    failed: &'static Count,
    codec: Codec,
    buf: Vec<u8>,
}

impl Writer {
    fn new(brokers: &str) -> Self {
        let failed: &'static Count = Box::leak(Box::new(Count(AtomicU64::new(0))));
        let producer = nearfield_testkit::bench::fill_producer(brokers)
            .create_with_context(failed)
            .unwrap_or_else(|e| die(&format!("producer: {e}")));
        Writer { producer, failed, codec: Codec::single_object(), buf: Vec::with_capacity(160) }
    }

    fn send(&mut self, topic: &str, e: &SaleEvent, partition: Option<i32>) {
        self.buf.clear();
        if let Err(e) = self.codec.encode_into(e, &mut self.buf) {
            die(&format!("encode: {e}"));
        }
        let mut rec = BaseRecord::to(topic).key(e.grid_id.as_str()).payload(self.buf.as_slice());
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        while let Err((_, back)) = self.producer.send(rec) {
            rec = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn finish(self) {
        let _ = self.producer.flush(Duration::from_secs(120));
        if self.failed.0.load(Ordering::Relaxed) > 0 || self.producer.in_flight_count() > 0 {
            die("fill: not every event was written");
        }
    }
}

/// The memory curve's fill: times spread over four minutes of one 5-minute window that
/// ended less than ten minutes ago (every key one window of each size, none closes).
fn fill(brokers: &str, topic: &str, n: u64, keys: u64) {
    let mut w = Writer::new(brokers);
    let now = nearfield_common::time::now_ms();
    let span = 240_000u64;
    // The start of the 5-minute window before the current one.
    let base = (now - 300_000).div_euclid(300_000) * 300_000 + span as i64;
    for i in 0..n {
        let at = base - span as i64 + (i * span / n) as i64;
        w.send(topic, &sale(i, keys, at, false), None);
    }
    w.finish();
    println!("{{\"phase\":\"fill\",\"events\":{n},\"keys\":{keys}}}");
}

/// The comparison's fill (`SPAN_HOURS` given): N records in all. N − P sale events over
/// `span_h` hours of event time (returns and pre-orders among them), in time order, then
/// one record per partition (P of them) a day and a minute later, which moves every
/// partition's watermark past every window of the span, so each of them closes in any
/// system with the same window rules. Prints the ground truth: the span's windows
/// (`windows_out`) and their digest (`output_digest`), for the systems to be checked against.
fn fill_span(brokers: &str, topic: &str, n: u64, keys: u64, span_h: u64, partitions: i32) {
    let tails = u64::try_from(partitions).unwrap_or(1);
    let events = n
        .checked_sub(tails)
        .filter(|e| *e >= keys)
        .unwrap_or_else(|| die("N must exceed KEYS + partitions"));
    let mut w = Writer::new(brokers);
    let tail_at = nearfield_common::time::now_ms() - 60_000;
    let span = (span_h * 3_600_000) as i64;
    let end = tail_at - SIZES[2] - CLOSE_AFTER - 20_000;
    let start = end - span;
    // Ground truth per (key, size, window start): net units, events.
    let mut truth: std::collections::HashMap<(u64, usize, i64), (i64, i64)> = Default::default();
    for i in 0..events {
        let at = start + (u128::from(i) * span as u128 / u128::from(events)) as i64;
        let e = sale(i, keys, at, true);
        let q = i64::from(e.quantity);
        let net = if e.kind == SaleKind::Return { -q } else { q };
        let k = i.wrapping_mul(2_654_435_761) % keys;
        for (s, size) in SIZES.iter().enumerate() {
            let f = truth.entry((k, s, at - at.rem_euclid(*size))).or_default();
            *f = (f.0 + net, f.1 + 1);
        }
        w.send(topic, &e, None);
    }
    for p in 0..partitions {
        let mut e = sale(0, keys, tail_at, false);
        e.event_id = format!("tail-{p}");
        e.grid_id = format!("8831ff{p:09x}");
        w.send(topic, &e, Some(p));
    }
    w.finish();
    let mut digest = nearfield_aggregator::digest::OutputDigest::default();
    for ((k, s, ws), (net, count)) in truth {
        let (grid, sku) = (k / 400, k % 400);
        digest.add_figures(
            &format!("8831aa{grid:09x}"),
            &format!("SKU-{sku:05}"),
            ws,
            ws + SIZES[s],
            net,
            count,
        );
    }
    println!(
        "{{\"phase\":\"fill\",\"events\":{n},\"keys\":{keys},\"span_hours\":{span_h},\"windows_out\":{},\"output_digest\":\"{}\"}}",
        digest.windows_out(),
        digest.hex()
    );
}

fn consume(brokers: &str, topic: &str, n: u64, decode: bool) {
    // The aggregator's own consumer config (read_committed, its prefetch queue bounds):
    // the ceiling does the same consuming work, tuned the same way.
    let kafka = kafka_settings(brokers);
    let group = format!("bench-bare-{}", std::process::id());
    let consumer: BaseConsumer = nearfield_eos::clients::group_member(&kafka, &group, None)
        .unwrap_or_else(|e| die(&format!("consumer config: {e}")))
        .create()
        .unwrap_or_else(|e| die(&format!("consumer: {e}")));
    consumer.subscribe(&[topic]).unwrap_or_else(|e| die(&format!("subscribe: {e}")));
    let (cpu0, _) = proc_stat();
    let codec = Codec::single_object();
    let mut started = None;
    let (mut got, mut bytes, mut units) = (0u64, 0u64, 0i64);
    while got < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                got += 1;
                let payload = m.payload().unwrap_or_default();
                bytes += payload.len() as u64;
                // Decoded as the aggregator decodes it (strings borrowed).
                if decode {
                    match codec.decode_sale(payload) {
                        Ok(e) => units += i64::from(e.quantity),
                        Err(e) => die(&format!("decode: {}", e.reason())),
                    }
                }
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {}
        }
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let (cpu1, hwm) = proc_stat();
    let cpu = cpu1 - cpu0;
    println!(
        "{{\"phase\":\"{}\",\"units\":{units},\"events\":{got},\"bytes\":{bytes},\"seconds\":{secs:.2},\"events_per_s\":{:.0},\"cpu_s\":{cpu:.2},\"events_per_cpu_s\":{:.0},\"peak_rss_mb\":{hwm:.1},\"threads_cpu_s\":{}}}",
        if decode { "consume_decode" } else { "consume" },
        got as f64 / secs.max(0.001),
        got as f64 / cpu.max(0.01),
        threads_cpu_json()
    );
}

fn processed() -> u64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == nearfield_aggregator::internal_events::EVENTS_TOTAL)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum()
}

fn settings(brokers: &str, topic: &str, prefix: &str) -> (KafkaSettings, AggregateConfig) {
    let topics = Topics {
        sales: topic.to_string(),
        heartbeats: format!("{prefix}-hb"),
        dlq: format!("{prefix}-dlq"),
        late: format!("{prefix}-late"),
        demand: format!("{prefix}-demand"),
        stores: format!("{prefix}-stores"),
        catalog: format!("{prefix}-catalog"),
        aggregator_changelog: format!("{prefix}-changelog"),
        ..Topics::default()
    };
    let kafka = KafkaSettings { topics, ..kafka_settings(brokers) };
    let cfg = AggregateConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().unwrap_or_else(|_| die("addr")),
            group_id: format!("{prefix}-agg"),
            restore_threads: std::env::var("BENCH_RESTORE_THREADS")
                .ok()
                .and_then(|n| n.parse().ok()),
            ..nearfield_eos::LoopSettings::default()
        },
        follow_stores_topic: false,
        ..AggregateConfig::default()
    };
    (kafka, cfg)
}

/// The brokers, with the pass-through properties of the environment
/// (`NEARFIELD_KAFKA_PROPERTY_<NAME>`, as the binary reads them).
fn kafka_settings(brokers: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.to_string(),
        properties: nearfield_common::kafka::env_properties(),
        ..KafkaSettings::default()
    }
}

async fn aggregate(brokers: &str, topic: &str, n: u64, prefix: &str) {
    let (kafka, mut cfg) = settings(brokers, topic, prefix);
    // In the result, so a tuning experiment's line is never read as the defaults' figure.
    let tuning = serde_json::to_string(&kafka.properties).unwrap_or_default();
    cfg.exactly_once.instance_id = Some("bench-1".into());
    let token = CancellationToken::new();
    let (cpu0, _) = proc_stat();
    let started = Instant::now();
    let running = nearfield_aggregator::start(cfg, kafka, token.clone())
        .await
        .unwrap_or_else(|e| die(&format!("start: {e}")));
    let load = std::env::var("BENCH_QPS").ok().and_then(|q| q.parse::<u64>().ok()).map(|qps| {
        let keys = std::env::var("BENCH_KEYS").ok().and_then(|k| k.parse().ok()).unwrap_or(n);
        let base = format!("http://{}", running.local_addr);
        let stop = CancellationToken::new();
        let all = every_key(running.queries.clone(), keys, stop.clone());
        (stop.clone(), tokio::spawn(query_load(base, keys, qps, all, stop)))
    });
    let rss = RssSampler::start(processed);
    // With BENCH_WINDOWS (the fill's windows_out): also until that many windows were
    // emitted and committed (a bucket's windows close over several transactions).
    let windows: u64 =
        std::env::var("BENCH_WINDOWS").ok().and_then(|w| w.parse().ok()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while processed() < n || finals() < windows {
        if Instant::now() > deadline {
            die(&format!(
                "aggregate: {} of {n} events, {} of {windows} windows after 30 min",
                processed(),
                finals()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Processed is counted at commit: everything is committed now.
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, hwm) = proc_stat();
    let cpu = cpu1 - cpu0;
    let threads = threads_cpu_json();
    let rss_slope = rss.stop();
    // What it wrote, read back from its demand topic (after the measurement).
    let digest = if windows > 0 {
        let d = read_digest(brokers, &format!("{prefix}-demand"));
        format!(
            ",\"windows_out\":{},\"output_records\":{},\"output_digest\":\"{}\"",
            d.windows_out(),
            d.records(),
            d.hex()
        )
    } else {
        String::new()
    };
    let query = match load {
        Some((stop, l)) => {
            stop.cancel();
            l.await.unwrap_or_default()
        }
        None => "null".to_string(),
    };
    // The gauges are refreshed every 10 s; ask the loop.
    let size = state_size(&running).await;
    let (keys, windows, state_bytes) = (size.keys, size.windows, size.bytes);
    let rss = rss_mb();
    let totals = totals(&running).await;
    println!(
        "{{\"phase\":\"aggregate\",\"events\":{n},\"seconds\":{secs:.2},\"events_per_s\":{:.0},\"cpu_s\":{cpu:.2},\"events_per_cpu_s\":{:.0},\"peak_rss_mb\":{hwm:.1},\"rss_mb\":{rss:.1},\"keys\":{keys},\"windows\":{windows},\"state_bytes\":{state_bytes},\"rss_slope_mb_per_m_events\":{rss_slope},\"totals\":{totals},\"query\":{query},\"threads_cpu_s\":{threads},\"kafka_properties\":{tuning}{digest}}}",
        n as f64 / secs,
        n as f64 / cpu.max(0.01)
    );
    if std::env::var_os("BENCH_KILL").is_some() {
        // A crash: no shutdown, no flush; whatever was committed must restore as it was.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(60));
        die("not killed");
    }
    token.cancel();
    let _ = running.done.await;
}

/// DemandWindows written as final (revisions excluded), counted at commit.
fn finals() -> u64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == nearfield_aggregator::internal_events::WINDOWS_EMITTED_TOTAL)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.name() == "kind" && l.value() == "final"))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// RSS sampled every 100 ms against the events processed so far, from its own thread.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, f64)>>,
}

impl RssSampler {
    fn start(events: fn() -> u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push((events() as f64, rss_mb()));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        RssSampler { stop, thread }
    }

    /// Stops; the least-squares slope of RSS against events, in MiB per million events
    /// (JSON `null` when the run was too short for five distinct event counts).
    fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let s = self.thread.join().unwrap_or_default();
        let mut xs: Vec<u64> = s.iter().map(|p| p.0 as u64).collect();
        xs.dedup();
        if xs.len() < 5 {
            return "null".into();
        }
        let k = s.len() as f64;
        let (mx, my) =
            (s.iter().map(|p| p.0).sum::<f64>() / k, s.iter().map(|p| p.1).sum::<f64>() / k);
        let var: f64 = s.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let cov: f64 = s.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        format!("{:.1}", if var > 0.0 { cov / var * 1e6 } else { 0.0 })
    }
}

/// Every final window in `topic` (read committed, from the start to the end).
fn read_digest(brokers: &str, topic: &str) -> nearfield_aggregator::digest::OutputDigest {
    let codec = Codec::single_object();
    let mut digest = nearfield_aggregator::digest::OutputDigest::default();
    let isolation = nearfield_testkit::Isolation::ReadCommitted;
    for r in nearfield_testkit::read_topic(brokers, topic, isolation, Duration::from_secs(600)) {
        if let Some(payload) = &r.value {
            match codec.decode::<nearfield_schemas::DemandWindow>(payload) {
                Ok(w) => digest.add(&w),
                Err(e) => die(&format!("decode DemandWindow: {}", e.reason())),
            }
        }
    }
    digest
}

/// Set once the state holds `keys` keys (asked of the loop every 100 ms until then, or
/// until `stop`): when every key a query may name exists. Counting committed events
/// instead (at least `keys` of them) let a few queries in early: partitions are consumed
/// at different rates, so the fill's first `keys` events (one per key) are not all
/// applied when `keys` events are (2 of 6 121 queries answered 404 that way).
fn every_key(
    queries: nearfield_eos::Queries<Query, Answer>,
    keys: u64,
    stop: CancellationToken,
) -> Arc<AtomicBool> {
    let all = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&all);
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if let Ok(Answer::Size(s)) = queries.ask(Query::Size).await
                && s.keys as u64 >= keys
            {
                set.store(true, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    all
}

/// Open-loop query load on `base` until `stop`: the latency summary as JSON. Queries are
/// counted once `all` says every key exists.
async fn query_load(
    base: String,
    keys: u64,
    qps: u64,
    all: Arc<AtomicBool>,
    stop: CancellationToken,
) -> String {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_else(|e| die(&format!("http client: {e}")));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, f64, u16)>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / qps.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    loop {
        let due = tokio::select! {
            t = tick.tick() => t,
            () = stop.cancelled() => break,
        };
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = rng % keys;
        let (grid, sku, whole) = (k / 400, k % 400, rng.is_multiple_of(10));
        let url = if whole {
            format!("{base}/v1/demand?grid=8831aa{grid:09x}&limit=100")
        } else {
            format!("{base}/v1/demand?grid=8831aa{grid:09x}&sku=SKU-{sku:05}")
        };
        // Only once every key exists: the queries of a state of KEYS keys.
        let counted = all.load(Ordering::Relaxed);
        let (http, tx) = (http.clone(), tx.clone());
        tokio::spawn(async move {
            let status = http.get(&url).send().await.map_or(0, |r| r.status().as_u16());
            if counted {
                let _ = tx.send((whole, due.elapsed().as_secs_f64() * 1e3, status));
            }
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ms = Vec::new();
    let (mut errors, mut whole) = (std::collections::BTreeMap::<u16, u64>::new(), 0u64);
    while let Ok((w, t, status)) = rx.try_recv() {
        ms.push(t);
        if status != 200 {
            *errors.entry(status).or_default() += 1;
        }
        whole += u64::from(w);
    }
    let errors = serde_json::to_string(&errors).unwrap_or_default();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| {
        ms.get(((ms.len() as f64 * p) as usize).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    format!(
        "{{\"qps\":{qps},\"count\":{},\"grid_queries\":{whole},\"errors\":{errors},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        ms.len(),
        q(0.5),
        q(0.99),
        ms.last().copied().unwrap_or(0.0)
    )
}

async fn totals(running: &nearfield_aggregator::Running) -> String {
    match running.queries.ask(Query::Totals).await {
        Ok(Answer::Totals(t)) => serde_json::to_string(&t).unwrap_or_default(),
        _ => die("totals: no answer"),
    }
}

async fn state_size(running: &nearfield_aggregator::Running) -> StateSize {
    match running.queries.ask(Query::Size).await {
        Ok(Answer::Size(s)) => s,
        _ => StateSize::default(),
    }
}

async fn restore(brokers: &str, topic: &str, prefix: &str) {
    let (kafka, mut cfg) = settings(brokers, topic, prefix);
    // The aggregating instance's id, as a restarted pod has: its transactional id fences
    // the old one at once. (Under another id the restore first waits for the old
    // producer's transaction state to expire: seconds that are not restore work.)
    let id = std::env::var("BENCH_RESTORE_ID").unwrap_or_else(|_| "bench-1".into());
    cfg.exactly_once.instance_id = Some(id);
    let rss0 = rss_mb();
    let (cpu0, _) = proc_stat();
    let token = CancellationToken::new();
    let started = Instant::now();
    let running = nearfield_aggregator::start(cfg, kafka, token.clone())
        .await
        .unwrap_or_else(|e| die(&format!("start: {e}")));
    // The restore's wall time: from the assignment (the group join before it is not
    // restore work) until every partition is active.
    let mut assigned: Option<Instant> = None;
    let span = loop {
        let status = running.status.load();
        if assigned.is_none() && !status.partitions.is_empty() {
            assigned = Some(Instant::now());
        }
        if status.ready() && !status.partitions.is_empty() {
            break assigned.map_or(0.0, |a| a.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, hwm) = proc_stat();
    let cpu = cpu1 - cpu0;
    let size = state_size(&running).await;
    let records: u64 = prometheus::gather()
        .iter()
        .filter(|f| f.name() == metric_name("aggregator", RESTORED_RECORDS_TOTAL))
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum();
    let rss = rss_mb();
    let totals = totals(&running).await;
    // The mean of the partitions' own restore times (what this phase reported as its
    // restore time before partitions restored on several workers; kept to compare).
    let restore_avg_s = prometheus::gather()
        .iter()
        .filter(|f| f.name() == metric_name("aggregator", RESTORE_SECONDS))
        .flat_map(|f| {
            f.get_metric().iter().map(|m| {
                let h = m.get_histogram();
                h.get_sample_sum() / h.get_sample_count().max(1) as f64
            })
        })
        .fold(0.0f64, f64::max);
    token.cancel();
    let _ = running.done.await;
    println!(
        "{{\"phase\":\"restore\",\"seconds\":{span:.2},\"restore_avg_s\":{restore_avg_s:.2},\"until_ready_s\":{secs:.2},\"events\":{records},\"cpu_s\":{cpu:.2},\"events_per_cpu_s\":{:.0},\"peak_rss_mb\":{hwm:.1},\"records\":{records},\"keys\":{},\"windows\":{},\"state_bytes\":{},\"rss_mb\":{rss:.1},\"rss_growth_mb\":{:.1},\"totals\":{totals}}}",
        records as f64 / cpu.max(0.01),
        size.keys,
        size.windows,
        size.bytes,
        rss - rss0
    );
}

fn main() {
    // The binary's allocator settings (nearfield_common::alloc), before anything is allocated.
    if let Err(e) = nearfield_common::alloc::settle() {
        die(&format!("allocator settings: {e}"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let num = |s: &str| s.parse::<u64>().unwrap_or_else(|_| die("N and KEYS are numbers"));
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| die(&format!("runtime: {e}")))
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "fill", b, t, n, k, p, span @ ..] if span.len() <= 1 => {
            let (kafka, _) = settings(b, t, p);
            rt().block_on(kafka.ensure_topics(&kafka.topic_specs()))
                .unwrap_or_else(|e| die(&format!("topics: {e}")));
            match span.first() {
                Some(h) => fill_span(b, t, num(n), num(k), num(h), kafka.partitions),
                None => fill(b, t, num(n), num(k)),
            }
        }
        [_, "consume", b, t, n] => consume(b, t, num(n), false),
        [_, "consume-decode", b, t, n] => consume(b, t, num(n), true),
        [_, "aggregate", b, t, n, p] => rt().block_on(aggregate(b, t, num(n), p)),
        [_, "restore", b, t, _, p] => rt().block_on(restore(b, t, p)),
        _ => die(
            "usage: aggregator_bench fill BROKERS TOPIC N KEYS PREFIX [SPAN_HOURS] | consume|consume-decode BROKERS TOPIC N | aggregate|restore BROKERS TOPIC N PREFIX",
        ),
    }
}

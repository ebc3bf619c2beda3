//! The query plane under a rebalance (SPEC §6): any instance answers any grid × SKU, equal
//! to the ground truth, while the group grows from one instance to three and shrinks back;
//! an answer is either right or a `503` saying which partitions are restoring or moving,
//! never a `404` for a key another instance owns and never a wrong figure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use nearfield_testkit::http::get_json;
use nearfield_testkit::{Deployment, Kafka};

use crate::aggregator::{deploy, feed, recount};

/// (sold, returned, preorder, events) per (window start, end).
type Windows = BTreeMap<(i64, i64), (i64, i64, i64, i64)>;
type Truth = BTreeMap<(String, String), Windows>;

/// Windows that stay in memory through the whole test.
const WINDOWS: &str = "windows_ms = [1000, 5000]\nout_of_orderness_ms = 200\ngrace_ms = 100\n\
    allowed_lateness_ms = 900000\nmax_close_delay_ms = 2000\n";

/// What one sweep over every key saw.
#[derive(Debug, Default)]
struct Sweep {
    right: usize,
    unavailable: usize,
}

fn windows(v: &serde_json::Value) -> Windows {
    let mut out = Windows::new();
    for w in v["windows"].as_array().into_iter().flatten() {
        let n = |f: &str| w[f].as_i64().unwrap_or(i64::MIN);
        out.insert(
            (n("window_start"), n("window_end")),
            (n("units_sold"), n("units_returned"), n("preorder_units"), n("event_count")),
        );
    }
    out
}

/// Asks `base` for every key of `truth`; panics on a 404 or a wrong answer.
fn sweep(rt: &tokio::runtime::Runtime, base: &str, truth: &Truth, d: &Deployment) -> Sweep {
    let mut s = Sweep::default();
    for ((grid, sku), want) in truth {
        let url = format!("{base}/v1/demand?grid={grid}&sku={sku}");
        let (status, body) = rt.block_on(get_json(&url));
        match status {
            200 => {
                let got = windows(&body["keys"][0]);
                assert_eq!(&got, want, "GET {url} answered other figures: {body}");
                assert_eq!(body["coverage"]["complete"], true, "{body}");
                s.right += 1;
            }
            503 => s.unavailable += 1,
            _ => panic!("GET {url}: {status} {body}\n{}", d.logs()),
        }
    }
    s
}

/// Sweeps until one sweep is right for every key (the group settled), at most 120 s.
fn settled(rt: &tokio::runtime::Runtime, base: &str, truth: &Truth, d: &Deployment) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sweep(rt, base, truth, d).right != truth.len() {
        assert!(Instant::now() < deadline, "{base} never answered every key:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn any_instance_answers_any_key(kafka: &Kafka) {
    let (h, mut d) = deploy(kafka, 6, WINDOWS);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a = d.start_listening("a");
    d.wait_owns("a");
    let stop = Arc::new(AtomicBool::new(false));
    let (brokers, topic, s) =
        (kafka.brokers().to_string(), h.sales().to_string(), Arc::clone(&stop));
    let feeder = std::thread::spawn(move || feed(&brokers, &topic, 800, &s));
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let events = feeder.join().expect("feeder");
    let mut truth = Truth::new();
    for ((grid, sku, start, end), c) in recount(&events) {
        truth.entry((grid, sku)).or_default().insert((start, end), c);
    }
    settled(&rt, &a, &truth, &d);

    // 1 → 3: every instance is asked every key while partitions move.
    let b = d.start_listening("b");
    let c = d.start_listening("c");
    let mut during = Sweep::default();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        for base in [&a, &b, &c] {
            let s = sweep(&rt, base, &truth, &d);
            (during.right, during.unavailable) =
                (during.right + s.right, during.unavailable + s.unavailable);
        }
    }
    d.wait_owns("b");
    d.wait_owns("c");
    for base in [&a, &b, &c] {
        settled(&rt, base, &truth, &d);
    }
    // Each instance now answers partitions owned by the others: a SKU across grids is
    // gathered from all three.
    let sku = &truth.keys().next().expect("a key").1;
    let (_, across) = rt.block_on(get_json(&format!("{b}/v1/demand?sku={sku}&limit=1000")));
    let instances = across["coverage"]["instances"].as_object().map_or(0, |m| m.len());
    assert_eq!(instances, 3, "{across}");
    let grids = truth.keys().filter(|(_, s)| s == sku).count();
    assert_eq!(across["keys"].as_array().map(Vec::len), Some(grids), "{across}");
    // Paged three keys at a time through another instance: the same keys, in order.
    let mut paged = Vec::new();
    let mut url = format!("{c}/v1/demand?sku={sku}&limit=3");
    loop {
        let (status, page) = rt.block_on(get_json(&url));
        assert_eq!(status, 200, "{page}");
        paged.extend(page["keys"].as_array().into_iter().flatten().map(|k| k["grid_id"].clone()));
        match page["next"].as_str() {
            Some(next) => url = format!("{c}/v1/demand?sku={sku}&limit=3&after={next}"),
            None => break,
        }
    }
    let all: Vec<_> =
        across["keys"].as_array().into_iter().flatten().map(|k| k["grid_id"].clone()).collect();
    assert_eq!(paged, all, "pages of 3 = one page of 1000");

    // 3 → 1.
    d.stop("b");
    d.stop("c");
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let s = sweep(&rt, &a, &truth, &d);
        (during.right, during.unavailable) =
            (during.right + s.right, during.unavailable + s.unavailable);
    }
    settled(&rt, &a, &truth, &d);
    eprintln!(
        "query plane: {} keys, 1 → 3 → 1: {} right answers and {} 503s (restoring/moving) during the rebalances, none wrong, no 404",
        truth.len(),
        during.right,
        during.unavailable
    );
    d.stop("a");
}

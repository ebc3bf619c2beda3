//! Constructors for the metrics every stage's `internal_events` module declares: each
//! registers its metric with the default registry (served on `/metrics`). Registering a
//! name twice (two stages in one process share a metric) keeps the first.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

/// A counter with labels.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("{name}: {e}")),
    )
}

/// A counter.
pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("{name}: {e}")))
}

/// A gauge.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("{name}: {e}")))
}

/// A gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        IntGaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("{name}: {e}")),
    )
}

/// A histogram with the given buckets.
pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .unwrap_or_else(|e| unreachable!("{name}: {e}")),
    )
}

/// A histogram with labels and the given buckets.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .unwrap_or_else(|e| unreachable!("{name}: {e}")),
    )
}

/// Exponential buckets from `start` doubling `count` times (latencies).
pub fn doubling(start: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, 2.0, count).unwrap_or_default()
}

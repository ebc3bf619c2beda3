//! Counters, latencies, the live progress line (stderr) and the final summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::demand::Truth;

/// Writes acknowledged events as JSON lines (ground truth).
#[derive(Debug)]
pub struct AckedLog(std::io::BufWriter<std::fs::File>);

impl AckedLog {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(AckedLog(std::io::BufWriter::new(std::fs::File::create(path)?)))
    }
}

/// The final summary, printed as one JSON line on stdout.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Events sent (each once, however often retried).
    pub sent: u64,
    /// Events acknowledged as durable.
    pub acked: u64,
    /// Events rejected, by rule.
    pub rejected: BTreeMap<String, u64>,
    /// Events never acknowledged after every retry.
    pub failed: u64,
    /// Deliberately invalid events that were acknowledged (must stay 0).
    pub invalid_acked: u64,
    /// Request retries after 503/429/connection errors.
    pub retries: u64,
    /// Events resent after their acknowledgement (lost-answer retries) and accepted again
    /// by ingest: ingest's `events_accepted` counts them twice, the aggregator once.
    pub duplicates_sent: u64,
    /// Events of attempts that got no answer (a connection error or a timeout): ingest
    /// may or may not have accepted them, so its count of accepted events is at least
    /// `acked + duplicates_sent` and at most that plus this.
    pub unanswered: u64,
    /// Heartbeats acknowledged.
    pub heartbeats: u64,
    /// Request latency percentiles (first send to final answer), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Achieved acknowledged events per second.
    pub rate: f64,
    pub elapsed_s: f64,
}

/// Live counters.
#[derive(Debug)]
pub struct Stats {
    s: Summary,
    latencies: Histogram,
    log: Option<AckedLog>,
}

/// Latencies in log-spaced buckets (2% wide, 10 µs to ~2 min): constant memory, and a
/// percentile costs one pass over the buckets, so the progress line can read it every
/// second without copying or sorting samples.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const BUCKET_GROWTH: f64 = 1.02;
const BUCKET_MIN_MS: f64 = 0.01;
const BUCKETS: usize = 830;

impl Histogram {
    fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0 }
    }

    fn record(&mut self, ms: f64) {
        let i =
            if ms <= BUCKET_MIN_MS { 0.0 } else { (ms / BUCKET_MIN_MS).ln() / BUCKET_GROWTH.ln() };
        self.counts[(i.ceil() as usize).min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// Upper bound of the bucket holding the `p` quantile, ms (0 when empty).
    fn percentile(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let ms = BUCKET_MIN_MS * BUCKET_GROWTH.powi(i as i32);
                return (ms * 100.0).round() / 100.0;
            }
        }
        0.0
    }
}

impl Stats {
    pub fn new(log: Option<AckedLog>) -> Self {
        Stats { s: Summary::default(), latencies: Histogram::new(), log }
    }
    pub fn sent(&mut self, n: usize) {
        self.s.sent += n as u64;
    }
    pub fn acked(&mut self, t: &Truth) {
        self.s.acked += 1;
        if t.invalid {
            self.s.invalid_acked += 1;
        }
        if let Some(log) = &mut self.log
            && let Ok(line) = serde_json::to_string(t)
        {
            let _ = writeln!(log.0, "{line}");
        }
    }
    /// A replayed row could not be read (counted under `csv.<column>`).
    pub fn unreadable(&mut self, column: &str) {
        *self.s.rejected.entry(format!("csv.{column}")).or_default() += 1;
    }
    pub fn rejected(&mut self, rule: &str, _t: &Truth) {
        *self.s.rejected.entry(rule.to_string()).or_default() += 1;
    }
    pub fn failed(&mut self, n: usize) {
        self.s.failed += n as u64;
    }
    pub fn retry(&mut self) {
        self.s.retries += 1;
    }
    pub fn duplicate(&mut self, n: usize) {
        self.s.duplicates_sent += n as u64;
    }
    pub fn unanswered(&mut self, n: usize) {
        self.s.unanswered += n as u64;
    }
    pub fn heartbeat(&mut self, ok: bool) {
        if ok {
            self.s.heartbeats += 1;
        }
    }
    /// Records a request latency.
    pub fn latency(&mut self, d: Duration) {
        self.latencies.record(d.as_secs_f64() * 1e3);
    }

    /// The summary so far.
    pub fn summary(&mut self, elapsed: Duration) -> Summary {
        if let Some(log) = &mut self.log {
            let _ = log.0.flush();
        }
        let mut s = self.s.clone();
        s.p50_ms = self.latencies.percentile(0.50);
        s.p99_ms = self.latencies.percentile(0.99);
        s.elapsed_s = (elapsed.as_secs_f64() * 100.0).round() / 100.0;
        s.rate = if elapsed.as_secs_f64() > 0.0 {
            (s.acked as f64 / elapsed.as_secs_f64()).round()
        } else {
            0.0
        };
        s
    }
}

/// Rewrites the progress line on stderr.
pub fn progress(stats: &Mutex<Stats>, elapsed: Duration, in_flight: usize) {
    let s = match stats.lock() {
        Ok(mut st) => st.summary(elapsed),
        Err(_) => return,
    };
    let rejected: u64 = s.rejected.values().sum();
    eprint!(
        "\r[{:>5.0}s] sent {:>9}  acked {:>9}  rejected {:>6}  failed {:>5}  retries {:>5}  {:>7.0}/s  p99 {:>6.1} ms  in flight {:>3} ",
        elapsed.as_secs_f64(),
        s.sent,
        s.acked,
        rejected,
        s.failed,
        s.retries,
        s.rate,
        s.p99_ms,
        in_flight
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_a_bucket_of_the_exact_ones() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(0.99), 0.0);
        for i in 1..=1000 {
            h.record(f64::from(i)); // 1..=1000 ms
        }
        for (p, exact) in [(0.50, 500.0), (0.99, 990.0)] {
            let got = h.percentile(p);
            assert!(got >= exact && got <= exact * BUCKET_GROWTH, "p{p}: {got} vs {exact}");
        }
        h.record(1e9); // beyond the last bucket: counted, clamped
        assert_eq!(h.total, 1001);
    }
}

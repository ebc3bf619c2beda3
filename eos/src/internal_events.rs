//! Everything the runtime reports, for whichever stage runs on it: one struct per event
//! whose `emit()` logs and counts. Metric names are `nearfield_<stage>_<suffix>` with the
//! suffixes below (dashboards and alert rules in `deploy/` use them); labels are
//! low-cardinality (outcome, kind, class, topic).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use nearfield_common::metrics::{counter, counter_vec, doubling, gauge, gauge_vec, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::error::Class;

pub const CONSUMER_LAG: &str = "consumer_lag";
pub const RESTORE_SECONDS: &str = "restore_seconds";
pub const RESTORED_RECORDS_TOTAL: &str = "restored_records_total";
pub const RESTORING_PARTITIONS: &str = "restoring_partitions";
pub const RESTORE_REMAINING_RECORDS: &str = "restore_remaining_records";
pub const TRANSACTION_SECONDS: &str = "transaction_seconds";
pub const TRANSACTIONS_TOTAL: &str = "transactions_total";
pub const REBALANCES_TOTAL: &str = "rebalances_total";
pub const RESTARTS_TOTAL: &str = "restarts_total";
pub const ERRORS_TOTAL: &str = "errors_total";
pub const PARTITIONS: &str = "partitions";
pub const WATERMARK_DELAY_SECONDS: &str = "watermark_delay_seconds";
pub const STALLED_PARTITIONS_TOTAL: &str = "stalled_partitions_total";

/// The `repartition` stage's own counter (its other metrics are the runtime's, as every
/// stage's): records copied, counted once their transaction committed.
pub const REPARTITION_RECORDS_TOTAL: &str = "nearfield_repartition_records_total";

/// The repartition stage's records copied.
pub(crate) static REPARTITION_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        REPARTITION_RECORDS_TOTAL,
        "Records copied into the target topic (committed transactions).",
    )
});

/// The full metric name of `suffix` for `stage`.
pub fn metric_name(stage: &str, suffix: &str) -> String {
    format!("nearfield_{stage}_{suffix}")
}

/// The runtime's metrics of one stage.
#[derive(Debug)]
pub struct Metrics {
    stage: &'static str,
    lag: IntGaugeVec,
    restore: Histogram,
    restored: IntCounter,
    restoring: IntGauge,
    remaining: IntGauge,
    txn_seconds: Histogram,
    txns: IntCounterVec,
    rebalances: IntCounterVec,
    restarts: IntCounter,
    errors: IntCounterVec,
    partitions: IntGauge,
    watermark_delay: IntGauge,
    stalls: IntCounter,
}

static BY_STAGE: LazyLock<Mutex<HashMap<&'static str, &'static Metrics>>> =
    LazyLock::new(Mutex::default);

impl Metrics {
    /// The metrics of `stage`, registered (with every label value) on first use.
    pub fn of(stage: &'static str) -> &'static Metrics {
        let mut all = BY_STAGE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(stage).or_insert_with(|| Box::leak(Box::new(Metrics::register(stage))))
    }

    fn register(stage: &'static str) -> Metrics {
        let n = |suffix| metric_name(stage, suffix);
        let m = Metrics {
            stage,
            lag: gauge_vec(
                &n(CONSUMER_LAG),
                "Records behind the end of the owned partitions.",
                &["topic"],
            ),
            restore: histogram(
                &n(RESTORE_SECONDS),
                "Time to restore one partition from its changelog.",
                doubling(0.01, 14),
            ),
            restored: counter(
                &n(RESTORED_RECORDS_TOTAL),
                "Changelog records read while restoring partitions.",
            ),
            restoring: gauge(
                &n(RESTORING_PARTITIONS),
                "Assigned partitions still being restored from their changelog.",
            ),
            remaining: gauge(
                &n(RESTORE_REMAINING_RECORDS),
                "Changelog offsets left to read by the partitions being restored.",
            ),
            txn_seconds: histogram(
                &n(TRANSACTION_SECONDS),
                "Time to write and commit one transaction (changelog, outputs, offsets).",
                doubling(0.001, 14),
            ),
            txns: counter_vec(
                &n(TRANSACTIONS_TOTAL),
                "Kafka transactions by outcome.",
                &["outcome"],
            ),
            rebalances: counter_vec(
                &n(REBALANCES_TOTAL),
                "Partition assignments and revocations.",
                &["kind"],
            ),
            restarts: counter(
                &n(RESTARTS_TOTAL),
                "Times the Kafka loop restarted after an error (state reloaded).",
            ),
            errors: counter_vec(
                &n(ERRORS_TOTAL),
                "Errors by what was done about them: retryable (retried), abortable \
                 (transaction aborted, state rebuilt), restart (clients recreated), fatal \
                 (stage stopped).",
                &["class"],
            ),
            partitions: gauge(&n(PARTITIONS), "Input partitions owned and restored."),
            watermark_delay: gauge(
                &n(WATERMARK_DELAY_SECONDS),
                "Wall clock minus the lowest watermark among owned partitions, in seconds.",
            ),
            stalls: counter(
                &n(STALLED_PARTITIONS_TOTAL),
                "Owned input partitions found not fetched while records waited, and sought \
                 again.",
            ),
        };
        for o in ["committed", "aborted"] {
            m.txns.with_label_values(&[o]);
        }
        for k in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[k]);
        }
        for c in [Class::Fatal, Class::Restart, Class::Abort, Class::Retry] {
            m.errors.with_label_values(&[c.label()]);
        }
        m
    }
}

/// Partitions were assigned or revoked.
#[derive(Debug)]
pub struct Rebalanced<'a> {
    pub kind: &'static str,
    pub partitions: &'a [i32],
    pub lost: bool,
}
impl Rebalanced<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::info!(stage = m.stage, kind = self.kind, partitions = ?self.partitions, lost = self.lost, "rebalance");
        m.rebalances.with_label_values(&[self.kind]).inc();
    }
}

/// A partition was restored from its changelog and is processing.
#[derive(Debug)]
pub struct PartitionRestored {
    pub partition: i32,
    pub records: u64,
    pub elapsed: Duration,
    pub committed: Option<i64>,
}
impl PartitionRestored {
    pub fn emit(self, m: &Metrics) {
        tracing::info!(
            stage = m.stage,
            partition = self.partition,
            records = self.records,
            resume_at = self.committed,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "partition restored"
        );
        m.restore.observe(self.elapsed.as_secs_f64());
        m.restored.inc_by(self.records);
    }
}

/// Restore progress of the partitions being restored.
#[derive(Debug)]
pub struct Restoring {
    pub partitions: usize,
    pub remaining: u64,
}
impl Restoring {
    pub fn emit(self, m: &Metrics) {
        m.restoring.set(self.partitions as i64);
        m.remaining.set(self.remaining as i64);
    }
}

/// A transaction committed.
#[derive(Debug)]
pub struct TransactionCommitted {
    pub elapsed: Duration,
    pub records: usize,
}
impl TransactionCommitted {
    pub fn emit(self, m: &Metrics) {
        tracing::trace!(stage = m.stage, records = self.records, "transaction committed");
        m.txn_seconds.observe(self.elapsed.as_secs_f64());
        m.txns.with_label_values(&["committed"]).inc();
    }
}

/// A transaction was aborted; the owned partitions are rebuilt from their changelog.
#[derive(Debug)]
pub struct TransactionAborted<'a> {
    pub error: &'a str,
}
impl TransactionAborted<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::error!(
            stage = m.stage,
            error = self.error,
            "transaction aborted; resuming from the last commit"
        );
        m.txns.with_label_values(&["aborted"]).inc();
    }
}

/// After an abort, the kept partitions restore again from the last commit.
#[derive(Debug)]
pub struct Rewound<'a> {
    pub partitions: &'a [i32],
}
impl Rewound<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::warn!(stage = m.stage, partitions = ?self.partitions, "recovered from the last commit after an aborted transaction: partitions restore again");
    }
}

/// An owned partition was not fetched while records waited; it is sought again.
#[derive(Debug)]
pub struct PartitionStalled<'a> {
    pub partition: i32,
    /// librdkafka's fetch state of the partition.
    pub fetch_state: &'a str,
    pub fetch_position: i64,
    pub last_stable_offset: i64,
    pub seek_to: rdkafka::Offset,
}
impl PartitionStalled<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::warn!(
            stage = m.stage,
            partition = self.partition,
            fetch_state = self.fetch_state,
            fetch_position = self.fetch_position,
            last_stable_offset = self.last_stable_offset,
            seek_to = ?self.seek_to,
            "input partition not fetched while records wait: seeking it again"
        );
        m.stalls.inc();
    }
}

/// An error was classified.
#[derive(Debug)]
pub struct ErrorSeen<'a> {
    pub class: Class,
    pub error: &'a str,
}
impl ErrorSeen<'_> {
    pub fn emit(self, m: &Metrics) {
        if self.class == Class::Retry {
            tracing::warn!(stage = m.stage, error = self.error, "retrying");
        }
        m.errors.with_label_values(&[self.class.label()]).inc();
    }
}

/// The Kafka loop failed and restarts with new clients.
#[derive(Debug)]
pub struct LoopRestarted<'a> {
    pub error: &'a str,
    pub backoff: Duration,
}
impl LoopRestarted<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::error!(
            error = self.error,
            backoff_ms = self.backoff.as_millis() as u64,
            "{} loop failed; restarting from Kafka",
            m.stage
        );
        m.restarts.inc();
    }
}

/// The stage stops on an error no retry can fix.
#[derive(Debug)]
pub struct Fatal<'a> {
    pub error: &'a str,
}
impl Fatal<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::error!(
            stage = m.stage,
            error = self.error,
            "{} stopped: permanent error",
            m.stage
        );
    }
}

/// Periodic gauges.
#[derive(Debug)]
pub struct Owned {
    pub partitions: usize,
    pub watermark_delay_s: Option<i64>,
}
impl Owned {
    pub fn emit(self, m: &Metrics) {
        m.partitions.set(self.partitions as i64);
        m.watermark_delay.set(self.watermark_delay_s.unwrap_or(0));
    }
}

/// An undecodable input record went to the dead-letter topic.
#[derive(Debug)]
pub struct DeadLettered<'a> {
    pub record: &'static str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}
impl DeadLettered<'_> {
    pub fn emit(self) {
        tracing::warn!(
            record = self.record,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "undecodable record sent to the dead-letter topic"
        );
    }
}

/// Consumer lag from librdkafka statistics.
#[derive(Debug)]
pub struct ConsumerLag<'a> {
    pub topic: &'a str,
    pub lag: i64,
}
impl ConsumerLag<'_> {
    pub fn emit(self, m: &Metrics) {
        m.lag.with_label_values(&[self.topic]).set(self.lag);
    }
}

//! Everything the aggregator reports: one struct per event whose `emit()` logs and counts.
//! Metric names are constants; labels are low-cardinality (outcome, topic, partition
//! count never; never a grid, store or SKU).

use std::sync::LazyLock;
use std::time::Duration;

use nearfield_common::metrics::{counter, counter_vec, doubling, gauge, gauge_vec, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::state::StateSize;

pub const EVENTS_TOTAL: &str = "nearfield_aggregator_events_total";
pub const HEARTBEATS_TOTAL: &str = "nearfield_aggregator_heartbeats_total";
pub const WINDOWS_EMITTED_TOTAL: &str = "nearfield_aggregator_windows_emitted_total";
pub const WINDOWS_EXPIRED_TOTAL: &str = "nearfield_aggregator_windows_expired_total";
pub const OPEN_WINDOWS: &str = "nearfield_aggregator_windows";
pub const KEYS: &str = "nearfield_aggregator_keys";
pub const DEDUPE_IDS: &str = "nearfield_aggregator_dedupe_ids";
pub const STATE_BYTES: &str = "nearfield_aggregator_state_bytes";
pub const PARTITIONS: &str = "nearfield_aggregator_partitions";
pub const WATERMARK_DELAY_SECONDS: &str = "nearfield_aggregator_watermark_delay_seconds";
pub const CONSUMER_LAG: &str = "nearfield_aggregator_consumer_lag";
pub const RESTORE_SECONDS: &str = "nearfield_aggregator_restore_seconds";
pub const RESTORED_RECORDS_TOTAL: &str = "nearfield_aggregator_restored_records_total";
pub const TRANSACTION_SECONDS: &str = "nearfield_aggregator_transaction_seconds";
pub const TRANSACTIONS_TOTAL: &str = "nearfield_aggregator_transactions_total";
pub const REBALANCES_TOTAL: &str = "nearfield_aggregator_rebalances_total";
pub const RESTARTS_TOTAL: &str = "nearfield_aggregator_restarts_total";

static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        EVENTS_TOTAL,
        "Sale records consumed, by outcome: counted, duplicate (event_id seen), late (to \
         sales.late.v1), invalid (undecodable, to sales.dlq.v1).",
        &["outcome"],
    )
});
static HEARTBEATS: LazyLock<IntCounter> =
    LazyLock::new(|| counter(HEARTBEATS_TOTAL, "Device heartbeats applied to completeness."));
static EMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        WINDOWS_EMITTED_TOTAL,
        "DemandWindows written to demand.v1: final (revision 0) or revision (late data).",
        &["kind"],
    )
});
static EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(WINDOWS_EXPIRED_TOTAL, "Windows dropped from state after their allowed lateness.")
});
static WINDOWS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(OPEN_WINDOWS, "Windows held in memory (open or within lateness)."));
static KEYS_G: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(KEYS, "Grid × SKU keys held in memory."));
static DEDUPE: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(DEDUPE_IDS, "Event ids held for de-duplication."));
static BYTES: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(STATE_BYTES, "Estimated bytes of aggregation state in memory."));
static PARTS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(PARTITIONS, "Input partitions owned and restored."));
static WM_DELAY: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        WATERMARK_DELAY_SECONDS,
        "Wall clock minus the lowest watermark among owned partitions, in seconds.",
    )
});
static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(CONSUMER_LAG, "Records behind the end of the owned partitions.", &["topic"])
});
static RESTORE: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        RESTORE_SECONDS,
        "Time to restore one partition from its changelog.",
        doubling(0.01, 14),
    )
});
static RESTORED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(RESTORED_RECORDS_TOTAL, "Changelog records read while restoring partitions.")
});
static TXN_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        TRANSACTION_SECONDS,
        "Time to write and commit one transaction (changelog, outputs, offsets).",
        doubling(0.001, 14),
    )
});
static TXNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(TRANSACTIONS_TOTAL, "Kafka transactions by outcome.", &["outcome"])
});
static REBALANCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(REBALANCES_TOTAL, "Partition assignments and revocations.", &["kind"])
});
static RESTARTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(RESTARTS_TOTAL, "Times the Kafka loop restarted after an error (state reloaded).")
});
/// Registers every metric so `/metrics` lists them from the start.
pub fn register_all() {
    LazyLock::force(&EVENTS);
    for o in ["counted", "duplicate", "late", "invalid"] {
        EVENTS.with_label_values(&[o]);
    }
    LazyLock::force(&HEARTBEATS);
    for k in ["final", "revision"] {
        EMITTED.with_label_values(&[k]);
    }
    LazyLock::force(&EXPIRED);
    LazyLock::force(&WINDOWS);
    LazyLock::force(&KEYS_G);
    LazyLock::force(&DEDUPE);
    LazyLock::force(&BYTES);
    LazyLock::force(&PARTS);
    LazyLock::force(&WM_DELAY);
    LazyLock::force(&LAG);
    LazyLock::force(&RESTORE);
    LazyLock::force(&RESTORED);
    LazyLock::force(&TXN_SECONDS);
    for o in ["committed", "aborted"] {
        TXNS.with_label_values(&[o]);
    }
    for k in ["assign", "revoke"] {
        REBALANCES.with_label_values(&[k]);
    }
    LazyLock::force(&RESTARTS);
}

/// Sale records were processed in one batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventsProcessed {
    pub counted: u64,
    pub duplicate: u64,
    pub late: u64,
    pub invalid: u64,
    pub heartbeats: u64,
}
impl EventsProcessed {
    pub fn emit(self) {
        for (o, n) in [
            ("counted", self.counted),
            ("duplicate", self.duplicate),
            ("late", self.late),
            ("invalid", self.invalid),
        ] {
            if n > 0 {
                EVENTS.with_label_values(&[o]).inc_by(n);
            }
        }
        HEARTBEATS.inc_by(self.heartbeats);
    }
}

/// A record on `sales.v1` could not be decoded; it goes to the dead-letter topic.
#[derive(Debug)]
pub struct InvalidRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}
impl InvalidRecord<'_> {
    pub fn emit(self) {
        tracing::warn!(
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "undecodable sale record sent to the dead-letter topic"
        );
    }
}

/// A transaction committed.
#[derive(Debug)]
pub struct TransactionCommitted {
    pub elapsed: Duration,
    pub records: usize,
    pub finals: usize,
    pub revisions: usize,
    pub expired: usize,
}
impl TransactionCommitted {
    pub fn emit(self) {
        tracing::trace!(records = self.records, finals = self.finals, "transaction committed");
        TXN_SECONDS.observe(self.elapsed.as_secs_f64());
        TXNS.with_label_values(&["committed"]).inc();
        EMITTED.with_label_values(&["final"]).inc_by(self.finals as u64);
        EMITTED.with_label_values(&["revision"]).inc_by(self.revisions as u64);
        EXPIRED.inc_by(self.expired as u64);
    }
}

/// A transaction was aborted; the loop restarts from the last commit.
#[derive(Debug)]
pub struct TransactionAborted<'a> {
    pub error: &'a str,
}
impl TransactionAborted<'_> {
    pub fn emit(self) {
        tracing::error!(error = self.error, "transaction aborted; restarting from the last commit");
        TXNS.with_label_values(&["aborted"]).inc();
    }
}

/// Partitions were assigned or revoked.
#[derive(Debug)]
pub struct Rebalanced<'a> {
    pub kind: &'static str,
    pub partitions: &'a [i32],
}
impl Rebalanced<'_> {
    pub fn emit(self) {
        tracing::info!(kind = self.kind, partitions = ?self.partitions, "rebalance");
        REBALANCES.with_label_values(&[self.kind]).inc();
    }
}

/// A partition was restored from its changelog.
#[derive(Debug)]
pub struct PartitionRestored {
    pub partition: i32,
    pub records: u64,
    pub elapsed: Duration,
    pub size: StateSize,
}
impl PartitionRestored {
    pub fn emit(self) {
        tracing::info!(
            partition = self.partition,
            records = self.records,
            keys = self.size.keys,
            windows = self.size.windows,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "partition restored"
        );
        RESTORE.observe(self.elapsed.as_secs_f64());
        RESTORED.inc_by(self.records);
    }
}

/// The Kafka loop failed and restarts.
#[derive(Debug)]
pub struct LoopRestarted<'a> {
    pub error: &'a str,
}
impl LoopRestarted<'_> {
    pub fn emit(self) {
        tracing::error!(error = self.error, "aggregator loop failed; restarting from Kafka");
        RESTARTS.inc();
    }
}

/// Periodic gauges.
#[derive(Debug)]
pub struct StateGauges {
    pub size: StateSize,
    pub partitions: usize,
    pub watermark_delay_s: Option<i64>,
}
impl StateGauges {
    pub fn emit(self) {
        WINDOWS.set(self.size.windows as i64);
        KEYS_G.set(self.size.keys as i64);
        DEDUPE.set(self.size.dedupe_ids as i64);
        BYTES.set(self.size.bytes as i64);
        PARTS.set(self.partitions as i64);
        WM_DELAY.set(self.watermark_delay_s.unwrap_or(0));
    }
}

/// Consumer lag from librdkafka statistics.
#[derive(Debug)]
pub struct ConsumerLag<'a> {
    pub topic: &'a str,
    pub lag: i64,
}
impl ConsumerLag<'_> {
    pub fn emit(self) {
        LAG.with_label_values(&[self.topic]).set(self.lag);
    }
}

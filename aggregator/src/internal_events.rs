//! Everything the aggregator reports besides what the exactly-once runtime reports for it
//! (`nearfield_aggregator_{transactions,rebalances,restarts,errors}_total`, restore,
//! lag and partitions: see `nearfield_eos::internal_events`): one struct per event whose
//! `emit()` logs and counts. Metric names are constants; labels are low-cardinality
//! (outcome, kind; never a grid, store or SKU).

use std::sync::LazyLock;

use nearfield_common::metrics::{counter, counter_vec, gauge};
use prometheus::{IntCounter, IntCounterVec, IntGauge};

use crate::state::StateSize;

pub const EVENTS_TOTAL: &str = "nearfield_aggregator_events_total";
pub const HEARTBEATS_TOTAL: &str = "nearfield_aggregator_heartbeats_total";
pub const WINDOWS_EMITTED_TOTAL: &str = "nearfield_aggregator_windows_emitted_total";
pub const WINDOWS_EXPIRED_TOTAL: &str = "nearfield_aggregator_windows_expired_total";
pub const COVERAGE_TOTAL: &str = "nearfield_aggregator_coverage_records_total";
pub const MISPLACED_GRIDS_TOTAL: &str = "nearfield_aggregator_misplaced_grids_total";

static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        EVENTS_TOTAL,
        "Sale records consumed, by outcome: counted, duplicate (event_id seen), late (to \
         sales.late.v1), invalid (undecodable, to sales.dlq.v1), refused (its revenue, or a \
         window's with it, out of range, to sales.dlq.v1).",
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
static COVERAGE: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        COVERAGE_TOTAL,
        "GridCoverage records written (one per registered grid per closed window).",
    )
});
static MISPLACED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        MISPLACED_GRIDS_TOTAL,
        "Grids first seen on a partition their key does not hash to (a producer with another \
         partitioner, or a topic copied or grown by partition number): each partition's \
         state then holds part of such a grid's windows.",
    )
});
static EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(WINDOWS_EXPIRED_TOTAL, "Windows dropped from state after their allowed lateness.")
});
// The state gauges, refreshed about every ten seconds (a walk over every key).
pub const OPEN_WINDOWS: &str = "nearfield_aggregator_windows";
pub const KEYS: &str = "nearfield_aggregator_keys";
pub const DEDUPE_IDS: &str = "nearfield_aggregator_dedupe_ids";
pub const STATE_BYTES: &str = "nearfield_aggregator_state_bytes";
pub const CLOSE_BACKLOG: &str = "nearfield_aggregator_close_backlog_windows";

static WINDOWS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(OPEN_WINDOWS, "Windows held in memory (open or within lateness)."));
static KEYS_G: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(KEYS, "Grid × SKU keys held in memory."));
static DEDUPE: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(DEDUPE_IDS, "Event ids held for de-duplication."));
static BYTES: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(STATE_BYTES, "Estimated bytes of aggregation state in memory."));
static BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        CLOSE_BACKLOG,
        "Closed windows waiting to be emitted (a bucket closes over several commits, close_chunk per commit).",
    )
});
/// Registers every metric so `/metrics` lists them from the start.
pub fn register_all() {
    LazyLock::force(&EVENTS);
    for o in ["counted", "duplicate", "late", "invalid", "refused"] {
        EVENTS.with_label_values(&[o]);
    }
    LazyLock::force(&HEARTBEATS);
    for k in ["final", "revision"] {
        EMITTED.with_label_values(&[k]);
    }
    LazyLock::force(&EXPIRED);
    LazyLock::force(&COVERAGE);
    LazyLock::force(&MISPLACED);
    LazyLock::force(&WINDOWS);
    LazyLock::force(&KEYS_G);
    LazyLock::force(&DEDUPE);
    LazyLock::force(&BYTES);
    LazyLock::force(&BACKLOG);
}

/// Sale records were processed in one batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventsProcessed {
    pub counted: u64,
    pub duplicate: u64,
    pub late: u64,
    pub invalid: u64,
    pub refused: u64,
    pub heartbeats: u64,
}
impl EventsProcessed {
    pub fn emit(self) {
        for (o, n) in [
            ("counted", self.counted),
            ("duplicate", self.duplicate),
            ("late", self.late),
            ("invalid", self.invalid),
            ("refused", self.refused),
        ] {
            if n > 0 {
                EVENTS.with_label_values(&[o]).inc_by(n);
            }
        }
        HEARTBEATS.inc_by(self.heartbeats);
    }
}

/// What one transaction did, reported once it committed.
#[derive(Debug, Default)]
pub struct Committed {
    pub events: EventsProcessed,
    pub finals: usize,
    pub revisions: usize,
    pub expired: usize,
    pub coverage: usize,
    /// Grids first seen on a partition their key does not hash to.
    pub misplaced: u64,
}
impl Committed {
    pub fn emit(self) {
        self.events.emit();
        MISPLACED.inc_by(self.misplaced);
        EMITTED.with_label_values(&["final"]).inc_by(self.finals as u64);
        EMITTED.with_label_values(&["revision"]).inc_by(self.revisions as u64);
        EXPIRED.inc_by(self.expired as u64);
        COVERAGE.inc_by(self.coverage as u64);
    }
}

/// Grids were first seen on a partition their keys do not hash to (in one run of
/// records): the first, and how many.
#[derive(Debug)]
pub struct MisplacedGrid<'a> {
    pub grid: &'a str,
    pub partition: i32,
    pub hashes_to: i32,
    pub grids: u64,
}
impl MisplacedGrid<'_> {
    /// Logs it, one line a run however many grids (the count goes with the
    /// transaction's [`Committed`]).
    pub fn emit(&self) {
        tracing::warn!(
            grid = self.grid,
            partition = self.partition,
            hashes_to = self.hashes_to,
            grids = self.grids,
            "a grid's sales arrive on a partition its key does not hash to: they are counted \
             here, apart from the grid's other partition (a producer with another \
             partitioner, or a topic grown without `nearfield repartition`?)"
        );
    }
}

/// Periodic gauges.
#[derive(Debug)]
pub struct StateGauges {
    pub size: StateSize,
}
impl StateGauges {
    pub fn emit(self) {
        WINDOWS.set(self.size.windows as i64);
        KEYS_G.set(self.size.keys as i64);
        DEDUPE.set(self.size.dedupe_ids as i64);
        BYTES.set(self.size.bytes as i64);
        BACKLOG.set(self.size.close_backlog as i64);
    }
}

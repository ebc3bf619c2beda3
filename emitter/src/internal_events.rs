//! Everything the emitter reports besides what the exactly-once runtime reports for it
//! (`nearfield_emitter_{transactions,rebalances,restarts,errors}_total`, restore, lag
//! and partitions: see `nearfield_eos::internal_events`): one struct per event whose
//! `emit()` logs and counts.
//! Metric names are constants; labels are low-cardinality (reason, firmness, outcome, and
//! the supplier on one counter; never a SKU, region or store).

use std::sync::LazyLock;

use nearfield_common::metrics::{counter, counter_vec, doubling, gauge, gauge_vec, histogram};
use nearfield_schemas::PlanSignal;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::state::{StateSize, Tally};

pub const WINDOWS_TOTAL: &str = "nearfield_emitter_windows_total";
pub const SIGNALS_TOTAL: &str = "nearfield_emitter_signals_total";
pub const SUPPLIER_SIGNALS_TOTAL: &str = "nearfield_emitter_supplier_signals_total";
pub const EVENT_TO_SIGNAL_SECONDS: &str = "nearfield_emitter_event_to_signal_seconds";
pub const SUPPRESSED_TOTAL: &str = "nearfield_emitter_privacy_suppressed_total";
pub const FORECAST_ABS_ERROR: &str = "nearfield_emitter_forecast_abs_error_units";
pub const FORECAST_INTERVAL_TOTAL: &str = "nearfield_emitter_forecast_interval_total";
pub const REVISIONS_ABSORBED_TOTAL: &str = "nearfield_emitter_revisions_absorbed_total";
pub const FIRM_PLANS_REVISED_TOTAL: &str = "nearfield_emitter_firm_plans_revised_total";
pub const REVISION_UNITS_TOTAL: &str = "nearfield_emitter_revision_units_total";
pub const REVISIONS_HELD_TOTAL: &str = "nearfield_emitter_revisions_held_total";
pub const GROUP_CHANGES_HELD_TOTAL: &str = "nearfield_emitter_group_changes_held_total";
pub const PLANS_SUPERSEDED_TOTAL: &str = "nearfield_emitter_plans_superseded_total";
pub const SOURCES_IDLED_TOTAL: &str = "nearfield_emitter_sources_idled_total";
pub const HANDED_OVER_TOTAL: &str = "nearfield_emitter_decisions_handed_over_total";
pub const CLOCK_SOURCES: &str = "nearfield_emitter_clock_sources";
pub const SKUS: &str = "nearfield_emitter_skus";
pub const CELLS: &str = "nearfield_emitter_cells";
pub const PLANS: &str = "nearfield_emitter_plans";
pub const STATE_BYTES: &str = "nearfield_emitter_state_bytes";
pub const CATALOG_SKUS: &str = "nearfield_emitter_catalog_skus";
pub const COMPLETENESS_TOTAL: &str = "nearfield_emitter_signal_completeness_total";
pub const COVERAGE_RECORDS_TOTAL: &str = "nearfield_emitter_coverage_records_total";
pub const COVERAGE_REGIONS: &str = "nearfield_emitter_coverage_region_buckets";

static WINDOWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        WINDOWS_TOTAL,
        "DemandWindows consumed, by outcome: applied, revised (late correction), other_size, \
         provisional, unknown_sku, outside_areas, invalid_grid, invalid_time, too_old, \
         undecodable (to sales.dlq.v1).",
        &["outcome"],
    )
});
static SIGNALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        SIGNALS_TOTAL,
        "PlanSignals written, by reason and firmness.",
        &["reason", "firmness"],
    )
});
/// Per supplier, so an alert can tell a supplier that gets no plan. Suppliers are few (the
/// factories of the catalog), unlike SKUs, regions or stores, which are never labels.
static SUPPLIER_SIGNALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(SUPPLIER_SIGNALS_TOTAL, "PlanSignals written, by supplier.", &["supplier"])
});
static LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        EVENT_TO_SIGNAL_SECONDS,
        "From the newest sale (occurred_at) behind a signal to the signal's decision.",
        doubling(1.0, 16),
    )
});
static SUPPRESSED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        SUPPRESSED_TOTAL,
        "Decisions withheld because even the coarsest region had fewer stores than the \
         privacy floor k.",
    )
});
static FORECAST_ERR: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        FORECAST_ABS_ERROR,
        "|actual − one-step forecast| of a region's net units as each bucket completes.",
        doubling(0.5, 14),
    )
});
static INTERVAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        FORECAST_INTERVAL_TOTAL,
        "Completed buckets whose actual fell inside (hit) or outside (miss) the forecast \
         interval; hit / (hit + miss) should be near interval_coverage.",
        &["outcome"],
    )
});
static ABSORBED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        REVISIONS_ABSORBED_TOTAL,
        "Late corrections that left a plan's recommendation as it was.",
    )
});
// Revision churn: revisions per plan = signals_total{reason="REVISION"} / signals_total
// of the other reasons; share of FIRM plans revised = firm_plans_revised_total /
// signals_total{firmness="FIRM", reason!="REVISION"}.
static FIRM_REVISED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        FIRM_PLANS_REVISED_TOTAL,
        "FIRM plans revised at least once (counted at their first revision).",
    )
});
static REVISION_UNITS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        REVISION_UNITS_TOTAL,
        "Units moved by revisions: |new − previous recommended_units| summed over revisions.",
    )
});
static HELD: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        REVISIONS_HELD_TOTAL,
        "Revisions held back because the late changes behind them came from fewer than \
         privacy_k stores (published once enough stores changed).",
    )
});
static GROUP_HELD: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        GROUP_CHANGES_HELD_TOTAL,
        "Decisions where a region's sales since its last plan came from fewer than privacy_k \
         stores (or one store dominated them): kept for a later plan instead of published.",
    )
});
static SUPERSEDED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        PLANS_SUPERSEDED_TOTAL,
        "Decisions that superseded the current plan of their (warehouse, region, horizon): a \
         newer rule firing for the same horizon (late data is a REVISION instead).",
    )
});
static SOURCES_IDLED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        SOURCES_IDLED_TOTAL,
        "Aggregator partitions that sent nothing for source_idle_ms and stopped holding the \
         demand clock back (until their next window).",
    )
});
static HANDED_OVER: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        HANDED_OVER_TOTAL,
        "Decisions not taken because their horizon is planned by another deployment \
         (emit.horizons_from_ms / horizons_before_ms: a handover).",
    )
});
static CLOCK_SOURCES_G: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        CLOCK_SOURCES,
        "Aggregator partitions the demand clocks follow, by state: active (holding the \
         clock at their watermark) or idle.",
        &["state"],
    )
});
static SKUS_G: LazyLock<IntGauge> = LazyLock::new(|| gauge(SKUS, "SKUs with planning state."));
static CELLS_G: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(CELLS, "(SKU, warehouse, region) series held in memory."));
static PLANS_G: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(PLANS, "Plans held while they are revisable."));
static BYTES: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(STATE_BYTES, "Estimated bytes of planning state in memory."));
static CATALOG: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(CATALOG_SKUS, "SKUs in the supplier catalog."));

static COMPLETENESS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        COMPLETENESS_TOTAL,
        "Signals by where their completeness came from: coverage (coverage.v1, whole \
         regions, silent grids included) or windows (the demand windows of the grids that \
         sold: the bucket's coverage had not been read yet, or coverage is not followed).",
        &["source"],
    )
});
static COVERAGE_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        COVERAGE_RECORDS_TOTAL,
        "GridCoverage records read from coverage.v1, by outcome: counted, skipped (another \
         window size, or older than what is kept), refused (undecodable or a bad field).",
        &["outcome"],
    )
});
static COVERAGE_G: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(COVERAGE_REGIONS, "(region, bucket) coverage figures held in the coverage book.")
});

const OUTCOMES: [&str; 10] = [
    "applied",
    "revised",
    "other_size",
    "provisional",
    "unknown_sku",
    "outside_areas",
    "invalid_grid",
    "invalid_time",
    "too_old",
    "undecodable",
];

/// Registers every metric so `/metrics` lists them from the start.
pub fn register_all() {
    for o in OUTCOMES {
        WINDOWS.with_label_values(&[o]);
    }
    for r in ["THRESHOLD", "SCHEDULED", "SURGE", "REVISION"] {
        for f in ["FIRM", "PLANNING"] {
            SIGNALS.with_label_values(&[r, f]);
        }
    }
    for o in ["hit", "miss"] {
        INTERVAL.with_label_values(&[o]);
    }
    for o in ["coverage", "windows"] {
        COMPLETENESS.with_label_values(&[o]);
    }
    for o in ["counted", "skipped", "refused"] {
        COVERAGE_RECORDS.with_label_values(&[o]);
    }
    for m in [&LATENCY, &FORECAST_ERR] {
        LazyLock::force(m);
    }
    LazyLock::force(&SUPPLIER_SIGNALS);
    for m in [&SUPPRESSED, &ABSORBED, &FIRM_REVISED, &REVISION_UNITS, &HANDED_OVER] {
        LazyLock::force(m);
    }
    for m in [&SKUS_G, &CELLS_G, &PLANS_G, &BYTES, &CATALOG, &COVERAGE_G] {
        LazyLock::force(m);
    }
}

/// One DemandWindow was consumed.
#[derive(Debug, Clone, Copy)]
pub struct WindowConsumed {
    pub outcome: &'static str,
}
impl WindowConsumed {
    pub fn emit(self) {
        WINDOWS.with_label_values(&[self.outcome]).inc();
    }
}

/// Signals were decided and committed; the tally of the decisions behind them.
#[derive(Debug)]
pub struct SignalsCommitted<'a> {
    pub signals: &'a [PlanSignal],
    pub tally: Tally,
}
impl SignalsCommitted<'_> {
    pub fn emit(self) {
        for s in self.signals {
            tracing::info!(
                signal_id = s.signal_id,
                supplier = s.supplier_id,
                sku = s.sku,
                region = s.region,
                reason = ?s.reason,
                firmness = ?s.firmness,
                recommended = s.recommended_units,
                revision = s.revision,
                "plan signal"
            );
            SIGNALS.with_label_values(&[reason_label(s), firmness_label(s)]).inc();
        }
        let t = self.tally;
        SUPPRESSED.inc_by(t.suppressed);
        ABSORBED.inc_by(t.revisions_absorbed);
        FIRM_REVISED.inc_by(t.firm_plans_revised);
        REVISION_UNITS.inc_by(t.revision_units);
        SOURCES_IDLED.inc_by(t.sources_idled);
        HANDED_OVER.inc_by(t.handed_over);
        SUPERSEDED.inc_by(t.superseded);
        HELD.inc_by(t.revisions_held);
        GROUP_HELD.inc_by(t.group_changes_held);
        for e in &t.forecast_abs_errors {
            FORECAST_ERR.observe(*e);
        }
        let total = t.forecast_abs_errors.len() as u64;
        INTERVAL.with_label_values(&["hit"]).inc_by(t.forecast_hits);
        INTERVAL.with_label_values(&["miss"]).inc_by(total.saturating_sub(t.forecast_hits));
        for l in &t.latencies_ms {
            LATENCY.observe(*l as f64 / 1000.0);
        }
        COMPLETENESS.with_label_values(&["coverage"]).inc_by(t.coverage_known);
        COMPLETENESS.with_label_values(&["windows"]).inc_by(t.coverage_unknown);
    }
}

fn reason_label(s: &PlanSignal) -> &'static str {
    use nearfield_schemas::PlanReason::*;
    match s.reason {
        Threshold => "THRESHOLD",
        Scheduled => "SCHEDULED",
        Surge => "SURGE",
        Revision => "REVISION",
    }
}

fn firmness_label(s: &PlanSignal) -> &'static str {
    match s.firmness {
        nearfield_schemas::Firmness::Firm => "FIRM",
        nearfield_schemas::Firmness::Planning => "PLANNING",
    }
}

/// Periodic gauges.
#[derive(Debug)]
pub struct StateGauges {
    pub size: StateSize,
    pub catalog_skus: usize,
    /// (region, bucket) figures in the coverage book.
    pub coverage_regions: usize,
}
impl StateGauges {
    pub fn emit(self) {
        SKUS_G.set(self.size.skus as i64);
        CELLS_G.set(self.size.cells as i64);
        PLANS_G.set(self.size.plans as i64);
        BYTES.set(self.size.bytes as i64);
        let idle = self.size.idle_sources as i64;
        CLOCK_SOURCES_G.with_label_values(&["active"]).set(self.size.sources as i64 - idle);
        CLOCK_SOURCES_G.with_label_values(&["idle"]).set(idle);
        CATALOG.set(self.catalog_skus as i64);
        COVERAGE_G.set(self.coverage_regions as i64);
    }
}

/// A catalog record from `catalog.v1` was refused or undecodable.
#[derive(Debug)]
pub struct CatalogRecordRefused<'a> {
    pub key: &'a str,
    pub offset: i64,
    pub error: &'a str,
}
impl CatalogRecordRefused<'_> {
    pub fn emit(self) {
        tracing::warn!(
            sku = self.key,
            offset = self.offset,
            error = self.error,
            "catalog record refused"
        );
    }
}

/// A coverage record from `coverage.v1` was read.
#[derive(Debug)]
pub struct CoverageRecordRead<'a> {
    pub key: &'a str,
    pub offset: i64,
    /// `Ok(counted)` or the reason it was refused.
    pub outcome: Result<bool, &'a str>,
}
impl CoverageRecordRead<'_> {
    pub fn emit(self) {
        let label = match self.outcome {
            Ok(true) => "counted",
            Ok(false) => "skipped",
            Err(error) => {
                tracing::warn!(
                    key = self.key,
                    offset = self.offset,
                    error,
                    "coverage record refused"
                );
                "refused"
            }
        };
        COVERAGE_RECORDS.with_label_values(&[label]).inc();
    }
}

//! What a partition's state reports for metrics: what happened since the last flush
//! (`Tally`) and how big it is (`StateSize`).

/// What happened since the last flush, for metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// A rule would have fired for a region set thinner than the privacy floor.
    pub suppressed: u64,
    /// |actual − forecast| of one-step forecasts as buckets completed.
    pub forecast_abs_errors: Vec<f64>,
    /// How many of those actuals fell inside the interval.
    pub forecast_hits: u64,
    /// Revised windows that left a plan's recommendation unchanged.
    pub revisions_absorbed: u64,
    /// Revisions held back: the change came from fewer than `privacy_k` stores.
    pub revisions_held: u64,
    /// Region changes kept back: from fewer than `privacy_k` stores, or dominated.
    pub group_changes_held: u64,
    /// FIRM plans revised for the first time.
    pub firm_plans_revised: u64,
    /// |new − previous recommended_units| summed over revisions.
    pub revision_units: u64,
    /// Decisions that superseded the current plan of their horizon (a newer decision,
    /// not late data).
    pub superseded: u64,
    /// Milliseconds from the newest sale behind a signal to the signal.
    pub latencies_ms: Vec<i64>,
    /// Signals whose completeness came from `coverage.v1` (whole regions).
    pub coverage_known: u64,
    /// Aggregator partitions that fell silent for `source_idle_ms` and stopped holding
    /// the demand clock back.
    pub sources_idled: u64,
    /// Signals decided before the coverage of their bucket was read (completeness from
    /// the demand windows alone).
    pub coverage_unknown: u64,
    /// Decisions not taken: their horizon is planned by another deployment (a handover).
    pub handed_over: u64,
}

impl Tally {
    /// Adds `t` to this tally.
    pub fn merge(&mut self, t: Tally) {
        self.suppressed += t.suppressed;
        self.forecast_abs_errors.extend(t.forecast_abs_errors);
        self.forecast_hits += t.forecast_hits;
        self.revisions_absorbed += t.revisions_absorbed;
        self.revisions_held += t.revisions_held;
        self.group_changes_held += t.group_changes_held;
        self.firm_plans_revised += t.firm_plans_revised;
        self.revision_units += t.revision_units;
        self.superseded += t.superseded;
        self.latencies_ms.extend(t.latencies_ms);
        self.coverage_known += t.coverage_known;
        self.sources_idled += t.sources_idled;
        self.coverage_unknown += t.coverage_unknown;
        self.handed_over += t.handed_over;
    }
}

/// Sizes for the gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateSize {
    pub skus: usize,
    pub cells: usize,
    pub plans: usize,
    pub bytes: usize,
    /// Aggregator partitions the clocks follow, and of them idle.
    pub sources: usize,
    pub idle_sources: usize,
}

impl std::iter::Sum for StateSize {
    fn sum<I: Iterator<Item = StateSize>>(iter: I) -> Self {
        iter.fold(StateSize::default(), |a, b| StateSize {
            skus: a.skus + b.skus,
            cells: a.cells + b.cells,
            plans: a.plans + b.plans,
            bytes: a.bytes + b.bytes,
            sources: a.sources + b.sources,
            idle_sources: a.idle_sources + b.idle_sources,
        })
    }
}

//! Configuration of the emitter (`[emit]` in the deployment file, overridable by
//! `NEARFIELD_EMIT__*` environment variables). Validated at start with messages that name
//! the setting.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::forecast;

/// Settings of `nearfield emit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmitConfig {
    /// Listen address, group, instance id, commit interval and timeouts (the keys every
    /// exactly-once stage has).
    #[serde(flatten)]
    pub exactly_once: nearfield_eos::LoopSettings,
    /// Supplier catalog file (JSON lines of `CatalogRecord`s).
    pub catalog_file: Option<PathBuf>,
    /// Follow `catalog.v1` for catalog changes.
    pub follow_catalog_topic: bool,
    /// Follow `coverage.v1` (every grid's coverage per closed window) so a plan's
    /// completeness counts its regions' silent shops and shops holding unsent sales.
    pub follow_coverage_topic: bool,
    /// Buckets of coverage kept per region (the newest ones).
    pub coverage_keep_buckets: usize,
    /// Size of the `DemandWindow`s planned on (one of the aggregator's window sizes).
    pub bucket_ms: i64,
    /// A bucket is complete once the demand watermark passes its end + this (windows of
    /// the same bucket from slower aggregator partitions arrive within it).
    pub settle_ms: i64,
    /// Length of the planning horizon; horizons are aligned to multiples of it (UTC).
    pub horizon_ms: i64,
    /// SCHEDULED plans are made when a completed bucket ends on a multiple of this.
    pub schedule_ms: i64,
    /// Buckets of history kept per region for the forecast (default 14 days of hours).
    pub history_buckets: usize,
    /// Buckets per season of the forecast (24 hourly buckets = a daily profile).
    pub season_buckets: usize,
    /// Level smoothing of the forecast (the starting point; the best of a small grid is
    /// picked on each region's history).
    pub alpha: f64,
    /// Seasonal smoothing of the forecast (likewise).
    pub gamma: f64,
    /// Nominal coverage of the forecast interval (0.8 = p10..p90).
    pub interval_coverage: f64,
    /// Privacy floor: nothing a supplier receives is built from fewer stores than this.
    pub privacy_k: i32,
    /// H3 resolution of the regions plans are made for (7 ≈ 5 km²).
    pub region_resolution: u8,
    /// Thin regions merge into their parents down to this resolution; below it they are
    /// suppressed.
    pub min_region_resolution: u8,
    /// SURGE: a completed bucket above the forecast interval and at least this many times
    /// the point forecast…
    pub surge_factor: f64,
    /// …and at least this many units.
    pub surge_min_units: i64,
    /// FIRM needs stores_reporting / stores_expected at least this (and a season of
    /// history); otherwise PLANNING.
    pub firm_coverage: f64,
    /// The frozen time fence (EDI 830): a signal is FIRM only if its horizon ends within
    /// this of the decision (and its data are complete); beyond it, PLANNING.
    pub frozen_ms: i64,
    /// Per supplier id, its own fence (overrides `frozen_ms`).
    pub supplier_frozen_ms: std::collections::BTreeMap<String, i64>,
    /// The probability that a warehouse's demand over the lead time and the horizon stays
    /// within the recommendation (before rounding): the forecast quantile it is taken at.
    pub service_level: f64,
    /// Per supplier id, its own service level (overrides `service_level`).
    pub supplier_service_level: std::collections::BTreeMap<String, f64>,
    /// Dominance rule: no single store may account for more than this share of a
    /// published figure (bounded from the per-grid figures); 1 disables.
    pub dominance_share: f64,
    /// A warehouse plan allocates to at most this many regions: beyond, its regions are
    /// coarsened (H3 parents) until they fit.
    pub max_allocations: usize,
    /// Late data revises a plan only when its recommendation moves by at least this share
    /// (smaller moves are absorbed: a factory is not asked to re-plan for noise); 0 revises
    /// on every change.
    pub revision_tolerance: f64,
    /// How long plans stay revisable and per-grid details are kept (must exceed the
    /// aggregator's allowed lateness).
    pub revision_retention_ms: i64,
    /// When a partition receives nothing for this long (wall clock), its demand clock
    /// advances with the wall clock so schedules still fire; 0 disables.
    pub idle_advance_ms: i64,
    /// The demand clock is the lowest watermark over the aggregator partitions whose
    /// windows arrive (`source_partition`); one that sends nothing for this long (wall
    /// clock) stops holding it back until it sends again; 0 never lets one go.
    pub source_idle_ms: i64,
    /// Partitions of the plan topics the emitter creates.
    pub plan_partitions: i32,
    /// Signals kept in memory for `GET /v1/plans`.
    pub recent_signals: usize,
    /// Handing plans over to a new deployment (docs/SCALING.md): plan only horizons
    /// starting at or after this (Unix ms, a horizon start, UTC). The new deployment's
    /// setting; unset: no lower bound.
    pub horizons_from_ms: Option<i64>,
    /// Plan only horizons starting before this (Unix ms, a horizon start). The old
    /// deployment's setting, equal to the new one's `horizons_from_ms`; unset: no bound.
    pub horizons_before_ms: Option<i64>,
}

impl Default for EmitConfig {
    fn default() -> Self {
        EmitConfig {
            exactly_once: nearfield_eos::LoopSettings::stage("nearfield-emitter", 8082),
            catalog_file: None,
            follow_catalog_topic: true,
            follow_coverage_topic: true,
            coverage_keep_buckets: 24,
            bucket_ms: 3_600_000,
            settle_ms: 120_000,
            horizon_ms: 86_400_000,
            schedule_ms: 86_400_000,
            history_buckets: 672,
            season_buckets: 24,
            alpha: 0.1,
            gamma: 0.05,
            interval_coverage: 0.8,
            privacy_k: 5,
            region_resolution: 7,
            min_region_resolution: 5,
            surge_factor: 2.0,
            surge_min_units: 20,
            firm_coverage: 0.8,
            frozen_ms: 2 * 86_400_000,
            supplier_frozen_ms: std::collections::BTreeMap::new(),
            service_level: 0.9,
            supplier_service_level: std::collections::BTreeMap::new(),
            dominance_share: 0.5,
            max_allocations: 64,
            revision_tolerance: 0.05,
            revision_retention_ms: 3 * 3_600_000,
            idle_advance_ms: 600_000,
            source_idle_ms: 300_000,
            plan_partitions: 3,
            recent_signals: 500,
            horizons_from_ms: None,
            horizons_before_ms: None,
        }
    }
}

/// A setting is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("emit.{setting}: {rule}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub rule: String,
}

fn bad(setting: &'static str, rule: &str) -> Result<(), ConfigError> {
    Err(ConfigError { setting, rule: rule.into() })
}

impl EmitConfig {
    /// The exactly-once runtime's settings.
    pub fn runtime(&self) -> nearfield_eos::RuntimeConfig {
        self.exactly_once.runtime()
    }

    /// The forecast parameters.
    pub fn forecast(&self) -> forecast::Params {
        forecast::Params {
            alpha: self.alpha,
            gamma: self.gamma,
            season: self.season_buckets,
            coverage: self.interval_coverage,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err((setting, rule)) = self.exactly_once.validate() {
            return bad(setting, rule);
        }
        if self.bucket_ms < 1_000 {
            return bad("bucket_ms", "must be at least 1000 (one second)");
        }
        if self.settle_ms < 0 {
            return bad("settle_ms", "must be >= 0");
        }
        if self.horizon_ms < self.bucket_ms || self.horizon_ms % self.bucket_ms != 0 {
            return bad("horizon_ms", "must be a positive multiple of bucket_ms");
        }
        if self.schedule_ms < self.bucket_ms || self.schedule_ms % self.bucket_ms != 0 {
            return bad("schedule_ms", "must be a positive multiple of bucket_ms");
        }
        if !(2..=10_000).contains(&self.history_buckets) {
            return bad("history_buckets", "must be within 2..=10000");
        }
        if self.season_buckets == 0 || self.season_buckets > self.history_buckets {
            return bad("season_buckets", "must be within 1..=history_buckets");
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha", "must be within (0, 1)");
        }
        if !(self.gamma >= 0.0 && self.gamma < 1.0) {
            return bad("gamma", "must be within [0, 1)");
        }
        if !(self.interval_coverage > 0.0 && self.interval_coverage < 1.0) {
            return bad("interval_coverage", "must be within (0, 1)");
        }
        if self.privacy_k < 1 {
            return bad("privacy_k", "must be at least 1");
        }
        if self.region_resolution > 15 {
            return bad("region_resolution", "must be an H3 resolution (0..=15)");
        }
        if self.min_region_resolution > self.region_resolution {
            return bad("min_region_resolution", "must be <= region_resolution");
        }
        if self.surge_factor.is_nan() || self.surge_factor < 1.0 {
            return bad("surge_factor", "must be >= 1");
        }
        if self.surge_min_units < 1 {
            return bad("surge_min_units", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.firm_coverage) {
            return bad("firm_coverage", "must be within [0, 1]");
        }
        if self.frozen_ms < 0 || self.supplier_frozen_ms.values().any(|f| *f < 0) {
            return bad("frozen_ms", "must be >= 0 (also each supplier_frozen_ms)");
        }
        let level = |l: &f64| *l > 0.0 && *l < 1.0;
        if !level(&self.service_level) || !self.supplier_service_level.values().all(level) {
            return bad(
                "service_level",
                "must be within (0, 1) (also each supplier_service_level)",
            );
        }
        if !(self.dominance_share > 0.0 && self.dominance_share <= 1.0) {
            return bad("dominance_share", "must be within (0, 1] (1 disables the rule)");
        }
        if !(0.0..1.0).contains(&self.revision_tolerance) {
            return bad("revision_tolerance", "must be within [0, 1)");
        }
        if !(1..=1_000).contains(&self.max_allocations) {
            return bad("max_allocations", "must be within 1..=1000");
        }
        if self.revision_retention_ms < self.bucket_ms {
            return bad("revision_retention_ms", "must be at least bucket_ms");
        }
        if self.idle_advance_ms < 0 {
            return bad("idle_advance_ms", "must be >= 0 (0 disables)");
        }
        if self.source_idle_ms < 0 {
            return bad(
                "source_idle_ms",
                "must be >= 0 (0: a source never stops holding the clock)",
            );
        }
        if !(1..=10_000).contains(&self.coverage_keep_buckets) {
            return bad("coverage_keep_buckets", "must be within 1..=10000");
        }
        if self.plan_partitions < 1 {
            return bad("plan_partitions", "must be at least 1");
        }
        let start = |t: i64| t >= 0 && t % self.horizon_ms == 0;
        if self.horizons_from_ms.is_some_and(|t| !start(t)) {
            return bad(
                "horizons_from_ms",
                "must be a horizon start: Unix milliseconds, a multiple of horizon_ms",
            );
        }
        if self.horizons_before_ms.is_some_and(|t| !start(t)) {
            return bad(
                "horizons_before_ms",
                "must be a horizon start: Unix milliseconds, a multiple of horizon_ms",
            );
        }
        if let (Some(from), Some(before)) = (self.horizons_from_ms, self.horizons_before_ms)
            && from >= before
        {
            return bad("horizons_before_ms", "must be later than horizons_from_ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_setting() {
        EmitConfig::default().validate().expect("defaults are valid");
        let c = EmitConfig { horizon_ms: 5_000_000, ..EmitConfig::default() };
        assert_eq!(
            c.validate().expect_err("not a multiple").to_string(),
            "emit.horizon_ms: must be a positive multiple of bucket_ms"
        );
        let c = EmitConfig { privacy_k: 0, ..EmitConfig::default() };
        assert_eq!(c.validate().expect_err("k").setting, "privacy_k");
        let c = EmitConfig { min_region_resolution: 9, ..EmitConfig::default() };
        assert_eq!(c.validate().expect_err("res").setting, "min_region_resolution");
        let c = EmitConfig { alpha: 1.0, ..EmitConfig::default() };
        assert_eq!(c.validate().expect_err("alpha").setting, "alpha");
        let mut c = EmitConfig::default();
        c.supplier_service_level.insert("dairy-east".into(), 1.0);
        assert_eq!(c.validate().expect_err("level").setting, "service_level");
        let c = EmitConfig { dominance_share: 0.0, ..EmitConfig::default() };
        assert_eq!(c.validate().expect_err("share").setting, "dominance_share");
        let day = 86_400_000;
        let c = EmitConfig { horizons_before_ms: Some(20_000 * day + 1), ..EmitConfig::default() };
        assert_eq!(
            c.validate().expect_err("not a horizon start").to_string(),
            "emit.horizons_before_ms: must be a horizon start: Unix milliseconds, a multiple \
             of horizon_ms"
        );
        let c = EmitConfig { horizons_from_ms: Some(-day), ..EmitConfig::default() };
        assert_eq!(c.validate().expect_err("negative").setting, "horizons_from_ms");
        let (from, before) = (Some(20_000 * day), Some(20_000 * day));
        let c = EmitConfig { horizons_from_ms: from, horizons_before_ms: before, ..c };
        assert_eq!(c.validate().expect_err("empty").setting, "horizons_before_ms");
        let c = EmitConfig { horizons_before_ms: Some(20_001 * day), ..c };
        c.validate().expect("a day's horizons");
    }
}

//! Configuration of the aggregator (`[aggregate]` in the deployment file, overridable by
//! `NEARFIELD_AGGREGATE__*` environment variables). Validated at start with messages that
//! name the setting.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::window::Windowing;

/// Settings of `nearfield aggregate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    /// Listen address, group, instance id, commit interval and timeouts (the keys every
    /// exactly-once stage has).
    #[serde(flatten)]
    pub exactly_once: nearfield_eos::LoopSettings,
    /// Tumbling window sizes in milliseconds, ascending (default 5 min, 1 h, 1 day).
    pub windows_ms: Vec<i64>,
    /// Watermark = largest event time seen on a partition − this.
    pub out_of_orderness_ms: i64,
    /// A window closes once the watermark passes its end + grace: one value for every
    /// size, or one per size (in the order of `windows_ms`).
    pub grace_ms: PerSize,
    /// After closing, late events revise a window (revision + 1) for this long; an event
    /// goes to `sales.late.v1` only when every window of it is past this. One value for
    /// every size, or one per size (default 5 min: 10 min, 1 h: 2 h, 1 day: 48 h).
    pub allowed_lateness_ms: PerSize,
    /// A window closes at the latest this long (wall clock) after its end, even when its
    /// partition is quiet.
    pub max_close_delay_ms: i64,
    /// Window sizes whose closed windows get a `GridCoverage` record per registered grid
    /// on `coverage.v1` (each must be one of `windows_ms`). Unset: every size of 1 h or
    /// more (5-minute coverage would be 288 records per grid a day), or the largest size
    /// when all are shorter.
    pub coverage_windows_ms: Option<Vec<i64>>,
    /// The deployment's currency: revenue sums only events in it.
    pub currency: String,
    /// Most closed windows one partition emits per commit: a bucket of a million windows
    /// closes over several transactions, each far below `transaction.timeout_ms`
    /// (`nearfield_aggregator_close_backlog_windows` shows what waits).
    pub close_chunk: usize,
    /// Store registry file for `stores_expected` (inherits `ingest.stores_file`).
    pub stores_file: Option<PathBuf>,
    /// Follow `stores.v1` for registry changes.
    pub follow_stores_topic: bool,
    /// H3 resolution of grid cells (inherits `ingest.h3_resolution`).
    pub h3_resolution: Option<u8>,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            exactly_once: nearfield_eos::LoopSettings::stage("nearfield-aggregator", 8081),
            windows_ms: vec![300_000, 3_600_000, 86_400_000],
            out_of_orderness_ms: 30_000,
            grace_ms: PerSize::All(10_000),
            allowed_lateness_ms: PerSize::Each(vec![600_000, 7_200_000, 172_800_000]),
            max_close_delay_ms: 120_000,
            coverage_windows_ms: None,
            currency: "CNY".into(),
            close_chunk: 50_000,
            stores_file: None,
            follow_stores_topic: true,
            h3_resolution: None,
        }
    }
}

/// A setting given once for every window size, or once per size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerSize {
    /// The same value for every size.
    All(i64),
    /// One value per size, in the order of `windows_ms`.
    Each(Vec<i64>),
}

impl PerSize {
    /// One value per size (a list of the wrong length is kept as is for validation to
    /// name).
    pub fn per_size(&self, sizes: usize) -> Vec<i64> {
        match self {
            PerSize::All(v) => vec![*v; sizes],
            PerSize::Each(v) => v.clone(),
        }
    }
}

/// A setting is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("aggregate.{setting}: {rule}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub rule: String,
}

impl AggregateConfig {
    /// The window settings.
    pub fn windowing(&self) -> Windowing {
        Windowing {
            sizes: self.windows_ms.clone(),
            out_of_orderness: self.out_of_orderness_ms,
            grace: self.grace_ms.per_size(self.windows_ms.len()),
            allowed_lateness: self.allowed_lateness_ms.per_size(self.windows_ms.len()),
            max_close_delay: self.max_close_delay_ms,
        }
    }

    /// The sizes with coverage records (see `coverage_windows_ms`).
    pub fn coverage_sizes(&self) -> Vec<i64> {
        match &self.coverage_windows_ms {
            Some(sizes) => sizes.clone(),
            None => {
                let long: Vec<i64> =
                    self.windows_ms.iter().copied().filter(|s| *s >= 3_600_000).collect();
                if long.is_empty() {
                    self.windows_ms.iter().copied().max().into_iter().collect()
                } else {
                    long
                }
            }
        }
    }

    /// The exactly-once runtime's settings.
    pub fn runtime(&self) -> nearfield_eos::RuntimeConfig {
        self.exactly_once.runtime()
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.windowing().validate().map_err(|rule| ConfigError {
            setting: rule_setting(&rule),
            rule: rule.split_once(": ").map_or(rule.clone(), |(_, r)| r.to_string()),
        })?;
        self.exactly_once
            .validate()
            .map_err(|(setting, rule)| ConfigError { setting, rule: rule.into() })?;
        if let Some(s) = self.coverage_sizes().iter().find(|s| !self.windows_ms.contains(s)) {
            return Err(ConfigError {
                setting: "coverage_windows_ms",
                rule: format!("{s} is not one of windows_ms"),
            });
        }
        if self.windows_ms.len() > MAX_SIZES {
            return Err(ConfigError {
                setting: "windows_ms",
                rule: format!("at most {MAX_SIZES} window sizes"),
            });
        }
        if let Some(s) = self.windows_ms.iter().find(|s| **s > MAX_SIZE_MS) {
            return Err(ConfigError {
                setting: "windows_ms",
                rule: format!("{s} is longer than {MAX_SIZE_MS} ms (49 days)"),
            });
        }
        if !(1..=1_000_000).contains(&self.close_chunk) {
            return Err(ConfigError {
                setting: "close_chunk",
                rule: "must be within 1..=1000000".into(),
            });
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError {
                setting: "currency",
                rule: "must be an ISO 4217 code (three upper-case letters)".into(),
            });
        }
        Ok(())
    }
}

/// Most window sizes (a key's slot holds one position per size).
pub const MAX_SIZES: usize = 6;
/// Longest window size: event offsets in a window are 32-bit milliseconds.
pub const MAX_SIZE_MS: i64 = u32::MAX as i64;

fn rule_setting(rule: &str) -> &'static str {
    ["windows_ms", "out_of_orderness_ms", "grace_ms", "allowed_lateness_ms", "max_close_delay_ms"]
        .into_iter()
        .find(|s| rule.starts_with(s))
        .unwrap_or("windows_ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_setting() {
        AggregateConfig::default().validate().expect("defaults are valid");
        let c = AggregateConfig { windows_ms: vec![], ..AggregateConfig::default() };
        assert_eq!(c.validate().expect_err("empty").setting, "windows_ms");
        let c = AggregateConfig { grace_ms: PerSize::All(-5), ..AggregateConfig::default() };
        let e = c.validate().expect_err("negative");
        assert_eq!(e.to_string(), "aggregate.grace_ms: must be >= 0");
        let c = AggregateConfig {
            allowed_lateness_ms: PerSize::Each(vec![1, 2]),
            ..AggregateConfig::default()
        };
        let e = c.validate().expect_err("one per size");
        assert_eq!(e.setting, "allowed_lateness_ms");
        assert!(e.rule.contains("3 sizes, 2 values"), "{e}");
        let c = AggregateConfig { currency: "cny".into(), ..AggregateConfig::default() };
        assert_eq!(c.validate().expect_err("currency").setting, "currency");
        let c = AggregateConfig { close_chunk: 0, ..AggregateConfig::default() };
        assert_eq!(c.validate().expect_err("chunk").setting, "close_chunk");
        let c = AggregateConfig {
            windows_ms: vec![60 * 86_400_000],
            allowed_lateness_ms: PerSize::All(0),
            ..AggregateConfig::default()
        };
        assert!(c.validate().expect_err("size").rule.contains("49 days"));
        let mut c = AggregateConfig::default();
        c.exactly_once.commit_interval_ms = 5;
        assert_eq!(c.validate().expect_err("interval").setting, "commit_interval_ms");
    }
}

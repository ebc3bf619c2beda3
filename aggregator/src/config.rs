//! Configuration of the aggregator (`[aggregate]` in the deployment file, overridable by
//! `NEARFIELD_AGGREGATE__*` environment variables). Validated at start with messages that
//! name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::window::Windowing;

/// Settings of `nearfield aggregate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    /// HTTP listen address (live query, metrics, health).
    pub listen: SocketAddr,
    /// Consumer group of all aggregator instances.
    pub group_id: String,
    /// This instance's stable identity; its transactional id is `<group_id>-<instance_id>`.
    /// Every instance needs its own (a Kubernetes StatefulSet pod name is ideal); the
    /// default is the host name. A restarted instance with the same id fences its former
    /// self at once; a new id waits up to `transaction_timeout_ms` for its transactions.
    pub instance_id: Option<String>,
    /// Tumbling window sizes in milliseconds, ascending (default 5 min, 1 h, 1 day).
    pub windows_ms: Vec<i64>,
    /// Watermark = largest event time seen on a partition − this.
    pub out_of_orderness_ms: i64,
    /// A window closes once the watermark passes its end + grace.
    pub grace_ms: i64,
    /// After closing, late events revise a window (revision + 1) for this long; later
    /// events go to `sales.late.v1`.
    pub allowed_lateness_ms: i64,
    /// A window closes at the latest this long (wall clock) after its end, even when its
    /// partition is quiet.
    pub max_close_delay_ms: i64,
    /// How often state changes, outputs and offsets are committed in one transaction: the
    /// knob between latency and throughput.
    pub commit_interval_ms: u64,
    /// Kafka transaction timeout (how long a crashed instance's open transaction can hold
    /// back its partitions' new owner).
    pub transaction_timeout_ms: u64,
    /// Longest a partition's restore may take before the instance gives up and restarts.
    pub restore_timeout_ms: u64,
    /// The deployment's currency: revenue sums only events in it.
    pub currency: String,
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
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            group_id: "nearfield-aggregator".into(),
            instance_id: None,
            windows_ms: vec![300_000, 3_600_000, 86_400_000],
            out_of_orderness_ms: 30_000,
            grace_ms: 10_000,
            allowed_lateness_ms: 3_600_000,
            max_close_delay_ms: 120_000,
            commit_interval_ms: 500,
            transaction_timeout_ms: 10_000,
            restore_timeout_ms: 300_000,
            currency: "CNY".into(),
            stores_file: None,
            follow_stores_topic: true,
            h3_resolution: None,
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
            grace: self.grace_ms,
            allowed_lateness: self.allowed_lateness_ms,
            max_close_delay: self.max_close_delay_ms,
        }
    }

    /// The exactly-once runtime's settings.
    pub fn runtime(&self) -> nearfield_eos::RuntimeConfig {
        nearfield_eos::RuntimeConfig::from_millis(
            &self.group_id,
            self.instance_id.as_deref(),
            [self.commit_interval_ms, self.transaction_timeout_ms, self.restore_timeout_ms],
        )
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.windowing().validate().map_err(|rule| ConfigError {
            setting: rule_setting(&rule),
            rule: rule.split_once(": ").map_or(rule.clone(), |(_, r)| r.to_string()),
        })?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError { setting: "group_id", rule: "must not be empty".into() });
        }
        if !(10..=60_000).contains(&self.commit_interval_ms) {
            return Err(ConfigError {
                setting: "commit_interval_ms",
                rule: "must be within 10..=60000".into(),
            });
        }
        if self.transaction_timeout_ms < self.commit_interval_ms.saturating_mul(2) {
            return Err(ConfigError {
                setting: "transaction_timeout_ms",
                rule: "must be at least twice commit_interval_ms".into(),
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
        let c = AggregateConfig { grace_ms: -5, ..AggregateConfig::default() };
        let e = c.validate().expect_err("negative");
        assert_eq!(e.to_string(), "aggregate.grace_ms: must be >= 0");
        let c = AggregateConfig { currency: "cny".into(), ..AggregateConfig::default() };
        assert_eq!(c.validate().expect_err("currency").setting, "currency");
        let c = AggregateConfig { commit_interval_ms: 5, ..AggregateConfig::default() };
        assert_eq!(c.validate().expect_err("interval").setting, "commit_interval_ms");
    }
}

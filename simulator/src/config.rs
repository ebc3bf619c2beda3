//! Settings of `nearfield simulate` (`[simulate]` in the deployment file; `--rate` and
//! `--duration` on the command line override them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Simulator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    /// Base URL of ingest.
    pub target: String,
    /// Target events per second (at the daily peak when `daily_curve` is on).
    pub rate: f64,
    /// How long to run, seconds.
    pub duration_s: f64,
    /// Number of SKUs; popularity follows Zipf(`zipf_s`).
    pub skus: usize,
    pub zipf_s: f64,
    /// Share of events sent in batch posts (the rest as single posts).
    pub batch_share: f64,
    pub batch_min: usize,
    pub batch_max: usize,
    /// Shares of RETURN and PREORDER events (the rest are SALE).
    pub return_share: f64,
    pub preorder_share: f64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Largest device clock skew, ms (each device gets a fixed skew in ±this).
    pub clock_skew_ms: i64,
    /// Chance a store goes offline when picked; it then buffers events for
    /// `offline_ms` and uploads them late in one batch.
    pub offline_chance: f64,
    pub offline_ms: i64,
    /// Share of acknowledged requests sent once more (a device that lost the answer).
    pub duplicate_share: f64,
    /// Share of events made invalid on purpose (quantity 0, bad currency, …).
    pub invalid_share: f64,
    /// Heartbeat period per device, seconds (0: none).
    pub heartbeat_interval_s: f64,
    /// Modulate the rate by hour of day (night quiet, lunch and evening peaks).
    pub daily_curve: bool,
    /// Currency of the prices.
    pub currency: String,
    /// Random seed (same seed, same traffic shape).
    pub seed: u64,
    /// Write every acknowledged event (JSON lines) here: the ground truth for tests.
    pub acked_log: Option<PathBuf>,
    /// Store registry (defaults to ingest's `stores_file`).
    pub stores_file: Option<PathBuf>,
    /// Device master key (defaults to ingest's); simulated devices derive their keys.
    pub master_key: Option<String>,
    /// H3 resolution for the ground-truth grid ids (defaults to ingest's).
    pub h3_resolution: Option<u8>,
    /// Retries of a request answered 503/429 or not answered.
    pub max_retries: u32,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            target: "http://127.0.0.1:8080".into(),
            rate: 500.0,
            duration_s: 60.0,
            skus: 400,
            zipf_s: 1.07,
            batch_share: 0.7,
            batch_min: 10,
            batch_max: 100,
            return_share: 0.03,
            preorder_share: 0.06,
            concurrency: 64,
            clock_skew_ms: 2_000,
            offline_chance: 0.002,
            offline_ms: 60_000,
            duplicate_share: 0.01,
            invalid_share: 0.002,
            heartbeat_interval_s: 60.0,
            daily_curve: false,
            currency: "CNY".into(),
            seed: 7,
            acked_log: None,
            stores_file: None,
            master_key: None,
            h3_resolution: None,
            max_retries: 8,
        }
    }
}

/// A setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulate.{setting}: {rule}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub rule: &'static str,
}

impl SimulateConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting, rule| Err(ConfigError { setting, rule });
        if self.rate.is_nan() || self.rate <= 0.0 {
            return bad("rate", "must be > 0");
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 {
            return bad("duration_s", "must be > 0");
        }
        if self.skus == 0 {
            return bad("skus", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.batch_share) {
            return bad("batch_share", "must be 0..=1");
        }
        if self.batch_min == 0 || self.batch_max < self.batch_min {
            return bad("batch_min", "need 1 <= batch_min <= batch_max");
        }
        if self.return_share + self.preorder_share > 1.0
            || self.return_share < 0.0
            || self.preorder_share < 0.0
        {
            return bad("return_share", "return_share + preorder_share must be within 0..=1");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        Ok(())
    }
}

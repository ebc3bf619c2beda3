//! Configuration of the live page (`[live]`, `NEARFIELD_LIVE__*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of `nearfield live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Where the page is served.
    pub listen: SocketAddr,
    /// Ingest's operator port (its `/metrics`; the device port serves none).
    pub ingest_operator_url: String,
    /// Base URLs of the aggregator's and emitter's HTTP servers (metrics, `/v1/cells`,
    /// `/v1/plans`).
    pub aggregator_url: String,
    pub emitter_url: String,
    /// Catalog file for the category selector (inherits `emit.catalog_file`).
    pub catalog_file: Option<PathBuf>,
    /// Window size the map shows (default: the aggregator's smallest).
    pub window_ms: Option<i64>,
    /// How often the page refreshes, in milliseconds.
    pub refresh_ms: u64,
    /// The operator token: the page's `/api/*` need it, and it is sent to the aggregator
    /// and the emitter (set by `nearfield` from `NEARFIELD_OPERATOR_TOKEN` or
    /// `[operator] token_file`, never from this section).
    #[serde(skip)]
    pub operator_token: Option<nearfield_common::operator::OperatorToken>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            ingest_operator_url: "http://127.0.0.1:9080".into(),
            aggregator_url: "http://127.0.0.1:8081".into(),
            emitter_url: "http://127.0.0.1:8082".into(),
            catalog_file: None,
            window_ms: None,
            refresh_ms: 2000,
            operator_token: None,
        }
    }
}

/// A setting is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("live.{setting}: {rule}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub rule: String,
}

impl LiveConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (setting, url) in [
            ("ingest_operator_url", &self.ingest_operator_url),
            ("aggregator_url", &self.aggregator_url),
            ("emitter_url", &self.emitter_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError { setting, rule: "must be an http(s) URL".into() });
            }
        }
        if !(250..=60_000).contains(&self.refresh_ms) {
            return Err(ConfigError {
                setting: "refresh_ms",
                rule: "must be within 250..=60000".into(),
            });
        }
        Ok(())
    }
}

//! Configuration of the ingest stage (`[ingest]` in the deployment file, overridable by
//! `NEARFIELD_INGEST__*` environment variables). Validated at start with messages that
//! name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of `nearfield ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The device API's listen address (`/v1/*`, `/openapi.json`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// The operator port: `/metrics`, `/healthz`, `/readyz`, apart from the devices'
    /// (SPEC §5), so the device-facing listener exposes no internals.
    pub operator_listen: SocketAddr,
    /// Store registry file (JSON lines of `StoreRecord`), loaded at start; `stores.v1`
    /// keeps it current afterwards.
    pub stores_file: Option<PathBuf>,
    /// Follow the compacted `stores.v1` topic for live registry updates.
    pub follow_stores_topic: bool,
    /// Supplier catalog file (JSON lines of `CatalogRecord`; `nearfield` defaults it to
    /// `emit.catalog_file`). With one, an event whose SKU is not in the catalog is refused
    /// (422 `sku.unknown`, dead-lettered): one device cannot create demand, keys and query
    /// cost for SKUs nobody supplies. Without one, SKUs are checked by their rule only.
    pub catalog_file: Option<PathBuf>,
    /// With a catalog file, follow `catalog.v1` for SKUs added or removed live.
    pub follow_catalog_topic: bool,
    /// Hex master key from which device keys derive (see `auth`). Prefer the
    /// `NEARFIELD_INGEST__MASTER_KEY` environment variable or `master_key_file`.
    pub master_key: Option<String>,
    /// File holding the hex master key (a mounted Kubernetes Secret).
    pub master_key_file: Option<PathBuf>,
    /// The current master key's id (devices may name it in `X-Nearfield-Key-Id`).
    pub master_key_id: String,
    /// During a master-key rotation, the previous key (hex), still accepted (docs/ingest.md
    /// "Rotating the master key"); prefer `previous_master_key_file`.
    pub previous_master_key: Option<String>,
    /// File holding the previous master key.
    pub previous_master_key_file: Option<PathBuf>,
    /// The previous key's id; required with a previous key, and different from
    /// `master_key_id`.
    pub previous_master_key_id: Option<String>,
    /// H3 resolution of a grid cell (8 ≈ 0.7 km²).
    pub h3_resolution: u8,
    /// Request and event limits.
    pub limits: Limits,
    /// Per-store rate limit.
    pub rate_limit: RateLimit,
    /// Accepted ISO 4217 currencies; empty accepts any three upper-case letters.
    pub currencies: Vec<String>,
    /// How long a request waits for Kafka's acknowledgement before answering 503.
    pub produce_timeout_ms: u64,
    /// On shutdown, how long in-flight requests may take to finish and the producer to
    /// flush.
    pub shutdown_grace_ms: u64,
    /// Largest rejected payload copied to `sales.dlq.v1`, in bytes.
    pub dlq_payload_max_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            operator_listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
            stores_file: None,
            follow_stores_topic: true,
            catalog_file: None,
            follow_catalog_topic: true,
            master_key: None,
            master_key_file: None,
            master_key_id: "1".into(),
            previous_master_key: None,
            previous_master_key_file: None,
            previous_master_key_id: None,
            h3_resolution: 8,
            limits: Limits::default(),
            rate_limit: RateLimit::default(),
            currencies: Vec::new(),
            produce_timeout_ms: 10_000,
            shutdown_grace_ms: 15_000,
            dlq_payload_max_bytes: 16 * 1024,
        }
    }
}

/// Request and event limits (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Longest id string (event_id, sku), in bytes; ids follow `nearfield_common::ids`.
    pub max_id_len: usize,
    /// Largest quantity of one event.
    pub max_quantity: i32,
    /// Largest unit price in minor units.
    pub max_unit_price_minor: i64,
    /// How far occurred_at may be ahead of the ingest clock (device clock skew), ms.
    pub max_future_skew_ms: i64,
    /// How old occurred_at may be (offline devices uploading late), ms. Unset, it is the
    /// aggregator's horizon, which `nearfield` derives from `[aggregate]` (the widest
    /// window plus its grace and allowed lateness, out-of-orderness and max close delay)
    /// since no window would count an older event; without one it is
    /// [`DEFAULT_MAX_EVENT_AGE_MS`]. Set it higher only to backfill history into a
    /// deployment before live traffic.
    pub max_event_age_ms: Option<i64>,
    /// How far a request signature's timestamp may be from the ingest clock, ms.
    pub replay_window_ms: i64,
    /// Signatures remembered to refuse a replay within the window; when full of live
    /// ones, requests get 503 + Retry-After.
    pub replay_cache_entries: usize,
    /// How long reading a request's body may take (a slow sender gets 408), ms.
    pub body_timeout_ms: u64,
    /// Requests handled at once; past it, 503 + Retry-After.
    pub max_concurrent_requests: usize,
    /// Request-body bytes held at once (admitted by `Content-Length`, or the body limit
    /// when unknown); past it, 503 + Retry-After.
    pub max_inflight_bytes: usize,
    /// Connections open at once on the device port; past it, 503 + Retry-After and close.
    pub max_connections: usize,
    /// How long a client may take to send a request line and headers (and how long an
    /// idle keep-alive connection stays open), ms.
    pub header_read_timeout_ms: u64,
    /// Largest request line + headers, bytes (at least 8192); past it, 431.
    pub max_head_bytes: usize,
    /// Most header fields in a request; past it, 431.
    pub max_headers: usize,
    /// Most units (any kind) one store may send per window of `store_window_ms` of
    /// occurred_at, per ingest instance; past it, 422 `quantity.store_window_cap`
    /// (dead-lettered). 0: no cap.
    pub max_store_units_per_window: u64,
    /// The window of `max_store_units_per_window` (and of returns-beyond-sales), ms.
    pub store_window_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_batch_events: 1_000,
            max_id_len: 64,
            max_quantity: 10_000,
            max_unit_price_minor: 1_000_000_000,
            max_future_skew_ms: 5 * 60_000,
            max_event_age_ms: None,
            replay_window_ms: 5 * 60_000,
            replay_cache_entries: 2_000_000,
            body_timeout_ms: 10_000,
            max_concurrent_requests: 4_096,
            max_inflight_bytes: 256 << 20,
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_store_units_per_window: 100_000,
            store_window_ms: 3_600_000,
        }
    }
}

/// The horizon of the default aggregator settings (1 day + 10 s grace + 48 h lateness +
/// 30 s out-of-orderness + 2 min close delay), for an ingest run without them.
pub const DEFAULT_MAX_EVENT_AGE_MS: i64 = 86_400_000 + 10_000 + 172_800_000 + 30_000 + 120_000;

impl Limits {
    /// How old occurred_at may be, ms.
    pub fn max_event_age_ms(&self) -> i64 {
        self.max_event_age_ms.unwrap_or(DEFAULT_MAX_EVENT_AGE_MS)
    }
}

/// Token bucket per store: `events_per_second` refill, `burst` capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub events_per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { events_per_second: 100.0, burst: 2_000.0 }
    }
}

/// A setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ingest.{setting}: {rule}")]
pub struct ConfigError {
    /// Dotted name of the setting under `[ingest]`.
    pub setting: &'static str,
    /// The rule it breaks.
    pub rule: String,
}

impl IngestConfig {
    /// Checks every setting; the error names the setting and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting, rule: &str| Err(ConfigError { setting, rule: rule.into() });
        if self.h3_resolution > 15 {
            return err("h3_resolution", "must be 0..=15");
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            return err("limits.max_body_bytes", "must be at least 1024");
        }
        if l.max_batch_events == 0 {
            return err("limits.max_batch_events", "must be at least 1");
        }
        if !(8..=256).contains(&l.max_id_len) {
            return err("limits.max_id_len", "must be 8..=256");
        }
        if l.max_quantity < 1 {
            return err("limits.max_quantity", "must be at least 1");
        }
        if l.max_future_skew_ms < 0 || l.max_event_age_ms() <= 0 || l.replay_window_ms <= 0 {
            return err("limits", "time windows must be positive");
        }
        if l.replay_cache_entries == 0 || l.body_timeout_ms == 0 || l.max_concurrent_requests == 0 {
            return err(
                "limits",
                "replay_cache_entries, body_timeout_ms and max_concurrent_requests must be positive",
            );
        }
        if l.max_connections == 0 || l.header_read_timeout_ms == 0 || l.max_headers < 8 {
            return err(
                "limits",
                "max_connections and header_read_timeout_ms must be positive, max_headers at least 8",
            );
        }
        if l.store_window_ms < 1_000 {
            return err("limits.store_window_ms", "must be at least 1000");
        }
        if l.max_head_bytes < nearfield_common::serve::MIN_HEAD_BYTES {
            return err("limits.max_head_bytes", "must be at least 8192");
        }
        if self.operator_listen == self.listen && self.listen.port() != 0 {
            return err(
                "operator_listen",
                "must differ from listen (metrics stay off the device port)",
            );
        }
        if l.max_inflight_bytes < l.max_body_bytes {
            return err("limits.max_inflight_bytes", "must be at least max_body_bytes");
        }
        if !(self.rate_limit.events_per_second > 0.0 && self.rate_limit.burst >= 1.0) {
            return err("rate_limit", "events_per_second must be > 0 and burst >= 1");
        }
        if let Some(c) = self.currencies.iter().find(|c| !is_currency_code(c)) {
            return Err(ConfigError {
                setting: "currencies",
                rule: format!("{c:?} is not three upper-case letters"),
            });
        }
        if self.master_key.is_none() && self.master_key_file.is_none() {
            return err(
                "master_key",
                "set master_key, master_key_file or NEARFIELD_INGEST__MASTER_KEY",
            );
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return err(
                "master_key",
                "master_key and master_key_file are both set; set exactly one (neither wins)",
            );
        }
        if self.previous_master_key.is_some() && self.previous_master_key_file.is_some() {
            return err(
                "previous_master_key",
                "previous_master_key and previous_master_key_file are both set; set exactly one",
            );
        }
        let id_ok = |id: &str| nearfield_common::ids::check(id, 64).is_ok();
        if !id_ok(&self.master_key_id) {
            return err("master_key_id", "must be 1 to 64 of [A-Za-z0-9._:-]");
        }
        let previous =
            self.previous_master_key.is_some() || self.previous_master_key_file.is_some();
        match (&self.previous_master_key_id, previous) {
            (None, true) => return err("previous_master_key_id", "required with a previous key"),
            (Some(_), false) => {
                return err("previous_master_key_id", "set without a previous key");
            }
            (Some(id), true) if !id_ok(id) || *id == self.master_key_id => {
                return err(
                    "previous_master_key_id",
                    "must be 1 to 64 of [A-Za-z0-9._:-] and differ from master_key_id",
                );
            }
            _ => {}
        }
        if self.produce_timeout_ms == 0 {
            return err("produce_timeout_ms", "must be positive");
        }
        Ok(())
    }
}

/// Three upper-case ASCII letters.
pub fn is_currency_code(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

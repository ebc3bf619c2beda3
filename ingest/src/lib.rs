//! Ingest: store devices → Kafka, durable, authenticated, never losing an acked event.
//!
//! Devices POST signed sale events; ingest authenticates the device against the store
//! registry, validates every event, and publishes accepted ones to `sales.v1` (key:
//! grid_id) and rejected ones to `sales.dlq.v1` with the reason. A device hears "accepted"
//! only after Kafka acknowledged the write (`acks=all`, idempotent producer).
//!
//! # Layout
//! - [`config`]: settings and their validation.
//! - [`auth`]: device keys and request signatures.
//! - [`registry`]: store registry (file + `stores.v1`), grid assignment with H3.
//! - [`body`]: request body parsers (JSON, NDJSON, Avro batches).
//! - [`json`]: strict JSON (a key named twice is refused).
//! - [`validate`]: the per-event rules.
//! - [`heartbeat`]: the heartbeat body and its rules.
//! - [`ratelimit`]: per-store token buckets.
//! - [`replay`]: each request signature accepted once within the replay window.
//! - [`storecaps`]: units per store and window (the per-store cap, returns beyond sales).
//! - [`kafka`]: the durable producer (the registry follower is `nearfield_common::stores`).
//! - [`http`]: routes and handlers.
//! - [`internal_events`]: logs and metrics.

pub mod auth;
pub mod body;
pub mod config;
pub mod heartbeat;
pub mod http;
pub mod internal_events;
pub mod json;
pub mod kafka;
pub mod ratelimit;
pub mod registry;
pub mod replay;
pub mod storecaps;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nearfield_common::http::Readiness;
use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use nearfield_schemas::Codec;

pub use config::IngestConfig;

/// Ingest could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Key(#[from] auth::KeyError),
    #[error("ingest.master_key_file: {0}")]
    KeyFile(std::io::Error),
    #[error("store registry: {0}")]
    Registry(#[from] registry::RegistryError),

    #[error("registry file: {0}")]
    File(#[from] nearfield_common::jsonl::FileError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("ingest.{setting} {addr}: {source}")]
    Bind { setting: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// A started ingest server.
#[derive(Debug)]
pub struct Running {
    /// The device port's address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The operator port's address (`/metrics`).
    pub operator_addr: SocketAddr,
    /// Resolves when the server stopped and the producer flushed.
    pub done: tokio::task::JoinHandle<Result<(), IngestError>>,
}

/// Runs ingest until `shutdown` is cancelled, then drains requests and flushes.
pub async fn run(
    config: IngestConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let running = start(config, kafka, shutdown).await?;
    running.done.await.unwrap_or_else(|e| Err(IngestError::Serve(std::io::Error::other(e))))
}

/// A master key from its hex setting or its file (at most one is set: the config's
/// validation says so); the public demo key only on a loopback listen address.
fn read_key(
    config: &IngestConfig,
    setting: &'static str,
    hex: Option<&String>,
    file: Option<&std::path::PathBuf>,
) -> Result<Option<auth::MasterKey>, IngestError> {
    let key = match (hex, file) {
        (Some(hex), None) => auth::MasterKey::from_hex(hex)?,
        (None, Some(path)) => auth::MasterKey::from_hex(
            &std::fs::read_to_string(path).map_err(IngestError::KeyFile)?,
        )?,
        (None, None) => return Ok(None),
        _ => {
            let rule = format!("set exactly one of {setting} and {setting}_file");
            return Err(config::ConfigError { setting, rule }.into());
        }
    };
    if key.is_demo() && !config.listen.ip().is_loopback() {
        let rule = format!(
            "the public demo key (deploy/examples) is refused on {}, which is not loopback; \
             generate one (openssl rand -hex 32) into master_key_file",
            config.listen
        );
        return Err(config::ConfigError { setting, rule }.into());
    }
    Ok(Some(key))
}

/// The current master key (exactly one of `master_key` / `master_key_file`).
fn master_key(config: &IngestConfig) -> Result<auth::MasterKey, IngestError> {
    read_key(config, "master_key", config.master_key.as_ref(), config.master_key_file.as_ref())?
        .ok_or_else(|| {
            let rule = "set exactly one of master_key and master_key_file".into();
            config::ConfigError { setting: "master_key", rule }.into()
        })
}

/// The current master key and, during a rotation, the previous one, with their ids.
fn master_keys(config: &IngestConfig) -> Result<registry::MasterKeys, IngestError> {
    let current = (config.master_key_id.clone(), master_key(config)?);
    let previous = read_key(
        config,
        "previous_master_key",
        config.previous_master_key.as_ref(),
        config.previous_master_key_file.as_ref(),
    )?
    .map(|k| (config.previous_master_key_id.clone().unwrap_or_default(), k));
    if previous.is_some() {
        tracing::info!(
            current = %current.0,
            previous = ?config.previous_master_key_id,
            "master-key rotation: devices on either key are accepted"
        );
    }
    Ok(registry::MasterKeys { current, previous })
}

/// Starts ingest and returns once it listens.
pub async fn start(
    config: IngestConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<Running, IngestError> {
    config.validate()?;
    internal_events::register_all();
    let resolution = h3o::Resolution::try_from(config.h3_resolution)
        .map_err(|e| config::ConfigError { setting: "h3_resolution", rule: e.to_string() })?;
    let registry = Arc::new(registry::Registry::with_keys(master_keys(&config)?, resolution));
    if let Some(path) = &config.stores_file {
        let n = registry.load_file(path)?;
        tracing::info!(stores = n, file = %path.display(), "store registry loaded");
    }
    internal_events::RegistrySize { stores: registry.len() }.emit();
    let mut followers = Vec::new();
    if config.follow_stores_topic {
        followers.push(nearfield_common::stores::follow(
            &kafka,
            kafka.topics.stores.clone(),
            Arc::clone(&registry) as Arc<dyn nearfield_common::stores::StoreSink>,
        )?);
    }
    let catalog = match &config.catalog_file {
        None => None,
        Some(path) => {
            let catalog = Arc::new(nearfield_common::catalog::Catalog::default());
            let n = catalog.load_file(path)?;
            tracing::info!(skus = n, file = %path.display(), "catalog loaded: unknown SKUs are refused");
            if config.follow_catalog_topic {
                let on_refused = |key: &str, offset: i64, error: &str| {
                    tracing::warn!(sku = key, offset, error, "catalog record refused");
                };
                followers.push(nearfield_common::catalog::follow(
                    &kafka,
                    Arc::clone(&catalog),
                    on_refused,
                )?);
            }
            Some(catalog)
        }
    };
    let publisher =
        kafka::Publisher::new(&kafka, Duration::from_millis(config.produce_timeout_ms))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngestError::Bind { setting: "listen", addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(IngestError::Serve)?;
    let addr = config.operator_listen;
    let operator = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| IngestError::Bind { setting: "operator_listen", addr, source })?;
    let operator_addr = operator.local_addr().map_err(IngestError::Serve)?;
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let limits = config.limits.clone();
    let state = Arc::new(http::AppState {
        limiter: ratelimit::RateLimiter::new(&config.rate_limit),
        topics: kafka.topics.clone(),
        config,
        registry: Arc::clone(&registry),
        publisher: publisher.clone(),
        codec: Codec::single_object(),
        draining: AtomicBool::new(false),
        replays: replay::ReplayCache::new(limits.replay_cache_entries, limits.replay_window_ms),
        requests: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests)),
        inflight_bytes: Arc::new(tokio::sync::Semaphore::new(
            limits.max_inflight_bytes.min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        catalog,
        windows: storecaps::StoreWindows::new(
            limits.store_window_ms,
            limits.max_store_units_per_window,
        ),
    });
    let readiness = Readiness::default();
    tokio::spawn(readiness_loop(Arc::clone(&state), readiness.clone(), shutdown.clone()));
    let app = http::router(Arc::clone(&state), readiness.clone());
    let edge = nearfield_common::serve::EdgeLimits {
        max_connections: limits.max_connections,
        header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
        max_head_bytes: limits.max_head_bytes,
        max_headers: limits.max_headers,
    };
    let ops = axum::serve(operator, http::operator_router(readiness.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let ops = tokio::spawn(async move { ops.await });
    tracing::info!(%local_addr, %operator_addr, "ingest listening (devices; operator: /metrics)");

    let done = tokio::spawn(async move {
        let drain = {
            let state = Arc::clone(&state);
            let readiness = readiness.clone();
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                state.draining.store(true, Ordering::Release);
                readiness.set(false);
                tracing::info!("ingest draining: refusing new requests, finishing in-flight ones");
            }
        };
        let events = Arc::new(internal_events::Edge);
        let served = nearfield_common::serve::serve(listener, app, edge, events, drain).await;
        // Every request has been answered; flush whatever is still queued (records whose
        // request timed out) so nothing acknowledged later is lost.
        let p = state.publisher.clone();
        let left = tokio::task::spawn_blocking(move || p.flush(grace)).await.unwrap_or(-1);
        if left != 0 {
            tracing::warn!(
                left,
                "producer not fully flushed at shutdown; those requests were answered 503"
            );
        }
        for f in followers {
            f.stop().await;
        }
        let ops = ops.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        tracing::info!("ingest stopped");
        served.and(ops).map_err(IngestError::Serve)
    });
    Ok(Running { local_addr, operator_addr, done })
}

async fn readiness_loop(
    state: Arc<http::AppState>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    loop {
        let p = state.publisher.clone();
        let topic = state.topics.sales.clone();
        let reachable =
            tokio::task::spawn_blocking(move || p.reachable(&topic)).await.unwrap_or(false);
        let ready =
            reachable && !state.registry.is_empty() && !state.draining.load(Ordering::Acquire);
        if ready != readiness.get() {
            tracing::info!(
                ready,
                kafka_reachable = reachable,
                stores = state.registry.len(),
                "readiness changed"
            );
        }
        readiness.set(ready);
        internal_events::QUEUE_DEPTH.set(i64::from(state.publisher.in_flight()));
        let now = nearfield_common::time::now_ms();
        state.replays.prune(now);
        let l = &state.config.limits;
        state
            .windows
            .prune(now.saturating_sub(l.max_event_age_ms()).saturating_sub(l.store_window_ms));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(if ready { 5 } else { 1 })) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_key_is_refused_off_loopback_and_one_key_source_only() {
        let demo = IngestConfig {
            master_key: Some(auth::DEMO_MASTER_KEY_HEX.into()),
            ..IngestConfig::default()
        };
        assert!(master_key(&demo).expect("loopback is fine").is_demo());
        let exposed = IngestConfig { listen: "0.0.0.0:8080".parse().expect("addr"), ..demo };
        let e = master_key(&exposed).expect_err("refused").to_string();
        assert!(e.contains("master_key") && e.contains("demo key"), "{e}");
        let own = IngestConfig { master_key: Some("ab".repeat(32)), ..exposed.clone() };
        assert!(!master_key(&own).expect("a key of its own").is_demo());
        let both = IngestConfig { master_key_file: Some("/k".into()), ..own.clone() };
        let e = both.validate().expect_err("both").to_string();
        assert!(e.contains("master_key") && e.contains("both"), "{e}");
    }

    #[test]
    fn a_rotation_names_both_keys_and_refuses_the_demo_key_as_the_previous_one() {
        let base = IngestConfig {
            master_key: Some("ab".repeat(32)),
            master_key_id: "2".into(),
            listen: "0.0.0.0:8080".parse().expect("addr"),
            ..IngestConfig::default()
        };
        let rotating = IngestConfig {
            previous_master_key: Some("cd".repeat(32)),
            previous_master_key_id: Some("1".into()),
            ..base.clone()
        };
        rotating.validate().expect("valid");
        let keys = master_keys(&rotating).expect("keys");
        assert_eq!(keys.current.0, "2");
        assert_eq!(keys.previous.as_ref().map(|p| p.0.as_str()), Some("1"));
        let unnamed = IngestConfig { previous_master_key_id: None, ..rotating.clone() };
        assert!(unnamed.validate().expect_err("id").to_string().contains("previous_master_key_id"));
        let same = IngestConfig { previous_master_key_id: Some("2".into()), ..rotating.clone() };
        assert!(same.validate().is_err(), "ids must differ");
        let demo = IngestConfig {
            previous_master_key: Some(auth::DEMO_MASTER_KEY_HEX.into()),
            ..rotating
        };
        let e = master_keys(&demo).expect_err("demo key off loopback").to_string();
        assert!(e.contains("previous_master_key") && e.contains("demo key"), "{e}");
    }
}

//! Aggregator: exactly-once windowed demand per grid × SKU (SPEC §6).
//!
//! A consumer-group member on `sales.v1` (and the co-partitioned `heartbeats.v1`) that
//! keeps counters per grid × SKU × window in memory, per input partition, and writes
//! closed windows as `DemandWindow`s to `demand.v1`, in Kafka transactions that also hold
//! the input offsets and a compacted changelog of every state change. State moves with
//! partitions: a new owner restores it from the changelog before processing. More
//! instances in the group is how it scales. The exactly-once machinery is
//! `nearfield-eos`; this crate is what is the aggregator's own.
//!
//! # Layout
//! - [`config`]: settings and their validation.
//! - [`window`]: window assignment, watermarks, close and lateness (pure arithmetic).
//! - [`ids`]: grid × SKU, event, store and grid identities, and their hasher.
//! - [`counters`]: the counters of one window.
//! - [`state`]: one partition's counters, de-duplication and completeness.
//! - [`changelog`]: the changelog record codec (versioned, with goldens).
//! - [`stores`]: active stores per grid (`stores_expected`).
//! - [`stage`]: the aggregator as a `nearfield_eos::Stage`.
//! - [`query`]: the live query, answered on the loop's thread.
//! - [`http`]: live query routes.
//! - [`internal_events`]: logs and metrics.

pub mod changelog;
pub mod config;
pub mod counters;
pub mod http;
pub mod ids;
pub mod internal_events;
pub mod query;
pub mod stage;
pub mod state;
pub mod stores;
pub mod window;

use std::net::SocketAddr;
use std::sync::Arc;

use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use nearfield_common::stores::StoreSink;
use nearfield_eos::{Queries, SharedStatus, Wiring};
use nearfield_schemas::RejectSource;

pub use config::AggregateConfig;

/// The aggregator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("store registry: {0}")]
    StoreFile(#[from] nearfield_common::stores::StoreFileError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("aggregator: {0}")]
    Loop(#[from] nearfield_eos::EosError),
    #[error("aggregator: {0}")]
    Serve(#[from] nearfield_eos::http::ServeError),
    #[error("aggregate.listen {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A started aggregator.
#[derive(Debug)]
pub struct Running {
    /// The HTTP address (useful with port 0).
    pub local_addr: SocketAddr,
    /// What the loop publishes: owned partitions, restore progress, readiness.
    pub status: SharedStatus,
    /// Questions for the loop (the live query; tests and benchmarks).
    pub queries: Queries<query::Query, query::Answer>,
    /// Resolves when the loop committed its last transaction and the server stopped.
    pub done: tokio::task::JoinHandle<Result<(), AggregateError>>,
}

/// Runs the aggregator until `shutdown` is cancelled, then commits and leaves the group.
pub async fn run(
    config: AggregateConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<(), AggregateError> {
    let running = start(config, kafka, shutdown).await?;
    running.done.await.unwrap_or_else(|e| {
        Err(AggregateError::Bind { addr: running.local_addr, source: std::io::Error::other(e) })
    })
}

/// Starts the aggregator and returns once its HTTP server listens.
pub async fn start(
    config: AggregateConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<Running, AggregateError> {
    config.validate()?;
    internal_events::register_all();
    let resolution = h3o::Resolution::try_from(config.h3_resolution.unwrap_or(8))
        .map_err(|e| config::ConfigError { setting: "h3_resolution", rule: e.to_string() })?;
    let directory = Arc::new(stores::GridDirectory::new(resolution));
    if let Some(path) = &config.stores_file {
        let n = nearfield_common::stores::load_file(path, &*directory)?;
        tracing::info!(stores = n, file = %path.display(), "store registry loaded");
    }
    let follower = if config.follow_stores_topic {
        Some(nearfield_common::stores::follow(
            &kafka,
            kafka.topics.stores.clone(),
            Arc::clone(&directory) as Arc<dyn StoreSink>,
        )?)
    } else {
        None
    };
    kafka.ensure_topics(&kafka.topic_specs()).await?;
    let state_cfg = Arc::new(state::StateConfig {
        windowing: config.windowing(),
        currency: config.currency.clone(),
    });
    let t = &kafka.topics;
    let wiring = Wiring {
        input: t.sales.clone(),
        changelog: t.aggregator_changelog.clone(),
        side_inputs: vec![t.heartbeats.clone()],
        outputs: vec![t.demand.clone(), t.late.clone()],
        dlq: t.dlq.clone(),
        reject_source: RejectSource::Aggregator,
    };
    let stage = Arc::new(stage::Aggregator::new(state_cfg, directory, t.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AggregateError::Bind { addr: config.listen, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| AggregateError::Bind { addr: config.listen, source })?;
    let runtime =
        nearfield_eos::spawn(stage, wiring, config.runtime(), kafka, None, shutdown.clone())?;
    let (status, queries) = (Arc::clone(&runtime.status), runtime.queries.clone());
    let api = http::Api { queries: queries.clone(), sizes: Arc::new(config.windows_ms.clone()) };
    let app = http::router(api).merge(nearfield_eos::http::ops(Arc::clone(&status)));
    tracing::info!(%local_addr, "aggregator listening");
    let done = tokio::spawn(async move {
        let served = nearfield_eos::http::serve(listener, app, runtime, shutdown).await;
        if let Some(f) = follower {
            f.stop().await;
        }
        tracing::info!("aggregator stopped");
        Ok(served?)
    });
    Ok(Running { local_addr, status, queries, done })
}

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
//! - [`digest`]: the output digest the benchmark compares systems on.
//! - [`state`]: one partition's counters, de-duplication and completeness.
//! - [`changelog`]: the changelog record codec (versioned, with goldens).
//! - [`stores`]: active stores per grid (`stores_expected`).
//! - [`stage`]: the aggregator as a `nearfield_eos::Stage`.
//! - [`late`]: `nearfield replay --late`, corrections from `sales.late.v1`.
//! - [`query`]: the live query, answered on the loop's thread.
//! - [`http`]: live query routes.
//! - [`internal_events`]: logs and metrics.

pub mod changelog;
pub mod config;
pub mod counters;
pub mod digest;
pub mod http;
pub mod ids;
pub mod internal_events;
pub mod late;
pub mod query;
pub mod stage;
pub mod state;
pub mod stores;
pub mod window;

use std::sync::Arc;

use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use nearfield_common::stores::StoreSink;
use nearfield_eos::http::Launch;
use nearfield_eos::{Queries, Wiring};
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
}

/// A started aggregator (`done` resolves when it committed its last transaction and its
/// server stopped).
pub type Running = nearfield_eos::http::Launched<stage::Aggregator>;

/// Starts the aggregator and returns once its HTTP server listens; it runs until
/// `shutdown` is cancelled (then commits and leaves the group) or a fatal error.
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
        close_chunk: config.close_chunk,
        coverage: {
            let sizes = config.coverage_sizes();
            config.windows_ms.iter().map(|s| sizes.contains(s)).collect()
        },
    });
    let t = &kafka.topics;
    let wiring = Wiring {
        input: t.sales.clone(),
        changelog: Some(t.aggregator_changelog.clone()),
        side_inputs: vec![t.heartbeats.clone()],
        outputs: vec![t.demand.clone(), t.late.clone(), t.coverage.clone()],
        dlq: Some(t.dlq.clone()),
        reject_source: RejectSource::Aggregator,
    };
    let stage = Arc::new(stage::Aggregator::new(state_cfg, directory, t.clone()));
    let sizes = Arc::new(config.windows_ms.clone());
    let launch = Launch {
        stage,
        wiring,
        config: config.runtime(),
        settings: kafka,
        create: None,
        listen: config.exactly_once.listen,
        operator_token: config.exactly_once.operator_token.clone(),
        // Suppliers see plans, never per-grid figures.
        supplier_tokens: Default::default(),
        listen_setting: "aggregate.listen",
    };
    let routes = |q: &Queries<query::Query, query::Answer>, plane| {
        http::router(http::Api { queries: q.clone(), plane, sizes, resolution })
    };
    Ok(nearfield_eos::http::launch(launch, routes, follower.into_iter().collect(), shutdown)
        .await?)
}

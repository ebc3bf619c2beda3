//! Aggregator: exactly-once windowed demand per grid × SKU (SPEC §6).
//!
//! A consumer-group member on `sales.v1` (and the co-partitioned `heartbeats.v1`) that
//! keeps counters per grid × SKU × window in memory, per input partition, and writes
//! closed windows as `DemandWindow`s to `demand.v1`, in Kafka transactions that also hold
//! the input offsets and a compacted changelog of every state change. State moves with
//! partitions: a new owner restores it from the changelog before processing. More
//! instances in the group is how it scales.
//!
//! # Layout
//! - [`config`]: settings and their validation.
//! - [`window`]: window assignment, watermarks, close and lateness (pure arithmetic).
//! - [`state`]: one partition's counters, de-duplication and completeness.
//! - [`changelog`]: how state is written to and read back from the changelog topic.
//! - [`stores`]: active stores per grid (`stores_expected`).
//! - [`kafka`]: the transactional consume → process → produce loop, restore, rebalance.
//! - [`http`]: live query and ops endpoints.
//! - [`internal_events`]: logs and metrics.

pub mod changelog;
pub mod config;
pub mod http;
pub mod internal_events;
pub mod kafka;
pub mod state;
pub mod stores;
pub mod window;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nearfield_common::http::Readiness;
use nearfield_common::kafka::KafkaSettings;
use nearfield_common::shutdown::CancellationToken;
use nearfield_common::stores::StoreSink;

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
    #[error("aggregator loop: {0}")]
    Loop(#[from] kafka::LoopError),
    #[error("aggregate.listen {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// A started aggregator.
#[derive(Debug)]
pub struct Running {
    /// The HTTP address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The state, for tests and the live page.
    pub engine: kafka::SharedEngine,
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
    running.done.await.unwrap_or_else(|e| Err(AggregateError::Serve(std::io::Error::other(e))))
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
    let stop = Arc::new(AtomicBool::new(false));
    let follower = if config.follow_stores_topic {
        Some(nearfield_common::stores::follow(
            &kafka,
            kafka.topics.stores.clone(),
            Arc::clone(&directory) as Arc<dyn StoreSink>,
            Arc::clone(&stop),
        )?)
    } else {
        None
    };
    kafka.ensure_topics(&kafka.topic_specs()).await?;
    let state_cfg = Arc::new(state::StateConfig {
        windowing: config.windowing(),
        currency: config.currency.clone(),
    });
    let engine = Arc::new(Mutex::new(kafka::Engine::new(state_cfg)));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AggregateError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(AggregateError::Serve)?;
    let readiness = Readiness::default();
    let app = http::router(Arc::clone(&engine), readiness.clone());
    tracing::info!(%local_addr, "aggregator listening");

    let worker = {
        let (engine, directory, stop) =
            (Arc::clone(&engine), Arc::clone(&directory), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || kafka::run_loop(kafka, config, engine, directory, stop))
            .map_err(AggregateError::Serve)?
    };
    let done = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let ready_loop = {
                let (engine, readiness, shutdown) =
                    (Arc::clone(&engine), readiness.clone(), shutdown.clone());
                async move {
                    loop {
                        let ready = engine.lock().map(|e| e.ready).unwrap_or(false);
                        readiness.set(ready && !shutdown.is_cancelled());
                        tokio::select! {
                            () = shutdown.cancelled() => { readiness.set(false); return; }
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            };
            let serve = axum::serve(listener, app).with_graceful_shutdown({
                let shutdown = shutdown.clone();
                async move { shutdown.cancelled().await }
            });
            let (served, ()) = tokio::join!(serve, ready_loop);
            stop.store(true, Ordering::Relaxed);
            let looped = tokio::task::spawn_blocking(move || worker.join())
                .await
                .map_err(|e| AggregateError::Serve(std::io::Error::other(e)))?
                .map_err(|_| {
                    AggregateError::Serve(std::io::Error::other("aggregator thread panicked"))
                })?;
            if let Some(f) = follower {
                let _ = tokio::task::spawn_blocking(move || f.join()).await;
            }
            tracing::info!("aggregator stopped");
            served.map_err(AggregateError::Serve)?;
            looped.map_err(AggregateError::from)
        })
    };
    Ok(Running { local_addr, engine, done })
}

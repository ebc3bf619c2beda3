//! Emitter: from closed demand windows to production-plan signals (SPEC §7).
//!
//! A consumer-group member on `demand.v1` (read_committed) that rolls each SKU's grids up
//! to its supplier's warehouses and regions (with a privacy floor of `k` stores),
//! forecasts the next horizon, and writes a `PlanSignal` to `plan.<supplier>.v1` when
//! accumulated demand reaches the MOQ (THRESHOLD), on a schedule (SCHEDULED), on a surge
//! above the forecast (SURGE), or when late data changes a plan (REVISION). Exactly once,
//! like the aggregator: state changes, signals and input offsets commit in one
//! transaction, and state moves with partitions through a changelog.
//!
//! # Layout
//! - [`config`]: settings and their validation.
//! - [`catalog`]: the supplier catalog (file + `catalog.v1`).
//! - [`forecast`]: Holt–Winters with a daily profile and a prediction interval.
//! - [`state`]: one partition's planning state: roll-up, privacy floor, decisions.
//! - [`kafka`]: the transactional consume → decide → produce loop, restore, rebalance.
//! - [`http`]: recent signals and ops endpoints.
//! - [`internal_events`]: logs and metrics.
//! - [`synthetic`]: deterministic demand streams and reference decisions (tests, benches).

pub mod catalog;
pub mod config;
pub mod forecast;
pub mod http;
pub mod internal_events;
pub mod kafka;
pub mod state;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nearfield_common::http::Readiness;
use nearfield_common::kafka::{KafkaSettings, TopicSpec};
use nearfield_common::shutdown::CancellationToken;
use nearfield_schemas::{CatalogRecord, Codec};

pub use config::EmitConfig;

use crate::internal_events::CatalogRecordRefused;

/// The emitter could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("catalog: {0}")]
    CatalogFile(#[from] catalog::CatalogFileError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("emitter loop: {0}")]
    Loop(#[from] kafka::LoopError),
    #[error("emit.listen {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// A started emitter.
#[derive(Debug)]
pub struct Running {
    /// The HTTP address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The state, for tests and the live page.
    pub engine: kafka::SharedEngine,
    /// The catalog in use.
    pub catalog: Arc<catalog::Catalog>,
    /// Resolves when the loop committed its last transaction and the server stopped.
    pub done: tokio::task::JoinHandle<Result<(), EmitError>>,
}

/// Runs the emitter until `shutdown` is cancelled, then commits and leaves the group.
pub async fn run(
    config: EmitConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<(), EmitError> {
    let running = start(config, kafka, shutdown).await?;
    running.done.await.unwrap_or_else(|e| Err(EmitError::Serve(std::io::Error::other(e))))
}

/// Starts the emitter and returns once its HTTP server listens.
pub async fn start(
    config: EmitConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<Running, EmitError> {
    config.validate()?;
    internal_events::register_all();
    let state_cfg = Arc::new(state::StateConfig::from_config(&config)?);
    let catalog = Arc::new(catalog::Catalog::default());
    if let Some(path) = &config.catalog_file {
        let n = catalog.load_file(path)?;
        tracing::info!(skus = n, file = %path.display(), "catalog loaded");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let follower = if config.follow_catalog_topic {
        let (cat, codec) = (Arc::clone(&catalog), Codec::single_object());
        Some(nearfield_common::kafka::follow_compacted(
            &kafka,
            kafka.topics.catalog.clone(),
            "nearfield-catalog-follower",
            Arc::clone(&stop),
            move |key, payload, offset| match payload {
                None => cat.remove(key),
                Some(bytes) => {
                    let applied = codec
                        .decode::<CatalogRecord>(bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|rec| cat.upsert(&rec));
                    if let Err(error) = applied {
                        CatalogRecordRefused { key, offset, error: &error }.emit();
                    }
                }
            },
        )?)
    } else {
        None
    };
    let mut specs = kafka.topic_specs();
    specs.extend(catalog.suppliers().into_iter().map(|s| TopicSpec {
        name: kafka.topics.plan(&s),
        partitions: config.plan_partitions,
        cleanup: "delete",
    }));
    kafka.ensure_topics(&specs).await?;
    let engine =
        Arc::new(Mutex::new(kafka::Engine::new(Arc::clone(&state_cfg), config.recent_signals)));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmitError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(EmitError::Serve)?;
    let readiness = Readiness::default();
    let app = http::router(Arc::clone(&engine), readiness.clone());
    tracing::info!(%local_addr, "emitter listening");

    let worker = {
        let (engine, catalog, stop) =
            (Arc::clone(&engine), Arc::clone(&catalog), Arc::clone(&stop));
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("emitter".into())
            .spawn(move || kafka::run_loop(kafka, config, engine, catalog, handle, stop))
            .map_err(EmitError::Serve)?
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
                .map_err(|e| EmitError::Serve(std::io::Error::other(e)))?
                .map_err(|_| EmitError::Serve(std::io::Error::other("emitter thread panicked")))?;
            if let Some(f) = follower {
                let _ = tokio::task::spawn_blocking(move || f.join()).await;
            }
            tracing::info!("emitter stopped");
            served.map_err(EmitError::Serve)?;
            looped.map_err(EmitError::from)
        })
    };
    Ok(Running { local_addr, engine, catalog, done })
}

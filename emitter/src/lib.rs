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
//! The exactly-once machinery is `nearfield-eos`; this crate is what is the emitter's own.
//!
//! # Layout
//! - [`config`]: settings and their validation.
//! - [`catalog`]: the supplier catalog (file + `catalog.v1`).
//! - [`coverage`]: every grid's coverage per closed bucket (`coverage.v1`) by region.
//! - [`forecast`]: Holt–Winters with a daily profile and a prediction interval.
//! - [`count_model`]: the horizon forecast: negative-binomial quantiles around level ×
//!   weekday × time of day.
//! - [`backtest`]: `nearfield forecast` (the model over a history file) and scoring
//!   against baselines.
//! - [`realistic`]: a generator of realistic shop demand for judging forecasts.
//! - [`state`]: one partition's planning state: roll-up, privacy floor, decisions.
//! - [`stage`]: the emitter as a `nearfield_eos::Stage`.
//! - [`http`]: recent signals.
//! - [`internal_events`]: logs and metrics.
//! - [`synthetic`]: deterministic demand streams and reference decisions (tests, benches).

pub mod backtest;
pub use nearfield_common::catalog;
pub mod config;
pub mod count_model;
pub mod coverage;
pub mod forecast;
pub mod http;
pub mod internal_events;
pub mod realistic;
pub mod stage;
pub mod state;
pub mod synthetic;

use std::sync::Arc;

use nearfield_common::kafka::{KafkaSettings, TopicSpec};
use nearfield_common::shutdown::CancellationToken;
use nearfield_eos::Wiring;
use nearfield_eos::http::Launch;
use nearfield_schemas::{Codec, GridCoverage, RejectSource};

pub use config::EmitConfig;

use crate::internal_events::{CatalogRecordRefused, CoverageRecordRead};

/// The emitter could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("catalog: {0}")]
    CatalogFile(#[from] catalog::CatalogFileError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("emitter: {0}")]
    Loop(#[from] nearfield_eos::EosError),
    #[error("emitter: {0}")]
    Serve(#[from] nearfield_eos::http::ServeError),
}

/// A started emitter.
#[derive(Debug)]
pub struct Running {
    /// The loop and HTTP server (`done` resolves when both stopped).
    pub stage: nearfield_eos::http::Launched<stage::Emitter>,
    /// The latest committed signals.
    pub recent: stage::Recent,
    /// The catalog in use.
    pub catalog: Arc<catalog::Catalog>,
    /// The coverage book, when `coverage.v1` is followed.
    pub coverage: Option<Arc<coverage::Coverage>>,
}

/// Starts the emitter and returns once its HTTP server listens; it runs until `shutdown`
/// is cancelled (then commits and leaves the group) or a fatal error.
pub async fn start(
    config: EmitConfig,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
) -> Result<Running, EmitError> {
    config.validate()?;
    internal_events::register_all();
    let state_cfg = Arc::new(state::StateConfig::from_config(&config)?);
    if !state_cfg.horizons.all() {
        tracing::info!(
            from_ms = config.horizons_from_ms,
            before_ms = config.horizons_before_ms,
            "handing over: planning only horizons starting within these bounds"
        );
    }
    let catalog = Arc::new(catalog::Catalog::default());
    if let Some(path) = &config.catalog_file {
        let n = catalog.load_file(path)?;
        tracing::info!(skus = n, file = %path.display(), "catalog loaded");
    }
    let mut followers = Vec::new();
    if config.follow_catalog_topic {
        followers.push(catalog::follow(&kafka, Arc::clone(&catalog), |key, offset, error| {
            CatalogRecordRefused { key, offset, error }.emit();
        })?);
    }
    let coverage = config.follow_coverage_topic.then(|| {
        Arc::new(coverage::Coverage::new(
            state_cfg.region_res,
            config.bucket_ms,
            config.coverage_keep_buckets,
        ))
    });
    if let Some(book) = &coverage {
        let (book, codec) = (Arc::clone(book), Codec::single_object());
        followers.push(nearfield_common::kafka::follow_compacted(
            &kafka,
            kafka.topics.coverage.clone(),
            nearfield_common::kafka::COVERAGE_FOLLOWER_GROUP,
            move |key, payload, offset| {
                let Some(bytes) = payload else { return };
                let outcome = codec
                    .decode::<GridCoverage>(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|rec| book.apply(&rec))
                    .map(|a| a == coverage::Applied::Counted);
                let outcome = outcome.as_ref().map(|c| *c).map_err(String::as_str);
                CoverageRecordRead { key, offset, outcome }.emit();
            },
        )?);
    }
    let mut specs = kafka.topic_specs();
    specs.extend(catalog.suppliers().into_iter().map(|s| TopicSpec {
        name: kafka.topics.plan(&s),
        partitions: config.plan_partitions,
        cleanup: "delete",
        configs: Vec::new(),
    }));
    kafka.ensure_topics(&specs).await?;
    let t = &kafka.topics;
    let wiring = Wiring {
        input: t.demand.clone(),
        changelog: Some(t.emitter_changelog.clone()),
        side_inputs: Vec::new(),
        outputs: Vec::new(),
        dlq: Some(t.dlq.clone()),
        reject_source: RejectSource::Emitter,
    };
    let stage = Arc::new(stage::Emitter::new(
        state_cfg,
        (Arc::clone(&catalog), coverage.clone()),
        t.clone(),
        config.plan_partitions,
        config.recent_signals,
    ));
    let (recent, create) = (stage.recent(), stage.create_on_demand());
    let launch = Launch {
        stage,
        wiring,
        config: config.runtime(),
        settings: kafka,
        create: Some(create),
        listen: config.exactly_once.listen,
        operator_token: config.exactly_once.operator_token.clone(),
        supplier_tokens: config.exactly_once.supplier_tokens.clone(),
        listen_setting: "emit.listen",
    };
    let routes = |q: &nearfield_eos::Queries<stage::Asked, stage::Owns>, plane| {
        http::router(http::Api { queries: q.clone(), plane, recent: Arc::clone(&recent) })
    };
    let stage = nearfield_eos::http::launch(launch, routes, followers, shutdown).await?;
    Ok(Running { stage, recent, catalog, coverage })
}

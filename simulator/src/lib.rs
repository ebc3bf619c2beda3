//! Simulated store devices: signed, realistic sales traffic for ingest.
//!
//! Stores come from the registry file; each device derives its key from the master key
//! like a provisioned device. Demand is shaped like a city's: SKU popularity follows a
//! Zipf law, busy shops sell more than quiet ones, an optional daily curve makes nights
//! quiet, some events are returns and pre-orders. Devices misbehave the way real ones do:
//! their clocks are skewed, they go offline and upload their backlog late, they retry on
//! 503/429 and sometimes resend a request whose answer they lost, and a few send invalid
//! events. The summary says what happened; `acked_log` records every acknowledged event
//! as ground truth for end-to-end tests.
//!
//! # Layout
//! - [`config`]: the settings and their checks.
//! - [`demand`]: the traffic model (stores, SKUs, Zipf, daily curve).
//! - [`replay`]: `nearfield replay`: historical sales from CSV through ingest.
//! - [`client`]: signed requests with retries.
//! - [`report`]: counters, latency percentiles, progress line and summary.

pub mod client;
pub mod config;
pub mod demand;
pub mod replay;
pub mod report;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearfield_common::shutdown::CancellationToken;
use nearfield_common::time::now_ms;
use nearfield_ingest::auth::MasterKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

pub use config::SimulateConfig;
pub use report::Summary;

use crate::client::{Client, Request};
use crate::demand::City;
use crate::report::Stats;

/// The simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("simulate.stores_file: {0}")]
    Stores(String),
    #[error("simulate.master_key: {0}")]
    Key(#[from] nearfield_ingest::auth::KeyError),
    #[error("simulate.acked_log: {0}")]
    AckedLog(std::io::Error),
    #[error("http client: {0}")]
    Client(String),
}

/// Validates the settings and loads the registry's stores and devices (with their keys,
/// derived from the master key).
pub(crate) fn load_city(config: &SimulateConfig) -> Result<City, SimulateError> {
    config.validate()?;
    let key_hex = config.master_key.clone().ok_or(config::ConfigError {
        setting: "master_key",
        rule: "not set (set ingest.master_key or simulate.master_key)",
    })?;
    let master = MasterKey::from_hex(&key_hex)?;
    let stores_file = config
        .stores_file
        .clone()
        .ok_or(config::ConfigError { setting: "stores_file", rule: "not set" })?;
    let resolution = h3o::Resolution::try_from(config.h3_resolution.unwrap_or(8))
        .map_err(|_| config::ConfigError { setting: "h3_resolution", rule: "must be 0..=15" })?;
    City::load(&stores_file, &master, resolution, config).map_err(SimulateError::Stores)
}

/// The shared statistics (with the acked log), the HTTP client of the devices, and the
/// permits that cap requests in flight.
#[allow(clippy::type_complexity)]
pub(crate) fn devices_client(
    config: &SimulateConfig,
) -> Result<(Arc<Mutex<Stats>>, Arc<Client>, Arc<Semaphore>), SimulateError> {
    let acked_log = match &config.acked_log {
        Some(path) => Some(report::AckedLog::create(path).map_err(SimulateError::AckedLog)?),
        None => None,
    };
    let stats = Arc::new(Mutex::new(Stats::new(acked_log)));
    let client = Arc::new(
        Client::new(config, Arc::clone(&stats))
            .map_err(|e| SimulateError::Client(e.to_string()))?,
    );
    Ok((stats, client, Arc::new(Semaphore::new(config.concurrency))))
}

/// Runs the simulation for the configured duration (or until `shutdown`), then waits
/// for requests in flight and returns the summary.
pub async fn run(
    config: SimulateConfig,
    shutdown: CancellationToken,
) -> Result<Summary, SimulateError> {
    let city = load_city(&config)?;
    tracing::info!(
        stores = city.stores.len(),
        devices = city.devices.len(),
        skus = config.skus,
        "simulated city loaded"
    );

    let (stats, client, permits) = devices_client(&config)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut generator = demand::Generator::new(&city, &config);

    let start = Instant::now();
    let duration = Duration::from_secs_f64(config.duration_s);
    let tick = Duration::from_millis(10);
    let mut next = tokio::time::Instant::now();
    let mut event_budget = 0.0;
    let mut heartbeat_budget = 0.0;
    let heartbeat_rate = if config.heartbeat_interval_s > 0.0 {
        city.devices.len() as f64 / config.heartbeat_interval_s
    } else {
        0.0
    };
    let mut last_progress = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < duration && !shutdown.is_cancelled() {
        next += tick;
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shutdown.cancelled() => break,
        }
        let now = now_ms();
        let dt = tick.as_secs_f64();
        event_budget += config.rate * demand::daily_factor(&config, now) * dt;
        heartbeat_budget += heartbeat_rate * dt;
        let mut requests: Vec<Request> = Vec::new();
        while event_budget >= 1.0 {
            let batch = rng.random_bool(config.batch_share.clamp(0.0, 1.0));
            let n = if batch {
                rng.random_range(config.batch_min..=config.batch_max)
                    .min(event_budget as usize)
                    .max(1)
            } else {
                1
            };
            event_budget -= n as f64;
            requests.extend(generator.events(&mut rng, n, batch, now));
        }
        while heartbeat_budget >= 1.0 {
            heartbeat_budget -= 1.0;
            requests.push(generator.heartbeat(now));
        }
        for req in requests {
            // Waiting for a permit is the backpressure: a slow ingest lowers the achieved
            // rate, which the summary reports. Generation stops at the deadline.
            let deadline = tokio::time::Instant::from_std(start + duration);
            let permit = tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => p,
                () = tokio::time::sleep_until(deadline) => break,
                () = shutdown.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            let client = Arc::clone(&client);
            let dup = rng.random_bool(config.duplicate_share.clamp(0.0, 1.0));
            tasks.spawn(async move {
                client.send(req, dup).await;
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            report::progress(
                &stats,
                start.elapsed(),
                config.concurrency - permits.available_permits(),
            );
        }
    }
    // Devices still offline upload their backlog before the end, like shops reopening.
    for req in generator.flush_offline() {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            client.send(req, false).await;
            drop(permit);
        });
    }
    // Requests in flight finish (with their retries) unless the user interrupts.
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = shutdown.cancelled() => {
                tasks.abort_all();
                break;
            }
        }
    }
    report::progress(&stats, start.elapsed(), 0);
    eprintln!();
    let summary = stats.lock().map(|mut s| s.summary(start.elapsed())).unwrap_or_default();
    Ok(summary)
}

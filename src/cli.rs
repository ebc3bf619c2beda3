//! Command-line interface of the `nearfield` binary.
//!
//! Every subcommand takes `--config FILE` (the deployment file; see `config.rs`). Stage
//! subcommands run until SIGINT/SIGTERM and then shut down gracefully.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nearfield_common::shutdown;
use nearfield_schemas::registry::{all, hex};
use nearfield_schemas::*;

/// Live neighbourhood demand from shop sales, for factories that produce by sales.
#[derive(Debug, Parser)]
#[command(name = "nearfield", version, about)]
pub struct Args {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "NEARFIELD_LOG_JSON")]
    pub log_json: bool,
    /// Deployment configuration file (TOML), e.g. deploy/examples/nearfield.toml.
    #[arg(long, global = true, env = "NEARFIELD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the device HTTP API and publish sale events to Kafka.
    Ingest {
        /// Listen address (overrides ingest.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Aggregate sales into windowed demand per grid × SKU (exactly once) and serve the
    /// live query.
    Aggregate {
        /// Listen address (overrides aggregate.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// This instance's stable id (overrides aggregate.instance_id).
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Turn closed demand windows into production-plan signals per supplier (exactly
    /// once).
    Emit {
        /// Listen address (overrides emit.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// This instance's stable id (overrides emit.instance_id).
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Serve the live page: the city's demand per grid cell, the latest plan signals and
    /// pipeline health (reads the stages' HTTP endpoints).
    Live {
        /// Listen address (overrides live.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Copy a topic into one with another partition count, exactly once, each record to
    /// the partition its key hashes to there (growing the partition count of a live
    /// deployment: docs/SCALING.md). Runs until stopped.
    Repartition {
        /// The topic copied (overrides repartition.from).
        #[arg(long)]
        from: Option<String>,
        /// The topic written, with the new partition count (overrides repartition.to).
        #[arg(long)]
        to: Option<String>,
        /// Listen address of its metrics and probes (overrides repartition.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// This instance's stable id (overrides repartition.instance_id).
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Run ingest, aggregator, emitter and the live page in one process (small deployments and the demo;
    /// separate processes remain the production shape). A stage that fails stops the
    /// others.
    Run,
    /// Simulated store devices sending signed traffic to ingest.
    Simulate {
        /// Target events per second (overrides simulate.rate).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds to run (overrides simulate.duration_s).
        #[arg(long)]
        duration: Option<f64>,
        /// Base URL of ingest (overrides simulate.target).
        #[arg(long)]
        target: Option<String>,
        /// Write every acknowledged event here as JSON lines (ground truth).
        #[arg(long)]
        acked_log: Option<PathBuf>,
    },
    /// Backfill historical sales from a CSV file through ingest, signed as the stores'
    /// devices, at a speed-up of event time, with a progress bar (see docs/replay.md).
    ///
    /// With `--late` instead of a file: apply what is in `sales.late.v1` as corrections
    /// (revisions) of the windows it missed, exactly once (docs/lateness.md).
    Replay {
        /// CSV with a header: event_id, store_id, sku, quantity, unit_price_minor,
        /// occurred_at (UTC ms), and optionally kind, currency, device_id.
        #[arg(required_unless_present = "late", conflicts_with = "late")]
        file: Option<PathBuf>,
        /// Apply `sales.late.v1` (what earlier runs did not) to `demand.v1` and print a
        /// JSON summary.
        #[arg(long)]
        late: bool,
        /// Consumer group (and transactional id) of `--late`: keep it, it remembers what
        /// was applied.
        #[arg(long, default_value = nearfield_aggregator::late::GROUP, requires = "late")]
        group: String,
        /// Event time runs this many times faster than wall time (0: as fast as ingest
        /// takes it).
        #[arg(long, default_value_t = 0.0)]
        speedup: f64,
        /// Events per request (per device).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Base URL of ingest (overrides simulate.target).
        #[arg(long)]
        target: Option<String>,
        /// Write every acknowledged event here as JSON lines.
        #[arg(long)]
        acked_log: Option<PathBuf>,
    },
    /// Backtest the emitter's forecast on an hourly history: CSV `series,ts_ms,units` in,
    /// CSV `series,origin_ms,horizon_start_ms,horizon_end_ms,q<p>…` out, one row per series
    /// per origin (docs/forecast.md). The model sees at most `emit.history_buckets` hours.
    Forecast {
        /// History file (CSV with the header series,ts_ms,units; hourly rows).
        #[arg(long)]
        history: PathBuf,
        /// Hours from an origin to the start of the horizon forecast.
        #[arg(long)]
        lead_hours: i64,
        /// Length of the horizon in hours.
        #[arg(long)]
        horizon_hours: i64,
        /// Hours between origins.
        #[arg(long)]
        every_hours: i64,
        /// Hours of a series' history before its first origin.
        #[arg(long)]
        min_history_hours: i64,
        /// Quantile levels, comma-separated (one output column each).
        #[arg(long, default_value = "0.1,0.5,0.9")]
        quantiles: String,
    },
    /// Create nearfield's topics (existing ones are left alone).
    Topics,
    /// Principals and ACLs on a secured cluster (run with an admin's credentials).
    #[command(subcommand)]
    Access(crate::access::AccessCommand),
    /// Print a device's key (hex) for provisioning it.
    DeviceKey {
        #[arg(long)]
        store: String,
        #[arg(long)]
        device: String,
        /// Key version of the store (see StoreRecord.key_version).
        #[arg(long, default_value_t = 1)]
        key_version: i32,
    },
    /// List the contract's schemas with their single-object fingerprints.
    Schemas,
    /// Decode one framed Avro message (file or stdin) and print it as JSON.
    Decode {
        /// Record type: SaleEvent, DemandWindow, PlanSignal, Heartbeat, StoreRecord,
        /// CatalogRecord, RejectedEvent.
        #[arg(long)]
        record: String,
        /// File holding the message; stdin when absent.
        file: Option<PathBuf>,
    },
}

/// Sets up `tracing` with `RUST_LOG` filtering (default `info`).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the chosen command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = crate::config::load(args.config.as_deref())?;
    match args.command {
        Command::Ingest { listen } => {
            let mut ingest = cfg.ingest;
            if let Some(l) = listen {
                ingest.listen = l;
            }
            nearfield_ingest::run(ingest, cfg.kafka, shutdown::on_signal()).await?;
            Ok(())
        }
        Command::Aggregate { listen, instance_id } => {
            let mut agg = cfg.aggregate;
            let eo = &mut agg.exactly_once;
            eo.listen = listen.unwrap_or(eo.listen);
            eo.instance_id = instance_id.or(eo.instance_id.take());
            let running =
                nearfield_aggregator::start(agg, cfg.kafka, shutdown::on_signal()).await?;
            Ok(running.done.await??)
        }
        Command::Emit { listen, instance_id } => {
            let mut emit = cfg.emit;
            let eo = &mut emit.exactly_once;
            eo.listen = listen.unwrap_or(eo.listen);
            eo.instance_id = instance_id.or(eo.instance_id.take());
            let running = nearfield_emitter::start(emit, cfg.kafka, shutdown::on_signal()).await?;
            Ok(running.stage.done.await??)
        }
        Command::Repartition { from, to, listen, instance_id } => {
            let mut r = cfg.repartition;
            r.from = from.unwrap_or(r.from);
            r.to = to.unwrap_or(r.to);
            let eo = &mut r.exactly_once;
            eo.listen = listen.unwrap_or(eo.listen);
            eo.instance_id = instance_id.or(eo.instance_id.take());
            let running =
                nearfield_eos::repartition::start(r, cfg.kafka, shutdown::on_signal()).await?;
            Ok(running.done.await??)
        }
        Command::Live { listen } => {
            let mut live = cfg.live;
            live.listen = listen.unwrap_or(live.listen);
            nearfield_live::run(live, shutdown::on_signal()).await?;
            Ok(())
        }
        Command::Run => {
            let root = shutdown::on_signal();
            let watch = |stage: &'static str, r: anyhow::Result<()>| {
                if let Err(e) = &r {
                    tracing::error!(stage, error = %e, "stage failed; stopping the others");
                    root.cancel();
                }
                r.with_context(|| format!("{stage} stage"))
            };
            let (kafka, token) = (&cfg.kafka, || root.child_token());
            let (i, a, e, l) = tokio::join!(
                async {
                    let r = nearfield_ingest::run(cfg.ingest, kafka.clone(), token()).await;
                    watch("ingest", r.map_err(Into::into))
                },
                async {
                    let r = match nearfield_aggregator::start(cfg.aggregate, kafka.clone(), token())
                        .await
                    {
                        Ok(running) => joined(running.done).await,
                        Err(e) => Err(e.into()),
                    };
                    watch("aggregate", r)
                },
                async {
                    let r = match nearfield_emitter::start(cfg.emit, kafka.clone(), token()).await {
                        Ok(running) => joined(running.stage.done).await,
                        Err(e) => Err(e.into()),
                    };
                    watch("emit", r)
                },
                async {
                    watch("live", nearfield_live::run(cfg.live, token()).await.map_err(Into::into))
                },
            );
            i.and(a).and(e).and(l)
        }
        Command::Simulate { rate, duration, target, acked_log } => {
            let mut sim = cfg.simulate;
            sim.rate = rate.unwrap_or(sim.rate);
            sim.duration_s = duration.unwrap_or(sim.duration_s);
            sim.target = target.unwrap_or(sim.target);
            sim.acked_log = acked_log.or(sim.acked_log);
            let summary = nearfield_simulator::run(sim, shutdown::on_signal()).await?;
            write_stdout(&format!("{}\n", serde_json::to_string(&summary)?))
        }
        Command::Replay { late: true, group, .. } => {
            let (kafka, agg) = (cfg.kafka.clone(), cfg.aggregate.clone());
            let summary = tokio::task::spawn_blocking(move || {
                nearfield_aggregator::late::replay(&kafka, &agg.windowing(), &agg.currency, &group)
            })
            .await??;
            write_stdout(&format!("{}\n", serde_json::to_string(&summary)?))
        }
        Command::Replay { file, speedup, batch, target, acked_log, .. } => {
            let file = file.context("a CSV file to replay, or --late")?;
            let mut sim = cfg.simulate;
            sim.target = target.unwrap_or(sim.target);
            sim.acked_log = acked_log.or(sim.acked_log);
            let summary =
                nearfield_simulator::replay::run(sim, &file, speedup, batch, shutdown::on_signal())
                    .await?;
            write_stdout(&format!("{}\n", serde_json::to_string(&summary)?))
        }
        Command::Topics => {
            let created = cfg.kafka.ensure_topics(&cfg.kafka.topic_specs()).await?;
            tracing::info!(created = ?created, brokers = %cfg.kafka.brokers, "topics ready");
            Ok(())
        }
        Command::Access(cmd) => write_stdout(&crate::access::run(cmd, &cfg).await?),
        Command::DeviceKey { store, device, key_version } => {
            let hex = cfg.ingest.master_key.clone().context(
                "ingest.master_key is not set (config file or NEARFIELD_INGEST__MASTER_KEY)",
            )?;
            let master = nearfield_ingest::auth::MasterKey::from_hex(&hex)?;
            write_stdout(&format!("{}\n", master.device_key(&store, &device, key_version).to_hex()))
        }
        Command::Forecast {
            history,
            lead_hours,
            horizon_hours,
            every_hours,
            min_history_hours,
            quantiles,
        } => {
            use nearfield_emitter::backtest;
            let settings = backtest::Settings {
                lead_hours,
                horizon_hours,
                every_hours,
                min_history_hours,
                quantiles: backtest::parse_quantiles(&quantiles)?,
                history_hours: cfg.emit.history_buckets,
            };
            let file = std::fs::File::open(&history)
                .with_context(|| format!("--history {}", history.display()))?;
            let name = history.display().to_string();
            let stdout = std::io::stdout();
            let out = std::io::BufWriter::new(stdout.lock());
            backtest::run(&settings, std::io::BufReader::new(file), &name, out)?;
            Ok(())
        }
        Command::Schemas => {
            let mut out = String::new();
            for (name, set) in all() {
                for v in &set.versions {
                    out.push_str(&format!("{name:<14} {:<8} {}\n", v.version, hex(&v.fingerprint)));
                }
            }
            write_stdout(&out)
        }
        Command::Decode { record, file } => {
            let bytes = match file {
                Some(path) => {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
            };
            let json = decode_to_json(&record, &bytes)?;
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&json)?))
        }
    }
}

/// The result of a stage's task.
async fn joined<E: std::error::Error + Send + Sync + 'static>(
    done: tokio::task::JoinHandle<Result<(), E>>,
) -> anyhow::Result<()> {
    Ok(done.await??)
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn decode_to_json(record: &str, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    fn dec<T: AvroRecord>(bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
        let value: T = Codec::single_object().decode(bytes)?;
        Ok(serde_json::to_value(&value)?)
    }
    match record {
        "SaleEvent" => dec::<SaleEvent>(bytes),
        "DemandWindow" => dec::<DemandWindow>(bytes),
        "PlanSignal" => dec::<PlanSignal>(bytes),
        "Heartbeat" => dec::<Heartbeat>(bytes),
        "StoreRecord" => dec::<StoreRecord>(bytes),
        "CatalogRecord" => dec::<CatalogRecord>(bytes),
        "RejectedEvent" => dec::<RejectedEvent>(bytes),
        other => bail!("unknown record type {other:?}; see `nearfield schemas`"),
    }
}

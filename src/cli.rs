//! Command-line interface of the `nearfield` binary.
//!
//! Stage subcommands (`ingest`, `aggregate`, `emit`, `run`, `simulate`, `replay`) are added
//! as the stages land; today the binary serves the Avro contract to operators.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nearfield_schemas::registry::{all, hex};
use nearfield_schemas::*;

/// Live neighbourhood demand from shop sales, for factories that produce by sales.
#[derive(Debug, Parser)]
#[command(name = "nearfield", version, about)]
pub struct Args {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "NEARFIELD_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    match args.command {
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

//! `nearfield`: one binary for every stage. Subcommands live in [`cli`]; this file only
//! parses arguments, sets up logging and runs the chosen command.

mod access;
mod cli;
mod config;

use clap::Parser;

/// mimalloc: the aggregator's profile was a fifth malloc/free (decoded strings per event);
/// with it the aggregator benchmark does 1.3× the events per CPU-second (README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before anything large is allocated: re-executes with the allocator's settings.
    let settled = nearfield_common::alloc::settle();
    let args = cli::Args::parse();
    cli::init_tracing(args.log_json);
    if let Err(e) = settled {
        tracing::warn!(error = %e, "could not apply the allocator's settings; running with its defaults (more memory per key)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(cli::run(args))
}

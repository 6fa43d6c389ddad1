//! `strata`: the Strata event store's command line.
//!
//! - `strata serve`: run the HTTP server (reference: `docs/http-api.md`).
//! - `strata append` / `read` / `tail`: client commands talking to a running server.
//! - `strata verify`: check a data directory offline (every CRC, every index file).
//! - `strata repair`: repair a damaged data directory offline (damage into quarantine).
//! - `strata group ...`: create, list, show and delete consumer groups; their parked events.
//! - `strata consume GROUP`: a competing consumer of a group (print or `--exec` per event, ack).
//! - `strata projection ...`: manage JavaScript projections (`docs/projections.md`).
//! - `strata scavenge`: reclaim disk space on a running server, with a progress bar.
//!
//! Every flag can also be given as a `STRATA_*` environment variable (see `--help`). The HTTP load
//! generator is a separate binary, `strata-bench` (`docs/performance.md`).

mod cli;
mod client;
mod consume;
mod error;
mod group;
mod projection;
mod repair;
mod scavenge;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc rather than the system allocator: see the dependency's note in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Append(args) => client::append(args),
        Command::Read(args) => client::read(args),
        Command::Tail(args) => client::tail(args),
        Command::Verify(args) => verify::run(args),
        Command::Repair(args) => repair::run(args),
        Command::Group(args) => group::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Projection(command) => projection::run(command),
        Command::Scavenge(args) => scavenge::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `strata-bench`: load-test a running Strata server over HTTP (see the library's docs and
//! `docs/performance.md`). Every flag can also be given as a `STRATA_*` environment variable
//! where `--help` names one.

use std::process::ExitCode;

use clap::Parser;
use strata_bench::BenchArgs;

/// Load-test a running Strata server over HTTP: appends, batches, NDJSON replay, SSE latency,
/// consumer groups, projections.
#[derive(Debug, Parser)]
#[command(name = "strata-bench", version)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match strata_bench::run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

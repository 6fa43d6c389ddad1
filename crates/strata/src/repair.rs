//! `strata repair --data-dir DIR`: repair a damaged data directory offline. Damaged bytes and
//! the original files move into `DIR/quarantine/<timestamp>/` (nothing is deleted), the store
//! opens writable again, and the report of what was lost and kept is printed (and kept there as
//! `report.txt`). Refuses, changing nothing, a directory that is not a store or that a running
//! server holds.

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use strata_store::repair::repair_dir;

use crate::cli::RepairArgs;
use crate::error::Result;

/// Runs the repair; prints the report on stdout.
pub fn run(args: RepairArgs) -> Result<ExitCode> {
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("scanning [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let report = repair_dir(&args.data_dir, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

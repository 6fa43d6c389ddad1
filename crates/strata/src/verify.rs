//! `strata verify --data-dir DIR`: check every segment's frames (CRC, order) and every index
//! file, offline and without changing anything. Lists each damaged range (file, offset, length,
//! positions lost: what `strata repair` would quarantine) and every other problem; exits 1 when
//! anything is wrong.

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use strata_store::verify::verify_dir;

use crate::cli::VerifyArgs;
use crate::error::{Error, Result};

/// Runs the check; prints each problem on stdout, notes on stderr.
pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    if !args.data_dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            args.data_dir.display()
        )));
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("verifying [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let report = verify_dir(&args.data_dir, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    for d in &report.damage {
        let lost = d.positions.end - d.positions.start;
        let positions = if lost > 0 {
            format!(
                "positions {}..{} ({lost} lost)",
                d.positions.start, d.positions.end
            )
        } else {
            "no event lost".to_owned()
        };
        println!(
            "damage: {} offset {}, {} bytes, {positions}: {}",
            d.file.display(),
            d.offset,
            d.length,
            d.detail
        );
    }
    // The damage is among the problems too (as errors): list only the others.
    let is_damage = |p: &str| {
        report.damage.iter().any(|d| {
            p.starts_with(&format!(
                "corruption in {} at offset {}",
                d.file.display(),
                d.offset
            ))
        })
    };
    for problem in report.problems.iter().filter(|p| !is_damage(p)) {
        println!("problem: {problem}");
    }
    let summary = format!(
        "{}: {} segments, {} events, {} bytes checked",
        args.data_dir.display(),
        report.segments,
        report.events,
        report.bytes
    );
    if report.problems.is_empty() {
        println!("{summary}: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{summary}: {} problem(s); `strata repair --data-dir {}` (with the server stopped) \
             moves the damage into quarantine",
            report.problems.len(),
            args.data_dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

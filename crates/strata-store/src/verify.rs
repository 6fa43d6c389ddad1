//! Offline verification of a data directory: every frame's CRC, every index file.

use std::path::Path;

use crate::damage::Damage;
use crate::error::{Error, Result};
use crate::index_file::SegmentIndex;
use crate::segment::{index_file_name, list_segments, map_file, scan_segment, ScanMode, Scanned};

/// What [`verify_dir`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Events whose frames passed their checks.
    pub events: u64,
    /// Bytes of segment files checked.
    pub bytes: u64,
    /// Problems found, each naming the file and offset. Empty means the directory is sound.
    pub problems: Vec<String>,
    /// The damaged ranges of segment files among the problems: what a store opened on this
    /// directory reports as damage, and what `strata repair` would quarantine.
    pub damage: Vec<Damage>,
    /// Remarks that are not corruption (e.g. a torn tail recovery will cut).
    pub notes: Vec<String>,
}

/// Checks every segment and index file in `dir` without changing anything (safe to run while a
/// server uses the directory: only committed bytes of sealed segments are judged strictly).
/// Damage does not end the check: each segment is scanned to its end, resuming after damaged
/// bytes as the store does. `progress(bytes_done, bytes_total)` is called after each segment.
pub fn verify_dir(dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let segments = list_segments(dir)?;
    let mut total = 0;
    for (_, p) in &segments {
        total += std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
    }
    let mut report = VerifyReport::default();
    let mut expected_first = 0;
    for (i, (first, path)) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map(|s| s.0);
        if *first != expected_first {
            report.problems.push(format!(
                "{}: starts at position {first}, previous segment ends at {expected_first}",
                path.display()
            ));
        }
        let map = map_file(path)?;
        let mode = if next_first.is_none() {
            ScanMode::Open
        } else {
            ScanMode::Sealed
        };
        let mut events = 0u64;
        let outcome = scan_segment(&map, *first, mode, next_first, |item| {
            if let Scanned::Event(..) = item {
                events += 1;
            }
        });
        report.events += events;
        report.segments += 1;
        report.bytes += map.len() as u64;
        let index_ok = match next_first {
            Some(_) => check_index(dir, *first, map.len() as u64, events, &outcome.damage),
            None => Ok(()),
        };
        for d in &outcome.damage {
            report.problems.push(d.error(path).to_string());
            report
                .damage
                .push(d.to_damage(path, next_first.is_some() && index_ok.is_ok()));
        }
        if let Err(e) = index_ok {
            let idx = dir.join(index_file_name(*first));
            if crate::index_file::is_stale_version(&idx) {
                // Derived data of an older format: not damage.
                report.notes.push(format!(
                    "{}: index file of the older format version 1, rebuilt on next open",
                    idx.display()
                ));
            } else {
                report
                    .problems
                    .push(format!("{e} (the index is rebuilt on next open)"));
            }
        }
        if let Some(t) = outcome.torn {
            report.notes.push(format!("{}: {t}", path.display()));
        }
        expected_first = outcome.next_position;
        progress(report.bytes, total);
    }
    Ok(report)
}

/// Checks the index file of a sealed segment: intact, and listing as many positions as the
/// segment's frames (plus those lost in `damage`) span.
fn check_index(
    dir: &Path,
    first: u64,
    segment_len: u64,
    events: u64,
    damage: &[crate::segment::ScanDamage],
) -> Result<()> {
    let idx = dir.join(index_file_name(first));
    let ix = SegmentIndex::open(&idx, first, segment_len)?;
    ix.verify()?;
    let lost: u64 = damage
        .iter()
        .map(|d| d.positions.end - d.positions.start)
        .sum();
    if ix.event_count() < events + lost {
        return Err(Error::corruption(
            &idx,
            0,
            format!(
                "index lists {} positions, segment holds {events} events and {lost} lost",
                ix.event_count()
            ),
        ));
    }
    Ok(())
}

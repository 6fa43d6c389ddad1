//! Offline verification of a data directory: every frame's CRC, every index file.

use std::path::Path;

use crate::error::{Error, Result};
use crate::index_file::SegmentIndex;
use crate::segment::{index_file_name, list_segments, map_file, scan_segment, ScanMode};

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
    /// Remarks that are not corruption (e.g. a torn tail recovery will cut).
    pub notes: Vec<String>,
}

/// Checks every segment and index file in `dir` without changing anything (safe to run while a
/// server uses the directory: only committed bytes of sealed segments are judged strictly).
/// `progress(bytes_done, bytes_total)` is called after each segment.
pub fn verify_dir(dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let segments = list_segments(dir)?;
    let mut total = 0;
    for (_, p) in &segments {
        total += std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
    }
    let mut report = VerifyReport::default();
    let mut expected_first = 0;
    for (i, (first, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        if *first != expected_first {
            report.problems.push(format!(
                "{}: starts at position {first}, previous segment ends at {expected_first}",
                path.display()
            ));
        }
        let map = map_file(path)?;
        let mode = if is_last {
            ScanMode::Open
        } else {
            ScanMode::Sealed
        };
        let mut events = 0u64;
        let outcome = scan_segment(path, &map, *first, mode, |_, _| events += 1);
        report.events += events;
        report.segments += 1;
        report.bytes += map.len() as u64;
        let damaged = outcome.corruption.is_some();
        if let Some(e) = outcome.corruption {
            report.problems.push(e.to_string());
        }
        if let Some(t) = outcome.torn {
            report.notes.push(format!("{}: {t}", path.display()));
        }
        expected_first = if damaged {
            // The scan stopped early: judge the next segment on its own.
            segments.get(i + 1).map_or(outcome.next_position, |s| s.0)
        } else {
            outcome.next_position
        };
        if !is_last && !damaged {
            let idx = dir.join(index_file_name(*first));
            match SegmentIndex::open(&idx, *first, map.len() as u64).and_then(|ix| {
                ix.verify()?;
                if ix.event_count() != events {
                    return Err(Error::corruption(
                        &idx,
                        0,
                        format!(
                            "index lists {} events, segment holds {events}",
                            ix.event_count()
                        ),
                    ));
                }
                Ok(())
            }) {
                Ok(()) => {}
                Err(_) if crate::index_file::is_stale_version(&idx) => report.notes.push(format!(
                    "{}: index file of the older format version 1, rebuilt on next open",
                    idx.display()
                )),
                Err(e) => report
                    .problems
                    .push(format!("{e} (the index is rebuilt on next open)")),
            }
        }
        progress(report.bytes, total);
    }
    Ok(report)
}

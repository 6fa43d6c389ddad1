//! The text of a repair report: what `strata repair` prints and keeps as
//! `quarantine/<timestamp>/report.txt`.

use std::fmt;

use super::{LostEvent, RepairReport};

/// Unknown lost positions are listed as one line per run; known ones one line each, up to this
/// many per damaged range (the rest are counted).
const MAX_LISTED: usize = 1000;

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "strata repair of {} at {}",
            self.dir.display(),
            self.started
        )?;
        match &self.quarantine {
            None => {
                writeln!(f, "no damage found: nothing was changed")?;
            }
            Some(q) => {
                writeln!(
                    f,
                    "quarantine: {} (the original files, each damaged byte range, this report)",
                    q.display()
                )?;
            }
        }
        writeln!(f)?;
        writeln!(f, "damage: {} range(s)", self.damage.len())?;
        for d in &self.damage {
            let lost = d.positions.end - d.positions.start;
            write!(
                f,
                "  {} offset {}, {} bytes: {}",
                d.file.display(),
                d.offset,
                d.length,
                d.detail
            )?;
            if lost > 0 {
                writeln!(
                    f,
                    "; positions {}..{} lost ({lost})",
                    d.positions.start, d.positions.end
                )?;
            } else {
                writeln!(f, "; no event lost")?;
            }
        }
        writeln!(f)?;
        writeln!(f, "lost: {} position(s)", self.positions_lost())?;
        for d in &self.damage {
            let mut listed = 0;
            let mut unknown_from: Option<u64> = None;
            for p in d.positions.clone() {
                let known = self
                    .lost
                    .binary_search_by_key(&p, |e| e.position)
                    .ok()
                    .map(|i| &self.lost[i]);
                match known {
                    Some(e) => {
                        if let Some(from) = unknown_from.take() {
                            unknown(f, from..p)?;
                        }
                        if listed < MAX_LISTED {
                            lost_event(f, e)?;
                        }
                        listed += 1;
                    }
                    None => {
                        unknown_from.get_or_insert(p);
                    }
                }
            }
            if let Some(from) = unknown_from {
                unknown(f, from..d.positions.end)?;
            }
            if listed > MAX_LISTED {
                writeln!(f, "  ... and {} more", listed - MAX_LISTED)?;
            }
        }
        writeln!(f)?;
        writeln!(f, "kept: {} event(s)", self.events_kept())?;
        for s in &self.segments {
            write!(
                f,
                "  {}: positions {}..{}, {} event(s) kept",
                s.file.display(),
                s.positions.start,
                s.positions.end,
                s.events
            )?;
            if s.lost > 0 {
                write!(f, ", {} lost", s.lost)?;
            }
            if s.rewritten {
                write!(f, "; rewritten without the damage (format 2)")?;
            } else if s.index_rebuilt.is_some() {
                write!(f, "; index rebuilt")?;
            } else if s.tail_cut > 0 {
                write!(f, "; torn tail cut")?;
            } else {
                write!(f, "; intact")?;
            }
            writeln!(f)?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            writeln!(f, "notes:")?;
            for n in &self.notes {
                writeln!(f, "  {n}")?;
            }
        }
        Ok(())
    }
}

fn unknown(f: &mut fmt::Formatter<'_>, r: std::ops::Range<u64>) -> fmt::Result {
    let what = if r.end - r.start == 1 {
        format!("position {}", r.start)
    } else {
        format!("positions {}..{}", r.start, r.end)
    };
    writeln!(
        f,
        "  {what}: stream and revision unknown (no intact index file describes them)"
    )
}

fn lost_event(f: &mut fmt::Formatter<'_>, e: &LostEvent) -> fmt::Result {
    write!(f, "  position {}: ", e.position)?;
    match &e.stream {
        Some(name) => write!(f, "stream {name:?} revision {}", e.revision)?,
        None => write!(
            f,
            "stream with name hash {:#018x} revision {} (no intact event names the stream)",
            e.stream_hash, e.revision
        )?,
    }
    if let Some(id) = e.id {
        write!(f, ", id {id}")?;
    }
    match e.stream_head {
        Some(head) if head < e.revision => write!(
            f,
            "; was the stream's last event: its head is now revision {head}"
        )?,
        _ => {}
    }
    writeln!(f)
}

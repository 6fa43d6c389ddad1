//! Sealing the open segment: when a request's frames would carry it past `segment_size`, the
//! segment is cut to its data (the writer extends it ahead of its writes) and synced, its index
//! file written, it is mapped, and a new segment starts.

use std::path::Path;
use std::sync::Arc;

use super::Writer;
use crate::error::{is_out_of_space, Error, Result};
use crate::file_io::{sync_dir, AppendFile, FileIo};
use crate::frame::{encode_segment_header, SEGMENT_HEADER_LEN};
use crate::index_file::{write_index_via, SegmentIndex};
use crate::log::LogState;
use crate::memtable::Memtable;
use crate::segment::{index_file_name, map_file, segment_file_name, OpenSegment, SealedSegment};

/// Whether `added` bytes of frames, which would start at byte `before` of the open segment, must
/// go to a new segment. A segment holding only its header takes any append, so one request is
/// never split across segments and a segment passes `segment_size` by at most one request.
pub(super) fn needs_roll(before: u64, added: u64, segment_size: u64) -> bool {
    added > 0 && before > SEGMENT_HEADER_LEN && before + added > segment_size
}

/// Bytes of index file per event of a sealed segment, rounded up: an offset (8), a stream
/// entry (24), an id entry (32), type and category postings (2 x 16), plus bloom bits and names.
const INDEX_BYTES_PER_EVENT: u64 = 160;

impl Writer {
    /// About how many free bytes sealing the open segment and then appending `added` bytes to
    /// the next one takes: the index file, the new segment's header and the append.
    pub(super) fn seal_needs(&self, added: u64) -> u64 {
        let events = self.next_position - self.state.open.first_position;
        events
            .saturating_mul(INDEX_BYTES_PER_EVENT)
            .saturating_add(4096 + SEGMENT_HEADER_LEN)
            .saturating_add(added)
    }

    /// Seals the open segment (index file written, segment mapped) and starts a new one at
    /// `next_position`. Called only between groups, so everything in the segment is published.
    ///
    /// Out of space while writing the index file or creating the new segment answers
    /// [`Error::DiskFull`] with nothing changed: the files made so far are removed, the segment
    /// stays open, and the next request that does not fit retries the seal. Any other failure
    /// (the open segment's fsync above all) is a fault for the caller to poison the store with.
    pub(super) fn roll(&mut self) -> Result<()> {
        let open_path = self.state.open.path.clone();
        // Synced, and as long as its data: the index records that length, and zeros after the
        // last frame of a sealed segment would read as damage.
        self.cut_extension_and_sync()
            .map_err(|e| Error::io(&open_path, e))?;
        let dir = self.shared.dir.clone();
        let open = self.state.open.clone();
        let input = open
            .table
            .read()
            .to_index_input(open.first_position, self.seg_len);
        let idx_path = dir.join(index_file_name(open.first_position));
        let io = self.shared.options.file_io.clone();
        if let Err(e) = write_index_via(&idx_path, input, io.as_ref()) {
            return Err(undo_seal(e, &dir, &[&idx_path]));
        }
        let path = dir.join(segment_file_name(self.next_position));
        let file = match create_segment_file(io.as_ref(), &path, self.next_position) {
            Ok(file) => file,
            Err(e) => return Err(undo_seal(e, &dir, &[&path, &idx_path])),
        };
        let sealed = SealedSegment::freshly_indexed(
            open.path.clone(),
            open.first_position,
            map_file(&open.path)?,
            SegmentIndex::open(&idx_path, open.first_position, self.seg_len)?,
            Vec::new(),
        );
        sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let table = Memtable::empty(SEGMENT_HEADER_LEN);
        let new_open = OpenSegment::open(
            &path,
            self.next_position,
            table,
            self.shared.options.segment_size,
        )?;
        // The list is taken from the shared state under its lock (not from the writer's copy):
        // a scavenge may have swapped segments in since, and must not be undone.
        let state = {
            let mut guard = self.shared.state.write();
            let mut sealed_list = guard.sealed.clone();
            sealed_list.push(Arc::new(sealed));
            let state = Arc::new(LogState {
                sealed: sealed_list,
                open: Arc::new(new_open),
            });
            *guard = state.clone();
            state
        };
        self.shared.merged.notify();
        self.state = state;
        self.file = file;
        self.seg_len = SEGMENT_HEADER_LEN;
        self.extended = SEGMENT_HEADER_LEN;
        self.unsynced = false;
        Ok(())
    }
}

/// Creates the segment file `path` holding only its header, durably written (the directory
/// entry is the caller's to sync). Out of space answers [`Error::DiskFull`].
pub(crate) fn create_segment_file(
    io: &dyn FileIo,
    path: &Path,
    first_position: u64,
) -> Result<Box<dyn AppendFile>> {
    let mut file = io.open_append(path).map_err(|e| disk_error(path, e))?;
    file.write_all(&encode_segment_header(first_position))
        .and_then(|()| file.sync_data())
        .map_err(|e| disk_error(path, e))?;
    Ok(file)
}

/// An I/O error on `path`: [`Error::DiskFull`] when it means "no space left".
fn disk_error(path: &Path, e: std::io::Error) -> Error {
    if is_out_of_space(&e) {
        Error::DiskFull {
            path: path.to_owned(),
            source: e,
        }
    } else {
        Error::io(path, e)
    }
}

/// Undoes a seal that ran out of space: removes the files it made (`paths`, in `dir`) and syncs
/// the directory, so that it is as before, also after a crash. Should that fail, the error
/// becomes a fault: a half-made segment file left behind would be taken for the open segment by
/// a restart.
fn undo_seal(e: Error, dir: &Path, paths: &[&Path]) -> Error {
    let Error::DiskFull { .. } = e else {
        return e;
    };
    let fault = |p: &Path, err: std::io::Error| {
        Error::io(
            p,
            std::io::Error::new(
                err.kind(),
                format!("{e}; removing the half-made files failed: {err}"),
            ),
        )
    };
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return fault(p, err),
        }
    }
    if let Err(err) = sync_dir(dir) {
        return fault(dir, err);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, ExpectedRevision, NewEvent, ReadFrom};
    use crate::writer::tests::{answer, append, options, Harness};

    #[test]
    fn a_segment_takes_what_fits_and_an_empty_one_takes_anything() {
        let h = SEGMENT_HEADER_LEN;
        // Nothing to add (an idempotent replay, a flush) never seals.
        assert!(!needs_roll(4000, 0, 4096));
        // Up to the size exactly, it fits; one byte more does not.
        assert!(!needs_roll(4000, 96, 4096));
        assert!(needs_roll(4000, 97, 4096));
        // A segment holding only its header takes an append larger than the size: appends are
        // never split, and rolling would leave an empty segment behind.
        assert!(!needs_roll(h, 10_000, 4096));
        assert!(needs_roll(h + 1, 10_000, 4096));
    }

    /// Three events of about 400 bytes: one append of about 1.3 KB.
    fn three(i: u64) -> Vec<NewEvent> {
        (0..3)
            .map(|j| NewEvent::json("T", format!("{{\"n\":\"{:0400}\"}}", i * 3 + j)))
            .collect()
    }

    #[test]
    fn segments_roll_at_the_size_between_appends_within_a_group() {
        let segment_size = 4096;
        let mut h = Harness::new(crate::Options {
            segment_size,
            ..options()
        });
        // Groups of four appends: the seals fall inside groups.
        let mut n = 0;
        for _ in 0..5 {
            let (reqs, rxs): (Vec<_>, Vec<_>) = (0..4)
                .map(|_| {
                    let expected = match n {
                        0 => ExpectedRevision::NoStream,
                        _ => ExpectedRevision::Exact(n * 3 - 1),
                    };
                    n += 1;
                    append("s", expected, three(n - 1))
                })
                .unzip();
            h.group(reqs);
            for rx in rxs {
                answer(rx).expect("append");
            }
        }
        let appends = n;
        assert_eq!(h.writer.shared.committed(), appends * 3);
        let state = h.writer.shared.snapshot();
        assert!(state.sealed.len() >= 3, "{} sealed", state.sealed.len());
        let mut expected_first = 0;
        for seg in &state.sealed {
            assert_eq!(seg.first_position, expected_first);
            let end = seg.end_position();
            // Whole appends only: every segment starts and ends at an append boundary.
            assert_eq!(seg.first_position % 3, 0, "{}", seg.path.display());
            assert_eq!(end % 3, 0, "{}", seg.path.display());
            let len = std::fs::metadata(&seg.path).expect("segment").len();
            let per_append = (len - SEGMENT_HEADER_LEN) / ((end - seg.first_position) / 3);
            // Full (the next append did not fit) and not over the size.
            assert!(len <= segment_size, "{len}");
            assert!(len + per_append > segment_size, "{len} + {per_append}");
            assert!(seg.index_path().exists());
            expected_first = end;
        }
        assert_eq!(state.open.first_position, expected_first);
        // Everything reads back after recovery, in order.
        let (store, _dir) = h.reopen();
        let page = store
            .read_stream("s", ReadFrom::Start, Direction::Forward, 1000)
            .expect("read");
        let revisions: Vec<u64> = page.events.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, (0..appends * 3).collect::<Vec<_>>());
        assert_eq!(store.info().segment_count, state.sealed.len() + 1);
    }

    #[test]
    fn an_append_larger_than_the_size_fills_a_segment_alone() {
        let mut h = Harness::new(crate::Options {
            segment_size: 4096,
            ..options()
        });
        let big: Vec<NewEvent> = (0..3)
            .map(|_| NewEvent::json("T", format!("\"{}\"", "x".repeat(2000))))
            .collect();
        let (a, ra) = append("s", ExpectedRevision::Any, big);
        let (b, rb) = append("s", ExpectedRevision::Any, three(0));
        h.group(vec![a, b]);
        assert_eq!(answer(ra).expect("big append").last_position, 2);
        assert_eq!(answer(rb).expect("small append").first_position, 3);
        let state = h.writer.shared.snapshot();
        assert_eq!(state.sealed.len(), 1);
        assert_eq!(state.sealed[0].end_position(), 3);
        let len = std::fs::metadata(&state.sealed[0].path)
            .expect("segment")
            .len();
        assert!(len > 4096, "{len}");
        assert_eq!(state.open.first_position, 3);
    }
}

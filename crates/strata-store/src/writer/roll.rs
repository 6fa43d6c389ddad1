//! Sealing the open segment: when a request's frames would carry it past `segment_size`, the
//! segment is synced, its index file written, it is mapped, and a new segment starts.

use std::sync::Arc;

use super::Writer;
use crate::error::{Error, Result};
use crate::file_io::sync_dir;
use crate::frame::{encode_segment_header, SEGMENT_HEADER_LEN};
use crate::index_file::{write_index, SegmentIndex};
use crate::log::LogState;
use crate::memtable::Memtable;
use crate::segment::{index_file_name, map_file, segment_file_name, OpenSegment, SealedSegment};

/// Whether `added` bytes of frames, which would start at byte `before` of the open segment, must
/// go to a new segment. A segment holding only its header takes any append, so one request is
/// never split across segments and a segment passes `segment_size` by at most one request.
pub(super) fn needs_roll(before: u64, added: u64, segment_size: u64) -> bool {
    added > 0 && before > SEGMENT_HEADER_LEN && before + added > segment_size
}

impl Writer {
    /// Seals the open segment (index file written, segment mapped) and starts a new one at
    /// `next_position`. Called only between groups, so everything in the segment is published.
    pub(super) fn roll(&mut self) -> Result<()> {
        let open_path = self.state.open.path.clone();
        self.sync().map_err(|e| Error::io(&open_path, e))?;
        let dir = self.shared.dir.clone();
        let open = self.state.open.clone();
        let input = open
            .table
            .read()
            .to_index_input(open.first_position, self.seg_len);
        let idx_path = dir.join(index_file_name(open.first_position));
        write_index(&idx_path, input)?;
        let sealed = SealedSegment::freshly_indexed(
            open.path.clone(),
            open.first_position,
            map_file(&open.path)?,
            SegmentIndex::open(&idx_path, open.first_position, self.seg_len)?,
        );
        let path = dir.join(segment_file_name(self.next_position));
        let mut file = self
            .shared
            .options
            .file_io
            .open_append(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.write_all(&encode_segment_header(self.next_position))
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let new_open = OpenSegment::open(&path, self.next_position, Memtable::default())?;
        let mut sealed_list = self.state.sealed.clone();
        sealed_list.push(Arc::new(sealed));
        let state = Arc::new(LogState {
            sealed: sealed_list,
            open: Arc::new(new_open),
        });
        *self.shared.state.write() = state.clone();
        self.state = state;
        self.file = file;
        self.seg_len = SEGMENT_HEADER_LEN;
        self.unsynced = false;
        Ok(())
    }
}

//! The immutable index file of one sealed log segment.
//!
//! An index file is written once by [`write_index`] (atomically: temporary file, fsync, rename,
//! fsync of the directory) and from then on only read, through a read-only memory map, by
//! [`SegmentIndex`]. [`SegmentIndex::open`] validates the header only (cheap);
//! [`SegmentIndex::verify`] checks the body checksum and the consistency of every section.
//!
//! The byte layout (format versions 2 and 3) is documented on the `format` module, and restated in
//! `docs/on-disk-format.md`; the two must stay identical.
//!
//! # Invariants
//!
//! - A file under its final name is complete and never changes: [`write_index`] writes
//!   `<name>.tmp`, fsyncs it, renames it over `<name>` and fsyncs the directory; nothing writes
//!   to an index file in place afterwards. That is what makes the memory map of
//!   [`SegmentIndex`] sound.
//! - The writer only writes what the reader accepts: [`write_index`] refuses input that breaks
//!   the requirements on [`IndexInput`] ([`crate::Error::InvalidInput`]) and sorts the entries
//!   itself, so every file it writes passes [`SegmentIndex::verify`].
//! - After [`SegmentIndex::open`], no query can index outside the map; a damaged body (which
//!   [`SegmentIndex::verify`] detects) gives wrong answers or errors, never a panic.
//!
//! # Modules
//!
//! - `format`: the layout's constants, the record types, the little-endian byte helpers.
//! - `write`: [`IndexInput`], its checks, the encoder and the atomic [`write_index`].
//! - `open`: [`SegmentIndex::open`], the header and section-table validation.
//! - `read`: [`SegmentIndex`] and its queries (binary searches over the sorted sections).
//! - `verify`: [`SegmentIndex::verify_checksum`] and the full body check
//!   [`SegmentIndex::verify`].

#[cfg(test)]
mod fixtures;
pub(crate) mod format;
mod open;
mod read;
mod verify;
mod write;

pub(crate) use format::id_bloom_key;
pub use format::{IdEntry, Posting, StreamEntry, NO_FRAME};
pub(crate) use open::is_stale_version;
pub use read::SegmentIndex;
pub(crate) use write::encode;
pub use write::{write_index, write_index_via, IndexInput};

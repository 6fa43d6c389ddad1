//! The in-memory index of the open segment, turned into an index file when the segment is sealed.
//!
//! Its size is bounded by the segment size, not by the history of the store.

use std::collections::{BTreeSet, HashMap};

use foldhash::fast::RandomState;

use crate::correlation::LinkKeys;
use crate::hash::{category_of, hash_str};
use crate::index_file::{IdEntry, IndexInput, Posting, StreamEntry};

/// Index entries of the events of the open segment that are committed (or being published).
#[derive(Default, Debug)]
pub(crate) struct Memtable {
    /// Bytes of the segment file that hold committed frames: every offset in `offsets` lies
    /// below it, and the file is never cut below it while the segment is open. Reads of the
    /// open segment never look past it.
    pub end: u64,
    /// `offsets[i]`: frame offset of the event at `first_position + i`, or
    /// [`crate::index_file::NO_FRAME`] for a position without a frame (removed, or lost in
    /// damage: see the open segment's `lost`).
    pub offsets: Vec<u64>,
    /// Stream name → (revision, position), ascending.
    pub streams: HashMap<String, Vec<(u64, u64)>, RandomState>,
    /// (stream hash, event id) → revision.
    pub ids: HashMap<(u64, u128), u64, RandomState>,
    /// Category hash → positions, ascending.
    pub categories: HashMap<u64, Vec<u64>, RandomState>,
    /// Event-type hash → positions, ascending.
    pub types: HashMap<u64, Vec<u64>, RandomState>,
    /// Streams whose revision 0 lies in this segment — or, after positions lost in damage,
    /// whose first event here follows the loss (their revision 0 may be among the lost ones):
    /// the stream listing starts from these names, so a stream is never left out for its
    /// first event being damaged.
    pub created: BTreeSet<String>,
    /// Positions without an intact frame were recorded ([`Memtable::insert_missing`]).
    after_loss: bool,
    /// Correlation-index key (see [`crate::correlation`]) → positions, ascending. Most keys
    /// (event ids, causation ids) have one position: kept inline, without an allocation.
    pub links: HashMap<u64, Positions, RandomState>,
}

/// The ascending positions of one correlation-index key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Positions {
    /// One position (no allocation).
    One(u64),
    /// Two or more.
    Many(Vec<u64>),
}

impl Positions {
    /// Appends `position` (greater than every position already held).
    pub fn push(&mut self, position: u64) {
        match self {
            Positions::One(first) => *self = Positions::Many(vec![*first, position]),
            Positions::Many(v) => v.push(position),
        }
    }

    /// The positions, ascending.
    pub fn as_slice(&self) -> &[u64] {
        match self {
            Positions::One(p) => std::slice::from_ref(p),
            Positions::Many(v) => v,
        }
    }
}

/// What the memtable records of one event (hashes precomputed by the caller).
pub(crate) struct MemEntry<'a> {
    pub stream: &'a str,
    pub stream_hash: u64,
    pub category_hash: u64,
    pub type_hash: u64,
    pub id: u128,
    pub revision: u64,
    pub position: u64,
    pub offset: u64,
    /// The event's correlation-index keys.
    pub links: LinkKeys,
}

impl<'a> MemEntry<'a> {
    /// The entry for an event read back from a segment.
    pub fn from_view(v: &crate::frame::EventView<'a>, offset: u64) -> Self {
        MemEntry {
            stream: v.stream,
            stream_hash: hash_str(v.stream),
            category_hash: hash_str(category_of(v.stream)),
            type_hash: hash_str(v.event_type),
            id: v.id.as_u128(),
            revision: v.revision,
            position: v.position,
            offset,
            links: LinkKeys::of(v.id, v.metadata),
        }
    }
}

impl Memtable {
    /// An empty memtable of a segment whose published bytes end at `end` (its header).
    pub fn empty(end: u64) -> Memtable {
        Memtable {
            end,
            ..Memtable::default()
        }
    }

    /// Records one committed event. Events must be inserted in position order.
    pub fn insert(&mut self, e: &MemEntry<'_>) {
        self.offsets.push(e.offset);
        match self.streams.get_mut(e.stream) {
            Some(v) => v.push((e.revision, e.position)),
            None => {
                self.streams
                    .insert(e.stream.to_owned(), vec![(e.revision, e.position)]);
                if self.after_loss {
                    self.created.insert(e.stream.to_owned());
                }
            }
        }
        self.ids.insert((e.stream_hash, e.id), e.revision);
        self.categories
            .entry(e.category_hash)
            .or_default()
            .push(e.position);
        self.types.entry(e.type_hash).or_default().push(e.position);
        if e.revision == 0 {
            self.created.insert(e.stream.to_owned());
        }
        for &key in e.links.as_slice() {
            match self.links.get_mut(&key) {
                Some(positions) => positions.push(e.position),
                None => {
                    self.links.insert(key, Positions::One(e.position));
                }
            }
        }
    }

    /// Records positions that have no intact frame (events must be inserted in position order).
    pub fn insert_missing(&mut self, positions: std::ops::Range<u64>) {
        self.after_loss |= !positions.is_empty();
        self.offsets
            .extend(positions.map(|_| crate::index_file::NO_FRAME));
    }

    /// Lists every stream of this segment as created here. After damage a stream's revision 0
    /// may be among the lost events while later ones are intact: the listing must still find
    /// it. A superset is harmless (listings merge and de-duplicate names, and check heads).
    pub fn list_every_stream_as_created(&mut self) {
        let names: Vec<String> = self.streams.keys().cloned().collect();
        self.created.extend(names);
    }

    /// The index-file input describing this memtable's segment.
    pub fn to_index_input(&self, first_position: u64, segment_len: u64) -> IndexInput {
        let mut streams = Vec::new();
        for (name, entries) in &self.streams {
            let hash = hash_str(name);
            streams.extend(entries.iter().map(|&(revision, position)| StreamEntry {
                hash,
                revision,
                position,
            }));
        }
        let postings = |m: &HashMap<u64, Vec<u64>, RandomState>| {
            let mut out = Vec::new();
            for (&hash, positions) in m {
                out.extend(positions.iter().map(|&position| Posting { hash, position }));
            }
            out
        };
        IndexInput {
            first_position,
            segment_len,
            offsets: self.offsets.clone(),
            streams,
            ids: self
                .ids
                .iter()
                .map(|(&(stream_hash, id), &revision)| IdEntry {
                    stream_hash,
                    id,
                    revision,
                })
                .collect(),
            categories: postings(&self.categories),
            types: postings(&self.types),
            correlations: self
                .links
                .iter()
                .flat_map(|(&hash, positions)| {
                    positions
                        .as_slice()
                        .iter()
                        .map(move |&position| Posting { hash, position })
                })
                .collect(),
            created: self.created.iter().cloned().collect(),
        }
    }
}

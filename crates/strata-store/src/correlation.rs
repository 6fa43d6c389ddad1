//! Correlation and causation: the metadata convention and the keys of the correlation index.
//!
//! # Convention
//!
//! An event's `metadata`, when it is a JSON object, may carry two string fields:
//!
//! - `correlation_id`: the business flow the event belongs to. Every event of one flow (the
//!   command that started it, the events it caused, the events those caused...) carries the
//!   same value.
//! - `causation_id`: the id (a UUID, as text) of the event that caused this one.
//!
//! Both are indexed when an event is appended (see the index keys below), so that one flow's
//! events ([`crate::AllFilter::correlation_id`]) and the causation chain
//! ([`crate::Store::causes`], [`crate::Store::effects`]) are found without scanning the log.
//!
//! # Index keys
//!
//! An event whose metadata carries `correlation_id` or `causation_id` (as a string, spelled
//! literally as the object's own key, not nested) gets up to three postings `(key, position)`
//! in the correlation index (the memtable of the open segment, then the "correlation postings"
//! section of the segment's index file):
//!
//! - [`correlation_key`] of its `correlation_id`;
//! - [`causation_key`] of its `causation_id`;
//! - [`id_key`] of its own event id (so that the causation chain can find it).
//!
//! Events without either field get no posting and cost the index nothing but one look for the
//! two field names in their metadata bytes. Keys are hashes: lookups are candidates that the
//! reader confirms against the event itself.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// Hash seed of [`correlation_key`]. Part of the on-disk format.
const SEED_CORRELATION: u64 = 0x636f_7272; // "corr"
/// Hash seed of [`causation_key`]. Part of the on-disk format.
const SEED_CAUSATION: u64 = 0x6361_7573; // "caus"
/// Hash seed of [`id_key`]. Part of the on-disk format.
const SEED_ID: u64 = 0x6576_6964; // "evid"

/// The metadata key of the flow an event belongs to.
pub const CORRELATION_ID_KEY: &str = "correlation_id";
/// The metadata key naming the event that caused an event.
pub const CAUSATION_ID_KEY: &str = "causation_id";

/// The index key of a correlation id: XXH3-64 of its UTF-8 bytes with seed `0x636f7272`.
pub fn correlation_key(correlation_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(correlation_id.as_bytes(), SEED_CORRELATION)
}

/// The index key of a causation id: XXH3-64 (seed `0x63617573`) of the id's 16 bytes (RFC 4122
/// order) when it parses as a UUID (so `{...}`, upper-case or simple forms name the same
/// event), else of its UTF-8 text.
pub fn causation_key(causation_id: &str) -> u64 {
    match Uuid::try_parse(causation_id) {
        Ok(id) => xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), SEED_CAUSATION),
        Err(_) => xxhash_rust::xxh3::xxh3_64_with_seed(causation_id.as_bytes(), SEED_CAUSATION),
    }
}

/// [`causation_key`] of the id `id` (what an effect of the event `id` is indexed under).
pub fn causation_key_of(id: Uuid) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), SEED_CAUSATION)
}

/// The index key of an event's own id: XXH3-64 (seed `0x65766964`) of its 16 bytes.
pub fn id_key(id: Uuid) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), SEED_ID)
}

/// The correlation fields of one event's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links<'a> {
    /// `metadata.correlation_id`, when it is a string.
    pub correlation_id: Option<Cow<'a, str>>,
    /// `metadata.causation_id`, when it is a string.
    pub causation_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawLinks<'a> {
    #[serde(borrow, default)]
    correlation_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    causation_id: Option<&'a RawValue>,
}

/// A string field's value; `None` for any other JSON value.
fn string_of(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// True when `haystack` contains `needle` (SIMD substring search: this runs for every
/// appended event that has metadata).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The correlation fields of `metadata` (JSON text; empty = none). Metadata that is not a JSON
/// object, or whose fields are not strings, has none. Never fails.
pub fn links_of(metadata: &[u8]) -> Links<'_> {
    if metadata.len() < 16
        || !(contains(metadata, b"\"correlation_id\"") || contains(metadata, b"\"causation_id\""))
    {
        return Links::default();
    }
    match serde_json::from_slice::<RawLinks<'_>>(metadata) {
        Ok(raw) => Links {
            correlation_id: string_of(raw.correlation_id),
            causation_id: string_of(raw.causation_id),
        },
        Err(_) => Links::default(),
    }
}

/// The index keys of one event: up to three, see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkKeys {
    keys: [u64; 3],
    len: u8,
}

impl LinkKeys {
    /// No keys (an event outside every flow).
    pub const NONE: LinkKeys = LinkKeys {
        keys: [0; 3],
        len: 0,
    };

    /// The keys of the event with this id and metadata.
    pub fn of(id: Uuid, metadata: &[u8]) -> LinkKeys {
        let links = links_of(metadata);
        if links.correlation_id.is_none() && links.causation_id.is_none() {
            return LinkKeys::NONE;
        }
        let mut out = LinkKeys::NONE;
        if let Some(c) = &links.correlation_id {
            out.push(correlation_key(c));
        }
        if let Some(c) = &links.causation_id {
            out.push(causation_key(c));
        }
        out.push(id_key(id));
        out
    }

    fn push(&mut self, key: u64) {
        if let Some(slot) = self.keys.get_mut(self.len as usize) {
            *slot = key;
            self.len += 1;
        }
    }

    /// The keys, in no particular order.
    pub fn as_slice(&self) -> &[u64] {
        &self.keys[..self.len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_top_level_object_only() {
        let l = links_of(br#"{"correlation_id":"c-1","causation_id":"x","other":{"a":1}}"#);
        assert_eq!(l.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(l.causation_id.as_deref(), Some("x"));
        let l = links_of(br#"{"nested":{"correlation_id":"c-1"}}"#);
        assert_eq!(l, Links::default());
        let l = links_of(br#"{"correlation_id":7,"causation_id":"a\"b"}"#);
        assert_eq!(l.correlation_id, None);
        assert_eq!(l.causation_id.as_deref(), Some("a\"b"));
        for not_object in [
            &b"[\"correlation_id\",1,2,3]"[..],
            b"\"correlation_id...\"",
            b"",
        ] {
            assert_eq!(links_of(not_object), Links::default());
        }
    }

    #[test]
    fn keys_cover_flow_cause_and_own_id() {
        let id = Uuid::from_u128(42);
        assert_eq!(
            LinkKeys::of(id, br#"{"other":"correlation_id"}"#),
            LinkKeys::NONE
        );
        let k = LinkKeys::of(id, br#"{"correlation_id":"c","causation_id":"x"}"#);
        assert_eq!(
            k.as_slice(),
            &[correlation_key("c"), causation_key("x"), id_key(id)]
        );
        let k = LinkKeys::of(id, br#"{"causation_id":"x"}"#);
        assert_eq!(k.as_slice(), &[causation_key("x"), id_key(id)]);
    }

    #[test]
    fn causation_keys_are_canonical_for_uuids_and_keys_are_stable() {
        let id = Uuid::from_u128(0x6f1c7a5e_0c1b_4d5e_9d7a_1b2c3d4e5f60);
        assert_eq!(
            causation_key("6F1C7A5E-0C1B-4D5E-9D7A-1B2C3D4E5F60"),
            causation_key(&id.to_string())
        );
        assert_eq!(
            causation_key("6f1c7a5e0c1b4d5e9d7a1b2c3d4e5f60"),
            causation_key(&id.to_string())
        );
        // Part of the on-disk format: these values must never change.
        assert_eq!(
            correlation_key(""),
            xxhash_rust::xxh3::xxh3_64_with_seed(b"", 0x636f_7272)
        );
        assert_ne!(correlation_key("a"), causation_key("a"));
        assert_eq!(causation_key_of(id), causation_key(&id.to_string()));
        assert_ne!(causation_key_of(id), id_key(id));
    }
}

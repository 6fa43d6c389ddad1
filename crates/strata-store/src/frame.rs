//! The on-disk record: one event per CRC-protected frame, and the segment file header.
//!
//! See `docs/on-disk-format.md` for the byte tables. Every multi-byte integer is little-endian.
//!
//! Segment header (32 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `STRATSEG` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | header length (32) |
//! | 16 | 8 | global position of the segment's first event |
//! | 24 | 4 | reserved (0) |
//! | 28 | 4 | CRC32 of bytes 0..28 |
//!
//! Frame (8-byte prefix + body):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | body length `n` |
//! | 4 | 4 | CRC32 of the body |
//! | 8 | 8 | position |
//! | 16 | 8 | revision |
//! | 24 | 8 | timestamp (µs since Unix epoch, signed) |
//! | 32 | 16 | event id (UUID bytes) |
//! | 48 | 1 | flags: bit 0 commit end, bit 1 binary data, bit 2 has metadata |
//! | 49 | 1 | reserved (0) |
//! | 50 | 2 | stream-name length `s` |
//! | 52 | 2 | event-type length `t` |
//! | 54 | 2 | reserved (0) |
//! | 56 | 4 | data length `d` |
//! | 60 | 4 | metadata length `m` |
//! | 64 | s+t+d+m | stream name, event type, data, metadata |
//!
//! The last frame of every append carries the commit-end flag: an append of k events is one
//! atomic unit because recovery keeps only frames up to the last commit end.

use uuid::Uuid;

use crate::event::{ContentType, RecordedEvent};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRATSEG";
/// Version of the segment and frame layout the writer creates: positions are dense (every
/// position from the segment's first to its last has a frame).
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// The same layout with gaps allowed: positions strictly increase from frame to frame but may
/// skip (a repair moved damaged frames out; later, a scavenge removed events). Written only by
/// rewrites; version-1 readers refuse it, so a gap is never taken for damage by old code.
pub const SEGMENT_FORMAT_VERSION_GAPS: u32 = 2;
/// Bytes before the first frame of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes before a frame's body (length + CRC).
pub const FRAME_PREFIX_LEN: usize = 8;
/// Fixed part of a frame body.
pub const BODY_FIXED_LEN: usize = 56;

const FLAG_COMMIT_END: u8 = 1;
const FLAG_BINARY: u8 = 2;
const FLAG_METADATA: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_COMMIT_END | FLAG_BINARY | FLAG_METADATA;

/// Encodes a segment header for a segment whose first event has `first_position`.
pub fn encode_segment_header(first_position: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    encode_segment_header_version(first_position, SEGMENT_FORMAT_VERSION)
}

/// Encodes a segment header of the given format version (1 or 2).
pub fn encode_segment_header_version(
    first_position: u64,
    version: u32,
) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Parses a segment header; `Err` names what is wrong. `Ok` only for exactly what
/// [`encode_segment_header`] writes (checked: length, magic, CRC, version, header length,
/// reserved word); bytes after the first 32 are not looked at.
pub fn decode_segment_header(h: &[u8]) -> Result<u64, String> {
    decode_segment_header_version(h).map(|(first, _)| first)
}

/// Like [`decode_segment_header`], also returning the format version (1 or 2).
pub fn decode_segment_header_version(h: &[u8]) -> Result<(u64, u32), String> {
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!("segment header is {} bytes, expected 32", h.len()));
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc != crc32fast::hash(&h[0..28]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != SEGMENT_FORMAT_VERSION && version != SEGMENT_FORMAT_VERSION_GAPS {
        return Err(format!("unsupported segment format version {version}"));
    }
    let header_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if u64::from(header_len) != SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment header length {header_len}, expected {SEGMENT_HEADER_LEN}"
        ));
    }
    if h[24..28] != [0; 4] {
        return Err("segment header reserved bytes are not zero".into());
    }
    Ok((read_u64(h, 16), version))
}

/// The fields of one event frame, borrowed from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventView<'a> {
    /// Log position.
    pub position: u64,
    /// Stream revision.
    pub revision: u64,
    /// Commit timestamp (µs since epoch).
    pub timestamp_micros: i64,
    /// Event id.
    pub id: Uuid,
    /// True on the last frame of an append.
    pub commit_end: bool,
    /// Data encoding.
    pub content_type: ContentType,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Payload.
    pub data: &'a [u8],
    /// Metadata (empty when absent).
    pub metadata: &'a [u8],
}

impl EventView<'_> {
    /// Copies the view into an owned event.
    pub fn to_owned_event(&self) -> RecordedEvent {
        RecordedEvent {
            id: self.id,
            stream: self.stream.to_owned(),
            revision: self.revision,
            position: self.position,
            event_type: self.event_type.to_owned(),
            timestamp_micros: self.timestamp_micros,
            content_type: self.content_type,
            data: self.data.to_vec(),
            metadata: self.metadata.to_vec(),
        }
    }
}

/// The parts of an event the encoder needs: the same fields a decoded frame has.
pub type FrameFields<'a> = EventView<'a>;

/// Total encoded size of a frame with these variable parts.
#[cfg(test)]
pub fn frame_len(stream: &str, event_type: &str, data: &[u8], metadata: &[u8]) -> usize {
    FRAME_PREFIX_LEN
        + BODY_FIXED_LEN
        + stream.len()
        + event_type.len()
        + data.len()
        + metadata.len()
}

/// Appends one encoded frame to `out`. Lengths must have been validated against the limits
/// (stream and type ≤ 65535 bytes, data and metadata ≤ 4 GiB).
pub fn encode_frame(out: &mut Vec<u8>, f: &FrameFields<'_>) {
    let body_len =
        BODY_FIXED_LEN + f.stream.len() + f.event_type.len() + f.data.len() + f.metadata.len();
    let start = out.len();
    out.reserve(FRAME_PREFIX_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // CRC, filled below
    out.extend_from_slice(&f.position.to_le_bytes());
    out.extend_from_slice(&f.revision.to_le_bytes());
    out.extend_from_slice(&f.timestamp_micros.to_le_bytes());
    out.extend_from_slice(f.id.as_bytes());
    let mut flags = 0u8;
    if f.commit_end {
        flags |= FLAG_COMMIT_END;
    }
    if f.content_type == ContentType::Binary {
        flags |= FLAG_BINARY;
    }
    if !f.metadata.is_empty() {
        flags |= FLAG_METADATA;
    }
    out.push(flags);
    out.push(0);
    out.extend_from_slice(&(f.stream.len() as u16).to_le_bytes());
    out.extend_from_slice(&(f.event_type.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(f.metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(f.stream.as_bytes());
    out.extend_from_slice(f.event_type.as_bytes());
    out.extend_from_slice(f.data);
    out.extend_from_slice(f.metadata);
    let body_start = start + FRAME_PREFIX_LEN;
    let crc = crc32fast::hash(&out[body_start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes at an offset are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame needs (a torn tail, or a read past the end).
    Short,
    /// Length prefix of zero with a zero checksum: preallocated or never-written space.
    Zero,
    /// The body fails its checksum or its fields are inconsistent.
    Bad(String),
}

/// Parses the frame starting at `buf[0]`. Returns the view and the frame's total length.
///
/// Never panics and never allocates (but for an error message), whatever `buf` holds. `Ok` only
/// for exactly what [`encode_frame`] writes: the body length must fit in `buf`, the CRC must
/// match, and then the flags must be known, the reserved bytes zero, the four field lengths must
/// add up to the body length and the metadata flag must agree with the metadata length. Bytes
/// after the frame are not looked at (they are the next frame).
pub fn decode_frame(buf: &[u8]) -> Result<(EventView<'_>, usize), FrameError> {
    if buf.len() < FRAME_PREFIX_LEN {
        return Err(FrameError::Short);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if body_len == 0 && crc == 0 {
        return Err(FrameError::Zero);
    }
    if body_len < BODY_FIXED_LEN {
        return Err(FrameError::Bad(format!(
            "frame body length {body_len} too small"
        )));
    }
    let total = FRAME_PREFIX_LEN + body_len;
    if buf.len() < total {
        return Err(FrameError::Short);
    }
    let body = &buf[FRAME_PREFIX_LEN..total];
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Bad("frame checksum mismatch".into()));
    }
    decode_body(body).map(|v| (v, total))
}

fn decode_body(b: &[u8]) -> Result<EventView<'_>, FrameError> {
    let flags = b[40];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::Bad(format!("unknown frame flags {flags:#x}")));
    }
    if b[41] != 0 || b[46] != 0 || b[47] != 0 {
        return Err(FrameError::Bad("frame reserved bytes are not zero".into()));
    }
    let s = u16::from_le_bytes([b[42], b[43]]) as usize;
    let t = u16::from_le_bytes([b[44], b[45]]) as usize;
    let d = u32::from_le_bytes([b[48], b[49], b[50], b[51]]) as usize;
    let m = u32::from_le_bytes([b[52], b[53], b[54], b[55]]) as usize;
    // Each length is at most 4 GiB, so the sum cannot overflow a 64-bit usize; checked anyway.
    let total = [s, t, d, m]
        .iter()
        .try_fold(BODY_FIXED_LEN, |acc, &n| acc.checked_add(n));
    if total != Some(b.len()) {
        return Err(FrameError::Bad("frame field lengths do not add up".into()));
    }
    if (flags & FLAG_METADATA != 0) != (m > 0) {
        return Err(FrameError::Bad(
            "frame metadata flag disagrees with the metadata length".into(),
        ));
    }
    let mut at = BODY_FIXED_LEN;
    let mut take = |n: usize| {
        let part = &b[at..at + n];
        at += n;
        part
    };
    let stream = std::str::from_utf8(take(s))
        .map_err(|_| FrameError::Bad("stream name is not UTF-8".into()))?;
    let event_type = std::str::from_utf8(take(t))
        .map_err(|_| FrameError::Bad("event type is not UTF-8".into()))?;
    let data = take(d);
    let metadata = take(m);
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[24..40]);
    Ok(EventView {
        position: read_u64(b, 0),
        revision: read_u64(b, 8),
        timestamp_micros: read_u64(b, 16) as i64,
        id: Uuid::from_bytes(id),
        commit_end: flags & FLAG_COMMIT_END != 0,
        content_type: if flags & FLAG_BINARY != 0 {
            ContentType::Binary
        } else {
            ContentType::Json
        },
        stream,
        event_type,
        data,
        metadata,
    })
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_fields() -> FrameFields<'static> {
        FrameFields {
            position: 7,
            revision: 3,
            timestamp_micros: 1_700_000_000_000_000,
            id: Uuid::from_u128(42),
            commit_end: false,
            content_type: ContentType::Binary,
            stream: "order-1",
            event_type: "Placed",
            data: b"\x00\x01",
            metadata: b"{}",
        }
    }

    fn sample(commit_end: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            &FrameFields {
                commit_end,
                ..sample_fields()
            },
        );
        out
    }

    #[test]
    fn frame_round_trips() {
        let buf = sample(true);
        assert_eq!(
            buf.len(),
            frame_len("order-1", "Placed", b"\x00\x01", b"{}")
        );
        let (v, n) = decode_frame(&buf).expect("valid frame");
        assert_eq!(n, buf.len());
        assert_eq!(v.position, 7);
        assert_eq!(v.revision, 3);
        assert_eq!(v.id, Uuid::from_u128(42));
        assert!(v.commit_end);
        assert_eq!(v.content_type, ContentType::Binary);
        assert_eq!((v.stream, v.event_type), ("order-1", "Placed"));
        assert_eq!((v.data, v.metadata), (&b"\x00\x01"[..], &b"{}"[..]));
    }

    #[test]
    fn every_truncation_is_short_and_every_flip_is_bad() {
        let buf = sample(false);
        for cut in 0..buf.len() {
            assert!(decode_frame(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(decode_frame(&b).is_err(), "flip at {i}");
        }
    }

    /// Sets body byte `at` to `v` and recomputes the CRC, so only the field checks can object.
    fn with_body_byte(buf: &[u8], at: usize, v: u8) -> Vec<u8> {
        let mut b = buf.to_vec();
        b[FRAME_PREFIX_LEN + at] = v;
        let crc = crc32fast::hash(&b[FRAME_PREFIX_LEN..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Regression (decoder property tests): a frame with a non-zero reserved byte, or a metadata
    /// flag that disagrees with the metadata length, decoded Ok when its CRC matched.
    #[test]
    fn reserved_bytes_and_metadata_flag_must_be_as_written() {
        let buf = sample(true);
        for at in [41, 46, 47] {
            let b = with_body_byte(&buf, at, 1);
            assert!(
                matches!(decode_frame(&b), Err(FrameError::Bad(_))),
                "reserved byte {at}"
            );
        }
        // `sample` has metadata: clearing its flag is inconsistent.
        let flags = buf[FRAME_PREFIX_LEN + 40];
        let b = with_body_byte(&buf, 40, flags & !FLAG_METADATA);
        assert!(matches!(decode_frame(&b), Err(FrameError::Bad(_))));
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            &FrameFields {
                metadata: &[],
                ..sample_fields()
            },
        );
        let b = with_body_byte(&out, 40, out[FRAME_PREFIX_LEN + 40] | FLAG_METADATA);
        assert!(matches!(decode_frame(&b), Err(FrameError::Bad(_))));
    }

    #[test]
    fn zero_space_is_recognised() {
        assert_eq!(decode_frame(&[0u8; 64]).unwrap_err(), FrameError::Zero);
    }

    /// Regression (decoder property tests): a header whose length field is not 32 or whose
    /// reserved word is not zero decoded Ok when its CRC matched.
    #[test]
    fn segment_header_length_and_reserved_fields_are_checked() {
        for (at, v) in [
            (12, 33u32),
            (12, u32::MAX),
            (12, 0),
            (24, 1),
            (24, u32::MAX),
        ] {
            let mut h = encode_segment_header(5);
            h[at..at + 4].copy_from_slice(&v.to_le_bytes());
            let crc = crc32fast::hash(&h[0..28]);
            h[28..32].copy_from_slice(&crc.to_le_bytes());
            assert!(decode_segment_header(&h).is_err(), "field at {at} = {v}");
        }
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let h = encode_segment_header(1234);
        assert_eq!(decode_segment_header(&h), Ok(1234));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
        assert!(decode_segment_header(&h[..10]).is_err());
    }
}

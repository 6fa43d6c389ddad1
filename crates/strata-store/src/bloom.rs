//! A small bloom filter over 64-bit keys, used by the segment index files.
//!
//! Keys are expected to be hashes already (e.g. XXH3 of a stream name); they are still passed
//! through a SplitMix64 finalizer so that poorly distributed keys (small integers in tests, XORs
//! of hashes) behave well too.
//!
//! # Serialized form (part of the on-disk format, little-endian)
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 4    | `num_probes` (u32), 1..=[`MAX_PROBES`]                       |
//! | 4      | 4    | reserved, written as 0, ignored when read                    |
//! | 8      | n    | bit array, `n` a multiple of 8 and at least 8 (>= 64 bits)   |
//!
//! Bit `b` of the array is bit `b % 8` (least significant first) of byte `8 + b / 8`.
//!
//! # Probe sequence (part of the on-disk format)
//!
//! With `m` the number of bits, `h = splitmix64_finalizer(key)`, `h1 = h` and
//! `h2 = h.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15`, probe `i` (for `i` in `0..num_probes`)
//! sets/tests bit `((h1 + i * h2) mod 2^64) * m >> 64` (a 64x64 -> 128-bit multiply, keeping the
//! high half: a uniform reduction into `0..m`).

/// Bits per key the index files use: about 0.8 % false positives with 7 probes.
pub const DEFAULT_BITS_PER_KEY: usize = 10;

/// The largest probe count accepted by [`BloomRef::parse`].
pub const MAX_PROBES: u32 = 30;

/// Length of the serialized header (`num_probes` + reserved).
const HEADER_LEN: usize = 8;

/// The constant XORed into the second hash of the double-hashing scheme.
const H2_CONSTANT: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finalizer: a bijective 64-bit mix. Part of the on-disk format.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Calls `f` with the bit index of every probe of `key` in a filter of `num_bits` bits.
///
/// `num_bits` must be non-zero; every index passed to `f` is `< num_bits`.
#[inline]
fn for_each_probe(key: u64, num_probes: u32, num_bits: u64, mut f: impl FnMut(u64) -> bool) {
    let h1 = mix64(key);
    let h2 = h1.rotate_left(32) ^ H2_CONSTANT;
    let mut h = h1;
    for _ in 0..num_probes {
        // High half of a 128-bit product: always < num_bits.
        let bit = ((u128::from(h) * u128::from(num_bits)) >> 64) as u64;
        if !f(bit) {
            return;
        }
        h = h.wrapping_add(h2);
    }
}

/// Builds a bloom filter and serializes it with [`BloomBuilder::finish`].
///
/// Invariant: the bit array holds a non-zero multiple of 64 bits and `num_probes` is in
/// `1..=MAX_PROBES`, so its serialized form always parses with [`BloomRef::parse`].
#[derive(Clone, Debug)]
pub struct BloomBuilder {
    num_probes: u32,
    bits: Vec<u8>,
}

impl BloomBuilder {
    /// A filter sized for `expected_items` keys at `bits_per_key` bits each (rounded up to a
    /// multiple of 64 bits, at least 64). The probe count is `round(bits_per_key * ln 2)`, clamped
    /// to `1..=MAX_PROBES` (7 for the usual 10 bits per key).
    pub fn new(expected_items: usize, bits_per_key: usize) -> BloomBuilder {
        let bits = expected_items.saturating_mul(bits_per_key).max(64);
        let words = bits.div_ceil(64);
        let num_probes = (bits_per_key.saturating_mul(69).saturating_add(50) / 100)
            .clamp(1, MAX_PROBES as usize) as u32;
        BloomBuilder {
            num_probes,
            bits: vec![0; words * 8],
        }
    }

    /// Number of probes per key.
    #[cfg(test)]
    pub fn num_probes(&self) -> u32 {
        self.num_probes
    }

    /// Adds `key` to the set.
    pub fn insert(&mut self, key: u64) {
        let num_bits = (self.bits.len() as u64) * 8;
        let bits = &mut self.bits;
        for_each_probe(key, self.num_probes, num_bits, |bit| {
            bits[(bit / 8) as usize] |= 1 << (bit % 8);
            true
        });
    }

    /// The serialized filter: `num_probes` (u32 LE), a zero u32, then the bit array.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.bits.len());
        out.extend_from_slice(&self.num_probes.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.bits);
        out
    }
}

/// A read-only view of a serialized bloom filter.
///
/// Invariant (checked by [`BloomRef::parse`]): `bits` is non-empty with a length that is a multiple
/// of 8 bytes, and `num_probes` is in `1..=MAX_PROBES`.
#[derive(Clone, Copy, Debug)]
pub struct BloomRef<'a> {
    num_probes: u32,
    bits: &'a [u8],
}

impl<'a> BloomRef<'a> {
    /// Parses the output of [`BloomBuilder::finish`]; `None` if `bytes` is not a well-formed filter
    /// (too short, bit array not a non-zero multiple of 64 bits, probe count out of range).
    pub fn parse(bytes: &'a [u8]) -> Option<BloomRef<'a>> {
        let (header, bits) = bytes.split_at_checked(HEADER_LEN)?;
        let mut probes = [0u8; 4];
        probes.copy_from_slice(header.get(..4)?);
        let num_probes = u32::from_le_bytes(probes);
        if !(1..=MAX_PROBES).contains(&num_probes) || bits.is_empty() || bits.len() % 8 != 0 {
            return None;
        }
        Some(BloomRef { num_probes, bits })
    }

    /// Size of the bit array in bits.
    pub fn num_bits(&self) -> u64 {
        (self.bits.len() as u64) * 8
    }

    /// `false` if `key` was certainly never inserted; `true` if it may have been.
    pub fn may_contain(&self, key: u64) -> bool {
        let mut all = true;
        for_each_probe(key, self.num_probes, self.num_bits(), |bit| {
            let set = self
                .bits
                .get((bit / 8) as usize)
                .is_some_and(|byte| byte & (1 << (bit % 8)) != 0);
            all &= set;
            set
        });
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_and_probes() {
        let b = BloomBuilder::new(0, DEFAULT_BITS_PER_KEY);
        assert_eq!(b.num_probes(), 7);
        let bytes = b.finish();
        assert_eq!(bytes.len(), 8 + 8);
        let b = BloomBuilder::new(100, 10).finish();
        assert_eq!(b.len(), 8 + 1000_usize.div_ceil(64) * 8);
        assert_eq!(&b[..4], &7u32.to_le_bytes());
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(BloomBuilder::new(10, 0).num_probes(), 1);
        assert_eq!(BloomBuilder::new(10, 1000).num_probes(), MAX_PROBES);
    }

    #[test]
    fn empty_filter_contains_nothing() {
        let bytes = BloomBuilder::new(0, 10).finish();
        let f = BloomRef::parse(&bytes).expect("parse");
        assert_eq!(f.num_bits(), 64);
        for k in 0..1000u64 {
            assert!(!f.may_contain(k));
        }
    }

    #[test]
    fn parse_rejects_malformed() {
        assert!(BloomRef::parse(&[]).is_none());
        assert!(BloomRef::parse(&[7, 0, 0, 0, 0, 0, 0, 0]).is_none());
        let good = BloomBuilder::new(10, 10).finish();
        assert!(BloomRef::parse(&good).is_some());
        assert!(BloomRef::parse(&good[..good.len() - 1]).is_none());
        let mut bad = good.clone();
        bad[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(BloomRef::parse(&bad).is_none());
        bad[..4].copy_from_slice(&(MAX_PROBES + 1).to_le_bytes());
        assert!(BloomRef::parse(&bad).is_none());
    }

    #[test]
    fn false_positive_rate_is_low() {
        let n = 10_000u64;
        let mut b = BloomBuilder::new(n as usize, DEFAULT_BITS_PER_KEY);
        // Sequential keys: the internal mix must cope with them.
        for k in 0..n {
            b.insert(k);
        }
        let bytes = b.finish();
        let f = BloomRef::parse(&bytes).expect("parse");
        for k in 0..n {
            assert!(f.may_contain(k));
        }
        let trials = 100_000u64;
        let fp = (n..n + trials).filter(|&k| f.may_contain(k)).count();
        let rate = fp as f64 / trials as f64;
        assert!(rate < 0.02, "false-positive rate {rate}");
    }

    proptest! {
        #[test]
        fn no_false_negatives(keys in proptest::collection::vec(any::<u64>(), 0..400), bpk in 1usize..16) {
            let mut b = BloomBuilder::new(keys.len(), bpk);
            for &k in &keys {
                b.insert(k);
            }
            let bytes = b.finish();
            let f = BloomRef::parse(&bytes).expect("parse");
            for &k in &keys {
                prop_assert!(f.may_contain(k));
            }
        }
    }
}

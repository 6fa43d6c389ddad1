//! The stable hash used by every on-disk index.
//!
//! The function is part of the on-disk format: changing it requires a new format version.

/// 64-bit XXH3 of the bytes of `s` (seed 0). Stable across platforms and releases.
pub fn hash_str(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// The category of a stream: the part before the first `-`, or the whole name.
pub fn category_of(stream: &str) -> &str {
    match stream.find('-') {
        Some(i) => &stream[..i],
        None => stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_is_prefix_before_first_dash() {
        assert_eq!(category_of("order-42"), "order");
        assert_eq!(category_of("order-42-x"), "order");
        assert_eq!(category_of("order"), "order");
        assert_eq!(category_of("-x"), "");
    }

    #[test]
    fn hash_is_stable() {
        // Part of the on-disk format: this value must never change.
        assert_eq!(hash_str(""), 0x2d06800538d394c2);
    }
}

//! The live states, one per partition. The unpartitioned state (the partition `""`) has its own
//! slot: the common single-state projection then pays no hashing per event.

use foldhash::HashMap;

/// What one partition key held in a Rust map costs besides its bytes (an estimate): the
/// `String`, the saved value and the map's slot, the allocation's rounding.
pub(crate) const KEY_OVERHEAD: usize = 64;

/// The memory a key held in a Rust map takes (an estimate); the partition `""` takes none.
pub(crate) fn key_bytes(partition: &str) -> usize {
    if partition.is_empty() {
        0
    } else {
        KEY_OVERHEAD + partition.len()
    }
}

/// Partition key → value, with `""` kept outside the map. Keeps the total of [`key_bytes`] of
/// its keys, which live outside the JavaScript heap.
pub(crate) struct States<V> {
    unpartitioned: Option<V>,
    partitions: HashMap<String, V>,
    key_bytes: usize,
}

impl<V> Default for States<V> {
    fn default() -> Self {
        States {
            unpartitioned: None,
            partitions: HashMap::default(),
            key_bytes: 0,
        }
    }
}

impl<V> States<V> {
    pub(crate) fn get(&self, partition: &str) -> Option<&V> {
        if partition.is_empty() {
            self.unpartitioned.as_ref()
        } else {
            self.partitions.get(partition)
        }
    }

    /// Sets the value of `partition`, allocating its key only when it is new.
    pub(crate) fn set(&mut self, partition: &str, value: V) {
        if partition.is_empty() {
            self.unpartitioned = Some(value);
        } else if let Some(slot) = self.partitions.get_mut(partition) {
            *slot = value;
        } else {
            self.partitions.insert(partition.to_owned(), value);
            self.key_bytes += key_bytes(partition);
        }
    }

    pub(crate) fn remove(&mut self, partition: &str) -> Option<V> {
        if partition.is_empty() {
            self.unpartitioned.take()
        } else {
            let removed = self.partitions.remove(partition);
            if removed.is_some() {
                self.key_bytes -= key_bytes(partition);
            }
            removed
        }
    }

    /// The total [`key_bytes`] of the partitions with a value.
    pub(crate) fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    /// Every partition with a value, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.unpartitioned
            .as_ref()
            .map(|_| "")
            .into_iter()
            .chain(self.partitions.keys().map(String::as_str))
    }

    pub(crate) fn clear(&mut self) {
        self.unpartitioned = None;
        self.partitions.clear();
        self.key_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_partition_is_a_partition_like_the_others() {
        let mut s = States::default();
        assert!(s.keys().next().is_none());
        s.set("", 1);
        s.set("a", 2);
        s.set("a", 3);
        assert_eq!(s.get(""), Some(&1));
        assert_eq!(s.get("a"), Some(&3));
        assert!(s.get("b").is_none());
        let mut keys: Vec<&str> = s.keys().collect();
        keys.sort();
        assert_eq!(keys, ["", "a"]);
        assert_eq!(
            s.key_bytes(),
            KEY_OVERHEAD + 1,
            "counted once, and \"\" not at all"
        );
        s.set("bc", 4);
        assert_eq!(s.key_bytes(), 2 * KEY_OVERHEAD + 3);
        assert_eq!(s.remove("bc"), Some(4));
        assert_eq!(s.remove("bc"), None);
        assert_eq!(s.remove(""), Some(1));
        assert_eq!(s.remove(""), None);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(s.key_bytes(), KEY_OVERHEAD + 1);
        s.clear();
        assert!(s.get("a").is_none());
        assert_eq!(s.key_bytes(), 0);
    }
}

//! The live states, one per partition. The unpartitioned state (the partition `""`) has its own
//! slot: the common single-state projection then pays no hashing per event.

use foldhash::HashMap;

/// Partition key → value, with `""` kept outside the map.
pub(crate) struct States<V> {
    unpartitioned: Option<V>,
    partitions: HashMap<String, V>,
}

impl<V> Default for States<V> {
    fn default() -> Self {
        States {
            unpartitioned: None,
            partitions: HashMap::default(),
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
        }
    }

    pub(crate) fn remove(&mut self, partition: &str) -> Option<V> {
        if partition.is_empty() {
            self.unpartitioned.take()
        } else {
            self.partitions.remove(partition)
        }
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
        assert_eq!(s.remove(""), Some(1));
        assert_eq!(s.remove(""), None);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a"]);
        s.clear();
        assert!(s.get("a").is_none());
    }
}

//! Ack ids: opaque strings naming one delivery of one event of one group incarnation.
//!
//! The text is `<generation:16 hex>.<cursor hex>.<delivery hex>`; clients must treat it as
//! opaque. The generation is a random number chosen when the group is created, so the ids of
//! a deleted and re-created group are unknown to the new one.

/// One parsed ack id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AckId {
    /// The group incarnation.
    pub generation: u64,
    /// The event's cursor (stream revision or log position).
    pub cursor: u64,
    /// Which delivery of the event (1 = first).
    pub delivery: u32,
}

impl AckId {
    /// The text form.
    pub fn encode(&self) -> String {
        format!(
            "{:016x}.{:x}.{:x}",
            self.generation, self.cursor, self.delivery
        )
    }

    /// Parses the text form; `None` when it is not one.
    pub fn parse(s: &str) -> Option<AckId> {
        let mut parts = s.split('.');
        let generation = parts.next().filter(|g| g.len() == 16)?;
        let cursor = parts.next().filter(|c| !c.is_empty() && c.len() <= 16)?;
        let delivery = parts.next().filter(|d| !d.is_empty() && d.len() <= 8)?;
        if parts.next().is_some() {
            return None;
        }
        let hex = |t: &str| t.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(generation) || !hex(cursor) || !hex(delivery) {
            return None;
        }
        Some(AckId {
            generation: u64::from_str_radix(generation, 16).ok()?,
            cursor: u64::from_str_radix(cursor, 16).ok()?,
            delivery: u32::from_str_radix(delivery, 16).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let id = AckId {
            generation: u64::MAX - 3,
            cursor: 1234567,
            delivery: 3,
        };
        assert_eq!(AckId::parse(&id.encode()), Some(id));
        for bad in [
            "",
            "x",
            "0000000000000001.1",
            "0000000000000001.1.1.1",
            "000000000000001.1.1",
            "000000000000000g.1.1",
            "0000000000000001.+1.1",
            "0000000000000001..1",
            "0000000000000001.1.123456789",
        ] {
            assert_eq!(AckId::parse(bad), None, "{bad}");
        }
    }
}

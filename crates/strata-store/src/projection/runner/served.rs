//! The served states and the memory they take.
//!
//! States are served as their compact JSON text (`serde_json`'s encoding of the engine's
//! state), made once per batch for the states the batch changed ([`serialise`]). The served
//! states' memory ([`served_bytes`]: text, key and map entry) is reported to the engine after
//! every batch ([`ProjectionEngine::set_external_bytes`]), so that it counts against the
//! engine's memory limit; a fresh engine is told it as soon as the served states are restored
//! into it ([`fresh_engine`]).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Fault, RunnerShared};
use crate::projection::engine::{ProjectionEngine, ProjectionError};

/// A served state, as its compact JSON text, and the memory it takes here, its key included
/// (see [`served_bytes`]): the runner's copy counts against the engine's memory limit
/// ([`ProjectionEngine::set_external_bytes`]).
pub(super) struct Served {
    pub(super) json: Arc<RawValue>,
    pub(super) bytes: usize,
}

impl Served {
    pub(super) fn new(key: &str, json: Box<RawValue>) -> Served {
        Served {
            bytes: served_bytes(key, &json),
            json: Arc::from(json),
        }
    }
}

/// The heap memory of one served state, its key and its map entry included: the lengths of the
/// JSON text and of the key, plus the fixed costs of their allocations (the `Arc`'s counts, the
/// allocator's header and rounding) and of the hash table's slots. About 160 bytes for a
/// `{"count":1,"total":3}` state with a short key (measured with glibc: 150 to 190 depending on
/// how full the table is).
fn served_bytes(key: &str, json: &RawValue) -> usize {
    use std::mem::size_of;
    // A hash table is between 7/16 and 7/8 full, about 1.6 slots per entry on average; a slot
    // holds the key's `String`, the `Served` and a control byte.
    const ENTRY: usize = (size_of::<String>() + size_of::<Served>() + 1) * 8 / 5;
    // The `Arc`'s strong and weak counts, before the text.
    const COUNTS: usize = 2 * size_of::<usize>();
    // A heap allocation as glibc's malloc makes it: 8 bytes of header, a multiple of 16, at
    // least 32 bytes.
    let heap = |len: usize| {
        if len == 0 {
            0
        } else {
            (len + 8).next_multiple_of(16).max(32)
        }
    };
    ENTRY + heap(key.len()) + heap(COUNTS + json.get().len())
}

/// An engine built by the builder with every served state restored, and told how much the
/// served states take ([`ProjectionEngine::set_external_bytes`]); with that amount.
pub(super) fn fresh_engine(sh: &RunnerShared) -> Result<(Box<dyn ProjectionEngine>, usize), Fault> {
    let mut engine = (sh.builder)().map_err(|e| Fault::user(e, None))?;
    let mut served = 0;
    for (k, v) in sh.states.read().iter() {
        engine
            .restore_json(k, &v.json)
            .map_err(|e| Fault::user(e, None))?;
        served += v.bytes;
    }
    engine.set_external_bytes(served);
    Ok((engine, served))
}

/// Partition keys with their states' compact JSON text (`None`: the partition has no state).
type Encoded = Vec<(String, Option<Box<RawValue>>)>;

/// The states of `touched` as compact JSON text.
pub(super) fn serialise(
    engine: &mut dyn ProjectionEngine,
    touched: HashSet<String>,
) -> Result<Encoded, ProjectionError> {
    let mut states = Vec::with_capacity(touched.len());
    for key in touched {
        // The value is dropped as soon as it is encoded: at most one state is held twice.
        let json = engine
            .state(&key)?
            .map(|value| serde_json::value::to_raw_value(&value))
            .transpose()
            .map_err(|e| ProjectionError::new(format!("the state cannot be encoded: {e}")))?;
        states.push((key, json));
    }
    Ok(states)
}

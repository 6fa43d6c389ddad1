//! Resource limits of one projection's sandbox.

use std::time::Duration;

/// The limits of one projection's JavaScript sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsLimits {
    /// Memory the projection may use in total: what the runtime allocates (every partition's
    /// state, the definition, the temporaries of the call in progress) plus the partition keys
    /// and the runner's served copies of the states, which live outside the runtime and are
    /// counted against it. Default 64 MiB; 0 means no limit.
    pub memory_bytes: usize,
    /// Wall time one call into user code may take (`$init` plus a handler, `partitionBy`, a
    /// state's serialisation, the definition script at compile). Default 250 ms.
    pub per_event: Duration,
    /// Native stack the interpreter may use (deep recursion); at least 64 KiB is applied. The
    /// engine's thread needs this much stack plus room for its own frames. Default 1 MiB.
    pub max_stack_bytes: usize,
}

impl Default for JsLimits {
    fn default() -> Self {
        JsLimits {
            memory_bytes: 64 << 20,
            per_event: Duration::from_millis(250),
            max_stack_bytes: 1 << 20,
        }
    }
}

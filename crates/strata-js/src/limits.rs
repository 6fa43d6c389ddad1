//! Resource limits of one projection's sandbox.

use std::time::Duration;

/// The limits of one projection's JavaScript sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsLimits {
    /// Memory the runtime may allocate in total (states, definition, temporaries). Default 64 MiB.
    pub memory_bytes: usize,
    /// Wall time one call into user code may take (a handler, `partitionBy`, the definition
    /// script at compile). Default 250 ms.
    pub per_event: Duration,
    /// Native stack the interpreter may use (deep recursion). Default 1 MiB.
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

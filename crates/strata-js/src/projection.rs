//! A compiled projection (skeleton).

use strata_store::projection::{Emit, ProjectionEngine, ProjectionError, ProjectionSource};
use strata_store::RecordedEvent;

use crate::{JsError, JsLimits};

/// A compiled projection: its own sandboxed runtime, its definition and the live states.
pub struct JsProjection {
    _limits: JsLimits,
}

impl JsProjection {
    /// Compiles and evaluates `source` (the definition part only), in a fresh sandboxed runtime.
    pub fn compile(source: &str, limits: JsLimits) -> Result<JsProjection, JsError> {
        let _ = (source, limits);
        Err(JsError::Definition {
            message: "the JavaScript runtime is not built yet".into(),
        })
    }
}

impl ProjectionEngine for JsProjection {
    fn source(&self) -> ProjectionSource {
        ProjectionSource::All
    }
    fn event_types(&self) -> Option<Vec<String>> {
        None
    }
    fn partition_key(&mut self, _event: &RecordedEvent) -> Result<Option<String>, ProjectionError> {
        Ok(Some(String::new()))
    }
    fn apply(
        &mut self,
        _partition: &str,
        _event: &RecordedEvent,
        _emits: &mut Vec<Emit>,
    ) -> Result<(), ProjectionError> {
        Err(ProjectionError::new("not built yet"))
    }
    fn state(&mut self, _partition: &str) -> Result<Option<serde_json::Value>, ProjectionError> {
        Ok(None)
    }
    fn partitions(&self) -> Vec<String> {
        Vec::new()
    }
    fn restore(&mut self, _p: &str, _s: serde_json::Value) -> Result<(), ProjectionError> {
        Err(ProjectionError::new("not built yet"))
    }
    fn clear(&mut self) {}
}

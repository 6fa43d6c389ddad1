//! One projection's sandbox: a fresh QuickJS runtime and context with only the ECMAScript
//! built-ins, a memory limit, a stack limit and a wall-clock deadline on every call into user
//! code; and the translation of the engine's exceptions into [`JsError`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use rquickjs::context::EvalOptions;
use rquickjs::{Context, Ctx, Object, Runtime, Value};

use crate::{JsError, JsLimits};

/// The file name user code is evaluated under; it appears in stacks (`at $any (projection.js:3:20)`).
pub(crate) const SOURCE_NAME: &str = "projection.js";

/// The smallest stack limit applied: 0 would switch QuickJS's check off and let deep recursion
/// overflow the thread's stack.
pub(crate) const MIN_STACK_BYTES: usize = 64 << 10;

/// The deadline the interrupt handler checks. `fired` records that it stopped user code, which
/// tells a timeout apart from an ordinary exception.
#[derive(Clone, Default)]
struct Clock {
    deadline: Rc<Cell<Option<Instant>>>,
    fired: Rc<Cell<bool>>,
}

/// A runtime + context pair. Values saved from it (`Persistent`) must be dropped before it.
pub(crate) struct Sandbox {
    // Field order is drop order: the context before its runtime.
    context: Context,
    runtime: Runtime,
    /// The runtime's own memory limit now (0 = none): `limits.memory_bytes` less what the
    /// projection holds outside the runtime (see [`Sandbox::set_heap_limit`]).
    heap_limit: Cell<usize>,
    clock: Clock,
    limits: JsLimits,
}

impl Sandbox {
    /// A fresh runtime and context with the ECMAScript built-ins only: no module loader, no
    /// `std`/`os` modules, no I/O of any kind (QuickJS's standard context has none of these).
    pub(crate) fn new(limits: JsLimits) -> Result<Sandbox, JsError> {
        let runtime = Runtime::new().map_err(|_| JsError::OutOfMemory)?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.max_stack_bytes.max(MIN_STACK_BYTES));
        let clock = Clock::default();
        let handler_clock = clock.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || match handler_clock.deadline.get() {
            Some(deadline) if Instant::now() >= deadline => {
                handler_clock.fired.set(true);
                true
            }
            _ => false,
        })));
        let context = Context::full(&runtime).map_err(|_| JsError::OutOfMemory)?;
        Ok(Sandbox {
            context,
            runtime,
            heap_limit: Cell::new(limits.memory_bytes),
            clock,
            limits,
        })
    }

    pub(crate) fn limits(&self) -> JsLimits {
        self.limits
    }

    /// Sets the memory the runtime itself may allocate (at least 1 byte: 0 would mean no
    /// limit). Allocations beyond it fail as out of memory; what is allocated already stays.
    pub(crate) fn set_heap_limit(&self, bytes: usize) {
        let bytes = bytes.max(1);
        if self.heap_limit.get() != bytes {
            self.runtime.set_memory_limit(bytes);
            self.heap_limit.set(bytes);
        }
    }

    /// Runs `f` inside the context with the per-call deadline armed; an interrupt turns into
    /// [`JsError::Timeout`] through [`Sandbox::error`].
    pub(crate) fn call<R>(
        &self,
        f: impl FnOnce(&Ctx<'_>) -> Result<R, JsError>,
    ) -> Result<R, JsError> {
        self.clock.fired.set(false);
        // A limit too large for the clock is no limit.
        self.clock
            .deadline
            .set(Instant::now().checked_add(self.limits.per_event));
        let result = self.context.with(|ctx| f(&ctx));
        self.clock.deadline.set(None);
        result
    }

    /// The [`JsError`] for a failed engine call (taking the pending exception, if any).
    pub(crate) fn error(&self, ctx: &Ctx<'_>, e: rquickjs::Error) -> JsError {
        let exception = match e {
            rquickjs::Error::Exception => Some(ctx.catch()),
            rquickjs::Error::Allocation => return JsError::OutOfMemory,
            _ => None,
        };
        if self.clock.fired.get() {
            return JsError::Timeout {
                limit: self.limits.per_event,
            };
        }
        match exception {
            Some(value) => from_exception(ctx, &value),
            None => JsError::Runtime {
                message: e.to_string(),
                stack: None,
            },
        }
    }
}

/// Evaluates `source` as a classic (non-module, sloppy-mode) script named `name`.
pub(crate) fn eval<'js>(ctx: &Ctx<'js>, source: &str, name: &str) -> rquickjs::Result<Value<'js>> {
    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = false;
    options.filename = Some(name.to_owned());
    ctx.eval_with_options(source, options)
}

/// Classifies a thrown value.
fn from_exception<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> JsError {
    // QuickJS throws `null` when it cannot even allocate the error object of an out-of-memory
    // condition; user code that throws `null` itself is therefore reported the same way.
    if value.is_null() {
        return JsError::OutOfMemory;
    }
    if value.type_of() == rquickjs::Type::Uninitialized {
        return JsError::Runtime {
            message: "the engine reported an error without an exception".into(),
            stack: None,
        };
    }
    let Some(object) = value.as_object().filter(|_| value.is_error()) else {
        return JsError::Runtime {
            message: format!("uncaught exception: {}", describe(ctx, value)),
            stack: None,
        };
    };
    let name = string_property(object, "name").unwrap_or_default();
    let message = string_property(object, "message").unwrap_or_default();
    let stack = string_property(object, "stack").filter(|s| !s.trim().is_empty());
    if name == "InternalError" && message == "out of memory" {
        return JsError::OutOfMemory;
    }
    if name == "SyntaxError" {
        if let Some((line, column)) = stack.as_deref().and_then(parse_position) {
            return JsError::Syntax {
                message,
                line: Some(line),
                column: Some(column),
            };
        }
    }
    let message = match (name.is_empty(), message.is_empty()) {
        (true, _) => message,
        (false, true) => name,
        (false, false) => format!("{name}: {message}"),
    };
    JsError::Runtime { message, stack }
}

/// A thrown non-error value, for a message: its JSON when it has one, else its string form.
fn describe<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(s) = value.as_string().and_then(|s| s.to_string().ok()) {
        return s;
    }
    match ctx.json_stringify(value.clone()) {
        Ok(Some(json)) => json.to_string().unwrap_or_default(),
        _ => {
            // Leave no exception pending from the attempt.
            let _ = ctx.catch();
            value.type_name().to_owned()
        }
    }
}

fn string_property(object: &Object<'_>, key: &str) -> Option<String> {
    object.get::<_, Option<String>>(key).ok().flatten()
}

/// The position of a parse error: QuickJS reports it as the only stack line, with no function
/// name, `    at projection.js:LINE:COLUMN`. A `SyntaxError` thrown while the script runs
/// (`JSON.parse`, `eval`) has a different first frame and stays a runtime error.
fn parse_position(stack: &str) -> Option<(u32, u32)> {
    let first = stack.lines().next()?.trim();
    let rest = first
        .strip_prefix("at ")?
        .strip_prefix(SOURCE_NAME)?
        .strip_prefix(':')?;
    let (line, column) = rest.split_once(':')?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_positions() {
        assert_eq!(parse_position("    at projection.js:3:9\n"), Some((3, 9)));
        assert_eq!(parse_position("    at <eval> (projection.js:3:9)\n"), None);
        assert_eq!(
            parse_position("    at parse (native)\n    at projection.js:1:1"),
            None
        );
        assert_eq!(parse_position(""), None);
    }
}

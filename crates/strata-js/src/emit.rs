//! `emit(stream, type, data)`: the derived events a handler asks to append.
//!
//! Calls are checked where they are made, so a bad one throws a `TypeError` inside the handler
//! (with the handler's stack): `stream` is a user stream name (1–255 bytes of UTF-8, no control
//! characters, not starting with `$`), `type` is 1–255 bytes, `data` is JSON-serialisable
//! (`undefined`/omitted means `null`) into JSON the store accepts (nested at most 64 levels,
//! no lone surrogate in a string). Outside a handler (while defining the projection, in
//! `partitionBy`) `emit` throws.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rquickjs::function::Opt;
use rquickjs::{Ctx, Exception, Function, Value};
use strata_store::json_check::check_json;
use strata_store::projection::Emit;
use strata_store::MAX_JSON_DEPTH;

/// The most events one handler call may emit (the API's limit for one append).
pub(crate) const MAX_EMITS_PER_EVENT: usize = 10_000;
/// The longest stream name or event type, in bytes (docs/http-api.md).
const MAX_NAME_BYTES: usize = 255;

/// Where the `emit` function collects into; `open` only while a handler runs.
#[derive(Default)]
pub(crate) struct EmitSink {
    open: Cell<bool>,
    emits: RefCell<Vec<Emit>>,
}

impl EmitSink {
    /// Starts collecting for one handler call.
    pub(crate) fn open(&self) {
        self.emits.borrow_mut().clear();
        self.open.set(true);
    }

    /// Stops collecting and hands over what was emitted.
    pub(crate) fn close(&self) -> Vec<Emit> {
        self.open.set(false);
        std::mem::take(&mut *self.emits.borrow_mut())
    }
}

/// Installs the global `emit` function writing into `sink`.
pub(crate) fn install<'js>(ctx: &Ctx<'js>, sink: Rc<EmitSink>) -> rquickjs::Result<()> {
    let emit = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, stream: Value<'js>, event_type: Value<'js>, data: Opt<Value<'js>>| {
            emit(&ctx, &sink, stream, event_type, data.0)
        },
    )?
    .with_name("emit")?;
    ctx.globals().set("emit", emit)
}

fn emit<'js>(
    ctx: &Ctx<'js>,
    sink: &EmitSink,
    stream: Value<'js>,
    event_type: Value<'js>,
    data: Option<Value<'js>>,
) -> rquickjs::Result<()> {
    if !sink.open.get() {
        return Err(Exception::throw_type(
            ctx,
            "emit() can only be called inside a when() handler",
        ));
    }
    let stream = name(ctx, stream, "stream")?;
    if stream.starts_with('$') {
        return Err(Exception::throw_type(
            ctx,
            &format!("emit(): the stream {stream:?} is reserved (names starting with $ are the server's)"),
        ));
    }
    let event_type = name(ctx, event_type, "type")?;
    let data = match data {
        None => serde_json::Value::Null,
        Some(value) if value.is_undefined() => serde_json::Value::Null,
        Some(value) => {
            let Some(json) = ctx.json_stringify(value)? else {
                return Err(Exception::throw_type(
                    ctx,
                    "emit(): data must be JSON-serialisable (not a function or a symbol)",
                ));
            };
            let json = json.to_string()?;
            // What the store would refuse at append (nesting beyond its limit; a lone
            // surrogate, which JS strings may hold and JSON.stringify escapes) fails here, where
            // the handler's stack shows which emit it was.
            if let Err(problem) = check_json(json.as_bytes(), MAX_JSON_DEPTH) {
                return Err(Exception::throw_type(
                    ctx,
                    &format!("emit(): JSON.stringify(data) cannot be appended: {problem}"),
                ));
            }
            serde_json::from_str(&json).map_err(|e| {
                Exception::throw_type(ctx, &format!("emit(): data is not valid JSON: {e}"))
            })?
        }
    };
    let mut emits = sink.emits.borrow_mut();
    if emits.len() >= MAX_EMITS_PER_EVENT {
        return Err(Exception::throw_range(
            ctx,
            &format!("emit(): at most {MAX_EMITS_PER_EVENT} events per handler call"),
        ));
    }
    emits.push(Emit {
        stream,
        event_type,
        data,
    });
    Ok(())
}

/// A stream name or event type: a string of 1–255 bytes without control characters.
fn name<'js>(ctx: &Ctx<'js>, value: Value<'js>, what: &str) -> rquickjs::Result<String> {
    let Some(s) = value.as_string() else {
        return Err(Exception::throw_type(
            ctx,
            &format!(
                "emit(): the {what} must be a string, got {}",
                value.type_name()
            ),
        ));
    };
    let s = s.to_string()?;
    if s.is_empty() || s.len() > MAX_NAME_BYTES {
        return Err(Exception::throw_type(
            ctx,
            &format!("emit(): the {what} must be 1 to {MAX_NAME_BYTES} bytes long"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Exception::throw_type(
            ctx,
            &format!("emit(): the {what} must not contain control characters"),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rquickjs::{Context, Runtime};

    fn with_sink(f: impl FnOnce(&Ctx<'_>, &EmitSink)) {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        let sink = Rc::new(EmitSink::default());
        context.with(|ctx| {
            install(&ctx, sink.clone()).unwrap();
            f(&ctx, &sink);
        });
    }

    #[test]
    fn collects_only_while_open() {
        with_sink(|ctx, sink| {
            let call = |src: &str| ctx.eval::<(), _>(src).map_err(|_| ctx.catch());
            assert!(call("emit('s', 'T', 1)").is_err());
            sink.open();
            call("emit('s', 'T', { a: [1, 'x'] }); emit('t', 'U')").unwrap();
            let emits = sink.close();
            assert_eq!(emits.len(), 2);
            assert_eq!(emits[0].data, serde_json::json!({ "a": [1, "x"] }));
            assert_eq!(emits[1].data, serde_json::Value::Null);
            assert!(call("emit('s', 'T', 1)").is_err(), "closed again");
            sink.open();
            assert!(sink.close().is_empty(), "a new call starts empty");
        });
    }

    #[test]
    fn data_the_store_would_refuse_throws_at_the_emit() {
        with_sink(|ctx, sink| {
            sink.open();
            let message = |src: &str| match ctx.eval::<(), _>(src) {
                Ok(()) => String::new(),
                Err(_) => {
                    let e = ctx.catch();
                    let e = e.as_object().unwrap();
                    let name: String = e.get("name").unwrap();
                    let message: String = e.get("message").unwrap();
                    format!("{name}: {message}")
                }
            };
            assert_eq!(
                message("emit('s', 'T', { s: 'a' + String.fromCharCode(0xD800) })"),
                r"TypeError: emit(): JSON.stringify(data) cannot be appended: lone surrogate \ud800 at byte 7"
            );
            assert_eq!(
                message("let d = 1; for (let i = 0; i < 65; i++) d = [d]; emit('s', 'T', d)"),
                "TypeError: emit(): JSON.stringify(data) cannot be appended: JSON nested deeper \
                 than 64 levels (at byte 64)"
            );
            // A pair, and 64 levels, are fine.
            assert_eq!(message("emit('s', 'T', '\\ud83d\\ude00')"), "");
            assert_eq!(
                message("let e = 1; for (let i = 0; i < 64; i++) e = [e]; emit('s', 'T', e)"),
                ""
            );
            let emits = sink.close();
            assert_eq!(emits.len(), 2);
            assert_eq!(emits[0].data, serde_json::json!("\u{1f600}"));
        });
    }

    #[test]
    fn names_are_checked_in_bytes() {
        with_sink(|ctx, sink| {
            sink.open();
            let ok = |src: &str| ctx.eval::<(), _>(src).map_err(|_| ctx.catch()).is_ok();
            // 85 three-byte characters = 255 bytes: the limit exactly.
            assert!(ok("emit('✓'.repeat(85), 'T')"));
            assert!(!ok("emit('✓'.repeat(86), 'T')"));
            assert!(ok("emit('s', 'T'.repeat(255))"));
            assert!(!ok("emit('s', 'T'.repeat(256))"));
            assert!(ok("emit('a$b', 'T')"), "$ is reserved only at the start");
            assert!(!ok("emit('a\\nb', 'T')"));
            assert_eq!(sink.close().len(), 3);
        });
    }
}

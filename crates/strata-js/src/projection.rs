//! A compiled projection: the sandbox, the definition, the live per-partition states.

use std::rc::Rc;

use rquickjs::{Ctx, Exception, Function, Object, Persistent, Value};
use strata_store::projection::{Emit, ProjectionEngine, ProjectionError, ProjectionSource};
use strata_store::RecordedEvent;
use uuid::Uuid;

use foldhash::HashMap;

use crate::definition::{self, Definition, Partitioning, ReadError, PRELUDE, PRELUDE_NAME};
use crate::emit::{self, EmitSink};
use crate::event::EventBuilder;
use crate::sandbox::{self, Sandbox, SOURCE_NAME};
use crate::states::{key_bytes, States};
use crate::{JsError, JsLimits};

/// The longest partition key `partitionBy` may return, in bytes of UTF-8 (4 KiB). Keys live
/// outside the JavaScript heap (in the engine's and the runner's maps, in checkpoints); a longer
/// one fails the event with a `RangeError`. `foreachStream()` keys are stream names, bounded by
/// the store's stream-name limit instead.
pub const MAX_PARTITION_KEY_BYTES: usize = 4096;

type Live = Persistent<Value<'static>>;

/// A compiled projection: its own sandboxed runtime, its definition and the live states.
///
/// States stay JavaScript values between events (serialised only by
/// [`ProjectionEngine::state`]). When user code fails in [`ProjectionEngine::apply`] — it throws,
/// times out or runs out of memory — the handler may already have mutated the state in place,
/// so that partition is *poisoned*: its state is dropped, and `apply`, `state` return the same
/// error for it until [`ProjectionEngine::restore`] or [`ProjectionEngine::clear`]. No partially
/// applied state is ever observable; the runner faults and later resumes from its checkpoint.
///
/// Memory: the partition keys (kept in Rust maps) and what the runner reports holding
/// ([`ProjectionEngine::set_external_bytes`]) are counted against [`JsLimits::memory_bytes`]
/// together with the runtime's own allocations: before each handler call the runtime's limit is
/// lowered by them, and a call for which they leave no room fails with
/// [`JsError::OutOfMemory`].
///
/// Not `Send` (a QuickJS runtime belongs to one thread): build it on the thread that runs it.
pub struct JsProjection {
    // Field order is drop order: every saved JS value before the sandbox that owns them.
    states: States<Live>,
    /// The event object `partition_key` built, reused by the `apply` of the same event.
    last_event: Option<(u64, Uuid, Persistent<Object<'static>>)>,
    definition: Definition,
    events: EventBuilder,
    poisoned: HashMap<String, ProjectionError>,
    /// What `poisoned` holds outside the runtime: keys and errors (an estimate).
    poisoned_bytes: usize,
    /// What the runner holds for this projection outside the engine (its served states).
    external_bytes: usize,
    emits: Rc<EmitSink>,
    sandbox: Sandbox,
}

impl JsProjection {
    /// Compiles and evaluates `source` (the definition part only), in a fresh sandboxed runtime.
    ///
    /// The definition script runs under the same limits as one event (`limits.per_event`).
    pub fn compile(source: &str, limits: JsLimits) -> Result<JsProjection, JsError> {
        let sandbox = Sandbox::new(limits)?;
        let emits = Rc::new(EmitSink::default());
        let (definition, events) = sandbox.call(|ctx| {
            let prelude: Object = sandbox::eval(ctx, PRELUDE, PRELUDE_NAME)
                .and_then(|v| v.get())
                .map_err(|e| sandbox.error(ctx, e))?;
            emit::install(ctx, emits.clone()).map_err(|e| sandbox.error(ctx, e))?;
            if let Err(e) = sandbox::eval(ctx, source, SOURCE_NAME) {
                return Err(script_error(&sandbox, ctx, &prelude, e));
            }
            let record: Value = prelude
                .get::<_, Function>("definition")
                .and_then(|f| f.call(()))
                .map_err(|e| sandbox.error(ctx, e))?;
            let make_event = prelude
                .get::<_, Function>("makeEvent")
                .map(|f| Persistent::save(ctx, f))
                .map_err(|e| sandbox.error(ctx, e))?;
            let definition = match definition::read(ctx, record) {
                Ok(definition) => definition,
                Err(ReadError::Definition(message)) => return Err(JsError::Definition { message }),
                Err(ReadError::Engine(e)) => return Err(sandbox.error(ctx, e)),
            };
            prelude
                .get::<_, Function>("seal")
                .and_then(|f| f.call::<_, ()>(()))
                .map_err(|e| sandbox.error(ctx, e))?;
            Ok((definition, EventBuilder::new(make_event)))
        })?;
        Ok(JsProjection {
            states: States::default(),
            last_event: None,
            definition,
            events,
            poisoned: HashMap::default(),
            poisoned_bytes: 0,
            external_bytes: 0,
            emits,
            sandbox,
        })
    }

    /// The limits this projection runs under.
    pub fn limits(&self) -> JsLimits {
        self.sandbox.limits()
    }

    /// Counts what the projection holds outside the runtime — the partition keys (`new_key`'s
    /// too), poisoned partitions, the runner's copies — against the memory limit: lowers the
    /// runtime's own limit by it, or fails when it leaves no room at all. A few additions per
    /// event; the runtime is told only when the amount changes.
    fn reserve_outside(&self, new_key: Option<&str>) -> Result<(), JsError> {
        let limit = self.sandbox.limits().memory_bytes;
        if limit == 0 {
            return Ok(());
        }
        let new_key = new_key.map_or(0, key_bytes);
        let outside = self
            .states
            .key_bytes()
            .saturating_add(self.poisoned_bytes)
            .saturating_add(self.external_bytes)
            .saturating_add(new_key);
        if outside >= limit {
            return Err(JsError::OutOfMemory);
        }
        self.sandbox.set_heap_limit(limit - outside);
        Ok(())
    }

    fn poison(&mut self, partition: &str, error: ProjectionError) {
        let bytes = poisoned_bytes(partition, &error);
        if let Some(old) = self.poisoned.insert(partition.to_owned(), error) {
            self.poisoned_bytes -= poisoned_bytes(partition, &old);
        }
        self.poisoned_bytes += bytes;
    }

    fn unpoison(&mut self, partition: &str) {
        if let Some(old) = self.poisoned.remove(partition) {
            self.poisoned_bytes -= poisoned_bytes(partition, &old);
        }
    }

    fn apply_inner(
        &mut self,
        partition: &str,
        event: &RecordedEvent,
    ) -> Result<Vec<Emit>, JsError> {
        let Some(handler) = self.definition.handlers.for_type(&event.event_type) else {
            return Ok(Vec::new());
        };
        let init = self.definition.handlers.init.as_ref();
        let current = self.states.get(partition).cloned();
        self.reserve_outside(current.is_none().then_some(partition))?;
        let cached = self.last_event.take();
        let (sandbox, events, emits) = (&self.sandbox, &mut self.events, &self.emits);
        let upcast = self.definition.upcast.as_ref();
        let (state, emitted) = sandbox.call(|ctx| {
            let run = || -> rquickjs::Result<Live> {
                let state = match current {
                    Some(state) => state.restore(ctx)?,
                    None => initial_state(ctx, init)?,
                };
                let object = match cached {
                    Some((position, id, object))
                        if position == event.position && id == event.id =>
                    {
                        object.restore(ctx)?
                    }
                    _ => build_event(ctx, events, upcast, event)?,
                };
                let handler = handler.clone().restore(ctx)?;
                emits.open();
                let returned: Value = handler.call((state.clone(), object))?;
                if returned.is_promise() {
                    return Err(Exception::throw_type(
                        ctx,
                        "a handler must return the state synchronously, not a Promise",
                    ));
                }
                // `undefined`: mutated in place (or untouched), the live value is the state.
                let state = if returned.is_undefined() {
                    state
                } else {
                    returned
                };
                Ok(Persistent::save(ctx, state))
            };
            let result = run();
            let emitted = emits.close();
            match result {
                Ok(state) => Ok((state, emitted)),
                Err(e) => Err(sandbox.error(ctx, e)),
            }
        })?;
        self.states.set(partition, state);
        Ok(emitted)
    }

    /// Replaces the state of `partition` with `JSON.parse(json)` and clears its poisoning.
    fn restore_text(
        &mut self,
        partition: &str,
        json: impl Into<Vec<u8>>,
    ) -> Result<(), ProjectionError> {
        let sandbox = &self.sandbox;
        let live = sandbox.call(|ctx| {
            ctx.json_parse(json)
                .map(|v| Persistent::save(ctx, v))
                .map_err(|e| sandbox.error(ctx, e))
        })?;
        self.unpoison(partition);
        self.states.set(partition, live);
        Ok(())
    }
}

/// The memory a poisoned partition holds outside the runtime (an estimate).
fn poisoned_bytes(partition: &str, error: &ProjectionError) -> usize {
    key_bytes(partition).max(crate::states::KEY_OVERHEAD)
        + error.message.len()
        + error.stack.as_ref().map_or(0, String::len)
}

/// The event object handed to user code: built, then upcast when the projection declares
/// upcasters (`upcast({...})`: the prelude's function changes the object in place).
fn build_event<'js>(
    ctx: &Ctx<'js>,
    events: &mut EventBuilder,
    upcast: Option<&Persistent<Function<'static>>>,
    event: &RecordedEvent,
) -> rquickjs::Result<Object<'js>> {
    let object = events.build(ctx, event)?;
    match upcast {
        Some(f) => f.clone().restore(ctx)?.call((object,)),
        None => Ok(object),
    }
}

/// A new partition's state: `$init()`, or `{}` without one (or when it returns `undefined`).
fn initial_state<'js>(
    ctx: &Ctx<'js>,
    init: Option<&Persistent<Function<'static>>>,
) -> rquickjs::Result<Value<'js>> {
    if let Some(init) = init {
        let state: Value = init.clone().restore(ctx)?.call(())?;
        if state.is_promise() {
            return Err(Exception::throw_type(
                ctx,
                "$init must return the state synchronously, not a Promise",
            ));
        }
        if !state.is_undefined() {
            return Ok(state);
        }
    }
    Ok(Object::new(ctx.clone())?.into_value())
}

/// The error of a failed evaluation of the user's script: a `DefinitionError` thrown by the DSL
/// (recognised by the prelude, not by its name) is a [`JsError::Definition`].
fn script_error<'js>(
    sandbox: &Sandbox,
    ctx: &Ctx<'js>,
    prelude: &Object<'js>,
    e: rquickjs::Error,
) -> JsError {
    if !matches!(e, rquickjs::Error::Exception) {
        return sandbox.error(ctx, e);
    }
    let exception = ctx.catch();
    let is_definition = prelude
        .get::<_, Function>("isDefinitionError")
        .and_then(|f| f.call::<_, bool>((exception.clone(),)))
        .unwrap_or(false);
    if is_definition {
        let message = exception
            .as_object()
            .and_then(|o| o.get::<_, Option<String>>("message").ok().flatten())
            .unwrap_or_default();
        return JsError::Definition { message };
    }
    let e = ctx.throw(exception);
    sandbox.error(ctx, e)
}

impl ProjectionEngine for JsProjection {
    fn source(&self) -> ProjectionSource {
        self.definition.source.clone()
    }

    fn event_types(&self) -> Option<Vec<String>> {
        self.definition.handlers.event_types()
    }

    fn partition_key(&mut self, event: &RecordedEvent) -> Result<Option<String>, ProjectionError> {
        let by = match &self.definition.partitioning {
            Partitioning::Single => return Ok(Some(String::new())),
            Partitioning::Stream => return Ok(Some(event.stream.clone())),
            Partitioning::By(f) => f.clone(),
        };
        self.last_event = None;
        let sandbox = &self.sandbox;
        let events = &mut self.events;
        let upcast = self.definition.upcast.as_ref();
        let (key, saved) = sandbox.call(|ctx| {
            let run = || -> rquickjs::Result<(Value, Object)> {
                let object = build_event(ctx, events, upcast, event)?;
                let key = by.restore(ctx)?.call((object.clone(),))?;
                Ok((key, object))
            };
            let (key, object) = run().map_err(|e| sandbox.error(ctx, e))?;
            let key = partition_string(ctx, &key).map_err(|e| sandbox.error(ctx, e))?;
            Ok((key, Persistent::save(ctx, object)))
        })?;
        self.last_event = Some((event.position, event.id, saved));
        Ok(key)
    }

    fn apply(
        &mut self,
        partition: &str,
        event: &RecordedEvent,
        emits: &mut Vec<Emit>,
    ) -> Result<(), ProjectionError> {
        if let Some(error) = self.poisoned.get(partition) {
            return Err(error.clone());
        }
        match self.apply_inner(partition, event) {
            Ok(mut emitted) => {
                emits.append(&mut emitted);
                Ok(())
            }
            Err(e) => {
                let error = ProjectionError::from(e);
                self.states.remove(partition);
                self.poison(partition, error.clone());
                Err(error)
            }
        }
    }

    fn state(&mut self, partition: &str) -> Result<Option<serde_json::Value>, ProjectionError> {
        if let Some(error) = self.poisoned.get(partition) {
            return Err(error.clone());
        }
        let Some(state) = self.states.get(partition).cloned() else {
            return Ok(None);
        };
        let sandbox = &self.sandbox;
        let json = sandbox.call(|ctx| {
            let stringify = || -> rquickjs::Result<Option<String>> {
                match ctx.json_stringify(state.restore(ctx)?)? {
                    Some(json) => Ok(Some(json.to_string()?)),
                    None => Ok(None),
                }
            };
            stringify().map_err(|e| sandbox.error(ctx, e))
        })?;
        match json {
            None => Err(ProjectionError::new(
                "the state is not JSON-serialisable (a function, a symbol or undefined)",
            )),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| ProjectionError::new(format!("the state is not valid JSON: {e}"))),
        }
    }

    fn partitions(&self) -> Vec<String> {
        let mut partitions: Vec<String> = self
            .states
            .keys()
            .chain(self.poisoned.keys().map(String::as_str))
            .map(str::to_owned)
            .collect();
        partitions.sort();
        partitions
    }

    fn restore(
        &mut self,
        partition: &str,
        state: serde_json::Value,
    ) -> Result<(), ProjectionError> {
        let json = serde_json::to_string(&state)
            .map_err(|e| ProjectionError::new(format!("the state is not valid JSON: {e}")))?;
        self.restore_text(partition, json)
    }

    /// Parses the text in the runtime directly (no `serde_json::Value` in between).
    fn restore_json(
        &mut self,
        partition: &str,
        state: &serde_json::value::RawValue,
    ) -> Result<(), ProjectionError> {
        self.restore_text(partition, state.get())
    }

    fn clear(&mut self) {
        self.states.clear();
        self.poisoned.clear();
        self.poisoned_bytes = 0;
        self.last_event = None;
    }

    fn set_external_bytes(&mut self, bytes: usize) {
        self.external_bytes = bytes;
    }
}

/// A `partitionBy` result as a partition key: strings as they are, numbers as JavaScript
/// prints them, `null`/`undefined` = skip the event; anything else throws.
fn partition_string<'js>(ctx: &Ctx<'js>, key: &Value<'js>) -> rquickjs::Result<Option<String>> {
    if key.is_null() || key.is_undefined() {
        return Ok(None);
    }
    if let Some(s) = key.as_string() {
        let s = s.to_string()?;
        if s.len() > MAX_PARTITION_KEY_BYTES {
            return Err(Exception::throw_range(
                ctx,
                &format!(
                    "partitionBy() returned a key of {} bytes; a partition key is at most \
                     {MAX_PARTITION_KEY_BYTES} bytes (UTF-8)",
                    s.len()
                ),
            ));
        }
        return Ok(Some(s));
    }
    if key.is_number() {
        let rquickjs::convert::Coerced(s) = key.get::<rquickjs::convert::Coerced<String>>()?;
        return Ok(Some(s));
    }
    Err(Exception::throw_type(
        ctx,
        &format!(
            "partitionBy() must return a string, a number, null or undefined; got {}",
            key.type_name()
        ),
    ))
}

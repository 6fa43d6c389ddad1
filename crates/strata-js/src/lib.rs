//! Strata's projection runtime: user JavaScript folds in a sandboxed, embedded QuickJS engine
//! (QuickJS-ng through `rquickjs`).
//!
//! [`JsProjection::compile`] evaluates a projection's source in a fresh sandbox and returns an
//! engine implementing [`strata_store::projection::ProjectionEngine`], which the runner feeds
//! event by event.
//!
//! # The JavaScript API
//!
//! ```js
//! fromCategory('order')                 // or fromAll(), fromStream('s'), fromStreams(['a', 'b'])
//!   .partitionBy(e => e.data.customer)  // optional; or .foreachStream(); else one state
//!   .when({
//!     $init: () => ({ count: 0, total: 0 }),
//!     OrderPlaced: (s, e) => { s.count += 1; s.total += e.data.total; return s; },
//!     $any: (s, e) => s,
//!   });
//! ```
//!
//! - **Source**: exactly one of `fromAll()`, `fromStream(name)`, `fromStreams([names])` (or
//!   `fromStreams(a, b, ...)`), `fromCategory(name)`. Names are non-empty strings.
//! - **Partitioning** (optional, before `when`): `.foreachStream()` keeps one state per stream;
//!   `.partitionBy(e => key)` one state per key: a string of at most
//!   [`MAX_PARTITION_KEY_BYTES`] (4 KiB of UTF-8; longer is a `RangeError`), or a number (as
//!   JavaScript prints it); `null`/`undefined` skips the event; anything else is an error.
//!   Without either, one state (the partition `""`).
//! - **Handlers**: `.when({...})` once, with functions only. `$init()` creates a partition's
//!   state (`{}` without `$init`, or when it returns `undefined`). `<EventType>(state, event)`
//!   handles that type, `$any(state, event)` every type without its own handler; at least one of
//!   them. Other keys starting with `$` are refused. A handler returns the new state, or
//!   `undefined` to keep the (mutated in place) state; it must be synchronous (returning a
//!   Promise is an error). Events with no handler leave the state alone.
//!   [`ProjectionEngine::event_types`](strata_store::projection::ProjectionEngine::event_types)
//!   is `None` with `$any`, else the handlers' type names.
//! - **The event** is the API's event JSON: `{id, stream, revision, position, type, timestamp,
//!   data, metadata}`, `timestamp` in RFC 3339 UTC with microseconds, `data` the parsed payload
//!   (`null` when empty) or `data_base64` for binary (or non-JSON) payloads, `metadata` the
//!   parsed metadata or `null` (plus `metadata_base64` when it is not JSON) — the same object as
//!   the server's JSON for that event.
//! - **`emit(stream, type, data)`**, inside a handler only, asks the runner to append a derived
//!   event: `stream` a user stream name (1–255 bytes, no control characters, not starting with
//!   `$`), `type` 1–255 bytes, `data` JSON-serialisable (omitted = `null`); at most 10,000 per
//!   handler call. A bad call throws a `TypeError` in the handler.
//! - The script is a classic (sloppy-mode) script; it may define helpers, constants, and
//!   globals. The DSL functions throw once the definition is complete.
//!
//! # The sandbox
//!
//! Each projection gets its own QuickJS runtime and context with the ECMAScript built-ins only:
//! no module loader (static `import` is a syntax error, dynamic `import()` never resolves), no
//! `std`/`os` modules, no `require`, `fetch`, `console`, timers or any other I/O. Promise jobs
//! never run. `Date.now()` and `Math.random()` exist but make a projection nondeterministic.
//! Limits ([`JsLimits`]):
//!
//! - `memory_bytes` (64 MiB): everything the runtime allocates, states included, **plus** what
//!   the projection holds outside it: the partition keys (kept in Rust maps) and what the runner
//!   reports holding ([`ProjectionEngine::set_external_bytes`](strata_store::projection::ProjectionEngine::set_external_bytes):
//!   its served copies of the states and keys). Before each handler call the runtime's own
//!   limit is lowered by those. A projection with very many partitions needs a larger limit. A
//!   memory bomb, or a partition that no longer fits, fails with [`JsError::OutOfMemory`]; what
//!   a failed call allocated is freed with its stack frames. (QuickJS throws `null` when it
//!   cannot even allocate the error object, so a handler that throws `null` itself is reported
//!   as out of memory too.)
//! - `per_event` (250 ms): the wall time of one call into user code — a handler with `$init`,
//!   `partitionBy`, the serialisation of a state (`toJSON`), the definition script at compile.
//!   An infinite loop fails with [`JsError::Timeout`]; user code cannot catch the interrupt.
//! - `max_stack_bytes` (1 MiB): deep recursion fails with a `RangeError`. The thread running the
//!   engine needs that much native stack plus room for its own frames: Rust's default 2 MiB
//!   thread stack is enough for the default.
//!
//! After a timeout or an out-of-memory error the engine stays usable.
//!
//! # Errors and state on error
//!
//! [`JsError::Syntax`] carries QuickJS's message and the 1-based line and column in the user's
//! source; a script that throws while defining is [`JsError::Runtime`] (with its stack); a
//! definition the DSL refuses is [`JsError::Definition`]. At run time errors become
//! [`strata_store::projection::ProjectionError`]s: `"<ErrorName>: <message>"` plus the JS stack
//! (`    at OrderPlaced (projection.js:5:27)`).
//!
//! States are kept as live JavaScript values (no JSON round trip per event). A handler that
//! fails may already have mutated its state in place, so instead of copying every state before
//! every event, the failed partition is **poisoned**: its state is dropped and `apply`/`state`
//! for it return the same error until `restore` or `clear`. No half-applied state is ever
//! observable; the runner faults the projection and resumes from its checkpoint. Other
//! partitions are unaffected.
//!
//! # Threads
//!
//! A [`JsProjection`] is not `Send`: build it on the thread that runs it (the runner's
//! `EngineFactory` does that).

mod definition;
mod emit;
mod error;
mod event;
mod limits;
mod projection;
mod sandbox;
mod states;

pub use error::JsError;
pub use limits::JsLimits;
pub use projection::{JsProjection, MAX_PARTITION_KEY_BYTES};

//! The projection's definition as the DSL recorded it: where it reads from, how it partitions,
//! its handlers. Read once at compile from the prelude's record.

use foldhash::HashMap;

use rquickjs::{Array, Ctx, Function, Object, Persistent, Value};
use strata_store::projection::ProjectionSource;

/// The JS DSL (`fromAll()`, ...), evaluated before the user's source.
pub(crate) const PRELUDE: &str = include_str!("prelude.js");
/// The name the prelude is evaluated under (it shows in stacks of definition calls).
pub(crate) const PRELUDE_NAME: &str = "strata:prelude";

type JsFunction = Persistent<Function<'static>>;

/// How events map to states.
pub(crate) enum Partitioning {
    /// One state, the partition "".
    Single,
    /// `foreachStream()`: one state per stream.
    Stream,
    /// `partitionBy(fn)`.
    By(JsFunction),
}

/// The handlers of `when({...})`.
pub(crate) struct Handlers {
    pub(crate) init: Option<JsFunction>,
    pub(crate) any: Option<JsFunction>,
    pub(crate) by_type: HashMap<String, JsFunction>,
}

impl Handlers {
    /// The handler of an event type: its own, else `$any`.
    pub(crate) fn for_type(&self, event_type: &str) -> Option<&JsFunction> {
        self.by_type.get(event_type).or(self.any.as_ref())
    }

    /// The event types to push down to the index; `None` when `$any` takes every event.
    pub(crate) fn event_types(&self) -> Option<Vec<String>> {
        if self.any.is_some() {
            return None;
        }
        let mut types: Vec<String> = self.by_type.keys().cloned().collect();
        types.sort();
        Some(types)
    }
}

/// A checked definition.
pub(crate) struct Definition {
    /// `upcast({...})`: the prelude's function that upcasts an event object in place.
    pub(crate) upcast: Option<JsFunction>,
    pub(crate) source: ProjectionSource,
    pub(crate) partitioning: Partitioning,
    pub(crate) handlers: Handlers,
}

/// Reads the prelude's record (`definition()` of the prelude's API object).
pub(crate) fn read<'js>(ctx: &Ctx<'js>, record: Value<'js>) -> Result<Definition, ReadError> {
    let Some(record) = record.into_object() else {
        return Err(ReadError::Definition(
            "the projection must start with fromAll(), fromStream(name), fromStreams([names]) or fromCategory(name)".into(),
        ));
    };
    let handlers: Value = record.get("handlers")?;
    let Some(handlers) = handlers.into_object() else {
        return Err(ReadError::Definition(
            "the projection must call .when({...}) with its handlers, e.g. fromAll().when({ $any: (s, e) => s })".into(),
        ));
    };
    let source: Object = record.get("source")?;
    let kind: String = source.get("kind")?;
    let names: Vec<String> = match source.get::<_, Option<Array>>("names")? {
        Some(names) => names.iter::<String>().collect::<rquickjs::Result<_>>()?,
        None => Vec::new(),
    };
    let first = || names.first().cloned().unwrap_or_default();
    let source = match kind.as_str() {
        "all" => ProjectionSource::All,
        "stream" => ProjectionSource::Stream(first()),
        "streams" => ProjectionSource::Streams(names.clone()),
        "category" => ProjectionSource::Category(first()),
        other => {
            return Err(ReadError::Definition(format!(
                "unknown source kind {other}"
            )))
        }
    };
    let partition: Value = record.get("partition")?;
    let partitioning = if partition.is_null() {
        Partitioning::Single
    } else if let Some(f) = partition.as_function() {
        Partitioning::By(Persistent::save(ctx, f.clone()))
    } else {
        Partitioning::Stream
    };
    let mut init = None;
    let mut any = None;
    let mut by_type = HashMap::default();
    for prop in handlers.props::<String, Function>() {
        let (key, f) = prop?;
        let f = Persistent::save(ctx, f);
        match key.as_str() {
            "$init" => init = Some(f),
            "$any" => any = Some(f),
            _ => {
                by_type.insert(key, f);
            }
        }
    }
    let upcast = record
        .get::<_, Value>("upcast")?
        .as_function()
        .map(|f| Persistent::save(ctx, f.clone()));
    Ok(Definition {
        upcast,
        source,
        partitioning,
        handlers: Handlers { init, any, by_type },
    })
}

/// Why a record could not be read.
pub(crate) enum ReadError {
    Definition(String),
    Engine(rquickjs::Error),
}

impl From<rquickjs::Error> for ReadError {
    fn from(e: rquickjs::Error) -> Self {
        ReadError::Engine(e)
    }
}

// The projection DSL, evaluated in every sandbox before the user's source. It records the
// definition (source, partitioning, handlers) for the Rust side, which reads it once through the
// object this script evaluates to. Globals it defines: fromAll, fromStream, fromStreams,
// fromCategory, and KurrentDB's options (ignored) and linkTo (refused) (and `emit`, which the
// Rust side installs). Events also answer to KurrentDB's field names (body, eventType,
// streamId, sequenceNumber, isJson), and when() may be followed by outputState().
//
// Upcasters (schema evolution): `.upcast({ Type: { 1: (e) => newData, 2: ... } })` turns an
// event of `Type` whose `metadata.schema_version` is 1 (absent = 1) into version 2 (the
// function returns the new `data`), then 2 into 3, and so on, before partitionBy and the
// handlers see it. The stored event never changes.
(function (global) {
  'use strict';

  class DefinitionError extends Error {}
  Object.defineProperty(DefinitionError.prototype, 'name', { value: 'DefinitionError' });

  let definition = null;
  let sealed = false;

  function fail(message) {
    throw new DefinitionError(message);
  }

  function checkOpen(what) {
    if (sealed) {
      throw new Error(what + ' can only be called while the projection is being defined');
    }
  }

  function streamName(value, what) {
    if (typeof value !== 'string' || value.length === 0) {
      fail(what + ' needs a non-empty stream name string, got ' + describe(value));
    }
    return value;
  }

  function describe(value) {
    if (value === null) return 'null';
    if (Array.isArray(value)) return 'an array';
    if (typeof value === 'string') return JSON.stringify(value);
    return typeof value;
  }

  function isPlainObject(value) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
    const proto = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
  }

  function when(d, handlers) {
    checkOpen('when()');
    if (d.handlers !== null) fail('when() can only be called once');
    if (!isPlainObject(handlers)) {
      fail('when() needs an object of handlers, e.g. when({ $init: () => ({}), MyEvent: (s, e) => s }), got ' + describe(handlers));
    }
    const copy = Object.create(null);
    let eventHandlers = 0;
    for (const key of Object.keys(handlers)) {
      const handler = handlers[key];
      if (key.startsWith('$') && key !== '$init' && key !== '$any') {
        fail('unknown handler ' + JSON.stringify(key) + ' in when(): the handlers starting with $ are $init and $any');
      }
      if (typeof handler !== 'function') {
        fail('the handler ' + JSON.stringify(key) + ' in when() must be a function, got ' + describe(handler));
      }
      if (key !== '$init') eventHandlers += 1;
      copy[key] = handler;
    }
    if (eventHandlers === 0) {
      fail('when() needs at least one event handler ($any or an event type)');
    }
    d.handlers = copy;
    // What KurrentDB's projections chain after when(): outputState() is accepted (Strata
    // always serves the state); the others change what is computed and are refused.
    const after = Object.freeze({
      outputState() {
        if (arguments.length !== 0) fail('outputState() takes no arguments');
        return after;
      },
      transformBy() {
        fail('transformBy() is not supported: the result of a Strata projection is its state');
      },
      filterBy() {
        fail('filterBy() is not supported: the result of a Strata projection is its state');
      },
    });
    return after;
  }

  function schemaVersion(metadata) {
    if (metadata !== null && typeof metadata === 'object' && !Array.isArray(metadata)) {
      const v = metadata.schema_version;
      if (Number.isInteger(v) && v > 0) return v;
    }
    return 1;
  }

  // Applies the upcasters of `e.type` in version order; mutates and returns `e`.
  function applyUpcasters(upcasters, e) {
    const byVersion = upcasters[e.type];
    if (byVersion === undefined) return e;
    let version = schemaVersion(e.metadata);
    let f = byVersion[version];
    while (f !== undefined) {
      const data = f(e);
      if (data !== null && typeof data === 'object' && typeof data.then === 'function') {
        throw new TypeError('an upcaster must return the new data synchronously, not a Promise');
      }
      e.data = data === undefined ? null : data;
      const m = e.metadata;
      const meta = (m !== null && typeof m === 'object' && !Array.isArray(m)) ? Object.assign({}, m) : {};
      version += 1;
      meta.schema_version = version;
      e.metadata = meta;
      f = byVersion[version];
    }
    return e;
  }

  function upcast(d, upcasters) {
    checkOpen('upcast()');
    if (d.upcasters !== null) fail('upcast() can only be called once');
    if (d.partition !== null || d.handlers !== null) fail('upcast() must come before partitionBy(), foreachStream() and when()');
    if (!isPlainObject(upcasters)) {
      fail('upcast() needs an object of upcasters by type and version, e.g. upcast({ OrderPlaced: { 1: (e) => ({ ...e.data, total: e.data.amount }) } }), got ' + describe(upcasters));
    }
    const copy = Object.create(null);
    for (const type of Object.keys(upcasters)) {
      const byVersion = upcasters[type];
      if (!isPlainObject(byVersion)) fail('upcast(): the upcasters of ' + JSON.stringify(type) + ' must be an object by version, e.g. { 1: (e) => newData }, got ' + describe(byVersion));
      const versions = Object.create(null);
      for (const key of Object.keys(byVersion)) {
        const n = Number(key);
        if (!Number.isInteger(n) || n < 1 || String(n) !== key) {
          fail('upcast(): ' + JSON.stringify(type) + ' has the version ' + JSON.stringify(key) + ': versions are positive integers');
        }
        if (typeof byVersion[key] !== 'function') {
          fail('upcast(): the upcaster of ' + JSON.stringify(type) + ' version ' + key + ' must be a function (e) => newData, got ' + describe(byVersion[key]));
        }
        versions[n] = byVersion[key];
      }
      copy[type] = versions;
    }
    d.upcasters = copy;
    d.upcast = (e) => applyUpcasters(copy, e);
  }

  function selector(source) {
    checkOpen('from...()');
    if (definition !== null) fail('a projection has exactly one fromAll/fromStream/fromStreams/fromCategory call');
    const d = { source, partition: null, handlers: null, upcasters: null, upcast: null };
    definition = d;
    const whenOnly = Object.freeze({ when: (handlers) => when(d, handlers) });
    const afterUpcast = Object.freeze({
      partitionBy(fn) {
        checkOpen('partitionBy()');
        if (typeof fn !== 'function') fail('partitionBy() needs a function (event) => key, got ' + describe(fn));
        if (d.partition !== null || d.handlers !== null) fail('partitionBy() must come once, before when()');
        d.partition = fn;
        return whenOnly;
      },
      foreachStream() {
        checkOpen('foreachStream()');
        if (arguments.length !== 0) fail('foreachStream() takes no arguments');
        if (d.partition !== null || d.handlers !== null) fail('foreachStream() must come once, before when()');
        d.partition = 'stream';
        return whenOnly;
      },
      when: (handlers) => when(d, handlers),
    });
    return Object.freeze({
      upcast(upcasters) {
        upcast(d, upcasters);
        return afterUpcast;
      },
      partitionBy(fn) {
        checkOpen('partitionBy()');
        if (typeof fn !== 'function') fail('partitionBy() needs a function (event) => key, got ' + describe(fn));
        if (d.partition !== null || d.handlers !== null) fail('partitionBy() must come once, before when()');
        d.partition = fn;
        return whenOnly;
      },
      foreachStream() {
        checkOpen('foreachStream()');
        if (arguments.length !== 0) fail('foreachStream() takes no arguments');
        if (d.partition !== null || d.handlers !== null) fail('foreachStream() must come once, before when()');
        d.partition = 'stream';
        return whenOnly;
      },
      when: (handlers) => when(d, handlers),
    });
  }

  // KurrentDB's names for an event's fields, as read-only aliases on the prototype of the
  // events built by makeEvent (not own properties: JSON.stringify(e) and Object.keys(e) show
  // the API's shape only).
  const eventProto = Object.freeze(Object.create(Object.prototype, {
    body: { get() { return this.data; } },
    eventType: { get() { return this.type; } },
    streamId: { get() { return this.stream; } },
    sequenceNumber: { get() { return this.revision; } },
    isJson: { get() { return true; } },
  }));

  const api = {
    // KurrentDB's options({...}) (reorderEvents, processingLag, $includeLinks, ...): accepted
    // and ignored while defining; none of them changes what Strata computes.
    options: function options(value) {
      checkOpen('options()');
      if (arguments.length !== 1 || !isPlainObject(value)) fail('options() needs one object, e.g. options({ $includeLinks: false }), got ' + describe(value));
    },
    // KurrentDB's linkTo(stream, event): Strata has no link events.
    linkTo: function linkTo() {
      throw new TypeError('linkTo() is not supported: Strata has no link events; emit() a copy of the event instead');
    },
    fromAll: function fromAll() {
      if (arguments.length !== 0) fail('fromAll() takes no arguments');
      return selector({ kind: 'all' });
    },
    fromStream: function fromStream(stream) {
      if (arguments.length !== 1) fail('fromStream() needs exactly one stream name');
      return selector({ kind: 'stream', names: [streamName(stream, 'fromStream()')] });
    },
    fromStreams: function fromStreams(first) {
      const list = arguments.length === 1 && Array.isArray(first) ? first : Array.from(arguments);
      if (list.length === 0) fail('fromStreams() needs at least one stream name, e.g. fromStreams([\'a\', \'b\'])');
      const names = list.map((s) => streamName(s, 'fromStreams()'));
      return selector({ kind: 'streams', names: Array.from(new Set(names)) });
    },
    fromCategory: function fromCategory(category) {
      if (arguments.length !== 1) fail('fromCategory() needs exactly one category name');
      return selector({ kind: 'category', names: [streamName(category, 'fromCategory()')] });
    },
  };
  for (const name of Object.keys(api)) {
    Object.defineProperty(global, name, { value: api[name], writable: false, enumerable: false, configurable: false });
  }

  return {
    // The recorded definition, or null when the script made no from...() call.
    definition: () => definition,
    isDefinitionError: (e) => e instanceof DefinitionError,
    seal: () => { sealed = true; },
    // The event object of API.md with JSON data (the Rust side builds the rarer base64 shapes).
    // An object literal: its keys are resolved once, at parse time, not per event.
    makeEvent: (id, stream, revision, position, type, timestamp, data, metadata) =>
      ({ __proto__: eventProto, id, stream, revision, position, type, timestamp, data, metadata }),
  };
})(globalThis)

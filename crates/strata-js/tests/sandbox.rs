//! The sandbox: limits (time, memory, stack), what user code cannot reach, and what an error
//! leaves behind (the failed partition is poisoned until restore/clear; the engine stays usable).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use strata_js::{JsError, JsLimits, JsProjection};
use strata_store::projection::{ProjectionEngine, ProjectionError};

fn compile_tight(source: &str) -> JsProjection {
    JsProjection::compile(source, tight()).unwrap_or_else(|e| panic!("{source}: {e:?}"))
}

fn timeout_message() -> String {
    JsError::Timeout {
        limit: tight().per_event,
    }
    .to_string()
}

#[test]
fn the_limits_have_the_documented_defaults() {
    let limits = JsLimits::default();
    assert_eq!(limits.memory_bytes, 64 << 20);
    assert_eq!(limits.per_event, Duration::from_millis(250));
    assert_eq!(limits.max_stack_bytes, 1 << 20);
    assert_eq!(strata_js::MAX_PARTITION_KEY_BYTES, KEY_CAP);
    assert_eq!(compile("fromAll().when({ $any: s => s })").limits(), limits);
}

#[test]
fn no_host_access() {
    // Nothing but ECMAScript: no module loader, no std/os, no I/O, no timers.
    let mut p = compile(
        "fromAll().when({ $any: (s) => {
            s.types = {};
            for (const name of ['require', 'std', 'os', 'fetch', 'process', 'print', 'console',
                                'setTimeout', 'setInterval', 'XMLHttpRequest', 'WebSocket', 'Deno', 'Bun',
                                'scriptArgs', 'module', 'exports', 'importScripts']) {
                s.types[name] = typeof globalThis[name];
            }
        } })",
    );
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    let s = state(&mut p, "");
    for (name, ty) in s["types"].as_object().unwrap() {
        assert_eq!(ty, "undefined", "{name} is reachable");
    }
    // Static imports are not even valid in a script.
    assert!(matches!(
        compile_err("import * as std from 'std';\nfromAll().when({ $any: s => s })"),
        JsError::Syntax { line: Some(1), .. }
    ));
    // Dynamic import has no loader behind it: it never yields a module.
    let mut p = compile(
        "let loaded = 'no';\n\
         import('os').then(() => { loaded = 'yes'; }, () => { loaded = 'refused'; });\n\
         fromAll().when({ $any: (s) => { s.loaded = loaded; } })",
    );
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert_ne!(state(&mut p, "")["loaded"], "yes");
    // require is not defined.
    let mut p = compile("fromAll().when({ $any: (s) => { require('fs'); } })");
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(err.message.starts_with("ReferenceError"), "{err:?}");
}

#[test]
fn a_throwing_handler_is_a_runtime_error_with_its_stack() {
    let mut p = compile(
        "function check(total) {\n\
           if (total < 0) throw new RangeError('negative total ' + total);\n\
         }\n\
         fromAll().when({\n\
           OrderPlaced: (s, e) => { check(e.data.total); s.n = (s.n || 0) + 1; },\n\
         })",
    );
    feed_all(
        &mut p,
        &[event(0, "order-1", "OrderPlaced", r#"{"total": 1}"#)],
    );
    let err = feed(
        &mut p,
        &event(1, "order-1", "OrderPlaced", r#"{"total": -5}"#),
    )
    .unwrap_err();
    assert_eq!(err.message, "RangeError: negative total -5");
    let stack = err.stack.expect("a stack");
    assert!(stack.contains("at check (projection.js:2:"), "{stack}");
    assert!(
        stack.contains("at OrderPlaced (projection.js:5:"),
        "{stack}"
    );
}

#[test]
fn a_failed_partition_is_poisoned_until_restore_or_clear() {
    let mut p = compile(
        "fromAll().foreachStream().when({
            $init: () => ({ n: 0 }),
            $any: (s, e) => { s.n++; if (e.data.fail) throw new Error('bad event'); },
        })",
    );
    feed_all(
        &mut p,
        &[event(0, "a", "T", "{}"), event(1, "b", "T", "{}")],
    );
    // The handler mutated the state before throwing: that half-applied state must never show.
    let err = feed(&mut p, &event(2, "a", "T", r#"{"fail": true}"#)).unwrap_err();
    assert_eq!(err.message, "Error: bad event");
    assert_eq!(p.state("a").unwrap_err(), err);
    assert_eq!(feed(&mut p, &event(3, "a", "T", "{}")).unwrap_err(), err);
    assert!(
        p.partitions().contains(&"a".to_string()),
        "listed, so a checkpoint cannot skip it silently"
    );
    // Other partitions carry on.
    feed_all(&mut p, &[event(4, "b", "T", "{}")]);
    assert_eq!(state(&mut p, "b"), json!({ "n": 2 }));
    // Restoring the checkpoint heals it.
    p.restore("a", json!({ "n": 1 })).unwrap();
    feed_all(&mut p, &[event(5, "a", "T", "{}")]);
    assert_eq!(state(&mut p, "a"), json!({ "n": 2 }));
    // So does clear.
    feed(&mut p, &event(6, "b", "T", r#"{"fail": true}"#)).unwrap_err();
    p.clear();
    feed_all(&mut p, &[event(7, "b", "T", "{}")]);
    assert_eq!(state(&mut p, "b"), json!({ "n": 1 }));
}

#[test]
fn a_throwing_init_is_a_runtime_error() {
    let mut p = compile(
        "fromAll().when({ $init: function init() { throw new Error('no init'); }, $any: s => s })",
    );
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert_eq!(err.message, "Error: no init");
    assert!(err.stack.unwrap().contains("at init"));
}

#[test]
fn thrown_non_errors_are_described() {
    for (throw, expected) in [
        ("throw 'oops'", "uncaught exception: oops"),
        ("throw 42", "uncaught exception: 42"),
        ("throw { code: 7 }", "uncaught exception: {\"code\":7}"),
        ("throw undefined", "uncaught exception: undefined"),
    ] {
        let mut p = compile(&format!("fromAll().when({{ $any: () => {{ {throw}; }} }})"));
        let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
        assert_eq!(err.message, expected, "{throw}");
    }
}

#[test]
fn an_infinite_loop_times_out_and_the_engine_stays_usable() {
    let mut p = compile_tight(
        "fromAll().foreachStream().when({
            $init: () => ({ n: 0 }),
            Spin: (s) => { s.n = -1; while (true) {} },
            SpinCaught: (s) => { for (;;) { try { while (true) {} } catch (e) { s.caught = true; } } },
            $any: (s) => { s.n++; },
        })",
    );
    feed_all(&mut p, &[event(0, "a", "Ok", "{}")]);
    let err = feed(&mut p, &event(1, "a", "Spin", "{}")).unwrap_err();
    assert_eq!(err, ProjectionError::new(timeout_message()));
    assert!(p.state("a").is_err(), "the timed-out partition is poisoned");
    // The interrupt cannot be caught by user code.
    let err = feed(&mut p, &event(2, "b", "SpinCaught", "{}")).unwrap_err();
    assert_eq!(err.message, timeout_message());
    // The engine keeps working for other partitions, with a fresh deadline per event.
    feed_all(
        &mut p,
        &[event(3, "c", "Ok", "{}"), event(4, "c", "Ok", "{}")],
    );
    assert_eq!(state(&mut p, "c"), json!({ "n": 2 }));
}

#[test]
fn a_slow_partition_by_and_a_slow_definition_time_out() {
    let mut p =
        compile_tight("fromAll().partitionBy(e => { while (true) {} }).when({ $any: s => s })");
    let err = p.partition_key(&event(0, "a", "T", "{}")).unwrap_err();
    assert_eq!(err.message, timeout_message());
    match JsProjection::compile("while (true) {}\nfromAll().when({ $any: s => s })", tight()) {
        Err(JsError::Timeout { limit }) => assert_eq!(limit, tight().per_event),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_slow_to_json_in_the_state_times_out() {
    let mut p =
        compile_tight("fromAll().when({ $any: (s) => { s.toJSON = () => { while (true) {} }; } })");
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert_eq!(p.state("").unwrap_err().message, timeout_message());
}

/// Small memory, but time enough for a debug build to fill it.
fn roomy_clock() -> JsLimits {
    JsLimits {
        memory_bytes: 8 << 20,
        per_event: Duration::from_secs(5),
        ..JsLimits::default()
    }
}

#[test]
fn memory_bombs_run_out_of_memory() {
    let oom = ProjectionError::new(JsError::OutOfMemory.to_string());
    for bomb in [
        // Many small allocations: QuickJS cannot even allocate the error object.
        "const a = []; while (true) a.push({ i: a.length, s: 'x' + a.length });",
        // Allocations that double until one fails.
        "const k = []; for (let n = 1024; ; n *= 2) k.push('y'.repeat(n));",
        "const a = []; while (true) a.push(new Array(100000).fill(1));",
        // Growing the state itself.
        "s.big = s.big || []; for (;;) s.big.push([1, 2, 3, 4]);",
    ] {
        let mut p = JsProjection::compile(&format!(
            "fromAll().foreachStream().when({{ Bomb: (s) => {{ {bomb} }}, $any: (s) => {{ s.n = (s.n || 0) + 1; }} }})"
        ), roomy_clock()).unwrap();
        let err = feed(&mut p, &event(0, "bomb", "Bomb", "{}")).unwrap_err();
        assert_eq!(err, oom, "{bomb}");
        // The memory was given back: the engine still folds.
        feed_all(&mut p, &[event(1, "ok", "Ok", "{}")]);
        assert_eq!(state(&mut p, "ok"), json!({ "n": 1 }), "{bomb}");
    }
    // At definition time too.
    match JsProjection::compile(
        "const k = []; for (let n = 1; ; n *= 2) k.push('y'.repeat(n));",
        roomy_clock(),
    ) {
        Err(JsError::OutOfMemory) => {}
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn deep_recursion_is_a_runtime_error_not_a_crash() {
    let mut p = compile_tight("function down(n) { return down(n + 1) + 1; }\nfromAll().when({ $any: (s) => { down(0); } })");
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(
        err.message.contains("Maximum call stack size exceeded"),
        "{err:?}"
    );
    // A deeply nested state cannot crash serialisation either.
    let mut p = compile_tight("fromAll().when({ $any: (s) => { let o = s; for (let i = 0; i < 20000; i++) { o.c = {}; o = o.c; } } })");
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert!(p.state("").is_err());
}

#[test]
fn restore_takes_any_json_and_refuses_nothing_valid() {
    let mut p = compile("fromAll().when({ $any: (s, e) => { s.n = (s.n || 0) + 1; return s; } })");
    let big = json!({ "n": 41, "nested": { "list": [1, 2.5, "three", null, true, { "deep": [] }] }, "unicode": "é✓\u{1F600}" });
    p.restore("", big.clone()).unwrap();
    assert_eq!(state(&mut p, ""), big);
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert_eq!(state(&mut p, "")["n"], 42);
}

#[test]
fn engines_are_independent() {
    // Globals of one projection are invisible to another (a fresh runtime each).
    let mut a = compile("var shared = 1; fromAll().when({ $any: (s) => { s.t = typeof globalThis.leak; globalThis.leak = 1; } })");
    let mut b = compile("fromAll().when({ $any: (s) => { s.t = typeof globalThis.leak; } })");
    feed_all(&mut a, &[event(0, "a", "T", "{}")]);
    feed_all(&mut b, &[event(0, "a", "T", "{}")]);
    assert_eq!(state(&mut b, ""), json!({ "t": "undefined" }));
}

#[test]
fn an_engine_can_be_built_and_dropped_on_another_thread() {
    // The runner builds its engine inside its own thread from a Send factory.
    let factory: strata_store::projection::EngineFactory = Box::new(|| {
        let p = JsProjection::compile(
            "fromAll().when({ $any: (s) => { s.n = (s.n || 0) + 1; } })",
            JsLimits::default(),
        )?;
        Ok(Box::new(p))
    });
    let handle = std::thread::spawn(move || {
        let mut engine = factory().unwrap();
        let mut emits = Vec::new();
        engine
            .apply("", &event(0, "a", "T", "{}"), &mut emits)
            .unwrap();
        engine.state("").unwrap()
    });
    assert_eq!(handle.join().unwrap(), Some(json!({ "n": 1 })));
}

#[test]
fn default_stack_limit_fits_a_default_thread() {
    // The runner's thread has Rust's default stack (2 MiB): recursion must hit QuickJS's
    // 1 MiB limit, not the thread's guard page.
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let mut p = compile(
                "function down(n) { return n === -1 ? 0 : down(n + 1) + 1; }\n\
                 fromAll().when({ $any: (s) => { s.depth = down(0); } })",
            );
            feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err()
        })
        .unwrap();
    let err = handle.join().unwrap();
    assert!(
        err.message.contains("Maximum call stack size exceeded"),
        "{err:?}"
    );
}

#[test]
fn extreme_limits_are_safe() {
    // No clock overflow with a huge time limit; a zero stack limit still has a floor.
    let limits = JsLimits {
        memory_bytes: 0,
        per_event: Duration::MAX,
        max_stack_bytes: 0,
    };
    let mut p = JsProjection::compile(
        "function down(n) { return down(n + 1) + 1; }\nfromAll().when({ Deep: () => { down(0); }, $any: (s) => { s.n = 1; } })",
        limits,
    )
    .unwrap();
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert_eq!(state(&mut p, ""), json!({ "n": 1 }));
    let err = feed(&mut p, &event(1, "b", "Deep", "{}")).unwrap_err();
    assert!(
        err.message.contains("Maximum call stack size exceeded"),
        "{err:?}"
    );
}

#[test]
fn atomics_wait_cannot_block_the_thread() {
    // A blocking wait would sit outside the interrupt handler's reach.
    let mut p = compile_tight(
        "fromAll().when({ $any: () => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); } })",
    );
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(err.message.starts_with("TypeError"), "{err:?}");
}

#[test]
fn catastrophic_regex_backtracking_times_out() {
    let mut p = compile_tight(
        "fromAll().when({ $any: (s) => { s.m = /^(a+)+$/.test('a'.repeat(40) + 'b'); } })",
    );
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert_eq!(err.message, timeout_message());
}

#[test]
fn huge_native_work_is_bounded_by_memory() {
    // Native built-ins do not poll the interrupt, but what they can do is bounded by memory.
    let mut p = JsProjection::compile(
        "fromAll().when({ $any: (s) => { s.a = new Array(1e9).fill(0); } })",
        tight(),
    )
    .unwrap();
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(
        err.message == JsError::OutOfMemory.to_string() || err.message.starts_with("RangeError"),
        "{err:?}"
    );
}

/// The documented cap on a `partitionBy` key (4 KiB of UTF-8).
const KEY_CAP: usize = 4096;

#[test]
fn partition_keys_are_capped() {
    let mut p = compile(
        "fromAll().partitionBy(e => e.data.c.repeat(e.data.n)).when({ $any: (s) => { s.n = 1; } })",
    );
    let key_event = |position: u64, c: &str, n: usize| {
        event(position, "a", "T", &json!({ "c": c, "n": n }).to_string())
    };
    feed_all(&mut p, &[key_event(0, "k", KEY_CAP)]);
    assert_eq!(state(&mut p, &"k".repeat(KEY_CAP)), json!({ "n": 1 }));
    // Bytes of UTF-8, not characters; and the audit's million-byte key.
    for (c, n) in [("k", KEY_CAP + 1), ("✓", KEY_CAP / 3 + 1), ("k", 1_000_000)] {
        let err = feed(&mut p, &key_event(1, c, n)).unwrap_err();
        assert!(
            err.message.starts_with("RangeError: partitionBy()"),
            "{err:?}"
        );
        assert!(
            err.message.contains(&format!("{} bytes", c.len() * n))
                && err.message.contains(&format!("at most {KEY_CAP} bytes")),
            "{err:?}"
        );
    }
    assert_eq!(p.partitions(), vec!["k".repeat(KEY_CAP)]);
}

#[test]
fn partition_keys_count_against_the_memory_limit() {
    // 4,000-byte keys, tiny states: the keys alone must exhaust a 2 MiB limit within a few
    // hundred events instead of piling up outside the runtime.
    let limits = JsLimits {
        memory_bytes: 2 << 20,
        ..JsLimits::default()
    };
    let mut p = JsProjection::compile(
        "fromAll().partitionBy(e => 'k'.repeat(4000) + e.position).when({ $any: (s) => { s.n = 1; } })",
        limits,
    )
    .unwrap();
    let mut failed = None;
    for position in 0..1000 {
        if let Err(e) = feed(&mut p, &event(position, "a", "T", "{}")) {
            failed = Some((position, e));
            break;
        }
    }
    let (position, err) = failed.expect("4 MB of keys stayed within a 2 MiB limit");
    assert_eq!(err.message, JsError::OutOfMemory.to_string());
    // Each key takes more than its 4,000 bytes; the runtime itself takes some room too.
    assert!(
        (100..(2 << 20) / 4000).contains(&position),
        "out of memory at the {position}th key"
    );
    // Dropping the states gives the room back.
    p.clear();
    feed_all(&mut p, &[event(1000, "a", "T", "{}")]);
}

#[test]
fn what_the_runner_holds_counts_against_the_memory_limit() {
    let limits = JsLimits {
        memory_bytes: 2 << 20,
        ..JsLimits::default()
    };
    let mut p = JsProjection::compile(
        "fromAll().when({
            Big: (s) => { s.big = 'y'.repeat(1 << 20).length; },
            $any: (s) => { s.n = (s.n || 0) + 1; },
        })",
        limits,
    )
    .unwrap();
    feed_all(
        &mut p,
        &[event(0, "a", "T", "{}"), event(1, "a", "Big", "{}")],
    );
    let oom = JsError::OutOfMemory.to_string();
    // The runner's copies take all of it: no room for the next event.
    p.set_external_bytes(2 << 20);
    assert_eq!(
        feed(&mut p, &event(2, "a", "T", "{}")).unwrap_err().message,
        oom
    );
    // Half of it: not enough for a 1 MiB temporary.
    p.restore("", json!({ "n": 1 })).unwrap();
    p.set_external_bytes(1 << 20);
    feed_all(&mut p, &[event(3, "a", "T", "{}")]);
    assert_eq!(
        feed(&mut p, &event(4, "a", "Big", "{}"))
            .unwrap_err()
            .message,
        oom
    );
    // Nothing: room again.
    p.restore("", json!({ "n": 2 })).unwrap();
    p.set_external_bytes(0);
    feed_all(&mut p, &[event(5, "a", "Big", "{}")]);
    assert_eq!(state(&mut p, ""), json!({ "n": 2, "big": 1 << 20 }));
}

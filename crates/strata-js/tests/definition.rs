//! Compiling projections: sources, partitioning, handlers, and every way a definition is refused.

mod common;

use common::*;
use strata_js::JsError;
use strata_store::projection::{ProjectionEngine, ProjectionSource};

#[test]
fn each_source_kind() {
    let cases = [
        ("fromAll()", ProjectionSource::All),
        (
            "fromStream('order-1')",
            ProjectionSource::Stream("order-1".into()),
        ),
        (
            "fromStreams(['a', 'b', 'a'])",
            ProjectionSource::Streams(vec!["a".into(), "b".into()]),
        ),
        (
            "fromStreams('a', 'b')",
            ProjectionSource::Streams(vec!["a".into(), "b".into()]),
        ),
        (
            "fromCategory('order')",
            ProjectionSource::Category("order".into()),
        ),
    ];
    for (from, expected) in cases {
        let p = compile(&format!("{from}.when({{ $any: (s, e) => s }})"));
        assert_eq!(p.source(), expected, "{from}");
    }
}

#[test]
fn event_types_are_the_handler_names_unless_any() {
    let p = compile("fromAll().when({ $init: () => ({}), B: (s) => s, A: (s) => s })");
    assert_eq!(
        p.event_types(),
        Some(vec!["A".to_string(), "B".to_string()])
    );
    let p = compile("fromAll().when({ A: (s) => s, $any: (s) => s })");
    assert_eq!(p.event_types(), None);
}

#[test]
fn the_definition_may_span_statements_and_helpers() {
    let mut p = compile(
        "// a comment\n\
         function add(s, e) { s.n += e.data.n; return s; }\n\
         const handlers = { $init: () => ({ n: 0 }), Added: add };\n\
         const q = fromStream('nums');\n\
         q.when(handlers);\n",
    );
    assert_eq!(p.source(), ProjectionSource::Stream("nums".into()));
    feed_all(
        &mut p,
        &[
            event(0, "nums", "Added", r#"{"n":2}"#),
            event(1, "nums", "Added", r#"{"n":3}"#),
        ],
    );
    assert_eq!(state(&mut p, ""), serde_json::json!({ "n": 5 }));
}

fn definition_message(source: &str) -> String {
    match compile_err(source) {
        JsError::Definition { message } => message,
        other => panic!("{source}: expected a Definition error, got {other:?}"),
    }
}

#[test]
fn definition_errors() {
    let cases = [
        ("", "must start with fromAll()"),
        ("const x = 1;", "must start with fromAll()"),
        ("fromAll()", "must call .when"),
        ("fromAll().partitionBy(e => e.stream)", "must call .when"),
        (
            "fromStream().when({ $any: s => s })",
            "fromStream() needs exactly one stream name",
        ),
        (
            "fromStream('').when({ $any: s => s })",
            "non-empty stream name",
        ),
        (
            "fromStream(42).when({ $any: s => s })",
            "non-empty stream name",
        ),
        (
            "fromStreams([]).when({ $any: s => s })",
            "at least one stream name",
        ),
        (
            "fromStreams().when({ $any: s => s })",
            "at least one stream name",
        ),
        (
            "fromStreams(['a', 1]).when({ $any: s => s })",
            "non-empty stream name",
        ),
        (
            "fromCategory().when({ $any: s => s })",
            "fromCategory() needs exactly one",
        ),
        (
            "fromAll('x').when({ $any: s => s })",
            "fromAll() takes no arguments",
        ),
        (
            "fromAll().when({ $any: s => s }); fromStream('a').when({ $any: s => s })",
            "exactly one fromAll/fromStream/fromStreams/fromCategory",
        ),
        (
            "fromAll().when({ $foo: s => s, $any: s => s })",
            "unknown handler \"$foo\"",
        ),
        (
            "fromAll().when({ $initShared: () => ({}), A: s => s })",
            "unknown handler \"$initShared\"",
        ),
        ("fromAll().when({ A: 1 })", "must be a function"),
        (
            "fromAll().when({ $init: () => ({}) })",
            "at least one event handler",
        ),
        ("fromAll().when({})", "at least one event handler"),
        ("fromAll().when()", "needs an object of handlers"),
        ("fromAll().when([])", "needs an object of handlers"),
        ("fromAll().when(s => s)", "needs an object of handlers"),
        (
            "const q = fromAll(); q.when({ A: s => s }); q.when({ B: s => s })",
            "only be called once",
        ),
        (
            "fromAll().partitionBy('stream').when({ A: s => s })",
            "partitionBy() needs a function",
        ),
        (
            "fromAll().foreachStream(1).when({ A: s => s })",
            "takes no arguments",
        ),
        (
            "const q = fromAll(); q.partitionBy(e => 1); q.foreachStream().when({ A: s => s })",
            "must come once, before when()",
        ),
        (
            "const q = fromAll(); q.when({ A: s => s }); q.partitionBy(e => 1)",
            "must come once, before when()",
        ),
    ];
    for (source, expected) in cases {
        let message = definition_message(source);
        assert!(
            message.contains(expected),
            "{source}: {message:?} lacks {expected:?}"
        );
    }
}

#[test]
fn a_script_that_throws_while_defining_is_a_runtime_error_with_stack() {
    match compile_err("function setup() {\n  throw new TypeError('nope');\n}\nsetup();\n") {
        JsError::Runtime { message, stack } => {
            assert_eq!(message, "TypeError: nope");
            let stack = stack.expect("a stack");
            assert!(stack.contains("at setup (projection.js:2:"), "{stack}");
        }
        other => panic!("{other:?}"),
    }
    // A DefinitionError look-alike thrown by user code is still the user's runtime error.
    match compile_err("class DefinitionError extends Error {}; throw new DefinitionError('x')") {
        JsError::Runtime { .. } => {}
        other => panic!("{other:?}"),
    }
    match compile_err("throw 'a string'") {
        JsError::Runtime { message, .. } => assert_eq!(message, "uncaught exception: a string"),
        other => panic!("{other:?}"),
    }
}

fn syntax(source: &str) -> (String, Option<u32>, Option<u32>) {
    match compile_err(source) {
        JsError::Syntax {
            message,
            line,
            column,
        } => (message, line, column),
        other => panic!("{source}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_carry_the_users_line_and_column() {
    let (message, line, column) = syntax("let a = 1;\nlet b = 2;\nlet c = ;\n");
    assert_eq!((line, column), (Some(3), Some(9)));
    assert!(message.contains("unexpected token"), "{message}");

    let (_, line, column) =
        syntax("fromAll()\n  .when({\n    $any: (s, e) => { s.x = ; }\n  });\n");
    assert_eq!((line, column), (Some(3), Some(29)));

    let (_, line, _) = syntax("fromAll().when({\n  A: (s) => s,,\n})");
    assert_eq!(line, Some(2));

    // Unexpected end of input: the position just past the last line break.
    let (_, line, column) = syntax("\n\n\n\nfromAll().when({ $any: (s) => { return s }\n");
    assert_eq!((line, column), (Some(6), Some(1)));

    let (_, line, _) = syntax("const s = 'unterminated\n");
    assert_eq!(line, Some(1));

    let (_, line, _) = syntax("// header\n/* block\n comment */\nimport x from 'y';\n");
    assert_eq!(line, Some(4));

    let (_, line, _) = syntax("fromAll().when({ $any: (s) => s });\n\n}\n");
    assert_eq!(line, Some(3));
}

#[test]
fn syntax_error_display_has_the_position() {
    let e = compile_err("let a = ;");
    assert!(e.to_string().contains("(line 1, column 9)"), "{e}");
}

#[test]
fn a_syntax_error_thrown_at_run_time_is_not_a_parse_error() {
    match compile_err("JSON.parse('{');") {
        JsError::Runtime { message, .. } => {
            assert!(message.starts_with("SyntaxError"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match compile_err("\n\neval('let = ;');") {
        JsError::Runtime { message, .. } => {
            assert!(message.starts_with("SyntaxError"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_dsl_is_closed_after_compile() {
    let mut p = compile("fromAll().when({ $any: (s, e) => { fromAll(); return s; } })");
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(
        err.message
            .contains("only be called while the projection is being defined"),
        "{err:?}"
    );
}

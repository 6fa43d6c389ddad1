//! End-to-end: reads — JSON pages (`next`/`end`, both directions), every query parameter,
//! `/all` filters and system events, NDJSON streaming replay past the `limit` cap, one event by
//! revision, the stream listing, and the operations endpoints (`/health`, `/info`, `/metrics`,
//! `/openapi.json`) — against the real `strata` binary.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use strata_suite::{Client, TestServer};

fn events(page: &Value) -> &Vec<Value> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {page}"))
}

fn field(page: &Value, name: &str) -> Vec<u64> {
    events(page)
        .iter()
        .map(|e| e[name].as_u64().unwrap())
        .collect()
}

/// `n` events of type `ty` with `data.i` = 0..n.
fn batch(ty: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"type": ty, "data": {"i": i}}))
            .collect(),
    )
}

/// Follows `next` from `first_query` (which has no `from`) until `end`; returns the values of
/// `id_field` of every event, and checks each page's size.
fn follow_pages(c: &Client, path: &str, query: &str, limit: usize, id_field: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut from: Option<Value> = None;
    for _ in 0..10_000 {
        let from_param = match &from {
            None => String::new(),
            Some(v) => format!("&from={v}"),
        };
        let page = c.page(&format!("{path}?limit={limit}{query}{from_param}"));
        let got = field(&page, id_field);
        assert!(got.len() <= limit, "page over the limit: {page}");
        out.extend(got);
        if page["end"] == json!(true) {
            return out;
        }
        assert!(
            !events(&page).is_empty(),
            "an empty page that is not the end: {page}"
        );
        assert!(
            !page["next"].is_null(),
            "next is null before the end: {page}"
        );
        from = Some(page["next"].clone());
    }
    panic!("paging did not end");
}

#[test]
fn json_pages_of_a_stream_forward_and_backward() {
    let server = TestServer::start();
    let c = server.client();
    c.append("page-1", &batch("P", 25));

    // Defaults: forward from the start, up to 100.
    let page = c.page("/streams/page-1");
    assert_eq!(field(&page, "revision"), (0..25).collect::<Vec<_>>());
    assert_eq!(page["next"], 25);
    assert_eq!(page["end"], true);
    let keys: BTreeSet<&str> = page
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["events", "next", "end"]));

    // Forward pages of 10.
    let p = c.page("/streams/page-1?limit=10");
    assert_eq!(field(&p, "revision"), (0..10).collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(10), json!(false))
    );
    let p = c.page("/streams/page-1?limit=10&from=10");
    assert_eq!(field(&p, "revision"), (10..20).collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(20), json!(false))
    );
    let p = c.page("/streams/page-1?limit=10&from=20");
    assert_eq!(field(&p, "revision"), (20..25).collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(25), json!(true))
    );
    // A page ending exactly at the last event is the end.
    let p = c.page("/streams/page-1?limit=5&from=20");
    assert_eq!(field(&p, "revision"), (20..25).collect::<Vec<_>>());
    assert_eq!(p["end"], true, "{p}");
    assert_eq!(p["next"], 25);
    // Polling from next: empty, still the end, same next.
    let p = c.page("/streams/page-1?from=25");
    assert!(events(&p).is_empty());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(25), json!(true))
    );
    let p = c.page("/streams/page-1?from=end");
    assert!(events(&p).is_empty(), "forward from end: {p}");
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(25), json!(true))
    );
    let p = c.page("/streams/page-1?from=start&limit=3");
    assert_eq!(field(&p, "revision"), [0, 1, 2]);

    // Backward: from the end by default.
    let p = c.page("/streams/page-1?direction=backward&limit=10");
    assert_eq!(field(&p, "revision"), (15..25).rev().collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(14), json!(false))
    );
    let p = c.page("/streams/page-1?direction=backward&limit=10&from=14");
    assert_eq!(field(&p, "revision"), (5..15).rev().collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(4), json!(false))
    );
    let p = c.page("/streams/page-1?direction=backward&limit=10&from=4");
    assert_eq!(field(&p, "revision"), (0..5).rev().collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (Value::Null, json!(true))
    );
    let p = c.page("/streams/page-1?direction=backward&from=end&limit=1");
    assert_eq!(field(&p, "revision"), [24]);
    let p = c.page("/streams/page-1?direction=backward&from=start");
    assert_eq!(field(&p, "revision"), [0]);
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (Value::Null, json!(true))
    );
    let p = c.page("/streams/page-1?direction=forward&from=24");
    assert_eq!(field(&p, "revision"), [24]);

    // Following next collects everything once, in both directions, whatever the page size.
    for limit in [1, 7, 25, 10_000] {
        assert_eq!(
            follow_pages(&c, "/streams/page-1", "", limit, "revision"),
            (0..25).collect::<Vec<_>>()
        );
        assert_eq!(
            follow_pages(
                &c,
                "/streams/page-1",
                "&direction=backward",
                limit,
                "revision"
            ),
            (0..25).rev().collect::<Vec<_>>()
        );
    }

    // limit bounds: 1..=10000.
    assert_eq!(field(&c.page("/streams/page-1?limit=1"), "revision"), [0]);
    assert_eq!(events(&c.page("/streams/page-1?limit=10000")).len(), 25);
    for bad in ["limit=0", "limit=10001", "limit=-1", "limit=ten", "limit="] {
        c.get(&format!("/streams/page-1?{bad}"))
            .assert_error(400, "invalid_request");
        c.get(&format!("/all?{bad}"))
            .assert_error(400, "invalid_request");
    }

    // The default page size is 100.
    c.append("page-2", &batch("Q", 150));
    let p = c.page("/streams/page-2");
    assert_eq!(field(&p, "revision"), (0..100).collect::<Vec<_>>());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(100), json!(false))
    );
    let p = c.page("/all");
    assert_eq!(events(&p).len(), 100);
}

/// Streams of several categories; returns the events in log order as (position, stream, type).
fn fill_categories(c: &Client) -> Vec<(u64, String, String)> {
    let plan: &[(&str, &[&str])] = &[
        ("order-1", &["OrderPlaced", "OrderShipped"]),
        ("customer-1", &["CustomerCreated"]),
        ("order-2", &["OrderPlaced"]),
        ("order", &["Misc"]),
        ("orderly-1", &["OrderPlaced"]),
        ("orders", &["OrderPlaced"]),
        ("order-1", &["OrderPaid", "OrderPlaced"]),
        ("customer-2", &["CustomerCreated", "OrderPlaced"]),
        ("order-10", &["OrderShipped"]),
    ];
    let mut log = Vec::new();
    for (stream, types) in plan {
        let body = Value::Array(types.iter().map(|t| json!({"type": t})).collect());
        let r = c.append(stream, &body);
        let first = r["first_position"].as_u64().unwrap();
        for (i, t) in types.iter().enumerate() {
            log.push((first + i as u64, stream.to_string(), t.to_string()));
        }
    }
    log
}

#[test]
fn all_pages_and_filters() {
    let server = TestServer::start();
    let c = server.client();
    let log = fill_categories(&c);
    let all_positions: Vec<u64> = log.iter().map(|e| e.0).collect();
    assert_eq!(
        all_positions,
        (0..log.len() as u64).collect::<Vec<_>>(),
        "positions dense"
    );

    // /all pages, both directions.
    let p = c.page("/all");
    assert_eq!(field(&p, "position"), all_positions);
    assert_eq!(p["end"], true);
    assert_eq!(p["next"], log.len() as u64);
    for limit in [1, 4, 100] {
        assert_eq!(
            follow_pages(&c, "/all", "", limit, "position"),
            all_positions
        );
        let mut rev = all_positions.clone();
        rev.reverse();
        assert_eq!(
            follow_pages(&c, "/all", "&direction=backward", limit, "position"),
            rev
        );
    }
    let p = c.page("/all?from=3&limit=2");
    assert_eq!(field(&p, "position"), [3, 4]);
    assert_eq!(p["next"], 5);
    let p = c.page("/all?from=3&direction=backward");
    assert_eq!(field(&p, "position"), [3, 2, 1, 0]);
    assert_eq!(p["next"], Value::Null);
    let p = c.page("/all?from=end");
    assert!(events(&p).is_empty());
    assert_eq!(
        (p["next"].clone(), p["end"].clone()),
        (json!(log.len()), json!(true))
    );
    let p = c.page("/all?from=end&direction=backward&limit=1");
    assert_eq!(field(&p, "position"), [log.len() as u64 - 1]);
    let p = c.page("/all?from=start&limit=1");
    assert_eq!(field(&p, "position"), [0]);

    let expect = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<u64> {
        log.iter()
            .filter(|(_, s, t)| keep(s, t))
            .map(|e| e.0)
            .collect()
    };
    let category = |s: &str| s.split('-').next().unwrap().to_owned();
    let cases: Vec<(&str, Vec<u64>)> = vec![
        ("types=OrderPlaced", expect(&|_, t| t == "OrderPlaced")),
        (
            "types=OrderPlaced,CustomerCreated",
            expect(&|_, t| t == "OrderPlaced" || t == "CustomerCreated"),
        ),
        ("types=Nothing", vec![]),
        ("category=order", expect(&|s, _| category(s) == "order")),
        (
            "category=customer",
            expect(&|s, _| category(s) == "customer"),
        ),
        ("category=orders", expect(&|s, _| s == "orders")),
        (
            "stream_prefix=order-1",
            expect(&|s, _| s.starts_with("order-1")),
        ),
        (
            "stream_prefix=order",
            expect(&|s, _| s.starts_with("order")),
        ),
        (
            "stream_prefix=customer-",
            expect(&|s, _| s.starts_with("customer-")),
        ),
        (
            "types=OrderPlaced&category=order",
            expect(&|s, t| t == "OrderPlaced" && category(s) == "order"),
        ),
        (
            "types=OrderPlaced&category=customer",
            expect(&|s, t| t == "OrderPlaced" && category(s) == "customer"),
        ),
        (
            "types=OrderShipped,OrderPlaced&stream_prefix=order-1",
            expect(&|s, t| (t == "OrderShipped" || t == "OrderPlaced") && s.starts_with("order-1")),
        ),
    ];
    for (query, want) in &cases {
        // One page.
        let p = c.page(&format!("/all?{query}"));
        assert_eq!(&field(&p, "position"), want, "{query}: {p}");
        assert_eq!(p["end"], true, "{query}");
        // Pages of 1 and 2, following next (filtered pages skip positions).
        for limit in [1, 2] {
            assert_eq!(
                &follow_pages(&c, "/all", &format!("&{query}"), limit, "position"),
                want,
                "{query} limit {limit}"
            );
            let mut rev = want.clone();
            rev.reverse();
            assert_eq!(
                follow_pages(
                    &c,
                    "/all",
                    &format!("&{query}&direction=backward"),
                    limit,
                    "position"
                ),
                rev,
                "{query} backward limit {limit}"
            );
        }
        // NDJSON with the same filter.
        let replay: Vec<u64> = c
            .ndjson(&format!("/all?{query}"))
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect();
        assert_eq!(&replay, want, "{query} NDJSON");
    }
    // A filtered page's next continues after the last event returned (it may skip positions
    // that do not match, never one that does).
    let p = c.page("/all?category=customer&limit=1");
    let first = field(&p, "position")[0];
    let second = expect(&|s, _| category(s) == "customer")[1];
    let next = p["next"].as_u64().unwrap();
    assert!(next > first && next <= second, "{p}");

    // /all-only parameters on a stream: 400 (docs/http-api.md).
    for q in [
        "types=A",
        "category=order",
        "stream_prefix=o",
        "include_system=true",
    ] {
        c.get(&format!("/streams/order-1?{q}"))
            .assert_error(400, "invalid_request");
    }
}

#[test]
fn system_events_are_left_out_of_all_unless_include_system() {
    let server = TestServer::start();
    let c = server.client();
    c.append("sys-1", &json!([{"type": "A"}, {"type": "B"}]));
    // Metadata and deletions are the server's own bookkeeping ($-streams).
    c.put_json("/streams/sys-1/metadata", r#"{"custom": {"x": 1}}"#)
        .assert_status(200);
    c.append("sys-2", &json!({"type": "C"}));
    c.delete("/streams/sys-2", &[]).assert_status(204);
    c.append("sys-3", &json!({"type": "D"}));

    let plain = c.page("/all");
    let streams: Vec<&str> = events(&plain)
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert!(streams.iter().all(|s| !s.starts_with('$')), "{streams:?}");
    assert!(streams.contains(&"sys-3"));
    assert_eq!(c.page("/all?include_system=false"), plain);

    let with = c.page("/all?include_system=true");
    let all: Vec<&Value> = events(&with).iter().collect();
    assert!(
        all.iter()
            .any(|e| e["stream"].as_str().unwrap().starts_with('$')),
        "{with}"
    );
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (0..positions.len() as u64).collect::<Vec<_>>(),
        "with system events the log is dense"
    );
    // Without them the positions skip the system records but stay increasing.
    let user: Vec<u64> = field(&plain, "position");
    assert!(user.windows(2).all(|w| w[0] < w[1]));
    assert!(user.len() < positions.len());
    let replay = c.ndjson("/all?include_system=true");
    assert_eq!(replay.len(), positions.len());
    for bad in ["include_system=yes", "include_system=1", "include_system="] {
        c.get(&format!("/all?{bad}"))
            .assert_error(400, "invalid_request");
    }
    // $-streams are never listed.
    let listing = c.page("/streams");
    let listed: Vec<&str> = listing["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["sys-1", "sys-3"]);
}

#[test]
fn ndjson_replays_everything_past_the_limit_cap_streamed() {
    let server = TestServer::start();
    let c = server.client();
    c.append("side-1", &json!({"type": "Side"}));
    c.append("bulk-1", &batch("Bulk", 6000));
    c.append("side-1", &json!({"type": "Side"}));
    c.append("bulk-1", &batch("Bulk", 6000));
    c.append("side-1", &json!({"type": "Side"}));

    let reply = c.get_with("/streams/bulk-1", &[("Accept", "application/x-ndjson")]);
    reply.assert_status(200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/x-ndjson"));
    assert!(
        reply.header("content-length").is_none()
            && reply
                .header("transfer-encoding")
                .is_some_and(|t| t.contains("chunked")),
        "the replay is not streamed: {:?}",
        reply.headers
    );
    let lines = reply.text();
    assert!(lines.ends_with('\n'));
    assert!(lines.lines().all(|l| !l.contains('\n')));
    let replay = reply.ndjson();
    assert_eq!(replay.len(), 12_000);
    for (i, e) in replay.iter().enumerate() {
        assert_eq!(e["revision"], i as u64);
        assert_eq!(e["data"]["i"], (i % 6000) as u64);
        assert_eq!(e["stream"], "bulk-1");
    }
    // `limit` does not cap a replay (validated only).
    assert_eq!(c.ndjson("/streams/bulk-1?limit=10").len(), 12_000);
    c.get_with(
        "/streams/bulk-1?limit=0",
        &[("Accept", "application/x-ndjson")],
    )
    .assert_error(400, "invalid_request");
    // from / direction.
    let tail: Vec<u64> = c
        .ndjson("/streams/bulk-1?from=11990")
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(tail, (11990..12000).collect::<Vec<_>>());
    let back: Vec<u64> = c
        .ndjson("/streams/bulk-1?direction=backward")
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(back, (0..12000).rev().collect::<Vec<_>>());
    let back: Vec<u64> = c
        .ndjson("/streams/bulk-1?direction=backward&from=5")
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(back, [5, 4, 3, 2, 1, 0]);
    assert!(c.ndjson("/streams/bulk-1?from=end").is_empty());

    // /all: everything, positions dense.
    let all = c.ndjson("/all");
    assert_eq!(all.len(), 12_003);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["position"], i as u64);
    }
    let sides: Vec<u64> = c
        .ndjson("/all?types=Side")
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(sides, [0, 6001, 12002]);
    let from: Vec<u64> = c
        .ndjson("/all?from=12000")
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(from, [12000, 12001, 12002]);

    // Read incrementally: the first line arrives and parses before the body is read.
    let mut response = c.open("GET", "/all", &[("Accept", "application/x-ndjson")], None);
    assert_eq!(response.status, 200);
    let first: Value = serde_json::from_str(&response.next_line().unwrap().unwrap()).unwrap();
    assert_eq!(first["position"], 0);
    // Appends during the replay: it still ends (a replay is not a subscription), contiguous,
    // with at least everything that existed when it started.
    c.append("side-1", &batch("During", 50));
    let mut count = 1u64;
    while let Some(line) = response.next_line().unwrap() {
        let e: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(e["position"], count);
        count += 1;
    }
    assert!((12_003..=12_053).contains(&count), "{count}");
    drop(response);

    // Errors before the first byte are proper statuses.
    c.get_with("/streams/never-1", &[("Accept", "application/x-ndjson")])
        .assert_error(404, "stream_not_found");
}

#[test]
fn one_event_by_revision() {
    let server = TestServer::start();
    let c = server.client();
    c.append("one-1", &batch("One", 3));
    for rev in 0..3u64 {
        let reply = c.get(&format!("/streams/one-1/{rev}"));
        reply.assert_status(200);
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let e = reply.json();
        assert_eq!(e["revision"], rev);
        assert_eq!(e["stream"], "one-1");
        assert_eq!(e["data"]["i"], rev);
    }
    c.get("/streams/one-1/3").assert_error(404, "not_found");
    c.get("/streams/one-1/18446744073709551615")
        .assert_error(404, "not_found");
    c.get("/streams/never-1/0")
        .assert_error(404, "stream_not_found");
    for bad in ["abc", "-1", "1.5", "18446744073709551616"] {
        c.get(&format!("/streams/one-1/{bad}"))
            .assert_error(400, "invalid_request");
    }
}

#[test]
fn stream_listing_pages_by_name() {
    let server = TestServer::start();
    let c = server.client();
    let names = ["b-2", "a-1", "c", "a-3", "b-1", "a-2", "a-10"];
    let mut last = std::collections::BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let r = c.append(name, &batch("L", i + 1));
        last.insert(
            name.to_string(),
            (r["last_revision"].clone(), r["last_position"].clone()),
        );
    }
    c.put_json("/streams/a-1/metadata", r#"{"max_count": 5}"#)
        .assert_status(200);
    c.append("gone-1", &json!({"type": "L"}));
    c.delete("/streams/gone-1", &[]).assert_status(204);
    let sorted: Vec<String> = last.keys().cloned().collect();

    let p = c.page("/streams");
    let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["streams", "next"]));
    let listed: Vec<String> = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, sorted);
    assert_eq!(p["next"], Value::Null);
    for s in p["streams"].as_array().unwrap() {
        let (rev, pos) = &last[s["name"].as_str().unwrap()];
        assert_eq!(&s["last_revision"], rev, "{s}");
        assert_eq!(&s["last_position"], pos, "{s}");
        assert_eq!(s.as_object().unwrap().len(), 3, "{s}");
    }

    // Paging with after/limit, with and without a prefix.
    let collect = |prefix: &str, limit: usize| -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let mut q = format!("/streams?limit={limit}");
            if !prefix.is_empty() {
                q.push_str(&format!("&prefix={prefix}"));
            }
            if let Some(a) = &after {
                q.push_str(&format!("&after={a}"));
            }
            let p = c.page(&q);
            let page: Vec<String> = p["streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_owned())
                .collect();
            assert!(page.len() <= limit, "{p}");
            if let Some(last) = page.last() {
                if !p["next"].is_null() {
                    assert_eq!(p["next"], last.as_str(), "next is the last name: {p}");
                }
            }
            out.extend(page);
            match p["next"].as_str() {
                None => return out,
                Some(n) => after = Some(n.to_owned()),
            }
        }
        panic!("listing did not end");
    };
    for limit in [1, 2, 3, 7, 100] {
        assert_eq!(collect("", limit), sorted, "limit {limit}");
        assert_eq!(
            collect("a-", limit),
            ["a-1", "a-10", "a-2", "a-3"],
            "limit {limit}"
        );
        assert_eq!(collect("b", limit), ["b-1", "b-2"], "limit {limit}");
    }
    let p = c.page("/streams?limit=2");
    assert_eq!(p["next"], "a-10");
    let p = c.page("/streams?after=a-3&limit=2");
    let page: Vec<&str> = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["b-1", "b-2"]);
    assert!(c.page("/streams?prefix=zzz")["streams"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(c.page("/streams?after=c")["streams"]
        .as_array()
        .unwrap()
        .is_empty());
    for bad in ["limit=0", "limit=10001", "limit=x"] {
        c.get(&format!("/streams?{bad}"))
            .assert_error(400, "invalid_request");
    }

    // The default page is 100 names.
    for i in 0..120 {
        c.append(&format!("many-{i:03}"), &json!({"type": "L"}));
    }
    let p = c.page("/streams?prefix=many-");
    let page = p["streams"].as_array().unwrap();
    assert_eq!(page.len(), 100);
    assert_eq!(page[99]["name"], "many-099");
    assert_eq!(p["next"], "many-099");
    let p = c.page("/streams?prefix=many-&after=many-099");
    assert_eq!(p["streams"].as_array().unwrap().len(), 20);
    assert_eq!(p["next"], Value::Null);
    assert_eq!(collect("", 10_000).len(), names.len() + 120);
}

/// The value of a Prometheus series (the sum over its label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn health_info_metrics_and_openapi() {
    let server = TestServer::start_with(&["--fsync", "always"]);
    let c = server.client();

    let health = c.get("/health");
    health.assert_status(200);
    assert_eq!(health.json(), json!({"status": "ok"}));

    let info = c.get("/info");
    info.assert_status(200);
    let info = info.json();
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    let dir = info["data_dir"].as_str().unwrap();
    assert_eq!(
        std::fs::canonicalize(dir).unwrap(),
        std::fs::canonicalize(server.dir.path()).unwrap(),
        "{info}"
    );
    for key in ["segment_count", "bytes_on_disk", "uptime_seconds"] {
        assert!(info[key].is_u64(), "{key}: {info}");
    }
    assert!(info["last_position"].is_null(), "empty log: {info}");

    let m0 = c.get("/metrics");
    m0.assert_status(200);
    assert!(
        m0.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        m0.headers
    );
    let m0 = m0.text();
    for name in [
        "strata_appends_total",
        "strata_bytes_written_total",
        "strata_fsync_duration_seconds_bucket",
        "strata_subscriptions_open",
        "strata_http_requests_total",
    ] {
        assert!(
            m0.contains(&format!("\n{name}")) || m0.starts_with(name),
            "{name} missing:\n{m0}"
        );
    }
    assert!(
        m0.contains("# TYPE strata_fsync_duration_seconds histogram"),
        "{m0}"
    );

    for i in 0..3 {
        c.append("metered-1", &batch("M", i + 1));
    }
    let info = c.get("/info").json();
    assert_eq!(info["last_position"], 5, "{info}");
    assert!(info["bytes_on_disk"].as_u64().unwrap() > 0);
    let mut sse = c.sse("/all?from=end", &[]);
    let _ = sse.next_item();
    let m1 = c.get("/metrics").text();
    assert_eq!(
        metric(&m1, "strata_appends_total") - metric(&m0, "strata_appends_total"),
        3.0,
        "{m1}"
    );
    assert_eq!(
        metric(&m1, "strata_events_written_total") - metric(&m0, "strata_events_written_total"),
        6.0
    );
    assert!(metric(&m1, "strata_bytes_written_total") > metric(&m0, "strata_bytes_written_total"));
    assert!(
        metric(&m1, "strata_fsync_duration_seconds_count")
            >= metric(&m0, "strata_fsync_duration_seconds_count") + 1.0,
        "fsync always: {m1}"
    );
    // The gauge counts the subscription once its producer runs (shortly after the head).
    let open = strata_suite::wait_for(std::time::Duration::from_secs(10), || {
        (metric(&c.get("/metrics").text(), "strata_subscriptions_open") == 1.0).then_some(())
    });
    assert!(
        open.is_some(),
        "the open-subscriptions gauge did not count the subscription"
    );
    assert!(metric(&m1, "strata_http_requests_total") > metric(&m0, "strata_http_requests_total"));
    drop(sse);
    let closed = strata_suite::wait_for(std::time::Duration::from_secs(10), || {
        (metric(&c.get("/metrics").text(), "strata_subscriptions_open") == 0.0).then_some(())
    });
    assert!(
        closed.is_some(),
        "the open-subscriptions gauge did not drop after the client left"
    );

    let api = c.get("/openapi.json");
    api.assert_status(200);
    assert!(api
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let api = api.json();
    assert!(
        api["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        api["openapi"]
    );
    assert!(api["info"]["title"].is_string());
    let paths = api["paths"].as_object().expect("paths");
    for p in [
        "/streams/{stream}",
        "/streams/{stream}/{revision}",
        "/streams",
        "/streams/{stream}/metadata",
        "/all",
        "/health",
        "/info",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "openapi.json lacks {p}: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn accept_header_chooses_the_representation() {
    let server = TestServer::start();
    let c = server.client();
    c.append("acc-1", &batch("A", 3));
    let ct = |accept: Option<&str>| -> String {
        let headers: Vec<(&str, &str)> = accept.map(|a| vec![("Accept", a)]).unwrap_or_default();
        let mut response = c.open("GET", "/streams/acc-1", &headers, None);
        assert_eq!(response.status, 200, "{accept:?}");
        let ct = response.header("content-type").unwrap().to_owned();
        if ct.starts_with("text/event-stream") {
            // A subscription never ends: read a little, then hang up.
            response.next_line().unwrap();
        } else {
            let reply = response.into_reply();
            if ct.starts_with("application/json") {
                assert_eq!(reply.json()["events"].as_array().unwrap().len(), 3);
            } else {
                assert_eq!(reply.ndjson().len(), 3);
            }
        }
        ct
    };
    assert!(ct(None).starts_with("application/json"));
    assert!(ct(Some("application/json")).starts_with("application/json"));
    assert!(ct(Some("*/*")).starts_with("application/json"));
    assert!(ct(Some("text/html")).starts_with("application/json"));
    assert!(ct(Some("application/x-ndjson")).starts_with("application/x-ndjson"));
    assert!(ct(Some("text/event-stream")).starts_with("text/event-stream"));
    // docs/http-api.md: the highest q wins.
    assert!(ct(Some("application/json;q=0.5, application/x-ndjson"))
        .starts_with("application/x-ndjson"));
    assert!(
        ct(Some("text/event-stream;q=0.1, application/json;q=0.9")).starts_with("application/json")
    );
}

/// Requests one after another on one keep-alive connection, including a streamed (chunked)
/// replay and errors: the framing stays in step.
#[test]
fn keep_alive_connections_stay_in_step() {
    use std::io::Write;
    let server = TestServer::start();
    let c = server.client();
    let mut stream = c.connect();
    let mut exchange = |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let head = c
            .head(method, path, headers, Some(body.len()))
            .replace("Connection: close\r\n", "");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let response =
            strata_suite::Response::read_from(stream.try_clone().unwrap(), false).unwrap();
        response.into_reply()
    };
    let json_ct = [("Content-Type", "application/json")];
    exchange("GET", "/health", &[], "").assert_status(200);
    exchange(
        "POST",
        "/streams/ka-1",
        &json_ct,
        &batch("K", 5).to_string(),
    )
    .assert_status(201);
    let replay = exchange("GET", "/all", &[("Accept", "application/x-ndjson")], "");
    replay.assert_status(200);
    assert_eq!(replay.ndjson().len(), 5);
    exchange("POST", "/streams/ka-1", &json_ct, "{oops").assert_error(400, "invalid_request");
    exchange("GET", "/streams/none-1", &[], "").assert_error(404, "stream_not_found");
    exchange("GET", "/nope", &[], "").assert_error(404, "not_found");
    let page = exchange("GET", "/streams/ka-1?limit=2", &[], "");
    assert_eq!(page.json()["events"].as_array().unwrap().len(), 2);
    exchange("POST", "/streams/ka-1", &json_ct, r#"{"type": "Last"}"#).assert_status(201);
    // Last: an error answered before the body is read (the server may then close the
    // connection, which is its right; a client must not reuse it blindly).
    let r = exchange(
        "POST",
        "/streams/ka-1",
        &[("Content-Type", "text/plain")],
        r#"{"type": "A"}"#,
    );
    r.assert_error(415, "unsupported_media_type");
    assert_eq!(c.read_stream("ka-1").len(), 6);
}

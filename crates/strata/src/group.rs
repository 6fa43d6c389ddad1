//! `strata group ...`: create, list, show and delete consumer groups, list and replay their
//! parked events (docs/http-api.md, Consumer groups).
//!
//! Human output (tables, `key: value` lines) goes to stdout unless `--json` asks for the
//! server's JSON; event listings are one JSON object per line, like `strata read`.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Map, Value};

use crate::cli::{GroupArgs, GroupCommand, GroupCreateArgs, GroupListArgs, GroupShowArgs};
use crate::client::{one_line, print_lines, segment, Client};
use crate::error::{Error, Result};

/// Settings and state fields in the order `show` and `list` print them.
const FIELDS: &[&str] = &[
    "name",
    "source",
    "from",
    "ordering",
    "ack_timeout_ms",
    "max_deliveries",
    "checkpoint",
    "in_flight",
    "parked",
    "lag",
];

/// `strata group ...`.
pub fn run(args: GroupArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    match args.command {
        GroupCommand::Create(a) => create(&client, &a),
        GroupCommand::List(a) => list(&client, &a),
        GroupCommand::Show(a) => show(&client, &a),
        GroupCommand::Delete(a) => {
            client.json("DELETE", &group_path(&a.name), &[], None)?;
            eprintln!("deleted group {}", a.name);
            Ok(ExitCode::SUCCESS)
        }
        GroupCommand::Parked(a) => print_lines(parked(&client, &a.name)?),
        GroupCommand::ReplayParked(a) => {
            let (_, text) = client.json(
                "POST",
                &format!("{}/parked/replay", group_path(&a.name)),
                &[],
                Some("{}"),
            )?;
            print_body(&text);
            let remaining = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("remaining").and_then(Value::as_u64))
                .unwrap_or(0);
            if remaining > 0 {
                eprintln!(
                    "{remaining} event(s) still parked (a replay re-queues at most one window); \
                     run replay-parked again once these are consumed"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `/groups/{name}`, encoded.
pub(crate) fn group_path(name: &str) -> String {
    format!("/groups/{}", segment(name))
}

/// The `PUT /groups/{name}` body: `source`, plus the settings given (the server's defaults
/// apply to the others).
fn create_body(a: &GroupCreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("source".into(), json!(a.source));
    if let Some(from) = &a.from {
        // An integer position/revision is sent as a number, `start`/`end` as strings.
        let v = from
            .parse::<u64>()
            .map_or_else(|_| json!(from), |n| json!(n));
        body.insert("from".into(), v);
    }
    if let Some(ms) = a.ack_timeout_ms {
        body.insert("ack_timeout_ms".into(), json!(ms));
    }
    if let Some(n) = a.max_deliveries {
        body.insert("max_deliveries".into(), json!(n));
    }
    if let Some(o) = a.ordering {
        body.insert("ordering".into(), json!(o.as_str()));
    }
    Value::Object(body)
}

fn create(client: &Client, a: &GroupCreateArgs) -> Result<ExitCode> {
    let body = create_body(a).to_string();
    let (status, text) = client.json("PUT", &group_path(&a.name), &[], Some(&body))?;
    eprintln!(
        "{} group {}",
        if status == 201 {
            "created"
        } else {
            "unchanged:"
        },
        a.name
    );
    print_body(&text);
    Ok(ExitCode::SUCCESS)
}

/// The groups of a `GET /groups` answer: an array, or the array in `{"groups": [...]}`.
fn groups_of(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("groups") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn list(client: &Client, a: &GroupListArgs) -> Result<ExitCode> {
    let (_, text) = client.json("GET", "/groups", &[], None)?;
    let groups = groups_of(parse(&text)?);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.json {
        for g in &groups {
            writeln!(out, "{g}")?;
        }
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                ["name", "source", "checkpoint", "in_flight", "parked", "lag"]
                    .iter()
                    .map(|f| scalar(state_field(g, f)))
                    .collect()
            })
            .collect();
        let header = ["NAME", "SOURCE", "CHECKPOINT", "IN_FLIGHT", "PARKED", "LAG"];
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            s
        };
        writeln!(out, "{}", line(&header))?;
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            writeln!(out, "{}", line(&cells))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn show(client: &Client, a: &GroupShowArgs) -> Result<ExitCode> {
    let (_, text) = client.json("GET", &group_path(&a.name), &[], None)?;
    let group = parse(&text)?;
    let parked_list = if a.parked {
        Some(parked(client, &a.name)?)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.json {
        let mut v = group;
        if let (Some(p), Value::Object(o)) = (parked_list, &mut v) {
            o.insert("parked_events".into(), Value::Array(p));
        }
        writeln!(out, "{v}")?;
    } else {
        for line in describe(&group) {
            writeln!(out, "{line}")?;
        }
        if let Some(p) = parked_list {
            writeln!(out, "parked events: {}", p.len())?;
            for entry in p {
                writeln!(out, "{entry}")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `key: value` lines of a group: the known fields first, in [`FIELDS`] order, then the rest
/// (nested objects flattened as `state.lag` etc.).
fn describe(group: &Value) -> Vec<String> {
    let mut flat: Vec<(String, &Value)> = Vec::new();
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    // `settings` repeats what the group shows at its top level.
                    if prefix.is_empty() && k == "settings" && v.is_object() {
                        continue;
                    }
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if v.is_object() {
                        walk(&key, v, out);
                    } else {
                        out.push((key, v));
                    }
                }
            }
            other => out.push((prefix.to_owned(), other)),
        }
    }
    walk("", group, &mut flat);
    let rank = |k: &str| {
        let leaf = k.rsplit('.').next().unwrap_or(k);
        FIELDS
            .iter()
            .position(|f| *f == leaf)
            .unwrap_or(FIELDS.len())
    };
    flat.sort_by_key(|(k, _)| rank(k));
    flat.into_iter()
        .map(|(k, v)| format!("{k}: {}", scalar(Some(v))))
        .collect()
}

/// A field of a group, at the top level or in a nested `state`/`settings` object.
fn state_field<'a>(g: &'a Value, field: &str) -> Option<&'a Value> {
    g.get(field)
        .or_else(|| g.get("state").and_then(|s| s.get(field)))
        .or_else(|| g.get("settings").and_then(|s| s.get(field)))
}

/// A JSON value as a table cell: strings unquoted, absent as `-`.
fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Every parked entry of a group: `GET /groups/{name}/parked`, page after page (`next` is the
/// `after` of the following page; an answer without `next` is the only page).
fn parked(client: &Client, name: &str) -> Result<Vec<Value>> {
    let path = format!("{}/parked", group_path(name));
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query: Vec<(&str, &str)> = match &after {
            Some(a) => vec![("max", "1000"), ("after", a)],
            None => vec![("max", "1000")],
        };
        let (_, text) = client.json("GET", &path, &query, None)?;
        let page = parse(&text)?;
        let (entries, next) = match page {
            Value::Array(a) => (a, Value::Null),
            Value::Object(mut o) => {
                let next = o.remove("next").unwrap_or(Value::Null);
                let entries = o
                    .into_iter()
                    .find_map(|(_, v)| match v {
                        Value::Array(a) => Some(a),
                        _ => None,
                    })
                    .unwrap_or_default();
                (entries, next)
            }
            _ => (Vec::new(), Value::Null),
        };
        let empty = entries.is_empty();
        all.extend(entries);
        after = match next {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s),
            _ => None,
        };
        if after.is_none() || empty {
            return Ok(all);
        }
    }
}

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Http {
        status: 200,
        message: format!("unexpected response ({e}): {}", text.trim()),
    })
}

/// Prints a response body on one line (nothing for an empty body).
fn print_body(text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        println!("{}", one_line(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Ordering;

    #[test]
    fn create_bodies_carry_only_what_was_given() {
        let mut a = GroupCreateArgs {
            name: "g".into(),
            source: "$all".into(),
            from: None,
            ack_timeout_ms: None,
            max_deliveries: None,
            ordering: None,
        };
        assert_eq!(create_body(&a), json!({"source": "$all"}));
        a.from = Some("42".into());
        a.ordering = Some(Ordering::PerStream);
        a.max_deliveries = Some(3);
        assert_eq!(
            create_body(&a),
            json!({"source": "$all", "from": 42, "ordering": "per_stream", "max_deliveries": 3})
        );
        a.from = Some("end".into());
        assert_eq!(create_body(&a)["from"], "end");
    }

    #[test]
    fn descriptions_put_settings_first() {
        let g = json!({"lag": 3, "name": "g", "extra": true, "state": {"in_flight": 1}});
        assert_eq!(
            describe(&g),
            ["name: g", "state.in_flight: 1", "lag: 3", "extra: true"]
        );
        assert_eq!(groups_of(json!({"groups": [1, 2]})), [json!(1), json!(2)]);
        assert_eq!(groups_of(json!([3])), [json!(3)]);
        assert_eq!(scalar(state_field(&g, "in_flight")), "1");
        assert_eq!(scalar(state_field(&g, "parked")), "-");
    }
}

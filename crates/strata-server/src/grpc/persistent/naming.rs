//! Which consumer group a KurrentDB persistent subscription is, and back.
//!
//! KurrentDB names a persistent subscription by its stream *and* group (`orders` + `billing`
//! and `$all` + `billing` are two subscriptions); Strata names a consumer group by one name. The
//! group created for a subscription is named `<group>@<stream>` with `%`, `@` and `$` of each
//! part percent-encoded (`billing@orders`, `billing@%24all`, `billing@%24ce-order`): one name per
//! pair, and no `$` (group names must not contain one).
//!
//! The other way, a group is offered to KurrentDB clients as the subscription
//! (its source's KurrentDB stream, its decoded group) when its name decodes to a pair whose
//! stream is its source's, else as (its source's stream, its name): a group made over HTTP as
//! `billing` reading `orders` is the subscription `orders` + `billing`. Lookups try the encoded
//! name first, then the plain group name with a matching source.
//!
//! Sources: a stream is itself, `$all` is `$all`, and a category `order` is KurrentDB's
//! category stream `$ce-order` (what subscriptions to a category read there).

use crate::groups::settings::{check_group_name, Source};

/// The KurrentDB stream of `$all`.
pub(crate) const ALL: &str = "$all";
/// The prefix of KurrentDB's category streams.
const CATEGORY_PREFIX: &str = "$ce-";

/// Percent-encodes `%`, `@` and `$`.
fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '@' => out.push_str("%40"),
            '$' => out.push_str("%24"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`encode`]; `None` when `part` is not an encoding (a raw `@` or `$`, another escape).
fn decode(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(i) = rest.find(['%', '@', '$']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (c, len) = if tail.starts_with("%25") {
            ('%', 3)
        } else if tail.starts_with("%40") {
            ('@', 3)
        } else if tail.starts_with("%24") {
            ('$', 3)
        } else {
            return None;
        };
        out.push(c);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Some(out)
}

/// The consumer group name of the subscription (`stream`, `group`), or why there is none (the
/// name is over 255 bytes or has control characters).
pub(crate) fn group_name(stream: &str, group: &str) -> Result<String, String> {
    if group.is_empty() {
        return Err("the group name must not be empty".into());
    }
    let name = format!("{}@{}", encode(group), encode(stream));
    check_group_name(&name).map_err(|e| format!("group {group:?} on stream {stream:?}: {e}"))?;
    Ok(name)
}

/// The (stream, group) a consumer group name encodes, if it is one.
fn split(name: &str) -> Option<(String, String)> {
    let (group, stream) = name.split_once('@')?;
    Some((decode(stream)?, decode(group)?))
}

/// The KurrentDB stream a group's source reads.
pub(crate) fn source_stream(source: &Source) -> String {
    match source {
        Source::All => ALL.to_owned(),
        Source::Stream(s) => s.clone(),
        Source::Category(c) => format!("{CATEGORY_PREFIX}{c}"),
    }
}

/// The group source of a KurrentDB stream: `$all`, `$ce-<category>` or a user stream; other
/// `$` streams have none.
pub(crate) fn source_of(stream: &str) -> Result<Source, String> {
    if stream == ALL {
        return Ok(Source::All);
    }
    if let Some(category) = stream.strip_prefix(CATEGORY_PREFIX) {
        return Source::parse(&format!("category:{category}")).map_err(|e| e.to_string());
    }
    if stream.starts_with('$') {
        return Err(format!(
            "persistent subscriptions read a user stream, $all or a category stream $ce-<category>, not {stream:?}"
        ));
    }
    Source::parse(stream).map_err(|e| e.to_string())
}

/// How a consumer group shows to KurrentDB clients: (stream, group).
pub(crate) fn subscription_of(name: &str, source: &Source) -> (String, String) {
    let stream = source_stream(source);
    match split(name) {
        Some((s, g)) if s == stream => (s, g),
        _ => (stream, name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let cases = [
            ("orders", "billing", "billing@orders"),
            ("$all", "billing", "billing@%24all"),
            ("$ce-order", "g", "g@%24ce-order"),
            ("a@b", "c%d", "c%25d@a%40b"),
            ("x", "a@b$", "a%40b%24@x"),
        ];
        for (stream, group, name) in cases {
            assert_eq!(group_name(stream, group).unwrap(), name);
            let source = source_of(stream).unwrap();
            assert_eq!(
                subscription_of(name, &source),
                (stream.to_owned(), group.to_owned())
            );
        }
        assert_ne!(
            group_name("all", "g").unwrap(),
            group_name("$all", "g").unwrap()
        );
    }

    #[test]
    fn plain_groups_show_under_their_source() {
        assert_eq!(
            subscription_of("billing", &Source::Stream("orders".into())),
            ("orders".to_owned(), "billing".to_owned())
        );
        // Decodes, but to another stream than the source's: the name is the group.
        assert_eq!(
            subscription_of("a@b", &Source::All),
            ("$all".to_owned(), "a@b".to_owned())
        );
        assert_eq!(
            subscription_of("a@b%2", &Source::Category("c".into())),
            ("$ce-c".to_owned(), "a@b%2".to_owned())
        );
    }

    #[test]
    fn sources() {
        assert_eq!(source_of("$all").unwrap(), Source::All);
        assert_eq!(
            source_of("$ce-order").unwrap(),
            Source::Category("order".into())
        );
        assert_eq!(
            source_of("order-1").unwrap(),
            Source::Stream("order-1".into())
        );
        assert!(source_of("$et-Placed").is_err());
        assert!(source_of("$ce-").is_err());
        assert!(source_of("").is_err());
        assert!(group_name("s", "").is_err());
        assert!(group_name("s", &"g".repeat(260)).is_err());
        assert!(group_name("s", "a\nb").is_err());
    }
}

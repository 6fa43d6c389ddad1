//! GetInfo and List: a consumer group as KurrentDB's `SubscriptionInfo`.
//!
//! Positions: a stream group's are revisions (`"17"`), the others' log positions
//! (`"C:<commit>/P:<prepare>"`). The last checkpointed event is the one before the checkpoint
//! (none while nothing is done), the last known one the source's head. Settings with no
//! per-group equivalent show the engine's values: the window as the buffer sizes, the feed batch
//! as the read batch, the checkpoint interval and ack count as checkpoint after / max count.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tonic::Status;

use super::connections::Connections;
use super::naming;
use super::pb;
use super::settings::{i32_of, i64_of, max_retry_count, strategy_name};
use crate::app::App;
use crate::groups::settings::{Source, StartFrom};
use crate::groups::Group;

/// A cursor as GetInfo shows it: a revision, or a position in the commit/prepare form.
fn cursor_text(source: &Source, cursor: u64) -> String {
    match source {
        Source::Stream(_) => cursor.to_string(),
        // Commit and prepare positions are both the Strata position (see `convert`).
        Source::All | Source::Category(_) => format!("C:{cursor}/P:{cursor}"),
    }
}

/// `start_from` as the clients parse it: start `0` / `C:0/P:0`, end `-1` / `C:-1/P:-1`.
fn start_text(source: &Source, from: StartFrom) -> String {
    // A category is KurrentDB's stream `$ce-<category>`: its start shows as a stream's.
    let stream = !matches!(source, Source::All);
    match (from, stream) {
        (StartFrom::Start, true) => "0".into(),
        (StartFrom::Start, false) => "C:0/P:0".into(),
        (StartFrom::End, true) => "-1".into(),
        (StartFrom::End, false) => "C:-1/P:-1".into(),
        (StartFrom::At(n), true) => n.to_string(),
        (StartFrom::At(n), false) => cursor_text(source, n),
    }
}

/// The `SubscriptionInfo` of each group, in order.
pub(super) async fn describe(
    app: &App,
    connections: &Connections,
    groups: Vec<Arc<Group>>,
) -> Result<Vec<pb::SubscriptionInfo>, Status> {
    let names: Vec<String> = groups.iter().map(|g| g.name().to_owned()).collect();
    let views = app
        .groups()
        .describe(groups)
        .await
        .map_err(super::status_of)?;
    let options = app.groups().options().clone();
    Ok(views
        .into_iter()
        .zip(names)
        .map(|(v, name)| {
            let source = &v.settings.source;
            let (stream, group) = naming::subscription_of(&name, source);
            let sessions = connections.sessions(&name);
            let head = v.checkpoint.saturating_add(v.lag);
            let last_checkpointed = if v.checkpoint > v.start {
                cursor_text(source, v.checkpoint - 1)
            } else {
                String::new()
            };
            let last_known = if head > 0 {
                cursor_text(source, head - 1)
            } else {
                String::new()
            };
            let window = i32_of(options.window);
            pb::SubscriptionInfo {
                event_source: stream,
                group_name: group,
                status: if v.error.is_some() { "Faulted" } else { "Live" }.into(),
                connections: sessions
                    .iter()
                    .map(|s| {
                        let in_flight = s.in_flight.load(Relaxed);
                        pb::subscription_info::ConnectionInfo {
                            from: s.from.clone(),
                            username: String::new(),
                            average_items_per_second: 0,
                            total_items: i64_of(s.total.load(Relaxed)),
                            count_since_last_measurement: 0,
                            observed_measurements: Vec::new(),
                            available_slots: i32_of(s.buffer.saturating_sub(in_flight)),
                            in_flight_messages: i32_of(in_flight),
                            connection_name: s.from.clone(),
                        }
                    })
                    .collect(),
                average_per_second: 0,
                total_items: i64_of(v.counters[0]),
                count_since_last_measurement: 0,
                last_checkpointed_event_position: last_checkpointed,
                last_known_event_position: last_known,
                resolve_link_tos: matches!(source, Source::Category(_)),
                start_from: start_text(source, v.settings.from),
                message_timeout_milliseconds: i32_of(v.settings.ack_timeout_ms),
                extra_statistics: false,
                max_retry_count: max_retry_count(&v.settings),
                live_buffer_size: window,
                buffer_size: window,
                read_batch_size: i32_of(options.feed_batch),
                check_point_after_milliseconds: i32_of(options.checkpoint_interval.as_millis()),
                min_check_point_count: 1,
                max_check_point_count: i32_of(options.checkpoint_acks),
                read_buffer_count: i32_of(v.buffered),
                live_buffer_count: 0,
                retry_buffer_count: i32_of(v.replaying),
                total_in_flight_messages: i32_of(v.in_flight),
                outstanding_messages_count: i32_of(v.in_flight),
                named_consumer_strategy: strategy_name(v.settings.ordering).into(),
                max_subscriber_count: i32_of(connections.limit(&name)),
                parked_message_count: i64_of(v.parked),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse_as_the_clients_expect() {
        let stream = Source::Stream("s".into());
        assert_eq!(start_text(&stream, StartFrom::Start), "0");
        assert_eq!(start_text(&stream, StartFrom::End), "-1");
        assert_eq!(start_text(&stream, StartFrom::At(7)), "7");
        assert_eq!(start_text(&Source::All, StartFrom::Start), "C:0/P:0");
        assert_eq!(start_text(&Source::All, StartFrom::End), "C:-1/P:-1");
        assert!(start_text(&Source::All, StartFrom::At(7)).starts_with("C:"));
        let category = Source::Category("c".into());
        assert_eq!(start_text(&category, StartFrom::Start), "0");
        assert_eq!(start_text(&category, StartFrom::At(0)), "0");
    }
}

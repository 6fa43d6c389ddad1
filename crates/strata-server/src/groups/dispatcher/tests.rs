//! Unit and property tests of the dispatcher: delivery, per-stream ordering, timeouts, nacks,
//! parking and the window bound, driven without I/O or a clock.
use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn s(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn d(per_stream: bool) -> Dispatcher<u64> {
    Dispatcher::new(0, [], per_stream, 100, 1 << 20)
}

#[test]
fn poll_ack_advances_the_checkpoint() {
    let mut d = d(false);
    for c in 0..3 {
        assert!(d.feed(c, s("a"), c, 1));
    }
    let got = d.poll(10, 0, 100);
    assert_eq!(got.iter().map(|g| g.cursor).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(got.iter().all(|g| g.delivery == 1));
    assert_eq!(d.in_flight(), 3);
    assert_eq!(d.ack(1), AckOutcome::Acked { replay: false });
    assert_eq!(d.checkpoint(), 0);
    assert_eq!(d.done_above().collect::<Vec<_>>(), [1]);
    assert_eq!(d.ack(0), AckOutcome::Acked { replay: false });
    assert_eq!(d.checkpoint(), 2);
    assert_eq!(d.done_above().count(), 0);
    assert_eq!(d.ack(0), AckOutcome::Noop);
    assert_eq!(d.check(0), AckCheck::Done);
    assert_eq!(d.check(2), AckCheck::Pending);
    assert_eq!(d.check(9), AckCheck::Unknown);
    d.ack(2);
    assert_eq!(d.checkpoint(), 3);
    d.advance_fed(10);
    assert_eq!(d.checkpoint(), 10);
}

#[test]
fn timeouts_redeliver_then_park() {
    let mut d = d(false);
    d.feed(0, s("a"), 0, 1);
    assert_eq!(d.poll(1, 0, 10)[0].delivery, 1);
    assert_eq!(d.next_deadline(), Some(10));
    assert_eq!(d.expire(9, 2), (0, vec![]));
    assert_eq!(d.expire(10, 2), (1, vec![]));
    assert_eq!(d.poll(1, 10, 10)[0].delivery, 2);
    let (requeued, parked) = d.expire(20, 2);
    assert_eq!(requeued, 0);
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason, ParkReason::MaxDeliveries);
    assert_eq!(parked[0].delivery, 2);
    assert_eq!(d.checkpoint(), 1, "parked counts as done");
    assert!(d.poll(1, 30, 10).is_empty());
}

#[test]
fn nacks() {
    let mut d = d(false);
    for c in 0..3 {
        d.feed(c, s("a"), c, 1);
    }
    let got = d.poll(3, 0, 100);
    assert_eq!(
        d.nack(0, 1, NackAction::Retry, 5),
        NackOutcome::Applied(None)
    );
    assert_eq!(d.nack(0, 1, NackAction::Retry, 5), NackOutcome::Stale);
    assert_eq!(d.poll(1, 0, 100)[0].delivery, 2);
    assert_eq!(d.nack(0, 1, NackAction::Park, 5), NackOutcome::Stale);
    match d.nack(1, got[1].delivery, NackAction::Park, 5) {
        NackOutcome::Applied(Some(p)) => assert_eq!(p.reason, ParkReason::Nacked),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.nack(2, 1, NackAction::Skip, 5),
        NackOutcome::Applied(None)
    );
    assert_eq!(d.check(2), AckCheck::Done);
    // Retry at the last allowed delivery parks.
    match d.nack(0, 2, NackAction::Retry, 2) {
        NackOutcome::Applied(Some(p)) => assert_eq!(p.reason, ParkReason::MaxDeliveries),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.checkpoint(), 3);
}

#[test]
fn per_stream_holds_later_events_of_a_busy_stream() {
    let mut d = d(true);
    d.feed(0, s("a"), 0, 1);
    d.feed(1, s("a"), 1, 1);
    d.feed(2, s("b"), 2, 1);
    let got: Vec<u64> = d.poll(10, 0, 100).iter().map(|g| g.cursor).collect();
    assert_eq!(got, [0, 2]);
    d.nack(0, 1, NackAction::Retry, 5);
    // 0 is ready again and still blocks 1.
    let got: Vec<u64> = d.poll(10, 0, 100).iter().map(|g| g.cursor).collect();
    assert_eq!(got, [0]);
    d.nack(0, 2, NackAction::Park, 5);
    let got: Vec<u64> = d.poll(10, 0, 100).iter().map(|g| g.cursor).collect();
    assert_eq!(got, [1], "a parked event does not block its stream");
}

#[test]
fn restart_skips_done_cursors_and_window_is_bounded() {
    let mut d: Dispatcher<u64> = Dispatcher::new(5, [3, 7, 9], false, 4, 1 << 20);
    assert_eq!(d.room(), 4, "done cursors not fed yet take no room");
    assert!(d.feed(5, s("a"), 5, 1));
    assert!(!d.feed(7, s("a"), 7, 1));
    assert!(d.feed(8, s("a"), 8, 1));
    assert_eq!(d.room(), 1);
    assert!(d.feed(10, s("a"), 10, 1));
    assert_eq!(d.room(), 0);
    d.poll(10, 0, 10);
    d.ack(5);
    d.ack(8);
    assert_eq!(d.checkpoint(), 10, "9 was done, 10 is pending");
    assert_eq!(d.done_above().count(), 0);
    d.ack(10);
    assert_eq!(d.checkpoint(), 11);
    let mut small: Dispatcher<u64> = Dispatcher::new(0, [], false, 100, 10);
    small.feed(0, s("a"), 0, 10);
    assert_eq!(small.room(), 0, "bounded by bytes too");
}

/// A crash after a park's record but before the checkpoint passing it restores as many
/// done cursors as the window holds: the feeder must still get room to feed past them.
#[test]
fn a_window_full_of_restored_done_cursors_still_has_room() {
    let mut d: Dispatcher<u64> = Dispatcher::new(0, [0, 1, 2, 3], false, 4, 1 << 20);
    assert!(d.room() > 0);
    for c in 0..4 {
        assert!(!d.feed(c, s("a"), c, 1));
    }
    assert_eq!(d.checkpoint(), 4);
    assert_eq!(d.room(), 4);
    assert!(d.feed(4, s("a"), 4, 1));
    assert_eq!(d.poll(10, 0, 10)[0].cursor, 4);
}

#[test]
fn restored_delivery_counts_apply_when_fed() {
    let mut d: Dispatcher<u64> = Dispatcher::new(0, [], false, 100, 1 << 20);
    d.restore_deliveries([(1, 2), (3, 4)]);
    d.feed(0, s("a"), 0, 1);
    d.feed(1, s("a"), 1, 1);
    d.feed(4, s("a"), 4, 1);
    let got: Vec<(u64, u32)> = d
        .poll(10, 0, 10)
        .iter()
        .map(|g| (g.cursor, g.delivery))
        .collect();
    assert_eq!(got, [(0, 1), (1, 3), (4, 1)]);
    assert!(d.restored.is_empty());
    assert_eq!(d.deliveries_from(2).collect::<Vec<_>>(), [(1, 3)]);
}

#[test]
fn replayed_events_do_not_move_the_checkpoint() {
    let mut d = d(true);
    d.feed(0, s("a"), 0, 1);
    d.poll(1, 0, 10);
    d.nack(0, 1, NackAction::Park, 5);
    assert_eq!(d.checkpoint(), 1);
    d.feed(1, s("a"), 1, 1);
    assert!(d.replay(0, s("a"), 0, 1));
    let got = d.poll(10, 0, 10);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].cursor, got[0].delivery), (0, 1));
    assert_eq!(d.checkpoint(), 1);
    assert_eq!(d.ack(0), AckOutcome::Acked { replay: true });
    assert_eq!(d.poll(10, 0, 10)[0].cursor, 1);
}

#[derive(Clone, Debug)]
enum Op {
    Feed { stream: u8, skip: u8 },
    Poll { max: u8 },
    Ack { pick: u16 },
    Nack { pick: u16, action: u8 },
    AckAny { cursor: u16 },
    Tick { ms: u8 },
    Replay,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4, 0u8..3).prop_map(|(stream, skip)| Op::Feed { stream, skip }),
        3 => (1u8..5).prop_map(|max| Op::Poll { max }),
        3 => any::<u16>().prop_map(|pick| Op::Ack { pick }),
        2 => (any::<u16>(), 0u8..3).prop_map(|(pick, action)| Op::Nack { pick, action }),
        1 => (0u16..200).prop_map(|cursor| Op::AckAny { cursor }),
        2 => (0u8..40).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::Replay),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random feeds, polls, acks, nacks, timeouts and replays across several streams.
    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 1..300), per_stream in any::<bool>(), capacity in 1usize..12) {
        const MAX_DELIVERIES: u32 = 3;
        const TIMEOUT: u64 = 25;
        let mut d: Dispatcher<u64> = Dispatcher::new(0, [], per_stream, capacity, 1 << 20);
        let mut now = 0u64;
        let mut next_cursor = 0u64;
        let mut stream_of: HashMap<u64, Arc<str>> = HashMap::new();
        let mut fed: BTreeSet<u64> = BTreeSet::new();
        // What the model says about each fed event.
        let mut done: HashSet<u64> = HashSet::new();
        let mut parked: BTreeSet<u64> = BTreeSet::new();
        // cursor -> delivery currently in flight.
        let mut in_flight: HashMap<u64, u32> = HashMap::new();
        let mut last_checkpoint = 0;
        for op in ops {
            match op {
                Op::Feed { stream, skip } => {
                    next_cursor += u64::from(skip);
                    if d.room() > 0 {
                        let name: Arc<str> = Arc::from(format!("s{stream}"));
                        prop_assert!(d.feed(next_cursor, name.clone(), next_cursor, 1));
                        stream_of.insert(next_cursor, name);
                        fed.insert(next_cursor);
                        next_cursor += 1;
                    } else {
                        d.advance_fed(d.fed_to());
                    }
                }
                Op::Poll { max } => {
                    for g in d.poll(usize::from(max), now, TIMEOUT) {
                        prop_assert!(!in_flight.contains_key(&g.cursor), "handed out twice");
                        prop_assert!(!done.contains(&g.cursor) || parked.contains(&g.cursor));
                        prop_assert_eq!(g.payload, g.cursor);
                        if per_stream {
                            let s = &stream_of[&g.cursor];
                            for c in in_flight.keys() {
                                prop_assert!(!(stream_of[c] == *s && *c < g.cursor), "per-stream order broken");
                            }
                            // No earlier pending event of the stream at all.
                            for c in fed.range(..g.cursor) {
                                if stream_of[c] == *s && d.check(*c) == AckCheck::Pending {
                                    prop_assert!(false, "earlier pending event {} of the stream", c);
                                }
                            }
                        }
                        in_flight.insert(g.cursor, g.delivery);
                    }
                }
                Op::Ack { pick } | Op::Nack { pick, .. } if in_flight.is_empty() => { let _ = pick; }
                Op::Ack { pick } => {
                    let mut keys: Vec<u64> = in_flight.keys().copied().collect();
                    keys.sort_unstable();
                    let c = keys[usize::from(pick) % keys.len()];
                    prop_assert_eq!(d.check(c), AckCheck::Pending);
                    prop_assert!(matches!(d.ack(c), AckOutcome::Acked { .. }), "ack of a pending event");
                    in_flight.remove(&c);
                    done.insert(c);
                    parked.remove(&c);
                }
                Op::Nack { pick, action } => {
                    let mut keys: Vec<u64> = in_flight.keys().copied().collect();
                    keys.sort_unstable();
                    let c = keys[usize::from(pick) % keys.len()];
                    let delivery = in_flight[&c];
                    let action = [NackAction::Retry, NackAction::Park, NackAction::Skip][usize::from(action)];
                    // A stale delivery number is ignored.
                    prop_assert_eq!(d.nack(c, delivery + 1, action, MAX_DELIVERIES), NackOutcome::Stale);
                    match d.nack(c, delivery, action, MAX_DELIVERIES) {
                        NackOutcome::Applied(p) => {
                            in_flight.remove(&c);
                            match (action, p) {
                                (NackAction::Retry, None) => prop_assert!(delivery < MAX_DELIVERIES),
                                (NackAction::Retry, Some(p)) => {
                                    prop_assert!(delivery >= MAX_DELIVERIES);
                                    prop_assert_eq!(p.cursor, c);
                                    done.insert(c);
                                    parked.insert(c);
                                }
                                (NackAction::Park, Some(p)) => {
                                    prop_assert_eq!(p.reason, ParkReason::Nacked);
                                    done.insert(c);
                                    parked.insert(c);
                                }
                                (NackAction::Skip, None) => { done.insert(c); parked.remove(&c); }
                                other => prop_assert!(false, "unexpected {:?}", other),
                            }
                        }
                        NackOutcome::Stale => prop_assert!(false, "current delivery was stale"),
                    }
                }
                Op::AckAny { cursor } => {
                    let c = u64::from(cursor);
                    let check = d.check(c);
                    if !fed.contains(&c) && c >= d.checkpoint() {
                        prop_assert_eq!(check, AckCheck::Unknown);
                    }
                    if check == AckCheck::Pending {
                        d.ack(c);
                        in_flight.remove(&c);
                        done.insert(c);
                        parked.remove(&c);
                    } else {
                        prop_assert_eq!(d.ack(c), AckOutcome::Noop);
                    }
                }
                Op::Tick { ms } => {
                    now += u64::from(ms);
                    let (_, newly_parked) = d.expire(now, MAX_DELIVERIES);
                    for p in newly_parked {
                        prop_assert!(p.delivery >= MAX_DELIVERIES);
                        done.insert(p.cursor);
                        parked.insert(p.cursor);
                    }
                    // Still in flight only if it was not taken back.
                    in_flight.retain(|c, _| d.deadlines.iter().any(|(_, dc)| dc == c));
                }
                Op::Replay => {
                    if let Some(c) = parked.pop_first() {
                        prop_assert!(d.replay(c, stream_of[&c].clone(), c, 1));
                        done.remove(&c);
                    }
                }
            }
            // Invariants after every step.
            let cp = d.checkpoint();
            prop_assert!(cp >= last_checkpoint, "checkpoint went back");
            last_checkpoint = cp;
            for c in fed.range(..cp) {
                // Below the checkpoint: done, or a replayed parked event pending again.
                prop_assert!(done.contains(c) || stream_of.contains_key(c) && d.slots.get(c).is_some_and(|s| s.replay), "checkpoint passed pending {}", c);
            }
            for c in &fed {
                if !done.contains(c) {
                    prop_assert_eq!(d.check(*c), AckCheck::Pending, "event {} lost", c);
                }
            }
            prop_assert_eq!(d.in_flight(), in_flight.len());
            prop_assert!(d.slots.len() + d.done.len() <= capacity + parked.len() + d.slots.values().filter(|s| s.replay).count());
            prop_assert!(d.slots.values().filter(|s| !s.replay).count() + d.done.len() <= capacity);
        }
        // Drain: ack everything that is left; every fed event ends done.
        for c in in_flight.keys() {
            prop_assert!(matches!(d.ack(*c), AckOutcome::Acked { .. }), "in flight {}", c);
        }
        for _ in 0..(fed.len() * (MAX_DELIVERIES as usize + 1) + 2) {
            for g in d.poll(usize::MAX, now, TIMEOUT) {
                d.ack(g.cursor);
            }
        }
        prop_assert_eq!(d.pending(), 0);
        prop_assert_eq!(d.in_flight(), 0);
        d.advance_fed(next_cursor);
        prop_assert_eq!(d.checkpoint(), next_cursor);
    }
}

#!/usr/bin/env bash
# Dead letters (parking) and replays (docs/guide.md): an event the handler cannot process is
# parked instead of blocking the group; once the cause is fixed, the parked events are
# re-queued and handled.
source "$(dirname "$0")/common.sh"
group="parking-$RUN"
cat="order$RUN"

"$STRATA" group create "$group" --source "category:$cat" --from start --max-deliveries 3 >/dev/null
post "/streams/$cat-7" '{"type":"OrderPlaced","data":{"poison":true}}' >/dev/null
post "/streams/$cat-8" '{"type":"OrderPlaced","data":{"total":1}}' >/dev/null

# The handler fails on the poison order: park it now (or retry: after max_deliveries it is
# parked anyway). The good order goes through.
out=$("$STRATA" consume "$group" --until-empty --wait-ms 200 --nack-action park \
  --exec "$HERE/ship-order.sh" 2>&1 || true)
expect "the good order is handled" "$out" "shipment requested for $cat-8"
parked=$("$STRATA" group parked "$group")
expect "the poison order is parked" "$parked" "\"stream\":\"$cat-7\""

# Fix the cause (here: the handler skips the check), then replay the parked events.
"$STRATA" group replay-parked "$group" >/dev/null
out=$("$STRATA" consume "$group" --until-empty --wait-ms 200 --exec bash -c 'cat >/dev/null; echo "handled $STRATA_STREAM"' 2>&1)
expect "the replayed event is delivered again" "$out" "handled $cat-7"
state=$(get "/groups/$group")
expect "nothing is parked any more" "$state" '"parked":0'
"$STRATA" group delete "$group" >/dev/null

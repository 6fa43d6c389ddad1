#!/usr/bin/env bash
# A saga / process manager over a consumer group, with idempotent handling (docs/guide.md).
# The group hands each order event to one consumer at a time (competing consumers), per stream
# in order; ship-order.sh reacts, and is safe to run twice for one event.
source "$(dirname "$0")/common.sh"
group="shipping-$RUN"
cat="order$RUN"

"$STRATA" group create "$group" --source "category:$cat" --from start --ordering per_stream >/dev/null
r=$(post "/streams/$cat-1" '{"type":"OrderPlaced","data":{"total":5}}' "Correlation-Id: checkout-$RUN")
expect "order placed" "$r" "201"
r=$(post "/streams/$cat-2" '{"type":"OrderPlaced","data":{"total":7}}' "Correlation-Id: checkout2-$RUN")
expect "another order placed" "$r" "201"

out=$("$STRATA" consume "$group" --until-empty --wait-ms 200 --exec "$HERE/ship-order.sh" 2>&1)
expect "the saga reacted to order 1" "$out" "shipment requested for $cat-1"
expect "the saga reacted to order 2" "$out" "shipment requested for $cat-2"

# At-least-once: handling the same event again (a redelivery) appends nothing new.
order_event=$(get "/streams/$cat-1/0")
id=$(grep -o '"id":"[^"]*"' <<<"$order_event" | head -1 | cut -d'"' -f4)
again=$(STRATA_STREAM="$cat-1" STRATA_EVENT_ID="$id" STRATA_DELIVERY=2 "$HERE/ship-order.sh" <<<"$order_event")
expect "a redelivery is harmless" "$again" "(delivery 2): 200"
r=$(get "/streams/shipment-$cat-1")
expect_count "one shipment, not two" "$r" '"type":"ShipmentRequested"' 1

# The flow of checkout-$RUN: the order and the shipment it caused, from the correlation index.
flow=$(get "/all?correlation_id=checkout-$RUN")
expect "the flow holds the order" "$flow" '"type":"OrderPlaced"'
expect "... and the shipment" "$flow" '"type":"ShipmentRequested"'
effects=$(get "/events/$id/effects")
expect "the shipment is the order's effect" "$effects" '"stream":"shipment-'"$cat"'-1"'
causes=$(get "/events/$id/causes")
expect "the order was caused by nothing indexed" "$causes" '{"events":[],"truncated":false,"unresolved":null}'
"$STRATA" group delete "$group" >/dev/null

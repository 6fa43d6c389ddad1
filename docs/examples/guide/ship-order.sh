#!/usr/bin/env bash
# The saga's handler (see saga.sh): run by `strata consume --exec` once per delivery, with the
# event JSON on stdin. It reacts to OrderPlaced by asking for a shipment, idempotently: the
# command's event id is the order event's id, so a redelivery (after a crash, a timeout, a
# lost ack) appends nothing twice (200 instead of 201), and the order's flow goes on through
# Correlation-Id / Causation-Id.
source "$(dirname "$0")/common.sh"
event=$(cat)
correlation=$(grep -o '"correlation_id":"[^"]*"' <<<"$event" | head -1 | cut -d'"' -f4 || true)
order=$STRATA_STREAM
if [[ "$event" == *'"poison":true'* ]]; then
  echo "cannot ship order $order: bad address" >&2
  exit 1
fi
r=$(post "/streams/shipment-$order" \
  '{"id":"'"$STRATA_EVENT_ID"'","type":"ShipmentRequested","data":{"order":"'"$order"'"}}' \
  "Correlation-Id: ${correlation:-$STRATA_EVENT_ID}" "Causation-Id: $STRATA_EVENT_ID")
case "$r" in
  201*|200*) echo "shipment requested for $order (delivery $STRATA_DELIVERY): ${r%% *}" ;;
  *) echo "append failed: $r" >&2; exit 1 ;;
esac

#!/usr/bin/env bash
# A CQRS read model with a projection, and a v1 -> v2 schema change handled by an upcaster
# (docs/guide.md). The projection's state is the read model: `GET .../state?partition=`.
source "$(dirname "$0")/common.sh"
name="order-totals-$RUN"
c="cust$RUN"

# History written by version 1 of the service ...
r=$(post "/streams/order-$RUN-1" '{"type":"OrderPlaced","data":{"customer":"'"$c"'","amount":12.5}}')
expect "a v1 order" "$r" "201"
# ... and by version 2, which says so in the metadata.
r=$(post "/streams/order-$RUN-2" '{"type":"OrderPlaced","data":{"customer":"'"$c"'","total_cents":300},"metadata":{"schema_version":2}}')
expect "a v2 order" "$r" "201"

r=$(curl -sS -X PUT "$STRATA_URL/projections/$name" -H 'Content-Type: application/javascript' \
  --data-binary @"$HERE/order-totals-v2.js" -w ' %{http_code}')
expect "projection created" "$r" " 201"

# The read model catches up (eventually consistent): poll its state.
for _ in $(seq 1 100); do
  state=$(curl -sS "$STRATA_URL/projections/$name/state?partition=$c" || true)
  [[ "$state" == *'"orders":2'* ]] && break
  sleep 0.1
done
expect "both versions folded as version 2" "$state" '"total_cents":1550'

# The stored v1 event is unchanged.
r=$(get "/streams/order-$RUN-1")
expect "history is never rewritten" "$r" '"data":{"customer":"'"$c"'","amount":12.5}'
curl -fsS -X DELETE "$STRATA_URL/projections/$name" >/dev/null

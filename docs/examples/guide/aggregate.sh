#!/usr/bin/env bash
# An event-sourced aggregate with optimistic concurrency and retries (docs/guide.md).
#
# A shopping cart is one stream, `cart-<id>`. A command loads the cart by reading its stream,
# decides, and appends the new events with `Expected-Revision: <the revision it read>`. If
# someone else appended in between, the append is refused with 409 and nothing is written: the
# command reloads and decides again.
source "$(dirname "$0")/common.sh"
cart="cart-$RUN"

# Create the cart: `no_stream` makes a second "create" fail instead of mixing two carts.
r=$(post "/streams/$cart" '{"type":"CartOpened","data":{"owner":"ann"}}' 'Expected-Revision: no_stream')
expect "cart opened" "$r" '201 {"stream":"'"$cart"'","first_revision":0'
r=$(post "/streams/$cart" '{"type":"CartOpened","data":{"owner":"bob"}}' 'Expected-Revision: no_stream')
expect "a second open is refused" "$r" '"error":"wrong_expected_revision"'

# add_item ITEM: load (the last revision), decide, append expecting that revision; retry on 409.
add_item() {
  for attempt in 1 2 3 4 5; do
    last=$(get "/streams/$cart?direction=backward&limit=1" | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2)
    r=$(post "/streams/$cart" '{"type":"ItemAdded","data":{"sku":"'"$1"'"}}' "Expected-Revision: $last")
    case "$r" in
      201*) echo "$r"; return 0 ;;
      409*) echo "conflict at revision $last, reloading (attempt $attempt)" >&2 ;;
      *) echo "unexpected: $r" >&2; return 1 ;;
    esac
  done
  return 1
}

# Two writers read revision 0; the second append is refused, nothing of it is written.
r=$(post "/streams/$cart" '{"type":"ItemAdded","data":{"sku":"a"}}' 'Expected-Revision: 0')
expect "first writer appends at revision 1" "$r" '"first_revision":1'
r=$(post "/streams/$cart" '{"type":"ItemAdded","data":{"sku":"b"}}' 'Expected-Revision: 0')
expect "the stale writer is refused" "$r" '"error":"wrong_expected_revision"'
expect "... and told the actual revision" "$r" '"actual":1'
# The retry loop reloads and succeeds.
r=$(add_item b)
expect "the retry appends at revision 2" "$r" '"first_revision":2'
page=$(get "/streams/$cart")
expect "the cart holds exactly three events" "$page" '"revision":2'
expect_count "two items, no duplicate" "$page" '"type":"ItemAdded"' 2

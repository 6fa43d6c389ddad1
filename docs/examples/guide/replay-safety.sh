#!/usr/bin/env bash
# Delivery semantics and replayed-request safety (docs/guide.md): an append that carries its
# event ids (and an expected revision) can be sent again, by a client retry or by anyone who
# replays the captured request, without creating a duplicate.
source "$(dirname "$0")/common.sh"
acct="account-$RUN"
id=6f1c7a5e-0c1b-4d5e-9d7a-$(printf '%012x' $((RUN % 281474976710655)))
body='{"id":"'"$id"'","type":"Deposited","data":{"amount":100}}'

r=$(post "/streams/$acct" "$body" 'Expected-Revision: no_stream')
expect "the first request appends" "$r" '201 {"stream":"'"$acct"'","first_revision":0'
# The same request again (a timeout retry, or a replay of a captured request): the original
# answer, 200, and nothing written.
r=$(post "/streams/$acct" "$body" 'Expected-Revision: no_stream')
expect "the same request again writes nothing" "$r" '200 {"stream":"'"$acct"'","first_revision":0'
# Still harmless once the stream has moved on.
post "/streams/$acct" '{"type":"Withdrawn","data":{"amount":30}}' 'Expected-Revision: 0' >/dev/null
r=$(post "/streams/$acct" "$body" 'Expected-Revision: no_stream')
expect "... even after later appends" "$r" '200 {"stream":"'"$acct"'","first_revision":0'
# Without ids, every send is a new event: the retry would duplicate. The expected revision
# still stops a blind replay: the stream is no longer at revision 0.
r=$(post "/streams/$acct" '{"type":"Withdrawn","data":{"amount":30}}' 'Expected-Revision: 0')
expect "a replay without ids is stopped by the expected revision" "$r" '"error":"wrong_expected_revision"'
page=$(get "/streams/$acct")
expect_count "one deposit" "$page" '"type":"Deposited"' 1

# Shared by the guide's examples (docs/guide.md). Each example is a bash script run against a
# running server: STRATA_URL (default http://127.0.0.1:2113) and STRATA, the `strata` binary
# (default: `strata` on PATH). Needs curl. Every example checks what it shows and exits
# non-zero when something is not as the guide says (tests/guide.rs runs them all).
set -euo pipefail
STRATA_URL=${STRATA_URL:-http://127.0.0.1:2113}
STRATA=${STRATA:-strata}
export STRATA_SERVER=$STRATA_URL
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# A suffix that keeps one run's streams, groups and projections apart from another's.
RUN=${RUN:-$(date +%s%N)}

# post PATH BODY [HEADER...]: POSTs JSON, prints "<status> <body>".
post() {
  local path=$1 body=$2
  shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  local out
  out=$(curl -sS -X POST "$STRATA_URL$path" -H 'Content-Type: application/json' "${args[@]}" \
    --data-binary "$body" -w $'\n%{http_code}')
  echo "${out##*$'\n'} ${out%$'\n'*}"
}

# get PATH: GETs, prints the body (fails on a non-2xx status).
get() {
  curl -fsS "$STRATA_URL$1"
}

# expect WHAT TEXT NEEDLE: fails unless TEXT contains NEEDLE.
expect() {
  if [[ "$2" != *"$3"* ]]; then
    echo "FAILED: $1: expected $3 in: $2" >&2
    exit 1
  fi
  echo "ok: $1"
}

# expect_count WHAT TEXT NEEDLE N: fails unless NEEDLE occurs exactly N times in TEXT.
expect_count() {
  local n
  n=$(grep -o -F -- "$3" <<<"$2" | wc -l)
  if [[ $n -ne $4 ]]; then
    echo "FAILED: $1: expected $4 times $3, found $n in: $2" >&2
    exit 1
  fi
  echo "ok: $1"
}

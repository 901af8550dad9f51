#!/usr/bin/env bash
# Instructions and level-1 data-cache misses per message, counted by valgrind's
# callgrind: noise-free figures for ours, ours with tokio-backed mailboxes
# (ours-tokio), ours sending through resolved handles (ours-handle), the
# hand-rolled DashMap of tokio senders, the single-task anchor and the raw flume and
# tokio hops, on each workload. ours-handle has no figure for channel messages (no
# handle applies there: the bench skips it).
#
# Each figure is the difference between two runs of `sharded-router bench --only
# CASE --impls IMPL --runs 1 --messages N` (N small and N large), divided by the
# difference in N, so setup (runtime, router, actors, the warm-up probe) cancels
# out. Everything on every thread is counted: router, actors, tokio's scheduler,
# malloc. D1 misses are read plus write misses of callgrind's cache simulation
# (--cache-sim=yes).
#
# Usage: benches/instructions.sh [CASE-FILTER]   (e.g. "scale"; default: all)
# Needs valgrind. About 10 minutes on 2 cores (two valgrind runs at a time), most of it
# setting up the 100k-actor workload; one workload (e.g. "one-way") takes about one.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
cargo build --release -p sharded-router-cli >&2
BIN=target/release/sharded-router
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# name | bench --only text | unit | N small | N large [| implementations not measured there]
WORKLOADS=(
  "one-way acked, 100 actors|1 one-way acked, 100 actors, 2 producers|msg|10000|30000"
  "request/response, 8 requesters|2 request/response 8 requesters|round trip|2000|6000"
  "channel messages, 100 channels|3 channels|msg|10000|30000|ours-handle"
  "scale, 100k actors|4 scale 100000 actors|msg|10000|30000"
)
# More workloads (not in the default set, to keep it to a few minutes): pass their
# names as the filter after adding them here, e.g.
#   "scale, 10k actors|4 scale 10000 actors|msg|10000|30000"
#   "Theater shape, 100 actors, mailbox 100|8 theater 100 actors|msg|10000|30000"
IMPLS=(ours ours-tokio ours-handle hand-rolled anchor limit limit-tokio)
FILTER=${1:-}

# Prints "Ir D1misses" from a callgrind output file's summary line.
totals() {
  awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
       /^summary:/ { print $(col["Ir"] + 1), $(col["D1mr"] + 1) + $(col["D1mw"] + 1) }' "$1"
}

count() { # only impl n file
  valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$4" \
    "$BIN" bench --only "$1" --impls "$2" --runs 1 --messages "$3" >/dev/null 2>"$4.log" \
    || { echo "valgrind run failed: $1 / $2 / $3 (see below)" >&2; tail -5 "$4.log" >&2; return 1; }
}

printf '| workload | implementation | instructions per unit | D1 misses per unit |\n|---|---|---:|---:|\n'
SUMMARY=()
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name only unit small large skip <<<"$w"
  [[ -n "$FILTER" && "$name $only" != *"$FILTER"* ]] && continue
  declare -A INSTR=()
  for imp in "${IMPLS[@]}"; do
    if [[ " ${skip:-} " == *" $imp "* ]]; then
      printf '| %s | %s | n/a | n/a |\n' "$name" "$imp"
      continue
    fi
    a="$OUT/a.$imp" b="$OUT/b.$imp"
    count "$only" "$imp" "$small" "$a" & p1=$!
    count "$only" "$imp" "$large" "$b" & p2=$!
    wait $p1 && wait $p2
    read -r ir1 d1 < <(totals "$a")
    read -r ir2 d2 < <(totals "$b")
    per=$(( (ir2 - ir1) / (large - small) ))
    miss=$(awk -v a="$d1" -v b="$d2" -v n=$((large - small)) 'BEGIN { printf "%.1f", (b - a) / n }')
    INSTR[$imp]=$per
    printf '| %s | %s | %d / %s | %s |\n' "$name" "$imp" "$per" "$unit" "$miss"
  done
  # The raw hop with fewer instructions is the limit.
  lim=${INSTR[limit]}; (( ${INSTR[limit-tokio]} < lim )) && lim=${INSTR[limit-tokio]}
  SUMMARY+=("$(awk -v o="${INSTR[ours]}" -v l="$lim" -v a="${INSTR[anchor]}" -v h="${INSTR[hand-rolled]}" \
    -v t="${INSTR[ours-tokio]:-}" -v d="${INSTR[ours-handle]:-}" -v n="$name" \
    'function r(x) { return x == "" ? "n/a" : sprintf("%.2f", x / l) }
     BEGIN { printf "%s: ours/limit instr = %.2f; anchor/ours instr = %.2f; ours/hand-rolled instr = %.2f; ours-tokio/limit instr = %s; ours-handle/limit instr = %s", n, o / l, a / o, o / h, r(t), r(d) }')")
  unset INSTR
done
echo
for s in "${SUMMARY[@]}"; do echo "$s"; done

#!/usr/bin/env bash
# What a busy core costs a request's latency, per transport: CPU-bound handlers (/spin?ms=SPIN_MS, SPINNERS connections
# firing them back to back) keep the server's one core busy while PROBES connections send trivial GET /plaintext
# requests; wrk reports the trivial requests' latency. This is the cost RingThreadPolicy=Batch trades for fewer context
# switches: a woken ring thread no longer preempts a busy application thread, so a receive may wait for the rest of
# its time slice.
#
#   loadtests/cpu-contention.sh      # Sockets, io_uring default (ring threads SCHED_BATCH), io_uring schedother (SCHED_OTHER)
#
# Server pinned to SERVER_CPU, both load generators to CLIENT_CPU; a fresh server per row and round, warmed WARMUP s;
# rows alternate between rounds; prints one Markdown table of medians (p50/p99 of the trivial requests, their req/s,
# and the spinning requests completed per second).
# Knobs: SPINNERS=2 SPIN_MS=20 PROBES=8 DURATION=10 WARMUP=5 ROUNDS=3 ROWS="sockets:default iouring:default iouring:schedother"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SPINNERS="${SPINNERS:-2}"
SPIN_MS="${SPIN_MS:-20}"
PROBES="${PROBES:-8}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-5}"
ROUNDS="${ROUNDS:-3}"
ROWS="${ROWS:-sockets:default iouring:default iouring:schedother}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
RAW="$HERE/results/raw/cpu-contention-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RAW"

require_commands dotnet taskset curl wrk openssl ss
build_server
make_certificate "$RAW"
trap stop_server EXIT

log "before the run: $(uptime) (measure on a quiet machine: load under 0.5, no builds or suites running)"
order="$ROWS"
for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS: $order"
  for row in $order; do
    transport="${row%%:*}" variant="${row#*:}" tag="r$round-$transport-$variant"
    start_server "$transport" "$variant" "$RAW/$tag.server.log" || die "the server refused the options of $variant"
    http="http://127.0.0.1:$SERVER_PORT"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$PROBES" -d"${WARMUP}s" "$http/plaintext" >/dev/null 2>&1 || true
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$SPINNERS" -d"$((DURATION + 1))s" --timeout 8s "$http/spin?ms=$SPIN_MS" >"$RAW/$tag.spin.txt" 2>&1 &
    spin_pid=$!
    sleep 0.5
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$PROBES" -d"${DURATION}s" --latency --timeout 8s "$http/plaintext" >"$RAW/$tag.probe.txt" 2>&1 || true
    wait "$spin_pid" || true
    stop_server
    probe="$(python3 "$HERE/tools.py" parse-wrk "$RAW/$tag.probe.txt")" || die "cannot parse $RAW/$tag.probe.txt"
    spin="$(python3 "$HERE/tools.py" parse-wrk "$RAW/$tag.spin.txt")" || die "cannot parse $RAW/$tag.spin.txt"
    echo "{\"row\": \"$row\", \"probe\": $probe, \"spin\": $spin}" >>"$RAW/rows.jsonl"
    log "  $row: trivial requests $probe"
  done
  order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
done

python3 - "$RAW/rows.jsonl" "$SPINNERS" "$SPIN_MS" "$PROBES" "$DURATION" "$ROUNDS" <<'PY'
import json, statistics, sys
path, spinners, spin_ms, probes, duration, rounds = sys.argv[1:]
rows = {}
for line in open(path):
    r = json.loads(line)
    rows.setdefault(r["row"], []).append(r)
titles = {"sockets:default": "Sockets", "iouring:default": "io_uring default (ring threads SCHED_BATCH)",
          "iouring:schedother": "io_uring, ring threads SCHED_OTHER"}
print(f"CPU contention: {spinners} connections keep /spin?ms={spin_ms} handlers busy on the server's core while {probes} "
      f"connections send GET /plaintext; {duration} s windows, medians of {rounds} alternated rounds.\n")
print("| row | trivial p50 ms | trivial p99 ms | trivial req/s | spin req/s | socket errors |")
print("|---|--:|--:|--:|--:|--:|")
errors = 0
for row, runs in rows.items():
    med = lambda f: statistics.median(f(r) for r in runs)
    errs = sum(r["probe"]["socket_errors"] + r["spin"]["socket_errors"] for r in runs)
    errors += errs
    print(f"| {titles.get(row, row)} | {med(lambda r: r['probe']['p50_ms']):.2f} | {med(lambda r: r['probe']['p99_ms']):.2f} "
          f"| {med(lambda r: r['probe']['rps']):,.0f} | {med(lambda r: r['spin']['rps']):,.1f} | {errs} |")
sys.exit(1 if errors else 0)
PY
log "raw: $RAW"

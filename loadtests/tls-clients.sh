#!/usr/bin/env bash
# Which TLS HTTP/1.1 load generator measures the server rather than itself: h2load --h1 and wrk, alternated against the
# same warmed server, 64 connections, both on CLIENT_CPU. A load generator at a whole core of CPU while the server is
# below one measures the client.
#
#   loadtests/tls-clients.sh         # Sockets, io_uring default and io_uring Inline; prints one line per window
#
# Per server: a fresh start on SERVER_CPU, PROTOCOL_WARMUP s (20) of TLS HTTP/1.1 and WARMUP s (25) of plaintext
# (warm_server in lib.sh), then WINDOWS windows (6) of WINDOW s (8) in the order h2load, wrk, wrk, h2load, h2load,
# wrk. Server CPU is over the whole window; the client's over its middle WINDOW-2 s (without its start and end).
# Knobs: ROWS="sockets:default iouring:default iouring:inline" WINDOWS WINDOW PORT SERVER_CPU CLIENT_CPU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
ROWS="${ROWS:-sockets:default iouring:default iouring:inline}"
WINDOWS="${WINDOWS:-6}"
SECONDS_PER_WINDOW="${WINDOW:-8}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
PROTOCOL_WARMUP="${PROTOCOL_WARMUP:-20}"
WARMUP="${WARMUP:-25}"
RAW="$HERE/results/raw/tls-clients-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RAW"
require_commands dotnet taskset curl wrk h2load openssl ss
[[ -n "${SERVER_DLL:-}" ]] || build_server
make_certificate "$RAW"
trap stop_server EXIT
ticks_per_second="$(getconf CLK_TCK)"
order=(h2load wrk wrk h2load h2load wrk)

for row in $ROWS; do
  transport="${row%%:*}"; variant="${row#*:}"
  start_server "$transport" "$variant" "$RAW/$transport-$variant.server.log"
  warm_server "$RAW/$transport-$variant" tls-h1-c64
  for (( i = 0; i < WINDOWS; i++ )); do
    tool="${order[i % ${#order[@]}]}" out="$RAW/$transport-$variant-$i.txt"
    url="https://127.0.0.1:$TLS_PORT/plaintext"
    server0="$(cpu_ticks "$SERVER_PID")"
    if [[ "$tool" == wrk ]]; then
      taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${SECONDS_PER_WINDOW}s" "$url" >"$out" 2>&1 &
    else
      taskset -c "$CLIENT_CPU" h2load --h1 -t1 -c64 -m1 -D"$SECONDS_PER_WINDOW" "$url" >"$out" 2>&1 &
    fi
    client=$!
    sleep 1; client0="$(cpu_ticks "$client")"
    sleep "$((SECONDS_PER_WINDOW - 2))"; client1="$(cpu_ticks "$client")"
    wait "$client" || true
    server1="$(cpu_ticks "$SERVER_PID")"
    rps="$(grep -m1 -oE '(Requests/sec: +[0-9.]+|finished in [0-9.]+s, [0-9.]+ req/s)' "$out" | grep -oE '[0-9.]+( req/s)?$' | grep -oE '^[0-9.]+')"
    awk -v tr="$transport" -v v="$variant" -v tool="$tool" -v rps="$rps" -v s="$((server1 - server0))" \
        -v c="$((client1 - client0))" -v hz="$ticks_per_second" -v secs="$SECONDS_PER_WINDOW" \
      'BEGIN { printf "%s %s, %s: %.0f req/s; server %.2f of its core; client %.2f of its core\n", tr, v, tool, rps, s / hz / secs, c / hz / (secs - 2) }'
  done
  stop_server
done

#!/usr/bin/env bash
# Which TLS HTTP/1.1 load generator measures the server rather than itself: the scenarios tls-h1-c64 (h2load --h1) and
# tls-h1-wrk-c64 (wrk), alternated against the same warmed server, both on CLIENT_CPU. A load generator at a whole core
# of CPU while the server is below one measures the client.
#
#   loadtests/tls-clients.sh         # Sockets, io_uring default and io_uring Inline; prints one line per window
#
# Per server: a fresh start on SERVER_CPU, PROTOCOL_WARMUP s (20) of TLS HTTP/1.1 and WARMUP s (25) of plaintext
# (warm_server in lib.sh), then WINDOWS windows (6) of WINDOW s (8), in the order h2load, wrk, wrk, h2load, h2load,
# wrk; the loads are run_load's (lib.sh), so they are exactly run.sh's. CPU of server and client is over the window.
# Knobs: ROWS="sockets:default iouring:default iouring:inline" WINDOWS WINDOW PORT SERVER_CPU CLIENT_CPU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
ROWS="${ROWS:-sockets:default iouring:default iouring:inline}"
WINDOWS="${WINDOWS:-6}"
WINDOW="${WINDOW:-8}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
PROTOCOL_WARMUP="${PROTOCOL_WARMUP:-20}"
WARMUP="${WARMUP:-25}"
RAW="$HERE/results/raw/tls-clients-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RAW"
require_commands dotnet python3 taskset curl wrk h2load openssl ss
[[ -n "${SERVER_DLL:-}" ]] || build_server
make_certificate "$RAW"
trap stop_server EXIT
ticks_per_second="$(getconf CLK_TCK)"
order=(tls-h1-c64 tls-h1-wrk-c64 tls-h1-wrk-c64 tls-h1-c64 tls-h1-c64 tls-h1-wrk-c64)

for row in $ROWS; do
  transport="${row%%:*}"; variant="${row#*:}"
  start_server "$transport" "$variant" "$RAW/$transport-$variant.server.log"
  warm_server "$RAW/$transport-$variant" tls-h1-c64
  for (( i = 0; i < WINDOWS; i++ )); do
    scenario="${order[i % ${#order[@]}]}" out="$RAW/$transport-$variant-$i.txt"
    server0="$(cpu_ticks "$SERVER_PID")"
    tool="$(run_load "$scenario" "$WINDOW" "$out")"
    server1="$(cpu_ticks "$SERVER_PID")"
    python3 - "$HERE" "$tool" "$out" "$transport $variant" "$(( server1 - server0 ))" "$ticks_per_second" "$WINDOW" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import tools
tool, out, row, ticks, hz, secs = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
parsed = getattr(tools, f"parse_{tool}")(open(out).read())
client = float(open(out + ".cpu").read())
print(f"{row}, {tool}: {parsed['rps']:.0f} req/s; server {ticks / hz / secs:.2f} of its core; client {client / secs:.2f} of its core")
PY
  done
  stop_server
done

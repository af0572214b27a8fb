#!/usr/bin/env bash
# CPU profile of the server under one scenario, with .NET frames named:
#
#   loadtests/profile.sh tls-h2-16x32                    # io_uring default
#   loadtests/profile.sh tls-h2-16x32 sockets            # the same load over Sockets
#   loadtests/profile.sh plaintext-c64 iouring inline    # a variant (default inline ringsends sqpoll ...)
#
# Starts a fresh server with DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 (JIT'd code gets names in
# /tmp/perf-PID.map), runs the scenario's load for WARMUP + SECONDS + 2 s, records `perf record -F FREQ -g -p PID --
# sleep SECONDS` after WARMUP s (long enough for tiered compilation to settle: TLS HTTP/2 needs about 20 s), then prints
# the shares by shared object and the top symbols (`perf report --no-children --sort sym --stdio -g none`).
# Knobs: WARMUP=20 RECORD=8 (seconds recorded) FREQ=499 TOP=60 PORT SERVER_CPU CLIENT_CPU RAW_DIR (default results/raw/profile-<time>).
# Scenarios: those of run.sh that put load on a server (plaintext-c64 ... tls-h1-c64; not idle or starvation).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SCENARIO="${1:?usage: profile.sh SCENARIO [iouring|sockets] [VARIANT]}"
TRANSPORT="${2:-iouring}"
VARIANT="${3:-default}"
WARMUP="${WARMUP:-20}"
SECONDS_RECORDED="${RECORD:-8}"
FREQ="${FREQ:-499}"
TOP="${TOP:-60}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
case "$(scenario_kind "$SCENARIO")" in idle | starvation) die "profile.sh: $SCENARIO is not a load scenario" ;; esac
[[ "$TRANSPORT" == iouring || "$TRANSPORT" == sockets ]] || die "transport must be iouring or sockets"
RAW="${RAW_DIR:-$HERE/results/raw/profile-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RAW"

require_commands dotnet taskset curl wrk h2load perf openssl ss
build_server
make_certificate "$RAW"
trap stop_server EXIT

tag="$SCENARIO-$VARIANT-$TRANSPORT"
start_server "$TRANSPORT" "$VARIANT" "$RAW/$tag.server.log" DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 \
  || die "the server refused the options of $VARIANT"
log "$TRANSPORT_LINE"
log "load: $SCENARIO for $((WARMUP + SECONDS_RECORDED + 2)) s; recording ${SECONDS_RECORDED} s at ${FREQ} Hz after ${WARMUP} s"
run_load "$SCENARIO" "$((WARMUP + SECONDS_RECORDED + 2))" "$RAW/$tag.load.txt" >/dev/null &
load_pid=$!
sleep "$WARMUP"
perf record -F "$FREQ" -g -p "$SERVER_PID" -o "$RAW/$tag.perf.data" -- sleep "$SECONDS_RECORDED" >/dev/null 2>"$RAW/$tag.record.log" \
  || { cat "$RAW/$tag.record.log" >&2; die "perf record failed"; }
wait "$load_pid"
# perf report names JIT'd frames from the server's /tmp/perf-PID.map; the runtime leaves that file behind, so it is
# moved next to the recording once the reports are written.
server_pid="$SERVER_PID"
stop_server
perf report -i "$RAW/$tag.perf.data" --no-children --sort dso --stdio -g none >"$RAW/$tag.dso.txt" 2>/dev/null
perf report -i "$RAW/$tag.perf.data" --no-children --sort sym --stdio -g none >"$RAW/$tag.sym.txt" 2>/dev/null
[[ -f "/tmp/perf-$server_pid.map" ]] && mv "/tmp/perf-$server_pid.map" "$RAW/$tag.perf-$server_pid.map"

echo "# $tag: $(grep -m1 -E 'finished in|Requests/sec' "$RAW/$tag.load.txt" || echo 'no load summary')"
echo "# $TRANSPORT_LINE"
echo "## shares by shared object"
grep -v -e '^#' -e '^$' "$RAW/$tag.dso.txt" | sed -n "1,12p"
echo "## top symbols"
grep -v -e '^$' "$RAW/$tag.sym.txt" | sed -n "1,${TOP}p"
log "raw: $RAW"

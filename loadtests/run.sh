#!/usr/bin/env bash
# Kestrel's Sockets transport against the io_uring transport on the same machine, in one command:
#
#   loadtests/run.sh                 # full run: 3 rounds; about 45 minutes; 55 with VARIANTS="default inline ringsends schedother" (see loadtests/README.md)
#   QUICK=1 loadtests/run.sh         # smoke run, under 3 minutes: 1 round, Sockets vs io_uring default, short windows
#   PUBLISH=1 loadtests/run.sh       # also replace the committed results/latest.md, latest.svg, latest-starvation.svg
#
# Method: the servers are pinned to SERVER_CPU and the load generator to CLIENT_CPU; every round starts a fresh server
# per transport and variant, all side by side, warms each with PROTOCOL_WARMUP seconds of each pipelined, HTTP/2 or TLS
# protocol selected and WARMUP seconds of plaintext, in loads of at most WARMUP_CHUNK seconds (warm_server in lib.sh),
# then measures each scenario on every server in turn for SCENARIO_WARMUP + DURATION seconds, followed by the machine
# speed probe (memprobe.c); the order of the servers alternates between scenarios and rounds; the report gives medians
# over the rounds.
#
# Knobs (environment; defaults of the full run, QUICK's in brackets):
#   ROUNDS=3 [1]  WARMUP=25 [3]  PROTOCOL_WARMUP=10 [2]  WARMUP_CHUNK=5  SCENARIO_WARMUP=2 [1]  DURATION=10 [3]
#   SCENARIOS="..."      substrings of the scenario names below (default: every scenario with a goal, fixedrate-64x400,
#                        idle5000, starvation; QUICK: the same without fixedrate-64x400 and idle5000)
#   VARIANTS="default inline ringsends" [default]   io_uring rows, each against Sockets with default options:
#                        default = default options; inline = ApplicationScheduling=Inline; ringsends = every send through
#                        the ring (the io_uring option RING_SENDS_OPTION, default Kestrel__IoUring__SendPath=Ring;
#                        the row is skipped with a note when the server does not know the option)
#   ADVANCED=""          extra io_uring variants, only when asked: schedother (ring threads under SCHED_OTHER, the policy
#                        before RingThreadPolicy=Batch) sqpoll incremental zerocopy registered, measured on
#                        ADVANCED_SCENARIOS (default: plaintext-c64 pipelined-c256 download-1mib-c16)
#   STARVE_ROUNDS=2 [1]  STARVE_SECONDS=15 [5]  STARVE_TIMEOUT=30 [20]   the starvation scenario (see starvation.py)
#   SYSCALLS=1 [0]       also count syscalls per request (loadtests/syscalls.sh) and put the table in the report
#   TOOL=auto|wrk|bombardier   HTTP/1.1 load generator (auto: bombardier if the HTTP one is on PATH, else wrk); HTTP/2
#                        and TLS scenarios use h2load (tls-h1-wrk-c64: wrk), pipelining uses wrk with pipeline.lua
#   IDLE=5000  IDLE_ACTIVE=32  SERVER_CPU=0  CLIENT_CPU=1  PORT=5080 (first port tried; taken ones are skipped)
#   ALLOW_FALLBACK=0 (1: go on when io_uring falls back to Sockets)  PUBLISH=0
#
# Scenarios: plaintext-c64 plaintext-c256 pipelined-c256 pipelined-c1024 json-c64 json-c256 download-1mib-c16
#            fixedrate-64x400 (plaintext at a fixed 25,600 req/s: CPU per request at equal load)
#            h2c-16x32 tls-h2-16x32 tls-h1-c64 tls-h1-wrk-c64 (TLS HTTP/1.1 from wrk: h2load's TLS client is the limit
#            beside io_uring) idle5000 starvation
#            app-shaped (samples/Benchmarks/AppEndpoints.cs): api-c64 api-c256 (JSON API, pages of 0.3-16 KB, a
#            connection renewed every 25 requests) api-keepalive-c256 api-heavy-c256 (handlers of hundreds of us)
#            h2c-256x100 tls-h2-256x100 churn-c64 (10 requests per connection) upload-c16 (500 KiB-20 MiB) static-c64
#            static-h2c-16x32 (1 KiB-1 MiB files) coldstart-api-c64 (a fresh server per row, measured from its start)
#
# Writes loadtests/results/<date>-<time>-<commit>[-quick].md, .svg and -starvation.svg (its own files: a run never
# overwrites another's), raw outputs in loadtests/results/raw/<timestamp>/ (not committed), and with PUBLISH=1 the
# committed latest.* too. Exits non-zero when a check fails or any socket error or non-2xx response was seen.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

QUICK="${QUICK:-0}"
GOAL_SCENARIOS="plaintext-c64 pipelined-c256 json-c64 download-1mib-c16 h2c-16x32 tls-h2-16x32 tls-h1-c64"
# Shaped like ordinary apps (samples/Benchmarks/AppEndpoints.cs): a JSON API through minimal APIs and System.Text.Json
# with connections renewed every 25 requests, HTTP/2 at 256 x 100 streams, churn, uploads, static files, a cold start.
APP_SCENARIOS="api-c64 api-c256 api-keepalive-c256 api-heavy-c256 h2c-256x100 tls-h2-256x100 churn-c64 upload-c16 static-c64 static-h2c-16x32 coldstart-api-c64"
if [[ "$QUICK" == 1 ]]; then
  ROUNDS="${ROUNDS:-1}"; WARMUP="${WARMUP:-3}"; PROTOCOL_WARMUP="${PROTOCOL_WARMUP:-2}"; SCENARIO_WARMUP="${SCENARIO_WARMUP:-1}"; DURATION="${DURATION:-3}"
  VARIANTS="${VARIANTS-default}"; SCENARIOS="${SCENARIOS:-$GOAL_SCENARIOS api-c256 upload-c16 static-c64 starvation}"
  STARVE_ROUNDS="${STARVE_ROUNDS:-1}"; STARVE_SECONDS="${STARVE_SECONDS:-5}"; STARVE_TIMEOUT="${STARVE_TIMEOUT:-20}"
  SYSCALLS="${SYSCALLS:-0}"
fi
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-25}"
SCENARIO_WARMUP="${SCENARIO_WARMUP:-2}"
DURATION="${DURATION:-10}"
VARIANTS="${VARIANTS-default inline ringsends}"
SCENARIOS="${SCENARIOS:-$GOAL_SCENARIOS $APP_SCENARIOS tls-h1-wrk-c64 fixedrate-64x400 idle5000 starvation}"
ADVANCED="${ADVANCED:-}"
ADVANCED_SCENARIOS="${ADVANCED_SCENARIOS:-plaintext-c64 pipelined-c256 download-1mib-c16}"
STARVE_ROUNDS="${STARVE_ROUNDS:-2}"
STARVE_SECONDS="${STARVE_SECONDS:-15}"
STARVE_TIMEOUT="${STARVE_TIMEOUT:-30}"
SYSCALLS="${SYSCALLS:-1}"
TOOL="${TOOL:-auto}"
IDLE="${IDLE:-5000}"
IDLE_ACTIVE="${IDLE_ACTIVE:-32}"
PUBLISH="${PUBLISH:-0}"
ALL_SCENARIOS="plaintext-c64 plaintext-c256 pipelined-c256 pipelined-c1024 json-c64 json-c256 download-1mib-c16 fixedrate-64x400 h2c-16x32 tls-h2-16x32 tls-h1-c64 tls-h1-wrk-c64 $APP_SCENARIOS idle5000 starvation"

# shellcheck source=lib.sh
source "$HERE/lib.sh"
RUN_STARTED="$(date +%s)"

# ------------------------------------------------------------------------------------------------ prerequisites
require_commands dotnet python3 taskset curl wrk h2load openssl ss
for v in $VARIANTS $ADVANCED; do variant_options "$v" >/dev/null; done
SELECTED=""
for s in $ALL_SCENARIOS; do
  for f in $SCENARIOS; do [[ "$s" == *"$f"* ]] && { SELECTED+="$s "; break; }; done
done
[[ -n "$SELECTED" ]] || die "SCENARIOS='$SCENARIOS' matches none of: $ALL_SCENARIOS"
LOAD_SCENARIOS=""; IDLE_SCENARIOS=""; COLD_SCENARIOS=""; STARVATION=0
for s in $SELECTED; do
  case "$(scenario_kind "$s")" in
    idle) IDLE_SCENARIOS+="$s " ;; coldstart) COLD_SCENARIOS+="$s " ;; starvation) STARVATION=1 ;; *) LOAD_SCENARIOS+="$s " ;;
  esac
done
NPROC="$(nproc)"
(( NPROC > SERVER_CPU && NPROC > CLIENT_CPU )) || die "need CPUs $SERVER_CPU and $CLIENT_CPU; this machine has $NPROC"

is_http_bombardier() {
  command -v bombardier >/dev/null || return 1
  local help; help="$(timeout 5 bombardier --help 2>&1 || true)"
  # Debian's "bombardier" package is a game; the HTTP tool (codesenberg/bombardier) documents -c/--connections and HTTP.
  grep -q -- '--connections' <<<"$help" && grep -qi 'http' <<<"$help" && grep -q -- '-n' <<<"$help"
}
case "$TOOL" in
  auto) if is_http_bombardier; then BASE_TOOL=bombardier; else BASE_TOOL=wrk; fi ;;
  bombardier) is_http_bombardier || die "TOOL=bombardier but no HTTP bombardier on PATH"; BASE_TOOL=bombardier ;;
  wrk) BASE_TOOL=wrk ;;
  *) die "TOOL must be auto, wrk or bombardier" ;;
esac
WRK_VERSION="$( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')"
H2LOAD_VERSION="$(h2load --version 2>&1 | head -1 | awk '{print $2}')"
if [[ "$BASE_TOOL" == bombardier ]]; then
  TOOL_SUMMARY="bombardier ($(command -v bombardier)) for HTTP/1.1, wrk $WRK_VERSION with loadtests/pipeline.lua for pipelining"
else
  if command -v bombardier >/dev/null; then why="the bombardier on PATH is not the HTTP benchmarking tool"; else why="bombardier is not on PATH"; fi
  TOOL_SUMMARY="wrk $WRK_VERSION for HTTP/1.1 ($why), pipelining with loadtests/pipeline.lua"
fi
TOOL_SUMMARY+="; h2load $H2LOAD_VERSION for h2c, TLS HTTP/2 and TLS HTTP/1.1 (tls-h1-c64); wrk for TLS HTTP/1.1 in tls-h1-wrk-c64"
log "load tools: $TOOL_SUMMARY"

if [[ -n "$IDLE_SCENARIOS" ]]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  (( $(ulimit -n) >= IDLE + 2048 )) || die "ulimit -n is $(ulimit -n); need at least $((IDLE + 2048)) for idle$IDLE (raise the hard limit)"
fi

STAMP="$(date +%Y%m%d-%H%M%S)"
RAW="$HERE/results/raw/$STAMP"
mkdir -p "$RAW"

# ------------------------------------------------------------------------------------------- is the machine quiet?
# Over 3 s before anything starts: CPU time that other processes use. During the run every measurement records the
# same (all CPU time of the machine less the server's and the load generator's); the report flags a busy machine.
busy0="$(machine_busy_ticks)"; sleep 3; busy1="$(machine_busy_ticks)"
OTHER_CPU_BEFORE="$(awk -v a="$busy0" -v b="$busy1" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", (b - a) / hz / 3}')"
UPTIME_BEFORE="$(uptime)"
log "before the run: other processes use $OTHER_CPU_BEFORE CPUs; $UPTIME_BEFORE"

build_server
make_certificate "$RAW"
build_memprobe "$RAW"
PROBE_BEFORE="$(machine_probe_ms)"
log "machine speed before the run: memory probe $PROBE_BEFORE ms (loadtests/memprobe.c on CPU $SERVER_CPU)"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=false; [[ -n "$(git -C "$REPO" status --porcelain -- src samples 2>/dev/null)" ]] && DIRTY=true

HOLDER_PID=""
cleanup() {
  [[ -n "$HOLDER_PID" ]] && kill "$HOLDER_PID" 2>/dev/null || true
  stop_all_servers
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

FAILED=0
SKIPPED_VARIANTS=""

# verify_server: TechEmpower-style checks on HTTP/1.1, and that h2c and TLS (HTTP/2 and HTTP/1.1) answer.
verify_server() {
  python3 "$HERE/tools.py" verify --port "$SERVER_PORT" --download >&2 || return 1
  local got
  got="$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' "http://127.0.0.1:$H2C_PORT/plaintext")"
  [[ "$got" == "200 2" ]] || { log "  FAIL: h2c /plaintext answered '$got', expected '200 2'"; return 1; }
  got="$(curl -sk --http2 -o /dev/null -w '%{http_code} %{http_version}' "https://127.0.0.1:$TLS_PORT/plaintext")"
  [[ "$got" == "200 2" ]] || { log "  FAIL: TLS HTTP/2 /plaintext answered '$got', expected '200 2'"; return 1; }
  got="$(curl -sk --http1.1 -o /dev/null -w '%{http_code} %{http_version}' "https://127.0.0.1:$TLS_PORT/plaintext")"
  [[ "$got" == "200 1.1" ]] || { log "  FAIL: TLS HTTP/1.1 /plaintext answered '$got', expected '200 1.1'"; return 1; }
  echo "  checked: h2c, TLS HTTP/2 (ALPN h2), TLS HTTP/1.1" >&2
}

# record <tag> <tool> <round> <scenario> <variant> <transport> <c0> <c1> <t0> <t1> <busy0> <busy1> <load1> <note> <probe ms>
record() {
  local tag="$1" tool="$2" round="$3" scenario="$4" variant="$5" transport="$6"
  local parsed
  parsed="$(python3 "$HERE/tools.py" "parse-$tool" "$RAW/$tag.load.txt")" || die "cannot parse $RAW/$tag.load.txt"
  python3 "$HERE/tools.py" record --parsed "$parsed" --round "$round" --scenario "$scenario" --variant "$variant" \
    --transport "$transport" --cpu-ticks "$7" "$8" --wall "$9" "${10}" --machine-ticks "${11}" "${12}" --hz "$CLK_TCK" \
    --client-cpu "$(cat "$RAW/$tag.load.txt.cpu" 2>/dev/null || echo 0)" --loadavg "${13}" \
    --vmhwm-kib "$(status_kib "$SERVER_PID" VmHWM)" --vmrss-kib "$(status_kib "$SERVER_PID" VmRSS)" \
    --context-switches "${CONTEXT_SWITCHES:--1}" --probe-ms "${15:--1}" --note "${14}" --transport-line "$TRANSPORT_LINE" --tag "$tag" >>"$RAW/results.jsonl" \
    || { log "FAIL: $tag had socket errors, non-2xx responses or no responses (see $RAW/$tag.load.txt)"; FAILED=1; }
}

# measure <round> <scenario> <variant> <transport> [note]: one measured window on the running server.
measure() {
  local round="$1" scenario="$2" variant="$3" transport="$4" note="${5:-}"
  local tag="r${round}-${variant}-${scenario}-${transport}"
  (( SCENARIO_WARMUP > 0 )) && run_load "$scenario" "$SCENARIO_WARMUP" "$RAW/$tag.warmup.txt" >/dev/null
  local c0 c1 t0 t1 m0 m1 load1 tool
  load1="$(awk '{print $1}' /proc/loadavg)"
  count_context_switches "$SERVER_PID" "$DURATION" "$RAW/$tag.switches.csv" &
  local counter=$!
  c0="$(cpu_ticks "$SERVER_PID")"; m0="$(machine_busy_ticks)"; t0="$(date +%s.%N)"
  tool="$(run_load "$scenario" "$DURATION" "$RAW/$tag.load.txt")"
  c1="$(cpu_ticks "$SERVER_PID")"; m1="$(machine_busy_ticks)"; t1="$(date +%s.%N)"
  wait "$counter" || true
  CONTEXT_SWITCHES="$(read_context_switches "$RAW/$tag.switches.csv")"
  kill -0 "$SERVER_PID" 2>/dev/null || { log "FAIL: the server died during $tag"; FAILED=1; return; }
  # How fast the machine's memory was just after the window, with every server idle (memprobe.c says why).
  local probe; probe="$(machine_probe_ms)"
  record "$tag" "$tool" "$round" "$scenario" "$variant" "$transport" "$c0" "$c1" "$t0" "$t1" "$m0" "$m1" "$load1" "$note" "$probe"
}

# measure_idle <round> <scenario> <variant> <transport>: a fresh server holding IDLE idle connections beside the load.
measure_idle() {
  local round="$1" scenario="$2" variant="$3" transport="$4" tag="r$1-$3-$2-$4"
  start_server "$transport" "$variant" "$RAW/$tag.server.log" || return 0
  taskset -c "$CLIENT_CPU" python3 "$HERE/idle_holder.py" --port "$SERVER_PORT" --count "$IDLE" >"$RAW/$tag.holder.log" 2>&1 &
  HOLDER_PID=$!
  for _ in $(seq 600); do
    grep -q '^ready' "$RAW/$tag.holder.log" 2>/dev/null && break
    kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$RAW/$tag.holder.log" >&2; die "idle holder failed"; }
    sleep 0.1
  done
  grep -q '^ready' "$RAW/$tag.holder.log" || die "idle holder not ready within 60 s"
  run_load "$scenario" "$WARMUP" "$RAW/$tag.warmup.txt" >/dev/null
  local saved="$SCENARIO_WARMUP"; SCENARIO_WARMUP=0
  measure "$round" "$scenario" "$variant" "$transport" "$(tail -1 "$RAW/$tag.holder.log")"
  SCENARIO_WARMUP="$saved"
  kill -TERM "$HOLDER_PID" 2>/dev/null || true
  if ! wait "$HOLDER_PID"; then log "FAIL: the server closed idle connections: $(grep '^alive' "$RAW/$tag.holder.log" || echo '?')"; FAILED=1; fi
  HOLDER_PID=""
  stop_server
}

# measure_cold <round> <scenario> <variant> <transport>: a fresh server, measured from the moment it answers, with no
# warm-up at all: the JIT, the first connections and the pool's growth are all inside the window.
measure_cold() {
  local round="$1" scenario="$2" variant="$3" transport="$4" tag="r$1-$3-$2-$4"
  start_server "$transport" "$variant" "$RAW/$tag.server.log" || return 0
  local saved="$SCENARIO_WARMUP"; SCENARIO_WARMUP=0
  measure "$round" "$scenario" "$variant" "$transport" "fresh server, no warm-up"
  SCENARIO_WARMUP="$saved"
  stop_server
}

# starve <round> <transport>: the starvation probe against a fresh server (default options).
starve() {
  local round="$1" transport="$2" tag="r$1-default-starvation-$2"
  start_server "$transport" default "$RAW/$tag.server.log" || return 0
  local load1; load1="$(awk '{print $1}' /proc/loadavg)"
  taskset -c "$CLIENT_CPU" python3 "$HERE/starvation.py" --port "$SERVER_PORT" --seconds "$STARVE_SECONDS" \
    --timeout "$STARVE_TIMEOUT" >"$RAW/$tag.json" 2>"$RAW/$tag.err" || { cat "$RAW/$tag.err" >&2; log "FAIL: starvation probe failed ($tag)"; FAILED=1; }
  stop_server
  python3 "$HERE/tools.py" starvation-line --file "$RAW/$tag.json" --round "$round" --transport "$transport" \
    --loadavg "$load1" --transport-line "$TRANSPORT_LINE" >>"$RAW/starvation.jsonl" || { log "FAIL: $tag gave no result"; FAILED=1; }
}

# ----------------------------------------------------------------------------------------------------- measure
python3 "$HERE/tools.py" meta --out "$RAW/meta.json" --commit "$COMMIT" --dirty "$DIRTY" --server-cpu "$SERVER_CPU" \
  --client-cpu "$CLIENT_CPU" --tools "$TOOL_SUMMARY" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
  --protocol-warmup "$PROTOCOL_WARMUP" --warmup-chunk "$WARMUP_CHUNK" --scenario-warmup "$SCENARIO_WARMUP" --variants "$VARIANTS $ADVANCED" --quick "$QUICK" --starve "$STARVE_ROUNDS" \
  "$STARVE_SECONDS" "$STARVE_TIMEOUT" --other-cpu-before "$OTHER_CPU_BEFORE" --uptime-before "$UPTIME_BEFORE" \
  --probe-before "$PROBE_BEFORE" --side-by-side 1

COMBOS="sockets:default"
for v in $VARIANTS $ADVANCED; do COMBOS+=" iouring:$v"; done
REVERSED="$(tr ' ' '\n' <<<"$COMBOS" | tac | tr '\n' ' ')"
log "measuring: rounds=$ROUNDS warm-up=${PROTOCOL_WARMUP}s per pipelined, HTTP/2 or TLS protocol + ${WARMUP}s plaintext, then ${SCENARIO_WARMUP}s + ${DURATION}s per scenario; servers=[$COMBOS]; scenarios=[${SELECTED% }]"
# combo_scenarios <transport:variant>: the load scenarios that row measures (advanced variants: ADVANCED_SCENARIOS only).
combo_scenarios() {
  local variant="${1#*:}" s out=""
  for s in $LOAD_SCENARIOS; do
    [[ " $ADVANCED " == *" $variant "* && " $ADVANCED_SCENARIOS " != *" $s "* ]] && continue
    out+="$s "
  done
  echo "$out"
}
reverse_words() { tr ' ' '\n' <<<"$1" | grep . | tac | tr '\n' ' '; }

for round in $(seq "$ROUNDS"); do
  if (( round % 2 == 1 )); then ORDER="$COMBOS"; else ORDER="$REVERSED"; fi
  log "round $round of $ROUNDS (order: $ORDER)"
  # Every server of the round runs side by side on SERVER_CPU (idle ones cost nothing measurable), so that each
  # scenario is measured on all of them within a minute or so: a slow period of the machine then falls on every row
  # of that scenario alike rather than on one server's whole series (see "Machine speed" in loadtests/README.md).
  STARTED=""
  for combo in $ORDER; do
    transport="${combo%%:*}"; variant="${combo#*:}"
    [[ " $SKIPPED_VARIANTS " == *" $variant "* ]] && continue
    [[ -n "$(combo_scenarios "$combo")" ]] || continue
    rc=0; start_server "$transport" "$variant" "$RAW/r$round-$variant-$transport.server.log" || rc=$?
    if (( rc == 3 )); then SKIPPED_VARIANTS+="$variant "; echo "$variant: $(grep -m1 'unknown io_uring option' "$RAW/r$round-$variant-$transport.server.log")" >>"$RAW/skipped.txt"; continue; fi
    log "  $transport $variant: $TRANSPORT_LINE"
    if (( round == 1 )); then verify_server || die "verification failed for $transport $variant (log: $RAW/r$round-$variant-$transport.server.log)"; fi
    park_server "$combo"; STARTED+="$combo "
  done
  for combo in $STARTED; do
    use_server "$combo"
    warm_server "$RAW/r$round-${combo#*:}-${combo%%:*}" $(combo_scenarios "$combo")
  done
  # Each scenario on every server in turn; the order flips from one scenario to the next, so no row always goes first.
  flip=0
  for scenario in $LOAD_SCENARIOS; do
    order="$STARTED"; (( flip )) && order="$(reverse_words "$STARTED")"
    flip=$(( 1 - flip ))
    for combo in $order; do
      [[ " $(combo_scenarios "$combo") " == *" $scenario "* ]] || continue
      use_server "$combo"
      measure "$round" "$scenario" "${combo#*:}" "${combo%%:*}"
    done
  done
  stop_all_servers
  for scenario in $IDLE_SCENARIOS; do
    for combo in $ORDER; do
      transport="${combo%%:*}"; variant="${combo#*:}"
      [[ "$variant" == default ]] && measure_idle "$round" "$scenario" "$variant" "$transport"
    done
  done
  for scenario in $COLD_SCENARIOS; do
    for combo in $ORDER; do
      [[ " $SKIPPED_VARIANTS " == *" ${combo#*:} "* || " $ADVANCED " == *" ${combo#*:} "* ]] && continue
      measure_cold "$round" "$scenario" "${combo#*:}" "${combo%%:*}"
    done
  done
done

if (( STARVATION )); then
  log "starvation: $STARVE_ROUNDS round(s) per transport, ${STARVE_SECONDS}s of blocked handlers, probes time out after ${STARVE_TIMEOUT}s"
  for round in $(seq "$STARVE_ROUNDS"); do
    if (( round % 2 == 1 )); then ORDER="sockets iouring"; else ORDER="iouring sockets"; fi
    for transport in $ORDER; do starve "$round" "$transport"; done
  done
fi

if [[ "$SYSCALLS" == 1 ]]; then
  log "syscalls per request (loadtests/syscalls.sh)"
  rows="sockets:default iouring:default iouring:inline"
  [[ " $VARIANTS " == *" ringsends "* && " $SKIPPED_VARIANTS " != *" ringsends "* ]] && rows+=" iouring:ringsends"
  SCENARIOS="plaintext-c64 pipelined-c256" ROWS="$rows" WARMUP=5 WINDOW=5 \
    SERVER_DLL="$SERVER_DLL" PORT="$NEXT_PORT" RAW_DIR="$RAW/syscalls" "$HERE/syscalls.sh" >"$RAW/syscalls.md" || { log "FAIL: syscalls.sh failed"; FAILED=1; }
fi

# ------------------------------------------------------------------------------------------------------- report
NAME="$(date +%Y-%m-%d-%H%M)-$COMMIT"; [[ "$QUICK" == 1 ]] && NAME+="-quick"
publish=(); [[ "$PUBLISH" == 1 ]] && publish=(--publish latest)
REPORT_RC=0
python3 "$HERE/report.py" --raw "$RAW" --dir "$HERE/results" --name "$NAME" "${publish[@]}" \
  --elapsed "$(( $(date +%s) - RUN_STARTED ))" >/dev/null || REPORT_RC=$?
cat "$HERE/results/$NAME.md"
log "results: loadtests/results/$NAME.md, $NAME.svg, $NAME-starvation.svg (raw: $RAW)$([[ "$PUBLISH" == 1 ]] && echo "; published as results/latest.*")"
if (( FAILED != 0 || REPORT_RC != 0 )); then
  log "RUN FAILED: socket errors, non-2xx responses, lost idle connections or a dead server (see above)"
  exit 1
fi
log "done in $(( $(date +%s) - RUN_STARTED )) s"

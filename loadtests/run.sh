#!/usr/bin/env bash
# TechEmpower-style comparison of the io_uring transport with Kestrel's Sockets transport, in one command:
#
#   loadtests/run.sh                 # full run: 3 rounds, 10 s warm-up + 10 s measured per scenario and transport
#   QUICK=1 loadtests/run.sh         # smoke run: 1 round, 3 s + 3 s
#
# Environment knobs:
#   ROUNDS=3  DURATION=10  WARMUP=10      rounds (order alternates A/B, B/A), seconds measured, seconds of warm-up
#   SCENARIOS="plaintext-c64 json-c64"    subset (names below; default all); substring match
#   SCHEDULING=threadpool|inline|both     default options / "tuned" (both inline) / both sets of rows
#   ADVANCED="sqpoll incremental zerocopy registered"   extra io_uring variants (issue 6), each next to Sockets with
#                                         default options, on ADVANCED_SCENARIOS (default: plaintext-c64 pipelined-c256
#                                         download-1mib-c16); ADVANCED="" skips them
#   MODES="aspnet"                        aspnet and/or platform (platform skips /download)
#   TOOL=auto|wrk|bombardier              load generator (auto: bombardier if the HTTP one is on PATH, else wrk)
#   IDLE=5000  IDLE_ACTIVE=32             idle connections and active connections of the idle scenario
#   SERVER_CPU=0  CLIENT_CPU=1  PORT=5080  ALLOW_FALLBACK=0 (1: go on when io_uring falls back to Sockets)
#
# Writes loadtests/results/<date>-<commit>.md, results/latest.md and results/latest.svg; raw outputs in
# loadtests/results/raw/<timestamp>/ (not committed). Exits non-zero when a check fails or any socket error or non-2xx
# response was seen (after writing the results).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  ROUNDS="${ROUNDS:-1}"; DURATION="${DURATION:-3}"; WARMUP="${WARMUP:-3}"
fi
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-10}"
SCHEDULING="${SCHEDULING:-threadpool}"
MODES="${MODES:-aspnet}"
TOOL="${TOOL:-auto}"
IDLE="${IDLE:-5000}"
IDLE_ACTIVE="${IDLE_ACTIVE:-32}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PORT="${PORT:-5080}"
ALLOW_FALLBACK="${ALLOW_FALLBACK:-0}"
ALL_SCENARIOS="plaintext-c64 plaintext-c256 pipelined-c256 pipelined-c1024 json-c64 json-c256 download-1mib-c16 idle5000"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------------------------------------ prerequisites
for cmd in dotnet python3 taskset curl; do
  command -v "$cmd" >/dev/null || die "$cmd is not on PATH"
done
case "$SCHEDULING" in threadpool) VARIANTS="default" ;; inline) VARIANTS="tuned" ;; both) VARIANTS="default tuned" ;;
  *) die "SCHEDULING must be threadpool, inline or both" ;; esac
ADVANCED="${ADVANCED-sqpoll incremental zerocopy registered}"
ADVANCED_SCENARIOS="${ADVANCED_SCENARIOS:-plaintext-c64 pipelined-c256 download-1mib-c16}"
# advanced_env <variant>: the io_uring options of an advanced-mode variant (environment overrides of Kestrel:IoUring)
advanced_env() {
  case "$1" in
    sqpoll) echo "Kestrel__IoUring__SqPoll=true Kestrel__IoUring__SqPollIdleMilliseconds=100" ;;
    incremental) echo "Kestrel__IoUring__IncrementalReceiveBuffers=true Kestrel__IoUring__ReceiveBufferSize=16384 Kestrel__IoUring__ReceiveBufferCount=256" ;;
    zerocopy) echo "Kestrel__IoUring__ZeroCopySendThreshold=16384" ;;
    registered) echo "Kestrel__IoUring__ZeroCopySendThreshold=16384 Kestrel__IoUring__RegisteredSendBufferSize=4194304" ;;
    *) die "ADVANCED: unknown variant $1 (sqpoll incremental zerocopy registered)" ;;
  esac
}
for v in $ADVANCED; do advanced_env "$v" >/dev/null; done
for m in $MODES; do [[ "$m" == aspnet || "$m" == platform ]] || die "MODES: unknown mode $m"; done
SELECTED=""
for s in $ALL_SCENARIOS; do
  if [[ -z "${SCENARIOS:-}" ]]; then SELECTED+="$s "; continue; fi
  for f in $SCENARIOS; do [[ "$s" == *"$f"* ]] && { SELECTED+="$s "; break; }; done
done
[[ -n "$SELECTED" ]] || die "SCENARIOS='${SCENARIOS:-}' matches none of: $ALL_SCENARIOS"
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
command -v wrk >/dev/null || die "wrk is not on PATH (apt-get install wrk): pipelining needs it"
WRK_VERSION="$( (wrk -v 2>&1 || true) | head -1 | awk '{print $2}')"
if [[ "$BASE_TOOL" == bombardier ]]; then
  TOOL_SUMMARY="bombardier ($(command -v bombardier)) for non-pipelined scenarios, wrk $WRK_VERSION with loadtests/pipeline.lua for pipelined ones"
else
  if command -v bombardier >/dev/null; then why="the bombardier on PATH is not the HTTP benchmarking tool"; else why="bombardier is not on PATH"; fi
  TOOL_SUMMARY="wrk $WRK_VERSION (${why}); pipelining with loadtests/pipeline.lua"
fi
log "load tool: $TOOL_SUMMARY"

# 5,000 idle connections plus the active set, in the server and in the holder.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= IDLE + 2048 )) || die "ulimit -n is $(ulimit -n); need at least $((IDLE + 2048)) (raise the hard limit)"

LOAD_NOTE=""
load1="$(awk '{print $1}' /proc/loadavg)"
busy="$(pgrep -fa 'dotnet test|testhost' | grep -v pgrep || true)"
if [[ -n "$busy" ]] || awk -v l="$load1" 'BEGIN{exit !(l >= 0.5)}'; then
  extra=""; [[ -n "$busy" ]] && extra=", test processes running"
  LOAD_NOTE="the machine was not idle when the run started (load average $load1$extra); numbers are noisy"
  log "WARNING: $LOAD_NOTE"
fi

# ------------------------------------------------------------------------------------------------------- build
log "building Release"
dotnet build "$REPO/samples/Benchmarks/Benchmarks.csproj" -c Release -nologo -v quiet >/dev/null \
  || { dotnet build "$REPO/samples/Benchmarks/Benchmarks.csproj" -c Release -nologo -v quiet | tail -30; die "build failed"; }
SERVER_DLL="$REPO/samples/Benchmarks/bin/Release/net10.0/Benchmarks.dll"
[[ -f "$SERVER_DLL" ]] || die "$SERVER_DLL missing after the build"

STAMP="$(date +%Y%m%d-%H%M%S)"
RAW="$HERE/results/raw/$STAMP"
mkdir -p "$RAW"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=false; [[ -n "$(git -C "$REPO" status --porcelain -- src samples 2>/dev/null)" ]] && DIRTY=true
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------------------------------------- process control
SERVER_PID=""; HOLDER_PID=""; PORT_SEQ=0
cleanup() {
  [[ -n "$HOLDER_PID" ]] && kill "$HOLDER_PID" 2>/dev/null || true
  stop_server
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# start_server <transport> <variant> <mode> <logfile>: sets SERVER_PID, SERVER_PORT, TRANSPORT_LINE
start_server() {
  local transport="$1" variant="$2" mode="$3" logf="$4"
  local scheduling=threadpool; [[ "$variant" == tuned ]] && scheduling=inline
  PORT_SEQ=$((PORT_SEQ + 1)); SERVER_PORT=$((PORT + PORT_SEQ % 500))
  local -a envs=(env -u KESTREL_IOURING_DISABLE DOTNET_gcServer=1 DOTNET_TieredPGO=1)
  if [[ "$transport" == sockets && "$variant" == tuned ]]; then envs+=(DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1); fi
  if [[ "$transport" == iouring && "$variant" != default && "$variant" != tuned ]]; then
    # shellcheck disable=SC2207
    envs+=($(advanced_env "$variant"))
  fi
  "${envs[@]}" taskset -c "$SERVER_CPU" dotnet "$SERVER_DLL" --transport "$transport" --scheduling "$scheduling" --mode "$mode" \
    --urls "http://127.0.0.1:$SERVER_PORT" >"$logf" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 150); do
    if curl -fs -o /dev/null "http://127.0.0.1:$SERVER_PORT/plaintext"; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logf" >&2; die "server ($transport $variant $mode) exited at start"; }
    sleep 0.1
  done
  curl -fs -o /dev/null "http://127.0.0.1:$SERVER_PORT/plaintext" || { cat "$logf" >&2; die "server did not answer within 15 s"; }
  TRANSPORT_LINE="$(grep -m1 '^Benchmarks: transport' "$logf" || true)"
  [[ -n "$TRANSPORT_LINE" ]] || die "the server did not print its transport line"
  if [[ "$transport" == iouring && "$TRANSPORT_LINE" != *"transport io_uring"* && "$ALLOW_FALLBACK" != 1 ]]; then
    die "io_uring requested but not serving: $TRANSPORT_LINE (ALLOW_FALLBACK=1 to go on anyway)"
  fi
}

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# run_load <scenario> <seconds> <outfile>: prints the tool used
run_load() {
  local scenario="$1" secs="$2" out="$3" url="http://127.0.0.1:$SERVER_PORT"
  local conns path="/plaintext" pipeline=0
  case "$scenario" in
    plaintext-c*) conns="${scenario#plaintext-c}" ;;
    pipelined-c*) conns="${scenario#pipelined-c}"; pipeline=16 ;;
    json-c*) conns="${scenario#json-c}"; path="/json" ;;
    download-1mib-c*) conns="${scenario#download-1mib-c}"; path="/download?size=1048576" ;;
    idle*) conns="$IDLE_ACTIVE" ;;
  esac
  if (( pipeline > 0 )) || [[ "$BASE_TOOL" == wrk ]]; then
    local -a script=()
    (( pipeline > 0 )) && script=(-s "$HERE/pipeline.lua")
    local -a tail=(); (( pipeline > 0 )) && tail=(-- "$path" "$pipeline")
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency --timeout 8s "${script[@]}" "$url$( ((pipeline > 0)) || echo "$path")" "${tail[@]}" >"$out" 2>&1 || true
    echo wrk
  else
    taskset -c "$CLIENT_CPU" bombardier -c "$conns" -d "${secs}s" -l -p r -o json -t 8s "$url$path" >"$out" 2>&1 || true
    echo bombardier
  fi
}

FAILED=0

# measure <round> <scenario> <mode> <variant> <transport>
measure() {
  local round="$1" scenario="$2" mode="$3" variant="$4" transport="$5"
  local tag="r${round}-${mode}-${variant}-${scenario}-${transport}"
  start_server "$transport" "$variant" "$mode" "$RAW/$tag.server.log"
  if [[ "$scenario" == idle* ]]; then
    taskset -c "$CLIENT_CPU" python3 "$HERE/idle_holder.py" --port "$SERVER_PORT" --count "$IDLE" >"$RAW/$tag.holder.log" 2>&1 &
    HOLDER_PID=$!
    for _ in $(seq 600); do
      grep -q '^ready' "$RAW/$tag.holder.log" 2>/dev/null && break
      kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$RAW/$tag.holder.log" >&2; die "idle holder failed"; }
      sleep 0.1
    done
    grep -q '^ready' "$RAW/$tag.holder.log" || die "idle holder not ready within 60 s"
  fi
  run_load "$scenario" "$WARMUP" "$RAW/$tag.warmup.txt" >/dev/null
  local c0 c1 t0 t1 tool
  c0="$(cpu_ticks "$SERVER_PID")"; t0="$(date +%s.%N)"
  tool="$(run_load "$scenario" "$DURATION" "$RAW/$tag.load.txt")"
  c1="$(cpu_ticks "$SERVER_PID")"; t1="$(date +%s.%N)"
  local hwm rss
  hwm="$(status_kib "$SERVER_PID" VmHWM)"; rss="$(status_kib "$SERVER_PID" VmRSS)"
  local holder_note="" idle_ok=true
  if [[ -n "$HOLDER_PID" ]]; then
    kill -TERM "$HOLDER_PID" 2>/dev/null || true
    wait "$HOLDER_PID" 2>/dev/null || idle_ok=false
    HOLDER_PID=""
    holder_note="$(grep '^alive' "$RAW/$tag.holder.log" || echo 'alive ?')"
    $idle_ok || { log "FAIL: the server closed idle connections: $holder_note"; FAILED=1; }
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || { log "FAIL: the server died during $tag"; FAILED=1; }
  stop_server
  local parsed
  parsed="$(python3 "$HERE/tools.py" "parse-$tool" "$RAW/$tag.load.txt")" || die "cannot parse $RAW/$tag.load.txt"
  python3 - "$parsed" <<PY >>"$RAW/results.jsonl"
import json, sys
r = json.loads(sys.argv[1])
r.update(round=$round, scenario="$scenario", mode="$mode", variant="$variant", transport="$transport",
         cpu_s=($c1 - $c0) / $CLK_TCK, wall_s=$t1 - $t0, vmhwm_kib=int("$hwm"), vmrss_kib=int("$rss"),
         idle_note="$holder_note", transport_line=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$TRANSPORT_LINE"))
print(json.dumps(r))
PY
  local line; line="$(tail -1 "$RAW/results.jsonl")"
  python3 - "$line" "$tag" <<'PY' >&2
import json, sys
r = json.loads(sys.argv[1])
cpu = r["cpu_s"] / r["requests"] * 1e5 if r["requests"] else float("nan")
print(f"  {sys.argv[2]:<52} {r['tool']:<10} {r['rps']:>11,.0f} req/s  p50 {r['p50_ms'] or 0:7.2f} ms  p99 {r['p99_ms'] or 0:8.2f} ms  "
      f"CPU {cpu:6.2f} s/100k  HWM {r['vmhwm_kib']/1024:6.0f} MiB  err {r['socket_errors']} non2xx {r['non2xx']} {r['idle_note']}")
PY
  if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["socket_errors"]==0 and r["non2xx"]==0 and r["requests"]>0 else 1)' "$line"; then :; else
    log "FAIL: $tag had socket errors, non-2xx responses or no responses (see $RAW/$tag.load.txt)"; FAILED=1
  fi
}

# ------------------------------------------------------------------------------------------------------- verify
log "verifying endpoints (TechEmpower-style) on both transports"
for mode in $MODES; do
  for transport in iouring sockets; do
    start_server "$transport" default "$mode" "$RAW/verify-$mode-$transport.server.log"
    log "  $mode/$transport: $TRANSPORT_LINE"
    dl=(); [[ "$mode" == aspnet ]] && dl=(--download)
    if ! python3 "$HERE/tools.py" verify --port "$SERVER_PORT" "${dl[@]}" >&2; then
      die "verification failed for $mode/$transport (server log: $RAW/verify-$mode-$transport.server.log)"
    fi
    stop_server
  done
done

# ----------------------------------------------------------------------------------------------------- measure
python3 - <<PY >"$RAW/meta.json"
import json, platform, re, subprocess, sys
cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.lower().startswith(("model name", "cpu model", "hardware")):
        cpu = line.split(":", 1)[1].strip(); break
mem = next((l.split(":")[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
json.dump(dict(started="$(date -u +%Y-%m-%dT%H:%M:%SZ)", commit="$COMMIT", dirty=$( $DIRTY && echo True || echo False),
               nproc="$NPROC", cpu_model=cpu, kernel=platform.release(), mem="RAM " + mem,
               dotnet=subprocess.run(["dotnet", "--version"], capture_output=True, text=True).stdout.strip(),
               server_cpu=$SERVER_CPU, client_cpu=$CLIENT_CPU, tool_summary="""$TOOL_SUMMARY""", rounds=$ROUNDS,
               duration=$DURATION, warmup=$WARMUP, scheduling="$SCHEDULING", modes="$MODES", quick=$([[ $QUICK == 1 ]] && echo True || echo False),
               load_note="""$LOAD_NOTE"""), sys.stdout)
PY

log "measuring: rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s scenarios=[${SELECTED% }] variants=[$VARIANTS${ADVANCED:+ + advanced: $ADVANCED on $ADVANCED_SCENARIOS}] modes=[$MODES]"
for round in $(seq "$ROUNDS"); do
  if (( round % 2 == 1 )); then ORDER="iouring sockets"; else ORDER="sockets iouring"; fi
  log "round $round of $ROUNDS (order: $ORDER)"
  for scenario in $SELECTED; do
    for mode in $MODES; do
      [[ "$mode" == platform && "$scenario" == download* ]] && continue
      for variant in $VARIANTS; do
        for transport in $ORDER; do
          measure "$round" "$scenario" "$mode" "$variant" "$transport"
        done
      done
      # Advanced io_uring modes: each next to Sockets with default options, on a few representative scenarios.
      if [[ "$mode" == aspnet && " $ADVANCED_SCENARIOS " == *" $scenario "* ]]; then
        for variant in $ADVANCED; do
          for transport in $ORDER; do
            measure "$round" "$scenario" "$mode" "$variant" "$transport"
          done
        done
      fi
    done
  done
done

# ------------------------------------------------------------------------------------------------------- report
mkdir -p "$HERE/results"
NAME="$(date +%Y-%m-%d)-$COMMIT"; [[ "$QUICK" == 1 ]] && NAME+="-quick"
REPORT_RC=0
python3 "$HERE/tools.py" report --raw "$RAW" --out "$HERE/results/$NAME.md" --out "$HERE/results/latest.md" \
  --svg "$HERE/results/latest.svg" >/dev/null || REPORT_RC=$?
cat "$HERE/results/latest.md"
log "results: loadtests/results/$NAME.md, loadtests/results/latest.md, loadtests/results/latest.svg (raw: $RAW)"
if (( FAILED != 0 || REPORT_RC != 0 )); then
  log "RUN FAILED: socket errors, non-2xx responses, lost idle connections or a dead server (see above)"
  exit 1
fi
log "done"

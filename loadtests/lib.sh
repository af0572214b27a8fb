# Shared by loadtests/run.sh, syscalls.sh and profile.sh (source it; it defines functions and a few variables only).
#
# Expects: HERE (loadtests/), REPO, RAW (a directory for logs), and optionally PORT, SERVER_CPU, CLIENT_CPU,
# ALLOW_FALLBACK, RING_SENDS_OPTION. Provides: log, die, require_commands, build_server, make_certificate,
# start_server / stop_server (free ports, one retry), run_load (wrk, bombardier or h2load by scenario), cpu_ticks,
# scenario_kind, variant_options.

PORT="${PORT:-5080}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
ALLOW_FALLBACK="${ALLOW_FALLBACK:-0}"
# The io_uring option that selects the old path where every send goes through the ring (the "ringsends" row).
RING_SENDS_OPTION="${RING_SENDS_OPTION:-Kestrel__IoUring__SendPath=Ring}"
CLK_TCK="$(getconf CLK_TCK)"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# require_commands <command>...: names the Debian package of each missing one.
require_commands() {
  local missing=() c
  for c in "$@"; do
    command -v "$c" >/dev/null && continue
    case "$c" in
      h2load) missing+=("h2load (apt-get install nghttp2-client)") ;;
      perf) missing+=("perf (apt-get install linux-perf)") ;;
      *) missing+=("$c (apt-get install $c)") ;;
    esac
  done
  (( ${#missing[@]} == 0 )) || die "not on PATH: ${missing[*]}"
}

build_server() {
  log "building Release"
  dotnet build "$REPO/samples/Benchmarks/Benchmarks.csproj" -c Release -nologo -v quiet >/dev/null \
    || { dotnet build "$REPO/samples/Benchmarks/Benchmarks.csproj" -c Release -nologo -v quiet | tail -30; die "build failed"; }
  SERVER_DLL="$REPO/samples/Benchmarks/bin/Release/net10.0/Benchmarks.dll"
  [[ -f "$SERVER_DLL" ]] || die "$SERVER_DLL missing after the build"
}

# make_certificate <dir>: a throw-away self-signed certificate for 127.0.0.1 (sets CERT and KEY).
make_certificate() {
  CERT="$1/cert.pem"; KEY="$1/key.pem"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$KEY" -out "$CERT" -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 \
    || die "openssl could not make the test certificate in $1"
}

# variant_options <variant>: environment overrides of Kestrel:IoUring for an io_uring variant.
variant_options() {
  case "$1" in
    default | inline) echo "" ;;
    ringsends) echo "$RING_SENDS_OPTION" ;;
    schedother) echo "Kestrel__IoUring__RingThreadPolicy=Normal" ;;
    sqpoll) echo "Kestrel__IoUring__SqPoll=true Kestrel__IoUring__SqPollIdleMilliseconds=100" ;;
    incremental) echo "Kestrel__IoUring__IncrementalReceiveBuffers=true Kestrel__IoUring__ReceiveBufferSize=16384 Kestrel__IoUring__ReceiveBufferCount=256" ;;
    zerocopy) echo "Kestrel__IoUring__ZeroCopySendThreshold=16384" ;;
    registered) echo "Kestrel__IoUring__ZeroCopySendThreshold=16384 Kestrel__IoUring__RegisteredSendBufferSize=4194304" ;;
    *) die "unknown variant $1 (default inline ringsends schedother sqpoll incremental zerocopy registered)" ;;
  esac
}

# scenario_kind <scenario>: http1 (wrk/bombardier), fixedrate, h2c, tls-h2, tls-h1 (h2load), tls-h1-wrk (wrk), idle,
# starvation; the app-shaped scenarios (samples/Benchmarks/AppEndpoints.cs): app-h1 (wrk with paths.lua), upload (wrk
# with upload.lua), static-h2c (h2load), coldstart (a fresh server measured from its start, no warm-up).
scenario_kind() {
  case "$1" in
    plaintext-c* | pipelined-c* | json-c* | download-1mib-c*) echo http1 ;;
    api-* | churn-c* | static-c*) echo app-h1 ;;
    upload-c*) echo upload ;;
    static-h2c-*) echo static-h2c ;;
    coldstart-*) echo coldstart ;;
    fixedrate-*) echo fixedrate ;;
    h2c-*) echo h2c ;;
    tls-h2-*) echo tls-h2 ;;
    tls-h1-wrk-*) echo tls-h1-wrk ;;
    tls-h1-*) echo tls-h1 ;;
    idle*) echo idle ;;
    starvation) echo starvation ;;
    *) die "unknown scenario $1" ;;
  esac
}

# ------------------------------------------------------------------------------------------------------ free ports
NEXT_PORT="$PORT"
declare -A PORT_REPORTED=()

# port_holder <port>: the listening socket on that port and its process, if any (empty when free).
port_holder() { ss -Hltnp "sport = :$1" 2>/dev/null | awk '{print $4, $6}' | head -1; }

# take_port: sets TAKEN_PORT to the next port from PORT upward that nothing listens on; says who holds each one it
# skips. (Not through $(...): the subshell would lose NEXT_PORT.)
take_port() {
  local p="$NEXT_PORT" holder
  while :; do
    (( p > 65535 )) && p=1024
    holder="$(port_holder "$p")"
    if [[ -z "$holder" ]]; then NEXT_PORT=$((p + 1)); TAKEN_PORT="$p"; return; fi
    if [[ -z "${PORT_REPORTED[$p]:-}" ]]; then log "port $p is taken ($holder); using another"; PORT_REPORTED[$p]=1; fi
    p=$((p + 1))
  done
}

# ---------------------------------------------------------------------------------------------------- the server
SERVER_PID=""; SERVER_PORT=""; H2C_PORT=""; TLS_PORT=""; TRANSPORT_LINE=""

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# launch_server <transport> <variant> <logfile> [extra env...]: one attempt; returns 0 when serving, 3 when the server
# refused an io_uring option of the variant, 1 on any other failure (the log says why).
launch_server() {
  local transport="$1" variant="$2" logf="$3"; shift 3
  local scheduling=threadpool; [[ "$variant" == inline ]] && scheduling=inline
  take_port; SERVER_PORT="$TAKEN_PORT"; take_port; H2C_PORT="$TAKEN_PORT"; take_port; TLS_PORT="$TAKEN_PORT"
  local -a envs=(env -u KESTREL_IOURING_DISABLE DOTNET_gcServer=1 DOTNET_TieredPGO=1 "$@")
  # shellcheck disable=SC2207
  [[ "$transport" == iouring ]] && envs+=($(variant_options "$variant"))
  "${envs[@]}" taskset -c "$SERVER_CPU" dotnet "$SERVER_DLL" --transport "$transport" --scheduling "$scheduling" --mode aspnet \
    --urls "http://127.0.0.1:$SERVER_PORT" --h2c-urls "http://127.0.0.1:$H2C_PORT" \
    --tls-urls "https://127.0.0.1:$TLS_PORT" --cert "$CERT" --key "$KEY" >"$logf" 2>&1 &
  SERVER_PID=$!
  local rc
  # serving, and the transport line printed (it comes just after the host has started)
  for _ in $(seq 150); do
    grep -q '^Benchmarks: transport' "$logf" 2>/dev/null && curl -fs -o /dev/null "http://127.0.0.1:$SERVER_PORT/plaintext" && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
      SERVER_PID=""
      [[ "$rc" == 3 ]] && return 3
      return 1
    fi
    sleep 0.1
  done
  curl -fs -o /dev/null "http://127.0.0.1:$SERVER_PORT/plaintext" || { stop_server; echo "(no answer within 15 s)" >>"$logf"; return 1; }
  TRANSPORT_LINE="$(grep -m1 '^Benchmarks: transport' "$logf" || true)"
  [[ -n "$TRANSPORT_LINE" ]] || { stop_server; echo "(no transport line)" >>"$logf"; return 1; }
  return 0
}

# start_server <transport> <variant> <logfile> [extra env...]: sets SERVER_PID, the ports and TRANSPORT_LINE; tries a
# second time (on fresh ports) when the first start fails. Returns 3 when the variant's options are refused.
start_server() {
  local transport="$1" variant="$2" logf="$3" rc=0
  launch_server "$@" || rc=$?
  if (( rc == 1 )); then
    log "server ($transport $variant) failed to start; last lines of $logf:"
    tail -5 "$logf" >&2
    log "retrying once on other ports"
    rc=0; launch_server "$@" || rc=$?
  fi
  if (( rc == 3 )); then
    log "server ($transport $variant) refused its options: $(grep -m1 'unknown io_uring option' "$logf" || tail -1 "$logf")"
    return 3
  fi
  (( rc == 0 )) || { tail -20 "$logf" >&2; die "server ($transport $variant) failed to start twice (log: $logf)"; }
  if [[ "$transport" == iouring && "$TRANSPORT_LINE" != *"transport io_uring"* && "$ALLOW_FALLBACK" != 1 ]]; then
    die "io_uring requested but not serving: $TRANSPORT_LINE (ALLOW_FALLBACK=1 to go on anyway)"
  fi
  return 0
}

# Servers side by side: run.sh keeps every server of a round alive on SERVER_CPU and measures them in turn, so that
# the windows of one scenario lie close together in time (see "Machine speed" in loadtests/README.md).
# park_server <key>: remembers the running server (SERVER_PID, its ports, TRANSPORT_LINE) under <key>;
# use_server <key>: makes a parked server the current one; stop_all_servers: stops every parked server and the current.
declare -A PARKED_SERVERS=() PARKED_LINES=()
park_server() { PARKED_SERVERS[$1]="$SERVER_PID $SERVER_PORT $H2C_PORT $TLS_PORT"; PARKED_LINES[$1]="$TRANSPORT_LINE"; }
use_server() {
  read -r SERVER_PID SERVER_PORT H2C_PORT TLS_PORT <<<"${PARKED_SERVERS[$1]}"
  TRANSPORT_LINE="${PARKED_LINES[$1]}"
}
stop_all_servers() {
  local key
  for key in "${!PARKED_SERVERS[@]}"; do use_server "$key"; stop_server; done
  PARKED_SERVERS=(); PARKED_LINES=()
  stop_server
}

# build_memprobe <dir>: compiles memprobe.c (the machine-speed probe) into <dir>; sets MEMPROBE, empty without a C
# compiler (the report then says the probe was not run).
build_memprobe() {
  MEMPROBE=""
  local cc; cc="$(command -v cc || command -v clang || command -v gcc || true)"
  if [[ -z "$cc" ]]; then log "no C compiler (cc, clang, gcc) on PATH: machine speed is not probed"; return 0; fi
  "$cc" -O2 -o "$1/memprobe" "$HERE/memprobe.c" || { log "memprobe.c did not compile: machine speed is not probed"; return 0; }
  MEMPROBE="$1/memprobe"
}
# machine_probe_ms: the memory probe's time on SERVER_CPU in ms (-1 when there is no probe).
machine_probe_ms() {
  if [[ -n "${MEMPROBE:-}" ]]; then taskset -c "$SERVER_CPU" "$MEMPROBE"; else echo -1; fi
}

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# count_context_switches <pid> <seconds> <file>: the process's context switches over the next <seconds>, all threads,
# including those that exit meanwhile (perf's software counter; /proc sums would lose exited threads). Run it in the
# background beside the load; read the figure with read_context_switches <file> (empty without perf).
count_context_switches() {
  command -v perf >/dev/null || return 0
  perf stat -x, -e context-switches -p "$1" -o "$3" -- sleep "$2" >/dev/null 2>&1 || true
}
read_context_switches() { awk -F, '$3 == "context-switches" && $1 ~ /^[0-9]+$/ {print $1}' "$1" 2>/dev/null; }
# measure_cpu_window <scenario> <tag>: on the current server, SCENARIO_WARMUP s of that load, then DURATION s measured
# (the load's output in RAW/<tag>.load.txt); sets WINDOW_TOOL, WINDOW_TICKS (the server's CPU ticks over the window)
# and WINDOW_SWITCHES (its context switches; empty without perf). For the side-by-side scripts that need no more than
# that (threadpool-spin.sh, compare-builds.sh); run.sh's measure records the machine around the window too.
measure_cpu_window() {
  local scenario="$1" tag="$2" counter c0 c1
  (( SCENARIO_WARMUP > 0 )) && run_load "$scenario" "$SCENARIO_WARMUP" "$RAW/$tag.warmup.txt" >/dev/null
  count_context_switches "$SERVER_PID" "$DURATION" "$RAW/$tag.switches.csv" &
  counter=$!
  c0="$(cpu_ticks "$SERVER_PID")"
  WINDOW_TOOL="$(run_load "$scenario" "$DURATION" "$RAW/$tag.load.txt")"
  c1="$(cpu_ticks "$SERVER_PID")"
  wait "$counter" || true
  WINDOW_TICKS=$(( c1 - c0 ))
  WINDOW_SWITCHES="$(read_context_switches "$RAW/$tag.switches.csv")"
}

# machine_busy_ticks: user + nice + system time of all CPUs (without idle, iowait, irq, softirq, steal).
machine_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; }

# ------------------------------------------------------------------------------------------------------ load tools
# bounded <seconds> <command>...: the command, ended if it runs 30 s past its own duration (h2load can wait for ever
# for streams a server never answers); the window then records whatever the tool printed.
bounded() { local secs="$1"; shift; timeout -k 5 "$(( secs + 30 ))" "$@"; }

# run_load <scenario> <seconds> <outfile>: runs the load generator on CLIENT_CPU; prints the tool's name. The load
# generator's own CPU seconds (user + system) go to <outfile>.cpu.
run_load() {
  local scenario="$1" secs="$2" out="$3" tool
  local http="http://127.0.0.1:$SERVER_PORT" conns path="/plaintext" pipeline=0
  case "$(scenario_kind "$scenario")" in
    http1)
      case "$scenario" in
        plaintext-c*) conns="${scenario#plaintext-c}" ;;
        pipelined-c*) conns="${scenario#pipelined-c}"; pipeline=16 ;;
        json-c*) conns="${scenario#json-c}"; path="/json" ;;
        download-1mib-c*) conns="${scenario#download-1mib-c}"; path="/download?size=1048576" ;;
      esac
      if (( pipeline > 0 )) || [[ "$BASE_TOOL" == wrk ]]; then
        local -a script=() tail=()
        (( pipeline > 0 )) && { script=(-s "$HERE/pipeline.lua"); tail=(-- "$path" "$pipeline"); path=""; }
        bounded "$secs" taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency --timeout 8s "${script[@]}" "$http$path" "${tail[@]}" >"$out" 2>&1 || true
        tool=wrk
      else
        bounded "$secs" taskset -c "$CLIENT_CPU" bombardier -c "$conns" -d "${secs}s" -l -p r -o json -t 8s "$http$path" >"$out" 2>&1 || true
        tool=bombardier
      fi ;;
    app-h1)
      # "<shape>-c<connections>": paths.lua cycles the paths and renews a connection every N requests (0: never)
      local renew=0 paths=()
      conns="${scenario##*-c}"
      case "$scenario" in
        api-keepalive-c*) paths=($(api_paths 8)) ;;
        api-heavy-c*) renew=25; paths=($(api_paths 50)) ;;
        api-c*) renew=25; paths=($(api_paths 8)) ;;
        churn-c*) renew=10; paths=(/plaintext) ;;
        static-c*) paths=($(static_paths)) ;;
      esac
      bounded "$secs" taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency --timeout 8s -s "$HERE/paths.lua" "$http" -- "$renew" "${paths[@]}" >"$out" 2>&1 || true
      tool=wrk ;;
    upload)
      # uploads of 500 KiB to 20 MiB, read to the end by the server
      bounded "$secs" taskset -c "$CLIENT_CPU" wrk -t1 -c"${scenario#upload-c}" -d"${secs}s" --latency --timeout 8s -s "$HERE/upload.lua" "$http" -- /upload 500 2048 8192 20480 >"$out" 2>&1 || true
      tool=wrk ;;
    static-h2c)
      local shape="${scenario##*-}" urls=() p
      for p in $(static_paths); do urls+=("http://127.0.0.1:$H2C_PORT$p"); done
      bounded "$secs" taskset -c "$CLIENT_CPU" h2load -t1 -c"${shape%x*}" -m"${shape#*x}" -D"$secs" "${urls[@]}" >"$out" 2>&1 || true
      tool=h2load ;;
    coldstart)
      # "coldstart-<scenario>": that scenario's load; run.sh starts a fresh server for it and applies no warm-up
      tool="$(run_load "${scenario#coldstart-}" "$secs" "$out")" ;;
    idle)
      bounded "$secs" taskset -c "$CLIENT_CPU" wrk -t1 -c"$IDLE_ACTIVE" -d"${secs}s" --latency --timeout 8s "$http/plaintext" >"$out" 2>&1 || true
      tool=wrk ;;
    fixedrate)
      # "fixedrate-<connections>x<requests per second each>": plaintext HTTP/1.1 at a fixed offered rate, below what
      # any server saturates at, so that every server does the same work and its CPU per request is compared at equal
      # load (h2load's --rps paces each connection; wrk cannot pace)
      local shape="${scenario#fixedrate-}"
      bounded "$secs" taskset -c "$CLIENT_CPU" h2load --h1 -t1 -c"${shape%x*}" -m1 --rps="${shape#*x}" -D"$secs" "$http/plaintext" >"$out" 2>&1 || true
      tool=h2load ;;
    h2c | tls-h2)
      # "<kind>-<connections>x<streams>": HTTP/2, many concurrent streams per connection
      local shape="${scenario##*-}" url="http://127.0.0.1:$H2C_PORT/plaintext"
      [[ "$scenario" == tls-* ]] && url="https://127.0.0.1:$TLS_PORT/plaintext"
      bounded "$secs" taskset -c "$CLIENT_CPU" h2load -t1 -c"${shape%x*}" -m"${shape#*x}" -D"$secs" "$url" >"$out" 2>&1 || true
      tool=h2load ;;
    tls-h1)
      bounded "$secs" taskset -c "$CLIENT_CPU" h2load --h1 -t1 -c"${scenario#tls-h1-c}" -m1 -D"$secs" "https://127.0.0.1:$TLS_PORT/plaintext" >"$out" 2>&1 || true
      tool=h2load ;;
    tls-h1-wrk)
      # The same TLS HTTP/1.1 load from wrk. Beside io_uring, h2load's TLS client is the limit: it spends its whole
      # core at 49-61k req/s, while Inline's server idles at 0.61-0.92 of its core; wrk, on the same core and TLS 1.3,
      # reaches 59-69k. It also gives latency percentiles (loadtests/tls-clients.sh measures both clients).
      bounded "$secs" taskset -c "$CLIENT_CPU" wrk -t1 -c"${scenario#tls-h1-wrk-c}" -d"${secs}s" --latency --timeout 8s "https://127.0.0.1:$TLS_PORT/plaintext" >"$out" 2>&1 || true
      tool=wrk ;;
    *) die "run_load: $scenario is not a load scenario" ;;
  esac
  # This function runs in a subshell ($(...) or &), so `times` shows the load generator alone as its child; `times` must
  # run in this shell itself (a pipe would fork a subshell with no children), hence the file.
  times >"$out.times"
  tail -1 "$out.times" | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' >"$out.cpu"
  echo "$tool"
}

# api_paths <work>: the JSON API's 50 pages (1 to 50 orders: 0.3 to 16 KB), each built with that much hashing work.
api_paths() { local n; for n in $(seq 50); do echo "/api/orders/$n?work=$1"; done; }
# static_paths: the static files the Benchmarks server writes at start (1 KiB to 1 MiB).
static_paths() { echo /static/1k.txt /static/16k.txt /static/128k.txt /static/1m.txt; }

# warmup_group <scenario>: the code path a scenario needs warmed beyond plaintext HTTP/1.1 (pipelined, h2c, tls-h2,
# tls-h1), or nothing when plaintext load covers it.
warmup_group() {
  case "$1" in
    pipelined-c*) echo pipelined ;;
    api-*) echo api ;;
    static-c*) echo static ;;
    *) case "$(scenario_kind "$1")" in h2c | tls-h2 | tls-h1 | upload | static-h2c) scenario_kind "$1" ;; tls-h1-wrk) echo tls-h1 ;; esac ;;
  esac
}

# warm_for <scenario> <seconds> <outfile>: that load for that long, as loads of at most WARMUP_CHUNK s, each opening
# its own connections (so that connection set-up and tear-down code is called often enough to be tiered up too).
warm_for() {
  local scenario="$1" secs="$2" out="$3" chunk
  while (( secs > 0 )); do
    chunk=$(( secs < WARMUP_CHUNK ? secs : WARMUP_CHUNK ))
    run_load "$scenario" "$chunk" "$out" >/dev/null
    secs=$(( secs - chunk ))
  done
}

# warm_server <tag-prefix> <scenario>...: warms the running server for every code path the scenarios use before any
# window is measured: PROTOCOL_WARMUP s (10) of each warm-up group among them, then WARMUP s of plaintext HTTP/1.1 (the
# first measured scenario's protocol, so its tier-1 code is the freshest). Why, with the measurements: the JIT on the
# server's one core; see "Method" in loadtests/README.md.
PROTOCOL_WARMUP="${PROTOCOL_WARMUP:-10}"
WARMUP_CHUNK="${WARMUP_CHUNK:-5}"
warm_server() {
  local prefix="$1" group s; shift
  local -A warmed=()
  if (( PROTOCOL_WARMUP > 0 )); then
    for s in "$@"; do
      group="$(warmup_group "$s")"
      [[ -z "$group" || -n "${warmed[$group]:-}" ]] && continue
      warmed[$group]=1
      warm_for "$s" "$PROTOCOL_WARMUP" "$prefix.warmup-$group.txt"
    done
  fi
  warm_for plaintext-c64 "$WARMUP" "$prefix.warmup.txt"
}

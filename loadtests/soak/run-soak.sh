#!/usr/bin/env bash
# Soak test of Kestrel.Transport.IoUring: builds the sample app and the soak client (Release),
# starts the sample on 127.0.0.1, runs DURATION seconds of mixed load (keep-alive, connection churn, uploads with
# SHA-256 checks, WebSockets, resets) while sampling the server's fds and memory, then writes
#   loadtests/soak/results/soak-<stamp>.csv   samples (time, rss_kb, fds, requests, unexpected_errors, resets, ...)
#   loadtests/soak/results/soak-<stamp>.json  the client's summary and checks
#   loadtests/soak/results/soak-<stamp>.svg   RSS and fd count over time
#   loadtests/soak/results/latest.md          the run summarised
# and the raw logs under loadtests/soak/results/raw/ (not committed).
#
# Environment:
#   DURATION=600          seconds of load (warm-up included)
#   PORT=                 server port (default: a free one)
#   SERVER_LOG_LEVEL=     e.g. Debug: log level of category Kestrel.Transport.IoUring
#   SOAK_ARGS=            extra SoakClient options, e.g. "--uploads 4 --seed 42" (see SoakClient --help)
#   SOAK_NOTE=            a line for latest.md (e.g. what else ran on the machine)
#   NO_BUILD=1            reuse the last build
# Exit code: 0 when every check passed, else non-zero.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DURATION="${DURATION:-600}"
# Builds go to their own artifacts folder: another build of the repository (dotnet test, the benchmarks) then cannot
# overwrite the binaries of a server or client that is running.
artifacts="$here/.artifacts"
results="$here/results"
raw="$results/raw"
stamp="$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$raw"

server_log="$raw/soak-$stamp.server.log"
client_log="$raw/soak-$stamp.client.log"
csv="$results/soak-$stamp.csv"
json="$results/soak-$stamp.json"
svg="$results/soak-$stamp.svg"
md="$results/latest.md"

# The commit built (other work may land on the branch while the soak runs).
commit="$(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src samples || echo ' (src/samples modified)')"
if [[ "${NO_BUILD:-}" != 1 ]]; then
  echo "== building (Release) into $artifacts"
  dotnet build "$repo/samples/IoUringSample/IoUringSample.csproj" -c Release --artifacts-path "$artifacts" -nologo -v quiet
  dotnet build "$here/SoakClient/SoakClient.csproj" -c Release --artifacts-path "$artifacts" -nologo -v quiet
fi
server_dir="$artifacts/bin/IoUringSample/release"
client_dll="$artifacts/bin/SoakClient/release/SoakClient.dll"

PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
url="http://127.0.0.1:$PORT"

# The server on CPU 0, the client on CPU 1 (when there are two CPUs and taskset), so the client cannot starve it.
server_pin=() client_pin=() pinning="none"
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  server_pin=(taskset -c 0) client_pin=(taskset -c 1) pinning="server on CPU 0, client on CPU 1 (taskset)"
fi

server_pid=""
server_exit=""
stop_server() {
  [[ -n "$server_pid" ]] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "server did not stop within 10 s of SIGTERM; killing it" >&2
      kill -KILL "$server_pid" 2>/dev/null || true
      server_exit="did not stop within 10 s of SIGTERM (killed)"
    fi
  fi
  local rc=0
  wait "$server_pid" 2>/dev/null || rc=$?
  [[ -n "$server_exit" ]] || server_exit="exited with code $rc"
  server_pid=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "== starting the sample on $url ($pinning); log: $server_log"
env_vars=(ASPNETCORE_URLS="$url" DOTNET_CLI_TELEMETRY_OPTOUT=1)
if [[ -n "${SERVER_LOG_LEVEL:-}" ]]; then
  env_vars+=("Logging__LogLevel__Kestrel.Transport.IoUring=$SERVER_LOG_LEVEL")
fi
# exec chains (cd, env, taskset, dotnet host) keep one pid: $! is the server process itself.
(cd "$server_dir" && exec env "${env_vars[@]}" "${server_pin[@]}" dotnet IoUringSample.dll) >"$server_log" 2>&1 &
server_pid=$!

for i in $(seq 1 120); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server exited during start-up:" >&2; cat "$server_log" >&2; exit 3
  fi
  curl -sf -o /dev/null "$url/" && break
  if [[ $i -eq 120 ]]; then echo "the server did not answer on $url within 60 s" >&2; exit 3; fi
  sleep 0.5
done
if ! grep -q "io_uring transport started" "$server_log"; then
  echo "no 'io_uring transport started' line: the sample is not serving over io_uring" >&2
  cat "$server_log" >&2
  exit 3
fi
grep -A1 "io_uring transport started" "$server_log" | head -2

echo "== soak: ${DURATION} s of load against pid $server_pid; client log: $client_log"
set +e
# shellcheck disable=SC2086 # SOAK_ARGS is a list of options
"${client_pin[@]}" dotnet "$client_dll" --url "$url" --pid "$server_pid" --duration "$DURATION" \
  --csv "$csv" --summary-json "$json" ${SOAK_ARGS:-} 2>&1 | tee "$client_log"
client_rc=${PIPESTATUS[0]}
set -e

echo "== stopping the server"
stop_server
echo "server $server_exit"
server_rc=0
[[ "$server_exit" == "exited with code 0" || "$server_exit" == "exited with code 143" ]] || server_rc=1

if [[ ! -s "$json" ]]; then
  echo "the soak client wrote no summary (exit code $client_rc)" >&2
  exit "$((client_rc == 0 ? 1 : client_rc))"
fi

report_rc=0
python3 "$here/soak_report.py" --csv "$csv" --json "$json" --server-log "$server_log" --svg "$svg" --md "$md" \
  --meta "stamp=$stamp" --meta "pinning=$pinning" --meta "commit=$commit" \
  --meta "server_exit=$server_exit" --meta "note=${SOAK_NOTE:-}" || report_rc=$?
gzip -f "$server_log"

echo "== results: $csv, $svg, $md (raw logs in $raw)"
if [[ $client_rc -ne 0 || $report_rc -ne 0 || $server_rc -ne 0 ]]; then
  echo "SOAK FAILED (client exit $client_rc, server log check exit $report_rc, server $server_exit)" >&2
  exit 1
fi
echo "SOAK PASSED"

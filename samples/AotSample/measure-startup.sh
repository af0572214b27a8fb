#!/usr/bin/env bash
# Start-up time (process start to first answered request) and RSS (after 200 requests) of the AotSample, native AOT
# next to JIT, a few runs each. Run it on a quiet machine; figures from a busy one are noise.
#   samples/AotSample/measure-startup.sh [runs] [port]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
port=${2:-19020}
out=${TMPDIR:-/tmp}/aotsample-measure
dotnet publish samples/AotSample -c Release -r linux-x64 -o "$out/aot" >/dev/null
dotnet publish samples/AotSample -c Release -p:PublishAot=false -o "$out/jit" >/dev/null

measure() { # name, command...
  local name=$1; shift
  for run in $(seq 1 "$runs"); do
    local start end pid rss
    start=$(date +%s%N)
    "$@" --urls "http://127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1; do
      kill -0 "$pid" 2>/dev/null || { echo "$name: the app exited at start" >&2; return 1; }
      sleep 0.005
    done
    end=$(date +%s%N)
    for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/" >/dev/null; done
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    printf '%s run %d: first response after %d ms, RSS %d MiB\n' "$name" "$run" $(((end - start) / 1000000)) $((rss / 1024))
  done
}

measure "native AOT" "$out/aot/AotSample"
measure "JIT       " dotnet "$out/jit/AotSample.dll"

#!/usr/bin/env bash
# Two builds of the Benchmarks server side by side, e.g. a commit before and after a refactor that must not change
# behaviour:
#
#   loadtests/compare-builds.sh BEFORE_REV [AFTER_REV]   # revisions of this repository (AFTER: the work tree)
#
# Same method as run.sh, on io_uring only: server pinned to SERVER_CPU, load generator to CLIENT_CPU, a fresh server
# per round and build warmed as run.sh does (warm_server in lib.sh), SCENARIO_WARMUP s before each window, the order of
# the builds alternating between rounds, medians of ROUNDS. Prints one Markdown table: requests/s and server CPU µs per request
# of each build, and after ÷ before.
# Knobs: VARIANTS="default inline" SCENARIOS="plaintext-c64 pipelined-c256" ROUNDS=3 WARMUP=25 PROTOCOL_WARMUP=10
# WARMUP_CHUNK=5 SCENARIO_WARMUP=2 DURATION=10 PORT SERVER_CPU CLIENT_CPU. Each build's io_uring options come from variant_options (lib.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BEFORE_REV="${1:?usage: compare-builds.sh BEFORE_REV [AFTER_REV]}"
AFTER_REV="${2:-}"
VARIANTS="${VARIANTS:-default inline}"
SCENARIOS="${SCENARIOS:-plaintext-c64 pipelined-c256}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-25}"
SCENARIO_WARMUP="${SCENARIO_WARMUP:-2}"
DURATION="${DURATION:-10}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
RAW="$HERE/results/raw/compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RAW"
require_commands dotnet python3 taskset curl wrk h2load openssl ss git

# build_at <rev|""> <name>: builds the Benchmarks server of that revision (or of the work tree) into RAW/<name>.
build_at() {
  local rev="$1" name="$2" src="$REPO"
  if [[ -n "$rev" ]]; then
    src="$RAW/src-$name"
    git -C "$REPO" worktree add -q --detach "$src" "$rev"
  fi
  log "building $name (${rev:-work tree})"
  dotnet build "$src/samples/Benchmarks/Benchmarks.csproj" -c Release -nologo -v quiet -o "$RAW/bin-$name" >/dev/null \
    || die "build of $name failed"
  [[ -n "$rev" ]] && git -C "$REPO" worktree remove --force "$src"
  echo "$RAW/bin-$name/Benchmarks.dll"
}

BEFORE_DLL="$(build_at "$BEFORE_REV" before)"
AFTER_DLL="$(build_at "$AFTER_REV" after)"
make_certificate "$RAW"
trap stop_server EXIT

for round in $(seq "$ROUNDS"); do
  builds="before after"; (( round % 2 == 0 )) && builds="after before"
  for variant in $VARIANTS; do
    for build in $builds; do
      if [[ "$build" == before ]]; then SERVER_DLL="$BEFORE_DLL"; else SERVER_DLL="$AFTER_DLL"; fi
      start_server iouring "$variant" "$RAW/r$round-$variant-$build.server.log" || die "the $build build refused $variant"
      warm_server "$RAW/r$round-$variant-$build" $SCENARIOS
      for scenario in $SCENARIOS; do
        tag="r$round-$variant-$scenario-$build"
        run_load "$scenario" "$SCENARIO_WARMUP" "$RAW/$tag.warmup.txt" >/dev/null
        c0="$(cpu_ticks "$SERVER_PID")"
        tool="$(run_load "$scenario" "$DURATION" "$RAW/$tag.load.txt")"
        c1="$(cpu_ticks "$SERVER_PID")"
        parsed="$(python3 "$HERE/tools.py" "parse-$tool" "$RAW/$tag.load.txt")"
        python3 - "$parsed" "$c0" "$c1" "$CLK_TCK" "$variant" "$scenario" "$build" "$round" >>"$RAW/results.jsonl" <<'PY'
import json, sys
p = json.loads(sys.argv[1]); c0, c1, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu_us = (c1 - c0) / hz * 1e6 / p["requests"] if p["requests"] else float("nan")
print(json.dumps({"variant": sys.argv[5], "scenario": sys.argv[6], "build": sys.argv[7], "round": int(sys.argv[8]),
                  "rps": p["rps"], "cpu_us": cpu_us}))
PY
        log "  $tag: $(tail -1 "$RAW/results.jsonl")"
      done
      stop_server
    done
  done
done

python3 - "$RAW/results.jsonl" "$BEFORE_REV" "${AFTER_REV:-work tree}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["variant"], r["scenario"]) for r in rows})
med = lambda v, s, b, k: statistics.median(r[k] for r in rows if (r["variant"], r["scenario"], r["build"]) == (v, s, b))
print(f"Before: {sys.argv[2]}, after: {sys.argv[3]}; io_uring, medians of {max(r['round'] for r in rows)} alternated rounds.\n")
print("| row | scenario | before req/s | after req/s | after ÷ before | before µs CPU/req | after µs CPU/req |")
print("|---|---|--:|--:|--:|--:|--:|")
for v, s in keys:
    b, a = med(v, s, "before", "rps"), med(v, s, "after", "rps")
    print(f"| {v} | {s} | {b:,.0f} | {a:,.0f} | {a / b:.2f}× | {med(v, s, 'before', 'cpu_us'):.2f} | {med(v, s, 'after', 'cpu_us'):.2f} |")
PY

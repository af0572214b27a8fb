#!/usr/bin/env bash
# Two builds of the Benchmarks server side by side, e.g. a commit before and after a refactor that must not change
# behaviour:
#
#   loadtests/compare-builds.sh BEFORE_REV [AFTER_REV]   # revisions of this repository (AFTER: the work tree)
#
# Same method as run.sh, on io_uring only: servers pinned to SERVER_CPU, load generator to CLIENT_CPU. Every round
# starts a fresh server per build and variant, all side by side, warms each as run.sh does (warm_server in lib.sh),
# then measures each scenario on every server in turn (SCENARIO_WARMUP s, then DURATION s), the order reversing between
# scenarios and rounds, so that the two builds' windows lie close together in time (the machine's speed drifts: see
# "Machine speed" in loadtests/README.md). Prints one Markdown table: requests/s and server CPU µs per request of each
# build (medians of ROUNDS), and after ÷ before for both, paired within each round (the median of the rounds' ratios).
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
trap stop_all_servers EXIT

order=""
for variant in $VARIANTS; do order+="$variant:before $variant:after "; done
for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  for key in $order; do
    variant="${key%%:*}" build="${key#*:}"
    if [[ "$build" == before ]]; then SERVER_DLL="$BEFORE_DLL"; else SERVER_DLL="$AFTER_DLL"; fi
    start_server iouring "$variant" "$RAW/r$round-$variant-$build.server.log" || die "the $build build refused $variant"
    park_server "$key"
    warm_server "$RAW/r$round-$variant-$build" $SCENARIOS
  done
  flip=$(( round % 2 ))
  for scenario in $SCENARIOS; do
    turn="$order"; (( flip )) && turn="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
    flip=$(( 1 - flip ))
    for key in $turn; do
      use_server "$key"
      variant="${key%%:*}" build="${key#*:}" tag="r$round-$variant-$scenario-$build"
      measure_cpu_window "$scenario" "$tag"
      parsed="$(python3 "$HERE/tools.py" "parse-$WINDOW_TOOL" "$RAW/$tag.load.txt")" || die "cannot parse $RAW/$tag.load.txt"
      python3 "$HERE/tools.py" window-record --parsed "$parsed" --row "$key" --scenario "$scenario" --round "$round" \
        --ticks "$WINDOW_TICKS" --hz "$CLK_TCK" --switches "$WINDOW_SWITCHES" >>"$RAW/results.jsonl"
    done
  done
  stop_all_servers
done

PYTHONPATH="$HERE" python3 - "$RAW/results.jsonl" "$BEFORE_REV" "${AFTER_REV:-work tree}" <<'PY'
import json, statistics, sys
from tools import cpu_us_per_request
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:  # window_record's rows are "<variant>:<build>"
    r.update(variant=r["row"].split(":")[0], build=r["row"].split(":")[1], rps=r["load"]["rps"], cpu_us=cpu_us_per_request(r))
keys = sorted({(r["variant"], r["scenario"]) for r in rows})
def of(v, s, b):
    return {r["round"]: r for r in rows if (r["variant"], r["scenario"], r["build"]) == (v, s, b)}
print(f"Before: {sys.argv[2]}, after: {sys.argv[3]}; io_uring, servers side by side, medians of {max(r['round'] for r in rows)} "
      "rounds; after ÷ before paired within each round.\n")
print("| row | scenario | before req/s | after req/s | after ÷ before | before µs CPU/req | after µs CPU/req | after ÷ before |")
print("|---|---|--:|--:|--:|--:|--:|--:|")
for v, s in keys:
    b, a = of(v, s, "before"), of(v, s, "after")
    paired = [n for n in b if n in a]
    med = lambda runs, k: statistics.median(r[k] for r in runs.values())
    ratio = lambda k: statistics.median(a[n][k] / b[n][k] for n in paired)
    print(f"| {v} | {s} | {med(b, 'rps'):,.0f} | {med(a, 'rps'):,.0f} | {ratio('rps'):.2f}× "
          f"| {med(b, 'cpu_us'):.2f} | {med(a, 'cpu_us'):.2f} | {ratio('cpu_us'):.2f}× |")
PY

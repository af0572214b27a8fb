#!/usr/bin/env bash
# What the .NET thread pool's idle spinning costs per request, per transport, side by side. A pool worker that runs out
# of work spins (sched_yield on a one-CPU server) for up to UnfairSemaphoreSpinLimit iterations before it sleeps; the
# runtime setting System.Threading.ThreadPool.UnfairSemaphoreSpinLimit=0 (environment:
# DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0) turns that off. Sockets and the io_uring default mode run requests on
# pool workers and pay it; Inline runs them on the ring thread and does not.
#
#   loadtests/threadpool-spin.sh     # Sockets and io_uring default, each with and without the spin; io_uring Inline
#
# Every server of a round is started side by side on SERVER_CPU and warmed WARMUP s; each scenario is then measured on
# every server in turn (SCENARIO_WARMUP s of warm-up, DURATION s measured), the order reversing between rounds; the
# load generator runs on CLIENT_CPU. Prints one Markdown table of medians: req/s, server CPU µs per request (and as a
# multiple of Inline's), context switches per request.
# Knobs: SCENARIOS="fixedrate-64x400 plaintext-c64" DURATION=10 WARMUP=12 SCENARIO_WARMUP=2 ROUNDS=3
#        ROWS="sockets:default sockets:default+nospin iouring:default iouring:default+nospin iouring:inline"
#        (a row is transport:variant, "+nospin" adding DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0 to its server,
#        "+spinN" that variable set to N: a CLR setting, read as hexadecimal; "+inlinecompletions" adding
#        DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1). With a row "sockets:inline..." (UnsafePreferInlineScheduling)
#        the table adds "× own inline": each row against its own transport's inline row, what the hand-off to the
#        thread pool costs each transport:
#        ROWS="sockets:default+nospin sockets:inline+inlinecompletions iouring:default+nospin iouring:inline"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SCENARIOS="${SCENARIOS:-fixedrate-64x400 plaintext-c64}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-12}"
SCENARIO_WARMUP="${SCENARIO_WARMUP:-2}"
ROUNDS="${ROUNDS:-3}"
ROWS="${ROWS:-sockets:default sockets:default+nospin iouring:default iouring:default+nospin iouring:inline}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
RAW="$HERE/results/raw/threadpool-spin-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RAW"

require_commands dotnet taskset curl wrk h2load openssl ss
for s in $SCENARIOS; do
  case "$(scenario_kind "$s")" in http1 | fixedrate) ;; *) die "threadpool-spin.sh measures HTTP/1.1 scenarios only, not $s" ;; esac
done
build_server
make_certificate "$RAW"
trap stop_all_servers EXIT

log "before the run: $(uptime) (measure on a quiet machine: load under 0.5, no builds or suites running)"
order="$ROWS"
for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS: $order"
  for row in $order; do
    transport="${row%%:*}" variant="${row#*:}" env=()
    case "$variant" in
      *+nospin) env=(DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0) ;;
      *+spin[0-9]*) env=("DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=${variant##*+spin}") ;;
      *+inlinecompletions) env=(DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1) ;;
    esac
    start_server "$transport" "${variant%+*}" "$RAW/r$round-$transport-$variant.server.log" "${env[@]}" \
      || die "the server refused the options of $variant"
    park_server "$row"
    warm_for plaintext-c64 "$WARMUP" "$RAW/r$round-$transport-$variant.warmup.txt"
  done
  for scenario in $SCENARIOS; do
    for row in $order; do
      use_server "$row"
      tag="r$round-${row/:/-}-$scenario"
      measure_cpu_window "$scenario" "$tag"
      parsed="$(python3 "$HERE/tools.py" "parse-$WINDOW_TOOL" "$RAW/$tag.load.txt")" || die "cannot parse $RAW/$tag.load.txt"
      python3 "$HERE/tools.py" window-record --parsed "$parsed" --row "$row" --scenario "$scenario" --round "$round" \
        --ticks "$WINDOW_TICKS" --hz "$CLK_TCK" --switches "$WINDOW_SWITCHES" >>"$RAW/rows.jsonl"
    done
  done
  stop_all_servers
  order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
done

python3 "$HERE/tools.py" spin-table "$RAW/rows.jsonl" --rounds "$ROUNDS" --duration "$DURATION"
log "raw: $RAW"

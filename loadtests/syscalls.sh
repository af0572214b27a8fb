#!/usr/bin/env bash
# Syscalls per request of the server, for Sockets, io_uring default and io_uring Inline, under load:
#
#   loadtests/syscalls.sh            # plaintext-c64 and pipelined-c256; prints Markdown tables (top syscalls + total)
#
# Counts with `perf stat -e 'syscalls:sys_enter_*' -p PID` (kernel tracepoints: cheaper than strace, which stops the
# server at every syscall, but they still slow every syscall of the traced server) around a load of WINDOW s, after
# WARMUP s of load on a fresh server and an untraced window of WINDOW s that counts context switches
# (`perf stat -e context-switches`); requests = the requests the traced load completed. Needs root (or perf_event_paranoid <= -1)
# and tracefs. Knobs: SCENARIOS="plaintext-c64 pipelined-c256" ROWS="sockets:default iouring:default iouring:inline"
# WARMUP=10 WINDOW=5 TOP=8 PORT SERVER_CPU CLIENT_CPU RAW_DIR (raw outputs; default loadtests/results/raw/syscalls-<time>).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SCENARIOS="${SCENARIOS:-plaintext-c64 pipelined-c256}"
ROWS="${ROWS:-sockets:default iouring:default iouring:inline}"
WARMUP="${WARMUP:-10}"
WINDOW="${WINDOW:-5}"
TOP="${TOP:-8}"
BASE_TOOL=wrk
# shellcheck source=lib.sh
source "$HERE/lib.sh"
RAW="${RAW_DIR:-$HERE/results/raw/syscalls-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RAW"

require_commands dotnet python3 taskset curl wrk perf openssl ss
perf stat -e 'syscalls:sys_enter_getpid' -- true >/dev/null 2>&1 \
  || die "perf cannot read the syscalls:* tracepoints here (needs root or perf_event_paranoid <= -1, and tracefs)"
[[ -n "${SERVER_DLL:-}" ]] || build_server
make_certificate "$RAW"
trap stop_server EXIT

for scenario in $SCENARIOS; do
  for row in $ROWS; do
    transport="${row%%:*}"; variant="${row#*:}"; tag="$scenario-$variant-$transport"
    start_server "$transport" "$variant" "$RAW/$tag.server.log" || { log "skipping $tag: options refused"; continue; }
    run_load "$scenario" "$WARMUP" "$RAW/$tag.warmup.txt" >/dev/null
    # Context switches first, without the tracepoints: tracing every syscall slows the server's syscalls, which
    # changes how its threads take turns (on plaintext c64 the default mode counted 0.09 switches per request under
    # the tracepoints and 0.3-0.6 without, in the same load).
    run_load "$scenario" "$((WINDOW + 2))" "$RAW/$tag.switches-load.txt" >"$RAW/$tag.switches-load.tool" &
    load_pid=$!
    sleep 1
    perf stat -x, -e context-switches -p "$SERVER_PID" -o "$RAW/$tag.switches.csv" -- sleep "$WINDOW" >/dev/null 2>&1 \
      || log "perf stat failed for $tag (see $RAW/$tag.switches.csv)"
    wait "$load_pid"
    # Then the syscalls, counted around a whole load of WINDOW s, so that they and the load's request count cover
    # the same requests (the few syscalls of the idle half-seconds around it are counted too).
    perf stat -x, -e 'syscalls:sys_enter_*' -p "$SERVER_PID" -o "$RAW/$tag.perf.csv" -- sleep "$((WINDOW + 1))" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
    run_load "$scenario" "$WINDOW" "$RAW/$tag.load.txt" >"$RAW/$tag.load.tool"
    wait "$perf_pid" || log "perf stat failed for $tag (see $RAW/$tag.perf.csv)"
    stop_server
    log "  $tag: $(grep -m1 -E 'Requests/sec|finished in' "$RAW/$tag.load.txt" || echo 'no requests/s')"
  done
done

python3 - "$RAW" "$WINDOW" "$TOP" "$SCENARIOS" "$ROWS" "$HERE" <<'PY'
import os, sys
raw, window, top, scenarios, rows = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
sys.path.insert(0, sys.argv[6])
import tools

def load_result(name):
    """The load's requests and req/s, by the parser of the tool run_load used (it wrote the tool's name beside)."""
    tool = open(os.path.join(raw, name + ".tool")).read().strip()
    return getattr(tools, f"parse_{tool}")(open(os.path.join(raw, name + ".txt")).read())

titles = {"sockets:default": "Sockets", "iouring:default": "io_uring default", "iouring:inline": "io_uring Inline",
          "iouring:ringsends": "io_uring ring-only sends"}
print(f"Server syscalls per request (`perf stat -e 'syscalls:sys_enter_*' -p PID` around a load of {window:g} s; requests = "
      "the requests that load completed). Top syscalls by count and the total of all. Tracing every syscall slows the "
      "server's syscalls and so changes how much each turn of its threads batches: these counts describe the server "
      "under that tracing. The server's context switches per request come from an untraced window of the same load "
      f"just before (`perf stat -e context-switches -p PID`, {window:g} s, requests = the load's req/s x window), as in "
      "the CPU table.")
for sc in scenarios:
    cols = {}
    for row in rows:
        transport, variant = row.split(":")
        tag = f"{sc}-{variant}-{transport}"
        try:
            load, switches_load = load_result(tag + ".load"), load_result(tag + ".switches-load")
            counts, switches = {}, None
            for line in open(os.path.join(raw, tag + ".perf.csv")):
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_") and parts[0].isdigit():
                    counts[parts[2][len("syscalls:sys_enter_"):]] = int(parts[0])
            for line in open(os.path.join(raw, tag + ".switches.csv")):
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[2] == "context-switches" and parts[0].isdigit():
                    switches = int(parts[0])
        except (OSError, SystemExit):  # a file missing, or a load whose output has no summary (the parsers exit)
            continue
        requests = float(load["requests"])
        if not requests or not counts:
            continue
        per_switch = switches / (switches_load["rps"] * window) if switches_load["rps"] and switches is not None else None
        cols[row] = ({k: v / requests for k, v in counts.items()}, requests, per_switch)
    if not cols:
        print(f"\n{sc}: no data")
        continue
    names = sorted({k for c, *_ in cols.values() for k in c}, key=lambda k: -max(c.get(k, 0) for c, *_ in cols.values()))
    names = [n for n in names if max(c.get(n, 0) for c, *_ in cols.values()) > 0][:top]
    print(f"\n**{sc}**\n")
    print("| syscall | " + " | ".join(titles.get(r, r) for r in cols) + " |")
    print("|---|" + "--:|" * len(cols))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{c.get(n, 0):.3f}" for c, *_ in cols.values()) + " |")
    print("| **total** | " + " | ".join(f"**{sum(c.values()):.3f}**" for c, *_ in cols.values()) + " |")
    print("| context switches (untraced) | " + " | ".join("–" if x is None else f"{x:.3f}" for _, _, x in cols.values()) + " |")
    print("| requests counted | " + " | ".join(f"{r:,.0f}" for _, r, _ in cols.values()) + " |")
PY

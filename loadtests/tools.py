#!/usr/bin/env python3
"""Helpers for loadtests/run.sh (standard library only).

  tools.py verify --port P [--download]       TechEmpower-verifier-style checks of /plaintext, /json (and /download)
  tools.py parse-wrk FILE                       wrk --latency output -> JSON on stdout
  tools.py parse-bombardier FILE                bombardier -o json output -> JSON on stdout
  tools.py parse-h2load FILE                    h2load output -> JSON on stdout
  tools.py record ...                           one measurement (parsed tool output + CPU, memory, machine load) -> JSONL
  tools.py starvation-line ...                  one starvation probe's JSON -> JSONL line
  tools.py meta ...                             the run's conditions -> meta.json
The report and the charts: loadtests/report.py.
"""
import argparse, json, math, os, re, socket, statistics, sys, time
from email.utils import parsedate_to_datetime

# ----------------------------------------------------------------------------------------------------------- verify

def http_get(port, path, host="127.0.0.1", pipeline=1, timeout=10.0):
    """Raw HTTP/1.1 GETs on one keep-alive connection; returns a list of (status, headers{lower: [values]}, body)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode()
        s.sendall(req * pipeline)
        buf = b""
        out = []
        while len(out) < pipeline:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise AssertionError(f"{path}: connection closed after {len(out)} of {pipeline} responses")
                buf += chunk
                continue
            lines = buf[:end].decode("latin-1").split("\r\n")
            m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
            if not m:
                raise AssertionError(f"{path}: bad status line {lines[0]!r}")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), []).append(value.strip())
            if "transfer-encoding" in headers:
                raise AssertionError(f"{path}: chunked response; TechEmpower wants Content-Length")
            if "content-length" not in headers:
                raise AssertionError(f"{path}: no Content-Length header")
            length = int(headers["content-length"][0])
            while len(buf) < end + 4 + length:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise AssertionError(f"{path}: body truncated")
                buf += chunk
            out.append((int(m.group(1)), headers, buf[end + 4:end + 4 + length]))
            buf = buf[end + 4 + length:]
        return out
    finally:
        s.close()


def check_common(path, status, headers, body, content_type):
    problems = []
    if status != 200:
        problems.append(f"status {status}, expected 200")
    for name in ("server", "date", "content-type", "content-length"):
        if name not in headers:
            problems.append(f"missing header {name}")
        elif len(headers[name]) != 1:
            problems.append(f"header {name} appears {len(headers[name])} times")
    if "content-type" in headers:
        ct = headers["content-type"][0].lower()
        if ct.split(";")[0].strip() != content_type:
            problems.append(f"Content-Type {ct!r}, expected {content_type!r}")
    if "content-length" in headers and int(headers["content-length"][0]) != len(body):
        problems.append(f"Content-Length {headers['content-length'][0]} but body has {len(body)} bytes")
    if "date" in headers:
        try:
            d = parsedate_to_datetime(headers["date"][0])
            if abs(d.timestamp() - time.time()) > 5:
                problems.append(f"Date {headers['date'][0]!r} is off by more than 5 s")
        except Exception:
            problems.append(f"Date {headers['date'][0]!r} is not an HTTP date")
    return [f"{path}: {p}" for p in problems]


def verify(port, download):
    problems = []
    checks = []
    (status, h, body), = http_get(port, "/plaintext")
    problems += check_common("/plaintext", status, h, body, "text/plain")
    if body != b"Hello, World!":
        problems.append(f"/plaintext: body {body[:80]!r}, expected b'Hello, World!'")
    checks.append("/plaintext status, headers, body")

    (status, h, body), = http_get(port, "/json")
    problems += check_common("/json", status, h, body, "application/json")
    try:
        if json.loads(body) != {"message": "Hello, World!"}:
            problems.append(f"/json: body {body!r}")
        if body != b'{"message":"Hello, World!"}':
            problems.append(f"/json: body not compact: {body!r}")
    except ValueError:
        problems.append(f"/json: body is not JSON: {body[:80]!r}")
    checks.append("/json status, headers, body")

    responses = http_get(port, "/plaintext", pipeline=16)
    if len(responses) != 16 or any(r[0] != 200 or r[2] != b"Hello, World!" for r in responses):
        problems.append("/plaintext pipelined x16: wrong responses")
    checks.append("16 pipelined requests")

    first = http_get(port, "/plaintext")[0][1].get("date", [""])[0]
    time.sleep(1.3)
    second = http_get(port, "/plaintext")[0][1].get("date", [""])[0]
    if first == second:
        problems.append(f"Date did not change after 1.3 s: {first!r}")
    checks.append(f"Date changes ({first} -> {second})")

    if download:
        (status, h, body), = http_get(port, "/download?size=1048576")
        if status != 200 or len(body) != 1048576:
            problems.append(f"/download: status {status}, {len(body)} bytes, expected 200 and 1048576")
        checks.append("/download 1 MiB")
    return problems, checks


# ------------------------------------------------------------------------------------------------------------ parse

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(text):
    r = {"tool": "wrk"}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", text)
    if not m:
        raise SystemExit("parse-wrk: no 'requests in' line (did wrk run?)\n" + text[-2000:])
    r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        value = ms(m.group(1)) if m else None
        # wrk records latency per request() call, so with pipelining a whole batch is one sample and its high
        # percentiles can come out as 0.00us: report those as unavailable rather than as zero.
        r[key] = value if value else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    r["socket_errors_detail"] = m.group(0) if m else ""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def parse_bombardier(text):
    data = json.loads(text[text.index("{"):])
    res = data["result"]
    r = {"tool": "bombardier"}
    total = sum(res.get(k, 0) for k in ("req1xx", "req2xx", "req3xx", "req4xx", "req5xx", "others"))
    r["requests"] = res.get("req2xx", 0) + res.get("req3xx", 0)
    secs = res.get("timeTakenSeconds") or 0
    r["rps"] = (total / secs) if secs else res["rps"]["mean"]
    pcts = res.get("latency", {}).get("percentiles", {})
    r["p50_ms"] = pcts["50"] / 1000.0 if "50" in pcts else None  # bombardier reports microseconds
    r["p99_ms"] = pcts["99"] / 1000.0 if "99" in pcts else None
    r["socket_errors"] = sum(e.get("count", 0) for e in res.get("errors") or []) + res.get("others", 0)
    r["socket_errors_detail"] = "; ".join(f"{e.get('description')}: {e.get('count')}" for e in res.get("errors") or [])
    r["non2xx"] = total - r["requests"] - res.get("others", 0)
    return r


def parse_h2load(text):
    """h2load's summary: req/s, succeeded requests, failures; mean request time (h2load prints no percentiles)."""
    r = {"tool": "h2load"}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    if not m:
        raise SystemExit("parse-h2load: no 'finished in' line (did h2load run?)\n" + text[-2000:])
    r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    total, started, done, succeeded, failed, errored, timeout = (int(x) for x in m.groups())
    m2 = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    ok = int(m2.group(1)) + int(m2.group(2))
    r["requests"] = ok
    r["non2xx"] = int(m2.group(3)) + int(m2.group(4))
    # With -D, requests still in flight when the window closes are "started" but not "done": not errors.
    r["socket_errors"] = errored + timeout + max(failed - (started - done), 0)
    r["socket_errors_detail"] = f"failed {failed}, errored {errored}, timeout {timeout}"
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    r["mean_ms"] = ms(m.group(3)) if m else None
    r["p50_ms"] = None
    r["p99_ms"] = None
    return r


def record(a):
    """One measurement: the tool's parsed figures plus server CPU, load generator CPU, the rest of the machine, memory."""
    r = json.loads(a.parsed)
    wall = a.wall[1] - a.wall[0]
    cpu = (a.cpu_ticks[1] - a.cpu_ticks[0]) / a.hz
    machine = (a.machine_ticks[1] - a.machine_ticks[0]) / a.hz
    r.update(tag=a.tag, round=a.round, scenario=a.scenario, variant=a.variant, transport=a.transport, cpu_s=cpu, wall_s=wall,
             client_cpu_s=a.client_cpu, other_cpu=max(machine - cpu - a.client_cpu, 0.0) / wall if wall else None,
             context_switches=a.context_switches if a.context_switches >= 0 else None,
             probe_ms=a.probe_ms if a.probe_ms >= 0 else None, loadavg=a.loadavg, vmhwm_kib=a.vmhwm_kib, vmrss_kib=a.vmrss_kib, note=a.note, transport_line=a.transport_line)
    print(json.dumps(r))
    us = cpu / r["requests"] * 1e6 if r["requests"] else float("nan")
    lat = f"p99 {r['p99_ms']:8.2f} ms" if r.get("p99_ms") else (f"mean {r['mean_ms']:7.2f} ms" if r.get("mean_ms") else "")
    print(f"  {a.tag:<46} {r['tool']:<7} {r['rps']:>11,.0f} req/s  {us:8.2f} µs CPU/req  {lat:<17} other CPU "
          f"{r['other_cpu'] or 0:4.2f}  probe {a.probe_ms:5.0f} ms  err {r['socket_errors']} non2xx {r['non2xx']} {a.note}",
          file=sys.stderr)
    return 0 if r["socket_errors"] == 0 and r["non2xx"] == 0 and r["requests"] > 0 else 1


def starvation_line(a):
    r = json.load(open(a.file))
    r.update(round=a.round, transport=a.transport, loadavg=a.loadavg, transport_line=a.transport_line)
    print(json.dumps(r))
    ka = [x for x in r["keepalive_ms"] if x is not None]
    nc = [x for x in r["new_connection_ms"] if x is not None]
    def p(v, q):
        return f"{percentile(v, q):,.0f}" if v else "–"
    print(f"  starvation r{a.round} {a.transport:<8} keep-alive p50 {p(ka, 50)} ms p90 {p(ka, 90)} ms; new connection p50 "
          f"{p(nc, 50)} ms p90 {p(nc, 90)} ms; unanswered {r['keepalive_ms'].count(None)} + {r['new_connection_ms'].count(None)}",
          file=sys.stderr)
    return 0


def percentile(values, q):
    """Nearest-rank percentile; None (an unanswered probe) sorts above every answer."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: (v is None, v or 0))
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def meta(a):
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.lower().startswith(("model name", "cpu model", "hardware")):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((l.split(":")[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
    import platform, subprocess
    json.dump(dict(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), commit=a.commit, dirty=a.dirty == "true",
                   nproc=str(os.cpu_count()), cpu_model=cpu, kernel=platform.release(), mem="RAM " + mem,
                   dotnet=subprocess.run(["dotnet", "--version"], capture_output=True, text=True).stdout.strip(),
                   server_cpu=a.server_cpu, client_cpu=a.client_cpu, tool_summary=a.tools, rounds=a.rounds, duration=a.duration,
                   warmup=a.warmup, protocol_warmup=a.protocol_warmup, warmup_chunk=a.warmup_chunk, scenario_warmup=a.scenario_warmup, variants=a.variants.split(), quick=a.quick == "1",
                   starve_rounds=a.starve[0], starve_seconds=a.starve[1], starve_timeout=a.starve[2],
                   other_cpu_before=a.other_cpu_before, uptime_before=a.uptime_before.strip(),
                   probe_before_ms=a.probe_before if a.probe_before >= 0 else None, side_by_side=a.side_by_side == 1),
              open(a.out, "w"))
    return 0


def window_record(a):
    """One measured window of a side-by-side script (threadpool-spin.sh, compare-builds.sh): the load tool's figures,
    the server's CPU seconds and context switches, under the script's row name."""
    r = dict(row=a.row, scenario=a.scenario, round=a.round, cpu_s=a.ticks / a.hz,
             switches=int(a.switches) if a.switches.isdigit() else None, load=json.loads(a.parsed))
    print(json.dumps(r))
    load = r["load"]
    print(f"  r{a.round} {a.row:<24} {a.scenario:<18} {load['rps']:>10,.0f} req/s {cpu_us_per_request(r):7.2f} µs CPU/request "
          f"err {load['socket_errors']} non2xx {load['non2xx']}", file=sys.stderr)
    return 0


def cpu_us_per_request(window):
    """A window_record's server CPU per response, in µs (NaN without responses)."""
    requests = window["load"]["requests"]
    return window["cpu_s"] / requests * 1e6 if requests else float("nan")


SPIN_BASE_TITLES = {"sockets:default": "Sockets", "sockets:inline": "Sockets, UnsafePreferInlineScheduling",
                    "iouring:default": "io_uring default", "iouring:inline": "io_uring Inline"}
# Row modifiers of threadpool-spin.sh other than the spin limit (+nospin, +spinN).
SPIN_MODIFIER_TITLES = {"inlinecompletions": "inline socket completions"}


def spin_row_title(row):
    """"iouring:default+spin4" -> "io_uring default, spin limit 4" (+nospin: limit 0)."""
    base, _, modifier = row.partition("+")
    title = SPIN_BASE_TITLES.get(base, base)
    if modifier in SPIN_MODIFIER_TITLES:
        return f"{title}, {SPIN_MODIFIER_TITLES[modifier]}"
    limit = "0" if modifier == "nospin" else modifier.removeprefix("spin")
    return title + (f", spin limit {limit}" if modifier else "")


def spin_table(rows, rounds, duration):
    """threadpool-spin.sh's table: medians over rounds per scenario and row; CPU per request also as a multiple of the
    Inline row's, paired within each round (the median of the rounds' ratios: the machine's speed drifts between
    rounds, and a round's servers are measured close together). Returns (markdown, failed): failed when any window had
    socket errors, non-2xx or no responses."""
    by = {}
    for r in rows:
        by.setdefault((r["scenario"], r["row"]), []).append(r)
    failed = any(r["load"]["socket_errors"] or r["load"]["non2xx"] or not r["load"]["requests"] for r in rows)
    us = cpu_us_per_request
    # With a Sockets row that runs requests inline too, each row is also set against its own transport's inline row:
    # what the hand-off to the thread pool costs each transport.
    sockets_inline = next((row for _, row in by if row.startswith("sockets:inline")), None)
    own = sockets_inline is not None
    lines = [f"The thread pool's idle spin: server CPU per request with and without "
             f"DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0; {duration} s windows, servers side by side, medians of "
             f"{rounds} rounds (\u00d7 Inline's: the median of each round's ratio"
             + (f"; × own inline: against {spin_row_title(sockets_inline)} for Sockets rows, io_uring Inline for io_uring rows"
                if own else "") + ").\n",
             "| scenario | row | req/s | µs CPU/request | × Inline's |" + (" × own inline |" if own else "")
             + " context switches/request |",
             "|---|---|--:|--:|--:|" + ("--:|" if own else "") + "--:|"]

    def paired(runs, reference):
        ratios = [us(r) / reference[r["round"]] for r in runs if reference.get(r["round"])]
        return f"{statistics.median(ratios):.2f}×" if ratios else "–"

    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        inline_us = {r["round"]: us(r) for r in by.get((scenario, "iouring:inline"), [])}
        sockets_inline_us = {r["round"]: us(r) for r in by.get((scenario, sockets_inline), [])}
        for (s, row), runs in by.items():
            if s != scenario:
                continue
            cpu = statistics.median(us(r) for r in runs)
            switches = [r["switches"] / r["load"]["requests"] for r in runs if r["switches"] is not None and r["load"]["requests"]]
            own_cell = f" {paired(runs, sockets_inline_us if row.startswith('sockets') else inline_us)} |" if own else ""
            lines.append(f"| {scenario} | {spin_row_title(row)} | {statistics.median(r['load']['rps'] for r in runs):,.0f} "
                         f"| {cpu:.2f} | {paired(runs, inline_us)} |{own_cell} "
                         f"{f'{statistics.median(switches):.2f}' if switches else '–'} |")
    return "\n".join(lines), failed


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify"); v.add_argument("--port", type=int, required=True); v.add_argument("--download", action="store_true")
    p = sub.add_parser("parse-wrk"); p.add_argument("file")
    b = sub.add_parser("parse-bombardier"); b.add_argument("file")
    h = sub.add_parser("parse-h2load"); h.add_argument("file")
    r = sub.add_parser("record")
    for name in ("--parsed", "--scenario", "--variant", "--transport", "--note", "--transport-line", "--tag"):
        r.add_argument(name, required=name != "--note", default="")
    r.add_argument("--round", type=int, required=True); r.add_argument("--hz", type=float, required=True)
    for name in ("--cpu-ticks", "--wall", "--machine-ticks"):
        r.add_argument(name, type=float, nargs=2, required=True)
    for name in ("--client-cpu", "--loadavg"):
        r.add_argument(name, type=float, required=True)
    r.add_argument("--vmhwm-kib", type=int, required=True); r.add_argument("--vmrss-kib", type=int, required=True)
    r.add_argument("--context-switches", type=int, default=-1, help="-1: not counted (no perf)")
    r.add_argument("--probe-ms", type=float, default=-1, help="memprobe.c's time after the window; -1: not probed")
    st = sub.add_parser("starvation-line"); st.add_argument("--file", required=True); st.add_argument("--round", type=int, required=True)
    st.add_argument("--transport", required=True); st.add_argument("--loadavg", type=float, required=True)
    st.add_argument("--transport-line", default="")
    sr = sub.add_parser("window-record")
    for name in ("--parsed", "--row", "--scenario", "--switches"):
        sr.add_argument(name, required=name != "--switches", default="")
    sr.add_argument("--round", type=int, required=True); sr.add_argument("--ticks", type=float, required=True)
    sr.add_argument("--hz", type=float, required=True)
    spt = sub.add_parser("spin-table"); spt.add_argument("file")
    spt.add_argument("--rounds", type=int, required=True); spt.add_argument("--duration", type=int, required=True)
    m = sub.add_parser("meta")
    for name in ("--out", "--commit", "--dirty", "--tools", "--variants", "--quick", "--uptime-before"):
        m.add_argument(name, required=True)
    for name in ("--server-cpu", "--client-cpu", "--rounds", "--duration", "--warmup", "--protocol-warmup", "--warmup-chunk", "--scenario-warmup"):
        m.add_argument(name, type=int, required=True)
    m.add_argument("--starve", type=float, nargs=3, required=True); m.add_argument("--other-cpu-before", type=float, required=True)
    m.add_argument("--probe-before", type=float, default=-1, help="memprobe.c's time before the run; -1: not probed")
    m.add_argument("--side-by-side", type=int, default=0, help="1: every server of a round ran side by side, measured in turn")
    a = ap.parse_args()
    if a.cmd == "verify":
        try:
            problems, checks = verify(a.port, a.download)
        except (OSError, AssertionError) as e:
            problems, checks = [f"request failed: {e}"], []
        for c in checks:
            print(f"  checked: {c}")
        for p_ in problems:
            print(f"  FAIL: {p_}")
        sys.exit(1 if problems else 0)
    if a.cmd == "parse-wrk":
        print(json.dumps(parse_wrk(open(a.file).read())))
    elif a.cmd == "parse-bombardier":
        print(json.dumps(parse_bombardier(open(a.file).read())))
    elif a.cmd == "parse-h2load":
        print(json.dumps(parse_h2load(open(a.file).read())))
    elif a.cmd == "record":
        sys.exit(record(a))
    elif a.cmd == "starvation-line":
        sys.exit(starvation_line(a))
    elif a.cmd == "window-record":
        sys.exit(window_record(a))
    elif a.cmd == "spin-table":
        table, failed = spin_table([json.loads(line) for line in open(a.file) if line.strip()], a.rounds, a.duration)
        print(table)
        sys.exit(1 if failed else 0)
    elif a.cmd == "meta":
        sys.exit(meta(a))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Helpers for loadtests/run.sh (standard library only).

  tools.py verify --port P [--download]       TechEmpower-verifier-style checks of /plaintext, /json (and /download)
  tools.py parse-wrk FILE                       wrk --latency output -> JSON on stdout
  tools.py parse-bombardier FILE                bombardier -o json output -> JSON on stdout
  tools.py report --raw DIR --out FILE.md [--out ...] --svg FILE.svg --title T   Markdown table + SVG chart
"""
import argparse, json, os, re, socket, statistics, sys, time
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


# ----------------------------------------------------------------------------------------------------------- report

SCENARIO_ORDER = ["plaintext-c64", "plaintext-c256", "pipelined-c256", "pipelined-c1024", "json-c64", "json-c256",
                  "download-1mib-c16", "idle5000"]
TARGETS = {"plaintext-c64": 1.5, "pipelined-c256": 1.3, "pipelined-c1024": 1.3, "json-c64": 1.4, "download-1mib-c16": 1.0}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{suffix}"


def summarize(rows):
    """rows: JSON records of one scenario+mode+variant+transport over the rounds -> medians."""
    return {
        "rounds": len(rows),
        "rps": med([r["rps"] for r in rows]),
        "rps_all": [r["rps"] for r in rows],
        "p50_ms": med([r.get("p50_ms") for r in rows]),
        "p99_ms": med([r.get("p99_ms") for r in rows]),
        "cpu_per_100k": med([r["cpu_s"] / r["requests"] * 1e5 if r["requests"] else None for r in rows]),
        "hwm_mib": med([r["vmhwm_kib"] / 1024 for r in rows]),
        "rss_end_mib": med([r["vmrss_kib"] / 1024 for r in rows]),
        "cpu_util": med([r["cpu_s"] / r["wall_s"] if r["wall_s"] else None for r in rows]),
        "errors": sum(r["socket_errors"] for r in rows),
        "non2xx": sum(r["non2xx"] for r in rows),
        "tools": sorted({r["tool"] for r in rows}),
        "bytes_per_req": rows[0].get("bytes_per_request"),
        "transport_line": rows[-1].get("transport_line", ""),
    }


def report(args):
    records = []
    with open(os.path.join(args.raw, "results.jsonl")) as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    meta = json.load(open(os.path.join(args.raw, "meta.json")))
    groups = {}
    for r in records:
        groups.setdefault((r["mode"], r["variant"], r["scenario"]), {}).setdefault(r["transport"], []).append(r)

    def order(key):
        mode, variant, scenario = key
        return (["aspnet", "platform"].index(mode) if mode in ("aspnet", "platform") else 9,
                ["default", "tuned", "sqpoll", "incremental", "zerocopy", "registered"].index(variant)
                if variant in ("default", "tuned", "sqpoll", "incremental", "zerocopy", "registered") else 9,
                SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else 99, scenario)

    lines = []
    lines.append(f"# {args.title}")
    lines.append("")
    lines.append(f"- Run: {meta['started']} – commit `{meta['commit']}`{' (working tree had local changes)' if meta.get('dirty') else ''}")
    lines.append(f"- Machine: {meta['nproc']} CPU(s), {meta['cpu_model']}; kernel {meta['kernel']}; {meta['mem']}; .NET SDK {meta['dotnet']}")
    lines.append(f"- Server pinned to CPU {meta['server_cpu']}, load generator to CPU {meta['client_cpu']} (`taskset`); load tool: {meta['tool_summary']}")
    lines.append(f"- Rounds: {meta['rounds']} (order alternates io_uring/Sockets, Sockets/io_uring), {meta['duration']} s measured after "
                 f"{meta['warmup']} s of warm-up, a fresh server for every measurement; scheduling: {meta['scheduling']}; modes: {meta['modes']}")
    if meta.get("quick"):
        lines.append("- **QUICK smoke run** (1 round, short windows): indicative only, not a result.")
    if meta.get("load_note"):
        lines.append(f"- Note: {meta['load_note']}")
    lines.append("")
    lines.append("Variants: **default** = both transports with default options (io_uring: ApplicationScheduling=ThreadPool); "
                 "**tuned** = Sockets with UnsafePreferInlineScheduling + DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1 vs io_uring with "
                 "ApplicationScheduling=Inline; **sqpoll**, **incremental**, **zerocopy**, **registered** = io_uring in that advanced "
                 "mode (SqPoll with a 100 ms idle; IncrementalReceiveBuffers with 256 x 16 KiB; ZeroCopySendThreshold=16384; the same "
                 "plus RegisteredSendBufferSize=4 MiB) next to Sockets with default options: compare each with the io_uring default "
                 "row of the same scenario. Values are medians over the rounds; CPU = server utime+stime (from /proc/<pid>/stat) "
                 "in the measured window per 100k responses; peak RSS = VmHWM of that server process. Pipelined latencies are wrk's "
                 "per-batch figures (one sample per 16 requests); \"–\" means wrk reported none (it prints 0.00us for high "
                 "percentiles of pipelined runs).")
    lines.append("")
    lines.append("| mode | variant | scenario | io_uring req/s | Sockets req/s | **ratio** | target | p50 / p99 ms io_uring | p50 / p99 ms Sockets "
                 "| CPU s/100k io_uring | CPU s/100k Sockets | peak RSS MiB io_uring | peak RSS MiB Sockets | errors / non-2xx |")
    lines.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    chart = []
    failures = []
    notes = []
    for key in sorted(groups, key=order):
        mode, variant, scenario = key
        g = groups[key]
        u = summarize(g["iouring"]) if "iouring" in g else None
        s = summarize(g["sockets"]) if "sockets" in g else None
        ratio = (u["rps"] / s["rps"]) if u and s and s["rps"] else None
        cpu_ratio = (s["cpu_per_100k"] / u["cpu_per_100k"]) if u and s and u["cpu_per_100k"] and s["cpu_per_100k"] else None
        target = TARGETS.get(scenario) if variant == "default" and mode == "aspnet" else None
        errs = sum(x["errors"] + x["non2xx"] for x in (u, s) if x)
        if errs:
            failures.append(f"{mode}/{variant}/{scenario}: {errs} socket errors or non-2xx responses")
        tcell = "–"
        if target:
            met = ratio is not None and ratio >= target
            if scenario.startswith("download") and cpu_ratio is not None:
                met = met and cpu_ratio > 1.0
            tcell = f"{target:.1f}× {'✅' if met else '❌'}"
        if scenario == "idle5000" and u and s and variant == "default" and mode == "aspnet":
            met = u["hwm_mib"] <= s["hwm_mib"]
            tcell = f"RSS ≤ {'✅' if met else '❌'}"
        def lat(x):
            return f"{fmt(x['p50_ms'], 2)} / {fmt(x['p99_ms'], 2)}" if x else "–"
        lines.append("| " + " | ".join([
            mode, variant, scenario,
            fmt(u["rps"]) if u else "–", fmt(s["rps"]) if s else "–",
            f"**{ratio:.2f}×**" if ratio else "–", tcell,
            lat(u), lat(s),
            fmt(u["cpu_per_100k"], 2) if u else "–", fmt(s["cpu_per_100k"], 2) if s else "–",
            fmt(u["hwm_mib"], 0) if u else "–", fmt(s["hwm_mib"], 0) if s else "–",
            f"{(u['errors'] if u else 0) + (s['errors'] if s else 0)} / {(u['non2xx'] if u else 0) + (s['non2xx'] if s else 0)}",
        ]) + " |")
        if scenario.startswith("download") and u and s:
            size = 1 << 20
            def gib(x):
                return x["cpu_per_100k"] / 1e5 * (1 << 30) / size if x["cpu_per_100k"] else None
            notes.append(f"- {mode}/{variant}/{scenario}: io_uring {fmt(u['rps'] * size / (1 << 20), 0)} MiB/s at "
                         f"{fmt(gib(u), 3)} CPU s/GiB; Sockets {fmt(s['rps'] * size / (1 << 20), 0)} MiB/s at {fmt(gib(s), 3)} CPU s/GiB.")
        if scenario == "idle5000" and u and s:
            notes.append(f"- {mode}/{variant}/idle5000: RSS with the 5,000 idle connections open at the end of the window: io_uring "
                         f"{fmt(u['rss_end_mib'], 0)} MiB, Sockets {fmt(s['rss_end_mib'], 0)} MiB (peak {fmt(u['hwm_mib'], 0)} vs {fmt(s['hwm_mib'], 0)} MiB).")
        chart.append({"label": f"{scenario}" + ("" if variant == "default" else f" ({variant})") + ("" if mode == "aspnet" else " [platform]"),
                      "ratio": ratio, "cpu_ratio": cpu_ratio, "target": target})
    lines.append("")
    if notes:
        lines += notes
        lines.append("")
    lines.append("Server CPU utilisation during the window (CPU seconds per wall second; 1.0 = the whole pinned core):")
    lines.append("")
    lines.append("| mode | variant | scenario | io_uring | Sockets | req/s per round io_uring | req/s per round Sockets | load tool |")
    lines.append("|---|---|---|--:|--:|---|---|---|")
    for key in sorted(groups, key=order):
        mode, variant, scenario = key
        g = groups[key]
        u = summarize(g["iouring"]) if "iouring" in g else None
        s = summarize(g["sockets"]) if "sockets" in g else None
        lines.append("| " + " | ".join([mode, variant, scenario, fmt(u["cpu_util"], 2) if u else "–", fmt(s["cpu_util"], 2) if s else "–",
                                        ", ".join(fmt(v) for v in u["rps_all"]) if u else "–",
                                        ", ".join(fmt(v) for v in s["rps_all"]) if s else "–",
                                        ", ".join(sorted(set((u or {}).get("tools", []) + (s or {}).get("tools", []))))]) + " |")
    lines.append("")
    lines.append("Transports as the servers reported them at start:")
    lines.append("")
    for t in sorted({re.sub(r"listening on [^;]*; pid \d+; ", "", r.get("transport_line", "")) for r in records}):
        lines.append(f"- `{t}`")
    lines.append("")
    lines.append(f"![io_uring / Sockets]({os.path.basename(args.svg)})")
    lines.append("")
    if failures:
        lines.append("**RUN FAILED:** " + "; ".join(failures))
        lines.append("")
    text = "\n".join(lines)
    for out in args.out:
        with open(out, "w") as f:
            f.write(text)
    write_svg(args.svg, chart, args.title + (" (QUICK)" if meta.get("quick") else ""), meta)
    print(text)
    return 1 if failures else 0


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(path, items, title, meta):
    """A horizontal grouped bar chart: throughput ratio and CPU-efficiency ratio per scenario, a line at 1.0."""
    row_h, bar_h, left, right, top = 34, 12, 260, 40, 70
    width = 900
    plot_w = width - left - right
    vmax = max([2.0] + [x for i in items for x in (i["ratio"], i["cpu_ratio"], i["target"]) if x]) * 1.1
    height = top + row_h * len(items) + 60
    X = lambda v: left + plot_w * v / vmax
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{esc(title)}</text>',
         f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">{esc(meta["nproc"] + " CPUs, " + meta["cpu_model"] + ", Linux " + meta["kernel"] + ", commit " + meta["commit"])}</text>',
         f'<rect x="{left}" y="50" width="12" height="10" fill="#2b6cb0"/><text x="{left + 16}" y="59">req/s io_uring ÷ Sockets</text>',
         f'<rect x="{left + 190}" y="50" width="12" height="10" fill="#dd6b20"/><text x="{left + 206}" y="59">CPU per request Sockets ÷ io_uring (&gt;1: io_uring cheaper)</text>',
         f'<line x1="20" y1="55" x2="20" y2="65" stroke="black" stroke-width="3"/><text x="26" y="64">target (issue 4)</text>']
    step = 0.5 if vmax <= 4 else 1.0
    v = 0.0
    while v <= vmax:
        o.append(f'<line x1="{X(v):.1f}" y1="{top - 5}" x2="{X(v):.1f}" y2="{top + row_h * len(items)}" stroke="#e2e8f0"/>')
        o.append(f'<text x="{X(v):.1f}" y="{top + row_h * len(items) + 16}" text-anchor="middle" fill="#555">{v:.1f}×</text>')
        v += step
    o.append(f'<line x1="{X(1):.1f}" y1="{top - 5}" x2="{X(1):.1f}" y2="{top + row_h * len(items)}" stroke="#c53030" stroke-width="1.5" stroke-dasharray="4 3"/>')
    for i, it in enumerate(items):
        y = top + i * row_h
        o.append(f'<text x="{left - 8}" y="{y + bar_h + 4}" text-anchor="end">{esc(it["label"])}</text>')
        for j, (key, color) in enumerate((("ratio", "#2b6cb0"), ("cpu_ratio", "#dd6b20"))):
            val = it[key]
            by = y + j * (bar_h + 1)
            if val:
                o.append(f'<rect x="{left}" y="{by}" width="{max(X(val) - left, 1):.1f}" height="{bar_h}" fill="{color}"/>')
                o.append(f'<text x="{X(val) + 4:.1f}" y="{by + bar_h - 2}" font-size="11">{val:.2f}×</text>')
        if it["target"]:
            o.append(f'<line x1="{X(it["target"]):.1f}" y1="{y - 2}" x2="{X(it["target"]):.1f}" y2="{y + 2 * bar_h + 3}" stroke="black" stroke-width="3"/>')
    o.append(f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle" fill="#555">ratios of medians over the rounds; the dashed line marks parity (1.0×)</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify"); v.add_argument("--port", type=int, required=True); v.add_argument("--download", action="store_true")
    p = sub.add_parser("parse-wrk"); p.add_argument("file")
    b = sub.add_parser("parse-bombardier"); b.add_argument("file")
    r = sub.add_parser("report"); r.add_argument("--raw", required=True); r.add_argument("--out", action="append", required=True)
    r.add_argument("--svg", required=True); r.add_argument("--title", default="Kestrel.Transport.IoUring: io_uring vs Sockets")
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
    elif a.cmd == "report":
        sys.exit(report(a))


if __name__ == "__main__":
    main()

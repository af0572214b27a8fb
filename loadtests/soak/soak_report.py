#!/usr/bin/env python3
"""Turns one soak run (client CSV + summary JSON + server log) into an SVG chart and a Markdown summary.

Standard library only. Usage:
  soak_report.py --csv X.csv --json X.json --server-log X.log --svg X.svg --md latest.md
                 [--server-exit TEXT] [--client-exit N] [--meta KEY=VALUE ...]
Prints the verdict on the server log and exits 1 if the log holds unexpected entries.
"""
import argparse
import csv
import gzip
import json
import math
import os
import platform
import re
import subprocess
from collections import Counter
from xml.sax.saxutils import escape

# Server log entries that the deliberate resets cause, with the Sockets transport as well (checked A/B with
# KESTREL_IOURING_DISABLE=1): the sample's /echo and /ws handlers do not catch a client's reset, so Kestrel logs
# them as unhandled application exceptions [13]; after such an exception in /echo, Kestrel's automatic draining of
# the request body fails with "Reading is already in progress" [67].
EXPECTED = [
    ("Microsoft.AspNetCore.Server.Kestrel[13]", re.compile(
        r"ConnectionResetException|remote party closed the WebSocket connection without completing the close handshake"
        r"|Unexpected end of request content")),
    ("Microsoft.AspNetCore.Server.Kestrel[67]", re.compile(r"Reading is already in progress")),
]


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k != "phase":
                r[k] = float(v)
    return rows


def classify_server_log(path):
    """Counts log entries by level and category; splits fail/crit/warn entries into expected and unexpected."""
    counts, expected, unexpected = Counter(), Counter(), []
    if not path or not os.path.exists(path):
        return counts, expected, unexpected
    entry = None

    def close(e):
        if e is None:
            return
        level, category, text = e
        counts[f"{level}: {category}"] += 1
        if level in ("fail", "crit", "warn"):
            for cat, pattern in EXPECTED:
                if category == cat and pattern.search(text):
                    expected[category] += 1
                    return
            unexpected.append(f"{level}: {category}: {text.strip()[:600]}")

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        for line in f:
            m = re.match(r"^(trce|dbug|info|warn|fail|crit): (\S+)", line)
            if m:
                close(entry)
                entry = (m.group(1), m.group(2), "")
            elif entry is not None:
                entry = (entry[0], entry[1], entry[2] + line)
        close(entry)
    # The io_uring transport's one start-up line and the fall-back warning are not errors; a fall-back is caught by
    # run-soak.sh (no "io_uring transport started" line) and by the client ("served over io_uring" check).
    unexpected = [u for u in unexpected if not u.startswith("warn: Kestrel.Transport.IoUring[101]")]
    return counts, expected, unexpected


# ---- SVG ---------------------------------------------------------------------------------------------------------

def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    mag = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if (hi - lo) / step <= n:
            break
    ticks, i = [], math.ceil(lo / step - 1e-9)
    while i * step <= hi + step * 1e-6:
        ticks.append(round(i * step, 10))
        i += 1
    return ticks, step


def render_svg(rows, summary, title):
    W, left, right = 960, 70, 160
    panel_h, gap, top = 170, 45, 68
    # (title, series, zoom): zoom=False starts the axis at 0; True fits it to the data (small changes stay visible)
    panels = [
        ("Server memory (MB)", [("rss_kb", "RSS", "#d62728", 1 / 1024), ("rss_anon_kb", "RssAnon", "#ff9896", 1 / 1024),
                                ("vm_pin_kb", "VmPin (pinned)", "#9467bd", 1 / 1024)], False),
        ("Server file descriptors (/proc/PID/fd)", [("fds", "fds", "#1f77b4", 1)], True),
        ("Server TCP connections on the port, threads", [("server_conns", "TCP conns", "#17becf", 1),
                                                         ("threads", "threads", "#7f7f7f", 1)], False),
        ("Client throughput (per s)", [("req_rate", "HTTP exchanges", "#2ca02c", 1), ("ws_rate", "WS messages", "#98df8a", 1),
                                       ("reset_rate", "resets", "#ff7f0e", 1)], False),
    ]
    for i, r in enumerate(rows):
        if i == 0:
            r["req_rate"] = r["ws_rate"] = r["reset_rate"] = None
        else:
            dt = max(r["time"] - rows[i - 1]["time"], 1e-9)
            r["req_rate"] = (r["requests"] - rows[i - 1]["requests"]) / dt
            r["ws_rate"] = (r["ws_messages"] - rows[i - 1]["ws_messages"]) / dt
            r["reset_rate"] = (r["resets"] - rows[i - 1]["resets"]) / dt
    H = top + len(panels) * (panel_h + gap) + 20
    tmax = max(r["time"] for r in rows) or 1
    xt, _ = nice_ticks(0, tmax, 10)
    pw = W - left - right

    def X(t):
        return left + pw * t / tmax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{escape(title[0])}</text>',
           f'<text x="{W / 2}" y="42" text-anchor="middle" font-size="12">{escape(title[1])}</text>']
    base = summary.get("baseline") or {}
    end = summary.get("end") or {}
    warm_end = base.get("Time")
    load_end = summary.get("load_s")
    for p, (ptitle, series, zoom) in enumerate(panels):
        y0 = top + p * (panel_h + gap)
        vals = [r[k] * s for k, _, _, s in series for r in rows if r.get(k) is not None]
        extra = []
        if p == 0 and base:
            extra = [base["RssKb"] / 1024, (base["RssKb"] + summary.get("rss_tolerance_kb", 0)) / 1024]
        if p == 1 and base:
            extra = [base["Fds"], base["Fds"] + summary.get("fd_tolerance", 10)]
        if zoom:
            lo, hi = min(vals + extra), max(vals + extra)
            pad = max((hi - lo) * 0.1, 2)
            lo, hi = max(0, lo - pad), hi + pad
        else:
            lo, hi = 0, max(vals + extra + [1]) * 1.08
        yt, step = nice_ticks(lo, hi, 5)
        lo, hi = min(lo, yt[0]), max(hi, yt[-1])

        def Y(v, y0=y0, hi=hi):
            return y0 + panel_h - panel_h * (v - lo) / (hi - lo)

        out.append(f'<text x="{left}" y="{y0 - 8}" font-size="12" font-weight="bold">{escape(ptitle)}</text>')
        # phases: warm-up before the baseline, drain/settle after the load
        if warm_end:
            out.append(f'<rect x="{X(0):.1f}" y="{y0}" width="{X(warm_end) - X(0):.1f}" height="{panel_h}" fill="#f0f0f0"/>')
        if load_end:
            out.append(f'<rect x="{X(load_end):.1f}" y="{y0}" width="{X(tmax) - X(load_end):.1f}" height="{panel_h}" fill="#e8f0fa"/>')
        for t in yt:
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        for t in xt:
            out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{y0 + panel_h}" y2="{y0 + panel_h + 4}" stroke="#666"/>')
            out.append(f'<text x="{X(t):.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{t:g}</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{pw}" height="{panel_h}" fill="none" stroke="#666"/>')
        ly = y0 + 12
        for k, label, color, s in series:
            pts = [(X(r["time"]), Y(r[k] * s)) for r in rows if r.get(k) is not None]
            if pts:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="'
                           + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            out.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{left + pw + 32}" y="{ly}">{escape(label)}</text>')
            ly += 16
        if p == 0 and base:
            for v, label, dash in ((base["RssKb"] / 1024, "baseline RSS", "6,3"),
                                   ((base["RssKb"] + summary.get("rss_tolerance_kb", 0)) / 1024, "end limit", "2,3")):
                out.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#555" stroke-dasharray="{dash}"/>')
                out.append(f'<text x="{left + pw + 10}" y="{ly}" fill="#555">{"- - " if dash == "6,3" else "· · "}{label} {v:.0f}</text>')
                ly += 16
        if p == 1 and base:
            for v, label, dash in ((base["Fds"], "baseline fds", "6,3"), (base["Fds"] + summary.get("fd_tolerance", 10), "end limit", "2,3")):
                out.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#555" stroke-dasharray="{dash}"/>')
                out.append(f'<text x="{left + pw + 10}" y="{ly}" fill="#555">{"- - " if dash == "6,3" else "· · "}{label} {v:.0f}</text>')
                ly += 16
        if end and p in (0, 1):
            k, s = ("RssKb", 1 / 1024) if p == 0 else ("Fds", 1)
            out.append(f'<circle cx="{X(end["Time"]):.1f}" cy="{Y(end[k] * s):.1f}" r="4" fill="none" stroke="black"/>')
            out.append(f'<text x="{left + pw + 10}" y="{ly}">○ end {end[k] * s:.0f}</text>')
    y_last = top + len(panels) * (panel_h + gap) - gap + 32
    out.append(f'<text x="{left + pw / 2}" y="{y_last}" text-anchor="middle">seconds since the load started '
               f'(grey: warm-up before the baseline sample; blue: load stopped, draining and settling)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- Markdown ----------------------------------------------------------------------------------------------------

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001 - machine facts are best effort
        return "?"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpu": f"{cpu} x {os.cpu_count()}",
        "memory": mem,
        "dotnet": sh("dotnet --version"),
        "runtime": sh("dotnet --list-runtimes | grep Microsoft.AspNetCore.App | tail -1"),
    }


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def server_stopped_cleanly(meta):
    return meta.get("server_exit", "") in ("", "exited with code 0", "exited with code 143")


def render_md(rows, s, args, log_counts, log_expected, log_unexpected, meta):
    m = machine()
    m.update(meta)
    base, end, idle = s.get("baseline") or {}, s.get("end") or {}, s.get("idle") or {}
    verdict = "PASSED" if s["passed"] and not log_unexpected and server_stopped_cleanly(meta) else "FAILED"
    wl = s["workloads"]
    L = []
    L.append(f"# Soak run {meta.get('stamp', '')}: {verdict}")
    L.append("")
    L.append(f"Mixed load against `samples/IoUringSample` over the io_uring transport for **{s['load_s']:.0f} s** "
             f"(configured {s['duration_configured_s']} s; warm-up {s['warmup_s']} s, end sample {s['settle_s']} s after the load stopped), "
             f"sampled every {s['interval_s']} s. Produced by `loadtests/soak/run-soak.sh`; "
             f"chart [`{os.path.basename(args.svg)}`]({os.path.basename(args.svg)}), samples [`{os.path.basename(args.csv)}`]({os.path.basename(args.csv)}).")
    L.append("")
    L.append(f"![RSS and fd count over time]({os.path.basename(args.svg)})")
    L.append("")
    L.append("## Load")
    L.append("")
    L.append("| workload | workers | completed | unexpected errors | data moved |")
    L.append("|---|---:|---:|---:|---:|")
    names = {
        "KeepAlive": "keep-alive `GET /` (one pooled HttpClient)",
        "Churn": "connection churn: raw `GET /`, `Connection: close`, one connection each",
        "Upload": f"uploads to `/echo`, 0-{s['max_upload_bytes'] // 1048576} MiB, SHA-256 of echo = SHA-256 of upload",
        "WebSocket": f"WebSocket sessions on `/ws` ({s['ws_messages']} messages of 0-{s['max_ws_message_bytes'] // 1024} KiB echoed and hashed)",
        "Reset": "clients that reset (SO_LINGER 0 + close = RST): expected",
    }
    for k, v in wl.items():
        L.append(f"| {names.get(k, k)} | {v['workers']} | {v['ok']:,} | {v['unexpected_errors']} | {v['bytes'] / 1048576:,.0f} MiB |")
    L.append("")
    L.append(f"HTTP exchanges that completed and checked out: **{s['requests']:,}**; resets performed: **{s['resets']:,}** "
             f"({', '.join(f'{k} {v:,}' for k, v in s['reset_kinds'].items())}).")
    L.append("")
    L.append(f"**Unexpected errors: {s['unexpected_errors']}**" + ("" if not s["error_kinds"] else ":"))
    for k, v in s["error_kinds"].items():
        L.append(f"- {v} x `{k}`")
    L.append("")
    L.append("## Server process")
    L.append("")
    L.append("| sample | time | RSS | RssAnon | VmPin | fds | TCP conns on port | threads |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, x in (("idle, before the load", idle), ("baseline (after warm-up)", base), ("end (idle again)", end)):
        if x:
            L.append(f"| {label} | {x['Time']:.0f} s | {mb(x['RssKb'])} | {mb(x['RssAnonKb'])} | {x['VmPinKb']} kB | {x['Fds']} | {x['ServerConnections']} | {x['Threads']} |")
    if rows:
        peak = max(rows, key=lambda r: r["rss_kb"])
        L.append(f"| peak RSS | {peak['time']:.0f} s | {mb(peak['rss_kb'])} | {mb(peak['rss_anon_kb'])} | {peak['vm_pin_kb']:.0f} kB | {peak['fds']:.0f} | {peak['server_conns']:.0f} | {peak['threads']:.0f} |")
    L.append("")
    if s.get("baseline_fd_kinds") and s.get("end_fd_kinds"):
        idle_kinds = s.get("idle_fd_kinds") or {}
        L.append("Descriptors by kind, idle → baseline → end: " + ", ".join(
            f"{k} {idle_kinds.get(k, 0)} → {s['baseline_fd_kinds'].get(k, 0)} → {s['end_fd_kinds'].get(k, 0)}"
            for k in sorted(set(idle_kinds) | set(s["baseline_fd_kinds"]) | set(s["end_fd_kinds"]))) + ". "
            "\"file\" is mostly assemblies the runtime keeps open, a few more of them loaded on first use "
            "(e.g. WebSockets); the idle sample's sockets are the listener, the runtime's diagnostics socket and the client's "
            "probe connection.")
        L.append("")
    if idle and end and end["Threads"] > base.get("Threads", end["Threads"]):
        L.append(f"Threads: {idle['Threads']} idle, {base['Threads']} at the baseline, {end['Threads']} at the end. The thread "
                 "pool adds threads when its work items wait (more so when other processes hold the CPUs) and retires "
                 "them after about 20 s idle, so the end sample, 10 s after the load, still holds them; their stacks are "
                 "part of the RSS growth over the baseline.")
        L.append("")
    t = s.get("trend_last_half")
    if t:
        L.append("Trend over the last half of the load (least-squares line): "
                 f"RSS {t['rss_kb']['Growth'] / 1024:+.1f} MB (R² {t['rss_kb']['R2']:.2f}), "
                 f"RssAnon {t['rss_anon_kb']['Growth'] / 1024:+.1f} MB (R² {t['rss_anon_kb']['R2']:.2f}), "
                 f"fds {t['fds']['Growth']:+.1f} (R² {t['fds']['R2']:.2f}), "
                 f"VmPin {t['vm_pin_kb']['Growth']:+.0f} kB, over {t['rss_kb']['Span']:.0f} s.")
        L.append("")
    L.append("## Checks")
    L.append("")
    for c in s["checks"]:
        L.append(f"- {'PASS' if c['Passed'] else '**FAIL**'} {c['Name']}: {c['Detail']}")
    L.append(f"- {'PASS' if not log_unexpected else '**FAIL**'} server log: {len(log_unexpected)} unexpected warn/fail/crit entries"
             + (f"; {sum(log_expected.values()):,} expected ones caused by the resets ("
                + ", ".join(f"{k} {v:,}" for k, v in log_expected.items()) + ")" if log_expected else ""))
    if meta.get("server_exit"):
        L.append(f"- {'PASS' if server_stopped_cleanly(meta) else '**FAIL**'} server shutdown (SIGTERM after the run, 10 s allowed): {meta['server_exit']}")
    L.append("")
    if log_unexpected:
        L.append("Unexpected server log entries (first 10):")
        L.append("")
        for u in log_unexpected[:10]:
            L.append("```")
            L.append(u)
            L.append("```")
        L.append("")
    L.append("The expected server log entries: the sample's `/echo` and `/ws` handlers do not catch a client's reset, so "
             "Kestrel logs each as an unhandled application exception (`[13]` with `ConnectionResetException`), and after "
             "one in `/echo` its automatic draining of the request body fails with \"Reading is already in progress\" "
             "(`[67]`). The Sockets transport logs the same two entries for the same resets (A/B run with "
             "`KESTREL_IOURING_DISABLE=1`), so they are Kestrel's behaviour, not the transport's.")
    L.append("")
    L.append("## How the limits were chosen")
    L.append("")
    L.append(f"- fds: the end sample may exceed the baseline by at most {s.get('fd_tolerance', 10)} (the baseline, under load, includes the open "
             "connections; the end sample is idle). The run also requires no TCP socket left on the server's port (from "
             "`/proc/net/tcp`), which catches a socket kept alive only by an io_uring fixed-file slot, invisible in `/proc/PID/fd`.")
    L.append(f"- RSS: the end sample may exceed the baseline by max(30 MB, 15%) (here {s.get('rss_tolerance_kb', 0) / 1024:.1f} MB): "
             f"the baseline is taken {s['warmup_s']} s into the load, before the server GC has sized its heaps for the steady mix and "
             "before the memory pool and thread pool reach their working set; the GC does not return that memory when the "
             "load stops. A leak shows instead as steady growth: the run fails if the least-squares line through the last "
             "half of the load rises by more than max(16 MB, 5% of baseline) with R² >= 0.5.")
    L.append("- Pinned memory: VmPin (pages the kernel pins and charges to the process: io_uring registered buffers, "
             "in-flight zero-copy sends) must not grow. With the sample's default options (no registered send buffers, "
             "zero-copy off) it stays 0; the provided receive-buffer ring and Kestrel's pinned block pool are ordinary "
             "process memory, counted in RssAnon (managed heaps and native allocations), which is charted and fitted.")
    L.append("")
    L.append("## Machine")
    L.append("")
    labels = {"commit": "commit built and soaked"}
    for k in ("kernel", "cpu", "memory", "dotnet", "runtime", "commit", "pinning", "note"):
        if m.get(k):
            L.append(f"- {labels.get(k, k)}: {m[k]}")
    L.append(f"- seed: {s['seed']} (re-run the same mix with `SOAK_ARGS=\"--seed {s['seed']}\"`)")
    L.append("")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--server-log")
    ap.add_argument("--svg", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--meta", action="append", default=[], help="KEY=VALUE shown in the Markdown")
    args = ap.parse_args()
    meta = dict(kv.split("=", 1) for kv in args.meta)

    rows = read_csv(args.csv)
    with open(args.json) as f:
        summary = json.load(f)
    log_counts, log_expected, log_unexpected = classify_server_log(args.server_log)

    verdict = "PASSED" if summary["passed"] and not log_unexpected and server_stopped_cleanly(meta) else "FAILED"
    title = (f"Kestrel.Transport.IoUring soak {meta.get('stamp', '')}: {verdict}",
             f"{summary['load_s']:.0f} s mixed load: {summary['requests']:,} HTTP exchanges, {summary['ws_messages']:,} WebSocket messages, "
             f"{summary['resets']:,} resets, {summary['unexpected_errors']} unexpected errors")
    with open(args.svg, "w") as f:
        f.write(render_svg(rows, summary, title))
    with open(args.md, "w") as f:
        f.write(render_md(rows, summary, args, log_counts, log_expected, log_unexpected, meta))

    print(f"server log: {sum(log_expected.values())} expected entries from resets "
          f"({', '.join(f'{k} {v}' for k, v in log_expected.items())}), {len(log_unexpected)} unexpected")
    for u in log_unexpected[:10]:
        print("UNEXPECTED SERVER LOG: " + u.replace("\n", " | ")[:400])
    return 1 if log_unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())

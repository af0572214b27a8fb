#!/usr/bin/env python3
"""The report of a loadtests/run.sh run (standard library only).

  report.py --raw DIR --dir RESULTS --name NAME [--publish latest] [--elapsed SECONDS]

Reads DIR/meta.json, results.jsonl, starvation.jsonl, skipped.txt and syscalls.md (those that exist); writes
RESULTS/NAME.md, NAME.svg (throughput and CPU ratios against Sockets, with the goals) and NAME-starvation.svg; with
--publish P also P.md, P.svg and P-starvation.svg (the committed latest results). Exits 1 when the run saw errors.
"""
import argparse, json, os, statistics, sys

from tools import percentile

SCENARIO_ORDER = ["plaintext-c64", "plaintext-c256", "pipelined-c256", "pipelined-c1024", "json-c64", "json-c256",
                  "download-1mib-c16", "fixedrate-64x400", "h2c-16x32", "tls-h2-16x32", "tls-h1-c64",
                  "tls-h1-wrk-c64", "api-c64", "api-c256", "api-keepalive-c256", "api-heavy-c256", "h2c-256x100",
                  "tls-h2-256x100", "churn-c64", "upload-c16", "static-c64", "static-h2c-16x32", "coldstart-api-c64",
                  "idle5000"]
VARIANT_ORDER = ["default", "inline", "ringsends", "schedother", "sqpoll", "incremental", "zerocopy", "registered"]
VARIANT_TITLES = {"default": "io_uring default", "inline": "io_uring Inline", "ringsends": "io_uring ring-only sends",
                  "schedother": "io_uring ring threads SCHED_OTHER",
                  "sqpoll": "io_uring SqPoll", "incremental": "io_uring incremental buffers", "zerocopy": "io_uring zero-copy sends",
                  "registered": "io_uring registered send buffers"}
# Goals: io_uring's req/s over Sockets' (both with default options), per scenario; the variants each goal binds. The
# app-shaped scenarios (samples/Benchmarks/AppEndpoints.cs) must at least match Sockets, at no more CPU per request.
APP_SCENARIOS = ["api-c64", "api-c256", "api-keepalive-c256", "api-heavy-c256", "h2c-256x100", "churn-c64",
                 "upload-c16", "static-c64", "static-h2c-16x32", "coldstart-api-c64"]
THROUGHPUT_GOALS = {"plaintext-c64": (1.6, ["default"]), "pipelined-c256": (1.4, ["default"]), "json-c64": (1.6, ["default"]),
                    "download-1mib-c16": (1.0, ["default"]), "h2c-16x32": (1.1, ["default", "inline"]),
                    "tls-h2-16x32": (1.2, ["default", "inline"]), "tls-h2-256x100": (1.2, ["default", "inline"]),
                    "tls-h1-c64": (1.4, ["default"]),
                    **{s: (1.0, ["default"]) for s in APP_SCENARIOS}}
# io_uring default's server CPU per request at most Sockets' on these (a fixed rate is compared by CPU alone).
CPU_VS_SOCKETS_SCENARIOS = ["download-1mib-c16", "fixedrate-64x400", "tls-h1-c64", "tls-h2-16x32"] + APP_SCENARIOS + ["tls-h2-256x100"]
CPU_GOAL = 1.15         # default mode's server CPU per request at most this times Inline's, on HTTP/1.1 scenarios
HTTP2_SCENARIOS = ("h2c-", "tls-h2-", "static-h2c-")
P99_GOAL_SCENARIOS = ["plaintext-c64", "json-c64"]   # io_uring default's p99 at most Sockets'
STARVATION_P50_SLACK_MS = 20  # keep-alive p50 at most max(2x Sockets', Sockets' + this)
BUSY_CPUS = 0.25        # other processes using more than this many CPUs make the figures noisy
SLOW_PROBE = 1.15       # a window whose memory probe took more than this times the run's median: the machine was slow


def fixed_rate(scenario):
    """(connections, req/s each) of a fixed-rate scenario ("fixedrate-<connections>x<each>"), else None. Every server is
    offered the same load there, so its req/s ratio says nothing; its CPU per request is what compares the transports."""
    if not scenario.startswith("fixedrate-"):
        return None
    conns, each = scenario[len("fixedrate-"):].split("x")
    return int(conns), int(each)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, suffix=""):
    return "–" if v is None else f"{v:,.{digits}f}{suffix}"


def mark(ok):
    return "✅" if ok else "❌"


def summarize(rows):
    return {
        "rps": med([r["rps"] for r in rows]),
        "rps_all": [r["rps"] for r in rows],
        "rps_by_round": {r["round"]: r["rps"] for r in rows},
        "probe_all": [r.get("probe_ms") for r in rows],
        "p50_ms": med([r.get("p50_ms") for r in rows]),
        "p99_ms": med([r.get("p99_ms") for r in rows]),
        "mean_ms": med([r.get("mean_ms") for r in rows]),
        "cpu_us": med([r["cpu_s"] / r["requests"] * 1e6 if r["requests"] else None for r in rows]),
        "switches": med([r["context_switches"] / r["requests"] if r.get("context_switches") is not None and r["requests"] else None
                         for r in rows]),
        "cpu_util": med([r["cpu_s"] / r["wall_s"] if r["wall_s"] else None for r in rows]),
        "client_util": med([r.get("client_cpu_s", 0) / r["wall_s"] if r["wall_s"] else None for r in rows]),
        "other_cpu": [r.get("other_cpu") for r in rows],
        "hwm_mib": med([r["vmhwm_kib"] / 1024 for r in rows]),
        "rss_end_mib": med([r["vmrss_kib"] / 1024 for r in rows]),
        "errors": sum(r["socket_errors"] for r in rows),
        "non2xx": sum(r["non2xx"] for r in rows),
        "tools": sorted({r["tool"] for r in rows}),
        "notes": [r.get("note") for r in rows if r.get("note")],
    }


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Run:
    def __init__(self, raw):
        with open(os.path.join(raw, "meta.json")) as f:
            self.meta = json.load(f)
        self.records = read_jsonl(os.path.join(raw, "results.jsonl"))
        self.starvation = read_jsonl(os.path.join(raw, "starvation.jsonl"))
        skipped = os.path.join(raw, "skipped.txt")
        self.skipped, self.syscalls = [], ""
        if os.path.exists(skipped):
            with open(skipped) as f:
                self.skipped = [line.strip() for line in f if line.strip()]
        syscalls = os.path.join(raw, "syscalls.md")
        if os.path.exists(syscalls):
            with open(syscalls) as f:
                self.syscalls = f.read().strip()
        cells = {}
        for r in self.records:
            cells.setdefault((r["scenario"], r["variant"], r["transport"]), []).append(r)
        self.cells = {k: summarize(v) for k, v in cells.items()}
        self.scenarios = sorted({k[0] for k in cells}, key=lambda s: (SCENARIO_ORDER.index(s) if s in SCENARIO_ORDER else 99, s))
        self.variants = sorted({k[1] for k in cells if k[2] == "iouring"},
                               key=lambda v: VARIANT_ORDER.index(v) if v in VARIANT_ORDER else 99)

    def sockets(self, scenario):
        return self.cells.get((scenario, "default", "sockets"))

    def iouring(self, scenario, variant):
        return self.cells.get((scenario, variant, "iouring"))

    def ratio(self, scenario, variant):
        u, s = self.iouring(scenario, variant), self.sockets(scenario)
        return u["rps"] / s["rps"] if u and s and u["rps"] and s["rps"] else None

    def round_ratios(self, scenario, variant):
        """io_uring's req/s over Sockets' of the same round: with the servers side by side, windows close in time."""
        u, s = self.iouring(scenario, variant), self.sockets(scenario)
        if not u or not s:
            return []
        return [u["rps_by_round"][k] / s["rps_by_round"][k] for k in sorted(u["rps_by_round"])
                if s["rps_by_round"].get(k) and u["rps_by_round"][k]]

    def machine_speed(self):
        """(median probe ms, [(record, probe ms)] of the windows slower than SLOW_PROBE × the median), or None."""
        probed = [(r, r["probe_ms"]) for r in self.records if r.get("probe_ms")]
        if not probed:
            return None
        median = med([p for _, p in probed])
        return median, [(r, p) for r, p in probed if p > SLOW_PROBE * median]

    def busy(self, short=False):
        """Why the figures are noisy, or "" when the machine was quiet before and during the run."""
        reasons = []
        before = self.meta.get("other_cpu_before") or 0
        if before > BUSY_CPUS:
            reasons.append(f"{before:.2f} CPUs before the run" if short else
                           f"before the run other processes used {before:.2f} CPUs ({self.meta.get('uptime_before', '')})")
        during = [r.get("other_cpu") for r in self.records if r.get("other_cpu") is not None]
        if during and (med(during) > BUSY_CPUS or max(during) > 2 * BUSY_CPUS):
            reasons.append(f"{med(during):.2f} CPUs during the windows (median)" if short else
                           f"during the measured windows other processes used {med(during):.2f} CPUs (median; max {max(during):.2f})")
        if short and reasons:
            return "Busy machine, noisy figures: other processes used " + " and ".join(reasons)
        return "; ".join(reasons)


def goals(run):
    """(goal, measured, met) rows: every goal this run has the figures for."""
    rows = []
    for scenario, (goal, variants) in THROUGHPUT_GOALS.items():
        for v in variants:
            ratio = run.ratio(scenario, v)
            if ratio is None:
                continue
            met = ratio >= goal
            extra = ""
            if scenario.startswith("download"):
                u, s = run.iouring(scenario, v), run.sockets(scenario)
                if u["cpu_us"] and s["cpu_us"]:
                    extra = f", CPU per request {u['cpu_us'] / s['cpu_us']:.2f}× Sockets'"
            rows.append((f"{scenario}, {VARIANT_TITLES[v]}: at least {goal:.1f}× Sockets", f"{ratio:.2f}×{extra}", met))
    for scenario in CPU_VS_SOCKETS_SCENARIOS:
        d, s = run.iouring(scenario, "default"), run.sockets(scenario)
        if d and s and d["cpu_us"] and s["cpu_us"]:
            r = d["cpu_us"] / s["cpu_us"]
            rows.append((f"{scenario}: io_uring default's CPU per request at most Sockets'",
                         f"{r:.2f}× ({d['cpu_us']:.2f} vs {s['cpu_us']:.2f} µs)", r <= 1.0))
    for scenario in run.scenarios:
        d, i = run.iouring(scenario, "default"), run.iouring(scenario, "inline")
        if d and i and d["cpu_us"] and i["cpu_us"] and scenario != "idle5000" and not scenario.startswith(HTTP2_SCENARIOS):
            r = d["cpu_us"] / i["cpu_us"]
            rows.append((f"{scenario}: default's CPU per request at most {CPU_GOAL:.2f}× Inline's",
                         f"{r:.2f}× ({d['cpu_us']:.2f} vs {i['cpu_us']:.2f} µs)", r <= CPU_GOAL))
    for scenario in P99_GOAL_SCENARIOS:
        d, s = run.iouring(scenario, "default"), run.sockets(scenario)
        if d and s and d["p99_ms"] and s["p99_ms"]:
            rows.append((f"{scenario}: io_uring default's p99 at most Sockets'", f"{d['p99_ms']:.2f} vs {s['p99_ms']:.2f} ms",
                         d["p99_ms"] <= s["p99_ms"]))
    st = starvation_summary(run)
    if "iouring" in st and "sockets" in st:
        u, s = st["iouring"], st["sockets"]
        for key, title in (("ka_p50", "keep-alive p50"), ("ka_p90", "keep-alive p90"), ("nc_p50", "new-connection p50")):
            if u[key] is not None or s[key] is not None:
                bound, bound_title = s[key], "Sockets'"
                if key == "ka_p50" and bound is not None:
                    bound = max(2 * bound, bound + STARVATION_P50_SLACK_MS)
                    bound_title = f"max(2× Sockets', Sockets' + {STARVATION_P50_SLACK_MS} ms)"
                met = u[key] is not None and (bound is None or u[key] <= bound)
                rows.append((f"starvation: io_uring's {title} at most {bound_title}", f"{ms_text(u[key])} vs {ms_text(s[key])}", met))
    return rows


def ms_text(v):
    if v is None:
        return "unanswered"
    return f"{v / 1000:,.1f} s" if v >= 10000 else f"{v:,.0f} ms"


def starvation_summary(run):
    """Per transport, over all rounds pooled: keep-alive and new-connection percentiles (unanswered probes rank last)."""
    out = {}
    for transport in ("sockets", "iouring"):
        rows = [r for r in run.starvation if r["transport"] == transport]
        if not rows:
            continue
        ka = [x for r in rows for x in r["keepalive_ms"]]
        nc = [x for r in rows for x in r["new_connection_ms"]]
        out[transport] = {
            "rounds": len(rows), "ka_n": len(ka), "nc_n": len(nc),
            "ka_p50": percentile(ka, 50), "ka_p90": percentile(ka, 90),
            "ka_fast": sum(1 for x in ka if x is not None and x < 100) / len(ka) if ka else None,
            "nc_p50": percentile(nc, 50), "nc_p90": percentile(nc, 90),
            "unanswered": sum(1 for x in ka + nc if x is None),
            "blocked": sum(r["blocked_requests_answered"] for r in rows),
            "errors": [e for r in rows for e in r.get("errors", [])][:3],
        }
    return out


def markdown(run, name, elapsed):
    m = run.meta
    L = ["# Kestrel.Transport.IoUring: io_uring vs Sockets", ""]
    busy = run.busy()
    if busy:
        L += [f"> **Busy machine: these figures are noisy.** {busy}. Measure on a quiet machine before drawing conclusions.", ""]
    if m.get("quick"):
        L += ["> **QUICK smoke run** (short windows, one round): it shows that the scenarios work, not how fast anything is.", ""]
    L.append(f"- Run: {m['started']}, commit `{m['commit']}`{' (with local changes)' if m.get('dirty') else ''}"
             + (f", {elapsed // 60} min {elapsed % 60} s" if elapsed else ""))
    L.append(f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}; Linux {m['kernel']}; {m['mem']}; .NET SDK {m['dotnet']}")
    L.append(f"- Before the run: other processes used {m.get('other_cpu_before', 0):.2f} CPUs; `{m.get('uptime_before', '')}`")
    L.append(f"- Server pinned to CPU {m['server_cpu']}, load generator to CPU {m['client_cpu']}; tools: {m['tool_summary']}")
    side = m.get("side_by_side")
    L.append(f"- Method: {m['rounds']} round(s); each round starts a fresh server per transport and variant"
             + (", all side by side on the server CPU," if side else ",") + " warms it with "
             + (f"{m['protocol_warmup']} s of load per pipelined, HTTP/2 or TLS protocol measured and " if m.get('protocol_warmup') else "")
             + f"{m['warmup']} s of plaintext load"
             + (f" (every warm-up load at most {m['warmup_chunk']} s, each with new connections)" if m.get('warmup_chunk') else "")
             + (f", then measures each scenario on every server in turn, {m['scenario_warmup']} s of warm-up and {m['duration']} s "
                "measured, each window followed by the machine speed probe; the order of the servers alternates between "
                "scenarios and rounds" if side else
                f", then runs every scenario for {m['scenario_warmup']} s of warm-up and {m['duration']} s "
                "measured; the order of the servers alternates between rounds")
             + "; figures are medians over the rounds.")
    if run.skipped:
        L.append("- Rows skipped because the server refused the variant's option: " + "; ".join(run.skipped))
    L += ["", "Rows: **Sockets** = Kestrel's Sockets transport, default options; **io_uring default** = default options "
          "(ApplicationScheduling=ThreadPool); **io_uring Inline** = ApplicationScheduling=Inline; **io_uring ring-only sends** = "
          "every send through the ring (the old send path). Every ratio is against Sockets with default options.", ""]

    rows = goals(run)
    if rows:
        L += ["## Goals", "", "| goal | measured | met |", "|---|--:|:-:|"]
        L += [f"| {g} | {v} | {mark(ok)} |" for g, v, ok in rows]
        L.append("")

    variants = run.variants
    L += ["## Throughput (requests/s)", ""]
    L.append("| scenario | Sockets | " + " | ".join(f"{VARIANT_TITLES.get(v, v)} | ratio" for v in variants) + " | goal |")
    L.append("|---|--:|" + "--:|--:|" * len(variants) + "--:|")
    for sc in run.scenarios:
        s = run.sockets(sc)
        cells = [sc, fmt(s["rps"]) if s else "–"]
        for v in variants:
            u = run.iouring(sc, v)
            r = run.ratio(sc, v)
            cells += [fmt(u["rps"]) if u else "–", f"**{r:.2f}×**" if r else "–"]
        goal = THROUGHPUT_GOALS.get(sc)
        cells.append(f"{goal[0]:.1f}×" if goal else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    for sc in run.scenarios:
        if rate := fixed_rate(sc):
            conns, each = rate
            L += [f"{sc}: every server is offered the same {conns * each:,} plaintext req/s (h2load --h1, {conns} "
                  f"connections at {each} req/s each), below what any of them saturates at: its ratio only says that a server "
                  "kept up; its CPU per request (next table) compares the transports at equal load.", ""]

    L += ["## Server CPU per request (µs; utime + stime of the server process in the measured window ÷ responses)", ""]
    L.append("| scenario | Sockets | " + " | ".join(VARIANT_TITLES.get(v, v) for v in variants) + f" | default ÷ Inline (goal ≤ {CPU_GOAL:.2f}× on HTTP/1.1) |")
    L.append("|---|--:|" + "--:|" * len(variants) + "--:|")
    for sc in run.scenarios:
        s = run.sockets(sc)
        cells = [sc, fmt(s["cpu_us"], 2) if s else "–"]
        cells += [fmt(run.iouring(sc, v)["cpu_us"], 2) if run.iouring(sc, v) else "–" for v in variants]
        d, i = run.iouring(sc, "default"), run.iouring(sc, "inline")
        cells.append(f"{d['cpu_us'] / i['cpu_us']:.2f}×" if d and i and d["cpu_us"] and i["cpu_us"] else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    L += ["Server context switches per request (`perf stat -e context-switches -p PID` over the window, all threads; what "
          "handing work between threads costs; \"–\" without perf):", ""]
    L.append("| scenario | Sockets | " + " | ".join(VARIANT_TITLES.get(v, v) for v in variants) + " |")
    L.append("|---|--:|" + "--:|" * len(variants))
    for sc in run.scenarios:
        xs = [run.sockets(sc)] + [run.iouring(sc, v) for v in variants]
        L.append("| " + " | ".join([sc] + [fmt(x["switches"], 3) if x else "–" for x in xs]) + " |")
    L.append("")

    L += ["## Latency (ms)", "",
          "p50 / p99 from wrk or bombardier; h2load prints no percentiles, so its rows give the mean request time. Pipelined "
          "latencies are per batch of 16 (\"–\": the tool reported none).", ""]
    L.append("| scenario | Sockets | " + " | ".join(VARIANT_TITLES.get(v, v) for v in variants) + " |")
    L.append("|---|--:|" + "--:|" * len(variants))

    def lat(x):
        if not x:
            return "–"
        if x["p50_ms"] is None and x["p99_ms"] is None and x["mean_ms"] is not None:
            return f"mean {x['mean_ms']:.2f}"
        return f"{fmt(x['p50_ms'], 2)} / {fmt(x['p99_ms'], 2)}"
    for sc in run.scenarios:
        L.append("| " + " | ".join([sc, lat(run.sockets(sc))] + [lat(run.iouring(sc, v)) for v in variants]) + " |")
    L.append("")

    notes = []
    for sc in run.scenarios:
        s, d = run.sockets(sc), run.iouring(sc, "default")
        if sc.startswith("download") and s and d:
            gib = lambda x: x["cpu_us"] / 1e6 * 1024 if x["cpu_us"] else None
            notes.append(f"- {sc}: io_uring default {fmt(d['rps'])} MiB/s at {fmt(gib(d), 3)} CPU s/GiB; Sockets {fmt(s['rps'])} MiB/s "
                         f"at {fmt(gib(s), 3)} CPU s/GiB.")
        if sc.startswith("idle") and s and d:
            notes.append(f"- {sc}: server RSS with the idle connections open, at the end of the window: io_uring "
                         f"{fmt(d['rss_end_mib'])} MiB, Sockets {fmt(s['rss_end_mib'])} MiB (peak {fmt(d['hwm_mib'])} vs "
                         f"{fmt(s['hwm_mib'])} MiB; {'; '.join(d['notes'][:1] + s['notes'][:1])}).")
    if notes:
        L += ["## Memory", ""] + notes + [""]

    st = starvation_summary(run)
    if st:
        m_ = run.meta
        L += ["## Thread-pool starvation", "",
              f"64 handlers block their pool thread (`/block?ms=3000`, `Thread.Sleep`) and are re-fired for {m_['starve_seconds']:g} s; "
              "every 100 ms one GET /plaintext goes out on one of 32 pre-opened keep-alive connections and one on a new "
              f"connection (loadtests/starvation.py); {m_['starve_rounds']:g} round(s) per transport, alternated, a fresh server "
              f"each; latency from the probe's tick (a keep-alive probe that has to wait for a free connection counts that wait); "
              f"a probe unanswered after {m_['starve_timeout']:g} s counts as unanswered and ranks last.", "",
              "| transport | keep-alive p50 | keep-alive p90 | keep-alive under 100 ms | new-connection p50 | new-connection p90 "
              "| probes (unanswered) | blocked requests answered |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
        for t, title in (("sockets", "Sockets"), ("iouring", "io_uring default")):
            if t in st:
                x = st[t]
                L.append(f"| {title} | {ms_text(x['ka_p50'])} | {ms_text(x['ka_p90'])} | {fmt(x['ka_fast'] * 100 if x['ka_fast'] is not None else None, 0)}% "
                         f"| {ms_text(x['nc_p50'])} | {ms_text(x['nc_p90'])} | {x['ka_n'] + x['nc_n']} ({x['unanswered']}) | {x['blocked']} |")
        errs = [e for x in st.values() for e in x["errors"]]
        if errs:
            L += ["", "First probe errors: " + "; ".join(f"`{e}`" for e in errs[:3])]
        L += ["", f"![starvation]({name}-starvation.svg)", ""]

    if run.syscalls:
        L += ["## Syscalls per request", "", run.syscalls, ""]

    speed = run.machine_speed()
    if speed:
        median, slow = speed
        probes = [r["probe_ms"] for r in run.records if r.get("probe_ms")]
        before = m.get("probe_before_ms")
        L += ["## Machine speed", "",
              "On a virtual machine the host's memory traffic changes how fast the guest runs, for every server alike. "
              "After each window, with the servers idle, `memprobe.c` times 2M dependent loads through 32 MiB on the server "
              f"CPU (median of 3 walks). Over this run: median {median:.0f} ms, range {min(probes):.0f}–{max(probes):.0f} ms"
              + (f"; {before:.0f} ms before the run" if before else "") + ". "
              f"Windows more than {(SLOW_PROBE - 1) * 100:.0f}% slower than the median: {len(slow)} of {len(probes)}"
              + (":" if slow else "."), ""]
        for r, p in slow:
            L.append(f"- {r['scenario']}, {'Sockets' if r['transport'] == 'sockets' else VARIANT_TITLES.get(r['variant'], r['variant'])}, "
                     f"round {r['round']}: {fmt(r['rps'])} req/s, probe {p:.0f} ms")
        L.append("")

    L += ["## Per round and machine load", "",
          "Server and load-generator CPU in CPUs (1.0 = the whole pinned core); \"other\" = CPU time of every other process "
          "on the machine during the window (should be near 0).", "",
          "\"ratio per round\": io_uring's req/s over Sockets' of the same round; \"probe\": the machine speed probe after "
          "each window, in ms (higher is slower).", "",
          "| scenario | row | req/s per round | ratio per round | probe (ms) | server CPU | load generator CPU | other (max) | tool |",
          "|---|---|---|---|---|--:|--:|--:|---|"]
    for sc in run.scenarios:
        for key, title in [(("default", "sockets"), "Sockets")] + [((v, "iouring"), VARIANT_TITLES.get(v, v)) for v in variants]:
            x = run.cells.get((sc,) + key)
            if x:
                other = [o for o in x["other_cpu"] if o is not None]
                ratios = ", ".join(f"{q:.2f}×" for q in run.round_ratios(sc, key[0])) if key[1] == "iouring" else ""
                probes = ", ".join(fmt(p) for p in x["probe_all"]) if any(x["probe_all"]) else "–"
                L.append(f"| {sc} | {title} | {', '.join(fmt(v) for v in x['rps_all'])} | {ratios or '–'} | {probes} | {fmt(x['cpu_util'], 2)} | "
                         f"{fmt(x['client_util'], 2)} | {fmt(max(other) if other else None, 2)} | {', '.join(x['tools'])} |")
    L += ["", "Transports as the servers reported them at start:", ""]
    import re
    for t in sorted({re.sub(r"listening on [^;]*; pid \d+; ", "", r.get("transport_line", "")) for r in run.records + run.starvation}):
        L.append(f"- `{t}`")
    L += ["", f"![io_uring / Sockets]({name}.svg)", ""]
    failures = [f"{k[0]}/{k[1]}/{k[2]}: {x['errors']} socket errors, {x['non2xx']} non-2xx" for k, x in run.cells.items()
                if x["errors"] or x["non2xx"]]
    if failures:
        L += ["**RUN FAILED:** " + "; ".join(failures), ""]
    return "\n".join(L), failures


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_header(width, height, title, subtitle, warning):
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{esc(title)}</text>',
         f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">{esc(subtitle)}</text>']
    if warning:
        o.append(f'<text x="{width / 2}" y="58" text-anchor="middle" fill="#c53030" font-weight="bold">{esc(warning)}</text>')
    return o


SERIES_COLORS = {"default": "#2b6cb0", "inline": "#38a169", "ringsends": "#805ad5", "schedother": "#dd6b20", "sqpoll": "#718096",
                 "incremental": "#718096", "zerocopy": "#718096", "registered": "#718096"}


def write_chart(path, run, warning):
    """Per scenario: req/s ratio of each io_uring row against Sockets, the default row's CPU-per-request ratio, the goal."""
    series = [(v, f"req/s {VARIANT_TITLES.get(v, v)} ÷ Sockets", SERIES_COLORS.get(v, "#718096")) for v in run.variants]
    series.append(("cpu", "CPU/request Sockets ÷ io_uring default (>1: cheaper)", "#dd6b20"))
    items = []
    for sc in run.scenarios:
        vals = [None if fixed_rate(sc) else run.ratio(sc, v) for v in run.variants]  # only the CPU bar at a fixed rate
        d, s = run.iouring(sc, "default"), run.sockets(sc)
        vals.append(s["cpu_us"] / d["cpu_us"] if d and s and d["cpu_us"] and s["cpu_us"] else None)
        items.append((sc, vals, THROUGHPUT_GOALS.get(sc, (None,))[0]))
    bar_h, gap = 11, 10
    row_h = bar_h * len(series) + gap
    left, right, width = 170, 60, 960
    legend_y = 76 if warning else 58
    top = legend_y + 18 * ((len(series) + 2) // 2) + 14
    height = top + row_h * len(items) + 44
    plot_w = width - left - right
    vmax = max([2.0] + [x for _, vals, g in items for x in vals + [g] if x]) * 1.08
    X = lambda v: left + plot_w * v / vmax
    m = run.meta
    o = svg_header(width, height, "Kestrel.Transport.IoUring: io_uring vs Sockets" + (" (QUICK smoke run)" if m.get("quick") else ""),
                   f"{m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, commit {m['commit']}, {m['started']}", warning)
    for k, (_, label, color) in enumerate(series + [("goal", "goal (io_uring default ÷ Sockets)", "black")]):
        x = 20 + (k % 2) * 460
        y = legend_y + 18 * (k // 2)
        if color == "black":
            o.append(f'<line x1="{x + 6}" y1="{y - 9}" x2="{x + 6}" y2="{y + 3}" stroke="black" stroke-width="3"/>')
        else:
            o.append(f'<rect x="{x}" y="{y - 9}" width="12" height="10" fill="{color}"/>')
        o.append(f'<text x="{x + 18}" y="{y}">{esc(label)}</text>')
    step = 0.5 if vmax <= 4 else 1.0
    v = 0.0
    bottom = top + row_h * len(items)
    while v <= vmax:
        o.append(f'<line x1="{X(v):.1f}" y1="{top - 5}" x2="{X(v):.1f}" y2="{bottom}" stroke="#e2e8f0"/>')
        o.append(f'<text x="{X(v):.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{v:.1f}×</text>')
        v += step
    o.append(f'<line x1="{X(1):.1f}" y1="{top - 5}" x2="{X(1):.1f}" y2="{bottom}" stroke="#c53030" stroke-width="1.5" stroke-dasharray="4 3"/>')
    for i, (sc, vals, goal) in enumerate(items):
        y = top + i * row_h
        o.append(f'<text x="{left - 8}" y="{y + row_h / 2}" text-anchor="end">{esc(sc)}</text>')
        gx = X(goal) if goal else None
        if goal:
            o.append(f'<line x1="{gx:.1f}" y1="{y - 3}" x2="{gx:.1f}" y2="{y + bar_h * len(series) + 2}" stroke="black" stroke-width="3"/>')
        for j, ((_, _, color), val) in enumerate(zip(series, vals)):
            by = y + j * bar_h
            if not val:
                continue
            o.append(f'<rect x="{left}" y="{by + 1}" width="{max(X(val) - left, 1):.1f}" height="{bar_h - 2}" fill="{color}"/>')
            # the value goes right of the bar, or right of the goal marker when the marker stands just past the bar's end
            tx = X(val) + 4
            if gx is not None and X(val) - 2 <= gx <= X(val) + 40:
                tx = gx + 5
            o.append(f'<text x="{tx:.1f}" y="{by + bar_h - 2}" font-size="10">{val:.2f}×</text>')
    o.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" fill="#555">ratios of medians over the rounds; '
             f'the dashed line marks parity (1.0×)</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o))


def write_starvation_chart(path, run, warning):
    """Log-scale bars: keep-alive p50/p90 and new-connection p50/p90, Sockets beside io_uring default."""
    import math
    st = starvation_summary(run)
    metrics = [("ka_p50", "keep-alive p50"), ("ka_p90", "keep-alive p90"), ("nc_p50", "new connection p50"), ("nc_p90", "new connection p90")]
    transports = [(t, title, color) for t, title, color in (("sockets", "Sockets", "#a0aec0"), ("iouring", "io_uring default", "#2b6cb0")) if t in st]
    bar_h, gap = 14, 12
    row_h = bar_h * max(len(transports), 1) + gap
    left, right, width = 170, 130, 880
    top = 100 if warning else 82
    height = top + row_h * len(metrics) + 44
    timeout_ms = float(run.meta.get("starve_timeout") or 30) * 1000
    lo, hi = 1.0, max(timeout_ms, 10000.0)
    X = lambda v: left + (width - left - right) * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    o = svg_header(width, height, "Thread-pool starvation: latency of trivial requests (lower is better)",
                   "64 handlers blocked in Thread.Sleep(3000), re-fired; one keep-alive and one new-connection GET every 100 ms", warning)
    for k, (_, title, color) in enumerate(transports):
        o.append(f'<rect x="{20 + k * 200}" y="{top - 27}" width="12" height="10" fill="{color}"/><text x="{38 + k * 200}" y="{top - 18}">{esc(title)}</text>')
    v = lo
    bottom = top + row_h * len(metrics)
    while v <= hi * 1.001:
        label = f"{v / 1000:g} s" if v >= 1000 else f"{v:g} ms"
        o.append(f'<line x1="{X(v):.1f}" y1="{top - 5}" x2="{X(v):.1f}" y2="{bottom}" stroke="#e2e8f0"/>')
        o.append(f'<text x="{X(v):.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{label}</text>')
        v *= 10
    for i, (key, title) in enumerate(metrics):
        y = top + i * row_h
        o.append(f'<text x="{left - 8}" y="{y + row_h / 2}" text-anchor="end">{esc(title)}</text>')
        for j, (t, _, color) in enumerate(transports):
            val = st[t][key]
            by = y + j * bar_h
            shown = timeout_ms if val is None else val
            o.append(f'<rect x="{left}" y="{by + 1}" width="{max(X(shown) - left, 1):.1f}" height="{bar_h - 2}" fill="{color}"/>')
            text = ms_text(val) if val is not None else f"unanswered in {timeout_ms / 1000:g} s"
            o.append(f'<text x="{X(shown) + 4:.1f}" y="{by + bar_h - 3}" font-size="10">{esc(text)}</text>')
    o.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" fill="#555">logarithmic scale; probes pooled over the rounds</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--publish", help="also write <dir>/<PUBLISH>.md, .svg and -starvation.svg")
    ap.add_argument("--elapsed", type=int, default=0)
    a = ap.parse_args()
    run = Run(a.raw)
    warning = run.busy(short=True)
    os.makedirs(a.dir, exist_ok=True)
    for name in [a.name] + ([a.publish] if a.publish else []):
        text, failures = markdown(run, name, a.elapsed)
        with open(os.path.join(a.dir, name + ".md"), "w") as f:
            f.write(text)
        write_chart(os.path.join(a.dir, name + ".svg"), run, warning)
        if run.starvation:
            write_starvation_chart(os.path.join(a.dir, name + "-starvation.svg"), run, warning)
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks of the load-test tooling that need no server: parsers, percentiles, the report and its charts.

  python3 -m unittest discover -s loadtests -p 'test_*.py'
"""
import json, os, re, sys, tempfile, unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
import tools  # noqa: E402

H2LOAD = """finished in 10.00s, 71707.10 req/s, 2.75MB/s
requests: 717100 total, 717150 started, 717100 done, 717071 succeeded, 29 failed, 0 errored, 0 timeout
status codes: 717071 2xx, 0 3xx, 0 4xx, 0 5xx
time for request:      115us      6.35ms       478us       627us    96.00%
"""

WRK = """Running 10s test @ http://127.0.0.1:5080/plaintext
  Latency Distribution
     50%    1.52ms
     75%    2.01ms
     90%    3.00ms
     99%   95.44ms
  292400 requests in 10.00s, 36.53MB read
Requests/sec:  29240.00
"""


def read(path):
    with open(path) as f:
        return f.read()


def record(scenario, variant, transport, rps, cpu_s=1.0, p99=2.0, other=0.0):
    return {"tool": "wrk", "requests": int(rps * 10), "rps": rps, "p50_ms": 1.0, "p99_ms": p99, "socket_errors": 0, "non2xx": 0,
            "round": 1, "scenario": scenario, "variant": variant, "transport": transport, "cpu_s": cpu_s, "wall_s": 10.0,
            "client_cpu_s": 5.0, "other_cpu": other, "context_switches": 1000, "loadavg": 0.1, "vmhwm_kib": 90000,
            "vmrss_kib": 80000, "note": "", "transport_line": f"Benchmarks: transport {transport}"}


def write_raw(directory, records, starvation=(), other_before=0.0):
    meta = {"started": "2026-11-30T00:00:00Z", "commit": "abc1234", "dirty": False, "nproc": "2", "cpu_model": "test CPU",
            "kernel": "6.18", "mem": "RAM 1 kB", "dotnet": "10.0.401", "server_cpu": 0, "client_cpu": 1, "tool_summary": "wrk",
            "rounds": 1, "duration": 10, "warmup": 10, "scenario_warmup": 2, "variants": ["default", "inline"], "quick": False,
            "starve_rounds": 1, "starve_seconds": 15, "starve_timeout": 30, "other_cpu_before": other_before, "uptime_before": "up"}
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(meta, f)
    with open(os.path.join(directory, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if starvation:
        with open(os.path.join(directory, "starvation.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in starvation)


class ParserTests(unittest.TestCase):
    def test_h2load_counts_only_real_failures(self):
        r = tools.parse_h2load(H2LOAD)
        self.assertAlmostEqual(r["rps"], 71707.10)
        self.assertEqual(r["requests"], 717071)
        # 50 requests were still in flight when the window closed: 29 "failed" of them are not errors
        self.assertEqual(r["socket_errors"], 0)
        self.assertAlmostEqual(r["mean_ms"], 0.478)

    def test_wrk_percentiles(self):
        r = tools.parse_wrk(WRK)
        self.assertEqual(r["requests"], 292400)
        self.assertAlmostEqual(r["p99_ms"], 95.44)

    def test_percentile_ranks_unanswered_last(self):
        self.assertEqual(tools.percentile([5, 1, 3, 2, 4], 50), 3)
        self.assertEqual(tools.percentile([1, 2, None, None], 50), 2)
        self.assertIsNone(tools.percentile([1, None, None, None], 50))
        self.assertIsNone(tools.percentile([], 50))


class ReportTests(unittest.TestCase):
    def render(self, records, starvation=(), other_before=0.0):
        with tempfile.TemporaryDirectory() as raw, tempfile.TemporaryDirectory() as out:
            write_raw(raw, records, starvation, other_before)
            sys.argv = ["report.py", "--raw", raw, "--dir", out, "--name", "run", "--publish", "latest"]
            with open(os.devnull, "w") as devnull:
                saved, sys.stdout = sys.stdout, devnull
                try:
                    rc = report.main()
                finally:
                    sys.stdout = saved
            files = {name: read(os.path.join(out, name)) for name in os.listdir(out)}
        return rc, files

    def test_goals_are_named_by_what_they_are(self):
        rc, files = self.render([record("plaintext-c64", "default", "sockets", 10000),
                                 record("plaintext-c64", "default", "iouring", 17000, cpu_s=0.9),
                                 record("plaintext-c64", "inline", "iouring", 18000, cpu_s=0.8)])
        self.assertEqual(rc, 0)
        md = files["run.md"]
        self.assertIn("| plaintext-c64, io_uring default: at least 1.6× Sockets | 1.70× | ✅ |", md)
        self.assertIn("default's CPU per request at most 1.15× Inline's", md)
        for text in files.values():
            self.assertNotRegex(text, r"(?i)issue \d|target \(")
        self.assertIn("run.svg", md)
        self.assertIn("latest.svg", files["latest.md"])

    def test_a_busy_machine_is_flagged_in_report_and_chart(self):
        rc, files = self.render([record("json-c64", "default", "sockets", 10000, other=0.9),
                                 record("json-c64", "default", "iouring", 12000, other=0.8)], other_before=0.6)
        self.assertIn("Busy machine", files["run.md"])
        self.assertIn("Busy machine", files["run.svg"])
        _, quiet = self.render([record("json-c64", "default", "sockets", 10000), record("json-c64", "default", "iouring", 12000)])
        self.assertNotIn("Busy machine", quiet["run.md"])
        self.assertNotIn("Busy machine", quiet["run.svg"])

    def test_value_label_moves_past_a_goal_marker_it_would_hit(self):
        # 1.58× against a goal of 1.6×: the marker stands just past the bar's end, so the label must start after it
        _, files = self.render([record("plaintext-c64", "default", "sockets", 10000), record("plaintext-c64", "default", "iouring", 15800)])
        svg = files["run.svg"]
        # the last black marker is the row's goal (the first is the legend's)
        marker = float(re.findall(r'<line x1="([\d.]+)"[^>]*stroke="black" stroke-width="3"/>', svg)[-1])
        label = float(re.search(r'<text x="([\d.]+)"[^>]*>1\.58×</text>', svg).group(1))
        self.assertGreater(label, marker)

    def test_errors_fail_the_report(self):
        bad = record("json-c64", "default", "iouring", 12000)
        bad["socket_errors"] = 3
        rc, files = self.render([record("json-c64", "default", "sockets", 10000), bad])
        self.assertEqual(rc, 1)
        self.assertIn("RUN FAILED", files["run.md"])

    def test_starvation_table_and_chart(self):
        def probe(transport, ka, nc):
            return {"transport": transport, "round": 1, "keepalive_ms": ka, "new_connection_ms": nc, "blocked_requests_answered": 10,
                    "errors": [], "transport_line": ""}
        rc, files = self.render([record("json-c64", "default", "sockets", 10000), record("json-c64", "default", "iouring", 12000)],
                                [probe("sockets", [5, 6, 7, 500], [17000, None]), probe("iouring", [3, 4, 5, 90], [12000, 15000])])
        md = files["run.md"]
        self.assertIn("## Thread-pool starvation", md)
        self.assertRegex(md, r"\| Sockets \| 6 ms \| 500 ms \| 75% \| 17\.0 s \| unanswered \|")
        self.assertIn("starvation: io_uring's keep-alive p50 at most max(2× Sockets', Sockets' + 20 ms) | 4 ms vs 6 ms | ✅", md)
        self.assertIn("run-starvation.svg", files)
        self.assertIn("latest-starvation.svg", files)

    def test_slow_machine_windows_are_named_and_rounds_paired(self):
        def rec(transport, variant, rps, rnd, probe):
            r = record("h2c-16x32", variant, transport, rps)
            r.update(round=rnd, probe_ms=probe)
            return r
        # round 2's Sockets window ran while the machine's memory was slow (probe 360 ms against ~300)
        _, files = self.render([rec("sockets", "default", 250000, 1, 300), rec("iouring", "default", 300000, 1, 302),
                                rec("sockets", "default", 150000, 2, 360), rec("iouring", "default", 290000, 2, 298)])
        md = files["run.md"]
        self.assertIn("## Machine speed", md)
        self.assertIn("Windows more than 15% slower than the median: 1 of 4:", md)
        self.assertIn("- h2c-16x32, Sockets, round 2: 150,000 req/s, probe 360 ms", md)
        self.assertIn("| h2c-16x32 | io_uring default | 300,000, 290,000 | 1.20×, 1.93× | 302, 298 |", md)
        # without probes (an older run, or no C compiler) there is no such section
        _, unprobed = self.render([record("json-c64", "default", "sockets", 10000), record("json-c64", "default", "iouring", 12000)])
        self.assertNotIn("## Machine speed", unprobed["run.md"])

    def test_fixed_rate_row_is_read_by_its_cpu_per_request(self):
        # every server kept up with the offered 25,600 req/s; io_uring default used 0.4 s of CPU, Inline 0.25 s
        _, files = self.render([record("fixedrate-64x400", "default", "sockets", 25600, cpu_s=0.6),
                                record("fixedrate-64x400", "default", "iouring", 25600, cpu_s=0.4),
                                record("fixedrate-64x400", "inline", "iouring", 25600, cpu_s=0.25)])
        md = files["run.md"]
        self.assertIn("fixedrate-64x400: every server is offered the same 25,600 plaintext req/s", md)
        self.assertIn("| fixedrate-64x400: default's CPU per request at most 1.15× Inline's | 1.60× (1.56 vs 0.98 µs) | ❌ |", md)
        self.assertNotIn("fixedrate-64x400, io_uring default: at least", md)  # no throughput goal at a fixed rate
        chart = files["run.svg"]
        self.assertIn(">fixedrate-64x400<", chart)
        self.assertIn(">1.50×<", chart)  # Sockets' CPU per request over the default mode's (0.6 s ÷ 0.4 s)
        self.assertNotIn(">1.00×<", chart)  # no req/s bars: every server served the offered rate

    def test_spin_table_gives_medians_and_multiples_of_inline(self):
        def window(row, rnd, cpu_s, requests, switches, errors=0):
            return {"row": row, "scenario": "fixedrate-64x400", "round": rnd, "cpu_s": cpu_s, "switches": switches,
                    "load": {"rps": requests / 10, "requests": requests, "socket_errors": errors, "non2xx": 0}}
        rows = [window("iouring:inline", 1, 2.0, 256000, 8000), window("iouring:inline", 2, 2.2, 256000, 8000),
                window("iouring:inline", 3, 3.0, 256000, 9000),
                window("iouring:default", 1, 3.6, 256000, 256000), window("iouring:default", 2, 3.3, 256000, None),
                window("iouring:default", 3, 5.0, 256000, 128000)]
        table, failed = tools.spin_table(rows, 3, 10)
        self.assertFalse(failed)
        # Inline: median 2.2 s over 256,000 requests = 8.59 µs; default: median 3.6 s = 14.06 µs; against Inline paired
        # by round: 3.6/2.0, 3.3/2.2, 5.0/3.0 = 1.80, 1.50, 1.67, median 1.67 (the ratio of the medians would say 1.64);
        # the window without a context-switch count is left out of that median (1.0 and 0.5 per request: 0.75)
        self.assertIn("| fixedrate-64x400 | io_uring Inline | 25,600 | 8.59 | 1.00× | 0.03 |", table)
        self.assertIn("| fixedrate-64x400 | io_uring default | 25,600 | 14.06 | 1.67× | 0.75 |", table)
        _, failed = tools.spin_table(rows + [window("sockets:default", 1, 5.0, 256000, 1, errors=3)], 3, 10)
        self.assertTrue(failed)
        self.assertEqual(tools.spin_row_title("sockets:default+nospin"), "Sockets, spin limit 0")
        self.assertEqual(tools.spin_row_title("iouring:default+spin4"), "io_uring default, spin limit 4")
        self.assertNotIn("own inline", table)

    def test_spin_table_sets_each_transport_against_its_own_inline_row(self):
        def window(row, rnd, cpu_s):
            return {"row": row, "scenario": "plaintext-c64", "round": rnd, "cpu_s": cpu_s, "switches": None,
                    "load": {"rps": 10000, "requests": 100000, "socket_errors": 0, "non2xx": 0}}
        rows = [window("iouring:inline", 1, 1.0), window("iouring:default+nospin", 1, 1.3),
                window("sockets:inline+inlinecompletions", 1, 1.5), window("sockets:default+nospin", 1, 2.4)]
        table, _ = tools.spin_table(rows, 1, 10)
        # Sockets' pool row against Sockets' inline row (2.4/1.5) and against io_uring Inline (2.4/1.0)
        self.assertIn("| plaintext-c64 | Sockets, spin limit 0 | 10,000 | 24.00 | 2.40× | 1.60× | – |", table)
        self.assertIn("| plaintext-c64 | io_uring default, spin limit 0 | 10,000 | 13.00 | 1.30× | 1.30× | – |", table)
        self.assertIn("| plaintext-c64 | Sockets, UnsafePreferInlineScheduling, inline socket completions | 10,000 | 15.00 | 1.50× | 1.00× | – |", table)


if __name__ == "__main__":
    unittest.main()

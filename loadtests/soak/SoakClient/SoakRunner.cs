using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace SoakClient;

/// <summary>
/// Runs the workers for the duration, samples the server every interval, then checks: no unexpected error, fds and
/// RSS back near the baseline once idle, no steady growth over the last half of the load, pinned pages not growing.
/// </summary>
internal sealed class SoakRunner(SoakOptions options)
{
    private readonly Stopwatch _clock = new();
    private readonly List<ProcessSample> _samples = [];
    private readonly Lock _samplesLock = new();
    private volatile string _phase = "idle";
    private ProcessSample? _baseline;

    private double Now => _clock.Elapsed.TotalSeconds;

    public async Task<int> RunAsync()
    {
        var stats = new SoakStats(() => Now);
        using var workloads = new Workloads(options, stats);
        ProcessSampler? sampler = options.Pid is int pid ? new ProcessSampler(pid, options.BaseUrl.Port) : null;
        if (sampler is { Alive: false })
        {
            Console.Error.WriteLine($"Process {sampler.Pid} does not exist.");
            return 3;
        }

        // The server must answer, over io_uring, before anything is measured.
        try
        {
            using var probeCts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await workloads.KeepAliveAsync(new Random(0), probeCts.Token);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"The server at {options.BaseUrl} is not usable: {SoakStats.Describe(e)}");
            return 3;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(options.CsvPath))!);
        await using var csv = new StreamWriter(options.CsvPath, append: false);
        await csv.WriteLineAsync(ProcessSample.CsvHeader);
        await csv.FlushAsync();

        Console.WriteLine($"Soak: {options.BaseUrl} for {options.DurationSeconds} s (warm-up {options.WarmupSeconds} s, settle {options.SettleSeconds} s, " +
            $"sample every {options.IntervalSeconds} s), pid {options.Pid?.ToString(CultureInfo.InvariantCulture) ?? "none"}, seed {options.Seed}; workers: " +
            $"keep-alive {options.KeepAliveWorkers}, churn {options.ChurnWorkers}, uploads {options.UploadWorkers}, " +
            $"websockets {options.WebSocketWorkers}, resets {options.ResetWorkers}");

        _clock.Start();
        var stopLoad = new CancellationTokenSource();
        var stopSampling = new CancellationTokenSource();
        bool serverGone = false;

        void TakeSample(string phase)
        {
            if (sampler is null) return;
            ProcessSample? s = sampler.Sample(Now, phase, stats);
            if (s is null)
            {
                if (!serverGone) Console.Error.WriteLine($"t={Now:F1}s the server process {sampler.Pid} has gone.");
                serverGone = true;
                stopLoad.Cancel();
                return;
            }
            lock (_samplesLock)
            {
                _samples.Add(s);
                csv.WriteLine(s.ToCsv());
                csv.Flush();
            }
            if (_baseline is null && phase == "load")
            {
                _baseline = s;
            }
            Console.WriteLine($"t={s.Time,6:F1}s {phase,-6} rss {s.RssKb / 1024.0,7:F1} MB (anon {s.RssAnonKb / 1024.0,6:F1}, pinned {s.VmPinKb} kB) " +
                $"fds {s.Fds,4} conns {s.ServerConnections,3} threads {s.Threads,3} | requests {s.Requests,9} ws-msgs {s.WebSocketMessages,7} " +
                $"resets {s.Resets,6} unexpected {s.UnexpectedErrors}");
        }

        TakeSample("idle"); // before any load: the server's idle descriptors and memory
        SortedDictionary<string, int>? idleFdKinds = sampler?.FdKinds();
        SortedDictionary<string, int>? baselineFdKinds = null;
        _phase = options.WarmupSeconds > 0 ? "warmup" : "load";

        Task samplerLoop = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.IntervalSeconds));
            try
            {
                while (await timer.WaitForNextTickAsync(stopSampling.Token))
                {
                    if (_phase == "warmup" && Now >= options.WarmupSeconds - options.IntervalSeconds / 2.0)
                    {
                        _phase = "load";
                    }
                    bool first = _baseline is null;
                    TakeSample(_phase);
                    if (first && _baseline is not null)
                    {
                        baselineFdKinds = sampler?.FdKinds();
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        });

        var workers = new List<Task>();
        void Start(Workload w, int count, Func<Random, CancellationToken, Task> op)
        {
            for (int i = 0; i < count; i++)
            {
                var rnd = new Random(HashCode.Combine(options.Seed, w, i));
                workers.Add(Task.Run(() => WorkerAsync(w, rnd, op, stats, stopLoad.Token)));
            }
        }
        Start(Workload.KeepAlive, options.KeepAliveWorkers, workloads.KeepAliveAsync);
        Start(Workload.Churn, options.ChurnWorkers, workloads.ChurnAsync);
        Start(Workload.Upload, options.UploadWorkers, workloads.UploadAsync);
        Start(Workload.WebSocket, options.WebSocketWorkers, workloads.WebSocketAsync);
        Start(Workload.Reset, options.ResetWorkers, workloads.ResetAsync);

        try
        {
            await Task.Delay(TimeSpan.FromSeconds(options.DurationSeconds), stopLoad.Token);
        }
        catch (OperationCanceledException)
        {
        }
        stopLoad.Cancel();
        _phase = "drain";
        await Task.WhenAll(workers); // each finishes its operation in hand (bounded by --op-timeout)
        workloads.Dispose();         // closes the idle keep-alive connections
        double loadStopped = Now;
        _phase = "settle";
        Console.WriteLine($"t={loadStopped:F1}s load stopped; the end sample comes {options.SettleSeconds} s later.");

        await Task.Delay(TimeSpan.FromSeconds(options.SettleSeconds));
        stopSampling.Cancel();
        await samplerLoop;
        ProcessSample? end = null;
        if (sampler is not null && !serverGone)
        {
            TakeSample("end");
            lock (_samplesLock) end = _samples[^1].Phase == "end" ? _samples[^1] : null;
        }
        SortedDictionary<string, int>? endFdKinds = end is null ? null : sampler?.FdKinds();
        double elapsed = Now;

        // ---- checks --------------------------------------------------------------------------------------------
        var checks = new List<Check>();
        long unexpected = stats.UnexpectedErrors;
        checks.Add(new Check("unexpected errors", unexpected == 0, $"{unexpected} (resets performed: {stats.Resets}, expected)"));
        if (sampler is not null)
        {
            checks.Add(new Check("server alive", !serverGone, serverGone ? "the server process exited during the run" : "yes"));
        }
        ProcessSample? idle;
        lock (_samplesLock) idle = _samples.FirstOrDefault(s => s.Phase == "idle");
        Trend? rssTrend = null, fdTrend = null, anonTrend = null, pinTrend = null;
        double rssToleranceKb = 0;
        if (_baseline is not null && end is not null)
        {
            ProcessSample b = _baseline;
            checks.Add(new Check("fds end <= baseline + " + options.FdTolerance, end.Fds <= b.Fds + options.FdTolerance,
                $"baseline {b.Fds}, end {end.Fds}" + (idle is null ? "" : $" (idle before load {idle.Fds})")));
            rssToleranceKb = Math.Max(options.RssToleranceMb * 1024, b.RssKb * options.RssTolerancePercent / 100);
            checks.Add(new Check($"RSS end <= baseline + max({options.RssToleranceMb} MB, {options.RssTolerancePercent}%)",
                end.RssKb <= b.RssKb + rssToleranceKb,
                $"baseline {Mb(b.RssKb)}, end {Mb(end.RssKb)} ({(end.RssKb - b.RssKb) / 1024.0:+0.0;-0.0} MB, tolerance {rssToleranceKb / 1024:F1} MB)"));
            checks.Add(new Check("pinned pages (VmPin) not grown", end.VmPinKb <= b.VmPinKb,
                $"baseline {b.VmPinKb} kB, end {end.VmPinKb} kB"));
            checks.Add(new Check("server TCP connections closed at end", end.ServerConnections == 0,
                $"{end.ServerConnections} not closed ({end.ServerCloseWait} in CLOSE_WAIT) on port {options.BaseUrl.Port}"));

            // Steady growth over the last half of the load: a least-squares line through those samples.
            List<ProcessSample> lastHalf;
            lock (_samplesLock)
            {
                lastHalf = _samples.Where(s => s.Phase == "load" && s.Time >= options.DurationSeconds / 2.0).ToList();
            }
            if (lastHalf.Count >= 4)
            {
                rssTrend = Trend.Fit(lastHalf, s => s.RssKb);
                anonTrend = Trend.Fit(lastHalf, s => s.RssAnonKb);
                fdTrend = Trend.Fit(lastHalf, s => s.Fds);
                pinTrend = Trend.Fit(lastHalf, s => s.VmPinKb);
                double rssLimitKb = Math.Max(options.TrendRssMb * 1024, b.RssKb * 0.05);
                checks.Add(new Check("no steady RSS growth over the last half of the load",
                    !(rssTrend.Growth > rssLimitKb && rssTrend.R2 >= 0.5),
                    $"{rssTrend.Growth / 1024:+0.0;-0.0} MB over {rssTrend.Span:F0} s by the fit (R^2 {rssTrend.R2:F2}); leak = more than {rssLimitKb / 1024:F1} MB with R^2 >= 0.5"));
                checks.Add(new Check("no steady fd growth over the last half of the load",
                    !(fdTrend.Growth > options.FdTolerance && fdTrend.R2 >= 0.5),
                    $"{fdTrend.Growth:+0.0;-0.0} fds over {fdTrend.Span:F0} s (R^2 {fdTrend.R2:F2}); leak = more than {options.FdTolerance} with R^2 >= 0.5"));
                checks.Add(new Check("no steady pinned-page growth over the last half of the load",
                    !(pinTrend.Growth > 1024 && pinTrend.R2 >= 0.5),
                    $"{pinTrend.Growth:+0;-0} kB over {pinTrend.Span:F0} s (R^2 {pinTrend.R2:F2})"));
            }
            else
            {
                checks.Add(new Check("trend over the last half of the load", true, $"skipped: only {lastHalf.Count} samples (run longer)"));
            }
        }
        else if (sampler is not null)
        {
            checks.Add(new Check("baseline and end samples", false, _baseline is null ? "no baseline sample" : "no end sample"));
        }
        bool passed = checks.All(c => c.Passed);

        // ---- summary -------------------------------------------------------------------------------------------
        Console.WriteLine();
        Console.WriteLine($"==== Soak summary: {(passed ? "PASSED" : "FAILED")} ====");
        Console.WriteLine($"Load {loadStopped:F0} s (configured {options.DurationSeconds} s), total {elapsed:F0} s, seed {options.Seed}");
        Console.WriteLine($"{"workload",-11} {"workers",7} {"ok",10} {"unexpected",10} {"MB moved",10}");
        foreach (Workload w in Enum.GetValues<Workload>())
        {
            Console.WriteLine($"{w,-11} {Workers(w),7} {stats.Ok(w),10} {stats.Errors(w),10} {stats.Bytes(w) / 1048576.0,10:F1}");
        }
        Console.WriteLine($"WebSocket messages echoed: {stats.WebSocketMessages}");
        Console.WriteLine("Resets by kind: " + string.Join(", ", stats.ResetKinds.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}")));
        if (stats.ErrorKinds.Count > 0)
        {
            Console.WriteLine("Unexpected errors by kind:");
            foreach (var kv in stats.ErrorKinds.OrderByDescending(k => k.Value)) Console.WriteLine($"  {kv.Value,6} x {kv.Key}");
        }
        if (idle is not null) Console.WriteLine($"Idle before load: rss {Mb(idle.RssKb)}, fds {idle.Fds}, threads {idle.Threads}");
        if (_baseline is not null) Console.WriteLine($"Baseline (t={_baseline.Time:F0}s): rss {Mb(_baseline.RssKb)} (anon {Mb(_baseline.RssAnonKb)}), fds {_baseline.Fds}, pinned {_baseline.VmPinKb} kB, threads {_baseline.Threads}");
        if (end is not null) Console.WriteLine($"End      (t={end.Time:F0}s): rss {Mb(end.RssKb)} (anon {Mb(end.RssAnonKb)}), fds {end.Fds}, pinned {end.VmPinKb} kB, threads {end.Threads}, server conns {end.ServerConnections}");
        if (baselineFdKinds is not null) Console.WriteLine("Baseline fds: " + Kinds(baselineFdKinds));
        if (endFdKinds is not null) Console.WriteLine("End fds:      " + Kinds(endFdKinds));
        foreach (Check c in checks) Console.WriteLine($"[{(c.Passed ? "PASS" : "FAIL")}] {c.Name}: {c.Detail}");

        if (options.SummaryJsonPath is not null)
        {
            var summary = new Dictionary<string, object?>
            {
                ["passed"] = passed,
                ["url"] = options.BaseUrl.ToString(),
                ["pid"] = options.Pid,
                ["seed"] = options.Seed,
                ["duration_configured_s"] = options.DurationSeconds,
                ["load_s"] = Math.Round(loadStopped, 1),
                ["total_s"] = Math.Round(elapsed, 1),
                ["warmup_s"] = options.WarmupSeconds,
                ["settle_s"] = options.SettleSeconds,
                ["interval_s"] = options.IntervalSeconds,
                ["max_upload_bytes"] = options.MaxUploadBytes,
                ["max_ws_message_bytes"] = options.MaxWebSocketMessageBytes,
                ["workloads"] = Enum.GetValues<Workload>().ToDictionary(w => w.ToString(), w => new Dictionary<string, object>
                {
                    ["workers"] = Workers(w),
                    ["ok"] = stats.Ok(w),
                    ["unexpected_errors"] = stats.Errors(w),
                    ["bytes"] = stats.Bytes(w),
                }),
                ["requests"] = stats.Requests,
                ["ws_messages"] = stats.WebSocketMessages,
                ["resets"] = stats.Resets,
                ["reset_kinds"] = stats.ResetKinds.OrderBy(k => k.Key).ToDictionary(k => k.Key, k => k.Value),
                ["unexpected_errors"] = unexpected,
                ["error_kinds"] = stats.ErrorKinds.OrderByDescending(k => k.Value).ToDictionary(k => k.Key, k => k.Value),
                ["error_samples"] = stats.ErrorSamples.ToArray(),
                ["idle"] = idle,
                ["baseline"] = _baseline,
                ["end"] = end,
                ["idle_fd_kinds"] = idleFdKinds,
                ["baseline_fd_kinds"] = baselineFdKinds,
                ["end_fd_kinds"] = endFdKinds,
                ["rss_tolerance_kb"] = Math.Round(rssToleranceKb),
                ["fd_tolerance"] = options.FdTolerance,
                ["trend_last_half"] = rssTrend is null ? null : new Dictionary<string, Trend?>
                {
                    ["rss_kb"] = rssTrend, ["rss_anon_kb"] = anonTrend, ["fds"] = fdTrend, ["vm_pin_kb"] = pinTrend,
                },
                ["checks"] = checks,
            };
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(options.SummaryJsonPath))!);
            await File.WriteAllTextAsync(options.SummaryJsonPath,
                JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
        }
        return passed ? 0 : 1;
    }

    private int Workers(Workload w) => w switch
    {
        Workload.KeepAlive => options.KeepAliveWorkers,
        Workload.Churn => options.ChurnWorkers,
        Workload.Upload => options.UploadWorkers,
        Workload.WebSocket => options.WebSocketWorkers,
        _ => options.ResetWorkers,
    };

    private async Task WorkerAsync(Workload w, Random rnd, Func<Random, CancellationToken, Task> op, SoakStats stats, CancellationToken stop)
    {
        await Task.Yield();
        while (!stop.IsCancellationRequested)
        {
            // Deliberately not linked to `stop`: an operation in hand finishes, so the end of the run makes no errors.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(options.OperationTimeoutSeconds));
            try
            {
                await op(rnd, timeout.Token);
            }
            catch (Exception e)
            {
                stats.Unexpected(w, _phase, e, timeout.IsCancellationRequested);
                try
                {
                    await Task.Delay(100, stop); // no hot loop if the server is down
                }
                catch (OperationCanceledException)
                {
                }
            }
        }
    }

    private static string Mb(long kb) => $"{kb / 1024.0:F1} MB";

    private static string Kinds(SortedDictionary<string, int> kinds) => string.Join(", ", kinds.Select(k => $"{k.Key} {k.Value}"));

    internal sealed record Check(string Name, bool Passed, string Detail);

    /// <summary>A least-squares line through (time, value): Growth is the fitted rise over the samples' time span.</summary>
    internal sealed record Trend(double SlopePerSecond, double R2, double Span, double Growth)
    {
        public static Trend Fit(IReadOnlyList<ProcessSample> samples, Func<ProcessSample, double> value)
        {
            int n = samples.Count;
            double mx = samples.Average(s => s.Time), my = samples.Average(value);
            double sxx = 0, sxy = 0, syy = 0;
            foreach (ProcessSample s in samples)
            {
                double dx = s.Time - mx, dy = value(s) - my;
                sxx += dx * dx;
                sxy += dx * dy;
                syy += dy * dy;
            }
            double slope = sxx == 0 ? 0 : sxy / sxx;
            double r2 = sxx == 0 || syy == 0 ? 0 : sxy * sxy / (sxx * syy);
            double span = samples[n - 1].Time - samples[0].Time;
            return new Trend(Math.Round(slope, 4), Math.Round(r2, 3), Math.Round(span, 1), Math.Round(slope * span, 1));
        }
    }
}

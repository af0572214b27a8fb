using System.Diagnostics;
using System.Globalization;
using Kestrel.Transport.IoUring.Tests.Semantics;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>What loadtests/chaos.sh asked for, from the environment.</summary>
internal sealed record ChaosLongRunSettings(double Minutes, int? Seed, string? Row, int Clients, long MaxTransfer, string? Transport, string? ReportPath)
{
    public static ChaosLongRunSettings FromEnvironment()
    {
        static string? Get(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        return new(
            double.Parse(Get("CHAOS_MINUTES") ?? "1", CultureInfo.InvariantCulture),
            Get("CHAOS_SEED") is { } seed ? int.Parse(seed, CultureInfo.InvariantCulture) : null,
            Get("CHAOS_ROW"),
            int.Parse(Get("CHAOS_CLIENTS") ?? "40", CultureInfo.InvariantCulture),
            long.Parse(Get("CHAOS_MAX_MB") ?? "64", CultureInfo.InvariantCulture) << 20,
            Get("CHAOS_TRANSPORT"),
            Get("CHAOS_REPORT"));
    }
}

/// <summary>
/// Random seeds for a while (or one given seed, once), each on io_uring and then, for reference, on Sockets; writes
/// the markdown report as it goes, so that an interrupted run still leaves one.
/// </summary>
internal static class ChaosLongRun
{
    public static async Task<List<ChaosRunResult>> RunAsync(ChaosLongRunSettings s, Action<string> log)
    {
        var clock = Stopwatch.StartNew();
        var runs = new List<ChaosRunResult>();
        var seeds = new Random();
        string[] transports = s.Transport is { } t ? [t] : [TransportUnderTest.IoUringRing, TransportUnderTest.Sockets];
        do
        {
            int seed = s.Seed ?? seeds.Next(1, int.MaxValue);
            var plan = ChaosPlan.Create(seed, s.Row, s.Clients, s.MaxTransfer);
            log(plan.Describe());
            foreach (string transport in transports)
            {
                // Sockets has no seam: its reference run has the same clients and no injected faults.
                var result = await ChaosRunner.RunAsync(transport == TransportUnderTest.Sockets ? plan with { Faults = FaultPlan.None } : plan, transport, log);
                runs.Add(result);
                log(ChaosReport.Summary(result));
                if (s.ReportPath is { } path)
                {
                    await File.WriteAllTextAsync(path, ChaosReport.Markdown(runs, clock.Elapsed));
                }
            }
        }
        while (s.Seed is null && clock.Elapsed.TotalMinutes < s.Minutes);
        return runs;
    }
}

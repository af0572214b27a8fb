using System.Diagnostics;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>What one seed did on one transport, and every invariant it broke.</summary>
internal sealed record ChaosRunResult(ChaosPlan Plan, string Transport, IReadOnlyList<ClientResult> Clients, IReadOnlyList<string> Failures, string Faults, TimeSpan Elapsed)
{
    public bool Passed => Failures.Count == 0;
}

/// <summary>
/// Runs one seed against a real server on one transport: starts it under the seed's row, attaches the seam's faults
/// to each ring, runs every client within its deadline (with the pool stress alongside, and maybe a ring failure),
/// then checks the invariants: every client's ending acceptable, connections and descriptors back to baseline,
/// graceful shutdown in time, no unobserved exception, nothing above Debug in the transport's connection category.
/// </summary>
internal static class ChaosRunner
{
    public static async Task<ChaosRunResult> RunAsync(ChaosPlan plan, string transport, Action<string> log)
    {
        var clock = Stopwatch.StartNew();
        var failures = new List<string>();
        var counts = new FaultCounts();
        var unobserved = new UnobservedExceptions();
        var baseline = ChaosInvariants.TakeBaseline();

        var (server, at) = await ChaosServer.StartAsync(transport, plan.Row);
        bool ioUring = transport == TransportUnderTest.IoUringRing;
        var injectors = ioUring && plan.Faults.Any ? AttachFaults(server, plan, counts) : [];
        var results = new List<ClientResult>();
        try
        {
            using var metrics = new TransportMetricsCollector(server.Services);
            using var pool = new ChaosMemoryPool(server.Services);
            results.AddRange(await RunClientsAsync(server, at, plan, ioUring, log));
            foreach (var injector in injectors)
            {
                injector.Quiesce();
            }
            failures.AddRange(results.Where(r => !r.Acceptable(plan.Faults)).Select(r => $"client {r.Plan}: {r.Outcome} after {r.Elapsed.TotalSeconds:F1}s ({r.Detail})"));
            await ChaosInvariants.CheckSettledAsync(metrics, pool, ioUring, failures);
        }
        finally
        {
            await ChaosInvariants.StopAsync(server, failures, log);
        }

        await ChaosInvariants.CheckAfterStopAsync(baseline, failures);
        failures.AddRange(ChaosLogCheck.Violations(server.Logs, transport, plan.Faults.FailARing && ioUring));
        failures.AddRange(unobserved.Collect());
        if (failures.Count > 0)
        {
            log("the transport's last log lines:\n" + ChaosLogCheck.Tail(server.Logs, 40));
        }
        return new ChaosRunResult(plan, transport, results, failures, counts.ToString(), clock.Elapsed);
    }

    private static List<ChaosFaults> AttachFaults(IoUringTestServer server, ChaosPlan plan, FaultCounts counts)
    {
        var injectors = new List<ChaosFaults>();
        foreach (RingThread ring in server.Factory.Rings)
        {
            var faults = new ChaosFaults(plan.Faults, plan.Seed * 31 + ring.Index, counts);
            ring.Ring.Faults = faults; // read by the ring thread from its next enter on
            injectors.Add(faults);
        }
        return injectors;
    }

    private static async Task<ClientResult[]> RunClientsAsync(IoUringTestServer server, ChaosServerAddresses at, ChaosPlan plan, bool ioUring, Action<string> log)
    {
        using var stopStress = new CancellationTokenSource();
        var stress = ChaosPoolStress.RunAsync(plan.Pool, plan.Seed, stopStress.Token);
        using var gate = new SemaphoreSlim(plan.Concurrency);
        int started = 0;
        var failing = ioUring && plan.Faults.FailARing && server.Factory.Rings.Count > 1 ? server.Factory.Rings[0] : null;
        var tasks = plan.Clients.Select(async p =>
        {
            await gate.WaitAsync();
            try
            {
                if (Interlocked.Increment(ref started) == plan.Clients.Count / 2 && failing?.Ring.Faults is ChaosFaults faults)
                {
                    // Half-way through, the first ring's next io_uring_enter fails (EINVAL): the ring fails and stops.
                    await RingAccess.RunOnRingAsync(failing, _ => faults.FailNextEnter());
                }
                return await ChaosClient.RunAsync(p, at, DeadlineFor(p));
            }
            finally
            {
                gate.Release();
            }
        }).ToArray();
        var results = await Task.WhenAll(tasks);
        stopStress.Cancel();
        await stress;
        log(string.Join(", ", results.GroupBy(r => (r.Plan.Kind, r.Outcome)).Select(g => $"{g.Key.Kind}/{g.Key.Outcome} {g.Count()}")));
        return results;
    }

    /// <summary>Generous, for a loaded 2-core machine: a base, plus time per MiB moved (slow readers and pauses included).</summary>
    private static TimeSpan DeadlineFor(ClientPlan p)
        => TimeSpan.FromSeconds(30 + 2.0 * p.Count * p.Size / (1 << 20)) + TimeSpan.FromMilliseconds(p.PauseMs * 4);
}

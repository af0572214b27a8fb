using System.Diagnostics;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>What the process held before a seed's server started: the baseline the leak checks compare with.</summary>
internal sealed record ChaosBaseline(int SocketsAndRings, Dictionary<string, string> Descriptors, long WorkingSet);

/// <summary>
/// The server-side invariants of a seed: once every client ended, no connection is open and every pinned block is
/// back; shutdown completes in time; after it, sockets and rings are back to the baseline and RSS stayed bounded.
/// Counters and gauges have no event to await: the checks poll, bounded by <see cref="SettleTimeout"/>.
/// </summary>
internal static class ChaosInvariants
{
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan ShutdownLimit = TimeSpan.FromSeconds(15); // the host's 10 s timeout, plus slack
    private const long RssGrowthLimit = 2L << 30;

    public static ChaosBaseline TakeBaseline() => new(FdCounter.CountSocketsAndRings(), FdCounter.Snapshot(), Environment.WorkingSet);

    public static async Task CheckSettledAsync(TransportMetricsCollector metrics, ChaosMemoryPool pool, bool ioUring, List<string> failures)
    {
        if (ioUring && await PollAsync(() => metrics.Observe("iouring.connection.active"), active => active == 0) is long active and > 0)
        {
            failures.Add($"{active} connections still open {SettleTimeout.TotalSeconds}s after every client ended");
        }
        if (pool.Measurements == 0)
        {
            failures.Add("the memory pools reported nothing: the pinned-block check cannot see them");
        }
        else if (await PollAsync(pool.Outstanding, outstanding => outstanding.Length == 0) is { Length: > 0 } outstanding)
        {
            failures.Add($"pinned blocks still rented after every connection closed: {outstanding}");
        }
    }

    public static async Task StopAsync(IoUringTestServer server, List<string> failures, Action<string> log)
    {
        var stopping = Stopwatch.StartNew();
        var stopped = server.StopAsync();
        if (await Task.WhenAny(stopped, Task.Delay(ShutdownLimit)) != stopped)
        {
            failures.Add($"graceful shutdown still running after {ShutdownLimit.TotalSeconds}s");
        }
        else
        {
            log($"shutdown took {stopping.Elapsed.TotalSeconds:F1}s");
        }
        try
        {
            await server.DisposeAsync().AsTask().WaitAsync(ShutdownLimit);
        }
        catch (Exception e)
        {
            failures.Add($"dispose: {e.GetType().Name}: {e.Message}");
        }
    }

    public static async Task CheckAfterStopAsync(ChaosBaseline baseline, List<string> failures)
    {
        int after = await FdCounter.WaitForSocketsAndRingsAtMostAsync(baseline.SocketsAndRings, SettleTimeout);
        if (after > baseline.SocketsAndRings)
        {
            failures.Add($"sockets and rings: {after} open after the server stopped, {baseline.SocketsAndRings} before it started (new: {NewSocketsAndRings(baseline.Descriptors)})");
        }
        long growth = Environment.WorkingSet - baseline.WorkingSet;
        if (growth > RssGrowthLimit)
        {
            failures.Add($"RSS grew by {growth >> 20} MiB during the seed");
        }
    }

    private static string NewSocketsAndRings(Dictionary<string, string> before)
        => string.Join(", ", FdCounter.Snapshot()
            .Where(kv => kv.Value.StartsWith("socket:", StringComparison.Ordinal) || kv.Value.StartsWith("anon_inode:", StringComparison.Ordinal))
            .Where(kv => !before.TryGetValue(kv.Key, out var was) || was != kv.Value)
            .Select(kv => $"{kv.Key} -> {kv.Value}"));

    private static async Task<T> PollAsync<T>(Func<T> read, Func<T, bool> settled)
    {
        var deadline = DateTime.UtcNow + SettleTimeout;
        T value;
        while (!settled(value = read()) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        return value;
    }
}

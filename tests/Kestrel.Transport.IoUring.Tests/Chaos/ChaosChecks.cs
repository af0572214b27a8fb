using System.Collections.Concurrent;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>The log invariants of a seed.</summary>
internal static partial class ChaosLogCheck
{
    /// <summary>
    /// Whatever the clients do, the transport's connection category stays at Debug or below (what Kestrel's own tests
    /// assert), and no category of the transport logs an error; a ring failure the seed injected is the one exception,
    /// reported at Critical/Error by design.
    /// </summary>
    public static IEnumerable<string> Violations(TestLogSink logs, string transport, bool ringFailureInjected)
    {
        string connectionCategory = TransportUnderTest.CategoryOf(transport);
        foreach (var r in logs.Records)
        {
            bool transportCategory = r.Category.StartsWith(TransportUnderTest.IoUringCategory, StringComparison.Ordinal) || r.Category == connectionCategory;
            bool tooLoud = r.Category == connectionCategory ? r.Level > LogLevel.Debug : transportCategory && r.Level >= LogLevel.Error;
            if (tooLoud && !(ringFailureInjected && r.Level >= LogLevel.Warning))
            {
                yield return $"log {r.Level} {r.Category}/{r.EventId.Name}: {r.Message} {r.Exception?.GetType().Name} {r.Exception?.Message}";
            }
        }
    }
}

internal static partial class ChaosLogCheck
{
    /// <summary>The last <paramref name="count"/> records of the transports' categories, for a failing seed's output.</summary>
    public static string Tail(TestLogSink logs, int count)
        => string.Join("\n", logs.Records
            .Where(r => r.Category.StartsWith(TransportUnderTest.IoUringCategory, StringComparison.Ordinal) || r.Category == TransportUnderTest.SocketsCategory)
            .TakeLast(count)
            .Select(r => $"  {r.Level} {r.Category}/{r.EventId.Name}: {r.Message} {r.Exception?.GetType().Name}"));
}

/// <summary>Collects TaskScheduler.UnobservedTaskException while a seed runs.</summary>
internal sealed class UnobservedExceptions
{
    private readonly ConcurrentQueue<string> _seen = new();

    public UnobservedExceptions()
    {
        TaskScheduler.UnobservedTaskException += OnUnobserved;
    }

    private void OnUnobserved(object? sender, UnobservedTaskExceptionEventArgs e)
        => _seen.Enqueue($"unobserved task exception: {e.Exception.InnerException?.GetType().Name}: {e.Exception.InnerException?.Message}");

    /// <summary>Finalizes what became garbage (an unobserved faulted task is reported by its finalizer), then stops listening.</summary>
    public IEnumerable<string> Collect()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        TaskScheduler.UnobservedTaskException -= OnUnobserved;
        return _seen.ToArray();
    }
}

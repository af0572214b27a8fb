using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>
/// Pinned blocks out of the server's memory pools (Kestrel's and the transport's, from the host's IMemoryPoolFactory):
/// bytes allocated, minus evicted, minus pooled (available for reuse), per pool owner. With every connection closed,
/// every block is back: this is 0.
/// </summary>
internal sealed class ChaosMemoryPool : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, long> _outstanding = new();
    private long _measurements;

    /// <summary>Measurements seen: 0 would mean the check sees nothing (the instruments were renamed), not that all is back.</summary>
    public long Measurements => Interlocked.Read(ref _measurements);

    public ChaosMemoryPool(IServiceProvider services)
    {
        object scope = services.GetRequiredService<IMeterFactory>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Microsoft.AspNetCore.MemoryPool" && ReferenceEquals(instrument.Meter.Scope, scope)
                && instrument.Name is "aspnetcore.memory_pool.allocated" or "aspnetcore.memory_pool.evicted" or "aspnetcore.memory_pool.pooled")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string owner = "?";
            foreach (var tag in tags)
            {
                if (tag.Key == "aspnetcore.memory_pool.owner" || tag.Key == "owner")
                {
                    owner = tag.Value?.ToString() ?? "?";
                }
            }
            Interlocked.Increment(ref _measurements);
            long delta = instrument.Name == "aspnetcore.memory_pool.allocated" ? value : -value;
            _outstanding.AddOrUpdate(owner, delta, (_, old) => old + delta);
        });
        _listener.Start();
    }

    /// <summary>Pools with blocks still rented, e.g. "kestrel 8192 B"; empty when all are back.</summary>
    public string Outstanding() => string.Join(", ", _outstanding.Where(kv => kv.Value != 0).Select(kv => $"{kv.Key} {kv.Value} B"));

    public void Dispose() => _listener.Dispose();
}

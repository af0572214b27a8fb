using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// Sums the transport's instruments for one server only: the transport's Meter comes from the host's IMeterFactory,
/// so filtering on Meter.Scope keeps tests that run side by side apart.
/// </summary>
internal sealed class TransportMetricsCollector : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, long> _totals = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _firstRecorded = new();

    public TransportMetricsCollector(IServiceProvider services)
    {
        object scope = services.GetRequiredService<IMeterFactory>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Kestrel.Transport.IoUring" && ReferenceEquals(instrument.Meter.Scope, scope))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            _totals.AddOrUpdate(instrument.Name, value, (_, old) => old + value);
            if (_firstRecorded.TryGetValue(instrument.Name, out var recorded))
            {
                recorded.TrySetResult();
            }
        });
        _listener.Start();
    }

    /// <summary>The sum of everything an instrument recorded (for histograms: the sum of the recorded values).</summary>
    public long Total(string instrument) => _totals.TryGetValue(instrument, out long v) ? v : 0;

    /// <summary>Completes once an instrument has recorded anything (at once if it already has).</summary>
    public Task Recorded(string instrument)
    {
        var recorded = _firstRecorded.GetOrAdd(instrument, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        if (Total(instrument) != 0)
        {
            recorded.TrySetResult(); // recorded before this waiter was registered
        }
        return recorded.Task;
    }

    /// <summary>Reads observable instruments (e.g. iouring.connections.active) now and returns the last value.</summary>
    public long Observe(string instrument)
    {
        _totals.TryRemove(instrument, out _);
        _listener.RecordObservableInstruments();
        return Total(instrument);
    }

    public void Dispose() => _listener.Dispose();
}

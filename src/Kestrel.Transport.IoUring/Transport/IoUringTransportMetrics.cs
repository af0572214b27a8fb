using System.Diagnostics.Metrics;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The transport's instruments, on the Meter "Kestrel.Transport.IoUring" (OpenTelemetry: AddMeter; dotnet-counters:
/// --counters Kestrel.Transport.IoUring). Names and units follow the OpenTelemetry conventions (dot-separated
/// namespaces, UCUM units, no unit or "total" in names); per-ring figures carry the tag <see cref="RingTag"/>, taken
/// from a handle each ring builds once (<see cref="ForRing"/>), so tagging costs nothing per operation. One instance
/// per transport factory; the Meter comes from IMeterFactory when DI has one, so each host's instruments stay apart.
/// </summary>
internal sealed class IoUringTransportMetrics : IDisposable
{
    public const string MeterName = "Kestrel.Transport.IoUring";

    /// <summary>The tag naming the ring a measurement belongs to (its index, from 0).</summary>
    public const string RingTag = "iouring.ring.id";

    private readonly Meter _meter;
    private readonly List<RingMetrics> _rings = new();

    public IoUringTransportMetrics(IMeterFactory? meterFactory)
    {
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _meter.CreateObservableUpDownCounter("iouring.connection.active", ObserveActiveConnections, "{connection}", "Connections open now, per ring.");
        _meter.CreateObservableUpDownCounter("iouring.dispatch.waiting", ObserveDispatchWaiting, "{continuation}",
            "Application continuations waiting in a ring's dispatch for a pool thread, per ring and band (quick, new, slow).");
        ConnectionsAccepted = _meter.CreateCounter<long>("iouring.connection.accepted", "{connection}", "Connections accepted, per ring.");
        var networkIo = _meter.CreateCounter<long>("iouring.network.io", "By", "Payload bytes received from and sent to clients (tag network.io.direction).");
        BytesReceived = new TaggedCounter(networkIo, new("network.io.direction", "receive"));
        BytesSent = new TaggedCounter(networkIo, new("network.io.direction", "transmit"));
        DirectSends = _meter.CreateCounter<long>("iouring.sends.direct", "{send}", "Sends made by the flushing thread itself with a non-blocking send(2).");
        RingSends = _meter.CreateCounter<long>("iouring.sends.ring", "{send}", "Sends made through the ring (SEND, SENDMSG, SEND_ZC).");
        Enters = _meter.CreateCounter<long>("iouring.enter.calls", "{call}", "io_uring_enter system calls, per ring.");
        SqesPerEnter = _meter.CreateHistogram<long>("iouring.enter.submitted", "{sqe}", "SQEs submitted by one io_uring_enter, per ring.");
        Submitted = _meter.CreateCounter<long>("iouring.sqe.submitted", "{sqe}", "SQEs submitted, per ring.");
        CqOverflows = _meter.CreateCounter<long>("iouring.cq.overflows", "{overflow}", "Times the completion queue overflowed into the kernel's backlog, per ring.");
        NoBufferRearms = _meter.CreateCounter<long>("iouring.recv.no_buffers", "{rearm}", "Multishot receives re-armed after the ring's provided buffers ran out (ENOBUFS), per ring.");
        ZeroCopySends = _meter.CreateCounter<long>("iouring.send_zc.sends", "{send}", "Zero-copy sends completed, per ring.");
        ZeroCopyCopies = _meter.CreateCounter<long>("iouring.send_zc.copied", "{send}", "Zero-copy sends the kernel copied anyway, per ring.");
        AcceptPauses = _meter.CreateCounter<long>("iouring.accept.pauses", "{pause}", "Times accepting paused for lack of descriptors or memory, per ring.");
        FixedFileTableFull = _meter.CreateCounter<long>("iouring.fixed_files.exhausted", "{connection}", "Connections that got no registered-file slot, per ring.");
        Wakeups = _meter.CreateCounter<long>("iouring.ring.wakeups", "{wakeup}", "Cross-thread wake-ups of a sleeping ring, per ring.");
        Yields = _meter.CreateCounter<long>("iouring.ring.yields", "{yield}", "Turns in which a ring gave its core to the application work it had just handed to the thread pool instead of sleeping, per ring.");
        Fallbacks = _meter.CreateCounter<long>("iouring.fallbacks", "{fallback}", "Times the transport fell back to Sockets.");
        RingFailures = _meter.CreateCounter<long>("iouring.ring.failures", "{ring}", "Rings that failed and stopped (their connections were reset).");
    }

    internal Counter<long> ConnectionsAccepted { get; }
    public TaggedCounter BytesReceived { get; }
    public TaggedCounter BytesSent { get; }
    public Counter<long> DirectSends { get; }
    public Counter<long> RingSends { get; }
    internal Counter<long> Enters { get; }
    internal Histogram<long> SqesPerEnter { get; }
    internal Counter<long> Submitted { get; }
    internal Counter<long> CqOverflows { get; }
    internal Counter<long> NoBufferRearms { get; }
    internal Counter<long> ZeroCopySends { get; }
    internal Counter<long> ZeroCopyCopies { get; }
    internal Counter<long> AcceptPauses { get; }
    internal Counter<long> FixedFileTableFull { get; }
    internal Counter<long> Wakeups { get; }
    internal Counter<long> Yields { get; }
    public Counter<long> Fallbacks { get; }
    public Counter<long> RingFailures { get; }

    /// <summary>The instruments of one ring, each with that ring's tag built once.</summary>
    public RingMetrics ForRing(int ringId)
    {
        var ring = new RingMetrics(this, ringId);
        lock (_rings)
        {
            _rings.Add(ring);
        }
        return ring;
    }

    private IEnumerable<Measurement<long>> ObserveActiveConnections()
    {
        RingMetrics[] rings;
        lock (_rings)
        {
            rings = _rings.ToArray();
        }
        foreach (var ring in rings)
        {
            yield return new Measurement<long>(ring.ActiveConnections, ring.Tag);
        }
    }

    private static readonly KeyValuePair<string, object?> s_quickBand = new(DispatchBandTag, "quick");
    private static readonly KeyValuePair<string, object?> s_newBand = new(DispatchBandTag, "new");
    private static readonly KeyValuePair<string, object?> s_slowBand = new(DispatchBandTag, "slow");

    /// <summary>The tag naming a dispatch band (see ApplicationDispatch): quick, new or slow.</summary>
    public const string DispatchBandTag = "iouring.dispatch.band";

    private IEnumerable<Measurement<long>> ObserveDispatchWaiting()
    {
        RingMetrics[] rings;
        lock (_rings)
        {
            rings = _rings.ToArray();
        }
        foreach (var ring in rings)
        {
            if (ring.Dispatch is { } dispatch)
            {
                var (quick, fresh, slow) = dispatch.Waiting;
                yield return new Measurement<long>(quick, ring.Tag, s_quickBand);
                yield return new Measurement<long>(fresh, ring.Tag, s_newBand);
                yield return new Measurement<long>(slow, ring.Tag, s_slowBand);
            }
        }
    }

    public void Dispose() => _meter.Dispose();
}

/// <summary>A counter and the one tag its measurements from this call site carry.</summary>
internal readonly struct TaggedCounter(Counter<long> counter, KeyValuePair<string, object?> tag)
{
    public void Add(long value) => counter.Add(value, tag);
}

using System.Diagnostics.Metrics;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The transport's instruments, on the Meter "Kestrel.Transport.IoUring" (OpenTelemetry: AddMeter; dotnet-counters:
/// --counters Kestrel.Transport.IoUring). One instance per transport factory; the Meter comes from IMeterFactory when
/// DI has one, so each host's instruments stay apart.
/// </summary>
internal sealed class IoUringTransportMetrics : IDisposable
{
    public const string MeterName = "Kestrel.Transport.IoUring";

    private readonly Meter _meter;
    private long _activeConnections;

    public IoUringTransportMetrics(IMeterFactory? meterFactory)
    {
        _meter = meterFactory?.Create(MeterName) ?? new Meter(MeterName);
        _meter.CreateObservableUpDownCounter("iouring.connections.active", () => Volatile.Read(ref _activeConnections), "{connection}", "Connections open now.");
        ConnectionsTotal = _meter.CreateCounter<long>("iouring.connections.total", "{connection}", "Connections accepted.");
        BytesReceived = _meter.CreateCounter<long>("iouring.bytes.received", "By", "Bytes received from clients.");
        BytesSent = _meter.CreateCounter<long>("iouring.bytes.sent", "By", "Bytes sent to clients.");
        DirectSends = _meter.CreateCounter<long>("iouring.sends.direct", "{send}", "Sends made by the flushing thread itself with a non-blocking send(2).");
        RingSends = _meter.CreateCounter<long>("iouring.sends.ring", "{send}", "Sends made through the ring (SEND, SENDMSG, SEND_ZC).");
        Enters = _meter.CreateCounter<long>("iouring.enter.calls", "{call}", "io_uring_enter system calls.");
        SqesPerEnter = _meter.CreateHistogram<long>("iouring.enter.sqes", "{sqe}", "SQEs submitted by one io_uring_enter.");
        Submitted = _meter.CreateCounter<long>("iouring.sqes.submitted", "{sqe}", "SQEs submitted.");
        CqOverflows = _meter.CreateCounter<long>("iouring.cq.overflows", "{event}", "Times the completion queue overflowed into the kernel's backlog.");
        NoBufferRearms = _meter.CreateCounter<long>("iouring.recv.enobufs_rearms", "{event}", "Multishot receives re-armed after the buffer ring ran dry (ENOBUFS).");
        ZeroCopySends = _meter.CreateCounter<long>("iouring.send_zc.sends", "{send}", "Zero-copy sends completed.");
        ZeroCopyCopies = _meter.CreateCounter<long>("iouring.send_zc.copies", "{send}", "Zero-copy sends the kernel copied anyway.");
        AcceptPauses = _meter.CreateCounter<long>("iouring.accept.pauses", "{event}", "Times accepting paused for lack of descriptors or memory.");
        FixedFileTableFull = _meter.CreateCounter<long>("iouring.fixed_files.full", "{event}", "Connections that got no registered-file slot.");
        Wakeups = _meter.CreateCounter<long>("iouring.wakeups", "{event}", "Cross-thread wake-ups of a sleeping ring.");
        Fallbacks = _meter.CreateCounter<long>("iouring.fallbacks", "{event}", "Times the transport fell back to Sockets.");
        RingFailures = _meter.CreateCounter<long>("iouring.rings.failed", "{ring}", "Rings that failed and stopped (their connections were reset).");
    }

    public Counter<long> ConnectionsTotal { get; }
    public Counter<long> BytesReceived { get; }
    public Counter<long> BytesSent { get; }
    public Counter<long> DirectSends { get; }
    public Counter<long> RingSends { get; }
    public Counter<long> Enters { get; }
    public Histogram<long> SqesPerEnter { get; }
    public Counter<long> Submitted { get; }
    public Counter<long> CqOverflows { get; }
    public Counter<long> NoBufferRearms { get; }
    public Counter<long> ZeroCopySends { get; }
    public Counter<long> ZeroCopyCopies { get; }
    public Counter<long> AcceptPauses { get; }
    public Counter<long> FixedFileTableFull { get; }
    public Counter<long> Wakeups { get; }
    public Counter<long> Fallbacks { get; }
    public Counter<long> RingFailures { get; }

    public long ActiveConnections => Volatile.Read(ref _activeConnections);

    public void OnConnectionAccepted()
    {
        Interlocked.Increment(ref _activeConnections);
        ConnectionsTotal.Add(1);
    }

    public void OnConnectionClosed() => Interlocked.Decrement(ref _activeConnections);

    public void RecordEnter(long sqes)
    {
        Enters.Add(1);
        if (sqes > 0)
        {
            Submitted.Add(sqes);
            SqesPerEnter.Record(sqes);
        }
    }

    public void Dispose() => _meter.Dispose();
}

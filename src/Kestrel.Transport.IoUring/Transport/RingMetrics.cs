using System.Diagnostics.Metrics;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// One ring's handle on the transport's instruments: every measurement carries the ring's id tag, boxed once here,
/// so a ring records with no per-operation tag work.
/// </summary>
internal sealed class RingMetrics
{
    private long _activeConnections;

    public RingMetrics(IoUringTransportMetrics shared, int ringId)
    {
        Tag = new KeyValuePair<string, object?>(IoUringTransportMetrics.RingTag, ringId);
        Enters = new TaggedCounter(shared.Enters, Tag);
        Submitted = new TaggedCounter(shared.Submitted, Tag);
        CqOverflows = new TaggedCounter(shared.CqOverflows, Tag);
        NoBufferRearms = new TaggedCounter(shared.NoBufferRearms, Tag);
        ZeroCopySends = new TaggedCounter(shared.ZeroCopySends, Tag);
        ZeroCopyCopies = new TaggedCounter(shared.ZeroCopyCopies, Tag);
        AcceptPauses = new TaggedCounter(shared.AcceptPauses, Tag);
        FixedFileTableFull = new TaggedCounter(shared.FixedFileTableFull, Tag);
        Wakeups = new TaggedCounter(shared.Wakeups, Tag);
        Yields = new TaggedCounter(shared.Yields, Tag);
        ConnectionsAccepted = new TaggedCounter(shared.ConnectionsAccepted, Tag);
        SqesPerEnter = shared.SqesPerEnter;
    }

    public KeyValuePair<string, object?> Tag { get; }

    private Histogram<long> SqesPerEnter { get; }
    private TaggedCounter ConnectionsAccepted { get; }
    public TaggedCounter Enters { get; }
    public TaggedCounter Submitted { get; }
    public TaggedCounter CqOverflows { get; }
    public TaggedCounter NoBufferRearms { get; }
    public TaggedCounter ZeroCopySends { get; }
    public TaggedCounter ZeroCopyCopies { get; }
    public TaggedCounter AcceptPauses { get; }
    public TaggedCounter FixedFileTableFull { get; }
    public TaggedCounter Wakeups { get; }
    public TaggedCounter Yields { get; }

    /// <summary>The ring's application dispatch (default scheduling), observed by iouring.dispatch.waiting.</summary>
    public ApplicationDispatch? Dispatch { get; set; }

    /// <summary>Connections of this ring open now.</summary>
    public long ActiveConnections => Volatile.Read(ref _activeConnections);

    public void OnConnectionAccepted()
    {
        Interlocked.Increment(ref _activeConnections);
        ConnectionsAccepted.Add(1);
    }

    public void OnConnectionClosed() => Interlocked.Decrement(ref _activeConnections);

    public void RecordEnter(long sqes)
    {
        Enters.Add(1);
        if (sqes > 0)
        {
            Submitted.Add(sqes);
            SqesPerEnter.Record(sqes, Tag);
        }
    }
}

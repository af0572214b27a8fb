using System.IO.Pipelines;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The reader scheduler of one connection's input pipe in the default scheduling mode: Kestrel's read continuations
/// go to the ring's <see cref="ApplicationDispatch"/>, filed by how this connection's last one went.
/// </summary>
internal sealed class DispatchedConnectionScheduler(ApplicationDispatch dispatch) : PipeScheduler
{
    private volatile ConnectionRunHistory _lastRun;

    /// <summary>Written by the pool thread that ran the connection's last continuation, read where the next is filed.</summary>
    public ConnectionRunHistory LastRun
    {
        get => _lastRun;
        set => _lastRun = value;
    }

    public override void Schedule(Action<object?> action, object? state) => dispatch.Enqueue(this, action, state);
}

/// <summary>How a connection's last application continuation went, which decides when its next one runs.</summary>
internal enum ConnectionRunHistory
{
    /// <summary>None has run yet: the connection's first request.</summary>
    New,

    /// <summary>It returned its pool thread within <see cref="ApplicationDispatch.SlowRun"/>.</summary>
    Quick,

    /// <summary>It held its pool thread for <see cref="ApplicationDispatch.SlowRun"/> or more.</summary>
    Slow,
}

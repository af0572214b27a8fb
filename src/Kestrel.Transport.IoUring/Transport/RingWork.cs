using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Work handed to a ring that holds something which must not be dropped silently if the ring fails or stops before running it
/// (a descriptor, a caller waiting): <see cref="Abandon"/> releases it instead.
/// </summary>
internal interface IAbandonableWork
{
    /// <summary>The ring failed, or its loop ended, before running this work. Any thread.</summary>
    void Abandon();
}

/// <summary>An accepted descriptor handed from the accepting ring to the ring whose turn it is.</summary>
internal sealed class ConnectionHandOff(RingThread target, IoUringConnectionListener listener, int fd, DescriptorBudget descriptors) : IAbandonableWork
{
    public RingThread Target { get; } = target;
    public IoUringConnectionListener Listener { get; } = listener;
    public int Fd { get; } = fd;

    /// <summary>Refused as a closed listener would: RST, and its place in the budget back.</summary>
    public void Abandon() => AcceptedDescriptor.Refuse(Fd, countedIn: descriptors);
}

/// <summary>A listener asking a ring to accept for it.</summary>
internal sealed class AcceptorRequest(RingThread target, IoUringConnectionListener listener) : IAbandonableWork
{
    public RingThread Target { get; } = target;
    public IoUringConnectionListener Listener { get; } = listener;

    public TaskCompletionSource<Acceptor?> Armed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Abandon() => Armed.TrySetException(new RingFailedException("The io_uring ring failed or stopped before it could accept."));
}

/// <summary>The ring asked to do something has failed (or stopped) and takes no more work.</summary>
internal sealed class RingFailedException(string message) : ConnectionAbortedException(message);

using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>A listener's multishot accept on one ring. Ring-thread state, except <see cref="Finished"/>.</summary>
internal sealed class Acceptor(IoUringConnectionListener listener, int index)
{
    public IoUringConnectionListener Listener { get; } = listener;

    /// <summary>The acceptor's index in its ring's table; never reused, so no generation is needed.</summary>
    public int Index { get; } = index;

    /// <summary>The multishot accept is in the kernel.</summary>
    public bool Armed { get; set; }

    /// <summary>Accepting waits out a shortage of descriptors (a timeout is in the kernel).</summary>
    public bool Paused { get; set; }

    /// <summary>The accept in the kernel is multishot (it may take a whole backlog at once).</summary>
    public bool Multishot { get; set; }

    /// <summary>A limit-watch timeout is in the kernel (see RingThread.LimitWatch).</summary>
    public bool Watching { get; set; }

    /// <summary>The kernel holds a request of this acceptor: its accept, its pause or its limit watch.</summary>
    public bool InKernel => Armed || Paused || Watching;

    /// <summary>Unbind asked this acceptor to stop.</summary>
    public bool Stopped { get; set; }

    public ulong UserData => Core.UserData.Encode(OperationKind.Accept, 0, Index);

    public ulong PauseUserData => Core.UserData.Encode(OperationKind.Timeout, PauseMarker, Index);

    public ulong WatchUserData => Core.UserData.Encode(OperationKind.Timeout, WatchMarker, Index);

    /// <summary>Generation bits that tell the acceptor's two timeouts apart.</summary>
    public const uint PauseMarker = 0, WatchMarker = 1;

    /// <summary>Completes when the kernel holds nothing more of this acceptor.</summary>
    public TaskCompletionSource Finished { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

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

    /// <summary>Unbind asked this acceptor to stop.</summary>
    public bool Stopped { get; set; }

    public ulong UserData => Core.UserData.Encode(OperationKind.Accept, 0, Index);

    public ulong PauseUserData => Core.UserData.Encode(OperationKind.Timeout, 0, Index);

    /// <summary>Completes when the kernel holds nothing more of this acceptor.</summary>
    public TaskCompletionSource Finished { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Zero-copy sending on one ring: whether it is on (the ring turns it off by itself where the kernel reports that it
/// copied anyway: loopback, NICs without scatter-gather), the registered send arena, and the arena's chunks, which go
/// back only when the kernel no longer reads them. Ring-thread only.
/// </summary>
internal sealed class ZeroCopySends(IoUringTransportContext context, RingMetrics metrics, int ringIndex, RegisteredBufferArena? arena) : IDisposable
{
    /// <summary>Sends of at least the threshold use SEND_ZC.</summary>
    public bool Enabled { get; private set; } = context.Options.ZeroCopySendThreshold > 0 && context.Capabilities.SendZeroCopy;

    /// <summary>Registered send memory, when configured and registered.</summary>
    public RegisteredBufferArena? Arena => arena;

    /// <summary>Zero-copy sends whose notification arrived.</summary>
    public long Sends { get; private set; }

    /// <summary>Of those, the ones the kernel copied anyway.</summary>
    public long Copies { get; private set; }

    /// <summary>Some arena chunk is still the kernel's (a send or its notification outstanding).</summary>
    public bool ArenaInUse => arena is { } a && a.FreeChunks != a.ChunkCount;

    /// <summary>A zero-copy send's notification: the kernel no longer reads its memory.</summary>
    public void OnNotification(bool copied)
    {
        Sends++;
        metrics.ZeroCopySends.Add(1);
        if (!copied)
        {
            return;
        }
        Copies++;
        metrics.ZeroCopyCopies.Add(1);
        // Copying means zero-copy only added its notification overhead (loopback, NICs without SG): stop using it.
        if (Enabled && Sends >= 8 && Copies * 2 > Sends)
        {
            Enabled = false;
            context.Log.ZeroCopyDisabled(ringIndex, Copies, Sends);
        }
    }

    /// <summary>
    /// A completion of an arena SEND_ZC. Its chunk, whose index travels in the generation bits, goes back after the
    /// notification, or after a result that no notification follows. Returns true when it is the send's result, which
    /// belongs to the connection (the notification may come after the connection is gone).
    /// </summary>
    public bool OnArenaCompletion(in IoUringCqe cqe)
    {
        if (cqe.IsNotification || !cqe.HasMore)
        {
            arena!.Return((int)UserData.GenerationOf(cqe.UserData));
        }
        if (cqe.IsNotification)
        {
            OnNotification(((uint)cqe.Result & IoUringValues.NotifUsageZcCopied) != 0);
            return false;
        }
        return true;
    }

    public void Dispose() => arena?.Dispose();
}

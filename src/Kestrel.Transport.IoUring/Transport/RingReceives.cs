using System.Runtime.CompilerServices;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The receive side of one ring: its provided buffer ring, shared by all its connections, and the two things a turn
/// does for them after the completions are dispatched: one input flush per connection that received bytes (a burst
/// of receives wakes the reader once), and the re-arming of multishot receives that ended (after recycled buffers
/// are published, so an ENOBUFS re-arm finds buffers). Ring-thread only.
/// </summary>
internal sealed class RingReceives(Ring ring, ProvidedBufferRing buffers, RingMetrics metrics)
{
    private readonly List<IoUringConnection> _rearms = new();
    private readonly List<IoUringConnection> _flushes = new();

    public ProvidedBufferRing Buffers => buffers;

    /// <summary>The bytes a recv completion delivered; copy them out, then <see cref="Release"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReadOnlySpan<byte> Received(in IoUringCqe cqe) => buffers.Received(cqe.BufferId, cqe.Result);

    /// <summary>Gives a completion's buffer back to the kernel (published at the end of the turn).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(in IoUringCqe cqe)
        => buffers.Release(cqe.BufferId, Math.Max(cqe.Result, 0), (cqe.Flags & CqeFlags.BufferMore) != 0);

    /// <summary>A multishot recv ended with ENOBUFS: the buffer ring ran dry.</summary>
    public void OnExhausted()
    {
        buffers.RecordExhausted();
        metrics.NoBufferRearms.Add(1);
    }

    /// <summary>Re-arms <paramref name="connection"/>'s multishot recv at the end of this turn, after recycled buffers are published.</summary>
    public void QueueRearm(IoUringConnection connection) => _rearms.Add(connection);

    /// <summary>Flushes <paramref name="connection"/>'s input pipe after the current batch of completions.</summary>
    public void QueueFlush(IoUringConnection connection) => _flushes.Add(connection);

    /// <summary>Flushes the input of every connection that received bytes in the batch; an exception ends only that connection.</summary>
    public void FlushQueued()
    {
        // Index loop: a flush may run application code inline, which may queue more.
        for (int i = 0; i < _flushes.Count; i++)
        {
            try
            {
                _flushes[i].FlushQueuedInput();
            }
            catch (Exception e) when (!RingThread.IsFatal(e, ring))
            {
                _flushes[i].FailContained(e);
            }
        }
        _flushes.Clear();
    }

    /// <summary>Publishes recycled buffers, then re-arms the receives queued for it.</summary>
    public void PublishAndRearm()
    {
        buffers.Publish();
        foreach (var connection in _rearms)
        {
            connection.ArmReceive();
        }
        _rearms.Clear();
    }
}

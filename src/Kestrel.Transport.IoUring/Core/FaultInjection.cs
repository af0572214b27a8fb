using System.Buffers;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>A send(2)/sendmsg(2) of a prefix of the output, made by the flushing thread; returns bytes sent, 0 or -errno.</summary>
internal delegate int DirectSendCall(in ReadOnlySequence<byte> buffer);

/// <summary>
/// Test-only seam at the syscall layer: faults a test injects into one ring (<see cref="Ring.Faults"/>), each the way the
/// kernel itself would show it, so that what the transport sees stays a sequence the kernel can produce. Unset in
/// production: every call site is one null check of that field.
/// </summary>
/// <remarks>
/// Threads: <see cref="BeforeEnter"/> and <see cref="AfterReap"/> run on the ring's owner thread;
/// <see cref="DirectSend"/> runs on whichever thread flushes a connection's output, many at once.
/// </remarks>
internal interface IFaultInjector
{
    /// <summary>
    /// Before each io_uring_enter: returns 0 to make the call, or -errno to return that instead with nothing
    /// consumed (-EINTR is retried as a real one is). May lower <paramref name="minComplete"/> (while it holds
    /// completions back, the loop must not sleep waiting for them).
    /// </summary>
    int BeforeEnter(ref uint minComplete);

    /// <summary>
    /// After the CQ ring's head moved past <paramref name="count"/> reaped completions: may rewrite them, hold some back
    /// for a later turn (order kept) or release held ones; returns how many of <paramref name="completions"/> to dispatch.
    /// </summary>
    int AfterReap(Span<IoUringCqe> completions, int count);

    /// <summary>
    /// Instead of a direct send: call <paramref name="send"/> (on all or a prefix of <paramref name="buffer"/>) or
    /// return what the kernel might have (0 for EAGAIN, -ECONNRESET, -EPIPE) without sending.
    /// </summary>
    int DirectSend(in ReadOnlySequence<byte> buffer, DirectSendCall send);
}

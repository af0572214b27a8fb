using System.Buffers;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

// Direct sends: the flushing thread sends with a non-blocking send(2)/sendmsg(2) on the socket's ordinary descriptor.
internal sealed partial class ConnectionSender
{
    /// <summary>
    /// Sends a prefix of <paramref name="buffer"/> with a non-blocking send(2)/sendmsg(2). Returns the bytes the kernel
    /// took (0 when the socket buffer is full, or when this send must take the ring), -errno, or
    /// <see cref="EndedByRingFailure"/>.
    /// </summary>
    private int TrySendDirectly(in ReadOnlySequence<byte> buffer)
    {
        if (IsZeroCopySize(buffer.Length))
        {
            return 0;
        }

        // Enter DirectSending, then read the stop flag; the compare-and-swap is a full fence, and the ring sets the
        // flag, then reads the state: a ring that fails sees this send in progress, or this send sees the stop.
        if (Interlocked.CompareExchange(ref _state, SenderState.DirectSending, SenderState.Idle) != SenderState.Idle)
        {
            return EndedByRingFailure; // only a failed ring moves an idle loop's state: it has ended the sends
        }
        if (_stopRequested)
        {
            return LeaveDirectSend() ? 0 : EndedByRingFailure;
        }

        int result;
        try
        {
            // Counted before the call, as a ring send is counted when it is prepared: once send(2) returns, the peer
            // may already have the bytes, and whoever watches the counter must not see them before the send.
            _context.Metrics.DirectSends.Add(1);
            result = SendDirectly(buffer);
        }
        finally
        {
            // Whatever happened (a listener or Pin throwing), the pins go and the state is Idle again, or, if the
            // ring failed meanwhile, this thread ends the send direction: nobody else may touch this memory now.
            ReleasePins();
            if (!LeaveDirectSend())
            {
                result = EndedByRingFailure;
            }
        }
        if (result == EndedByRingFailure)
        {
            return result;
        }

        if (result > 0)
        {
            _context.Metrics.BytesSent.Add(result);
            return result;
        }
        // EAGAIN: the socket buffer is full, the ring waits for room. EINTR: a signal, the ring retries.
        return result is -Errno.EAGAIN or -Errno.EINTR ? 0 : result;
    }

    /// <summary>What <see cref="TrySendDirectly"/> returns when the ring failed during the send and this thread ended the sends.</summary>
    private const int EndedByRingFailure = int.MinValue;

    private unsafe int SendDirectly(in ReadOnlySequence<byte> buffer)
    {
        if (buffer.IsSingleSegment)
        {
            ReadOnlySpan<byte> span = buffer.FirstSpan;
            fixed (byte* p = span)
            {
                SenderTestHooks.InsideDirectSend?.Invoke(_connection);
                return LinuxSyscalls.Send(_fd, p, (nuint)span.Length, DirectSendFlags);
            }
        }
        PrepareMessage(buffer);
        SenderTestHooks.InsideDirectSend?.Invoke(_connection);
        return LinuxSyscalls.SendMsg(_fd, _message, DirectSendFlags);
    }
}

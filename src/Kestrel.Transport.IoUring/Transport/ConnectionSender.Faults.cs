using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

// The send direction when its ring fails: the loop never runs on the ring again, so the ring thread ends it here,
// unless a direct send is still in its syscall on a flushing thread: then that thread, the last user of the send
// memory and the descriptor, ends it when the syscall returns. Exactly one of the two does, decided by one
// compare-and-swap on the state.
internal sealed partial class ConnectionSender
{
    private Exception? _ringFailureReason; // written by the ring before it hands the end to a direct send

    /// <summary>True while the kernel may still read this connection's send memory (a ring send or a zero-copy notification).</summary>
    public bool KernelHoldsSend => _state is SenderState.RingSending or SenderState.ZeroCopySending or SenderState.AwaitingZeroCopyNotification;

    /// <summary>Ring thread, the ring has failed: no direct send starts any more (one in its syscall may still run).</summary>
    public void StopForRingFailure()
    {
        _stopRequested = true;
        Interlocked.MemoryBarrier(); // the flag before any read of the state (see TrySendDirectly)
    }

    /// <summary>A send completion reaped while the failed ring drains: only notes whether the kernel still reads the memory.</summary>
    public void OnCompletionWhileDraining(in IoUringCqe cqe)
    {
        if (cqe.IsNotification)
        {
            if (_state == SenderState.AwaitingZeroCopyNotification)
            {
                _state = SenderState.Idle;
            }
        }
        else if (_state == SenderState.ZeroCopySending && cqe.HasMore)
        {
            _state = SenderState.AwaitingZeroCopyNotification;
        }
        else if (_state is SenderState.RingSending or SenderState.ZeroCopySending)
        {
            _state = SenderState.Idle;
        }
    }

    /// <summary>
    /// Ring thread, the failed ring has drained. Returns false when a direct send is still in its syscall: that thread
    /// then releases the memory, completes the output and closes the descriptor when it returns. Otherwise, when the
    /// kernel let go of everything (<paramref name="kernelQuiet"/>), the pinned memory goes back and the output pipe
    /// completes here; if not, both stay as they are for good, since the kernel may still read them.
    /// </summary>
    public bool EndAfterRingFailure(bool kernelQuiet, Exception reason)
    {
        _ringFailureReason = reason;
        if (Interlocked.CompareExchange(ref _state, SenderState.DirectSendOutlivedRing, SenderState.DirectSending) == SenderState.DirectSending)
        {
            return false;
        }
        if (!kernelQuiet || _state == SenderState.Done)
        {
            return true;
        }
        ReleasePins();
        FreeMessage();
        _output.Complete(reason);
        _state = SenderState.Done;
        return true;
    }

    /// <summary>
    /// The flushing thread, its direct send over (its pins already released): back to Idle. False if the ring failed
    /// during the send and left the end to this thread, which has now ended the send direction.
    /// </summary>
    private bool LeaveDirectSend()
    {
        if (Interlocked.CompareExchange(ref _state, SenderState.Idle, SenderState.DirectSending) == SenderState.DirectSending)
        {
            return true;
        }
        FreeMessage();
        _output.Complete(_ringFailureReason);
        _state = SenderState.Done;
        _connection.CloseDescriptorAfterRingFailure();
        return false;
    }
}

using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

// The send direction when its ring fails: the loop never runs on the ring again, so the ring thread ends it here.
internal sealed partial class ConnectionSender
{
    private const int DirectSendWaitMilliseconds = 1000;

    /// <summary>True while the kernel may still read this connection's send memory (a ring send or a zero-copy notification).</summary>
    public bool KernelHoldsSend => _state is SenderState.RingSending or SenderState.ZeroCopySending or SenderState.AwaitingZeroCopyNotification;

    /// <summary>
    /// Ring thread, the ring has failed: no direct send starts any more, and one in progress (a non-blocking syscall)
    /// is waited for, briefly. False if it is still running: then the descriptor must stay open.
    /// </summary>
    public bool StopForRingFailure()
    {
        _stopRequested = true;
        Interlocked.MemoryBarrier();
        long deadline = Environment.TickCount64 + DirectSendWaitMilliseconds;
        var spin = new SpinWait();
        while (_state == SenderState.DirectSending)
        {
            if (Environment.TickCount64 > deadline)
            {
                return false;
            }
            spin.SpinOnce();
        }
        return true;
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
    /// The failed ring has drained. When the kernel let go of everything (<paramref name="kernelQuiet"/>), the pinned
    /// memory goes back and the output pipe completes; otherwise both stay as they are for good, since the kernel may
    /// still read them.
    /// </summary>
    public void EndAfterRingFailure(bool kernelQuiet, Exception reason)
    {
        if (!kernelQuiet || _state == SenderState.Done)
        {
            return;
        }
        ReleasePins();
        FreeMessage();
        _output.Complete(reason);
        _state = SenderState.Done;
    }
}

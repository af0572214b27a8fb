using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

// What happens to a connection when the transport's own code fails: an exception while serving it ends this connection
// alone; a ring that cannot go on ends all of its connections without another SQE.
internal sealed partial class IoUringConnection
{
    // ================================================================================================================
    // Contained failures (ring thread)
    // ================================================================================================================

    /// <summary>An exception escaped a work item or completion handler of this connection: abort it (RST), the ring carries on.</summary>
    public void FailContained(Exception error)
    {
        _log.ConnectionFailed(ConnectionId, error);
        AbortOnRingThread(new ConnectionAbortedException("The io_uring transport failed while serving this connection.", error));
    }

    // ================================================================================================================
    // Ring failure (ring thread): reset, drain, close
    // ================================================================================================================

    /// <summary>True while the kernel may still use memory of this connection: its recv (provided buffers), its send (pinned pipe memory, the msghdr) or a zero-copy notification.</summary>
    public bool KernelHoldsRequests => _receiver.KernelHoldsRecv || _sender.KernelHoldsSend;

    /// <summary>
    /// Its ring cannot go on: the close will be abortive (RST), the application's input completes with
    /// <paramref name="reason"/> and ConnectionClosed fires. Prepares no SQE: the ring takes none any more.
    /// </summary>
    public void OnRingFailed(ConnectionAbortedException reason)
    {
        if (_phase == ConnectionPhase.Closed)
        {
            return;
        }
        _shutdownReason ??= reason;
        _phase = ConnectionPhase.ShuttingDownWithRst;
        _sender.StopForRingFailure();
        _log.ConnectionWriteRst(ConnectionId, reason.Message);
        SocketOptions.SetLingerZero(_fd);
        _receiver.CompleteAfterRingFailure(reason);
    }

    /// <summary>A completion reaped while the failed ring drains: only notes which requests the kernel has let go of.</summary>
    public void OnCompletionWhileDraining(in IoUringCqe cqe)
    {
        if (UserData.KindOf(cqe.UserData) == OperationKind.Receive)
        {
            _receiver.OnCompletionWhileDraining(cqe);
        }
        else
        {
            _sender.OnCompletionWhileDraining(cqe);
        }
    }

    /// <summary>
    /// The failed ring has drained: close the descriptor (linger 0: RST). When the kernel let go of every request
    /// (<paramref name="kernelQuiet"/>), the send memory goes back to the pool; otherwise it stays pinned and
    /// referenced for good, since the kernel may still read it. A direct send still in its syscall on another thread
    /// keeps the send memory and the descriptor until it returns, and then ends them itself.
    /// </summary>
    public void FinishRingFailure(bool kernelQuiet)
    {
        if (_phase == ConnectionPhase.Closed)
        {
            return;
        }
        _phase = ConnectionPhase.Closed;
        bool sendsEnded = _sender.EndAfterRingFailure(kernelQuiet, _shutdownReason!);
        _ring.ReleaseConnection(this);
        _ring.Metrics.OnConnectionClosed();
        if (sendsEnded)
        {
            CloseDescriptorAfterRingFailure();
        }
    }

    /// <summary>
    /// The ring failed and the last user of the descriptor is done with it: the ring thread, or the flushing thread
    /// whose direct send outlived the ring's failure handling. Runs once.
    /// </summary>
    public void CloseDescriptorAfterRingFailure()
    {
        RetireSocket();
        LinuxSyscalls.Close(_fd);
        _context.Descriptors.OnClosed();
        _socketClosed.TrySetResult();
    }
}

using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

// What the receive direction (ConnectionReceiver) and the ring ask of the connection, all on the ring thread.
internal sealed partial class IoUringConnection
{
    /// <summary>True once the connection is shutting down (FIN or RST decided): nothing more is delivered or sent.</summary>
    public bool IsShuttingDown => _phase != ConnectionPhase.Open;

    /// <summary>Why the connection is shutting down; the input pipe completes with it.</summary>
    public Exception? ShutdownReason => _shutdownReason;

    /// <summary>Arms the receive again at the end of a ring turn (a queued re-arm).</summary>
    public void ArmReceive() => _receiver.Arm();

    /// <summary>A completion of this connection's multishot recv.</summary>
    public void OnReceiveCompleted(in IoUringCqe cqe) => _receiver.OnCompleted(cqe);

    /// <summary>Called by the ring after a batch of completions for connections that received bytes in it.</summary>
    public void FlushQueuedInput() => _receiver.FlushQueued();

    /// <summary>How many times received bytes were flushed to the application so far (any thread).</summary>
    public int InputFlushes => _receiver.InputFlushes;

    /// <summary>Receiving is over: ConnectionClosed fires on the thread pool, never inline on the ring.</summary>
    public void OnReceiveEnded()
    {
        ThreadPool.UnsafeQueueUserWorkItem(static c =>
        {
            try
            {
                c._connectionClosedSource.Cancel();
            }
            catch (Exception e)
            {
                c._log.ConnectionError(c.ConnectionId, e);
            }
            c._connectionClosedFired.TrySetResult();
        }, this, preferLocal: false);
    }
}

using Kestrel.Transport.IoUring.Abi;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

// What the send direction (ConnectionSender) reports to its connection, all on the ring thread.
internal sealed partial class IoUringConnection
{
    /// <summary>A completion of this connection's ring send.</summary>
    public void OnSendCompleted(in IoUringCqe cqe) => _sender.OnSendCompleted(cqe);

    /// <summary>The send loop has ended (output completed, cancelled or failed): end the connection as Sockets does.</summary>
    public void OnSendsEnded(Exception? shutdownReason)
    {
        Shutdown(shutdownReason);
        _receiver.CancelPausedFlush(); // un-pause a receive waiting on back-pressure
        MaybeClose();
    }

    public void OnSendLoopError(Exception e) => _log.ConnectionError(ConnectionId, e);

    /// <summary>What a failed send means, the same for a direct send and a ring send.</summary>
    public (Exception ShutdownReason, Exception? Unexpected) ClassifySendError(int errno)
    {
        var socketError = SocketErrors.FromErrno(errno);
        switch (errno)
        {
            case Errno.ECONNRESET:
            case Errno.EPIPE:
                _log.ConnectionReset(ConnectionId);
                return (new ConnectionResetException(socketError.Message, socketError), null);
            case Errno.ECANCELED:
            case Errno.EINTR:
            case Errno.EINVAL:
            case Errno.EBADF:
                return (_shutdownReason ?? socketError, null);
            default:
                _log.ConnectionError(ConnectionId, socketError);
                return (socketError, socketError);
        }
    }
}

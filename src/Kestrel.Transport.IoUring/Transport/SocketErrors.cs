using System.Net.Sockets;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Turns a completion's errno into the <see cref="SocketException"/> .NET's own sockets would raise for it.</summary>
internal static class SocketErrors
{
    public static SocketException FromErrno(int errno) => new((int)(Math.Abs(errno) switch
    {
        Errno.ECONNRESET => SocketError.ConnectionReset,
        Errno.EPIPE => SocketError.Shutdown,
        Errno.ECONNABORTED => SocketError.ConnectionAborted,
        Errno.ECANCELED => SocketError.OperationAborted,
        Errno.EINTR => SocketError.Interrupted,
        Errno.ETIMEDOUT => SocketError.TimedOut,
        Errno.EHOSTUNREACH => SocketError.HostUnreachable,
        Errno.ENETUNREACH => SocketError.NetworkUnreachable,
        Errno.ENETDOWN => SocketError.NetworkDown,
        Errno.ENOTCONN => SocketError.NotConnected,
        Errno.ENOBUFS => SocketError.NoBufferSpaceAvailable,
        Errno.EINVAL => SocketError.InvalidArgument,
        Errno.EBADF => SocketError.OperationAborted,
        Errno.EAGAIN => SocketError.WouldBlock,
        _ => SocketError.SocketError,
    }));
}

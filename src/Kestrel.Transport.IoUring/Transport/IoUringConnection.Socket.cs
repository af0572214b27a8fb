using System.Net.Sockets;
using Microsoft.AspNetCore.Connections.Features;

namespace Kestrel.Transport.IoUring.Transport;

// IConnectionSocketFeature: a Socket over the connection's descriptor, as the Sockets transport offers, for the
// application's per-connection socket options and TCP_INFO. Made on first use only (no cost to connections that never
// ask), it does not own the descriptor: the transport alone closes it.
internal sealed partial class IoUringConnection : IConnectionSocketFeature
{
    private Socket? _socket;    // made on the first access (any thread); disposed when the descriptor is closed
    private int _socketRetired; // 1 from the moment the descriptor is about to be closed: no Socket is made over it any more

    /// <summary>
    /// A <see cref="System.Net.Sockets.Socket"/> over this connection's descriptor, made on first access and not
    /// owning the descriptor. Use it for socket options (NoDelay, KeepAlive and its TCP settings, buffer sizes, TOS,
    /// TCP_INFO through GetRawSocketOption) and the endpoints. Never read, write, shut down, close or dispose it, never
    /// change its blocking mode (Blocking, ReceiveTimeout, SendTimeout) or its LingerState: the transport's ring
    /// receives, sends and closes on the same descriptor, and chooses between FIN and RST. When the connection closes
    /// the Socket is disposed (the transport closes the descriptor), so a late use throws
    /// <see cref="ObjectDisposedException"/> rather than reach a descriptor number the kernel may already have given
    /// to another connection.
    /// </summary>
    /// <exception cref="ObjectDisposedException">First asked for after the connection's descriptor was closed.</exception>
    public Socket Socket => Volatile.Read(ref _socket) ?? CreateSocket();

    /// <summary>True once something asked for <see cref="Socket"/> (tests).</summary>
    internal bool HasSocket => Volatile.Read(ref _socket) is not null;

    private Socket CreateSocket()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _socketRetired) != 0, typeof(Socket));
        var socket = new Socket(new SafeSocketHandle(_fd, ownsHandle: false));
        Socket? first = Interlocked.CompareExchange(ref _socket, socket, null);
        if (first is not null)
        {
            socket.Dispose(); // another thread's came first; this one owns nothing
            return first;
        }
        if (Volatile.Read(ref _socketRetired) != 0)
        {
            socket.Dispose(); // retired meanwhile, perhaps before this one was published: dispose it here
        }
        return socket;
    }

    /// <summary>
    /// The descriptor is about to be closed: dispose the Socket, if one was made (this leaves the descriptor open).
    /// Each side writes its field before it reads the other's (both with full fences), so a Socket made concurrently is
    /// disposed by one side or the other.
    /// </summary>
    private void RetireSocket()
    {
        Interlocked.Exchange(ref _socketRetired, 1);
        Volatile.Read(ref _socket)?.Dispose();
    }
}

using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>The few socket options the transport sets on accepted descriptors directly.</summary>
internal static unsafe class SocketOptions
{
    private const int SolSocket = 1, SoLinger = 13, IpProtoTcp = 6, TcpNoDelay = 1;

    /// <summary>TCP_NODELAY on.</summary>
    public static int SetNoDelay(int fd)
    {
        int on = 1;
        return LinuxSyscalls.SetSockOpt(fd, IpProtoTcp, TcpNoDelay, &on, sizeof(int));
    }

    /// <summary>SO_LINGER {on, 0}: the final close sends RST instead of FIN (an abortive close).</summary>
    public static int SetLingerZero(int fd)
    {
        int* linger = stackalloc int[2] { 1, 0 };
        return LinuxSyscalls.SetSockOpt(fd, SolSocket, SoLinger, linger, 2 * sizeof(int));
    }

    /// <summary>
    /// connect(2) to AF_UNSPEC: TCP disconnects the socket in place (RST to the peer, send and receive queues
    /// dropped, requests on it woken with the error); the descriptor stays open.
    /// </summary>
    public static int Disconnect(int fd)
    {
        ushort* unspecified = stackalloc ushort[8]; // a zeroed 16-byte sockaddr: sa_family AF_UNSPEC (0)
        new Span<ushort>(unspecified, 8).Clear();
        return LinuxSyscalls.Connect(fd, (byte*)unspecified, 16);
    }
}

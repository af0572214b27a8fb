using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Reads a connected socket's local and remote addresses (getsockname/getpeername) as .NET endpoints.</summary>
internal static unsafe class SocketAddresses
{
    private const int AfUnix = 1, AfInet = 2, AfInet6 = 10;
    private const int MaxSockAddr = 128; // sizeof(struct sockaddr_storage)
    private static readonly UnixDomainSocketEndPoint s_unixTemplate = new("/");

    public static EndPoint? LocalEndPoint(int fd)
    {
        byte* buffer = stackalloc byte[MaxSockAddr];
        uint length = MaxSockAddr;
        return LinuxSyscalls.GetSockName(fd, buffer, &length) < 0 ? null : Parse(new ReadOnlySpan<byte>(buffer, (int)length));
    }

    public static EndPoint? RemoteEndPoint(int fd)
    {
        byte* buffer = stackalloc byte[MaxSockAddr];
        uint length = MaxSockAddr;
        return LinuxSyscalls.GetPeerName(fd, buffer, &length) < 0 ? null : Parse(new ReadOnlySpan<byte>(buffer, (int)length));
    }

    /// <summary>Parses a struct sockaddr_in, sockaddr_in6 or sockaddr_un.</summary>
    public static EndPoint? Parse(ReadOnlySpan<byte> sockaddr)
    {
        if (sockaddr.Length < 2)
        {
            return null;
        }
        int family = BitConverter.ToUInt16(sockaddr);
        switch (family)
        {
            case AfInet when sockaddr.Length >= 8:
                return new IPEndPoint(new IPAddress(sockaddr.Slice(4, 4)), BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]));
            case AfInet6 when sockaddr.Length >= 28:
                long scope = BitConverter.ToUInt32(sockaddr[24..]);
                return new IPEndPoint(new IPAddress(sockaddr.Slice(8, 16), scope), BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]));
            case AfUnix:
                // Let .NET build it, as Socket.RemoteEndPoint would: an accepted Unix socket's peer is usually unnamed
                // (no path), which the public UnixDomainSocketEndPoint constructor rejects; Create handles it.
                var address = new SocketAddress(AddressFamily.Unix, sockaddr.Length);
                sockaddr.CopyTo(address.Buffer.Span);
                return s_unixTemplate.Create(address);
            default:
                return null;
        }
    }
}

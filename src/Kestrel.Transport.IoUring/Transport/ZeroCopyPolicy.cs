using System.Net;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>Which connections may send pipe memory zero-copy (decided once, when the connection is set up).</summary>
internal static class ZeroCopyPolicy
{
    /// <summary>
    /// Pipe memory goes zero-copy to a peer on another host only. To a peer on this host the kernel copies anyway, and
    /// the zero-copy skbs reach the peer's socket as they are: the pool's blocks are not page-aligned, so each one is
    /// charged as the two pages it spans, about twice its length. A peer with a small receive buffer then overruns it,
    /// prunes, and clamps its window below this socket's MSS, and it grows the window again only as data arrives,
    /// which the sender no longer sends: the response stops for good (seen on 6.18 with a 4 KiB receive buffer). The
    /// registered arena's chunks are page-aligned and stay allowed.
    /// </summary>
    public static bool AllowsPipeMemory(IoUringTransportOptions options, EndPoint? local, EndPoint? remote)
        => options.ZeroCopyToLocalPeers || !IsPeerOnThisHost(local, remote);

    private static bool IsPeerOnThisHost(EndPoint? local, EndPoint? remote)
    {
        if (remote is not IPEndPoint peer)
        {
            return remote is not null; // a Unix domain socket's peer is on this host; an unknown peer is not assumed to be
        }
        IPAddress address = peer.Address.IsIPv4MappedToIPv6 ? peer.Address.MapToIPv4() : peer.Address;
        IPAddress? own = local is IPEndPoint l ? (l.Address.IsIPv4MappedToIPv6 ? l.Address.MapToIPv4() : l.Address) : null;
        return IPAddress.IsLoopback(address) || address.Equals(own);
    }
}

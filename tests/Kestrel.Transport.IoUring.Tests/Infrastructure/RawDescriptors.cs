using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Descriptor-level calls the tests need beyond <see cref="Socket"/>: copies to hand to the transport, and eventfd reads.</summary>
internal static unsafe partial class RawDescriptors
{
    private const int FDupFd = 0;

    [LibraryImport("libc", EntryPoint = "dup", SetLastError = true)]
    private static partial int DupRaw(int fd);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlRaw(int fd, int command, int argument);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint ReadRaw(int fd, void* buffer, nuint count);

    /// <summary>A copy of <paramref name="fd"/>: the socket lives while any copy does, so a test may give one away.</summary>
    public static int Dup(int fd)
    {
        int r = DupRaw(fd);
        Assert.True(r >= 0, $"dup failed: {Marshal.GetLastPInvokeError()}");
        return r;
    }

    /// <summary>
    /// A copy of a socket accepted on loopback, its peer connected: the copy is the test's to hand over (the transport
    /// then owns it), the peer watches what becomes of it.
    /// </summary>
    public static (Socket Peer, int Fd) AcceptedSocketCopy()
    {
        var (peer, accepted) = Core.Loopback.TcpPair();
        using (accepted)
        {
            return (peer, Dup((int)accepted.Handle));
        }
    }

    /// <summary>A copy of <paramref name="fd"/> at the lowest free number from <paramref name="lowest"/> up (F_DUPFD).</summary>
    public static int DupAtOrAbove(int fd, int lowest)
    {
        int r = FcntlRaw(fd, FDupFd, lowest);
        Assert.True(r >= 0, $"fcntl(F_DUPFD) failed: {Marshal.GetLastPInvokeError()}");
        return r;
    }

    /// <summary>Reads a non-blocking eventfd's counter: null when nothing was written to it (EAGAIN).</summary>
    public static ulong? ReadEventFd(int fd)
    {
        ulong value;
        nint r = ReadRaw(fd, &value, sizeof(ulong));
        return r == sizeof(ulong) ? value : null;
    }
}

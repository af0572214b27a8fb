using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>What becomes of an accepted descriptor that no connection will serve. Any thread.</summary>
internal static class AcceptedDescriptor
{
    /// <summary>
    /// Refuses <paramref name="fd"/> as a closed or full listener would: SO_LINGER 0 makes the close send RST, so the
    /// client learns at once instead of waiting on a connection that looks open. When the descriptor was already
    /// counted in <paramref name="countedIn"/>, its place there is given back.
    /// </summary>
    public static void Refuse(int fd, DescriptorBudget? countedIn = null)
    {
        SocketOptions.SetLingerZero(fd);
        LinuxSyscalls.Close(fd);
        countedIn?.OnClosed();
    }
}

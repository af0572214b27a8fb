namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Counts this process's open file descriptors (/proc/self/fd).</summary>
public static class FdCounter
{
    public static int Count() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>Waits (polling, bounded) until the fd count is at most <paramref name="target"/>; returns the last count.</summary>
    public static Task<int> WaitForAtMostAsync(int target, TimeSpan timeout) => WaitForAtMostAsync(Count, target, timeout);

    /// <summary>Counts this process's open sockets only: loading an assembly opens descriptors too, sockets it does not.</summary>
    public static int CountSockets()
        => Directory.GetFiles("/proc/self/fd").Count(f =>
        {
            try
            {
                return new FileInfo(f).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true;
            }
            catch (IOException)
            {
                return false; // closed while we looked
            }
        });

    /// <summary>Waits (polling, bounded) until at most <paramref name="target"/> sockets are open; returns the last count.</summary>
    public static Task<int> WaitForSocketsAtMostAsync(int target, TimeSpan timeout) => WaitForAtMostAsync(CountSockets, target, timeout);

    private static async Task<int> WaitForAtMostAsync(Func<int> counter, int target, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        int count;
        while ((count = counter()) > target && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        return count;
    }
}

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Counts this process's open file descriptors (/proc/self/fd).</summary>
public static class FdCounter
{
    public static int Count() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>Waits (polling, bounded) until the fd count is at most <paramref name="target"/>; returns the last count.</summary>
    public static async Task<int> WaitForAtMostAsync(int target, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        int count;
        while ((count = Count()) > target && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        return count;
    }
}

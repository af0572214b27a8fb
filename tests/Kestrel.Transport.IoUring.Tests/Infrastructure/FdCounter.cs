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

    /// <summary>What each open descriptor points to ("socket:[123]", "anon_inode:[io_uring]", a path), for failure messages.</summary>
    public static Dictionary<string, string> Snapshot()
    {
        var result = new Dictionary<string, string>();
        foreach (var path in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                result[Path.GetFileName(path)] = new FileInfo(path).LinkTarget ?? "?";
            }
            catch (IOException)
            {
                // closed meanwhile
            }
        }
        return result;
    }

    /// <summary>Descriptors open now that were not in <paramref name="before"/> (or point elsewhere now).</summary>
    public static string Added(Dictionary<string, string> before)
        => string.Join(", ", Snapshot().Where(kv => !before.TryGetValue(kv.Key, out var t) || t != kv.Value).Select(kv => $"{kv.Key} -> {kv.Value}"));

    /// <summary>Sockets and anonymous inodes (rings, eventfds) open now: what a transport can leak, without the files the runtime opens lazily (assemblies, symbols).</summary>
    public static int CountSocketsAndRings()
        => Snapshot().Values.Count(t => t.StartsWith("socket:", StringComparison.Ordinal) || t.StartsWith("anon_inode:", StringComparison.Ordinal));

    /// <summary>Waits (polling, bounded) until <see cref="CountSocketsAndRings"/> is at most <paramref name="target"/>; returns the last count.</summary>
    public static Task<int> WaitForSocketsAndRingsAtMostAsync(int target, TimeSpan timeout) => WaitForAtMostAsync(CountSocketsAndRings, target, timeout);
}

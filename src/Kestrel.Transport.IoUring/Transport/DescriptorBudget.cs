using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Keeps the transport from taking the process's last file descriptors. Accepting stops while the connections it
/// holds reach RLIMIT_NOFILE minus what was open at start minus a reserve, so the runtime and the application can
/// still open files, sockets and timers (Kestrel over Sockets has been seen to die with "Out of memory." when a flood
/// used up every descriptor). Shared by all rings of a transport.
/// </summary>
internal sealed class DescriptorBudget
{
    private int _open;

    public DescriptorBudget(int maxConnections, int fixedSlotsPerRing)
    {
        MaxConnections = maxConnections;
        FixedSlotsPerRing = fixedSlotsPerRing;
    }

    /// <summary>Connections the transport may hold at once.</summary>
    public int MaxConnections { get; }

    /// <summary>The most registered-file slots one ring may register (a fixed table is also capped by RLIMIT_NOFILE).</summary>
    public int FixedSlotsPerRing { get; }

    public int Open => Volatile.Read(ref _open);

    /// <summary>Connections that may still be accepted before the budget is reached.</summary>
    public long Remaining => (long)MaxConnections - Volatile.Read(ref _open);

    /// <summary>True while accepting must wait for connections to close.</summary>
    public bool IsExhausted => Volatile.Read(ref _open) >= MaxConnections;

    public void OnOpened() => Interlocked.Increment(ref _open);

    public void OnClosed() => Interlocked.Decrement(ref _open);

    public static DescriptorBudget FromProcessLimits(int ringCount)
    {
        if (LinuxSyscalls.GetRLimit(LinuxSyscalls.RLimitNoFile, out var limit) < 0)
        {
            return new DescriptorBudget(int.MaxValue, 1024);
        }
        long soft = (long)Math.Min(limit.Current, int.MaxValue);
        long openNow = CountOpenDescriptors();
        // .NET keeps every loaded assembly's file open (two descriptors each) and loads many lazily, on the first
        // request that needs them: the reserve must cover that, or a flood starves the runtime of its own files.
        long reserve = Math.Max(128, soft / 10);
        long maxConnections = Math.Max(1, soft - openNow - reserve);
        long fixedPerRing = Math.Max(1, Math.Min(soft, 1 << 20) / Math.Max(ringCount, 1));
        return new DescriptorBudget((int)maxConnections, (int)fixedPerRing);
    }

    private static int CountOpenDescriptors()
    {
        try
        {
            return Directory.GetFiles("/proc/self/fd").Length;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 64;
        }
    }
}

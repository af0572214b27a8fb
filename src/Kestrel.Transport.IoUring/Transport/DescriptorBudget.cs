using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Keeps the transport from taking the process's last file descriptors, whatever RLIMIT_NOFILE is now: an operator
/// can lower a running server's limit (prlimit), and the runtime, the logger and the application need descriptors of
/// their own (Kestrel over Sockets has been seen to die with "Out of memory." when a flood used up every descriptor).
/// The headroom is RLIMIT_NOFILE minus the descriptors really open in the process minus a reserve. The limit is
/// re-read (one getrlimit) whenever accepting asks; the open count (/proc/self/fd) at most every 250 ms, or at once
/// after an EMFILE/ENFILE; between counts, the transport's own opens and closes keep the estimate current. A
/// connection's place comes back only when the kernel reports its descriptor closed. Shared by all rings.
/// </summary>
internal sealed class DescriptorBudget
{
    private const long CountIntervalMilliseconds = 250;

    private readonly object _gate = new();
    private readonly Func<long>? _limitSource;
    private readonly Func<long>? _openCountSource;
    private int _open;            // descriptors of the transport's connections, open now
    private long _limit;          // RLIMIT_NOFILE (soft) as last read
    private long _processOpen;    // descriptors open in the whole process at the last count
    private int _openAtCount;     // _open at that count
    private long _countedAt = long.MinValue / 2;

    /// <param name="fixedSlotsPerRing">The most registered-file slots one ring may register.</param>
    /// <param name="limitSource">Test seam: the soft limit (default: getrlimit).</param>
    /// <param name="openCountSource">Test seam: descriptors open in the process (default: /proc/self/fd).</param>
    public DescriptorBudget(int fixedSlotsPerRing, Func<long>? limitSource = null, Func<long>? openCountSource = null)
    {
        FixedSlotsPerRing = fixedSlotsPerRing;
        _limitSource = limitSource;
        _openCountSource = openCountSource;
        Refresh(forceCount: true);
    }

    /// <summary>The most registered-file slots one ring may register (a fixed table is also capped by RLIMIT_NOFILE).</summary>
    public int FixedSlotsPerRing { get; }

    /// <summary>Descriptors the transport's connections hold now.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>RLIMIT_NOFILE as last read.</summary>
    public long Limit => Volatile.Read(ref _limit);

    /// <summary>Descriptors left for the runtime and the application, whatever the transport does.</summary>
    public static long ReserveFor(long limit) => Math.Max(128, limit / 10);

    /// <summary>Connections that may still be accepted before the process's headroom reaches the reserve (negative: over it).</summary>
    public long Remaining
    {
        get
        {
            lock (_gate)
            {
                long processOpen = _processOpen + (Volatile.Read(ref _open) - _openAtCount);
                return _limit - ReserveFor(_limit) - processOpen;
            }
        }
    }

    /// <summary>True while accepting must wait for descriptors to be closed (or the limit to rise).</summary>
    public bool IsExhausted => Remaining <= 0;

    public void OnOpened() => Interlocked.Increment(ref _open);

    public void OnClosed() => Interlocked.Decrement(ref _open);

    /// <summary>
    /// Re-reads the limit, and counts the process's open descriptors if the last count is older than 250 ms or
    /// <paramref name="forceCount"/> (after EMFILE/ENFILE: something else took descriptors).
    /// </summary>
    public void Refresh(bool forceCount = false)
    {
        long limit = _limitSource?.Invoke() ?? ReadLimit();
        long now = Environment.TickCount64;
        lock (_gate)
        {
            _limit = limit;
            if (forceCount || now - _countedAt >= CountIntervalMilliseconds)
            {
                int open = Volatile.Read(ref _open);
                _processOpen = _openCountSource?.Invoke() ?? CountOpenDescriptors();
                _openAtCount = open;
                _countedAt = now;
            }
        }
    }

    public static DescriptorBudget FromProcessLimits(int ringCount)
    {
        long limit = ReadLimit();
        long fixedPerRing = Math.Max(1, Math.Min(limit, 1 << 20) / Math.Max(ringCount, 1));
        return new DescriptorBudget((int)fixedPerRing);
    }

    private static long ReadLimit()
        => LinuxSyscalls.GetRLimit(LinuxSyscalls.RLimitNoFile, out var limit) < 0 ? int.MaxValue : (long)Math.Min(limit.Current, int.MaxValue);

    /// <summary>Descriptors open in the process now (the count includes the one that reads the directory); 64 if unreadable.</summary>
    internal static long CountOpenDescriptors()
    {
        long count = LinuxSyscalls.CountDirectoryEntries("/proc/self/fd");
        return count >= 0 ? count : 64;
    }
}

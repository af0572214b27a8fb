using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Keeps the transport from taking the process's last file descriptors, whatever RLIMIT_NOFILE is now: an operator
/// can lower a running server's limit (prlimit), and the runtime, the logger and the application need descriptors of
/// their own (Kestrel over Sockets has been seen to die with "Out of memory." when a flood used up every descriptor).
/// The headroom is RLIMIT_NOFILE minus the descriptors open in the process minus a reserve.
/// <para>
/// The transport's own connections are accounted exactly as they open and close; the process's other descriptors
/// (runtime, application, listeners, rings) are what the last count of /proc/self/fd found besides them. Reading the
/// headroom never waits: no lock is taken, and the count, which takes milliseconds with tens of thousands of
/// descriptors open, never runs on an accepting ring thread. It runs on the thread pool, one at a time, and is asked
/// for at most every 250 ms while the headroom is under a quarter of the limit (where the other descriptors growing
/// unnoticed could matter), every 5 s otherwise, and at once after an EMFILE/ENFILE (accepting pauses for 100 ms
/// then, so the count lands before the next try). The limit is re-read (one getrlimit) whenever accepting asks.
/// A connection's place comes back only when the kernel reports its descriptor closed. Shared by all rings; any thread.
/// </para>
/// </summary>
internal sealed class DescriptorBudget : IThreadPoolWorkItem
{
    private const long NearLimitCountIntervalMilliseconds = 250;
    private const long DistantCountIntervalMilliseconds = 5_000;

    private readonly Func<long>? _limitSource;
    private readonly Func<long>? _openCountSource;
    private int _open;             // descriptors of the transport's connections, open now
    private long _limit;           // RLIMIT_NOFILE (soft) as last read
    private long _othersOpen;      // descriptors open in the process besides the transport's connections, at the last count
    private long _countedAt;       // Environment.TickCount64 when the last count ended
    private int _countPending;     // 1 from asking for a count until it has landed: never two at once
    private long _counts;          // counts done

    /// <param name="fixedSlotsPerRing">The most registered-file slots one ring may register.</param>
    /// <param name="limitSource">Test seam: the soft limit (default: getrlimit).</param>
    /// <param name="openCountSource">Test seam: descriptors open in the process (default: /proc/self/fd).</param>
    public DescriptorBudget(int fixedSlotsPerRing, Func<long>? limitSource = null, Func<long>? openCountSource = null)
    {
        FixedSlotsPerRing = fixedSlotsPerRing;
        _limitSource = limitSource;
        _openCountSource = openCountSource;
        _limit = ReadLimit();
        CountNow(); // before any ring accepts: the first estimate is a real count
        _counts = 1;
    }

    /// <summary>The most registered-file slots one ring may register (a fixed table is also capped by RLIMIT_NOFILE).</summary>
    public int FixedSlotsPerRing { get; }

    /// <summary>Descriptors the transport's connections hold now.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>RLIMIT_NOFILE as last read.</summary>
    public long Limit => Volatile.Read(ref _limit);

    /// <summary>Counts of /proc/self/fd done so far, the one at construction included (tests).</summary>
    internal long Counts => Interlocked.Read(ref _counts);

    /// <summary>Descriptors left for the runtime and the application, whatever the transport does.</summary>
    public static long ReserveFor(long limit) => Math.Max(128, limit / 10);

    /// <summary>Connections that may still be accepted before the process's headroom reaches the reserve (negative: over it).</summary>
    public long Remaining
    {
        get
        {
            long limit = Volatile.Read(ref _limit);
            return limit - ReserveFor(limit) - Volatile.Read(ref _othersOpen) - Volatile.Read(ref _open);
        }
    }

    /// <summary>True while accepting must wait for descriptors to be closed (or the limit to rise).</summary>
    public bool IsExhausted => Remaining <= 0;

    public void OnOpened() => Interlocked.Increment(ref _open);

    public void OnClosed() => Interlocked.Decrement(ref _open);

    /// <summary>
    /// Re-reads the limit, and asks the thread pool for a count of the process's open descriptors if the last one is
    /// older than its interval or <paramref name="forceCount"/> (after EMFILE/ENFILE: something else took descriptors).
    /// Never waits for a count.
    /// </summary>
    public void Refresh(bool forceCount = false)
    {
        Volatile.Write(ref _limit, ReadLimit());
        if (forceCount || CountIsDue())
        {
            RequestCount();
        }
    }

    private bool CountIsDue()
    {
        long interval = Remaining < Limit / 4 ? NearLimitCountIntervalMilliseconds : DistantCountIntervalMilliseconds;
        return Environment.TickCount64 - Volatile.Read(ref _countedAt) >= interval;
    }

    private void RequestCount()
    {
        if (Interlocked.CompareExchange(ref _countPending, 1, 0) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
    }

    /// <summary>The requested count, on a thread-pool thread.</summary>
    void IThreadPoolWorkItem.Execute()
    {
        try
        {
            CountNow();
        }
        finally
        {
            Volatile.Write(ref _countPending, 0);
            Interlocked.Increment(ref _counts); // after the flag: a count seen done lets the next one be asked for
        }
    }

    private void CountNow()
    {
        int openBefore = Volatile.Read(ref _open);
        long processOpen = _openCountSource?.Invoke() ?? CountOpenDescriptors();
        int openAfter = Volatile.Read(ref _open);
        // A connection opened or closed during the count may or may not be in it: taking the fewer of the two counts
        // of connections never underestimates the other descriptors.
        Volatile.Write(ref _othersOpen, processOpen - Math.Min(openBefore, openAfter));
        Volatile.Write(ref _countedAt, Environment.TickCount64);
    }

    public static DescriptorBudget FromProcessLimits(int ringCount)
    {
        long limit = ReadProcessLimit();
        long fixedPerRing = Math.Max(1, Math.Min(limit, 1 << 20) / Math.Max(ringCount, 1));
        return new DescriptorBudget((int)fixedPerRing);
    }

    private long ReadLimit() => _limitSource?.Invoke() ?? ReadProcessLimit();

    private static long ReadProcessLimit()
        => LinuxSyscalls.GetRLimit(LinuxSyscalls.RLimitNoFile, out var limit) < 0 ? int.MaxValue : (long)Math.Min(limit.Current, int.MaxValue);

    /// <summary>Descriptors open in the process now (the count includes the one that reads the directory); 64 if unreadable.</summary>
    internal static long CountOpenDescriptors()
    {
        long count = LinuxSyscalls.CountDirectoryEntries("/proc/self/fd");
        return count >= 0 ? count : 64;
    }
}

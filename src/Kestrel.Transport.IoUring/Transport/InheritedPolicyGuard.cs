using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// Keeps SCHED_BATCH on the ring threads alone. Linux gives a new thread its creator's policy, and the .NET thread pool
/// may create a worker on whichever thread queues work while it has fewer workers than it wants: a ring thread that
/// hands a request to the pool can be that creator, and the new pool worker would then run under SCHED_BATCH for good.
/// Each ring turn compares the pool's thread count with the last one it saw (a field read); only when it grew does it
/// look through /proc/self/task and return to SCHED_OTHER every thread under SCHED_BATCH that is a thread-pool worker,
/// or that still carries a ring thread's name without being one (a worker so new that it has not named itself yet).
/// Other threads (the application's own, io_uring's "iou-wrk" workers of the ring) are left as they are.
/// </summary>
internal static class InheritedPolicyGuard
{
    /// <summary>The name (comm) the .NET runtime gives its thread-pool workers.</summary>
    internal const string PoolWorkerName = ".NET TP Worker";

    /// <summary>The prefix of the ring threads' names (see <see cref="RingThread"/>).</summary>
    internal const string RingThreadNamePrefix = "io_uring ring ";

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<int, bool> s_ringThreadIds = new();

    /// <summary>A ring thread, at its start: its kernel thread id, so the guard never resets it.</summary>
    public static void RegisterRingThread() => s_ringThreadIds[LinuxSyscalls.GetThreadId()] = true;

    /// <summary>A ring thread, as it ends.</summary>
    public static void UnregisterRingThread() => s_ringThreadIds.TryRemove(LinuxSyscalls.GetThreadId(), out _);

    /// <summary>
    /// Ring thread, once per turn: resets inherited policies if the pool has more threads than
    /// <paramref name="seenPoolThreads"/>, the count this ring saw last, which it updates.
    /// </summary>
    public static void AfterTurn(ref int seenPoolThreads)
    {
        int threads = System.Threading.ThreadPool.ThreadCount;
        if (threads > seenPoolThreads)
        {
            ResetPoolWorkers();
        }
        seenPoolThreads = threads;
    }

    /// <summary>Returns every thread-pool worker running under SCHED_BATCH to SCHED_OTHER; returns how many it changed.</summary>
    public static int ResetPoolWorkers()
    {
        int changed = 0;
        try
        {
            foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
            {
                if (!int.TryParse(Path.GetFileName(task), out int tid)
                    || s_ringThreadIds.ContainsKey(tid)
                    || ReadOrNull(Path.Combine(task, "comm"))?.TrimEnd('\n') is not { } name
                    || !(name == PoolWorkerName || name.StartsWith(RingThreadNamePrefix, StringComparison.Ordinal))
                    || PolicyOf(ReadOrNull(Path.Combine(task, "stat"))) != ThreadSchedulingPolicy.Batch)
                {
                    continue;
                }
                if (LinuxSyscalls.SetThreadSchedulingPolicy(tid, ThreadSchedulingPolicy.Other) == 0)
                {
                    changed++;
                }
            }
        }
        catch (IOException)
        {
            // /proc unreadable (a sandbox without it): nothing to look at, nothing changed.
        }
        catch (UnauthorizedAccessException)
        {
        }
        return changed;
    }

    /// <summary>Field 41 of /proc/PID/task/TID/stat, counted after the parenthesised command name (which may hold spaces).</summary>
    internal static ThreadSchedulingPolicy? PolicyOf(string? stat)
    {
        if (stat is null)
        {
            return null;
        }
        int afterName = stat.LastIndexOf(')') + 2;
        if (afterName < 2 || afterName >= stat.Length)
        {
            return null;
        }
        string[] fields = stat[afterName..].Split(' ');
        return fields.Length > 41 - 3 && int.TryParse(fields[41 - 3], out int policy) ? (ThreadSchedulingPolicy)policy : null;
    }

    private static string? ReadOrNull(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null; // the thread ended while we looked
        }
    }
}

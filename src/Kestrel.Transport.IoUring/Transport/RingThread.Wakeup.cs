using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

// Waking the loop from other threads: the posting thread writes the ring's eventfd itself when the loop sleeps, and
// the eventfd lives until no poster can still write it.
internal sealed unsafe partial class RingThread
{
    private int _eventFd = -1; // set once by the ring thread before any poster may use it; never reassigned
    private int _sleeping;

    /// <summary>
    /// References to the eventfd: 1 held by the ring until its thread ends, plus 1 per poster inside <see cref="Wake"/>.
    /// The last to let go closes it. Without this, a poster that won the sleeping flag could write after the ring
    /// closed the eventfd, into whatever file took its number meanwhile. 0: closed, no poster may take one any more.
    /// </summary>
    private int _eventFdUsers;

    /// <summary>True while the loop waits in io_uring_enter for a completion (or is about to): a post then wakes it.</summary>
    internal bool IsSleeping => Volatile.Read(ref _sleeping) == 1;

    /// <summary>The eventfd that wakes the loop (tests: to check it outlives every poster).</summary>
    internal int WakeupEventFd => _eventFd;

    /// <summary>Queues work from another thread and wakes the loop at once if it sleeps.</summary>
    public void Post(Action<object?> action, object? state)
    {
        _remoteWork.Enqueue(new WorkItem(action, state));
        // Dekker pairing with the loop: it sets _sleeping (full fence) and then checks the queue; we enqueued (a full
        // fence inside ConcurrentQueue) and now check _sleeping, so either it sees our item or we see it asleep.
        // The posting thread writes the eventfd itself: a wake-up that waited in the thread pool's queue would be
        // as late as the pool is busy (seconds under starvation). Coalesced: only the poster that flips _sleeping
        // 1 -> 0 writes, so a burst of posts to a sleeping ring costs one eventfd write and one wake-up.
        if (Volatile.Read(ref _sleeping) == 1)
        {
            Wake();
        }
    }

    /// <summary>Writes the eventfd if the loop (still) sleeps; whoever flips _sleeping 1 -> 0 writes it.</summary>
    private void Wake()
    {
        if (!TryUseEventFd())
        {
            return; // the ring's thread has ended: nothing left to wake
        }
        try
        {
            if (Interlocked.CompareExchange(ref _sleeping, 0, 1) == 1)
            {
                BeforeWakeWrite?.Invoke();
                ulong one = 1;
                LinuxSyscalls.Write(_eventFd, &one, sizeof(ulong));
                Metrics.Wakeups.Add(1);
            }
        }
        finally
        {
            ReleaseEventFd();
        }
    }

    /// <summary>Ring thread, while initializing: creates the eventfd, with the ring's own reference.</summary>
    private void OpenEventFd()
    {
        int fd = LinuxSyscalls.EventFd();
        if (fd < 0)
        {
            throw new IoUringException("eventfd", fd);
        }
        _eventFd = fd;
        Volatile.Write(ref _eventFdUsers, 1); // release: a poster that gets a reference sees _eventFd
    }

    /// <summary>Takes a poster's reference; false once the eventfd is closed (or was never opened).</summary>
    private bool TryUseEventFd()
    {
        int users = Volatile.Read(ref _eventFdUsers);
        while (users > 0)
        {
            int seen = Interlocked.CompareExchange(ref _eventFdUsers, users + 1, users);
            if (seen == users)
            {
                return true;
            }
            users = seen;
        }
        return false;
    }

    /// <summary>Drops a reference (a poster's, or the ring's when its thread ends); the last one closes the eventfd.</summary>
    private void ReleaseEventFd()
    {
        if (_eventFd >= 0 && Interlocked.Decrement(ref _eventFdUsers) == 0)
        {
            LinuxSyscalls.Close(_eventFd);
        }
    }
}

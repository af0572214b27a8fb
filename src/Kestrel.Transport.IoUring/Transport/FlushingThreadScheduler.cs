using System.IO.Pipelines;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The reader scheduler of one connection's output pipe when sends go out directly (<see cref="SendPathMode.Direct"/>):
/// the send loop resumes on the thread that flushed, never on the ring thread, so a response never waits for the
/// ring to wake up.
/// <list type="bullet">
/// <item>On a pool thread, the first flush of the current work item sends at once, inline; flushes that follow within
/// the same work item (pipelined requests, HTTP/2 streams, TLS records) go to the thread's own local queue and leave
/// together, in one send, as soon as the work item ends. So a response is never held back by whatever its thread does
/// next (it may block), and responses flushed in a row cost one send, as with the Sockets transport, not one per
/// flush. The local queue is served by its own thread first, so a starved pool does not delay it.</item>
/// <item>Any other thread (a dedicated thread, a timer) runs it inline.</item>
/// <item>A continuation scheduled from the ring's own thread (an abort cancelling the pending read) is queued behind
/// the ring's current work, never run re-entrantly.</item>
/// </list>
/// One per connection: the pipe has one reader, so at most one send-loop continuation is pending at a time, and this
/// object is itself the work item that carries it (no allocation per deferred send).
/// </summary>
internal sealed class FlushingThreadScheduler(RingThread ring) : PipeScheduler, IThreadPoolWorkItem
{
    [ThreadStatic]
    private static WorkItemBoundary? t_boundary;

    private Action<object?>? _action;
    private object? _state;
    private int _queued;

    public override void Schedule(Action<object?> action, object? state)
    {
        if (ring.IsOwnerThread)
        {
            ring.Schedule(action, state);
        }
        else if (!Thread.CurrentThread.IsThreadPoolThread || (t_boundary ??= new WorkItemBoundary()).TryOpen())
        {
            action(state);
        }
        else if (Interlocked.CompareExchange(ref _queued, 1, 0) == 0)
        {
            _action = action;
            _state = state;
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: true);
        }
        else
        {
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(action, state, preferLocal: true); // never expected: stay correct anyway
        }
    }

    void IThreadPoolWorkItem.Execute()
    {
        Action<object?> action = _action!;
        object? state = _state;
        _action = null;
        _state = null;
        Volatile.Write(ref _queued, 0);
        action(state);
    }

    /// <summary>
    /// One per pool thread: open while that thread has sent inline in its current work item. It closes itself when the
    /// thread reaches the local queue item queued on opening (or when another thread steals that item, which only
    /// ends the coalescing early).
    /// </summary>
    private sealed class WorkItemBoundary : IThreadPoolWorkItem
    {
        private volatile bool _open;

        public bool TryOpen()
        {
            if (_open)
            {
                return false;
            }
            _open = true;
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: true);
            return true;
        }

        public void Execute() => _open = false;
    }
}

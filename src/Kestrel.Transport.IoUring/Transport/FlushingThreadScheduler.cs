using System.IO.Pipelines;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The reader scheduler of one connection's output pipe when sends go out directly (<see cref="SendPathMode.Direct"/>).
/// A flush on a thread-pool thread resumes the send loop on that same thread, right after the work item that flushed
/// (the pool's thread-local queue): Kestrel flushes once per response (per pipelined request, per HTTP/2 stream, per
/// TLS record), so every response written in one go leaves in one send(2), as with the Sockets transport, whose send
/// loop also runs after the flushing code. The local queue is served before the pool's global queue, so a starved pool
/// does not hold the send back. A flush on any other thread sends at once; a continuation scheduled from the ring's own
/// thread (an abort cancelling the pending read) is queued behind the ring's current work, never run re-entrantly.
/// </summary>
internal sealed class FlushingThreadScheduler(RingThread ring) : PipeScheduler, IThreadPoolWorkItem
{
    // The pipe has one reader, so at most one send-loop continuation is pending at a time: one slot, no allocation.
    private Action<object?>? _action;
    private object? _state;
    private int _queued;

    public override void Schedule(Action<object?> action, object? state)
    {
        if (ring.IsOwnerThread)
        {
            ring.Schedule(action, state);
        }
        else if (!Thread.CurrentThread.IsThreadPoolThread)
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
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(action, state, preferLocal: true); // never expected: keep it correct anyway
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
}

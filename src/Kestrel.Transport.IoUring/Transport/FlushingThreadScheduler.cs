using System.IO.Pipelines;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The reader scheduler of a connection's output pipe when sends go out directly (<see cref="SendPathMode.Direct"/>):
/// a flush from an application thread resumes the send loop right there, on the flushing thread, so that thread can
/// send at once with a non-blocking send(2), as the Sockets transport does. A continuation scheduled from the ring's
/// own thread (an abort cancelling the pending read) is queued behind the ring's current work, never run re-entrantly.
/// </summary>
internal sealed class FlushingThreadScheduler(RingThread ring) : PipeScheduler
{
    public override void Schedule(Action<object?> action, object? state)
    {
        if (ring.IsOwnerThread)
        {
            ring.Schedule(action, state);
        }
        else
        {
            action(state);
        }
    }
}

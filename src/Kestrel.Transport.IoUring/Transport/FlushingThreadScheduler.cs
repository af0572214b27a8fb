using System.IO.Pipelines;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// The reader scheduler of one connection's output pipe when sends go out directly (<see cref="SendPathMode.Direct"/>):
/// the send loop resumes on a pool thread, never waiting for the ring thread to wake up.
/// <list type="bullet">
/// <item>On a pool thread, a connection starts in <see cref="FlushSendMode.AtOnce"/>: its flush sends at once, inline,
/// so a response is never held back by whatever its thread does next (it may block). Once the connection flushes a
/// second time within one work item (pipelined requests, HTTP/2 streams, TLS records: Kestrel flushes once per
/// response), it moves to <see cref="FlushSendMode.Deferred"/>: its send loop is queued on the pool's global queue,
/// and the flushes its work item makes before a worker takes it leave in the same send(2), as with the Sockets
/// transport (whose send loop is a work item on the global queue too: its IOQueue). After
/// <see cref="DeferredSendsBeforeRetry"/> deferred sends it tries sending at once again, and stays there unless a work
/// item flushes twice again. A flush that answers bytes received after the connection's last send is never a second
/// one.</item>
/// <item>Any other thread (a dedicated thread, a timer) sends inline.</item>
/// <item>The ring's own thread (Inline scheduling, or an abort cancelling the pending read) queues the loop behind the
/// ring's current work, never re-entrantly; the loop then sends through the ring.</item>
/// </list>
/// <para>
/// Invariant: a deferred send waits for no particular thread. The global queue is first in, first out and every
/// worker serves it, so the send waits only for the work items queued before it, as a Sockets send does. Reason: the
/// flushing thread's local queue is served by that thread, and by others only through a steal, which a worker tries
/// only once its own queue and the global queue are empty; a handler that flushes and then blocks its thread (events
/// followed by a wait on a lock, an event, a sleep) would hold its flushed bytes back for as long as the pool stays
/// busy. (A blocking <c>Task.Wait</c> moves the thread's local items to a queue of the pool's; other waits do not.) The
/// ring thread would not wait for the pool, but every deferred batch would then cost a ring submission and wake-up,
/// and on a busy core the ring thread (SCHED_BATCH) runs only when the application thread blocks, yields or ends its
/// slice: the batch would wait for that instead. Under a starved pool a deferred send waits as a Sockets send does;
/// a connection that flushes once per work item (one HTTP/1.1 response each) sends inline and never waits.
/// </para>
/// One per connection: the pipe has one reader, so at most one send-loop continuation is pending at a time, and this
/// object is itself the work item that carries it (no allocation per deferred send). The mode is a
/// <see cref="SendModeState"/> (FlushingThreadScheduler.SendMode.cs), touched only by the thread that flushed.
/// </summary>
internal sealed partial class FlushingThreadScheduler(RingThread ring, IoUringConnection connection) : PipeScheduler, IThreadPoolWorkItem
{
    /// <summary>
    /// How many deferred sends in a row a connection makes before it tries sending at once again. A connection that
    /// really flushes several times per work item (pipelining, HTTP/2) pays one extra send(2) per this many batches.
    /// </summary>
    internal const int DeferredSendsBeforeRetry = 16;

    [ThreadStatic]
    private static WorkItemBoundary? t_boundary;

    /// <summary>Values of <see cref="_continuation"/>: no deferred continuation is queued, or this object is queued carrying one.</summary>
    private const int NoneQueued = 0, Queued = 1;

    private SendModeState _sendMode; // flushing thread only

    // The deferred continuation: written before the work item is queued (NoneQueued → Queued), read when it runs (→ NoneQueued).
    private Action<object?>? _action;
    private object? _state;
    private int _continuation;

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
        else if (_sendMode.TryAtOnce() && _sendMode.TryInlineSend(CurrentInlineSendMark()))
        {
            action(state);
        }
        else
        {
            _sendMode.OnDeferred();
            Defer(action, state);
        }
    }

    /// <summary>Where an inline send now would be; opens the pool thread's work item number if none is open.</summary>
    private InlineSendMark CurrentInlineSendMark()
    {
        WorkItemBoundary boundary = t_boundary ??= new WorkItemBoundary();
        return new InlineSendMark(boundary, boundary.Current(), connection.InputFlushes);
    }

    private void Defer(Action<object?> action, object? state)
    {
        if (Interlocked.CompareExchange(ref _continuation, Queued, NoneQueued) == NoneQueued)
        {
            _action = action;
            _state = state;
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false); // see the class comment
        }
        else
        {
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(action, state, preferLocal: false); // never expected: stay correct anyway
        }
    }

    void IThreadPoolWorkItem.Execute()
    {
        Action<object?> action = _action!;
        object? state = _state;
        _action = null;
        _state = null;
        Volatile.Write(ref _continuation, NoneQueued);
        action(state);
    }

    /// <summary>
    /// Marks the calling pool thread as running one of <see cref="ApplicationDispatch"/>'s work items until
    /// <see cref="LeaveDispatchedWorkItem"/>: the dispatch knows where its own work items begin and end, so flushes
    /// in them are numbered without a boundary item (see <see cref="WorkItemBoundary"/>).
    /// </summary>
    internal static void EnterDispatchedWorkItem() => (t_boundary ??= new WorkItemBoundary()).EnterDispatched();

    /// <summary>Ends what <see cref="EnterDispatchedWorkItem"/> began on this thread.</summary>
    internal static void LeaveDispatchedWorkItem() => t_boundary!.LeaveDispatched();

    /// <summary>
    /// One per pool thread: numbers the work items in which that thread's connections sent inline. The number stays
    /// while the thread is in the same work item.
    /// <list type="bullet">
    /// <item>In one of <see cref="ApplicationDispatch"/>'s work items (where Kestrel's read continuations run) the
    /// dispatch opens and closes the number itself.</item>
    /// <item>In any other work item, opening queues an item on the thread's local queue, which closes the number when
    /// the thread gets there: after the current work item, which is what the local queue is for here. Another worker
    /// may steal that item first and start a new number early: then the flushes after it look like a new work item's
    /// and send at once, so a burst of flushes may leave in many sends; which is why the dispatch numbers its own work
    /// items instead of relying on it.</item>
    /// </list>
    /// Nothing waits for the boundary item: it only decides whether a later flush on its thread defers or sends at
    /// once. Run late (its thread blocked, or busy with later local items), flushes on that thread keep deferring,
    /// and a deferred send waits for no particular thread (see the class comment); run early, a flush sends at once.
    /// Either way every flushed byte leaves; only how many flushes share a send differs.
    /// </summary>
    private sealed class WorkItemBoundary : IThreadPoolWorkItem
    {
        private long _workItem;
        private volatile bool _open;
        private bool _inDispatchedItem; // this thread only; the pool never runs one dispatched item inside another

        public long Current()
        {
            if (!_inDispatchedItem && !_open)
            {
                _open = true;
                _workItem++;
                System.Threading.ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: true);
            }
            return _workItem;
        }

        // Both ends take a new number: what the thread flushed before the item, and what it flushes after, belong to
        // other work items (a boundary item still open from before would otherwise join them).
        public void EnterDispatched()
        {
            _inDispatchedItem = true;
            _workItem++;
        }

        public void LeaveDispatched()
        {
            _inDispatchedItem = false;
            _workItem++;
        }

        public void Execute() => _open = false;
    }
}

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
/// object is itself the work item that carries it (no allocation per deferred send). Only the thread that flushed
/// touches the mode fields (the output pipe has one writer at a time).
/// </summary>
internal sealed class FlushingThreadScheduler(RingThread ring, IoUringConnection connection) : PipeScheduler, IThreadPoolWorkItem
{
    /// <summary>
    /// How many deferred sends in a row a connection makes before it tries sending at once again. A connection that
    /// really flushes several times per work item (pipelining, HTTP/2) pays one extra send(2) per this many batches.
    /// </summary>
    internal const int DeferredSendsBeforeRetry = 16;

    [ThreadStatic]
    private static WorkItemBoundary? t_boundary;

    // Flushing thread only.
    private FlushSendMode _mode = FlushSendMode.AtOnce;
    private int _deferredSinceSwitch;
    private WorkItemBoundary? _lastInlineSendBoundary;
    private long _lastInlineSendWorkItem;
    private int _inputFlushesAtLastInlineSend;

    // The deferred continuation: written before the work item is queued, read when it runs.
    private Action<object?>? _action;
    private object? _state;
    private int _queued;

    public FlushSendMode Mode => _mode;

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
        else if (SendsAtOnce() && !IsSecondSendOfThisWorkItem())
        {
            action(state);
        }
        else
        {
            if (_mode == FlushSendMode.AtOnce)
            {
                _mode = FlushSendMode.Deferred;
                _deferredSinceSwitch = 0;
            }
            Defer(action, state);
        }
    }

    /// <summary>
    /// True when this flush, the first of its work item, may send inline. A connection that deferred
    /// <see cref="DeferredSendsBeforeRetry"/> sends in a row goes back to <see cref="FlushSendMode.AtOnce"/> for one
    /// work item: if that work item flushes again, the connection defers again; if not, it stays at once. Without the
    /// retry, one work item with two flushes decided for the connection's whole life: a TLS connection's first request
    /// can share its work item with the end of the handshake (the session tickets are a flush of their own), and under
    /// TLS HTTP/1.1 load a growing share of single responses waited for the end of their work item (27% of flushes in
    /// the second 5 s of a run), one more work item each, queued behind whatever the pool had queued before it.
    /// </summary>
    private bool SendsAtOnce()
    {
        if (_mode == FlushSendMode.AtOnce)
        {
            return true;
        }
        if (++_deferredSinceSwitch < DeferredSendsBeforeRetry)
        {
            return false;
        }
        _mode = FlushSendMode.AtOnce;
        return true;
    }

    /// <summary>
    /// Notes that this connection sends inline in the current work item; true if it already did, and has received
    /// nothing since. Bytes that arrived after that send answer it (a client that waits for each response): their
    /// response is the first of a new exchange, not a second one written in the same go, even when the work item
    /// read them at once because they were already there when it looked.
    /// </summary>
    private bool IsSecondSendOfThisWorkItem()
    {
        WorkItemBoundary boundary = t_boundary ??= new WorkItemBoundary();
        long workItem = boundary.Current();
        int inputFlushes = connection.InputFlushes;
        if (ReferenceEquals(boundary, _lastInlineSendBoundary) && workItem == _lastInlineSendWorkItem
            && inputFlushes == _inputFlushesAtLastInlineSend)
        {
            return true;
        }
        _lastInlineSendBoundary = boundary;
        _lastInlineSendWorkItem = workItem;
        _inputFlushesAtLastInlineSend = inputFlushes;
        return false;
    }

    private void Defer(Action<object?> action, object? state)
    {
        if (Interlocked.CompareExchange(ref _queued, 1, 0) == 0)
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
        Volatile.Write(ref _queued, 0);
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
    /// and send at once. Measured in the tests' process after busy tests: up to 260 sends for 320 flushes in 5
    /// bursts, where the dispatch's own numbering gives 6; which is why the dispatch does not rely on it.</item>
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

/// <summary>When a connection's flush on a pool thread sends (see <see cref="FlushingThreadScheduler"/>).</summary>
internal enum FlushSendMode
{
    /// <summary>At once, inline in the flush: one flush per work item (request, response, next request).</summary>
    AtOnce,

    /// <summary>From the pool's global queue, with every flush made before a worker takes it: several responses per work item.</summary>
    Deferred,
}

using System.Collections.Concurrent;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// How one ring hands its connections' application work (the continuations of Kestrel's reads) to the .NET thread
/// pool in the default scheduling mode, so that a pool starved by blocking handlers still serves quick requests.
/// <para>
/// Why: the pool's queue is first in, first out. When handlers block their pool threads (synchronous I/O, a lock,
/// <c>.Result</c>, <c>Thread.Sleep</c>), every new request waits behind every blocked handler's next request queued
/// before it, health probes included. With the Sockets transport the same happens.
/// </para>
/// <para>
/// What it does instead, in three parts:
/// <list type="number">
/// <item><b>When the pool is backed up, waiting is kept here, not in the pool's queue.</b> Each work item runs one
/// continuation. While the pool keeps up, every waiting continuation has a work item in the pool's queue, as with
/// <see cref="System.IO.Pipelines.PipeScheduler.ThreadPool"/>. Once the continuation a work item
/// takes, or one still waiting, has waited <see cref="BackedUpWait"/> or more, at most <see cref="MaxQueuedItems"/> of
/// this dispatch's work items wait in the pool's queue at a time, until a work item finds no such wait again; never fewer than one while a continuation
/// waits, so the pool always sees the demand and adds threads when it is starved, as it would otherwise. Work that
/// Kestrel queues itself (a new connection) then waits behind a handful of this dispatch's items, not behind every
/// request of every blocked connection.</item>
/// <item><b>Quick connections first.</b> A continuation is filed by how its connection's last one went:
/// <see cref="ConnectionRunHistory.Quick"/> (it returned its thread within <see cref="SlowRun"/>), then
/// <see cref="ConnectionRunHistory.New"/> (the connection's first request), then
/// <see cref="ConnectionRunHistory.Slow"/> (it held its thread for <see cref="SlowRun"/> or more). A handler that
/// stops blocking is quick again after one quick run.</item>
/// <item><b>Nobody waits for ever.</b> A band that has waited while <see cref="PassOverLimit"/> continuations of
/// the bands before it ran takes the next turn, so when the pool is saturated by quick work, new and slow
/// connections still get at least one turn in <see cref="PassOverLimit"/> + 1.</item>
/// </list>
/// Within a connection nothing is reordered (its input pipe has one reader: at most one continuation of a connection
/// waits at a time). When the pool keeps up, every continuation runs at once and the order makes no difference.
/// </para>
/// </summary>
internal sealed class ApplicationDispatch : IThreadPoolWorkItem
{
    /// <summary>A continuation that holds its pool thread at least this long marks its connection slow.</summary>
    public static readonly TimeSpan SlowRun = TimeSpan.FromMilliseconds(50);

    /// <summary>A continuation that waited this long before it ran means the pool is backed up.</summary>
    public static readonly TimeSpan BackedUpWait = TimeSpan.FromMilliseconds(20);

    /// <summary>How many turns a waiting band lets the bands before it take, at most, before it takes one.</summary>
    public const int PassOverLimit = 7;

    // Times are Environment.TickCount64 milliseconds: a coarse clock (a few ms of resolution) is precise enough for
    // thresholds of tens of milliseconds, and cheaper to read than Stopwatch's, three times per continuation.
    private static readonly long s_slowRunMilliseconds = (long)SlowRun.TotalMilliseconds;
    private static readonly long s_backedUpMilliseconds = (long)BackedUpWait.TotalMilliseconds;

    private readonly ConcurrentQueue<Continuation> _quick = new();
    private readonly ConcurrentQueue<Continuation> _new = new();
    private readonly ConcurrentQueue<Continuation> _slow = new();
    private Action<IThreadPoolWorkItem> _queueToPool;

    private int _waiting; // continuations in the three bands
    private int _queuedItems; // this dispatch's work items in the pool's queue, not yet started
    private volatile bool _backedUp; // the last work item to start found a continuation that had waited BackedUpWait or more

    // Turns the new and slow bands have waited through; updated by the pool threads without a lock (a lost update
    // only moves a turn by one).
    private int _newPassedOver;
    private int _slowPassedOver;

    public ApplicationDispatch()
        : this(Math.Max(2, Environment.ProcessorCount), static item => ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal: false))
    {
    }

    /// <summary>Test seam: <paramref name="queueToPool"/> stands for the thread pool's queue.</summary>
    internal ApplicationDispatch(int maxQueuedItems, Action<IThreadPoolWorkItem> queueToPool)
    {
        MaxQueuedItems = maxQueuedItems;
        _queueToPool = queueToPool;
    }

    /// <summary>Test seam: from now on, this dispatch's work items go to <paramref name="queueToPool"/> instead.</summary>
    internal void RedirectWorkItemsForTest(Action<IThreadPoolWorkItem> queueToPool) => Volatile.Write(ref _queueToPool, queueToPool);

    /// <summary>While the pool is backed up, at most this many of this dispatch's work items wait in its queue.</summary>
    public int MaxQueuedItems { get; }

    /// <summary>Continuations waiting, by band (test seam and diagnostics).</summary>
    internal (int Quick, int New, int Slow) Waiting => (_quick.Count, _new.Count, _slow.Count);

    /// <summary>This dispatch's work items in the pool's queue, not yet started (test seam).</summary>
    internal int QueuedItems => Volatile.Read(ref _queuedItems);

    /// <summary>
    /// True while more of this ring's application work is on its way to a pool thread: a work item of this dispatch
    /// waits in the pool's queue, or a continuation waits here. A send flushed now can then wait for the ring's next
    /// turn and leave in one submission with the responses of that work, instead of one send(2) of its own.
    /// </summary>
    internal bool MoreWorkQueued => Volatile.Read(ref _queuedItems) > 0 || Volatile.Read(ref _waiting) > 0;

    /// <summary>True while the pool is backed up (see <see cref="BackedUpWait"/>).</summary>
    internal bool BackedUp => _backedUp;

    /// <summary>The reader scheduler of one connection's input pipe: it files the connection's continuations here.</summary>
    public DispatchedConnectionScheduler CreateScheduler() => new(this);

    internal void Enqueue(DispatchedConnectionScheduler connection, Action<object?> action, object? state)
    {
        var band = connection.LastRun switch
        {
            ConnectionRunHistory.Quick => _quick,
            ConnectionRunHistory.New => _new,
            _ => _slow,
        };
        band.Enqueue(new Continuation(connection, action, state, Environment.TickCount64));
        // Counted after it is published (a full fence): a work item that starts meanwhile either sees this
        // continuation or leaves room for one more item (see Execute).
        Interlocked.Increment(ref _waiting);
        QueueItemIfNeeded();
    }

    void IThreadPoolWorkItem.Execute()
    {
        Interlocked.Decrement(ref _queuedItems); // full fence: the check for waiting continuations below comes after it
        if (!TryTakeNext(out Continuation next))
        {
            return; // another item took the continuation this one was queued for
        }
        Interlocked.Decrement(ref _waiting);
        long started = Environment.TickCount64;
        _backedUp = started - next.Enqueued >= s_backedUpMilliseconds || started - OldestWaiting(started) >= s_backedUpMilliseconds;
        QueueItemIfNeeded(); // a successor waits in the pool's queue while this one runs (and perhaps blocks)

        FlushingThreadScheduler.EnterDispatchedWorkItem(); // flushes in it are this work item's (send batching)
        try
        {
            next.Action(next.State);
        }
        finally
        {
            FlushingThreadScheduler.LeaveDispatchedWorkItem();
            next.Connection.LastRun = Environment.TickCount64 - started >= s_slowRunMilliseconds
                ? ConnectionRunHistory.Slow
                : ConnectionRunHistory.Quick;
        }
    }

    /// <summary>Queues work items until as many wait in the pool's queue as continuations here, within the bound.</summary>
    private void QueueItemIfNeeded()
    {
        while (true)
        {
            int queued = Volatile.Read(ref _queuedItems);
            int wanted = Math.Min(Volatile.Read(ref _waiting), _backedUp ? MaxQueuedItems : int.MaxValue);
            if (queued >= wanted)
            {
                return; // each of those will start, take a continuation and queue a successor if more wait
            }
            if (Interlocked.CompareExchange(ref _queuedItems, queued + 1, queued) == queued)
            {
                Volatile.Read(ref _queueToPool)(this);
            }
        }
    }

    /// <summary>Quick, then new, then slow, unless a later band has waited through <see cref="PassOverLimit"/> turns.</summary>
    private bool TryTakeNext(out Continuation next)
    {
        if (_slowPassedOver >= PassOverLimit && _slow.TryDequeue(out next))
        {
            _slowPassedOver = 0;
            return true;
        }
        if (_newPassedOver >= PassOverLimit && _new.TryDequeue(out next))
        {
            _newPassedOver = 0;
            PassOver(ref _slowPassedOver, _slow);
            return true;
        }
        if (_quick.TryDequeue(out next))
        {
            PassOver(ref _newPassedOver, _new);
            PassOver(ref _slowPassedOver, _slow);
            return true;
        }
        if (_new.TryDequeue(out next))
        {
            _newPassedOver = 0;
            PassOver(ref _slowPassedOver, _slow);
            return true;
        }
        if (_slow.TryDequeue(out next))
        {
            _slowPassedOver = 0;
            return true;
        }
        return false;
    }

    /// <summary>When the longest-waiting continuation still here was filed (<paramref name="now"/> when none waits).</summary>
    private long OldestWaiting(long now)
    {
        long oldest = now;
        if (Volatile.Read(ref _waiting) <= 0)
        {
            return oldest; // the common case while the pool keeps up: no band to look into
        }
        if (_quick.TryPeek(out var head)) oldest = Math.Min(oldest, head.Enqueued);
        if (_new.TryPeek(out head)) oldest = Math.Min(oldest, head.Enqueued);
        if (_slow.TryPeek(out head)) oldest = Math.Min(oldest, head.Enqueued);
        return oldest;
    }

    private static void PassOver(ref int passedOver, ConcurrentQueue<Continuation> band) =>
        passedOver = band.IsEmpty ? 0 : passedOver + 1;

    private readonly record struct Continuation(DispatchedConnectionScheduler Connection, Action<object?> Action, object? State, long Enqueued);
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// One ring and the dedicated thread that owns it. The ring is created on this thread (SINGLE_ISSUER), and everything
/// that touches it (preparing SQEs, reaping CQEs, the connections' pipe ends on the transport side) runs here. Other
/// threads hand work in through <see cref="Schedule"/>: a queue plus an eventfd write, coalesced so that the eventfd
/// is only written when the loop is about to sleep or sleeps. The thread is therefore the <see cref="PipeScheduler"/>
/// of the transport side of every pipe it serves.
/// <para>
/// Its parts: the loop (RingThread.Loop.cs), waking it (RingThread.Wakeup.cs), its connections
/// (RingThread.Connections.cs), what a failure costs (RingThread.Failure.cs); and the types the loop calls:
/// <see cref="RingAcceptors"/>, <see cref="CloseChains"/>, <see cref="RingReceives"/>, <see cref="ZeroCopySends"/>.
/// </para>
/// <para>Threads:</para>
/// <list type="table">
/// <listheader><term>who</term><description>may call or touch</description></listheader>
/// <item><term>any thread</term><description><see cref="Post"/>, <see cref="Schedule"/> (from another thread),
/// <see cref="PostOrAbandon"/>, <see cref="TakeHandOff"/>, <see cref="SwitchTo"/>, <see cref="StartAsync"/>,
/// <see cref="StopAsync"/>, <see cref="State"/>, <see cref="IsOwnerThread"/>, <see cref="IsSleeping"/>, the pipe
/// options and the memory pool. Shared fields: the remote work queue (a concurrent queue), <c>_sleeping</c> and
/// <c>_eventFdUsers</c> (interlocked), <c>_state</c> (interlocked), <c>_stopping</c> (volatile).</description></item>
/// <item><term>a flushing thread</term><description>a connection's direct send (<see cref="ConnectionSender"/>): it
/// reads <see cref="ApplicationDispatch"/> and the options, never the SQ or CQ.</description></item>
/// <item><term>the ring thread only</term><description>the SQ and CQ (<see cref="Ring"/>), the buffer ring, the
/// registered-file table, the connection slots, the close chains, the acceptors, the local work queue;
/// <see cref="ReleaseConnection"/>, <see cref="CloseSocket"/>, <see cref="OnAccepted"/>,
/// <see cref="OnZeroCopyNotification"/> (each asserts it in Debug builds).</description></item>
/// </list>
/// </summary>
internal sealed unsafe partial class RingThread : PipeScheduler
{
    private const int CompletionBatch = 512;
    private const int MaxWorkItemsPerTurn = 4096;

    private readonly IoUringTransportContext _context;
    private readonly Thread _thread;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentQueue<WorkItem> _remoteWork = new();
    private readonly Queue<WorkItem> _localWork = new();
    private readonly IoUringCqe[] _completions = new IoUringCqe[CompletionBatch];
    private readonly ConnectionSlots _slots = new();

    private Ring _ring = null!;
    private ProvidedBufferRing _buffers = null!;
    private RingReceives _receives = null!;
    private FixedFileTable? _files;
    private ZeroCopySends _zeroCopy = null!;
    private ulong* _eventFdValue;
    private RingAcceptors? _accepting;

    /// <summary>This ring's accepts (ring-thread only; for tests).</summary>
    internal RingAcceptors Accepting => _accepting!;
    private CloseChains _closes = null!;
    private volatile bool _stopping;

    public RingThread(IoUringTransportContext context, int index)
    {
        _context = context;
        Index = index;
        Metrics = context.Metrics.ForRing(index);
        _thread = new Thread(Run) { IsBackground = true, Name = InheritedPolicyGuard.RingThreadNamePrefix + index };
        MemoryPool = context.CreateMemoryPool();
        var options = context.Options;
        long maxRead = options.MaxReadBufferSize ?? 0, maxWrite = options.MaxWriteBufferSize ?? 0;
        // The ring thread is the scheduler of the transport's pipe ends; the application's ends continue where the
        // options say. Thresholds and halves as in the Sockets transport (0 = no back-pressure).
        _sharedInputPipeOptions = new PipeOptions(MemoryPool, readerScheduler: context.ApplicationScheduler, writerScheduler: this,
            pauseWriterThreshold: maxRead, resumeWriterThreshold: maxRead / 2, useSynchronizationContext: false);
        ApplicationDispatch = options.ApplicationScheduling == ApplicationSchedulingMode.ThreadPool ? new ApplicationDispatch() : null;
        Metrics.Dispatch = ApplicationDispatch;
        _mayYieldToDispatchedWork = ApplicationDispatch is not null && context.SendsFromFlushingThread;
        // The output's reader is the send loop: here, or (direct sends) on the thread that flushed, through a
        // scheduler of each connection's own.
        _ringOutputPipeOptions = new PipeOptions(MemoryPool, readerScheduler: this, writerScheduler: context.ApplicationScheduler,
            pauseWriterThreshold: maxWrite, resumeWriterThreshold: maxWrite / 2, useSynchronizationContext: false);
    }

    private readonly PipeOptions _ringOutputPipeOptions;

    /// <summary>
    /// Whether a turn may end in a yield instead of a sleep (see YieldedToDispatchedWork): only where application work
    /// goes to the pool and responses leave from the thread that flushed them. With <see cref="SendPathMode.Ring"/>
    /// every response waits for the ring thread, and a thread that yielded queues behind the pool threads' work (the
    /// scheduler puts it last), its responses with it. Direct sends do not wait for the ring (see docs/design.md,
    /// "A yield instead of a sleep").
    /// </summary>
    private readonly bool _mayYieldToDispatchedWork;

    /// <summary>The options of a new connection's output pipe: its reader, the send loop, runs where the send path says.</summary>
    public PipeOptions CreateOutputPipeOptions(IoUringConnection connection)
    {
        if (!_context.SendsFromFlushingThread)
        {
            return _ringOutputPipeOptions;
        }
        var shared = _ringOutputPipeOptions;
        return new PipeOptions(MemoryPool, readerScheduler: new FlushingThreadScheduler(this, connection), writerScheduler: shared.WriterScheduler,
            pauseWriterThreshold: shared.PauseWriterThreshold, resumeWriterThreshold: shared.ResumeWriterThreshold, useSynchronizationContext: false);
    }

    /// <summary>The memory pool of this ring's connections (Kestrel's pinned block pool when DI has it).</summary>
    public MemoryPool<byte> MemoryPool { get; }

    private readonly PipeOptions _sharedInputPipeOptions;

    /// <summary>
    /// Where this ring's connections' application work goes in the default scheduling mode (quick connections first
    /// when the pool is starved); null under Inline scheduling, where it runs here.
    /// </summary>
    public ApplicationDispatch? ApplicationDispatch { get; }

    /// <summary>
    /// A new connection's input pipe and the application's end of it: under Inline scheduling the pipe's own reader,
    /// which continues here; otherwise a reader whose continuations, the first read's included, go through
    /// <see cref="ApplicationDispatch"/>.
    /// </summary>
    public (Pipe Pipe, PipeReader ApplicationEnd) CreateInputPipe()
    {
        if (ApplicationDispatch is null)
        {
            var inline = new Pipe(_sharedInputPipeOptions);
            return (inline, inline.Reader);
        }
        var shared = _sharedInputPipeOptions;
        var scheduler = ApplicationDispatch.CreateScheduler();
        var pipe = new Pipe(new PipeOptions(MemoryPool, readerScheduler: scheduler, writerScheduler: this,
            pauseWriterThreshold: shared.PauseWriterThreshold, resumeWriterThreshold: shared.ResumeWriterThreshold, useSynchronizationContext: false));
        return (pipe, new FirstReadThroughDispatchReader(pipe.Reader, scheduler));
    }

    public int Index { get; }

    /// <summary>This ring's instruments, tagged with its id.</summary>
    public RingMetrics Metrics { get; }
    public IoUringTransportContext Context => _context;
    public Ring Ring => _ring;
    public ProvidedBufferRing Buffers => _buffers;

    /// <summary>The ring's receive buffers and the per-turn receive work (see <see cref="RingReceives"/>).</summary>
    public RingReceives Receives => _receives;
    public bool UsesFixedFiles => _files is not null;

    /// <summary>Registered send memory, when <see cref="IoUringTransportOptions.RegisteredSendBufferSize"/> is set and registration worked.</summary>
    public RegisteredBufferArena? SendArena => _zeroCopy.Arena;

    public const int SendArenaChunkSize = 64 * 1024;
    public bool ZeroCopyEnabled => _zeroCopy.Enabled;

    /// <summary>Send_zc completions whose notification said the kernel copied anyway.</summary>
    public long ZeroCopyCopies => _zeroCopy.Copies;
    public long ZeroCopySends => _zeroCopy.Sends;

    /// <summary>Starts the thread and waits until its ring exists (or throws why it could not be created).</summary>
    public Task StartAsync()
    {
        _thread.Start();
        return _started.Task;
    }

    /// <summary>Stops accepting work; the loop ends once every connection on it has closed.</summary>
    public Task StopAsync()
    {
        if (State == RingState.Failed)
        {
            return StopFailedAsync();
        }
        Post(static s =>
        {
            var self = (RingThread)s!;
            self._stopping = true;
            if (self.State == RingState.Running)
            {
                self.SetState(RingState.Stopping);
            }
            self._accepting!.StopAll();
            self._slots.AbortAll(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("The io_uring transport is stopping."));
        }, this);
        return _stopped.Task;
    }

    /// <summary>A failed ring's thread has ended by itself; its memory pool goes only now, when the application is done with the pipes.</summary>
    private Task StopFailedAsync() => _stopped.Task.ContinueWith(static (_, s) =>
    {
        var self = (RingThread)s!;
        if (!self._kernelMemoryLeaked)
        {
            self.DisposeMemoryPool();
        }
    }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    public bool IsOwnerThread => Environment.CurrentManagedThreadId == _thread.ManagedThreadId;

    /// <summary><c>await ring.SwitchTo()</c> continues on this ring's thread.</summary>
    public RingThreadAwaitable SwitchTo() => new(this);

    /// <summary>Runs <paramref name="action"/> on this ring's thread: in order after the current work when already there, else via the queue and a wake-up.</summary>
    public override void Schedule(Action<object?> action, object? state)
    {
        if (IsOwnerThread)
        {
            _localWork.Enqueue(new WorkItem(action, state));
        }
        else
        {
            Post(action, state);
        }
    }

    /// <summary>The policy this ring's thread runs under (SCHED_BATCH unless the options or the kernel said otherwise).</summary>
    internal ThreadSchedulingPolicy SchedulingPolicy { get; private set; } = ThreadSchedulingPolicy.Other;

    /// <summary>
    /// Runs on the ring's own thread before the ring exists. Under SCHED_BATCH a wake-up of this thread (a completion, a
    /// posted send or hand-off) no longer preempts the application thread that caused it on the same core, so a burst
    /// of requests and responses is handled in one turn instead of one context switch each.
    /// </summary>
    private void ApplySchedulingPolicy()
    {
        if (_context.Options.RingThreadPolicy != RingThreadPolicy.Batch)
        {
            return;
        }
        InheritedPolicyGuard.RegisterRingThread();
        int r = LinuxSyscalls.SetCurrentThreadSchedulingPolicy(ThreadSchedulingPolicy.Batch);
        if (r == 0)
        {
            SchedulingPolicy = ThreadSchedulingPolicy.Batch;
        }
        else
        {
            _context.Log.RingThreadPolicyRefused(Index, Errno.Name(-r));
        }
    }

    private void Initialize()
    {
        var options = _context.Options;
        _ring = CreateRing(options);
        bool incremental = options.IncrementalReceiveBuffers && _context.Capabilities.IncrementalBufferRings;
        _buffers = new ProvidedBufferRing(_ring, groupId: 0, options.ReceiveBufferCount, options.ReceiveBufferSize, incremental);
        _receives = new RingReceives(_ring, _buffers, Metrics);

        int slots = Math.Min(options.FixedFileSlots, _context.Descriptors.FixedSlotsPerRing);
        if (slots > 0)
        {
            try
            {
                _files = new FixedFileTable(_ring, slots);
            }
            catch (IoUringException e)
            {
                // Without a fixed table every connection uses its ordinary descriptor: slower, still correct.
                _context.Log.FixedFilesUnavailable(Index, e.ErrorName);
            }
        }

        _closes = new CloseChains(_ring, _files, _context.Descriptors);

        RegisteredBufferArena? sendArena = null;
        if (options.RegisteredSendBufferSize > 0 && options.ZeroCopySendThreshold > 0 && _context.Capabilities.SendZeroCopy)
        {
            try
            {
                sendArena = new RegisteredBufferArena(_ring, Math.Max(1, options.RegisteredSendBufferSize / SendArenaChunkSize), SendArenaChunkSize);
            }
            catch (IoUringException e)
            {
                // Typically ENOMEM: RLIMIT_MEMLOCK too low for the registration. Sends still work, unregistered.
                _context.Log.RegisteredBuffersUnavailable(Index, e.ErrorName);
            }
        }

        OpenEventFd();
        _eventFdValue = (ulong*)NativeMemory.AllocZeroed(sizeof(ulong));
        _accepting = new RingAcceptors(this, _ring, _context);
        _zeroCopy = new ZeroCopySends(_context, Metrics, Index, sendArena);
    }

    private Ring CreateRing(IoUringTransportOptions options)
    {
        var ringOptions = new RingOptions
        {
            SubmissionQueueEntries = (uint)options.SubmissionQueueSize,
            CompletionQueueEntries = (uint)options.CompletionQueueSize,
        };
        if (!options.SqPoll)
        {
            return Ring.Create(ringOptions);
        }

        // SQPOLL excludes DEFER_TASKRUN: completions then arrive without our entering, and the loop's wait changes
        // with it (Ring.SubmitAndWait wakes the kernel thread or waits for room as needed).
        var flags = (RingOptions.DefaultFlags & ~SetupFlags.DeferTaskRun) | SetupFlags.SqPoll;
        uint cpu = 0;
        if (options.SqPollCpu >= 0)
        {
            flags |= SetupFlags.SqAff;
            cpu = (uint)((options.SqPollCpu + Index) % Environment.ProcessorCount);
        }
        try
        {
            return Ring.Create(ringOptions with { Flags = flags, SqThreadIdleMilliseconds = (uint)options.SqPollIdleMilliseconds, SqThreadCpu = cpu });
        }
        catch (IoUringException e)
        {
            _context.Log.SqPollUnavailable(Index, e.ErrorName);
            return Ring.Create(ringOptions);
        }
    }

    // ---- zero copy ------------------------------------------------------------------------------------------------

    /// <summary>A zero-copy send's notification (see <see cref="ZeroCopySends"/>).</summary>
    public void OnZeroCopyNotification(bool copied)
    {
        Debug.Assert(IsOwnerThread, "zero-copy notifications are reaped on the ring thread");
        _zeroCopy.OnNotification(copied);
    }

    /// <summary>An arena SEND_ZC's completion: its result goes to the connection (which waits for every result).</summary>
    private void OnArenaSendCompleted(in IoUringCqe cqe)
    {
        if (_zeroCopy.OnArenaCompletion(cqe) && _slots.TryGetAny(UserData.SlotOf(cqe.UserData), out var connection))
        {
            connection.OnSendCompleted(cqe);
        }
    }

    // ---- teardown -------------------------------------------------------------------------------------------------

    private void Cleanup()
    {
        // Unregistering the files drops the ring's references to the sockets (a failed ring's resets go out now).
        _files?.Dispose();
        if (_kernelMemoryLeaked)
        {
            // The kernel may still write the receive buffers, read the send chunks or write the eventfd counter:
            // they stay allocated for good. Closing the ring fd makes the kernel cancel whatever is left.
            _ring?.Dispose();
        }
        else
        {
            _zeroCopy?.Dispose();
            _buffers?.Dispose();
            _ring?.Dispose(); // closing the ring fd also drops anything still registered
            NativeMemory.Free(_eventFdValue);
            _eventFdValue = null;
        }
        ReleaseEventFd(); // closed now, or by the last poster still writing it (see Wake)
        _accepting?.Dispose();
        if (State != RingState.Failed)
        {
            DisposeMemoryPool(); // a failed ring's pipes may still be in the application's hands: see StopFailedAsync
        }
        _accepting?.FinishAll();
    }

    private void DisposeMemoryPool()
    {
        if (MemoryPool != MemoryPool<byte>.Shared)
        {
            MemoryPool.Dispose();
        }
    }

    private readonly record struct WorkItem(Action<object?> Action, object? State);
}

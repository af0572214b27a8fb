using System.Buffers;
using System.Collections.Concurrent;
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
    private readonly List<IoUringConnection> _receiveRearms = new();
    private readonly List<IoUringConnection> _inputFlushes = new();
    private readonly ConnectionSlots _slots = new();
    private readonly List<Acceptor?> _acceptors = new();

    private Ring _ring = null!;
    private ProvidedBufferRing _buffers = null!;
    private FixedFileTable? _files;
    private RegisteredBufferArena? _sendArena;
    private int _eventFd = -1;
    private ulong* _eventFdValue;
    private KernelTimespec* _acceptPauseTimespec;
    private int _sleeping;
    private CloseChains _closes = null!;
    private volatile bool _stopping;
    private bool _zeroCopyEnabled;

    public RingThread(IoUringTransportContext context, int index)
    {
        _context = context;
        Index = index;
        Metrics = context.Metrics.ForRing(index);
        _thread = new Thread(Run) { IsBackground = true, Name = $"io_uring ring {index}" };
        MemoryPool = context.CreateMemoryPool();
        var options = context.Options;
        long maxRead = options.MaxReadBufferSize ?? 0, maxWrite = options.MaxWriteBufferSize ?? 0;
        // The ring thread is the scheduler of the transport's pipe ends; the application's ends continue where the
        // options say. Thresholds and halves as in the Sockets transport (0 = no back-pressure).
        InputPipeOptions = new PipeOptions(MemoryPool, readerScheduler: context.ApplicationScheduler, writerScheduler: this,
            pauseWriterThreshold: maxRead, resumeWriterThreshold: maxRead / 2, useSynchronizationContext: false);
        // The output's reader is the send loop: with direct sends it runs on the thread that flushed, else here.
        PipeScheduler sendLoopScheduler = context.SendsFromFlushingThread ? new FlushingThreadScheduler(this) : this;
        OutputPipeOptions = new PipeOptions(MemoryPool, readerScheduler: sendLoopScheduler, writerScheduler: context.ApplicationScheduler,
            pauseWriterThreshold: maxWrite, resumeWriterThreshold: maxWrite / 2, useSynchronizationContext: false);
    }

    /// <summary>The memory pool of this ring's connections (Kestrel's pinned block pool when DI has it).</summary>
    public MemoryPool<byte> MemoryPool { get; }

    public PipeOptions InputPipeOptions { get; }

    public PipeOptions OutputPipeOptions { get; }

    public int Index { get; }

    /// <summary>This ring's instruments, tagged with its id.</summary>
    public RingMetrics Metrics { get; }
    public IoUringTransportContext Context => _context;
    public Ring Ring => _ring;
    public ProvidedBufferRing Buffers => _buffers;
    public bool UsesFixedFiles => _files is not null;

    /// <summary>Registered send memory, when <see cref="IoUringTransportOptions.RegisteredSendBufferSize"/> is set and registration worked.</summary>
    public RegisteredBufferArena? SendArena => _sendArena;

    public const int SendArenaChunkSize = 64 * 1024;
    public bool ZeroCopyEnabled => _zeroCopyEnabled;

    /// <summary>Send_zc completions whose notification said the kernel copied anyway.</summary>
    public long ZeroCopyCopies { get; private set; }
    public long ZeroCopySends { get; private set; }

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
            foreach (var acceptor in self._acceptors)
            {
                if (acceptor is not null)
                {
                    self.StopAcceptor(acceptor);
                }
            }
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

    /// <summary>True while the loop waits in io_uring_enter for a completion (or is about to): a post then wakes it.</summary>
    internal bool IsSleeping => Volatile.Read(ref _sleeping) == 1;

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
        if (Interlocked.CompareExchange(ref _sleeping, 0, 1) == 1)
        {
            ulong one = 1;
            LinuxSyscalls.Write(_eventFd, &one, sizeof(ulong));
            Metrics.Wakeups.Add(1);
        }
    }

    private void Run()
    {
        try
        {
            Initialize();
        }
        catch (Exception e)
        {
            Cleanup();
            _started.TrySetException(e);
            _stopped.TrySetResult();
            return;
        }
        SetState(RingState.Running);
        _started.TrySetResult();

        try
        {
            Loop();
        }
        catch (Exception e)
        {
            try
            {
                FailRing(e);
            }
            catch (Exception teardownError)
            {
                _context.Log.WorkItemFailed(Index, teardownError);
            }
        }
        finally
        {
            Cleanup();
            if (State != RingState.Failed)
            {
                SetState(RingState.Stopped);
            }
            _stopped.TrySetResult();
        }
    }

    private void Initialize()
    {
        var options = _context.Options;
        _ring = CreateRing(options);
        bool incremental = options.IncrementalReceiveBuffers && _context.Capabilities.IncrementalBufferRings;
        _buffers = new ProvidedBufferRing(_ring, groupId: 0, options.ReceiveBufferCount, options.ReceiveBufferSize, incremental);

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

        if (options.RegisteredSendBufferSize > 0 && options.ZeroCopySendThreshold > 0 && _context.Capabilities.SendZeroCopy)
        {
            try
            {
                _sendArena = new RegisteredBufferArena(_ring, Math.Max(1, options.RegisteredSendBufferSize / SendArenaChunkSize), SendArenaChunkSize);
            }
            catch (IoUringException e)
            {
                // Typically ENOMEM: RLIMIT_MEMLOCK too low for the registration. Sends still work, unregistered.
                _context.Log.RegisteredBuffersUnavailable(Index, e.ErrorName);
            }
        }

        _eventFd = LinuxSyscalls.EventFd();
        if (_eventFd < 0)
        {
            throw new IoUringException("eventfd", _eventFd);
        }
        _eventFdValue = (ulong*)NativeMemory.AllocZeroed(sizeof(ulong));
        _acceptPauseTimespec = (KernelTimespec*)NativeMemory.AllocZeroed((nuint)sizeof(KernelTimespec));
        _acceptPauseTimespec->Nanoseconds = 100_000_000; // 100 ms between retries when accept runs out of descriptors
        _limitWatchTimespec = (KernelTimespec*)NativeMemory.AllocZeroed((nuint)sizeof(KernelTimespec));
        _limitWatchTimespec->Seconds = 1;
        _zeroCopyEnabled = options.ZeroCopySendThreshold > 0 && _context.Capabilities.SendZeroCopy;
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

    private void Loop()
    {
        ArmWakeup();
        while (true)
        {
            RunWork();
            ThrowIfRingFailed();
            if (_stopping && _slots.Count == 0 && _closes.Pending == 0 && !HasArmedAcceptors())
            {
                break;
            }

            ArmPendingReceives();
            _buffers.Publish();
            _closes.PrepareDeferred();

            uint waitFor = 0;
            if (_localWork.Count == 0 && _closes.Deferred == 0)
            {
                Interlocked.Exchange(ref _sleeping, 1);
                if (_remoteWork.IsEmpty)
                {
                    waitFor = 1;
                }
                else
                {
                    Volatile.Write(ref _sleeping, 0);
                }
            }

            long submittedBefore = _ring.SubmittedCount;
            int r = _ring.SubmitAndWait(waitFor);
            Volatile.Write(ref _sleeping, 0);
            Metrics.RecordEnter(_ring.SubmittedCount - submittedBefore);
            if (r < 0 && r != -Errno.EBUSY && r != -Errno.EAGAIN)
            {
                throw new IoUringException(r == -Errno.EBADR ? "io_uring_enter (completions were lost)" : "io_uring_enter", r);
            }
            if (_ring.HasOverflowedCompletions)
            {
                Metrics.CqOverflows.Add(1);
            }
            ReapCompletions();
            ThrowIfRingFailed();
        }
    }

    /// <summary>The SQ or CQ failed somewhere a caller caught the exception (a connection's send loop): the loop cannot go on.</summary>
    private void ThrowIfRingFailed()
    {
        if (_ring.Failure is { } failure)
        {
            throw failure;
        }
    }

    private void ReapCompletions()
    {
        int n;
        do
        {
            n = _ring.ReadCompletions(_completions);
            for (int i = 0; i < n; i++)
            {
                try
                {
                    Dispatch(in _completions[i]);
                }
                catch (Exception e) when (!IsFatal(e))
                {
                    OnCompletionFailed(in _completions[i], e);
                }
            }
            FlushReceivedInput();
        }
        while (n == CompletionBatch);
    }

    private void RunWork()
    {
        int budget = MaxWorkItemsPerTurn;
        while (budget-- > 0)
        {
            if (_localWork.TryDequeue(out WorkItem item) || _remoteWork.TryDequeue(out item))
            {
                try
                {
                    item.Action(item.State);
                }
                catch (Exception e) when (!IsFatal(e))
                {
                    OnWorkItemFailed(item.State, e);
                }
            }
            else
            {
                return;
            }
        }
    }

    private void Dispatch(in IoUringCqe cqe)
    {
        ulong ud = cqe.UserData;
        switch (UserData.KindOf(ud))
        {
            case OperationKind.Wakeup:
                _wakeupArmed = false;
                ArmWakeup();
                break;
            case OperationKind.Accept:
            case OperationKind.Timeout:
                DispatchAccept(cqe);
                break;
            case OperationKind.Receive:
                if (_slots.TryGet(UserData.SlotOf(ud), UserData.GenerationOf(ud), out var receiver))
                {
                    receiver.OnReceiveCompleted(cqe);
                }
                else if (cqe.HasBuffer)
                {
                    // A late completion for a connection that has gone: its buffer still goes back.
                    ReleaseReceiveBuffer(cqe);
                }
                break;
            case OperationKind.Send:
                if (_slots.TryGet(UserData.SlotOf(ud), UserData.GenerationOf(ud), out var sender))
                {
                    sender.OnSendCompleted(cqe);
                }
                break;
            case OperationKind.Close:
                _closes.OnCompleted(cqe);
                break;
            case OperationKind.ArenaSend:
                OnArenaSendCompleted(cqe);
                break;
            default:
                // Cancel and other bookkeeping completions carry nothing the loop needs.
                break;
        }
    }

    // ---- wake-up --------------------------------------------------------------------------------------------------

    private void ArmWakeup()
    {
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareEventFdRead(sqe, _eventFd, _eventFdValue, UserData.Encode(OperationKind.Wakeup, 0, 0));
        _wakeupArmed = true;
    }

    // ---- buffers --------------------------------------------------------------------------------------------------

    /// <summary>The bytes a recv completion delivered; copy them out, then <see cref="ReleaseReceiveBuffer"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReadOnlySpan<byte> ReceivedBytes(in IoUringCqe cqe) => _buffers.Received(cqe.BufferId, cqe.Result);

    /// <summary>Gives a completion's buffer back to the kernel (published at the end of the turn).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReleaseReceiveBuffer(in IoUringCqe cqe)
        => _buffers.Release(cqe.BufferId, Math.Max(cqe.Result, 0), (cqe.Flags & CqeFlags.BufferMore) != 0);

    public void OnBuffersExhausted()
    {
        _buffers.RecordExhausted();
        Metrics.NoBufferRearms.Add(1);
    }

    // ---- receives -------------------------------------------------------------------------------------------------

    /// <summary>Re-arms <paramref name="connection"/>'s multishot recv at the end of this turn, after recycled buffers are published.</summary>
    public void QueueReceiveRearm(IoUringConnection connection) => _receiveRearms.Add(connection);

    /// <summary>Flushes <paramref name="connection"/>'s input pipe after the current batch of completions.</summary>
    public void QueueInputFlush(IoUringConnection connection) => _inputFlushes.Add(connection);

    private void FlushReceivedInput()
    {
        // Index loop: a flush may run application code inline, which may queue more.
        for (int i = 0; i < _inputFlushes.Count; i++)
        {
            try
            {
                _inputFlushes[i].FlushQueuedInput();
            }
            catch (Exception e) when (!IsFatal(e))
            {
                _inputFlushes[i].FailContained(e);
            }
        }
        _inputFlushes.Clear();
    }

    private void ArmPendingReceives()
    {
        if (_receiveRearms.Count == 0)
        {
            return;
        }
        _buffers.Publish();
        foreach (var connection in _receiveRearms)
        {
            connection.ArmReceive();
        }
        _receiveRearms.Clear();
    }

    // ---- zero copy ------------------------------------------------------------------------------------------------

    public void OnZeroCopyNotification(bool copied)
    {
        ZeroCopySends++;
        Metrics.ZeroCopySends.Add(1);
        if (!copied)
        {
            return;
        }
        ZeroCopyCopies++;
        Metrics.ZeroCopyCopies.Add(1);
        // Copying means zero-copy only added its notification overhead (loopback, NICs without SG): stop using it.
        if (_zeroCopyEnabled && ZeroCopySends >= 8 && ZeroCopyCopies * 2 > ZeroCopySends)
        {
            _zeroCopyEnabled = false;
            _context.Log.ZeroCopyDisabled(Index, ZeroCopyCopies, ZeroCopySends);
        }
    }

    /// <summary>
    /// A registered-arena SEND_ZC: its result CQE goes to the connection (which cannot have closed: it waits for
    /// every result); its notification, which may come after the connection is gone, only returns the chunk, whose
    /// index travels in the generation bits.
    /// </summary>
    private void OnArenaSendCompleted(in IoUringCqe cqe)
    {
        ReturnArenaChunk(cqe);
        if (cqe.IsNotification)
        {
            OnZeroCopyNotification(((uint)cqe.Result & IoUringValues.NotifUsageZcCopied) != 0);
            return;
        }
        if (_slots.TryGetAny(UserData.SlotOf(cqe.UserData), out var connection))
        {
            connection.OnSendCompleted(cqe);
        }
    }

    /// <summary>An arena chunk is free again after its notification, or after a result that no notification follows.</summary>
    private void ReturnArenaChunk(in IoUringCqe cqe)
    {
        if (cqe.IsNotification || !cqe.HasMore)
        {
            _sendArena!.Return((int)UserData.GenerationOf(cqe.UserData));
        }
    }

    // ---- connections ----------------------------------------------------------------------------------------------

    /// <summary>Forgets a closed connection's slot (with a new generation); its descriptor's place in the budget comes back when its close completes.</summary>
    public void ReleaseConnection(IoUringConnection connection) => _slots.Release(connection.Slot);

    /// <summary>Closes a connection's socket once the kernel holds none of its requests (see <see cref="CloseChains"/>).</summary>
    public void CloseSocket(int fd, int fixedSlot, bool sendFin) => _closes.Close(fd, fixedSlot, sendFin);

    /// <summary>Close chains waiting for room in the SQ (ring thread).</summary>
    internal int PendingCloseChainsDeferred => _closes.Deferred;

    /// <summary>
    /// A connection accepted by this ring's acceptor. The listener spreads connections round-robin over the rings:
    /// this ring sets it up itself or hands the descriptor to the ring whose turn it is.
    /// </summary>
    private void OnAccepted(Acceptor acceptor, int fd)
    {
        _context.Descriptors.OnOpened();
        RingThread target = acceptor.Listener.NextRing(this);
        if (target == this)
        {
            SetUpConnection(acceptor.Listener, fd);
        }
        else
        {
            target.PostOrAbandon(static s =>
            {
                var handOff = (ConnectionHandOff)s!;
                // Runs on the target ring's thread: Schedule from there queues locally, so this is that ring.
                handOff.Target.SetUpConnection(handOff.Listener, handOff.Fd);
            }, new ConnectionHandOff(target, acceptor.Listener, fd, _context.Descriptors));
        }
    }

    private void SetUpConnection(IoUringConnectionListener listener, int fd)
    {
        if (_stopping || listener.IsUnbinding)
        {
            // Accepted after unbind: refuse it the way a closed listener would.
            SocketOptions.SetLingerZero(fd);
            LinuxSyscalls.Close(fd);
            _context.Descriptors.OnClosed();
            return;
        }

        if (listener.SetNoDelayOnAccept)
        {
            SocketOptions.SetNoDelay(fd);
        }

        int fixedSlot = -1;
        if (_files is not null)
        {
            fixedSlot = _files.Install(fd);
            if (fixedSlot < 0)
            {
                Metrics.FixedFileTableFull.Add(1);
                fixedSlot = -1; // ordinary descriptor for this connection
            }
        }

        var (slot, generation) = _slots.Reserve();
        IoUringConnection connection;
        try
        {
            connection = new IoUringConnection(this, listener, slot, generation, fd, fixedSlot,
                SocketAddresses.LocalEndPoint(fd), SocketAddresses.RemoteEndPoint(fd));
        }
        catch (Exception e)
        {
            _slots.Release(slot);
            if (fixedSlot >= 0) _files!.Remove(fixedSlot);
            LinuxSyscalls.Close(fd);
            _context.Descriptors.OnClosed();
            _context.Log.AcceptFailed(listener.EndPoint, e);
            return;
        }
        _slots.Set(slot, connection);
        Metrics.OnConnectionAccepted();
        connection.Start();
        listener.OnConnectionAccepted(connection);
    }

    // ---- acceptors ------------------------------------------------------------------------------------------------

    /// <summary>Makes this ring <paramref name="listener"/>'s acceptor: a multishot accept on its socket. Any thread; completes when armed.</summary>
    public Task AddAcceptorAsync(IoUringConnectionListener listener)
    {
        var request = new AcceptorRequest(this, listener);
        PostOrAbandon(static s =>
        {
            var request = (AcceptorRequest)s!;
            var self = request.Target;
            var acceptor = new Acceptor(request.Listener, self._acceptors.Count);
            if (!request.Listener.AddAcceptor(self, acceptor))
            {
                // Unbound meanwhile: nothing to accept for.
                acceptor.Finished.TrySetResult();
                request.Armed.TrySetResult(acceptor);
                return;
            }
            self._acceptors.Add(acceptor);
            self.ArmAccept(acceptor);
            request.Armed.TrySetResult(acceptor);
        }, request);
        return request.Armed.Task;
    }

    /// <summary>Cancels the acceptor's multishot accept; the task completes when the kernel confirms it ended.</summary>
    public Task StopAcceptorAsync(Acceptor acceptor)
    {
        Post(static s =>
        {
            var (self, acceptor) = ((RingThread, Acceptor))s!;
            self.StopAcceptor(acceptor);
        }, (this, acceptor));
        return acceptor.Finished.Task;
    }

    private void StopAcceptor(Acceptor acceptor)
    {
        if (acceptor.Stopped)
        {
            return;
        }
        acceptor.Stopped = true;
        if (acceptor.Armed)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareCancel(sqe, acceptor.UserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
        }
        else if (acceptor.Paused)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareCancel(sqe, acceptor.PauseUserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
        }
        StopLimitWatch(acceptor);
        MaybeFinishAcceptor(acceptor);
    }

    private void ArmAccept(Acceptor acceptor)
    {
        IoUringSqe* sqe = _ring.GetSqe();
        // A multishot accept takes everything in the backlog before we see a single completion, so it could run
        // the process out of descriptors. Near the budget, accept one connection per SQE instead.
        _context.Descriptors.Refresh();
        acceptor.Multishot = HasRoomForMultishotAccept;
        if (acceptor.Multishot)
        {
            SqePreparation.PrepareMultishotAccept(sqe, acceptor.Listener.ListenFd, acceptor.UserData);
            WatchLimit(acceptor);
        }
        else
        {
            SqePreparation.PrepareAccept(sqe, acceptor.Listener.ListenFd, acceptor.UserData);
        }
        acceptor.Armed = true;
    }

    private void DispatchAccept(in IoUringCqe cqe)
    {
        int index = UserData.SlotOf(cqe.UserData);
        Acceptor? acceptor = index < _acceptors.Count ? _acceptors[index] : null;
        if (acceptor is null)
        {
            if (UserData.KindOf(cqe.UserData) == OperationKind.Accept && cqe.Result >= 0)
            {
                LinuxSyscalls.Close(cqe.Result);
            }
            return;
        }

        if (UserData.KindOf(cqe.UserData) == OperationKind.Timeout && UserData.GenerationOf(cqe.UserData) == Acceptor.WatchMarker)
        {
            OnLimitWatchExpired(acceptor);
            return;
        }
        if (UserData.KindOf(cqe.UserData) == OperationKind.Timeout)
        {
            // The pause is over (or was cancelled by unbind): accept again unless still out of descriptors.
            acceptor.Paused = false;
            if (!acceptor.Stopped)
            {
                _context.Descriptors.Refresh();
                if (_context.Descriptors.IsExhausted)
                {
                    PauseAcceptor(acceptor, reason: null); // still exhausted: wait again, without logging again
                }
                else
                {
                    ArmAccept(acceptor);
                }
            }
            MaybeFinishAcceptor(acceptor);
            return;
        }

        if (!cqe.HasMore)
        {
            acceptor.Armed = false;
        }

        int res = cqe.Result;
        if (res >= 0)
        {
            var descriptors = _context.Descriptors;
            descriptors.Refresh(); // the limit may have been lowered since the last accept
            if (descriptors.Remaining < 0)
            {
                // Into the reserve the runtime and the application need (the limit was lowered, or a multishot
                // accept took a whole backlog at once): give this one back at once, as a full listener would.
                SocketOptions.SetLingerZero(res);
                LinuxSyscalls.Close(res);
                PauseAcceptor(acceptor, ExhaustedReason());
                MaybeFinishAcceptor(acceptor);
                return;
            }
            OnAccepted(acceptor, res);
            if (descriptors.IsExhausted && !acceptor.Stopped)
            {
                PauseAcceptor(acceptor, ExhaustedReason());
                return;
            }
        }
        else if (res == -Errno.EMFILE || res == -Errno.ENFILE || res == -Errno.ENOMEM || res == -Errno.ENOBUFS)
        {
            // Out of descriptors or memory: stop accepting for a moment instead of spinning on the same error;
            // established connections carry on, and the backlog waits in the kernel. Something else took
            // descriptors: count them again.
            _context.Descriptors.Refresh(forceCount: true);
            PauseAcceptor(acceptor, Errno.Name(res));
            return;
        }
        // ECANCELED (unbind), ECONNABORTED (a connection reset in the backlog) and the like: nothing to hand out.

        if (!acceptor.Armed && !acceptor.Stopped && !acceptor.Paused)
        {
            ArmAccept(acceptor);
        }
        MaybeFinishAcceptor(acceptor);
    }

    private string ExhaustedReason()
        => $"{_context.Descriptors.Open} connections are open and RLIMIT_NOFILE is {_context.Descriptors.Limit}: the rest is kept for the runtime and the application";

    /// <summary>Cancels the acceptor's multishot accept and retries after 100 ms (a timeout in the ring, no spinning).</summary>
    private void PauseAcceptor(Acceptor acceptor, string? reason)
    {
        if (acceptor.Paused || acceptor.Stopped)
        {
            return;
        }
        if (reason is not null)
        {
            Metrics.AcceptPauses.Add(1);
            _context.Log.AcceptPaused(acceptor.Listener.EndPoint, reason);
        }
        if (acceptor.Armed)
        {
            IoUringSqe* cancel = _ring.GetSqe();
            SqePreparation.PrepareCancel(cancel, acceptor.UserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
            cancel->Flags |= SqeFlags.CqeSkipSuccess;
        }
        acceptor.Paused = true;
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareTimeout(sqe, _acceptPauseTimespec, acceptor.PauseUserData);
    }

    private void MaybeFinishAcceptor(Acceptor acceptor)
    {
        if (acceptor.Stopped && !acceptor.InKernel)
        {
            _acceptors[acceptor.Index] = null;
            acceptor.Finished.TrySetResult();
        }
    }

    private bool HasArmedAcceptors()
    {
        foreach (var a in _acceptors)
        {
            if (a is not null && a.InKernel)
            {
                return true;
            }
        }
        return false;
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
            _sendArena?.Dispose();
            _buffers?.Dispose();
            _ring?.Dispose(); // closing the ring fd also drops anything still registered
            NativeMemory.Free(_eventFdValue);
            _eventFdValue = null;
        }
        if (_eventFd >= 0)
        {
            LinuxSyscalls.Close(_eventFd);
            _eventFd = -1;
        }
        NativeMemory.Free(_acceptPauseTimespec);
        _acceptPauseTimespec = null;
        NativeMemory.Free(_limitWatchTimespec);
        _limitWatchTimespec = null;
        if (State != RingState.Failed)
        {
            DisposeMemoryPool(); // a failed ring's pipes may still be in the application's hands: see StopFailedAsync
        }
        foreach (var a in _acceptors)
        {
            a?.Finished.TrySetResult();
        }
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

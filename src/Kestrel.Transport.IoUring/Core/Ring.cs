using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>
/// One io_uring instance: its submission and completion rings mapped into this process, owned by the thread that
/// created it. With SINGLE_ISSUER the kernel refuses submissions from any other thread (EEXIST), and with
/// DEFER_TASKRUN completions only appear when the owner enters with GETEVENTS; so this class checks the calling thread
/// first and says so clearly instead of letting another thread hang or fail obscurely.
/// </summary>
internal sealed unsafe class Ring : IDisposable
{
    private readonly int _fd;
    private readonly int _enterFd;
    private readonly EnterFlags _enterFdFlag;
    private readonly int _ownerThreadId;

    private void* _ringMemory;
    private nuint _ringMemorySize;
    private void* _cqMemory; // only when the kernel lacks SINGLE_MMAP
    private nuint _cqMemorySize;
    private IoUringSqe* _sqes;
    private nuint _sqesSize;

    // Submission ring.
    private readonly uint* _sqHead;
    private readonly uint* _sqTail;
    private readonly uint* _sqFlags;
    private readonly uint _sqMask;
    private uint _sqeTail; // next SQE to hand out; published to *_sqTail on submit

    // Completion ring.
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly IoUringCqe* _cqes;
    private readonly uint _cqMask;

    // Scratch memory the kernel reads during io_uring_enter: the getevents argument and its timespec.
    private readonly GetEventsArg* _eventsArg;
    private readonly KernelTimespec* _timespec;

    private bool _disposed;

    private Ring(int fd, in IoUringParams p, bool registerRingFd)
    {
        _fd = fd;
        _ownerThreadId = Environment.CurrentManagedThreadId;
        Flags = p.Flags;
        Features = p.Features;
        SubmissionQueueEntries = p.SqEntries;
        CompletionQueueEntries = p.CqEntries;

        try
        {
            nuint sqSize = p.SqOff.Array + p.SqEntries * sizeof(uint);
            nuint cqSize = p.CqOff.Cqes + p.CqEntries * (nuint)sizeof(IoUringCqe);
            bool singleMmap = (p.Features & KernelFeatures.SingleMmap) != 0;
            if (singleMmap)
            {
                sqSize = Math.Max(sqSize, cqSize);
            }

            _ringMemorySize = sqSize;
            _ringMemory = MapOrThrow(sqSize, IoUringValues.OffSqRing);
            byte* sq = (byte*)_ringMemory;
            byte* cq = sq;
            if (!singleMmap)
            {
                _cqMemorySize = cqSize;
                _cqMemory = MapOrThrow(cqSize, IoUringValues.OffCqRing);
                cq = (byte*)_cqMemory;
            }

            _sqesSize = p.SqEntries * (nuint)sizeof(IoUringSqe);
            _sqes = (IoUringSqe*)MapOrThrow(_sqesSize, IoUringValues.OffSqes);

            _sqHead = (uint*)(sq + p.SqOff.Head);
            _sqTail = (uint*)(sq + p.SqOff.Tail);
            _sqFlags = (uint*)(sq + p.SqOff.Flags);
            _sqMask = *(uint*)(sq + p.SqOff.RingMask);
            if ((p.Flags & SetupFlags.NoSqArray) == 0)
            {
                // We always submit SQEs in ring order, so the indirection array is the identity, written once.
                uint* array = (uint*)(sq + p.SqOff.Array);
                for (uint i = 0; i < p.SqEntries; i++)
                {
                    array[i] = i;
                }
            }
            _sqeTail = *_sqTail;

            _cqHead = (uint*)(cq + p.CqOff.Head);
            _cqTail = (uint*)(cq + p.CqOff.Tail);
            _cqMask = *(uint*)(cq + p.CqOff.RingMask);
            _cqes = (IoUringCqe*)(cq + p.CqOff.Cqes);

            _eventsArg = (GetEventsArg*)NativeMemory.AllocZeroed((nuint)(sizeof(GetEventsArg) + sizeof(KernelTimespec)));
            _timespec = (KernelTimespec*)(_eventsArg + 1);

            _enterFd = fd;
            if (registerRingFd && TryRegisterRingFd(fd, out int index))
            {
                _enterFd = index;
                _enterFdFlag = EnterFlags.RegisteredRing;
                IsRingFdRegistered = true;
            }
        }
        catch
        {
            ReleaseMemory();
            LinuxSyscalls.Close(fd);
            throw;
        }
    }

    /// <summary>Creates a ring on the calling thread, which becomes its owner. Drops NO_SQARRAY if this kernel predates it.</summary>
    public static Ring Create(in RingOptions options)
    {
        int fd = TrySetup(options, out IoUringParams p);
        if (fd == -Errno.EINVAL && (options.Flags & SetupFlags.NoSqArray) != 0)
        {
            fd = TrySetup(options with { Flags = options.Flags & ~SetupFlags.NoSqArray }, out p);
        }
        if (fd < 0)
        {
            throw new IoUringException("io_uring_setup", fd);
        }
        return new Ring(fd, p, options.RegisterRingFd);
    }

    /// <summary>Calls io_uring_setup and returns the fd or -errno; <paramref name="p"/> is what the kernel wrote back.</summary>
    internal static int TrySetup(in RingOptions options, out IoUringParams p)
    {
        p = default;
        p.Flags = options.Flags;
        if (options.CompletionQueueEntries != 0)
        {
            p.Flags |= SetupFlags.CqSize;
            p.CqEntries = options.CompletionQueueEntries;
        }
        p.SqThreadIdle = options.SqThreadIdleMilliseconds;
        p.SqThreadCpu = options.SqThreadCpu;
        fixed (IoUringParams* pp = &p)
        {
            return LinuxSyscalls.IoUringSetup(options.SubmissionQueueEntries, pp);
        }
    }

    public int Fd => _fd;
    public SetupFlags Flags { get; }
    public KernelFeatures Features { get; }
    public uint SubmissionQueueEntries { get; }
    public uint CompletionQueueEntries { get; }
    public bool IsRingFdRegistered { get; }
    public int OwnerThreadId => _ownerThreadId;
    public bool IsSqPoll => (Flags & SetupFlags.SqPoll) != 0;

    /// <summary>io_uring_enter calls made so far.</summary>
    public long EnterCount { get; private set; }

    /// <summary>SQEs the kernel has consumed so far.</summary>
    public long SubmittedCount { get; private set; }

    /// <summary>
    /// Submits that handed the kernel a linked chain without its last SQE (the newest SQE still carried IO_LINK or
    /// IO_HARDLINK): the kernel then ends the chain early and runs the rest unlinked. Callers reserve room for a whole
    /// chain so this stays 0; it is counted so that tests can assert it.
    /// </summary>
    public long SplitChainSubmits { get; private set; }

    /// <summary>
    /// Why this ring cannot go on (the SQ stayed full, the CQ is corrupted), once that happened; null while healthy.
    /// Set before the exception is thrown, so that the owner sees it even where a caller swallowed the exception.
    /// </summary>
    public Exception? Failure { get; private set; }

    /// <summary>Test seam: faults injected into this ring's enters and reaped completions and its connections' direct sends; null in production.</summary>
    internal IFaultInjector? Faults;

    /// <summary>SQEs prepared but not yet handed to the kernel.</summary>
    public uint PendingSubmissions => _sqeTail - Volatile.Read(ref *_sqHead);

    /// <summary>Free SQ entries: how many SQEs can be prepared before the next submit.</summary>
    public uint SubmissionSpaceLeft => SubmissionQueueEntries - (_sqeTail - Volatile.Read(ref *_sqHead));

    /// <summary>Completions waiting in the CQ ring.</summary>
    public uint ReadyCompletions => Volatile.Read(ref *_cqTail) - *_cqHead;

    /// <summary>The kernel holds completions that did not fit in the CQ ring (IORING_SQ_CQ_OVERFLOW).</summary>
    public bool HasOverflowedCompletions => (Volatile.Read(ref *_sqFlags) & (uint)SqRingFlags.CqOverflow) != 0;

    /// <summary>The SQPOLL kernel thread sleeps and needs IORING_ENTER_SQ_WAKEUP.</summary>
    public bool SqPollNeedsWakeup => (Volatile.Read(ref *_sqFlags) & (uint)SqRingFlags.NeedWakeup) != 0;

    /// <summary>Hands out the next free SQE, zeroed, or returns false when the SQ ring is full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetSqe(out IoUringSqe* sqe)
    {
        EnsureOwner();
        uint head = IsSqPoll ? Volatile.Read(ref *_sqHead) : *_sqHead;
        if (_sqeTail - head >= SubmissionQueueEntries)
        {
            sqe = null;
            return false;
        }
        sqe = &_sqes[_sqeTail & _sqMask];
        Unsafe.InitBlockUnaligned(sqe, 0, (uint)sizeof(IoUringSqe));
        _sqeTail++;
        return true;
    }

    /// <summary>Hands out the next free SQE, submitting what is queued first when the SQ ring is full.</summary>
    public IoUringSqe* GetSqe()
    {
        if (TryGetSqe(out IoUringSqe* sqe))
        {
            return sqe;
        }
        int r = Submit();
        if (TryGetSqe(out sqe))
        {
            return sqe;
        }
        throw Fail(new IoUringException(r < 0 ? "io_uring_enter (SQ full)" : "io_uring SQ stayed full after a submit", r));
    }

    /// <summary>Submits queued SQEs without waiting. Returns how many the kernel took, or -errno.</summary>
    public int Submit() => Enter(0, EnterFlags.None, -1);

    /// <summary>
    /// Submits queued SQEs and waits until at least <paramref name="minComplete"/> completions are ready or the
    /// timeout (nanoseconds, -1 = none) passes. Also runs deferred task work, so call it even with minComplete 0 to
    /// see completions under DEFER_TASKRUN. Returns SQEs submitted (≥ 0), or -errno for EBUSY/EAGAIN (reap, then retry)
    /// and other failures. A timeout is not an error.
    /// </summary>
    public int SubmitAndWait(uint minComplete, long timeoutNanoseconds = -1)
        => Enter(minComplete, EnterFlags.GetEvents, timeoutNanoseconds);

    private int Enter(uint minComplete, EnterFlags flags, long timeoutNanoseconds)
    {
        EnsureOwner();
        uint before = *_sqHead;
        uint toSubmit = _sqeTail - *_sqTail;
        if (toSubmit > 0)
        {
            if ((_sqes[(_sqeTail - 1) & _sqMask].Flags & (SqeFlags.IoLink | SqeFlags.IoHardLink)) != 0)
            {
                SplitChainSubmits++;
            }
            Volatile.Write(ref *_sqTail, _sqeTail);
        }
        toSubmit = _sqeTail - before;

        if (IsSqPoll)
        {
            // The kernel thread consumes the SQ by itself: enter only to wake it, to wait for room, or to wait for
            // completions. A full barrier between publishing the tail and reading the flags (liburing's
            // sq_ring_needs_enter), or the thread could fall asleep just after we looked.
            Interlocked.MemoryBarrier();
            if (SqPollNeedsWakeup)
            {
                flags |= EnterFlags.SqWakeup;
            }
            if (_sqeTail - Volatile.Read(ref *_sqHead) >= SubmissionQueueEntries && (flags & EnterFlags.GetEvents) == 0)
            {
                flags |= EnterFlags.SqWait;
            }
            toSubmit = 0;
            if ((flags & (EnterFlags.SqWakeup | EnterFlags.SqWait | EnterFlags.GetEvents)) == 0)
            {
                return 0;
            }
        }
        else if (toSubmit == 0 && (flags & EnterFlags.GetEvents) == 0)
        {
            return 0;
        }

        void* arg = null;
        nuint argSize = 0;
        if (timeoutNanoseconds >= 0 && (flags & EnterFlags.GetEvents) != 0)
        {
            _timespec->Seconds = timeoutNanoseconds / 1_000_000_000;
            _timespec->Nanoseconds = timeoutNanoseconds % 1_000_000_000;
            _eventsArg->SigMask = 0;
            _eventsArg->SigMaskSize = IoUringValues.SigSetSize;
            _eventsArg->Timespec = (ulong)_timespec;
            arg = _eventsArg;
            argSize = (nuint)sizeof(GetEventsArg);
            flags |= EnterFlags.ExtArg;
        }

        int r;
        do
        {
            EnterCount++;
            r = Faults?.BeforeEnter(ref minComplete) is int injected and < 0 ? injected : LinuxSyscalls.IoUringEnter(_enterFd, toSubmit, minComplete, flags | _enterFdFlag, arg, argSize);
        }
        while (r == -Errno.EINTR);

        uint consumed = Volatile.Read(ref *_sqHead) - before;
        SubmittedCount += consumed;
        if (r == -Errno.ETIME)
        {
            return (int)consumed;
        }
        return r < 0 ? r : (int)consumed;
    }

    /// <summary>
    /// Copies up to <paramref name="destination"/>.Length ready completions out of the CQ ring and frees their slots
    /// at once (so a burst can refill the ring while these are dispatched). Returns how many were copied.
    /// </summary>
    public int ReadCompletions(Span<IoUringCqe> destination)
    {
        uint head = *_cqHead;
        uint tail = Volatile.Read(ref *_cqTail); // acquire: CQE contents are visible after this
        if (tail - head > CompletionQueueEntries)
        {
            // The kernel never publishes more than the ring holds: the shared memory is corrupted, and no CQE in
            // it can be trusted.
            throw Fail(new RingCorruptedException($"the CQ tail ({tail}) is {tail - head} entries ahead of its head ({head}), beyond the ring's {CompletionQueueEntries}"));
        }
        int count = (int)Math.Min(tail - head, (uint)destination.Length);
        for (int i = 0; i < count; i++)
        {
            destination[i] = _cqes[(head + (uint)i) & _cqMask];
        }
        Volatile.Write(ref *_cqHead, head + (uint)count); // release: the kernel may reuse these slots
        return Faults is null ? count : Faults.AfterReap(destination, count);
    }

    private Exception Fail(Exception failure)
    {
        Failure ??= failure;
        return failure;
    }

    /// <summary>Test seam: moves the CQ tail as a stray write into the shared ring memory would.</summary>
    internal void CorruptCompletionTailForTesting() => Volatile.Write(ref *_cqTail, *_cqHead + CompletionQueueEntries + 7);

    /// <summary>Calls io_uring_register on this ring; returns the result or -errno.</summary>
    public int Register(RegisterOpcode opcode, void* arg, uint count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return LinuxSyscalls.IoUringRegister(_fd, opcode, arg, count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EnsureOwner()
    {
        if (Environment.CurrentManagedThreadId != _ownerThreadId)
        {
            ThrowNotOwner();
        }
    }

    /// <summary>True when the calling thread owns this ring.</summary>
    public bool IsOwnerThread => Environment.CurrentManagedThreadId == _ownerThreadId;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotOwner()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        throw new InvalidOperationException(
            $"This io_uring (fd {_fd}) is owned by managed thread {_ownerThreadId}; thread {Environment.CurrentManagedThreadId} may not submit to it. " +
            "With IORING_SETUP_SINGLE_ISSUER only the owner can submit; hand the work to the ring's thread instead.");
    }

    private bool TryRegisterRingFd(int fd, out int index)
    {
        IoUringRsrcUpdate update = new() { Offset = uint.MaxValue, Data = (ulong)fd };
        int r = LinuxSyscalls.IoUringRegister(fd, RegisterOpcode.RegisterRingFds, &update, 1);
        index = (int)update.Offset;
        return r == 1;
    }

    private void* MapOrThrow(nuint size, ulong offset)
    {
        void* p = LinuxSyscalls.Mmap(size, _fd, offset, out int errno);
        if (p == null)
        {
            throw new IoUringException("mmap of the io_uring rings", errno);
        }
        return p;
    }

    private void ReleaseMemory()
    {
        if (_sqes != null) { LinuxSyscalls.Munmap(_sqes, _sqesSize); _sqes = null; }
        if (_cqMemory != null) { LinuxSyscalls.Munmap(_cqMemory, _cqMemorySize); _cqMemory = null; }
        if (_ringMemory != null) { LinuxSyscalls.Munmap(_ringMemory, _ringMemorySize); _ringMemory = null; }
    }

    /// <summary>Unmaps the rings and closes the fd. Closing the ring fd cancels whatever is still in flight.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (IsRingFdRegistered)
        {
            // The registered ring fd lives in the owner thread's own table (at most 16 per thread) and holds a
            // reference to the ring: without this the ring outlives its fd until that thread exits, and the thread
            // runs out of slots. Only the owner can remove it.
            if (IsOwnerThread)
            {
                IoUringRsrcUpdate update = new() { Offset = (uint)_enterFd };
                LinuxSyscalls.IoUringRegister(_fd, RegisterOpcode.UnregisterRingFds, &update, 1);
            }
        }
        ReleaseMemory();
        NativeMemory.Free(_eventsArg);
        LinuxSyscalls.Close(_fd); // also drops registered files, buffers and buffer rings
        GC.SuppressFinalize(this);
    }

    ~Ring()
    {
        // A ring that was never disposed: release the kernel resources; the mappings go with the fd's last reference.
        if (!_disposed)
        {
            ReleaseMemory();
            NativeMemory.Free(_eventsArg);
            LinuxSyscalls.Close(_fd);
        }
    }
}

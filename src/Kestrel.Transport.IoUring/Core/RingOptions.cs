using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Core;

/// <summary>How to create a <see cref="Ring"/>.</summary>
internal readonly record struct RingOptions
{
    /// <summary>The flags a network ring wants: one owner thread, completions run only when it asks, and no stop at the first bad SQE.</summary>
    public const SetupFlags DefaultFlags =
        SetupFlags.SingleIssuer | SetupFlags.DeferTaskRun | SetupFlags.SubmitAll | SetupFlags.NoSqArray;

    public RingOptions() { }

    public uint SubmissionQueueEntries { get; init; } = 256;

    /// <summary>0 lets the kernel choose (twice the SQ).</summary>
    public uint CompletionQueueEntries { get; init; } = 4096;

    public SetupFlags Flags { get; init; } = DefaultFlags;

    /// <summary>For SQPOLL: how long the kernel thread spins idle before it sleeps.</summary>
    public uint SqThreadIdleMilliseconds { get; init; }

    /// <summary>For SQPOLL with SQ_AFF: the CPU of the kernel thread.</summary>
    public uint SqThreadCpu { get; init; }

    /// <summary>Register the ring fd so that io_uring_enter skips the fd table look-up.</summary>
    public bool RegisterRingFd { get; init; } = true;
}

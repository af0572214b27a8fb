namespace Kestrel.Transport.IoUring.Abi;

/// <summary>The Linux scheduling policies a ring thread can run under (include/uapi/linux/sched.h).</summary>
internal enum ThreadSchedulingPolicy
{
    /// <summary>SCHED_OTHER (SCHED_NORMAL): the default; a woken thread may preempt the one running.</summary>
    Other = 0,

    /// <summary>SCHED_BATCH: the same share of CPU, but waking it never preempts the running thread.</summary>
    Batch = 3,
}

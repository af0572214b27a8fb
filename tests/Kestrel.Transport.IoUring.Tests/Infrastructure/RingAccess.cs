using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Ways to make a ring fail on demand, each through the path a real failure takes.</summary>
public enum RingFault
{
    /// <summary>io_uring_enter fails with an errno the loop does not expect (EINVAL).</summary>
    EnterError,

    /// <summary>io_uring_enter reports lost completions (EBADR).</summary>
    LostCompletions,

    /// <summary>The SQ is full and a submit cannot make room.</summary>
    SubmissionQueueFull,

    /// <summary>The CQ's shared tail holds a value the kernel never writes.</summary>
    CorruptedCompletionQueue,
}

/// <summary>Runs test code on a ring's own thread (the only thread that may touch its SQ), and waits for it.</summary>
internal static class RingAccess
{
    /// <summary>Waits until the ring's loop sleeps in io_uring_enter (fails the test after 10 s).</summary>
    public static async Task WaitUntilSleepingAsync(RingThread ring)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!ring.IsSleeping)
        {
            Assert.True(DateTime.UtcNow < deadline, "the ring never went to sleep");
            await Task.Delay(5); // the loop's sleep has no event of its own to await
        }
    }

    public static Task<T> RunOnRingAsync<T>(RingThread ring, Func<RingThread, T> action)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        ring.Post(_ =>
        {
            try
            {
                done.SetResult(action(ring));
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }, null);
        return done.Task.WaitAsync(TimeSpan.FromSeconds(20));
    }

    /// <summary>Makes the ring's next <paramref name="count"/> io_uring_enter calls fail with -<paramref name="errno"/>, nothing submitted.</summary>
    public static void FailNextEnters(RingThread ring, int errno, int count = 1)
        => ring.Ring.Faults = new FailingEnters(errno, count);

    /// <summary>Fails the next few io_uring_enter calls with one errno; injects nothing else.</summary>
    private sealed class FailingEnters(int errno, int count) : IFaultInjector
    {
        private int _left = count;

        public int BeforeEnter(ref uint minComplete) => _left-- > 0 ? -errno : 0;

        public int AfterReap(Span<IoUringCqe> completions, int count) => count;

        public int DirectSend(in System.Buffers.ReadOnlySequence<byte> buffer, DirectSendCall send) => send(buffer);
    }

    /// <summary>Makes <paramref name="ring"/> fail the way <paramref name="fault"/> says; returns once the fault is in place.</summary>
    public static async Task InjectAsync(RingThread ring, RingFault fault)
    {
        try
        {
            await RunOnRingAsync(ring, r => Apply(r, fault));
        }
        catch (IoUringException) when (fault == RingFault.SubmissionQueueFull)
        {
            // expected: that is the failure
        }
    }

    private static unsafe bool Apply(RingThread r, RingFault fault)
    {
        switch (fault)
        {
            case RingFault.EnterError:
                FailNextEnters(r, Errno.EINVAL);
                break;
            case RingFault.LostCompletions:
                FailNextEnters(r, Errno.EBADR);
                break;
            case RingFault.SubmissionQueueFull:
                while (r.Ring.TryGetSqe(out IoUringSqe* sqe))
                {
                    SqePreparation.PrepareNop(sqe, UserData.Encode(OperationKind.Nop, 0, 0));
                }
                FailNextEnters(r, Errno.EBUSY);
                r.Ring.GetSqe(); // throws: the SQ stayed full
                break;
            case RingFault.CorruptedCompletionQueue:
                r.Ring.CorruptCompletionTailForTesting();
                break;
        }
        return true;
    }
}

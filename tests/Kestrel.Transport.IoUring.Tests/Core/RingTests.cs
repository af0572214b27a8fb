using System.Diagnostics;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>The ring itself: setup, submission, completion, waiting, ownership.</summary>
public sealed unsafe class RingTests
{
    [Fact]
    public void CreatesWithTheNetworkFlagsAndRegisteredFd()
    {
        using var h = new RingHarness(sqEntries: 32, cqEntries: 128);
        Assert.Equal(32u, h.Ring.SubmissionQueueEntries);
        Assert.Equal(128u, h.Ring.CompletionQueueEntries);
        Assert.True(h.Ring.Flags.HasFlag(SetupFlags.SingleIssuer | SetupFlags.DeferTaskRun | SetupFlags.SubmitAll));
        Assert.True(h.Ring.Flags.HasFlag(SetupFlags.NoSqArray));
        Assert.True(h.Ring.IsRingFdRegistered);
        Assert.True(h.Ring.Features.HasFlag(KernelFeatures.SingleMmap | KernelFeatures.NoDrop | KernelFeatures.ExtArg));
    }

    [Fact]
    public void DisposeUnregistersTheRingFdSoAThreadCanCreateRingsForever()
    {
        // A thread has 16 registered-ring slots; each ring must give its slot back when disposed.
        for (int i = 0; i < 40; i++)
        {
            using var h = new RingHarness(sqEntries: 4, cqEntries: 8);
            Assert.True(h.Ring.IsRingFdRegistered, $"ring {i} found no registered-ring slot");
        }
    }

    [Fact]
    public void NopRoundTripCarriesUserData()
    {
        using var h = new RingHarness();
        for (int i = 0; i < 100; i++)
        {
            SqePreparation.PrepareNop(h.Sqe(), UserData.Encode(OperationKind.Nop, (uint)i, i * 3));
        }
        var seen = new HashSet<int>();
        for (int i = 0; i < 100; i++)
        {
            var cqe = h.WaitFor(c => UserData.KindOf(c.UserData) == OperationKind.Nop);
            var ud = UserData.Decode(cqe.UserData);
            Assert.Equal(0, cqe.Result);
            Assert.Equal(ud.Generation * 3, (uint)ud.Slot);
            Assert.True(seen.Add(ud.Slot));
        }
        Assert.Equal(100, seen.Count);
        Assert.True(h.Ring.SubmittedCount >= 100);
    }

    [Fact]
    public void SubmitAndWaitReturnsAfterTheTimeoutWithNothingToReap()
    {
        using var h = new RingHarness();
        var sw = Stopwatch.StartNew();
        int r = h.Ring.SubmitAndWait(1, timeoutNanoseconds: 20_000_000); // 20 ms, nothing in flight
        sw.Stop();
        Assert.Equal(0, r);
        Assert.Equal(0u, h.Ring.ReadyCompletions);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), "the timeout did not end the wait");
    }

    [Fact]
    public void GetSqeSubmitsByItselfWhenTheSubmissionQueueIsFull()
    {
        using var h = new RingHarness(sqEntries: 16, cqEntries: 256);
        for (int i = 0; i < 16; i++)
        {
            Assert.True(h.Ring.TryGetSqe(out var sqe));
            SqePreparation.PrepareNop(sqe, UserData.Encode(OperationKind.Nop, 0, i));
        }
        Assert.False(h.Ring.TryGetSqe(out _)); // full
        Assert.Equal(0u, h.Ring.SubmissionSpaceLeft);

        SqePreparation.PrepareNop(h.Ring.GetSqe(), UserData.Encode(OperationKind.Nop, 0, 16)); // submits the 16 first
        Assert.Equal(16, h.Ring.SubmittedCount);
        for (int i = 0; i <= 16; i++)
        {
            h.WaitFor(c => UserData.SlotOf(c.UserData) == i);
        }
    }

    [Fact]
    public void AnotherThreadIsRefusedClearlyNotHung()
    {
        using var h = new RingHarness();
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                h.Ring.GetSqe();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "the foreign submission hung");
        var invalid = Assert.IsType<InvalidOperationException>(error);
        Assert.Contains("owned by managed thread", invalid.Message);
        Assert.Contains("SINGLE_ISSUER", invalid.Message);
    }

    [Fact]
    public void TheKernelItselfRejectsASecondIssuerWithEExist()
    {
        using var h = new RingHarness();
        int result = 0;
        var thread = new Thread(() =>
            result = LinuxSyscalls.IoUringEnter(h.Ring.Fd, 0, 0, EnterFlags.GetEvents, null, 0));
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)));
        Assert.Equal(-Errno.EEXIST, result);
    }

    [Fact]
    public void SetupErrorsCarryTheErrnoName()
    {
        // 0 entries is invalid for io_uring_setup.
        var e = Assert.Throws<IoUringException>(() => Ring.Create(new RingOptions { SubmissionQueueEntries = 0 }));
        Assert.Equal("EINVAL", e.ErrorName);
        Assert.Contains("io_uring_setup failed: EINVAL", e.Message);
    }

    [Fact]
    public void TimeoutOperationCompletesWithETime()
    {
        using var h = new RingHarness();
        var ts = new KernelTimespec { Nanoseconds = 5_000_000 };
        SqePreparation.PrepareTimeout(h.Sqe(), &ts, UserData.Encode(OperationKind.Timeout, 0, 7));
        h.Pump(); // the timespec is read at submission
        var cqe = h.WaitFor(UserData.Encode(OperationKind.Timeout, 0, 7));
        Assert.Equal(-Errno.ETIME, cqe.Result);
    }
}

using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>
/// A ring's wake-up eventfd outlives every poster that may still write it: a poster that won the sleeping flag and
/// has not written yet when the ring stops writes into the ring's own eventfd, never into a file that took its number.
/// </summary>
[Collection(CoreSerialCollection.Name)] // serial: the test watches which file takes a descriptor number
public sealed class WakeupEventFdLifetimeTests
{
    [Fact]
    public async Task APosterPausedAfterWinningTheSleepingFlagWritesTheRingsOwnEventFd()
    {
        await using var standalone = await StandaloneRing.StartAsync();
        var ring = standalone.Ring;
        await RingAccess.WaitUntilSleepingAsync(ring);
        int eventFd = ring.WakeupEventFd;

        using var paused = new ManualResetEventSlim();
        using var resume = new ManualResetEventSlim();
        int pauses = 0;
        ring.BeforeWakeWrite = () =>
        {
            if (Interlocked.Exchange(ref pauses, 1) == 0)
            {
                paused.Set();
                resume.Wait(TimeSpan.FromSeconds(30));
            }
        };
        var poster = new Thread(() => ring.Post(static _ => { }, null));
        poster.Start();
        Assert.True(paused.Wait(TimeSpan.FromSeconds(10)), "the poster never won the sleeping flag");

        // The loop still sleeps, its flag taken by the paused poster: wake it as a completion would, and stop it.
        Task stopped = ring.StopAsync();
        WriteEventFd(eventFd);
        await stopped.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(RingState.Stopped, ring.State);

        // A file opened now takes the lowest free number from the eventfd's up: the eventfd's own, had it been closed.
        int other = LinuxSyscalls.EventFd();
        int probe = RawDescriptors.DupAtOrAbove(other, eventFd);
        LinuxSyscalls.Close(other);
        try
        {
            resume.Set();
            poster.Join();
            ulong? misdelivered = RawDescriptors.ReadEventFd(probe);
            Assert.True(misdelivered is null, $"the poster's wake-up went into another file that took the eventfd's number {eventFd}");
            Assert.NotEqual(eventFd, probe);
        }
        finally
        {
            LinuxSyscalls.Close(probe);
        }
        // The poster was the last user: it closed the eventfd when it was done.
        Assert.NotEqual("anon_inode:[eventfd]", FdCounter.Snapshot().GetValueOrDefault(eventFd.ToString()));
    }

    private static unsafe void WriteEventFd(int fd)
    {
        ulong one = 1;
        Assert.Equal(sizeof(ulong), LinuxSyscalls.Write(fd, &one, sizeof(ulong)));
    }
}

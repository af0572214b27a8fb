using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>
/// Work posted to a ring from other threads: a sleeping ring is woken at once by the posting thread (never through
/// the thread pool), no wake-up is ever lost against the loop going to sleep, and posts to a ring that is awake cost
/// no wake-up at all.
/// </summary>
public sealed class RingWakeupTests : IAsyncLifetime
{
    private StandaloneRing _standalone = null!;
    private RingThread _ring = null!;
    private TransportMetricsCollector _metrics = null!;

    public async Task InitializeAsync()
    {
        _standalone = await StandaloneRing.StartAsync();
        _ring = _standalone.Ring;
        _metrics = new TransportMetricsCollector(_standalone.Services);
    }

    public async Task DisposeAsync()
    {
        _metrics.Dispose();
        await _standalone.DisposeAsync();
    }

    private long Wakeups => _metrics.Total("iouring.ring.wakeups");

    [Fact]
    public void EveryPostRunsNoWakeUpIsLost()
    {
        // Ping-pong with a spinning poster on a thread of its own: each post follows the previous item within
        // nanoseconds, so posts land again and again just as the ring decides to sleep. A lost wake-up leaves the
        // ring asleep with work queued (nothing else ever completes on this idle ring), and the bounded wait fails.
        const int RoundTrips = 40_000;
        var bound = TimeSpan.FromSeconds(10);
        string? failure = null;
        var poster = new Thread(() =>
        {
            var random = new Random(7);
            var ran = new StrongBox<int>();
            for (int i = 1; i <= RoundTrips && failure is null; i++)
            {
                _ring.Post(static s => { var box = (StrongBox<int>)s!; Volatile.Write(ref box.Value, box.Value + 1); }, ran);
                var waited = Stopwatch.StartNew();
                while (Volatile.Read(ref ran.Value) != i)
                {
                    if (waited.Elapsed > bound)
                    {
                        failure = $"post {i} never ran: a wake-up was lost";
                        break;
                    }
                }
                Thread.SpinWait(random.Next(0, 64)); // vary where the next post lands in the loop's turn
            }
        });
        poster.Start();
        poster.Join();

        Assert.Null(failure);
        Assert.True(Wakeups > 0, "the ring never slept between round trips: the race was not exercised");
    }

    [Fact]
    public async Task PostsToABusyRingCostNoWakeUpAndAPostToASleepingRingWakesIt()
    {
        const int Burst = 1000;
        using var running = new ManualResetEventSlim();
        using var hold = new ManualResetEventSlim();
        using var done = new CountdownEvent(Burst);

        // Busy: the ring is inside a work item, so it is awake; posting must not write the eventfd.
        _ring.Post(_ => { running.Set(); hold.Wait(TimeSpan.FromSeconds(30)); }, null);
        Assert.True(running.Wait(TimeSpan.FromSeconds(10)));
        long before = Wakeups;
        for (int i = 0; i < Burst; i++)
        {
            _ring.Post(static s => ((CountdownEvent)s!).Signal(), done);
        }
        Assert.Equal(before, Wakeups);
        hold.Set();
        Assert.True(done.Wait(TimeSpan.FromSeconds(10)));

        // Asleep: a post wakes it from the posting thread (the pool is not involved), and the burst's other posts
        // write the eventfd only where the ring went back to sleep in between (one atomic flag per sleep).
        await RingAccess.WaitUntilSleepingAsync(_ring);
        done.Reset();
        before = Wakeups;
        for (int i = 0; i < Burst; i++)
        {
            _ring.Post(static s => ((CountdownEvent)s!).Signal(), done);
        }
        Assert.True(Wakeups - before >= 1, "posting to a sleeping ring did not wake it");
        Assert.True(done.Wait(TimeSpan.FromSeconds(10)));
    }
}

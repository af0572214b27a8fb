using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// Direct sends in a burst: while more of the ring's application work is on its way to the pool, a flush leaves
/// through the ring (in its next submission, with the responses of that work); with nothing queued it leaves at once
/// with send(2) on the flushing thread.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class BurstSendTests
{
    [Fact]
    public async Task AFlushWhileMoreApplicationWorkIsQueuedLeavesThroughTheRingAndOneWithoutGoesDirectly()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var firstWaiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await SendPathServer.StartAsync(SendPathMode.Direct, async connection =>
        {
            string? line = await SendPathServer.ReadLineAsync(connection);
            if (line == "wait")
            {
                firstWaiting.TrySetResult();
                await gate.Task; // resumes on a pool thread, outside the dispatch
            }
            await connection.Transport.Output.WriteAsync(Encoding.ASCII.GetBytes($"reply to {line}\n"));
            await SendPathServer.ReadLineAsync(connection); // until the client closes
        }, o => o.RingCount = 1);
        using var metrics = new TransportMetricsCollector(server.Services);
        var dispatch = server.Factory.Rings[0].ApplicationDispatch!;

        using var first = RawSocket.Connect(server.Port);
        first.Send("wait\n"u8);
        await firstWaiting.Task.WaitAsync(TimeSpan.FromSeconds(15));

        // The second connection's first read is filed in the dispatch, and its work item held back from the pool:
        // application work of this ring is now queued.
        var (held, workQueued) = HoldWorkItems(dispatch);
        using var second = RawSocket.Connect(server.Port);
        second.Send("go\n"u8);
        await workQueued.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(dispatch.MoreWorkQueued);

        long directBefore = metrics.Total("iouring.sends.direct"), ringBefore = metrics.Total("iouring.sends.ring");
        gate.SetResult();
        Assert.Equal("reply to wait\n", await ReceiveLineAsync(first));
        Assert.Equal(directBefore, metrics.Total("iouring.sends.direct"));
        Assert.Equal(ringBefore + 1, metrics.Total("iouring.sends.ring"));

        // Released: the held work runs, and with nothing else queued its response goes out directly.
        ReleaseWorkItems(dispatch, held);
        Assert.Equal("reply to go\n", await ReceiveLineAsync(second));
        Assert.False(dispatch.MoreWorkQueued);
        Assert.Equal(directBefore + 1, metrics.Total("iouring.sends.direct"));
        Assert.Equal(ringBefore + 1, metrics.Total("iouring.sends.ring"));
    }

    [Fact]
    public async Task ARingWhoseHandedWorkHasNotRunYieldsOnceAndThenSleepsInsteadOfSpinning()
    {
        await using var server = await StartOneReplyServerAsync(SendPathMode.Direct);
        using var metrics = new TransportMetricsCollector(server.Services);
        var dispatch = server.Factory.Rings[0].ApplicationDispatch!;

        // The connection's first read is filed in the dispatch and its work item held back from the pool, as by a
        // pool that is starved: the ring's last turn reaped a completion, and the work it handed over has not run.
        var (held, workQueued) = HoldWorkItems(dispatch);
        using var client = RawSocket.Connect(server.Port);
        client.Send("go\n"u8);
        await workQueued.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(dispatch.MoreWorkQueued);

        // It yields once after that turn...
        await metrics.Recorded("iouring.ring.yields").WaitAsync(TimeSpan.FromSeconds(15));

        // ...and then sleeps, although the work is still queued: a turn that reaps nothing does not yield again.
        // (No event marks "nothing happened": the ring is watched for a while. A spinning ring enters the kernel
        // thousands of times in this window; a sleeping one only for its own timers.)
        long yields = metrics.Total("iouring.ring.yields"), enters = metrics.Total("iouring.enter.calls");
        await Task.Delay(TimeSpan.FromMilliseconds(300));
        Assert.True(dispatch.MoreWorkQueued);
        Assert.True(metrics.Total("iouring.ring.yields") - yields <= 1, $"{metrics.Total("iouring.ring.yields") - yields} more yields while idle");
        Assert.True(metrics.Total("iouring.enter.calls") - enters <= 5, $"{metrics.Total("iouring.enter.calls") - enters} io_uring_enter calls while idle");

        // Released, the work runs and is answered.
        ReleaseWorkItems(dispatch, held);
        Assert.Equal("reply to go\n", await ReceiveLineAsync(client));
    }

    [Fact]
    public async Task WithEverySendThroughTheRingTheRingSleepsInsteadOfYielding()
    {
        // There every response waits for the ring thread, which must not give its place on the core away.
        await using var server = await StartOneReplyServerAsync(SendPathMode.Ring);
        using var metrics = new TransportMetricsCollector(server.Services);
        var ring = server.Factory.Rings[0];
        var dispatch = ring.ApplicationDispatch!;

        // The connection's first read waits, held back from the pool; then a receive: the turn that reaps it has
        // handed work that has not run yet, as above...
        var (held, workQueued) = HoldWorkItems(dispatch);
        using var client = RawSocket.Connect(server.Port);
        await workQueued.WaitAsync(TimeSpan.FromSeconds(15));
        client.Send("go\n"u8);
        await metrics.Recorded("iouring.network.io").WaitAsync(TimeSpan.FromSeconds(15)); // recorded in that reap
        Assert.True(dispatch.MoreWorkQueued);

        // ...and the ring goes back to sleep without a yield. (It is awake from that reap on, so asleep means it has
        // decided.)
        await RingAccess.WaitUntilSleepingAsync(ring);
        Assert.Equal(0, metrics.Total("iouring.ring.yields"));

        ReleaseWorkItems(dispatch, held);
        Assert.Equal("reply to go\n", await ReceiveLineAsync(client));
    }

    /// <summary>One ring; each connection answers its first line with "reply to LINE" and then reads until the client closes.</summary>
    private static Task<IoUringTestServer> StartOneReplyServerAsync(SendPathMode sendPath) =>
        SendPathServer.StartAsync(sendPath, async connection =>
        {
            string? line = await SendPathServer.ReadLineAsync(connection);
            await connection.Transport.Output.WriteAsync(Encoding.ASCII.GetBytes($"reply to {line}\n"));
            await SendPathServer.ReadLineAsync(connection); // until the client closes
        }, o => o.RingCount = 1);

    /// <summary>From now on the dispatch's work items wait in the returned queue instead of the pool's (as in a starved pool).</summary>
    private static (ConcurrentQueue<IThreadPoolWorkItem> Held, Task FirstQueued) HoldWorkItems(ApplicationDispatch dispatch)
    {
        var held = new ConcurrentQueue<IThreadPoolWorkItem>();
        var firstQueued = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        dispatch.RedirectWorkItemsForTest(item =>
        {
            held.Enqueue(item);
            firstQueued.TrySetResult();
        });
        return (held, firstQueued.Task);
    }

    /// <summary>The dispatch's work items go to the pool again, the held ones first.</summary>
    private static void ReleaseWorkItems(ApplicationDispatch dispatch, ConcurrentQueue<IThreadPoolWorkItem> held)
    {
        dispatch.RedirectWorkItemsForTest(item => ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal: false));
        while (held.TryDequeue(out var item))
        {
            ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal: false);
        }
    }

    private static Task<string> ReceiveLineAsync(Socket socket) => BlockingClient.Run(() =>
    {
        var received = new List<byte>();
        var buffer = new byte[256];
        while (!received.Contains((byte)'\n'))
        {
            int n = socket.Receive(buffer);
            Assert.True(n > 0, "the server closed early");
            received.AddRange(buffer.AsSpan(0, n).ToArray());
        }
        return Encoding.ASCII.GetString(received.ToArray());
    }).WaitAsync(TimeSpan.FromSeconds(15));
}

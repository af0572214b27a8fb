using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// A handler that flushes several times in one work item and then blocks its thread: what it flushed must reach the
/// client while it blocks, as with the Sockets transport, even while the thread pool's global queue is never empty (a
/// worker takes its own local queue, then the global queue, and only then steals from another thread's local queue,
/// so work parked on the blocked thread's local queue would wait for the whole flood). Each scenario runs over
/// io_uring and over Sockets, the reference.
/// </summary>
[Collection(MachineWideCollection.Name)] // it floods the process's thread pool and raises its minimum
public sealed class DeferredSendStallTests
{
    /// <summary>How long the client waits for what the blocked handler flushed: the liveness bound.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(5);

    [Theory]
    [InlineData(TransportUnderTest.IoUringRing)]
    [InlineData(TransportUnderTest.Sockets)]
    public async Task EventsFlushedBeforeTheHandlerBlocksArriveWhileItBlocks(string transport)
    {
        const int Events = 6;
        string lastEvent = $"data: {Events - 1}\n\n";
        var handler = new BlockingHandler();
        await using var server = await TransportUnderTest.StartAsync(transport, app => app.Run(async context =>
        {
            // Server-sent events: each event flushed on its own. All of them complete at once (far below the
            // output's pause threshold), so the flushes are one work item's, and then the handler blocks its thread.
            context.Response.ContentType = "text/event-stream";
            bool allAtOnce = true;
            for (int i = 0; i < Events; i++)
            {
                Task write = context.Response.WriteAsync($"data: {i}\n\n");
                allAtOnce &= write.IsCompleted;
                await write;
                Task flush = context.Response.Body.FlushAsync();
                allAtOnce &= flush.IsCompleted;
                await flush;
            }
            handler.WroteThenBlock(allAtOnce);
        }));

        await WithBusyGlobalQueueAsync(handler, () => BlockingClient.Run(() =>
        {
            using var client = Connect(server.Port);
            client.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
            var received = new StringBuilder();
            var buffer = new byte[4096];
            while (!received.ToString().Contains(lastEvent, StringComparison.Ordinal))
            {
                int n = WithinBound(() => client.Receive(buffer), $"all {Events} events (got: {received})");
                Assert.True(n > 0, "the server closed early");
                received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            handler.AssertStillBlocked();
            return 0;
        }));
    }

    [Theory]
    [InlineData(TransportUnderTest.IoUringRing)]
    [InlineData(TransportUnderTest.Sockets)]
    public async Task ASynchronousWriteAboveThePauseThresholdAfterTwoFlushesCompletes(string transport)
    {
        // The write waits for sends that only another thread can make. Kestrel's synchronous write blocks in
        // Task.Wait, before which the runtime moves the thread's local work items to its high-priority global queue,
        // so this case completed even while deferred sends went to the local queue. It guards that such a write
        // completes, with the global queue busy, wherever deferred sends go.

        const int Large = 256 * 1024; // above the output's pause threshold (64 KiB) and Kestrel's MaxResponseBufferSize
        byte[] head = "head\n"u8.ToArray();
        byte[] large = new byte[Large];
        Array.Fill(large, (byte)'x');
        var handler = new BlockingHandler();
        await using var server = await TransportUnderTest.StartAsync(transport, app => app.Run(context =>
        {
            context.Features.Get<IHttpBodyControlFeature>()!.AllowSynchronousIO = true;
            context.Response.ContentLength = 2 * head.Length + Large;
            var body = context.Response.Body;
            body.Write(head); // two flushes in one work item...
            body.Flush();
            body.Write(head);
            body.Flush();
            body.Write(large); // ...then a write that blocks this thread until the sends have drained the output
            handler.WroteThenBlock(allAtOnce: true); // synchronous throughout: one work item
            return Task.CompletedTask;
        }));

        await WithBusyGlobalQueueAsync(handler, () => BlockingClient.Run(() =>
        {
            using var client = Connect(server.Port);
            client.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
            var (_, body) = WithinBound(() => RawSocket.ReadResponse(client), "the whole response");
            Assert.Equal(2 * head.Length + Large, body.Length);
            Assert.StartsWith("head\nhead\nxxx", body);
            handler.AssertWriteReturned(Bound);
            handler.AssertStillBlocked();
            return 0;
        }));
    }

    /// <summary>
    /// Runs <paramref name="test"/> while the pool's global queue is never empty, then releases the handler. The pool's
    /// minimum is raised so that it has free workers at once, never depending on how fast it injects threads while one
    /// of them is blocked.
    /// </summary>
    private static async Task WithBusyGlobalQueueAsync(BlockingHandler handler, Func<Task> test)
    {
        const int MinWorkers = 8;
        ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
        ThreadPool.SetMinThreads(Math.Max(minWorkers, MinWorkers), minIo);
        var flood = GlobalQueueFlood.Start(items: 64, limit: Bound * 2);
        try
        {
            await flood.UntilBusyAsync();
            await test().WaitAsync(Bound * 2);
            Assert.True(ThreadPool.PendingWorkItemCount > 0, "the flood ended before the client was done: the test proved nothing");
        }
        finally
        {
            flood.Stop();
            handler.Release();
            ThreadPool.SetMinThreads(minWorkers, minIo);
        }
    }

    private static Socket Connect(int port)
    {
        var client = RawSocket.Connect(port);
        client.ReceiveTimeout = (int)Bound.TotalMilliseconds;
        return client;
    }

    /// <summary>Runs a blocking receive; its timeout (<see cref="Bound"/>) fails the test, naming what did not come.</summary>
    private static T WithinBound<T>(Func<T> receive, string what)
    {
        try
        {
            return receive();
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new Xunit.Sdk.XunitException($"{what} did not arrive within {Bound.TotalSeconds} s while the handler blocked");
        }
    }

    /// <summary>The handler's side: it signals that it has written, then blocks its thread until the test releases it.</summary>
    private sealed class BlockingHandler
    {
        private readonly ManualResetEventSlim _wrote = new();
        private readonly ManualResetEventSlim _release = new();
        private volatile bool _returned;
        private volatile bool _allAtOnce;

        public void WroteThenBlock(bool allAtOnce)
        {
            _allAtOnce = allAtOnce;
            _wrote.Set();
            _release.Wait(Bound * 3); // bounded, so a failed test never leaves a pool thread blocked for good
            _returned = true;
        }

        public void AssertWriteReturned(TimeSpan within) =>
            Assert.True(_wrote.Wait(within), "the handler's write never returned");

        public void AssertStillBlocked()
        {
            Assert.True(_wrote.IsSet, "the client got the bytes before the handler wrote them all");
            Assert.True(_allAtOnce, "a write or flush did not complete at once: the flushes were not one work item's, the test proved nothing");
            Assert.False(_returned, "the handler stopped blocking before the client was done");
        }

        public void Release() => _release.Set();
    }
}

/// <summary>
/// Work items that keep the thread pool's global queue busy: each runs briefly and queues itself again at the back of
/// the global queue, until stopped or until its time limit (so a failing test cannot leave it running).
/// </summary>
internal sealed class GlobalQueueFlood : IThreadPoolWorkItem
{
    private readonly long _deadline;
    private readonly TaskCompletionSource _busy = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _stopped;
    private long _runs;

    private GlobalQueueFlood(TimeSpan limit) => _deadline = Environment.TickCount64 + (long)limit.TotalMilliseconds;

    public static GlobalQueueFlood Start(int items, TimeSpan limit)
    {
        var flood = new GlobalQueueFlood(limit);
        for (int i = 0; i < items; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(flood, preferLocal: false);
        }
        return flood;
    }

    /// <summary>Completes once the items have gone round the queue a few times: the pool's workers are in the flood.</summary>
    public Task UntilBusyAsync() => _busy.Task.WaitAsync(TimeSpan.FromSeconds(5));

    public void Stop() => _stopped = true;

    public void Execute()
    {
        if (_stopped || Environment.TickCount64 > _deadline)
        {
            _busy.TrySetResult();
            return;
        }
        if (Interlocked.Increment(ref _runs) == 4096)
        {
            _busy.TrySetResult();
        }
        Thread.SpinWait(50);
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }
}

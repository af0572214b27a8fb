using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// A starved thread pool must not hold back a response that is already written: neither the send (direct sends
/// happen on the flushing thread) nor the ring's wake-up (written by the posting thread, never queued on the pool).
/// And a quick request must not wait behind the requests of connections whose handlers block (the application
/// dispatch). Liveness and order, not speed: the bounds are generous.
/// </summary>
[Collection(MachineWideCollection.Name)] // it starves the process's thread pool on purpose
public sealed class ThreadPoolStarvationTests
{
    [Theory]
    [InlineData(SendPathMode.Direct)]
    [InlineData(SendPathMode.Ring)]
    public async Task AResponseFlushedByAThreadThatThenBlocksWhileEveryPoolThreadIsBlockedStillReachesTheClient(SendPathMode mode)
    {
        // Never disposed: pool items still queued when the test ends wait on them.
        var handlerStarted = new ManualResetEventSlim();
        var gate = new ManualResetEventSlim();
        var clientGotIt = new ManualResetEventSlim();
        await using var server = await IoUringTestServer.StartAsync(app => app.Run(context =>
        {
            handlerStarted.Set();
            gate.Wait(TimeSpan.FromSeconds(60)); // hold this pool thread until the pool is starved
            context.Response.ContentLength = 5;
            // Synchronously, on this pool thread, while no other pool thread is free: the write completes into the
            // output pipe at once; what remains is the transport's part.
            context.Response.WriteAsync("alive").GetAwaiter().GetResult();
            // And this thread blocks on: the response must leave without it, as no pool thread is free.
            clientGotIt.Wait(TimeSpan.FromSeconds(60));
            return Task.CompletedTask;
        }), configureTransport: o => o.SendPath = mode);

        using var client = RawSocket.Connect(server.Port);
        client.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        Assert.True(handlerStarted.Wait(TimeSpan.FromSeconds(30)), "the handler never started");

        var release = new ManualResetEventSlim();
        int blockers = ThreadPool.ThreadCount + 64;
        for (int i = 0; i < blockers; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static r => ((ManualResetEventSlim)r!).Wait(TimeSpan.FromSeconds(60)), release, preferLocal: false);
        }
        try
        {
            // Everything below runs on this thread, blocking: no step may need a pool thread.
            var starving = Stopwatch.StartNew();
            while (ThreadPool.PendingWorkItemCount == 0 && starving.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(1); // nothing signals "the pool is saturated"; it shows as work left waiting in the queue
            }
            Assert.True(ThreadPool.PendingWorkItemCount > 0, "the thread pool never saturated");

            gate.Set();
            var (head, body) = RawSocket.ReadResponse(client); // ReceiveTimeout 15 s: the liveness bound

            Assert.StartsWith("HTTP/1.1 200", head);
            Assert.Equal("alive", body);
            Assert.True(ThreadPool.PendingWorkItemCount > 0, "the pool recovered before the response came: the test proved nothing");
        }
        finally
        {
            clientGotIt.Set();
            release.Set();
        }
    }

    [Fact]
    public async Task AQuickKeepAliveRequestIsServedBeforeTheBlockingRequestsThatArrivedBeforeIt()
    {
        var gate = new ManualResetEventSlim(); // never disposed: handlers still queued when the test ends wait on it
        int holdsStarted = 0;
        await using var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/quick", (HttpContext context) => RawSocket.AnswerAsync(context, "quick"));
            app.MapGet("/slow", (HttpContext context) =>
            {
                Thread.Sleep(ApplicationDispatch.SlowRun + TimeSpan.FromMilliseconds(20)); // the workload: a handler that blocks a while
                return RawSocket.AnswerAsync(context, "slow");
            });
            app.MapGet("/hold", (HttpContext context) =>
            {
                Interlocked.Increment(ref holdsStarted);
                gate.Wait(TimeSpan.FromSeconds(60)); // holds its pool thread, as a handler in synchronous I/O does
                return RawSocket.AnswerAsync(context, "held");
            });
        }, configureTransport: o => o.RingCount = 1);
        var dispatch = server.Factory.Rings[0].ApplicationDispatch!;
        using var metrics = new TransportMetricsCollector(server.Services);

        using var probe = RawSocket.Connect(server.Port);
        Assert.Equal("quick", RawSocket.Get(probe, "/quick")); // the probe's connection has run quickly once

        // Connections whose handlers have blocked before (one slow request each, while the pool is healthy), more of
        // them than the pool has threads; then each sends a request that blocks until the end of the test, all before
        // the probe's.
        int holds = ThreadPool.ThreadCount + 64; // ample: a pool that grew recently may start several threads at once
        var holders = new List<Socket>();
        try
        {
            for (int i = 0; i < holds; i++)
            {
                var holder = RawSocket.Connect(server.Port);
                holders.Add(holder);
                holder.Send(Encoding.ASCII.GetBytes("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"));
            }
            foreach (var holder in holders)
            {
                var (head, body) = RawSocket.ReadResponse(holder);
                Assert.Equal("slow", body);
            }
            foreach (var holder in holders)
            {
                holder.Send(Encoding.ASCII.GetBytes("GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n"));
            }
            var arriving = Stopwatch.StartNew();
            while (Volatile.Read(ref holdsStarted) + dispatch.Waiting.Slow < holds && arriving.Elapsed < TimeSpan.FromSeconds(15))
            {
                Thread.Sleep(10); // nothing signals "the request waits in the dispatch": it shows in its counts
            }
            Assert.True(Volatile.Read(ref holdsStarted) + dispatch.Waiting.Slow >= holds,
                $"not every blocking request reached the server: {holdsStarted} running, {dispatch.Waiting} waiting");
            Assert.True(Volatile.Read(ref holdsStarted) < holds, "the pool ran every blocking request at once: the test proved nothing");
            Assert.True(metrics.Observe("iouring.dispatch.waiting") > 0, "the waiting work does not show in iouring.dispatch.waiting");

            Assert.Equal("quick", RawSocket.Get(probe, "/quick")); // ReceiveTimeout 15 s: the liveness bound
            int startedWhenAnswered = Volatile.Read(ref holdsStarted);

            Assert.True(startedWhenAnswered < holds,
                $"the quick request waited until all {holds} blocking requests that came before it had started");
        }
        finally
        {
            gate.Set();
            foreach (var holder in holders)
            {
                holder.Dispose();
            }
        }
    }
}

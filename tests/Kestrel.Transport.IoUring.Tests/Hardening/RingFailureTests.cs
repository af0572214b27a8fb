using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;
using static Kestrel.Transport.IoUring.Tests.Infrastructure.RingAccess;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// A ring that cannot go on (an unexpected io_uring_enter error, lost completions, a full SQ, a corrupted CQ) resets
/// the connections it holds, completes their application side and fires ConnectionClosed; it gets no new
/// connections and its accept moves to a live ring; one Critical line and a metric report it; descriptors return to
/// the baseline and shutdown is not delayed.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class RingFailureTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(RingFault.EnterError, 0)]
    [InlineData(RingFault.EnterError, 1)]
    [InlineData(RingFault.LostCompletions, 0)]
    [InlineData(RingFault.SubmissionQueueFull, 1)]
    [InlineData(RingFault.CorruptedCompletionQueue, 0)]
    [InlineData(RingFault.CorruptedCompletionQueue, 1)]
    public async Task FailedRingResetsItsConnectionsWhileTheOtherRingServesOn(RingFault fault, int failing)
    {
        var aborted = new ConcurrentQueue<int>();
        var holding = new ConcurrentQueue<int>();
        var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/", () => "hello");
            app.MapGet("/ring", (HttpContext c) =>
            {
                string ring = c.Features.Get<IIoUringConnectionFeature>()!.RingId.ToString();
                c.Response.ContentLength = ring.Length; // a Content-Length response, for the raw client
                return c.Response.WriteAsync(ring);
            });
            app.MapGet("/hold", async (HttpContext c) =>
            {
                int ring = c.Features.Get<IIoUringConnectionFeature>()!.RingId;
                holding.Enqueue(ring);
                try
                {
                    await Task.Delay(Timeout.Infinite, c.RequestAborted); // until ConnectionClosed aborts the request
                }
                catch (OperationCanceledException)
                {
                    aborted.Enqueue(ring);
                }
            });
        }, configureTransport: o => o.RingCount = 2);
        var connections = new List<(RawHttpConnection Connection, int Ring)>();
        try
        {
            using var metrics = new TransportMetricsCollector(server.Services);
            using (var warm = server.CreateClient())
            {
                Assert.Equal("hello", await warm.GetStringAsync("/"));
            }
            int baseline = FdCounter.CountSocketsAndRings();
            var baselineFds = FdCounter.Snapshot();

            for (int i = 0; i < 8; i++)
            {
                var c = await RawHttpConnection.ConnectAsync(server.Port);
                await c.SendAsync("GET /ring HTTP/1.1\r\nHost: x\r\n\r\n");
                connections.Add((c, int.Parse((await c.ReadResponseAsync()).Body)));
            }
            var onFailing = connections.Where(c => c.Ring == failing).ToList();
            var onLive = connections.Where(c => c.Ring != failing).ToList();
            Assert.Equal(4, onFailing.Count); // accepted connections alternate between the rings

            foreach (var (c, _) in onFailing.Take(2))
            {
                await c.SendAsync("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
            }
            await SemanticsPoll(() => holding.Count == 2, "the held requests");

            var ring = server.Factory.Rings[failing];
            await InjectAsync(ring, fault);

            // Every connection of the failed ring is reset (not left hanging), and its held requests are aborted.
            foreach (var (c, _) in onFailing)
            {
                var e = await Assert.ThrowsAnyAsync<SocketException>(() => c.ReadsEndOfStreamAsync().WaitAsync(TimeSpan.FromSeconds(15)));
                Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
            }
            await SemanticsPoll(() => aborted.Count == 2, "ConnectionClosed of the held requests");
            Assert.Equal(RingState.Failed, ring.State);
            Assert.Equal(RingState.Running, server.Factory.Rings[1 - failing].State);

            // The other ring's connections carry on, and every new connection is served (by the live ring).
            foreach (var (c, r) in onLive)
            {
                await c.SendAsync("GET /ring HTTP/1.1\r\nHost: x\r\n\r\n");
                Assert.Equal(r.ToString(), (await c.ReadResponseAsync().WaitAsync(TimeSpan.FromSeconds(15))).Body);
            }
            for (int i = 0; i < 12; i++)
            {
                await using var fresh = await RawHttpConnection.ConnectAsync(server.Port);
                await fresh.SendAsync("GET /ring HTTP/1.1\r\nHost: x\r\n\r\n");
                Assert.Equal((1 - failing).ToString(), (await fresh.ReadResponseAsync().WaitAsync(TimeSpan.FromSeconds(15))).Body);
            }

            var failures = server.Logs.Records.Where(r => r.EventId.Name == "RingFailed").ToList();
            Assert.Single(failures);
            Assert.Equal(LogLevel.Critical, failures[0].Level);
            output.WriteLine(failures[0].Message);
            Assert.Equal(1, metrics.Total("iouring.ring.failures"));

            foreach (var (c, _) in connections)
            {
                await c.DisposeAsync();
            }
            connections.Clear();
            // The failed ring's own descriptors (ring, eventfd) are gone too, so the count may end below the baseline.
            int count = await FdCounter.WaitForSocketsAndRingsAtMostAsync(baseline, TimeSpan.FromSeconds(20));
            Assert.True(count <= baseline, $"socket/ring fd count {count} did not return to the baseline {baseline}; new: {FdCounter.Added(baselineFds)}");

            // Graceful shutdown finishes well within Kestrel's shutdown timeout (10 s in these tests).
            var stopwatch = Stopwatch.StartNew();
            await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(8), $"shutdown took {stopwatch.Elapsed}");
        }
        finally
        {
            foreach (var (c, _) in connections)
            {
                await c.DisposeAsync();
            }
            await server.DisposeAsync();
        }
    }

    /// <summary>
    /// A response stalled on a client that does not read keeps a send (pinned pipe memory) in the kernel. A failed
    /// ring cancels it and frees memory only once reaped; if the kernel cannot be reaped (enter keeps failing), the
    /// memory is leaked, never freed. Either way the client gets its RST and shutdown is prompt.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task InFlightSendsAreReapedBeforeMemoryIsFreedOrElseLeaked(bool kernelUnreapable)
    {
        long written = 0;
        var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/big", async (HttpContext c) =>
            {
                var chunk = new byte[64 * 1024];
                for (int i = 0; i < 1024 && !c.RequestAborted.IsCancellationRequested; i++)
                {
                    await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
                    Interlocked.Add(ref written, chunk.Length);
                }
            });
        }, configureTransport: o => o.RingCount = 1);
        try
        {
            await using var stalled = await RawHttpConnection.ConnectAsync(server.Port, receiveBufferSize: 4096);
            await stalled.SendAsync("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
            await SemanticsPoll(() => Interlocked.Read(ref written) >= 1024 * 1024, "a stalled response");

            var ring = server.Factory.Rings[0];
            await RunOnRingAsync(ring, r =>
            {
                FailNextEnters(r, Abi.Errno.EINVAL, kernelUnreapable ? int.MaxValue : 1);
                return true;
            });

            var buffer = new byte[64 * 1024];
            var e = await Assert.ThrowsAnyAsync<SocketException>(async () =>
            {
                while (await stalled.Socket.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(15)) > 0)
                {
                }
            });
            Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);

            var failure = await SemanticsSupportPoll(server);
            output.WriteLine(failure.Message);
            Assert.Equal(kernelUnreapable, ring.KernelMemoryLeaked);
            Assert.Contains(kernelUnreapable ? "leaked rather than freed" : "let go of every request", failure.Message);

            var stopwatch = Stopwatch.StartNew();
            await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(8), $"shutdown took {stopwatch.Elapsed}");
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    private static async Task<TestLogSink.LogRecord> SemanticsSupportPoll(IoUringTestServer server)
    {
        await SemanticsPoll(() => server.Logs.Records.Any(r => r.EventId.Name == "RingFailed"), "the RingFailed log line");
        return server.Logs.Records.Single(r => r.EventId.Name == "RingFailed");
    }

    /// <summary>Waits (polling, bounded) for state that no event announces across the application boundary.</summary>
    internal static async Task SemanticsPoll(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"{what} never came");
            await Task.Delay(20);
        }
    }
}

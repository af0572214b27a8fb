using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>Hostile and broken clients: random resets, half-open connections, and a handler that blocks a ring.</summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class FaultTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ClientsResettingAtRandomPointsLeaveNothingBehind()
    {
        await using var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/", () => "hello");
            app.MapGet("/big", async (HttpContext c) =>
            {
                var chunk = new byte[64 * 1024];
                for (int i = 0; i < 64 && !c.RequestAborted.IsCancellationRequested; i++)
                {
                    await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
                }
            });
            app.MapPost("/sink", async (HttpContext c) => { await c.Request.Body.CopyToAsync(Stream.Null, c.RequestAborted); return "ok"; });
        });
        using var metrics = new TransportMetricsCollector(server.Services);
        using var client = server.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/")); // warm: assemblies and pools loaded
        int baseline = FdCounter.Count();

        var random = new Random(42);
        string[] requests =
        [
            "GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + new string('a', 5000),
            "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HT",
        ];
        var tasks = Enumerable.Range(0, 300).Select(async i =>
        {
            int delayMs, which;
            lock (random)
            {
                delayMs = random.Next(0, 20);
                which = random.Next(requests.Length);
            }
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await s.ConnectAsync(IPAddress.Loopback, server.Port);
            await s.SendAsync(System.Text.Encoding.ASCII.GetBytes(requests[which]), SocketFlags.None);
            if (which == 0 || which == 2)
            {
                var buffer = new byte[1 + delayMs * 1000];
                await s.ReceiveAsync(buffer, SocketFlags.None); // mid-response
            }
            await Task.Delay(delayMs); // a random point in time, not synchronisation
            s.LingerState = new LingerOption(true, 0);
            s.Close(); // RST
        });
        await Task.WhenAll(tasks);

        // Still serving, and every connection's descriptor and slot went back.
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal("hello", await client.GetStringAsync("/"));
        }
        int count = await FdCounter.WaitForAtMostAsync(baseline + 4, TimeSpan.FromSeconds(20));
        output.WriteLine($"fds: baseline {baseline}, after {count}; accepted {metrics.Total("iouring.connection.accepted")}");
        Assert.True(count <= baseline + 4, $"fd count {count} did not return to the baseline {baseline}");
        Assert.DoesNotContain(server.Logs.Records, r => r.Category == "Kestrel.Transport.IoUring" && r.Level > Microsoft.Extensions.Logging.LogLevel.Debug && r.EventId.Id < 100);
    }

    [Fact]
    public async Task HalfOpenConnectionsDoNotHoldUpShutdown()
    {
        var server = await IoUringTestServer.StartAsync();
        int port = server.Port;
        var idle = new List<Socket>();
        try
        {
            // Connected, never a byte sent: Kestrel keeps them until shutdown, which must close them all.
            for (int i = 0; i < 200; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(IPAddress.Loopback, port);
                idle.Add(s);
            }
            using (var client = server.CreateClient())
            {
                Assert.Equal("hello", await client.GetStringAsync("/"));
            }

            var stop = server.StopAsync();
            Assert.Same(stop, await Task.WhenAny(stop, Task.Delay(TimeSpan.FromSeconds(30))));
            await stop;

            var buffer = new byte[16];
            foreach (var s in idle)
            {
                s.ReceiveTimeout = 10_000;
                try
                {
                    Assert.Equal(0, s.Receive(buffer)); // FIN
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
                {
                    // RST after the shutdown timeout: also a close.
                }
            }
        }
        finally
        {
            await server.DisposeAsync();
            foreach (var s in idle)
            {
                s.Dispose();
            }
        }
    }

    [Theory]
    [InlineData(ApplicationSchedulingMode.ThreadPool)]
    [InlineData(ApplicationSchedulingMode.Inline)]
    public async Task BlockingHandlerDoesNotDeadlock(ApplicationSchedulingMode mode)
    {
        using var release = new ManualResetEventSlim();
        var blockEntered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int blockReturned = 0;
        bool? blockHadReturnedWhenFastRan = null;
        await using var server = await IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/block", () =>
            {
                blockEntered.TrySetResult();
                // Synchronous blocking, the risk Inline mode documents. Bounded, so Inline cannot hang forever.
                release.Wait(TimeSpan.FromSeconds(3));
                Volatile.Write(ref blockReturned, 1);
                return "unblocked";
            });
            app.MapGet("/fast", () =>
            {
                blockHadReturnedWhenFastRan = Volatile.Read(ref blockReturned) == 1;
                return "fast";
            });
        }, configureTransport: o => { o.RingCount = 1; o.ApplicationScheduling = mode; });

        using var client = server.CreateClient();
        using var second = server.CreateClient();
        // A first request on the connection, so that the next one's read continues where the data arrives: inline
        // on the ring thread in Inline mode (a connection's very first read starts on the thread pool either way).
        Assert.Equal("fast", await client.GetStringAsync("/fast"));
        var blocked = client.GetStringAsync("/block");
        await blockEntered.Task.WaitAsync(TimeSpan.FromSeconds(20));
        var fast = second.GetStringAsync("/fast");

        if (mode == ApplicationSchedulingMode.ThreadPool)
        {
            // A pool thread blocks, the ring keeps serving: the fast request completes while the other still blocks.
            Assert.Equal("fast", await fast.WaitAsync(TimeSpan.FromSeconds(20)));
            release.Set();
            Assert.Equal("unblocked", await blocked.WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.False(blockHadReturnedWhenFastRan);
        }
        else
        {
            // Inline: the ring's only thread is blocked, so the fast request waits until the handler returns (the
            // documented risk) and then completes: a stall, never a deadlock.
            Assert.Equal("unblocked", await blocked.WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.Equal("fast", await fast.WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.True(blockHadReturnedWhenFastRan);
        }
    }
}

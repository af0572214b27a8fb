using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// The transport under resource pressure: a completion queue far too small for the load, a buffer ring that runs
/// dry, and a receive buffer ring shared by many uploading clients. Nothing may be lost or reordered.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class ResourceLimitTests(ITestOutputHelper output)
{
    private static void MapHashEndpoint(WebApplication app)
    {
        app.MapGet("/", () => "hello");
        LargeTransferTests.MapTransferEndpoints(app); // POST /upload answers "<length>:<sha256>"
    }

    private static async Task UploadManyAndVerifyAsync(IoUringTestServer server, int clients, long bytesEach)
    {
        using var client = server.CreateClient();
        var uploads = Enumerable.Range(0, clients).Select(async i =>
        {
            ulong seed = (ulong)i * 7919 + 1;
            using var response = await client.PostAsync("/upload", new PatternContent(bytesEach, seed));
            response.EnsureSuccessStatusCode();
            Assert.Equal($"{bytesEach}:{PatternData.Sha256(bytesEach, seed)}", await response.Content.ReadAsStringAsync());
        });
        await Task.WhenAll(uploads);
    }

    [Fact]
    public async Task TinyCompletionQueueUnderLoadLosesNothing()
    {
        // SQ 16 / CQ 32 for 64 concurrent uploads: multishot receives end whenever the CQ is full and completions
        // wait in the kernel's overflow list; every one must still arrive, in order.
        await using var server = await IoUringTestServer.StartAsync(MapHashEndpoint, ProtocolEndpoints.LoopbackNoBodyLimit(),
            o => { o.RingCount = 1; o.SubmissionQueueSize = 16; o.CompletionQueueSize = 32; });
        using var metrics = new TransportMetricsCollector(server.Services);

        await UploadManyAndVerifyAsync(server, clients: 64, bytesEach: 2 * 1024 * 1024);

        output.WriteLine($"CQ overflows seen: {metrics.Total("iouring.cq.overflows")}, ENOBUFS re-arms: {metrics.Total("iouring.recv.no_buffers")}, enters: {metrics.Total("iouring.enter.calls")}");
        using var check = server.CreateClient();
        Assert.Equal("hello", await check.GetStringAsync("/"));
    }

    [Fact]
    public async Task ExhaustedBufferRingIsRearmedAndThroughputRecovers()
    {
        // Four 256-byte buffers for the whole ring: a flood empties it at once, every multishot recv ends with
        // ENOBUFS and must be re-armed when buffers come back.
        await using var server = await IoUringTestServer.StartAsync(MapHashEndpoint, ProtocolEndpoints.LoopbackNoBodyLimit(),
            o => { o.RingCount = 1; o.ReceiveBufferCount = 4; o.ReceiveBufferSize = 256; });
        using var metrics = new TransportMetricsCollector(server.Services);

        await UploadManyAndVerifyAsync(server, clients: 32, bytesEach: 512 * 1024);

        long rearms = metrics.Total("iouring.recv.no_buffers");
        output.WriteLine($"ENOBUFS re-arms: {rearms}");
        Assert.True(rearms > 0, "a flood against four buffers must run the buffer ring dry");

        // Recovered: plain requests still go through.
        using var client = server.CreateClient();
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("hello", await client.GetStringAsync("/"));
        }
    }

    [Fact]
    public async Task HugePipelinedBurstIsAnsweredInOrder()
    {
        await using var server = await IoUringTestServer.StartAsync(app =>
            app.MapGet("/n/{i}", async (HttpContext c, int i) =>
            {
                byte[] body = System.Text.Encoding.ASCII.GetBytes(i.ToString());
                c.Response.ContentLength = body.Length;
                await c.Response.Body.WriteAsync(body);
            }));
        await using var connection = await RawHttpConnection.ConnectAsync(server.Port);

        const int Requests = 5000;
        var burst = new System.Text.StringBuilder();
        for (int i = 0; i < Requests; i++)
        {
            burst.Append("GET /n/").Append(i).Append(" HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        var send = connection.SendAsync(burst.ToString());
        for (int i = 0; i < Requests; i++)
        {
            var (status, _, body) = await connection.ReadResponseAsync();
            Assert.Equal(200, status);
            Assert.Equal(i.ToString(), body);
        }
        await send;
    }

    [Fact]
    public async Task ManySlowlorisConnectionsDoNotStarveRealClients()
    {
        // 1,000 clients trickle header bytes; real requests keep being served, and Kestrel's header timeout closes
        // the tricklers through the transport.
        await using var server = await IoUringTestServer.StartAsync(configureKestrel: options =>
        {
            options.Listen(IPAddress.Loopback, 0);
            options.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(2);
        });
        var slow = new List<Socket>();
        try
        {
            for (int i = 0; i < 1000; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(IPAddress.Loopback, server.Port);
                await s.SendAsync("GET / HTTP/1.1\r\nHo"u8.ToArray(), SocketFlags.None);
                slow.Add(s);
            }

            using var client = server.CreateClient();
            for (int i = 0; i < 50; i++)
            {
                Assert.Equal("hello", await client.GetStringAsync("/"));
                if (i % 10 == 0)
                {
                    foreach (var s in slow.Take(100))
                    {
                        try { s.Send("x"u8); } catch (SocketException) { }
                    }
                }
            }

            // The header timeout (2 s, checked on Kestrel's 1 s heartbeat) ends every trickler: each sees the close.
            var buffer = new byte[4096];
            var deadline = DateTime.UtcNow.AddSeconds(30);
            int closed = 0;
            foreach (var s in slow)
            {
                s.ReceiveTimeout = (int)Math.Max(1, (deadline - DateTime.UtcNow).TotalMilliseconds);
                try
                {
                    while (s.Receive(buffer) > 0) { } // a 408 response may come first, then FIN
                    closed++;
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset)
                {
                    closed++;
                }
            }
            Assert.Equal(slow.Count, closed);
        }
        finally
        {
            foreach (var s in slow)
            {
                s.Dispose();
            }
        }
    }
}

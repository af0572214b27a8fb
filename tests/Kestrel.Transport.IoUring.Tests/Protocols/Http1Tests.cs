using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

public sealed class Http1Tests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task KeepAlive_ManyRequestsShareOneConnection()
    {
        var connectionIds = new ConcurrentDictionary<string, int>();
        var rings = new ConcurrentBag<int>();
        await using var server = await IoUringTestServer.StartAsync(configureApp: app =>
        {
            app.MapGet("/n/{i:int}", (int i, HttpContext context) =>
            {
                connectionIds.AddOrUpdate(context.Connection.Id, 1, (_, c) => c + 1);
                rings.Add(context.Features.Get<IIoUringConnectionFeature>()?.RingId ?? -1);
                return Results.Text($"r{i}:{context.Request.Protocol}");
            });
        });

        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1, PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5) })
        {
            BaseAddress = server.BaseAddress,
            DefaultRequestVersion = HttpVersion.Version11,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = Timeout,
        };

        const int requests = 300;
        for (int i = 0; i < requests; i++)
        {
            using var response = await client.GetAsync($"/n/{i}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version11, response.Version);
            Assert.Equal($"r{i}:HTTP/1.1", await response.Content.ReadAsStringAsync());
        }

        var single = Assert.Single(connectionIds);
        Assert.Equal(requests, single.Value);
        Assert.DoesNotContain(-1, rings); // every request came over io_uring
        Assert.Single(rings.Distinct()); // one connection lives on one ring
    }

    [Fact]
    public async Task KeepAlive_RawSocket_ManySequentialRequests()
    {
        var connectionIds = new ConcurrentDictionary<string, int>();
        await using var server = await IoUringTestServer.StartAsync(configureApp: app =>
        {
            app.MapPost("/echo", async (HttpContext context) =>
            {
                connectionIds.AddOrUpdate(context.Connection.Id, 1, (_, c) => c + 1);
                using var reader = new StreamReader(context.Request.Body);
                return Results.Text("echo:" + await reader.ReadToEndAsync());
            });
        });

        using var cts = new CancellationTokenSource(Timeout);
        await using var connection = await RawHttpConnection.ConnectAsync(server.Port, cts.Token);
        for (int i = 0; i < 200; i++)
        {
            string body = new('x', i * 37 % 3000);
            await connection.SendAsync($"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {body.Length}\r\n\r\n{body}", cts.Token);
            var (status, headers, text) = await connection.ReadResponseAsync(cts.Token);
            Assert.Equal(200, status);
            Assert.False(headers.TryGetValue("connection", out var c) && c.Contains("close", StringComparison.OrdinalIgnoreCase));
            Assert.Equal("echo:" + body, text);
        }

        Assert.Equal(200, Assert.Single(connectionIds).Value);
    }

    [Fact]
    public async Task Pipelining_FiftyRequestsInOneWrite_AnsweredInOrder()
    {
        var connectionIds = new ConcurrentDictionary<string, int>();
        await using var server = await IoUringTestServer.StartAsync(configureApp: app =>
        {
            app.MapGet("/p/{i:int}", async (int i, HttpContext context) =>
            {
                connectionIds.AddOrUpdate(context.Connection.Id, 1, (_, c) => c + 1);
                if (i % 5 == 0)
                {
                    await Task.Yield(); // some handlers complete asynchronously; order must still hold
                }
                // Response sizes vary so that responses straddle send boundaries.
                return Results.Text($"response {i} " + new string((char)('a' + i % 26), i * 211));
            });
        });

        const int count = 50;
        var requests = new StringBuilder();
        for (int i = 0; i < count; i++)
        {
            requests.Append($"GET /p/{i} HTTP/1.1\r\nHost: localhost\r\nX-Index: {i}\r\n\r\n");
        }

        using var cts = new CancellationTokenSource(Timeout);
        await using var connection = await RawHttpConnection.ConnectAsync(server.Port, cts.Token);
        await connection.SendAsync(requests.ToString(), cts.Token); // one write: all 50 requests

        for (int i = 0; i < count; i++)
        {
            var (status, _, body) = await connection.ReadResponseAsync(cts.Token);
            Assert.Equal(200, status);
            Assert.Equal($"response {i} " + new string((char)('a' + i % 26), i * 211), body);
        }

        Assert.Equal(count, Assert.Single(connectionIds).Value);

        // Nothing more was sent; the connection is still usable.
        await connection.SendAsync("GET /p/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", cts.Token);
        var last = await connection.ReadResponseAsync(cts.Token);
        Assert.Equal(200, last.Status);
        Assert.True(await connection.ReadsEndOfStreamAsync(cts.Token), "the server should close after Connection: close");
    }
}

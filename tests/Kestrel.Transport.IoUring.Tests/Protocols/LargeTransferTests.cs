using System.Net;
using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

/// <summary>Big bodies in both directions, each compared by SHA-256 against the deterministic source.</summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class LargeTransferTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    private const long HundredMegabytes = 100L * 1024 * 1024 + 12345; // 100 MiB and an odd tail

    internal static void MapTransferEndpoints(WebApplication app)
    {
        // Hashes the body incrementally; answers "<length>:<sha256>".
        app.MapPost("/upload", async (HttpContext context) =>
        {
            var (hash, length) = await ProtocolEndpoints.HashBodyAsync(context.Request.Body);
            return Results.Text($"{length}:{hash}");
        });

        // Writes <size> bytes of the pattern stream (seed optional), in writes of varying size.
        app.MapGet("/download/{size:long}", async (long size, HttpContext context) =>
        {
            ulong seed = context.Request.Query.TryGetValue("seed", out var s) ? ulong.Parse(s!) : PatternData.DefaultSeed;
            context.Response.ContentLength = size;
            context.Response.ContentType = "application/octet-stream";
            var buffer = new byte[128 * 1024];
            long offset = 0;
            int round = 0;
            while (offset < size)
            {
                int n = (int)Math.Min(buffer.Length - (round++ % 5) * 7919, size - offset);
                PatternData.Fill(buffer.AsSpan(0, n), offset, seed);
                await context.Response.Body.WriteAsync(buffer.AsMemory(0, n));
                offset += n;
            }
        });

        // Echoes the body as it arrives (full duplex): the response is as long as the request's Content-Length.
        app.MapPost("/echo", async (HttpContext context) =>
        {
            if (context.Request.ContentLength is long length)
            {
                context.Response.ContentLength = length;
            }
            await context.Response.StartAsync();
            var buffer = new byte[32 * 1024];
            int n;
            while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
            {
                await context.Response.Body.WriteAsync(buffer.AsMemory(0, n));
            }
        });
    }

    private static Task<IoUringTestServer> StartAsync(HttpProtocols protocols = HttpProtocols.Http1AndHttp2)
        => IoUringTestServer.StartAsync(configureApp: MapTransferEndpoints, configureKestrel: ProtocolEndpoints.LoopbackNoBodyLimit(protocols));

    [Fact]
    public async Task Upload_100MB_HashMatches()
    {
        await using var server = await StartAsync();
        using var client = server.CreateClient(HttpVersion.Version11);
        client.Timeout = Timeout;
        Task<string> expected = Task.Run(() => PatternData.Sha256(HundredMegabytes));

        using var response = await client.PostAsync("/upload", new PatternContent(HundredMegabytes));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"{HundredMegabytes}:{await expected}", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Download_100MB_HashMatches()
    {
        await using var server = await StartAsync();
        using var client = server.CreateClient(HttpVersion.Version11);
        client.Timeout = Timeout;
        Task<string> expected = Task.Run(() => PatternData.Sha256(HundredMegabytes));

        using var response = await client.GetAsync($"/download/{HundredMegabytes}", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HundredMegabytes, response.Content.Headers.ContentLength);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[81920];
        long total = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            total += n;
        }
        Assert.Equal(HundredMegabytes, total);
        Assert.Equal(await expected, Convert.ToHexString(hash.GetHashAndReset()));
    }

    [Fact]
    public async Task FullDuplexEcho_64MB_RawSocket()
    {
        const long size = 64L * 1024 * 1024;
        await using var server = await StartAsync();
        using var cts = new CancellationTokenSource(Timeout);
        await using var connection = await RawHttpConnection.ConnectAsync(server.Port, cts.Token);
        Task<string> expected = Task.Run(() => PatternData.Sha256(size, 7));

        await connection.SendAsync($"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n", cts.Token);

        // The echo cannot fit in socket buffers: unless reading and writing really overlap, this deadlocks (and times out).
        long echoedBeforeSendFinished = -1;
        long received = 0;
        Task send = Task.Run(async () =>
        {
            var buffer = new byte[48 * 1024 + 17];
            for (long offset = 0; offset < size; offset += buffer.Length)
            {
                int n = (int)Math.Min(buffer.Length, size - offset);
                PatternData.Fill(buffer.AsSpan(0, n), offset, 7);
                await connection.SendAsync(buffer.AsMemory(0, n), cts.Token);
            }
            echoedBeforeSendFinished = Interlocked.Read(ref received);
        });

        var (status, headers) = await connection.ReadHeadAsync(cts.Token);
        Assert.Equal(200, status);
        Assert.Equal(size.ToString(), headers["content-length"]);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await connection.ReadBodyAsync(size, span =>
        {
            hash.AppendData(span);
            Interlocked.Add(ref received, span.Length);
        }, cts.Token);
        await send;

        Assert.Equal(await expected, Convert.ToHexString(hash.GetHashAndReset()));
        output.WriteLine($"{echoedBeforeSendFinished} of {size} bytes were echoed back before the upload finished");
        Assert.True(echoedBeforeSendFinished > 0, "nothing came back before the whole upload was sent: not full duplex");
    }

    [Fact]
    public async Task FullDuplexEcho_32MB_Http2_HttpClient()
    {
        const long size = 32L * 1024 * 1024 + 5;
        await using var server = await StartAsync(HttpProtocols.Http2); // h2c with prior knowledge needs an HTTP/2-only endpoint
        using var client = server.CreateClient(HttpVersion.Version20);
        client.Timeout = Timeout;
        Task<string> expected = Task.Run(() => PatternData.Sha256(size, 9));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/echo")
        {
            Content = new PatternContent(size, 9),
            Version = HttpVersion.Version20, // DefaultRequestVersion applies only to the GetAsync/PostAsync helpers
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[65536];
        long total = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            total += n;
        }
        Assert.Equal(size, total);
        Assert.Equal(await expected, Convert.ToHexString(hash.GetHashAndReset()));
    }
}

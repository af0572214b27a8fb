using System.Net;
using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

/// <summary>Slow readers on either side: the transport must pause and resume without losing or reordering a byte.</summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class BackPressureTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);
    private const string TransportCategory = "Kestrel.Transport.IoUring";

    [Fact]
    public async Task SlowServerReader_SmallMaxReadBuffer_PausesReceivingAndKeepsBodyIntact()
    {
        const long size = 32L * 1024 * 1024;
        await using var server = await IoUringTestServer.StartAsync(
            configureApp: app => app.MapPost("/slow-upload", async (HttpContext context) =>
            {
                // A deliberately slow consumer: small reads, yielding after each and pausing briefly every 256 KiB.
                var (hash, length) = await ProtocolEndpoints.HashBodyAsync(context.Request.Body, readSize: 4096, afterRead: async total =>
                {
                    if (total % (256 * 1024) < 4096)
                    {
                        await Task.Delay(1);
                    }
                    else
                    {
                        await Task.Yield();
                    }
                });
                return Results.Text($"{length}:{hash}");
            }),
            configureKestrel: ProtocolEndpoints.LoopbackNoBodyLimit(),
            configureTransport: o => o.MaxReadBufferSize = 64 * 1024);

        using var client = server.CreateClient(HttpVersion.Version11);
        client.Timeout = Timeout;
        Task<string> expected = Task.Run(() => PatternData.Sha256(size, 3));
        using var response = await client.PostAsync("/slow-upload", new PatternContent(size, 3));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"{size}:{await expected}", await response.Content.ReadAsStringAsync());

        var transportLogs = server.Logs.ForCategory(TransportCategory).ToList();
        int pauses = transportLogs.Count(r => r.EventId.Id == 4 && r.EventId.Name == "ConnectionPause");
        int resumes = transportLogs.Count(r => r.EventId.Id == 5 && r.EventId.Name == "ConnectionResume");
        output.WriteLine($"ConnectionPause x{pauses}, ConnectionResume x{resumes}");
        Assert.True(pauses > 0, "the slow reader never made the transport pause receiving (no ConnectionPause, EventId 4)");
        Assert.True(resumes > 0, "receiving never resumed (no ConnectionResume, EventId 5)");
    }

    [Fact]
    public async Task SlowClientReader_BigDownload_HashIntact()
    {
        const long size = 24L * 1024 * 1024 + 333;
        await using var server = await IoUringTestServer.StartAsync(
            configureApp: LargeTransferTests.MapTransferEndpoints,
            configureKestrel: ProtocolEndpoints.LoopbackNoBodyLimit(),
            configureTransport: o => o.MaxWriteBufferSize = 32 * 1024);

        Task<string> expected = Task.Run(() => PatternData.Sha256(size, 11));
        using var cts = new CancellationTokenSource(Timeout);
        // A small receive buffer keeps the TCP window small, so the server's sends hit a full socket again and again.
        await using var connection = await RawHttpConnection.ConnectAsync(server.Port, cts.Token, receiveBufferSize: 16 * 1024);
        await connection.SendAsync($"GET /download/{size}?seed=11 HTTP/1.1\r\nHost: localhost\r\n\r\n", cts.Token);
        var (status, headers) = await connection.ReadHeadAsync(cts.Token);
        Assert.Equal(200, status);
        Assert.Equal(size.ToString(), headers["content-length"]);

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long received = 0;
        int reads = 0;
        await connection.ReadBodyAsync(size, span =>
        {
            hash.AppendData(span);
            received += span.Length;
        }, cts.Token, betweenReads: async () =>
        {
            // Read slowly: small reads, a short pause every 128 reads.
            if (++reads % 128 == 0)
            {
                await Task.Delay(1);
            }
        }, maxRead: 8 * 1024);

        Assert.Equal(size, received);
        Assert.Equal(await expected, Convert.ToHexString(hash.GetHashAndReset()));
        output.WriteLine($"{reads} reads");

        // The connection is intact after all that: a second request on it works.
        await connection.SendAsync("GET /download/1000 HTTP/1.1\r\nHost: localhost\r\n\r\n", cts.Token);
        var second = await connection.ReadHeadAsync(cts.Token);
        Assert.Equal(200, second.Status);
        using var small = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await connection.ReadBodyAsync(1000, span => small.AppendData(span), cts.Token);
        Assert.Equal(PatternData.Sha256(1000), Convert.ToHexString(small.GetHashAndReset()));
    }
}

using System.Collections.Concurrent;
using System.Net;
using System.Text.RegularExpressions;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

public sealed class Http2Tests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static Task<IoUringTestServer> StartH2cServerAsync(Action<WebApplication> configureApp)
        => IoUringTestServer.StartAsync(
            configureApp: configureApp,
            configureKestrel: o => o.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));

    [Fact]
    public async Task H2c_PriorKnowledge_ManyConcurrentStreamsOnOneConnection()
    {
        const int gated = 50; // below Kestrel's default 100 streams per connection
        const int total = 400;
        var connectionIds = new ConcurrentDictionary<string, int>();
        int arrived = 0;
        int inFlight = 0, maxInFlight = 0;
        var allGatedArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        await using var server = await StartH2cServerAsync(app =>
        {
            app.MapGet("/s/{i:int}", async (int i, HttpContext context) =>
            {
                connectionIds.AddOrUpdate(context.Connection.Id, 1, (_, c) => c + 1);
                Assert.NotNull(context.Features.Get<IIoUringConnectionFeature>());
                int now = Interlocked.Increment(ref inFlight);
                InterlockedMax(ref maxInFlight, now);
                try
                {
                    if (i < gated)
                    {
                        // The first streams wait until all of them are open at once: proof that they are concurrent.
                        if (Interlocked.Increment(ref arrived) == gated)
                        {
                            allGatedArrived.TrySetResult();
                        }
                        await allGatedArrived.Task.WaitAsync(Timeout);
                    }
                    return Results.Text($"stream {i} {context.Request.Protocol}");
                }
                finally
                {
                    Interlocked.Decrement(ref inFlight);
                }
            });
        });

        using var client = server.CreateClient(HttpVersion.Version20);
        var first = Enumerable.Range(0, gated).Select(i => client.GetAsync($"/s/{i}")).ToArray();
        var rest = Enumerable.Range(gated, total - gated).Select(i => client.GetAsync($"/s/{i}")).ToArray();
        var responses = await Task.WhenAll(first.Concat(rest)).WaitAsync(Timeout);

        for (int i = 0; i < total; i++)
        {
            using var response = responses[i];
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version20, response.Version);
            Assert.Equal($"stream {i} HTTP/2", await response.Content.ReadAsStringAsync());
        }
        var single = Assert.Single(connectionIds);
        Assert.Equal(total, single.Value);
        Assert.True(maxInFlight >= gated, $"at most {maxInFlight} streams ran at once");
        output.WriteLine($"{total} streams on one connection, up to {maxInFlight} at once");
    }

    [Fact]
    public async Task H2c_LargeBodiesOnConcurrentStreams()
    {
        await using var server = await StartH2cServerAsync(app =>
        {
            app.MapPost("/hash", async (HttpContext context) =>
            {
                var (hash, length) = await ProtocolEndpoints.HashBodyAsync(context.Request.Body);
                return Results.Text($"{length}:{hash}");
            });
        });

        using var client = server.CreateClient(HttpVersion.Version20);
        const long size = 2 * 1024 * 1024 + 13;
        var tasks = Enumerable.Range(0, 16).Select(async i =>
        {
            using var response = await client.PostAsync("/hash", new PatternContent(size, (ulong)i));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal($"{size}:{PatternData.Sha256(size, (ulong)i)}", await response.Content.ReadAsStringAsync());
        });
        await Task.WhenAll(tasks).WaitAsync(Timeout);
    }

    [RequiresToolFact("curl")]
    public async Task Curl_H2cPriorKnowledge()
    {
        await using var server = await StartH2cServerAsync(app => app.MapGet("/", (HttpContext c) => $"hello {c.Request.Protocol}"));
        var (exit, stdout, stderr) = await ExternalTool.RunAsync("curl",
            ["-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{http_version}", $"http://127.0.0.1:{server.Port}/"], Timeout);
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, exit);
        Assert.Equal("hello HTTP/2\n200 2", stdout.Trim());
    }

    [RequiresToolFact("h2load")]
    public async Task H2load_2000Requests_NoFailures()
    {
        await using var server = await StartH2cServerAsync(app => app.MapGet("/", () => "hello h2load"));
        var (exit, stdout, stderr) = await ExternalTool.RunAsync("h2load",
            ["-n", "2000", "-c", "10", "-m", "10", $"http://127.0.0.1:{server.Port}/"], TimeSpan.FromSeconds(90));
        output.WriteLine(stdout);
        output.WriteLine(stderr);
        Assert.Equal(0, exit);

        // requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout
        var m = Regex.Match(stdout, @"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout");
        Assert.True(m.Success, "h2load printed no request summary");
        Assert.Equal(2000, int.Parse(m.Groups[1].Value));
        Assert.Equal(2000, int.Parse(m.Groups[3].Value));
        Assert.Equal(2000, int.Parse(m.Groups[4].Value));
        Assert.Equal(0, int.Parse(m.Groups[5].Value));
        Assert.Equal(0, int.Parse(m.Groups[6].Value));
        Assert.Equal(0, int.Parse(m.Groups[7].Value));

        var status = Regex.Match(stdout, @"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx");
        Assert.True(status.Success, "h2load printed no status summary");
        Assert.Equal(2000, int.Parse(status.Groups[1].Value));
        Assert.Contains("h2c", stdout); // "Application protocol: h2c": really HTTP/2
    }

    private static void InterlockedMax(ref int location, int value)
    {
        int current;
        while ((current = Volatile.Read(ref location)) < value && Interlocked.CompareExchange(ref location, value, current) != current)
        {
        }
    }
}

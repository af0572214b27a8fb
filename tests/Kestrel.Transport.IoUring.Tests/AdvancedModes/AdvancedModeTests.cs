using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.AdvancedModes;

/// <summary>
/// Each opt-in io_uring mode, end to end on this kernel: the transport must say it uses the mode, and bytes must
/// travel intact both ways (upload hash, download hash, pipelined small requests).
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class AdvancedModeTests(ITestOutputHelper output)
{
    private const long UploadBytes = 24 * 1024 * 1024;
    private const long DownloadBytes = 24 * 1024 * 1024;

    private static void MapEndpoints(WebApplication app)
    {
        // "/" with a Content-Length (the raw pipelined client reads Content-Length responses only).
        app.MapGet("/", async (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            await c.Response.Body.WriteAsync("hello"u8.ToArray());
        });
        LargeTransferTests.MapTransferEndpoints(app); // POST /upload, GET /download/{size}
    }

    private async Task<IoUringTestServer> StartAsync(Action<IoUringTransportOptions> configure)
        => await IoUringTestServer.StartAsync(MapEndpoints, ProtocolEndpoints.LoopbackNoBodyLimit(), configure);

    private static async Task AssertBytesIntactAsync(IoUringTestServer server)
    {
        using var client = server.CreateClient();
        using (var response = await client.PostAsync("/upload", new PatternContent(UploadBytes, 99)))
        {
            Assert.Equal($"{UploadBytes}:{PatternData.Sha256(UploadBytes, 99)}", await response.Content.ReadAsStringAsync());
        }
        using (var stream = await client.GetStreamAsync($"/download/{DownloadBytes}"))
        {
            var (hash, length) = await ProtocolEndpoints.HashBodyAsync(stream);
            Assert.Equal(DownloadBytes, length);
            Assert.Equal(PatternData.Sha256(DownloadBytes), hash);
        }

        // Many small pipelined requests: the shape incremental buffers and batching care about.
        await using var raw = await RawHttpConnection.ConnectAsync(server.Port);
        await raw.SendAsync(string.Concat(Enumerable.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200)));
        for (int i = 0; i < 200; i++)
        {
            var (status, _, body) = await raw.ReadResponseAsync();
            Assert.Equal(200, status);
            Assert.Equal("hello", body);
        }
    }

    private string StartLine(IoUringTestServer server)
    {
        var line = Assert.Single(server.Logs.Records, r => r.Category == "Kestrel.Transport.IoUring.Lifetime" && r.EventId.Name == "TransportStarted").Message;
        output.WriteLine(line);
        return line;
    }

    [Fact]
    public async Task SqPollRingServesIntact()
    {
        await using var server = await StartAsync(o => { o.SqPoll = true; o.SqPollIdleMilliseconds = 50; o.SqPollCpu = 0; });
        Assert.Contains("SQPOLL (idle 50 ms, from CPU 0)", StartLine(server));

        // The kernel's poller threads exist while the rings do (named iou-sqp-<pid>).
        var threads = Directory.GetDirectories("/proc/self/task")
            .Select(t => { try { return File.ReadAllText(Path.Combine(t, "comm")).Trim(); } catch (IOException) { return ""; } })
            .ToArray();
        Assert.Contains(threads, name => name.StartsWith("iou-sqp", StringComparison.Ordinal));

        await AssertBytesIntactAsync(server);
    }

    [Fact]
    public async Task IncrementalReceiveBuffersServeIntact()
    {
        Assert.True(IoUringCapabilities.Current.IncrementalBufferRings, "this kernel (6.18) supports IOU_PBUF_RING_INC");
        await using var server = await StartAsync(o => { o.IncrementalReceiveBuffers = true; o.ReceiveBufferSize = 64 * 1024; o.ReceiveBufferCount = 64; });
        Assert.Contains("incremental", StartLine(server));
        await AssertBytesIntactAsync(server);
    }

    [Fact]
    public async Task RegisteredSendBuffersCarryLargeResponsesIntact()
    {
        await using var server = await StartAsync(o =>
        {
            o.ZeroCopySendThreshold = 16 * 1024;
            o.RegisteredSendBufferSize = 1024 * 1024;
        });
        using var metrics = new TransportMetricsCollector(server.Services);
        Assert.Contains("registered send buffers (16 x 64 KiB per ring)", StartLine(server));
        await AssertBytesIntactAsync(server);

        // The first zero-copy sends went out from the arena; on loopback the kernel reports it copied, and the
        // ring then switched zero-copy off, saying why.
        Assert.True(metrics.Total("iouring.send_zc.sends") > 0, "no zero-copy notification was seen");
        Assert.True(metrics.Total("iouring.send_zc.copied") > 0, "loopback copies; the notification must say so");
        Assert.Contains(server.Logs.Records, r => r.EventId.Name == "ZeroCopyDisabled");
    }

    [Fact]
    public async Task ZeroCopySendsFromPipeMemoryServeIntact()
    {
        await using var server = await StartAsync(o => { o.ZeroCopySendThreshold = 4096; o.ZeroCopyToLocalPeers = true; });
        using var metrics = new TransportMetricsCollector(server.Services);
        Assert.Contains("send_zc from 4096 B", StartLine(server));
        await AssertBytesIntactAsync(server);
        Assert.True(metrics.Total("iouring.send_zc.sends") > 0);
    }

    [Fact]
    public async Task LinkedCloseReleasesEveryDescriptor()
    {
        // Every close is a SHUTDOWN -> CLOSE_DIRECT -> CLOSE chain: after 2,000 short connections the fd count is
        // back where it was and the registered slots are reusable (a full table would show as fixed_files.full).
        await using var server = await StartAsync(o => { o.RingCount = 1; o.FixedFileSlots = 256; }); // room for 50 open + 50 closing
        using var metrics = new TransportMetricsCollector(server.Services);
        using (var warm = server.CreateClient())
        {
            Assert.Equal("hello", await warm.GetStringAsync("/"));
        }
        int baseline = FdCounter.Count();
        for (int batch = 0; batch < 40; batch++)
        {
            await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
            {
                await using var raw = await RawHttpConnection.ConnectAsync(server.Port);
                await raw.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                var (status, _, _) = await raw.ReadResponseAsync();
                Assert.Equal(200, status);
                Assert.True(await raw.ReadsEndOfStreamAsync()); // the linked SHUTDOWN's FIN
            }));
        }
        int after = await FdCounter.WaitForAtMostAsync(baseline + 2, TimeSpan.FromSeconds(20));
        Assert.True(after <= baseline + 2, $"fds {after} vs baseline {baseline}");
        Assert.Equal(0, metrics.Total("iouring.fixed_files.exhausted"));
        Assert.True(metrics.Observe("iouring.connection.active") <= 1, "connections are still counted as open");
    }

    [Fact]
    public void CapabilityReportNamesTheModes()
    {
        var caps = IoUringCapabilities.Probe();
        string report = caps.ToString();
        output.WriteLine(report);
        Assert.True(caps.IsSupported);
        Assert.True(caps.SqPoll);
        Assert.True(caps.SendZeroCopy);
        Assert.True(caps.IncrementalBufferRings);
        Assert.True(caps.ReceiveBundles);
        Assert.Contains("sqpoll", report, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("incremental", report, StringComparison.OrdinalIgnoreCase);
    }
}

using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary><see cref="IoUringTransportOptions.SendPath"/>: what each value does, and how it binds and fails.</summary>
public sealed class SendPathOptionTests
{
    [Theory]
    [InlineData(SendPathMode.Direct, ApplicationSchedulingMode.ThreadPool, true)]
    [InlineData(SendPathMode.Ring, ApplicationSchedulingMode.ThreadPool, false)]
    [InlineData(SendPathMode.Direct, ApplicationSchedulingMode.Inline, false)] // HTTP/1.1 inline flushes on the ring thread: the ring sends
    public async Task DirectModeSendsFromTheFlushingThreadAndInlineFlushesUseTheRing(SendPathMode mode, ApplicationSchedulingMode scheduling, bool direct)
    {
        await using var server = await IoUringTestServer.StartAsync(configureTransport: o =>
        {
            o.SendPath = mode;
            o.ApplicationScheduling = scheduling;
        });
        using var metrics = new TransportMetricsCollector(server.Services);
        using var client = server.CreateClient();
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal("hello", await client.GetStringAsync("/"));
        }

        if (scheduling == ApplicationSchedulingMode.Inline)
        {
            // Inline HTTP/1.1 flushes on the ring thread, which sends through the ring; a connection's first request
            // may still run on the pool (its first read starts there), and a flush there sends directly.
            Assert.True(metrics.Total("iouring.sends.ring") > 0);
        }
        else
        {
            Assert.Equal(direct, metrics.Total("iouring.sends.direct") > 0);
            Assert.Equal(!direct, metrics.Total("iouring.sends.ring") > 0);
        }
        var started = Assert.Single(server.Logs.Records, r => r.EventId.Name == "TransportStarted");
        Assert.Contains(direct ? "sends direct from the flushing thread" : "sends through the ring", started.Message);
        if (scheduling == ApplicationSchedulingMode.Inline && mode == SendPathMode.Direct)
        {
            Assert.Contains("direct from any other flushing thread", started.Message);
        }
    }

    [Fact]
    public async Task SendPathBindsFromConfiguration()
    {
        using var host = OptionsAndFallbackTests.BuildHostWithConfiguration(new() { ["Kestrel:IoUring:SendPath"] = "Ring" });
        await host.StartAsync();
        try
        {
            Assert.Equal(SendPathMode.Ring, host.Services.GetRequiredService<IOptions<IoUringTransportOptions>>().Value.SendPath);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task AnUnknownSendPathFailsStartUpNamingTheOption()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => IoUringTestServer.StartAsync(configureTransport: o => o.SendPath = (SendPathMode)7));
        var validation = e as OptionsValidationException ?? e.InnerException as OptionsValidationException;
        Assert.NotNull(validation);
        Assert.Contains("IoUringTransportOptions.SendPath", validation!.Message);
    }

    [Fact]
    public async Task AnUnknownSendPathInConfigurationFailsStartUpNamingTheConfigurationPath()
    {
        using var host = OptionsAndFallbackTests.BuildHostWithConfiguration(new() { ["Kestrel:IoUring:SendPath"] = "Sideways" });
        var e = await Assert.ThrowsAnyAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Contains("Kestrel:IoUring:SendPath", e.Message);
    }
}
